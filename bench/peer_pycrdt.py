"""The peer: pycrdt (Yjs/Yrs) documents synced through pycrdt's WebSocket server.

The server is pycrdt-websocket's ``WebsocketServer`` behind its ``ASGIServer``,
served by uvicorn with the same WebSocket settings as ``leptos-sync serve``
(websockets-sansio, no compression, the same keepalive). Rooms are kept when their
last client leaves (``auto_clean_rooms=False``), so that a late reader finds the
document, as it would find it in our server's store; pycrdt keeps them in memory
only (no ystore), so the peer does less work per update than ours, which commits
every operation to SQLite before acknowledging it.

Clients are ``pycrdt.Doc`` instances synced by ``pycrdt.Provider`` over a
:class:`WsChannel`, a small ``pycrdt.Channel`` on the ``websockets`` client that
counts payload bytes both ways (what ``ReplayResult.bytes_sent/received`` counts
for ours).

Run ``python -m bench.peer_pycrdt serve`` to start a server; it prints its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common import HOST, missing_ancestors, until

MAX_FRAME = 16 * 1024 * 1024


# Server -------------------------------------------------------------------------------


async def _serve(host: str, port: int) -> None:
    import uvicorn
    from pycrdt.websocket import ASGIServer, WebsocketServer

    websocket_server = WebsocketServer(auto_clean_rooms=False)
    app = ASGIServer(websocket_server)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
        ws_max_size=MAX_FRAME,
        ws_ping_interval=10.0,
        ws_ping_timeout=20.0,
        ws_per_message_deflate=False,
        access_log=False,
    )
    server = uvicorn.Server(config)
    async with websocket_server:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1]
            print(f"pycrdt server listening on ws://{host}:{bound}", flush=True)
        await task


# Client channel -----------------------------------------------------------------------


UPDATE_PREFIX = b"\x00\x02"  # YMessageType.SYNC, YSyncMessageType.SYNC_UPDATE
WINDOW = 8000


class WsChannel:
    """A ``pycrdt.Channel`` on a ``websockets`` connection, counting payload bytes.

    It also counts this client's updates that the room has echoed back. A pycrdt
    room applies each incoming update at once but
    broadcasts through a buffer of 65,536 updates whose overflow is dropped
    silently (``yutils.put_updates`` swallows the error), and its broadcast task
    takes one update per event-loop turn while a connection's reader handles a
    whole TCP read: a writer that outruns it loses updates and its readers never
    converge. Writers therefore keep at most :data:`WINDOW` of their updates
    not yet echoed (see :func:`drain`). The room echoes every update to its
    sender byte for byte, which is how they are matched (:attr:`echoed`).
    """

    def __init__(self, ws: ClientConnection, path: str) -> None:
        self._ws = ws
        self._path = path
        self.sent = 0
        self.received = 0
        self.echoed = 0
        self._outstanding: dict[bytes, int] = {}

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WsChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        self.sent += len(message)
        if message[:2] == UPDATE_PREFIX:
            self._outstanding[message] = self._outstanding.get(message, 0) + 1
        await self._ws.send(message)

    async def recv(self) -> bytes:
        message = await self._ws.recv()
        data = message if isinstance(message, bytes) else message.encode()
        self.received += len(data)
        count = self._outstanding.get(data)
        if count:
            self.echoed += 1
            if count == 1:
                del self._outstanding[data]
            else:
                self._outstanding[data] = count - 1
        return data


async def drain(channel: WsChannel, made: int, room_for: int, timeout: float) -> None:
    """Wait until ``room_for`` more updates fit in the window (see WsChannel).

    ``made`` is how many updates this client has made so far.
    """
    limit = max(0, WINDOW - room_for)
    if made - channel.echoed > limit:
        await until(
            lambda: made - channel.echoed <= limit, timeout, "echoes from the room"
        )


@contextlib.asynccontextmanager
async def synced(base_url: str, room: str, doc: pycrdt.Doc) -> AsyncIterator[WsChannel]:
    """``doc`` connected to ``room`` through a provider, after the initial sync."""
    async with connect(
        f"{base_url}/{room}",
        max_size=MAX_FRAME,
        ping_interval=None,
        compression=None,
        open_timeout=30,
    ) as ws:
        channel = WsChannel(ws, room)
        provider = pycrdt.Provider(doc, channel)  # type: ignore[arg-type]
        async with provider:
            # Set when the server's SYNC_STEP2 arrives: the doc holds the room.
            await asyncio.wait_for(provider.synced.wait(), 60)
            yield channel


async def leave_together(barrier: Any, timeout: float) -> None:
    """Wait (without blocking the loop) until every client of the room is done.

    A pycrdt room broadcasts each update in a task per client; a client that
    disconnects while such sends are pending makes them fail, which stops the
    room's task group and with it all further broadcasts. So no client leaves
    before all have converged.
    """
    await asyncio.to_thread(barrier.wait, timeout)


# Sequential trace: writer and readers -------------------------------------------------


async def trace_role(
    role: str,
    base_url: str,
    room: str,
    trace_file: str,
    timeout: float,
    ready: Any,
    start: Any,
    barrier: Any,
) -> dict[str, Any]:
    """One replica of a sequential trace replay (``writer`` or ``reader``).

    Like ours, it loads the trace and connects first, sets ``ready``, and starts
    when the parent sets ``start``.
    """
    from leptos_sync.traces import load_trace

    trace = load_trace(trace_file)
    doc: pycrdt.Doc = pycrdt.Doc()
    text = doc.get("body", type=pycrdt.Text)
    async with synced(base_url, room, doc) as channel:
        ready.set()
        await asyncio.to_thread(start.wait, timeout)
        started = time.perf_counter()
        if role == "writer":
            patches = [p for txn in trace.txns for p in txn.patches]
            chunk = 2000
            for start in range(0, len(patches), chunk):
                await drain(channel, start, chunk, timeout)
                for pos, deleted, inserted in patches[start : start + chunk]:
                    # One transaction per keystroke: one update on the wire.
                    with doc.transaction():
                        if deleted:
                            del text[pos : pos + deleted]
                        if inserted:
                            text.insert(pos, inserted)
                await asyncio.sleep(0)
        end = trace.end_content
        await until(
            lambda: len(text) == len(end) and str(text) == end,
            timeout,
            f"{role}: no convergence",
            lambda: f"{len(text)} characters, expected {len(end)}",
        )
        seconds = time.perf_counter() - started
        await leave_together(barrier, timeout)
    return {
        "role": role,
        "seconds": seconds,
        "sent": channel.sent,
        "received": channel.received,
    }


# Concurrent trace: one agent per trace agent ------------------------------------------


async def agent_role(
    agent: int,
    base_url: str,
    room: str,
    trace_file: str,
    timeout: float,
    start: Any,
    connected: Any,
    barrier: Any,
) -> dict[str, Any]:
    """Replay one agent's transactions, each on exactly its ancestors' state.

    As in ``leptos_sync.replay``: the agent edits a working ``Doc`` of its own that
    holds exactly the transactions its next one names as ancestors, imports the
    ones it lacks as they arrive from the server, then hands its own update to the
    live ``Doc`` that the provider syncs. To know which transaction an update from
    the server carries, every transaction also sets its index as a key of a
    ``log`` map (one small extra item per transaction; the text is what is
    compared).
    The agents connect before any of them writes, so that every transaction
    reaches the others as an update of its own.
    """
    from leptos_sync.traces import load_trace

    trace = load_trace(trace_file)
    parents = [txn.parents for txn in trace.txns]
    live: pycrdt.Doc = pycrdt.Doc()
    live_text = live.get("body", type=pycrdt.Text)
    live_log = live.get("log", type=pycrdt.Map)
    arrived: dict[int, bytes] = {}
    fresh: list[int] = []
    wake = asyncio.Event()

    def on_log(event: Any) -> None:
        fresh.extend(int(key) for key in event.keys)

    def on_update(event: Any) -> None:
        update = event.update
        for txn_index in fresh:
            arrived[txn_index] = update
        fresh.clear()
        wake.set()

    subscriptions = [live_log.observe(on_log), live.observe(on_update)]

    work: pycrdt.Doc = pycrdt.Doc()
    body = work.get("body", type=pycrdt.Text)
    log = work.get("log", type=pycrdt.Map)
    own: list[bytes] = []
    subscriptions.append(work.observe(lambda event: own.append(event.update)))

    mine = [i for i, txn in enumerate(trace.txns) if txn.agent == agent]
    have: set[int] = set()
    done = 0
    async with synced(base_url, room, live) as channel:
        connected.set()
        while not start.is_set():
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        for made, index in enumerate(mine):
            await drain(channel, made, 1, timeout)
            missing = missing_ancestors(parents, index, have)
            for txn_index in missing:
                while txn_index not in arrived:
                    wake.clear()
                    try:
                        await asyncio.wait_for(wake.wait(), timeout)
                    except TimeoutError:
                        raise RuntimeError(
                            f"transaction {txn_index} never arrived"
                        ) from None
            if missing:
                work.apply_update(pycrdt.merge_updates(*(arrived[m] for m in missing)))
                have.update(missing)
            with work.transaction():
                for pos, deleted, inserted in trace.txns[index].patches:
                    if deleted:
                        del body[pos : pos + deleted]
                    if inserted:
                        body.insert(pos, inserted)
                log[str(index)] = True
            live.apply_update(own.pop())
            have.add(index)
            done += len(trace.txns[index].patches)
            # Yield so that the provider sends it now: the other agent may be
            # waiting for exactly this transaction.
            await asyncio.sleep(0)
        # Converged once the live document holds every transaction. Yjs orders
        # some concurrent insertions differently from the engine that recorded
        # the trace, so the text is compared across agents (by the parent), and
        # against ``endContent`` only for the record.
        total = len(trace.txns)
        await until(
            lambda: len(live_log) == total,
            timeout,
            f"agent {agent}: no convergence",
            lambda: f"{len(live_log)} of {total} transactions",
        )
        seconds = time.perf_counter() - started
        final = str(live_text)
        await leave_together(barrier, timeout)
    return {
        "role": "agent",
        "seconds": seconds,
        "sent": channel.sent,
        "received": channel.received,
        "patches": done,
        "subscriptions": len(subscriptions),
        "digest": hashlib.sha256(final.encode()).hexdigest(),
        "end_content": final == trace.end_content,
    }


# Records: Map of Map ------------------------------------------------------------------


async def records_replica(
    k: int,
    base_url: str,
    room: str,
    records: int,
    fields: int,
    plan: list[tuple[int, int, int]],
    burst: int,
    ready: Any,
    go: Any,
    barrier: Any,
    timeout: float,
) -> dict[str, Any]:
    """One replica of ``bench.bench_records`` (same plan and phases as ours)."""
    from bench.bench_records import CHUNK, REPLICAS, digest, record_id

    doc: pycrdt.Doc = pycrdt.Doc()
    root = doc.get("records", type=pycrdt.Map)
    done = doc.get("done", type=pycrdt.Map)
    names = [f"f{f}" for f in range(fields)]
    async with synced(base_url, room, doc) as channel:
        # Setup, not timed: replica 0 creates the records, all wait for them.
        if k == 0:
            with doc.transaction():
                for r in range(records):
                    root[record_id(r)] = pycrdt.Map(dict.fromkeys(names, 0))
        await until(lambda: len(root) == records, timeout, "setup records")
        ready.set()
        await asyncio.to_thread(go.wait, timeout)
        cache = {record_id(r): root[record_id(r)] for r in range(records)}

        # The conflicting burst: no yield to the loop, so nothing is received.
        for r, f, value in plan[:burst]:
            with doc.transaction():
                cache[record_id(r)][names[f]] = value
        await asyncio.sleep(0)
        for start in range(burst, len(plan), CHUNK):
            await drain(channel, start, CHUNK, timeout)
            for r, f, value in plan[start : start + CHUNK]:
                with doc.transaction():
                    cache[record_id(r)][names[f]] = value
            await asyncio.sleep(0)
        with doc.transaction():
            done[f"r{k}"] = True

        def all_done() -> bool:
            return all(done.get(f"r{j}") for j in range(REPLICAS))

        await until(all_done, timeout, f"replica {k}: markers")
        finished = time.time()
        state = {
            rid: {name: int(v) for name, v in values.items()}
            for rid, values in root.to_py().items()
        }
        await leave_together(barrier, timeout)
    return {
        "finished": finished,
        "digest": digest(state),
        "records": len(state),
        "wire": channel.sent + channel.received,
    }


# Fan-out: one writer, many readers ----------------------------------------------------


async def fanout_writer(
    base_url: str,
    room: str,
    messages: int,
    ready: Any,
    go: Any,
    stop: Any,
    timeout: float,
) -> dict[str, Any]:
    """Write ``messages`` wall-time stamps into the room's ``msgs`` map."""
    from bench.bench_fanout import INTERVAL, message_id

    doc: pycrdt.Doc = pycrdt.Doc()
    msgs = doc.get("msgs", type=pycrdt.Map)
    async with synced(base_url, room, doc):
        ready.set()
        await asyncio.to_thread(go.wait, timeout)
        for i in range(messages):
            with doc.transaction():
                msgs[message_id(i)] = time.time()
            await asyncio.sleep(INTERVAL)
        # Stay until every reader is done (see leave_together).
        await asyncio.to_thread(stop.wait, timeout)
    return {"written": messages}


async def fanout_readers(
    base_url: str,
    room: str,
    count: int,
    messages: int,
    warmup: int,
    ready: Any,
    done: Any,
    timeout: float,
    part: int,
) -> dict[str, Any]:
    """``count`` readers in this process, noting when each message arrives."""
    latencies: list[float] = []
    seen = [0] * count

    def observer(k: int) -> Any:
        def on_change(event: Any) -> None:
            now = time.time()
            for key, change in event.keys.items():
                if not key.startswith("m") or change.get("action") != "add":
                    continue
                seen[k] += 1
                if int(key[1:]) >= warmup:
                    latencies.append(now - float(change["newValue"]))

        return on_change

    keep: list[Any] = []  # the docs, maps and subscriptions must stay alive
    async with contextlib.AsyncExitStack() as stack:
        for k in range(count):
            doc: pycrdt.Doc = pycrdt.Doc()
            msgs = doc.get("msgs", type=pycrdt.Map)
            keep += [doc, msgs, msgs.observe(observer(k))]
            await stack.enter_async_context(synced(base_url, room, doc))
        ready.set()
        await until(lambda: min(seen) >= messages, timeout, "readers: messages")
        done.set()
        # Leave only when the writer is gone or the parent ends us: a
        # reader leaving mid-broadcast would stop the room.
        await asyncio.sleep(0.5)
    return {"latencies": latencies, "seen": sum(seen)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pycrdt peer for the benchmarks")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the benchmark peer serves on loopback only")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
