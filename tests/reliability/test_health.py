"""Tests for the health checker: timeouts, uptime, result shapes, the loop."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from leptos_sync.clock import ManualClock
from leptos_sync.errors import ConfigError
from leptos_sync.monitoring.health import CheckResult, HealthChecks, HealthStatus
from leptos_sync.reliability import HealthCheckConfig, HealthChecker

S = 1_000_000_000


async def passing() -> bool:
    return True


async def drive(clock: ManualClock, seconds: float, coro: Any) -> tuple[Any, int]:
    """Run ``coro`` while the clock advances; return its result and end time."""
    origin = clock.monotonic_ns()
    ended: list[int] = []

    async def wrapped() -> Any:
        try:
            return await coro
        finally:
            ended.append(clock.monotonic_ns() - origin)

    task = asyncio.ensure_future(wrapped())
    await clock.advance_async(seconds)
    assert task.done(), "the health run did not finish"
    return task.result(), ended[0]


def test_python_api_snippet_constructs_the_guide_config() -> None:
    """The guide's HealthCheckConfig fields construct with their meaning."""
    config = HealthCheckConfig(
        uptime_tracking=False,
        basic_checks=True,
        advanced_checks=False,
        check_interval=timedelta(seconds=30),
    )
    assert config.check_interval == timedelta(seconds=30)
    assert config.interval_ns == 30 * S
    assert HealthCheckConfig() == HealthCheckConfig(check_interval=30)


async def test_hung_check_times_out_on_the_clock(clock: ManualClock) -> None:
    """A check hanging 10 s with a 0.5 s timeout is reported failed at 0.5 s."""
    checker = HealthChecker(HealthCheckConfig(uptime_tracking=False), clock=clock)

    async def hangs() -> bool:
        await clock.sleep(10)
        return True

    checker.add_check("transport", "connected", hangs, timeout=0.5)
    checker.add_check("storage", "responseTime", passing)

    report, ended = await drive(clock, 20, checker.run())
    assert ended == S // 2
    hung = report.check("transport", "connected")
    assert hung is not None
    assert (hung.status, hung.output) == (HealthStatus.FAIL, "timeout")
    storage = report.check("storage", "responseTime")
    assert storage is not None and storage.status is HealthStatus.PASS
    assert report.status is HealthStatus.FAIL and report.http_status == 503
    assert clock.sleepers() == 0
    assert checker.statistics().timeouts == 1


async def test_check_ignoring_cancellation_does_not_hang_the_report(
    clock: ManualClock,
) -> None:
    """A check that swallows its cancellation still yields a report at its timeout."""
    release = asyncio.Event()

    async def stubborn() -> bool:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue
        return True

    checker = HealthChecker(HealthCheckConfig(uptime_tracking=False), clock=clock)
    checker.add_check("peer", "ping", stubborn, timeout=1)
    report, ended = await drive(clock, 5, checker.run())
    assert ended == S
    result = report.check("peer", "ping")
    assert result is not None and result.output == "timeout"
    release.set()
    await asyncio.sleep(0)


async def test_checks_run_concurrently(clock: ManualClock) -> None:
    """Two checks of 1 s each finish together after 1 s, not 2 s."""
    checker = HealthChecker(HealthCheckConfig(uptime_tracking=False), clock=clock)

    async def one_second() -> float:
        await clock.sleep(1)
        return 1.0

    checker.add_check("a", "latency", one_second, observed_unit="s")
    checker.add_check("b", "latency", one_second, observed_unit="s")
    report, ended = await drive(clock, 10, checker.run())
    assert ended == S
    assert [c.observed_value for c in report.checks] == [1.0, 1.0]
    assert report.to_json()["checks"]["a:latency"][0]["observedUnit"] == "s"


@pytest.mark.parametrize("jump", [20_000_000, -3600])
async def test_uptime_follows_the_monotonic_clock_only(
    clock: ManualClock, jump: int
) -> None:
    """Uptime is exactly 1 s after 1 s of monotonic time, whatever the wall does."""
    checker = HealthChecker(clock=clock)
    assert checker.uptime() == timedelta(0)
    clock.jump_wall(jump)
    clock.advance(1)
    clock.jump_wall(jump)
    assert checker.uptime() == timedelta(seconds=1)
    assert checker.uptime_ns() == S

    body = await checker.report()
    uptime = body["checks"]["uptime:uptime"][0]
    assert uptime["observedValue"] == 1.0
    assert uptime["observedUnit"] == "s"
    assert uptime["componentType"] == "system"


def test_uptime_is_never_negative() -> None:
    """Uptime read on a clock that reports an earlier reading is clamped to zero."""

    class Backwards(ManualClock):
        readings = iter([100 * S, 50 * S])

        def monotonic_ns(self) -> int:
            return next(self.readings)

    checker = HealthChecker(clock=Backwards())
    assert checker.uptime() == timedelta(0)


async def test_report_is_ietf_health_json(clock: ManualClock) -> None:
    """report() returns a health+json body with status, checks and times."""
    clock.set_wall(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    checker = HealthChecker(clock=clock, service_id="replica-1", version="1")
    checker.add_check("storage", "responseTime", passing, component_type="datastore")
    body = await checker.report()
    assert body["status"] == "pass"
    assert body["serviceId"] == "replica-1"
    assert body["version"] == "1"
    assert body["checks"]["storage:responseTime"] == [
        {
            "status": "pass",
            "componentType": "datastore",
            "time": "2025-01-02T03:04:05+00:00",
        }
    ]
    assert list(body["checks"]) == ["uptime:uptime", "storage:responseTime"]


async def test_return_shapes_become_results(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Booleans, None, statuses, values, results and errors map as documented."""
    checker = HealthChecker(HealthCheckConfig(uptime_tracking=False), clock=clock)

    async def warns() -> HealthStatus:
        return HealthStatus.WARN

    async def nothing() -> None:
        return None

    async def backlog() -> int:
        return 42

    async def broken() -> bool:
        raise OSError("disk gone")

    async def full() -> CheckResult:
        return CheckResult("custom", "thing", HealthStatus.PASS, output="fine")

    def sync_false() -> bool:
        return False

    checker.add_check("w", "m", warns)
    checker.add_check("n", "m", nothing)
    checker.add_check("outbox", "depth", backlog, observed_unit="operations")
    checker.add_check("disk", "m", broken)
    checker.add_check("custom", "thing", full)
    checker.add_check("s", "m", sync_false)
    with caplog.at_level(logging.WARNING, logger="leptos_sync.reliability.health"):
        report = await checker.run()

    by_key = {c.key: c for c in report.checks}
    assert by_key["w:m"].status is HealthStatus.WARN
    assert by_key["n:m"].status is HealthStatus.PASS
    assert (by_key["outbox:depth"].observed_value, by_key["outbox:depth"].status) == (
        42,
        HealthStatus.PASS,
    )
    assert by_key["disk:m"].status is HealthStatus.FAIL
    assert by_key["disk:m"].output == "OSError: disk gone"
    assert by_key["custom:thing"].output == "fine"
    assert by_key["custom:thing"].time is not None
    assert by_key["s:m"].status is HealthStatus.FAIL
    assert "disk:m failed" in caplog.text
    assert checker.statistics().failures == 2


async def test_levels_select_registered_checks(clock: ManualClock) -> None:
    """Basic runs basic checks; HealthChecks.Advanced also runs advanced ones."""
    basic = HealthChecker(HealthChecks.Basic, clock=clock)
    advanced = HealthChecker(HealthChecks.Advanced, clock=clock)
    for checker in (basic, advanced):
        checker.add_check("storage", "ok", passing)
        checker.add_check("outbox", "depth", passing, advanced=True)

    basic_keys = [c.key for c in (await basic.run()).checks]
    advanced_keys = [c.key for c in (await advanced.run()).checks]
    assert basic_keys == ["uptime:uptime", "storage:ok"]
    assert advanced_keys == ["uptime:uptime", "storage:ok", "outbox:depth"]

    quiet = HealthChecker(
        HealthCheckConfig(uptime_tracking=False, basic_checks=False), clock=clock
    )
    quiet.add_check("storage", "ok", passing)
    assert (await quiet.run()).checks == ()


async def test_periodic_loop_keeps_the_latest_report(clock: ManualClock) -> None:
    """start() runs the checks at 0, 30 and 60 s on the clock; stop() ends it."""
    checker = HealthChecker(clock=clock)
    runs: list[int] = []
    origin = clock.monotonic_ns()

    async def counted() -> bool:
        runs.append(clock.monotonic_ns() - origin)
        return True

    checker.add_check("storage", "ok", counted)
    assert checker.latest() is None
    checker.start()
    await clock.advance_async(75)
    assert runs == [0, 30 * S, 60 * S]
    latest = checker.latest()
    assert latest is not None and latest.status is HealthStatus.PASS
    await checker.stop()
    await clock.advance_async(60)
    assert len(runs) == 3
    assert clock.sleepers() == 0


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: HealthCheckConfig(check_interval=0), "check_interval"),
        (lambda: HealthCheckConfig(check_timeout=-1), "check_timeout"),
        (lambda: HealthCheckConfig(uptime_tracking="yes"), "uptime_tracking"),  # type: ignore[arg-type]
        (lambda: HealthChecker(config="basic"), "config"),  # type: ignore[arg-type]
        (
            lambda: HealthChecker().add_check("a", "b", passing, timeout=0),
            "timeout",
        ),
        (lambda: HealthChecker().add_check("", "b", passing), "component"),
    ],
)
def test_invalid_health_settings_name_the_field(build: Any, field: str) -> None:
    """Each invalid health setting raises ConfigError naming its field."""
    with pytest.raises(ConfigError) as caught:
        build()
    assert caught.value.field == field
