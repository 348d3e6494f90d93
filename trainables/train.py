"""One training loop for teachers, students and scoring runs, and evaluation.

``fit`` runs SGD with the recipe's schedule and precision over a loader of ``Batch``es, calls
``on_step`` after every optimiser step (scores such as forgetting need per-batch predictions with
their example ids) and ``on_epoch`` after every epoch (the sweep reports to Ray Tune from there).
Raising ``StopTraining`` from a callback ends training after that step or epoch.

``fit`` is ``fit_many`` of one model: ``fit_many`` trains several models on one stream of batches,
each with its own loss, optimiser and schedule (the cohorts of ``trainables.cohort``); it is the only
implementation of the training step.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.loader import Batch, Loader, make_loader
from trainables.models import build_model
from trainables.device import autocast
from contract.recipe import Recipe
from contract.seeding import derive_seed

LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


class StopTraining(Exception):
    """Raised by a callback to end training early (the epochs run so far are kept)."""


@dataclass
class EpochReport:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_acc: float
    lr: float
    seconds: float  # wall time of this epoch, evaluation included
    val_acc: float | None = None
    val_loss: float | None = None
    # ``state()`` returns everything needed to resume this model after this epoch, in the one resume
    # format (``fit_many``'s, of this model alone: ``{"epoch": e, "members": [its state]}``): plain
    # tensors and values, so it can be saved and read back with ``weights_only=True``.
    state: Callable[[], dict] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "state"}


@dataclass
class EvalResult:
    acc: float
    loss: float
    n: int


def prepare_model(model: nn.Module, recipe: Recipe, device: torch.device) -> nn.Module:
    model = model.to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int):
    """A per-step learning-rate schedule over ``recipe.epochs_for(steps_per_epoch) * steps_per_epoch`` steps."""
    total = recipe.epochs_for(steps_per_epoch) * steps_per_epoch
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=total, cycle_momentum=False
        )
    warmup = int(round(recipe.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@dataclass
class EpochReports:
    """One epoch of ``fit_many``: a report per model, ``None`` for a model stopped before this epoch.

    ``state()`` is everything needed to resume all the models after this epoch (see
    ``fit_many(resume=...)``); ``stop(i, reason)`` stops model ``i`` after this epoch: it trains no more
    and its history ends here.
    """

    epoch: int  # 1-based
    epochs: int
    reports: list[EpochReport | None]
    seconds: float  # wall time of the epoch for all the models, evaluation included
    state: Callable[[], dict] = field(repr=False, compare=False)
    stop: Callable[..., None] = field(repr=False, compare=False)
    is_stopped: Callable[[int], bool] = field(repr=False, compare=False)

    def active(self) -> list[int]:
        """The models trained this epoch and not stopped (so far) after it."""
        return [i for i, report in enumerate(self.reports) if report is not None and not self.is_stopped(i)]


@dataclass
class Fitted:
    """What ``fit_many`` returns for each model."""

    history: list[EpochReport]
    stopped_epoch: int | None = None  # the epoch after which it was stopped; None: never stopped
    stop_reason: str | None = None


class _Trainee:
    """One model of ``fit_many`` with its optimiser, schedule, loss and history."""

    def __init__(self, model: nn.Module, recipe: Recipe, steps_per_epoch: int, loss_fn: LossFn | None):
        if loss_fn is None:

            def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
                return F.cross_entropy(logits.float(), batch.y, label_smoothing=recipe.label_smoothing)

        self.model = model
        self.forward = torch.compile(model) if recipe.compile else model
        self.loss_fn = loss_fn
        self.optimizer = make_optimizer(model, recipe)
        self.scheduler = make_scheduler(self.optimizer, recipe, steps_per_epoch)
        self.history: list[EpochReport] = []
        self.stopped_epoch: int | None = None
        self.stop_reason: str | None = None

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        # A copy: torch's optimiser keeps the given tensors as its buffers when they are already on the
        # right device and trains them in place, which would change the caller's state (a second
        # resume from the same state would start elsewhere).
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = [EpochReport(**report) for report in state["history"]]
        self.stopped_epoch = state.get("stopped_epoch")
        self.stop_reason = state.get("stop_reason")

    def state(self, epoch: int) -> dict:
        """``fit``'s resume state (plus when and why the model was stopped)."""
        return {
            "epoch": epoch,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "history": [report.to_dict() for report in self.history],
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason,
        }


# Trains the running (index, trainee) pairs on one epoch of the loader's batches; returns each one's
# summed loss and correct count (in ``running``'s order), the examples seen, and whether a
# ``StopTraining`` ended the epoch.
EpochTrainer = Callable[..., "tuple[list[float], list[int], int, bool]"]


def train_epoch(running: list, train_loader: Loader, recipe: Recipe, *, device: torch.device,
                on_step: Callable[[int, Batch, torch.Tensor], None] | None = None) -> tuple[list[float], list[int], int, bool]:
    """``fit_many``'s epoch: every batch trains each running model in turn (forward, its loss,
    backward, its optimiser and schedule step)."""
    # Sums stay on the device: one host sync per epoch, not per step.
    loss_sums = torch.zeros(len(running), device=device)
    corrects = torch.zeros(len(running), device=device, dtype=torch.long)
    for _, trainee in running:
        trainee.model.train()
    seen = 0
    try:
        for batch in train_loader:
            n = len(batch.y)
            for j, (i, trainee) in enumerate(running):
                with autocast(recipe.precision, device):
                    logits = trainee.forward(batch.x)
                    loss = trainee.loss_fn(logits, batch)
                trainee.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                trainee.optimizer.step()
                trainee.scheduler.step()
                loss_sums[j] += loss.detach() * n
                corrects[j] += (logits.detach().argmax(1) == batch.y).sum()
                if on_step is not None:
                    on_step(i, batch, logits.detach())
            seen += n
    except StopTraining:
        return [], [], seen, True
    return loss_sums.tolist(), corrects.tolist(), seen, False


def fit_many(
    models: list[nn.Module],
    train_loader: Loader,
    recipe: Recipe,
    *,
    device: torch.device,
    loss_fns: list[LossFn | None] | None = None,
    val_loader: Loader | None = None,
    on_step: Callable[[int, Batch, torch.Tensor], None] | None = None,
    on_epoch: Callable[[EpochReports], None] | None = None,
    resume: dict | None = None,
    epoch_trainer: "EpochTrainer | None" = None,
) -> list[Fitted]:
    """Train several models on ONE stream of batches: every batch of ``train_loader`` (the same ids
    and augmentation) trains every model still running, one after another, each with its own loss,
    optimiser and schedule (all from ``recipe``). The training step of ``fit`` (which is
    ``fit_many`` of one model).

    ``loss_fns[i](logits, batch)`` is model ``i``'s loss (default cross-entropy with the recipe's
    label smoothing); it runs inside the autocast region of that model's forward. Work shared by the
    models on a batch (a teacher forward) can be cached on the batch object, which is the same for all.
    ``on_step(i, batch, logits)`` runs after model ``i``'s optimiser step, ``on_epoch(reports)``
    after every epoch; ``reports.stop(i)`` from there stops model ``i`` (it costs nothing afterwards).
    Raising ``StopTraining`` from either ends the training of every model.

    ``resume``: an ``EpochReports.state()`` of an earlier run of the same call,
    ``{"epoch": e, "members": [per-model state]}`` where a per-model state is ``fit``'s
    (``epoch, model, optimizer, scheduler, history``) plus ``stopped_epoch`` and ``stop_reason``;
    training continues after epoch ``e`` with the same batch order, so it matches an uninterrupted run.

    ``epoch_trainer``: how the running models train on one epoch's batches (default ``train_epoch``,
    one after another; ``trainables.fused.FusedEpochs`` trains them as one fused model). Everything
    else (resume, reports, validation, stopping) is this function's, whichever trains the epoch.
    """
    if not models:
        raise ValueError("fit_many needs at least one model")
    loss_fns = [None] * len(models) if loss_fns is None else list(loss_fns)
    if len(loss_fns) != len(models):
        raise ValueError(f"{len(models)} models but {len(loss_fns)} loss functions")
    steps_per_epoch = len(train_loader)
    trainees = [_Trainee(model, recipe, steps_per_epoch, loss_fn) for model, loss_fn in zip(models, loss_fns)]
    epochs = recipe.epochs_for(steps_per_epoch)
    first_epoch = 1
    if resume is not None:
        if len(resume["members"]) != len(trainees):
            raise ValueError(f"the resume state has {len(resume['members'])} models, this run {len(trainees)}")
        for trainee, state in zip(trainees, resume["members"]):
            trainee.load(state)
        first_epoch = resume["epoch"] + 1
        train_loader.epoch = resume["epoch"]  # the loader's own epoch counter: the next batch order

    def group_state(epoch: int) -> dict:
        return {"epoch": epoch, "members": [trainee.state(epoch) for trainee in trainees]}

    def stop(index: int, reason: str = "stopped", *, epoch: int) -> None:
        trainee = trainees[index]
        if trainee.stopped_epoch is None:
            trainee.stopped_epoch, trainee.stop_reason = epoch, reason

    for epoch in range(first_epoch, epochs + 1):
        running = [(i, t) for i, t in enumerate(trainees) if t.stopped_epoch is None]
        if not running:
            break
        start = time.perf_counter()
        loss_sums, corrects, seen, interrupted = (epoch_trainer or train_epoch)(
            running, train_loader, recipe, device=device, on_step=on_step)
        if interrupted:
            break
        reports: list[EpochReport | None] = [None] * len(trainees)
        for (i, trainee), loss_sum, correct in zip(running, loss_sums, corrects):
            reports[i] = EpochReport(
                epoch=epoch,
                epochs=epochs,
                train_loss=loss_sum / seen,
                train_acc=correct / seen,
                lr=trainee.optimizer.param_groups[0]["lr"],
                seconds=0.0,
            )
        if val_loader is not None:
            results = evaluate_many([trainee.model for _, trainee in running], val_loader, recipe, device=device)
            for (i, _), result in zip(running, results):
                reports[i].val_acc, reports[i].val_loss = result.acc, result.loss
        seconds = time.perf_counter() - start
        for i, trainee in running:
            reports[i].seconds = seconds
            reports[i].state = lambda epoch=epoch, trainee=trainee: {"epoch": epoch, "members": [trainee.state(epoch)]}
            trainee.history.append(reports[i])
        if on_epoch is not None:
            try:
                on_epoch(
                    EpochReports(
                        epoch=epoch, epochs=epochs, reports=reports, seconds=seconds,
                        state=lambda epoch=epoch: group_state(epoch),
                        stop=lambda index, reason="stopped", epoch=epoch: stop(index, reason, epoch=epoch),
                        is_stopped=lambda index: trainees[index].stopped_epoch is not None,
                    )
                )
            except StopTraining:
                break
    for trainee in trainees:
        trainee.model.eval()
    return [Fitted(t.history, t.stopped_epoch, t.stop_reason) for t in trainees]


def fit(
    model: nn.Module,
    train_loader: Loader,
    recipe: Recipe,
    *,
    device: torch.device,
    loss_fn: LossFn | None = None,
    val_loader: Loader | None = None,
    on_step: Callable[[Batch, torch.Tensor], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    resume: dict | None = None,
) -> list[EpochReport]:
    """Train ``model`` in place for ``recipe.epochs_for(len(train_loader))`` epochs (``recipe.epochs``, or
    more to reach ``recipe.min_steps``); returns one report per epoch run. ``fit_many`` of one model.

    ``loss_fn(logits, batch)`` defaults to cross-entropy with the recipe's label smoothing; it runs
    inside the same autocast region as the forward pass (so a teacher forward in it is bf16 too).
    The model must already be on ``device`` (see ``prepare_model``).

    ``resume``: a ``report.state()`` from an earlier run of the same call (``fit_many``'s format, of one
    model); training continues after that epoch with the same model, optimiser, schedule and batch
    order (each epoch's batches derive from (seed, epoch)), so a resumed run matches an uninterrupted one.
    """
    (fitted,) = fit_many(
        [model], train_loader, recipe, device=device, loss_fns=[loss_fn], val_loader=val_loader,
        on_step=None if on_step is None else lambda _, batch, logits: on_step(batch, logits),
        on_epoch=None if on_epoch is None else lambda reports: on_epoch(reports.reports[0]),
        resume=resume,
    )
    return fitted.history


@torch.no_grad()
def predict(
    model: nn.Module, loader: Loader, recipe: Recipe, *, device: torch.device
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(ids, float32 logits, labels) for every example of ``loader``, in the loader's order."""
    was_training = model.training
    model.eval()
    ids, logits, labels = [], [], []
    with autocast(recipe.precision, device):
        for batch in loader:
            ids.append(batch.ids)
            logits.append(model(batch.x).float())
            labels.append(batch.y)
    model.train(was_training)
    return torch.cat(ids).cpu().numpy(), torch.cat(logits), torch.cat(labels)


def evaluate_many(
    models: list[nn.Module], loader: Loader, recipe: Recipe, *, device: torch.device
) -> list[EvalResult]:
    """``evaluate`` for several models over one pass of ``loader`` (each batch is gathered once)."""
    states = [model.training for model in models]
    for model in models:
        model.eval()
    logits: list[list[torch.Tensor]] = [[] for _ in models]
    labels = []
    with torch.no_grad(), autocast(recipe.precision, device):
        for batch in loader:
            labels.append(batch.y)
            for i, model in enumerate(models):
                logits[i].append(model(batch.x).float())
    for model, training in zip(models, states):
        model.train(training)
    y = torch.cat(labels)
    results = []
    for parts in logits:
        z = torch.cat(parts)
        results.append(EvalResult(acc=float((z.argmax(1) == y).float().mean()), loss=float(F.cross_entropy(z, y)), n=len(y)))
    return results


def evaluate(model: nn.Module, loader: Loader, recipe: Recipe, *, device: torch.device) -> EvalResult:
    """Accuracy and mean cross-entropy of ``model`` over ``loader``."""
    return evaluate_many([model], loader, recipe, device=device)[0]


@dataclass
class RunResult:
    model: nn.Module
    history: list[EpochReport]
    val: EvalResult | None
    test: EvalResult | None
    stopped_epoch: int | None = None  # see ``Fitted``
    stop_reason: str | None = None


def train_many_on_ids(
    dataset,
    *,
    arch: str,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    recipe: Recipe,
    seed: int,
    device: torch.device,
    loss_fns: list[LossFn | None],
    on_epoch: Callable[[EpochReports], None] | None = None,
    on_step: Callable[[int, Batch, torch.Tensor], None] | None = None,
    test: bool = True,
    resume: dict | None = None,
    fit: Callable | None = None,
) -> list[RunResult]:
    """``len(loss_fns)`` models of ``arch``, all initialised from ``seed`` (identical weights), trained
    together by ``fit`` (default ``fit_many``, the members one after another on each batch;
    ``trainables.fused.fit_fused`` trains them as one fused model) on one stream of batches of
    ``train_ids`` (its order and augmentation from ``seed``), validated each epoch on ``val_ids`` (when
    there are any) and, with ``test``, tested on the whole test set. ``train_on_ids`` is this with one
    model."""
    models = []
    for _ in loss_fns:  # the same seed before each build: identical weights and memory layout
        torch.manual_seed(derive_seed("init", seed))
        models.append(prepare_model(build_model(arch, dataset.num_classes, dataset.in_channels), recipe, device))
    common = dict(device=device, channels_last=recipe.channels_last)
    train_loader = make_loader(
        dataset, "train", train_ids, recipe.batch_size, train=True, seed=derive_seed("batches", seed),
        augment=recipe.augment, **common,
    )
    val_loader = (
        make_loader(dataset, "train", val_ids, recipe.eval_batch_size, train=False, **common)
        if len(val_ids)
        else None
    )
    fitted = (fit or fit_many)(
        models, train_loader, recipe, device=device, loss_fns=loss_fns, val_loader=val_loader,
        on_step=on_step, on_epoch=on_epoch, resume=resume,
    )
    vals = evaluate_many(models, val_loader, recipe, device=device) if val_loader is not None else [None] * len(models)
    tests = [None] * len(models)
    if test:
        test_loader = make_loader(
            dataset, "test", np.arange(len(dataset.y_test)), recipe.eval_batch_size, train=False, **common
        )
        tests = evaluate_many(models, test_loader, recipe, device=device)
    return [
        RunResult(model, f.history, val, test_result, f.stopped_epoch, f.stop_reason)
        for model, f, val, test_result in zip(models, fitted, vals, tests)
    ]


def train_on_ids(
    dataset,
    *,
    arch: str,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    recipe: Recipe,
    seed: int,
    device: torch.device,
    loss_fn: LossFn | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_step: Callable[[Batch, torch.Tensor], None] | None = None,
    test: bool = True,
    resume: dict | None = None,
) -> RunResult:
    """Build ``arch`` (initialised from ``seed``), train it on ``train_ids``, validate each epoch on
    ``val_ids`` (when there are any) and, with ``test``, test on the whole test set. Teachers,
    students and scoring runs all go through here (``train_many_on_ids`` of one model)."""
    (run,) = train_many_on_ids(
        dataset, arch=arch, train_ids=train_ids, val_ids=val_ids, recipe=recipe, seed=seed, device=device,
        loss_fns=[loss_fn],
        on_epoch=None if on_epoch is None else lambda reports: on_epoch(reports.reports[0]),
        on_step=None if on_step is None else lambda _, batch, logits: on_step(batch, logits),
        test=test, resume=resume,
    )
    return run
