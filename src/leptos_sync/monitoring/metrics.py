"""Counters, gauges and histograms, and the registry that holds them.

A :class:`MetricsRegistry` belongs to one manager or server; there is no global
registry. Components ask it for a metric by name, and asking twice with the same
type and label names returns the same object, so two components can share one::

    reg = MetricsRegistry()
    sent = reg.counter("leptos_sync_operations_sent_total", "Operations pushed.",
                       labelnames=("collection",))
    sent.labels(collection="notes").inc()

Every update takes the metric's own ``threading.Lock`` and changes plain numbers,
so counts are exact under threads and tasks alike. A histogram's buckets, sum and
count change under one lock and are read under it, so a scrape never shows a
``+Inf`` bucket different from ``_count``.

Histograms can also keep a :class:`QuantileSketch` (``quantiles=True``, the
``Metrics.Advanced`` setting), which answers p50/p90/p99 within a stated relative
error. Prometheus text exposition lives in :mod:`.exposition`.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeAlias, TypeVar

from ..errors import ConfigError, InvalidValueError, UsageError

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_QUANTILES",
    "Counter",
    "FamilySnapshot",
    "Gauge",
    "Histogram",
    "HistogramSample",
    "Metric",
    "MetricKind",
    "MetricsRegistry",
    "QuantileSketch",
    "Sample",
]

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Prometheus' default latency buckets, in seconds."""

DEFAULT_QUANTILES = (0.5, 0.9, 0.99)
"""The quantiles a histogram with a sketch reports in snapshots."""

_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class MetricKind(enum.Enum):
    """The three kinds of metric, named as Prometheus names them."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class Sample:
    """One series of a counter or gauge at collection time."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class HistogramSample:
    """One series of a histogram, read atomically.

    Attributes:
        labels: the series' label values by name.
        buckets: ``(upper bound, cumulative count)`` pairs ending with ``+Inf``.
        sum: the sum of all observations.
        count: the number of observations; always equal to the ``+Inf`` count.
        quantiles: ``(q, value)`` pairs from the sketch; empty without one.
    """

    labels: Mapping[str, str]
    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int
    quantiles: tuple[tuple[float, float | None], ...] = ()


@dataclass(frozen=True, slots=True)
class FamilySnapshot:
    """A metric and all its series, as collected for exposition or a dashboard."""

    name: str
    kind: MetricKind
    documentation: str
    labelnames: tuple[str, ...]
    samples: tuple[Sample | HistogramSample, ...]


class QuantileSketch:
    """Quantiles within a fixed relative error, in fixed memory (DDSketch mapping).

    A positive value ``x`` falls in bin ``i = ceil(log_γ x)``, which covers
    ``(γ^(i-1), γ^i]`` with ``γ = (1 + α) / (1 - α)``; the bin reports
    ``2γ^i / (γ + 1)``, which is within relative error ``α`` of every value in
    it. Negative values use a mirrored set of bins. The value returned for
    quantile ``q`` is therefore within ``α`` (relative) of the exact quantile,
    taken as the ``⌊q·(n-1)⌋``-th smallest observation (0-based).

    The bound holds for magnitudes in ``[min_value, max_value]``. Smaller
    magnitudes are counted as zero (absolute error below ``min_value``); larger
    ones share the top bin, where the error is unbounded. The defaults, 1 ns to
    about 31 years when observing seconds, keep 2,073 bins per sign at α = 1 %.

    Not thread-safe on its own; :class:`Histogram` updates it under its lock.

    Args:
        relative_accuracy: α, strictly between 0 and 1.
        min_value: the smallest magnitude kept apart from zero.
        max_value: the largest magnitude within the error bound.
    """

    def __init__(
        self,
        relative_accuracy: float = 0.01,
        min_value: float = 1e-9,
        max_value: float = 1e9,
    ) -> None:
        if not 0 < relative_accuracy < 1:
            raise ConfigError("relative_accuracy", "must be between 0 and 1")
        if not 0 < min_value < max_value < math.inf:
            raise ConfigError("min_value", "need 0 < min_value < max_value < inf")
        self.relative_accuracy = relative_accuracy
        gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._gamma = gamma
        self._log_gamma = math.log(gamma)
        self._multiplier = 1 / self._log_gamma
        self._min_value = min_value
        self._offset = math.ceil(math.log(min_value) / self._log_gamma)
        self._last = math.ceil(math.log(max_value) / self._log_gamma) - self._offset
        self._positive = [0] * (self._last + 1)
        self._negative: list[int] | None = None
        self._zero = 0
        self.count = 0

    def add(self, value: float) -> None:
        """Count one observation."""
        if value >= self._min_value:
            # The common case (a positive latency), inlined for speed.
            i = math.ceil(math.log(value) * self._multiplier) - self._offset
            self._positive[i if 0 <= i <= self._last else self._clamp(i)] += 1
        elif value <= -self._min_value:
            if self._negative is None:
                self._negative = [0] * (self._last + 1)
            self._negative[self._index(-value)] += 1
        else:
            self._zero += 1
        self.count += 1

    def copy(self) -> QuantileSketch:
        """An independent copy, to compute quantiles outside the owner's lock."""
        other = object.__new__(QuantileSketch)
        other.__dict__.update(self.__dict__)
        other._positive = self._positive.copy()
        other._negative = None if self._negative is None else self._negative.copy()
        return other

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """The value at each quantile in ``qs``; ``None`` for an empty sketch."""
        for q in qs:
            _check_quantile(q)
        if self.count == 0:
            return [None] * len(qs)

        # Walk the bins from the most negative value up, once, answering the
        # quantiles in ascending order of rank.
        order = sorted(range(len(qs)), key=lambda k: qs[k])
        answers: list[float | None] = [None] * len(qs)
        cumulative = 0
        pending = iter(order)
        current = next(pending, None)
        for count, value in self._bins():
            cumulative += count
            while current is not None and cumulative > qs[current] * (self.count - 1):
                answers[current] = value
                current = next(pending, None)
            if current is None:
                break
        return answers

    def _bins(self) -> Iterable[tuple[int, float]]:
        if self._negative is not None:
            for i in range(self._last, -1, -1):
                if self._negative[i]:
                    yield self._negative[i], -self._value(i)
        if self._zero:
            yield self._zero, 0.0
        for i, count in enumerate(self._positive):
            if count:
                yield count, self._value(i)

    def _index(self, magnitude: float) -> int:
        i = math.ceil(math.log(magnitude) * self._multiplier) - self._offset
        return self._clamp(i)

    def _clamp(self, index: int) -> int:
        return 0 if index < 0 else min(index, self._last)

    def _value(self, index: int) -> float:
        return 2 * self._gamma ** (index + self._offset) / (self._gamma + 1)


class _Metric:
    """What the three kinds share: identity, label handling and children."""

    kind: ClassVar[MetricKind]

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...],
        labelvalues: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.labelvalues = labelvalues
        self._lock = threading.Lock()
        # A metric declared with label names holds no value itself; its
        # children, one per distinct set of label values, do.
        self._is_parent = bool(labelnames) and not labelvalues
        self._children: dict[tuple[str, ...], Self] = {}

    def labels(self, *values: object, **named: object) -> Self:
        """The child for these label values, created at zero on first use.

        Values are given in ``labelnames`` order or by name, and converted with
        ``str``. Keep the child to avoid the lookup on a hot path.
        """
        key = self._label_key(values, named)
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = self._new_child(key)
                    self._children[key] = child
        return child

    def lookup(self, *values: object, **named: object) -> Self | None:
        """The child for these label values if it exists; never creates one."""
        return self._children.get(self._label_key(values, named))

    def remove(self, *values: object, **named: object) -> None:
        """Drop the child for these label values, e.g. for a deleted collection."""
        key = self._label_key(values, named)
        with self._lock:
            self._children.pop(key, None)

    def series(self) -> tuple[tuple[dict[str, str], Self], ...]:
        """Every ``(labels, child)`` pair; an unlabelled metric is its own child."""
        if not self._is_parent:
            return ((dict(zip(self.labelnames, self.labelvalues, strict=True)), self),)
        with self._lock:
            children = list(self._children.items())
        return tuple(
            (dict(zip(self.labelnames, key, strict=True)), child)
            for key, child in children
        )

    def collect(self) -> FamilySnapshot:
        """The metric and all its series, each read consistently."""
        samples = tuple(child._sample(labels) for labels, child in self.series())
        return FamilySnapshot(
            self.name, self.kind, self.documentation, self.labelnames, samples
        )

    def _sample(self, labels: dict[str, str]) -> Sample | HistogramSample:
        raise NotImplementedError

    def _new_child(self, key: tuple[str, ...]) -> Self:
        raise NotImplementedError

    def _label_key(
        self, values: tuple[object, ...], named: dict[str, object]
    ) -> tuple[str, ...]:
        if not self._is_parent:
            raise UsageError(f"{self.name} has no label names; use it directly")
        if values and named:
            raise UsageError("pass label values by position or by name, not both")
        if named:
            if set(named) != set(self.labelnames):
                raise UsageError(
                    f"{self.name} takes labels {self.labelnames}, got {tuple(named)}"
                )
            return tuple(str(named[n]) for n in self.labelnames)
        if len(values) != len(self.labelnames):
            raise UsageError(
                f"{self.name} takes {len(self.labelnames)} label values, "
                f"got {len(values)}"
            )
        return tuple(str(v) for v in values)

    def _unlabelled_error(self) -> UsageError:
        return UsageError(
            f"{self.name} has labels {self.labelnames}; call .labels(...) first"
        )

    def __repr__(self) -> str:
        labels = dict(zip(self.labelnames, self.labelvalues, strict=False))
        return f"{type(self).__name__}({self.name!r}, labels={labels})"


class Counter(_Metric):
    """A count that only goes up, such as operations sent or errors seen."""

    kind = MetricKind.COUNTER

    def __init__(
        self,
        name: str,
        documentation: str = "",
        labelnames: tuple[str, ...] = (),
        labelvalues: tuple[str, ...] = (),
    ) -> None:
        super().__init__(name, documentation, labelnames, labelvalues)
        self._value: int | float = 0

    def inc(self, amount: int | float = 1) -> None:
        """Add ``amount`` (default 1), which must not be negative."""
        if not amount >= 0:
            raise InvalidValueError(f"{self.name}: a counter cannot add {amount!r}")
        if self._is_parent:
            raise self._unlabelled_error()
        with self._lock:
            self._value += amount

    @property
    def value(self) -> int | float:
        """The current count; an int while only ints were added."""
        if self._is_parent:
            raise self._unlabelled_error()
        return self._value

    def _sample(self, labels: dict[str, str]) -> Sample:
        return Sample(labels, self._value)

    def _new_child(self, key: tuple[str, ...]) -> Counter:
        return Counter(self.name, self.documentation, self.labelnames, key)


class Gauge(_Metric):
    """A value that goes up and down, such as the outbox depth."""

    kind = MetricKind.GAUGE

    def __init__(
        self,
        name: str,
        documentation: str = "",
        labelnames: tuple[str, ...] = (),
        labelvalues: tuple[str, ...] = (),
    ) -> None:
        super().__init__(name, documentation, labelnames, labelvalues)
        self._value: int | float = 0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        """Set the gauge to ``value``."""
        if self._is_parent:
            raise self._unlabelled_error()
        with self._lock:
            self._value = value

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (default 1)."""
        if self._is_parent:
            raise self._unlabelled_error()
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1) -> None:
        """Subtract ``amount`` (default 1)."""
        self.inc(-amount)

    def set_function(self, function: Callable[[], float] | None) -> None:
        """Read the value from ``function`` at every collection (``None`` stops)."""
        if self._is_parent:
            raise self._unlabelled_error()
        self._function = function

    @property
    def value(self) -> float:
        """The current value."""
        if self._is_parent:
            raise self._unlabelled_error()
        function = self._function
        return function() if function is not None else self._value

    def _sample(self, labels: dict[str, str]) -> Sample:
        return Sample(labels, self.value)

    def _new_child(self, key: tuple[str, ...]) -> Gauge:
        return Gauge(self.name, self.documentation, self.labelnames, key)


class Histogram(_Metric):
    """Observations counted into buckets, with their sum and count.

    Buckets are upper bounds and inclusive (``le``): with bounds ``[1, 5]`` an
    observation of exactly 5 counts in the ``le="5"`` bucket. With a sketch
    (``relative_accuracy`` given) the histogram also answers quantiles within
    that relative error; without one, :meth:`quantile` interpolates inside a
    bucket as Prometheus' ``histogram_quantile`` does, with an error up to the
    bucket's width.
    """

    kind = MetricKind.HISTOGRAM

    def __init__(
        self,
        name: str,
        documentation: str = "",
        labelnames: tuple[str, ...] = (),
        labelvalues: tuple[str, ...] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        relative_accuracy: float | None = None,
    ) -> None:
        super().__init__(name, documentation, labelnames, labelvalues)
        self.buckets = check_buckets(buckets)
        self.relative_accuracy = relative_accuracy
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum: float = 0.0
        self._count = 0
        self._sketch = (
            QuantileSketch(relative_accuracy)
            if relative_accuracy is not None and not self._is_parent
            else None
        )

    def observe(self, value: float) -> None:
        """Record one observation (for latencies, in seconds)."""
        if value != value:
            raise InvalidValueError(f"{self.name}: cannot observe NaN")
        if self._is_parent:
            raise self._unlabelled_error()
        index = bisect.bisect_left(self.buckets, value)
        with self._lock:
            self._counts[index] += 1
            self._sum += value
            self._count += 1
            if self._sketch is not None:
                self._sketch.add(value)

    @property
    def count(self) -> int:
        """How many observations were recorded."""
        if self._is_parent:
            raise self._unlabelled_error()
        return self._count

    @property
    def sum(self) -> float:
        """The sum of all observations."""
        if self._is_parent:
            raise self._unlabelled_error()
        return self._sum

    def bucket_counts(self) -> tuple[tuple[float, int], ...]:
        """``(upper bound, cumulative count)`` pairs, ending with ``+Inf``."""
        if self._is_parent:
            raise self._unlabelled_error()
        return self._sample({}).buckets

    def quantile(self, q: float) -> float | None:
        """The value at quantile ``q`` (0 to 1), or ``None`` with no observations."""
        _check_quantile(q)
        if self._is_parent:
            raise self._unlabelled_error()
        with self._lock:
            sketch = None if self._sketch is None else self._sketch.copy()
            counts, total = self._counts.copy(), self._count
        if sketch is not None:
            return sketch.quantiles([q])[0]
        return _interpolate(self.buckets, counts, total, q)

    def _sample(self, labels: dict[str, str]) -> HistogramSample:
        # Copy under the lock, compute outside it: observers wait only for the copy.
        with self._lock:
            counts, total, summed = self._counts.copy(), self._count, self._sum
            sketch = None if self._sketch is None else self._sketch.copy()
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
            running += count
            cumulative.append((bound, running))
        quantiles: tuple[tuple[float, float | None], ...] = ()
        if sketch is not None:
            values = sketch.quantiles(DEFAULT_QUANTILES)
            quantiles = tuple(zip(DEFAULT_QUANTILES, values, strict=True))
        return HistogramSample(labels, tuple(cumulative), summed, total, quantiles)

    def _new_child(self, key: tuple[str, ...]) -> Histogram:
        return Histogram(
            self.name,
            self.documentation,
            self.labelnames,
            key,
            buckets=self.buckets,
            relative_accuracy=self.relative_accuracy,
        )


Metric: TypeAlias = Counter | Gauge | Histogram
_M = TypeVar("_M", Counter, Gauge, Histogram)


class MetricsRegistry:
    """The metrics of one manager or server, by name.

    Args:
        quantiles: give every histogram a :class:`QuantileSketch` unless its
            registration says otherwise (the ``Metrics.Advanced`` setting).
        relative_accuracy: the sketches' relative error bound α.
    """

    def __init__(self, *, quantiles: bool = False, relative_accuracy: float = 0.01):
        QuantileSketch(relative_accuracy)  # validates the accuracy once, up front
        self.quantiles = quantiles
        self.relative_accuracy = relative_accuracy
        self._lock = threading.Lock()
        self._metrics: dict[str, Metric] = {}
        self._exposed: dict[str, str] = {}

    def counter(
        self, name: str, documentation: str = "", labelnames: Sequence[str] = ()
    ) -> Counter:
        """The counter called ``name``, registered on first use."""
        labels = _check_labelnames(labelnames, MetricKind.COUNTER)
        with self._lock:
            found = self._find(name, Counter, labels)
            return found or self._add(Counter(name, documentation, labels))

    def gauge(
        self, name: str, documentation: str = "", labelnames: Sequence[str] = ()
    ) -> Gauge:
        """The gauge called ``name``, registered on first use."""
        labels = _check_labelnames(labelnames, MetricKind.GAUGE)
        with self._lock:
            found = self._find(name, Gauge, labels)
            return found or self._add(Gauge(name, documentation, labels))

    def histogram(
        self,
        name: str,
        documentation: str = "",
        buckets: Sequence[float] | None = None,
        labelnames: Sequence[str] = (),
        *,
        quantiles: bool | None = None,
    ) -> Histogram:
        """The histogram called ``name``, registered on first use.

        ``buckets=None`` means the default buckets, or whatever buckets an
        earlier registration chose; explicit buckets must match it.
        """
        labels = _check_labelnames(labelnames, MetricKind.HISTOGRAM)
        bounds = check_buckets(buckets) if buckets is not None else None
        with self._lock:
            found = self._find(name, Histogram, labels)
            if found is not None:
                if bounds is not None and bounds != found.buckets:
                    raise ConfigError(
                        "buckets", f"{name} is already registered with other buckets"
                    )
                return found
            keep_sketch = self.quantiles if quantiles is None else quantiles
            return self._add(
                Histogram(
                    name,
                    documentation,
                    labels,
                    buckets=DEFAULT_BUCKETS if bounds is None else bounds,
                    relative_accuracy=self.relative_accuracy if keep_sketch else None,
                )
            )

    def get(self, name: str) -> Metric | None:
        """The metric called ``name``, or ``None``."""
        return self._metrics.get(name)

    def metrics(self) -> tuple[Metric, ...]:
        """Every registered metric, in registration order."""
        with self._lock:
            return tuple(self._metrics.values())

    def families(self) -> list[FamilySnapshot]:
        """Every metric with all its series, for exposition."""
        return [metric.collect() for metric in self.metrics()]

    def snapshot(self) -> dict[str, Any]:
        """Every metric as plain JSON-ready data, keyed by name, for dashboards."""
        return {family.name: _family_json(family) for family in self.families()}

    def collect(self) -> dict[str, Any]:
        """The same as :meth:`snapshot`."""
        return self.snapshot()

    def text(self) -> str:
        """Every metric in the Prometheus text format 0.0.4."""
        # Imported here because the exposition module imports this one.
        from .exposition import generate_text

        return generate_text(self)

    def _find(
        self, name: str, kind: type[_M], labelnames: tuple[str, ...]
    ) -> _M | None:
        existing = self._metrics.get(name)
        if existing is None:
            return None
        if not isinstance(existing, kind):
            raise ConfigError(
                "name",
                f"{name} is already registered as a {existing.kind.value}, "
                f"not a {kind.kind.value}",
            )
        if existing.labelnames != labelnames:
            raise ConfigError(
                "labelnames",
                f"{name} is already registered with labels {existing.labelnames}",
            )
        return existing

    def _add(self, metric: _M) -> _M:
        if not _NAME_RE.fullmatch(metric.name):
            raise ConfigError("name", f"{metric.name!r} is not a Prometheus name")

        # Two metrics must not expose the same sample name, or scrapers would
        # merge them: counter "x" shows as x_total, histogram "h" as h_count...
        exposed = _exposed_names(metric)
        for sample_name in exposed:
            owner = self._exposed.get(sample_name)
            if owner is not None:
                raise ConfigError(
                    "name", f"{metric.name} would expose {sample_name}, as {owner} does"
                )
        self._exposed.update(dict.fromkeys(exposed, metric.name))
        self._metrics[metric.name] = metric
        return metric

    def __repr__(self) -> str:
        return f"MetricsRegistry({len(self._metrics)} metrics)"


def check_buckets(buckets: Sequence[float]) -> tuple[float, ...]:
    """Validate histogram bounds: finite, strictly increasing; a final +Inf is dropped.

    Raises:
        ConfigError: naming ``buckets`` when the bounds are unsorted, repeated,
            NaN or not numbers.
    """
    try:
        bounds = [float(b) for b in buckets]
    except (TypeError, ValueError) as exc:
        raise ConfigError("buckets", f"bounds must be numbers: {exc}") from exc
    if bounds and bounds[-1] == math.inf:
        bounds.pop()
    if any(not math.isfinite(b) for b in bounds):
        raise ConfigError("buckets", "bounds must be finite (+Inf is implicit)")
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ConfigError("buckets", f"bounds must be sorted and unique: {bounds}")
    return tuple(bounds)


def _check_labelnames(labelnames: Sequence[str], kind: MetricKind) -> tuple[str, ...]:
    if isinstance(labelnames, str):
        raise ConfigError("labelnames", "expected a sequence of names, not a string")
    names = tuple(labelnames)
    for name in names:
        if not _LABEL_RE.fullmatch(name) or name.startswith("__"):
            raise ConfigError("labelnames", f"{name!r} is not a valid label name")
        if kind is MetricKind.HISTOGRAM and name == "le":
            raise ConfigError("labelnames", "'le' is reserved for histogram buckets")
    if len(set(names)) != len(names):
        raise ConfigError("labelnames", f"label names repeat: {names}")
    return names


def _check_quantile(q: float) -> None:
    if not 0 <= q <= 1:
        raise ConfigError("q", f"a quantile lies between 0 and 1, got {q!r}")


def _exposed_names(metric: Metric) -> tuple[str, ...]:
    name = metric.name
    if metric.kind is MetricKind.COUNTER:
        base = name.removesuffix("_total")
        return (base, f"{base}_total")
    if metric.kind is MetricKind.HISTOGRAM:
        return (name, f"{name}_bucket", f"{name}_count", f"{name}_sum")
    return (name,)


def _interpolate(
    bounds: tuple[float, ...], counts: list[int], total: int, q: float
) -> float | None:
    if total == 0:
        return None
    rank = q * total
    running = 0
    for i, count in enumerate(counts):
        if running + count >= rank and count > 0:
            if i == len(bounds):
                # The +Inf bucket has no upper edge; report the highest bound.
                return bounds[-1] if bounds else None
            lower = bounds[i - 1] if i > 0 else min(0.0, bounds[0])
            return lower + (bounds[i] - lower) * (rank - running) / count
        running += count
    return bounds[-1] if bounds else None


def _bound_key(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


def _family_json(family: FamilySnapshot) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    for sample in family.samples:
        if isinstance(sample, HistogramSample):
            entry: dict[str, Any] = {
                "labels": dict(sample.labels),
                "count": sample.count,
                "sum": sample.sum,
                "buckets": {_bound_key(b): c for b, c in sample.buckets},
            }
            if sample.quantiles:
                entry["quantiles"] = {repr(q): v for q, v in sample.quantiles}
            samples.append(entry)
        else:
            samples.append({"labels": dict(sample.labels), "value": sample.value})
    return {
        "type": family.kind.value,
        "help": family.documentation,
        "labelnames": list(family.labelnames),
        "samples": samples,
    }
