"""The results table: one row per trial, with the provenance that produced it (columns and types:
``sweep.contract.RESULT_COLUMNS``)."""

from __future__ import annotations

import io
import json

import pandas as pd

from sweep import ray_adapter
from sweep.contract import CELL_COLUMNS, METRIC, RESULT_COLUMNS, RESULTS_FILE, TrialSpec
from trainables.storage import write_bytes


def trial_status(metrics: dict, error: str | None, tune_status: str) -> str | None:
    """How a trial ended (``sweep.contract.STATUSES``); None for one that never started."""
    if error:
        return "error"
    if metrics.get("done"):
        return "completed"
    if METRIC not in metrics:
        return None  # never reported anything: the sweep stopped before it began
    return "stopped" if tune_status == "TERMINATED" else "interrupted"  # TERMINATED early: the scheduler


def result_row(spec: TrialSpec, metrics: dict, *, status: str, error: str | None, trial_id: str | None,
               teacher_meta: dict) -> dict:
    """One trial's row: its spec, what it reported last, and how it ended."""
    teacher = teacher_meta.get(spec.teacher_key, {})
    epochs, num_train = metrics.get("epoch", 0), metrics.get("num_train")
    steps = None if num_train is None else epochs * -(-int(num_train) // int(spec.recipe["batch_size"]))
    return {
        **spec.cell.to_dict(),
        "alpha": spec.alpha,
        "tau": spec.tau,
        "trial_seed": spec.trial_seed,
        "val_acc": metrics.get(METRIC),
        "test_acc": metrics.get("test_acc"),
        "epochs_run": epochs,
        "steps_run": steps,
        "status": status,
        "error": error,
        "optuna_trial": spec.optuna_trial,
        "num_train": metrics.get("num_train"),
        "subset_digest": metrics.get("subset_digest"),
        "teacher_key": spec.teacher_key,
        "teacher_val_acc": teacher.get("val_acc"),
        "teacher_test_acc": teacher.get("test_acc"),
        "score_key": spec.score_key,
        "selection": spec.selection,
        "class_balanced": spec.class_balanced,
        "wall_time_s": metrics.get("time_total_s"),
        "busy_s": metrics.get("busy_s"),
        "started_at": metrics.get("started_at"),
        "finished_at": metrics.get("finished_at"),
        "resumed_from_epoch": metrics.get("resumed_from_epoch"),
        "node_id": metrics.get("node_id"),
        "trial_id": trial_id,
        "profile": spec.profile,
        "recipe": json.dumps(spec.recipe, sort_keys=True),
        "version": spec.version,
    }


def result_table(grid, teacher_meta: dict | None = None) -> pd.DataFrame:
    """One row per trial of a finished Tune run; ``teacher_meta`` maps a teacher key to its artifact
    metadata (``val_acc``, ``test_acc``), which the report draws as the reference line."""
    rows = []
    for row in ray_adapter.result_rows(grid):
        status = trial_status(row["metrics"], row["error"], row["tune_status"])
        if status is not None:
            rows.append(result_row(TrialSpec.from_config(row["config"]), row["metrics"], status=status,
                                   error=row["error"], trial_id=row["trial_id"], teacher_meta=teacher_meta or {}))
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return frame.sort_values([*CELL_COLUMNS, "optuna_trial"], ignore_index=True)


def write_table(frame: pd.DataFrame, experiment_dir: str) -> str:
    """Write ``results.csv`` into the experiment directory (a local path or an fsspec URI)."""
    path = f"{experiment_dir.rstrip('/')}/{RESULTS_FILE}"
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    write_bytes(path, buffer.getvalue().encode())
    return path
