"""Monitoring configuration: the guide's ``MonitoringConfig`` and its enums.

``Metrics.Basic`` gives counters, gauges and fixed-bucket histograms (the
:class:`~.metrics.BasicMetrics` facade has no labels). ``Metrics.Advanced``
adds a quantile sketch to every histogram, so snapshots and alert rules can use
p50/p90/p99 within 1 % relative error; labels and custom buckets are available
through the registry in both.

``Alerts.Basic`` runs the built-in rules (:func:`~.alerts.builtin_rules`) with
the thresholds below. ``Alerts.Advanced`` also runs the rules given in
``rules`` and accepts more at run time.

Every setting of the guide's "known issues" list is safe to turn on here:
uptime comes from the monotonic clock and alert counts are exact.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from ..durations import Duration, positive_ns
from ..errors import ConfigError
from .alerts import AlertRule
from .health import HealthChecks

__all__ = ["Alerts", "Metrics", "MonitoringConfig"]


class Metrics(enum.Enum):
    """How much metrics detail to keep: the guide's ``Metrics::Basic`` etc."""

    Basic = "basic"
    Advanced = "advanced"


class Alerts(enum.Enum):
    """Which alert rules run: built-in only, or user rules as well."""

    Basic = "basic"
    Advanced = "advanced"


_E = TypeVar("_E", bound=enum.Enum)


def _enum(kind: type[_E], value: object, name: str) -> _E:
    # Accept the member, its value or its name ("advanced", "Advanced"), so a
    # configuration read from a file works as well as one written in code.
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        for member in kind:
            if value.lower() in (member.name.lower(), str(member.value).lower()):
                return member
    choices = ", ".join(f"{kind.__name__}.{m.name}" for m in kind)
    raise ConfigError(name, f"expected one of {choices}, got {value!r}")


@dataclass(frozen=True)
class MonitoringConfig:
    """What the monitoring layer collects, checks and alerts on.

    Attributes:
        metrics: ``Metrics.Basic`` or ``Metrics.Advanced``.
        alerts: ``Alerts.Basic`` or ``Alerts.Advanced``.
        health_checks: which health checks the reliability layer runs.
        uptime_tracking: report uptime (monotonic) in health and metrics.
        evaluation_interval: how often alert rules are evaluated.
        rules: user alert rules; ``Alerts.Advanced`` only.
        outbox_backlog: the OutboxBacklog threshold, in operations.
        backlog_for: how long the backlog must last before it fires.
        stale_after: how long without a sync before SyncStale fires.
    """

    metrics: Metrics = Metrics.Basic
    alerts: Alerts = Alerts.Basic
    health_checks: HealthChecks = HealthChecks.Basic
    uptime_tracking: bool = False
    evaluation_interval: Duration = timedelta(seconds=15)
    rules: tuple[AlertRule, ...] = field(default_factory=tuple)
    outbox_backlog: int = 1000
    backlog_for: Duration = timedelta(seconds=60)
    stale_after: Duration = timedelta(seconds=300)

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", _enum(Metrics, self.metrics, "metrics"))
        object.__setattr__(self, "alerts", _enum(Alerts, self.alerts, "alerts"))
        object.__setattr__(
            self,
            "health_checks",
            _enum(HealthChecks, self.health_checks, "health_checks"),
        )
        if not isinstance(self.uptime_tracking, bool):
            raise ConfigError("uptime_tracking", "expected True or False")
        positive_ns(self.evaluation_interval, "evaluation_interval")
        positive_ns(self.backlog_for, "backlog_for", allow_zero=True)
        positive_ns(self.stale_after, "stale_after")
        if isinstance(self.outbox_backlog, bool) or not isinstance(
            self.outbox_backlog, int
        ):
            raise ConfigError("outbox_backlog", "expected an integer")
        if self.outbox_backlog < 0:
            raise ConfigError("outbox_backlog", "must not be negative")

        rules = tuple(self.rules)
        if any(not isinstance(rule, AlertRule) for rule in rules):
            raise ConfigError("rules", "expected AlertRule values")
        if rules and self.alerts is not Alerts.Advanced:
            raise ConfigError("rules", "user alert rules need alerts=Alerts.Advanced")
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            raise ConfigError("rules", "alert rule names must be unique")
        object.__setattr__(self, "rules", rules)

    @property
    def evaluation_interval_ns(self) -> int:
        return positive_ns(self.evaluation_interval, "evaluation_interval")

    def to_json(self) -> dict[str, object]:
        """The settings as plain data, for a dashboard or ``status`` output."""
        return {
            "metrics": self.metrics.value,
            "alerts": self.alerts.value,
            "health_checks": self.health_checks.value,
            "uptime_tracking": self.uptime_tracking,
            "evaluation_interval_s": self.evaluation_interval_ns / 1e9,
            "rules": [rule.name for rule in self.rules],
        }
