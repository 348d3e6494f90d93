"""The results table: one row per trial, with the provenance that produced it."""

from __future__ import annotations

import io
import json

import pandas as pd

from sweep import ray_adapter
from sweep.plan import RESULTS_FILE
from trainables.storage import write_bytes

COLUMNS = [
    "dataset", "method", "fraction", "teacher_arch", "student_arch", "replicate", "alpha", "tau", "seed",
    "val_acc", "test_acc", "epochs_run", "status", "error", "optuna_trial", "num_train", "teacher_key",
    "teacher_val_acc", "teacher_test_acc", "score_key", "wall_time_s", "busy_s", "started_at", "finished_at", "resumed_from_epoch", "node_id", "trial_id", "profile", "recipe",
    "version",
]


def result_table(grid, teacher_meta: dict | None = None) -> pd.DataFrame:
    """One row per trial of a finished Tune run; ``teacher_meta`` maps a teacher key to its artifact
    metadata (``val_acc``, ``test_acc``), which the report draws as the reference line."""
    teacher_meta = teacher_meta or {}
    rows = []
    for row in ray_adapter.result_rows(grid):
        config, metrics = row["config"], row["metrics"]
        cell = config.get("cell", {})
        if row["error"]:
            status = "error"
        elif metrics.get("done"):
            status = "completed"
        else:
            status = "stopped"  # ended early by the scheduler
        teacher_key = config.get("teacher_keys", {}).get(f"{cell.get('teacher')}|{cell.get('seed')}")
        teacher = teacher_meta.get(teacher_key, {})
        rows.append({
            "dataset": cell.get("dataset"),
            "method": cell.get("method"),
            "fraction": cell.get("fraction"),
            "teacher_arch": cell.get("teacher"),
            "student_arch": cell.get("student"),
            "replicate": cell.get("seed"),
            "alpha": config.get("alpha"),
            "tau": config.get("tau"),
            "seed": config.get("seed"),
            "val_acc": metrics.get("val_acc"),
            "test_acc": metrics.get("test_acc"),
            "epochs_run": metrics.get("epoch", 0),
            "status": status,
            "error": row["error"],
            "optuna_trial": config.get("optuna_trial"),
            "num_train": metrics.get("num_train"),
            "teacher_key": teacher_key,
            "teacher_val_acc": teacher.get("val_acc"),
            "teacher_test_acc": teacher.get("test_acc"),
            "score_key": config.get("score_keys", {}).get(f"{cell.get('method')}|{cell.get('seed')}"),
            "wall_time_s": metrics.get("time_total_s"),
            "busy_s": metrics.get("busy_s"),
            "started_at": metrics.get("started_at"),
            "finished_at": metrics.get("finished_at"),
            "resumed_from_epoch": metrics.get("resumed_from_epoch"),
            "node_id": metrics.get("node_id"),
            "trial_id": row["trial_id"],
            "profile": config.get("profile"),
            "recipe": json.dumps(config.get("recipe"), sort_keys=True) if config.get("recipe") else None,
            "version": config.get("version"),
        })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.sort_values(["method", "fraction", "teacher_arch", "student_arch", "replicate", "optuna_trial"],
                             ignore_index=True)


def write_table(frame: pd.DataFrame, experiment_dir: str) -> str:
    """Write ``results.csv`` into the experiment directory (a local path or an fsspec URI)."""
    path = f"{experiment_dir.rstrip('/')}/{RESULTS_FILE}"
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    write_bytes(path, buffer.getvalue().encode())
    return path
