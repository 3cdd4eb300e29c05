"""Prometheus text exposition (format 0.0.4) of a :class:`MetricsRegistry`.

The text is produced by ``prometheus_client`` itself: :class:`RegistryCollector`
turns each family of our registry into a ``prometheus_client`` metric family, and
``generate_latest`` renders them. That keeps escaping (quote, backslash and newline
in label values and help text) and number formatting identical to the reference
client. Our registry stays the source of truth; nothing is registered in
``prometheus_client``'s global registry.

Counters are exposed with a ``_total`` suffix, appended when the name lacks it, as
Prometheus client libraries do. Histograms expose cumulative ``_bucket`` series
ending with ``le="+Inf"``, which always equals ``_count``, and ``_sum``; no
``_created`` series. Sketch quantiles are not exposed here (a Prometheus histogram
has no place for them); they appear in :meth:`MetricsRegistry.snapshot`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client import Metric as PromMetric
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from .metrics import FamilySnapshot, HistogramSample, MetricKind, MetricsRegistry

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "RegistryCollector",
    "generate_bytes",
    "generate_text",
]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` to serve :func:`generate_text` output with."""


class RegistryCollector:
    """A ``prometheus_client`` collector reading one of our registries.

    Register it in a ``prometheus_client.CollectorRegistry`` to serve our metrics
    next to an application's own ``prometheus_client`` metrics.
    """

    def __init__(self, registry: MetricsRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[PromMetric]:
        """Yield one ``prometheus_client`` family per metric of the registry."""
        for family in self._registry.families():
            yield _convert(family)


def generate_text(registry: MetricsRegistry) -> str:
    """The registry's metrics in the Prometheus text format 0.0.4."""
    return generate_bytes(registry).decode("utf-8")


def generate_bytes(registry: MetricsRegistry) -> bytes:
    """The same as :func:`generate_text`, encoded, ready to serve."""
    return generate_latest(RegistryCollector(registry))


def _convert(family: FamilySnapshot) -> PromMetric:
    names = list(family.labelnames)
    if family.kind is MetricKind.HISTOGRAM:
        histogram = HistogramMetricFamily(
            family.name, family.documentation, labels=names
        )
        for sample in family.samples:
            assert isinstance(sample, HistogramSample)
            buckets = [
                ("+Inf" if bound == math.inf else repr(bound), count)
                for bound, count in sample.buckets
            ]
            label_values = [sample.labels[n] for n in names]
            histogram.add_metric(label_values, buckets=buckets, sum_value=sample.sum)
        return histogram

    plain: CounterMetricFamily | GaugeMetricFamily
    if family.kind is MetricKind.COUNTER:
        plain = CounterMetricFamily(family.name, family.documentation, labels=names)
    else:
        plain = GaugeMetricFamily(family.name, family.documentation, labels=names)
    for sample in family.samples:
        assert not isinstance(sample, HistogramSample)
        plain.add_metric([sample.labels[n] for n in names], sample.value)
    return plain
