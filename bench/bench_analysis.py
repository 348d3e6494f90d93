"""The analysis's speed against another revision of this project, side by side on the same machine.

    python bench/bench_analysis.py --against a069d37 [--revision 6f739f9] [--study cifar10_self_distillation] [--rounds 2]

Checks the other revision (and ``--revision``, when given, instead of this checkout) out into a
temporary git worktree and times, alternating between the two
trees round by round, the committed study's own analysis (``studies/STUDY/analyse.py --results
studies/STUDY/results.csv --no-figures``: every fit, calibration and table of a real 972-student
study), each tree analysing its own copy of the same results table. Prints each run's seconds, the
median per tree and their ratio, and whether the two trees wrote the same findings (an optimisation
that is meant to change no number says so here). Alternating rounds and the median keep a noisy
machine's drift out of the ratio; the absolute seconds mean little elsewhere.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def analyse(tree: Path, study: str, out: Path) -> float:
    """Seconds for one run of ``tree``'s analysis of its study's committed results."""
    script = tree / "studies" / study / "analyse.py"
    start = time.perf_counter()
    subprocess.run([sys.executable, str(script), "--results", str(tree / "studies" / study / "results.csv"),
                    "--out", str(out), "--no-figures"], cwd=tree, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="a git revision to compare this checkout with")
    parser.add_argument("--revision", help="a git revision to time instead of this checkout (its own worktree)")
    parser.add_argument("--study", default="cifar10_self_distillation", help="a folder of studies/")
    parser.add_argument("--rounds", type=int, default=2, help="runs per tree, alternating")
    args = parser.parse_args(argv)
    if not (ROOT / "studies" / args.study / "results.csv").exists():
        parser.error(f"no committed results at studies/{args.study}/results.csv")
    this = f"this ({args.revision})" if args.revision else "this checkout"
    against = f"against ({args.against})"
    with tempfile.TemporaryDirectory() as scratch:
        added = {}
        for kind, revision in (("other", args.against), ("this", args.revision)):
            if revision:
                added[kind] = Path(scratch) / kind
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(added[kind]), revision],
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            trees = {this: added.get("this", ROOT), against: added["other"]}
            seconds = {name: [] for name in trees}
            for round_ in range(args.rounds):
                for name, tree in trees.items():
                    out = Path(scratch) / f"{round_}-{'this' if name == this else 'other'}"
                    seconds[name].append(analyse(tree, args.study, out))
                    print(f"round {round_ + 1}: {name}: {seconds[name][-1]:.1f} s", flush=True)
            medians = {name: statistics.median(values) for name, values in seconds.items()}
            findings = {(Path(scratch) / f"0-{kind}" / "findings.md").read_text() for kind in ("this", "other")}
        finally:
            for tree in added.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    print(f"median: {this} {medians[this]:.1f} s, {against} {medians[against]:.1f} s; "
          f"{this} takes {medians[this] / medians[against]:.2f}x the time")
    print("findings: " + ("the same" if len(findings) == 1 else "they differ"))


if __name__ == "__main__":
    main()
