"""The ASGI sync server over real loopback WebSockets and a real uvicorn."""

from __future__ import annotations

import asyncio
import gc
import os
import random
from pathlib import Path

import httpx
import msgpack
import psutil
import pytest
import websockets
from starlette.applications import Starlette
from starlette.routing import Mount

from leptos_sync import EndToEndSyncManager, HubStore, Storage, SyncConfig, Transport
from leptos_sync.protocol import Error, Hello, Pull, decode, encode
from leptos_sync.server import SyncServer, serve_in_background
from leptos_sync.server.run import uvicorn_config

FAST = SyncConfig(
    heartbeat_interval=0.2,
    heartbeat_timeout=1.0,
    poll_interval=0.05,
    status_interval=0.2,
)


async def _converge(*colls: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        states = [c.to_dict() for c in colls]  # type: ignore[attr-defined]
        if all(s == states[0] for s in states):
            return
        assert loop.time() < deadline, f"replicas did not converge: {states}"
        await asyncio.sleep(0.02)


async def test_two_replicas_edit_offline_then_converge(tmp_path: Path) -> None:
    """Two replicas edit the same record while disconnected, then agree."""
    server = SyncServer(HubStore.sqlite(tmp_path / "hub.sqlite3"))
    async with serve_in_background(server) as running:
        url = running.url
        a = EndToEndSyncManager(
            Storage.sqlite(tmp_path / "a.sqlite3"), Transport.websocket(url), FAST
        )
        b = EndToEndSyncManager(
            Storage.sqlite(tmp_path / "b.sqlite3"), Transport.websocket(url), FAST
        )
        na, nb = a.collection("notes"), b.collection("notes")
        # Offline edits (not started yet): the changes wait in each outbox.
        na.insert("n1", {"title": "from a", "a": 1})
        nb.insert("n2", {"title": "from b"})
        assert a.status().outbox_depth == 1 and b.status().outbox_depth == 1
        async with a, b:
            await a.wait_synced(10)
            await b.wait_synced(10)
            na.update("n1", {"a": 2})
            nb_ready = asyncio.get_running_loop().time() + 10
            while "n1" not in nb:
                assert asyncio.get_running_loop().time() < nb_ready
                await asyncio.sleep(0.02)
            nb.update("n1", {"b": 3})
            await _converge(na, nb)
        assert na.get("n1") == {"title": "from a", "a": 2, "b": 3}
        assert set(na.ids()) == {"n1", "n2"}


async def test_bad_frames_close_only_that_connection(tmp_path: Path) -> None:
    """Random bytes, truncated msgpack and absurd lengths each get an error and a
    closed connection, while a good client keeps syncing throughout."""
    server = SyncServer(HubStore.sqlite(tmp_path / "hub.sqlite3"))
    async with serve_in_background(server) as running:
        good_a = EndToEndSyncManager(
            Storage.memory(), Transport.websocket(running.url), FAST
        )
        good_b = EndToEndSyncManager(
            Storage.memory(), Transport.websocket(running.url), FAST
        )
        async with good_a, good_b:
            ca, cb = good_a.collection("c"), good_b.collection("c")
            rng = random.Random(7)
            valid = encode(Hello(5, True, None, "fuzz"))
            attacks = [
                bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
                for _ in range(10)
            ]
            attacks += [valid[: rng.randrange(1, len(valid))] for _ in range(5)]
            # msgpack array header claiming 2**32-1 elements, bin32 claiming 4 GiB.
            attacks.append(b"\x01\x00" + b"\xdd\xff\xff\xff\xff")
            attacks.append(
                b"\x01\x00" + msgpack.packb([3, "c"])[:-1] + b"\xc6\xff\xff\xff\xff"
            )
            for i, attack in enumerate(attacks):
                async with websockets.connect(running.url, compression=None) as ws:
                    await ws.send(attack)
                    reply = await asyncio.wait_for(ws.recv(), 5)
                    assert isinstance(reply, bytes)
                    assert isinstance(decode(reply), Error)
                    with pytest.raises(websockets.ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 5)
                ca.upsert(f"r{i}", {"i": i})
            await good_a.wait_synced(10)
            await _converge(ca, cb)
            assert len(cb) == len(attacks)


async def test_text_and_oversized_frames_are_refused(tmp_path: Path) -> None:
    """A text message is refused with an error frame; a frame over the size limit
    closes the connection; the server keeps serving."""
    server = SyncServer(HubStore.memory())
    async with serve_in_background(server) as running:
        async with websockets.connect(running.url, compression=None) as ws:
            await ws.send("hello")
            reply = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(decode(reply), Error)
        limit = server.limits.protocol.max_frame_bytes
        async with websockets.connect(
            running.url, compression=None, max_size=None
        ) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await ws.send(b"\x01\x00" + b"\x00" * (limit + 10))
                await asyncio.wait_for(ws.recv(), 5)
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{running.http_url}/readyz")).status_code == 200


async def test_abrupt_disconnects_leave_no_connections(tmp_path: Path) -> None:
    """After 1,000 clients vanish without a close frame, the connection count is
    back to 0, memory is flat, and a new client still syncs."""
    server = SyncServer(HubStore.memory())
    process = psutil.Process(os.getpid())
    async with serve_in_background(server) as running:
        hello = encode(Hello(9, True, None, "t"))
        pull = encode(Pull("c", 0))

        async def vanish() -> None:
            ws = await websockets.connect(running.url, compression=None)
            await ws.send(hello)
            await ws.send(pull)
            await ws.recv()
            # Drop the TCP connection without a WebSocket close frame.
            ws.transport.abort()

        async def wave() -> None:
            await asyncio.gather(*(vanish() for _ in range(100)))
            await _wait_for(lambda: server.connection_count == 0)

        # Three waves first, so that the allocator has reached its working size
        # for 100 concurrent connections; the next seven must not grow it.
        for _ in range(3):
            await wave()

        def connection_state() -> set[int]:
            names = ("_Client", "_Conn", "WebSocket")
            return {id(o) for o in gc.get_objects() if type(o).__name__ in names}

        gc.collect()
        rss_before, state_before = process.memory_info().rss, connection_state()
        for _ in range(7):
            await wave()
        gc.collect()
        rss_after = process.memory_info().rss
        assert server.connection_count == 0
        assert server.hub.connection_count == 0
        # Nothing of a vanished connection is kept: no client or hub state,
        # no WebSocket object (a count of all objects would also see whatever
        # else this process does meanwhile).
        assert connection_state() <= state_before
        # A connection's state is about 30 KiB (see bench/bench_memory.py), so
        # keeping each of 700 would add some 20 MiB.
        assert rss_after - rss_before < 4 * 1024 * 1024

        a = EndToEndSyncManager(
            Storage.memory(), Transport.websocket(running.url), FAST
        )
        b = EndToEndSyncManager(
            Storage.memory(), Transport.websocket(running.url), FAST
        )
        async with a, b:
            a.collection("c").insert("x", {"v": 1})
            await a.wait_synced(10)
            await _converge(a.collection("c"), b.collection("c"))
            assert b.collection("c").get("x") == {"v": 1}


async def _wait_for(condition: object, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_health_ready_metrics_endpoints(tmp_path: Path) -> None:
    """/health answers in the IETF format with uptime, /livez and /readyz pass, and
    /metrics exposes the server's counters in Prometheus text."""
    server = SyncServer(HubStore.sqlite(tmp_path / "hub.sqlite3"))
    async with serve_in_background(server) as running, httpx.AsyncClient() as http:
        health = await http.get(f"{running.http_url}/health")
        assert health.status_code == 200
        assert health.headers["content-type"].startswith("application/health+json")
        body = health.json()
        assert body["status"] == "pass"
        assert "store:responseTime" in body["checks"]
        assert "uptime:uptime" in body["checks"]
        for path in ("/livez", "/readyz", "/ready"):
            assert (await http.get(running.http_url + path)).status_code == 200
        metrics = await http.get(f"{running.http_url}/metrics")
        assert "leptos_sync_server_connected_clients" in metrics.text


async def test_mounted_inside_a_starlette_app(tmp_path: Path) -> None:
    """The sync server mounted under /sync in an application's own Starlette app
    serves its WebSocket and health routes there."""
    import uvicorn

    sync = SyncServer(HubStore.sqlite(tmp_path / "hub.sqlite3"))
    app = Starlette(routes=[Mount("/sync", app=sync.app)], lifespan=sync.lifespan)
    config = uvicorn_config(sync, "127.0.0.1", 0)
    config.app = app
    config.loaded = False
    userver = uvicorn.Server(config)
    task = asyncio.create_task(userver.serve())
    try:
        await _wait_for(lambda: userver.started, 10)
        port = userver.servers[0].sockets[0].getsockname()[1]
        url = f"ws://127.0.0.1:{port}/sync/ws"
        a = EndToEndSyncManager(Storage.memory(), Transport.websocket(url), FAST)
        b = EndToEndSyncManager(Storage.memory(), Transport.websocket(url), FAST)
        async with a, b:
            a.collection("c").insert("x", {"v": 1})
            await a.wait_synced(10)
            await _converge(a.collection("c"), b.collection("c"))
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{port}/sync/health")
            assert health.json()["status"] == "pass"
    finally:
        userver.should_exit = True
        await task


async def test_shutdown_closes_clients_with_going_away(tmp_path: Path) -> None:
    """On shutdown every client is closed with code 1001 and the store is closed."""
    server = SyncServer(HubStore.sqlite(tmp_path / "hub.sqlite3"))
    async with serve_in_background(server) as running:
        ws = await websockets.connect(running.url, compression=None)
        await ws.send(encode(Hello(3, True, None, "t")))
        await ws.recv()
        running.uvicorn.should_exit = True
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
