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
- **Error spending.** Look k of K tests every undecided question at level
  ``alpha(k / K) - alpha((k - 1) / K)`` with ``alpha(t) = 0.05 t^2`` (a power-family spending
  function between Pocock's and O'Brien-Fleming's: little at the first looks, where a false finding
  is likeliest to be stopped on, most at the last). The levels sum to 0.05, so by the union bound over
  looks each question's error rate, and the directions' family-wise one, stay at most 5 % whatever
  the data do between looks; the calibration (``bench/bench_sequential.py``) measures
  them on simulated sweeps where the allocation depends on the data. A decided question stays decided,
  with the look and the students it was decided on.
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

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.stats as sps


LEVEL = 0.05
SPENDING_POWER = 2  # alpha(t) = LEVEL * t ** SPENDING_POWER
KD_GAIN, VERSUS, DIRECTION = "kd gain", "random versus scored", "alpha-f direction"  # the kinds of question


@dataclass(frozen=True)
class Answer:
    """One question of the report, tested at one level."""

    question: str
    kind: str  # KD_GAIN, VERSUS or DIRECTION
    answer: str | None  # the decided answer at the level ("gain", "inverse", "random ahead", ...), or None
    p: float  # its p value (directions: the multiplicity-adjusted one); nan when not testable
    cells: tuple[str, ...]  # the cells its statistic reads
    moot: bool = False  # cannot be asked of these data (a pooled direction whose methods' curves differ)


def _p_two_sided(estimate: float, lo: float, hi: float, quantile: float, df: float) -> float:
    """The two-sided p of "the true value is 0" from a 95 % t interval (estimate, lo, hi) made with
    ``quantile`` on ``df`` degrees of freedom."""
    se = (hi - lo) / (2 * quantile) if quantile > 0 else float("nan")
    if not (math.isfinite(se) and se > 0 and math.isfinite(estimate)):
        return float("nan")
    return float(2 * sps.t.sf(abs(estimate) / se, max(df, 1.0)))


def _label(fraction: float, noise: float, several: bool) -> str:
    return f"f = {fraction:g}" + (f" (P = {noise:g})" if several else "")


def answers(frame: pd.DataFrame, level: float = LEVEL, seed: int = 0, n_draws: int = 200) -> list[Answer]:
    """Every question of the report on ``frame`` (a tidy trials table, ``analysis.results.tidy``),
    each tested at ``level``."""
    from analysis.alpha_f import POOLED, adjust_directions, fit_alpha_f
    from analysis.comparisons import kd_gain_by_noise, random_vs_scored
    from analysis.optimum import cell_optima, test_noise
    from analysis.pooled import t_quantile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits = fit_alpha_f(frame, seed=seed, n_draws=n_draws)
        optima = cell_optima(frame, fits=fits)
    table = optima.table
    if "label_noise" not in table:
        table = table.assign(label_noise=0.0)
    done = frame[(frame["status"] == "completed") & frame["val_acc"].notna()]
    test_df = test_noise(done)[1]
    cell_df = test_df if math.isfinite(optima.t_test) and test_df > 0 else float("nan")
    several = table["label_noise"].nunique() > 1

    def df_and_quantile(replicates: int) -> tuple[float, float]:
        if replicates >= 2:
            return replicates - 1.0, t_quantile(replicates - 1)
        return cell_df, optima.t_test

    out: list[Answer] = []
    for row in kd_gain_by_noise(table, optima.t_test, by=("label_noise", "fraction")).itertuples():
        df, quantile = df_and_quantile(int(row.replicates))
        p = _p_two_sided(row.gain, row.lo, row.hi, quantile, df)
        here = table[np.isclose(table["fraction"], row.fraction) & np.isclose(table["label_noise"], row.label_noise)]
        decided = math.isfinite(p) and p <= level
        out.append(Answer(f"KD gain at {_label(row.fraction, row.label_noise, several)}", KD_GAIN,
                          ("gain" if row.gain > 0 else "loss") if decided else None, p, tuple(here["cell"])))
    for row in random_vs_scored(table, optima.t_test).itertuples():
        df, quantile = df_and_quantile(int(row.replicates))
        p = _p_two_sided(row.diff, row.lo, row.hi, quantile, df)
        here = table[np.isclose(table["fraction"], row.fraction) & np.isclose(table["label_noise"], row.label_noise)
                     & table["method"].isin(["random", row.method]) & (table["teacher_arch"] == row.teacher_arch)
                     & (table["student_arch"] == row.student_arch)]
        decided = math.isfinite(p) and p <= level
        out.append(Answer(f"random ahead of {row.method} at {_label(row.fraction, row.label_noise, several)}", VERSUS,
                          ("random ahead" if row.diff > 0 else f"{row.method} ahead") if decided else None, p,
                          tuple(here["cell"])))
    if level != LEVEL:
        adjust_directions(fits, level)
    for fit in fits:
        if fit.relation == "not tested" and len(fit.f) < 3:
            continue  # a direction needs three fractions: not a question of this design (too few students is one)
        noise = fit.context.get("label_noise", 0.0)
        name = "pooled over the methods" if fit.method == POOLED else fit.method
        question = f"alpha*(f) direction: {name}" + (f" (P = {noise:g})" if several else "")
        answer = fit.relation if fit.relation in ("inverse", "direct") else None
        out.append(Answer(question, DIRECTION, answer, float(fit.p_adjusted), tuple(fit.cells),
                          moot=fit.relation == "not pooled"))
    return out


# ---- the looks of a sequential sweep ---------------------------------------------------------------


@dataclass(frozen=True)
class SequentialDesign:
    """How a sequential sweep grows: ``first`` students per cell at the first look; at each later look
    an open cell holds ``schedule[k]`` students, about double the look before in whole cohorts of
    ``step``, at most ``most``. Look k tests at ``level_at(k)``: the error rate ``level`` spent as
    ``level * t ** spending`` over the looks (t = k / looks)."""

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

    def level_at(self, look: int) -> float:
        """The level every undecided question is tested at, at look ``look``."""
        return self.spent(look) - self.spent(look - 1)


@dataclass
class Decision:
    answer: str
    look: int
    students: int  # students of the whole sweep at that look
    p: float


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
        now = answers(frame, level, seed=seed)
        self.questions = {a.question: a.kind for a in now}
        newly = []
        for a in now:
            if a.question not in self.decided and a.answer is not None:
                self.decided[a.question] = Decision(a.answer, k, students, a.p)
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


