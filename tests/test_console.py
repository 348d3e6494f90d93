"""The console: stage progress lines (throttled, with an estimate of what remains) and the log file."""

import logging

from sweep import console
from sweep.console import StageProgress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def lines(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if line]


def test_a_stage_prints_epochs_at_most_every_few_seconds_and_every_finished_task(capsys):
    console.setup()
    clock = Clock()
    progress = StageProgress("teachers", 2, every_s=15, clock=clock)
    clock.now = 10
    progress.event({"task": "resnet20|replicate=0", "epoch": 1, "epochs": 10, "val_acc": 0.31})
    clock.now = 12
    progress.event({"task": "resnet20|replicate=0", "epoch": 2, "epochs": 10, "val_acc": 0.42})  # too soon: no line
    first = lines(capsys)
    # one line, and no estimate yet: the pace is measured from a task's first epoch on (not from the
    # stage's start, which includes starting a worker)
    assert first == ["[teachers 0/2, 0m10s] resnet20|replicate=0: epoch 1/10, val acc 0.310"]

    clock.now = 40
    progress.event({"task": "resnet20|replicate=1", "epoch": 5, "epochs": 10, "val_acc": 0.6})
    # replicate 0: 30 s for its second epoch, 8 epochs to go; replicate 1 has no pace yet
    assert lines(capsys) == ["[teachers 0/2, 0m40s, ~4m00s left] resnet20|replicate=0: epoch 2/10, val acc 0.420; "
                             "resnet20|replicate=1: epoch 5/10, val acc 0.600"]

    clock.now = 50
    progress.done("resnet20|replicate=1", "test acc 0.912")  # a finished task always gets its line
    clock.now = 100
    progress.done("resnet20|replicate=0", "reused from the artifact cache")
    assert lines(capsys) == [
        "[teachers 1/2, 0m50s, ~0m50s left] resnet20|replicate=1 done: test acc 0.912 | resnet20|replicate=0: epoch 2/10, val acc 0.420",
        "[teachers 2/2, 1m40s] resnet20|replicate=0 done: reused from the artifact cache",
    ]


def test_every_line_also_goes_to_the_experiments_log(tmp_path, capsys):
    console.setup()
    path = console.log_to(str(tmp_path / "experiment"))
    try:
        console.say("teachers: 1 (0 reused from the artifact cache)")
        logging.getLogger("sweep.searcher").info("[2/6 trials, 1 in flight, 3 queued, 0m06s, ~0m12s left] ...")
    finally:
        console.close_log()
    console.say("after the sweep")  # not in the closed log
    written = (tmp_path / "experiment" / "sweep.log").read_text()
    assert path == str(tmp_path / "experiment" / "sweep.log")
    assert "teachers: 1 (0 reused" in written and "[2/6 trials, 1 in flight" in written and "after the sweep" not in written
    out = capsys.readouterr().out
    assert out.count("teachers: 1 (0 reused") == 1 and "after the sweep" in out  # once on the console, no duplicate
    assert console.log_to("s3://bucket/runs/x") is None  # a remote experiment: the console is the record


def test_a_trial_worker_does_not_print_its_sigterm_exit_but_prints_other_unraisable_errors():
    # What Ray's SIGTERM handler does to an actor Tune ends: SystemExit raised inside a GC callback,
    # which Python reports as "Exception ignored in ..." on the worker's stderr (and so the driver's).
    import subprocess
    import sys

    script = """
import gc, weakref
from sweep import ray_adapter
ray_adapter.quiet_trial_logs()
ray_adapter.quiet_trial_logs()  # a reused actor runs it again: still one wrapper
class Thing: pass
def raise_in_callback(exc):
    thing = Thing()
    def callback(_):
        raise exc
    ref = weakref.ref(thing, callback)
    del thing
    gc.collect()
raise_in_callback(SystemExit(1))
print("alive")
raise_in_callback(ValueError("a real error"))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "alive" in done.stdout
    assert "SystemExit" not in done.stderr
    assert "Exception ignored" in done.stderr and "ValueError: a real error" in done.stderr
    assert done.stderr.count("ValueError: a real error") == 1
