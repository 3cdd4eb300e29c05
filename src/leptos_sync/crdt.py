"""Collections of records on Loro documents (pure: no I/O, no event loop).

A :class:`CollectionDoc` is one Loro document whose root map ``records`` maps a
record id to the record's map of fields. Every local change is committed as one
Loro change; its update bytes are handed to the ``on_local_change`` callback, which
the replica turns into a durable operation. Remote operations arrive as Loro update
bytes through :meth:`CollectionDoc.import_updates`.

Merge rules, all inherited from Loro and holding whatever order updates arrive in:

* A plain JSON field is a last-writer-wins register (Loro orders concurrent writes
  by Lamport time, then peer id).
* Counters add up; text and lists interleave concurrent inserts; trees merge moves.
* Deleting a record removes its key from ``records``. **Delete wins over concurrent
  field edits**: a field edit made concurrently with the delete lands in the old,
  removed record and is not visible. A record re-inserted after a delete starts
  afresh with only the fields of the new insert. Two concurrent inserts of the same
  id are resolved as one register: one record wins whole.

Record metadata lives beside the fields under reserved keys: ``$c`` (created) and
``$u`` (last updated) hold hybrid logical clock timestamps, so every change moves
``updated`` forward even when the wall clock stands still; ``$v`` is a counter of
the changes made to the record on all replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import loro as _loro

from . import fields as F
from .clock import HLCTimestamp, HybridLogicalClock
from .errors import (
    ClosedError,
    FieldKindError,
    IntegrityError,
    InvalidIdError,
    InvalidValueError,
    RecordExistsError,
    RecordNotFoundError,
)

# Loro's stubs type every value as a wide union that this module narrows at run
# time (it checks what it gets); to the type checker, Loro is opaque here.
loro: Any = _loro
ExportMode: Any = _loro.ExportMode
LoroCounter: Any = _loro.LoroCounter
LoroDoc: Any = _loro.LoroDoc
LoroList: Any = _loro.LoroList
LoroMap: Any = _loro.LoroMap
LoroText: Any = _loro.LoroText
LoroTree: Any = _loro.LoroTree
VersionVector: Any = _loro.VersionVector
_List = list

__all__ = [
    "Change",
    "ChangeKind",
    "CollectionDoc",
    "CounterHandle",
    "ListHandle",
    "LocalChange",
    "RecordMeta",
    "TextHandle",
    "TreeHandle",
]

logger = logging.getLogger(__name__)

_CREATED, _UPDATED, _VERSION = "$c", "$u", "$v"
_META_KEYS = frozenset((_CREATED, _UPDATED, _VERSION))
_RECORDS = "records"
_T = TypeVar("_T")
_NO_RETRY = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)

ChangeKind = Literal["insert", "update", "delete"]
Origin = Literal["local", "remote"]


@dataclass(frozen=True, slots=True)
class Change:
    """One record changed, locally or by a remote replica."""

    collection: str
    record_id: str
    kind: ChangeKind
    origin: Origin


@dataclass(frozen=True, slots=True)
class RecordMeta:
    """When a record was created and last updated, and how many changes it has."""

    created: HLCTimestamp
    updated: HLCTimestamp
    version: int


@dataclass(frozen=True, slots=True)
class LocalChange:
    """A local commit, or a deferred run of them, as the sink receives it.

    Attributes:
        update: the Loro update bytes holding the commits.
        hlc: the timestamp of the (last) commit.
        records: the kind of change of each record the commits touched
            (itemised as :class:`Change` values only where someone listens).
        own: whether this document's own peer made them (``False`` for an
            update adopted through ``apply_update``).
        commits: how many local commits the update holds.
    """

    update: bytes
    hlc: HLCTimestamp
    records: dict[str, ChangeKind]
    own: bool = True
    commits: int = 1


#: Called with every local commit, or with a deferred run of them (see
#: :meth:`CollectionDoc.defer_updates`).
LocalChangeSink = Callable[[LocalChange], None]


@dataclass
class _Deferred:
    start: int | None = None
    hlc: HLCTimestamp | None = None
    records: dict[str, ChangeKind] = field(default_factory=dict)
    commits: int = 0


def call_loro(fn: Callable[..., _T], *args: Any) -> _T:
    """Call into Loro, translating its errors.

    Loro's Python binding raises bare ``BaseException`` for decode errors and
    misuse; those become :class:`IntegrityError` (bad bytes) so that a bad update
    can never escape as something ``except Exception`` would miss.
    """
    try:
        return fn(*args)
    except _NO_RETRY:
        raise
    except BaseException as exc:
        raise IntegrityError(f"the CRDT engine rejected the data: {exc}") from exc


class CollectionDoc:
    """A named collection of records held in one Loro document.

    Args:
        name: the collection's name.
        hlc: the replica's hybrid logical clock (shared by its collections).
        on_local_change: called after every local commit (see
            :data:`LocalChangeSink`).
        max_value_bytes: the largest JSON value one field may hold.
    """

    def __init__(
        self,
        name: str,
        hlc: HybridLogicalClock,
        on_local_change: LocalChangeSink | None = None,
        *,
        max_value_bytes: int = 1 << 20,
    ) -> None:
        self.name = name
        self.hlc = hlc
        self.max_value_bytes = max_value_bytes
        #: The largest update :meth:`apply_update` adopts (one operation's limit).
        self.max_update_bytes: int | None = None
        self.doc = LoroDoc()
        self.doc.peer_id = hlc.replica_id
        self._records = self.doc.get_map(_RECORDS)
        self._sink = on_local_change
        self._pending_update: bytes | None = None
        self._update_sub: Any = self.doc.subscribe_local_update(self._on_update)
        self._deferred: _Deferred | None = None
        self._export_from: int | None = None
        #: While deferring: whether the commit being made belongs to the
        #: deferral (``None``: every commit does).
        self.defer_check: Callable[[], bool] | None = None
        self._closed = False
        self._txn_depth = 0
        self._stale = False
        # Bumped whenever records or fields may have been replaced or removed
        # (imports, inserts, updates, deletes): field handles keep the
        # containers they found and look them up again only after a bump.
        self._epoch = 0
        self._txn_changes: dict[str, ChangeKind] = {}
        self._txn_hlc: HLCTimestamp | None = None
        self._remote_listeners: list[Callable[[list[Change]], None]] = []
        self._root_sub: Any = None
        self._collected: list[Change] = []

    # Reading ---------------------------------------------------------------

    def __len__(self) -> int:
        self._settle()
        return len(self._records)

    def __contains__(self, record_id: object) -> bool:
        try:
            valid = F.check_id(record_id)
        except InvalidIdError:
            return False
        return self._record(valid) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids())

    def ids(self) -> list[str]:
        """Every record id, sorted."""
        self._settle()
        return sorted(self._records.keys())

    def get(self, record_id: str) -> dict[str, Any] | None:
        """The record's fields as plain values, or ``None`` if it does not exist.

        Counters read as numbers, text as ``str``, lists as ``list`` and trees as
        nested lists of node dicts. Metadata keys are left out; see :meth:`meta`.
        """
        F.check_id(record_id)
        record = self._record(record_id)
        if record is None:
            return None
        value = record.get_deep_value()
        return {k: _plain(v) for k, v in value.items() if k not in _META_KEYS}

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(id, fields)`` pairs, sorted by id."""
        for record_id in self.ids():
            record = self.get(record_id)
            if record is not None:
                yield record_id, record

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every record, as plain data (handy for comparing replicas)."""
        return dict(self.items())

    def meta(self, record_id: str) -> RecordMeta:
        """The record's created/updated timestamps and version."""
        record = self._require(record_id)
        created = _read_hlc(record.get(_CREATED))
        updated = _read_hlc(record.get(_UPDATED))
        version_box = record.get(_VERSION)
        version = 0
        if version_box is not None and _is_container(version_box):
            version = int(version_box.container.value)
        return RecordMeta(created, updated, version)

    def kind(self, record_id: str, field_name: str) -> FieldKind | None:
        """The kind of a field, or ``None`` if the record has no such field."""
        box = self._require(record_id).get(field_name)
        if box is None:
            return None
        if not _is_container(box):
            return F.FieldKind.REGISTER
        return _container_kind(box.container)

    # Writing ---------------------------------------------------------------

    def insert(self, record_id: str, values: dict[str, Any]) -> None:
        """Create a record; raises :class:`RecordExistsError` if the id is taken."""
        F.check_id(record_id)
        checked = self._check_values(values)
        if self._record(record_id) is not None:
            raise RecordExistsError(f"{self.name}/{record_id} already exists")
        with self.transaction():
            record = self._records.insert_container(record_id, LoroMap())
            hlc = self._stamp()
            record.insert(_CREATED, hlc.to_bytes())
            record.insert_container(_VERSION, LoroCounter())
            self._write_fields(record, checked)
            self._touch(record_id, record, "insert")

    def update(self, record_id: str, values: dict[str, Any]) -> None:
        """Set fields of an existing record; a ``None`` value is stored as null.

        Register fields are overwritten; a field created with :mod:`fields`
        constructors replaces whatever the field held.
        """
        checked = self._check_values(values)
        record = self._require(record_id)
        with self.transaction():
            self._write_fields(record, checked)
            self._touch(record_id, record, "update")

    def upsert(self, record_id: str, values: dict[str, Any]) -> None:
        """Insert the record, or update it if it exists."""
        F.check_id(record_id)
        if record_id in self:
            self.update(record_id, values)
        else:
            self.insert(record_id, values)

    def remove_fields(self, record_id: str, *names: str) -> None:
        """Remove fields from a record."""
        record = self._require(record_id)
        for name in names:
            F.check_field_name(name)
        self._epoch += 1
        with self.transaction():
            for name in names:
                record.delete(name)
            self._touch(record_id, record, "update")

    def delete(self, record_id: str) -> None:
        """Delete a record (a tombstone: it does not come back on merge)."""
        self._require(record_id)
        self._epoch += 1
        with self.transaction():
            self._records.delete(record_id)
            self._stamp()
            self._txn_changes[record_id] = "delete"

    def counter(self, record_id: str, field_name: str) -> CounterHandle:
        """A handle on a counter field (created at 0 if the field is absent)."""
        return CounterHandle(self, record_id, field_name)

    def text(self, record_id: str, field_name: str) -> TextHandle:
        """A handle on a text field (created empty if the field is absent)."""
        return TextHandle(self, record_id, field_name)

    def list(self, record_id: str, field_name: str) -> ListHandle:
        """A handle on a list field (created empty if the field is absent)."""
        return ListHandle(self, record_id, field_name)

    def tree(self, record_id: str, field_name: str) -> TreeHandle:
        """A handle on a tree field (created empty if the field is absent)."""
        return TreeHandle(self, record_id, field_name)

    def transaction(self) -> _Transaction:
        """Group edits into one change (one operation on the wire).

        Nested transactions join the outermost one. If the block raises, the edits
        made so far are still committed: Loro has no rollback, and an edit applied
        to the document must reach the other replicas to keep them equal.
        """
        return _Transaction(self)

    def apply_update(self, update: bytes) -> None:
        """Adopt changes made in another Loro document as one local operation.

        For applications that edit through their own ``LoroDoc`` (an editor
        binding, say) that shares this collection's history: the update is
        imported, stored in the outbox and pushed like any local change. The
        other document must use a peer id of its own. Record metadata is not
        touched; the update is taken as it is.

        Raises:
            IntegrityError: the bytes are not a valid Loro update.
        """
        if not isinstance(update, bytes | bytearray | memoryview):
            raise InvalidValueError(f"an update is bytes, got {type(update).__name__}")
        if self._closed:
            raise ClosedError(f"the collection {self.name!r} is closed")
        data = bytes(update)
        if self.max_update_bytes is not None and len(data) > self.max_update_bytes:
            raise InvalidValueError(
                f"the update is {len(data)} bytes; one operation holds at most "
                f"{self.max_update_bytes} (adopt it in smaller parts)"
            )
        deferring = self._deferred is not None
        if deferring:
            # Keep the operations in the order the changes were made.
            self.end_deferral()
        imported = self.import_updates([data])
        changes: dict[str, ChangeKind] = {c.record_id: c.kind for c in imported}
        if self._sink is not None:
            self._sink(LocalChange(data, self.hlc.now(), changes, own=False))
        if deferring:
            self.defer_updates()

    def close(self) -> None:
        """Refuse further local changes (its replica stopped); reading goes on."""
        self._closed = True

    def defer_updates(self) -> None:
        """Hand local commits to the sink as one update when :meth:`end_deferral`
        is called, not one by one.

        Each commit stays its own Loro change with its own metadata; only the
        export of update bytes (and so the outbox entry) is shared, which is
        what a batch of changes committed to the store together needs.
        """
        if self._deferred is None:
            self._update_sub.unsubscribe()
            self._deferred = _Deferred()

    def end_deferral(self) -> None:
        """Hand the commits made since :meth:`defer_updates` to the sink, as one
        update of this document's history, and go back to one by one."""
        deferred, self._deferred = self._deferred, None
        if deferred is None:
            return
        self._update_sub = self.doc.subscribe_local_update(self._on_update)
        # An open transaction's operations count in the version vector already;
        # they are not the deferred commits'. Loro does not hand the update of
        # a transaction begun before the subscription to it: that commit is
        # exported explicitly.
        end = self._own_end() - self.doc.get_pending_txn_len()
        if self._txn_depth or self.doc.get_pending_txn_len():
            self._export_from = end
        if deferred.start is None or deferred.hlc is None:
            return
        if end > deferred.start and self._sink is not None:
            update = self._export_own(deferred.start, end)
            self._sink(
                LocalChange(
                    update, deferred.hlc, deferred.records, commits=deferred.commits
                )
            )

    # Remote changes and state transfer --------------------------------------

    def import_updates(self, updates: _List[bytes]) -> _List[Change]:
        """Apply updates from other replicas; returns the records they changed.

        Updates may arrive in any order, twice, or before the updates they depend
        on (Loro holds those back until their dependencies arrive).

        Raises:
            IntegrityError: an update is not valid Loro data; nothing is applied.
        """
        if not updates:
            return []
        self._epoch += 1
        if self._root_sub is None and self._txn_depth == 0:
            # Nobody needs itemised changes now: append to the history only and
            # bring the document state up to date when it is next read or
            # edited. Loro pays a fixed cost per import into live state, so this
            # turns a stream of small imports into one catch-up.
            if not self._stale:
                self.doc.detach()
                self._stale = True
            # One import_ per update: into detached history this is about half
            # the cost of import_batch, which sorts and merges first.
            doc_import = self.doc.import_
            for update in updates:
                call_loro(doc_import, update)
            return []
        self._settle()
        self._collected = []
        if len(updates) == 1:
            call_loro(self.doc.import_, updates[0])
        else:
            call_loro(self.doc.import_batch, updates)
        changes, self._collected = self._collected, []
        return changes

    def _settle(self) -> None:
        """Bring the document state up to the latest imported history."""
        if self._stale:
            self._stale = False
            self.doc.checkout_to_latest()

    def export_snapshot(self) -> bytes:
        """The whole document, history included, as one blob."""
        self._settle()
        return bytes(self.doc.export(ExportMode.Snapshot()))

    def merge_local_updates(self, first: bytes, last: bytes) -> bytes | None:
        """One update holding every local change from ``first`` to ``last``.

        ``first`` and ``last`` are updates of this document's own local commits
        (as handed to ``on_local_change``), ``first`` the older; the result also
        holds every local commit between them, so it replaces that whole run.
        Returns ``None`` when they are not such updates, or while some imported
        update waits for its dependencies (the document could then not vouch
        for the run).
        """
        head, tail = self.own_range(first), self.own_range(last)
        if head is None or tail is None or self._has_pending():
            return None
        return self._export_own(head[0], tail[1])

    def split_local_update(self, update: bytes, limit: int) -> _List[bytes]:
        """``update`` of one local commit cut into updates of at most ``limit``
        bytes, in order, each holding a consecutive part of the commit.

        For a transaction too large to travel as one operation. The parts are
        cut between Loro operations, so an update smaller than ``limit`` always
        exists unless one single edit is larger (field values and text inserts
        are kept far below any operation limit). Returns ``[update]`` when it
        fits, or is not this document's own commit.
        """
        own = self.own_range(update)
        if len(update) <= limit or own is None:
            return [update]
        parts: _List[bytes] = []

        def cut(start: int, end: int) -> None:
            part = self._export_own(start, end)
            if len(part) <= limit or end - start == 1:
                parts.append(part)
                return
            middle = (start + end) // 2
            cut(start, middle)
            cut(middle, end)

        cut(*own)
        return parts

    def own_range(self, update: bytes) -> tuple[int, int] | None:
        """The range of this document's own history an update holds, if that
        is all it holds."""
        peer = self.doc.peer_id
        try:
            meta = LoroDoc.decode_import_blob_meta(update, False)
        except _NO_RETRY:
            raise
        except BaseException:
            return None
        spans = meta.partial_start_vv.diff(meta.partial_end_vv).forward.inner()
        if set(spans) != {peer}:
            return None
        start, end = spans[peer]
        return int(start), int(end)

    def _export_own(self, start: int, end: int) -> bytes:
        span = loro.IdSpan(self.doc.peer_id, loro.CounterSpan(start, end))
        return bytes(self.doc.export(ExportMode.UpdatesInRange([span])))

    def export_since(self, version: bytes | None) -> bytes:
        """Updates the holder of ``version`` (an encoded version vector) lacks."""
        vv = VersionVector() if not version else VersionVector.decode(version)
        return bytes(self.doc.export(ExportMode.Updates(vv)))

    def version(self) -> bytes:
        """This document's encoded version vector."""
        return bytes(self.doc.oplog_vv.encode())

    def has_pending(self) -> bool:
        self._settle()
        return self._has_pending()

    def _has_pending(self) -> bool:
        """Whether some imported updates wait for updates they depend on."""
        # Held-back updates are outside the oplog (and its version vector), and
        # a snapshot leaves them out: Loro hands them over only through here.
        return self.doc.export_pending_updates() is not None

    def subscribe(
        self, listener: Callable[[_List[Change]], None]
    ) -> Callable[[], None]:
        """Call ``listener`` with the records each remote import changed.

        Returns a function that removes the listener.
        """
        self._remote_listeners.append(listener)
        self._ensure_root_sub()
        return lambda: self._remote_listeners.remove(listener)

    def track_remote_changes(self) -> None:
        """Compute :class:`Change` lists for imports even with no listener."""
        self._ensure_root_sub()

    # Internals ---------------------------------------------------------------

    def _record(self, record_id: str) -> LoroMap | None:
        self._settle()
        box = self._records.get(record_id)
        if box is None or not _is_container(box):
            return None
        container = box.container
        return container if isinstance(container, LoroMap) else None

    def _require(self, record_id: str) -> LoroMap:
        F.check_id(record_id)
        record = self._record(record_id)
        if record is None:
            raise RecordNotFoundError(f"{self.name}/{record_id} does not exist")
        return record

    def _check_values(self, values: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(values, dict):
            raise InvalidValueError(
                f"a record is a dict of fields, got {type(values).__name__}"
            )
        total = 0
        for name, value in values.items():
            F.check_field_name(name)
            if isinstance(value, F.NewField):
                if value.kind is F.FieldKind.TEXT or value.kind is F.FieldKind.LIST:
                    total += F.check_json(value.initial, f"field {name!r}")
            else:
                total += F.check_json(value, f"field {name!r}", self.max_value_bytes)
        if total > self.max_value_bytes:
            raise InvalidValueError(
                f"record values are about {total} bytes; "
                f"the limit is {self.max_value_bytes} bytes"
            )
        return values

    def _write_fields(self, record: LoroMap, values: dict[str, Any]) -> None:
        self._epoch += 1
        for name, value in values.items():
            if not isinstance(value, F.NewField):
                record.insert(name, _to_loro(value))
                continue
            if value.kind is F.FieldKind.COUNTER:
                box = record.insert_container(name, LoroCounter())
                if value.initial:
                    box.increment(value.initial)
            elif value.kind is F.FieldKind.TEXT:
                box = record.insert_container(name, LoroText())
                if value.initial:
                    box.insert(0, value.initial)
            elif value.kind is F.FieldKind.LIST:
                box = record.insert_container(name, LoroList())
                for i, item in enumerate(value.initial):
                    box.insert(i, _to_loro(item))
            else:
                record.insert_container(name, LoroTree())

    def _stamp(self) -> HLCTimestamp:
        if self._txn_hlc is None:
            self._txn_hlc = self.hlc.now()
        return self._txn_hlc

    def _touch(
        self,
        record_id: str,
        record: LoroMap,
        kind: ChangeKind,
        version: LoroCounter | None = None,
    ) -> None:
        # Metadata is written once per record per transaction, however many
        # fields the transaction edits.
        previous = self._txn_changes.get(record_id)
        if previous is not None:
            if previous == "delete":
                self._txn_changes[record_id] = "insert"
            return
        hlc = self._stamp()
        record.insert(_UPDATED, hlc.to_bytes())
        if version is None:
            version = _version_counter(record)
        if version is not None:
            version.increment(1)
        self._txn_changes[record_id] = kind

    def _commit(self) -> None:
        changes = self._txn_changes
        hlc = self._txn_hlc
        self._txn_changes = {}
        self._txn_hlc = None
        deferred = self._deferred
        resume = False
        if deferred is not None and self.defer_check and not self.defer_check():
            # A commit from outside the deferring batch (another task): what
            # the batch wrote so far goes first, then this commit on its own,
            # and the batch goes on deferring after it.
            self.end_deferral()
            deferred, resume = None, True
        if deferred is not None:
            if hlc is not None and deferred.start is None:
                # The open transaction's operations already count in the
                # version vector: the run starts before them.
                deferred.start = self._own_end() - self.doc.get_pending_txn_len()
            self.doc.commit()
            if hlc is not None:
                deferred.hlc = hlc
                deferred.commits += 1
                records = deferred.records
                for record_id, kind in changes.items():
                    if records.get(record_id) != "insert" or kind == "delete":
                        records[record_id] = kind
            return
        self._pending_update = None
        self.doc.commit()
        update = self._pending_update
        self._pending_update = None
        if self._export_from is not None:
            start, self._export_from = self._export_from, None
            end = self._own_end()
            update = self._export_own(start, end) if end > start else None
        if update is not None and hlc is not None and self._sink is not None:
            self._sink(LocalChange(update, hlc, changes))
        if resume:
            self.defer_updates()

    def _own_end(self) -> int:
        """Where this document's own history ends (its next operation counter)."""
        last = self.doc.oplog_vv.get_last(self.doc.peer_id)
        return 0 if last is None else int(last) + 1

    def _on_update(self, update: bytes) -> bool:
        self._pending_update = bytes(update)
        return True

    def _ensure_root_sub(self) -> None:
        self._settle()
        if self._root_sub is None:
            self._root_sub = self.doc.subscribe_root(self._on_root_event)

    def _on_root_event(self, event: Any) -> None:
        if str(event.triggered_by) == "EventTriggerKind.Local":
            return
        seen: dict[str, ChangeKind] = {}
        for diff in event.events:
            path = diff.path
            if len(path) == 1:
                updated = diff.diff.diff.updated
                for record_id, value in updated.items():
                    seen[record_id] = "delete" if value is None else "insert"
            elif len(path) >= 2:
                record_id = getattr(path[1].index, "key", None)
                if isinstance(record_id, str) and record_id not in seen:
                    seen[record_id] = "update"
        changes = [Change(self.name, rid, kind, "remote") for rid, kind in seen.items()]
        self._collected.extend(changes)
        for listener in tuple(self._remote_listeners):
            listener(changes)


FieldKind = F.FieldKind


_BOXED_CONTAINER = loro.ValueOrContainer.Container


def _is_container(box: Any) -> bool:
    return isinstance(box, _BOXED_CONTAINER)


def _container_kind(container: object) -> FieldKind:
    if isinstance(container, LoroCounter):
        return F.FieldKind.COUNTER
    if isinstance(container, LoroText):
        return F.FieldKind.TEXT
    if isinstance(container, LoroList):
        return F.FieldKind.LIST
    if isinstance(container, LoroTree):
        return F.FieldKind.TREE
    return F.FieldKind.REGISTER


def _to_loro(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_loro(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        # Loro counters are doubles; whole counts read back as ints.
        return int(value)
    is_tree = (
        isinstance(value, list)
        and value
        and isinstance(value[0], dict)
        and "fractional_index" in value[0]
    )
    if is_tree:
        return [_plain_node(node) for node in value]
    return value


def _plain_node(node: dict[str, Any]) -> dict[str, Any]:
    meta = node.get("meta")
    return {
        "id": node["id"],
        "meta": meta if isinstance(meta, dict) else {},
        "children": [_plain_node(child) for child in node.get("children", [])],
    }


def _version_counter(record: LoroMap) -> LoroCounter | None:
    box = record.get(_VERSION)
    return box.container if box is not None and _is_container(box) else None


def _read_hlc(box: Any) -> HLCTimestamp:
    if box is None or _is_container(box):
        return HLCTimestamp(0, 0, 0)
    return HLCTimestamp.from_bytes(bytes(box.value))


class _FieldHandle:
    """Common lookup for handles on one field of one record."""

    _container_type: type = object
    _kind = F.FieldKind.REGISTER

    def __init__(self, coll: CollectionDoc, record_id: str, field_name: str) -> None:
        F.check_id(record_id)
        F.check_field_name(field_name)
        self.collection = coll
        self.record_id = record_id
        self.field_name = field_name
        # What the last edit found: the record, the field's container and the
        # record's version counter, valid while the collection's epoch holds.
        self._epoch = -1
        self._found: tuple[LoroMap, Any, LoroCounter | None] | None = None

    def _container(self) -> Any:
        """The field's container for reading, or ``None`` if the field is absent.

        Looked up on every call: a remote delete can remove the record between
        two calls. (Edits find, or create, the container in :class:`_Edit`.)
        """
        record = self.collection._require(self.record_id)
        box = record.get(self.field_name)
        if box is None:
            return None
        container = box.container if _is_container(box) else None
        if not isinstance(container, self._container_type):
            raise FieldKindError(
                f"{self.collection.name}/{self.record_id}.{self.field_name} is not a "
                f"{self._kind.value} field"
            )
        return container

    def _edit(self) -> _Edit:
        return _Edit(self)


class _Transaction:
    """``with coll.transaction():``, a class rather than a generator (hot path)."""

    __slots__ = ("coll",)

    def __init__(self, coll: CollectionDoc) -> None:
        self.coll = coll

    def __enter__(self) -> None:
        coll = self.coll
        if coll._closed:
            raise ClosedError(f"the collection {coll.name!r} is closed")
        coll._txn_depth += 1

    def __exit__(self, *exc: object) -> None:
        coll = self.coll
        coll._txn_depth -= 1
        if coll._txn_depth == 0:
            coll._commit()


class _Edit:
    """One edit of a field: find (or create) the container, touch the metadata."""

    __slots__ = ("handle",)

    def __init__(self, handle: _FieldHandle) -> None:
        self.handle = handle

    def __enter__(self) -> Any:
        handle = self.handle
        coll = handle.collection
        if coll._closed:
            raise ClosedError(f"the collection {coll.name!r} is closed")
        coll._txn_depth += 1
        found = handle._found
        if found is not None and handle._epoch == coll._epoch:
            return found[1]
        try:
            record = coll._require(handle.record_id)
            box = record.get(handle.field_name)
            if box is None:
                container = record.insert_container(
                    handle.field_name, handle._container_type()
                )
            else:
                container = box.container if _is_container(box) else None
                if not isinstance(container, handle._container_type):
                    raise FieldKindError(
                        f"{coll.name}/{handle.record_id}.{handle.field_name} is "
                        f"not a {handle._kind.value} field"
                    )
            handle._found = (record, container, _version_counter(record))
            handle._epoch = coll._epoch
            return container
        except BaseException:
            self._finish()
            raise

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        handle = self.handle
        found = handle._found
        if exc_type is None and found is not None:
            handle.collection._touch(handle.record_id, found[0], "update", found[2])
        self._finish()

    def _finish(self) -> None:
        coll = self.handle.collection
        coll._txn_depth -= 1
        if coll._txn_depth == 0:
            coll._commit()


class CounterHandle(_FieldHandle):
    """Increments and decrements that add up across replicas."""

    _container_type = LoroCounter
    _kind = F.FieldKind.COUNTER

    @property
    def value(self) -> int | float:
        container = self._container()
        return 0 if container is None else _plain(container.value)

    def increment(self, amount: int | float = 1) -> None:
        F.check_amount(amount, "a counter is incremented by")
        with self._edit() as box:
            box.increment(amount)

    def decrement(self, amount: int | float = 1) -> None:
        F.check_amount(amount, "a counter is decremented by")
        with self._edit() as box:
            box.decrement(amount)


class TextHandle(_FieldHandle):
    """Collaborative text; positions count Unicode code points."""

    _container_type = LoroText
    _kind = F.FieldKind.TEXT

    def __str__(self) -> str:
        container = self._container()
        return "" if container is None else str(container.to_string())

    def __len__(self) -> int:
        container = self._container()
        return 0 if container is None else int(container.len_unicode)

    def insert(self, pos: int, content: str) -> None:
        self.splice(pos, 0, content)

    def delete(self, pos: int, length: int) -> None:
        self.splice(pos, length, "")

    def splice(self, pos: int, delete: int, insert: str = "") -> None:
        """Delete ``delete`` characters at ``pos`` and insert ``insert`` there."""
        if not isinstance(insert, str):
            raise InvalidValueError(f"text inserts a str, got {type(insert).__name__}")
        F.check_positions(pos, delete)
        F.check_text(insert, "the inserted text")
        limit = self.collection.max_value_bytes
        if len(insert) * 4 > limit and len(insert.encode()) > limit:
            raise InvalidValueError(
                f"the inserted text is {len(insert.encode())} bytes; one insert "
                f"holds at most {limit} (insert it in parts)"
            )
        with self._edit() as box:
            size = box.len_unicode
            if not 0 <= pos <= size or delete < 0 or pos + delete > size:
                raise InvalidValueError(
                    f"splice({pos}, {delete}) is outside text of length {size}"
                )
            if delete:
                box.delete(pos, delete)
            if insert:
                box.insert(pos, insert)


class ListHandle(_FieldHandle):
    """A list of JSON values; concurrent inserts interleave."""

    _container_type = LoroList
    _kind = F.FieldKind.LIST

    def to_list(self) -> list[Any]:
        container = self._container()
        return [] if container is None else list(container.get_deep_value())

    def __len__(self) -> int:
        return len(self.to_list())

    def insert(self, index: int, value: Any) -> None:
        F.check_positions(index)
        F.check_json(value, "list item", self.collection.max_value_bytes)
        with self._edit() as box:
            if not 0 <= index <= len(box):
                raise InvalidValueError(f"index {index} outside list of {len(box)}")
            box.insert(index, _to_loro(value))

    def append(self, value: Any) -> None:
        F.check_json(value, "list item", self.collection.max_value_bytes)
        with self._edit() as box:
            box.insert(len(box), _to_loro(value))

    def delete(self, index: int, count: int = 1) -> None:
        F.check_positions(index, count)
        with self._edit() as box:
            if index < 0 or count < 0 or index + count > len(box):
                raise InvalidValueError(f"delete({index}, {count}) outside the list")
            box.delete(index, count)


class TreeHandle(_FieldHandle):
    """A hierarchy of nodes; node ids are strings like ``"3@1234"``."""

    _container_type = LoroTree
    _kind = F.FieldKind.TREE

    def create(self, parent: str | None = None, **meta: Any) -> str:
        """Add a node under ``parent`` (a root when ``None``) and return its id."""
        for key, value in meta.items():
            F.check_json(value, f"node meta {key!r}", self.collection.max_value_bytes)
        with self._edit() as box:
            node = box.create(_tree_id(parent)) if parent else box.create()
            node_meta = box.get_meta(node)
            for key, value in meta.items():
                node_meta.insert(key, _to_loro(value))
        return _tree_str(node)

    def move(self, node: str, parent: str | None, index: int | None = None) -> None:
        """Move ``node`` (with its subtree) under ``parent``."""
        with self._edit() as box:
            target = _tree_id(parent) if parent else None
            if index is None:
                call_loro(box.mov, _tree_id(node), target)
            else:
                call_loro(box.mov_to, _tree_id(node), target, index)

    def delete(self, node: str) -> None:
        with self._edit() as box:
            call_loro(box.delete, _tree_id(node))

    def set_meta(self, node: str, **meta: Any) -> None:
        for key, value in meta.items():
            F.check_json(value, f"node meta {key!r}", self.collection.max_value_bytes)
        with self._edit() as box:
            node_meta = call_loro(box.get_meta, _tree_id(node))
            for key, value in meta.items():
                node_meta.insert(key, _to_loro(value))

    def parent(self, node: str) -> str | None:
        box = self._container()
        if box is None:
            raise InvalidValueError(f"no tree node {node}")
        parent = call_loro(box.parent, _tree_id(node))
        return None if parent is None else _tree_str(parent)

    def children(self, node: str | None = None) -> list[str]:
        box = self._container()
        if box is None:
            return []
        kids = box.children(_tree_id(node) if node else None) or []
        return [_tree_str(kid) for kid in kids]

    def to_list(self) -> list[dict[str, Any]]:
        box = self._container()
        if box is None:
            return []
        return [_plain_node(n) for n in box.get_value_with_meta()]


def _tree_id(node: str) -> loro.TreeID:
    try:
        counter, peer = node.split("@")
        return loro.TreeID(int(peer), int(counter))
    except (ValueError, AttributeError) as exc:
        raise InvalidValueError(f"not a tree node id: {node!r}") from exc


def _tree_str(node: loro.TreeID) -> str:
    return f"{node.counter}@{node.peer}"
