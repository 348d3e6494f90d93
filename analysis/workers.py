"""Worker processes for the analysis's simulations: the direction test's calibrations and the leans of
the replicates (``analysis.pooled.null_statistic``) fit dozens of simulated sweeps each, one posterior
at a time, on one core; a report with many of them spends most of its time there (the
self-distillation study's analysis: 23 of 28 s). Each simulated sweep's fit is independent of the
others, so ``map_in_workers`` hands contiguous blocks of them to worker processes and collects the
answers in order. The parent draws every simulated sweep in order before any is handed out, so a
report's numbers are bit for bit the same at any number of jobs (``tests/test_analysis.py``). On 2
cores that study's analysis takes 0.74x the time of one process (``bench/bench_analysis.py``; the
rest of the analysis, about 45 %, stays on one core).

How many: ``set_jobs`` (``python -m analysis.report --jobs``); by default every core this process may
use. A process that is itself a worker of a pool (the planner's simulations, ``bench/``'s) runs its
own simulations in place, so pools never nest, and so does the sweep's driver, whose machine's cores
belong to the sweep's trials (``sweep.run``).

Why forkserver: a fork of a process that runs threads (an in-process Ray's, in the driver or a
notebook) can inherit a lock another thread held and hang; forkserver forks every worker from a
fresh, single-threaded server that has imported this package's numerics. Each worker's BLAS runs on
one thread: two workers each starting a thread per core oversubscribed the cores and were slower
than one process (28.6 s against 25.8 s on the self-distillation study's analysis).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_ONE_THREAD = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_jobs: int | None = None  # None: every usable core
_pool: ProcessPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()  # a live report's thread and the main thread may both ask for the pool


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
    _jobs = jobs  # a pool already started stays for a later call that wants it


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
    if multiprocessing.parent_process() is not None:
        return 1  # a worker of someone's pool: its cores are taken
    return _jobs if _jobs is not None else usable_cores()


def map_in_workers(function: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``[function(item) for item in items]``, in worker processes when there are more jobs and items
    than one (``function`` and the items must pickle). A pool that breaks (a worker killed) is dropped
    and the items run here: the same numbers."""
    workers = min(jobs(), len(items))
    if workers > 1:
        try:
            return list(_pool_of(workers).map(function, items))
        except BrokenProcessPool:
            _shut_down()
    return [function(item) for item in items]


def blocks(count: int, parts: int) -> list[range]:
    """``range(count)`` cut into at most ``parts`` contiguous blocks of nearly equal size."""
    parts = max(1, min(parts, count))
    edges = [round(i * count / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in zip(edges, edges[1:])]


@contextmanager
def _one_blas_thread():
    saved = {name: os.environ.get(name) for name in _ONE_THREAD}
    os.environ.update({name: "1" for name in _ONE_THREAD})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _pool_of(workers: int) -> ProcessPoolExecutor:
    """The process's pool (kept between calls: a worker's start, about a second, is paid once)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            _shut_down()
            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(["analysis.pooled"])
            else:  # Windows: every worker a fresh interpreter
                context = multiprocessing.get_context("spawn")
            # the server, and every worker forked from it, takes its environment when it starts: here
            with _one_blas_thread():
                _pool = ProcessPoolExecutor(workers, mp_context=context)
                _pool.submit(int).result()
            _pool_size = workers
        return _pool


def _shut_down() -> None:
    global _pool, _pool_size
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
    _pool, _pool_size = None, 0
