"""Holm's procedure against Hommel's among the methods, on the same simulated sweeps.

``bench/bench_calibration.py --record FILE`` keeps each fit's p-value before the multiple-testing
procedure (``tests``: [p, the slope's sign] per fit). This reads such a record and puts every sweep's
p-values through both graphs of the report's family (``analysis.pooled.direction_graph``): the
Bonferroni one (``graphical``: Holm's among the methods, the report's until 2026-12-07) and the Simes
one (``graphical_simes``: Hommel's, the report's since). Per truth and procedure it prints how often a
method's fit found each direction, how often the pooled fit did, and how many sweeps found anything.

Then, for records that keep the two p-values a fit's p is the larger of (the posterior sign test's and
the calibrated one; recorded since 2026-12-07), where the method fits that found no direction under the
report's procedure were lost: the posterior's p above 5 %, the calibration's above 5 % (the posterior's
at most 5 %), the pooled fit tested and not found (the methods are asked only after it), or a p at most
5 % that the procedure's level among the methods did not reach. Against a truth with a relation this
says which step a change would have to win power back from.

    python bench/compare_procedures.py runs/hommel/record.jsonl

One label noise level per sweep (the bench's default design); records written before the ``tests``
field existed are skipped, and the record is read as the bench reads it (``bench_calibration.read_record``:
a line cut by a stopped run left out, a sweep recorded twice counted once).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from analysis.pooled import SIGNIFICANCE, direction_graph, graphical, graphical_simes  # noqa: E402
from bench_calibration import read_record as read_results  # noqa: E402

PROCEDURES = {"holm": graphical, "hommel": graphical_simes}
POOLED = "pooled"


def decisions(tests: dict, procedure) -> dict[str, str]:
    """{fit: "inverse" / "direct" / "no evidence"} of one sweep's tested fits under ``procedure``."""
    names = [name for name, fits in tests.items() if np.isfinite(fits[0][0])]
    p = np.array([tests[name][0][0] for name in names], float)
    weights, transitions = direction_graph([(0.0, name == POOLED) for name in names])
    rejected, _ = procedure(p, weights, transitions)
    return {name: ("inverse" if tests[name][0][1] < 0 else "direct") if found else "no evidence"
            for name, found in zip(names, rejected)}


def compare(records: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """{(truth, procedure): rates} over ``records`` (bench_calibration's results with ``tests``)."""
    out = {}
    by_truth: dict[str, list[dict]] = {}
    for record in records:
        by_truth.setdefault(record["truth"], []).append(record)
    for truth, sweeps in by_truth.items():
        for name, procedure in PROCEDURES.items():
            found = [decisions(sweep["tests"], procedure) for sweep in sweeps]
            methods = [m for sweep in sweeps for m in sweep["tests"] if m != POOLED]
            fits = [d.get(m, "no evidence") for d, sweep in zip(found, sweeps) for m in sweep["tests"] if m != POOLED]
            # each method's own share of fits with a finding (either way): the README quotes their range
            by_method = [np.mean([d.get(m, "no evidence") != "no evidence" for d, sweep in zip(found, sweeps)
                                  if m in sweep["tests"]]) for m in dict.fromkeys(methods)]
            out[truth, name] = {
                "sweeps": len(sweeps),
                "method_inverse": float(np.mean([x == "inverse" for x in fits])) if methods else float("nan"),
                "method_direct": float(np.mean([x == "direct" for x in fits])) if methods else float("nan"),
                "method_range": (float(min(by_method)), float(max(by_method))) if methods else (float("nan"),) * 2,
                "pooled_found": float(np.mean([d.get(POOLED, "no evidence") != "no evidence" for d in found])),
                "any_finding": float(np.mean([any(x != "no evidence" for x in d.values()) for d in found])),
            }
    return out


LOSSES = ("posterior p > 5 %", "calibrated p > 5 %", "pooled not found", "short of its level")


def losses(records: list[dict], procedure=graphical_simes) -> dict[str, dict[str, float]]:
    """{truth: {"fits", "found", and each of ``LOSSES``: share of the method fits}} under ``procedure``,
    over the records whose fits keep their posterior and calibrated p (``tests``: [p, slope, posterior p,
    calibrated p]). Each fit that found no direction counts under the first step that lost it."""
    out: dict[str, dict[str, float]] = {}
    for record in records:
        tests = record["tests"]
        if any(len(fits[0]) < 4 for fits in tests.values()):
            continue  # recorded before the two p were kept
        found = decisions(tests, procedure)
        pooled_missed = POOLED in found and found[POOLED] == "no evidence"
        row = out.setdefault(record["truth"], dict.fromkeys(("fits", "found", *LOSSES), 0.0))
        for name, fits in tests.items():
            if name == POOLED:
                continue
            _, _, posterior, calibrated = fits[0]
            row["fits"] += 1
            if found.get(name, "no evidence") != "no evidence":
                row["found"] += 1
            elif not posterior <= SIGNIFICANCE:  # also a fit never tested (fewer than 3 f): no p at all
                row[LOSSES[0]] += 1
            elif not calibrated <= SIGNIFICANCE:
                row[LOSSES[1]] += 1
            elif pooled_missed:
                row[LOSSES[2]] += 1
            else:
                row[LOSSES[3]] += 1
    for row in out.values():
        for key in ("found", *LOSSES):
            row[key] /= max(row["fits"], 1)
    return out


def read_record(path: str) -> list[dict]:
    """The record's sweeps that keep their fits' p-values (``tests``)."""
    return [row for row in read_results(path).values() if "tests" in row]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", help="a JSON-lines record of bench/bench_calibration.py --record")
    args = parser.parse_args(argv)
    records = read_record(args.record)
    rates = compare(records)
    print("truth | procedure | sweeps | method fits: inverse | direct | found, by method | pooled found | "
          "sweeps with any finding")
    print("---|---|---|---|---|---|---|---")
    for (truth, name), row in rates.items():
        low, high = row["method_range"]
        print(f"{truth} | {name} | {row['sweeps']} | {row['method_inverse']:.1%} | {row['method_direct']:.1%} | "
              f"{low:.0%}-{high:.0%} | {row['pooled_found']:.1%} | {row['any_finding']:.1%}")
    lost = losses(records)
    if lost:
        print("\nwhere the method fits without a direction were lost (Hommel's procedure; shares of all method fits)")
        print("truth | method fits | found | " + " | ".join(LOSSES))
        print("---|---|---|" + "---|" * (len(LOSSES) - 1) + "---")
        for truth, row in lost.items():
            print(f"{truth} | {row['fits']:.0f} | {row['found']:.1%} | " + " | ".join(f"{row[k]:.1%}" for k in LOSSES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
