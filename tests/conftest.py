"""Fixtures shared by the sync-core tests: a manual clock and an in-memory wire."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from leptos_sync import Hub, HubStore, Replica, Storage
from leptos_sync.clock import ManualClock
from leptos_sync.storage import MemoryStorage

FrameFilter = Callable[[int, bytes], bool]


class Wire:
    """A hub and replicas joined synchronously, frame by frame, in FIFO order.

    ``pump`` moves frames until nothing is left to move. ``up_filter`` and
    ``down_filter`` see ``(conn, frame)`` and return False to drop the frame.
    """

    def __init__(self, clock: ManualClock, store: HubStore | None = None) -> None:
        self.clock = clock
        self.hub = Hub(store if store is not None else HubStore.memory())
        self.conns: dict[int, Replica] = {}
        self._next = 1
        self.up_filter: FrameFilter | None = None
        self.down_filter: FrameFilter | None = None

    def replica(
        self,
        storage: Storage | None = None,
        *,
        connect: bool = True,
        merge_waiting: bool = True,
    ) -> Replica:
        replica = Replica(
            storage if storage is not None else MemoryStorage(),
            clock=self.clock,
            merge_waiting=merge_waiting,
        )
        if connect:
            self.connect(replica)
        return replica

    def connect(self, replica: Replica) -> int:
        conn = self._next
        self._next += 1
        self.conns[conn] = replica
        self.hub.connect(conn)
        replica.connected()
        return conn

    def disconnect(self, replica: Replica) -> None:
        for conn, held in list(self.conns.items()):
            if held is replica:
                del self.conns[conn]
                self.hub.disconnect(conn)
                replica.disconnected()
                replica.take_outgoing()

    def restart_hub(self, store: HubStore) -> None:
        for replica in list(self.conns.values()):
            self.disconnect(replica)
        self.hub = Hub(store)

    def pump(self, limit: int = 100_000) -> int:
        moved = 0
        for _ in range(limit):
            step = 0
            for conn, replica in list(self.conns.items()):
                for frame in replica.take_outgoing():
                    step += 1
                    if self.up_filter is not None and not self.up_filter(conn, frame):
                        continue
                    self._route(self.hub.handle(conn, frame))
            if not step:
                return moved
            moved += step
        raise AssertionError("frames kept flowing")

    def _route(self, outgoing: list) -> None:  # type: ignore[type-arg]
        for out in outgoing:
            target = self.conns.get(out.conn)
            if target is None:
                continue
            for frame in out.frames:
                if self.down_filter is None or self.down_filter(out.conn, frame):
                    target.receive(frame)
            if out.close:
                self.disconnect(target)


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at a fixed starting point."""
    return ManualClock()


@pytest.fixture
def wire(clock: ManualClock) -> Iterator[Wire]:
    """A hub on a memory store, ready for replicas."""
    yield Wire(clock)


@pytest.fixture
def make_wire(clock: ManualClock) -> Callable[[HubStore | None], Wire]:
    """Build a wire on a given hub store (test modules cannot import conftest)."""
    return lambda store=None: Wire(clock, store)
