"""Datasets: uint8 images, integer labels, stable example ids and a seeded validation split.

Every dataset gives its training and test images in a canonical order; an example's id is its
position in that order (0..N-1), and scores, selections and results always speak of ids.

Two kinds:

- ``InMemoryDataset`` (cifar10, cifar100, svhn, digits, ``npz:PATH``): whole uint8 NHWC arrays, which
  the device-resident loader (``trainables.loader``) copies once onto the training device.
- ``StreamingDataset`` (imagenet): an ImageFolder tree read from disk by a normal DataLoader, since
  it does not fit in memory.

The validation split (``validation_split``) is carved from the training set, class-stratified and
seeded; alpha is tuned on it, and the test set is only ever reported.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from trainables.registry import Registry

DATA_DIR_ENV = "KDSWEEP_DATA_DIR"

# ImageNet's customary channel statistics; the in-memory datasets compute theirs from the data.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are missing (or fail their checksum) and downloading is off."""


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation of a dataset.

    ``crop_padding``: random translation by up to this many pixels (zero padding, then a crop of the
    original size), the usual ``RandomCrop(size, padding)``; 0 turns it off.
    ``flip``: random horizontal flip (off for digits and house numbers, where it changes meaning).
    """

    crop_padding: int = 4
    flip: bool = True


@dataclass
class InMemoryDataset:
    name: str
    x_train: np.ndarray  # uint8 (N, H, W, C)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    augmentation: Augmentation
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    # Per-device copies made by the loader, so every loader of this dataset shares one upload.
    _device_cache: dict = field(default_factory=dict, repr=False, compare=False)

    streaming = False

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.dtype != np.uint8 or x.ndim != 4:
                raise ValueError(
                    f"{self.name}: x_{part} must be uint8 with shape (N, H, W, C), got {x.dtype} {x.shape}"
                )
            if y.ndim != 1 or len(y) != len(x):
                raise ValueError(f"{self.name}: y_{part} must be 1-D with one label per image")
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(f"{self.name}: y_{part} labels must lie in [0, {self.num_classes})")
        self.y_train = self.y_train.astype(np.int64, copy=False)
        self.y_test = self.y_test.astype(np.int64, copy=False)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train and test images differ in shape")
        if not self.mean:
            # Channel statistics of the training images (the test set is never used for any choice).
            self.mean = tuple(float(v) for v in self.x_train.mean(axis=(0, 1, 2), dtype=np.float64) / 255)
            std = self.x_train.std(axis=(0, 1, 2), dtype=np.float64) / 255
            self.std = tuple(float(max(v, 1e-3)) for v in std)

    @property
    def num_train(self) -> int:
        return len(self.y_train)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[3])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x_train.shape[1]), int(self.x_train.shape[2])


@dataclass
class StreamingDataset:
    """An ImageFolder train/val tree; ids are positions in ImageFolder's sorted sample list."""

    name: str
    train_samples: list[tuple[str, int]]
    test_samples: list[tuple[str, int]]
    classes: list[str]
    image_size: tuple[int, int]
    augmentation: Augmentation = Augmentation(crop_padding=0, flip=True)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    in_channels: int = 3

    streaming = True

    @property
    def y_train(self) -> np.ndarray:
        return np.array([label for _, label in self.train_samples], dtype=np.int64)

    @property
    def y_test(self) -> np.ndarray:
        return np.array([label for _, label in self.test_samples], dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_train(self) -> int:
        return len(self.train_samples)


Dataset = InMemoryDataset | StreamingDataset


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class LoadOptions:
    data_dir: Path
    download: bool = False
    verify: bool = True  # checksum the raw files where the format has known checksums
    image_size: int | None = None  # streaming datasets only: side of the square crops


DATASETS: Registry[Callable[[LoadOptions], Dataset]] = Registry("dataset")


def list_datasets() -> list[str]:
    """Registered dataset names; ``npz:PATH`` is accepted too."""
    return DATASETS.names() + ["npz:PATH"]


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, "data"))


def load_dataset(
    spec: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = False,
    verify: bool = True,
    image_size: int | None = None,
) -> Dataset:
    """Load a dataset by name (``cifar10``, ``digits``, ...) or from ``npz:PATH``.

    ``data_dir`` defaults to ``$KDSWEEP_DATA_DIR`` or ``./data``. With ``download=False`` missing
    files raise ``DatasetNotFoundError`` with what to do about it.
    """
    if spec.startswith("npz:"):
        return _load_npz(Path(spec[len("npz:") :]), name=spec)
    loader = DATASETS.get(spec)
    options = LoadOptions(Path(data_dir) if data_dir else default_data_dir(), download, verify, image_size)
    return loader(options)


def check_dataset_spec(spec: str) -> None:
    """Raise a clear error for an unknown name or a missing ``npz:`` file (cheap: reads nothing)."""
    if spec.startswith("npz:"):
        path = Path(spec[len("npz:") :])
        if not path.is_file():
            raise DatasetNotFoundError(f"npz dataset file not found: {path}")
        return
    DATASETS.get(spec)


def dataset_fingerprint(dataset: Dataset) -> str:
    """A hash of the dataset's content, for artifact keys (computed once per dataset object).

    In-memory: the image and label arrays. Streaming: each sample's ``class/file`` name and label
    (the files are not read; the tree's root may differ between machines).
    """
    cached = getattr(dataset, "_fingerprint", None)
    if cached:
        return cached
    digest = hashlib.sha256()
    if dataset.streaming:
        for samples in (dataset.train_samples, dataset.test_samples):
            for path, label in samples:
                digest.update(f"{Path(path).parent.name}/{Path(path).name}:{label};".encode())
            digest.update(b"|")
    else:
        for array in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
            digest.update(str((array.dtype.str, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).data)
    dataset._fingerprint = digest.hexdigest()[:24]
    return dataset._fingerprint


# --------------------------------------------------------------------------------------------
# Validation split


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
# Loaders


def _missing(name: str, where: Path, detail: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name} not found or corrupted under {where} ({detail}); pass download=True "
        f"(--download on the command line) or put the original files there"
    )


def _torchvision_arrays(name: str, make: Callable[[str], object], root: Path, download: bool):
    """Build torchvision's train and test objects, turning its errors into clear ones."""
    try:
        return make("train"), make("test")
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted..."
        raise _missing(name, root, str(error)) from None
    except OSError as error:  # a failed download
        if download:
            raise DatasetNotFoundError(f"could not download {name} into {root}: {error}") from None
        raise


def _unverified_cifar(cls):
    """The same torchvision class with its md5 checks replaced by existence checks.

    For copies that are not the exact release (re-packed or cut-down files); torchvision's own
    ``check_integrity`` treats an md5 of ``None`` as 'the file exists'.
    """
    return type(
        f"Unverified{cls.__name__}",
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def _unverified_svhn(cls):
    return type(
        f"Unverified{cls.__name__}",
        (cls,),
        {"split_list": {k: [url, fn, None] for k, (url, fn, _) in cls.split_list.items()}},
    )


def _cifar(name: str, options: LoadOptions) -> InMemoryDataset:
    from torchvision import datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    if not options.verify:
        cls = _unverified_cifar(cls)
    root = options.data_dir
    train, test = _torchvision_arrays(
        name, lambda part: cls(str(root), train=part == "train", download=options.download), root, options.download
    )
    return InMemoryDataset(
        name=name,
        x_train=np.ascontiguousarray(train.data),
        y_train=np.asarray(train.targets, dtype=np.int64),
        x_test=np.ascontiguousarray(test.data),
        y_test=np.asarray(test.targets, dtype=np.int64),
        num_classes=len(train.classes),
        augmentation=Augmentation(crop_padding=4, flip=True),
    )


@DATASETS.register("cifar10")
def cifar10(options: LoadOptions) -> InMemoryDataset:
    """CIFAR-10 through torchvision (``cifar-10-batches-py`` under the data dir)."""
    return _cifar("cifar10", options)


@DATASETS.register("cifar100")
def cifar100(options: LoadOptions) -> InMemoryDataset:
    """CIFAR-100 (fine labels) through torchvision (``cifar-100-python`` under the data dir)."""
    return _cifar("cifar100", options)


@DATASETS.register("svhn")
def svhn(options: LoadOptions) -> InMemoryDataset:
    """SVHN (core train 73,257 + test 26,032; label 10 mapped to 0) from ``train_32x32.mat`` etc."""
    from torchvision import datasets as tvd

    cls = tvd.SVHN if options.verify else _unverified_svhn(tvd.SVHN)
    root = options.data_dir
    train, test = _torchvision_arrays(
        "svhn", lambda part: cls(str(root), split=part, download=options.download), root, options.download
    )
    return InMemoryDataset(
        name="svhn",
        # torchvision keeps SVHN as NCHW; everything here is NHWC.
        x_train=np.ascontiguousarray(train.data.transpose(0, 2, 3, 1)),
        y_train=np.asarray(train.labels, dtype=np.int64),
        x_test=np.ascontiguousarray(test.data.transpose(0, 2, 3, 1)),
        y_test=np.asarray(test.labels, dtype=np.int64),
        num_classes=10,
        augmentation=Augmentation(crop_padding=4, flip=False),
    )


DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


@DATASETS.register("digits")
def digits(options: LoadOptions) -> InMemoryDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes); works offline.

    Fixed split: 360 test images chosen class-stratified by
    ``train_test_split(range(1797), test_size=360, stratify=target, random_state=0)``; the other
    1,437 are the training set. Both keep scikit-learn's order. Pixels 0..16 are scaled to 0..255.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=labels, random_state=DIGITS_SPLIT_SEED
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return InMemoryDataset(
        name="digits",
        x_train=images[train_idx],
        y_train=labels[train_idx],
        x_test=images[test_idx],
        y_test=labels[test_idx],
        num_classes=10,
        augmentation=Augmentation(crop_padding=1, flip=False),
    )


@DATASETS.register("imagenet")
def imagenet(options: LoadOptions) -> StreamingDataset:
    """ImageNet (or any ImageFolder tree) from ``DATA_DIR/imagenet/{train,val}/<class>/<image>``.

    ``DATA_DIR/{train,val}`` is accepted too. Never downloaded (ImageNet's licence needs a manual
    download). Training crops are RandomResizedCrop(image_size) + flip; evaluation resizes to
    image_size * 8/7 and centre-crops.
    """
    from torchvision.datasets import ImageFolder

    base = options.data_dir / "imagenet"
    if not (base / "train").is_dir():
        base = options.data_dir
    missing = [part for part in ("train", "val") if not (base / part).is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"imagenet: no {' or '.join(missing)} folder under {options.data_dir}/imagenet or "
            f"{options.data_dir}; ImageNet is never downloaded, place the ImageFolder tree there"
        )
    train = ImageFolder(str(base / "train"))
    test = ImageFolder(str(base / "val"))
    if train.classes != test.classes:
        raise ValueError("imagenet: train and val folders list different classes")
    side = options.image_size or 224
    return StreamingDataset(
        name="imagenet",
        train_samples=list(train.samples),
        test_samples=list(test.samples),
        classes=list(train.classes),
        image_size=(side, side),
    )


def _load_npz(path: Path, name: str) -> InMemoryDataset:
    """Arrays ``x_train y_train x_test y_test``; images NHWC or NHW (grayscale), uint8.

    Augmentation defaults to the CIFAR recipe scaled to the image size (padding = side / 8,
    horizontal flip).
    """
    if not path.is_file():
        raise DatasetNotFoundError(f"npz dataset file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
            if missing:
                raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {sorted(archive.files)})")
            arrays = {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as error:  # not an npz, or a damaged one
        if str(error).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({type(error).__name__}: {error})") from None
    for key in ("x_train", "x_test"):
        x = arrays[key]
        if x.dtype != np.uint8:
            raise ValueError(f"{path}: {key} must be uint8 images, got {x.dtype}")
        if x.ndim not in (3, 4):
            raise ValueError(f"{path}: {key} must be NHW or NHWC images, got shape {x.shape}")
        arrays[key] = x[..., None] if x.ndim == 3 else x
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(f"{path}: train images {arrays['x_train'].shape[1:]} and test images "
                         f"{arrays['x_test'].shape[1:]} differ in shape")
    for part in ("train", "test"):
        y = arrays[f"y_{part}"]
        if y.ndim != 1 or len(y) != len(arrays[f"x_{part}"]):
            raise ValueError(f"{path}: y_{part} must hold one label per image ({len(arrays[f'x_{part}'])}), got shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError(f"{path}: y_{part} must hold integer class labels, got {y.dtype} values such as {y[:3].tolist()}")
            arrays[f"y_{part}"] = y.astype(np.int64)
        if len(y) and y.min() < 0:
            raise ValueError(f"{path}: y_{part} has negative labels")
    # Classes are 0..C-1, every one present in training: a stray label (say 250 among 0-9) is an error,
    # not 251 classes.
    train_classes = np.unique(arrays["y_train"])
    num_classes = len(train_classes)
    if train_classes[-1] != num_classes - 1:
        absent = sorted(set(range(int(train_classes[-1]) + 1)) - set(train_classes.tolist()))
        raise ValueError(f"{path}: labels must be 0..C-1 with every class in y_train; missing {absent[:10]}"
                         f"{' ...' if len(absent) > 10 else ''} below the largest label {int(train_classes[-1])}")
    if len(arrays["y_test"]) and arrays["y_test"].max() >= num_classes:
        raise ValueError(f"{path}: y_test has labels up to {int(arrays['y_test'].max())}, y_train only 0..{num_classes - 1}")
    side = arrays["x_train"].shape[1]
    return InMemoryDataset(
        name=name,
        num_classes=num_classes,
        augmentation=Augmentation(crop_padding=max(1, side // 8), flip=True),
        **arrays,
    )
