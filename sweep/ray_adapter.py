"""Every Ray call of the project, in one module, so Ray's API churn touches one file.

Driver side: connecting (embedded local Ray or an existing cluster), the object store, stage tasks,
building / restoring / running the Tune experiment. Trial side: reporting metrics with a checkpoint,
reading the checkpoint back, the trial's device and node. Inside trials Tune's own
``ray.tune.report`` / ``get_checkpoint`` / ``Checkpoint`` are used (the ``ray.train.*`` versions are
deprecated inside Tune).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable, Iterable

import ray
import ray._private.ray_constants
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

__all__ = [
    "Searcher", "FIFOScheduler", "TrialScheduler", "AsyncHyperBandScheduler", "FINISHED", "CONTINUE",
    "connect", "shutdown", "put", "run_tasks", "unfit_resources", "cluster_gpus", "build_tuner", "restore_tuner",
    "can_restore", "report", "checkpoint_state", "trial_device", "node_id", "set_trial_threads", "task_cpus", "quiet_trial_logs",
]

FINISHED = Searcher.FINISHED
CONTINUE = TrialScheduler.CONTINUE
CHECKPOINT_FILE = "state.pt"
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a Ray of one node, on 127.0.0.1


class ClusterUnreachableError(ConnectionError):
    """``--address`` names a cluster that cannot be reached."""


# --------------------------------------------------------------------------------------------
# Driver


def connect(address: str | None, *, num_cpus: int | None = None) -> dict:
    """Start an embedded local Ray (``address=None``, bound to 127.0.0.1) or join a cluster."""
    if ray.is_initialized():
        return ray.cluster_resources()
    kwargs: dict[str, Any] = dict(log_to_driver=True, configure_logging=False)
    if address is None:
        # Loopback only: Ray's processes otherwise bind to the machine's routable address, whatever
        # _node_ip_address says. Its children read the environment; this process read the constant
        # when it imported Ray.
        os.environ[LOOPBACK_ENV] = "0"
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
        # "local": always a new instance of our own, never a Ray that happens to run on this machine.
        kwargs.update(address="local", _node_ip_address="127.0.0.1", num_cpus=num_cpus, include_dashboard=False)
    else:
        kwargs["address"] = address
        host = address.split("://")[-1].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost"):
            # A cluster on this machine's loopback: the driver must be reachable there too.
            kwargs["_node_ip_address"] = "127.0.0.1"
        _check_reachable(address)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ClusterUnreachableError(f"cannot reach the Ray cluster at {address!r}: {error}") from None
    return ray.cluster_resources()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after Ray's minutes of retries, when a ``host:port`` address does not
    answer. ``auto`` and ``ray://`` addresses are left to Ray, which answers those quickly."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as error:
        raise ClusterUnreachableError(
            f"cannot reach the Ray cluster at {address!r}: {error}. Is the head node running (`ray status` on it), "
            "and is the address the one `ray start --head` printed?"
        ) from None


def unfit_resources(cpus: float, gpus: float) -> str | None:
    """Why no node of the connected cluster can run a trial asking for ``cpus`` and ``gpus``, or None."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        return None
    largest = ", ".join(f"{n.get('CPU', 0):g} CPU / {n.get('GPU', 0):g} GPU" for n in nodes) or "no nodes"
    return f"a trial asks for {cpus:g} CPU and {gpus:g} GPU, but the nodes have {largest}"


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0))


def put(value: Any):
    return ray.put(value)


def run_tasks(
    fn: Callable, calls: Iterable[dict], *, num_cpus: float, num_gpus: float, on_done: Callable[[Any], None] | None = None
) -> list:
    """Run ``fn(**kwargs)`` for every kwargs as Ray tasks with the given resources, in parallel
    across the cluster; results in call order. ``on_done`` sees each result as it finishes."""
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=2)(fn)
    refs = [remote.remote(**kwargs) for kwargs in calls]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list = [None] * len(refs)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            results[index[ref]] = ray.get(ref)
            if on_done is not None:
                on_done(results[index[ref]])
    return results


def _trainable(fn: Callable, parameters: dict, resources: dict):
    # with_parameters puts every parameter into the object store once; trials get references.
    return tune.with_resources(tune.with_parameters(fn, **parameters), resources)


def _trial_name(trial) -> str:
    config = trial.config
    numbers = [member["optuna_trial"] for member in config.get("members", [])]
    span = f"t{numbers[0]}" + (f"-{numbers[-1]}" if len(numbers) > 1 else "") if numbers else "t"
    return f"{trial.trial_id}-cell{config.get('cell_index')}-{span}"


def _reporter():
    """A trial table that names each trial's cell and alpha (not its whole config)."""
    # Tune's newer console output ignores custom reporters; the classic one takes column choices.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Each epoch checkpoints (num_to_keep=1), which makes Tune snapshot often and warn about it;
    # for small fast trials that is expected.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    return tune.CLIReporter(
        metric_columns={"val_acc": "val_acc", "test_acc": "test_acc", "epoch": "epoch"},
        parameter_columns={"cell/method": "method", "cell/fraction": "f", "cell/teacher_arch": "teacher",
                           "cell/replicate": "replicate"},
        max_report_frequency=30,
        sort_by_metric=False,
    )


def build_tuner(
    fn: Callable,
    *,
    parameters: dict,
    resources: dict,
    searcher: Searcher,
    scheduler: TrialScheduler,
    num_samples: int,
    max_concurrent: int | None,
    metric: str,
    mode: str,
    storage_path: str,
    name: str,
    max_failures: int,
    verbose: int,
):
    return tune.Tuner(
        _trainable(fn, parameters, resources),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent,
            metric=metric,
            mode=mode,
            reuse_actors=False,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=verbose,
            progress_reporter=_reporter(),
        ),
    )


def can_restore(path: str) -> bool:
    return tune.Tuner.can_restore(path)


def restore_tuner(path: str, fn: Callable, *, parameters: dict, resources: dict):
    """Continue an experiment: finished trials are kept, unfinished and errored ones resume from
    their last checkpoint; the searcher's state is restored by Tune."""
    return tune.Tuner.restore(path, trainable=_trainable(fn, parameters, resources), resume_errored=True)


def result_rows(grid) -> list[dict]:
    """One dict per trial: its config, last metrics, error (or None), trial id and Tune's status
    (TERMINATED, ERROR, or PENDING/RUNNING/PAUSED for a run that was interrupted)."""
    rows = []
    # The trials' statuses are not on the public Result objects; the grid's analysis holds them,
    # in the same order as the grid's results.
    trials = grid._experiment_analysis.trials
    for result, trial in zip(grid, trials):
        metrics = dict(result.metrics or {})
        rows.append({
            "config": dict(result.config or {}),
            "metrics": metrics,
            "error": None if result.error is None else f"{type(result.error).__name__}: {result.error}",
            "trial_id": metrics.get("trial_id") or trial.trial_id,
            "tune_status": trial.status,
        })
    return rows


# --------------------------------------------------------------------------------------------
# Trial


def report(metrics: dict, state: dict | None = None) -> None:
    """Report one epoch's metrics, with the training state as the trial's checkpoint."""
    if state is None:
        tune.report(metrics)
        return
    import torch

    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, os.path.join(folder, CHECKPOINT_FILE))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def checkpoint_state() -> dict | None:
    """The training state of this trial's last checkpoint (after a crash or a resume), if any."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    import torch

    with checkpoint.as_directory() as folder:
        return torch.load(os.path.join(folder, CHECKPOINT_FILE), map_location="cpu", weights_only=True)


def trial_device() -> str:
    return "cuda" if ray.get_gpu_ids() else "cpu"


def task_cpus() -> float:
    """CPUs Ray assigned to the running task or actor."""
    return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def quiet_trial_logs() -> None:
    """No "Checkpoint successfully created" line per report from every trial (Ray's INFO log in the
    worker); warnings and errors still reach the driver."""
    import logging

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)


def set_trial_threads(cpus: float) -> None:
    """One torch thread pool per trial sized to its CPUs, so concurrent trials do not oversubscribe."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
