"""Content-addressed artifact cache: teacher checkpoints, score tables, per-run score results.

An artifact's key is a hash of everything that produced it (dataset fingerprint and split,
architecture, recipe, seeds, method and options, and the code that computes it), so the same request
finds the same artifact and any change of input gives a new key.

The code part (``code_fingerprint``) hashes the source of every module an artifact kind depends on
(``CODE_BY_KIND``), normalised to its syntax tree without docstrings: editing ``trainables.train.fit``,
the loader or a model gives new keys, while a comment, a docstring or reformatting keeps them. A whole
module is the unit, so an edit to one scorer also recomputes the others' tables: a spurious recompute
costs minutes, a stale artifact silently wrong answers. A test adds each module a producer imports
to ``CODE_BY_KIND``, or fails.

Storage is a local directory by default or any fsspec URI (``s3://bucket/prefix``, ``gs://...``, an
NFS path, ``memory://`` in tests). Each artifact is **one file**, ``ROOT/<kind>/<key>.art``:

    8 bytes   little-endian length of the header
    header    JSON: key, kind, inputs, sha256 and size of the payload, created, producer's metadata
    payload   the bytes (a torch checkpoint, an npz table, ...)
    32 bytes  sha256 of everything before it (header included, so a damaged header is caught too)

One file makes publication atomic everywhere: locally it is written under a temporary name and
renamed into place (``os.replace``); on an object store a single PUT is atomic. Two workers producing
the same key at once both compute, and the last rename (or PUT) wins with a complete file of its own.
Every read checks the payload's sha256; a corrupt or truncated file is reported, removed, and
treated as missing, so the caller recomputes it and never uses it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import logging
import os
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)

ARTIFACTS_ENV = "KDSWEEP_ARTIFACTS"
_HEADER_LENGTH = struct.Struct("<Q")
_DIGEST_SIZE = 32


class CorruptArtifactError(ValueError):
    """An artifact file whose header or checksum does not verify."""


def default_store_root() -> str:
    return os.environ.get(ARTIFACTS_ENV, "artifacts")


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.ndarray, tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"cannot put {type(value).__name__} into an artifact key")


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_jsonable)


# The project modules whose code decides an artifact's content (see the module docstring).
TRAINING_CODE = (
    "trainables.datasets", "trainables.loader", "trainables.models", "trainables.recipe", "trainables.seeding",
    "trainables.train",
)
CODE_BY_KIND = {
    "teacher": (*TRAINING_CODE, "trainables.teacher"),
    "scores": (*TRAINING_CODE, "trainables.scores"),
}


def _module_source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"cannot find the source of {module}")
    return Path(spec.origin).read_text()


def normalised_source(text: str) -> str:
    """The source's syntax tree without docstrings: comments and layout do not change it."""
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@functools.lru_cache(maxsize=None)
def code_fingerprint(modules: Iterable[str]) -> str:
    """A hash of the normalised source of ``modules`` (a tuple of module names)."""
    digest = hashlib.sha256()
    for module in sorted(modules):
        digest.update(module.encode() + b"\0" + normalised_source(_module_source(module)).encode() + b"\0")
    return digest.hexdigest()[:16]


def code_for(kind: str) -> str:
    """The code fingerprint of an artifact kind (part of its key's inputs)."""
    return code_fingerprint(CODE_BY_KIND[kind])


def artifact_key(kind: str, inputs: dict) -> str:
    return hashlib.sha256(canonical_json({"kind": kind, "inputs": inputs}).encode()).hexdigest()[:32]


@dataclass
class Artifact:
    key: str
    kind: str
    payload: bytes
    header: dict

    @property
    def meta(self) -> dict:
        return self.header["meta"]


def encode(kind: str, key: str, inputs: dict, payload: bytes, meta: dict) -> tuple[dict, bytes]:
    """(header, file bytes) of an artifact."""
    header = {
        "format": 1,
        "key": key,
        "kind": kind,
        "inputs": inputs,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
        "created": time.time(),
        "meta": meta,
    }
    header_bytes = canonical_json(header).encode()
    body = _HEADER_LENGTH.pack(len(header_bytes)) + header_bytes + payload
    return header, body + hashlib.sha256(body).digest()


def decode(data: bytes) -> tuple[dict, bytes]:
    """Split and verify an artifact file; raises ``CorruptArtifactError`` on any mismatch."""
    if len(data) < _HEADER_LENGTH.size + _DIGEST_SIZE:
        raise CorruptArtifactError("file too short")
    body, digest = data[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptArtifactError("checksum mismatch (damaged or truncated file)")
    (length,) = _HEADER_LENGTH.unpack_from(body)
    start = _HEADER_LENGTH.size
    if start + length > len(body):
        raise CorruptArtifactError("file shorter than its header")
    try:
        header = json.loads(body[start : start + length])
    except ValueError as error:
        raise CorruptArtifactError(f"unreadable header: {error}") from None
    payload = body[start + length :]
    if len(payload) != header.get("size") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CorruptArtifactError("payload does not match the checksum in its header")
    return header, payload


class ArtifactStore:
    """Artifacts under a local directory or an fsspec URI (see the module docstring)."""

    def __init__(self, root: str | os.PathLike | None = None):
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.root = str(root if root is not None else default_store_root())
        self.fs, self._base = fsspec.core.url_to_fs(self.root)
        self._local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"

    def path(self, kind: str, key: str) -> str:
        return f"{self._base.rstrip('/')}/{kind}/{key}.art"

    def get(self, kind: str, key: str) -> Artifact | None:
        """The verified artifact, or None when absent. A corrupt entry is logged, removed, None."""
        path = self.path(kind, key)
        try:
            with self.fs.open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            header, payload = decode(data)
            if header.get("key") != key or header.get("kind") != kind:
                raise CorruptArtifactError("header names another artifact")
        except CorruptArtifactError as error:
            log.warning("corrupt artifact %s (%s): removed, it will be recomputed", path, error)
            self._remove(path)
            return None
        return Artifact(key, kind, payload, header)

    def exists(self, kind: str, key: str) -> bool:
        """Whether the store holds a file for this key (not read or verified: ``get`` does that when the
        artifact is used, and recomputes a corrupt one)."""
        return self.fs.exists(self.path(kind, key))

    def put(self, kind: str, key: str, inputs: dict, payload: bytes, meta: dict) -> Artifact:
        header, data = encode(kind, key, inputs, payload, meta)
        path = self.path(kind, key)
        if self._local:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        else:
            # Object stores publish a single PUT atomically; a unique temporary name is not needed.
            self.fs.makedirs(os.path.dirname(path), exist_ok=True)
            self.fs.pipe_file(path, data)
        return Artifact(key, kind, payload, header)

    def get_or_create(
        self, kind: str, inputs: dict, produce: Callable[[], tuple[bytes, dict]]
    ) -> tuple[Artifact, bool]:
        """(artifact, was_cached): the stored artifact for ``inputs``, or ``produce()``'s
        (payload, meta) stored under its key."""
        key = artifact_key(kind, inputs)
        found = self.get(kind, key)
        if found is not None:
            return found, True
        payload, meta = produce()
        return self.put(kind, key, inputs, payload, meta), False

    def keys(self, kind: str) -> list[str]:
        folder = f"{self._base.rstrip('/')}/{kind}"
        try:
            names = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        return sorted(os.path.basename(n)[: -len(".art")] for n in names if n.endswith(".art"))

    def _remove(self, path: str) -> None:
        try:
            self.fs.rm(path)
        except FileNotFoundError:
            pass
