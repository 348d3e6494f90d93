"""The whole study as one Ray Tune experiment.

    python -m sweep.run --dataset digits --profile smoke
    python -m sweep.run --dataset svhn --address auto --gpus-per-trial 0.25 --storage /mnt/shared/runs

Stages: teachers (Ray tasks, cached) -> pruning scores (Ray tasks per run, cached) -> the object store
-> one Tune experiment over every cell (one Optuna study per cell) -> ``results.csv`` -> ``report.html``
(``analysis.report``: the optimal alpha of every cell, the alpha-f fit, plotly figures).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import contract
from search_spaces.alpha_space import DEFAULT_DESIGN, list_designs
from sweep import console, ray_adapter
from sweep.console import say
from contract import ALPHA_RANGE, DEFAULT_TAU, FINAL_STATUSES, METRIC, MODE, SWEEP_FILE, TrialSettings
from sweep.lock import ExperimentLock
from sweep.optuna_storage import check_optuna_storage, default_optuna_url, local_path
from sweep.state_check import check_journal, check_tune_state
from sweep.stopping import DiskWatch, StopSignals, space_needed
from sweep.plan import DEFAULT_FRACTIONS, SCHEDULERS, SweepConfig, SweepPlan, make_plan
from trainables.artifacts import CORE_BY_KIND, ArtifactStore, code_for
from trainables.cli import add_download_args, val_size_arg
from trainables.datasets import list_datasets
from trainables.models import list_models
from trainables.scores import list_methods, parse_score_options, score_option_names
from trainables.selection import STRATEGIES
from contract.storage import check_writable, read_text, write_bytes


EXAMPLES = """examples:
  on a laptop (an embedded local Ray; about three minutes on 2 CPU cores):
    python -m sweep.run --dataset digits --profile demo --name demo
  on a cluster (after `ray up cluster.yaml`; results on the shared file system):
    python -m sweep.run --dataset svhn --address auto --gpus-per-trial 0.25 --storage /mnt/shared/runs --name svhn-fast
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
    where.add_argument("--gpus-per-trial", type=float, default=None,
                       help="GPUs per trial, fractions allowed (0.25: four trials per GPU); default 1 if the cluster has GPUs, else 0")
    where.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default 1)")
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
    where.add_argument("--dry-run", action="store_true", help="print the plan (cells, trials, artifacts to compute or reuse, resources) and stop")
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
        epochs=args.epochs, min_steps=args.min_steps, batch_size=args.batch_size, lr=args.lr, selection=args.selection, class_balanced=args.class_balanced,
        val_size=args.val_size, data_dir=args.data_dir, offline=args.offline, artifacts=args.artifacts,
        optuna_storage=args.optuna_storage, scheduler=args.scheduler, gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial, max_concurrent=args.max_concurrent, max_failures=args.max_failures,
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("optuna", "ray", "trainables.artifacts"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console.setup()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study created

    # ---- everything that can be wrong is found here, before Ray starts ----------------------
    try:
        recorded = None
        if args.resume:
            if not args.name:
                raise ValueError("--resume needs the --name of the experiment to continue")
            resumed_dir = experiment_dir(config_from_args(args))
            saved = read_text(f"{resumed_dir}/{SWEEP_FILE}")
            if saved is None:
                raise ValueError(f"nothing to resume: no {SWEEP_FILE} in {resumed_dir}")
            values = json.loads(saved)
            config = SweepConfig.from_dict(values)
            check_resume_flags(parser, argv, config)
            recorded = values.get("resolved")
            # Where and how it runs may change on resume (the directory may have moved with its
            # results); what it sweeps may not.
            config.storage = args.storage
            config.artifacts = args.artifacts or config.artifacts
            config.optuna_storage = args.optuna_storage or relocated(config.optuna_storage, values, config)
            config.gpus_per_trial, config.cpus_per_trial = args.gpus_per_trial, args.cpus_per_trial
            config.max_concurrent = args.max_concurrent
            config.offline = args.offline
        else:
            if not args.dataset:
                raise ValueError("--dataset is required")
            config = config_from_args(args)
            config.check()
        if not args.dry_run:
            ray_adapter.check_address(args.address)  # before anything is loaded: a wrong address costs seconds
        exp_dir = experiment_dir(config)
        plan = make_plan(config)
        from sweep.stages import resolve_artifacts
        from trainables.datasets import label_noise_seed, load_dataset, validation_split, with_label_noise

        dataset = load_dataset(config.dataset, config.data_dir, download=not config.offline)
        check_label_noise_learnable(plan.label_noise, dataset.num_classes)
        # The validation split comes from the clean labels, once: every noise level and every trial uses it.
        split = validation_split(dataset.y_train, plan.val_size, config.split_seed)
        datasets = {p: with_label_noise(dataset, split.train_ids, p, label_noise_seed(config.split_seed, p))
                    for p in plan.label_noise}  # {P: the dataset with that level's training labels}
        store = ArtifactStore(config.artifacts or f"{config.storage.rstrip('/')}/artifacts")
        optuna_url = config.optuna_storage or default_optuna_url(exp_dir)
        resolve_artifacts(plan, datasets, split)
        if recorded is not None:
            check_recorded_plan(plan, recorded, store)
        if not args.dry_run:
            check_writable(exp_dir)
            check_writable(store.root)
            check_optuna_storage(optuna_url)
        if not args.wait_for_nodes >= 0:
            raise ValueError(f"--wait-for-nodes must be >= 0 seconds, got {args.wait_for_nodes:g}")
        if not args.report_every >= 0:  # NaN too
            raise ValueError(f"--report-every must be >= 0 seconds, got {args.report_every:g}")
    except (ValueError, KeyError, FileNotFoundError, PermissionError, ray_adapter.ClusterUnreachableError) as error:
        parser.error(str(error))
    where = {"experiment": exp_dir, "artifacts": store.root, "optuna storage": optuna_url,
             "ray": args.address or "embedded local Ray"}

    if args.dry_run:
        from sweep.stages import artifact_status

        gpus = config.gpus_per_trial if config.gpus_per_trial is not None else "1 if the cluster has GPUs, else 0"
        print(describe(plan, artifact_status(plan, store), {"cpu": config.cpus_per_trial, "gpu": gpus}, where))
        return 0

    # ---- one writer: the experiment's lock, then its saved state and the disk, still before compute ----
    lock = ExperimentLock(exp_dir)
    try:
        lock.acquire()
        if lock.cleared is not None:
            say(f"removed a stale lock of this experiment ({lock.cleared.describe()}, no longer running)")
        if not args.resume and read_text(f"{exp_dir}/{SWEEP_FILE}") is not None:  # under the lock: no race
            raise ValueError(f"experiment {config.name!r} already exists in {config.storage}; use --resume or another --name")
        if args.resume:
            check_saved_state(exp_dir, optuna_url)
        space = plan_space(plan, store, exp_dir, dataset, split, slots=1)
        space.check()
    except (ValueError, PermissionError, OSError) as error:
        lock.release()
        parser.error(str(error))

    stops, watch = StopSignals(), None
    try:
        try:
            ray_adapter.connect(args.address)
            wait_for_nodes(args, config.cpus_per_trial, config.gpus_per_trial or 0.0)
        except (ray_adapter.ClusterUnreachableError, ValueError) as error:
            ray_adapter.shutdown()
            lock.release()
            parser.error(str(error))
        stops.install()  # after Ray connected: its own SIGTERM handler ends the driver with a core dump
        if lock.cleared is not None and args.address is not None:
            waited = ray_adapter.wait_for_killed_driver(lock.cleared.pid)
            if waited:
                say(f"waited for {waited} actor(s) of the killed driver (pid {lock.cleared.pid}) to end on the cluster")
        log_path = console.log_to(exp_dir)
        if log_path:
            say(f"sweep {config.name}: {len(plan.cells)} cells x {plan.trials_per_cell} trials; log: {log_path}")
        slots = ray_adapter.trial_slots(config.cpus_per_trial, config.gpus_per_trial or 0.0)
        watch = DiskWatch(exp_dir, stops, reserve=plan_space(plan, store, exp_dir, dataset, split, slots=slots).reserve)
        ray_adapter.hide_failures_while(watch.failing)  # the sweep's own line says why trials failed
        try:
            return _run(args, config, plan, datasets, split, store, optuna_url, exp_dir, stops, watch.start())
        except ray_adapter.GpuNotUsableError as error:  # a stage task's; a trial's is in its row of results.csv
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:  # a stop before the trials (teachers, scores) or a second stop signal
            if watch.deleted:
                say(f"\nstopped: {stops.reason} (nothing of it is left to resume); the artifact cache {store.root} is kept")
            else:
                say(f"\n{'stopped: ' + stops.reason if stops.reason else 'interrupted'}; finished work is kept "
                    f"(artifacts are cached). Continue with: {resume_command(config)}")
            return stops.exit_code()
        except OSError as error:
            if not is_disk_full(error):
                raise
            say(f"stopped: the disk is full ({str(error).strip().splitlines()[-1]}); nothing partial was kept. Free some "
                f"space, then continue with: {resume_command(config)}")
            return 1
        finally:
            watch.close()
    finally:
        ray_adapter.shutdown()  # no trial process can write any more
        console.close_log()
        if watch is not None and watch.deleted:
            watch.remove_recreated()  # what Tune wrote again at the deleted path
        lock.release()


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC (or a quota), raised here or in a Ray task (whose error is also an instance of its cause)."""
    import errno

    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error)


def relocated(optuna_storage: str | None, recorded: dict, config: SweepConfig) -> str | None:
    """A journal the sweep was given inside its own experiment directory, where that directory is now
    (a copied or moved experiment uses its own journal, never its original's)."""
    path = None if optuna_storage is None else local_path(optuna_storage)
    was, now = local_path(experiment_dir(SweepConfig.from_dict(recorded))), local_path(experiment_dir(config))
    if path is None or was is None or now is None:
        return optuna_storage
    inside = os.path.relpath(os.path.abspath(path), was)
    return optuna_storage if inside.startswith("..") else os.path.join(now, inside)


def check_saved_state(exp_dir: str, optuna_url: str | None) -> None:
    """Before a resume computes anything: the Optuna journal (a torn last record dropped, any other
    damage refused) and Tune's state files (refused when unreadable). Raises ``DamagedStateError``."""
    journal = None if optuna_url is None else local_path(optuna_url)
    if journal is not None:
        note = check_journal(journal)
        if note:
            say(note)
    local = local_path(exp_dir)
    if local is not None:
        check_tune_state(local)


def plan_space(plan: SweepPlan, store: ArtifactStore, exp_dir: str, dataset, split, *, slots: int):
    """What the sweep will write (``sweep.stopping.space_needed``), from its plan and what the cache holds."""
    from sweep.stages import artifact_status

    status = artifact_status(plan, store)
    return space_needed(
        plan, experiment_dir=exp_dir, artifacts_dir=store.root,
        teachers_to_train=sum(not present for _, present in status["teachers"].values()),
        score_tables_to_compute=sum(not present for _, present in status["scores"].values()),
        num_train=len(split.train_ids), num_classes=dataset.num_classes, in_channels=dataset.in_channels, slots=max(1, slots),
    )


def check_label_noise_learnable(rates: list[float], num_classes: int) -> None:
    """Refuse a label noise rate at which the true class no longer outnumbers each wrong one.

    Symmetric noise at rate P keeps a label with probability 1 - P and gives each of the C - 1 other
    classes P / (C - 1); the true class is the most frequent label of its examples only while
    1 - P > P / (C - 1), that is P < (C - 1) / C. At or beyond that the labels carry no (or inverted)
    signal and every teacher and student trains towards chance."""
    limit = (num_classes - 1) / num_classes
    for p in rates:
        if p >= limit:
            raise ValueError(
                f"--label-noise {p:g} with {num_classes} classes leaves the true label ({1 - p:.3g} of its examples) "
                f"no more frequent than each wrong one ({p / max(1, num_classes - 1):.3g}): nothing can be learnt. "
                f"Use rates below {limit:.3g}")


def wait_for_nodes(args, cpus: float, gpus: float) -> None:
    """Before anything runs, a node must fit a trial (and so a stage task). An embedded Ray never
    grows: refuse at once. A cluster may be autoscaling from no workers (the head runs none): ask its
    autoscaler for a node that fits and wait up to ``--wait-for-nodes`` seconds, then refuse naming
    what the cluster has (ValueError)."""
    unfit = ray_adapter.unfit_resources(cpus, gpus)
    if unfit is None:
        return
    if args.address is None:  # nothing will ever join an embedded Ray
        raise ValueError(f"{unfit}: lower --cpus-per-trial / --gpus-per-trial")
    say(f"{unfit}; asking the cluster's autoscaler for a node that fits and waiting up to {args.wait_for_nodes:g} s "
        "(--wait-for-nodes)")
    shown = [time.monotonic()]

    def still_waiting(elapsed: float, why: str) -> None:
        if time.monotonic() - shown[0] >= 30:
            shown[0] = time.monotonic()
            say(f"still waiting for a node ({elapsed:.0f} s): {why}")

    unfit = ray_adapter.wait_for_fit(cpus, gpus, args.wait_for_nodes, on_poll=still_waiting)
    if unfit is not None:
        raise ValueError(f"{unfit}, and no node that fits joined within {args.wait_for_nodes:g} s (--wait-for-nodes). "
                         "Lower --cpus-per-trial / --gpus-per-trial, add a node type that holds a trial to the cluster "
                         "(an autoscaler never launches a node larger than its node types), or wait longer")
    say("a node that fits a trial joined the cluster")


# What a sweep sweeps: fixed once it started. (Where and how it runs may change on --resume.)
SWEEP_DEFINING = (
    "dataset", "profile", "methods", "fractions", "cohort_size", "halving", "teachers", "students", "trials_per_cell",
    "alpha_range", "tau", "alpha_design", "replicates", "label_noise", "score_seeds", "score_options", "epochs", "min_steps", "batch_size",
    "lr", "selection", "class_balanced", "val_size", "scheduler",
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


def versions() -> dict:
    """The versions of this package and of what it runs on, recorded with every sweep."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"kdsweep": contract.__version__, "python": sys.version.split()[0]}
    for package in ("torch", "torchvision", "ray", "optuna", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def write_sweep_file(plan: SweepPlan, exp_dir: str, *, artifacts_ready: bool, teacher_metrics: dict | None = None) -> None:
    """``sweep.json``: the settings as given, then what they resolved to (recipe, artifact keys, code
    fingerprints, versions), so a resumed sweep runs exactly this plan or refuses."""
    record = {
        **plan.config.to_dict(),
        "resolved": {
            **plan.resolved(),
            "score_epochs": score_epochs(plan),
            "code": {kind: code_for(kind) for kind in CORE_BY_KIND},  # each kind's core; the keys hold the rest
            "versions": versions(),
            "artifacts_ready": artifacts_ready,
            "teacher_metrics": teacher_metrics or {},  # the report's reference line, read without the artifacts
        },
    }
    write_bytes(f"{exp_dir}/{SWEEP_FILE}", json.dumps(record, indent=2).encode())


def score_epochs(plan: SweepPlan) -> dict:
    """The training epoch each method scores at (EL2N/GraNd early, forgetting at the end; None for
    random and precomputed scores)."""
    from sweep.stages import score_request
    from trainables.scores import SCORERS

    replicate = plan.config.replicates[0]
    return {m: SCORERS.get(m).score_epoch(score_request(plan, m, replicate)) for m in plan.scored_methods}


def check_recorded_plan(plan: SweepPlan, recorded: dict, store: ArtifactStore) -> None:
    """Refuse to resume when this code would produce other teachers or scores than the sweep started
    with, or when an artifact the sweep already computed is gone from the store."""
    version = recorded.get("versions", {}).get("kdsweep", "unknown")
    changed, gone = [], []
    for kind, now, then in (("teacher", plan.teacher_keys, recorded.get("teacher_keys", {})),
                            ("scores", plan.score_keys, recorded.get("score_keys", {}))):
        for ref, key in then.items():
            if now.get(ref) != key:
                changed.append(f"{kind} {ref}: recorded {key}, this code gives {now.get(ref)}")
            elif recorded.get("artifacts_ready") and not store.exists(kind, key):
                gone.append(f"{kind} {ref} ({key})")
    if changed:
        raise ValueError(
            "cannot resume: the code that computes teachers or scores changed since this sweep started "
            f"(kdsweep {version}), so its trials would mix artifacts of two versions:\n  - " + "\n  - ".join(changed)
            + "\nResume with the code the sweep started with, or start a new sweep with another --name."
        )
    if gone:
        raise ValueError(
            f"cannot resume: artifacts this sweep computed are gone from {store.root}:\n  - " + "\n  - ".join(gone)
            + "\nPoint --artifacts at the cache that holds them (sweep.json names the keys), or start a new sweep "
            "with another --name."
        )


def _run(args, config: SweepConfig, plan: SweepPlan, datasets: dict, split, store, optuna_url: str, exp_dir: str,
         stops: StopSignals, watch: DiskWatch) -> int:
    from sweep.results import result_table, write_table
    from sweep.searcher import CellSearcher, PerCellASHA
    from sweep.stages import run_scores, run_teachers
    from sweep.trial import REPORTS_PER_TRIAL, crash_once_dir_from_env, cohort_trial

    gpus = config.gpus_per_trial if config.gpus_per_trial is not None else (1.0 if ray_adapter.cluster_gpus() > 0 else 0.0)
    resources = {"cpu": config.cpus_per_trial, "gpu": gpus}
    write_sweep_file(plan, exp_dir, artifacts_ready=False)
    start = time.perf_counter()

    dataset_refs = {p: ray_adapter.put(d) for p, d in datasets.items()}  # each noise level's dataset, once
    teacher_metrics = run_teachers(plan, dataset_refs, split, store, resources, allow_cpu_fallback=args.allow_cpu_fallback)
    tables = run_scores(plan, datasets, dataset_refs, split, store, resources, allow_cpu_fallback=args.allow_cpu_fallback)
    write_sweep_file(plan, exp_dir, artifacts_ready=True, teacher_metrics=teacher_metrics)
    # Only ASHA stops a cohort early; without it, a cohort Tune ended unfinished was interrupted.
    scheduler_stops = config.scheduler == "asha"
    live = LiveResults(exp_dir, plan, teacher_metrics, every_s=args.report_every, scheduler_stops=scheduler_stops)
    callbacks = [ray_adapter.TrialsCallback(live.on_trial_end)]
    teacher_artifacts = {key: store.get("teacher", key) for key in set(plan.teacher_keys.values())}
    teachers = {key: artifact.payload for key, artifact in teacher_artifacts.items()}
    parameters = dict(
        datasets=datasets, split=split, teachers=teachers, tables={t.key: t for t in tables.values()},
        crash_once_dir=crash_once_dir_from_env(), verbose=args.verbose, allow_cpu_fallback=args.allow_cpu_fallback,
        experiment_dir=exp_dir, teacher_metrics=teacher_metrics,
    )
    trial_resources = {"cpu": resources["cpu"], "gpu": resources["gpu"]}

    if args.resume and ray_adapter.can_restore(exp_dir):
        say(f"resuming {exp_dir}")
        tuner = ray_adapter.restore_tuner(exp_dir, cohort_trial, parameters=parameters, resources=trial_resources,
                                          callbacks=callbacks, verbose=1 if args.verbose else 0,
                                          relocate_searcher=lambda searcher: searcher.relocate(optuna_url))
    else:
        settings = TrialSettings(
            recipe=plan.recipe.to_dict(), val_size=plan.val_size, split_seed=config.split_seed,
            selection=config.selection, class_balanced=config.class_balanced, teacher_keys=plan.teacher_keys,
            score_keys=plan.score_keys, cpus_per_trial=resources["cpu"], profile=config.profile,
            version=contract.__version__, halving=config.halving,
        )
        searcher = CellSearcher(
            experiment=config.name, cells=plan.cells, trials_per_cell=plan.trials_per_cell,
            space=config.alpha_space, optuna_storage=optuna_url, settings=settings, cohort_size=plan.cohort_size,
        )
        if config.scheduler == "asha":
            scheduler = PerCellASHA(max_t=REPORTS_PER_TRIAL, grace_period=max(1, REPORTS_PER_TRIAL // 4))
        else:
            scheduler = ray_adapter.FIFOScheduler()
        tuner = ray_adapter.build_tuner(
            cohort_trial, parameters=parameters, resources=trial_resources, searcher=searcher, scheduler=scheduler,
            num_samples=plan.num_cohorts, max_concurrent=config.max_concurrent, metric=METRIC, mode=MODE,
            storage_path=config.storage if "://" in config.storage else os.path.abspath(config.storage),
            name=config.name, max_failures=config.max_failures, verbose=1 if args.verbose else 0,
            callbacks=callbacks,
        )
    try:
        grid = tuner.fit()
    except KeyboardInterrupt:  # a second stop signal: stop at once, write nothing more
        live.wait()
        say(f"\ninterrupted; finished trials are kept. Continue with: {resume_command(config)}")
        return stops.exit_code()
    except Exception as error:  # noqa: BLE001 -- Tune's loop failed; the disk watch may know why
        if not watch.failing():
            raise
        live.wait()
        gone = watch.gone()
        reason = (f"the experiment directory {exp_dir} was deleted while the sweep ran" if gone
                  else f"the disk of {exp_dir} is full")
        say(f"stopped: {reason} ({type(error).__name__}: {error})"
            + (f"; the artifact cache {store.root} is kept" if gone else
               f". Free some space, then continue with: {resume_command(config)}"))
        watch.deleted = watch.deleted or gone
        return 1
    live.wait()  # a live report still being written must not overwrite the final one
    watch.close()
    if watch.deleted:  # nothing to write into, and nothing to resume
        say(f"stopped: {stops.reason} (nothing of it is left to resume); the artifact cache {store.root} is kept")
        return 1
    frame = result_table(grid, teacher_metrics, scheduler_stops=scheduler_stops)
    try:
        path = write_table(frame, exp_dir)
    except OSError as error:  # a full disk: the previous results.csv is whole (written by rename)
        say(f"stopped: cannot write {exp_dir}/results.csv ({error.strerror or error}); the previous one is intact and "
            f"the finished students are in the Optuna storage. Free some space, then continue with: {resume_command(config)}")
        return 1
    counts = frame["status"].value_counts().to_dict()
    say(f"{len(frame)} of {plan.num_trials} trials ({', '.join(f'{n} {s}' for s, n in counts.items())}) in "
        f"{time.perf_counter() - start:.0f} s")
    say(f"results: {path}")
    report_ok = not frame.empty and _write_report(exp_dir)
    unfinished = plan.num_trials - sum(counts.get(s, 0) for s in ("completed", "stopped", "error"))
    if unfinished:
        why = f"stopped: {stops.reason}" if stops.reason else (
            f"the sweep stopped ({stops.name()})" if stops.received else "the sweep stopped")
        say(f"{why}, with {unfinished} of {plan.num_trials} trials unfinished. Continue with: {resume_command(config)}")
        return stops.exit_code()
    return 0 if counts.get("error", 0) == 0 and report_ok else 1


def _write_report(exp_dir: str) -> bool:
    """The sweep's report (``analysis.report``) next to its results; a failure here loses nothing,
    since ``results.csv`` is already written, and says how to build the report again."""
    from analysis.report import build_report

    start = time.perf_counter()
    try:
        paths = build_report(exp_dir)
    except Exception as error:  # noqa: BLE001 -- the sweep's results must survive any report bug
        if is_disk_full(error):  # not a bug: one line, no traceback
            say(f"report not written: the disk is full; the results are safe. Free some space, then build it with: "
                f"python -m analysis.report {exp_dir}")
            return False
        logging.getLogger(__name__).exception("the report failed")
        say(f"report failed ({type(error).__name__}: {error}); the results are safe. Build it again with: "
            f"python -m analysis.report {exp_dir}")
        return False
    say(f"report: {paths['html']} ({time.perf_counter() - start:.1f} s)")
    return True


class LiveResults:
    """``results.csv`` and the report, rewritten while the sweep runs: when a cell has finished all
    its trials, at most every ``every_s`` seconds (the first finished cell at once). They hold the
    finished trials only and the report says "in progress"; the final ones replace them at the end.
    Written on a thread of their own, so Tune's loop does not wait for a report."""

    def __init__(self, exp_dir: str, plan: SweepPlan, teacher_metrics: dict, *, every_s: float, scheduler_stops: bool):
        self.exp_dir, self.every_s, self.scheduler_stops = exp_dir, every_s, scheduler_stops
        self.trials_per_cell, self.num_trials = plan.trials_per_cell, plan.num_trials
        self.teacher_metrics = teacher_metrics
        self.cells_written, self.last_write = 0, None
        self.thread = None

    def on_trial_end(self, records: list) -> None:
        from contract import CELL_COLUMNS
        from sweep.results import table_from_records

        frame = table_from_records(records, self.teacher_metrics, scheduler_stops=self.scheduler_stops)
        finished = frame[frame["status"].isin(FINAL_STATUSES)]
        if finished.empty:
            return
        cells_done = int((finished.groupby(CELL_COLUMNS).size() >= self.trials_per_cell).sum())
        now = time.monotonic()
        if cells_done <= self.cells_written or len(finished) >= self.num_trials:
            return  # no newly finished cell, or the last one: the final results follow at once
        if self.last_write is not None and now - self.last_write < self.every_s:
            return
        if self.thread is not None and self.thread.is_alive():
            return  # the next finished cell tries again
        self.cells_written, self.last_write = cells_done, now
        import threading

        self.thread = threading.Thread(target=self._write, args=(finished.reset_index(drop=True),), daemon=True)
        self.thread.start()

    def _write(self, finished) -> None:
        from analysis.report import analyse, default_out, write_report
        from analysis.results import experiment_from_table
        from sweep.results import write_table

        try:
            write_table(finished, self.exp_dir)
            record = json.loads(read_text(f"{self.exp_dir}/{SWEEP_FILE}") or "{}")
            experiment = experiment_from_table(self.exp_dir, finished, record)
            paths = write_report(analyse(experiment), default_out(self.exp_dir))
            say(f"live report ({len(finished)} of {self.num_trials} trials finished): {paths['html']}")
        except Exception as error:  # noqa: BLE001 -- the sweep goes on; the final report follows
            say(f"live report skipped ({type(error).__name__}: {error})")

    def wait(self) -> None:
        if self.thread is not None:
            self.thread.join()


if __name__ == "__main__":
    sys.exit(main())
