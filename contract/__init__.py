"""The ground layer: the one contract every stage shares (the cell, the trial spec, the results
schema and its row builder, the metric, the method's defaults) and, in its modules, the recipe
(``contract.recipe``), the registry mechanism (``contract.registry``), seeding (``contract.seeding``)
and the storage rules (``contract.storage``).

It imports nothing of the project's other packages and no torch, Ray or Optuna, so the analysis
(pandas + plotly) reads a sweep's results on a machine without them, and every package above
imports it (``tests/test_layers.py`` checks the layers).

- ``Cell``: one (dataset, method, f, teacher, student, replicate, label noise) combination, with its
  own Optuna study. Its field names are the results table's column names, so a row reads back with
  ``Cell.from_row`` and nothing is renamed on the way. ``replicate`` is a study replicate (its own
  teacher, scores, subsets and cohort seeds); a cohort's own seed is ``CohortSpec.cohort_seed``.
  ``label_noise`` is the rate P of symmetric label noise on the training split (its own teachers and
  scores); P = 0 (clean labels) leaves every name as it was before the axis existed.
- ``teacher_ref`` / ``scores_ref``: how the plan names a teacher and a score table (the keys of the
  ``sweep.json`` artifact maps).
- ``CohortSpec``: everything one Tune trial needs besides the object-store data; the searcher
  encodes it once (``to_config``) and the trial decodes it once (``from_config``). A trial trains a
  cohort: the students of one cell that differ only in alpha (``StudentSpec``), on one stream of
  batches; ``results.csv`` has one row per student.
- ``RESULT_COLUMNS``: the columns of ``results.csv``, in order, with their dtypes; ``member_rows``
  writes a cohort's rows from what its Tune trial reported (``cohort_status``: how it ended), for the
  driver (from a ``CohortRecord``) and for the cohort itself (its own rows, ``COHORTS_DIR``) alike;
  ``rows_to_csv`` writes them; ``error_line`` is the one format of the ``error`` column.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kdsweep")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

FULL = "full"  # the method name of the f = 1.0 reference cell (every method keeps everything)
METRIC = "val_acc"  # what Optuna maximises and the scheduler compares: validation accuracy
MODE = "max"
# The method's defaults, defined once: the searched range of alpha (the weight of the distillation
# term, 0: no KD, 1: the teacher's soft labels alone) and the distillation temperature tau.
ALPHA_RANGE = (0.0, 1.0)
DEFAULT_TAU = 4.0

# The files of an experiment directory.
SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.csv"
# A sequential sweep's looks, one line per look (each the whole record then: the last line is the state):
# sweep.looks writes it, the report reads it. Not ".json": Tune copies an experiment's .json and .pkl
# files into its own folder when it resumes one and copies them back as it saves, over newer ones.
LOOKS_FILE = "looks.jsonl"
# Each cohort's own rows (``COHORTS_DIR/<cohort>.csv``, the results schema), written by its trial as it
# reports: the analysis reads a running or interrupted sweep from them, never from Tune's files.
COHORTS_DIR = "cohorts"
OPTUNA_JOURNAL = "optuna.journal"  # the default Optuna storage, inside the experiment directory
LOCK_FILE = "sweep.lock"  # held by the one sweep writing the experiment (``sweep.lock``)

# stopped: ended early by the scheduler; interrupted: the sweep stopped (Ctrl-C, a killed driver)
# before the trial finished, and ``--resume`` continues it.
STATUSES = ("completed", "stopped", "error", "interrupted")
FINAL_STATUSES = ("completed", "stopped", "error")  # a student's that will not change (``interrupted`` resumes)


def join_member_statuses(statuses) -> str:
    """A cohort reports its members' statuses as one string, "completed|stopped|..." (Tune's loggers
    take numbers and lists of numbers, not lists of strings)."""
    return "|".join(statuses)


def member_statuses(value) -> list[str]:
    """The members' statuses back from ``join_member_statuses``'s string."""
    return [] if not value else str(value).split("|")


def subset_digest(ids) -> str:
    """A short fingerprint of a set of example ids (any iterable of ints), independent of order."""
    import hashlib
    import struct

    ordered = sorted(int(i) for i in ids)
    return hashlib.sha256(struct.pack(f"<{len(ordered)}q", *ordered)).hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    dataset: str
    method: str
    fraction: float
    teacher_arch: str
    student_arch: str
    replicate: int
    label_noise: float = 0.0  # symmetric label noise rate P on the training split; 0: clean labels

    @property
    def name(self) -> str:
        """The cell's name: Optuna study names, the report and the results' ``cell`` column."""
        return (f"{self.dataset}|{self.method}|f={float(self.fraction)}|{self.teacher_arch}->{self.student_arch}"
                f"|replicate={int(self.replicate)}{_noise_suffix(self.label_noise)}")

    @property
    def teacher_ref(self) -> str:
        return teacher_ref(self.teacher_arch, self.replicate, self.label_noise)

    @property
    def scores_ref(self) -> str | None:
        """The score table this cell prunes with; None for the full-data cell."""
        return None if self.method == FULL else scores_ref(self.method, self.replicate, self.label_noise)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Cell":
        """The cell of a results row (or any mapping with the cell's column names)."""
        return cls(
            dataset=str(row["dataset"]), method=str(row["method"]), fraction=float(row["fraction"]),
            teacher_arch=str(row["teacher_arch"]), student_arch=str(row["student_arch"]),
            replicate=int(row["replicate"]), label_noise=_noise_of(row),
        )


CELL_COLUMNS = [f.name for f in fields(Cell)]


def _noise_of(row: Mapping[str, Any]) -> float:
    """A row's label noise: 0.0 where the column is missing or empty (results of older sweeps)."""
    value = row.get("label_noise")
    if value is None or value == "":
        return 0.0
    value = float(value)
    return 0.0 if value != value else value  # NaN: an empty CSV field


def _noise_suffix(label_noise: float) -> str:
    """``|noise=P`` for P > 0, else nothing: names at P = 0 are those of sweeps without the axis."""
    return f"|noise={float(label_noise)}" if float(label_noise) > 0 else ""


def teacher_ref(arch: str, replicate: int, label_noise: float = 0.0) -> str:
    return f"{arch}|replicate={int(replicate)}{_noise_suffix(label_noise)}"


def scores_ref(method: str, replicate: int, label_noise: float = 0.0) -> str:
    return f"{method}|replicate={int(replicate)}{_noise_suffix(label_noise)}"


@dataclass(frozen=True)
class StudentSpec:
    """One student of a cohort: its alpha and tau, and the Optuna trial that proposed them."""

    alpha: float
    tau: float
    optuna_trial: int


@dataclass(frozen=True)
class CohortSpec:
    """What one Tune trial trains: a cohort of students of one cell, differing only in alpha and tau,
    and how (recipe, split, subset, artifacts).

    The members share one initialisation and one stream of batches, seeded by ``cohort_seed``, which
    derives from the cell and the first member's Optuna trial number, never from the clock. With
    ``halving`` the weaker members stop early (successive halving; the alpha = 0 member never does).
    """

    cell: Cell
    cell_index: int
    members: tuple[StudentSpec, ...]
    cohort_seed: int
    halving: bool
    recipe: dict
    val_size: int | float
    split_seed: int
    selection: str
    class_balanced: bool
    teacher_key: str
    score_key: str | None
    cpus_per_trial: float
    profile: str
    version: str

    @property
    def has_baseline(self) -> bool:
        return any(m.alpha == 0 for m in self.members)

    def to_config(self) -> dict:
        """The Tune config: plain JSON-able values (the cell as a nested dict, members as a list)."""
        return asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "CohortSpec":
        config = {RENAMED_COLUMNS.get(name, name): value for name, value in config.items()}  # an older sweep's config
        values = {f.name: config[f.name] for f in fields(cls)}
        values["cell"] = Cell(**config["cell"])
        values["members"] = tuple(StudentSpec(**m) for m in config["members"])
        return cls(**values)


@dataclass(frozen=True)
class CohortSettings:
    """What every trial of a sweep shares; ``spec`` completes it into one trial's ``CohortSpec``."""

    recipe: dict
    val_size: int | float
    split_seed: int
    selection: str
    class_balanced: bool
    teacher_keys: dict  # teacher_ref -> artifact key
    score_keys: dict  # scores_ref -> artifact key
    cpus_per_trial: float
    profile: str
    version: str
    halving: bool = False

    def spec(self, cell: Cell, *, cell_index: int, members: list[StudentSpec], cohort_seed: int) -> CohortSpec:
        return CohortSpec(
            cell=cell, cell_index=cell_index, members=tuple(members), cohort_seed=int(cohort_seed), halving=self.halving,
            recipe=self.recipe, val_size=self.val_size, split_seed=self.split_seed,
            selection=self.selection, class_balanced=self.class_balanced,
            teacher_key=self.teacher_keys[cell.teacher_ref],
            score_key=None if cell.scores_ref is None else self.score_keys[cell.scores_ref],
            cpus_per_trial=self.cpus_per_trial, profile=self.profile, version=self.version,
        )


# results.csv: one row per trial, in this column order. dtype "str" columns may be empty (NaN).
RESULT_COLUMNS: dict[str, str] = {
    **{name: ("float" if name in ("fraction", "label_noise") else "int" if name == "replicate" else "str")
       for name in CELL_COLUMNS},
    "alpha": "float",
    "tau": "float",
    "cohort": "str",  # the Tune trial that trained this student with the other members of its cohort
    "member": "int",  # the student's place in its cohort
    "cohort_size": "int",
    "cohort_seed": "int",  # the cohort's initialisation and batch-order seed
    METRIC: "float",
    "test_acc": "float",
    "epochs_run": "int",
    "steps_run": "int",  # optimisation steps: epochs_run x ceil(num_train / batch size)
    "status": "str",
    "error": "str",
    "optuna_trial": "int",
    "num_train": "int",
    "subset_digest": "str",  # sha256 of the kept ids (sorted, int64): which examples the student saw
    "teacher_key": "str",
    "teacher_val_acc": "float",
    "teacher_test_acc": "float",
    "teacher_params": "int",  # the teacher's parameter count, so the analysis orders teachers without torch
    "score_key": "str",
    "selection": "str",
    "class_balanced": "bool",
    "wall_time_s": "float",
    "busy_s": "float",
    "started_at": "float",
    "finished_at": "float",
    "resumed_from_epoch": "int",
    "node_id": "str",
    "profile": "str",
    "recipe": "str",
    "version": "str",
}
# The columns without which a table is not a sweep's results (``label_noise`` is optional: results
# written before the axis existed lack it, and read as P = 0).
# Columns renamed since tables were first written (old name -> name now): a table or Tune config of an
# older sweep reads as a new one. ``trial_seed`` became ``cohort_seed`` when "trial" was left to Optuna
# and Tune, the project's words being "student" (one model, one row) and "cohort" (one Tune trial).
RENAMED_COLUMNS = {"trial_seed": "cohort_seed"}
REQUIRED_COLUMNS = [*(c for c in CELL_COLUMNS if c != "label_noise"), "alpha", METRIC, "test_acc", "status"]


@dataclass(frozen=True)
class CohortRecord:
    """What one Tune trial (a cohort) left, whichever way it is read (Tune's live trials, or its
    results at the end): every table of results is built from these. ``error``: ``error_line`` of what
    failed it, or None; ``tune_status``: Tune's (TERMINATED, ERROR, or PENDING/RUNNING/PAUSED for a run
    that was interrupted)."""

    config: dict
    metrics: dict
    error: str | None
    trial_id: str
    tune_status: str


def error_line(problem) -> str | None:
    """The one line results.csv's ``error`` column holds for a failure: ``Type: message`` of the error
    that failed the trial (for an error raised in a worker, Ray's traceback's last line, which names
    the original error), never a multi-line traceback; None for no failure."""
    if problem is None:
        return None
    lines = [line.strip() for line in str(problem).strip().splitlines() if line.strip()]
    name = type(problem).__name__ if isinstance(problem, BaseException) else ""
    if not lines:
        return name or "error"
    last = lines[-1]
    head = last.split(":", 1)[0]
    if head.isidentifier() and (head.endswith(("Error", "Exception", "Interrupt", "Exit")) or ":" in last and head == name):
        return last  # already "ValueError: ..."
    return f"{name}: {last}" if name else last


def cohort_status(metrics: dict, error: str | None, tune_status: str, scheduler_stops: bool = True) -> str | None:
    """How a cohort trial ended (``contract.STATUSES``); None for one that never started.

    Tune marks a trial TERMINATED both when the scheduler stops it early and when the sweep itself is
    stopped (Ctrl-C) while it runs; ``scheduler_stops`` False (a sweep whose scheduler never stops a
    trial: FIFO) makes every unfinished trial "interrupted", so it is not taken for a finished one."""
    if error:
        return "error"
    if metrics.get("done"):
        return "completed"
    if METRIC not in metrics:
        return None  # never reported anything: the sweep stopped before it began
    return "stopped" if tune_status == "TERMINATED" and scheduler_stops else "interrupted"


def member_rows(spec: CohortSpec, metrics: dict, *, status: str, error: str | None, cohort: str | None,
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
            "cohort_seed": spec.cohort_seed,
            METRIC: member_value("member_val_acc", i),
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
            "teacher_params": teacher.get("params"),
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


def rows_to_csv(rows: list[dict]) -> bytes:
    """Result rows as CSV text in the results schema's column order (what ``results.csv`` and a
    cohort's own file hold); None is an empty field."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(RESULT_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: ("" if v is None else v) for k, v in row.items()} for row in rows])
    return buffer.getvalue().encode()
