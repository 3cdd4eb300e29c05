"""How a circuit breaker keeps its state in a :class:`StateStore`.

:class:`BreakerStateStore` saves and loads one breaker's state; the functions
below turn it into bytes and back. The rule that turns a saved open window into
a restored one, :func:`restored_remaining`, is explained in :mod:`.breaker`.

The format is a small JSON object, versioned so that a later release can read
what an earlier one wrote::

    {"v": 1, "state": "open", "remaining_ns": 30000000000,
     "deadline_wall_ns": 1700000030000000000}

``remaining_ns`` is how long the breaker had left to stay open when saved, and
``deadline_wall_ns`` the wall-clock instant at which that ends; both are 0 for
states other than open.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass

from .state_store import StateStore

__all__ = [
    "BreakerStateStore",
    "SavedState",
    "decode",
    "encode",
    "restored_remaining",
]

_VERSION = 1
_STATES = frozenset({"closed", "open", "half_open", "forced_open", "disabled"})


@dataclass(frozen=True, slots=True)
class SavedState:
    """A breaker state read back from a store."""

    state: str
    remaining_ns: int
    deadline_wall_ns: int


def encode(state: str, remaining_ns: int, wall_now_ns: int) -> bytes:
    """The stored form of ``state`` with ``remaining_ns`` left open."""
    body = {
        "v": _VERSION,
        "state": state,
        "remaining_ns": remaining_ns,
        "deadline_wall_ns": wall_now_ns + remaining_ns if remaining_ns else 0,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode(raw: bytes) -> SavedState | None:
    """The saved state, or ``None`` if the bytes are not a state this reads."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("v") != _VERSION:
        return None
    state = body.get("state")
    remaining = body.get("remaining_ns")
    deadline = body.get("deadline_wall_ns")
    if state not in _STATES or not _is_count(remaining) or not _is_int(deadline):
        return None
    assert isinstance(state, str)
    assert isinstance(remaining, int) and isinstance(deadline, int)
    return SavedState(state, remaining, deadline)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_count(value: object) -> bool:
    return _is_int(value) and value >= 0  # type: ignore[operator]


def restored_remaining(saved: SavedState, wall_now_ns: int) -> int:
    """How long a restored open breaker stays open.

    ``min(saved_remaining, max(0, saved_wall_deadline - wall_now))``: never more
    than was left at the save, and no later than the saved wall-clock deadline.
    """
    return min(saved.remaining_ns, max(0, saved.deadline_wall_ns - wall_now_ns))


class BreakerStateStore:
    """One breaker's view of a :class:`StateStore`, under ``breaker:{name}``.

    Store errors are logged at WARNING and otherwise ignored: the breaker keeps
    working in memory and only a restart loses what could not be saved.
    """

    def __init__(self, store: StateStore, name: str, logger: logging.Logger) -> None:
        self._store = store
        self._name = name
        self.key = f"breaker:{name}"
        self._logger = logger
        self._lock = threading.Lock()
        self._saved_seq = 0

    def save(self, seq: int, payload: bytes) -> None:
        """Save ``payload`` unless a newer one (higher ``seq``) was saved already.

        Transitions reach here outside the breaker's lock and so possibly out of
        order from different threads; only a newer state may overwrite an older.
        """
        with self._lock:
            if seq <= self._saved_seq:
                return
            self._saved_seq = seq
            try:
                self._store.save_state(self.key, payload)
            except Exception:
                self._logger.warning(
                    "circuit breaker %s: could not save state",
                    self._name,
                    exc_info=True,
                )

    def load(self) -> SavedState | None:
        """The saved state, or ``None`` when there is none or it is unreadable."""
        try:
            raw = self._store.load_state(self.key)
        except Exception:
            self._logger.warning(
                "circuit breaker %s: could not load state; starting closed",
                self._name,
                exc_info=True,
            )
            return None
        if raw is None:
            return None
        saved = decode(raw)
        if saved is None:
            self._logger.warning(
                "circuit breaker %s: saved state is unreadable; starting closed",
                self._name,
            )
        return saved
