"""The knowledge-distillation loss, with alpha weighting the distillation term (the paper's alpha)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def check_alpha_tau(alpha: float, tau: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    targets: torch.Tensor,
    alpha: float,
    tau: float,
    *,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    r"""Distillation loss, averaged over the batch:

    .. math::
        L = (1 - \alpha)\,\mathrm{CE}(y, s) + \alpha\,\tau^2\,
            \mathrm{KL}\big(\mathrm{softmax}(t/\tau)\,\|\,\mathrm{softmax}(s/\tau)\big)

    ``alpha`` weights the distillation term (torchdistill's ``alpha`` weights the CE term instead);
    the ``tau^2`` factor keeps the soft-target gradients on the scale of the hard-target ones
    (Hinton et al., 2015). With ``alpha == 0`` the teacher logits are not needed and may be None.
    The arithmetic is done in float32 whatever the logits' dtype (bf16 softmaxes lose the tail).
    """
    check_alpha_tau(alpha, tau)
    student = student_logits.float()
    ce = F.cross_entropy(student, targets, label_smoothing=label_smoothing) if alpha < 1 else student.new_zeros(())
    if alpha == 0:
        return ce
    if teacher_logits is None:
        raise ValueError("alpha > 0 needs teacher logits")
    kl = F.kl_div(
        F.log_softmax(student / tau, dim=1),
        F.log_softmax(teacher_logits.detach().float() / tau, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - alpha) * ce + alpha * tau**2 * kl
