"""How closely a rerun reproduces the study's results table: the same students, matched one to one.

    python studies/cifar10_subset/compare.py studies/cifar10_subset/results.csv RERUN/results.csv

A student is matched by its cell, alpha, tau, cohort member and cohort seed (the sweep's seeds are
derived from the cell and the trial count, so a rerun trains the same students on the same batches).
Printed: how many matched, and per accuracy column the largest and the mean absolute difference and
the share of students with identical values. Rows of only one table (a cell the rerun did not
include) are ignored; a rerun that matches nothing is an error.
"""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from contract import CELL_COLUMNS, RENAMED_COLUMNS  # noqa: E402

KEY = [*CELL_COLUMNS, "alpha", "tau", "member", "cohort_seed"]
COLUMNS = ("val_acc", "test_acc", "teacher_test_acc")


def compare(study: pd.DataFrame, rerun: pd.DataFrame) -> pd.DataFrame:
    # tables written before a column was renamed (the committed study's) match new ones
    done = [table[table["status"] == "completed"].rename(columns=RENAMED_COLUMNS) for table in (study, rerun)]
    matched = done[0].merge(done[1], on=KEY, suffixes=("", "_rerun"), validate="one_to_one")
    if matched.empty:
        raise SystemExit("no student of the rerun matches one of the study: compare results of the same sweep")
    rows = []
    for column in COLUMNS:
        diff = (matched[column] - matched[f"{column}_rerun"]).abs()
        rows.append({"column": column, "students": len(matched), "max_abs_diff": diff.max(),
                     "mean_abs_diff": diff.mean(), "identical": (diff == 0).mean()})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="the study's results.csv")
    parser.add_argument("rerun", help="a rerun's results.csv")
    args = parser.parse_args(argv)
    table = compare(pd.read_csv(args.study), pd.read_csv(args.rerun))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
