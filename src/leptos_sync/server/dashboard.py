"""The server's live dashboard: one page, a JSON snapshot and an event stream.

Routes, added to :class:`~leptos_sync.server.app.SyncServer`'s app:

``/dashboard``
    The page (``static/dashboard.html``: inline CSS and JavaScript, no build
    step, nothing fetched from elsewhere).
``/dashboard/snapshot``
    One snapshot as JSON.
``/dashboard/events``
    Server-sent events (``text/event-stream``): a ``snapshot`` event every
    :attr:`Dashboard.interval` seconds until the browser goes away or the server
    shuts down.

A snapshot is read from what the server already exposes as data: the hub's
statistics (connections, per-collection heads and subscribers, operation
counters and the figures replicas report with ``Status`` frames), the
frame-handling histogram, the active alerts and a run of the health checks.
Rates (operations stored per second, the latency of recent frames) are the
difference between two consecutive readings; :class:`RateWindow` does that
arithmetic with no I/O and no clock of its own, so it is tested with plain
numbers.

A stream ends when the browser disconnects or when the server starts shutting
down (:meth:`Dashboard.close`, called by ``SyncServer.close_clients``), so an
open dashboard never holds up uvicorn's graceful shutdown under ``run_server``
or ``serve_in_background``, which close the clients before uvicorn waits for
open responses. Under a plain ``uvicorn module:app`` the application hears of
the shutdown only after that wait, so an open dashboard delays it by up to
uvicorn's ``timeout_graceful_shutdown``; uvicorn offers applications no earlier
signal.

What a snapshot never holds: tokens (the hub does not keep them), record
contents, or the monitoring configuration (webhook URLs may carry secrets).
Like ``/metrics``, the dashboard has no authentication of its own; an
application that exposes the server beyond a trusted network mounts it behind
its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from ..clock import Clock, SystemClock
from ..errors import StorageError
from ..hub import Hub, HubStatistics
from ..instruments import BREAKER_STATE_VALUES
from ..monitoring.alerts import Alert
from ..monitoring.health import HealthReport
from ..monitoring.manager import MonitoringManager
from ..monitoring.metrics import Histogram, MetricsRegistry
from ..reliability.health import HealthChecker

__all__ = [
    "FRAME_HANDLING_HISTOGRAM",
    "Dashboard",
    "RateWindow",
    "Rates",
    "Reading",
    "bucket_quantile",
    "render_snapshot",
]

logger = logging.getLogger(__name__)

FRAME_HANDLING_HISTOGRAM = "leptos_sync_server_frame_handling_seconds"

#: Reported ``breaker_state`` figures back to names. Two states share a value
#: (closed/disabled, open/forced open); the first listed one names it.
BREAKER_STATE_NAMES: dict[float, str] = {
    float(value): state.value for state, value in reversed(BREAKER_STATE_VALUES.items())
}

_PAGE_HEADERS = {
    # The page is self-contained: its only request is to this server's stream.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_STREAM_HEADERS = {
    "Cache-Control": "no-store",
    # Reverse proxies that buffer responses would hold the events back.
    "X-Accel-Buffering": "no",
}
_RECONNECT_MS = 2000

Buckets = tuple[tuple[float, int], ...]


# Readings and rates (no I/O) ---------------------------------------------------


@dataclass(frozen=True)
class Reading:
    """The counters a snapshot is made of, taken at one instant.

    Attributes:
        at_ns: when, on the monotonic clock.
        hub: the hub's statistics.
        latency_buckets: the frame-handling histogram's cumulative buckets,
            ``(upper bound, count)`` ending with ``+Inf``.
        latency_sum: the sum of its observations, in seconds.
    """

    at_ns: int
    hub: HubStatistics
    latency_buckets: Buckets = ()
    latency_sum: float = 0.0

    @property
    def latency_count(self) -> int:
        return self.latency_buckets[-1][1] if self.latency_buckets else 0


@dataclass(frozen=True)
class Rates:
    """What changed between two readings.

    Attributes:
        ops_per_second: operations stored per second; ``None`` on the first
            reading, which has nothing to compare with.
        frames: frames handled in the window.
        mean_seconds: their mean handling time (``None`` without frames).
        p99_seconds: their 99th percentile, interpolated in the buckets.
    """

    ops_per_second: float | None = None
    frames: int = 0
    mean_seconds: float | None = None
    p99_seconds: float | None = None


class RateWindow:
    """Turns consecutive readings into rates; one per stream or poller."""

    def __init__(self) -> None:
        self._last: Reading | None = None

    def advance(self, reading: Reading) -> Rates:
        """The rates since the previous reading; remembers this one."""
        last, self._last = self._last, reading
        if last is None or reading.at_ns <= last.at_ns:
            return Rates()

        # The hub's counters only grow, but a server restart behind a proxy
        # would make them smaller: a negative rate means nothing, so clamp.
        seconds = (reading.at_ns - last.at_ns) / 1e9
        stored = max(0, reading.hub.ops_stored - last.hub.ops_stored)
        rates = Rates(ops_per_second=stored / seconds)

        delta = _bucket_delta(reading.latency_buckets, last.latency_buckets)
        frames = delta[-1][1] if delta else 0
        if frames <= 0:
            return rates
        mean = max(0.0, reading.latency_sum - last.latency_sum) / frames
        return Rates(rates.ops_per_second, frames, mean, bucket_quantile(delta, 0.99))


def bucket_quantile(buckets: Sequence[tuple[float, int]], q: float) -> float | None:
    """The ``q`` quantile of cumulative histogram buckets, as Prometheus does it.

    The value is interpolated linearly inside the bucket holding the rank, so it
    is off by at most that bucket's width; a rank in the ``+Inf`` bucket reports
    the highest finite bound. ``None`` when the buckets hold no observation.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0
    for bound, count in buckets:
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = (bound if not math.isinf(bound) else lower), count
    return lower


def _bucket_delta(now: Buckets, before: Buckets) -> Buckets:
    if not before or len(before) != len(now):
        return now
    return tuple(
        (bound, max(0, count - old))
        for (bound, count), (_, old) in zip(now, before, strict=True)
    )


def render_snapshot(
    reading: Reading,
    rates: Rates,
    *,
    alerts: Sequence[Alert],
    health: HealthReport,
    server_id: str,
    accepting: bool,
    uptime: timedelta | None,
    wall_ns: int,
    interval: float,
) -> dict[str, Any]:
    """The JSON document the page draws, from a reading and its rates."""
    hub = reading.hub
    replicas = [
        _replica_json(replica, figures)
        for replica, figures in sorted(hub.client_status.items())
    ]
    collections = [
        {"name": name, "head": head, "subscribers": hub.subscriptions.get(name, 0)}
        for name, head in sorted(hub.heads.items())
    ]
    buckets = reading.latency_buckets
    count = reading.latency_count
    return {
        "server": {
            "id": server_id,
            "accepting": accepting,
            "uptime_seconds": None if uptime is None else uptime.total_seconds(),
            "time": datetime.fromtimestamp(wall_ns / 1e9, UTC).isoformat(),
            "interval_seconds": interval,
        },
        "health": health.to_json(),
        "connections": {"open": hub.connections, "handshaken": hub.handshaken},
        "replicas": replicas,
        "collections": collections,
        "ops": {
            "stored": hub.ops_stored,
            "duplicate": hub.ops_duplicate,
            "fanned_out": hub.ops_fanned_out,
            "pushes": hub.pushes,
            "pulls": hub.pulls,
            "snapshots_sent": hub.snapshots_sent,
            "errors": hub.errors,
            "per_second": rates.ops_per_second,
        },
        "latency": {
            "count": count,
            "mean_seconds": reading.latency_sum / count if count else None,
            "p50_seconds": bucket_quantile(buckets, 0.5),
            "p99_seconds": bucket_quantile(buckets, 0.99),
            "window": {
                "frames": rates.frames,
                "mean_seconds": rates.mean_seconds,
                "p99_seconds": rates.p99_seconds,
            },
        },
        "outbox": {
            "total": sum(r["outbox_depth"] or 0 for r in replicas),
            "max": max((r["outbox_depth"] or 0 for r in replicas), default=0),
        },
        "alerts": [alert.to_json() for alert in alerts],
    }


def _replica_json(replica: int, figures: dict[str, float]) -> dict[str, Any]:
    breaker = figures.get("breaker_state")
    return {
        # Replica ids are 64-bit: JavaScript numbers would round them.
        "replica": f"{replica:016x}",
        "outbox_depth": figures.get("outbox_depth"),
        "breaker_state": None if breaker is None else BREAKER_STATE_NAMES.get(breaker),
        "integrity_failures": figures.get("integrity_failures"),
        "figures": dict(sorted(figures.items())),
    }


def _finite(value: Any) -> Any:
    # JSON has no NaN or Infinity, and JSON.parse rejects them: figures come
    # from clients, so any float may turn up.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def encode_json(snapshot: dict[str, Any]) -> str:
    """The snapshot as strict JSON (non-finite numbers become ``null``)."""
    return json.dumps(_finite(snapshot), allow_nan=False, separators=(",", ":"))


def sse_event(event: str, data: str) -> str:
    """One server-sent event; ``data`` must hold no line break (JSON does not)."""
    return f"event: {event}\ndata: {data}\n\n"


# The routes -------------------------------------------------------------------


class Dashboard:
    """The dashboard of one sync server.

    Args:
        hub: whose statistics to show.
        registry: where the frame-handling histogram lives.
        monitoring: the alerts and the uptime.
        health_checker: the server's health checks, run for every snapshot.
        clock: the time source for rates and the pause between events.
        server_id: the store's server id, shown in the header.
        closing: returns True once the server is shutting down; streams end.
        interval: seconds between two events of a stream.
    """

    def __init__(
        self,
        hub: Hub,
        registry: MetricsRegistry,
        monitoring: MonitoringManager,
        health_checker: HealthChecker,
        *,
        clock: Clock | None = None,
        server_id: str = "",
        closing: Callable[[], bool] = lambda: False,
        interval: float = 1.0,
    ) -> None:
        self.hub = hub
        self.registry = registry
        self.monitoring = monitoring
        self.health_checker = health_checker
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.server_id = server_id
        self.interval = interval
        self._closing = closing
        self._closed = asyncio.Event()
        self._window = RateWindow()
        self._streams = 0
        self._page: str | None = None

    def routes(self) -> list[BaseRoute]:
        """The page, snapshot and event-stream routes."""
        return [
            Route("/dashboard", self._page_endpoint, methods=["GET"]),
            Route("/dashboard/snapshot", self._snapshot_endpoint, methods=["GET"]),
            Route("/dashboard/events", self._events_endpoint, methods=["GET"]),
        ]

    @property
    def streams(self) -> int:
        """Event streams open now."""
        return self._streams

    @property
    def closed(self) -> bool:
        return self._closed.is_set() or self._closing()

    def close(self) -> None:
        """End every event stream at its next step; new ones end at once."""
        self._closed.set()

    # Snapshots -----------------------------------------------------------------

    def read(self) -> Reading:
        """The hub's counters and the latency histogram, now."""
        histogram = self.registry.get(FRAME_HANDLING_HISTOGRAM)
        buckets: Buckets = ()
        total = 0.0
        if isinstance(histogram, Histogram) and not histogram.labelnames:
            buckets, total = histogram.bucket_counts(), histogram.sum
        return Reading(self.clock.monotonic_ns(), self.hub.statistics(), buckets, total)

    async def snapshot(self, window: RateWindow | None = None) -> dict[str, Any]:
        """A snapshot, with rates since ``window``'s previous reading.

        Without a window, the rates are since the previous call that had none
        (the ``/dashboard/snapshot`` pollers share that one).

        Raises:
            StorageError: the hub's store cannot be read.
        """
        reading = self.read()
        rates = (window if window is not None else self._window).advance(reading)

        # The same report as /health: the server's checks plus uptime.
        checks = await self.health_checker.run()
        health = self.monitoring.health(checks.checks, service_id=self.server_id)
        return render_snapshot(
            reading,
            rates,
            alerts=self.monitoring.alerts.alerts(),
            health=health,
            server_id=self.server_id,
            accepting=not self.closed,
            uptime=self.monitoring.uptime(),
            wall_ns=self.clock.wall_ns(),
            interval=self.interval,
        )

    # Endpoints -----------------------------------------------------------------

    async def _page_endpoint(self, request: Request) -> Response:
        if self._page is None:
            page = resources.files("leptos_sync.server").joinpath(
                "static", "dashboard.html"
            )
            self._page = page.read_text(encoding="utf-8")
        return HTMLResponse(self._page, headers=_PAGE_HEADERS)

    async def _snapshot_endpoint(self, request: Request) -> Response:
        try:
            snapshot = await self.snapshot()
        except StorageError as exc:
            return JSONResponse({"error": f"store unavailable: {exc}"}, status_code=503)
        return Response(
            encode_json(snapshot),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def _events_endpoint(self, request: Request) -> Response:
        return StreamingResponse(
            self._events(request),
            media_type="text/event-stream",
            headers=_STREAM_HEADERS,
        )

    async def _events(self, request: Request) -> AsyncIterator[str]:
        # Each stream has its own window: its rates span exactly the time
        # between two of its own events, whoever else is watching.
        window = RateWindow()
        self._streams += 1
        logger.debug("dashboard stream opened (%d open)", self._streams)
        try:
            yield f"retry: {_RECONNECT_MS}\n\n"
            while not self.closed:
                try:
                    data = encode_json(await self.snapshot(window))
                except StorageError as exc:
                    # Said on the page, not fatal to the stream: the store may
                    # be back by the next event.
                    data = json.dumps({"error": f"store unavailable: {exc}"})
                    yield sse_event("failure", data)
                else:
                    yield sse_event("snapshot", data)
                await self._pause()
                if await request.is_disconnected():
                    break
        finally:
            self._streams -= 1
            logger.debug("dashboard stream closed (%d open)", self._streams)

    async def _pause(self) -> None:
        # Sleep on the injected clock, but wake at once when the dashboard
        # closes; both waiters are cancelled however this returns.
        sleeper = asyncio.ensure_future(self.clock.sleep(self.interval))
        closer = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({sleeper, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            closer.cancel()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._streams} streams"
        return f"Dashboard({self.server_id or 'server'}, {state})"
