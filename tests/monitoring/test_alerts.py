"""Tests of alert rules, the alert state machine, silences and sinks."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from leptos_sync.clock import ManualClock
from leptos_sync.errors import ConfigError, TransportError
from leptos_sync.monitoring import (
    Alert,
    AlertManager,
    AlertRule,
    AlertState,
    CallbackSink,
    LogSink,
    MetricsRegistry,
    Severity,
    WebhookSink,
    builtin_rules,
)


class Recorder:
    """A sink that keeps every notification it receives."""

    name = "recorder"

    def __init__(self) -> None:
        self.received: list[Alert] = []

    async def send(self, alert: Alert) -> None:
        self.received.append(alert)

    def states(self) -> list[tuple[str, AlertState]]:
        return [(a.name, a.state) for a in self.received]


def _manager(
    rules: tuple[AlertRule, ...] = (),
) -> tuple[AlertManager, ManualClock, Recorder]:
    clock = ManualClock()
    sink = Recorder()
    return AlertManager(clock=clock, sinks=[sink], rules=rules), clock, sink


async def test_for_duration_lifecycle() -> None:
    """Pending at 0 s, firing at 30 s once, resolved once, refires anew later."""
    manager, clock, sink = _manager()
    depth = manager.registry.gauge("depth")
    manager.add_rule(AlertRule("Deep", "depth", ">", 10, for_duration=30))

    depth.set(11)
    (pending,) = await manager.evaluate()
    assert pending.state is AlertState.PENDING
    first_start = pending.started_at_ns
    assert first_start is not None
    clock.advance(29)
    assert await manager.evaluate() == []
    assert sink.received == []

    clock.advance(1)
    (firing,) = await manager.evaluate()
    assert firing.state is AlertState.FIRING
    assert firing.started_at_ns == first_start
    assert firing.fired_at_ns == first_start + 30 * 10**9
    clock.advance(15)
    await manager.evaluate()
    assert sink.states() == [("Deep", AlertState.FIRING)]

    depth.set(0)
    (resolved,) = await manager.evaluate()
    assert resolved.state is AlertState.RESOLVED
    await manager.evaluate()
    assert sink.states() == [("Deep", AlertState.FIRING), ("Deep", AlertState.RESOLVED)]
    assert manager.alerts() == []

    clock.advance(40)
    depth.set(12)
    (again,) = await manager.evaluate()
    assert again.state is AlertState.PENDING
    assert again.started_at_ns == first_start + 85 * 10**9
    clock.advance(30)
    await manager.evaluate()
    assert [a.state for a in manager.alerts()] == [AlertState.FIRING]
    assert manager.alerts()[0].started_at_ns == again.started_at_ns
    assert len(sink.received) == 3
    stats = manager.statistics()
    assert (stats.fired_total, stats.resolved_total, stats.firing) == (2, 1, 1)


async def test_clearing_inside_for_duration_sends_nothing() -> None:
    """A condition that clears before its for-duration ends sends nothing."""
    manager, clock, sink = _manager()
    depth = manager.registry.gauge("depth")
    manager.add_rule(AlertRule("Deep", "depth", ">", 10, for_duration=30))

    depth.set(11)
    await manager.evaluate()
    clock.advance(29)
    depth.set(5)
    (change,) = await manager.evaluate()
    assert change.state is AlertState.INACTIVE
    clock.advance(60)
    await manager.evaluate()
    assert sink.received == []
    assert manager.statistics().fired_total == 0


async def test_zero_for_duration_fires_at_once() -> None:
    """A rule without for-duration fires at the first true evaluation."""
    manager, _, sink = _manager()
    manager.registry.gauge("g").set(1)
    manager.add_rule(AlertRule("G", "g", "==", 1, severity="critical"))  # type: ignore[arg-type]
    (alert,) = await manager.evaluate()
    assert alert.state is AlertState.FIRING
    assert alert.severity is Severity.CRITICAL
    assert sink.states() == [("G", AlertState.FIRING)]


async def test_keep_firing_for() -> None:
    """A cleared alert keeps firing for keep_firing_for, then resolves once."""
    manager, clock, sink = _manager()
    gauge = manager.registry.gauge("errors")
    manager.add_rule(AlertRule("Errors", "errors", ">", 0, keep_firing_for=60))

    gauge.set(3)
    await manager.evaluate()
    gauge.set(0)
    clock.advance(10)
    assert await manager.evaluate() == []
    clock.advance(30)
    gauge.set(1)  # flaps back while kept firing: no new notification
    await manager.evaluate()
    gauge.set(0)
    clock.advance(10)
    await manager.evaluate()  # the keep window restarts here
    clock.advance(59)
    await manager.evaluate()
    assert manager.alerts()[0].state is AlertState.FIRING
    clock.advance(1)
    (resolved,) = await manager.evaluate()
    assert resolved.state is AlertState.RESOLVED
    assert sink.states() == [
        ("Errors", AlertState.FIRING),
        ("Errors", AlertState.RESOLVED),
    ]


async def test_silence_suppresses_notifications_not_state() -> None:
    """A silenced alert still fires, is announced when the silence ends."""
    manager, clock, sink = _manager()
    manager.registry.gauge("g").set(1)
    manager.add_rule(AlertRule("G", "g", ">", 0, labels={"team": "sync"}))
    silence = manager.silence({"team": "sync"}, duration=timedelta(minutes=5))
    assert manager.silences() == (silence,)

    await manager.evaluate()
    assert [a.state for a in manager.alerts()] == [AlertState.FIRING]
    assert sink.received == []
    assert manager.statistics().notifications_suppressed == 1
    clock.advance(60)
    await manager.evaluate()
    assert manager.statistics().notifications_suppressed == 1

    clock.advance(240)
    await manager.evaluate()
    assert sink.states() == [("G", AlertState.FIRING)]
    assert manager.silences() == ()


async def test_silence_until_and_expire() -> None:
    """A silence given as a wall time mutes until then; expiring it unmutes."""
    manager, clock, sink = _manager()
    wall_now = datetime.fromtimestamp(clock.wall_ns() / 1e9, UTC)
    silence = manager.silence(
        {"alertname": "Manual"},
        until=wall_now + timedelta(hours=1),
        comment="maintenance",
    )
    assert silence.ends_at_ns == clock.monotonic_ns() + 3600 * 10**9
    manager.add_alert(Alert("Manual"))
    await manager.flush()
    assert sink.received == []
    assert manager.expire_silence(silence.id)
    assert not manager.expire_silence(silence.id)
    await manager.evaluate()
    assert sink.states() == [("Manual", AlertState.FIRING)]


def test_silence_needs_matchers_and_one_end() -> None:
    """A silence without matchers, or with both or no end, raises ConfigError."""
    manager, _, _ = _manager()
    with pytest.raises(ConfigError):
        manager.silence({}, duration=60)
    with pytest.raises(ConfigError):
        manager.silence({"a": "b"})
    with pytest.raises(ConfigError):
        manager.silence({"a": "b"}, duration=-1)


async def test_add_alert_deduplicates_by_name_and_labels() -> None:
    """Raising the same alert twice keeps one alert and sends one notice."""
    manager, _, sink = _manager()
    first = manager.add_alert(Alert("Disk", labels={"volume": "a"}, value=0.9))
    again = manager.add_alert(Alert("Disk", labels={"volume": "a"}, value=0.95))
    other = manager.add_alert(Alert("Disk", labels={"volume": "b"}))
    assert again.started_at_ns == first.started_at_ns
    assert again.value == 0.95
    assert other is not again
    await manager.flush()
    assert len(sink.received) == 2
    assert manager.statistics().deduplicated == 1
    assert len(manager.alerts()) == 2

    resolved = manager.resolve_alert("Disk", {"volume": "a"})
    assert resolved is not None and resolved.state is AlertState.RESOLVED
    assert manager.resolve_alert("Disk", {"volume": "a"}) is None
    await manager.flush()
    assert sink.states()[-1] == ("Disk", AlertState.RESOLVED)


async def test_labelled_metric_gives_one_alert_per_series() -> None:
    """A rule over a labelled metric tracks each series as its own alert."""
    manager, _, sink = _manager()
    depth = manager.registry.gauge("depth", labelnames=("collection",))
    manager.add_rule(AlertRule("Deep", "depth", ">", 5, labels={"team": "x"}))
    depth.labels(collection="notes").set(9)
    depth.labels(collection="tasks").set(7)
    depth.labels(collection="tags").set(1)
    await manager.evaluate()
    labels = sorted(a.labels["collection"] for a in manager.alerts())
    assert labels == ["notes", "tasks"]
    assert all(a.labels["team"] == "x" for a in manager.alerts())

    depth.remove(collection="notes")  # a vanished series resolves
    await manager.evaluate()
    assert [a.labels["collection"] for a in manager.alerts()] == ["tasks"]
    assert len(sink.received) == 3


async def test_match_labels_and_callable_metric() -> None:
    """match_labels filters series; a callable rule reads its own value."""
    level = {"value": 0.0}
    manager, _, _ = _manager()
    gauge = manager.registry.gauge("g", labelnames=("env",))
    gauge.labels(env="prod").set(5)
    gauge.labels(env="dev").set(5)
    manager.add_rule(AlertRule("Prod", "g", ">", 1, match_labels={"env": "prod"}))
    manager.add_rule(AlertRule("Level", lambda: level["value"], ">=", 1))
    await manager.evaluate()
    assert [(a.name, dict(a.labels)) for a in manager.alerts()] == [
        ("Prod", {"env": "prod"})
    ]
    level["value"] = 1
    await manager.evaluate()
    assert {a.name for a in manager.alerts()} == {"Prod", "Level"}


async def test_failing_source_is_counted_and_keeps_state() -> None:
    """A rule whose source raises is counted and its alerts stay as they were."""
    calls = {"n": 0}

    def source() -> float:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("probe down")
        return 5.0

    manager, _, _ = _manager((AlertRule("Probe", source, ">", 1),))
    await manager.evaluate()
    await manager.evaluate()
    assert [a.state for a in manager.alerts()] == [AlertState.FIRING]
    assert manager.statistics().evaluation_failures == 1


async def test_histogram_rule_uses_quantile() -> None:
    """A rule on a histogram compares the quantile it names."""
    manager, _, _ = _manager()
    hist = manager.registry.histogram("lat_seconds", quantiles=True)
    for i in range(100):
        hist.observe(3.0 if i % 20 == 0 else 0.01)
    manager.add_rule(AlertRule("SlowP99", "lat_seconds", ">", 1, quantile=0.99))
    manager.add_rule(AlertRule("NoQuantile", "lat_seconds", ">", 1))
    await manager.evaluate()
    assert [a.name for a in manager.alerts()] == ["SlowP99"]
    assert manager.statistics().evaluation_failures == 1


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"name": ""}, "name"),
        ({"metric": ""}, "metric"),
        ({"comparison": "=>"}, "comparison"),
        ({"threshold": "1"}, "threshold"),
        ({"for_duration": -1}, "for_duration"),
        ({"keep_firing_for": -1}, "keep_firing_for"),
        ({"increase_over": 0}, "increase_over"),
        ({"severity": "loud"}, "severity"),
        ({"quantile": 2}, "quantile"),
    ],
)
def test_rule_validation_names_the_field(
    kwargs: dict[str, object], field_name: str
) -> None:
    """An invalid rule raises ConfigError naming the offending field."""
    args: dict[str, object] = {"name": "R", "metric": "m"} | kwargs
    with pytest.raises(ConfigError) as info:
        AlertRule(**args)  # type: ignore[arg-type]
    assert info.value.field == field_name


def test_duplicate_rule_name_raises() -> None:
    """Two rules cannot share a name."""
    manager, _, _ = _manager((AlertRule("R", "m"),))
    with pytest.raises(ConfigError):
        manager.add_rule(AlertRule("R", "other"))
    manager.remove_rule("R")
    manager.add_rule(AlertRule("R", "other"))
    assert [r.metric for r in manager.rules()] == ["other"]


def test_named_counters_exact_under_threads() -> None:
    """increment_counter from 16 threads × 1,000 gives an exact count."""
    manager, _, _ = _manager()

    def work() -> None:
        for _ in range(1000):
            manager.increment_counter("sync_errors")

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert manager.counter("sync_errors") == 16_000
    assert manager.counter("never") == 0


def test_alert_counts_exact_under_threads() -> None:
    """Alerts raised from 16 threads are all counted, and duplicates once."""
    manager, _, _ = _manager()

    def work(thread: int) -> None:
        for i in range(100):
            manager.add_alert(Alert("Burst", labels={"id": f"{thread}-{i}"}))
            manager.add_alert(Alert("Same"))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = manager.statistics()
    assert stats.fired_total == 1600 + 1
    assert stats.deduplicated == 1600 - 1
    assert len(manager.alerts()) == 1601
    assert stats.queued == 1601


def test_concurrent_evaluations_fire_once() -> None:
    """Evaluations racing in 8 threads, each with its own loop, fire once."""
    manager, _, sink = _manager()
    manager.registry.gauge("g").set(1)
    manager.add_rule(AlertRule("G", "g", ">", 0))
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(20):
            asyncio.run(manager.evaluate())

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sink.states() == [("G", AlertState.FIRING)]
    stats = manager.statistics()
    assert (stats.fired_total, stats.evaluations) == (1, 160)


def test_alert_severity_is_validated() -> None:
    """An unknown severity on a hand-made alert raises ConfigError."""
    with pytest.raises(ConfigError) as info:
        Alert("X", severity="loud")  # type: ignore[arg-type]
    assert info.value.field == "severity"
    assert Alert("X", severity="info").severity is Severity.INFO  # type: ignore[arg-type]


async def test_alert_counts_exact_under_tasks() -> None:
    """1,000 tasks raising and counting give exact alert and counter totals."""
    manager, _, sink = _manager()

    async def work(i: int) -> None:
        manager.increment_counter("events")
        await asyncio.sleep(0)
        manager.add_alert(Alert("Task", labels={"i": str(i)}))
        await manager.flush()

    await asyncio.gather(*(work(i) for i in range(1000)))
    assert manager.counter("events") == 1000
    assert manager.statistics().fired_total == 1000
    assert len(sink.received) == 1000
    assert manager.statistics().notifications_sent == 1000


async def test_manager_publishes_its_own_metrics() -> None:
    """Fired, active and notification metrics appear in the registry."""
    registry = MetricsRegistry()
    manager = AlertManager(clock=ManualClock(), sinks=[Recorder()], registry=registry)
    manager.add_alert(Alert("A", severity=Severity.CRITICAL))
    await manager.flush()
    fired = registry.counter("leptos_sync_alerts_fired_total", labelnames=("severity",))
    assert fired.labels(severity="critical").value == 1
    active = registry.gauge(
        "leptos_sync_alerts_active", labelnames=("state", "severity")
    )
    assert active.labels(state="firing", severity="critical").value == 1
    assert active.labels(state="pending", severity="info").value == 0
    sent = registry.counter(
        "leptos_sync_alert_notifications_sent_total", labelnames=("sink",)
    )
    assert sent.labels(sink="recorder").value == 1


async def test_log_sink_levels(caplog: pytest.LogCaptureFixture) -> None:
    """The log sink logs firing at WARNING and resolved at INFO."""
    manager = AlertManager(clock=ManualClock(), sinks=[LogSink()])
    caplog.set_level(logging.DEBUG, logger="leptos_sync.monitoring.sinks")
    manager.add_alert(Alert("Loud", summary="It is loud."))
    manager.resolve_alert("Loud")
    await manager.flush()
    records = [
        (r.levelno, r.getMessage())
        for r in caplog.records
        if r.name == "leptos_sync.monitoring.sinks"
    ]
    assert records[0][0] == logging.WARNING
    assert "Loud firing" in records[0][1] and "It is loud." in records[0][1]
    assert records[1][0] == logging.INFO and "Loud resolved" in records[1][1]


async def test_callback_sink_plain_and_async() -> None:
    """Plain and async callbacks both receive notifications."""
    seen: list[str] = []

    async def later(alert: Alert) -> None:
        seen.append(f"async {alert.name}")

    manager = AlertManager(
        clock=ManualClock(),
        sinks=[
            CallbackSink(lambda a: seen.append(f"plain {a.name}")),
            CallbackSink(later),
        ],
    )
    manager.add_alert(Alert("X"))
    await manager.flush()
    assert sorted(seen) == ["async X", "plain X"]


async def test_raising_sink_is_counted_not_raised() -> None:
    """A sink that raises is counted as failed and others still deliver."""

    def broken(alert: Alert) -> None:
        raise ValueError("bug in sink")

    recorder = Recorder()
    manager = AlertManager(clock=ManualClock(), sinks=[CallbackSink(broken), recorder])
    manager.add_alert(Alert("X"))
    await manager.flush()
    stats = manager.statistics()
    assert (stats.notifications_sent, stats.notifications_failed) == (1, 1)
    assert len(recorder.received) == 1


@dataclass
class WebhookServer:
    """A one-request-per-connection HTTP server on the loopback interface."""

    status: int = 200
    bodies: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        self.bodies.append(json.loads(await reader.readexactly(length)))
        writer.write(
            f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def webhook(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WebhookServer]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    server = WebhookServer()
    tcp = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}/alerts"
    async with tcp:
        yield server


async def test_webhook_sink_posts_json(webhook: WebhookServer) -> None:
    """The webhook sink POSTs firing and resolved alerts as JSON."""
    manager = AlertManager(clock=ManualClock(), sinks=[WebhookSink(webhook.url)])
    manager.add_alert(Alert("Hook", labels={"team": "sync"}, summary="Hello."))
    manager.resolve_alert("Hook", {"team": "sync"})
    await manager.flush()

    assert [b["status"] for b in webhook.bodies] == ["firing", "resolved"]
    (alert,) = webhook.bodies[0]["alerts"]
    assert alert["labels"] == {
        "alertname": "Hook",
        "severity": "warning",
        "team": "sync",
    }
    assert alert["annotations"] == {"summary": "Hello."}
    assert "endsAt" in webhook.bodies[1]["alerts"][0]
    assert manager.statistics().notifications_sent == 2


async def test_webhook_failure_is_counted(webhook: WebhookServer) -> None:
    """A webhook answering 500 counts as a failed delivery and is not raised."""
    webhook.status = 500
    manager = AlertManager(clock=ManualClock(), sinks=[WebhookSink(webhook.url)])
    manager.add_alert(Alert("Hook"))
    await manager.flush()
    assert manager.statistics().notifications_failed == 1
    assert len(webhook.bodies) == 1


async def test_webhook_unreachable_raises_transport_error() -> None:
    """A refused connection surfaces from the sink as TransportError."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    sink = WebhookSink(f"http://127.0.0.1:{port}/", timeout=2)
    with pytest.raises(TransportError) as info:
        await sink.send(Alert("Down"))
    assert info.value.__cause__ is not None


def test_webhook_url_must_be_http() -> None:
    """A non-HTTP webhook URL raises ConfigError naming url."""
    with pytest.raises(ConfigError) as info:
        WebhookSink("ftp://example.org")
    assert info.value.field == "url"


async def test_builtin_rules_fire_on_engine_metrics() -> None:
    """Each built-in rule fires on the metric the sync engine publishes."""
    manager, clock, _ = _manager(builtin_rules(outbox_backlog=10, backlog_for=60))
    reg = manager.registry
    integrity = reg.counter("leptos_sync_integrity_failures_total")
    await manager.evaluate()  # the integrity counter's baseline is 0

    reg.gauge("leptos_sync_breaker_state").set(1)
    reg.gauge("leptos_sync_outbox_depth").set(11)
    reg.gauge("leptos_sync_seconds_since_last_sync").set(301)
    reg.gauge("leptos_sync_health_status").set(2)
    integrity.inc()
    await manager.evaluate()
    firing = {a.name for a in manager.alerts() if a.firing}
    assert firing == {
        "CircuitBreakerOpen",
        "SyncStale",
        "HealthFailing",
        "IntegrityFailure",
    }
    clock.advance(60)
    await manager.evaluate()
    assert "OutboxBacklog" in {a.name for a in manager.alerts() if a.firing}

    # The integrity alert lasts as long as the increase is inside its window.
    clock.advance(timedelta(minutes=15))
    await manager.evaluate()
    assert "IntegrityFailure" not in {a.name for a in manager.alerts()}


async def test_increase_counts_a_counter_that_appears_later() -> None:
    """A counter first seen after the first evaluation counts from zero."""
    rule = AlertRule("Inc", "errs_total", ">", 0, increase_over=300)
    manager, clock, _ = _manager((rule,))
    await manager.evaluate()
    manager.registry.counter("errs_total").inc(3)
    await manager.evaluate()
    (alert,) = manager.alerts()
    assert alert.value == 3
    clock.advance(300)
    await manager.evaluate()
    assert manager.alerts() == []


async def test_increase_counts_failures_before_the_first_evaluation() -> None:
    """Failures counted before the first evaluation (corruption found while the
    store loaded) fire the alert: the registry's counters start at zero."""
    manager, _, _ = _manager(builtin_rules())
    manager.registry.counter("leptos_sync_integrity_failures_total").inc(5)
    await manager.evaluate()
    assert [a.name for a in manager.alerts()] == ["IntegrityFailure"]


def test_builtin_rules_validate_thresholds() -> None:
    """Bad built-in thresholds raise ConfigError naming the argument."""
    with pytest.raises(ConfigError) as info:
        builtin_rules(outbox_backlog=-1)
    assert info.value.field == "outbox_backlog"
    with pytest.raises(ConfigError) as stale:
        builtin_rules(stale_after=0)
    assert stale.value.field == "stale_after"


async def test_python_api_alert_manager_snippet() -> None:
    """The python-api entry point reads as documented: add, count, list."""
    clock = ManualClock()
    alert_manager = AlertManager(clock=clock)
    alert_manager.add_alert(Alert("SyncFailed", severity=Severity.WARNING))
    alert_manager.increment_counter("sync_failures")
    assert alert_manager.counter("sync_failures") == 1
    (alert,) = alert_manager.alerts()
    assert alert.name == "SyncFailed" and alert.state is AlertState.FIRING
    assert alert.started_at is not None
    await alert_manager.flush()
    assert "SyncFailed" in repr(alert)
