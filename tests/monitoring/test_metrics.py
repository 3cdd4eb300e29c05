"""Tests of the metrics registry: counters, gauges, histograms and the sketch."""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from leptos_sync.errors import ConfigError, InvalidValueError, UsageError
from leptos_sync.monitoring.metrics import (
    Counter,
    Gauge,
    Histogram,
    MetricsRegistry,
    QuantileSketch,
    check_buckets,
)

THREADS = 16
PER_THREAD = 10_000


def _run_threads(target: object, count: int) -> None:
    assert callable(target)
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_counter_exact_under_threads() -> None:
    """16 threads × 10,000 increments give exactly 160,000, labelled or not."""
    reg = MetricsRegistry()
    plain = reg.counter("plain_total")
    labelled = reg.counter("ops_total", labelnames=("collection",))

    def work() -> None:
        child = labelled.labels(collection="notes")
        for _ in range(PER_THREAD):
            plain.inc()
            child.inc()

    _run_threads(work, THREADS)
    assert plain.value == THREADS * PER_THREAD
    assert labelled.labels(collection="notes").value == THREADS * PER_THREAD


async def test_counter_exact_under_tasks() -> None:
    """1,000 asyncio tasks yielding between updates give exact counts."""
    reg = MetricsRegistry()
    counter = reg.counter("tasks_total", labelnames=("kind",))
    hist = reg.histogram("task_seconds", buckets=(0.5,))

    async def work(i: int) -> None:
        for _ in range(10):
            counter.labels(kind=str(i % 3)).inc()
            hist.observe(0.25 if i % 2 else 1.0)
            await asyncio.sleep(0)

    await asyncio.gather(*(work(i) for i in range(1000)))
    total = sum(child.value for _, child in counter.series())
    assert total == 10_000
    assert counter.labels(kind="0").value == 334 * 10
    assert hist.bucket_counts() == ((0.5, 5000), (math.inf, 10_000))
    assert hist.sum == 5000 * 0.25 + 5000 * 1.0


def test_histogram_exact_under_threads() -> None:
    """16 threads × 10,000 observations give exact count, sum and buckets."""
    reg = MetricsRegistry()
    hist = reg.histogram("latency_seconds", buckets=(0.25, 1.0))

    def work() -> None:
        for i in range(PER_THREAD):
            hist.observe(0.5 if i % 2 else 2.0)

    _run_threads(work, THREADS)
    total = THREADS * PER_THREAD
    assert hist.count == total
    assert hist.sum == total // 2 * 0.5 + total // 2 * 2.0
    assert hist.bucket_counts() == ((0.25, 0), (1.0, total // 2), (math.inf, total))


def test_scrape_during_observations_is_consistent() -> None:
    """Every scrape taken while 8 threads observe has +Inf equal to _count."""
    reg = MetricsRegistry()
    hist = reg.histogram("busy_seconds", buckets=(0.1, 1.0), labelnames=("op",))
    done = threading.Event()
    scrapes: list[tuple[float, float]] = []

    def observe() -> None:
        child = hist.labels(op="push")
        for i in range(5_000):
            child.observe((i % 7) / 3)

    def scrape() -> None:
        while True:
            finished = done.is_set()
            for family in text_string_to_metric_families(reg.text()):
                values = {(s.name, s.labels.get("le")): s.value for s in family.samples}
                if values:
                    scrapes.append(
                        (
                            values[("busy_seconds_bucket", "+Inf")],
                            values[("busy_seconds_count", None)],
                        )
                    )
            if finished:
                return

    scraper = threading.Thread(target=scrape)
    scraper.start()
    _run_threads(observe, 8)
    done.set()
    scraper.join()

    assert len(scrapes) >= 2
    assert all(inf == count for inf, count in scrapes)
    assert scrapes[-1] == (40_000, 40_000)


def test_bucket_bounds_are_inclusive() -> None:
    """Bounds [1, 5] with 1.0, 5.0, 5.0000001 give le=1:1, le=5:2, +Inf:3."""
    hist = MetricsRegistry().histogram("h", buckets=[1, 5])
    for value in (1.0, 5.0, 5.0000001):
        hist.observe(value)
    assert hist.bucket_counts() == ((1.0, 1), (5.0, 2), (math.inf, 3))


@pytest.mark.parametrize(
    "bounds", [[5, 1], [1, 1, 2], [1, float("nan")], ["a"], [1, float("inf"), 2]]
)
def test_bad_bucket_bounds_raise(bounds: list[object]) -> None:
    """Unsorted, repeated, NaN or non-numeric bounds raise ConfigError."""
    with pytest.raises(ConfigError) as info:
        MetricsRegistry().histogram("h", buckets=bounds)  # type: ignore[arg-type]
    assert info.value.field == "buckets"


def test_trailing_infinity_bound_is_implicit() -> None:
    """A final +Inf bound is accepted and dropped, since it is always there."""
    assert check_buckets([0.5, math.inf]) == (0.5,)


@given(
    st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=6, unique=True),
    st.lists(st.floats(-1e7, 1e7), max_size=50),
)
def test_bucket_counts_match_a_naive_count(
    bounds: list[float], values: list[float]
) -> None:
    """Each cumulative bucket counts exactly the observations at or below it."""
    hist = Histogram("h", buckets=sorted(bounds))
    for value in values:
        hist.observe(value)
    for bound, count in hist.bucket_counts():
        assert count == sum(1 for v in values if v <= bound)


def test_reregistering_returns_the_same_metric() -> None:
    """Asking twice for a name with the same type and labels shares one metric."""
    reg = MetricsRegistry()
    first = reg.counter("shared_total", "Doc.", labelnames=("a",))
    assert reg.counter("shared_total", labelnames=("a",)) is first
    hist = reg.histogram("h_seconds", buckets=(1, 2))
    assert reg.histogram("h_seconds") is hist
    assert reg.histogram("h_seconds", buckets=(1, 2)) is hist
    assert reg.get("shared_total") is first
    assert reg.get("missing") is None


def test_registration_clashes_raise() -> None:
    """A clash of type, labels, buckets or exposed sample names raises."""
    reg = MetricsRegistry()
    reg.counter("x_total", labelnames=("a",))
    reg.histogram("h", buckets=(1,))
    with pytest.raises(ConfigError) as kind:
        reg.gauge("x_total")
    assert kind.value.field == "name"
    with pytest.raises(ConfigError) as labels:
        reg.counter("x_total", labelnames=("b",))
    assert labels.value.field == "labelnames"
    with pytest.raises(ConfigError) as buckets:
        reg.histogram("h", buckets=(2,))
    assert buckets.value.field == "buckets"
    with pytest.raises(ConfigError):
        reg.counter("x")  # would also expose x_total
    with pytest.raises(ConfigError):
        reg.gauge("h_count")


@pytest.mark.parametrize(
    ("name", "labelnames"),
    [("1bad", ()), ("ok", ("__reserved",)), ("ok", ("a", "a")), ("ok", ("a-b",))],
)
def test_invalid_names_raise(name: str, labelnames: tuple[str, ...]) -> None:
    """Names outside the Prometheus rules raise ConfigError."""
    with pytest.raises(ConfigError):
        MetricsRegistry().counter(name, labelnames=labelnames)


def test_le_label_is_reserved_for_histograms() -> None:
    """A histogram cannot have a label called le."""
    with pytest.raises(ConfigError):
        MetricsRegistry().histogram("h", labelnames=("le",))


def test_counter_rejects_negative_and_nan() -> None:
    """A counter refuses to go down or to add NaN."""
    counter = Counter("c")
    with pytest.raises(InvalidValueError):
        counter.inc(-1)
    with pytest.raises(InvalidValueError):
        counter.inc(float("nan"))
    counter.inc(2.5)
    assert counter.value == 2.5


def test_labelled_metric_needs_labels() -> None:
    """Updating a labelled metric without labels, or with wrong ones, raises."""
    counter = MetricsRegistry().counter("c_total", labelnames=("a", "b"))
    with pytest.raises(UsageError):
        counter.inc()
    with pytest.raises(UsageError):
        counter.labels(a="1")
    with pytest.raises(UsageError):
        counter.labels("1", b="2")
    assert counter.labels("1", "2") is counter.labels(b="2", a="1")
    with pytest.raises(UsageError):
        Counter("plain").labels("x")


def test_lookup_does_not_create_and_remove_drops() -> None:
    """lookup() finds existing children only; remove() drops a child."""
    gauge = MetricsRegistry().gauge("g", labelnames=("c",))
    assert gauge.lookup(c="a") is None
    gauge.labels(c="a").set(4)
    child = gauge.lookup(c="a")
    assert child is not None and child.value == 4
    gauge.remove(c="a")
    assert gauge.lookup(c="a") is None
    assert gauge.series() == ()


def test_gauge_set_inc_dec_and_function() -> None:
    """A gauge moves both ways, and a function gauge is read at collection."""
    gauge = Gauge("g")
    gauge.set(3)
    gauge.inc()
    gauge.dec(2)
    assert gauge.value == 2
    gauge.set_function(lambda: 42.0)
    assert gauge.value == 42.0
    assert gauge.collect().samples[0].value == 42.0  # type: ignore[union-attr]


def test_histogram_rejects_nan() -> None:
    """Observing NaN raises instead of corrupting the sum."""
    with pytest.raises(InvalidValueError):
        Histogram("h").observe(float("nan"))


def test_sketch_quantiles_within_relative_error() -> None:
    """p50/p90/p99 from the sketch are within 1 % of the exact quantiles."""
    rng = random.Random(7)
    values = [rng.lognormvariate(-3, 1.5) for _ in range(20_000)]
    hist = MetricsRegistry(quantiles=True).histogram("lat_seconds")
    for value in values:
        hist.observe(value)

    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99, 0.0, 1.0):
        exact = ordered[math.floor(q * (len(ordered) - 1))]
        estimate = hist.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) <= 0.01 * exact * (1 + 1e-9)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.floats(0, 1))
def test_sketch_bound_holds_for_any_data(values: list[float], q: float) -> None:
    """For any data with negatives and zeros, the sketch stays within α."""
    sketch = QuantileSketch(0.02)
    for value in values:
        sketch.add(value)
    exact = sorted(values)[math.floor(q * (len(values) - 1))]
    (estimate,) = sketch.quantiles([q])
    assert estimate is not None
    tolerance = 0.02 * abs(exact) * (1 + 1e-9) if abs(exact) >= 1e-9 else 1e-9
    assert abs(estimate - exact) <= tolerance


def test_sketch_rejects_bad_settings() -> None:
    """Accuracy outside (0, 1) and quantiles outside [0, 1] raise ConfigError."""
    with pytest.raises(ConfigError):
        QuantileSketch(1.5)
    with pytest.raises(ConfigError):
        QuantileSketch().quantiles([1.5])
    assert QuantileSketch().quantiles([0.5]) == [None]


def test_quantile_without_sketch_interpolates_buckets() -> None:
    """Without a sketch, quantile() interpolates inside buckets like Prometheus."""
    hist = MetricsRegistry().histogram("h", buckets=(1, 2, 3, 4))
    assert hist.quantile(0.5) is None
    for value in (0.5, 1.5, 2.5, 3.5):
        hist.observe(value)
    assert hist.quantile(0.5) == 2.0
    assert hist.quantile(0.25) == 1.0
    hist.observe(100)
    assert hist.quantile(1.0) == 4.0  # the +Inf bucket reports the top bound


def test_snapshot_is_plain_json() -> None:
    """snapshot() gives JSON-ready data with cumulative buckets and quantiles."""
    reg = MetricsRegistry(quantiles=True)
    reg.counter("c_total", "Count.", labelnames=("k",)).labels(k="v").inc(2)
    reg.histogram("h_seconds", buckets=(1,)).observe(0.5)
    snap = json.loads(json.dumps(reg.snapshot()))
    assert snap["c_total"]["samples"] == [{"labels": {"k": "v"}, "value": 2}]
    hist = snap["h_seconds"]["samples"][0]
    assert hist["buckets"] == {"1.0": 1, "+Inf": 1}
    assert hist["count"] == 1
    assert set(hist["quantiles"]) == {"0.5", "0.9", "0.99"}
    assert reg.collect() == reg.snapshot()
