"""The exceptions raised by leptos_sync.

Every exception the library raises on purpose derives from :class:`SyncError`.
Errors caused by the caller (bad values, bad configuration, misuse) are kept apart
from errors caused by the peer, the network or the disk, so that an application
can tell "fix your code" from "try again later"::

    SyncError
    ├── UsageError                 the caller did something wrong
    │   ├── ConfigError            a configuration value is invalid (names the field)
    │   ├── InvalidValueError      a value cannot be stored (not JSON, oversized, ...)
    │   ├── InvalidIdError         a record id or collection name is not valid
    │   ├── RecordNotFoundError    get/update/delete of a record that does not exist
    │   ├── RecordExistsError      insert of an id that already exists
    │   ├── FieldKindError         a field holds another kind than the one asked for
    │   └── ClosedError            the manager, store or transport was closed
    ├── ProtocolError              a wire message is invalid
    │   ├── UnsupportedVersionError
    │   ├── UnknownMessageError
    │   ├── MalformedMessageError  truncated msgpack, wrong field types, ...
    │   ├── MessageTooLargeError
    │   ├── ChecksumMismatchError  a frame's CRC32C does not match its bytes
    │   └── ConflictingOperationError  an operation id reused with other content
    ├── TransportError             the link failed (connect refused, closed by peer)
    │   └── ConnectionClosedError
    ├── RemoteError                the server answered with an error message
    ├── AccessError                the server refuses a client (code, fatal)
    │   ├── UnauthorizedError      no token, a bad or a revoked one ("unauthorized")
    │   ├── TokenExpiredError      the token expired; refresh it ("token-expired")
    │   ├── ForbiddenError         no right to that collection ("forbidden")
    │   └── RateLimitedError       too many frames or operations ("rate-limited")
    ├── StorageError               the local or hub store failed
    │   ├── SchemaVersionError     a store written by a newer version of this library
    │   └── IntegrityError         stored or received bytes fail their checksum
    └── ReliabilityError
        ├── CircuitOpenError       the circuit breaker rejected the call
        └── RetryBudgetExhausted   retries stopped by a deadline or a retry budget

Foreign exceptions (sqlite3, msgpack, websockets, loro) are translated where they
enter the library and chained with ``raise ... from``, so the original stays
reachable as ``__cause__``.
"""

from __future__ import annotations


class SyncError(Exception):
    """Root of every exception raised by leptos_sync."""


class UsageError(SyncError):
    """The caller used the library wrongly; retrying will not help."""


class ConfigError(UsageError):
    """A configuration value is invalid.

    Attributes:
        field: the name of the offending field.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidValueError(UsageError):
    """A value cannot be stored: not JSON-representable, oversized, or reserved."""


class InvalidIdError(UsageError):
    """A record id is not a non-empty string within the size limit."""


class RecordNotFoundError(UsageError, KeyError):
    """The record does not exist (or was deleted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "record not found"


class RecordExistsError(UsageError):
    """A record with this id already exists."""


class FieldKindError(UsageError):
    """A field holds a different kind (register, counter, text, list, tree)."""


class ClosedError(UsageError):
    """The object was closed and cannot be used any more."""


class ProtocolError(SyncError):
    """A wire message violates the protocol."""

    code = "protocol"


class UnsupportedVersionError(ProtocolError):
    """The message was written for a protocol version this side does not speak."""

    code = "version"


class UnknownMessageError(ProtocolError):
    """The message type is not one this side knows."""

    code = "unknown-type"


class MalformedMessageError(ProtocolError):
    """The message is truncated, not msgpack, or has fields of the wrong type."""

    code = "malformed"


class MessageTooLargeError(ProtocolError):
    """The message or one of its parts exceeds a configured limit."""

    code = "too-large"


class ChecksumMismatchError(ProtocolError):
    """The frame's CRC32C does not match its contents."""

    code = "checksum"


class ConflictingOperationError(ProtocolError):
    """An operation id arrived again with other content than the stored one.

    Two stores share one replica id (a store file copied by hand); the push is
    refused, not acknowledged, so the second writer's change is not lost.
    """

    code = "op-conflict"


class TransportError(SyncError):
    """The network link failed; the manager reconnects by itself."""


class ConnectionClosedError(TransportError):
    """The connection was closed by the peer or dropped by the network."""


class RemoteError(SyncError):
    """The server answered with an error message.

    Attributes:
        code: the server's machine-readable error code.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class AccessError(SyncError):
    """The server refuses what a client asked for (raised in the hub).

    Attributes:
        code: the error code the client receives.
        fatal: whether the connection is closed after the error frame.
    """

    code = "access"
    fatal = True


class UnauthorizedError(AccessError):
    """No token, a forged or malformed one, or a revoked one."""

    code = "unauthorized"


class TokenExpiredError(AccessError):
    """The token has expired: the client sends a new hello with a fresh one."""

    code = "token-expired"
    fatal = False


class ForbiddenError(AccessError):
    """The token does not grant this action on this collection."""

    code = "forbidden"
    fatal = False


class RateLimitedError(AccessError):
    """The connection sent more frames or operations than its rate allows."""

    code = "rate-limited"


class StorageError(SyncError):
    """The local store or the hub store failed."""


class SchemaVersionError(StorageError):
    """The store was written by a newer schema than this library understands."""


class IntegrityError(StorageError):
    """Stored or received bytes do not match their checksum or metadata."""


class ReliabilityError(SyncError):
    """Raised by the reliability layer itself."""


class CircuitOpenError(ReliabilityError):
    """The circuit breaker is open (or half-open and full); the call was not made."""


class RetryBudgetExhausted(ReliabilityError):
    """Retrying stopped early: the deadline or the retry budget ran out."""
