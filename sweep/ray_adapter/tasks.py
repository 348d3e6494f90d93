"""Stage tasks (teachers, score runs) as Ray tasks: the object store, running tasks in parallel
across the cluster with their progress sent back to the driver, and their CPU share."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import ray

from sweep.ray_adapter.worker import GpuNotUsableError, node_id


def put(value: Any):
    return ray.put(value)


def run_tasks(
    fn: Callable, calls: Iterable[dict], *, num_cpus: float, num_gpus: float, on_done: Callable[[int, Any], None] | None = None,
    progress=None, on_progress: Callable[[dict], None] | None = None, on_node: Callable[[int, str], None] | None = None,
) -> list:
    """Run ``fn(**kwargs)`` for every kwargs as Ray tasks with the given resources, in parallel
    across the cluster; results in call order. ``on_done(i, result)`` sees each result as it
    finishes, after ``on_node(i, node_id)`` heard which node ran it; ``on_progress`` sees what the
    tasks ``send`` to ``progress`` (a ``progress_channel``). A task's ``GpuNotUsableError`` is raised
    here as itself."""
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=2)(_with_node(fn))
    refs = [remote.remote(**kwargs) for kwargs in calls]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list = [None] * len(refs)
    pending = list(refs)

    def drain() -> None:
        if progress is not None and on_progress is not None:
            for event in progress.get_nowait_batch(progress.qsize()):
                on_progress(event)

    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        drain()
        for ref in done:
            try:
                where, results[index[ref]] = ray.get(ref)
            except ray.exceptions.RayTaskError as error:
                if isinstance(error.cause, GpuNotUsableError):
                    raise error.cause from None  # its message says it all; no remote traceback
                raise
            if on_node is not None:
                on_node(index[ref], where)
            if on_done is not None:
                on_done(index[ref], results[index[ref]])
    return results


def _with_node(fn: Callable) -> Callable:
    """``fn`` returning ``(the id of the node it ran on, its result)``, under ``fn``'s name."""
    import functools

    @functools.wraps(fn)
    def on_a_node(**kwargs):
        return node_id(), fn(**kwargs)

    return on_a_node


def progress_channel():
    """A queue that stage tasks ``send`` progress events to and ``run_tasks`` drains on the driver
    (an actor needing no CPU, so it lives on a head that runs no work)."""
    from ray.util.queue import Queue

    return Queue(actor_options={"num_cpus": 0})


def close_channel(channel) -> None:
    if channel is not None:
        channel.shutdown()


def send(channel, event: dict) -> None:
    """A task's progress event to the driver; a lost channel never fails the task."""
    if channel is None:
        return
    try:
        channel.put_nowait(event)
    except Exception:  # noqa: BLE001 -- progress is a courtesy, the task's result is not
        pass


def stage_cpus(tasks: int, at_least: float) -> float:
    """CPUs for each of ``tasks`` stage tasks: the cluster's CPUs shared among them when fewer tasks
    than trial slots run (a lone teacher gets the node's threads, not one trial's), never less than
    a trial's and never more than the largest node has."""
    nodes = [node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node.get("Alive")]
    if tasks <= 0 or not nodes or max(nodes) <= at_least:
        return at_least
    share = sum(nodes) // tasks
    return float(max(at_least, min(share, max(nodes))))

