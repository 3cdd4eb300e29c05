"""The reliability layer: retries, circuit breaking, health checks, integrity.

Each piece takes its clock, random source, logger and storage from its caller, so
it can be driven step by step in tests on a ``ManualClock``:

- :func:`retry` / :func:`retrying` with a :class:`RetryPolicy` (fixed or exact
  exponential backoff, optional :class:`Jitter`), a deadline and a shared
  :class:`RetryBudget`;
- :class:`CircuitBreaker`, configured by :class:`CircuitBreakerConfig`, usable
  from tasks and threads, with its state kept in a :class:`StateStore`;
- :class:`HealthChecker`, reporting in the IETF health+json format with uptime
  from the monotonic clock;
- :class:`IntegrityChecker` for CRC32C checksums and metadata validation;
- :class:`ReliabilityConfig`, the guide's configuration section.
"""

from __future__ import annotations

from .backoff import Jitter, RetryPolicy
from .breaker import CircuitBreaker
from .breaker_config import CircuitBreakerConfig
from .breaker_types import BreakerState, BreakerStatistics, BreakerTransition, Permit
from .budget import RetryBudget, RetryBudgetStatistics
from .config import ReliabilityConfig, log_disabled_features
from .health import HealthCheckConfig, HealthChecker, HealthCheckerStatistics
from .integrity import DataIntegrityConfig, IntegrityChecker, IntegrityStatistics
from .retry import (
    RetryEvent,
    RetryStatistics,
    StopReason,
    retry,
    retrying,
)
from .state_store import MemoryStateStore, StateStore

__all__ = [
    "BreakerState",
    "BreakerStatistics",
    "BreakerTransition",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "DataIntegrityConfig",
    "HealthCheckConfig",
    "HealthChecker",
    "HealthCheckerStatistics",
    "IntegrityChecker",
    "IntegrityStatistics",
    "Jitter",
    "MemoryStateStore",
    "Permit",
    "ReliabilityConfig",
    "RetryBudget",
    "RetryBudgetStatistics",
    "RetryEvent",
    "RetryPolicy",
    "RetryStatistics",
    "StateStore",
    "StopReason",
    "log_disabled_features",
    "retry",
    "retrying",
]
