"""One small registry class for every kind of thing a user picks by name: datasets, models, pruning
methods (scorers), sweep profiles, alpha designs, among others.

Each kind gets its own ``Registry`` instance; entries are added with the instance's ``register``
decorator, in the style of timm's ``register_model``. Registering a name twice is an error, and an
unknown name raises ``UnknownEntryError`` listing the registered ones.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownEntryError(KeyError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise print the message quoted
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownEntryError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def in_order(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in the order they were registered (where order means something, such
        as the report's figures)."""
        return list(self._entries.items())

    def __contains__(self, name: str) -> bool:
        return name in self._entries
