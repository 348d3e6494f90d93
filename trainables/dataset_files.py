"""Reading a dataset from files: an ``.npz`` of arrays or an image-folder tree, into checked arrays
(uint8 NHWC images, int64 labels 0..C-1). ``trainables.datasets`` makes them in-memory datasets
(``npz:PATH``, ``folder:PATH``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are missing (or fail their checksum) and downloading is off or failed; the
    message names the folder and the files to put there."""


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def read_image_folder(root: Path) -> dict:
    """An image-folder tree, ``ROOT/train/<class>/<image>`` and ``ROOT/test/<class>/<image>`` (or
    ``val/``), read into memory like an npz: classes are the train folder's subfolders in sorted order
    (ImageFolder's convention), images in sorted file order within each class (the example ids). All
    images must share one size; they are kept grayscale when every one is, else RGB."""
    from PIL import Image

    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder not found: {root}")
    test_part = "test" if (root / "test").is_dir() else "val"
    missing = [part for part in ("train", "test") if not (root / (part if part == "train" else test_part)).is_dir()]
    if missing:
        raise DatasetNotFoundError(f"{root}: no {' or '.join(missing)} folder (test may be named val); expected ROOT/train/<class>/<image> "
                                   "and ROOT/test/<class>/<image> (or val/)")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root}/train: no class folders (expected ROOT/train/<class>/<image>)")
    strays = sorted(d.name for d in (root / test_part).iterdir() if d.is_dir() and d.name not in classes)
    if strays:
        raise ValueError(f"{root}/{test_part}: classes {strays[:5]} have no folder in {root}/train")
    files = {part: [(f, label) for label, c in enumerate(classes) if (root / folder / c).is_dir()
                    for f in sorted((root / folder / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
             for part, folder in (("train", "train"), ("test", test_part))}
    opened = {part: [(Image.open(f), label) for f, label in found] for part, found in files.items()}
    try:
        everything = [image for part in opened.values() for image, _ in part]
        if not everything:
            raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)})")
        mode = "L" if all(image.mode in ("1", "L") for image in everything) else "RGB"
        sizes = {}
        for (f, _), image in zip([x for part in files.values() for x in part], everything):
            sizes.setdefault(image.size, f)
        if len(sizes) > 1:
            (a, fa), (b, fb) = list(sizes.items())[:2]
            raise ValueError(f"{root}: images differ in size ({fa} is {a[0]}x{a[1]}, {fb} is {b[0]}x{b[1]}); "
                             "resize them to one size first")
        arrays = {}
        for part, found in opened.items():
            images = [np.asarray(image.convert(mode), dtype=np.uint8) for image, _ in found]
            width, height = next(iter(sizes))
            x = np.stack(images) if images else np.zeros((0, height, width), np.uint8)
            arrays[f"x_{part}"] = x[..., None] if x.ndim == 3 else x
            arrays[f"y_{part}"] = np.array([label for _, label in found], dtype=np.int64)
    finally:
        for part in opened.values():
            for image, _ in part:
                image.close()
    return checked_arrays(arrays, root)


def read_npz(path: Path) -> dict:
    """Arrays ``x_train y_train x_test y_test`` of an npz file, checked (``checked_arrays``)."""
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
    return checked_arrays(arrays, path)


def checked_arrays(arrays: dict, path: Path) -> dict:
    """The arrays of a file or folder dataset, checked: uint8 NHWC images (NHW made NHWC), int64
    labels 0..C-1 with every class in training (``path`` names the source in the errors)."""
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
    return arrays
