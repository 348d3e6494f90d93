"""Batches for training and evaluation.

In-memory datasets use ``DeviceLoader``: the whole uint8 dataset lives on the training device
(copied once per device and shared by every loader), a batch is an index gather, and crop/flip
augmentation and normalisation run batched on the device, in the style of airbench. A pruned subset
is just an array of example ids. No torch DataLoader on this path: a DataLoader's per-image Python
work is about 13x slower than these batched gathers (``bench/bench_loader.py``, loader alone, on a
CPU), which is what bounds a small model on a fast GPU.

The streaming dataset (ImageNet) uses ``StreamingLoader``, a normal DataLoader over image files.

Both yield ``Batch(ids, x, y)`` on the device. ``DeviceLoader`` is deterministic given a seed: epoch
``e`` draws its order and augmentation from ``derive_seed(seed, e)`` on the CPU, so the same seed gives
the same batches on any device. ``StreamingLoader``'s order is seeded the same way; its augmentation
runs in the DataLoader workers, seeded by torch from that generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from trainables.datasets import Augmentation, Dataset, InMemoryDataset, StreamingDataset
from contract.seeding import derive_seed


@dataclass
class Batch:
    ids: torch.Tensor  # int64 example ids
    x: torch.Tensor  # float32, normalised, (B, C, H, W)
    y: torch.Tensor  # int64 labels


class DeviceImages:
    """A uint8 NHWC image array and its labels, resident on one device."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean, std, device: torch.device):
        if not images.flags.writeable:  # zero-copy from Ray's object store: torch wants writable memory
            images = images.copy()
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64)).to(device)
        std_t = torch.tensor(std, dtype=torch.float32, device=device)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
        # x_normalised = x_uint8 * scale + shift, with the /255 folded in.
        self.scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
        self.shift = (-mean_t / std_t).view(1, -1, 1, 1)
        self.device = device

    def __len__(self) -> int:
        return len(self.labels)


def device_images(dataset: InMemoryDataset, part: str, device: torch.device) -> DeviceImages:
    """The dataset's ``part`` ('train' or 'test') on ``device``, uploaded once and then reused."""
    if device.type == "cuda" and device.index is None:  # 'cuda' and 'cuda:0' are one device
        device = torch.device("cuda", torch.cuda.current_device())
    key = (part, str(device))
    if key not in dataset._device_cache:
        x, y = (dataset.x_train, dataset.y_train) if part == "train" else (dataset.x_test, dataset.y_test)
        dataset._device_cache[key] = DeviceImages(x, y, dataset.mean, dataset.std, device)
    return dataset._device_cache[key]


def random_crop_flip(
    images: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None
) -> torch.Tensor:
    """Batched RandomCrop(size, padding) + horizontal flip of uint8 NHWC images.

    ``dy``/``dx`` (B,) are crop offsets in [0, 2 * padding] into the zero-padded image; ``flip`` (B,)
    marks the images to mirror. One gather does all crops at once.
    """
    b, h, w, _ = images.shape
    if padding:
        padded = F.pad(images, (0, 0, padding, padding, padding, padding))
        rows = dy[:, None] + torch.arange(h, device=images.device)
        cols = dx[:, None] + torch.arange(w, device=images.device)
        if flip is not None:
            # Mirroring is reading the columns backwards: fold it into the same gather.
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        batch_index = torch.arange(b, device=images.device)[:, None, None]
        return padded[batch_index, rows[:, :, None], cols[:, None, :]]
    if flip is not None:
        return torch.where(flip[:, None, None, None], images.flip(2), images)
    return images


class DeviceLoader:
    """Batches of ``ids`` from a device-resident image array.

    ``train=True``: a fresh seeded permutation and augmentation every epoch; ``train=False``: ids in
    order, no augmentation. Every example is used once per epoch: the ids are cut into
    ``ceil(n / batch_size)`` near-equal batches, so there is never a tiny last batch to drop and a
    subset smaller than one batch still trains.
    """

    def __init__(
        self,
        data: DeviceImages,
        ids: np.ndarray,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        augmentation: Augmentation = Augmentation(crop_padding=0, flip=False),
        channels_last: bool = False,
    ):
        ids = np.array(ids, dtype=np.int64)  # a copy: ids from the object store are read-only
        if ids.ndim != 1 or len(ids) == 0:
            raise ValueError("a loader needs a non-empty 1-D array of example ids")
        if ids.min() < 0 or ids.max() >= len(data):
            raise ValueError(f"example ids must lie in [0, {len(data)})")
        self.data = data
        self.ids = torch.from_numpy(ids).to(data.device)
        self.batch_size = int(batch_size)
        self.train = train
        self.seed = seed
        self.augmentation = augmentation
        self.channels_last = channels_last
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.ids) / self.batch_size)

    def _epoch_randomness(self, epoch: int):
        n = len(self.ids)
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        order = torch.randperm(n, generator=generator)
        pad = self.augmentation.crop_padding
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5 if self.augmentation.flip else None
        device = self.data.device
        return (
            order.to(device),
            dy.to(device),
            dx.to(device),
            flip.to(device) if flip is not None else None,
        )

    def __iter__(self) -> Iterator[Batch]:
        if self.train:
            order, dy, dx, flip = self._epoch_randomness(self.epoch)
            self.epoch += 1
            chunks = torch.tensor_split(order, len(self))
        else:
            chunks = torch.arange(len(self.ids), device=self.data.device).split(self.batch_size)
        for positions in chunks:
            ids = self.ids[positions]
            images = self.data.images[ids]
            if self.train:
                images = random_crop_flip(
                    images,
                    self.augmentation.crop_padding,
                    dy[positions],
                    dx[positions],
                    flip[positions] if flip is not None else None,
                )
            # NHWC -> NCHW view: its memory is already channels_last.
            x = images.permute(0, 3, 1, 2).float() * self.data.scale + self.data.shift
            x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
            yield Batch(ids, x, self.data.labels[ids])


class _IdsOfImageFolder(torch.utils.data.Dataset):
    """(image, label, id) for the given ids of an ImageFolder sample list."""

    def __init__(self, samples, ids, transform):
        from torchvision.datasets.folder import default_loader

        self.samples, self.ids, self.transform, self.load = samples, ids, transform, default_loader

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i):
        example_id = int(self.ids[i])
        path, label = self.samples[example_id]
        return self.transform(self.load(path)), label, example_id


class StreamingLoader:
    """A DataLoader over image files (ImageNet), yielding the same ``Batch`` as ``DeviceLoader``."""

    def __init__(
        self,
        dataset: StreamingDataset,
        samples: list,
        ids: np.ndarray,
        batch_size: int,
        *,
        train: bool,
        device: torch.device,
        seed: int = 0,
        augment: bool = True,
        num_workers: int = 8,
        channels_last: bool = False,
    ):
        from torchvision import transforms as T

        side = dataset.image_size[0]
        normalize = [T.ToTensor(), T.Normalize(dataset.mean, dataset.std)]
        if train and augment:
            transform = T.Compose([T.RandomResizedCrop(side), T.RandomHorizontalFlip(), *normalize])
        else:
            transform = T.Compose([T.Resize(round(side * 8 / 7)), T.CenterCrop(side), *normalize])
        self.examples = _IdsOfImageFolder(samples, np.asarray(ids, dtype=np.int64), transform)
        self.batch_size, self.train, self.device, self.seed = batch_size, train, device, seed
        self.channels_last = channels_last
        self.epoch = 0
        # One DataLoader for all epochs, so its workers are started once; the shuffle generator is
        # re-seeded from (seed, epoch) before every epoch.
        self.generator = torch.Generator()
        self.loader = torch.utils.data.DataLoader(
            self.examples,
            batch_size=batch_size,
            shuffle=train,
            generator=self.generator,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
        )

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        self.generator.manual_seed(derive_seed(self.seed, self.epoch))
        if self.train:
            self.epoch += 1
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        for x, y, ids in self.loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=memory_format)
            yield Batch(ids.to(self.device), x, y.to(self.device))


Loader = DeviceLoader | StreamingLoader


def make_loader(
    dataset: Dataset,
    part: str,
    ids: np.ndarray,
    batch_size: int,
    *,
    train: bool,
    device: torch.device,
    seed: int = 0,
    augment: bool = True,
    channels_last: bool = False,
    num_workers: int = 8,
) -> Loader:
    """A loader over ``ids`` of the dataset's ``part`` ('train' or 'test').

    ``train=True`` shuffles and (when ``augment``) applies the dataset's augmentation.
    """
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    if dataset.streaming:
        samples = dataset.train_samples if part == "train" else dataset.test_samples
        return StreamingLoader(
            dataset, samples, ids, batch_size, train=train, device=device, seed=seed, augment=augment,
            num_workers=num_workers, channels_last=channels_last,
        )
    augmentation = dataset.augmentation if (train and augment) else Augmentation(crop_padding=0, flip=False)
    return DeviceLoader(
        device_images(dataset, part, device), ids, batch_size, train=train, seed=seed,
        augmentation=augmentation, channels_last=channels_last,
    )
