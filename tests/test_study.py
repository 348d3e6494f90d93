"""The committed studies on CIFAR-10 images: their findings are what their committed results tables give.

The README's section "What it finds on real images" quotes each study's `findings.md`; this fails when
a change to the analysis would change those numbers or verdicts without the study's files being
written again (`python studies/STUDY/analyse.py --results studies/STUDY/results.csv --out studies/STUDY`)."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

STUDIES = Path(__file__).resolve().parents[1] / "studies"
STUDY = STUDIES / "cifar10_subset"
# what the README states of each study's claims
STATED = {
    "cifar10_subset": {"kd_helps": "reproduced", "random_vs_scored": "reproduced (beats)"},
    "cifar10_self_distillation": {"kd_helps": "reproduced", "random_vs_scored": "reproduced (matches)",
                                  "inverse_alpha_f": "reproduced", "capacity": "not decided",
                                  "label_noise": "el2n: more gain under noise, random: no difference shown"},
}


def load(name, study=STUDY):
    spec = importlib.util.spec_from_file_location(f"study_{study.name}_{name}", study / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flat(document, prefix=""):
    """{path: leaf} of a JSON document: numbers compared with a tolerance (another BLAS may differ in
    the last bits), everything else exactly."""
    if isinstance(document, dict):
        return {k: v for key, value in document.items() for k, v in flat(value, f"{prefix}/{key}").items()}
    if isinstance(document, list):
        return {k: v for i, value in enumerate(document) for k, v in flat(value, f"{prefix}/{i}").items()}
    return {prefix: document}


@pytest.mark.parametrize("name", sorted(STATED))
def test_the_committed_findings_are_what_the_committed_results_give(name, tmp_path):
    study = STUDIES / name
    load("analyse", study).main(["--results", str(study / "results.csv"), "--out", str(tmp_path), "--no-figures"])
    assert (tmp_path / "findings.md").read_text() == (study / "findings.md").read_text()
    made, committed = (json.loads(p.read_text()) for p in (tmp_path / "claims.json", study / "claims.json"))
    leaves, committed_leaves = flat(made), flat(committed)
    assert leaves.keys() == committed_leaves.keys()
    numbers = [k for k, v in committed_leaves.items() if isinstance(v, float)]
    assert [leaves[k] for k in numbers] == pytest.approx([committed_leaves[k] for k in numbers], rel=1e-9, abs=1e-12,
                                                         nan_ok=True)
    assert ({k: v for k, v in leaves.items() if k not in numbers}
            == {k: v for k, v in committed_leaves.items() if k not in numbers})
    assert {c: committed["claims"][c]["verdict"] for c in STATED[name]} == STATED[name]
    cells = pd.read_csv(tmp_path / "cells.csv")
    pd.testing.assert_frame_equal(cells, pd.read_csv(study / "cells.csv"), rtol=1e-9)


def test_compare_matches_students_one_to_one_and_sees_a_changed_accuracy():
    compare = load("compare").compare
    study = pd.read_csv(STUDY / "results.csv")
    same = compare(study, study.copy()).set_index("column")
    assert (same["students"] == (study["status"] == "completed").sum()).all()
    assert (same["max_abs_diff"] == 0).all() and (same["identical"] == 1).all()
    rerun = study.copy()
    rerun.loc[rerun.index[:10], "test_acc"] += 0.01  # ten students differ by a point
    changed = compare(study, rerun).set_index("column")
    assert changed.loc["test_acc", "max_abs_diff"] == pytest.approx(0.01)
    assert changed.loc["test_acc", "identical"] == pytest.approx(1 - 10 / len(study))
    assert changed.loc["val_acc", "identical"] == 1
    with pytest.raises(SystemExit, match="no student"):
        compare(study, study.assign(alpha=study["alpha"] + 2))
