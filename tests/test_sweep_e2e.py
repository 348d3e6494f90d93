"""End-to-end sweeps on digits with real Ray (embedded, and a two-node cluster on this machine).

The in-process sweeps first, in one embedded Ray (conftest ``embedded_ray``), which the subprocess drivers
join (``embedded_ray_address``) when their subject is the driver, not Ray's start (the loopback test and
tests/test_durability.py's signal tests start their own, as a user's sweep does); the two-node cluster's
tests last."""

import ast
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest

from conftest import completed_trials, end_ray_in_process, journal_studies, wait_while_running
from sweep.run import main
from sweep.optuna_storage import open_optuna_storage

SMALL = ["--dataset", "digits", "--profile", "smoke", "--epochs", "3", "--methods", "random", "el2n",
         "--fractions", "0.2", "1.0", "--trials-per-cell", "2"]
from contract import RESULT_COLUMNS

def test_local_sweep_writes_results_and_a_second_sweep_reuses_artifacts(embedded_ray, tmp_path, capsys):
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    assert main([*SMALL, "--storage", str(tmp_path), "--name", "first"]) == 0
    # the process's own Ctrl-C and SIGTERM are back once the sweep is over (a notebook's, here pytest's)
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers
    out = capsys.readouterr().out
    assert "teachers: 1 (0 reused" in out and "scores: 2 tables (0 reused" in out
    assert f"report: {tmp_path / 'first' / 'report.html'}" in out  # every sweep ends with its report
    # A console a person can read: a progress line per stage, none of Ray's per-report lines, no
    # carriage returns; the same lines in the experiment's log.
    assert "Checkpoint successfully created" not in out and "\r" not in out and "Token authentication" not in out
    assert "[teachers 1/1, " in out and "small_cnn|replicate=0 done: test acc" in out
    assert "[scoring runs 3/3, " in out and "[6/6 trials, " in out
    assert re.search(r"\[2/6 trials, [0-4] in flight, [0-4] queued, \d+m\d\ds, ~\d+m\d\ds left\] ", out), out
    log = (tmp_path / "first" / "sweep.log").read_text()
    for line in ("teachers: 1 (0 reused", "[scoring runs 3/3, ", "[6/6 trials, ", "report: "):
        assert line in log

    results = pd.read_csv(tmp_path / "first" / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert len(results) == 6 and (results["status"] == "completed").all()
    cells = results.groupby(["method", "fraction"])
    assert set(cells.groups) == {("random", 0.2), ("el2n", 0.2), ("full", 1.0)}
    for _, cell in cells:
        assert len(cell) == 2 and (cell["alpha"] == 0).sum() == 1  # the no-KD baseline in every cell
    assert results["teacher_key"].nunique() == 1 and results["teacher_key"].notna().all()
    assert results.loc[results["method"] != "full", "score_key"].notna().all()
    assert (results["epochs_run"] == 3).all() and results["test_acc"].between(0, 1).all()
    # every cell's two students trained as one cohort: one seed, one subset, one stream of batches
    assert results.groupby(["method", "fraction"])["cohort_seed"].nunique().eq(1).all() and results["cohort_seed"].nunique() == 3
    assert results.groupby(["method", "fraction"])["cohort"].nunique().eq(1).all()
    assert (results["cohort_size"] == 2).all() and sorted(results["member"].unique()) == [0, 1]

    found = journal_studies(tmp_path / "first" / "optuna.journal")
    assert len(found) == 3
    for study in found.values():
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
        assert study.trials[0].params["alpha"] == 0.0

    # the same study again, under another name: teacher and scores come from the cache; planned from the
    # first (sweep.planner): the compute it states is what the first one ran, its time from the first's pace
    assert main([*SMALL, "--storage", str(tmp_path), "--name", "second", "--noise-from", str(tmp_path / "first")]) == 0
    out = capsys.readouterr().out
    cohort_steps = results.groupby(["method", "fraction"])["steps_run"].max().sum()
    assert f"compute: 6 students, {results['steps_run'].sum():,} optimisation steps ({cohort_steps:,} steps of cohorts of up to 2)" in out
    per_step = results.groupby(["method", "fraction"]).agg(busy=("busy_s", "first"), steps=("steps_run", "sum"))
    busy = results["steps_run"].sum() * float(np.median(per_step["busy"] / per_step["steps"]))
    assert re.search(rf"time: {busy:.0f} s of the students' busy time \(quartiles \d+ s-\d+ s\), about \d+ s of wall time on \d+ trial "
                     r"slots?, at the pace of \d+ ms per student step .* 3 cohorts of 2 small_cnn students", out), out
    assert "power: not estimated (--dry-run prints it" in out
    assert "teachers: 1 (1 reused" in out
    assert "scores: 2 tables (2 reused from the artifact cache, 0 scoring runs computed)" in out
    second = pd.read_csv(tmp_path / "second" / "results.csv")
    assert set(second["teacher_key"]) == set(results["teacher_key"])
    # the cached teacher, read by the driver rather than by a task: the same accuracies and size recorded
    for column in ("teacher_val_acc", "teacher_test_acc", "teacher_params"):
        assert set(second[column]) == set(results[column]) and len(set(results[column])) == 1, column
    assert set(second["score_key"].dropna()) == set(results["score_key"].dropna())

    # an existing experiment is never overwritten
    with pytest.raises(SystemExit):
        main([*SMALL, "--storage", str(tmp_path), "--name", "second"])
    assert "already exists" in capsys.readouterr().err

    # the sweeps ran in the Ray this process already ran, and left it running (a notebook's stays up);
    # another cluster's address is refused rather than silently ignored
    import ray

    from sweep import ray_adapter

    assert ray.is_initialized()
    with pytest.raises(ValueError, match="this process already runs Ray"):
        ray_adapter.connect("127.0.0.1:1")


def test_a_label_noise_sweep_gives_every_level_its_own_teacher_scores_and_journal_studies(embedded_ray, tmp_path):
    import json

    from trainables.artifacts import ArtifactStore

    assert main(["--dataset", "digits", "--profile", "smoke", "--epochs", "2", "--methods", "random", "--fractions", "0.5",
                 "--trials-per-cell", "2", "--label-noise", "0", "0.4", "--storage", str(tmp_path), "--name", "noise"]) == 0
    results = pd.read_csv(tmp_path / "noise" / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS) and (results["status"] == "completed").all()
    assert sorted(results["label_noise"]) == [0.0, 0.0, 0.4, 0.4]
    levels = results.groupby("label_noise")
    for column in ("teacher_key", "score_key"):  # one teacher and one score table per level, none shared
        assert levels[column].nunique().eq(1).all() and results[column].nunique() == 2
    # every level trains on the same (clean) validation split and here the same random subset: paired students
    assert results["subset_digest"].nunique() == 1 and results["num_train"].nunique() == 1
    # the noisy teacher was trained, recorded and stored with its accuracy (on the clean validation and test labels)
    sweep = json.loads((tmp_path / "noise" / "sweep.json").read_text())
    noisy_key = results.loc[results["label_noise"] == 0.4, "teacher_key"].iloc[0]
    assert sweep["label_noise"] == [0.0, 0.4]
    assert sweep["resolved"]["teacher_keys"] == {"small_cnn|replicate=0": results.loc[0, "teacher_key"],
                                                 "small_cnn|replicate=0|noise=0.4": noisy_key}
    meta = ArtifactStore(tmp_path / "artifacts").get("teacher", noisy_key).meta
    assert 0 <= meta["test_acc"] <= 1 and sweep["resolved"]["teacher_metrics"][noisy_key]["test_acc"] == meta["test_acc"]
    assert results.loc[results["label_noise"] == 0.4, "teacher_test_acc"].eq(meta["test_acc"]).all()
    # one Optuna study per level; the clean one keeps the name it had before the axis existed
    assert set(journal_studies(tmp_path / "noise" / "optuna.journal")) == {
        "noise/digits|random|f=0.5|small_cnn->small_cnn|replicate=0",
        "noise/digits|random|f=0.5|small_cnn->small_cnn|replicate=0|noise=0.4"}
    page = (tmp_path / "noise" / "report.html").read_text()
    assert 'id="fig-kd-noise"' in page and "KD gain versus label noise" in page


TINY = ["--dataset", "digits", "--profile", "smoke", "--epochs", "1", "--methods", "el2n", "--fractions", "0.3",
        "--trials-per-cell", "1", "--score-seeds", "1"]


def _kept(store_root, score_key, strategy, class_balanced, replicate=0):
    from contract import subset_digest
    from trainables.artifacts import ArtifactStore
    from trainables.datasets import load_dataset
    from trainables.scores import ScoreTable

    table = ScoreTable.from_artifact(ArtifactStore(store_root).get("scores", score_key), cached=True)
    ids = table.select(load_dataset("digits").y_train, 0.3, strategy=strategy, class_balanced=class_balanced,
                       seed=replicate)
    return subset_digest(ids)


def test_selection_options_and_an_sqlite_optuna_storage_go_through_a_sweep(embedded_ray, tmp_path, capsys, monkeypatch):
    db = f"sqlite:///{tmp_path / 'studies.db'}"
    args = [*TINY, "--storage", str(tmp_path), "--name", "easy", "--selection", "easy", "--class-balanced",
            "--optuna-storage", db]
    assert main(args) == 0
    row = pd.read_csv(tmp_path / "easy" / "results.csv").iloc[0]
    assert row["status"] == "completed" and row["selection"] == "easy" and bool(row["class_balanced"])
    # the student trained on exactly the easy, class-balanced 30 % of the score table the sweep computed
    store = str(tmp_path / "artifacts")
    assert row["subset_digest"] == _kept(store, row["score_key"], "easy", True)
    assert row["subset_digest"] != _kept(store, row["score_key"], "hard", False)
    summaries = optuna.get_all_study_summaries(open_optuna_storage(db))
    assert [s.n_trials for s in summaries] == [1] and not (tmp_path / "easy" / "optuna.journal").exists()

    # --resume refuses, before Ray starts, when the code would now compute other artifacts ...
    from trainables import artifacts

    source = artifacts._module_source
    monkeypatch.setattr(artifacts, "_module_source", lambda m: source(m) + ("\nCHANGED = 1\n" if m == "trainables.train" else ""))
    artifacts.forget_code()
    with pytest.raises(SystemExit):
        main(["--resume", "--name", "easy", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert "code that computes teachers or scores changed" in err and "teacher small_cnn|replicate=0" in err
    monkeypatch.setattr(artifacts, "_module_source", source)
    artifacts.forget_code()
    # ... and when an artifact it computed is gone from the cache
    (tmp_path / "artifacts" / "scores" / f"{row['score_key']}.art").unlink()
    with pytest.raises(SystemExit):
        main(["--resume", "--name", "easy", "--storage", str(tmp_path)])
    assert "gone from" in capsys.readouterr().err


def test_ccs_selection_on_a_file_uri_storage(embedded_ray, tmp_path):
    assert main([*TINY, "--storage", f"file://{tmp_path}", "--name", "ccs", "--selection", "ccs"]) == 0
    row = pd.read_csv(tmp_path / "ccs" / "results.csv").iloc[0]
    assert row["status"] == "completed" and row["selection"] == "ccs"
    assert row["subset_digest"] == _kept(f"file://{tmp_path}/artifacts", row["score_key"], "ccs", False)
    assert (tmp_path / "ccs" / "optuna.journal").exists()  # the default journal, opened as a file, not a database


def test_a_trial_no_node_can_fit_is_refused_instead_of_waiting_forever(embedded_ray, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*TINY, "--storage", str(tmp_path), "--name", "big", "--cpus-per-cohort", "64"])
    assert exit_.value.code == 2
    assert "a trial asks for 64 CPU and 0 GPU" in capsys.readouterr().err


def test_ctrl_c_keeps_what_ran_and_says_how_to_resume(embedded_ray_address, shared_artifacts, tmp_path):
    args = ["--dataset", "digits", "--profile", "smoke", "--epochs", "4", "--methods", "random", "--fractions", "0.3",
            "1.0", "--trials-per-cell", "2", "--cohort-size", "1", "--storage", str(tmp_path), "--name", "interrupted",
            "--max-concurrent", "1", "--artifacts", str(shared_artifacts), "--address", embedded_ray_address]
    driver = subprocess.Popen([sys.executable, "-m", "sweep.run", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    journal = tmp_path / "interrupted" / "optuna.journal"
    wait_while_running(lambda: completed_trials(journal) >= 1, driver, "Ctrl-C")
    os.kill(driver.pid, signal.SIGINT)  # what Ctrl-C sends the driver
    out, _ = driver.communicate(timeout=240)
    assert driver.returncode == 130, out[-3000:]
    assert f"python -m sweep.run --resume --name interrupted --storage {tmp_path}" in out
    results = pd.read_csv(tmp_path / "interrupted" / "results.csv")
    assert 1 <= len(results) < 4 and results["val_acc"].notna().all()  # no blank row for a trial that never ran
    assert set(results["status"]) <= {"completed", "interrupted"} and (results["status"] == "completed").any()
    assert (tmp_path / "interrupted" / "report.html").exists()  # a report of what finished
    # the resume of a sweep a signal stopped: tests/test_durability.py (SIGTERM, then a copy resumed)


def test_a_sequential_sweep_stops_a_decided_question_and_resumes_a_killed_driver_at_its_look(embedded_ray_address,
                                                                                               tmp_path):
    """--until-answered on digits: the first look decides the KD gain at f = 0.1 (digits' KD gain there is
    large), so that cell trains no more while the cell of the open question (the gain at f = 1, about
    nothing) grows to the next look's size; a driver killed during that round resumes with the first
    look's decisions and takes the second."""
    args = ["--dataset", "digits", "--profile", "demo", "--epochs", "4", "--min-steps", "100", "--methods", "random",
            "--fractions", "0.1", "1.0",
            "--trials-per-cell", "6", "--cohort-size", "3", "--max-trials", "12", "--until-answered", "kd-gain",
            "--storage", str(tmp_path), "--name", "until", "--address", embedded_ray_address]
    driver = subprocess.Popen([sys.executable, "-m", "sweep.run", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    looks_file = tmp_path / "until" / "looks.jsonl"  # a line per look: the record then
    wait_while_running(looks_file.exists, driver, "its first look")
    os.killpg(driver.pid, signal.SIGKILL)  # during the second round
    out, _ = driver.communicate()
    assert "look 1 of at most 2 (12 students" in out, out[-3000:]
    first = json.loads(looks_file.read_text().splitlines()[-1])
    assert [entry["look"] for entry in first["history"]] == [1] and first["stopped"] is None
    assert first["decided"]["KD gain at f = 0.1"]["answer"] == "gain"

    assert main(["--resume", "--name", "until", "--storage", str(tmp_path)]) == 0
    looks = json.loads(looks_file.read_text().splitlines()[-1])
    assert looks["history"][0] == first["history"][0]  # the same first look, the same decisions
    assert looks["decided"]["KD gain at f = 0.1"] == first["decided"]["KD gain at f = 0.1"]
    assert [entry["look"] for entry in looks["history"]] == [1, 2] and looks["stopped"]
    results = pd.read_csv(tmp_path / "until" / "results.csv")
    assert (results["status"] == "completed").all() and not results.duplicated(["method", "fraction", "optuna_trial"]).any()
    per_cell = results.groupby("fraction").size().to_dict()
    # a cell stops at the look that decided its question (a slot the first round's last cohort left idle
    # may have trained a cohort of its next round ahead: students no look reads); an open one grows to
    # the next look's size
    assert [entry["students"] for entry in looks["history"]] == [12, 18]  # the students each look read
    for fraction, count in per_cell.items():
        decision = looks["decided"].get(f"KD gain at f = {fraction:g}")
        if decision and decision["look"] == 1:
            assert 6 <= count <= 12 and (count - 6) % 3 == 0, (fraction, per_cell)
        else:
            assert count == 12, (fraction, per_cell, looks["decided"])
    assert looks["decided"]["KD gain at f = 0.1"]["look"] == 1 and per_cell[1.0] == 12
    report = (tmp_path / "until" / "report.html").read_text()
    assert 'id="looks"' in report and "KD gain at f = 0.1" in report and "In progress" not in report


def test_a_score_option_reaches_the_score_table_and_its_key(embedded_ray, tmp_path, capsys):
    """``--score-option memorization.scores_file=FILE``: the sweep prunes by the precomputed scores (the
    students train on the examples the file ranks hardest) and the table's key names the file."""

    from contract import subset_digest
    from trainables.datasets import load_dataset
    from trainables.splits import validation_split
    from trainables.selection import select

    digits = load_dataset("digits")
    scores = np.arange(digits.num_train, dtype=float)[::-1].copy()  # the lowest ids are the "hardest"
    np.savez(tmp_path / "mem.npz", ids=np.arange(digits.num_train), scores=scores)
    args = ["--dataset", "digits", "--profile", "smoke", "--epochs", "2", "--methods", "memorization", "--fractions", "0.3",
            "--trials-per-cell", "1", "--score-option", f"memorization.scores_file={tmp_path / 'mem.npz'}",
            "--storage", str(tmp_path), "--name", "mem"]
    assert main(args) == 0
    assert "scores: 1 tables (0 reused from the artifact cache, 0 scoring runs computed)" in capsys.readouterr().out
    row = pd.read_csv(tmp_path / "mem" / "results.csv").query("method == 'memorization'").iloc[0]
    split = validation_split(digits.y_train, 0.1, seed=0)
    kept = select(split.train_ids, scores[split.train_ids], digits.y_train[split.train_ids], 0.3, higher_is_harder=True)
    assert row["subset_digest"] == subset_digest(kept) and kept.max() < digits.num_train * 0.5
    sweep = json.loads((tmp_path / "mem" / "sweep.json").read_text())
    assert sweep["score_options"] == {"memorization": {"scores_file": str(tmp_path / "mem.npz")}}


def test_the_embedded_ray_listens_on_loopback_only():
    """Run as a user's laptop would: without the test suite's environment, every Ray process is on
    127.0.0.1 and listens on loopback only."""
    script = ("from sweep import ray_adapter; import ray, os\n"
              "ray_adapter.connect(None, num_cpus=1)\n"
              "import psutil  # Ray ships it\n"
              "@ray.remote\ndef where(): return ray.util.get_node_ip_address()\n"
              "here = ray.get(where.remote())\n"
              "ours = {p.pid for p in psutil.Process(os.getpid()).children(recursive=True)} | {os.getpid()}\n"
              "listening = {c.laddr.ip for c in psutil.net_connections(kind='inet')\n"
              "             if c.status == psutil.CONN_LISTEN and c.pid in ours}\n"
              "print(sorted(listening))\n"
              "print(sorted({n['NodeManagerAddress'] for n in ray.nodes()}), here)\n"
              "ray_adapter.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    *_, sockets, nodes = done.stdout.strip().splitlines()
    assert nodes == "['127.0.0.1'] 127.0.0.1"
    # every socket the GCS, the raylet, the agents and the workers listen on is a loopback address
    listening = ast.literal_eval(sockets)
    assert listening and set(listening) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, listening


def test_the_report_is_live_while_the_sweep_runs_and_readable_from_the_cohorts_own_rows(
        embedded_ray_address, shared_artifacts, tmp_path):
    """Results and report are rewritten as cells finish, marked in progress; ``analysis.report`` works on
    the running experiment; and the rows the cohorts write of themselves give the same table as results.csv."""
    from analysis.report import main as report_main
    from analysis.results import load_experiment

    args = ["--dataset", "digits", "--profile", "smoke", "--epochs", "3", "--methods", "random", "--fractions", "0.3",
            "1.0", "--trials-per-cell", "2", "--storage", str(tmp_path), "--name", "live", "--max-concurrent", "1",
            "--report-every", "0", "--artifacts", str(shared_artifacts), "--address", embedded_ray_address]
    driver = subprocess.Popen([sys.executable, "-m", "sweep.run", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    folder = tmp_path / "live"
    wait_while_running((folder / "report.html").exists, driver, "any live report")
    live_html = (folder / "report.html").read_text()
    assert "In progress: 2 of 4 trials finished" in live_html
    assert len(pd.read_csv(folder / "results.csv")) == 2  # the finished cell's students only
    assert report_main([str(folder), "--out", str(tmp_path / "while-running.html")]) == 0
    assert "In progress: " in (tmp_path / "while-running.html").read_text()

    out, _ = driver.communicate(timeout=240)
    assert driver.returncode == 0, out[-3000:]
    assert "live report (2 of 4 trials finished)" in out
    final = (folder / "report.html").read_text()
    assert "In progress" not in final and "4 trials, 2 cells" in final

    # Without results.csv (a driver killed before writing it), the table comes from the cohorts' own rows.
    assert len(list((folder / "cohorts").glob("*.csv"))) == 2  # one file per cohort (a cell's trials train together)
    written = load_experiment(str(folder)).trials
    (folder / "results.csv").unlink()
    rebuilt = load_experiment(str(folder)).trials
    columns = ["cell", "alpha", "optuna_trial", "val_acc", "test_acc", "status", "cohort", "cohort_seed", "subset_digest",
               "teacher_test_acc"]
    assert len(rebuilt) == 4
    pd.testing.assert_frame_equal(rebuilt[columns].reset_index(drop=True), written[columns].reset_index(drop=True))


@pytest.fixture(scope="module")
def two_nodes():
    end_ray_in_process()  # the sweeps join this cluster: no other Ray in this process
    from ray._private.authentication import authentication_token_setup as tokens
    from ray.cluster_utils import Cluster

    # Authentication as `ray start --head` sets it up (token on, this machine's token, made if missing):
    # a driver joining a loopback address authenticates with that token (ray_adapter.connect), and a
    # cluster without it would cancel the driver's actors before they start.
    tokens.enable_token_auth_by_default()
    tokens.ensure_token_if_auth_enabled({}, create_token_if_missing=True)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 1, "include_dashboard": False},
    )
    cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster.address
    cluster.shutdown()


def test_sweep_on_a_two_node_cluster_uses_both_nodes(two_nodes, shared_artifacts, tmp_path):
    assert main([*SMALL, "--storage", str(tmp_path), "--name", "cluster", "--address", two_nodes, "--artifacts",
                 str(shared_artifacts)]) == 0
    results = pd.read_csv(tmp_path / "cluster" / "results.csv")
    assert (results["status"] == "completed").all() and len(results) == 6
    assert results["node_id"].nunique() == 2


def test_a_crashed_trial_is_retried_from_its_checkpoint(two_nodes, shared_artifacts, tmp_path, monkeypatch):
    crashes = tmp_path / "crashes"
    monkeypatch.setenv("KDSWEEP_TEST_CRASH_ONCE", str(crashes))
    args = ["--dataset", "digits", "--profile", "smoke", "--epochs", "4", "--methods", "random", "--fractions", "0.5",
            "--trials-per-cell", "2", "--storage", str(tmp_path), "--name", "crash", "--address", two_nodes,
            "--artifacts", str(shared_artifacts)]
    assert main(args) == 0
    assert len(os.listdir(crashes)) == 1  # the cell's cohort crashed once ...
    results = pd.read_csv(tmp_path / "crash" / "results.csv")
    assert (results["status"] == "completed").all()  # ... and was retried to completion
    assert (results["resumed_from_epoch"] == 2).all()  # from its epoch-2 checkpoint, not from scratch
    assert (results["epochs_run"] == 4).all()


def test_a_killed_driver_resumes_without_redoing_finished_trials(two_nodes, shared_artifacts, tmp_path, capsys):
    """A second writer of a running experiment is refused; the driver killed (no chance to release its
    lock) resumes, clearing its stale lock, without redoing what finished."""
    from contract import LOCK_FILE

    storage = str(tmp_path / "old")
    args = ["--dataset", "digits", "--profile", "smoke", "--epochs", "4", "--methods", "random", "--fractions", "0.3",
            "1.0", "--trials-per-cell", "4", "--cohort-size", "2", "--storage", storage, "--name", "killed",
            "--address", two_nodes, "--artifacts", str(shared_artifacts)]
    driver = subprocess.Popen([sys.executable, "-m", "sweep.run", *args], stdout=open(tmp_path / "driver.out", "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    journal, lock = tmp_path / "old" / "killed" / "optuna.journal", tmp_path / "old" / "killed" / LOCK_FILE
    settings = tmp_path / "old" / "killed" / "sweep.json"  # written under the lock: a resume can be asked then
    wait_while_running(settings.exists, driver, "it wrote its settings", log=tmp_path / "driver.out")
    # a second sweep of the same name and a resume of it are refused while the first one runs
    for refused in (args, ["--resume", "--name", "killed", "--storage", storage, "--address", two_nodes]):
        with pytest.raises(SystemExit) as exit_:
            main(refused)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"is being written by another sweep: pid {driver.pid} on host" in err, err
        assert "Traceback" not in err
    assert json.loads(lock.read_text())["pid"] == driver.pid  # the holder's lock is left alone
    wait_while_running(lambda: completed_trials(journal) >= 2, driver, "it could be killed", log=tmp_path / "driver.out")
    os.killpg(driver.pid, signal.SIGKILL)  # no chance to release its lock
    driver.wait()
    done_before = completed_trials(journal)
    assert 2 <= done_before < 8 and lock.exists()

    assert main(["--resume", "--name", "killed", "--storage", storage, "--address", two_nodes]) == 0
    assert f"removed a stale lock of this experiment (pid {driver.pid} on host" in capsys.readouterr().out
    assert not lock.exists()  # released at the end
    results = pd.read_csv(tmp_path / "old" / "killed" / "results.csv")
    assert len(results) == 8 and (results["status"] == "completed").all()
    assert not results.duplicated(["method", "fraction", "optuna_trial"]).any()  # every member exactly once
    assert results.groupby("cohort").size().eq(2).all() and results["cohort"].nunique() == 4
    found = journal_studies(journal)
    assert len(found) == 2
    for study in found.values():
        assert len(study.trials) == 4  # the full history, no trial asked twice
        assert len({t.params["alpha"] for t in study.trials}) == 4  # and no alpha asked twice
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
