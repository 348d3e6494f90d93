"""One training loop for teachers, students and scoring runs, and evaluation.

``fit`` runs SGD with the recipe's schedule and precision over a loader of ``Batch``es, calls
``on_step`` after every optimiser step (scores such as forgetting need per-batch predictions with
their example ids) and ``on_epoch`` after every epoch (the sweep reports to Ray Tune from there).
Raising ``StopTraining`` from a callback ends training after that step or epoch.
"""

from __future__ import annotations

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
from trainables.recipe import Recipe, autocast
from trainables.seeding import derive_seed

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
    # ``state()`` returns everything needed to resume after this epoch (see ``fit(resume=...)``):
    # plain tensors and values, so it can be saved and read back with ``weights_only=True``.
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
    more to reach ``recipe.min_steps``); returns one report per epoch run.

    ``loss_fn(logits, batch)`` defaults to cross-entropy with the recipe's label smoothing; it runs
    inside the same autocast region as the forward pass (so a teacher forward in it is bf16 too).
    The model must already be on ``device`` (see ``prepare_model``).

    ``resume``: a ``report.state()`` from an earlier run of the same call; training continues after
    that epoch with the same model, optimiser, schedule and batch order (each epoch's batches derive
    from (seed, epoch)), so a resumed run matches an uninterrupted one.
    """
    if loss_fn is None:

        def loss_fn(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
            return F.cross_entropy(logits.float(), batch.y, label_smoothing=recipe.label_smoothing)

    forward = torch.compile(model) if recipe.compile else model
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, len(train_loader))
    epochs = recipe.epochs_for(len(train_loader))
    history: list[EpochReport] = []
    first_epoch = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        history = [EpochReport(**report) for report in resume["history"]]
        first_epoch = resume["epoch"] + 1
        train_loader.epoch = resume["epoch"]  # the loader's own epoch counter: the next batch order

    def training_state(epoch: int) -> dict:
        return {
            "epoch": epoch,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "history": [report.to_dict() for report in history],
        }

    for epoch in range(first_epoch, epochs + 1):
        start = time.perf_counter()
        model.train()
        # Sums stay on the device: one host sync per epoch, not per step.
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        try:
            for batch in train_loader:
                with autocast(recipe.precision, device):
                    logits = forward(batch.x)
                    loss = loss_fn(logits, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                n = len(batch.y)
                loss_sum += loss.detach() * n
                correct += (logits.detach().argmax(1) == batch.y).sum()
                seen += n
                if on_step is not None:
                    on_step(batch, logits.detach())
        except StopTraining:
            break
        report = EpochReport(
            epoch=epoch,
            epochs=epochs,
            train_loss=float(loss_sum) / seen,
            train_acc=float(correct) / seen,
            lr=optimizer.param_groups[0]["lr"],
            seconds=0.0,
        )
        if val_loader is not None:
            result = evaluate(model, val_loader, recipe, device=device)
            report.val_acc, report.val_loss = result.acc, result.loss
        report.seconds = time.perf_counter() - start
        report.state = lambda epoch=epoch: training_state(epoch)
        history.append(report)
        if on_epoch is not None:
            try:
                on_epoch(report)
            except StopTraining:
                break
    model.eval()
    return history


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


def evaluate(model: nn.Module, loader: Loader, recipe: Recipe, *, device: torch.device) -> EvalResult:
    """Accuracy and mean cross-entropy of ``model`` over ``loader``."""
    _, logits, labels = predict(model, loader, recipe, device=device)
    return EvalResult(
        acc=float((logits.argmax(1) == labels).float().mean()),
        loss=float(F.cross_entropy(logits, labels)),
        n=len(labels),
    )


@dataclass
class RunResult:
    model: nn.Module
    history: list[EpochReport]
    val: EvalResult | None
    test: EvalResult | None


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
    students and scoring runs all go through here."""
    torch.manual_seed(derive_seed("init", seed))
    model = prepare_model(build_model(arch, dataset.num_classes, dataset.in_channels), recipe, device)
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
    history = fit(
        model, train_loader, recipe, device=device, loss_fn=loss_fn, val_loader=val_loader,
        on_step=on_step, on_epoch=on_epoch, resume=resume,
    )
    val = evaluate(model, val_loader, recipe, device=device) if val_loader is not None else None
    test_result = None
    if test:
        test_loader = make_loader(
            dataset, "test", np.arange(len(dataset.y_test)), recipe.eval_batch_size, train=False, **common
        )
        test_result = evaluate(model, test_loader, recipe, device=device)
    return RunResult(model, history, val, test_result)
