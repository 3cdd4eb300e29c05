"""The wire protocol: versioned msgpack messages, encoded and validated (pure).

A frame is ``version (1 byte) | flags (1 byte) | msgpack body | [CRC32C (4 bytes)]``.
Flag bit 0 says the frame ends with the big-endian CRC32C of everything before it.
The body is a msgpack array whose first element is the message type code and whose
remaining elements are the message's fields in order. ``docs/protocol.md`` documents
every message and field.

Decoding is strict: every field is type-checked, sizes are bounded, and a bad frame
raises a specific :class:`~leptos_sync.errors.ProtocolError` subclass. Nothing here
does I/O or keeps state, so a bad frame cannot disturb a session.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, ClassVar

import crc32c as _crc32c
import msgpack

from .errors import (
    ChecksumMismatchError,
    MalformedMessageError,
    MessageTooLargeError,
    ProtocolError,
    UnknownMessageError,
    UnsupportedVersionError,
)

__all__ = [
    "PROTOCOL_VERSION",
    "Ack",
    "Changes",
    "Error",
    "Hello",
    "Limits",
    "Message",
    "Op",
    "Ping",
    "Pong",
    "Pull",
    "Push",
    "RemoteOp",
    "Snapshot",
    "Status",
    "Welcome",
    "decode",
    "encode",
]

PROTOCOL_VERSION = 1
FLAG_CRC = 0x01
_KNOWN_FLAGS = FLAG_CRC
_U64 = (1 << 64) - 1
# Replica ids, op counters and sequence numbers are stored as SQLite INTEGERs
# (signed 64-bit), so the wire bounds them to 63 bits like the HLC time part.
_I63 = (1 << 63) - 1


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``."""
    crc: int = _crc32c.crc32c(data)
    return crc


@dataclass(frozen=True)
class Limits:
    """Bounds a decoder enforces; the server and client share the defaults."""

    max_frame_bytes: int = 16 * 1024 * 1024
    max_ops_per_batch: int = 10_000
    max_op_bytes: int = 4 * 1024 * 1024
    max_collection_name: int = 256
    max_text: int = 4096


DEFAULT_LIMITS = Limits()


class MessageType(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    PUSH = 3
    ACK = 4
    PULL = 5
    CHANGES = 6
    SNAPSHOT = 7
    ERROR = 8
    PING = 9
    PONG = 10
    STATUS = 11


@dataclass(frozen=True, slots=True)
class Op:
    """A local operation as the client pushes it (the replica is the session's)."""

    counter: int
    hlc: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RemoteOp:
    """An operation as the server delivers it, with its sequence number."""

    seq: int
    replica: int
    counter: int
    hlc: int
    data: bytes


class Message:
    """Base of every wire message."""

    type: ClassVar[MessageType]

    def fields(self) -> list[Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Hello(Message):
    """Client → server, first frame: who I am and what I speak."""

    type: ClassVar[MessageType] = MessageType.HELLO
    replica: int
    checksums: bool = True
    token: str | None = None
    client: str = "leptos-sync"

    def fields(self) -> list[Any]:
        return [self.replica, self.checksums, self.token, self.client]


@dataclass(frozen=True)
class Welcome(Message):
    """Server → client, answer to hello: the server's identity and limits."""

    type: ClassVar[MessageType] = MessageType.WELCOME
    server: str
    max_frame_bytes: int
    max_ops_per_batch: int

    def fields(self) -> list[Any]:
        return [self.server, self.max_frame_bytes, self.max_ops_per_batch]


@dataclass(frozen=True)
class Push(Message):
    """Client → server: a batch of the client's operations for one collection."""

    type: ClassVar[MessageType] = MessageType.PUSH
    collection: str
    ops: tuple[Op, ...]

    def fields(self) -> list[Any]:
        return [self.collection, [(o.counter, o.hlc, o.data) for o in self.ops]]


@dataclass(frozen=True)
class Ack(Message):
    """Server → client: these operations are durably stored, at these sequences."""

    type: ClassVar[MessageType] = MessageType.ACK
    collection: str
    counters: tuple[int, ...]
    seqs: tuple[int, ...]

    def fields(self) -> list[Any]:
        return [self.collection, list(self.counters), list(self.seqs)]


@dataclass(frozen=True)
class Pull(Message):
    """Client → server: send everything after ``since`` and then keep me live."""

    type: ClassVar[MessageType] = MessageType.PULL
    collection: str
    since: int

    def fields(self) -> list[Any]:
        return [self.collection, self.since]


@dataclass(frozen=True)
class Changes(Message):
    """Server → client: operations of a collection in sequence order.

    ``live`` marks the last message answering a pull: from then on the client
    receives every new operation of the collection as it is stored.
    """

    type: ClassVar[MessageType] = MessageType.CHANGES
    collection: str
    ops: tuple[RemoteOp, ...]
    live: bool = False

    def fields(self) -> list[Any]:
        ops = [(o.seq, o.replica, o.counter, o.hlc, o.data) for o in self.ops]
        return [self.collection, ops, self.live]


@dataclass(frozen=True)
class Snapshot(Message):
    """Server → client: the collection's whole state up to sequence ``seq``."""

    type: ClassVar[MessageType] = MessageType.SNAPSHOT
    collection: str
    seq: int
    data: bytes

    def fields(self) -> list[Any]:
        return [self.collection, self.seq, self.data]


@dataclass(frozen=True)
class Error(Message):
    """Either way: something was wrong; ``code`` is machine-readable."""

    type: ClassVar[MessageType] = MessageType.ERROR
    code: str
    message: str
    fatal: bool = True

    def fields(self) -> list[Any]:
        return [self.code, self.message, self.fatal]


@dataclass(frozen=True)
class Ping(Message):
    """Either way: are you there? Answered by a pong with the same nonce."""

    type: ClassVar[MessageType] = MessageType.PING
    nonce: int

    def fields(self) -> list[Any]:
        return [self.nonce]


@dataclass(frozen=True)
class Pong(Message):
    """Answer to a ping."""

    type: ClassVar[MessageType] = MessageType.PONG
    nonce: int

    def fields(self) -> list[Any]:
        return [self.nonce]


@dataclass(frozen=True)
class Status(Message):
    """Client → server: figures the server shows on its dashboard."""

    type: ClassVar[MessageType] = MessageType.STATUS
    figures: dict[str, float] = field(default_factory=dict)

    def fields(self) -> list[Any]:
        return [self.figures]


def encode(message: Message, *, checksum: bool = True) -> bytes:
    """Encode a message as one frame, with a CRC32C trailer when ``checksum``."""
    fields = [int(message.type), *message.fields()]
    body: bytes = msgpack.packb(fields, use_bin_type=True)
    if not checksum:
        return bytes((PROTOCOL_VERSION, 0)) + body
    head = bytes((PROTOCOL_VERSION, FLAG_CRC)) + body
    return head + crc32c(head).to_bytes(4, "big")


def decode(
    frame: bytes, limits: Limits = DEFAULT_LIMITS, *, require_checksum: bool = False
) -> Message:
    """Decode and validate one frame.

    Raises:
        MessageTooLargeError: the frame or one of its parts is over a limit.
        UnsupportedVersionError: the frame is for another protocol version.
        ChecksumMismatchError: the CRC32C trailer does not match.
        MalformedMessageError: the body is not valid msgpack of the right shape.
        UnknownMessageError: the type code is not known.
    """
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise MalformedMessageError(f"a frame is bytes, got {type(frame).__name__}")
    frame = bytes(frame)
    if len(frame) > limits.max_frame_bytes:
        raise MessageTooLargeError(
            f"frame of {len(frame)} bytes exceeds {limits.max_frame_bytes}"
        )
    if len(frame) < 3:
        raise MalformedMessageError(f"frame of {len(frame)} bytes is too short")
    if frame[0] != PROTOCOL_VERSION:
        raise UnsupportedVersionError(
            f"frame is protocol version {frame[0]}; this side speaks {PROTOCOL_VERSION}"
        )
    flags = frame[1]
    if flags & ~_KNOWN_FLAGS:
        raise MalformedMessageError(f"unknown frame flags {flags:#04x}")
    if flags & FLAG_CRC:
        if len(frame) < 7:
            raise MalformedMessageError("frame too short for its checksum")
        head, trailer = frame[:-4], frame[-4:]
        expected = int.from_bytes(trailer, "big")
        actual = crc32c(head)
        if actual != expected:
            raise ChecksumMismatchError(
                f"frame checksum {actual:#010x} does not match {expected:#010x}"
            )
        body = head[2:]
    elif require_checksum:
        raise ChecksumMismatchError("frame carries no checksum but one is required")
    else:
        body = frame[2:]
    return _parse(_unpack(body, limits), limits)


def _unpack(body: bytes, limits: Limits) -> list[Any]:
    try:
        value = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=limits.max_frame_bytes,
            max_str_len=limits.max_frame_bytes,
            max_array_len=limits.max_ops_per_batch * 6 + 16,
            max_map_len=1024,
            max_ext_len=0,
        )
    except (
        ValueError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise MalformedMessageError(f"body is not valid msgpack: {exc}") from exc
    except Exception as exc:  # msgpack raises a few other types on hostile input
        raise MalformedMessageError(f"body is not valid msgpack: {exc!r}") from exc
    if not isinstance(value, list) or not value:
        raise MalformedMessageError("body must be a non-empty msgpack array")
    return value


def _parse(items: list[Any], limits: Limits) -> Message:
    code = items[0]
    if not isinstance(code, int) or isinstance(code, bool):
        raise MalformedMessageError(f"message type must be an integer, got {code!r}")
    try:
        kind = MessageType(code)
    except ValueError:
        raise UnknownMessageError(f"unknown message type {code}") from None
    args = items[1:]
    parser = _PARSERS[kind]
    try:
        return parser(args, limits)
    except ProtocolError:
        raise
    except (TypeError, ValueError, IndexError) as exc:
        raise MalformedMessageError(f"bad {kind.name.lower()} message: {exc}") from exc


def _arity(args: list[Any], name: str, low: int, high: int | None = None) -> None:
    high = low if high is None else high
    if not low <= len(args) <= high:
        raise MalformedMessageError(
            f"{name} has {len(args)} fields; expected {low}"
            + ("" if high == low else f" to {high}")
        )


def _int(value: Any, what: str, low: int = 0, high: int = _U64) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedMessageError(f"{what} must be an integer, got {value!r:.40}")
    if not low <= value <= high:
        raise MalformedMessageError(f"{what} {value} is out of range")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise MalformedMessageError(f"{what} must be a boolean, got {value!r:.40}")
    return value


def _str(value: Any, what: str, limit: int, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise MalformedMessageError(f"{what} must be a string, got {value!r:.40}")
    if not value and not empty:
        raise MalformedMessageError(f"{what} must not be empty")
    if len(value) > limit:
        raise MessageTooLargeError(f"{what} is {len(value)} characters; limit {limit}")
    return value


def _bytes(value: Any, what: str, limit: int) -> bytes:
    if not isinstance(value, bytes):
        raise MalformedMessageError(
            f"{what} must be binary, got {type(value).__name__}"
        )
    if len(value) > limit:
        raise MessageTooLargeError(f"{what} is {len(value)} bytes; limit {limit}")
    return value


def _list(value: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(value, list):
        raise MalformedMessageError(f"{what} must be an array, got {value!r:.40}")
    if len(value) > limit:
        raise MessageTooLargeError(
            f"{what} holds {len(value)} entries; the limit is {limit}"
        )
    return value


def _collection(value: Any, limits: Limits) -> str:
    return _str(value, "collection", limits.max_collection_name)


def _hello(a: list[Any], lim: Limits) -> Hello:
    _arity(a, "hello", 4)
    token = None if a[2] is None else _str(a[2], "token", lim.max_text, empty=True)
    return Hello(
        _int(a[0], "replica", 1, _I63),
        _bool(a[1], "checksums"),
        token,
        _str(a[3], "client", lim.max_text, empty=True),
    )


def _welcome(a: list[Any], lim: Limits) -> Welcome:
    _arity(a, "welcome", 3)
    return Welcome(
        _str(a[0], "server", lim.max_text),
        _int(a[1], "max_frame_bytes", 1),
        _int(a[2], "max_ops_per_batch", 1),
    )


def _fast_ops(value: Any, width: int, lim: Limits) -> list[list[Any]] | None:
    """The op entries if every one is well formed, else ``None``.

    A tight check for the common case; on any doubt the caller validates entry
    by entry to say exactly what is wrong. The first fields are integers within
    63 bits (the lower bounds are checked below), the last is bytes.
    """
    if type(value) is not list or len(value) > lim.max_ops_per_batch:
        return None
    limit = lim.max_op_bytes
    for entry in value:
        if type(entry) is not list or len(entry) != width:
            return None
        data = entry[-1]
        if type(data) is not bytes or len(data) > limit:
            return None
        for number in entry[:-1]:
            if type(number) is not int or not 0 <= number <= _I63:
                return None
        # Push entries start with the op counter; changes entries with the
        # sequence number, the counter third. Both start at 1.
        if entry[0] < 1 or (width == 5 and entry[2] < 1):
            return None
    return value


def _push(a: list[Any], lim: Limits) -> Push:
    _arity(a, "push", 2)
    collection = _collection(a[0], lim)
    fast = _fast_ops(a[1], 3, lim)
    if fast is not None:
        if not fast:
            raise MalformedMessageError("push carries no operations")
        return Push(collection, tuple(Op(c, h, d) for c, h, d in fast))
    ops = []
    for entry in _list(a[1], "push ops", lim.max_ops_per_batch):
        entry = _list(entry, "op", 3)
        _arity(entry, "op", 3)
        ops.append(
            Op(
                _int(entry[0], "op counter", 1, _I63),
                _int(entry[1], "op hlc", 0, _I63),
                _bytes(entry[2], "op data", lim.max_op_bytes),
            )
        )
    if not ops:
        raise MalformedMessageError("push carries no operations")
    return Push(collection, tuple(ops))


def _ack(a: list[Any], lim: Limits) -> Ack:
    _arity(a, "ack", 3)
    counters = _list(a[1], "ack counters", lim.max_ops_per_batch)
    seqs = _list(a[2], "ack seqs", lim.max_ops_per_batch)
    if len(counters) != len(seqs):
        raise MalformedMessageError("ack counters and seqs differ in length")
    return Ack(
        _collection(a[0], lim),
        tuple(_int(c, "ack counter", 1, _I63) for c in counters),
        tuple(_int(s, "ack seq", 1, _I63) for s in seqs),
    )


def _pull(a: list[Any], lim: Limits) -> Pull:
    _arity(a, "pull", 2)
    return Pull(_collection(a[0], lim), _int(a[1], "since", 0, _I63))


def _changes(a: list[Any], lim: Limits) -> Changes:
    _arity(a, "changes", 3)
    collection = _collection(a[0], lim)
    fast = _fast_ops(a[1], 5, lim)
    if fast is not None:
        remote = tuple(RemoteOp(*entry) for entry in fast)
        if all(x.seq < y.seq for x, y in pairwise(remote)):
            return Changes(collection, remote, _bool(a[2], "live"))
    ops = []
    for entry in _list(a[1], "changes ops", lim.max_ops_per_batch):
        entry = _list(entry, "remote op", 5)
        _arity(entry, "remote op", 5)
        ops.append(
            RemoteOp(
                _int(entry[0], "seq", 1, _I63),
                _int(entry[1], "replica", 0, _I63),
                _int(entry[2], "op counter", 1, _I63),
                _int(entry[3], "op hlc", 0, _I63),
                _bytes(entry[4], "op data", lim.max_op_bytes),
            )
        )
    seqs = [op.seq for op in ops]
    if any(b <= a for a, b in pairwise(seqs)):
        raise MalformedMessageError("changes must be in increasing sequence order")
    return Changes(collection, tuple(ops), _bool(a[2], "live"))


def _snapshot(a: list[Any], lim: Limits) -> Snapshot:
    _arity(a, "snapshot", 3)
    return Snapshot(
        _collection(a[0], lim),
        _int(a[1], "seq", 0, _I63),
        _bytes(a[2], "snapshot data", lim.max_frame_bytes),
    )


def _error(a: list[Any], lim: Limits) -> Error:
    _arity(a, "error", 3)
    return Error(
        _str(a[0], "error code", lim.max_text),
        _str(a[1], "error message", lim.max_text, empty=True),
        _bool(a[2], "fatal"),
    )


def _ping(a: list[Any], lim: Limits) -> Ping:
    _arity(a, "ping", 1)
    return Ping(_int(a[0], "nonce"))


def _pong(a: list[Any], lim: Limits) -> Pong:
    _arity(a, "pong", 1)
    return Pong(_int(a[0], "nonce"))


def _status(a: list[Any], lim: Limits) -> Status:
    _arity(a, "status", 1)
    raw = a[0]
    if not isinstance(raw, dict) or len(raw) > 256:
        raise MalformedMessageError("status figures must be a map of at most 256")
    figures: dict[str, float] = {}
    for key, value in raw.items():
        name = _str(key, "status figure name", 128)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedMessageError(f"status figure {name} must be a number")
        figures[name] = float(value)
    return Status(figures)


_PARSERS = {
    MessageType.HELLO: _hello,
    MessageType.WELCOME: _welcome,
    MessageType.PUSH: _push,
    MessageType.ACK: _ack,
    MessageType.PULL: _pull,
    MessageType.CHANGES: _changes,
    MessageType.SNAPSHOT: _snapshot,
    MessageType.ERROR: _error,
    MessageType.PING: _ping,
    MessageType.PONG: _pong,
    MessageType.STATUS: _status,
}
