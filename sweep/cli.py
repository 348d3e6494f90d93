"""The sweep's command line: its parser (every flag, with help texts listed from the registries), the
settings it gives (``SweepConfig``), the checks of a ``--resume`` command line against the recorded
sweep, and the plan as ``--dry-run`` prints it."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from contract import ALPHA_RANGE, DEFAULT_TAU
from search_spaces.alpha_space import DEFAULT_DESIGN, list_designs
from sweep import ray_adapter
from sweep.plan import DEFAULT_FRACTIONS, DEFAULT_MAX_TRIALS, SCHEDULERS, UNTIL_ANSWERED, SweepConfig, SweepPlan
from analysis.power import TRUTHS as PLAN_TRUTHS
from sweep.planner import DEFAULT_PLAN_SWEEPS
from trainables.cli import add_download_args, val_size_arg
from trainables.datasets import list_datasets
from trainables.models import list_models
from trainables.scorers import list_methods, parse_score_options, score_option_names
from trainables.selection import STRATEGIES


EXAMPLES = """examples:
  on a laptop (an embedded local Ray; about three minutes on 2 CPU cores):
    python -m sweep.run --dataset digits --profile demo --name demo
  on a cluster (after `ray up cluster.yaml`; results on the shared file system):
    python -m sweep.run --dataset svhn --address auto --gpus-per-cohort 0.25 --storage /mnt/shared/runs --name svhn-fast
  continue a stopped sweep (finished trials are kept; same --storage):
    python -m sweep.run --resume --name svhn-fast --storage /mnt/shared/runs
"""


def build_parser() -> argparse.ArgumentParser:
    from search_spaces.profiles import list_profiles

    p = argparse.ArgumentParser(
        prog="python -m sweep.run",
        description="Sweep the distillation weight alpha over every (method, f) cell of a dataset with "
        "Ray Tune + Optuna: teachers and pruning scores first (cached), then one experiment over all cells.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to sweep")
    what.add_argument("--dataset", help=f"{', '.join(list_datasets())} (required unless --resume)")
    what.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                      help=f"pruning methods (default: the profile's, else all of {' '.join(list_methods())})")
    what.add_argument("--fractions", nargs="+", type=float, default=None, metavar="F",
                      help="kept fractions f in (0, 1]; 1.0 is the full-data reference cell (default: the profile's, "
                      f"else {' '.join(map(str, DEFAULT_FRACTIONS))})")
    what.add_argument("--profile", default="fast", choices=list_profiles(),
                      help="smoke: minutes on a laptop CPU; fast: minutes per student on a GPU; paper: the literature's recipe (default fast)")
    what.add_argument("--trials-per-cell", type=int, default=None, help="Optuna trials per cell, the alpha = 0 baseline included (default: the profile's)")
    what.add_argument("--cohort-size", type=int, default=None, metavar="K",
                      help="students trained together in one trial (one upload, one batch stream, one teacher forward "
                      "per batch, paired comparisons); default: all trials of a cell in one cohort")
    what.add_argument("--halving", action="store_true",
                      help="successive halving inside each cohort: weak members stop early (never the alpha = 0 one)")
    what.add_argument("--teacher", nargs="+", default=[], metavar="ARCH", dest="teachers",
                      help="teacher architectures; several for the capacity study (default: the profile's); "
                      f"models: {' '.join(list_models())}")
    what.add_argument("--student", nargs="+", default=[], metavar="ARCH", dest="students",
                      help="student architectures (default: the profile's)")
    what.add_argument("--alpha-range", nargs=2, type=float, default=list(ALPHA_RANGE), metavar=("LOW", "HIGH"),
                      help="search range of alpha, the weight of the distillation term (default %(default)s)")
    what.add_argument("--tau", nargs="+", type=float, default=[DEFAULT_TAU],
                      help="temperature: one value (fixed) or LOW HIGH (searched on a log scale); default %(default)s")
    what.add_argument("--alpha-design", default=DEFAULT_DESIGN, choices=list_designs(),
                      help=f"how each cell's alphas are chosen (default {DEFAULT_DESIGN}; see search_spaces/alpha_space.py)")
    what.add_argument("--replicates", "--seeds", nargs="+", type=int, default=[0], dest="replicates", metavar="R",
                      help="study replicates: each has its own teacher, scores, subsets and trial seeds (default 0)")
    what.add_argument("--label-noise", nargs="+", type=float, default=[0.0], metavar="P",
                      help="symmetric label noise rates P in [0, 1): each level flips P of the training split's labels "
                      "to another class (seeded from the split seed and P; validation and test labels stay clean) and "
                      "has its own teachers, scores and cells (default 0: clean labels)")
    what.add_argument("--score-seeds", type=int, default=None, help="scoring runs per method (default: the profile's)")
    what.add_argument("--score-option", action="append", default=[], metavar="METHOD.FIELD=VALUE", dest="score_options",
                      help="a pruning method's own option, part of its score tables' keys (repeatable): "
                      + ", ".join(score_option_names()))
    what.add_argument("--plugin", action="append", default=[], metavar="MODULE", dest="plugins",
                      help="a module of your own that registers models, datasets, pruning methods, alpha designs or "
                      "figures (a module name or a .py file; repeatable): imported here and by every worker")
    what.add_argument("--epochs", type=int, default=None, help="override the profile recipe's epochs")
    what.add_argument("--min-steps", type=int, default=None,
                      help="override the profile recipe's minimum optimisation steps per run (small subsets train more epochs)")
    what.add_argument("--batch-size", type=int, default=None, help="override the profile recipe's training batch size")
    what.add_argument("--lr", type=float, default=None, help="override the profile recipe's peak learning rate")
    what.add_argument("--selection", default="hard", choices=STRATEGIES, help="which examples a score keeps (default hard)")
    what.add_argument("--class-balanced", action="store_true", help="keep f of every class")
    what.add_argument("--val-size", type=val_size_arg, default=None, help="validation split: a count or a fraction (default: the dataset's)")
    what.add_argument("--data-dir", default=None, help="dataset files (default $KDSWEEP_DATA_DIR or ./data)")
    add_download_args(what)

    where = p.add_argument_group("where and how")
    where.add_argument("--name", default=None, help="experiment name (default DATASET-PROFILE-TIMESTAMP; required with --resume)")
    where.add_argument("--storage", default="runs", help="results directory or URI (s3://, gs://, NFS path); default ./runs")
    where.add_argument("--artifacts", default=None, help="artifact cache (teachers, scores); default STORAGE/artifacts")
    where.add_argument("--optuna-storage", default=None,
                       help="Optuna storage: SQLAlchemy URL or journal file (default: a journal file in the experiment directory)")
    where.add_argument("--address", default=None, help="Ray cluster address ('auto' on a cluster); default: an embedded local Ray")
    # A cohort is one Tune trial; the old names (--gpus-per-trial, --cpus-per-trial) still work.
    where.add_argument("--gpus-per-cohort", "--gpus-per-trial", type=float, default=None, dest="gpus_per_trial",
                       help="GPUs per cohort (one Tune trial), fractions allowed (0.25: four cohorts per GPU); default 1 if "
                       "the cluster has GPUs, else 0")
    where.add_argument("--cpus-per-cohort", "--cpus-per-trial", type=float, default=1.0, dest="cpus_per_trial",
                       help="CPUs per cohort and per stage task (default 1)")
    where.add_argument("--wait-for-nodes", type=float, default=600.0, metavar="SECONDS",
                       help="with --address: when no node fits a trial yet, ask the autoscaler for one and wait this long "
                       "before refusing (default 600)")
    where.add_argument("--allow-cpu-fallback", action="store_true",
                       default=ray_adapter.cpu_fallback_from_env(),
                       help="a trial or stage task given a GPU that CUDA cannot see (a broken driver; a rehearsal "
                       "cluster's declared GPUs) runs on the CPU with a warning instead of failing with an error "
                       f"(default: off, or on with {ray_adapter.CPU_FALLBACK_ENV}=1)")
    where.add_argument("--max-concurrent", type=int, default=None, help="at most this many trials at once (default: as resources allow)")
    where.add_argument("--scheduler", default="fifo", choices=SCHEDULERS, help="fifo, or asha: early stopping within each cell (default fifo)")
    where.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial, from its last checkpoint (default 2)")
    where.add_argument("--resume", action="store_true", help="continue the experiment --name: finished trials are kept")
    where.add_argument("--verbose", action="store_true",
                       help="Ray Tune's trial tables and every trial's log lines (default: one line per finished trial)")
    where.add_argument("--report-every", type=float, default=120.0, metavar="SECONDS",
                       help="while the sweep runs, rewrite results.csv and the report when a cell finishes, at most this "
                       "often (default 120; the first finished cell at once)")
    where.add_argument("--dry-run", action="store_true",
                       help="print the plan (cells, trials, artifacts to compute or reuse, resources, the compute and the "
                       "power of each question of the report) and stop")
    planning = p.add_argument_group("planning (printed by --dry-run and at the start of every sweep; sweep.planner)")
    planning.add_argument("--noise-from", metavar="EXPERIMENT", default=None,
                          help="an earlier experiment (directory or results.csv) of this recipe: its measured signal to "
                          "noise sets the planned power, its pace the planned time (default: the simulator's noise, no time)")
    planning.add_argument("--plan-sweeps", type=int, default=None, metavar="N",
                          help=f"simulated sweeps for the planned power (default: {DEFAULT_PLAN_SWEEPS} in --dry-run, none "
                          "before a sweep, where they would delay its start by about a minute; 0: none)")
    planning.add_argument("--target-power", type=float, default=None, metavar="P",
                          help="choose the students per cell (instead of --trials-per-cell): the fewest at which every "
                          "alpha-f direction question (each method's and the pooled one) has power P (0.8: 80 %%) "
                          "against --plan-truth at the planned noise; refused when --max-trials "
                          "does not reach it")
    planning.add_argument("--max-trials", type=int, default=DEFAULT_MAX_TRIALS, metavar="N",
                          help="with --target-power or --until-answered: at most this many students per cell "
                          f"(default {DEFAULT_MAX_TRIALS})")
    planning.add_argument("--until-answered", nargs="*", default=None, choices=list(UNTIL_ANSWERED), metavar="QUESTION",
                          help="a sequential sweep: the first look at --trials-per-cell students per cell, then rounds that "
                          "double the cells of the questions still open (in whole cohorts), each look testing them at its share "
                          "of the 5 %% error rate, until the questions are answered or --max-trials / --budget-hours is "
                          "reached. QUESTION: " + ", ".join(UNTIL_ANSWERED) + " (default direction: the alpha-f "
                          "direction per method and pooled)")
    planning.add_argument("--budget-hours", type=float, default=None, metavar="H",
                          help="with --until-answered: start no round after H hours of the students' wall time "
                          "(summed over resumes; may change on --resume)")
    planning.add_argument("--plan-truth", default="inverse", choices=list(PLAN_TRUTHS),
                          help="the simulated truth the power is planned against: " + "; ".join(
                              f"{name}: {text}" for name, text in PLAN_TRUTHS.items()) + " (default inverse)")
    return p


def config_from_args(args) -> SweepConfig:
    # An empty --name is a mistake (config.check refuses it), not a request for the default name.
    name = args.name if args.name is not None else \
        f"{(args.dataset or 'sweep').replace(':', '_').replace('/', '_')}-{args.profile}-{time.strftime('%Y%m%d-%H%M%S')}"
    return SweepConfig(
        dataset=args.dataset, name=name, storage=args.storage, profile=args.profile, methods=args.methods,
        fractions=args.fractions, cohort_size=args.cohort_size, halving=args.halving, teachers=args.teachers, students=args.students, trials_per_cell=args.trials_per_cell,
        alpha_range=tuple(args.alpha_range), tau=args.tau, alpha_design=args.alpha_design, replicates=args.replicates,
        label_noise=[float(p) for p in args.label_noise],
        score_seeds=args.score_seeds, score_options=parse_score_options(args.score_options),
        plugins=[str(Path(spec).resolve()) if spec.endswith(".py") else spec for spec in args.plugins],
        epochs=args.epochs, min_steps=args.min_steps, batch_size=args.batch_size, lr=args.lr, selection=args.selection, class_balanced=args.class_balanced,
        val_size=args.val_size, data_dir=args.data_dir, offline=args.offline, artifacts=args.artifacts,
        optuna_storage=args.optuna_storage, scheduler=args.scheduler, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent, max_failures=args.max_failures,
        until_answered=None if args.until_answered is None else list(args.until_answered or ["direction"]),
        max_trials=args.max_trials if args.until_answered is not None else None, budget_hours=args.budget_hours,
    )


def experiment_dir(config: SweepConfig) -> str:
    storage = config.storage if "://" in config.storage else os.path.abspath(config.storage)
    return f"{storage.rstrip('/')}/{config.name}"


def describe(plan: SweepPlan, status: dict, resources: dict, where: dict) -> str:
    config = plan.config
    lines = [
        f"sweep {config.name}: dataset {config.dataset}, profile {config.profile}",
        f"  recipe: {plan.recipe.epochs} epochs (and at least {plan.recipe.min_steps} steps), batch {plan.recipe.batch_size}, "
        f"lr {plan.recipe.lr}, {plan.recipe.schedule}",
        f"  cells: {len(plan.cells)} x {plan.trials_per_cell} trials = {plan.num_trials} trials in {plan.num_cohorts} "
        f"cohorts of up to {plan.cohort_size}{' with halving' if config.halving else ''} "
        f"(alpha in [{config.alpha_range[0]}, {config.alpha_range[1]}], tau {' to '.join(map(str, config.tau))}, "
        f"design {config.alpha_design}; alpha = 0 first in every cell)",
    ]
    design = plan.sequential
    if design is not None:
        lines.append(f"  sequential (--until-answered {' '.join(config.until_answered)}): looks at "
                     f"{', '.join(map(str, design.schedule))} students per cell, each round bringing the cells of the "
                     f"questions still open to the next size, at most {design.most} per cell ({design.looks} looks and "
                     f"{plan.most_trials} students at most"
                     f"{f'; no round started after {config.budget_hours:g} h' if config.budget_hours else ''})")
    if plan.label_noise != [0.0]:
        lines.append(f"  label noise: {', '.join(f'P = {p:g}' for p in plan.label_noise)} (symmetric, training split "
                     f"only, seeded from split seed {config.split_seed} and P; each level its own teachers and scores)")
    for cell in plan.cells:
        lines.append(f"    {cell.name}")
    lines.append("  artifacts:")
    for kind in ("teachers", "scores"):
        for ref, (key, present) in status[kind].items():
            lines.append(f"    {kind[:-1]} {ref}: {'reuse' if present else 'compute'} ({key})")
    lines.append(f"  scoring runs per method: {plan.score_seeds}")
    lines.append(f"  resources per trial and task: {resources['cpu']} CPU, {resources['gpu']} GPU; "
                 f"max concurrent {config.max_concurrent or 'as resources allow'}; scheduler {config.scheduler}")
    for label, value in where.items():
        lines.append(f"  {label}: {value}")
    return "\n".join(lines)


# What a sweep sweeps: fixed once it started. (Where and how it runs may change on --resume.)
SWEEP_DEFINING = (
    "dataset", "profile", "methods", "fractions", "cohort_size", "halving", "teachers", "students", "trials_per_cell",
    "alpha_range", "tau", "alpha_design", "replicates", "label_noise", "score_seeds", "score_options", "epochs", "min_steps", "batch_size",
    "lr", "selection", "class_balanced", "val_size", "scheduler", "until_answered", "max_trials",
)


def check_resume_flags(parser: argparse.ArgumentParser, argv: list[str] | None, recorded: SweepConfig) -> None:
    """Refuse ``--resume`` with sweep-defining flags whose values differ from the recorded ones,
    listing every difference (silently ignoring them would run another sweep than the user asked for)."""
    given = build_parser()
    for action in given._actions:
        action.default = argparse.SUPPRESS  # parse again, keeping only what was typed
    typed = vars(given.parse_args(argv))
    asked = config_from_args(parser.parse_args(argv))
    differences = []
    for name in SWEEP_DEFINING:
        if name in typed:
            now, then = getattr(asked, name), getattr(recorded, name)
            if (list(now) if isinstance(now, (list, tuple)) else now) != (list(then) if isinstance(then, (list, tuple)) else then):
                flag = {"teachers": "teacher", "students": "student"}.get(name, name).replace("_", "-")
                differences.append(f"--{flag}: {now} (the sweep has {then})")
    if differences:
        raise ValueError("--resume continues the recorded sweep; these flags would change what it sweeps:\n  - "
                         + "\n  - ".join(differences) + "\nDrop them, or start a new sweep with another --name.")


def resume_command(config: SweepConfig) -> str:
    return f"python -m sweep.run --resume --name {config.name} --storage {config.storage}"
