"""One contract for every storage the sweep writes to, run over each backend (as Optuna tests every
storage with one suite): results/settings files and the artifact cache on a local directory,
``file://`` and ``memory://``; Optuna studies in a journal file (plain path and ``file://``) and SQLite."""

import uuid

import optuna
import pytest

from sweep.optuna_storage import check_optuna_storage, default_optuna_url, open_optuna_storage
from trainables.artifacts import ArtifactStore
from contract.storage import check_writable, read_text, write_bytes


@pytest.fixture(params=["local", "file", "memory"])
def location(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "runs")
    if request.param == "file":
        return f"file://{tmp_path / 'runs'}"
    return f"memory://kdsweep-{uuid.uuid4().hex}/runs"


def test_files_round_trip_and_missing_files_read_as_none(location):
    assert read_text(f"{location}/exp/results.csv") is None
    write_bytes(f"{location}/exp/results.csv", b"a,b\n1,2\n")
    assert read_text(f"{location}/exp/results.csv") == "a,b\n1,2\n"
    write_bytes(f"{location}/exp/results.csv", b"a,b\n3,4\n")  # rewritten in place, not appended
    assert read_text(f"{location}/exp/results.csv") == "a,b\n3,4\n"


def test_a_writable_location_passes_the_check_and_is_left_clean(location):
    check_writable(f"{location}/exp")
    import fsspec

    fs, path = fsspec.core.url_to_fs(f"{location}/exp")
    assert fs.ls(path, detail=False) == []  # the probe file is gone


def test_artifacts_round_trip_on_every_backend(location):
    store = ArtifactStore(f"{location}/artifacts")
    assert not store.exists("teacher", "0" * 32)
    made, cached = store.get_or_create("teacher", {"arch": "small_cnn"}, lambda: (b"weights", {"val_acc": 0.9}))
    assert not cached
    again, cached = store.get_or_create("teacher", {"arch": "small_cnn"}, lambda: (b"other", {}))
    assert cached and again.payload == b"weights" and again.meta == {"val_acc": 0.9}
    assert store.keys("teacher") == [made.key] and store.exists("teacher", made.key)


def test_an_unwritable_location_is_refused_before_compute(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="cannot write to"):
        check_writable(str(blocker / "runs"))


@pytest.fixture(params=["journal", "file-journal", "sqlite"])
def optuna_url(request, tmp_path):
    if request.param == "journal":
        return str(tmp_path / "exp" / "optuna.journal")
    if request.param == "file-journal":
        return f"file://{tmp_path / 'exp' / 'optuna.journal'}"
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_optuna_storages_hold_studies_across_reopening(optuna_url):
    check_optuna_storage(optuna_url)
    study = optuna.create_study(storage=open_optuna_storage(optuna_url), study_name="exp/cell", direction="maximize")
    study.enqueue_trial({"alpha": 0.0})
    trial = study.ask({"alpha": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, 0.75)
    reopened = optuna.load_study(study_name="exp/cell", storage=open_optuna_storage(optuna_url))
    assert [(t.params["alpha"], t.value) for t in reopened.trials] == [(0.0, 0.75)]


@pytest.mark.parametrize("url,reason", [
    ("sqlite:///{tmp}/missing/dir/optuna.db", "unable to open database"),
    ("{tmp}/a-file/optuna.journal", "cannot be used"),
    ("postgresql+nosuchdriver://localhost/db", "cannot be used"),
])
def test_a_bad_optuna_storage_is_refused_with_its_reason(tmp_path, url, reason):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ValueError, match=reason):
        check_optuna_storage(url.format(tmp=tmp_path))


def test_the_default_optuna_storage_follows_the_experiment_directory(tmp_path):
    assert default_optuna_url(str(tmp_path / "exp")) == str(tmp_path / "exp" / "optuna.journal")
    assert default_optuna_url(f"file://{tmp_path}/exp") == f"{tmp_path}/exp/optuna.journal"  # a journal, not a database URL
    assert default_optuna_url("s3://bucket/runs/exp") is None  # a remote experiment names its own storage
