"""The optimal alpha of every cell, estimated from all of its trials.

Model: a quadratic in alpha fitted by least squares to the completed trials' validation
accuracy, maximised over the searched span of alpha (never extrapolated past the outermost trials).

Why a quadratic:
- Near its maximum any smooth accuracy curve is a parabola (second-order Taylor expansion), and
  accuracy against the distillation weight is smooth and single-peaked in practice.
- A cell holds few trials (3 to 30). Three parameters pool every trial into the estimate instead of
  trusting the single luckiest one, and cannot chase the trial-to-trial noise (about 0.5-1 point of
  accuracy between seeds) the way a spline, a kernel smoother or a Gaussian process with learned
  length scale do on so few points.
- When the fitted parabola opens upward or peaks outside the span, the maximiser is the span's edge,
  which is then flagged (``at_edge``): the optimum lies at or beyond the searched range.

Uncertainty: a bootstrap over trials. Each replicate resamples the cell's completed trials with
replacement and refits; the 2.5 and 97.5 percentiles of the replicate maximisers give the interval and
their spread the standard error that weights the cell in the alpha-f fit. A replicate (or a cell)
with fewer than three distinct alphas cannot fix a parabola; it takes its best observed trial instead.

Also per cell: the best observed trial, the alpha = 0 baseline (mean of its completed trials), the
test accuracy at the chosen alpha (the same quadratic fitted to test accuracy, evaluated there: the
test set never chooses alpha, it is only read at the validation optimum) and the KD gains, accuracy at
the optimum minus the baseline, on validation and test.

Each cell's replicates are seeded from the analysis seed and the cell's name, so the numbers do not
depend on which other cells are in the table.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.results import CELL_KEYS

GRID_POINTS = 401
MIN_DISTINCT_FOR_CURVE = 3
LEVEL = 0.95


@dataclass
class CellOptima:
    """One row per cell (``table``) and each cell's bootstrap maximisers (``draws``: cell -> (B,))."""

    table: pd.DataFrame
    draws: dict[str, np.ndarray]
    n_boot: int
    seed: int


def quadratic_fit(alpha: np.ndarray, y: np.ndarray, counts: np.ndarray | None = None) -> np.ndarray:
    """Least-squares coefficients (c0, c1, c2) of y ~ c0 + c1*alpha + c2*alpha^2.

    ``counts`` (B, n) fits B weighted problems at once (bootstrap multiplicities); rows whose design is
    singular (fewer than three distinct alphas drawn) come back as NaN.
    """
    design = np.stack([np.ones_like(alpha), alpha, alpha**2], axis=1)  # (n, 3)
    if counts is None:
        counts = np.ones((1, len(alpha)))
    gram = np.einsum("bn,ni,nj->bij", counts, design, design)
    moment = np.einsum("bn,ni,n->bi", counts, design, y)
    coef = np.full((len(counts), 3), np.nan)
    ok = np.linalg.cond(gram) < 1e10
    if ok.any():
        coef[ok] = np.linalg.solve(gram[ok], moment[ok][..., None])[..., 0]
    return coef


def quadratic_value(coef: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    alpha = np.asarray(alpha, dtype=float)
    return coef[..., 0:1] + coef[..., 1:2] * alpha + coef[..., 2:3] * alpha**2


def _distinct(alpha: np.ndarray) -> int:
    return len(np.unique(np.round(alpha, 12)))


def _cell_rng(seed: int, cell: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(cell.encode())])


def bootstrap_maximisers(alpha: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) maximisers of the refitted curve over trials resampled with replacement."""
    n = len(alpha)
    picks = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.arange(n_boot)[:, None], picks), 1.0)
    grid = np.linspace(alpha.min(), alpha.max(), GRID_POINTS)
    coef = quadratic_fit(alpha, y, counts)
    values = quadratic_value(coef, grid)
    curve_max = grid[np.argmax(np.nan_to_num(values, nan=0.0), axis=1)]
    drawn_best = alpha[np.argmax(np.where(counts > 0, y, -np.inf), axis=1)]
    # distinct alphas drawn per replicate: trial multiplicities summed per alpha value
    _, group = np.unique(np.round(alpha, 12), return_inverse=True)
    distinct = ((counts @ np.eye(group.max() + 1)[group]) > 0).sum(axis=1)
    use_curve = (distinct >= MIN_DISTINCT_FOR_CURVE) & ~np.isnan(coef[:, 0])
    return np.where(use_curve, curve_max, drawn_best)


def _smoothed(alpha: np.ndarray, y: np.ndarray, at: float) -> float:
    """The quadratic through (alpha, y) at ``at``; the nearest trial's value with too few alphas."""
    keep = ~np.isnan(y)
    alpha, y = alpha[keep], y[keep]
    if len(y) == 0:
        return float("nan")
    if _distinct(alpha) >= MIN_DISTINCT_FOR_CURVE:
        return float(quadratic_value(quadratic_fit(alpha, y), at)[0, 0])
    nearest = np.abs(alpha - at)
    return float(y[nearest == nearest.min()].mean())


def _one_cell(cell: pd.DataFrame, n_boot: int, seed: int) -> tuple[dict, np.ndarray]:
    first = cell.iloc[0]
    row = {key: first[key] for key in CELL_KEYS}
    row["cell"] = first["cell"]
    counts = cell["status"].value_counts()
    row.update(
        n_trials=len(cell), n_completed=int(counts.get("completed", 0)), n_stopped=int(counts.get("stopped", 0)),
        n_error=int(counts.get("error", 0)),
        teacher_val_acc=cell["teacher_val_acc"].iloc[0], teacher_test_acc=cell["teacher_test_acc"].iloc[0],
    )
    done = cell[cell["status"] == "completed"]
    baseline = done[done["is_baseline"]]
    row.update(
        baseline_val_acc=baseline["val_acc"].mean() if len(baseline) else np.nan,
        baseline_test_acc=baseline["test_acc"].mean() if len(baseline) else np.nan,
    )
    nan_fields = dict.fromkeys(
        ["alpha_opt", "alpha_lo", "alpha_hi", "alpha_se", "val_at_opt", "test_at_opt", "kd_gain_val", "kd_gain_test",
         "best_alpha", "best_val_acc", "best_test_acc", "alpha_min", "alpha_max"], np.nan)
    if done.empty:
        row.update(nan_fields, estimator="none", at_edge=False, best_trial_id=None,
                   note="no completed trials")
        return row, np.full(n_boot, np.nan)

    alpha = done["alpha"].to_numpy(float)
    val = done["val_acc"].to_numpy(float)
    test = done["test_acc"].to_numpy(float)
    best = done.iloc[int(np.argmax(val))]
    row.update(best_alpha=best["alpha"], best_val_acc=best["val_acc"], best_test_acc=best["test_acc"],
               best_trial_id=best.get("trial_id"), alpha_min=alpha.min(), alpha_max=alpha.max())

    draws = bootstrap_maximisers(alpha, val, n_boot, _cell_rng(seed, row["cell"]))
    if _distinct(alpha) >= MIN_DISTINCT_FOR_CURVE:
        grid = np.linspace(alpha.min(), alpha.max(), GRID_POINTS)
        coef = quadratic_fit(alpha, val)
        values = quadratic_value(coef, grid)[0]
        alpha_opt, val_at_opt, estimator = float(grid[np.argmax(values)]), float(values.max()), "quadratic"
        row["curve"] = coef[0].tolist()
    else:
        alpha_opt, val_at_opt, estimator = float(best["alpha"]), float(best["val_acc"]), "best observed"
        row["curve"] = None
    tail = (1 - LEVEL) / 2
    span = alpha.max() - alpha.min()
    at_edge = estimator == "quadratic" and span > 0 and min(alpha_opt - alpha.min(), alpha.max() - alpha_opt) < 1e-9 + span / (GRID_POINTS - 1)
    test_at_opt = _smoothed(alpha, test, alpha_opt)
    notes = []
    if estimator == "best observed":
        notes.append(f"fewer than {MIN_DISTINCT_FOR_CURVE} distinct alphas: best observed trial")
    if at_edge:
        notes.append("optimum at the edge of the searched alphas")
    if len(baseline) == 0:
        notes.append("no completed alpha = 0 baseline")
    if row["n_stopped"] or row["n_error"]:
        notes.append(f"{row['n_stopped']} stopped, {row['n_error']} errored (not used)")
    row.update(
        alpha_opt=alpha_opt, alpha_lo=float(np.quantile(draws, tail)), alpha_hi=float(np.quantile(draws, 1 - tail)),
        alpha_se=float(draws.std(ddof=1)) if n_boot > 1 else np.nan,
        val_at_opt=val_at_opt, test_at_opt=test_at_opt,
        kd_gain_val=val_at_opt - row["baseline_val_acc"], kd_gain_test=test_at_opt - row["baseline_test_acc"],
        estimator=estimator, at_edge=bool(at_edge), note="; ".join(notes) or "ok",
    )
    return row, draws


def cell_optima(trials: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> CellOptima:
    """The optimum of every cell of a tidy trials table (``analysis.results.tidy``)."""
    if n_boot < 2:
        raise ValueError("n_boot must be at least 2")
    rows, draws = [], {}
    for _, cell in trials.groupby(CELL_KEYS, sort=True):
        row, cell_draws = _one_cell(cell, n_boot, seed)
        rows.append(row)
        draws[row["cell"]] = cell_draws
    table = pd.DataFrame(rows)
    return CellOptima(table=table, draws=draws, n_boot=n_boot, seed=seed)
