"""The WebSocket client transport, on the ``websockets`` library.

One WebSocket binary message carries one protocol frame. The manager runs its own
heartbeat (protocol pings, with a bound on how long a link may stay silent), so the
library's keepalive pings stay off by default; TCP-level failures surface as
:class:`~leptos_sync.errors.ConnectionClosedError` or
:class:`~leptos_sync.errors.TransportError`, and the manager reconnects through
its retry policy and circuit breaker.
"""

from __future__ import annotations

import ssl
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from ..errors import (
    ConfigError,
    ConnectionClosedError,
    MalformedMessageError,
    TransportError,
)
from ..protocol import DEFAULT_LIMITS
from .base import Connection, Transport

__all__ = ["WebSocketConnection", "WebSocketTransport"]


class WebSocketConnection(Connection):
    """One open WebSocket to the sync server."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    async def send(self, frame: bytes) -> None:
        try:
            await self._ws.send(frame)
        except websockets.ConnectionClosed as exc:
            raise ConnectionClosedError(f"connection closed: {exc}") from exc
        except OSError as exc:
            raise TransportError(f"send failed: {exc}") from exc

    async def recv(self) -> bytes:
        try:
            message = await self._ws.recv()
        except websockets.ConnectionClosed as exc:
            raise ConnectionClosedError(f"connection closed: {exc}") from exc
        except OSError as exc:
            raise TransportError(f"receive failed: {exc}") from exc
        if isinstance(message, str):
            raise MalformedMessageError(
                "the server sent a text message; frames are binary"
            )
        return message

    async def close(self) -> None:
        try:
            await self._ws.close()
        except (websockets.WebSocketException, OSError):
            pass  # closing a broken link: nothing more to do

    @property
    def remote_address(self) -> Any:
        return self._ws.remote_address


class WebSocketTransport(Transport):
    """Connects to ``url`` (``ws://host:port/ws`` or ``wss://...``).

    Args:
        url: the server's WebSocket endpoint.
        max_frame_bytes: the largest frame accepted from the server.
        ssl_context: for ``wss://`` with a private CA or a self-signed certificate.
        open_timeout: seconds for the TCP and WebSocket handshakes.
        headers: extra HTTP headers for the handshake.
    """

    def __init__(
        self,
        url: str,
        *,
        max_frame_bytes: int = DEFAULT_LIMITS.max_frame_bytes,
        ssl_context: ssl.SSLContext | None = None,
        open_timeout: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise ConfigError(
                "url", f"a WebSocket URL starts with ws:// or wss://, got {url!r}"
            )
        self.url = url
        # Show the endpoint without credentials a URL might carry.
        self.endpoint = url.split("?", 1)[0]
        if "@" in self.endpoint:
            scheme, rest = self.endpoint.split("://", 1)
            self.endpoint = f"{scheme}://{rest.split('@', 1)[1]}"
        self.max_frame_bytes = max_frame_bytes
        self.ssl_context = ssl_context
        self.open_timeout = open_timeout
        self.headers = headers or {}

    async def connect(self) -> Connection:
        options: dict[str, Any] = {
            "max_size": self.max_frame_bytes,
            "open_timeout": self.open_timeout,
            "ping_interval": None,
            "compression": None,
            "proxy": None,
            "max_queue": 64,
        }
        if self.headers:
            options["additional_headers"] = self.headers
        if self.url.startswith("wss://") and self.ssl_context is not None:
            options["ssl"] = self.ssl_context
        try:
            ws = await connect(self.url, **options)
        except (OSError, TimeoutError) as exc:
            raise TransportError(f"cannot connect to {self.endpoint}: {exc}") from exc
        except websockets.InvalidURI as exc:
            raise ConfigError(
                "url", f"invalid WebSocket URL {self.endpoint}: {exc}"
            ) from exc
        except websockets.WebSocketException as exc:
            raise TransportError(
                f"handshake with {self.endpoint} failed: {exc}"
            ) from exc
        return WebSocketConnection(ws)

    def __repr__(self) -> str:
        return f"WebSocketTransport({self.endpoint!r})"
