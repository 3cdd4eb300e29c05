"""The reliability section of the sync configuration: the guide's ``ReliabilityConfig``.

Every field has a default equal to the guide's basic configuration, and every
value is checked when the configuration is built, so a mistake surfaces as a
:class:`~leptos_sync.errors.ConfigError` naming the field rather than as odd
behaviour later. :meth:`ReliabilityConfig.advanced` is the guide's advanced
configuration, which here is as safe as the basic one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from ..errors import ConfigError
from ..monitoring.health import HealthChecks
from .backoff import RetryPolicy
from .breaker_config import CircuitBreakerConfig
from .integrity import DataIntegrityConfig

__all__ = ["ReliabilityConfig", "log_disabled_features"]

_log = logging.getLogger(__name__)
_ONE_SECOND_FIXED = RetryPolicy.Fixed(timedelta(seconds=1))


@dataclass(frozen=True)
class ReliabilityConfig:
    """How the sync manager retries, breaks circuits, checks health and data.

    Attributes:
        retry_policy: the waits between retries of connecting and sending.
        max_retries: retries after the first attempt; 0 disables retrying.
        circuit_breaker: ``CircuitBreakerConfig.Disabled`` or ``.Enabled(...)``.
        health_checks: ``HealthChecks.Basic`` or ``HealthChecks.Advanced``.
        data_integrity: ``DataIntegrityConfig.Basic``, ``.Advanced`` or custom.
    """

    retry_policy: RetryPolicy = _ONE_SECOND_FIXED
    max_retries: int = 3
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig.Disabled
    health_checks: HealthChecks = HealthChecks.Basic
    data_integrity: DataIntegrityConfig = DataIntegrityConfig.Basic

    def __post_init__(self) -> None:
        if not isinstance(self.retry_policy, RetryPolicy):
            raise ConfigError(
                "retry_policy", f"expected a RetryPolicy, got {self.retry_policy!r}"
            )
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise ConfigError("max_retries", f"expected an integer, got {retries!r}")
        if retries < 0:
            raise ConfigError("max_retries", f"must be 0 or more, got {retries}")
        if not isinstance(self.circuit_breaker, CircuitBreakerConfig):
            raise ConfigError(
                "circuit_breaker",
                f"expected a CircuitBreakerConfig, got {self.circuit_breaker!r}",
            )
        if not isinstance(self.health_checks, HealthChecks):
            raise ConfigError(
                "health_checks", f"expected HealthChecks, got {self.health_checks!r}"
            )
        if not isinstance(self.data_integrity, DataIntegrityConfig):
            raise ConfigError(
                "data_integrity",
                f"expected a DataIntegrityConfig, got {self.data_integrity!r}",
            )

    @classmethod
    def basic(cls) -> ReliabilityConfig:
        """The guide's basic configuration (the defaults)."""
        return cls()

    @classmethod
    def advanced(cls) -> ReliabilityConfig:
        """The guide's advanced configuration: backoff, breaker, all checks."""
        return cls(
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

    def disabled_features(self) -> list[str]:
        """The names of the features this configuration switches off."""
        off: list[str] = []
        if self.max_retries == 0:
            off.append("retries")
        if not self.circuit_breaker.enabled:
            off.append("circuit_breaker")
        if self.health_checks is not HealthChecks.Advanced:
            off.append("advanced_health_checks")
        integrity = self.data_integrity
        for name in (
            "checksum_validation",
            "timestamp_precision",
            "corruption_detection",
            "metadata_validation",
        ):
            if not getattr(integrity, name):
                off.append(name)
        return off


def log_disabled_features(
    config: ReliabilityConfig, logger: logging.Logger | None = None
) -> list[str]:
    """Log each feature the configuration switches off, once, at INFO.

    The guide advises logging disabled features so that an operator can tell a
    deliberate choice from a fault. Call it once when the manager starts.

    Returns:
        The names logged, as :meth:`ReliabilityConfig.disabled_features` gives.
    """
    logger = logger if logger is not None else _log
    off = config.disabled_features()
    for name in off:
        logger.info("reliability feature disabled: %s", name)
    return off
