"""In-process links between replicas and a hub, with fault injection.

An :class:`InMemoryNetwork` holds a :class:`~leptos_sync.hub.Hub` and hands out
connections to it. Frames travel through the network's fault model, drawn from a
seeded random source so a failing run replays exactly:

* ``drop``: probability that a frame is lost;
* ``duplicate``: probability that a frame is delivered twice;
* ``reorder``: probability that a frame is held back and delivered after the next;
* ``delay``: a fixed extra latency on the injected clock.

and by explicit actions: :meth:`InMemoryNetwork.disconnect` (drop every link),
:meth:`InMemoryNetwork.partition` / :meth:`InMemoryNetwork.heal` (cut a transport
off, refusing new connections too), :meth:`InMemoryNetwork.restart_hub`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from dataclasses import dataclass

from ..clock import Clock, SystemClock
from ..durations import Duration, to_ns
from ..errors import ConnectionClosedError, TransportError
from ..hub import Hub, Outgoing
from ..hubstore import HubStore
from .base import Connection, Transport

__all__ = ["Faults", "InMemoryConnection", "InMemoryNetwork", "InMemoryTransport"]


@dataclass
class Faults:
    """Per-frame fault probabilities (0 to 1) and a fixed delay."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: Duration = 0


class InMemoryNetwork:
    """A hub and the links to it.

    Args:
        hub: the hub to connect to (one on a memory store if omitted).
        seed: seeds the fault model.
        clock: where delays are slept.
    """

    def __init__(
        self, hub: Hub | None = None, *, seed: int = 0, clock: Clock | None = None
    ) -> None:
        self.hub = hub if hub is not None else Hub(HubStore.memory())
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._ids = itertools.count(1)
        self._conns: dict[int, InMemoryConnection] = {}
        self._partitioned: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.frames_dropped = self.frames_duplicated = self.frames_reordered = 0

    # Actions -----------------------------------------------------------------

    def disconnect(self, transport: InMemoryTransport | None = None) -> None:
        """Drop every link (or every link of one transport)."""
        for conn in list(self._conns.values()):
            if transport is None or conn.transport is transport:
                conn._break()

    def partition(self, transport: InMemoryTransport) -> None:
        """Cut ``transport`` off: its links drop and it cannot connect until healed."""
        self._partitioned.add(id(transport))
        self.disconnect(transport)

    def heal(self, transport: InMemoryTransport | None = None) -> None:
        """End a partition (all partitions when ``transport`` is omitted)."""
        if transport is None:
            self._partitioned.clear()
        else:
            self._partitioned.discard(id(transport))

    def restart_hub(self, store: HubStore | None = None) -> Hub:
        """Drop every link and start a new hub on ``store`` (default: the same)."""
        self.disconnect()
        self.hub = Hub(store if store is not None else self.hub.store)
        return self.hub

    @property
    def connections(self) -> int:
        return len(self._conns)

    # Plumbing ----------------------------------------------------------------

    def _open(self, transport: InMemoryTransport) -> InMemoryConnection:
        if id(transport) in self._partitioned:
            raise TransportError("network partitioned: cannot reach the hub")
        conn_id = next(self._ids)
        conn = InMemoryConnection(self, transport, conn_id)
        self._conns[conn_id] = conn
        self.hub.connect(conn_id)
        return conn

    def _closed(self, conn: InMemoryConnection) -> None:
        if self._conns.pop(conn.conn_id, None) is not None:
            self.hub.disconnect(conn.conn_id)

    def _to_hub(self, conn: InMemoryConnection, frame: bytes) -> None:
        for delivered in self._faulty(conn.up_held, frame):
            self._later(lambda f=delivered: self._hub_receive(conn, f))

    def _hub_receive(self, conn: InMemoryConnection, frame: bytes) -> None:
        if conn.closed:
            return
        self._route(self.hub.handle(conn.conn_id, frame))

    def _route(self, outgoing: list[Outgoing]) -> None:
        for out in outgoing:
            target = self._conns.get(out.conn)
            if target is None:
                continue
            for frame in out.frames:
                for delivered in self._faulty(target.down_held, frame):
                    self._later(lambda t=target, f=delivered: t._deliver(f))
            if out.close:
                target._break()

    def _faulty(self, held: deque[bytes], frame: bytes) -> list[bytes]:
        faults = self.faults
        rng = self.rng
        if faults.drop and rng.random() < faults.drop:
            self.frames_dropped += 1
            return []
        frames = [frame]
        if faults.duplicate and rng.random() < faults.duplicate:
            self.frames_duplicated += 1
            frames.append(frame)
        if faults.reorder and rng.random() < faults.reorder:
            # Hold this frame back; it goes out after the next one.
            self.frames_reordered += 1
            held.extend(frames)
            return []
        while held:
            frames.append(held.popleft())
        return frames

    def _later(self, action: object) -> None:
        delay = to_ns(self.faults.delay)
        if delay <= 0:
            action()  # type: ignore[operator]
            return

        async def deliver() -> None:
            await self.clock.sleep(delay / 1e9)
            action()  # type: ignore[operator]

        task = asyncio.get_running_loop().create_task(deliver())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class InMemoryConnection(Connection):
    """One link; frames from the hub wait in an unbounded queue."""

    def __init__(
        self, network: InMemoryNetwork, transport: InMemoryTransport, conn_id: int
    ) -> None:
        self.network = network
        self.transport = transport
        self.conn_id = conn_id
        self.closed = False
        self.up_held: deque[bytes] = deque()
        self.down_held: deque[bytes] = deque()
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def send(self, frame: bytes) -> None:
        if self.closed:
            raise ConnectionClosedError("in-memory connection is closed")
        self.network._to_hub(self, bytes(frame))

    async def recv(self) -> bytes:
        if self.closed and self._inbox.empty():
            raise ConnectionClosedError("in-memory connection is closed")
        frame = await self._inbox.get()
        if frame is None:
            raise ConnectionClosedError("in-memory connection was closed")
        return frame

    async def close(self) -> None:
        self._break()

    def _deliver(self, frame: bytes) -> None:
        if not self.closed:
            self._inbox.put_nowait(frame)

    def _break(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inbox.put_nowait(None)
        self.network._closed(self)


class InMemoryTransport(Transport):
    """Connects to an :class:`InMemoryNetwork`'s hub."""

    def __init__(self, network: InMemoryNetwork) -> None:
        self.network = network
        self.endpoint = f"memory://{id(network):x}"

    async def connect(self) -> Connection:
        return self.network._open(self)
