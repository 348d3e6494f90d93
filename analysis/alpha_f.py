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
report's fits go through one multiple-testing procedure at 5 % (family-wise error control,
``adjust_directions``): the pooled direction first, at 5 %; once it is found, the methods' own, with
Hommel's procedure among them (a graphical procedure with Simes tests, ``pooled.graphical_simes``:
Holm's over every fit at once would ask the pooled fit for 5 % / (methods + 1), which few replicates
cannot give; Hommel's finds every method once each p is at most 5 %, where Holm's asks the smallest for
5 % / methods). ``relation`` is
"inverse" (alpha* grows as f shrinks) or "direct" when the test rejects, "no evidence" when it does
not (at this budget the data cannot tell the direction; this is not evidence of no relation), and
"not tested" with fewer than three fractions or too few trials to estimate the noise.

The test is on the optimum clipped to the searched range, as the report prints alpha*, so an optimum
at the edge (alpha* = 1 at small f) counts for what it is: the sign of the clipped slope on the
printed curve and on a straight line in ln f, the smaller p-value doubled, and when that is at most 5 %
calibrated at the no-relation truth closest to the data (see ``analysis.pooled``).
The slope printed is the printed curve's.

Study replicates (each its own teacher, scores and subsets) are the units of a group's answer when it
has two or more with the group's fractions each (``replicate_level``): each replicate fits its own
curve on its own cells; alpha*(f) is the mean over replicates of their curves' posterior medians, with
a t interval on R - 1 degrees of freedom, and the direction test is a t test over the replicates'
slopes (the posterior medians of the printed curve's clipped slope), so its interval and its p-value
agree; when that p is at most 5 % it is calibrated as the single draw's is: each replicate's slope
less its lean at the no-relation truth closest to its own cells, the same t test again, and the larger
p decides (``lean_corrected_t_test``). So an answer counts the variation between teachers and subsets,
and says over how many replicates. The same test on the replicates' cells pooled (``within``) is the answer conditional on
those replicates; it is reported beside it (its own family, the same procedure), never as the verdict: with 3
replicates it has far more power, and it is what a reader may state about these teachers only. A
cell's own alpha* (the cells table) is its replicate's curve.

The pooled fit assumes one curve for every method; it is
given a verdict only when the data do not say otherwise (``curves_differ``: an F test of one shared curve against a curve per method, at 5 %);
when the curves differ the pooled fit is "not pooled" (left out of the family) and the methods' own
verdicts stand, tested from the start with Hommel's procedure among them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import pooled
from analysis.pooled import LEVEL, SIGNIFICANCE, CellStats
from analysis.results import completed
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
    tested_at: float = float("nan")  # at a sequential look: the nominal level p_value was last compared with
    message: str = ""
    heterogeneity_p: float = float("nan")  # pooled fit: p of "the methods share one curve" (curves_differ)
    decided_by: str = ""  # which statistic gave the smaller p: "curve" (the printed one) or "line"
    replicates: int = 1  # study replicates the answer is over (1: conditional on one, or on the cells pooled)
    # with replicates: the test on their cells pooled, conditional on these replicates (keys as the fit's:
    # slope, slope_lo, slope_hi, p_value, p_adjusted, relation)
    within: dict = field(default_factory=dict)
    # with replicates: each replicate's own alpha*(f) at ``f`` (replicate -> (alpha, lo, hi)), and its draws
    by_replicate: dict = field(default_factory=dict)
    replicate_draws: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)), repr=False)  # (R, n, A)
    test_slope: float = float("nan")  # that statistic's slope (median): its sign names the direction
    # the test's p before calibration: the posterior sign test's (pooled.direction_test), or over
    # replicates the t test's
    p_posterior: float = float("nan")
    # the calibration at the closest no-relation truth, when p_posterior was at most 5 %: p_calibrated,
    # draws, and of one draw (pooled.calibrate) null_mean and null_sd of the signed z there and the
    # observed signed z; over replicates (lean_corrected_t_test) the mean lean of their slopes
    calibration: dict = field(default_factory=dict)
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
        basis = pooled.lagrange(self.anchors, np.log(f)).T
        if self.replicate_draws.size:  # the mean over replicates of their curves, a t interval over them
            medians = np.median(np.clip(self.replicate_draws @ basis, 0.0, 1.0), axis=1)  # (R, len(f))
            mid, lo, hi = over_replicates(medians)
            return {"f": f, "alpha": self._to_alpha(mid), "lo": self._to_alpha(lo), "hi": self._to_alpha(hi)}
        values = self._to_alpha(self.draws @ basis)
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
        """The finding in words, saying what it generalises over."""
        over = f"mean over {self.replicates} replicates, " if self.replicates > 1 else ""
        slope = (f"{over}slope of α* per tenfold change of f: {self.slope:+.2f} [{self.slope_lo:+.2f}, {self.slope_hi:+.2f}]"
                 if math.isfinite(self.slope) else "")
        if self.relation == "inverse":
            text = f"inverse: α* grows as f shrinks ({slope}; adjusted p {self._p()})"
        elif self.relation == "direct":
            text = f"direct: α* grows with f ({slope}; adjusted p {self._p()})"
        elif self.relation == "no evidence":
            text = (f"no evidence either way at this budget ({slope}; adjusted p {self._p()}); "
                    "this does not show that there is no relation")
        elif self.relation == "not pooled":
            return f"not pooled: {self.message}"
        else:
            return f"not tested: {self.message}"
        if self.relation in ("inverse", "direct") and self.decided_by == "line" and self.slope_lo <= 0 <= self.slope_hi:
            # the two statistics disagree: say which one decided, so the interval beside the verdict is not misread
            text += (f"; the test's straight line in ln f found it (slope {self.test_slope:+.2f} per tenfold change): "
                     "the printed curve's interval reaches 0 because it also spends its width on the curve's bend")
        if self.relation in ("inverse", "direct") and self.calibration:
            # pooled.calibrate: without it a peak whose steeper side moves with f, mimicking a moving
            # optimum, gave a pooled direction in up to 75 % of sweeps with none (analysis/CALIBRATION.md)
            where = ("each replicate's slope less its lean at the no-relation truth closest to its cells"
                     if "lean" in self.calibration else "at the no-relation truth closest to the data")
            text += f"; its p is calibrated {where} (the peak's shape may change with f and mimic a moving optimum)"
        if self.within:
            w = self.within
            text += (f". Within these {self.replicates} replicates (their cells pooled, conditional on their teachers "
                     f"and subsets): {w['relation']}, slope {w['slope']:+.2f} [{w['slope_lo']:+.2f}, {w['slope_hi']:+.2f}], "
                     f"adjusted p {_p_text(w['p_adjusted'])}")
        return text

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
            "test_slope": _clean(self.test_slope), "p_posterior": _clean(self.p_posterior),
            "calibration": {key: _clean(value) for key, value in self.calibration.items()}, "replicates": self.replicates,
            "within": {key: _clean(value) for key, value in self.within.items()},
            "by_replicate": {str(r): [[_clean(v) for v in values] for values in triple]
                             for r, triple in self.by_replicate.items()},
            "replicate_draws": [[[float(f"{v:.5g}") for v in row] for row in draws] for draws in self.replicate_draws],
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
            replicates=int(data.get("replicates", 1)), p_posterior=_nan(data.get("p_posterior")),
            calibration={key: _nan(value) for key, value in data.get("calibration", {}).items()},
            within={key: (_nan(value) if key != "relation" else value) for key, value in data.get("within", {}).items()},
            by_replicate={int(r): tuple(np.array([_nan(v) for v in values], float) for values in triple)
                          for r, triple in data.get("by_replicate", {}).items()},
            anchors=np.array(data["anchors_ln_f"], float),
            draws=np.array(data["draws"], float).reshape(-1, len(data["anchors_ln_f"])),
            replicate_draws=np.array(data.get("replicate_draws", []), float).reshape(
                -1, len(data["draws"]), len(data["anchors_ln_f"])) if data.get("replicate_draws") else np.zeros((0, 0, 0)),
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


def _cell_data(done: pd.DataFrame, alpha_range) -> dict[str, tuple[np.ndarray, np.ndarray, float, int]]:
    """cell name -> (unit alpha, validation accuracy, ln f, study replicate) of its completed trials."""
    return {name: (_unit(part["alpha"].to_numpy(float), alpha_range), part["val_acc"].to_numpy(float),
                   math.log(float(part["fraction"].iloc[0])), int(part["replicate"].iloc[0]) if "replicate" in part else 0)
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
    done = completed(trials)
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


@dataclass
class GroupData:
    """One group's completed trials as the model reads them (unit alpha): each cell's (alpha, accuracy),
    their statistics, their ln f, and the report's noise variance. What a calibration or a lean is
    computed from, outside ``fit_alpha_f`` (the calibration's tests and ``bench/``)."""

    cells: list[tuple[np.ndarray, np.ndarray]]
    stats: CellStats
    x: np.ndarray
    sigma2: float


def group_data(trials: pd.DataFrame, method: str, alpha_range=ALPHA_RANGE) -> GroupData:
    """``method``'s group (or ``POOLED``'s) in ``trials`` (the first such group, in report order)."""
    done = completed(trials)
    data = _cell_data(done, alpha_range)
    names = next(names for _, name, _, names in groups_of(done) if name == method)
    st, x = _group_cells(data, names)
    return GroupData([data[name][:2] for name in names], st, x, noise_sd(done, alpha_range)[0] ** 2)


def fit_alpha_f(trials: pd.DataFrame, alpha_range: tuple[float, float] = ALPHA_RANGE, seed: int = 0,
                n_draws: int = DEFAULT_DRAWS, sigma: float | None = None,
                bias_corrected_methods: bool = False, paired_bias_correction: bool = False) -> list[AlphaFFit]:
    """Every group's pooled fit, with the multiple-testing procedure across the fits of one context (``adjust_directions``).
    ``bias_corrected_methods``: calibrate each method's direction test with the pooled fit's bias
    correction too (a candidate the calibration bench measures: ``--bias-corrected-methods``; the report
    calibrates only the pooled fit so). ``paired_bias_correction``: wherever a fit is bias-corrected,
    measure the shortfall with paired draws (``pooled.null_statistic``'s ``paired``; a candidate too)."""
    alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
    done = completed(trials)
    noise_df = float("inf")  # a given sigma is taken as known
    if sigma is None:
        sigma, noise_df = noise_sd(done, alpha_range)
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
        table = pooled.RssTable.of(st)
        post = pooled.location_posterior(table, x, sigma**2)  # anchors in unit alpha; sigma in accuracy
        mid, lo, hi = _alpha_star(post, fractions)
        rng = np.random.default_rng([seed, len(fits)])
        fit = AlphaFFit(**base, f=fractions, alpha=mid, lo=lo, hi=hi, anchors=post.anchors,
                        pinned=(hi - lo) <= pooled.PINNED_WIDTH, draws=post.draws(n_draws, rng))
        if len(fractions) >= 3:
            # the test (pooled: "The direction of the alpha-f relation"): the sign of the clipped optimum's
            # slope on the printed curve and on a line with interior anchors, the smaller p doubled
            test = pooled.direction_test(table, x, sigma**2, curve=post)
            fit.slope, fit.slope_lo, fit.slope_hi = post.summary(post.clipped_slope())
            fit.p_value = fit.p_posterior = test.p_value
            fit.decided_by, fit.test_slope = test.decided_by, test.slope
            if test.p_value <= SIGNIFICANCE:
                # only then can the calibration change a decision: no direction is tested above 5 %
                calibration = pooled.calibrate([data[name][:2] for name in names], x, sigma**2, test,
                                               np.random.default_rng([seed, len(fits), 1]),
                                               bias_corrected=method == POOLED or bias_corrected_methods,
                                               paired=paired_bias_correction)
                fit.p_value = calibration.p_value
                fit.calibration = {"p_calibrated": calibration.p_calibrated, "null_mean": calibration.null_mean,
                                   "null_sd": calibration.null_sd, "observed": test.signed_z,
                                   "draws": calibration.draws}
        else:
            fit.message = f"{len(fractions)} distinct f; the test of a direction needs at least 3"
        replicate_level(fit, data, names, fractions, sigma, n_draws, rng, np.random.default_rng([seed, len(fits), 2]),
                        paired=paired_bias_correction)
        _to_alpha_units(fit, alpha_range)
        if method == POOLED and math.isfinite(fit.p_value):
            method_cells = [names for _, other, where, names in groups_of(done) if where == context and other != POOLED]
            fit.heterogeneity_p = curves_differ(data, method_cells, sigma, noise_df)
            if fit.heterogeneity_p < SIGNIFICANCE:  # one curve for all methods is not what the data say
                fit.p_value, fit.within, fit.calibration = float("nan"), {}, {}  # no verdict: nothing calibrated
                fit.message = (f"the methods' α*(f) curves differ (F test p {_p_text(fit.heterogeneity_p)}): "
                               "no pooled verdict; read each method's own")
        fits.append(fit)
    adjust_directions(fits)
    return fits


def _alpha_star(post: pooled.LocationPosterior, fractions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """alpha*(f) at ``fractions``: the posterior median of the clipped optimum and its 95 % interval (unit alpha)."""
    m = post.m(np.log(fractions))
    summaries = [post.summary(np.clip(m[:, i], 0, 1)) for i in range(len(fractions))]
    return tuple(np.array([s[k] for s in summaries]) for k in range(3))


def over_replicates(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, ...) per-replicate estimates -> their mean and its 95 % t interval on R - 1 degrees of freedom,
    kept in the searched range [0, 1] (unit alpha): each replicate's estimate carries its own students'
    noise, so their spread counts that and the variation between teachers and subsets alike."""
    count = len(values)
    mean = values.mean(0)
    half = pooled.t_quantile(count - 1) * values.std(0, ddof=1) / math.sqrt(count)
    return mean, np.clip(mean - half, 0.0, 1.0), np.clip(mean + half, 0.0, 1.0)


def replicate_level(fit: AlphaFFit, data: dict, names: list[str], fractions: np.ndarray, sigma: float,
                    n_draws: int, rng: np.random.Generator, calibration_rng: np.random.Generator,
                    paired: bool = False) -> None:
    """Makes the study replicates the units of ``fit``'s answer (see the module's docstring) when two or
    more replicates have every fraction of the group: alpha*(f) and the slope test over them, calibrated
    when its p is at most 5 % (``lean_corrected_t_test``); the pooled-cells test moves to ``fit.within``.
    Unit alpha throughout. Otherwise leaves ``fit`` as it is."""
    groups: dict[int, list[str]] = {}
    for name in names:
        groups.setdefault(data[name][3], []).append(name)
    complete = {}
    for replicate, replicate_names in sorted(groups.items()):
        st, x = _group_cells(data, replicate_names)
        if np.array_equal(np.unique(np.round(np.exp(x), 12)), fractions):
            complete[replicate] = (st, x, replicate_names)
    if len(complete) < 2:
        if len(groups) >= 2:
            note = (f"{len(groups)} replicates, but fewer than two with every f of the group: the answer pools their "
                    "cells and is conditional on them")
            fit.message = f"{fit.message}; {note}" if fit.message else note
        return
    medians, slopes, draws = [], [], []
    for replicate, (st, x, _) in complete.items():
        post = pooled.location_posterior(st, x, sigma**2)
        mid, lo, hi = _alpha_star(post, fractions)
        fit.by_replicate[replicate] = (mid, lo, hi)
        medians.append(mid)
        draws.append(post.draws(n_draws, rng) if post.anchors.shape == fit.anchors.shape else
                     np.zeros((0, len(fit.anchors))))
        # each replicate's slope is its posterior median, not its mean: an optimum near the edge skews the
        # clipped slope's posterior (it can fall below the edge, not rise above it), and that skew, alike
        # in every replicate, must not read as a trend
        slopes.append(post.summary(post.clipped_slope())[0])
    fit.replicates = len(complete)
    fit.alpha, fit.lo, fit.hi = over_replicates(np.array(medians))
    fit.pinned = (fit.hi - fit.lo) <= pooled.PINNED_WIDTH
    if all(d.shape[0] for d in draws):
        fit.replicate_draws = np.array(draws)
    if math.isfinite(fit.p_value):
        fit.within = {"slope": fit.slope, "slope_lo": fit.slope_lo, "slope_hi": fit.slope_hi, "p_value": fit.p_value,
                      "p_posterior": fit.p_posterior, "p_adjusted": float("nan"), "relation": "not tested"}
        # one test, on the printed curve's slope (not the smaller of two p-values doubled, as within one
        # replicate: with R - 1 degrees of freedom the doubling would cost more than the line adds), so its
        # interval excludes 0 exactly when its p-value is below 5 %
        fit.slope, fit.slope_lo, fit.slope_hi, fit.p_value = _t_test(np.array(slopes))
        fit.p_posterior, fit.calibration = fit.p_value, {}
        fit.decided_by, fit.test_slope = "curve", fit.slope
        if fit.p_value <= SIGNIFICANCE:  # only then can the calibration change a decision
            # bias-corrected for the pooled fit, as in pooled.calibrate: its plug-in lean falls short alike
            # in every replicate, and at the self-distillation study's design the nearest no-relation
            # truth to a steep fall found a pooled direction in 8 % of 100 sweeps (corrected, 4 %); a
            # method's own fit keeps the plug-in (0 % false there either way)
            leans = [pooled.null_slopes([data[name][:2] for name in replicate_names], x, sigma**2, calibration_rng,
                                        bias_corrected=fit.method == POOLED, paired=paired)
                     for st, x, replicate_names in complete.values()]
            p_calibrated, lean = lean_corrected_t_test(np.array(slopes), leans)
            fit.p_value = max(fit.p_value, p_calibrated)
            fit.calibration = {"p_calibrated": p_calibrated, "lean": lean, "draws": len(leans[0])}


def lean_corrected_t_test(slopes: np.ndarray, leans: list[np.ndarray]) -> tuple[float, float]:
    """(two-sided p, mean lean) of the t test over replicates that their slopes, each less its lean at
    the no-relation truth closest to its own cells (``pooled.null_slopes``: the mean of its simulated
    slopes there), average 0.

    Why: a peak whose steeper side moves with f tilts every replicate's slope alike, and a t test over
    replicates does not average that away (at the self-distillation study's design, 18 % of methods'
    verdicts read "inverse" at the nearest no-relation truth to a steep fall). The standard error is the
    corrected slopes' spread between replicates, on R - 1 degrees of freedom: each replicate's lean is
    simulated on its own, so the leans' Monte Carlo error is already in that spread (adding it again, as
    before 2026-12-05, counted it twice)."""
    count = len(slopes)
    corrected = slopes - np.array([lean.mean() for lean in leans])
    variance = corrected.var(ddof=1) / count
    mean, error = float(corrected.mean()), math.sqrt(variance)
    if error > pooled.TIE:
        p = float(2 * sps.t.sf(abs(mean) / error, count - 1))
    else:  # every draw and replicate pinned alike (at the edge): nothing to correct
        p = 1.0 if abs(mean) <= pooled.TIE else 0.0
    return p, float(np.mean([lean.mean() for lean in leans]))


def _t_test(values: np.ndarray) -> tuple[float, float, float, float]:
    """(mean, lo, hi, two-sided p) of a t test that the replicates' values average 0."""
    count = len(values)
    mean, error = float(values.mean()), float(values.std(ddof=1) / math.sqrt(count))
    if error > pooled.TIE:
        p = float(2 * sps.t.sf(abs(mean) / error, count - 1))
    else:  # every replicate's value the same: none (all at the edge) or one without spread
        p = 1.0 if abs(mean) <= pooled.TIE else 0.0
    half = pooled.t_quantile(count - 1) * error
    return mean, mean - half, mean + half, p


def _to_alpha_units(fit: AlphaFFit, alpha_range: tuple[float, float]) -> None:
    """From unit alpha (the model's) to the searched range's: alpha*(f), the slopes, each replicate's alpha*(f)."""
    low, span = alpha_range[0], alpha_range[1] - alpha_range[0]
    fit.alpha, fit.lo, fit.hi = (low + v * span for v in (fit.alpha, fit.lo, fit.hi))
    fit.slope, fit.slope_lo, fit.slope_hi, fit.test_slope = (v * span for v in (fit.slope, fit.slope_lo, fit.slope_hi,
                                                                                fit.test_slope))
    for key in ("slope", "slope_lo", "slope_hi"):
        if key in fit.within:
            fit.within[key] *= span
    if "lean" in fit.calibration:
        fit.calibration["lean"] *= span
    fit.by_replicate = {r: tuple(low + v * span for v in triple) for r, triple in fit.by_replicate.items()}


def curves_differ(data: dict, method_cells: list[list[str]], sigma: float, df: float) -> float:
    """The p-value of the hypothesis that every method of a group shares one alpha*(f) curve: an F test
    of one curve for all methods' cells against a curve per method (each method on its own cells,
    without the shared f = 1 cell, which would count in every method's fit), with every cell's
    offset and curvature its own in both. A small p: the pooled fit would average curves that differ.
    With the noise given as known (``df`` infinite) it is the F test's limit, a chi-square test."""
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
    if math.isinf(df):  # sigma given as known (fit_alpha_f(sigma=...)): chi-square; scipy's F is nan there
        return float(sps.chi2.sf(statistic * df1, df1))
    return float(sps.f.sf(statistic, df1, max(df, 1.0)))


def _is_full(name: str, data: dict) -> bool:
    return abs(data[name][2]) < 1e-12  # ln f = 0: the f = 1 cell


def _p_text(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.2g}"


def adjust_directions(fits: list[AlphaFFit], level: float = SIGNIFICANCE,
                      boundary: Callable[[float], float] | None = None, procedure: Callable = pooled.graphical_simes) -> None:
    """The multiple-testing procedure over the tested fits of each context: sets p_adjusted and relation.
    The label noise levels of one (dataset, teacher, student) are one family: their fits are tested
    together. The pooled direction is asked first (the paper's question: does alpha* fall as f grows?),
    the methods' own after it (``direction_graph``); the family-wise error rate is at most ``level``.
    ``procedure`` tests the graph: ``pooled.graphical_simes`` (Simes tests: Hommel's procedure among the
    methods; it tests a family of more than ``pooled.SIMES_MOST`` fits with the Bonferroni graph), or
    ``pooled.graphical`` (Bonferroni tests: Holm's, the report's procedure until 2026-12-07, which holds
    whatever the dependence). At a look of a sequential sweep (``boundary``: the look's nominal
    level for a share of the error rate, ``analysis.sequential``) the relations are the look's decisions
    (``pooled.graphical_sequential``, whose looks spend Bonferroni shares: the adjusted p-values are the
    Bonferroni graph's there) and ``tested_at`` the nominal level each fit's p-value was last compared with."""
    if boundary is not None:
        procedure = pooled.graphical
    by_context: dict[tuple, list[AlphaFFit]] = {}
    for fit in fits:
        by_context.setdefault(tuple(sorted((k, v) for k, v in fit.context.items() if k != "label_noise")), []).append(fit)
    for family in by_context.values():
        tested = [fit for fit in family if math.isfinite(fit.p_value)]
        weights, transitions = direction_graph(tested)
        rejected, adjusted = procedure([fit.p_value for fit in tested], weights, transitions, level)
        tested_at = np.full(len(tested), level)
        if boundary is not None:
            rejected, tested_at = pooled.graphical_sequential([fit.p_value for fit in tested], weights, transitions,
                                                              level, boundary)
        for fit, reject, p_adj, at in zip(tested, rejected, adjusted, tested_at):
            fit.p_adjusted, fit.tested_at = float(p_adj), float(at)
            fit.relation = ("inverse" if fit.test_slope < 0 else "direct") if reject else "no evidence"
        for fit in family:
            if not math.isfinite(fit.p_value):
                fit.relation = "not pooled" if math.isfinite(fit.heterogeneity_p) else "not tested"
        # the tests within the replicates (their cells pooled): a family of their own, the same graph
        rejected, adjusted = procedure([fit.within.get("p_value", np.nan) for fit in tested], weights, transitions, level)
        for fit, reject, p_adj in zip(tested, rejected, adjusted):
            if fit.within:
                fit.within["p_adjusted"] = float(p_adj)
                fit.within["relation"] = ("inverse" if fit.within["slope"] < 0 else "direct") if reject else "no evidence"


def direction_graph(tested: list[AlphaFFit]) -> tuple[np.ndarray, np.ndarray]:
    """The weights and transitions of one family's tested fits (``pooled.direction_graph``)."""
    return pooled.direction_graph([(fit.context.get("label_noise", 0.0), fit.method == POOLED) for fit in tested])