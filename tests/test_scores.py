import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import CPU
from trainables.artifacts import ArtifactStore
from trainables.datasets import InMemoryDataset
from trainables.splits import validation_split
from trainables.models import build_model
from contract.recipe import Recipe
from trainables.score_kernels import ForgettingTracker, el2n_scores, grand_scores, memorization_estimate
from trainables.scorers import ScoreRequest, list_methods
from trainables.scores import compute_scores


@pytest.fixture(scope="module")
def tiny_recipe():
    return Recipe(epochs=3, batch_size=64, lr=0.05, precision="fp32", eval_batch_size=512)


def test_every_method_is_registered():
    assert {"random", "el2n", "grand", "forgetting", "memorization"} <= set(list_methods())


@pytest.mark.parametrize("method", list_methods())
def test_scorer_contract(method, digits, digits_split, tiny_recipe, tmp_path):
    """Every registered scorer: one finite score per training-split example, ids matching the split,
    an explicit orientation, provenance, deterministic for a seed, cached on the second call."""
    request = ScoreRequest(method=method, arch="small_cnn", recipe=tiny_recipe, seeds=2, seed=5)
    store = ArtifactStore(tmp_path / "store")
    table = compute_scores(digits, digits_split, request, device=CPU, store=store)
    assert not table.cached
    assert np.array_equal(table.ids, digits_split.train_ids)
    assert table.scores.shape == table.ids.shape and np.isfinite(table.scores).all()
    assert table.scores.std() > 0
    assert isinstance(table.higher_is_harder, bool)
    assert table.provenance["method"] == method and table.provenance["key"] == table.key
    assert len(table.provenance["run_seeds"]) == (1 if method == "random" else 2)

    again = compute_scores(digits, digits_split, request, device=CPU, store=store)
    assert again.cached and again.key == table.key
    assert np.array_equal(again.scores, table.scores) and again.higher_is_harder == table.higher_is_harder

    fresh = compute_scores(digits, digits_split, request, device=CPU, store=None)  # recomputed from scratch
    assert np.array_equal(fresh.scores, table.scores)

    other_seed = compute_scores(digits, digits_split, ScoreRequest(**{**request.__dict__, "seed": 6}), device=CPU, store=store)
    assert not other_seed.cached and other_seed.key != table.key


def test_keys_follow_every_input(digits, digits_split, tiny_recipe, tmp_path):
    store = ArtifactStore(tmp_path)
    base = ScoreRequest(method="el2n", arch="small_cnn", recipe=tiny_recipe, seeds=1)
    key = compute_scores(digits, digits_split, base, device=CPU, store=store).key
    variants = [
        ScoreRequest(method="el2n", arch="resnet20", recipe=tiny_recipe, seeds=1),
        ScoreRequest(method="el2n", arch="small_cnn", recipe=tiny_recipe.replace(lr=0.04), seeds=1),
        ScoreRequest(method="el2n", arch="small_cnn", recipe=tiny_recipe, seeds=1, options={"epoch_fraction": 0.5}),
    ]
    from trainables.artifacts import artifact_key
    from trainables.scores import score_inputs

    keys = {artifact_key("scores", score_inputs(digits, digits_split, r)) for r in variants}
    other_split = validation_split(digits.y_train, 0.1, seed=1)
    keys.add(artifact_key("scores", score_inputs(digits, other_split, base)))
    assert key not in keys and len(keys) == 4
    # the random scorer ignores the recipe and the architecture
    r1 = ScoreRequest(method="random", arch="small_cnn", recipe=tiny_recipe)
    r2 = ScoreRequest(method="random", arch="resnet20", recipe=tiny_recipe.replace(lr=0.01))
    assert score_inputs(digits, digits_split, r1) == score_inputs(digits, digits_split, r2)


def test_el2n_matches_a_hand_computation():
    # logits = W x with W = [[1, 0], [0, 1], [0, 0]]; both examples labelled 0.
    model = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    e = math.e
    # x1: logits (1, 0, 0): p - onehot = (-2, 1, 1) / (e + 2)
    first = math.sqrt(6) / (e + 2)
    # x2: logits (0, 2, 0): p - onehot = (-(1 + e^2), e^2, 1) / (e^2 + 2)
    second = math.sqrt((1 + e**2) ** 2 + e**4 + 1) / (e**2 + 2)
    assert el2n_scores(model, x, torch.tensor([0, 0])) == pytest.approx([first, second], rel=1e-6)


def test_el2n_matches_numpy_in_eval_mode_across_batches():
    """EL2N = || softmax(f(x)) - onehot(y) ||_2, written out in float64 NumPy for a random linear model.
    The model is followed by dropout and left in training mode: the scores must be those of the eval-mode
    model (no dropout), the same whatever the batch size, in the examples' order, and the model's mode
    is restored afterwards."""
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(4, 5)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(5, 4, generator=generator))
        linear.bias.copy_(torch.randn(5, generator=generator))
    model = torch.nn.Sequential(linear, torch.nn.Dropout(0.5)).train()
    x = torch.randn(11, 4, generator=generator)
    y = torch.randint(0, 5, (11,), generator=generator)

    logits = x.double().numpy() @ linear.weight.detach().double().numpy().T + linear.bias.detach().double().numpy()
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    expected = np.sqrt(((probs - np.eye(5)[y.numpy()]) ** 2).sum(1))

    for batch_size in (1024, 3):
        scores = el2n_scores(model, x, y, batch_size=batch_size)
        assert scores.shape == (11,) and scores.dtype == np.float64
        assert np.allclose(scores, expected, rtol=1e-5, atol=1e-7), batch_size
        assert model.training


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20"])
def test_grand_matches_one_backward_per_example(arch, digits):
    torch.manual_seed(0)
    model = build_model(arch, 10, 1)
    # a few training steps so batch-norm statistics and weights are not at their initial values
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x_all = (torch.from_numpy(digits.x_train[:64]).permute(0, 3, 1, 2).float() / 255 - 0.3) / 0.4
    y_all = torch.from_numpy(digits.y_train[:64])
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x_all), y_all).backward()
        optimizer.step()
    x, y = x_all[:12], y_all[:12]
    batched = grand_scores(model, x, y, chunk_size=5)
    model.eval()
    loop = []
    for i in range(len(x)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        loop.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters())))
    assert batched == pytest.approx(loop, rel=1e-4)


def test_forgetting_counts_on_a_hand_made_sequence():
    tracker = ForgettingTracker(4)
    # presentations (example: correct?) in batches; expected events:
    #   ex 0: T F T F -> 2       ex 1: F F T T -> 0
    #   ex 2: F F F F -> never learned: its 4 presentations
    #   ex 3: T F (two presentations only) -> 1
    sequence = [
        ([0, 1, 2, 3], [True, False, False, True]),
        ([3, 0], [False, False]),
        ([1, 2], [False, False]),
        ([0, 1, 2], [True, True, False]),
        ([2, 1, 0], [False, True, False]),
    ]
    for positions, correct in sequence:
        tracker.update(torch.tensor(positions), torch.tensor(correct))
    assert tracker.counts().tolist() == [2.0, 0.0, 4.0, 1.0]


def test_memorization_estimator_by_hand():
    in_subset = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=bool)  # 4 runs, 2 examples
    correct = np.array([[1, 0], [1, 1], [0, 1], [1, 0]], dtype=bool)
    # ex 0: in runs 0,1 (correct 2/2), out runs 2,3 (correct 1/2) -> 0.5
    # ex 1: in runs 1,2 (2/2), out runs 0,3 (0/2) -> 1.0
    assert memorization_estimate(in_subset, correct).tolist() == [0.5, 1.0]
    # never out of a subset: no estimate, 0
    assert memorization_estimate(np.ones((3, 1), bool), np.ones((3, 1), bool)).tolist() == [0.0]


def test_memorization_ranks_flipped_labels_above_clean_ones(digits):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n = 600
    labels = digits.y_train[:n].copy()
    flipped = rng.random(n) < 0.1
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, flipped.sum())) % 10
    noisy = InMemoryDataset("noisy-digits", digits.x_train[:n], labels, digits.x_test, digits.y_test, 10, digits.augmentation)
    split = validation_split(noisy.y_train, 0, seed=0)
    recipe = Recipe(epochs=15, batch_size=32, lr=0.05, augment=False, precision="fp32", eval_batch_size=512)
    table = compute_scores(noisy, split, ScoreRequest("memorization", arch="small_cnn", recipe=recipe, seeds=6), device=CPU)
    assert table.scores[flipped].mean() > table.scores[~flipped].mean() + 0.5
    assert roc_auc_score(flipped, table.scores) > 0.85


def test_precomputed_memorization_scores(digits, digits_split, tmp_path):
    ids = np.arange(digits.num_train)  # the whole training set; the split's ids are picked out
    values = np.sin(ids).astype(np.float64)
    np.savez(tmp_path / "mem.npz", ids=ids, scores=values)
    request = ScoreRequest("memorization", options={"scores_file": str(tmp_path / "mem.npz")})
    store = ArtifactStore(tmp_path / "store")
    table = compute_scores(digits, digits_split, request, device=CPU, store=store)
    assert np.array_equal(table.scores, values[digits_split.train_ids]) and table.provenance["run_seeds"] == []

    import pandas as pd

    pd.DataFrame({"id": ids, "score": values}).to_csv(tmp_path / "mem.csv", index=False)
    from_csv = compute_scores(digits, digits_split, ScoreRequest("memorization", options={"scores_file": str(tmp_path / "mem.csv")}), device=CPU)
    assert np.allclose(from_csv.scores, table.scores)

    # new file content, new key
    np.savez(tmp_path / "mem.npz", ids=ids, scores=values * 2)
    assert compute_scores(digits, digits_split, request, device=CPU, store=store).key != table.key

    np.savez(tmp_path / "short.npz", ids=ids[:100], scores=values[:100])
    with pytest.raises(ValueError, match="no score for"):
        compute_scores(digits, digits_split, ScoreRequest("memorization", options={"scores_file": str(tmp_path / "short.npz")}), device=CPU)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"method": "nope"}, "unknown pruning method"),
        ({"seeds": 0}, "seeds"),
        ({"options": {"epoch_fraction": 0.0}}, "epoch_fraction"),
        ({"options": {"subset_fraction": 1.0}, "method": "memorization"}, "subset_fraction"),
        ({"arch": "resnet19"}, "unknown model"),
        ({"options": {"scores_file": "missing.npz"}, "method": "memorization"}, "not found"),
        ({"options": {"scores_file": "x.npz"}}, "el2n has the options epoch_fraction, not scores_file"),
    ],
)
def test_bad_requests_fail_before_compute(changes, message):
    with pytest.raises((ValueError, KeyError, FileNotFoundError), match=message):
        ScoreRequest(**{"method": "el2n", **changes}).check()


def test_scores_command_line(tmp_path, capsys, monkeypatch):
    """The command as a user runs it, in fresh processes; its refusals in this one."""
    from conftest import refusal
    from trainables.scores import main as scores_main

    env = {**os.environ, "KDSWEEP_ARTIFACTS": str(tmp_path / "store")}
    monkeypatch.setenv("KDSWEEP_ARTIFACTS", str(tmp_path / "store"))
    command = [sys.executable, "-m", "trainables.scores", "--dataset", "digits", "--method", "el2n", "--seeds", "2",
               "--epochs", "3", "--precision", "fp32", "--out", str(tmp_path / "el2n.csv")]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["count"] == 1293 and summary["higher_is_harder"] is True and not summary["cached"]
    assert set(summary["quantiles"]) == {"0.0", "0.1", "0.25", "0.5", "0.75", "0.9", "1.0"} and "seconds" in summary
    # the later runs in this process (the same command line; a fresh process costs seconds of imports)
    def in_process(*args) -> dict:
        capsys.readouterr()
        scores_main(list(map(str, args)))
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    second = in_process(*command[3:])
    assert second["cached"] and second["key"] == summary["key"]
    assert (tmp_path / "store" / "scores" / f"{summary['key']}.art").is_file()
    import pandas as pd

    assert len(pd.read_csv(tmp_path / "el2n.csv")) == 1293
    code, err = refusal(capsys, scores_main, *command[3:5], "--method", "grnd")
    assert code == 2 and "unknown pruning method 'grnd'" in err
    # the method's own options, by name: a later epoch is another table; an option of another method is refused
    assert in_process(*command[3:-2], "--option", "epoch_fraction=0.7")["key"] != summary["key"]
    code, err = refusal(capsys, scores_main, *command[3:], "--option", "subset_fraction=0.5")
    assert code == 2 and "el2n has the options epoch_fraction, not subset_fraction" in err
