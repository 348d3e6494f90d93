"""The state on disk: one writer per experiment, a copy is its own, damaged state is caught before
compute, and every stop (a signal, a deleted directory, a full disk) ends cleanly and resumes.

Real sweeps on digits in a subprocess, as a user runs them. The drivers start their own Ray (what a
signal does to Ray's processes is the subject of some; with its own Ray, nothing of the deleted
directory's sweep outlives the driver), except the disk-filling test's, which joins the session's
(conftest ``embedded_ray_address``); the disk tests mount a small tmpfs (root, as in CI). The lock of
a running experiment (a second writer refused, a killed writer's lock cleared) is tested with the killed driver of tests/test_sweep_e2e.py."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import torch

from conftest import completed_trials, journal_studies, wait_while_running
from contract import LOCK_FILE, RESULT_COLUMNS
from sweep.optuna_storage import open_optuna_storage
from sweep.ray_adapter.tuner import newest_whole_checkpoint
from sweep.ray_adapter.worker import CHECKPOINT_FILE
from sweep.run import main
from sweep.state_check import DamagedStateError, check_journal

SWEEP = ["--dataset", "digits", "--profile", "smoke", "--epochs", "4", "--methods", "random", "--fractions", "0.3",
         "1.0", "--trials-per-cell", "2", "--cohort-size", "1", "--max-concurrent", "1"]


def _driver(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "sweep.run", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env={**os.environ, **(env or {})})


def _wait_for_a_checkpoint_the_driver_registered(folder, driver, what):
    """Waits until a trial after a finished one has made two checkpoints. A worker writes a checkpoint
    before the driver hears of it, and a stop in between leaves Tune's state naming none (the trial
    then starts over, from epoch 0, with nothing gone to go on from); one epoch later the first is the
    driver's."""
    wait_while_running(lambda: completed_trials(folder / "optuna.journal") >= 1, driver, what)
    finished = set(_checkpoints(folder))
    wait_while_running(lambda: any(max(numbers) >= 1 for trial, numbers in _checkpoints(folder).items()
                                   if trial not in finished), driver, what)


def _tree(folder) -> dict:
    """Every file under ``folder`` with the sha256 of its bytes."""
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def _every_student_once(folder, students):
    results = pd.read_csv(folder / "results.csv")
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert len(results) == students and (results["status"] == "completed").all()
    assert (results["teacher_params"] > 0).all()  # recorded for a teacher read from the cache too
    assert not results.duplicated(["method", "fraction", "optuna_trial"]).any()
    for study in journal_studies(folder / "optuna.journal").values():
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        assert len({t.params["alpha"] for t in study.trials}) == len(study.trials) == 2  # no alpha asked twice
    return results


def test_an_address_that_answers_but_is_not_ray_is_refused_in_seconds(no_ray_in_process, tmp_path, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        with pytest.raises(SystemExit) as exit_:
            main([*SWEEP, "--storage", str(tmp_path), "--name", "web", "--address", f"127.0.0.1:{port}"])
    finally:
        server.terminate()
        server.wait()
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert f"cannot reach the Ray cluster at '127.0.0.1:{port}': something listens there but does not answer as a Ray head" in err
    assert "it answered '" in err and "Traceback" not in err


def test_sigterm_to_the_process_group_stops_cleanly_and_a_copied_experiment_resumes_into_itself(
        embedded_ray, shared_artifacts, tmp_path, capsys):
    original, copy = tmp_path / "a" / "exp", tmp_path / "b" / "exp"
    driver = _driver([*SWEEP, "--epochs", "8", "--storage", str(tmp_path / "a"), "--name", "exp",
                      "--artifacts", str(shared_artifacts)])
    # stopped while a later trial runs, from a checkpoint the driver has registered
    _wait_for_a_checkpoint_the_driver_registered(original, driver, "SIGTERM")
    # to the driver's whole process group, as `timeout`, `kill -TERM -PGID` or a closed terminal send
    # it: Ray's own processes must not get it (they would end, and the driver could only wait for them)
    os.killpg(driver.pid, signal.SIGTERM)
    out, _ = driver.communicate(timeout=240)
    assert driver.returncode == 143, out[-3000:]  # 128 + SIGTERM
    assert "the sweep stopped (SIGTERM)" in out and "Traceback" not in out
    assert f"Continue with: python -m sweep.run --resume --name exp --storage {tmp_path / 'a'}" in out
    finished = pd.read_csv(original / "results.csv")
    assert 1 <= len(finished) < 4 and (finished["status"] == "completed").any()
    assert (original / "report.html").exists() and not (original / LOCK_FILE).exists()

    shutil.copytree(original, copy, symlinks=True)
    before = _tree(original)
    # the copy's journal as a crash during an append leaves it: a record without its end
    with open(copy / "optuna.journal", "ab") as handle:
        handle.write(b'{"op_code": 5, "worker_id": "abc", "trial_id": 1, "param_na')
    os.symlink(copy / "optuna.journal", copy / "optuna.journal.lock")  # Optuna's lock, as a killed writer leaves it
    # the stopped trial's folder as a driver killed before Tune saved its state leaves it: the
    # checkpoint the state names deleted, a newer whole one, and a newest one cut during its upload
    stopped = {folder: numbers for folder, numbers in _checkpoints(copy).items()
               if folder.name.split("-")[0] in set(finished.loc[finished["status"] == "interrupted", "cohort"])}
    assert len(stopped) == 1, stopped
    (folder, numbers), = stopped.items()
    newer, cut = (folder / f"checkpoint_{max(numbers) + step:06d}" for step in (1, 2))
    (folder / f"checkpoint_{max(numbers):06d}").rename(newer)
    for number in set(numbers) - {max(numbers)}:
        shutil.rmtree(folder / f"checkpoint_{number:06d}")
    cut.mkdir()
    whole = (newer / CHECKPOINT_FILE).read_bytes()
    (cut / CHECKPOINT_FILE).write_bytes(whole[: len(whole) // 2])
    epoch = torch.load(newer / CHECKPOINT_FILE, weights_only=True)["epoch"]
    assert main(["--resume", "--name", "exp", "--storage", str(tmp_path / "b"), "--artifacts", str(shared_artifacts)]) == 0
    out, err = capsys.readouterr()
    assert f"repaired the Optuna journal {copy / 'optuna.journal'}: dropped its torn last record" in out
    assert f"removed the Optuna journal's lock {copy / 'optuna.journal.lock'}, left by a driver" in out
    assert "taking longer than 10.0 seconds to acquire the lock" not in err
    assert re.search(f"the checkpoint {folder}/checkpoint_\\d+ is gone: the trial goes on from {newer}\n", out + err)
    assert "Restored on" not in out + err  # Ray's own line of each restored trial (on with --verbose)
    assert _tree(original) == before  # the original, byte for byte
    resumed = _every_student_once(copy, 4)
    assert set(finished["cohort"]) <= set(resumed["cohort"])  # what finished before the copy is kept, not redone
    restored = resumed[resumed["cohort"] == folder.name.split("-")[0]]
    assert len(restored) == 1 and (restored["resumed_from_epoch"] == epoch).all()


def test_a_stop_signal_to_every_process_of_the_job_ends_the_driver_at_once_and_it_resumes(
        embedded_ray, shared_artifacts, tmp_path, capsys):
    """systemd stopping a unit or a batch scheduler cancelling a job signals every process of it, Ray's
    own too (their session of their own does not shield them): Tune can then neither end the trials nor
    save its state, and the driver waited a minute for the lost GCS and died with Ray's error line,
    its lock left behind. It now stops from what the cohorts wrote of themselves."""
    import psutil  # Ray ships it

    folder = tmp_path / "job"
    driver = _driver([*SWEEP, "--epochs", "8", "--storage", str(tmp_path), "--name", "job",
                      "--artifacts", str(shared_artifacts)])
    # while a later trial runs, from a checkpoint the driver has registered (it resumes from it, below)
    _wait_for_a_checkpoint_the_driver_registered(folder, driver, "the job was stopped")
    job = [psutil.Process(driver.pid), *psutil.Process(driver.pid).children(recursive=True)]
    assert any("raylet" in process.name() for process in job)
    for process in job:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGTERM)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 143, out[-3000:]
    assert "the sweep stopped (SIGTERM), and Ray's own processes with it (its " in out, out[-3000:]
    assert "Traceback" not in out and "Failed to connect to GCS" not in out
    assert f"Continue with: python -m sweep.run --resume --name job --storage {tmp_path}" in out
    kept = pd.read_csv(folder / "results.csv")  # from the cohorts' own rows
    assert list(kept.columns) == list(RESULT_COLUMNS)
    assert (kept["status"] == "completed").sum() >= 1 and (kept["status"] == "interrupted").sum() == 1
    assert (folder / "report.html").exists() and not (folder / LOCK_FILE).exists()

    interrupted = kept.loc[kept["status"] == "interrupted", "cohort"].item()
    assert main(["--resume", "--name", "job", "--storage", str(tmp_path)]) == 0
    assert "removed a stale lock" not in capsys.readouterr().out
    resumed = _every_student_once(folder, 4)
    assert set(kept.loc[kept["status"] == "completed", "cohort"]) <= set(resumed["cohort"])  # not trained again
    assert (resumed.loc[resumed["cohort"] == interrupted, "resumed_from_epoch"] > 0).all()  # from its checkpoint


def test_the_ray_watch_acts_once_on_what_stops_the_sweep_and_not_once_the_driver_ends_ray_itself():
    from sweep.stopping import RayLossWatch

    def wait_for(condition):
        deadline = time.time() + 30
        while not condition() and time.time() < deadline:
            time.sleep(0.01)

    def watch(probe, calls, signalled=lambda: None, **kwargs):
        return RayLossWatch(probe, calls.append, core=("gcs_server", "raylet"), signalled=signalled,
                            **{"every_s": 0.01, **kwargs})

    calls, ended = [], []
    raylet = watch(lambda: list(ended), calls).start()
    ended.append("raylet")
    wait_for(lambda: calls)
    raylet.close()
    assert calls == [["raylet"]]  # once, though the probe goes on naming it

    # without a stop signal, a process that is not Ray's core changes nothing (a crashed dashboard);
    # after one, a process seen ended since, or shortly before the handler ran, does (the same signal
    # reached Ray: its dashboard and log monitor end within milliseconds, often before the driver's
    # handler runs), one that ended long before does not. The watch's clock is the test's.
    now, ended, signalled = [100.0], ["dashboard"], []
    dashboard = watch(lambda: list(ended), calls, signalled=lambda: signalled[0] if signalled else None,
                      recent_s=5.0, clock=lambda: now[0])  # looked at by hand, not started
    assert dashboard.lost() == []  # the dashboard, first seen ended at 100 s
    now[0] = 106.0
    ended.append("log_monitor")
    assert dashboard.lost() == []  # the log monitor, first seen ended at 106 s: no signal yet
    now[0] = 106.5
    signalled.append(now[0])  # the driver's handler runs at 106.5 s
    assert dashboard.lost() == ["log_monitor"]  # seen 0.5 s before it; the dashboard, 6.5 s before, is not
    ended.append("monitor")
    now[0] = 200.0
    assert dashboard.lost() == ["log_monitor", "monitor"]

    calls, ended = [], []
    closed = watch(lambda: list(ended), calls).start()
    closed.close()  # the driver ends Ray itself, or has printed its own stop line: nothing more is done
    ended.append("raylet")
    time.sleep(0.1)
    assert calls == [] and not closed._thread.is_alive()


def test_on_a_stop_signal_the_driver_holds_still_until_the_ray_watch_has_acted_or_the_window_has_passed():
    """The driver's stop-signal handler holds the main thread (``RayLossWatch.hold``) while the watch
    looks whether the signal reached Ray's processes too: Tune ending its trials would otherwise call
    into the dying raylet, and Ray's core worker then ends the driver at once with status 1, before
    the watch has written the results and the resume line. Here ``on_loss`` returns (the driver's
    ends the process), so the hold returns after it."""
    from sweep.stopping import RayLossWatch

    ended, acted, signalled = [], [], []

    def on_loss(names):
        time.sleep(0.3)  # writing the results and the report
        acted.append(names)

    watch = RayLossWatch(lambda: list(ended), on_loss, core=("gcs_server", "raylet"),
                         signalled=lambda: signalled[0] if signalled else None, every_s=0.01).start()
    assert watch.hold(0.2) is False and acted == []  # a signal to the driver alone: it goes on after the window
    signalled.append(time.monotonic())
    ended.append("dashboard")
    assert watch.hold(30.0) is True
    assert acted == [["dashboard"]]  # held until the watch had done all of its stop
    watch.close()
    assert RayLossWatch(list, on_loss, core=(), signalled=lambda: None).hold(30.0) is False  # not started: no wait


def test_a_stop_signal_while_the_driver_ends_ray_is_noted_not_fatal():
    """As the driver disconnects, Ray's core worker puts the kernel's default action for SIGTERM back
    (death, with the lock left behind); the adapter installs the driver's handler again. In a child
    process: under the default action the signal ends it."""
    script = """
import os, signal
from sweep import ray_adapter
from sweep.stopping import StopSignals
ray_adapter.connect(None)
stops = StopSignals().install()  # after connecting, as the driver does (Ray installs its own)
stops.finishing()
ray_adapter.shutdown()
os.kill(os.getpid(), signal.SIGTERM)
os.kill(os.getpid(), signal.SIGHUP)
os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: no KeyboardInterrupt either
print("noted", stops.received, stops.ending)
"""
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])  # -15: ended by the signal
    assert f"noted {int(signal.SIGTERM)} True" in child.stdout  # the first signal, noted; no KeyboardInterrupt


def test_the_newest_whole_checkpoint_is_found_beside_a_deleted_one(tmp_path):
    import pyarrow.fs

    local = pyarrow.fs.LocalFileSystem()
    for number, content in ((0, b"older"), (3, b"newer"), (7, b"cut")):
        folder = tmp_path / f"checkpoint_{number:06d}"
        folder.mkdir()
        torch.save({"epoch": number, "content": content}, folder / CHECKPOINT_FILE)
    whole = (tmp_path / "checkpoint_000007" / CHECKPOINT_FILE).read_bytes()
    (tmp_path / "checkpoint_000007" / CHECKPOINT_FILE).write_bytes(whole[:-30])  # cut during its upload
    (tmp_path / "checkpoint_000009").mkdir()  # made, nothing written yet
    (tmp_path / "checkpoint_notes").mkdir()
    assert newest_whole_checkpoint(local, str(tmp_path)) == str(tmp_path / "checkpoint_000003")
    shutil.rmtree(tmp_path / "checkpoint_000003")
    assert newest_whole_checkpoint(local, str(tmp_path)) == str(tmp_path / "checkpoint_000000")
    shutil.rmtree(tmp_path / "checkpoint_000000")
    assert newest_whole_checkpoint(local, str(tmp_path)) is None  # the trial starts over
    assert newest_whole_checkpoint(local, str(tmp_path / "gone")) is None


def _checkpoints(experiment) -> dict:
    """{trial folder: the numbers of its checkpoint folders} for the trials that made one."""
    found: dict = {}
    for checkpoint in experiment.glob("*-cell*-t*/checkpoint_*"):
        found.setdefault(checkpoint.parent, []).append(int(checkpoint.name.split("_")[1]))
    return found


def _experiment_to_resume(tmp_path):
    """A stopped experiment's files, written as the sweep writes them: settings and an Optuna journal."""
    from sweep.plan import SweepConfig

    folder = tmp_path / "old"
    folder.mkdir()
    config = SweepConfig(dataset="digits", name="old", storage=str(tmp_path), profile="smoke", methods=["random"],
                         fractions=[0.5])
    (folder / "sweep.json").write_text(json.dumps(config.to_dict()))
    study = optuna.create_study(storage=open_optuna_storage(str(folder / "optuna.journal")), study_name="old/cell")
    for alpha in (0.0, 0.5):
        trial = study.ask({"alpha": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, alpha)
    return folder


def test_a_torn_last_journal_record_is_dropped_and_any_other_damage_refused(tmp_path):
    folder = _experiment_to_resume(tmp_path)
    journal = folder / "optuna.journal"
    whole = journal.read_bytes()
    torn = b'{"op_code": 6, "trial_id": 2, "sta'
    journal.write_bytes(whole + torn)
    assert f"dropped its torn last record ({len(torn)} bytes without an end" in check_journal(str(journal))
    assert journal.read_bytes() == whole
    assert len(journal_studies(journal)["old/cell"].trials) == 2
    assert check_journal(str(journal)) is None  # a whole journal: nothing to say

    lines = whole.count(b"\n")
    journal.write_bytes(whole + b"garbage appended by hand\n")
    with pytest.raises(DamagedStateError, match=f"damaged at line {lines + 1} of {lines + 1} \\(not a JSON record"):
        check_journal(str(journal))
    middle = whole.split(b"\n")
    middle[1] = b'["a", "list"]'
    journal.write_bytes(b"\n".join(middle))
    with pytest.raises(DamagedStateError, match=f"damaged at line 2 of {lines} \\(a JSON value that is not an Optuna"):
        check_journal(str(journal))


@pytest.mark.parametrize("damage,message", [
    ("journal", "the Optuna journal {folder}/optuna.journal is damaged at line"),
    ("tune", "Tune's state file {folder}/tuner.pkl is damaged"),
])
def test_a_resume_with_damaged_state_is_refused_before_compute(damage, message, tmp_path, capsys):
    folder = _experiment_to_resume(tmp_path)
    if damage == "journal":
        with open(folder / "optuna.journal", "ab") as handle:
            handle.write(b"not json\n")
    else:
        (folder / "tuner.pkl").write_bytes(b"\x80\x04garbage")
    before = _tree(folder)
    with pytest.raises(SystemExit) as exit_:
        main(["--resume", "--name", "old", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message.format(folder=folder) in err, err
    assert "Traceback" not in err
    assert _tree(folder) == before  # nothing appended, nothing repaired, no lock left behind
    assert not (tmp_path / "artifacts" / "teacher").exists()  # no teacher trained


def test_a_deleted_experiment_directory_stops_the_sweep_with_one_line(shared_artifacts, tmp_path):
    folder = tmp_path / "gone"
    driver = _driver([*SWEEP, "--epochs", "8", "--storage", str(tmp_path), "--name", "gone",
                      "--artifacts", str(shared_artifacts)])
    wait_while_running(lambda: completed_trials(folder / "optuna.journal") >= 1, driver, "the directory was deleted")
    original = folder.stat().st_ino
    while folder.exists() and folder.stat().st_ino == original:  # Tune may write into it while it goes, as with rm -rf
        shutil.rmtree(folder, ignore_errors=True)
    out, _ = driver.communicate(timeout=120)
    assert driver.returncode == 1, out[-3000:]
    assert f"stopped: the experiment directory {folder} was deleted while the sweep ran" in out
    assert "Traceback" not in out and "Unable to set up cluster storage" not in out
    assert "Stop signal received" not in out  # Tune's notice of a Ctrl-C: no one pressed one
    assert not folder.exists()  # what Tune wrote there again was removed
    assert list((shared_artifacts / "teacher").iterdir())  # the artifact cache is kept


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a tmpfs of 96 MB; mounting one needs root (CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs for the disk tests: {done.stderr.strip()}")
        pytest.skip(f"the disk tests mount a tmpfs, which needs root: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_sweep_that_cannot_fit_on_its_disk_is_refused_before_compute(small_disk, tmp_path, capsys):
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    with open(filler, "wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * (free - 2 * (1 << 20)))  # 2 MB left
    with pytest.raises(SystemExit) as exit_:
        main([*SWEEP, "--storage", str(small_disk), "--name", "big", "--artifacts", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "not enough free disk space: this sweep writes about" in err, err
    assert f"to {small_disk}/big" in err and "Traceback" not in err
    assert not (tmp_path / "cache" / "teacher").exists()


def test_a_disk_filling_up_stops_the_sweep_keeps_results_whole_and_resumes(embedded_ray_address, small_disk,
                                                                           shared_artifacts):
    folder = small_disk / "full"
    driver = _driver([*SWEEP, "--epochs", "8", "--storage", str(small_disk), "--name", "full",
                      "--artifacts", str(shared_artifacts), "--address", embedded_ray_address])
    wait_while_running(lambda: completed_trials(folder / "optuna.journal") >= 1, driver, "the disk filled")
    free = shutil.disk_usage(small_disk).free
    subprocess.run(["fallocate", "-l", str(free - 4 * (1 << 20)), str(small_disk / "filler")], check=True)
    out, _ = driver.communicate(timeout=240)
    assert driver.returncode == 1, out[-3000:]
    assert f"stopped: the disk of {folder} is nearly full" in out and "Traceback" not in out
    assert "Stop signal received" not in out
    assert f"Continue with: python -m sweep.run --resume --name full --storage {small_disk}" in out
    kept = pd.read_csv(folder / "results.csv")  # whole: parsed, every column, the finished student in it
    assert list(kept.columns) == list(RESULT_COLUMNS) and (kept["status"] == "completed").sum() >= 1
    assert not [p for p in os.listdir(folder) if ".tmp-" in p]  # no temporary file left behind

    (small_disk / "filler").unlink()
    assert main(["--resume", "--name", "full", "--storage", str(small_disk)]) == 0
    _every_student_once(folder, 4)


def test_a_full_disk_during_a_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    """ENOSPC in the middle of writing results.csv (here at the flush to disk, where NFS reports it)."""
    import errno

    from contract import storage

    target = tmp_path / "results.csv"
    storage.write_bytes(str(target), b"the previous table\n")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        storage.write_bytes(str(target), b"a new table that does not fit\n" * 1000)
    assert target.read_bytes() == b"the previous table\n"
    assert os.listdir(tmp_path) == ["results.csv"]


def test_deleting_a_checkpoint_the_killed_driver_already_deleted_is_not_reported_as_an_error():
    """After a resume, Tune's delete of an old checkpoint that is already gone is not printed; any other
    failure to handle a checkpoint still is."""
    import logging

    from sweep.ray_adapter.tuner import _hide_deleting_gone_checkpoints

    _hide_deleting_gone_checkpoints()
    _hide_deleting_gone_checkpoints()  # a second resume in the same process adds no second filter
    target = logging.getLogger("ray.tune.execution.tune_controller")
    assert sum(type(f).__name__ == "_GoneCheckpointDelete" for f in target.filters) == 1

    def record(error):
        return logging.LogRecord(target.name, logging.ERROR, __file__, 1, "Trial %s: Error handling checkpoint %s",
                                 ("t", "c"), (type(error), error, None))

    assert not target.filter(record(FileNotFoundError("Path not found: checkpoint_000002")))
    assert target.filter(record(PermissionError("denied")))


_KILLED_WRITER = """
import pickle, sys, time
from sweep.ray_adapter.experiment_fs import experiment_filesystem
path = sys.argv[1]
filesystem = experiment_filesystem(path.rsplit("/", 1)[0])
with filesystem.open_output_stream(path) as handle:
    handle.write(pickle.dumps({"counter": 3}))
stream = filesystem.open_output_stream(path)
stream.write(pickle.dumps({"counter": 4})[:10])
stream.flush()
print("half written", flush=True)
time.sleep(60)
"""


def test_a_writer_killed_mid_write_through_the_experiment_filesystem_leaves_the_previous_file_whole(tmp_path, caplog):
    """What a driver killed while Tune copies its state into the experiment directory leaves: the file
    as it was, and a temporary file that the resume removes (a resume's state check then reads it)."""
    import logging
    import pickle

    from sweep.record import check_saved_state

    target = tmp_path / "search_gen_state-2026-12-07_10-00-00.json"
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "half written"
    finally:
        writer.kill()
        writer.wait()
    assert pickle.loads(target.read_bytes()) == {"counter": 3}
    left = [name for name in os.listdir(tmp_path) if name != target.name]
    assert len(left) == 1 and left[0].startswith(target.name + ".tmp-"), left

    with caplog.at_level(logging.INFO):
        check_saved_state(str(tmp_path), None)
    assert f"removed 1 temporary file left in {tmp_path} by a write that was cut off" in caplog.text
    assert os.listdir(tmp_path) == [target.name]


def test_the_experiment_filesystem_replaces_a_file_only_when_it_is_written_whole(tmp_path):
    import pickle

    import pyarrow
    import pyarrow.fs

    from sweep.ray_adapter.experiment_fs import WholeFileWrites, experiment_filesystem, storage_location

    assert experiment_filesystem("s3://bucket/sweeps") is None  # an object store's PUT is whole already
    assert storage_location(f"file://{tmp_path}") == str(tmp_path) == storage_location(str(tmp_path))
    filesystem = experiment_filesystem(f"file://{tmp_path}")
    target = tmp_path / "tuner.pkl"
    with filesystem.open_output_stream(str(target)) as handle:
        handle.write(b"whole")
    with pytest.raises(RuntimeError):  # the writer fails between its writes: nothing of it appears
        with filesystem.open_output_stream(str(target)) as handle:
            handle.write(b"half")
            raise RuntimeError("the writer's own error")
    assert target.read_bytes() == b"whole" and os.listdir(tmp_path) == ["tuner.pkl"]

    # a folder copied in (Tune's upload of a checkpoint or its state), and sent to a worker
    source = tmp_path / "staging" / "checkpoint_000001"
    source.mkdir(parents=True)
    (source / CHECKPOINT_FILE).write_bytes(b"weights" * 1000)
    copy = pickle.loads(pickle.dumps(filesystem))
    assert copy == filesystem
    pyarrow.fs.copy_files(str(tmp_path / "staging"), str(tmp_path / "trial"), destination_filesystem=copy)
    assert (tmp_path / "trial" / "checkpoint_000001" / CHECKPOINT_FILE).read_bytes() == b"weights" * 1000
    assert os.listdir(tmp_path / "trial" / "checkpoint_000001") == [CHECKPOINT_FILE]
    filesystem.copy_file(str(source / CHECKPOINT_FILE), str(tmp_path / "copied.pt"))  # within the filesystem
    assert (tmp_path / "copied.pt").read_bytes() == b"weights" * 1000 and not list(tmp_path.glob("copied.pt.tmp-*"))

    # the copy's read of its source fails after the first chunk (a disk's read error inside pyarrow's
    # copy, not a Python error of the writer's): the copy fails and the previous checkpoint stays whole
    class FailingReads(WholeFileWrites):
        def open_input_stream(self, path):
            return pyarrow.PythonFile(_FailsAfterOneRead(path), mode="r")

        open_input_file = open_input_stream

        def __eq__(self, other):  # another filesystem than the destination's: copy_files streams between them
            return isinstance(other, FailingReads)

    (source / CHECKPOINT_FILE).write_bytes(bytes(3 << 20))  # three of copy_files' 1 MiB chunks
    with pytest.raises(OSError, match="read error"):
        pyarrow.fs.copy_files(str(tmp_path / "staging"), str(tmp_path / "trial"), destination_filesystem=filesystem,
                              source_filesystem=pyarrow.fs.PyFileSystem(FailingReads()))
    assert (tmp_path / "trial" / "checkpoint_000001" / CHECKPOINT_FILE).read_bytes() == b"weights" * 1000
    # pyarrow drops the half-written stream without closing it: once it is collected its temporary file
    # goes too, and no file handle stays open
    gc.collect()
    assert os.listdir(tmp_path / "trial" / "checkpoint_000001") == [CHECKPOINT_FILE]


class _FailsAfterOneRead(io.RawIOBase):
    """A file whose first read returns its first MiB and every later one fails, as a disk's read error."""

    def __init__(self, path):
        with open(path, "rb") as handle:
            self.first = handle.read(1 << 20)

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.first is None:
            raise OSError("read error")
        size = min(len(buffer), len(self.first))
        buffer[:size], self.first = self.first[:size], None
        return size


def test_tune_copies_the_experiment_state_into_a_local_experiment_directory_by_replacing_each_file(embedded_ray, tmp_path):
    """The run config build_tuner gives Tune, used as Tune's controller uses it to copy its staging
    folder into the experiment directory: each copy makes a new file (a new inode) where Tune's own
    filesystem would rewrite the old one in place, which a kill can leave cut short."""
    from ray.train._internal.storage import StorageContext

    from sweep.ray_adapter import FINISHED, FIFOScheduler, Searcher, build_tuner

    class NoTrials(Searcher):
        def suggest(self, trial_id):
            return FINISHED

    tuner = build_tuner(lambda config: None, parameters={}, resources={"cpu": 1, "gpu": 0}, searcher=NoTrials(),
                        scheduler=FIFOScheduler(), num_samples=2, max_concurrent=1, metric="val_acc", mode="max",
                        storage_path=str(tmp_path / "runs"), name="kept", max_failures=0, verbose=0)
    run_config = tuner._local_tuner.get_run_config()
    storage = StorageContext(storage_path=run_config.storage_path, experiment_dir_name=run_config.name,
                             storage_filesystem=run_config.storage_filesystem)
    staging = tmp_path / "staging"
    staging.mkdir()
    state = staging / "experiment_state-2026-12-07_10-00-00.json"
    copied = tmp_path / "runs" / "kept" / state.name
    inodes = []
    for text in ('{"trial_data": []}', '{"trial_data": [1]}'):
        state.write_text(text)
        storage.syncer.sync_up(str(staging), storage.experiment_fs_path)
        storage.syncer.wait()
        assert copied.read_text() == text
        inodes.append(os.stat(copied).st_ino)
    assert inodes[0] != inodes[1]
    assert not [name for name in os.listdir(copied.parent) if ".tmp-" in name]
