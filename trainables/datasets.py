"""Datasets: uint8 images, integer labels, stable example ids and a seeded validation split.

Every dataset gives its training and test images in a canonical order; an example's id is its
position in that order (0..N-1), and scores, selections and results always speak of ids.

Two kinds:

- ``InMemoryDataset`` (cifar10, cifar100, svhn, digits, ``npz:PATH``, ``folder:PATH``): whole uint8 NHWC arrays, which
  the device-resident loader (``trainables.loader``) copies once onto the training device.
- ``StreamingDataset`` (imagenet): an ImageFolder tree read from disk by a normal DataLoader, since
  it does not fit in memory.

Reading ``npz:`` and ``folder:`` datasets is ``trainables.dataset_files``; the validation split and
label noise are ``trainables.splits``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from contract.registry import Registry
from trainables.dataset_files import DatasetNotFoundError, read_image_folder, read_npz

DATA_DIR_ENV = "KDSWEEP_DATA_DIR"

# ImageNet's customary channel statistics; the in-memory datasets compute theirs from the data.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    download: bool = False  # fetch a missing CIFAR/SVHN (the command lines do, unless --offline)
    verify: bool = True  # checksum the raw files where the format has known checksums
    image_size: int | None = None  # streaming datasets only: side of the square crops


DATASETS: Registry[Callable[[LoadOptions], Dataset]] = Registry("dataset")


def list_datasets() -> list[str]:
    """Registered dataset names; ``npz:PATH`` and ``folder:PATH`` are accepted too."""
    return DATASETS.names() + ["npz:PATH", "folder:PATH"]


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
    """Load a dataset by name (``cifar10``, ``digits``, ...), from ``npz:PATH`` or from ``folder:PATH``.

    ``data_dir`` defaults to ``$KDSWEEP_DATA_DIR`` or ``./data``. With ``download=True`` a missing
    CIFAR/SVHN is downloaded there (the command lines pass it unless ``--offline``); missing files,
    with downloading off or failed, raise ``DatasetNotFoundError`` naming the files to put there.
    """
    if spec.startswith("npz:"):
        return _load_npz(Path(spec[len("npz:") :]), name=spec)
    if spec.startswith("folder:"):
        return _load_folder(Path(spec[len("folder:") :]), name=spec)
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
    if spec.startswith("folder:"):
        path = Path(spec[len("folder:") :])
        if not (path / "train").is_dir():
            raise DatasetNotFoundError(f"image folder not found: {path}/train (expected ROOT/train/<class>/<image>)")
        return
    DATASETS.get(spec)


def dataset_code(dataset: Dataset) -> tuple:
    """The code an artifact of ``dataset`` depends on beyond its content (``dataset_fingerprint``):
    its class (how batches are cut, augmented and normalised) and, for a registered name, its
    loader. For ``artifacts.code_for``."""
    return (type(dataset), DATASETS.get(dataset.name)) if dataset.name in DATASETS else (type(dataset),)


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
# Loaders


def release_files(cls, root: Path) -> tuple[list[Path], str]:
    """The files torchvision's dataset class ``cls`` reads under ``root``, and where the release is."""
    if hasattr(cls, "split_list"):  # SVHN: one .mat file per split, directly under the data dir
        parts = [cls.split_list[part] for part in ("train", "test")]
        return [root / filename for _, filename, _ in parts], " and ".join(url for url, _, _ in parts)
    folder = root / cls.base_folder  # CIFAR: the release's python pickles, in the archive's folder
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [folder / name for name in names], f"{cls.url}, extracted into {root}"


def _files_text(files: list[Path]) -> str:
    folder = files[0].parent
    if all(f.parent == folder for f in files) and len(files) > 2:
        return f"{folder}/ holding {', '.join(f.name for f in files)}"
    return " and ".join(str(f) for f in files)


def _missing(name: str, cls, root: Path, *, download_error: BaseException | None = None) -> DatasetNotFoundError:
    """What is wrong with the data dir and exactly which files to put where."""
    files, source = release_files(cls, root)
    absent = [f for f in files if not f.is_file()]
    wanted = f"put the release's files there: {_files_text(files)} (from {source})"
    if download_error is not None:
        return DatasetNotFoundError(
            f"{name}: not found under {root}, and downloading it failed ({type(download_error).__name__}: "
            f"{download_error}). Without a network, {wanted}; --offline skips the download attempt"
        )
    if not absent:
        return DatasetNotFoundError(
            f"{name}: the files under {root} ({_files_text(files)}) fail the release's md5 check. Delete them "
            "and run without --offline to download the release, or load re-packed copies with verify=False "
            "(--no-verify in trainables.teacher/student/scores)"
        )
    found = "not found" if len(absent) == len(files) else f"incomplete (no {', '.join(str(f.relative_to(root)) for f in absent)})"
    return DatasetNotFoundError(
        f"{name}: {found} under {root}, and downloading is off (--offline). Run without --offline to download "
        f"it, or {wanted}"
    )


def _torchvision_arrays(name: str, cls, make: Callable[[str], object], root: Path, download: bool):
    """Build torchvision's train and test objects (downloading a missing release when ``download``),
    turning its errors into ones that say which files to put where."""
    try:
        return make("train"), make("test")
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        # With downloading on, the download ran and still left no valid release (a bad archive).
        raise _missing(name, cls, root, download_error=error if download else None) from None
    except OSError as error:  # a failed download: no network, a proxy, a full disk
        if download:
            raise _missing(name, cls, root, download_error=error) from None
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
        name, cls, lambda part: cls(str(root), train=part == "train", download=options.download), root, options.download
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
        "svhn", cls, lambda part: cls(str(root), split=part, download=options.download), root, options.download
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
    return _in_memory(read_npz(path), name)


def _load_folder(root: Path, name: str) -> InMemoryDataset:
    """An image-folder tree (``dataset_files.read_image_folder``) as an in-memory dataset."""
    return _in_memory(read_image_folder(root), name)


def _in_memory(arrays: dict, name: str) -> InMemoryDataset:
    """Checked arrays of a file or folder dataset as an in-memory dataset, with the CIFAR augmentation
    scaled to the image size (padding = side / 8, horizontal flip)."""
    side = arrays["x_train"].shape[1]
    return InMemoryDataset(
        name=name,
        num_classes=int(arrays["y_train"].max()) + 1,
        augmentation=Augmentation(crop_padding=max(1, side // 8), flip=True),
        **arrays,
    )
