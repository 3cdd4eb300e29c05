"""The guide's snippets (shared/spec/python-api.md) run as written."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def store_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Storage.indexeddb() puts its file under a temporary $LEPTOS_SYNC_HOME."""
    monkeypatch.setenv("LEPTOS_SYNC_HOME", str(tmp_path))
    return tmp_path


async def test_first_example_with_the_in_memory_transport(store_home: Path) -> None:
    """The guide's first example runs with Transport.in_memory() for the URL,
    and the started manager syncs."""
    from datetime import timedelta

    from leptos_sync import (
        Alerts,
        CircuitBreakerConfig,
        DataIntegrityConfig,
        EndToEndSyncManager,
        HealthChecks,
        Metrics,
        MonitoringConfig,
        ReliabilityConfig,
        RetryPolicy,
        Storage,
        SyncConfig,
        Transport,
    )

    reliability_config = ReliabilityConfig(
        retry_policy=RetryPolicy.Fixed(timedelta(seconds=1)),
        max_retries=3,
        circuit_breaker=CircuitBreakerConfig.Disabled,
        health_checks=HealthChecks.Basic,
        data_integrity=DataIntegrityConfig.Basic,
    )
    monitoring_config = MonitoringConfig(
        metrics=Metrics.Basic,
        alerts=Alerts.Basic,
        health_checks=HealthChecks.Basic,
        uptime_tracking=False,
    )
    sync_config = SyncConfig(
        reliability=reliability_config, monitoring=monitoring_config
    )

    sync_manager = await EndToEndSyncManager.new(
        await Storage.indexeddb("app_db", 1),
        Transport.in_memory(),
        sync_config,
    )
    await sync_manager.start()

    # Beyond the snippet: it really syncs, and the store is where the guide says.
    sync_manager.collection("notes").insert("n1", {"title": "hello"})
    await sync_manager.wait_synced(5)
    assert (store_home / "app_db.sqlite3").exists()
    await sync_manager.stop()


async def test_first_example_as_written_with_a_websocket_url() -> None:
    """With the guide's WebSocket URL and no server, start() returns at once and
    the manager works offline."""
    from datetime import timedelta

    from leptos_sync import (
        Alerts,
        CircuitBreakerConfig,
        DataIntegrityConfig,
        EndToEndSyncManager,
        HealthChecks,
        Metrics,
        MonitoringConfig,
        ReliabilityConfig,
        RetryPolicy,
        Storage,
        SyncConfig,
        Transport,
    )

    reliability_config = ReliabilityConfig(
        retry_policy=RetryPolicy.Fixed(timedelta(seconds=1)),
        max_retries=3,
        circuit_breaker=CircuitBreakerConfig.Disabled,
        health_checks=HealthChecks.Basic,
        data_integrity=DataIntegrityConfig.Basic,
    )
    monitoring_config = MonitoringConfig(
        metrics=Metrics.Basic,
        alerts=Alerts.Basic,
        health_checks=HealthChecks.Basic,
        uptime_tracking=False,
    )
    sync_config = SyncConfig(
        reliability=reliability_config, monitoring=monitoring_config
    )

    sync_manager = await EndToEndSyncManager.new(
        await Storage.indexeddb("app_db", 1),
        Transport.websocket("ws://127.0.0.1:8765/ws"),
        sync_config,
    )
    await sync_manager.start()

    sync_manager.collection("notes").insert("n1", {"title": "offline"})
    assert sync_manager.status().outbox_depth == 1
    await sync_manager.stop()


async def test_testing_configuration_basic() -> None:
    """The guide's "Test with Basic Configuration" example runs as written."""
    from datetime import timedelta

    from leptos_sync import (
        CircuitBreakerConfig,
        DataIntegrityConfig,
        EndToEndSyncManager,
        HealthChecks,
        ReliabilityConfig,
        RetryPolicy,
        Storage,
        SyncConfig,
        Transport,
    )

    config = ReliabilityConfig(
        retry_policy=RetryPolicy.Fixed(timedelta(milliseconds=10)),
        max_retries=2,
        circuit_breaker=CircuitBreakerConfig.Disabled,
        health_checks=HealthChecks.Basic,
        data_integrity=DataIntegrityConfig.Basic,
    )

    # Test basic functionality
    sync_manager = await EndToEndSyncManager.new(
        Storage.memory(),
        Transport.in_memory(),
        SyncConfig(reliability=config),
    )

    # Test operations
    await sync_manager.start()

    await sync_manager.wait_synced(5)
    await sync_manager.stop()


async def test_testing_configuration_advanced() -> None:
    """The guide's "Test with Advanced Configuration" example runs as written,
    without the timing issues the guide expects."""
    from datetime import timedelta

    from leptos_sync import (
        CircuitBreakerConfig,
        DataIntegrityConfig,
        EndToEndSyncManager,
        HealthChecks,
        ReliabilityConfig,
        RetryPolicy,
        Storage,
        SyncConfig,
        Transport,
    )

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

    sync_manager = await EndToEndSyncManager.new(
        Storage.memory(),
        Transport.in_memory(),
        SyncConfig(reliability=config),
    )

    # Test operations with longer timeouts
    await asyncio.wait_for(sync_manager.start(), timeout=5)

    await sync_manager.wait_synced(5)
    report = await sync_manager.health()
    assert report is not None
    await sync_manager.stop()
