"""Inside a trial or stage task: reporting metrics with a checkpoint and reading it back, the
device (the GPU policy: a GPU Ray assigned but CUDA cannot use, a GPU's memory share), the node
and trial ids, threads and logs. Tune's own ``ray.tune.report`` / ``get_checkpoint`` /
``Checkpoint`` are used (the ``ray.train.*`` versions are deprecated inside Tune)."""

from __future__ import annotations

import os
import sys
import tempfile

import ray
from ray import tune

CHECKPOINT_FILE = "state.pt"


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
    process, never silently. On part of a GPU (``--gpus-per-cohort 0.25``) the process may use only
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
                "or run without GPUs (--gpus-per-cohort 0). To run on that node's CPUs instead (much slower), pass "
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
