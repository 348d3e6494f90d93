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
