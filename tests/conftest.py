import os

# Ray in tests stays on loopback: without this, Ray resolves 127.0.0.1 to the machine's routable
# address when a driver or a second node joins a cluster (ray._private.services.get_node_ip_address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np
import pytest
import torch

from trainables.datasets import load_dataset
from trainables.splits import validation_split
from contract.recipe import Recipe

CPU = torch.device("cpu")


# ---- one embedded Ray for the in-process sweeps that do not test Ray's own start and stop ----
# Each sweep that starts its own Ray pays its start (about 3 s), its stop (1 s) and worker processes
# that import torch again; a test that asks for ``embedded_ray`` runs its sweeps in the Ray this
# process already runs (the driver uses it and leaves it up: sweep.ray_adapter.connect). It stays up
# across the tests that do not touch Ray, so the suite starts it once, not once per group of tests
# that ask for it. A test whose sweep joins another cluster (``--address``) asks for
# ``no_ray_in_process`` (Ray allows one connection per process). Ray's own start and stop, as a user's
# sweep does it, is run by the subprocess drivers that do not join it (``embedded_ray_address``).

def start_embedded_ray() -> None:
    import ray

    from sweep import ray_adapter

    if not ray.is_initialized():
        ray_adapter.connect(None)  # what the driver starts: loopback only
        ray_adapter.keep_running()  # the sweeps must not end it


def end_ray_in_process() -> None:
    import sys

    ray = sys.modules.get("ray")  # never imported: nothing to end
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def embedded_ray():
    start_embedded_ray()


@pytest.fixture
def embedded_ray_address(embedded_ray) -> str:
    """The session's embedded Ray as a cluster that a subprocess driver joins (``--address``), for the
    tests whose subject is the driver rather than Ray's start: a driver that starts its own Ray pays
    about 3 s for it and 1 s to end it."""
    import ray

    return ray.get_runtime_context().gcs_address


@pytest.fixture
def no_ray_in_process():
    end_ray_in_process()


@pytest.fixture(scope="session")
def shared_artifacts(tmp_path_factory):
    """One artifact cache (teachers, score tables) for the sweeps of the tests that are not about
    computing them, as a user's sweeps share theirs: a teacher of one recipe trains once in the session,
    not once per test (about 5 s each in a subprocess driver, most of it a fresh worker importing torch).
    A test that asserts what its sweep computes or reuses keeps a cache of its own."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session", autouse=True)
def _end_ray_at_exit():
    yield
    end_ray_in_process()


def refusal(capsys, main, *args) -> tuple[int, str]:
    """A command's refusal (exit code, stderr), run in this process: a fresh process would only pay
    torch's import again; the commands' successful runs are tested in fresh processes."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main([str(a) for a in args])
    return stop.value.code, capsys.readouterr().err


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_split(digits):
    return validation_split(digits.y_train, 0.1, seed=0)


@pytest.fixture(scope="session")
def fast_recipe():
    """digits' default recipe in fp32 (bit-reproducible on any CPU)."""
    from search_spaces.defaults import defaults_for

    return defaults_for("digits").recipe.replace(precision="fp32")


@pytest.fixture(scope="session")
def digits_teacher(digits, digits_split, fast_recipe):
    from trainables.teacher import train_teacher

    return train_teacher(digits, arch="small_cnn", recipe=fast_recipe, split=digits_split, seed=0, device=CPU)


# ---- drivers started as subprocesses: their Optuna journal and a bounded wait for their progress ----
# how long a test waits for a driver it started to make progress: a bound against a hang, not a speed
# test (with the suite beside a benchmark on 2 cores a driver took over 240 s to finish its first trials)
PROGRESS_WAIT = 600


def journal_studies(journal) -> dict:
    """{study name: study} of an Optuna journal (a sweep's ``optuna.journal``)."""
    import optuna

    from sweep.optuna_storage import open_optuna_storage

    storage = open_optuna_storage(str(journal))
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def completed_trials(journal) -> int:
    """The completed trials in a journal a running driver may be writing (0 while it cannot be read)."""
    import optuna

    if not os.path.exists(journal):
        return 0
    try:
        return sum(t.state == optuna.trial.TrialState.COMPLETE for s in journal_studies(journal).values() for t in s.trials)
    except Exception:  # the journal is being written
        return 0


def wait_while_running(condition, driver, what: str, timeout: float = PROGRESS_WAIT, log=None) -> None:
    """Waits until ``condition()`` holds, up to ``timeout`` seconds, and asserts that the driver process
    still runs (``what``: what it must not end before). When it ended, the failure shows the end of its
    output: its pipe, or ``log``, the file its output went to."""
    import time

    deadline = time.time() + timeout
    while not condition() and time.time() < deadline and driver.poll() is None:
        time.sleep(0.2)
    if driver.poll() is not None:
        out = open(log).read() if log is not None else (driver.communicate()[0] if driver.stdout else "")
        raise AssertionError(f"the sweep ended before {what}: {(out or '')[-3000:]}")


def write_npz(path, n_train=40, n_test=20, shape=(8, 8, 3), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": np.arange(n_test) % classes,
    }
    np.savez(path, **arrays)
    return arrays
