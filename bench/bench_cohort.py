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
3. Fused versus loop (``--fused``, on by default; ``--fused-ks``, default 1 and 8): the fused path
   (``trainables.fused``) against the loop over members, both sides alternating (best of
   max(``--repeats``, 3) on digits, ``--repeats`` on the CIFAR-10 subset), milliseconds per
   member-step, CPU and wall: (a) the training steps (``fit_fused`` versus ``fit_many`` on the
   cohort's batches and KD losses, the teacher's forward shared), (b) whole ``train_cohort`` calls
   (model building, validation every epoch and the test included); then alpha evaluations per
   CPU-second, K = max(``--fused-ks``) fused (and looped) versus K = 1. digits with the smoke recipe
   and small_cnn; the CIFAR-10 subset with ``--cifar-arch`` and ``--cifar-epochs``. ``--device cuda``
   runs every part on a GPU (compare wall times there).

Run from the repository root::

    python bench/bench_cohort.py                      # a few minutes on a 2-core CPU
    python bench/bench_cohort.py --ks 1 8 --repeats 3 --seeds 12 --cifar-epochs 2 --threads 2
    python bench/bench_cohort.py --parts fused --fused-ks 1 2 4 8 --cifar-epochs 2   # fused vs loop only

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
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

DEFAULT_NPZ = REPO_ROOT.parent / "shared" / "data" / "cifar10_subset.npz"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from search_spaces.defaults import defaults_for  # noqa: E402
from search_spaces.profiles import profile_for  # noqa: E402
from trainables.cohort import Member, SharedTeacher, train_cohort  # noqa: E402
from trainables.datasets import load_dataset  # noqa: E402
from trainables.splits import validation_split  # noqa: E402
from trainables.fused import fit_fused  # noqa: E402
from trainables.kd import kd_loss  # noqa: E402
from trainables.loader import make_loader  # noqa: E402
from trainables.models import build_model  # noqa: E402
from trainables.device import autocast_dtype, resolve_device  # noqa: E402
from contract.seeding import derive_seed  # noqa: E402
from trainables.selection import random_subset  # noqa: E402
from trainables.student import train_student  # noqa: E402
from trainables.teacher import Teacher, train_teacher  # noqa: E402
from trainables.train import fit_many, prepare_model  # noqa: E402


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


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _steps_only(dataset, subset, teacher, arch, recipe, members, device, fused):
    """The cohort's training steps (with building its K models and loader; no validation, no test): ``fit_many``
    (the loop) or ``fit_fused`` over the cohort's batches and losses, the teacher's forward shared.
    Returns the optimiser steps taken by each member."""
    torch.manual_seed(derive_seed("init", 0))
    base = prepare_model(build_model(arch, dataset.num_classes, dataset.in_channels), recipe, device)
    models = [copy.deepcopy(base) for _ in members]
    loader = make_loader(dataset, "train", subset, recipe.batch_size, train=True, seed=0, augment=recipe.augment,
                         device=device, channels_last=recipe.channels_last)
    shared = SharedTeacher(teacher.model.to(device).eval())

    def loss_fn(member):
        return lambda logits, batch: kd_loss(logits, shared.logits(batch) if member.alpha > 0 else None, batch.y,
                                             member.alpha, member.tau, label_smoothing=recipe.label_smoothing)

    (fit_fused if fused else fit_many)(models, loader, recipe, device=device, loss_fns=[loss_fn(m) for m in members])
    return recipe.epochs_for(len(loader)) * len(loader)


def fused_vs_loop(name, dataset, split, subset, teacher, arch, recipe, ks, repeats, device):
    """Part 3: the fused path (``trainables.fused``) against the loop over members, both sides
    alternating, for (a) the training steps alone and (b) whole ``train_cohort`` calls (validation
    every epoch and the test included); then alpha evaluations per CPU-second, K = max(ks) fused
    versus K = 1 (the loop: a cohort of one is never fused by default)."""
    print(f"\n== fused vs loop: {name}, {arch}, {len(subset)} training examples, {recipe.epochs} epochs, batch "
          f"{recipe.batch_size}, precision {recipe.precision} (autocast {autocast_dtype(recipe.precision, device)}), "
          f"channels_last {recipe.channels_last}, device {device}; best of {repeats}, sides alternating")
    print(f"{'K':>2} {'part':>12} {'loop cpu':>9} {'fused cpu':>9} {'loop wall':>9} {'fused wall':>10}   "
          f"(ms per member-step) {'speed cpu':>9} {'wall':>6}")
    common = dict(arch=arch, recipe=recipe, split=split, teacher=teacher, seed=0, device=device)
    for fused in (False, True):  # warm-up: first-call allocations, oneDNN primitives
        train_cohort(dataset, subset, members=[Member(0.0), Member(0.5)], fused=fused,
                     **{**common, "recipe": recipe.replace(epochs=1)})
    whole = {}
    for k in ks:
        members = [Member(a) for a in alphas_for(k)]
        for part in ("train steps", "whole cohort"):
            times = {False: [], True: []}
            for repeat in range(repeats):
                for fused in ((False, True) if repeat % 2 == 0 else (True, False)):
                    _sync(device)
                    with Clock() as clock:
                        if part == "train steps":
                            steps = _steps_only(dataset, subset, teacher, arch, recipe, members, device, fused)
                        else:
                            result = train_cohort(dataset, subset, members=members, fused=fused, **common)
                            assert result.fused == fused
                            steps = result.epochs * result.steps_per_epoch
                        _sync(device)
                    times[fused].append((clock.wall, clock.cpu))
            best = {f: (min(t[0] for t in times[f]), min(t[1] for t in times[f])) for f in times}
            per = {f: (best[f][1] / k / steps * 1e3, best[f][0] / k / steps * 1e3) for f in best}  # (cpu, wall) ms
            if part == "whole cohort":
                whole[k] = best
            print(f"{k:>2} {part:>12} {per[False][0]:>8.2f}  {per[True][0]:>8.2f}  {per[False][1]:>8.2f}  "
                  f"{per[True][1]:>9.2f}   {'':>20} {per[False][0] / per[True][0]:>8.2f}x "
                  f"{per[False][1] / per[True][1]:>5.2f}x")
    print("speed: fused / loop (member-steps per second); 'whole cohort' counts validation, test, teacher and "
          "model building in the member-steps' time")
    if 1 in whole and max(ks) > 1:
        k = max(ks)
        base = 1 / whole[1][False][1]  # a cohort of one, the loop (the default for K = 1)
        for label, fused in (("fused", True), ("loop", False)):
            rate = k / whole[k][fused][1]
            print(f"alpha evaluations per CPU-second: K={k} {label} {rate:.2f} vs K=1 {base:.2f}: {rate / base:.2f}x")
    return whole


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
    parser.add_argument("--fused-ks", type=int, nargs="+", default=[1, 8], help="cohort sizes of the fused part")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default=None, help="override the recipes' precision (auto/bf16/fp32)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
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
        fused_vs_loop("digits (smoke recipe)", digits, split, subset, teacher, "small_cnn", smoke, args.fused_ks,
                      max(args.repeats, 3), device)
        cifar = cifar_setup(args, device)
        if cifar is not None:
            cifar_data, csplit, csubset, cteacher, crecipe = cifar
            fused_vs_loop("CIFAR-10 subset", cifar_data, csplit, csubset, cteacher, args.cifar_arch, crecipe,
                          args.fused_ks, args.repeats, device)


def cifar_setup(args, device):
    """(dataset, split, subset, teacher, recipe) of the CIFAR-10 subset, or None when skipped. Its
    teacher is a randomly initialised ``--cifar-arch``: it costs what a trained one does."""
    if args.no_cifar:
        return None
    if not Path(args.npz).is_file():
        print(f"\n(no {args.npz}: CIFAR-10 subset skipped)")
        return None
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
    return cifar, csplit, csubset, Teacher(model, meta), recipe


def cifar_throughput(args, device):
    cifar = cifar_setup(args, device)
    if cifar is not None:
        data, csplit, csubset, teacher, recipe = cifar
        throughput("CIFAR-10 subset", data, csplit, csubset, teacher, args.cifar_arch, recipe, args.cifar_ks, 1,
                   args.trial_overhead, device)


if __name__ == "__main__":
    main()
