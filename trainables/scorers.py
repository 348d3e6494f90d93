"""Pruning methods: a registry of scorers, each with its own options (a frozen dataclass), and the
request that names a method, its scoring model and recipe, its seeds and its options.

A method's scores come from independent runs (one model each, run ``i`` seeded by
``derive_seed("score", method, seed, i)``) combined, usually by averaging; computing, caching and
combining them is ``trainables.scores``.

Methods (all oriented ``higher_is_harder=True``):

- ``random``: a seeded uniform score (random pruning).
- ``el2n``: ||softmax(f(x)) - onehot(y)||_2 (Paul et al., 2021) from models trained for
  ``epoch_fraction`` of the recipe's epochs (the literature's epoch 20 of 200), averaged over seeds.
- ``grand``: the norm of each example's loss gradient w.r.t. all parameters, at the same early
  checkpoints, computed batched with ``torch.func`` (``vmap(grad(...))`` over ``functional_call``).
- ``forgetting``: forgetting events (correct at one presentation, wrong at the next; Toneva et al.,
  2019) counted over a full training run from the per-batch predictions; an example never learned
  counts as the most forgettable (its number of presentations, more than any learned example can have).
- ``memorization``: Feldman and Zhang's (2020) subsample estimator from ``seeds`` models each trained
  on a random fraction ``subset_fraction`` of the training split: P(correct on i | i in subset) -
  P(correct on i | i not in subset); or precomputed values from ``scores_file``.

A new method is one ``Scorer`` subclass under ``@register_scorer("name")`` with, when it has options,
an ``Options`` dataclass: its fields are settable from the sweep (``--score-option name.FIELD=VALUE``)
and from ``python -m trainables.scores`` (``--option FIELD=VALUE``), and enter the artifact key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from contract.recipe import Recipe
from contract.registry import Registry
from contract.seeding import derive_seed
from trainables.datasets import Dataset
from trainables.splits import Split
from trainables.loader import make_loader
from trainables.score_kernels import ForgettingTracker, el2n_scores, grand_scores, memorization_estimate
from trainables.train import StopTraining, train_on_ids

# --------------------------------------------------------------------------------------------
# Options and requests


@dataclass(frozen=True)
class NoOptions:
    """A method without options of its own."""

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class EarlyCheckpointOptions:
    epoch_fraction: float = 0.1  # score after this fraction of the recipe's epochs

    def check(self) -> None:
        if not 0 < self.epoch_fraction <= 1:
            raise ValueError(f"epoch_fraction must lie in (0, 1], got {self.epoch_fraction}")


@dataclass(frozen=True)
class MemorizationOptions:
    subset_fraction: float = 0.7  # each model's random fraction q of the split
    # precomputed ids and scores (.npz or .csv) instead of training; a file option enters the key by content
    scores_file: str | None = field(default=None, metadata={"file": True})

    def check(self) -> None:
        if not 0 < self.subset_fraction < 1:
            raise ValueError(f"subset_fraction must lie in (0, 1), got {self.subset_fraction}")
        if self.scores_file is not None and not Path(self.scores_file).is_file():
            raise FileNotFoundError(f"scores file not found: {self.scores_file}")


@dataclass(frozen=True)
class ScoreRequest:
    """Everything that determines a method's scores on a (dataset, split). ``options`` is the method's
    ``Options`` dataclass, or a dict of its fields (``{"epoch_fraction": 0.2}``), turned into it."""

    method: str
    arch: str = "small_cnn"
    recipe: Recipe = field(default_factory=Recipe)
    seeds: int = 1  # independent runs combined (memorization: the K models)
    seed: int = 0  # base seed; run i derives its own from (method, seed, i)
    options: Any = None

    def __post_init__(self):
        if self.method in SCORERS and not isinstance(self.options, SCORERS.get(self.method).Options):
            object.__setattr__(self, "options", make_options(self.method, dict(self.options or {})))

    @property
    def scorer(self) -> "Scorer":
        return SCORERS.get(self.method)

    def check(self) -> None:
        """Raise a clear error for bad input, before any compute."""
        scorer = self.scorer
        from trainables.models import check_model_name

        if "arch" in scorer.uses:
            check_model_name(self.arch)
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        self.options.check()

    def key_fields(self) -> dict:
        """The request's fields that decide the scores: the shared ones the method ``uses`` and every
        option, by name (so an option's name and value are what the artifact key sees)."""
        shared = {name: getattr(self, name) for name in self.scorer.uses}
        return {**shared, **{f.name: getattr(self.options, f.name) for f in dataclasses.fields(self.options)}}

    def file_fields(self) -> set[str]:
        """The options that name a file (``metadata={"file": True}``): the key hashes the file's bytes."""
        return {f.name for f in dataclasses.fields(self.options) if f.metadata.get("file")}


def make_options(method: str, values: dict):
    """``method``'s ``Options`` from field values; a field it does not have is a ``ValueError``."""
    options_class = SCORERS.get(method).Options
    own = [f.name for f in dataclasses.fields(options_class)]
    unknown = [name for name in values if name not in own]
    if unknown:
        raise ValueError(f"{method} has " + (f"the options {', '.join(own)}" if own else "no options")
                         + f", not {', '.join(unknown)}")
    return options_class(**values)


# --------------------------------------------------------------------------------------------
# Scorers


class Scorer:
    """A pruning method: ``run`` trains one model (or draws once) and returns per-example arrays
    aligned with ``split.train_ids``; ``combine`` turns the runs into one score per example."""

    higher_is_harder = True
    uses: tuple[str, ...] = ("arch", "recipe", "seeds", "seed")  # shared request fields in the key
    Options: type = NoOptions  # the method's own options (a frozen dataclass with ``check()``)

    def num_runs(self, request: ScoreRequest) -> int:
        return request.seeds

    def score_epoch(self, request: ScoreRequest) -> int | None:
        return request.recipe.epochs

    def run(self, dataset: Dataset, split: Split, request: ScoreRequest, index: int, device) -> dict:
        raise NotImplementedError

    def combine(self, runs: list[dict], split: Split, request: ScoreRequest) -> np.ndarray:
        return np.mean([r["scores"] for r in runs], axis=0)


SCORERS: Registry[Scorer] = Registry("pruning method")


def register_scorer(name: str):
    def decorator(cls):
        SCORERS.register(name)(cls())
        return cls

    return decorator


def list_methods() -> list[str]:
    return SCORERS.names()


def option_fields(method: str) -> list[dataclasses.Field]:
    return list(dataclasses.fields(SCORERS.get(method).Options))


def score_option_names() -> list[str]:
    """Every ``METHOD.FIELD`` a ``--score-option`` can set, from the registered scorers."""
    return [f"{method}.{f.name}" for method in SCORERS.names() for f in option_fields(method)]


def _typed(method: str, name: str, text: str, item: str):
    """``text`` as the type of ``method``'s option ``name`` (its default's: int, float or text)."""
    default = next((f.default for f in option_fields(method) if f.name == name), None)
    kind = type(default)
    try:
        return kind(text) if kind in (int, float) else text
    except ValueError:
        raise ValueError(f"{item!r}: {name} takes a {kind.__name__}") from None


def parse_score_options(items: list[str]) -> dict[str, dict]:
    """``["memorization.scores_file=mem.npz", "el2n.epoch_fraction=0.2"]`` -> {method: {field: value}},
    each value of its field's type; a malformed item is a ``ValueError`` naming it."""
    options: dict[str, dict] = {}
    for item in items:
        target, sep, text = item.partition("=")
        method, dot, name = target.partition(".")
        if not (sep and dot and method and name):
            raise ValueError(f"--score-option {item!r}: expected METHOD.FIELD=VALUE, for example {score_option_names()[0]}=...")
        value = _typed(method, name, text, f"--score-option {item}") if method in SCORERS else text
        options.setdefault(method, {})[name] = value
    return options


def parse_method_options(method: str, items: list[str]) -> dict:
    """``["epoch_fraction=0.2"]`` -> {field: value} for one method (``python -m trainables.scores --option``)."""
    options = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not (sep and name):
            raise ValueError(f"--option {item!r}: expected FIELD=VALUE, for example epoch_fraction=0.2")
        options[name] = _typed(method, name, text, f"--option {item}")
    return options


def score_option_problems(options: dict[str, dict]) -> list[str]:
    """Everything wrong with per-method options (``parse_score_options``), checked before compute: an
    unknown method, a field that is not the method's option, a value the method refuses."""
    problems = []
    for method, values in options.items():
        if method not in SCORERS:
            problems.append(f"--score-option {method}.*: unknown method {method!r}; choose from {list_methods()}")
            continue
        try:
            make_options(method, values).check()
        except (ValueError, FileNotFoundError, TypeError) as error:
            problems.append(f"--score-option {method}: {error}")
    return problems


def run_seed(request: ScoreRequest, index: int) -> int:
    return derive_seed("score", request.method, request.seed, index)


def _train_ids_loader(dataset, split, recipe, device):
    return make_loader(
        dataset, "train", split.train_ids, recipe.eval_batch_size, train=False, device=device,
        channels_last=recipe.channels_last,
    )


def per_example(kernel, model, dataset, split, recipe, device) -> np.ndarray:
    """``kernel(model, images, labels)`` over every training-split example, in id order."""
    return np.concatenate([kernel(model, b.x, b.y) for b in _train_ids_loader(dataset, split, recipe, device)])


def train_for_scoring(dataset, split, request, index, device, *, train_ids=None, epochs=None, on_step=None):
    """A scoring model: trained on ``train_ids`` (default the whole split) under the recipe's full
    schedule, stopped after ``epochs`` (default all), with no validation or test evaluation."""

    def stop(report):
        if epochs is not None and report.epoch >= epochs:
            raise StopTraining

    run = train_on_ids(
        dataset, arch=request.arch, train_ids=split.train_ids if train_ids is None else train_ids,
        val_ids=np.empty(0, np.int64), recipe=request.recipe, seed=run_seed(request, index), device=device,
        on_epoch=stop, on_step=on_step, test=False,
    )
    return run.model




@register_scorer("random")
class RandomScorer(Scorer):
    uses = ("seed",)

    def num_runs(self, request):
        return 1

    def score_epoch(self, request):
        return None

    def run(self, dataset, split, request, index, device):
        return {"scores": np.random.default_rng(run_seed(request, index)).random(len(split.train_ids))}



class EarlyCheckpointScorer(Scorer):
    """Scores from a per-model ``kernel`` applied to models stopped early (``epoch_fraction``)."""

    Options = EarlyCheckpointOptions
    kernel: Callable

    def score_epoch(self, request):
        return max(1, round(request.options.epoch_fraction * request.recipe.epochs))

    def run(self, dataset, split, request, index, device):
        model = train_for_scoring(dataset, split, request, index, device, epochs=self.score_epoch(request))
        return {"scores": per_example(type(self).kernel, model, dataset, split, request.recipe, device)}


@register_scorer("el2n")
class El2nScorer(EarlyCheckpointScorer):
    kernel = el2n_scores


@register_scorer("grand")
class GrandScorer(EarlyCheckpointScorer):
    kernel = grand_scores


@register_scorer("forgetting")
class ForgettingScorer(Scorer):

    def run(self, dataset, split, request, index, device):
        positions = torch.full((dataset.num_train,), -1, dtype=torch.long, device=device)
        positions[torch.from_numpy(split.train_ids).to(device)] = torch.arange(len(split.train_ids), device=device)
        tracker = ForgettingTracker(len(split.train_ids), device)

        def on_step(batch, logits):
            tracker.update(positions[batch.ids], logits.argmax(1) == batch.y)

        train_for_scoring(dataset, split, request, index, device, on_step=on_step)
        return {"scores": tracker.counts()}




@register_scorer("memorization")
class MemorizationScorer(Scorer):
    Options = MemorizationOptions

    def num_runs(self, request):
        return 0 if request.options.scores_file else request.seeds

    def score_epoch(self, request):
        return None if request.options.scores_file else request.recipe.epochs

    def run(self, dataset, split, request, index, device):
        n = len(split.train_ids)
        chosen = np.random.default_rng(run_seed(request, index)).choice(
            n, round(request.options.subset_fraction * n), replace=False)
        in_subset = np.zeros(n, dtype=bool)
        in_subset[chosen] = True
        model = train_for_scoring(dataset, split, request, index, device, train_ids=split.train_ids[in_subset])
        with torch.no_grad():
            correct = np.concatenate([
                (model(b.x).argmax(1) == b.y).cpu().numpy() for b in _train_ids_loader(dataset, split, request.recipe, device)
            ])
        return {"in_subset": in_subset, "correct": correct}

    def combine(self, runs, split, request):
        if request.options.scores_file:
            return read_precomputed(request.options.scores_file, split.train_ids)
        return memorization_estimate(np.stack([r["in_subset"] for r in runs]), np.stack([r["correct"] for r in runs]))


def read_precomputed(path: str, train_ids: np.ndarray) -> np.ndarray:
    """Scores for ``train_ids`` from a ``.npz`` (arrays ``ids``, ``scores``) or a ``.csv`` (columns
    ``id``, ``score``); the file may hold more ids (the whole training set), never fewer."""
    try:
        if str(path).endswith(".npz"):
            with np.load(path, allow_pickle=False) as arrays:
                if not {"ids", "scores"} <= set(arrays.files):
                    raise ValueError(f"{path}: a scores .npz needs arrays 'ids' and 'scores', has {sorted(arrays.files)}")
                ids, values = arrays["ids"], arrays["scores"]
        else:
            import pandas as pd

            frame = pd.read_csv(path)
            if not {"id", "score"} <= set(frame.columns):
                raise ValueError(f"{path}: a scores CSV needs columns 'id' and 'score', has {list(frame.columns)}")
            ids, values = frame["id"].to_numpy(), frame["score"].to_numpy()
        ids = np.asarray(ids, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: not a readable scores file (ids must be integers, scores numbers): {error}") from None
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable scores file ({type(error).__name__}: {error})") from None
    if ids.shape != values.shape or ids.ndim != 1:
        raise ValueError(f"{path}: ids and scores must be 1-D and of one length, got {ids.shape} and {values.shape}")
    lookup = dict(zip(np.asarray(ids, dtype=np.int64).tolist(), np.asarray(values, dtype=np.float64).tolist()))
    missing = [i for i in train_ids.tolist() if i not in lookup]
    if missing:
        raise ValueError(f"{path}: no score for {len(missing)} training ids, for example {missing[:5]}")
    scores = np.array([lookup[i] for i in train_ids.tolist()], dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError(f"{path}: scores must be finite")
    return scores

