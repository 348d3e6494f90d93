"""Calibration of the analysis on simulated sweeps with a known answer, per alpha design and budget.

    python bench/bench_calibration.py                          # tpe and grid, 3/6/8/12 trials, 10 sweeps each
    python bench/bench_calibration.py --sweeps 100 --trials 8 --designs grid
    python bench/bench_calibration.py --designs grid+gp --sweeps 5 --truths none inverse   # slow: a GP per ask
    python bench/bench_calibration.py --designs grid --trials 16 --shapes parabola gauss asymmetric plateau

Each simulated sweep (``analysis.simulate``: 5 methods x 6 fractions + the shared f = 1 cell, validation
noise sd 1.5 points between trials, a 0.5-point offset per cell) draws its alphas through the real
design (one in-memory Optuna study per cell, the design's enqueued points, then its sampler, ask/tell as
the sweep does), and the real analysis (``analysis.results.tidy``, ``analysis.alpha_f.fit_alpha_f``,
``analysis.optimum.cell_optima``) reads the results table. Printed, per design and trials per cell:

- FWER: share of sweeps with any alpha-f finding (any method or the pooled fit, after the
  multiple-testing procedure) when the truth has no relation ("none": a* = 0.5 everywhere) or no KD
  effect at all ("flat");
- power: share of fits that find "inverse" under the paper-like inverse truth, per method and pooled;
  "direct" likewise under the direct truth (mean over methods); "wrong": a direction opposite to the truth;
- coverage of the 95 % alpha* intervals of every cell (under none, inverse and direct; an interval
  covers when it meets the alphas where the expected accuracy is highest: one point, or a plateau's
  top; a cell whose truth is flat in alpha has no optimum and is left out: the flat truth, and
  nearest_edge_steep at f = 1), in brackets among the cells whose interval pins alpha* and among the others (which span most of
  the range and cover nearly any truth), and of the full-data cell's alone (per truth; then split the
  same way, the share of full-data cells pinned and the median width of their interval as a share of
  the searched range), the median |alpha* error| (distance to those
  alphas) and the share of cells with |error| <= 0.1; "pinned": share of cells whose interval the
  analysis calls narrow enough to pin alpha*, and the share of those with |error| <= 0.1;
- gain cov.: coverage of the 95 % KD-gain intervals (truth: expected test accuracy at the reported
  alpha* minus at alpha = 0); false wins: share of cells called a KD win under the flat truth;
- impossible: reported accuracies outside [0, 1] or alphas outside the searched range (all truths);
- gain by f cov (population): coverage of the report's mean-KD-gain-per-f intervals of the gain over the
  population of replicates (``analysis.simulate.population_gain``); random vs scored cov: of random
  minus each scored method at the smallest f (random's edge; with one replicate plus the two cells' own
  offsets, since a single draw of each cell is what that finding is conditional on, as it says). With
  ``--replicates R --replicate-sd S`` every replicate has its own effect, so this is the coverage a
  finding needs to generalise beyond one teacher and subset.

With ``--replicates R`` (R >= 2) a third table: the answers over replicates (the report's verdicts: each
replicate's own alpha*(f) curve, a t test over their slopes) beside the same tests on the replicates'
cells pooled (conditional on them): FWER under none and edge_null, power per method under inverse
and edge_steep, and the coverage of each method's alpha*(f) intervals of the population's alpha*(f)
(``analysis.simulate.population_optimum``: the mean over replicates of the best alpha; within the
0.005 that printing to two decimals hides; where the truth is flat in alpha, left out as above). ``--replicate-sd`` gives each replicate its own shift and
tilt of the optimum in log f, so a direction found in the pooled cells of three teachers need not be
the population's.

With ``--truths edge_null edge_steep edge_shallow mixed`` (optima at the edge of the range, see
``analysis.simulate``) a second table: FWER when alpha* = 1 at every f; power against falls from the
edge (steep, shallow), per method and pooled; wrong directions; for methods whose curves differ
(random falls, the others flat), random's power, the share of sweeps with a finding for a flat method,
and the share with a pooled finding (the pooled fit should be withheld); coverage of alpha* there.

A table of power against bound: each alternative run (inverse, direct, edge_steep, edge_shallow) with
its power per method and pooled beside the most any 5 % test could have at that design and noise
(``analysis.power.direction_bounds``: the Neyman-Pearson test of the truth against the no-relation truth
nearest to it), and what the report's procedure would find knowing the truth and the noise (each test
two-sided, a method's only once the pooled direction is found, with Hommel's procedure among them:
``analysis.power.procedure_bounds``; the lower of the two, the one a power is held to). A bound
below a target says no analysis reaches it at this budget; a power above its
bound says the test does not hold its level at that nearest no-relation truth, which ``--truths
nearest_inverse nearest_direct nearest_edge_steep nearest_edge_shallow`` measures directly (FWER, the
false findings per method and pooled, and the coverage of every cell's alpha* interval there): alpha*
the same at every f, the peak's shape changing with f (``analysis.simulate``), the least favourable null
for a test against that alternative.

With ``--truths partial_inverse`` (``analysis.simulate.PARTIAL``: el2n and the shared f = 1 cell at
the nearest no-relation truth to the inverse relation, optimum fixed and the peak's shape changing with
f, every other method falling as the inverse relation does to meet that cell) a table of that partial
null: the share of sweeps with a false finding (el2n's direction, or a wrong one), el2n's own false
findings, the other methods' power, the pooled fit's verdicts and the alpha* coverage. There the other
methods' directions are found (the pooled verdict too, or it is withheld because the curves differ),
so el2n is tested, and its own level is what holds the family's error rate.

With ``--shapes`` each shape of the peak in alpha (``analysis.simulate``: parabola, a Gaussian bump,
asymmetric, a plateau) gets its own rows, drawn from the same seeds: the analysis fits a peak of
another family, so these rows say whether its error rates survive a curve shaped unlike it.
``--ratio-bound B`` runs the analysis with peaks whose sides' ratio reaches 1/B to B instead of its own
(``analysis.pooled.RATIO_BOUND``) on the same seeds, so two runs compare the bounds side by side; the
simulator, its nearest nulls included, is unchanged. ``--sigma-known`` fits every sweep with the
simulator's trial-to-trial sd given instead of estimated (a diagnostic: how much of the intervals' width
comes from estimating the noise; with the parabola and the inverse truth at noise 0.51, over 40 sweeps,
the cells with f < 1 covered alpha* in 99.0 % estimated and 99.1 % known, so the width is the model's).
``--bias-corrected-methods`` calibrates each method's direction test with the bias correction the
pooled fit's has (``analysis.pooled.null_statistic``): a candidate, measured on the same seeds.
``--paired-bias-correction`` measures every bias correction's shortfall with paired draws (common
random numbers; ``null_statistic``'s ``paired``): with ``--bias-corrected-methods``, the candidate of
analysis/CALIBRATION.md's "Paired draws".

Targets at the default budget: FWER <= 5 %, coverage in [90 %, 98 %], |error| <= 0.1 in >= 80 % of
cells, power >= 80 % for the inverse relation, zero impossible values. Monte Carlo error: with S sweeps
a rate near 5 % has a standard error of about sqrt(0.05 * 0.95 / S) (7 points at S = 10, 2 at S = 100).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from analysis import pooled, workers  # noqa: E402
from analysis.optimum import ACCURACY_COLUMNS  # noqa: E402
from analysis.power import PlannedDesign, direction_evidence, neyman_pearson_bounds, procedure_bounds  # noqa: E402
from analysis.simulate import (EDGE, FRACTIONS, METHODS, NEAREST, NOISE_SD, PARTIAL, PARTIAL_NULL_METHOD, SHAPES,  # noqa: E402
                               TRUTHS, has_optimum,
                               optimal_range, population_gain, population_optimum, replicate_move, simulate_sweep,
                               true_accuracy)
from contract import ALPHA_RANGE  # noqa: E402

CLASSIC = ("none", "flat", "inverse", "direct")  # the default truths; the edge ones on request (--truths)
EDGE_TRUTHS = ("edge_null", "edge_steep", "edge_shallow", "mixed")
# alpha is printed to two decimals: a population alpha* of 0.999 (one replicate in fifty below the edge)
# read against an interval printed [1.00, 1.00] is covered
PRINTED = 0.005


def one_sweep(args: tuple) -> dict:
    """Metrics of one simulated sweep (run in a worker process)."""
    truth, design, trials, seed, design_options = args
    design_options = dict(design_options)
    sigma = NOISE_SD * design_options["noise_scale"] if design_options.pop("sigma_known", False) else None
    bias_corrected_methods = design_options.pop("bias_corrected_methods", False)
    paired = design_options.pop("paired_bias_correction", False)
    methods = design_options["methods"]
    shape = design_options.get("shape", "parabola")
    warnings.filterwarnings("ignore")
    from analysis.alpha_f import POOLED, fit_alpha_f
    from analysis.optimum import cell_optima
    from analysis.results import tidy

    raw = simulate_sweep(truth, design, trials, seed=seed, **design_options)
    effects = raw.attrs.get("replicate_effects", {})
    frame = tidy(raw)
    fits = fit_alpha_f(frame, seed=seed, n_draws=200, sigma=sigma, bias_corrected_methods=bias_corrected_methods,
                       paired_bias_correction=paired)
    optima = cell_optima(frame, fits=fits)
    cells = optima.table
    # one fit per (method, label noise level); power counts each level's fit
    found, within, tests = {}, {}, {}
    for fit in fits:
        found.setdefault(fit.method, []).append(fit.relation)
        within.setdefault(fit.method, []).append(fit.within.get("relation", fit.relation))
        # each fit's p before the multiple-testing procedure and its slope's sign, then the two p it is the
        # larger of (the posterior sign test's, and the calibrated one where the posterior's was at most 5 %):
        # another procedure can be compared on the same sweeps from the record (pooled.graphical against
        # graphical_simes), and a miss traced to its step (bench/compare_procedures.py)
        tests.setdefault(fit.method, []).append([fit.p_value, fit.test_slope, fit.p_posterior,
                                                 fit.calibration.get("p_calibrated", float("nan"))])
    out = {"truth": truth, "design": design, "trials": trials, "seed": seed, "shape": shape,
           "any_finding": any(r in ("inverse", "direct") for rs in found.values() for r in rs),
           "relations": {m: found.get(m, ["not tested"]) for m in (*methods, POOLED)},
           # with replicates: the tests on their cells pooled (conditional on them), for comparison
           "any_within": any(r in ("inverse", "direct") for rs in within.values() for r in rs),
           "within": {m: within.get(m, ["not tested"]) for m in (*methods, POOLED)},
           "tests": tests}
    bad = 0
    for column in ACCURACY_COLUMNS:
        values = cells[column].to_numpy(float)
        bad += int(((values < 0) | (values > 1)).sum())
    for column in ("alpha_opt", "alpha_lo", "alpha_hi", "cell_alpha", "cell_alpha_lo", "cell_alpha_hi"):
        values = cells[column].to_numpy(float)
        bad += int(((values < 0) | (values > 1)).sum())
    out["impossible"] = bad
    # a cell whose truth is flat in alpha has no optimum to cover (analysis.simulate.has_optimum)
    peaked = np.array([has_optimum(truth, f, m) for f, m in zip(cells["fraction"], cells["method"])], bool)
    if peaked.any():
        scored = cells[peaked]
        # the optimal alphas of each cell (one point, or a plateau's top), a replicate's effect moving them
        best = np.array([optimal_range(truth, f, m, shape, replicate_move(effects[r], f) if r in effects else 0.0)
                         for f, m, r in zip(scored["fraction"], scored["method"], scored["replicate"])]).reshape(-1, 2)
        covered = ((scored["alpha_lo"] <= best[:, 1] + 1e-9) & (best[:, 0] - 1e-9 <= scored["alpha_hi"])).to_numpy()
        opt = scored["alpha_opt"].to_numpy(float)
        out["covered"] = covered.tolist()
        out["error"] = np.maximum.reduce([best[:, 0] - opt, opt - best[:, 1], np.zeros(len(opt))]).tolist()
        pinned = scored["pinned"].astype(bool).to_numpy()
        out["pinned"] = pinned.tolist()
        full = (scored["method"] == "full").to_numpy()
        out["full_covered"] = covered[full].tolist()
        out["full_pinned"] = pinned[full].tolist()
        out["full_width"] = (scored["alpha_hi"] - scored["alpha_lo"]).to_numpy(float)[full].tolist()
        # with replicates, alpha*(f) of each method's fit against the population's (the mean over replicates
        # of the best alpha, analysis.simulate.population_optimum): what an answer over replicates claims
        spread = design_options.get("replicate_sd", 0.0)
        if design_options.get("replicates", 1) > 1 and shape != "plateau":
            out["population_alpha_covered"] = [
                bool(fit.lo[i] - PRINTED <= population_optimum(truth, float(f), fit.method if f < 1 else "full", spread)
                     <= fit.hi[i] + PRINTED)
                for fit in fits if fit.method != POOLED and fit.replicates > 1 for i, f in enumerate(fit.f)
                if has_optimum(truth, float(f), fit.method if f < 1 else "full")]
    gains = []
    for _, c in cells.iterrows():
        if not math.isfinite(c["kd_gain_test_lo"]):
            continue
        method = c["method"]  # the shared f = 1 cell's truth is its own (a partial null's is its nearest null's)
        effect = effects.get(c["replicate"])  # the cell's own truth: its replicate's effect included
        true_gain = float(true_accuracy(truth, method, c["fraction"], c["alpha_opt"], effect, shape)
                          - true_accuracy(truth, method, c["fraction"], 0.0, effect, shape))
        gains.append((c["kd_gain_test_lo"] <= true_gain <= c["kd_gain_test_hi"], bool(c["kd_win"])))
    out["gain_covered"] = [g[0] for g in gains]
    out["wins"] = [g[1] for g in gains]
    # The summary findings against the population of replicates (analysis.simulate.population_gain): the
    # mean KD gain per f, and random minus each scored method at the smallest f (truth: random's edge).
    from analysis.comparisons import kd_gain_by_f, random_vs_scored

    spread = design_options.get("replicate_sd", 0.0)
    out["population_covered"] = [
        bool(r.lo <= population_gain(truth, r.fraction, methods if r.fraction < 1 else ("full",), spread,
                                     shape=shape) <= r.hi)
        for r in kd_gain_by_f(cells, optima.t_test).itertuples()] if truth in CLASSIC else []
    smallest = min(design_options["fractions"])
    offsets = raw.attrs["cell_offsets"]

    def versus_truth(row) -> float:
        """Random's edge; with one replicate, conditional on the two cells' draws (their offsets), which
        the finding says it is (with replicates it is over them: the population's)."""
        edge = EDGE.get("random", 0.0) * (1 - smallest)
        if design_options.get("replicates", 1) > 1:
            return edge
        return edge + (offsets[("random", row.fraction, row.label_noise, 0)] - offsets[(row.method, row.fraction, row.label_noise, 0)])

    out["versus_covered"] = [bool(r.lo <= versus_truth(r) <= r.hi)
                             for r in random_vs_scored(cells, optima.t_test).itertuples()] if truth in CLASSIC else []
    return out


def _rate(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def summarise(results: list[dict], design: str, trials: int, methods=METHODS, shape: str = "parabola",
              options: dict | None = None) -> dict:
    mine = [r for r in results if r["design"] == design and r["trials"] == trials and r["shape"] == shape]
    by = {t: [r for r in mine if r["truth"] == t] for t in TRUTHS}
    row = {"design": design, "trials": trials, "shape": shape, "sweeps": max(len(v) for v in by.values())}
    # the least favourable nulls: any finding, and a method's or the pooled fit's own false findings
    for truth in NEAREST:
        row[f"fwer_{truth}"] = _rate(r["any_finding"] for r in by[truth])
        row[f"false_{truth}"] = _rate(x in ("inverse", "direct") for r in by[truth] for m in methods for x in r["relations"][m])
        row[f"false_{truth}_pooled"] = _rate(x in ("inverse", "direct") for r in by[truth]
                                             for x in r["relations"].get("pooled", []))
        # and what the alpha* intervals do there: the peak's shape changes with f, so each location leans
        row[f"coverage_{truth}"] = _rate(c for r in by[truth] for c in r.get("covered", []))
    # the most power any 5 % test could have against each alternative run (analysis.power.direction_bounds),
    # and what the report's procedure would find with the truth and the noise known (procedure_bounds)
    if options is not None:
        planned = PlannedDesign(tuple(methods), tuple(options["fractions"]), options["full"], trials, design,
                                options["replicates"], tuple(options["label_noise"]))
        for truth in ("inverse", "direct", "edge_steep", "edge_shallow"):
            if by[truth]:
                evidence = direction_evidence(planned, options["noise_scale"], truth, shape=shape)
                bounds, procedure = neyman_pearson_bounds(evidence), procedure_bounds(evidence)
                row[f"bound_{truth}"] = float(np.mean([bounds[m] for m in methods]))
                row[f"bound_{truth}_pooled"] = bounds.get("pooled", float("nan"))
                row[f"procedure_{truth}"] = float(np.mean([procedure[m] for m in methods]))
                row[f"procedure_{truth}_pooled"] = procedure.get("pooled", float("nan"))
    row["fwer_none"] = _rate(r["any_finding"] for r in by["none"])
    row["fwer_flat"] = _rate(r["any_finding"] for r in by["flat"])
    row["fwer_none_within"] = _rate(r["any_within"] for r in by["none"])
    row["fwer_edge_null_within"] = _rate(r["any_within"] for r in by["edge_null"])
    row["power_within"] = _rate(x == "inverse" for r in by["inverse"] for m in methods for x in r["within"][m])
    row["power_edge_steep_within"] = _rate(x == "inverse" for r in by["edge_steep"] for m in methods for x in r["within"][m])
    row["population_alpha_coverage"] = _rate(c for r in mine for c in r.get("population_alpha_covered", []))
    pooled = ["pooled"] if len(methods) > 1 else []
    for method in (*methods, *pooled):
        row[f"power_{method}"] = _rate(x == "inverse" for r in by["inverse"] for x in r["relations"][method])
    row["power_mean"] = _rate(x == "inverse" for r in by["inverse"] for m in methods for x in r["relations"][m])
    row["power_direct"] = _rate(x == "direct" for r in by["direct"] for m in methods for x in r["relations"][m])
    row["power_direct_pooled"] = _rate(x == "direct" for r in by["direct"] for x in r["relations"].get("pooled", []))
    row["wrong"] = _rate([x == "direct" for r in by["inverse"] for m in (*methods, *pooled) for x in r["relations"][m]]
                         + [x == "inverse" for r in by["direct"] for m in (*methods, *pooled) for x in r["relations"][m]])
    located = [r for t in ("none", "inverse", "direct") for r in by[t]]  # the edge truths: coverage_edge
    covered = [c for r in located for c in r["covered"]]
    errors = np.array([e for r in located for e in r["error"]], float)
    errors = errors[np.isfinite(errors)]
    row["coverage"] = _rate(covered)
    # split by what the interval claims: pinned (narrower than half the range, analysis.pooled.PINNED_WIDTH)
    # or not; a wide interval spans most of the range and covers nearly whatever the truth, so an overall
    # coverage above 98 % can come from cells that say little, not from intervals too wide where they speak
    row["coverage_pinned"], row["coverage_unpinned"] = _by_pinned(located, "covered", "pinned")
    row["full_coverage"] = _rate(c for r in located for c in r["full_covered"])
    for truth in ("none", "inverse", "direct"):
        row[f"full_coverage_{truth}"] = _rate(c for r in by[truth] for c in r["full_covered"])
    # the full-data cell split the same way, and how wide its interval is (a share of the searched range):
    # where alpha matters least its own trials often cannot pin the optimum
    row["full_coverage_pinned"], row["full_coverage_unpinned"] = _by_pinned(located, "full_covered", "full_pinned")
    row["full_pinned_share"] = _rate(p for r in located for p in r["full_pinned"])
    widths = np.array([w for r in located for w in r["full_width"]], float)
    row["full_median_width"] = float(np.median(widths)) / (ALPHA_RANGE[1] - ALPHA_RANGE[0]) if len(widths) else float("nan")
    row["median_error"] = float(np.median(errors)) if len(errors) else float("nan")
    row["within_0.1"] = _rate(errors <= 0.1)
    pinned_err = np.array([e for r in located for e, p in zip(r["error"], r["pinned"]) if p], float)
    row["pinned_share"] = _rate(p for r in located for p in r["pinned"])
    row["pinned_within_0.1"] = _rate(pinned_err <= 0.1)
    row["gain_coverage"] = _rate(c for r in mine for c in r["gain_covered"])
    row["false_wins"] = _rate(w for r in by["flat"] for w in r["wins"])
    row["impossible"] = int(sum(r["impossible"] for r in mine))
    row["population_coverage"] = _rate(c for r in mine for c in r.get("population_covered", []))
    row["versus_coverage"] = _rate(c for r in mine for c in r.get("versus_covered", []))
    # optima at the edge of the range: the null at alpha* = 1, falls from the edge, methods that differ
    row["fwer_edge_null"] = _rate(r["any_finding"] for r in by["edge_null"])
    for truth in ("edge_steep", "edge_shallow"):
        row[f"power_{truth}"] = _rate(x == "inverse" for r in by[truth] for m in methods for x in r["relations"][m])
        row[f"power_{truth}_pooled"] = _rate(x == "inverse" for r in by[truth] for x in r["relations"].get("pooled", []))
    row["wrong_edge"] = _rate(x == "direct" for t in ("edge_steep", "edge_shallow", "mixed") for r in by[t]
                              for m in (*methods, *pooled) for x in r["relations"][m])
    others = [m for m in methods if m != "random"]
    row["mixed_random"] = _rate(x == "inverse" for r in by["mixed"] for x in r["relations"].get("random", []))
    row["mixed_false"] = _rate(any(x in ("inverse", "direct") for m in others for x in r["relations"][m]) for r in by["mixed"])
    row["mixed_pooled"] = _rate(x in ("inverse", "direct") for r in by["mixed"] for x in r["relations"].get("pooled", []))
    edge = [r for t in EDGE_TRUTHS for r in by[t]]
    row["coverage_edge"] = _rate(c for r in edge for c in r["covered"])
    # a partial null: one method at no relation beside methods with one; the null method's own findings
    # and any wrong direction are the false ones, so their rate is the family's error rate there
    for truth in PARTIAL:
        falling = [m for m in methods if m != PARTIAL_NULL_METHOD]
        row[f"fwer_{truth}"] = _rate(
            any(x in ("inverse", "direct") for x in r["relations"].get(PARTIAL_NULL_METHOD, []))
            or any(x == "direct" for m in (*falling, *pooled) for x in r["relations"][m]) for r in by[truth])
        row[f"false_{truth}"] = _rate(x in ("inverse", "direct") for r in by[truth]
                                      for x in r["relations"].get(PARTIAL_NULL_METHOD, []))
        row[f"power_{truth}"] = _rate(x == "inverse" for r in by[truth] for m in falling for x in r["relations"][m])
        row[f"power_{truth}_pooled"] = _rate(x == "inverse" for r in by[truth] for x in r["relations"].get("pooled", []))
        row[f"not_pooled_{truth}"] = _rate(x == "not pooled" for r in by[truth] for x in r["relations"].get("pooled", []))
        row[f"coverage_{truth}"] = _rate(c for r in by[truth] for c in r.get("covered", []))
    return row


def _by_pinned(results: list[dict], covered: str, pinned: str) -> tuple[float, float]:
    """Coverage among the intervals that pin alpha* and among the others."""
    pairs = [(c, p) for r in results for c, p in zip(r[covered], r[pinned])]
    return _rate(c for c, p in pairs if p), _rate(c for c, p in pairs if not p)


def _pct(value) -> str:
    return "  –  " if value is None or not math.isfinite(value) else f"{100 * value:4.0f}%"


def print_table(rows: list[dict], methods=METHODS) -> None:
    pooled = ["pooled"] if len(methods) > 1 else []
    head = ("design", "n/cell", "shape", "sweeps", "FWER none", "FWER flat", *(f"pw {m[:5]}" for m in (*methods, *pooled)),
            "pw direct", "wrong", "coverage (pinned/not)", "full cell cov (none/inv/dir)", "full cell cov (pinned/not), pinned, median width", "med|err|", "err<=.1", "pinned", "err<=.1 pinned", "gain cov", "false wins", "impossible",
            "gain by f cov (population)", "random vs scored cov")
    print(" | ".join(head))
    print("|".join("---" for _ in head))
    for r in rows:
        cells = [r["design"], str(r["trials"]), r["shape"], str(r["sweeps"]), _pct(r["fwer_none"]), _pct(r["fwer_flat"]),
                 *(_pct(r[f"power_{m}"]) for m in (*methods, *pooled)), _pct(r["power_direct"]),
                 _pct(r["wrong"]),
                 f"{_pct(r['coverage'])} ({_pct(r['coverage_pinned']).strip()}/{_pct(r['coverage_unpinned']).strip()})",
                 f"{_pct(r['full_coverage'])} ({'/'.join(_pct(r[f'full_coverage_{t}']).strip() for t in ('none', 'inverse', 'direct'))})",
                 f"{_pct(r['full_coverage_pinned']).strip()}/{_pct(r['full_coverage_unpinned']).strip()}, "
                 f"{_pct(r['full_pinned_share']).strip()}, {r['full_median_width']:.2f}",
                 f"{r['median_error']:.3f}" if math.isfinite(r["median_error"]) else "–", _pct(r["within_0.1"]),
                 _pct(r["pinned_share"]), _pct(r["pinned_within_0.1"]), _pct(r["gain_coverage"]), _pct(r["false_wins"]), str(r["impossible"]),
                 _pct(r["population_coverage"]), _pct(r["versus_coverage"])]
        print(" | ".join(cells))
    edge_rows = ("fwer_edge_null", "power_edge_steep", "power_edge_shallow", "mixed_random")
    if not any(math.isfinite(r[key]) for r in rows for key in edge_rows):
        return
    print()
    head = ("design", "n/cell", "shape", "FWER edge null", "pw steep", "pw steep pooled", "pw shallow", "pw shallow pooled",
            "wrong", "mixed: pw random", "mixed: false (others)", "mixed: pooled finding", "coverage edge")
    print(" | ".join(head))
    print("|".join("---" for _ in head))
    for r in rows:
        print(" | ".join([r["design"], str(r["trials"]), r["shape"], _pct(r["fwer_edge_null"]), _pct(r["power_edge_steep"]),
                          _pct(r["power_edge_steep_pooled"]), _pct(r["power_edge_shallow"]),
                          _pct(r["power_edge_shallow_pooled"]), _pct(r["wrong_edge"]), _pct(r["mixed_random"]),
                          _pct(r["mixed_false"]), _pct(r["mixed_pooled"]), _pct(r["coverage_edge"])]))


def print_bound_table(rows: list[dict], methods=METHODS) -> None:
    """Each alternative's power beside the most any 5 % test could have (the Neyman-Pearson bound at the
    nearest no-relation truth) and what the report's procedure would find with the truth and the noise
    known (two-sided, a method only after the pooled direction, Hommel's among them: ``procedure_bounds``),
    and the false findings at that nearest truth itself. A power above its bound means the test does
    not hold its level at some no-relation truth; a bound below a target means no analysis reaches it
    at this budget, a procedure's figure below it that no test of the report's shape does."""
    truths = [t for t in ("inverse", "direct", "edge_steep", "edge_shallow") if any(f"bound_{t}" in r for r in rows)]
    nulls = [t for t in NEAREST if any(math.isfinite(r[f"fwer_{t}"]) for r in rows)]
    if not truths and not nulls:
        return
    pooled = len(methods) > 1
    print()
    head = ("design", "n/cell", "shape",
            *(f"{t}: power / bound / procedure's per method" + (" (pooled)" if pooled else "") for t in truths),
            *(f"{t}: FWER, false per method" + (" (pooled)" if pooled else "") + ", alpha* coverage" for t in nulls))
    print(" | ".join(head))
    print("|".join("---" for _ in head))
    key = {"inverse": "power_mean", "direct": "power_direct", "edge_steep": "power_edge_steep",
           "edge_shallow": "power_edge_shallow"}
    pooled_key = {"inverse": "power_pooled", "direct": "power_direct_pooled", "edge_steep": "power_edge_steep_pooled",
                  "edge_shallow": "power_edge_shallow_pooled"}
    for r in rows:
        cells = [r["design"], str(r["trials"]), r["shape"]]
        for t in truths:
            text = " / ".join(_pct(v).strip() for v in (r[key[t]], r.get(f"bound_{t}"), r.get(f"procedure_{t}")))
            if pooled:
                text += " ({})".format(" / ".join(_pct(v).strip() for v in (
                    r.get(pooled_key[t]), r.get(f"bound_{t}_pooled"), r.get(f"procedure_{t}_pooled"))))
            cells.append(text)
        for t in nulls:
            text = f"{_pct(r[f'fwer_{t}']).strip()}, {_pct(r[f'false_{t}']).strip()}"
            text += f" ({_pct(r[f'false_{t}_pooled']).strip()})" if pooled else ""
            cells.append(f"{text}, {_pct(r[f'coverage_{t}']).strip()}")
        print(" | ".join(cells))


def print_partial_table(rows: list[dict]) -> None:
    """The partial nulls: the null method's false findings (its own level, which protects the family when
    the others' directions are found), the family's error rate there, the falling methods' power and the
    pooled fit's verdicts."""
    truths = [t for t in PARTIAL if any(math.isfinite(r[f"fwer_{t}"]) for r in rows)]
    if not truths:
        return
    print()
    head = ("design", "n/cell", "shape", *(f"{t}: FWER, {PARTIAL_NULL_METHOD} found, power of the others, pooled "
                                          f"inverse / not pooled, alpha* coverage" for t in truths))
    print(" | ".join(head))
    print("|".join("---" for _ in head))
    for r in rows:
        print(" | ".join([r["design"], str(r["trials"]), r["shape"], *(
            f"{_pct(r[f'fwer_{t}']).strip()}, {_pct(r[f'false_{t}']).strip()}, {_pct(r[f'power_{t}']).strip()}, "
            f"{_pct(r[f'power_{t}_pooled']).strip()} / {_pct(r[f'not_pooled_{t}']).strip()}, "
            f"{_pct(r[f'coverage_{t}']).strip()}" for t in truths)]))


def print_replicate_table(rows: list[dict]) -> None:
    """With replicates: the answers over replicates (the verdicts) beside the tests on their cells pooled."""
    if not any(math.isfinite(r["population_alpha_coverage"]) for r in rows):
        return
    print()
    head = ("design", "n/cell", "shape", "FWER none (over reps / within)", "FWER edge null (over / within)",
            "pw inverse per method (over / within)", "pw steep per method (over / within)", "alpha*(f) population cov")
    print(" | ".join(head))
    print("|".join("---" for _ in head))
    for r in rows:
        print(" | ".join([r["design"], str(r["trials"]), r["shape"],
                          *(f"{_pct(r[a]).strip()} / {_pct(r[b]).strip()}" for a, b in (
                              ("fwer_none", "fwer_none_within"), ("fwer_edge_null", "fwer_edge_null_within"),
                              ("power_mean", "power_within"), ("power_edge_steep", "power_edge_steep_within"))),
                          _pct(r["population_alpha_coverage"])]))


def noise_scale_of(parser: argparse.ArgumentParser, location: str, label_noise: float) -> float:
    from analysis.power import measured_noise

    try:
        _, matched, where = measured_noise(location, label_noise)
    except (ValueError, OSError) as error:
        parser.error(f"--noise-from: {error}")
    if isinstance(matched, ValueError):
        parser.error(f"--noise-from {location}: {matched}")
    print(f"signal to noise of {location} ({where}): {matched.describe()}")
    return matched.scale


def use_ratio_bound(bound: float | None) -> None:
    """Run this process's analysis with peaks whose sides' ratio reaches 1/bound to bound (None: its own)."""
    if bound is not None:
        pooled.RATIOS = pooled.ratio_grid(bound)


def task_key(task: tuple, ratio_bound: float | None) -> str:
    """What makes a simulated sweep's result: its truth, design, budget, seed, options and the analysis's
    ratio bound (a record's line is reused only for exactly that)."""
    truth, design, trials, seed, options = task
    return json.dumps([truth, design, trials, seed, options, ratio_bound], sort_keys=True)


def _plain(value):
    return value.item() if hasattr(value, "item") else str(value)


def with_progress(results, tasks: list[tuple], sweeps: int, start: float, recorded: dict, keys: list[str],
                  record: str | None) -> list[dict]:
    """The sweeps' results in task order: those ``recorded`` (by ``task_key``) and those ``results``
    yields for the rest, in order, each appended to ``record`` as it comes (a run stopped after an hour
    keeps what it did, and ``--record`` again runs only the rest). Prints a line as each row's sweeps
    finish: a long run shows where it is."""
    done = []
    fresh = iter(results)
    for index, key in enumerate(keys):
        if key in recorded:
            done.append(recorded[key])
        else:
            done.append(next(fresh))
            if record:
                with open(record, "a") as handle:
                    handle.write(json.dumps({"key": key, "result": done[-1]}, default=_plain) + "\n")
        if len(done) % sweeps == 0:
            truth, design, trials, _, options = tasks[index]
            print(f"  {len(done)}/{len(tasks)}: {options['shape']}, {truth}, {design}, {trials} trials "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    return done


def read_record(record: str | None) -> dict:
    """{task_key: result} of a record's complete lines (a line cut by a stopped run is left out)."""
    found = {}
    if record and os.path.exists(record):
        with open(record) as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                found[entry["key"]] = entry["result"]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", nargs="+", default=["tpe", "grid"], help="alpha designs (default %(default)s)")
    parser.add_argument("--trials", nargs="+", type=int, default=[3, 6, 8, 12], help="trials per cell")
    parser.add_argument("--sweeps", type=int, default=10, help="simulated sweeps per truth, design and budget")
    parser.add_argument("--truths", nargs="+", default=list(CLASSIC), choices=TRUTHS,
                        help=f"default {' '.join(CLASSIC)}; the edge ones: {' '.join(EDGE_TRUTHS)}; the least "
                        f"favourable no-relation ones: {' '.join(NEAREST)}; a partial null: {' '.join(PARTIAL)}")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument("--seed", type=int, default=0)
    design = parser.add_argument_group("the simulated sweep's design (default: 5 methods x 6 fractions + f = 1)")
    design.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    design.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS), help="kept fractions below 1")
    design.add_argument("--no-full-cell", action="store_true", help="no shared f = 1 cell (a sweep without 1.0)")
    design.add_argument("--label-noise", nargs="+", type=float, default=[0.0],
                        help="levels, each its own cells and fits, one family of tests (the truth is the same at each)")
    noise = design.add_mutually_exclusive_group()
    noise.add_argument("--noise-scale", type=float, default=1.0,
                       help="multiply every noise sd (default 1: validation sd 1.5 points, curvature as documented "
                       "in analysis.simulate)")
    noise.add_argument("--noise-from", metavar="RESULTS",
                       help="an experiment directory or results.csv: simulate at its signal to noise "
                       "(analysis.simulate.matched_noise_scale), measured on its cells at the first --label-noise level")
    design.add_argument("--replicates", type=int, default=1, help="study replicates per sweep (each its own cells)")
    design.add_argument("--replicate-sd", type=float, default=0.0,
                        help="each replicate's own effect (analysis.simulate.replicate_effect): log-sd of how much KD "
                        "matters; the optimum shifts and tilts in log f by a third of it (default 0: replicates differ "
                        "only by noise)")
    parser.add_argument("--ratio-bound", type=float, default=None, metavar="B",
                        help="try the analysis with peaks whose sides' ratio reaches 1/B to B (default: its own, "
                             "analysis.pooled.RATIO_BOUND); the simulator is unchanged")
    parser.add_argument("--bias-corrected-methods", action="store_true",
                        help="calibrate each method's direction test with the pooled fit's bias correction too (a "
                             "candidate; the report's analysis corrects only the pooled fit's)")
    parser.add_argument("--paired-bias-correction", action="store_true",
                        help="measure each bias correction's shortfall with paired draws, the same noise at the "
                             "data's fitted truth and at each draw's (a candidate; the report's draws are unpaired)")
    parser.add_argument("--sigma-known", action="store_true",
                        help="fit with the simulator's trial-to-trial sd given, not estimated (a diagnostic)")
    parser.add_argument("--record", metavar="FILE",
                        help="append each simulated sweep's result to FILE (JSON lines) as it finishes, and take "
                             "those already there instead of running them again: a run stopped or cut by a session's "
                             "end goes on where it was with the same command")
    design.add_argument("--shapes", nargs="+", default=["parabola"], choices=SHAPES,
                        help="shapes of the peak in alpha (analysis.simulate; default parabola), each its own rows")
    args = parser.parse_args(argv)
    # the sweeps are this bench's unit of parallel work (--jobs): each one's analysis runs in its own process
    # (and --ratio-bound changes this process's peaks, which analysis.workers' processes would not see)
    workers.set_jobs(1)
    if args.noise_from:
        args.noise_scale = noise_scale_of(parser, args.noise_from, args.label_noise[0])
    options = {"methods": tuple(args.methods), "fractions": tuple(args.fractions), "full": not args.no_full_cell,
               "label_noise": tuple(args.label_noise), "noise_scale": args.noise_scale, "replicates": args.replicates,
               "replicate_sd": args.replicate_sd}
    if args.sigma_known:  # only then: a record's lines of estimated-noise runs keep their keys
        options["sigma_known"] = True
        print(f"the analysis is given the noise: sd {100 * NOISE_SD * args.noise_scale:.2f} points between trials", flush=True)
    if args.bias_corrected_methods:  # likewise
        options["bias_corrected_methods"] = True
        print("each method's calibration is bias-corrected as the pooled fit's (a candidate)", flush=True)
    if args.paired_bias_correction:  # likewise
        options["paired_bias_correction"] = True
        print("every bias correction's shortfall measured with paired draws (a candidate)", flush=True)
    # the same seeds for every shape: the shapes' rows differ by the shape, not by the noise drawn
    tasks = [(truth, design, trials, args.seed * 100_003 + s, {**options, "shape": shape}) for design in args.designs
             for trials in args.trials for shape in args.shapes for truth in args.truths for s in range(args.sweeps)]
    start = time.perf_counter()
    print(f"{len(tasks)} simulated sweeps on {args.jobs} processes "
          f"(noise: validation sd {1.5 * args.noise_scale:.2f} points between trials, {0.5 * args.noise_scale:.2f} per cell; "
          f"{len(args.methods)} methods x {len(args.fractions)} fractions{'' if args.no_full_cell else ' + f = 1'}"
          f" x {len(args.label_noise)} label noise level(s))", flush=True)
    if args.ratio_bound is not None:
        print(f"the analysis's peaks: sides' ratio from 1/{args.ratio_bound:g} to {args.ratio_bound:g} "
              f"(its own: {pooled.RATIO_BOUND:g}); the simulator's nearest nulls keep theirs", flush=True)
        use_ratio_bound(args.ratio_bound)
    keys = [task_key(task, args.ratio_bound) for task in tasks]
    recorded = read_record(args.record)
    todo = [task for task, key in zip(tasks, keys) if key not in recorded]
    if len(todo) < len(tasks):
        print(f"{len(tasks) - len(todo)} of them from {args.record}", flush=True)
    progress = dict(tasks=tasks, sweeps=args.sweeps, start=start, recorded=recorded, keys=keys, record=args.record)
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, initializer=use_ratio_bound, initargs=(args.ratio_bound,)) as pool:
            results = with_progress(pool.map(one_sweep, todo, chunksize=2), **progress)
    else:
        results = with_progress(map(one_sweep, todo), **progress)
    rows = [summarise(results, d, n, args.methods, shape, options) for d in args.designs for n in args.trials
            for shape in args.shapes]
    print_table(rows, args.methods)
    print_bound_table(rows, args.methods)
    print_partial_table(rows)
    print_replicate_table(rows)
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
