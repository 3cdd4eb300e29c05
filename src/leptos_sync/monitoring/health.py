"""Health results in the IETF health-check response format.

The format (draft-inadarei-api-health-check, media type ``application/health+json``)
is a JSON object with an overall ``status`` of ``pass``, ``warn`` or ``fail`` and a
``checks`` object keyed ``component:measurement``, each holding a list of results
with ``status``, ``observedValue``, ``observedUnit``, ``output`` and ``time``.

This module holds only the data types and their rendering; the reliability layer's
``HealthChecker`` decides which checks run and how long each may take.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "HEALTH_MEDIA_TYPE",
    "CheckResult",
    "HealthChecks",
    "HealthReport",
    "HealthStatus",
]

HEALTH_MEDIA_TYPE = "application/health+json"


class HealthChecks(enum.Enum):
    """Which health checks run: the guide's ``HealthChecks::Basic`` / ``::Advanced``.

    Basic checks storage and transport. Advanced adds outbox backlog, the age of the
    last successful sync, circuit breaker state, integrity scan, event-loop lag and
    uptime.
    """

    Basic = "basic"
    Advanced = "advanced"


class HealthStatus(enum.Enum):
    """Overall or per-check status; ``FAIL`` is worse than ``WARN`` than ``PASS``."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @staticmethod
    def worst(statuses: list[HealthStatus]) -> HealthStatus:
        """The most severe status of the list, ``PASS`` for an empty list."""
        return max(statuses, key=lambda s: s.severity, default=HealthStatus.PASS)

    @property
    def http_status(self) -> int:
        """200 for pass and warn, 503 for fail, as the format prescribes."""
        return 503 if self is HealthStatus.FAIL else 200


_SEVERITY = {HealthStatus.PASS: 0, HealthStatus.WARN: 1, HealthStatus.FAIL: 2}


@dataclass(frozen=True)
class CheckResult:
    """One measurement of one component.

    Attributes:
        component: what was checked, e.g. ``"storage"`` or ``"transport"``.
        measurement: what was measured, e.g. ``"responseTime"`` or ``"uptime"``.
        status: the verdict.
        observed_value: the measured value, if any.
        observed_unit: its unit (``"s"``, ``"ms"``, ``"operations"``...).
        output: a human-readable reason, required when not passing.
        time: when the measurement was taken (wall clock, for display).
    """

    component: str
    measurement: str
    status: HealthStatus
    observed_value: Any = None
    observed_unit: str | None = None
    output: str | None = None
    time: datetime | None = None
    component_type: str | None = None

    @property
    def key(self) -> str:
        return f"{self.component}:{self.measurement}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status.value}
        if self.component_type is not None:
            out["componentType"] = self.component_type
        if self.observed_value is not None:
            out["observedValue"] = self.observed_value
        if self.observed_unit is not None:
            out["observedUnit"] = self.observed_unit
        if self.output:
            out["output"] = self.output
        if self.time is not None:
            out["time"] = self.time.astimezone(UTC).isoformat()
        return out


@dataclass(frozen=True)
class HealthReport:
    """A whole health response: the overall status and every check result."""

    checks: tuple[CheckResult, ...]
    service_id: str | None = None
    description: str | None = None
    version: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def status(self) -> HealthStatus:
        return HealthStatus.worst([c.status for c in self.checks])

    @property
    def http_status(self) -> int:
        return self.status.http_status

    def check(self, component: str, measurement: str) -> CheckResult | None:
        """The first result for ``component:measurement``, if present."""
        key = f"{component}:{measurement}"
        return next((c for c in self.checks if c.key == key), None)

    def to_json(self) -> dict[str, Any]:
        """The response body as a JSON-ready dict."""
        out: dict[str, Any] = {"status": self.status.value}
        if self.version is not None:
            out["version"] = self.version
        if self.service_id is not None:
            out["serviceId"] = self.service_id
        if self.description is not None:
            out["description"] = self.description
        if self.notes:
            out["notes"] = list(self.notes)
        checks: dict[str, list[dict[str, Any]]] = {}
        for result in self.checks:
            checks.setdefault(result.key, []).append(result.to_json())
        out["checks"] = checks
        return out
