"""Sweep profiles: how much compute one study spends.

- ``demo``: the README's quickstart, a study that shows what the method does in minutes on a laptop
  CPU: random against one score-based method (EL2N) at a few fractions, students that train to a
  minimum number of steps however small their subset, enough trials per cell for intervals.
- ``smoke``: seconds on a laptop CPU, for checking the plumbing (4 epochs: students barely learn).
- ``fast``: minutes per student on a GPU with ``airbench_arch`` (airbench94's architecture, trained
  with this project's one-cycle recipe, not airbench's); small_cnn on digits.
- ``paper``: the literature's recipe (ResNet-18, 200 epochs, 10 scoring runs; see ``defaults``).

Trials per cell: 16 in the fast and paper profiles. On simulated sweeps (``bench/bench_calibration.py
--designs grid --trials 12 16 --sweeps 150 --truths none inverse``) 16 gives 73-85 % power per method
for a paper-like inverse relation at a family-wise false-finding rate of 5 %; 12 gives 59-70 %, 8
about 45 %. The demo keeps 12 to finish in about three minutes on a laptop.

A profile fixes the architectures' defaults, the recipe shared by teacher, scoring models and
students, the number of scoring runs per method, the default trials per cell and, optionally, the
default methods and fractions (None: every method, ``sweep.plan.DEFAULT_FRACTIONS``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from contract.recipe import Recipe
from search_spaces.defaults import defaults_for
from contract.registry import Registry


@dataclass(frozen=True)
class ProfileChoice:
    teacher_arch: str
    student_arch: str
    recipe: Recipe
    score_seeds: int
    trials_per_cell: int
    methods: tuple[str, ...] | None = None
    fractions: tuple[float, ...] | None = None


PROFILES: Registry = Registry("profile")


def list_profiles() -> list[str]:
    return PROFILES.names()


def profile_for(name: str, dataset: str) -> ProfileChoice:
    return PROFILES.get(name)(dataset)


@PROFILES.register("demo")
def demo(dataset: str) -> ProfileChoice:
    return replace(fast(dataset), methods=("random", "el2n"), fractions=(0.1, 0.2, 0.4, 0.7, 1.0), score_seeds=2,
                   trials_per_cell=12)


@PROFILES.register("smoke")
def smoke(dataset: str) -> ProfileChoice:
    base = defaults_for(dataset).recipe
    recipe = base.replace(epochs=4, batch_size=64, lr=0.05, warmup_epochs=0.0, eval_batch_size=512)
    return ProfileChoice("small_cnn", "small_cnn", recipe, score_seeds=2, trials_per_cell=3)


@PROFILES.register("fast")
def fast(dataset: str) -> ProfileChoice:
    choice = defaults_for(dataset).fast  # each dataset's own (search_spaces.defaults)
    return ProfileChoice(choice.teacher_arch, choice.student_arch, choice.recipe, choice.score_seeds, 16)


@PROFILES.register("paper")
def paper(dataset: str) -> ProfileChoice:
    defaults = defaults_for(dataset)
    return ProfileChoice(defaults.teacher_arch, defaults.student_arch, defaults.recipe, 10, 16)
