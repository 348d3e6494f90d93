"""Sequential sweeps (analysis.sequential): the looks' levels, the questions tested at a level, the
allocation to open questions, and known answers on simulated sweeps."""

import math

import numpy as np
import pytest

from analysis.alpha_f import fit_alpha_f
from analysis.comparisons import kd_gain_by_f
from analysis.optimum import cell_optima
from analysis.results import tidy
from analysis.sequential import (DIRECTION, KD_GAIN, Looks, SequentialDesign, answers, simulate_sequential)
from analysis.simulate import simulate_sweep

SMALL = dict(methods=("random", "el2n"), fractions=(0.1, 0.3, 0.6))


def test_the_looks_spend_exactly_the_error_rate_and_the_schedule_doubles_in_cohorts():
    design = SequentialDesign(first=6, step=3, most=40)
    assert design.schedule == [6, 12, 24, 40]
    levels = [design.level_at(k) for k in range(1, design.looks + 1)]
    assert math.isclose(sum(levels), 0.05) and all(level > 0 for level in levels)
    assert levels == sorted(levels)  # little at the first look, most at the last
    with pytest.raises(ValueError, match="below the first look"):
        SequentialDesign(first=8, step=4, most=6)


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
    assert again.decided and all(np.isfinite(d.p) and d.p <= design.spent(d.look) for d in again.decided.values())


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
