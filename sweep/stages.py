"""The stages before the student trials: teachers and pruning scores, as Ray tasks, cached.

Every teacher (one per architecture and replicate) and every scoring run (one per method, replicate
and run) is a Ray task with the trials' resources, so they spread over the cluster; each task reads
from or writes to the shared artifact store, so a later sweep (or a resumed one) reuses them. The
driver knows every artifact's key before anything runs (``resolve_artifacts``), records them in
``sweep.json``, then reads the finished artifacts and hands them to the trials through the object
store.
"""

from __future__ import annotations

import sys

from sweep import ray_adapter
from sweep.contract import scores_ref, teacher_ref
from sweep.plan import SweepPlan
from trainables.artifacts import ArtifactStore, artifact_key
from trainables.datasets import Split
from trainables.scores import SCORERS, ScoreRequest, ScoreTable, combine_runs, score_inputs, score_run
from trainables.teacher import get_or_train_teacher, teacher_inputs


def _progress(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="task", file=sys.stdout, disable=total == 0)


def teacher_task(*, dataset, split: Split, arch: str, recipe, replicate: int, store_root: str) -> tuple[str, bool]:
    ray_adapter.set_trial_threads(ray_adapter.task_cpus())
    teacher, cached = get_or_train_teacher(
        dataset, split, arch=arch, recipe=recipe, seed=replicate, device=ray_adapter.trial_device(),
        store=ArtifactStore(store_root),
    )
    return teacher.meta["key"], cached


def score_run_task(*, dataset, split: Split, request: ScoreRequest, index: int, store_root: str) -> dict:
    ray_adapter.set_trial_threads(ray_adapter.task_cpus())
    return score_run(dataset, split, request, index, device=ray_adapter.trial_device(), store=ArtifactStore(store_root))


def score_request(plan: SweepPlan, method: str, replicate: int) -> ScoreRequest:
    return ScoreRequest(
        method=method, arch=plan.students[0], recipe=plan.recipe, seeds=plan.score_seeds, seed=replicate,
    )


def _teacher_jobs(plan: SweepPlan) -> list[tuple[str, int]]:
    return [(arch, replicate) for replicate in plan.config.replicates for arch in plan.teachers]


def _score_jobs(plan: SweepPlan) -> list[tuple[str, int]]:
    return [(method, replicate) for replicate in plan.config.replicates for method in plan.scored_methods]


def resolve_artifacts(plan: SweepPlan, dataset, split: Split) -> None:
    """Fill ``plan.teacher_keys`` and ``plan.score_keys``: the key every artifact has with this code."""
    plan.teacher_keys = {
        teacher_ref(arch, replicate): artifact_key(
            "teacher", teacher_inputs(dataset, split, arch=arch, recipe=plan.recipe, seed=replicate))
        for arch, replicate in _teacher_jobs(plan)
    }
    plan.score_keys = {
        scores_ref(method, replicate): artifact_key(
            "scores", score_inputs(dataset, split, score_request(plan, method, replicate)))
        for method, replicate in _score_jobs(plan)
    }


def artifact_status(plan: SweepPlan, store: ArtifactStore) -> dict:
    """{"teachers": {ref: (key, present)}, "scores": {...}}: which artifacts the store already holds."""
    return {
        "teachers": {ref: (key, store.exists("teacher", key)) for ref, key in plan.teacher_keys.items()},
        "scores": {ref: (key, store.exists("scores", key)) for ref, key in plan.score_keys.items()},
    }


def run_teachers(plan: SweepPlan, dataset_ref, split: Split, store: ArtifactStore, resources: dict) -> None:
    """Train the missing teachers as parallel Ray tasks (each reuses its cached artifact if present)."""
    jobs = _teacher_jobs(plan)
    with _progress(len(jobs), "teachers") as bar:
        results = ray_adapter.run_tasks(
            teacher_task,
            [dict(dataset=dataset_ref, split=split, arch=arch, recipe=plan.recipe, replicate=replicate,
                  store_root=store.root) for arch, replicate in jobs],
            num_cpus=resources["cpu"], num_gpus=resources["gpu"], on_done=lambda _: bar.update(),
        )
    for (arch, replicate), (key, _) in zip(jobs, results):
        expected = plan.teacher_keys[teacher_ref(arch, replicate)]
        if key != expected:  # the worker runs other code than the driver
            raise RuntimeError(f"teacher {teacher_ref(arch, replicate)}: the worker produced key {key}, the driver "
                               f"expected {expected}; every node must run the same version of the code")
    cached = sum(c for _, c in results)
    print(f"teachers: {len(results)} ({cached} reused from the artifact cache)", flush=True)


def run_scores(plan: SweepPlan, dataset, dataset_ref, split: Split, store: ArtifactStore, resources: dict) -> dict:
    """{scores ref: ScoreTable}: cached tables are read; missing runs are parallel Ray tasks."""
    tables, missing = {}, []
    for method, replicate in _score_jobs(plan):
        ref = scores_ref(method, replicate)
        found = store.get("scores", plan.score_keys[ref])
        if found is not None:
            tables[ref] = ScoreTable.from_artifact(found, cached=True)
        else:
            missing.append(score_request(plan, method, replicate))
    calls = [
        dict(dataset=dataset_ref, split=split, request=request, index=i, store_root=store.root)
        for request in missing
        for i in range(SCORERS.get(request.method).num_runs(request))
    ]
    with _progress(len(calls), "scoring runs") as bar:
        runs = ray_adapter.run_tasks(
            score_run_task, calls, num_cpus=resources["cpu"], num_gpus=resources["gpu"], on_done=lambda _: bar.update()
        )
    for request in missing:
        mine = [run for call, run in zip(calls, runs) if call["request"] is request]
        tables[scores_ref(request.method, request.seed)] = combine_runs(dataset, split, request, mine, store=store)
    print(f"scores: {len(tables)} tables ({len(tables) - len(missing)} reused from the artifact cache, "
          f"{len(calls)} scoring runs computed)", flush=True)
    return tables
