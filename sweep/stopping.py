"""How a running sweep stops: on a signal, on a nearly full disk, when its directory is deleted.

Every stop goes the way Ctrl-C goes: Tune ends the running trials, saves its state, and the driver
writes ``results.csv`` and the report of what finished and prints the ``--resume`` command.

- ``StopSignals``: SIGTERM (``kill``, systemd, a batch scheduler, ``ray job stop``) and SIGHUP (a
  closed terminal) are handled as SIGINT; a second signal stops at once (Python's KeyboardInterrupt,
  after which nothing more is written). The exit status is 128 + the signal's number: 130 for
  SIGINT, 143 for SIGTERM, 129 for SIGHUP.
  A signal while the driver ends Ray and releases its lock, the last second of a sweep, is noted
  and changes nothing (``finishing``).
- ``DiskWatch``: a thread that looks at the experiment directory every few seconds. When it is gone
  (deleted under the running sweep) or its file system has less free space than the sweep still
  needs to write its state, it stops the sweep the same way, with one line saying why.
- ``RayLossWatch``: a thread that looks ten times a second whether the embedded Ray's own processes
  have ended under the sweep (a signal to every process of the job, the out-of-memory killer). Tune
  can then neither end the trials nor save its state, and the driver's calls into Ray would wait a
  minute for the lost GCS and end the process without a word, or, once the raylet is gone, Ray's
  core worker ends it at once (status 1): the driver stops from what is on disk instead
  (``sweep.run``). On a stop signal the driver first holds still (``RayLossWatch.hold``, at most two
  seconds) while the watch looks whether the signal reached Ray too, so that no Ray call of its own
  runs into the dying raylet.
- ``space_needed``: what a sweep will write, from its plan, for the free-space check before compute.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

MB = 1 << 20
# How long the driver holds still on a stop signal for the watch to see whether Ray's processes got it
# too (RayLossWatch.hold): they end within milliseconds of it, the watch looks every 0.1 s.
HOLD_ON_SIGNAL_S = 2.0


class StopSignals:
    """SIGTERM and SIGHUP behave as SIGINT (Ctrl-C) for the rest of the process."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)

    def __init__(self):
        self.received: int | None = None  # the first stop signal other than SIGINT, if any
        self.received_at: float | None = None  # when its handler ran (time.monotonic)
        # called in the handler of that first signal, before the sweep stops (RayLossWatch.hold)
        self.on_first_signal: Callable[[], None] | None = None
        self.reason: str | None = None  # why the sweep stopped itself (DiskWatch), if it did
        self.ending = False  # the driver is ending Ray and releasing its lock: a signal is only noted
        # the process's own handlers before the sweep (and before Ray's), put back by ``restore``: a
        # notebook or a test that runs a sweep keeps its Ctrl-C and SIGTERM afterwards
        self.before = ({signum: signal.getsignal(signum) for signum in (*self.SIGNALS, signal.SIGINT)}
                       if threading.current_thread() is threading.main_thread() else {})

    def install(self) -> "StopSignals":
        """Handle SIGTERM and SIGHUP (main thread only; Ray's own handlers, installed when the driver
        connects, are replaced: call this after connecting)."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                signal.signal(signum, self._handle)
        return self

    def finishing(self) -> None:
        """From now on the driver only ends Ray and releases its lock, which a stop signal, Ctrl-C
        included, must not interrupt (a KeyboardInterrupt there would leave the lock behind): note the
        signal, go on."""
        self.ending = True
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._handle)

    def restore(self) -> None:
        """The handlers the process had before the sweep (its last step, after the lock is released)."""
        for signum, handler in self.before.items():
            if handler is not None:
                signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        first = self.received is None and signum != signal.SIGINT
        if first:
            self.received, self.received_at = signum, time.monotonic()
        if self.ending:
            return
        if first and self.on_first_signal is not None:
            self.on_first_signal()
        # Whatever Ctrl-C does now: Tune's graceful stop while trials run (it puts the previous handler
        # back, so a second signal lands below), else a KeyboardInterrupt.
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    def stop(self, reason: str) -> None:
        """Stop the sweep from any thread, as Ctrl-C would, for ``reason``."""
        if self.reason is None:
            self.reason = reason
        os.kill(os.getpid(), signal.SIGINT)

    def exit_code(self) -> int:
        """The exit status of a sweep that stopped before it finished."""
        if self.reason is not None:
            return 1
        return 128 + (self.received or signal.SIGINT)

    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "SIGINT"


def free_bytes(path: str) -> int | None:
    """Free bytes on the file system of a local ``path`` (its nearest existing folder); None for a
    remote URI, whose space this machine cannot see."""
    local = _local(path)
    if local is None:
        return None
    while local and not os.path.exists(local):
        parent = os.path.dirname(local.rstrip("/"))
        if parent == local:
            break
        local = parent
    try:
        return shutil.disk_usage(local or ".").free
    except OSError:
        return None


def _local(path: str) -> str | None:
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else os.path.abspath(path)


def _device(path: str) -> int | None:
    local = _local(path)
    while local and not os.path.exists(local):
        local = os.path.dirname(local.rstrip("/"))
    try:
        return os.stat(local or ".").st_dev
    except OSError:
        return None


@dataclass
class SpaceNeed:
    """What a sweep leaves on disk, in bytes, per location (the experiment directory, the artifact
    cache), and the headroom it needs on the experiment's disk while it runs (``reserve``: the next
    checkpoints before the ones they replace are deleted, results and report written beside the old
    ones before a rename). ``DiskWatch`` stops a sweep whose disk has less than ``reserve`` free, so
    the check before compute asks for both: a sweep that passes it is never stopped by the watch
    unless something else fills the disk."""

    by_location: dict[str, int] = field(default_factory=dict)
    reserve: int = 0
    reserve_location: str | None = None

    def check(self) -> None:
        """Raise ``ValueError`` when a file system cannot hold what the sweep will write there
        (locations on one file system are added up)."""
        devices: dict[int | None, list[str]] = {}
        for location in self.by_location:
            devices.setdefault(_device(location), []).append(location)
        for device, locations in devices.items():
            free = free_bytes(locations[0])
            if free is None:
                continue  # object storage: nothing to check from here
            need = sum(self.by_location[loc] for loc in locations)
            need += self.reserve if self.reserve_location in locations else 0
            if free < need:
                raise ValueError((
                    f"not enough free disk space: this sweep writes about {_mb(need)} to {' and '.join(locations)} "
                    f"(checkpoints, artifacts, results), and {_mb(free)} is free there. Free some space, or put "
                    "--storage / --artifacts on a larger disk"))


def _mb(n: int) -> str:
    return f"{n / MB:,.0f} MB" if n >= 10 * MB else f"{n / MB:.1f} MB"


def space_needed(plan, *, experiment_dir: str, artifacts_dir: str, teachers_to_train: int, score_tables_to_compute: int,
                 num_train: int, num_classes: int, in_channels: int, slots: int) -> SpaceNeed:
    """An upper estimate of what ``plan`` leaves on disk, from the sizes of its models: every cohort keeps its
    last checkpoint (each member's weights and SGD momentum), Tune's logs, ``results.csv`` and the
    cohorts' own rows, the Optuna journal and the report; the artifact cache gets the teachers and score tables not yet in it.
    Each figure has a margin of 50 %: it is a floor for the check, not an accounting."""
    from sweep.ray_adapter.tuner import KEPT_CHECKPOINTS
    from sweep.trial import REPORTS_PER_TRIAL
    from trainables.models import build_model

    def params(arch: str) -> int:
        return sum(p.numel() for p in build_model(arch, num_classes, in_channels).parameters())

    per_student = max(params(arch) for arch in plan.students) * 4 * 2 + 64 * 1024  # float32 weights + momentum
    per_teacher = max(params(arch) for arch in plan.teachers) * 4 + 256 * 1024
    cohort_checkpoint = per_student * plan.cohort_size * KEPT_CHECKPOINTS  # a trial keeps its last few
    tune_logs = 64 * 1024 + REPORTS_PER_TRIAL * 8 * 1024  # result.json, progress.csv, params per trial
    report = 12 * MB  # report.html (plotly inlined) and its tables, written twice (a temporary file, then renamed)
    # results.csv (and its temporary copy), the cohorts' own rows (cohorts/*.csv) and the journal's records
    results = plan.num_trials * 4 * 1024
    experiment = plan.num_cohorts * (cohort_checkpoint + tune_logs) + results + report + 4 * MB
    artifacts = teachers_to_train * per_teacher + score_tables_to_compute * (num_train * 16 * (plan.score_seeds + 1) + 64 * 1024)
    margin = 1.5
    need = SpaceNeed(reserve=int(margin * (2 * slots * cohort_checkpoint + results + report + 4 * MB)),
                     reserve_location=experiment_dir)
    need.by_location[experiment_dir] = int(margin * experiment)
    need.by_location[artifacts_dir] = need.by_location.get(artifacts_dir, 0) + int(margin * artifacts)
    return need


class DiskWatch:
    """Stops the sweep (``StopSignals.stop``) when the experiment directory disappears or its file
    system has less than ``reserve`` bytes free, looking every ``every_s`` seconds."""

    def __init__(self, experiment_dir: str, stops: StopSignals, *, reserve: int, every_s: float = 1.0):
        self.experiment_dir, self.stops, self.reserve, self.every_s = experiment_dir, stops, reserve, every_s
        self.local = _local(experiment_dir)
        self.deleted = False
        self._identity = None
        self._done = threading.Event()
        self._thread = None

    def start(self) -> "DiskWatch":
        if self.local is not None:  # object storage: nothing this machine can watch
            self._identity = self._stat()
            self._thread = threading.Thread(target=self._watch, name="disk-watch", daemon=True)
            self._thread.start()
        return self

    def _stat(self) -> tuple[int, int] | None:
        try:
            found = os.stat(self.local)
        except OSError:
            return None
        return found.st_dev, found.st_ino

    def gone(self) -> bool:
        """The experiment directory is not the one the sweep started in: deleted, or deleted and made
        again (Tune recreates the folders it writes to), or replaced."""
        return self._identity is not None and self._stat() != self._identity

    def low_on_space(self) -> bool:
        free = None if self.local is None else free_bytes(self.local)
        return free is not None and free < self.reserve

    def failing(self) -> bool:
        """Whether writes into the experiment directory fail for a reason this watch reports itself."""
        return self.gone() or self.low_on_space()

    def remove_recreated(self) -> None:
        """After a deletion: remove what the sweep's own writers (Tune) made again at the deleted path,
        unless it has become another experiment (it holds a ``sweep.json``)."""
        from contract import SWEEP_FILE

        if self.local and os.path.isdir(self.local) and not os.path.exists(os.path.join(self.local, SWEEP_FILE)):
            shutil.rmtree(self.local, ignore_errors=True)

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._done.wait(self.every_s):
            if self.gone():
                self.deleted = True
                self.stops.stop(f"the experiment directory {self.experiment_dir} was deleted while the sweep ran")
                return
            if self.low_on_space():
                free = free_bytes(self.local)
                self.stops.stop(f"the disk of {self.experiment_dir} is nearly full ({_mb(free)} free; the sweep keeps "
                                f"{_mb(self.reserve)} for its checkpoints, results and report)")
                return


class RayLossWatch:
    """Calls ``on_loss(names)`` once, on its own thread, when the sweep's Ray has lost processes it
    cannot go on without: ``probe()``, looked at every ``every_s`` seconds, names the processes that
    have ended (``ray_adapter.embedded_ray_ended``). Any of ``core`` ends the sweep. Once the driver
    has had a stop signal (``signalled()``: when its handler ran, ``time.monotonic``), so does any
    process seen ended since, or in the ``recent_s`` seconds before: the same signal reached Ray, whose
    core follows within seconds, and its dashboard and log monitor end within milliseconds, often
    before the driver's own handler runs. One that ended earlier (a dashboard that crashed) does not.
    ``on_loss`` ends the process: the main thread is then inside a Ray call that does not return, or
    held in the signal handler (``hold``)."""

    def __init__(self, probe: Callable[[], list[str]], on_loss: Callable[[list[str]], None], *,
                 core: tuple[str, ...], signalled: Callable[[], float | None], every_s: float = 0.1,
                 recent_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.probe, self.on_loss, self.core, self.signalled = probe, on_loss, core, signalled
        self.every_s, self.recent_s, self.clock = every_s, recent_s, clock
        self._seen_ended: dict[str, float] = {}  # each ended process, and when the watch first saw it so
        self._done = threading.Event()
        self._lock = threading.Lock()  # the loss is acted on, or the watch closed: never both
        self._acting = threading.Event()
        self._thread = None

    def lost(self) -> list[str]:
        """The processes whose end stops the sweep now (empty while Ray can go on)."""
        now = self.clock()
        for name in self.probe():
            self._seen_ended.setdefault(name, now)
        ended = set(self._seen_ended)
        signalled_at = self.signalled()
        if signalled_at is None:
            return sorted(ended & set(self.core))
        return sorted({name for name, seen in self._seen_ended.items() if seen >= signalled_at - self.recent_s}
                      | (ended & set(self.core)))

    def start(self) -> "RayLossWatch":
        self._thread = threading.Thread(target=self._watch, name="ray-watch", daemon=True)
        self._thread.start()
        return self

    def hold(self, window_s: float) -> bool:
        """In the driver's stop-signal handler (the main thread): wait up to ``window_s`` seconds for
        the watch to see Ray's processes end. A signal sent to every process of the job reaches the
        dashboard and the log monitor too, which end within milliseconds; a Ray call of the driver's
        own (Tune ending its trials) would meanwhile run into the dying raylet, and Ray's core worker
        then ends the process at once with status 1, before the watch has written anything. Held
        here, the main thread makes no Ray call while the watch stops the sweep from disk, which ends
        the process. True when the watch acted (its ``on_loss`` returned: only in a test); False
        after the window, when the signal reached the driver alone: the sweep then stops as on Ctrl-C."""
        if self._thread is None or self._done.is_set():
            return False
        if self._acting.wait(window_s):
            self._thread.join()
            return True
        return False

    def close(self) -> None:
        """Stop watching: before the driver ends Ray itself, or prints its own stop line. A loss being
        acted on is waited for (it ends the process)."""
        with self._lock:
            self._done.set()
            acting = self._acting.is_set()
        if self._thread is not None:
            self._thread.join(timeout=None if acting else 5)

    def _watch(self) -> None:
        while not self._done.wait(self.every_s):
            ended = self.lost()
            if not ended:
                continue
            with self._lock:
                if self._done.is_set():
                    return
                self._acting.set()
            self.on_loss(ended)
            return
