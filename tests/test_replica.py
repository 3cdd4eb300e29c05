"""Tests of a replica: local writes, sync through a hub, restarts, bad input."""

from __future__ import annotations

import itertools
import random
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from leptos_sync import HubStore, Replica, Storage, fields
from leptos_sync.clock import ManualClock
from leptos_sync.crdt import ExportMode, LoroDoc
from leptos_sync.errors import (
    InvalidIdError,
    InvalidValueError,
    RecordNotFoundError,
    SyncError,
)
from leptos_sync.protocol import Ack, Changes, Push, decode, encode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs

Wire = Any


def converged(*replicas: Replica, name: str = "c") -> dict[str, Any]:
    states = [r.collection(name).to_dict() for r in replicas]
    assert all(state == states[0] for state in states), states
    return states[0]


def test_local_change_is_stored_pushed_and_acknowledged(wire: Wire) -> None:
    """A local write is in the stored outbox at once, pushed, and dropped from
    the store when the acknowledgement is written behind."""
    a = wire.replica()
    notes = a.collection("c")
    wire.pump()
    notes.insert("n", {"x": 1})
    assert a.storage.outbox_depth() == 1 and a.outbox_depth() == 1
    (frame,) = a.take_outgoing()
    push = decode(frame)
    assert isinstance(push, Push) and push.ops[0].counter == 1
    for out in wire.hub.handle(next(iter(wire.conns)), frame):
        for reply in out.frames:
            assert isinstance(decode(reply), Ack)
            a.receive(reply)
    assert a.outbox_depth() == 0
    a.persist()
    assert a.storage.outbox_depth() == 0
    assert a.session.cursor("c") == 1


def test_two_replicas_converge_on_every_field_kind(wire: Wire) -> None:
    """Edits of every field kind on two replicas reach both."""
    a, b = wire.replica(), wire.replica()
    ca, cb = a.collection("c"), b.collection("c")
    wire.pump()
    ca.insert(
        "r",
        {
            "v": 1,
            "n": fields.counter(),
            "t": fields.text("ab"),
            "l": fields.list([1]),
            "tr": fields.tree(),
        },
    )
    wire.pump()
    cb.counter("r", "n").increment(2)
    ca.counter("r", "n").increment(3)
    cb.text("r", "t").insert(2, "c")
    ca.list("r", "l").append(2)
    node = cb.tree("r", "tr").create(None, name="x")
    ca.update("r", {"w": "new"})
    wire.pump()
    ca.tree("r", "tr").set_meta(node, name="y")
    wire.pump()
    state = converged(a, b)
    assert (
        state["r"]["n"] == 5 and state["r"]["t"] == "abc" and state["r"]["l"] == [1, 2]
    )
    assert state["r"]["tr"][0]["meta"] == {"name": "y"}


@pytest.mark.parametrize(
    ("record_id", "values", "error"),
    [
        (7, {"x": 1}, InvalidIdError),
        ("", {"x": 1}, InvalidIdError),
        ("r", {"x": {1, 2}}, InvalidValueError),
        ("r", {"x": {3: "non-string key"}}, InvalidValueError),
        ("r", {"x": "y" * (2 << 20)}, InvalidValueError),
        ("r", {"$u": 1}, InvalidValueError),
        ("r", {"": 1}, InvalidValueError),
    ],
)
def test_bad_values_raise_and_change_nothing(
    wire: Wire, record_id: Any, values: dict[str, Any], error: type[SyncError]
) -> None:
    """Bad values raise the specific SyncError subclass and change nothing: no
    outbox entry, no frame, the document unchanged."""
    a = wire.replica()
    coll = a.collection("c")
    coll.insert("keep", {"x": 1})
    wire.pump()
    before = (
        coll.to_dict(),
        coll.version(),
        a.storage.outbox_depth(),
        a.outbox_depth(),
    )
    with pytest.raises(error):
        coll.insert(record_id, values)
    with pytest.raises((error, RecordNotFoundError)):
        coll.update(
            "keep" if isinstance(record_id, str) and record_id else record_id, values
        )
    assert (
        coll.to_dict(),
        coll.version(),
        a.storage.outbox_depth(),
        a.outbox_depth(),
    ) == before
    assert a.take_outgoing() == []


def test_offline_for_a_thousand_edits_then_everyone_converges(wire: Wire) -> None:
    """A replica offline for 1,000 edits reconnects: all replicas converge, the
    outbox empties, and no operation is applied twice."""
    a, b, c = wire.replica(), wire.replica(), wire.replica()
    for r in (a, b, c):
        r.collection("c")
    a.collection("c").insert("ctr", {"n": fields.counter()})
    wire.pump()
    wire.disconnect(a)
    rng = random.Random(5)
    total = 0
    for i in range(1_000):
        step = rng.randint(1, 3)
        total += step
        a.collection("c").counter("ctr", "n").increment(step)
        if i % 50 == 0:
            a.collection("c").upsert(f"r{i % 7}", {"i": i})
    for i in range(30):
        b.collection("c").counter("ctr", "n").increment(1)
        c.collection("c").upsert(f"b{i}", {"i": i})
    wire.pump()
    assert a.outbox_depth() == 1_000 + 20

    wire.connect(a)
    wire.pump()
    state = converged(a, b, c)
    assert state["ctr"]["n"] == total + 30
    assert [r.outbox_depth() for r in (a, b, c)] == [0, 0, 0]
    assert a.storage.outbox_depth() == 0
    # The 1,020 changes made offline went out merged into a few operations;
    # every change is in exactly one operation on the hub.
    merged = sum(r.statistics().local_ops_merged for r in (a, b, c))
    assert a.statistics().local_ops_merged > 1_000
    assert wire.hub.store.head("c") == 1 + 1_020 + 60 - merged


def test_dropped_frames_while_editing_then_restored_link_delivers_everything(
    wire: Wire,
) -> None:
    """All of A's frames are dropped while A edits; once the link is restored,
    B gets every edit."""
    a, b = wire.replica(), wire.replica()
    a.collection("c")
    b.collection("c")
    wire.pump()
    a_conn = next(conn for conn, r in wire.conns.items() if r is a)
    wire.up_filter = lambda conn, frame: conn != a_conn
    for i in range(40):
        a.collection("c").upsert(f"r{i % 5}", {"i": i})
        a.collection("c").counter(f"r{i % 5}", "n").increment(1)
        wire.pump()
    assert b.collection("c").to_dict() == {}
    assert a.outbox_depth() == 80 - a.statistics().local_ops_merged > 0

    wire.up_filter = None
    # The dropped pushes time out and go again on the same connection.
    wire.clock.advance(31)
    a.poll()
    wire.pump()
    state = converged(a, b)
    assert sum(record["n"] for record in state.values()) == 40
    assert a.outbox_depth() == 0


def test_lost_acks_are_resent_and_deduplicated(wire: Wire) -> None:
    """Acks lost on the way down: the resend is acknowledged with the same seqs."""
    a, b = wire.replica(), wire.replica()
    a.collection("c")
    b.collection("c")
    wire.pump()
    wire.down_filter = lambda conn, frame: not isinstance(decode(frame), Ack)
    a.collection("c").insert("r", {"n": fields.counter(1)})
    wire.pump()
    a.collection("c").counter("r", "n").increment(1)
    wire.pump()
    assert a.outbox_depth() == 2
    wire.down_filter = None
    wire.clock.advance(31)
    a.poll()
    wire.pump()
    assert a.outbox_depth() == 0
    assert wire.hub.store.head("c") == 2
    assert converged(a, b)["r"]["n"] == 2


def test_register_writes_in_all_six_delivery_orders(wire: Wire) -> None:
    """Delivering one replica's writes a=1, a=1.1 and another's b=2 in all six
    orders leaves every replica with a=1.1 and b=2."""
    a, b = wire.replica(), wire.replica()
    a.collection("c").insert("r", {})
    b.collection("c")
    wire.pump()
    base = wire.hub.store.head("c")
    a.collection("c").update("r", {"a": 1})
    wire.pump()
    a.collection("c").update("r", {"a": 1.1})
    b.collection("c").update("r", {"b": 2})
    wire.pump()
    assert converged(a, b)["r"] == {"a": 1.1, "b": 2}
    ops = wire.hub.store.read("c", base, 10)
    assert len(ops) == 3

    prefix = wire.hub.store.read("c", 0, base)
    for order in itertools.permutations(ops):
        readers = [Replica(Storage.memory(), clock=wire.clock) for _ in range(2)]
        for reader in readers:
            reader.collection("c")
            reader.connected()
            reader.receive(encode(_welcome()))
            reader.receive(encode(Changes("c", tuple(prefix), True)))
            for op in order:
                reader.receive(encode(Changes("c", (op,), True)))
            assert reader.collection("c").get("r") == {"a": 1.1, "b": 2}, order
            assert reader.session.cursor("c") == base + 3


def _welcome() -> Any:
    from leptos_sync.protocol import Welcome

    return Welcome("hub", 1 << 24, 10_000)


def test_delete_on_one_replica_while_another_edits_is_agreed(wire: Wire) -> None:
    """A record deleted on A while B edits it is deleted on every replica, by the
    documented rule: delete wins over concurrent field edits."""
    a, b, c = wire.replica(), wire.replica(), wire.replica()
    for r in (a, b, c):
        r.collection("c")
    a.collection("c").insert(
        "r", {"x": 1, "n": fields.counter(), "t": fields.text("t")}
    )
    a.collection("c").insert("other", {"x": 1})
    wire.pump()
    wire.disconnect(a)
    wire.disconnect(b)
    a.collection("c").delete("r")
    b.collection("c").update("r", {"x": 2})
    b.collection("c").counter("r", "n").increment(4)
    b.collection("c").text("r", "t").insert(0, "edit ")
    for r in (b, a):
        wire.connect(r)
    wire.pump()
    assert converged(a, b, c) == {"other": {"x": 1}}


def test_hub_restart_from_sqlite_mid_stream_loses_nothing(
    tmp_path: Path, make_wire: Callable[..., Wire]
) -> None:
    """The hub restarts from its SQLite store in the middle of a stream: nothing
    acknowledged is lost, clients resume from their cursors, nothing is applied
    twice."""
    path = tmp_path / "hub.sqlite3"
    wire = make_wire(HubStore.sqlite(path))
    a, b = wire.replica(), wire.replica()
    for r in (a, b):
        r.collection("c").insert(f"ctr-{r.replica_id}", {"n": fields.counter()})
    wire.pump()
    total = 0
    for i in range(60):
        writer = (a, b)[i % 2]
        for r in (a, b):
            rid = f"ctr-{r.replica_id}"
            writer.collection("c").counter(rid, "n").increment(1)
            total += 1
        if i == 30:
            # Mid-stream: deliver only part of what is queued, then restart.
            for conn, replica in list(wire.conns.items()):
                frames = replica.take_outgoing()
                for frame in frames[: len(frames) // 2]:
                    wire._route(wire.hub.handle(conn, frame))
            acked_before = wire.hub.store.head("c")
            cursors = (a.session.cursor("c"), b.session.cursor("c"))
            wire.hub.store.close()
            wire.restart_hub(HubStore.sqlite(path))
            assert wire.hub.store.head("c") == acked_before
            assert all(cur <= acked_before for cur in cursors)
            for r in (a, b):
                wire.connect(r)
        wire.pump()
    state = converged(a, b)
    assert sum(record["n"] for record in state.values()) == total
    assert a.outbox_depth() == b.outbox_depth() == 0
    assert a.session.cursor("c") == b.session.cursor("c") == wire.hub.store.head("c")
    wire.hub.store.close()


def test_replica_restart_with_unacknowledged_outbox_delivers_it(
    tmp_path: Path, wire: Wire
) -> None:
    """A replica restarts from its SQLite store with an unacknowledged outbox:
    those operations are delivered after the restart."""
    path = tmp_path / "replica.sqlite3"
    a = wire.replica(Storage.sqlite(path))
    b = wire.replica()
    a.collection("c")
    b.collection("c")
    wire.pump()
    wire.up_filter = lambda conn, frame: wire.conns.get(conn) is not a
    for i in range(5):
        a.collection("c").insert(f"r{i}", {"i": i, "n": fields.counter(i)})
        wire.pump()  # each pushed (and lost) alone, so none is merged
    assert a.storage.outbox_depth() == 5
    wire.disconnect(a)
    a.close()
    wire.up_filter = None

    again = Replica(Storage.sqlite(path), clock=wire.clock)
    assert again.outbox_depth() == 5
    wire.connect(again)
    wire.pump()
    assert again.outbox_depth() == 0 and again.storage.outbox_depth() == 0
    assert b.collection("c").to_dict() == {f"r{i}": {"i": i, "n": i} for i in range(5)}
    converged(again, b)
    again.close()


def test_regression_compaction_keeps_updates_waiting_for_dependencies(
    tmp_path: Path, wire: Wire
) -> None:
    """Compacting while an imported update waits for its dependency keeps that
    update (the snapshot left it out and the log row holding it was dropped)."""
    a = wire.replica()
    a.collection("c").insert("r", {"n": fields.counter()})
    wire.pump()
    for _ in range(3):
        a.collection("c").counter("r", "n").increment(1)
        wire.pump()
    ops = wire.hub.store.read("c", 0, 10)

    path = tmp_path / "b.sqlite3"
    b = Replica(Storage.sqlite(path), clock=wire.clock)
    b.collection("c")
    b.connected()
    b.receive(encode(_welcome()))
    # Ops 2-4 arrive before op 1, whose push was delayed.
    b.receive(encode(Changes("c", tuple(ops[1:]), True)))
    assert b.collection("c").has_pending()
    b.compact("c")
    b.receive(encode(Changes("c", ops[:1], True)))
    assert b.collection("c").get("r") == {"n": 3}
    b.compact("c")
    b.close()
    assert Replica(Storage.sqlite(path)).collection("c").get("r") == {"n": 3}


def test_regression_a_copied_store_gets_its_own_identity_and_loses_nothing(
    tmp_path: Path, wire: Wire
) -> None:
    """A store file copied by hand opens under a new replica id, so the original
    and the copy both keep their later writes (the copy used to reuse the
    original's operation ids, and the server dropped one side's writes as
    duplicates)."""
    original_path, copy_path = tmp_path / "a.sqlite3", tmp_path / "b.sqlite3"
    a = wire.replica(Storage.sqlite(original_path))
    a.collection("c").insert("base", {})
    wire.pump()
    wire.disconnect(a)
    a.close()
    shutil.copyfile(original_path, copy_path)

    a = wire.replica(Storage.sqlite(original_path))
    b = wire.replica(Storage.sqlite(copy_path))
    assert a.replica_id != b.replica_id
    a.collection("c").insert("from-a", {})
    b.collection("c").insert("from-b", {})
    wire.pump()
    reader = wire.replica()
    reader.collection("c")
    wire.pump()
    assert sorted(converged(a, b, reader)) == ["base", "from-a", "from-b"]

    # Reopening either file again keeps the identity it has now.
    ids = a.replica_id, b.replica_id
    a.close()
    b.close()
    assert Replica(Storage.sqlite(original_path)).replica_id == ids[0]
    assert Replica(Storage.sqlite(copy_path)).replica_id == ids[1]


def test_compaction_folds_at_doubling_log_lengths(tmp_path: Path) -> None:
    """The log is folded after ``compact_after`` updates, then each time it holds
    as many updates as the snapshot covers: at 10, 20, 40 and 80 updates."""
    path = tmp_path / "a.sqlite3"
    a = Replica(Storage.sqlite(path), compact_after=10)
    notes = a.collection("c")
    folds: list[int] = []
    compact = a.compact

    def counting(name: str) -> None:
        folds.append(a.statistics().local_ops)
        compact(name)

    a.compact = counting  # type: ignore[method-assign]
    notes.insert("r", {"n": fields.counter()})
    for _ in range(99):
        notes.counter("r", "n").increment()

    assert folds == [10, 20, 40, 80]
    a.close()
    again = Replica(Storage.sqlite(path))
    assert again.collection("c").get("r") == {"n": 99}
    again.close()


def test_statistics_count_frames_and_ops(wire: Wire) -> None:
    """Replica statistics count local ops, remote ops and frames."""
    a, b = wire.replica(), wire.replica()
    a.collection("c").insert("r", {})
    b.collection("c")
    wire.pump()
    sa, sb = a.statistics(), b.statistics()
    assert sa.local_ops == 1 and sb.remote_ops_applied == 1
    assert sa.frames_sent >= 3 and sb.frames_received >= 2
    assert sa.outbox_depth == 0 and sa.collections == ("c",)


def test_regression_lost_fan_out_is_recovered_at_the_next_push(wire: Wire) -> None:
    """A live change lost on the way to B is fetched again once B pushes and the
    ack shows the gap (B used to stay behind while looking synced)."""
    a, b = wire.replica(), wire.replica()
    a.collection("c")
    b.collection("c")
    wire.pump()
    b_conn = next(conn for conn, r in wire.conns.items() if r is b)
    wire.down_filter = lambda conn, frame: (
        not (conn == b_conn and isinstance(decode(frame), Changes))
    )
    a.collection("c").insert("x", {})
    wire.pump()
    wire.down_filter = None
    assert b.collection("c").to_dict() == {}
    b.collection("c").insert("y", {})
    wire.pump()
    assert converged(a, b) == {"x": {}, "y": {}}


def test_another_server_store_resets_the_cursors_regression() -> None:
    """A replica that meets a different server store (another server, or one
    restored from a backup) forgets its cursors and fetches everything again,
    instead of skipping operations numbered below its old cursor."""
    from leptos_sync.hub import Hub
    from leptos_sync.hubstore import HubStore

    def sync(replica: Replica, hub: Hub, conn: int) -> None:
        hub.connect(conn)
        replica.connected()
        for _ in range(20):
            frames = replica.take_outgoing()
            if not frames:
                break
            for frame in frames:
                for out in hub.handle(conn, frame):
                    for reply in out.frames:
                        replica.receive(reply)
        hub.disconnect(conn)
        replica.disconnected()

    first, second = Hub(HubStore.memory()), Hub(HubStore.memory())
    writer = Replica(Storage.memory())
    for i in range(5):
        writer.collection("c").insert(f"w{i}", {"i": i})
    sync(writer, first, 1)
    other = Replica(Storage.memory())
    other.collection("c").insert("o", {"from": "second"})
    sync(other, second, 2)

    reader = Replica(Storage.memory())
    reader.collection("c")
    sync(reader, first, 3)
    assert reader.session.cursor("c") == first.store.head("c") > 0
    sync(reader, second, 4)
    # The second store numbers its one operation 1: below the old cursor, and
    # still fetched.
    assert reader.collection("c").get("o") == {"from": "second"}
    assert reader.session.known_server == second.store.server_id
    assert reader.storage.load_state("server_id") == second.store.server_id.encode()


def _hub_ops(wire: Wire, name: str = "c") -> list[Any]:
    return wire.hub.store.read(name, 0, 100_000)


def test_changes_made_offline_travel_as_one_operation_each_stored_once(
    tmp_path: Path, wire: Wire
) -> None:
    """Changes that wait together are pushed as one merged operation; the
    store's outbox holds that one entry; every change reaches the others once."""
    a = wire.replica(Storage.sqlite(tmp_path / "a.sqlite3"))
    b = wire.replica()
    a.collection("c").insert("r", {"t": fields.text(), "n": fields.counter()})
    b.collection("c")
    wire.pump()
    wire.disconnect(a)
    text, counter = (
        a.collection("c").text("r", "t"),
        a.collection("c").counter("r", "n"),
    )
    for i in range(200):
        text.insert(i, "x")
        counter.increment(1)
    assert a.storage.outbox_depth() == 400

    wire.connect(a)
    wire.pump()
    assert a.statistics().local_ops_merged == 399
    assert len(_hub_ops(wire)) == 2  # the insert, then one merged operation
    procs.assert_changes_stored_once([op.data for op in _hub_ops(wire)])
    assert converged(a, b)["r"] == {"t": "x" * 200, "n": 200}
    assert a.collection("c").meta("r").version == 401  # every change counted
    assert a.storage.outbox_depth() == 0


def test_a_merged_push_lost_with_its_sender_goes_again_unchanged(
    tmp_path: Path, wire: Wire
) -> None:
    """The merge rewrites the store's outbox in one transaction: after a crash
    the replica pushes exactly the operation it pushed before, which the hub
    recognises as a resend (not a conflicting one)."""
    path = tmp_path / "a.sqlite3"
    a = wire.replica(Storage.sqlite(path))
    b = wire.replica()
    a.collection("c")
    b.collection("c")
    wire.pump()
    wire.disconnect(a)
    for i in range(20):
        a.collection("c").insert(f"r{i}", {"i": i})
    # Reconnect: the merged push reaches the hub, but its ack is lost, and the
    # replica dies before hearing anything.
    wire.down_filter = lambda conn, frame: not isinstance(decode(frame), Ack)
    wire.connect(a)
    wire.pump()
    pushed = _hub_ops(wire)
    assert len(pushed) == 1 and a.storage.outbox_depth() == 1
    wire.disconnect(a)
    a.close()
    wire.down_filter = None

    again = wire.replica(Storage.sqlite(path))
    wire.pump()
    stats = wire.hub.statistics()
    assert stats.ops_duplicate == 1 and not stats.rejected
    assert _hub_ops(wire) == pushed
    assert again.outbox_depth() == 0 and again.storage.outbox_depth() == 0
    assert sorted(converged(again, b)) == [f"r{i}" for i in sorted(range(20), key=str)]


def test_adopted_updates_are_pushed_one_operation_each(wire: Wire) -> None:
    """Updates adopted from another document (apply_update) are not this
    replica's history: they are never merged, whatever waits with them."""
    a, b = wire.replica(), wire.replica()
    a.collection("c").insert("r", {"t": fields.text()})
    b.collection("c")
    wire.pump()
    editor = LoroDoc()
    editor.import_(a.collection("c").export_snapshot())
    body = editor.get_map("records").get("r").container.get("t").container
    updates: list[bytes] = []
    sub = editor.subscribe_local_update(lambda u: updates.append(bytes(u)) or True)
    wire.disconnect(a)
    for i in range(5):
        body.insert(i, "y")
        editor.commit()
        a.collection("c").apply_update(updates[-1])
        a.collection("c").text("r", "t").insert(0, "a")  # an own change between
    del sub
    wire.connect(a)
    wire.pump()
    # Five adopted updates alone, and the own changes merged between them
    # only where they follow one another (they never do here).
    assert a.statistics().local_ops_merged == 0
    assert len(_hub_ops(wire)) == 1 + 10
    assert converged(a, b)["r"]["t"].count("y") == 5


def test_regression_a_peer_clock_years_ahead_does_not_drag_the_others(
    wire: Wire,
) -> None:
    """Operations stamped decades ahead sync, but the receiver's clock does not
    follow them: its own writes stay at its own time (they used to jump ahead
    with the peer's, up to timestamps SQLite cannot store)."""
    a = wire.replica()
    skewed_clock = ManualClock()
    skewed_clock.set_wall(datetime(2090, 1, 1, tzinfo=UTC))
    b = Replica(Storage.memory(), clock=skewed_clock)
    wire.connect(b)
    b.collection("c").insert("from-the-future", {})
    a.collection("c")
    wire.pump()
    assert "from-the-future" in a.collection("c")
    a.collection("c").insert("mine", {})
    wire.pump()
    assert a.collection("c").meta("mine").updated.to_datetime().year < 2090
    assert a.statistics().timestamps_too_far_ahead >= 1
    assert sorted(converged(a, b)) == ["from-the-future", "mine"]


def test_regression_a_transaction_larger_than_an_operation_travels_in_parts(
    wire: Wire,
) -> None:
    """A 9 MB transaction (the operation limit is 4 MiB) is pushed as
    consecutive parts and arrives whole; it used to be refused by the server
    forever, blocking everything written after it."""
    a, b = wire.replica(), wire.replica()
    a.collection("c")
    b.collection("c")
    wire.pump()
    with a.collection("c").transaction():
        for i in range(10):
            a.collection("c").insert(f"big{i}", {"v": "x" * 900_000})
    a.collection("c").insert("after", {})
    wire.pump()
    assert a.outbox_depth() == 0 and not wire.hub.statistics().rejected
    assert len(_hub_ops(wire)) >= 3
    assert all(len(op.data) <= 4 * 1024 * 1024 for op in _hub_ops(wire))
    state = converged(a, b)
    assert sorted(state) == ["after", *(f"big{i}" for i in range(10))]
    assert state["big9"] == {"v": "x" * 900_000}


def test_oversized_text_inserts_and_adopted_updates_are_refused_unapplied(
    wire: Wire,
) -> None:
    """A single edit that could never travel is refused before it is applied."""
    a = wire.replica()
    coll = a.collection("c")
    coll.insert("r", {"t": fields.text("ok")})
    with pytest.raises(InvalidValueError, match="insert it in parts"):
        coll.text("r", "t").insert(0, "y" * (2 << 20))
    other = LoroDoc()
    noise = "".join(random.Random(1).choices("abcdefghijklmnop", k=5 << 20))
    other.get_text("t").insert(0, noise)
    other.commit()
    with pytest.raises(InvalidValueError, match="adopt it in smaller parts"):
        coll.apply_update(bytes(other.export(ExportMode.Snapshot())))
    assert coll.get("r") == {"t": "ok"} and a.outbox_depth() == 1


def test_a_batch_travels_as_one_operation_holding_every_change(wire: Wire) -> None:
    """Changes of every field kind made in batches arrive whole: each batch is
    one operation per collection, each change keeps its own metadata."""
    rng = random.Random(11)
    a, b = wire.replica(), wire.replica()
    coll = a.collection("c")
    b.collection("c")
    coll.insert(
        "r",
        {"t": fields.text("seed"), "n": fields.counter(), "l": fields.list([1])},
    )
    wire.pump()
    base = len(_hub_ops(wire))
    for round_ in range(5):
        with a.batch():
            for step in range(200):
                kind = rng.randrange(5)
                text = coll.text("r", "t")
                if kind == 0:
                    text.insert(rng.randint(0, len(text)), rng.choice("abcdé😀"))
                elif kind == 1 and len(text) > 1:
                    text.delete(rng.randrange(len(text) - 1), rng.randint(1, 2))
                elif kind == 2:
                    coll.counter("r", "n").increment(rng.randint(-3, 3))
                elif kind == 3:
                    coll.update("r", {f"k{step % 7}": round_ * 1000 + step})
                else:
                    coll.list("r", "l").append(step)
        wire.pump()
    assert len(_hub_ops(wire)) == base + 5
    assert a.collection("c").meta("r").version == 1 + 1000
    procs.assert_changes_stored_once([op.data for op in _hub_ops(wire)])
    converged(a, b)
    assert not b.collection("c").has_pending()


def test_regression_a_batch_that_raises_still_stores_its_changes(
    tmp_path: Path,
) -> None:
    """Loro has no rollback: what a failing batch changed is stored and synced
    like any change, and the exception goes on (the batch's outbox rows used
    to be rolled back while the document kept the changes)."""
    path = tmp_path / "a.sqlite3"
    a = Replica(Storage.sqlite(path))
    with pytest.raises(RuntimeError, match="boom"), a.batch():
        a.collection("c").insert("kept", {"v": 1})
        raise RuntimeError("boom")
    assert a.storage.outbox_depth() == 1 and a.outbox_depth() == 1
    a.close()
    again = Replica(Storage.sqlite(path))
    assert again.collection("c").get("kept") == {"v": 1}
    assert again.outbox_depth() == 1
    again.close()


def test_a_batch_inside_a_transaction_loses_nothing(wire: Wire) -> None:
    """A batch that ends inside an open transaction: the transaction's commit
    (begun before the batch ended) still becomes an operation."""
    a, b = wire.replica(), wire.replica()
    coll = a.collection("c")
    b.collection("c")
    with coll.transaction():
        with a.batch():
            coll.insert("in-batch", {})
        coll.insert("after-batch", {})
    coll.insert("later", {})
    wire.pump()
    assert sorted(converged(a, b)) == ["after-batch", "in-batch", "later"]
    assert a.outbox_depth() == 0


def test_regression_a_damaged_server_id_record_restarts_the_cursors(
    tmp_path: Path, wire: Wire
) -> None:
    """A flipped byte in the recorded server id made the store unopenable
    (UnicodeDecodeError); now the cursors restart at the next welcome and
    everything is fetched again."""
    import sqlite3

    path = tmp_path / "a.sqlite3"
    a = wire.replica(Storage.sqlite(path))
    other = wire.replica()
    other.collection("c").insert("r1", {})
    a.collection("c")
    wire.pump()
    wire.disconnect(a)
    a.close()
    db = sqlite3.connect(path)
    db.execute("UPDATE state SET value = ? WHERE key = 'server_id'", (b"\xf7\x00ab",))
    db.commit()
    db.close()

    again = wire.replica(Storage.sqlite(path))
    other.collection("c").insert("r2", {})
    wire.pump()
    assert sorted(converged(again, other)) == ["r1", "r2"]
    assert again.session.known_server == wire.hub.store.server_id
    again.close()


def test_regression_changes_never_pushed_are_merged_after_a_restart(
    tmp_path: Path, wire: Wire
) -> None:
    """The store records which outbox entries were pushed: after a restart the
    ones never pushed are merged as before it, those pushed once go again as
    they were (they used to be pushed one by one, all of them)."""
    path = tmp_path / "a.sqlite3"
    a = wire.replica(Storage.sqlite(path))
    b = wire.replica()
    a.collection("c")
    b.collection("c")
    wire.pump()
    wire.up_filter = lambda conn, frame: wire.conns.get(conn) is not a
    for i in range(3):  # pushed one by one, and lost on the way
        a.collection("c").insert(f"pushed{i}", {})
        wire.pump()
    wire.disconnect(a)
    wire.up_filter = None
    for i in range(40):  # made offline: never pushed
        a.collection("c").insert(f"offline{i:02d}", {})
    a.close()

    again = wire.replica(Storage.sqlite(path))
    wire.pump()
    ops = _hub_ops(wire)
    assert len(ops) == 3 + 1
    assert again.statistics().local_ops_merged == 39
    procs.assert_changes_stored_once([op.data for op in ops])
    assert len(converged(again, b)) == 43
    again.close()


def test_a_store_of_the_first_format_takes_every_outbox_entry_for_pushed(
    tmp_path: Path,
) -> None:
    """Format 1 did not record pushes: upgrading marks every stored entry as
    possibly pushed, so none is merged under an id the server may know."""
    import sqlite3

    path = tmp_path / "old.sqlite3"
    store = Storage.sqlite(path)
    store.append_local("c", 1, 1, b"one")
    store.append_local("c", 2, 2, b"two")
    store.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE outbox DROP COLUMN pushed")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    upgraded = Storage.sqlite(path)
    assert [op.pushed for op in upgraded.load().outbox] == [True, True]
    upgraded.append_local("c", 3, 3, b"three")
    assert [op.pushed for op in upgraded.load().outbox] == [True, True, False]
    upgraded.close()
