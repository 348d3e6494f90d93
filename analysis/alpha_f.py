"""The alpha-f relation: how the optimal distillation weight depends on the kept fraction f.

One fit per (dataset, method, teacher, student, label noise) group, the shared f = 1 reference cell
included (at f = 1 every method keeps the same data), and one pooled over the methods when there are
several. Each
fit is the pooled model of ``analysis.pooled`` (the peak's location a smooth curve in ln f, an offset
and a curvature per cell) estimated from all of the group's completed trials at once; see that
module for the model, why it was chosen and how its intervals are computed.

Per fit: alpha*(f) at every fraction of the group with its 95 % interval and whether the data pin it
(interval narrower than half the searched range); the slope of alpha* against log10 f (alpha per
tenfold change of f) with its interval; a two-sided p-value for the slope's sign. The p-values of one
report's fits go through Holm's procedure at 5 % (family-wise error control). ``relation`` is
"inverse" (alpha* grows as f shrinks) or "direct" when the test rejects, "no evidence" when it does
not (at this budget the data cannot tell the direction; this is not evidence of no relation), and
"not tested" with fewer than three fractions or too few trials to estimate the noise.

The test is on the optimum clipped to the searched range, as the report prints alpha*, so an optimum
at the edge (alpha* = 1 at small f) counts for what it is: the sign of the clipped slope on the
printed curve and on a straight line in ln f, the smaller p-value doubled (see ``analysis.pooled``).
The slope printed is the printed curve's. The pooled fit assumes one curve for every method; it is
given a verdict only when the data do not say otherwise (``curves_differ``: an F test of one shared curve against a curve per method, at 5 %);
when the curves differ the pooled fit is "not pooled" (left out of Holm's family) and the methods'
own verdicts stand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import pooled
from analysis.pooled import LEVEL, SIGNIFICANCE, CellStats
from contract import ALPHA_RANGE, FULL

POOLED = "pooled"
CURVE_POINTS = 60
DEFAULT_DRAWS = 1000
RELATIONS = ("inverse", "direct", "no evidence", "not pooled", "not tested")


@dataclass
class AlphaFFit:
    """The alpha-f fit of one group (a method with the f = 1 cell, or all methods pooled)."""

    group: str
    method: str  # the method, or "pooled"
    context: dict  # dataset, teacher_arch, student_arch, label_noise
    cells: list[str]
    alpha_range: tuple[float, float]
    f: np.ndarray  # distinct fractions of the group
    alpha: np.ndarray  # alpha*(f): posterior median (clipped to the searched range)
    lo: np.ndarray
    hi: np.ndarray
    pinned: np.ndarray  # bool per f: the interval is narrower than half the searched range
    n_trials: int
    sigma: float  # trial-to-trial noise (sd of validation accuracy) used for the whole report
    slope: float = float("nan")  # alpha per tenfold change of f (negative: inverse)
    slope_lo: float = float("nan")
    slope_hi: float = float("nan")
    p_value: float = float("nan")
    p_adjusted: float = float("nan")
    relation: str = "not tested"
    message: str = ""
    heterogeneity_p: float = float("nan")  # pooled fit: p of "the methods share one curve" (curves_differ)
    decided_by: str = ""  # which statistic gave the smaller p: "curve" (the printed one) or "line"
    test_slope: float = float("nan")  # that statistic's slope (median): its sign names the direction
    anchors: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ln f of the curve's anchors
    draws: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)  # (n, A) unit alpha

    @property
    def f_range(self) -> tuple[float, float]:
        return (float(self.f.min()), float(self.f.max())) if len(self.f) else (float("nan"),) * 2

    @property
    def fitted(self) -> bool:
        return self.draws.size > 0

    def _to_alpha(self, unit: np.ndarray) -> np.ndarray:
        low, high = self.alpha_range
        return low + np.clip(unit, 0.0, 1.0) * (high - low)

    def curve(self, f: np.ndarray) -> dict:
        """alpha*(f) at ``f`` with its 95 % band (from the posterior draws), in the searched range."""
        f = np.asarray(f, float)
        if not self.fitted:
            nan = np.full(len(f), np.nan)
            return {"f": f, "alpha": nan, "lo": nan, "hi": nan}
        values = self._to_alpha(self.draws @ pooled.lagrange(self.anchors, np.log(f)).T)
        tail = (1 - LEVEL) / 2
        return {"f": f, "alpha": np.median(values, 0), "lo": np.quantile(values, tail, 0),
                "hi": np.quantile(values, 1 - tail, 0)}

    def predict(self, f: float) -> dict:
        """The recommended alpha at a kept fraction ``f`` with its 95 % interval (a model prediction)."""
        if not 0 < f <= 1:
            raise ValueError(f"f must be in (0, 1], got {f}")
        if not self.fitted:
            raise ValueError(f"no alpha-f fit for {self.group}: {self.message}")
        point = self.curve(np.array([f]))
        low, high = self.f_range
        return {
            "group": self.group, "f": f, "alpha": float(point["alpha"][0]), "lo": float(point["lo"][0]),
            "hi": float(point["hi"][0]), "pinned": bool(point["hi"][0] - point["lo"][0] <= pooled.PINNED_WIDTH * np.ptp(self.alpha_range)),
            "relation": self.relation, "extrapolated": not (low - 1e-12 <= f <= high + 1e-12),
            "fitted_f_range": [low, high],
        }

    def _p(self) -> str:
        return _p_text(self.p_adjusted)

    def verdict(self) -> str:
        """The finding in words."""
        slope = (f"slope of α* per tenfold change of f: {self.slope:+.2f} [{self.slope_lo:+.2f}, {self.slope_hi:+.2f}]"
                 if math.isfinite(self.slope) else "")
        if self.relation == "inverse":
            return f"inverse: α* grows as f shrinks ({slope}; Holm-adjusted p {self._p()})"
        if self.relation == "direct":
            return f"direct: α* grows with f ({slope}; Holm-adjusted p {self._p()})"
        if self.relation == "no evidence":
            return (f"no evidence either way at this budget ({slope}; Holm-adjusted p {self._p()}); "
                    "this does not show that there is no relation")
        if self.relation == "not pooled":
            return f"not pooled: {self.message}"
        return f"not tested: {self.message}"

    def to_dict(self) -> dict:
        return {
            "group": self.group, "method": self.method, "context": self.context, "cells": self.cells,
            "alpha_range": list(self.alpha_range), "n_trials": self.n_trials, "sigma": _clean(self.sigma),
            "points": [{"f": float(f), "alpha": _clean(a), "lo": _clean(lo), "hi": _clean(hi), "pinned": bool(p)}
                       for f, a, lo, hi, p in zip(self.f, self.alpha, self.lo, self.hi, self.pinned)],
            "slope": {"value": _clean(self.slope), "lo": _clean(self.slope_lo), "hi": _clean(self.slope_hi),
                      "unit": "alpha per tenfold change of f"},
            "p_value": _clean(self.p_value), "p_adjusted": _clean(self.p_adjusted), "relation": self.relation,
            "heterogeneity_p": _clean(self.heterogeneity_p), "decided_by": self.decided_by,
            "test_slope": _clean(self.test_slope),
            "message": self.message, "anchors_ln_f": [float(a) for a in self.anchors],
            "draws": [[float(f"{v:.5g}") for v in row] for row in self.draws],
        }

    @classmethod
    def from_dict(cls, data: dict) -> AlphaFFit:
        points = data["points"]
        col = lambda key: np.array([_nan(p[key]) for p in points], float)  # noqa: E731
        return cls(
            group=data["group"], method=data["method"], context=data["context"], cells=data["cells"],
            alpha_range=tuple(data["alpha_range"]), f=col("f"), alpha=col("alpha"), lo=col("lo"), hi=col("hi"),
            pinned=np.array([p["pinned"] for p in points], bool), n_trials=data["n_trials"], sigma=_nan(data["sigma"]),
            slope=_nan(data["slope"]["value"]), slope_lo=_nan(data["slope"]["lo"]), slope_hi=_nan(data["slope"]["hi"]),
            p_value=_nan(data["p_value"]), p_adjusted=_nan(data["p_adjusted"]), relation=data["relation"],
            message=data.get("message", ""), heterogeneity_p=_nan(data.get("heterogeneity_p")),
            decided_by=data.get("decided_by", ""), test_slope=_nan(data.get("test_slope", data["slope"]["value"])),
            anchors=np.array(data["anchors_ln_f"], float),
            draws=np.array(data["draws"], float).reshape(-1, len(data["anchors_ln_f"])),
        )


def _clean(value):
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def _nan(value):
    return float("nan") if value is None else value


def _unit(alpha: np.ndarray, alpha_range: tuple[float, float]) -> np.ndarray:
    low, high = alpha_range
    return (np.asarray(alpha, float) - low) / (high - low)


def _cell_data(done: pd.DataFrame, alpha_range) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """cell name -> (unit alpha, validation accuracy, ln f) of its completed trials."""
    return {name: (_unit(part["alpha"].to_numpy(float), alpha_range), part["val_acc"].to_numpy(float),
                   math.log(float(part["fraction"].iloc[0])))
            for name, part in done.groupby("cell", sort=False)}


def _group_cells(data: dict, names: list[str]) -> tuple[CellStats, np.ndarray]:
    st = CellStats.of([data[name][:2] for name in names])
    return st, np.array([data[name][2] for name in names])


def groups_of(trials: pd.DataFrame) -> list[tuple[str, str, dict, list[str]]]:
    """(group label, method, context, cell names) of every fit, in report order."""
    out = []
    if "label_noise" not in trials:  # a table from before the label noise axis: clean labels
        trials = trials.assign(label_noise=0.0)
    archs_vary = trials[["dataset", "teacher_arch", "student_arch"]].drop_duplicates().shape[0] > 1
    noise_varies = trials["label_noise"].nunique() > 1
    contexts = trials.groupby(["dataset", "teacher_arch", "student_arch", "label_noise"], sort=True)
    for (dataset, teacher, student, noise), part in contexts:
        context = {"dataset": dataset, "teacher_arch": teacher, "student_arch": student, "label_noise": float(noise)}
        suffix = (f" | {dataset} {teacher}->{student}" if archs_vary else "") + (f" | noise {noise:g}" if noise_varies else "")
        cells = part.drop_duplicates("cell")
        full = sorted(cells.loc[cells["method"] == FULL, "cell"])
        methods = sorted(set(cells["method"]) - {FULL})
        for method in methods:
            out.append((method + suffix, method, context, sorted(cells.loc[cells["method"] == method, "cell"]) + full))
        if len(methods) != 1:
            out.append((POOLED + suffix, POOLED, context, sorted(cells["cell"])))
    return out


def noise_sd(trials: pd.DataFrame, alpha_range=ALPHA_RANGE) -> tuple[float, float]:
    """(sigma, degrees of freedom): the trial-to-trial sd of validation accuracy around every method
    group's best pooled fit (a method's cells and the f = 1 cells), pooled over the report."""
    done = trials[(trials["status"] == "completed") & trials["val_acc"].notna()]
    rss = df = 0.0
    data = _cell_data(done, alpha_range)
    for _, method, _, names in groups_of(done):
        if method == POOLED:
            continue
        st, x = _group_cells(data, names)
        value, _, anchors = pooled.min_rss(st, x)
        rss += value
        df += pooled.noise_df(st, len(anchors))
    if df < pooled.MIN_NOISE_DF:
        return float("nan"), df
    return math.sqrt(rss / df), df


def fit_alpha_f(trials: pd.DataFrame, alpha_range: tuple[float, float] = ALPHA_RANGE, seed: int = 0,
                n_draws: int = DEFAULT_DRAWS, sigma: float | None = None) -> list[AlphaFFit]:
    """Every group's pooled fit, with Holm's procedure applied across the fits of one context (``apply_holm``)."""
    alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
    done = trials[(trials["status"] == "completed") & trials["val_acc"].notna()]
    noise_df = float("inf")  # a given sigma is taken as known
    if sigma is None:
        sigma, noise_df = noise_sd(done, alpha_range)
    span = alpha_range[1] - alpha_range[0]
    fits = []
    data = _cell_data(done, alpha_range)
    for label, method, context, names in groups_of(done):
        st, x = _group_cells(data, names)
        fractions = np.unique(np.round(np.exp(x), 12))
        base = dict(group=label, method=method, context=context, cells=names, alpha_range=alpha_range,
                    n_trials=int(st.n.sum()), sigma=sigma)
        nan = np.full(len(fractions), np.nan)
        if not math.isfinite(sigma) or sigma <= 0:
            fits.append(AlphaFFit(**base, f=fractions, alpha=nan, lo=nan, hi=nan, pinned=np.zeros(len(fractions), bool),
                                  message="too few completed trials to estimate the trial-to-trial noise"))
            continue
        post = pooled.location_posterior(st, x, sigma**2)  # anchors in unit alpha; sigma in accuracy
        m = post.m(np.log(fractions))
        summaries = [post.summary(np.clip(m[:, i], 0, 1)) for i in range(len(fractions))]
        mid, lo, hi = (np.array([s[k] for s in summaries]) for k in range(3))
        rng = np.random.default_rng([seed, len(fits)])
        fit = AlphaFFit(
            **base, f=fractions, alpha=alpha_range[0] + mid * span, lo=alpha_range[0] + lo * span,
            hi=alpha_range[0] + hi * span, pinned=(hi - lo) <= pooled.PINNED_WIDTH,
            anchors=post.anchors, draws=post.draws(n_draws, rng),
        )
        if len(fractions) >= 3:
            # the test (pooled: "The direction of the alpha-f relation"): the sign of the clipped optimum's
            # slope on the printed curve and on a line with interior anchors, the smaller p doubled
            curve = post.clipped_slope()
            line_post = pooled.location_posterior(st, x, sigma**2, most=2, interior=True)
            line = line_post.clipped_slope()
            p_curve, p_line = pooled.sign_p_value(curve, post.weights), pooled.sign_p_value(line, line_post.weights)
            fit.slope, fit.slope_lo, fit.slope_hi = (v * span for v in post.summary(curve))
            fit.p_value = min(1.0, 2 * min(p_curve, p_line))
            fit.decided_by = "curve" if p_curve <= p_line else "line"
            fit.test_slope = fit.slope if fit.decided_by == "curve" else line_post.summary(line)[0] * span
        else:
            fit.message = f"{len(fractions)} distinct f; the test of a direction needs at least 3"
        if method == POOLED and math.isfinite(fit.p_value):
            method_cells = [names for _, other, where, names in groups_of(done) if where == context and other != POOLED]
            fit.heterogeneity_p = curves_differ(data, method_cells, sigma, noise_df)
            if fit.heterogeneity_p < SIGNIFICANCE:  # one curve for all methods is not what the data say
                fit.p_value = float("nan")
                fit.message = (f"the methods' α*(f) curves differ (F test p {_p_text(fit.heterogeneity_p)}): "
                               "no pooled verdict; read each method's own")
        fits.append(fit)
    apply_holm(fits)
    return fits


def curves_differ(data: dict, method_cells: list[list[str]], sigma: float, df: float) -> float:
    """The p-value of the hypothesis that every method of a group shares one alpha*(f) curve: an F test
    of one curve for all methods' cells against a curve per method (each method on its own cells,
    without the shared f = 1 cell, which would count in every method's fit), with every cell's
    offset and curvature its own in both. A small p: the pooled fit would average curves that differ."""
    own = [[n for n in names if not _is_full(n, data)] for names in method_cells]
    own = [names for names in own if names]
    if len(own) < 2 or not math.isfinite(sigma) or sigma <= 0:
        return float("nan")
    rss_separate = anchors_separate = 0.0
    for names in own:
        value, _, anchors = pooled.min_rss(*_group_cells(data, names))
        rss_separate += value
        anchors_separate += len(anchors)
    rss_shared, _, anchors = pooled.min_rss(*_group_cells(data, [n for names in own for n in names]))
    df1 = anchors_separate - len(anchors)
    if df1 <= 0:
        return float("nan")
    statistic = max(rss_shared - rss_separate, 0.0) / df1 / sigma**2
    return float(sps.f.sf(statistic, df1, max(df, 1.0)))


def _is_full(name: str, data: dict) -> bool:
    return abs(data[name][2]) < 1e-12  # ln f = 0: the f = 1 cell


def _p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.2g}"


def apply_holm(fits: list[AlphaFFit], level: float = SIGNIFICANCE) -> None:
    """Holm's procedure over the tested fits of each context: sets p_adjusted and relation. The label
    noise levels of one (dataset, teacher, student) are one family: their fits are tested together."""
    by_context: dict[tuple, list[AlphaFFit]] = {}
    for fit in fits:
        by_context.setdefault(tuple(sorted((k, v) for k, v in fit.context.items() if k != "label_noise")), []).append(fit)
    for family in by_context.values():
        tested = [fit for fit in family if math.isfinite(fit.p_value)]
        rejected, adjusted = pooled.holm([fit.p_value for fit in tested], level)
        for fit, reject, p_adj in zip(tested, rejected, adjusted):
            fit.p_adjusted = float(p_adj)
            fit.relation = ("inverse" if fit.test_slope < 0 else "direct") if reject else "no evidence"
        for fit in family:
            if not math.isfinite(fit.p_value):
                fit.relation = "not pooled" if math.isfinite(fit.heterogeneity_p) else "not tested"
