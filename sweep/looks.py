"""A sequential sweep's looks on the driver (``--until-answered``; the rule: ``analysis.sequential``):
the finished students of the running experiment for the searcher's look, and what each look says,
on the console and as a line of ``LOOKS_FILE`` (the report's "Looks" section; a resumed sweep's
searcher carries the same looks in its saved state)."""

from __future__ import annotations

import json
import time

from analysis.sequential import p_text
from contract import FINAL_STATUSES, LOOKS_FILE
from contract.storage import read_text, write_bytes
from sweep.console import say


class SequentialRun:
    """What a sequential sweep's searcher (``sweep.searcher.CellSearcher``) needs of this driver."""

    def __init__(self, exp_dir: str, trials_callback, teacher_metrics: dict, *, scheduler_stops: bool,
                 budget_hours: float | None, most_trials: int, trial_slots=None):
        self.exp_dir, self.callback, self.teacher_metrics = exp_dir, trials_callback, teacher_metrics
        self.scheduler_stops, self.budget_hours, self.most_trials = scheduler_stops, budget_hours, most_trials
        self._trial_slots = trial_slots  # () -> the trials the cluster runs at once now (None: no overlap)
        self._slots, self._slots_at = 0, -1e9

    def slots(self) -> int:
        """The cohorts the cluster runs at once now (an autoscaler changes it), asked at most every 10 s."""
        if self._trial_slots is None:
            return 0
        if time.monotonic() - self._slots_at > 10:
            self._slots, self._slots_at = int(self._trial_slots()), time.monotonic()
        return self._slots

    def finished(self):
        """The experiment's finished students as a tidy table (``analysis.results.tidy``), or None before
        Tune has shown this driver its trials."""
        from analysis.results import tidy
        from sweep import ray_adapter
        from sweep.results import table_from_records

        if self.callback.trials is None:
            return None
        frame = table_from_records(ray_adapter.cohort_records(self.callback.trials), self.teacher_metrics,
                                   scheduler_stops=self.scheduler_stops)
        frame = frame[frame["status"].isin(FINAL_STATUSES)]
        return tidy(frame.reset_index(drop=True)) if len(frame) else None

    def after_look(self, looks, added: int, cells: int) -> None:
        """The look's lines on the console, and its line of ``LOOKS_FILE``."""
        entry = looks.history[-1]
        decided = [f"{q}: {looks.decided[q].answer} (p {p_text(looks.decided[q].p)} <= {looks.decided[q].level:.2g})"
                   for q in entry["decided"]]
        say(f"look {entry['look']} of at most {looks.design.looks} ({entry['students']} students; open questions tested "
            f"at nominal level {entry['level']:.2g}, a direction at its share of it): "
            + ("decided " + "; ".join(decided) if decided else "nothing newly decided"))
        if added:
            say(f"  {len(entry['open'])} question{'s' * (len(entry['open']) != 1)} open ({'; '.join(entry['open'])}): "
                f"the next round trains {added} students in {cells} cells")
        else:
            say(f"  the sweep stops: {looks.stopped}, at {entry['students']} of at most {self.most_trials} students")
        path = f"{self.exp_dir}/{LOOKS_FILE}"
        # a look taken again by a resumed driver (its saved state came from before it) adds its line again
        write_bytes(path, ((read_text(path) or "") + json.dumps(looks.to_dict()) + "\n").encode())


def read_looks(exp_dir: str) -> dict | None:
    """The looks of a sequential sweep so far (its last line), or None."""
    from analysis.results import last_looks

    return last_looks(read_text(f"{exp_dir}/{LOOKS_FILE}"))

