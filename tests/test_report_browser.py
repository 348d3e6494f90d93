"""The report of a real digits smoke sweep, opened in headless Chromium (Debian's ``chromium``).

Chromium loads the file offline, runs its scripts, and dumps the DOM; console messages (uncaught
exceptions included) go to its log. The test fails on any console message and on any figure that
plotly did not draw (no SVG, or no trace layer inside it).
"""

import re
import shutil
import subprocess

import pandas as pd
import pytest

from sweep.run import main as sweep_main

FIGURES = {  # figure div id -> what plotly draws for its traces
    "fig-alpha-f": 'class="trace scatter',
    "fig-accuracy-f": 'class="trace scatter',
    "fig-val-alpha": 'class="trace scatter',
    "fig-heatmap": 'class="hm"',
}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-default-apps", "--disable-sync", "--no-first-run", "--mute-audio",
    "--virtual-time-budget=20000", "--enable-logging=stderr", "--v=0",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("headless Chromium is needed for the report tests: `apt-get install chromium` (.ci/run does this)")


def open_in_browser(path, tmp_path) -> tuple[str, list[str]]:
    """(DOM after the page's scripts ran, console messages)."""
    profile = tmp_path / "chromium-profile"
    run = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", path.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return run.stdout, console


def figure_sections(dom: str) -> dict[str, str]:
    """Each figure div's part of the DOM, up to the next figure."""
    starts = sorted((m.start(), m.group(1)) for m in re.finditer(r'<div id="(fig-[a-z-]+)"', dom))
    return {name: dom[start : (starts[i + 1][0] if i + 1 < len(starts) else len(dom))]
            for i, (start, name) in enumerate(starts)}


def test_the_checker_sees_script_errors_and_undrawn_figures(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<html><body><div id="fig-alpha-f" class="plotly-graph-div"></div>'
                    "<script>notDefined();</script></body></html>")
    dom, console = open_in_browser(page, tmp_path)
    assert any("Uncaught ReferenceError" in line for line in console)
    assert "main-svg" not in figure_sections(dom)["fig-alpha-f"]


def test_smoke_sweep_report_renders_in_headless_chromium(tmp_path, capsys):
    args = ["--dataset", "digits", "--profile", "smoke", "--epochs", "3", "--methods", "random", "el2n",
            "--fractions", "0.2", "0.5", "1.0", "--trials-per-cell", "3", "--storage", str(tmp_path), "--name", "smoke"]
    assert sweep_main(args) == 0
    out = capsys.readouterr().out
    report = tmp_path / "smoke" / "report.html"
    assert f"report: {report}" in out
    results = pd.read_csv(tmp_path / "smoke" / "results.csv")
    assert len(results) == 15 and results["teacher_test_acc"].between(0.5, 1).all()
    for sidecar in ("report.trials.csv", "report.trials.parquet", "report.cells.csv", "report.fit.json"):
        assert (tmp_path / "smoke" / sidecar).exists()

    dom, console = open_in_browser(report, tmp_path)
    assert console == []
    sections = figure_sections(dom)
    assert set(sections) == set(FIGURES)
    for name, trace in FIGURES.items():
        assert 'class="plotly-graph-div js-plotly-plot"' in sections[name][:300], name  # plotly took the div
        assert 'class="main-svg"' in sections[name], name
        assert trace in sections[name], name
    # the teacher's reference line and every cell made it into the page
    assert sections["fig-accuracy-f"].count('class="trace scatter') >= 3 * 2
    assert dom.count("<tr") >= len(results.groupby(["method", "fraction"]))
