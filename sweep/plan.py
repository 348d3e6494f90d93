"""The plan of a sweep: its settings, validated, and the cells they expand to.

A cell (``contract.Cell``) is one (dataset, method, f, teacher, student, replicate, label noise)
combination with its own Optuna study over alpha (and tau when searched). f = 1.0 is the full-data
reference: every method keeps everything, so it is one cell with method ``full`` per (teacher,
student, replicate, label noise). A replicate has its own teacher, scores, subsets, trial seeds and
sampler seeds; a label noise level P its own noisy training labels
(``trainables.splits.with_label_noise``), teachers and scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from search_spaces.alpha_space import DEFAULT_DESIGN, AlphaSpace
from search_spaces.profiles import list_profiles, profile_for
from contract import ALPHA_RANGE, DEFAULT_TAU, FULL, Cell
from trainables.datasets import check_dataset_spec
from trainables.models import check_model_name
from contract.recipe import Recipe
from trainables.scorers import list_methods, score_option_problems
from trainables.selection import STRATEGIES, check_fraction

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
SCHEDULERS = ("fifo", "asha")
# --until-answered: its words for the kinds of question (``analysis.sequential``); "all" is every kind
UNTIL_ANSWERED = {"direction": ("alpha-f direction",), "kd-gain": ("kd gain",),
                  "random-vs-scored": ("random versus scored",),
                  "all": ("alpha-f direction", "kd gain", "random versus scored")}
DEFAULT_MAX_TRIALS = 64  # students per cell a sequential sweep (or --target-power) may reach by default


@dataclass
class SweepConfig:
    """Everything a sweep was asked to do; saved as ``sweep.json`` in the experiment directory so a
    resumed sweep runs the same plan."""

    dataset: str
    name: str
    storage: str
    profile: str = "fast"
    methods: list[str] | None = None  # None: the profile's, else every method
    fractions: list[float] | None = None  # None: the profile's, else DEFAULT_FRACTIONS
    teachers: list[str] = field(default_factory=list)  # empty: the profile's
    students: list[str] = field(default_factory=list)
    trials_per_cell: int | None = None  # None: the profile's
    cohort_size: int | None = None  # students per Tune trial; None: every trial of a cell in one cohort
    halving: bool = False  # successive halving inside each cohort
    alpha_range: tuple[float, float] = ALPHA_RANGE
    tau: list[float] = field(default_factory=lambda: [DEFAULT_TAU])  # one value: fixed; two: searched (log scale)
    alpha_design: str = DEFAULT_DESIGN
    replicates: list[int] = field(default_factory=lambda: [0])
    label_noise: list[float] = field(default_factory=lambda: [0.0])  # symmetric label noise rates P in [0, 1)
    score_seeds: int | None = None  # None: the profile's
    score_options: dict[str, dict] = field(default_factory=dict)  # {method: {option: value}}, --score-option
    plugins: list[str] = field(default_factory=list)  # the user's modules with entries (--plugin; files made absolute)
    epochs: int | None = None  # None: the profile's recipe
    min_steps: int | None = None  # None: the profile's recipe
    batch_size: int | None = None  # None: the profile's recipe
    lr: float | None = None  # None: the profile's recipe
    selection: str = "hard"
    class_balanced: bool = False
    val_size: int | float | None = None  # None: the dataset's default
    split_seed: int = 0
    data_dir: str | None = None
    offline: bool = False  # never download a missing dataset (older sweep.json files say "download": ignored)
    artifacts: str | None = None  # None: STORAGE/artifacts
    optuna_storage: str | None = None  # None: a journal file in the experiment directory
    scheduler: str = "fifo"
    gpus_per_trial: float | None = None  # None: 1 when the cluster has GPUs, else 0
    cpus_per_trial: float = 1.0
    max_concurrent: int | None = None
    max_failures: int = 2
    # A sequential sweep (--until-answered): the kinds of question it runs until it has answered
    # (``UNTIL_ANSWERED``), None for a fixed one; at most ``max_trials`` students per cell, and no round
    # started after ``budget_hours`` of the sweep's wall time (where and how: may change on --resume).
    until_answered: list[str] | None = None
    max_trials: int | None = None
    budget_hours: float | None = None

    def check(self) -> None:
        """Raise ``ValueError`` with every problem found, before anything starts."""
        problems = []

        def attempt(check, *args):
            try:
                check(*args)
            except (ValueError, KeyError, FileNotFoundError) as error:
                problems.append(str(error))

        attempt(check_dataset_spec, self.dataset)
        if self.profile not in list_profiles():
            problems.append(f"unknown profile {self.profile!r}; choose one of {list_profiles()}")
        for method in self.methods or []:
            if method not in list_methods():
                problems.append(f"unknown method {method!r}; choose from {list_methods()}")
        if self.methods == [] and any(f < 1 for f in self.fractions or []):
            problems.append("no methods given for fractions below 1")
        if self.fractions == []:
            problems.append("no fractions given")
        for f in self.fractions or []:
            attempt(check_fraction, f)
        for arch in self.teachers + self.students:
            attempt(check_model_name, arch)
        if self.cohort_size is not None and self.cohort_size < 1:
            problems.append(f"--cohort-size must be >= 1, got {self.cohort_size}")
        if self.trials_per_cell is not None and self.trials_per_cell < 1:
            problems.append(f"--trials-per-cell must be >= 1, got {self.trials_per_cell}")
        problems.extend(self.alpha_space.problems())
        if not self.replicates or len(set(self.replicates)) != len(self.replicates) or min(self.replicates) < 0:
            problems.append(f"--replicates must be distinct integers >= 0, got {self.replicates}")
        noise = [float(p) for p in self.label_noise or []]
        if not noise or len(set(noise)) != len(noise) or not all(0 <= p < 1 for p in noise):
            problems.append(f"--label-noise must be distinct rates in [0, 1) (the fraction of training labels "
                            f"flipped to another class), got {self.label_noise}")
        problems.extend(score_option_problems(self.score_options))
        for method in self.score_options:
            if self.methods is not None and method in list_methods() and method not in self.methods:
                problems.append(f"--score-option {method}.*: {method} is not among --methods {self.methods}")
        if self.score_seeds is not None and self.score_seeds < 1:
            problems.append(f"--score-seeds must be >= 1, got {self.score_seeds}")
        if self.epochs is not None and self.epochs < 1:
            problems.append(f"--epochs must be >= 1, got {self.epochs}")
        if self.min_steps is not None and self.min_steps < 0:
            problems.append(f"--min-steps must be >= 0, got {self.min_steps}")
        if self.batch_size is not None and self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"--lr must be > 0, got {self.lr}")
        if self.selection not in STRATEGIES:
            problems.append(f"unknown selection {self.selection!r}; choose one of {STRATEGIES}")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"unknown scheduler {self.scheduler!r}; choose one of {SCHEDULERS}")
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
            problems.append(f"--gpus-per-cohort must be >= 0, got {self.gpus_per_trial}")
        if self.cpus_per_trial <= 0:
            problems.append(f"--cpus-per-cohort must be > 0, got {self.cpus_per_trial}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            problems.append(f"--max-concurrent must be >= 1, got {self.max_concurrent}")
        if "://" in self.storage and not self.storage.startswith("file://") and self.optuna_storage is None:
            problems.append("with a remote --storage, give --optuna-storage (an SQLAlchemy URL or a shared journal file)")
        for kind in self.until_answered or []:
            if kind not in UNTIL_ANSWERED:
                problems.append(f"--until-answered: unknown question {kind!r}; choose from {', '.join(UNTIL_ANSWERED)}")
        if self.until_answered is None and self.budget_hours is not None:
            problems.append("--budget-hours bounds a sequential sweep: give --until-answered too")
        if self.budget_hours is not None and not self.budget_hours > 0:
            problems.append(f"--budget-hours must be > 0, got {self.budget_hours}")
        if self.until_answered is not None and self.max_trials is not None and self.trials_per_cell is not None \
                and self.max_trials < self.trials_per_cell:
            problems.append(f"--max-trials {self.max_trials} is below --trials-per-cell {self.trials_per_cell}, the "
                            "students per cell at the first look")
        if self.max_failures < 0:
            problems.append(f"--max-failures must be >= 0, got {self.max_failures}")
        if self.val_size is not None and not (self.val_size >= 1 if isinstance(self.val_size, int) else 0 < self.val_size < 1):
            problems.append(f"--val-size must be a count >= 1 or a fraction in (0, 1), got {self.val_size}")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            problems.append(f"--name must be a non-empty name without '/', got {self.name!r}")
        if problems:
            raise ValueError("invalid sweep:\n  - " + "\n  - ".join(problems))

    @property
    def alpha_space(self) -> AlphaSpace:
        return AlphaSpace(tuple(self.alpha_range), tuple(self.tau), self.alpha_design)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SweepConfig":
        """The settings of a ``sweep.json`` (its other keys, such as the resolved plan, are ignored)."""
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.alpha_range = tuple(config.alpha_range)
        config.label_noise = [float(p) for p in config.label_noise]  # older sweep.json files: [0.0]
        return config


@dataclass
class SweepPlan:
    config: SweepConfig
    recipe: Recipe
    teachers: list[str]
    students: list[str]
    trials_per_cell: int
    score_seeds: int
    val_size: int | float
    cells: list[Cell]
    # Filled in by ``sweep.stages.resolve_artifacts``: the artifact key of every teacher and score
    # table, by ``contract.teacher_ref`` / ``scores_ref``.
    teacher_keys: dict[str, str] = field(default_factory=dict)
    score_keys: dict[str, str] = field(default_factory=dict)

    @property
    def num_trials(self) -> int:
        """Students trained in all (each an Optuna trial of its cell's study)."""
        return len(self.cells) * self.trials_per_cell

    @property
    def cohort_size(self) -> int:
        return min(self.config.cohort_size or self.trials_per_cell, self.trials_per_cell)

    @property
    def num_cohorts(self) -> int:
        """Tune trials: each cell's students in cohorts of ``cohort_size`` (a sequential sweep: at its
        first look)."""
        return len(self.cells) * -(-self.trials_per_cell // self.cohort_size)

    @property
    def sequential(self):
        """The ``analysis.sequential.SequentialDesign`` of a sequential sweep, else None: the first look
        at ``trials_per_cell`` students per cell, a cohort more per round, at most ``--max-trials``."""
        if self.config.until_answered is None:
            return None
        from analysis.sequential import SequentialDesign

        return SequentialDesign(self.trials_per_cell, self.cohort_size, self.config.max_trials or DEFAULT_MAX_TRIALS)

    def check_questions(self) -> None:
        """Refuse a sequential sweep whose questions its cells cannot ask (it would stop at its first look
        with nothing answered)."""
        kinds = self.question_kinds if self.sequential else ()
        words = " ".join(self.config.until_answered or [])
        if "alpha-f direction" in kinds and len(self.fractions) < 3:
            raise ValueError(f"--until-answered {words}: the alpha-f direction needs at least 3 distinct fractions (the "
                             f"f = 1 cell counts), the sweep has {len(self.fractions)}; add fractions or ask another question")
        if "random versus scored" in kinds and ("random" not in self.scored_methods or len(self.scored_methods) < 2):
            raise ValueError(f"--until-answered {words}: random against scored needs random and a score-based method "
                             "among --methods")

    @property
    def question_kinds(self) -> tuple[str, ...]:
        """The kinds of question a sequential sweep runs until it has answered."""
        kinds = self.config.until_answered or []
        return tuple(dict.fromkeys(k for word in kinds or ["direction"] for k in UNTIL_ANSWERED[word]))

    @property
    def max_cohorts(self) -> int:
        """The most Tune trials the sweep can run: a sequential sweep's every round gives a cell one cohort
        more, and its last look is taken in one request for a trial more (answered: finished)."""
        design = self.sequential
        if design is None:
            return self.num_cohorts
        return len(self.cells) * (-(-design.first // design.step) + -(-(design.most - design.first) // design.step)) + 1

    @property
    def most_trials(self) -> int:
        """The most students the sweep can train."""
        design = self.sequential
        return len(self.cells) * (design.most if design else self.trials_per_cell)

    @property
    def scored_methods(self) -> list[str]:
        """Methods that need a score table (every method of a cell with f < 1)."""
        return sorted({c.method for c in self.cells if c.method != FULL})

    @property
    def methods(self) -> list[str]:
        return sorted({c.method for c in self.cells})

    @property
    def fractions(self) -> list[float]:
        return sorted({c.fraction for c in self.cells})

    @property
    def label_noise(self) -> list[float]:
        """The label noise rates P of the sweep, as floats, in the order given."""
        return [float(p) for p in self.config.label_noise]

    def resolved(self) -> dict:
        """What the settings resolved to, recorded in ``sweep.json`` next to them: a resumed sweep
        runs this plan, with these artifacts, or refuses."""
        return {
            "methods": self.methods,
            "fractions": self.fractions,
            "recipe": self.recipe.to_dict(),
            "teachers": self.teachers,
            "students": self.students,
            "trials_per_cell": self.trials_per_cell,
            "num_cells": len(self.cells),
            "num_trials": self.num_trials,
            "cohort_size": self.cohort_size,
            "score_seeds": self.score_seeds,
            "val_size": self.val_size,
            "teacher_keys": self.teacher_keys,
            "score_keys": self.score_keys,
        }


def make_plan(config: SweepConfig) -> SweepPlan:
    config.check()
    from search_spaces.defaults import defaults_for

    profile = profile_for(config.profile, config.dataset)
    overrides = {"epochs": config.epochs, "min_steps": config.min_steps, "batch_size": config.batch_size, "lr": config.lr}
    recipe = profile.recipe.replace(**{key: value for key, value in overrides.items() if value is not None})
    methods = list(config.methods or profile.methods or list_methods())
    fractions = sorted(set(config.fractions or profile.fractions or DEFAULT_FRACTIONS))
    teachers = config.teachers or [profile.teacher_arch]
    students = config.students or [profile.student_arch]
    cells = []
    for replicate in config.replicates:
        for noise in config.label_noise:
            for teacher in teachers:
                for student in students:
                    for fraction in fractions:
                        for method in [FULL] if fraction == 1.0 else methods:
                            cells.append(Cell(config.dataset, method, float(fraction), teacher, student, replicate,
                                              float(noise)))
    return SweepPlan(
        config=config,
        recipe=recipe,
        teachers=teachers,
        students=students,
        trials_per_cell=config.trials_per_cell or profile.trials_per_cell,
        score_seeds=config.score_seeds or profile.score_seeds,
        val_size=defaults_for(config.dataset).val_size if config.val_size is None else config.val_size,
        cells=cells,
    )
