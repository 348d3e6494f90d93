"""An experiment's saved state, checked before ``--resume`` computes anything.

- The Optuna journal (the default Optuna storage): every line must be one whole journal record, and
  Optuna must be able to replay them. A torn last record (what a crash or a power cut during an
  append leaves: the record's bytes without its closing newline) is dropped, with one line saying
  so; Optuna itself skips such a line when it reads, but the next append would glue a new record
  onto it and damage the journal for good. Any other damage is refused with the file, the line and
  what to do, and nothing is ever appended to a damaged journal.
- Tune's state (``tuner.pkl``, the searcher's state, the experiment state): each file must read
  back, or the resume is refused naming the file. Tune writes a local experiment directory one
  whole file at a time (``sweep.ray_adapter.experiment_fs``), so a killed driver does not leave a
  file cut short here; what is refused is damage from elsewhere (a disk, a hand, an older version).
"""

from __future__ import annotations

import glob
import json
import os
import pickle


class DamagedStateError(ValueError):
    """A file of the experiment's saved state is damaged beyond what can be repaired safely."""


def check_journal(path: str) -> str | None:
    """Check the Optuna journal at ``path`` (a local file); drop a torn last record. Returns a line
    saying what was repaired, or None; raises ``DamagedStateError`` for any other damage."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as handle:
        data = handle.read()
    lines = data.splitlines(keepends=True)
    note = None
    if lines and not lines[-1].endswith(b"\n"):
        torn = lines.pop()
        with open(path, "r+b") as handle:
            handle.truncate(len(data) - len(torn))
            handle.flush()
            os.fsync(handle.fileno())
        note = (f"repaired the Optuna journal {path}: dropped its torn last record ({len(torn)} bytes without an end, "
                "left by a crash while it was written); the operation it held was never completed")
    total = len(lines)
    for number, line in enumerate(lines, start=1):
        problem = _record_problem(line)
        if problem is not None:
            raise DamagedStateError(
                f"the Optuna journal {path} is damaged at line {number} of {total} ({problem}); nothing was written to "
                "it. Restore the file from a backup, or if that line was added to its end by something other than "
                f"this sweep, delete the line (`sed -i '{number}d' {path}`); then resume. The students that finished "
                "are also in results.csv")
    try:
        _replay(path)
    except Exception as error:  # noqa: BLE001 -- whatever Optuna cannot replay is damage
        raise DamagedStateError(
            f"the Optuna journal {path} cannot be replayed by Optuna ({type(error).__name__}: {error}); nothing was "
            "written to it. Restore the file from a backup, or start a new sweep with another --name") from None
    return note


def _record_problem(line: bytes) -> str | None:
    """Why ``line`` is not one journal record, or None."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return f"not a JSON record: {error.msg if hasattr(error, 'msg') else error}"
    if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
        return "a JSON value that is not an Optuna journal record (no op_code)"
    return None


def _replay(path: str) -> None:
    """Replay every record with Optuna, reading only."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(path))
    for study in storage.get_all_studies():
        storage.get_all_trials(study._study_id, deepcopy=False)


def check_tune_state(experiment_dir: str) -> None:
    """Raise ``DamagedStateError`` when one of Tune's state files in a local experiment directory
    cannot be read back (checked before compute; Tune would fail on it after the stages)."""
    checks = [("tuner.pkl", _unpickle)]
    checks += [(os.path.basename(p), _unpickle) for p in _newest(experiment_dir, "searcher-state-*.pkl")]
    checks += [(os.path.basename(p), _unpickle) for p in _newest(experiment_dir, "search_gen_state-*.json")]
    checks += [(os.path.basename(p), _json) for p in _newest(experiment_dir, "experiment_state-*.json")]
    for name, read in checks:
        path = os.path.join(experiment_dir, name)
        if not os.path.exists(path):
            continue
        try:
            read(path)
        except Exception as error:  # noqa: BLE001 -- unreadable for whatever reason
            raise DamagedStateError(
                f"Tune's state file {path} is damaged ({type(error).__name__}: {error}), so the sweep cannot continue "
                "where it stopped. Restore the experiment directory from a backup, or start a new sweep with another "
                "--name (the students that finished are in results.csv and the Optuna storage)") from None


def _newest(folder: str, pattern: str) -> list[str]:
    found = sorted(glob.glob(os.path.join(folder, pattern)))
    return found[-1:]


def _unpickle(path: str) -> None:
    with open(path, "rb") as handle:
        pickle.load(handle)


def _json(path: str) -> None:
    with open(path, "rb") as handle:
        json.load(handle)
