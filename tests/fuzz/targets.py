"""Fuzz targets: every decoder of untrusted bytes, each with the errors it may raise.

Each target takes arbitrary bytes and feeds them to one decoder. Raising one of
the decoder's documented errors is a pass; any other exception is a crash,
which the fuzzer reports. The same targets run under Hypothesis in the test
suite (``tests/test_fuzz_decoders.py``) and under atheris, coverage-guided, from
``tests/fuzz/atheris_harness.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from leptos_sync import Hub, HubStore
from leptos_sync.auth import SignedTokens
from leptos_sync.backup import MANIFEST, verify_backup
from leptos_sync.clock import HLCTimestamp, HybridLogicalClock
from leptos_sync.crdt import CollectionDoc
from leptos_sync.e2e import OpCipher
from leptos_sync.errors import (
    IntegrityError,
    ProtocolError,
    StorageError,
    UnauthorizedError,
)
from leptos_sync.protocol import Hello, decode, encode
from leptos_sync.traces import TraceError, parse_trace

SECRET = "a fuzzing secret that is long enough"
_TOKENS = SignedTokens(SECRET)
_CIPHER = OpCipher.from_passphrase("fuzz passphrase", "e2e:notes")


def frame(data: bytes) -> None:
    """A wire frame from anyone."""
    try:
        decode(data)
    except ProtocolError:
        pass


def hub_session(data: bytes) -> None:
    """A connection that sends the hub ``data`` cut into frames.

    The hub answers bad frames with error frames and never raises. An odd first
    byte puts the hub behind signed tokens."""
    secured = bool(data) and data[0] % 2 == 1
    hub = Hub(HubStore.memory(), authenticator=_TOKENS if secured else None)
    conn = 1
    hub.connect(conn)
    rest = data
    while rest:
        size = rest[0] + 1
        hub.handle(conn, rest[1 : 1 + size])
        rest = rest[1 + size :]
    hub.disconnect(conn)


def token(data: bytes) -> None:
    """A token as a client sends it, and claims a buggy issuer could sign."""
    try:
        _TOKENS.authenticate(data.decode("utf-8", "replace"), 1)
    except UnauthorizedError:
        pass
    body = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    mac = hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).digest()
    signed = f"{body}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    try:
        _TOKENS.authenticate(signed, 1)
    except UnauthorizedError:
        pass
    # The same token in a hello: the hub refuses it with an error frame.
    hub = Hub(HubStore.memory(), authenticator=_TOKENS)
    hub.connect(1)
    text = data.decode("utf-8", "replace")[:4096]
    for sent in (text, signed[:4096]):
        hub.handle(1, encode(Hello(1, True, sent, "fuzz")))


def trace(data: bytes) -> None:
    """A trace file's bytes (JSON or gzip)."""
    try:
        parse_trace(data)
    except TraceError:
        pass


def hlc(data: bytes) -> None:
    """A stored or received HLC timestamp, and merging it."""
    try:
        stamp = HLCTimestamp.from_bytes(data)
    except ValueError:
        return
    clock = HybridLogicalClock(replica_id=7)
    clock.update(stamp)
    assert clock.now().pack() < 1 << 63


def sealed_op(data: bytes) -> None:
    """An end-to-end encrypted operation from the server."""
    try:
        _CIPHER.open("e2e:notes", 5, 9, data)
    except IntegrityError:
        pass


def loro_update(data: bytes) -> None:
    """Operation data the collection imports."""
    doc = CollectionDoc("c", HybridLogicalClock(replica_id=3))
    try:
        doc.import_updates([data])
    except IntegrityError:
        return
    doc.to_dict()


def manifest(data: bytes) -> None:
    """A backup's manifest.json."""
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / MANIFEST).write_bytes(data)
        try:
            verify_backup(directory)
        except (IntegrityError, StorageError):
            pass


_MANIFEST_KEYS = (
    "version",
    "kind",
    "replica_id",
    "created_ns",
    "source",
    "store_format",
    "files",
    "tables",
    "bad_blobs",
)


def json_manifest(data: bytes) -> None:
    """A well-formed manifest with one field replaced by fuzzed JSON."""
    if not data:
        return
    try:
        value = json.loads(data[1:].decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return
    template = {
        "format": "leptos-sync-backup",
        "version": 1,
        "kind": "replica",
        "replica_id": "00000000000000ff",
        "created_ns": 0,
        "source": "s",
        "store_format": 1,
        "files": [{"name": "store.sqlite3", "size": 0, "sha256": "", "crc32c": ""}],
        "tables": {},
        "bad_blobs": [],
    }
    template[_MANIFEST_KEYS[data[0] % len(_MANIFEST_KEYS)]] = value
    manifest(json.dumps(template).encode())


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frame": frame,
    "hub_session": hub_session,
    "token": token,
    "trace": trace,
    "hlc": hlc,
    "sealed_op": sealed_op,
    "loro_update": loro_update,
    "manifest": manifest,
    "json_manifest": json_manifest,
}
