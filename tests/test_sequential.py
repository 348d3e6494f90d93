"""Sequential sweeps (analysis.sequential): the looks' levels, the questions tested at a level, the
allocation to open questions, and known answers on simulated sweeps."""

import math

import numpy as np
import pytest
import scipy.stats as sps

from analysis.alpha_f import fit_alpha_f
from analysis.comparisons import kd_gain_by_f
from analysis.optimum import cell_optima
from analysis.results import tidy
from analysis.sequential import (DIRECTION, KD_GAIN, Looks, SequentialDesign, answers, nominal_levels,
                                 simulate_sequential)
from analysis.simulate import simulate_sweep

SMALL = dict(methods=("random", "el2n"), fractions=(0.1, 0.3, 0.6))


def test_the_looks_spend_exactly_the_error_rate_and_the_schedule_doubles_in_cohorts():
    design = SequentialDesign(first=6, step=3, most=40)
    assert design.schedule == [6, 12, 24, 40]
    levels = [design.level_at(k) for k in range(1, design.looks + 1)]
    increments = [design.spent(k) - design.spent(k - 1) for k in range(1, design.looks + 1)]
    assert math.isclose(sum(increments), 0.05) and levels == sorted(levels)  # little at the first look, most at the last
    # the first look is tested at its increment; later ones above it (their data overlap the earlier looks')
    assert math.isclose(levels[0], increments[0]) and all(lv > inc for lv, inc in zip(levels[1:], increments[1:]))
    with pytest.raises(ValueError, match="below the first look"):
        SequentialDesign(first=8, step=4, most=6)


@pytest.mark.parametrize("schedule,spending", [((6, 12, 24, 48), 2.0), ((4, 8, 16, 32, 40), 1.0)])
def test_the_boundaries_hold_the_error_rate_of_statistics_that_accumulate_students(schedule, spending):
    """Under "no effect", a look's statistic is a mean over the students so far: z_k = S_k / sqrt(n_k)
    with S the running sum. The chance that some look crosses its boundary, by look k, is what the
    design has spent by then (Monte Carlo, 200,000 sweeps: standard error 0.0005 at 0.05)."""
    design = SequentialDesign(first=schedule[0], step=schedule[0], most=schedule[-1], spending=spending)
    assert design.schedule == list(schedule)
    information = np.array(schedule, float)
    rng = np.random.default_rng(7)
    sums = np.cumsum(rng.standard_normal((200_000, len(schedule))) * np.sqrt(np.diff(information, prepend=0)), axis=1)
    z = np.abs(sums / np.sqrt(information))
    crossing = z > sps.norm.isf(np.array([nominal_levels(information, [design.spent(k) for k in
                                                                         range(1, len(schedule) + 1)])]) / 2)
    crossed_by = np.cumsum(crossing, axis=1) > 0
    for k in range(1, len(schedule) + 1):
        assert abs(crossed_by[:, k - 1].mean() - design.spent(k)) < 0.002, (k, crossed_by[:, k - 1].mean(), design.spent(k))
    # the union bound (testing each look at its increment) would spend visibly less
    union = z > sps.norm.isf(np.diff([0] + [design.spent(k) for k in range(1, len(schedule) + 1)]) / 2)
    assert (union.any(axis=1)).mean() < 0.05 - 0.005  # 4.0 % for the first schedule


def test_the_sequential_graphical_procedure_rejects_what_the_fixed_one_does_at_its_own_levels():
    from analysis.pooled import graphical, graphical_sequential

    weights, transitions = np.array([1.0, 0, 0]), np.array([[0, 0.5, 0.5], [0, 0, 1], [0, 1, 0]])
    for p in ([0.01, 0.02, 0.03], [0.01, 0.02, 0.2], [0.06, 0.001, 0.001], [0.04, 0.03, 0.024]):
        fixed, _ = graphical(p, weights, transitions, 0.05)
        same, at = graphical_sequential(p, weights, transitions, 0.05, lambda share: share)
        assert list(fixed) == list(same), p
    # at a look: each p against the boundary of the share its hypothesis holds then, shares passed on as before
    design = SequentialDesign(6, 6, 48)
    p = [0.004, 0.004, 0.5]
    rejected, at = graphical_sequential(p, weights, transitions, 0.05, lambda a: design.boundary(2, a))
    assert list(rejected) == [True, True, False]  # 0.004 < 0.0105 (all 5 %), then < the boundary for 2.5 %
    assert at[0] == design.boundary(2) and at[1] == design.boundary(2, 0.025) and at[2] == design.boundary(2)
    assert design.boundary(2, 0.025) < 0.0105 / 2 * 1.2
    rejected, at = graphical_sequential(p, weights, transitions, 0.05, lambda a: design.boundary(1, a))
    assert not rejected.any() and at[0] == design.boundary(1) < 0.004 and at[1] == at[2] == 0  # not yet tested


def test_a_question_tested_at_5_percent_is_decided_exactly_when_the_reports_interval_excludes_0():
    frame = tidy(simulate_sweep("inverse", "grid", 8, seed=3, noise_scale=1.5, **SMALL))
    decided = {a.question: a for a in answers(frame) if a.kind == KD_GAIN}
    optima = cell_optima(frame, fits=fit_alpha_f(frame, seed=0, n_draws=200))  # as the report and answers() do
    by_f = kd_gain_by_f(optima.table, optima.t_test)
    assert len(by_f) == len(decided) == 4
    outcomes = set()
    for row in by_f.itertuples():
        answer = decided[f"KD gain at f = {row.fraction:g}"]
        excludes = row.lo > 0 or row.hi < 0
        assert (answer.answer is not None) == excludes, (row, answer)
        outcomes.add(excludes)
        # a stricter level decides a subset
        strict = {a.question: a for a in answers(frame, level=1e-4)}[answer.question]
        assert strict.answer is None or answer.answer == strict.answer
    assert outcomes == {True, False}  # this draw has both kinds of f, so the check can fail either way


def test_a_strong_inverse_relation_is_answered_early_and_the_sweep_stops_short_of_its_budget():
    design = SequentialDesign(first=6, step=6, most=48)
    frame = tidy(simulate_sweep("edge_steep", "grid", design.most, seed=1, noise_scale=0.2, enqueued=design.first,
                                **SMALL))
    looks, used = simulate_sequential(frame, design)
    assert looks.stopped == "answered"
    directions = {q: d for q, d in looks.decided.items() if q.startswith("alpha*(f) direction")}
    assert directions and all(d.answer == "inverse" for d in directions.values())
    assert len(used) < len(frame) / 2  # stopped at or before the second of four looks
    # the students it used are each cell's first ones, in the order the design asked them
    first = frame.sort_values("optuna_trial").groupby("cell").head(design.schedule[looks.count - 1])
    assert len(used) == len(first) and set(zip(used["cell"], used["optuna_trial"])) == set(zip(first["cell"], first["optuna_trial"]))


def test_with_no_relation_the_sweep_runs_to_its_budget_and_finds_no_direction():
    design = SequentialDesign(first=6, step=6, most=24)
    frame = tidy(simulate_sweep("none", "grid", design.most, seed=2, noise_scale=0.5, enqueued=design.first, **SMALL))
    looks, used = simulate_sequential(frame, design)
    assert not any(q.startswith("alpha*(f) direction") for q in looks.decided)
    assert looks.stopped == "every open question's cells are full" and len(used) == len(frame)
    assert [entry["students"] for entry in looks.history] == [7 * n for n in design.schedule]


def test_only_the_cells_of_open_questions_train_more():
    """Asked for the KD gains only: after a look that decides the gain at small f, the cells there stop
    while those of the gains still open grow to the next look's size."""
    design = SequentialDesign(first=6, step=6, most=24)
    frame = tidy(simulate_sweep("inverse", "grid", design.most, seed=4, noise_scale=0.3, enqueued=design.first,
                                **SMALL))
    looks = Looks(design, kinds=(KD_GAIN,))
    counts = {cell: design.first for cell in frame["cell"].unique()}
    used = frame[frame["optuna_trial"] < design.first]  # each cell's first students
    grow = looks.look(used, counts)
    decided = [q for q in looks.decided if q.startswith("KD gain")]
    assert "KD gain at f = 0.1" in decided and "KD gain at f = 1" not in decided
    at = {f: [c for c in counts if f"|f={f}|" in c] for f in (0.1, 1.0)}
    assert not any(cell in grow for cell in at[0.1])
    assert all(grow[cell] == 6 for cell in at[1.0])  # 6 -> 12 students at the next look
    # every question is still asked and recorded, direction ones included, though none drives the rounds
    assert any(kind == DIRECTION for kind in looks.questions.values())


def test_the_looks_survive_their_record():
    design = SequentialDesign(first=6, step=6, most=12, spending=1.0)
    frame = tidy(simulate_sweep("inverse", "grid", 12, seed=5, noise_scale=0.3, enqueued=6, **SMALL))
    looks, _ = simulate_sequential(frame, design, kinds=(KD_GAIN, DIRECTION))
    again = Looks.from_dict(looks.to_dict())
    assert again.to_dict() == looks.to_dict() and again.design == design
    # each decision's p cleared the nominal level it was tested at, at most what the design had spent by then
    assert again.decided and all(np.isfinite(d.p) and d.p <= d.level <= design.spent(d.look) + 1e-12
                                 for d in again.decided.values())


class _Run:
    """What the searcher's look reads of its driver (``sweep.looks.SequentialRun``), from a simulated sweep."""

    def __init__(self, frame, budget_hours):
        self.frame, self.budget_hours, self.lines = frame, budget_hours, []

    def finished(self):
        return self.frame

    def after_look(self, looks, added, cells):
        self.lines.append((looks.count, added, cells, looks.stopped))


@pytest.mark.parametrize("budget_hours", [None, 1e-9])
def test_the_searchers_look_grows_the_open_cells_or_stops_when_the_budget_is_spent(tmp_path, budget_hours):
    from analysis.simulate import sweep_cells
    from contract import CohortSettings
    from search_spaces.alpha_space import AlphaSpace
    from sweep.searcher import CellSearcher

    design = SequentialDesign(first=6, step=6, most=24)
    cells = sweep_cells(**SMALL)
    frame = tidy(simulate_sweep("none", "grid", 6, seed=6, noise_scale=0.5, **SMALL))
    settings = CohortSettings(recipe={"epochs": 1}, val_size=0.1, split_seed=0, selection="hard", class_balanced=False,
                              teacher_keys={}, score_keys={}, cpus_per_trial=1.0, profile="smoke", version="test")
    searcher = CellSearcher(experiment="exp", cells=cells, trials_per_cell=6, space=AlphaSpace(),
                            optuna_storage=str(tmp_path / "optuna.journal"), settings=settings, cohort_size=6,
                            looks=Looks(design))
    searcher.asked = searcher.finished = [6] * len(cells)  # the first round is done
    run = _Run(frame, budget_hours)
    searcher.attach(run)
    added = searcher._look()
    assert searcher.looks.count == 1 and not searcher.looks.decided.get("alpha*(f) direction: random")
    if budget_hours is None:
        assert added == 6 * len(cells) and searcher.budgets == [12] * len(cells) and searcher.looks.stopped is None
    else:  # the look is taken, its round is not
        assert added == 0 and searcher.budgets == [6] * len(cells)
        assert searcher.looks.stopped.startswith("--budget-hours") and searcher.looks.history[-1]["added"] == 0
    assert run.lines == [(1, added, len(cells) if added else 0, searcher.looks.stopped)]
    # the look, its budgets and its elapsed time travel in the state Tune saves
    state = searcher.get_state()
    assert state["looks"] is searcher.looks and state["budgets"] == searcher.budgets and state["elapsed_s"] > 0


def test_idle_slots_train_the_next_round_ahead_and_the_look_reads_only_the_rounds_students(tmp_path, monkeypatch):
    """The round's last cohort trains on one slot; the other trains a cohort of the next round ahead
    (students numbered past the cell's budget). The look waits for the round only, reads each cell's
    first ``budgets`` students only, and a grown cell's students trained ahead count in its new round."""
    from analysis.simulate import sweep_cells
    from contract import CohortSettings
    from search_spaces.alpha_space import AlphaSpace
    from sweep.searcher import CellSearcher

    design = SequentialDesign(first=6, step=6, most=24)
    cells = sweep_cells(**SMALL)
    names = [cell.name for cell in cells]
    frame = tidy(simulate_sweep("none", "grid", 12, seed=6, noise_scale=0.5, enqueued=6, **SMALL))
    settings = CohortSettings(recipe={"epochs": 1}, val_size=0.1, split_seed=0, selection="hard", class_balanced=False,
                              teacher_keys={c.teacher_ref: "teacher-key" for c in cells},
                              score_keys={c.scores_ref: "scores-key" for c in cells if c.scores_ref},
                              cpus_per_trial=1.0, profile="smoke", version="test")
    searcher = CellSearcher(experiment="exp", cells=cells, trials_per_cell=6, space=AlphaSpace(),
                            optuna_storage=str(tmp_path / "optuna.journal"), settings=settings, cohort_size=6,
                            looks=Looks(design))
    run = _Run(frame, None)
    run.slots = lambda: 2  # two cohorts at once
    searcher.attach(run)
    seen = []
    look = Looks.look
    monkeypatch.setattr(Looks, "look", lambda self, data, counts, seed=0: (seen.append(data), look(self, data, counts, seed))[1])

    def done(trial_id):
        n = len(searcher.live[trial_id][1])
        searcher.on_trial_complete(trial_id, {"done": True, "member_status": "|".join(["completed"] * n),
                                              "member_val_acc": [0.5] * n, "epoch": 1})

    first = [f"t{i}" for i in range(len(cells))]
    for trial_id in first:
        assert searcher.suggest(trial_id) is not None
    for trial_id in first[:-1]:
        done(trial_id)
    # the round's last cohort trains: the idle slot takes a next-round cohort, one slot's worth only
    ahead = searcher.suggest("a0")
    assert ahead is not None and [m["optuna_trial"] for m in ahead["members"]] == list(range(6, 12))
    assert searcher.suggest("a1") is None and searcher.looks.count == 0  # both slots busy; no look yet
    index = searcher.live["a0"][0]
    done("a0")
    # its progress line counts the round's students against the budget, and those trained ahead apart
    assert ": 6/6 (+6 trained ahead), best" in searcher.progress_line(index, searcher.study(index))
    assert searcher.suggest("a1") is not None  # the next cell, ahead too
    assert searcher.looks.count == 0
    done(first[-1])
    done("a1")
    assert searcher.suggest("r0") is not None  # the round is in: the look is taken, the next round starts
    assert searcher.looks.count == 1 and len(seen) == 1
    data = seen[0]
    assert data.groupby("cell").size().to_dict() == {name: 6 for name in names}  # ahead students not read
    assert data["optuna_trial"].max() == 5
    grown = [i for i, name in enumerate(names) if searcher.budgets[i] == 12]
    assert ": 12/12, best" in searcher.progress_line(index, searcher.study(index))  # now students of its round
    assert len(grown) == len(cells)  # no relation: every direction open, every cell grows
    # the two cells trained ahead have their next round already (no cohort of theirs is asked again), as has the
    # cell the next round began with
    ahead_cells = [i for i in range(len(cells)) if searcher.asked[i] == 12]
    assert len(ahead_cells) == 3 and searcher.planned_students() == 12 * len(cells)
