"""Every Ray call of the project, in one module, so Ray's API churn touches one file.

Driver side: connecting (embedded local Ray or an existing cluster), the object store, stage tasks,
building / restoring / running the Tune experiment. Trial side: reporting metrics with a checkpoint,
reading the checkpoint back, the trial's device and node. Inside trials Tune's own
``ray.tune.report`` / ``get_checkpoint`` / ``Checkpoint`` are used (the ``ray.train.*`` versions are
deprecated inside Tune).
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
from typing import Any, Callable, Iterable

import ray
import ray._private.ray_constants
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator, Searcher

from contract import TrialRecord, error_line

__all__ = [
    "Searcher", "FIFOScheduler", "TrialScheduler", "AsyncHyperBandScheduler", "FINISHED", "CONTINUE",
    "connect", "check_address", "wait_for_killed_driver", "shutdown", "hide_failures_while", "put", "run_tasks", "progress_channel", "close_channel", "send", "stage_cpus", "unfit_resources", "cluster_gpus", "build_tuner", "restore_tuner",
    "can_restore", "trial_records", "TrialsCallback", "report", "checkpoint_state", "trial_device", "node_id", "set_trial_threads", "task_cpus", "trial_id", "quiet_trial_logs",
    "GpuNotUsableError", "gpu_memory_share", "alive_nodes", "trial_slots", "cpu_fallback_from_env", "wait_for_fit",
]

FINISHED = Searcher.FINISHED
CONTINUE = TrialScheduler.CONTINUE
CHECKPOINT_FILE = "state.pt"
KEPT_CHECKPOINTS = 2  # per trial (see build_tuner)
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
        # Token authentication stays on (Ray's default); its notice that it is on is expected on
        # every laptop run and not shown. Its warning that authentication is *off* still is.
        _hide_message("ray._private.authentication.authentication_token_setup", "Token authentication is enabled")
        # "local": always a new instance of our own, never a Ray that happens to run on this machine.
        kwargs.update(address="local", _node_ip_address="127.0.0.1", num_cpus=num_cpus, include_dashboard=False)
    else:
        kwargs["address"] = address
        host = address.split("://")[-1].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost"):
            # A cluster on this machine's loopback (`ray start --head --node-ip-address 127.0.0.1`, a
            # rehearsal of the cluster loop): the driver must be reachable there too, and Ray must not
            # swap 127.0.0.1 for the machine's routable address.
            kwargs["_node_ip_address"] = "127.0.0.1"
            os.environ[LOOPBACK_ENV] = "0"
            ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
            _use_local_token()
        check_address(address)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ClusterUnreachableError(f"cannot reach the Ray cluster at {address!r}: {error}") from None
    return ray.cluster_resources()


def _use_local_token() -> None:
    """Authenticate with this machine's Ray token (``~/.ray/auth_token``) when there is one, as Ray
    does for ``--address auto``: a `ray start` on this machine turned token authentication on with it.
    Ray never sends it to an explicit address; a loopback one is this machine, so the token stays here."""
    from ray._private.authentication import authentication_token_setup as tokens

    _hide_message(tokens.__name__, "Token authentication is enabled")
    tokens.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _hide_message(logger: str, prefix: str) -> None:
    import logging

    class _Hide(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.getMessage()).startswith(prefix)

    target = logging.getLogger(logger)
    if not any(getattr(f, "prefix", None) == prefix for f in target.filters):
        hide = _Hide()
        hide.prefix = prefix
        target.addFilter(hide)


RAY_CLIENT_SCHEME = "ray://"
# The client's half of an HTTP/2 handshake: the connection preface and an empty SETTINGS frame. A
# Ray head's GCS is a gRPC server and answers with a SETTINGS frame of its own; anything else on the
# port (a web server, another service) answers otherwise or not at all.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_HTTP2_SETTINGS = 0x4


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse, in seconds and before any compute, a ``--address`` that cannot be a Ray cluster the
    driver can join (``ClusterUnreachableError``): a Ray Client (``ray://``) address, a ``host:port``
    nothing listens on, or one whose listener does not answer the GCS's gRPC (HTTP/2) handshake.
    ``auto`` and None (an embedded Ray) are left to Ray."""
    if address is None or address == "auto":
        return
    if address.startswith(RAY_CLIENT_SCHEME):
        raise ClusterUnreachableError(
            f"--address {address!r} is a Ray Client address, which a sweep cannot use: Tune's driver must run on the "
            "cluster itself. Run the sweep on the head node with --address auto (`ray exec cluster.yaml "
            "'python -m sweep.run ... --address auto'`, or `ray job submit --address http://HEAD:8265 -- python -m "
            "sweep.run ... --address auto`), or give the GCS address HEAD:6379 from a machine inside the cluster's network")
    if "://" in address or ":" not in address:
        return
    host, port = address.rsplit(":", 1)
    import socket

    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
            connection.settimeout(timeout_s)
            connection.sendall(_HTTP2_PREFACE)
            answer = _receive(connection, 9, timeout_s)
    except (OSError, ValueError) as error:
        raise ClusterUnreachableError(
            f"cannot reach the Ray cluster at {address!r}: {error}. Is the head node running (`ray status` on it), "
            "and is the address the one `ray start --head` printed?"
        ) from None
    if len(answer) < 9 or answer[3] != _HTTP2_SETTINGS:
        heard = answer[:40].decode("ascii", "replace").split("\n")[0].strip() or "nothing"
        raise ClusterUnreachableError(
            f"cannot reach the Ray cluster at {address!r}: something listens there but does not answer as a Ray head "
            f"(no gRPC handshake within {timeout_s:g} s; it answered {heard!r}). Give the GCS address that `ray start "
            "--head` printed (HEAD:6379 by default), not the dashboard's or another service's port"
        )


def _receive(connection, size: int, timeout_s: float) -> bytes:
    """Up to ``size`` bytes, whatever arrives within ``timeout_s`` (a closed or silent peer: fewer)."""
    import socket
    import time

    data, deadline = b"", time.monotonic() + timeout_s
    while len(data) < size and time.monotonic() < deadline:
        try:
            chunk = connection.recv(size - len(data))
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def wait_for_killed_driver(pid: int, timeout_s: float = 60.0, poll_s: float = 0.5) -> int:
    """Wait until the Ray job of a driver that was killed (``pid``, from its stale lock) has no actor
    left alive on the connected cluster; returns how many were alive at first (0: nothing to wait for).

    On a cluster a trial's actor outlives a ``kill -9`` of its driver for a moment, and may still
    write a checkpoint (deleting the one before it) into the experiment the resume is about to
    restore. A resume waits for them, at most ``timeout_s`` seconds."""
    import time

    from ray._private import state

    def alive() -> int:
        count = 0
        for job in state.jobs():
            if job.get("DriverPid") == pid:
                count += len(state.actors(job_id=ray.JobID.from_hex(job["JobID"]), actor_state_name="ALIVE") or {})
        return count

    first = alive()
    deadline = time.monotonic() + timeout_s
    while alive() and time.monotonic() < deadline:
        time.sleep(poll_s)
    return first


def alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def trial_slots(cpus: float, gpus: float) -> int:
    """How many trials asking for ``cpus`` and ``gpus`` the alive nodes can run at once."""
    total = 0
    for node in (n["Resources"] for n in ray.nodes() if n.get("Alive")):
        fits = [int(node.get(name, 0.0) / amount + 1e-9) for name, amount in (("CPU", cpus), ("GPU", gpus)) if amount > 0]
        total += min(fits) if fits else 0
    return total


def unfit_resources(cpus: float, gpus: float) -> str | None:
    """Why no node of the connected cluster can run a trial asking for ``cpus`` and ``gpus``, or None."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        return None
    largest = ", ".join(f"{n.get('CPU', 0):g} CPU / {n.get('GPU', 0):g} GPU" for n in nodes) or "no nodes"
    return f"a trial asks for {cpus:g} CPU and {gpus:g} GPU, but the nodes have {largest}"


def wait_for_fit(cpus: float, gpus: float, timeout_s: float, *, poll_s: float = 2.0,
                 on_poll: Callable[[float, str], None] | None = None) -> str | None:
    """Wait up to ``timeout_s`` for a node that fits a trial (``unfit_resources`` is None); returns
    None once one is alive, else why none fits at the deadline.

    An autoscaler adds nodes for demand only, and before the sweep there is none (the head runs no
    work): while waiting, the bundle of one trial is asked for (``request_resources``), so the
    autoscaler launches a node type that holds it; the request is withdrawn afterwards, and the
    sweep's own tasks and trials keep the nodes busy. On a cluster without an autoscaler the
    request is a no-op. ``on_poll(elapsed_s, why)`` sees every poll that still finds no fit."""
    import time

    from ray.autoscaler.sdk import request_resources

    unfit = unfit_resources(cpus, gpus)
    if unfit is None:
        return None
    bundle = {name: amount for name, amount in (("CPU", cpus), ("GPU", gpus)) if amount > 0}
    start = time.monotonic()
    try:
        if bundle:
            request_resources(bundles=[bundle])
        while unfit is not None and time.monotonic() - start < timeout_s:
            time.sleep(max(0.0, min(poll_s, timeout_s - (time.monotonic() - start))))
            unfit = unfit_resources(cpus, gpus)
            if unfit is not None and on_poll is not None:
                on_poll(time.monotonic() - start, unfit)
    finally:
        if bundle:
            request_resources(bundles=[])
    return unfit


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0))


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


def _trainable(fn: Callable, parameters: dict, resources: dict):
    # with_parameters puts every parameter into the object store once; trials get references.
    with_parameters = tune.with_parameters(fn, **parameters)
    # Tune builds the trial class from the function with these classes first in line (its
    # ``__mixins__`` hook): a restore that finds the checkpoint it names gone uses a newer one.
    with_parameters.__mixins__ = (_RestoreFromNewestWholeCheckpoint,)
    return tune.with_resources(with_parameters, resources)


class _RestoreFromNewestWholeCheckpoint:
    """A trial restored from a checkpoint that is gone resumes from the newest whole one beside it.

    Tune deletes a trial's older checkpoints as newer ones register and saves the experiment state,
    which names the checkpoint a resume restores from, at most every ten seconds and in the
    background; a driver killed in between leaves a state naming a deleted checkpoint, and Tune fails
    that trial on every retry. The trial's folder then holds the newer checkpoints that replaced it;
    the newest one whose file reads back whole (a worker killed during its upload leaves a cut one) is
    as good a place to go on from. With none left the trial starts over: students are seeded, so it
    trains the same students again."""

    def restore(self, checkpoint_path):
        from ray.train._internal.checkpoint_manager import _TrainingResult

        result = checkpoint_path
        if isinstance(result, _TrainingResult) and result.checkpoint is not None:
            named = result.checkpoint
            if not _whole_checkpoint(named.filesystem, named.path, must_be_whole=False):
                newer = newest_whole_checkpoint(named.filesystem, os.path.dirname(named.path))
                if newer is None:
                    print(f"the checkpoint {named.path} is gone and no other is whole: the trial starts over",
                          file=sys.stderr)
                    return None
                print(f"the checkpoint {named.path} is gone: the trial goes on from {newer}", file=sys.stderr)
                # Every report of a trial checkpoints, so the newer checkpoint is that many reports
                # later (the iteration count is what ASHA's rungs read).
                metrics = dict(result.metrics or {})
                metrics["training_iteration"] = (int(metrics.get("training_iteration", 0))
                                                 + _checkpoint_number(newer) - _checkpoint_number(named.path))
                result = _TrainingResult(checkpoint=tune.Checkpoint(newer, named.filesystem), metrics=metrics)
        return super().restore(result)


def _checkpoint_number(path: str) -> int:
    import re

    match = re.fullmatch(r"checkpoint_(\d+)", os.path.basename(path.rstrip("/")))
    return int(match.group(1)) if match else -1


def _whole_checkpoint(filesystem, path: str, *, must_be_whole: bool = True) -> bool:
    """Whether the checkpoint folder ``path`` exists (and, with ``must_be_whole``, its state file
    reads back as a whole zip archive, the format of ``torch.save``: a cut file loses the archive's
    directory, which sits at its end)."""
    import zipfile

    import pyarrow.fs

    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return False
    if not must_be_whole:
        return True
    try:
        with filesystem.open_input_file(f"{path}/{CHECKPOINT_FILE}") as handle:
            return zipfile.is_zipfile(handle)
    except (OSError, ValueError):
        return False


def newest_whole_checkpoint(filesystem, trial_path: str) -> str | None:
    """The newest whole ``checkpoint_NNNNNN`` folder in a trial's folder, or None."""
    import pyarrow.fs

    try:
        entries = filesystem.get_file_info(pyarrow.fs.FileSelector(trial_path, allow_not_found=True))
    except OSError:
        return None
    numbered = sorted(((_checkpoint_number(entry.path), entry.path) for entry in entries), reverse=True)
    return next((path for number, path in numbered if number >= 0 and _whole_checkpoint(filesystem, path)), None)


def _trial_name(trial) -> str:
    config = trial.config
    numbers = [member["optuna_trial"] for member in config.get("members", [])]
    span = f"t{numbers[0]}" + (f"-{numbers[-1]}" if len(numbers) > 1 else "") if numbers else "t"
    return f"{trial.trial_id}-cell{config.get('cell_index')}-{span}"


# Where Tune and Ray report the failures that follow from a deleted directory or a full disk: a
# trial's traceback, the experiment state that could not be saved, an error no one waited for.
_FAILURE_MESSAGES = {
    "ray.tune.execution.tune_controller": "Trial task failed",
    "ray.tune.execution.experiment_state": "Saving experiment state to storage",
    "ray._private.worker": "Unhandled error",
}


def hide_failures_while(condition: Callable[[], bool]) -> None:
    """Tune's and Ray's tracebacks of failed trials and state writes are not printed while
    ``condition()`` holds: the sweep is stopping for a reason it reports in one line of its own (a
    deleted experiment directory, a full disk). Every other message still is."""
    import logging

    for name, prefix in _FAILURE_MESSAGES.items():
        class _While(logging.Filter):
            def filter(self, record: logging.LogRecord, prefix=prefix) -> bool:
                return not (str(record.getMessage()).startswith(prefix) and condition())

        logging.getLogger(name).addFilter(_While())


def _quiet_tune_console() -> None:
    """Tune's console as the sweep wants it, for a new and a resumed run alike."""
    # Tune's newer console output ignores custom reporters; the classic one takes column choices.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Each report checkpoints (KEPT_CHECKPOINTS are kept), which makes Tune snapshot often and warn about it;
    # for small fast trials that is expected.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # On a stop Tune names its own Python resume call; the sweep prints its --resume command instead.
    _hide_message("ray.tune.tune", "Experiment has been interrupted")


def _reporter():
    """A trial table that names each trial's cell and alpha (not its whole config)."""
    _quiet_tune_console()
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
    callbacks: list | None = None,
):
    _allow_pending_trials(min(max_concurrent or num_samples, _slots(resources)))
    return tune.Tuner(
        _trainable(fn, parameters, resources),
        tune_config=tune.TuneConfig(
            # Tune wraps a searcher this way itself (a ConcurrencyLimiter for max_concurrent_trials);
            # done here so the wrapper is the relocatable one.
            search_alg=_RelocatableSearchGenerator(
                searcher if not max_concurrent else ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)),
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=None,  # the ConcurrencyLimiter above
            metric=metric,
            mode=mode,
            # A finished trial's actor runs the next trial of the same resources: no new worker
            # process and no torch import per trial (bench/bench_sweep.py). A crashed trial's actor
            # is not reused, so a retry starts in a fresh process.
            reuse_actors=True,
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            # Two, not one: Tune deletes a trial's older checkpoint as soon as a newer one registers,
            # but saves the experiment state (which names the checkpoint a resume restores from)
            # later; Tune forces that save once a trial has made this many checkpoints since the last
            # one. A state naming a deleted checkpoint can still be left by a driver killed in
            # between: _RestoreFromNewestWholeCheckpoint covers that.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=KEPT_CHECKPOINTS),
            verbose=verbose,
            progress_reporter=_reporter(),
            callbacks=callbacks,
        ),
    )


PENDING_TRIALS_ENV = "TUNE_MAX_PENDING_TRIALS_PG"
_PENDING_TRIALS_GIVEN = os.environ.get(PENDING_TRIALS_ENV)  # a setting of the user's own wins
MAX_PENDING_TRIALS = 200  # Tune's own floor for its built-in searchers, "to trigger fast autoscaling"


def _slots(resources: dict) -> int:
    return max(1, trial_slots(float(resources.get("cpu", 1.0)), float(resources.get("gpu", 0.0))))


def _allow_pending_trials(count: int | None) -> None:
    """Let Tune hold up to ``count`` trials waiting for resources (read when ``fit`` starts): the
    number of trials the cluster can run at once.

    With a custom searcher Tune's default is one, so it starts trials one at a time: a trial is
    created only once the previous one runs, and trials meant to share a GPU start a trial's start-up
    apart (short ones never overlap). With as many pending as there are slots, every slot, every GPU
    share included, fills from the start. Not more: each pending trial is a cohort whose alphas the
    searcher has already asked Optuna for, and an adaptive design (tpe, grid+gp) should see results
    before it proposes more. (An autoscaler therefore sees the demand of the slots it has; raise
    ``TUNE_MAX_PENDING_TRIALS_PG`` yourself to make it scale up faster.)"""
    os.environ[PENDING_TRIALS_ENV] = _PENDING_TRIALS_GIVEN or str(max(1, min(count or MAX_PENDING_TRIALS, MAX_PENDING_TRIALS)))


class _RelocatableSearchGenerator(SearchGenerator):
    """Tune's wrapper of a searcher, which restores the experiment it creates new trials for from the
    saved state, storage location included: trials created after resuming a copied or moved
    experiment would be written into the original. ``relocate_to`` (set by ``restore_tuner``: the
    storage path and name of the experiment where it is now) replaces that location on restore."""

    relocate_to: tuple[str, str] | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("relocate_to", None)  # where this run found the experiment is no part of it
        return state

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)
        if self.relocate_to is None or self._experiment is None:
            return
        from ray.train._internal.storage import StorageContext

        storage_path, name = self.relocate_to
        old = self._experiment.storage
        here = StorageContext(storage_path=storage_path, experiment_dir_name=name, sync_config=old.sync_config)
        if (here.storage_fs_path, here.experiment_dir_name) != (old.storage_fs_path, old.experiment_dir_name):
            # As Tune relocates the trials it restores: the old context (its driver staging folder,
            # which the resumed controller shares) with the new location.
            moved = copy.copy(old)
            moved.storage_filesystem, moved.storage_fs_path = here.storage_filesystem, here.storage_fs_path
            moved.experiment_dir_name = here.experiment_dir_name
            self._experiment.storage = moved
            self._experiment.spec["storage"] = moved  # what new trials are created from


def can_restore(path: str) -> bool:
    return tune.Tuner.can_restore(path)


def restore_tuner(path: str, fn: Callable, *, parameters: dict, resources: dict, callbacks: list | None = None,
                  verbose: int | None = None, relocate_searcher: Callable[[Searcher], None] | None = None):
    """Continue an experiment: finished trials are kept, unfinished and errored ones resume from
    their last checkpoint; the searcher's state is restored by Tune.

    Tune takes the experiment's location from ``path`` (a copied or moved experiment resumes where it
    is now); ``relocate_searcher`` gets the restored searcher, whose own references (its Optuna
    storage) were pickled where the experiment started, to point them at this location."""
    _allow_pending_trials(_slots(resources))
    _quiet_tune_console()
    tuner = tune.Tuner.restore(path, trainable=_trainable(fn, parameters, resources), resume_errored=True)
    search_alg = tuner._local_tuner._tune_config.search_alg
    run_config = tuner._local_tuner.get_run_config()
    if isinstance(search_alg, _RelocatableSearchGenerator):  # experiments started before it existed have none
        search_alg.relocate_to = (run_config.storage_path, run_config.name)
    searcher = search_alg
    while hasattr(searcher, "searcher"):  # the generator, then a concurrency limiter
        searcher = searcher.searcher
    if relocate_searcher is not None and searcher is not None:
        relocate_searcher(searcher)
    # Tune restores the run config the experiment started with, callbacks included; this run's
    # callbacks (which write to where the experiment is now) and verbosity replace them.
    run_config.callbacks = callbacks
    if verbose is not None:
        run_config.verbose = verbose
    return tuner


def trial_records(trials) -> list[TrialRecord]:
    """The trial records (``sweep.results``) of Tune's live ``Trial`` objects, while the run goes on."""
    return [TrialRecord(config=dict(trial.config or {}), metrics=dict(trial.last_result or {}),
                        error=(error_line(trial.get_error()) or "error") if trial.status == "ERROR" else None,
                        trial_id=trial.trial_id, tune_status=trial.status)
            for trial in trials]


class TrialsCallback(tune.Callback):
    """Calls ``on_trial_end(records)`` on the driver with every trial's record whenever a trial ends
    (completed or errored): the sweep's live results and report. Whatever it raises is logged, never
    passed to Tune: a live report must not stop a sweep."""

    def __init__(self, on_trial_end: Callable[[list[TrialRecord]], None]):
        self.on_trial_end = on_trial_end

    def __getstate__(self):
        # Tune saves its run config with the experiment; the function (and the live state it holds)
        # belongs to this driver only: ``restore_tuner`` installs the resumed driver's own.
        return {"on_trial_end": None}

    def _ended(self, trials) -> None:
        if self.on_trial_end is None:
            return
        try:
            self.on_trial_end(trial_records(trials))
        except Exception:  # noqa: BLE001
            import logging

            logging.getLogger(__name__).exception("the live results update failed (the sweep goes on)")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._ended(trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._ended(trials)


def result_rows(grid) -> list[TrialRecord]:
    """The trial records of a finished (or stopped) run, one per trial."""
    rows = []
    # The trials' statuses are not on the public Result objects; the grid's analysis holds them,
    # in the same order as the grid's results.
    trials = grid._experiment_analysis.trials
    for result, trial in zip(grid, trials):
        metrics = dict(result.metrics or {})
        rows.append(TrialRecord(config=dict(result.config or {}), metrics=metrics, error=error_line(result.error),
                                trial_id=metrics.get("trial_id") or trial.trial_id, tune_status=trial.status))
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


def trial_device(allow_cpu_fallback: bool = False) -> str:
    """The device of the running trial or stage task: ``cuda`` when Ray assigned it a GPU, else ``cpu``.

    A GPU that Ray assigned but CUDA cannot see (a node whose driver is broken, a rehearsal cluster
    whose GPUs are declared, not real) is a ``GpuNotUsableError`` naming the node and what to do,
    unless the CPU fallback was asked for (``allow_cpu_fallback``, from ``--allow-cpu-fallback``, or
    ``KDSWEEP_ALLOW_CPU_FALLBACK=1`` on the node): then it runs on the CPU, with a warning once per
    process, never silently. On part of a GPU (``--gpus-per-trial 0.25``) the process may use only
    that share of the GPU's memory (``torch.cuda.set_per_process_memory_fraction``), so one trial
    cannot starve the others on the same GPU."""
    gpus = ray.get_gpu_ids()
    if not gpus:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        problem = (f"Ray assigned GPU {', '.join(map(str, gpus))} to a trial or stage task on node {_node_description()}, "
                   f"but CUDA cannot use a GPU there (torch.cuda.is_available() is False; CUDA_VISIBLE_DEVICES="
                   f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}; torch {torch.__version__}, CUDA build "
                   f"{torch.version.cuda or 'none'})")
        if not (allow_cpu_fallback or cpu_fallback_from_env()):
            raise GpuNotUsableError(
                f"{problem}. Check that node's NVIDIA driver (`nvidia-smi` on it) and that its torch is a CUDA build, "
                "or run without GPUs (--gpus-per-trial 0). To run on that node's CPUs instead (much slower), pass "
                f"--allow-cpu-fallback to sweep.run or set {CPU_FALLBACK_ENV}=1."
            )
        global _fallback_warned
        if not _fallback_warned:
            _fallback_warned = True
            import sys

            print(f"warning: {problem}; running on the CPU as asked (--allow-cpu-fallback / {CPU_FALLBACK_ENV}), "
                  "much slower than on a GPU", file=sys.stderr, flush=True)
        return "cpu"
    share = gpu_memory_share(_assigned_resources())
    if share is not None:
        # Ray makes the assigned GPU the process's only visible one: device 0.
        torch.cuda.set_per_process_memory_fraction(share, 0)
    return "cuda"


CPU_FALLBACK_ENV = "KDSWEEP_ALLOW_CPU_FALLBACK"
_fallback_warned = False


class GpuNotUsableError(RuntimeError):
    """Ray assigned a trial or task a GPU that CUDA cannot see on its node."""


def cpu_fallback_from_env() -> bool:
    """``KDSWEEP_ALLOW_CPU_FALLBACK`` is set to 1 (or true/yes/on) in this process's environment."""
    return os.environ.get(CPU_FALLBACK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def gpu_memory_share(assigned: dict) -> float | None:
    """The fraction of its GPU's memory a trial or task may use, from the resources Ray assigned it:
    its share of the GPU when it has part of one (0.25 of a GPU: 0.25), None with a whole GPU or more
    (nothing to share) or none."""
    share = float(assigned.get("GPU", 0.0) or 0.0)
    return share if 0.0 < share < 1.0 else None


def _assigned_resources() -> dict:
    return dict(ray.get_runtime_context().get_assigned_resources())


def _node_description() -> str:
    """The running process's node: its id, IP address and host name."""
    import socket

    return f"{node_id()} ({ray.util.get_node_ip_address()}, host {socket.gethostname()})"


def task_cpus() -> float:
    """CPUs Ray assigned to the running task or actor."""
    return float(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def trial_id() -> str:
    """The running Tune trial's id (results.csv's ``cohort``)."""
    return tune.get_context().get_trial_id()


def quiet_trial_logs() -> None:
    """No "Checkpoint successfully created" line per report from every trial (Ray's INFO log in the
    worker); warnings and errors still reach the driver."""
    import logging

    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    sys.unraisablehook = _without_sigterm_exits(sys.unraisablehook)


def _without_sigterm_exits(hook):
    """When Tune ends an actor, Ray's SIGTERM handler raises SystemExit in the worker's main thread;
    if that lands inside a garbage-collector callback, Python prints it as "Exception ignored in ...
    SystemExit: 1", a traceback on the driver's console at the end of every sweep that is only the
    expected end of the process. Drop exactly that; every other unraisable exception is printed."""
    if getattr(hook, "without_sigterm_exits", False):
        return hook

    def quiet(unraisable):
        if not isinstance(unraisable.exc_value, SystemExit):
            hook(unraisable)

    quiet.without_sigterm_exits = True
    return quiet


def set_trial_threads(cpus: float) -> None:
    """One torch thread pool per trial sized to its CPUs, so concurrent trials do not oversubscribe."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))
