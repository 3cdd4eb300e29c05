"""The WebSocket client transport against real loopback servers."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from websockets.asyncio.server import serve

from leptos_sync import (
    ConfigError,
    EndToEndSyncManager,
    HubStore,
    Storage,
    SyncConfig,
    Transport,
    TransportError,
)
from leptos_sync.errors import ConnectionClosedError
from leptos_sync.server import SyncServer, serve_in_background


async def test_dead_link_is_detected_within_the_heartbeat_timeout() -> None:
    """A server that accepts the WebSocket and then never answers is declared dead
    within heartbeat_timeout, and the manager reconnects by itself."""
    connections = 0

    async def silent(ws: websockets.ServerConnection) -> None:
        nonlocal connections
        connections += 1
        async for _ in ws:
            pass  # swallow everything, answer nothing

    async with serve(silent, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        config = SyncConfig(
            heartbeat_interval=0.1, heartbeat_timeout=0.4, poll_interval=0.05
        )
        manager = EndToEndSyncManager(
            Storage.memory(), Transport.websocket(f"ws://127.0.0.1:{port}/ws"), config
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with manager:
            while connections < 2:
                assert loop.time() - started < 3.0, "dead link not detected"
                await asyncio.sleep(0.02)
        assert "no frame from the server" in (manager.status().last_error or "")


async def test_connect_refused_is_a_transport_error() -> None:
    """Connecting to a closed port raises TransportError naming the endpoint."""
    transport = Transport.websocket("ws://127.0.0.1:9/ws")
    with pytest.raises(TransportError, match=r"127\.0\.0\.1:9"):
        await transport.connect()


def test_invalid_url_is_refused() -> None:
    """A URL that is not ws:// or wss:// is refused at once, as a bad setting."""
    with pytest.raises(ConfigError, match=r"^url: "):
        Transport.websocket("http://127.0.0.1/ws")


def test_endpoint_hides_credentials_and_query() -> None:
    """The endpoint shown in logs and health drops userinfo and the query string."""
    transport = Transport.websocket("ws://user:secret@127.0.0.1:8765/ws?token=abc")
    assert "secret" not in transport.endpoint and "abc" not in transport.endpoint


async def test_closed_connection_raises_connection_closed() -> None:
    """recv and send on a connection the server closed raise ConnectionClosedError."""
    async with serve(lambda ws: ws.close(), "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        conn = await Transport.websocket(f"ws://127.0.0.1:{port}/ws").connect()
        with pytest.raises(ConnectionClosedError):
            await conn.recv()
        with pytest.raises(ConnectionClosedError):
            await conn.send(b"x")


async def test_large_batches_stay_under_the_frame_limit() -> None:
    """Ten thousand local changes, pushed one operation each, go in batches that
    respect the server's frame limit and all arrive."""
    server = SyncServer(HubStore.memory())
    async with serve_in_background(server) as running:
        config = SyncConfig(
            max_batch_ops=300, status_interval=None, merge_waiting=False
        )
        a = EndToEndSyncManager(
            Storage.memory(), Transport.websocket(running.url), config
        )
        b = EndToEndSyncManager(
            Storage.memory(), Transport.websocket(running.url), config
        )
        async with a, b:
            coll = a.collection("c")
            # Not in a batch: a batch would travel as one operation.
            for i in range(10_000):
                coll.insert(f"r{i}", {"payload": "x" * 200, "i": i})
            await a.wait_synced(60)
            other = b.collection("c")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while len(other) < 10_000:
                assert loop.time() < deadline
                await asyncio.sleep(0.05)
        stats = server.hub.statistics()
        assert stats.ops_stored == 10_000
        assert stats.pushes >= 10_000 // 300
