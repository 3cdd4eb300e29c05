"""A retry budget: a token bucket that stops retry storms across many calls."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["RetryBudget", "RetryBudgetStatistics"]

_MILLI = 1000


@dataclass(frozen=True, slots=True)
class RetryBudgetStatistics:
    """A snapshot of a :class:`RetryBudget`.

    Attributes:
        tokens: the tokens left (a multiple of 0.001).
        max_tokens: the capacity.
        successes: successful attempts recorded.
        failures: failed attempts recorded.
        denials: failures after which the budget refused a retry.
    """

    tokens: float
    max_tokens: int
    successes: int
    failures: int
    denials: int


class RetryBudget:
    """A token bucket that stops retry storms, shared by many calls.

    The bucket starts full. Every failed attempt that could be retried takes one
    token; every success gives back ``success_refund`` tokens (up to the
    capacity). A retry is allowed only while more than half the capacity is
    left, so when most calls fail the clients stop multiplying the load. Tokens
    are kept in thousandths, exactly. The budget is thread-safe and can be
    shared across event loops.

    Args:
        max_tokens: the capacity, a positive integer.
        success_refund: tokens returned per success, between 0 and ``max_tokens``
            (precision 0.001).

    Raises:
        ConfigError: naming the offending field.
    """

    def __init__(self, max_tokens: int = 10, success_refund: float = 0.1) -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            raise ConfigError("max_tokens", f"expected an integer, got {max_tokens!r}")
        if max_tokens <= 0:
            raise ConfigError("max_tokens", f"must be positive, got {max_tokens}")
        refund = round(success_refund * _MILLI)
        if not 0 < refund <= max_tokens * _MILLI:
            raise ConfigError(
                "success_refund",
                f"must be in (0, max_tokens] with 0.001 precision, "
                f"got {success_refund!r}",
            )
        self._lock = threading.Lock()
        self._capacity = max_tokens * _MILLI
        self._refund = refund
        self._tokens = self._capacity
        self._successes = self._failures = self._denials = 0

    def on_success(self) -> None:
        """Record a successful attempt: refund part of a token."""
        with self._lock:
            self._successes += 1
            self._tokens = min(self._capacity, self._tokens + self._refund)

    def on_failure(self) -> bool:
        """Record a failed attempt, taking a token; say whether a retry may follow."""
        with self._lock:
            self._failures += 1
            self._tokens = max(0, self._tokens - _MILLI)
            allowed = self._tokens * 2 > self._capacity
            self._denials += not allowed
            return allowed

    def statistics(self) -> RetryBudgetStatistics:
        with self._lock:
            return RetryBudgetStatistics(
                tokens=self._tokens / _MILLI,
                max_tokens=self._capacity // _MILLI,
                successes=self._successes,
                failures=self._failures,
                denials=self._denials,
            )

    def __repr__(self) -> str:
        with self._lock:
            tokens = self._tokens / _MILLI
        return f"RetryBudget(tokens={tokens}, max_tokens={self._capacity // _MILLI})"
