"""The results table: one row per trial, with the provenance that produced it (columns and types:
``sweep.contract.RESULT_COLUMNS``)."""

from __future__ import annotations

import io
import json

import pandas as pd

from sweep import ray_adapter
from sweep.contract import CELL_COLUMNS, METRIC, RESULT_COLUMNS, RESULTS_FILE, TrialSpec, member_statuses
from trainables.storage import write_bytes


def cohort_status(metrics: dict, error: str | None, tune_status: str) -> str | None:
    """How a cohort trial ended (``sweep.contract.STATUSES``); None for one that never started."""
    if error:
        return "error"
    if metrics.get("done"):
        return "completed"
    if METRIC not in metrics:
        return None  # never reported anything: the sweep stopped before it began
    return "stopped" if tune_status == "TERMINATED" else "interrupted"  # TERMINATED early: the scheduler


def member_rows(spec: TrialSpec, metrics: dict, *, status: str, error: str | None, cohort: str | None,
                teacher_meta: dict) -> list[dict]:
    """One row per student of a cohort: its spec, what it reported last, and how it ended."""
    teacher = teacher_meta.get(spec.teacher_key, {})
    num_train = metrics.get("num_train")
    steps_per_epoch = None if num_train is None else -(-int(num_train) // int(spec.recipe["batch_size"]))

    def member_value(name: str, i: int):
        values = metrics.get(name)
        return values[i] if isinstance(values, (list, tuple)) and i < len(values) else None

    rows = []
    for i, member in enumerate(spec.members):
        member_status = status
        statuses = member_statuses(metrics.get("member_status"))
        if status == "completed" and i < len(statuses) and statuses[i] == "stopped":
            member_status = "stopped"  # successive halving inside the cohort
        epochs = member_value("member_epochs", i) or metrics.get("epoch", 0)
        rows.append({
            **spec.cell.to_dict(),
            "alpha": member.alpha,
            "tau": member.tau,
            "cohort": cohort,
            "member": i,
            "cohort_size": len(spec.members),
            "trial_seed": spec.trial_seed,
            "val_acc": member_value("member_val_acc", i),
            "test_acc": member_value("member_test_acc", i),
            "epochs_run": epochs,
            "steps_run": member_value("member_steps", i) or (None if steps_per_epoch is None else epochs * steps_per_epoch),
            "status": member_status,
            "error": error,
            "optuna_trial": member.optuna_trial,
            "num_train": num_train,
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
            "profile": spec.profile,
            "recipe": json.dumps(spec.recipe, sort_keys=True),
            "version": spec.version,
        })
    return rows


def result_table(grid, teacher_meta: dict | None = None) -> pd.DataFrame:
    """One row per student of a finished (or stopped) Tune run; ``teacher_meta`` maps a teacher key to
    its artifact metadata (``val_acc``, ``test_acc``), which the report draws as the reference line."""
    rows = []
    for row in ray_adapter.result_rows(grid):
        status = cohort_status(row["metrics"], row["error"], row["tune_status"])
        if status is not None:
            rows.extend(member_rows(TrialSpec.from_config(row["config"]), row["metrics"], status=status,
                                    error=row["error"], cohort=row["trial_id"], teacher_meta=teacher_meta or {}))
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return frame.sort_values([*CELL_COLUMNS, "optuna_trial"], ignore_index=True)


def write_table(frame: pd.DataFrame, experiment_dir: str) -> str:
    """Write ``results.csv`` into the experiment directory (a local path or an fsspec URI)."""
    path = f"{experiment_dir.rstrip('/')}/{RESULTS_FILE}"
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    write_bytes(path, buffer.getvalue().encode())
    return path
