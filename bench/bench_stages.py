"""Stage tasks on the idle slots' threads: a lone teacher with one trial's CPUs against the node's.

    python bench/bench_stages.py                                                 # digits
    python bench/bench_stages.py --dataset npz:../shared/data/cifar10_subset.npz --epochs 2

The sweep's teacher stage (``sweep.stages.teacher_task`` as a Ray task on an embedded Ray, a fresh
artifact cache each time, so the teacher really trains) runs side by side in one process: with one
trial's CPUs (``--cpus-per-cohort``, the old behaviour) and with ``ray_adapter.stage_cpus`` (the
CPUs of the slots no other stage task uses). Modes alternate over ``--repeats`` rounds; the script
prints each wall time and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from search_spaces.defaults import defaults_for  # noqa: E402
from sweep import ray_adapter  # noqa: E402
from sweep.stages import teacher_task  # noqa: E402
from trainables.datasets import load_dataset  # noqa: E402
from trainables.splits import validation_split  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--arch", default=None, help="default: the dataset's teacher")
    parser.add_argument("--epochs", type=int, default=None, help="default: the dataset's recipe")
    parser.add_argument("--cpus-per-cohort", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    defaults = defaults_for(args.dataset)
    arch = args.arch or defaults.teacher_arch
    recipe = defaults.recipe.replace(precision="fp32")
    if args.epochs:
        recipe = recipe.replace(epochs=args.epochs, warmup_epochs=min(recipe.warmup_epochs, args.epochs - 1))
    data = load_dataset(args.dataset)
    split = validation_split(data.y_train, defaults.val_size, seed=0)
    resources = ray_adapter.connect(None)
    print(f"{args.dataset}: teacher {arch}, {recipe.epochs} epochs, on an embedded Ray of {resources.get('CPU', 0):g} CPUs",
          flush=True)
    data_ref = ray_adapter.put(data)
    modes = {"one trial's CPUs": args.cpus_per_cohort, "idle slots' CPUs": ray_adapter.stage_cpus(1, args.cpus_per_cohort)}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(args.repeats):
        for mode, cpus in modes.items():
            with tempfile.TemporaryDirectory() as store:
                start = time.perf_counter()
                ray_adapter.run_tasks(teacher_task, [dict(dataset=data_ref, split=split, arch=arch, recipe=recipe,
                                                          replicate=0, store_root=store)], num_cpus=cpus, num_gpus=0)
                times[mode].append(time.perf_counter() - start)
            print(f"  round {round_ + 1}: {mode} ({cpus:g} CPU): {times[mode][-1]:.1f} s", flush=True)
    ray_adapter.shutdown()
    one, idle = (statistics.median(times[m]) for m in modes)
    print(f"median teacher stage: {one:.1f} s with one trial's CPUs, {idle:.1f} s with the idle slots' CPUs: "
          f"{one / idle:.2f}x faster", flush=True)


if __name__ == "__main__":
    main()
