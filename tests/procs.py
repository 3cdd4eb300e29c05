"""Run a sync server, a writer and a reader as OS processes, for crash tests.

Imported by the tests (and by ``scripts/crash_soak.py``) for :class:`Child`,
:class:`ServerProcess` and the store readers; run as a script for the child roles:

``python tests/procs.py writer --store S --url U --log L --stop F``
    Writes a stream of operations to collection ``stream`` until the stop file
    appears. Write ``i`` is one transaction that inserts record ``k{i:06d}``
    (a unique register ``i``), increments the counter ``tally.n`` by one and
    sets the register ``tally.last`` to ``i``. On start it resumes after the
    highest record in its store. It logs JSON lines: ``start`` (resume point and
    outbox depth it found), ``acked`` (``n``: writes ``0..n-1`` are acknowledged
    by the server, seen as an empty outbox right after ``wait_synced``) and
    ``final`` (with a digest of its records).

``python tests/procs.py reader --store S --url U --stop F --result R``
    Follows the collection until the stop file appears; the file holds
    ``{"expected": n}``. It then waits for ``n`` records and writes its state to
    the result file.

``python tests/procs.py server --db D [--port P] [--integrity-check]``
    ``leptos-sync serve``, optionally with the store scrub wired into /health.

Every child is started with ``sys.executable`` and killed in ``finally`` blocks
by the tests; every loop here is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
COLLECTION = "stream"
READY = "leptos-sync server listening on "


def key(i: int) -> str:
    return f"k{i:06d}"


# Helpers for the tests -------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 20 ms until it holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Child:
    """An OS process with stdout and stderr in files (no pipes to fill up)."""

    def __init__(self, args: list[str], workdir: Path, name: str) -> None:
        self.name = name
        self.args = args
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=err, stdin=subprocess.DEVNULL
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process (no cleanup of any kind runs) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


class ServerProcess(Child):
    """A sync server process; :attr:`url` once it listens.

    Args:
        db: the server's store.
        port: 0 for a free port; the same port again to restart in place.
        integrity_check: serve through the ``server`` role of this script with
            the store scrub on /health, instead of ``leptos-sync serve``.
    """

    def __init__(
        self,
        db: Path,
        workdir: Path,
        *,
        port: int = 0,
        integrity_check: bool = False,
        name: str = "server",
        timeout: float = 20.0,
    ) -> None:
        if integrity_check:
            args = [
                sys.executable,
                str(HERE),
                "server",
                "--db",
                str(db),
                "--port",
                str(port),
                "--integrity-check",
            ]
        else:
            args = [
                sys.executable,
                "-m",
                "leptos_sync",
                "serve",
                "--db",
                str(db),
                "--port",
                str(port),
            ]
        self._seen = (
            self.stdout_path_for(workdir, name).stat().st_size
            if (self.stdout_path_for(workdir, name).exists())
            else 0
        )
        super().__init__(args, workdir, name)
        self.url = ""
        try:
            wait_for(self._ready, timeout, f"{name} to listen")
        except AssertionError:
            self.kill()
            raise AssertionError(
                f"{name} did not start: {self.stderr()[-2000:]}"
            ) from None
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    @staticmethod
    def stdout_path_for(workdir: Path, name: str) -> Path:
        return workdir / f"{name}.stdout"

    def _ready(self) -> bool:
        if not self.alive:
            raise AssertionError(f"{self.name} exited: {self.stderr()[-2000:]}")
        text = self.stdout_path.read_text(errors="replace")[self._seen :]
        for line in text.splitlines():
            if line.startswith(READY):
                self.url = line[len(READY) :].strip()
                return True
        return False

    @property
    def http_url(self) -> str:
        return "http" + self.url[2:].rsplit("/ws", 1)[0]


def start_writer(
    store: Path,
    url: str,
    log: Path,
    stop: Path,
    workdir: Path,
    *,
    name: str = "writer",
    chunk: int = 4,
    pause: float = 0.02,
    max_seconds: float = 300.0,
) -> Child:
    return Child(
        [
            sys.executable,
            str(HERE),
            "writer",
            "--store",
            str(store),
            "--url",
            url,
            "--log",
            str(log),
            "--stop",
            str(stop),
            "--chunk",
            str(chunk),
            "--pause",
            str(pause),
            "--max-seconds",
            str(max_seconds),
        ],
        workdir,
        name,
    )


def start_reader(
    store: Path,
    url: str,
    stop: Path,
    result: Path,
    workdir: Path,
    *,
    name: str = "reader",
    max_seconds: float = 300.0,
) -> Child:
    return Child(
        [
            sys.executable,
            str(HERE),
            "reader",
            "--store",
            str(store),
            "--url",
            url,
            "--stop",
            str(stop),
            "--result",
            str(result),
            "--max-seconds",
            str(max_seconds),
        ],
        workdir,
        name,
    )


def read_events(log: Path) -> list[dict[str, Any]]:
    """The JSON lines of a child's log (a line cut short by a kill is skipped)."""
    if not log.exists():
        return []
    events = []
    for line in log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def integrity(path: Path) -> str:
    """SQLite's ``PRAGMA integrity_check`` of a store file (recovers its WAL)."""
    db = sqlite3.connect(str(path))
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def digest(records: dict[str, dict[str, Any]]) -> str:
    """A digest of a collection's records, equal on replicas with equal state."""
    text = json.dumps(records, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def summarise(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the crash tests compare: record keys, counter, last register, digest."""
    keys = sorted(k for k in records if k.startswith("k"))
    tally = records.get("tally", {})
    return {
        "records": len(keys),
        "contiguous": keys == [key(i) for i in range(len(keys))],
        "counter": tally.get("n", 0),
        "last": tally.get("last"),
        "digest": digest(records),
    }


def hub_records(db: Path, collection: str = COLLECTION) -> tuple[dict[str, Any], int]:
    """The collection as the server's log holds it, and the log's length.

    Reads the ``ops`` table directly (read-only), checks every checksum, and
    checks that no change is stored twice: an operation holds one change or a
    merged run of them, and no two operations hold the same change (see
    :func:`assert_changes_stored_once`).
    """
    from leptos_sync.clock import HybridLogicalClock
    from leptos_sync.crdt import CollectionDoc
    from leptos_sync.protocol import crc32c

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq, data, crc FROM ops WHERE collection=? ORDER BY seq",
            (collection,),
        ).fetchall()
    finally:
        conn.close()
    for seq, data, crc in rows:
        assert crc32c(data) == crc, f"server op {seq} fails its checksum"
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1)), "gap in server seqs"
    assert_changes_stored_once([bytes(r[1]) for r in rows])
    doc = CollectionDoc(collection, HybridLogicalClock(replica_id=1))
    if rows:
        doc.import_updates([bytes(r[1]) for r in rows])
    return doc.to_dict(), len(rows)


def assert_changes_stored_once(updates: list[bytes]) -> None:
    """No change (Loro operation id) is held by two of ``updates``.

    Each update covers, per peer, a range of operation counters; the ranges of
    one peer must not overlap, or a change was stored twice (a resend taken for
    a new operation, or a merge covering a change already pushed).
    """
    import loro

    ranges: dict[int, list[tuple[int, int, int]]] = {}
    for index, update in enumerate(updates):
        meta = loro.LoroDoc.decode_import_blob_meta(update, False)
        spans = meta.partial_start_vv.diff(meta.partial_end_vv).forward.inner()
        for peer, (start, end) in spans.items():
            ranges.setdefault(peer, []).append((start, end, index))
    for peer, spans in ranges.items():
        spans.sort()
        for (_, end, first), (start, _, second) in itertools.pairwise(spans):
            assert start >= end, (
                f"operations {first} and {second} both hold changes of peer "
                f"{peer:x} from counter {start}"
            )


def store_records(path: Path, collection: str = COLLECTION) -> dict[str, Any]:
    """The collection as a (closed) replica store holds it, outbox included."""
    from leptos_sync.clock import HybridLogicalClock
    from leptos_sync.crdt import CollectionDoc
    from leptos_sync.storage import SQLiteStorage

    storage = SQLiteStorage(path)
    try:
        state = storage.load()
    finally:
        storage.close()
    assert not state.quarantined, f"{path}: quarantined {state.quarantined}"
    stored = state.collections.get(collection)
    blobs: list[bytes] = []
    if stored is not None:
        blobs = ([stored.snapshot] if stored.snapshot else []) + stored.log
    blobs += [op.data for op in state.outbox if op.collection == collection]
    doc = CollectionDoc(collection, HybridLogicalClock(replica_id=state.replica_id))
    if blobs:
        doc.import_updates(blobs)
    return doc.to_dict()


def kill_all(children: Iterator[Child | None] | list[Child | None]) -> None:
    """SIGKILL every child still running (for ``finally`` blocks)."""
    for child in children:
        if child is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                child.kill()


# The crash scenario ----------------------------------------------------------


@dataclass
class CrashFigures:
    """What one crash run did and verified."""

    seed: int
    cycles: int
    server_kills: int = 0
    writer_kills: int = 0
    reader_kills: int = 0
    writes: int = 0
    acked: int = 0
    server_ops: int = 0
    outbox_at_restart: list[int] = field(default_factory=list)
    integrity_checks: int = 0
    seconds: float = 0.0

    @property
    def kills(self) -> int:
        return self.server_kills + self.writer_kills + self.reader_kills

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        restarts = out.pop("outbox_at_restart")
        out["kills"] = self.kills
        out["outbox_survived"] = sum(restarts)
        out["largest_outbox_at_restart"] = max(restarts, default=0)
        return out


def crash_run(
    workdir: Path,
    *,
    cycles: int,
    seed: int,
    reader_every: int = 3,
    say: Callable[[str], None] = lambda _: None,
) -> CrashFigures:
    """Kill the server, then the writer, ``cycles`` times; verify nothing is lost.

    Each cycle lets the writer stream for a random while, SIGKILLs the server,
    lets the writer go on offline (its outbox grows), SIGKILLs the writer, and
    every ``reader_every``-th cycle the reader too, then restarts them in a
    random order on the same store files and port. The random points come from
    ``seed``. Afterwards the writer finishes, and the run checks that every
    write the writer saw acknowledged is on the server and the reader, that
    everything the writer ever wrote arrived exactly once (one server op per
    write, counter equal to the number of records, records contiguous), that
    every replica holds the same state, and that every store passes SQLite's
    integrity check, after every kill and at the end.

    Raises:
        AssertionError: an invariant does not hold; the message says which.
    """
    rng = random.Random(seed)
    figures = CrashFigures(seed=seed, cycles=cycles)
    started = time.monotonic()
    hub, wstore, rstore = (
        workdir / f"{n}.sqlite3" for n in ("hub", "writer", "reader")
    )
    wlog = workdir / "writer.log"
    wstop, rstop, rresult = (
        workdir / "stop-writer",
        workdir / "stop-reader",
        (workdir / "reader.json"),
    )

    def check(path: Path) -> None:
        verdict = integrity(path)
        figures.integrity_checks += 1
        assert verdict == "ok", f"{path.name} fails integrity_check: {verdict}"

    def writer_started(count: int) -> Callable[[], bool]:
        def started_now() -> bool:
            if writer is not None and not writer.alive:
                raise AssertionError(f"writer exited: {writer.stderr()[-2000:]}")
            return sum(e["event"] == "start" for e in read_events(wlog)) >= count

        return started_now

    server: ServerProcess | None = ServerProcess(hub, workdir)
    assert server is not None
    port = server.port
    url = server.url
    writer: Child | None = None
    reader: Child | None = None
    try:
        writer = start_writer(wstore, url, wlog, wstop, workdir)
        reader = start_reader(rstore, url, rstop, rresult, workdir)
        starts = 1
        wait_for(writer_started(starts), 30, "the writer to start")
        for cycle in range(cycles):
            time.sleep(rng.uniform(0.3, 1.2))
            server.kill()
            figures.server_kills += 1
            check(hub)
            say(f"cycle {cycle}: killed the server")

            time.sleep(rng.uniform(0.1, 0.6))
            writer.kill()
            figures.writer_kills += 1
            check(wstore)
            kill_reader = reader_every > 0 and cycle % reader_every == reader_every - 1
            if kill_reader:
                reader.kill()
                figures.reader_kills += 1
                check(rstore)
            say(
                f"cycle {cycle}: killed the writer"
                + (" and the reader" if kill_reader else "")
            )

            # Restart in a random order: a writer that comes back first retries.
            restart_writer_first = rng.random() < 0.5
            if restart_writer_first:
                writer = start_writer(wstore, url, wlog, wstop, workdir)
            server = ServerProcess(hub, workdir, port=port)
            if not restart_writer_first:
                writer = start_writer(wstore, url, wlog, wstop, workdir)
            if kill_reader:
                reader = start_reader(rstore, url, rstop, rresult, workdir)
            starts += 1
            wait_for(writer_started(starts), 30, "the writer to restart")

        # Let the last writer finish: it stops writing and waits until synced.
        time.sleep(rng.uniform(0.3, 1.0))
        wstop.write_text("")
        code = writer.wait(timeout=90)
        events = read_events(wlog)
        assert code == 0, (
            f"writer exited {code}: {events[-3:]} {writer.stderr()[-2000:]}"
        )
        final = events[-1]
        assert final["event"] == "final" and final["synced"], final
        figures.writes = final["n"]
        _write_atomically(rstop, json.dumps({"expected": figures.writes}))
        code = reader.wait(timeout=90)
        assert code == 0, f"reader exited {code}: {reader.stderr()[-2000:]}"
        seen = json.loads(rresult.read_text())
        server.terminate()
    finally:
        kill_all([writer, reader, server])

    _verify_crash_run(figures, events, final, seen, hub, wstore, rstore, check)
    figures.seconds = round(time.monotonic() - started, 1)
    return figures


def _verify_crash_run(
    figures: CrashFigures,
    events: list[dict[str, Any]],
    final: dict[str, Any],
    seen: dict[str, Any],
    hub: Path,
    wstore: Path,
    rstore: Path,
    check: Callable[[Path], None],
) -> None:
    # Every write that returned before a kill was in the store after it: each
    # incarnation resumes at or after everything the previous one saw acked.
    acked = 0
    for event in events:
        if event["event"] == "start":
            assert event["resume"] >= acked, (
                f"resumed at {event['resume']} < acked {acked}"
            )
            figures.outbox_at_restart.append(event["outbox"])
        elif event["event"] == "acked":
            acked = max(acked, event["n"])
        elif event["event"] == "error":
            raise AssertionError(f"writer found its store inconsistent: {event}")
    figures.acked = acked
    figures.outbox_at_restart = figures.outbox_at_restart[
        1:
    ]  # the first start is fresh
    n = figures.writes
    assert acked == n, f"acknowledged {acked} of {n} writes at the end"

    # The server: every acknowledged write, each exactly once.
    records, ops = hub_records(hub)
    figures.server_ops = ops
    missing = [key(i) for i in range(acked) if key(i) not in records]
    assert not missing, f"acknowledged writes missing on the server: {missing[:10]}"
    on_server = summarise(records)
    # One operation per write, or fewer where writes waiting together were
    # merged; hub_records checked that no write is stored twice.
    assert 0 < ops <= n, f"the server stored {ops} operations for {n} writes"
    expected = {"records": n, "contiguous": True, "counter": n, "last": n - 1}
    assert {k: on_server[k] for k in expected} == expected, on_server

    # The reader and the writer hold exactly what the server holds.
    assert {k: seen[k] for k in expected} == expected, seen
    assert seen["digest"] == on_server["digest"] == final["digest"], "replicas differ"
    for store in (hub, wstore, rstore):
        check(store)
    for store in (wstore, rstore):
        assert digest(store_records(store)) == on_server["digest"], (
            f"{store.name} differs"
        )


# Child roles -----------------------------------------------------------------


def _sync_config() -> Any:
    from leptos_sync import ReliabilityConfig, RetryPolicy, SyncConfig

    return SyncConfig(
        reliability=ReliabilityConfig(
            retry_policy=RetryPolicy.Fixed(timedelta(milliseconds=100)),
            max_retries=100_000,
        ),
        heartbeat_interval=timedelta(milliseconds=500),
        heartbeat_timeout=timedelta(seconds=2),
        poll_interval=timedelta(milliseconds=100),
        connect_timeout=timedelta(seconds=2),
        ack_timeout=timedelta(seconds=5),
        status_interval=None,
    )


class _Log:
    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the role

    def __call__(self, event: str, **fields: Any) -> None:
        fields.update(event=event, pid=os.getpid(), t=time.time())
        self._file.write(json.dumps(fields) + "\n")
        self._file.flush()


async def _writer(args: argparse.Namespace) -> int:
    from leptos_sync import EndToEndSyncManager, Storage, Transport, fields

    log = _Log(Path(args.log))
    stop = Path(args.stop)
    deadline = time.monotonic() + args.max_seconds
    manager = EndToEndSyncManager(
        Storage.sqlite(args.store), Transport.websocket(args.url), _sync_config()
    )
    coll = manager.collection(COLLECTION)

    # Resume after the last write the store holds: every write that returned is
    # there (outbox or log), and none that did not return.
    found = summarise(coll.to_dict())
    written = found["records"]
    if not found["contiguous"] or found["counter"] != written:
        log("error", reason="store state is inconsistent", found=found)
        return 3
    log("start", resume=written, outbox=manager.replica.outbox_depth())
    await manager.start()

    acked = 0

    async def watch_acks() -> None:
        nonlocal acked
        while True:
            try:
                await manager.wait_synced(timeout=0.5)
            except TimeoutError:
                continue
            # No await between here and the log line: an empty outbox now
            # means the server has stored every write made so far.
            if manager.replica.outbox_depth() == 0 and written > acked:
                acked = written
                log("acked", n=acked)
            await asyncio.sleep(0.02)

    watcher = asyncio.ensure_future(watch_acks())
    try:
        while _signal(stop) is None and time.monotonic() < deadline:
            for _ in range(args.chunk):
                with coll.transaction():
                    if "tally" not in coll:
                        coll.insert("tally", {"last": -1, "n": fields.counter()})
                    coll.insert(key(written), {"i": written})
                    coll.counter("tally", "n").increment(1)
                    coll.update("tally", {"last": written})
                written += 1
            await asyncio.sleep(args.pause)
        try:
            await manager.wait_synced(timeout=args.final_timeout)
        except TimeoutError:
            log("final", n=written, outbox=manager.replica.outbox_depth(), synced=False)
            return 4
        if manager.replica.outbox_depth() == 0:
            acked = written
            log("acked", n=acked)
        summary = summarise(coll.to_dict())
        log(
            "final",
            n=written,
            outbox=manager.replica.outbox_depth(),
            synced=True,
            **summary,
        )
        return 0
    finally:
        watcher.cancel()
        await manager.stop()


def _signal(stop: Path) -> dict[str, Any] | None:
    """The stop file's content (``{}`` if empty), or ``None`` while it is absent."""
    try:
        text = stop.read_text()
    except FileNotFoundError:
        return None
    return json.loads(text) if text.strip() else {}


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def _reader(args: argparse.Namespace) -> int:
    from leptos_sync import EndToEndSyncManager, Storage, Transport

    stop = Path(args.stop)
    deadline = time.monotonic() + args.max_seconds
    manager = EndToEndSyncManager(
        Storage.sqlite(args.store), Transport.websocket(args.url), _sync_config()
    )
    coll = manager.collection(COLLECTION)
    await manager.start()
    try:
        # The stop file is polled: it comes from another process.
        signal_ = _signal(stop)
        while signal_ is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            signal_ = _signal(stop)
        expected = int((signal_ or {}).get("expected", -1))
        summary = summarise(coll.to_dict())
        wait_until = time.monotonic() + args.final_timeout
        while time.monotonic() < wait_until:
            summary = summarise(coll.to_dict())
            if summary["records"] >= expected and summary["counter"] >= expected:
                break
            await asyncio.sleep(0.05)
        with_timeout_ok = True
        try:
            await manager.wait_synced(timeout=max(1.0, wait_until - time.monotonic()))
        except TimeoutError:
            with_timeout_ok = False
        summary = summarise(coll.to_dict())
        summary["synced"] = with_timeout_ok
        summary["expected"] = expected
        _write_atomically(Path(args.result), json.dumps(summary))
        return 0 if summary["records"] == expected else 5
    finally:
        await manager.stop()


def _server(args: argparse.Namespace) -> int:
    import logging

    from leptos_sync.backup import add_integrity_check
    from leptos_sync.hubstore import HubStore
    from leptos_sync.server.app import SyncServer
    from leptos_sync.server.run import run_server

    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    server = SyncServer(HubStore.sqlite(args.db))
    if args.integrity_check:
        add_integrity_check(server, every=timedelta(seconds=0))

    def ready(url: str) -> None:
        print(f"{READY}{url}", flush=True)

    run_server(server, "127.0.0.1", args.port, on_ready=ready)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    roles = parser.add_subparsers(dest="role", required=True)
    for role in ("writer", "reader"):
        sub = roles.add_parser(role)
        sub.add_argument("--store", required=True)
        sub.add_argument("--url", required=True)
        sub.add_argument("--stop", required=True)
        sub.add_argument("--max-seconds", type=float, default=300.0)
        sub.add_argument("--final-timeout", type=float, default=60.0)
        if role == "writer":
            sub.add_argument("--log", required=True)
            sub.add_argument("--chunk", type=int, default=4)
            sub.add_argument("--pause", type=float, default=0.02)
        else:
            sub.add_argument("--result", required=True)
    sub = roles.add_parser("server")
    sub.add_argument("--db", required=True)
    sub.add_argument("--port", type=int, default=0)
    sub.add_argument("--integrity-check", action="store_true")
    args = parser.parse_args(argv)
    if args.role == "writer":
        return asyncio.run(_writer(args))
    if args.role == "reader":
        return asyncio.run(_reader(args))
    return _server(args)


if __name__ == "__main__":
    sys.exit(main())
