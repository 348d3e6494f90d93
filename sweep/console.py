"""What a person reads while a sweep runs: progress lines on the console and in ``sweep.log``.

Every line the sweep prints goes through the ``sweep`` logger, so the console and the experiment's
log file get the same lines. Ray's per-trial output stays off unless ``--verbose``.

``StageProgress`` turns the events of a stage's tasks (a teacher's epochs, finished scoring runs)
into one line at a time: at most one per ``every_s`` seconds while tasks run, and one per finished
task, each with the elapsed time and an estimate of what remains.
"""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("sweep")
LOG_FILE = "sweep.log"


class _CurrentStdout(logging.Handler):
    """Writes to whatever ``sys.stdout`` is at the time (a test's capture, a redirected stream)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 -- logging never raises into the sweep
            self.handleError(record)


def setup() -> None:
    """Lines of the ``sweep`` logger (the progress of every stage) to the console, once."""
    if not any(isinstance(h, _CurrentStdout) for h in log.handlers):
        handler = _CurrentStdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def log_to(experiment_dir: str) -> str | None:
    """Also append every line to ``EXPERIMENT/sweep.log`` (a local experiment directory; for a remote
    URI the console is the record). Returns the log's path, or None."""
    close_log()
    if "://" in experiment_dir and not experiment_dir.startswith("file://"):
        return None
    folder = experiment_dir.removeprefix("file://")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOG_FILE)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    return path


def close_log() -> None:
    for handler in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
        log.removeHandler(handler)
        handler.close()


def say(message: str) -> None:
    log.info("%s", message)


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class StageProgress:
    """The progress line of one stage of ``total`` tasks (teachers, scoring runs).

    ``event(dict)`` takes what a task sends while it runs: ``{"task": name, "epoch": e, "epochs": E,
    "val_acc": a}``; ``done(name)`` marks a task finished. The estimate of what remains uses the
    running tasks' pace per epoch while no task has finished, then the rate of finished tasks."""

    def __init__(self, stage: str, total: int, *, every_s: float = 15.0, clock=time.monotonic):
        self.stage, self.total, self.every_s, self.clock = stage, total, every_s, clock
        self.started = clock()
        self.finished = 0
        self.epochs: dict[str, dict] = {}  # task name -> its last epoch event
        self.first: dict[str, tuple[float, int]] = {}  # task name -> (time, epoch) of its first event
        self.last_line = -float("inf")

    def event(self, event: dict) -> None:
        task = str(event.get("task"))
        self.first.setdefault(task, (self.clock(), event.get("epoch", 0)))
        self.epochs[task] = event
        if self.clock() - self.last_line >= self.every_s:
            self._print()

    def done(self, task: str | None = None, detail: str = "") -> None:
        self.finished += 1
        if task is not None:
            self.epochs.pop(task, None)
        self._print(f"{task} done{': ' + detail if detail else ''}" if task else detail)

    def _remaining_s(self, elapsed: float) -> float | None:
        if self.finished >= self.total:
            return 0.0
        if self.finished:
            return elapsed / self.finished * (self.total - self.finished)
        # Each running task's pace since its first epoch (so a worker's start-up does not count as
        # training); tasks run side by side, so the slowest sets the estimate.
        now, estimates = self.clock(), []
        for task, e in self.epochs.items():
            since, first_epoch = self.first[task]
            if e.get("epochs") and e["epoch"] > first_epoch:
                estimates.append((now - since) / (e["epoch"] - first_epoch) * (e["epochs"] - e["epoch"]))
        return max(estimates) if estimates else None

    def line(self, news: str = "") -> str:
        elapsed = self.clock() - self.started
        remaining = self._remaining_s(elapsed)
        left = "" if remaining is None or self.finished >= self.total else f", ~{duration(remaining)} left"
        running = "; ".join(
            f"{name}: epoch {e['epoch']}/{e['epochs']}" + (f", val acc {e['val_acc']:.3f}" if e.get("val_acc") is not None else "")
            for name, e in sorted(self.epochs.items())
        )
        parts = [part for part in (news, running) if part]
        return (f"[{self.stage} {self.finished}/{self.total}, {duration(elapsed)}{left}]"
                + (" " + " | ".join(parts) if parts else ""))

    def _print(self, news: str = "") -> None:
        self.last_line = self.clock()
        say(self.line(news))
