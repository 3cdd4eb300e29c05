"""Tests of ``leptos-sync inspect``: a read-only look at replica and server stores."""

from __future__ import annotations

import gc
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
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


#: Run in a child before ``leptos-sync``: root gives up its power to write and
#: search anywhere (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, dropped from the
#: bounding set with prctl(PR_CAPBSET_DROP)), so that a read-only directory is
#: read-only for it too. Exit status 77: the capabilities could not be dropped.
_LAUNCH_WITHOUT_DAC_OVERRIDE = """
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:
            sys.exit(77)
os.execv(sys.executable, [sys.executable, "-m", "leptos_sync", *sys.argv[1:]])
"""


@pytest.fixture
def store_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for one store, writable again after the test."""
    directory = tmp_path / "stores"
    directory.mkdir()
    try:
        yield directory
    finally:
        directory.chmod(0o755)


def _closed_replica_store(path: Path) -> int:
    """A replica store that nothing holds open: no -shm file beside it."""
    replica_id = _replica_store(path)
    gc.collect()  # connections left in reference cycles close their files
    assert not path.with_name(path.name + "-shm").exists()
    return replica_id


def _inspect_read_only(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``leptos-sync inspect`` in a child, with the store's directory read-only.

    The child cannot write there even as root, so the failure it meets is the
    real one, not a simulation.
    """
    store.parent.chmod(0o555)
    command = [sys.executable, "-c", _LAUNCH_WITHOUT_DAC_OVERRIDE, "inspect"]
    result = subprocess.run(
        [*command, str(store), *args], capture_output=True, text=True, timeout=60
    )
    if result.returncode == 77:
        pytest.skip("running as root without CAP_SETPCAP: cannot give up DAC override")
    return result


def test_a_store_in_a_read_only_directory_is_read_as_an_immutable_file(
    store_dir: Path,
) -> None:
    """inspect reads a WAL store whose -shm file cannot be created (a read-only
    directory) as an immutable file, and says so (it used to fail with "unable
    to open database file" although inspect only reads)."""
    path = store_dir / "replica.sqlite3"
    replica_id = _closed_replica_store(path)
    before = sorted(p.name for p in store_dir.iterdir())

    shown = _inspect_read_only(path)
    as_json = _inspect_read_only(path, "--json")

    assert shown.returncode == 0, shown.stderr
    assert (
        "read as       an immutable file: the directory is read-only, so SQLite "
        "could not open the store in place"
    ) in shown.stdout.splitlines()
    assert f"replica store, id {replica_id:016x}" in shown.stdout
    assert "notes: 2 records, cursor 0, outbox 3, log 0" in shown.stdout
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["immutable"] is True
    assert sorted(p.name for p in store_dir.iterdir()) == before
    assert inspect_store(path)["immutable"] is False  # where it can, in place


def test_a_read_only_store_with_changes_in_its_wal_is_refused_clearly(
    store_dir: Path,
) -> None:
    """An immutable read would skip the changes in the -wal file, so such a
    store is refused in one line that says what to do."""
    path = store_dir / "replica.sqlite3"
    _closed_replica_store(path)
    # A writer that died with changes in its WAL, and no -shm file left.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA wal_autocheckpoint=0')\n"
            "db.execute(\"INSERT INTO meta VALUES ('left', 'in the wal')\")\n"
            "os._exit(0)\n",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    path.with_name(path.name + "-shm").unlink()

    refused = _inspect_read_only(path)

    assert refused.returncode == 1
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"leptos-sync: error: cannot read {path} in place")
    assert line.endswith(
        "and reading it as an immutable file would miss the changes in "
        "replica.sqlite3-wal; copy the store with its -wal file to a writable "
        "directory and read the copy"
    )
