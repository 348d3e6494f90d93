"""The alpha-f relation: how the optimal distillation weight depends on the kept fraction f.

For each pruning method (and pooled over methods) the cell optima alpha*(f) are fitted with every
family in ``FAMILIES``:

    inverse    alpha = a + b/f
    power      alpha = 1 - c*f^p        (alpha -> 1 as f -> 0 when c, p > 0)
    log        alpha = a + b*log(f)
    linear     alpha = a + b*f
    constant   alpha = a                (no relation: the null model)

Weighted least squares, each optimum weighted by 1/se^2, se being its bootstrap standard error floored
at half the group's median se (and at 2% of the alpha range): an optimum pinned to the edge of the
searched range, or a cell with few trials, can have replicates that all agree (se = 0), which says
nothing about its real precision, so no optimum gets more than 4 times the weight of a typical one. The family is chosen by AICc (the small-sample Akaike criterion, with
the residual scale estimated), or by leave-one-out error when there are too few cells for AICc to
compare the two-parameter families (fewer than 5).

Intervals: the fit is repeated on every bootstrap replicate of the cell optima (``analysis.optimum``:
trials resampled within each cell), so the parameter and curve intervals carry the per-cell noise of
the whole pipeline. The f = 1.0 reference cell (method ``full``) belongs to every method's fit, since
at f = 1 every method keeps the same data.

Monotonicity: Spearman's rho between f and alpha*, with a permutation p-value (exact for up to 7
cells). ``relation`` is "inverse" when rho < 0 at p < 0.05, "direct" when rho > 0 at p < 0.05, and
"none" otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from analysis.optimum import LEVEL, CellOptima
from sweep.plan import FULL
from trainables.registry import Registry

SE_FLOOR = 0.02  # of the alpha range
SIGNIFICANCE = 0.05
POOLED = "pooled"
CURVE_POINTS = 60


class Family:
    """A candidate family alpha = g(f; params); ``fit`` solves B weighted problems at once."""

    name: str
    params: tuple[str, ...]
    n_nonlinear = 0

    def fit(self, f: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
        """(B, k) parameters for responses ``y`` (B, n) at ``f`` (n,) with weights ``w`` (n,)."""
        raise NotImplementedError

    def predict(self, params: np.ndarray, f: np.ndarray) -> np.ndarray:
        """(B, m) values at ``f`` (m,) for parameters (B, k)."""
        raise NotImplementedError

    def formula(self, values: dict) -> str:
        raise NotImplementedError

    @property
    def n_params(self) -> int:
        return len(self.params)


class LinearInParams(Family):
    """alpha = sum_j beta_j * basis_j(f): closed-form weighted least squares."""

    def __init__(self, name: str, params: tuple[str, ...], basis, formula):
        self.name, self.params, self._basis, self._formula = name, params, basis, formula

    def fit(self, f, y, w):
        design = self._basis(f)  # (n, k)
        gram = design.T @ (w[:, None] * design)
        return np.linalg.lstsq(gram, design.T @ (w[:, None] * y.T), rcond=None)[0].T

    def predict(self, params, f):
        return params @ self._basis(np.asarray(f, float)).T

    def formula(self, v):
        return self._formula(v)


class Power(Family):
    """alpha = 1 - c*f^p. For a fixed p, c is a weighted least-squares ratio; p is found on a grid
    (-4 to 4, step 0.01) and refined to 1e-4, for every replicate at once."""

    name, params, n_nonlinear = "power", ("c", "p"), 1
    P_GRID = np.round(np.arange(-4.0, 4.0 + 1e-9, 0.01), 10)

    def _best(self, f, z, w, grid):
        # z = 1 - alpha = c * f^p; grid (G,) shared or (B, G) per replicate
        g = f[None, :] ** grid[..., None] if grid.ndim == 1 else f[None, None, :] ** grid[..., None]
        if grid.ndim == 1:  # g (G, n)
            s_gg = (w * g**2).sum(-1)  # (G,)
            s_zg = (z * w) @ g.T  # (B, G)
        else:  # g (B, G, n)
            s_gg = (w * g**2).sum(-1)  # (B, G)
            s_zg = np.einsum("bn,bgn->bg", z * w, g)
        rss = (w * z**2).sum(-1)[:, None] - s_zg**2 / s_gg
        pick = np.argmin(rss, axis=1)
        rows = np.arange(len(z))
        p = grid[pick] if grid.ndim == 1 else grid[rows, pick]
        c = (s_zg / s_gg)[rows, pick]
        return c, p

    def fit(self, f, y, w):
        z = 1.0 - y
        _, p = self._best(f, z, w, self.P_GRID)
        fine = p[:, None] + np.linspace(-0.01, 0.01, 201)[None, :]
        c, p = self._best(f, z, w, fine)
        return np.stack([c, p], axis=1)

    def predict(self, params, f):
        f = np.asarray(f, float)
        return 1.0 - params[:, :1] * f[None, :] ** params[:, 1:2]

    def formula(self, v):
        return f"1 - {v['c']:.3g}·f^{v['p']:.3g}"


def _signed(value: float) -> str:
    return f"- {abs(value):.3g}" if value < 0 else f"+ {value:.3g}"


FAMILIES: Registry[Family] = Registry("alpha-f family")
for _family in (
    LinearInParams("inverse", ("a", "b"), lambda f: np.stack([np.ones_like(f), 1.0 / f], 1),
                   lambda v: f"{v['a']:.3g} {_signed(v['b'])}/f"),
    Power(),
    LinearInParams("log", ("a", "b"), lambda f: np.stack([np.ones_like(f), np.log(f)], 1),
                   lambda v: f"{v['a']:.3g} {_signed(v['b'])}·ln f"),
    LinearInParams("linear", ("a", "b"), lambda f: np.stack([np.ones_like(f), f], 1),
                   lambda v: f"{v['a']:.3g} {_signed(v['b'])}·f"),
    LinearInParams("constant", ("a",), lambda f: np.ones((len(f), 1)), lambda v: f"{v['a']:.3g}"),
):
    FAMILIES.register(_family.name)(_family)
FAMILY_ORDER = ("inverse", "power", "log", "linear", "constant")


def list_families() -> list[str]:
    return list(FAMILY_ORDER)


@dataclass
class FamilyFit:
    family: str
    formula: str
    params: dict
    intervals: dict
    n_params: int
    aicc: float
    loo_rmse: float
    r2: float
    chi2_red: float
    bootstrap: np.ndarray | None = field(default=None, repr=False)  # (B, k) chosen family only is kept

    def to_dict(self, with_bootstrap: bool) -> dict:
        out = {k: _clean(getattr(self, k)) for k in ("family", "formula", "params", "intervals", "n_params", "aicc",
                                                      "loo_rmse", "r2", "chi2_red")}
        if with_bootstrap and self.bootstrap is not None:
            out["bootstrap"] = [[float(f"{x:.6g}") for x in row] for row in self.bootstrap]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FamilyFit:
        boot = data.get("bootstrap")
        return cls(**{k: data[k] for k in ("family", "formula", "params", "intervals", "n_params")},
                   **{k: _nan(data[k]) for k in ("aicc", "loo_rmse", "r2", "chi2_red")},
                   bootstrap=np.asarray(boot, float) if boot else None)


@dataclass
class AlphaFFit:
    """The fit of one group of cells: one method (with the f = 1 reference cell), or all pooled."""

    group: str
    context: dict  # dataset, teacher_arch, student_arch
    cells: list[str]
    f: np.ndarray
    alpha: np.ndarray
    se: np.ndarray
    alpha_range: tuple[float, float]
    families: dict[str, FamilyFit]
    chosen: str | None
    selected_by: str
    spearman_rho: float
    spearman_p: float
    relation: str
    message: str = ""

    @property
    def f_range(self) -> tuple[float, float]:
        return float(self.f.min()), float(self.f.max())

    @property
    def best(self) -> FamilyFit | None:
        return self.families.get(self.chosen) if self.chosen else None

    def curve(self, f: np.ndarray) -> dict:
        """The chosen family's curve at ``f`` with its bootstrap band, clipped to the alpha range."""
        f = np.asarray(f, float)
        best = self.best
        family = FAMILIES.get(best.family)
        params = np.array([[best.params[name] for name in family.params]])
        low, high = self.alpha_range
        mid = np.clip(family.predict(params, f)[0], low, high)
        if best.bootstrap is not None and len(best.bootstrap):
            values = np.clip(family.predict(best.bootstrap, f), low, high)
            tail = (1 - LEVEL) / 2
            lo, hi = np.nanquantile(values, tail, axis=0), np.nanquantile(values, 1 - tail, axis=0)
        else:
            lo = hi = np.full_like(mid, np.nan)
        return {"f": f, "alpha": mid, "lo": lo, "hi": hi}

    def predict(self, f: float) -> dict:
        """The recommended alpha at a kept fraction ``f`` (with a 95% bootstrap interval)."""
        if not 0 < f <= 1:
            raise ValueError(f"f must be in (0, 1], got {f}")
        if self.best is None:
            raise ValueError(f"no alpha-f fit for {self.group}: {self.message}")
        point = self.curve(np.array([f]))
        low, high = self.f_range
        return {
            "group": self.group, "f": f, "alpha": float(point["alpha"][0]), "lo": float(point["lo"][0]),
            "hi": float(point["hi"][0]), "family": self.chosen, "formula": self.best.formula,
            "extrapolated": not (low - 1e-12 <= f <= high + 1e-12), "fitted_f_range": [low, high],
        }

    def to_dict(self) -> dict:
        return {
            "group": self.group, "context": self.context, "cells": self.cells,
            "points": [{"f": float(f), "alpha": float(a), "se": float(s)} for f, a, s in zip(self.f, self.alpha, self.se)],
            "alpha_range": list(self.alpha_range), "chosen": self.chosen, "selected_by": self.selected_by,
            "spearman": {"rho": _clean(self.spearman_rho), "p": _clean(self.spearman_p)},
            "relation": self.relation, "message": self.message,
            "families": {name: fit.to_dict(with_bootstrap=name == self.chosen) for name, fit in self.families.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> AlphaFFit:
        points = data["points"]
        return cls(
            group=data["group"], context=data["context"], cells=data["cells"],
            f=np.array([p["f"] for p in points], float), alpha=np.array([p["alpha"] for p in points], float),
            se=np.array([p["se"] for p in points], float), alpha_range=tuple(data["alpha_range"]),
            families={name: FamilyFit.from_dict(fit) for name, fit in data["families"].items()},
            chosen=data["chosen"], selected_by=data["selected_by"], spearman_rho=_nan(data["spearman"]["rho"]),
            spearman_p=_nan(data["spearman"]["p"]), relation=data["relation"], message=data.get("message", ""),
        )


def _clean(value):
    """JSON-safe: numpy scalars to floats, NaN/inf to None."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _nan(value):
    return float("nan") if value is None else value


def monotonicity(f: np.ndarray, alpha: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Spearman's rho of (f, alpha) and its two-sided permutation p-value."""
    if len(f) < 3 or np.ptp(f) == 0 or np.ptp(alpha) == 0:
        return float("nan"), 1.0

    rank_f = stats.rankdata(f)
    rank_f = rank_f - rank_f.mean()

    def rho(y, axis=-1):  # Spearman's rho against f: Pearson's r of the ranks
        ranks = stats.rankdata(y, axis=axis)
        ranks = ranks - ranks.mean(axis=axis, keepdims=True)
        return (ranks * rank_f).sum(axis) / np.sqrt((ranks**2).sum(axis) * (rank_f**2).sum())

    # One sample under "pairings": every reordering of alpha against the fixed f (n! of them, so the
    # test is exact up to 7 cells and a 20,000-permutation Monte Carlo beyond).
    result = stats.permutation_test(
        (alpha,), rho, permutation_type="pairings", vectorized=True, n_resamples=20000,
        alternative="two-sided", rng=np.random.default_rng(seed),
    )
    return float(result.statistic), float(result.pvalue)


def _criteria(family: Family, f, y, w, params) -> dict:
    """AICc, leave-one-out RMSE, weighted R^2 and reduced chi^2 of one fitted family."""
    n, k = len(f), family.n_params
    resid = y - family.predict(params[None, :], f)[0]
    w_norm = w / w.mean()
    wrss = float((w_norm * resid**2).sum())
    big_k = k + 1  # + the residual scale
    aicc = n * math.log(max(wrss, 1e-300) / n) + 2 * big_k + 2 * big_k * (big_k + 1) / (n - big_k - 1) \
        if n - big_k - 1 > 0 else float("nan")
    loo = []
    for i in range(n):  # refit without each cell in turn, where the rest still determine the family
        keep = np.arange(n) != i
        if len(np.unique(f[keep])) >= k:
            fitted = family.fit(f[keep], y[None, keep], w[keep])
            loo.append((w_norm[i], float(y[i] - family.predict(fitted, f[i : i + 1])[0, 0])))
    loo_rmse = math.sqrt(sum(a * r**2 for a, r in loo) / sum(a for a, _ in loo)) if len(loo) == n else float("nan")
    mean = (w_norm * y).sum() / w_norm.sum()
    total = float((w_norm * (y - mean) ** 2).sum())
    r2 = 1 - wrss / total if total > 0 else float("nan")
    chi2 = float((w * resid**2).sum())
    chi2_red = chi2 / (n - k) if n > k else float("nan")
    return {"aicc": aicc, "loo_rmse": loo_rmse, "r2": r2, "chi2_red": chi2_red}


def fit_group(group: str, context: dict, cells: pd.DataFrame, draws: np.ndarray,
              alpha_range: tuple[float, float], seed: int = 0) -> AlphaFFit:
    """Fit every family to one group's cell optima (``cells``: rows of ``CellOptima.table``;
    ``draws``: (B, n) their bootstrap maximisers)."""
    f = cells["fraction"].to_numpy(float)
    y = cells["alpha_opt"].to_numpy(float)
    se = cells["alpha_se"].to_numpy(float)
    floor = max(SE_FLOOR * (alpha_range[1] - alpha_range[0]), float(np.nanmedian(se)) / 2 if np.isfinite(se).any() else 0.0)
    se = np.maximum(np.nan_to_num(se, nan=floor), floor)
    w = 1.0 / se**2
    rho, p = monotonicity(f, y, seed)
    relation = "none"
    if np.isfinite(rho) and p < SIGNIFICANCE:
        relation = "inverse" if rho < 0 else "direct"
    base = dict(group=group, context=context, cells=list(cells["cell"]), f=f, alpha=y, se=se, alpha_range=alpha_range,
                spearman_rho=rho, spearman_p=p, relation=relation)
    distinct = len(np.unique(f))
    if distinct < 3:
        return AlphaFFit(**base, families={}, chosen=None, selected_by="none",
                         message=f"{distinct} distinct f; the fit needs at least 3")

    fits = {}
    tail = (1 - LEVEL) / 2
    for name in FAMILY_ORDER:
        family = FAMILIES.get(name)
        if distinct <= family.n_params:
            continue
        params = family.fit(f, y[None, :], w)[0]
        boot = family.fit(f, draws, w)
        values = dict(zip(family.params, map(float, params)))
        intervals = {
            p_name: [float(np.nanquantile(boot[:, j], tail)), float(np.nanquantile(boot[:, j], 1 - tail))]
            for j, p_name in enumerate(family.params)
        }
        fits[name] = FamilyFit(family=name, formula=family.formula(values), params=values, intervals=intervals,
                               n_params=family.n_params, bootstrap=boot, **_criteria(family, f, y, w, params))
    by_aicc = {name: fit.aicc for name, fit in fits.items() if math.isfinite(fit.aicc)}
    if {"inverse", "log", "linear"} & set(by_aicc):
        chosen, selected_by = min(by_aicc, key=by_aicc.get), "AICc"
    else:
        by_loo = {name: fit.loo_rmse for name, fit in fits.items() if math.isfinite(fit.loo_rmse)}
        chosen = min(by_loo, key=by_loo.get) if by_loo else min(fits, key=lambda n: fits[n].n_params)
        selected_by = "leave-one-out" if by_loo else "fewest parameters"
    for name, fit in fits.items():
        if name != chosen:
            fit.bootstrap = None  # only the chosen family's replicates are kept (for its curve band)
    return AlphaFFit(**base, families=fits, chosen=chosen, selected_by=selected_by)


def fit_alpha_f(optima: CellOptima, alpha_range: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> list[AlphaFFit]:
    """One fit per method and one pooled over methods, for each (dataset, teacher, student)."""
    table = optima.table[optima.table["alpha_opt"].notna()]
    fits = []
    contexts = table.groupby(["dataset", "teacher_arch", "student_arch"], sort=True)
    several = contexts.ngroups > 1
    for (dataset, teacher, student), part in contexts:
        context = {"dataset": dataset, "teacher_arch": teacher, "student_arch": student}
        suffix = f" | {dataset} {teacher}->{student}" if several else ""
        full = part[part["method"] == FULL]
        methods = sorted(set(part["method"]) - {FULL})
        groups = [(m, pd.concat([part[part["method"] == m], full])) for m in methods]
        if len(methods) != 1:  # several methods pooled, or only the f = 1.0 cell
            groups.append((POOLED, part))
        for name, cells in groups:
            cells = cells.sort_values(["fraction", "method", "replicate"])
            draws = np.stack([optima.draws[c] for c in cells["cell"]], axis=1)
            fits.append(fit_group(name + suffix, context, cells, draws, alpha_range, seed))
    return fits
