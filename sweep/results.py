"""The results table: one row per student, with the provenance that produced it (columns and types:
``contract.RESULT_COLUMNS``).

Every table is built from the same *trial records*, one per Tune trial (a cohort): its config, the
metrics it reported last, its error (or None), its trial id and Tune's status for it. The driver
gets them from Tune (``ray_adapter.result_rows`` when the run ends, ``ray_adapter.cohort_records``
while it runs). (The analysis reads a running or interrupted sweep from the rows each cohort writes
of itself, ``sweep.trial.write_cohort_rows``.) This module imports neither torch nor Ray.
"""

from __future__ import annotations

import io

import pandas as pd

from contract import CELL_COLUMNS, RESULT_COLUMNS, RESULTS_FILE, CohortRecord, CohortSpec, cohort_status, member_rows
from contract.storage import write_bytes

def table_from_records(records: list[CohortRecord], teacher_meta: dict | None = None, *, scheduler_stops: bool = True) -> pd.DataFrame:
    """One row per student of the given trial records; ``teacher_meta`` maps a teacher key to its
    artifact metadata (``val_acc``, ``test_acc``), which the report draws as the reference line.
    A trial that never reported anything has no rows; ``scheduler_stops``: see ``cohort_status``."""
    rows = []
    for record in records:
        status = cohort_status(record.metrics, record.error, record.tune_status, scheduler_stops)
        if status is not None:
            rows.extend(member_rows(CohortSpec.from_config(record.config), record.metrics, status=status,
                                    error=record.error, cohort=record.trial_id, teacher_meta=teacher_meta or {}))
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return frame.sort_values([*CELL_COLUMNS, "optuna_trial"], ignore_index=True)


def result_table(grid, teacher_meta: dict | None = None, *, scheduler_stops: bool = True) -> pd.DataFrame:
    """The table of a finished (or stopped) Tune run."""
    from sweep import ray_adapter

    return table_from_records(ray_adapter.result_rows(grid), teacher_meta, scheduler_stops=scheduler_stops)


def write_table(frame: pd.DataFrame, experiment_dir: str) -> str:
    """Write ``results.csv`` into the experiment directory (a local path or an fsspec URI)."""
    path = f"{experiment_dir.rstrip('/')}/{RESULTS_FILE}"
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    write_bytes(path, buffer.getvalue().encode())
    return path
