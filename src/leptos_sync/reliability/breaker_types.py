"""The values a circuit breaker hands out: its states, statistics and permits.

A :class:`Permit` is the right to make one call; the breaker that issued it
learns the call's outcome through it. The breaker itself lives in :mod:`.breaker`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from ..durations import ns_to_timedelta

if TYPE_CHECKING:
    from .breaker import CircuitBreaker

__all__ = [
    "BreakerState",
    "BreakerStatistics",
    "BreakerTransition",
    "Event",
    "Permit",
    "rejection_message",
]

SUCCESS, FAILURE, RELEASE = 0, 1, 2


class BreakerState(enum.Enum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """One state change, as passed to listeners.

    Attributes:
        breaker: the breaker's name.
        old: the state left.
        new: the state entered.
        monotonic_ns: when, on the breaker's clock.
    """

    breaker: str
    old: BreakerState
    new: BreakerState
    monotonic_ns: int


@dataclass(frozen=True, slots=True)
class BreakerStatistics:
    """A snapshot of a breaker's counters.

    Attributes:
        name: the breaker's name.
        state: the state at the time of the snapshot.
        consecutive_failures: failures since the last success while closed.
        calls: admitted calls that have finished (successes, failures and
            excluded together).
        successes: admitted calls that succeeded.
        failures: admitted calls that failed (slow calls included).
        excluded: admitted calls that ended with an excluded error or were
            cancelled, counting as neither.
        rejections: calls refused with ``CircuitOpenError``.
        transitions: state changes so far.
        opened_at_ns: when the breaker last opened (monotonic), if it has.
        half_open_in_flight: trial calls running now.
    """

    name: str
    state: BreakerState
    consecutive_failures: int
    calls: int
    successes: int
    failures: int
    excluded: int
    rejections: int
    transitions: int
    opened_at_ns: int | None
    half_open_in_flight: int


@dataclass(frozen=True, slots=True)
class Event:
    """A transition (or, with no ``old`` state, a checkpoint) made under the
    lock, whose effects run after it."""

    old: BreakerState | None
    new: BreakerState
    monotonic_ns: int
    seq: int
    payload: bytes | None


class Permit:
    """The right to make one call through a breaker; report how it went once.

    Use it as a context manager (success on a normal exit, failure or exclusion
    on an error, released on cancellation) or call exactly one of
    :meth:`success`, :meth:`failure` and :meth:`release`. Later reports are
    ignored.
    """

    __slots__ = ("_breaker", "_done", "_epoch", "_probe", "_start_ns")

    def __init__(
        self, breaker: CircuitBreaker, epoch: int, probe: int, start_ns: int
    ) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self._probe = probe
        self._start_ns = start_ns
        self._done = False

    @property
    def is_trial(self) -> bool:
        """Whether this is one of the half-open state's trial calls."""
        return self._probe != 0

    def success(self) -> None:
        """The call succeeded."""
        self._report(SUCCESS)

    def failure(self, error: BaseException | None = None) -> None:
        """The call failed; an excluded ``error`` counts as neither."""
        if error is not None and isinstance(error, self._breaker._excluded):
            self._report(RELEASE)
        else:
            self._report(FAILURE)

    def release(self) -> None:
        """The call did not happen or was cancelled: give the permit back."""
        self._report(RELEASE)

    def _report(self, outcome: int) -> None:
        if not self._done:
            self._done = True
            self._breaker._record(self._epoch, self._probe, self._start_ns, outcome)

    def __enter__(self) -> Permit:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            self.success()
        elif isinstance(error, Exception):
            self.failure(error)
        else:
            self.release()


def rejection_message(
    name: str, state: BreakerState, remaining_ns: int, trial_calls: int
) -> str:
    """What a rejected caller is told: why, and when to come back."""
    if state is BreakerState.OPEN:
        return (
            f"circuit breaker {name!r} is open; it will admit a trial "
            f"call in {ns_to_timedelta(remaining_ns)}"
        )
    if state is BreakerState.HALF_OPEN:
        return (
            f"circuit breaker {name!r} is half-open and all "
            f"{trial_calls} trial calls are taken; try again shortly"
        )
    return f"circuit breaker {name!r} was forced open; reset() it to close"
