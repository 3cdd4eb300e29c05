"""Authentication and per-collection authorisation: tokens, the hub, a live server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import websockets
from click.testing import CliRunner
from loro import ExportMode, LoroDoc, VersionVector

from leptos_sync import EndToEndSyncManager, HubStore, Storage, SyncConfig, Transport
from leptos_sync.auth import (
    MAX_TOKEN_LIFETIME,
    AccessRequest,
    CallbackAuthenticator,
    SignedTokens,
    matches,
)
from leptos_sync.cli import main as cli
from leptos_sync.clock import ManualClock
from leptos_sync.errors import (
    ConfigError,
    ForbiddenError,
    TokenExpiredError,
    UnauthorizedError,
)
from leptos_sync.protocol import (
    Ack,
    Error,
    Hello,
    Message,
    Op,
    Pull,
    Push,
    Welcome,
    decode,
    encode,
)
from leptos_sync.server import SyncServer, serve_in_background
from leptos_sync.storage import MemoryStorage

SECRET = b"a test secret of enough length"
FAST = SyncConfig(
    heartbeat_interval=0.2,
    heartbeat_timeout=2.0,
    poll_interval=0.05,
    status_interval=0.2,
)


def _clock() -> ManualClock:
    clock = ManualClock()
    clock.set_wall(1_700_000_000)
    return clock


def _update(key: str = "k", value: object = 1, peer: int = 99) -> bytes:
    doc = LoroDoc()
    doc.peer_id = peer
    doc.get_map("evil").insert(key, value)
    doc.commit()
    return bytes(doc.export(ExportMode.Updates(VersionVector())))


# SignedTokens --------------------------------------------------------------


def test_issued_token_authenticates_with_its_claims() -> None:
    """A token issued for a subject comes back as a principal with its claims."""
    tokens = SignedTokens(SECRET, clock=_clock())
    token = tokens.issue("alice", read=["notes/*"], write=["notes/a"], expires_in=60)
    principal = tokens.authenticate(token, 7)
    assert principal.subject == "alice"
    assert principal.replica == 7
    assert principal.may("read", "notes/b") and not principal.may("write", "notes/b")
    assert principal.may("write", "notes/a") and not principal.may("read", "todo")
    assert token not in repr(principal)
    tokens.authorize(principal, "read", "notes/x")
    with pytest.raises(ForbiddenError):
        tokens.authorize(principal, "write", "notes/x")


def test_glob_patterns_match_case_sensitively_across_slashes() -> None:
    """Patterns are fnmatch globs: `*` crosses `/`, and case matters."""
    assert matches(["notes/*"], "notes/a/b")
    assert not matches(["notes/*"], "Notes/a")
    assert matches(["*"], "anything")
    assert not matches([], "anything")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: None,
        lambda t: "",
        lambda t: "no-dot-here",
        lambda t: t + "x",
        lambda t: t.split(".")[0] + ".!!!",
        lambda t: "e30." + t.split(".")[1],  # {} with someone else's signature
    ],
)
def test_missing_malformed_or_forged_tokens_are_unauthorized(mangle: object) -> None:
    """No token, a malformed one, or one whose signature does not match is refused."""
    tokens = SignedTokens(SECRET, clock=_clock())
    token = tokens.issue("alice", read=["*"])
    with pytest.raises(UnauthorizedError):
        tokens.authenticate(mangle(token), 1)  # type: ignore[operator]


def test_token_with_rewritten_claims_is_refused() -> None:
    """Widening the claims of a real token breaks its signature."""
    tokens = SignedTokens(SECRET, clock=_clock())
    body, sig = tokens.issue("mallory", read=["public"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["read"] = ["*"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(UnauthorizedError):
        tokens.authenticate(f"{forged}.{sig}", 1)


def test_token_from_another_secret_is_refused() -> None:
    """A token signed with another key is unauthorized."""
    other = SignedTokens(b"another secret, also long enough", clock=_clock())
    with pytest.raises(UnauthorizedError):
        SignedTokens(SECRET, clock=_clock()).authenticate(
            other.issue("x", read=["*"]), 1
        )


def test_expiry_follows_the_injected_clock() -> None:
    """A token is valid until its expiry on the injected wall clock, then expired."""
    clock = _clock()
    tokens = SignedTokens(SECRET, clock=clock)
    principal = tokens.authenticate(tokens.issue("a", read=["*"], expires_in=10), 1)
    clock.set_wall(1_700_000_009.9)
    tokens.authorize(principal, "read", "c")
    clock.set_wall(1_700_000_010)
    with pytest.raises(TokenExpiredError):
        tokens.authorize(principal, "read", "c")
    with pytest.raises(TokenExpiredError):
        tokens.authenticate(principal.token, 1)


@pytest.mark.parametrize(
    ("expires_in", "reason"),
    [
        (0, "must be positive and at most ten years"),
        (-5, "must be positive and at most ten years"),
        (1e300, "must be positive and at most ten years"),  # was an OverflowError
        (MAX_TOKEN_LIFETIME + timedelta(seconds=1), "must be positive and at most"),
        (float("nan"), "must be a finite duration"),
    ],
)
def test_a_lifetime_that_is_not_positive_or_too_long_is_refused(
    expires_in: object, reason: str
) -> None:
    """issue() refuses a lifetime that is not positive, over ten years or not
    finite (1e300 used to raise OverflowError, -5 issued an expired token)."""
    tokens = SignedTokens(SECRET, clock=_clock())
    with pytest.raises(ConfigError, match=f"expires_in: {reason}"):
        tokens.issue("carol", expires_in=expires_in)  # type: ignore[arg-type]
    tokens.issue("carol", expires_in=MAX_TOKEN_LIFETIME)  # the longest is fine


def test_revocation_takes_effect_on_the_next_check() -> None:
    """Revoking a subject or a token id refuses the principal from then on."""
    tokens = SignedTokens(SECRET, clock=_clock())
    alice = tokens.authenticate(tokens.issue("alice", read=["*"]), 1)
    bob = tokens.authenticate(tokens.issue("bob", read=["*"]), 2)
    tokens.revoke(subject="alice")
    with pytest.raises(UnauthorizedError):
        tokens.authorize(alice, "read", "c")
    tokens.authorize(bob, "read", "c")
    tokens.revoke(token_id=bob.token_id)
    with pytest.raises(UnauthorizedError):
        tokens.authorize(bob, "read", "c")


def test_short_secret_is_a_config_error_and_repr_hides_it() -> None:
    """A secret under 16 bytes is refused; the repr never shows the secret."""
    with pytest.raises(ConfigError):
        SignedTokens(b"short")
    assert "secret of enough" not in repr(SignedTokens(SECRET))


def test_callback_is_consulted_per_message() -> None:
    """The callback decides the hello and every read and write."""
    allowed = {("read", "c"), ("write", "c")}
    seen: list[AccessRequest] = []

    def check(request: AccessRequest) -> bool:
        seen.append(request)
        if request.action == "connect":
            return request.token == "good"
        return (request.action, request.collection) in allowed

    auth = CallbackAuthenticator(check)
    with pytest.raises(UnauthorizedError):
        auth.authenticate("bad", 1)
    principal = auth.authenticate("good", 5)
    auth.authorize(principal, "write", "c")
    allowed.discard(("write", "c"))
    with pytest.raises(ForbiddenError):
        auth.authorize(principal, "write", "c")
    assert seen[-1].replica == 5 and seen[-1].collection == "c"
    assert "good" not in repr(seen[-1])


# The hub -------------------------------------------------------------------


def _hub_conn(wire_hub: object, conn: int, *frames: Message) -> list[Message]:
    hub = wire_hub
    hub.connect(conn)  # type: ignore[attr-defined]
    replies: list[Message] = []
    for message in frames:
        for out in hub.handle(conn, encode(message)):  # type: ignore[attr-defined]
            if out.conn == conn:
                replies.extend(decode(f) for f in out.frames)
    return replies


def test_hub_refuses_a_hello_without_a_token_and_closes() -> None:
    """A hello with no token gets `unauthorized` and a close; a push after it is
    a protocol error (nothing reaches the store)."""
    from leptos_sync import Hub

    hub = Hub(HubStore.memory(), authenticator=SignedTokens(SECRET, clock=_clock()))
    hub.connect(1)
    out = hub.handle(1, encode(Hello(1, True, None)))
    assert out[0].close
    error = decode(out[0].frames[0])
    assert isinstance(error, Error) and error.code == "unauthorized" and error.fatal
    out = hub.handle(1, encode(Push("c", (Op(1, 1, _update()),))))
    assert hub.store.head("c") == 0
    assert hub.statistics().rejected == {"unauthorized": 1}


def test_hub_denies_reads_and_writes_outside_the_claims() -> None:
    """A denied pull returns `forbidden` and no data; a denied push stores nothing."""
    from leptos_sync import Hub

    tokens = SignedTokens(SECRET, clock=_clock())
    hub = Hub(HubStore.memory(), authenticator=tokens)
    writer = tokens.issue("w", read=["notes/*"], write=["notes/*"])
    reader = tokens.issue("r", read=["notes/*"])
    _hub_conn(hub, 1, Hello(1, True, writer), Push("notes/a", (Op(1, 1, _update()),)))
    assert hub.store.head("notes/a") == 1

    replies = _hub_conn(
        hub,
        2,
        Hello(2, True, reader),
        Pull("secret", 0),
        Push("notes/a", (Op(1, 1, _update(peer=2)),)),
        Pull("notes/a", 0),
    )
    kinds = [(type(m).__name__, getattr(m, "code", None)) for m in replies]
    assert kinds == [
        ("Welcome", None),
        ("Error", "forbidden"),
        ("Error", "forbidden"),
        ("Changes", None),
    ]
    assert hub.store.head("notes/a") == 1
    assert hub.statistics().rejected == {"forbidden": 2}


def test_token_refresh_mid_stream_applies_every_op_exactly_once() -> None:
    """Tokens expiring while ops flow are refreshed with a re-hello; every op is
    stored once and applied once by the reader, with nothing skipped."""
    from .conftest import Wire

    clock = _clock()
    tokens = SignedTokens(SECRET, clock=clock)
    wire = Wire(clock)
    wire.hub.authenticator = tokens
    writer = wire.replica(connect=False)
    reader = wire.replica(connect=False)
    for replica in (writer, reader):
        replica.session.token = tokens.issue("x", read=["c"], write=["c"], expires_in=5)
        wire.connect(replica)
    reader.collection("c")
    writer.collection("c").insert("r", {"n": 0})
    wire.pump()

    expired: list[str] = []
    for replica in (writer, reader):
        replica.on_effect = lambda e: (  # type: ignore[assignment]
            expired.append(e.error.code) if type(e).__name__ == "ServerError" else None
        )
    for i in range(30):
        writer.collection("c").counter("r", "hits").increment()
        if i in (10, 20):
            clock.set_wall(clock.wall_ns() / 1e9 + 6)  # every token now expired
        wire.pump()
        for replica in (writer, reader):
            if (
                replica.last_error is not None
                and replica.last_error.code == "token-expired"
            ):
                replica.last_error = None
                replica.reauthenticate(
                    tokens.issue("x", read=["c"], write=["c"], expires_in=5)
                )
        wire.pump()

    assert "token-expired" in expired
    assert reader.collection("c").counter("r", "hits").value == 30
    assert wire.hub.store.head("c") == 31
    assert wire.hub.statistics().ops_stored == 31
    assert reader.statistics().remote_ops_applied == 31
    assert writer.outbox_depth() == 0


# A live server -------------------------------------------------------------


async def _raw(url: str, *messages: Message, wait: float = 1.0) -> list[Message]:
    """Send frames on a fresh WebSocket; return what came back until close."""
    replies: list[Message] = []
    async with websockets.connect(url, max_size=None) as ws:
        for message in messages:
            await ws.send(encode(message))
        try:
            while True:
                frame = await asyncio.wait_for(ws.recv(), wait)
                replies.append(decode(frame))  # type: ignore[arg-type]
        except (TimeoutError, websockets.ConnectionClosed):
            pass
    return replies


def _codes(replies: list[Message]) -> list[str]:
    return [m.code if isinstance(m, Error) else type(m).__name__ for m in replies]


async def _until(check: object, limit: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_live_attacks_are_refused_while_legitimate_clients_sync(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No token, forged, expired, other-collection and read-only tokens, forbidden
    pulls and a replayed op with a changed payload are all refused against a
    live server; none reaches the store or another client; two legitimate
    clients keep syncing, and no token shows in logs, metrics or dashboard."""
    caplog.set_level(logging.DEBUG)
    clock = _clock()
    tokens = SignedTokens(SECRET, clock=clock)
    store = HubStore.sqlite(tmp_path / "hub.sqlite3")
    server = SyncServer(store, authenticator=tokens)
    good = tokens.issue("team", read=["notes/*"], write=["notes/*"])
    async with serve_in_background(server) as running:
        url = running.url
        a = EndToEndSyncManager(
            MemoryStorage(), Transport.websocket(url), _with_token(good)
        )
        b = EndToEndSyncManager(
            MemoryStorage(), Transport.websocket(url), _with_token(good)
        )
        async with a, b:
            na, nb = a.collection("notes/x"), b.collection("notes/x")
            na.insert("n1", {"by": "a"})
            await _until(lambda: "n1" in nb)
            head = store.head("notes/x")
            received_before = b.replica.statistics().remote_ops_applied
            push = Push("notes/x", (Op(1, 1, _update()),))

            assert _codes(await _raw(url, Hello(901, True, None), push)) == [
                "unauthorized"
            ]
            _, sig = tokens.issue("m", read=["public"]).split(".")
            forged_body = (
                base64.urlsafe_b64encode(
                    json.dumps({"sub": "m", "read": ["*"], "write": ["*"]}).encode()
                )
                .rstrip(b"=")
                .decode()
            )
            forged = f"{forged_body}.{sig}"
            assert _codes(await _raw(url, Hello(902, True, forged), push)) == [
                "unauthorized"
            ]
            # Issued an hour ago (a clock behind), for a minute.
            past = ManualClock()
            past.set_wall(clock.wall_ns() / 1e9 - 3600)
            issuer = SignedTokens(SECRET, clock=past)
            expired = issuer.issue("m", read=["*"], write=["*"], expires_in=60)
            assert _codes(await _raw(url, Hello(903, True, expired), push)) == [
                "token-expired"
            ]
            other = tokens.issue("m", read=["todo/*"], write=["todo/*"])
            replies = await _raw(url, Hello(904, True, other), Pull("notes/x", 0), push)
            assert _codes(replies) == ["Welcome", "forbidden", "forbidden"]
            read_only = tokens.issue("m", read=["notes/*"])
            replies = await _raw(
                url, Hello(905, True, read_only), push, Pull("notes/x", 0)
            )
            assert _codes(replies)[:2] == ["Welcome", "forbidden"]
            assert _codes(replies)[2] == "Changes"

            # Replay: a's first op, with a's replica id, but another payload.
            stored = store.read("notes/x", 0, 10)[0]
            assert stored.replica == a.replica.replica_id
            evil = Push("notes/x", (Op(stored.counter, stored.hlc, _update("x", 666)),))
            replies = await _raw(url, Hello(stored.replica, True, good), evil)
            assert _codes(replies) == ["Welcome", "op-conflict"]
            assert store.read("notes/x", 0, 10)[0].data == stored.data

            # Nothing of it reached the store or the other client.
            assert store.head("notes/x") == head
            assert store.collections() == ["notes/x"]
            na.insert("n2", {"by": "a"})
            nb.insert("n3", {"by": "b"})
            await _until(lambda: "n2" in nb and "n3" in na)
            assert "evil" not in str(nb.to_dict()) and "666" not in str(nb.to_dict())
            assert b.replica.statistics().remote_ops_applied == received_before + 1

            async with httpx.AsyncClient(base_url=running.http_url) as http:
                metrics = (await http.get("/metrics")).text
                snapshot = (await http.get("/dashboard/snapshot")).text
        rejected = server.hub.statistics().rejected
        assert rejected["unauthorized"] == 2 and rejected["token_expired"] == 1
        assert rejected["forbidden"] == 3
        assert 'leptos_sync_server_rejected_total{reason="forbidden"} 3.0' in metrics
        for secret in (good, forged, expired, other, read_only, SECRET.decode()):
            for text in (caplog.text, metrics, snapshot, repr(a.config)):
                assert secret not in text


def _with_token(token: str, **options: object) -> SyncConfig:
    import dataclasses

    return dataclasses.replace(FAST, token=token, **options)  # type: ignore[arg-type]


async def test_live_revocation_closes_the_connection_on_the_next_message(
    tmp_path: Path,
) -> None:
    """Revoking a subject cuts its next push off: unauthorized, not stored."""
    tokens = SignedTokens(SECRET, clock=_clock())
    server = SyncServer(HubStore.memory(), authenticator=tokens)
    token = tokens.issue("eve", read=["c"], write=["c"])
    async with (
        serve_in_background(server) as running,
        websockets.connect(running.url) as ws,
    ):
        await ws.send(encode(Hello(42, True, token)))
        assert isinstance(decode(await ws.recv()), Welcome)  # type: ignore[arg-type]
        await ws.send(encode(Push("c", (Op(1, 1, _update(peer=42)),))))
        assert isinstance(decode(await ws.recv()), Ack)  # type: ignore[arg-type]
        tokens.revoke(subject="eve")
        await ws.send(encode(Push("c", (Op(2, 2, _update("b", 2, peer=42)),))))
        error = decode(await ws.recv())  # type: ignore[arg-type]
        assert isinstance(error, Error) and error.code == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert server.hub.store.head("c") == 1


async def test_live_token_expiry_with_refresh_applies_every_row_exactly_once(
    tmp_path: Path,
) -> None:
    """Tokens expire twice while a writer streams increments to a reader over a
    live server; the token provider refreshes them, and every op is stored
    once and applied once by the reader."""
    clock = _clock()
    tokens = SignedTokens(SECRET, clock=clock)
    store = HubStore.sqlite(tmp_path / "hub.sqlite3")
    server = SyncServer(store, authenticator=tokens)
    refreshes = 0

    async def provider() -> str:
        nonlocal refreshes
        refreshes += 1
        return tokens.issue("app", read=["c"], write=["c"], expires_in=30)

    first = tokens.issue("app", read=["c"], write=["c"], expires_in=30)
    config = _with_token(first, token_provider=provider)
    async with serve_in_background(server) as running:
        writer = EndToEndSyncManager(
            Storage.sqlite(tmp_path / "w.sqlite3"),
            Transport.websocket(running.url),
            config,
        )
        reader = EndToEndSyncManager(
            Storage.sqlite(tmp_path / "r.sqlite3"),
            Transport.websocket(running.url),
            config,
        )
        async with writer, reader:
            wc, rc = writer.collection("c"), reader.collection("c")
            wc.insert("row", {"n": 0})
            await writer.wait_synced(10)
            for i in range(60):
                wc.counter("row", "hits").increment()
                if i in (20, 40):
                    clock.set_wall(clock.wall_ns() / 1e9 + 31)
                await asyncio.sleep(0.01)
            await _until(
                lambda: "row" in rc and rc.counter("row", "hits").value == 60, 20
            )
            await writer.wait_synced(10)
            await reader.wait_synced(10)
            assert refreshes >= 2
            assert rc.counter("row", "hits").value == 60
            assert store.head("c") == 61
            assert server.hub.statistics().ops_stored == 61
            assert reader.replica.statistics().remote_ops_applied == 61


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1e300", "must be at most 315,576,000 seconds, not 1e+300"),
        ("-5", "must be a positive number of seconds (or 0: never), not -5"),
        ("nan", "must be a positive number of seconds (or 0: never), not nan"),
    ],
)
def test_token_command_refuses_a_bad_lifetime_in_one_line(
    value: str, reason: str
) -> None:
    """``token --expires-in`` must be positive and at most ten years (1e300 was
    a traceback; -5 issued an already expired token with exit status 0)."""
    result = CliRunner().invoke(
        cli,
        ["token", "carol", "--expires-in", value],
        env={"LEPTOS_SYNC_SECRET": "x" * 32},
        prog_name="leptos-sync",
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"leptos-sync: error: Invalid value for '--expires-in': {reason} "
        "(see 'leptos-sync token --help')"
    ]


def test_token_command_with_zero_issues_a_token_that_never_expires() -> None:
    """``--expires-in 0`` still means a token without an expiry."""
    secret = "x" * 32
    result = CliRunner().invoke(
        cli,
        ["token", "carol", "--expires-in", "0"],
        env={"LEPTOS_SYNC_SECRET": secret},
    )
    assert result.exit_code == 0, result.output
    principal = SignedTokens(secret).authenticate(result.stdout.strip(), 1)
    assert principal.expires_at_ns is None


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        (None, "$LEPTOS_SYNC_SECRET is not set (it holds the token secret)"),
        ("", "$LEPTOS_SYNC_SECRET is empty (it must hold the token secret)"),
        ("short", "$LEPTOS_SYNC_SECRET holds 5 bytes; the token secret must be "),
    ],
)
def test_token_command_says_whether_the_secret_is_unset_empty_or_short(
    secret: str | None, reason: str
) -> None:
    """An empty secret variable is called empty, not unset (it used to say
    "is not set"), and a short one says how short."""
    result = CliRunner().invoke(
        cli, ["token", "carol"], env={"LEPTOS_SYNC_SECRET": secret}
    )
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"leptos-sync: error: {reason}")


def test_serve_with_a_secret_and_the_token_command(tmp_path: Path) -> None:
    """``serve --auth-secret-env`` refuses a client without a token and admits one
    holding a token from ``leptos-sync token``; the secret is never printed."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, SYNC_SECRET="correct horse battery staple")
    issued = subprocess.run(
        [
            sys.executable,
            "-m",
            "leptos_sync",
            "token",
            "alice",
            "--secret-env",
            "SYNC_SECRET",
            "--read",
            "notes",
            "--write",
            "notes",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout.strip()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "leptos_sync",
            "serve",
            "--db",
            str(tmp_path / "hub.sqlite3"),
            "--port",
            "0",
            "--auth-secret-env",
            "SYNC_SECRET",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]

        async def main() -> None:
            config = SyncConfig(
                token=issued, heartbeat_interval=0.2, heartbeat_timeout=1.0
            )
            async with EndToEndSyncManager(
                Storage.memory(), Transport.websocket(url), config
            ) as manager:
                manager.collection("notes").insert("n", {"v": 1})
                await manager.wait_synced(10)
            refused = EndToEndSyncManager(
                Storage.memory(), Transport.websocket(url), SyncConfig()
            )
            async with refused:
                refused.collection("notes").insert("x", {"v": 2})
                with pytest.raises(TimeoutError):
                    await refused.wait_synced(1.0)
                assert "unauthorized" in (refused.status().last_error or "")

        asyncio.run(main())
    finally:
        server.terminate()
        _, err = server.communicate(timeout=20)
    assert "correct horse" not in err
