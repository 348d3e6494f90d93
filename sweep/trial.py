"""The student trial: what one Tune trial runs on a worker.

Its config is small (the cell, alpha, tau, the trial's seed, the recipe and the artifact keys); the
dataset, the teachers' checkpoints and the score tables arrive through the object store
(``tune.with_parameters``). The trial reports validation accuracy every epoch with a checkpoint of
the training state, resumes from that checkpoint after a crash or a driver restart, and ends with one
report holding the final validation and test accuracy and ``done``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

import trainables
from sweep import ray_adapter
from sweep.plan import FULL
from trainables.datasets import validation_split
from trainables.recipe import Recipe
from trainables.student import train_student
from trainables.teacher import teacher_from_bytes

# Test-only fault injection: with this set to a directory, every trial crashes once after its
# second epoch's checkpoint (a marker file per trial records that it did).
CRASH_ONCE_ENV = "KDSWEEP_TEST_CRASH_ONCE"


def kept_ids(config: dict, dataset, split, tables: dict) -> np.ndarray:
    cell = config["cell"]
    if cell["method"] == FULL:
        return split.train_ids
    table = tables[config["score_keys"][f"{cell['method']}|{cell['seed']}"]]
    selection = config["selection"]
    return table.select(
        dataset.y_train, cell["fraction"], strategy=selection["strategy"],
        class_balanced=selection["class_balanced"], seed=cell["seed"],
    )


def student_trial(config: dict, *, dataset, teachers: dict, tables: dict, crash_once_dir: str | None = None) -> None:
    start, started_at = time.perf_counter(), time.time()
    ray_adapter.set_trial_threads(config["cpus_per_trial"])
    device = ray_adapter.trial_device()
    cell = config["cell"]
    recipe = Recipe.from_dict(config["recipe"])
    split = validation_split(dataset.y_train, config["val_size"], config["split_seed"])
    subset = kept_ids(config, dataset, split, tables)
    alpha, tau = config["alpha"], config["tau"]
    teacher_key = config["teacher_keys"][f"{cell['teacher']}|{cell['seed']}"]
    teacher = teacher_from_bytes(teachers[teacher_key], device, recipe.channels_last) if alpha > 0 else None
    resume = ray_adapter.checkpoint_state()
    marker = Path(crash_once_dir) / f"{cell['name']}#{config['optuna_trial']}".replace("/", "_") if crash_once_dir else None
    common = {"node_id": ray_adapter.node_id(), "num_train": int(len(subset))}

    def on_epoch(report) -> None:
        if report.epoch == report.epochs:
            return  # the final report below carries the last epoch, with the test accuracy
        ray_adapter.report(
            {"val_acc": report.val_acc, "epoch": report.epoch, "train_loss": report.train_loss, "done": False, **common},
            state=report.state(),
        )
        if marker is not None and report.epoch == 2 and not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("crashed once")
            raise RuntimeError("injected crash (KDSWEEP_TEST_CRASH_ONCE)")

    final_state = {}

    def keep_final_state(report) -> None:
        on_epoch(report)
        if report.epoch == report.epochs:
            final_state["state"] = report.state()

    result = train_student(
        dataset, subset, arch=cell["student"], recipe=recipe, split=split, teacher=teacher, alpha=alpha,
        tau=tau, seed=config["seed"], device=device, on_epoch=keep_final_state, resume=resume,
    )
    ray_adapter.report(
        {
            "val_acc": result.val_acc,
            "test_acc": result.test_acc,
            "epoch": len(result.history),
            "train_loss": result.history[-1]["train_loss"],
            "done": True,
            "resumed_from_epoch": resume["epoch"] if resume else 0,
            "busy_s": time.perf_counter() - start,
            "started_at": started_at,
            "finished_at": time.time(),
            "version": trainables.__version__,
            **common,
        },
        state=final_state.get("state"),
    )


def crash_once_dir_from_env() -> str | None:
    return os.environ.get(CRASH_ONCE_ENV) or None
