"""The teacher stage of a sweep whose teacher is cached (a resumed sweep, or one that reuses its
teachers): a Ray task that reads it, as every sweep did before, against the driver's own read.

    python bench/bench_cached_teacher.py                   # digits
    python bench/bench_cached_teacher.py --repeats 5

One teacher is trained into a fresh artifact cache first. Then each round starts an embedded Ray, as
a sweep's driver does, and times the stage both ways on it in turn (the order alternates between
rounds): ``sweep.stages.teacher_task`` as a Ray task (a worker that starts and imports torch to read
one file) and ``sweep.stages._cached_teacher`` in this process (what ``run_teachers`` does now for a
cached teacher). Each way gets a Ray of its own, so the task's worker is a fresh one each time, as at
the start of a sweep. Prints each wall time and the ratio of the medians.
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
from sweep.stages import _cached_teacher, teacher_task  # noqa: E402
from trainables.artifacts import ArtifactStore  # noqa: E402
from trainables.datasets import load_dataset  # noqa: E402
from trainables.splits import validation_split  # noqa: E402
from trainables.teacher import get_or_train_teacher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    defaults = defaults_for(args.dataset)
    arch, recipe = defaults.teacher_arch, defaults.recipe.replace(precision="fp32")
    data = load_dataset(args.dataset)
    split = validation_split(data.y_train, defaults.val_size, seed=0)
    with tempfile.TemporaryDirectory() as root:
        store = ArtifactStore(root)
        teacher, _ = get_or_train_teacher(data, split, arch=arch, recipe=recipe, seed=0, device="cpu", store=store)
        key = teacher.meta["key"]
        print(f"{args.dataset}: teacher {arch} cached as {key}", flush=True)

        def as_task(data_ref) -> tuple:
            return ray_adapter.run_tasks(teacher_task, [dict(dataset=data_ref, split=split, arch=arch, recipe=recipe,
                                                             replicate=0, store_root=root)], num_cpus=1, num_gpus=0)[0]

        def in_driver(data_ref) -> tuple:
            return _cached_teacher(store, key)[0]

        ways = {"a Ray task": as_task, "the driver": in_driver}
        times: dict[str, list[float]] = {way: [] for way in ways}
        for round_ in range(args.repeats):
            order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
            for way in order:
                ray_adapter.connect(None)
                try:
                    data_ref = ray_adapter.put(data)  # the driver has put the dataset before the stage
                    start = time.perf_counter()
                    result = ways[way](data_ref)
                    times[way].append(time.perf_counter() - start)
                finally:
                    ray_adapter.shutdown()
                assert result[0] == key and result[1], result  # the cached teacher, read
                print(f"  round {round_ + 1}: {way}: {times[way][-1]:.2f} s", flush=True)
    task, driver = (statistics.median(times[way]) for way in ways)
    print(f"median teacher stage with the teacher cached: {task:.2f} s as a Ray task, {driver:.2f} s read by the "
          f"driver: {driver / task:.2g}x the time", flush=True)


if __name__ == "__main__":
    main()
