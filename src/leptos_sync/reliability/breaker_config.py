"""Circuit breaker settings: the guide's ``CircuitBreakerConfig`` enum.

``CircuitBreakerConfig.Disabled`` is a single shared value; a breaker built from it
lets every call through. ``CircuitBreakerConfig.Enabled(...)`` holds the
thresholds, validated when built, with every duration kept as integer nanoseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import ClassVar

from ..durations import Duration, ns_to_timedelta, positive_ns
from ..errors import ConfigError

__all__ = ["CircuitBreakerConfig", "DisabledBreakerConfig", "EnabledBreakerConfig"]


class CircuitBreakerConfig:
    """Whether and how a circuit breaker trips.

    Use ``CircuitBreakerConfig.Disabled`` or
    ``CircuitBreakerConfig.Enabled(failure_threshold=5,
    recovery_timeout=timedelta(seconds=30), half_open_max_calls=3)``.
    """

    Disabled: ClassVar[DisabledBreakerConfig]
    Enabled: ClassVar[type[EnabledBreakerConfig]]

    __slots__ = ()

    @property
    def enabled(self) -> bool:
        raise NotImplementedError


class DisabledBreakerConfig(CircuitBreakerConfig):
    """No circuit breaking: every call goes through. Use the shared instance."""

    __slots__ = ()

    @property
    def enabled(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "CircuitBreakerConfig.Disabled"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DisabledBreakerConfig)

    def __hash__(self) -> int:
        return hash(DisabledBreakerConfig)


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"expected an integer, got {value!r}")
    if value <= 0:
        raise ConfigError(name, f"must be 1 or more, got {value}")
    return value


def _optional_ns(value: Duration | None, name: str) -> int | None:
    return None if value is None else positive_ns(value, name)


@dataclass(frozen=True, eq=True, repr=False)
class EnabledBreakerConfig(CircuitBreakerConfig):
    """A breaker that opens on failures and probes its way back to closed.

    Attributes:
        failure_threshold: consecutive failures that open the breaker.
        recovery_timeout: how long it stays open before probing (monotonic).
        half_open_max_calls: trial calls admitted while half-open; all of them
            succeeding closes the breaker, one failing reopens it.
        failure_rate_threshold: optionally, also open when at least this
            fraction (0 < rate <= 1) of the last ``window`` calls failed, once
            ``minimum_calls`` of them have completed.
        window: how many recent calls the failure rate looks at.
        minimum_calls: calls needed in the window before the rate counts.
        slow_call_threshold: optionally, a successful call slower than this
            counts as a failure.
        max_half_open_wait: optionally, a trial call running longer than this
            sends the breaker back to open (checked on the next call or state
            read, so no background task is needed).
        excluded_exceptions: errors that count as neither success nor failure
            (a "not found" is not a sign of an unhealthy peer).
    """

    failure_threshold: int = 5
    recovery_timeout: Duration = timedelta(seconds=30)
    half_open_max_calls: int = 3
    failure_rate_threshold: float | None = None
    window: int = 20
    minimum_calls: int = 10
    slow_call_threshold: Duration | None = None
    max_half_open_wait: Duration | None = None
    excluded_exceptions: tuple[type[BaseException], ...] = ()

    recovery_ns: int = field(init=False, repr=False)
    slow_call_ns: int | None = field(init=False, repr=False)
    max_half_open_wait_ns: int | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _positive_int(self.failure_threshold, "failure_threshold")
        _positive_int(self.half_open_max_calls, "half_open_max_calls")
        _positive_int(self.window, "window")
        _positive_int(self.minimum_calls, "minimum_calls")
        if self.minimum_calls > self.window:
            raise ConfigError(
                "minimum_calls",
                f"must not exceed window ({self.window}), got {self.minimum_calls}",
            )
        rate = self.failure_rate_threshold
        if rate is not None and (
            isinstance(rate, bool)
            or not isinstance(rate, int | float)
            or not 0 < rate <= 1
        ):
            raise ConfigError(
                "failure_rate_threshold", f"must be in (0, 1], got {rate!r}"
            )
        excluded = tuple(self.excluded_exceptions)
        for kind in excluded:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise ConfigError(
                    "excluded_exceptions", f"expected exception classes, got {kind!r}"
                )

        # Keep exact nanoseconds for the breaker, and a readable timedelta in
        # the public field.
        recovery_ns = positive_ns(self.recovery_timeout, "recovery_timeout")
        slow_ns = _optional_ns(self.slow_call_threshold, "slow_call_threshold")
        wait_ns = _optional_ns(self.max_half_open_wait, "max_half_open_wait")
        set_field = object.__setattr__
        set_field(self, "excluded_exceptions", excluded)
        set_field(self, "recovery_ns", recovery_ns)
        set_field(self, "recovery_timeout", ns_to_timedelta(recovery_ns))
        set_field(self, "slow_call_ns", slow_ns)
        set_field(self, "max_half_open_wait_ns", wait_ns)

    @property
    def enabled(self) -> bool:
        return True

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if f.init
            and (f.name in _ALWAYS_SHOWN or getattr(self, f.name) != f.default)
        ]
        return f"CircuitBreakerConfig.Enabled({', '.join(shown)})"


_ALWAYS_SHOWN = frozenset(
    {"failure_threshold", "recovery_timeout", "half_open_max_calls"}
)


CircuitBreakerConfig.Disabled = DisabledBreakerConfig()
CircuitBreakerConfig.Enabled = EnabledBreakerConfig
