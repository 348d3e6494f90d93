"""The results table: one row per student, with the provenance that produced it (columns and types:
``sweep.contract.RESULT_COLUMNS``).

Every table is built from the same *trial records*, one per Tune trial (a cohort): its config, the
metrics it reported last, its error (or None), its trial id and Tune's status for it. The driver
gets them from Tune (``ray_adapter.result_rows`` when the run ends, ``ray_adapter.trial_records``
while it runs); the analysis reads them from the files Tune keeps in the experiment directory
(``tune_dir_records``), so a report works on a running or interrupted sweep whose driver never
wrote ``results.csv``. This module imports neither torch nor Ray.
"""

from __future__ import annotations

import io
import json

import pandas as pd

from sweep.contract import CELL_COLUMNS, RESULT_COLUMNS, RESULTS_FILE, TrialSpec, cohort_status, member_rows
from trainables.storage import read_text, write_bytes

# The statuses of a student that will not change any more (``interrupted`` continues on --resume).
FINISHED = ("completed", "stopped", "error")


def table_from_records(records, teacher_meta: dict | None = None, *, scheduler_stops: bool = True) -> pd.DataFrame:
    """One row per student of the given trial records; ``teacher_meta`` maps a teacher key to its
    artifact metadata (``val_acc``, ``test_acc``), which the report draws as the reference line.
    A trial that never reported anything has no rows; ``scheduler_stops``: see ``cohort_status``."""
    rows = []
    for record in records:
        status = cohort_status(record["metrics"], record["error"], record["tune_status"], scheduler_stops)
        if status is not None:
            rows.extend(member_rows(TrialSpec.from_config(record["config"]), record["metrics"], status=status,
                                    error=record["error"], cohort=record["trial_id"], teacher_meta=teacher_meta or {}))
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


def tune_dir_records(experiment_dir: str) -> list[dict]:
    """The trial records Tune has written to an experiment directory so far: each trial folder's
    last ``result.json`` line (metrics and config) and its ``error.txt``; the status comes from Tune's
    latest experiment-state file when it names the trial. Trials that reported nothing are skipped."""
    import fsspec

    folder = experiment_dir.rstrip("/")
    fs, root = fsspec.core.url_to_fs(folder)
    statuses = _tune_statuses(fs, root)
    records = []
    for result_path in sorted(fs.glob(f"{root}/*/result.json")):
        trial_dir = result_path.rsplit("/", 1)[0]
        lines = [line for line in (read_text(_url(folder, fs, result_path)) or "").splitlines() if line.strip()]
        if not lines:
            continue
        try:
            metrics = json.loads(lines[-1])
        except json.JSONDecodeError:  # a line cut short by a killed driver: the one before is whole
            if len(lines) < 2:
                continue
            metrics = json.loads(lines[-2])
        config = metrics.pop("config", None)
        if not config or "members" not in config:
            continue
        error_text = read_text(_url(folder, fs, f"{trial_dir}/error.txt"))
        error = error_text.strip().splitlines()[-1] if error_text and error_text.strip() else None
        trial_id = metrics.get("trial_id") or trial_dir.rsplit("/", 1)[-1]
        records.append({"config": config, "metrics": metrics, "error": error, "trial_id": trial_id,
                        "tune_status": statuses.get(trial_id, "RUNNING")})
    return records


def _url(folder: str, fs, path: str) -> str:
    """``path`` from ``fs`` as the URL ``read_text`` takes (local paths stay paths)."""
    return path if "://" not in folder else fs.unstrip_protocol(path)


def _tune_statuses(fs, root: str) -> dict[str, str]:
    """Trial id -> Tune's status, from Tune's newest experiment-state file (Tune's own format: read
    defensively, and an unreadable one only costs the distinction between stopped and interrupted)."""
    paths = sorted(fs.glob(f"{root}/experiment_state-*.json"))
    if not paths:
        return {}
    try:
        with fs.open(paths[-1], "r") as handle:
            state = json.load(handle)
        found = {}
        for entry in state.get("trial_data", []):
            trial = json.loads(entry[0]) if isinstance(entry, list) else entry
            found[str(trial["trial_id"])] = str(trial["status"])
        return found
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}
