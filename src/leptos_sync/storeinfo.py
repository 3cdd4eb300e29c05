"""What a store file holds, read without changing it (``leptos-sync inspect``).

Opening a store through :class:`~leptos_sync.storage.SQLiteStorage` migrates its
schema, and loading it quarantines blobs that fail their checksums; both are
right for a replica that is about to run, and wrong for a look from outside: an
inspection of a server store, of a foreign SQLite file or of a damaged replica
must leave the file exactly as it was, so that a later scrub or the server
itself still sees what is there. This module therefore opens the file read-only
and reports corrupt blobs instead of setting them aside. In a read-only directory
the store is read as an immutable file (see :mod:`leptos_sync.backup`), and the
summary says so.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from .backup import read_store, scrub_blobs, store_id_of
from .clock import HybridLogicalClock
from .crdt import CollectionDoc
from .errors import IntegrityError
from .protocol import crc32c

__all__ = ["inspect_store"]


def inspect_store(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A summary of the replica or server store at ``path``, read-only.

    ``immutable`` in the summary is true when the store had to be read as an
    immutable file (its directory is read-only).

    Raises:
        StorageError: there is no file, it is not SQLite, or it is not a
            leptos_sync store.
    """
    path = Path(path)
    with read_store(path, "inspect") as (db, kind, immutable):
        checked, bad = scrub_blobs(db, kind)
        info: dict[str, Any] = {
            "store": str(path.resolve()),
            "kind": kind,
            "immutable": immutable,
            "id": store_id_of(db, kind),
            "blobs_checked": checked,
            "corrupt_blobs": [f"{b.table} {b.collection}#{b.key}" for b in bad],
            "sqlite_integrity": str(db.execute("PRAGMA quick_check").fetchone()[0]),
        }
        info.update(_replica(db) if kind == "replica" else _server(db))
    return info


def _replica(db: sqlite3.Connection) -> dict[str, Any]:
    cursors = dict(db.execute("SELECT collection, seq FROM cursors").fetchall())
    outbox: dict[str, int] = dict(
        db.execute("SELECT collection, count(*) FROM outbox GROUP BY collection")
    )
    logs: dict[str, int] = dict(
        db.execute("SELECT collection, count(*) FROM log GROUP BY collection")
    )
    snapshots = {
        name: len(data)
        for name, data in db.execute("SELECT collection, data FROM snapshots")
    }
    names = sorted(set(cursors) | set(outbox) | set(logs) | set(snapshots))
    collections = {
        name: {
            "records": _count_records(db, name),
            "cursor": int(cursors.get(name, 0)),
            "outbox": outbox.get(name, 0),
            "log_entries": logs.get(name, 0),
            "snapshot_bytes": snapshots.get(name, 0),
        }
        for name in names
    }
    app_version = db.execute(
        "SELECT value FROM meta WHERE key='app_version'"
    ).fetchone()
    quarantined = [
        f"{source} of {collection}"
        for collection, source in db.execute(
            "SELECT collection, source FROM quarantine ORDER BY id"
        )
    ]
    return {
        "app_version": None if app_version is None else int(app_version[0]),
        "outbox_depth": sum(outbox.values()),
        "collections": collections,
        "quarantined": quarantined,
    }


def _count_records(db: sqlite3.Connection, name: str) -> int | None:
    """Records in the collection as stored, or ``None`` if a blob is unreadable."""
    blobs: list[bytes] = []
    for query in (
        "SELECT data, crc FROM snapshots WHERE collection=?",
        "SELECT data, crc FROM log WHERE collection=? ORDER BY id",
        "SELECT data, crc FROM outbox WHERE collection=? ORDER BY counter",
    ):
        for data, crc in db.execute(query, (name,)):
            if crc32c(data) != crc:
                return None
            blobs.append(bytes(data))
    doc = CollectionDoc(name, HybridLogicalClock(replica_id=1))
    try:
        doc.import_updates(blobs)
    except IntegrityError:
        return None
    return len(doc)


def _server(db: sqlite3.Connection) -> dict[str, Any]:
    heads = dict(db.execute("SELECT collection, seq FROM heads").fetchall())
    snapshots = dict(db.execute("SELECT collection, seq FROM snapshots").fetchall())
    stored: dict[str, int] = dict(
        db.execute("SELECT collection, count(*) FROM ops GROUP BY collection")
    )
    return {
        "operations": sum(stored.values()),
        "collections": {
            name: {
                "head": int(heads[name]),
                "operations": stored.get(name, 0),
                "snapshot_seq": snapshots.get(name),
            }
            for name in sorted(heads)
        },
    }
