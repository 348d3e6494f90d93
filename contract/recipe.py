"""The training recipe: every hyperparameter of one training run, in one frozen object.

A recipe is part of every artifact key and result row, so it converts to and from a plain dict. A
plain data class without torch, so planning a sweep (``--dry-run``) and the analysis never load it;
what a recipe's precision means on a device is ``trainables.device``. Its defaults are the
literature's recipe for CIFAR/SVHN (DeepCore's, which the paper built on): 200 epochs, SGD 0.1 /
momentum 0.9 / wd 5e-4 / nesterov, cosine, batch 128.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

SCHEDULES = ("cosine", "onecycle")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class Recipe:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # 'cosine' (per-step, to zero) or 'onecycle' (torch's OneCycleLR)
    warmup_epochs: float = 0.0  # linear warm-up before the cosine decay
    label_smoothing: float = 0.0
    augment: bool = True  # the dataset's crop/flip augmentation
    precision: str = "auto"  # 'auto': bf16 autocast on CUDA and on CPUs with native bf16, else fp32
    channels_last: bool = True
    compile: bool = False  # torch.compile the model
    eval_batch_size: int = 1024
    # Pruning shrinks an epoch with f: at f = 0.1 an epoch is a tenth of the steps. A run takes at least
    # this many optimisation steps (more epochs when the subset is small), so students on the smallest
    # subsets still train. 0: exactly ``epochs``.
    min_steps: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            problems.append("batch sizes must be >= 1")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must lie in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            problems.append("nesterov needs momentum > 0")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.warmup_epochs < self.epochs:
            problems.append(f"warmup_epochs must lie in [0, epochs), got {self.warmup_epochs}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.min_steps < 0:
            problems.append(f"min_steps must be >= 0, got {self.min_steps}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if problems:
            raise ValueError("invalid recipe: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    def epochs_for(self, steps_per_epoch: int) -> int:
        """The epochs a run with this many steps per epoch trains: ``epochs``, or more to reach
        ``min_steps``."""
        return max(self.epochs, -(-self.min_steps // max(1, steps_per_epoch)))

    @classmethod
    def from_dict(cls, values: dict) -> "Recipe":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown recipe fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes) -> "Recipe":
        return replace(self, **changes)
