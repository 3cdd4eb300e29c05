"""The sync path's built-in metrics, named by Prometheus conventions.

Counters are bumped once per frame or batch, never per record, and everything that
is a current value (outbox depth, cursors, breaker state) is read from the replica
when the registry is scraped, so instrumentation costs next to nothing on the hot
path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .monitoring.metrics import MetricsRegistry
from .reliability.breaker_types import BreakerState

if TYPE_CHECKING:
    from .manager import EndToEndSyncManager

__all__ = ["BREAKER_STATE_VALUES", "SyncInstruments"]

#: The value of ``leptos_sync_breaker_state`` for each breaker state.
BREAKER_STATE_VALUES = {
    BreakerState.CLOSED: 0,
    BreakerState.DISABLED: 0,
    BreakerState.OPEN: 1,
    BreakerState.FORCED_OPEN: 1,
    BreakerState.HALF_OPEN: 2,
}

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class SyncInstruments:
    """Metrics of one sync manager, registered in its registry."""

    def __init__(self, registry: MetricsRegistry, manager: EndToEndSyncManager) -> None:
        self.registry = registry
        r = registry
        self.ops_sent = r.counter(
            "leptos_sync_operations_sent_total", "Operations pushed to the server."
        )
        self.ops_acked = r.counter(
            "leptos_sync_operations_acknowledged_total",
            "Operations the server acknowledged as durably stored.",
        )
        self.ops_received = r.counter(
            "leptos_sync_operations_received_total",
            "Remote operations received and applied.",
        )
        self.batches_sent = r.counter(
            "leptos_sync_batches_sent_total", "Push frames sent."
        )
        self.bytes_sent = r.counter(
            "leptos_sync_sent_bytes_total", "Bytes of frames sent to the server."
        )
        self.bytes_received = r.counter(
            "leptos_sync_received_bytes_total", "Bytes of frames received."
        )
        self.retries = r.counter(
            "leptos_sync_retries_total", "Connection attempts retried after a failure."
        )
        self.connect_failures = r.counter(
            "leptos_sync_connect_failures_total", "Connection attempts that failed."
        )
        self.reconnects = r.counter(
            "leptos_sync_reconnects_total", "Connections re-established after a loss."
        )
        self.protocol_errors = r.counter(
            "leptos_sync_protocol_errors_total", "Invalid frames received."
        )
        self.server_errors = r.counter(
            "leptos_sync_server_errors_total",
            "Error messages received from the server.",
        )
        self.breaker_transitions = r.counter(
            "leptos_sync_breaker_transitions_total",
            "Circuit breaker state changes.",
            labelnames=("from_state", "to_state"),
        )
        self.connected = r.gauge(
            "leptos_sync_connected", "1 while connected to the server, else 0."
        )
        self.sync_latency = r.histogram(
            "leptos_sync_round_trip_seconds",
            "Time from pushing a batch to its acknowledgement.",
            buckets=LATENCY_BUCKETS,
        )

        replica = manager.replica
        r.gauge(
            "leptos_sync_outbox_depth", "Local operations not yet acknowledged."
        ).set_function(lambda: float(replica.outbox_depth()))
        r.gauge(
            "leptos_sync_local_operations", "Local operations made by this replica."
        ).set_function(lambda: float(replica.statistics().local_ops))
        r.gauge(
            "leptos_sync_local_operations_merged",
            "Local operations merged into a later one while they waited to be "
            "pushed (each pushed operation carries the rest).",
        ).set_function(lambda: float(replica.statistics().local_ops_merged))
        r.gauge(
            "leptos_sync_remote_timestamps_too_far_ahead",
            "Received timestamps not merged into this replica's clock for being "
            "more than a day ahead of it (a peer's clock is wrong).",
        ).set_function(lambda: float(replica.statistics().timestamps_too_far_ahead))
        r.gauge(
            "leptos_sync_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
        ).set_function(lambda: float(BREAKER_STATE_VALUES[manager.breaker.state]))
        r.gauge(
            "leptos_sync_seconds_since_last_sync",
            "Seconds since the server last acknowledged or delivered anything.",
        ).set_function(manager.seconds_since_last_sync)
        self.integrity_failures = r.counter(
            "leptos_sync_integrity_failures_total",
            "Integrity failures detected (checksums, undecodable data).",
        )
        self._manager = manager
        self._integrity_seen = 0
        self.refresh()

    def refresh(self) -> None:
        """Carry counts kept by the replica over to the registry's counters."""
        failures = self._manager.replica.statistics().integrity_failures
        if failures > self._integrity_seen:
            self.integrity_failures.inc(failures - self._integrity_seen)
            self._integrity_seen = failures

    def status_figures(self) -> dict[str, float]:
        """What the replica reports to the server for its dashboard."""
        replica = self._manager.replica
        stats = replica.statistics()
        return {
            "outbox_depth": float(stats.outbox_depth),
            "local_ops": float(stats.local_ops),
            "remote_ops": float(stats.remote_ops_applied),
            "breaker_state": float(BREAKER_STATE_VALUES[self._manager.breaker.state]),
            "integrity_failures": float(stats.integrity_failures),
        }
