"""The monitoring layer in one object, and the guide's ``BasicMetrics``.

:class:`MonitoringManager` owns a :class:`~.metrics.MetricsRegistry`, a
:class:`BasicMetrics` facade over it and an :class:`~.alerts.AlertManager`
configured by a :class:`~.config.MonitoringConfig`. Between ``start()`` and
``stop()`` it evaluates the alert rules every ``evaluation_interval`` on its
clock::

    monitoring = await MonitoringManager.new(MonitoringConfig())
    async with monitoring:
        ...
        text = monitoring.metrics_text()

Uptime is measured on the monotonic clock from the manager's creation, so wall
clock jumps never change it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from types import TracebackType
from typing import Any

from ..clock import Clock, SystemClock
from ..durations import Duration, ns_to_timedelta, to_ns
from ..errors import ConfigError
from .alerts import AlertManager, AlertRule, builtin_rules
from .config import Alerts, Metrics, MonitoringConfig
from .health import CheckResult, HealthReport, HealthStatus
from .metrics import DEFAULT_BUCKETS, Counter, Gauge, Histogram, MetricsRegistry
from .sinks import AlertSink

__all__ = ["BasicMetrics", "MonitoringManager"]

logger = logging.getLogger(__name__)

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def sanitise_name(name: str) -> str:
    """A Prometheus-legal metric name: other characters become ``_``.

    ``"sync duration (ms)"`` becomes ``"sync_duration__ms_"``; a leading digit
    gets a ``_`` prefix. Distinct names may map to the same metric.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError("name", "a metric name must be a non-empty string")
    cleaned = _INVALID.sub("_", name)
    return f"_{cleaned}" if cleaned[0].isdigit() else cleaned


class BasicMetrics:
    """Named counters, gauges and duration histograms with no labels.

    The guide's ``BasicMetrics``: every method takes a plain name, sanitised to
    Prometheus rules, and creates the metric on first use. Durations are kept
    exactly as integer nanoseconds (sum and count) besides the histogram's
    buckets, so :meth:`average_histogram` has no floating-point drift. All
    methods are safe from any thread or task.

    Args:
        registry: the registry to publish in; a private one by default.
        buckets: bucket bounds (seconds) for new histograms.
    """

    def __init__(
        self,
        registry: MetricsRegistry | None = None,
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        self.registry = registry if registry is not None else MetricsRegistry()
        self._buckets = tuple(buckets)
        self._lock = threading.Lock()
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        self._histograms: dict[str, Histogram] = {}
        # name -> [sum of nanoseconds, count], changed under self._lock.
        self._durations: dict[str, list[int]] = {}

    def increment_counter(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` (default 1) to the counter ``name``."""
        counter = self._counters.get(name)
        if counter is None:
            counter = self.registry.counter(sanitise_name(name), f"Counter {name}.")
            self._counters[name] = counter
        counter.inc(amount)

    def record_gauge(self, name: str, value: float) -> None:
        """Set the gauge ``name`` to ``value``."""
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self.registry.gauge(sanitise_name(name), f"Gauge {name}.")
            self._gauges[name] = gauge
        gauge.set(value)

    def record_histogram(self, name: str, duration: Duration) -> None:
        """Record a duration (``timedelta`` or seconds) in the histogram ``name``."""
        ns = to_ns(duration, "duration")
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = self.registry.histogram(
                sanitise_name(name), f"Durations of {name}, in seconds.", self._buckets
            )
            self._histograms[name] = histogram
        histogram.observe(ns / 1e9)
        with self._lock:
            tally = self._durations.setdefault(name, [0, 0])
            tally[0] += ns
            tally[1] += 1

    def counter(self, name: str) -> int:
        """The counter's value; 0 if never incremented."""
        counter = self._counters.get(name)
        return 0 if counter is None else int(counter.value)

    def gauge(self, name: str) -> float | None:
        """The gauge's value; ``None`` if never set."""
        gauge = self._gauges.get(name)
        return None if gauge is None else gauge.value

    def histogram_count(self, name: str) -> int:
        """How many durations were recorded under ``name``."""
        with self._lock:
            return self._durations.get(name, [0, 0])[1]

    def histogram_sum(self, name: str) -> timedelta:
        """The total of the durations recorded under ``name``."""
        with self._lock:
            return ns_to_timedelta(self._durations.get(name, [0, 0])[0])

    def average_histogram(self, name: str) -> timedelta | None:
        """The mean recorded duration, rounded once; ``None`` before any."""
        with self._lock:
            total, count = self._durations.get(name, [0, 0])
        if count == 0:
            return None
        return ns_to_timedelta(Fraction(total, count))

    def metrics_text(self) -> str:
        """The registry in the Prometheus text format."""
        return self.registry.text()

    def __repr__(self) -> str:
        return f"BasicMetrics({self.registry!r})"


class MonitoringManager:
    """Metrics, alerts, uptime and health for one sync manager or server.

    ``Metrics.Advanced`` turns on quantile sketches in the registry (also in a
    registry passed in). ``Alerts.Basic`` loads :func:`~.alerts.builtin_rules`;
    ``Alerts.Advanced`` adds ``config.rules`` and allows :meth:`add_rule`.

    Args:
        config: the settings; ``MonitoringConfig()`` by default.
        clock: where time comes from; the system clock by default.
        registry: the registry to share with the sync engine or server.
        sinks: alert sinks; a log sink by default.
    """

    def __init__(
        self,
        config: MonitoringConfig | None = None,
        *,
        clock: Clock | None = None,
        registry: MetricsRegistry | None = None,
        sinks: Iterable[AlertSink] | None = None,
    ) -> None:
        config = config if config is not None else MonitoringConfig()
        if not isinstance(config, MonitoringConfig):
            raise ConfigError("config", f"expected MonitoringConfig, got {config!r}")
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.registry = registry if registry is not None else MetricsRegistry()
        if config.metrics is Metrics.Advanced:
            self.registry.quantiles = True
        self.metrics = BasicMetrics(self.registry)

        rules: tuple[AlertRule, ...] = builtin_rules(
            config.outbox_backlog, config.backlog_for, config.stale_after
        )
        if config.alerts is Alerts.Advanced:
            rules += config.rules
        self.alerts = AlertManager(self.clock, sinks, self.registry, rules=rules)

        self._created_ns = self.clock.monotonic_ns()
        self._task: asyncio.Task[None] | None = None
        self._health_gauge = self.registry.gauge(
            "leptos_sync_health_status", "Overall health: 0 pass, 1 warn, 2 fail."
        )
        if config.uptime_tracking:
            self.registry.gauge(
                "leptos_sync_uptime_seconds", "Seconds since monitoring started."
            ).set_function(self._uptime_seconds)

    @classmethod
    async def new(
        cls,
        config: MonitoringConfig | None = None,
        *,
        clock: Clock | None = None,
        registry: MetricsRegistry | None = None,
        sinks: Iterable[AlertSink] | None = None,
    ) -> MonitoringManager:
        """The guide's ``MonitoringManager::new(config).await``.

        The manager is created stopped; call :meth:`start` (or use ``async
        with``) to evaluate alert rules periodically.
        """
        return cls(config, clock=clock, registry=registry, sinks=sinks)

    def add_rule(self, rule: AlertRule) -> None:
        """Add a user alert rule; needs ``Alerts.Advanced``."""
        if self.config.alerts is not Alerts.Advanced:
            raise ConfigError("alerts", "user alert rules need alerts=Alerts.Advanced")
        self.alerts.add_rule(rule)

    def metrics_text(self) -> str:
        """Every metric in the Prometheus text format 0.0.4."""
        return self.registry.text()

    def uptime(self) -> timedelta | None:
        """Time since the manager was created (monotonic); ``None`` untracked."""
        if not self.config.uptime_tracking:
            return None
        return ns_to_timedelta(self.clock.monotonic_ns() - self._created_ns)

    def health(
        self,
        checks: Iterable[CheckResult] = (),
        *,
        service_id: str | None = None,
        version: str | None = None,
    ) -> HealthReport:
        """A health report of ``checks``, with uptime when it is tracked.

        The overall status is also published as ``leptos_sync_health_status``
        (0 pass, 1 warn, 2 fail), which the HealthFailing rule watches.
        """
        results = list(checks)
        # The reliability layer's HealthChecker may have reported uptime already,
        # under the same "uptime:uptime" key; never report it twice.
        if self.config.uptime_tracking and not any(
            c.measurement == "uptime" for c in results
        ):
            results.append(
                CheckResult(
                    "uptime",
                    "uptime",
                    HealthStatus.PASS,
                    observed_value=self._uptime_seconds(),
                    observed_unit="s",
                    time=_datetime(self.clock.wall_ns()),
                    component_type="system",
                )
            )
        report = HealthReport(tuple(results), service_id=service_id, version=version)
        self._health_gauge.set(report.status.severity)
        return report

    def snapshot(self) -> dict[str, Any]:
        """Everything a dashboard shows, as JSON-ready data."""
        stats = self.alerts.statistics()
        return {
            "config": self.config.to_json(),
            "running": self.running,
            "uptime_seconds": (
                self._uptime_seconds() if self.config.uptime_tracking else None
            ),
            "alerts": [alert.to_json() for alert in self.alerts.alerts()],
            "alert_statistics": asdict(stats),
            "metrics": self.registry.snapshot(),
        }

    # Lifecycle --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Evaluate alert rules now and then every ``evaluation_interval``."""
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name="leptos_sync-alerts")
        logger.info(
            "monitoring started (metrics=%s, alerts=%s)",
            self.config.metrics.value,
            self.config.alerts.value,
        )

    async def stop(self) -> None:
        """Stop evaluating, then send any notification still queued."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if _cancelling():
                    raise
            logger.info("monitoring stopped")
        await self.alerts.flush()

    async def __aenter__(self) -> MonitoringManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(self) -> None:
        interval = self.config.evaluation_interval_ns
        while True:
            try:
                await self.alerts.evaluate()
            except Exception:
                # evaluate() already absorbs rule and sink failures; anything
                # else is a bug, reported without stopping the loop.
                logger.exception("alert evaluation failed")
            await self.clock.sleep(ns_to_timedelta(interval))

    def _uptime_seconds(self) -> float:
        return (self.clock.monotonic_ns() - self._created_ns) / 1e9

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"MonitoringManager({self.config.metrics.value}, {state})"


def _cancelling() -> bool:
    # True when the task calling stop() is itself being cancelled, in which case
    # the CancelledError must propagate rather than be taken for the loop's.
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _datetime(wall_ns: int) -> datetime:
    return datetime.fromtimestamp(0, UTC) + timedelta(microseconds=wall_ns // 1000)
