"""The questions a report answers, tested at any level; and the looks of a sequential sweep
(``--until-answered``): when each question is decided and which cells the next round trains.

The questions (one definition, shared by the planner's power, ``analysis.power``, and the sequential
sweep): for each label noise level P,

- the KD gain at each f (mean over the cells at that f): "gain" or "loss" when its two-sided test
  rejects "no gain";
- random pruning against each score-based method at the smallest f: "random ahead" or "<method> ahead";
- the direction of the alpha-f relation per method and pooled: "inverse" or "direct", after the
  report's multiple-testing procedure over the directions (``analysis.alpha_f.adjust_directions``).

Each is tested at the level the data reach (over the study replicates when there are two or more,
else within the one replicate), as the report's 95 % intervals are.

A sequential sweep looks at its results after every round. Rule (fixed before the data):

- **Looks.** The first look comes when every cell has ``first`` students. Each later round brings
  every cell that feeds an open question to the schedule's next size, about double the last in whole
  cohorts of ``step`` (6, 12, 24, 48 for ``first`` = ``step`` = 6 and ``most`` = 48), and no further
  than ``most``: the looks come where the information doubles, so there are few of them
  (``SequentialDesign.schedule``; ``looks`` is its length).
- **Error spending.** By look k of K a question has spent ``alpha(k / K)`` of its error rate, with
  ``alpha(t) = 0.05 t^2`` (a power-family spending function between Pocock's and O'Brien-Fleming's:
  little at the first looks, where a false finding is likeliest to be stopped on, most at the last).
  Look k tests it at the nominal level of the exact group-sequential boundary for that spending
  (``nominal_levels``: Lan and DeMets's spending with the canonical joint distribution of the looks'
  statistics, information proportional to the students an open cell holds), which is above the
  increment ``alpha(k / K) - alpha((k - 1) / K)``: a look's false finding can only come from data that
  made none before, and the looks' statistics are strongly correlated (each look's students include
  the last look's). For 6, 12, 24, 48 students per cell the levels are 0.0031, 0.0105, 0.0194, 0.0294
  where the increments are 0.0031, 0.0094, 0.0156, 0.0219. The directions keep the report's graph with
  Bonferroni tests (Holm's procedure among the methods, where a fixed sweep's report uses Hommel's): at
  each look a direction holding the share w of the 5 % is tested at the boundary for w x 5 % (Maurer
  and Bretz 2013, ``pooled.graphical_sequential``), a share a look can spend. Cells that stop growing (their
  other questions decided) or replicate-level noise that does not shrink with students make the looks'
  statistics more alike than the design assumes, which lowers the chance of a false finding; the
  calibration (``bench/bench_sequential.py``) measures the error rates on simulated sweeps where the
  allocation depends on the data. A decided question stays decided, with the look, the students, its
  p-value and the nominal level it cleared.
- **Allocation.** Only the questions of the kinds asked drive it (the others are tested at the same
  levels and reported, decided or not). A question's cells are those its statistic reads: the KD gain at f, the cells at f;
  random against a method, the two methods' cells at the smallest f; a method's direction, its cells
  at every f (the shared f = 1 cell included); the pooled direction, every cell of its level. Only the
  cells of open questions train more; which alphas they try next is the alpha design's own
  continuation (``grid``: the scrambled Sobol sequence after the first look's grid), so the next
  students fill the gaps of every such cell's curve, where the peak's location is still uncertain.
- **Stop** when every question of the kinds asked (``--until-answered``: by default the alpha-f
  directions, the paper's central claim; or the KD gains, random against scored, or all) is decided
  (or cannot be asked: a pooled direction whose methods'
  curves differ is answered by the methods'), when every open question's cells hold ``most``
  students, or when ``--budget-hours`` is spent (a round is not started after it).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import scipy.stats as sps
from scipy import optimize


LEVEL = 0.05
SPENDING_POWER = 2  # alpha(t) = LEVEL * t ** SPENDING_POWER
KD_GAIN, VERSUS, DIRECTION = "kd gain", "random versus scored", "alpha-f direction"  # the kinds of question


@dataclass(frozen=True)
class Answer:
    """One question of the report, tested at one level."""

    question: str
    kind: str  # KD_GAIN, VERSUS or DIRECTION
    answer: str | None  # the decided answer at the level ("gain", "inverse", "random ahead", ...), or None
    p: float  # its p value (a direction's: multiplicity-adjusted, or at a sequential look its own); nan when not testable
    cells: tuple[str, ...]  # the cells its statistic reads
    moot: bool = False  # cannot be asked of these data (a pooled direction whose methods' curves differ)
    level: float = LEVEL  # what p was compared with: decided exactly when p <= level


def _p_two_sided(estimate: float, lo: float, hi: float, quantile: float, df: float) -> float:
    """The two-sided p of "the true value is 0" from a 95 % t interval (estimate, lo, hi) made with
    ``quantile`` on ``df`` degrees of freedom."""
    se = (hi - lo) / (2 * quantile) if quantile > 0 else float("nan")
    if not (math.isfinite(se) and se > 0 and math.isfinite(estimate)):
        return float("nan")
    return float(2 * sps.t.sf(abs(estimate) / se, max(df, 1.0)))


def p_text(p: float) -> str:
    """A look's p-value, to the digits its nominal level needs (those go down to 0.0001 at a first look)."""
    return "–" if not math.isfinite(p) else "< 0.0001" if p < 1e-4 else f"{p:.2g}"


def _label(fraction: float, noise: float, several: bool) -> str:
    return f"f = {fraction:g}" + (f" (P = {noise:g})" if several else "")


def answers(frame: pd.DataFrame, level: float = LEVEL, seed: int = 0, n_draws: int = 200,
            boundary: Callable[[float], float] | None = None) -> list[Answer]:
    """Every question of the report on ``frame`` (a tidy trials table, ``analysis.results.tidy``),
    each tested at ``level``; at a look of a sequential sweep, ``boundary`` maps the error rate a
    question holds (``level``, or a direction's share of it) to the nominal level its p-value is
    compared with at this look (``SequentialDesign.boundary``)."""
    from analysis.alpha_f import POOLED, adjust_directions, fit_alpha_f
    from analysis.comparisons import kd_gain_by_noise, random_vs_scored
    from analysis.optimum import cell_optima, test_noise
    from analysis.pooled import t_quantile
    from analysis.results import completed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = fit_alpha_f(frame, seed=seed, n_draws=n_draws)
        optima = cell_optima(frame, fits=fits)
    table = optima.table
    if "label_noise" not in table:
        table = table.assign(label_noise=0.0)
    done = completed(frame)
    test_df = test_noise(done)[1]
    cell_df = test_df if math.isfinite(optima.t_test) and test_df > 0 else float("nan")
    several = table["label_noise"].nunique() > 1

    def df_and_quantile(replicates: int) -> tuple[float, float]:
        if replicates >= 2:
            return replicates - 1.0, t_quantile(replicates - 1)
        return cell_df, optima.t_test

    alone = boundary(level) if boundary is not None else level  # a question that holds all of the error rate
    out: list[Answer] = []
    for row in kd_gain_by_noise(table, optima.t_test, by=("label_noise", "fraction")).itertuples():
        df, quantile = df_and_quantile(int(row.replicates))
        p = _p_two_sided(row.gain, row.lo, row.hi, quantile, df)
        here = table[np.isclose(table["fraction"], row.fraction) & np.isclose(table["label_noise"], row.label_noise)]
        decided = math.isfinite(p) and p <= alone
        out.append(Answer(f"KD gain at {_label(row.fraction, row.label_noise, several)}", KD_GAIN,
                          ("gain" if row.gain > 0 else "loss") if decided else None, p, tuple(here["cell"]), level=alone))
    for row in random_vs_scored(table, optima.t_test).itertuples():
        df, quantile = df_and_quantile(int(row.replicates))
        p = _p_two_sided(row.diff, row.lo, row.hi, quantile, df)
        here = table[np.isclose(table["fraction"], row.fraction) & np.isclose(table["label_noise"], row.label_noise)
                     & table["method"].isin(["random", row.method]) & (table["teacher_arch"] == row.teacher_arch)
                     & (table["student_arch"] == row.student_arch)]
        decided = math.isfinite(p) and p <= alone
        out.append(Answer(f"random ahead of {row.method} at {_label(row.fraction, row.label_noise, several)}", VERSUS,
                          ("random ahead" if row.diff > 0 else f"{row.method} ahead") if decided else None, p,
                          tuple(here["cell"]), level=alone))
    if level != LEVEL or boundary is not None:
        adjust_directions(fits, level, boundary)
    for fit in fits:
        if fit.relation == "not tested" and len(fit.f) < 3:
            continue  # a direction needs three fractions: not a question of this design (too few students is one)
        noise = fit.context.get("label_noise", 0.0)
        name = "pooled over the methods" if fit.method == POOLED else fit.method
        question = f"alpha*(f) direction: {name}" + (f" (P = {noise:g})" if several else "")
        answer = fit.relation if fit.relation in ("inverse", "direct") else None
        if boundary is None:  # the report's adjusted p at the family's level
            p, at = float(fit.p_adjusted), level
        else:  # the look's: the fit's own p against the nominal level of the share it held last
            p, at = float(fit.p_value), float(fit.tested_at)
        out.append(Answer(question, DIRECTION, answer, p, tuple(fit.cells), moot=fit.relation == "not pooled",
                          level=at))
    return out


def nominal_levels(information, spent, points: int = 801) -> list[float]:
    """The two-sided nominal level of each look of a group-sequential test that has spent ``spent[k]``
    of its error rate by look k, where the statistic has ``information[k]`` (any unit, increasing).
    Exact for the canonical joint distribution (Jennison and Turnbull, Group Sequential Methods, 2000,
    ch. 3 and 19): the score S_k = Z_k sqrt(I_k) has independent normal increments, so the chance of a
    first crossing at look k is an integral over the paths that stayed inside the earlier boundaries,
    computed on a grid (the recursive integration of Armitage, McPherson and Rowe 1969). Look k's
    boundary c_k is the one whose first-crossing chance is ``spent[k] - spent[k - 1]``; its nominal
    level 2 (1 - Phi(c_k)) is above that increment, since a path that crosses at look k has not crossed
    before (the union bound over looks would test at the increment)."""
    information = np.asarray(information, float)
    levels: list[float] = []
    grid = mass = None
    before = 0.0
    for k, (info, total) in enumerate(zip(information, spent)):
        increment = total - before
        before = total
        if increment <= 0:
            c = np.inf
        elif k == 0:
            c = float(sps.norm.isf(increment / 2))
        else:
            sd = math.sqrt(information[k] - information[k - 1])

            def crossing(c: float) -> float:
                edge = c * math.sqrt(info)
                return float(np.sum(mass * (sps.norm.sf((edge - grid) / sd) + sps.norm.cdf((-edge - grid) / sd))))

            c = float(optimize.brentq(lambda c: crossing(c) - increment, 1e-3, 40.0)) if crossing(1e-3) > increment else 1e-3
        levels.append(float(2 * sps.norm.sf(c)) if math.isfinite(c) else 0.0)
        # the density of the scores that stay inside this look's boundary, on a grid (trapezoid weights)
        edge = min(c, 12.0) * math.sqrt(info)
        new = np.linspace(-edge, edge, points)
        weights = np.full(points, new[1] - new[0])
        weights[[0, -1]] /= 2
        if k == 0:
            density = sps.norm.pdf(new, scale=math.sqrt(info))
        else:
            density = (mass[None, :] * sps.norm.pdf((new[:, None] - grid[None, :]) / sd) / sd).sum(axis=1)
        grid, mass = new, density * weights
    return levels


@functools.lru_cache(maxsize=4096)
def _nominal_levels(information: tuple, spent: tuple) -> tuple:
    return tuple(nominal_levels(information, spent))


# ---- the looks of a sequential sweep ---------------------------------------------------------------


@dataclass(frozen=True)
class SequentialDesign:
    """How a sequential sweep grows: ``first`` students per cell at the first look; at each later look
    an open cell holds ``schedule[k]`` students, about double the look before in whole cohorts of
    ``step``, at most ``most``. Look k tests at ``level_at(k)``, the exact group-sequential boundary
    for the error rate ``level`` spent as ``level * t ** spending`` over the looks (t = k / looks)."""

    first: int
    step: int
    most: int
    level: float = LEVEL
    spending: float = SPENDING_POWER

    def __post_init__(self):
        if self.first < 2:
            raise ValueError(f"the first look needs at least 2 students per cell, got {self.first}")
        if self.step < 1:
            raise ValueError(f"a round adds at least 1 student to a cell, got {self.step}")
        if self.most < self.first:
            raise ValueError(f"--max-trials {self.most} is below the first look's {self.first} students per cell")

    @property
    def schedule(self) -> list[int]:
        """The students an open cell holds at each look: the first look's, then doubling in whole cohorts,
        up to ``most``."""
        sizes = [self.first]
        while sizes[-1] < self.most:
            sizes.append(min(self.most, sizes[-1] + self.step * max(1, round(sizes[-1] / self.step))))
        return sizes

    @property
    def looks(self) -> int:
        """The most looks there can be."""
        return len(self.schedule)

    def spent(self, look: int) -> float:
        """The error rate spent by the end of look ``look`` (1-based)."""
        t = min(1.0, look / self.looks)
        return self.level * t**self.spending

    def boundary(self, look: int, share: float | None = None) -> float:
        """The nominal level a question holding the error rate ``share`` (default: ``level``; a direction
        may hold a part of it, ``pooled.graphical_sequential``) is tested at at look ``look``: the
        group-sequential boundary of ``nominal_levels`` for ``share`` spent as ``share * t ** spending``,
        with information proportional to the students an open cell holds (``schedule``)."""
        share = self.level if share is None else share
        spent = tuple(share * (k / self.looks) ** self.spending for k in range(1, self.looks + 1))
        return _nominal_levels(tuple(float(n) for n in self.schedule), spent)[min(look, self.looks) - 1]

    def level_at(self, look: int) -> float:
        """The nominal level a question that holds all of the error rate is tested at, at look ``look``."""
        return self.boundary(look)


@dataclass
class Decision:
    answer: str
    look: int
    students: int  # students of the whole sweep at that look
    p: float
    level: float = float("nan")  # the nominal level p cleared at that look (nan: recorded before levels were)


@dataclass
class Looks:
    """What the looks of a sequential sweep decided so far (saved with the searcher's state and in
    ``looks.jsonl``: a resumed sweep goes on from its last look with the same decisions)."""

    design: SequentialDesign
    kinds: tuple[str, ...] = (DIRECTION,)  # the kinds of question the sweep runs until it has answered
    decided: dict[str, Decision] = field(default_factory=dict)
    questions: dict[str, str] = field(default_factory=dict)  # every question asked at the last look: its kind
    history: list[dict] = field(default_factory=list)  # one entry per look
    stopped: str | None = None  # why no further round: "answered", "every open cell is full", "budget"

    @property
    def count(self) -> int:
        return len(self.history)

    def look(self, frame: pd.DataFrame, counts: dict[str, int], seed: int = 0) -> dict[str, int]:
        """Look at ``frame`` (the finished students of the sweep so far; ``counts``: students per cell,
        planned ones included) and return the students to add per cell for the next round ({} to stop;
        ``stopped`` says why)."""
        k = self.count + 1
        level = self.design.level_at(k)
        students = int(sum(counts.values()))
        now = answers(frame, self.design.level, seed=seed, boundary=lambda share: self.design.boundary(k, share))
        self.questions = {a.question: a.kind for a in now}
        newly = []
        for a in now:
            if a.question not in self.decided and a.answer is not None:
                self.decided[a.question] = Decision(a.answer, k, students, a.p, a.level)
                newly.append(a.question)
        open_ = [a for a in now if a.question not in self.decided and not a.moot and a.kind in self.kinds]
        grow: dict[str, int] = {}
        target = self.design.schedule[min(k, self.design.looks - 1)]  # what an open cell holds at the next look
        for a in open_:
            for cell in a.cells:
                if counts.get(cell, 0) < target:
                    grow[cell] = target - counts.get(cell, 0)
        if not open_:
            self.stopped = "answered"
        elif not grow:
            self.stopped = "every open question's cells are full"
        self.history.append({"look": k, "students": students, "level": level, "decided": newly,
                             "open": [a.question for a in open_], "moot": [a.question for a in now if a.moot],
                             "grow": len(grow), "added": int(sum(grow.values()))})
        return grow

    def stop(self, reason: str) -> None:
        """No further round (``--budget-hours`` spent): the last look's round is not run."""
        self.stopped = reason
        if self.history:
            self.history[-1].update(grow=0, added=0)

    def to_dict(self) -> dict:
        return {"kinds": list(self.kinds), "design": {"first": self.design.first, "step": self.design.step, "most": self.design.most,
                           "level": self.design.level, "looks": self.design.looks, "schedule": self.design.schedule,
                           "spending_power": self.design.spending,
                           "spending": f"{self.design.level:g}·t" + ("" if self.design.spending == 1 else
                                                                 "²" if self.design.spending == 2 else f"^{self.design.spending:g}")},
                "decided": {q: vars(d) for q, d in self.decided.items()}, "questions": self.questions,
                "history": self.history,
                "stopped": self.stopped}

    @classmethod
    def from_dict(cls, values: dict) -> "Looks":
        d = values["design"]
        looks = cls(SequentialDesign(d["first"], d["step"], d["most"], d.get("level", LEVEL),
                                     d.get("spending_power", SPENDING_POWER)),
                    tuple(values.get("kinds", (DIRECTION,))))
        looks.decided = {q: Decision(**v) for q, v in values.get("decided", {}).items()}
        looks.questions = dict(values.get("questions", {}))
        looks.history = list(values.get("history", []))
        looks.stopped = values.get("stopped")
        return looks


def simulate_sequential(frame: pd.DataFrame, design: SequentialDesign, kinds: tuple[str, ...] = (DIRECTION,),
                        seed: int = 0) -> tuple[Looks, pd.DataFrame]:
    """A sequential sweep replayed on a simulated sweep run to ``design.most`` students per cell (whose
    design enqueued ``design.first`` points, ``analysis.simulate.simulate_sweep(enqueued=...)``): each
    cell's first n students are exactly those a sweep that stopped that cell at n would have trained.
    Returns the looks and the students the sequential sweep used."""
    # each cell's students in the order its study asked them (a table may be sorted otherwise)
    order = frame.sort_values("optuna_trial", kind="stable").groupby("cell", sort=False).cumcount().reindex(frame.index)
    counts = {cell: design.first for cell in frame["cell"].unique()}
    looks = Looks(design, kinds)
    while True:
        used = frame[order < frame["cell"].map(counts)]
        grow = looks.look(used, counts, seed=seed)
        if not grow:
            return looks, used
        for cell, extra in grow.items():
            counts[cell] += extra


def expected_answer(kind: str, truth: str) -> str:
    """The answer the simulator's ``truth`` holds for a question of ``kind`` (every truth has a KD gain at
    f < 1, random ahead at small f, and an inverse direction except ``direct``)."""
    return {KD_GAIN: "gain", VERSUS: "random ahead", DIRECTION: "direct" if truth == "direct" else "inverse"}[kind]


def found(answer_list: list[Answer], truth: str) -> dict[str, tuple[str, bool]]:
    """{question: (kind, whether its answer is the truth's)} under the simulator's ``truth``."""
    return {a.question: (a.kind, a.answer == expected_answer(a.kind, truth)) for a in answer_list}


