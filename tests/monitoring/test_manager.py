"""Tests of MonitoringManager and the BasicMetrics facade."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from leptos_sync.clock import ManualClock
from leptos_sync.errors import ConfigError
from leptos_sync.monitoring import (
    Alert,
    AlertRule,
    Alerts,
    AlertState,
    BasicMetrics,
    CheckResult,
    HealthChecks,
    HealthStatus,
    Metrics,
    MetricsRegistry,
    MonitoringConfig,
    MonitoringManager,
)
from leptos_sync.monitoring.manager import sanitise_name


class Recorder:
    """A sink that keeps every notification it receives."""

    def __init__(self) -> None:
        self.received: list[Alert] = []

    async def send(self, alert: Alert) -> None:
        self.received.append(alert)


async def test_guide_basic_monitoring_snippet() -> None:
    """The guide's basic monitoring example runs as written in python-api."""
    monitoring = await MonitoringManager.new(
        MonitoringConfig(
            metrics=Metrics.Basic,
            alerts=Alerts.Basic,
            health_checks=HealthChecks.Basic,
            uptime_tracking=False,
        )
    )
    metrics = BasicMetrics()
    metrics.increment_counter("sync_operations")
    metrics.record_gauge("active_connections", 5)
    metrics.record_histogram("sync_duration", timedelta(milliseconds=100))

    assert metrics.counter("sync_operations") == 1
    assert metrics.gauge("active_connections") == 5
    assert metrics.average_histogram("sync_duration") == timedelta(milliseconds=100)
    assert not monitoring.running
    assert "leptos_sync_alerts_active" in monitoring.metrics_text()


def test_basic_metrics_exact_under_threads() -> None:
    """16 threads × 10,000 calls give exact counters and duration averages."""
    metrics = BasicMetrics()

    def work() -> None:
        for i in range(10_000):
            metrics.increment_counter("sync_operations")
            metrics.record_histogram("sync_duration", 0.001 if i % 2 else 0.002)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.counter("sync_operations") == 160_000
    assert metrics.histogram_count("sync_duration") == 160_000
    assert metrics.histogram_sum("sync_duration") == timedelta(seconds=240)
    assert metrics.average_histogram("sync_duration") == timedelta(microseconds=1500)


def test_average_is_exact_and_rounded_once() -> None:
    """Durations are summed as integer nanoseconds and the mean rounded once."""
    metrics = BasicMetrics()
    assert metrics.average_histogram("d") is None
    for _ in range(3):
        metrics.record_histogram("d", 0.1)
    metrics.record_histogram("d", timedelta(microseconds=1))
    # (300,000,000 + 1,000) ns / 4 = 75,000,250 ns -> 75,000 µs.
    assert metrics.average_histogram("d") == timedelta(microseconds=75_000)
    assert metrics.gauge("unset") is None
    assert metrics.counter("unset") == 0


def test_basic_metrics_sanitises_names_for_prometheus() -> None:
    """Guide-style names become legal Prometheus names in the text output."""
    metrics = BasicMetrics()
    metrics.increment_counter("sync.operations-total")
    metrics.record_gauge("9lives", 1)
    families = text_string_to_metric_families(metrics.metrics_text())
    names = {sample.name for family in families for sample in family.samples}
    assert names == {"sync_operations_total", "_9lives"}
    assert sanitise_name("a b:c") == "a_b_c"
    with pytest.raises(ConfigError):
        sanitise_name("")


def test_basic_metrics_type_clash_raises() -> None:
    """Using one name as a counter and as a gauge raises ConfigError."""
    metrics = BasicMetrics()
    metrics.increment_counter("thing")
    with pytest.raises(ConfigError):
        metrics.record_gauge("thing_total", 1)


def test_uptime_is_monotonic_and_ignores_wall_jumps() -> None:
    """Uptime follows the monotonic clock, whatever the wall clock does."""
    clock = ManualClock()
    manager = MonitoringManager(MonitoringConfig(uptime_tracking=True), clock=clock)
    clock.advance(90)
    clock.set_wall(0)  # the wall clock jumps back decades
    assert manager.uptime() == timedelta(seconds=90)
    clock.jump_wall(10_000)
    clock.advance(timedelta(milliseconds=500))
    assert manager.uptime() == timedelta(seconds=90.5)
    gauge = manager.registry.get("leptos_sync_uptime_seconds")
    assert gauge is not None and gauge.value == 90.5  # type: ignore[union-attr]


def test_uptime_untracked_is_none() -> None:
    """Without uptime tracking, uptime() is None and health adds no check."""
    manager = MonitoringManager(clock=ManualClock())
    assert manager.uptime() is None
    assert manager.health().checks == ()


def test_health_adds_uptime_and_publishes_status() -> None:
    """health() adds an uptime check and sets leptos_sync_health_status."""
    clock = ManualClock()
    manager = MonitoringManager(MonitoringConfig(uptime_tracking=True), clock=clock)
    clock.advance(5)
    storage = CheckResult("storage", "responseTime", HealthStatus.WARN, output="slow")
    report = manager.health([storage], service_id="replica-1")

    uptime = report.check("uptime", "uptime")
    assert uptime is not None and uptime.observed_value == 5.0
    assert report.status is HealthStatus.WARN
    body = report.to_json()
    assert body["checks"]["uptime:uptime"][0]["observedUnit"] == "s"
    again = manager.health(report.checks)
    assert len(again.checks) == 2  # an uptime check present is not added twice
    gauge = manager.registry.get("leptos_sync_health_status")
    assert gauge is not None and gauge.value == 1  # type: ignore[union-attr]


async def test_health_failure_raises_builtin_alert() -> None:
    """A failing health report fires HealthFailing at the next evaluation."""
    sink = Recorder()
    manager = MonitoringManager(clock=ManualClock(), sinks=[sink])
    manager.health([CheckResult("transport", "connected", HealthStatus.FAIL)])
    await manager.alerts.evaluate()
    assert [a.name for a in sink.received] == ["HealthFailing"]


async def test_periodic_evaluation_runs_on_the_clock() -> None:
    """start() evaluates at once and then every interval of the manual clock."""
    clock = ManualClock()
    sink = Recorder()
    config = MonitoringConfig(evaluation_interval=10, backlog_for=30)
    manager = MonitoringManager(config, clock=clock, sinks=[sink])
    depth = manager.registry.gauge("leptos_sync_outbox_depth")
    depth.set(5000)

    async with manager:
        assert manager.running
        await clock.advance_async(0)
        assert manager.alerts.statistics().evaluations == 1
        await clock.advance_async(25)
        assert manager.alerts.statistics().evaluations == 3
        assert sink.received == []
        await clock.advance_async(5)
        assert [a.name for a in sink.received] == ["OutboxBacklog"]
    assert not manager.running
    assert manager.alerts.statistics().evaluations == 4


async def test_stop_flushes_queued_notifications() -> None:
    """stop() sends notifications raised after the last evaluation."""
    sink = Recorder()
    manager = MonitoringManager(clock=ManualClock(), sinks=[sink])
    await manager.start()
    await manager.start()  # starting twice is harmless
    manager.alerts.add_alert(Alert("Late"))
    await manager.stop()
    await manager.stop()
    assert [a.name for a in sink.received] == ["Late"]


async def test_stop_propagates_cancellation_of_its_caller() -> None:
    """Cancelling the task that is stopping the manager is not swallowed."""
    manager = MonitoringManager(clock=ManualClock(), sinks=[])
    await manager.start()

    async def stopper() -> None:
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        await manager.stop()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(stopper())


def test_basic_alerts_load_builtin_rules_only() -> None:
    """Alerts.Basic runs the five built-in rules and refuses user rules."""
    manager = MonitoringManager(clock=ManualClock())
    assert {r.name for r in manager.alerts.rules()} == {
        "CircuitBreakerOpen",
        "OutboxBacklog",
        "SyncStale",
        "IntegrityFailure",
        "HealthFailing",
    }
    with pytest.raises(ConfigError) as info:
        manager.add_rule(AlertRule("Mine", "m"))
    assert info.value.field == "alerts"


async def test_advanced_alerts_accept_user_rules() -> None:
    """Alerts.Advanced runs configured rules and accepts more at run time."""
    config = MonitoringConfig(
        alerts=Alerts.Advanced,
        rules=(AlertRule("Conns", "active_connections", ">", 3),),
    )
    manager = MonitoringManager(config, clock=ManualClock(), sinks=[])
    manager.add_rule(AlertRule("More", "active_connections", ">", 10))
    manager.metrics.record_gauge("active_connections", 5)
    await manager.alerts.evaluate()
    assert [a.name for a in manager.alerts.alerts()] == ["Conns"]
    assert manager.alerts.alerts()[0].state is AlertState.FIRING


def test_advanced_metrics_keep_quantiles() -> None:
    """Metrics.Advanced gives histograms quantiles, also in a shared registry."""
    registry = MetricsRegistry()
    manager = MonitoringManager(
        MonitoringConfig(metrics=Metrics.Advanced), registry=registry
    )
    manager.metrics.record_histogram("sync_duration", 0.25)
    sample = manager.snapshot()["metrics"]["sync_duration"]["samples"][0]
    assert set(sample["quantiles"]) == {"0.5", "0.9", "0.99"}
    assert abs(sample["quantiles"]["0.5"] - 0.25) <= 0.0025


def test_snapshot_is_json_ready() -> None:
    """snapshot() holds config, alerts, statistics and metrics as plain data."""
    clock = ManualClock()
    manager = MonitoringManager(MonitoringConfig(uptime_tracking=True), clock=clock)
    manager.alerts.add_alert(Alert("Shown"))
    snap = json.loads(json.dumps(manager.snapshot()))
    assert snap["config"]["metrics"] == "basic"
    assert snap["alerts"][0]["labels"]["alertname"] == "Shown"
    assert snap["alert_statistics"]["fired_total"] == 1
    assert snap["uptime_seconds"] == 0.0
    assert "leptos_sync_alerts_fired_total" in snap["metrics"]
    assert "stopped" in repr(manager)


def test_config_type_is_checked() -> None:
    """Passing something other than MonitoringConfig raises ConfigError."""
    with pytest.raises(ConfigError) as info:
        MonitoringManager({"metrics": "basic"})  # type: ignore[arg-type]
    assert info.value.field == "config"
