"""Every cell of a sweep: what its trials measured, where its optimum is, and what KD gains there.

One row per cell. Three kinds of numbers, labelled as such in the report:

- measured: the alpha = 0 baseline (mean of its completed trials), the best trial (its alpha and its
  accuracies). A measurement is an accuracy some trial reached.
- the cell alone (a diagnostic): the posterior of the peak's location from this cell's trials only
  (the best concave peak per candidate location, ``analysis.pooled.peak_rss``, with the report's noise
  level). ``cell_pinned`` says whether that interval is narrower than half the searched range; a
  cell with fewer than three distinct alphas, or a flat or noisy response, cannot pin its optimum
  and says so in ``note``.
- the answer: ``alpha_opt`` with ``alpha_lo``/``alpha_hi`` is alpha*(f) of the cell's group from the
  pooled fit (``analysis.alpha_f``; with study replicates, the curve of the cell's own replicate), the
  estimate to trust; ``pinned`` tells whether its interval is
  narrower than half the range. The full-data cell (f = 1) is the exception: its alpha* is its own
  (the cell-alone posterior). At f = 1 alpha matters least, so the curve's value there rests mostly on
  the small-f cells and on the curve's shape in ln f; it covered the truth in 66-91 % of simulated
  sweeps (66 % with an asymmetric peak), the cell's own posterior in 94-100 %. It is the number a user
  reads for "which alpha on all my data", so it stands on that data.
  At the cell's alpha*, ``val_at_opt`` and ``test_at_opt`` are predictions of a
  least-squares curve in alpha through the cell's own trials (``prediction``: "model"; a cubic from five
  distinct alphas, a quadratic from three: ``pooled.polynomial_prediction``), clipped to
  the range of accuracies the cell's trials measured, so never outside [0, 1] and never beyond what a
  trial supports; with two distinct alphas they are the mean at the nearest measured alpha
  ("measured"). The test set never chooses alpha: alpha* comes from validation accuracy only.

KD gain: ``kd_gain_test`` is test accuracy at alpha* minus at alpha = 0 (``test_at_opt`` minus
``test_at_zero``, each with its 95 % interval: the accuracy figure draws these two), both from the
cell's curve, with a 95 % interval (t with the noise's degrees of freedom; the noise of test accuracy is pooled
over the report). ``kd_win`` is true only when the interval's lower end is above 0: a gain of 1e-16
is not a win. ``kd_gain_val`` is the same on validation accuracy, which chose alpha* and so is
optimistic; it carries no interval and no verdict.

The curve is a cubic, not the symmetric quadratic it was, because a quadratic misstates a peak of
another shape: through noise-free cells of the simulator's peaks it missed the gain of one three times
steeper above the optimum by up to 0.36 points and of a Gaussian bump by up to 0.32, the cubic by at
most 0.11 (at about 30 % more standard error). One known bias remains, measured on simulated sweeps
at the CIFAR-10 subset's noise: only test accuracy's evaluation noise is independent of the choice of
alpha*, not the training noise a student's validation and test accuracies share, so an alpha* that
rides a lucky student inflates the gain by up to 0.3 points at f <= 0.2 (small against one cell's
interval, not against the mean over many cells; analysis/CALIBRATION.md, peaks of other shapes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import pooled
from analysis.pooled import LEVEL, CellStats
from analysis.results import completed
from contract import ALPHA_RANGE, CELL_COLUMNS, FULL

V_POINTS = 601
MIN_DISTINCT_FOR_CURVE = 3
ACCURACY_COLUMNS = ("baseline_val_acc", "baseline_test_acc", "best_val_acc", "best_test_acc", "val_at_opt", "test_at_opt")


@dataclass
class CellOptima:
    """One row per cell (``table``), and the noise levels used."""

    table: pd.DataFrame
    sigma_val: float
    sigma_test: float
    noise_df: float
    n_boot: int = 0
    seed: int = 0
    t_test: float = float("nan")  # the t quantile of the test-accuracy intervals (kd_gain_test_lo/hi)


def _unit(alpha, alpha_range):
    low, high = alpha_range
    return (np.asarray(alpha, float) - low) / (high - low)


def test_noise(trials: pd.DataFrame) -> tuple[float, float]:
    """(sd, df) of test accuracy around each cell's least-squares curve in alpha, the one its predictions
    come from (``pooled.polynomial_prediction``), or its means at fewer than three distinct alphas."""
    rss = df = 0.0
    for _, cell in trials.groupby("cell"):
        cell = cell[cell["test_acc"].notna()]
        if len(cell) == 0:
            continue
        u, y = cell["alpha"].to_numpy(float), cell["test_acc"].to_numpy(float)
        distinct = len(np.unique(np.round(u, 9)))
        k = pooled.prediction_degree(distinct) + 1 if distinct >= 3 else distinct
        if len(y) <= k:
            continue
        design = np.stack([u**d for d in range(k)], 1) if distinct >= 3 else \
            (np.round(u, 9)[:, None] == np.unique(np.round(u, 9))[None, :]).astype(float)
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        rss += float(((y - design @ coef) ** 2).sum())
        df += len(y) - k
    return (math.sqrt(rss / df), df) if df >= pooled.MIN_NOISE_DF else (float("nan"), df)


def _cell_alone(u: np.ndarray, y: np.ndarray, sigma: float, alpha_range) -> dict:
    """The cell's own posterior of its peak (unit alpha) and its best peak (alpha units)."""
    st = CellStats.of([(u, y)])
    v = np.linspace(*pooled.BOX, V_POINTS)
    by_ratio = pooled.peak_rss_by_ratio(st, v[:, None])[:, 0]  # (V, R)
    rss = by_ratio.min(-1)
    out = {"cell_alpha": np.nan, "cell_alpha_lo": np.nan, "cell_alpha_hi": np.nan, "cell_pinned": False, "curve": None}
    low, high = alpha_range
    span = high - low
    best = float(v[np.argmin(rss)])
    if math.isfinite(sigma) and sigma > 0:
        w = np.exp(-(rss - rss.min()) / (2 * sigma**2))
        tail = (1 - LEVEL) / 2
        lo, mid, hi = pooled.weighted_quantiles(np.clip(v, 0, 1), w / w.sum(), [tail, 0.5, 1 - tail])
        out.update(cell_alpha=low + mid * span, cell_alpha_lo=low + lo * span, cell_alpha_hi=low + hi * span,
                   cell_pinned=bool(st.distinct[0] >= MIN_DISTINCT_FOR_CURVE and hi - lo <= pooled.PINNED_WIDTH))
    elif st.distinct[0] >= MIN_DISTINCT_FOR_CURVE:  # no noise estimate: the best peak, without an interval
        out["cell_alpha"] = low + float(np.clip(best, 0, 1)) * span
    if st.distinct[0] >= MIN_DISTINCT_FOR_CURVE:
        ratio = float(pooled.RATIOS[int(np.argmin(by_ratio[int(np.argmin(rss))]))])
        level, k = pooled.peak_curve(u, y, best, ratio)
        # in alpha units: level, curvature below the peak, the peak, the ratio above it (``peak_value``)
        out["curve"] = [level, k / span**2, low + best * span, ratio]
    return out


def peak_value(curve, alpha) -> np.ndarray:
    """The value at ``alpha`` of a cell's own best peak (``curve``: level, curvature, peak, ratio)."""
    level, k, peak, ratio = curve
    alpha = np.asarray(alpha, float)
    return level - k * np.where(alpha < peak, 1.0, ratio) * (alpha - peak) ** 2


def _clip_to(values, observed):
    observed = np.asarray(observed, float)
    observed = observed[np.isfinite(observed)]
    if len(observed) == 0:
        return np.full(np.shape(values), np.nan)
    return np.clip(values, observed.min(), observed.max())


def _at_optimum(done: pd.DataFrame, alpha_opt: float, sigma_test: float, t: float, alpha_range) -> dict:
    out = dict.fromkeys(["val_at_opt", "test_at_opt", "test_at_opt_se", "test_at_opt_lo", "test_at_opt_hi", "test_at_zero",
                         "test_at_zero_lo", "test_at_zero_hi", "kd_gain_val", "kd_gain_test", "kd_gain_test_se",
                         "kd_gain_test_lo", "kd_gain_test_hi"], np.nan)
    out.update(kd_win=False, prediction="none")
    if not math.isfinite(alpha_opt) or done.empty:
        return out
    u = _unit(done["alpha"].to_numpy(float), alpha_range)
    u_opt, u_base = float(_unit(alpha_opt, alpha_range)), float(_unit(0.0, alpha_range))
    has_base = bool(done["is_baseline"].any())
    at = [u_opt, u_base] if has_base else [u_opt]
    for metric in ("val_acc", "test_acc"):
        y = done[metric].to_numpy(float)
        keep = np.isfinite(y)
        if not keep.any():
            continue
        values, cov, kind = pooled.polynomial_prediction(u[keep], y[keep], at)
        values = _clip_to(values, y[keep])
        short = metric.split("_")[0]
        out[f"{short}_at_opt"] = float(values[0])
        out["prediction"] = kind
        if has_base:
            out[f"kd_gain_{short}"] = float(values[0] - values[1])
        if metric == "test_acc" and has_base:
            out["test_at_zero"] = float(values[1])  # the same model at alpha = 0: the KD gain's other end
        if metric == "test_acc" and math.isfinite(sigma_test):
            out["test_at_opt_se"] = float(sigma_test * math.sqrt(max(cov[0, 0], 0.0))) if np.isfinite(cov[0, 0]) else np.nan
            ends = [(0, "test_at_opt")] + ([(1, "test_at_zero")] if has_base else [])
            for i, name in ends:  # 95 % intervals of the two ends, within [0, 1]
                if np.isfinite(cov[i, i]):
                    half = t * sigma_test * math.sqrt(max(cov[i, i], 0.0))
                    out[f"{name}_lo"], out[f"{name}_hi"] = max(0.0, values[i] - half), min(1.0, values[i] + half)
            if has_base and np.isfinite(cov).all():
                se = sigma_test * math.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0))
                gain = out["kd_gain_test"]
                out.update(kd_gain_test_se=se, kd_gain_test_lo=max(-1.0, gain - t * se), kd_gain_test_hi=min(1.0, gain + t * se))
                out["kd_win"] = bool(out["kd_gain_test_lo"] > 0)
    return out


def cell_optima(trials: pd.DataFrame, alpha_range: tuple[float, float] = ALPHA_RANGE, fits: list | None = None,
                sigma: float | None = None) -> CellOptima:
    """The row of every cell of a tidy trials table (``analysis.results.tidy``). ``fits`` (from
    ``analysis.alpha_f.fit_alpha_f``) supply alpha*; without them the cell-alone estimate is used."""
    from analysis.alpha_f import POOLED, noise_sd

    alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
    done_all = completed(trials)
    noise_df = float("nan")
    if sigma is None:
        sigma, noise_df = noise_sd(done_all, alpha_range)
    sigma_test, test_df = test_noise(done_all)
    if not math.isfinite(sigma_test):
        sigma_test, test_df = sigma, noise_df
    t = pooled.t_quantile(test_df if math.isfinite(test_df) else 1.0)

    by_cell: dict[str, tuple] = {}
    for fit in fits or []:
        if not fit.fitted:
            continue
        for name in fit.cells:
            if "|" + FULL + "|" in name and fit.method != POOLED and any(
                    g.method == POOLED and g.fitted and g.context == fit.context for g in fits):
                continue  # the shared f = 1 cell takes the pooled fit's alpha* when there is one
            by_cell.setdefault(name, (fit, ))

    rows = []
    for _, cell in trials.groupby(CELL_COLUMNS, sort=True):
        first = cell.iloc[0]
        row = {key: first[key] for key in CELL_COLUMNS}
        row["cell"] = first["cell"]
        counts = cell["status"].value_counts()
        row.update(
            n_trials=len(cell), n_completed=int(counts.get("completed", 0)), n_stopped=int(counts.get("stopped", 0)),
            n_error=int(counts.get("error", 0)),
            teacher_val_acc=cell["teacher_val_acc"].iloc[0], teacher_test_acc=cell["teacher_test_acc"].iloc[0],
            teacher_params=cell["teacher_params"].max(),
        )
        done = completed(cell)
        baseline = done[done["is_baseline"]]
        u = _unit(done["alpha"].to_numpy(float), alpha_range)
        row.update(
            n_alphas=len(np.unique(np.round(u, 9))),
            baseline_val_acc=baseline["val_acc"].mean() if len(baseline) else np.nan,
            baseline_test_acc=baseline["test_acc"].mean() if len(baseline) else np.nan,
            # the measured mean's se: the report's test noise over the cell's alpha = 0 students
            baseline_test_se=sigma_test / math.sqrt(len(baseline)) if len(baseline) else np.nan,
        )
        notes = []
        if done.empty:
            row.update(dict.fromkeys(["best_alpha", "best_val_acc", "best_test_acc", "cell_alpha", "cell_alpha_lo",
                                      "cell_alpha_hi", "alpha_opt", "alpha_lo", "alpha_hi"], np.nan),
                       best_trial_id=None, cell_pinned=False, pinned=False, curve=None, group=None,
                       **_at_optimum(done, np.nan, sigma_test, t, alpha_range))
            row["note"] = "no completed trials"
            rows.append(row)
            continue
        best = done.iloc[int(np.argmax(done["val_acc"].to_numpy(float)))]
        row.update(best_alpha=best["alpha"], best_val_acc=best["val_acc"], best_test_acc=best["test_acc"],
                   best_trial_id=best.get("trial_id"))
        row.update(_cell_alone(u, done["val_acc"].to_numpy(float), sigma, alpha_range))
        fit = by_cell.get(row["cell"], (None,))[0]
        own = row["method"] == FULL  # the full-data cell: alpha* on its own evidence (see the module's docstring)
        if fit is not None and not own:
            i = int(np.argmin(np.abs(fit.f - float(row["fraction"]))))
            # with replicates the cell's own replicate's curve (the fit's alpha* is their mean)
            alpha, lo, hi = fit.by_replicate.get(int(row["replicate"]), (fit.alpha, fit.lo, fit.hi))
            row.update(alpha_opt=float(alpha[i]), alpha_lo=float(lo[i]), alpha_hi=float(hi[i]),
                       pinned=bool(hi[i] - lo[i] <= pooled.PINNED_WIDTH * (alpha_range[1] - alpha_range[0])),
                       group=fit.group)
        else:
            row.update(alpha_opt=row["cell_alpha"], alpha_lo=row["cell_alpha_lo"], alpha_hi=row["cell_alpha_hi"],
                       pinned=row["cell_pinned"], group=None)
        row.update(_at_optimum(done, row["alpha_opt"], sigma_test, t, alpha_range))
        if row["n_alphas"] < MIN_DISTINCT_FOR_CURVE:
            notes.append(f"{row['n_alphas']} distinct α: this cell alone cannot locate its optimum")
        elif not row["cell_pinned"]:
            notes.append("flat or noisy response: this cell alone cannot pin its optimum")
        if own and fit is not None:
            notes.append("α* from this cell's own trials (the curve's value at f = 1 rests mostly on the smaller fractions)")
        if not row["pinned"] and math.isfinite(row["alpha_opt"]):
            notes.append("α* not pinned at this f (interval wider than half the range)")
        if not math.isfinite(sigma):
            notes.append("too few trials to estimate the noise: no intervals")
        if len(baseline) == 0:
            notes.append("no completed α = 0 baseline")
        if row["n_stopped"] or row["n_error"]:
            notes.append(f"{row['n_stopped']} stopped, {row['n_error']} errored (not used)")
        row["note"] = "; ".join(notes) or "ok"
        rows.append(row)
    table = pd.DataFrame(rows)
    return CellOptima(table=table, sigma_val=sigma, sigma_test=sigma_test, noise_df=noise_df, t_test=t)
