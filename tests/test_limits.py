"""Limits: rate limits on the injected clock, oversized and flooding clients,
too many connections; each refused with its own code and counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import websockets
from loro import ExportMode, LoroDoc, VersionVector

from leptos_sync import EndToEndSyncManager, Hub, HubStore, SyncConfig, Transport
from leptos_sync.clock import ManualClock
from leptos_sync.protocol import (
    Error,
    Hello,
    Limits,
    Message,
    Op,
    Ping,
    Push,
    decode,
    encode,
)
from leptos_sync.ratelimit import RateLimit, TokenBucket
from leptos_sync.server import ServerLimits, SyncServer, serve_in_background
from leptos_sync.storage import MemoryStorage

FAST = SyncConfig(
    heartbeat_interval=0.2,
    heartbeat_timeout=2.0,
    poll_interval=0.05,
    status_interval=0.5,
)


def _update(peer: int, size: int = 8) -> bytes:
    doc = LoroDoc()
    doc.peer_id = peer
    doc.get_map("m").insert("k", "x" * size)
    doc.commit()
    return bytes(doc.export(ExportMode.Updates(VersionVector())))


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    """A bucket of 2 at 4/s: two takes pass, the third waits 250 ms exactly."""
    bucket = TokenBucket(4.0, 2.0, now_ns=0)
    assert bucket.take(1, 0) and bucket.take(1, 0)
    assert not bucket.take(1, 0)
    assert not bucket.take(1, 249_000_000)
    assert bucket.take(1, 250_000_000)
    assert not bucket.take(3, 10_000_000_000)  # never more than the burst
    assert bucket.tokens == 2.0


def test_rate_limit_counts_frames_and_ops_per_connection() -> None:
    """Frames and ops have their own buckets, and each connection its own."""
    clock = ManualClock()
    limit = RateLimit(frames_per_second=3, ops_per_second=10, clock=clock)
    assert [limit.admit(1) for _ in range(4)] == [None, None, None, "frames"]
    assert limit.admit(2, ops=10) is None
    assert limit.admit(2, ops=1) == "ops"
    clock.advance(1)
    assert limit.admit(1) is None and limit.admit(2, ops=10) is None


def test_hub_closes_a_flooding_connection_with_rate_limited() -> None:
    """The frame past the rate gets `rate-limited`, a close, and is counted."""
    clock = ManualClock()
    reasons: list[str] = []
    hub = Hub(
        HubStore.memory(),
        rate_limit=RateLimit(frames_per_second=5, clock=clock),
        on_reject=reasons.append,
    )
    hub.connect(1)
    outs = [hub.handle(1, encode(m)) for m in [Hello(1), *[Ping(i) for i in range(5)]]]
    last = outs[-1][0]
    error = decode(last.frames[0])
    assert isinstance(error, Error) and error.code == "rate-limited" and last.close
    assert all(not o[0].close for o in outs[:-1])
    assert reasons == ["rate_limited"]
    assert hub.statistics().rejected == {"rate_limited": 1}


async def _raw(url: str, *messages: Message | bytes, wait: float = 2.0) -> list[str]:
    codes: list[str] = []
    async with websockets.connect(url, max_size=None) as ws:
        try:
            for message in messages:
                await ws.send(
                    message if isinstance(message, bytes) else encode(message)
                )
        except websockets.ConnectionClosed:
            pass
        try:
            while True:
                reply = decode(await asyncio.wait_for(ws.recv(), wait))  # type: ignore[arg-type]
                codes.append(
                    reply.code if isinstance(reply, Error) else type(reply).__name__
                )
        except (TimeoutError, websockets.ConnectionClosed):
            pass
    return codes


async def _until(check: object, limit: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_oversized_and_flooding_clients_are_refused_while_others_sync(
    tmp_path: Path,
) -> None:
    """An oversized op, an oversized batch and a flood each get their own code
    and a close, are counted by reason in /metrics, and store nothing, while two
    legitimate clients keep syncing."""
    limits = ServerLimits(
        protocol=Limits(max_op_bytes=4096, max_ops_per_batch=20),
        frames_per_second=100,
        ops_per_second=200,
    )
    store = HubStore.sqlite(tmp_path / "hub.sqlite3")
    server = SyncServer(store, limits=limits)
    async with serve_in_background(server) as running:
        url = running.url
        a = EndToEndSyncManager(MemoryStorage(), Transport.websocket(url), FAST)
        b = EndToEndSyncManager(MemoryStorage(), Transport.websocket(url), FAST)
        async with a, b:
            ca, cb = a.collection("c"), b.collection("c")
            ca.insert("first", {"v": 1})
            await _until(lambda: "first" in cb)
            head = store.head("c")

            big_op = Push("c", (Op(1, 1, _update(900, 10_000)),))
            assert await _raw(url, Hello(900), big_op) == ["Welcome", "too-large"]
            batch = Push("c", tuple(Op(i, i, _update(901)) for i in range(1, 22)))
            assert await _raw(url, Hello(901), batch) == ["Welcome", "too-large"]
            flood = [encode(Ping(i)) for i in range(400)]
            codes = await _raw(url, Hello(902), *flood)
            assert codes[-1] == "rate-limited" and "Welcome" in codes
            ops_flood = [
                Push("c", tuple(Op(n * 20 + i, 1, _update(903)) for i in range(1, 21)))
                for n in range(30)
            ]
            codes = await _raw(url, Hello(903, True, None, "ops"), *ops_flood)
            assert codes[-1] == "rate-limited"

            ca.insert("second", {"v": 2})
            cb.insert("third", {"v": 3})
            await _until(lambda: "second" in cb and "third" in ca)
            # Only the legitimate ops (and the op flood's admitted ones, which were
            # within its rate) are in the store; the refused frames are not.
            ids = {a.replica.replica_id, b.replica.replica_id}
            legit = [op for op in store.read("c", 0, 10_000) if op.replica in ids]
            assert len(legit) == head + 2
            assert not any(
                op.replica in (900, 901, 902) for op in store.read("c", 0, 10_000)
            )
            async with httpx.AsyncClient(base_url=running.http_url) as http:
                metrics = (await http.get("/metrics")).text
    assert 'leptos_sync_server_rejected_total{reason="too_large"} 2.0' in metrics
    assert 'leptos_sync_server_rejected_total{reason="rate_limited"} 2.0' in metrics


async def test_too_many_connections_get_their_own_error_code(tmp_path: Path) -> None:
    """Past max_connections a client hears `too-many-connections` and is counted;
    the clients already connected are not disturbed."""
    server = SyncServer(HubStore.memory(), limits=ServerLimits(max_connections=1))
    async with serve_in_background(server) as running:
        async with websockets.connect(running.url) as first:
            await first.send(encode(Hello(1)))
            assert type(decode(await first.recv())).__name__ == "Welcome"  # type: ignore[arg-type]
            assert await _raw(running.url, Hello(2)) == ["too-many-connections"]
            await first.send(encode(Ping(5)))
            assert type(decode(await first.recv())).__name__ == "Pong"  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            metrics = (await http.get("/metrics")).text
    assert 'leptos_sync_server_rejected_total{reason="max_connections"} 1.0' in metrics
