"""Forms of the direction test's calibration for a method's fit, compared on the same simulated sweeps
and the same simulated draws at each fit's nearest no-relation truth.

    python bench/bench_calibration_forms.py                                  # 60 sweeps per truth, about 20 minutes
    python bench/bench_calibration_forms.py --truths edge_steep --sweeps 10

Each sweep (``analysis.simulate``: 5 methods x 6 fractions + the f = 1 cell, grid design, 16 students
per cell, noise scale 0.51 unless told) is analysed by the report (``analysis.alpha_f.fit_alpha_f``).
Every method fit whose posterior p is at most 5 % (only those can be found) is then calibrated once
more here: its nearest no-relation truth simulated ``pooled.CALIBRATION_DRAWS`` times, each draw also
corrected for the fitted truth's shortfall (``pooled.null_statistic`` with ``bias_corrected``: the
pooled fit's correction). On those draws, four forms of the calibrated p, each then taken as the
larger of it and the posterior's p, as the report does:

- centred (the report's, ``pooled.calibrated_p``): two-sided around the lean the draws measure;
- abs(z): the chance at that truth of a signed z at least as far from 0 as the observed one, either side
  (the parametric bootstrap of the posterior test's own statistic; it spends the whole level on the
  side the lean points to);
- each of the two with the bias-corrected draws' lean.

Per truth and form it prints the share of method fits whose p is at most 5 % before the multiple-testing
procedure (at a no-relation truth: a method's own false-finding rate, what a valid test holds at 5 %)
and the share found after the report's procedure (the pooled fit's p as the report computes it). The
record of what was run, and what it found: analysis/CALIBRATION.md, "Where the steep fall's per-method
misses go".
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import numpy as np
from scipy import stats as sps

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from analysis import pooled  # noqa: E402
from analysis.alpha_f import POOLED, fit_alpha_f, group_data  # noqa: E402
from analysis.results import tidy  # noqa: E402
from analysis.simulate import TRUTHS, simulate_sweep  # noqa: E402

FORMS = ("centred (the report's)", "abs(z)", "centred, bias-corrected", "abs(z), bias-corrected")


def absolute_p(observed_z: float, z: np.ndarray, used: np.ndarray) -> float:
    """The chance of a signed z at least as far from 0 as ``observed_z``, either side, at the simulated
    truth (mean of ``used``, spread as in ``pooled.calibrated_p``, t on draws - 1 degrees of freedom)."""
    draws = len(z)
    spread = math.sqrt(float(z.std(ddof=1)) ** 2 + used.var(ddof=1) / draws)
    mean, far = float(used.mean()), abs(observed_z)
    if spread <= 1e-9:
        return 1.0 if far <= abs(mean) + 1e-9 else 0.0
    return float(sps.t.cdf((-far - mean) / spread, draws - 1) + sps.t.sf((far - mean) / spread, draws - 1))


def form_p_values(frame, fit, rng: np.random.Generator) -> dict[str, float]:
    """{form: the method fit's p under it} (its posterior p, for every form, when that is above 5 %)."""
    if not fit.p_posterior <= pooled.SIGNIFICANCE:
        return dict.fromkeys(FORMS, fit.p_posterior)
    group = group_data(frame, fit.method)
    observed = pooled.direction_test(group.stats, group.x, group.sigma2)
    z, corrected = pooled.null_statistic(group.cells, group.sigma2, rng, pooled.CALIBRATION_DRAWS,
                                         pooled.SignedZ(group.x, group.sigma2), bias_corrected=True)
    values = {FORMS[0]: pooled.calibrated_p(observed.signed_z, z, z), FORMS[1]: absolute_p(observed.signed_z, z, z),
              FORMS[2]: pooled.calibrated_p(observed.signed_z, z, corrected),
              FORMS[3]: absolute_p(observed.signed_z, z, corrected)}
    return {form: max(observed.p_value, p) for form, p in values.items()}


def one_sweep(truth: str, seed: int, trials: int, noise_scale: float) -> dict[str, dict[str, list[bool]]]:
    """{form: {"raw": [p at most 5 %], "found": [found by the procedure]} over the sweep's method fits}."""
    frame = tidy(simulate_sweep(truth, "grid", trials, seed=seed, noise_scale=noise_scale))
    fits = fit_alpha_f(frame, seed=seed, n_draws=200)
    rng = np.random.default_rng([seed, 99])
    methods = [fit for fit in fits if fit.method != POOLED]
    per_fit = [form_p_values(frame, fit, rng) for fit in methods]
    out = {}
    for form in FORMS:
        tested = [(fit.method, p[form]) for fit, p in zip(methods, per_fit) if math.isfinite(p[form])]
        tested += [(POOLED, fit.p_value) for fit in fits if fit.method == POOLED and math.isfinite(fit.p_value)]
        weights, transitions = pooled.direction_graph([(0.0, name == POOLED) for name, _ in tested])
        rejected, _ = pooled.graphical_simes([p for _, p in tested], weights, transitions)
        found = {name for (name, _), reject in zip(tested, rejected) if reject}
        out[form] = {"raw": [p[form] <= pooled.SIGNIFICANCE for p in per_fit],
                     "found": [fit.method in found for fit in methods]}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--truths", nargs="+", default=["edge_steep", "nearest_inverse", "nearest_edge_steep"],
                        choices=TRUTHS)
    parser.add_argument("--sweeps", type=int, default=60)
    parser.add_argument("--trials", type=int, default=16, help="students per cell")
    parser.add_argument("--noise-scale", type=float, default=0.51)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    print("truth | sweeps | form | method fits with p <= 5 % | found after the procedure")
    print("---|---|---|---|---")
    for truth in args.truths:
        start = time.time()
        sweeps = [one_sweep(truth, seed, args.trials, args.noise_scale) for seed in range(args.sweeps)]
        for form in FORMS:
            raw = [x for sweep in sweeps for x in sweep[form]["raw"]]
            found = [x for sweep in sweeps for x in sweep[form]["found"]]
            print(f"{truth} | {args.sweeps} | {form} | {np.mean(raw):.1%} of {len(raw)} | {np.mean(found):.1%}")
        print(f"({time.time() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
