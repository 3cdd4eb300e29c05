"""Tests for ReliabilityConfig and the guide's configurations and API snippets."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from leptos_sync.clock import ManualClock
from leptos_sync.errors import CircuitOpenError, ConfigError, IntegrityError
from leptos_sync.monitoring.health import HealthChecks
from leptos_sync.reliability import (
    BreakerState,
    CircuitBreaker,
    CircuitBreakerConfig,
    DataIntegrityConfig,
    HealthCheckConfig,
    HealthChecker,
    IntegrityChecker,
    ReliabilityConfig,
    RetryPolicy,
    log_disabled_features,
    retry,
)


def state(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read through a call so mypy does not narrow it."""
    return breaker.state


def test_guide_basic_configuration() -> None:
    """The guide's basic configuration constructs and equals the defaults."""
    config = ReliabilityConfig(
        retry_policy=RetryPolicy.Fixed(timedelta(seconds=1)),
        max_retries=3,
        circuit_breaker=CircuitBreakerConfig.Disabled,
        health_checks=HealthChecks.Basic,
        data_integrity=DataIntegrityConfig.Basic,
    )
    assert config == ReliabilityConfig() == ReliabilityConfig.basic()
    assert config.retry_policy.delay(0) == timedelta(seconds=1)
    assert not config.circuit_breaker.enabled


async def test_guide_advanced_configuration_behaves_as_documented(
    clock: ManualClock,
) -> None:
    """The guide's advanced configuration gives exact backoff and a working breaker."""
    config = ReliabilityConfig(
        retry_policy=RetryPolicy.Exponential(
            initial_delay=timedelta(milliseconds=100),
            max_delay=timedelta(seconds=5),
            multiplier=2.0,
        ),
        max_retries=5,
        circuit_breaker=CircuitBreakerConfig.Enabled(
            failure_threshold=5,
            recovery_timeout=timedelta(seconds=30),
            half_open_max_calls=3,
        ),
        health_checks=HealthChecks.Advanced,
        data_integrity=DataIntegrityConfig.Advanced,
    )
    assert config == ReliabilityConfig.advanced()
    millis = [
        config.retry_policy.delay(a) // timedelta(milliseconds=1) for a in range(6)
    ]
    assert millis == [100, 200, 400, 800, 1600, 3200]

    breaker = CircuitBreaker(config.circuit_breaker, clock=clock)

    async def down() -> None:
        raise OSError("peer down")

    for _ in range(5):
        with pytest.raises(OSError):
            await breaker.call(down)
    assert state(breaker) is BreakerState.OPEN
    clock.advance(30)
    assert state(breaker) is BreakerState.HALF_OPEN

    checker = HealthChecker(
        HealthCheckConfig.for_level(config.health_checks), clock=clock
    )
    assert checker.config.advanced_checks
    assert IntegrityChecker(config.data_integrity).config.metadata_validation


def test_guide_test_configuration_constructs() -> None:
    """The guide's millisecond-scale test configuration is valid."""
    config = ReliabilityConfig(
        retry_policy=RetryPolicy.Exponential(
            initial_delay=timedelta(milliseconds=1),
            max_delay=timedelta(milliseconds=10),
            multiplier=2.0,
        ),
        max_retries=3,
        circuit_breaker=CircuitBreakerConfig.Enabled(
            failure_threshold=2,
            recovery_timeout=timedelta(milliseconds=10),
            half_open_max_calls=1,
        ),
        health_checks=HealthChecks.Advanced,
        data_integrity=DataIntegrityConfig.Advanced,
    )
    assert [config.retry_policy.delay_ns(a) for a in range(5)] == [
        1_000_000,
        2_000_000,
        4_000_000,
        8_000_000,
        10_000_000,
    ]


async def test_python_api_retry_snippet(clock: ManualClock) -> None:
    """retry(operation, policy=, max_retries=, clock=) re-raises the last error."""
    calls = 0

    async def operation() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError(f"attempt {calls}")

    task = asyncio.ensure_future(
        retry(operation, policy=RetryPolicy.Fixed(1), max_retries=2, clock=clock)
    )
    await clock.advance_async(10)
    with pytest.raises(TimeoutError, match="attempt 3"):
        await task


async def test_python_api_breaker_snippet(clock: ManualClock) -> None:
    """breaker.call(fn, *args) passes arguments; a rejected call never calls fn."""
    breaker = CircuitBreaker(
        CircuitBreakerConfig.Enabled(failure_threshold=1), clock=clock
    )

    async def add(a: int, b: int) -> int:
        return a + b

    assert await breaker.call(add, 2, 3) == 5
    assert state(breaker) is BreakerState.CLOSED
    with pytest.raises(ValueError):
        await breaker.call(int, "not a number")
    with pytest.raises(CircuitOpenError):
        await breaker.call(add, 1, 1)
    assert breaker.statistics().calls == 2


async def test_python_api_health_and_integrity_snippets(clock: ManualClock) -> None:
    """HealthChecker gives uptime and an IETF report; IntegrityChecker checks CRCs."""
    checker = HealthChecker(HealthCheckConfig(), clock=clock)
    clock.advance(2)
    assert checker.uptime() == timedelta(seconds=2)
    report = await checker.report()
    assert report["status"] == "pass"

    integrity = IntegrityChecker(DataIntegrityConfig.Basic)
    crc = integrity.checksum(b"record")
    integrity.validate_data(b"record", crc)
    with pytest.raises(IntegrityError):
        integrity.validate_data(b"recorD", crc)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"retry_policy": timedelta(seconds=1)}, "retry_policy"),
        ({"circuit_breaker": None}, "circuit_breaker"),
        ({"health_checks": "basic"}, "health_checks"),
        ({"data_integrity": True}, "data_integrity"),
    ],
)
def test_invalid_reliability_config_names_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    """Each invalid ReliabilityConfig value raises ConfigError naming its field."""
    with pytest.raises(ConfigError) as caught:
        ReliabilityConfig(**overrides)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_log_disabled_features_logs_each_once_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every switched-off feature of the basic config is logged once at INFO."""
    logger = logging.getLogger("test.reliability.disabled")
    with caplog.at_level(logging.INFO, logger=logger.name):
        names = log_disabled_features(ReliabilityConfig(max_retries=0), logger)
    assert names == [
        "retries",
        "circuit_breaker",
        "advanced_health_checks",
        "metadata_validation",
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert messages == [f"reliability feature disabled: {n}" for n in names]
    assert {r.levelno for r in caplog.records if r.name == logger.name} == {
        logging.INFO
    }


def test_advanced_config_disables_nothing() -> None:
    """The advanced configuration has no disabled features to log."""
    assert ReliabilityConfig.advanced().disabled_features() == []
