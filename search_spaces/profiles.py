"""Sweep profiles: how much compute one study spends.

- ``smoke``: seconds to minutes on a laptop CPU (small_cnn, a few epochs, 2 scoring runs).
- ``fast``: minutes per student on a GPU with the airbench net (small_cnn on digits).
- ``paper``: the literature's recipe (ResNet-18, 200 epochs, 10 scoring runs; see ``defaults``).

A profile fixes the architectures' defaults, the recipe shared by teacher, scoring models and
students, the number of scoring runs per method, and the default trials per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

from search_spaces.defaults import defaults_for
from trainables.recipe import Recipe
from trainables.registry import Registry


@dataclass(frozen=True)
class ProfileChoice:
    teacher_arch: str
    student_arch: str
    recipe: Recipe
    score_seeds: int
    trials_per_cell: int


PROFILES: Registry = Registry("profile")


def list_profiles() -> list[str]:
    return PROFILES.names()


def profile_for(name: str, dataset: str) -> ProfileChoice:
    return PROFILES.get(name)(dataset)


@PROFILES.register("smoke")
def smoke(dataset: str) -> ProfileChoice:
    base = defaults_for(dataset).recipe
    recipe = base.replace(epochs=4, batch_size=64, lr=0.05, warmup_epochs=0.0, eval_batch_size=512)
    return ProfileChoice("small_cnn", "small_cnn", recipe, score_seeds=2, trials_per_cell=3)


@PROFILES.register("fast")
def fast(dataset: str) -> ProfileChoice:
    if dataset == "digits":
        return ProfileChoice("small_cnn", "small_cnn", defaults_for(dataset).recipe.replace(epochs=10), 4, 8)
    if dataset == "imagenet":
        recipe = defaults_for(dataset).recipe.replace(epochs=16, schedule="onecycle")
        return ProfileChoice("resnet50", "resnet18", recipe, 2, 8)
    recipe = Recipe(epochs=20, batch_size=256, lr=0.1, weight_decay=5e-4, schedule="onecycle", label_smoothing=0.0)
    return ProfileChoice("airbench", "airbench", recipe, 4, 8)


@PROFILES.register("paper")
def paper(dataset: str) -> ProfileChoice:
    defaults = defaults_for(dataset)
    return ProfileChoice(defaults.teacher_arch, defaults.student_arch, defaults.recipe, 10, 16)
