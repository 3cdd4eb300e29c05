"""Memory: server RSS per idle connection, and a replica holding a large document.

- Per idle connection: the server process's RSS before and after ``N`` idle
  WebSocket connections are opened (ours: ``/ws`` without a hello; peer: one
  room of pycrdt-websocket's server), divided by ``N``.
- A replica holding automerge-paper: RSS delta of a fresh process (libraries
  already imported) after opening an ``EndToEndSyncManager`` whose SQLite store
  holds the document (as a compacted replica keeps it: a snapshot of its full
  history, one change per keystroke) and reading the text, against the delta
  after applying the pycrdt document's encoded state (one transaction per
  keystroke) to a new ``pycrdt.Doc`` and reading the text.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

import psutil

from bench.common import (
    Row,
    check,
    compare,
    idle_connections,
    median,
    ours_server,
    peer_server,
    run_processes,
    say,
    trace_path,
)

BENCH = "memory"
COLLECTION = "docs"


# Idle connections ---------------------------------------------------------------------


def per_connection(kind: str, count: int) -> float:
    """Server RSS bytes per idle connection."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        server_cm = ours_server(Path(tmp)) if kind == "ours" else peer_server()
        with server_cm as server:
            url = server.url if kind == "ours" else f"{server.base_url()}/idle"
            # One connection first, so one-time costs (the peer's room, the first
            # handshake's imports) are not spread over the others.
            with idle_connections(url, 1):
                time.sleep(0.5)
                before = server.rss()
                with idle_connections(url, count):
                    time.sleep(1.0)
                    after = server.rss()
    return (after - before) / count


# A replica holding a document ---------------------------------------------------------


def build_ours(patches: list[tuple[int, int, str]], path: Path) -> None:
    """A replica store holding the document as a snapshot of its full history."""
    from leptos_sync import fields
    from leptos_sync.clock import HybridLogicalClock
    from leptos_sync.crdt import CollectionDoc
    from leptos_sync.storage import Storage

    store = Storage.sqlite(path)
    state = store.load()
    coll = CollectionDoc(COLLECTION, HybridLogicalClock(replica_id=state.replica_id))
    coll.insert("doc", {"body": fields.text("")})
    record = coll.doc.get_map("records").get("doc").container  # type: ignore[union-attr]
    text = record.get("body").container
    # Straight on the Loro text, one commit per keystroke as the replica makes
    # them (the record API would add metadata writes per keystroke).
    for pos, deleted, inserted in patches:
        if deleted:
            text.delete(pos, deleted)
        if inserted:
            text.insert(pos, inserted)
        coll.doc.commit()
    store.save_snapshot(COLLECTION, coll.export_snapshot(), 0)
    store.close()


def build_peer(patches: list[tuple[int, int, str]], path: Path) -> None:
    import pycrdt

    doc: pycrdt.Doc = pycrdt.Doc()
    text = doc.get("body", type=pycrdt.Text)
    for pos, deleted, inserted in patches:
        with doc.transaction():
            if deleted:
                del text[pos : pos + deleted]
            if inserted:
                text.insert(pos, inserted)
    path.write_bytes(doc.get_update())


def open_ours(path: str, length: int) -> int:
    """Resident bytes a fresh process gains by opening the replica store."""
    from leptos_sync import EndToEndSyncManager, Storage, Transport

    gc.collect()
    before = psutil.Process().memory_info().rss
    manager = EndToEndSyncManager(
        Storage.sqlite(path), Transport.websocket("ws://127.0.0.1:9/ws")
    )
    body = str(manager.collection(COLLECTION).text("doc", "body"))
    if len(body) != length:
        raise RuntimeError(f"the store holds {len(body)} characters, not {length}")
    gc.collect()
    after = psutil.Process().memory_info().rss
    manager.replica.close()
    return int(after - before)


def open_peer(path: str, length: int) -> int:
    """Resident bytes a fresh process gains by loading the Yjs update."""
    import pycrdt

    update = Path(path).read_bytes()
    gc.collect()
    before = psutil.Process().memory_info().rss
    doc: pycrdt.Doc = pycrdt.Doc()
    doc.apply_update(update)
    body = str(doc.get("body", type=pycrdt.Text))
    if len(body) != length:
        raise RuntimeError(f"the update holds {len(body)} characters, not {length}")
    gc.collect()
    after = psutil.Process().memory_info().rss
    return int(after - before)


def holding(limit: int | None, runs: int) -> tuple[list[int], list[int], int]:
    from leptos_sync.traces import load_trace

    trace = load_trace(trace_path("automerge-paper"))
    patches = [p for txn in trace.txns for p in txn.patches][:limit]
    length = (
        len(trace.end_content)
        if limit is None
        else len("".join(_apply(trace.start_content, patches)))
    )
    with tempfile.TemporaryDirectory(prefix="bench-memory-doc-") as tmp:
        ours_path, peer_path = Path(tmp) / "replica.sqlite3", Path(tmp) / "doc.yjs"
        started = time.perf_counter()
        build_ours(patches, ours_path)
        build_peer(patches, peer_path)
        say(
            f"  built both documents in {time.perf_counter() - started:.1f} s "
            f"(store {ours_path.stat().st_size / 2**20:.1f} MiB, Yjs update "
            f"{peer_path.stat().st_size / 2**20:.2f} MiB)"
        )
        ours, peer = [], []
        for _ in range(runs):
            results = run_processes(
                [
                    (open_ours, (str(ours_path), length)),
                    (open_peer, (str(peer_path), length)),
                ],
                120,
            )
            check(results)
            ours.append(results[0])
            peer.append(results[1])
    return ours, peer, len(patches)


def _apply(start: str, patches: list[tuple[int, int, str]]) -> list[str]:
    doc = list(start)
    for pos, deleted, inserted in patches:
        doc[pos : pos + deleted] = inserted
    return doc


def run(smoke: bool = False) -> list[Row]:
    count, limit, runs = (20, 5_000, 1) if smoke else (500, None, 2)
    say(
        f"memory: {count} idle connections; a replica holding automerge-paper"
        f"{'' if limit is None else f' (first {limit:,} patches)'}"
    )
    ours_conn = per_connection("ours", count)
    peer_conn = per_connection("pycrdt", count)
    say(
        f"  per idle connection: ours {ours_conn / 1024:.1f} KiB, pycrdt "
        f"{peer_conn / 1024:.1f} KiB"
    )
    ours_doc, peer_doc, patches = holding(limit, runs)
    say(
        f"  holding the document ({patches:,} patches): ours "
        f"{[round(x / 2**20, 1) for x in ours_doc]} MiB, pycrdt "
        f"{[round(x / 2**20, 1) for x in peer_doc]} MiB"
    )
    return [
        compare(
            BENCH,
            "server RSS per idle connection",
            ours_conn / 1024,
            peer_conn / 1024,
            "KiB",
            "pycrdt",
            higher_is_better=False,
        ),
        compare(
            BENCH,
            "replica holding automerge-paper",
            median(ours_doc) / 2**20,
            median(peer_doc) / 2**20,
            "MiB",
            "pycrdt",
            higher_is_better=False,
        ),
    ]


if __name__ == "__main__":
    import sys

    run("--smoke" in sys.argv)
