"""The layers, checked from the import graph: each package imports only itself and the layers below
it, so a new arrow back up fails here (the README's "Architecture" section draws the same picture).

    sweep/          the driver: its command line, the plan, the searcher, the Ray adapter   (top)
    analysis/       statistics, figures and the report: no torch, no Ray
    trainables/     the workers: datasets, models, training, KD, teachers, scores, students
    search_spaces/  alpha designs, per-dataset defaults, profiles
    contract/       cells, trial specs, the results schema, recipe, registry, seeding, storage (ground)

Every import counts, at module level or inside a function (a lazy import is still an arrow)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {  # a package: the project packages it may import (itself included)
    "contract": {"contract"},
    "search_spaces": {"contract", "search_spaces"},
    "trainables": {"contract", "search_spaces", "trainables"},
    "analysis": {"contract", "search_spaces", "analysis"},
    "sweep": {"contract", "search_spaces", "trainables", "analysis", "sweep"},
}
# Third-party packages a layer must not import: the ground and the analysis run where torch and Ray
# are not installed; the ground loads in milliseconds (no Optuna either).
FORBIDDEN = {
    "contract": {"torch", "torchvision", "ray", "optuna"},
    "search_spaces": {"torch", "torchvision", "ray"},
    "analysis": {"torch", "torchvision", "ray"},
}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def _modules(package: str):
    return sorted((ROOT / package).rglob("*.py"))


def test_every_package_has_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "bench")}
    assert packages == set(ALLOWED), f"place {sorted(packages ^ set(ALLOWED))} in ALLOWED"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = []
    for path in _modules(package):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if (top in ALLOWED and top not in ALLOWED[package]) or top in FORBIDDEN.get(package, ()):
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)
