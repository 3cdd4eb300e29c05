"""The sync server as an ASGI application (Starlette), served by uvicorn.

Routes: ``/ws`` (the sync protocol over WebSocket), ``/health`` (IETF health+json,
200 for pass and warn, 503 for fail), ``/livez`` and ``/readyz`` (``/ready`` too),
``/metrics`` (Prometheus text format), ``/dashboard`` (a live page, with
``/dashboard/snapshot`` and ``/dashboard/events``; see :mod:`.dashboard`).

Each WebSocket connection has a reader that hands frames to the
:class:`~leptos_sync.hub.Hub` and a writer that drains the connection's own
outgoing queue. A malformed or oversized frame closes only that connection; a
client that stops reading (its queue passes ``max_queued_bytes``) is disconnected
and resumes from its cursor when it comes back; a client that vanishes without a
close frame is noticed by the WebSocket keepalive. On shutdown the server stops
accepting, lets the frame being handled finish (the hub commits synchronously),
and closes every client with 1001 "going away".

The app can be mounted inside an application's own Starlette or FastAPI app::

    server = SyncServer(HubStore.sqlite("hub.sqlite3"))
    app = Starlette(routes=[Mount("/sync", app=server.app)],
                    lifespan=server.lifespan)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..auth import Authenticator
from ..clock import Clock, SystemClock
from ..hub import Hub, Outgoing
from ..hubstore import HubStore
from ..monitoring.config import MonitoringConfig
from ..monitoring.exposition import PROMETHEUS_CONTENT_TYPE
from ..monitoring.health import (
    HEALTH_MEDIA_TYPE,
    CheckResult,
    HealthChecks,
    HealthStatus,
)
from ..monitoring.manager import MonitoringManager
from ..monitoring.metrics import MetricsRegistry
from ..protocol import DEFAULT_LIMITS, Limits
from ..ratelimit import RateLimit
from ..reliability.health import HealthCheckConfig, HealthChecker
from .dashboard import Dashboard

__all__ = ["ServerLimits", "SyncServer", "create_app"]

logger = logging.getLogger(__name__)

GOING_AWAY = 1001
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


@dataclass(frozen=True)
class ServerLimits:
    """What one server accepts."""

    protocol: Limits = DEFAULT_LIMITS
    max_connections: int = 10_000
    max_queued_bytes: int = 64 * 1024 * 1024
    frames_per_second: float | None = None
    ops_per_second: float | None = None
    rate_burst_seconds: float = 1.0


class _Client:
    __slots__ = ("closing", "conn_id", "queue", "queued_bytes", "websocket")

    def __init__(self, conn_id: int, websocket: WebSocket) -> None:
        self.conn_id = conn_id
        self.websocket = websocket
        self.queue: asyncio.Queue[tuple[tuple[bytes, ...], bool] | None] = (
            asyncio.Queue()
        )
        self.queued_bytes = 0
        self.closing = False


class SyncServer:
    """A hub on a store, with the ASGI routes around it.

    Args:
        store: the hub's store (``HubStore.sqlite(path)`` is the embedded default).
        limits: frame, batch, connection and queue limits.
        monitoring: metrics/alerts/health settings (uptime is tracked by default).
        clock: the time source for health and monitoring.
        registry: a metrics registry to share.
        authenticator: checks tokens and per-collection rights (see
            :mod:`leptos_sync.auth`); ``None`` serves everyone.
    """

    def __init__(
        self,
        store: HubStore,
        *,
        limits: ServerLimits | None = None,
        monitoring: MonitoringConfig | None = None,
        clock: Clock | None = None,
        registry: MetricsRegistry | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.store = store
        self.limits = limits if limits is not None else ServerLimits()
        self.clock: Clock = clock if clock is not None else SystemClock()
        rate_limit = None
        if self.limits.frames_per_second or self.limits.ops_per_second:
            rate_limit = RateLimit(
                frames_per_second=self.limits.frames_per_second,
                ops_per_second=self.limits.ops_per_second,
                burst_seconds=self.limits.rate_burst_seconds,
                clock=self.clock,
            )
        self.hub = Hub(
            store,
            limits=self.limits.protocol,
            authenticator=authenticator,
            rate_limit=rate_limit,
        )
        self.registry = registry if registry is not None else MetricsRegistry()
        monitoring = (
            monitoring
            if monitoring is not None
            else MonitoringConfig(uptime_tracking=True)
        )
        self.monitoring = MonitoringManager(
            monitoring, clock=self.clock, registry=self.registry
        )
        self._clients: dict[int, _Client] = {}
        self._ids = itertools.count(1)
        self._accepting = True
        self._closed = False
        self._started = time.monotonic()
        self._instrument()
        self.hub.on_reject = lambda reason: self._m_rejected.labels(reason).inc()
        self.health_checker = self._build_health()
        self.dashboard = Dashboard(
            self.hub,
            self.registry,
            self.monitoring,
            self.health_checker,
            clock=self.clock,
            server_id=store.server_id,
            closing=lambda: not self._accepting,
        )
        self.app = Starlette(
            routes=[
                WebSocketRoute("/ws", self._ws_endpoint),
                Route("/health", self._health),
                Route("/livez", self._livez),
                Route("/readyz", self._readyz),
                Route("/ready", self._readyz),
                Route("/metrics", self._metrics),
                *self.dashboard.routes(),
            ],
            lifespan=self.lifespan,
        )

    # Lifecycle ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Starlette lifespan: start monitoring; on exit, shut down gracefully."""
        await self.monitoring.start()
        logger.info(
            "sync server ready (store %s)", getattr(self.store, "path", "memory")
        )
        try:
            yield
        finally:
            await self.shutdown()

    async def close_clients(self) -> int:
        """Stop accepting and close every client with 1001 "going away".

        Each frame is handled (and committed) synchronously, so no write is cut
        in half: what a client sent before this either was handled or was not.
        """
        self._accepting = False
        self.dashboard.close()
        clients = list(self._clients.values())
        for client in clients:
            await self._close(client, GOING_AWAY, "server shutting down")
        return len(clients)

    async def shutdown(self) -> None:
        """Close every client with 1001, stop monitoring, close the store."""
        if self._closed:
            return
        self._closed = True
        clients = await self.close_clients()
        await self.monitoring.stop()
        self.store.close()
        logger.info("sync server stopped after closing %d connections", clients)

    @property
    def connection_count(self) -> int:
        return len(self._clients)

    # The WebSocket endpoint --------------------------------------------------

    async def _ws_endpoint(self, websocket: WebSocket) -> None:
        if not self._accepting:
            await websocket.close(code=TRY_AGAIN_LATER, reason="shutting down")
            return
        if len(self._clients) >= self.limits.max_connections:
            self._m_rejected.labels("max_connections").inc()
            # Accept only to say why in a protocol error frame, then close.
            await websocket.accept()
            with contextlib.suppress(Exception):
                await websocket.send_bytes(
                    self.hub.error_frame("too-many-connections", "server is full")
                )
            await websocket.close(code=TRY_AGAIN_LATER, reason="too many connections")
            return
        await websocket.accept()
        client = _Client(next(self._ids), websocket)
        self._clients[client.conn_id] = client
        self.hub.connect(client.conn_id)
        self._m_connections.inc()
        writer = asyncio.create_task(self._writer(client))
        try:
            await self._reader(client)
        finally:
            self.hub.disconnect(client.conn_id)
            self._clients.pop(client.conn_id, None)
            # Let the writer send what is queued (an error frame, say) first.
            client.queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(writer, timeout=5)
            if websocket.client_state is not WebSocketState.DISCONNECTED:
                with contextlib.suppress(Exception):
                    await websocket.close()

    async def _reader(self, client: _Client) -> None:
        websocket = client.websocket
        while self._accepting and not client.closing:
            try:
                message = await websocket.receive()
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("bytes")
            if frame is None:
                self._m_errors.labels("text_frame").inc()
                await self._send_error(
                    client, "malformed", "frames are binary messages"
                )
                return
            self._m_frames_in.inc()
            self._m_bytes_in.inc(len(frame))
            started = time.perf_counter()
            outgoing = self.hub.handle(client.conn_id, frame)
            self._m_handle.observe(time.perf_counter() - started)
            self._route(outgoing)

    def _route(self, outgoing: list[Outgoing]) -> None:
        for out in outgoing:
            target = self._clients.get(out.conn)
            if target is None or target.closing:
                continue
            size = sum(len(f) for f in out.frames)
            target.queued_bytes += size
            if target.queued_bytes > self.limits.max_queued_bytes:
                # A client that does not read its frames would make the server
                # hold them forever; drop it, it resumes from its cursor.
                self._m_errors.labels("slow_client").inc()
                logger.info("disconnecting slow client %s", target.conn_id)
                target.closing = True
                target.queue.put_nowait(((), True))
                continue
            target.queue.put_nowait((out.frames, out.close))
            if out.close:
                self._m_errors.labels("protocol").inc()
                target.closing = True

    async def _writer(self, client: _Client) -> None:
        websocket = client.websocket
        while True:
            item = await client.queue.get()
            if item is None:
                return
            frames, close = item
            try:
                for frame in frames:
                    await websocket.send_bytes(frame)
                    client.queued_bytes -= len(frame)
                    self._m_frames_out.inc()
                    self._m_bytes_out.inc(len(frame))
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
            if close:
                await self._close(client, POLICY_VIOLATION, "protocol error")
                return

    async def _send_error(self, client: _Client, code: str, text: str) -> None:
        with contextlib.suppress(Exception):
            await client.websocket.send_bytes(self.hub.error_frame(code, text))
        await self._close(client, POLICY_VIOLATION, text)

    async def _close(self, client: _Client, code: int, reason: str) -> None:
        client.closing = True
        if client.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await client.websocket.close(code=code, reason=reason[:120])

    # HTTP endpoints ----------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        report = await self.health_checker.run()
        report = self.monitoring.health(report.checks, service_id=self.store.server_id)
        return JSONResponse(
            report.to_json(),
            status_code=report.http_status,
            media_type=HEALTH_MEDIA_TYPE,
        )

    async def _livez(self, request: Request) -> Response:
        return JSONResponse({"status": "pass"}, media_type=HEALTH_MEDIA_TYPE)

    async def _readyz(self, request: Request) -> Response:
        if not self._accepting:
            return JSONResponse(
                {"status": "fail", "output": "shutting down"},
                status_code=503,
                media_type=HEALTH_MEDIA_TYPE,
            )
        try:
            self.store.collections()
        except Exception as exc:
            return JSONResponse(
                {"status": "fail", "output": f"store unavailable: {exc}"},
                status_code=503,
                media_type=HEALTH_MEDIA_TYPE,
            )
        return JSONResponse({"status": "pass"}, media_type=HEALTH_MEDIA_TYPE)

    async def _metrics(self, request: Request) -> Response:
        return PlainTextResponse(
            self.registry.text(), media_type=PROMETHEUS_CONTENT_TYPE
        )

    # Monitoring --------------------------------------------------------------

    def _instrument(self) -> None:
        r = self.registry
        self._m_connections = r.counter(
            "leptos_sync_server_connections_total", "WebSocket connections accepted."
        )
        self._m_rejected = r.counter(
            "leptos_sync_server_rejected_total",
            "Connections and messages refused, by reason.",
            labelnames=("reason",),
        )
        self._m_errors = r.counter(
            "leptos_sync_server_connection_errors_total",
            "Connections closed for misbehaving, by reason.",
            labelnames=("reason",),
        )
        self._m_frames_in = r.counter(
            "leptos_sync_server_frames_received_total", "Frames received from clients."
        )
        self._m_frames_out = r.counter(
            "leptos_sync_server_frames_sent_total", "Frames sent to clients."
        )
        self._m_bytes_in = r.counter(
            "leptos_sync_server_received_bytes_total", "Bytes received from clients."
        )
        self._m_bytes_out = r.counter(
            "leptos_sync_server_sent_bytes_total", "Bytes sent to clients."
        )
        self._m_handle = r.histogram(
            "leptos_sync_server_frame_handling_seconds",
            "Time to handle one frame, including the store commit.",
            buckets=LATENCY_BUCKETS,
        )
        hub = self.hub
        r.gauge(
            "leptos_sync_server_connected_clients", "Open WebSocket connections."
        ).set_function(lambda: float(len(self._clients)))
        r.gauge(
            "leptos_sync_server_operations_stored", "Operations stored since start."
        ).set_function(lambda: float(hub.statistics().ops_stored))
        r.gauge(
            "leptos_sync_server_operations_duplicate",
            "Pushed operations already stored (resends), since start.",
        ).set_function(lambda: float(hub.statistics().ops_duplicate))
        r.gauge(
            "leptos_sync_server_operations_fanned_out",
            "Operation deliveries to subscribers, since start.",
        ).set_function(lambda: float(hub.statistics().ops_fanned_out))

    def _build_health(self) -> HealthChecker:
        config = HealthCheckConfig(
            uptime_tracking=False,  # added by the monitoring manager when tracked
            basic_checks=True,
            advanced_checks=self.monitoring.config.health_checks
            is HealthChecks.Advanced,
        )
        checker = HealthChecker(config, self.clock, service_id="leptos-sync-server")

        async def store_check() -> CheckResult:
            start = time.perf_counter()
            names = self.store.collections()
            elapsed = (time.perf_counter() - start) * 1000
            return CheckResult(
                "store",
                "responseTime",
                HealthStatus.PASS,
                observed_value=round(elapsed, 3),
                observed_unit="ms",
                output=f"{len(names)} collections",
            )

        async def connections_check() -> CheckResult:
            count = len(self._clients)
            status = (
                HealthStatus.WARN
                if count >= self.limits.max_connections * 0.9
                else HealthStatus.PASS
            )
            return CheckResult(
                "connections",
                "count",
                status,
                observed_value=count,
                observed_unit="connections",
            )

        checker.add_check("store", "responseTime", store_check, observed_unit="ms")
        checker.add_check("connections", "count", connections_check)
        return checker

    def statistics(self) -> dict[str, Any]:
        return {"hub": self.hub.statistics(), "connections": len(self._clients)}


def create_app(
    db: str | None = None,
    *,
    limits: ServerLimits | None = None,
    monitoring: MonitoringConfig | None = None,
) -> Starlette:
    """An ASGI app serving a hub on the SQLite store at ``db`` (memory if ``None``)."""
    store = HubStore.sqlite(db) if db else HubStore.memory()
    return SyncServer(store, limits=limits, monitoring=monitoring).app
