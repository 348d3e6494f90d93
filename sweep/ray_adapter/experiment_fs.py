"""The filesystem Tune writes a local experiment directory through: every file replaced whole.

Tune keeps an experiment's state (``tuner.pkl``, the searcher's and the search generator's state, the
experiment state naming every trial and its checkpoint) in a staging folder and copies it into the
experiment directory every few seconds; trials upload their checkpoints the same way. On a local
disk that copy (pyarrow's ``copy_files``) opens each destination file and writes into it, so a driver
killed mid-copy (kill -9, the OOM killer, a power cut) leaves a file cut short, and the resume fails
on it (``sweep.state_check`` refuses it by name rather than let Tune fail after the stages). Through
this filesystem each file is written to a temporary file beside it, flushed to disk, and renamed
over the old one when whole: a kill leaves the previous file whole and a temporary file, which the
next resume removes (``contract.storage.remove_partial_writes``); a copy whose read of its source
fails part way leaves the previous file whole too, and its temporary file goes once pyarrow drops
the unclosed stream (``contract.storage.WholeFile``). Object stores (``s3://``, ``gs://``) replace an object in
one PUT already, so a URI keeps Tune's own filesystem.
"""

from __future__ import annotations

import os
import shutil

import pyarrow
import pyarrow.fs

from contract.storage import WholeFile
from sweep.optuna_storage import local_path


def experiment_filesystem(storage_path: str) -> pyarrow.fs.FileSystem | None:
    """The filesystem for Tune's ``storage_filesystem`` at ``storage_path``: whole-file writes on a
    local path (or ``file://``), None (Tune's own) for an object store's URI."""
    if local_path(storage_path) is None:
        return None
    return pyarrow.fs.PyFileSystem(WholeFileWrites())


def storage_location(storage_path: str) -> str:
    """``storage_path`` as the path that goes with ``experiment_filesystem``: a local path without
    its ``file://``, absolute; a URI as it is."""
    path = local_path(storage_path)
    return storage_path if path is None else os.path.abspath(path)


class WholeFileWrites(pyarrow.fs.FileSystemHandler):
    """pyarrow's local filesystem, except that a file opened for writing appears only when it is
    closed whole; reads, listings, moves and deletes are the local filesystem's own."""

    def __init__(self):
        self.local = pyarrow.fs.LocalFileSystem()

    def __eq__(self, other):
        return isinstance(other, WholeFileWrites)

    def __reduce__(self):  # sent to the trials' workers inside Tune's storage context
        return WholeFileWrites, ()

    def get_type_name(self):
        return "kdsweep-whole-file-local"

    def normalize_path(self, path):
        return self.local.normalize_path(path)

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.local.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        with self.local.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            shutil.copyfileobj(source, target, 1 << 20)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_output_stream(self, path, metadata):
        return pyarrow.PythonFile(WholeFile(path), mode="w")

    def open_append_stream(self, path, metadata):
        # an append cannot be made whole-or-nothing by a rename; Tune appends to nothing in storage
        return self.local.open_append_stream(path)
