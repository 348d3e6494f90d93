"""Every user mistake gets one clear line and exit status 2 before any compute, and leaves nothing
behind: one table of (command, arguments, expected message), run in a fresh folder each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sweep.plan import SweepConfig

SWEEP = ["--dataset", "digits", "--profile", "smoke", "--methods", "random", "--fractions", "0.5"]


def _files(tmp):
    """Fixtures written in the real formats, some of them wrong on purpose."""
    (tmp / "a-file").write_text("not a folder")
    (tmp / "garbage.npz").write_bytes(b"\x00\x01garbage bytes\xff" * 10)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
    labels = np.arange(20) % 4
    np.savez(tmp / "stray.npz", x_train=images, y_train=np.r_[labels[:-1], 250], x_test=images, y_test=labels)
    np.savez(tmp / "fractional.npz", x_train=images, y_train=labels + 0.5, x_test=images, y_test=labels)
    (tmp / "columns.csv").write_text("example,value\n0,1.0\n")
    (tmp / "few.csv").write_text("id,score\n0,1.0\n1,2.0\n")
    (tmp / "nan.csv").write_text("id,score\n" + "".join(f"{i},{'nan' if i == 3 else 0.5}\n" for i in range(1797)))
    (tmp / "text.csv").write_text("id,score\n" + "".join(f"{i},high\n" for i in range(1797)))
    (tmp / "bytes.csv").write_bytes(b"\xff\xfe\x00garbage")
    np.savez(tmp / "noids.npz", scores=np.zeros(1797))
    (tmp / "results.csv").write_bytes(b"\x00\x01\x02garbage")
    (tmp / "fit.json").write_text("{not json")
    (tmp / "old").mkdir()
    config = SweepConfig(dataset="digits", name="old", storage=str(tmp), profile="smoke", methods=["random"], fractions=[0.5])
    (tmp / "old" / "sweep.json").write_text(json.dumps(config.to_dict()))


CASES = [
    # sweep.run
    ("sweep", [*SWEEP[:1], "cifar11"], "unknown dataset"),
    ("sweep", [*SWEEP, "--methods", "grnd"], "unknown method 'grnd'"),
    ("sweep", [*SWEEP, "--fractions", "0"], "(0, 1]"),
    ("sweep", [*SWEEP, "--fractions", "1.5"], "(0, 1]"),
    ("sweep", [*SWEEP, "--alpha-range", "0.5", "0.2"], "--alpha-range"),
    ("sweep", [*SWEEP, "--tau", "-1"], "--tau"),
    ("sweep", [*SWEEP, "--replicates", "-5"], "--replicates"),
    ("sweep", [*SWEEP, "--replicates", "1", "1"], "--replicates"),
    ("sweep", [*SWEEP, "--label-noise", "1.5"], "--label-noise must be distinct rates in [0, 1)"),
    ("sweep", [*SWEEP, "--label-noise", "0.2", "0.2"], "--label-noise must be distinct rates in [0, 1)"),
    ("sweep", [*SWEEP, "--max-failures", "-3"], "--max-failures"),
    ("sweep", [*SWEEP, "--val-size", "0"], "--val-size"),
    ("sweep", [*SWEEP, "--name", ".."], "--name"),
    ("sweep", [*SWEEP, "--name", "a/b"], "--name"),
    ("sweep", [*SWEEP, "--trials-per-cell", "0"], "--trials-per-cell"),
    ("sweep", [*SWEEP, "--cohort-size", "0"], "--cohort-size"),
    ("sweep", [*SWEEP, "--min-steps", "-1"], "--min-steps"),
    ("sweep", [*SWEEP, "--epochs", "0"], "--epochs"),
    ("sweep", [*SWEEP, "--batch-size", "0"], "--batch-size"),
    ("sweep", [*SWEEP, "--lr", "-0.1"], "--lr"),
    ("sweep", [*SWEEP, "--student", "resnet19"], "unknown model"),
    ("sweep", [*SWEEP, "--alpha-design", "magic"], "invalid choice"),
    ("sweep", [*SWEEP, "--scheduler", "pbt"], "invalid choice"),
    ("sweep", [*SWEEP, "--storage", "s3://bucket/runs"], "--optuna-storage"),
    ("sweep", [*SWEEP, "--optuna-storage", "sqlite:///{tmp}/missing/dir/x.db"], "cannot be used"),
    ("sweep", [*SWEEP, "--storage", "{tmp}/a-file"], "cannot write to"),
    ("sweep", [*SWEEP, "--artifacts", "{tmp}/a-file/cache"], "cannot write to"),
    ("sweep", ["--resume"], "--resume needs the --name"),
    ("sweep", ["--resume", "--name", "nothing"], "nothing to resume"),
    ("sweep", ["--resume", "--name", "old", "--fractions", "0.2"], "--fractions: [0.2] (the sweep has [0.5])"),
    ("sweep", ["--dataset", "npz:{tmp}/missing.npz"], "not found"),
    ("sweep", ["--dataset", "npz:{tmp}/garbage.npz"], "not a readable .npz"),
    ("sweep", ["--dataset", "npz:{tmp}/stray.npz", "--methods", "random"], "labels must be 0..C-1"),
    ("sweep", ["--dataset", "npz:{tmp}/fractional.npz", "--methods", "random"], "integer class labels"),
    ("sweep", [*SWEEP, "--address", "127.0.0.1:1"], "cannot reach the Ray cluster"),
    ("sweep", [*SWEEP, "--address", "ray://127.0.0.1:10001"], "is a Ray Client address, which a sweep cannot use"),
    ("sweep", [*SWEEP, "--tau", "inf"], "--tau takes one finite value > 0"),
    ("sweep", [*SWEEP, "--tau", "nan"], "--tau takes one finite value > 0"),
    ("sweep", [*SWEEP, "--tau", "1", "inf"], "two increasing finite values > 0"),
    ("sweep", [*SWEEP, "--alpha-range", "0", "nan"], "--alpha-range"),
    ("sweep", [*SWEEP, "--report-every", "nan"], "--report-every must be >= 0 seconds"),
    ("sweep", [*SWEEP, "--wait-for-nodes", "nan"], "--wait-for-nodes must be >= 0 seconds"),
    ("sweep", [*SWEEP, "--label-noise", "0.95"], "--label-noise 0.95 with 10 classes leaves the true label"),
    ("sweep", [*SWEEP, "--label-noise", "0", "0.9"], "Use rates below 0.9"),
    ("sweep", [*SWEEP, "--name", ""], "--name must be a non-empty name"),
    ("sweep", ["--dataset", "cifar10", "--offline", "--data-dir", "{tmp}/nodata"],
     "put the release's files there: {tmp}/nodata/cifar-10-batches-py/ holding data_batch_1"),
    ("sweep", ["--dataset", "svhn", "--offline", "--data-dir", "{tmp}/nodata"], "{tmp}/nodata/train_32x32.mat and"),
    # trainables.teacher / student / scores
    ("teacher", ["--dataset", "digits"], "give --out PATH, --store DIR, or both"),
    ("teacher", ["--dataset", "digits", "--out", "{tmp}/a-file/teacher.pt"], "cannot write to"),
    ("teacher", ["--dataset", "digits", "--out", "t.pt", "--arch", "resnet19"], "unknown model"),
    ("teacher", ["--dataset", "digits", "--out", "t.pt", "--epochs", "0"], "epochs"),
    ("teacher", ["--dataset", "cifar10", "--out", "t.pt", "--data-dir", "{tmp}/nodata", "--offline"],
     "put the release's files there: {tmp}/nodata/cifar-10-batches-py/ holding data_batch_1"),
    ("student", ["--dataset", "digits", "--alpha", "1.5"], "alpha"),
    ("student", ["--dataset", "digits", "--alpha", "0.5"], "needs --teacher"),
    ("student", ["--dataset", "digits", "--alpha", "0", "--fraction", "0"], "(0, 1]"),
    ("student", ["--dataset", "digits", "--alpha", "0", "--out", "{tmp}/a-file/r.json"], "cannot write to"),
    ("scores", ["--dataset", "digits", "--method", "grnd"], "grnd"),
    ("scores", ["--dataset", "digits", "--method", "memorization", "--option", "scores_file={tmp}/columns.csv"], "needs columns 'id' and 'score'"),
    ("scores", ["--dataset", "digits", "--method", "memorization", "--option", "scores_file={tmp}/few.csv"], "no score for"),
    ("scores", ["--dataset", "digits", "--method", "memorization", "--option", "scores_file={tmp}/nan.csv"], "finite"),
    ("scores", ["--dataset", "digits", "--method", "memorization", "--option", "scores_file={tmp}/text.csv"], "not a readable scores file"),
    ("scores", ["--dataset", "digits", "--method", "memorization", "--option", "scores_file={tmp}/bytes.csv"], "scores file"),
    ("scores", ["--dataset", "digits", "--method", "memorization", "--option", "scores_file={tmp}/noids.npz"], "needs arrays 'ids' and 'scores'"),
    ("scores", ["--dataset", "digits", "--method", "el2n", "--out", "{tmp}/a-file/s.csv"], "cannot write to"),
    ("scores", ["--dataset", "digits", "--method", "el2n", "--option", "epoch_fraction"], "expected FIELD=VALUE"),
    ("scores", ["--dataset", "digits", "--method", "el2n", "--option", "epoch_fraction=late"], "takes a float"),
    # analysis
    ("report", ["{tmp}/nothing-here"], "no results at"),
    ("report", ["{tmp}/results.csv"], "results.csv"),
    ("predict", ["{tmp}/fit.json", "--f", "0.2"], "fit.json"),
]


def _main(kind):
    if kind == "sweep":
        from sweep.run import main
    elif kind == "teacher":
        from trainables.teacher import main
    elif kind == "student":
        from trainables.student import main
    elif kind == "scores":
        from trainables.scores import main
    elif kind == "report":
        from analysis.report import main
    else:
        from analysis.predict import main
    return main


@pytest.mark.parametrize("kind,args,message", CASES, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(CASES)])
def test_a_mistake_gets_one_clear_line_before_any_compute(kind, args, message, no_ray_in_process, tmp_path, monkeypatch,
                                                          capsys):
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    args = [a.format(tmp=tmp_path) for a in args]
    message = message.format(tmp=tmp_path)
    if kind == "sweep" and "--storage" not in args and "--resume" not in args:
        args += ["--storage", str(tmp_path / "runs")]
    if kind == "sweep" and "--resume" in args:
        args += ["--storage", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        _main(kind)(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert message in err, err
    assert "Traceback" not in err
    after = [p for p in sorted(q.relative_to(tmp_path) for q in tmp_path.rglob("*")) if p not in before]
    # nothing computed: no artifact, checkpoint, settings or results file; at most the empty folders
    # the storage checks wrote their probe files into (and removed them from)
    assert all((tmp_path / p).is_dir() for p in after), after
