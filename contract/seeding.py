"""Deterministic seeds derived from names and indices, never from the clock."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any sequence of printable parts, stable across processes and machines.

    ``hash()`` is salted per process, so a cryptographic digest of the parts' ``repr`` is used.
    """
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
