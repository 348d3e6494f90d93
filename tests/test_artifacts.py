import logging
import multiprocessing
import os

import numpy as np
import pytest

from trainables.artifacts import ArtifactStore, artifact_key, decode

INPUTS = {"dataset": "digits", "recipe": {"lr": 0.1, "epochs": 3}, "seeds": [1, 2]}


def test_keys_are_stable_and_change_with_any_input():
    assert artifact_key("scores", INPUTS) == artifact_key("scores", {"seeds": [1, 2], "recipe": {"epochs": 3, "lr": 0.1}, "dataset": "digits"})
    changed = [
        {**INPUTS, "dataset": "cifar10"},
        {**INPUTS, "recipe": {"lr": 0.1, "epochs": 4}},
        {**INPUTS, "seeds": [1, 3]},
    ]
    keys = {artifact_key("scores", c) for c in changed} | {artifact_key("teacher", INPUTS)}
    assert artifact_key("scores", INPUTS) not in keys and len(keys) == 4


@pytest.mark.parametrize("root", ["local", "memory"])
def test_round_trip_and_get_or_create(root, tmp_path):
    import uuid

    store = ArtifactStore(tmp_path / "store" if root == "local" else f"memory://kdsweep-test-{uuid.uuid4().hex}")
    calls = []

    def produce():
        calls.append(1)
        return b"payload bytes", {"note": "hello"}

    first, cached = store.get_or_create("scores", INPUTS, produce)
    assert not cached and first.payload == b"payload bytes" and first.meta == {"note": "hello"}
    second, cached = store.get_or_create("scores", INPUTS, produce)
    assert cached and second.payload == b"payload bytes" and calls == [1]
    assert second.header["inputs"] == INPUTS and store.keys("scores") == [first.key]


def _corrupt(path, how):
    data = bytearray(open(path, "rb").read())
    if how == "flip":
        data[-3] ^= 0xFF
    elif how == "truncate":
        data = data[: len(data) // 2]
    elif how == "header":
        data[10] = ord("!")
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate", "header"])
def test_a_corrupt_artifact_is_reported_removed_and_recomputed(how, tmp_path, caplog):
    store = ArtifactStore(tmp_path)
    artifact, _ = store.get_or_create("teacher", INPUTS, lambda: (os.urandom(4096), {}))
    path = store.path("teacher", artifact.key)
    _corrupt(path, how)
    with caplog.at_level(logging.WARNING, logger="trainables.artifacts"):
        assert store.get("teacher", artifact.key) is None
    assert "corrupt artifact" in caplog.text
    assert not os.path.exists(path)
    redone, cached = store.get_or_create("teacher", INPUTS, lambda: (b"fresh", {}))
    assert not cached and store.get("teacher", artifact.key).payload == b"fresh"


def _producer(root, payload_byte, barrier, rounds):
    store = ArtifactStore(root)
    key = artifact_key("scores", INPUTS)
    for _ in range(rounds):
        barrier.wait()
        store.put("scores", key, INPUTS, bytes([payload_byte]) * 200_000, {"by": payload_byte})


def test_two_concurrent_producers_leave_one_valid_artifact(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [context.Process(target=_producer, args=(str(tmp_path), b, barrier, 30)) for b in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    store = ArtifactStore(tmp_path)
    found = store.get("scores", artifact_key("scores", INPUTS))
    assert found is not None
    assert found.payload in (bytes([1]) * 200_000, bytes([2]) * 200_000)
    assert found.meta["by"] == found.payload[0]
    assert os.listdir(tmp_path / "scores") == [f"{found.key}.art"]  # one file, no temporaries left


def test_cached_teacher_is_reused_and_a_corrupt_one_retrained(tmp_path, digits, digits_split, fast_recipe):
    from trainables.teacher import get_or_train_teacher

    store = ArtifactStore(tmp_path)
    recipe = fast_recipe.replace(epochs=2)
    kwargs = dict(arch="small_cnn", recipe=recipe, seed=0, device="cpu", store=store)
    teacher, cached = get_or_train_teacher(digits, digits_split, **kwargs)
    assert not cached
    again, cached = get_or_train_teacher(digits, digits_split, **kwargs)
    assert cached and again.meta["key"] == teacher.meta["key"]
    for a, b in zip(teacher.model.state_dict().values(), again.model.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())
    _corrupt(store.path("teacher", teacher.meta["key"]), "flip")
    _, cached = get_or_train_teacher(digits, digits_split, **kwargs)
    assert not cached
    _, cached = get_or_train_teacher(digits, digits_split, **{**kwargs, "seed": 1})
    assert not cached


def test_decode_rejects_garbage():
    from trainables.artifacts import CorruptArtifactError

    import hashlib

    body = b"\xff" * 8 + b"{}"  # a valid checksum over a header length that lies
    for data in (b"", b"\x05\x00", body + bytes(32), body + hashlib.sha256(body).digest()):
        with pytest.raises(CorruptArtifactError):
            decode(data)


# ---- keys that follow the code ------------------------------------------------------------------

def _teacher_key(digits, digits_split):
    from search_spaces.defaults import defaults_for
    from trainables.teacher import teacher_inputs

    recipe = defaults_for("digits").recipe
    return artifact_key("teacher", teacher_inputs(digits, digits_split, arch="small_cnn", recipe=recipe, seed=0))


@pytest.fixture
def edited_source(monkeypatch):
    """Pretend a module's file holds other text: ``edit(module, old, new)``."""
    from trainables import artifacts

    original = artifacts._module_source
    edits = {}

    def source(module):
        text = original(module)
        for old, new in edits.get(module, []):
            assert old in text, f"{old!r} not in {module}"
            text = text.replace(old, new, 1)
        return text

    monkeypatch.setattr(artifacts, "_module_source", source)
    artifacts.code_fingerprint.cache_clear()
    yield lambda module, old, new: (edits.setdefault(module, []).append((old, new)), artifacts.code_fingerprint.cache_clear())
    artifacts.code_fingerprint.cache_clear()


def test_editing_fit_changes_the_teacher_key_and_a_comment_does_not(digits, digits_split, edited_source):
    import inspect

    from trainables import train

    before = _teacher_key(digits, digits_split)
    first_line = inspect.getsource(train.fit).splitlines()[0]
    edited_source("trainables.train", first_line, f"# a comment about fit\n{first_line}")
    edited_source("trainables.train", '"""', '"""Another docstring. ')  # the module docstring
    assert _teacher_key(digits, digits_split) == before
    edited_source("trainables.train", "def fit(", "_BEHAVIOUR_CHANGED = True\n\n\ndef fit(")
    assert _teacher_key(digits, digits_split) != before


@pytest.mark.parametrize("module", ["trainables.loader", "trainables.models", "trainables.teacher"])
def test_editing_any_module_a_teacher_depends_on_changes_its_key(digits, digits_split, edited_source, module):
    before = _teacher_key(digits, digits_split)
    edited_source(module, "\nimport ", "\nCHANGED = 1\nimport ")
    assert _teacher_key(digits, digits_split) != before


def test_every_module_an_artifact_depends_on_is_in_its_code():
    """The project modules a producer imports, directly or through each other, are all hashed; only
    those that cannot change an artifact's content are left out, by name."""
    import ast

    from trainables import artifacts

    # Storage and caching, the registry mechanism and the command lines do not change what is computed;
    # KD and subset selection act on students only, never on a teacher or a score table.
    no_content = {"trainables", "trainables.artifacts", "trainables.storage", "trainables.registry", "trainables.cli",
                  "search_spaces.defaults", "search_spaces", "trainables.kd", "trainables.selection"}
    for kind, modules in artifacts.CODE_BY_KIND.items():
        for module in modules:
            tree = ast.parse(artifacts._module_source(module))
            imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
            imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
            ours = {name for name in imported if name.split(".")[0] in ("trainables", "search_spaces", "sweep")}
            assert ours <= set(modules) | no_content, f"{kind}: {module} imports {sorted(ours - set(modules) - no_content)}"
