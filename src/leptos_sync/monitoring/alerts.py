"""Alert rules, their state machine, silences and notification.

An :class:`AlertRule` compares a metric with a threshold. Each evaluation
(``await manager.evaluate()``) moves every series of every rule through the
states Prometheus uses::

    inactive ──true──▶ pending ──true for for_duration──▶ firing
       ▲                  │                                  │ false (and still
       └──────false───────┘                                  │ false after
       ▲                                                     │ keep_firing_for)
       └──────────────────────── resolved ◀──────────────────┘

A series that turns false while pending goes back to inactive and sends nothing.
A firing alert sends exactly one firing notification and, once resolved, exactly
one resolved notice. An alert is identified by its name and labels, so one rule
over a labelled metric yields one alert per series, and a second report of an
active alert is deduplicated. A :class:`Silence` suppresses notifications of the
alerts it matches, never their state.

Time is read from the injected clock, so tests drive ``for_duration`` and
``keep_firing_for`` with a :class:`~leptos_sync.clock.ManualClock`.

State changes happen under one ``threading.Lock`` and only queue notifications;
the sinks are called afterwards, outside the lock, by :meth:`AlertManager.flush`
(which :meth:`~AlertManager.evaluate` calls). A failing sink is counted and
logged, never raised. Logging: DEBUG for every state change, WARNING for a sink
that failed on the network, ERROR (with traceback) for a sink that raised
something unexpected, which is a bug in that sink.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import operator
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from ..clock import Clock, SystemClock
from ..durations import Duration, positive_ns, to_ns
from ..errors import ConfigError, SyncError
from .metrics import Histogram, MetricsRegistry
from .sinks import AlertSink, LogSink

__all__ = [
    "Alert",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "AlertStatistics",
    "Severity",
    "Silence",
    "builtin_rules",
]

logger = logging.getLogger(__name__)

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

LabelKey = tuple[tuple[str, str], ...]


class Severity(enum.Enum):
    """How urgent an alert is."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(enum.Enum):
    """Where an alert stands; only pending and firing alerts are active."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


def _frozen(labels: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(sorted((labels or {}).items())))


def _severity(value: Severity | str) -> Severity:
    try:
        return Severity(value)
    except ValueError as exc:
        choices = [s.value for s in Severity]
        raise ConfigError(
            "severity", f"expected one of {choices}, got {value!r}"
        ) from exc


def _wall(ns: int) -> datetime:
    return datetime.fromtimestamp(0, UTC) + timedelta(microseconds=ns // 1000)


@dataclass(frozen=True)
class AlertRule:
    """A condition on a metric that raises an alert when it holds long enough.

    Attributes:
        name: the alert's name (``alertname``), unique per manager.
        metric: a metric name in the manager's registry, or a callable returning
            the current value (``None`` for "no data").
        comparison: one of ``>``, ``>=``, ``<``, ``<=``, ``==``, ``!=``.
        threshold: the value compared against.
        for_duration: how long the condition must hold before firing.
        keep_firing_for: how long a firing alert stays firing after its
            condition clears.
        severity: the alert's severity.
        labels: extra labels attached to the alert.
        summary: a human-readable description for notifications.
        match_labels: only series with these label values are evaluated.
        increase_over: when set, the value compared is the metric's increase
            over this window (counter resets counted as a restart from zero).
        quantile: for a histogram metric, the quantile compared (required).
    """

    name: str
    metric: str | Callable[[], float | None]
    comparison: str = ">"
    threshold: float = 0.0
    for_duration: Duration = 0
    keep_firing_for: Duration = 0
    severity: Severity = Severity.WARNING
    labels: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""
    match_labels: Mapping[str, str] = field(default_factory=dict)
    increase_over: Duration | None = None
    quantile: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", "an alert rule needs a non-empty name")
        if not (isinstance(self.metric, str) and self.metric) and not callable(
            self.metric
        ):
            raise ConfigError("metric", "expected a metric name or a callable")
        if self.comparison not in _COMPARISONS:
            raise ConfigError("comparison", f"expected one of {list(_COMPARISONS)}")
        if isinstance(self.threshold, bool) or not isinstance(
            self.threshold, int | float
        ):
            raise ConfigError("threshold", f"expected a number, got {self.threshold!r}")
        positive_ns(self.for_duration, "for_duration", allow_zero=True)
        positive_ns(self.keep_firing_for, "keep_firing_for", allow_zero=True)
        if self.increase_over is not None:
            positive_ns(self.increase_over, "increase_over")
        if self.quantile is not None and not 0 <= self.quantile <= 1:
            raise ConfigError("quantile", "must lie between 0 and 1")
        object.__setattr__(self, "severity", _severity(self.severity))
        object.__setattr__(self, "labels", _frozen(self.labels))
        object.__setattr__(self, "match_labels", _frozen(self.match_labels))

    @property
    def for_ns(self) -> int:
        return to_ns(self.for_duration)

    @property
    def keep_firing_ns(self) -> int:
        return to_ns(self.keep_firing_for)

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets the condition (NaN never does)."""
        return not math.isnan(value) and _COMPARISONS[self.comparison](
            value, self.threshold
        )


@dataclass(frozen=True, repr=False)
class Alert:
    """An alert, as reported by :meth:`AlertManager.alerts` and to sinks.

    Build one with a name (and optionally severity, labels, summary and value)
    to raise it by hand with :meth:`AlertManager.add_alert`; the manager fills
    in the state and times.

    Attributes:
        started_at_ns: when it became active, on the monotonic clock.
        started_at: the same instant on the wall clock, for display.
        fired_at_ns: when it started firing (``None`` while pending).
        ended_at: when it resolved, on the wall clock (resolved notices only).
    """

    name: str
    severity: Severity = Severity.WARNING
    labels: Mapping[str, str] = field(default_factory=dict)
    summary: str = ""
    value: float | None = None
    state: AlertState = AlertState.FIRING
    started_at_ns: int | None = None
    started_at: datetime | None = None
    fired_at_ns: int | None = None
    ended_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", "an alert needs a non-empty name")
        object.__setattr__(self, "severity", _severity(self.severity))
        object.__setattr__(self, "labels", _frozen(self.labels))

    @property
    def firing(self) -> bool:
        return self.state is AlertState.FIRING

    def __repr__(self) -> str:
        return (
            f"Alert({self.name!r}, {self.state.value}, "
            f"severity={self.severity.value}, labels={dict(self.labels)}, "
            f"value={self.value!r}, started_at_ns={self.started_at_ns})"
        )

    @property
    def all_labels(self) -> dict[str, str]:
        """The labels silences match against: ``alertname``, ``severity``, own."""
        return {"alertname": self.name, "severity": self.severity.value, **self.labels}

    def to_json(self) -> dict[str, Any]:
        """The alert in the Alertmanager webhook's per-alert shape."""
        out: dict[str, Any] = {
            "status": self.state.value,
            "labels": self.all_labels,
            "annotations": {"summary": self.summary} if self.summary else {},
            "value": self.value,
        }
        if self.started_at is not None:
            out["startsAt"] = self.started_at.isoformat()
        if self.ended_at is not None:
            out["endsAt"] = self.ended_at.isoformat()
        return out


@dataclass(frozen=True)
class Silence:
    """Mutes notifications for alerts whose labels match, until it ends.

    Attributes:
        id: the silence's number, for :meth:`AlertManager.expire_silence`.
        matchers: label values an alert must all have (``alertname`` and
            ``severity`` included).
        ends_at_ns: the end, on the monotonic clock.
        ends_at: the end on the wall clock, for display.
    """

    id: int
    matchers: Mapping[str, str]
    ends_at_ns: int
    ends_at: datetime
    comment: str = ""

    def matches(self, alert: Alert) -> bool:
        labels = alert.all_labels
        return all(labels.get(k) == v for k, v in self.matchers.items())


@dataclass(frozen=True)
class AlertStatistics:
    """Counts kept by an :class:`AlertManager`; every count is exact.

    ``notifications_sent`` and ``notifications_failed`` count deliveries, one
    per notification and sink; ``notifications_suppressed`` counts
    notifications muted by a silence.
    """

    rules: int
    pending: int
    firing: int
    fired_total: int
    resolved_total: int
    deduplicated: int
    notifications_sent: int
    notifications_failed: int
    notifications_suppressed: int
    queued: int
    evaluations: int
    evaluation_failures: int
    silences: int


@dataclass
class _Instance:
    """The bookkeeping of one active alert (one rule and one series)."""

    rule: AlertRule | None
    alert: Alert
    keep_since_ns: int | None = None
    notified: bool = False
    suppressed: bool = False


class AlertManager:
    """Evaluates rules, tracks alerts and notifies sinks; safe across threads.

    Args:
        clock: where time comes from; the system clock by default.
        sinks: where notifications go; a :class:`~.sinks.LogSink` by default.
        registry: where rules read metrics and the manager publishes its own.
        rules: rules to start with.
    """

    def __init__(
        self,
        clock: Clock | None = None,
        sinks: Iterable[AlertSink] | None = None,
        registry: MetricsRegistry | None = None,
        *,
        rules: Iterable[AlertRule] = (),
    ) -> None:
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.registry = registry if registry is not None else MetricsRegistry()
        self._sinks = tuple(sinks) if sinks is not None else (LogSink(),)
        self._lock = threading.Lock()
        self._rules: dict[str, AlertRule] = {}
        self._active: dict[tuple[str, LabelKey], _Instance] = {}
        self._outbox: deque[Alert] = deque()
        self._silences: dict[int, Silence] = {}
        self._next_silence = 1
        # Per rule and series: (time, value) samples for ``increase_over``.
        self._history: dict[tuple[str, LabelKey], deque[tuple[int, float]]] = {}
        self._evaluated_rules: set[str] = set()
        self._counts = dict.fromkeys(
            ("fired", "resolved", "deduplicated", "sent", "failed", "suppressed"), 0
        )
        self._evaluations = 0
        self._evaluation_failures = 0
        self._register_metrics()
        for rule in rules:
            self.add_rule(rule)

    # Rules and manual alerts --------------------------------------------------

    def add_rule(self, rule: AlertRule) -> None:
        """Evaluate ``rule`` from now on; its name must not be in use."""
        with self._lock:
            if rule.name in self._rules:
                raise ConfigError("name", f"a rule named {rule.name!r} exists")
            self._rules[rule.name] = rule

    def remove_rule(self, name: str) -> None:
        """Stop evaluating the rule; its active alerts go without notice."""
        with self._lock:
            rule = self._rules.pop(name, None)
            for key, instance in list(self._active.items()):
                if rule is not None and instance.rule is rule:
                    del self._active[key]
            for series in [k for k in self._history if k[0] == name]:
                del self._history[series]
            self._evaluated_rules.discard(name)
            self._publish_active()

    def rules(self) -> tuple[AlertRule, ...]:
        with self._lock:
            return tuple(self._rules.values())

    def add_alert(self, alert: Alert) -> Alert:
        """Raise an alert by hand; it fires at once.

        An alert with the same name and labels that is already active is
        deduplicated: it is kept as it is (with the new value) and nothing is
        sent. The firing notification is queued and sent by the next
        :meth:`flush` or :meth:`evaluate`.

        Returns:
            The active alert, with state and times filled in.
        """
        now, wall = self.clock.monotonic_ns(), self.clock.wall_ns()
        key = (alert.name, tuple(alert.labels.items()))
        with self._lock:
            existing = self._active.get(key)
            if existing is not None:
                self._counts["deduplicated"] += 1
                if alert.value is not None:
                    existing.alert = replace(existing.alert, value=alert.value)
                return existing.alert
            active = replace(
                alert,
                state=AlertState.FIRING,
                started_at_ns=now,
                started_at=_wall(wall),
                fired_at_ns=now,
                ended_at=None,
            )
            instance = _Instance(None, active)
            self._active[key] = instance
            self._fire(instance, now)
            self._publish_active()
            return active

    def resolve_alert(
        self, name: str, labels: Mapping[str, str] | None = None
    ) -> Alert | None:
        """Resolve an alert raised by hand; ``None`` if it was not active."""
        now, wall = self.clock.monotonic_ns(), self.clock.wall_ns()
        key = (name, tuple(_frozen(labels).items()))
        with self._lock:
            instance = self._active.get(key)
            if instance is None or instance.rule is not None:
                return None
            resolved = self._resolve(key, instance, now, wall)
            self._publish_active()
            return resolved

    def alerts(self) -> list[Alert]:
        """The active (pending and firing) alerts, oldest first."""
        with self._lock:
            alerts = [i.alert for i in self._active.values()]
        return sorted(alerts, key=lambda a: (a.started_at_ns or 0, a.name))

    # The guide's named counters -------------------------------------------------

    def increment_counter(self, name: str, amount: int = 1) -> None:
        """Add to the named counter; exact under threads and tasks."""
        self._counter.labels(name=name).inc(amount)

    def counter(self, name: str) -> int:
        """The named counter's value; 0 if never incremented."""
        child = self._counter.lookup(name=name)
        return 0 if child is None else int(child.value)

    # Silences ---------------------------------------------------------------

    def silence(
        self,
        matchers: Mapping[str, str],
        *,
        duration: Duration | None = None,
        until: datetime | None = None,
        comment: str = "",
    ) -> Silence:
        """Mute notifications for matching alerts for ``duration`` or ``until``.

        A wall-clock ``until`` is turned into a monotonic end when the silence
        is created, so a later jump of the wall clock does not move it.
        """
        if not matchers:
            raise ConfigError("matchers", "a silence needs at least one matcher")
        if (duration is None) == (until is None):
            raise ConfigError("duration", "give exactly one of duration and until")
        now, wall = self.clock.monotonic_ns(), self.clock.wall_ns()
        if duration is not None:
            length = positive_ns(duration, "duration")
        else:
            assert until is not None
            if until.tzinfo is None:
                until = until.replace(tzinfo=UTC)
            length = to_ns(until - _wall(wall))
            if length <= 0:
                raise ConfigError("until", "the silence would end in the past")
        with self._lock:
            silence = Silence(
                self._next_silence,
                _frozen(matchers),
                now + length,
                _wall(wall + length),
                comment,
            )
            self._next_silence += 1
            self._silences[silence.id] = silence
            return silence

    def expire_silence(self, silence_id: int) -> bool:
        """End a silence now; ``False`` if there was no such silence."""
        with self._lock:
            return self._silences.pop(silence_id, None) is not None

    def silences(self) -> tuple[Silence, ...]:
        """The silences that have not ended."""
        now = self.clock.monotonic_ns()
        with self._lock:
            return tuple(s for s in self._silences.values() if s.ends_at_ns > now)

    # Evaluation and delivery -------------------------------------------------

    async def evaluate(self) -> list[Alert]:
        """Evaluate every rule once, then send the queued notifications.

        Returns:
            The alerts whose state changed, in their new state (``INACTIVE``
            for a pending alert whose condition cleared).
        """
        now, wall = self.clock.monotonic_ns(), self.clock.wall_ns()
        readings: list[tuple[AlertRule, list[tuple[dict[str, str], float]]]] = []
        for rule in self.rules():
            try:
                readings.append((rule, self._read(rule)))
            except Exception as exc:
                # The rule's source failed (a user callable, a missing
                # quantile): leave its alerts as they are rather than resolve.
                # Our own errors explain themselves; others get a traceback.
                logger.warning(
                    "alert rule %s could not be read: %s",
                    rule.name,
                    exc,
                    exc_info=not isinstance(exc, SyncError),
                )
                with self._lock:
                    self._evaluation_failures += 1
                self._evaluation_failures_metric.inc()

        changed: list[Alert] = []
        with self._lock:
            for rule, series in readings:
                if self._rules.get(rule.name) is rule:
                    changed.extend(self._apply(rule, series, now, wall))
            self._retry_notifications(now)
            self._evaluations += 1
            self._publish_active()
        self._evaluations_metric.inc()
        await self.flush()
        return changed

    async def flush(self) -> None:
        """Send every queued notification to every sink."""
        with self._lock:
            batch = list(self._outbox)
            self._outbox.clear()
        for index, alert in enumerate(batch):
            try:
                await asyncio.gather(*(self._deliver(s, alert) for s in self._sinks))
            except asyncio.CancelledError:
                # Put back what was not delivered, so a later flush sends it.
                with self._lock:
                    self._outbox.extendleft(reversed(batch[index + 1 :]))
                raise

    def statistics(self) -> AlertStatistics:
        """A consistent copy of the manager's counts."""
        now = self.clock.monotonic_ns()
        with self._lock:
            states = [i.alert.state for i in self._active.values()]
            return AlertStatistics(
                rules=len(self._rules),
                pending=states.count(AlertState.PENDING),
                firing=states.count(AlertState.FIRING),
                fired_total=self._counts["fired"],
                resolved_total=self._counts["resolved"],
                deduplicated=self._counts["deduplicated"],
                notifications_sent=self._counts["sent"],
                notifications_failed=self._counts["failed"],
                notifications_suppressed=self._counts["suppressed"],
                queued=len(self._outbox),
                evaluations=self._evaluations,
                evaluation_failures=self._evaluation_failures,
                silences=sum(s.ends_at_ns > now for s in self._silences.values()),
            )

    # Internals: reading -------------------------------------------------------

    def _read(self, rule: AlertRule) -> list[tuple[dict[str, str], float]]:
        if callable(rule.metric):
            value = rule.metric()
            return [] if value is None else [({}, float(value))]
        metric = self.registry.get(rule.metric)
        if metric is None:
            return []
        out: list[tuple[dict[str, str], float]] = []
        for labels, child in metric.series():
            if any(labels.get(k) != v for k, v in rule.match_labels.items()):
                continue
            if isinstance(child, Histogram):
                if rule.quantile is None:
                    raise ConfigError("quantile", f"{rule.metric} is a histogram")
                value = child.quantile(rule.quantile)
                if value is not None:
                    out.append((labels, value))
            else:
                out.append((labels, float(child.value)))
        return out

    def _increase(
        self, rule: AlertRule, labels: LabelKey, value: float, now: int, first: bool
    ) -> float:
        assert rule.increase_over is not None
        window = to_ns(rule.increase_over)
        history = self._history.get((rule.name, labels))
        if history is None:
            # Counters in this process's registry start at zero: whatever a
            # series holds when first seen happened since, and counts (an
            # integrity failure found while the store loaded, say).
            history = deque([(now, 0.0)])
            self._history[(rule.name, labels)] = history
        history.append((now, value))
        # Keep the newest sample at or before the window's start as its base.
        while len(history) > 1 and history[1][0] <= now - window:
            history.popleft()
        increase, previous = 0.0, history[0][1]
        for _, sample in list(history)[1:]:
            increase += sample - previous if sample >= previous else sample
            previous = sample
        return increase

    # Internals: state changes (called with the lock held) --------------------

    def _apply(
        self,
        rule: AlertRule,
        series: list[tuple[dict[str, str], float]],
        now: int,
        wall: int,
    ) -> list[Alert]:
        first = rule.name not in self._evaluated_rules
        self._evaluated_rules.add(rule.name)
        changed: list[Alert] = []
        seen: set[tuple[str, LabelKey]] = set()
        for labels, raw in series:
            own = tuple(sorted(labels.items()))
            value = raw
            if rule.increase_over is not None:
                value = self._increase(rule, own, raw, now, first)
            merged = {**labels, **rule.labels}
            key = (rule.name, tuple(_frozen(merged).items()))
            seen.add(key)
            change = self._step(rule, key, merged, value, rule.holds(value), now, wall)
            if change is not None:
                changed.append(change)

        # Series that vanished (or a callable that returned None) count as false.
        for key, instance in list(self._active.items()):
            if instance.rule is rule and key not in seen:
                labels = dict(instance.alert.labels)
                change = self._step(rule, key, labels, None, False, now, wall)
                if change is not None:
                    changed.append(change)
        return changed

    def _step(
        self,
        rule: AlertRule,
        key: tuple[str, LabelKey],
        labels: dict[str, str],
        value: float | None,
        holds: bool,
        now: int,
        wall: int,
    ) -> Alert | None:
        instance = self._active.get(key)
        if instance is not None and instance.rule is not rule:
            return None  # an alert raised by hand holds this name and labels
        before = instance.alert.state if instance is not None else AlertState.INACTIVE

        if holds:
            if instance is None:
                alert = Alert(
                    rule.name,
                    rule.severity,
                    labels,
                    rule.summary,
                    value,
                    AlertState.PENDING,
                    started_at_ns=now,
                    started_at=_wall(wall),
                )
                instance = _Instance(rule, alert)
                self._active[key] = instance
                logger.debug("alert %s %s pending", rule.name, labels)
            instance.alert = replace(instance.alert, value=value)
            instance.keep_since_ns = None
            started = instance.alert.started_at_ns
            assert started is not None
            if before is not AlertState.FIRING and now - started >= rule.for_ns:
                instance.alert = replace(
                    instance.alert, state=AlertState.FIRING, fired_at_ns=now
                )
                self._fire(instance, now)
        elif instance is not None:
            if before is AlertState.PENDING:
                del self._active[key]
                logger.debug("alert %s %s back to inactive", rule.name, labels)
                return replace(instance.alert, state=AlertState.INACTIVE)
            if instance.keep_since_ns is None:
                instance.keep_since_ns = now
            if now - instance.keep_since_ns >= rule.keep_firing_ns:
                return self._resolve(key, instance, now, wall)

        if instance is None or instance.alert.state is before:
            return None
        return instance.alert

    def _fire(self, instance: _Instance, now: int) -> None:
        alert = instance.alert
        self._counts["fired"] += 1
        self._fired_metric.labels(severity=alert.severity.value).inc()
        logger.debug("alert %s %s firing", alert.name, dict(alert.labels))
        self._notify_firing(instance, now)

    def _notify_firing(self, instance: _Instance, now: int) -> None:
        if self._silenced(instance.alert, now):
            if not instance.suppressed:
                instance.suppressed = True
                self._suppress()
            return
        instance.notified = True
        self._outbox.append(instance.alert)

    def _retry_notifications(self, now: int) -> None:
        # A firing alert muted by a silence that has since ended is announced now.
        for instance in self._active.values():
            if instance.alert.firing and not instance.notified:
                self._notify_firing(instance, now)

    def _resolve(
        self, key: tuple[str, LabelKey], instance: _Instance, now: int, wall: int
    ) -> Alert:
        del self._active[key]
        resolved = replace(
            instance.alert, state=AlertState.RESOLVED, ended_at=_wall(wall)
        )
        self._counts["resolved"] += 1
        logger.debug("alert %s %s resolved", resolved.name, dict(resolved.labels))

        # Resolve only what was announced; a silenced resolution stays silent.
        if instance.notified:
            if self._silenced(resolved, now):
                self._suppress()
            else:
                self._outbox.append(resolved)
        return resolved

    def _silenced(self, alert: Alert, now: int) -> bool:
        for silence_id, silence in list(self._silences.items()):
            if silence.ends_at_ns <= now:
                del self._silences[silence_id]
            elif silence.matches(alert):
                return True
        return False

    def _suppress(self) -> None:
        self._counts["suppressed"] += 1
        self._suppressed_metric.inc()

    async def _deliver(self, sink: AlertSink, alert: Alert) -> None:
        name = str(getattr(sink, "name", type(sink).__name__))
        try:
            await sink.send(alert)
        except SyncError as exc:
            logger.warning("alert sink %s failed for %s: %s", name, alert.name, exc)
            outcome = "failed"
        except Exception:
            logger.exception("alert sink %s raised for %s", name, alert.name)
            outcome = "failed"
        else:
            outcome = "sent"
        with self._lock:
            self._counts[outcome] += 1
        metric = self._sent_metric if outcome == "sent" else self._failed_metric
        metric.labels(sink=name).inc()

    # Internals: the manager's own metrics -------------------------------------

    def _register_metrics(self) -> None:
        reg = self.registry
        self._counter = reg.counter(
            "leptos_sync_alert_counter_total",
            "Counters kept by AlertManager.increment_counter, by name.",
            ("name",),
        )
        self._fired_metric = reg.counter(
            "leptos_sync_alerts_fired_total",
            "Alerts that started firing.",
            ("severity",),
        )
        self._active_metric = reg.gauge(
            "leptos_sync_alerts_active",
            "Active alerts by state and severity.",
            ("state", "severity"),
        )
        self._sent_metric = reg.counter(
            "leptos_sync_alert_notifications_sent_total",
            "Alert notifications delivered, by sink.",
            ("sink",),
        )
        self._failed_metric = reg.counter(
            "leptos_sync_alert_notifications_failed_total",
            "Alert notifications that a sink failed to deliver, by sink.",
            ("sink",),
        )
        self._suppressed_metric = reg.counter(
            "leptos_sync_alert_notifications_suppressed_total",
            "Alert notifications muted by a silence.",
        )
        self._evaluations_metric = reg.counter(
            "leptos_sync_alert_evaluations_total", "Alert rule evaluation rounds."
        )
        self._evaluation_failures_metric = reg.counter(
            "leptos_sync_alert_evaluation_failures_total",
            "Alert rules whose metric could not be read.",
        )
        self._publish_active()

    def _publish_active(self) -> None:
        counts = {
            (state, severity): 0
            for state in (AlertState.PENDING, AlertState.FIRING)
            for severity in Severity
        }
        for instance in self._active.values():
            alert = instance.alert
            counts[(alert.state, alert.severity)] += 1
        for (state, severity), count in counts.items():
            self._active_metric.labels(state=state.value, severity=severity.value).set(
                count
            )

    def __repr__(self) -> str:
        return f"AlertManager(rules={len(self._rules)}, active={len(self._active)})"


def builtin_rules(
    outbox_backlog: int = 1000,
    backlog_for: Duration = timedelta(seconds=60),
    stale_after: Duration = timedelta(seconds=300),
    integrity_window: Duration = timedelta(minutes=15),
) -> tuple[AlertRule, ...]:
    """The ``Alerts.Basic`` rules, over the metrics the sync engine publishes.

    Args:
        outbox_backlog: outbox depth above which OutboxBacklog is pending.
        backlog_for: how long the backlog must last before it fires.
        stale_after: seconds since the last sync above which SyncStale fires.
        integrity_window: IntegrityFailure fires while the integrity failure
            count rose within this window.
    """
    if isinstance(outbox_backlog, bool) or not isinstance(outbox_backlog, int):
        raise ConfigError("outbox_backlog", "expected an integer")
    if outbox_backlog < 0:
        raise ConfigError("outbox_backlog", "must not be negative")
    stale_s = positive_ns(stale_after, "stale_after") / 1e9
    return (
        AlertRule(
            "CircuitBreakerOpen",
            "leptos_sync_breaker_state",
            ">",
            0,
            severity=Severity.WARNING,
            summary="The sync circuit breaker is open or half-open.",
        ),
        AlertRule(
            "OutboxBacklog",
            "leptos_sync_outbox_depth",
            ">",
            outbox_backlog,
            for_duration=backlog_for,
            severity=Severity.WARNING,
            summary=f"More than {outbox_backlog} operations wait to be sent.",
        ),
        AlertRule(
            "SyncStale",
            "leptos_sync_seconds_since_last_sync",
            ">",
            stale_s,
            severity=Severity.WARNING,
            summary=f"No successful sync for more than {stale_s:g} s.",
        ),
        AlertRule(
            "IntegrityFailure",
            "leptos_sync_integrity_failures_total",
            ">",
            0,
            increase_over=integrity_window,
            severity=Severity.CRITICAL,
            summary="Stored or received data failed an integrity check.",
        ),
        AlertRule(
            "HealthFailing",
            "leptos_sync_health_status",
            ">=",
            2,
            severity=Severity.CRITICAL,
            summary="The health check reports fail.",
        ),
    )
