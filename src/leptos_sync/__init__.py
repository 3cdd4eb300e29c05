"""leptos_sync: local-first data sync for Python.

Applications write to a local replica at memory speed and keep working offline;
every change syncs through a sync server to every other replica, and concurrent
edits merge with CRDTs (Loro). Around the sync path sit a reliability layer
(retries, circuit breaker, health checks, data integrity) and a monitoring layer
(metrics, alerts, health reporting, uptime).

>>> async with EndToEndSyncManager(Storage.memory(), Transport.in_memory()) as m:
...     m.collection("notes").insert("n1", {"title": "hello"})
"""

from __future__ import annotations

from . import fields
from .clock import HLCTimestamp, HybridLogicalClock, ManualClock, SystemClock
from .config import SyncConfig
from .crdt import Change, CollectionDoc, RecordMeta
from .errors import (
    ChecksumMismatchError,
    CircuitOpenError,
    ClosedError,
    ConfigError,
    ConflictingOperationError,
    ConnectionClosedError,
    FieldKindError,
    IntegrityError,
    InvalidIdError,
    InvalidValueError,
    MalformedMessageError,
    MessageTooLargeError,
    ProtocolError,
    RecordExistsError,
    RecordNotFoundError,
    ReliabilityError,
    RemoteError,
    RetryBudgetExhausted,
    SchemaVersionError,
    StorageError,
    SyncError,
    TransportError,
    UnknownMessageError,
    UnsupportedVersionError,
    UsageError,
)
from .hub import Hub
from .hubstore import HubStore
from .manager import EndToEndSyncManager, SyncStatus
from .monitoring import (
    Alerts,
    BasicMetrics,
    HealthChecks,
    Metrics,
    MetricsRegistry,
    MonitoringConfig,
    MonitoringManager,
)
from .reliability import (
    BreakerState,
    CircuitBreaker,
    CircuitBreakerConfig,
    DataIntegrityConfig,
    HealthCheckConfig,
    HealthChecker,
    IntegrityChecker,
    Jitter,
    ReliabilityConfig,
    RetryPolicy,
    retry,
    retrying,
)
from .replica import Replica
from .storage import Storage
from .transport import Transport

Collection = CollectionDoc

__version__ = "0.1.0"

__all__ = [
    "Alerts",
    "BasicMetrics",
    "BreakerState",
    "Change",
    "ChecksumMismatchError",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitOpenError",
    "ClosedError",
    "Collection",
    "CollectionDoc",
    "ConfigError",
    "ConflictingOperationError",
    "ConnectionClosedError",
    "DataIntegrityConfig",
    "EndToEndSyncManager",
    "FieldKindError",
    "HLCTimestamp",
    "HealthCheckConfig",
    "HealthChecker",
    "HealthChecks",
    "Hub",
    "HubStore",
    "HybridLogicalClock",
    "IntegrityChecker",
    "IntegrityError",
    "InvalidIdError",
    "InvalidValueError",
    "Jitter",
    "MalformedMessageError",
    "ManualClock",
    "MessageTooLargeError",
    "Metrics",
    "MetricsRegistry",
    "MonitoringConfig",
    "MonitoringManager",
    "ProtocolError",
    "RecordExistsError",
    "RecordMeta",
    "RecordNotFoundError",
    "ReliabilityConfig",
    "ReliabilityError",
    "RemoteError",
    "Replica",
    "RetryBudgetExhausted",
    "RetryPolicy",
    "SchemaVersionError",
    "Storage",
    "StorageError",
    "SyncConfig",
    "SyncError",
    "SyncStatus",
    "SystemClock",
    "Transport",
    "TransportError",
    "UnknownMessageError",
    "UnsupportedVersionError",
    "UsageError",
    "fields",
    "retry",
    "retrying",
]
