"""A small TCP fault proxy for testing sync over a bad network, on real sockets.

:class:`FaultProxy` listens on a loopback port and forwards every connection it
accepts to a target (a sync server, usually). Between the two ends it can

* **delay** every chunk by a fixed time in one or both directions (latency, not
  throttling: chunks keep their order and are not serialised behind each other);
* **stall** the open connections: no byte moves either way and nothing is closed,
  which is what a dead link looks like to both ends (:meth:`resume` ends it);
* **cut** every open connection at once (each end gets a reset);
* **truncate** the next chunk in one direction: forward only its first part, then
  cut the connection, so the receiver holds half a frame;
* **refuse** new connections (accepted and reset at once).

Faults take effect immediately and can be changed while traffic flows.

The proxy works on TCP chunks, not protocol frames. On loopback a chunk is almost
always one WebSocket message, so truncating "the next chunk" truncates a frame;
with larger messages it cuts wherever the read boundary fell, which is as good a
fault. Delays go through the injected :class:`~leptos_sync.clock.Clock`.

Logging: INFO when a fault is set, DEBUG per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from .clock import Clock, SystemClock
from .durations import Duration, ns_to_timedelta, to_ns
from .errors import UsageError

__all__ = ["Direction", "FaultProxy", "ProxyStatistics"]

logger = logging.getLogger(__name__)

Direction = Literal["up", "down", "both"]
_CHUNK = 65536


@dataclass(frozen=True)
class ProxyStatistics:
    """What the proxy has done so far.

    ``bytes_up`` flowed from clients to the target, ``bytes_down`` back.
    """

    accepted: int
    open: int
    refused: int
    bytes_up: int
    bytes_down: int
    cuts: int
    truncations: int


class _Link:
    """One proxied connection: a pump per direction and a stall switch."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        *,
        stalled: bool,
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.flowing = asyncio.Event()
        if not stalled:
            self.flowing.set()
        self.closed = False

    async def run(self) -> None:
        up = asyncio.ensure_future(self._pump("up", self.client[0], self.server[1]))
        down = asyncio.ensure_future(self._pump("down", self.server[0], self.client[1]))
        try:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            down.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            self.abort()

    def abort(self) -> None:
        """Reset both ends (no orderly close: the peers see a broken link)."""
        if self.closed:
            return
        self.closed = True
        for _, writer in (self.client, self.server):
            writer.transport.abort()

    async def _pump(
        self, direction: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Reading and writing are split by a queue so that a delay holds each
        # chunk for its own time after arrival instead of serialising them.
        queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        feeder = asyncio.ensure_future(self._read(direction, reader, queue))
        try:
            await self._write(direction, writer, queue)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await feeder

    async def _read(
        self,
        direction: str,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[int, bytes] | None],
    ) -> None:
        clock = self.proxy.clock
        while True:
            await self.flowing.wait()
            try:
                chunk = await reader.read(_CHUNK)
            except OSError:
                chunk = b""
            if not chunk:
                queue.put_nowait(None)
                return
            queue.put_nowait((clock.monotonic_ns(), chunk))

    async def _write(
        self,
        direction: str,
        writer: asyncio.StreamWriter,
        queue: asyncio.Queue[tuple[int, bytes] | None],
    ) -> None:
        proxy = self.proxy
        while True:
            item = await queue.get()
            if item is None:
                return
            arrived, chunk = item
            delay = proxy._delay_ns[direction]
            if delay:
                wait = arrived + delay - proxy.clock.monotonic_ns()
                if wait > 0:
                    await proxy.clock.sleep(ns_to_timedelta(wait))
            # A stall that began while the chunk was held holds it too.
            await self.flowing.wait()
            keep = proxy._take_truncation(direction, len(chunk))
            if keep is not None:
                writer.write(chunk[:keep])
                with contextlib.suppress(OSError, ConnectionError):
                    await writer.drain()
                proxy._count(direction, keep)
                logger.info(
                    "truncated a %s chunk to %d of %d bytes",
                    direction,
                    keep,
                    len(chunk),
                )
                return
            writer.write(chunk)
            try:
                await writer.drain()
            except (OSError, ConnectionError):
                return
            proxy._count(direction, len(chunk))


class FaultProxy:
    """A TCP proxy from a loopback port to ``target_host:target_port``.

    Use it as ``async with FaultProxy(host, port) as proxy:`` (or call
    :meth:`start` and :meth:`close`); clients connect to :attr:`port`.

    Args:
        target_host: where connections are forwarded.
        target_port: the target's port.
        host: the address to listen on (loopback by default).
        port: the port to listen on; 0 picks a free one.
        clock: the time source for delays.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self._requested_port = port
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._delay_ns = {"up": 0, "down": 0}
        self._truncate: dict[str, float] = {}
        self._stall_new = False
        self._refuse = False
        self._accepted = self._refused = self._cuts = self._truncations = 0
        self._bytes = {"up": 0, "down": 0}

    # Lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start listening."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, self.host, self._requested_port
        )
        logger.debug(
            "fault proxy on %s:%d -> %s:%d",
            self.host,
            self.port,
            self.target_host,
            self.target_port,
        )

    async def close(self) -> None:
        """Stop listening and reset every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self.cut()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        """The port clients connect to."""
        if self._server is None:
            raise UsageError("the proxy is not started; call start() first")
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/ws", scheme: str = "ws") -> str:
        """A URL to the target through the proxy, e.g. ``ws://127.0.0.1:PORT/ws``."""
        return f"{scheme}://{self.host}:{self.port}{path}"

    # Faults ------------------------------------------------------------------

    def delay(self, seconds: Duration, direction: Direction = "both") -> None:
        """Hold every chunk this long before forwarding it (0 turns it off)."""
        delay = to_ns(seconds)
        if delay < 0:
            raise UsageError(f"a delay cannot be negative: {seconds!r}")
        for side in _sides(direction):
            self._delay_ns[side] = delay
        logger.info("fault proxy: delay %s by %.3f s", direction, delay / 1e9)

    def stall(self, *, new_connections: bool = False) -> None:
        """Stop every open connection dead, without closing anything.

        Args:
            new_connections: stall connections accepted from now on as well (a
                black-holed server); by default they flow normally (a dead link
                that a reconnect gets around).
        """
        for link in self._links:
            link.flowing.clear()
        self._stall_new = new_connections
        logger.info(
            "fault proxy: stalled %d connections%s",
            len(self._links),
            " and new ones" if new_connections else "",
        )

    def resume(self) -> None:
        """End a stall: held bytes flow again."""
        self._stall_new = False
        for link in self._links:
            link.flowing.set()
        logger.info("fault proxy: resumed")

    def cut(self) -> int:
        """Reset every open connection; returns how many were cut."""
        links = [link for link in self._links if not link.closed]
        for link in links:
            link.abort()
        if links:
            self._cuts += len(links)
            logger.info("fault proxy: cut %d connections", len(links))
        return len(links)

    def truncate_next(self, direction: Direction = "down", keep: float = 0.5) -> None:
        """Forward only ``keep`` (a fraction) of the next chunk, then cut.

        One-shot per direction: the first chunk to pass in ``direction`` (on any
        connection) is truncated and its connection reset. At least one byte is
        held back and at least one is sent (for chunks of two bytes or more).
        """
        if not 0.0 <= keep < 1.0:
            raise UsageError(f"keep is a fraction in [0, 1), got {keep!r}")
        for side in _sides(direction):
            self._truncate[side] = keep
        logger.info("fault proxy: truncating the next %s chunk", direction)

    def refuse(self, refuse: bool = True) -> None:
        """Reset new connections as soon as they are accepted (or stop doing so)."""
        self._refuse = refuse
        logger.info(
            "fault proxy: %s new connections", "refusing" if refuse else "accepting"
        )

    def statistics(self) -> ProxyStatistics:
        return ProxyStatistics(
            accepted=self._accepted,
            open=sum(1 for link in self._links if not link.closed),
            refused=self._refused,
            bytes_up=self._bytes["up"],
            bytes_down=self._bytes["down"],
            cuts=self._cuts,
            truncations=self._truncations,
        )

    def __repr__(self) -> str:
        where = (
            f"{self.host}:{self.port}" if self._server is not None else "not started"
        )
        return f"FaultProxy({where} -> {self.target_host}:{self.target_port})"

    # Internals ---------------------------------------------------------------

    def _take_truncation(self, direction: str, size: int) -> int | None:
        keep = self._truncate.pop(direction, None)
        if keep is None:
            return None
        self._truncations += 1
        if size < 2:
            return 0
        return min(size - 1, max(1, int(size * keep)))

    def _count(self, direction: str, size: int) -> None:
        self._bytes[direction] += size

    async def _accept(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Closing the proxy: the connection is reset below. Ending normally
            # keeps asyncio's stream machinery from logging the cancellation.
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._refuse:
            self._refused += 1
            writer.transport.abort()
            return
        self._accepted += 1
        try:
            upstream = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError as exc:
            # The target is down: the client sees its connection reset, as it
            # would see a refused connection without the proxy.
            logger.debug("fault proxy: target unreachable: %s", exc)
            writer.transport.abort()
            return
        link = _Link(self, (reader, writer), upstream, stalled=self._stall_new)
        self._links.add(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)


def _sides(direction: Direction) -> tuple[str, ...]:
    if direction == "both":
        return ("up", "down")
    if direction in ("up", "down"):
        return (direction,)
    raise UsageError(f"direction is 'up', 'down' or 'both', not {direction!r}")
