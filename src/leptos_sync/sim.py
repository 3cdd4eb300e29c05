"""A deterministic simulation of a hub and several replicas under faults.

One seeded scheduler (``random.Random(seed)``) drives a :class:`~leptos_sync.Hub`
and N :class:`~leptos_sync.Replica` objects directly, with no event loop and no
real time: frames travel through per-connection queues, time is a
:class:`~leptos_sync.clock.ManualClock`, and every step is one of

* a random local edit of every field kind (register insert, update and delete,
  counter increments, text splices, list inserts and deletes, tree creates and
  moves), online or offline;
* delivering the next frame of a connection, or a fault: dropping, duplicating,
  reordering or corrupting a queued frame, cutting a connection, restarting the
  hub from its store (a new hub on the same memory store, or on the reopened
  SQLite file), restarting a replica from its store (gracefully, or killed
  before it wrote behind what it received);
* letting time pass, so that the replicas' ack and pull timeouts fire and the
  driver's heartbeat (ping after 5 s of silence, give up after 15 s) runs.

After the fault phase comes a healing phase: no faults, everyone reconnects, and
the scheduler runs until nothing moves. Then the invariants are checked:

1. every replica holds the same collections as every other and as a fresh
   replica that pulled everything from the hub, and none has held-back updates;
2. every local operation ever made is in the hub's log exactly once, under its
   ``(replica, counter)`` id and with the same bytes; every acknowledgement the
   hub sent named the sequence number the log holds;
3. every outbox (session and store) is empty and every cursor is at the head;
4. nothing was applied twice: each counter equals the sum of the increments
   made on it;
5. a replica reopened from its store holds what it held before closing.

The driver the simulation plays is the manager's: a frame the replica rejects
drops the connection, a link silent for 15 s is dropped, and a dropped replica
reconnects a random number of steps later (sometimes hundreds: a long offline
stretch of edits).

A failure raises :class:`SimulationFailure` (an ``AssertionError``) whose message
names the seed and the command that replays it::

    python -m leptos_sync.sim --seed 17
    python -m leptos_sync.sim --seeds 1000 --start 0 --replicas 3 --steps 400
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import fields
from .clock import ManualClock
from .crdt import CollectionDoc
from .errors import ProtocolError
from .hub import Hub
from .hubstore import HubStore
from .protocol import Ack, Ping, crc32c, decode, encode
from .replica import Replica
from .storage import MemoryStorage, SQLiteStorage, Storage

__all__ = [
    "SimConfig",
    "SimReport",
    "Simulation",
    "SimulationFailure",
    "main",
    "run_seed",
]

StoreKind = Literal["memory", "sqlite"]

NS = 1_000_000_000
HEARTBEAT_NS = 5 * NS
HEARTBEAT_TIMEOUT_NS = 15 * NS
_CLOSE = b""  # queued after a hub's error frame: the hub closed the link
_RECORDS = tuple(f"r{i}" for i in range(6))
_WORDS = ("a", "bc", "déf", "ghij", "😀", " ", "klmno")


class SimulationFailure(AssertionError):
    """An invariant failed; the message names the seed and how to replay it."""


@dataclass(frozen=True)
class SimConfig:
    """One simulation run.

    Attributes:
        seed: seeds every random choice; the same seed replays the same run.
        replicas: how many replicas.
        steps: how many scheduler steps in the fault phase.
        collections: the collections every replica edits.
        hub_store: the hub's store; chosen from the seed when ``None``.
        replica_store: the replicas' store; chosen from the seed when ``None``.
        directory: where SQLite files go (a temporary directory when ``None``).
    """

    seed: int
    replicas: int = 3
    steps: int = 400
    collections: tuple[str, ...] = ("notes", "tasks")
    hub_store: StoreKind | None = None
    replica_store: StoreKind | None = None
    directory: Path | None = None

    def stores(self) -> tuple[StoreKind, StoreKind]:
        """The (hub, replica) store kinds: every combination across seeds."""
        hub: StoreKind = "sqlite" if self.seed % 2 == 0 else "memory"
        replica: StoreKind = "sqlite" if self.seed % 4 in (0, 1) else "memory"
        return self.hub_store or hub, self.replica_store or replica

    def replay_command(self) -> str:
        command = f"python -m leptos_sync.sim --seed {self.seed}"
        if self.replicas != SimConfig.replicas:
            command += f" --replicas {self.replicas}"
        if self.steps != SimConfig.steps:
            command += f" --steps {self.steps}"
        if self.hub_store is not None:
            command += f" --hub-store {self.hub_store}"
        if self.replica_store is not None:
            command += f" --replica-store {self.replica_store}"
        return command


@dataclass
class SimReport:
    """What one run did, for the command line and for tests."""

    seed: int
    hub_store: StoreKind
    replica_store: StoreKind
    steps: int = 0
    local_ops: int = 0
    local_ops_merged: int = 0
    frames_delivered: int = 0
    frames_dropped: int = 0
    frames_duplicated: int = 0
    frames_reordered: int = 0
    frames_corrupted: int = 0
    disconnects: int = 0
    heartbeat_timeouts: int = 0
    hub_restarts: int = 0
    replica_restarts: int = 0
    replica_crashes: int = 0
    acks_seen: int = 0
    heal_rounds: int = 0
    snapshots_sent: int = 0
    resends: int = 0
    repulls: int = 0
    simulated_seconds: float = 0.0
    heads: dict[str, int] = field(default_factory=dict)
    digest: int = 0


# The ledger: every local operation, as the store recorded it -------------------


class _Ledger:
    """Every local operation made, keyed by ``(replica, counter)``.

    Operations merged before they were pushed leave the ledger; the operation
    that replaced them (under the highest of their counters) takes their place.
    """

    def __init__(self) -> None:
        self.ops: dict[tuple[int, int], tuple[str, int]] = {}
        self.reused: list[tuple[int, int]] = []
        self.changes = 0
        self.merged = 0

    def record(self, replica: int, collection: str, counter: int, data: bytes) -> None:
        key = (replica, counter)
        if key in self.ops:
            # A counter used twice makes the hub drop the second op as a duplicate.
            self.reused.append(key)
        self.ops[key] = (collection, crc32c(data))
        self.changes += 1

    def merge(
        self, replica: int, collection: str, counters: list[int], data: bytes
    ) -> None:
        for counter in counters:
            if self.ops.pop((replica, counter), (collection, 0))[0] != collection:
                self.reused.append((replica, counter))
        self.ops[(replica, max(counters))] = (collection, crc32c(data))
        self.merged += len(counters) - 1


class _LedgerMemoryStorage(MemoryStorage):
    def __init__(self, replica_id: int, ledger: _Ledger) -> None:
        super().__init__(replica_id)
        self.ledger = ledger
        self.sim_replica_id = replica_id

    def append_local(
        self, collection: str, counter: int, hlc: int, data: bytes
    ) -> None:
        super().append_local(collection, counter, hlc, data)
        self.ledger.record(self.sim_replica_id, collection, counter, data)

    def merge_outbox(
        self, collection: str, counters: list[int], hlc: int, data: bytes
    ) -> None:
        super().merge_outbox(collection, counters, hlc, data)
        self.ledger.merge(self.sim_replica_id, collection, counters, data)

    def reopen(self) -> None:
        """Make the store usable again, as a process restart on a disk would."""
        self._closed = False


class _LedgerSQLiteStorage(SQLiteStorage):
    def __init__(self, path: Path, replica_id: int, ledger: _Ledger) -> None:
        super().__init__(path)
        if self.replica_id() != replica_id:
            # Seeded ids keep Loro's tie-breaks, and so the whole run, replayable.
            with self.batch():
                self._set_meta("replica_id", replica_id)
        self.ledger = ledger
        self.sim_replica_id = replica_id

    def append_local(
        self, collection: str, counter: int, hlc: int, data: bytes
    ) -> None:
        super().append_local(collection, counter, hlc, data)
        self.ledger.record(self.sim_replica_id, collection, counter, data)

    def merge_outbox(
        self, collection: str, counters: list[int], hlc: int, data: bytes
    ) -> None:
        super().merge_outbox(collection, counters, hlc, data)
        self.ledger.merge(self.sim_replica_id, collection, counters, data)


# The network ------------------------------------------------------------------


@dataclass
class _Link:
    """One connection: frames up to the hub and down to the replica."""

    conn: int
    node: int
    up: deque[bytes] = field(default_factory=deque)
    down: deque[bytes] = field(default_factory=deque)
    hub_closed: bool = False


@dataclass
class _Node:
    """A replica and what its driver knows about its link."""

    index: int
    replica_id: int
    storage: Storage
    replica: Replica
    path: Path | None = None
    link: _Link | None = None
    last_rx_ns: int = 0
    last_ping_ns: int = 0
    nonce: int = 0
    offline_until: int = 0


class Simulation:
    """One seeded run; :meth:`run` returns a report or raises SimulationFailure."""

    def __init__(self, config: SimConfig, *, trace: bool = False) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.clock = ManualClock()
        self.ledger = _Ledger()
        self.hub_kind, self.replica_kind = config.stores()
        self.report = SimReport(config.seed, self.hub_kind, self.replica_kind)
        self.trace_enabled = trace
        self.trace: deque[str] = deque(maxlen=400)
        self.acked: dict[tuple[int, int], int] = {}
        self.increments: dict[tuple[str, str], int] = {}
        self.nodes: list[_Node] = []
        self.links: dict[int, _Link] = {}
        self._next_conn = 1
        self._step = 0
        self._dir: Path | None = None
        self.hub_store: HubStore | None = None
        self.hub: Hub | None = None
        # Knobs drawn once per seed so that different seeds stress different paths.
        self.snapshot_after = self.rng.choice((25, 60, 20_000))
        self.compact_after = self.rng.choice((15, 40, 50_000))
        self.max_batch_ops = self.rng.choice((1, 3, 512))

    # Running ------------------------------------------------------------------

    def run(self) -> SimReport:
        """Run the fault phase, heal, check the invariants; return the report."""
        started = self.clock.monotonic_ns()
        with _workdir(self.config.directory) as directory:
            self._dir = directory
            try:
                self._setup()
                for _ in range(self.config.steps):
                    self._step += 1
                    self._fault_step()
                self._heal()
                self._check()
            except SimulationFailure:
                raise
            except Exception as exc:
                self._fail(f"unexpected {type(exc).__name__}: {exc}", exc)
            finally:
                self._close_all()
        self.report.steps = self._step
        self.report.simulated_seconds = (self.clock.monotonic_ns() - started) / NS
        return self.report

    def _setup(self) -> None:
        self._open_hub()
        for index in range(self.config.replicas):
            replica_id = self.rng.getrandbits(62) | 1
            path = None
            if self.replica_kind == "sqlite":
                assert self._dir is not None
                path = self._dir / f"replica-{index}.sqlite3"
            storage = self._new_storage(replica_id, path)
            node = _Node(index, replica_id, storage, self._new_replica(storage), path)
            self.nodes.append(node)
            self._open_collections(node)
            for name in self.config.collections:
                # Each replica owns one counter record that nobody deletes, so
                # the final counts show whether anything was applied twice.
                coll = node.replica.collection(name)
                coll.insert(f"ctr-{index}", {"n": fields.counter(), "owner": index})
        for node in self.nodes:
            self._connect(node)

    def _new_storage(self, replica_id: int, path: Path | None) -> Storage:
        if path is None:
            return _LedgerMemoryStorage(replica_id, self.ledger)
        return _LedgerSQLiteStorage(path, replica_id, self.ledger)

    def _new_replica(self, storage: Storage) -> Replica:
        return Replica(
            storage,
            clock=self.clock,
            compact_after=self.compact_after,
            max_batch_ops=self.max_batch_ops,
        )

    def _open_collections(self, node: _Node) -> None:
        for name in self.config.collections:
            node.replica.collection(name)
        self._flush(node)

    def _open_hub(self) -> None:
        if self.hub_kind == "sqlite":
            assert self._dir is not None
            self.hub_store = HubStore.sqlite(self._dir / "hub.sqlite3")
        elif self.hub_store is None:
            self.hub_store = HubStore.memory()
        self.hub = Hub(self.hub_store, snapshot_after=self.snapshot_after)

    # One step of the fault phase ------------------------------------------------

    def _fault_step(self) -> None:
        actions: list[tuple[float, Callable[[], None]]] = [
            (40, self._deliver_any),
            (25, self._edit_any),
            (6, self._advance),
            (3, self._drop),
            (3, self._duplicate),
            (3, self._reorder),
            (0.7, self._corrupt),
            (1.5, self._disconnect_any),
            (6, self._reconnect_any),
            (0.4, self._restart_hub),
            (0.8, self._restart_replica),
        ]
        total = sum(weight for weight, _ in actions)
        pick = self.rng.random() * total
        for weight, action in actions:
            pick -= weight
            if pick < 0:
                action()
                return
        actions[0][1]()

    def _queues(self) -> list[tuple[_Link, deque[bytes]]]:
        queues: list[tuple[_Link, deque[bytes]]] = []
        for conn in sorted(self.links):
            link = self.links[conn]
            if link.up:
                queues.append((link, link.up))
            if link.down:
                queues.append((link, link.down))
        return queues

    def _deliver_any(self) -> None:
        queues = self._queues()
        if queues:
            link, queue = self.rng.choice(queues)
            self._deliver(link, queue)

    def _deliver(self, link: _Link, queue: deque[bytes]) -> None:
        frame = queue.popleft()
        self.report.frames_delivered += 1
        if queue is link.up:
            self._to_hub(link, frame)
        else:
            self._to_replica(link, frame)

    def _to_hub(self, link: _Link, frame: bytes) -> None:
        assert self.hub is not None
        if link.hub_closed:
            return
        for out in self.hub.handle(link.conn, frame):
            target = self.links.get(out.conn)
            if target is None:
                continue
            for sent in out.frames:
                self._note_hub_frame(target, sent)
                target.down.append(sent)
            if out.close:
                self._log(f"hub closed conn {target.conn}")
                target.hub_closed = True
                target.up.clear()
                target.down.append(_CLOSE)
                self.hub.disconnect(target.conn)

    def _note_hub_frame(self, link: _Link, frame: bytes) -> None:
        # Remember every acknowledgement the hub sends: those operations must
        # never be lost, whatever happens next.
        message = decode(frame)
        if not isinstance(message, Ack):
            return
        replica = self.nodes[link.node].replica_id
        for counter, seq in zip(message.counters, message.seqs, strict=True):
            known = self.acked.setdefault((replica, counter), seq)
            if known != seq:
                self._fail(
                    f"hub acknowledged {replica:x}#{counter} at seq {seq} after "
                    f"acknowledging it at {known}"
                )
            self.report.acks_seen += 1

    def _to_replica(self, link: _Link, frame: bytes) -> None:
        node = self.nodes[link.node]
        if frame == _CLOSE:
            self._drop_link(node, "closed by the hub")
            return
        node.last_rx_ns = self.clock.monotonic_ns()
        try:
            node.replica.receive(frame)
        except ProtocolError as exc:
            # A bad frame: the driver drops the connection, as the manager does.
            self._log(f"replica {node.index} rejected a frame: {exc}")
            self._drop_link(node, "bad frame")
            return
        self._flush(node)

    def _flush(self, node: _Node) -> None:
        frames = node.replica.take_outgoing()
        if node.link is not None and not node.link.hub_closed:
            node.link.up.extend(frames)

    # Edits ------------------------------------------------------------------

    def _edit_any(self) -> None:
        node = self.rng.choice(self.nodes)
        name = self.rng.choice(self.config.collections)
        coll = node.replica.collection(name)
        if self.rng.random() < 0.15:
            # Several edits in one transaction become one operation.
            with coll.transaction():
                for _ in range(self.rng.randint(2, 4)):
                    self._edit(node, coll)
        else:
            self._edit(node, coll)
        self.report.local_ops = self.ledger.changes
        self.report.local_ops_merged = self.ledger.merged
        self._flush(node)

    def _edit(self, node: _Node, coll: CollectionDoc) -> None:
        rng = self.rng
        kind = rng.choice(
            ("insert", "update", "delete", "counter", "counter", "text", "list", "tree")
        )
        if kind == "counter":
            self._increment(node, coll)
            return
        record_id = rng.choice(_RECORDS)
        exists = record_id in coll
        if not exists or kind == "insert":
            if not exists:
                self._log(f"replica {node.index} inserts {coll.name}/{record_id}")
                coll.insert(record_id, self._new_record())
            return
        self._log(f"replica {node.index} {kind} {coll.name}/{record_id}")
        if kind == "update":
            if rng.random() < 0.2:
                coll.remove_fields(record_id, "b")
            else:
                coll.update(record_id, {rng.choice(("a", "b")): self._json(2)})
        elif kind == "delete":
            coll.delete(record_id)
        elif kind == "text":
            text = coll.text(record_id, "t")
            size = len(text)
            pos = rng.randint(0, size)
            cut = rng.randint(0, min(3, size - pos))
            text.splice(pos, cut, rng.choice(_WORDS) if rng.random() < 0.8 else "")
        elif kind == "list":
            items = coll.list(record_id, "l")
            size = len(items)
            if size and rng.random() < 0.35:
                items.delete(rng.randrange(size), 1)
            else:
                items.insert(rng.randint(0, size), self._json(1))
        else:
            self._tree_edit(coll, record_id)

    def _increment(self, node: _Node, coll: CollectionDoc) -> None:
        owners = [i for i in range(len(self.nodes)) if f"ctr-{i}" in coll]
        if not owners:
            return
        record_id = f"ctr-{self.rng.choice(owners)}"
        amount = self.rng.choice((-2, -1, 1, 1, 2, 5))
        handle = coll.counter(record_id, "n")
        if amount > 0:
            handle.increment(amount)
        else:
            handle.decrement(-amount)
        key = (coll.name, record_id)
        self.increments[key] = self.increments.get(key, 0) + amount
        if self.rng.random() < 0.3:
            # Counters inside ordinary records too (their deletes hide the sums).
            record = self.rng.choice(_RECORDS)
            if record in coll:
                coll.counter(record, "c").increment(1)

    def _tree_edit(self, coll: CollectionDoc, record_id: str) -> None:
        tree = coll.tree(record_id, "tr")
        nodes: list[tuple[str, set[str]]] = []

        def walk(items: list[dict[str, Any]]) -> set[str]:
            below: set[str] = set()
            for item in items:
                inner = walk(item["children"])
                nodes.append((item["id"], inner))
                below |= inner | {item["id"]}
            return below

        walk(tree.to_list())
        if not nodes or self.rng.random() < 0.5:
            parent = self.rng.choice([None, *(n for n, _ in nodes)])
            tree.create(parent, label=self.rng.choice(_WORDS))
            return
        node, below = self.rng.choice(nodes)
        targets = [n for n, _ in nodes if n != node and n not in below]
        target = self.rng.choice([None, *targets])
        tree.move(node, target)

    def _new_record(self) -> dict[str, Any]:
        return {
            "a": self._json(2),
            "t": fields.text(self.rng.choice(_WORDS)),
            "l": fields.list([self._json(0)]),
            "tr": fields.tree(),
            "c": fields.counter(),
        }

    def _json(self, depth: int) -> Any:
        rng = self.rng
        kind = rng.randrange(8 if depth > 0 else 6)
        if kind == 0:
            return None
        if kind == 1:
            return rng.random() < 0.5
        if kind == 2:
            return rng.randint(-(1 << 40), 1 << 40)
        if kind == 3:
            return rng.choice((0.5, -1.25, 3.0e10, 1e-7))
        if kind in (4, 5):
            return rng.choice(_WORDS) * rng.randint(1, 3)
        if kind == 6:
            return [self._json(depth - 1) for _ in range(rng.randint(0, 3))]
        return {
            rng.choice(_WORDS): self._json(depth - 1) for _ in range(rng.randint(0, 3))
        }

    # Faults -----------------------------------------------------------------

    def _pick_queue(self) -> tuple[_Link, deque[bytes]] | None:
        queues = [(link, q) for link, q in self._queues() if q and q[-1] != _CLOSE]
        return self.rng.choice(queues) if queues else None

    def _drop(self) -> None:
        picked = self._pick_queue()
        if picked is not None:
            _, queue = picked
            index = self.rng.randrange(len(queue))
            if queue[index] != _CLOSE:
                del queue[index]
                self.report.frames_dropped += 1

    def _duplicate(self) -> None:
        picked = self._pick_queue()
        if picked is not None:
            _, queue = picked
            index = self.rng.randrange(len(queue))
            queue.insert(self.rng.randint(index + 1, len(queue)), queue[index])
            self.report.frames_duplicated += 1

    def _reorder(self) -> None:
        picked = self._pick_queue()
        if picked is not None and len(picked[1]) >= 2:
            _, queue = picked
            i, j = self.rng.sample(range(len(queue)), 2)
            queue[i], queue[j] = queue[j], queue[i]
            self.report.frames_reordered += 1

    def _corrupt(self) -> None:
        picked = self._pick_queue()
        if picked is not None:
            _, queue = picked
            index = self.rng.randrange(len(queue))
            frame = bytearray(queue[index])
            frame[self.rng.randrange(len(frame))] ^= 1 << self.rng.randrange(8)
            queue[index] = bytes(frame)
            self.report.frames_corrupted += 1

    def _disconnect_any(self) -> None:
        linked = [node for node in self.nodes if node.link is not None]
        if linked:
            node = self.rng.choice(linked)
            # Sometimes a replica stays offline for a long stretch of edits.
            stay = self.rng.choice((0, 0, 10, 60, 250))
            node.offline_until = self._step + stay
            self._drop_link(node, f"cut for {stay} steps")
            self.report.disconnects += 1

    def _reconnect_any(self) -> None:
        waiting = [
            node
            for node in self.nodes
            if node.link is None and node.offline_until <= self._step
        ]
        if waiting:
            self._connect(self.rng.choice(waiting))

    def _restart_hub(self) -> None:
        assert self.hub is not None and self.hub_store is not None
        self._log("hub restarts")
        for node in self.nodes:
            if node.link is not None:
                self._drop_link(node, "hub restart")
        self.report.snapshots_sent += self.hub.statistics().snapshots_sent
        if self.hub_kind == "sqlite":
            self.hub_store.close()
        self._open_hub()
        self.report.hub_restarts += 1

    def _restart_replica(self) -> None:
        node = self.rng.choice(self.nodes)
        crash = self.rng.random() < 0.5
        self._log(f"replica {node.index} {'crashes' if crash else 'restarts'}")
        if crash:
            # A killed process: what the replica holds in memory and has not
            # written behind yet (received ops, acks) is gone; its store stays.
            node.storage.close()
            self._drop_link(node, "replica crash", dead=True)
            self.report.replica_crashes += 1
        else:
            self._drop_link(node, "replica restart")
        self._reopen(node, crashed=crash)
        self.report.replica_restarts += 1

    def _reopen(self, node: _Node, *, crashed: bool = False) -> None:
        self._count_session(node.replica)
        if not crashed:
            node.replica.close()
        if node.path is not None:
            node.storage = self._new_storage(node.replica_id, node.path)
        else:
            assert isinstance(node.storage, _LedgerMemoryStorage)
            node.storage.reopen()
        node.replica = self._new_replica(node.storage)
        self._open_collections(node)

    def _advance(self, seconds: float | None = None) -> None:
        if seconds is None:
            seconds = self.rng.choice((0.5, 1, 1, 2, 4, 6, 16, 31))
        self.clock.advance(seconds)
        now = self.clock.monotonic_ns()
        for node in self.nodes:
            link = node.link
            if link is None or link.hub_closed:
                continue
            silent = now - node.last_rx_ns
            if silent >= HEARTBEAT_TIMEOUT_NS:
                # The manager declares a silent link dead and reconnects.
                self.report.heartbeat_timeouts += 1
                self._drop_link(node, "heartbeat timeout")
                continue
            node.replica.poll()
            if silent >= HEARTBEAT_NS and now - node.last_ping_ns >= HEARTBEAT_NS:
                node.nonce += 1
                node.last_ping_ns = now
                node.replica.outgoing.append(encode(Ping(node.nonce)))
            self._flush(node)

    # Links ------------------------------------------------------------------

    def _connect(self, node: _Node) -> None:
        assert self.hub is not None
        if node.link is not None:
            return
        link = _Link(self._next_conn, node.index)
        self._next_conn += 1
        self.links[link.conn] = link
        node.link = link
        node.last_rx_ns = node.last_ping_ns = self.clock.monotonic_ns()
        self.hub.connect(link.conn)
        node.replica.connected()
        self._log(f"replica {node.index} connects as conn {link.conn}")
        self._flush(node)

    def _drop_link(self, node: _Node, why: str, *, dead: bool = False) -> None:
        assert self.hub is not None
        link = node.link
        if link is None:
            return
        self._log(f"replica {node.index} loses conn {link.conn}: {why}")
        node.link = None
        del self.links[link.conn]
        self.hub.disconnect(link.conn)
        if not dead:
            node.replica.disconnected()
            node.replica.take_outgoing()

    # Healing ------------------------------------------------------------------

    def _heal(self) -> None:
        self._log("healing")
        for node in self.nodes:
            self._drop_link(node, "healing")
            self._connect(node)
        for round_ in range(60):
            self.report.heal_rounds = round_ + 1
            self._drain()
            if self._quiescent():
                return
            # Something waits on a timeout (a lost frame): let time pass.
            self._advance(31)
            for node in self.nodes:
                if node.link is None:
                    self._connect(node)
        self._fail("the system did not become quiescent after healing")

    def _drain(self, limit: int = 1_000_000) -> None:
        for _ in range(limit):
            queues = self._queues()
            if not queues:
                return
            for link, queue in queues:
                if queue:
                    self._deliver(link, queue)
        self._fail("frames kept flowing while draining")

    def _quiescent(self) -> bool:
        assert self.hub_store is not None
        for node in self.nodes:
            session = node.replica.session
            if node.link is None or session.state.value != "ready":
                return False
            if session.outbox_depth() != 0:
                return False
            for name in self.config.collections:
                if not session.is_live(name):
                    return False
                if session.cursor(name) != self.hub_store.head(name):
                    return False
        return True

    # Invariants -------------------------------------------------------------

    def _check(self) -> None:
        assert self.hub_store is not None
        if self.ledger.reused:
            self._fail(f"operation counters used twice: {self.ledger.reused[:5]}")

        # 2. Every local operation is in the hub log once, with its bytes, and
        #    every acknowledgement named the sequence the log holds.
        logged: dict[tuple[int, int], tuple[str, int, int]] = {}
        for name in self.config.collections:
            since = 0
            while True:
                page = self.hub_store.read(name, since, 5_000)
                if not page:
                    break
                for op in page:
                    key = (op.replica, op.counter)
                    if key in logged:
                        self._fail(f"hub log holds {key} twice")
                    logged[key] = (name, op.seq, crc32c(op.data))
                since = page[-1].seq
            self.report.heads[name] = self.hub_store.head(name)
        missing = sorted(set(self.ledger.ops) - set(logged))
        if missing:
            self._fail(
                f"{len(missing)} local operations never reached the hub: {missing[:5]}"
            )
        unknown = sorted(set(logged) - set(self.ledger.ops))
        if unknown:
            self._fail(f"hub log holds operations nobody made: {unknown[:5]}")
        for key, (name, crc) in self.ledger.ops.items():
            if logged[key][0] != name or logged[key][2] != crc:
                self._fail(f"hub log holds other bytes for {key}")
        for key, seq in self.acked.items():
            if logged.get(key, (None, -1))[1] != seq:
                self._fail(f"acknowledged {key} at {seq}, log has {logged.get(key)}")

        # 3. Outboxes are empty (session and store) and cursors at the head.
        for node in self.nodes:
            if node.replica.outbox_depth() or node.storage.outbox_depth():
                self._fail(f"replica {node.index} still has an outbox")

        # 1. Every replica equals every other and a fresh replica from the hub.
        fresh = self._fresh_replica()
        for name in self.config.collections:
            expected = fresh.collection(name)
            want = expected.to_dict()
            for node in self.nodes:
                coll = node.replica.collection(name)
                if coll.doc.oplog_vv != expected.doc.oplog_vv:
                    self._fail(f"replica {node.index} {name} version differs from hub")
                if coll.has_pending():
                    self._fail(f"replica {node.index} {name} holds back updates")
                got = coll.to_dict()
                if got != want:
                    self._fail(
                        f"replica {node.index} {name} differs from the hub's state:\n"
                        f"  replica: {_short(got)}\n  hub:     {_short(want)}"
                    )

            # 4. Nothing applied twice: counters add up to what was made.
            for index in range(len(self.nodes)):
                record_id = f"ctr-{index}"
                made = self.increments.get((name, record_id), 0)
                held = want.get(record_id, {}).get("n")
                if held != made:
                    self._fail(
                        f"{name}/{record_id}.n is {held}, increments sum to {made}"
                    )
        self.report.digest = crc32c(
            repr(
                [
                    sorted(fresh.collection(n).to_dict().items())
                    for n in self.config.collections
                ]
            ).encode()
        )
        fresh.close()

        # 5. A replica reopened from its store holds what it held.
        for node in self.nodes:
            before = {
                n: node.replica.collection(n).to_dict() for n in self.config.collections
            }
            self._drop_link(node, "final reopen")
            self._reopen(node)
            for name, state in before.items():
                if node.replica.collection(name).to_dict() != state:
                    self._fail(f"replica {node.index} {name} changed across a reopen")

    def _fresh_replica(self) -> Replica:
        """A new replica that pulls everything from the hub over a clean link."""
        replica = Replica(Storage.memory(), clock=self.clock)
        for name in self.config.collections:
            replica.collection(name)
        storage = replica.storage
        index = len(self.nodes)
        node = _Node(index, replica.replica_id, storage, replica)
        self.nodes.append(node)
        try:
            self._connect(node)
            self._drain()
            for name in self.config.collections:
                if not replica.session.is_live(name):
                    self._fail(f"a fresh replica never got {name} live")
        finally:
            self._drop_link(node, "done")
            self.nodes.pop()
        return replica

    # Reporting --------------------------------------------------------------

    def _log(self, line: str) -> None:
        if self.trace_enabled:
            self.trace.append(f"[{self._step}] {line}")

    def _fail(self, reason: str, cause: BaseException | None = None) -> None:
        message = (
            f"simulation seed {self.config.seed} failed at step {self._step} "
            f"(hub {self.hub_kind}, replicas {self.replica_kind}): {reason}\n"
            f"replay: {self.config.replay_command()} --trace"
        )
        if self.trace_enabled and self.trace:
            message += "\ntrace (latest last):\n" + "\n".join(self.trace)
        raise SimulationFailure(message) from cause

    def _count_session(self, replica: Replica) -> None:
        stats = replica.session.statistics()
        self.report.resends += stats.resends
        self.report.repulls += stats.repulls

    def _close_all(self) -> None:
        for node in self.nodes:
            self._count_session(node.replica)
            node.replica.close()
        if self.hub is not None:
            self.report.snapshots_sent += self.hub.statistics().snapshots_sent
        if self.hub_store is not None:
            self.hub_store.close()


@contextlib.contextmanager
def _workdir(directory: Path | None) -> Iterator[Path]:
    """``directory`` itself, or a temporary directory removed afterwards."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="leptos-sim-") as tmp:
        yield Path(tmp)


def _short(value: object, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def run_seed(seed: int, **options: Any) -> SimReport:
    """Run one seed (options as in :class:`SimConfig`); raises SimulationFailure."""
    trace = bool(options.pop("trace", False))
    return Simulation(SimConfig(seed, **options), trace=trace).run()


# Command line -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m leptos_sync.sim``: run seeds, print failures, exit 1 on any."""
    parser = argparse.ArgumentParser(
        prog="python -m leptos_sync.sim",
        description="Deterministic simulation of a hub and replicas under faults.",
    )
    parser.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--replicas", type=int, default=SimConfig.replicas)
    parser.add_argument("--steps", type=int, default=SimConfig.steps)
    parser.add_argument("--hub-store", choices=("memory", "sqlite"))
    parser.add_argument("--replica-store", choices=("memory", "sqlite"))
    parser.add_argument("--trace", action="store_true", help="print a trace on failure")
    parser.add_argument("--stop", action="store_true", help="stop at the first failure")
    args = parser.parse_args(argv)

    seeds = (
        [args.seed]
        if args.seed is not None
        else list(range(args.start, args.start + args.seeds))
    )
    failures = 0
    started = time.perf_counter()
    ops = merged = 0
    for seed in seeds:
        try:
            report = run_seed(
                seed,
                replicas=args.replicas,
                steps=args.steps,
                hub_store=args.hub_store,
                replica_store=args.replica_store,
                trace=args.trace,
            )
        except SimulationFailure as exc:
            failures += 1
            print(exc, file=sys.stderr)
            if args.stop:
                break
            continue
        ops += report.local_ops
        merged += report.local_ops_merged
        if args.seed is not None:
            print(report)
    elapsed = time.perf_counter() - started
    print(
        f"{len(seeds)} seeds, {failures} failed, {ops} local operations "
        f"({merged} merged into others before being pushed), {elapsed:.1f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
