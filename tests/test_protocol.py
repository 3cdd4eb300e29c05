"""Tests of the wire protocol: encoding, strict decoding, and bad input."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest

from leptos_sync import Replica, Storage
from leptos_sync.clock import ManualClock
from leptos_sync.errors import (
    ChecksumMismatchError,
    MalformedMessageError,
    MessageTooLargeError,
    ProtocolError,
    UnknownMessageError,
    UnsupportedVersionError,
)
from leptos_sync.protocol import (
    FLAG_CRC,
    PROTOCOL_VERSION,
    Ack,
    Changes,
    Error,
    Hello,
    Limits,
    Message,
    Op,
    Ping,
    Pong,
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

EXAMPLES: list[Message] = [
    Hello(replica=42, checksums=True, token="t0k", client="test/1"),
    Hello(replica=1, checksums=False, token=None),
    Welcome(server="hub-1", max_frame_bytes=1 << 20, max_ops_per_batch=100),
    Push("notes", (Op(1, 5, b"\x00\x01"), Op(2, 6, b"x"))),
    Ack("notes", (1, 2), (10, 11)),
    Pull("notes", 0),
    Pull("notes", 12345),
    Changes("notes", (RemoteOp(1, 7, 1, 5, b"u"), RemoteOp(3, 8, 2, 6, b"v")), True),
    Changes("notes", (), False),
    Snapshot("notes", 9, b"snapshot"),
    Error("malformed", "bad frame", True),
    Ping(7),
    Pong(7),
    Status({"outbox": 3.0, "acked": 10.0}),
]


def body(frame: bytes) -> bytes:
    return frame[2:-4] if frame[1] & FLAG_CRC else frame[2:]


def raw_frame(items: list[object], *, checksum: bool = True) -> bytes:
    packed = msgpack.packb(items, use_bin_type=True)
    if not checksum:
        return bytes((PROTOCOL_VERSION, 0)) + packed
    head = bytes((PROTOCOL_VERSION, FLAG_CRC)) + packed
    return head + crc32c(head).to_bytes(4, "big")


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("checksum", [True, False])
def test_every_message_round_trips(message: Message, checksum: bool) -> None:
    """Every message decodes to an equal message, with or without a checksum."""
    frame = encode(message, checksum=checksum)
    assert frame[0] == PROTOCOL_VERSION
    assert bool(frame[1] & FLAG_CRC) is checksum
    assert decode(frame) == message


def test_frame_layout_is_version_flags_body_crc() -> None:
    """A frame is version, flags, msgpack [type, fields...] and a CRC32C trailer."""
    frame = encode(Pull("c", 3))
    assert frame[:2] == bytes((1, FLAG_CRC))
    assert msgpack.unpackb(body(frame)) == [5, "c", 3]
    assert int.from_bytes(frame[-4:], "big") == crc32c(frame[:-4])


def test_unknown_type_raises_unknown_message() -> None:
    """A type code no message has raises UnknownMessageError."""
    with pytest.raises(UnknownMessageError):
        decode(raw_frame([99, "x"]))


def test_wrong_version_raises_unsupported_version() -> None:
    """A frame for another protocol version raises UnsupportedVersionError."""
    frame = bytearray(encode(Ping(1), checksum=False))
    frame[0] = 2
    with pytest.raises(UnsupportedVersionError):
        decode(bytes(frame))


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_truncated_msgpack_raises_malformed(cut: int) -> None:
    """A body cut short raises MalformedMessageError."""
    frame = encode(Push("notes", (Op(1, 5, b"data" * 4),)), checksum=False)
    with pytest.raises(MalformedMessageError):
        decode(frame[:-cut])


@pytest.mark.parametrize(
    "items",
    [
        [5, "c", "not-an-int"],
        [5, 7, 0],
        [5, "c", -1],
        [5, "c", True],
        [5, "", 0],
        [1, "replica", True, None, "c"],
        [3, "c", [[0, 1, b"x"]]],
        [3, "c", [[1, 1, "text-not-bytes"]]],
        [3, "c", [[1, 1]]],
        [3, "c", []],
        [4, "c", [1, 2], [3]],
        [6, "c", [[2, 1, 1, 0, b"a"], [1, 1, 2, 0, b"b"]], True],
        [6, "c", [], "yes"],
        [11, {"x": "NaN?"}],
        [9],
        [9, 1, 2],
        ["5", "c", 0],
        [1, 1 << 63, True, None, "c"],
    ],
)
def test_wrong_field_types_raise_malformed(items: list[object]) -> None:
    """Fields of the wrong type, count, range or order raise MalformedMessageError."""
    with pytest.raises(MalformedMessageError):
        decode(raw_frame(items))


def test_non_array_body_and_non_bytes_frame_are_malformed() -> None:
    """A body that is not an array, or a frame that is not bytes, is malformed."""
    with pytest.raises(MalformedMessageError):
        decode(raw_frame({"a": 1}))  # type: ignore[arg-type]
    with pytest.raises(MalformedMessageError):
        decode("text")  # type: ignore[arg-type]
    with pytest.raises(MalformedMessageError):
        decode(b"\x01")


def test_oversized_batch_raises_too_large() -> None:
    """A push with more ops than the limit raises MessageTooLargeError."""
    limits = Limits(max_ops_per_batch=4)
    ops = tuple(Op(i + 1, 0, b"x") for i in range(5))
    with pytest.raises(MessageTooLargeError):
        decode(encode(Push("c", ops)), limits)
    assert len(decode(encode(Push("c", ops[:4])), limits).ops) == 4  # type: ignore[attr-defined]


def test_oversized_frame_op_and_name_raise_too_large() -> None:
    """Frames, op data and collection names over their limits are refused."""
    with pytest.raises(MessageTooLargeError):
        decode(encode(Ping(1)), Limits(max_frame_bytes=5))
    with pytest.raises(MessageTooLargeError):
        decode(encode(Push("c", (Op(1, 0, b"x" * 100),))), Limits(max_op_bytes=10))
    with pytest.raises(MessageTooLargeError):
        decode(encode(Pull("c" * 300, 0)))


def test_checksum_mismatch_and_required_checksum() -> None:
    """A flipped bit fails the CRC; a missing CRC fails when one is required."""
    frame = bytearray(encode(Pull("c", 1)))
    frame[4] ^= 0x01
    with pytest.raises(ChecksumMismatchError):
        decode(bytes(frame))
    with pytest.raises(ChecksumMismatchError):
        decode(encode(Pull("c", 1), checksum=False), require_checksum=True)


def test_unknown_flags_are_malformed() -> None:
    """Flag bits this version does not define are refused."""
    frame = bytearray(encode(Ping(1), checksum=False))
    frame[1] = 0x80
    with pytest.raises(MalformedMessageError):
        decode(bytes(frame))


def test_every_error_carries_a_code() -> None:
    """Each ProtocolError subclass has the code the hub puts in error frames."""
    codes = {
        cls.code
        for cls in (
            ProtocolError,
            UnsupportedVersionError,
            UnknownMessageError,
            MalformedMessageError,
            MessageTooLargeError,
            ChecksumMismatchError,
        )
    }
    assert len(codes) == 6


BAD_FRAMES = [
    pytest.param(raw_frame([99]), UnknownMessageError, id="unknown-type"),
    pytest.param(b"\x07\x00\x91\x09", UnsupportedVersionError, id="wrong-version"),
    pytest.param(
        encode(Changes("notes", (RemoteOp(1, 9, 1, 0, b"update"),), True))[:-6],
        ChecksumMismatchError,
        id="truncated",
    ),
    pytest.param(
        raw_frame([6, "notes", "ops", True]), MalformedMessageError, id="types"
    ),
    pytest.param(
        encode(
            Changes(
                "notes", tuple(RemoteOp(i + 1, 9, i + 1, 0, b"x") for i in range(11))
            )
        ),
        MessageTooLargeError,
        id="oversized-batch",
    ),
]


@pytest.mark.parametrize(("frame", "error"), BAD_FRAMES)
def test_bad_frames_leave_the_replica_session_as_it_was(
    frame: bytes, error: type[ProtocolError]
) -> None:
    """A bad frame raises its specific error from Replica.receive and changes
    neither the session nor the store."""
    replica = Replica(
        Storage.memory(), clock=ManualClock(), limits=Limits(max_ops_per_batch=10)
    )
    notes = replica.collection("notes")
    replica.connected()
    replica.receive(encode(Welcome("hub", 1 << 20, 100)))
    notes.insert("n1", {"x": 1})
    replica.take_outgoing()
    before = dataclasses.replace(replica.session.statistics())
    state = (
        notes.to_dict(),
        replica.storage.outbox_depth(),
        replica.session.cursor("notes"),
    )

    with pytest.raises(error):
        replica.receive(frame)

    assert replica.session.statistics() == before
    assert (
        notes.to_dict(),
        replica.storage.outbox_depth(),
        replica.session.cursor("notes"),
    ) == state
    assert replica.take_outgoing() == []
