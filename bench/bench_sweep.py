"""Benchmark: the sweep's cost per student with and without cohorts, and how busy it keeps its slots.

    python bench/bench_sweep.py [--trials-per-cell 4] [--epochs 4] [--cohort-sizes 1 4]

Runs the same smoke sweep on digits on an embedded local Ray once per cohort size, side by side, then
from each results table:

- seconds per student = wall time of the trial phase (first cohort's start to the last one's end)
  / students trained; the ratio against cohort size 1 is the speed-up;
- efficiency = sum of the cohorts' busy time (inside the trial function) / (trial-phase wall time x
  slots), slots = CPUs / cpus-per-trial;
- overhead per Tune trial = (wall x slots - busy) / Tune trials: scheduling, actor start, dataset and
  teacher fetch, checkpoint syncing and result handling.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from sweep.run import main as sweep_main  # noqa: E402


def run(args, cohort_size: int) -> dict:
    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        sweep_main(["--dataset", "digits", "--profile", "smoke", "--epochs", str(args.epochs), "--methods", *args.methods,
                    "--fractions", *args.fractions, "--trials-per-cell", str(args.trials_per_cell),
                    "--cohort-size", str(cohort_size), "--cpus-per-cohort", str(args.cpus_per_trial),
                    "--storage", storage, "--name", f"bench-k{cohort_size}"])
        total = time.perf_counter() - start
        results = pd.read_csv(os.path.join(storage, f"bench-k{cohort_size}", "results.csv"))
    cohorts = results.groupby("cohort").first()  # busy time and start/end are per cohort
    window = cohorts["finished_at"].max() - cohorts["started_at"].min()
    slots = max(1, int((os.cpu_count() or 1) / args.cpus_per_trial))
    busy = cohorts["busy_s"].sum()
    return {"K": cohort_size, "students": len(results), "tune trials": len(cohorts), "command s": total,
            "trial phase s": window, "s per student": window / len(results),
            "efficiency": busy / (window * slots), "overhead per trial s": (window * slots - busy) / len(cohorts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials-per-cell", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cohort-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--cpus-per-cohort", type=float, default=1.0)
    parser.add_argument("--methods", nargs="+", default=["random", "el2n"])
    parser.add_argument("--fractions", nargs="+", default=["0.2", "0.5", "1.0"])
    args = parser.parse_args()
    rows = [run(args, k) for k in args.cohort_sizes]
    table = pd.DataFrame(rows).set_index("K")
    table["speed-up per student"] = table["s per student"].iloc[0] / table["s per student"]
    print(f"\nsweep benchmark (digits, smoke profile, {args.epochs} epochs, embedded local Ray, {os.cpu_count()} CPUs)")
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
