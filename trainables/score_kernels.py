"""Per-model kernels of the pruning scores: EL2N and GraNd per example, forgetting events counted
from per-batch predictions, and Feldman and Zhang's memorization estimator. Pure tensor code, used by
the scorers (``trainables.scorers``) and benchmarked apart (``bench/bench_grand.py``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def el2n_scores(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """EL2N: ``|| softmax(model(x)) - onehot(y) ||_2`` per example, with the model in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        probs = F.softmax(model(x).float(), dim=1)
        out.append((probs - F.one_hot(y, probs.shape[1]).float()).norm(dim=1))
    model.train(was_training)
    return torch.cat(out).cpu().numpy().astype(np.float64)


def grand_scores(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, chunk_size: int = 64) -> np.ndarray:
    """GraNd: the L2 norm of each example's cross-entropy gradient w.r.t. all parameters.

    Batch-norm layers use their running statistics (eval mode), so an example's gradient does not
    depend on the others in its batch. Per-example gradients come from ``vmap(grad(loss))`` over
    ``functional_call``, ``chunk_size`` examples at a time (memory grows as chunk * parameters).
    """
    from torch.func import functional_call, grad, vmap

    was_training = model.training
    model.eval()
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def loss_of_one(parameters, x, y):
        logits = functional_call(model, (parameters, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(logits.float(), y.unsqueeze(0))

    per_example_grads = vmap(grad(loss_of_one), in_dims=(None, 0, 0))
    out = []
    for x, y in zip(images.split(chunk_size), labels.split(chunk_size)):
        grads = per_example_grads(params, x, y)
        squared = sum(g.pow(2).flatten(1).sum(1) for g in grads.values())
        out.append(squared.sqrt())
    model.train(was_training)
    return torch.cat(out).detach().cpu().numpy().astype(np.float64)


class ForgettingTracker:
    """Counts forgetting events per example from a stream of (positions, correct) presentations.

    An event is a presentation at which the example is misclassified after having been classified
    correctly at its previous presentation. ``counts()`` gives never-learned examples their number
    of presentations, more than any learned example can reach (at most half its presentations).
    """

    def __init__(self, num_examples: int, device: torch.device | str = "cpu"):
        self.previous = torch.zeros(num_examples, dtype=torch.bool, device=device)
        self.learned = torch.zeros(num_examples, dtype=torch.bool, device=device)
        self.events = torch.zeros(num_examples, dtype=torch.long, device=device)
        self.presentations = torch.zeros(num_examples, dtype=torch.long, device=device)

    def update(self, positions: torch.Tensor, correct: torch.Tensor) -> None:
        self.events[positions] += (self.previous[positions] & ~correct).long()
        self.learned[positions] |= correct
        self.previous[positions] = correct
        self.presentations[positions] += 1

    def counts(self) -> np.ndarray:
        counts = torch.where(self.learned, self.events, self.presentations)
        return counts.cpu().numpy().astype(np.float64)


def memorization_estimate(in_subset: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Feldman and Zhang's estimator from K runs: (K, N) masks of membership and correctness.

    mem(i) = mean(correct[k, i] | i in run k's subset) - mean(correct[k, i] | i not in it); an example
    that was never (or always) in a subset has no estimate and scores 0.
    """
    in_subset, correct = np.asarray(in_subset, bool), np.asarray(correct, bool)
    n_in, n_out = in_subset.sum(0), (~in_subset).sum(0)
    p_in = (correct & in_subset).sum(0) / np.maximum(n_in, 1)
    p_out = (correct & ~in_subset).sum(0) / np.maximum(n_out, 1)
    return np.where((n_in > 0) & (n_out > 0), p_in - p_out, 0.0)

