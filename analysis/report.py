"""The sweep report: one self-contained HTML file (plotly.js embedded, works offline).

    python -m analysis.report runs/digits-smoke-20261124-213057
    python -m analysis.report s3://bucket/runs/svhn-paper --out svhn.html --bootstrap 2000

Next to ``report.html`` it writes ``report.trials.csv`` and ``report.trials.parquet`` (the tidy
trials), ``report.cells.csv`` (the optimum of every cell) and ``report.fit.json`` (the alpha-f fits,
which ``python -m analysis.predict`` reads). ``--bootstrap`` is the number of posterior draws kept per fit. The default ``--out`` is ``EXPERIMENT/report.html``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import io
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.alpha_f import AlphaFFit, fit_alpha_f
from analysis.optimum import CellOptima, cell_optima
from analysis.pooled import LEVEL, RATIO_BOUND, SIGNIFICANCE, t_quantile
from analysis.comparisons import (kd_gain_by_f, kd_gain_by_noise, noise_gain_difference, noise_levels, random_vs_scored,
                                  teacher_capacity)
from analysis.results import Experiment, ResultsError, load_experiment
from analysis import workers
from analysis.sequential import p_text
from contract import FULL
from contract.storage import write_bytes

DEFAULT_BOOTSTRAP = 1000  # posterior draws kept per alpha-f fit (curves, predictions)


@dataclass
class Analysis:
    experiment: Experiment
    optima: CellOptima
    fits: list[AlphaFFit]

    @property
    def cells(self) -> pd.DataFrame:
        return self.optima.table


def analyse(experiment: Experiment | str, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Analysis:
    """alpha*(f) fits, the direction tests and every cell's row, of an experiment (or its location)."""
    if not isinstance(experiment, Experiment):
        experiment = load_experiment(experiment)
    fits = fit_alpha_f(experiment.trials, experiment.alpha_range, seed=seed, n_draws=n_boot)
    optima = cell_optima(experiment.trials, experiment.alpha_range, fits=fits)
    optima.n_boot, optima.seed = n_boot, seed
    return Analysis(experiment, optima, fits)


def fit_document(analysis: Analysis) -> dict:
    """The JSON written next to the report: settings, the noise level and every alpha-f fit."""
    import contract

    return {
        "experiment": analysis.experiment.name,
        "location": analysis.experiment.location,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "analysis_version": contract.__version__,
        "posterior_draws": analysis.optima.n_boot,
        "seed": analysis.optima.seed,
        "level": LEVEL,
        "family_wise_error": {"procedure": "graphical (Simes tests): the pooled direction first, then Hommel's procedure among the methods",
                              "level": SIGNIFICANCE},
        "noise_sd": {"val": _json_num(analysis.optima.sigma_val), "test": _json_num(analysis.optima.sigma_test),
                     "df": _json_num(analysis.optima.noise_df)},
        "alpha_range": list(analysis.experiment.alpha_range),
        "fits": [fit.to_dict() for fit in analysis.fits],
    }


def _json_num(value):
    return float(value) if value is not None and np.isfinite(value) else None


# ---- HTML -------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 0 24px 48px; color: #222; }
header { border-bottom: 1px solid #ddd; margin-bottom: 12px; }
.in-progress { background: #fff4d6; border: 1px solid #e0b84c; padding: 8px 12px; border-radius: 4px; }
h1 { font-size: 1.6em; margin: 20px 0 4px; } h2 { margin-top: 36px; font-size: 1.25em; }
nav a { margin-right: 14px; } .muted { color: #666; } .figure { margin: 8px 0 4px; }
p.how { margin: 0 0 20px; color: #444; font-size: 14px; } p.how b { color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f6f6f6; position: sticky; top: 0; } td.l, th.l { text-align: left; }
tr.chosen td { font-weight: 600; background: #f3f8ff; } .warn { color: #a35200; }
.findings li { margin: 6px 0; } pre { background: #f6f6f6; padding: 10px; overflow-x: auto; font-size: 12px; }
code { font-size: 12px; } .settings { background: #f7f7f7; padding: 6px 10px; border-radius: 4px; }
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _pct(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:.1f}%"


def _thousands(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{int(value):,}"


def _pts(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:+.1f}"


def _num(value, digits: int = 3) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.{digits}g}"


def _fixed(value, decimals: int = 2, sign: bool = False) -> str:
    """``value`` to ``decimals`` decimals (never "6.8e-17" or "-0.00": a value that rounds to 0 is 0)."""
    if value is None or pd.isna(value):
        return "–"
    value = 0.0 if abs(value) < 0.5 * 10**-decimals else float(value)
    return f"{value:+.{decimals}f}" if sign and value else f"{value:.{decimals}f}"


def _p(value) -> str:
    """A p-value as its precision supports: "< 0.001" below that, never 0; two significant digits above."""
    return "–" if value is None or pd.isna(value) else "< 0.001" if value < 0.001 else f"{value:.2g}"


def _ci_pts(value, lo, hi) -> str:
    return f"{_pts(value)} [{_pts(lo)}, {_pts(hi)}]"


def _table(header: list[str] | None, rows: list[list[str]], left: int = 1, row_class: list[str] | None = None) -> str:
    """An HTML table (no header row for ``None``); cells are already escaped; the first ``left``
    columns align left."""
    head = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(header or []))
    body = []
    for r, row in enumerate(rows):
        css = f' class="{row_class[r]}"' if row_class and row_class[r] else ""
        body.append(f"<tr{css}>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>'
                                          for i, c in enumerate(row)) + "</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if header else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def _figure_html(fig, div_id: str, how: str) -> str:
    import plotly.io as pio

    return '<div class="figure">' + pio.to_html(
        fig, full_html=False, include_plotlyjs=False, div_id=div_id,
        config={"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}},
    ) + f'</div><p class="how"><b>How to read it:</b> {how}</p>'


def _settings(analysis: Analysis) -> str:
    """Selection strategy, scoring runs, scoring epoch and profile, from sweep.json (what it records)."""
    sweep, trials = analysis.experiment.sweep, analysis.experiment.trials
    resolved = sweep.get("resolved", {}) if isinstance(sweep.get("resolved"), dict) else {}
    selection = sweep.get("selection")
    if selection is None and "selection" in trials:
        selection = ", ".join(sorted(trials["selection"].dropna().astype(str).unique())) or None
    balanced = sweep.get("class_balanced")
    score_seeds = resolved.get("score_seeds", sweep.get("score_seeds"))
    score_epochs = resolved.get("score_epochs") or {}
    score_epoch = ", ".join(f"{method} {'-' if epoch is None else epoch}" for method, epoch in sorted(score_epochs.items())) or None
    profile = sweep.get("profile")
    if profile is None and "profile" in trials:
        profile = ", ".join(sorted(trials["profile"].dropna().astype(str).unique())) or None
    epochs = (resolved.get("recipe") or {}).get("epochs") if isinstance(resolved.get("recipe"), dict) else None
    trials_per_cell = resolved.get("trials_per_cell", sweep.get("trials_per_cell"))
    parts = [
        f"selection: <b>{_e(selection) if selection else 'not recorded'}</b>"
        + (" (class-balanced)" if balanced else ""),
        f"scoring runs per method: <b>{_e(score_seeds) if score_seeds is not None else 'not recorded'}</b>",
        f"scoring epoch: <b>{_e(score_epoch) if score_epoch is not None else 'not recorded in sweep.json'}</b>",
        f"profile: <b>{_e(profile) if profile else 'not recorded'}</b>"
        + (f", {epochs} epochs" if epochs else ""),
        f"trials per cell: <b>{_e(trials_per_cell) if trials_per_cell else _e(_trials_per_cell(trials))}</b>",
    ]
    return '<p class="settings">' + " · ".join(parts) + "</p>"


def _trials_per_cell(trials: pd.DataFrame) -> str:
    counts = trials.groupby("cell").size()
    return f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()} to {counts.max()}"


def _capacity_finding(capacity: pd.DataFrame) -> str:
    noisy = capacity["label_noise"].nunique() > 1
    parts = [f"{_e(r.method)} f = {r.fraction:g}{f', P = {r.label_noise:g}' if noisy else ''}: {_e(r.teacher_arch)} minus "
             f"{_e(r.larger_arch)}{_over(r.replicates)} <b>{_ci_pts(r.diff, r.lo, r.hi)}</b> (without KD {_pts(r.diff_no_kd)})"
             for r in capacity.itertuples()]
    return ("<b>Teacher capacity</b> (test accuracy with KD at α*, a smaller teacher minus the largest, points, "
            f"model predictions with {LEVEL:.0%} intervals; positive: the smaller teacher is better; without KD: "
            "measured means, where the teacher plays no part): " + "; ".join(parts) + ".")


def _over(replicates: int) -> str:
    """How far an interval generalises, said where it goes beyond one replicate."""
    return f" (over {replicates} replicates)" if replicates > 1 else ""


def _looks(analysis: Analysis) -> str:
    """A sequential sweep's looks (``analysis.sequential``): what each question's decision rests on."""
    looks = getattr(analysis.experiment, "looks", None)  # an Experiment built by other code may have none
    if not looks:
        return ""
    design, history, decided = looks["design"], looks.get("history", []), looks.get("decided", {})
    asked = ", ".join(looks.get("kinds", []))
    state = (f"stopped after look {len(history)}: {looks['stopped']}" if looks.get("stopped")
             else f"{len(history)} look{'s' * (len(history) != 1)} so far")
    schedule = ", ".join(map(str, design.get("schedule", [design["first"], design["most"]])))
    intro = (f"<p>A sequential sweep (<code>--until-answered</code>), run until its questions of the kinds {_e(asked)} "
             f"were answered: looks at {schedule} students per cell, each round bringing the cells of the questions "
             f"still open to the next size (at most {design['most']} per cell); {_e(state)}. Look k tests every open "
             f"question against the group-sequential boundary of the {100 * design['level']:g} % error rate spent as "
             f"{_e(design['spending'])} (t the share of the looks made; a direction against the boundary of its share "
             "of the 5 %, passed on as the directions are decided): a decision below keeps its error rate over all "
             "the looks, each question's own and the directions' family-wise. The intervals elsewhere in this report "
             "are each at 95 % for the data as they are, as if the design had been fixed; where they and a decision "
             "differ, the decision is the sequential answer.</p>")
    rows = []
    for entry in history:
        questions = [a for a in entry.get("decided", [])]
        rows.append([str(entry["look"]), _thousands(entry["students"]), f"{entry['level']:.2g}",
                     _e("; ".join(f"{q}: {decided[q]['answer']}" for q in questions if q in decided) or "–"),
                     str(len(entry.get("open", []))), _thousands(entry.get("added", 0)) if entry.get("added") else "–"])
    table = _table(["look", "students", "nominal level", "decided at this look", "open", "next round"], rows, left=4)
    last = history[-1] if history else {"open": [], "moot": []}
    answered = [[_e(q), _e(d["answer"]), str(d["look"]), _thousands(d["students"]), _e(p_text(d["p"])),
                 p_text(d.get("level", float("nan")))] for q, d in decided.items()]
    moot = set(last.get("moot", []))
    for question in looks.get("questions") or last.get("open", []):
        if question in decided:
            continue
        label = ("not asked of these data (the methods' curves differ: read each method's)" if question in moot
                 else ("not decided when the sweep stopped" if looks.get("stopped") else "open")
                 if question in last.get("open", []) else "not decided (not a question the sweep ran for)")
        answered.append([_e(question), _e(label), "–", "–", "–", "–"])
    return (intro + table + "<p>Each question's answer, the look that decided it, the students the sweep had "
            "then, and its p-value against the nominal level it cleared:</p>"
            + _table(["question", "answer", "look", "students", "p", "level"], answered, left=2))


def _scope(analysis: Analysis) -> str:
    """What the findings generalise over: the study replicates they rest on."""
    replicates = sorted(analysis.experiment.trials["replicate"].unique())
    if len(replicates) == 1:
        return ("<b>What these findings rest on</b>: one study replicate, so one teacher, one score table and one "
                "kept subset per cell. Every interval counts the variation between students trained in these cells, "
                "not between teachers or subsets: another replicate can move the numbers by more than the intervals "
                "say. Sweep with <code>--replicates 0 1 2</code> to see that variation.")
    return (f"<b>What these findings rest on</b>: {len(replicates)} study replicates (each its own teacher, score "
            "tables and subsets). The KD gains and the comparisons between methods, teachers and noise rates are "
            "taken per replicate and their intervals are over the replicates (a t interval with "
            f"{len(replicates) - 1} degrees of freedom), so they count the variation between teachers and subsets. "
            "So are α*(f) and the direction of the α-f relation: each replicate fits its own curve on its own cells, "
            "α*(f) is the mean of the replicates' curves and the slope test is a t test over their slopes. Beside each "
            "direction the report gives the same test on the replicates' cells pooled: that one is conditional on "
            "these teachers and subsets, and far more powerful with few replicates. The cells table's α* is the "
            "cell's own replicate's curve.")


def _findings(analysis: Analysis) -> str:
    cells, optima = analysis.cells, analysis.optima
    t = t_quantile(optima.noise_df if np.isfinite(optima.noise_df) else 1.0)
    items = [_scope(analysis)]
    by_f = kd_gain_by_f(cells, t)
    if len(by_f):
        parts = [f"f = {r.fraction:g}{_over(r.replicates)}: <b>{_ci_pts(r.gain, r.lo, r.hi)}</b> ({r.wins} of {r.cells} cells "
                 "a win)" for r in by_f.itertuples()]
        wins = int(cells["kd_win"].sum())
        scored = int(cells["kd_gain_test_se"].notna().sum())
        items.append(
            "<b>KD gain</b> (test accuracy at α* minus at α = 0, points, mean over the cells at each f, "
            f"{LEVEL:.0%} interval): " + "; ".join(parts) + f". A cell counts as a win only when its own interval "
            f"excludes 0: <b>{wins} of {scored}</b> cells, a count to explore, not a finding (per-cell intervals, not "
            f"adjusted for multiplicity: among {scored} cells some wins come by chance even where KD does nothing).")
    if len(noise_levels(cells)) > 1:
        items.append(_noise_finding(cells, optima.t_test))
    capacity = teacher_capacity(cells, t)
    if len(capacity):
        items.append(_capacity_finding(capacity))
    elif cells["teacher_arch"].nunique() > 1 and cells.groupby(["method", "fraction"])["teacher_arch"].nunique().max() > 1:
        items.append("<b>Teacher capacity</b>: not compared, because the results do not record the teachers' sizes "
                     "(the column teacher_params, written by sweeps since it was added); the figure below still "
                     "shows accuracy under each teacher.")
    versus = random_vs_scored(cells, t)
    if len(versus):
        several = versus[["label_noise", "teacher_arch", "student_arch"]].drop_duplicates().shape[0] > 1
        parts = [(_e(f"{r.teacher_arch}→{r.student_arch}, P = {r.label_noise:g}, ") if several else "")
                 + f"f = {r.fraction:g}, vs {_e(r.method)}{_over(r.replicates)}: <b>{_ci_pts(r.diff, r.lo, r.hi)}</b> "
                 f"(without KD {_ci_pts(r.diff_no_kd, r.no_kd_lo, r.no_kd_hi)})"
                 for r in versus.itertuples()]
        items.append("<b>Random versus score-based pruning</b> at the smallest f (test accuracy with KD at α*, "
                     "random minus the method under the same teacher and labels, points, model predictions with "
                     f"{LEVEL:.0%} intervals; without KD: the difference of the measured means of the α = 0 students, "
                     "with its interval): "
                     + "; ".join(parts) + ".")
    tested = [fit for fit in analysis.fits if fit.relation in ("inverse", "direct", "no evidence")]
    if tested:
        items.append(
            f"<b>Direction of the α-f relation</b>, {len(tested)} tests with a family-wise error rate of "
            f"{SIGNIFICANCE:.0%}: the pooled direction first (at {SIGNIFICANCE:.0%}), each method's once the pooled one is "
            "found (Hommel's procedure among them; from the start when there is no pooled verdict):<ul>"
            + "".join(f"<li>{_e(fit.group)}: {_e(fit.verdict())}</li>" for fit in analysis.fits) + "</ul>")
    else:
        items.append("<b>Direction of the α-f relation</b>: "
                     + "; ".join(f"{_e(fit.group)}: {_e(fit.verdict())}" for fit in analysis.fits) + ".")
    unpinned = cells[~cells["pinned"].astype(bool)]
    if len(unpinned):
        items.append(f"{len(unpinned)} of {len(cells)} cells cannot pin α* (interval wider than half the searched "
                     "range: a flat or noisy response, or too few distinct α): their α* is drawn hollow and says so "
                     "in the cells table.")
    if np.isfinite(optima.sigma_val):
        items.append(f"Trial-to-trial noise of validation accuracy: sd {100 * optima.sigma_val:.2f} points "
                     f"({_num(optima.noise_df, 3)} degrees of freedom, pooled over the report); test: "
                     f"{100 * optima.sigma_test:.2f} points.")
    return _settings(analysis) + '<ul class="findings">' + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _noise_finding(cells: pd.DataFrame, t: float) -> str:
    """The findings line of a sweep over label noise: the mean KD gain at each P, and the highest P's
    minus the lowest's with its interval."""
    by_p = kd_gain_by_noise(cells, t, by=("label_noise",))
    if by_p.empty:
        return ("<b>KD gain versus label noise</b>: no cell has a KD gain estimate yet (a cell needs completed "
                "α = 0 trials and an α* from its trials).")
    parts = [f"P = {r.label_noise:g}: <b>{_ci_pts(r.gain, r.lo, r.hi)}</b> ({r.wins} of {r.cells} cells a win)"
             for r in by_p.itertuples()]
    text = ("<b>KD gain versus label noise</b> (test accuracy at α* minus at α = 0, points, mean over the cells at "
            f"each noise rate P, {LEVEL:.0%} interval; see the figure for each method and f): " + "; ".join(parts))
    difference = noise_gain_difference(cells, t)
    if difference is not None:
        lo, hi = difference["lo"], difference["hi"]
        verdict = ("" if not np.isfinite(lo) else " (the interval excludes 0)" if lo > 0 or hi < 0
                   else " (the interval includes 0: no evidence of a difference at this budget)")
        text += (f". The gain at P = {difference['high']:g} minus at P = {difference['low']:g}"
                 f"{_over(difference['replicates'])}: <b>{_ci_pts(difference['mean'], lo, hi)}</b>{verdict}")
    return text + "."


def _fits_table(fits: list[AlphaFFit]) -> str:
    rows, classes = [], []
    for fit in fits:
        points = "<br>".join(
            f"f = {f:g}: {_fixed(a)} [{_fixed(lo)}, {_fixed(hi)}]" + ("" if p else " <span class='warn'>(not pinned)</span>")
            for f, a, lo, hi, p in zip(fit.f, fit.alpha, fit.lo, fit.hi, fit.pinned))
        relation = _e(fit.relation)
        if fit.within:
            w = fit.within
            relation += (f"<br><small>within these replicates (cells pooled): {_e(w['relation'])}, slope "
                         f"{_fixed(w['slope'], sign=True)} [{_fixed(w['slope_lo'], sign=True)}, "
                         f"{_fixed(w['slope_hi'], sign=True)}], adjusted p {_p(w['p_adjusted'])}</small>")
        over = (f"{fit.replicates} replicates (t test, {fit.replicates - 1} df)" if fit.replicates > 1
                else "the cells (one draw of teacher and subsets)")
        rows.append([
            _e(fit.group), points or "–",
            f"{_fixed(fit.slope, sign=True)} [{_fixed(fit.slope_lo, sign=True)}, {_fixed(fit.slope_hi, sign=True)}]",
            _p(fit.p_value) + _calibration_note(fit),
            _p(fit.p_adjusted), relation, over, str(fit.n_trials), _e(fit.message),
        ])
        classes.append("chosen" if fit.relation in ("inverse", "direct") else "")
    return _table(["group", f"α*(f), model [{LEVEL:.0%} interval]", "slope of α* per tenfold f [interval]",
                   "p, two-sided (over replicates: a t test, and when that is at most 5 % the larger of it and the same test on the slopes less their leans at the no-relation truth closest to each replicate; else twice the posterior probability of the other sign, "
                   "and when that is at most 5 % the larger of it and its calibration at the no-relation truth closest to the data)",
                   "adjusted p (pooled first, then Hommel among the methods)", "relation", "answer over", "trials", "note"], rows, left=2, row_class=classes)


def _calibration_note(fit: AlphaFFit) -> str:
    """What the fits table prints under a calibrated p: the test's p before it and what it was held against."""
    c = fit.calibration
    if not c:
        return ""
    if "lean" in c:
        return (f"<br><small>t test {_p(fit.p_posterior)}; less each replicate's lean at its nearest no-relation "
                f"truth (mean {_fixed(c['lean'], sign=True)}): {_p(c['p_calibrated'])}</small>")
    return (f"<br><small>posterior {_p(fit.p_posterior)}; z {c['observed']:+.2f} against {c['null_mean']:+.2f} ± "
            f"{c['null_sd']:.2f} at the nearest no-relation truth</small>")


def _cells_table(cells: pd.DataFrame) -> str:
    rows = []
    several = cells["replicate"].nunique() > 1 or cells[["teacher_arch", "student_arch"]].drop_duplicates().shape[0] > 1
    noisy = noise_levels(cells) != [0.0]  # the label noise column, for a sweep with noisy labels
    order = ["method", "fraction", *(["label_noise"] if noisy else []), "teacher_arch", "student_arch", "replicate"]
    for _, c in cells.sort_values(order).iterrows():
        note = _e(c["note"])
        win = "win" if c["kd_win"] else ""
        rows.append([
            _e(c["method"]), f"{c['fraction']:g}", *([f"{c['label_noise']:g}"] if noisy else []),
            _e(f"{c['teacher_arch']}→{c['student_arch']}" + (f", replicate {c['replicate']}" if several else "")),
            f"{_fixed(c['alpha_opt'])} [{_fixed(c['alpha_lo'])}, {_fixed(c['alpha_hi'])}]" + ("" if c["pinned"] else " (not pinned)"),
            f"{_fixed(c['cell_alpha'])} [{_fixed(c['cell_alpha_lo'])}, {_fixed(c['cell_alpha_hi'])}]",
            f"{_fixed(c['best_alpha'])}: {_pct(c['best_val_acc'])} / {_pct(c['best_test_acc'])}",
            f"{_pct(c['baseline_val_acc'])} / {_pct(c['baseline_test_acc'])}",
            f"{_pct(c['val_at_opt'])} / {_pct(c['test_at_opt'])}",
            f"{_ci_pts(c['kd_gain_test'], c['kd_gain_test_lo'], c['kd_gain_test_hi'])} {win}",
            f"{c['n_completed']}/{c['n_trials']}, {c['n_alphas']} α",
            f'<span class="{"warn" if note != "ok" else ""}">{note}</span>',
        ])
    return _table(["method", "f", *(["label noise P"] if noisy else []), "teacher→student",
                   f"α* (pooled model) [{LEVEL:.0%}]", "α* from this cell alone (diagnostic)",
                   "best trial α: val / test (measured; the best of the cell's noisy trials, so optimistic)",
                   "no KD val / test (measured)",
                   "at α* val / test (model, within the trials' range)", "KD gain, test (pts, model) [95%]",
                   "completed / trials", "status"], rows, left=4 if noisy else 3)


def _provenance(analysis: Analysis) -> str:
    trials, sweep = analysis.experiment.trials, analysis.experiment.sweep
    counts = trials["status"].value_counts().to_dict()
    facts = [
        ("experiment", analysis.experiment.name),
        ("location", analysis.experiment.location),
        ("dataset", ", ".join(sorted(trials["dataset"].unique()))),
        ("profile", ", ".join(sorted(trials["profile"].dropna().astype(str).unique())) if "profile" in trials else "–"),
        ("trials", f"{len(trials)} ({', '.join(f'{n} {s}' for s, n in counts.items())}) in {trials['cell'].nunique()} cells"),
        ("alpha range", f"{analysis.experiment.alpha_range[0]:g} to {analysis.experiment.alpha_range[1]:g}"),
        ("tau", ", ".join(f"{t:g}" for t in sorted(trials["tau"].dropna().unique())) if "tau" in trials else "–"),
        ("replicate seeds", ", ".join(map(str, sorted(trials["replicate"].unique())))),
        *([("label noise P", ", ".join(f"{p:g}" for p in noise_levels(trials))
            + " (symmetric, training split only; validation and test labels clean)")] if noise_levels(trials) != [0.0] else []),
        ("package version", ", ".join(sorted(trials["version"].dropna().astype(str).unique())) if "version" in trials else "–"),
        ("analysis", f"pooled model (analysis.pooled), {analysis.optima.n_boot} posterior draws per fit, seed "
                     f"{analysis.optima.seed}, {LEVEL:.0%} intervals, family-wise error {SIGNIFICANCE:.0%}"),
    ]
    out = [_table(None, [[_e(k), _e(v)] for k, v in facts], left=2)]

    noisy = noise_levels(trials) != [0.0]
    noise_col = ["label_noise"] if noisy else []
    teacher_cols = [c for c in ("teacher_arch", "replicate", *noise_col, "teacher_key", "teacher_params", "teacher_val_acc",
                                "teacher_test_acc") if c in trials]
    teachers = trials[teacher_cols].drop_duplicates().sort_values(["teacher_arch", "replicate", *noise_col])
    # "replicate": the study replicate (its own teacher, scores and subsets), not a trial's seed
    out.append("<h3>Teachers</h3>" + _table(
        ["architecture", "replicate", *(["label noise P"] if noisy else []), "artifact key", "parameters",
         "val acc (clean labels)" if noisy else "val acc", "test acc"],
        [[_e(t["teacher_arch"]), _e(t["replicate"]), *([f"{t['label_noise']:g}"] if noisy else []),
          f"<code>{_e(t.get('teacher_key'))}</code>", _thousands(t.get("teacher_params")), _pct(t.get("teacher_val_acc")),
          _pct(t.get("teacher_test_acc"))]
         for _, t in teachers.iterrows()], left=4 if noisy else 3))
    if "score_key" in trials:
        scores = trials[trials["method"] != FULL][["method", "replicate", *noise_col, "score_key"]].drop_duplicates()
        out.append("<h3>Pruning scores</h3>" + _table(
            ["method", "replicate", *(["label noise P"] if noisy else []), "artifact key"],
            [[_e(s["method"]), _e(s["replicate"]), *([f"{s['label_noise']:g}"] if noisy else []),
              f"<code>{_e(s['score_key'])}</code>"] for _, s in scores.iterrows()],
            left=4 if noisy else 3))
    if "recipe" in trials:
        for recipe in trials["recipe"].dropna().unique():
            try:
                text = json.dumps(json.loads(recipe), indent=2, sort_keys=True)
            except ValueError:
                text = str(recipe)
            out.append(f"<h3>Recipe</h3><pre>{_e(text)}</pre>")
    if sweep:
        out.append(f"<details><summary>Sweep settings (sweep.json)</summary><pre>{_e(json.dumps(sweep, indent=2))}</pre></details>")
    return "".join(out)


def _alpha_f_notes(analysis: Analysis) -> str:
    return (f"""<p class="muted">α*(f) comes from one model per method fitted to all of its trials at once: in every cell accuracy is
a peak in α with its own level, height and asymmetry (up to {RATIO_BOUND:g} times steeper on one side), and the peak's location
is a smooth curve in log f shared by the method's cells (the full-data cell's α* is its own: at f = 1 the curve rests
mostly on the smaller fractions); intervals are {LEVEL:.0%} posterior intervals whose coverage is checked on simulated sweeps
(bench/bench_calibration.py). The slope is the change of α* per tenfold change of f (negative: α* grows as f
shrinks); its tests are controlled together at a family-wise error rate of {SIGNIFICANCE:.0%}: the pooled direction first, the
methods' once it is found, with Hommel's procedure among them.</p>""" + _fits_table(analysis.fits))


# What the page adds under a figure's section (the statistics that belong with it).
SECTION_NOTES = {"alpha-f": _alpha_f_notes}


def render_html(analysis: Analysis) -> str:
    from plotly.offline import get_plotlyjs

    from analysis.figures import FIGURES

    trials, cells = analysis.experiment.trials, analysis.cells
    levels = (" Each label noise level P has its own markers (their shape, named in the legend) and lines."
              if len(noise_levels(analysis.cells)) > 1 else "")
    sections, nav = [], []
    for section, figure in FIGURES.in_order():  # every registered figure the analysis has data for, in order
        if not figure.shown(analysis):
            continue
        how = figure.how + (levels if figure.per_noise_level else "")
        notes = SECTION_NOTES[section](analysis) if section in SECTION_NOTES else ""
        sections.append(f'<section id="{section}"><h2>{_e(figure.title)}</h2>'
                        f'{_figure_html(figure.build(analysis), f"fig-{section}", how)}{notes}</section>')
        nav.append(f'<a href="#{section}">{_e(figure.nav)}</a>')

    looks = _looks(analysis)
    if looks:
        nav.insert(0, '<a href="#looks">looks</a>')
    title = f"KD on pruned data: {analysis.experiment.name}"
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<header><h1>{_e(title)}</h1>{_progress_banner(analysis.experiment)}
<p class="muted">{_count(len(trials), "trial")}, {_count(len(cells), "cell")}, generated {generated}.
α weights the distillation term: L = (1 − α)·CE + α·τ²·KL. Measured numbers are trials; model numbers are
predictions of the pooled model (analysis.pooled) and are labelled as such.</p>
<nav>{"".join(nav)}<a href="#cells">cells</a><a href="#provenance">provenance</a></nav></header>
<section id="findings"><h2>Findings</h2>{_findings(analysis)}</section>
{f'<section id="looks"><h2>Looks</h2>{looks}</section>' if looks else ""}
{"".join(sections)}
<section id="cells"><h2>Cells</h2>{_cells_table(cells)}</section>
<section id="provenance"><h2>Provenance</h2>{_provenance(analysis)}</section>
</body></html>
"""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _progress_banner(experiment) -> str:
    """For a sweep that has not finished every planned trial: say so first, since every number below
    may still move. Rows left out of the analysis are named first of all."""
    left_out = "".join(f'<p class="warn"><b>Left out:</b> {_e(w)}.</p>' for w in getattr(experiment, "warnings", []))
    return left_out + _in_progress(experiment)


def _in_progress(experiment) -> str:
    if not experiment.in_progress:
        return ""
    name = experiment.sweep.get("name", experiment.name)
    storage = experiment.sweep.get("storage")
    resume = f"python -m sweep.run --resume --name {name}" + (f" --storage {storage}" if storage else "")
    return (f'<p class="in-progress"><b>In progress: {experiment.finished_trials} of {experiment.planned_trials} '
            "trials finished.</b> The sweep rewrites this report as cells finish, so every number below may still "
            f"change; a stopped sweep continues with <code>{_e(resume)}</code>.</p>")


# ---- files ------------------------------------------------------------------------------------

def sidecar_paths(out: str) -> dict[str, str]:
    stem = out[: -len(".html")] if out.endswith(".html") else out
    return {"trials_csv": f"{stem}.trials.csv", "trials_parquet": f"{stem}.trials.parquet",
            "cells_csv": f"{stem}.cells.csv", "fit_json": f"{stem}.fit.json"}


def _csv(frame: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def write_report(analysis: Analysis, out: str) -> dict[str, str]:
    """Write the HTML report and its sidecars; returns their paths (``html`` and ``sidecar_paths``)."""
    paths = {"html": out, **sidecar_paths(out)}
    cells = analysis.cells.copy()
    cells["curve"] = cells["curve"].map(lambda c: json.dumps(c) if isinstance(c, list) else None)
    parquet = io.BytesIO()
    analysis.experiment.trials.to_parquet(parquet, index=False)
    write_bytes(paths["trials_csv"], _csv(analysis.experiment.trials))
    write_bytes(paths["trials_parquet"], parquet.getvalue())
    write_bytes(paths["cells_csv"], _csv(cells))
    write_bytes(paths["fit_json"], json.dumps(fit_document(analysis), indent=1).encode())
    write_bytes(paths["html"], render_html(analysis).encode())  # last: its presence means the set is complete
    return paths


def default_out(location: str) -> str:
    location = str(location).rstrip("/")
    folder = location.rsplit("/", 1)[0] if location.endswith(".csv") else location
    return f"{folder}/report.html"


def build_report(location: str, out: str | None = None, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> dict[str, str]:
    """Load, analyse and write the report of an experiment; returns the written paths."""
    return write_report(analyse(location, n_boot=n_boot, seed=seed), out or default_out(location))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Optimal alpha per cell, the alpha-f fit and an HTML report of a sweep (self-contained, works offline).",
    )
    p.add_argument("experiment", help="experiment directory (local path or URI such as s3://bucket/runs/NAME) or a results CSV")
    p.add_argument("--out", default=None, help="the HTML file to write (default EXPERIMENT/report.html); "
                   "the tidy trials (.trials.csv/.parquet), cell optima (.cells.csv) and fits (.fit.json) go next to it")
    p.add_argument("--draws", "--bootstrap", dest="bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="posterior draws kept per alpha-f fit (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior draws (default 0)")
    p.add_argument("--jobs", type=int, default=None,
                   help="processes for the direction tests' simulations (default: every core this process may use; "
                   "the numbers are the same at any count)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bootstrap < 2:
        parser.error("--bootstrap must be at least 2")
    if args.out and not args.out.endswith(".html"):
        parser.error(f"--out must name an .html file, got {args.out!r}")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    workers.set_jobs(args.jobs)
    start = time.perf_counter()
    try:
        experiment = load_experiment(args.experiment)
    except ResultsError as error:
        parser.error(str(error))
    for warning in experiment.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    paths = write_report(analyse(experiment, n_boot=args.bootstrap, seed=args.seed), args.out or default_out(args.experiment))
    if experiment.in_progress:
        print(f"in progress: {experiment.finished_trials} of {experiment.planned_trials} trials finished; the report "
              "shows those (the sweep is running, or continues with --resume)")
    print(f"report: {paths['html']} ({time.perf_counter() - start:.1f} s)")
    for key in ("trials_csv", "trials_parquet", "cells_csv", "fit_json"):
        print(f"  {paths[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
