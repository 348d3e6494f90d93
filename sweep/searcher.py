"""One Tune searcher over every cell, one Optuna study per cell; and a per-cell ASHA scheduler.

``CellSearcher`` hands out trials round-robin over the cells that still have budget, so every worker
stays busy with a mix of cells instead of one cell after another. A Tune trial is a cohort: up to
``cohort_size`` students of one cell, each an Optuna trial of the cell's study (a batch ask), told its
own result when the cohort ends. Each cell's Optuna study (in a real
Optuna storage, ``sweep.optuna_storage``) starts with the alpha design's enqueued points, the
alpha = 0 baseline first, so "KD vs no KD" comes out of every cell; later alphas come from the
design's sampler (``search_spaces.alpha_space``), one per study for as long as the study is open,
seeded so that a resumed sweep continues the design's sequence instead of replaying it. The searcher's state (which Tune trial is which Optuna trial) is saved with Tune's
experiment state, so a resumed sweep tells each Optuna trial its result exactly once; an Optuna trial
that was asked but whose Tune trial was lost with the driver is handed out again rather than left
running forever.

The studies are a full record of the sweep, for optuna-dashboard: every report of a cohort gives each
member's Optuna trial an intermediate value (its validation accuracy, step = the report's epoch), so
the learning curves and the pruning view fill in while the sweep runs; and every member's trial
carries the user attributes ``cell`` (``Cell.name``, the results' cell), ``cohort`` (its Tune trial
id, results.csv's ``cohort``), ``cohort_seed`` and ``tau``.

``PerCellASHA`` runs one ASHA bracket per cell: accuracies at f = 0.1 and f = 1.0 are not
comparable, so trials only compete with trials of their own cell. A cohort holding the alpha = 0
baseline is never stopped early: it is every cell's reference. (Within a cohort, ``--halving`` stops
weak members instead.)
"""

from __future__ import annotations

import logging
import pickle
import time
from typing import TYPE_CHECKING

import optuna

from search_spaces.alpha_space import AlphaSpace
from sweep.console import duration
from contract import METRIC, MODE, Cell, StudentSpec, CohortSettings, member_statuses
from sweep.optuna_storage import open_optuna_storage
from sweep.ray_adapter import CONTINUE, FINISHED, AsyncHyperBandScheduler, FIFOScheduler, Searcher
from contract.seeding import derive_seed

if TYPE_CHECKING:
    from sweep.looks import SequentialRun

log = logging.getLogger(__name__)


def study_name(experiment: str, cell: Cell) -> str:
    return f"{experiment}/{cell.name}"


class CellSearcher(Searcher):
    def __init__(
        self,
        *,
        experiment: str,
        cells: list[Cell],
        trials_per_cell: int,
        space: AlphaSpace,
        optuna_storage: str,
        settings: CohortSettings,
        cohort_size: int = 1,
        looks=None,
    ):
        super().__init__(metric=METRIC, mode=MODE)
        self.experiment = experiment
        self.cells = list(cells)
        self.trials_per_cell = trials_per_cell
        self.cohort_size = max(1, cohort_size)
        self.space = space
        self.optuna_storage = optuna_storage
        self.settings = settings
        self.asked = [0] * len(cells)
        self.finished = [0] * len(cells)
        # students each cell is to have: trials_per_cell, and in a sequential sweep what its looks added
        self.budgets = [trials_per_cell] * len(cells)
        self.looks = looks  # analysis.sequential.Looks of a sequential sweep (--until-answered), else None
        self.elapsed_s = 0.0  # the students' wall time of the drivers before this one (--budget-hours)
        self._sequential = None  # SequentialRun: this driver's results, experiment directory and budget
        self.live: dict[str, tuple[int, list[int]]] = {}  # Tune trial id -> (cell index, Optuna trial numbers)
        self.cursor = 0
        self._studies: dict[int, optuna.Study] = {}
        self._storage = None
        self._started, self._finished_here = time.monotonic(), 0  # for the progress line's estimate

    # -- state saved with the experiment (studies live in their own storage) -------------------

    _STATE = ("asked", "finished", "live", "cursor", "budgets", "looks", "elapsed_s")

    def planned_students(self) -> int:
        """The students the sweep trains as things stand: each cell's budget (a sequential sweep's looks
        grow it), or what it asked if more (students trained ahead of a look, ``_ahead``)."""
        return sum(max(budget, asked) for budget, asked in zip(self.budgets, self.asked))

    def students_wall_s(self) -> float:
        """The students' wall time so far, over every driver of the sweep (``--budget-hours``)."""
        return self.elapsed_s + time.monotonic() - self._started

    def get_state(self) -> dict:
        return {**{name: getattr(self, name) for name in self._STATE}, "elapsed_s": self.students_wall_s()}

    def set_state(self, state: dict) -> None:
        # a state saved before sequential sweeps existed: a fixed budget, no looks
        state = {"budgets": [self.trials_per_cell] * len(self.cells), "looks": None, "elapsed_s": 0.0, **state}
        for name in self._STATE:
            setattr(self, name, state[name])
        self._started = time.monotonic()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.get_state(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.set_state(pickle.load(handle))

    def relocate(self, optuna_storage: str) -> None:
        """Use ``optuna_storage`` from now on: a resumed experiment's own storage (its journal where the
        experiment is now), never the one pickled where it started (a copy must not write into its original)."""
        self.optuna_storage = optuna_storage
        self._studies, self._storage = {}, None

    def __setstate__(self, state):
        state = {"budgets": [state["trials_per_cell"]] * len(state["cells"]), "looks": None, "elapsed_s": 0.0,
                 "_sequential": None, **state}
        self.__dict__.update(state)
        self._started, self._finished_here = time.monotonic(), 0  # a restored searcher times what it runs

    def attach(self, sequential: "SequentialRun") -> None:
        """This driver's means of looking (a sequential sweep): not part of the saved state."""
        self._sequential = sequential

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_studies"], state["_storage"] = {}, None  # reopened from the storage URL
        state["elapsed_s"] = self.students_wall_s()
        state["_sequential"] = None  # this driver's; a resumed one attaches its own

        return state

    # -- Optuna ----------------------------------------------------------------------------------

    def study(self, index: int) -> optuna.Study:
        if index not in self._studies:
            if self._storage is None:
                self._storage = open_optuna_storage(self.optuna_storage)
            cell = self.cells[index]
            study = optuna.create_study(
                storage=self._storage, study_name=study_name(self.experiment, cell), direction="maximize",
                load_if_exists=True,
            )
            if not study.trials:
                study.set_user_attr("cell", cell.to_dict())
                fixed_tau = self.space.fixed_tau()
                if fixed_tau is not None:
                    study.set_user_attr("tau", fixed_tau)
                for i, point in enumerate(self.space.initial_points(self.trials_per_cell)):
                    study.enqueue_trial(point, user_attrs={"baseline": i == 0, "design": "initial"})
            # One sampler per study, for as long as the study is open (a restored searcher opens it again).
            study.sampler = self.space.sampler(study.study_name, len(study.trials))
            self._studies[index] = study
        return self._studies[index]

    def _ask(self, index: int) -> optuna.trial.Trial:
        return self.study(index).ask(self.space.distributions())

    @staticmethod
    def _trial_id(study: optuna.Study, number: int) -> int:
        # Optuna has no public route from a trial number to its storage id; the study's own storage
        # object is used (for a database, Optuna wraps it in a cache that must see every write).
        return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)

    def _record(self, index: int, numbers: list[int], result: dict) -> None:
        """Each member's validation accuracy in ``result`` as an intermediate value of its Optuna trial
        at step = the member's epoch (the report's ``epoch``; the final report's ``member_epochs``,
        where a member stopped by halving says when it stopped). Members without a value (stopped)
        are skipped; a step already recorded (a resumed trial reports it again) keeps its first value,
        as ``optuna.Trial.report`` does; a finished Optuna trial is left as it is. Problems are
        logged, never raised into Tune."""
        step, values = result.get("epoch"), result.get("member_val_acc") or []
        epochs = result.get("member_epochs") or []
        if step is None:
            return
        for i, number in enumerate(numbers):
            value = values[i] if i < len(values) else None
            if value is None:
                continue
            member_step = epochs[i] if i < len(epochs) and epochs[i] is not None else step
            try:
                member_step = int(member_step)
                study = self.study(index)
                storage = study._storage
                trial_id = self._trial_id(study, number)
                trial = storage.get_trial(trial_id)
                if trial.state != optuna.trial.TrialState.RUNNING or member_step in trial.intermediate_values:
                    continue
                storage.set_trial_intermediate_value(trial_id, member_step, float(value))
            except Exception as problem:  # noqa: BLE001 -- the record is a view; the sweep goes on
                log.warning("cell %s: Optuna trial %d: no intermediate value at step %s (%s: %s)",
                            self.cells[index].name, number, member_step, type(problem).__name__, problem)

    def _orphans(self, index: int) -> list:
        """Optuna trials of this cell that were asked but belong to no live Tune trial (lost with a
        driver that stopped before Tune saved them): handed out again, not left running forever. A
        driver killed inside an ask leaves a trial without its parameters (Optuna creates the trial,
        then records each parameter): that ask is finished here first."""
        mine = {number for cell, numbers in self.live.values() if cell == index for number in numbers}
        study = self.study(index)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        names = set(self.space.distributions())
        return [trial if names <= set(trial.params) else self._finish_ask(study, trial)
                for trial in running if trial.number not in mine]

    def _finish_ask(self, study: optuna.Study, frozen) -> optuna.trial.Trial:
        """The rest of an ask a stopped driver began: each missing parameter from the trial's enqueued
        point (Optuna's ``fixed_params``) or else the sampler, as the ask would have drawn it."""
        trial = optuna.trial.Trial(study, frozen._trial_id)
        for name, distribution in self.space.distributions().items():
            if name not in frozen.params:
                trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)
        return trial

    # -- Tune's searcher interface -----------------------------------------------------------------

    def suggest(self, trial_id: str):
        open_cells = [i for i in range(len(self.cells)) if self.asked[i] < self.budgets[i]]
        if not open_cells:
            if self.looks is None or self.looks.stopped:
                return FINISHED
            if self._round_live():
                # the round's last cohorts still train and the look waits for them; a slot they leave
                # idle trains a cohort of the next round ahead (``_ahead``)
                return self._ahead(trial_id)
            grown = self._look()
            if grown is None:
                return None  # their results are not all in yet
            if not grown:
                return FINISHED
            open_cells = [i for i in range(len(self.cells)) if self.asked[i] < self.budgets[i]]
        # Round-robin: the next open cell after the last one served.
        index = min(open_cells, key=lambda i: (i - self.cursor) % len(self.cells))
        self.cursor = (index + 1) % len(self.cells)
        return self._cohort(trial_id, index, min(self.cohort_size, self.budgets[index] - self.asked[index]))

    def _round_live(self) -> bool:
        """Whether a student of the current round still trains (one asked beyond its cell's budget was
        trained ahead of the next round, ``_ahead``, and the look does not wait for it)."""
        return any(number < self.budgets[index] for index, numbers in self.live.values() for number in numbers)

    def _ahead(self, trial_id: str):
        """A cohort of the next round for a trial slot the round's last cohorts leave idle, or None.

        The look reads each cell's first ``budgets`` students only (the design's, in the order the cell
        asked them), so a student trained ahead changes no decision: where the look grows its cell it is
        one of the next round's students, already trained; where the look decides the cell's
        questions it is a student more, in results.csv and the report, that no look reads. Only the
        cells of this round (those the last look grew: their questions were open) train ahead, up to
        the schedule's next size, and only while fewer cohorts run than the cluster has slots, so at
        most a slot's cohort per cell is spent on a question the look then decides."""
        slots = self._sequential.slots() if self._sequential is not None else 0
        if len(self.live) >= slots:
            return None
        schedule, looks = self.looks.design.schedule, self.looks.count
        if looks + 1 >= len(schedule):
            return None  # the last look's round: no round after it
        current, following = schedule[looks], schedule[looks + 1]
        ahead = [i for i in range(len(self.cells)) if self.budgets[i] == current and self.asked[i] < following]
        if not ahead:
            return None
        index = min(ahead, key=lambda i: (i - self.cursor) % len(self.cells))
        self.cursor = (index + 1) % len(self.cells)
        return self._cohort(trial_id, index, min(self.cohort_size, following - self.asked[index]))

    def _cohort(self, trial_id: str, index: int, size: int):
        """A cohort of ``size`` students of cell ``index`` as Tune trial ``trial_id``: its config."""
        trials = self._orphans(index)[:size]
        while len(trials) < size:  # a batch ask: every member is an Optuna trial of the cell's study
            trials.append(self._ask(index))
        self.asked[index] += len(trials)
        self.live[trial_id] = (index, [t.number for t in trials])
        cell = self.cells[index]
        members = [StudentSpec(alpha=float(t.params["alpha"]), tau=float(t.params.get("tau", self.space.tau[0])),
                              optuna_trial=t.number) for t in trials]
        spec = self.settings.spec(cell, cell_index=index, members=members,
                                  cohort_seed=derive_seed("trial", cell.name, trials[0].number))
        # What results.csv will say of each member, on its Optuna trial too (a re-handed orphan gets
        # its new cohort's). ``trials`` mixes asked Trials and orphaned FrozenTrials: both write here.
        storage = self.study(index)._storage
        for trial, member in zip(trials, members):
            for key, value in (("cell", cell.name), ("cohort", trial_id), ("cohort_seed", spec.cohort_seed),
                               ("tau", member.tau)):
                storage.set_trial_user_attr(trial._trial_id, key, value)
        return spec.to_config()

    def _look(self) -> int | None:
        """A sequential sweep's look, once every student of the round has finished: which questions
        its data decide (``analysis.sequential.Looks``), and the next round's students per cell.
        Returns the students added (0: the sweep is done), or None while the round's results are not
        all in (Tune calls ``suggest`` again)."""
        if self._sequential is None:
            raise RuntimeError("a sequential sweep's searcher needs its driver's results (CellSearcher.attach)")
        frame = self._sequential.finished()
        if frame is None or len(frame) < sum(self.finished):
            return None
        counts = {cell.name: self.budgets[i] for i, cell in enumerate(self.cells)}
        # the design's students: each cell's first ``budgets`` (not those trained ahead, ``_ahead``)
        frame = frame[frame["optuna_trial"] < frame["cell"].map(counts)]
        grow = self.looks.look(frame, counts)
        hours = self.students_wall_s() / 3600
        budget = self._sequential.budget_hours
        if grow and budget is not None and hours >= budget:
            self.looks.stop(f"--budget-hours {budget:g} spent ({hours:.2f} h)")
            grow = {}
        index = {cell.name: i for i, cell in enumerate(self.cells)}
        for name, extra in grow.items():
            self.budgets[index[name]] += extra
        self._sequential.after_look(self.looks, sum(grow.values()), len(grow))
        return sum(grow.values())

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """A cohort's report: each member's validation accuracy becomes an intermediate value of its
        Optuna trial (Tune calls this for every report but the last, which ``on_trial_complete`` gets)."""
        if trial_id in self.live:
            index, numbers = self.live[trial_id]
            self._record(index, numbers, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell every member's Optuna trial how it ended: its validation accuracy, pruned (stopped
        early by halving or the scheduler) or failed."""
        if trial_id not in self.live:
            return
        index, numbers = self.live.pop(trial_id)
        study = self.study(index)
        if result:
            self._record(index, numbers, result)  # the last report: the final epoch's accuracies
        statuses = member_statuses((result or {}).get("member_status"))
        values = (result or {}).get("member_val_acc") or []
        for i, number in enumerate(numbers):
            try:
                if error or not result or i >= len(statuses):
                    study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                elif result.get("done") and statuses[i] == "completed":
                    study.tell(number, values[i], skip_if_finished=True)
                else:
                    study.tell(number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            except ValueError as problem:  # the study no longer holds it as running: results.csv still has it
                log.warning("cell %s: Optuna trial %d not told (%s)", self.cells[index].name, number, problem)
        self.finished[index] += len(numbers)
        self._finished_here += len(numbers)
        log.info("%s", self.progress_line(index, study))

    def progress_line(self, index: int, study: optuna.Study) -> str:
        """One line per finished trial: the sweep's progress, then the cell's, compactly."""
        done, total = sum(self.finished), self.planned_students()
        elapsed = time.monotonic() - self._started
        rate = elapsed / max(1, self._finished_here)
        left = f", ~{duration(rate * (total - done))} left" if done < total else ""
        running = sum(len(numbers) for _, numbers in self.live.values())
        queued = total - sum(self.asked)
        # in flight: handed to Tune and not finished (running, or waiting for a slot)
        state = f", {running} in flight, {queued} queued" if done < total else ""
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = max(complete, key=lambda t: t.value, default=None)
        # a sequential sweep's students trained ahead of the look (``_ahead``): past the cell's budget
        # until a look grows it, and never read by a look that decides the cell instead
        ahead = sum(t.number >= self.budgets[index] for t in trials if t.state.is_finished())
        count = f"{self.finished[index] - ahead}/{self.budgets[index]}" + (f" (+{ahead} trained ahead)" if ahead else "")
        best_text = f", best {METRIC} {best.value:.3f} at alpha {best.params['alpha']:.2f}" if best else ""
        cell = self.cells[index]
        return (f"[{done}/{total} trials{state}, {duration(elapsed)}{left}] {cell.method} f={cell.fraction:g} "
                f"{cell.teacher_arch}->{cell.student_arch} r{cell.replicate}"
                f"{f' noise {cell.label_noise:g}' if cell.label_noise else ''}: {count}"
                f"{best_text}")


class PerCellASHA(FIFOScheduler):
    """ASHA within each cell (see the module docstring)."""

    def __init__(self, *, max_t: int, grace_period: int = 1, reduction_factor: float = 3):
        super().__init__()
        self.options = dict(time_attr="training_iteration", max_t=max_t, grace_period=grace_period,
                            reduction_factor=reduction_factor)
        self._metric, self._mode = METRIC, MODE
        self.by_cell: dict[int, AsyncHyperBandScheduler] = {}

    def set_search_properties(self, metric, mode, **spec) -> bool:
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def _cell(self, trial) -> AsyncHyperBandScheduler:
        index = trial.config["cell_index"]
        if index not in self.by_cell:
            self.by_cell[index] = AsyncHyperBandScheduler(metric=self._metric, mode=self._mode, **self.options)
        return self.by_cell[index]

    def on_trial_add(self, controller, trial) -> None:
        self._cell(trial).on_trial_add(controller, trial)

    def on_trial_result(self, controller, trial, result):
        decision = self._cell(trial).on_trial_result(controller, trial, result)
        baseline = any(member["alpha"] == 0 for member in trial.config["members"])
        return CONTINUE if baseline else decision

    def on_trial_complete(self, controller, trial, result) -> None:
        self._cell(trial).on_trial_complete(controller, trial, result)

    def on_trial_remove(self, controller, trial) -> None:
        self._cell(trial).on_trial_remove(controller, trial)

    def on_trial_error(self, controller, trial) -> None:
        self._cell(trial).on_trial_error(controller, trial)
