"""The Tune experiment: the trainable and its resources, building, restoring (a copied or moved
experiment included) and the console, and the trial class that resumes from the newest whole
checkpoint when the one Tune's state names is gone."""

from __future__ import annotations

import copy
import logging
import os
import sys
from typing import Callable

from ray import tune
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator, Searcher

from sweep.ray_adapter.cluster import _hide_message, trial_slots
from sweep.ray_adapter.experiment_fs import experiment_filesystem, storage_location
from sweep.ray_adapter.worker import CHECKPOINT_FILE, quiet_trial_logs

FINISHED = Searcher.FINISHED
CONTINUE = TrialScheduler.CONTINUE
KEPT_CHECKPOINTS = 2  # per trial (see build_tuner)


def _trainable(fn: Callable, parameters: dict, resources: dict):
    # with_parameters puts every parameter into the object store once; trials get references.
    with_parameters = tune.with_parameters(fn, **parameters)
    # Tune builds the trial class from the function with these classes first in line (its
    # ``__mixins__`` hook): a restore that finds the checkpoint it names gone uses a newer one.
    with_parameters.__mixins__ = (_RestoreFromNewestWholeCheckpoint if parameters.get("verbose")
                                  else _QuietRestoreFromNewestWholeCheckpoint,)
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

    quiet = False  # Ray's own lines of the restore stay on (--verbose)

    def restore(self, checkpoint_path):
        from ray.train._internal.checkpoint_manager import _TrainingResult

        if self.quiet:  # before the trial's function quiets them: "Restored on ... from checkpoint: ..."
            quiet_trial_logs()

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


class _QuietRestoreFromNewestWholeCheckpoint(_RestoreFromNewestWholeCheckpoint):
    """The same, without Ray's INFO line of every restored trial on the driver's console."""

    quiet = True


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
# trial's traceback, the experiment state that could not be saved, an error no one waited for; and
# Tune's notice of the Ctrl-C the disk watch sends to stop the sweep ("Stop signal received (e.g. via
# SIGINT/Ctrl+C) ... Press CTRL+C ... to skip"), which names a key no one pressed.
_FAILURE_MESSAGES = {
    "ray.tune.tune": "Stop signal received",
    "ray.tune.execution.tune_controller": "Trial task failed",
    "ray.tune.execution.experiment_state": "Saving experiment state to storage",
    "ray._private.worker": "Unhandled error",
}


def hide_failures_while(condition: Callable[[], bool]) -> None:
    """Tune's and Ray's tracebacks of failed trials and state writes are not printed while
    ``condition()`` holds: the sweep is stopping for a reason it reports in one line of its own (a
    deleted experiment directory, a full disk). Every other message still is."""
    for name, prefix in _FAILURE_MESSAGES.items():
        class _While(logging.Filter):
            def filter(self, record: logging.LogRecord, prefix=prefix) -> bool:
                return not (str(record.getMessage()).startswith(prefix) and condition())

        logging.getLogger(name).addFilter(_While())


class _GoneCheckpointDelete(logging.Filter):
    """Drops Tune's "Error handling checkpoint" record when its error is a FileNotFoundError
    (``_hide_deleting_gone_checkpoints``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, FileNotFoundError) and "Error handling checkpoint" in str(record.msg))


def _hide_deleting_gone_checkpoints() -> None:
    """A resumed trial's checkpoint list is the saved state's, which may name older checkpoints that the
    killed driver had already deleted (Tune keeps the newest few); when the trial's next checkpoint
    pushes one of those out, Tune's delete finds nothing and logs the FileNotFoundError as an error with
    its traceback, after it has updated its list. Nothing is wrong: that record is not printed."""
    target = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _GoneCheckpointDelete) for f in target.filters):
        target.addFilter(_GoneCheckpointDelete())


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
            # on a local disk every file of the experiment is replaced whole (experiment_fs)
            storage_path=storage_location(storage_path),
            storage_filesystem=experiment_filesystem(storage_path),
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
    storage path and name of the experiment where it is now, and the filesystem to write it through)
    replaces that location on restore."""

    relocate_to: tuple[str, str, object] | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("relocate_to", None)  # where this run found the experiment is no part of it
        return state

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)
        if self.relocate_to is None or self._experiment is None:
            return
        from ray.train._internal.storage import StorageContext

        storage_path, name, filesystem = self.relocate_to
        old = self._experiment.storage
        here = StorageContext(storage_path=storage_path, experiment_dir_name=name, sync_config=old.sync_config,
                              storage_filesystem=filesystem)
        # As Tune relocates the trials it restores: the old context (its driver staging folder, which
        # the resumed controller shares) with the location where the experiment is now, written through
        # this run's filesystem (an experiment started before whole-file writes gets them too).
        moved = copy.copy(old)
        moved.storage_filesystem, moved.storage_fs_path = here.storage_filesystem, here.storage_fs_path
        moved.experiment_dir_name = here.experiment_dir_name
        self._experiment.storage = moved
        self._experiment.spec["storage"] = moved  # what new trials are created from


def can_restore(path: str) -> bool:
    return tune.Tuner.can_restore(storage_location(path), storage_filesystem=experiment_filesystem(path))


def restore_tuner(path: str, fn: Callable, *, parameters: dict, resources: dict, callbacks: list | None = None,
                  verbose: int | None = None, relocate_searcher: Callable[[Searcher], None] | None = None):
    """Continue an experiment: finished trials are kept, unfinished and errored ones resume from
    their last checkpoint; the searcher's state is restored by Tune.

    Tune takes the experiment's location from ``path`` (a copied or moved experiment resumes where it
    is now); ``relocate_searcher`` gets the restored searcher, whose own references (its Optuna
    storage) were pickled where the experiment started, to point them at this location."""
    _allow_pending_trials(_slots(resources))
    _quiet_tune_console()
    _hide_deleting_gone_checkpoints()
    filesystem = experiment_filesystem(path)
    tuner = tune.Tuner.restore(storage_location(path), trainable=_trainable(fn, parameters, resources),
                               resume_errored=True, storage_filesystem=filesystem)
    search_alg = tuner._local_tuner._tune_config.search_alg
    run_config = tuner._local_tuner.get_run_config()
    if isinstance(search_alg, _RelocatableSearchGenerator):  # experiments started before it existed have none
        search_alg.relocate_to = (run_config.storage_path, run_config.name, filesystem)
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

