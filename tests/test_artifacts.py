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
    artifacts.forget_code()
    yield lambda module, old, new: (edits.setdefault(module, []).append((old, new)), artifacts.forget_code())
    artifacts.forget_code()


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


def _score_keys(digits, digits_split) -> dict:
    from search_spaces.defaults import defaults_for
    from trainables.scorers import ScoreRequest
    from trainables.scores import score_inputs

    recipe = defaults_for("digits").recipe
    return {method: artifact_key("scores", score_inputs(digits, digits_split, ScoreRequest(method, "small_cnn", recipe)))
            for method in ("random", "el2n", "forgetting")}


# Each edit is one line added as the first statement of a definition's body (a changed behaviour).
USED_BY_A_SMALL_CNN_TEACHER = [
    ("trainables.loader", "\nimport ", "\nCHANGED = 1\nimport "),  # the training core, whole
    ("trainables.teacher", "\nimport ", "\nCHANGED = 1\nimport "),
    ("trainables.models", "def small_cnn(num_classes: int, in_channels: int) -> nn.Module:\n",
     "def small_cnn(num_classes: int, in_channels: int) -> nn.Module:\n    CHANGED = 1\n"),  # its model
    ("trainables.models", "def build_model(", "def build_model(*_, CHANGED=1, "),  # what the training loop calls
    ("trainables.datasets", "class InMemoryDataset:\n", "class InMemoryDataset:\n    CHANGED = 1\n"),  # its class
    ("trainables.splits", "def validation_split(", "def validation_split(*_, CHANGED=1, "),
]


@pytest.mark.parametrize("module,old,new", USED_BY_A_SMALL_CNN_TEACHER,
                         ids=[f"{module}-{i}" for i, (module, _, _) in enumerate(USED_BY_A_SMALL_CNN_TEACHER)])
def test_editing_code_a_teacher_uses_changes_its_key(digits, digits_split, edited_source, module, old, new):
    before = _teacher_key(digits, digits_split)
    edited_source(module, old, new)
    assert _teacher_key(digits, digits_split) != before


NEW_MODEL = '''

@register_model("my_mlp")
def my_mlp(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
'''
NEW_SCORER = '''

@register_scorer("loss_at_end")
class LossAtEndScorer(EarlyCheckpointScorer):
    kernel = staticmethod(el2n_scores)
'''
NEW_DATASET = '''

@DATASETS.register("my_images")
def my_images(options: LoadOptions) -> InMemoryDataset:
    return _load_npz(options.data_dir / "my_images.npz", "my_images")
'''


def test_extending_the_project_keeps_every_artifact_key(digits, digits_split, edited_source):
    """A model, a scorer and a dataset added in their modules, and edits to a model and a scorer that
    these artifacts do not use: no teacher and no score table is recomputed."""
    teacher, scores = _teacher_key(digits, digits_split), _score_keys(digits, digits_split)
    edited_source("trainables.models", "\n\n@register_model(\"small_cnn\")", NEW_MODEL + "\n\n@register_model(\"small_cnn\")")
    edited_source("trainables.scorers", "\n\n@register_scorer(\"forgetting\")", NEW_SCORER + "\n\n@register_scorer(\"forgetting\")")
    edited_source("trainables.datasets", "\n\n@DATASETS.register(\"digits\")", NEW_DATASET + "\n\n@DATASETS.register(\"digits\")")
    edited_source("trainables.models", "def resnet18_cifar(num_classes: int, in_channels: int) -> nn.Module:\n",
                  "def resnet18_cifar(num_classes: int, in_channels: int) -> nn.Module:\n    CHANGED = 1\n")
    edited_source("trainables.scorers", "class GrandScorer(EarlyCheckpointScorer):\n",
                  "class GrandScorer(EarlyCheckpointScorer):\n    CHANGED = 1\n")
    assert _teacher_key(digits, digits_split) == teacher
    assert _score_keys(digits, digits_split) == scores
    # while an edit to the scorer a table uses changes that table's key only
    edited_source("trainables.scorers", "class ForgettingScorer(Scorer):\n", "class ForgettingScorer(Scorer):\n    CHANGED = 1\n")
    changed = _score_keys(digits, digits_split)
    assert changed["forgetting"] != scores["forgetting"] and {m: changed[m] for m in ("random", "el2n")} == {
        m: scores[m] for m in ("random", "el2n")}


def test_a_registered_entry_is_hashed_by_its_own_code():
    """Entries registered at run time by a loop (cnn3_w16, w32, ...) share one definition and differ
    by the value it closes over; two models never share a fingerprint."""
    from trainables.artifacts import code_for
    from trainables.models import MODELS

    fingerprints = {name: code_for("teacher", MODELS.get(name)) for name in MODELS.names()}
    assert len(set(fingerprints.values())) == len(fingerprints), fingerprints


