"""Storage corruption: bytes flipped in a replica's store and in the server's log.

A replica detects a corrupt blob when it loads, sets it aside (quarantine),
reports it through health, metrics and the IntegrityFailure alert, and repairs
the collection from the server. A server refuses to serve a corrupt log entry:
the client gets an error frame, the server logs an ERROR and its /health (with
the store scrub wired in) fails, until the store is restored from a backup.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from leptos_sync import (
    EndToEndSyncManager,
    HealthChecks,
    HubStore,
    ReliabilityConfig,
    RetryPolicy,
    Storage,
    SyncConfig,
    Transport,
)
from leptos_sync.backup import backup_store, restore_store, scrub_store
from leptos_sync.monitoring.alerts import builtin_rules
from leptos_sync.monitoring.health import HealthStatus
from leptos_sync.server.app import SyncServer
from leptos_sync.server.run import RunningServer, serve_in_background
from leptos_sync.session import Effect, ServerError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs

COLL = "docs"


def _config(compact_after: int = 50_000) -> SyncConfig:
    return SyncConfig(
        reliability=ReliabilityConfig(
            retry_policy=RetryPolicy.Fixed(timedelta(milliseconds=50)),
            max_retries=10_000,
            health_checks=HealthChecks.Advanced,
        ),
        heartbeat_interval=timedelta(seconds=1),
        heartbeat_timeout=timedelta(seconds=3),
        poll_interval=timedelta(milliseconds=50),
        status_interval=None,
        compact_after=compact_after,
        # These tests damage particular stored operations: each write stays
        # its own operation, however fast they come.
        merge_waiting=False,
    )


def flip(store: Path, table: str, where: str) -> None:
    """Invert one byte in the middle of a stored blob, leaving its checksum."""
    db = sqlite3.connect(str(store))
    try:
        (data,) = db.execute(f"SELECT data FROM {table} WHERE {where}").fetchone()
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0xFF
        db.execute(f"UPDATE {table} SET data=? WHERE {where}", (bytes(damaged),))
        db.commit()
    finally:
        db.close()


def manager(path: Path, url: str, **config: int) -> EndToEndSyncManager:
    return EndToEndSyncManager(
        Storage.sqlite(path), Transport.websocket(url), _config(**config)
    )


async def until(predicate: object, limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {limit} s waiting for {what}")


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[RunningServer]:
    server = SyncServer(HubStore.sqlite(tmp_path / "hub.sqlite3"))
    async with serve_in_background(server) as running:
        yield running


async def _prepare(tmp: Path, url: str, compact_after: int) -> list[str]:
    """A writes 20 records, B 10; then A writes 6 offline. A's outbox holds 6."""
    a = manager(tmp / "a.sqlite3", url, compact_after=compact_after)
    b = manager(tmp / "b.sqlite3", url)
    try:
        await a.start()
        await b.start()
        for i in range(20):
            a.collection(COLL).insert(f"a{i:02d}", {"i": i, "by": "a"})
            await asyncio.sleep(0)
        for i in range(10):
            b.collection(COLL).insert(f"b{i:02d}", {"i": i, "by": "b"})
        await a.wait_synced(10)
        await b.wait_synced(10)
        await until(lambda: len(a.collection(COLL)) == 30, 10, "A to see B's records")
    finally:
        await a.stop()
        await b.stop()

    # Offline writes: the manager is never started, so they stay in the outbox.
    offline = manager(tmp / "a.sqlite3", url, compact_after=compact_after)
    for i in range(6):
        offline.collection(COLL).insert(f"o{i}", {"i": i, "by": "a-offline"})
    await offline.stop()
    return [f"o{i}" for i in range(6)]


@pytest.mark.parametrize("table", ["log", "snapshots", "outbox"])
async def test_a_corrupt_replica_blob_is_quarantined_reported_and_repaired(
    hub: RunningServer, tmp_path: Path, table: str
) -> None:
    """A flipped byte in a stored blob is detected, reported and repaired."""
    compact_after = 8 if table == "snapshots" else 50_000
    offline = await _prepare(tmp_path, hub.url, compact_after)
    store = tmp_path / "a.sqlite3"
    where = {
        "log": "id=(SELECT min(id) + 3 FROM log)",
        "snapshots": f"collection='{COLL}'",
        # The second of six unacknowledged writes: the later ones depend on it.
        "outbox": "counter=(SELECT min(counter) + 1 FROM outbox)",
    }[table]
    flip(store, table, where)
    assert not scrub_store(store).ok

    a = manager(store, hub.url, compact_after=compact_after)
    b = manager(tmp_path / "b.sqlite3", hub.url)
    fresh = manager(tmp_path / "c.sqlite3", hub.url)
    try:
        # Detected on load, before any network traffic.
        assert [q.source.split("#")[0] for q in a.replica.quarantined] == [
            table.rstrip("s")
        ]
        health = await a.health()
        integrity = health.check("integrity", "failures")
        assert integrity is not None and integrity.status is HealthStatus.WARN
        assert health.status is not HealthStatus.PASS
        assert _metric(a, "leptos_sync_integrity_failures_total") >= 1
        assert "IntegrityFailure" in {rule.name for rule in builtin_rules()}

        # Local-first: the application writes before the repair has happened.
        coll = a.collection(COLL)
        for i in range(5):
            coll.insert(f"n{i}", {"i": i, "by": "a-after"})

        await a.start()
        await b.start()
        await fresh.start()
        expected = {f"a{i:02d}" for i in range(20)} | {f"b{i:02d}" for i in range(10)}
        expected |= {f"n{i}" for i in range(5)}
        if table == "outbox":
            # The corrupt write existed nowhere else; it is lost, and the
            # writes after it, which depend on it, stay invisible everywhere.
            expected |= {offline[0]}
        else:
            expected |= set(offline)
        for replica in (a, b, fresh):
            await replica.wait_synced(20)
        try:
            await until(
                lambda: all(
                    set(m.collection(COLL).ids()) == expected for m in (a, b, fresh)
                ),
                20,
                "every replica to hold the repaired collection",
            )
        except AssertionError:
            held = {
                name: sorted(set(m.collection(COLL).ids()) ^ expected)
                for name, m in (("a", a), ("b", b), ("fresh", fresh))
            }
            raise AssertionError(
                f"records differing from the expected: {held}"
            ) from None
        state = a.collection(COLL).to_dict()
        assert b.collection(COLL).to_dict() == state
        assert fresh.collection(COLL).to_dict() == state
    finally:
        for replica in (a, b, fresh):
            await replica.stop()

    # The bad blob is kept for inspection, out of the way.
    db = sqlite3.connect(str(store))
    try:
        assert db.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 1
    finally:
        db.close()
    assert scrub_store(store).ok
    assert procs.integrity(store) == "ok"


async def test_corruption_found_while_loading_fires_the_integrity_alert(
    tmp_path: Path,
) -> None:
    """A store that loads with a quarantined blob raises IntegrityFailure."""
    store = Storage.sqlite(tmp_path / "a.sqlite3")
    store.append_remote(COLL, [b"an update"], 1, 0)
    store.close()
    flip(tmp_path / "a.sqlite3", "log", "1")
    m = EndToEndSyncManager(
        Storage.sqlite(tmp_path / "a.sqlite3"), Transport.in_memory(), _config()
    )
    try:
        assert m.replica.quarantined
        await m.monitoring.alerts.evaluate()
        await m.monitoring.alerts.evaluate()
        assert "IntegrityFailure" in {al.name for al in m.monitoring.alerts.alerts()}
    finally:
        await m.stop()


def _spy(inner: Any, told: list[str]) -> Any:
    """Wrap a replica's effect hook to note the server errors it reports."""

    def hook(effect: Effect) -> None:
        if isinstance(effect, ServerError):
            told.append(f"{effect.error.code}: {effect.error}")
        inner(effect)

    return hook


def _metric(m: EndToEndSyncManager, name: str) -> float:
    for line in m.metrics_text().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


async def test_a_corrupt_server_log_entry_is_refused_loudly_and_restored(
    tmp_path: Path,
) -> None:
    """The server never serves a corrupt op: it errors, logs, fails /health."""
    db = tmp_path / "hub.sqlite3"
    server = procs.ServerProcess(db, tmp_path, integrity_check=True)
    writer = reader = None
    try:
        writer = manager(tmp_path / "w.sqlite3", server.url)
        await writer.start()
        for i in range(30):
            writer.collection(COLL).insert(f"r{i:02d}", {"i": i})
        await writer.wait_synced(10)
        await writer.stop()
        async with httpx.AsyncClient() as http:
            ok = await http.get(server.http_url + "/health")
        assert ok.status_code == 200, ok.text

        # An online backup first, then the damage (the server keeps running).
        manifest = backup_store(db, tmp_path / "backup")
        assert manifest.kind == "server" and manifest.tables["ops"] == 30
        flip(db, "ops", f"collection='{COLL}' AND seq=5")

        reader = manager(tmp_path / "r.sqlite3", server.url)
        told: list[str] = []
        reader.replica.on_effect = _spy(reader.replica.on_effect, told)
        reader.collection(COLL)
        await reader.start()
        await until(lambda: told, 10, "the reader to be told")
        assert told[0].startswith("integrity")
        # Nothing of the page holding the bad entry was served.
        assert len(reader.collection(COLL)) == 0
        assert _metric(reader, "leptos_sync_server_errors_total") >= 1
        async with httpx.AsyncClient() as http:
            failing = await http.get(server.http_url + "/health")
        assert failing.status_code == 503
        body = failing.json()
        assert body["status"] == "fail"
        assert body["checks"]["integrity:scrub"][0]["status"] == "fail"
        await until(lambda: "ERROR" in server.stderr(), 5, "the server's ERROR log")
        assert "integrity failure" in server.stderr()

        # Repair: restore the backup on the stopped server, restart in place.
        server.kill()
        result = restore_store(tmp_path / "backup", db)
        assert result.previous is not None and result.new_id != result.old_id
        server = procs.ServerProcess(
            db, tmp_path, port=server.port, integrity_check=True, name="server2"
        )
        await reader.wait_synced(20)
        await until(lambda: len(reader.collection(COLL)) == 30, 20, "the repair")
        async with httpx.AsyncClient() as http:
            healthy = await http.get(server.http_url + "/health")
        assert healthy.status_code == 200, healthy.text
    finally:
        if writer is not None:
            await writer.stop()
        if reader is not None:
            await reader.stop()
        server.kill()
    assert procs.integrity(db) == "ok"
