"""The newcomer's tasks of the README's "Extending" section, each done the way the section shows: a
model, a dataset, a pruning method and an alpha design, each registered in one place, usable from the
sweep at once, and none of them changing an existing artifact key."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from contract.recipe import Recipe
from search_spaces.alpha_space import DESIGNS, Design, spread
from search_spaces.defaults import DATASET_DEFAULTS, DatasetDefaults, register_defaults
from search_spaces.profiles import list_profiles, profile_for
from sweep.run import main
from trainables.artifacts import code_for
from trainables.datasets import DATASETS, dataset_code, load_dataset
from trainables.models import MODELS, build_model, register_model
from trainables.scorers import SCORERS, EarlyCheckpointScorer, register_scorer, score_option_names, score_option_problems


@pytest.fixture
def registries(monkeypatch):
    """Every registration a test makes is undone after it (the registries are module-level)."""
    for registry in (MODELS, DATASETS, DATASET_DEFAULTS, SCORERS, DESIGNS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))


def _keys(digits):
    return {"teacher": code_for("teacher", MODELS.get("small_cnn"), *dataset_code(digits)),
            "scores": code_for("scores", SCORERS.get("el2n"), *dataset_code(digits), MODELS.get("small_cnn"))}


def test_a_model_a_dataset_a_scorer_and_a_design_are_each_one_registration(registries, tmp_path, capsys, digits):
    before = _keys(digits)

    @register_model("tiny_mlp")  # a model: one decorated builder
    def tiny_mlp(num_classes: int, in_channels: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.Linear(32, num_classes))

    @DATASETS.register("digits_small")  # a dataset: its loader and its defaults, side by side
    def digits_small(options):
        full = load_dataset("digits")
        return dataclasses.replace(full, name="digits_small", x_train=full.x_train[:600], y_train=full.y_train[:600],
                                   _device_cache={})

    register_defaults("digits_small")(DatasetDefaults("small_cnn", "tiny_mlp", Recipe(epochs=3, batch_size=64, lr=0.05), 0.1))

    @dataclasses.dataclass(frozen=True)
    class LateOptions:  # a pruning method's own options: a dataclass with a check
        epoch_fraction: float = 0.5

        def check(self):
            if not 0.25 <= self.epoch_fraction <= 1:
                raise ValueError("epoch_fraction must lie in [0.25, 1]")

    @register_scorer("el2n_late")  # a pruning method: a scorer class with its options
    class El2nLate(EarlyCheckpointScorer):
        kernel = SCORERS.get("el2n").kernel
        Options = LateOptions

    DESIGNS.register("halves")(Design(initial=lambda n: spread(n)[:2], sampler=DESIGNS.get("grid").sampler,
                                      continues_sequence=True))  # an alpha design

    assert build_model("tiny_mlp", 10, 1)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert all(profile_for(profile, "digits_small").recipe.epochs >= 1 for profile in list_profiles())
    assert "el2n_late.epoch_fraction" in score_option_names()
    assert score_option_problems({"el2n_late": {"epoch_fraction": 0.1}}) == [
        "--score-option el2n_late: epoch_fraction must lie in [0.25, 1]"]  # its own check, before compute
    assert _keys(digits) == before  # nothing already cached is recomputed

    # the sweep takes them all by name, and --help lists them from the registries
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert all(name in help_text for name in ("halves", "el2n_late.epoch_fraction", "digits_small", "tiny_mlp", "el2n_late"))
    assert main(["--dataset", "digits_small", "--profile", "smoke", "--student", "tiny_mlp", "--methods", "el2n_late",
                 "--fractions", "0.5", "--alpha-design", "halves", "--score-option", "el2n_late.epoch_fraction=0.5",
                 "--storage", str(tmp_path), "--name", "new", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "el2n_late" in plan and "tiny_mlp" in plan and "digits_small" in plan


def test_a_figure_is_one_function_and_one_registration(monkeypatch, tmp_path):
    """A figure registered with ``register_figure`` becomes a section of the report, linked from its
    navigation, after the figures registered before it; one whose ``shown`` says no is left out."""
    import plotly.graph_objects as go

    from analysis.figures import FIGURES, register_figure
    from analysis.report import build_report
    from analysis.simulate import simulate_sweep

    monkeypatch.setattr(FIGURES, "_entries", dict(FIGURES._entries))

    @register_figure("trials-per-alpha", title="Trials per α", nav="trials per α",
                     how="bars count the completed trials in each tenth of the α range.")
    def trials_per_alpha(analysis) -> go.Figure:
        done = analysis.experiment.trials.query("status == 'completed'")
        return go.Figure(go.Histogram(x=done["alpha"], xbins=dict(start=0, end=1, size=0.1)))

    register_figure("never", title="Never shown", nav="never", how="-", shown=lambda analysis: False)(
        lambda analysis: go.Figure())

    folder = tmp_path / "exp"
    folder.mkdir()
    simulate_sweep("inverse", "grid", 4, methods=("random",), fractions=(0.2, 0.5)).to_csv(folder / "results.csv", index=False)
    html = (tmp_path / "report.html")
    build_report(str(folder), out=str(html), n_boot=50)
    page = html.read_text()
    assert '<section id="trials-per-alpha"><h2>Trials per α</h2>' in page and 'id="fig-trials-per-alpha"' in page
    assert '<a href="#trials-per-alpha">trials per α</a>' in page
    assert page.index('id="fig-heatmap"') < page.index('id="fig-trials-per-alpha"')  # in registration order
    assert "Never shown" not in page


PLUGIN = '''
from torch import nn

from trainables.models import register_model


@register_model("plugin_net")
def plugin_net(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * in_channels, num_classes))
'''


def test_a_plugin_module_reaches_every_worker_without_editing_the_project(tmp_path):
    """``--plugin FILE``: the driver imports a module of the user's, Ray ships it to the workers and each
    worker process imports it as it starts, so the teacher task and the cohort trials build its model
    by name. The module lies outside the project and outside every worker's path."""
    import pandas as pd

    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "my_plugin_entries.py").write_text(PLUGIN)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"RAY_ADDRESS": "local"}
    command = [sys.executable, "-m", "sweep.run", "--plugin", str(folder / "my_plugin_entries.py"), "--dataset", "digits",
               "--profile", "smoke", "--epochs", "1", "--methods", "random", "--fractions", "0.5",
               "--trials-per-cell", "2", "--teacher", "plugin_net", "--student", "plugin_net",
               "--storage", str(tmp_path / "runs"), "--name", "plugged"]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = pd.read_csv(tmp_path / "runs" / "plugged" / "results.csv")
    assert (results["status"] == "completed").all() and set(results["student_arch"]) == {"plugin_net"}
    assert set(results["teacher_arch"]) == {"plugin_net"} and len(results) == 2
    recorded = json.loads((tmp_path / "runs" / "plugged" / "sweep.json").read_text())
    assert recorded["plugins"] == [str(folder / "my_plugin_entries.py")]  # a --resume imports it again


def test_a_plugins_code_is_in_its_artifact_keys_and_a_broken_plugin_is_refused(registries, tmp_path, monkeypatch, capsys):
    from contract import plugins
    from trainables.artifacts import _CodeWalk

    monkeypatch.setattr(plugins, "_LOADED", {})
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "my_keyed_entries.py").write_text(PLUGIN)
    try:
        plugins.load_plugins([str(tmp_path / "my_keyed_entries.py")])
        walk = _CodeWalk(())
        walk.add(MODELS.get("plugin_net"))
        assert "my_keyed_entries:plugin_net" in walk.found  # hashed like the project's own models
    finally:
        sys.modules.pop("my_keyed_entries", None)
    (tmp_path / "broken_entries.py").write_text("import not_a_module_anywhere\n")
    for spec, message in ((str(tmp_path / "missing.py"), "no such file"),
                          (str(tmp_path / "broken_entries.py"), "cannot import it (ModuleNotFoundError")):
        from trainables.teacher import main as teacher_main

        for command, args in ((main, ["--dataset", "digits", "--dry-run"]), (teacher_main, ["--dataset", "digits"])):
            with pytest.raises(SystemExit) as exit_:  # the sweep and the workers' own command lines alike
                command(["--plugin", spec, *args])
            assert exit_.value.code == 2 and message in capsys.readouterr().err
