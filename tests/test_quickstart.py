"""The README's quickstart, reduced: a demo-profile sweep whose report's claims are checked against a
dense alpha grid that the test trains itself, and whose report renders in headless Chromium.

The reduced sweep keeps the demo's science where it is unmistakable on digits: EL2N keeps the hardest
10 % (where distillation gains tens of points) against random pruning, plus the full-data cell.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import start_embedded_ray
from test_report_browser import check_report_in_browser

from contract import subset_digest
from sweep.run import main as sweep_main

ARGS = ["--dataset", "digits", "--profile", "demo", "--methods", "random", "el2n", "--fractions", "0.1", "1.0",
        "--trials-per-cell", "4", "--min-steps", "100"]
DENSE = [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    start_embedded_ray()  # the session's (conftest): the sweep is the README's, Ray's own start is tested elsewhere
    storage = tmp_path_factory.mktemp("quickstart")
    assert sweep_main([*ARGS, "--storage", str(storage), "--name", "demo"]) == 0
    folder = storage / "demo"
    return {
        "folder": folder,
        "storage": storage,
        "results": pd.read_csv(folder / "results.csv"),
        "cells": pd.read_csv(folder / "report.cells.csv"),
    }


def dense_grid(quickstart, method: str, fraction: float, seeds=(101, 202)) -> pd.DataFrame:
    """Test accuracy at every alpha of DENSE, trained here as the sweep trains a cohort (same recipe,
    teacher and kept subset), over ``seeds``."""
    from trainables.artifacts import ArtifactStore
    from trainables.cohort import train_cohort
    from trainables.datasets import load_dataset
    from trainables.splits import validation_split
    from contract.recipe import Recipe
    from trainables.scores import ScoreTable
    from trainables.teacher import teacher_from_bytes

    results = quickstart["results"]
    row = results[(results["method"] == method) & (results["fraction"] == fraction)].iloc[0]
    store = ArtifactStore(quickstart["storage"] / "artifacts")
    recipe = Recipe.from_dict(json.loads(row["recipe"]))
    data = load_dataset("digits")
    sweep = json.loads((quickstart["folder"] / "sweep.json").read_text())
    split = validation_split(data.y_train, sweep["resolved"]["val_size"], sweep["split_seed"])
    table = ScoreTable.from_artifact(store.get("scores", row["score_key"]), cached=True)
    kept = table.select(data.y_train, fraction, strategy=row["selection"], class_balanced=bool(row["class_balanced"]),
                        seed=int(row["replicate"]))
    assert subset_digest(kept) == row["subset_digest"]  # the very subset the sweep's students saw
    teacher = teacher_from_bytes(store.get("teacher", row["teacher_key"]).payload, "cpu")
    rows = []
    for seed in seeds:
        result = train_cohort(data, kept, arch=row["student_arch"], recipe=recipe, split=split, teacher=teacher,
                              members=[(alpha, 4.0) for alpha in DENSE], seed=seed, device="cpu")
        rows += [{"alpha": m.alpha, "seed": seed, "test_acc": m.test_acc} for m in result.members]
    return pd.DataFrame(rows).groupby("alpha")["test_acc"].mean()


def test_the_quickstart_report_states_only_what_a_dense_grid_confirms(quickstart):
    cells = quickstart["cells"].set_index(["method", "fraction"])
    accuracy_columns = [c for c in cells.columns if "acc" in c and "gain" not in c and not c.endswith("_se")]
    values = cells[accuracy_columns].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    assert np.nanmin(values) >= 0 and np.nanmax(values) <= 1  # no impossible accuracy anywhere

    el2n = cells.loc[("el2n", 0.1)]
    grid = dense_grid(quickstart, "el2n", 0.1)
    dense_gain = grid.max() - grid[0.0]
    assert dense_gain > 0.05, grid  # the science the quickstart shows: KD rescues the hardest 10 %
    # The report calls it a win, and its gain (alpha* against no KD, test) agrees with the dense grid.
    assert bool(el2n["kd_win"]) and el2n["kd_gain_test_lo"] > 0
    assert abs(el2n["kd_gain_test"] - dense_gain) < 0.1, (el2n["kd_gain_test"], dense_gain)
    # Its alpha* is a good alpha: the dense grid's accuracy there is near the grid's best.
    nearest = min(DENSE, key=lambda alpha: abs(alpha - el2n["alpha_opt"]))
    assert grid.max() - grid[nearest] < 0.05, (el2n["alpha_opt"], grid)

    # A win is only claimed where the cell's own interval excludes 0.
    wins = cells[cells["kd_win"].astype(bool)]
    assert (wins["kd_gain_test_lo"] > 0).all()


def test_the_quickstart_report_renders_in_headless_chromium(quickstart, tmp_path):
    folder = quickstart["folder"]
    for sidecar in ("report.trials.csv", "report.trials.parquet", "report.cells.csv", "report.fit.json"):
        assert (folder / sidecar).exists()
    assert quickstart["results"]["teacher_test_acc"].between(0.9, 1).all()
    check_report_in_browser(folder / "report.html", quickstart["cells"], tmp_path)
