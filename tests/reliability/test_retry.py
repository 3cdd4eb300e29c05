"""Tests for retry policies, the retry loop and the retry budget."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leptos_sync.clock import ManualClock
from leptos_sync.errors import ConfigError, RetryBudgetExhausted, UsageError
from leptos_sync.reliability import (
    Jitter,
    RetryBudget,
    RetryEvent,
    RetryPolicy,
    RetryStatistics,
    StopReason,
    retry,
    retrying,
)

MS = 1_000_000
S = 1_000_000_000


class Boom(Exception):
    """The error the test operations raise."""


class Flaky:
    """An operation that fails ``failures`` times, then returns ``"ok"``.

    It records the clock time (ns since the clock's start) of every call.
    """

    def __init__(self, clock: ManualClock, failures: int, takes: float = 0) -> None:
        self.clock = clock
        self.origin = clock.monotonic_ns()
        self.failures = failures
        self.takes = takes
        self.starts: list[int] = []

    @property
    def calls(self) -> int:
        return len(self.starts)

    async def __call__(self) -> str:
        self.starts.append(self.clock.monotonic_ns() - self.origin)
        if self.takes:
            await self.clock.sleep(self.takes)
        if self.calls <= self.failures:
            raise Boom(f"failure {self.calls}")
        return "ok"


async def run_to_end(
    clock: ManualClock, coro: Awaitable[Any], horizon: float = 3600
) -> tuple[Any, BaseException | None, int]:
    """Drive ``coro`` on the manual clock; return its result, error and end time."""
    origin = clock.monotonic_ns()
    ended: list[int] = []

    async def wrapped() -> Any:
        try:
            return await coro
        finally:
            ended.append(clock.monotonic_ns() - origin)

    task = asyncio.ensure_future(wrapped())
    await clock.advance_async(horizon)
    assert task.done(), "the call did not finish within the horizon"
    error = task.exception()
    return (None if error else task.result()), error, ended[0]


def exact(initial_ns: int, max_ns: int, multiplier: Fraction, attempt: int) -> int:
    return min(max_ns, round(initial_ns * multiplier**attempt))


# Policies --------------------------------------------------------------------


def test_exponential_guide_sequence_is_exact() -> None:
    """Exponential(100 ms, 5 s, 2.0) waits exactly 100..3200 ms, then 5000 ms."""
    policy = RetryPolicy.Exponential(
        initial_delay=timedelta(milliseconds=100),
        max_delay=timedelta(seconds=5),
        multiplier=2.0,
    )
    delays = [policy.delay(attempt) for attempt in range(8)]
    millis = [100, 200, 400, 800, 1600, 3200, 5000, 5000]
    assert delays == [timedelta(milliseconds=m) for m in millis]
    assert [policy.delay_ns(a) for a in range(8)] == [m * MS for m in millis]


def test_exponential_far_attempts_are_capped_and_fast() -> None:
    """Attempt 10,000 gives max_delay, and 10,000 such lookups take little time."""
    policy = RetryPolicy.Exponential(initial_delay=0.1, max_delay=5, multiplier=2.0)
    assert policy.delay(10_000) == timedelta(seconds=5)
    assert policy.delay_ns(10**18) == 5 * S

    started = time.perf_counter()
    for _ in range(10_000):
        policy.delay_ns(10_000)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("multiplier", [1.5, 1.6])
def test_non_integer_multiplier_is_rational_and_rounded_once(
    multiplier: float,
) -> None:
    """Multipliers like 1.6 are read as 8/5 and the product is rounded once."""
    policy = RetryPolicy.Exponential(
        initial_delay=timedelta(microseconds=333_333),
        max_delay=timedelta(seconds=60),
        multiplier=multiplier,
    )
    ratio = Fraction(str(multiplier))
    assert policy.multiplier == ratio
    for attempt in range(40):
        assert policy.delay_ns(attempt) == exact(333_333_000, 60 * S, ratio, attempt)


def test_multiplier_one_keeps_the_initial_delay() -> None:
    """A multiplier of exactly 1 never grows the delay, even at huge attempts."""
    policy = RetryPolicy.Exponential(initial_delay=0.25, max_delay=5, multiplier=1)
    assert policy.delay_ns(0) == policy.delay_ns(10**9) == 250 * MS


@settings(max_examples=200, deadline=None)
@given(
    initial_us=st.integers(min_value=1, max_value=10**7),
    span=st.integers(min_value=1, max_value=10**5),
    multiplier=st.fractions(min_value=1, max_value=5, max_denominator=1000),
    attempt=st.integers(min_value=0, max_value=80),
)
def test_exponential_matches_exact_rational_formula(
    initial_us: int, span: int, multiplier: Fraction, attempt: int
) -> None:
    """For any policy, delay_ns equals min(max, round(initial * m**attempt))."""
    initial_ns = initial_us * 1000
    max_ns = initial_ns * span
    policy = RetryPolicy.Exponential(
        initial_delay=timedelta(microseconds=initial_us),
        max_delay=timedelta(microseconds=initial_us * span),
        multiplier=multiplier,
    )
    assert policy.delay_ns(attempt) == exact(initial_ns, max_ns, multiplier, attempt)


def test_fixed_policy_and_equality() -> None:
    """Fixed waits the same at every attempt; policies compare by value."""
    policy = RetryPolicy.Fixed(timedelta(seconds=1))
    assert [policy.delay(a) for a in (0, 1, 99)] == [timedelta(seconds=1)] * 3
    assert policy == RetryPolicy.Fixed(1)
    assert hash(policy) == hash(RetryPolicy.Fixed(1.0))
    assert policy != RetryPolicy.Fixed(2)
    assert isinstance(policy, RetryPolicy.Fixed)


def test_negative_attempt_is_a_usage_error() -> None:
    """Asking for the delay of attempt -1 raises UsageError."""
    with pytest.raises(UsageError):
        RetryPolicy.Fixed(1).delay(-1)
    with pytest.raises(UsageError):
        RetryPolicy.Exponential().delay(-1)


def test_full_jitter_stays_within_bounds_and_is_seeded() -> None:
    """5,000 full-jitter waits are integers in [0, d] and repeat with the seed."""
    policy = RetryPolicy.Exponential(
        initial_delay=0.1, max_delay=5, multiplier=2.0, jitter=Jitter.FULL
    )
    first = [policy.sleep_ns(a, None, random.Random(7)) for a in range(5000)]
    again = [policy.sleep_ns(a, None, random.Random(7)) for a in range(5000)]
    assert first == again
    rng = random.Random(42)
    for attempt in range(5000):
        wait = policy.sleep_ns(attempt, None, rng)
        assert 0 <= wait <= policy.delay_ns(attempt) <= 5 * S


def test_equal_jitter_stays_within_bounds() -> None:
    """Equal jitter waits lie in [d // 2, d]."""
    policy = RetryPolicy.Exponential(
        initial_delay=0.1, max_delay=5, multiplier=1.6, jitter=Jitter.EQUAL
    )
    rng = random.Random(1)
    for attempt in range(2000):
        delay = policy.delay_ns(attempt)
        assert delay // 2 <= policy.sleep_ns(attempt, None, rng) <= delay


def test_decorrelated_jitter_stays_within_initial_and_max() -> None:
    """Decorrelated jitter waits lie in [initial_delay, max_delay] at every step."""
    policy = RetryPolicy.Exponential(
        initial_delay=0.1, max_delay=5, multiplier=2.0, jitter=Jitter.DECORRELATED
    )
    rng = random.Random(3)
    previous = None
    for attempt in range(5000):
        previous = policy.sleep_ns(attempt, previous, rng)
        assert 100 * MS <= previous <= 5 * S


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: RetryPolicy.Fixed(-1), "delay"),
        (lambda: RetryPolicy.Fixed("soon"), "delay"),  # type: ignore[arg-type]
        (lambda: RetryPolicy.Exponential(initial_delay=0), "initial_delay"),
        (lambda: RetryPolicy.Exponential(initial_delay=-0.1), "initial_delay"),
        (lambda: RetryPolicy.Exponential(0.1, 0.05), "max_delay"),
        (lambda: RetryPolicy.Exponential(0.1, 5, 0.5), "multiplier"),
        (lambda: RetryPolicy.Exponential(0.1, 5, float("nan")), "multiplier"),
        (lambda: RetryPolicy.Fixed(1, jitter="full"), "jitter"),  # type: ignore[arg-type]
        (lambda: RetryBudget(max_tokens=0), "max_tokens"),
        (lambda: RetryBudget(success_refund=0), "success_refund"),
    ],
)
def test_invalid_policy_values_name_the_field(
    build: Callable[[], object], field: str
) -> None:
    """Each invalid policy or budget value raises ConfigError naming its field."""
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.field == field


# The retry loop ----------------------------------------------------------------


async def test_success_first_time_makes_one_attempt(clock: ManualClock) -> None:
    """An operation that succeeds at once is called once and nothing sleeps."""
    operation = Flaky(clock, failures=0)
    stats: list[RetryStatistics] = []
    result = await retry(
        operation, policy=RetryPolicy.Fixed(1), clock=clock, on_finish=stats.append
    )
    assert result == "ok"
    assert operation.calls == 1
    assert stats == [RetryStatistics(1, 0, (), StopReason.SUCCEEDED)]
    assert clock.sleepers() == 0


async def test_waits_follow_the_policy_exactly(clock: ManualClock) -> None:
    """Attempts start at 0, 100, 300 and 700 ms for 100 ms doubling waits."""
    operation = Flaky(clock, failures=3)
    policy = RetryPolicy.Exponential(initial_delay=0.1, max_delay=5, multiplier=2)
    call = retry(operation, policy=policy, max_retries=5, clock=clock)
    result, error, ended = await run_to_end(clock, call)
    assert error is None and result == "ok"
    assert operation.starts == [0, 100 * MS, 300 * MS, 700 * MS]
    assert ended == 700 * MS


async def test_non_integer_multiplier_waits_are_exact_nanoseconds(
    clock: ManualClock,
) -> None:
    """The loop sleeps the policy's exact nanoseconds, not rounded microseconds."""
    operation = Flaky(clock, failures=3)
    policy = RetryPolicy.Exponential(
        initial_delay=timedelta(microseconds=1), max_delay=1, multiplier=1.5
    )
    call = retry(operation, policy=policy, max_retries=3, clock=clock)
    await run_to_end(clock, call)
    assert operation.starts == [0, 1000, 2500, 4750]


async def test_exhausted_retries_reraise_the_last_error(clock: ManualClock) -> None:
    """After max_retries the last error itself is raised, after max_retries+1 calls."""
    operation = Flaky(clock, failures=100)
    stats: list[RetryStatistics] = []
    call = retry(
        operation,
        policy=RetryPolicy.Fixed(1),
        max_retries=3,
        clock=clock,
        on_finish=stats.append,
    )
    _, error, ended = await run_to_end(clock, call)
    assert isinstance(error, Boom) and str(error) == "failure 4"
    assert operation.calls == 4
    assert ended == 3 * S
    assert stats[0].attempts == 4
    assert stats[0].total_wait_ns == 3 * S
    assert stats[0].stop_reason == StopReason.MAX_RETRIES
    assert stats[0].errors[-1] is error


async def test_zero_max_retries_makes_a_single_attempt(clock: ManualClock) -> None:
    """max_retries=0 calls the operation once and raises its error."""
    operation = Flaky(clock, failures=1)
    with pytest.raises(Boom):
        await retry(operation, policy=RetryPolicy.Fixed(1), max_retries=0, clock=clock)
    assert operation.calls == 1


async def test_fixed_zero_delay_retries_without_sleeping(clock: ManualClock) -> None:
    """Fixed(0) retries at once, with the clock standing still."""
    operation = Flaky(clock, failures=2)
    assert await retry(operation, policy=RetryPolicy.Fixed(0), clock=clock) == "ok"
    assert operation.starts == [0, 0, 0]


async def test_deadline_stops_attempts_and_sleeps_inside_it(
    clock: ManualClock,
) -> None:
    """With a 5 s deadline and waits of 1, 2, 4 s, attempts run at 0, 1, 3 s only."""
    operation = Flaky(clock, failures=100)
    stats: list[RetryStatistics] = []
    policy = RetryPolicy.Exponential(initial_delay=1, max_delay=60, multiplier=2)
    call = retry(
        operation,
        policy=policy,
        max_retries=10,
        clock=clock,
        deadline=timedelta(seconds=5),
        on_finish=stats.append,
    )
    _, error, ended = await run_to_end(clock, call)
    assert operation.starts == [0, 1 * S, 3 * S]
    assert all(start <= 5 * S for start in operation.starts)
    assert ended == 3 * S  # the 4 s wait was never started
    assert isinstance(error, RetryBudgetExhausted)
    assert isinstance(error.__cause__, Boom)
    assert stats[0].stop_reason == StopReason.DEADLINE
    assert clock.sleepers() == 0


async def test_one_long_attempt_against_a_short_deadline(clock: ManualClock) -> None:
    """An attempt that takes 5 s against a 2 s deadline is the only attempt."""
    operation = Flaky(clock, failures=100, takes=5)
    call = retry(
        operation,
        policy=RetryPolicy.Fixed(0.1),
        max_retries=10,
        clock=clock,
        deadline=2,
    )
    _, error, ended = await run_to_end(clock, call)
    assert operation.calls == 1
    assert ended == 5 * S
    assert isinstance(error, RetryBudgetExhausted)
    assert isinstance(error.__cause__, Boom)


async def test_cancellation_during_a_wait_stops_everything(
    clock: ManualClock,
) -> None:
    """Cancelled at 1 s in a 2 s wait, the call raises at 1 s and leaves no sleeper."""
    operation = Flaky(clock, failures=100)
    task = asyncio.ensure_future(
        retry(operation, policy=RetryPolicy.Fixed(2), max_retries=5, clock=clock)
    )
    origin = clock.monotonic_ns()
    await clock.advance_async(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.monotonic_ns() - origin == 1 * S
    assert operation.calls == 1
    assert clock.sleepers() == 0
    await clock.advance_async(10)
    assert operation.calls == 1


@pytest.mark.parametrize(
    "kind", [asyncio.CancelledError, KeyboardInterrupt, SystemExit]
)
async def test_base_exceptions_are_never_retried(
    clock: ManualClock, kind: type[BaseException]
) -> None:
    """CancelledError, KeyboardInterrupt and SystemExit pass through at once."""
    calls = 0

    async def operation() -> None:
        nonlocal calls
        calls += 1
        raise kind()

    with pytest.raises(kind):
        await retry(operation, policy=RetryPolicy.Fixed(1), clock=clock)
    assert calls == 1


async def test_raising_predicate_fails_at_once_with_original_attached(
    clock: ManualClock,
) -> None:
    """A retry_on that raises ends the call with its error, the original as cause."""
    operation = Flaky(clock, failures=100)

    def broken_predicate(error: Exception) -> bool:
        raise LookupError("predicate bug")

    with pytest.raises(LookupError) as caught:
        await retry(
            operation,
            policy=RetryPolicy.Fixed(1),
            clock=clock,
            retry_on=broken_predicate,
        )
    assert isinstance(caught.value.__cause__, Boom)
    assert operation.calls == 1
    assert clock.sleepers() == 0


async def test_non_retryable_errors_are_raised_at_once(clock: ManualClock) -> None:
    """An error the predicate rejects is raised after a single attempt."""
    operation = Flaky(clock, failures=100)
    stats: list[RetryStatistics] = []
    with pytest.raises(Boom):
        await retry(
            operation,
            policy=RetryPolicy.Fixed(1),
            clock=clock,
            retry_on=lambda error: not isinstance(error, Boom),
            on_finish=stats.append,
        )
    assert operation.calls == 1
    assert stats[0].stop_reason == StopReason.NOT_RETRYABLE


async def test_concurrent_calls_keep_separate_statistics(clock: ManualClock) -> None:
    """Two concurrent calls each see attempts 1, 2, 3; six attempts in total."""
    total = 0
    seen: dict[str, list[int]] = {"a": [], "b": []}
    stats: dict[str, list[RetryStatistics]] = {"a": [], "b": []}

    def make(name: str) -> Callable[[], Awaitable[str]]:
        attempts = 0

        async def operation() -> str:
            nonlocal attempts, total
            attempts += 1
            total += 1
            seen[name].append(attempts)
            if attempts < 3:
                raise Boom(name)
            return name

        return operation

    calls = [
        retry(
            make(name),
            policy=RetryPolicy.Fixed(1),
            max_retries=5,
            clock=clock,
            on_finish=stats[name].append,
        )
        for name in ("a", "b")
    ]
    result, error, _ = await run_to_end(clock, asyncio.gather(*calls))
    assert error is None and result == ["a", "b"]
    assert seen == {"a": [1, 2, 3], "b": [1, 2, 3]}
    assert total == 6
    assert [s[0].attempts for s in stats.values()] == [3, 3]


async def test_on_retry_hears_each_retry_before_its_wait(clock: ManualClock) -> None:
    """on_retry receives the failed attempt number, its error and the wait."""
    events: list[RetryEvent] = []
    operation = Flaky(clock, failures=2)
    call = retry(
        operation,
        policy=RetryPolicy.Exponential(initial_delay=1, max_delay=10),
        clock=clock,
        on_retry=events.append,
    )
    await run_to_end(clock, call)
    assert [(e.attempt, e.wait_ns) for e in events] == [(1, 1 * S), (2, 2 * S)]
    assert [str(e.error) for e in events] == ["failure 1", "failure 2"]
    assert events[1].wait == timedelta(seconds=2)


async def test_seeded_jitter_makes_the_loop_reproducible(clock: ManualClock) -> None:
    """The same seed gives the same jittered waits in two runs."""
    policy = RetryPolicy.Exponential(
        initial_delay=0.1, max_delay=5, multiplier=2, jitter=Jitter.FULL
    )

    async def run_once() -> list[int]:
        operation = Flaky(clock, failures=5)
        call = retry(
            operation, policy=policy, max_retries=5, clock=clock, rng=random.Random(9)
        )
        await run_to_end(clock, call)
        return operation.starts

    assert await run_once() == await run_once()


async def test_retrying_decorator_retries_each_call_independently(
    clock: ManualClock,
) -> None:
    """A function decorated with retrying is retried per call and keeps its name."""
    failures_left = {"x": 1, "y": 2}
    finished: list[RetryStatistics] = []

    @retrying(
        policy=RetryPolicy.Fixed(0.5),
        max_retries=3,
        clock=clock,
        on_finish=finished.append,
    )
    async def fetch(key: str, *, suffix: str = "") -> str:
        """Fetch a key."""
        if failures_left[key]:
            failures_left[key] -= 1
            raise Boom(key)
        return key + suffix

    result, error, _ = await run_to_end(
        clock, asyncio.gather(fetch("x", suffix="!"), fetch("y"))
    )
    assert error is None and result == ["x!", "y"]
    assert fetch.__name__ == "fetch"
    assert sorted(s.attempts for s in finished) == [2, 3]


def test_retrying_rejects_negative_max_retries() -> None:
    """The decorator checks max_retries when it is built."""
    with pytest.raises(ConfigError) as caught:
        retrying(max_retries=-1)
    assert caught.value.field == "max_retries"


async def test_retry_rejects_invalid_arguments(clock: ManualClock) -> None:
    """retry() names max_retries and deadline in its ConfigError."""
    operation = Flaky(clock, failures=0)
    with pytest.raises(ConfigError) as caught:
        await retry(operation, max_retries=-1, clock=clock)
    assert caught.value.field == "max_retries"
    with pytest.raises(ConfigError) as caught:
        await retry(operation, deadline=0, clock=clock)
    assert caught.value.field == "deadline"
    assert operation.calls == 0


# The retry budget ------------------------------------------------------------


async def test_budget_stops_retries_below_half(clock: ManualClock) -> None:
    """A 4-token budget allows retries only while more than 2 tokens remain."""
    budget = RetryBudget(max_tokens=4, success_refund=0.5)
    operation = Flaky(clock, failures=100)
    stats: list[RetryStatistics] = []
    call = retry(
        operation,
        policy=RetryPolicy.Fixed(1),
        max_retries=10,
        clock=clock,
        budget=budget,
        on_finish=stats.append,
    )
    _, error, _ = await run_to_end(clock, call)
    assert operation.calls == 2
    assert isinstance(error, RetryBudgetExhausted)
    assert isinstance(error.__cause__, Boom)
    assert stats[0].stop_reason == StopReason.BUDGET
    snapshot = budget.statistics()
    assert (snapshot.tokens, snapshot.failures, snapshot.denials) == (2.0, 2, 1)

    # The last failure of a call that runs out of retries also takes a token.
    last = Flaky(clock, failures=1)
    with pytest.raises(Boom):
        await retry(last, max_retries=0, clock=clock, budget=budget)
    assert budget.statistics().tokens == 1.0

    # Successes refill the bucket, half a token each, up to its capacity.
    for _ in range(10):
        await retry(Flaky(clock, failures=0), budget=budget, clock=clock)
    assert budget.statistics().tokens == 4.0


def test_budget_counts_exactly_under_threads() -> None:
    """8 threads of 1,000 failures and successes leave the exact token count."""
    budget = RetryBudget(max_tokens=100_000, success_refund=0.25)
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(1000):
            budget.on_failure()
            budget.on_success()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = budget.statistics()
    assert stats.tokens == 100_000 - 8000 * 0.75
    assert (stats.failures, stats.successes, stats.denials) == (8000, 8000, 0)
