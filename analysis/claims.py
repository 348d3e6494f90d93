"""The paper's claims as verdicts by fixed rules, shared by the studies under ``studies/``: each study's
``analyse.py`` states its rules (written before it ran) and calls these on the cell table and the
alpha-f fits of ``analysis.report.analyse``.

Every interval is the comparison's own (``analysis.comparisons``): over the study replicates when there
are two or more (the replicate is the unit: teacher, scores and subsets vary), else conditional on the
one replicate's teacher and subsets.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pandas as pd

from analysis.comparisons import kd_gain_by_noise, noise_gain_difference, random_vs_scored, teacher_capacity
from analysis.results import read_results_csv
from contract import FULL


# ---- numbers as the findings print them ----

def pts(value: float) -> str:
    """A difference of accuracies in percentage points, signed."""
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:+.1f}"


def interval(value: float, lo: float, hi: float) -> str:
    return f"{pts(value)} [{pts(lo)}, {pts(hi)}]"


def p_text(p: float, adjusted: float) -> str:
    """"p (adjusted p)", or a dash for a fit that was not tested (the pooled fit of methods whose curves differ)."""
    return "–" if p != p else f"{p:.3f} ({adjusted:.3f})"


def study_arguments(doc: str, script: str, runs: str, parts: str = "sweeps") -> argparse.ArgumentParser:
    """The command line every study's ``analyse.py`` takes (``doc``: its docstring; ``script``: its
    ``__file__``, whose folder is the default ``--out``; ``runs``: the default ``--runs``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", default=runs, help="the study's --storage (default %(default)s)")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(script)), help="where the study's files go")
    parser.add_argument("--results", help="analyse this combined results.csv (such as the committed one) "
                                           f"instead of the {parts} under --runs")
    parser.add_argument("--no-figures", action="store_true", help="tables and verdicts only (no kaleido needed)")
    return parser


def combine(runs: str, parts: tuple[str, ...], how: str, required: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The study's sweeps' results.csv under ``runs``, one table, and the parts not there yet; a missing
    ``required`` part (default: every part) is an error, ``how`` says how to make it."""
    frames, missing = [], []
    for part in parts:
        path = os.path.join(runs, part, "results.csv")
        if os.path.exists(path):
            frames.append(read_results_csv(path))
        elif part in (parts if required is None else required):
            raise SystemExit(f"{path} is missing: {how} (or pass --runs)")
        else:
            missing.append(part)
    return pd.concat(frames, ignore_index=True), missing


def save_results(trials: pd.DataFrame, args: argparse.Namespace) -> str:
    """The combined table as ``OUT/results.csv`` (unless it is the table read), its path."""
    os.makedirs(args.out, exist_ok=True)
    results = os.path.join(args.out, "results.csv")
    if not (args.results and os.path.abspath(args.results) == os.path.abspath(results)):
        trials.to_csv(results, index=False)
    return results


def pruned_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells of pruned data with a KD gain (the full-data cell has no pruning method)."""
    return cells[(cells["method"] != FULL) & cells["kd_gain_test"].notna()]


# ---- claim 1: KD improves accuracy ----

def claim_kd_helps(cells: pd.DataFrame, t: float) -> dict:
    """*reproduced* when the mean KD gain's interval excludes 0 at every (f, label noise) and every cell's own
    estimate is positive; *partly* when only some intervals do."""
    pruned = pruned_cells(cells)
    by = kd_gain_by_noise(pruned, t, by=("label_noise", "fraction"))
    rows = [{"label_noise": r.label_noise, "fraction": r.fraction, "gain": r.gain, "lo": r.lo, "hi": r.hi,
             "cells": int(r.cells), "wins": int(r.wins), "replicates": int(r.replicates)} for r in by.itertuples()]
    every_interval = bool(len(by)) and bool((by["lo"] > 0).all())
    every_cell = bool(len(pruned)) and bool((pruned["kd_gain_test"] > 0).all())
    verdict = "reproduced" if every_interval and every_cell else "partly reproduced" if (by["lo"] > 0).any() else "not reproduced"
    per_cell = [{"label_noise": r.label_noise, "fraction": r.fraction, "method": r.method,
                 "replicate": int(getattr(r, "replicate", 0)),
                 "no_kd": r.baseline_test_acc, "kd": r.test_at_opt, "gain": r.kd_gain_test,
                 "lo": r.kd_gain_test_lo, "hi": r.kd_gain_test_hi}
                for r in pruned.sort_values(["label_noise", "fraction", "method", "replicate"]).itertuples()]
    return {"verdict": verdict, "by_f": rows, "per_cell": per_cell, "cells": int(len(pruned)),
            "cells_positive": int((pruned["kd_gain_test"] > 0).sum()), "cells_win": int(pruned["kd_win"].sum()),
            "min_gain": float(pruned["kd_gain_test"].min()), "max_gain": float(pruned["kd_gain_test"].max())}


def noise_mechanism(cells: pd.DataFrame, t: float) -> dict:
    """The paper's explanation, tested with the label-noise axis: per method, the mean KD gain over the
    fractions at the highest P minus at P = 0, with its interval (per replicate, its cells at both rates,
    then over replicates: ``analysis.comparisons.noise_gain_difference``)."""
    pruned = pruned_cells(cells)
    by = kd_gain_by_noise(pruned, t, by=("method", "label_noise"))
    rows = []
    for method, part in by.groupby("method"):
        low, high = part.iloc[0], part.iloc[-1]
        difference = noise_gain_difference(pruned[pruned["method"] == method], t)
        if difference is None:
            continue
        rows.append({"method": method, "low_p": low["label_noise"], "high_p": high["label_noise"],
                     "gain_low": low["gain"], "gain_high": high["gain"], "diff": difference["mean"],
                     "lo": difference["lo"], "hi": difference["hi"], "replicates": int(difference["replicates"])})
    verdict = ", ".join(f"{r['method']}: " + ("more gain under noise" if r["lo"] > 0 else "less gain under noise" if r["hi"] < 0
                                            else "no difference shown") for r in rows)
    return {"verdict": verdict, "rows": rows}


# ---- claim 2: random pruning matches or beats score-based pruning with KD, most at small f ----

def claim_random_vs_scored(cells: pd.DataFrame, t: float) -> dict:
    """At the smallest f, random minus each score-based method with KD: *reproduced (beats)* when every
    interval lies above 0, *(matches)* when none lies below, each only when every difference is larger at
    the smallest f than at the largest; *not reproduced* when an interval lies below 0; else *partly*."""
    fractions = sorted(cells.loc[cells["method"] == "random", "fraction"].unique())
    table = pd.concat([random_vs_scored(cells, t, fraction=f) for f in fractions], ignore_index=True)
    table = table.sort_values(["label_noise", "method", "fraction"])
    smallest, largest = table[table["fraction"] == fractions[0]], table[table["fraction"] == fractions[-1]]
    below = bool((smallest["hi"] < 0).any())
    beats = bool((smallest["lo"] > 0).all())
    grows = bool((smallest["diff"].to_numpy() > largest["diff"].to_numpy()).all())
    verdict = ("not reproduced" if below else
               ("reproduced (beats)" if beats else "reproduced (matches)") if grows else "partly reproduced")
    return {"verdict": verdict, "rows": table.to_dict("records")}


# ---- claim 3: the optimal alpha grows as f shrinks ----

def claim_inverse(fits, decided_by: str = "every method") -> dict:
    """The alpha-f fits' directions (after the report's multiple-testing procedure). ``decided_by``
    "every method": *reproduced* when every method's relation is "inverse", *partly* when one is (or
    the pooled fit); "pooled": *reproduced* when the pooled fit over the methods says "inverse", and
    where the methods' curves differ too much to pool ("not pooled"), by every method as above. Either
    way "direct" is *contrary* and no direction is *not shown at this budget*."""
    rows = [{"group": fit.group, "method": fit.method, "label_noise": fit.context["label_noise"],
             "alpha": dict(zip((f"{f:g}" for f in fit.f), map(float, fit.alpha))),
             "slope": fit.slope, "slope_lo": fit.slope_lo, "slope_hi": fit.slope_hi, "p": fit.p_value,
             "p_adjusted": fit.p_adjusted, "relation": fit.relation} for fit in fits]
    if decided_by == "pooled":
        for fit, row in zip(fits, rows):
            row["replicates"] = int(fit.replicates)
            row["within"] = fit.within.get("relation") if fit.within else None
    relations = [r["relation"] for r in rows if r["method"] != "pooled"]
    pooled = [r["relation"] for r in rows if r["method"] == "pooled"]
    if decided_by == "pooled" and pooled and all(r != "not pooled" for r in pooled):
        verdict = ("reproduced" if pooled and all(r == "inverse" for r in pooled)
                   else "contrary" if "direct" in pooled or "direct" in relations
                   else "partly reproduced" if "inverse" in relations
                   else "not shown at this budget")
    else:
        verdict = ("reproduced" if relations and all(r == "inverse" for r in relations)
                   else "contrary" if "direct" in relations
                   else "partly reproduced" if "inverse" in relations or "inverse" in pooled
                   else "not shown at this budget")
    return {"verdict": verdict, "fits": rows}


# ---- claim 4: at small f a smaller teacher can beat a larger one ----

def claim_capacity(cells: pd.DataFrame, t: float, small_f: float = 0.2, undecided: str = "inconclusive") -> dict:
    """*reproduced* when, at some f <= ``small_f``, a smaller teacher minus the largest (with KD) has an
    interval above 0; *contrary* when every interval at those f lies below 0; otherwise ``undecided``."""
    table = teacher_capacity(cells, t)
    small = table[table["fraction"] <= small_f]
    verdict = ("reproduced" if (small["lo"] > 0).any() else
               "contrary" if len(small) and (small["hi"] < 0).all() else undecided)
    rows = table.to_dict("records")
    for row in rows:  # over replicates: what this design could have seen (a verdict "not decided" needs it)
        if row["replicates"] >= 2:
            row.update(detectable(row["lo"], row["hi"], int(row["replicates"])))
    return {"verdict": verdict, "rows": rows}


def detectable(lo: float, hi: float, replicates: int, power: float = 0.8, effect: float = 0.01) -> dict:
    """What a difference measured over ``replicates`` (its 95 % t interval [lo, hi]) could have found:
    the smallest true difference whose interval would lie above 0 with probability ``power``
    (``detectable``), and the replicates that would find one of ``effect`` (1 point) with it
    (``replicates_for_effect``), at the replicate-level sd the interval measured (noncentral t)."""
    import math

    import scipy.stats as sps

    df = replicates - 1
    se = (hi - lo) / (2 * float(sps.t.ppf(0.975, df)))
    sd = se * math.sqrt(replicates)

    def power_at(delta: float, n: int) -> float:
        return float(sps.nct.sf(sps.t.ppf(0.975, n - 1), n - 1, delta / (sd / math.sqrt(n))))

    low, high = 0.0, 1.0
    for _ in range(60):  # bisection on the effect: the power grows with it
        mid = (low + high) / 2
        low, high = (mid, high) if power_at(mid, replicates) < power else (low, mid)
    needed = next((n for n in range(2, 1001) if power_at(effect, n) >= power), None)
    return {"detectable": high, "replicates_for_effect": needed, "replicate_sd": sd}


# ---- what every study writes ----

def write_tables(results: str, out: str):
    """The project's analysis of a study's results.csv (``analysis.report.analyse``), written to ``out``
    as cells.csv and fit.json (without the lines that change when nothing else does); returns it."""
    from analysis.report import analyse, fit_document

    analysis = analyse(results, n_boot=1000, seed=0)
    analysis.cells.drop(columns=["curve"]).to_csv(os.path.join(out, "cells.csv"), index=False)
    document = fit_document(analysis)
    document.pop("location", None)
    document.pop("generated_at", None)  # the file changes only when the study's numbers do
    with open(os.path.join(out, "fit.json"), "w") as handle:
        json.dump(document, handle, indent=1)
    return analysis


def write_figures(cells: pd.DataFrame, fits, t: float, out: str, main_teacher: str,
                  size: tuple[int, int] = (1100, 620), clean: tuple | None = None) -> list[str]:
    """The report's own plotly figures for the study's main teacher (and all teachers for capacity),
    written as PNG with kaleido into ``out/figures``. ``clean``: (cells, fits) of the analysis the
    alpha*-versus-f and KD-versus-no-KD figures show (a study that decides claim 3 on its clean-label
    parts alone), else those of every part."""
    from analysis import figures

    folder = os.path.join(out, "figures")
    os.makedirs(folder, exist_ok=True)
    main = cells[cells["teacher_arch"] == main_teacher]
    shown_cells, shown_fits = clean if clean is not None else (cells, fits)
    shown = shown_cells[shown_cells["teacher_arch"] == main_teacher]
    wanted = {
        "alpha_vs_f.png": figures.alpha_vs_f(shown, [fit for fit in shown_fits if fit.context["teacher_arch"] == main_teacher]),
        "kd_vs_no_kd.png": figures.accuracy_vs_f(shown),
    }
    # the comparisons only where the study has their axis (a study that runs in parts may not yet)
    if main["label_noise"].nunique() > 1:
        wanted["kd_gain_vs_label_noise.png"] = figures.kd_gain_vs_noise(kd_gain_by_noise(main, t))
    if cells["teacher_arch"].nunique() > 1:
        wanted["teacher_capacity.png"] = figures.accuracy_by_teacher(cells[cells["label_noise"] == 0])
    paths = []
    for name, figure in wanted.items():
        path = os.path.join(folder, name)
        figure.update_layout(title_font_size=15)
        figure.write_image(path, width=size[0], height=max(size[1], figure.layout.height or 0), scale=1)
        paths.append(path)
    return paths
