"""Per-dataset defaults: teacher and student architectures, the training recipe, validation size.

The literature's recipe for CIFAR/SVHN: ResNet-18 (CIFAR variant) and the recipe ``Recipe``'s
defaults are (``contract.recipe``).
``digits`` gets a recipe that trains in seconds on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.recipe import Recipe
from contract.registry import Registry, UnknownEntryError


@dataclass(frozen=True)
class FastChoice:
    """What the ``fast`` profile trains on a dataset: minutes per student on a GPU."""

    teacher_arch: str
    student_arch: str
    recipe: Recipe
    score_seeds: int


# 32x32 images (CIFAR, SVHN, npz studies): airbench94's architecture, trained with this project's one-cycle recipe.
AIRBENCH_FAST = FastChoice("airbench_arch", "airbench_arch",
                           Recipe(epochs=20, batch_size=256, lr=0.1, weight_decay=5e-4, schedule="onecycle",
                                  label_smoothing=0.0, min_steps=1000), 4)


@dataclass(frozen=True)
class DatasetDefaults:
    """A dataset's defaults, registered under its name (``DATASET_DEFAULTS``) beside its loader's
    registration: the paper profile's architectures and recipe, the validation size, and the fast
    profile's choice. Every profile builds on these, so a dataset registered with its defaults works
    with every profile."""

    teacher_arch: str
    student_arch: str
    recipe: Recipe
    val_size: int | float  # a count or a fraction of the training set
    fast: FastChoice = AIRBENCH_FAST


DATASET_DEFAULTS: Registry[DatasetDefaults] = Registry("dataset's defaults")
register_defaults = DATASET_DEFAULTS.register

PAPER_RECIPE = Recipe()  # a Recipe's defaults are the literature's recipe
_DIGITS_RECIPE = Recipe(epochs=15, batch_size=64, lr=0.05, weight_decay=5e-4, eval_batch_size=512)
_IMAGENET_RECIPE = Recipe(epochs=90, batch_size=256, lr=0.1, nesterov=False, weight_decay=1e-4, eval_batch_size=256)

for _name in ("cifar10", "cifar100", "svhn"):
    register_defaults(_name)(DatasetDefaults("resnet18_cifar", "resnet18_cifar", PAPER_RECIPE, 5000))
register_defaults("imagenet")(DatasetDefaults(
    "resnet50", "resnet18", _IMAGENET_RECIPE, 10000,
    fast=FastChoice("resnet50", "resnet18", _IMAGENET_RECIPE.replace(epochs=16, schedule="onecycle"), 2)))
# digits trains in seconds on a laptop CPU; its fast profile trains 10 epochs and at least 200 steps
# (f = 0.1 keeps 2 batches per epoch: 4 epochs would be 8 steps).
register_defaults("digits")(DatasetDefaults(
    "small_cnn", "small_cnn", _DIGITS_RECIPE, 0.1,
    fast=FastChoice("small_cnn", "small_cnn", _DIGITS_RECIPE.replace(epochs=10, min_steps=200), 4)))

# ``npz:PATH`` files and ``folder:PATH`` trees are small studies of 32x32-like images: airbench94's
# architecture (with this project's recipe, not airbench's) and a short recipe.
NPZ_DEFAULTS = DatasetDefaults("airbench_arch", "airbench_arch", Recipe(epochs=30, batch_size=256, lr=0.05), 0.1)


def defaults_for(dataset: str) -> DatasetDefaults:
    if dataset.startswith(("npz:", "folder:")):
        return NPZ_DEFAULTS
    if dataset not in DATASET_DEFAULTS:
        raise UnknownEntryError(
            f"no defaults for dataset {dataset!r}; known: {DATASET_DEFAULTS.names()}, npz:PATH and folder:PATH. Register them beside "
            f"its loader: register_defaults({dataset!r})(DatasetDefaults(...)) (search_spaces.defaults)")
    return DATASET_DEFAULTS.get(dataset)
