"""Backups, verified restores and scrubs of SQLite stores (replica or server).

:func:`backup_store` takes a consistent online snapshot of a store with SQLite's
backup API: the copy reflects one committed state even while the store is being
written, and nothing has to stop. The backup is a directory holding the copy
(``store.sqlite3``, a single self-contained file) and ``manifest.json``: the
store's kind and id, when the backup was taken, and each file's size, SHA-256
and CRC32C. The directory appears whole or not at all (it is built beside its
final name and renamed). Its name must be new or an empty directory (which the
backup replaces); a directory holding anything is never written into.

:func:`restore_store` verifies a backup completely before it touches anything:
the checksums of the manifest, SQLite's integrity check of the copy, and that
the copy is the kind of store the manifest says. A corrupt backup raises
:class:`~leptos_sync.errors.IntegrityError` and leaves the store as it was. The
store is then replaced by an atomic rename; the previous file is kept beside it
(``<store>.pre-restore-<time>``) unless told otherwise. Stop the process that
uses the store first: a store cannot be swapped under an open connection.

A restored store gets a **new identity** by default:

* a replica store gets a new replica id. The backup is older than the replica
  was, and the server holds operations the replica numbered after it; reusing
  the old id would number new changes with counters (and Loro operation ids) that
  are already taken, and the server would take them for resends and drop them.
  Under the new id nothing collides; operations in the restored outbox are sent
  again and stored once more (a duplicate that merging ignores).
* a server store gets a new server id, marking a new epoch. Clients whose cursor
  is past the restored head are told to start over by the hub (an empty snapshot
  at 0) when they next pull; operations stored after the backup was taken are
  gone from the server, and only replicas that still hold them unacknowledged
  push them again. Restoring a server from an old backup therefore loses what
  was acknowledged after it; take backups often.

:func:`scrub_store` reads every stored blob of a store file and checks its
CRC32C, without loading documents; :func:`add_integrity_check` puts that scrub
on a :class:`~leptos_sync.server.app.SyncServer`'s ``/health`` as the
``integrity:scrub`` check (``fail`` while the store holds a corrupt blob).

Reading a store without changing it (scrub, ``leptos-sync inspect``) opens it
read-only. SQLite must still create the ``-shm`` file beside a WAL store to read
it; in a read-only directory or file system it cannot, and the store is then read
as an *immutable* file instead (no locks, no shared memory). That is sound only
when no process writes the store, which holds there: a writer would have created
the ``-shm`` file. A store whose ``-wal`` (or rollback journal) file still
holds changes is refused rather than read that way, because an immutable read
skips them.

Logging: INFO for each backup and restore; ERROR when a scrub of a live server
store finds corruption (data is damaged: someone must act).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import crc32c as _crc32c

from .clock import Clock, SystemClock
from .durations import Duration, to_ns
from .errors import IntegrityError, StorageError
from .monitoring.health import CheckResult, HealthStatus
from .protocol import crc32c
from .storage import StoreLock, file_identity, new_replica_id

if TYPE_CHECKING:
    from .server.app import SyncServer

__all__ = [
    "BackupFile",
    "BadBlob",
    "Manifest",
    "RestoreResult",
    "ScrubReport",
    "add_integrity_check",
    "backup_store",
    "load_manifest",
    "restore_store",
    "scrub_store",
    "verify_backup",
]

logger = logging.getLogger(__name__)

StoreKind = Literal["replica", "server"]
MANIFEST = "manifest.json"
STORE_FILE = "store.sqlite3"
BACKUP_FORMAT = "leptos-sync-backup"
BACKUP_VERSION = 1
_BLOCK = 1 << 20


@dataclass(frozen=True)
class BackupFile:
    """One file of a backup and its checksums."""

    name: str
    size: int
    sha256: str
    crc32c: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "crc32c": self.crc32c,
        }


@dataclass(frozen=True)
class Manifest:
    """What a backup holds; written as ``manifest.json`` beside the copy.

    Attributes:
        kind: ``"replica"`` or ``"server"``.
        store_id: the replica id (16 hex digits) or the server id.
        created_ns: wall time of the backup, nanoseconds since the epoch.
        source: the path of the store that was backed up.
        store_format: the store's schema version (``PRAGMA user_version``).
        files: the files of the backup with their sizes and checksums.
        tables: row counts of the store's tables.
        bad_blobs: stored blobs that failed their checksum when the backup was
            taken (they are copied as they are; a scrub names them).
    """

    kind: StoreKind
    store_id: str
    created_ns: int
    source: str
    store_format: int
    files: tuple[BackupFile, ...]
    tables: dict[str, int] = field(default_factory=dict)
    bad_blobs: int = 0

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.created_ns / 1e9, UTC)

    def to_json(self) -> dict[str, Any]:
        from . import __version__

        id_key = "replica_id" if self.kind == "replica" else "server_id"
        return {
            "format": BACKUP_FORMAT,
            "version": BACKUP_VERSION,
            "kind": self.kind,
            id_key: self.store_id,
            "created": self.created.isoformat().replace("+00:00", "Z"),
            "created_ns": self.created_ns,
            "source": self.source,
            "store_format": self.store_format,
            "files": [f.to_json() for f in self.files],
            "tables": dict(self.tables),
            "bad_blobs": self.bad_blobs,
            "library_version": __version__,
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Parse a manifest; raises :class:`IntegrityError` if it is malformed."""
        try:
            if data.get("format") != BACKUP_FORMAT:
                raise ValueError(f"not a {BACKUP_FORMAT} manifest")
            if int(data["version"]) > BACKUP_VERSION:
                raise ValueError(
                    f"manifest version {data['version']} is newer than this "
                    f"library reads ({BACKUP_VERSION})"
                )
            kind = data["kind"]
            if kind not in ("replica", "server"):
                raise ValueError(f"unknown store kind {kind!r}")
            store_id = data["replica_id" if kind == "replica" else "server_id"]
            files = tuple(
                BackupFile(
                    str(f["name"]), int(f["size"]), str(f["sha256"]), str(f["crc32c"])
                )
                for f in data["files"]
            )
            if not files or any(
                "/" in f.name or f.name in ("", ".", "..") for f in files
            ):
                raise ValueError("bad file list")
            return cls(
                kind=kind,
                store_id=str(store_id),
                created_ns=int(data["created_ns"]),
                source=str(data.get("source", "")),
                store_format=int(data.get("store_format", 0)),
                files=files,
                tables={str(k): int(v) for k, v in data.get("tables", {}).items()},
                bad_blobs=int(data.get("bad_blobs", 0)),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"the backup manifest is malformed: {exc}") from exc


@dataclass(frozen=True)
class RestoreResult:
    """What :func:`restore_store` did.

    Attributes:
        path: the restored store.
        manifest: the backup's manifest.
        previous: where the replaced store was kept (``None`` if there was none
            or it was not kept).
        old_id: the id the backup carried.
        new_id: the id the restored store has (equal to ``old_id`` when a new
            identity was not asked for).
    """

    path: Path
    manifest: Manifest
    previous: Path | None
    old_id: str
    new_id: str


@dataclass(frozen=True)
class BadBlob:
    """A stored blob whose bytes do not match their CRC32C."""

    table: str
    key: str
    collection: str

    def __str__(self) -> str:
        return f"{self.table} {self.collection}#{self.key}"


@dataclass(frozen=True)
class ScrubReport:
    """The verdict of :func:`scrub_store`."""

    path: Path
    kind: StoreKind
    checked: int
    bad: tuple[BadBlob, ...]
    sqlite_integrity: str

    @property
    def ok(self) -> bool:
        return not self.bad and self.sqlite_integrity == "ok"

    def describe(self) -> str:
        if self.ok:
            return f"{self.checked} blobs verified, SQLite integrity ok"
        parts = []
        if self.bad:
            shown = ", ".join(str(b) for b in self.bad[:5])
            more = f" and {len(self.bad) - 5} more" if len(self.bad) > 5 else ""
            parts.append(f"{len(self.bad)} corrupt blobs ({shown}{more})")
        if self.sqlite_integrity != "ok":
            parts.append(f"SQLite integrity: {self.sqlite_integrity}")
        return "; ".join(parts)


# Opening store files ---------------------------------------------------------


def open_store_file(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open an existing store file (never create one)."""
    if not path.is_file():
        raise StorageError(f"no store at {path}")
    mode = "ro" if readonly else "rw"
    return _connect(path, f"mode={mode}")


def _connect(path: Path, options: str) -> sqlite3.Connection:
    try:
        return sqlite3.connect(f"file:{path}?{options}", uri=True, isolation_level=None)
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc


def open_store_readonly(path: Path) -> tuple[sqlite3.Connection, bool]:
    """Open an existing store for reading; returns it and whether it is immutable.

    A read-only open fails when SQLite cannot create the store's ``-shm`` file
    (a read-only directory or file system); the store is then opened as an
    immutable file (see the module docstring for when that is sound).

    Raises:
        StorageError: there is no store, or it cannot be read either way.
    """
    db = open_store_file(path, readonly=True)
    try:
        # Opening is lazy: the first read is what needs the -shm file.
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db, False
    except sqlite3.OperationalError as exc:
        db.close()
        if not _cannot_open_in_place(exc):
            raise StorageError(f"{path} is not a readable SQLite store: {exc}") from exc
        reason = exc
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StorageError(f"{path} is not a readable SQLite store: {exc}") from exc
    return _open_immutable(path, reason), True


def _cannot_open_in_place(exc: sqlite3.OperationalError) -> bool:
    """Whether a read-only open failed for want of a writable directory."""
    primary = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY)


def _open_immutable(path: Path, reason: sqlite3.OperationalError) -> sqlite3.Connection:
    # An immutable read ignores the WAL and any rollback journal: refuse a
    # store whose committed (or half-undone) changes are in one of them.
    for suffix in ("-wal", "-journal"):
        pending = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            if pending.stat().st_size > 0:
                raise StorageError(
                    f"cannot read {path} in place ({reason}), and reading it as an "
                    f"immutable file would miss the changes in {pending.name}; copy "
                    f"the store with its {suffix} file to a writable directory and "
                    "read the copy"
                ) from reason
    return _connect(path, "mode=ro&immutable=1")


def store_kind(db: sqlite3.Connection, path: Path) -> StoreKind:
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{path} is not a readable SQLite store: {exc}") from exc
    if {"outbox", "cursors", "log"} <= tables:
        return "replica"
    if {"ops", "heads"} <= tables:
        return "server"
    raise StorageError(f"{path} is not a leptos_sync store (no outbox or ops table)")


def store_id_of(db: sqlite3.Connection, kind: StoreKind) -> str:
    key = "replica_id" if kind == "replica" else "server_id"
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    if row is None:
        return ""
    return f"{int(row[0]):016x}" if kind == "replica" else str(row[0])


def _tables(db: sqlite3.Connection, kind: StoreKind) -> dict[str, int]:
    names = (
        ("snapshots", "log", "outbox", "cursors", "quarantine")
        if kind == "replica"
        else ("ops", "heads", "snapshots")
    )
    return {
        name: int(db.execute(f"SELECT count(*) FROM {name}").fetchone()[0])
        for name in names
    }


def _blob_queries(kind: StoreKind) -> tuple[tuple[str, str], ...]:
    if kind == "replica":
        return (
            ("snapshots", "SELECT collection, 'snapshot', data, crc FROM snapshots"),
            ("log", "SELECT collection, id, data, crc FROM log"),
            ("outbox", "SELECT collection, counter, data, crc FROM outbox"),
        )
    return (
        ("ops", "SELECT collection, seq, data, crc FROM ops"),
        ("snapshots", "SELECT collection, seq, data, crc FROM snapshots"),
    )


def scrub_blobs(db: sqlite3.Connection, kind: StoreKind) -> tuple[int, list[BadBlob]]:
    checked = 0
    bad: list[BadBlob] = []
    for table, query in _blob_queries(kind):
        for collection, row_key, data, crc in db.execute(query):
            checked += 1
            if crc32c(data) != crc:
                bad.append(BadBlob(table, str(row_key), str(collection)))
    return checked, bad


def _file_digest(path: Path) -> tuple[int, str, str]:
    sha = hashlib.sha256()
    crc = 0
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            sha.update(block)
            crc = _crc32c.crc32c(block, crc)
            size += len(block)
    return size, sha.hexdigest(), f"{crc:08x}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# Scrub -----------------------------------------------------------------------


def scrub_store(path: str | os.PathLike[str]) -> ScrubReport:
    """Check every stored blob's CRC32C and SQLite's integrity, read-only.

    Works on replica and server stores, open or closed (it reads one consistent
    state). Quarantined replica blobs are not counted: they are known bad.
    """
    path = Path(path)
    with read_store(path, "scrub") as (db, kind, _):
        checked, bad = scrub_blobs(db, kind)
        verdict = str(db.execute("PRAGMA integrity_check").fetchone()[0])
    return ScrubReport(path, kind, checked, tuple(bad), verdict)


@contextlib.contextmanager
def read_store(
    path: Path, verb: str
) -> Iterator[tuple[sqlite3.Connection, StoreKind, bool]]:
    """One consistent read-only view of the store at ``path``, its kind, and
    whether it was opened as an immutable file (see :func:`open_store_readonly`).

    SQLite errors while reading become a :class:`StorageError` saying what could
    not be done (``verb``) to which file.
    """
    db, immutable = open_store_readonly(path)
    try:
        kind = store_kind(db, path)
        db.execute("BEGIN")
        yield db, kind, immutable
        db.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot {verb} {path}: {exc}") from exc
    finally:
        db.close()


# Backup ----------------------------------------------------------------------


def backup_store(
    path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    clock: Clock | None = None,
) -> Manifest:
    """Copy the store at ``path`` into the backup directory ``dest``.

    ``dest`` must not exist, or be an empty directory, which the backup then
    replaces (its permissions become those of a new directory). A directory
    holding anything, or a file, is refused and left as it is.

    The store may be in use: the copy is one consistent, committed state.

    Raises:
        StorageError: there is no store at ``path``, it is not a leptos_sync
            store, or ``dest`` exists and is not an empty directory.
    """
    source = Path(path)
    target = Path(dest)
    clock = clock if clock is not None else SystemClock()
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        raise StorageError(
            f"backup destination {target} exists and is not an empty directory; "
            "choose a new path"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.parent / f".{target.name}.building-{secrets.token_hex(4)}"
    building.mkdir()
    try:
        manifest = _write_backup(source, building, clock)
        if target.exists():
            # Only an empty directory: rmdir refuses one that filled meanwhile.
            target.rmdir()
        os.rename(building, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    logger.info(
        "backed up %s store %s (%s) to %s",
        manifest.kind,
        source,
        manifest.store_id,
        target,
    )
    return manifest


def _write_backup(source: Path, building: Path, clock: Clock) -> Manifest:
    copy_path = building / STORE_FILE
    src = open_store_file(source)
    try:
        kind = store_kind(src, source)
        created_ns = clock.wall_ns()
        dst = sqlite3.connect(str(copy_path), isolation_level=None)
        try:
            # One step (pages=-1): the whole copy is taken under one read
            # transaction, so it is a single committed state of the store.
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")
            verdict = str(dst.execute("PRAGMA integrity_check").fetchone()[0])
            if verdict != "ok":
                raise IntegrityError(
                    f"the store {source} fails SQLite's integrity check ({verdict}); "
                    "the backup was not written"
                )
            store_id = store_id_of(dst, kind)
            tables = _tables(dst, kind)
            _, bad = scrub_blobs(dst, kind)
            store_format = int(dst.execute("PRAGMA user_version").fetchone()[0])
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"backup of {source} failed: {exc}") from exc
    finally:
        src.close()
    if bad:
        logger.warning(
            "the store %s holds %d corrupt blobs; they are in the backup as they are",
            source,
            len(bad),
        )
    _fsync_file(copy_path)
    size, sha, crc = _file_digest(copy_path)
    manifest = Manifest(
        kind=kind,
        store_id=store_id,
        created_ns=created_ns,
        source=str(source.resolve()),
        store_format=store_format,
        files=(BackupFile(STORE_FILE, size, sha, crc),),
        tables=tables,
        bad_blobs=len(bad),
    )
    manifest_path = building / MANIFEST
    manifest_path.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    _fsync_file(manifest_path)
    _fsync_dir(building)
    return manifest


# Verify and restore ------------------------------------------------------------


def load_manifest(backup: str | os.PathLike[str]) -> Manifest:
    """Read the manifest of the backup directory ``backup`` (or the manifest file).

    Raises:
        StorageError: ``backup`` is not a backup made by :func:`backup_store`.
        IntegrityError: it is one, but its manifest is damaged.
    """
    path = Path(backup)
    manifest_path = path / MANIFEST if path.is_dir() else path
    if not manifest_path.is_file():
        raise StorageError(f"no backup at {backup} (no {MANIFEST})")
    not_a_backup = (
        f"{backup} is not a backup made by `leptos-sync backup`: give the backup "
        f"directory (the one holding {MANIFEST} and {STORE_FILE})"
    )
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read {manifest_path}: {exc.strerror}") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if manifest_path.name == MANIFEST:
            raise IntegrityError(
                f"the manifest of {backup} is damaged (not JSON: {exc})"
            ) from exc
        raise StorageError(not_a_backup) from exc
    if not isinstance(data, dict) or data.get("format") != BACKUP_FORMAT:
        raise StorageError(not_a_backup)
    return Manifest.from_json(data)


def verify_backup(backup: str | os.PathLike[str]) -> Manifest:
    """Check a backup completely; returns its manifest.

    Raises:
        IntegrityError: a file is missing or its size or checksums differ from
            the manifest, or the copy fails SQLite's integrity check, or it is
            not the store the manifest describes.
    """
    directory = Path(backup)
    if not directory.is_dir():
        directory = directory.parent
    manifest = load_manifest(backup)
    for entry in manifest.files:
        _verify_file(directory / entry.name, entry, f"backup {directory}")
    _verify_store(directory / STORE_FILE, manifest, f"backup {directory}")
    return manifest


def _verify_file(path: Path, entry: BackupFile, what: str) -> None:
    if not path.is_file():
        raise IntegrityError(f"{what} is incomplete: {entry.name} is missing")
    size, sha, crc = _file_digest(path)
    if size != entry.size or sha != entry.sha256 or crc != entry.crc32c:
        raise IntegrityError(
            f"{what} is corrupt: {entry.name} has {size} bytes, sha256 {sha[:16]}..., "
            f"crc32c {crc}; the manifest says {entry.size} bytes, sha256 "
            f"{entry.sha256[:16]}..., crc32c {entry.crc32c}. Nothing was changed; "
            "use another backup"
        )


def _verify_store(path: Path, manifest: Manifest, what: str) -> None:
    try:
        db = open_store_file(path, readonly=True)
    except StorageError as exc:
        raise IntegrityError(f"{what}: {exc}") from exc
    try:
        verdict = str(db.execute("PRAGMA integrity_check").fetchone()[0])
        if verdict != "ok":
            raise IntegrityError(f"{what} fails SQLite's integrity check: {verdict}")
        kind = store_kind(db, path)
        store_id = store_id_of(db, kind)
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"{what} is not a readable store: {exc}") from exc
    except StorageError as exc:
        raise IntegrityError(f"{what}: {exc}") from exc
    finally:
        db.close()
    if (kind, store_id) != (manifest.kind, manifest.store_id):
        raise IntegrityError(
            f"{what} holds a {kind} store {store_id!r}, but its manifest describes "
            f"a {manifest.kind} store {manifest.store_id!r}"
        )


def restore_store(
    backup: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    new_identity: bool = True,
    keep_previous: bool = True,
) -> RestoreResult:
    """Replace the store at ``path`` with the backup, after verifying it.

    Stop every process using the store first: a replica store that a process
    holds open is refused (see :class:`~leptos_sync.storage.StoreLock`).

    Args:
        backup: the backup directory (as written by :func:`backup_store`).
        path: the store to restore; created if missing.
        new_identity: give the restored store a new replica or server id (see
            the module docstring for why this is the default).
        keep_previous: keep the replaced store as ``<path>.pre-restore-<time>``.

    Raises:
        IntegrityError: the backup is corrupt; ``path`` was not touched.
        StorageError: the backup is missing or the store cannot be replaced.
    """
    target = Path(path)
    directory = Path(backup)
    manifest = verify_backup(directory)
    if not directory.is_dir():
        directory = directory.parent
    if target.exists():
        with read_store(target, "restore over") as (_, kind, _immutable):
            if kind != manifest.kind:
                raise StorageError(
                    f"{target} is a {kind} store and the backup is of a "
                    f"{manifest.kind} store; restore it to a {manifest.kind} "
                    "store's path"
                )
    entry = next(f for f in manifest.files if f.name == STORE_FILE)

    # Stage the copy beside the store (same file system, so the final rename is
    # atomic) and check it again there: the copy itself could have failed.
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.parent / f".{target.name}.restore-{secrets.token_hex(4)}"
    lock = StoreLock(target) if manifest.kind == "replica" else None
    try:
        shutil.copyfile(directory / STORE_FILE, staged)
        _fsync_file(staged)
        _verify_file(staged, entry, f"the staged copy {staged}")
        new_id = manifest.store_id
        if new_identity:
            new_id = _renew_identity(staged, manifest.kind)
        if manifest.kind == "replica":
            # The rename keeps the staged file's inode: record it, so that
            # opening the restored store does not take it for a copy.
            _record_file_identity(staged)
        _fsync_file(staged)
        previous = _set_aside(target, keep_previous)
        os.replace(staged, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            staged.unlink()
        raise
    finally:
        if lock is not None:
            lock.release()
    logger.info(
        "restored %s store %s from the backup of %s (id %s -> %s)",
        manifest.kind,
        target,
        manifest.created.isoformat(),
        manifest.store_id,
        new_id,
    )
    return RestoreResult(target, manifest, previous, manifest.store_id, new_id)


def _renew_identity(path: Path, kind: StoreKind) -> str:
    db = open_store_file(path)
    try:
        if kind == "replica":
            replica_id = new_replica_id()
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('replica_id', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (replica_id,),
            )
            return f"{replica_id:016x}"
        server_id = secrets.token_hex(8)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('server_id', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (server_id,),
        )
        return server_id
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot renew the identity of {path}: {exc}") from exc
    finally:
        db.close()


def _record_file_identity(path: Path) -> None:
    db = open_store_file(path)
    try:
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('file_inode', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (file_identity(path),),
        )
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot record the file of {path}: {exc}") from exc
    finally:
        db.close()


def _set_aside(target: Path, keep: bool) -> Path | None:
    """Fold the store's WAL into it and keep a copy; remove its WAL files.

    A WAL file left beside the restored store would be replayed into it, so it
    must go; it is checkpointed first so that the kept copy is complete.
    """
    wal = target.with_name(target.name + "-wal")
    shm = target.with_name(target.name + "-shm")
    if not target.exists():
        for stale in (wal, shm):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        return None
    folded = False
    try:
        db = sqlite3.connect(f"file:{target}?mode=rw", uri=True, isolation_level=None)
        try:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            folded = busy == 0
        finally:
            db.close()
    except sqlite3.DatabaseError:
        folded = False  # a damaged store: keep its WAL beside the copy instead
    previous: Path | None = None
    if keep:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        previous = target.with_name(f"{target.name}.pre-restore-{stamp}")
        if previous.exists():
            previous = previous.with_name(f"{previous.name}-{secrets.token_hex(2)}")
        shutil.copy2(target, previous)
        if not folded and wal.exists():
            shutil.copy2(wal, previous.with_name(previous.name + "-wal"))
    for stale in (wal, shm):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    return previous


# Health ----------------------------------------------------------------------


def add_integrity_check(
    server: SyncServer,
    *,
    every: Duration = timedelta(minutes=5),
    timeout: Duration = timedelta(seconds=60),
) -> Callable[[], Awaitable[CheckResult]]:
    """Report the server store's scrub on ``/health`` as ``integrity:scrub``.

    The scrub reads the whole store, so it runs at most once per ``every`` (in
    a worker thread); health requests in between report its last verdict. A
    corrupt blob makes the check ``fail`` (and ``/health`` answer 503) until
    the store is repaired; the first scrub to find it logs an ERROR.

    Returns the check function (also registered on ``server.health_checker``).
    """
    every_ns = to_ns(every)
    path = getattr(server.store, "path", None)
    last: dict[str, Any] = {"at": None, "report": None, "logged": ()}

    async def check() -> CheckResult:
        if path is None:
            return CheckResult(
                "integrity", "scrub", HealthStatus.PASS, output="memory store"
            )
        now = server.clock.monotonic_ns()
        if last["at"] is None or now - last["at"] >= every_ns:
            last["report"] = await asyncio.to_thread(scrub_store, path)
            last["at"] = now
        report: ScrubReport = last["report"]
        if report.ok:
            return CheckResult(
                "integrity",
                "scrub",
                HealthStatus.PASS,
                observed_value=0,
                observed_unit="corrupt blobs",
                output=report.describe(),
            )
        if report.bad != last["logged"]:
            last["logged"] = report.bad
            logger.error(
                "server store %s is corrupt: %s; restore it from a backup",
                path,
                report.describe(),
            )
        return CheckResult(
            "integrity",
            "scrub",
            HealthStatus.FAIL,
            observed_value=len(report.bad),
            observed_unit="corrupt blobs",
            output=report.describe() + "; restore the store from a backup",
        )

    if path is not None and not isinstance(path, Path):
        path = Path(path)
    server.health_checker.add_check(
        "integrity",
        "scrub",
        check,
        timeout=timeout,
        observed_unit="corrupt blobs",
    )
    return check
