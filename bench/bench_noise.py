"""Trial-to-trial noise of real students: the number the calibration harness simulates with.

    python bench/bench_noise.py                                   # digits
    python bench/bench_noise.py --dataset npz:../shared/data/cifar10_subset.npz --arch small_cnn --epochs 15

Trains a teacher once, then for each of ``--seeds`` seeds one cohort of students at ``--alphas`` on
the same random ``--fraction`` of the training split (the seed changes the students' initialisation
and batch order, as between the trials of one cell), and prints per alpha the standard deviation of
validation and test accuracy across seeds (trial-to-trial noise, points), and the standard deviation
of the paired difference between the first two alphas (members of one cohort) against the unpaired
one (each alpha from a different seed's cohort).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from search_spaces.defaults import defaults_for  # noqa: E402
from trainables.cohort import train_cohort  # noqa: E402
from trainables.datasets import load_dataset  # noqa: E402
from trainables.splits import validation_split  # noqa: E402
from trainables.selection import random_subset  # noqa: E402
from trainables.teacher import train_teacher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--arch", default=None, help="teacher and student (default: the dataset's student)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the dataset's recipe")
    parser.add_argument("--min-steps", type=int, default=200)
    parser.add_argument("--fraction", type=float, default=0.3)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    defaults = defaults_for(args.dataset)
    arch = args.arch or defaults.student_arch
    recipe = defaults.recipe.replace(min_steps=args.min_steps, precision="fp32")
    if args.epochs:
        recipe = recipe.replace(epochs=args.epochs, warmup_epochs=min(recipe.warmup_epochs, args.epochs - 1))
    data = load_dataset(args.dataset)
    split = validation_split(data.y_train, defaults.val_size, seed=0)
    start = time.perf_counter()
    teacher = train_teacher(data, arch=arch, recipe=recipe, split=split, seed=0, device="cpu")
    print(f"{args.dataset}: {arch}, {recipe.epochs} epochs (>= {recipe.min_steps} steps), validation split "
          f"{len(split.val_ids)} images; teacher test accuracy {teacher.meta['test_acc']:.3f} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    subset = random_subset(split.train_ids, args.fraction, seed=0)
    val, test = [], []
    for seed in range(args.seeds):
        result = train_cohort(data, subset, arch=arch, recipe=recipe, split=split, teacher=teacher,
                              members=[(alpha, 4.0) for alpha in args.alphas], seed=1000 + seed, device="cpu")
        val.append([m.val_acc for m in result.members])
        test.append([m.test_acc for m in result.members])
        print(f"  seed {seed}: val {np.round(val[-1], 4).tolist()} test {np.round(test[-1], 4).tolist()}", flush=True)
    val, test = np.array(val) * 100, np.array(test) * 100
    print(f"\ntrial-to-trial noise at f = {args.fraction}, {args.seeds} seeds (sd across seeds, points):")
    for i, alpha in enumerate(args.alphas):
        print(f"  alpha {alpha:g}: val mean {val[:, i].mean():.2f} sd {val[:, i].std(ddof=1):.2f} | "
              f"test mean {test[:, i].mean():.2f} sd {test[:, i].std(ddof=1):.2f}")
    for name, acc in (("val", val), ("test", test)):
        paired = acc[:, 1] - acc[:, 0]
        unpaired = acc[1:, 1] - acc[:-1, 0]  # each alpha from another seed's cohort
        print(f"  {name}: acc({args.alphas[1]:g}) - acc({args.alphas[0]:g}) paired sd {paired.std(ddof=1):.2f}, "
              f"unpaired sd {unpaired.std(ddof=1):.2f} (ratio {unpaired.std(ddof=1) / max(paired.std(ddof=1), 1e-9):.2f})")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
