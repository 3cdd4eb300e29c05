"""Tests of MonitoringConfig and its enums."""

from __future__ import annotations

from datetime import timedelta

import pytest

from leptos_sync.errors import ConfigError
from leptos_sync.monitoring import (
    AlertRule,
    Alerts,
    HealthChecks,
    Metrics,
    MonitoringConfig,
)


def test_defaults_match_the_guide() -> None:
    """The default configuration is the guide's basic one."""
    config = MonitoringConfig()
    assert config.metrics is Metrics.Basic
    assert config.alerts is Alerts.Basic
    assert config.health_checks is HealthChecks.Basic
    assert config.uptime_tracking is False
    assert config.evaluation_interval_ns == 15 * 10**9
    assert config.rules == ()


def test_guide_configuration_reads_as_written() -> None:
    """The guide's MonitoringConfig literal works with keyword arguments."""
    config = MonitoringConfig(
        metrics=Metrics.Basic,
        alerts=Alerts.Basic,
        health_checks=HealthChecks.Basic,
        uptime_tracking=False,
    )
    assert config == MonitoringConfig()


def test_enum_values_and_names_are_accepted_as_text() -> None:
    """Values read from a file ("advanced", "Advanced") become enum members."""
    config = MonitoringConfig(
        metrics="advanced",  # type: ignore[arg-type]
        alerts="Advanced",  # type: ignore[arg-type]
        health_checks="ADVANCED",  # type: ignore[arg-type]
    )
    assert config.metrics is Metrics.Advanced
    assert config.alerts is Alerts.Advanced
    assert config.health_checks is HealthChecks.Advanced


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"metrics": "detailed"}, "metrics"),
        ({"alerts": 3}, "alerts"),
        ({"health_checks": None}, "health_checks"),
        ({"uptime_tracking": "yes"}, "uptime_tracking"),
        ({"evaluation_interval": 0}, "evaluation_interval"),
        ({"evaluation_interval": "15s"}, "evaluation_interval"),
        ({"backlog_for": -1}, "backlog_for"),
        ({"stale_after": timedelta(0)}, "stale_after"),
        ({"outbox_backlog": -5}, "outbox_backlog"),
        ({"outbox_backlog": 1.5}, "outbox_backlog"),
        ({"rules": (AlertRule("R", "m"),)}, "rules"),
        ({"alerts": Alerts.Advanced, "rules": ("R",)}, "rules"),
    ],
)
def test_invalid_values_name_the_field(
    kwargs: dict[str, object], field_name: str
) -> None:
    """Each invalid setting raises ConfigError naming its field."""
    with pytest.raises(ConfigError) as info:
        MonitoringConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field_name


def test_duplicate_rule_names_raise() -> None:
    """Two user rules with one name raise ConfigError naming rules."""
    rules = (AlertRule("R", "a"), AlertRule("R", "b"))
    with pytest.raises(ConfigError) as info:
        MonitoringConfig(alerts=Alerts.Advanced, rules=rules)
    assert info.value.field == "rules"


def test_advanced_config_keeps_rules_as_tuple() -> None:
    """Rules given as a list are stored as an immutable tuple."""
    rules = [AlertRule("R", "m")]
    config = MonitoringConfig(alerts=Alerts.Advanced, rules=rules)  # type: ignore[arg-type]
    assert config.rules == (rules[0],)


def test_to_json_is_plain_data() -> None:
    """to_json() gives the settings as strings, numbers and lists."""
    config = MonitoringConfig(metrics=Metrics.Advanced, evaluation_interval=0.5)
    assert config.to_json() == {
        "metrics": "advanced",
        "alerts": "basic",
        "health_checks": "basic",
        "uptime_tracking": False,
        "evaluation_interval_s": 0.5,
        "rules": [],
    }


def test_config_is_frozen() -> None:
    """A configuration cannot be changed after creation."""
    config = MonitoringConfig()
    with pytest.raises(AttributeError):
        config.uptime_tracking = True  # type: ignore[misc]
