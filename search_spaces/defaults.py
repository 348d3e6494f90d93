"""Per-dataset defaults: teacher and student architectures, the training recipe, validation size.

The literature's recipe for CIFAR/SVHN: ResNet-18 (CIFAR variant) and the recipe ``Recipe``'s
defaults are (``contract.recipe``).
``digits`` gets a recipe that trains in seconds on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract.recipe import Recipe
from contract.registry import UnknownEntryError


@dataclass(frozen=True)
class DatasetDefaults:
    teacher_arch: str
    student_arch: str
    recipe: Recipe
    val_size: int | float  # a count or a fraction of the training set


PAPER_RECIPE = Recipe()  # a Recipe's defaults are the literature's recipe

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
