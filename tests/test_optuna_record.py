"""The Optuna storage of a sweep is a full record of it (what optuna-dashboard shows): every student's
learning curve as intermediate values, and the fields that join its trial to its results.csv row."""

import optuna
import pytest

from analysis.results import load_experiment
from search_spaces.alpha_space import AlphaSpace
from contract import Cell, CohortSettings
from sweep.optuna_storage import default_optuna_url, open_optuna_storage
from sweep.run import main
from sweep.searcher import CellSearcher
from sweep.trial import REPORTS_PER_TRIAL

# Two cells (random at f = 0.2, the full-data cell), three students each in cohorts of two and one,
# tau searched (the baseline at the range's log midpoint, 3; TPE samples the others) so that members
# have their own taus.
ARGS = ["--dataset", "digits", "--profile", "smoke", "--epochs", "3", "--methods", "random", "--fractions", "0.2", "1.0",
        "--trials-per-cell", "3", "--cohort-size", "2", "--tau", "1", "9", "--alpha-design", "tpe"]


def reported_epochs(epochs: int) -> list[int]:
    """The epochs a trial reports at (``sweep.trial.cohort_trial``): every stride-th, and the last."""
    stride = -(-epochs // REPORTS_PER_TRIAL)
    return [e for e in range(1, epochs) if e % stride == 0] + [epochs]


def test_every_trial_has_its_learning_curve_and_its_results_row_fields(embedded_ray, shared_artifacts, tmp_path):
    assert main([*ARGS, "--storage", str(tmp_path), "--name", "record", "--artifacts", str(shared_artifacts)]) == 0
    exp_dir = tmp_path / "record"
    results = load_experiment(str(exp_dir)).trials  # results.csv, with the analysis's `cell` column
    assert len(results) == 6 and (results["status"] == "completed").all()
    assert results.groupby("cell")["cohort"].nunique().eq(2).all()  # cohorts of 2 and 1 in each cell

    storage = open_optuna_storage(default_optuna_url(str(exp_dir)))
    studies = {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
               for s in optuna.get_all_study_summaries(storage)}
    assert len(studies) == 2
    assert {name.split("/", 1)[1] for name in studies} == set(results["cell"])  # "record/<cell>"
    assert all(name.startswith("record/") for name in studies)

    rows = {(row["cell"], int(row["optuna_trial"])): row for row in results.to_dict("records")}
    seen = 0
    for name, study in studies.items():
        cell = name.split("/", 1)[1]
        for trial in study.trials:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            row = rows[(cell, trial.number)]
            # the learning curve: one value per report, at increasing epochs, ending at the final value
            steps = sorted(trial.intermediate_values)
            assert steps == reported_epochs(int(row["epochs_run"])) == [1, 2, 3]
            assert trial.intermediate_values[steps[-1]] == trial.value == row["val_acc"]
            assert all(0 <= v <= 1 for v in trial.intermediate_values.values())
            # the fields that join the trial to its results row
            assert trial.user_attrs["cell"] == cell
            assert trial.user_attrs["cohort"] == row["cohort"]
            assert trial.user_attrs["cohort_seed"] == row["cohort_seed"]
            assert trial.user_attrs["tau"] == row["tau"] == trial.params["tau"]
            seen += 1
    assert seen == len(results)
    # taus were searched: the attribute is each member's own, not one fixed value
    assert results["tau"].nunique() > 2 and (results.loc[results["alpha"] == 0, "tau"] == 3.0).all()


# ---- the searcher's record, driven directly (no Ray): every storage kind, every edge -------------

CELL = Cell("digits", "random", 0.2, "small_cnn", "small_cnn", 0)
SETTINGS = CohortSettings(
    recipe={"epochs": 3}, val_size=0.1, split_seed=0, selection="hard", class_balanced=False,
    teacher_keys={CELL.teacher_ref: "teacher-key"}, score_keys={CELL.scores_ref: "scores-random"},
    cpus_per_trial=1.0, profile="smoke", version="test",
)


def _report(epoch, values, done=False, **extra):
    return {"val_acc": max(v for v in values if v is not None), "epoch": epoch, "done": done,
            "member_val_acc": values, **extra}


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_reports_become_intermediate_values_once_per_step_and_never_raise(tmp_path, kind, caplog):
    url = str(tmp_path / "optuna.journal") if kind == "journal" else f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = CellSearcher(experiment="exp", cells=[CELL], trials_per_cell=3, space=AlphaSpace((0.0, 1.0), (4.0,), "grid"),
                            optuna_storage=url, settings=SETTINGS, cohort_size=3)
    config = searcher.suggest("tune-a")
    assert len(config["members"]) == 3
    searcher.on_trial_result("tune-a", _report(1, [0.5, 0.6, 0.7]))
    searcher.on_trial_result("tune-a", _report(1, [0.9, 0.9, 0.9]))  # a resumed trial reports epoch 1 again
    searcher.on_trial_result("tune-a", _report(2, [0.55, None, 0.75]))  # member 1 stopped by halving
    searcher.on_trial_result("tune-a", _report("two", [0.1, 0.1, 0.1]))  # nonsense is logged, not raised
    searcher.on_trial_result("unknown", _report(1, [0.1]))  # not a trial of this searcher
    assert "no intermediate value" in caplog.text
    # the last report goes to on_trial_complete: each member's final value at its own last epoch
    searcher.on_trial_complete("tune-a", _report(3, [0.58, 0.6, 0.8], done=True, member_epochs=[3, 1, 3],
                                                 member_status="completed|stopped|completed"))
    searcher.on_trial_result("tune-a", _report(4, [0.1, 0.1, 0.1]))  # too late: nothing changes, nothing raised

    study = optuna.load_study(study_name=f"exp/{CELL.name}", storage=open_optuna_storage(url))
    first, stopped, last = study.trials
    assert first.intermediate_values == {1: 0.5, 2: 0.55, 3: 0.58} and first.value == 0.58
    assert stopped.intermediate_values == {1: 0.6} and stopped.state == optuna.trial.TrialState.PRUNED
    assert last.intermediate_values == {1: 0.7, 2: 0.75, 3: 0.8} and last.value == 0.8
    for trial, member in zip(study.trials, config["members"]):
        assert trial.user_attrs["cell"] == CELL.name and trial.user_attrs["cohort"] == "tune-a"
        assert trial.user_attrs["cohort_seed"] == config["cohort_seed"] and trial.user_attrs["tau"] == member["tau"] == 4.0
