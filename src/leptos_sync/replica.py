"""A replica: collections, their durable store and the client session, together.

:class:`Replica` is synchronous and does no network I/O: the async manager (or the
deterministic simulation) feeds it frames and collects the frames it wants sent.
A local change flows like this, all before the editing call returns:

1. the collection commits the change in Loro and hands over the update bytes;
2. the replica gives it the next operation counter and writes update and outbox
   entry to the store in one transaction;
3. the session queues it and, when the collection is live, emits a push frame,
   which waits in :attr:`Replica.outgoing` for the driver to send.

Local changes that pile up while the link is busy or down travel as one
operation: when the session cuts a push, a run of changes never pushed before is
merged into one update (Loro exports the run's range of this replica's history),
and the outbox entries are replaced by one in the same store transaction, so a
resend after a crash carries exactly what was sent before.

Frames from the server are decoded, validated and applied the same way: remote
operations are imported into the document and stored with the advanced cursor in
one transaction; acknowledgements delete outbox entries with the cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .clock import Clock, HLCTimestamp, HybridLogicalClock, SystemClock
from .crdt import Change, CollectionDoc, LocalChange
from .e2e import OpCipher, is_encrypted
from .errors import (
    ClosedError,
    ConfigError,
    IntegrityError,
    InvalidIdError,
    RemoteError,
)
from .protocol import DEFAULT_LIMITS, Limits, Op, Push, RemoteOp, decode, encode
from .session import (
    Acked,
    ApplyRemote,
    ApplySnapshot,
    ClientSession,
    Effect,
    Live,
    Pushing,
    Send,
    ServerChanged,
    ServerError,
    SessionStatistics,
)
from .storage import Quarantined, Storage, StoredState

__all__ = ["Replica", "ReplicaStatistics"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaStatistics:
    replica_id: int
    collections: tuple[str, ...]
    outbox_depth: int
    local_ops: int
    #: Local changes merged into a later one before being pushed.
    local_ops_merged: int
    remote_ops_applied: int
    bytes_sent: int
    bytes_received: int
    frames_sent: int
    frames_received: int
    integrity_failures: int
    #: Received timestamps not merged into the clock for being too far ahead.
    timestamps_too_far_ahead: int
    quarantined: int
    snapshots_applied: int
    session: SessionStatistics


class Replica:
    """One local replica of a set of collections.

    Args:
        storage: the durable local store.
        clock: the time source for the hybrid logical clock.
        checksums: put a CRC32C on every frame and require it on received frames.
        compact_after: write a snapshot once a collection's log holds this many
            updates, so that reopening stays fast.
        merge_waiting: merge local changes that wait to be sent into one
            operation (see above); off, every change is pushed as it is.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Clock | None = None,
        checksums: bool = True,
        token: str | None = None,
        limits: Limits = DEFAULT_LIMITS,
        compact_after: int = 50_000,
        max_batch_ops: int = 512,
        merge_waiting: bool = True,
    ) -> None:
        self.storage = storage
        self.clock = clock if clock is not None else SystemClock()
        self.checksums = checksums
        self.limits = limits
        self.compact_after = compact_after
        #: The largest operation pushed; a larger local transaction goes in parts.
        self._op_limit = min(limits.max_op_bytes, limits.max_frame_bytes // 2)
        state: StoredState = storage.load()
        self.replica_id = state.replica_id
        self.hlc = HybridLogicalClock(
            self.clock, self.replica_id, HLCTimestamp.unpack(state.hlc, self.replica_id)
        )
        self._counter = state.last_counter
        self.session = ClientSession(
            self.replica_id,
            checksums=checksums,
            token=token,
            max_batch_ops=max_batch_ops,
            coalesce=self._merge_waiting if merge_waiting else None,
        )
        self.session.known_server = self._known_server(storage)
        self._stored = state
        self._collections: dict[str, CollectionDoc] = {}
        self._log_lengths: dict[str, int] = {}
        self._folded: dict[str, int] = {}
        self.outgoing: list[bytes] = []
        self.on_outgoing: Callable[[], None] | None = None
        self.on_change: Callable[[list[Change]], None] | None = None
        self.on_local_op: Callable[[], None] | None = None
        self.on_effect: Callable[[Effect], None] | None = None
        self.quarantined: list[Quarantined] = list(state.quarantined)
        self._local_ops = self._remote_ops = self._integrity_failures = 0
        self._snapshots = 0
        self.bytes_sent = self.bytes_received = 0
        self.frames_sent = self.frames_received = 0
        self._closed = False
        self._track_changes = False
        self.validate_metadata = False
        self._hlc_seen: dict[int, tuple[int, int]] = {}
        self._metadata_violations = 0
        self._pending_remote: dict[str, tuple[list[bytes], int]] = {}
        self._pending_acks: dict[str, tuple[list[int], int]] = {}
        self.last_error: RemoteError | None = None
        self._ciphers: dict[str, OpCipher] = {}
        # Counters of local operations adopted from another document
        # (apply_update): their updates are not this replica's own history.
        self._adopted: set[int] = set()
        self._batch_depth = 0
        self._batch_owner: asyncio.Task[Any] | None = None
        self._skewed: set[int] = set()
        self._merged = 0
        for item in self.quarantined:
            self._integrity_failures += 1
            logger.warning(
                "replica %x: %s of %r failed its checksum; refetching the collection",
                self.replica_id,
                item.source,
                item.collection,
            )
        # Collections that exist in the store are opened eagerly so that their
        # outboxes are pushed even if the application has not asked for them yet
        # (encrypted ones once their key is given: encrypt_collection).
        for name in self._stored_names():
            if not is_encrypted(name):
                self.collection(name)

    # Collections -------------------------------------------------------------

    def collection(self, name: str) -> CollectionDoc:
        """The collection ``name``, loaded from the store on first use."""
        if self._closed:
            raise ClosedError("the replica is closed")
        coll = self._collections.get(name)
        if coll is not None:
            return coll
        if not isinstance(name, str) or not name or len(name) > 256:
            raise InvalidIdError(
                "collection names are non-empty strings of at most 256 "
                f"characters, got {name!r}"
            )
        if is_encrypted(name) and name not in self._ciphers:
            # Without the key its operations could not be read, and this
            # replica's own would reach the server in plaintext.
            raise ConfigError(
                "encryption",
                f"collection {name!r} is end-to-end encrypted: give its "
                "passphrase (SyncConfig.encryption) to use it",
            )
        coll = CollectionDoc(
            name,
            self.hlc,
            functools.partial(self._local, name),
        )
        coll.max_update_bytes = self._op_limit
        if self._batch_depth:
            self._defer(coll)
        stored = self._stored.collections.get(name)
        outbox = [op for op in self._stored.outbox if op.collection == name]
        cursor = 0
        if stored is not None:
            blobs = ([stored.snapshot] if stored.snapshot else []) + stored.log
            cursor = stored.cursor
            if blobs:
                try:
                    coll.import_updates(blobs)
                except IntegrityError:
                    # The blobs passed their checksums but the engine refused
                    # them: treat like corruption and refetch everything.
                    self._integrity_failures += 1
                    logger.warning(
                        "replica %x: stored %r unreadable; refetching",
                        self.replica_id,
                        name,
                    )
                    cursor = 0
                    self.storage.reset_cursor(name)
            self._log_lengths[name] = len(stored.log)
        if outbox:
            # Unacknowledged local ops live in the outbox until acknowledged.
            coll.import_updates([op.data for op in outbox])
        if self._track_changes:
            coll.track_remote_changes()
        self._collections[name] = coll
        ops = [Op(op.counter, op.hlc, op.data) for op in outbox]
        # Entries never pushed may still be merged, those adopted from another
        # document (apply_update) excepted, as before the restart.
        pushed_high = max((op.counter for op in outbox if op.pushed), default=0)
        for op in outbox:
            if not op.pushed and coll.own_range(op.data) is None:
                self._adopted.add(op.counter)
        self._run(self.session.add_collection(name, cursor, ops, pushed_high))
        return coll

    def collections(self) -> list[str]:
        return sorted(self._collections)

    def encrypt_collection(self, name: str, cipher: OpCipher) -> None:
        """Encrypt the operations of ``name`` end to end (see :mod:`.e2e`).

        Call it before the collection syncs: operations leave sealed, and
        arriving ones are opened (a tampered one is refused and counted).

        Raises:
            ConfigError: the name lacks the ``e2e:`` prefix the hub relies on.
        """
        if not is_encrypted(name):
            raise ConfigError(
                "encryption", f"collection {name!r} must start with 'e2e:'"
            )
        self._ciphers[name] = cipher
        if name in self._stored_names():
            self.collection(name)

    def _known_server(self, storage: Storage) -> str | None:
        """The server store the cursors refer to, as recorded.

        A damaged record (it is not a server id) only means the cursors cannot
        be trusted: they restart at the next welcome and the collections are
        fetched again (merging what is held changes nothing).
        """
        known = storage.load_state("server_id")
        if known is None:
            return None
        text = known.decode("ascii", "replace")
        if text.isascii() and text.isalnum():
            return text
        logger.warning(
            "replica %x: the recorded server id is damaged; the cursors restart "
            "at the next connection",
            self.replica_id,
        )
        return "damaged"

    def _stored_names(self) -> list[str]:
        state = self._stored
        return sorted(set(state.collections) | {op.collection for op in state.outbox})

    def reauthenticate(self, token: str | None) -> None:
        """Send a new hello with a fresh ``token`` on the open connection.

        The session resumes from its cursors: what was in flight is pushed
        again (the server deduplicates) and every collection is pulled again.
        """
        self.session.now_ns = self.clock.monotonic_ns()
        self._run(self.session.reauthenticate(token))

    def track_changes(self) -> None:
        """Report which records remote operations changed (costs a little per op).

        Without it, remote changes are applied but not itemised in change events.
        """
        self._track_changes = True
        for coll in self._collections.values():
            coll.track_remote_changes()

    # Local changes -----------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Commit the changes made inside the block to the store together.

        Each change stays its own local transaction with its own metadata; the
        store commits once at the end, and each collection's changes become one
        outbox operation (one Loro update for the batch's range of history),
        so a burst of edits costs little more than the edits themselves. The
        changes are durable when the block ends, and change events for them
        arrive then. If the block raises, what it changed is still stored and
        synced (Loro has no rollback), and the exception goes on.
        """
        if self._closed:
            raise ClosedError("the replica is closed")
        self._batch_depth += 1
        outer = self._batch_depth == 1
        if outer:
            self._batch_owner = _current_task()
        failure: BaseException | None = None
        with self.storage.batch():
            if outer:
                for coll in self._collections.values():
                    self._defer(coll)
            try:
                yield
            except BaseException as exc:
                failure = exc
            finally:
                self._batch_depth -= 1
                if outer and not self._closed:
                    self._end_batch()
        if failure is not None:
            raise failure

    def in_own_batch(self) -> bool:
        """Whether the running asyncio task has a batch of this replica open."""
        owner = self._batch_owner
        return (
            bool(self._batch_depth) and owner is not None and (_current_task() is owner)
        )

    def _owns_batch(self) -> bool:
        # Changes from the task that opened the batch (or from anywhere, for a
        # batch opened outside an event loop) are deferred; another task's
        # change is a change of its own, stored before its call returns.
        owner = self._batch_owner
        return owner is None or _current_task() is owner

    def _defer(self, coll: CollectionDoc) -> None:
        coll.defer_check = self._owns_batch
        coll.defer_updates()

    def _end_batch(self) -> None:
        for coll in self._collections.values():
            coll.end_deferral()
            coll.defer_check = None
        self._batch_owner = None

    def _local(self, name: str, change: LocalChange) -> None:
        update, hlc = change.update, change.hlc
        self._local_ops += change.commits
        self._merged += change.commits - 1
        # Another task's change while a batch is open is stored now (with what
        # the batch wrote before it), not when the batch ends.
        store_now = bool(self._batch_depth) and not self._owns_batch()
        if len(update) > self._op_limit and change.own:
            # Too large for one operation: consecutive parts, each its own.
            parts = self._collections[name].split_local_update(update, self._op_limit)
            for index, part in enumerate(parts):
                self._append_local(name, part, hlc if index == 0 else self.hlc.now())
        else:
            self._append_local(name, update, hlc)
            if not change.own:
                self._adopted.add(self._counter)
        if store_now:
            self.storage.commit_open_batch()
        if self.on_local_op is not None:
            self.on_local_op()
        if self.on_change is not None and change.records:
            self.on_change(
                [
                    Change(name, rid, kind, "local")
                    for rid, kind in change.records.items()
                ]
            )

    def _append_local(self, name: str, update: bytes, hlc: HLCTimestamp) -> None:
        self._counter += 1
        counter = self._counter
        packed = hlc.pack()
        self.storage.append_local(name, counter, packed, update)
        self._bump_log(name, 1)
        self._run(self.session.local_op(name, Op(counter, packed, update)))

    def _merge_waiting(self, name: str, ops: list[Op]) -> list[Op]:
        """Merge runs of this replica's own never-pushed operations (see the
        session's ``coalesce``): one update and one outbox entry per run."""
        coll = self._collections[name]
        out: list[Op] = []
        run: list[Op] = []
        for op in [*ops, None]:
            if op is not None and op.counter not in self._adopted:
                run.append(op)
                continue
            if len(run) > 1:
                data = coll.merge_local_updates(run[0].data, run[-1].data)
                if data is not None:
                    last = run[-1]
                    counters = [o.counter for o in run]
                    self.storage.merge_outbox(name, counters, last.hlc, data)
                    self._merged += len(run) - 1
                    run = [Op(last.counter, last.hlc, data)]
            out.extend(run)
            run = []
            if op is not None:
                out.append(op)
        return out

    def _bump_log(self, name: str, count: int) -> None:
        length = self._log_lengths.get(name, 0) + count
        self._log_lengths[name] = length
        # The log is folded once it holds as many updates as the snapshot already
        # covers (and at least ``compact_after``): the snapshot then doubles each
        # time, so however long a collection grows, compaction re-encodes each
        # update a bounded number of times. After a reopen the count restarts
        # from the first fold.
        if length >= max(self.compact_after, self._folded.get(name, 0)):
            self.compact(name)

    def compact(self, name: str) -> None:
        """Fold the collection's log into one snapshot in the store."""
        coll = self._collections[name]
        self.persist()
        if coll.has_pending():
            # A snapshot leaves out updates still waiting for their dependencies,
            # and saving it drops the log rows that hold them: wait until the
            # missing updates arrive.
            return
        self.storage.save_snapshot(
            name, coll.export_snapshot(), self.session.cursor(name)
        )
        self._folded[name] = self._folded.get(name, 0) + self._log_lengths.get(name, 0)
        self._log_lengths[name] = 0

    # Network events ----------------------------------------------------------

    def connected(self) -> None:
        self.session.now_ns = self.clock.monotonic_ns()
        self._run(self.session.connected())

    def disconnected(self) -> None:
        self._run(self.session.disconnected())

    def poll(self) -> None:
        """Let the session resend what timed out (call every second or so)."""
        self._run(self.session.poll(self.clock.monotonic_ns()))

    def receive(self, frame: bytes) -> None:
        """Handle one frame from the server.

        Raises:
            ProtocolError: the frame is invalid; the session is unchanged and the
                driver should drop the connection.
        """
        self.frames_received += 1
        self.bytes_received += len(frame)
        message = decode(frame, self.limits, require_checksum=self.checksums)
        self.session.now_ns = self.clock.monotonic_ns()
        self._run(self.session.receive(message))

    def flush(self) -> None:
        """Turn unsent local operations into push frames (window permitting)."""
        self.session.now_ns = self.clock.monotonic_ns()
        self._run(self.session.flush())

    def take_outgoing(self) -> list[bytes]:
        """Every frame waiting to be sent, local operations included.

        Also writes behind what was received since the last call (see
        :meth:`persist`).
        """
        self.flush()
        self.persist()
        frames, self.outgoing = self.outgoing, []
        return frames

    # Effects -----------------------------------------------------------------

    def _run(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                message = effect.message
                if isinstance(message, Push) and message.collection in self._ciphers:
                    message = self._seal(message)
                frame = encode(message, checksum=self.checksums)
                self.outgoing.append(frame)
                self.frames_sent += 1
                self.bytes_sent += len(frame)
            elif isinstance(effect, ApplyRemote):
                self._apply_remote(effect)
            elif isinstance(effect, Acked):
                counters, _ = self._pending_acks.get(effect.collection, ([], 0))
                counters.extend(effect.counters)
                if self._adopted:
                    self._adopted.difference_update(effect.counters)
                self._pending_acks[effect.collection] = (counters, effect.cursor)
            elif isinstance(effect, ApplySnapshot):
                self._apply_snapshot(effect)
            elif isinstance(effect, ServerError):
                self.last_error = effect.error
                logger.warning(
                    "replica %x: server error %s", self.replica_id, effect.error
                )
            elif isinstance(effect, ServerChanged):
                self._server_changed(effect)
            elif isinstance(effect, Pushing):
                self.storage.mark_pushed(list(effect.counters))
            elif isinstance(effect, Live):
                pass
            if self.on_effect is not None:
                self.on_effect(effect)
        if self.outgoing and self.on_outgoing is not None:
            self.on_outgoing()

    def _apply_remote(self, effect: ApplyRemote) -> None:
        coll = self._collections[effect.collection]
        ops = effect.ops + effect.own
        if effect.collection in self._ciphers:
            ops = self._open(effect.collection, ops)
            if not ops:
                return
        updates = [op.data for op in ops]
        if self.validate_metadata:
            self._validate_metadata(effect.collection, ops)
        self._observe_clocks(ops)
        try:
            changes = coll.import_updates(updates)
        except IntegrityError:
            # A server-side corruption would have been refused there; a frame
            # that passed its checksum but holds bad CRDT data is refused here.
            self._integrity_failures += 1
            raise
        pending, _ = self._pending_remote.get(effect.collection, ([], 0))
        pending.extend(updates)
        self._pending_remote[effect.collection] = (pending, effect.cursor)
        self._remote_ops += len(updates)
        self._bump_log(effect.collection, len(updates))
        if self.on_change is not None and changes:
            self.on_change(changes)

    def _validate_metadata(self, name: str, ops: tuple[RemoteOp, ...]) -> None:
        # A replica numbers its operations in order and its HLC only moves
        # forward, so a later counter must carry a later timestamp. A violation
        # is reported (counted and logged), not refused: the operation is valid
        # CRDT data, and refusing it would make this replica diverge.
        for op in ops:
            seen = self._hlc_seen.get(op.replica)
            if seen is not None and op.counter > seen[0] and op.hlc <= seen[1]:
                self._metadata_violations += 1
                self._integrity_failures += 1
                logger.warning(
                    "replica %x: op %d of replica %x in %r has HLC %d, not after %d",
                    self.replica_id,
                    op.counter,
                    op.replica,
                    name,
                    op.hlc,
                    seen[1],
                )
            if seen is None or op.counter > seen[0]:
                self._hlc_seen[op.replica] = (op.counter, op.hlc)

    def _observe_clocks(self, ops: tuple[RemoteOp, ...]) -> None:
        """Merge the latest timestamp that is not too far ahead (see the HLC)."""
        for op in sorted(ops, key=lambda op: op.hlc, reverse=True):
            if self.hlc.observe(HLCTimestamp.unpack(op.hlc, op.replica)):
                return
            if op.replica not in self._skewed:
                self._skewed.add(op.replica)
                logger.warning(
                    "replica %x: replica %x stamps its operations %s, more than "
                    "%d s ahead of this clock; its timestamps are not merged",
                    self.replica_id,
                    op.replica,
                    HLCTimestamp.unpack(op.hlc, op.replica).to_datetime().isoformat(),
                    self.hlc.max_drift_ms // 1000,
                )

    def _seal(self, push: Push) -> Push:
        cipher = self._ciphers[push.collection]
        sealed = tuple(
            Op(
                op.counter,
                op.hlc,
                cipher.seal(push.collection, self.replica_id, op.counter, op.data),
            )
            for op in push.ops
        )
        return Push(push.collection, sealed)

    def _open(self, name: str, ops: tuple[RemoteOp, ...]) -> tuple[RemoteOp, ...]:
        # A tampered or replayed op is refused alone: its sequence number is
        # consumed (the server will only ever serve those bytes for it), the
        # failure is counted, and the rest of the batch is applied.
        cipher = self._ciphers[name]
        opened = []
        for op in ops:
            try:
                data = cipher.open(name, op.replica, op.counter, op.data)
            except IntegrityError as exc:
                self._integrity_failures += 1
                logger.warning(
                    "replica %x: refused an op of %r: %s", self.replica_id, name, exc
                )
                continue
            opened.append(RemoteOp(op.seq, op.replica, op.counter, op.hlc, data))
        return tuple(opened)

    def _server_changed(self, effect: ServerChanged) -> None:
        if effect.previous is not None:
            logger.warning(
                "replica %x: server store changed (%s -> %s); fetching everything",
                self.replica_id,
                effect.previous,
                effect.current,
            )
            self.persist()
            for name in self._collections:
                self.storage.reset_cursor(name)
        self.storage.save_state("server_id", effect.current.encode())

    def persist(self) -> None:
        """Write received operations and acknowledgements to the store.

        Remote operations and acknowledgements are applied in memory at once and
        written behind, all that accumulated in one transaction, when the driver
        next sends (or on close). Nothing is at risk meanwhile: the server holds
        those operations, and the stored cursor only moves together with them,
        so after a crash they are fetched (or acknowledged) again. Local changes
        are never deferred: each is in the store before its call returns.
        """
        if not self._pending_remote and not self._pending_acks:
            return
        remote, self._pending_remote = self._pending_remote, {}
        acks, self._pending_acks = self._pending_acks, {}
        hlc = self.hlc.last.pack()
        with self.storage.batch():
            for name, (updates, cursor) in remote.items():
                self.storage.append_remote(name, updates, cursor, hlc)
            for name, (counters, cursor) in acks.items():
                self.storage.acknowledge(name, counters, cursor, hlc)

    def _apply_snapshot(self, effect: ApplySnapshot) -> None:
        coll = self._collections[effect.collection]
        self.persist()
        self.storage.reset_cursor(effect.collection)
        if effect.data:
            changes = coll.import_updates([effect.data])
            self.storage.append_remote(
                effect.collection, [effect.data], effect.cursor, self.hlc.last.pack()
            )
            self._snapshots += 1
            if self.on_change is not None and changes:
                self.on_change(changes)

    # Introspection -----------------------------------------------------------

    def outbox_depth(self) -> int:
        return self.session.outbox_depth()

    def statistics(self) -> ReplicaStatistics:
        return ReplicaStatistics(
            replica_id=self.replica_id,
            collections=tuple(self.collections()),
            outbox_depth=self.outbox_depth(),
            local_ops=self._local_ops,
            local_ops_merged=self._merged,
            remote_ops_applied=self._remote_ops,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            frames_sent=self.frames_sent,
            frames_received=self.frames_received,
            integrity_failures=self._integrity_failures,
            timestamps_too_far_ahead=self.hlc.rejected,
            quarantined=len(self.quarantined),
            snapshots_applied=self._snapshots,
            session=self.session.statistics(),
        )

    def close(self) -> None:
        """Store what is pending (an open batch too) and close the store; the
        collections refuse changes from then on."""
        if not self._closed:
            if self._batch_depth:
                self._end_batch()
            self.persist()
            self._closed = True
            for coll in self._collections.values():
                coll.close()
            self.storage.close()


def _current_task() -> asyncio.Task[Any] | None:
    """The running asyncio task, or ``None`` outside one."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
