"""Plugins: a user's own modules that register entries (models, datasets and their defaults, pruning
methods, alpha designs, report figures) without editing the project.

    python -m sweep.run --plugin my_entries.py --dataset digits --student my_mlp ...

A plugin is a module name importable here (``mypkg.entries``) or a ``.py`` file (its folder goes on
``sys.path``, as ``python FILE`` does, and it is imported by its file name). The driver imports it
before it reads the registries; the Ray adapter ships it to every worker (Ray's ``py_modules``) and
every worker process imports it when it starts (``load_from_env``, Ray's worker set-up hook, reading
``KDSWEEP_PLUGINS``), so trials and stage tasks on any node find the same entries by name. The
artifact cache hashes a plugin's definitions like the project's own (``trainables.artifacts``): an
edit to a plugin model changes the keys of the teachers built from it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

PLUGINS_ENV = "KDSWEEP_PLUGINS"  # comma-separated module names, for the worker processes
_LOADED: dict[str, ModuleType] = {}  # module name -> module, in load order


class PluginError(ValueError):
    """A plugin that cannot be imported (its one-line reason)."""


def module_name(spec: str) -> str:
    """The module name a plugin spec is imported under: a file's stem, else the spec itself."""
    return Path(spec).stem if spec.endswith(".py") else spec


def load_plugins(specs: list[str]) -> list[ModuleType]:
    """Import each plugin once (a module name, or a ``.py`` file); a plugin that cannot be imported is a
    ``PluginError`` naming it and why, raised before anything else runs."""
    modules = []
    for spec in specs:
        name = module_name(spec)
        if name in _LOADED:
            modules.append(_LOADED[name])
            continue
        if spec.endswith(".py"):
            path = Path(spec).resolve()
            if not path.is_file():
                raise PluginError(f"--plugin {spec}: no such file")
            if str(path.parent) not in sys.path:
                sys.path.insert(0, str(path.parent))
        try:
            module = importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 -- any error in the user's module is reported as one line
            raise PluginError(f"--plugin {spec}: cannot import it ({type(error).__name__}: {error})") from None
        _LOADED[name] = module
        modules.append(module)
    return modules


def loaded_names() -> list[str]:
    """The module names of the plugins loaded in this process, in load order."""
    return list(_LOADED)


def is_plugin_module(module: str | None) -> bool:
    """Whether ``module`` is a loaded plugin or lies inside one (a plugin package's submodule)."""
    return bool(module) and any(module == name or module.startswith(f"{name}.") for name in _LOADED)


def shipped_modules() -> list[ModuleType]:
    """What a worker needs on its path for every loaded plugin: the top-level module or package of each
    (a plugin ``mypkg.entries`` ships ``mypkg``), once."""
    tops = {name.split(".")[0]: sys.modules[name.split(".")[0]] for name in _LOADED}
    return list(tops.values())


def load_plugins_first(argv: list[str] | None) -> str | None:
    """Import the ``--plugin`` modules a command line names, before its parser is built (so that their
    entries are in its help texts and in every registry its settings are checked against); the one-line
    reason when one cannot be imported (for the caller's ``parser.error``), else None."""
    import argparse

    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--plugin", action="append", default=[])
    try:
        load_plugins(early.parse_known_args(argv)[0].plugin)
    except PluginError as error:
        return str(error)
    return None


def load_from_env() -> None:
    """Import the plugins named in ``KDSWEEP_PLUGINS`` (a worker process's set-up hook)."""
    names = [name for name in os.environ.get(PLUGINS_ENV, "").split(",") if name]
    load_plugins(names)
