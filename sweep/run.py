"""The driver: the whole study as one Ray Tune experiment (its command line: ``sweep.cli``).

    python -m sweep.run --dataset digits --profile smoke
    python -m sweep.run --dataset svhn --address auto --gpus-per-cohort 0.25 --storage /mnt/shared/runs

Stages: teachers (Ray tasks, cached) -> pruning scores (Ray tasks per run, cached) -> the object store
-> one Tune experiment over every cell (one Optuna study per cell) -> ``results.csv`` -> ``report.html``
(``analysis.report``: the optimal alpha of every cell, the alpha-f fit, plotly figures).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import contract
from analysis import workers
from analysis.sequential import Looks
from contract import METRIC, MODE, SWEEP_FILE, CohortSettings
from contract.plugins import load_plugins, load_plugins_first
from contract.storage import check_writable, read_text
from sweep import console, ray_adapter
from sweep.cli import build_parser, check_resume_flags, config_from_args, describe, experiment_dir, resume_command
from sweep.console import say
from sweep.live import LiveResults
from sweep.lock import ExperimentLock
from sweep.looks import SequentialRun
from sweep.optuna_storage import check_optuna_storage, default_optuna_url
from sweep.plan import SweepConfig, SweepPlan, make_plan
from sweep.planner import DEFAULT_PLAN_SWEEPS, choose_trials, noise_level, plan_lines
from sweep.record import check_recorded_plan, check_saved_state, relocated, write_sweep_file
from sweep.stopping import HOLD_ON_SIGNAL_S, DiskWatch, RayLossWatch, StopSignals, space_needed
from trainables.artifacts import ArtifactStore


def main(argv: list[str] | None = None) -> int:
    # the analysis in the driver (the planner's simulations, the looks, the live and the final report) runs
    # its simulations in this process: the cores of the machine belong to the sweep's trials
    # (``python -m analysis.report --jobs`` builds a report again on every core)
    with workers.jobs_set_to(1):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    plugin_problem = load_plugins_first(argv)  # before the parser: its help lists the plugins' entries
    parser = build_parser()
    if plugin_problem:
        parser.error(plugin_problem)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    for noisy in ("optuna", "ray", "trainables.artifacts"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Tune warns "Failed to fetch metrics ... FileNotFoundError" for every trial that had not reported when
    # a sweep stopped (a resume lists them): nothing is missing, the sweep reads its trials' own records.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
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
            if args.budget_hours is not None:  # a sequential sweep's budget may be raised or lowered on resume
                config.budget_hours = args.budget_hours
            config.offline = args.offline
            # the plugins it was started with (given again when they moved), imported before the plan
            config.plugins = config_from_args(args).plugins or config.plugins
            load_plugins(config.plugins)
        else:
            if not args.dataset:
                raise ValueError("--dataset is required")
            config = config_from_args(args)
            config.check()
        if not args.dry_run:
            ray_adapter.check_address(args.address)  # before anything is loaded: a wrong address costs seconds
        exp_dir = experiment_dir(config)
        plan = make_plan(config)
        plan.check_questions()  # a sequential design that cannot be, or cannot ask its questions, is refused here
        # the power costs simulated sweeps (a minute for a large design on a laptop): by default in the
        # dry run, which is where a budget is chosen, and not before every sweep
        plan_sweeps = args.plan_sweeps if args.plan_sweeps is not None else DEFAULT_PLAN_SWEEPS if args.dry_run else 0
        if plan_sweeps < 0:
            raise ValueError(f"--plan-sweeps must be >= 0, got {plan_sweeps}")
        noise = noise_level(args.noise_from, plan.label_noise[0])
        target = None
        if args.target_power is not None:
            if args.resume or args.trials_per_cell is not None or args.until_answered is not None:
                raise ValueError("--target-power chooses the students per cell of a new fixed sweep: not with "
                                 f"{'--resume' if args.resume else '--trials-per-cell' if args.trials_per_cell is not None else '--until-answered'}")
            say(f"planning: the students per cell for power {args.target_power:g} ({plan_sweeps or DEFAULT_PLAN_SWEEPS} "
                "simulated sweeps per number tried)...")
            target = choose_trials(plan, noise, args.target_power, args.max_trials, plan_sweeps or DEFAULT_PLAN_SWEEPS,
                                   args.plan_truth)
            if target.trials_per_cell is None:
                weakest = target.tried[max(target.tried)]
                raise ValueError(f"--target-power {args.target_power:g} is not reached within --max-trials {args.max_trials}: "
                                 f"at {max(target.tried)} students per cell the weakest alpha-f direction question has "
                                 f"power {100 * weakest:.0f} % (more fractions or replicates, a larger --max-trials, "
                                 "or fewer methods)")
            config.trials_per_cell = target.trials_per_cell
            plan = make_plan(config)
        from sweep.stages import resolve_artifacts
        from trainables.datasets import load_dataset
        from trainables.splits import label_noise_seed, validation_split, with_label_noise

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
        planned = plan_lines(plan, len(split.train_ids), noise, plan_sweeps, args.address, target, args.plan_truth)
        if not args.dry_run:
            check_writable(exp_dir)
            check_writable(store.root)
            check_optuna_storage(optuna_url)
        if not args.wait_for_nodes >= 0:
            raise ValueError(f"--wait-for-nodes must be >= 0 seconds, got {args.wait_for_nodes:g}")
        if not args.report_every >= 0:  # NaN too
            raise ValueError(f"--report-every must be >= 0 seconds, got {args.report_every:g}")
    except (ValueError, KeyError, FileNotFoundError, PermissionError, ray_adapter.ClusterUnreachableError) as error:
        parser.error(str(error))  # a PluginError is a ValueError
    where = {"experiment": exp_dir, "artifacts": store.root, "optuna storage": optuna_url,
             "ray": args.address or "embedded local Ray"}

    if args.dry_run:
        from sweep.stages import artifact_status

        gpus = config.gpus_per_trial if config.gpus_per_trial is not None else "1 if the cluster has GPUs, else 0"
        print(describe(plan, artifact_status(plan, store), {"cpu": config.cpus_per_trial, "gpu": gpus}, where))
        print("\n".join(f"  {line}" for line in planned))
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

    stops, watch, ray_watch = StopSignals(), None, None
    try:
        try:
            ray_adapter.connect(args.address)
            wait_for_nodes(args, config.cpus_per_trial, config.gpus_per_trial or 0.0)
        except (ray_adapter.ClusterUnreachableError, ValueError) as error:
            ray_adapter.shutdown()
            lock.release()
            parser.error(str(error))
        stops.install()  # after Ray connected: its own SIGTERM handler ends the driver with a core dump
        ray_watch = RayLossWatch(ray_adapter.embedded_ray_ended,
                                 lambda ended: _stop_without_ray(ended, config=config, exp_dir=exp_dir, stops=stops, lock=lock),
                                 core=ray_adapter.CORE_PROCESSES, signalled=lambda: stops.received_at).start()
        if ray_adapter.runs_embedded_ray():  # a signal to every process of the job reaches its processes too
            stops.on_first_signal = lambda: ray_watch.hold(HOLD_ON_SIGNAL_S)
        if lock.cleared is not None and args.address is not None:
            waited = ray_adapter.wait_for_killed_driver(lock.cleared.pid)
            if waited:
                say(f"waited for {waited} actor(s) of the killed driver (pid {lock.cleared.pid}) to end on the cluster")
        log_path = console.log_to(exp_dir)
        if log_path:
            first = (f" at the first look, at most {plan.sequential.most} (--until-answered)" if plan.sequential else "")
            say(f"sweep {config.name}: {len(plan.cells)} cells x {plan.trials_per_cell} trials{first}; log: {log_path}")
        for line in planned:  # what it costs and can answer (sweep.planner)
            say(line)
        slots = ray_adapter.trial_slots(config.cpus_per_trial, config.gpus_per_trial or 0.0)
        watch = DiskWatch(exp_dir, stops, reserve=plan_space(plan, store, exp_dir, dataset, split, slots=slots).reserve)
        ray_adapter.hide_failures_while(watch.failing)  # the sweep's own line says why trials failed
        try:
            return _run(args, config, plan, datasets, split, store, optuna_url, exp_dir, stops, watch.start())
        except ray_adapter.GpuNotUsableError as error:  # a stage task's; a trial's is in its row of results.csv
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
        except KeyboardInterrupt:  # a stop before the trials (teachers, scores) or a second stop signal
            ray_watch.close()  # one stop line: this one (a signal to the whole job also ends Ray's processes)
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
        if ray_watch is not None:
            ray_watch.close()  # before the driver ends Ray itself
        stops.finishing()
        ray_adapter.shutdown()  # no trial process can write any more
        console.close_log()
        if watch is not None and watch.deleted:
            watch.remove_recreated()  # what Tune wrote again at the deleted path
        lock.release()
        stops.restore()  # the caller's own handlers (a notebook's Ctrl-C) once nothing is left to protect


def _stop_without_ray(ended: list[str], *, config: SweepConfig, exp_dir: str, stops: StopSignals,
                      lock: ExperimentLock) -> None:
    """The embedded Ray's own processes ended under the sweep (``RayLossWatch``; ``ended`` names them):
    Tune can no longer end the running trials or save its state, and no Ray call of the main thread
    returns (after a stop signal the main thread is held in its handler meanwhile: ``RayLossWatch.hold``).
    What the cohorts wrote of themselves becomes ``results.csv`` and the report, the resume
    command is printed, the lock released, and the process ends here: with 128 + the signal's number
    when a stop signal came (143 for SIGTERM), else 1. A resume goes on as after a killed driver,
    from the Optuna storage, Tune's last saved state and each trial's last checkpoint."""
    from analysis.results import table_from_cohorts
    from sweep.results import write_table

    stops.ending = True  # a second signal now is only noted
    named = [{"gcs_server": "GCS server"}.get(name, name.replace("_", " ")) for name in ended]
    names = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)
    if stops.received:
        why = (f"the sweep stopped ({stops.name()}), and Ray's own processes with it (its {names} ended: the signal "
               "went to every process of the job, as systemd and batch schedulers send it)")
    else:
        why = f"stopped: Ray's own processes ended under the sweep (its {names}: the out-of-memory killer, or a signal sent to them)"
    table = None
    try:
        table = table_from_cohorts(exp_dir)  # None: no cohort has reported yet
        if table is not None:
            path = write_table(table, exp_dir)
            counts = table["status"].value_counts().to_dict()
            say(f"results: {path} ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})")
    except Exception as error:  # noqa: BLE001 -- the cohorts' own rows stay on disk, and the resume line must come
        table = None
        say(f"results.csv not written ({type(error).__name__}: {error}); the cohorts' own rows are in {exp_dir}")
    interrupted = table is not None and (table["status"] == "interrupted").any()
    say(f"{why}. Finished students are kept{'; interrupted ones go on from their last checkpoint' if interrupted else ''}. "
        f"Continue with: {resume_command(config)}")
    if table is not None and (table["status"] == "completed").any():
        _write_report(exp_dir)
    console.close_log()
    lock.release()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + stops.received if stops.received else 1)


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC (or a quota), raised here or in a Ray task (whose error is also an instance of its cause)."""
    import errno

    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error)


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
        raise ValueError(f"{unfit}: lower --cpus-per-cohort / --gpus-per-cohort")
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
                         "Lower --cpus-per-cohort / --gpus-per-cohort, add a node type that holds a trial to the cluster "
                         "(an autoscaler never launches a node larger than its node types), or wait longer")
    say("a node that fits a trial joined the cluster")


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
    teacher_metrics, teachers = run_teachers(plan, dataset_refs, split, store, resources,
                                             allow_cpu_fallback=args.allow_cpu_fallback)
    tables = run_scores(plan, datasets, dataset_refs, split, store, resources, allow_cpu_fallback=args.allow_cpu_fallback)
    write_sweep_file(plan, exp_dir, artifacts_ready=True, teacher_metrics=teacher_metrics)
    # Only ASHA stops a cohort early; without it, a cohort Tune ended unfinished was interrupted.
    scheduler_stops = config.scheduler == "asha"
    live = LiveResults(exp_dir, plan, teacher_metrics, every_s=args.report_every, scheduler_stops=scheduler_stops)
    trials_callback = ray_adapter.TrialsCallback(live.on_trial_end)
    callbacks = [trials_callback]

    def trial_slots() -> int:  # a sequential round's last cohorts share the cluster with the next round's first
        slots = ray_adapter.trial_slots(resources["cpu"], resources["gpu"])
        return min(slots, config.max_concurrent) if config.max_concurrent else slots

    # a sequential sweep's looks read the finished students of this run (sweep.looks)
    sequential = SequentialRun(exp_dir, trials_callback, teacher_metrics, scheduler_stops=scheduler_stops,
                               budget_hours=config.budget_hours, most_trials=plan.most_trials, trial_slots=trial_slots)
    searchers = []  # the searcher this driver runs (a resumed one: Tune's restored object)
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
                                          relocate_searcher=lambda searcher: (searcher.relocate(optuna_url),
                                                                              searcher.attach(sequential),
                                                                              searchers.append(searcher)))
    else:
        settings = CohortSettings(
            recipe=plan.recipe.to_dict(), val_size=plan.val_size, split_seed=config.split_seed,
            selection=config.selection, class_balanced=config.class_balanced, teacher_keys=plan.teacher_keys,
            score_keys=plan.score_keys, cpus_per_trial=resources["cpu"], profile=config.profile,
            version=contract.__version__, halving=config.halving,
        )
        searcher = CellSearcher(
            experiment=config.name, cells=plan.cells, trials_per_cell=plan.trials_per_cell,
            space=config.alpha_space, optuna_storage=optuna_url, settings=settings, cohort_size=plan.cohort_size,
            looks=Looks(plan.sequential, plan.question_kinds) if plan.sequential else None,
        )
        searcher.attach(sequential)
        searchers.append(searcher)
        if config.scheduler == "asha":
            scheduler = PerCellASHA(max_t=REPORTS_PER_TRIAL, grace_period=max(1, REPORTS_PER_TRIAL // 4))
        else:
            scheduler = ray_adapter.FIFOScheduler()
        tuner = ray_adapter.build_tuner(
            cohort_trial, parameters=parameters, resources=trial_resources, searcher=searcher, scheduler=scheduler,
            num_samples=plan.max_cohorts, max_concurrent=config.max_concurrent, metric=METRIC, mode=MODE,
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
    # the students planned: a sequential sweep's looks grow it round by round
    planned = searchers[0].planned_students() if searchers else plan.num_trials
    say(f"{len(frame)} of {planned} trials ({', '.join(f'{n} {s}' for s, n in counts.items())}) in "
        f"{time.perf_counter() - start:.0f} s")
    say(f"results: {path}")
    report_ok = not frame.empty and _write_report(exp_dir)
    unfinished = planned - sum(counts.get(s, 0) for s in ("completed", "stopped", "error"))
    looks = searchers[0].looks if searchers else None
    if not unfinished and looks is not None and not looks.stopped:  # stopped between a round and its look
        unfinished = planned
    if unfinished:
        why = f"stopped: {stops.reason}" if stops.reason else (
            f"the sweep stopped ({stops.name()})" if stops.received else "the sweep stopped")
        left = (f"{unfinished} of {planned} trials unfinished" if unfinished != planned or looks is None
                else f"its look {looks.count + 1} not taken")
        say(f"{why}, with {left}. Continue with: {resume_command(config)}")
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


if __name__ == "__main__":
    sys.exit(main())
