"""Content-addressed artifact cache: teacher checkpoints, score tables, per-run score results.

An artifact's key is a hash of everything that produced it (dataset fingerprint and split,
architecture, recipe, seeds, method and options, and the code that computes it), so the same request
finds the same artifact and any change of input gives a new key.

The code part (``code_for``) hashes the code an artifact kind depends on, normalised to its syntax
tree without docstrings: editing ``trainables.train.fit``, the loader or the model a teacher uses
gives new keys, while a comment, a docstring or reformatting keeps them. The shared training core
(``CORE_BY_KIND``) is hashed as whole modules; the modules that hold registry entries (models,
datasets, scorers) are hashed one definition at a time, from the entries the artifact uses and what
they call. So registering a new model, scorer or dataset, or editing one that an artifact does not
use, leaves its key as it was: extending the project keeps the cache. A spurious recompute costs
minutes, a stale artifact silently wrong answers, so when in doubt the walk takes a definition in.

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
import copy
import dataclasses
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from contract.plugins import is_plugin_module

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


# What code decides an artifact's content (see the module docstring). The shared training core of
# each kind is hashed as whole modules; everything else is reached from it and from the registry
# entries the artifact uses, one definition at a time (``code_for``).
CORE_BY_KIND = {
    "teacher": ("trainables.device", "trainables.loader", "contract.recipe", "contract.seeding", "trainables.train",
                "trainables.teacher"),
    "scores": ("trainables.device", "trainables.loader", "contract.recipe", "contract.seeding", "trainables.train"),
}
# Where a kind's producer lives outside its core: a root of the walk like the entries.
PRODUCERS = {"scores": (("trainables.scores", "compute_scores"),)}
# Modules whose code never changes what is computed: storage and caching, the registry mechanism,
# the command lines and their defaults. The walk does not enter them.
NO_CONTENT = ("trainables.artifacts", "contract.storage", "contract.registry", "trainables.cli",
              "search_spaces.defaults")
PROJECT_PACKAGES = ("contract", "trainables", "search_spaces", "sweep", "analysis")


def _module_source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"cannot find the source of {module}")
    return Path(spec.origin).read_text()


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def normalised_source(text: str) -> str:
    """The source's syntax tree without docstrings: comments and layout do not change it."""
    return ast.dump(_strip_docstrings(ast.parse(text)))


def _ours(module: str | None) -> bool:
    """The project's code, or a user's plugin (``contract.plugins``): hashed by the walk."""
    return bool(module) and (module.split(".")[0] in PROJECT_PACKAGES or is_plugin_module(module))


def _stable_repr(value) -> str | None:
    """The repr of a constant that is the same in every process, or None for anything else."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        items = [_stable_repr(v) for v in value]
        return None if None in items else f"{type(value).__name__}({', '.join(items)})"
    if isinstance(value, (set, frozenset)):
        items = [_stable_repr(v) for v in value]
        return None if None in items else f"{type(value).__name__}({', '.join(sorted(items))})"
    if isinstance(value, dict):
        items = [(_stable_repr(k), _stable_repr(v)) for k, v in value.items()]
        return None if any(None in pair for pair in items) else "{" + ", ".join(f"{k}: {v}" for k, v in sorted(items)) + "}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        inner = _stable_repr(fields)
        return None if inner is None else f"{type(value).__qualname__}{inner}"
    return None


class _CodeWalk:
    """The definitions (functions and classes, by their syntax tree without docstrings) and the constants
    that some root objects reach through the names they use, within the project and outside the core
    modules (hashed whole) and ``NO_CONTENT``. A name is looked up in the live module, so a model that
    calls a helper brings the helper in, while the models beside it stay out. What is reached through
    an object at run time (a registry lookup, a method of an argument) is not followed: those are
    roots of their own (the registry entries an artifact uses, the dataset's class)."""

    def __init__(self, core: tuple[str, ...]):
        self.core, self.found, self._seen = set(core), {}, set()

    def add(self, value, via: str = "") -> None:
        if inspect.isfunction(value) or inspect.isclass(value):
            value = inspect.unwrap(value) if inspect.isfunction(value) else value
            module = getattr(value, "__module__", None)
            if not _ours(module) or module in self.core or module in NO_CONTENT:
                return
            if (module, value.__qualname__) not in self._seen:
                self._seen.add((module, value.__qualname__))
                self._definition(value, module)
        elif not inspect.ismodule(value) and via and (text := _stable_repr(value)) is not None:
            self.found[f"{via}="] = text

    def _definition(self, obj, module: str) -> None:
        label = f"{module}:{obj.__qualname__}"
        node = _find_definition(_parsed(module), obj.__qualname__)
        if node is None:  # not in the module's text (made at run time): its compiled code stands for it
            code = getattr(obj, "__code__", None)
            self.found[label] = repr(_code_signature(code)) if code is not None else obj.__qualname__
            return
        node = _strip_docstrings(copy.deepcopy(node))
        self.found[label] = ast.dump(node)
        namespace = vars(importlib.import_module(module))
        if inspect.isfunction(obj) and obj.__closure__:
            namespace = {**namespace, **{name: cell.cell_contents for name, cell in
                                         zip(obj.__code__.co_freevars, obj.__closure__) if _has_contents(cell)}}
        # Type annotations are left out: naming a type does not run its code.
        annotations = {id(n) for a in _annotations(node) for n in ast.walk(a)}
        for used in ast.walk(node):
            if id(used) in annotations:
                continue
            if isinstance(used, ast.Name) and used.id in namespace:
                self.add(namespace[used.id], f"{label}/{used.id}")
            elif isinstance(used, ast.Attribute) and isinstance(used.value, ast.Name) \
                    and inspect.ismodule(namespace.get(used.value.id)) and _ours(namespace[used.value.id].__name__):
                owner = namespace[used.value.id]
                if hasattr(owner, used.attr):
                    self.add(getattr(owner, used.attr), f"{label}/{used.value.id}.{used.attr}")
            elif isinstance(used, ast.ImportFrom) and used.level == 0 and _ours(used.module):
                imported = importlib.import_module(used.module)
                for alias in used.names:
                    if hasattr(imported, alias.name):
                        self.add(getattr(imported, alias.name), f"{label}/{alias.asname or alias.name}")


def _annotations(node: ast.AST) -> list:
    found = []
    for n in ast.walk(node):
        if isinstance(n, ast.arg) and n.annotation is not None:
            found.append(n.annotation)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.returns is not None:
            found.append(n.returns)
        elif isinstance(n, ast.AnnAssign):
            found.append(n.annotation)
    return found


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # a name of the enclosing function not bound yet
        return False
    return True


def _code_signature(code) -> tuple:
    return (code.co_code, code.co_names, tuple(_code_signature(c) if inspect.iscode(c) else repr(c) for c in code.co_consts))


@functools.lru_cache(maxsize=None)
def _parsed(module: str) -> ast.Module:
    return ast.parse(_module_source(module))


def _find_definition(tree: ast.Module, qualname: str):
    """The def or class statement of ``qualname`` (``f``, ``C.m``, ``f.<locals>.g``) in ``tree``."""
    node = tree
    for part in qualname.split("."):
        if part == "<locals>":
            continue
        node = next((n for n in ast.walk(node) if n is not node and isinstance(
            n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == part), None)
        if node is None:
            return None
    return node


def _core_imports(core: tuple[str, ...]) -> list:
    """What the core modules import at module level from the rest of the project."""
    found = []
    for module in core:
        for node in _parsed(module).body:
            if isinstance(node, ast.ImportFrom) and node.level == 0 and _ours(node.module) and node.module not in core:
                imported = importlib.import_module(node.module)
                found += [getattr(imported, alias.name) for alias in node.names if hasattr(imported, alias.name)]
    return found


@functools.lru_cache(maxsize=None)
def code_for(kind: str, *entries) -> str:
    """The code fingerprint of an artifact of ``kind`` (part of its key's inputs): the kind's core
    modules whole, and the definitions reached from what they import from the rest of the project,
    from the kind's producer and from ``entries``, the registry entries the artifact uses (a model's
    builder, a scorer, a dataset's loader, the dataset's class). Adding an entry beside them, or
    editing one they do not use, leaves the fingerprint as it was."""
    core = CORE_BY_KIND[kind]
    walk = _CodeWalk(core)
    roots = _core_imports(core) + [getattr(importlib.import_module(m), name) for m, name in PRODUCERS.get(kind, ())]
    for root in [*roots, *entries]:
        walk.add(root if inspect.isfunction(root) or inspect.isclass(root) else type(root))
    digest = hashlib.sha256()
    for module in sorted(core):
        digest.update(module.encode() + b"\0" + normalised_source(_module_source(module)).encode() + b"\0")
    for label, text in sorted(walk.found.items()):
        digest.update(label.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()[:16]


def forget_code() -> None:
    """Read the sources again on the next ``code_for`` (after a test edits them)."""
    _parsed.cache_clear()
    code_for.cache_clear()


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
