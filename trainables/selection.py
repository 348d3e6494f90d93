"""Choosing the kept subset of the training split from scores.

``select`` keeps exactly ``round(f * N)`` ids (with ``class_balanced``, ``round(f * N_c)`` of every
class c), deterministically for a seed. The score's orientation is always passed explicitly
(``higher_is_harder``); selection never guesses it.

Strategies:

- ``hard``: the hardest examples first (the paper's setting, and the usual one for large f);
- ``easy``: the easiest first;
- ``ccs``: coverage-centric coreset selection (Zheng et al., ICLR 2023): drop the hardest ``beta``
  fraction (mislabelled and ambiguous examples), split the remaining score range into ``strata``
  equal-width bins, and spread the budget over the bins, smallest bins first, each taking at most an
  equal share of what is left, drawn at random within the bin.

Ties in the score are broken at random (seeded), never by id order.
"""

from __future__ import annotations

import numpy as np

STRATEGIES = ("hard", "easy", "ccs")


def check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise ValueError(f"the kept fraction f must lie in (0, 1], got {fraction}")


def random_subset(ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``round(fraction * len(ids))`` ids (at least one) drawn without replacement; sorted."""
    check_fraction(fraction)
    ids = np.asarray(ids, dtype=np.int64)
    count = max(1, int(round(fraction * len(ids))))
    chosen = np.random.default_rng(seed).choice(ids, size=count, replace=False)
    return np.sort(chosen)


def _hardest_first(difficulty: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions sorted by decreasing difficulty, ties in random order."""
    return np.lexsort((rng.random(len(difficulty)), -difficulty))


def _ccs(difficulty: np.ndarray, count: int, beta: float, strata: int, rng: np.random.Generator) -> np.ndarray:
    order = _hardest_first(difficulty, rng)
    # Drop the hardest beta fraction, but never so many that the budget cannot be met.
    dropped = min(int(round(beta * len(order))), len(order) - count)
    pool = order[dropped:]
    values = difficulty[pool]
    low, high = values.min(), values.max()
    if high == low:
        bins = np.zeros(len(pool), dtype=np.int64)
    else:
        bins = np.minimum(((values - low) / (high - low) * strata).astype(np.int64), strata - 1)
    members = [pool[bins == b] for b in range(strata)]
    members = [m for m in members if len(m)]
    members.sort(key=len)
    chosen, budget = [], count
    for i, group in enumerate(members):
        share = min(len(group), budget // (len(members) - i))
        chosen.append(rng.choice(group, size=share, replace=False))
        budget -= share
    chosen = np.concatenate(chosen) if chosen else np.empty(0, np.int64)
    if budget:  # integer shares can leave a few: take them from the largest bins' leftovers
        rest = np.setdiff1d(pool, chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, size=budget, replace=False)])
    return chosen


def _select_positions(difficulty, count, strategy, beta, strata, rng) -> np.ndarray:
    if count == 0:
        return np.empty(0, np.int64)
    if strategy == "hard":
        return _hardest_first(difficulty, rng)[:count]
    if strategy == "easy":
        return _hardest_first(-difficulty, rng)[:count]
    return _ccs(difficulty, count, beta, strata, rng)


def select(
    ids: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    *,
    higher_is_harder: bool,
    strategy: str = "hard",
    class_balanced: bool = False,
    beta: float = 0.1,
    strata: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """The kept ids (sorted) for fraction ``f`` of ``ids``; ``scores`` and ``labels`` align with ``ids``."""
    check_fraction(fraction)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {STRATEGIES}")
    if not isinstance(higher_is_harder, (bool, np.bool_)):
        raise TypeError("higher_is_harder must be True or False: a score's orientation is never guessed")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must lie in [0, 1), got {beta}")
    if strata < 1:
        raise ValueError(f"strata must be >= 1, got {strata}")
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if not (len(ids) == len(scores) == len(labels)):
        raise ValueError("ids, scores and labels must have the same length")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    difficulty = scores if higher_is_harder else -scores
    rng = np.random.default_rng(seed)
    if class_balanced:
        kept = []
        for label in np.unique(labels):
            members = np.flatnonzero(labels == label)
            count = int(round(fraction * len(members)))
            kept.append(members[_select_positions(difficulty[members], count, strategy, beta, strata, rng)])
        positions = np.concatenate(kept)
    else:
        count = int(round(fraction * len(ids)))
        positions = _select_positions(difficulty, count, strategy, beta, strata, rng)
    if len(positions) == 0:
        raise ValueError(f"f = {fraction} keeps no example of {len(ids)}")
    return np.sort(ids[positions])
