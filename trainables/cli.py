"""Command-line pieces shared by ``trainables.teacher``, ``trainables.student`` and ``trainables.scores``
(and ``add_download_args`` by ``sweep.run`` too)."""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from dataclasses import fields

from search_spaces.defaults import defaults_for
from trainables.datasets import list_datasets
from contract.recipe import PRECISIONS, SCHEDULES, Recipe


def add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", required=True, help=", ".join(list_datasets()))
    group.add_argument("--data-dir", default=None, help="where the dataset files are (default $KDSWEEP_DATA_DIR or ./data)")
    add_download_args(group)
    group.add_argument(
        "--no-verify", dest="verify", action="store_false",
        help="skip the md5 check of the raw CIFAR/SVHN files (for re-packed copies)",
    )
    group.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    group.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                       help="a module of yours that registers models, datasets or pruning methods (a module name or a "
                       ".py file; repeatable), imported before anything else")


def add_download_args(group) -> None:
    """``--offline`` (and the deprecated ``--download``), shared by ``sweep.run`` and the trainables
    commands: a missing CIFAR/SVHN is downloaded into the data dir unless ``--offline``."""
    group.add_argument("--offline", action="store_true",
                       help="never download: a missing CIFAR/SVHN is an error naming the files to put in the data dir "
                       "(default: downloaded there when missing)")
    group.add_argument("--download", action="store_true",
                       help="deprecated, no effect: a missing CIFAR/SVHN is now downloaded by default (see --offline)")


def val_size_arg(text: str) -> int | float:
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


# Recipe fields that get a flag; booleans get --x / --no-x.
_RECIPE_FLAGS = {
    "epochs": int, "batch_size": int, "lr": float, "momentum": float, "nesterov": bool,
    "weight_decay": float, "schedule": SCHEDULES, "warmup_epochs": float, "label_smoothing": float,
    "augment": bool, "precision": PRECISIONS, "channels_last": bool, "compile": bool, "eval_batch_size": int,
    "min_steps": int,
}
assert set(_RECIPE_FLAGS) == {f.name for f in fields(Recipe)}, "every recipe field needs a flag"


def add_recipe_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recipe (defaults: the dataset's recipe in search_spaces.defaults)")
    for name, kind in _RECIPE_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(kind, tuple):
            group.add_argument(flag, dest=name, choices=kind, default=None)
        else:
            group.add_argument(flag, dest=name, type=kind, default=None)


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """The dataset's default recipe with every flag the user gave applied on top."""
    given = {name: getattr(args, name) for name in _RECIPE_FLAGS if getattr(args, name) is not None}
    return defaults_for(args.dataset).recipe.replace(**given)


@contextmanager
def usage_errors(parser: argparse.ArgumentParser):
    """Turn a bad-input exception raised while setting up a run into argparse's usage error
    (message on stderr, exit status 2), instead of a traceback."""
    from contract.registry import UnknownEntryError

    try:
        yield
    except (ValueError, TypeError, UnknownEntryError, FileNotFoundError, PermissionError) as error:
        parser.error(str(error))
