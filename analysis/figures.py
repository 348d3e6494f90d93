"""The report's plotly figures, and their registry: the report shows every registered figure, in the
order of registration, as a section of its own (``register_figure``: its section id, heading, link,
how to read it, and when it is shown). A new figure is one function here and one registration.

The figure functions take the tidy trials, the cell table and the alpha-f fits; a registered builder
takes the report's ``Analysis`` (``.experiment.trials``, ``.cells``, ``.fits``, ``.optima``).

Methods keep one colour across every figure. The f axis is logarithmic and says so; methods that share
an f are shifted sideways a little (in log f) so that their intervals can be told apart. The f = 1
reference cell (method ``full``) is one cell shared by every method: it is drawn once, in black, in the
alpha-f figure, and in each method's panel elsewhere. Legends sit below the plots, clear of plotly's
toolbar. Model predictions and measured trials are labelled as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis.alpha_f import POOLED, AlphaFFit
from analysis.comparisons import kd_gain_by_noise, noise_levels
from analysis.optimum import peak_value
from analysis.pooled import RATIO_BOUND
from contract import ALPHA_RANGE, FULL
from contract.registry import Registry

TEMPLATE = "plotly_white"
PANEL_HEIGHT = 230
MAX_COLUMNS = 3
GRID_POINTS = 101
LOG_AXIS = "kept fraction f (log scale)"
SHIFT = 0.035  # sideways shift between methods at one f, in ln f


def _shifted(fraction, index: int, count: int) -> np.ndarray:
    """f moved sideways (in log f) for the index-th of count methods that share it."""
    return np.asarray(fraction, float) * math.exp(SHIFT * (index - (count - 1) / 2))


def _legend_below(y: float = -0.16) -> dict:
    return dict(orientation="h", y=y, yanchor="top", x=0, xanchor="left", font=dict(size=11))


def method_colors(methods: list[str]) -> dict[str, str]:
    palette = qualitative.Plotly
    colors = {m: palette[i % len(palette)] for i, m in enumerate(sorted(methods))}
    colors[POOLED] = "#222222"
    colors[FULL] = "#7f7f7f"
    return colors


def _methods(table: pd.DataFrame) -> list[str]:
    methods = sorted(set(table["method"]) - {FULL})
    return methods or [FULL]


def _with_full(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """A method's rows plus the shared f = 1.0 reference cell."""
    if method == FULL:
        return table[table["method"] == FULL]
    return pd.concat([table[table["method"] == method], table[table["method"] == FULL]])


def _noise_levels(table: pd.DataFrame) -> list[float]:
    """The label noise rates P of a table ([0.0] without the column)."""
    return sorted(float(p) for p in table["label_noise"].unique()) if "label_noise" in table and len(table) else [0.0]


def _at_level(table: pd.DataFrame, level: float) -> pd.DataFrame:
    return table[table["label_noise"] == level] if "label_noise" in table else table


NOISE_SYMBOLS = ["circle", "diamond", "square", "triangle-up", "cross", "star"]
# a method's alpha*(f) curve at each label noise level (its colour is the method's; the pooled curve is dashed)
NOISE_DASHES = ["solid", "dot", "dashdot", "longdash", "longdashdot"]
POOLED_DASHES = ["dash", "longdashdot", "dashdot", "longdash", "dot"]


def _rgba(hex_color: str, alpha: float) -> str:
    hex_color = hex_color.lstrip("#")
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def alpha_vs_f(cells: pd.DataFrame, fits: list[AlphaFFit]) -> go.Figure:
    """alpha*(f) per method from the pooled model: points with 95 % intervals (hollow: not pinned), the
    shared f = 1 cell drawn once, each method's curve and band."""
    methods = _methods(cells)
    colors = method_colors(methods)
    fig = go.Figure()
    done = cells[cells["alpha_opt"].notna()]
    pruned = [m for m in methods if m != FULL]
    levels = _noise_levels(cells)
    series = [(method, level) for method in pruned for level in levels]  # one marker series per (method, P)
    for i, (method, level) in enumerate(series):
        part = _at_level(done[done["method"] == method], level).sort_values("fraction")
        if part.empty:
            continue
        pinned = part["pinned"].astype(bool).to_numpy()
        symbol = NOISE_SYMBOLS[levels.index(level) % len(NOISE_SYMBOLS)]
        fig.add_trace(go.Scatter(
            x=_shifted(part["fraction"], i, len(series)), y=part["alpha_opt"], mode="markers",
            name=f"{method}: α* (model)" + (f", label noise {level:g}" if len(levels) > 1 else ""), legendgroup=method,
            marker=dict(color=colors[method], size=9, symbol=np.where(pinned, symbol, f"{symbol}-open").tolist(),
                        line=dict(color=colors[method], width=1.5)),
            error_y=dict(type="data", symmetric=False, array=part["alpha_hi"] - part["alpha_opt"],
                         arrayminus=part["alpha_opt"] - part["alpha_lo"], thickness=1.2),
            customdata=np.stack([part["cell"], part["alpha_lo"], part["alpha_hi"], part["n_completed"],
                                 np.where(pinned, "", " (not pinned)")], axis=1),
            hovertemplate="%{customdata[0]}<br>α* = %{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}]%{customdata[4]}"
                          "<br>%{customdata[3]} completed trials<extra></extra>",
        ))
    full = done[done["method"] == FULL]
    if len(full):
        fig.add_trace(go.Scatter(
            x=full["fraction"], y=full["alpha_opt"], mode="markers", name="f = 1: full data, shared by every method",
            marker=dict(color="#111", size=10, symbol=np.where(full["pinned"].astype(bool), "square", "square-open").tolist()),
            error_y=dict(type="data", symmetric=False, array=full["alpha_hi"] - full["alpha_opt"],
                         arrayminus=full["alpha_opt"] - full["alpha_lo"], thickness=1.2, color="#111"),
            hovertemplate="full data (every method), α* = %{y:.3f}<extra></extra>",
        ))
    for fit in fits:
        if not fit.fitted or len(fit.f) < 2:
            continue
        method = fit.method
        color = colors.get(method, "#222222")
        # the same method at two label noise levels: one colour, told apart by the line's dash
        at = min(range(len(levels)), key=lambda i: abs(levels[i] - float(fit.context.get("label_noise", 0.0))))
        dashes = POOLED_DASHES if method == POOLED else NOISE_DASHES
        dash = dashes[at % len(dashes)]
        low, high = fit.f_range
        grid = np.geomspace(low, high, 60)
        curve = fit.curve(grid)
        over = f", mean over {fit.replicates} replicates" if fit.replicates > 1 else ""
        label = f"{fit.group}: α*(f) curve and pointwise 95 % band (model{over}; {fit.relation})"
        fig.add_trace(go.Scatter(
            x=np.r_[grid, grid[::-1]], y=np.r_[curve["hi"], curve["lo"][::-1]], fill="toself", mode="lines",
            line=dict(width=0), fillcolor=_rgba(color, 0.08 if method == POOLED else 0.1), hoverinfo="skip",
            showlegend=False, legendgroup=method,
        ))
        fig.add_trace(go.Scatter(
            x=grid, y=curve["alpha"], mode="lines", name=label, legendgroup=method,
            line=dict(color=color, width=2.5 if method == POOLED else 1.8, dash=dash),
            hovertemplate=f"{fit.group}<br>f = %{{x:.3f}}: α* = %{{y:.3f}} (model)<extra></extra>",
        ))
    low, high = (float(cells["alpha_lo"].min()), float(cells["alpha_hi"].max())) if len(done) else ALPHA_RANGE
    if done.empty:  # say why the figure is empty instead of showing bare axes
        reasons = sorted({fit.message for fit in fits if fit.message}) or ["no completed trials"]
        fig.add_annotation(text="No α* can be estimated from these trials: " + "; ".join(reasons) + ".",
                           xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font=dict(size=14))
    fig.update_layout(
        template=TEMPLATE, height=600, margin=dict(t=60, b=40),
        title="Optimal α versus kept fraction f (pooled model, 95 % intervals; hollow: not pinned)",
        xaxis=dict(title=LOG_AXIS, type="log", **_f_ticks(cells)),
        yaxis=dict(title="optimal α (weight of the KD term)", range=[min(0.0, low) - 0.05, max(1.0, high) + 0.05]),
        legend=_legend_below(-0.14),
    )
    return fig


def _f_ticks(table: pd.DataFrame) -> dict:
    fractions = sorted(table["fraction"].unique())
    return {"tickvals": fractions, "ticktext": [f"{f:g}" for f in fractions]}


def _grid_shape(n: int) -> tuple[int, int]:
    columns = min(MAX_COLUMNS, n)
    return math.ceil(n / columns), columns


def _interval(part: pd.DataFrame, column: str) -> dict:
    """Error bars from a column's 95 % interval (``column``_lo and _hi; none where missing)."""
    return dict(type="data", symmetric=False, array=(part[f"{column}_hi"] - part[column]).fillna(0.0),
                arrayminus=(part[column] - part[f"{column}_lo"]).fillna(0.0), thickness=1)


def accuracy_vs_f(cells: pd.DataFrame) -> go.Figure:
    """Test accuracy against f per method: KD at alpha* and no KD (alpha = 0), both predictions of the
    cell's model with their 95 % intervals (the two ends of the cells table's KD gain), the teacher."""
    methods = _methods(cells)
    colors = method_colors(methods)
    rows, columns = _grid_shape(len(methods))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=methods, shared_yaxes=True,
                        horizontal_spacing=0.05, vertical_spacing=0.18 if rows > 1 else 0.1)
    levels = _noise_levels(cells)  # with several label noise levels: one set of lines per level
    for i, method in enumerate(methods):
        row, col = i // columns + 1, i % columns + 1
        for j, level in enumerate(levels):
            here = _at_level(cells, level)
            teacher = here["teacher_test_acc"].dropna()
            part = _with_full(here, method).groupby("fraction", as_index=False)[
                ["test_at_opt", "test_at_opt_lo", "test_at_opt_hi", "test_at_zero", "test_at_zero_lo", "test_at_zero_hi",
                 "alpha_opt"]].mean().sort_values("fraction")
            first = i == 0
            noise = f", label noise {level:g}" if len(levels) > 1 else ""
            symbol = NOISE_SYMBOLS[j % len(NOISE_SYMBOLS)]
            fig.add_trace(go.Scatter(
                x=_shifted(part["fraction"], 2 * j + 1, 2 * len(levels)), y=part["test_at_opt"], mode="lines+markers",
                name=f"KD at α* (model prediction, 95 % interval){noise}", marker=dict(symbol=symbol),
                legendgroup=f"kd{j}", showlegend=first, line=dict(color=colors[method]), customdata=part["alpha_opt"],
                error_y=_interval(part, "test_at_opt"),
                hovertemplate=f"{method}{noise}, f = %{{x:.2g}}<br>KD at α* = %{{customdata:.2f}}: %{{y:.2%}} (model)<extra></extra>",
            ), row=row, col=col)
            fig.add_trace(go.Scatter(
                x=_shifted(part["fraction"], 2 * j, 2 * len(levels)), y=part["test_at_zero"], mode="lines+markers",
                name=f"no KD (α = 0, model prediction, 95 % interval){noise}", error_y=_interval(part, "test_at_zero"),
                legendgroup=f"nokd{j}", showlegend=first, line=dict(color=colors[method], dash="dot"),
                marker=dict(symbol=f"{symbol}-open"),
                hovertemplate=f"{method}{noise}, f = %{{x:.2g}}<br>no KD: %{{y:.2%}} (model)<extra></extra>",
            ), row=row, col=col)
            if len(teacher):
                fig.add_trace(go.Scatter(
                    x=[cells["fraction"].min(), 1.0], y=[teacher.mean()] * 2, mode="lines", name=f"teacher (measured){noise}",
                    legendgroup=f"teacher{j}", showlegend=first,
                    line=dict(color="#444", dash=("dash", "dashdot", "longdash", "longdashdot")[j % 4], width=1.5),
                    hovertemplate=f"teacher{noise}: %{{y:.2%}}<extra></extra>",
                ), row=row, col=col)
    fig.update_xaxes(type="log", tickangle=0, **_f_ticks(cells))
    for i in range(len(methods)):  # the axis title under the lowest panel of each column only
        if i + columns >= len(methods):
            fig.update_xaxes(title_text=LOG_AXIS, row=i // columns + 1, col=i % columns + 1)
    fig.update_yaxes(tickformat=".0%")
    fig.update_yaxes(title_text="test accuracy", col=1)
    fig.update_layout(template=TEMPLATE, height=max(400, PANEL_HEIGHT * rows + 190), legend=_legend_below(-0.12 if len(levels) == 1 else -0.17),
                      margin=dict(t=70, b=40),
                      title="Test accuracy versus f: KD at α* against no KD, with the teacher's accuracy")
    return fig


def val_vs_alpha(trials: pd.DataFrame, cells: pd.DataFrame) -> go.Figure:
    """Small multiples (method x f): every searched point, the cell's own peaked curve, the optimum and its interval."""
    methods = _methods(cells)
    fractions = sorted(cells["fraction"].unique())
    colors = method_colors(methods)
    titles = [f"{m}, f = {f:g}" for m in methods for f in fractions]
    fig = make_subplots(rows=len(methods), cols=len(fractions), subplot_titles=titles, shared_xaxes=True,
                        horizontal_spacing=0.02, vertical_spacing=min(0.08, 0.3 / max(1, len(methods))))
    shapes = []
    for r, method in enumerate(methods, start=1):
        cell_rows = _with_full(cells, method)
        trial_rows = _with_full(trials, method)
        for c, fraction in enumerate(fractions, start=1):
            here = trial_rows[trial_rows["fraction"] == fraction]
            done = here[here["status"] == "completed"]
            other = here[here["status"] != "completed"]
            show = r == 1 and c == 1
            fig.add_trace(go.Scatter(
                x=done["alpha"], y=done["val_acc"], mode="markers", name="trial (measured)", legendgroup="done",
                showlegend=show, marker=dict(color=colors[method], size=7),
                customdata=np.stack([done["test_acc"], done["replicate"]], axis=1) if len(done) else None,
                hovertemplate="α = %{x:.3f}<br>val %{y:.2%}, test %{customdata[0]:.2%}<br>replicate %{customdata[1]}"
                              "<extra></extra>",
            ), row=r, col=c)
            if len(other):
                fig.add_trace(go.Scatter(
                    # an errored trial has no accuracy: drawn at the panel's lowest completed one
                    x=other["alpha"], y=other["val_acc"].fillna(done["val_acc"].min() if len(done) else 0.0),
                    mode="markers", name="stopped or errored (not used)",
                    legendgroup="other", showlegend=False, marker=dict(color="#999", symbol="x", size=7),
                    text=other["status"], hovertemplate="α = %{x:.3f}: %{text}<extra></extra>",
                ), row=r, col=c)
            for _, cell in cell_rows[cell_rows["fraction"] == fraction].iterrows():
                if isinstance(cell.get("curve"), list):
                    grid = np.linspace(float(done["alpha"].min()), float(done["alpha"].max()), GRID_POINTS // 4)
                    fig.add_trace(go.Scatter(
                        x=grid, y=peak_value(cell["curve"], grid), mode="lines",
                        name="this cell's own peaked curve (diagnostic)", legendgroup="fit", showlegend=show,
                        line=dict(color=colors[method], width=1.5), hoverinfo="skip",
                    ), row=r, col=c)
                if pd.notna(cell["alpha_opt"]):
                    shapes += _band_and_line(fig, r, c, cell, colors[method])
    fig.update_layout(shapes=shapes)
    low, high = float(trials["alpha"].min()), float(trials["alpha"].max())
    pad = 0.03 * max(high - low, 1e-3)
    fig.update_xaxes(range=[low - pad, high + pad])
    fig.update_xaxes(title_text="α", row=len(methods))
    fig.update_yaxes(tickformat=".1%", nticks=4)
    fig.update_yaxes(title_text="val accuracy", col=1)
    fig.update_annotations(font_size=11)
    fig.update_layout(template=TEMPLATE, height=max(380, 200 * len(methods) + 200), showlegend=True,
                      title="Validation accuracy versus α in every cell: trials, the cell's own curve, and α* of the "
                            "pooled model (dashed) with its 95 % interval (band)", margin=dict(t=90, b=90),
                      legend=dict(orientation="h", y=0.005, yanchor="bottom", x=0, xanchor="left", yref="container"))
    return fig


def _band_and_line(fig: go.Figure, row: int, col: int, cell: pd.Series, color: str) -> list[dict]:
    """The optimum's interval (band) and the optimum (dashed line) of one panel, as layout shapes.
    Built by hand: ``add_vrect``/``add_vline`` per subplot cost most of the report's build time."""
    axes = fig.get_subplot(row, col)
    x, y = axes.xaxis.plotly_name.replace("axis", ""), axes.yaxis.plotly_name.replace("axis", "")
    span = dict(xref=x, yref=f"{y} domain", y0=0, y1=1)
    return [
        dict(type="rect", x0=cell["alpha_lo"], x1=cell["alpha_hi"], fillcolor=color, opacity=0.12, line_width=0,
             layer="below", **span),
        dict(type="line", x0=cell["alpha_opt"], x1=cell["alpha_opt"], line=dict(color=color, dash="dash", width=1), **span),
    ]


def accuracy_heatmap(trials: pd.DataFrame, cells: pd.DataFrame, bins: int = 10) -> go.Figure:
    """Mean validation accuracy of completed trials over (alpha bin, f), one panel per method,
    with each cell's optimal alpha marked."""
    methods = _methods(cells)
    rows, columns = _grid_shape(len(methods))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=methods, horizontal_spacing=0.06,
                        vertical_spacing=0.14, shared_yaxes=True)
    edges = np.linspace(0.0, 1.0, bins + 1)
    low, high = float(trials["alpha"].min()), float(trials["alpha"].max())
    if low < 0 or high > 1:
        edges = np.linspace(low, high, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    done = trials[trials["status"] == "completed"]
    labels = [f"{f:g}" for f in sorted(cells["fraction"].unique())]
    for i, method in enumerate(methods):
        row, col = i // columns + 1, i % columns + 1
        part = _with_full(done, method)
        which = np.clip(np.digitize(part["alpha"], edges[1:-1]), 0, bins - 1)
        table = part.assign(bin=which).groupby(["fraction", "bin"])["val_acc"].agg(["mean", "count"])
        z = np.full((len(labels), bins), np.nan)
        n = np.zeros((len(labels), bins), int)
        for (fraction, b), (mean, count) in table.iterrows():
            z[labels.index(f"{fraction:g}"), int(b)] = mean
            n[labels.index(f"{fraction:g}"), int(b)] = count
        fig.add_trace(go.Heatmap(
            x=centers, y=labels, z=z, customdata=n, coloraxis="coloraxis", xgap=1, ygap=1,
            hovertemplate=f"{method}<br>f = %{{y}}, α ≈ %{{x:.2f}}<br>mean val %{{z:.2%}} over %{{customdata}} "
                          "trials<extra></extra>",
        ), row=row, col=col)
        optima = _with_full(cells, method).dropna(subset=["alpha_opt"])
        fig.add_trace(go.Scatter(
            x=optima["alpha_opt"], y=[f"{f:g}" for f in optima["fraction"]], mode="markers", name="α* (pooled model)",
            showlegend=i == 0, legendgroup="opt", marker=dict(symbol="star", size=11, color="white",
                                                              line=dict(color="black", width=1)),
            hovertemplate="optimal α = %{x:.3f} at f = %{y}<extra></extra>",
        ), row=row, col=col)
    fig.update_xaxes(range=[edges[0], edges[-1]])
    for i in range(len(methods)):
        if i + columns >= len(methods):
            fig.update_xaxes(title_text="α", row=i // columns + 1, col=i % columns + 1)
    fig.update_yaxes(title_text="kept fraction f", type="category", categoryorder="array", categoryarray=labels, col=1)
    fig.update_layout(template=TEMPLATE, height=max(360, PANEL_HEIGHT * rows + 150),
                      coloraxis=dict(colorscale="Viridis", colorbar=dict(title="val acc", tickformat=".0%")),
                      title=f"Mean measured validation accuracy over (α, f), α in {bins} bins; stars: α* (model)",
                      legend=_legend_below(-0.12), margin=dict(t=70, b=40))
    return fig


def kd_gain_vs_noise(gains: pd.DataFrame) -> go.Figure:
    """KD gain (test accuracy at alpha* minus at alpha = 0, model) against the label noise rate P, one
    line per (method, f), with 95 % intervals. ``gains``: ``analysis.report.kd_gain_by_noise`` by
    (method, fraction, label_noise)."""
    methods = _methods(gains) if len(gains) else [FULL]
    colors = method_colors(methods)
    fig = go.Figure()
    fractions = sorted(gains["fraction"].unique()) if len(gains) else []
    dashes = ["solid", "dot", "dash", "longdash", "dashdot", "longdashdot"]
    symbols = ["circle", "square", "diamond", "triangle-up", "x", "star"]
    groups = list(gains.groupby(["method", "fraction"], sort=True)) if len(gains) else []
    levels = sorted(gains["label_noise"].unique()) if len(gains) else []
    step = (max(levels) - min(levels)) / 80 if len(levels) > 1 else 0.0  # sideways shift so intervals separate
    for i, ((method, fraction), part) in enumerate(groups):
        part = part.sort_values("label_noise")
        k = fractions.index(fraction)
        color = colors.get(method, "#222222")
        name = "full data, f = 1" if method == FULL else f"{method}, f = {fraction:g}"
        lo, hi = part["lo"].to_numpy(float), part["hi"].to_numpy(float)
        gain = part["gain"].to_numpy(float)
        fig.add_trace(go.Scatter(
            x=part["label_noise"] + step * (i - (len(groups) - 1) / 2), y=gain, mode="lines+markers", name=name,
            line=dict(color=color, dash=dashes[k % len(dashes)], width=1.8),
            marker=dict(color=color, size=8, symbol=symbols[k % len(symbols)]),
            error_y=dict(type="data", symmetric=False, array=np.nan_to_num(hi - gain), arrayminus=np.nan_to_num(gain - lo),
                         thickness=1.2),
            customdata=np.stack([part["label_noise"], lo, hi, part["cells"]], axis=1),
            hovertemplate=f"{name}<br>P = %{{customdata[0]:g}}: KD gain %{{y:+.2%}} [%{{customdata[1]:+.2%}}, "
                          "%{customdata[2]:+.2%}] (model)<br>%{customdata[3]} cell(s)<extra></extra>",
        ))
    fig.add_hline(y=0, line=dict(color="#888", width=1, dash="dash"))
    if not groups:
        fig.add_annotation(text="No cell has a KD gain estimate yet: a cell needs completed α = 0 trials and an α*.",
                           xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font=dict(size=14))
    fig.update_layout(
        template=TEMPLATE, height=480, margin=dict(t=60, b=40),
        title="KD gain versus label noise: test accuracy at α* minus at α = 0 (model, 95 % intervals)",
        xaxis=dict(title="label noise rate P (fraction of training labels flipped)", tickvals=levels,
                   ticktext=[f"{p:g}" for p in levels]),
        yaxis=dict(title="KD gain in test accuracy (percentage points)", tickformat="+.1%",
                   **({} if groups else {"range": [-0.1, 0.1]})),  # empty: a sensible axis, not plotly's default
        legend=_legend_below(-0.18),
    )
    return fig


def accuracy_by_teacher(cells: pd.DataFrame) -> go.Figure:
    """Teacher capacity: test accuracy against f under each teacher, one panel per method (and label noise
    level) that was distilled from several teachers: KD at alpha* solid, no KD (alpha = 0) dotted, both
    the cell model's predictions with their 95 % intervals as in ``accuracy_vs_f``; each teacher's own
    accuracy dashed."""
    pruned = cells[(cells["method"] != FULL) & cells["test_at_opt"].notna()]
    panels = [(method, level) for (method, level), part in pruned.groupby(["method", "label_noise"], sort=True)
              if part["teacher_arch"].nunique() > 1]
    teachers = sorted(pruned["teacher_arch"].unique())
    palette = qualitative.D3
    colors = {arch: palette[i % len(palette)] for i, arch in enumerate(teachers)}
    several_levels = len({level for _, level in panels}) > 1
    titles = [f"{m}" + (f", label noise {p:g}" if several_levels else "") for m, p in panels] or [""]
    rows, columns = _grid_shape(max(1, len(panels)))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.05)
    shown = set()
    for i, (method, level) in enumerate(panels):
        row, col = i // columns + 1, i % columns + 1
        here = pruned[(pruned["method"] == method) & (pruned["label_noise"] == level)]
        for j, arch in enumerate(teachers):
            part = here[here["teacher_arch"] == arch].groupby("fraction", as_index=False)[
                ["test_at_opt", "test_at_opt_lo", "test_at_opt_hi", "test_at_zero", "test_at_zero_lo", "test_at_zero_hi",
                 "teacher_test_acc", "alpha_opt"]].mean()
            if part.empty:
                continue
            part = part.sort_values("fraction")
            first = arch not in shown
            shown.add(arch)
            x = _shifted(part["fraction"], j, len(teachers))
            fig.add_trace(go.Scatter(
                x=x, y=part["test_at_opt"], mode="lines+markers", name=f"teacher {arch}: KD at α* (model, 95 % interval)",
                legendgroup=f"kd-{arch}", showlegend=first, line=dict(color=colors[arch]), customdata=part["alpha_opt"],
                error_y=_interval(part, "test_at_opt"),
                hovertemplate=f"{method}, teacher {arch}, f = %{{x:.2g}}<br>KD at α* = %{{customdata:.2f}}: %{{y:.2%}} "
                              "(model)<extra></extra>"), row=row, col=col)
            fig.add_trace(go.Scatter(
                x=x, y=part["test_at_zero"], mode="lines+markers",
                name=f"teacher {arch}'s cells: no KD (α = 0, model, 95 % interval)", legendgroup=f"nokd-{arch}",
                showlegend=first, line=dict(color=colors[arch], dash="dot"), marker=dict(symbol="circle-open"),
                error_y=_interval(part, "test_at_zero"),
                hovertemplate=f"{method}, f = %{{x:.2g}}<br>no KD: %{{y:.2%}} (model)<extra></extra>"), row=row, col=col)
            accuracy = part["teacher_test_acc"].dropna()
            if len(accuracy):
                fig.add_trace(go.Scatter(
                    x=[part["fraction"].min(), part["fraction"].max()], y=[accuracy.mean()] * 2, mode="lines",
                    name=f"teacher {arch} itself (measured)", legendgroup=f"t-{arch}", showlegend=first,
                    line=dict(color=colors[arch], dash="dash", width=1),
                    hovertemplate=f"teacher {arch}: %{{y:.2%}}<extra></extra>"), row=row, col=col)
    if not panels:
        fig.add_annotation(text="No method was distilled from more than one teacher.", xref="paper", yref="paper",
                           x=0.5, y=0.5, showarrow=False, font=dict(size=14))
    fig.update_xaxes(type="log", tickangle=0, title_text=LOG_AXIS, **(_f_ticks(pruned) if len(pruned) else {}))
    fig.update_yaxes(tickformat=".0%")
    fig.update_yaxes(title_text="test accuracy", col=1)
    fig.update_layout(template=TEMPLATE, height=max(420, PANEL_HEIGHT * rows + 220), legend=_legend_below(-0.2),
                      margin=dict(t=70, b=40),
                      title="Teacher capacity: test accuracy versus f under each teacher, with KD at α* and without KD")
    return fig


# --------------------------------------------------------------------------------------------
# The report's figures


@dataclass(frozen=True)
class Figure:
    """One section of the report: ``build(analysis)`` gives the figure, ``shown(analysis)`` whether the
    analysis has what it needs, ``how`` says how to read it (under the figure); ``per_noise_level``: its
    markers differ by label noise level (the report says so when there are several)."""

    title: str
    nav: str
    how: str
    build: Callable
    shown: Callable = lambda analysis: True
    per_noise_level: bool = False


FIGURES: Registry[Figure] = Registry("figure")


def register_figure(section: str, *, title: str, nav: str, how: str, shown: Callable | None = None,
                    per_noise_level: bool = False):
    """Register ``build(analysis) -> go.Figure`` as the report's section ``section`` (its anchor; the
    figure's element is ``fig-<section>``)."""

    def decorator(build: Callable) -> Callable:
        FIGURES.register(section)(Figure(title, nav, how, build, shown or (lambda analysis: True), per_noise_level))
        return build

    return decorator


register_figure(
    "alpha-f", title="Optimal α versus f", nav="α versus f", per_noise_level=True,
    how="each marker is α*(f) of one method at one kept fraction from the pooled model (a model estimate, not a "
        "trial), with its 95 % interval; methods sharing an f are shifted sideways so their intervals can be told "
        "apart, the black square at f = 1 is the full-data cell that every method shares (its α* from its own trials: "
        "the curves' ends at f = 1 rest mostly on the smaller fractions), and hollow markers are "
        "optima the data cannot pin; lines and bands are each method's α*(f) curve and its pointwise 95 % "
        "band (each f on its own, not the whole curve at once); whether α* falls as f grows is the slope test in the "
        "findings and the fits table, not a reading of the bands. With study replicates each marker is one "
        "replicate's own α* (its own curve) and the curve and band are the mean over the replicates with a t interval.",
)(lambda analysis: alpha_vs_f(analysis.cells, analysis.fits))
register_figure(
    "accuracy", title="Test accuracy versus f", nav="accuracy versus f", per_noise_level=True,
    how="for each method, the solid line is test accuracy with KD at α* and the dotted line without KD (α = 0), "
        "both predictions of the cell's own model within the range its trials measured, with 95 % intervals; the gap "
        "between them is the cells table's KD gain (with replicates, both are means over them), and the dashed "
        "line is the teacher.",
)(lambda analysis: accuracy_vs_f(analysis.cells))
register_figure(
    "val-alpha", title="Validation accuracy versus α", nav="accuracy versus α",
    how="each panel is one cell: dots are measured trials (validation accuracy), the line is the cell's own best "
        f"peak (a diagnostic, flat when the trials show no peak; up to {RATIO_BOUND:g} times steeper on one side), and the "
        "dashed line and band are α* and its 95 % interval from the pooled model (the f = 1 cell's from its own trials).",
)(lambda analysis: val_vs_alpha(analysis.experiment.trials, analysis.cells))
register_figure(
    "heatmap", title="Accuracy over (α, f)", nav="heatmap",
    how="colour is the mean measured validation accuracy of the trials in each (α bin, f) box, blank where no "
        "trial fell; stars mark α* from the pooled model, so a diagonal of stars is an α-f relation.",
)(lambda analysis: accuracy_heatmap(analysis.experiment.trials, analysis.cells))
register_figure(
    "kd-noise", title="KD gain versus label noise", nav="KD gain versus label noise",
    shown=lambda analysis: len(noise_levels(analysis.cells)) > 1,  # a sweep over label noise
    how="each line is one method at one kept fraction f, each point its KD gain (test accuracy at α* minus at "
        "α = 0, model predictions of the cell's trials, mean over its replicates and teachers) at one label noise "
        "rate P with its 95 % interval, points shifted sideways a little to separate them; a line that rises to "
        "the right means KD helps more where the kept data carry more noisy labels.",
)(lambda analysis: kd_gain_vs_noise(kd_gain_by_noise(analysis.cells, analysis.optima.t_test)))
register_figure(
    "teachers", title="Teacher capacity", nav="teacher capacity",
    shown=lambda analysis: analysis.cells["teacher_arch"].nunique() > 1,  # a capacity study
    how="each panel is one method distilled from several teachers: for each teacher (one colour), the solid line "
        "is test accuracy with KD at α* and the dotted line without KD (α = 0, where the teacher plays no part), "
        "both predictions of the cell's own model with their 95 % intervals as in the accuracy figure (with "
        "replicates, means over them), and the dashed line the teacher's own accuracy; where a smaller teacher's "
        "solid line lies above a larger one's, the smaller teacher distils better at that f (the findings give "
        "the difference with its interval).",
)(lambda analysis: accuracy_by_teacher(analysis.cells))
