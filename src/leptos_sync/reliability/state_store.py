"""Where reliability components keep state that must survive a restart.

A :class:`StateStore` maps string keys to bytes. The local SQLite store implements
it; :class:`MemoryStateStore` is the in-process one, for tests and for processes
that need no persistence.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

__all__ = ["MemoryStateStore", "StateStore"]


@runtime_checkable
class StateStore(Protocol):
    """A small durable key-value store for component state."""

    def load_state(self, key: str) -> bytes | None:
        """The bytes last saved under ``key``, or ``None``."""
        ...

    def save_state(self, key: str, value: bytes) -> None:
        """Replace what is stored under ``key``."""
        ...


class MemoryStateStore:
    """A thread-safe :class:`StateStore` held in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, bytes] = {}

    def load_state(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def save_state(self, key: str, value: bytes) -> None:
        with self._lock:
            self._data[key] = bytes(value)

    def keys(self) -> list[str]:
        """Every key saved so far, sorted."""
        with self._lock:
            return sorted(self._data)

    def __repr__(self) -> str:
        return f"MemoryStateStore(keys={self.keys()!r})"
