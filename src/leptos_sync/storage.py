"""A replica's durable local store: documents, outbox, cursors, identity.

``Storage.memory()`` keeps everything in this process; ``Storage.sqlite(path)`` and
``await Storage.indexeddb(name, version)`` keep it in an SQLite file (WAL mode).

What one local change writes, in **one SQLite transaction** (one row): the Loro
update as an operation in the outbox, which is part of the collection's stored
state from then on. When the server acknowledges an operation, its entry moves
from the outbox to the collection's log together with the advanced cursor, in one
transaction. On reopen the store gives back every collection (snapshot plus log), the
outbox, the cursors, the replica id and the hybrid logical clock.

Every stored blob carries a CRC32C, verified when it is read back. A blob that
fails is moved to the ``quarantine`` table and reported; the replica then refetches
the collection from the server instead of using it.

Durability: ``durability="process"`` (the default, SQLite ``synchronous=NORMAL`` in
WAL mode) means a write that returned survives a crash or kill of the process;
``durability="power"`` (``synchronous=FULL``) also survives power loss, at the cost of
an fsync per commit. Writes grouped with :meth:`Storage.batch` share one commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import ClosedError, ConfigError, SchemaVersionError, StorageError
from .protocol import crc32c

__all__ = [
    "FORMAT_VERSION",
    "CollectionState",
    "Quarantined",
    "Storage",
    "StoredOp",
    "StoredState",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
Durability = Literal["process", "power"]


@dataclass(frozen=True, slots=True)
class StoredOp:
    """An unacknowledged local operation, as kept in the outbox."""

    collection: str
    counter: int
    hlc: int
    data: bytes
    #: Whether it may have been pushed (see :meth:`Storage.mark_pushed`).
    pushed: bool = False


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A stored blob that failed its checksum and was set aside."""

    collection: str
    source: str
    reason: str


@dataclass
class CollectionState:
    """One collection as stored: a snapshot, updates since, and the cursor."""

    snapshot: bytes | None = None
    log: list[bytes] = field(default_factory=list)
    cursor: int = 0


@dataclass
class StoredState:
    """Everything a replica needs to resume after a restart."""

    replica_id: int
    hlc: int
    last_counter: int
    collections: dict[str, CollectionState]
    outbox: list[StoredOp]
    quarantined: list[Quarantined]


class Storage:
    """Base of the local stores; use the constructors below.

    A store is used from one thread at a time (the replica's); its methods are
    synchronous and fast, so the event loop calls them directly.
    """

    path: Path | None = None

    @staticmethod
    def memory() -> MemoryStorage:
        """A store that lives and dies with this process."""
        return MemoryStorage()

    @staticmethod
    def sqlite(
        path: str | os.PathLike[str],
        *,
        durability: Durability = "process",
        app_version: int | None = None,
    ) -> SQLiteStorage:
        """The embedded on-disk store at ``path`` (created if missing)."""
        return SQLiteStorage(Path(path), durability=durability, app_version=app_version)

    @staticmethod
    async def indexeddb(
        name: str,
        version: int = 1,
        *,
        directory: str | os.PathLike[str] | None = None,
        durability: Durability = "process",
    ) -> SQLiteStorage:
        """The embedded on-disk store named ``name`` at schema ``version``.

        Python has no browser database; this opens ``<directory>/<name>.sqlite3``,
        where the directory defaults to ``$LEPTOS_SYNC_HOME`` or
        ``~/.local/share/leptos_sync``. As with IndexedDB, opening a store written
        at a newer version raises :class:`SchemaVersionError`, and opening at a
        newer version upgrades the recorded one.
        """
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise ConfigError(
                "name", f"a store name is a file name without '/', got {name!r}"
            )
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigError("version", f"a positive integer, got {version!r}")
        base = Path(directory) if directory is not None else _default_directory()
        base.mkdir(parents=True, exist_ok=True)
        return SQLiteStorage(
            base / f"{name}.sqlite3", durability=durability, app_version=version
        )

    # The interface every store implements ------------------------------------

    def load(self) -> StoredState:
        raise NotImplementedError

    def append_local(
        self, collection: str, counter: int, hlc: int, data: bytes
    ) -> None:
        """Record a local change as an outbox entry (moved to the log on ack)."""
        raise NotImplementedError

    def merge_outbox(
        self, collection: str, counters: list[int], hlc: int, data: bytes
    ) -> None:
        """Replace the outbox entries ``counters`` by one entry holding ``data``.

        The new entry takes the highest of the counters, and ``hlc``; all in one
        transaction, so that a crash leaves either the old entries or the new.
        """
        raise NotImplementedError

    def mark_pushed(self, counters: list[int]) -> None:
        """Record, durably before returning, that these outbox entries are being
        pushed: such an entry is never merged with others again (its id may be
        known to the server with this content)."""
        raise NotImplementedError

    def append_remote(
        self, collection: str, updates: list[bytes], cursor: int, hlc: int
    ) -> None:
        """Record updates received from the server and the advanced cursor."""
        raise NotImplementedError

    def acknowledge(
        self, collection: str, counters: list[int], cursor: int, hlc: int
    ) -> None:
        """Drop acknowledged ops from the outbox and store the advanced cursor."""
        raise NotImplementedError

    def save_snapshot(self, collection: str, data: bytes, cursor: int) -> None:
        """Replace the collection's snapshot and log with ``data``."""
        raise NotImplementedError

    def reset_cursor(self, collection: str) -> None:
        """Forget the cursor so the whole collection is fetched again."""
        raise NotImplementedError

    def log_length(self, collection: str) -> int:
        raise NotImplementedError

    def outbox_depth(self) -> int:
        raise NotImplementedError

    def load_state(self, key: str) -> bytes | None:
        """Small named blobs for other components (e.g. circuit breaker state)."""
        raise NotImplementedError

    def save_state(self, key: str, value: bytes) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the writes inside the block into one commit."""
        yield

    def commit_open_batch(self) -> None:
        """Make what an open batch wrote so far durable now; the batch goes on."""

    def close(self) -> None:
        """Release the store; further use raises :class:`ClosedError`."""

    def describe(self) -> str:
        return type(self).__name__


def _default_directory() -> Path:
    env = os.environ.get("LEPTOS_SYNC_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "leptos_sync"


def file_identity(path: Path) -> int | None:
    """The file's inode (kept to 63 bits for SQLite), or ``None`` if it has none."""
    try:
        return os.stat(path).st_ino & ((1 << 63) - 1) or None
    except OSError:
        return None


StoreKind = Literal["replica", "server"]


def check_store_kind(
    db: sqlite3.Connection, path: Path, kind: StoreKind, own: frozenset[str]
) -> None:
    """Refuse to open a store of the other kind, or a foreign SQLite database.

    ``own`` names the tables a store of ``kind`` may hold.

    A replica store opened by the server (or a server store opened as a replica)
    would get the other kind's tables added and be misread from then on by
    ``inspect``, ``scrub`` and ``backup``; an application's own database would
    get ours. Nothing is changed before this check.
    """
    tables = {
        str(row[0])
        for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    other: StoreKind = "server" if kind == "replica" else "replica"
    if _MARKER[other] in tables and _MARKER[kind] not in tables:
        opener = (
            "leptos-sync serve --db" if other == "server" else "Storage.sqlite(...)"
        )
        raise StorageError(
            f"{path} is a {other} store, not a {kind} store; open it with {opener}"
        )
    if tables - own and _MARKER[kind] not in tables:
        raise StorageError(
            f"{path} is a SQLite database of something else (tables "
            f"{', '.join(sorted(tables)[:5])}); a {kind} store needs a new file"
        )


def store_tables(schema: str) -> frozenset[str]:
    """The table names a schema script creates."""
    return frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", schema))


class StoreLock:
    """One process at a time on a replica store.

    Two processes writing one replica store would number their operations
    alike (one counter sequence, two writers), and the server would refuse or
    drop one side's changes. The lock is an advisory ``flock`` on a ``-lock``
    file beside the store, held while the store is open and released by the
    kernel if the process dies; tools that only read (``inspect``, ``backup``,
    ``scrub``) do not take it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(f"{path}-lock")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot lock {path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if holder == str(os.getpid()):
                where = "already open in this process"
            else:
                by = f" (process {holder})" if holder.isdigit() else ""
                where = f"open in another process{by}"
            raise StorageError(
                f"{path} is {where}; a replica store is used by one process "
                "(and one Storage) at a time"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"cannot lock {path}: {exc}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def new_replica_id() -> int:
    """A random 64-bit replica id (also the Loro peer id); never zero."""
    return secrets.randbits(63) | 1


class MemoryStorage(Storage):
    """Everything in dicts; for tests, simulations and throwaway replicas."""

    def __init__(self, replica_id: int | None = None) -> None:
        self._replica_id = replica_id if replica_id is not None else new_replica_id()
        self._hlc = 0
        self._last_counter = 0
        self._collections: dict[str, CollectionState] = {}
        self._outbox: dict[int, StoredOp] = {}
        self._state: dict[str, bytes] = {}
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("the store is closed")

    def load(self) -> StoredState:
        self._check()
        collections = {
            name: CollectionState(state.snapshot, list(state.log), state.cursor)
            for name, state in self._collections.items()
        }
        return StoredState(
            self._replica_id,
            self._hlc,
            self._last_counter,
            collections,
            [self._outbox[k] for k in sorted(self._outbox)],
            [],
        )

    def _coll(self, name: str) -> CollectionState:
        return self._collections.setdefault(name, CollectionState())

    def append_local(
        self, collection: str, counter: int, hlc: int, data: bytes
    ) -> None:
        self._check()
        self._outbox[counter] = StoredOp(collection, counter, hlc, data)
        self._last_counter = max(self._last_counter, counter)
        self._hlc = max(self._hlc, hlc)

    def mark_pushed(self, counters: list[int]) -> None:
        self._check()
        for counter in counters:
            op = self._outbox.get(counter)
            if op is not None and not op.pushed:
                self._outbox[counter] = dataclasses.replace(op, pushed=True)

    def merge_outbox(
        self, collection: str, counters: list[int], hlc: int, data: bytes
    ) -> None:
        self._check()
        for counter in counters:
            del self._outbox[counter]
        top = max(counters)
        self._outbox[top] = StoredOp(collection, top, hlc, data)

    def append_remote(
        self, collection: str, updates: list[bytes], cursor: int, hlc: int
    ) -> None:
        self._check()
        state = self._coll(collection)
        state.log.extend(updates)
        state.cursor = max(state.cursor, cursor)
        self._hlc = max(self._hlc, hlc)

    def acknowledge(
        self, collection: str, counters: list[int], cursor: int, hlc: int
    ) -> None:
        self._check()
        state = self._coll(collection)
        for counter in counters:
            op = self._outbox.pop(counter, None)
            if op is not None:
                self._coll(op.collection).log.append(op.data)
        state.cursor = max(state.cursor, cursor)
        self._hlc = max(self._hlc, hlc)

    def save_snapshot(self, collection: str, data: bytes, cursor: int) -> None:
        self._check()
        state = self._coll(collection)
        state.snapshot = data
        state.log = []
        state.cursor = max(state.cursor, cursor)

    def reset_cursor(self, collection: str) -> None:
        self._coll(collection).cursor = 0

    def log_length(self, collection: str) -> int:
        return len(self._coll(collection).log)

    def outbox_depth(self) -> int:
        return len(self._outbox)

    def load_state(self, key: str) -> bytes | None:
        return self._state.get(key)

    def save_state(self, key: str, value: bytes) -> None:
        self._state[key] = bytes(value)

    def close(self) -> None:
        self._closed = True

    def describe(self) -> str:
        return "memory"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    collection TEXT PRIMARY KEY, data BLOB NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY, collection TEXT NOT NULL,
    data BLOB NOT NULL, crc INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS log_collection ON log (collection, id);
CREATE TABLE IF NOT EXISTS outbox (
    counter INTEGER PRIMARY KEY, collection TEXT NOT NULL, hlc INTEGER NOT NULL,
    data BLOB NOT NULL, crc INTEGER NOT NULL, pushed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS cursors (collection TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, collection TEXT NOT NULL, source TEXT NOT NULL,
    data BLOB NOT NULL, reason TEXT NOT NULL);
"""


def _runs(counters: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of the sorted counters, as (first, last) pairs."""
    runs: list[tuple[int, int]] = []
    for counter in sorted(set(counters)):
        if runs and counter == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], counter)
        else:
            runs.append((counter, counter))
    return runs


_MARKER: dict[StoreKind, str] = {"replica": "outbox", "server": "ops"}
_TABLES = store_tables(_SCHEMA)

_INSERT_OUTBOX = (
    "INSERT INTO outbox (counter, collection, hlc, data, crc) VALUES (?, ?, ?, ?, ?)"
)


class SQLiteStorage(Storage):
    """The embedded on-disk store (one SQLite file in WAL mode)."""

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability = "process",
        app_version: int | None = None,
    ) -> None:
        if durability not in ("process", "power"):
            raise ConfigError("durability", f"'process' or 'power', not {durability!r}")
        self.path = path
        self.durability = durability
        self._lock = threading.RLock()
        self._depth = 0
        self._closed = False
        self._rows: list[tuple[int, str, int, bytes, int]] = []
        self._store_lock = StoreLock(path)
        try:
            self._db = sqlite3.connect(
                str(path), isolation_level=None, check_same_thread=False
            )
            check_store_kind(self._db, path, "replica", _TABLES)
            self._db.execute("PRAGMA journal_mode=WAL")
            sync = "FULL" if durability == "power" else "NORMAL"
            self._db.execute(f"PRAGMA synchronous={sync}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate(app_version)
        except sqlite3.DatabaseError as exc:
            self._abandon()
            raise StorageError(f"cannot open store {path}: {exc}") from exc
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Give up opening: close what was opened, release the lock."""
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        self._closed = True
        self._store_lock.release()

    # Schema ------------------------------------------------------------------

    def _migrate(self, app_version: int | None) -> None:
        db = self._db
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found > FORMAT_VERSION:
            raise SchemaVersionError(
                f"{self.path} was written by a newer leptos_sync (store format "
                f"{found}; this version reads up to {FORMAT_VERSION}); upgrade "
                "leptos_sync to open it"
            )
        with self._txn():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
            if "pushed" not in columns:
                # Format 1 did not record pushes: any stored operation may
                # have been pushed already.
                db.execute(
                    "ALTER TABLE outbox ADD COLUMN pushed INTEGER NOT NULL DEFAULT 0"
                )
                db.execute("UPDATE outbox SET pushed=1")
            if found < FORMAT_VERSION:
                db.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            if self._meta_int("replica_id") is None:
                self._set_meta("replica_id", new_replica_id())
            self._check_file_identity()
            if app_version is not None:
                stored = self._meta_int("app_version")
                if stored is not None and stored > app_version:
                    raise SchemaVersionError(
                        f"{self.path} is at version {stored}, newer than the "
                        f"requested version {app_version}"
                    )
                self._set_meta("app_version", app_version)

    def _check_file_identity(self) -> None:
        # A replica id must belong to one store. A store file copied by hand (cp,
        # a file-sync tool) carries the original's id, and the two would number
        # their operations alike: the server would see one operation id with two
        # contents. SQLite cannot tell a copy from the original, but the file's
        # inode changes when it is copied; a new inode means a new identity.
        # Moving the file to another file system looks the same, and costs no
        # more than a new id.
        inode = None if self.path is None else file_identity(self.path)
        if inode is None:
            return
        stored = self._meta_int("file_inode")
        if stored is not None and stored != inode:
            replica_id = new_replica_id()
            self._set_meta("replica_id", replica_id)
            logger.warning(
                "%s is a copy of another store (its file changed); new replica "
                "id %x, so that its changes stay apart from the original's",
                self.path,
                replica_id,
            )
        if stored != inode:
            self._set_meta("file_inode", inode)

    @property
    def app_version(self) -> int | None:
        return self._meta_int("app_version")

    def _meta_int(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    def _raise_meta(self, key: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
            "DO UPDATE SET value=max(value, excluded.value)",
            (key, value),
        )

    # Transactions ------------------------------------------------------------

    @contextlib.contextmanager
    def _txn(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise ClosedError(f"the store {self.path} is closed")
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self._db
            except BaseException as exc:
                self._depth -= 1
                if outer:
                    self._rows.clear()
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.DatabaseError):
                    raise StorageError(f"{self.path}: {exc}") from exc
                raise
            self._depth -= 1
            if outer and not self._closed:
                try:
                    self._flush_outbox()
                    self._db.execute("COMMIT")
                except sqlite3.DatabaseError as exc:
                    self._db.execute("ROLLBACK")
                    raise StorageError(f"commit failed: {exc}") from exc

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        with self._txn():
            yield

    def commit_open_batch(self) -> None:
        with self._lock:
            if self._depth and not self._closed:
                self._flush_outbox()
                self._db.execute("COMMIT")
                self._db.execute("BEGIN IMMEDIATE")

    # Reading -----------------------------------------------------------------

    def load(self) -> StoredState:
        with self._txn() as db:
            replica_id = self._meta_int("replica_id") or new_replica_id()
            quarantined: list[Quarantined] = []
            collections: dict[str, CollectionState] = {}
            for name, seq in db.execute("SELECT collection, seq FROM cursors"):
                collections[name] = CollectionState(cursor=seq)
            for name, data, crc in db.execute(
                "SELECT collection, data, crc FROM snapshots"
            ).fetchall():
                state = collections.setdefault(name, CollectionState())
                if crc32c(data) == crc:
                    state.snapshot = bytes(data)
                else:
                    quarantined.append(self._quarantine(name, "snapshot", data))
                    db.execute("DELETE FROM snapshots WHERE collection=?", (name,))
            for row_id, name, data, crc in db.execute(
                "SELECT id, collection, data, crc FROM log ORDER BY id"
            ).fetchall():
                state = collections.setdefault(name, CollectionState())
                if crc32c(data) == crc:
                    state.log.append(bytes(data))
                else:
                    quarantined.append(self._quarantine(name, f"log#{row_id}", data))
                    db.execute("DELETE FROM log WHERE id=?", (row_id,))
            outbox: list[StoredOp] = []
            for counter, name, hlc, data, crc, pushed in db.execute(
                "SELECT counter, collection, hlc, data, crc, pushed FROM outbox "
                "ORDER BY counter"
            ).fetchall():
                if crc32c(data) != crc:
                    quarantined.append(
                        self._quarantine(name, f"outbox#{counter}", data)
                    )
                    db.execute("DELETE FROM outbox WHERE counter=?", (counter,))
                    continue
                outbox.append(StoredOp(name, counter, hlc, bytes(data), bool(pushed)))
            for item in quarantined:
                # What failed its checksum is refetched: start the collection over.
                collections.setdefault(item.collection, CollectionState()).cursor = 0
                db.execute(
                    "INSERT INTO cursors (collection, seq) VALUES (?, 0) "
                    "ON CONFLICT(collection) DO UPDATE SET seq=0",
                    (item.collection,),
                )
            if quarantined:
                # Operations of this replica may be among what was set aside,
                # and until the server sends them back the documents lack them:
                # new changes would reuse their Loro ids (peer id + counter),
                # which every other replica drops as already seen. A new replica
                # id (also the Loro peer id) keeps new changes apart.
                replica_id = new_replica_id()
                self._set_meta("replica_id", replica_id)
                logger.warning(
                    "%s: new replica id %x after quarantining %d blobs",
                    self.path,
                    replica_id,
                    len(quarantined),
                )
            last_counter = max(
                [self._meta_int("last_counter") or 0] + [op.counter for op in outbox]
            )
            hlc = max([self._meta_int("hlc") or 0] + [op.hlc for op in outbox])
        return StoredState(
            replica_id, hlc, last_counter, collections, outbox, quarantined
        )

    def _quarantine(self, collection: str, source: str, data: bytes) -> Quarantined:
        reason = "checksum mismatch"
        logger.warning(
            "quarantined %s of collection %r in %s: %s",
            source,
            collection,
            self.path,
            reason,
        )
        self._db.execute(
            "INSERT INTO quarantine (collection, source, data, reason) "
            "VALUES (?, ?, ?, ?)",
            (collection, source, data, reason),
        )
        return Quarantined(collection, source, reason)

    def quarantined(self) -> list[Quarantined]:
        rows = self._db.execute(
            "SELECT collection, source, reason FROM quarantine ORDER BY id"
        ).fetchall()
        return [Quarantined(c, s, r) for c, s, r in rows]

    def log_length(self, collection: str) -> int:
        row = self._db.execute(
            "SELECT count(*) FROM log WHERE collection=?", (collection,)
        ).fetchone()
        return int(row[0])

    def outbox_depth(self) -> int:
        stored = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        return stored + len(self._rows)

    def cursors(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT collection, seq FROM cursors").fetchall())

    def collection_names(self) -> list[str]:
        rows = self._db.execute(
            "SELECT collection FROM cursors UNION SELECT collection FROM snapshots "
            "UNION SELECT DISTINCT collection FROM log ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def replica_id(self) -> int:
        return self._meta_int("replica_id") or 0

    def integrity_check(self) -> str:
        """SQLite's own ``PRAGMA integrity_check`` verdict (``"ok"`` when sound)."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    def scrub(self) -> list[Quarantined]:
        """Verify every stored blob's checksum without loading the documents."""
        bad: list[Quarantined] = []
        queries = (
            ("snapshot", "SELECT collection, 'snapshot', data, crc FROM snapshots"),
            ("log", "SELECT collection, 'log#' || id, data, crc FROM log"),
            (
                "outbox",
                "SELECT collection, 'outbox#' || counter, data, crc FROM outbox",
            ),
        )
        for _, query in queries:
            for name, source, data, crc in self._db.execute(query):
                if crc32c(data) != crc:
                    bad.append(Quarantined(name, source, "checksum mismatch"))
        return bad

    # Writing -----------------------------------------------------------------

    def append_local(
        self, collection: str, counter: int, hlc: int, data: bytes
    ) -> None:
        # Only the outbox is written here; the acknowledgement moves the entry to
        # the log. One insert per change keeps local writes cheap.
        row = (counter, collection, hlc, data, crc32c(data))
        if self._depth and not self._closed:
            # Inside batch(): the rows are inserted together just before the
            # batch's commit, which is when they become durable anyway.
            self._rows.append(row)
            return
        with self._txn() as db:
            db.execute(_INSERT_OUTBOX, row)

    def _flush_outbox(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self._db.executemany(_INSERT_OUTBOX, rows)

    def mark_pushed(self, counters: list[int]) -> None:
        with self._txn() as db:
            self._flush_outbox()
            db.executemany(
                "UPDATE outbox SET pushed=1 WHERE counter BETWEEN ? AND ?",
                _runs(counters),
            )
        # Durable now, even inside an open batch: the push leaves next.
        self.commit_open_batch()

    def merge_outbox(
        self, collection: str, counters: list[int], hlc: int, data: bytes
    ) -> None:
        with self._txn() as db:
            # Rows buffered by an open batch() go in first, to be replaced too.
            self._flush_outbox()
            db.executemany(
                "DELETE FROM outbox WHERE counter BETWEEN ? AND ? AND collection=?",
                [(first, last, collection) for first, last in _runs(counters)],
            )
            db.execute(
                _INSERT_OUTBOX, (max(counters), collection, hlc, data, crc32c(data))
            )

    def append_remote(
        self, collection: str, updates: list[bytes], cursor: int, hlc: int
    ) -> None:
        with self._txn() as db:
            db.executemany(
                "INSERT INTO log (collection, data, crc) VALUES (?, ?, ?)",
                [(collection, u, crc32c(u)) for u in updates],
            )
            self._set_cursor(collection, cursor)
            self._raise_meta("hlc", hlc)

    def acknowledge(
        self, collection: str, counters: list[int], cursor: int, hlc: int
    ) -> None:
        with self._txn() as db:
            # Acknowledgements come in runs of consecutive counters: one
            # statement per run moves them from the outbox to the log.
            self._flush_outbox()
            runs = _runs(counters)
            db.executemany(
                "INSERT INTO log (collection, data, crc) SELECT collection, data, crc "
                "FROM outbox WHERE counter BETWEEN ? AND ? ORDER BY counter",
                runs,
            )
            db.executemany("DELETE FROM outbox WHERE counter BETWEEN ? AND ?", runs)
            if counters:
                self._raise_meta("last_counter", max(counters))
            self._set_cursor(collection, cursor)
            self._raise_meta("hlc", hlc)

    def _set_cursor(self, collection: str, cursor: int) -> None:
        self._db.execute(
            "INSERT INTO cursors (collection, seq) VALUES (?, ?) "
            "ON CONFLICT(collection) "
            "DO UPDATE SET seq=max(seq, excluded.seq)",
            (collection, cursor),
        )

    def save_snapshot(self, collection: str, data: bytes, cursor: int) -> None:
        with self._txn() as db:
            db.execute(
                "INSERT INTO snapshots (collection, data, crc) VALUES (?, ?, ?) "
                "ON CONFLICT(collection) DO UPDATE SET data=excluded.data, "
                "crc=excluded.crc",
                (collection, data, crc32c(data)),
            )
            db.execute("DELETE FROM log WHERE collection=?", (collection,))
            self._set_cursor(collection, cursor)

    def reset_cursor(self, collection: str) -> None:
        with self._txn() as db:
            db.execute(
                "INSERT INTO cursors (collection, seq) VALUES (?, 0) "
                "ON CONFLICT(collection) DO UPDATE SET seq=0",
                (collection,),
            )

    def load_state(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def save_state(self, key: str, value: bytes) -> None:
        with self._txn() as db:
            db.execute(
                "INSERT INTO state (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, bytes(value)),
            )

    def close(self) -> None:
        """Close the store; what an open batch wrote is committed first."""
        with self._lock:
            if not self._closed:
                if self._depth:
                    self._flush_outbox()
                    self._db.execute("COMMIT")
                self._closed = True
                self._db.close()
                self._store_lock.release()

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def __repr__(self) -> str:
        return f"SQLiteStorage({str(self.path)!r}, durability={self.durability!r})"
