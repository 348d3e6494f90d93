"""Trial records (``contract.CohortRecord``) from Tune's live trials and from its results: the only
place that reads Tune's trial objects."""

from __future__ import annotations

from typing import Callable

from ray import tune

from contract import CohortRecord, error_line


def cohort_records(trials) -> list[CohortRecord]:
    """The trial records (``sweep.results``) of Tune's live ``Trial`` objects, while the run goes on."""
    return [CohortRecord(config=dict(trial.config or {}), metrics=dict(trial.last_result or {}),
                        error=(error_line(trial.get_error()) or "error") if trial.status == "ERROR" else None,
                        trial_id=trial.trial_id, tune_status=trial.status)
            for trial in trials]


class TrialsCallback(tune.Callback):
    """Calls ``on_trial_end(records)`` on the driver with every trial's record whenever a trial ends
    (completed or errored): the sweep's live results and report. Whatever it raises is logged, never
    passed to Tune: a live report must not stop a sweep."""

    def __init__(self, on_trial_end: Callable[[list[CohortRecord]], None]):
        self.on_trial_end = on_trial_end
        self.trials = None  # Tune's live trials, from the first step of the run on (a sequential sweep's looks)

    def __getstate__(self):
        # Tune saves its run config with the experiment; the function (and the live state it holds)
        # belongs to this driver only: ``restore_tuner`` installs the resumed driver's own.
        return {"on_trial_end": None, "trials": None}

    def on_step_begin(self, iteration, trials, **info) -> None:
        self.trials = trials

    def _ended(self, trials) -> None:
        if self.on_trial_end is None:
            return
        try:
            self.on_trial_end(cohort_records(trials))
        except Exception:  # noqa: BLE001
            import logging

            logging.getLogger(__name__).exception("the live results update failed (the sweep goes on)")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended(trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trials)


def result_rows(grid) -> list[CohortRecord]:
    """The trial records of a finished (or stopped) run, one per trial."""
    rows = []
    # The trials' statuses are not on the public Result objects; the grid's analysis holds them,
    # in the same order as the grid's results.
    trials = grid._experiment_analysis.trials
    for result, trial in zip(grid, trials):
        metrics = dict(result.metrics or {})
        rows.append(CohortRecord(config=dict(result.config or {}), metrics=metrics, error=error_line(result.error),
                                trial_id=metrics.get("trial_id") or trial.trial_id, tune_status=trial.status))
    return rows

