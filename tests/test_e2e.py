"""End-to-end encryption: the server stores and forwards ciphertext only, and
replicas refuse tampered, replayed or moved operations."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from pathlib import Path

import httpx
import pytest
import websockets

from leptos_sync import EndToEndSyncManager, HubStore, SyncConfig, Transport
from leptos_sync.auth import SignedTokens
from leptos_sync.clock import ManualClock
from leptos_sync.e2e import OpCipher, is_encrypted
from leptos_sync.errors import ConfigError, IntegrityError
from leptos_sync.protocol import Hello, Op, Push, decode, encode
from leptos_sync.server import SyncServer, serve_in_background
from leptos_sync.storage import MemoryStorage

PASSPHRASE = "correct horse battery staple"
SECRET_TEXT = "the launch code is 0000"
FAST = SyncConfig(
    heartbeat_interval=0.2,
    heartbeat_timeout=2.0,
    poll_interval=0.05,
    status_interval=0.2,
)
# Cheap scrypt parameters for unit tests; the default cost is used live.
CHEAP = {"n": 2**10}


def test_seal_and_open_round_trip_and_bind_the_op_id() -> None:
    """Sealed data opens under its own (collection, replica, counter) only."""
    cipher = OpCipher.from_passphrase(PASSPHRASE, "e2e:c", **CHEAP)
    blob = cipher.seal("e2e:c", 7, 1, b"plain")
    assert b"plain" not in blob and len(blob) == 12 + 5 + 16
    assert cipher.open("e2e:c", 7, 1, blob) == b"plain"
    for where in [("e2e:c", 8, 1), ("e2e:c", 7, 2), ("e2e:d", 7, 1)]:
        with pytest.raises(IntegrityError):
            cipher.open(*where, blob)
    flipped = bytearray(blob)
    flipped[20] ^= 1
    with pytest.raises(IntegrityError):
        cipher.open("e2e:c", 7, 1, bytes(flipped))
    with pytest.raises(IntegrityError):
        cipher.open("e2e:c", 7, 1, blob[:10])
    assert cipher.refused == 5 and cipher.opened == 1


def test_keys_depend_on_passphrase_and_collection() -> None:
    """Another passphrase, or the same one for another collection, cannot open."""
    blob = OpCipher.from_passphrase(PASSPHRASE, "e2e:c", **CHEAP).seal(
        "e2e:c", 1, 1, b"x"
    )
    for other in (
        OpCipher.from_passphrase("wrong", "e2e:c", **CHEAP),
        OpCipher.from_passphrase(PASSPHRASE, "e2e:d", **CHEAP),
    ):
        with pytest.raises(IntegrityError):
            other.open("e2e:c", 1, 1, blob)
    assert "correct horse" not in repr(
        OpCipher.from_passphrase(PASSPHRASE, "e2e:c", **CHEAP)
    )


def test_only_prefixed_collections_can_be_encrypted() -> None:
    """The hub knows encrypted collections by the e2e: prefix, so it is required."""
    assert is_encrypted("e2e:notes") and not is_encrypted("notes")
    with pytest.raises(ConfigError):
        SyncConfig(encryption={"notes": PASSPHRASE})
    with pytest.raises(ConfigError):
        SyncConfig(encryption={"e2e:notes": ""})
    assert PASSPHRASE not in repr(SyncConfig(encryption={"e2e:notes": PASSPHRASE}))


def test_replicas_sync_an_encrypted_collection_through_a_hub_that_cannot_read_it(
    wire: object,
) -> None:
    """Two replicas converge; the hub's log holds no plaintext and no snapshot."""
    from .conftest import Wire

    assert isinstance(wire, Wire)
    a, b = wire.replica(), wire.replica()
    for replica in (a, b):
        replica.encrypt_collection(
            "e2e:c", OpCipher.from_passphrase(PASSPHRASE, "e2e:c", **CHEAP)
        )
    a.collection("e2e:c").insert("r", {"text": SECRET_TEXT})
    b.collection("e2e:c").insert("s", {"n": 1})
    wire.pump()
    assert a.collection("e2e:c").to_dict() == b.collection("e2e:c").to_dict()
    assert b.collection("e2e:c").get("r") == {"text": SECRET_TEXT}
    log = wire.hub.store.read("e2e:c", 0, 100)
    assert len(log) == 2
    assert not any(SECRET_TEXT.encode() in op.data for op in log)
    assert wire.hub.compact("e2e:c") is None


@pytest.fixture
def wire() -> object:
    from .conftest import Wire

    return Wire(ManualClock())


def _flip_stored_byte(path: Path, collection: str, seq: int) -> None:
    db = sqlite3.connect(path)
    try:
        (data,) = db.execute(
            "SELECT data FROM ops WHERE collection = ? AND seq = ?", (collection, seq)
        ).fetchone()
        flipped = bytearray(data)
        flipped[-3] ^= 0x40
        # Keep the store's own CRC valid: this is an attacker with write access
        # to the server's database, not disk corruption.
        from leptos_sync.protocol import crc32c

        db.execute(
            "UPDATE ops SET data = ?, crc = ? WHERE collection = ? AND seq = ?",
            (bytes(flipped), crc32c(bytes(flipped)), collection, seq),
        )
        db.commit()
    finally:
        db.close()


def _read(path: Path) -> bytes:
    return path.read_bytes()


async def _until(check: object, limit: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_live_server_stores_ciphertext_and_replicas_refuse_tampering(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a live server the SQLite store holds no plaintext; an op replayed
    under another replica id and a stored op with a flipped byte are refused by
    the receiving replica and counted; the passphrase and token appear in no
    log, metric or dashboard."""
    caplog.set_level(logging.DEBUG)
    hub_path = tmp_path / "hub.sqlite3"
    tokens = SignedTokens(b"another test secret, long enough")
    token = tokens.issue("team", read=["e2e:*"], write=["e2e:*"])
    server = SyncServer(HubStore.sqlite(hub_path), authenticator=tokens)
    config = dataclasses.replace(
        FAST, token=token, encryption={"e2e:notes": PASSPHRASE}
    )
    async with serve_in_background(server) as running:
        url = running.url
        a = EndToEndSyncManager(MemoryStorage(), Transport.websocket(url), config)
        b = EndToEndSyncManager(MemoryStorage(), Transport.websocket(url), config)
        async with a, b:
            na, nb = a.collection("e2e:notes"), b.collection("e2e:notes")
            na.insert("r1", {"text": SECRET_TEXT})
            await a.wait_synced(10)  # r2 is its own operation, damaged below
            na.insert("r2", {"text": "second secret line"})
            await _until(lambda: "r2" in nb)
            assert nb.get("r1") == {"text": SECRET_TEXT}

            # A replay: a's first ciphertext pushed by another replica id.
            first = server.store.read("e2e:notes", 0, 10)[0]
            async with websockets.connect(url) as ws:
                await ws.send(encode(Hello(4242, True, token)))
                await ws.recv()
                await ws.send(
                    encode(Push("e2e:notes", (Op(1, first.hlc, first.data),)))
                )
                assert type(decode(await ws.recv())).__name__ == "Ack"  # type: ignore[arg-type]
            await _until(lambda: b.replica.statistics().integrity_failures == 1)
            assert nb.get("r1") == {"text": SECRET_TEXT}

            async with httpx.AsyncClient(base_url=running.http_url) as http:
                metrics = (await http.get("/metrics")).text
                snapshot = (await http.get("/dashboard/snapshot")).text

        raw = _read(hub_path) + _read(Path(f"{hub_path}-wal"))
        assert SECRET_TEXT.encode() not in raw and b"second secret" not in raw

        # Tamper with a stored op; a new replica refuses it and applies the rest.
        _flip_stored_byte(hub_path, "e2e:notes", 2)
        c = EndToEndSyncManager(MemoryStorage(), Transport.websocket(url), config)
        async with c:
            nc = c.collection("e2e:notes")
            await c.wait_synced(15)
            assert nc.get("r1") == {"text": SECRET_TEXT}
            assert "r2" not in nc
            assert c.replica.statistics().integrity_failures == 2  # tampered + replay

    for secret in (PASSPHRASE, token):
        for text in (caplog.text, metrics, snapshot, repr(config)):
            assert secret not in text


def test_regression_an_encrypted_collection_without_its_key_is_refused(
    wire: object, tmp_path: Path
) -> None:
    """Without its passphrase an e2e: collection cannot be used (it used to
    sync: nothing arrived, the cursor moved past everything, and the
    replica's own writes reached the server in plaintext); a store holding
    one opens, and the collection is there again once the key is given. The
    hub refuses plaintext in an encrypted collection from anyone."""
    from leptos_sync import Replica, Storage

    from .conftest import Wire

    assert isinstance(wire, Wire)
    cipher = OpCipher.from_passphrase(PASSPHRASE, "e2e:c", **CHEAP)
    path = tmp_path / "a.sqlite3"
    a = wire.replica(Storage.sqlite(path))
    a.encrypt_collection("e2e:c", cipher)
    a.collection("e2e:c").insert("r", {"text": SECRET_TEXT})
    wire.disconnect(a)
    a.close()

    keyless = Replica(Storage.sqlite(path))
    assert keyless.collections() == []
    with pytest.raises(ConfigError, match="end-to-end encrypted"):
        keyless.collection("e2e:c")
    keyless.encrypt_collection("e2e:c", cipher)
    assert keyless.collections() == ["e2e:c"]
    assert keyless.collection("e2e:c").get("r") == {"text": SECRET_TEXT}
    keyless.close()

    plain = wire.replica()
    plain.collection("c").insert("x", {})
    wire.pump()
    hub = wire.hub
    conn = next(c for c, r in wire.conns.items() if r is plain)
    update = plain.collection("c").export_snapshot()
    replies = [
        decode(frame)
        for out in hub.handle(conn, encode(Push("e2e:c", (Op(99, 1, update),))))
        for frame in out.frames
    ]
    assert [type(r).__name__ for r in replies] == ["Error"]
    assert "plaintext" in replies[0].message  # type: ignore[union-attr]
    assert hub.store.head("e2e:c") == 0
