"""The live results: ``results.csv`` and the report rewritten while the sweep runs."""

from __future__ import annotations

import json
import time

from contract import FINAL_STATUSES, SWEEP_FILE
from contract.storage import read_text
from sweep.console import say
from sweep.plan import SweepPlan


class LiveResults:
    """``results.csv`` and the report, rewritten while the sweep runs: when a cell has finished all
    its trials, at most every ``every_s`` seconds (the first finished cell at once). They hold the
    finished trials only and the report says "in progress"; the final ones replace them at the end.
    Written on a thread of their own, so Tune's loop does not wait for a report."""

    def __init__(self, exp_dir: str, plan: SweepPlan, teacher_metrics: dict, *, every_s: float, scheduler_stops: bool):
        self.exp_dir, self.every_s, self.scheduler_stops = exp_dir, every_s, scheduler_stops
        self.trials_per_cell, self.num_trials = plan.trials_per_cell, plan.most_trials
        self.teacher_metrics = teacher_metrics
        self.cells_written, self.last_write = 0, None
        self.thread = None

    def on_trial_end(self, records: list) -> None:
        from contract import CELL_COLUMNS
        from sweep.results import table_from_records

        frame = table_from_records(records, self.teacher_metrics, scheduler_stops=self.scheduler_stops)
        finished = frame[frame["status"].isin(FINAL_STATUSES)]
        if finished.empty:
            return
        cells_done = int((finished.groupby(CELL_COLUMNS).size() >= self.trials_per_cell).sum())
        now = time.monotonic()
        if cells_done <= self.cells_written or len(finished) >= self.num_trials:
            return  # no newly finished cell, or the last one: the final results follow at once
        if self.last_write is not None and now - self.last_write < self.every_s:
            return
        if self.thread is not None and self.thread.is_alive():
            return  # the next finished cell tries again
        self.cells_written, self.last_write = cells_done, now
        import threading

        self.thread = threading.Thread(target=self._write, args=(finished.reset_index(drop=True),), daemon=True)
        self.thread.start()

    def _write(self, finished) -> None:
        from analysis.report import analyse, default_out, write_report
        from analysis.results import experiment_from_table
        from sweep.looks import read_looks
        from sweep.results import write_table

        try:
            write_table(finished, self.exp_dir)
            record = json.loads(read_text(f"{self.exp_dir}/{SWEEP_FILE}") or "{}")
            experiment = experiment_from_table(self.exp_dir, finished, record)
            experiment.looks = read_looks(self.exp_dir)  # a sequential sweep's looks so far
            paths = write_report(analyse(experiment), default_out(self.exp_dir))
            say(f"live report ({len(finished)} of {self.num_trials} trials finished): {paths['html']}")
        except Exception as error:  # noqa: BLE001 -- the sweep goes on; the final report follows
            say(f"live report skipped ({type(error).__name__}: {error})")

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
