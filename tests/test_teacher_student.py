import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import CPU, refusal
from search_spaces.defaults import defaults_for
from trainables.splits import validation_split
from trainables.selection import random_subset
from trainables.student import train_student
from trainables.teacher import load_teacher, save_teacher, train_teacher


def test_digits_teacher_reaches_95_percent(digits, digits_split):
    """Acceptance: the digits defaults, exactly as the command line uses them. (No wall-clock bound: the
    time depends on the machine and its load, not on the code.)"""
    defaults = defaults_for("digits")
    teacher = train_teacher(digits, arch=defaults.teacher_arch, recipe=defaults.recipe, split=digits_split, seed=0, device=CPU)
    assert teacher.meta["test_acc"] >= 0.95
    meta = teacher.meta
    assert meta["dataset"] == "digits" and meta["arch"] == "small_cnn" and meta["seed"] == 0
    assert meta["recipe"] == defaults.recipe.to_dict()
    assert meta["split"] == {"val_size": 0.1, "seed": 0, "num_train": 1293, "num_val": 144}
    assert len(meta["history"]) == defaults.recipe.epochs


def test_checkpoint_round_trip(tmp_path, digits, digits_split, digits_teacher):
    path = save_teacher(digits_teacher, tmp_path / "sub" / "teacher.pt")
    assert os.listdir(path.parent) == ["teacher.pt"]  # no temporary file left behind
    # plain tensors and values only: loadable with weights_only=True
    payload = torch.load(path, weights_only=True)
    assert payload["meta"]["test_acc"] == digits_teacher.meta["test_acc"]
    loaded = load_teacher(path, CPU)
    assert not loaded.model.training
    assert all(not p.requires_grad for p in loaded.model.parameters())
    x = torch.from_numpy(digits.x_test[:16]).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), digits_teacher.model.eval()(x), atol=1e-5)


def test_a_file_that_is_not_a_checkpoint_is_rejected(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a teacher checkpoint"):
        load_teacher(tmp_path / "other.pt")


def test_kd_beats_no_kd_at_f_0_1_over_three_seeds(digits, digits_split, digits_teacher, fast_recipe):
    """Acceptance: random 10% subset of digits, same student with alpha 0.8 vs alpha 0."""
    accuracy = {0.0: [], 0.8: []}
    for seed in range(3):
        subset = random_subset(digits_split.train_ids, 0.1, seed=seed)
        for alpha in accuracy:
            result = train_student(
                digits, subset, arch="small_cnn", recipe=fast_recipe, split=digits_split,
                teacher=digits_teacher, alpha=alpha, tau=4.0, seed=seed, device=CPU,
            )
            assert result.num_train == 129 and len(result.history) == fast_recipe.epochs
            accuracy[alpha].append(result.test_acc)
    kd, plain = np.mean(accuracy[0.8]), np.mean(accuracy[0.0])
    assert kd > plain, f"KD {accuracy[0.8]} vs no KD {accuracy[0.0]}"


def _count_forwards(model):
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_alpha_zero_runs_no_teacher_forward(digits, digits_split, digits_teacher, fast_recipe):
    subset = random_subset(digits_split.train_ids, 0.2, seed=0)
    calls, handle = _count_forwards(digits_teacher.model)
    try:
        kwargs = dict(arch="small_cnn", recipe=fast_recipe.replace(epochs=2), split=digits_split, teacher=digits_teacher, device=CPU)
        train_student(digits, subset, alpha=0.0, **kwargs)
        assert calls == []
        train_student(digits, subset, alpha=0.5, **kwargs)
        assert len(calls) == 2 * int(np.ceil(len(subset) / fast_recipe.batch_size))  # once per training step
    finally:
        handle.remove()


def test_student_rejects_validation_ids_and_mismatched_teachers(digits, digits_split, digits_teacher, fast_recipe):
    kwargs = dict(arch="small_cnn", recipe=fast_recipe, teacher=digits_teacher, alpha=0.5, device=CPU)
    leaking = np.concatenate([digits_split.train_ids[:10], digits_split.val_ids[:2]])
    with pytest.raises(ValueError, match="not in the training split"):
        train_student(digits, leaking, split=digits_split, **kwargs)
    with pytest.raises(ValueError, match="repeats"):
        train_student(digits, np.array([1, 1, 2]), split=digits_split, **kwargs)
    other_split = validation_split(digits.y_train, 0.1, seed=1)
    with pytest.raises(ValueError, match="validation split"):
        train_student(digits, other_split.train_ids[:50], split=other_split, **kwargs)
    with pytest.raises(ValueError, match="needs a teacher"):
        train_student(digits, digits_split.train_ids[:50], split=digits_split, **{**kwargs, "teacher": None})


def _cli(module, *args, env):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def test_command_lines(tmp_path, digits_split, capsys, monkeypatch):
    """Both commands as a user runs them, in fresh processes; their refusals in this one."""
    from trainables.student import main as student_main

    env = {**os.environ, "KDSWEEP_DATA_DIR": str(tmp_path)}
    monkeypatch.setenv("KDSWEEP_DATA_DIR", str(tmp_path))
    checkpoint = tmp_path / "teacher.pt"
    teacher = _cli("trainables.teacher", "--dataset", "digits", "--epochs", 4, "--precision", "fp32", "--out", checkpoint, env=env)
    assert teacher.returncode == 0, teacher.stderr
    assert "epoch 4/4" in teacher.stdout
    summary = json.loads(teacher.stdout.strip().splitlines()[-1])
    assert summary["epochs_run"] == 4 and summary["test_acc"] > 0.5 and checkpoint.is_file()

    # the student takes the teacher's split (digits' default: val_size 0.1, seed 0)
    ids = digits_split.train_ids[::10]
    np.savetxt(tmp_path / "ids.txt", ids, fmt="%d")
    out = tmp_path / "student.json"
    common = ["--dataset", "digits", "--teacher", checkpoint, "--epochs", 3, "--precision", "fp32"]
    student = _cli("trainables.student", *common, "--alpha", 0.7, "--subset-ids", tmp_path / "ids.txt", "--out", out, env=env)
    assert student.returncode == 0, student.stderr
    result = json.loads(out.read_text())
    assert result["alpha"] == 0.7 and result["num_train"] == len(ids) and len(result["history"]) == 3

    np.savetxt(tmp_path / "leak.txt", np.concatenate([ids, digits_split.val_ids[:1]]), fmt="%d")
    code, err = refusal(capsys, student_main, *common, "--alpha", 0.7, "--subset-ids", tmp_path / "leak.txt")
    assert code != 0 and "not in the training split" in err

    code, err = refusal(capsys, student_main, "--dataset", "digits", "--alpha", 1.5)
    assert code != 0 and "alpha must lie in [0, 1]" in err
    code, err = refusal(capsys, student_main, "--dataset", "digits", "--alpha", 0.5)
    assert code != 0 and "needs --teacher" in err
