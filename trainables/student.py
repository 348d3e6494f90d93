"""Student: trained on a subset of the training split with KD from a teacher.

    python -m trainables.student --dataset digits --teacher teacher.pt --fraction 0.1 --alpha 0.8

``alpha`` weights the distillation term (``trainables.kd.kd_loss``); ``alpha = 0`` is plain training
and runs no teacher forward at all. A student is a cohort of one (``trainables.cohort``).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from contract import DEFAULT_TAU
from trainables.cohort import Member, check_subset, train_cohort
from trainables.datasets import Dataset, load_dataset
from trainables.splits import Split, validation_split
from trainables.kd import check_alpha_tau, kd_loss
from trainables.device import resolve_device
from contract.recipe import Recipe
from contract.storage import check_writable
from trainables.teacher import Teacher, load_teacher, print_epoch

__all__ = ["StudentResult", "check_subset", "train_student", "read_ids", "main"]


@dataclass
class StudentResult:
    arch: str
    alpha: float
    tau: float
    seed: int
    num_train: int
    val_acc: float | None
    test_acc: float
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def train_student(
    dataset: Dataset,
    subset_ids: np.ndarray,
    *,
    arch: str,
    recipe: Recipe,
    split: Split,
    teacher: Teacher | None,
    alpha: float,
    tau: float = DEFAULT_TAU,
    seed: int = 0,
    device: torch.device | str = "auto",
    on_epoch=None,
    resume: dict | None = None,
) -> StudentResult:
    """Train ``arch`` on ``subset_ids`` with ``kd_loss`` (alpha, tau) from ``teacher``: a cohort of one
    (``trainables.cohort.train_cohort``).

    Reports per-epoch validation accuracy through ``on_epoch`` and returns the final validation and
    test accuracy. The teacher sees the same augmented batch as the student, in eval mode.
    ``resume`` continues from an epoch's ``report.state()``: the cohort's resume state (one format for a
    student and a cohort, ``trainables.cohort.train_cohort``'s, here of a cohort of one).
    """
    check_alpha_tau(alpha, tau)

    def report_with_cohort_state(report) -> None:
        on_epoch(replace(report.members[0], state=report.state))

    cohort = train_cohort(
        dataset, subset_ids, arch=arch, recipe=recipe, split=split, teacher=teacher, members=[Member(alpha, tau)],
        seed=seed, device=device, on_report=None if on_epoch is None else report_with_cohort_state,
        resume=resume, loss=kd_loss,  # looked up here, so that kd_loss can be watched in this module
    )
    (result,) = cohort.members
    return StudentResult(
        arch=arch, alpha=alpha, tau=tau, seed=seed, num_train=cohort.num_train,
        val_acc=result.val_acc, test_acc=result.test_acc, history=result.history,
    )


def read_ids(path: str) -> np.ndarray:
    """Example ids from a ``.npy`` array or a text file of integers."""
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    return np.loadtxt(path, dtype=np.int64, ndmin=1)


def main(argv: list[str] | None = None) -> dict:
    from contract.plugins import load_plugins_first

    plugin_problem = load_plugins_first(argv)  # before the parser: its help lists the plugins' entries
    from search_spaces.defaults import defaults_for
    from trainables.cli import add_data_args, add_recipe_args, recipe_from_args, usage_errors, val_size_arg
    from trainables.models import check_model_name
    from trainables.selection import check_fraction, random_subset

    parser = argparse.ArgumentParser(
        prog="python -m trainables.student",
        description="Train a student on a subset of the training split with KD from a teacher.",
    )
    add_data_args(parser)
    parser.add_argument("--teacher", default=None, help="teacher checkpoint (from trainables.teacher); needed when alpha > 0")
    parser.add_argument("--arch", default=None, help="student architecture (default: the dataset's student)")
    parser.add_argument("--alpha", type=float, required=True, help="weight of the distillation term, in [0, 1]")
    parser.add_argument("--tau", type=float, default=DEFAULT_TAU, help="distillation temperature (default %(default)s)")
    subset = parser.add_mutually_exclusive_group()
    subset.add_argument("--fraction", type=float, default=1.0, help="keep this random fraction f of the training split")
    subset.add_argument("--subset-ids", default=None, help="keep these example ids (.npy or a text file)")
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the random subset")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch-order seed")
    parser.add_argument("--val-size", type=val_size_arg, default=None,
                        help="validation split when there is no teacher (with one, the teacher's split is used)")
    parser.add_argument("--split-seed", type=int, default=None, help="seed of the validation split (likewise)")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    add_recipe_args(parser)
    if plugin_problem:
        parser.error(plugin_problem)
    args = parser.parse_args(argv)

    # Everything that can be wrong with the input is reported as a usage error before training.
    with usage_errors(parser):
        defaults = defaults_for(args.dataset)
        arch = args.arch or defaults.student_arch
        check_model_name(arch)
        check_alpha_tau(args.alpha, args.tau)
        if args.subset_ids is None:
            check_fraction(args.fraction)
        if args.alpha > 0 and not args.teacher:
            raise ValueError("--alpha > 0 needs --teacher")
        recipe = recipe_from_args(args)
        device = resolve_device(args.device)
        teacher = load_teacher(args.teacher, device, channels_last=recipe.channels_last) if args.teacher else None
        dataset = load_dataset(args.dataset, args.data_dir, download=not args.offline, verify=args.verify)
        if teacher is not None:
            val_size = teacher.meta["split"]["val_size"] if args.val_size is None else args.val_size
            split_seed = teacher.meta["split"]["seed"] if args.split_seed is None else args.split_seed
        else:
            val_size = defaults.val_size if args.val_size is None else args.val_size
            split_seed = 0 if args.split_seed is None else args.split_seed
        split = validation_split(dataset.y_train, val_size, split_seed)
        if args.subset_ids is not None:
            subset_ids = check_subset(read_ids(args.subset_ids), split)
        else:
            subset_ids = random_subset(split.train_ids, args.fraction, args.subset_seed)
        if teacher is not None:
            teacher.check_compatible(dataset, split)
        if args.out:  # found unwritable now, not after the training
            check_writable(os.path.dirname(os.path.abspath(args.out)))
    result = train_student(
        dataset, subset_ids, arch=arch, recipe=recipe, split=split, teacher=teacher, alpha=args.alpha,
        tau=args.tau, seed=args.seed, device=device, on_epoch=print_epoch,
    )
    summary = {k: v for k, v in result.to_dict().items() if k != "history"}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result.to_dict(), handle, indent=2)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
