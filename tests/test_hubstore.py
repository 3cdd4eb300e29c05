"""Tests of the hub's stores (memory and SQLite): the log, dedup, snapshots."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from leptos_sync import HubStore
from leptos_sync.errors import (
    ConflictingOperationError,
    IntegrityError,
    SchemaVersionError,
)
from leptos_sync.hubstore import Appended, SQLiteHubStore
from leptos_sync.protocol import Op


def ops(*counters: int) -> tuple[Op, ...]:
    return tuple(Op(c, c * 10, f"data{c}".encode()) for c in counters)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HubStore]:
    made = (
        HubStore.memory()
        if request.param == "memory"
        else HubStore.sqlite(tmp_path / "hub.db")
    )
    yield made
    made.close()


def test_append_assigns_consecutive_seqs_per_collection(store: HubStore) -> None:
    """Each collection numbers its ops from 1, in the order they are appended."""
    assert store.append("a", 1, ops(1, 2)) == [Appended(1, True), Appended(2, True)]
    assert store.append("b", 1, ops(3)) == [Appended(1, True)]
    assert store.append("a", 2, ops(1)) == [Appended(3, True)]
    assert store.head("a") == 3 and store.head("b") == 1 and store.head("none") == 0
    assert store.collections() == ["a", "b"]


def test_append_deduplicates_by_replica_and_counter(store: HubStore) -> None:
    """A resent op gets its original seq back and is not stored twice."""
    store.append("a", 1, ops(1, 2))
    assert store.append("a", 1, ops(2, 3)) == [Appended(2, False), Appended(3, True)]
    assert [op.counter for op in store.read("a", 0, 10)] == [1, 2, 3]


def test_regression_a_known_op_id_with_other_content_is_refused(
    store: HubStore,
) -> None:
    """An op id already stored with other content (two stores sharing a replica
    id) is refused, not acknowledged as a duplicate; nothing of that push is
    stored (a copied store used to lose its writes this way)."""
    store.append("a", 1, ops(1, 2))
    other = (Op(2, 20, b"other"), Op(3, 30, b"data3"))
    with pytest.raises(ConflictingOperationError, match="share this replica id"):
        store.append("a", 1, other)
    assert [op.data for op in store.read("a", 0, 10)] == [b"data1", b"data2"]
    assert store.append("a", 1, ops(2, 3)) == [Appended(2, False), Appended(3, True)]


def test_resent_encrypted_ops_may_differ_in_bytes(store: HubStore) -> None:
    """End-to-end encrypted ops are sealed anew on every send, so a resend with
    other bytes is a duplicate, not a conflict."""
    store.append("e2e:a", 1, ops(1))
    assert store.append("e2e:a", 1, (Op(1, 10, b"resealed"),)) == [Appended(1, False)]


def test_regression_one_push_carrying_an_op_twice_is_deduplicated(
    store: HubStore,
) -> None:
    """An op twice in one push is stored once (SQLite used to fail the push)."""
    assert store.append("a", 1, ops(4, 4)) == [Appended(1, True), Appended(1, False)]
    assert store.head("a") == 1


def test_read_pages_after_a_seq(store: HubStore) -> None:
    """read(since, limit) returns ops after since, in seq order, at most limit."""
    store.append("a", 7, ops(1, 2, 3, 4))
    page = store.read("a", 1, 2)
    assert [(op.seq, op.replica, op.counter, op.hlc) for op in page] == [
        (2, 7, 2, 20),
        (3, 7, 3, 30),
    ]
    assert page[0].data == b"data2"
    assert store.read("a", 4, 10) == []


def test_snapshot_round_trip_and_statistics(store: HubStore) -> None:
    """Saved snapshots read back; statistics count ops and bytes."""
    assert store.snapshot("a") is None
    store.append("a", 1, ops(1, 2))
    store.save_snapshot("a", 2, b"snap")
    assert store.snapshot("a") == (2, b"snap")
    stats = store.statistics()
    assert stats.collections == 1 and stats.operations == 2
    assert stats.bytes == len(b"data1") + len(b"data2")
    assert stats.heads == {"a": 2}


def test_sqlite_store_reopens_where_its_log_ends(tmp_path: Path) -> None:
    """A reopened SQLite store keeps its ops, seqs, dedup ids and server id."""
    path = tmp_path / "hub.db"
    first = HubStore.sqlite(path)
    first.append("a", 1, ops(1, 2))
    server_id = first.server_id
    first.close()
    again = HubStore.sqlite(path)
    assert again.server_id == server_id
    assert again.head("a") == 2
    assert again.append("a", 1, ops(2, 3)) == [Appended(2, False), Appended(3, True)]
    again.close()


def test_sqlite_sequence_comes_from_the_store_not_memory(tmp_path: Path) -> None:
    """Two store objects on one file continue each other's sequence."""
    path = tmp_path / "hub.db"
    one, two = HubStore.sqlite(path), HubStore.sqlite(path)
    one.append("a", 1, ops(1))
    assert two.append("a", 2, ops(1)) == [Appended(2, True)]
    assert one.append("a", 3, ops(1)) == [Appended(3, True)]
    one.close()
    two.close()


def test_sqlite_corrupt_log_entry_raises_integrity_error(tmp_path: Path) -> None:
    """A flipped byte in a stored op is refused on read, never served."""
    path = tmp_path / "hub.db"
    store = HubStore.sqlite(path)
    store.append("a", 1, ops(1))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE ops SET data = ? WHERE seq = 1", (b"dat\xffa1",))
    with pytest.raises(IntegrityError):
        store.read("a", 0, 10)
    store.close()


def test_sqlite_newer_schema_is_refused(tmp_path: Path) -> None:
    """A hub store written by a newer format raises SchemaVersionError."""
    path = tmp_path / "hub.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaVersionError):
        SQLiteHubStore(path)


def test_regression_two_nodes_on_one_file_deduplicate_each_others_ops(
    tmp_path: Path,
) -> None:
    """A resend reaching another node than the first push is still a duplicate
    (a per-process cache of each replica's top counter used to miss it)."""
    path = tmp_path / "hub.db"
    one, two = HubStore.sqlite(path), HubStore.sqlite(path)
    assert one.append("a", 1, ops(1)) == [Appended(1, True)]
    assert two.append("a", 1, ops(2)) == [Appended(2, True)]
    assert one.append("a", 1, ops(2, 3)) == [Appended(2, False), Appended(3, True)]
    assert two.head("a") == 3
    one.close()
    two.close()
