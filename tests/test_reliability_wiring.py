"""The reliability layer wired into the sync manager: breaker, retries, integrity."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from leptos_sync import (
    BreakerState,
    CircuitBreakerConfig,
    DataIntegrityConfig,
    EndToEndSyncManager,
    HealthChecks,
    ReliabilityConfig,
    RetryPolicy,
    Storage,
    SyncConfig,
    Transport,
)
from leptos_sync.protocol import RemoteOp
from leptos_sync.replica import Replica
from leptos_sync.session import ApplyRemote
from leptos_sync.transport.memory import InMemoryNetwork


async def _until(condition: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_open_breaker_means_offline_then_the_outbox_flushes() -> None:
    """With the server unreachable the breaker opens and the manager goes offline:
    local writes go on, the outbox grows, health says warn; once the server is back
    and the breaker closes, the outbox is flushed."""
    network = InMemoryNetwork()
    transport = Transport.in_memory(network)
    config = SyncConfig(
        reliability=ReliabilityConfig(
            retry_policy=RetryPolicy.Fixed(timedelta(milliseconds=20)),
            max_retries=5,
            circuit_breaker=CircuitBreakerConfig.Enabled(
                failure_threshold=2,
                recovery_timeout=timedelta(milliseconds=200),
                half_open_max_calls=1,
            ),
            health_checks=HealthChecks.Advanced,
        ),
        poll_interval=0.02,
        heartbeat_interval=0.1,
        heartbeat_timeout=0.5,
    )
    network.partition(transport)  # type: ignore[arg-type]
    manager = EndToEndSyncManager(Storage.memory(), transport, config)
    async with manager:
        notes = manager.collection("notes")
        await _until(lambda: manager.breaker.state is BreakerState.OPEN)
        for i in range(20):
            notes.insert(f"n{i}", {"i": i})
        assert manager.status().outbox_depth == 20
        assert not manager.online
        report = await manager.health()
        assert report.check("transport", "connected").status.value == "warn"
        assert report.check("breaker", "state").status.value == "warn"
        assert "leptos_sync_breaker_state 1.0" in manager.metrics_text()

        network.heal()
        await manager.wait_synced(10)
        assert manager.breaker.state is BreakerState.CLOSED
        assert manager.status().outbox_depth == 0
        # The twenty offline writes went out merged into one operation.
        assert manager.replica.statistics().local_ops_merged == 19
        assert network.hub.statistics().ops_stored == 1
        text = manager.metrics_text()
        assert (
            "leptos_sync_breaker_transitions_total"
            '{from_state="closed",to_state="open"} 1.0'
        ) in text


async def test_breaker_state_survives_a_restart_on_the_same_store(
    tmp_path: object,
) -> None:
    """A breaker opened by one manager is still open in a new manager on the same
    SQLite store."""
    from pathlib import Path

    path = Path(str(tmp_path)) / "replica.sqlite3"
    network = InMemoryNetwork()
    transport = Transport.in_memory(network)
    config = SyncConfig(
        reliability=ReliabilityConfig(
            retry_policy=RetryPolicy.Fixed(timedelta(milliseconds=10)),
            circuit_breaker=CircuitBreakerConfig.Enabled(
                failure_threshold=1,
                recovery_timeout=timedelta(seconds=60),
                half_open_max_calls=1,
            ),
        ),
    )
    network.partition(transport)  # type: ignore[arg-type]
    first = EndToEndSyncManager(Storage.sqlite(path), transport, config)
    async with first:
        await _until(lambda: first.breaker.state is BreakerState.OPEN)
    network.heal()
    second = EndToEndSyncManager(Storage.sqlite(path), transport, config)
    assert second.breaker.state is BreakerState.OPEN
    await second.stop()


def test_metadata_validation_reports_a_timestamp_going_backwards() -> None:
    """With metadata validation on, a remote replica's later operation carrying an
    earlier HLC is counted as an integrity failure (and still applied)."""
    from leptos_sync import fields

    source = Replica(Storage.memory())
    ops = []
    coll = source.collection("c")
    coll.insert("r", {"n": fields.counter()})
    coll.counter("r", "n").increment()
    source.take_outgoing()
    outbox = source.storage.load().outbox
    ops = [
        RemoteOp(i + 1, source.replica_id, op.counter, hlc, op.data)
        for i, (op, hlc) in enumerate(zip(outbox, (500, 400), strict=True))
    ]
    target = Replica(Storage.memory())
    target.validate_metadata = True
    target.collection("c")
    target._run([ApplyRemote("c", tuple(ops), 2)])
    assert target.statistics().integrity_failures == 1
    assert target.collection("c").get("r") == {"n": 1}


def test_advanced_integrity_turns_on_metadata_validation() -> None:
    """DataIntegrityConfig.Advanced switches the replica's metadata validation on."""
    config = SyncConfig(
        reliability=ReliabilityConfig(data_integrity=DataIntegrityConfig.Advanced)
    )
    manager = EndToEndSyncManager(Storage.memory(), Transport.in_memory(), config)
    assert manager.replica.validate_metadata
    basic = EndToEndSyncManager(Storage.memory(), Transport.in_memory())
    assert not basic.replica.validate_metadata
