"""Pruning scores: a registry of methods, each scoring every training-split example.

    python -m trainables.scores --dataset digits --method el2n --seeds 4

A method's scores come from independent runs (one model each, run ``i`` seeded by
``derive_seed("score", method, seed, i)``) that are combined, usually by averaging. Runs and combined
tables are cached in the artifact store under keys that hash every input (``trainables.artifacts``),
so a sweep can farm the runs out as parallel tasks (``score_run``) and combine them
(``combine_runs``), and a later sweep reuses both.

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
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.artifacts import ArtifactStore, artifact_key, code_for
from trainables.datasets import Dataset, Split, dataset_code, dataset_fingerprint
from trainables.loader import make_loader
from trainables.models import MODELS
from trainables.device import resolve_device
from contract.recipe import Recipe
from contract.registry import Registry
from contract.seeding import derive_seed
from contract.storage import check_writable
from trainables.train import StopTraining, train_on_ids

# --------------------------------------------------------------------------------------------
# Per-model kernels


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


# --------------------------------------------------------------------------------------------
# Requests and tables


@dataclass(frozen=True)
class ScoreRequest:
    """Everything that determines a method's scores on a (dataset, split)."""

    method: str
    arch: str = "small_cnn"
    recipe: Recipe = field(default_factory=Recipe)
    seeds: int = 1  # independent runs combined (memorization: the K models)
    seed: int = 0  # base seed; run i derives its own from (method, seed, i)
    epoch_fraction: float = 0.1  # el2n/grand: score after this fraction of the recipe's epochs
    subset_fraction: float = 0.7  # memorization: each model's random fraction q of the split
    scores_file: str | None = None  # memorization: precomputed ids and scores (.npz or .csv)

    def check(self) -> None:
        """Raise a clear error for bad input, before any compute."""
        scorer = SCORERS.get(self.method)
        from trainables.models import check_model_name

        if "arch" in scorer.uses:
            check_model_name(self.arch)
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if not 0 < self.epoch_fraction <= 1:
            raise ValueError(f"epoch_fraction must lie in (0, 1], got {self.epoch_fraction}")
        if not 0 < self.subset_fraction < 1:
            raise ValueError(f"subset_fraction must lie in (0, 1), got {self.subset_fraction}")
        if self.scores_file is not None:
            if self.method != "memorization":
                raise ValueError("scores_file is for precomputed memorization scores")
            if not Path(self.scores_file).is_file():
                raise FileNotFoundError(f"scores file not found: {self.scores_file}")

    def score_epoch(self) -> int:
        return max(1, round(self.epoch_fraction * self.recipe.epochs))


@dataclass
class ScoreTable:
    ids: np.ndarray  # int64 training-split ids, sorted
    scores: np.ndarray  # float64, one per id
    higher_is_harder: bool
    provenance: dict
    key: str = ""
    cached: bool = False

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, ids=self.ids, scores=self.scores)
        return buffer.getvalue()

    @classmethod
    def from_artifact(cls, artifact, cached: bool) -> "ScoreTable":
        arrays = np.load(io.BytesIO(artifact.payload), allow_pickle=False)
        meta = artifact.meta
        return cls(arrays["ids"], arrays["scores"], meta["higher_is_harder"], meta["provenance"], artifact.key, cached)

    def summary(self) -> dict:
        quantiles = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
        return {
            "method": self.provenance["method"],
            "count": int(len(self.scores)),
            "higher_is_harder": self.higher_is_harder,
            "mean": float(np.mean(self.scores)),
            "quantiles": {str(q): float(v) for q, v in zip(quantiles, np.quantile(self.scores, quantiles))},
            "key": self.key,
            "cached": self.cached,
        }

    def select(self, labels: np.ndarray, fraction: float, **options) -> np.ndarray:
        """Kept ids for fraction f (``trainables.selection.select``); ``labels`` indexed by id."""
        from trainables.selection import select

        return select(
            self.ids, self.scores, np.asarray(labels)[self.ids], fraction,
            higher_is_harder=self.higher_is_harder, **options,
        )


# --------------------------------------------------------------------------------------------
# Scorers


class Scorer:
    """A pruning method: ``run`` trains one model (or draws once) and returns per-example arrays
    aligned with ``split.train_ids``; ``combine`` turns the runs into one score per example."""

    higher_is_harder = True
    uses: tuple[str, ...] = ("arch", "recipe", "seeds", "seed")  # request fields in the key
    # The request fields that are this method's own options (a subset of ``uses``): the sweep sets them
    # with ``--score-option METHOD.FIELD=VALUE``, and they reach the artifact key through ``uses``.
    options: tuple[str, ...] = ()

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


def score_option_names() -> list[str]:
    """Every ``METHOD.FIELD`` a ``--score-option`` can set, from the registered scorers."""
    return [f"{method}.{name}" for method in SCORERS.names() for name in SCORERS.get(method).options]


def parse_score_options(items: list[str]) -> dict[str, dict]:
    """``["memorization.scores_file=mem.npz", "el2n.epoch_fraction=0.2"]`` -> {method: {field: value}},
    each value of its field's type; a malformed item is a ``ValueError`` naming it."""
    defaults = {f.name: f.default for f in fields(ScoreRequest)}
    options: dict[str, dict] = {}
    for item in items:
        target, sep, text = item.partition("=")
        method, dot, name = target.partition(".")
        if not (sep and dot and method and name):
            raise ValueError(f"--score-option {item!r}: expected METHOD.FIELD=VALUE, for example {score_option_names()[0]}=...")
        kind = type(defaults.get(name))
        try:
            value = kind(text) if kind in (int, float) else text
        except ValueError:
            raise ValueError(f"--score-option {item!r}: {name} takes a {kind.__name__}") from None
        options.setdefault(method, {})[name] = value
    return options


def score_option_problems(options: dict[str, dict]) -> list[str]:
    """Everything wrong with per-method options (``parse_score_options``), checked before compute: an
    unknown method, a field that is not the method's option, a value the method refuses."""
    problems = []
    for method, values in options.items():
        if method not in SCORERS:
            problems.append(f"--score-option {method}.*: unknown method {method!r}; choose from {list_methods()}")
            continue
        own = SCORERS.get(method).options
        for name in values:
            if name not in own:
                problems.append(f"--score-option {method}.{name}: {method} has " + (
                    f"the options {', '.join(own)}" if own else "no options"))
        if all(name in own for name in values):
            try:
                ScoreRequest(method, **values).check()
            except (ValueError, FileNotFoundError) as error:
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

    uses = ("arch", "recipe", "seeds", "seed", "epoch_fraction")
    options = ("epoch_fraction",)
    kernel: Callable

    def score_epoch(self, request):
        return request.score_epoch()

    def run(self, dataset, split, request, index, device):
        model = train_for_scoring(dataset, split, request, index, device, epochs=request.score_epoch())
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
    uses = ("arch", "recipe", "seeds", "seed", "subset_fraction", "scores_file")
    options = ("subset_fraction", "scores_file")

    def num_runs(self, request):
        return 0 if request.scores_file else request.seeds

    def score_epoch(self, request):
        return None if request.scores_file else request.recipe.epochs

    def run(self, dataset, split, request, index, device):
        n = len(split.train_ids)
        chosen = np.random.default_rng(run_seed(request, index)).choice(n, round(request.subset_fraction * n), replace=False)
        in_subset = np.zeros(n, dtype=bool)
        in_subset[chosen] = True
        model = train_for_scoring(dataset, split, request, index, device, train_ids=split.train_ids[in_subset])
        with torch.no_grad():
            correct = np.concatenate([
                (model(b.x).argmax(1) == b.y).cpu().numpy() for b in _train_ids_loader(dataset, split, request.recipe, device)
            ])
        return {"in_subset": in_subset, "correct": correct}

    def combine(self, runs, split, request):
        if request.scores_file:
            return read_precomputed(request.scores_file, split.train_ids)
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


# --------------------------------------------------------------------------------------------
# Computing, caching, combining


def _file_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def score_inputs(dataset: Dataset, split: Split, request: ScoreRequest) -> dict:
    """What the scores depend on: the artifact key's inputs."""
    scorer = SCORERS.get(request.method)
    inputs = {
        "dataset": dataset.name,
        "fingerprint": dataset_fingerprint(dataset),
        "split": {"val_size": split.val_size, "seed": split.seed},
        "method": request.method,
        "code": code_for("scores", scorer, *dataset_code(dataset),
                         *((MODELS.get(request.arch),) if "arch" in scorer.uses else ())),
    }
    for name in scorer.uses:
        value = getattr(request, name)
        if name == "scores_file" and value is not None:
            value = {"sha256": _file_digest(value)}
        inputs[name] = value.to_dict() if isinstance(value, Recipe) else value
    return inputs


def _arrays_to_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def score_run(
    dataset: Dataset, split: Split, request: ScoreRequest, index: int, *, device="auto", store: ArtifactStore | None = None
) -> dict:
    """Run ``index`` of the method (cached as a ``score-run`` artifact when a store is given)."""
    scorer = SCORERS.get(request.method)
    device = resolve_device(device) if isinstance(device, str) else device
    if store is None:
        return scorer.run(dataset, split, request, index, device)
    inputs = {**score_inputs(dataset, split, request), "run": index}

    def produce():
        start = time.perf_counter()
        arrays = scorer.run(dataset, split, request, index, device)
        return _arrays_to_bytes(arrays), {"seed": run_seed(request, index), "seconds": time.perf_counter() - start}

    artifact, _ = store.get_or_create("score-run", inputs, produce)
    with np.load(io.BytesIO(artifact.payload), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}


def combine_runs(
    dataset: Dataset, split: Split, request: ScoreRequest, runs: list[dict], *, store: ArtifactStore | None = None
) -> ScoreTable:
    """Combine the runs into the method's ``ScoreTable`` (stored when a store is given)."""
    scorer = SCORERS.get(request.method)
    scores = np.asarray(scorer.combine(runs, split, request), dtype=np.float64)
    if scores.shape != split.train_ids.shape or not np.isfinite(scores).all():
        raise RuntimeError(f"{request.method} produced {scores.shape} scores, some not finite")
    inputs = score_inputs(dataset, split, request)
    key = artifact_key("scores", inputs)
    provenance = {
        **inputs,
        "run_seeds": [run_seed(request, i) for i in range(scorer.num_runs(request))],
        "epoch": scorer.score_epoch(request),
        "key": key,
    }
    table = ScoreTable(split.train_ids.astype(np.int64), scores, scorer.higher_is_harder, provenance, key)
    if store is not None:
        store.put("scores", key, inputs, table.to_bytes(), {"higher_is_harder": table.higher_is_harder, "provenance": provenance})
    return table


def compute_scores(
    dataset: Dataset, split: Split, request: ScoreRequest, *, device="auto", store: ArtifactStore | None = None
) -> ScoreTable:
    """The method's scores for every training-split example: from the store, or computed (run by
    run, each run cached) and stored. ``table.cached`` says which."""
    request.check()
    if store is not None:
        found = store.get("scores", artifact_key("scores", score_inputs(dataset, split, request)))
        if found is not None:
            return ScoreTable.from_artifact(found, cached=True)
    scorer = SCORERS.get(request.method)
    runs = [score_run(dataset, split, request, i, device=device, store=store) for i in range(scorer.num_runs(request))]
    return combine_runs(dataset, split, request, runs, store=store)


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> dict:
    from search_spaces.defaults import defaults_for
    from trainables.cli import add_data_args, add_recipe_args, recipe_from_args, usage_errors, val_size_arg
    from trainables.datasets import load_dataset, validation_split

    parser = argparse.ArgumentParser(
        prog="python -m trainables.scores",
        description="Compute (or fetch from the artifact cache) a pruning method's scores and print a summary.",
    )
    add_data_args(parser)
    parser.add_argument("--method", required=True, help=f"one of: {', '.join(list_methods())}")
    parser.add_argument("--arch", default=None, help="scoring model (default: the dataset's student)")
    parser.add_argument("--seeds", type=int, default=None, help="runs to combine (default 10; memorization: models K, default 10)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the runs")
    parser.add_argument("--epoch-fraction", type=float, default=0.1, help="el2n/grand: score after this fraction of the epochs")
    parser.add_argument("--subset-fraction", type=float, default=0.7, help="memorization: each model's random fraction q")
    parser.add_argument("--scores-file", default=None, help="memorization: precomputed scores (.npz ids/scores or .csv id,score)")
    parser.add_argument("--val-size", type=val_size_arg, default=None, help="validation split size (default: the dataset's)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the validation split")
    parser.add_argument("--store", default=None, help="artifact store: a directory or fsspec URI (default $KDSWEEP_ARTIFACTS or ./artifacts)")
    parser.add_argument("--out", default=None, help="also write the table as CSV (id, score)")
    add_recipe_args(parser)
    args = parser.parse_args(argv)

    with usage_errors(parser):
        defaults = defaults_for(args.dataset)
        request = ScoreRequest(
            method=args.method, arch=args.arch or defaults.student_arch, recipe=recipe_from_args(args),
            seeds=10 if args.seeds is None else args.seeds, seed=args.seed, epoch_fraction=args.epoch_fraction,
            subset_fraction=args.subset_fraction, scores_file=args.scores_file,
        )
        request.check()
        device = resolve_device(args.device)
        dataset = load_dataset(args.dataset, args.data_dir, download=not args.offline, verify=args.verify)
        split = validation_split(dataset.y_train, defaults.val_size if args.val_size is None else args.val_size, args.split_seed)
        store = ArtifactStore(args.store)
        if request.scores_file:  # a malformed file is refused now, with its reason
            read_precomputed(request.scores_file, split.train_ids)
        if args.out:
            check_writable(os.path.dirname(os.path.abspath(args.out)))
    start = time.perf_counter()
    table = compute_scores(dataset, split, request, device=device, store=store)
    summary = {**table.summary(), "seconds": round(time.perf_counter() - start, 3), "store": store.root}
    if args.out:
        import pandas as pd

        pd.DataFrame({"id": table.ids, "score": table.scores}).to_csv(args.out, index=False)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
