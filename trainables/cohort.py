"""Cohorts: K students of one cell trained together, on one stream of batches, sharing the teacher.

    from trainables.cohort import Member, Halving, train_cohort
    result = train_cohort(dataset, subset_ids, arch="small_cnn", recipe=recipe, split=split,
                          teacher=teacher, members=[Member(0.0), Member(0.5), Member(0.9, tau=2.0)],
                          seed=3, device="cpu", halving=Halving())

Every member is built from the same initialisation seed (identical weights) and trained on the same
batches (the same ids, order and augmentation: one loader, each batch used by every member), so the
members differ only in (alpha, tau) and their differences are paired comparisons. Each member has its
own optimiser and schedule. The teacher runs once per batch for all the members with alpha > 0 that
are still training, and not at all when none is. ``trainables.train.fit_many`` runs the training
step (the same one as every other run; ``trainables.fused.fit_fused`` when fused); a student alone (``trainables.student.train_student``) is a
cohort of one.

The members are trained one after another on each batch (a loop: ``trainables.train.fit_many``) or
as one horizontally fused model (``trainables.fused``, as HFTA does: grouped convolutions, K*C-channel
batch norms, batched linear heads, one forward, backward and SGD step for all): the same results to
float tolerance and the same checkpoints either way (``tests/test_fused.py``). ``fused=None`` (the
default) fuses a cohort of two or more on CUDA and never on a CPU. On the CPU (2 cores, one thread),
``bench/bench_cohort.py --parts fused`` measured fused / loop speed (CPU time per member-step of whole
cohorts, validation and test included) of 1.04x, 1.08x and 1.06x at K = 2, 4 and 8 for small_cnn on
digits (smoke recipe, bf16 autocast; 1.04x at K = 8 in fp32), but 0.94x, 0.90x and 0.90x for resnet20
on the CIFAR-10 subset: a CPU's convolutions are compute-bound, fusing saves only per-operation
overhead, and grouped convolutions can be slower than K plain ones (an earlier ``stack_module_state``
+ ``vmap`` model ran at 0.84x). On a GPU a small model leaves most of the device idle between
kernels, which is HFTA's case for fusing; that default is not yet measured here
(``bench/bench_cohort.py --parts fused --device cuda``; the rule is ``fused_by_default``). A fused
cohort holds the activations of all its members at once (K times the loop's peak). Architectures the
fused path does not support (torchvision's ResNets) train in the loop.

Successive halving (``halving=Halving(...)``): after the rung epochs, the members with alpha > 0 that
are still training are ranked by validation accuracy and only the best ``keep`` fraction of them goes
on; the others stop at once (status ``"stopped"``, ``stopped_epoch``). An alpha = 0 member, the
baseline, is never stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from contract import DEFAULT_TAU
from trainables.datasets import Dataset
from trainables.splits import Split
from trainables.fused import arch_fusion_problem, fit_fused
from trainables.kd import check_alpha_tau, kd_loss
from trainables.loader import Batch
from trainables.device import resolve_device
from contract.recipe import Recipe
from trainables.teacher import Teacher
from trainables.train import EpochReport, EpochReports, train_many_on_ids

STATE_FORMAT = "kdsweep.cohort/1"


@dataclass(frozen=True)
class Member:
    """One student of a cohort: its distillation weight and temperature."""

    alpha: float
    tau: float = DEFAULT_TAU

    def __post_init__(self) -> None:
        check_alpha_tau(self.alpha, self.tau)

    @property
    def is_baseline(self) -> bool:
        return self.alpha == 0


@dataclass(frozen=True)
class Halving:
    """Successive halving over a cohort's members.

    After each rung (a fraction of the run's epochs, rounded up to a whole epoch; a rung at or after
    the last epoch is ignored), the members with alpha > 0 still training are ranked by validation
    accuracy (ties: lower validation loss, then member order) and ``ceil(keep * n)`` of them go on;
    alpha = 0 members are never stopped and do not count in ``n``.
    """

    rungs: tuple[float, ...] = (0.25, 0.5)
    keep: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "rungs", tuple(float(r) for r in self.rungs))
        if not all(0 < r < 1 for r in self.rungs):
            raise ValueError(f"halving rungs must lie in (0, 1), got {self.rungs}")
        if not 0 < self.keep < 1:
            raise ValueError(f"halving keep must lie in (0, 1), got {self.keep}")

    def rung_epochs(self, epochs: int) -> list[int]:
        return sorted({max(1, math.ceil(r * epochs - 1e-9)) for r in self.rungs} - {epochs})

    def survivors(self, candidates: list[tuple[int, float, float]]) -> list[int]:
        """The member indices kept from ``(index, val_acc, val_loss)`` candidates."""
        ranked = sorted(candidates, key=lambda c: (-c[1], c[2], c[0]))
        return [c[0] for c in ranked[: math.ceil(self.keep * len(candidates))]]


@dataclass
class MemberResult:
    index: int
    alpha: float
    tau: float
    status: str  # "completed": every epoch; "stopped": stopped early (see stop_reason)
    epochs_run: int
    steps_run: int
    stopped_epoch: int | None  # the last epoch it trained, when stopped
    stop_reason: str | None  # "halving", a reason given to CohortReport.stop, or "interrupted" (StopTraining)
    val_acc: float | None
    test_acc: float | None
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CohortResult:
    arch: str
    seed: int
    num_train: int
    epochs: int  # the epochs a member that is never stopped trains
    steps_per_epoch: int
    members: list[MemberResult]
    teacher_forwards: int  # teacher forwards on training batches in this call (not before a resume)
    seconds: float  # wall time of this call
    models: list[nn.Module] = field(default_factory=list, repr=False, compare=False)
    fused: bool = False  # trained as one fused model (trainables.fused), else one member after another

    def to_dict(self) -> dict:
        """Everything but the models (``asdict`` would deep-copy them)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("models", "members")}
        return values | {"members": [m.to_dict() for m in self.members]}


@dataclass
class CohortReport:
    """One epoch of a cohort, after halving: passed to ``on_report``.

    ``members[i]`` is member i's ``EpochReport`` (``val_acc``, ``train_loss``, ...), or None when it
    was stopped before this epoch; ``stopped`` lists the members stopped after this epoch (by halving
    or by ``stop``). ``state()`` is the cohort's resume state after this epoch, for
    ``train_cohort(resume=...)``: plain tensors and values, loadable with ``weights_only=True``.
    ``stop(i, reason)`` stops member i now (an external pruner); a baseline cannot be stopped.
    Raising ``trainables.train.StopTraining`` from ``on_report`` ends the whole cohort.
    """

    epoch: int
    epochs: int
    members: list[EpochReport | None]
    stopped: list[int]
    seconds: float
    state: Callable[[], dict] = field(repr=False, compare=False)
    stop: Callable[..., None] = field(repr=False, compare=False)

    @property
    def val_acc(self) -> list[float | None]:
        return [None if report is None else report.val_acc for report in self.members]


def check_subset(subset_ids: np.ndarray, split: Split) -> np.ndarray:
    """The subset must be distinct training-split ids: never a validation example."""
    subset_ids = np.asarray(subset_ids, dtype=np.int64)
    if subset_ids.ndim != 1 or len(subset_ids) == 0:
        raise ValueError("the student's subset must be a non-empty 1-D array of example ids")
    if len(np.unique(subset_ids)) != len(subset_ids):
        raise ValueError("the student's subset repeats example ids")
    outside = np.setdiff1d(subset_ids, split.train_ids)
    if len(outside):
        raise ValueError(
            f"{len(outside)} subset ids are not in the training split (validation examples or out of "
            f"range), for example {outside[:5].tolist()}"
        )
    return subset_ids


class SharedTeacher:
    """The teacher's logits for the current batch, computed at most once per batch (in eval mode, no
    grad) whatever the number of members asking."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.forwards = 0
        self._batch: Batch | None = None
        self._logits: torch.Tensor | None = None

    def logits(self, batch: Batch) -> torch.Tensor:
        if batch is not self._batch:
            with torch.no_grad():
                self._logits = self.model(batch.x)
            self._batch = batch
            self.forwards += 1
        return self._logits


def as_members(members: Sequence[Member | tuple[float, float]]) -> list[Member]:
    members = [m if isinstance(m, Member) else Member(*m) for m in members]
    if not members:
        raise ValueError("a cohort needs at least one member")
    return members


# Devices where a cohort of two or more is fused by default (``train_cohort(fused=None)``); see the
# module docstring for the measurements behind it.
FUSED_BY_DEFAULT_ON = frozenset({"cuda"})


def fused_by_default(device: torch.device, k: int) -> bool:
    """Whether ``train_cohort(fused=None)`` fuses a cohort of ``k`` on ``device`` (when the architecture
    allows it): on the devices of ``FUSED_BY_DEFAULT_ON`` from two members up; a cohort of one is
    never fused (nothing to share)."""
    return k > 1 and device.type in FUSED_BY_DEFAULT_ON


def _check_resume(resume: dict, arch: str, seed: int, members: list[Member]) -> None:
    if resume.get("format") != STATE_FORMAT:
        raise ValueError(f"not a cohort state (format {resume.get('format')!r}, expected {STATE_FORMAT!r})")
    recorded = [Member(m["alpha"], m["tau"]) for m in resume["member_specs"]]
    if (resume["arch"], resume["seed"], recorded) != (arch, seed, members):
        raise ValueError(
            f"the resume state is of another cohort (arch {resume['arch']!r}, seed {resume['seed']}, members "
            f"{[(m.alpha, m.tau) for m in recorded]}), not of this one (arch {arch!r}, seed {seed}, members "
            f"{[(m.alpha, m.tau) for m in members]})"
        )


def train_cohort(
    dataset: Dataset,
    subset_ids: np.ndarray,
    *,
    arch: str,
    recipe: Recipe,
    split: Split,
    teacher: Teacher | None,
    members: Sequence[Member | tuple[float, float]],
    seed: int,
    device: torch.device | str = "auto",
    on_report: Callable[[CohortReport], None] | None = None,
    resume: dict | None = None,
    halving: Halving | None = None,
    on_step: Callable[[int, Batch, torch.Tensor], None] | None = None,
    test: bool = True,
    loss: Callable = kd_loss,
    fused: bool | None = None,
) -> CohortResult:
    """Train one student of ``arch`` per member on ``subset_ids``, together (see the module docstring).

    ``on_report(CohortReport)`` runs after every epoch (after halving); ``on_step(i, batch, logits)``
    after member i's optimiser step. ``resume``: a ``CohortReport.state()`` of the same call (same arch,
    seed and members); training continues after that epoch and ends as an uninterrupted run would.
    ``halving``: successive halving over the members (off by default). ``loss``: the distillation loss
    (``kd_loss``'s signature). ``fused``: train the members as one horizontally fused model
    (``trainables.fused``; True), one after another (False), or choose (None: ``fused_by_default``);
    an architecture the fused path does not support is trained by the loop whatever ``fused`` says
    (``CohortResult.fused`` tells which ran). Both give the same results, to float tolerance. Returns
    every member's status, final validation and test accuracy and history, and the trained models.
    """
    start = time.perf_counter()
    members = as_members(members)
    subset_ids = check_subset(subset_ids, split)
    device = resolve_device(device) if isinstance(device, str) else device
    if resume is not None:
        _check_resume(resume, arch, seed, members)
    if halving is not None and len(split.val_ids) == 0:
        raise ValueError("successive halving ranks members by validation accuracy: it needs a validation split")
    shared = None
    if any(m.alpha > 0 for m in members):
        if teacher is None:
            raise ValueError(f"alpha={max(m.alpha for m in members)} needs a teacher")
        teacher.check_compatible(dataset, split)
        shared = SharedTeacher(teacher.model.to(device).eval())

    def loss_fn(member: Member):
        def member_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
            if member.alpha == 0:  # plain training: this member needs no teacher forward
                return loss(logits, None, batch.y, 0.0, member.tau, label_smoothing=recipe.label_smoothing)
            return loss(logits, shared.logits(batch), batch.y, member.alpha, member.tau,
                        label_smoothing=recipe.label_smoothing)

        return member_loss

    def cohort_state(reports: EpochReports) -> dict:
        return {
            "format": STATE_FORMAT,
            "arch": arch,
            "seed": seed,
            "member_specs": [{"alpha": m.alpha, "tau": m.tau} for m in members],
            **reports.state(),
        }

    steps_per_epoch = math.ceil(len(subset_ids) / recipe.batch_size)  # the loader's len()
    epochs = recipe.epochs_for(steps_per_epoch)
    rungs = set(halving.rung_epochs(epochs)) if halving is not None else set()

    def on_epoch(reports: EpochReports) -> None:
        before = set(reports.active())
        if reports.epoch in rungs:
            candidates = [
                (i, reports.reports[i].val_acc, reports.reports[i].val_loss)
                for i in sorted(before)
                if not members[i].is_baseline
            ]
            keep = set(halving.survivors(candidates))
            for i, _, _ in candidates:
                if i not in keep:
                    reports.stop(i, "halving")
        if on_report is None:
            return

        def stop(index: int, reason: str = "stopped") -> None:
            if members[index].is_baseline:
                raise ValueError(f"member {index} is the alpha = 0 baseline: it is never stopped")
            reports.stop(index, reason)

        report = CohortReport(
            epoch=reports.epoch, epochs=reports.epochs, members=list(reports.reports),
            stopped=sorted(before - set(reports.active())), seconds=reports.seconds,
            state=lambda: cohort_state(reports), stop=stop,
        )
        on_report(report)

    if fused is None:
        fused = fused_by_default(device, len(members))
    if fused and arch_fusion_problem(arch, dataset.num_classes, dataset.in_channels) is not None:
        fused = False  # not fusable: the loop
    runs = train_many_on_ids(
        dataset, arch=arch, train_ids=subset_ids, val_ids=split.val_ids, recipe=recipe, seed=seed, device=device,
        loss_fns=[loss_fn(m) for m in members], on_epoch=on_epoch, on_step=on_step, test=test, resume=resume,
        fit=fit_fused if fused else None,
    )
    results = []
    for index, (member, run) in enumerate(zip(members, runs)):
        epochs_run = len(run.history)
        completed = epochs_run == epochs and run.stopped_epoch is None
        results.append(
            MemberResult(
                index=index, alpha=member.alpha, tau=member.tau,
                status="completed" if completed else "stopped",
                epochs_run=epochs_run, steps_run=epochs_run * steps_per_epoch,
                stopped_epoch=None if completed else epochs_run,
                stop_reason=None if completed else (run.stop_reason or "interrupted"),
                val_acc=run.val.acc if run.val else None, test_acc=run.test.acc if run.test else None,
                history=[report.to_dict() for report in run.history],
            )
        )
    return CohortResult(
        arch=arch, seed=seed, num_train=len(subset_ids), epochs=epochs, steps_per_epoch=steps_per_epoch,
        members=results, teacher_forwards=shared.forwards if shared else 0,
        seconds=time.perf_counter() - start, models=[run.model for run in runs], fused=fused,
    )
