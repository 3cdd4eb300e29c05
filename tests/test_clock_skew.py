"""Clock skew: replicas whose wall clocks disagree, or jump back, lose nothing.

What is new to a replica is decided by the server's sequence numbers (its
cursor), and the order of a record's changes by causality (Loro's Lamport
clock) and the hybrid logical clock, never by raw wall time. The replicas here
run real managers against a real server, each on a system clock with its wall
time shifted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from leptos_sync import (
    EndToEndSyncManager,
    HubStore,
    ReliabilityConfig,
    RetryPolicy,
    Storage,
    SyncConfig,
    SystemClock,
    Transport,
    fields,
)
from leptos_sync.server.app import SyncServer
from leptos_sync.server.run import serve_in_background

COLL = "docs"
HOUR = 3600.0


class SkewedClock(SystemClock):
    """The system clock with its wall time moved by ``offset`` seconds."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset_ns = int(offset * 1e9)

    def wall_ns(self) -> int:
        return super().wall_ns() + self.offset_ns

    def jump(self, seconds: float) -> None:
        """Move the wall clock (only), as an NTP step or a user would."""
        self.offset_ns += int(seconds * 1e9)


def _config() -> SyncConfig:
    return SyncConfig(
        reliability=ReliabilityConfig(
            retry_policy=RetryPolicy.Fixed(timedelta(milliseconds=50)),
            max_retries=10_000,
        ),
        poll_interval=timedelta(milliseconds=50),
        status_interval=None,
    )


async def until(predicate: object, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {limit} s waiting for {what}")


class Fleet:
    """Replicas, each with its own clock, store and connection."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.url = url
        self.tmp = tmp
        self.managers: dict[str, EndToEndSyncManager] = {}
        self.clocks: dict[str, SkewedClock] = {}

    def add(self, name: str, offset: float) -> EndToEndSyncManager:
        clock = SkewedClock(offset)
        m = EndToEndSyncManager(
            Storage.sqlite(self.tmp / f"{name}.sqlite3"),
            Transport.websocket(self.url),
            _config(),
            clock=clock,
        )
        m.collection(COLL)
        self.managers[name] = m
        self.clocks[name] = clock
        return m

    def coll(self, name: str):  # type: ignore[no-untyped-def]
        return self.managers[name].collection(COLL)

    async def settle(self, limit: float = 15.0) -> dict[str, object]:
        """Wait until every started replica is synced and all hold one state."""
        started = [m for m in self.managers.values() if m._running]
        for m in started:
            await m.wait_synced(limit)

        def same() -> bool:
            states = [m.collection(COLL).to_dict() for m in started]
            return all(s == states[0] for s in states)

        await until(same, limit, "the replicas to agree")
        return started[0].collection(COLL).to_dict()

    async def stop(self) -> None:
        for m in self.managers.values():
            await m.stop()


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    server = SyncServer(HubStore.sqlite(tmp_path / "hub.sqlite3"))
    async with serve_in_background(server) as running:
        group = Fleet(running.url, tmp_path)
        try:
            yield group
        finally:
            await group.stop()


async def test_replicas_an_hour_apart_order_edits_by_causality(fleet: Fleet) -> None:
    """An edit made after seeing another wins, though its wall clock is 2 h behind."""
    ahead, behind, right = (
        fleet.add("ahead", +HOUR),
        fleet.add("behind", -HOUR),
        (fleet.add("right", 0.0)),
    )
    for m in (ahead, behind, right):
        await m.start()

    fleet.coll("ahead").insert("doc", {"v": "ahead-1", "n": fields.counter()})
    await fleet.settle()
    first = fleet.coll("right").meta("doc").updated

    # "behind" has seen "ahead"'s edit; its own is causally later and must win
    # everywhere, and its HLC stamp must order after, whatever its wall clock.
    fleet.coll("behind").update("doc", {"v": "behind-2"})
    state = await fleet.settle()
    assert state["doc"]["v"] == "behind-2"
    second = fleet.coll("ahead").meta("doc").updated
    assert (second.wall_ms, second.logical) > (first.wall_ms, first.logical)
    assert second.replica == behind.replica.replica_id

    fleet.coll("right").update("doc", {"v": "right-3"})
    for name in ("ahead", "behind", "right"):
        fleet.coll(name).counter("doc", "n").increment(1)
    state = await fleet.settle()
    assert state["doc"] == {"v": "right-3", "n": 3}
    third = fleet.coll("behind").meta("doc").updated
    assert (third.wall_ms, third.logical) > (second.wall_ms, second.logical)


async def test_a_document_written_offline_with_an_older_timestamp_arrives(
    fleet: Fleet,
) -> None:
    """A replica an hour behind, offline, writes; every replica gets it later."""
    ahead, right = fleet.add("ahead", +HOUR), fleet.add("right", 0.0)
    late = fleet.add("late", -HOUR)  # not started: offline
    await ahead.start()
    await right.start()
    for i in range(20):
        fleet.coll("ahead").insert(f"new{i}", {"i": i})
    await fleet.settle()

    fleet.coll("late").insert("old-doc", {"text": "written offline, an hour ago"})
    stamped = fleet.coll("late").meta("old-doc").created
    newest = max(fleet.coll("right").meta(f"new{i}").created.wall_ms for i in range(20))
    assert stamped.wall_ms < newest - 3_000_000  # older by about two hours

    await late.start()
    state = await fleet.settle()
    assert state["old-doc"] == {"text": "written offline, an hour ago"}
    assert len(state) == 21
    # The record keeps its own (older) stamp everywhere.
    for name in ("ahead", "right"):
        assert fleet.coll(name).meta("old-doc").created == stamped


async def test_a_clock_that_jumps_back_neither_skips_nor_reorders(fleet: Fleet) -> None:
    """Writes after a 2 h backward jump still order after the ones before it."""
    jumper, watcher = fleet.add("jumper", 0.0), fleet.add("watcher", -HOUR)
    await jumper.start()
    await watcher.start()
    coll = fleet.coll("jumper")
    coll.insert("doc", {"last": 0, "n": fields.counter()})
    stamps = [coll.meta("doc").updated]
    for step in range(1, 9):
        if step == 5:
            fleet.clocks["jumper"].jump(-2 * HOUR)
        coll.update("doc", {"last": step})
        coll.counter("doc", "n").increment(1)
        coll.insert(f"step{step}", {"step": step})
        stamps.append(coll.meta("doc").updated)
        if step % 2 == 0:
            await fleet.settle()
            assert fleet.coll("watcher").get("doc") == {"last": step, "n": step}

    ordered = [(s.wall_ms, s.logical) for s in stamps]
    assert ordered == sorted(ordered) and len(set(ordered)) == len(ordered)
    state = await fleet.settle()
    assert state["doc"] == {"last": 8, "n": 8}
    assert {f"step{s}" for s in range(1, 9)} <= set(state)

    # A restart after the jump keeps the clock ahead of everything issued.
    await jumper.stop()
    again = fleet.add("jumper", -2 * HOUR)
    await again.start()
    fleet.coll("jumper").update("doc", {"last": 9})
    later = fleet.coll("jumper").meta("doc").updated
    assert (later.wall_ms, later.logical) > ordered[-1]
    state = await fleet.settle()
    assert state["doc"]["last"] == 9
