"""Teacher: trained once on the full training split; saved with its metadata.

    python -m trainables.teacher --dataset digits --out teacher.pt

The checkpoint is a dict of tensors and plain values (``state_dict`` and ``meta``), written
atomically and read back with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import trainables
from trainables.datasets import Dataset, Split, load_dataset, validation_split
from trainables.models import build_model
from trainables.recipe import Recipe, resolve_device
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
        "version": trainables.__version__,
        "torch": str(torch.__version__),
    }
    return Teacher(run.model, meta)


def save_teacher(teacher: Teacher, path: str | os.PathLike) -> Path:
    """Write the checkpoint atomically: a temporary file in the same folder, then a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in teacher.model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "meta": teacher.meta, "state_dict": state}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_teacher(path: str | os.PathLike, device: torch.device | str = "cpu", channels_last: bool = False) -> Teacher:
    """Read a checkpoint (``weights_only=True``: no code runs) and rebuild the model in eval mode."""
    device = resolve_device(device) if isinstance(device, str) else device
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a teacher checkpoint of format {CHECKPOINT_FORMAT}")
    meta = payload["meta"]
    model = build_model(meta["arch"], meta["num_classes"], meta["in_channels"])
    model.load_state_dict(payload["state_dict"])
    recipe = Recipe.from_dict(meta["recipe"]).replace(channels_last=channels_last)
    model = prepare_model(model, recipe, device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return Teacher(model, meta)


def print_epoch(report: EpochReport) -> None:
    val = f" val_acc {report.val_acc:.4f}" if report.val_acc is not None else ""
    print(
        f"epoch {report.epoch}/{report.epochs} loss {report.train_loss:.4f} "
        f"train_acc {report.train_acc:.4f}{val} ({report.seconds:.1f}s)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> dict:
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
    parser.add_argument("--out", required=True, help="checkpoint path to write")
    add_recipe_args(parser)
    args = parser.parse_args(argv)

    from trainables.models import check_model_name

    # Bad input is reported as a usage error before any training starts.
    with usage_errors(parser):
        defaults = defaults_for(args.dataset)
        arch = args.arch or defaults.teacher_arch
        check_model_name(arch)
        recipe = recipe_from_args(args)
        device = resolve_device(args.device)
        dataset = load_dataset(args.dataset, args.data_dir, download=args.download, verify=args.verify)
        val_size = defaults.val_size if args.val_size is None else args.val_size
        split = validation_split(dataset.y_train, val_size, args.split_seed)
    teacher = train_teacher(
        dataset, arch=arch, recipe=recipe, split=split, seed=args.seed, device=device, on_epoch=print_epoch
    )
    save_teacher(teacher, args.out)
    summary = {k: teacher.meta[k] for k in ("dataset", "arch", "seed", "val_acc", "test_acc", "epochs_run")}
    summary["checkpoint"] = str(args.out)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
