"""Tests of collections of records on Loro documents."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leptos_sync import fields
from leptos_sync.clock import HybridLogicalClock, ManualClock
from leptos_sync.crdt import Change, CollectionDoc, LocalChange
from leptos_sync.errors import (
    FieldKindError,
    IntegrityError,
    InvalidIdError,
    InvalidValueError,
    RecordExistsError,
    RecordNotFoundError,
)


class Peer:
    """A collection that keeps the update bytes of its local changes."""

    def __init__(self, replica_id: int, clock: ManualClock | None = None) -> None:
        self.updates: list[bytes] = []
        self.changes: list[tuple[Change, ...]] = []
        hlc = HybridLogicalClock(clock or ManualClock(), replica_id)
        self.doc = CollectionDoc("c", hlc, self._sink)

    def _sink(self, change: LocalChange) -> None:
        self.updates.append(change.update)
        self.changes.append(
            tuple(
                Change("c", rid, kind, "local") for rid, kind in change.records.items()
            )
        )


def exchange(*peers: Peer) -> None:
    """Give every peer every other peer's updates."""
    for peer in peers:
        for other in peers:
            if other is not peer:
                peer.doc.import_updates(other.updates)


def test_insert_get_update_delete_round_trip() -> None:
    """A record reads back as inserted, updated, and is gone after delete."""
    peer = Peer(1)
    doc = peer.doc
    doc.insert("n1", {"title": "hi", "tags": ["a"], "n": None})
    assert doc.get("n1") == {"title": "hi", "tags": ["a"], "n": None}
    doc.update("n1", {"title": "bye"})
    assert doc.get("n1") == {"title": "bye", "tags": ["a"], "n": None}
    doc.remove_fields("n1", "n")
    assert doc.get("n1") == {"title": "bye", "tags": ["a"]}
    assert "n1" in doc and len(doc) == 1 and doc.ids() == ["n1"]
    doc.delete("n1")
    assert doc.get("n1") is None and "n1" not in doc
    kinds = [change.kind for batch in peer.changes for change in batch]
    assert kinds == ["insert", "update", "update", "delete"]


def test_insert_twice_and_missing_records_raise() -> None:
    """Inserting an existing id and touching a missing one raise specific errors."""
    doc = Peer(1).doc
    doc.insert("a", {})
    with pytest.raises(RecordExistsError):
        doc.insert("a", {})
    for call in (
        lambda: doc.update("b", {"x": 1}),
        lambda: doc.delete("b"),
        lambda: doc.meta("b"),
        lambda: doc.counter("b", "n").increment(),
    ):
        with pytest.raises(RecordNotFoundError):
            call()


def test_upsert_inserts_then_updates() -> None:
    """upsert creates a missing record and updates an existing one."""
    doc = Peer(1).doc
    doc.upsert("a", {"x": 1})
    doc.upsert("a", {"y": 2})
    assert doc.get("a") == {"x": 1, "y": 2}


def test_field_kinds_counter_text_list_tree() -> None:
    """Each field kind reads back as plain data and reports its kind."""
    doc = Peer(1).doc
    doc.insert(
        "r",
        {
            "n": fields.counter(2),
            "t": fields.text("helo"),
            "l": fields.list([1, "two"]),
            "tr": fields.tree(),
            "reg": {"k": [1]},
        },
    )
    doc.counter("r", "n").increment(3)
    doc.counter("r", "n").decrement(1)
    doc.text("r", "t").insert(3, "l")
    doc.text("r", "t").splice(0, 1, "H")
    items = doc.list("r", "l")
    items.append(3)
    items.insert(0, 0)
    items.delete(1)
    tree = doc.tree("r", "tr")
    root = tree.create(None, name="root")
    kid = tree.create(root, name="kid")
    other = tree.create(None, name="other")
    tree.move(kid, other)
    assert tree.parent(kid) == other
    assert tree.children(other) == [kid]
    tree.set_meta(kid, name="renamed")

    record = doc.get("r")
    assert record is not None
    assert record["n"] == 4
    assert record["t"] == "Hello"
    assert record["l"] == [0, "two", 3]
    assert record["reg"] == {"k": [1]}
    assert [node["meta"]["name"] for node in record["tr"]] == ["root", "other"]
    assert record["tr"][1]["children"][0]["meta"] == {"name": "renamed"}
    assert doc.kind("r", "n") is fields.FieldKind.COUNTER
    assert doc.kind("r", "t") is fields.FieldKind.TEXT
    assert doc.kind("r", "l") is fields.FieldKind.LIST
    assert doc.kind("r", "tr") is fields.FieldKind.TREE
    assert doc.kind("r", "reg") is fields.FieldKind.REGISTER
    assert doc.kind("r", "missing") is None
    with pytest.raises(FieldKindError):
        doc.text("r", "n").insert(0, "x")


def test_out_of_range_edits_raise_invalid_value() -> None:
    """Splices and list edits outside the value raise InvalidValueError."""
    doc = Peer(1).doc
    doc.insert("r", {"t": fields.text("abc"), "l": fields.list([1])})
    with pytest.raises(InvalidValueError):
        doc.text("r", "t").splice(2, 5)
    with pytest.raises(InvalidValueError):
        doc.list("r", "l").insert(5, 1)
    with pytest.raises(InvalidValueError):
        doc.list("r", "l").delete(0, 2)
    with pytest.raises(InvalidValueError):
        doc.tree("r", "tr").move("not-a-node", None)


@pytest.mark.parametrize(
    ("record_id", "values", "error"),
    [
        (5, {"a": 1}, InvalidIdError),
        ("", {"a": 1}, InvalidIdError),
        ("r", {"$c": 1}, InvalidValueError),
        ("r", {"a": object()}, InvalidValueError),
        ("r", {"a": float("nan")}, InvalidValueError),
        ("r", {"a": "x" * 5000}, InvalidValueError),
        ("r", ["not", "a", "dict"], InvalidValueError),
        # Lone surrogates are not Unicode: stored, they came back mangled.
        ("\ud800", {"a": 1}, InvalidIdError),
        ("r", {"a": "x\udfff"}, InvalidValueError),
        ("r", {"a": {"k\ud83d": 1}}, InvalidValueError),
        ("r", {"f\ud800": 1}, InvalidValueError),
        ("r", {"t": fields.text("\ud800")}, InvalidValueError),
    ],
)
def test_bad_values_raise_and_change_nothing(
    record_id: Any, values: Any, error: type[Exception]
) -> None:
    """Bad ids and values raise their specific error and leave the doc as it was."""
    hlc = HybridLogicalClock(ManualClock(), 1)
    updates: list[bytes] = []
    doc = CollectionDoc(
        "c", hlc, lambda change: updates.append(change.update), max_value_bytes=4096
    )
    doc.insert("keep", {"v": 1})
    before, version, sent = doc.to_dict(), doc.version(), len(updates)
    with pytest.raises(error):
        doc.insert(record_id, values)
    assert doc.to_dict() == before and doc.version() == version
    assert len(updates) == sent


def test_regression_text_edits_with_lone_surrogates_raise_and_change_nothing() -> None:
    """A text insert holding a lone surrogate, or a counter step that is not a
    number, raises InvalidValueError and leaves the field as it was."""
    doc = Peer(1).doc
    doc.insert("r", {"t": fields.text("ab"), "n": fields.counter()})
    version = doc.version()
    with pytest.raises(InvalidValueError, match="lone surrogate"):
        doc.text("r", "t").insert(1, "\ud800")
    with pytest.raises(InvalidValueError, match="incremented by a number"):
        doc.counter("r", "n").increment("a")  # type: ignore[arg-type]
    assert doc.get("r") == {"t": "ab", "n": 0} and doc.version() == version
    doc.text("r", "t").insert(1, "\U0001f600")
    assert doc.get("r")["t"] == "a\U0001f600b"


def test_meta_updated_advances_even_with_a_frozen_wall_clock() -> None:
    """Every change moves 'updated' forward and counts a version."""
    clock = ManualClock()
    doc = Peer(1, clock).doc
    doc.insert("r", {"x": 0})
    first = doc.meta("r")
    assert first.created == first.updated and first.version == 1
    previous = first.updated
    for i in range(50):
        doc.update("r", {"x": i})
        meta = doc.meta("r")
        assert meta.updated > previous
        previous = meta.updated
    assert doc.meta("r").version == 51
    assert doc.meta("r").created == first.created


def test_transaction_groups_edits_into_one_update() -> None:
    """Edits inside transaction() become one update (one operation)."""
    peer = Peer(1)
    with peer.doc.transaction():
        peer.doc.insert("a", {"x": 1})
        peer.doc.insert("b", {"x": 2})
        peer.doc.update("a", {"y": 3})
    assert len(peer.updates) == 1
    assert {c.record_id: c.kind for c in peer.changes[0]} == {
        "a": "insert",
        "b": "insert",
    }
    assert peer.doc.meta("a").version == 1


def test_remote_import_reports_changes_to_listeners() -> None:
    """Importing updates calls subscribers with remote Change values."""
    a, b = Peer(1), Peer(2)
    seen: list[Change] = []
    unsubscribe = b.doc.subscribe(seen.extend)
    a.doc.insert("r", {"x": 1})
    a.doc.update("r", {"x": 2})
    a.doc.delete("r")
    for update in a.updates:
        b.doc.import_updates([update])
    assert [(c.record_id, c.kind, c.origin) for c in seen] == [
        ("r", "insert", "remote"),
        ("r", "update", "remote"),
        ("r", "delete", "remote"),
    ]
    unsubscribe()
    a.doc.insert("s", {})
    b.doc.import_updates(a.updates[-1:])
    assert len(seen) == 3


def test_import_of_garbage_raises_integrity_error_and_changes_nothing() -> None:
    """Bytes that are not a Loro update raise IntegrityError; nothing changes."""
    doc = Peer(1).doc
    doc.insert("r", {"x": 1})
    with pytest.raises(IntegrityError):
        doc.import_updates([b"not a loro update"])
    assert doc.to_dict() == {"r": {"x": 1}}


def test_delete_wins_over_concurrent_field_edits() -> None:
    """A record deleted on A while B edits it stays deleted everywhere."""
    a, b = Peer(1), Peer(2)
    a.doc.insert("r", {"x": 1, "n": fields.counter(), "t": fields.text("ab")})
    exchange(a, b)
    a.updates.clear()
    b.updates.clear()

    a.doc.delete("r")
    b.doc.update("r", {"x": 2})
    b.doc.counter("r", "n").increment(5)
    b.doc.text("r", "t").insert(1, "zz")
    exchange(a, b)

    assert a.doc.to_dict() == b.doc.to_dict() == {}


def test_record_reinserted_after_delete_starts_afresh() -> None:
    """An insert after an observed delete holds only the new fields."""
    a, b = Peer(1), Peer(2)
    a.doc.insert("r", {"old": 1})
    a.doc.delete("r")
    a.doc.insert("r", {"new": 2})
    exchange(a, b)
    assert a.doc.get("r") == b.doc.get("r") == {"new": 2}


def test_pending_updates_are_held_back_and_reported() -> None:
    """An update whose dependency is missing waits, and has_pending says so."""
    a, b = Peer(1), Peer(2)
    a.doc.insert("r", {"x": 1})
    a.doc.update("r", {"x": 2})
    b.doc.import_updates([a.updates[1]])
    assert b.doc.has_pending()
    assert "r" not in b.doc
    b.doc.import_updates([a.updates[0]])
    assert not b.doc.has_pending()
    assert b.doc.get("r") == {"x": 2}


def test_snapshot_and_export_since_rebuild_the_document() -> None:
    """A snapshot, or the updates since a version, rebuild the same state."""
    a, b = Peer(1), Peer(2)
    a.doc.insert("r", {"x": 1, "t": fields.text("abc")})
    b.doc.import_updates([a.doc.export_snapshot()])
    version = b.doc.version()
    a.doc.text("r", "t").insert(3, "d")
    b.doc.import_updates([a.doc.export_since(version)])
    assert a.doc.to_dict() == b.doc.to_dict()


# Convergence, the merge laws -------------------------------------------------

_EDIT = st.tuples(
    st.integers(0, 2),  # which peer
    st.sampled_from(["insert", "update", "delete", "counter", "text", "list", "tree"]),
    st.sampled_from(["r0", "r1", "r2"]),
    st.integers(0, 1_000_000),  # a seed for the edit's details
)


def _edit(doc: CollectionDoc, kind: str, record_id: str, seed: int) -> None:
    rng = random.Random(seed)
    if record_id not in doc:
        doc.insert(
            record_id,
            {
                "v": rng.randint(0, 9),
                "n": fields.counter(),
                "t": fields.text("ab"),
                "l": fields.list([1]),
                "tr": fields.tree(),
            },
        )
        return
    if kind == "update":
        doc.update(record_id, {rng.choice("vw"): rng.choice([1, "s", None, [1.5]])})
    elif kind == "delete":
        doc.delete(record_id)
    elif kind == "counter":
        doc.counter(record_id, "n").increment(rng.randint(-3, 3))
    elif kind == "text":
        text = doc.text(record_id, "t")
        pos = rng.randint(0, len(text))
        text.splice(pos, rng.randint(0, len(text) - pos), rng.choice(["x", "yz", ""]))
    elif kind == "list":
        items = doc.list(record_id, "l")
        if len(items) and rng.random() < 0.4:
            items.delete(rng.randrange(len(items)))
        else:
            items.insert(rng.randint(0, len(items)), rng.randint(0, 9))
    elif kind == "tree":
        tree = doc.tree(record_id, "tr")
        roots = tree.children(None)
        if roots and rng.random() < 0.5:
            node = rng.choice(roots)
            targets = [r for r in roots if r != node]
            tree.move(node, rng.choice([None, *targets]))
        else:
            tree.create(rng.choice([None, *roots]))


@settings(max_examples=60, deadline=None)
@given(
    peers=st.integers(2, 3),
    rounds=st.lists(st.lists(_EDIT, min_size=1, max_size=8), min_size=1, max_size=4),
    order_seed=st.integers(0, 2**32),
)
def test_same_operations_in_any_order_with_duplicates_give_identical_state(
    peers: int, rounds: list[list[tuple[int, str, str, int]]], order_seed: int
) -> None:
    """Applying the same operations (Loro updates from random edits on 2-3
    replicas) in any order, with duplicates, gives identical state everywhere."""
    editors = [Peer(i + 1) for i in range(peers)]
    for edits in rounds:
        for who, kind, record_id, seed in edits:
            _edit(editors[who % peers].doc, kind, record_id, seed)
        # Some rounds sync partially, so later edits depend on earlier ones.
        for editor in editors[: 1 + order_seed % peers]:
            for other in editors:
                if other is not editor:
                    editor.doc.import_updates(other.updates)
    every = [u for editor in editors for u in editor.updates]

    rng = random.Random(order_seed)
    states = []
    for i in range(3):
        shuffled = every + rng.sample(every, k=min(len(every), 3))
        rng.shuffle(shuffled)
        fresh = Peer(100 + i).doc
        if i == 0:
            for update in shuffled:
                fresh.import_updates([update])
        else:
            fresh.import_updates(shuffled)
        assert not fresh.has_pending()
        states.append(fresh.to_dict())
    exchange(*editors)
    states.extend(editor.doc.to_dict() for editor in editors)
    assert all(state == states[0] for state in states)


def test_a_held_handle_follows_deletes_replacements_and_remote_changes() -> None:
    """A field handle kept across calls never edits a container that is gone:
    after a local or remote delete it raises, after the field is replaced it
    edits the new one, and after a re-insert it edits the new record."""
    a, b = Peer(1), Peer(2)
    a.doc.insert("r", {"t": fields.text("ab")})
    exchange(a, b)
    text = a.doc.text("r", "t")
    text.insert(2, "c")
    a.doc.update("r", {"t": fields.text("new")})
    text.insert(3, "!")
    assert a.doc.get("r") == {"t": "new!"}

    # Deleted on the other replica: the held handle refuses to edit.
    b.updates.clear()
    b.doc.delete("r")
    a.doc.import_updates(b.updates)
    with pytest.raises(RecordNotFoundError):
        text.insert(0, "x")

    # Re-inserted: the same handle edits the new record's field.
    a.doc.insert("r", {"t": fields.text("fresh")})
    text.insert(5, "!")
    assert a.doc.get("r") == {"t": "fresh!"}
    assert a.doc.meta("r").version == 2
    a.doc.delete("r")
    with pytest.raises(RecordNotFoundError):
        text.insert(0, "x")


def test_regression_odd_positions_amounts_and_ids_raise_specific_errors() -> None:
    """A bool as a position, a counter step beyond 64 bits and a lone-surrogate
    id given to upsert each raise a specific error and change nothing (they
    were taken as position 1, turned the counter into a float, and raised
    UnicodeEncodeError)."""
    doc = Peer(1).doc
    doc.insert("r", {"t": fields.text("ab"), "n": fields.counter(), "l": fields.list()})
    version = doc.version()
    with pytest.raises(InvalidValueError, match="positions and counts are ints"):
        doc.text("r", "t").insert(True, "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="positions and counts are ints"):
        doc.list("r", "l").insert(0.0, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError, match="within 64 bits"):
        doc.counter("r", "n").increment(2**80)
    with pytest.raises(InvalidIdError):
        doc.upsert("\udc00", {"a": 1})
    assert "\udc00" not in doc and 5 not in doc
    assert doc.version() == version
    assert doc.get("r") == {"t": "ab", "n": 0, "l": []}
