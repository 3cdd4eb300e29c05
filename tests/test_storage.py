"""Tests of the replica's local stores (memory and SQLite)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from leptos_sync import Replica, Storage, fields
from leptos_sync.clock import HLCTimestamp, ManualClock
from leptos_sync.errors import (
    ClosedError,
    ConfigError,
    SchemaVersionError,
    StorageError,
)
from leptos_sync.storage import FORMAT_VERSION, MemoryStorage, SQLiteStorage, StoredOp

Wire = Any


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_local_remote_ack_and_snapshot_bookkeeping(kind: str, tmp_path: Path) -> None:
    """Local ops wait in the outbox; an ack moves them to the log; cursors only
    move up."""
    store = Storage.memory() if kind == "memory" else Storage.sqlite(tmp_path / "s.db")
    store.append_local("c", 1, 100, b"u1")
    store.append_local("c", 2, 101, b"u2")
    store.append_remote("c", [b"r1"], cursor=3, hlc=150)
    assert store.outbox_depth() == 2 and store.log_length("c") == 1
    store.acknowledge("c", [1], cursor=5, hlc=160)
    store.acknowledge("c", [], cursor=4, hlc=0)
    state = store.load()
    assert state.outbox == [StoredOp("c", 2, 101, b"u2")]
    assert state.collections["c"].cursor == 5
    assert state.collections["c"].log == [b"r1", b"u1"]
    assert state.last_counter == 2 and state.hlc == 160
    store.save_snapshot("c", b"snap", cursor=6)
    state = store.load()
    assert state.collections["c"].snapshot == b"snap"
    assert state.collections["c"].log == [] and state.collections["c"].cursor == 6
    store.reset_cursor("c")
    assert store.load().collections["c"].cursor == 0
    store.save_state("breaker", b"\x01")
    assert store.load_state("breaker") == b"\x01" and store.load_state("x") is None
    store.close()
    with pytest.raises(ClosedError):
        store.append_local("c", 3, 1, b"u3")


def test_replica_reopen_restores_documents_outbox_cursors_id_and_hlc(
    tmp_path: Path, make_wire: Callable[..., Wire]
) -> None:
    """Reopening a replica's SQLite store restores its documents, outbox, cursors,
    replica id and hybrid logical clock."""
    wire = make_wire()
    clock: ManualClock = wire.clock
    other = wire.replica()
    other.collection("notes").insert("o", {"from": "other"})
    path = tmp_path / "replica.sqlite3"
    replica = wire.replica(Storage.sqlite(path))
    notes = replica.collection("notes")
    wire.pump()
    notes.insert("n1", {"title": "synced", "n": fields.counter(3)})
    wire.pump()
    wire.disconnect(replica)
    notes.insert("n2", {"title": "offline"})
    expected = notes.to_dict()
    last_hlc = replica.hlc.last
    replica_id = replica.replica_id
    cursor = replica.session.cursor("notes")
    replica.close()

    clock.jump_wall(-3600)  # the wall clock going back must not matter
    again = Replica(Storage.sqlite(path), clock=clock)
    assert again.replica_id == replica_id
    assert again.collections() == ["notes"]
    assert again.collection("notes").to_dict() == expected
    assert again.session.cursor("notes") == cursor == 2
    assert again.outbox_depth() == 1
    assert again.hlc.last >= HLCTimestamp(
        last_hlc.wall_ms, last_hlc.logical, replica_id
    )
    again.collection("notes").update("n2", {"title": "later"})
    assert again.collection("notes").meta("n2").updated > last_hlc
    again.close()


async def test_indexeddb_records_the_version_and_upgrades(tmp_path: Path) -> None:
    """Storage.indexeddb records its version; an older request fails and a newer
    one upgrades the recorded version."""
    store = await Storage.indexeddb("app_db", 1, directory=tmp_path)
    assert store.path == tmp_path / "app_db.sqlite3"
    assert store.app_version == 1
    store.append_local("c", 1, 1, b"u")
    store.close()

    upgraded = await Storage.indexeddb("app_db", 2, directory=tmp_path)
    assert upgraded.app_version == 2
    assert upgraded.outbox_depth() == 1
    upgraded.close()

    with pytest.raises(SchemaVersionError):
        await Storage.indexeddb("app_db", 1, directory=tmp_path)


def test_store_written_by_a_newer_format_is_refused(tmp_path: Path) -> None:
    """A store with a newer format than this library raises SchemaVersionError."""
    path = tmp_path / "new.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {FORMAT_VERSION + 1}")
    with pytest.raises(SchemaVersionError):
        Storage.sqlite(path)


async def test_indexeddb_rejects_bad_names_and_versions(tmp_path: Path) -> None:
    """Store names with slashes, non-positive versions and unknown durability
    settings are configuration errors naming the argument."""
    with pytest.raises(ConfigError, match=r"^name: "):
        await Storage.indexeddb("a/b", 1, directory=tmp_path)
    with pytest.raises(ConfigError, match=r"^version: "):
        await Storage.indexeddb("app", 0, directory=tmp_path)
    with pytest.raises(ConfigError, match=r"^durability: "):
        Storage.sqlite(tmp_path / "x.db", durability="sometimes")  # type: ignore[arg-type]


async def test_indexeddb_default_directory_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a directory the store lives under $LEPTOS_SYNC_HOME."""
    monkeypatch.setenv("LEPTOS_SYNC_HOME", str(tmp_path / "home"))
    store = await Storage.indexeddb("named", 3)
    assert store.path == tmp_path / "home" / "named.sqlite3"
    store.close()


def test_batch_groups_writes_into_one_commit(tmp_path: Path) -> None:
    """Writes inside batch() commit together, or not at all."""
    store = Storage.sqlite(tmp_path / "s.db")
    with pytest.raises(RuntimeError), store.batch():
        store.append_local("c", 1, 1, b"a")
        raise RuntimeError("abort")
    assert store.outbox_depth() == 0
    with store.batch():
        store.append_local("c", 1, 1, b"a")
        store.append_local("c", 2, 2, b"b")
    assert store.outbox_depth() == 2
    store.close()


def _flip_byte(path: Path, table: str, where: str) -> None:
    with sqlite3.connect(path) as db:
        (data,) = db.execute(f"SELECT data FROM {table} WHERE {where}").fetchone()
        data = bytearray(data)
        data[len(data) // 2] ^= 0x5A
        db.execute(f"UPDATE {table} SET data = ? WHERE {where}", (bytes(data),))


@pytest.mark.parametrize("row", ["own", "remote", "snapshot"])
def test_flipped_byte_is_quarantined_and_the_collection_refetched(
    row: str, tmp_path: Path, make_wire: Callable[..., Wire]
) -> None:
    """A flipped byte in a stored blob is detected on load, quarantined, and the
    collection is refetched from the hub to the correct final state."""
    wire = make_wire()
    path = tmp_path / "replica.sqlite3"
    replica = wire.replica(Storage.sqlite(path))
    other = wire.replica()
    replica.collection("notes").insert("mine", {"n": fields.counter(2), "t": "a"})
    wire.pump()
    other.collection("notes").insert("theirs", {"x": [1, 2]})
    wire.pump()
    if row == "snapshot":
        replica.compact("notes")
    expected = other.collection("notes").to_dict()
    assert replica.collection("notes").to_dict() == expected
    wire.disconnect(replica)
    replica.close()

    if row == "snapshot":
        _flip_byte(path, "snapshots", "collection = 'notes'")
    else:
        _flip_byte(path, "log", "id = 1" if row == "own" else "id = 2")
    reopened = Replica(Storage.sqlite(path), clock=wire.clock)
    assert [q.collection for q in reopened.quarantined] == ["notes"]
    assert reopened.statistics().integrity_failures == 1
    assert reopened.session.cursor("notes") == 0
    assert reopened.collection("notes").to_dict() != expected
    store = reopened.storage
    assert isinstance(store, SQLiteStorage)
    assert [q.source.split("#")[0] for q in store.quarantined()] == [
        "snapshot" if row == "snapshot" else "log"
    ]

    wire.connect(reopened)
    wire.pump()
    assert reopened.collection("notes").to_dict() == expected
    assert store.scrub() == []
    reopened.close()
    assert (
        Replica(Storage.sqlite(path), clock=wire.clock).collection("notes").to_dict()
        == expected
    )


def test_memory_storage_takes_a_fixed_replica_id() -> None:
    """MemoryStorage keeps the replica id it was given."""
    assert MemoryStorage(replica_id=42).load().replica_id == 42


def test_regression_a_replica_store_is_used_by_one_process_at_a_time(
    tmp_path: Path,
) -> None:
    """A second open of a replica store, in this or another process, is refused
    while the first is open (two writers used to number their operations alike
    and lose changes); closing releases it, and so does the holder dying."""
    import subprocess
    import sys

    path = tmp_path / "r.sqlite3"
    first = Storage.sqlite(path)
    with pytest.raises(StorageError, match="already open in this process"):
        Storage.sqlite(path)
    script = (
        "import sys; from leptos_sync import Storage\n"
        "try:\n    Storage.sqlite(sys.argv[1])\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc); sys.exit(3)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True
    )
    assert run.returncode == 3 and "open in another process (process" in run.stdout
    first.close()
    Storage.sqlite(path).close()

    # A process killed while holding the store does not keep it locked.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from leptos_sync import Storage\n"
            "s = Storage.sqlite(sys.argv[1]); print('open', flush=True); "
            "time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "open\n"
    with pytest.raises(StorageError):
        Storage.sqlite(path)
    holder.kill()
    holder.wait()
    Storage.sqlite(path).close()


def test_regression_a_store_of_the_other_kind_or_a_foreign_database_is_refused(
    tmp_path: Path,
) -> None:
    """A server store opened as a replica, a replica store served, or an
    application's own database used as either, is refused unchanged (the
    other kind's tables used to be added, and inspect and scrub then misread
    the store)."""
    from leptos_sync import HubStore

    server, replica, foreign = (tmp_path / n for n in ("s.db", "r.db", "f.db"))
    HubStore.sqlite(server).close()
    Storage.sqlite(replica).close()
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()

    def tables(path: Path) -> set[str]:
        db = sqlite3.connect(path)
        try:
            return {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        finally:
            db.close()

    before = {path: tables(path) for path in (server, replica, foreign)}
    with pytest.raises(StorageError, match="is a server store, not a replica"):
        Storage.sqlite(server)
    with pytest.raises(StorageError, match="is a replica store, not a server"):
        HubStore.sqlite(replica)
    with pytest.raises(StorageError, match="database of something else"):
        Storage.sqlite(foreign)
    with pytest.raises(StorageError, match="database of something else"):
        HubStore.sqlite(foreign)
    assert {path: tables(path) for path in before} == before
    # A refused open leaves the store free for the right opener.
    HubStore.sqlite(server).close()
