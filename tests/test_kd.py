"""kd_loss against the formula written out from first principles, and the training loop's use of it.

The reference below is an independent float64 NumPy implementation of

    L = mean_i [ (1 - alpha) CE(y_i, s_i) + alpha tau^2 KL(softmax(t_i / tau) || softmax(s_i / tau)) ]

with log-softmax, cross-entropy (with label smoothing) and KL each spelled out; kd_loss uses torch's
cross_entropy and kl_div, so the two share no code.
"""

import copy
import math

import numpy as np
import pytest
import torch

import trainables.student
from conftest import CPU
from trainables.kd import kd_loss
from trainables.models import build_model
from trainables.student import train_student
from trainables.teacher import Teacher


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def reference_loss(s, t, y, alpha, tau, label_smoothing=0.0) -> float:
    s = np.asarray(s, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    y = np.asarray(y)
    classes = s.shape[1]
    target = (1 - label_smoothing) * np.eye(classes)[y] + label_smoothing / classes
    ce = -(target * log_softmax(s)).sum(axis=1)
    log_q, log_r = log_softmax(t / tau), log_softmax(s / tau)  # teacher's and student's soft targets
    kl = (np.exp(log_q) * (log_q - log_r)).sum(axis=1)
    return float(((1 - alpha) * ce + alpha * tau**2 * kl).mean())


def reference_gradient(s, t, y, alpha, tau) -> np.ndarray:
    """dL/ds by hand: (1 - alpha) (softmax(s) - onehot(y)) + alpha tau (softmax(s/tau) - softmax(t/tau)),
    over the batch size (the tau^2 of the loss times the 1/tau of the inner derivative)."""
    s, t = np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64)
    onehot = np.eye(s.shape[1])[np.asarray(y)]
    p, r, q = np.exp(log_softmax(s)), np.exp(log_softmax(s / tau)), np.exp(log_softmax(t / tau))
    return ((1 - alpha) * (p - onehot) + alpha * tau * (r - q)) / len(s)


def random_batch(seed, n=6, classes=5, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    s = torch.randn(n, classes, generator=generator) * scale
    t = torch.randn(n, classes, generator=generator) * scale
    y = torch.randint(0, classes, (n,), generator=generator)
    return s, t, y


@pytest.mark.parametrize("alpha,tau", [(0.5, 1.0), (0.25, 2.0), (0.9, 4.0), (0.1, 0.5), (0.7, 10.0)])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_formula_from_first_principles(alpha, tau, seed):
    s, t, y = random_batch(seed)
    assert kd_loss(s, t, y, alpha=alpha, tau=tau).item() == pytest.approx(reference_loss(s, t, y, alpha, tau), rel=1e-5)


@pytest.mark.parametrize("alpha,tau", [(0.0, 1.0), (0.5, 4.0), (1.0, 2.0)])
def test_label_smoothing_applies_to_the_hard_term_only(alpha, tau):
    s, t, y = random_batch(3)
    got = kd_loss(s, t, y, alpha=alpha, tau=tau, label_smoothing=0.1).item()
    assert got == pytest.approx(reference_loss(s, t, y, alpha, tau, label_smoothing=0.1), rel=1e-5)


@pytest.mark.parametrize("alpha,tau", [(0.5, 1.0), (0.25, 2.0), (0.8, 3.0)])
def test_two_class_case_by_hand(alpha, tau):
    """Student logits (1, 0), teacher logits (0, 1), label 0:
    CE = -log(e / (e + 1)) = log(1 + e^-1); at temperature tau the log-ratio log(q / r) is -1/tau on
    class 0 and +1/tau on class 1, so KL(q || r) = (q_1 - q_0) / tau = tanh(1 / (2 tau)) / tau."""
    s, t, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    ce = math.log(1 + math.exp(-1))
    kl = math.tanh(1 / (2 * tau)) / tau
    assert kd_loss(s, t, y, alpha=alpha, tau=tau).item() == pytest.approx((1 - alpha) * ce + alpha * tau**2 * kl, rel=1e-6)


def test_endpoints_are_ce_and_scaled_kl():
    s, t, y = random_batch(4)
    # alpha = 0: cross-entropy alone, whatever the teacher says (or when there is none)
    ce = reference_loss(s, t, y, alpha=0.0, tau=3.0)
    assert kd_loss(s, t, y, alpha=0.0, tau=3.0).item() == pytest.approx(ce, rel=1e-6)
    assert kd_loss(s, -5 * t, y, alpha=0.0, tau=3.0).item() == pytest.approx(ce, rel=1e-6)
    assert kd_loss(s, None, y, alpha=0.0, tau=3.0).item() == pytest.approx(ce, rel=1e-6)
    # alpha = 1: tau^2 KL alone, whatever the labels say
    kl = reference_loss(s, t, y, alpha=1.0, tau=3.0)
    assert kd_loss(s, t, y, alpha=1.0, tau=3.0).item() == pytest.approx(kl, rel=1e-6)
    assert kd_loss(s, t, (y + 1) % s.shape[1], alpha=1.0, tau=3.0).item() == pytest.approx(kl, rel=1e-6)


def test_alpha_zero_needs_no_teacher_and_alpha_positive_does():
    s, _, y = random_batch(5)
    assert kd_loss(s, None, y, alpha=0.0, tau=4.0).item() == pytest.approx(reference_loss(s, s, y, 0.0, 4.0), rel=1e-6)
    with pytest.raises(ValueError, match="teacher logits"):
        kd_loss(s, None, y, alpha=0.5, tau=4.0)


def test_batch_mean_and_identical_teacher_gives_zero_kl():
    s, t, y = random_batch(6, n=5, classes=7)
    # the batch loss is the mean of the per-example losses
    per_example = torch.stack([kd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], 0.6, 2.0) for i in range(5)])
    assert kd_loss(s, t, y, 0.6, 2.0).item() == pytest.approx(per_example.mean().item(), rel=1e-6)
    # a teacher equal to the student contributes nothing
    assert kd_loss(s, s, y, 1.0, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, s, y, 0.3, 2.0).item() == pytest.approx(0.7 * reference_loss(s, s, y, 0.0, 2.0), rel=1e-6)


@pytest.mark.parametrize("alpha,tau", [(0.0, 4.0), (0.7, 4.0), (1.0, 2.0)])
def test_student_gradient_is_the_derivative_by_hand(alpha, tau):
    s, t, y = random_batch(7)
    s.requires_grad_(True)
    kd_loss(s, t, y, alpha, tau).backward()
    assert np.allclose(s.grad.numpy(), reference_gradient(s.detach(), t, y, alpha, tau), rtol=1e-4, atol=1e-7)


def test_gradient_flows_to_student_only(digits, digits_split, fast_recipe, monkeypatch):
    """A training step with alpha > 0 puts a gradient on the student's logits and none on the teacher:
    its logits carry no graph, its parameters get no .grad, and its weights and batch-norm statistics
    are left as they were (it runs in eval mode), even when its parameters require grad."""
    torch.manual_seed(0)
    teacher_model = build_model("small_cnn", digits.num_classes, digits.in_channels)
    assert all(p.requires_grad for p in teacher_model.parameters())
    meta = {"dataset": digits.name, "num_classes": digits.num_classes,
            "split": {"val_size": digits_split.val_size, "seed": digits_split.seed}}
    teacher = Teacher(model=teacher_model, meta=meta)
    before = copy.deepcopy(teacher_model.state_dict())

    seen = []  # (student logits requires grad, teacher logits requires grad, gradient on the student's logits)
    real_kd_loss = trainables.student.kd_loss

    def watched_kd_loss(student_logits, teacher_logits, targets, alpha, tau, **kwargs):
        record = {"student": student_logits.requires_grad, "teacher": teacher_logits.requires_grad, "grad": None}
        seen.append(record)
        if student_logits.requires_grad:
            student_logits.register_hook(lambda g: record.__setitem__("grad", g.detach().clone()))
        return real_kd_loss(student_logits, teacher_logits, targets, alpha, tau, **kwargs)

    monkeypatch.setattr(trainables.student, "kd_loss", watched_kd_loss)
    subset = digits_split.train_ids[:128]
    train_student(digits, subset, arch="small_cnn", recipe=fast_recipe.replace(epochs=1), split=digits_split,
                  teacher=teacher, alpha=0.8, tau=4.0, seed=0, device=CPU)

    assert len(seen) == math.ceil(len(subset) / fast_recipe.batch_size)  # one call per training step
    assert all(r["student"] for r in seen) and not any(r["teacher"] for r in seen)
    assert all(r["grad"] is not None and torch.isfinite(r["grad"]).all() and r["grad"].abs().sum() > 0 for r in seen)
    assert [n for n, p in teacher_model.named_parameters() if p.grad is not None] == []
    after = teacher_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the teacher's weights or statistics changed"


def test_bf16_logits_are_computed_in_float32():
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    full = kd_loss(s, t, y, 0.5, 4.0)
    half = kd_loss(s.bfloat16(), t.bfloat16(), y, 0.5, 4.0)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=0.05)


@pytest.mark.parametrize("alpha,tau", [(-0.1, 1.0), (1.1, 1.0), (0.5, 0.0), (0.5, -2.0)])
def test_invalid_alpha_or_tau(alpha, tau):
    s, t, y = random_batch(8)
    with pytest.raises(ValueError, match="alpha|tau"):
        kd_loss(s, t, y, alpha=alpha, tau=tau)
