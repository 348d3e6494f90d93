"""Small files (results tables, sweep settings, reports) on a local path or any fsspec URI.

One pair of helpers for the sweep and the analysis, so that ``s3://``, ``gs://``, NFS and
``memory://`` (tests) all go through the same two functions; and the one local file that is written
whole or not at all (``WholeFile``: these helpers' and Tune's, ``sweep.ray_adapter.experiment_fs``).
"""

from __future__ import annotations

import os
import re
import sys
import uuid

# A file being written goes first to a temporary file beside it, named with this mark, the writer's
# process and a random part; a writer killed mid-write leaves one behind (remove_partial_writes).
TEMPORARY_MARK = ".tmp-"
_PARTIAL = re.compile(re.escape(TEMPORARY_MARK) + r"\d+(-[0-9a-f]{8})?$")  # without the random part: older versions


class WholeFile:
    """A local file being written at ``path``, which appears only whole: the bytes go to a temporary
    file beside it, flushed to disk and renamed over ``path`` on a close. A close while an exception
    propagates (a write that failed, a disk that filled, the writer's own error inside its ``with``)
    drops the temporary file and leaves ``path`` as it was. A file object (write, flush, close), so
    pyarrow can wrap it too (``sweep.ray_adapter.experiment_fs``: Tune's writes)."""

    def __init__(self, path: str):
        self.path = path
        self.temporary = f"{path}{TEMPORARY_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.handle = open(self.temporary, "wb")
        self.failed = False

    def __enter__(self) -> "WholeFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # sees the propagating exception, if any (sys.exc_info)

    @property
    def closed(self) -> bool:
        return self.handle.closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.handle.tell()

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except BaseException:
            self.failed = True
            raise

    def flush(self) -> None:
        self.handle.flush()

    def __del__(self) -> None:
        # dropped without a close: a writer that gave up part way (pyarrow's copy_files lets go of its
        # output stream unclosed when a read of its source fails), so not whole: ``path`` stays as it was
        handle = getattr(self, "handle", None)  # None when the temporary file could not be opened
        if handle is not None and not handle.closed:
            handle.close()
            _unlink(self.temporary)

    def close(self) -> None:
        if self.handle.closed:
            return
        whole = not self.failed and sys.exc_info()[0] is None
        try:
            if whole:
                self.handle.flush()
                os.fsync(self.handle.fileno())
            self.handle.close()
            if whole:
                os.replace(self.temporary, self.path)
                return
        except BaseException:
            self.handle.close()
            _unlink(self.temporary)
            raise
        _unlink(self.temporary)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_partial_writes(folder: str) -> int:
    """Remove the temporary files that writers killed mid-write left under the local ``folder`` (the
    files they were replacing are as they were). Call only while no one else writes there. Returns
    how many were removed."""
    removed = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            if _PARTIAL.search(name):
                os.unlink(os.path.join(parent, name))
                removed += 1
    return removed


def read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist."""
    import fsspec

    try:
        with fsspec.open(path, "r") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):  # a file where a folder should be: nothing there either
        return None


def write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path``, creating its folder first (a no-op on object stores).

    Never a half-written file: on a local or NFS path the data go to a temporary file beside it,
    flushed to disk, which then replaces ``path`` in one rename, so a full disk, a crash or a second
    signal mid-write leaves the previous file whole (and no temporary file behind). An object store
    replaces an object in one PUT."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, local = fsspec.core.url_to_fs(path)
    parent = local.rsplit("/", 1)[0] if "/" in local else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if not isinstance(fs, LocalFileSystem):
        with fs.open(local, "wb") as handle:
            handle.write(data)
        return
    with WholeFile(local) as handle:
        handle.write(data)


def check_writable(location: str) -> None:
    """Raise ``PermissionError`` unless a file can be written into the folder ``location`` (created if
    missing) and removed again: checked before any compute, so a sweep never trains for nothing."""
    import fsspec

    probe = f"{location.rstrip('/')}/.kdsweep-write-check-{os.getpid()}"
    try:
        write_bytes(probe, b"ok")
        fs, local = fsspec.core.url_to_fs(probe)
        fs.rm(local)
    except Exception as error:  # noqa: BLE001 -- any failure means the location cannot be used
        raise PermissionError(f"cannot write to {location}: {type(error).__name__}: {error}") from None
