"""Network faults on real sockets: a fault proxy between the replicas and a server.

The server is an OS process (``leptos-sync serve``); the replicas are managers in
this process that reach it through :class:`~leptos_sync.faultproxy.FaultProxy`
on loopback. Each test uses its own collection and its own proxy.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from leptos_sync import (
    EndToEndSyncManager,
    ReliabilityConfig,
    RetryPolicy,
    Storage,
    SyncConfig,
    Transport,
)
from leptos_sync.crdt import CollectionDoc
from leptos_sync.faultproxy import FaultProxy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs

HEARTBEAT = 0.2
HEARTBEAT_TIMEOUT = 0.6


def _config() -> SyncConfig:
    return SyncConfig(
        reliability=ReliabilityConfig(
            retry_policy=RetryPolicy.Fixed(timedelta(milliseconds=50)),
            max_retries=10_000,
        ),
        heartbeat_interval=timedelta(seconds=HEARTBEAT),
        heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT),
        poll_interval=timedelta(milliseconds=50),
        connect_timeout=timedelta(seconds=2),
        ack_timeout=timedelta(seconds=2),
        status_interval=None,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.ServerProcess]:
    workdir = tmp_path_factory.mktemp("faults")
    proc = procs.ServerProcess(workdir / "hub.sqlite3", workdir)
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
async def proxy(server: procs.ServerProcess) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", server.port) as fault_proxy:
        yield fault_proxy


class Pair:
    """A writer and a reader replica, both through the proxy."""

    def __init__(self, url: str, tmp: Path, name: str) -> None:
        self.name = name
        self.writer = EndToEndSyncManager(
            Storage.sqlite(tmp / "a.sqlite3"), Transport.websocket(url), _config()
        )
        self.reader = EndToEndSyncManager(
            Storage.sqlite(tmp / "b.sqlite3"), Transport.websocket(url), _config()
        )
        self.a = self.writer.collection(name)
        self.b = self.reader.collection(name)
        self.written = 0

    async def start(self) -> None:
        await self.writer.start()
        await self.reader.start()

    async def stop(self) -> None:
        await self.writer.stop()
        await self.reader.stop()

    def write(self, count: int = 1) -> None:
        for _ in range(count):
            with self.a.transaction():
                if "tally" not in self.a:
                    self.a.insert("tally", {"last": -1})
                self.a.insert(procs.key(self.written), {"i": self.written})
                self.a.counter("tally", "n").increment(1)
                self.a.update("tally", {"last": self.written})
            self.written += 1

    async def converge(self, limit: float = 30.0) -> None:
        await self.writer.wait_synced(limit)
        await until(
            lambda: _summary(self.b)["records"] == self.written,
            limit,
            "the reader to catch up",
        )
        await self.reader.wait_synced(limit)

    def check(self, server: procs.ServerProcess) -> dict[str, Any]:
        """Both replicas and the server hold every write, each exactly once."""
        expected = {
            "records": self.written,
            "contiguous": True,
            "counter": self.written,
            "last": self.written - 1,
        }
        a, b = _summary(self.a), _summary(self.b)
        records, ops = procs.hub_records(_hub_db(server), self.name)
        on_server = procs.summarise(records)
        assert {k: a[k] for k in expected} == expected, a
        assert a["digest"] == b["digest"] == on_server["digest"]
        # Every write in exactly one operation: merged runs count once, and
        # hub_records checked that no change is stored twice.
        merged = self.writer.replica.statistics().local_ops_merged
        assert ops == self.written - merged, (
            f"server stored {ops} ops for {self.written} writes ({merged} merged)"
        )
        return on_server


def _hub_db(server: procs.ServerProcess) -> Path:
    return Path(server.args[server.args.index("--db") + 1])


def _summary(coll: CollectionDoc) -> dict[str, Any]:
    return procs.summarise(coll.to_dict())


async def until(predicate: Callable[[], bool], limit: float, what: str) -> float:
    """Poll until ``predicate`` holds; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if predicate():
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {limit} s waiting for {what}")


@pytest.fixture
async def pair(
    proxy: FaultProxy, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Pair]:
    replicas = Pair(proxy.url(), tmp_path, request.node.name[:40])
    await replicas.start()
    try:
        yield replicas
    finally:
        await replicas.stop()


async def test_replicas_converge_over_a_slow_link(
    pair: Pair, proxy: FaultProxy, server: procs.ServerProcess
) -> None:
    """With 100 ms each way, every write arrives, later by about the delay."""
    pair.write()
    await pair.converge()
    proxy.delay(0.1)

    started = time.monotonic()
    pair.write()
    seen = await until(
        lambda: _summary(pair.b)["records"] == pair.written, 10, "a write"
    )
    assert time.monotonic() - started >= 0.2 and seen >= 0.2  # up and down again

    for _ in range(20):
        pair.write(5)
        await asyncio.sleep(0.01)
    await pair.converge()
    pair.check(server)


async def test_a_stalled_link_is_noticed_within_the_heartbeat_bound(
    pair: Pair, proxy: FaultProxy, server: procs.ServerProcess
) -> None:
    """A link that goes silent is dropped and re-established within 2x the bound."""
    pair.write()
    await pair.converge()
    accepted = proxy.statistics().accepted
    before = pair.writer.status().reconnects

    proxy.stall()
    stalled_at = time.monotonic()
    pair.write(10)  # made during the stall; must arrive after the reconnect
    took = await until(
        lambda: pair.writer.status().reconnects > before and pair.writer.online,
        10,
        "the writer to reconnect",
    )
    assert took < 2 * HEARTBEAT_TIMEOUT, f"reconnected after {took:.2f} s"
    print(f"figures: stall noticed and replaced in {took:.3f} s")
    assert proxy.statistics().accepted > accepted
    await pair.converge()
    assert time.monotonic() - stalled_at < 10
    proxy.resume()
    pair.check(server)


async def test_cut_connections_lose_and_duplicate_nothing(
    pair: Pair, proxy: FaultProxy, server: procs.ServerProcess
) -> None:
    """Cutting every connection six times during a stream of writes loses none."""
    stop = asyncio.Event()

    async def stream() -> None:
        while not stop.is_set() and pair.written < 5_000:
            pair.write(3)
            await asyncio.sleep(0.005)

    writing = asyncio.ensure_future(stream())
    try:
        cuts = 0
        for _ in range(6):
            await asyncio.sleep(0.3)
            cuts += proxy.cut()
        assert cuts >= 6
    finally:
        stop.set()
        await writing
    await pair.converge()
    pair.check(server)
    assert pair.writer.status().reconnects >= 3
    print(f"figures: {cuts} cuts, {pair.written} writes verified exactly once")


@pytest.mark.parametrize("direction", ["down", "up"])
async def test_a_truncated_frame_is_survived(
    pair: Pair, proxy: FaultProxy, server: procs.ServerProcess, direction: str
) -> None:
    """Half a frame followed by a reset costs a reconnect, never a write."""
    pair.write()
    await pair.converge()
    for _ in range(3):
        truncations = proxy.statistics().truncations
        proxy.truncate_next(direction)  # type: ignore[arg-type]
        pair.write(20)
        await until(
            lambda t=truncations: proxy.statistics().truncations > t,
            10,  # type: ignore[misc]
            "the truncation",
        )
        await pair.converge()
    pair.check(server)
    assert pair.writer.status().reconnects + pair.reader.status().reconnects >= 3


async def test_a_refused_then_black_holed_server_is_survived(
    pair: Pair, proxy: FaultProxy, server: procs.ServerProcess
) -> None:
    """Refused and silently dropped connections only delay delivery."""
    pair.write()
    await pair.converge()
    proxy.refuse()
    proxy.cut()
    pair.write(10)
    await asyncio.sleep(0.5)
    assert not pair.writer.online
    proxy.refuse(False)
    proxy.stall(new_connections=True)
    await asyncio.sleep(1.0)
    pair.write(10)
    proxy.resume()
    await pair.converge()
    pair.check(server)
