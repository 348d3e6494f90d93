"""Report cost for a sweep of N trials: time to analyse and render, and the HTML's size.

    python bench/bench_report.py --trials 500

A synthetic results table in the sweep's format (5 methods x 7 fractions, the f = 1.0 cell shared, one
alpha = 0 baseline per cell, accuracy a noisy parabola in alpha peaking at alpha*(f) = 0.2 + 0.08/f;
``--bootstrap`` is the number of posterior draws kept per alpha-f fit)
is written to a temporary experiment directory; the report is built from it as
``python -m analysis.report`` does. Printed: seconds per stage and the sizes of the files, with the
part of the HTML that is plotly.js itself.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import pandas as pd

from contract import RESULT_COLUMNS

COLUMNS = list(RESULT_COLUMNS)

METHODS = ("random", "el2n", "grand", "forgetting", "memorization")
FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def synthetic_results(trials: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cells = [(m, f) for f in FRACTIONS if f < 1 for m in METHODS] + [("full", 1.0)]
    per_cell = np.full(len(cells), trials // len(cells))
    per_cell[: trials - per_cell.sum()] += 1
    rows = []
    for (method, fraction), n in zip(cells, per_cell):
        optimum = min(1.0, 0.2 + 0.08 / fraction)
        for i in range(n):
            alpha = 0.0 if i == 0 else float(rng.uniform())
            val = 0.55 + 0.4 * fraction - 0.15 * (alpha - optimum) ** 2 + rng.normal(0, 0.006)
            rows.append({
                "dataset": "cifar10", "method": method, "fraction": fraction, "teacher_arch": "resnet18_cifar",
                "student_arch": "resnet18_cifar", "replicate": 0, "alpha": alpha, "tau": 4.0, "cohort_seed": int(rng.integers(1 << 31)),
                "val_acc": val, "test_acc": val + rng.normal(0, 0.004), "epochs_run": 200, "status": "completed",
                "optuna_trial": i, "teacher_key": "teacher-0", "teacher_val_acc": 0.95, "teacher_test_acc": 0.948,
                "score_key": None if method == "full" else f"scores-{method}", "version": "bench",
            })
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()

    from analysis.report import analyse, render_html, write_report
    from analysis.results import load_experiment
    from plotly.offline import get_plotlyjs

    with tempfile.TemporaryDirectory() as folder:
        synthetic_results(args.trials).to_csv(os.path.join(folder, "results.csv"), index=False)
        t0 = time.perf_counter()
        experiment = load_experiment(folder)
        t1 = time.perf_counter()
        analysis = analyse(experiment, n_boot=args.bootstrap)
        t2 = time.perf_counter()
        page = render_html(analysis)
        t3 = time.perf_counter()
        paths = write_report(analysis, os.path.join(folder, "report.html"))
        t4 = time.perf_counter()
        sizes = {key: os.path.getsize(path) for key, path in paths.items()}
    plotly_js = len(get_plotlyjs().encode())
    print(f"{args.trials} trials, {experiment.trials['cell'].nunique()} cells, {args.bootstrap} bootstrap replicates")
    print(f"  load {t1 - t0:.2f} s | analyse {t2 - t1:.2f} s | render HTML {t3 - t2:.2f} s | "
          f"write all files {t4 - t3:.2f} s | total (load + analyse + write) {t1 - t0 + t2 - t1 + t4 - t3:.2f} s")
    html_size = len(page.encode())
    print(f"  HTML {html_size / 1e6:.2f} MB, of which plotly.js {plotly_js / 1e6:.2f} MB "
          f"and the report itself {(html_size - plotly_js) / 1e3:.0f} kB")
    for key, size in sizes.items():
        print(f"  {key}: {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
