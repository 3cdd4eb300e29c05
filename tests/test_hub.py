"""Tests of the hub: handshake, push/ack, fan-out, pulls, snapshots, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from loro import ExportMode, LoroDoc

from leptos_sync import Hub, HubStore
from leptos_sync.hub import Outgoing
from leptos_sync.protocol import (
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
    Snapshot,
    Status,
    Welcome,
    decode,
    encode,
)


def updates(peer: int, count: int) -> list[bytes]:
    """``count`` consecutive Loro updates made by ``peer``."""
    doc = LoroDoc()
    doc.peer_id = peer
    out = []
    for i in range(count):
        before = doc.oplog_vv
        doc.get_map("records").insert(f"k{i}", i)
        doc.commit()
        out.append(bytes(doc.export(ExportMode.Updates(before))))
    return out


def messages(outgoing: list[Outgoing], conn: int | None = None) -> list[Message]:
    return [
        decode(frame)
        for out in outgoing
        if conn is None or out.conn == conn
        for frame in out.frames
    ]


def joined(hub: Hub, conn: int, replica: int, *pulls: str) -> None:
    hub.connect(conn)
    hub.handle(conn, encode(Hello(replica)))
    for name in pulls:
        hub.handle(conn, encode(Pull(name, 0)))


def test_hello_is_answered_with_welcome_and_limits() -> None:
    """A hello gets the server's id and limits."""
    hub = Hub(HubStore.memory())
    hub.connect(1)
    (welcome,) = messages(hub.handle(1, encode(Hello(7))))
    assert isinstance(welcome, Welcome)
    assert welcome.server == hub.store.server_id
    assert welcome.max_ops_per_batch == hub.limits.max_ops_per_batch


def test_messages_before_hello_get_an_error_and_a_close() -> None:
    """Anything but a hello first is a protocol error that closes the link."""
    hub = Hub(HubStore.memory())
    hub.connect(1)
    (out,) = hub.handle(1, encode(Pull("c", 0)))
    assert out.close
    (error,) = messages([out])
    assert isinstance(error, Error) and error.fatal and error.code == "protocol"


def test_push_is_acknowledged_with_seqs_and_fanned_out_to_subscribers() -> None:
    """A push is stored, acknowledged to the pusher and sent live to others."""
    hub = Hub(HubStore.memory())
    joined(hub, 1, 11, "c")
    joined(hub, 2, 22, "c")
    joined(hub, 3, 33)  # never pulled "c": gets nothing
    data = updates(11, 2)
    out = hub.handle(1, encode(Push("c", (Op(1, 5, data[0]), Op(2, 6, data[1])))))
    assert messages(out, 1) == [Ack("c", (1, 2), (1, 2))]
    (changes,) = messages(out, 2)
    assert isinstance(changes, Changes) and changes.live
    assert [(op.seq, op.replica, op.counter) for op in changes.ops] == [
        (1, 11, 1),
        (2, 11, 2),
    ]
    assert messages(out, 3) == []
    assert hub.statistics().ops_stored == 2 and hub.statistics().ops_fanned_out == 2


def test_resent_push_is_acknowledged_again_but_not_fanned_out() -> None:
    """A duplicate push gets the original seqs and no second fan-out."""
    hub = Hub(HubStore.memory())
    joined(hub, 1, 11, "c")
    joined(hub, 2, 22, "c")
    push = encode(Push("c", (Op(1, 5, updates(11, 1)[0]),)))
    hub.handle(1, push)
    out = hub.handle(1, push)
    assert messages(out) == [Ack("c", (1,), (1,))]
    assert hub.statistics().ops_duplicate == 1


def test_pull_returns_the_log_after_since_in_pages_and_goes_live() -> None:
    """A pull gets every op after `since`, paged, the last page marked live."""
    hub = Hub(HubStore.memory(), page_ops=2)
    joined(hub, 1, 11)
    data = updates(11, 5)
    hub.handle(1, encode(Push("c", tuple(Op(i + 1, i, d) for i, d in enumerate(data)))))
    joined(hub, 2, 22)
    pages = messages(hub.handle(2, encode(Pull("c", 1))))
    assert [[op.seq for op in p.ops] for p in pages] == [[2, 3], [4, 5], []]  # type: ignore[attr-defined]
    assert [p.live for p in pages] == [False, False, True]  # type: ignore[attr-defined]


def test_pull_past_the_head_resets_the_client_with_an_empty_snapshot() -> None:
    """A cursor past the head (store replaced by an older copy) gets a reset."""
    hub = Hub(HubStore.memory())
    joined(hub, 1, 11)
    first, *rest = messages(hub.handle(1, encode(Pull("c", 9))))
    assert first == Snapshot("c", 0, b"")
    assert rest == [Changes("c", (), True)]


def test_far_behind_client_gets_a_snapshot_then_the_rest() -> None:
    """A client more than snapshot_after behind gets a snapshot first."""
    hub = Hub(HubStore.memory(), snapshot_after=3)
    joined(hub, 1, 11)
    data = updates(11, 4)
    hub.handle(1, encode(Push("c", tuple(Op(i + 1, i, d) for i, d in enumerate(data)))))
    joined(hub, 2, 22)
    snapshot, changes = messages(hub.handle(2, encode(Pull("c", 0))))
    assert isinstance(snapshot, Snapshot) and snapshot.seq == 4
    doc = LoroDoc()
    doc.import_(snapshot.data)
    assert doc.get_deep_value() == {"records": {f"k{i}": i for i in range(4)}}
    assert changes == Changes("c", (), True)
    assert hub.statistics().snapshots_sent == 1


def test_regression_no_snapshot_while_an_op_waits_for_its_dependency() -> None:
    """The hub does not snapshot a log holding an op whose dependency has not
    arrived (the snapshot left it out while its seq counted as covered, so far
    behind clients never got it)."""
    hub = Hub(HubStore.memory(), snapshot_after=2)
    joined(hub, 1, 11)
    first, second, third = updates(11, 3)
    # The push of op 1 was lost; ops 2 and 3 arrive first.
    hub.handle(1, encode(Push("c", (Op(2, 2, second), Op(3, 3, third)))))
    assert hub.compact("c") is None
    joined(hub, 2, 22)
    pulled = messages(hub.handle(2, encode(Pull("c", 0))))
    assert not any(isinstance(m, Snapshot) for m in pulled)
    hub.handle(1, encode(Push("c", (Op(1, 1, first),))))
    snap = hub.compact("c")
    assert snap is not None and snap[0] == 3


def test_regression_push_of_bytes_that_are_not_an_update_is_refused() -> None:
    """Op data that is not a CRDT update is refused before it reaches the log
    (it used to be stored and then broke every client's pull)."""
    hub = Hub(HubStore.memory())
    joined(hub, 1, 11, "c")
    good = updates(11, 1)[0]
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF
    for data in (b"garbage", bytes(corrupt)):
        hub.connect(1)
        hub.handle(1, encode(Hello(11)))
        (out,) = hub.handle(1, encode(Push("c", (Op(1, 0, data),))))
        assert out.close
        (error,) = messages([out])
        assert isinstance(error, Error) and error.code == "malformed"
    assert hub.store.head("c") == 0


def test_bad_frame_closes_only_that_connection() -> None:
    """A malformed frame closes its own link; other links keep working."""
    hub = Hub(HubStore.memory())
    joined(hub, 1, 11, "c")
    joined(hub, 2, 22, "c")
    (out,) = hub.handle(2, b"\x01\x00garbage")
    assert out.conn == 2 and out.close
    hub.disconnect(2)
    ack = messages(hub.handle(1, encode(Push("c", (Op(1, 0, updates(11, 1)[0]),)))))
    assert ack == [Ack("c", (1,), (1,))]
    assert hub.statistics().errors == 1 and hub.connection_count == 1


def test_ping_status_and_client_errors() -> None:
    """Pings get pongs, status figures are kept, client errors are logged only."""
    hub = Hub(HubStore.memory())
    joined(hub, 1, 11)
    assert messages(hub.handle(1, encode(Ping(3)))) == [Pong(3)]
    assert hub.handle(1, encode(Pong(3))) == []
    assert hub.handle(1, encode(Status({"outbox": 2.0}))) == []
    assert hub.handle(1, encode(Error("x", "y", False))) == []
    assert hub.statistics().client_status == {11: {"outbox": 2.0}}


def test_server_only_messages_from_a_client_are_refused() -> None:
    """A client sending welcome or changes gets an error and a close."""
    hub = Hub(HubStore.memory())
    joined(hub, 1, 11)
    (out,) = hub.handle(1, encode(Welcome("x", 1, 1)))
    assert out.close


def test_second_hello_from_another_replica_is_refused() -> None:
    """One connection speaks for one replica."""
    hub = Hub(HubStore.memory())
    joined(hub, 1, 11)
    assert messages(hub.handle(1, encode(Hello(11))))[0] == Welcome(
        hub.store.server_id, hub.limits.max_frame_bytes, hub.limits.max_ops_per_batch
    )
    (out,) = hub.handle(1, encode(Hello(12)))
    assert out.close


def test_frames_follow_each_connections_checksum_choice() -> None:
    """A client that asks for no checksums gets frames without them."""
    hub = Hub(HubStore.memory())
    hub.connect(1)
    (out,) = hub.handle(1, encode(Hello(5, checksums=False)))
    assert out.frames[0][1] == 0


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_restarted_hub_continues_from_its_store(kind: str, tmp_path: Path) -> None:
    """A new hub on the same store serves the old log and continues its seqs."""
    store = (
        HubStore.memory() if kind == "memory" else HubStore.sqlite(tmp_path / "h.db")
    )
    hub = Hub(store)
    joined(hub, 1, 11)
    data = updates(11, 2)
    hub.handle(1, encode(Push("c", (Op(1, 0, data[0]),))))
    if kind == "sqlite":
        store.close()
        store = HubStore.sqlite(tmp_path / "h.db")
    hub = Hub(store)
    joined(hub, 1, 11)
    assert messages(
        hub.handle(1, encode(Push("c", (Op(1, 0, data[0]), Op(2, 1, data[1])))))
    )[0] == Ack("c", (1, 2), (1, 2))
    store.close()


def test_regression_pull_pages_are_bounded_in_bytes_not_only_in_operations() -> None:
    """Large operations (merged runs, batches) are served in frames within the
    frame limit; a collection of many large operations used to go out as one
    frame past it, and a new replica could never catch up."""
    from leptos_sync.protocol import Limits

    limits = Limits(max_frame_bytes=64 * 1024)
    hub = Hub(HubStore.memory(), limits=limits)
    joined(hub, 1, 11)
    doc = LoroDoc()
    doc.peer_id = 11
    ops = []
    for i in range(12):  # twelve operations of about 10 KiB each
        before = doc.oplog_vv
        doc.get_map("records").insert(f"k{i}", "x" * 10_000)
        doc.commit()
        ops.append(Op(i + 1, i + 1, bytes(doc.export(ExportMode.Updates(before)))))
    for op in ops:
        hub.handle(1, encode(Push("c", (op,))))
    joined(hub, 2, 22)
    frames = [f for out in hub.handle(2, encode(Pull("c", 0))) for f in out.frames]
    assert len(frames) >= 3
    assert all(len(frame) <= limits.max_frame_bytes // 2 + 1024 for frame in frames)
    pages = [page for page in map(decode, frames) if isinstance(page, Changes)]
    assert len(pages) == len(frames)
    assert [p.live for p in pages] == [False] * (len(pages) - 1) + [True]
    assert [op.seq for p in pages for op in p.ops] == list(range(1, 13))
