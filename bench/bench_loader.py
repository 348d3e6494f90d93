"""Benchmark: the device-resident loader against torchvision's DataLoader + transforms pipeline.

What it measures, in one process, on one device:

1. Loader only: images/second of iterating training batches with no model, (a) from
   ``trainables.loader.make_loader`` (a ``DeviceLoader``: index gather, crop(pad)+flip and
   normalisation batched on the device) and (b) from a standard ``torch.utils.data.DataLoader`` over
   a Dataset that turns the same uint8 arrays into PIL images and applies
   ``RandomCrop(size, padding) [+ RandomHorizontalFlip()] + ToTensor() + Normalize(mean, std)``
   in worker processes, each batch then moved to the device.
2. Training: images/second of the same number of SGD steps of the same model (a fresh model
   with the same seed for each side; ``make_optimizer`` from the project, cross-entropy, the
   project's autocast for the chosen precision), fed by (a) and by (b).

Each side gets a few warm-up steps/batches first (not counted; this also starts the DataLoader's
workers). The two sides are measured alternately (A B, B A, A B, ...) for ``--repeats`` rounds and
the median images/second of each side is reported, with the ratio device loader / DataLoader.
On a shared or noisy machine the absolute numbers mean little; the ratios are the result.

Fairness notes: both sides count the images they actually delivered (the DeviceLoader cuts an epoch
into ceil(n / batch_size) near-equal batches; the DataLoader uses ``drop_last=True`` so it never
trains on a small last batch), both train a channels_last model when ``--channels-last`` (the
default, as in ``Recipe``) and the DataLoader's batches are converted to that layout on the device,
as the project's ``StreamingLoader`` does. The DataLoader uses ``persistent_workers`` (no worker
restart at epoch boundaries) and ``pin_memory`` on CUDA. The one-off upload of the dataset to the
device is timed separately and excluded. On CUDA the clock is read after ``torch.cuda.synchronize``.

Run from the repository root::

    python bench/bench_loader.py [--device cuda] [--model resnet20] [--steps 60] [--repeats 3]
                                 [--batch-size 128] [--precision fp32] [--num-workers 2]
                                 [--data npz:PATH | digits | cifar10 ...]

By default the data is ``../shared/data/cifar10_subset.npz`` next to the repository (5,085 real
CIFAR-10 training images); if that file is missing it falls back to scikit-learn's ``digits``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_NPZ = REPO_ROOT.parent / "shared" / "data" / "cifar10_subset.npz"
FALLBACK_SPEC = "digits"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainables.datasets import InMemoryDataset, load_dataset  # noqa: E402
from trainables.loader import make_loader  # noqa: E402
from trainables.models import build_model  # noqa: E402
from trainables.device import autocast, autocast_dtype, resolve_device  # noqa: E402
from contract.recipe import PRECISIONS, Recipe  # noqa: E402
from trainables.train import make_optimizer, prepare_model  # noqa: E402

DEVICE_SIDE = "device loader"
DATALOADER_SIDE = "DataLoader"
SIDES = (DEVICE_SIDE, DATALOADER_SIDE)

# A stream of (x, y) batches on the device, endless across epochs, and a function that releases it.
Stream = tuple[Iterator[tuple[torch.Tensor, torch.Tensor]], Callable[[], None]]


# --------------------------------------------------------------------------------------------
# The two pipelines


class PILImageDataset(torch.utils.data.Dataset):
    """torchvision-CIFAR style: uint8 HWC arrays, each image made a PIL image when it is read."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        channels = images.shape[-1]
        if channels not in (1, 3):
            raise ValueError(f"PIL pipeline supports 1 or 3 channels, got {channels}")
        # PIL wants (H, W) for a grayscale ('L') image and (H, W, 3) for RGB.
        self.images = images[..., 0] if channels == 1 else images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def torchvision_transform(dataset: InMemoryDataset):
    from torchvision import transforms as T

    steps = [T.RandomCrop(dataset.image_size, padding=dataset.augmentation.crop_padding)]
    if dataset.augmentation.flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(dataset.mean, dataset.std)]
    return T.Compose(steps)


def device_stream(dataset: InMemoryDataset, args, device: torch.device) -> Stream:
    loader = make_loader(
        dataset, "train", np.arange(dataset.num_train), args.batch_size, train=True, device=device,
        seed=0, augment=True, channels_last=args.channels_last,
    )

    def batches():
        while True:
            for batch in loader:
                yield batch.x, batch.y

    stream = batches()
    return stream, stream.close


def dataloader_stream(dataset: InMemoryDataset, args, device: torch.device) -> Stream:
    examples = PILImageDataset(dataset.x_train, dataset.y_train, torchvision_transform(dataset))
    loader = torch.utils.data.DataLoader(
        examples,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=len(examples) >= args.batch_size,
        generator=torch.Generator().manual_seed(args.seed),
        num_workers=args.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.num_workers > 0,
    )
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format

    def batches():
        while True:
            for x, y in loader:
                x = x.to(device, non_blocking=True).contiguous(memory_format=memory_format)
                yield x, y.to(device, non_blocking=True)

    stream = batches()

    def close():
        stream.close()
        iterator = getattr(loader, "_iterator", None)  # persistent workers live here
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        loader._iterator = None
        gc.collect()

    return stream, close


STREAMS = {DEVICE_SIDE: device_stream, DATALOADER_SIDE: dataloader_stream}


# --------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Timing:
    images: int
    seconds: float
    final_loss: float | None = None

    @property
    def rate(self) -> float:
        return self.images / self.seconds


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loader(side: str, dataset, args, device) -> Timing:
    stream, close = STREAMS[side](dataset, args, device)
    try:
        for _ in range(args.warmup):
            next(stream)
        synchronize(device)
        images = batches = 0
        start = time.perf_counter()
        # At least --loader-batches batches and --loader-min-seconds, so the fast side is not a
        # few milliseconds at the mercy of one hiccup.
        while batches < args.loader_batches or time.perf_counter() - start < args.loader_min_seconds:
            _, y = next(stream)
            images += len(y)
            batches += 1
        synchronize(device)
        return Timing(images, time.perf_counter() - start)
    finally:
        close()


def time_training(side: str, dataset, args, device, recipe: Recipe) -> Timing:
    torch.manual_seed(args.seed)  # the same initial weights for both sides
    model = prepare_model(build_model(args.model, dataset.num_classes, dataset.in_channels), recipe, device)
    model.train()
    optimizer = make_optimizer(model, recipe)
    stream, close = STREAMS[side](dataset, args, device)

    def step():
        x, y = next(stream)
        with autocast(recipe.precision, device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), len(y)  # len() reads the shape: no host sync

    try:
        for _ in range(args.warmup):
            step()
        synchronize(device)
        images = 0
        start = time.perf_counter()
        for _ in range(args.steps):
            loss, n = step()
            images += n
        synchronize(device)
        seconds = time.perf_counter() - start
        return Timing(images, seconds, float(loss))
    finally:
        close()
        del model, optimizer


def interleaved(label: str, measure: Callable[[str], Timing], repeats: int) -> dict[str, list[Timing]]:
    """Run both sides ``repeats`` times, alternating which goes first (A B, B A, ...)."""
    results: dict[str, list[Timing]] = {side: [] for side in SIDES}
    for r in range(repeats):
        order = SIDES if r % 2 == 0 else SIDES[::-1]
        for side in order:
            timing = measure(side)
            results[side].append(timing)
            loss = f", final loss {timing.final_loss:.3f}" if timing.final_loss is not None else ""
            print(
                f"  [{label} {r + 1}/{repeats}] {side:<13} {timing.rate:>10.1f} img/s "
                f"({timing.images} images in {timing.seconds:.2f} s{loss})",
                flush=True,
            )
    return results


def median_rate(timings: list[Timing]) -> float:
    return statistics.median(t.rate for t in timings)


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--data", default=None,
        help=f"dataset spec (npz:PATH, digits, cifar10, ...); default npz:{DEFAULT_NPZ}, or "
        f"'{FALLBACK_SPEC}' when that file is missing",
    )
    parser.add_argument("--data-dir", default=None, help="data directory for named datasets (cifar10, svhn, ...)")
    parser.add_argument("--model", default="resnet20", help="architecture from trainables.models (default resnet20)")
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per side per repeat (default 60)")
    parser.add_argument("--loader-batches", type=int, default=None, help="timed batches in the loader-only test (default: --steps)")
    parser.add_argument(
        "--loader-min-seconds", type=float, default=0.5,
        help="the loader-only test keeps going until at least this long (default 0.5)",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps/batches before each measurement (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions per side; the median is reported (default 3)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="autocast precision (default fp32)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default auto)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=Recipe().channels_last,
        help="channels_last model and batches, as the project's Recipe does by default",
    )
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and DataLoader shuffle seed")
    parser.add_argument("--skip-loader-only", action="store_true", help="only time the training steps")
    parser.add_argument("--skip-train", action="store_true", help="only time the loaders")
    args = parser.parse_args(argv)
    if args.loader_batches is None:
        args.loader_batches = args.steps
    for name in ("steps", "loader_batches", "repeats", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.num_workers < 0 or args.loader_min_seconds < 0:
        parser.error("--warmup, --num-workers and --loader-min-seconds must be >= 0")
    return args


def load_data(args) -> tuple[InMemoryDataset, str]:
    note = ""
    if args.data is not None:
        spec = args.data
    elif DEFAULT_NPZ.is_file():
        spec = f"npz:{DEFAULT_NPZ}"
    else:
        spec = FALLBACK_SPEC
        note = f" (default {DEFAULT_NPZ} not found; fell back to '{FALLBACK_SPEC}')"
    dataset = load_dataset(spec, args.data_dir)
    if dataset.streaming:
        raise SystemExit(f"{spec} is a streaming (on-disk) dataset; this benchmark needs an in-memory one")
    return dataset, spec + note


def main(argv=None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    recipe = Recipe(batch_size=args.batch_size, precision=args.precision, channels_last=args.channels_last)
    dataset, data_used = load_data(args)
    h, w = dataset.image_size
    aug = dataset.augmentation
    cast = autocast_dtype(recipe.precision, device)

    device_name = str(device)
    if device.type == "cuda":
        device_name += f" ({torch.cuda.get_device_name(device)})"
    import torchvision

    print("Loader benchmark: device-resident loader vs torchvision DataLoader + transforms")
    print(f"device     : {device_name}, {torch.get_num_threads()} intra-op threads")
    print(f"torch      : {torch.__version__}, torchvision {torchvision.__version__}, Python {sys.version.split()[0]}")
    print(f"data       : {data_used}")
    print(
        f"             {dataset.num_train} train images {h}x{w}x{dataset.in_channels}, {dataset.num_classes} classes, "
        f"crop padding {aug.crop_padding}, flip {'on' if aug.flip else 'off'}"
    )
    print(
        f"model      : {args.model}, batch size {args.batch_size}, precision {args.precision} "
        f"(autocast: {str(cast).replace('torch.', '') if cast else 'none, fp32'}), channels_last {args.channels_last}"
    )
    print(
        f"schedule   : {args.steps} train steps / >= {args.loader_batches} loader batches and "
        f">= {args.loader_min_seconds:g} s per measurement "
        f"(+{args.warmup} warm-up), {args.repeats} interleaved repeats, DataLoader num_workers {args.num_workers}"
    )

    # The one-off upload of the dataset to the device (shared by every later loader): not timed below.
    start = time.perf_counter()
    make_loader(dataset, "train", np.arange(dataset.num_train), args.batch_size, train=True, device=device)
    synchronize(device)
    upload = time.perf_counter() - start
    print(f"one-off dataset upload to {device}: {upload * 1e3:.1f} ms (excluded)", flush=True)

    total_start = time.perf_counter()
    loader_results = train_results = None
    if not args.skip_loader_only:
        print("\nloader only (iterate batches, no model):", flush=True)
        loader_results = interleaved("loader", lambda side: time_loader(side, dataset, args, device), args.repeats)
    if not args.skip_train:
        print("\ntraining (forward + backward + SGD step):", flush=True)
        train_results = interleaved(
            "train", lambda side: time_training(side, dataset, args, device, recipe), args.repeats
        )

    print(f"\nmedian of {args.repeats} repeat(s), images/second:")
    print(f"  {'':<14}{DEVICE_SIDE:>15}{DATALOADER_SIDE:>15}{'ratio':>10}   per-repeat ratios")
    ratios = {}
    for label, results in (("loader only", loader_results), ("train steps", train_results)):
        if results is None:
            continue
        dev, dl = median_rate(results[DEVICE_SIDE]), median_rate(results[DATALOADER_SIDE])
        ratios[label] = dev / dl
        paired = " ".join(
            f"{a.rate / b.rate:.2f}x" for a, b in zip(results[DEVICE_SIDE], results[DATALOADER_SIDE])
        )
        print(f"  {label:<14}{dev:>15.1f}{dl:>15.1f}{dev / dl:>9.2f}x   {paired}")
    print()
    if "train steps" in ratios:
        print(f"train step throughput ratio (device loader / DataLoader): {ratios['train steps']:.1f}x")
    if "loader only" in ratios:
        print(f"loader-only throughput ratio (device loader / DataLoader): {ratios['loader only']:.1f}x")
    print(f"(benchmark time {time.perf_counter() - total_start:.0f} s)")


if __name__ == "__main__":
    main()
