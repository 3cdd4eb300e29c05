"""Tests of EndToEndSyncManager over the in-memory transport (real asyncio)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from leptos_sync import (
    ClosedError,
    ConfigError,
    EndToEndSyncManager,
    HubStore,
    Storage,
    SyncConfig,
    Transport,
    UsageError,
    fields,
)
from leptos_sync.clock import ManualClock
from leptos_sync.crdt import Change
from leptos_sync.transport.memory import InMemoryNetwork, InMemoryTransport

# Short timeouts so lost frames are resent within a test's second or two.
FAST = SyncConfig(
    ack_timeout=0.15,
    poll_interval=0.02,
    heartbeat_interval=0.1,
    heartbeat_timeout=0.4,
    status_interval=None,
)


async def managers(
    network: InMemoryNetwork, count: int, config: SyncConfig = FAST
) -> list[EndToEndSyncManager]:
    made = []
    for _ in range(count):
        manager = EndToEndSyncManager(
            Storage.memory(), Transport.in_memory(network), config
        )
        manager.collection("c")
        await manager.start()
        made.append(manager)
    return made


@pytest.fixture
async def network() -> AsyncIterator[InMemoryNetwork]:
    yield InMemoryNetwork(seed=7)


async def stop_all(ms: list[EndToEndSyncManager]) -> None:
    for manager in ms:
        await manager.stop()


def states(ms: list[EndToEndSyncManager]) -> list[dict[str, object]]:
    return [manager.collection("c").to_dict() for manager in ms]


async def test_local_and_remote_changes_reach_callbacks_and_the_iterator(
    network: InMemoryNetwork,
) -> None:
    """Local and remote changes are reported to on_change callbacks and to the
    changes() async iterator."""
    a, b = await managers(network, 2)
    await asyncio.gather(a.wait_synced(2), b.wait_synced(2))
    seen: list[Change] = []
    unsubscribe = b.on_change(seen.extend)
    stream = b.changes()
    first = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)

    b.collection("c").insert("mine", {"x": 1})
    a.collection("c").insert("theirs", {"x": 2})
    await a.wait_synced(2)
    for _ in range(100):
        if len(seen) >= 2:
            break
        await asyncio.sleep(0.01)

    assert [(c.record_id, c.kind, c.origin) for c in seen] == [
        ("mine", "insert", "local"),
        ("theirs", "insert", "remote"),
    ]
    assert await first == Change("c", "mine", "insert", "local")
    assert await stream.__anext__() == Change("c", "theirs", "insert", "remote")
    unsubscribe()
    a.collection("c").update("theirs", {"x": 3})
    await asyncio.sleep(0.05)
    assert len(seen) == 2
    assert await stream.__anext__() == Change("c", "theirs", "update", "remote")
    await stop_all([a, b])
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_converges_under_drop_duplicate_and_reorder(
    network: InMemoryNetwork,
) -> None:
    """Three managers converge and wait_synced returns despite dropped,
    duplicated and reordered frames."""
    ms = await managers(network, 3)
    await asyncio.gather(*(m.wait_synced(2) for m in ms))
    for i, m in enumerate(ms):
        m.collection("c").insert(f"ctr{i}", {"n": fields.counter()})
    await asyncio.gather(*(m.wait_synced(2) for m in ms))

    network.faults.drop = 0.15
    network.faults.duplicate = 0.15
    network.faults.reorder = 0.15
    for round_ in range(25):
        for i, m in enumerate(ms):
            m.collection("c").counter(f"ctr{(i + round_) % 3}", "n").increment(1)
        m.collection("c").upsert(f"r{round_ % 4}", {"round": round_})
        await asyncio.sleep(0.005)
    network.faults.drop = network.faults.duplicate = network.faults.reorder = 0.0
    # A last write from each replica: its ack shows any change lost on the
    # way to it (the session then pulls again).
    for i, m in enumerate(ms):
        m.collection("c").upsert(f"last{i}", {})
    await asyncio.gather(*(m.wait_synced(3) for m in ms))

    assert (
        network.frames_dropped
        and network.frames_duplicated
        and network.frames_reordered
    )
    final = states(ms)
    assert final[0] == final[1] == final[2]
    assert sum(final[0][f"ctr{i}"]["n"] for i in range(3)) == 75  # type: ignore[index]
    assert all(m.status().outbox_depth == 0 for m in ms)
    await stop_all(ms)


async def test_partitioned_manager_keeps_writing_and_converges_after_heal(
    network: InMemoryNetwork,
) -> None:
    """A partitioned manager writes offline; after heal everyone converges."""
    a, b = await managers(network, 2)
    await asyncio.gather(a.wait_synced(2), b.wait_synced(2))
    transport = a.transport
    assert isinstance(transport, InMemoryTransport)
    network.partition(transport)
    for i in range(20):
        a.collection("c").upsert(f"a{i}", {"i": i})
        b.collection("c").upsert(f"b{i}", {"i": i})
    await asyncio.sleep(0.05)
    merged = a.replica.statistics().local_ops_merged
    assert not a.online and a.status().outbox_depth == 20 - merged >= 1
    with pytest.raises(TimeoutError):
        await a.wait_synced(0.05)
    network.heal()
    await asyncio.gather(a.wait_synced(3), b.wait_synced(3))
    final = states([a, b])
    assert final[0] == final[1] and len(final[0]) == 40
    assert a.status().reconnects >= 1
    await stop_all([a, b])


async def test_hub_restart_mid_stream_over_sqlite_loses_nothing(tmp_path: Path) -> None:
    """Managers resume after the hub restarts from its SQLite store."""
    store = HubStore.sqlite(tmp_path / "hub.sqlite3")
    from leptos_sync import Hub

    network = InMemoryNetwork(Hub(store))
    a, b = await managers(network, 2)
    for i in range(30):
        a.collection("c").upsert(f"a{i}", {"i": i})
        if i == 15:
            store.close()
            store = HubStore.sqlite(tmp_path / "hub.sqlite3")
            network.restart_hub(store)
        await asyncio.sleep(0.002)
    await asyncio.gather(a.wait_synced(3), b.wait_synced(3))
    final = states([a, b])
    assert final[0] == final[1] and len(final[0]) == 30
    # One hub operation per operation pushed: the thirty changes, less those
    # merged into a later one while they waited together.
    assert store.head("c") == 30 - a.replica.statistics().local_ops_merged
    await stop_all([a, b])
    store.close()


async def test_wait_synced_times_out_on_the_managers_clock() -> None:
    """wait_synced(timeout) measures the timeout on the injected clock."""
    clock = ManualClock()
    network = InMemoryNetwork(clock=clock)
    manager = EndToEndSyncManager(
        Storage.memory(), Transport.in_memory(network), FAST, clock=clock
    )
    transport = manager.transport
    assert isinstance(transport, InMemoryTransport)
    network.partition(transport)
    manager.collection("c").insert("r", {})
    await manager.start()
    waiting = asyncio.ensure_future(manager.wait_synced(10))
    await clock.advance_async(9)
    assert not waiting.done()
    await clock.advance_async(1)
    with pytest.raises(TimeoutError):
        await waiting
    await manager.stop()


async def test_regression_an_idle_connected_replica_is_not_stale() -> None:
    """A replica that is connected and up to date stays fresh while idle: the
    server's answers to its heartbeats count as syncs (an idle replica used to
    fire SyncStale after five minutes)."""
    clock = ManualClock()
    network = InMemoryNetwork(clock=clock)
    manager = EndToEndSyncManager(
        Storage.memory(), Transport.in_memory(network), FAST, clock=clock
    )
    manager.collection("c").insert("r", {})
    await manager.start()
    synced = asyncio.ensure_future(manager.wait_synced(10))
    while not synced.done():
        await clock.advance_async(0.02)
    await synced
    for _ in range(400 * 5):
        await clock.advance_async(0.2)
    assert manager.seconds_since_last_sync() <= 0.4
    assert manager.status().online

    # Offline, the age grows with the manager's clock.
    transport = manager.transport
    assert isinstance(transport, InMemoryTransport)
    network.partition(transport)
    for _ in range(50):
        await clock.advance_async(0.2)
    assert manager.seconds_since_last_sync() >= 9
    await manager.stop()


async def test_manager_restart_from_sqlite_delivers_its_outbox(
    network: InMemoryNetwork, tmp_path: Path
) -> None:
    """Writes made by a stopped manager reach others after it restarts."""
    path = tmp_path / "replica.sqlite3"
    b = (await managers(network, 1))[0]
    a = EndToEndSyncManager(Storage.sqlite(path), Transport.in_memory(network), FAST)
    transport = a.transport
    assert isinstance(transport, InMemoryTransport)
    network.partition(transport)
    await a.start()
    a.collection("c").insert("offline", {"x": 1})
    await a.stop()
    network.heal()
    again = EndToEndSyncManager(
        Storage.sqlite(path), Transport.in_memory(network), FAST
    )
    await again.start()
    await again.wait_synced(2)
    await b.wait_synced(2)
    for _ in range(100):
        if "offline" in b.collection("c"):
            break
        await asyncio.sleep(0.01)
    assert b.collection("c").get("offline") == {"x": 1}
    await stop_all([again, b])


async def test_regression_wait_synced_returns_without_collections(
    network: InMemoryNetwork,
) -> None:
    """A connected manager with no collection and no outbox is synced
    (wait_synced used to wait forever: no Live or Acked effect ever came)."""
    manager = EndToEndSyncManager(Storage.memory(), Transport.in_memory(network), FAST)
    await manager.start()
    await manager.wait_synced(2)
    await manager.stop()


async def test_regression_waiting_for_a_stopped_manager_raises_and_changes_end(
    network: InMemoryNetwork,
) -> None:
    """wait_synced() and changes() never hang on a stopped manager: a waiter is
    woken by stop() with ClosedError, and a changes() loop ends (both used to
    wait forever)."""
    manager = EndToEndSyncManager(Storage.memory(), Transport.in_memory(network), FAST)
    network.partition(manager.transport)  # type: ignore[arg-type]
    await manager.start()
    manager.collection("c").insert("r", {})
    waiting = asyncio.ensure_future(manager.wait_synced())
    changes = manager.changes()
    first = asyncio.ensure_future(anext(changes))
    await asyncio.sleep(0)
    await manager.stop()
    with pytest.raises(ClosedError, match="outbox holds 1"):
        await waiting
    with pytest.raises(StopAsyncIteration):
        await first
    with pytest.raises(ClosedError):
        await manager.wait_synced(1)
    assert [c async for c in manager.changes()] == []


async def test_wait_synced_refuses_a_timeout_that_is_not_a_duration(
    network: InMemoryNetwork,
) -> None:
    """A timeout that is not a duration is a ConfigError, not a silent wait."""
    (manager,) = await managers(network, 1)
    with pytest.raises(ConfigError, match="timeout"):
        await manager.wait_synced("x")  # type: ignore[arg-type]
    await stop_all([manager])


async def _open_batch(
    manager: EndToEndSyncManager, first: str, then: str
) -> tuple[asyncio.Future[None], asyncio.Event]:
    """A task inside ``manager.batch()``: it has inserted ``first`` and waits;
    setting the event returned lets it insert ``then`` and end the batch."""
    inside, release = asyncio.Event(), asyncio.Event()

    async def long_batch() -> None:
        with manager.batch():
            manager.collection("c").insert(first, {})
            inside.set()
            await release.wait()
            manager.collection("c").insert(then, {})

    task = asyncio.ensure_future(long_batch())
    await inside.wait()
    return task, release


def _stored_records(path: Path) -> list[str]:
    from leptos_sync import Replica

    replica = Replica(Storage.sqlite(path))
    try:
        return sorted(replica.collection("c").ids())
    finally:
        replica.close()


async def test_regression_another_tasks_change_during_a_batch_is_stored_at_once(
    network: InMemoryNetwork, tmp_path: Path
) -> None:
    """A batch belongs to the task that opened it: another task's change made
    while the batch awaits is stored (with what the batch wrote before it)
    before its call returns, and wait_synced() in that task means synced
    (such changes used to join the batch, unstored, while wait_synced()
    returned at once)."""
    path = tmp_path / "a.sqlite3"
    a = EndToEndSyncManager(Storage.sqlite(path), Transport.in_memory(network), FAST)
    (b,) = await managers(network, 1)
    await a.start()
    coll = a.collection("c")
    task, release = await _open_batch(a, "batch-1", "batch-2")
    coll.insert("side", {})
    # Stored before insert() returned: the store's outbox holds it, and the
    # batch's first change, which came before it.
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 2
    finally:
        db.close()
    await a.wait_synced(5)
    await _until(lambda: "side" in b.collection("c"))
    assert "batch-1" in b.collection("c") and "batch-2" not in b.collection("c")
    release.set()
    await task
    await a.wait_synced(5)
    await _until(lambda: "batch-2" in b.collection("c"))
    await stop_all([a, b])
    assert _stored_records(path) == ["batch-1", "batch-2", "side"]


async def test_wait_synced_inside_its_own_batch_is_refused(
    network: InMemoryNetwork,
) -> None:
    """Inside the batch the batch's changes are not stored yet: waiting for
    them there is a usage error, not a wait that returns too early."""
    (a,) = await managers(network, 1)
    with pytest.raises(UsageError, match=r"inside manager\.batch"), a.batch():
        a.collection("c").insert("r", {})
        await a.wait_synced(1)
    await a.wait_synced(5)
    await stop_all([a])


async def test_regression_stopping_during_a_batch_keeps_its_changes(
    network: InMemoryNetwork, tmp_path: Path
) -> None:
    """stop() while another task is inside a batch stores what the batch wrote;
    a change after stop() raises ClosedError (the batch's changes used to be
    lost and later ones accepted, with a raw sqlite3 error at the end)."""
    path = tmp_path / "a.sqlite3"
    a = EndToEndSyncManager(Storage.sqlite(path), Transport.in_memory(network), FAST)
    await a.start()
    coll = a.collection("c")
    task, release = await _open_batch(a, "w0", "w1")
    await a.stop()
    release.set()
    with pytest.raises(ClosedError):
        await task
    with pytest.raises(ClosedError):
        coll.insert("late", {})
    assert _stored_records(path) == ["w0"]


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)
