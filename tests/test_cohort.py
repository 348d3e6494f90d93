"""Cohorts: K students trained together on one stream of batches, sharing the teacher's forward."""

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from conftest import CPU
from trainables.cohort import STATE_FORMAT, Halving, Member, train_cohort
from trainables.kd import kd_loss
from trainables.selection import random_subset
from trainables.student import train_student
from trainables.train import StopTraining


@pytest.fixture(scope="module")
def subset(digits_split):
    return random_subset(digits_split.train_ids, 0.1, seed=0)  # 129 examples: 3 steps per epoch


def _cohort(digits, digits_split, digits_teacher, recipe, subset, members, **kwargs):
    kwargs.setdefault("seed", 5)
    return train_cohort(digits, subset, arch="small_cnn", recipe=recipe, split=digits_split, teacher=digits_teacher,
                        members=members, device=CPU, **kwargs)


def _same_weights(a, b, atol=0.0):
    return all(
        torch.allclose(x, y, rtol=0, atol=atol) if x.is_floating_point() else torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values())
    )


def _forwards(model):
    calls = []
    return calls, model.register_forward_hook(lambda *_: calls.append(1))


def test_members_start_identical_and_see_the_same_batches(digits, digits_split, digits_teacher, fast_recipe, subset):
    steps = defaultdict(list)  # member -> [(batch object, ids, logits)]
    members = [Member(0.5), Member(0.0), Member(0.5), Member(0.9, tau=2.0)]
    result = _cohort(digits, digits_split, digits_teacher, fast_recipe.replace(epochs=2), subset, members,
                     on_step=lambda i, batch, logits: steps[i].append((batch, batch.ids.clone(), logits)))
    per_epoch = math.ceil(len(subset) / fast_recipe.batch_size)
    assert result.steps_per_epoch == per_epoch and sorted(steps) == [0, 1, 2, 3]
    for i in range(1, 4):
        assert len(steps[i]) == 2 * per_epoch
        # one loader iteration: the very same batch objects (ids, augmented images), in the same order
        assert all(a[0] is b[0] and torch.equal(a[1], b[1]) for a, b in zip(steps[0], steps[i]))
        # the first step's logits come from the initial weights: identical for every member
        assert torch.equal(steps[0][0][2], steps[i][0][2])
    epoch_ids = torch.cat([ids for _, ids, _ in steps[0][:per_epoch]]).numpy()
    assert np.array_equal(np.sort(epoch_ids), np.sort(subset))
    # two members with the same (alpha, tau) stay identical; another alpha does not
    assert _same_weights(result.models[0], result.models[2])
    assert not _same_weights(result.models[0], result.models[1], atol=1e-4)
    assert [m.status for m in result.members] == ["completed"] * 4
    assert all(m.epochs_run == 2 and m.steps_run == 2 * per_epoch and len(m.history) == 2 for m in result.members)
    assert all(m.val_acc is not None and m.test_acc is not None for m in result.members)


def test_one_teacher_forward_per_batch_whatever_k(digits, digits_split, digits_teacher, fast_recipe, subset):
    recipe = fast_recipe.replace(epochs=2)
    steps = 2 * math.ceil(len(subset) / recipe.batch_size)
    calls, handle = _forwards(digits_teacher.model)
    try:
        for members in ([Member(0.5)], [Member(0.0), Member(0.3), Member(0.6), Member(1.0, tau=2.0)]):
            calls.clear()
            result = _cohort(digits, digits_split, digits_teacher, recipe, subset, members, test=False)
            assert len(calls) == steps == result.teacher_forwards
        calls.clear()
        result = _cohort(digits, digits_split, digits_teacher, recipe, subset, [Member(0.0), Member(0.0, tau=2.0)])
        assert calls == [] and result.teacher_forwards == 0
    finally:
        handle.remove()
    # no member needs a teacher: none is needed
    result = _cohort(digits, digits_split, None, recipe, subset, [Member(0.0)])
    assert result.members[0].status == "completed"
    with pytest.raises(ValueError, match="needs a teacher"):
        _cohort(digits, digits_split, None, recipe, subset, [Member(0.0), Member(0.4)])


def test_a_member_equals_the_student_trained_alone(digits, digits_split, digits_teacher, fast_recipe, subset):
    """K = 1 behaves as before: a member of a cohort of three ends as the same student trained alone."""
    recipe = fast_recipe.replace(epochs=3)
    cohort = _cohort(digits, digits_split, digits_teacher, recipe, subset, [Member(0.0), Member(0.7), Member(0.3, 2.0)])
    alone = _cohort(digits, digits_split, digits_teacher, recipe, subset, [Member(0.7)])
    assert _same_weights(cohort.models[1], alone.models[0], atol=1e-6)
    student = train_student(digits, subset, arch="small_cnn", recipe=recipe, split=digits_split,
                            teacher=digits_teacher, alpha=0.7, tau=4.0, seed=5, device=CPU)
    member = cohort.members[1]
    assert (student.val_acc, student.test_acc) == (member.val_acc, member.test_acc)
    assert [h["val_acc"] for h in student.history] == [h["val_acc"] for h in member.history]
    assert [h["train_loss"] for h in student.history] == pytest.approx([h["train_loss"] for h in member.history], rel=1e-6)


def test_a_student_and_a_cohort_resume_from_one_format(digits, digits_split, digits_teacher, fast_recipe, subset, tmp_path):
    """A student's per-epoch state is the cohort-of-one state: train_student and train_cohort resume
    from it alike, and both end as the uninterrupted student."""
    recipe = fast_recipe.replace(epochs=3)
    kwargs = dict(arch="small_cnn", recipe=recipe, split=digits_split, teacher=digits_teacher, seed=5, device=CPU)
    whole = train_student(digits, subset, alpha=0.7, tau=4.0, **kwargs)

    def stop_after_one(report):
        if report.epoch == 1:
            torch.save(report.state(), tmp_path / "student.pt")
            raise StopTraining

    train_student(digits, subset, alpha=0.7, tau=4.0, on_epoch=stop_after_one, **kwargs)
    state = torch.load(tmp_path / "student.pt", weights_only=True)
    assert state["format"] == STATE_FORMAT and state["epoch"] == 1 and len(state["members"]) == 1
    student = train_student(digits, subset, alpha=0.7, tau=4.0, resume=state, **kwargs)
    cohort = train_cohort(digits, subset, members=[Member(0.7, 4.0)], resume=state, **kwargs)
    assert student.val_acc == cohort.members[0].val_acc == whole.val_acc
    with pytest.raises(ValueError, match="another cohort"):  # the state names the student it belongs to
        train_student(digits, subset, alpha=0.3, tau=4.0, resume=state, **kwargs)


def _run_with_halving(digits, digits_split, digits_teacher, recipe, subset, members, halving, **kwargs):
    trained = defaultdict(set)  # member -> epochs in which it took optimiser steps
    epoch = {"now": 1}

    def on_report(report):
        epoch["now"] = report.epoch + 1
        if "on_report" in kwargs:
            kwargs["on_report"](report)

    extra = {k: v for k, v in kwargs.items() if k != "on_report"}
    result = _cohort(digits, digits_split, digits_teacher, recipe, subset, members, halving=halving,
                     on_step=lambda i, batch, logits: trained[i].add(epoch["now"]), on_report=on_report, **extra)
    return result, trained


def test_halving_stops_the_weak_members_and_never_the_baseline(digits, digits_split, digits_teacher, fast_recipe):
    subset = random_subset(digits_split.train_ids, 0.3, seed=0)  # 7 steps per epoch

    def baseline_that_learns_the_wrong_labels(logits, teacher_logits, y, alpha, tau, **kwargs):
        if alpha == 0:  # the worst member by far: halving must keep it all the same
            return kd_loss(logits, None, (y + 1) % 10, 0.0, tau, **kwargs)
        return kd_loss(logits, teacher_logits, y, alpha, tau, **kwargs)

    members = [Member(0.0), Member(0.2), Member(0.4), Member(0.6), Member(0.8), Member(1.0)]
    halving = Halving(rungs=(0.25, 0.5), keep=0.5)
    assert halving.rung_epochs(4) == [1, 2] and halving.rung_epochs(1) == [] and Halving((0.5, 0.9)).rung_epochs(2) == [1]
    reports = []
    result, trained = _run_with_halving(digits, digits_split, digits_teacher, fast_recipe.replace(epochs=4), subset,
                                        members, halving, loss=baseline_that_learns_the_wrong_labels, on_report=reports.append)
    status = {m.index: (m.status, m.stopped_epoch) for m in result.members}
    assert status[0] == ("completed", None)  # the baseline
    # rung 1 (after epoch 1): 5 candidates -> 3 go on; rung 2 (after epoch 2): 3 -> 2
    assert sorted(s for s in status.values() if s[0] == "stopped") == [("stopped", 1), ("stopped", 1), ("stopped", 2)]
    assert [m.status for m in result.members].count("completed") == 3
    assert [r.stopped for r in reports][2:] == [[], []]
    for rung, report in enumerate(reports[:2], start=1):
        assert len(report.stopped) == (2 if rung == 1 else 1) and 0 not in report.stopped
        alive = [i for i, r in enumerate(report.members) if r is not None and i != 0]
        kept = [i for i in alive if i not in report.stopped]
        key = lambda i: (-report.members[i].val_acc, report.members[i].val_loss)  # noqa: E731
        assert max(key(i) for i in kept) <= min(key(i) for i in report.stopped)
        assert report.members[0].val_acc <= min(report.members[i].val_acc for i in alive)  # worst, yet kept
    for m in result.members:
        # a stopped member costs nothing after its rung: no more steps, its history ends there
        assert trained[m.index] == set(range(1, m.epochs_run + 1))
        assert len(m.history) == m.epochs_run and m.stop_reason == ("halving" if m.status == "stopped" else None)
        assert m.val_acc == m.history[-1]["val_acc"]
    # nobody stopped without halving; stop() refuses the baseline
    with pytest.raises(ValueError, match="baseline"):
        _cohort(digits, digits_split, digits_teacher, fast_recipe.replace(epochs=1), subset, members[:2],
                on_report=lambda report: report.stop(0), test=False)
    with pytest.raises(ValueError, match="rungs"):
        Halving(rungs=(0.5, 1.0))


def test_resume_from_a_mid_run_state_equals_an_uninterrupted_run(digits, digits_split, digits_teacher, fast_recipe,
                                                                 subset, tmp_path):
    recipe = fast_recipe.replace(epochs=4)
    members = [Member(0.0), Member(0.3), Member(0.6), Member(0.9)]
    halving = Halving(rungs=(0.25, 0.75), keep=0.5)  # rungs after epochs 1 and 3: the interruption falls between
    full = _cohort(digits, digits_split, digits_teacher, recipe, subset, members, halving=halving)

    def stop_after_two(report):
        if report.epoch == 2:
            torch.save(report.state(), tmp_path / "cohort.pt")  # as a checkpoint would
            raise StopTraining

    interrupted = _cohort(digits, digits_split, digits_teacher, recipe, subset, members, halving=halving,
                          on_report=stop_after_two, test=False)
    assert {m.stop_reason for m in interrupted.members} >= {"interrupted"}
    state = torch.load(tmp_path / "cohort.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["members"]) == 4
    assert [m["alpha"] for m in state["member_specs"]] == [0.0, 0.3, 0.6, 0.9]
    assert sum(m["stopped_epoch"] is not None for m in state["members"]) == 1  # rung 1 stopped one of three

    resumed = _cohort(digits, digits_split, digits_teacher, recipe, subset, members, halving=halving, resume=state)
    for a, b in zip(full.members, resumed.members):
        assert (a.status, a.stopped_epoch, a.val_acc, a.test_acc) == (b.status, b.stopped_epoch, b.val_acc, b.test_acc)
        assert [h["val_acc"] for h in a.history] == [h["val_acc"] for h in b.history]
    for a, b in zip(full.models, resumed.models):
        assert _same_weights(a, b)
    with pytest.raises(ValueError, match="another cohort"):
        _cohort(digits, digits_split, digits_teacher, recipe, subset, members[:3], resume=state)
