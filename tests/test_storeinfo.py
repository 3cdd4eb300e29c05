"""Tests of ``leptos-sync inspect``: a read-only look at replica and server stores."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from leptos_sync import HubStore, Replica, Storage, fields
from leptos_sync.backup import scrub_store
from leptos_sync.cli import main as cli
from leptos_sync.errors import StorageError
from leptos_sync.protocol import Op
from leptos_sync.storeinfo import inspect_store


def _digest(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """The file's bytes and its schema, to show that nothing was written."""
    with sqlite3.connect(path) as db:
        schema = db.execute("SELECT type, name FROM sqlite_master ORDER BY name")
        tables = [(str(t), str(n)) for t, n in schema]
    return hashlib.sha256(path.read_bytes()).hexdigest(), tables


def _replica_store(path: Path) -> int:
    replica = Replica(Storage.sqlite(path))
    notes = replica.collection("notes")
    notes.insert("a", {"title": "A", "likes": fields.counter()})
    notes.insert("b", {"title": "B"})
    notes.counter("a", "likes").increment()
    replica_id = replica.replica_id
    replica.close()
    _checkpoint(path)
    return replica_id


def _checkpoint(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_a_replica_store_is_reported_and_left_unchanged(tmp_path: Path) -> None:
    """inspect shows a replica's id, records and outbox, and writes nothing."""
    path = tmp_path / "replica.sqlite3"
    replica_id = _replica_store(path)
    before = _digest(path)

    result = CliRunner().invoke(cli, ["inspect", str(path)])

    assert result.exit_code == 0, result.output
    assert f"replica store, id {replica_id:016x}" in result.output
    assert "notes: 2 records, cursor 0, outbox 3, log 0" in result.output
    assert "0 corrupt" in result.output
    assert _digest(path) == before


def test_a_server_store_is_reported_as_one_and_stays_a_server_store(
    tmp_path: Path,
) -> None:
    """inspect of a server store shows its heads, adds no replica tables, and
    the store still scrubs as a server store (inspect used to turn it into a
    replica store, which switched off its integrity scrub)."""
    path = tmp_path / "server.sqlite3"
    hub = HubStore.sqlite(path)
    hub.append("notes", 7, tuple(Op(c, c, b"update %d" % c) for c in (1, 2, 3)))
    hub.close()
    _checkpoint(path)
    before = _digest(path)

    result = CliRunner().invoke(cli, ["inspect", str(path), "--json"])

    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["kind"] == "server" and info["operations"] == 3
    assert info["collections"]["notes"]["head"] == 3
    assert _digest(path) == before
    assert scrub_store(path).kind == "server"


def test_a_corrupt_blob_is_reported_not_repaired(tmp_path: Path) -> None:
    """A blob failing its checksum makes inspect exit 1 and name it; the store
    keeps it, so a scrub still finds it (inspect used to quarantine it and give
    the replica a new id)."""
    path = tmp_path / "replica.sqlite3"
    replica_id = _replica_store(path)
    with sqlite3.connect(path) as db:
        (data,) = db.execute("SELECT data FROM outbox WHERE counter=2").fetchone()
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x5A
        db.execute("UPDATE outbox SET data=? WHERE counter=2", (bytes(flipped),))
    _checkpoint(path)
    before = _digest(path)

    result = CliRunner().invoke(cli, ["inspect", str(path)])

    assert result.exit_code == 1
    assert "1 corrupt (outbox notes#2)" in result.output
    assert "notes: unreadable records" in result.output
    assert _digest(path) == before
    assert len(scrub_store(path).bad) == 1
    assert inspect_store(path)["id"] == f"{replica_id:016x}"


def test_a_foreign_sqlite_file_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    """An SQLite file that is no leptos_sync store gets a clear error and keeps
    its schema (inspect used to add a replica's tables to it)."""
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE people (name TEXT)")
    before = _digest(path)

    with pytest.raises(StorageError, match="not a leptos_sync store"):
        inspect_store(path)
    result = CliRunner().invoke(cli, ["inspect", str(path)])

    assert result.exit_code != 0
    assert "not a leptos_sync store" in result.output
    assert "Traceback" not in result.output
    assert _digest(path) == before
