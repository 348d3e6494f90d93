"""Benchmark: how busy a sweep keeps its slots, and the framework's overhead per trial.

    python bench/bench_sweep.py [--trials-per-cell 4] [--epochs 4] [--cpus-per-trial 1]

Runs a smoke sweep on digits on an embedded local Ray, then from its results table:

- efficiency = sum of the trials' busy time (inside the trial function) /
  (wall time of the trial phase x concurrent slots), the trial phase running from the first trial's
  start to the last trial's end, slots = CPUs / cpus-per-trial;
- overhead per trial = (wall time of the trial phase x slots - sum of busy time) / trials: scheduling,
  actor start, checkpoint syncing and result handling, per trial;
- also the whole command's wall time and the share of it spent in the trial phase.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials-per-cell", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--methods", nargs="+", default=["random", "el2n"])
    parser.add_argument("--fractions", nargs="+", default=["0.2", "0.5", "1.0"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as storage:
        start = time.perf_counter()
        sweep_main(["--dataset", "digits", "--profile", "smoke", "--epochs", str(args.epochs), "--methods", *args.methods,
                    "--fractions", *args.fractions, "--trials-per-cell", str(args.trials_per_cell),
                    "--cpus-per-trial", str(args.cpus_per_trial), "--storage", storage, "--name", "bench"])
        total = time.perf_counter() - start
        results = pd.read_csv(os.path.join(storage, "bench", "results.csv"))
    slots = max(1, int((os.cpu_count() or 1) / args.cpus_per_trial))
    window = results["finished_at"].max() - results["started_at"].min()
    busy = results["busy_s"].sum()
    trials = len(results)
    print("\nsweep efficiency benchmark (digits, smoke profile, embedded local Ray)")
    print(f"  trials {trials}, epochs {args.epochs}, slots {slots} ({os.cpu_count()} CPUs / {args.cpus_per_trial} per trial)")
    print(f"  mean busy time per trial        {results['busy_s'].mean():7.2f} s")
    print(f"  trial phase wall time           {window:7.1f} s  (whole command {total:.1f} s, "
          f"{window / total:.0%} of it in the trial phase)")
    print(f"  efficiency busy / (wall x slots) {busy / (window * slots):7.2f}")
    print(f"  overhead per trial              {(window * slots - busy) / trials:7.2f} s")


if __name__ == "__main__":
    main()
