"""Tests of the client session state machine (pure: messages in, effects out)."""

from __future__ import annotations

import pytest

from leptos_sync.errors import ProtocolError
from leptos_sync.protocol import (
    Ack,
    Changes,
    Error,
    Hello,
    Op,
    Ping,
    Pong,
    Pull,
    Push,
    RemoteOp,
    Snapshot,
    Welcome,
)
from leptos_sync.session import (
    Acked,
    ApplyRemote,
    ApplySnapshot,
    ClientSession,
    Effect,
    Live,
    Send,
    ServerError,
    SessionState,
)

ME, OTHER = 10, 20
SECOND = 1_000_000_000


def sent(effects: list[Effect]) -> list[object]:
    return [e.message for e in effects if isinstance(e, Send)]


def ready(session: ClientSession, **welcome: int) -> list[Effect]:
    session.connected()
    return session.receive(
        Welcome("hub", welcome.get("frame", 1 << 24), welcome.get("batch", 10_000))
    )


def op(counter: int) -> Op:
    return Op(counter, counter, f"op{counter}".encode())


def local(session: ClientSession, counter: int) -> list[Effect]:
    """A local op, then the flush the replica does when it takes outgoing frames."""
    session.local_op("c", op(counter))
    return session.flush()


def remote(seq: int, replica: int = OTHER, counter: int | None = None) -> RemoteOp:
    return RemoteOp(seq, replica, counter or seq, seq, f"r{seq}".encode())


def test_connect_says_hello_and_welcome_pulls_every_collection() -> None:
    """connected() sends a hello; the welcome makes it ready and pulls from cursors."""
    session = ClientSession(ME, token="tok")
    session.add_collection("a", cursor=4)
    session.add_collection("b")
    assert sent(session.connected()) == [Hello(ME, True, "tok")]
    assert session.state is SessionState.HANDSHAKING
    effects = session.receive(Welcome("hub", 1 << 20, 100))
    assert session.state is SessionState.READY
    assert sent(effects) == [Pull("a", 4), Pull("b", 0)]
    assert session.receive(Welcome("hub", 1 << 20, 100)) == []  # duplicated welcome


def test_welcome_outside_a_handshake_is_a_protocol_error() -> None:
    """A welcome before connecting is refused."""
    with pytest.raises(ProtocolError):
        ClientSession(ME).receive(Welcome("hub", 1, 1))


def test_local_ops_are_pushed_when_ready_and_kept_when_offline() -> None:
    """Offline ops wait in the outbox and go out, in order, once ready."""
    session = ClientSession(ME)
    session.add_collection("c")
    assert local(session, 1) == []
    local(session, 2)
    assert session.outbox_depth() == 2
    pushes = [m for m in sent(ready(session)) if isinstance(m, Push)]
    assert pushes == [Push("c", (op(1), op(2)))]
    assert session.local_op("c", op(3)) == []
    assert sent(session.flush()) == [Push("c", (op(3),))]


def test_batches_respect_max_ops_and_the_servers_limit() -> None:
    """Pushes are split by max_batch_ops, lowered by the welcome's limit."""
    session = ClientSession(ME, max_batch_ops=100)
    session.add_collection("c", outbox=[op(i) for i in range(1, 8)])
    pushes = [m for m in sent(ready(session, batch=3)) if isinstance(m, Push)]
    assert [len(p.ops) for p in pushes] == [3, 3, 1]


def test_window_limits_batches_in_flight() -> None:
    """At most `window` batches are in flight; an ack lets the next one go."""
    session = ClientSession(ME, max_batch_ops=1, window=2)
    session.add_collection("c", outbox=[op(i) for i in range(1, 5)])
    assert len([m for m in sent(ready(session)) if isinstance(m, Push)]) == 2
    effects = session.receive(Ack("c", (1,), (1,)))
    assert sent(effects) == [Push("c", (op(3),))]


def test_ack_removes_ops_and_advances_the_cursor() -> None:
    """An ack drops the ops from the outbox and moves the cursor over their seqs."""
    session = ClientSession(ME)
    session.add_collection("c")
    ready(session)
    local(session, 1)
    local(session, 2)
    effects = session.receive(Ack("c", (1, 2), (1, 2)))
    assert Acked("c", (1, 2), 2, effects[0].round_trips_ns) in effects  # type: ignore[union-attr]
    assert session.outbox_depth() == 0 and session.cursor("c") == 2
    assert session.receive(Ack("c", (1, 2), (1, 2)))[0] == Acked("c", (), 2, ())


def test_ack_above_a_gap_does_not_move_the_cursor() -> None:
    """Seqs above a gap are remembered, never skipped over."""
    session = ClientSession(ME)
    session.add_collection("c")
    ready(session)
    local(session, 1)
    session.receive(Ack("c", (1,), (3,)))
    assert session.cursor("c") == 0
    session.receive(Changes("c", (remote(1), remote(2)), True))
    assert session.cursor("c") == 3


def test_changes_are_applied_once_and_make_the_collection_live() -> None:
    """Changes past the cursor are applied; repeats are skipped; live is reported."""
    session = ClientSession(ME)
    session.add_collection("c")
    ready(session)
    effects = session.receive(Changes("c", (remote(1), remote(2)), True))
    assert effects[0] == ApplyRemote("c", (remote(1), remote(2)), 2)
    assert Live("c") in effects and session.is_live("c")
    assert session.receive(Changes("c", (remote(1), remote(2)), True)) == []
    assert session.statistics().ops_skipped == 2


def test_own_op_in_changes_counts_as_acknowledged_and_is_applied() -> None:
    """Our own op coming back (its ack was lost) is acked and handed to the replica."""
    session = ClientSession(ME)
    session.add_collection("c")
    ready(session)
    local(session, 1)
    mine = remote(1, ME, 1)
    effects = session.receive(Changes("c", (mine,), True))
    assert ApplyRemote("c", (), 1, (mine,)) in effects
    assert any(isinstance(e, Acked) and e.counters == (1,) for e in effects)
    assert session.outbox_depth() == 0


def test_gap_in_live_changes_triggers_a_new_pull() -> None:
    """A live change above a gap pulls again from the cursor."""
    session = ClientSession(ME)
    session.add_collection("c")
    ready(session)
    session.receive(Changes("c", (remote(1),), True))
    effects = session.receive(Changes("c", (remote(3),), True))
    assert Pull("c", 1) in sent(effects)
    assert session.statistics().repulls == 1
    session.receive(Changes("c", (remote(2), remote(3)), True))
    assert session.cursor("c") == 3


def test_unacknowledged_batches_are_resent_after_the_ack_timeout() -> None:
    """poll() pushes again what was not acknowledged within ack_timeout."""
    session = ClientSession(ME, ack_timeout_ns=30 * SECOND)
    session.add_collection("c")
    ready(session)
    session.receive(Changes("c", (), True))
    local(session, 1)
    assert session.poll(29 * SECOND) == []
    assert sent(session.poll(30 * SECOND)) == [Push("c", (op(1),))]
    assert session.statistics().resends == 1


def test_unanswered_pull_is_sent_again_after_the_pull_timeout() -> None:
    """poll() pulls again when a pull is not answered within pull_timeout."""
    session = ClientSession(ME, pull_timeout_ns=10 * SECOND)
    session.add_collection("c", cursor=5)
    ready(session)
    assert session.poll(9 * SECOND) == []
    assert sent(session.poll(10 * SECOND)) == [Pull("c", 5)]


def test_disconnect_returns_in_flight_ops_to_unsent() -> None:
    """After a disconnect, in-flight ops go out again on the next connection."""
    session = ClientSession(ME)
    session.add_collection("c")
    ready(session)
    local(session, 1)
    session.disconnected()
    assert session.state is SessionState.DISCONNECTED and not session.is_live("c")
    assert session.outbox_depth() == 1
    pushes = [m for m in sent(ready(session)) if isinstance(m, Push)]
    assert pushes == [Push("c", (op(1),))]


def test_regression_two_disconnects_do_not_push_an_op_twice() -> None:
    """Disconnecting twice before the handshake completes queues each op once
    (in-flight ops used to stay in flight too, so one push carried them twice
    and the SQLite hub refused it)."""
    session = ClientSession(ME)
    session.add_collection("c")
    ready(session)
    local(session, 1)
    session.disconnected()
    session.connected()
    session.disconnected()
    assert session.outbox_depth() == 1
    pushes = [m for m in sent(ready(session)) if isinstance(m, Push)]
    assert pushes == [Push("c", (op(1),))]


def test_snapshot_moves_the_cursor_and_a_reset_snapshot_starts_over() -> None:
    """A snapshot jumps the cursor; one at 0 (store replaced) resets it."""
    session = ClientSession(ME)
    session.add_collection("c", cursor=7)
    ready(session)
    assert session.receive(Snapshot("c", 20, b"s")) == [ApplySnapshot("c", b"s", 20)]
    assert session.cursor("c") == 20
    assert session.receive(Snapshot("c", 20, b"s")) == []
    assert session.receive(Snapshot("c", 0, b"")) == [ApplySnapshot("c", b"", 0)]
    assert session.cursor("c") == 0


def test_reset_cursor_pulls_everything_again() -> None:
    """reset_cursor() forgets the cursor and pulls from zero."""
    session = ClientSession(ME)
    session.add_collection("c", cursor=5)
    ready(session)
    assert sent(session.reset_cursor("c")) == [Pull("c", 0)]


def test_ping_pong_and_server_errors() -> None:
    """Pings are answered; error messages become ServerError effects."""
    session = ClientSession(ME)
    ready(session)
    assert sent(session.receive(Ping(5))) == [Pong(5)]
    assert session.receive(Pong(5)) == []
    (effect,) = session.receive(Error("malformed", "bad", True))
    assert isinstance(effect, ServerError) and effect.fatal
    assert effect.error.code == "malformed"


def test_messages_a_server_never_sends_are_protocol_errors() -> None:
    """A push or changes for an unknown collection are refused."""
    session = ClientSession(ME)
    ready(session)
    with pytest.raises(ProtocolError):
        session.receive(Push("c", (op(1),)))
    with pytest.raises(ProtocolError):
        session.receive(Changes("never-pulled", (), True))


def test_regression_ack_above_a_gap_in_a_live_collection_pulls_again() -> None:
    """An ack whose seq lies above a gap in a live collection means a change
    was lost on the way: the session pulls again (it used to wait forever)."""
    session = ClientSession(ME)
    session.add_collection("c")
    ready(session)
    session.receive(Changes("c", (remote(1),), True))
    local(session, 1)
    effects = session.receive(Ack("c", (1,), (3,)))
    assert Pull("c", 1) in sent(effects)
    assert not session.is_live("c")
    session.receive(Changes("c", (remote(2),), True))
    assert session.cursor("c") == 3 and session.is_live("c")


class Merger:
    """A ``coalesce`` callback that merges whole runs and records each call."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, name: str, ops: list[Op]) -> list[Op]:
        self.calls.append([o.counter for o in ops])
        data = b"+".join(o.data for o in ops)
        return [Op(ops[-1].counter, ops[-1].hlc, data)]


def test_waiting_ops_are_merged_as_they_are_cut_into_a_push() -> None:
    """Ops that wait together go as one op under the highest counter."""
    merger = Merger()
    session = ClientSession(ME, coalesce=merger)
    for counter in (1, 2, 3):
        session.local_op("c", op(counter))
    pushes = [m for m in sent(ready(session)) if isinstance(m, Push)]
    assert merger.calls == [[1, 2, 3]]
    assert pushes == [Push("c", (Op(3, 3, b"op1+op2+op3"),))]
    assert session.outbox_depth() == 1
    # The merged op is acknowledged like any other.
    session.receive(Ack("c", (3,), (1,)))
    assert session.outbox_depth() == 0


def test_an_op_once_pushed_is_never_merged_again() -> None:
    """After a disconnect the op pushed before goes again unchanged, and only
    the ops made since are merged (a known id keeps its content)."""
    merger = Merger()
    session = ClientSession(ME, coalesce=merger)
    ready(session)
    local(session, 1)
    session.disconnected()
    for counter in (2, 3):
        session.local_op("c", op(counter))
    pushes = [m for m in sent(ready(session)) if isinstance(m, Push)]
    assert merger.calls == [[2, 3]]
    assert [o.counter for p in pushes for o in p.ops] == [1, 3]
    assert pushes[0].ops[0] == op(1)


def test_ops_loaded_from_the_store_are_never_merged() -> None:
    """A restarted replica may have pushed its stored outbox before: it goes
    as it is; later ops are merged."""
    merger = Merger()
    session = ClientSession(ME, coalesce=merger)
    session.add_collection("c", 0, [op(1), op(2)])
    session.local_op("c", op(3))
    session.local_op("c", op(4))
    pushes = [m for m in sent(ready(session)) if isinstance(m, Push)]
    assert merger.calls == [[3, 4]]
    assert [o.counter for p in pushes for o in p.ops] == [1, 2, 4]


def test_merging_respects_the_batch_byte_budget() -> None:
    """A run is merged only as far as the push's byte budget reaches."""
    merger = Merger()
    session = ClientSession(ME, coalesce=merger, max_batch_bytes=10)
    for counter in range(1, 6):
        session.local_op("c", op(counter))  # 3 bytes each
    ready(session)
    assert all(len(call) <= 3 for call in merger.calls)
    assert sorted(c for call in merger.calls for c in call) == [1, 2, 3, 4, 5]


def test_regression_a_large_waiting_op_does_not_stop_the_merging_of_the_rest() -> None:
    """A never-pushed op larger than the merge budget goes alone, and the small
    ones after it are still merged (they used to go one op each for the rest
    of the push)."""
    merger = Merger()
    session = ClientSession(ME, coalesce=merger)
    session.local_op("c", Op(1, 1, b"x" * (300 * 1024)))
    for counter in range(2, 50):
        session.local_op("c", op(counter))
    pushes = [m for m in sent(ready(session)) if isinstance(m, Push)]
    counters = [o.counter for p in pushes for o in p.ops]
    assert counters == [1, 49]
    assert merger.calls == [list(range(2, 50))]
