"""Tests for the circuit breaker: transitions, concurrency, persistence."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import timedelta
from typing import Any

import pytest

from leptos_sync.clock import ManualClock
from leptos_sync.errors import CircuitOpenError, ConfigError
from leptos_sync.reliability import (
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    CircuitBreakerConfig,
    MemoryStateStore,
    Permit,
    StateStore,
)

S = 1_000_000_000


class Boom(Exception):
    """The error protected calls raise."""


class NotFound(Exception):
    """An error that says nothing about the peer's health."""


class Recorder:
    """A transition listener that keeps what it hears."""

    def __init__(self) -> None:
        self.seen: list[tuple[BreakerState, BreakerState]] = []

    def __call__(self, transition: BreakerTransition) -> None:
        self.seen.append((transition.old, transition.new))

    def count(self, old: BreakerState, new: BreakerState) -> int:
        return self.seen.count((old, new))


def state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read through a call so mypy does not narrow it."""
    return breaker.state


def enabled(**overrides: Any) -> CircuitBreakerConfig:
    settings: dict[str, Any] = {
        "failure_threshold": 3,
        "recovery_timeout": timedelta(seconds=30),
        "half_open_max_calls": 2,
    }
    settings.update(overrides)
    return CircuitBreakerConfig.Enabled(**settings)


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise Boom("down")


async def trip(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            await breaker.call(fail)


def test_python_api_snippet_builds_a_closed_breaker(clock: ManualClock) -> None:
    """The guide's Enabled config builds a closed breaker with those thresholds."""
    config = CircuitBreakerConfig.Enabled(
        failure_threshold=5,
        recovery_timeout=timedelta(seconds=30),
        half_open_max_calls=3,
    )
    breaker = CircuitBreaker(config, clock=clock)
    assert state(breaker) is BreakerState.CLOSED
    assert repr(config) == (
        "CircuitBreakerConfig.Enabled(failure_threshold=5, "
        "recovery_timeout=datetime.timedelta(seconds=30), half_open_max_calls=3)"
    )
    assert config == CircuitBreakerConfig.Enabled(recovery_timeout=30)


async def test_opens_after_exactly_threshold_consecutive_failures(
    clock: ManualClock,
) -> None:
    """Two failures leave it closed; a success resets; the third in a row opens."""
    breaker = CircuitBreaker(enabled(), clock=clock)
    await trip(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED
    assert await breaker.call(ok) == "ok"
    await trip(breaker, 2)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.statistics().consecutive_failures == 2
    await trip(breaker, 1)
    assert state(breaker) is BreakerState.OPEN


async def test_open_breaker_rejects_without_calling(clock: ManualClock) -> None:
    """While open, calls raise CircuitOpenError and the function never runs."""
    breaker = CircuitBreaker(enabled(failure_threshold=1), clock=clock)
    await trip(breaker, 1)
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    for _ in range(5):
        with pytest.raises(CircuitOpenError, match="open"):
            await breaker.call(counted)
    assert calls == 0
    assert breaker.statistics().rejections == 5


async def test_half_open_exactly_at_recovery_timeout(clock: ManualClock) -> None:
    """It stays open 1 ns before recovery_timeout and is half-open at it."""
    recorder = Recorder()
    breaker = CircuitBreaker(
        enabled(failure_threshold=1), clock=clock, listeners=[recorder]
    )
    await trip(breaker, 1)
    clock.advance(timedelta(seconds=30) - timedelta(microseconds=1))
    assert state(breaker) is BreakerState.OPEN
    clock.advance(timedelta(microseconds=1))
    assert state(breaker) is BreakerState.HALF_OPEN
    assert state(breaker) is BreakerState.HALF_OPEN
    assert recorder.count(BreakerState.OPEN, BreakerState.HALF_OPEN) == 1


async def test_trials_all_succeeding_close_and_one_failure_reopens(
    clock: ManualClock,
) -> None:
    """Three successful trials close it; after reopening, one failed trial reopens."""
    breaker = CircuitBreaker(
        enabled(failure_threshold=1, half_open_max_calls=3), clock=clock
    )
    await trip(breaker, 1)
    clock.advance(30)
    for _ in range(2):
        await breaker.call(ok)
        assert state(breaker) is BreakerState.HALF_OPEN
    await breaker.call(ok)
    assert state(breaker) is BreakerState.CLOSED

    await trip(breaker, 1)
    clock.advance(30)
    await breaker.call(ok)
    await trip(breaker, 1)
    assert state(breaker) is BreakerState.OPEN
    assert breaker.statistics().opened_at_ns == clock.monotonic_ns()


async def test_fifty_tasks_at_recovery_let_exactly_two_through(
    clock: ManualClock,
) -> None:
    """50 tasks at recovery pass 2 trials and reject 48, with one transition, x1000."""
    recorder = Recorder()
    breaker = CircuitBreaker(
        enabled(failure_threshold=1, half_open_max_calls=2),
        clock=clock,
        listeners=[recorder],
    )
    for round_number in range(1, 1001):
        await trip(breaker, 1)
        clock.advance(30)
        release = asyncio.Event()
        ran = 0

        async def probe(release: asyncio.Event = release) -> str:
            nonlocal ran
            ran += 1
            await release.wait()
            return "ok"

        tasks = [asyncio.ensure_future(breaker.call(probe)) for _ in range(50)]
        await asyncio.sleep(0)
        rejected = sum(1 for t in tasks if t.done() and t.exception() is not None)
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)

        assert ran == 2
        assert rejected == 48
        assert results.count("ok") == 2
        assert sum(isinstance(r, CircuitOpenError) for r in results) == 48
        assert state(breaker) is BreakerState.CLOSED
        assert recorder.count(BreakerState.OPEN, BreakerState.HALF_OPEN) == round_number


def test_fifty_callers_on_eight_threads_let_exactly_two_through(
    clock: ManualClock,
) -> None:
    """50 callers on 8 threads at recovery get 2 permits and 48 rejections, x1000."""
    recorder = Recorder()
    breaker = CircuitBreaker(
        enabled(failure_threshold=1, half_open_max_calls=2),
        clock=clock,
        listeners=[recorder],
    )
    rounds = 1000
    go = threading.Barrier(9)
    done = threading.Barrier(9)
    permits: list[Permit] = []
    rejections = [0] * 8
    lock = threading.Lock()

    def worker(index: int) -> None:
        for _ in range(rounds):
            go.wait()
            for _ in range(index, 50, 8):
                try:
                    permit = breaker.try_acquire()
                except CircuitOpenError:
                    rejections[index] += 1
                else:
                    with lock:
                        permits.append(permit)
            done.wait()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    try:
        for round_number in range(1, rounds + 1):
            breaker.try_acquire().failure()
            clock.advance(30)
            go.wait(timeout=10)
            done.wait(timeout=10)

            assert len(permits) == 2
            assert sum(rejections) == 48
            assert all(p.is_trial for p in permits)
            for permit in permits:
                permit.success()
            permits.clear()
            rejections[:] = [0] * 8
            assert state(breaker) is BreakerState.CLOSED
            assert (
                recorder.count(BreakerState.OPEN, BreakerState.HALF_OPEN)
                == round_number
            )
    except BaseException:
        # Free the workers so that a failed assertion does not hang the run.
        go.abort()
        done.abort()
        raise
    finally:
        for thread in threads:
            thread.join()


async def test_thousand_tasks_at_recovery_let_exactly_three_through(
    clock: ManualClock,
) -> None:
    """1,000 concurrent tasks at recovery run exactly half_open_max_calls trials."""
    breaker = CircuitBreaker(
        enabled(failure_threshold=1, half_open_max_calls=3), clock=clock
    )
    await trip(breaker, 1)
    clock.advance(30)
    release = asyncio.Event()

    async def probe() -> str:
        await release.wait()
        return "ok"

    tasks = [asyncio.ensure_future(breaker.call(probe)) for _ in range(1000)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 3
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 997
    assert state(breaker) is BreakerState.CLOSED


def test_threads_open_it_after_exactly_threshold_failures(
    clock: ManualClock,
) -> None:
    """8 threads failing at once open it once, after exactly 50 counted failures."""
    recorder = Recorder()
    breaker = CircuitBreaker(
        enabled(failure_threshold=50), clock=clock, listeners=[recorder]
    )
    start = threading.Barrier(8)

    def boom() -> None:
        raise Boom()

    def work() -> None:
        start.wait()
        for _ in range(20):
            with contextlib.suppress(Boom, CircuitOpenError):
                breaker.call_sync(boom)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = breaker.statistics()
    assert stats.state is BreakerState.OPEN
    assert stats.consecutive_failures == 50
    assert stats.failures + stats.rejections == 160
    assert recorder.seen == [(BreakerState.CLOSED, BreakerState.OPEN)]


async def test_one_blocked_probe_keeps_ten_callers_out(clock: ManualClock) -> None:
    """With one trial slot taken by a blocked probe, ten more callers are rejected."""
    breaker = CircuitBreaker(
        enabled(failure_threshold=1, half_open_max_calls=1), clock=clock
    )
    await trip(breaker, 1)
    clock.advance(30)
    release = asyncio.Event()
    ran = 0

    async def probe() -> str:
        nonlocal ran
        ran += 1
        await release.wait()
        return "ok"

    first = asyncio.ensure_future(breaker.call(probe))
    await asyncio.sleep(0)
    for _ in range(10):
        with pytest.raises(CircuitOpenError, match="half-open"):
            await breaker.call(probe)
    release.set()
    assert await first == "ok"
    assert ran == 1
    assert state(breaker) is BreakerState.CLOSED


async def test_cancelled_probe_gives_its_permit_back(clock: ManualClock) -> None:
    """A trial call cancelled mid-flight frees its slot for the next caller."""
    breaker = CircuitBreaker(
        enabled(failure_threshold=1, half_open_max_calls=1), clock=clock
    )
    await trip(breaker, 1)
    clock.advance(30)
    hung = asyncio.ensure_future(breaker.call(asyncio.Event().wait))
    await asyncio.sleep(0)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)

    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung
    assert state(breaker) is BreakerState.HALF_OPEN
    assert await breaker.call(ok) == "ok"
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.statistics().excluded == 1


async def test_hung_probe_past_the_limit_reopens(clock: ManualClock) -> None:
    """A trial running past max_half_open_wait sends the breaker back to open."""
    recorder = Recorder()
    breaker = CircuitBreaker(
        enabled(failure_threshold=1, half_open_max_calls=1, max_half_open_wait=5),
        clock=clock,
        listeners=[recorder],
    )
    await trip(breaker, 1)
    clock.advance(30)
    release = asyncio.Event()

    async def slow_probe() -> str:
        await release.wait()
        return "late"

    hung = asyncio.ensure_future(breaker.call(slow_probe))
    await asyncio.sleep(0)
    clock.advance(timedelta(seconds=5) - timedelta(microseconds=1))
    assert state(breaker) is BreakerState.HALF_OPEN
    clock.advance(timedelta(microseconds=1))
    assert state(breaker) is BreakerState.OPEN
    assert recorder.count(BreakerState.HALF_OPEN, BreakerState.OPEN) == 1

    # The late success belongs to the abandoned trial and changes nothing.
    release.set()
    assert await hung == "late"
    assert state(breaker) is BreakerState.OPEN
    clock.advance(30)
    assert state(breaker) is BreakerState.HALF_OPEN


async def test_stale_outcome_from_before_a_transition_is_ignored(
    clock: ManualClock,
) -> None:
    """A call admitted while closed cannot close an open breaker by succeeding."""
    breaker = CircuitBreaker(enabled(failure_threshold=1), clock=clock)
    early = breaker.try_acquire()
    await trip(breaker, 1)
    early.success()
    assert state(breaker) is BreakerState.OPEN


async def test_excluded_errors_count_as_neither(clock: ManualClock) -> None:
    """Excluded errors neither open a closed breaker nor fail a trial."""
    breaker = CircuitBreaker(
        enabled(
            failure_threshold=2, half_open_max_calls=1, excluded_exceptions=(NotFound,)
        ),
        clock=clock,
    )

    async def missing() -> None:
        raise NotFound("no such record")

    await trip(breaker, 1)
    for _ in range(5):
        with pytest.raises(NotFound):
            await breaker.call(missing)
    assert breaker.statistics().consecutive_failures == 1
    await trip(breaker, 1)
    assert state(breaker) is BreakerState.OPEN

    clock.advance(30)
    with pytest.raises(NotFound):
        await breaker.call(missing)
    assert state(breaker) is BreakerState.HALF_OPEN
    await breaker.call(ok)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.statistics().excluded == 6


async def test_failure_rate_opens_without_consecutive_failures(
    clock: ManualClock,
) -> None:
    """Alternating outcomes open it once half of the last 4+ calls failed."""
    breaker = CircuitBreaker(
        enabled(
            failure_threshold=5, failure_rate_threshold=0.5, window=6, minimum_calls=4
        ),
        clock=clock,
    )
    await breaker.call(ok)
    await trip(breaker, 1)
    await breaker.call(ok)
    assert state(breaker) is BreakerState.CLOSED
    await trip(breaker, 1)
    assert state(breaker) is BreakerState.OPEN


async def test_failure_rate_window_slides(clock: ManualClock) -> None:
    """Old failures leave the window, so a later lone failure does not open it."""
    breaker = CircuitBreaker(
        enabled(
            failure_threshold=5, failure_rate_threshold=0.5, window=4, minimum_calls=4
        ),
        clock=clock,
    )
    await trip(breaker, 1)
    for _ in range(4):
        await breaker.call(ok)
    await trip(breaker, 1)
    assert state(breaker) is BreakerState.CLOSED


async def test_slow_success_counts_as_failure(clock: ManualClock) -> None:
    """A call slower than slow_call_threshold counts as a failure."""
    breaker = CircuitBreaker(
        enabled(failure_threshold=1, slow_call_threshold=1), clock=clock
    )

    async def slow() -> str:
        await clock.sleep(2)
        return "slow"

    task = asyncio.ensure_future(breaker.call(slow))
    await clock.advance_async(2)
    assert await task == "slow"
    assert state(breaker) is BreakerState.OPEN
    assert breaker.statistics().failures == 1


async def test_force_open_disable_and_reset(clock: ManualClock) -> None:
    """force_open rejects until reset; disable lets all through; reset closes."""
    recorder = Recorder()
    breaker = CircuitBreaker(enabled(), clock=clock, listeners=[recorder])
    breaker.force_open()
    assert state(breaker) is BreakerState.FORCED_OPEN
    clock.advance(3600)
    with pytest.raises(CircuitOpenError, match="forced"):
        await breaker.call(ok)

    breaker.disable()
    assert state(breaker) is BreakerState.DISABLED
    await trip(breaker, 10)
    assert state(breaker) is BreakerState.DISABLED

    breaker.reset()
    assert state(breaker) is BreakerState.CLOSED
    assert recorder.seen == [
        (BreakerState.CLOSED, BreakerState.FORCED_OPEN),
        (BreakerState.FORCED_OPEN, BreakerState.DISABLED),
        (BreakerState.DISABLED, BreakerState.CLOSED),
    ]


async def test_disabled_config_passes_everything(clock: ManualClock) -> None:
    """A breaker built from CircuitBreakerConfig.Disabled rejects only when forced."""
    breaker = CircuitBreaker(CircuitBreakerConfig.Disabled, clock=clock)
    assert state(breaker) is BreakerState.DISABLED
    await trip(breaker, 100)
    assert await breaker.call(ok) == "ok"
    assert breaker.statistics().calls == 101
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    breaker.reset()
    assert state(breaker) is BreakerState.DISABLED


async def test_call_accepts_sync_functions_and_arguments(clock: ManualClock) -> None:
    """call() passes arguments and accepts plain and awaitable-returning functions."""
    breaker = CircuitBreaker(enabled(), clock=clock)
    assert await breaker.call(lambda a, b=0: a + b, 1, b=2) == 3
    assert await breaker.call(lambda: ok()) == "ok"
    assert breaker.call_sync(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        breaker.call_sync(divmod, 1, 0)
    assert breaker.statistics().failures == 1


async def test_permit_context_manager_reports_outcomes(clock: ManualClock) -> None:
    """A permit used as a context manager reports success, failure or exclusion."""
    breaker = CircuitBreaker(
        enabled(failure_threshold=2, excluded_exceptions=(NotFound,)), clock=clock
    )
    with breaker.try_acquire():
        pass
    with pytest.raises(NotFound), breaker.try_acquire():
        raise NotFound()
    with pytest.raises(Boom), breaker.try_acquire():
        raise Boom()
    permit = breaker.try_acquire()
    permit.failure()
    permit.success()  # a second report is ignored
    stats = breaker.statistics()
    assert (stats.successes, stats.failures, stats.excluded) == (1, 2, 1)
    assert state(breaker) is BreakerState.OPEN


async def test_lock_is_not_held_while_the_call_runs(clock: ManualClock) -> None:
    """The protected function can read the breaker's state without deadlocking."""
    breaker = CircuitBreaker(enabled(), clock=clock)

    def inspect_breaker() -> BreakerState:
        breaker.statistics()
        return breaker.state

    assert breaker.call_sync(inspect_breaker) is BreakerState.CLOSED
    assert await breaker.call(inspect_breaker) is BreakerState.CLOSED


async def test_listener_errors_are_logged_not_raised(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing listener is logged and the transition still happens."""

    def broken(transition: BreakerTransition) -> None:
        raise RuntimeError("listener bug")

    recorder = Recorder()
    breaker = CircuitBreaker(enabled(failure_threshold=1), clock=clock, name="hub")
    breaker.add_listener(broken)
    breaker.add_listener(recorder)
    with caplog.at_level(logging.INFO, logger="leptos_sync.reliability.breaker"):
        await trip(breaker, 1)
    assert state(breaker) is BreakerState.OPEN
    assert recorder.seen == [(BreakerState.CLOSED, BreakerState.OPEN)]
    assert "listener" in caplog.text and "hub: closed -> open" in caplog.text


async def test_statistics_snapshot(clock: ManualClock) -> None:
    """statistics() counts calls, outcomes, rejections and transitions."""
    breaker = CircuitBreaker(enabled(failure_threshold=2), clock=clock, name="s")
    await breaker.call(ok)
    await trip(breaker, 2)
    with pytest.raises(CircuitOpenError):
        await breaker.call(ok)
    stats = breaker.statistics()
    assert stats.name == "s"
    assert stats.state is BreakerState.OPEN
    assert (stats.calls, stats.successes, stats.failures) == (3, 1, 2)
    assert (stats.rejections, stats.transitions) == (1, 1)
    assert stats.half_open_in_flight == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
        ({"recovery_timeout": 0}, "recovery_timeout"),
        ({"recovery_timeout": -1}, "recovery_timeout"),
        ({"failure_rate_threshold": 1.5}, "failure_rate_threshold"),
        ({"window": 0}, "window"),
        ({"window": 5, "minimum_calls": 6}, "minimum_calls"),
        ({"slow_call_threshold": 0}, "slow_call_threshold"),
        ({"max_half_open_wait": -2}, "max_half_open_wait"),
        ({"excluded_exceptions": (int,)}, "excluded_exceptions"),
    ],
)
def test_invalid_breaker_config_names_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    """Each invalid breaker setting raises ConfigError naming its field."""
    with pytest.raises(ConfigError) as caught:
        enabled(**overrides)
    assert caught.value.field == field


# Persistence -------------------------------------------------------------------


def test_memory_state_store_satisfies_the_protocol() -> None:
    """MemoryStateStore is a StateStore that returns what was saved."""
    store = MemoryStateStore()
    assert isinstance(store, StateStore)
    assert store.load_state("k") is None
    store.save_state("k", b"v")
    assert store.load_state("k") == b"v"
    assert store.keys() == ["k"]


async def test_open_state_survives_a_new_instance(clock: ManualClock) -> None:
    """A new breaker on the same store is still open and reopens at the same time."""
    store = MemoryStateStore()
    first = CircuitBreaker(
        enabled(failure_threshold=1), clock=clock, name="hub", state_store=store
    )
    opened = clock.monotonic_ns()
    await trip(first, 1)
    assert store.keys() == ["breaker:hub"]

    clock.advance(10)
    second = CircuitBreaker(
        enabled(failure_threshold=1), clock=clock, name="hub", state_store=store
    )
    assert state(second) is BreakerState.OPEN
    clock.advance(timedelta(seconds=20) - timedelta(microseconds=1))
    assert state(second) is BreakerState.OPEN
    clock.advance(timedelta(microseconds=1))
    assert clock.monotonic_ns() - opened == 30 * S
    assert state(second) is BreakerState.HALF_OPEN


async def test_wall_clock_jump_back_does_not_stretch_the_window(
    clock: ManualClock,
) -> None:
    """After the wall clock jumps back an hour, a restored window still ends on time."""
    store = MemoryStateStore()
    first = CircuitBreaker(enabled(failure_threshold=1), clock=clock, state_store=store)
    await trip(first, 1)
    clock.advance(10)
    with pytest.raises(CircuitOpenError):
        await first.call(ok)  # the open breaker refreshes its saved deadline
    clock.jump_wall(-3600)

    second = CircuitBreaker(
        enabled(failure_threshold=1), clock=clock, state_store=store
    )
    clock.advance(timedelta(seconds=20) - timedelta(microseconds=1))
    assert state(second) is BreakerState.OPEN
    clock.advance(timedelta(microseconds=1))
    assert state(second) is BreakerState.HALF_OPEN


async def test_restored_window_never_exceeds_what_was_left(clock: ManualClock) -> None:
    """Without a refresh, a backward jump restores at most the saved remaining time."""
    store = MemoryStateStore()
    first = CircuitBreaker(enabled(failure_threshold=1), clock=clock, state_store=store)
    await trip(first, 1)
    clock.jump_wall(-3600)
    second = CircuitBreaker(
        enabled(failure_threshold=1), clock=clock, state_store=store
    )
    clock.advance(timedelta(seconds=30) - timedelta(microseconds=1))
    assert state(second) is BreakerState.OPEN
    clock.advance(timedelta(microseconds=1))
    assert state(second) is BreakerState.HALF_OPEN


async def test_wall_clock_jump_forward_ends_the_window_by_the_wall(
    clock: ManualClock,
) -> None:
    """A wall clock 15 s ahead at restore leaves 5 s of a window with 20 s left."""
    store = MemoryStateStore()
    first = CircuitBreaker(enabled(failure_threshold=1), clock=clock, state_store=store)
    await trip(first, 1)
    clock.advance(10)
    clock.jump_wall(15)
    second = CircuitBreaker(
        enabled(failure_threshold=1), clock=clock, state_store=store
    )
    clock.advance(timedelta(seconds=5) - timedelta(microseconds=1))
    assert state(second) is BreakerState.OPEN
    clock.advance(timedelta(microseconds=1))
    assert state(second) is BreakerState.HALF_OPEN


async def test_forced_open_survives_a_new_instance(clock: ManualClock) -> None:
    """An operator's force_open is restored by a new instance on the same store."""
    store = MemoryStateStore()
    CircuitBreaker(enabled(), clock=clock, state_store=store).force_open()
    restored = CircuitBreaker(enabled(), clock=clock, state_store=store)
    clock.advance(3600)
    assert state(restored) is BreakerState.FORCED_OPEN


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'{"v": 99}', b'{"v":1,"state":"open","remaining_ns":-1}'],
)
def test_unreadable_saved_state_starts_closed(
    clock: ManualClock, caplog: pytest.LogCaptureFixture, raw: bytes
) -> None:
    """Saved bytes that cannot be read are logged and the breaker starts closed."""
    store = MemoryStateStore()
    store.save_state("breaker:default", raw)
    with caplog.at_level(logging.WARNING, logger="leptos_sync.reliability.breaker"):
        breaker = CircuitBreaker(enabled(), clock=clock, state_store=store)
    assert state(breaker) is BreakerState.CLOSED
    assert "unreadable" in caplog.text


def test_failing_store_does_not_break_the_breaker(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that raises on save is logged; the breaker still opens in memory."""

    class BrokenStore:
        def load_state(self, key: str) -> bytes | None:
            return None

        def save_state(self, key: str, value: bytes) -> None:
            raise OSError("disk full")

    breaker = CircuitBreaker(
        enabled(failure_threshold=1), clock=clock, state_store=BrokenStore()
    )
    with caplog.at_level(logging.WARNING, logger="leptos_sync.reliability.breaker"):
        breaker.try_acquire().failure()
    assert state(breaker) is BreakerState.OPEN
    assert "could not save state" in caplog.text
