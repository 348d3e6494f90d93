"""The report's plotly figures. Each takes the tidy trials, the cell optima table and the alpha-f fits.

Methods keep one colour across every figure; the f = 1.0 reference cell (method ``full``) is drawn in
each method's panels, since at f = 1 every method keeps the same data.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis.alpha_f import POOLED, AlphaFFit
from analysis.optimum import GRID_POINTS, quadratic_value
from sweep.plan import FULL

TEMPLATE = "plotly_white"
PANEL_HEIGHT = 230
MAX_COLUMNS = 3


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


def _rgba(hex_color: str, alpha: float) -> str:
    hex_color = hex_color.lstrip("#")
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def alpha_vs_f(cells: pd.DataFrame, fits: list[AlphaFFit]) -> go.Figure:
    """Optimal alpha against f per method: optima with 95% intervals, the chosen fitted curve, its band."""
    colors = method_colors(_methods(cells))
    fig = go.Figure()
    done = cells[cells["alpha_opt"].notna()]
    for method in _methods(cells):
        part = _with_full(done, method).sort_values("fraction")
        fig.add_trace(go.Scatter(
            x=part["fraction"], y=part["alpha_opt"], mode="markers", name=f"{method} optima",
            legendgroup=method, marker=dict(color=colors[method], size=9),
            error_y=dict(type="data", symmetric=False, array=part["alpha_hi"] - part["alpha_opt"],
                         arrayminus=part["alpha_opt"] - part["alpha_lo"], thickness=1.2),
            customdata=np.stack([part["cell"], part["alpha_lo"], part["alpha_hi"], part["n_completed"]], axis=1),
            hovertemplate="%{customdata[0]}<br>α* = %{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}]"
                          "<br>%{customdata[3]} completed trials<extra></extra>",
        ))
    for fit in fits:
        if fit.best is None:
            continue
        method = fit.group.split(" | ")[0]
        color = colors.get(method, "#222222")
        low, high = fit.f_range
        grid = np.geomspace(low, high, 80)
        curve = fit.curve(grid)
        label = (f"{fit.group}: α* = {fit.best.formula} ({fit.chosen}, {fit.selected_by}; "
                 f"ρ = {fit.spearman_rho:.2f}, p = {fit.spearman_p:.3g}, {fit.relation})")
        fig.add_trace(go.Scatter(
            x=np.r_[grid, grid[::-1]], y=np.r_[curve["hi"], curve["lo"][::-1]], fill="toself", mode="lines",
            line=dict(width=0), fillcolor=_rgba(color, 0.12), hoverinfo="skip", showlegend=False, legendgroup=method,
        ))
        fig.add_trace(go.Scatter(
            x=grid, y=curve["alpha"], mode="lines", name=label, legendgroup=method,
            line=dict(color=color, width=2.5 if method == POOLED else 2, dash="dash" if method == POOLED else "solid"),
            hovertemplate=f"{fit.group}: α = {fit.best.formula}<br>f = %{{x:.3f}}: α = %{{y:.3f}}<extra></extra>",
        ))
    fig.update_layout(
        template=TEMPLATE, height=560, title="Optimal α versus kept fraction f (95% bootstrap intervals, fitted curves)",
        xaxis=dict(title="kept fraction f", type="log", **_f_ticks(cells)), yaxis=dict(title="optimal α (weight of the KD term)"),
        legend=dict(orientation="h", y=-0.18, yanchor="top", font=dict(size=11)), margin=dict(b=40),
    )
    return fig


def _f_ticks(table: pd.DataFrame) -> dict:
    fractions = sorted(table["fraction"].unique())
    return {"tickvals": fractions, "ticktext": [f"{f:g}" for f in fractions]}


def _grid_shape(n: int) -> tuple[int, int]:
    columns = min(MAX_COLUMNS, n)
    return math.ceil(n / columns), columns


def accuracy_vs_f(cells: pd.DataFrame) -> go.Figure:
    """Test accuracy against f per method: KD at the optimal alpha, no KD (alpha = 0), the teacher."""
    methods = _methods(cells)
    colors = method_colors(methods)
    rows, columns = _grid_shape(len(methods))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=methods, shared_yaxes=True,
                        horizontal_spacing=0.05, vertical_spacing=0.18 if rows > 1 else 0.1)
    teacher = cells["teacher_test_acc"].dropna()
    for i, method in enumerate(methods):
        row, col = i // columns + 1, i % columns + 1
        part = _with_full(cells, method).groupby("fraction", as_index=False)[
            ["test_at_opt", "baseline_test_acc", "alpha_opt"]].mean().sort_values("fraction")
        first = i == 0
        fig.add_trace(go.Scatter(
            x=part["fraction"], y=part["test_at_opt"], mode="lines+markers", name="KD at optimal α",
            legendgroup="kd", showlegend=first, line=dict(color=colors[method]), customdata=part["alpha_opt"],
            hovertemplate=f"{method}, f = %{{x}}<br>KD (α* = %{{customdata:.2f}}): %{{y:.2%}}<extra></extra>",
        ), row=row, col=col)
        fig.add_trace(go.Scatter(
            x=part["fraction"], y=part["baseline_test_acc"], mode="lines+markers", name="no KD (α = 0)",
            legendgroup="nokd", showlegend=first, line=dict(color=colors[method], dash="dot"),
            marker=dict(symbol="circle-open"),
            hovertemplate=f"{method}, f = %{{x}}<br>no KD: %{{y:.2%}}<extra></extra>",
        ), row=row, col=col)
        if len(teacher):
            fig.add_trace(go.Scatter(
                x=[cells["fraction"].min(), 1.0], y=[teacher.mean()] * 2, mode="lines", name="teacher",
                legendgroup="teacher", showlegend=first, line=dict(color="#444", dash="dash", width=1.5),
                hovertemplate="teacher: %{y:.2%}<extra></extra>",
            ), row=row, col=col)
    fig.update_xaxes(type="log", tickangle=0, **_f_ticks(cells))
    for i in range(len(methods)):  # the axis title under the lowest panel of each column only
        if i + columns >= len(methods):
            fig.update_xaxes(title_text="kept fraction f", row=i // columns + 1, col=i % columns + 1)
    fig.update_yaxes(tickformat=".0%")
    fig.update_yaxes(title_text="test accuracy", col=1)
    fig.update_layout(template=TEMPLATE, height=max(380, PANEL_HEIGHT * rows + 150),
                      title="Test accuracy versus f: KD at the optimal α against no KD, with the teacher's accuracy")
    return fig


def val_vs_alpha(trials: pd.DataFrame, cells: pd.DataFrame) -> go.Figure:
    """Small multiples (method x f): every searched point, the fitted quadratic, the optimum and its interval."""
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
                x=done["alpha"], y=done["val_acc"], mode="markers", name="completed trial", legendgroup="done",
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
                    grid = np.linspace(cell["alpha_min"], cell["alpha_max"], GRID_POINTS // 4)
                    fig.add_trace(go.Scatter(
                        x=grid, y=quadratic_value(np.asarray(cell["curve"])[None, :], grid)[0], mode="lines",
                        name="fitted quadratic", legendgroup="fit", showlegend=show,
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
    fig.update_layout(template=TEMPLATE, height=max(360, 200 * len(methods) + 160), showlegend=True,
                      title="Validation accuracy versus α for every cell: searched points, fitted curve, optimum "
                            "(dashed) and its 95% interval (band)", margin=dict(t=110),
                      legend=dict(orientation="h", y=0.98, yanchor="top", x=1, xanchor="right", yref="container"))
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
            x=optima["alpha_opt"], y=[f"{f:g}" for f in optima["fraction"]], mode="markers", name="optimal α",
            showlegend=i == 0, legendgroup="opt", marker=dict(symbol="star", size=11, color="white",
                                                              line=dict(color="black", width=1)),
            hovertemplate="optimal α = %{x:.3f} at f = %{y}<extra></extra>",
        ), row=row, col=col)
    fig.update_xaxes(range=[edges[0], edges[-1]])
    for i in range(len(methods)):
        if i + columns >= len(methods):
            fig.update_xaxes(title_text="α", row=i // columns + 1, col=i % columns + 1)
    fig.update_yaxes(title_text="f", type="category", categoryorder="array", categoryarray=labels, col=1)
    fig.update_layout(template=TEMPLATE, height=max(360, PANEL_HEIGHT * rows + 150),
                      coloraxis=dict(colorscale="Viridis", colorbar=dict(title="val acc", tickformat=".0%")),
                      title=f"Mean validation accuracy over (α, f), α in {bins} bins; stars: each cell's optimal α",
                      legend=dict(orientation="h", y=1.0, yanchor="bottom", x=1, xanchor="right"))
    return fig
