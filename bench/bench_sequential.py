"""Sequential sweeps (``--until-answered``) beside fixed ones, on simulated sweeps with a known answer.

    python bench/bench_sequential.py                                  # 40 sweeps per truth, the defaults below
    python bench/bench_sequential.py --sweeps 100 --truths none inverse --first 6 --step 6 --most 48
    python bench/bench_sequential.py --kinds direction "kd gain" --noise-scale 0.36

Each simulated sweep (``analysis.simulate``; by default 3 methods x 5 fractions + the shared f = 1 cell,
the self-distillation study's grid, at noise scale 0.5) is run twice over:

- **sequential**: simulated to ``--most`` students per cell with the design's first points planned
  for ``--first`` (``simulate_sweep(enqueued=...)``), then replayed look by look
  (``analysis.sequential.simulate_sequential``: each cell's first n students are exactly those a
  sweep that stopped that cell at n trained), with the real rule: its error spending, its allocation,
  its stop;
- **fixed**: one independent simulated sweep per budget of ``--fixed`` students per cell, its
  questions answered at 5 % (``analysis.sequential.answers``, what the report and the planner say).

Printed per truth:

- false: share of sweeps with any false finding among the questions of the kinds asked (a direction
  found when the truth has none: ``none``, ``edge_null``; a direction opposite to the truth; a KD gain
  or loss found under ``flat``): the family-wise error rate over all looks;
- power: share of the direction questions (each method's and the pooled one) answered with the truth's
  direction (``inverse``, ``edge_steep``, ``edge_shallow``; ``direct`` for ``direct``);
- students: the students a sweep trained (mean), and the mean students when a direction was found;
- coverage: of the 95 % alpha* intervals of every cell (the truth's best alphas) and of the cells'
  95 % KD-gain intervals, on the data the sweep ended with (after a sequential stop, whose data
  depend on when it stopped);
- ratio: the sequential sweep's mean students over the students the fixed design needs for the same
  power (the fixed budgets' powers interpolated linearly in students; "> max" when no fixed budget
  reaches it).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from analysis.sequential import DIRECTION, KD_GAIN, VERSUS, SequentialDesign  # noqa: E402
from analysis.simulate import TRUTHS, has_optimum, optimal_range, true_accuracy  # noqa: E402

NULLS = ("none", "edge_null", "flat")
KINDS = {"direction": DIRECTION, "kd gain": KD_GAIN, "random versus scored": VERSUS}


def _coverage(frame, truth: str, seed: int) -> tuple[list[bool], list[bool]]:
    """(alpha* covered per cell, KD gain covered per cell) of the report's 95 % intervals on ``frame``."""
    from analysis.alpha_f import fit_alpha_f
    from analysis.optimum import cell_optima

    cells = cell_optima(frame, fits=fit_alpha_f(frame, seed=seed, n_draws=200)).table
    alpha = []
    scored = cells[[has_optimum(truth, f) for f in cells["fraction"]]]  # a flat truth has nothing to cover
    if len(scored):
        best = np.array([optimal_range(truth, f, m, "parabola", 0.0)
                         for f, m in zip(scored["fraction"], scored["method"])]).reshape(-1, 2)
        alpha = ((scored["alpha_lo"] <= best[:, 1] + 1e-9) & (best[:, 0] - 1e-9 <= scored["alpha_hi"])).tolist()
    gain = []
    for _, c in cells.iterrows():
        if math.isfinite(c["kd_gain_test_lo"]):
            method = "random" if c["method"] == "full" else c["method"]
            true_gain = float(true_accuracy(truth, method, c["fraction"], c["alpha_opt"])
                              - true_accuracy(truth, method, c["fraction"], 0.0))
            gain.append(bool(c["kd_gain_test_lo"] <= true_gain <= c["kd_gain_test_hi"]))
    return alpha, gain


def _verdicts(decided: dict[str, tuple[str, str, int]], truth: str, kinds: tuple[str, ...]) -> dict:
    """From {question: (kind, answer or None, students when decided)}: whether any question of the kinds
    asked was answered falsely (a direction where the truth has none, under ``none``, ``edge_null`` and
    ``flat``; any answer other than the truth's), and the direction questions' outcomes."""
    from analysis.sequential import expected_answer

    false, directions = False, []
    for question, (kind, answer, students) in decided.items():
        if kind not in kinds:
            continue
        if answer is not None and ((kind == DIRECTION and truth in NULLS) or (kind == KD_GAIN and truth == "flat")
                                   or answer != expected_answer(kind, truth)):
            false = True
        if kind == DIRECTION:
            directions.append((answer == expected_answer(kind, truth), students))
    return {"false": false, "directions": directions}


def one(task: tuple) -> dict:
    """One simulated sweep, sequential or fixed at one budget (a worker process's job)."""
    mode, truth, seed, budget, options = task
    warnings.filterwarnings("ignore")
    from analysis.results import tidy
    from analysis.sequential import answers, simulate_sequential
    from analysis.simulate import simulate_sweep

    kinds = options["kinds"]
    common = dict(methods=options["methods"], fractions=options["fractions"], noise_scale=options["noise_scale"])
    if mode == "sequential":
        design = SequentialDesign(options["first"], options["step"], options["most"],
                                  **({"spending": options["spending"]} if options["spending"] else {}))
        frame = tidy(simulate_sweep(truth, "grid", design.most, seed=seed, enqueued=design.first, **common))
        looks, used = simulate_sequential(frame, design, kinds, seed=seed)
        decided = {q: (kind, looks.decided[q].answer if q in looks.decided else None,
                       looks.decided[q].students if q in looks.decided else len(used))
                   for q, kind in looks.questions.items()}
        students, data, count = len(used), used, looks.count
    else:
        frame = tidy(simulate_sweep(truth, "grid", budget, seed=seed + 1_000_003, **common))
        decided = {a.question: (a.kind, a.answer, len(frame)) for a in answers(frame, seed=seed)}
        students, data, count = len(frame), frame, 1
    alpha, gain = _coverage(data, truth, seed)
    return {"mode": mode, "truth": truth, "budget": budget, "students": students, "looks": count,
            "alpha_covered": alpha, "gain_covered": gain, **_verdicts(decided, truth, kinds)}


def _rate(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def _pct(value: float) -> str:
    return "   –" if not math.isfinite(value) else f"{100 * value:3.0f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truths", nargs="+", default=["none", "edge_null", "inverse", "edge_steep", "edge_shallow"],
                        choices=TRUTHS)
    parser.add_argument("--sweeps", type=int, default=40, help="simulated sweeps per truth and mode")
    parser.add_argument("--first", type=int, default=6, help="students per cell at the first look")
    parser.add_argument("--step", type=int, default=6, help="students a round adds to a cell (a cohort)")
    parser.add_argument("--most", type=int, default=48, help="students per cell at most")
    parser.add_argument("--fixed", nargs="+", type=int, default=[6, 12, 18, 24, 36, 48],
                        help="the fixed designs' students per cell")
    parser.add_argument("--kinds", nargs="+", default=["direction"], choices=list(KINDS),
                        help="the kinds of question the sequential sweep runs until it has answered")
    parser.add_argument("--methods", nargs="+", default=["random", "el2n", "grand"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.5, 0.7])
    parser.add_argument("--noise-scale", type=float, default=0.5)
    parser.add_argument("--spending", type=float, default=None,
                        help="the spending function's power (default: analysis.sequential's)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    options = {"kinds": tuple(KINDS[k] for k in args.kinds), "methods": tuple(args.methods),
               "fractions": tuple(args.fractions), "noise_scale": args.noise_scale, "first": args.first,
               "step": args.step, "most": args.most, "spending": args.spending}
    cells = len(args.methods) * len(args.fractions) + 1
    design = SequentialDesign(args.first, args.step, args.most, **({"spending": args.spending} if args.spending else {}))
    print(f"{cells} cells ({', '.join(args.methods)} x f = {', '.join(map(str, args.fractions))} + f = 1), noise scale "
          f"{args.noise_scale:g}, {args.sweeps} sweeps per truth and mode; sequential: first look at {args.first}, "
          f"doubling in cohorts of {args.step} ({', '.join(map(str, design.schedule))} per cell), spending "
          f"0.05 t^{design.spending:g}, until answered: "
          f"{', '.join(args.kinds)}; fixed: {', '.join(map(str, args.fixed))} per cell")
    tasks = [("sequential", truth, seed, None, options) for truth in args.truths for seed in range(args.sweeps)]
    tasks += [("fixed", truth, seed, n, options) for truth in args.truths for n in args.fixed for seed in range(args.sweeps)]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, tasks, chunksize=1))
    header = (f"{'truth':<13} {'mode':<11} {'students':>8} {'looks':>5} {'false':>5} {'power':>5} "
              f"{'n @ find':>8} {'α* cov':>6} {'gain cov':>8} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for truth in args.truths:
        fixed_power = []
        for n in args.fixed:
            rows = [r for r in results if r["mode"] == "fixed" and r["truth"] == truth and r["budget"] == n]
            fixed_power.append((cells * n, _rate(ok for r in rows for ok, _ in r["directions"])))
        for mode, budget in [("sequential", None), *[("fixed", n) for n in args.fixed]]:
            rows = [r for r in results if r["mode"] == mode and r["truth"] == truth and r["budget"] == budget]
            power = _rate(ok for r in rows for ok, _ in r["directions"])
            at_find = _rate(n for r in rows for ok, n in r["directions"] if ok)
            students = _rate(r["students"] for r in rows)
            ratio = ""
            if mode == "sequential" and truth not in NULLS and math.isfinite(power):
                needed = _students_for(power, fixed_power)
                ratio = "> max" if needed is None else f"{students / needed:.2f}"
            label = "sequential" if mode == "sequential" else f"fixed {budget}"
            print(f"{truth:<13} {label:<11} {students:8.0f} {_rate(r['looks'] for r in rows):5.1f} "
                  f"{_pct(_rate(r['false'] for r in rows)):>5} {_pct(power):>5} "
                  f"{at_find if math.isfinite(at_find) else float('nan'):8.0f} "
                  f"{_pct(_rate(c for r in rows for c in r['alpha_covered'])):>6} "
                  f"{_pct(_rate(c for r in rows for c in r['gain_covered'])):>8} {ratio:>6}")
    return 0


def _students_for(power: float, curve: list[tuple[int, float]]) -> float | None:
    """The students a fixed design needs for ``power``: linear between the budgets around it."""
    previous = None
    for students, p in curve:
        if p >= power:
            if previous is None or p == previous[1]:
                return float(students)
            (s0, p0) = previous
            return s0 + (students - s0) * (power - p0) / (p - p0)
        previous = (students, p)
    return None


if __name__ == "__main__":
    sys.exit(main())
