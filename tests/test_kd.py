import math

import pytest
import torch
import torch.nn.functional as F

from trainables.kd import kd_loss

# Hand computation for two classes, student logits s = (1, 0), teacher logits t = (0, 1), label 0:
#   CE = -log(e / (e + 1)) = log(1 + 1/e)                       = 0.31326168751822286
#   at temperature tau the log-ratio log(p_t / p_s) is -1/tau on class 0 and +1/tau on class 1, so
#   KL(p_t || p_s) = (1/tau) * (p_t[1] - p_t[0]) = (1/tau) * tanh(1 / (2 tau))
#   tau = 1: KL = tanh(0.5)       = 0.46211715726000974
#   tau = 2: KL = tanh(0.25) / 2  = 0.12245934
CE = math.log(1 + math.exp(-1))
S = torch.tensor([[1.0, 0.0]])
T = torch.tensor([[0.0, 1.0]])
Y = torch.tensor([0])


def kl(tau):
    return math.tanh(1 / (2 * tau)) / tau


def test_golden_values():
    assert CE == pytest.approx(0.31326168751822286)
    assert kl(1) == pytest.approx(0.46211715726000974)
    # alpha = 0.5, tau = 1: 0.5 * 0.3132617 + 0.5 * 0.4621172
    assert kd_loss(S, T, Y, alpha=0.5, tau=1.0).item() == pytest.approx(0.38768942, abs=1e-6)
    # alpha = 0.25, tau = 2: 0.75 * 0.3132617 + 0.25 * 4 * 0.1224593
    assert kd_loss(S, T, Y, alpha=0.25, tau=2.0).item() == pytest.approx(0.35740560, abs=1e-6)
    assert kd_loss(S, T, Y, alpha=0.25, tau=2.0).item() == pytest.approx(0.75 * CE + 0.25 * 4 * kl(2), abs=1e-6)


def test_endpoints_are_ce_and_scaled_kl():
    assert kd_loss(S, T, Y, alpha=0.0, tau=3.0).item() == pytest.approx(CE, abs=1e-6)
    assert kd_loss(S, T, Y, alpha=1.0, tau=3.0).item() == pytest.approx(9 * kl(3), abs=1e-6)


def test_alpha_zero_needs_no_teacher_and_alpha_positive_does():
    assert kd_loss(S, None, Y, alpha=0.0, tau=4.0).item() == pytest.approx(CE, abs=1e-6)
    with pytest.raises(ValueError, match="teacher logits"):
        kd_loss(S, None, Y, alpha=0.5, tau=4.0)


def test_batch_mean_and_identical_teacher_gives_zero_kl():
    torch.manual_seed(0)
    s = torch.randn(5, 7)
    y = torch.randint(0, 7, (5,))
    # the batch loss is the mean of the per-example losses
    per_example = torch.stack([kd_loss(s[i : i + 1], s[i : i + 1].flip(1), y[i : i + 1], 0.6, 2.0) for i in range(5)])
    assert kd_loss(s, s.flip(1), y, 0.6, 2.0).item() == pytest.approx(per_example.mean().item(), abs=1e-6)
    # a teacher equal to the student contributes nothing
    assert kd_loss(s, s, y, 1.0, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, s, y, 0.3, 2.0).item() == pytest.approx(0.7 * F.cross_entropy(s, y).item(), abs=1e-6)


def test_gradient_flows_to_student_only():
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    kd_loss(s, t.detach(), torch.tensor([0, 1, 2, 0]), 0.7, 4.0).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


def test_bf16_logits_are_computed_in_float32():
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    full = kd_loss(s, t, y, 0.5, 4.0)
    half = kd_loss(s.bfloat16(), t.bfloat16(), y, 0.5, 4.0)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=0.05)


@pytest.mark.parametrize("alpha,tau", [(-0.1, 1.0), (1.1, 1.0), (0.5, 0.0), (0.5, -2.0)])
def test_invalid_alpha_or_tau(alpha, tau):
    with pytest.raises(ValueError, match="alpha|tau"):
        kd_loss(S, T, Y, alpha=alpha, tau=tau)
