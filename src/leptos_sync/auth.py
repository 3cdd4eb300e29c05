"""Who may connect, and what each connection may read and write (pure, no I/O).

The hub asks an :class:`Authenticator` twice: once per hello, to turn the token
into a :class:`Principal` (or refuse the connection), and once per push, pull and
fan-out delivery, to check that the principal may still do that to that
collection. Checking on every message is what makes expiry and revocation take
effect at once, without waiting for the client to reconnect.

Two authenticators are built in:

* :class:`SignedTokens`: HMAC-SHA256 signed tokens carrying the subject, glob
  patterns of readable and writable collections, and an expiry, in the form
  ``base64url(json claims).base64url(signature)``;
* :class:`CallbackAuthenticator`: the application's own function decides.

Errors are :class:`~leptos_sync.errors.AccessError` subclasses; their messages
never contain the token.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import fnmatch
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from .clock import Clock, SystemClock
from .durations import Duration, to_ns
from .errors import (
    ConfigError,
    ForbiddenError,
    TokenExpiredError,
    UnauthorizedError,
)

__all__ = [
    "MAX_TOKEN_LIFETIME",
    "AccessRequest",
    "Action",
    "Authenticator",
    "CallbackAuthenticator",
    "Principal",
    "SignedTokens",
    "matches",
]

Action = Literal["read", "write"]

#: The longest lifetime :meth:`SignedTokens.issue` gives a token: ten years of
#: 365.25 days. Anything longer is a token that never expires in practice, and
#: that is asked for explicitly (``expires_in=None``).
MAX_TOKEN_LIFETIME = timedelta(days=3652.5)


@dataclass(frozen=True)
class Principal:
    """An authenticated connection: who it is and what its token grants.

    ``token`` is kept for authenticators that consult the application per
    message; it never appears in the repr.
    """

    subject: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    expires_at_ns: int | None = None
    token_id: str | None = None
    replica: int | None = None
    token: str | None = field(default=None, repr=False, compare=False)

    def may(self, action: Action, collection: str) -> bool:
        """Whether the claims grant ``action`` on ``collection``."""
        return matches(self.read if action == "read" else self.write, collection)


def matches(patterns: Iterable[str], collection: str) -> bool:
    """Whether ``collection`` matches one of the glob ``patterns`` (``notes/*``).

    Matching is case-sensitive; ``*`` also crosses ``/``.
    """
    return any(fnmatch.fnmatchcase(collection, p) for p in patterns)


class Authenticator(Protocol):
    """What the hub asks; raising an ``AccessError`` refuses."""

    def authenticate(self, token: str | None, replica: int) -> Principal:
        """The principal a hello's token stands for.

        Raises:
            UnauthorizedError: no token, or a bad one (the connection is closed).
            TokenExpiredError: the token has expired.
        """
        ...

    def authorize(self, principal: Principal, action: Action, collection: str) -> None:
        """Check one push (``write``) or pull or delivery (``read``).

        Raises:
            UnauthorizedError: the token was revoked (the connection is closed).
            TokenExpiredError: the token expired since the hello.
            ForbiddenError: the token does not grant this.
        """
        ...


class SignedTokens:
    """HMAC-SHA256 signed tokens with claims and an expiry.

    A token is ``base64url(claims).base64url(signature)`` (no padding), where
    the claims are a JSON object ``{"sub", "read", "write", "exp", "jti"}``;
    ``exp`` is Unix seconds (absent: no expiry) on the injected clock's wall
    time. Signatures are compared in constant time.

    Args:
        secret: the signing key (at least 16 bytes); the same on every node.
        clock: the time source for expiry.
    """

    def __init__(self, secret: bytes | str, *, clock: Clock | None = None) -> None:
        key = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(key) < 16:
            raise ConfigError("secret", "must be at least 16 bytes")
        self._key = key
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._revoked_subjects: set[str] = set()
        self._revoked_ids: set[str] = set()

    def __repr__(self) -> str:
        return "SignedTokens(secret='***')"

    # Issuing -----------------------------------------------------------------

    def issue(
        self,
        subject: str,
        *,
        read: Iterable[str] = (),
        write: Iterable[str] = (),
        expires_in: Duration | None = 3600,
    ) -> str:
        """A token for ``subject`` granting the glob patterns ``read`` and ``write``.

        Writing does not imply reading: list a collection in both to sync it
        both ways. ``expires_in=None`` issues a token that never expires.

        Raises:
            ConfigError: ``expires_in`` is not positive, longer than
                :data:`MAX_TOKEN_LIFETIME`, or not a finite duration.
        """
        lifetime_ns = None if expires_in is None else _lifetime_ns(expires_in)
        claims: dict[str, Any] = {
            "sub": subject,
            "read": list(read),
            "write": list(write),
            "jti": secrets.token_hex(8),
        }
        if lifetime_ns is not None:
            claims["exp"] = (self.clock.wall_ns() + lifetime_ns) / 1e9
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64(self._sign(body))}"

    def revoke(
        self, *, subject: str | None = None, token_id: str | None = None
    ) -> None:
        """Refuse every token of ``subject``, or the one token ``token_id``, from
        the next message on (the connection is closed with ``unauthorized``)."""
        if subject is not None:
            self._revoked_subjects.add(subject)
        if token_id is not None:
            self._revoked_ids.add(token_id)

    # Checking ----------------------------------------------------------------

    def authenticate(self, token: str | None, replica: int) -> Principal:
        if not token:
            raise UnauthorizedError("this server requires a token")
        body, dot, sig = token.partition(".")
        if not dot or not body or not sig or not token.isascii():
            raise UnauthorizedError("the token is not in the signed-token form")
        try:
            given = _unb64(sig)
        except ValueError:
            raise UnauthorizedError("the token's signature is not base64url") from None
        if not hmac.compare_digest(given, self._sign(body)):
            raise UnauthorizedError("the token's signature does not match")
        try:
            claims = json.loads(_unb64(body))
            principal = _principal(claims, token)
        except (ValueError, TypeError, KeyError):
            raise UnauthorizedError("the token's claims are malformed") from None
        self._check_live(principal)
        return dataclasses.replace(principal, replica=replica)

    def authorize(self, principal: Principal, action: Action, collection: str) -> None:
        self._check_live(principal)
        if not principal.may(action, collection):
            raise ForbiddenError(f"no {action} access to {collection!r}")

    def _check_live(self, principal: Principal) -> None:
        if (
            principal.subject in self._revoked_subjects
            or principal.token_id in self._revoked_ids
        ):
            raise UnauthorizedError("the token was revoked")
        expires = principal.expires_at_ns
        if expires is not None and self.clock.wall_ns() >= expires:
            raise TokenExpiredError("the token has expired; send a fresh one")

    def _sign(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()


@dataclass(frozen=True)
class AccessRequest:
    """What a :class:`CallbackAuthenticator`'s function is asked.

    ``action`` is ``connect`` for the hello, then ``read`` or ``write`` with the
    collection for each message.
    """

    token: str | None = field(repr=False)
    replica: int
    action: Literal["connect", "read", "write"]
    collection: str | None = None


class CallbackAuthenticator:
    """The application decides, per hello and per message.

    ``check(request)`` returns True to allow and False to refuse (a refused
    hello is ``unauthorized``, a refused message ``forbidden``); it may also
    raise :class:`~leptos_sync.errors.TokenExpiredError` or
    :class:`~leptos_sync.errors.UnauthorizedError` itself. Because it is asked
    on every push and pull, revoking access in the application takes effect on
    the next message. It runs in the server's event loop: keep it fast (a
    dictionary or cache lookup, not a network call).
    """

    def __init__(self, check: Callable[[AccessRequest], bool]) -> None:
        self.check = check

    def authenticate(self, token: str | None, replica: int) -> Principal:
        if not self.check(AccessRequest(token, replica, "connect")):
            raise UnauthorizedError("the token was refused")
        return Principal(subject=f"replica-{replica:x}", replica=replica, token=token)

    def authorize(self, principal: Principal, action: Action, collection: str) -> None:
        replica = principal.replica if principal.replica is not None else 0
        request = AccessRequest(principal.token, replica, action, collection)
        if not self.check(request):
            raise ForbiddenError(f"no {action} access to {collection!r}")


def _lifetime_ns(expires_in: Duration) -> int:
    """A token's lifetime in nanoseconds: positive and at most ten years."""
    lifetime = to_ns(expires_in, "expires_in")
    if not 0 < lifetime <= to_ns(MAX_TOKEN_LIFETIME):
        longest = int(MAX_TOKEN_LIFETIME.total_seconds())
        raise ConfigError(
            "expires_in",
            f"must be positive and at most ten years ({longest:,} s); "
            f"got {expires_in!r} (None issues a token that never expires)",
        )
    return lifetime


def _principal(claims: Mapping[str, Any], token: str) -> Principal:
    subject = claims["sub"]
    read, write = claims.get("read", []), claims.get("write", [])
    exp = claims.get("exp")
    jti = claims.get("jti")
    if not isinstance(subject, str) or not all(
        isinstance(p, str) for p in (*read, *write)
    ):
        raise TypeError("claims of the wrong type")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int | float)):
        raise TypeError("exp must be a number")
    return Principal(
        subject=subject,
        read=tuple(read),
        write=tuple(write),
        expires_at_ns=None if exp is None else int(exp * 1e9),
        token_id=jti if isinstance(jti, str) else None,
        token=token,
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
