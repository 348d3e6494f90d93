"""How a report is checked in headless Chromium (the quickstart's report: tests/test_quickstart.py) (Debian's ``chromium``).

Chromium loads the file offline, runs its scripts and dumps the DOM it rendered; console messages
(uncaught exceptions included) go to its log. The dumped DOM is parsed (``html.parser``) and checked,
not searched as a string, and without relying on the report's figure ids or table columns:

- no console message;
- every plotly figure of the page (every ``Plotly.newPlot`` of the HTML file) was drawn: plotly took
  its div, put its SVG in it, and drew one trace layer per trace that has data (an empty figure is
  drawn as empty axes);
- every cell of ``report.cells.csv`` (method, f) has a rendered row in the ``#cells`` part of the page;
- every unsigned number displayed as a percentage lies in [0, 100] (signed ones, ``+1.2%``, are
  differences, not levels).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pandas as pd
import pytest


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-default-apps", "--disable-sync", "--no-first-run", "--mute-audio",
    "--virtual-time-budget=20000", "--enable-logging=stderr", "--v=0",
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
HIDDEN_TEXT = {"script", "style", "title", "head"}  # text in these is not displayed
PERCENT = re.compile(r"(?<![\w.])([+\-−±]?)(\d+(?:\.\d+)?)\s*%")


# --------------------------------------------------------------------------------------------
# A small DOM


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list["Node | str"] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def walk(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.walk()

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list["Node"]:
        return [n for n in self.walk() if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)]

    def by_id(self, element_id: str) -> "Node | None":
        return next((n for n in self.walk() if n.attrs.get("id") == element_id), None)

    def text(self) -> str:
        """Displayed text: text nodes outside scripts and styles, one space between nodes."""
        parts = []
        for child in self.children:
            if isinstance(child, str):
                parts.append(child)
            elif child.tag not in HIDDEN_TEXT:
                parts.append(child.text())
        return " ".join(p.strip() for p in parts if p.strip())


class _TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):  # close up to the matching open element, if any
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse_html(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


# --------------------------------------------------------------------------------------------
# The browser and the checks


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    missing = "headless Chromium is needed for the report tests: `apt-get install chromium` (.ci/run does this)"
    if os.environ.get("CI"):  # CI checks the report in a real browser: a missing one is a failure there
        pytest.fail(missing)
    pytest.skip(missing)


def open_in_browser(path, tmp_path) -> tuple[Node, list[str]]:
    """(the DOM Chromium rendered, after the page's scripts ran; its console messages)."""
    profile = tmp_path / "chromium-profile"
    run = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", path.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    return parse_html(run.stdout), console


def declared_figures(source: str) -> dict[str, int]:
    """Figure id -> traces with data to draw, from the ``Plotly.newPlot("id", [traces], ...)`` calls of
    a page's source (what ``plotly.io.to_html`` writes). A trace with no points (an empty scatter) and a
    hidden one (``visible`` false or ``"legendonly"``) draw nothing."""
    declared = {}
    for call in re.finditer(r"Plotly\.newPlot\(\s*\"([^\"]+)\",\s*", source):
        traces, _ = json.JSONDecoder().raw_decode(source, call.end())
        declared[call.group(1)] = sum(_has_points(t) and t.get("visible", True) not in (False, "legendonly") for t in traces)
    return declared


def _has_points(trace: dict) -> bool:
    def size(values) -> int:
        if isinstance(values, dict) and "bdata" in values:  # plotly's typed-array encoding
            return len(base64.b64decode(values["bdata"]))
        return len(values) if isinstance(values, (list, str)) else int(values is not None)

    return any(size(trace.get(axis)) > 0 for axis in ("x", "y", "z"))


def rendered_figures(dom: Node) -> dict[str, tuple[bool, int]]:
    """Figure id -> (plotly took the div and put its ``main-svg`` in it, trace layers drawn in its SVG:
    ``g.trace`` for scatter and bar traces, ``g.hm`` for heatmaps), for every ``plotly-graph-div``."""
    rendered = {}
    for div in dom.find_all("div", "plotly-graph-div"):
        svgs = div.find_all("svg", "main-svg")
        traces = [g for svg in svgs for g in svg.find_all("g") if g.classes & {"trace", "hm"}]
        rendered[div.attrs.get("id", "")] = ("js-plotly-plot" in div.classes and bool(svgs), len(traces))
    return rendered


def undrawn_figures(source: str, dom: Node) -> list[str]:
    """The figures of a page's source that the browser did not draw completely: no SVG of plotly's, or
    fewer (or more) trace layers than the figure has traces with data."""
    declared, rendered = declared_figures(source), rendered_figures(dom)
    assert declared, "the page holds no plotly figure"
    return sorted(name for name, traces in declared.items() if rendered.get(name, (False, -1)) != (True, traces))


def displayed_percentages(dom: Node) -> list[tuple[str, float]]:
    """(the text around it, value) for every unsigned number displayed as a percentage."""
    body = dom.find_all("body")
    text = body[0].text() if body else dom.text()
    return [(text[max(0, m.start() - 40) : m.end() + 10], float(m.group(2)))
            for m in PERCENT.finditer(text) if not m.group(1)]


def rendered_rows(container: Node) -> list[list[str]]:
    """The text of each cell of each rendered table row (with data cells) in ``container``."""
    rows = []
    for tr in container.find_all("tr"):
        cells = [c for c in tr.children if isinstance(c, Node) and c.tag == "td"]
        if cells:
            rows.append([c.text() for c in cells])
    return rows


def _number(text: str) -> float | None:
    match = re.fullmatch(r"(?:f\s*=\s*)?(\d+(?:\.\d*)?)", text.strip())
    return float(match.group(1)) if match else None


def shown_cells(rows: list[list[str]], methods: set[str]) -> set[tuple[str, float]]:
    """(method, f) of every row that names a method in one of its cells and a number in another."""
    shown = set()
    for row in rows:
        for method in methods & set(row):
            shown |= {(method, round(x, 6)) for x in map(_number, row) if x is not None}
    return shown


# --------------------------------------------------------------------------------------------
# The tests


def test_the_checker_sees_script_errors_undrawn_figures_and_bad_percentages(tmp_path):
    from plotly.offline import get_plotlyjs

    page = tmp_path / "page.html"
    scatter = '[{"x": [1, 2], "y": [3, 4], "type": "scatter"}, {"x": [], "y": [], "type": "scatter"}]'
    page.write_text(
        '<html><head><meta charset="utf-8"><script>' + get_plotlyjs() + "</script></head><body>"
        '<div id="fig-drawn" class="plotly-graph-div"></div><div id="fig-undrawn" class="plotly-graph-div"></div>'
        '<section id="cells"><table><tbody><tr><td>el2n</td><td>0.2</td><td>101.5%</td><td>+250.0%</td></tr>'
        "<tr><td>random</td><td>f = 0.5</td><td>99.0%</td></tr></tbody></table></section>"
        f'<script>Plotly.newPlot("fig-drawn", {scatter}); notDefined(); Plotly.newPlot("fig-undrawn", {scatter});</script>'
        "</body></html>", encoding="utf-8"
    )
    dom, console = open_in_browser(page, tmp_path)
    assert any("Uncaught ReferenceError" in line for line in console)
    source = page.read_text(encoding="utf-8")
    assert declared_figures(source) == {"fig-drawn": 1, "fig-undrawn": 1}  # the empty trace draws nothing
    assert rendered_figures(dom) == {"fig-drawn": (True, 1), "fig-undrawn": (False, 0)}
    assert undrawn_figures(source, dom) == ["fig-undrawn"]
    assert [value for _, value in displayed_percentages(dom)] == [101.5, 99.0]  # +250% is a difference
    rows = rendered_rows(dom.by_id("cells"))
    assert shown_cells(rows, {"el2n", "random", "grand"}) == {("el2n", 0.2), ("random", 0.5)}


def check_report_in_browser(report, cells: pd.DataFrame, tmp_path) -> None:
    dom, console = open_in_browser(report, tmp_path)
    assert console == []

    source = report.read_text(encoding="utf-8")
    assert set(rendered_figures(dom)) == set(declared_figures(source)), "a plotly div without its figure, or the reverse"
    assert undrawn_figures(source, dom) == [], "figures the browser did not draw completely"

    section = dom.by_id("cells")
    assert section is not None, "the report has no element with id 'cells' (the per-cell results)"
    expected = {(m, round(float(f), 6)) for m, f in zip(cells["method"], cells["fraction"])}
    assert len(expected) == len(cells)
    missing = expected - shown_cells(rendered_rows(section), set(cells["method"]))
    assert not missing, f"cells of report.cells.csv without a rendered row: {sorted(missing)}"

    percentages = displayed_percentages(dom)
    assert percentages, "no percentage displayed (accuracies are shown as percentages)"
    outside = [(context, value) for context, value in percentages if not 0 <= value <= 100]
    assert not outside, f"percentages outside [0, 100]: {outside}"
