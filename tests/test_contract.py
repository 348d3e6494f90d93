"""The contract between the stages: a cell reads back from a results row, a trial spec survives
Tune's config, and the analysis runs where torch is not installed."""

import subprocess
import sys
import textwrap

import pandas as pd

from contract import CELL_COLUMNS, RESULT_COLUMNS, Cell, StudentSpec, CohortSettings, CohortSpec, subset_digest


def test_a_cell_reads_back_from_its_results_row():
    cell = Cell("digits", "el2n", 0.3, "resnet20", "small_cnn", 2)
    row = {**cell.to_dict(), "alpha": 0.5, "val_acc": 0.9}
    assert Cell.from_row(row) == cell
    assert list(cell.to_dict()) == CELL_COLUMNS and CELL_COLUMNS == list(RESULT_COLUMNS)[: len(CELL_COLUMNS)]
    # CSV round trip: a fraction of 1 reads back as 1.0, a replicate as an int, the name unchanged
    frame = pd.read_csv(pd.io.common.StringIO(pd.DataFrame([Cell("d", "full", 1, "a", "b", 0).to_dict()]).to_csv(index=False)))
    assert Cell.from_row(frame.iloc[0]).name == "d|full|f=1.0|a->b|replicate=0"


def test_label_noise_is_part_of_the_cell_and_its_refs_only_when_above_zero():
    from contract import REQUIRED_COLUMNS, scores_ref, teacher_ref

    clean = Cell("digits", "el2n", 0.3, "resnet20", "small_cnn", 2)
    assert clean.label_noise == 0.0 and CELL_COLUMNS[-1] == "label_noise" and RESULT_COLUMNS["label_noise"] == "float"
    # P = 0: the names of sweeps before the axis (Optuna study names, results' cell column, artifact refs)
    assert clean.name == "digits|el2n|f=0.3|resnet20->small_cnn|replicate=2"
    assert clean.teacher_ref == teacher_ref("resnet20", 2) == "resnet20|replicate=2"
    assert clean.scores_ref == scores_ref("el2n", 2) == "el2n|replicate=2"
    noisy = Cell("digits", "el2n", 0.3, "resnet20", "small_cnn", 2, 0.4)
    assert noisy.name == "digits|el2n|f=0.3|resnet20->small_cnn|replicate=2|noise=0.4"
    assert noisy.teacher_ref == teacher_ref("resnet20", 2, 0.4) == "resnet20|replicate=2|noise=0.4"
    assert noisy.scores_ref == "el2n|replicate=2|noise=0.4" and Cell("d", "full", 1.0, "a", "b", 0, 0.4).scores_ref is None
    # a row reads back with its noise; a row of an older sweep (no column, or an empty field) is P = 0
    assert Cell.from_row({**noisy.to_dict(), "alpha": 0.5}) == noisy
    old = {k: v for k, v in clean.to_dict().items() if k != "label_noise"}
    assert Cell.from_row(old) == clean and Cell.from_row({**old, "label_noise": float("nan")}) == clean
    assert "label_noise" not in REQUIRED_COLUMNS
    # the float survives Tune's config (JSON) exactly, so the trial finds its dataset by it
    import json

    settings = CohortSettings(recipe={"epochs": 3}, val_size=0.1, split_seed=0, selection="hard", class_balanced=False,
                             teacher_keys={noisy.teacher_ref: "T"}, score_keys={noisy.scores_ref: "S"},
                             cpus_per_trial=1.0, profile="smoke", version="1")
    spec = settings.spec(noisy, cell_index=0, members=[StudentSpec(0.0, 4.0, 0)], cohort_seed=1)
    back = CohortSpec.from_config(json.loads(json.dumps(spec.to_config())))
    assert back == spec and {0.0: "clean", 0.4: "noisy"}[back.cell.label_noise] == "noisy"
    # an older trial's config (no label_noise in its cell) decodes as P = 0
    config = spec.to_config()
    config["cell"] = old
    assert CohortSpec.from_config(config).cell.label_noise == 0.0


def test_a_cohort_spec_is_encoded_once_and_decoded_once():
    cell = Cell("digits", "random", 0.2, "small_cnn", "small_cnn", 0)
    settings = CohortSettings(recipe={"epochs": 3}, val_size=0.1, split_seed=0, selection="easy", class_balanced=True,
                             teacher_keys={cell.teacher_ref: "T"}, score_keys={cell.scores_ref: "S"},
                             cpus_per_trial=1.0, profile="smoke", version="1")
    members = [StudentSpec(0.0, 4.0, 7), StudentSpec(0.25, 2.0, 8)]
    spec = settings.spec(cell, cell_index=4, members=members, cohort_seed=11)
    assert spec.teacher_key == "T" and spec.score_key == "S" and spec.has_baseline
    assert CohortSpec.from_config(spec.to_config()) == spec
    # a Tune config saved before trial_seed was renamed cohort_seed (a resumed older sweep) decodes the same
    older = {("trial_seed" if name == "cohort_seed" else name): value for name, value in spec.to_config().items()}
    assert "cohort_seed" not in older and CohortSpec.from_config(older) == spec
    full = Cell("digits", "full", 1.0, "small_cnn", "small_cnn", 0)
    assert settings.spec(full, cell_index=0, members=members[1:], cohort_seed=1).score_key is None


def test_subset_digest_names_a_set_of_ids():
    assert subset_digest([3, 1, 2]) == subset_digest([1, 2, 3]) != subset_digest([1, 2, 4])


def test_the_analysis_runs_without_torch_or_ray(tmp_path):
    """A laptop with pandas and plotly reads a cluster's results: importing torch or Ray must not happen."""
    rows = []
    # two teachers at random f = 0.2: the capacity comparison orders them by the sizes the sweep recorded
    # (teacher_params), so it is made without torch as with it
    sizes = {"small_cnn": 94762, "resnet20": 269722}
    for method, fraction, teacher in (("random", 0.2, "small_cnn"), ("random", 0.2, "resnet20"), ("el2n", 0.2, "small_cnn"),
                                      ("full", 1.0, "small_cnn")):
        for i, alpha in enumerate((0.0, 0.3, 0.6, 0.9)):
            rows.append({**Cell("digits", method, fraction, teacher, "small_cnn", 0).to_dict(), "alpha": alpha,
                         "tau": 4.0, "cohort_seed": i, "val_acc": 0.8 + 0.05 * alpha, "test_acc": 0.79 + 0.05 * alpha,
                         "epochs_run": 3, "status": "completed", "optuna_trial": i, "teacher_params": sizes[teacher]})
    pd.DataFrame(rows, columns=list(RESULT_COLUMNS)).to_csv(tmp_path / "results.csv", index=False)
    script = textwrap.dedent(f"""
        import importlib.abc, sys

        class Blocked(importlib.abc.MetaPathFinder):  # as if torch and Ray were not installed
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("torch", "torchvision", "ray"):
                    raise ImportError(f"No module named {{name!r}}")

        sys.meta_path.insert(0, Blocked())
        import analysis.report
        sys.argv = ["analysis.report", {str(tmp_path)!r}, "--bootstrap", "50"]
        analysis.report.main()
        print("torch" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("False")
    html = (tmp_path / "report.html").read_text()
    assert "<b>Teacher capacity</b> (" in html and "small_cnn minus resnet20" in html and 'id="teachers"' in html
    # a table written before the sizes were recorded: the report says why it does not compare them
    pd.DataFrame(rows, columns=list(RESULT_COLUMNS)).drop(columns="teacher_params").to_csv(tmp_path / "results.csv", index=False)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Teacher capacity</b>: not compared, because the results do not record the teachers' sizes" in (
        tmp_path / "report.html").read_text()


def test_a_failure_is_one_line_naming_the_error():
    from contract import error_line

    assert error_line(None) is None
    assert error_line(ValueError("alpha must lie in [0, 1]")) == "ValueError: alpha must lie in [0, 1]"
    # what Ray raises for an error in a worker: its traceback, whose last line names the original error
    traceback = ("ray::ImplicitFunc.train() (pid=1, ip=127.0.0.1)\n  File \"x.py\", line 3, in f\n    raise RuntimeError(...)\n"
                 "RuntimeError: injected crash (KDSWEEP_TEST_CRASH_ONCE)\n")
    assert error_line(RuntimeError(traceback)) == "RuntimeError: injected crash (KDSWEEP_TEST_CRASH_ONCE)"
    assert error_line(OSError("first line\nsecond line")) == "OSError: second line"
    assert error_line(KeyError()) == "KeyError"


def test_the_plain_definitions_load_without_torch_ray_or_optuna():
    """The contract, the recipe, the alpha space, the profiles and the analysis are plain Python: planning
    and reading a sweep never waits for torch to load."""
    script = ("import sys, contract, contract.recipe, search_spaces.alpha_space, search_spaces.profiles, "
              "analysis.report; print(sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr[-3000:]


def test_a_cohort_becomes_one_results_row_per_student():
    from sweep.results import cohort_status, member_rows

    cell = Cell("digits", "el2n", 0.1, "small_cnn", "small_cnn", 0)
    settings = CohortSettings(recipe={"epochs": 3, "batch_size": 64}, val_size=0.1, split_seed=0, selection="hard",
                             class_balanced=False, teacher_keys={cell.teacher_ref: "T"}, score_keys={cell.scores_ref: "S"},
                             cpus_per_trial=1.0, profile="demo", version="1", halving=True)
    spec = settings.spec(cell, cell_index=0, members=[StudentSpec(0.0, 4.0, 0), StudentSpec(0.5, 4.0, 1),
                                                      StudentSpec(1.0, 4.0, 2)], cohort_seed=9)
    metrics = {"val_acc": 0.9, "done": True, "epoch": 3, "num_train": 130, "member_val_acc": [0.8, 0.9, 0.6],
               "member_test_acc": [0.79, 0.88, 0.61], "member_status": "completed|completed|stopped",
               "member_epochs": [3, 3, 1], "member_steps": [9, 9, 3]}
    status = cohort_status(metrics, None, "TERMINATED")
    rows = pd.DataFrame(member_rows(spec, metrics, status=status, error=None, cohort="abc", teacher_meta={"T": {"test_acc": 0.99}}))
    assert list(rows["status"]) == ["completed", "completed", "stopped"]  # halving stopped the third
    assert list(rows["alpha"]) == [0.0, 0.5, 1.0] and list(rows["optuna_trial"]) == [0, 1, 2]
    assert list(rows["test_acc"]) == [0.79, 0.88, 0.61] and list(rows["steps_run"]) == [9, 9, 3]
    assert set(rows["cohort"]) == {"abc"} and set(rows["cohort_seed"]) == {9} and set(rows["cohort_size"]) == {3}
    assert set(rows["teacher_test_acc"]) == {0.99} and set(rows["score_key"]) == {"S"}
    # a trial that never reported leaves no row; one cut short by a stopped sweep reads "interrupted"
    assert cohort_status({}, None, "PENDING") is None
    assert cohort_status({"val_acc": 0.5}, None, "RUNNING") == "interrupted"
    assert cohort_status({"val_acc": 0.5}, None, "TERMINATED") == "stopped"
    # a FIFO sweep never stops a cohort early: Tune's TERMINATED on an unfinished one is the sweep's Ctrl-C
    assert cohort_status({"val_acc": 0.5}, None, "TERMINATED", scheduler_stops=False) == "interrupted"
    assert cohort_status({"val_acc": 0.5, "done": True}, None, "TERMINATED", scheduler_stops=False) == "completed"
    assert cohort_status({}, "RuntimeError: boom", "ERROR") == "error"
