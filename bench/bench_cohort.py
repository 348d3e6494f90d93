"""Benchmark: K students trained one after another versus one cohort of K, and paired comparisons.

What it measures, in one process, on one device (the CPU by default):

1. Throughput. For each dataset and K in ``--ks``: K students with alphas spread over [0, 1]
   (``linspace(0, 1, K)``; K = 1 is alpha 0.5) on one random subset of fraction ``--fraction``,
   (a) one after another, each its own ``trainables.student.train_student`` (what K trials do today,
   without the framework's per-trial overhead), and (b) one ``trainables.cohort.train_cohort`` of the
   K members; same recipe, seed and epochs on both sides, a same-size teacher (same architecture as
   the students). Printed: wall and CPU seconds of each side (the best of ``--repeats``, the sides
   alternating), students per wall-second and per CPU-second, the ratio cohort / sequential, and the
   teacher forwards on training batches counted with a forward hook on the teacher. The column
   ``est. sweep`` adds ``--trial-overhead`` seconds per Tune trial (K trials versus one cohort
   trial; 3.4 s is bench_sweep.py's figure on digits) to the measured wall times: an estimate, not a
   measurement.
   - digits: the smoke profile's recipe (small_cnn, 4 epochs, batch 64) and a digits teacher trained
     here (small_cnn, digits' default recipe).
   - the CIFAR-10 subset (``npz:../shared/data/cifar10_subset.npz``, when present; ``--no-cifar`` to
     skip): ``--cifar-arch`` (resnet20), ``--cifar-epochs`` epochs at ``--cifar-fraction``. Its
     teacher is a randomly initialised model of the same architecture: its forward costs what a
     trained one's does, and only the cost is measured here.
2. Paired comparisons (digits, f = ``--fraction``, fast profile's recipe): for ``--seeds`` seeds,
   val_acc(alpha = 0.5) - val_acc(alpha = 0) when both are members of one cohort (same seed: same
   initialisation and batches) versus when alpha = 0 is a separate student with its own seed; the
   standard deviation of each across seeds, and their ratio (test accuracy too).
3. Fused versus loop (``--fused``, on by default): milliseconds per member-step (forward, backward and
   SGD step on one batch) of K copies of small_cnn on digits batches trained by a loop over the
   members versus one ``torch.func.stack_module_state`` + ``vmap`` model.

Run from the repository root::

    python bench/bench_cohort.py                      # a few minutes on a 2-core CPU
    python bench/bench_cohort.py --ks 1 8 --repeats 3 --seeds 12 --cifar-epochs 2 --threads 2

On a shared or noisy machine the absolute numbers mean little; the ratios are the result. The torch
thread count is ``--threads`` (1 by default: on a small shared machine more threads than free cores
makes every number worse).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_NPZ = REPO_ROOT.parent / "shared" / "data" / "cifar10_subset.npz"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from search_spaces.defaults import defaults_for  # noqa: E402
from search_spaces.profiles import profile_for  # noqa: E402
from trainables.cohort import Member, train_cohort  # noqa: E402
from trainables.datasets import load_dataset, validation_split  # noqa: E402
from trainables.models import build_model  # noqa: E402
from trainables.selection import random_subset  # noqa: E402
from trainables.student import train_student  # noqa: E402
from trainables.teacher import Teacher, train_teacher  # noqa: E402
from trainables.train import prepare_model  # noqa: E402


def alphas_for(k: int) -> list[float]:
    return [0.5] if k == 1 else [round(float(a), 4) for a in np.linspace(0, 1, k)]


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def throughput(name, dataset, split, subset, teacher, arch, recipe, ks, repeats, overhead, device):
    print(f"\n== throughput: {name}, {arch}, {len(subset)} training examples, {recipe.epochs} epochs, "
          f"batch {recipe.batch_size}, precision {recipe.precision}, same-size teacher ({teacher.meta['arch']})")
    print(f"{'K':>2} {'seq wall':>9} {'coh wall':>9} {'seq cpu':>8} {'coh cpu':>8} {'stud/s seq':>10} "
          f"{'stud/s coh':>10} {'wall x':>7} {'cpu x':>6} {'teacher fw seq':>14} {'coh':>5} {'est. sweep x':>12}")
    forwards = []
    handle = teacher.model.register_forward_hook(lambda *_: forwards.append(1))
    rows = []
    try:
        common = dict(arch=arch, recipe=recipe, split=split, teacher=teacher, seed=0, device=device)
        # warm-up (first-call allocations, autocast caches): not counted
        train_cohort(dataset, subset, members=[Member(0.5)], **{**common, "recipe": recipe.replace(epochs=1)})
        for k in ks:
            alphas = alphas_for(k)
            seq, coh = [], []
            for repeat in range(repeats):
                for side in (("seq", "coh") if repeat % 2 == 0 else ("coh", "seq")):
                    forwards.clear()
                    with Clock() as clock:
                        if side == "seq":
                            for alpha in alphas:
                                train_student(dataset, subset, alpha=alpha, **common)
                        else:
                            result = train_cohort(dataset, subset, members=[Member(a) for a in alphas], **common)
                            assert result.teacher_forwards == len(forwards)
                    (seq if side == "seq" else coh).append((clock.wall, clock.cpu, len(forwards)))
            seq_wall, seq_cpu = min(s[0] for s in seq), min(s[1] for s in seq)
            coh_wall, coh_cpu = min(c[0] for c in coh), min(c[1] for c in coh)
            est = (seq_wall + k * overhead) / (coh_wall + overhead)
            row = dict(k=k, seq_wall=seq_wall, coh_wall=coh_wall, seq_cpu=seq_cpu, coh_cpu=coh_cpu,
                       wall_ratio=seq_wall / coh_wall, cpu_ratio=seq_cpu / coh_cpu, seq_fw=seq[0][2], coh_fw=coh[0][2],
                       est=est)
            rows.append(row)
            print(f"{k:>2} {seq_wall:>8.2f}s {coh_wall:>8.2f}s {seq_cpu:>7.2f}s {coh_cpu:>7.2f}s "
                  f"{k / seq_wall:>10.2f} {k / coh_wall:>10.2f} {row['wall_ratio']:>6.2f}x {row['cpu_ratio']:>5.2f}x "
                  f"{row['seq_fw']:>14} {row['coh_fw']:>5} {est:>11.2f}x")
    finally:
        handle.remove()
    print("wall x / cpu x: students per second of the cohort / of the students one after another "
          f"(best of {repeats}); est. sweep x: with {overhead:.1f} s of per-trial overhead added (estimate)")
    return rows


def paired(dataset, split, subset, teacher, recipe, seeds, device):
    print(f"\n== paired comparisons: digits, {len(subset)} training examples, {recipe.epochs_for(-(-len(subset) // recipe.batch_size))} "
          f"epochs, {seeds} seeds: acc(alpha=0.5) - acc(alpha=0)")
    common = dict(arch="small_cnn", recipe=recipe, split=split, teacher=teacher, device=device)
    diffs = {"paired": {"val": [], "test": []}, "unpaired": {"val": [], "test": []}}
    accs = {"val": {"kd": [], "base": []}, "test": {"kd": [], "base": []}}
    for seed in range(seeds):
        cohort = train_cohort(dataset, subset, members=[Member(0.0), Member(0.5)], seed=seed, **common)
        base, kd = cohort.members
        alone = train_student(dataset, subset, alpha=0.0, seed=1000 + seed, **common)  # its own seed, as a trial
        diffs["paired"]["val"].append(kd.val_acc - base.val_acc)
        diffs["paired"]["test"].append(kd.test_acc - base.test_acc)
        diffs["unpaired"]["val"].append(kd.val_acc - alone.val_acc)
        diffs["unpaired"]["test"].append(kd.test_acc - alone.test_acc)
        for metric in ("val", "test"):
            accs[metric]["kd"].append(getattr(kd, f"{metric}_acc"))
            accs[metric]["base"].append(getattr(base, f"{metric}_acc"))
        print(f"seed {seed}: val  kd {kd.val_acc:.4f}  base (same cohort) {base.val_acc:.4f}  base (own seed) "
              f"{alone.val_acc:.4f} | test kd {kd.test_acc:.4f}  base {base.test_acc:.4f}  own seed {alone.test_acc:.4f}")
    for metric in ("val", "test"):
        p, u = diffs["paired"][metric], diffs["unpaired"][metric]
        sd_p, sd_u = statistics.stdev(p), statistics.stdev(u)
        kd_acc, base_acc = np.array(accs[metric]["kd"]), np.array(accs[metric]["base"])
        corr = float(np.corrcoef(kd_acc, base_acc)[0, 1]) if kd_acc.std() and base_acc.std() else float("nan")
        print(f"{metric:>4}: paired mean {np.mean(p):+.4f} sd {sd_p:.4f} | unpaired mean {np.mean(u):+.4f} sd {sd_u:.4f} "
              f"| sd ratio unpaired / paired {sd_u / sd_p if sd_p else float('inf'):.2f} "
              f"| corr(acc kd, acc base) within a cohort {corr:+.2f}")
    return diffs


def fused_vs_loop(dataset, ks, steps, batch_size):
    from torch.func import functional_call, stack_module_state, vmap

    print(f"\n== fused (stack_module_state + vmap) vs loop: small_cnn on digits, batch {batch_size}, fp32, "
          "ms per member-step (forward + backward + SGD step), best of 3")
    x = torch.from_numpy(dataset.x_train[:batch_size]).permute(0, 3, 1, 2).float() / 16.0
    y = torch.from_numpy(np.asarray(dataset.y_train[:batch_size], dtype=np.int64))
    for k in ks:
        torch.manual_seed(0)
        base = build_model("small_cnn", dataset.num_classes, dataset.in_channels)
        models = [copy.deepcopy(base) for _ in range(k)]
        optimizers = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for m in models]

        def loop():
            for model, optimizer in zip(models, optimizers):
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        params, buffers = stack_module_state([copy.deepcopy(base) for _ in range(k)])
        params = {name: p.detach().requires_grad_() for name, p in params.items()}
        skeleton = copy.deepcopy(base).to("meta")
        optimizer = torch.optim.SGD(list(params.values()), lr=0.01, momentum=0.9)

        def one(p, b, images):
            return functional_call(skeleton, (p, b), (images,))

        def fused():
            logits = vmap(one, in_dims=(0, 0, None), randomness="same")(params, buffers, x)  # (K, B, classes)
            loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="sum") / len(y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        times = {"loop": [], "fused": []}
        # vmap has no batching rule for adaptive_avg_pool2d's as_strided_ (a warning, and a slower fallback)
        warnings.filterwarnings("ignore", message=".*batching rule.*")
        for fn in (loop, fused):
            fn()
        for _ in range(3):
            for name, fn in (("loop", loop), ("fused", fused)):
                start = time.process_time()
                for _ in range(steps):
                    fn()
                times[name].append((time.process_time() - start) / steps / k * 1e3)
        lo, fu = min(times["loop"]), min(times["fused"])
        print(f"K={k}: loop {lo:.2f} ms, fused {fu:.2f} ms per member-step (CPU time): fused / loop speed {lo / fu:.2f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=["throughput", "paired", "fused"],
                        default=["throughput", "paired", "fused"], help="what to run (default all)")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=0.1, help="digits subset fraction (default 0.1)")
    parser.add_argument("--seeds", type=int, default=6, help="seeds of the paired comparison (0: skip it)")
    parser.add_argument("--trial-overhead", type=float, default=3.4, help="per-trial framework seconds for 'est. sweep'")
    parser.add_argument("--no-cifar", action="store_true")
    parser.add_argument("--npz", default=str(DEFAULT_NPZ))
    parser.add_argument("--cifar-arch", default="resnet20")
    parser.add_argument("--cifar-epochs", type=int, default=1)
    parser.add_argument("--cifar-fraction", type=float, default=0.1)
    parser.add_argument("--cifar-ks", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default=None, help="override the recipes' precision (auto/bf16/fp32)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {device}")

    digits = load_dataset("digits")
    split = validation_split(digits.y_train, defaults_for("digits").val_size, 0)
    subset = random_subset(split.train_ids, args.fraction, seed=0)
    smoke = profile_for("smoke", "digits").recipe
    if args.precision:
        smoke = smoke.replace(precision=args.precision)
    start = time.perf_counter()
    teacher = train_teacher(digits, arch="small_cnn", recipe=defaults_for("digits").recipe, split=split, seed=0, device=device)
    print(f"digits teacher: small_cnn, test acc {teacher.meta['test_acc']:.4f}, {time.perf_counter() - start:.1f}s")

    if "throughput" in args.parts:
        throughput("digits (smoke recipe)", digits, split, subset, teacher, "small_cnn", smoke, args.ks, args.repeats,
                   args.trial_overhead, device)
        cifar_throughput(args, device)
    if "paired" in args.parts and args.seeds >= 2:
        fast = profile_for("fast", "digits").recipe
        if args.precision:
            fast = fast.replace(precision=args.precision)
        paired(digits, split, subset, teacher, fast, args.seeds, device)
    if "fused" in args.parts and args.fused:
        fused_vs_loop(digits, [1, 8], steps=10, batch_size=64)


def cifar_throughput(args, device):
    if args.no_cifar:
        return
    if not Path(args.npz).is_file():
        print(f"\n(no {args.npz}: CIFAR-10 subset skipped)")
        return
    spec = f"npz:{args.npz}"
    cifar = load_dataset(spec)
    defaults = defaults_for(spec)
    csplit = validation_split(cifar.y_train, defaults.val_size, 0)
    csubset = random_subset(csplit.train_ids, args.cifar_fraction, seed=0)
    recipe = defaults.recipe.replace(epochs=args.cifar_epochs, batch_size=128, eval_batch_size=512)
    if args.precision:
        recipe = recipe.replace(precision=args.precision)
    torch.manual_seed(0)
    model = prepare_model(build_model(args.cifar_arch, cifar.num_classes, cifar.in_channels), recipe, device).eval()
    meta = {"dataset": cifar.name, "arch": args.cifar_arch, "num_classes": cifar.num_classes,
            "split": {"val_size": csplit.val_size, "seed": csplit.seed}}
    throughput("CIFAR-10 subset", cifar, csplit, csubset, Teacher(model, meta), args.cifar_arch, recipe,
               args.cifar_ks, 1, args.trial_overhead, device)


if __name__ == "__main__":
    main()
