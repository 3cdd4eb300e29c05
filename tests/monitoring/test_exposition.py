"""Tests of the Prometheus text exposition of a registry."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.parser import text_string_to_metric_families

from leptos_sync.monitoring import (
    PROMETHEUS_CONTENT_TYPE,
    MetricsRegistry,
    RegistryCollector,
)
from leptos_sync.monitoring.exposition import generate_bytes, generate_text


def _families(reg: MetricsRegistry) -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(reg.text())}


def test_label_values_are_escaped_and_parse_back() -> None:
    """A label value with quote, backslash and newline parses back unchanged."""
    reg = MetricsRegistry()
    tricky = 'say "hi"\\path\nnext line'
    reg.counter("ops_total", labelnames=("collection",)).labels(tricky).inc()

    text = reg.text()
    assert '\\"hi\\"' in text and "\\\\path" in text and "\\n" in text
    (family,) = text_string_to_metric_families(text)
    assert family.samples[0].labels == {"collection": tricky}


@given(st.text(max_size=30))
def test_any_label_text_round_trips(value: str) -> None:
    """Any unicode label value survives exposition and parsing."""
    reg = MetricsRegistry()
    reg.gauge("g", labelnames=("v",)).labels(v=value).set(1)
    (family,) = text_string_to_metric_families(reg.text())
    assert family.samples[0].labels == {"v": value}


def test_help_and_type_lines() -> None:
    """Each family has HELP and TYPE lines; help text is escaped."""
    reg = MetricsRegistry()
    reg.gauge("depth", "Outbox depth.\nIn operations \\ records.").set(3)
    text = reg.text()
    assert "# HELP depth Outbox depth.\\nIn operations \\\\ records.\n" in text
    assert "# TYPE depth gauge\n" in text
    (family,) = text_string_to_metric_families(text)
    assert family.documentation == "Outbox depth.\nIn operations \\ records."


def test_counter_total_suffix_appended_once() -> None:
    """Counters are exposed with exactly one _total suffix."""
    reg = MetricsRegistry()
    reg.counter("with_total").inc()
    reg.counter("without").inc(2)
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(reg.text())
        for s in f.samples
    }
    assert samples == {"with_total": 1.0, "without_total": 2.0}


def test_histogram_exposition_is_cumulative() -> None:
    """Buckets are cumulative, +Inf equals _count, and _sum is exposed."""
    reg = MetricsRegistry()
    hist = reg.histogram("lat_seconds", "Latency.", buckets=(1, 5))
    for value in (1.0, 5.0, 5.0000001):
        hist.observe(value)
    (family,) = text_string_to_metric_families(reg.text())
    assert family.type == "histogram"
    values = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert values[("lat_seconds_bucket", "1.0")] == 1
    assert values[("lat_seconds_bucket", "5.0")] == 2
    assert values[("lat_seconds_bucket", "+Inf")] == 3
    assert values[("lat_seconds_count", None)] == 3
    assert values[("lat_seconds_sum", None)] == hist.sum == 1.0 + 5.0 + 5.0000001
    assert not any(name.endswith("_created") for name, _ in values)


def test_labelled_histogram_has_le_after_labels() -> None:
    """A labelled histogram keeps its own labels on every bucket sample."""
    reg = MetricsRegistry()
    reg.histogram("h", buckets=(1,), labelnames=("op",)).labels(op="pull").observe(2)
    (family,) = text_string_to_metric_families(reg.text())
    buckets = [s for s in family.samples if s.name == "h_bucket"]
    assert [s.labels for s in buckets] == [
        {"op": "pull", "le": "1.0"},
        {"op": "pull", "le": "+Inf"},
    ]


def test_content_type_is_text_format_0_0_4() -> None:
    """The content type names the text format version 0.0.4."""
    assert PROMETHEUS_CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def test_empty_registry_renders_nothing() -> None:
    """An empty registry renders as empty text."""
    assert generate_text(MetricsRegistry()) == ""
    assert generate_bytes(MetricsRegistry()) == b""


def test_collector_serves_next_to_native_metrics() -> None:
    """RegistryCollector plugs our registry into a prometheus_client registry."""
    ours = MetricsRegistry()
    ours.gauge("ours").set(7)
    theirs = CollectorRegistry()
    PromCounter("theirs", "Native.", registry=theirs).inc()
    theirs.register(RegistryCollector(ours))
    text = generate_latest(theirs).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"ours", "theirs"} <= names
