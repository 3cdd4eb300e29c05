"""The server's store: a per-collection log of operations with sequence numbers.

Sequence numbers come from the store, inside the same transaction that appends
the operations, never from memory: a restarted server (or, later, several server
nodes sharing one database) continues exactly where the log ends. Operations are
deduplicated by ``(replica, counter)``, so a client resending after a lost
acknowledgement gets the original sequence number back.

``HubStore.memory()`` is for tests and simulation; ``HubStore.sqlite(path)`` is the
embedded default (WAL mode; ``durability="process"`` survives a killed server,
``"power"`` also a power cut). Blobs carry a CRC32C that is verified whenever they
are read; a mismatch raises :class:`IntegrityError` rather than serving bad data.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .e2e import is_encrypted
from .errors import (
    ClosedError,
    ConflictingOperationError,
    IntegrityError,
    SchemaVersionError,
    StorageError,
)
from .protocol import Op, RemoteOp, crc32c
from .storage import Durability, check_store_kind, store_tables

__all__ = ["HubStore", "HubStoreStatistics", "MemoryHubStore", "SQLiteHubStore"]

HUB_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Appended:
    """Where each pushed operation landed; ``new`` is false for duplicates."""

    seq: int
    new: bool


@dataclass(frozen=True)
class HubStoreStatistics:
    collections: int
    operations: int
    bytes: int
    heads: dict[str, int]


class HubStore:
    """Interface of the hub's stores; use :meth:`memory` or :meth:`sqlite`."""

    server_id: str = ""

    @staticmethod
    def memory() -> MemoryHubStore:
        return MemoryHubStore()

    @staticmethod
    def sqlite(
        path: str | Path, *, durability: Durability = "process"
    ) -> SQLiteHubStore:
        return SQLiteHubStore(Path(path), durability=durability)

    def append(
        self, collection: str, replica: int, ops: tuple[Op, ...]
    ) -> list[Appended]:
        raise NotImplementedError

    def read(self, collection: str, since: int, limit: int) -> list[RemoteOp]:
        raise NotImplementedError

    def head(self, collection: str) -> int:
        raise NotImplementedError

    def snapshot(self, collection: str) -> tuple[int, bytes] | None:
        raise NotImplementedError

    def save_snapshot(self, collection: str, seq: int, data: bytes) -> None:
        raise NotImplementedError

    def collections(self) -> list[str]:
        raise NotImplementedError

    def statistics(self) -> HubStoreStatistics:
        raise NotImplementedError

    def close(self) -> None:
        pass


class MemoryHubStore(HubStore):
    """The hub's log in dicts."""

    def __init__(self) -> None:
        self.server_id = secrets.token_hex(8)
        self._logs: dict[str, list[RemoteOp]] = {}
        self._ids: dict[tuple[int, int], tuple[str, int]] = {}
        self._snapshots: dict[str, tuple[int, bytes]] = {}
        self._bytes = 0

    def append(
        self, collection: str, replica: int, ops: tuple[Op, ...]
    ) -> list[Appended]:
        log = self._logs.setdefault(collection, [])
        for op in ops:
            known = self._ids.get((replica, op.counter))
            if known is not None:
                name, seq = known
                stored = self._logs[name][seq - 1].data
                _check_resend(collection, replica, op, crc32c(stored))
        out = []
        for op in ops:
            known = self._ids.get((replica, op.counter))
            if known is not None:
                out.append(Appended(known[1], False))
                continue
            seq = len(log) + 1
            log.append(RemoteOp(seq, replica, op.counter, op.hlc, op.data))
            self._ids[(replica, op.counter)] = (collection, seq)
            self._bytes += len(op.data)
            out.append(Appended(seq, True))
        return out

    def read(self, collection: str, since: int, limit: int) -> list[RemoteOp]:
        log = self._logs.get(collection, [])
        return log[since : since + limit]

    def head(self, collection: str) -> int:
        return len(self._logs.get(collection, []))

    def snapshot(self, collection: str) -> tuple[int, bytes] | None:
        return self._snapshots.get(collection)

    def save_snapshot(self, collection: str, seq: int, data: bytes) -> None:
        self._snapshots[collection] = (seq, data)

    def collections(self) -> list[str]:
        return sorted(self._logs)

    def statistics(self) -> HubStoreStatistics:
        heads = {name: len(log) for name, log in self._logs.items()}
        return HubStoreStatistics(len(heads), sum(heads.values()), self._bytes, heads)


_HUB_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS heads (collection TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ops (
    collection TEXT NOT NULL, seq INTEGER NOT NULL,
    replica INTEGER NOT NULL, counter INTEGER NOT NULL, hlc INTEGER NOT NULL,
    data BLOB NOT NULL, crc INTEGER NOT NULL,
    PRIMARY KEY (collection, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS ops_id ON ops (replica, counter);
CREATE TABLE IF NOT EXISTS snapshots (
    collection TEXT PRIMARY KEY, seq INTEGER NOT NULL,
    data BLOB NOT NULL, crc INTEGER NOT NULL);
"""


_HUB_TABLES = store_tables(_HUB_SCHEMA)


class SQLiteHubStore(HubStore):
    """The hub's log in one SQLite file."""

    def __init__(self, path: Path, *, durability: Durability = "process") -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False
        self._heads: dict[str, int] = {}
        self._tops: dict[int, int] = {}
        try:
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False
            )
            try:
                check_store_kind(self._db, path, "server", _HUB_TABLES)
            except StorageError:
                self._db.close()
                raise
            self._db.execute("PRAGMA journal_mode=WAL")
            sync = "FULL" if durability == "power" else "NORMAL"
            self._db.execute(f"PRAGMA synchronous={sync}")
            found = self._db.execute("PRAGMA user_version").fetchone()[0]
            if found > HUB_FORMAT_VERSION:
                raise SchemaVersionError(
                    f"{path} was written by a newer leptos_sync server "
                    f"(format {found}; this one reads {HUB_FORMAT_VERSION})"
                )
            self._db.executescript(_HUB_SCHEMA)
            self._db.execute(f"PRAGMA user_version={HUB_FORMAT_VERSION}")
            row = self._db.execute(
                "SELECT value FROM meta WHERE key='server_id'"
            ).fetchone()
            if row is None:
                self.server_id = secrets.token_hex(8)
                self._db.execute(
                    "INSERT INTO meta (key, value) VALUES ('server_id', ?)",
                    (self.server_id,),
                )
            else:
                self.server_id = str(row[0])
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open hub store {path}: {exc}") from exc

    @contextlib.contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise ClosedError(f"hub store {self.path} is closed")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._db.execute("ROLLBACK")
                raise StorageError(f"hub commit failed: {exc}") from exc

    def append(
        self, collection: str, replica: int, ops: tuple[Op, ...]
    ) -> list[Appended]:
        out: list[Appended] = []
        try:
            with self._txn() as db:
                # Read the head inside the write transaction: it is the store, not
                # this process, that owns the sequence.
                row = db.execute(
                    "SELECT seq FROM heads WHERE collection=?", (collection,)
                ).fetchone()
                head = 0 if row is None else int(row[0])
                rows = []
                pushed: dict[int, int] = {}
                top = self._top_counter(replica)
                for op in ops:
                    if op.counter in pushed:
                        # Twice in one push: a duplicate, as in the memory store.
                        out.append(Appended(pushed[op.counter], False))
                        continue
                    # A replica numbers its operations in increasing order, so a
                    # counter above the highest stored one is new; only lower
                    # counters (resends) need the index lookup.
                    if op.counter <= top:
                        known = db.execute(
                            "SELECT seq, crc FROM ops WHERE replica=? AND counter=?",
                            (replica, op.counter),
                        ).fetchone()
                        if known is not None:
                            _check_resend(collection, replica, op, int(known[1]))
                            out.append(Appended(int(known[0]), False))
                            continue
                    else:
                        top = op.counter
                    head += 1
                    pushed[op.counter] = head
                    rows.append(
                        (
                            collection,
                            head,
                            replica,
                            op.counter,
                            op.hlc,
                            op.data,
                            crc32c(op.data),
                        )
                    )
                    out.append(Appended(head, True))
                if rows:
                    db.executemany("INSERT INTO ops VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                    db.execute(
                        "INSERT INTO heads (collection, seq) VALUES (?, ?) "
                        "ON CONFLICT(collection) DO UPDATE SET seq=excluded.seq",
                        (collection, head),
                    )
        except sqlite3.IntegrityError as exc:
            # Two ops of one push with the same counter: a client bug.
            self._tops.pop(replica, None)
            raise StorageError(f"duplicate operation in one push: {exc}") from exc
        except BaseException:
            self._tops.pop(replica, None)
            raise
        self._heads[collection] = head
        self._tops[replica] = top
        return out

    def _top_counter(self, replica: int) -> int:
        # Read inside the write transaction, never from a cache: another server
        # node sharing this file may have stored the replica's later ops (an
        # index seek on ops_id, one per push).
        row = self._db.execute(
            "SELECT max(counter) FROM ops WHERE replica=?", (replica,)
        ).fetchone()
        top = int(row[0]) if row and row[0] is not None else 0
        self._tops[replica] = top
        return top

    def read(self, collection: str, since: int, limit: int) -> list[RemoteOp]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, replica, counter, hlc, data, crc FROM ops "
                "WHERE collection=? AND seq>? ORDER BY seq LIMIT ?",
                (collection, since, limit),
            ).fetchall()
        out = []
        for seq, replica, counter, hlc, data, crc in rows:
            if crc32c(data) != crc:
                raise IntegrityError(
                    f"hub log entry {collection}#{seq} fails its checksum; refusing "
                    "to serve it (restore the server store from a backup)"
                )
            out.append(RemoteOp(seq, replica, counter, hlc, bytes(data)))
        return out

    def head(self, collection: str) -> int:
        # From the file, not a cache: other server nodes append to it too.
        with self._lock:
            row = self._db.execute(
                "SELECT seq FROM heads WHERE collection=?", (collection,)
            ).fetchone()
        head = 0 if row is None else int(row[0])
        self._heads[collection] = head
        return head

    def snapshot(self, collection: str) -> tuple[int, bytes] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT seq, data, crc FROM snapshots WHERE collection=?", (collection,)
            ).fetchone()
        if row is None:
            return None
        seq, data, crc = row
        if crc32c(data) != crc:
            raise IntegrityError(f"hub snapshot of {collection!r} fails its checksum")
        return int(seq), bytes(data)

    def save_snapshot(self, collection: str, seq: int, data: bytes) -> None:
        with self._txn() as db:
            db.execute(
                "INSERT INTO snapshots (collection, seq, data, crc) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT(collection) DO UPDATE SET seq=excluded.seq, "
                "data=excluded.data, crc=excluded.crc",
                (collection, seq, data, crc32c(data)),
            )

    def collections(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT collection FROM heads ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    def statistics(self) -> HubStoreStatistics:
        with self._lock:
            heads = dict(
                self._db.execute("SELECT collection, seq FROM heads").fetchall()
            )
            size = self._db.execute("SELECT coalesce(sum(length(data)), 0) FROM ops")
            total_bytes = int(size.fetchone()[0])
        return HubStoreStatistics(len(heads), sum(heads.values()), total_bytes, heads)

    def integrity_check(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


def _check_resend(collection: str, replica: int, op: Op, stored_crc: int) -> None:
    """Refuse an operation id that is already stored with other content.

    A replica resends an operation unchanged until it is acknowledged, so a known
    id is normally a harmless duplicate. Different content under a known id means
    two stores share one replica id (a store file copied by hand, or restored
    keeping its identity while the original lives on): acknowledging it as a
    duplicate would drop the second writer's change for good. End-to-end
    encrypted operations are sealed anew (fresh nonce) on every send, so their
    bytes differ by design and only the receiving replicas can check them.
    """
    if is_encrypted(collection) or crc32c(op.data) == stored_crc:
        return
    raise ConflictingOperationError(
        f"operation {op.counter} of replica {replica:x} was already stored with "
        "other content: two stores share this replica id (was a store file "
        "copied?); give the copy a new identity (leptos-sync restore does)"
    )
