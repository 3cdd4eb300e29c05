"""Backup and restore of SQLite stores: consistent, verified, atomic."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from leptos_sync import (
    EndToEndSyncManager,
    HubStore,
    IntegrityError,
    ReliabilityConfig,
    RetryPolicy,
    Storage,
    StorageError,
    SyncConfig,
    Transport,
    fields,
)
from leptos_sync.backup import (
    MANIFEST,
    STORE_FILE,
    backup_store,
    load_manifest,
    restore_store,
    scrub_store,
    verify_backup,
)
from leptos_sync.cli import main as cli
from leptos_sync.crdt import CollectionDoc
from leptos_sync.server.app import SyncServer
from leptos_sync.server.run import RunningServer, serve_in_background

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs

COLL = "notes"


def _config() -> SyncConfig:
    return SyncConfig(
        reliability=ReliabilityConfig(
            retry_policy=RetryPolicy.Fixed(timedelta(milliseconds=50)),
            max_retries=10_000,
        ),
        poll_interval=timedelta(milliseconds=50),
        status_interval=None,
    )


def manager(path: Path, url: str) -> EndToEndSyncManager:
    return EndToEndSyncManager(
        Storage.sqlite(path), Transport.websocket(url), _config()
    )


def write(coll: CollectionDoc, name: str) -> None:
    """One write: a new record and one more on the shared counter."""
    with coll.transaction():
        if "tally" not in coll:
            coll.insert("tally", {})
        coll.insert(name, {"by": name[0]})
        coll.counter("tally", "n").increment(1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(directory: Path, pattern: str) -> list[Path]:
    return list(directory.glob(pattern))


def size(path: Path) -> int:
    return path.stat().st_size


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


async def test_an_online_backup_is_one_consistent_state_with_a_manifest(
    hub: RunningServer, tmp_path: Path
) -> None:
    """A backup taken while the replica writes is sound and fully described."""
    a = manager(tmp_path / "a.sqlite3", hub.url)
    coll = a.collection(COLL)
    await a.start()
    try:
        for i in range(200):
            write(coll, f"a{i:03d}")
        before = time.time_ns()
        # Writes continue while the backup runs (in a thread).
        copying = asyncio.ensure_future(
            asyncio.to_thread(backup_store, tmp_path / "a.sqlite3", tmp_path / "bk")
        )
        i = 200
        while not copying.done() and i < 2_000:
            write(coll, f"a{i:03d}")
            i += 1
            await asyncio.sleep(0)
        manifest = await copying
        replica_id = a.replica.replica_id
    finally:
        await a.stop()

    assert manifest.kind == "replica"
    assert manifest.store_id == f"{replica_id:016x}"
    assert before <= manifest.created_ns <= time.time_ns()
    (entry,) = manifest.files
    copy = tmp_path / "bk" / STORE_FILE
    assert (entry.size, entry.sha256) == (size(copy), sha256(copy))
    on_disk = json.loads((tmp_path / "bk" / MANIFEST).read_text())
    assert on_disk["replica_id"] == manifest.store_id and on_disk["kind"] == "replica"
    assert on_disk["files"][0]["crc32c"] == entry.crc32c and len(entry.crc32c) == 8
    assert load_manifest(tmp_path / "bk") == manifest
    assert verify_backup(tmp_path / "bk") == manifest
    assert not leftovers(tmp_path, ".bk.building-*")

    # One committed state: the records and the counter agree in the copy.
    state = procs.store_records(copy, COLL)
    records = [k for k in state if k != "tally"]
    assert len(records) >= 200 and state["tally"]["n"] == len(records)
    assert scrub_store(copy).ok and procs.integrity(copy) == "ok"


async def test_a_server_store_is_backed_up_while_serving(
    hub: RunningServer, tmp_path: Path
) -> None:
    """A server store's backup names its server id and holds its whole log."""
    a = manager(tmp_path / "a.sqlite3", hub.url)
    await a.start()
    try:
        for i in range(50):
            write(a.collection(COLL), f"a{i:02d}")
        await a.wait_synced(10)
        manifest = backup_store(tmp_path / "hub.sqlite3", tmp_path / "bk")
    finally:
        await a.stop()
    assert manifest.kind == "server"
    assert manifest.store_id == hub.server.store.server_id
    assert manifest.tables["ops"] == hub.server.store.head(COLL) > 0
    records, ops = procs.hub_records(tmp_path / "bk" / STORE_FILE, COLL)
    assert ops == manifest.tables["ops"] and records["tally"]["n"] == 50


def test_a_corrupt_backup_is_refused_and_the_store_left_intact(tmp_path: Path) -> None:
    """Restore verifies first: any damage to the backup changes nothing."""
    store = tmp_path / "a.sqlite3"
    storage = Storage.sqlite(store)
    storage.append_local(COLL, 1, 1, b"first")
    storage.close()
    backup_store(store, tmp_path / "bk")
    storage = Storage.sqlite(store)
    storage.append_local(COLL, 2, 2, b"second, after the backup")
    storage.close()
    original = sha256(store)

    copy = tmp_path / "bk" / STORE_FILE
    good = copy.read_bytes()
    damaged = bytearray(good)
    damaged[len(damaged) // 2] ^= 0x01
    cases = {
        "flipped byte": bytes(damaged),
        "truncated": good[: len(good) // 2],
    }
    for what, content in cases.items():
        copy.write_bytes(content)
        with pytest.raises(IntegrityError, match="is corrupt"):
            restore_store(tmp_path / "bk", store)
        assert sha256(store) == original, what
        assert not leftovers(tmp_path, ".a.sqlite3.restore-*"), what
        assert not leftovers(tmp_path, "a.sqlite3.pre-restore-*"), what

    copy.write_bytes(good)
    manifest_path = tmp_path / "bk" / MANIFEST
    manifest_path.write_text(
        manifest_path.read_text().replace('"replica"', '"server"', 1)
    )
    with pytest.raises(IntegrityError):
        restore_store(tmp_path / "bk", store)
    manifest_path.unlink()
    with pytest.raises(StorageError, match="no backup"):
        restore_store(tmp_path / "bk", store)
    assert sha256(store) == original


def test_restore_replaces_atomically_and_keeps_the_previous_store(
    tmp_path: Path,
) -> None:
    """The restored store is the backup (plus a new id); the old one is kept."""
    store = tmp_path / "a.sqlite3"
    storage = Storage.sqlite(store)
    old_id = storage.replica_id()
    storage.append_local(COLL, 1, 1, b"first")
    storage.close()
    manifest = backup_store(store, tmp_path / "bk")
    storage = Storage.sqlite(store)
    storage.append_local(COLL, 2, 2, b"second")
    # Left open on purpose: its WAL holds the second write, uncheckpointed.
    db = sqlite3.connect(str(store))
    assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 2
    db.close()
    storage.close()

    result = restore_store(tmp_path / "bk", store)
    assert result.manifest == manifest and result.old_id == f"{old_id:016x}"
    restored = Storage.sqlite(store)
    try:
        state = restored.load()
        assert [op.data for op in state.outbox] == [b"first"]
        assert f"{state.replica_id:016x}" == result.new_id != result.old_id
    finally:
        restored.close()
    assert result.previous is not None
    kept = sqlite3.connect(str(result.previous))
    try:
        assert kept.execute("SELECT count(*) FROM outbox").fetchone()[0] == 2
    finally:
        kept.close()
    assert procs.integrity(store) == "ok"


async def test_a_replica_restored_from_an_older_backup_resyncs_to_the_present(
    hub: RunningServer, tmp_path: Path
) -> None:
    """After restoring an old backup a replica catches up, and loses nothing new."""
    store = tmp_path / "a.sqlite3"
    a = manager(store, hub.url)
    b = manager(tmp_path / "b.sqlite3", hub.url)
    await a.start()
    await b.start()
    try:
        # One tally record with its counter, created once: two concurrent
        # inserts of one id (or first increments of a missing counter field)
        # are resolved as a register, one side's counter winning whole.
        a.collection(COLL).insert("tally", {"n": fields.counter()})
        await a.wait_synced(10)
        await until(lambda: "tally" in b.collection(COLL), 10, "B to see the tally")
        for i in range(20):
            write(a.collection(COLL), f"a{i:02d}")
            write(b.collection(COLL), f"b{i:02d}")
        await a.wait_synced(10)
        backup_store(store, tmp_path / "bk")  # online, at 20 + some of B's
        for i in range(20, 40):
            write(a.collection(COLL), f"a{i:02d}")
            write(b.collection(COLL), f"b{i:02d}")
        await a.wait_synced(10)
        await b.wait_synced(10)
    finally:
        await a.stop()

    result = restore_store(tmp_path / "bk", store)
    assert result.new_id != result.old_id
    a = manager(store, hub.url)
    fresh = manager(tmp_path / "c.sqlite3", hub.url)
    try:
        coll = a.collection(COLL)
        assert "a39" not in coll  # the older state
        for i in range(40, 50):  # written before it reconnects
            write(coll, f"a{i:02d}")
        await a.start()
        await fresh.start()
        for i in range(50, 60):
            write(coll, f"a{i:02d}")
        names = {f"{w}{i:02d}" for i in range(40) for w in "ab"}
        names |= {f"a{i:02d}" for i in range(40, 60)}
        for m in (a, b, fresh):
            await until(
                lambda m=m: set(m.collection(COLL).ids()) == names | {"tally"},
                20,
                "every replica to hold every write",
            )
            await m.wait_synced(10)
        state = a.collection(COLL).to_dict()
        assert state["tally"]["n"] == len(names)  # each write counted once
        assert b.collection(COLL).to_dict() == state
        assert fresh.collection(COLL).to_dict() == state
    finally:
        for m in (a, b, fresh):
            await m.stop()


def test_the_cli_backs_up_scrubs_and_restores(tmp_path: Path) -> None:
    """``leptos-sync backup``, ``scrub`` and ``restore`` work and fail cleanly."""
    store = tmp_path / "a.sqlite3"
    storage = Storage.sqlite(store)
    storage.append_local(COLL, 1, 1, b"first")
    storage.close()
    runner = CliRunner()

    done = runner.invoke(cli, ["backup", str(store), str(tmp_path / "bk"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["kind"] == "replica"
    again = runner.invoke(cli, ["backup", str(store), str(tmp_path / "bk")])
    assert again.exit_code == 1 and "exists" in again.output

    scrubbed = runner.invoke(cli, ["scrub", str(store)])
    assert scrubbed.exit_code == 0 and "ok" in scrubbed.output
    db = sqlite3.connect(str(store))
    db.execute("UPDATE outbox SET data=? WHERE counter=1", (b"firsT",))
    db.commit()
    db.close()
    scrubbed = runner.invoke(cli, ["scrub", str(store)])
    assert (
        scrubbed.exit_code == 1
        and "1 corrupt blobs (outbox notes#1)" in scrubbed.output
    )

    copy = tmp_path / "bk" / STORE_FILE
    good = copy.read_bytes()
    copy.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    before = sha256(store)
    refused = runner.invoke(cli, ["restore", str(tmp_path / "bk"), str(store)])
    assert refused.exit_code == 1 and "is corrupt" in refused.output
    assert "Traceback" not in refused.output and sha256(store) == before

    copy.write_bytes(good)
    restored = runner.invoke(cli, ["restore", str(tmp_path / "bk"), str(store)])
    assert restored.exit_code == 0, restored.output
    assert "previous  kept as" in restored.output
    assert runner.invoke(cli, ["scrub", str(store)]).exit_code == 0


def _small_store(path: Path) -> Path:
    storage = Storage.sqlite(path)
    storage.append_local(COLL, 1, 1, b"first")
    storage.close()
    return path


def test_a_backup_into_an_empty_directory_is_allowed_and_documented(
    tmp_path: Path,
) -> None:
    """DEST may be an existing empty directory, as ``backup --help`` says (the
    help used to promise a new directory while the command took an empty one)."""
    store = _small_store(tmp_path / "a.sqlite3")
    (tmp_path / "bk").mkdir()
    runner = CliRunner()

    done = runner.invoke(cli, ["backup", str(store), str(tmp_path / "bk")])

    assert done.exit_code == 0, done.output
    assert verify_backup(tmp_path / "bk").kind == "replica"
    help_text = " ".join(runner.invoke(cli, ["backup", "--help"]).output.split())
    assert "DEST must be a new path or an empty directory" in help_text


def test_a_backup_never_writes_into_a_directory_that_holds_anything(
    tmp_path: Path,
) -> None:
    """A non-empty DEST is refused in one line and left exactly as it was."""
    store = _small_store(tmp_path / "a.sqlite3")
    dest = tmp_path / "bk"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")

    refused = CliRunner().invoke(cli, ["backup", str(store), str(dest)])

    assert refused.exit_code == 1
    assert refused.stderr.splitlines() == [
        f"leptos-sync: error: backup destination {dest} exists and is not an "
        "empty directory; choose a new path"
    ]
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    assert (dest / "notes.txt").read_text() == "mine"
    assert not leftovers(tmp_path, ".bk.building-*")


@pytest.mark.parametrize(
    "content",
    [bytes(range(256)) * 4, b'{"format": "something else"}', b"[1, 2]"],
    ids=["random bytes", "other JSON", "a JSON list"],
)
def test_restoring_a_file_that_is_no_backup_says_so_plainly(
    tmp_path: Path, content: bytes
) -> None:
    """``restore random.bin STORE`` says that it is not a backup made by
    ``leptos-sync backup`` (it used to quote a UTF-8 decoding error)."""
    store = _small_store(tmp_path / "a.sqlite3")
    before = sha256(store)
    bogus = tmp_path / "random.bin"
    bogus.write_bytes(content)

    with pytest.raises(StorageError, match="is not a backup made by"):
        load_manifest(bogus)
    refused = CliRunner().invoke(cli, ["restore", str(bogus), str(store)])

    assert refused.exit_code == 1
    assert refused.stderr.splitlines() == [
        f"leptos-sync: error: {bogus} is not a backup made by `leptos-sync backup`: "
        "give the backup directory (the one holding manifest.json and "
        "store.sqlite3)"
    ]
    assert sha256(store) == before


def test_a_damaged_manifest_of_a_backup_is_an_integrity_error(
    tmp_path: Path,
) -> None:
    """A backup directory whose manifest.json is not JSON is damaged, not foreign."""
    store = _small_store(tmp_path / "a.sqlite3")
    backup_store(store, tmp_path / "bk")
    (tmp_path / "bk" / MANIFEST).write_bytes(b"\xff\xfe garbage")
    with pytest.raises(IntegrityError, match=r"manifest of .* is damaged"):
        restore_store(tmp_path / "bk", store)


def test_regression_restore_refuses_a_replica_store_a_process_holds_open(
    tmp_path: Path,
) -> None:
    """Restoring over a replica store that a running replica holds is refused
    and changes nothing (the running replica would go on writing to the file
    it had open, and its changes would be lost)."""
    store = tmp_path / "a.sqlite3"
    storage = Storage.sqlite(store)
    storage.append_local(COLL, 1, 1, b"first")
    backup_store(store, tmp_path / "bk")
    storage.append_local(COLL, 2, 2, b"second")
    with pytest.raises(StorageError, match="already open in this process"):
        restore_store(tmp_path / "bk", store)
    assert [op.data for op in storage.load().outbox] == [b"first", b"second"]
    storage.close()
    restore_store(tmp_path / "bk", store)


def test_regression_restore_refuses_a_backup_of_the_other_kind(tmp_path: Path) -> None:
    """A server backup restored over a replica store (or the reverse) is
    refused and the store left as it was (it used to be replaced)."""
    replica, server = tmp_path / "r.sqlite3", tmp_path / "s.sqlite3"
    storage = Storage.sqlite(replica)
    storage.append_local(COLL, 1, 1, b"mine")
    storage.close()
    HubStore.sqlite(server).close()
    backup_store(server, tmp_path / "server-bk")
    before = sha256(replica)
    with pytest.raises(StorageError, match="is a replica store and the backup"):
        restore_store(tmp_path / "server-bk", replica)
    assert sha256(replica) == before
