"""The CIFAR-10 subset study's tables, figures and verdicts, from the sweeps of ``run.sh``.

    python studies/cifar10_subset/analyse.py --runs runs/cifar10_subset --out studies/cifar10_subset
    python studies/cifar10_subset/analyse.py --results studies/cifar10_subset/results.csv --out OUT  # from the table

Reads ``results.csv`` of the sweeps ``main``, ``small-teacher`` and ``full-data`` under ``RUNS`` and writes
to ``OUT``:

- ``results.csv``: every sweep's trials, one row per student (the sweep's own results format);
- ``cells.csv`` and ``fit.json``: the project's analysis of all trials at once (``analysis.report.analyse``:
  every cell's alpha* and KD gain with 95 % intervals, the alpha-f fits with the report's multiple-testing
  procedure);
- ``figures/*.png``: alpha* versus f, KD versus no KD against f, the KD gain against label noise, and
  the teacher-capacity comparison (the report's own plotly figures, written with kaleido);
- ``findings.md`` and ``claims.json``: the paper's four claims, each with its numbers, intervals and a
  verdict by the rules below, fixed before the study ran.

Verdict rules (95 % intervals; "points" are percentage points of test accuracy):

1. KD improves accuracy for every method and f: *reproduced* when the mean KD gain's interval excludes 0
   at every (f, label noise) and every cell's own estimate is positive; *partly* when only some do.
2. With KD, random pruning matches or beats score-based pruning, most of all at small f: *reproduced*
   when at the smallest f random minus EL2N (with KD) has an interval above 0 ("beats") or containing 0
   ("matches") at every noise level, and the difference is larger at the smallest f than at the largest;
   *not reproduced* when an interval lies below 0.
3. The optimal alpha grows as f shrinks: *reproduced* for a (method, noise) group when its alpha-f test
   says "inverse" after the report's multiple-testing procedure over the study's tests (family-wise error
   5 %; Holm's procedure when the rule was written, since then the pooled direction first and the
   methods' once it is found, with Holm's and since 2026-12-07 Hommel's procedure among them: the
   verdicts are the same under each); "direct" is a
   contrary finding; "no evidence" means this budget cannot tell.
4. At small f a teacher smaller than the student can beat a larger one: *reproduced* when, at some f <= 0.2,
   the smaller teacher minus the larger (with KD) has an interval above 0; *contrary* when an interval lies
   below 0 at every f <= 0.2; otherwise inconclusive.
"""

from __future__ import annotations

import json
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from analysis.claims import (claim_capacity, claim_inverse, claim_kd_helps, claim_random_vs_scored, combine,  # noqa: E402
                             interval, noise_mechanism, p_text, pts, save_results, study_arguments, write_figures,
                             write_tables)
from analysis.pooled import LEVEL  # noqa: E402
from analysis.results import read_results_csv  # noqa: E402

SWEEPS = ("main", "small-teacher", "full-data")
MAIN_TEACHER = "cnn3_w64"


def findings_markdown(claims: dict, teachers: dict, sigma: dict, n_trials: int) -> str:
    one, two, three, four = (claims[k] for k in ("kd_helps", "random_vs_scored", "inverse_alpha_f", "capacity"))
    noise = claims["label_noise"]
    lines = [
        "# CIFAR-10 subset study: the paper's four claims",
        "",
        f"{n_trials} students; teachers' test accuracy: "
        + ", ".join(f"{name} {100 * acc:.1f} %" for name, acc in teachers.items())
        + f". Trial-to-trial noise of validation accuracy: sd {100 * sigma['val']:.2f} points "
        f"({sigma['df']:.0f} degrees of freedom). Intervals are {LEVEL:.0%}; gains and differences are "
        "percentage points of test accuracy (model predictions at alpha*; 'no KD' values are measured means).",
        "",
        f"## 1. KD improves accuracy for every method and f: {one['verdict']}",
        "",
        f"{one['cells_positive']} of {one['cells']} cells gain (from {pts(one['min_gain'])} to {pts(one['max_gain'])} "
        f"points); in {one['cells_win']} the cell's own interval excludes 0.",
        "",
        "| label noise P | f | mean KD gain [95 %] | cells (wins) |",
        "| --- | --- | --- | --- |",
        *(f"| {r['label_noise']:g} | {r['fraction']:g} | {interval(r['gain'], r['lo'], r['hi'])} | {r['cells']} ({r['wins']}) |"
          for r in one["by_f"]),
        "",
        "Per cell (test accuracy, %):",
        "",
        "| label noise P | f | method | no KD (measured) | KD at alpha* | KD gain [95 %] |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {r['label_noise']:g} | {r['fraction']:g} | {r['method']} | {100 * r['no_kd']:.1f} | {100 * r['kd']:.1f} | "
          f"{interval(r['gain'], r['lo'], r['hi'])} |" for r in one["per_cell"]),
        "",
        f"### Under label noise (the paper's explanation: KD helps most where the kept labels are noisy): {noise['verdict']}",
        "",
        "| method | mean KD gain at P = 0 | at P = 0.3 | difference [95 %] |",
        "| --- | --- | --- | --- |",
        *(f"| {r['method']} | {pts(r['gain_low'])} | {pts(r['gain_high'])} | {interval(r['diff'], r['lo'], r['hi'])} |"
          for r in noise["rows"]),
        "",
        f"## 2. With KD, random pruning matches or beats score-based pruning, most at small f: {two['verdict']}",
        "",
        "| label noise P | f | random minus EL2N with KD [95 %] | without KD (measured) |",
        "| --- | --- | --- | --- |",
        *(f"| {r['label_noise']:g} | {r['fraction']:g} | {interval(r['diff'], r['lo'], r['hi'])} | {pts(r['diff_no_kd'])} |"
          for r in two["rows"]),
        "",
        f"## 3. The optimal alpha grows as f shrinks: {three['verdict']}",
        "",
        "| label noise P | method | alpha*(f) | slope per tenfold f [95 %] | p (adjusted) | relation |",
        "| --- | --- | --- | --- | --- | --- |",
        *(f"| {r['label_noise']:g} | {r['method']} | " + ", ".join(f"{f}: {a:.2f}" for f, a in r["alpha"].items())
          + f" | {r['slope']:+.2f} [{r['slope_lo']:+.2f}, {r['slope_hi']:+.2f}] | {p_text(r['p'], r['p_adjusted'])} | {r['relation']} |"
          for r in three["fits"]),
        "",
        f"## 4. At small f a smaller teacher can beat a larger one: {four['verdict']}",
        "",
        "| f | teacher | minus | with KD [95 %] | without KD (measured) |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {r['fraction']:g} | {r['teacher_arch']} | {r['larger_arch']} | {interval(r['diff'], r['lo'], r['hi'])} | "
          f"{pts(r['diff_no_kd'])} |" for r in four["rows"]),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = study_arguments(__doc__, __file__, "runs/cifar10_subset").parse_args(argv)
    trials = (read_results_csv(args.results) if args.results else
              combine(args.runs, SWEEPS, "run studies/cifar10_subset/run.sh first")[0])
    results = save_results(trials, args)
    analysis = write_tables(results, args.out)
    cells, fits, optima = analysis.cells, analysis.fits, analysis.optima
    t = optima.t_test

    main_cells = cells[cells["teacher_arch"] == MAIN_TEACHER]
    claims = {
        "kd_helps": claim_kd_helps(main_cells, t),
        "label_noise": noise_mechanism(main_cells, t),
        "random_vs_scored": claim_random_vs_scored(main_cells, t),
        "inverse_alpha_f": claim_inverse([fit for fit in fits if fit.context["teacher_arch"] == MAIN_TEACHER]),
        "capacity": claim_capacity(cells[(cells["method"] == "random") & (cells["label_noise"] == 0)], t),
    }
    teachers = {f"{arch} (P = {noise:g})": float(acc) for (arch, noise), acc in
                trials.groupby(["teacher_arch", "label_noise"])["teacher_test_acc"].first().items()}
    sigma = {"val": optima.sigma_val, "test": optima.sigma_test, "df": optima.noise_df}
    with open(os.path.join(args.out, "claims.json"), "w") as handle:
        json.dump({"claims": claims, "teachers_test_acc": teachers, "noise_sd": sigma, "t": t,
                   "students": int(len(trials))}, handle, indent=1, default=float)
    with open(os.path.join(args.out, "findings.md"), "w") as handle:
        handle.write(findings_markdown(claims, teachers, sigma, len(trials)))
    if not args.no_figures:
        write_figures(cells, fits, t, args.out, MAIN_TEACHER)
    for name, claim in claims.items():
        print(f"{name}: {claim['verdict']}")
    print(f"written to {args.out}: results.csv, cells.csv, fit.json, claims.json, findings.md"
          + ("" if args.no_figures else ", figures/*.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
