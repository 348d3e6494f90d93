"""The validation split and label noise, both seeded and pure functions of their inputs.

The validation split (``validation_split``) is carved from the training set, class-stratified and
seeded; alpha is tuned on it, and the test set is only ever reported.

Label noise (``with_label_noise``): a copy of an in-memory dataset whose training split has a given
fraction of its labels flipped to another class (symmetric noise), seeded; validation and test
labels stay clean.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from trainables.datasets import Dataset


@dataclass(frozen=True)
class Split:
    """Ids of the training split (everything not held out) and of the validation split."""

    train_ids: np.ndarray
    val_ids: np.ndarray
    val_size: int | float
    seed: int


def validation_split(labels: np.ndarray, val_size: int | float, seed: int) -> Split:
    """Carve a seeded, class-stratified validation split out of the training set.

    ``val_size`` is a count (int >= 1), a fraction in (0, 1), or 0 for no validation split.
    Both id arrays are sorted, so the split is a pure function of (labels, val_size, seed).
    """
    labels = np.asarray(labels)
    n = len(labels)
    ids = np.arange(n)
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float, np.integer, np.floating)):
        raise TypeError(f"val_size must be a count or a fraction, got {val_size!r}")
    if val_size == 0:
        return Split(ids, np.empty(0, dtype=np.int64), val_size, seed)
    if isinstance(val_size, (float, np.floating)) and not 0 < val_size < 1:
        raise ValueError(f"a fractional val_size must lie in (0, 1), got {val_size}")
    count = int(round(val_size * n)) if isinstance(val_size, (float, np.floating)) else int(val_size)
    num_classes = len(np.unique(labels))
    if not num_classes <= count <= n - num_classes:
        raise ValueError(
            f"val_size={val_size} gives {count} validation examples; a stratified split of {n} "
            f"examples over {num_classes} classes needs between {num_classes} and {n - num_classes}"
        )
    from sklearn.model_selection import train_test_split

    train_ids, val_ids = train_test_split(ids, test_size=count, stratify=labels, random_state=seed)
    return Split(np.sort(train_ids), np.sort(val_ids), val_size, seed)


# --------------------------------------------------------------------------------------------
# Label noise


def label_noise_seed(split_seed: int, rate: float) -> int:
    """The seed of ``with_label_noise``'s draw in a sweep: derived from the validation split's seed and
    the rate only, so every replicate (and every method, f, teacher and student) of one noise level
    trains on the same noisy labels."""
    from contract.seeding import derive_seed

    return derive_seed("label-noise", int(split_seed), float(rate))


def with_label_noise(dataset: Dataset, train_ids: np.ndarray, rate: float, seed: int) -> Dataset:
    """Symmetric label noise on the training split: a copy of ``dataset`` in which exactly
    ``round(rate * len(train_ids))`` of the ``train_ids`` (drawn without replacement) carry a label
    drawn uniformly from the *other* classes, so the realised noise rate is ``rate``. Every other
    label (the validation split's, the test set's) is unchanged. Seeded (``numpy.random.default_rng``).

    ``rate`` 0 returns ``dataset`` itself. The copy shares the images, has its own device cache and
    its own fingerprint (``dataset_fingerprint`` hashes the labels), so teachers and scores computed on
    it get other artifact keys. Streaming datasets (ImageNet folders) take no label noise.
    """
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label noise rate must lie in [0, 1), got {rate}")
    if rate == 0.0:
        return dataset
    if dataset.streaming:
        raise ValueError(f"{dataset.name}: label noise needs an in-memory dataset; a streaming dataset "
                         "(an ImageFolder tree) keeps its labels in the file tree and takes none")
    if dataset.num_classes < 2:
        raise ValueError(f"{dataset.name}: label noise needs at least two classes")
    train_ids = np.asarray(train_ids, dtype=np.int64)
    if len(np.unique(train_ids)) != len(train_ids) or (len(train_ids) and not 0 <= train_ids.min() <= train_ids.max() < dataset.num_train):
        raise ValueError(f"{dataset.name}: train_ids must be distinct training example ids")
    rng = np.random.default_rng(seed)
    count = int(round(rate * len(train_ids)))
    flipped = rng.choice(train_ids, size=count, replace=False)
    labels = dataset.y_train.copy()
    # another class, uniform over the other num_classes - 1: an offset in 1..C-1, modulo C
    labels[flipped] = (labels[flipped] + rng.integers(1, dataset.num_classes, size=count)) % dataset.num_classes
    return replace(dataset, y_train=labels, _device_cache={})


