"""The experiment's record of itself (``sweep.json``: the settings as given, then what they resolved
to) and what a resume checks against it before any compute: the plan, the artifacts, the saved state,
and where a moved experiment's Optuna journal now is."""

from __future__ import annotations

import json
import os
import sys

import contract
from contract import SWEEP_FILE
from contract.storage import remove_partial_writes, write_bytes
from sweep.console import say
from sweep.cli import experiment_dir
from sweep.optuna_storage import local_path
from sweep.plan import SweepConfig, SweepPlan
from sweep.state_check import check_journal, check_tune_state
from trainables.artifacts import CORE_BY_KIND, ArtifactStore, code_for


def relocated(optuna_storage: str | None, recorded: dict, config: SweepConfig) -> str | None:
    """A journal the sweep was given inside its own experiment directory, where that directory is now
    (a copied or moved experiment uses its own journal, never its original's)."""
    path = None if optuna_storage is None else local_path(optuna_storage)
    was, now = local_path(experiment_dir(SweepConfig.from_dict(recorded))), local_path(experiment_dir(config))
    if path is None or was is None or now is None:
        return optuna_storage
    inside = os.path.relpath(os.path.abspath(path), was)
    return optuna_storage if inside.startswith("..") else os.path.join(now, inside)


def check_saved_state(exp_dir: str, optuna_url: str | None) -> None:
    """Before a resume computes anything, under the experiment's lock: the Optuna journal (a torn last
    record dropped, any other damage refused, a lock left by a killed driver removed), the temporary
    files of writes a killed driver cut off (removed), and Tune's state files (refused when
    unreadable). Raises ``DamagedStateError``."""
    journal = None if optuna_url is None else local_path(optuna_url)
    local = local_path(exp_dir)
    if journal is not None:
        note = check_journal(journal)
        if note:
            say(note)
        # Optuna's lock of the journal (a symbolic link beside it), left by a driver killed while writing:
        # Optuna would wait 30 s before taking it over. Removed only for the experiment's own journal,
        # which no one else writes while this sweep holds the experiment's lock.
        stale = journal + ".lock"
        if local is not None and os.path.dirname(os.path.abspath(journal)) == os.path.abspath(local) \
                and os.path.lexists(stale):
            os.unlink(stale)
            say(f"removed the Optuna journal's lock {stale}, left by a driver that stopped while writing the journal")
    if local is not None:
        removed = remove_partial_writes(local)
        if removed:
            say(f"removed {removed} temporary file{'s' if removed > 1 else ''} left in {local} by a write that was cut "
                "off (the files they were to replace are whole, as they were before it)")
        check_tune_state(local)


def versions() -> dict:
    """The versions of this package and of what it runs on, recorded with every sweep."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"kdsweep": contract.__version__, "python": sys.version.split()[0]}
    for package in ("torch", "torchvision", "ray", "optuna", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def write_sweep_file(plan: SweepPlan, exp_dir: str, *, artifacts_ready: bool, teacher_metrics: dict | None = None) -> None:
    """``sweep.json``: the settings as given, then what they resolved to (recipe, artifact keys, code
    fingerprints, versions), so a resumed sweep runs exactly this plan or refuses."""
    record = {
        **plan.config.to_dict(),
        "resolved": {
            **plan.resolved(),
            "score_epochs": score_epochs(plan),
            "code": {kind: code_for(kind) for kind in CORE_BY_KIND},  # each kind's core; the keys hold the rest
            "versions": versions(),
            "artifacts_ready": artifacts_ready,
            "teacher_metrics": teacher_metrics or {},  # the report's reference line, read without the artifacts
        },
    }
    write_bytes(f"{exp_dir}/{SWEEP_FILE}", json.dumps(record, indent=2).encode())


def score_epochs(plan: SweepPlan) -> dict:
    """The training epoch each method scores at (EL2N/GraNd early, forgetting at the end; None for
    random and precomputed scores)."""
    from sweep.stages import score_request
    from trainables.scorers import SCORERS

    replicate = plan.config.replicates[0]
    return {m: SCORERS.get(m).score_epoch(score_request(plan, m, replicate)) for m in plan.scored_methods}


def check_recorded_plan(plan: SweepPlan, recorded: dict, store: ArtifactStore) -> None:
    """Refuse to resume when this code would produce other teachers or scores than the sweep started
    with, or when an artifact the sweep already computed is gone from the store."""
    version = recorded.get("versions", {}).get("kdsweep", "unknown")
    changed, gone = [], []
    for kind, now, then in (("teacher", plan.teacher_keys, recorded.get("teacher_keys", {})),
                            ("scores", plan.score_keys, recorded.get("score_keys", {}))):
        for ref, key in then.items():
            if now.get(ref) != key:
                changed.append(f"{kind} {ref}: recorded {key}, this code gives {now.get(ref)}")
            elif recorded.get("artifacts_ready") and not store.exists(kind, key):
                gone.append(f"{kind} {ref} ({key})")
    if changed:
        raise ValueError(
            "cannot resume: the code that computes teachers or scores changed since this sweep started "
            f"(kdsweep {version}), so its trials would mix artifacts of two versions:\n  - " + "\n  - ".join(changed)
            + "\nResume with the code the sweep started with, or start a new sweep with another --name."
        )
    if gone:
        raise ValueError(
            f"cannot resume: artifacts this sweep computed are gone from {store.root}:\n  - " + "\n  - ".join(gone)
            + "\nPoint --artifacts at the cache that holds them (sweep.json names the keys), or start a new sweep "
            "with another --name."
        )
