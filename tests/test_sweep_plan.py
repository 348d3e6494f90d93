"""The sweep's plan, command-line validation and searcher, without starting Ray."""

import re

import numpy as np
import optuna
import pytest

from search_spaces.alpha_space import DESIGNS, AlphaSpace, list_designs
from contract import FULL, Cell, CohortSettings
from sweep.optuna_storage import open_optuna_storage
from sweep.plan import SweepConfig, make_plan
from sweep.run import main
from sweep.searcher import CellSearcher


def config(**changes):
    return SweepConfig(**{"dataset": "digits", "name": "t", "storage": "runs", "profile": "smoke", **changes})


def test_cells_cover_methods_fractions_teachers_and_replicates():
    plan = make_plan(config(methods=["random", "el2n"], fractions=[0.2, 0.5, 1.0], teachers=["small_cnn", "resnet20"], replicates=[0, 1]))
    # (2 methods x 2 fractions + 1 full-data cell) x 2 teachers x 2 replicates
    assert len(plan.cells) == 20
    assert {c.method for c in plan.cells if c.fraction == 1.0} == {FULL}
    assert plan.scored_methods == ["el2n", "random"]
    assert plan.trials_per_cell == 3 and plan.num_trials == 60  # the smoke profile's 3 trials per cell
    assert len({c.name for c in plan.cells}) == 20


def test_recipe_flags_override_the_profile_recipe_and_nothing_else():
    base = make_plan(config()).recipe
    plan = make_plan(config(epochs=7, min_steps=90, batch_size=32, lr=0.02))
    assert (plan.recipe.epochs, plan.recipe.min_steps, plan.recipe.batch_size, plan.recipe.lr) == (7, 90, 32, 0.02)
    assert plan.recipe.replace(epochs=base.epochs, min_steps=base.min_steps, batch_size=base.batch_size, lr=base.lr) == base


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"dataset": "cifar11"}, "unknown dataset"),
        ({"methods": ["el2n", "grnd"]}, "unknown method 'grnd'"),
        ({"fractions": [0.0, 0.5]}, r"\(0, 1\]"),
        ({"fractions": [1.5]}, r"\(0, 1\]"),
        ({"alpha_range": (0.5, 0.2)}, "alpha-range"),
        ({"alpha_range": (0.0, 1.2)}, "alpha-range"),
        ({"tau": [0.0]}, "--tau"),
        ({"tau": [8.0, 2.0]}, "--tau"),
        ({"students": ["resnet19"]}, "unknown model"),
        ({"trials_per_cell": 0}, "trials-per-cell"),
        ({"scheduler": "pbt"}, "scheduler"),
        ({"gpus_per_trial": -1.0}, "gpus-per-cohort"),
        ({"storage": "s3://bucket/runs"}, "optuna-storage"),
        ({"replicates": [1, 1]}, "--replicates"),
        ({"replicates": [-5]}, "--replicates"),
        ({"max_failures": -3}, "--max-failures"),
        ({"val_size": 0.0}, "--val-size"),
        ({"name": ".."}, "--name"),
        ({"alpha_design": "sobol-magic"}, "alpha design"),
    ],
)
def test_bad_settings_are_refused_with_a_clear_message(changes, message):
    with pytest.raises(ValueError, match=message):
        config(**changes).check()


def test_all_problems_are_listed_at_once():
    with pytest.raises(ValueError) as error:
        config(methods=["x"], fractions=[2.0], tau=[-1.0]).check()
    assert str(error.value).count("\n  - ") == 3


def test_command_line_errors_exit_before_ray(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["--dataset", "digits", "--methods", "random", "grnd", "--fractions", "0.2", "1.5", "--storage", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown method 'grnd'" in err and "(0, 1]" in err
    with pytest.raises(SystemExit):
        main(["--resume", "--storage", str(tmp_path)])
    assert "--resume needs the --name" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--resume", "--name", "nothing-here", "--storage", str(tmp_path)])
    assert "nothing to resume" in capsys.readouterr().err
    # the planner's flags, refused before any simulation or training
    base = ["--dataset", "digits", "--profile", "smoke", "--storage", str(tmp_path), "--dry-run"]
    for flags, message in ((["--target-power", "1.5"], "--target-power must be between 0 and 1"),
                           (["--target-power", "0.8", "--trials-per-cell", "8"], "not with --trials-per-cell"),
                           (["--plan-sweeps", "-1"], "--plan-sweeps must be >= 0"),
                           (["--noise-from", str(tmp_path / "no-such-experiment")], "--noise-from")):
        with pytest.raises(SystemExit):
            main([*base, *flags])
        assert message in capsys.readouterr().err, flags


def test_dry_run_prints_the_plan(capsys, tmp_path):
    code = main(["--dataset", "digits", "--profile", "smoke", "--methods", "random", "el2n", "--fractions", "0.2", "1.0",
                 "--trials-per-cell", "4", "--storage", str(tmp_path), "--name", "plan", "--dry-run", "--plan-sweeps", "10"])
    out = capsys.readouterr().out
    assert code == 0
    assert "cells: 3 x 4 trials = 12 trials" in out
    # the planner: compute, no time without a measured pace, the power of each question of the report
    assert re.search(r"compute: 12 students, [\d,]+ optimisation steps", out) and "time: not estimated" in out
    assert ("power when the paper's inverse relation, alpha* = 0.25 + 0.06 / f (the simulator's truth 'inverse'; "
            "10 simulated sweeps of this design; noise: the simulator's default") in out
    for question in ("KD gain at f = 0.2", "KD gain at f = 1", "random ahead of el2n at f = 0.2"):
        assert re.search(rf"\d+% ± \d+  {re.escape(question)}\n", out), out
    assert "digits|el2n|f=0.2|small_cnn->small_cnn|replicate=0" in out and "digits|full|f=1.0|" in out
    assert "teacher small_cnn|replicate=0: compute" in out
    assert "score el2n|replicate=0: compute" in out and "score random|replicate=0: compute" in out
    assert "1.0 CPU" in out
    assert not (tmp_path / "plan").exists()  # a dry run writes nothing


def test_a_sequential_sweep_is_planned_look_by_look_and_bad_sequential_flags_are_refused(capsys, tmp_path):
    base = ["--dataset", "digits", "--profile", "smoke", "--methods", "random", "el2n", "--storage", str(tmp_path),
            "--name", "seq", "--dry-run"]
    code = main([*base, "--fractions", "0.2", "0.5", "1.0", "--trials-per-cell", "4", "--cohort-size", "2",
                 "--max-trials", "16", "--until-answered", "--plan-sweeps", "10"])
    out = capsys.readouterr().out
    assert code == 0
    assert ("sequential (--until-answered direction): looks at 4, 8, 16 students per cell, each round bringing the "
            "cells of the questions still open to the next size, at most 16 per cell (3 looks and 80 students at most)") in out
    assert re.search(r"compute: 20 students, [\d,]+ optimisation steps .* at the first look; at most 80 students", out)
    assert "simulated sweeps of this sequential design, its looks' decisions" in out
    assert re.search(r"\d+% ± \d+  alpha\*\(f\) falls with f: pooled over the methods", out)
    # beside a direction: what the report's test could reach knowing the truth, under what any 5 % test could
    reach = re.search(r"falls with f: pooled over the methods(?: \(decided at \d+ students on average\))? "
                      r"\(with the truth known: the report's test (\d+)%, any 5 % test (\d+)%\)", out)
    assert reach and int(reach.group(1)) <= int(reach.group(2)), out
    trained = re.search(r"students trained: (\d+) on average, of at most 80", out)
    assert trained and 20 < int(trained.group(1)) <= 80, out  # 4 students per cell answer nothing: it goes on
    assert not (tmp_path / "seq").exists()
    for flags, message in (
            (["--fractions", "0.2", "1.0", "--until-answered"], "the alpha-f direction needs at least 3 distinct fractions"),
            (["--fractions", "0.2", "0.5", "1.0", "--methods", "el2n", "--until-answered", "random-vs-scored"],
             "random against scored needs random"),
            (["--fractions", "0.2", "0.5", "1.0", "--budget-hours", "2"], "--budget-hours bounds a sequential sweep"),
            (["--fractions", "0.2", "0.5", "1.0", "--until-answered", "--trials-per-cell", "8", "--max-trials", "4"],
             "--max-trials 4 is below --trials-per-cell 8"),
            (["--fractions", "0.2", "0.5", "1.0", "--until-answered", "--target-power", "0.8"], "not with --until-answered")):
        with pytest.raises(SystemExit):
            main([*base, *flags])
        assert message in capsys.readouterr().err, flags


def test_label_noise_levels_are_cells_with_their_own_artifacts(capsys, tmp_path):
    plan = make_plan(config(methods=["random"], fractions=[0.5, 1.0], label_noise=[0.0, 0.4]))
    assert [(c.method, c.label_noise) for c in plan.cells] == [("random", 0.0), (FULL, 0.0), ("random", 0.4), (FULL, 0.4)]
    # an older sweep.json (no label_noise): clean labels
    old = {k: v for k, v in config().to_dict().items() if k != "label_noise"}
    assert SweepConfig.from_dict(old).label_noise == [0.0]
    assert SweepConfig.from_dict(config(label_noise=[0, 0.25]).to_dict()).label_noise == [0.0, 0.25]
    with pytest.raises(ValueError, match="--label-noise"):
        config(label_noise=[1.0]).check()
    with pytest.raises(ValueError, match="--label-noise"):
        config(label_noise=[]).check()
    code = main(["--dataset", "digits", "--profile", "smoke", "--methods", "random", "--fractions", "0.5",
                 "--label-noise", "0", "0.4", "--storage", str(tmp_path), "--name", "noise", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and "label noise: P = 0, P = 0.4" in out
    assert "digits|random|f=0.5|small_cnn->small_cnn|replicate=0\n" in out
    assert "digits|random|f=0.5|small_cnn->small_cnn|replicate=0|noise=0.4" in out
    teacher_keys = [line.split("(")[-1] for line in out.splitlines() if line.strip().startswith("teacher ")]
    score_keys = [line.split("(")[-1] for line in out.splitlines() if line.strip().startswith("score ")]
    assert "teacher small_cnn|replicate=0|noise=0.4: compute" in out and "score random|replicate=0|noise=0.4: compute" in out
    assert len(set(teacher_keys)) == 2 and len(set(score_keys)) == 2  # each noise level its own artifacts


CELLS = [Cell("digits", "random", 0.1 * (i + 1), "small_cnn", "small_cnn", 0) for i in range(3)]
SETTINGS = CohortSettings(
    recipe={"epochs": 1}, val_size=0.1, split_seed=0, selection="hard", class_balanced=False,
    teacher_keys={CELLS[0].teacher_ref: "teacher-key"}, score_keys={c.scores_ref: f"scores-{c.method}" for c in CELLS},
    cpus_per_trial=1.0, profile="smoke", version="test",
)


def _searcher(tmp_path, cells=3, trials=3, tau=(4.0,), design="tpe", cohort_size=1):
    return CellSearcher(
        experiment="exp", cells=CELLS[:cells], trials_per_cell=trials, space=AlphaSpace((0.0, 1.0), tuple(tau), design),
        optuna_storage=str(tmp_path / "optuna.journal"), settings=SETTINGS, cohort_size=cohort_size,
    )


def _one(config):
    """The single member of a cohort of one: its alpha, tau and Optuna trial."""
    (member,) = config["members"]
    return member


def _done(value, members=1):
    return {"val_acc": value, "done": True, "member_val_acc": [value] * members, "member_status": "|".join(["completed"] * members)}


def _study(tmp_path, index):
    return optuna.load_study(study_name=f"exp/{CELLS[index].name}", storage=open_optuna_storage(str(tmp_path / "optuna.journal")))


def test_searcher_interleaves_cells_and_starts_each_with_the_baseline(tmp_path):
    searcher = _searcher(tmp_path)
    configs = [searcher.suggest(f"trial{i}") for i in range(9)]
    assert [c["cell_index"] for c in configs] == [0, 1, 2] * 3  # round-robin, not cell after cell
    assert [_one(c)["alpha"] for c in configs[:3]] == [0.0, 0.0, 0.0]  # alpha = 0 first in every cell
    assert all(0 < _one(c)["alpha"] <= 1 for c in configs[3:])
    assert all(_one(c)["tau"] == 4.0 and c["recipe"] == {"epochs": 1} and c["teacher_key"] == "teacher-key" for c in configs)
    assert len({c["cohort_seed"] for c in configs}) == 9
    assert searcher.suggest("trial9") == CellSearcher.FINISHED
    for i, c in enumerate(configs):
        searcher.on_trial_complete(f"trial{i}", _done(0.5 + _one(c)["alpha"] / 10))
    for cell in range(3):
        study = _study(tmp_path, cell)
        assert study.user_attrs["tau"] == 4.0 and study.user_attrs["cell"] == CELLS[cell].to_dict()
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
        assert study.trials[0].params["alpha"] == 0.0 and study.trials[0].user_attrs["baseline"]


def test_searcher_is_seeded(tmp_path):
    first, second = _searcher(tmp_path / "a"), _searcher(tmp_path / "b")
    alphas = []
    for searcher in (first, second):
        got = []
        for i in range(6):
            config = searcher.suggest(f"t{i}")
            searcher.on_trial_complete(f"t{i}", _done(0.5))
            got.append(_one(config)["alpha"])
        alphas.append(got)
    assert alphas[0] == alphas[1]  # same study names, same sampler seeds, same suggestions
    assert alphas[0][0] == 0.0 and len(set(alphas[0])) > 2


def _design_run(folder, design, first=4, then=12):
    """The alphas one cell's study gets from ``design``: ``first`` trials, then Tune's resume of the
    searcher (a pickle of it, as Tune saves and restores it) given a budget of ``then`` trials."""
    import pickle

    searcher, alphas = _searcher(folder, cells=1, trials=first, design=design), []
    for i in range(then):
        if i == first:
            searcher = pickle.loads(pickle.dumps(searcher))
            searcher.budgets = [then]  # more students for the cell, as a sequential sweep's look gives
        alpha = _one(searcher.suggest(f"t{i}"))["alpha"]
        # a peak inside the range, and a point of trial-to-trial noise as real students have
        searcher.on_trial_complete(f"t{i}", _done(0.9 - (alpha - 0.6) ** 2 + 0.01 * np.random.default_rng(i).normal()))
        alphas.append(alpha)
    return alphas


@pytest.mark.parametrize("design", list_designs())
def test_every_design_starts_spread_from_the_baseline_is_seeded_and_goes_on_after_a_resume(tmp_path, design):
    alphas = _design_run(tmp_path / "a", design)
    assert _design_run(tmp_path / "b", design) == alphas  # the same cells give the same alphas
    initial = [point["alpha"] for point in AlphaSpace(design=design).initial_points(4)]
    assert alphas[0] == 0.0 and alphas[:len(initial)] == initial  # the baseline, then the enqueued points
    if len(initial) > 1:
        assert max(b - a for a, b in zip(sorted(initial), sorted(initial)[1:])) <= 1 / (len(initial) - 1) + 1e-9
    assert len(set(alphas)) == len(alphas)  # the resumed sampler does not replay what it proposed
    if DESIGNS.get(design).continues_sequence:
        # the eight trials after the resume go on along one scrambled Sobol sequence: one in each eighth of
        # the range (eight independent uniform points, what a sampler rebuilt per ask gives, do so 0.2 % of the time)
        assert sorted(int(alpha * 8) for alpha in alphas[4:]) == list(range(8)), alphas


def test_searcher_records_failures_and_early_stops(tmp_path):
    searcher = _searcher(tmp_path, cells=1, trials=3, tau=(1.0, 10.0))
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    assert 1.0 <= _one(configs[1])["tau"] <= 10.0
    searcher.on_trial_complete("t0", _done(0.9))
    searcher.on_trial_complete("t1", {"val_acc": 0.4, "done": False, "member_val_acc": [0.4], "member_status": "training"})  # stopped by ASHA
    searcher.on_trial_complete("t2", None, error=True)
    study = _study(tmp_path, 0)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL]


def test_searcher_state_survives_a_restart_and_reuses_lost_trials(tmp_path):
    import pickle

    searcher = _searcher(tmp_path, cells=1, trials=4)
    for i in range(3):
        searcher.suggest(f"t{i}")
    searcher.on_trial_complete("t0", _done(0.7))
    searcher.save(tmp_path / "state.pkl")
    # a trial asked after the last save is lost with the driver
    lost = searcher.suggest("t3")

    revived = pickle.loads(pickle.dumps(searcher))  # as Tune pickles the tuner
    revived.restore(tmp_path / "state.pkl")
    assert revived.live == {"t1": (0, [1]), "t2": (0, [2])}
    again = revived.suggest("t3-new")
    assert _one(again) == _one(lost)  # the lost Optuna trial again, not a new one
    for trial_id in ("t1", "t2", "t3-new"):
        revived.on_trial_complete(trial_id, _done(0.6))
    assert revived.suggest("t5") == CellSearcher.FINISHED
    study = _study(tmp_path, 0)
    assert len(study.trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_an_ask_cut_short_by_a_killed_driver_is_finished_on_resume(tmp_path):
    """A driver killed inside Optuna's ask leaves a running trial without its alpha (Optuna creates or
    takes the trial, then records each parameter; seen in CI after a kill -9). The resumed searcher
    finishes that ask (the enqueued point, or the sampler's draw) and hands the trial out."""
    import pickle

    searcher = _searcher(tmp_path, cells=1, trials=5, design="grid")
    first = searcher.suggest("t0")
    searcher.save(tmp_path / "state.pkl")
    study = _study(tmp_path, 0)
    storage, T = study._storage, optuna.trial.TrialState
    waiting = [t for t in study.get_trials(deepcopy=False) if t.state == T.WAITING]
    enqueued = waiting[0].system_attrs["fixed_params"]["alpha"]
    storage.set_trial_state_values(waiting[0]._trial_id, T.RUNNING)  # taken from the queue, then killed
    bare = storage.create_new_trial(study._study_id)  # created for the sampler, then killed
    assert storage.get_trial(bare).params == {}

    revived = pickle.loads(pickle.dumps(searcher))  # as Tune pickles the tuner
    revived.restore(tmp_path / "state.pkl")
    handed = [_one(revived.suggest(f"r{i}")) for i in range(4)]
    numbers = [member["optuna_trial"] for member in handed]
    assert numbers[:2] == [waiting[0].number, storage.get_trial(bare).number]  # the cut asks first
    assert handed[0]["alpha"] == enqueued and 0.0 <= handed[1]["alpha"] <= 1.0
    for i in range(4):
        revived.on_trial_complete(f"r{i}", _done(0.5))
    searcher_alphas = [_one(first)["alpha"]] + [member["alpha"] for member in handed]
    assert len(set(searcher_alphas)) == 5  # five students, five alphas
    study = _study(tmp_path, 0)
    assert [study.trials[number].state for number in numbers] == [T.COMPLETE] * 4


def test_a_restarted_searcher_does_not_repeat_the_alphas_it_asked_before(tmp_path):
    """A resumed sweep builds its sampler afresh: the alphas it proposes next must be new ones."""
    searcher = _searcher(tmp_path, cells=1, trials=8)
    asked = []
    for i in range(4):
        asked.append(_one(searcher.suggest(f"t{i}"))["alpha"])
        searcher.on_trial_complete(f"t{i}", _done(0.5 + asked[-1] / 10))
    searcher.save(tmp_path / "state.pkl")
    revived = _searcher(tmp_path, cells=1, trials=8)  # a new driver, the same storage
    revived.restore(tmp_path / "state.pkl")
    for i in range(4, 8):
        asked.append(_one(revived.suggest(f"t{i}"))["alpha"])
        revived.on_trial_complete(f"t{i}", _done(0.5))
    assert len(set(asked)) == 8, asked


def test_per_cell_asha_stops_weak_trials_only_against_their_own_cell_and_never_the_baseline():
    """Real Ray Trial objects and Ray's ASHA inside each cell, fed one epoch at a time."""
    from ray.tune.experiment import Trial

    from sweep.searcher import PerCellASHA

    scheduler = PerCellASHA(max_t=9, grace_period=1, reduction_factor=3)

    def trial(cell_index, alpha, number):
        made = Trial("cohort_trial", config={"cell_index": cell_index, "members": [{"alpha": alpha}]}, stub=True)
        made.trial_id = f"c{cell_index}t{number}"
        scheduler.on_trial_add(None, made)
        return made

    def first_rung(made, value):
        return scheduler.on_trial_result(None, made, {"training_iteration": 1, "val_acc": value})

    # Cell 0 (f = 1.0): accuracies near 0.9. Cell 1 (f = 0.1): every accuracy is far below cell 0's.
    assert first_rung(trial(0, 0.5, 1), 0.85) == PerCellASHA.CONTINUE
    assert first_rung(trial(0, 0.3, 2), 0.90) == PerCellASHA.CONTINUE
    assert first_rung(trial(0, 0.9, 3), 0.40) == PerCellASHA.STOP  # weak within its own cell
    # The best trials of cell 1 are not measured against cell 0's accuracies.
    assert first_rung(trial(1, 0.5, 1), 0.30) == PerCellASHA.CONTINUE
    assert first_rung(trial(1, 0.7, 2), 0.31) == PerCellASHA.CONTINUE
    # The alpha = 0 baseline runs to the end, however weak.
    baseline = trial(0, 0.0, 4)
    assert first_rung(baseline, 0.01) == PerCellASHA.CONTINUE
    assert set(scheduler.by_cell) == {0, 1}


def test_per_cell_asha_is_what_a_pooled_asha_is_not():
    """The control for the test above: one ASHA over both cells stops cell 1's best trial."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import AsyncHyperBandScheduler

    pooled = AsyncHyperBandScheduler(metric="val_acc", mode="max", max_t=9, grace_period=1, reduction_factor=3)
    decisions = []
    for number, value in enumerate([0.85, 0.90, 0.30]):
        made = Trial("cohort_trial", config={}, stub=True)
        made.trial_id = f"t{number}"
        pooled.on_trial_add(None, made)
        decisions.append(pooled.on_trial_result(None, made, {"training_iteration": 1, "val_acc": value}))
    assert decisions[-1] == AsyncHyperBandScheduler.STOP


def test_an_unreachable_cluster_address_is_refused_at_once(no_ray_in_process, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["--dataset", "digits", "--profile", "smoke", "--methods", "random", "--fractions", "0.5",
              "--storage", str(tmp_path), "--name", "x", "--address", "127.0.0.1:1"])
    assert exit_.value.code == 2
    assert "cannot reach the Ray cluster at '127.0.0.1:1'" in capsys.readouterr().err


def test_a_cohort_is_a_batch_of_optuna_trials_each_told_its_own_result(tmp_path):
    searcher = _searcher(tmp_path, cells=2, trials=5, design="grid", cohort_size=3)
    first, second, third = (searcher.suggest(f"c{i}") for i in range(3))
    assert [c["cell_index"] for c in (first, second, third)] == [0, 1, 0]
    assert [m["optuna_trial"] for m in first["members"]] == [0, 1, 2]
    assert first["members"][0]["alpha"] == 0.0 and len({m["alpha"] for m in first["members"]}) == 3
    assert [m["optuna_trial"] for m in third["members"]] == [3, 4]  # the rest of cell 0's budget
    assert first["cohort_seed"] != third["cohort_seed"]
    # a member stopped by halving is pruned in Optuna, the others told their accuracy
    searcher.on_trial_complete("c0", {"val_acc": 0.9, "done": True, "member_val_acc": [0.8, 0.9, 0.5],
                                      "member_status": "completed|completed|stopped"})
    searcher.on_trial_complete("c2", None, error=True)
    study = _study(tmp_path, 0)
    states = [t.state for t in study.trials]
    T = optuna.trial.TrialState
    assert states == [T.COMPLETE, T.COMPLETE, T.PRUNED, T.FAIL, T.FAIL]
    assert [t.value for t in study.trials[:2]] == [0.8, 0.9]
    assert searcher.suggest("c3")["cell_index"] == 1 and searcher.suggest("c4") == CellSearcher.FINISHED


def test_the_resource_flags_are_named_per_cohort_and_keep_their_old_names():
    from sweep.cli import build_parser

    parser = build_parser()
    new = parser.parse_args(["--gpus-per-cohort", "0.5", "--cpus-per-cohort", "2"])
    old = parser.parse_args(["--gpus-per-trial", "0.5", "--cpus-per-trial", "2"])
    assert (new.gpus_per_trial, new.cpus_per_trial) == (old.gpus_per_trial, old.cpus_per_trial) == (0.5, 2.0)
