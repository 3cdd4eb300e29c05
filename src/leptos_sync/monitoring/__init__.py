"""The monitoring layer: metrics, Prometheus exposition, alerts and health.

The guide's names are here: :class:`MonitoringManager`, :class:`BasicMetrics`,
:class:`MonitoringConfig` with :class:`Metrics`, :class:`Alerts` and
:class:`HealthChecks`, and :class:`AlertManager`. The registry behind them,
:class:`MetricsRegistry`, is what the sync engine and server publish into.
"""

from __future__ import annotations

from .alerts import (
    Alert,
    AlertManager,
    AlertRule,
    AlertState,
    AlertStatistics,
    Severity,
    Silence,
    builtin_rules,
)
from .config import Alerts, Metrics, MonitoringConfig
from .exposition import PROMETHEUS_CONTENT_TYPE, RegistryCollector, generate_text
from .health import (
    HEALTH_MEDIA_TYPE,
    CheckResult,
    HealthChecks,
    HealthReport,
    HealthStatus,
)
from .manager import BasicMetrics, MonitoringManager
from .metrics import (
    DEFAULT_BUCKETS,
    Counter,
    Gauge,
    Histogram,
    MetricsRegistry,
    QuantileSketch,
)
from .otel import OpenTelemetryBridge
from .sinks import AlertSink, CallbackSink, LogSink, WebhookSink

__all__ = [
    "DEFAULT_BUCKETS",
    "HEALTH_MEDIA_TYPE",
    "PROMETHEUS_CONTENT_TYPE",
    "Alert",
    "AlertManager",
    "AlertRule",
    "AlertSink",
    "AlertState",
    "AlertStatistics",
    "Alerts",
    "BasicMetrics",
    "CallbackSink",
    "CheckResult",
    "Counter",
    "Gauge",
    "HealthChecks",
    "HealthReport",
    "HealthStatus",
    "Histogram",
    "LogSink",
    "Metrics",
    "MetricsRegistry",
    "MonitoringConfig",
    "MonitoringManager",
    "OpenTelemetryBridge",
    "QuantileSketch",
    "RegistryCollector",
    "Severity",
    "Silence",
    "WebhookSink",
    "builtin_rules",
    "generate_text",
]
