"""What a planned sweep can answer, before any compute: the power of each question its report answers.

The questions (those of ``analysis.report``'s findings):

- the KD gain at each f (mean over the methods at that f): found when its 95 % interval lies above 0;
- random pruning against each score-based method at the smallest f (the paper's claim that random
  pruning wins at small f): found when the interval of random minus the method lies above 0;
- the direction of the alpha-f relation, per method and pooled: found when the test says the true
  direction after the report's multiple-testing procedure, as the report says it.

Each is asked of simulated sweeps (``analysis.simulate``) with the planned design (methods, fractions,
the f = 1 cell, students per cell, alpha design, replicates, label noise levels) under one of the
simulator's truths (``TRUTHS``; by default the paper-like "inverse": alpha* = 0.25 + 0.06 / f, KD
gaining 5.8 points at f = 0.1 and 0.3 at f = 1; in every truth random pruning is ahead of score-based
by (1 - f) points), analysed by the real analysis; the power is the share of simulated sweeps that
find the answer. The noise level is the simulator's noise scale: 1 by default (validation sd 1.5
points between trials), or matched to an earlier experiment's measured signal to noise
(``analysis.simulate.matched_noise_scale``). The powers are against that truth at that noise: a real
effect smaller than the simulator's needs more students than planned.
With two or more replicates every answer is over them (t tests and intervals on R - 1 degrees of
freedom: with 3 replicates the direction of the alpha-f relation needs a far larger effect than the
same students in one replicate). Replicates are simulated without a replicate-level effect (none is
known before the study), so the planned power of those answers is an upper bound.

Beside each direction's power, the most any test could have (``direction_bounds``): the power of the
Neyman-Pearson test of the truth against the no-relation truth closest to it, the noise known. A
design whose bound is below a target cannot reach it with any analysis, so the cure there is more
students or a stronger effect, not another test. And what the report's procedure would find knowing
the truth and the noise (``procedure_bounds``): its tests are two-sided and a method's waits for the
pooled direction, with Hommel's procedure among the methods, so it is lower, often far lower, and it is the one the report's
power can approach.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as sps

from analysis import pooled
from analysis.sequential import DIRECTION
from contract import FULL

# the truths a plan can be made against (analysis.simulate), and how the console names them
TRUTHS = {
    "inverse": "the paper's inverse relation, alpha* = 0.25 + 0.06 / f",
    "edge_steep": "alpha* = 1 up to f = 0.39, then falling to 0.3 at f = 1",
    "edge_shallow": "alpha* = 1 up to f = 0.47, then falling to 0.6 at f = 1",
    "direct": "alpha* rising with f, 0.2 + 0.55 sqrt(f)",
}
MINIMUM_SWEEPS = 10
LADDER = (4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)  # students per cell a target tries


@dataclass(frozen=True)
class PlannedDesign:
    """What decides the power of a sweep: its cells and its students per cell."""

    methods: tuple[str, ...]  # the methods of the cells with f < 1
    fractions: tuple[float, ...]  # f < 1
    full: bool  # the shared f = 1 cell
    trials_per_cell: int
    alpha_design: str
    replicates: int = 1
    label_noise: tuple[float, ...] = (0.0,)


@dataclass(frozen=True)
class QuestionPower:
    question: str
    kind: str  # KD_GAIN, VERSUS or DIRECTION (the one --target-power plans for: the paper's central claim)
    power: float  # share of simulated sweeps that find it
    sweeps: int
    students: float = float("nan")  # mean students of the sweep when it was found (a sequential design's look)
    sweep_students: float = float("nan")  # mean students each simulated sweep trained in all
    bound: float = float("nan")  # a direction's: the most power any 5 % test could have (``direction_bounds``)
    # a direction's: what the report's procedure would find with the truth and the noise known (``procedure_bounds``)
    procedure_bound: float = float("nan")

    @property
    def standard_error(self) -> float:
        return math.sqrt(max(self.power * (1 - self.power), 0.25 / self.sweeps) / self.sweeps)


def _outcomes(task: tuple) -> tuple[dict[str, tuple[str, bool, int]], int]:
    """({question: (kind, found, students when found)}, students trained) of one simulated sweep of the
    design, fixed or sequential (a worker process's job)."""
    design, noise_scale, seed, truth, sequential = task
    warnings.filterwarnings("ignore")
    from analysis.results import tidy
    from analysis.sequential import answers, expected_answer, found, simulate_sequential
    from analysis.simulate import simulate_sweep

    most = sequential[0].most if sequential else design.trials_per_cell
    raw = simulate_sweep(truth, design.alpha_design, most, seed=seed, methods=design.methods,
                         fractions=design.fractions, replicates=design.replicates, noise_scale=noise_scale,
                         full=design.full, label_noise=design.label_noise,
                         enqueued=sequential[0].first if sequential else None)
    if sequential:
        looks, used = simulate_sequential(tidy(raw), *sequential, seed=seed)
        decided = looks.decided
        outcomes = {q: (kind, q in decided and decided[q].answer == expected_answer(kind, truth),
                        decided[q].students if q in decided else len(used)) for q, kind in looks.questions.items()}
        students = len(used)
    else:
        outcomes = {q: (kind, hit, len(raw)) for q, (kind, hit) in found(answers(tidy(raw), seed=seed), truth).items()}
        students = len(raw)
    verb = "rises" if truth == "direct" else "falls"  # the direction question as the console asks it
    return {name.replace("alpha*(f) direction:", f"alpha*(f) {verb} with f:"): outcome
            for name, outcome in outcomes.items()}, students


def plan_power(design: PlannedDesign, noise_scale: float = 1.0, sweeps: int = 40, seed: int = 0,
               jobs: int = 1, truth: str = "inverse", sequential=None) -> list[QuestionPower]:
    """The power of every question of ``design``'s report at ``noise_scale`` when ``truth`` holds (one of
    ``TRUTHS``), from ``sweeps`` simulated sweeps. ``sequential``: (``analysis.sequential.SequentialDesign``,
    the kinds of question asked) for a sequential sweep (``--until-answered``), whose decisions are the
    looks' (``design.trials_per_cell`` is then ignored)."""
    if truth not in TRUTHS:
        raise ValueError(f"unknown truth {truth!r} to plan against; choose one of {', '.join(TRUTHS)}")
    if sweeps < MINIMUM_SWEEPS:
        raise ValueError(f"the power needs at least {MINIMUM_SWEEPS} simulated sweeps, got {sweeps}")
    if FULL in design.methods:
        raise ValueError(f"the methods of a design are those of the cells with f < 1, not {FULL!r}")
    tasks = [(design, noise_scale, seed * 100_003 + s, truth, sequential) for s in range(sweeps)]
    results = None
    if jobs > 1:
        try:
            with ProcessPoolExecutor(jobs) as pool:
                results = list(pool.map(_outcomes, tasks, chunksize=max(1, sweeps // (4 * jobs))))
        except BrokenProcessPool:
            # a worker died: a process forked from one that runs threads (an in-process Ray's, in a notebook
            # or a test session) can, once in a while; the same simulations then run here, the same numbers
            pass
    if results is None:
        results = [_outcomes(task) for task in tasks]
    kinds = {name: kind for found, _ in results for name, (kind, _, _) in found.items()}  # in the order first found
    trained = float(np.mean([students for _, students in results]))
    most = sequential[0].most if sequential else design.trials_per_cell
    evidence = direction_evidence(replace(design, trials_per_cell=most), noise_scale, truth) if kinds else None
    bounds = neyman_pearson_bounds(evidence) if evidence else {}
    procedure = procedure_bounds(evidence) if evidence else {}
    powers = []
    for name, kind in kinds.items():
        hits = [found[name] for found, _ in results if name in found and found[name][1]]
        power = len(hits) / len(results)
        group = name.split(": ", 1)[-1].split(" (P = ")[0]  # "alpha*(f) falls with f: el2n (P = 0.3)" -> el2n
        group = "pooled" if group.startswith("pooled") else group  # "pooled over the methods"
        direction = kind == DIRECTION
        powers.append(QuestionPower(name, kind, power, sweeps, float(np.mean([h[2] for h in hits])) if hits else float("nan"),
                                    trained, bounds.get(group, float("nan")) if direction else float("nan"),
                                    procedure.get(group, float("nan")) if direction else float("nan")))
    return powers


@dataclass(frozen=True)
class DirectionEvidence:
    """What a design can know of a truth's alpha-f direction: for each fit (a method with the f = 1 cell,
    and "pooled" with several methods) the Neyman-Pearson statistic of the no-relation truth closest to
    the truth against the truth itself, the noise known. Each is normal with sd 1 and mean ``distance``
    (the two truths' distance in units of the trial-to-trial sd); the fits share cells (every method
    the f = 1 cell, the pooled fit all), so their statistics correlate (``correlation``)."""

    names: tuple[str, ...]
    distance: np.ndarray
    correlation: np.ndarray
    replicates: int = 1  # study replicates the cells come from, each with its share of the distance


def direction_evidence(design: PlannedDesign, noise_scale: float = 1.0, truth: str = "inverse", seed: int = 0,
                       shape: str = "parabola") -> DirectionEvidence:
    """``DirectionEvidence`` of ``truth`` (its peak of ``shape``) at this design's alphas and noise.

    The truth's expected validation accuracies at the design's alphas against the no-relation truth
    closest to them (``analysis.pooled.no_relation_fit``), least squares over the peaks ``analysis.pooled``
    fits (an offset, a curvature and a sides' ratio per cell): either one peak location at every f inside
    the searched range, or every cell's optimum at the same edge (its peak anywhere beyond it, cell by
    cell: alpha* = 1 at every f is no relation whatever lies beyond 1). A fit's statistic is its trials'
    accuracies projected on the difference between the two, over the noise sd (``analysis.simulate.
    NOISE_SD`` x ``noise_scale``); two fits' statistics correlate as their differences on the trials
    they share."""
    from analysis.simulate import NOISE_SD, simulate_sweep, true_accuracy

    # the design's alphas (a grid design's do not depend on the accuracies; an adaptive one's are one draw)
    raw = simulate_sweep(truth, design.alpha_design, design.trials_per_cell, seed=seed, methods=design.methods,
                         fractions=design.fractions, replicates=design.replicates, noise_scale=noise_scale,
                         full=design.full, label_noise=design.label_noise[:1])
    cells = {}
    for (method, fraction, replicate), part in raw.groupby(["method", "fraction", "replicate"], sort=True):
        u = part["alpha"].to_numpy(float)  # the searched range is [0, 1]: unit alpha
        cells[(method, fraction, replicate)] = (u, true_accuracy(truth, method, float(fraction), u, shape=shape))
    groups = {m: [c for c in cells if c[0] in (m, FULL)] for m in design.methods}
    if len(design.methods) > 1:
        groups["pooled"] = list(cells)
    offsets = dict(zip(cells, np.cumsum([0] + [len(u) for u, _ in cells.values()])))
    sd = NOISE_SD * noise_scale
    differences = np.zeros((len(groups), sum(len(u) for u, _ in cells.values())))  # (fits, every trial)
    for row, members in zip(differences, groups.values()):
        nearest = pooled.no_relation_means([cells[c] for c in members])
        for c, mean in zip(members, nearest):
            row[offsets[c]:offsets[c] + len(mean)] = (cells[c][1] - mean) / sd
    distance = np.linalg.norm(differences, axis=1)
    unit = differences / np.where(distance > 0, distance, 1.0)[:, None]
    correlation = unit @ unit.T
    np.fill_diagonal(correlation, 1.0)  # also where a fit's distance is 0 (a no-relation truth)
    return DirectionEvidence(tuple(groups), distance, correlation, design.replicates)


def direction_bounds(design: PlannedDesign, noise_scale: float = 1.0, truth: str = "inverse",
                     level: float = pooled.SIGNIFICANCE, seed: int = 0, shape: str = "parabola") -> dict[str, float]:
    """{method, or "pooled" with several methods: the most power any level-``level`` test of its alpha-f
    direction could have at this design and noise when ``truth`` holds (its peak of ``shape``)}.

    An upper bound whatever the analysis: any test that holds its level whenever there is no relation
    holds it at the no-relation truth closest to ``truth`` (``direction_evidence``), so none has more
    power than the Neyman-Pearson test of that point against the truth, the noise known: Phi(D - z), D
    the distance between the two in units of the trial-to-trial sd, z the one-sided normal quantile of
    ``level``. It knows the truth exactly, which no real test does, so a real test's power lies below
    it; a design whose bound misses a target cannot reach it. ``procedure_bounds`` asks the same of the
    report's own procedure (two-sided, Hommel's procedure among the methods)."""
    return neyman_pearson_bounds(direction_evidence(design, noise_scale, truth, seed, shape), level)


def neyman_pearson_bounds(evidence: DirectionEvidence, level: float = pooled.SIGNIFICANCE) -> dict[str, float]:
    """``direction_bounds`` from ``direction_evidence``: Phi(D - z) for each fit."""
    z = float(sps.norm.ppf(1 - level))
    return {name: float(sps.norm.cdf(d - z)) for name, d in zip(evidence.names, evidence.distance)}


PROCEDURE_DRAWS = 200_000  # Monte Carlo draws of procedure_bounds: its rates to about 0.1 point


def procedure_bounds(evidence: DirectionEvidence, level: float = pooled.SIGNIFICANCE, draws: int = PROCEDURE_DRAWS,
                     seed: int = 0) -> dict[str, float]:
    """{method, or "pooled": how often the report's procedure would find the true direction if each of its
    tests were the Neyman-Pearson one, the truth and the noise known}, from ``direction_evidence``.

    ``direction_bounds`` is the most any one-sided 5 % test could have; the report asks more of its tests
    (``analysis.alpha_f.adjust_directions``): each must tell either direction (two-sided: 2.5 % a side),
    and a method is tested only once the pooled direction is found, with Hommel's procedure among the
    methods (all of them once the largest p is at most 5 %, the smallest alone once it is at most
    5 % / methods). So where a method's bound is 47 % the report's procedure, even
    knowing the truth, finds it far less often: the number a test of the report's shape can be held to.
    The fits' statistics are drawn jointly (normal, their correlations from the cells they share). With
    replicates the report's test is a t test over the replicates' slopes (R - 1 degrees of freedom), and
    so is this one's: each replicate's statistic carries its share of the distance (D / sqrt(R)), and the
    t over them is what is tested; replicates differ only by their noise here, as in the planner's
    simulations. The pooled fit is taken as tested, as it is when the methods share one curve (every
    truth of ``TRUTHS``); with several label noise levels each level is taken as tested at the whole
    ``level`` (the report splits it), and a sequential design is taken at its most students with the
    whole ``level`` at once (its looks spend it in parts), so the rate stays above what the report could
    reach there."""
    rng = np.random.default_rng(seed)
    # the correlation's square root by its eigenvalues (semidefinite where a fit has no distance to its null)
    values, vectors = np.linalg.eigh(evidence.correlation)
    root = vectors * np.sqrt(np.clip(values, 0, None))
    count = evidence.replicates
    if count == 1:
        z = evidence.distance + rng.normal(0.0, 1.0, (draws, len(values))) @ root.T
        p = 2 * sps.norm.sf(np.abs(z))
    else:  # (draws, replicates, fits): each replicate's statistics, then the t over the replicates
        each = evidence.distance / math.sqrt(count) + rng.normal(0.0, 1.0, (draws, count, len(values))) @ root.T
        z = math.sqrt(count) * each.mean(1) / each.std(1, ddof=1)
        p = 2 * sps.t.sf(np.abs(z), count - 1)
    names = list(evidence.names)
    # the report's procedure (``analysis.alpha_f.adjust_directions``): the pooled direction first, then
    # the methods' with Hommel's procedure among them, on every draw at once
    weights, transitions = pooled.direction_graph([(0.0, name == "pooled") for name in names])
    rejected, _ = pooled.graphical_simes(p, weights, transitions, level)
    found = rejected & (z > 0)
    return {name: float(found[:, i].mean()) for i, name in enumerate(names)}


@dataclass(frozen=True)
class Pace:
    """Busy seconds per optimisation step of one student, measured on an earlier experiment's cohorts
    (a cohort's busy time over its members' steps: setup, evaluation and checkpoints included, at the
    concurrency that experiment ran with). Per student, not per cohort: on a CPU a cohort's members
    train one after another, so its time grows with its size; on a GPU they train fused and a larger
    cohort costs less per student, which this overestimates."""

    seconds_per_step: float  # the median over its cohorts
    low: float  # quartiles over its cohorts
    high: float
    cohorts: int
    cohort_size: int  # its median cohort size
    student_arch: str
    source: str

    def describe(self) -> str:
        return (f"{1000 * self.seconds_per_step:.0f} ms per student step (quartiles {1000 * self.low:.0f}-"
                f"{1000 * self.high:.0f}; {self.cohorts} cohorts of {self.cohort_size} {self.student_arch} "
                f"students in {self.source})")


def measured_pace(trials, source: str) -> Pace:
    """The pace of an experiment's completed cohorts (``busy_s`` over the steps its members ran)."""
    done = trials[(trials["status"] == "completed")]
    needed = {"busy_s", "steps_run", "cohort"}
    if not needed <= set(done.columns):
        raise ValueError(f"{source} has no cohort timings (columns {', '.join(sorted(needed))})")
    cohorts = done.groupby(["cell", "cohort"]).agg(busy=("busy_s", "first"), steps=("steps_run", "sum"),
                                                    size=("alpha", "size"), arch=("student_arch", "first"))
    cohorts = cohorts[(cohorts["busy"] > 0) & (cohorts["steps"] > 0)]
    if cohorts.empty:
        raise ValueError(f"{source} has no completed cohort with a timing")
    per_step = cohorts["busy"] / cohorts["steps"]
    low, mid, high = np.quantile(per_step, [0.25, 0.5, 0.75])
    return Pace(float(mid), float(low), float(high), len(cohorts), int(cohorts["size"].median()),
                str(cohorts["arch"].mode().iloc[0]), source)


@dataclass(frozen=True)
class Target:
    """What ``students_for_power`` found: the students per cell, the powers there, what it tried."""

    trials_per_cell: int | None  # None: not reached within the maximum
    powers: list[QuestionPower]  # at trials_per_cell (at the maximum when not reached)
    tried: dict[int, float]  # students per cell -> the smallest power of the target's questions


def students_for_power(design: PlannedDesign, target: float, max_trials: int, noise_scale: float = 1.0,
                       sweeps: int = 40, seed: int = 0, jobs: int = 1, truth: str = "inverse") -> Target:
    """The fewest students per cell (on ``LADDER``, up to ``max_trials``) at which every alpha-f direction
    question (each method's and the pooled one) has power >= ``target``: up the ladder from the
    cheapest design, stopping at the first that reaches it (a large design costs the most to simulate,
    so it is simulated only when the smaller ones fall short)."""
    ladder = sorted({n for n in LADDER if n < max_trials} | {max_trials})
    tried: dict[int, float] = {}
    powers: list[QuestionPower] = []
    for n in ladder:
        powers = plan_power(replace(design, trials_per_cell=n), noise_scale, sweeps, seed, jobs, truth)
        direction = [q.power for q in powers if q.kind == DIRECTION]
        if not direction and len(set(design.fractions) | ({1.0} if design.full else set())) < 3:
            raise ValueError("no alpha-f direction to plan for: the test needs at least 3 distinct fractions "
                             "(the f = 1 cell counts)")
        # no direction tested at all: too few students per cell to estimate the noise (power 0 there)
        tried[n] = min(direction) if direction else 0.0
        if tried[n] >= target:
            return Target(n, powers, tried)
    return Target(None, powers, tried)


def measured_noise(location: str, label_noise: float):
    """(tidy trials, ``MatchedNoise`` or the ValueError saying why there is none, which cells it was
    measured on) of an earlier experiment (a directory or results CSV): its cells at ``label_noise``
    when it has them (noise differs a lot between levels), else all of them. Raises ResultsError (a
    ValueError) or OSError when the experiment cannot be read."""
    from analysis.results import load_experiment
    from analysis.simulate import matched_noise_scale

    experiment = load_experiment(location)
    trials = experiment.trials
    level = trials[np.isclose(trials["label_noise"], label_noise)]
    where = f"its cells at label noise P = {label_noise:g}" if len(level) else f"all its cells (none at P = {label_noise:g})"
    try:
        matched = matched_noise_scale(level if len(level) else trials, experiment.alpha_range)
    except ValueError as error:
        return trials, error, where
    return trials, matched, where
