"""The stages before the student trials: teachers and pruning scores, as Ray tasks, cached.

Every teacher (one per architecture, replicate and label noise level) and every scoring run (one per
method, replicate, label noise level and run) is a Ray task with the trials' resources, so they
spread over the cluster; each task reads
from or writes to the shared artifact store, so a later sweep (or a resumed one) reuses them. The
driver knows every artifact's key before anything runs (``resolve_artifacts``), records them in
``sweep.json``, then reads the finished artifacts and hands them to the trials through the object
store.

Label noise: the driver builds one dataset per noise level P (``trainables.splits.with_label_noise``,
P = 0 the clean one) and puts each in the object store once; the stages take the mappings
{P: dataset} and {P: object-store reference}, and a job of level P runs on that level's dataset.
The validation split is the clean one for every level.
"""

from __future__ import annotations

from sweep import ray_adapter
from sweep.console import StageProgress, say
from contract import scores_ref, teacher_ref
from sweep.plan import SweepPlan
from trainables.artifacts import ArtifactStore, artifact_key
from trainables.splits import Split
from trainables.scorers import SCORERS, ScoreRequest
from trainables.scores import ScoreTable, combine_runs, score_inputs, score_run
from trainables.teacher import Teacher, get_or_train_teacher, teacher_from_bytes, teacher_inputs


def teacher_task(*, dataset, split: Split, arch: str, recipe, replicate: int, store_root: str,
                 progress=None, allow_cpu_fallback: bool = False, label_noise: float = 0.0) -> tuple[str, bool, dict]:
    """Train (or read from the cache) one teacher; its epochs go to the driver's progress line.
    ``dataset`` already carries the labels of noise level ``label_noise`` (which only names the task)."""
    ray_adapter.set_trial_threads(ray_adapter.task_cpus())
    name = teacher_ref(arch, replicate, label_noise)

    def on_epoch(report) -> None:
        ray_adapter.send(progress, {"task": name, "epoch": report.epoch, "epochs": report.epochs, "val_acc": report.val_acc})

    teacher, cached = get_or_train_teacher(
        dataset, split, arch=arch, recipe=recipe, seed=replicate, device=ray_adapter.trial_device(allow_cpu_fallback),
        store=ArtifactStore(store_root), on_epoch=on_epoch,
    )
    return _teacher_result(teacher, cached)


def _teacher_result(teacher: Teacher, cached: bool) -> tuple[str, bool, dict]:
    """(key, was cached, {"val_acc", "test_acc", "params"}) of a teacher stage's job."""
    metrics = {k: teacher.meta.get(k) for k in ("val_acc", "test_acc")}
    metrics["params"] = sum(int(p.numel()) for p in teacher.model.parameters())  # read from the model: cached teachers too
    return teacher.meta["key"], cached, metrics


def _cached_teacher(store: ArtifactStore, key: str) -> tuple[tuple[str, bool, dict], bytes] | None:
    """(a cached teacher's job result, its checkpoint bytes), read by the driver itself; None when the
    store has no readable one (the task then trains it, or reports why it cannot be read). Without
    this, each cached teacher was a Ray task, a worker that starts and imports torch to read one file:
    2-3 s at the start of every resumed sweep and of every sweep that reuses its teachers."""
    found = store.get("teacher", key)  # verified: a corrupt file is removed, and the task trains it again
    if found is None:
        return None
    try:
        teacher = teacher_from_bytes(found.payload, "cpu", source=f"teacher artifact {key}")
    except Exception:  # noqa: BLE001 -- the task reads it again and says what is wrong
        return None
    teacher.meta["key"] = key
    return _teacher_result(teacher, True), found.payload


def score_run_task(*, dataset, split: Split, request: ScoreRequest, index: int, store_root: str,
                   allow_cpu_fallback: bool = False) -> dict:
    ray_adapter.set_trial_threads(ray_adapter.task_cpus())
    return score_run(dataset, split, request, index, device=ray_adapter.trial_device(allow_cpu_fallback),
                     store=ArtifactStore(store_root))


def score_request(plan: SweepPlan, method: str, replicate: int) -> ScoreRequest:
    return ScoreRequest(
        method=method, arch=plan.students[0], recipe=plan.recipe, seeds=plan.score_seeds, seed=replicate,
        options=plan.config.score_options.get(method, {}),
    )


def _teacher_jobs(plan: SweepPlan) -> list[tuple[str, int, float]]:
    """(arch, replicate, label noise) of every teacher."""
    return [(arch, replicate, noise) for replicate in plan.config.replicates for noise in plan.label_noise
            for arch in plan.teachers]


def _score_jobs(plan: SweepPlan) -> list[tuple[str, int, float]]:
    """(method, replicate, label noise) of every score table."""
    return [(method, replicate, noise) for replicate in plan.config.replicates for noise in plan.label_noise
            for method in plan.scored_methods]


def resolve_artifacts(plan: SweepPlan, datasets: dict, split: Split) -> None:
    """Fill ``plan.teacher_keys`` and ``plan.score_keys``: the key every artifact has with this code.
    ``datasets``: {label noise: dataset}; a noisy dataset's labels are in its fingerprint, so every
    noise level has its own keys."""
    plan.teacher_keys = {
        teacher_ref(arch, replicate, noise): artifact_key(
            "teacher", teacher_inputs(datasets[noise], split, arch=arch, recipe=plan.recipe, seed=replicate))
        for arch, replicate, noise in _teacher_jobs(plan)
    }
    plan.score_keys = {
        scores_ref(method, replicate, noise): artifact_key(
            "scores", score_inputs(datasets[noise], split, score_request(plan, method, replicate)))
        for method, replicate, noise in _score_jobs(plan)
    }


def artifact_status(plan: SweepPlan, store: ArtifactStore) -> dict:
    """{"teachers": {ref: (key, present)}, "scores": {...}}: which artifacts the store already holds."""
    return {
        "teachers": {ref: (key, store.exists("teacher", key)) for ref, key in plan.teacher_keys.items()},
        "scores": {ref: (key, store.exists("scores", key)) for ref, key in plan.score_keys.items()},
    }


def run_teachers(plan: SweepPlan, dataset_refs: dict, split: Split, store: ArtifactStore, resources: dict, *,
                 allow_cpu_fallback: bool = False) -> tuple[dict, dict]:
    """Train the missing teachers as parallel Ray tasks (the driver reads the cached ones itself);
    returns ({teacher key: {"val_acc", "test_acc", "params"}}, {teacher key: its checkpoint's bytes},
    each artifact read once, for the trials). Each finished teacher's line names its node.
    ``dataset_refs``: {label noise: the object-store reference of that level's dataset}."""
    jobs = _teacher_jobs(plan)
    progress = StageProgress("teachers", len(jobs))
    nodes: dict[int, str] = {}
    on_nodes = ray_adapter.alive_nodes() > 1  # on one machine, naming its node says nothing

    def finished(i: int, result) -> None:
        _, cached, metrics = result
        accuracy = f"test acc {metrics['test_acc']:.3f}" if metrics.get("test_acc") is not None else ""
        where = f"node {nodes[i]}" if on_nodes and i in nodes else ""  # a cached one was read here
        progress.done(teacher_ref(*jobs[i]), ", ".join(
            part for part in ("reused from the artifact cache" if cached else accuracy, where) if part))

    results: list = [None] * len(jobs)
    payloads: dict[str, bytes] = {}
    for i, job in enumerate(jobs):  # the cached ones here, the others as Ray tasks
        read = _cached_teacher(store, plan.teacher_keys[teacher_ref(*job)])
        if read is not None:
            results[i], payloads[read[0][0]] = read
            finished(i, results[i])
    todo = [i for i, result in enumerate(results) if result is None]
    channel = ray_adapter.progress_channel() if todo else None  # epochs to show only when one trains
    try:
        trained = ray_adapter.run_tasks(
            teacher_task,
            [dict(dataset=dataset_refs[noise], split=split, arch=arch, recipe=plan.recipe, replicate=replicate,
                  store_root=store.root, progress=channel, allow_cpu_fallback=allow_cpu_fallback, label_noise=noise)
             for arch, replicate, noise in (jobs[i] for i in todo)],
            num_cpus=ray_adapter.stage_cpus(len(todo), resources["cpu"]), num_gpus=resources["gpu"],
            on_done=lambda k, result: finished(todo[k], result), progress=channel, on_progress=progress.event,
            on_node=lambda k, node: nodes.__setitem__(todo[k], node),
        ) if todo else []
    finally:
        ray_adapter.close_channel(channel)
    for i, result in zip(todo, trained):
        results[i] = result
    for job, (key, _, _) in zip(jobs, results):
        expected = plan.teacher_keys[teacher_ref(*job)]
        if key != expected:  # the worker runs other code than the driver
            raise RuntimeError(f"teacher {teacher_ref(*job)}: the worker produced key {key}, the driver "
                               f"expected {expected}; every node must run the same version of the code")
    cached = sum(c for _, c, _ in results)
    say(f"teachers: {len(results)} ({cached} reused from the artifact cache)")
    for key, _, _ in results:  # the ones the tasks trained, read here once
        if key not in payloads:
            payloads[key] = store.get("teacher", key).payload
    return {key: metrics for key, _, metrics in results}, payloads


def run_scores(plan: SweepPlan, datasets: dict, dataset_refs: dict, split: Split, store: ArtifactStore,
               resources: dict, *, allow_cpu_fallback: bool = False) -> dict:
    """{scores ref: ScoreTable}: cached tables are read; missing runs are parallel Ray tasks (each
    finished run's line names its node). ``datasets`` / ``dataset_refs``: {label noise: dataset} and
    {label noise: its object-store reference}."""
    tables, missing = {}, []  # missing: (scores ref, label noise, request)
    for method, replicate, noise in _score_jobs(plan):
        ref = scores_ref(method, replicate, noise)
        found = store.get("scores", plan.score_keys[ref])
        if found is not None:
            tables[ref] = ScoreTable.from_artifact(found, cached=True)
        else:
            missing.append((ref, noise, score_request(plan, method, replicate)))
    calls, labels = [], []
    several = len(plan.config.replicates) > 1  # then each line names its table's replicate, as the teachers' do
    for ref, noise, request in missing:
        for i in range(SCORERS.get(request.method).num_runs(request)):
            calls.append(dict(dataset=dataset_refs[noise], split=split, request=request, index=i, store_root=store.root,
                              allow_cpu_fallback=allow_cpu_fallback))
            labels.append(f"{ref if several else request.method + (f'|noise={noise}' if noise > 0 else '')} run {i}")
    progress = StageProgress("scoring runs", len(calls))
    on_nodes = ray_adapter.alive_nodes() > 1
    runs = ray_adapter.run_tasks(
        score_run_task, calls, num_cpus=ray_adapter.stage_cpus(len(calls), resources["cpu"]), num_gpus=resources["gpu"],
        on_node=lambda i, node: progress.done(labels[i], f"node {node}" if on_nodes else ""),
    )
    for ref, noise, request in missing:
        mine = [run for call, run in zip(calls, runs) if call["request"] is request]
        tables[ref] = combine_runs(datasets[noise], split, request, mine, store=store)
    say(f"scores: {len(tables)} tables ({len(tables) - len(missing)} reused from the artifact cache, "
        f"{len(calls)} scoring runs computed)")
    return tables
