"""Analysis: the tidy table, per-cell optima, the alpha-f fit and its acceptance on known relations."""

import json

import fsspec
import numpy as np
import pandas as pd
import pytest

from analysis.alpha_f import FAMILIES, AlphaFFit, fit_alpha_f, list_families, monotonicity
from analysis.optimum import cell_optima
from analysis.predict import main as predict_main
from analysis.report import analyse, build_report
from analysis.report import main as report_main
from analysis.results import ResultsError, load_experiment, tidy
from sweep.results import COLUMNS

FRACTIONS = (0.12, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0)


def synthetic(law, *, seed=0, trials=12, noise=0.004, fractions=FRACTIONS, methods=("random",)):
    """A results table in the sweep's format whose val accuracy is a noisy parabola peaking at law(f)."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in methods:
        for fraction in fractions:
            if fraction == 1.0 and method != methods[0]:
                continue  # one shared f = 1.0 reference cell, as the sweep plans it
            optimum = law(fraction)
            for i in range(trials):
                alpha = 0.0 if i == 0 else float(rng.uniform())
                val = 0.6 + 0.3 * fraction - 0.1 * (alpha - optimum) ** 2 + rng.normal(0, noise)
                rows.append({
                    "dataset": "digits", "method": "full" if fraction == 1.0 else method, "fraction": fraction,
                    "teacher_arch": "small_cnn", "student_arch": "small_cnn", "replicate": 0, "alpha": alpha,
                    "tau": 4.0, "seed": i, "val_acc": val, "test_acc": val + rng.normal(0, noise), "status": "completed",
                    "optuna_trial": i, "teacher_key": "t", "teacher_val_acc": 0.99, "teacher_test_acc": 0.98,
                    "score_key": "s", "version": "test", "trial_id": f"{method}-{fraction}-{i}",
                })
    return pd.DataFrame(rows).reindex(columns=COLUMNS + ["trial_id"])


def write_experiment(folder, frame, **sweep):
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "results.csv", index=False)
    (folder / "sweep.json").write_text(json.dumps({"name": folder.name, "alpha_range": [0.0, 1.0], **sweep}))
    return folder


# ---- acceptance: a known inverse relation is recovered, no relation is not invented --------------

def test_inverse_relation_is_recovered_with_its_parameters_inside_their_intervals():
    a, b = 0.2, 0.08
    optima = cell_optima(tidy(synthetic(lambda f: a + b / f)), n_boot=1000, seed=0)
    (fit,) = fit_alpha_f(optima)
    assert fit.group == "random" and len(fit.f) == len(FRACTIONS)  # the f = 1.0 cell joins the method's fit
    assert fit.chosen == "inverse" and fit.selected_by == "AICc"
    inverse = fit.best
    assert inverse.intervals["a"][0] <= a <= inverse.intervals["a"][1]
    assert inverse.intervals["b"][0] <= b <= inverse.intervals["b"][1]
    assert abs(inverse.params["a"] - a) < 0.05 and abs(inverse.params["b"] - b) < 0.02
    assert fit.relation == "inverse" and fit.spearman_rho == pytest.approx(-1.0)
    assert fit.spearman_p == pytest.approx(2 / 5040)  # exact permutation test over 7! orderings
    assert inverse.r2 > 0.9 and inverse.aicc < min(f.aicc for n, f in fit.families.items() if n != "inverse")

    guess = fit.predict(0.25)
    assert guess["lo"] <= a + b / 0.25 <= guess["hi"] and guess["lo"] < guess["alpha"] < guess["hi"]
    assert not guess["extrapolated"] and fit.predict(0.05)["extrapolated"]
    assert fit.predict(0.01)["alpha"] == 1.0  # clipped to the searched alpha range


def test_no_relation_is_not_called_inverse():
    optima = cell_optima(tidy(synthetic(lambda f: 0.5, seed=1)), n_boot=1000, seed=0)
    (fit,) = fit_alpha_f(optima)
    assert fit.relation == "none" and fit.spearman_p > 0.05
    assert fit.chosen == "constant"
    assert fit.best.intervals["a"][0] <= 0.5 <= fit.best.intervals["a"][1]


def test_every_method_and_the_pooled_fit_share_the_reference_cell():
    frame = synthetic(lambda f: 0.2 + 0.08 / f, methods=("random", "el2n"), trials=8)
    fits = {fit.group: fit for fit in fit_alpha_f(cell_optima(tidy(frame), n_boot=200))}
    assert set(fits) == {"random", "el2n", "pooled"}
    assert len(fits["random"].cells) == len(fits["el2n"].cells) == 7
    assert len(fits["pooled"].cells) == 13 and fits["pooled"].relation == "inverse"
    assert sum("|full|" in c for c in fits["pooled"].cells) == 1


@pytest.mark.parametrize("name", list_families())
def test_every_family_recovers_its_own_parameters(name):
    truth = {"inverse": [0.2, 0.08], "power": [0.7, 0.6], "log": [0.3, -0.2], "linear": [0.9, -0.5], "constant": [0.4]}[name]
    family = FAMILIES.get(name)
    f = np.array([0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0])
    y = family.predict(np.array([truth]), f)
    noisy = y + np.random.default_rng(0).normal(0, 1e-4, size=(3, len(f)))
    fitted = family.fit(f, np.vstack([y, noisy]), np.ones(len(f)))
    assert fitted.shape == (4, family.n_params)
    np.testing.assert_allclose(fitted[0], truth, atol=1e-3)
    np.testing.assert_allclose(fitted[1:], np.tile(truth, (3, 1)), atol=0.02)
    assert family.formula(dict(zip(family.params, truth)))


def test_monotonicity_exact_p_values():
    f = np.array([0.1, 0.2, 0.3, 0.5, 0.9])
    rho, p = monotonicity(f, 1 - f)
    assert rho == pytest.approx(-1.0) and p == pytest.approx(2 / 120)
    rho, p = monotonicity(f, f**2)
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 120)
    assert monotonicity(f, np.full(5, 0.3)) == (pytest.approx(np.nan, nan_ok=True), 1.0)


def test_weights_follow_the_uncertainty_of_each_optimum():
    frame = tidy(synthetic(lambda f: 0.2 + 0.08 / f))
    optima = cell_optima(frame, n_boot=300)
    noisy_cell = optima.table["fraction"] == 0.3
    optima.table.loc[noisy_cell, "alpha_opt"] = 0.95  # an outlier ...
    optima.table.loc[noisy_cell, "alpha_se"] = 5.0  # ... that its own interval says not to trust
    (weighted,) = fit_alpha_f(optima)
    optima.table.loc[noisy_cell, "alpha_se"] = optima.table["alpha_se"].median()
    (trusted,) = fit_alpha_f(optima)
    truth = 0.2 + 0.08 / 0.3
    assert abs(weighted.predict(0.3)["alpha"] - truth) < abs(trusted.predict(0.3)["alpha"] - truth)


# ---- the optimum of one cell -----------------------------------------------------------------

def cell_frame(alphas, vals, status=None, tests=None):
    n = len(alphas)
    return tidy(pd.DataFrame({
        "dataset": "digits", "method": "random", "fraction": 0.3, "teacher_arch": "a", "student_arch": "b",
        "replicate": 0, "alpha": alphas, "val_acc": vals, "test_acc": tests if tests is not None else vals,
        "status": status or ["completed"] * n, "trial_id": [f"t{i}" for i in range(n)],
    }))


def test_optimum_is_the_maximiser_of_the_quadratic_and_reports_gain_and_baseline():
    alphas = np.array([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    vals = 0.8 - 0.2 * (alphas - 0.42) ** 2
    row = cell_optima(cell_frame(alphas, vals, tests=vals - 0.01), n_boot=50).table.iloc[0]
    assert row["estimator"] == "quadratic" and row["alpha_opt"] == pytest.approx(0.42, abs=0.003)
    assert row["alpha_lo"] == pytest.approx(0.42, abs=0.003) and row["alpha_hi"] == pytest.approx(0.42, abs=0.003)
    assert row["baseline_val_acc"] == pytest.approx(vals[0])
    assert row["kd_gain_val"] == pytest.approx(0.2 * 0.42**2, abs=1e-4)
    assert row["test_at_opt"] == pytest.approx(0.79, abs=1e-4) and row["kd_gain_test"] == pytest.approx(0.2 * 0.42**2, abs=1e-4)
    assert row["best_alpha"] == 0.5 and row["note"] == "ok" and not row["at_edge"]


def test_bootstrap_interval_widens_with_noise():
    rng = np.random.default_rng(0)
    alphas = np.r_[0.0, rng.uniform(size=15)]
    clean = 0.8 - 0.2 * (alphas - 0.5) ** 2
    tight = cell_optima(cell_frame(alphas, clean + rng.normal(0, 0.001, 16)), n_boot=400).table.iloc[0]
    loose = cell_optima(cell_frame(alphas, clean + rng.normal(0, 0.01, 16)), n_boot=400).table.iloc[0]
    assert tight["alpha_lo"] <= 0.5 <= tight["alpha_hi"]
    assert loose["alpha_hi"] - loose["alpha_lo"] > 2 * (tight["alpha_hi"] - tight["alpha_lo"])


def test_stopped_and_errored_trials_are_kept_but_never_the_optimum():
    frame = cell_frame([0.0, 0.2, 0.6, 0.9, 0.95], [0.70, 0.75, 0.72, 0.99, 0.98],
                       status=["completed", "completed", "completed", "stopped", "error"])
    row = cell_optima(frame, n_boot=50).table.iloc[0]
    assert row["n_trials"] == 5 and row["n_completed"] == 3 and row["n_stopped"] == 1 and row["n_error"] == 1
    assert row["best_alpha"] == 0.2 and row["alpha_opt"] < 0.6
    assert "1 stopped, 1 errored" in row["note"]


def test_few_alphas_fall_back_to_the_best_trial_and_edges_are_flagged():
    few = cell_optima(cell_frame([0.0, 0.7], [0.6, 0.65]), n_boot=50).table.iloc[0]
    assert few["estimator"] == "best observed" and few["alpha_opt"] == 0.7
    rising = cell_optima(cell_frame([0.0, 0.3, 0.6, 1.0], [0.6, 0.62, 0.67, 0.8]), n_boot=50).table.iloc[0]
    assert rising["alpha_opt"] == 1.0 and rising["at_edge"] and "edge" in rising["note"]
    none = cell_optima(cell_frame([0.0, 0.5], [np.nan, np.nan], status=["error", "error"]), n_boot=50).table.iloc[0]
    assert np.isnan(none["alpha_opt"]) and none["note"] == "no completed trials"


def test_results_do_not_depend_on_the_other_cells():
    both = tidy(synthetic(lambda f: 0.3, methods=("random", "el2n"), trials=6))
    alone = both[both["method"] == "el2n"]
    a = cell_optima(both, n_boot=100).table.set_index("cell")
    b = cell_optima(alone, n_boot=100).table.set_index("cell")
    pd.testing.assert_series_equal(a.loc[b.index, "alpha_lo"], b["alpha_lo"])


# ---- loading ----------------------------------------------------------------------------------

def test_load_from_a_directory_a_csv_path_and_an_fsspec_uri(tmp_path):
    frame = synthetic(lambda f: 0.4, trials=4)
    folder = write_experiment(tmp_path / "exp", frame, alpha_range=[0.0, 0.8])
    local = load_experiment(str(folder))
    assert len(local.trials) == len(frame) and local.alpha_range == (0.0, 0.8) and local.name == "exp"
    assert {"cell", "is_baseline"} <= set(local.trials.columns)
    assert local.trials["is_baseline"].sum() == len(FRACTIONS)
    assert len(load_experiment(str(folder / "results.csv")).trials) == len(frame)

    with fsspec.open("memory://bucket/runs/exp/results.csv", "w") as handle:
        frame.to_csv(handle, index=False)
    remote = load_experiment("memory://bucket/runs/exp")
    pd.testing.assert_frame_equal(remote.trials, local.trials)
    assert remote.sweep == {}


def test_bad_results_get_clear_errors(tmp_path):
    with pytest.raises(ResultsError, match="no results table .* --resume"):
        load_experiment(str(tmp_path / "missing"))
    frame = synthetic(lambda f: 0.4, trials=3)
    with pytest.raises(ResultsError, match="lacks the columns val_acc"):
        tidy(frame.drop(columns=["val_acc"]))
    with pytest.raises(ResultsError, match=r"fraction must be a number in \(0, 1\]"):
        tidy(frame.assign(fraction=1.5))
    with pytest.raises(ResultsError, match="unknown trial status"):
        tidy(frame.assign(status="running"))
    with pytest.raises(ResultsError, match="no trials"):
        tidy(frame.iloc[:0])


# ---- report files and the commands --------------------------------------------------------------

def test_report_writes_html_and_sidecars_and_predict_reads_them(tmp_path, capsys):
    folder = write_experiment(tmp_path / "exp", synthetic(lambda f: 0.2 + 0.08 / f, methods=("random", "el2n"), trials=8))
    assert report_main([str(folder), "--out", str(tmp_path / "out" / "study.html"), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'out' / 'study.html'}" in out
    page = (tmp_path / "out" / "study.html").read_text()
    assert page.count('class="plotly-graph-div"') == 4 and "Plotly.newPlot" in page
    assert "<script src=" not in page  # plotly.js is embedded: the file works offline
    assert "α = 0.2" in page and "inverse" in page and "Provenance" in page

    trials = pd.read_parquet(tmp_path / "out" / "study.trials.parquet")
    pd.testing.assert_frame_equal(trials, pd.read_csv(tmp_path / "out" / "study.trials.csv"), check_dtype=False)
    cells = pd.read_csv(tmp_path / "out" / "study.cells.csv")
    assert len(cells) == 13 and cells["alpha_opt"].notna().all()
    document = json.loads((tmp_path / "out" / "study.fit.json").read_text())
    assert {fit["group"] for fit in document["fits"]} == {"random", "el2n", "pooled"}

    # the JSON round trip predicts what the in-memory fit predicts
    fits = {fit.group: fit for fit in analyse(str(folder), n_boot=200).fits}
    loaded = {fit["group"]: AlphaFFit.from_dict(fit) for fit in document["fits"]}
    for group, fit in fits.items():
        mine, theirs = fit.predict(0.25), loaded[group].predict(0.25)
        assert theirs["alpha"] == pytest.approx(mine["alpha"], abs=1e-4)
        assert theirs["lo"] == pytest.approx(mine["lo"], abs=1e-3) and theirs["hi"] == pytest.approx(mine["hi"], abs=1e-3)

    assert predict_main([str(tmp_path / "out" / "study.fit.json"), "--f", "0.25", "--method", "random", "--json"]) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    guess = json.loads(line)
    assert guess["group"] == "random" and guess["family"] == "inverse" and guess["lo"] <= 0.52 <= guess["hi"]


def test_default_report_location_is_the_experiment_directory(tmp_path):
    folder = write_experiment(tmp_path / "exp", synthetic(lambda f: 0.4, trials=4))
    paths = build_report(str(folder), n_boot=50)
    assert paths["html"] == f"{folder}/report.html" and (folder / "report.fit.json").exists()


def test_commands_reject_bad_input_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_main([str(tmp_path / "nothing")])
    assert exit_info.value.code == 2 and "no results table" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report_main([str(tmp_path), "--out", "report.pdf"])
    assert "--out must name an .html file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict_main([str(tmp_path), "--f", "1.5"])
    assert "every --f must be in (0, 1]" in capsys.readouterr().err
    folder = write_experiment(tmp_path / "exp", synthetic(lambda f: 0.4, trials=4))
    with pytest.raises(SystemExit):
        predict_main([str(folder), "--f", "0.3", "--method", "grand", "--bootstrap", "20"])
    assert "no fit for 'grand'" in capsys.readouterr().err


def test_report_of_a_messy_sweep_keeps_every_trial_visible(tmp_path):
    """Errored and stopped trials, a cell with nothing completed, two replicates and no sweep.json."""
    frame = pd.concat([synthetic(lambda f: 0.3, trials=5), synthetic(lambda f: 0.3, trials=5, seed=3).assign(replicate=1)])
    frame.loc[frame.index[2], ["status", "val_acc", "test_acc"]] = ["error", np.nan, np.nan]
    frame.loc[frame.index[3], "status"] = "stopped"
    dead = (frame["fraction"] == 0.5) & (frame["replicate"] == 1)
    frame.loc[dead, ["status", "val_acc", "test_acc"]] = ["error", np.nan, np.nan]
    folder = tmp_path / "exp"
    folder.mkdir()
    frame.to_csv(folder / "results.csv", index=False)

    result = analyse(str(folder), n_boot=100)
    assert len(result.cells) == 2 * len(FRACTIONS)
    assert result.cells.loc[result.cells["note"] == "no completed trials", "fraction"].tolist() == [0.5]
    assert len(result.fits[0].f) == 2 * len(FRACTIONS) - 1  # the dead cell has no optimum to fit

    paths = build_report(str(folder), n_boot=100)
    page = open(paths["html"]).read()
    assert "no completed trials" in page and "stopped or errored (not used)" in page
    trials = pd.read_csv(paths["trials_csv"])
    assert len(trials) == len(frame) and set(trials["status"]) == {"completed", "stopped", "error"}
