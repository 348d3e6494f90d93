"""The sweep report: one self-contained HTML file (plotly.js embedded, works offline).

    python -m analysis.report runs/digits-smoke-20261124-213057
    python -m analysis.report s3://bucket/runs/svhn-paper --out svhn.html --bootstrap 2000

Next to ``report.html`` it writes ``report.trials.csv`` and ``report.trials.parquet`` (the tidy
trials), ``report.cells.csv`` (the optimum of every cell) and ``report.fit.json`` (the alpha-f fits,
which ``python -m analysis.predict`` reads). The default ``--out`` is ``EXPERIMENT/report.html``.
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

from analysis.alpha_f import LEVEL, SE_FLOOR, AlphaFFit, fit_alpha_f
from analysis.optimum import CellOptima, cell_optima
from analysis.results import Experiment, ResultsError, load_experiment
from sweep.plan import FULL
from trainables.storage import write_bytes

DEFAULT_BOOTSTRAP = 1000


@dataclass
class Analysis:
    experiment: Experiment
    optima: CellOptima
    fits: list[AlphaFFit]

    @property
    def cells(self) -> pd.DataFrame:
        return self.optima.table


def analyse(experiment: Experiment | str, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0) -> Analysis:
    """Cell optima and alpha-f fits of an experiment (or its location)."""
    if not isinstance(experiment, Experiment):
        experiment = load_experiment(experiment)
    optima = cell_optima(experiment.trials, n_boot=n_boot, seed=seed)
    return Analysis(experiment, optima, fit_alpha_f(optima, experiment.alpha_range, seed=seed))


def fit_document(analysis: Analysis) -> dict:
    """The JSON written next to the report: settings and every alpha-f fit."""
    import trainables

    return {
        "experiment": analysis.experiment.name,
        "location": analysis.experiment.location,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "analysis_version": trainables.__version__,
        "bootstrap": analysis.optima.n_boot,
        "seed": analysis.optima.seed,
        "level": LEVEL,
        "alpha_range": list(analysis.experiment.alpha_range),
        "fits": [fit.to_dict() for fit in analysis.fits],
    }


# ---- HTML -------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 0 24px 48px; color: #222; }
header { border-bottom: 1px solid #ddd; margin-bottom: 12px; }
h1 { font-size: 1.6em; margin: 20px 0 4px; } h2 { margin-top: 36px; font-size: 1.25em; }
nav a { margin-right: 14px; } .muted { color: #666; } .figure { margin: 8px 0 20px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f6f6f6; position: sticky; top: 0; } td.l, th.l { text-align: left; }
tr.chosen td { font-weight: 600; background: #f3f8ff; } .warn { color: #a35200; }
.findings li { margin: 4px 0; } pre { background: #f6f6f6; padding: 10px; overflow-x: auto; font-size: 12px; }
code { font-size: 12px; }
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _pct(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:.1f}%"


def _pts(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * value:+.1f}"


def _num(value, digits: int = 3) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:.{digits}g}"


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


def _figure_html(fig, div_id: str) -> str:
    import plotly.io as pio

    return '<div class="figure">' + pio.to_html(
        fig, full_html=False, include_plotlyjs=False, div_id=div_id,
        config={"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}},
    ) + "</div>"


def _findings(analysis: Analysis) -> str:
    cells = analysis.cells
    items = []
    scored = cells[cells["kd_gain_test"].notna()]
    if len(scored):
        wins = int((scored["kd_gain_test"] > 0).sum())
        items.append(f"KD at the optimal α beats no KD on test accuracy in <b>{wins} of {len(scored)}</b> cells "
                     f"(mean gain {_pts(scored['kd_gain_test'].mean())} points, "
                     f"largest {_pts(scored['kd_gain_test'].max())}).")
    for fit in analysis.fits:
        if fit.best is None:
            items.append(f"{_e(fit.group)}: no α-f fit ({_e(fit.message)}).")
            continue
        verdict = {"inverse": "an <b>inverse</b> relation (optimal α grows as f shrinks)",
                   "direct": "a <b>direct</b> relation (optimal α grows with f)",
                   "none": "<b>no monotone relation</b> detected"}[fit.relation]
        items.append(
            f"{_e(fit.group)}: {verdict}; Spearman ρ = {_num(fit.spearman_rho, 2)}, p = {_num(fit.spearman_p, 2)} "
            f"over {len(fit.f)} cells. Best family <b>{_e(fit.chosen)}</b> ({_e(fit.selected_by)}): "
            f"α*(f) = {_e(fit.best.formula)}."
        )
    return '<ul class="findings">' + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _fits_table(fits: list[AlphaFFit]) -> str:
    rows, classes = [], []
    for fit in fits:
        if not fit.families:
            rows.append([_e(fit.group), "–", _e(fit.message)] + ["–"] * 6)
            classes.append("")
            continue
        best_aicc = min((f.aicc for f in fit.families.values() if np.isfinite(f.aicc)), default=np.nan)
        for name, family in fit.families.items():
            params = "<br>".join(
                f"{_e(p)} = {_num(v)} [{_num(family.intervals[p][0])}, {_num(family.intervals[p][1])}]"
                for p, v in family.params.items())
            rows.append([
                _e(fit.group), _e(name) + (" ✓" if name == fit.chosen else ""), _e(f"α = {family.formula}"), params,
                _num(family.aicc - best_aicc, 3) if np.isfinite(family.aicc) else "–", _num(family.loo_rmse),
                _num(family.r2), _num(family.chi2_red),
                f"ρ = {_num(fit.spearman_rho, 2)}, p = {_num(fit.spearman_p, 2)}: {_e(fit.relation)}",
            ])
            classes.append("chosen" if name == fit.chosen else "")
    return _table(["group", "family", "formula", f"parameters [{LEVEL:.0%} bootstrap interval]", "ΔAICc",
                   "LOO RMSE", "weighted R²", "reduced χ²", "Spearman"], rows, left=4, row_class=classes)


def _cells_table(cells: pd.DataFrame) -> str:
    rows = []
    several = cells["replicate"].nunique() > 1 or cells[["teacher_arch", "student_arch"]].drop_duplicates().shape[0] > 1
    for _, c in cells.sort_values(["method", "fraction", "teacher_arch", "student_arch", "replicate"]).iterrows():
        note = _e(c["note"])
        rows.append([
            _e(c["method"]), f"{c['fraction']:g}",
            _e(f"{c['teacher_arch']}→{c['student_arch']}" + (f", seed {c['replicate']}" if several else "")),
            f"{_num(c['alpha_opt'])} [{_num(c['alpha_lo'])}, {_num(c['alpha_hi'])}]", _e(c["estimator"]),
            f"{_num(c['best_alpha'])} ({_pct(c['best_val_acc'])})",
            f"{_pct(c['baseline_val_acc'])} / {_pct(c['baseline_test_acc'])}",
            f"{_pct(c['val_at_opt'])} / {_pct(c['test_at_opt'])}",
            f"{_pts(c['kd_gain_val'])} / {_pts(c['kd_gain_test'])}",
            f"{c['n_completed']}/{c['n_trials']}",
            f'<span class="{"warn" if note != "ok" else ""}">{note}</span>',
        ])
    return _table(["method", "f", "teacher→student", f"optimal α [{LEVEL:.0%} CI]", "estimator",
                   "best observed α (val)", "no KD val / test", "at optimum val / test", "KD gain val / test (pts)",
                   "completed / trials", "status"], rows, left=3)


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
        ("package version", ", ".join(sorted(trials["version"].dropna().astype(str).unique())) if "version" in trials else "–"),
        ("analysis", f"{analysis.optima.n_boot} bootstrap replicates, seed {analysis.optima.seed}, {LEVEL:.0%} intervals, "
                     f"se floor {SE_FLOOR:g} of the alpha range"),
    ]
    out = [_table(None, [[_e(k), _e(v)] for k, v in facts], left=2)]

    teacher_cols = [c for c in ("teacher_arch", "replicate", "teacher_key", "teacher_val_acc", "teacher_test_acc") if c in trials]
    teachers = trials[teacher_cols].drop_duplicates().sort_values(["teacher_arch", "replicate"])
    out.append("<h3>Teachers</h3>" + _table(
        ["architecture", "seed", "artifact key", "val acc", "test acc"],
        [[_e(t["teacher_arch"]), _e(t["replicate"]), f"<code>{_e(t.get('teacher_key'))}</code>",
          _pct(t.get("teacher_val_acc")), _pct(t.get("teacher_test_acc"))] for _, t in teachers.iterrows()], left=3))
    if "score_key" in trials:
        scores = trials[trials["method"] != FULL][["method", "replicate", "score_key"]].drop_duplicates()
        out.append("<h3>Pruning scores</h3>" + _table(
            ["method", "seed", "artifact key"],
            [[_e(s["method"]), _e(s["replicate"]), f"<code>{_e(s['score_key'])}</code>"] for _, s in scores.iterrows()],
            left=3))
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


def render_html(analysis: Analysis) -> str:
    from plotly.offline import get_plotlyjs

    from analysis import figures

    trials, cells = analysis.experiment.trials, analysis.cells
    parts = {
        "alpha-f": _figure_html(figures.alpha_vs_f(cells, analysis.fits), "fig-alpha-f"),
        "accuracy": _figure_html(figures.accuracy_vs_f(cells), "fig-accuracy-f"),
        "val-alpha": _figure_html(figures.val_vs_alpha(trials, cells), "fig-val-alpha"),
        "heatmap": _figure_html(figures.accuracy_heatmap(trials, cells), "fig-heatmap"),
    }
    title = f"KD on pruned data: {analysis.experiment.name}"
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<header><h1>{_e(title)}</h1>
<p class="muted">{len(trials)} trials, {len(cells)} cells, generated {generated}.
α weights the distillation term: L = (1 − α)·CE + α·τ²·KL.</p>
<nav><a href="#alpha-f">α versus f</a><a href="#accuracy">accuracy versus f</a><a href="#val-alpha">accuracy versus α</a>
<a href="#heatmap">heatmap</a><a href="#cells">cells</a><a href="#provenance">provenance</a></nav></header>
<section id="findings"><h2>Findings</h2>{_findings(analysis)}</section>
<section id="alpha-f"><h2>Optimal α versus f</h2>{parts["alpha-f"]}
<p class="muted">Each optimum maximises a quadratic fitted to its cell's trials; intervals are {LEVEL:.0%} bootstrap
intervals over trials. Curves: the family chosen per group, weighted by each optimum's uncertainty; shaded: its
{LEVEL:.0%} bootstrap band.</p>{_fits_table(analysis.fits)}</section>
<section id="accuracy"><h2>Test accuracy versus f</h2>{parts["accuracy"]}</section>
<section id="val-alpha"><h2>Validation accuracy versus α</h2>{parts["val-alpha"]}</section>
<section id="heatmap"><h2>Accuracy over (α, f)</h2>{parts["heatmap"]}</section>
<section id="cells"><h2>Cells</h2>{_cells_table(cells)}</section>
<section id="provenance"><h2>Provenance</h2>{_provenance(analysis)}</section>
</body></html>
"""


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
    p.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap replicates (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bootstrap < 2:
        parser.error("--bootstrap must be at least 2")
    if args.out and not args.out.endswith(".html"):
        parser.error(f"--out must name an .html file, got {args.out!r}")
    start = time.perf_counter()
    try:
        experiment = load_experiment(args.experiment)
    except ResultsError as error:
        parser.error(str(error))
    paths = write_report(analyse(experiment, n_boot=args.bootstrap, seed=args.seed), args.out or default_out(args.experiment))
    print(f"report: {paths['html']} ({time.perf_counter() - start:.1f} s)")
    for key in ("trials_csv", "trials_parquet", "cells_csv", "fit_json"):
        print(f"  {paths[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
