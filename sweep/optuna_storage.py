"""Optuna storages: which URL means which backend, opening one, and checking it before compute.

- an SQLAlchemy URL (``sqlite:///runs/optuna.db``, ``postgresql://...``): ``RDBStorage``;
- a path or a ``file://`` URL: a journal file (``JournalFileBackend``), which optuna-dashboard opens.

The default is a journal file inside the experiment directory.
"""

from __future__ import annotations

import os

from contract import OPTUNA_JOURNAL

FILE_SCHEME = "file://"


def default_optuna_url(experiment_dir: str) -> str | None:
    """The journal file in a local (or ``file://``) experiment directory; None for a remote one,
    where the user names a shared storage (a journal needs a POSIX file system)."""
    local = local_path(experiment_dir)
    return None if local is None else os.path.join(local, OPTUNA_JOURNAL)


def local_path(location: str) -> str | None:
    """The local path of a plain path or a ``file://`` URL; None for any other URI."""
    if location.startswith(FILE_SCHEME):
        return location[len(FILE_SCHEME):]
    return None if "://" in location else location


def is_journal(url: str) -> bool:
    return local_path(url) is not None


def open_optuna_storage(url: str):
    import optuna

    path = local_path(url)
    if path is None:
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend

    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(path))


def check_optuna_storage(url: str) -> None:
    """Raise ``ValueError`` saying why ``url`` cannot hold the sweep's studies (before any compute).

    A journal: its folder can be created and written. A database: it opens (which creates Optuna's
    tables in a new one) and answers a query."""
    path = local_path(url)
    try:
        if path is not None:
            folder = os.path.dirname(os.path.abspath(path)) or "."
            os.makedirs(folder, exist_ok=True)
            if not os.access(folder, os.W_OK):
                raise PermissionError(f"{folder} is not writable")
            if os.path.exists(path) and not os.access(path, os.W_OK):
                raise PermissionError(f"{path} is not writable")
        else:
            storage = open_optuna_storage(url)
            storage.get_all_studies()
    except Exception as error:  # noqa: BLE001 -- any failure here means the storage cannot be used
        raise ValueError(f"the Optuna storage {url!r} cannot be used: {type(error).__name__}: {error}") from None
