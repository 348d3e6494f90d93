"""Every Ray call of the project, in one package, so Ray's API churn touches one place.

One module per job; callers use ``from sweep import ray_adapter`` and the names below:

- ``cluster``: connect (embedded local Ray or an existing cluster), check an address, nodes and
  trial slots, wait for capacity, the embedded Ray's processes that ended under the sweep, shut down
  (driver);
- ``tasks``: the object store and stage tasks with their progress (driver);
- ``tuner``: build and restore the Tune experiment, its console, the checkpoint-restoring trial (driver);
- ``records``: trial records from Tune's trials and results (driver);
- ``worker``: report with a checkpoint, read it back, the device and GPU policy, ids, threads (trial side);
- ``experiment_fs``: the filesystem Tune writes a local experiment directory through, one whole file
  at a time (driver and trials).
"""

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from sweep.ray_adapter.cluster import (CORE_PROCESSES, ClusterUnreachableError, alive_nodes, check_address,
                                       cluster_gpus, connect, embedded_ray_ended, keep_running, runs_embedded_ray, shutdown,
                                       trial_slots,
                                       unfit_resources, wait_for_fit, wait_for_killed_driver)
from sweep.ray_adapter.records import TrialsCallback, result_rows, cohort_records
from sweep.ray_adapter.tasks import close_channel, progress_channel, put, run_tasks, send, stage_cpus
from sweep.ray_adapter.tuner import (CONTINUE, FINISHED, build_tuner, can_restore, hide_failures_while,
                                     newest_whole_checkpoint, restore_tuner)
from sweep.ray_adapter.worker import (CPU_FALLBACK_ENV, GpuNotUsableError, checkpoint_state, cpu_fallback_from_env,
                                      gpu_memory_share, node_id, quiet_trial_logs, report, set_trial_threads,
                                      task_cpus, trial_device, trial_id)

__all__ = [
    "Searcher", "FIFOScheduler", "TrialScheduler", "AsyncHyperBandScheduler", "FINISHED", "CONTINUE",
    "ClusterUnreachableError", "connect", "keep_running", "check_address", "wait_for_killed_driver", "shutdown", "alive_nodes",
    "CORE_PROCESSES", "embedded_ray_ended", "runs_embedded_ray",
    "trial_slots", "unfit_resources", "wait_for_fit", "cluster_gpus",
    "put", "run_tasks", "progress_channel", "close_channel", "send", "stage_cpus",
    "build_tuner", "restore_tuner", "can_restore", "hide_failures_while", "newest_whole_checkpoint",
    "cohort_records", "TrialsCallback", "result_rows",
    "report", "checkpoint_state", "trial_device", "node_id", "trial_id", "set_trial_threads", "task_cpus",
    "quiet_trial_logs", "GpuNotUsableError", "gpu_memory_share", "cpu_fallback_from_env", "CPU_FALLBACK_ENV",
]
