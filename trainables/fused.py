"""Horizontally fused cohorts (HFTA-style): the K members of a cohort trained as ONE model.

    from trainables.fused import fuse
    fused = fuse(models)             # K models of one architecture -> one model
    logits = fused(x)                # (N, K, classes): member i's logits are logits[:, i]
    fused.store_into(models)         # and back: each member's weights and BN statistics

As HFTA (Wang et al., 2021, github.com/UofT-EcoSystem/hfta) fuses models horizontally, each layer of
the K members becomes one layer of the fused model, the members' channels side by side (member-major):

- ``Conv2d(in, out, groups=g)`` -> ``Conv2d(K*in, K*out, groups=K*g)``; the first convolution sees the
  same input batch for every member (a cohort's members share their batches), so it is one
  ``Conv2d(in, K*out)`` with the K filter banks concatenated and no input replication;
- ``BatchNorm2d(C)`` -> ``BatchNorm2d(K*C)`` (channels are normalised independently: exactly per
  member, running statistics included);
- ``Linear(in, out)`` -> a batched matmul with weights ``(K, out, in)``;
- activations and pooling act per channel: unchanged. He et al.'s zero-padding shortcut pads each
  member's channels.

The fused model has the same parameter and buffer names as a member; each fused tensor is the K
members' tensors stacked along its first dimension, so moving state either way is a reshape
(``load_members`` / ``member_state_dicts`` / ``store_into``). SGD with momentum, nesterov and weight
decay is elementwise, and every member of a cohort has the same recipe, so ONE optimiser and ONE
schedule over the fused parameters step every member exactly as its own optimiser would; the loss is
the sum of the members' losses, so each member's gradients are its own loss's.

Supported: ``small_cnn``, the CIFAR ResNets (``resnet20/32/56/110``, ``resnet18_cifar``) and
``airbench_arch``: the models whose modules are all in ``_CONTAINERS``, ``_STATELESS`` and
``_LEAVES`` below (a whitelist by exact type: a module with another forward could mix channels).
Anything else (torchvision's ResNets) raises ``NotImplementedError``, and ``fusion_problem`` says why
without raising: ``trainables.cohort.train_cohort`` then trains the members in a loop.

``fit_fused`` is ``trainables.train.fit_many`` with the fused model (``FusedEpochs`` trains each epoch): the same per-member optimiser,
schedule, history, reports, stopping and resume state (``_Trainee``), so a cohort's checkpoints and
results have one format whichever path trained it. The fused model exists only while its members
train: after every epoch the state goes back to the members (their models, momentum buffers and
schedules), which are evaluated, reported and checkpointed exactly as in the loop. When members stop
(successive halving, an external pruner) the survivors are fused again: a stopped member keeps the
state it had when it stopped and costs nothing afterwards. Precision and memory format follow the
recipe as in the loop (autocast around forward and loss; channels-last weights and batches).
"""

from __future__ import annotations

import copy
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from trainables import models as _models
from trainables.loader import Batch, Loader
from trainables.models import build_model
from trainables.device import autocast
from contract.recipe import Recipe
from trainables.train import (
    Fitted,
    StopTraining,
    _Trainee,
    fit_many,
    make_optimizer,
    make_scheduler,
    prepare_model,
)

# Modules whose own forward only routes tensors through their children (and per-channel functions:
# relu, gelu, pooling, flatten, residual adds): with fused children they compute the fused model.
_CONTAINERS = (nn.Sequential, _models.BasicBlock, _models.CifarResNet, _models._ConvGroup, _models.AirbenchArch)
# Per-channel modules without state: the same module works on the fused channels.
_STATELESS = (nn.ReLU, nn.GELU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
              nn.Identity, nn.Flatten)
_LEAVES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear, _models._ZeroPadShortcut)  # replaced by fused modules
_SHARED_BUFFERS = ("num_batches_tracked",)  # one value for all the members (they step together)


class FusedLinear(nn.Module):
    """K ``Linear(in, out)`` as one batched matmul: (N, K*in) or (N, K, in) -> (N, K, out)."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(k, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.k, self.in_features).transpose(0, 1)  # (K, N, in)
        weight = self.weight.transpose(1, 2)
        out = torch.bmm(x, weight) if self.bias is None else torch.baddbmm(self.bias[:, None, :], x, weight)
        return out.transpose(0, 1)  # (N, K, out)


class FusedZeroPadShortcut(nn.Module):
    """K of He et al.'s option-A shortcuts: subsample, zero-pad each member's channels."""

    def __init__(self, k: int, shortcut: _models._ZeroPadShortcut):
        super().__init__()
        self.k, self.stride, self.extra = k, shortcut.stride, shortcut.extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        n, c, h, w = x.shape
        x = F.pad(x.reshape(n, self.k, c // self.k, h, w), (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x.reshape(n, -1, h, w)


def fusion_problem(model: nn.Module) -> str | None:
    """Why ``model`` cannot be fused (the first unsupported module), or None when it can."""
    if type(model) not in _CONTAINERS:
        return f"the fused path does not support {type(model).__module__}.{type(model).__name__}"
    first_leaf = True
    for name, module in model.named_modules():
        kind = type(module)
        where = f"{type(model).__name__}.{name}" if name else type(model).__name__
        if kind in _LEAVES:
            # the first layer sees the raw batch, shared by the members: a plain convolution
            if first_leaf and not (kind is nn.Conv2d and module.groups == 1):
                return f"{where}: the first layer must be a Conv2d with groups=1, not {module}"
            if kind is nn.Conv2d and module.padding_mode != "zeros":
                return f"{where}: a Conv2d with padding_mode={module.padding_mode!r}"
            if kind is nn.BatchNorm2d and not (module.affine and module.track_running_stats):
                return f"{where}: a BatchNorm2d without affine parameters or running statistics"
            first_leaf = False
        elif kind in _STATELESS:
            if kind is nn.Flatten and (module.start_dim, module.end_dim) != (1, -1):
                return f"{where}: a Flatten other than Flatten(1, -1)"
            if kind is nn.MaxPool2d and module.return_indices:
                return f"{where}: a MaxPool2d returning indices"
        elif kind not in _CONTAINERS:
            return f"{where}: the fused path does not support {kind.__module__}.{kind.__name__}"
    return None


def arch_fusion_problem(arch: str, num_classes: int, in_channels: int) -> str | None:
    """``fusion_problem`` of the architecture ``arch``, built on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        model = build_model(arch, num_classes, in_channels)
    problem = fusion_problem(model)
    return None if problem is None else f"{arch}: {problem}"


def _fused_leaf(module: nn.Module, k: int, shared_input: bool) -> nn.Module:
    """The fused counterpart of one of K identical-shaped layers (``shared_input``: the first
    convolution, whose input is the members' common batch)."""
    if isinstance(module, nn.Conv2d):
        groups = 1 if shared_input else k * module.groups
        return nn.Conv2d(
            module.in_channels * (1 if shared_input else k), module.out_channels * k, module.kernel_size,
            module.stride, module.padding, module.dilation, groups=groups, bias=module.bias is not None,
        )
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(module.num_features * k, module.eps, module.momentum)
    if isinstance(module, nn.Linear):
        return FusedLinear(k, module.in_features, module.out_features, bias=module.bias is not None)
    if isinstance(module, _models._ZeroPadShortcut):
        return FusedZeroPadShortcut(k, module)
    raise AssertionError(type(module))


class FusedModel(nn.Module):
    """K models of one architecture as one: ``forward(x)`` is (N, K, classes). Built by ``fuse``.

    ``model`` has the members' module tree, parameter and buffer names, each tensor the K members'
    stacked along its first dimension (``num_batches_tracked``: one value for all).
    """

    def __init__(self, model: nn.Module, k: int, member_shapes: dict[str, torch.Size]):
        super().__init__()
        self.model, self.k = model, k
        self.member_shapes = member_shapes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.model.named_parameters()) | dict(self.model.named_buffers())

    def split(self, name: str, tensor: torch.Tensor) -> list[torch.Tensor]:
        """The K members' pieces (views) of the fused tensor ``name`` (or of a tensor shaped like it)."""
        if name.rsplit(".", 1)[-1] in _SHARED_BUFFERS:
            return [tensor] * self.k
        return list(tensor.reshape(self.k, *self.member_shapes[name]).unbind(0))

    def stack(self, name: str, pieces: Sequence[torch.Tensor]) -> torch.Tensor:
        """The fused tensor ``name`` from the K members' pieces (shaped as the fused tensor)."""
        if name.rsplit(".", 1)[-1] in _SHARED_BUFFERS:
            if any(not torch.equal(piece, pieces[0]) for piece in pieces[1:]):
                raise ValueError(f"the members' {name} differ: they cannot be trained as one fused model")
            return pieces[0]
        shape = self._tensors()[name].shape
        return torch.stack(list(pieces)).reshape(shape)

    @torch.no_grad()
    def load_members(self, states: Sequence[Mapping[str, torch.Tensor]]) -> None:
        """Load the K members' state dicts (member i's becomes slice i)."""
        if len(states) != self.k:
            raise ValueError(f"{len(states)} member states for a fused model of {self.k}")
        for name, tensor in self._tensors().items():
            tensor.copy_(self.stack(name, [state[name] for state in states]))

    @torch.no_grad()
    def member_state_dicts(self) -> list[dict[str, torch.Tensor]]:
        """The K members' state dicts (copies), with a member's keys and shapes."""
        states: list[dict[str, torch.Tensor]] = [{} for _ in range(self.k)]
        for name, tensor in self.model.state_dict().items():
            for state, piece in zip(states, self.split(name, tensor)):
                state[name] = piece.clone()
        return states

    @torch.no_grad()
    def store_into(self, models: Sequence[nn.Module]) -> None:
        """Copy slice i into ``models[i]``'s parameters and buffers, in place (their memory format kept)."""
        if len(models) != self.k:
            raise ValueError(f"{len(models)} models for a fused model of {self.k}")
        targets = [dict(m.named_parameters()) | dict(m.named_buffers()) for m in models]
        for name, tensor in self._tensors().items():
            for target, piece in zip(targets, self.split(name, tensor)):
                target[name].copy_(piece)


def fuse(models: Sequence[nn.Module]) -> FusedModel:
    """The K ``models`` (one architecture, see the module docstring) as one ``FusedModel``, on their
    device, holding their current weights and BN statistics. Raises ``NotImplementedError`` for an
    architecture the fused path does not support."""
    models = list(models)
    if not models:
        raise ValueError("fuse needs at least one model")
    problem = fusion_problem(models[0])
    if problem is not None:
        raise NotImplementedError(problem)
    first = models[0].state_dict()
    shapes = {name: tensor.shape for name, tensor in first.items()}
    for model in models[1:]:
        if type(model) is not type(models[0]) or {n: t.shape for n, t in model.state_dict().items()} != shapes:
            raise ValueError("fuse needs models of one architecture (the same modules, names and shapes)")
    k = len(models)
    device = next(iter(first.values())).device
    skeleton = copy.deepcopy(models[0])
    first_leaf = True  # the first convolution sees the raw batch, the same for every member
    for name, module in list(skeleton.named_modules()):
        if type(module) in _LEAVES:
            with torch.device("meta"):  # no initialisation: every tensor is loaded from the members below
                fused = _fused_leaf(module, k, shared_input=first_leaf)
            first_leaf = False
            parent, _, child = name.rpartition(".")
            setattr(skeleton.get_submodule(parent), child, fused)
    fused_model = FusedModel(skeleton.to_empty(device=device), k, shapes)
    if set(fused_model._tensors()) != set(shapes):
        raise NotImplementedError("the fused model's parameter and buffer names differ from a member's")
    fused_model.load_members([model.state_dict() for model in models])
    return fused_model


def unfuse(fused: FusedModel) -> list[dict[str, torch.Tensor]]:
    """The K members' state dicts (``load_state_dict`` of a member model takes one)."""
    return fused.member_state_dicts()


class _FusedGroup:
    """The running trainees of ``fit_fused`` as one fused model, with one optimiser and schedule whose
    state is the members' (equal schedules, stacked momentum buffers)."""

    def __init__(self, trainees: list[_Trainee], recipe: Recipe, steps_per_epoch: int, device: torch.device):
        self.trainees = trainees
        self.model = prepare_model(fuse([t.model for t in trainees]), recipe, device)
        self.forward = torch.compile(self.model) if recipe.compile else self.model
        self.optimizer = make_optimizer(self.model, recipe)
        self.scheduler = make_scheduler(self.optimizer, recipe, steps_per_epoch)
        first = trainees[0]
        group = _group_values(first.optimizer)
        schedule = first.scheduler.state_dict()
        for t in trainees[1:]:
            if _group_values(t.optimizer) != group or t.scheduler.state_dict() != schedule:
                raise ValueError("the members' optimiser settings or schedules differ: they cannot share an optimiser")
        self.optimizer.param_groups[0].update(copy.deepcopy(group))
        self.scheduler.load_state_dict(copy.deepcopy(schedule))
        # momentum buffers (SGD's per-parameter state), stacked like the parameters
        members = [dict(t.model.named_parameters()) for t in trainees]
        for name, param in self.model.model.named_parameters():
            states = [t.optimizer.state.get(m[name], {}) for t, m in zip(trainees, members)]
            if any(state.keys() != states[0].keys() for state in states):
                raise ValueError(f"the members' optimiser states differ for {name}")
            fused_state = {}
            for key, value in states[0].items():
                if isinstance(value, torch.Tensor) and value.shape == members[0][name].shape:
                    fused_state[key] = torch.empty_like(param).copy_(self.model.stack(name, [s[key] for s in states]))
                else:
                    fused_state[key] = copy.deepcopy(value)
            if fused_state:
                self.optimizer.state[param] = fused_state

    @torch.no_grad()
    def store(self) -> None:
        """The fused state back into the trainees: models, momentum buffers, lr and schedule."""
        self.model.store_into([t.model for t in self.trainees])
        members = [dict(t.model.named_parameters()) for t in self.trainees]
        for name, param in self.model.model.named_parameters():
            state = self.optimizer.state.get(param, {})
            for j, (trainee, m) in enumerate(zip(self.trainees, members)):
                target = m[name]
                values = {}
                for key, value in state.items():
                    if isinstance(value, torch.Tensor) and value.shape == param.shape:
                        values[key] = torch.empty_like(target).copy_(self.model.split(name, value)[j])
                    else:
                        values[key] = copy.deepcopy(value)
                if values:
                    trainee.optimizer.state[target] = values
        group = _group_values(self.optimizer)
        schedule = self.scheduler.state_dict()
        for trainee in self.trainees:
            trainee.optimizer.param_groups[0].update(copy.deepcopy(group))
            trainee.scheduler.load_state_dict(copy.deepcopy(schedule))


def _group_values(optimizer: torch.optim.Optimizer) -> dict:
    if len(optimizer.param_groups) != 1:
        raise NotImplementedError("the fused path supports optimisers with one parameter group")
    return {key: value for key, value in optimizer.param_groups[0].items() if key != "params"}


class FusedEpochs:
    """``fit_many``'s ``epoch_trainer`` for the fused path: every batch trains the running models in
    one forward, one backward (of the sum of their losses) and one optimiser step; ``on_step(i, batch,
    logits)`` then runs for each of them. The running models are fused once and fused again only when
    one stops (successive halving); after every epoch, and on ``StopTraining``, the fused state goes
    back to the members, so ``fit_many``'s reports, validation, checkpoints and resume see exactly
    what the loop would leave. ``StopTraining`` from ``on_step`` ends training after the whole step
    (every running model has taken it; the loop stops after model i's)."""

    def __init__(self) -> None:
        self.group: _FusedGroup | None = None
        self.members: list[int] = []

    def __call__(self, running: list, train_loader: Loader, recipe: Recipe, *, device: torch.device,
                 on_step: Callable[[int, Batch, torch.Tensor], None] | None = None) -> tuple[list[float], list[int], int, bool]:
        if self.group is None or [i for i, _ in running] != self.members:  # (re)fuse the running models
            self.group = _FusedGroup([t for _, t in running], recipe, len(train_loader), device)
            self.members = [i for i, _ in running]
        group = self.group
        group.model.train()
        loss_sums = torch.zeros(len(running), device=device)
        correct = torch.zeros(len(running), device=device, dtype=torch.long)
        seen = 0
        try:
            for batch in train_loader:
                n = len(batch.y)
                with autocast(recipe.precision, device):
                    logits = group.forward(batch.x)  # (N, K, classes)
                    losses = torch.stack([t.loss_fn(logits[:, j], batch) for j, (_, t) in enumerate(running)])
                group.optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                group.optimizer.step()
                group.scheduler.step()
                loss_sums += losses.detach() * n
                logits = logits.detach()
                correct += (logits.argmax(2) == batch.y[:, None]).sum(0)
                if on_step is not None:
                    for j, (i, _) in enumerate(running):
                        on_step(i, batch, logits[:, j])
                seen += n
        except StopTraining:
            return [], [], seen, True
        finally:
            group.store()  # the members hold what the loop's would: models, momentum, schedules
        return loss_sums.tolist(), correct.tolist(), seen, False


def fit_fused(models: list[nn.Module], train_loader: Loader, recipe: Recipe, **kwargs) -> list[Fitted]:
    """``trainables.train.fit_many`` with the running models fused into one (``FusedEpochs``): the same
    arguments, callbacks, reports, stopping, resume state and results, to float tolerance."""
    return fit_many(models, train_loader, recipe, epoch_trainer=FusedEpochs(), **kwargs)
