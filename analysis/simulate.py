"""Whole sweeps simulated from a known truth, with alphas drawn through the real designs.

Shared by ``bench/bench_calibration.py`` and the tests. A simulated sweep has the cells the sweep plans
(every method at every f < 1, plus the shared f = 1 cell of method ``full``), one in-memory Optuna study
per cell driven exactly as ``sweep.searcher`` drives it (``AlphaSpace.initial_points`` enqueued, alpha = 0
first, then ``AlphaSpace.sampler``; ask, train, tell), and a results table with the columns of
``results.csv`` (``contract.RESULT_COLUMNS``).

The response (accuracy of a student trained with weight alpha at kept fraction f):

    acc(alpha) = top_m(f) - k(f) * (alpha - a*(f))^2       clipped to [0, 1]
    top(f)     = 0.95 - 0.15 * log10(1/f)                  (95 % on full data, 80 % at f = 0.1)
    top_m(f)   = top(f) + edge_m * (1 - f)                 (random pruning a little better at small f)
    k(f)       = 0.03 + 0.05 * log10(1/f)                  (how much alpha matters: 3 points over a unit
                                                            of alpha at f = 1, 8 at f = 0.1; "flat": 0)

so KD gains about 0.3 points at f = 1 and 5.8 points at f = 0.1 under the inverse truth (digits measured
94 % with KD against 89 % without at f = 0.1). Truths for a*(f):

- ``none``: a* = 0.5 at every f (no relation);
- ``inverse``: a* = min(0.95, 0.25 + 0.06 / f) (the paper's a + b/f: 0.85 at f = 0.1, 0.31 at f = 1);
- ``direct``: a* = 0.2 + 0.55 * sqrt(f) (0.37 at f = 0.1, 0.75 at f = 1);
- ``flat``: no KD effect at all (k = 0): no gain to find and no optimum to pin;
- optima at the edge of the range, as real sweeps show them (at small f the best student uses the
  teacher alone): the unclipped peak ``a_raw`` lies beyond alpha = 1 at small f, so the best alpha in
  the range, a* = min(1, a_raw), is 1 there and the trials cannot say where beyond 1 the peak is.
  ``edge_steep``: a_raw = 1.2 for f <= 0.3, then falling linearly in log f to 0.3 at f = 1 (a* = 1 up
  to f = 0.39); ``edge_shallow``: the same falling to 0.6 at f = 1 (a* = 1 up to f = 0.47);
  ``edge_null``: a_raw = 1.3 at every f (a* = 1 everywhere: no relation, at the edge);
- ``mixed``: methods whose curves differ: random as ``edge_steep``, every other method flat at
  a* = 0.3 (the value all share at f = 1, where every method keeps the same data);
- ``nearest_<truth>`` (``NEAREST``): the no-relation truth closest to ``<truth>``, the least favourable
  null for a test against it: per f a peak of the model's family (``nearest_cell``: an offset, a
  curvature and sides up to ``RATIO_BOUND`` times steeper one than the other) fitted by least squares to ``<truth>``'s
  parabolas, with one location at every f inside the range, or every optimum at the same edge (a peak
  beyond it, its own per f), whichever is closer. alpha* is the same at every f; what changes with f
  is the peak's shape, so a test that reads a moving optimum into a changing shape finds a relation
  there that is not.
- ``partial_<truth>`` (``PARTIAL``): a partial null, where a method's own level is what holds the
  family's error rate: ``PARTIAL_NULL_METHOD`` is ``nearest_<truth>`` (its optimum fixed, its peak's
  shape changing with f the least favourable way), and so is the shared f = 1 cell; every other
  method falls as ``<truth>`` does, moved by the same amount at every f so that it meets that cell
  (``partial_shift``). The others' directions are rightly found (the pooled one too, or it is
  withheld because the curves differ), so the null method is tested, and any finding for it is a
  false one. Against the inverse relation only: the nearest nulls to the falls from the edge put
  every optimum beyond the edge, where no other method's fall could end.

Shapes of the peak in alpha (``shape``; d = alpha - peak, k = k(f)): the analysis fits parabolas, so a
calibration that drew only parabolas would prove little (DESIGN 6b). Each shape keeps the KD gain of
the same order:

- ``parabola``: k d^2;
- ``gauss``: a Gaussian bump, 0.6 k (1 - exp(-d^2 / (2 * 0.35^2))): sharper at the top than the
  parabola (5x its curvature there), flat far from it;
- ``asymmetric``: k d^2 below the peak (towards alpha = 0), 3 k d^2 above it;
- ``plateau``: k (|d| - 0.1)^2 beyond a flat top 0.2 wide: every alpha on the top is optimal
  (``optimal_range``), so an alpha* interval is right when it meets the top.

Noise: a trial's training noise (sd 1.3 points, shared by its validation and test accuracy) plus
evaluation noise (sd 0.75 points on validation, 0.5 on test): validation accuracy varies by about 1.5
points between trials with the same alpha, the level measured on real replicate trials so far; plus a
per-cell offset (sd 0.5 points: the cell's subset, teacher and scores, a block effect).
"""

from __future__ import annotations

import functools
import math
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from search_spaces.alpha_space import AlphaSpace
from analysis.pooled import RATIO_BOUND, ratio_grid
from analysis.results import completed
from contract import DEFAULT_TAU, FULL, RESULT_COLUMNS, Cell

METHODS = ("random", "el2n", "grand", "forgetting", "memorization")
FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
SHAPES = ("parabola", "gauss", "asymmetric", "plateau")
GAUSS_WIDTH, GAUSS_HEIGHT, ASYMMETRY, PLATEAU_HALF_WIDTH = 0.35, 0.6, 3.0, 0.1
NEAREST = {"nearest_inverse": "inverse", "nearest_direct": "direct", "nearest_edge_steep": "edge_steep",
           "nearest_edge_shallow": "edge_shallow"}  # the least favourable no-relation truths (nearest_cell)
# the partial nulls: one method at no relation (least favourably shaped) beside methods that have one
PARTIAL = {"partial_inverse": "inverse"}
PARTIAL_NULL_METHOD = "el2n"
TRUTHS = ("none", "inverse", "direct", "flat", "edge_steep", "edge_shallow", "edge_null", "mixed", *NEAREST, *PARTIAL)
# a nearest null's sides: those of the analysis's own peaks (up to RATIO_BOUND times steeper one than the other), so
# that the least favourable no-relation truth is one the analysis can fit exactly
NULL_RATIOS = ratio_grid(RATIO_BOUND)
NULL_ALPHAS = np.linspace(0.0, 1.0, 41)  # where a nearest null is fitted to its truth (the searched range)
TRAIN_SD, VAL_EVAL_SD, TEST_EVAL_SD, CELL_SD = 0.013, 0.0075, 0.005, 0.005
NOISE_SD = math.sqrt(TRAIN_SD**2 + VAL_EVAL_SD**2)  # trial-to-trial sd of validation accuracy (~0.015)
EDGE = {"random": 0.01}


def _edge_fall(f: float, at_full: float) -> float:
    """1.2 for f <= 0.3, then linear in log f down to ``at_full`` at f = 1."""
    return 1.2 if f <= 0.3 else 1.2 - (1.2 - at_full) * math.log10(f / 0.3) / math.log10(1 / 0.3)


def raw_optimum(truth: str, f: float, method: str = "random") -> float:
    """The peak of the accuracy curve in alpha, which may lie beyond the searched range [0, 1]."""
    null = _null_cell(truth, f, method)
    if null is not None:
        return null.peak
    if truth in PARTIAL:  # a partial null's other methods: its alternative, moved to meet the null at f = 1
        return raw_optimum(PARTIAL[truth], f) + partial_shift(truth)
    if truth in ("none", "flat"):
        return 0.5
    if truth == "inverse":
        return min(0.95, 0.25 + 0.06 / f)
    if truth == "direct":
        return 0.2 + 0.55 * math.sqrt(f)
    if truth == "edge_steep":
        return _edge_fall(f, 0.3)
    if truth == "edge_shallow":
        return _edge_fall(f, 0.6)
    if truth == "edge_null":
        return 1.3
    if truth == "mixed":
        return _edge_fall(f, 0.3) if method in ("random", FULL) else 0.3
    raise ValueError(f"unknown truth {truth!r}; choose one of {TRUTHS}")


def a_star(truth: str, f: float, method: str = "random") -> float:
    """The best alpha in the searched range [0, 1] (the peak, clipped): what the analysis estimates."""
    return min(1.0, max(0.0, raw_optimum(truth, f, method)))


def optimal_range(truth: str, f: float, method: str = "random", shape: str = "parabola",
                  shift: float = 0.0) -> tuple[float, float]:
    """The alphas in the searched range [0, 1] where the expected accuracy is highest: one point (the
    peak, clipped) for every shape but ``plateau``, whose flat top is optimal all along."""
    peak = raw_optimum(truth, f, method) + shift
    half = PLATEAU_HALF_WIDTH if shape == "plateau" and truth != "flat" else 0.0
    return min(1.0, max(0.0, peak - half)), min(1.0, max(0.0, peak + half))


def has_optimum(truth: str, f: float, method: str = "random") -> bool:
    """Whether ``truth``'s accuracy at ``f`` peaks in alpha at all: not where it is flat (the flat truth;
    a nearest null whose closest peak has no curvature, as ``nearest_edge_steep``'s at f = 1). Where it
    is flat every alpha is best, so an alpha* interval has nothing to cover and a calibration leaves
    the cell out."""
    return curvature(truth, f, method) > 0


def curvature(truth: str, f: float, method: str = "random") -> float:
    null = _null_cell(truth, f, method)
    if null is not None:
        return null.k
    if truth in PARTIAL:
        return curvature(PARTIAL[truth], f)
    return 0.0 if truth == "flat" else 0.03 + 0.05 * math.log10(1 / f)


def _top(f: float) -> float:
    return 0.95 - 0.15 * math.log10(1 / f)


@dataclass(frozen=True)
class NullCell:
    """One f of a nearest null: accuracy = top(f) + offset - k s(alpha) (alpha - peak)^2, s = 1 below the
    peak and ``ratio`` above it."""

    offset: float
    k: float
    ratio: float
    peak: float
    rss: float  # squared distance from the truth's curve over ``NULL_ALPHAS``


def _best_peaks(y: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """(P, R, 3): (rss, offset, k) of the least-squares peak at each location and ``NULL_RATIOS`` ratio,
    k >= 0, through the values ``y`` at ``NULL_ALPHAS``."""
    d = NULL_ALPHAS[None, None, :] - peaks[:, None, None]
    z = np.where(d > 0, NULL_RATIOS[None, :, None], 1.0) * d**2  # (P, R, A)
    zc, yc = z - z.mean(-1, keepdims=True), y - y.mean()
    szz, szy = (zc**2).sum(-1), -(zc * yc).sum(-1)  # sign flipped: accuracy = offset - k z, k >= 0
    k = np.where((szy > 0) & (szz > 1e-15), szy / np.maximum(szz, 1e-15), 0.0)
    offset = y.mean() + k * z.mean(-1)
    rss = ((y - (offset[..., None] - k[..., None] * z)) ** 2).sum(-1)
    return np.stack([rss, offset, k], -1)


@functools.lru_cache(maxsize=None)
def _nearest_location(truth: str) -> tuple[str, float]:
    """("inside", the shared location) or ("above" / "below", nan): the kind of no-relation truth closest
    to ``truth``'s curves at the simulator's fractions and f = 1, summed over them."""
    fs = (*FRACTIONS, 1.0)
    inside = np.linspace(0.0, 1.0, 401)
    shared = sum(_best_peaks(true_accuracy(truth, "full", f, NULL_ALPHAS), inside)[..., 0].min(1) for f in fs)
    options = {("inside", float(inside[np.argmin(shared)])): float(shared.min())}
    for side, peaks in (("above", np.linspace(1.0, 2.5, 151)), ("below", np.linspace(-1.5, 0.0, 151))):
        options[(side, float("nan"))] = sum(float(_best_peaks(true_accuracy(truth, "full", f, NULL_ALPHAS), peaks)[..., 0].min())
                                            for f in fs)
    return min(options, key=options.get)


@functools.lru_cache(maxsize=None)
def nearest_cell(truth: str, f: float) -> NullCell:
    """The ``nearest_<truth>`` null at ``f``: the peak of the model's family closest (least squares over
    ``NULL_ALPHAS``) to ``truth``'s parabola at f, at the location every f shares (or beyond the shared
    edge, its own)."""
    kind, location = _nearest_location(truth)
    peaks = {"inside": np.array([location]), "above": np.linspace(1.0, 2.5, 151), "below": np.linspace(-1.5, 0.0, 151)}[kind]
    fits = _best_peaks(true_accuracy(truth, "full", f, NULL_ALPHAS), peaks)
    p, r = np.unravel_index(np.argmin(fits[..., 0]), fits.shape[:2])
    rss, offset, k = fits[p, r]
    return NullCell(offset=float(offset - _top(f)), k=float(k), ratio=float(NULL_RATIOS[r]), peak=float(peaks[p]),
                    rss=float(rss))


def _null_cell(truth: str, f: float, method: str) -> NullCell | None:
    """The nearest-null cell that ``method``'s curve at ``f`` is under ``truth``: every cell of a
    ``nearest_<truth>``, a partial null's null method's and its shared f = 1 cell's; None for a curve
    of the simulator's own parabolas (the shapes)."""
    if truth in NEAREST:
        return nearest_cell(NEAREST[truth], f)
    if truth in PARTIAL and method in (PARTIAL_NULL_METHOD, FULL):
        return nearest_cell(PARTIAL[truth], f)
    return None


@functools.lru_cache(maxsize=None)
def partial_shift(truth: str) -> float:
    """How far a partial null's other methods' optima lie from the alternative's: at f = 1 they meet the
    null's optimum, the shared cell's."""
    alternative = PARTIAL[truth]
    return nearest_cell(alternative, 1.0).peak - raw_optimum(alternative, 1.0)


def drop(d, k: float, shape: str = "parabola") -> np.ndarray:
    """How far below the top accuracy lies at distance ``d`` = alpha - peak (see the module's shapes)."""
    d = np.asarray(d, float)
    if shape == "parabola":
        return k * d**2
    if shape == "gauss":
        return GAUSS_HEIGHT * k * (1 - np.exp(-d**2 / (2 * GAUSS_WIDTH**2)))
    if shape == "asymmetric":
        return np.where(d > 0, ASYMMETRY, 1.0) * k * d**2
    if shape == "plateau":
        return k * np.maximum(np.abs(d) - PLATEAU_HALF_WIDTH, 0.0) ** 2
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def true_accuracy(truth: str, method: str, f: float, alpha, effect: dict | None = None,
                  shape: str = "parabola") -> np.ndarray:
    """Expected accuracy at ``alpha``; ``effect``: a replicate's own effect (``replicate_effect``)."""
    effect = effect or NO_EFFECT
    top = _top(f) + EDGE.get(method, 0.0) * (1 - f) + effect["level"]
    peak = raw_optimum(truth, f, method) + replicate_move(effect, f)
    k = curvature(truth, f, method) * effect["scale"]
    d = np.asarray(alpha, float) - peak
    null = _null_cell(truth, f, method)
    if null is not None:  # its own peak, whatever ``shape``: the model's family nearest to the truth's parabola
        return np.clip(top + null.offset - np.where(d > 0, null.ratio, 1.0) * k * d**2, 0.0, 1.0)
    return np.clip(top - drop(d, k, shape), 0.0, 1.0)


# A study replicate (its own teacher, scores and subsets) moves every cell of the replicate alike: its
# accuracy level (the teacher's quality), how much KD matters (a multiplier of the curvature, log-normal)
# and where the peak lies: a shift of the optimum, and a tilt of it in log f (alpha per tenfold change of
# f, about the middle of 0.1-1), so that one teacher's alpha*(f) can fall faster than another's and the
# direction of the alpha-f relation is a question about the population of replicates, not about one.
# ``replicate_sd`` sets the log-sd of the multiplier; the shift's and the tilt's sds are a third of it in
# alpha (0.1 and 0.1 per decade at 0.3), the level's 1 point.
NO_EFFECT = {"level": 0.0, "scale": 1.0, "shift": 0.0, "tilt": 0.0}
REPLICATE_LEVEL_SD = 0.01
TILT_CENTRE = math.log10(math.sqrt(0.1))  # the tilt turns the optimum about f = 0.32


def replicate_effect(rng: np.random.Generator, replicate_sd: float) -> dict:
    return {"level": float(rng.normal(0, REPLICATE_LEVEL_SD)), "scale": float(np.exp(rng.normal(0, replicate_sd))),
            "shift": float(rng.normal(0, replicate_sd / 3)), "tilt": float(rng.normal(0, replicate_sd / 3))}


def replicate_move(effect: dict, f: float) -> float:
    """How far a replicate's effect moves the optimum at ``f`` (its shift plus its tilt)."""
    return effect["shift"] + effect.get("tilt", 0.0) * (math.log10(f) - TILT_CENTRE)


@functools.lru_cache(maxsize=None)
def population_optimum(truth: str, f: float, method: str, replicate_sd: float, draws: int = 20000,
                       seed: int = 0) -> float:
    """alpha*(f) over the population of replicates: the mean over replicates of the best alpha in [0, 1]
    (what a replicate-level alpha*(f) estimates; ``a_star`` when replicates do not differ)."""
    if replicate_sd <= 0:
        return a_star(truth, f, method)
    rng = np.random.default_rng(seed)
    effects = [replicate_effect(rng, replicate_sd) for _ in range(draws)]
    raw = raw_optimum(truth, f, method)
    return float(np.mean([min(1.0, max(0.0, raw + replicate_move(e, f))) for e in effects]))


@functools.lru_cache(maxsize=None)  # the same for every simulated sweep of a calibration: computed once
def population_gain(truth: str, f: float, methods, replicate_sd: float, draws: int = 20000, seed: int = 0,
                    shape: str = "parabola") -> float:
    """The KD gain at f over the population of replicates: the mean over replicates and methods of the
    expected accuracy at the replicate's best alpha in [0, 1] minus at alpha = 0 (what a sweep's mean KD
    gain at f estimates when its replicates are draws from that population)."""
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(draws if replicate_sd > 0 else 1):
        effect = replicate_effect(rng, replicate_sd) if replicate_sd > 0 else NO_EFFECT
        for method in methods:
            best = min(1.0, max(0.0, raw_optimum(truth, f, method) + replicate_move(effect, f)))
            gains.append(float(true_accuracy(truth, method, f, best, effect, shape)
                               - true_accuracy(truth, method, f, 0.0, effect, shape)))
    return float(np.mean(gains))


def sweep_cells(methods=METHODS, fractions=FRACTIONS, replicates: int = 1, full: bool = True,
                label_noise=(0.0,)) -> list[Cell]:
    """The cells a sweep plans: every method at every f < 1 and, with ``full``, the shared f = 1 cell, per
    replicate and label noise level (each level its own cells: the analysis fits levels apart)."""
    cells = []
    for p in label_noise:
        cells += [Cell("sim", m, float(f), "teacher", "student", r, float(p)) for r in range(replicates)
                  for f in fractions if f < 1 for m in methods]
        if full:
            cells += [Cell("sim", FULL, 1.0, "teacher", "student", r, float(p)) for r in range(replicates)]
    return cells


def simulate_sweep(truth: str, design: str, trials_per_cell: int, seed: int = 0, methods=METHODS,
                   fractions=FRACTIONS, replicates: int = 1, noise_scale: float = 1.0, full: bool = True,
                   label_noise=(0.0,), replicate_sd: float = 0.0, shape: str = "parabola",
                   enqueued: int | None = None) -> pd.DataFrame:
    """The results table of one simulated sweep. ``noise_scale`` multiplies every noise sd (to match a
    real sweep's measured trial-to-trial sd); the truth is the same at every ``label_noise`` level.
    ``replicate_sd`` > 0: each replicate draws its own effect (``replicate_effect``). ``shape``: the
    peak's shape in alpha (``SHAPES``). ``enqueued``: the students the design plans its first points
    for (default ``trials_per_cell``); fewer, and the later students come from the design's sampler, as
    in a sequential sweep whose first look has ``enqueued`` students per cell
    (``analysis.sequential.simulate_sequential``)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = AlphaSpace(design=design)
    rng = np.random.default_rng([seed, zlib.crc32(truth.encode()), zlib.crc32(design.encode()), trials_per_cell])
    rows = []
    effects: dict[int, dict] = {}
    offsets: dict[tuple, float] = {}
    for cell_index, cell in enumerate(sweep_cells(methods, fractions, replicates, full, label_noise)):
        if replicate_sd > 0 and cell.replicate not in effects:  # drawn only then: other sweeps' draws unchanged
            effects[cell.replicate] = replicate_effect(rng, replicate_sd)
        effect = effects.get(cell.replicate)
        offset = rng.normal(0, CELL_SD * noise_scale)
        offsets[(cell.method, cell.fraction, cell.label_noise, cell.replicate)] = float(offset)
        name = cell.name
        study = optuna.create_study(direction="maximize", sampler=space.sampler(name, seed=seed))
        for point in space.initial_points(enqueued or trials_per_cell):
            study.enqueue_trial(point, user_attrs={"baseline": point["alpha"] == space.alpha_range[0]})
        for number in range(trials_per_cell):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = study.ask(space.distributions())
            alpha = float(trial.params["alpha"])
            mean = float(true_accuracy(truth, cell.method, cell.fraction, alpha, effect, shape)) + offset
            shared = rng.normal(0, TRAIN_SD * noise_scale)
            val = float(np.clip(mean + shared + rng.normal(0, VAL_EVAL_SD * noise_scale), 0, 1))
            test = float(np.clip(mean + shared + rng.normal(0, TEST_EVAL_SD * noise_scale), 0, 1))
            study.tell(trial, val)
            rows.append({**cell.to_dict(), "alpha": alpha, "tau": DEFAULT_TAU, "cohort_seed": number, "val_acc": val,
                         "test_acc": test, "epochs_run": 10, "steps_run": 100, "status": "completed", "error": None,
                         "optuna_trial": trial.number, "num_train": int(1000 * cell.fraction),
                         "teacher_key": "teacher", "teacher_val_acc": 0.97, "teacher_test_acc": 0.97,
                         "score_key": None if cell.method == FULL else f"scores-{cell.method}", "selection": "hard",
                         "class_balanced": False, "trial_id": f"{cell_index}-{number}", "profile": "sim",
                         "version": "sim"})
    frame = pd.DataFrame(rows).reindex(columns=list(RESULT_COLUMNS))
    frame.attrs["replicate_effects"] = effects  # {replicate: effect}: the truth a calibration compares with
    # {(method, f, label noise, replicate): the cell's offset}: with one replicate, the truth of a comparison
    # between cells is conditional on their draws (their subsets, scores: one draw each)
    frame.attrs["cell_offsets"] = offsets
    return frame


@dataclass(frozen=True)
class MatchedNoise:
    """How a real sweep's signal-to-noise compares with the simulator's (``matched_noise_scale``)."""

    scale: float  # the ``noise_scale`` at which simulated sweeps are as informative as the real one
    sigma: float  # the real sweep's trial-to-trial sd of validation accuracy (the pooled model's residual sd)
    kd_ratio: float  # how much alpha matters there against here: summed per-cell curvature, real over simulated
    cells: int  # cells with a curvature estimate (three distinct alphas or more)

    def describe(self) -> str:
        return (f"noise scale {self.scale:.2f}: validation sd {100 * self.sigma:.2f} points between trials "
                f"({self.sigma / NOISE_SD:.2f}x the simulator's), alpha mattering {self.kd_ratio:.2f}x as much "
                f"(curvature over {self.cells} cells)")


def matched_noise_scale(trials: pd.DataFrame, alpha_range=(0.0, 1.0)) -> MatchedNoise:
    """The simulator's ``noise_scale`` that matches a real sweep's signal to noise, measured from its tidy
    results table. What decides every test of the analysis is how far accuracy moves with alpha against
    the trial-to-trial noise, so a real sweep whose noise is s times the simulator's and whose accuracy
    curves in alpha are c times as curved is simulated at noise_scale = s / c (the truths' shapes kept).
    The curvature of a cell is the least-squares quadratic's in unit alpha (unbiased under a parabolic
    peak whatever the design); c is the sum over cells of the real curvatures over the sum of the
    simulator's at the same fractions (a sum, not a median of ratios: single cells' curvatures are noisy,
    often negative). Raises ValueError when the table cannot say (no cell with three alphas, or no
    curvature: alpha does not matter there, and no budget finds its optimum)."""
    from analysis.alpha_f import noise_sd

    done = completed(trials)
    sigma, _ = noise_sd(done, alpha_range)
    low, high = float(alpha_range[0]), float(alpha_range[1])
    measured = simulated = 0.0
    cells = 0
    for _, part in done.groupby("cell", sort=False):
        u = (part["alpha"].to_numpy(float) - low) / (high - low)
        if len(np.unique(np.round(u, 9))) < 3:
            continue
        y = part["val_acc"].to_numpy(float)
        coefficients = np.polyfit(u, y, 2)
        measured += -float(coefficients[0])
        simulated += curvature("inverse", float(part["fraction"].iloc[0]))
        cells += 1
    if not cells or not math.isfinite(sigma):
        raise ValueError("no cell with three distinct alphas (or too few trials to measure the noise): "
                         "nothing to match the simulator to")
    ratio = measured / simulated
    if ratio <= 0:
        raise ValueError(f"the accuracy does not peak in alpha in these results (summed curvature {measured:+.3f}): "
                         "alpha does not matter there, so no budget can locate its optimum")
    return MatchedNoise(scale=(sigma / NOISE_SD) / ratio, sigma=sigma, kd_ratio=ratio, cells=cells)
