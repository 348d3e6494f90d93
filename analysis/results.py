"""A sweep's results as one tidy DataFrame: one row per trial, the columns the sweep writes.

    from analysis import load_experiment
    experiment = load_experiment("runs/digits-smoke-20261124-213057")   # or s3://bucket/runs/NAME
    experiment.trials        # DataFrame, one row per trial (completed, stopped and errored alike)
    experiment.sweep         # the sweep's settings (sweep.json), or {} for a bare results.csv

The location is an experiment directory (local, NFS, or any fsspec URI such as ``s3://``) holding
``results.csv`` and ``sweep.json`` as ``sweep.run`` writes them, or the path of a results CSV itself.
A sweep that is still running, or was stopped, may have no ``results.csv`` yet, or an older one than
what its trials have reported: the table is then read from the rows each cohort writes of itself as it
reports (``EXPERIMENT/cohorts/<cohort>.csv``, the same schema), whichever holds more finished trials.
Tune's own files are never read here.
Stopped and errored trials stay in the table (``status``) so a report can show them; the estimators
use only the completed ones (``completed``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from contract import ALPHA_RANGE, CELL_COLUMNS, COHORTS_DIR, FINAL_STATUSES, METRIC, RENAMED_COLUMNS, REQUIRED_COLUMNS, RESULT_COLUMNS, RESULTS_FILE, STATUSES, SWEEP_FILE, LOOKS_FILE, Cell
from contract.storage import read_text


class ResultsError(ValueError):
    """The results cannot be read or do not look like a sweep's results table."""


@dataclass
class Experiment:
    location: str
    trials: pd.DataFrame
    sweep: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what was left out of the analysis, and why
    looks: dict | None = None  # a sequential sweep's looks (``LOOKS_FILE``: ``analysis.sequential.Looks.to_dict``)

    @property
    def name(self) -> str:
        return self.sweep.get("name") or self.location.rstrip("/").rsplit("/", 1)[-1]

    @property
    def alpha_range(self) -> tuple[float, float]:
        low, high = self.sweep.get("alpha_range", ALPHA_RANGE)
        return float(low), float(high)

    @property
    def finished_trials(self) -> int:
        return int(self.trials["status"].isin(FINAL_STATUSES).sum())

    @property
    def planned_trials(self) -> int | None:
        """The sweep's planned number of trials (students), from ``sweep.json``; None if unknown. A
        sequential sweep: those of its last look and the round that look started."""
        if self.looks and self.looks.get("history"):
            last = self.looks["history"][-1]
            return int(last["students"] + last.get("added", 0))
        planned = self.sweep.get("resolved", {}).get("num_trials")
        return None if planned is None else int(planned)

    @property
    def in_progress(self) -> bool:
        """Fewer trials finished than planned: the sweep is running, or stopped and resumable. A sequential
        sweep: until its looks say why it stopped."""
        if self.looks is not None:
            return not self.looks.get("stopped")
        return self.planned_trials is not None and self.finished_trials < self.planned_trials


def load_experiment(location: str) -> Experiment:
    """The tidy trials table and the sweep settings of an experiment directory or results CSV."""
    location = str(location)
    if location.endswith(".csv"):
        csv_path, folder = location, location.rsplit("/", 1)[0] if "/" in location else "."
    else:
        folder = location.rstrip("/")
        csv_path = f"{folder}/{RESULTS_FILE}"
    sweep_text = read_text(f"{folder}/{SWEEP_FILE}")
    try:
        sweep = json.loads(sweep_text) if sweep_text else {}
    except json.JSONDecodeError:
        raise ResultsError(f"{folder}/{SWEEP_FILE} is not readable JSON") from None
    text = read_text(csv_path)
    table, source = None, csv_path
    if text is not None:
        try:
            table = read_results_csv(io.StringIO(text))
        except (ValueError, pd.errors.ParserError) as error:
            raise ResultsError(f"{csv_path} is not a readable CSV: {error}") from None
    finished = (lambda t: 0 if t is None or "status" not in t else int(t["status"].isin(FINAL_STATUSES).sum()))
    planned = sweep.get("resolved", {}).get("num_trials")
    complete = planned is not None and finished(table) >= int(planned)  # the final table: nothing newer to read
    if not location.endswith(".csv") and not complete:
        live = table_from_cohorts(folder)
        if live is not None and finished(live) > finished(table):
            table, source = live, f"the cohorts' own rows in {folder}/{COHORTS_DIR}"
    if table is None:
        raise ResultsError(
            f"no results at {csv_path}, and no trial has reported yet. A sweep writes its results as cells "
            "finish; an interrupted one continues with `python -m sweep.run --resume --name NAME --storage STORAGE`."
        )
    trials, warnings = outside_searched_range(tidy(table, source=source), sweep, source)
    try:
        looks = last_looks(read_text(f"{folder}/{LOOKS_FILE}"))
    except json.JSONDecodeError:
        looks, warnings = None, [*warnings, f"{folder}/{LOOKS_FILE} is not readable JSON: the looks are not shown"]
    return Experiment(location=location, trials=trials, sweep=sweep, warnings=warnings, looks=looks)


def read_results_csv(source) -> pd.DataFrame:
    """A results table (results.csv, or a cohort's own rows) with its text columns read as text: a Tune
    trial id such as "12e45678" would otherwise be read as the number inf, and "40213377" as an integer
    (one cohort's own file holds one such id, so its column is all numbers)."""
    return pd.read_csv(source, dtype={name: str for name, kind in RESULT_COLUMNS.items() if kind == "str"})


def last_looks(text: str | None) -> dict | None:
    """A sequential sweep's looks (``LOOKS_FILE``: a line per look, each the whole record): the last line."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else None


def outside_searched_range(trials: pd.DataFrame, sweep: dict, source: str) -> tuple[pd.DataFrame, list[str]]:
    """The trials without rows whose alpha lies outside the range the sweep searched (``sweep.json``'s
    ``alpha_range``), and a warning per such group: a row the sweep cannot have produced (an edited
    or merged table) must not bend the fits. Without a recorded range every row is kept."""
    if "alpha_range" not in sweep:
        return trials, []
    low, high = (float(v) for v in sweep["alpha_range"])
    outside = ~trials["alpha"].between(low, high)
    if not outside.any():
        return trials, []
    values = ", ".join(f"{a:g}" for a in sorted(trials.loc[outside, "alpha"].unique())[:5])
    warning = (f"{source}: {int(outside.sum())} row(s) with alpha outside the searched range [{low:g}, {high:g}] "
               f"(alpha = {values}) are left out of the analysis")
    if outside.all():
        raise ResultsError(warning.replace("are left out of the analysis", "leave no trial to analyse"))
    return trials[~outside].reset_index(drop=True), [warning]


def table_from_cohorts(folder: str) -> pd.DataFrame | None:
    """The rows each cohort wrote of itself (``COHORTS_DIR/*.csv``, the results schema), or None if
    none has reported yet."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(folder)
    frames = []
    for path in sorted(fs.glob(f"{root}/{COHORTS_DIR}/*.csv")):
        text = read_text(path if "://" not in folder else fs.unstrip_protocol(path))
        if text:
            frames.append(read_results_csv(io.StringIO(text)))
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True).sort_values([*CELL_COLUMNS, "optuna_trial"], ignore_index=True)


def experiment_from_table(location: str, table: pd.DataFrame, sweep: dict) -> Experiment:
    """An experiment from a results table in memory (the driver's live report)."""
    return Experiment(location=str(location), trials=tidy(table, source="the live results"), sweep=sweep)


def completed(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials every estimator reads: completed, with a validation accuracy (stopped and errored
    trials stay in the table for the report to show, never in an estimate)."""
    return trials[(trials["status"] == "completed") & trials["val_acc"].notna()]


def tidy(raw: pd.DataFrame, source: str = "results") -> pd.DataFrame:
    """Check a raw results table and give it stable types, a ``cell`` name and ``is_baseline``."""
    raw = raw.rename(columns=RENAMED_COLUMNS)  # a table written before a column was renamed
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise ResultsError(f"{source} is not a sweep results table: it lacks the columns {', '.join(missing)}")
    if raw.empty:
        raise ResultsError(f"{source} has no trials")
    frame = raw.copy()
    for column in ("fraction", "alpha", METRIC, "test_acc", "tau", "teacher_val_acc", "teacher_test_acc", "teacher_params"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["replicate"] = pd.to_numeric(frame["replicate"], errors="coerce").fillna(0).astype(int)
    # label noise P: results of sweeps before the axis existed have no column, or empty fields: P = 0
    noise = frame["label_noise"] if "label_noise" in frame else pd.Series(0.0, index=frame.index)
    frame["label_noise"] = pd.to_numeric(noise, errors="coerce").fillna(0.0).astype(float)
    for column in ("dataset", "method", "teacher_arch", "student_arch", "status"):
        frame[column] = frame[column].astype(str)

    bad_status = sorted(set(frame["status"]) - set(STATUSES))
    if bad_status:
        raise ResultsError(f"{source}: unknown trial status {bad_status}; expected one of {list(STATUSES)}")
    fraction = frame["fraction"]
    if fraction.isna().any() or not ((fraction > 0) & (fraction <= 1)).all():
        raise ResultsError(f"{source}: every fraction must be a number in (0, 1]")
    if not frame["label_noise"].between(0, 1, inclusive="left").all():
        raise ResultsError(f"{source}: every label_noise must be a number in [0, 1)")
    if frame["alpha"].isna().any():
        raise ResultsError(f"{source}: {int(frame['alpha'].isna().sum())} trials have no alpha")
    done = frame["status"] == "completed"
    if frame.loc[done, METRIC].isna().any():
        raise ResultsError(f"{source}: completed trials without a validation accuracy")

    for column in ("teacher_val_acc", "teacher_test_acc", "teacher_params"):  # tables written before they were recorded
        if column not in frame:
            frame[column] = np.nan
    frame["cell"] = [Cell.from_row(row).name for row in frame[CELL_COLUMNS].to_dict("records")]  # the plan's names
    frame["is_baseline"] = frame["alpha"] == 0.0
    return frame.sort_values([*CELL_COLUMNS, "alpha"], kind="stable", ignore_index=True)
