"""Publish a :class:`MetricsRegistry` through OpenTelemetry (optional).

For applications that collect metrics with OpenTelemetry instead of scraping
Prometheus text. Install the extra (``pip install 'leptos-sync[otel]'``), then::

    from opentelemetry.sdk.metrics import MeterProvider
    from leptos_sync.monitoring.otel import OpenTelemetryBridge

    bridge = OpenTelemetryBridge(manager.registry, MeterProvider(...))

The registry stays the source of truth: the bridge registers one asynchronous
instrument per metric, whose callback reads the registry when the OpenTelemetry
SDK collects. Counters become observable counters (without the ``_total``
suffix, which Prometheus exporters add back), gauges observable gauges, and
label values become attributes. OpenTelemetry has no asynchronous histogram, so
a histogram is published the way Prometheus shows it: ``<name>_bucket``
(cumulative counts, attribute ``le``), ``<name>_sum`` and ``<name>_count``
counters, and, with a quantile sketch (``Metrics.Advanced``), a
``<name>_quantile`` gauge with attribute ``quantile``.

Metrics registered after the bridge was made are picked up by :meth:`sync`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ConfigError
from .metrics import FamilySnapshot, HistogramSample, MetricKind, MetricsRegistry

__all__ = ["OpenTelemetryBridge"]


class OpenTelemetryBridge:
    """Asynchronous OpenTelemetry instruments reading one registry.

    Args:
        registry: the registry to publish (a manager's or a server's).
        meter_provider: the provider to register with; by default the global
            one (``opentelemetry.metrics.get_meter_provider()``).
        meter_name: the instrumentation scope name.

    Raises:
        ConfigError: the ``opentelemetry-api`` package is not installed.
    """

    def __init__(
        self,
        registry: MetricsRegistry,
        meter_provider: Any = None,
        *,
        meter_name: str = "leptos_sync",
    ) -> None:
        try:
            from opentelemetry import metrics
        except ImportError as exc:
            raise ConfigError(
                "opentelemetry",
                "the bridge needs opentelemetry-api: pip install 'leptos-sync[otel]'",
            ) from exc
        self._metrics = metrics
        provider = meter_provider or metrics.get_meter_provider()
        self._meter = provider.get_meter(meter_name)
        self._registry = registry
        self._bridged: set[str] = set()
        self.sync()

    @property
    def bridged(self) -> frozenset[str]:
        """The registry's metric names published so far."""
        return frozenset(self._bridged)

    def sync(self) -> None:
        """Register instruments for metrics the registry gained since."""
        for family in self._registry.families():
            if family.name not in self._bridged:
                self._bridge(family)
                self._bridged.add(family.name)

    def _bridge(self, family: FamilySnapshot) -> None:
        meter, name, doc = self._meter, family.name, family.documentation
        if family.kind is MetricKind.COUNTER:
            bare = name.removesuffix("_total")
            meter.create_observable_counter(bare, [self._plain(name)], description=doc)
        elif family.kind is MetricKind.GAUGE:
            meter.create_observable_gauge(name, [self._plain(name)], description=doc)
        else:
            meter.create_observable_counter(
                f"{name}_bucket", [self._histogram(name, "bucket")], description=doc
            )
            meter.create_observable_counter(
                f"{name}_sum", [self._histogram(name, "sum")], description=doc
            )
            meter.create_observable_counter(
                f"{name}_count", [self._histogram(name, "count")], description=doc
            )
            meter.create_observable_gauge(
                f"{name}_quantile",
                [self._histogram(name, "quantile")],
                description=doc,
            )

    def _family(self, name: str) -> FamilySnapshot | None:
        return next((f for f in self._registry.families() if f.name == name), None)

    def _plain(self, name: str) -> Callable[[Any], Iterable[Any]]:
        observation = self._metrics.Observation

        def observe(options: Any) -> Iterable[Any]:
            family = self._family(name)
            if family is None:
                return []
            return [
                observation(sample.value, dict(sample.labels))
                for sample in family.samples
                if not isinstance(sample, HistogramSample)
            ]

        return observe

    def _histogram(self, name: str, part: str) -> Callable[[Any], Iterable[Any]]:
        observation = self._metrics.Observation

        def observe(options: Any) -> Iterable[Any]:
            family = self._family(name)
            if family is None:
                return []
            out = []
            for sample in family.samples:
                if not isinstance(sample, HistogramSample):
                    continue
                labels = dict(sample.labels)
                if part == "sum":
                    out.append(observation(sample.sum, labels))
                elif part == "count":
                    out.append(observation(sample.count, labels))
                elif part == "bucket":
                    for bound, count in sample.buckets:
                        le = "+Inf" if bound == math.inf else repr(bound)
                        out.append(observation(count, {**labels, "le": le}))
                else:
                    for q, value in sample.quantiles:
                        if value is not None:  # no observations yet
                            quantile = {**labels, "quantile": str(q)}
                            out.append(observation(value, quantile))
            return out

        return observe
