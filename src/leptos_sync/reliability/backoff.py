"""Retry policies: how long to wait before each retry, exactly.

A policy is pure data plus arithmetic. :meth:`RetryPolicy.delay_ns` gives the wait
before retry number ``attempt`` (0-based) as an exact integer count of nanoseconds;
:meth:`RetryPolicy.sleep_ns` adds the policy's jitter, drawing from a random source
the caller passes in. Nothing here sleeps or reads a clock.

Exponential backoff is computed with rational arithmetic: ``1.6`` means exactly
8/5, the product ``initial_delay * multiplier ** attempt`` is exact, and it is
rounded once, to the nearest nanosecond (ties to even). The first attempt at which
the delay reaches ``max_delay`` is found once, with logarithms, when the policy is
built; every attempt from there on costs constant time and builds no large number,
so attempt 10,000 is as cheap as attempt 10.

Jitter modes and their bounds, for an un-jittered delay ``d``:

=================  ==================================================
``NONE``           exactly ``d`` (the default)
``FULL``           uniform in ``[0, d]``
``EQUAL``          uniform in ``[d // 2, d]``
``DECORRELATED``   uniform in ``[initial, min(max, 3 * previous)]``;
                   always within ``[initial_delay, max_delay]``
=================  ==================================================

Decorrelated jitter is the AWS "decorrelated jitter" schedule: each wait depends on
the previous one rather than on the attempt number.
"""

from __future__ import annotations

import decimal
import enum
import random
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import ClassVar

from ..durations import Duration, ns_to_timedelta, positive_ns
from ..errors import ConfigError, UsageError

__all__ = ["ExponentialPolicy", "FixedPolicy", "Jitter", "RetryPolicy"]

# Delays below the cap are kept in a table up to this many attempts; past it they
# are computed on demand (and only policies with a multiplier very close to 1
# ever get there before reaching ``max_delay``).
_TABLE_LIMIT = 256

# Digits used for the logarithms that locate the cap. Near-ties that this
# precision cannot separate are harmless: the exact value there rounds to
# ``max_delay`` either way.
_LOG_PRECISION = 60


class Jitter(enum.Enum):
    """How a policy randomises its waits (see the module docstring for bounds)."""

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"


class RetryPolicy:
    """The wait before each retry: the guide's ``RetryPolicy`` enum.

    Build one with ``RetryPolicy.Fixed(delay)`` or
    ``RetryPolicy.Exponential(initial_delay=..., max_delay=..., multiplier=2.0)``.
    Durations are ``timedelta`` values or seconds, stored as integer nanoseconds.
    Policies are immutable, hashable and compare by value.
    """

    Fixed: ClassVar[type[FixedPolicy]]
    Exponential: ClassVar[type[ExponentialPolicy]]

    __slots__ = ("_jitter",)

    _jitter: Jitter

    @property
    def jitter(self) -> Jitter:
        """The jitter mode applied by :meth:`sleep_ns`."""
        return self._jitter

    @property
    def initial_ns(self) -> int:
        """The smallest un-jittered delay, in nanoseconds."""
        raise NotImplementedError

    @property
    def max_ns(self) -> int:
        """The largest un-jittered delay, in nanoseconds."""
        raise NotImplementedError

    def delay_ns(self, attempt: int) -> int:
        """The wait before retry number ``attempt`` (0-based), without jitter.

        Raises:
            UsageError: ``attempt`` is negative.
        """
        raise NotImplementedError

    def delay(self, attempt: int) -> timedelta:
        """:meth:`delay_ns` as a ``timedelta`` (rounded to the microsecond)."""
        return ns_to_timedelta(self.delay_ns(attempt))

    def sleep_ns(
        self, attempt: int, previous_ns: int | None, rng: random.Random
    ) -> int:
        """The wait before retry ``attempt`` with the policy's jitter applied.

        Args:
            attempt: the 0-based retry number.
            previous_ns: the wait actually used before the previous retry, if any;
                only decorrelated jitter looks at it.
            rng: the random source; seed it for reproducible waits.
        """
        jitter = self._jitter
        if jitter is Jitter.NONE:
            return self.delay_ns(attempt)
        if jitter is Jitter.FULL:
            return rng.randint(0, self.delay_ns(attempt))
        if jitter is Jitter.EQUAL:
            delay = self.delay_ns(attempt)
            return rng.randint(delay // 2, delay)

        # Decorrelated: grow from the previous wait, never outside [initial, max].
        low, high = self.initial_ns, self.max_ns
        previous = low if previous_ns is None else previous_ns
        upper = min(high, max(low, previous * 3))
        return rng.randint(low, upper)

    def _key(self) -> tuple[object, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, RetryPolicy)
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, *self._key()))


def _check_attempt(attempt: int) -> None:
    if attempt < 0:
        raise UsageError(f"attempt must be 0 or more, got {attempt}")


def _check_jitter(jitter: Jitter) -> Jitter:
    if not isinstance(jitter, Jitter):
        raise ConfigError("jitter", f"expected a Jitter, got {jitter!r}")
    return jitter


class FixedPolicy(RetryPolicy):
    """The same wait before every retry (``RetryPolicy.Fixed``).

    Args:
        delay: the wait; zero retries at once.
        jitter: how to randomise the wait (none by default).

    Raises:
        ConfigError: ``delay`` is negative or not a duration.
    """

    __slots__ = ("_delay_ns",)

    def __init__(self, delay: Duration, *, jitter: Jitter = Jitter.NONE) -> None:
        self._delay_ns = positive_ns(delay, "delay", allow_zero=True)
        self._jitter = _check_jitter(jitter)

    @property
    def initial_ns(self) -> int:
        return self._delay_ns

    @property
    def max_ns(self) -> int:
        return self._delay_ns

    def delay_ns(self, attempt: int) -> int:
        _check_attempt(attempt)
        return self._delay_ns

    def _key(self) -> tuple[object, ...]:
        return (self._delay_ns, self._jitter)

    def __repr__(self) -> str:
        extra = "" if self._jitter is Jitter.NONE else f", jitter={self._jitter}"
        return f"RetryPolicy.Fixed({ns_to_timedelta(self._delay_ns)!r}{extra})"


def _as_fraction(value: int | float | Fraction, field: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float | Fraction):
        raise ConfigError(field, f"expected a number, got {value!r}")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(field, f"must be finite, got {value!r}")
        # Read a float as the decimal it was written as: 1.6 is 8/5, not the
        # binary neighbour 3602879701896397/2251799813685248.
        return Fraction(repr(value))
    return Fraction(value)


class ExponentialPolicy(RetryPolicy):
    """Waits that grow by ``multiplier`` per retry up to ``max_delay``.

    ``delay(n) = min(max_delay, round(initial_delay * multiplier ** n))``, exact.

    Args:
        initial_delay: the wait before the first retry; must be positive.
        max_delay: the cap; at least ``initial_delay``.
        multiplier: the growth factor, 1 or more; floats are read as written
            (``1.6`` is exactly 8/5).
        jitter: how to randomise the waits (none by default).

    Raises:
        ConfigError: naming the offending field.
    """

    __slots__ = ("_cap_attempt", "_initial_ns", "_max_ns", "_multiplier", "_table")

    def __init__(
        self,
        initial_delay: Duration = timedelta(milliseconds=100),
        max_delay: Duration = timedelta(seconds=5),
        multiplier: int | float | Fraction = 2.0,
        *,
        jitter: Jitter = Jitter.NONE,
    ) -> None:
        self._initial_ns = positive_ns(initial_delay, "initial_delay")
        self._max_ns = positive_ns(max_delay, "max_delay")
        if self._max_ns < self._initial_ns:
            raise ConfigError(
                "max_delay",
                f"must be at least initial_delay ({initial_delay!r}), "
                f"got {max_delay!r}",
            )
        self._multiplier = _as_fraction(multiplier, "multiplier")
        if self._multiplier < 1:
            raise ConfigError(
                "multiplier", f"must be 1 or more for backoff, got {multiplier!r}"
            )
        self._jitter = _check_jitter(jitter)
        self._cap_attempt = self._find_cap_attempt()
        self._table = tuple(
            self._exact(n) for n in range(min(self._cap_attempt, _TABLE_LIMIT))
        )

    @property
    def initial_ns(self) -> int:
        return self._initial_ns

    @property
    def max_ns(self) -> int:
        return self._max_ns

    @property
    def multiplier(self) -> Fraction:
        """The growth factor as an exact fraction."""
        return self._multiplier

    @property
    def cap_attempt(self) -> int:
        """The first attempt whose delay is ``max_delay``.

        Very large (about ``2**62``) when the multiplier is exactly 1 and the
        delays never grow.
        """
        return self._cap_attempt

    def delay_ns(self, attempt: int) -> int:
        if attempt >= self._cap_attempt:
            return self._max_ns
        _check_attempt(attempt)
        if attempt < len(self._table):
            return self._table[attempt]
        return self._exact(attempt)

    def _exact(self, attempt: int) -> int:
        # One exact product, one rounding, then the cap.
        value = self._initial_ns * self._multiplier**attempt
        return min(self._max_ns, round(value))

    def _find_cap_attempt(self) -> int:
        """The smallest ``n`` with ``initial * multiplier**n >= max``, or "never".

        Uses high-precision logarithms instead of powers, so no huge integer is
        built. When the true ratio sits so close to an integer that 60 digits
        cannot tell, the exact delay at that attempt is within a hair of
        ``max_delay`` and rounds to it, so either answer gives the same delays.
        """
        if self._initial_ns >= self._max_ns:
            return 0
        if self._multiplier == 1:
            return 1 << 62

        with decimal.localcontext() as ctx:
            ctx.prec = _LOG_PRECISION
            ratio = Decimal(self._max_ns) / Decimal(self._initial_ns)
            growth = Decimal(self._multiplier.numerator) / Decimal(
                self._multiplier.denominator
            )
            steps = ratio.ln() / growth.ln()
            return int(steps.to_integral_value(rounding=decimal.ROUND_CEILING))

    def _key(self) -> tuple[object, ...]:
        return (self._initial_ns, self._max_ns, self._multiplier, self._jitter)

    def __repr__(self) -> str:
        extra = "" if self._jitter is Jitter.NONE else f", jitter={self._jitter}"
        return (
            "RetryPolicy.Exponential("
            f"initial_delay={ns_to_timedelta(self._initial_ns)!r}, "
            f"max_delay={ns_to_timedelta(self._max_ns)!r}, "
            f"multiplier={float(self._multiplier)!r}{extra})"
        )


RetryPolicy.Fixed = FixedPolicy
RetryPolicy.Exponential = ExponentialPolicy
