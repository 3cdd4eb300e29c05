"""TLS: the server on wss:// with a self-signed certificate made in the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from leptos_sync import EndToEndSyncManager, HubStore, SyncConfig, Transport
from leptos_sync.errors import TransportError
from leptos_sync.protocol import Hello, Welcome, decode, encode
from leptos_sync.server import SyncServer, serve_in_background
from leptos_sync.storage import MemoryStorage

FAST = SyncConfig(heartbeat_interval=0.2, heartbeat_timeout=2.0, poll_interval=0.05)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


async def test_replicas_sync_over_wss_with_a_self_signed_certificate(
    tmp_path: Path,
) -> None:
    """Two managers trusting the test's certificate sync over wss://."""
    certfile, keyfile = _self_signed(tmp_path)
    context = ssl.create_default_context(cafile=str(certfile))
    server = SyncServer(HubStore.memory())
    async with serve_in_background(
        server, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)
    ) as running:
        assert running.url.startswith("wss://")
        a = EndToEndSyncManager(
            MemoryStorage(), Transport.websocket(running.url, ssl_context=context), FAST
        )
        b = EndToEndSyncManager(
            MemoryStorage(), Transport.websocket(running.url, ssl_context=context), FAST
        )
        async with a, b:
            a.collection("c").insert("r", {"over": "tls"})
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while "r" not in b.collection("c"):
                assert loop.time() < deadline
                await asyncio.sleep(0.02)
            assert b.collection("c").get("r") == {"over": "tls"}


async def test_clients_that_do_not_trust_the_certificate_or_skip_tls_fail(
    tmp_path: Path,
) -> None:
    """Without the certificate in its trust store a client cannot connect, and a
    plain ws:// client gets no sync service from a TLS port."""
    certfile, keyfile = _self_signed(tmp_path)
    server = SyncServer(HubStore.memory())
    async with serve_in_background(
        server, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)
    ) as running:
        with pytest.raises(TransportError):
            await Transport.websocket(
                running.url, ssl_context=ssl.create_default_context(), open_timeout=5
            ).connect()
        plain = running.url.replace("wss://", "ws://")
        with pytest.raises(TransportError):
            await Transport.websocket(plain, open_timeout=5).connect()
        trusted = ssl.create_default_context(cafile=str(certfile))
        async with websockets.connect(running.url, ssl=trusted) as ws:
            await ws.send(encode(Hello(1)))
            assert isinstance(decode(await ws.recv()), Welcome)  # type: ignore[arg-type]


async def test_cli_serve_with_certfile_and_keyfile_serves_wss(tmp_path: Path) -> None:
    """`leptos-sync serve --certfile --keyfile` announces and serves wss://."""
    certfile, keyfile = _self_signed(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "leptos_sync",
        "serve",
        "--db",
        str(tmp_path / "hub.sqlite3"),
        "--port",
        "0",
        "--certfile",
        str(certfile),
        "--keyfile",
        str(keyfile),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        url = line.strip().rsplit(" ", 1)[-1]
        assert url.startswith("wss://127.0.0.1:"), line
        trusted = ssl.create_default_context(cafile=str(certfile))
        async with websockets.connect(url, ssl=trusted) as ws:
            await ws.send(encode(Hello(1)))
            assert isinstance(decode(await ws.recv()), Welcome)  # type: ignore[arg-type]
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)
