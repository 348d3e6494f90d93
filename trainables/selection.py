"""Choosing the kept subset of the training split.

Score-based selection (hard/easy/ccs, class balancing) comes with the pruning scores; the random
subset here is what ``random`` pruning keeps.
"""

from __future__ import annotations

import numpy as np


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
