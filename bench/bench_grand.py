"""Benchmark: batched GraNd (``torch.func`` vmap over per-example gradients) against the plain loop
of one backward pass per example, on the same model and the same examples, in one run.

    python bench/bench_grand.py [--device cuda] [--model resnet20] [--examples 256] [--chunk-size 64]

Prints the examples/second of each side (median of interleaved repeats), the ratio batched / loop,
and the largest relative difference between the two (they must agree to float tolerance). Data:
``../shared/data/cifar10_subset.npz`` when present, else scikit-learn's digits.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainables.datasets import load_dataset
from trainables.loader import make_loader
from trainables.models import build_model
from trainables.device import resolve_device
from trainables.score_kernels import grand_scores

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_subset.npz"


def loop_grand(model, x, y) -> np.ndarray:
    model.eval()
    out = []
    for i in range(len(x)):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i : i + 1]).float(), y[i : i + 1]).backward()
        out.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters())))
    return np.array(out)


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=f"npz:{SHARED_DATA}" if SHARED_DATA.is_file() else "digits")
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_dataset(args.data)
    torch.manual_seed(0)
    model = build_model(args.model, data.num_classes, data.in_channels).to(device)
    batch = next(iter(make_loader(data, "train", np.arange(args.examples), args.examples, train=False, device=device)))
    x, y = batch.x, batch.y

    grand_scores(model, x[: args.chunk_size], y[: args.chunk_size], chunk_size=args.chunk_size)  # warm-up
    loop_grand(model, x[:4], y[:4])
    batched_times, loop_times = [], []
    for repeat in range(args.repeats):
        sides = [("batched", batched_times), ("loop", loop_times)]
        for name, times in sides if repeat % 2 == 0 else sides[::-1]:
            if name == "batched":
                seconds, batched = timed(lambda: grand_scores(model, x, y, chunk_size=args.chunk_size), device)
            else:
                seconds, looped = timed(lambda: loop_grand(model, x, y), device)
            times.append(seconds)

    difference = float(np.max(np.abs(batched - looped) / np.maximum(np.abs(looped), 1e-12)))
    batched_rate = args.examples / statistics.median(batched_times)
    loop_rate = args.examples / statistics.median(loop_times)
    print("GraNd: batched torch.func vs one backward per example")
    print(f"device {device}, torch {torch.__version__}, data {args.data}, model {args.model}, "
          f"{args.examples} examples, chunk {args.chunk_size}, {args.repeats} interleaved repeats")
    print(f"  batched : {batched_rate:9.1f} examples/s")
    print(f"  loop    : {loop_rate:9.1f} examples/s")
    print(f"  per-repeat ratios: {' '.join(f'{l / b:.2f}x' for b, l in zip(batched_times, loop_times))}")
    print(f"batched / loop throughput ratio: {batched_rate / loop_rate:.2f}x")
    print(f"largest relative difference between the two: {difference:.2e}")


if __name__ == "__main__":
    main()
