"""Retrying an async operation: the loop, its statistics and a shared budget.

The decision of how long to wait lives in :mod:`.backoff`; this module carries it
out. :func:`retry` awaits an operation, and after each failure decides, in order:

1. Is the error retryable? ``asyncio.CancelledError``, ``KeyboardInterrupt`` and
   ``SystemExit`` never are (they are not ``Exception`` subclasses and pass
   straight through). Other errors are retried when ``retry_on(error)`` is true.
   If ``retry_on`` itself raises, the call fails at once with that error, the
   operation's error chained to it as ``__cause__``.
2. Are retries left? After ``max_retries`` retries the last error is re-raised
   unchanged.
3. Does the shared :class:`RetryBudget` allow one more retry? Every retryable
   failure takes a token, even the last one; if the bucket is at half or below,
   :class:`~leptos_sync.errors.RetryBudgetExhausted` is raised from the last
   error.
4. Does the wait fit in the deadline? A wait that would end after the deadline
   is not started: the call gives up at once with ``RetryBudgetExhausted`` raised
   from the last error. So no attempt starts after the deadline and no sleep runs
   past it. The deadline does not interrupt an attempt already running; wrap the
   operation in its own timeout for that.

Every call keeps its own :class:`RetryStatistics`, handed to ``on_finish`` once
the call ends, so concurrent calls never share counters. ``on_retry`` hears about
each retry before its wait. The library logs nothing here; these hooks are the way
to observe retries.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import ParamSpec, TypeVar

from ..clock import Clock, SystemClock
from ..durations import NS_PER_SECOND, Duration, ns_to_timedelta, positive_ns
from ..errors import ConfigError, RetryBudgetExhausted
from .backoff import RetryPolicy
from .budget import RetryBudget

__all__ = [
    "RetryEvent",
    "RetryStatistics",
    "StopReason",
    "retry",
    "retrying",
]

T = TypeVar("T")
P = ParamSpec("P")

_DEFAULT_POLICY = RetryPolicy.Fixed(timedelta(seconds=1))
_SYSTEM_CLOCK = SystemClock()


def _retry_everything(error: Exception) -> bool:
    return True


class StopReason:
    """Why a call stopped retrying; the values of ``RetryStatistics.stop_reason``."""

    SUCCEEDED = "succeeded"
    NOT_RETRYABLE = "not_retryable"
    PREDICATE_FAILED = "predicate_failed"
    MAX_RETRIES = "max_retries"
    DEADLINE = "deadline"
    BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """A retry about to happen, as passed to ``on_retry``.

    Attributes:
        attempt: the 1-based number of the attempt that just failed.
        error: its error.
        wait_ns: how long the loop will now wait before the next attempt.
    """

    attempt: int
    error: Exception
    wait_ns: int

    @property
    def wait(self) -> timedelta:
        return ns_to_timedelta(self.wait_ns)


@dataclass(frozen=True, slots=True)
class RetryStatistics:
    """What one retried call did, handed to ``on_finish`` when it ends.

    Attributes:
        attempts: how many times the operation was called.
        total_wait_ns: the sum of the waits between attempts.
        errors: the errors of the failed attempts, in order.
        stop_reason: a :class:`StopReason` value.
    """

    attempts: int
    total_wait_ns: int
    errors: tuple[Exception, ...]
    stop_reason: str

    @property
    def retries(self) -> int:
        return max(0, self.attempts - 1)

    @property
    def succeeded(self) -> bool:
        return self.stop_reason == StopReason.SUCCEEDED

    @property
    def total_wait(self) -> timedelta:
        return ns_to_timedelta(self.total_wait_ns)


def _check_max_retries(max_retries: int) -> int:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int):
        raise ConfigError("max_retries", f"expected an integer, got {max_retries!r}")
    if max_retries < 0:
        raise ConfigError("max_retries", f"must be 0 or more, got {max_retries}")
    return max_retries


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy = _DEFAULT_POLICY,
    max_retries: int = 3,
    clock: Clock | None = None,
    retry_on: Callable[[Exception], bool] = _retry_everything,
    deadline: Duration | None = None,
    budget: RetryBudget | None = None,
    rng: random.Random | None = None,
    on_retry: Callable[[RetryEvent], object] | None = None,
    on_finish: Callable[[RetryStatistics], object] | None = None,
) -> T:
    """Await ``operation()``, retrying failures as the policy says.

    Args:
        operation: a zero-argument callable returning an awaitable; it is called
            afresh for every attempt.
        policy: the waits between attempts.
        max_retries: retries after the first attempt (so at most
            ``max_retries + 1`` attempts).
        clock: where waits sleep and the deadline is measured; the system clock
            by default.
        retry_on: decides whether an error is worth retrying (all ``Exception``
            subclasses by default).
        deadline: a total-time budget, measured from the call, after which no
            attempt starts and no wait runs.
        budget: a token bucket shared with other calls.
        rng: the random source for jitter; a fresh unseeded one by default.
        on_retry: called before each wait with a :class:`RetryEvent`.
        on_finish: called once, when the call ends either way, with its
            :class:`RetryStatistics`.

    Returns:
        What the first successful attempt returned.

    Raises:
        Exception: the last attempt's error when retries run out or the error
            is not retryable; the predicate's error if ``retry_on`` raises.
        RetryBudgetExhausted: the deadline or the budget stopped the retries,
            raised from the last attempt's error.
        ConfigError: ``max_retries`` or ``deadline`` is invalid.
    """
    _check_max_retries(max_retries)
    deadline_ns = None if deadline is None else positive_ns(deadline, "deadline")

    # The success path on the first attempt touches nothing else.
    if deadline_ns is None:
        start_ns = 0
    else:
        clock = clock if clock is not None else _SYSTEM_CLOCK
        start_ns = clock.monotonic_ns()
    try:
        result = await operation()
    except Exception as error:
        first_error = error
    else:
        if budget is not None:
            budget.on_success()
        if on_finish is not None:
            on_finish(RetryStatistics(1, 0, (), StopReason.SUCCEEDED))
        return result

    return await _retry_after_failure(
        operation,
        first_error,
        policy=policy,
        max_retries=max_retries,
        clock=clock if clock is not None else _SYSTEM_CLOCK,
        retry_on=retry_on,
        deadline_ns=None if deadline_ns is None else start_ns + deadline_ns,
        budget=budget,
        rng=rng,
        on_retry=on_retry,
        on_finish=on_finish,
    )


async def _retry_after_failure(
    operation: Callable[[], Awaitable[T]],
    error: Exception,
    *,
    policy: RetryPolicy,
    max_retries: int,
    clock: Clock,
    retry_on: Callable[[Exception], bool],
    deadline_ns: int | None,
    budget: RetryBudget | None,
    rng: random.Random | None,
    on_retry: Callable[[RetryEvent], object] | None,
    on_finish: Callable[[RetryStatistics], object] | None,
) -> T:
    """The slow path of :func:`retry`, entered after the first failure."""
    errors: list[Exception] = []
    total_wait = 0
    previous_wait: int | None = None

    def finish(reason: str) -> None:
        if on_finish is not None:
            on_finish(RetryStatistics(len(errors), total_wait, tuple(errors), reason))

    while True:
        errors.append(error)

        # Decide whether to retry, in the order the module docstring gives.
        try:
            retryable = retry_on(error)
        except Exception as predicate_error:
            finish(StopReason.PREDICATE_FAILED)
            raise predicate_error from error
        if not retryable:
            finish(StopReason.NOT_RETRYABLE)
            raise error
        budget_allows = budget is None or budget.on_failure()
        retry_number = len(errors) - 1
        if retry_number >= max_retries:
            finish(StopReason.MAX_RETRIES)
            raise error
        if not budget_allows:
            finish(StopReason.BUDGET)
            raise RetryBudgetExhausted(
                f"retry budget exhausted after {len(errors)} attempt(s)"
            ) from error

        if rng is None:
            rng = random.Random()
        wait = policy.sleep_ns(retry_number, previous_wait, rng)
        if deadline_ns is not None and clock.monotonic_ns() + wait > deadline_ns:
            finish(StopReason.DEADLINE)
            raise RetryBudgetExhausted(
                f"deadline reached after {len(errors)} attempt(s): the next wait "
                f"of {ns_to_timedelta(wait)} would end past it"
            ) from error

        # Wait, then try again.
        if on_retry is not None:
            on_retry(RetryEvent(len(errors), error, wait))
        # Float seconds carry whole nanoseconds exactly for waits under 11 days
        # (15 significant digits), which a timedelta, at microseconds, would not.
        await clock.sleep(wait / NS_PER_SECOND)
        total_wait += wait
        previous_wait = wait
        try:
            result = await operation()
        except Exception as next_error:
            error = next_error
            continue
        if budget is not None:
            budget.on_success()
        if on_finish is not None:
            attempts = len(errors) + 1
            on_finish(
                RetryStatistics(
                    attempts, total_wait, tuple(errors), StopReason.SUCCEEDED
                )
            )
        return result


def retrying(
    *,
    policy: RetryPolicy = _DEFAULT_POLICY,
    max_retries: int = 3,
    clock: Clock | None = None,
    retry_on: Callable[[Exception], bool] = _retry_everything,
    deadline: Duration | None = None,
    budget: RetryBudget | None = None,
    rng: random.Random | None = None,
    on_retry: Callable[[RetryEvent], object] | None = None,
    on_finish: Callable[[RetryStatistics], object] | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Decorate an async function so that every call runs through :func:`retry`.

    The arguments are those of :func:`retry`. Each call of the decorated function
    is retried on its own, with its own statistics.

    Example::

        @retrying(policy=RetryPolicy.Fixed(0.5), max_retries=2)
        async def fetch(key: str) -> bytes: ...
    """
    _check_max_retries(max_retries)
    if deadline is not None:
        positive_ns(deadline, "deadline")

    def decorate(function: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(function)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await retry(
                lambda: function(*args, **kwargs),
                policy=policy,
                max_retries=max_retries,
                clock=clock,
                retry_on=retry_on,
                deadline=deadline,
                budget=budget,
                rng=rng,
                on_retry=on_retry,
                on_finish=on_finish,
            )

        return wrapper

    return decorate
