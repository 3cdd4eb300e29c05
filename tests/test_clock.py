"""Tests of the injectable clocks and the hybrid logical clock."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from leptos_sync.clock import HLCTimestamp, HybridLogicalClock, ManualClock, SystemClock
from leptos_sync.errors import ConfigError


def test_hlc_strictly_increases_with_frozen_wall_clock_and_after_a_jump_back() -> None:
    """With the wall clock frozen, 10,000 timestamps strictly increase, and they
    keep increasing after the wall clock jumps back one hour."""
    clock = ManualClock()
    hlc = HybridLogicalClock(clock, replica_id=7)
    stamps = [hlc.now() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(stamps))

    clock.jump_wall(timedelta(hours=-1))
    after = [hlc.now() for _ in range(1_000)]
    assert stamps[-1] < after[0]
    assert all(a < b for a, b in itertools.pairwise(after))


def test_hlc_packed_values_increase_too() -> None:
    """The packed form (what the wire and the store carry) keeps the order."""
    clock = ManualClock()
    hlc = HybridLogicalClock(clock, replica_id=1)
    packed = [hlc.now().pack() for _ in range(70_000)]
    assert all(a < b for a, b in itertools.pairwise(packed))


def test_hlc_logical_counter_overflow_borrows_the_next_millisecond() -> None:
    """A burst beyond 65,535 stamps in one millisecond moves to the next one."""
    clock = ManualClock()
    hlc = HybridLogicalClock(clock, replica_id=1)
    first = hlc.now()
    for _ in range(65_535):
        last = hlc.now()
    assert last.wall_ms == first.wall_ms and last.logical == 65_535
    assert hlc.now() == HLCTimestamp(first.wall_ms + 1, 0, 1)


def test_hlc_follows_the_wall_clock_when_it_moves_forward() -> None:
    """A later wall time resets the logical counter."""
    clock = ManualClock()
    hlc = HybridLogicalClock(clock, replica_id=1)
    hlc.now()
    hlc.now()
    clock.advance(1)
    stamp = hlc.now()
    assert stamp.logical == 0
    assert stamp.wall_ms == clock.wall_ns() // 1_000_000


def test_hlc_update_orders_after_a_remote_timestamp_from_the_future() -> None:
    """Merging a remote stamp ahead of the local clock orders later events after it."""
    clock = ManualClock()
    hlc = HybridLogicalClock(clock, replica_id=1)
    remote = HLCTimestamp(clock.wall_ns() // 1_000_000 + 60_000, 5, 2)
    merged = hlc.update(remote)
    assert merged > remote
    assert hlc.now() > merged


def test_hlc_observe_merges_without_issuing() -> None:
    """observe() raises the clock to a remote stamp without ticking past it."""
    clock = ManualClock()
    hlc = HybridLogicalClock(clock, replica_id=1)
    remote = HLCTimestamp(clock.wall_ns() // 1_000_000 + 5, 3, 2)
    hlc.observe(remote)
    assert (hlc.last.wall_ms, hlc.last.logical) == (remote.wall_ms, remote.logical)
    assert hlc.now() > remote


def test_hlc_resumes_after_restart_from_last() -> None:
    """A clock rebuilt from its last timestamp never issues a smaller one."""
    clock = ManualClock()
    hlc = HybridLogicalClock(clock, replica_id=3)
    for _ in range(10):
        hlc.now()
    saved = hlc.last
    clock.jump_wall(timedelta(days=-1))
    again = HybridLogicalClock(clock, replica_id=3, last=saved)
    assert again.now() > saved


def test_hlc_bytes_sort_like_timestamps() -> None:
    """to_bytes() sorts lexicographically in timestamp order and round-trips."""
    stamps = [
        HLCTimestamp(5, 0, 9),
        HLCTimestamp(5, 1, 1),
        HLCTimestamp(6, 0, 0),
        HLCTimestamp(6, 0, 2),
    ]
    assert sorted(stamps, key=HLCTimestamp.to_bytes) == stamps
    for stamp in stamps:
        assert HLCTimestamp.from_bytes(stamp.to_bytes()) == stamp
        assert HLCTimestamp.unpack(stamp.pack(), stamp.replica) == stamp


def test_hlc_rejects_bad_inputs() -> None:
    """Out-of-range replica ids, packed values and byte lengths are refused."""
    with pytest.raises(ConfigError):
        HybridLogicalClock(ManualClock(), replica_id=-1)
    with pytest.raises(ValueError):
        HLCTimestamp.unpack(-1, 0)
    with pytest.raises(ValueError):
        HLCTimestamp.from_bytes(b"short")


def test_manual_clock_advance_moves_both_clocks_and_set_wall_only_wall() -> None:
    """advance() moves monotonic and wall time; set_wall() jumps the wall alone."""
    clock = ManualClock(start_wall=datetime(2024, 1, 1, tzinfo=UTC))
    mono, wall = clock.monotonic_ns(), clock.wall_ns()
    clock.advance(timedelta(milliseconds=1500))
    assert clock.monotonic_ns() - mono == 1_500_000_000
    assert clock.wall_ns() - wall == 1_500_000_000
    clock.set_wall(0)
    assert clock.wall_ns() == 0
    assert clock.monotonic_ns() - mono == 1_500_000_000
    with pytest.raises(ConfigError):
        clock.advance(-1)


async def test_manual_clock_wakes_sleepers_in_deadline_order() -> None:
    """Sleepers wake in deadline order, ties in the order they began to sleep."""
    clock = ManualClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [
        asyncio.ensure_future(sleeper(name, delay))
        for name, delay in (("c", 3), ("a", 1), ("b", 2), ("a2", 1))
    ]
    await asyncio.sleep(0)
    assert clock.sleepers() == 4
    assert clock.next_deadline_ns() == clock.monotonic_ns() + 1_000_000_000
    await clock.advance_async(2.5)
    assert woke == ["a", "a2", "b"]
    await clock.advance_async(1)
    await asyncio.gather(*tasks)
    assert woke == ["a", "a2", "b", "c"]


async def test_system_clock_reads_real_time() -> None:
    """SystemClock's monotonic clock never goes back and sleep(0) returns."""
    clock = SystemClock()
    first = clock.monotonic_ns()
    await clock.sleep(0)
    assert clock.monotonic_ns() >= first
    assert clock.wall_ns() > 1_600_000_000 * 10**9


def test_regression_a_timestamp_far_ahead_is_not_merged() -> None:
    """A peer whose clock is years ahead cannot drag this clock along (one such
    peer used to push every replica's timestamps to the end of the encodable
    range, where SQLite could no longer store them). Within a day it merges."""
    clock = ManualClock()
    hlc = HybridLogicalClock(clock, 1)
    now_ms = clock.wall_ns() // 1_000_000
    near = HLCTimestamp(now_ms + 3_600_000, 5, 2)  # an hour ahead
    assert hlc.observe(near) and hlc.last.wall_ms == now_ms + 3_600_000
    far = HLCTimestamp((1 << 47) - 1, 65_535, 3)  # the largest encodable
    assert not hlc.observe(far)
    stamp = hlc.update(far)
    assert stamp.wall_ms == now_ms + 3_600_000 and stamp.replica == 1
    assert hlc.rejected == 2
    # Issuing goes on from this clock's own time, as far as anyone needs.
    for _ in range(70_000):
        last = hlc.now()
    assert last.pack() < 1 << 63 and last.wall_ms < now_ms + 3_700_000
    with pytest.raises(ConfigError, match="max_drift_ms"):
        HybridLogicalClock(clock, 1, max_drift_ms=-1)
