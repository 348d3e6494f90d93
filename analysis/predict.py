"""The recommended alpha for a kept fraction f, from a sweep's alpha-f fit.

    python -m analysis.predict runs/NAME --f 0.15 0.25            # every method's fit and the pooled one
    python -m analysis.predict runs/NAME/report.fit.json --f 0.15 --method random

The source is an experiment directory or results CSV (the fit is computed afresh, as the report does)
or the ``.fit.json`` a report wrote next to itself. The alpha is the pooled model's alpha*(f) (a model
prediction: the posterior median, in the searched alpha range) with its 95 % interval; "not pinned"
marks an interval wider than half the range (the data cannot locate the optimum there), and an f
outside the fitted range is flagged as an extrapolation.
"""

from __future__ import annotations

import argparse
import json
import sys

from analysis.alpha_f import POOLED, AlphaFFit
from analysis.report import DEFAULT_BOOTSTRAP, analyse
from analysis.results import ResultsError
from contract.storage import read_text


def load_fits(source: str, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> list[AlphaFFit]:
    if source.endswith(".json"):
        text = read_text(source)
        if text is None:
            raise ResultsError(f"no fit file at {source}")
        try:
            return [AlphaFFit.from_dict(fit) for fit in json.loads(text)["fits"]]
        except (ValueError, KeyError, TypeError) as error:
            raise ResultsError(f"{source} is not a report's fit file ({type(error).__name__}: {error})") from None
    return analyse(source, n_boot=n_boot, seed=seed).fits


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.predict", description=__doc__.splitlines()[0])
    p.add_argument("source", help="experiment directory or URI, results CSV, or a report's .fit.json")
    p.add_argument("--f", nargs="+", type=float, required=True, metavar="F", help="kept fractions in (0, 1]")
    p.add_argument("--method", default=None,
                   help=f"the fit of one method, or '{POOLED}' (default: every fit in the source)")
    p.add_argument("--draws", "--bootstrap", dest="bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="posterior draws when fitting afresh (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    bad = [f for f in args.f if not 0 < f <= 1]
    if bad:
        parser.error(f"every --f must be in (0, 1]; got {bad}")
    try:
        fits = load_fits(args.source, n_boot=args.bootstrap)
    except ResultsError as error:
        parser.error(str(error))
    if args.method:
        chosen = [fit for fit in fits if fit.group.split(" | ")[0] == args.method]
        if not chosen:
            parser.error(f"no fit for {args.method!r}; the source has: {', '.join(fit.group for fit in fits)}")
        fits = chosen
    for fit in fits:
        if not fit.fitted:
            print(f"{fit.group}: no fit ({fit.message})", file=sys.stderr)
            continue
        for f in args.f:
            guess = fit.predict(f)
            if args.json:
                print(json.dumps(guess))
                continue
            flag = f"  (extrapolated: fitted on f in [{guess['fitted_f_range'][0]:g}, {guess['fitted_f_range'][1]:g}])" \
                if guess["extrapolated"] else ""
            pinned = "" if guess["pinned"] else "  (not pinned)"
            print(f"{fit.group:>14}  f = {f:<6g} alpha = {guess['alpha']:.3f}  [{guess['lo']:.3f}, {guess['hi']:.3f}]"
                  f"{pinned}  relation: {guess['relation']}{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
