"""The stages before the student trials: teachers and pruning scores, as Ray tasks, cached.

Every teacher (one per architecture and seed) and every scoring run (one per method, seed and run)
is a Ray task with the trials' resources, so they spread over the cluster; each task reads from or
writes to the shared artifact store, so a later sweep (or a resumed one) reuses them. The driver then
reads the finished artifacts and hands them to the trials through the object store.
"""

from __future__ import annotations

import sys

from sweep import ray_adapter
from sweep.plan import SweepPlan
from trainables.artifacts import ArtifactStore, artifact_key
from trainables.datasets import Split
from trainables.scores import SCORERS, ScoreRequest, ScoreTable, combine_runs, score_inputs, score_run
from trainables.teacher import get_or_train_teacher, teacher_inputs


def _progress(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="task", file=sys.stdout, disable=total == 0)


def teacher_task(*, dataset, split: Split, arch: str, recipe, seed: int, store_root: str) -> tuple[str, bool]:
    ray_adapter.set_trial_threads(ray_adapter.task_cpus())
    teacher, cached = get_or_train_teacher(
        dataset, split, arch=arch, recipe=recipe, seed=seed, device=ray_adapter.trial_device(),
        store=ArtifactStore(store_root),
    )
    return teacher.meta["key"], cached


def score_run_task(*, dataset, split: Split, request: ScoreRequest, index: int, store_root: str) -> dict:
    ray_adapter.set_trial_threads(ray_adapter.task_cpus())
    return score_run(dataset, split, request, index, device=ray_adapter.trial_device(), store=ArtifactStore(store_root))


def score_request(plan: SweepPlan, method: str, seed: int) -> ScoreRequest:
    return ScoreRequest(
        method=method, arch=plan.students[0], recipe=plan.recipe, seeds=plan.score_seeds, seed=seed,
    )


def artifact_status(plan: SweepPlan, dataset, split: Split, store: ArtifactStore) -> dict:
    """Which teachers and score tables are already in the store (for ``--dry-run``)."""
    status = {"teachers": {}, "scores": {}}
    for seed in plan.config.seeds:
        for arch in plan.teachers:
            key = artifact_key("teacher", teacher_inputs(dataset, split, arch=arch, recipe=plan.recipe, seed=seed))
            status["teachers"][f"{arch}|{seed}"] = (key, store.get("teacher", key) is not None)
        for method in plan.scored_methods:
            key = artifact_key("scores", score_inputs(dataset, split, score_request(plan, method, seed)))
            status["scores"][f"{method}|{seed}"] = (key, store.get("scores", key) is not None)
    return status


def run_teachers(plan: SweepPlan, dataset_ref, split: Split, store: ArtifactStore, resources: dict) -> dict:
    """{'arch|seed': teacher key}, training the missing teachers as parallel Ray tasks."""
    jobs = [(arch, seed) for seed in plan.config.seeds for arch in plan.teachers]
    with _progress(len(jobs), "teachers") as bar:
        results = ray_adapter.run_tasks(
            teacher_task,
            [dict(dataset=dataset_ref, split=split, arch=arch, recipe=plan.recipe, seed=seed, store_root=store.root)
             for arch, seed in jobs],
            num_cpus=resources["cpu"], num_gpus=resources["gpu"], on_done=lambda _: bar.update(),
        )
    cached = sum(c for _, c in results)
    print(f"teachers: {len(results)} ({cached} reused from the artifact cache)", flush=True)
    return {f"{arch}|{seed}": key for (arch, seed), (key, _) in zip(jobs, results)}


def run_scores(plan: SweepPlan, dataset, dataset_ref, split: Split, store: ArtifactStore, resources: dict) -> dict:
    """{'method|seed': ScoreTable}: cached tables are read; missing runs are parallel Ray tasks."""
    tables, missing = {}, []
    for seed in plan.config.seeds:
        for method in plan.scored_methods:
            request = score_request(plan, method, seed)
            found = store.get("scores", artifact_key("scores", score_inputs(dataset, split, request)))
            if found is not None:
                tables[f"{method}|{seed}"] = ScoreTable.from_artifact(found, cached=True)
            else:
                missing.append(request)
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
        tables[f"{request.method}|{request.seed}"] = combine_runs(dataset, split, request, mine, store=store)
    print(f"scores: {len(tables)} tables ({len(tables) - len(missing)} reused from the artifact cache, "
          f"{len(calls)} scoring runs computed)", flush=True)
    return tables
