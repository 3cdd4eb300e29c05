"""Injectable time: the ``Clock`` protocol, a real and a manual clock, and the HLC.

Every time reading and every sleep in leptos_sync goes through a :class:`Clock`.
Production code uses :class:`SystemClock`; tests use :class:`ManualClock`, whose
time moves only when the test says so, so timing behaviour is asserted exactly and
nothing sleeps for real.

:class:`HybridLogicalClock` stamps record metadata and operations. Its timestamps
strictly increase on each replica even when the wall clock stands still or jumps
backwards, and they merge with timestamps received from other replicas.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import struct
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

from .durations import NS_PER_MS, Duration, to_ns
from .errors import ConfigError

__all__ = [
    "Clock",
    "HLCTimestamp",
    "HybridLogicalClock",
    "ManualClock",
    "SystemClock",
]


@runtime_checkable
class Clock(Protocol):
    """Where time comes from: a monotonic clock, a wall clock and sleeping."""

    def monotonic_ns(self) -> int:
        """Nanoseconds on a clock that never goes backwards (arbitrary origin)."""
        ...

    def wall_ns(self) -> int:
        """Nanoseconds since the Unix epoch; may jump in either direction."""
        ...

    async def sleep(self, seconds: Duration) -> None:
        """Suspend the calling task for the given duration on this clock."""
        ...


class SystemClock:
    """The real clocks of the machine and ``asyncio.sleep``."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def wall_ns(self) -> int:
        return time.time_ns()

    async def sleep(self, seconds: Duration) -> None:
        await asyncio.sleep(max(0, to_ns(seconds)) / 1e9)

    def __repr__(self) -> str:
        return "SystemClock()"


@dataclass(order=True)
class _Sleeper:
    deadline: int
    seq: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ManualClock:
    """A clock that moves only when told to.

    ``advance`` moves monotonic and wall time together and wakes every sleeper
    whose deadline has passed, in deadline order (ties in the order they began to
    sleep). ``set_wall`` jumps the wall clock alone, as an NTP correction or a user
    changing the system time would. The clock is safe to share between threads and
    event loops.

    Args:
        start_wall: initial wall time, as a ``datetime`` or seconds since the epoch.
        start_monotonic_ns: initial monotonic reading.
    """

    def __init__(
        self,
        start_wall: datetime | float | int = 1_700_000_000,
        start_monotonic_ns: int = 1_000_000_000_000,
    ) -> None:
        self._lock = threading.Lock()
        self._mono = start_monotonic_ns
        self._wall = self._wall_from(start_wall)
        self._sleepers: list[_Sleeper] = []
        self._seq = itertools.count()

    @staticmethod
    def _wall_from(value: datetime | float | int) -> int:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            delta = value - datetime(1970, 1, 1, tzinfo=UTC)
            return to_ns(delta)
        return to_ns(float(value) if isinstance(value, float) else int(value))

    def monotonic_ns(self) -> int:
        with self._lock:
            return self._mono

    def wall_ns(self) -> int:
        with self._lock:
            return self._wall

    async def sleep(self, seconds: Duration) -> None:
        ns = to_ns(seconds)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if ns <= 0:
                # A zero sleep still yields to the loop, as asyncio.sleep(0) does.
                future.set_result(None)
            else:
                sleeper = _Sleeper(self._mono + ns, next(self._seq), loop, future)
                heapq.heappush(self._sleepers, sleeper)
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock (cancelled ones excluded)."""
        with self._lock:
            return sum(1 for s in self._sleepers if not s.future.done())

    def next_deadline_ns(self) -> int | None:
        """The monotonic time at which the next sleeper wakes, if any."""
        with self._lock:
            live = [s.deadline for s in self._sleepers if not s.future.done()]
            return min(live) if live else None

    def advance(self, seconds: Duration) -> None:
        """Move monotonic and wall time forward and wake due sleepers in order.

        Woken tasks run when their event loop next gets control; use
        :meth:`advance_async` from inside a loop to let them run step by step.
        """
        ns = to_ns(seconds)
        if ns < 0:
            raise ConfigError("seconds", "a monotonic clock cannot go backwards")
        with self._lock:
            self._mono += ns
            self._wall += ns
            due = self._pop_due()
        for sleeper in due:
            self._dispatch(sleeper)

    async def advance_async(self, seconds: Duration, *, settle: int = 20) -> None:
        """Advance deadline by deadline, letting woken tasks run at each one.

        A task woken at one deadline may start a new sleep that ends before the
        target; it is woken at its own deadline, exactly as on a real clock.

        Args:
            seconds: how far to move.
            settle: how many loop iterations to give woken tasks at each step.
        """
        target = self.monotonic_ns() + to_ns(seconds)
        await _settle(settle)
        while True:
            with self._lock:
                live = [s for s in self._sleepers if not s.future.done()]
                nxt = min((s.deadline for s in live), default=None)
                if nxt is None or nxt > target:
                    break
                step = nxt - self._mono
                self._mono += step
                self._wall += step
                due = self._pop_due()
            for sleeper in due:
                self._dispatch(sleeper)
            await _settle(settle)
        with self._lock:
            step = target - self._mono
            self._mono += step
            self._wall += step
        await _settle(settle)

    def set_wall(self, value: datetime | float | int) -> None:
        """Jump the wall clock alone; monotonic time and sleepers are untouched."""
        wall = self._wall_from(value)
        with self._lock:
            self._wall = wall

    def jump_wall(self, seconds: Duration) -> None:
        """Move the wall clock alone by a signed duration."""
        ns = to_ns(seconds)
        with self._lock:
            self._wall += ns

    def _pop_due(self) -> list[_Sleeper]:
        due: list[_Sleeper] = []
        while self._sleepers and self._sleepers[0].deadline <= self._mono:
            due.append(heapq.heappop(self._sleepers))
        return due

    @staticmethod
    def _dispatch(sleeper: _Sleeper) -> None:
        if sleeper.future.done():
            return
        try:
            sleeper.loop.call_soon_threadsafe(_wake, sleeper.future)
        except RuntimeError:
            # The sleeper's loop is closed; nobody is waiting any more.
            pass

    def __repr__(self) -> str:
        return f"ManualClock(monotonic_ns={self._mono}, wall_ns={self._wall})"


async def _settle(iterations: int) -> None:
    for _ in range(iterations):
        await asyncio.sleep(0)


# Hybrid logical clock ----------------------------------------------------------

_LOGICAL_BITS = 16
_LOGICAL_MAX = (1 << _LOGICAL_BITS) - 1
_WALL_MS_MAX = (1 << 47) - 1  # keeps the packed value inside a signed 64-bit int
_TWO_U64 = struct.Struct(">QQ")
#: How far ahead of this clock a received timestamp may be and still be merged.
MAX_DRIFT_MS = 24 * 3600 * 1000


@dataclass(frozen=True, order=True, slots=True)
class HLCTimestamp:
    """A hybrid logical clock reading: wall milliseconds, a counter, the replica.

    Timestamps order first by ``wall_ms``, then ``logical``, then ``replica``, which
    is a total order across all replicas.
    """

    wall_ms: int
    logical: int
    replica: int

    def pack(self) -> int:
        """The time part as one 63-bit integer (``wall_ms << 16 | logical``)."""
        return (self.wall_ms << _LOGICAL_BITS) | self.logical

    @classmethod
    def unpack(cls, packed: int, replica: int) -> HLCTimestamp:
        """Rebuild a timestamp from :meth:`pack` output and its replica id."""
        if not 0 <= packed < (1 << 63):
            raise ValueError(f"packed HLC out of range: {packed}")
        return cls(packed >> _LOGICAL_BITS, packed & _LOGICAL_MAX, replica)

    def to_bytes(self) -> bytes:
        """16 bytes whose lexicographic order is the timestamps' order."""
        packed = (self.wall_ms << _LOGICAL_BITS) | self.logical
        return _TWO_U64.pack(packed, self.replica)

    @classmethod
    def from_bytes(cls, data: bytes) -> HLCTimestamp:
        if len(data) != 16:
            raise ValueError(f"an HLC timestamp is 16 bytes, got {len(data)}")
        packed = int.from_bytes(data[:8], "big")
        return cls.unpack(packed, int.from_bytes(data[8:], "big"))

    def to_datetime(self) -> datetime:
        """The wall-clock part, for display only (never for ordering)."""
        return datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=self.wall_ms)

    def __str__(self) -> str:
        return f"{self.wall_ms}.{self.logical:05d}@{self.replica:016x}"


class HybridLogicalClock:
    """Timestamps that strictly increase per replica and respect causality.

    ``now()`` returns a timestamp greater than every one this clock has issued or
    merged, whatever the wall clock does. ``update(remote)`` merges a timestamp
    received from another replica, so that later local events order after it.

    The clock is thread-safe. Persist :attr:`last` with the replica's state and pass
    it back as ``last`` on restart, so timestamps keep increasing across restarts.

    A received timestamp more than ``max_drift_ms`` ahead of this clock's wall
    time is not merged (:meth:`update` and :meth:`observe` say so): one peer with
    a clock years ahead would otherwise drag every replica's timestamps along,
    up to the end of the encodable range. Causality among sane clocks is kept;
    the far-off timestamp stays on its operation, unmerged.

    Args:
        clock: the wall clock source.
        replica_id: this replica's 64-bit id, used to break ties.
        last: the last timestamp issued before a restart, if any.
        max_drift_ms: how far ahead a merged timestamp may be (default one day).
    """

    def __init__(
        self,
        clock: Clock | None = None,
        replica_id: int = 0,
        last: HLCTimestamp | None = None,
        max_drift_ms: int = MAX_DRIFT_MS,
    ) -> None:
        if not 0 <= replica_id < (1 << 64):
            raise ConfigError("replica_id", "must be an unsigned 64-bit integer")
        if isinstance(max_drift_ms, bool) or not isinstance(max_drift_ms, int):
            raise ConfigError("max_drift_ms", f"an int, got {max_drift_ms!r}")
        if max_drift_ms < 0:
            raise ConfigError("max_drift_ms", f"must not be negative: {max_drift_ms}")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self.replica_id = replica_id
        self.max_drift_ms = max_drift_ms
        #: Received timestamps not merged for being too far ahead.
        self.rejected = 0
        self._lock = threading.Lock()
        self._wall_ms = last.wall_ms if last is not None else 0
        self._logical = last.logical if last is not None else 0

    @property
    def last(self) -> HLCTimestamp:
        """The greatest timestamp issued or merged so far."""
        with self._lock:
            return HLCTimestamp(self._wall_ms, self._logical, self.replica_id)

    def now(self) -> HLCTimestamp:
        """Issue a new timestamp, strictly greater than every earlier one."""
        physical = self._physical_ms()
        with self._lock:
            if physical > self._wall_ms:
                self._wall_ms, self._logical = physical, 0
            else:
                self._tick()
            return HLCTimestamp(self._wall_ms, self._logical, self.replica_id)

    def update(self, remote: HLCTimestamp) -> HLCTimestamp:
        """Merge a received timestamp and issue one greater than both.

        A timestamp too far ahead (see the class) is not merged: the one issued
        is then greater than this clock's own readings only.
        """
        physical = self._physical_ms()
        if not self._acceptable(remote, physical):
            return self.now()
        with self._lock:
            top = max(physical, self._wall_ms, remote.wall_ms)
            if top == self._wall_ms and top == remote.wall_ms:
                self._logical = max(self._logical, remote.logical)
                self._tick()
            elif top == self._wall_ms:
                self._tick()
            elif top == remote.wall_ms:
                self._wall_ms, self._logical = top, remote.logical
                self._tick()
            else:
                self._wall_ms, self._logical = top, 0
            return HLCTimestamp(self._wall_ms, self._logical, self.replica_id)

    def observe(self, remote: HLCTimestamp) -> bool:
        """Merge a received timestamp without issuing one.

        Returns ``False`` (merging nothing) for a timestamp too far ahead.
        """
        if not self._acceptable(remote, self._physical_ms()):
            return False
        with self._lock:
            if (remote.wall_ms, remote.logical) > (self._wall_ms, self._logical):
                self._wall_ms, self._logical = remote.wall_ms, remote.logical
        return True

    def _acceptable(self, remote: HLCTimestamp, physical: int) -> bool:
        with self._lock:
            ahead = remote.wall_ms - max(physical, self._wall_ms)
            if ahead <= self.max_drift_ms:
                return True
            self.rejected += 1
            return False

    def _tick(self) -> None:
        # The counter has 16 bits; when a burst exhausts it within one
        # millisecond, borrow the next millisecond rather than wrap around.
        if self._logical >= _LOGICAL_MAX:
            self._wall_ms += 1
            self._logical = 0
        else:
            self._logical += 1

    def _physical_ms(self) -> int:
        ms = self._clock.wall_ns() // NS_PER_MS
        return ms if 0 <= ms <= _WALL_MS_MAX else min(max(ms, 0), _WALL_MS_MAX)

    def __repr__(self) -> str:
        return f"HybridLogicalClock(replica_id={self.replica_id:#x}, last={self.last})"
