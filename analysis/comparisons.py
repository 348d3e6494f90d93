"""What the report compares across cells: the statistics behind its findings and figures, apart from
the page that shows them (``analysis.report``) and the figures (``analysis.figures``).

Every comparison takes the cell table (``analysis.optimum.cell_optima``) and ``t``, the quantile of the
cells' intervals, and gives a table with a 95 % interval per row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from contract import FULL


def kd_gain_by_f(cells: pd.DataFrame, t: float) -> pd.DataFrame:
    """Mean KD gain (test, at alpha*) over the cells at each f, with a 95 % interval (cells independent)."""
    rows = []
    scored = cells[cells["kd_gain_test_se"].notna()]
    for fraction, part in scored.groupby("fraction"):
        gain = part["kd_gain_test"].mean()
        se = float(np.sqrt((part["kd_gain_test_se"] ** 2).sum()) / len(part))
        rows.append({"fraction": fraction, "cells": len(part), "gain": gain, "lo": max(-1.0, gain - t * se),
                     "hi": min(1.0, gain + t * se), "wins": int(part["kd_win"].sum())})
    return pd.DataFrame(rows)


def noise_levels(cells: pd.DataFrame) -> list[float]:
    """The label noise rates P of the report's cells ([0.0] for a sweep without the axis)."""
    return sorted(float(p) for p in cells["label_noise"].unique()) if "label_noise" in cells else [0.0]


def kd_gain_by_noise(cells: pd.DataFrame, t: float, by=("method", "fraction", "label_noise")) -> pd.DataFrame:
    """Mean KD gain (test, at alpha*) over the cells of each ``by`` group (by default each (method, f,
    label noise P)), with a 95 % interval: gain ± t·se, the se of the mean of independent cells; a group
    of one cell keeps that cell's own interval (``kd_gain_test_lo``/``_hi``) when ``t`` is the cells'
    (``CellOptima.t_test``). No interval where a cell has none."""
    rows = []
    scored = cells[cells["kd_gain_test"].notna()]
    for key, part in scored.groupby(list(by), sort=True):
        gain = float(part["kd_gain_test"].mean())
        se = se_of_mean(part["kd_gain_test_se"]) if part["kd_gain_test_se"].notna().all() else np.nan
        finite = np.isfinite(se) and np.isfinite(t)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "cells": len(part), "gain": gain, "se": se,
                     "lo": max(-1.0, gain - t * se) if finite else np.nan, "hi": min(1.0, gain + t * se) if finite else np.nan,
                     "wins": int(part["kd_win"].sum())})
    return pd.DataFrame(rows, columns=[*by, "cells", "gain", "se", "lo", "hi", "wins"])


def se_of_mean(se: pd.Series) -> float:
    """The se of a mean of independent cells' estimates."""
    return float(np.sqrt((se**2).sum()) / len(se))


def random_vs_scored(cells: pd.DataFrame, t: float, fraction: float | None = None) -> pd.DataFrame:
    """Test accuracy with KD at alpha* of random pruning minus each score-based method's, with a 95 %
    interval, and the same difference without KD (alpha = 0, measured means), within each context
    (label noise, teacher, student: methods are compared under the same teacher on the same labels),
    at ``fraction`` or, by default, the context's smallest f where random was swept. Replicates are
    averaged (the se of a mean of independent cells)."""
    columns = ["label_noise", "teacher_arch", "student_arch", "fraction", "method", "diff", "lo", "hi", "diff_no_kd"]
    pruned = cells[(cells["method"] != FULL) & cells["test_at_opt"].notna()]
    if "label_noise" not in pruned:
        pruned = pruned.assign(label_noise=0.0)
    rows = []
    for (noise, teacher, student), context in pruned.groupby(["label_noise", "teacher_arch", "student_arch"], sort=True):
        if "random" not in set(context["method"]) or context["method"].nunique() < 2:
            continue
        at = float(context.loc[context["method"] == "random", "fraction"].min()) if fraction is None else fraction
        here = context[np.isclose(context["fraction"], at)].groupby("method").agg(
            acc=("test_at_opt", "mean"), se=("test_at_opt_se", se_of_mean),
            base=("baseline_test_acc", "mean"))
        if "random" not in here.index:
            continue
        ref = here.loc["random"]
        for method, row in here.drop(index="random").iterrows():
            diff = float(ref["acc"] - row["acc"])
            se = float(np.hypot(ref["se"], row["se"]))
            finite = np.isfinite(se) and np.isfinite(t)
            rows.append({"label_noise": float(noise), "teacher_arch": teacher, "student_arch": student, "fraction": at,
                         "method": method, "diff": diff, "lo": diff - t * se if finite else np.nan,
                         "hi": diff + t * se if finite else np.nan, "diff_no_kd": float(ref["base"] - row["base"])})
    return pd.DataFrame(rows, columns=columns)


def teacher_capacity(cells: pd.DataFrame, t: float) -> pd.DataFrame:
    """Where cells distil from several teachers: at each (method, f, label noise, student) that has them,
    test accuracy with KD at alpha* under every teacher smaller than the largest, minus under the largest
    (model predictions, mean over replicates), with a 95 % interval (independent cells: the se of a
    difference of means), and the same difference without KD (alpha = 0, measured means; a check: the
    teacher plays no part there, so it should be near 0)."""
    columns = ["method", "fraction", "label_noise", "student_arch", "teacher_arch", "larger_arch", "acc", "acc_larger",
               "diff", "lo", "hi", "diff_no_kd"]
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
        here = part.groupby("teacher_arch").agg(
            acc=("test_at_opt", "mean"), se=("test_at_opt_se", se_of_mean),
            base=("baseline_test_acc", "mean"))
        if len(here) < 2:
            continue
        order = sorted(here.index, key=lambda arch: (sizes[arch], arch))
        larger = here.loc[order[-1]]
        for arch in order[:-1]:
            row = here.loc[arch]
            diff = float(row["acc"] - larger["acc"])
            se = float(np.hypot(row["se"], larger["se"]))
            finite = np.isfinite(se) and np.isfinite(t)
            rows.append({"method": method, "fraction": float(fraction), "label_noise": float(noise), "student_arch": student,
                         "teacher_arch": arch, "larger_arch": order[-1], "acc": float(row["acc"]),
                         "acc_larger": float(larger["acc"]), "diff": diff, "lo": diff - t * se if finite else np.nan,
                         "hi": diff + t * se if finite else np.nan, "diff_no_kd": float(row["base"] - larger["base"])})
    return pd.DataFrame(rows, columns=columns)
