"""The search space of alpha (and tau) and the design that chooses each cell's alphas.

Torch-free: the searcher (``sweep.searcher``) and the calibration harness
(``bench/bench_calibration.py``) both take their alphas from here, through real Optuna studies.

A design has two parts:
- ``initial_points(n)``: the trials enqueued first in every cell's study, alpha = 0 (the no-KD
  baseline) first of all;
- ``sampler(seed)``: the Optuna sampler that proposes every later trial.

Designs (``bench/bench_calibration.py`` compares them on simulated sweeps with a known answer):

- ``tpe``: the search as it was first built: the baseline, then a seeded TPE sampler. TPE chases the
  best trial seen so far, which with 1-2 points of trial-to-trial noise is often noise: it piles
  trials near one alpha and leaves the curve's shape (and so the optimum's location) unmeasured.
- ``grid``: the baseline, then an evenly spread grid over the whole range (every trial of the budget
  is enqueued), ordered so that any prefix of the trials is itself spread (0, 1, 1/2, 1/4, 3/4, ...).
  The analysis (``analysis.pooled``) fits a peaked curve per cell whose peak moves smoothly with f;
  for such a model evenly spread points are close to the best design there is (a quadratic's peak is
  located by the slopes on both sides of it, not by points piled at it), and they do not depend on
  the noise of earlier trials. Trials beyond the enqueued ones (a resumed sweep given a larger budget)
  come from a scrambled Sobol sequence.
- ``grid+gp``: the baseline and a spread grid for the first half of the budget (at least 3 trials),
  then Optuna's ``GPSampler`` (a Gaussian process with expected improvement), model-based search
  once the range has been covered.

``DEFAULT_DESIGN`` is the one that met the calibration targets at the smallest budget (see the
README's calibration table and ``bench/bench_calibration.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from contract import ALPHA_RANGE, DEFAULT_TAU
from contract.registry import Registry
from contract.seeding import derive_seed

DEFAULT_DESIGN = "grid"


@dataclass(frozen=True)
class Design:
    """How a design picks alphas: its enqueued points (fractions of the alpha range, in [0, 1], after the
    baseline) and its sampler factory (a seed in, an Optuna sampler out).

    ``continues_sequence``: the sampler walks a sequence whose position it records in the study itself
    (Optuna's QMC sampler counts its samples in the study's system attributes, per seed), so it is
    seeded from the cell alone and a resumed sweep goes on along the same sequence. A model-based
    sampler (TPE, GP) reads the study's whole history instead; it is seeded from the cell and the
    trials the study holds when it is opened, so a resumed sweep does not replay its random draws."""

    initial: Callable[[int], list[float]]
    sampler: Callable[[int], object]
    continues_sequence: bool = False


DESIGNS: Registry[Design] = Registry("alpha design")


def list_designs() -> list[str]:
    return DESIGNS.names()


def _tpe_sampler(seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def spread(n: int) -> list[float]:
    """``n`` points of the unit interval, evenly spread and ordered so that every prefix is spread too:
    1, then 1/2, then 1/4 and 3/4, ... (bisection order of an even grid of n + 1 points that starts at
    the baseline's 0, which the caller places first)."""
    if n <= 0:
        return []
    grid = [i / n for i in range(1, n + 1)]
    order, seen = [], set()
    step = n
    while len(order) < n:
        for i in range(step, n + 1, step):  # multiples of step, coarse to fine
            if i not in seen:
                seen.add(i)
                order.append(i)
        step = max(1, step // 2) if step > 1 else 1
        if step == 1 and len(order) < n:
            order += [i for i in range(1, n + 1) if i not in seen]
            break
    return [grid[i - 1] for i in order]


def _qmc_sampler(seed: int):
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed % (2**32),
                                          warn_independent_sampling=False, warn_asynchronous_seeding=False)


def _gp_initial(n: int) -> list[float]:
    """The space-filling part of ``grid+gp``: half the budget after the baseline, at least 2 points."""
    return spread(min(n, max(2, (n + 1) // 2)))


def _gp_sampler(seed: int):
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # n_startup_trials=0: the enqueued baseline and grid are the start-up; every later trial is the GP's
    return optuna.samplers.GPSampler(seed=seed % (2**32), n_startup_trials=0, deterministic_objective=False)


DESIGNS.register("tpe")(Design(initial=lambda n: [], sampler=_tpe_sampler))
DESIGNS.register("grid")(Design(initial=spread, sampler=_qmc_sampler, continues_sequence=True))
DESIGNS.register("grid+gp")(Design(initial=_gp_initial, sampler=_gp_sampler))


@dataclass(frozen=True)
class AlphaSpace:
    """alpha in [low, high]; tau fixed (one value) or searched on a log scale (two values)."""

    alpha_range: tuple[float, float] = ALPHA_RANGE
    tau: tuple[float, ...] = (DEFAULT_TAU,)
    design: str = DEFAULT_DESIGN

    def problems(self) -> list[str]:
        """Everything wrong with this space, as messages for the command line."""
        found = []
        low, high = self.alpha_range
        if not 0 <= low < high <= 1:  # also refuses NaN (every comparison with it is False)
            found.append(f"--alpha-range must satisfy 0 <= low < high <= 1, got {low} {high}")
        tau = list(self.tau)
        # inf turns the soft labels into a uniform distribution (chance-level students); NaN is no number
        if len(tau) not in (1, 2) or not all(0 < t < math.inf for t in tau) or (len(tau) == 2 and tau[0] >= tau[1]):
            found.append(f"--tau takes one finite value > 0 (fixed) or two increasing finite values > 0 (searched), got {tau}")
        if self.design not in DESIGNS:
            found.append(f"unknown alpha design {self.design!r}; choose one of {list_designs()}")
        return found

    @property
    def searches_tau(self) -> bool:
        return len(self.tau) == 2

    def distributions(self) -> dict:
        import optuna

        space = {"alpha": optuna.distributions.FloatDistribution(*self.alpha_range)}
        if self.searches_tau:
            space["tau"] = optuna.distributions.FloatDistribution(*self.tau, log=True)
        return space

    def initial_points(self, n_trials: int) -> list[dict]:
        """The points enqueued first in a cell's study: the alpha = 0 baseline (at the range's low end
        when 0 is outside it), then the design's space-filling points, at most ``n_trials`` in all."""
        low, high = self.alpha_range
        unit = DESIGNS.get(self.design).initial(max(0, n_trials - 1))
        alphas = [low] + [low + u * (high - low) for u in unit]
        points = []
        for alpha in alphas[:n_trials]:
            point = {"alpha": float(alpha)}
            if self.searches_tau:
                point["tau"] = float((self.tau[0] * self.tau[1]) ** 0.5)  # the log-scale midpoint
            points.append(point)
        return points

    def sampler(self, cell: str, trials_so_far: int = 0, seed: int = 0):
        """The sampler of one cell's study (``cell``: the study's name), built once when the study is
        opened and kept as long as it is: a sampler rebuilt before every ask forgets its state (a
        scrambled Sobol sequence becomes independent uniform points). ``trials_so_far``: the trials the
        study holds when it is opened (see ``Design.continues_sequence``); ``seed``: the sweep's."""
        design = DESIGNS.get(self.design)
        parts = ("sampler", seed, cell) if design.continues_sequence else ("sampler", seed, cell, trials_so_far)
        return design.sampler(derive_seed(*parts))

    def fixed_tau(self) -> float | None:
        return None if self.searches_tau else float(self.tau[0])
