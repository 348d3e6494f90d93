"""Worker processes for the analysis's simulations: the direction test's calibrations and the leans of
the replicates (``analysis.pooled.null_statistic``) fit dozens of simulated sweeps each, one posterior
at a time, on one core; a report with many of them spends most of its time there (the
self-distillation study's analysis: 23 of 28 s). Each simulated sweep's fit is independent of the
others, so ``map_in_workers`` hands contiguous blocks of them to worker processes and collects the
answers in order. The parent draws every simulated sweep in order before any is handed out, so a
report's numbers are bit for bit the same at any number of jobs (``tests/test_analysis.py``). On 2
cores that study's analysis takes 0.67x the time of one process (``bench/bench_analysis.py``; the
rest of the analysis, about 45 %, stays on one core).

How many: ``set_jobs`` (``python -m analysis.report --jobs``); by default every core this process may
use. A worker process of any pool (this module's, the planner's, ``bench/``'s) runs its own
simulations in place, so pools never nest, and so does the sweep's driver, whose machine's cores
belong to the sweep's trials (``sweep.run``).

Why plain subprocesses (``analysis.workers.serve``, pickled tasks over their stdin and stdout)
rather than ``multiprocessing``: its fork can copy a lock that another thread of this process held
(an in-process Ray's, in a notebook or a test session) and hang, and its forkserver and spawn import
the caller's main script again in every worker, running a script without an ``if __name__ ==
"__main__"`` guard a second time. A worker here imports only what the tasks name. Each worker's BLAS
runs on one thread: two workers each starting a thread per core oversubscribed the cores and were
slower than one process (28.6 s against 25.8 s on that study's analysis).
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from typing import Callable, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

WORKER_FLAG = "KDSWEEP_ANALYSIS_WORKER"  # set in a worker's environment: its own simulations run in place
_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_jobs: int | None = None  # None: every usable core
_workers: list[subprocess.Popen] = []
_lock = threading.Lock()  # a live report's thread and the main thread may both ask for the workers


class WorkerLost(RuntimeError):
    """A worker process ended before it answered (killed, or out of memory)."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_jobs(jobs: int | None) -> None:
    """Worker processes for the simulations from now on (1: in this process; None: every usable core)."""
    global _jobs
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    _jobs = jobs  # workers already started stay for a later call that wants them


@contextmanager
def jobs_set_to(jobs: int | None):
    """``set_jobs(jobs)`` inside the block, the setting before it after."""
    before = _jobs
    set_jobs(jobs)
    try:
        yield
    finally:
        set_jobs(before)


def jobs() -> int:
    if os.environ.get(WORKER_FLAG) or _in_multiprocessing_worker():
        return 1  # a worker of some pool: the cores are taken
    return _jobs if _jobs is not None else usable_cores()


def _in_multiprocessing_worker() -> bool:
    multiprocessing = sys.modules.get("multiprocessing")  # never imported: not a worker of its pools
    return multiprocessing is not None and multiprocessing.parent_process() is not None


def map_in_workers(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``[function(item) for item in items]``, in worker processes when there are more jobs and items
    than one (``function`` and the items must pickle; an exception raised in a worker is raised here).
    When a worker is lost the workers are ended and the items run here: the same numbers."""
    count = min(jobs(), len(items))
    if count > 1:
        with _lock:
            try:
                return _map(_started(count), function, items)
            except WorkerLost:
                _end_workers(kill=True)
            except BaseException:
                # a task that does not pickle, a worker's error or a Ctrl-C: answers may be left unread in
                # the pipes, which the next call would take for its own; fresh workers start next time
                _end_workers(kill=True)
                raise
    return [function(item) for item in items]


def blocks(count: int, parts: int) -> list[range]:
    """``range(count)`` cut into at most ``parts`` contiguous blocks of nearly equal size."""
    parts = max(1, min(parts, count))
    edges = [round(i * count / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in zip(edges, edges[1:])]


def _started(count: int) -> list[subprocess.Popen]:
    """``count`` running workers (kept between calls: a worker's start, about a second of imports, is paid once)."""
    _workers[:] = [worker for worker in _workers if worker.poll() is None]
    while len(_workers) < count:
        worker = subprocess.Popen([sys.executable, "-c", "from analysis.workers import serve; serve()"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env={**os.environ, **_ONE_THREAD, WORKER_FLAG: "1"})
        _send(worker, list(sys.path))  # the worker imports what this process would (a test's module too)
        _workers.append(worker)
    return _workers[:count]


def _map(workers: list[subprocess.Popen], function, items) -> list:
    """Item i to worker i mod len(workers), one at a time per worker, the answers read in order; the
    first error a worker raised is raised here."""
    answers = []
    for i, item in enumerate(items[:len(workers)]):
        _send(workers[i], (function, item))
    for i in range(len(items)):
        worker = workers[i % len(workers)]
        ok, value = _receive(worker)
        if not ok:
            raise value
        answers.append(value)
        if i + len(workers) < len(items):
            _send(worker, (function, items[i + len(workers)]))
    return answers


def _send(worker: subprocess.Popen, message) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)  # whole or not at all: no half a task sent
    try:
        worker.stdin.write(payload)
        worker.stdin.flush()
    except (BrokenPipeError, OSError) as error:
        raise WorkerLost(f"analysis worker {worker.pid} ended") from error


def _receive(worker: subprocess.Popen) -> tuple[bool, object]:
    try:
        return pickle.load(worker.stdout)
    except Exception as error:  # noqa: BLE001 -- an end of file, or an answer this process cannot read
        raise WorkerLost(f"analysis worker {worker.pid} ended (exit code {worker.poll()})") from error


@atexit.register
def _end_workers(kill: bool = False) -> None:
    """End every worker: at exit by closing its stdin (an idle worker ends at its end), or ``kill``
    (one may be in the middle of a task whose answer nobody will read)."""
    for worker in _workers:
        try:
            if kill:
                worker.kill()
            worker.stdin.close()
            worker.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            worker.kill()
    _workers.clear()


def serve() -> None:
    """A worker's loop: (function, item) in, (True, result) or (False, exception) out, until stdin ends."""
    # a Ctrl-C reaches the whole process group: the caller stops, and a worker ends when its tasks do
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(1), "wb")  # the answers' channel: what the tasks print goes to stderr instead
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    tasks = sys.stdin.buffer
    try:
        sys.path[:] = pickle.load(tasks)
        while True:
            function, item = pickle.load(tasks)
            try:
                answer = (True, function(item))
            except Exception as error:  # noqa: BLE001 -- raised again in the caller
                answer = (False, error)
            try:
                payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:  # noqa: BLE001 -- an answer that does not pickle
                payload = pickle.dumps((False, RuntimeError(f"an analysis worker's answer did not pickle: {error!r}")))
            answers.write(payload)
            answers.flush()
    except EOFError:  # the caller closed the tasks: done
        return
