"""Exact conversions between user-facing durations and integer nanoseconds.

Users pass ``timedelta`` values or plain seconds (``1``, ``0.1``); internally every
duration is an exact integer count of nanoseconds, so that arithmetic on delays and
deadlines never accumulates floating-point error.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

from .errors import ConfigError

NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000
NS_PER_US = 1_000

Duration = timedelta | int | float


def to_ns(value: Duration, field: str = "duration") -> int:
    """Convert a ``timedelta`` or a number of seconds to integer nanoseconds.

    Floats are read through their shortest decimal representation, so ``0.1`` is
    exactly 100,000,000 ns rather than the binary approximation's neighbour.

    Raises:
        ConfigError: the value is not a duration, or is NaN or infinite.
    """
    if isinstance(value, timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        return micros * NS_PER_US
    if isinstance(value, bool):
        raise ConfigError(field, f"expected a duration, got {value!r}")
    if isinstance(value, int):
        return value * NS_PER_SECOND
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(field, f"must be a finite duration, got {value!r}")
        return round(Decimal(repr(value)) * NS_PER_SECOND)
    raise ConfigError(field, f"expected a timedelta or seconds, got {value!r}")


def ns_to_timedelta(ns: int | Fraction) -> timedelta:
    """Round a nanosecond count once, to the microsecond a ``timedelta`` can hold."""
    micros = round(Fraction(ns) / NS_PER_US)
    return timedelta(microseconds=micros)


def ns_to_seconds(ns: int) -> float:
    """Nanoseconds as float seconds, for display and for Prometheus samples."""
    return ns / NS_PER_SECOND


def positive_ns(value: Duration, field: str, *, allow_zero: bool = False) -> int:
    """Convert and check that a duration is positive (or zero when allowed).

    Raises:
        ConfigError: naming ``field`` when the duration is negative or zero.
    """
    ns = to_ns(value, field)
    if ns < 0 or (ns == 0 and not allow_zero):
        bound = "zero or positive" if allow_zero else "positive"
        raise ConfigError(field, f"must be {bound}, got {value!r}")
    return ns
