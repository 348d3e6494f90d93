"""One writer per experiment: a lock file in the experiment directory.

A sweep (new or ``--resume``) takes the lock before any compute and holds it until it ends; a second
writer of the same experiment is refused with one line that names the holder. Readers
(``analysis.report``, the live report) never need it.

The lock is the file ``EXPERIMENT/sweep.lock`` holding its owner's host, pid, process start time,
start time and command line, created exclusively:

- on a local or NFS path with ``O_CREAT | O_EXCL`` (atomic on NFSv3 and later);
- on an object store (``s3://``, ``gs://``) with fsspec's exclusive-create mode ``"xb"``, a
  conditional PUT where the backend has one; a backend without it falls back to check-then-write,
  which two drivers started in the same second can both pass (said in the README).

A lock whose owner ran on this host and is no longer running (a ``kill -9``, a crash, a reboot) is
stale: it is removed with one line saying so, and the lock is taken. A lock held from another host
cannot be checked from here: the message says how to clear it by hand.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass

from contract import LOCK_FILE


class ExperimentLockedError(ValueError):
    """Another sweep holds the experiment's lock."""


@dataclass(frozen=True)
class LockOwner:
    host: str
    pid: int
    process_started: float | None  # the owner process's start time: a reused pid is not the owner
    since: float  # epoch seconds
    command: str

    @classmethod
    def this_process(cls) -> "LockOwner":
        return cls(host=socket.gethostname(), pid=os.getpid(), process_started=_process_started(os.getpid()),
                   since=time.time(), command=" ".join(sys.argv)[:500])

    def is_running(self) -> bool | None:
        """Whether the owner still runs: True or False on this host, None (unknown) on another."""
        if self.host != socket.gethostname():
            return None
        started = _process_started(self.pid)
        if started is None:
            return False
        if not started or self.process_started is None:
            return True  # running, start time unknown: never taken for stale
        return abs(started - self.process_started) < 1.0

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on host {self.host} since {when}"


def _process_started(pid: int) -> float | None:
    """The start time of process ``pid``: None when no such process runs (a zombie included), 0.0
    when it runs but its start time cannot be read."""
    try:
        import psutil  # Ray ships it (importable once Ray is)
    except ImportError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:
        return 0.0


class ExperimentLock:
    """The lock of one experiment directory; ``acquire`` takes it or raises ``ExperimentLockedError``."""

    def __init__(self, experiment_dir: str):
        import fsspec

        self.experiment_dir = experiment_dir.rstrip("/")
        self.path = f"{self.experiment_dir}/{LOCK_FILE}"
        self.fs, self._local = fsspec.core.url_to_fs(self.path)
        self.owner: LockOwner | None = None
        self.cleared: LockOwner | None = None  # a stale lock this process removed, to say so

    def acquire(self) -> "ExperimentLock":
        mine = LockOwner.this_process()
        for _ in range(3):  # a stale lock removed, then taken; a race lost to another remover: look again
            if self._create(json.dumps(asdict(mine)).encode()):
                self.owner = mine
                return self
            holder = self.holder()
            if holder is None:
                raise ExperimentLockedError(
                    f"the experiment's lock file {self.path} cannot be read (another sweep may be starting this "
                    f"moment). If no sweep of this experiment is running, remove {self.path} and run again")
            running = holder.is_running()
            if running is False:
                self._remove_stale(holder)
                self.cleared = holder
                continue
            where = "" if running else (" (on another host: this machine cannot tell whether it still runs)")
            raise ExperimentLockedError(
                f"experiment {self.experiment_dir.rsplit('/', 1)[-1]!r} is being written by another sweep: "
                f"{holder.describe()}{where}. Wait for it to end or stop it; if it is no longer running, remove "
                f"{self.path} and run again")
        raise ExperimentLockedError(f"could not take the lock {self.path}: it keeps changing hands")

    def release(self) -> None:
        """Remove the lock if it is still this process's (never another writer's)."""
        if self.owner is None:
            return
        holder = self.holder()
        if holder is not None and (holder.host, holder.pid, holder.since) == (self.owner.host, self.owner.pid, self.owner.since):
            try:
                self.fs.rm(self._local)
            except FileNotFoundError:
                pass
        self.owner = None

    def holder(self) -> LockOwner | None:
        """The owner written in the lock file; None when there is none or it cannot be read."""
        try:
            with self.fs.open(self._local, "rb") as handle:
                return LockOwner(**json.loads(handle.read().decode()))
        except (FileNotFoundError, ValueError, TypeError, UnicodeDecodeError):
            return None

    def _create(self, data: bytes) -> bool:
        """Create the lock file with ``data`` unless it exists (True when this call created it)."""
        from fsspec.implementations.local import LocalFileSystem

        self.fs.makedirs(self._local.rsplit("/", 1)[0], exist_ok=True)
        if isinstance(self.fs, LocalFileSystem):
            try:
                fd = os.open(self._local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            return True
        try:
            with self.fs.open(self._local, "xb") as handle:  # a conditional create on object stores
                handle.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError, TypeError):  # no exclusive mode: check, then write
            if self.fs.exists(self._local):
                return False
            with self.fs.open(self._local, "wb") as handle:
                handle.write(data)
            return True

    def _remove_stale(self, stale: LockOwner) -> None:
        """Remove the lock file if it still names the stale owner (another process may have cleared
        it and taken the lock in the meantime: that lock is left alone)."""
        if self.holder() != stale:
            return
        try:
            self.fs.rm(self._local)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "ExperimentLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
