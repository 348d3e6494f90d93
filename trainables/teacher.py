"""Teacher: trained once on the full training split; saved with its metadata.

    python -m trainables.teacher --dataset digits --out teacher.pt

The checkpoint is a dict of tensors and plain values (``state_dict`` and ``meta``), written
atomically and read back with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import contract
from trainables.artifacts import ArtifactStore, code_for
from trainables.datasets import Dataset, dataset_code, dataset_fingerprint, load_dataset
from trainables.splits import Split, validation_split
from trainables.models import MODELS, build_model
from trainables.device import resolve_device
from contract.recipe import Recipe
from trainables.train import EpochReport, prepare_model, train_on_ids

CHECKPOINT_FORMAT = 1


@dataclass
class Teacher:
    model: nn.Module
    meta: dict

    def check_compatible(self, dataset: Dataset, split: Split) -> None:
        """A teacher may only distil onto the dataset and split it was trained on: a teacher that
        saw the student's validation examples would leak them into alpha's selection."""
        meta = self.meta
        if meta["dataset"] != dataset.name:
            raise ValueError(f"teacher was trained on {meta['dataset']!r}, not {dataset.name!r}")
        if meta["num_classes"] != dataset.num_classes:
            raise ValueError(f"teacher has {meta['num_classes']} classes, the dataset {dataset.num_classes}")
        if (meta["split"]["val_size"], meta["split"]["seed"]) != (split.val_size, split.seed):
            raise ValueError(
                f"teacher's validation split (val_size={meta['split']['val_size']}, seed="
                f"{meta['split']['seed']}) differs from this run's (val_size={split.val_size}, "
                f"seed={split.seed})"
            )


def train_teacher(
    dataset: Dataset,
    *,
    arch: str,
    recipe: Recipe,
    split: Split,
    seed: int = 0,
    device: torch.device | str = "auto",
    on_epoch=None,
) -> Teacher:
    """Train ``arch`` on every training-split example of ``dataset``; returns the model and metadata."""
    device = resolve_device(device) if isinstance(device, str) else device
    run = train_on_ids(
        dataset, arch=arch, train_ids=split.train_ids, val_ids=split.val_ids, recipe=recipe, seed=seed,
        device=device, on_epoch=on_epoch,
    )
    meta = {
        "kind": "teacher",
        "dataset": dataset.name,
        "arch": arch,
        "num_classes": dataset.num_classes,
        "in_channels": dataset.in_channels,
        "recipe": recipe.to_dict(),
        "seed": seed,
        "split": {
            "val_size": split.val_size,
            "seed": split.seed,
            "num_train": int(len(split.train_ids)),
            "num_val": int(len(split.val_ids)),
        },
        "val_acc": run.val.acc if run.val else None,
        "test_acc": run.test.acc,
        "epochs_run": len(run.history),
        "history": [report.to_dict() for report in run.history],
        "version": contract.__version__,
        "torch": str(torch.__version__),
    }
    return Teacher(run.model, meta)


def teacher_to_bytes(teacher: Teacher) -> bytes:
    """The checkpoint: plain tensors and values only, so ``weights_only=True`` can read it."""
    state = {k: v.detach().cpu().contiguous() for k, v in teacher.model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "meta": teacher.meta, "state_dict": state}, buffer)
    return buffer.getvalue()


def teacher_from_bytes(data: bytes, device: torch.device | str = "cpu", channels_last: bool = False, source: str = "checkpoint") -> Teacher:
    """Rebuild a teacher in eval mode, with frozen parameters (``weights_only=True``: no code runs)."""
    device = resolve_device(device) if isinstance(device, str) else device
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{source} is not a teacher checkpoint of format {CHECKPOINT_FORMAT}")
    meta = payload["meta"]
    model = build_model(meta["arch"], meta["num_classes"], meta["in_channels"])
    model.load_state_dict(payload["state_dict"])
    recipe = Recipe.from_dict(meta["recipe"]).replace(channels_last=channels_last)
    model = prepare_model(model, recipe, device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return Teacher(model, meta)


def save_teacher(teacher: Teacher, path: str | os.PathLike) -> Path:
    """Write the checkpoint atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(teacher_to_bytes(teacher))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_teacher(path: str | os.PathLike, device: torch.device | str = "cpu", channels_last: bool = False) -> Teacher:
    return teacher_from_bytes(Path(path).read_bytes(), device, channels_last, source=str(path))


def teacher_inputs(dataset: Dataset, split: Split, *, arch: str, recipe: Recipe, seed: int) -> dict:
    """What a teacher depends on: its artifact key's inputs."""
    return {
        "dataset": dataset.name,
        "fingerprint": dataset_fingerprint(dataset),
        "split": {"val_size": split.val_size, "seed": split.seed},
        "arch": arch,
        "recipe": recipe.to_dict(),
        "seed": seed,
        "code": code_for("teacher", MODELS.get(arch), *dataset_code(dataset)),
    }


def get_or_train_teacher(
    dataset: Dataset,
    split: Split,
    *,
    arch: str,
    recipe: Recipe,
    seed: int = 0,
    device: torch.device | str = "auto",
    store: ArtifactStore,
    on_epoch=None,
) -> tuple[Teacher, bool]:
    """(teacher, was_cached): the teacher from the artifact store, or trained and stored there."""
    device = resolve_device(device) if isinstance(device, str) else device

    def produce():
        teacher = train_teacher(dataset, arch=arch, recipe=recipe, split=split, seed=seed, device=device, on_epoch=on_epoch)
        return teacher_to_bytes(teacher), {k: teacher.meta[k] for k in ("val_acc", "test_acc", "epochs_run")}

    inputs = teacher_inputs(dataset, split, arch=arch, recipe=recipe, seed=seed)
    artifact, cached = store.get_or_create("teacher", inputs, produce)
    teacher = teacher_from_bytes(artifact.payload, device, recipe.channels_last, source=f"teacher artifact {artifact.key}")
    teacher.meta["key"] = artifact.key
    return teacher, cached


def print_epoch(report: EpochReport) -> None:
    val = f" val_acc {report.val_acc:.4f}" if report.val_acc is not None else ""
    print(
        f"epoch {report.epoch}/{report.epochs} loss {report.train_loss:.4f} "
        f"train_acc {report.train_acc:.4f}{val} ({report.seconds:.1f}s)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> dict:
    from contract.plugins import load_plugins_first

    plugin_problem = load_plugins_first(argv)  # before the parser: its help lists the plugins' entries
    from search_spaces.defaults import defaults_for
    from trainables.cli import add_data_args, add_recipe_args, recipe_from_args, usage_errors, val_size_arg

    parser = argparse.ArgumentParser(
        prog="python -m trainables.teacher", description="Train a teacher on the full training split."
    )
    add_data_args(parser)
    parser.add_argument("--arch", default=None, help="architecture (default: the dataset's teacher)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch-order seed")
    parser.add_argument("--val-size", type=val_size_arg, default=None,
                        help="validation split: a count or a fraction (default: the dataset's)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the validation split")
    parser.add_argument("--out", default=None, help="checkpoint path to write")
    parser.add_argument("--store", default=None,
                        help="artifact store (directory or fsspec URI): reuse the teacher cached there, or train and cache it")
    add_recipe_args(parser)
    if plugin_problem:
        parser.error(plugin_problem)
    args = parser.parse_args(argv)

    from trainables.models import check_model_name

    from contract.storage import check_writable

    # Bad input is reported as a usage error before any training starts.
    with usage_errors(parser):
        if not (args.out or args.store):
            raise ValueError("give --out PATH, --store DIR, or both")
        defaults = defaults_for(args.dataset)
        arch = args.arch or defaults.teacher_arch
        check_model_name(arch)
        recipe = recipe_from_args(args)
        device = resolve_device(args.device)
        dataset = load_dataset(args.dataset, args.data_dir, download=not args.offline, verify=args.verify)
        val_size = defaults.val_size if args.val_size is None else args.val_size
        split = validation_split(dataset.y_train, val_size, args.split_seed)
        if args.out:  # found unwritable now, not after the training it would have lost
            check_writable(os.path.dirname(os.path.abspath(args.out)))
    if args.store:
        teacher, cached = get_or_train_teacher(
            dataset, split, arch=arch, recipe=recipe, seed=args.seed, device=device, store=ArtifactStore(args.store),
            on_epoch=print_epoch,
        )
    else:
        teacher, cached = train_teacher(
            dataset, arch=arch, recipe=recipe, split=split, seed=args.seed, device=device, on_epoch=print_epoch
        ), False
    if args.out:
        save_teacher(teacher, args.out)
    summary = {k: teacher.meta.get(k) for k in ("dataset", "arch", "seed", "val_acc", "test_acc", "epochs_run", "key")}
    summary.update(checkpoint=args.out, cached=cached)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
