"""What the report compares across cells: the statistics behind its findings and figures, apart from
the page that shows them (``analysis.report``) and the figures (``analysis.figures``).

Every comparison takes the cell table (``analysis.optimum.cell_optima``) and ``t``, the quantile of the
cells' intervals, and gives a table with a 95 % interval per row, at the level the data reach
(``replicate_mean``): with two or more study replicates (each its own teacher, score tables and
subsets) the replicates are the units, so the interval counts the variation between teachers and
subsets as well as between students, and says over how many replicates (``replicates``); with one,
the interval is conditional on that replicate's teacher and subsets.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.pooled import t_quantile
from contract import FULL


def replicate_mean(rows: pd.DataFrame, value: str, se: str, t: float) -> dict:
    """The mean of ``value`` over ``rows`` (cells, or differences between cells of one replicate) with its
    95 % interval. Two or more study replicates: each replicate's mean over its rows is one draw of the
    population (another teacher, other scores and subsets), and the interval is the mean over replicates
    ± t(R - 1) · sd / sqrt(R): it counts the variation between replicates together with that between
    students. One replicate: the rows' own standard errors with ``t`` (conditional on that replicate)."""
    per_replicate = rows.groupby("replicate")[value].mean() if "replicate" in rows else pd.Series([rows[value].mean()])
    count = len(per_replicate)
    if count >= 2:
        mean = float(per_replicate.mean())
        error, quantile = float(per_replicate.std(ddof=1) / math.sqrt(count)), t_quantile(count - 1)
    else:
        mean = float(rows[value].mean())
        error = se_of_mean(rows[se]) if rows[se].notna().all() else np.nan
        quantile = t
    finite = np.isfinite(error) and np.isfinite(quantile)
    return {"mean": mean, "se": error, "lo": mean - quantile * error if finite else np.nan,
            "hi": mean + quantile * error if finite else np.nan, "replicates": count}


def _bounded(estimate: dict) -> dict:
    """An accuracy difference's interval within [-1, 1]."""
    return {**estimate, "lo": max(-1.0, estimate["lo"]), "hi": min(1.0, estimate["hi"])}


def kd_gain_by_f(cells: pd.DataFrame, t: float) -> pd.DataFrame:
    """Mean KD gain (test, at alpha*) over the cells at each f, with a 95 % interval (``replicate_mean``)."""
    rows = []
    scored = cells[cells["kd_gain_test_se"].notna()]
    for fraction, part in scored.groupby("fraction"):
        estimate = _bounded(replicate_mean(part, "kd_gain_test", "kd_gain_test_se", t))
        rows.append({"fraction": fraction, "cells": len(part), "gain": estimate["mean"], "lo": estimate["lo"],
                     "hi": estimate["hi"], "replicates": estimate["replicates"], "wins": int(part["kd_win"].sum())})
    return pd.DataFrame(rows, columns=["fraction", "cells", "gain", "lo", "hi", "replicates", "wins"])


def noise_levels(cells: pd.DataFrame) -> list[float]:
    """The label noise rates P of the report's cells ([0.0] for a sweep without the axis)."""
    return sorted(float(p) for p in cells["label_noise"].unique()) if "label_noise" in cells else [0.0]


def kd_gain_by_noise(cells: pd.DataFrame, t: float, by=("method", "fraction", "label_noise")) -> pd.DataFrame:
    """Mean KD gain (test, at alpha*) over the cells of each ``by`` group (by default each (method, f,
    label noise P)), with a 95 % interval (``replicate_mean``); a group of one cell keeps that cell's own
    interval when ``t`` is the cells' (``CellOptima.t_test``). No interval where a cell has none."""
    rows = []
    scored = cells[cells["kd_gain_test"].notna()]
    for key, part in scored.groupby(list(by), sort=True):
        estimate = _bounded(replicate_mean(part, "kd_gain_test", "kd_gain_test_se", t))
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "cells": len(part),
                     "gain": estimate["mean"], "se": estimate["se"], "lo": estimate["lo"], "hi": estimate["hi"],
                     "replicates": estimate["replicates"], "wins": int(part["kd_win"].sum())})
    return pd.DataFrame(rows, columns=[*by, "cells", "gain", "se", "lo", "hi", "replicates", "wins"])


def noise_gain_difference(cells: pd.DataFrame, t: float) -> dict | None:
    """The mean KD gain at the highest label noise rate minus at the lowest, with a 95 % interval: per
    replicate (its cells at each rate, paired by the replicate's teacher and subsets), then
    ``replicate_mean``. None with one rate or no gain at one of them."""
    scored = cells[cells["kd_gain_test"].notna()]
    rates = noise_levels(scored)
    if len(rates) < 2:
        return None
    low, high = rates[0], rates[-1]
    rows = []
    for replicate, part in scored.groupby("replicate"):
        at = {p: part[np.isclose(part["label_noise"], p)] for p in (low, high)}
        if any(frame.empty for frame in at.values()):
            continue
        rows.append({"replicate": replicate,
                     "diff": at[high]["kd_gain_test"].mean() - at[low]["kd_gain_test"].mean(),
                     "se": math.hypot(se_of_mean(at[high]["kd_gain_test_se"]), se_of_mean(at[low]["kd_gain_test_se"]))})
    if not rows:
        return None
    return {"low": low, "high": high, **_bounded(replicate_mean(pd.DataFrame(rows), "diff", "se", t))}


def se_of_mean(se: pd.Series) -> float:
    """The se of a mean of independent cells' estimates."""
    return float(np.sqrt((se**2).sum()) / len(se))


def _differences(part: pd.DataFrame, column: str, reference, others) -> pd.DataFrame:
    """Per replicate and per other level of ``column``: its test accuracy with KD at alpha* minus the
    reference level's (model predictions, each the mean over the replicate's cells), its se, and the
    same difference of the measured means without KD."""
    rows = []
    for replicate, here in part.groupby("replicate"):
        means = here.groupby(column).agg(acc=("test_at_opt", "mean"), se=("test_at_opt_se", se_of_mean),
                                         base=("baseline_test_acc", "mean"), base_se=("baseline_test_se", se_of_mean))
        if reference not in means.index:
            continue
        ref = means.loc[reference]
        for other in others:
            if other in means.index:
                row = means.loc[other]
                rows.append({"replicate": replicate, column: other, "acc": float(row["acc"]), "acc_ref": float(ref["acc"]),
                             "diff": float(row["acc"] - ref["acc"]), "se": float(np.hypot(row["se"], ref["se"])),
                             "diff_no_kd": float(row["base"] - ref["base"]),
                             "se_no_kd": float(np.hypot(row["base_se"], ref["base_se"]))})
    return pd.DataFrame(rows, columns=["replicate", column, "acc", "acc_ref", "diff", "se", "diff_no_kd", "se_no_kd"])


def random_vs_scored(cells: pd.DataFrame, t: float, fraction: float | None = None) -> pd.DataFrame:
    """Test accuracy with KD at alpha* of random pruning minus each score-based method's, with a 95 %
    interval, and the same difference without KD (alpha = 0, measured means, with its interval), within each context
    (label noise, teacher, student: methods are compared under the same teacher on the same labels),
    at ``fraction`` or, by default, the context's smallest f where random was swept. The difference is
    taken within each replicate (same teacher and split), then over replicates (``replicate_mean``)."""
    columns = ["label_noise", "teacher_arch", "student_arch", "fraction", "method", "diff", "lo", "hi", "diff_no_kd",
               "no_kd_lo", "no_kd_hi", "replicates"]
    pruned = cells[(cells["method"] != FULL) & cells["test_at_opt"].notna()]
    if "label_noise" not in pruned:
        pruned = pruned.assign(label_noise=0.0)
    rows = []
    for (noise, teacher, student), context in pruned.groupby(["label_noise", "teacher_arch", "student_arch"], sort=True):
        if "random" not in set(context["method"]) or context["method"].nunique() < 2:
            continue
        at = float(context.loc[context["method"] == "random", "fraction"].min()) if fraction is None else fraction
        here = context[np.isclose(context["fraction"], at)]
        others = sorted(set(here["method"]) - {"random"})
        # the scored method minus random, per replicate; reported as random minus the method
        differences = _differences(here, "method", "random", others)
        for method, part in differences.groupby("method", sort=True):
            estimate = replicate_mean(part.assign(diff=-part["diff"]), "diff", "se", t)
            # without KD: the measured means of the alpha = 0 students, with their own interval
            no_kd = replicate_mean(part.assign(diff=-part["diff_no_kd"]), "diff", "se_no_kd", t)
            rows.append({"label_noise": float(noise), "teacher_arch": teacher, "student_arch": student, "fraction": at,
                         "method": method, "diff": estimate["mean"], "lo": estimate["lo"], "hi": estimate["hi"],
                         "diff_no_kd": no_kd["mean"], "no_kd_lo": no_kd["lo"], "no_kd_hi": no_kd["hi"],
                         "replicates": estimate["replicates"]})
    return pd.DataFrame(rows, columns=columns)


def teacher_capacity(cells: pd.DataFrame, t: float) -> pd.DataFrame:
    """Where cells distil from several teachers: at each (method, f, label noise, student) that has them,
    test accuracy with KD at alpha* under every teacher smaller than the largest, minus under the largest
    (model predictions; per replicate, then ``replicate_mean``), with a 95 % interval, and the same
    difference without KD (alpha = 0, measured means; a check: the teacher plays no part there, so it
    should be near 0)."""
    columns = ["method", "fraction", "label_noise", "student_arch", "teacher_arch", "larger_arch", "acc", "acc_larger",
               "diff", "lo", "hi", "diff_no_kd", "replicates"]
    pruned = cells[cells["test_at_opt"].notna()]
    if "label_noise" not in pruned:
        pruned = pruned.assign(label_noise=0.0)
    if pruned["teacher_arch"].nunique() < 2:
        return pd.DataFrame(columns=columns)
    # The sizes the sweep recorded when it trained the teachers (results.csv's teacher_params); a table
    # written before they were recorded cannot order its teachers.
    sizes = pruned.groupby("teacher_arch")["teacher_params"].max().to_dict() if "teacher_params" in pruned else {}
    pruned = pruned[pruned["teacher_arch"].map(lambda arch: np.isfinite(sizes.get(arch, np.nan)))]
    rows = []
    for (method, fraction, noise, student), part in pruned.groupby(["method", "fraction", "label_noise", "student_arch"], sort=True):
        order = sorted(part["teacher_arch"].unique(), key=lambda arch: (sizes[arch], arch))
        if len(order) < 2:
            continue
        differences = _differences(part, "teacher_arch", order[-1], order[:-1])
        for arch in order[:-1]:
            mine = differences[differences["teacher_arch"] == arch]
            if mine.empty:
                continue
            estimate = replicate_mean(mine, "diff", "se", t)
            rows.append({"method": method, "fraction": float(fraction), "label_noise": float(noise), "student_arch": student,
                         "teacher_arch": arch, "larger_arch": order[-1], "acc": float(mine["acc"].mean()),
                         "acc_larger": float(mine["acc_ref"].mean()), "diff": estimate["mean"], "lo": estimate["lo"],
                         "hi": estimate["hi"], "diff_no_kd": float(mine["diff_no_kd"].mean()),
                         "replicates": estimate["replicates"]})
    return pd.DataFrame(rows, columns=columns)
