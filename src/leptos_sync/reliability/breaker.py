"""The circuit breaker: stop calling a failing peer, then probe it back.

States and transitions (one method, :meth:`CircuitBreaker._transition`, changes
state, and every change is logged, persisted and told to the listeners)::

    CLOSED ──failure_threshold consecutive failures (or the failure rate)──▶ OPEN
    OPEN ──recovery_timeout elapsed on the monotonic clock──▶ HALF_OPEN
    HALF_OPEN ──half_open_max_calls trial calls all succeeded──▶ CLOSED
    HALF_OPEN ──a trial call failed, or hung past max_half_open_wait──▶ OPEN
    any ──force_open()──▶ FORCED_OPEN      any ──disable()──▶ DISABLED
    any ──reset()──▶ CLOSED

Time-driven transitions happen lazily, when a call or a state read looks at the
clock, so the breaker needs no background task. While OPEN or FORCED_OPEN, and
while HALF_OPEN has admitted its trial calls, callers get
:class:`~leptos_sync.errors.CircuitOpenError` at once and the function is not
called.

Bookkeeping happens under a ``threading.Lock``; the protected call, the listeners
and the state store all run after it is released. Each admitted call carries the
epoch of the state that admitted it, so the outcome of a call that started before
a transition cannot move the new state.

Persistence: with a ``state_store``, every transition saves the state under
``breaker:{name}``. Monotonic readings mean nothing after a restart, so an open
breaker is saved with its remaining open time and the wall-clock instant at which
that ends; while open, the save is refreshed at most once a second when a call or
a state read looks at the breaker. On restore the remaining time is::

    remaining = min(saved_remaining, max(0, saved_wall_deadline - wall_now))

Forced-open and disabled states are restored as they were; a half-open breaker
is restored half-open with no trial calls running. The rule never keeps a
breaker open longer than it had left at the last save, so
a wall clock jumping back cannot stretch the window by more than the time since
that save; a wall clock jumping forward can only shorten it, and a restarted
process never closes an open breaker at once unless its time is up.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ..clock import Clock, SystemClock
from ..errors import CircuitOpenError
from . import breaker_store as codec
from .breaker_config import CircuitBreakerConfig, EnabledBreakerConfig
from .breaker_types import (
    FAILURE,
    RELEASE,
    SUCCESS,
    BreakerState,
    BreakerStatistics,
    BreakerTransition,
    Event,
    Permit,
    rejection_message,
)
from .state_store import StateStore

__all__ = [
    "BreakerState",
    "BreakerStatistics",
    "BreakerTransition",
    "CircuitBreaker",
    "Permit",
]

T = TypeVar("T")
_log = logging.getLogger(__name__)

# While open, the saved state is refreshed at most this often (on the next call or
# state read), so that a restart after a wall-clock jump restores the window
# within this much of the truth.
_CHECKPOINT_NS = 1_000_000_000


class CircuitBreaker:
    """Guards calls to a peer that may fail; see the module docstring.

    Args:
        config: ``CircuitBreakerConfig.Disabled`` or ``.Enabled(...)``.
        clock: the monotonic and wall clock; the system clock by default.
        name: names the breaker in logs, statistics and the state store key.
        state_store: where to persist the state across restarts, if anywhere.
        listeners: called with a :class:`BreakerTransition` after each change,
            outside the lock; an error in a listener is logged, not raised.
        logger: where transitions are logged (INFO); this module's by default.
    """

    def __init__(
        self,
        config: CircuitBreakerConfig = CircuitBreakerConfig.Disabled,
        clock: Clock | None = None,
        *,
        name: str = "default",
        state_store: StateStore | None = None,
        listeners: Iterable[Callable[[BreakerTransition], object]] = (),
        logger: logging.Logger | None = None,
    ) -> None:
        self._config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.name = name
        self._listeners = list(listeners)
        self._logger = logger if logger is not None else _log
        self._lock = threading.Lock()
        self._store = (
            None
            if state_store is None
            else codec.BreakerStateStore(state_store, name, self._logger)
        )

        # Thresholds, read on every call.
        enabled = config if isinstance(config, EnabledBreakerConfig) else None
        self._enabled = enabled
        self._excluded = enabled.excluded_exceptions if enabled else ()
        self._threshold = enabled.failure_threshold if enabled else 0
        self._trial_calls = enabled.half_open_max_calls if enabled else 0
        self._slow_ns = enabled.slow_call_ns if enabled else None
        self._rate = enabled.failure_rate_threshold if enabled else None
        self._window: deque[bool] = deque(maxlen=enabled.window if enabled else 1)
        self._minimum_calls = enabled.minimum_calls if enabled else 0
        self._recovery_ns = enabled.recovery_ns if enabled else 0
        self._max_trial_ns = enabled.max_half_open_wait_ns if enabled else None
        self._plain_successes = self._slow_ns is None and self._rate is None

        # State, changed only under the lock.
        self._state = BreakerState.CLOSED if enabled else BreakerState.DISABLED
        self._epoch = 1
        self._seq = 0
        self._consecutive = 0
        self._window_failures = 0
        self._opened_at: int | None = None
        self._open_until = 0
        self._probes: dict[int, int] = {}
        self._probe_successes = 0
        self._next_probe = 1
        self._checkpoint = 0
        self._successes = self._failures = 0
        self._excluded_count = self._rejections = self._transitions = 0

        if enabled is not None and self._store is not None:
            self._restore(self._store)

    # Reading ---------------------------------------------------------------

    @property
    def config(self) -> CircuitBreakerConfig:
        return self._config

    @property
    def state(self) -> BreakerState:
        """The current state, after any transition that time has made due."""
        events: list[Event] = []
        with self._lock:
            self._advance(self._clock.monotonic_ns(), events)
            state = self._state
        if events:
            self._emit(events)
        return state

    def statistics(self) -> BreakerStatistics:
        """A consistent snapshot of the counters."""
        events: list[Event] = []
        with self._lock:
            self._advance(self._clock.monotonic_ns(), events)
            stats = BreakerStatistics(
                name=self.name,
                state=self._state,
                consecutive_failures=self._consecutive,
                calls=self._successes + self._failures + self._excluded_count,
                successes=self._successes,
                failures=self._failures,
                excluded=self._excluded_count,
                rejections=self._rejections,
                transitions=self._transitions,
                opened_at_ns=self._opened_at,
                half_open_in_flight=len(self._probes),
            )
        self._emit(events)
        return stats

    # Calling ---------------------------------------------------------------

    def try_acquire(self) -> Permit:
        """Ask to make one call; report its outcome on the returned permit.

        Raises:
            CircuitOpenError: the breaker is open, or half-open with every
                trial slot taken.
        """
        return Permit(self, *self._admit())

    async def call(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` through the breaker and await the result.

        ``fn`` may be a coroutine function, return any awaitable, or be a plain
        function. A cancelled call gives its permit back.

        Raises:
            CircuitOpenError: the call was rejected and ``fn`` was not called.
        """
        epoch, probe, start = self._admit()
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:
            failed = RELEASE if isinstance(error, self._excluded) else FAILURE
            self._record(epoch, probe, start, failed)
            raise
        except BaseException:
            self._record(epoch, probe, start, RELEASE)
            raise
        self._record(epoch, probe, start, SUCCESS)
        return result

    def call_sync(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Call a plain function through the breaker; safe from any thread.

        Raises:
            CircuitOpenError: the call was rejected and ``fn`` was not called.
        """
        # The closed, unmeasured case inlined: one call less on the hot path.
        epoch = self._epoch
        if self._state is BreakerState.CLOSED and self._slow_ns is None:
            probe = start = 0
        else:
            epoch, probe, start = self._admit()
        try:
            result = fn(*args, **kwargs)
        except Exception as error:
            failed = RELEASE if isinstance(error, self._excluded) else FAILURE
            self._record(epoch, probe, start, failed)
            raise
        except BaseException:
            self._record(epoch, probe, start, RELEASE)
            raise
        self._record(epoch, probe, start, SUCCESS)
        return result

    # Operator actions ------------------------------------------------------

    def force_open(self) -> None:
        """Reject every call until :meth:`reset`."""
        self._set(BreakerState.FORCED_OPEN)

    def disable(self) -> None:
        """Let every call through, never tripping, until :meth:`reset`."""
        self._set(BreakerState.DISABLED)

    def reset(self) -> None:
        """Close the breaker and forget past failures.

        A breaker configured with ``CircuitBreakerConfig.Disabled`` goes back
        to ``DISABLED`` instead (for example after :meth:`force_open`).
        """
        self._set(BreakerState.CLOSED if self._enabled else BreakerState.DISABLED)

    def add_listener(self, listener: Callable[[BreakerTransition], object]) -> None:
        """Also call ``listener`` after each transition."""
        self._listeners.append(listener)

    # Bookkeeping (under the lock) -----------------------------------------

    def _set(self, state: BreakerState) -> None:
        events: list[Event] = []
        with self._lock:
            self._transition(state, self._clock.monotonic_ns(), events)
        self._emit(events)

    def _admit(self) -> tuple[int, int, int]:
        """Admit one call or raise; return its epoch, trial number and start.

        A closed breaker admits without the lock: reading the epoch, then the
        state, are single atomic reads, and if a transition slips in between,
        the call simply counts as admitted just before it (its outcome then
        carries an old epoch and moves nothing).
        """
        epoch = self._epoch
        current = self._state
        if current is BreakerState.CLOSED:
            start = 0 if self._slow_ns is None else self._clock.monotonic_ns()
            return epoch, 0, start

        events: list[Event] = []
        admitted: tuple[int, int, int] | None = None
        remaining = 0
        with self._lock:
            now = self._clock.monotonic_ns()
            self._advance(now, events)
            state = self._state
            if state is BreakerState.CLOSED:
                admitted = (self._epoch, 0, now)
            elif state is BreakerState.DISABLED:
                admitted = (0, 0, now)
            elif (
                state is BreakerState.HALF_OPEN
                and len(self._probes) + self._probe_successes < self._trial_calls
            ):
                probe = self._next_probe
                self._next_probe += 1
                self._probes[probe] = now
                admitted = (self._epoch, probe, now)
            else:
                self._rejections += 1
                remaining = max(0, self._open_until - now)
        if events:
            self._emit(events)

        if admitted is None:
            raise CircuitOpenError(
                rejection_message(self.name, state, remaining, self._trial_calls)
            )
        return admitted

    def _record(self, epoch: int, probe: int, start_ns: int, outcome: int) -> None:
        """Count how an admitted call ended and make the transitions it causes."""
        if outcome == SUCCESS and not probe and self._plain_successes:
            # The hot path: a success while closed only resets the failure
            # count. An explicit acquire/release is markedly cheaper than
            # ``with`` here; an equal epoch means the breaker is still closed.
            lock = self._lock
            lock.acquire()
            try:
                self._successes += 1
                if epoch == self._epoch:
                    self._consecutive = 0
            finally:
                lock.release()
            return

        events: list[Event] = []
        with self._lock:
            # A slow success is a failure: the peer is not healthy.
            slow = self._slow_ns
            if outcome == SUCCESS and slow is not None:
                outcome = (
                    FAILURE if self._clock.monotonic_ns() - start_ns > slow else outcome
                )
            if outcome == SUCCESS:
                self._successes += 1
            elif outcome == FAILURE:
                self._failures += 1
            else:
                self._excluded_count += 1

            if probe:
                self._record_trial(probe, outcome, events)
            elif epoch == self._epoch and self._state is BreakerState.CLOSED:
                self._record_closed(outcome, events)
        if events:
            self._emit(events)

    def _record_closed(self, outcome: int, events: list[Event]) -> None:
        if outcome == RELEASE:
            return
        failed = outcome == FAILURE
        self._consecutive = self._consecutive + 1 if failed else 0
        tripped = self._consecutive >= self._threshold
        if self._rate is not None:
            window = self._window
            if len(window) == window.maxlen and window[0]:
                self._window_failures -= 1
            window.append(failed)
            self._window_failures += failed
            if len(window) >= self._minimum_calls:
                tripped = tripped or self._window_failures >= self._rate * len(window)
        if tripped:
            self._transition(BreakerState.OPEN, self._clock.monotonic_ns(), events)

    def _record_trial(self, probe: int, outcome: int, events: list[Event]) -> None:
        if self._probes.pop(probe, None) is None:
            return  # a trial from an earlier half-open period: it moves nothing
        if outcome == FAILURE:
            self._transition(BreakerState.OPEN, self._clock.monotonic_ns(), events)
        elif outcome == SUCCESS:
            self._probe_successes += 1
            if self._probe_successes >= self._trial_calls:
                self._transition(
                    BreakerState.CLOSED, self._clock.monotonic_ns(), events
                )

    def _advance(self, now: int, events: list[Event]) -> None:
        """Make the transitions that time alone has made due."""
        if self._state is BreakerState.OPEN:
            if now >= self._open_until:
                self._transition(BreakerState.HALF_OPEN, now, events)
            elif self._store is not None and now - self._checkpoint >= _CHECKPOINT_NS:
                self._save_checkpoint(now, events)
        elif self._state is BreakerState.HALF_OPEN and self._probes:
            limit = self._max_trial_ns
            if limit is not None and now - min(self._probes.values()) >= limit:
                self._transition(BreakerState.OPEN, now, events)

    def _transition(self, new: BreakerState, now: int, events: list[Event]) -> None:
        """The one place that changes state."""
        old = self._state
        if old is new and new is not BreakerState.CLOSED:
            return
        self._state = new
        self._epoch += 1
        self._probes.clear()
        self._probe_successes = 0
        if new is BreakerState.CLOSED:
            self._consecutive = 0
            self._window.clear()
            self._window_failures = 0
        elif new is BreakerState.OPEN:
            self._opened_at = now
            self._open_until = now + self._recovery_ns
        if old is new:
            return  # a reset of a closed breaker only clears its counters

        self._transitions += 1
        self._seq += 1
        payload = None
        if self._store is not None:
            remaining = self._open_until - now if new is BreakerState.OPEN else 0
            payload = codec.encode(new.value, remaining, self._clock.wall_ns())
            self._checkpoint = now
        events.append(Event(old, new, now, self._seq, payload))

    def _save_checkpoint(self, now: int, events: list[Event]) -> None:
        """Save an open breaker's remaining time again, without a transition.

        The saved wall-clock deadline is only as good as the wall clock was at
        the save; refreshing it now and then bounds how far a wall-clock jump
        before a restart can stretch the restored window.
        """
        self._seq += 1
        self._checkpoint = now
        remaining = self._open_until - now
        payload = codec.encode(self._state.value, remaining, self._clock.wall_ns())
        events.append(Event(None, self._state, now, self._seq, payload))

    # Effects (outside the lock) -------------------------------------------

    def _emit(self, events: list[Event]) -> None:
        for event in events:
            old, new = event.old, event.new
            if event.payload is not None and self._store is not None:
                self._store.save(event.seq, event.payload)
            if old is None:
                continue  # a checkpoint, not a transition
            self._logger.info(
                "circuit breaker %s: %s -> %s", self.name, old.value, new.value
            )
            transition = BreakerTransition(self.name, old, new, event.monotonic_ns)
            for listener in list(self._listeners):
                try:
                    listener(transition)
                except Exception:
                    self._logger.exception(
                        "circuit breaker %s: listener %r failed", self.name, listener
                    )

    def _restore(self, store: codec.BreakerStateStore) -> None:
        saved = store.load()
        if saved is None:
            return
        state = BreakerState(saved.state)
        now = self._clock.monotonic_ns()
        self._state = state
        if state is BreakerState.OPEN:
            remaining = codec.restored_remaining(saved, self._clock.wall_ns())
            self._open_until = now + remaining
            self._checkpoint = now
            self._opened_at = self._open_until - self._recovery_ns
        self._logger.info(
            "circuit breaker %s: restored %s state", self.name, state.value
        )

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self._state.value})"
