"""The cohort trial: what one Tune trial runs on a worker.

Its config is a ``contract.CohortSpec`` (the cell, the members' alpha and tau, the cohort's
seed, the recipe and the artifact keys), decoded once here; the datasets (one per label noise level),
the driver's validation split, the teachers' checkpoints and the score tables arrive through the object
store (``tune.with_parameters``), looked up by the spec's cell and keys. The trial
reports validation accuracy every epoch with a checkpoint of the training state, resumes from that
checkpoint after a crash or a driver restart, and ends with one report holding the final validation
and test accuracy and ``done``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from sweep import ray_adapter
from contract import (COHORTS_DIR, METRIC, SWEEP_FILE, CohortSpec, cohort_status, join_member_statuses, member_rows,
                      rows_to_csv, subset_digest)
from contract.recipe import Recipe
from trainables.teacher import teacher_from_bytes

# A trial reports (and checkpoints) at most this often, plus its final report: with ``min_steps`` a
# student on a small subset runs many short epochs, and a checkpoint per epoch would cost more than
# the training. The per-cell ASHA's rungs count these reports.
REPORTS_PER_TRIAL = 8

# Test-only fault injection: with this set to a directory, every trial crashes once after its
# second epoch's checkpoint (a marker file per trial records that it did).
CRASH_ONCE_ENV = "KDSWEEP_TEST_CRASH_ONCE"


def kept_ids(spec: CohortSpec, dataset, split, tables: dict) -> np.ndarray:
    """The example ids the trial's student trains on: the cell's fraction of its score table."""
    if spec.score_key is None:
        return split.train_ids
    return tables[spec.score_key].select(
        dataset.y_train, spec.cell.fraction, strategy=spec.selection, class_balanced=spec.class_balanced,
        seed=spec.cell.replicate,
    )


def write_cohort_rows(experiment_dir: str | None, spec: CohortSpec, metrics: dict, teacher_metrics: dict) -> None:
    """The cohort's rows, as they stand after this report, to ``EXPERIMENT/cohorts/<trial id>.csv``:
    ``completed`` (or ``stopped`` by halving) once it is done, ``interrupted`` before. The analysis
    reads a sweep whose driver has not written ``results.csv`` (running, or killed) from these files.
    Never at the cost of the training: a directory that is gone is not made again (the sweep is
    stopping for it), and a full disk only leaves the previous file."""
    if not experiment_dir:
        return
    from contract.storage import read_text, write_bytes

    try:
        if read_text(f"{experiment_dir}/{SWEEP_FILE}") is None:
            return
        cohort = ray_adapter.trial_id()
        status = cohort_status(metrics, None, "RUNNING")  # "completed" once done, else "interrupted"
        rows = member_rows(spec, metrics, status=status, error=None, cohort=cohort, teacher_meta=teacher_metrics)
        write_bytes(f"{experiment_dir}/{COHORTS_DIR}/{cohort}.csv", rows_to_csv(rows))
    except OSError:
        pass


def cohort_trial(config: dict, *, datasets: dict, split, teachers: dict, tables: dict, crash_once_dir: str | None = None,
                 verbose: bool = False, allow_cpu_fallback: bool = False, experiment_dir: str | None = None,
                 teacher_metrics: dict | None = None) -> None:
    """Train the trial's cohort (``trainables.cohort.train_cohort``) and report it to Tune.

    ``datasets``: {label noise P: the dataset with that level's training labels}; the trial trains on
    ``datasets[cell.label_noise]``. ``split``: the driver's validation split, carved once from the
    clean labels (recomputing it from noisy labels would stratify by them and give another split).
    ``experiment_dir``, ``teacher_metrics``: where and with what the cohort writes its own rows
    (``write_cohort_rows``).

    Every report carries each member's validation accuracy (``member_val_acc``, ``member_status``) and,
    as the trial's metric, the best member's; the final one adds each member's test accuracy, epochs
    and steps, and ``done``."""
    from trainables.cohort import Halving, Member, train_cohort

    start, started_at = time.perf_counter(), time.time()
    spec = CohortSpec.from_config(config)
    if not verbose:
        ray_adapter.quiet_trial_logs()
    ray_adapter.set_trial_threads(spec.cpus_per_trial)
    device = ray_adapter.trial_device(allow_cpu_fallback)  # a GPU that CUDA cannot see: an error, or the CPU if asked
    recipe = Recipe.from_dict(spec.recipe)
    dataset = datasets[float(spec.cell.label_noise)]
    if (split.val_size, split.seed) != (spec.val_size, spec.split_seed):
        raise ValueError(f"the driver's validation split ({split.val_size}, seed {split.seed}) is not the trial's "
                         f"({spec.val_size}, seed {spec.split_seed})")
    subset = kept_ids(spec, dataset, split, tables)
    needs_teacher = any(m.alpha > 0 for m in spec.members)
    teacher = teacher_from_bytes(teachers[spec.teacher_key], device, recipe.channels_last) if needs_teacher else None
    resume = ray_adapter.checkpoint_state()
    marker = Path(crash_once_dir) / f"{spec.cell.name}#{spec.members[0].optuna_trial}".replace("/", "_") if crash_once_dir else None
    common = {"node_id": ray_adapter.node_id(), "num_train": int(len(subset)), "subset_digest": subset_digest(subset)}

    def on_report(report) -> None:
        stride = -(-report.epochs // REPORTS_PER_TRIAL)
        if report.epoch == report.epochs or report.epoch % stride:
            return  # the final report below carries the last epoch, with the test accuracies
        values = [None if v is None else float(v) for v in report.val_acc]
        metrics = {METRIC: max(v for v in values if v is not None), "epoch": report.epoch, "done": False,
                   "member_val_acc": values,
                   "member_status": join_member_statuses("training" if v is not None else "stopped" for v in values),
                   **common}
        write_cohort_rows(experiment_dir, spec, metrics, teacher_metrics or {})
        ray_adapter.report(metrics, state=report.state())
        if marker is not None and report.epoch >= 2 and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("crashed once")
            raise RuntimeError("injected crash (KDSWEEP_TEST_CRASH_ONCE)")

    final_state = {}

    def keep_final_state(report) -> None:
        on_report(report)
        if report.epoch == report.epochs:
            final_state["state"] = report.state()

    result = train_cohort(
        dataset, subset, arch=spec.cell.student_arch, recipe=recipe, split=split, teacher=teacher,
        members=[Member(m.alpha, m.tau) for m in spec.members], seed=spec.cohort_seed, device=device,
        on_report=keep_final_state, resume=resume, halving=Halving() if spec.halving else None,
    )
    members = result.members
    final = {
        METRIC: max(m.val_acc for m in members if m.val_acc is not None),
        "done": True,
        "epoch": result.epochs,
        "member_val_acc": [m.val_acc for m in members],
        "member_test_acc": [m.test_acc for m in members],
        "member_status": join_member_statuses(m.status for m in members),
        "member_epochs": [m.epochs_run for m in members],
        "member_steps": [m.steps_run for m in members],
        "teacher_forwards": result.teacher_forwards,
        "resumed_from_epoch": resume["epoch"] if resume else 0,
        "busy_s": time.perf_counter() - start,
        "started_at": started_at,
        "finished_at": time.time(),
        **common,
    }
    write_cohort_rows(experiment_dir, spec, final, teacher_metrics or {})
    ray_adapter.report(final, state=final_state.get("state"))


def crash_once_dir_from_env() -> str | None:
    return os.environ.get(CRASH_ONCE_ENV) or None
