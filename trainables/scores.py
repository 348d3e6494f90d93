"""Pruning scores: computing, caching and combining a method's runs into one score per training-split
example (the methods and their options: ``trainables.scorers``).

    python -m trainables.scores --dataset digits --method el2n --seeds 4

Runs and combined tables are cached in the artifact store under keys that hash every input
(``trainables.artifacts``), so a sweep can farm the runs out as parallel tasks (``score_run``) and
combine them (``combine_runs``), and a later sweep reuses both.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.recipe import Recipe
from contract.storage import check_writable
from trainables.artifacts import ArtifactStore, artifact_key, code_for
from trainables.datasets import Dataset, dataset_code, dataset_fingerprint
from trainables.splits import Split
from trainables.device import resolve_device
from trainables.models import MODELS
from trainables.scorers import (SCORERS, ScoreRequest, list_methods, option_fields, parse_method_options,
                                read_precomputed, run_seed)


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
    for name, value in request.key_fields().items():
        if name in request.file_fields() and value is not None:
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
    from contract.plugins import load_plugins_first

    plugin_problem = load_plugins_first(argv)  # before the parser: its help lists the plugins' entries
    from search_spaces.defaults import defaults_for
    from trainables.cli import add_data_args, add_recipe_args, recipe_from_args, usage_errors, val_size_arg
    from trainables.datasets import load_dataset
    from trainables.splits import validation_split

    parser = argparse.ArgumentParser(
        prog="python -m trainables.scores",
        description="Compute (or fetch from the artifact cache) a pruning method's scores and print a summary.",
    )
    add_data_args(parser)
    parser.add_argument("--method", required=True, help=f"one of: {', '.join(list_methods())}")
    parser.add_argument("--arch", default=None, help="scoring model (default: the dataset's student)")
    parser.add_argument("--seeds", type=int, default=None, help="runs to combine (default 10; memorization: models K, default 10)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the runs")
    parser.add_argument("--option", action="append", default=[], metavar="FIELD=VALUE",
                        help="one of the method's own options, repeatable: " + "; ".join(
                            f"{method}: " + ", ".join(f"{f.name} (default {f.default})" for f in option_fields(method))
                            for method in list_methods() if option_fields(method)))
    parser.add_argument("--val-size", type=val_size_arg, default=None, help="validation split size (default: the dataset's)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the validation split")
    parser.add_argument("--store", default=None, help="artifact store: a directory or fsspec URI (default $KDSWEEP_ARTIFACTS or ./artifacts)")
    parser.add_argument("--out", default=None, help="also write the table as CSV (id, score)")
    add_recipe_args(parser)
    if plugin_problem:
        parser.error(plugin_problem)
    args = parser.parse_args(argv)

    with usage_errors(parser):
        defaults = defaults_for(args.dataset)
        request = ScoreRequest(
            method=args.method, arch=args.arch or defaults.student_arch, recipe=recipe_from_args(args),
            seeds=10 if args.seeds is None else args.seeds, seed=args.seed,
            options=parse_method_options(args.method, args.option) if args.method in SCORERS else None,
        )
        request.check()
        device = resolve_device(args.device)
        dataset = load_dataset(args.dataset, args.data_dir, download=not args.offline, verify=args.verify)
        split = validation_split(dataset.y_train, defaults.val_size if args.val_size is None else args.val_size, args.split_seed)
        store = ArtifactStore(args.store)
        if getattr(request.options, "scores_file", None):  # a malformed file is refused now, with its reason
            read_precomputed(request.options.scores_file, split.train_ids)
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
