"""The server side of the sync protocol: the hub (no sockets, no event loop).

The hub takes frames from connections and returns frames for connections. The
ASGI server and the in-memory transport pump bytes through it; the simulation
drives it directly. Its only dependency is a :class:`~leptos_sync.hubstore.HubStore`.

For each push it deduplicates by operation id, assigns sequence numbers in the
store, **commits before acknowledging**, then fans the new operations out to every
other connection that pulled the collection. A pull is answered with the log after
the client's cursor (preceded by a snapshot when the client is far behind and a
snapshot exists), and the last answer is marked ``live``: from then on the
connection receives every new operation of that collection in sequence order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .auth import Action, Authenticator, Principal
from .crdt import ExportMode, LoroDoc, call_loro
from .e2e import is_encrypted
from .errors import (
    AccessError,
    ConflictingOperationError,
    IntegrityError,
    MalformedMessageError,
    MessageTooLargeError,
    ProtocolError,
    RateLimitedError,
    StorageError,
    SyncError,
    UnauthorizedError,
)
from .hubstore import HubStore
from .protocol import (
    DEFAULT_LIMITS,
    Ack,
    Changes,
    Error,
    Hello,
    Limits,
    Message,
    Ping,
    Pong,
    Pull,
    Push,
    RemoteOp,
    Snapshot,
    Status,
    Welcome,
    decode,
    encode,
)
from .ratelimit import RateLimit

__all__ = ["Hub", "HubStatistics", "Outgoing"]

logger = logging.getLogger(__name__)

ConnId = int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """Frames for one connection; ``close`` asks the driver to close it after."""

    conn: ConnId
    frames: tuple[bytes, ...]
    close: bool = False


@dataclass
class _Conn:
    replica: int | None = None
    checksums: bool = True
    subscriptions: set[str] = field(default_factory=set)
    status: dict[str, float] = field(default_factory=dict)
    principal: Principal | None = None


@dataclass(frozen=True)
class HubStatistics:
    connections: int
    handshaken: int
    subscriptions: dict[str, int]
    ops_stored: int
    ops_duplicate: int
    ops_fanned_out: int
    pushes: int
    pulls: int
    snapshots_sent: int
    errors: int
    heads: dict[str, int]
    client_status: dict[int, dict[str, float]]
    rejected: dict[str, int] = field(default_factory=dict)


class Hub:
    """Routes operations between replicas through a durable log.

    Args:
        store: where the log lives.
        limits: frame and batch limits enforced on every incoming frame.
        snapshot_after: a client this many operations behind gets a snapshot
            first (when the collection has at least that many operations).
        authenticator: checks every hello's token and every push and pull
            (see :mod:`leptos_sync.auth`); ``None`` serves everyone.
        rate_limit: per-connection frame and operation rates.
        on_reject: called with the reason (``unauthorized``, ``forbidden``,
            ``rate_limited``, ...) each time something is refused.
    """

    def __init__(
        self,
        store: HubStore,
        *,
        limits: Limits = DEFAULT_LIMITS,
        snapshot_after: int = 20_000,
        page_ops: int = 2_000,
        authenticator: Authenticator | None = None,
        rate_limit: RateLimit | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.snapshot_after = snapshot_after
        self.page_ops = min(page_ops, limits.max_ops_per_batch)
        self._conns: dict[ConnId, _Conn] = {}
        self._subscribers: dict[str, set[ConnId]] = {}
        self._stored = self._dupes = self._fanned = 0
        self._pushes = self._pulls = self._snapshots = self._errors = 0
        self.authenticator = authenticator
        self.rate_limit = rate_limit
        self.on_reject = on_reject
        self._rejected: dict[str, int] = {}

    # Connections -------------------------------------------------------------

    def connect(self, conn: ConnId) -> None:
        self._conns[conn] = _Conn()

    def disconnect(self, conn: ConnId) -> None:
        state = self._conns.pop(conn, None)
        if state is None:
            return
        if self.rate_limit is not None:
            self.rate_limit.forget(conn)
        for name in state.subscriptions:
            subs = self._subscribers.get(name)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self._subscribers[name]

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    # Frames ------------------------------------------------------------------

    def handle(self, conn: ConnId, frame: bytes) -> list[Outgoing]:
        """Process one frame from ``conn``; returns frames to send.

        A frame that fails to decode or violates the protocol is answered with an
        error and the connection is closed; no other connection is affected.
        """
        state = self._conns.get(conn)
        if state is None:
            return []
        try:
            message = decode(frame, self.limits)
            self._admit(conn, message)
            return self._dispatch(conn, state, message)
        except AccessError as exc:
            # Expected trouble (a client without rights), not a server fault.
            self._reject(exc.code)
            logger.info("refused connection %s: %s", conn, exc)
            # Refused before authenticating (a bad hello): close in any case.
            close = exc.fatal or state.principal is None
            return [self._error(conn, state, exc.code, str(exc), close=close)]
        except ConflictingOperationError as exc:
            # Not a malformed frame: another store writes under this replica id.
            self._errors += 1
            self._reject(exc.code)
            logger.warning("refused a push on connection %s: %s", conn, exc)
            return [self._error(conn, state, exc.code, str(exc), close=True)]
        except ProtocolError as exc:
            self._errors += 1
            if isinstance(exc, MessageTooLargeError):
                self._reject(exc.code)
            logger.info("closing connection %s: %s", conn, exc)
            return [self._error(conn, state, exc.code, str(exc), close=True)]
        except IntegrityError as exc:
            self._errors += 1
            logger.error("integrity failure while serving connection %s: %s", conn, exc)
            return [self._error(conn, state, "integrity", str(exc), close=True)]
        except StorageError as exc:
            self._errors += 1
            logger.error("store failure while serving connection %s: %s", conn, exc)
            return [self._error(conn, state, "storage", str(exc), close=True)]

    def _dispatch(self, conn: ConnId, state: _Conn, message: Message) -> list[Outgoing]:
        if isinstance(message, Hello):
            return self._on_hello(conn, state, message)
        if state.replica is None:
            raise ProtocolError(f"{type(message).__name__} before hello")
        if isinstance(message, Push):
            return self._on_push(conn, state, message)
        if isinstance(message, Pull):
            return self._on_pull(conn, state, message)
        if isinstance(message, Ping):
            return [self._out(conn, state, Pong(message.nonce))]
        if isinstance(message, Pong):
            return []
        if isinstance(message, Status):
            state.status = dict(message.figures)
            return []
        if isinstance(message, Error):
            logger.info(
                "connection %s reported %s: %s", conn, message.code, message.message
            )
            return []
        raise ProtocolError(f"clients do not send {type(message).__name__}")

    def _on_hello(self, conn: ConnId, state: _Conn, message: Hello) -> list[Outgoing]:
        if state.replica is not None and state.replica != message.replica:
            raise ProtocolError("second hello on one connection, from another replica")
        if self.authenticator is not None:
            # A second hello from the same replica carries a refreshed token:
            # authenticate again and replace the claims.
            state.principal = None
            state.principal = self.authenticator.authenticate(
                message.token, message.replica
            )
        state.replica = message.replica
        state.checksums = message.checksums
        welcome = Welcome(
            self.store.server_id,
            self.limits.max_frame_bytes,
            self.limits.max_ops_per_batch,
        )
        return [self._out(conn, state, welcome)]

    def _on_push(self, conn: ConnId, state: _Conn, message: Push) -> list[Outgoing]:
        assert state.replica is not None
        self._authorize(state, "write", message.collection)
        self._pushes += 1
        if not is_encrypted(message.collection):
            for op in message.ops:
                _check_update(op.counter, op.data)
        else:
            # End-to-end encrypted collections hold ciphertext the hub cannot
            # read (the receiving replicas check it); plaintext is refused, so
            # that a replica without the key cannot leak into the log.
            for op in message.ops:
                _check_sealed(op.counter, op.data)
        placed = self.store.append(message.collection, state.replica, message.ops)
        fresh: list[RemoteOp] = []
        for op, where in zip(message.ops, placed, strict=True):
            if where.new:
                fresh.append(
                    RemoteOp(where.seq, state.replica, op.counter, op.hlc, op.data)
                )
        self._stored += len(fresh)
        self._dupes += len(placed) - len(fresh)

        # Acknowledge only now: the store has committed.
        ack = Ack(
            message.collection,
            tuple(op.counter for op in message.ops),
            tuple(where.seq for where in placed),
        )
        out = [self._out(conn, state, ack)]
        if fresh:
            targets = [
                c for c in self._subscribers.get(message.collection, ()) if c != conn
            ]
            if self.authenticator is not None:
                targets = self._readers(targets, message.collection, out)
            out.extend(
                self._broadcast(
                    targets, Changes(message.collection, tuple(fresh), True)
                )
            )
            self._fanned += len(fresh) * len(targets)
        return out

    def _on_pull(self, conn: ConnId, state: _Conn, message: Pull) -> list[Outgoing]:
        self._authorize(state, "read", message.collection)
        self._pulls += 1
        name = message.collection
        since = message.since
        head = self.store.head(name)
        frames: list[bytes] = []
        if since > head:
            # The client has seen more than this store holds: the store was
            # replaced by an older one. An empty snapshot at 0 tells the client to
            # forget its cursor; it then gets the whole log (merging is idempotent).
            logger.warning(
                "connection %s pulled %r from %d, past the head %d; resetting it",
                conn,
                name,
                since,
                head,
            )
            frames.append(self._encode(state, Snapshot(name, 0, b"")))
            since = 0
        # Every frame stays within half the frame limit (the client's is the
        # same by default): a page holds at most ``page_ops`` operations and at
        # most that many bytes of them, whatever their size.
        budget = self.limits.max_frame_bytes // 2
        if head - since >= self.snapshot_after:
            snap = self._snapshot_for(name, head)
            if snap is not None and snap[0] > since and len(snap[1]) <= budget:
                frames.append(self._encode(state, Snapshot(name, snap[0], snap[1])))
                self._snapshots += 1
                since = snap[0]
        while True:
            page = self.store.read(name, since, self.page_ops)
            last_page = len(page) < self.page_ops
            if page:
                since = page[-1].seq
            chunks = _by_bytes(page, budget)
            for chunk in chunks[:-1]:
                frames.append(self._encode(state, Changes(name, chunk, False)))
            if last_page or not page:
                frames.append(self._encode(state, Changes(name, chunks[-1], True)))
                break
            frames.append(self._encode(state, Changes(name, chunks[-1], False)))
        state.subscriptions.add(name)
        self._subscribers.setdefault(name, set()).add(conn)
        return [Outgoing(conn, tuple(frames))]

    def _snapshot_for(self, name: str, head: int) -> tuple[int, bytes] | None:
        if is_encrypted(name):
            return None
        stored = self.store.snapshot(name)
        if stored is not None and head - stored[0] < self.snapshot_after:
            return stored
        return self.compact(name)

    def compact(self, name: str) -> tuple[int, bytes] | None:
        """Materialise the collection into a snapshot at its current head.

        End-to-end encrypted collections are never compacted: the hub cannot
        read them.
        """
        if is_encrypted(name):
            return None
        doc = LoroDoc()
        stored = self.store.snapshot(name)
        since = 0
        if stored is not None:
            call_loro(doc.import_, stored[1])
            since = stored[0]
        while True:
            page = self.store.read(name, since, 10_000)
            if not page:
                break
            call_loro(doc.import_batch, [op.data for op in page])
            since = page[-1].seq
        if since == 0:
            return None
        if doc.export_pending_updates() is not None:
            # The log is in arrival order, not causal order: an op can be stored
            # before one it depends on. A snapshot would leave it out while its
            # sequence number counts as covered, so the client would never get
            # it. Serve the log instead until the missing op arrives.
            return None
        data = bytes(doc.export(ExportMode.Snapshot()))
        self.store.save_snapshot(name, since, data)
        return since, data

    # Access ------------------------------------------------------------------

    def _admit(self, conn: ConnId, message: Message) -> None:
        if self.rate_limit is None:
            return
        ops = len(message.ops) if isinstance(message, Push) else 0
        hit = self.rate_limit.admit(conn, ops)
        if hit is not None:
            raise RateLimitedError(f"too many {hit} per second on this connection")

    def _authorize(self, state: _Conn, action: Action, collection: str) -> None:
        if self.authenticator is None:
            return
        if state.principal is None:
            raise UnauthorizedError("not authenticated")
        self.authenticator.authorize(state.principal, action, collection)

    def _readers(
        self, targets: list[ConnId], collection: str, out: list[Outgoing]
    ) -> list[ConnId]:
        # Rights are checked on delivery too, so that an expired or revoked
        # token stops the flow at once. A refused subscriber is unsubscribed
        # and told why; after refreshing its token it pulls from its cursor.
        allowed = []
        for target in targets:
            state = self._conns.get(target)
            if state is None:
                continue
            try:
                self._authorize(state, "read", collection)
            except AccessError as exc:
                self._reject(exc.code)
                state.subscriptions.discard(collection)
                self._subscribers.get(collection, set()).discard(target)
                error = self._error(target, state, exc.code, str(exc), close=exc.fatal)
                out.append(error)
                continue
            allowed.append(target)
        return allowed

    def _reject(self, code: str) -> None:
        reason = code.replace("-", "_")
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        if self.on_reject is not None:
            self.on_reject(reason)

    # Output ------------------------------------------------------------------

    def _encode(self, state: _Conn, message: Message) -> bytes:
        return encode(message, checksum=state.checksums)

    def _out(self, conn: ConnId, state: _Conn, message: Message) -> Outgoing:
        return Outgoing(conn, (self._encode(state, message),))

    def _broadcast(self, targets: Iterable[ConnId], message: Message) -> list[Outgoing]:
        # Encode once per checksum setting, not once per connection.
        cache: dict[bool, bytes] = {}
        out = []
        for target in targets:
            state = self._conns.get(target)
            if state is None:
                continue
            frame = cache.get(state.checksums)
            if frame is None:
                frame = cache[state.checksums] = encode(
                    message, checksum=state.checksums
                )
            out.append(Outgoing(target, (frame,)))
        return out

    def _error(
        self, conn: ConnId, state: _Conn, code: str, text: str, *, close: bool
    ) -> Outgoing:
        frame = encode(Error(code, text[:1000], close), checksum=state.checksums)
        return Outgoing(conn, (frame,), close=close)

    def error_frame(self, code: str, text: str) -> bytes:
        """An error frame for a connection the hub never saw (e.g. over limits)."""
        return encode(Error(code, text[:1000], True))

    def statistics(self) -> HubStatistics:
        heads = {name: self.store.head(name) for name in self.store.collections()}
        return HubStatistics(
            connections=len(self._conns),
            handshaken=sum(1 for c in self._conns.values() if c.replica is not None),
            subscriptions={name: len(s) for name, s in self._subscribers.items()},
            ops_stored=self._stored,
            ops_duplicate=self._dupes,
            ops_fanned_out=self._fanned,
            pushes=self._pushes,
            pulls=self._pulls,
            snapshots_sent=self._snapshots,
            errors=self._errors,
            heads=heads,
            client_status={
                c.replica: dict(c.status)
                for c in self._conns.values()
                if c.replica is not None and c.status
            },
            rejected=dict(self._rejected),
        )


def _check_sealed(counter: int, data: bytes) -> None:
    if data.startswith(_LORO_MAGIC):
        raise MalformedMessageError(
            f"op {counter} of an end-to-end encrypted collection is plaintext"
        )


#: Every Loro update and snapshot starts with these bytes; ciphertext starts
#: with a random nonce.
_LORO_MAGIC = b"loro"


def _check_update(counter: int, data: bytes) -> None:
    # Stored bytes are served to every replica: one that is not a CRDT update
    # would make every pull fail, so it is refused before it reaches the log.
    try:
        call_loro(LoroDoc.decode_import_blob_meta, data, True)
    except IntegrityError as exc:
        raise MalformedMessageError(
            f"op {counter} does not hold a CRDT update: {exc}"
        ) from exc


def hub_error_types() -> tuple[type[SyncError], ...]:
    """The errors :meth:`Hub.handle` turns into error frames."""
    return (ProtocolError, IntegrityError, StorageError)


def _by_bytes(ops: list[RemoteOp], budget: int) -> list[tuple[RemoteOp, ...]]:
    """``ops`` cut into consecutive runs of at most ``budget`` bytes of data
    (at least one operation each); one empty run for no operations."""
    runs: list[tuple[RemoteOp, ...]] = []
    run: list[RemoteOp] = []
    size = 0
    for op in ops:
        if run and size + len(op.data) > budget:
            runs.append(tuple(run))
            run, size = [], 0
        run.append(op)
        size += len(op.data)
    runs.append(tuple(run))
    return runs
