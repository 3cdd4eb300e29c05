"""Fuzzing the protocol decoder and the hub with random and mutated frames."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leptos_sync import Hub, HubStore, Replica, Storage, fields
from leptos_sync.clock import ManualClock
from leptos_sync.errors import ProtocolError
from leptos_sync.protocol import (
    FLAG_CRC,
    PROTOCOL_VERSION,
    Ack,
    Changes,
    Error,
    Hello,
    Message,
    Op,
    Ping,
    Pull,
    Push,
    RemoteOp,
    Snapshot,
    Status,
    Welcome,
    crc32c,
    decode,
    encode,
)

# LEPTOS_SYNC_FUZZ_EXAMPLES raises the example count for a longer fuzzing run.
EXAMPLES = int(os.environ.get("LEPTOS_SYNC_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

VALID: list[Message] = [
    Hello(42, True, "token", "client"),
    Welcome("server", 1 << 20, 1000),
    Push("notes", (Op(1, 5, b"\x00\x01\x02"), Op(2, 6, b"abc"))),
    Ack("notes", (1, 2), (3, 4)),
    Pull("notes", 17),
    Changes("notes", (RemoteOp(1, 2, 3, 4, b"data"), RemoteOp(2, 2, 4, 5, b"")), True),
    Snapshot("notes", 9, b"snapshot-bytes"),
    Error("malformed", "message", True),
    Ping(1),
    Status({"a": 1.0}),
]
VALID_FRAMES = [encode(m, checksum=c) for m in VALID for c in (True, False)]


def decodes_or_protocol_error(frame: bytes) -> Message | None:
    try:
        return decode(frame)
    except ProtocolError:
        return None


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes_raise_only_protocol_errors(frame: bytes) -> None:
    """Random bytes either decode or raise a ProtocolError subclass."""
    decodes_or_protocol_error(frame)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bodies_behind_a_valid_header_raise_only_protocol_errors(
    body: bytes,
) -> None:
    """A valid header and CRC around random bytes reach the msgpack layer."""
    head = bytes((PROTOCOL_VERSION, FLAG_CRC)) + body
    decodes_or_protocol_error(head + crc32c(head).to_bytes(4, "big"))
    decodes_or_protocol_error(bytes((PROTOCOL_VERSION, 0)) + body)


@FUZZ
@given(st.sampled_from(VALID_FRAMES), st.data())
def test_truncated_valid_frames_raise_only_protocol_errors(
    frame: bytes, data: st.DataObject
) -> None:
    """Every prefix of a valid frame raises a ProtocolError or decodes."""
    cut = data.draw(st.integers(0, len(frame) - 1))
    decodes_or_protocol_error(frame[:cut])


_mutation = st.tuples(
    st.sampled_from(["flip", "set", "insert", "delete"]),
    st.integers(0, 10_000),
    st.integers(0, 255),
)


@FUZZ
@given(st.sampled_from(VALID_FRAMES), st.lists(_mutation, min_size=1, max_size=6))
def test_mutated_frames_raise_only_protocol_errors(
    frame: bytes, mutations: list[tuple[str, int, int]]
) -> None:
    """Flipped, replaced, inserted and deleted bytes only give ProtocolErrors."""
    data = bytearray(frame)
    for kind, where, value in mutations:
        i = where % max(len(data), 1)
        if kind == "flip" and data:
            data[i] ^= 1 << (value % 8)
        elif kind == "set" and data:
            data[i] = value
        elif kind == "insert":
            data.insert(i, value)
        elif data:
            del data[i]
    decodes_or_protocol_error(bytes(data))


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
    ),
    max_leaves=20,
)


def _frame(items: list[object], checksum: bool) -> bytes:
    body = msgpack.packb(items, use_bin_type=True)
    if not checksum:
        return bytes((PROTOCOL_VERSION, 0)) + body
    head = bytes((PROTOCOL_VERSION, FLAG_CRC)) + body
    return head + crc32c(head).to_bytes(4, "big")


_structured = st.builds(
    lambda code, fields_, checksum: _frame([code, *fields_], checksum),
    st.integers(0, 13),
    st.lists(_value, max_size=5),
    st.booleans(),
)


@FUZZ
@given(_structured)
def test_well_formed_msgpack_with_random_fields_raises_only_protocol_errors(
    frame: bytes,
) -> None:
    """Known type codes with random field values only give ProtocolErrors."""
    decodes_or_protocol_error(frame)


# Fuzzing the hub ------------------------------------------------------------


def _push_frames() -> st.SearchStrategy[bytes]:
    op = st.builds(
        lambda c, h, d: (c, h, d),
        st.integers(0, (1 << 64) - 1),
        st.integers(0, (1 << 64) - 1),
        st.binary(max_size=40),
    )
    return st.builds(
        lambda name, ops, checksum: _frame([3, name, [list(o) for o in ops]], checksum),
        st.sampled_from(["notes", "other", ""]),
        st.lists(op, max_size=4),
        st.booleans(),
    )


_hub_frames = st.one_of(
    st.binary(max_size=64),
    _structured,
    _push_frames(),
    st.builds(
        lambda replica, checksum: _frame([1, replica, checksum, None, "fuzz"], True),
        st.integers(0, (1 << 64) - 1),
        st.booleans(),
    ),
    st.builds(
        lambda name, since: _frame([5, name, since], True),
        st.sampled_from(["notes", "other"]),
        st.integers(0, (1 << 64) - 1),
    ),
    st.sampled_from(VALID_FRAMES),
)


class _Good:
    """Two well-behaved replicas syncing through the hub beside the fuzzer."""

    def __init__(self, hub: Hub, clock: ManualClock) -> None:
        self.hub = hub
        self.replicas = {1: Replica(Storage.memory(), clock=clock)}
        self.replicas[2] = Replica(Storage.memory(), clock=clock)
        for conn, replica in self.replicas.items():
            replica.collection("notes")
            hub.connect(conn)
            replica.connected()
        self.pump()

    def pump(self) -> None:
        for _ in range(1000):
            moved = False
            for conn, replica in self.replicas.items():
                for frame in replica.take_outgoing():
                    moved = True
                    for out in self.hub.handle(conn, frame):
                        assert not out.close, "a good client was disconnected"
                        for reply in out.frames:
                            self.replicas[out.conn].receive(reply)
            if not moved:
                return
        raise AssertionError("frames kept flowing")


def _feed(hub: Hub, conn: int, frames: list[bytes], good: _Good) -> None:
    hub.connect(conn)
    for frame in frames:
        outgoing = hub.handle(conn, frame)
        for out in outgoing:
            messages = [decode(f) for f in out.frames]
            if out.conn in good.replicas:
                # Fan-out of a well-formed push from the fuzzer.
                for reply in out.frames:
                    good.replicas[out.conn].receive(reply)
                continue
            assert out.conn == conn
            if out.close:
                assert isinstance(messages[-1], Error) and messages[-1].fatal
                hub.disconnect(conn)
                hub.connect(conn)
    hub.disconnect(conn)


@contextlib.contextmanager
def _hub_store(kind: str) -> Iterator[HubStore]:
    if kind == "memory":
        yield HubStore.memory()
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = HubStore.sqlite(Path(tmp) / "hub.sqlite3")
        try:
            yield store
        finally:
            store.close()


@settings(
    max_examples=max(EXAMPLES // 3, 20),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(["memory", "sqlite"]),
    batches=st.lists(st.lists(_hub_frames, max_size=8), min_size=1, max_size=4),
)
def test_hub_survives_random_frames_and_good_clients_keep_syncing(
    kind: str, batches: list[list[bytes]]
) -> None:
    """Hub.handle never raises on random frames; a bad frame gets an error frame
    and a close; well-behaved clients beside the fuzzer keep syncing."""
    clock = ManualClock()
    with _hub_store(kind) as store:
        hub = Hub(store)
        good = _Good(hub, clock)
        a, b = good.replicas[1], good.replicas[2]
        for round_, frames in enumerate(batches):
            _feed(hub, 100 + round_, frames, good)
            a.collection("notes").upsert(f"a{round_}", {"n": fields.counter(round_)})
            b.collection("notes").upsert(f"b{round_}", {"round": round_})
            good.pump()
        assert a.collection("notes").to_dict() == b.collection("notes").to_dict()
        for round_ in range(len(batches)):
            assert f"a{round_}" in a.collection("notes")
            assert f"b{round_}" in a.collection("notes")
        assert a.outbox_depth() == b.outbox_depth() == 0


# Regressions found by the fuzzers -------------------------------------------


def test_regression_replica_id_beyond_63_bits_is_refused_not_a_crash() -> None:
    """A hello with a replica id of 2**63 or more is a malformed message (it
    used to pass, and the SQLite hub store then raised OverflowError out of
    Hub.handle on the first push)."""
    with _hub_store("sqlite") as store:
        hub = Hub(store)
        hub.connect(1)
        (out,) = hub.handle(1, _frame([1, (1 << 64) - 1, True, None, "x"], True))
        assert out.close
        (error,) = [decode(f) for f in out.frames]
        assert isinstance(error, Error) and error.code == "malformed"


def test_regression_op_counter_beyond_63_bits_is_refused_not_a_crash() -> None:
    """A push with a counter of 2**63 or more is malformed (it used to raise
    OverflowError out of Hub.handle with the SQLite store)."""
    with _hub_store("sqlite") as store:
        hub = Hub(store)
        hub.connect(1)
        hub.handle(1, encode(Hello(5)))
        (out,) = hub.handle(1, _frame([3, "notes", [[1 << 63, 0, b"x"]]], True))
        assert out.close
        assert decode(out.frames[0]) == Error(
            "malformed",
            decode(out.frames[0]).message,
            True,  # type: ignore[attr-defined]
        )
