"""Running the sync server under uvicorn, in the foreground or in a running loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from .app import SyncServer

__all__ = ["RunningServer", "run_server", "serve_in_background", "uvicorn_config"]

logger = logging.getLogger(__name__)


def uvicorn_config(
    server: SyncServer,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    log_level: str = "warning",
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> uvicorn.Config:
    """A uvicorn configuration suited to the sync server.

    WebSocket keepalive pings every 10 s with a 20 s timeout notice clients that
    vanished without a close frame; the WebSocket message limit equals the
    protocol's frame limit.
    """
    return uvicorn.Config(
        server.app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        ws="websockets-sansio",
        ws_max_size=server.limits.protocol.max_frame_bytes,
        ws_ping_interval=10.0,
        ws_ping_timeout=20.0,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
        access_log=False,
    )


def run_server(
    server: SyncServer,
    host: str,
    port: int,
    *,
    on_ready: Callable[[str], None] | None = None,
    **options: object,
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully.

    ``on_ready`` is called with the WebSocket URL once the socket is bound (with
    the real port when ``port`` is 0).
    """
    config = uvicorn_config(server, host, port, **options)  # type: ignore[arg-type]
    userver = _Uvicorn(config, server)

    async def main() -> None:
        task = asyncio.create_task(userver.serve())
        while not userver.started and not task.done():
            await asyncio.sleep(0.01)
        if userver.started and on_ready is not None:
            bound = userver.servers[0].sockets[0].getsockname()[1]
            scheme = "wss" if options.get("ssl_certfile") else "ws"
            on_ready(f"{scheme}://{host}:{bound}/ws")
        await task

    asyncio.run(main())
    if not userver.started:
        raise OSError(f"could not serve on {host}:{port}")


class _Uvicorn(uvicorn.Server):
    """uvicorn, but clients hear 1001 "going away" from the sync server first.

    uvicorn closes WebSockets with 1012 before the application's lifespan
    shutdown runs; the sync server says goodbye itself, before that.
    """

    def __init__(self, config: uvicorn.Config, sync_server: SyncServer) -> None:
        super().__init__(config)
        self.sync_server = sync_server

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        await self.sync_server.close_clients()
        await super().shutdown(sockets)


@dataclass
class RunningServer:
    """A server started by :func:`serve_in_background`."""

    server: SyncServer
    host: str
    port: int
    uvicorn: uvicorn.Server
    tls: bool = False

    @property
    def url(self) -> str:
        scheme = "wss" if self.tls else "ws"
        return f"{scheme}://{self.host}:{self.port}/ws"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def serve_in_background(
    server: SyncServer, host: str = "127.0.0.1", port: int = 0, **options: object
) -> AsyncIterator[RunningServer]:
    """Serve in the running event loop; ``port=0`` picks a free port."""
    config = uvicorn_config(server, host, port, **options)  # type: ignore[arg-type]
    userver = _Uvicorn(config, server)
    task = asyncio.create_task(userver.serve())
    while not userver.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped during startup")
        await asyncio.sleep(0.01)
    bound = userver.servers[0].sockets[0].getsockname()[1]
    try:
        tls = bool(options.get("ssl_certfile"))
        yield RunningServer(server, host, int(bound), userver, tls)
    finally:
        userver.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
