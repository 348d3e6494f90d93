"""Per-dataset defaults: teacher and student architectures, the training recipe, validation size.

The literature's recipe for CIFAR/SVHN (DeepCore's defaults, which the paper built on): ResNet-18
(CIFAR variant), 200 epochs, SGD 0.1 / momentum 0.9 / wd 5e-4 / nesterov, cosine, batch 128.
``digits`` gets a recipe that trains in seconds on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.recipe import Recipe
from trainables.registry import UnknownEntryError


@dataclass(frozen=True)
class DatasetDefaults:
    teacher_arch: str
    student_arch: str
    recipe: Recipe
    val_size: int | float  # a count or a fraction of the training set


PAPER_RECIPE = Recipe(epochs=200, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)

DEFAULTS: dict[str, DatasetDefaults] = {
    "cifar10": DatasetDefaults("resnet18_cifar", "resnet18_cifar", PAPER_RECIPE, 5000),
    "cifar100": DatasetDefaults("resnet18_cifar", "resnet18_cifar", PAPER_RECIPE, 5000),
    "svhn": DatasetDefaults("resnet18_cifar", "resnet18_cifar", PAPER_RECIPE, 5000),
    "imagenet": DatasetDefaults(
        "resnet50",
        "resnet18",
        Recipe(epochs=90, batch_size=256, lr=0.1, nesterov=False, weight_decay=1e-4, eval_batch_size=256),
        10000,
    ),
    "digits": DatasetDefaults(
        "small_cnn",
        "small_cnn",
        Recipe(epochs=15, batch_size=64, lr=0.05, weight_decay=5e-4, eval_batch_size=512),
        0.1,
    ),
}

# ``npz:PATH`` files are small studies of 32x32-like images: airbench94's architecture (with this
# project's recipe, not airbench's) and a short recipe.
NPZ_DEFAULTS = DatasetDefaults("airbench_arch", "airbench_arch", Recipe(epochs=30, batch_size=256, lr=0.05), 0.1)


def defaults_for(dataset: str) -> DatasetDefaults:
    if dataset.startswith("npz:"):
        return NPZ_DEFAULTS
    if dataset not in DEFAULTS:
        raise UnknownEntryError(f"no defaults for dataset {dataset!r}; known: {sorted(DEFAULTS)} and npz:PATH")
    return DEFAULTS[dataset]
