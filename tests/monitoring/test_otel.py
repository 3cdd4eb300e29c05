"""The OpenTelemetry bridge publishes a registry through a real OpenTelemetry SDK."""

from __future__ import annotations

from typing import Any

import pytest

from leptos_sync.monitoring import MetricsRegistry

pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from leptos_sync.monitoring.otel import OpenTelemetryBridge


def collected(
    reader: InMemoryMetricReader,
) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """Every data point the SDK collected, by metric name."""
    points: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = [
                    (dict(p.attributes or {}), p.value) for p in metric.data.data_points
                ]
    return points


def test_counters_gauges_and_histograms_reach_the_sdk_with_their_labels() -> None:
    """Values read at collection time, labels as attributes, histograms as
    cumulative buckets with sum and count, and metrics added later after sync()."""
    registry = MetricsRegistry()
    ops = registry.counter("leptos_sync_ops_total", "Ops.", labelnames=("kind",))
    depth = registry.gauge("leptos_sync_outbox_depth", "Depth.")
    latency = registry.histogram("leptos_sync_rtt_seconds", "RTT.", buckets=(0.1, 1.0))
    reader = InMemoryMetricReader()
    bridge = OpenTelemetryBridge(registry, MeterProvider(metric_readers=[reader]))

    ops.labels(kind="push").inc(3)
    depth.set(7)
    for value in (0.05, 0.5, 5.0):
        latency.observe(value)
    points = collected(reader)
    assert points["leptos_sync_ops"] == [({"kind": "push"}, 3)]
    assert points["leptos_sync_outbox_depth"] == [({}, 7)]
    assert sorted(
        (a["le"], v) for a, v in points["leptos_sync_rtt_seconds_bucket"]
    ) == [("+Inf", 3), ("0.1", 1), ("1.0", 2)]
    assert points["leptos_sync_rtt_seconds_count"] == [({}, 3)]
    assert points["leptos_sync_rtt_seconds_sum"] == [({}, pytest.approx(5.55))]

    # Counts keep accumulating; a metric registered later appears after sync().
    ops.labels(kind="push").inc()
    late = registry.counter("leptos_sync_late_total", "Late.")
    late.inc(2)
    assert "leptos_sync_late" not in collected(reader)
    bridge.sync()
    points = collected(reader)
    assert points["leptos_sync_ops"] == [({"kind": "push"}, 4)]
    assert points["leptos_sync_late"] == [({}, 2)]
    assert "leptos_sync_late_total" in bridge.bridged


def test_sketch_quantiles_and_a_managers_registry() -> None:
    """Sketch quantiles become a gauge per quantile; a manager's built-in sync
    metrics publish through the bridge like any registry's."""
    from leptos_sync import EndToEndSyncManager, Storage, Transport
    from leptos_sync.transport.memory import InMemoryNetwork

    registry = MetricsRegistry(quantiles=True)
    latency = registry.histogram("leptos_sync_sync_seconds", "Sync.")
    reader = InMemoryMetricReader()
    OpenTelemetryBridge(registry, MeterProvider(metric_readers=[reader]))
    assert "leptos_sync_sync_seconds_quantile" not in collected(reader)
    for i in range(1, 101):
        latency.observe(i / 100)
    points = collected(reader)["leptos_sync_sync_seconds_quantile"]
    quantiles = {attributes["quantile"]: value for attributes, value in points}
    assert quantiles["0.5"] == pytest.approx(0.5, rel=0.02)

    manager = EndToEndSyncManager(
        Storage.memory(), Transport.in_memory(InMemoryNetwork())
    )
    manager.collection("c").insert("r", {})
    reader = InMemoryMetricReader()
    OpenTelemetryBridge(manager.registry, MeterProvider(metric_readers=[reader]))
    assert collected(reader)["leptos_sync_outbox_depth"] == [({}, 1)]
