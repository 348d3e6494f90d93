"""Benchmark: what whole-file writes cost Tune's copy of its state and checkpoints into a local
experiment directory.

    python bench/bench_experiment_fs.py [--rounds 40] [--checkpoint-mb 2] [--folder DIR]

Tune copies its staging folder into the experiment directory every few seconds (the experiment
state, the searcher's state, each trial's result files) and uploads each trial checkpoint. This
times that copy with Tune's own code (``StorageContext.syncer``) through Tune's default local
filesystem (each file rewritten in place) and through ``sweep.ray_adapter.experiment_fs`` (each file
written beside, flushed to disk, renamed), alternating round by round in one run, and prints the
median time per copy and their ratio. ``--folder`` puts the experiment directory on the disk to
measure (the default is a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sweep.ray_adapter.experiment_fs import experiment_filesystem  # noqa: E402


def staging_folder(root: str, checkpoint_mb: float) -> str:
    """A staging folder shaped like a sweep's: state files, four trials' result files, one checkpoint."""
    staging = os.path.join(root, "staging")
    os.makedirs(staging)
    for name, size in (("experiment_state-2026-12-07_10-00-00.json", 120_000),
                       ("search_gen_state-2026-12-07_10-00-00.json", 2_000),
                       ("searcher-state-2026-12-07_10-00-00.pkl", 300)):
        with open(os.path.join(staging, name), "wb") as handle:
            handle.write(os.urandom(size))
    for trial in range(4):
        folder = os.path.join(staging, f"trial-{trial}")
        os.makedirs(folder)
        for name, size in (("result.json", 8_000), ("progress.csv", 3_000), ("params.json", 1_500)):
            with open(os.path.join(folder, name), "wb") as handle:
                handle.write(os.urandom(size))
    checkpoint = os.path.join(staging, "trial-0", "checkpoint_000001")
    os.makedirs(checkpoint)
    with open(os.path.join(checkpoint, "cohort.pt"), "wb") as handle:
        handle.write(os.urandom(int(checkpoint_mb * 1e6)))
    return staging


def copy_seconds(staging: str, storage_path: str, name: str, filesystem) -> float:
    from ray.train._internal.storage import StorageContext

    storage = StorageContext(storage_path=storage_path, experiment_dir_name=name, storage_filesystem=filesystem)
    start = time.perf_counter()
    storage.syncer.sync_up(staging, storage.experiment_fs_path)
    storage.syncer.wait()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--checkpoint-mb", type=float, default=2.0)
    parser.add_argument("--folder", default=None, help="where the experiment directories go (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.folder) as root:
        staging = staging_folder(root, args.checkpoint_mb)
        storage_path = os.path.join(root, "runs")
        ways = (("in place (Tune's default)", "in-place", None),
                ("whole files (experiment_fs)", "whole", experiment_filesystem(storage_path)))
        times = {label: [] for label, _, _ in ways}
        for round_ in range(args.rounds):
            for label, name, filesystem in ways:
                seconds = copy_seconds(staging, storage_path, name, filesystem)
                if round_ > 0:  # the first round creates the folders
                    times[label].append(seconds)
        files = sum(len(names) for _, _, names in os.walk(staging))
        print(f"{args.rounds - 1} copies each of a staging folder of {files} files "
              f"({args.checkpoint_mb:g} MB checkpoint), alternating, into {storage_path}")
        medians = {label: statistics.median(values) for label, values in times.items()}
        for label, median in medians.items():
            print(f"  {label:<30} median {median * 1000:7.1f} ms per copy")
        (in_place, _, _), (whole, _, _) = ways
        ratio = medians[whole] / medians[in_place]
        print(f"  whole files / in place: {ratio:.2f}x")


if __name__ == "__main__":
    main()
