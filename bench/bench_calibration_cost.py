"""What the pooled fit's bias-corrected calibration costs against the plug-in one, side by side.

    python bench/bench_calibration_cost.py [--rounds 3] [--methods 5]

One simulated sweep at the nearest no-relation truth to the inverse relation (``analysis.simulate``:
5 methods x 6 fractions + f = 1, 16 students per cell, noise scale 0.51, the CIFAR-10 subset's), its
pooled group calibrated with ``analysis.pooled.calibrate`` with and without ``bias_corrected``,
alternating round by round in one process; prints the median seconds of each and their ratio (the
ratio is what carries to another machine).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from analysis import pooled
from analysis.alpha_f import POOLED, group_data
from analysis.results import tidy
from analysis.simulate import METHODS, simulate_sweep


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", type=int, default=5, help="how many of the simulator's methods (cells: 6 per method + 1)")
    args = parser.parse_args(argv)
    trials = tidy(simulate_sweep("nearest_inverse", "grid", 16, seed=100_003, noise_scale=0.51,
                                 methods=tuple(METHODS[: args.methods])))
    group = group_data(trials, POOLED, (0.0, 1.0))
    cells, x, sigma2 = group.cells, group.x, group.sigma2
    observed = pooled.direction_test(group.stats, x, sigma2)
    seconds = {False: [], True: []}
    for round_ in range(args.rounds):
        for corrected in (False, True):
            start = time.perf_counter()
            pooled.calibrate(cells, x, sigma2, observed, np.random.default_rng(round_), bias_corrected=corrected)
            seconds[corrected].append(time.perf_counter() - start)
    plug_in, corrected = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"pooled calibration of {len(cells)} cells, median of {args.rounds} rounds: plug-in {plug_in:.2f} s, "
          f"bias-corrected {corrected:.2f} s: {corrected / plug_in:.2f}x the time")


if __name__ == "__main__":
    main()
