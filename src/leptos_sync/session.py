"""The client side of the sync protocol as a state machine (pure: no I/O).

A :class:`ClientSession` takes events in — connected, a decoded message, a local
operation, disconnected — and returns :class:`Effect` values out: messages to send
and state changes for the replica to make durable. It never touches a socket, a
database or a clock, so every ordering of events can be tested step by step.

Per collection it keeps the outbox (operations not yet acknowledged, split into
unsent and in flight), the cursor (the last server sequence number applied) and
whether the collection is *live* (its pull has been answered, so every new
operation of the collection reaches this connection in sequence order).

The rules that keep nothing lost and nothing applied twice, even when frames are
dropped, duplicated or reordered on the way:

* The cursor is the end of the *contiguous* run of sequence numbers this replica
  holds (applied from changes, or its own operations acknowledged). Sequence
  numbers seen above a gap are remembered, never skipped over; a gap triggers a
  new pull from the cursor.
* An acknowledgement removes operations from the outbox only after the server has
  stored them durably (the server acknowledges after its commit). One of our own
  operations coming back in changes counts as acknowledged too.
* Operations not acknowledged within ``ack_timeout`` are pushed again, and so is a
  pull not answered within ``pull_timeout``; on reconnect everything in flight goes
  back to unsent. The server deduplicates by ``(replica, counter)``.
* Changes at or below the cursor, or already held, are skipped.
* Local operations that wait to be sent may be merged into one (see
  ``coalesce``), but only operations never pushed: an operation id the server
  may have seen always carries the same content.

Time enters only through :meth:`ClientSession.poll`, which the driver calls with
the monotonic clock's reading.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ProtocolError, RemoteError
from .protocol import (
    Ack,
    Changes,
    Error,
    Hello,
    Message,
    Op,
    Ping,
    Pong,
    Pull,
    Push,
    RemoteOp,
    Snapshot,
    Welcome,
)

__all__ = [
    "Acked",
    "ApplyRemote",
    "ApplySnapshot",
    "ClientSession",
    "Effect",
    "Live",
    "Pushing",
    "Send",
    "ServerError",
    "SessionState",
    "SessionStatistics",
]

logger = logging.getLogger(__name__)

#: The most update bytes merged into one operation, far below any frame limit.
MERGE_BYTES = 256 * 1024


class SessionState(enum.Enum):
    DISCONNECTED = "disconnected"
    HANDSHAKING = "handshaking"
    READY = "ready"


@dataclass(frozen=True, slots=True)
class Send:
    message: Message


@dataclass(frozen=True, slots=True)
class ApplyRemote:
    """Apply these operations and store them with the new cursor.

    ``own`` holds this replica's own operations coming back from the server.
    Applying them again is usually a no-op (merging is idempotent), but after
    local corruption the collection is refetched and they exist nowhere else.
    """

    collection: str
    ops: tuple[RemoteOp, ...]
    cursor: int
    own: tuple[RemoteOp, ...] = ()


@dataclass(frozen=True, slots=True)
class ApplySnapshot:
    collection: str
    data: bytes
    cursor: int


@dataclass(frozen=True, slots=True)
class Acked:
    """The server stored these operations; drop them and store the cursor."""

    collection: str
    counters: tuple[int, ...]
    cursor: int
    round_trips_ns: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Pushing:
    """These operations are about to be pushed for the first time: record it
    durably before the push leaves (an operation once pushed is never merged
    with others again, even after a restart)."""

    collection: str
    counters: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Live:
    """The collection's pull is answered; it now receives changes as they happen."""

    collection: str


@dataclass(frozen=True, slots=True)
class ServerError:
    error: RemoteError
    fatal: bool


@dataclass(frozen=True, slots=True)
class ServerChanged:
    """The server's store is not the one the cursors refer to; they restart at 0."""

    previous: str | None
    current: str


Effect = (
    Send
    | ApplyRemote
    | ApplySnapshot
    | Acked
    | Live
    | Pushing
    | ServerError
    | ServerChanged
)


@dataclass
class _Batch:
    ops: list[Op]
    sent_at: int
    left: int


@dataclass
class _Collection:
    cursor: int = 0
    live: bool = False
    known: set[int] = field(default_factory=set)
    pull_sent_at: int | None = None
    last_pull_at: int = 0
    unsent: deque[Op] = field(default_factory=deque)
    in_flight: dict[int, Op] = field(default_factory=dict)
    batch_of: dict[int, int] = field(default_factory=dict)
    batches: dict[int, _Batch] = field(default_factory=dict)
    next_batch: int = 0
    #: The highest counter ever pushed (or loaded from the store, which may
    #: have pushed it before a restart); only operations above it are merged.
    pushed_high: int = 0

    @property
    def depth(self) -> int:
        return len(self.unsent) + len(self.in_flight)

    def advance(self) -> None:
        while self.cursor + 1 in self.known:
            self.cursor += 1
            self.known.discard(self.cursor)


@dataclass(frozen=True)
class SessionStatistics:
    state: SessionState
    outbox_depth: int
    in_flight: int
    cursors: dict[str, int]
    live: tuple[str, ...]
    ops_pushed: int
    ops_acked: int
    ops_received: int
    ops_skipped: int
    batches_pushed: int
    resends: int
    repulls: int


class ClientSession:
    """The replica's protocol state, one per replica, across connections.

    Args:
        replica_id: this replica's id, sent in the hello.
        checksums: ask the server to checksum its frames.
        token: an authentication token for the hello.
        max_batch_ops: most operations in one push.
        max_batch_bytes: most operation bytes in one push (one op always fits).
        window: most push batches in flight per collection.
        ack_timeout_ns: push again what is not acknowledged after this long.
        pull_timeout_ns: pull again when a pull is not answered after this long.
        resync_interval_ns: pull a live collection again after this long (0: never).
        coalesce: merges a run of local operations that were never pushed, as
            they are cut into a push: called with the collection and the run,
            it returns what replaces the run, in counter order (the replica
            merges the updates and rewrites its outbox to match). ``None``
            pushes every operation as it is.
    """

    def __init__(
        self,
        replica_id: int,
        *,
        checksums: bool = True,
        token: str | None = None,
        max_batch_ops: int = 512,
        max_batch_bytes: int = 1 << 20,
        window: int = 8,
        ack_timeout_ns: int = 30_000_000_000,
        pull_timeout_ns: int = 30_000_000_000,
        resync_interval_ns: int = 60_000_000_000,
        coalesce: Callable[[str, list[Op]], list[Op]] | None = None,
    ) -> None:
        self.replica_id = replica_id
        self.checksums = checksums
        self.token = token
        self.max_batch_ops = max_batch_ops
        self.max_batch_bytes = max_batch_bytes
        self.window = window
        self.ack_timeout_ns = ack_timeout_ns
        self.pull_timeout_ns = pull_timeout_ns
        self.resync_interval_ns = resync_interval_ns
        self.coalesce = coalesce
        self.state = SessionState.DISCONNECTED
        self.server: str | None = None
        #: The server store the cursors refer to (kept in the replica's store).
        self.known_server: str | None = None
        self.now_ns = 0
        self._colls: dict[str, _Collection] = {}
        self._pushed = self._acked = self._received = self._skipped = 0
        self._batches = self._resends = self._repulls = self._resyncs = 0

    # Setup -------------------------------------------------------------------

    def add_collection(
        self,
        name: str,
        cursor: int = 0,
        outbox: list[Op] | None = None,
        pushed_high: int | None = None,
    ) -> list[Effect]:
        """Start syncing a collection from ``cursor`` with its stored outbox.

        ``pushed_high`` is the highest counter of the outbox that may have been
        pushed before (the store records them, see :class:`Pushing`); by
        default every stored operation may have been.
        """
        if name in self._colls:
            return []
        coll = _Collection(cursor=cursor)
        coll.unsent.extend(sorted(outbox or [], key=lambda op: op.counter))
        if pushed_high is not None:
            coll.pushed_high = pushed_high
        elif coll.unsent:
            coll.pushed_high = coll.unsent[-1].counter
        self._colls[name] = coll
        if self.state is SessionState.READY:
            return [self._pull(name, coll), *self._fill(name, coll)]
        return []

    def cursor(self, name: str) -> int:
        return self._colls[name].cursor

    def is_live(self, name: str) -> bool:
        coll = self._colls.get(name)
        return coll is not None and coll.live

    def collections(self) -> list[str]:
        return list(self._colls)

    def outbox_depth(self, name: str | None = None) -> int:
        if name is not None:
            return self._colls[name].depth
        return sum(c.depth for c in self._colls.values())

    def reset_cursor(self, name: str) -> list[Effect]:
        """Fetch the collection again from the start (after local corruption)."""
        coll = self._colls[name]
        coll.cursor = 0
        coll.known.clear()
        if self.state is SessionState.READY:
            coll.live = False
            return [self._pull(name, coll)]
        return []

    # Events ------------------------------------------------------------------

    def connected(self) -> list[Effect]:
        """The transport is up: introduce ourselves."""
        self.state = SessionState.HANDSHAKING
        return [Send(Hello(self.replica_id, self.checksums, self.token))]

    def reauthenticate(self, token: str | None) -> list[Effect]:
        """A fresh token: hello again on the same connection.

        Handled like a reconnect without the transport going down: in-flight
        operations go back to unsent (the server deduplicates) and every
        collection is pulled again from its cursor after the welcome, so
        nothing the server refused while the token was expired is skipped.
        """
        self.token = token
        if self.state is SessionState.DISCONNECTED:
            return []
        self.disconnected()
        return self.connected()

    def disconnected(self) -> list[Effect]:
        """The transport went down: everything in flight goes back to unsent."""
        self.state = SessionState.DISCONNECTED
        for coll in self._colls.values():
            coll.live = False
            coll.pull_sent_at = None
            self._requeue(coll, list(coll.in_flight.values()))
            # Requeued ops are unsent again; left in flight too, a second
            # disconnect would queue them twice and one push would carry an
            # op twice.
            coll.in_flight.clear()
            coll.batches.clear()
            coll.batch_of.clear()
        return []

    def local_op(self, collection: str, op: Op) -> list[Effect]:
        """A local change was stored; push it when connected."""
        coll = self._colls.get(collection)
        if coll is None:
            self.add_collection(collection)
            coll = self._colls[collection]
        coll.unsent.append(op)
        # Batches are cut in flush(), when the driver is ready to send: local
        # changes made while the link is busy travel together in one push.
        return []

    def flush(self) -> list[Effect]:
        """Cut push batches from what is unsent, as far as the window allows."""
        if self.state is not SessionState.READY:
            return []
        effects: list[Effect] = []
        for name, coll in self._colls.items():
            if coll.unsent and len(coll.batches) < self.window:
                effects.extend(self._fill(name, coll))
        return effects

    def poll(self, now_ns: int) -> list[Effect]:
        """Let time pass: push again unacknowledged batches, pull again."""
        self.now_ns = now_ns
        if self.state is not SessionState.READY:
            return []
        effects: list[Effect] = []
        for name, coll in self._colls.items():
            sent = coll.pull_sent_at
            if (
                not coll.live
                and sent is not None
                and now_ns - sent >= self.pull_timeout_ns
            ):
                self._repulls += 1
                effects.append(self._pull(name, coll))
            elif (
                coll.live
                and self.resync_interval_ns
                and now_ns - coll.last_pull_at >= self.resync_interval_ns
            ):
                # A live collection that lost the last change sent to it (on a
                # link that drops frames) has no gap to notice; asking again from
                # the cursor now and then finds it. Usually the answer is empty.
                coll.last_pull_at = now_ns
                self._resyncs += 1
                effects.append(Send(Pull(name, coll.cursor)))
            stale = [
                batch_id
                for batch_id, batch in coll.batches.items()
                if now_ns - batch.sent_at >= self.ack_timeout_ns
            ]
            for batch_id in stale:
                batch = coll.batches.pop(batch_id)
                pending = [op for op in batch.ops if op.counter in coll.in_flight]
                for op in pending:
                    del coll.in_flight[op.counter]
                    coll.batch_of.pop(op.counter, None)
                self._resends += len(pending)
                self._requeue(coll, pending)
            if stale:
                effects.extend(self._fill(name, coll))
        return effects

    def receive(self, message: Message) -> list[Effect]:
        """Handle one decoded message from the server."""
        if isinstance(message, Changes):
            return self._on_changes(message)
        if isinstance(message, Ack):
            return self._on_ack(message)
        if isinstance(message, Welcome):
            return self._on_welcome(message)
        if isinstance(message, Snapshot):
            return self._on_snapshot(message)
        if isinstance(message, Ping):
            return [Send(Pong(message.nonce))]
        if isinstance(message, Pong):
            return []
        if isinstance(message, Error):
            return [
                ServerError(RemoteError(message.code, message.message), message.fatal)
            ]
        raise ProtocolError(f"unexpected {type(message).__name__} from the server")

    # Handlers ----------------------------------------------------------------

    def _on_welcome(self, message: Welcome) -> list[Effect]:
        if self.state is SessionState.READY:
            return []  # a duplicated welcome
        if self.state is not SessionState.HANDSHAKING:
            raise ProtocolError("welcome outside the handshake")
        self.state = SessionState.READY
        self.server = message.server
        self.max_batch_ops = min(self.max_batch_ops, message.max_ops_per_batch)
        self.max_batch_bytes = min(self.max_batch_bytes, message.max_frame_bytes // 2)
        effects: list[Effect] = []
        if message.server != self.known_server:
            # Sequence numbers belong to one server store. Another store (a
            # different server, or one restored from a backup, which gets a new
            # id) numbers differently: forget the cursors and fetch everything;
            # merging what we already hold changes nothing.
            if self.known_server is not None:
                for coll in self._colls.values():
                    coll.cursor = 0
                    coll.known.clear()
            effects.append(ServerChanged(self.known_server, message.server))
            self.known_server = message.server
        for name, coll in self._colls.items():
            effects.append(self._pull(name, coll))
            effects.extend(self._fill(name, coll))
        return effects

    def _on_changes(self, message: Changes) -> list[Effect]:
        coll = self._require(message.collection)
        fresh: list[RemoteOp] = []
        own: list[int] = []
        own_ops: list[RemoteOp] = []
        for op in message.ops:
            if op.seq <= coll.cursor or op.seq in coll.known:
                self._skipped += 1
                continue
            coll.known.add(op.seq)
            if op.replica == self.replica_id:
                # Our own operation, stored by the server (its ack was lost).
                own.append(op.counter)
                own_ops.append(op)
            else:
                fresh.append(op)
        coll.advance()
        effects: list[Effect] = []
        if fresh or own_ops:
            self._received += len(fresh)
            effects.append(
                ApplyRemote(
                    message.collection, tuple(fresh), coll.cursor, tuple(own_ops)
                )
            )
        if own:
            effects.extend(self._acknowledge(message.collection, coll, own))
        if message.live and not coll.live:
            coll.live = True
            coll.pull_sent_at = None
            effects.append(Live(message.collection))
        if coll.known and coll.live and coll.pull_sent_at is None:
            # Something between the cursor and what we hold never arrived.
            coll.live = False
            self._repulls += 1
            effects.append(self._pull(message.collection, coll))
        return effects

    def _on_snapshot(self, message: Snapshot) -> list[Effect]:
        coll = self._require(message.collection)
        if message.seq == coll.cursor:
            return []
        # A snapshot behind the cursor means the server no longer has what the
        # cursor points at (its store was restored from an older copy): start over.
        coll.cursor = message.seq
        coll.known = {s for s in coll.known if s > message.seq}
        coll.advance()
        return [ApplySnapshot(message.collection, message.data, coll.cursor)]

    def _on_ack(self, message: Ack) -> list[Effect]:
        coll = self._require(message.collection)
        for seq in message.seqs:
            if seq > coll.cursor:
                coll.known.add(seq)
        effects = self._acknowledge(message.collection, coll, list(message.counters))
        if coll.known and coll.live and coll.pull_sent_at is None:
            # The server sent every earlier op of a live collection before this
            # ack, on this connection: a gap below it means one was lost.
            coll.live = False
            self._repulls += 1
            effects.append(self._pull(message.collection, coll))
        return effects

    def _acknowledge(
        self, name: str, coll: _Collection, counters: list[int]
    ) -> list[Effect]:
        done: list[int] = []
        round_trips: list[int] = []
        requeued: set[int] = set()
        for counter in counters:
            if coll.in_flight.pop(counter, None) is None:
                requeued.add(counter)
                continue
            done.append(counter)
            batch_id = coll.batch_of.pop(counter, None)
            batch = coll.batches.get(batch_id) if batch_id is not None else None
            if batch is not None:
                batch.left -= 1
                if batch.left == 0:
                    del coll.batches[batch_id]  # type: ignore[arg-type]
                    round_trips.append(self.now_ns - batch.sent_at)
        if requeued and coll.unsent:
            # Resent after a timeout and not yet pushed again: done all the same.
            kept = deque(op for op in coll.unsent if op.counter not in requeued)
            done.extend(op.counter for op in coll.unsent if op.counter in requeued)
            coll.unsent = kept
        coll.advance()
        self._acked += len(done)
        effects: list[Effect] = [
            Acked(name, tuple(done), coll.cursor, tuple(round_trips))
        ]
        if self.state is SessionState.READY:
            effects.extend(self._fill(name, coll))
        return effects

    def _pull(self, name: str, coll: _Collection) -> Send:
        coll.live = False
        coll.pull_sent_at = self.now_ns
        coll.last_pull_at = self.now_ns
        return Send(Pull(name, coll.cursor))

    def _requeue(self, coll: _Collection, ops: list[Op]) -> None:
        if ops:
            merged = sorted([*ops, *coll.unsent], key=lambda op: op.counter)
            coll.unsent = deque(merged)

    def _fill(self, name: str, coll: _Collection) -> list[Effect]:
        # Keep up to `window` batches in flight so that the link stays busy while
        # the server commits the previous ones.
        effects: list[Effect] = []
        while coll.unsent and len(coll.batches) < self.window:
            batch: list[Op] = []
            size = 0
            merging = self.coalesce is not None
            while coll.unsent and len(batch) < self.max_batch_ops:
                if merging:
                    budget = min(self.max_batch_bytes - size, MERGE_BYTES)
                    merging = self._merge_front(name, coll, budget)
                op = coll.unsent[0]
                if batch and size + len(op.data) > self.max_batch_bytes:
                    break
                batch.append(coll.unsent.popleft())
                size += len(op.data)
            first_push = tuple(o.counter for o in batch if o.counter > coll.pushed_high)
            if first_push:
                coll.pushed_high = first_push[-1]
                effects.append(Pushing(name, first_push))
            batch_id = coll.next_batch
            coll.next_batch += 1
            for op in batch:
                coll.in_flight[op.counter] = op
                coll.batch_of[op.counter] = batch_id
            coll.batches[batch_id] = _Batch(batch, self.now_ns, len(batch))
            self._pushed += len(batch)
            self._batches += 1
            effects.append(Send(Push(name, tuple(batch))))
        return effects

    def _merge_front(self, name: str, coll: _Collection, budget: int) -> bool:
        """Merge the never-pushed operations at the front of ``unsent``.

        Takes as many as fit in ``budget`` bytes (at least two) and puts back
        what ``coalesce`` returns. Returns whether merging is still worth trying
        for the rest of this batch.
        """
        unsent = coll.unsent
        if len(unsent) < 2 or unsent[0].counter <= coll.pushed_high:
            # Nothing waits with it, or it may have been pushed (requeued).
            return len(unsent) >= 2
        run: list[Op] = []
        size = 0
        for op in unsent:
            if run and size + len(op.data) > budget:
                break
            run.append(op)
            size += len(op.data)
        if len(run) < 2:
            # The first alone fills the budget: it goes as it is, and those
            # after it may still merge.
            return True
        assert self.coalesce is not None
        merged = self.coalesce(name, run)
        for _ in run:
            unsent.popleft()
        unsent.extendleft(reversed(merged))
        return len(merged) < len(run)

    def _require(self, name: str) -> _Collection:
        coll = self._colls.get(name)
        if coll is None:
            raise ProtocolError(f"message for collection {name!r} never pulled")
        return coll

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            state=self.state,
            outbox_depth=self.outbox_depth(),
            in_flight=sum(len(c.in_flight) for c in self._colls.values()),
            cursors={name: c.cursor for name, c in self._colls.items()},
            live=tuple(name for name, c in self._colls.items() if c.live),
            ops_pushed=self._pushed,
            ops_acked=self._acked,
            ops_received=self._received,
            ops_skipped=self._skipped,
            batches_pushed=self._batches,
            resends=self._resends,
            repulls=self._repulls,
        )
