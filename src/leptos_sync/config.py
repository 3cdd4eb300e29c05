"""``SyncConfig``: everything a sync manager can be told, with defaults.

The guide's two sections are ``reliability`` (:class:`ReliabilityConfig`) and
``monitoring`` (:class:`MonitoringConfig`); the remaining fields tune the sync
path itself. Every field has a default, so ``SyncConfig()`` is a working setup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from .durations import Duration, positive_ns
from .errors import ConfigError
from .monitoring.config import MonitoringConfig
from .reliability.config import ReliabilityConfig

__all__ = ["SyncConfig"]

TokenProvider = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class SyncConfig:
    """Configuration of an :class:`~leptos_sync.EndToEndSyncManager`.

    Attributes:
        reliability: retry policy, circuit breaker, health checks, integrity.
        monitoring: metrics, alerts, health reporting, uptime.
        token: sent in the hello for servers that authenticate clients.
        heartbeat_interval: how often an idle link is pinged.
        heartbeat_timeout: a link silent for this long is declared dead and
            reconnected; this bounds how long a dead link goes unnoticed.
        connect_timeout: how long one connection attempt may take.
        ack_timeout: push again what the server has not acknowledged by then.
        resync_interval: ask the server again for anything after the cursor this
            often, even when nothing seems missing (a cheap safety net).
        poll_interval: how often timeouts are checked.
        max_batch_ops: the most operations in one push frame.
        merge_waiting: local changes that wait to be sent (while the link is
            busy, or offline) are merged into one operation as they are pushed,
            each run of them one Loro update; the server stores, and every
            replica imports, one operation instead of many. Each change is still
            its own durable local transaction with its own metadata.
        compact_after: fold a collection's local log into a snapshot after this
            many updates, and later whenever the log holds as many updates as
            the snapshot covers (so compaction stays cheap as a log grows).
        status_interval: how often the replica reports its outbox depth and
            counters to the server (for its dashboard); ``None`` turns it off.
        token_provider: an async callable returning a fresh token; called when
            the server says the token expired (or refuses it), after which the
            manager says hello again with the new token and resumes.
        encryption: ``{collection: passphrase}`` for collections encrypted end
            to end (names must start with ``e2e:``; see :mod:`leptos_sync.e2e`).
    """

    reliability: ReliabilityConfig = field(default_factory=ReliabilityConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    token: str | None = None
    heartbeat_interval: Duration = timedelta(seconds=5)
    heartbeat_timeout: Duration = timedelta(seconds=15)
    connect_timeout: Duration = timedelta(seconds=10)
    ack_timeout: Duration = timedelta(seconds=30)
    resync_interval: Duration = timedelta(seconds=60)
    poll_interval: Duration = timedelta(seconds=1)
    max_batch_ops: int = 512
    merge_waiting: bool = True
    compact_after: int = 50_000
    status_interval: Duration | None = timedelta(seconds=2)
    token_provider: TokenProvider | None = field(default=None, repr=False)
    encryption: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.reliability, ReliabilityConfig):
            raise ConfigError(
                "reliability", f"expected ReliabilityConfig, got {self.reliability!r}"
            )
        if not isinstance(self.monitoring, MonitoringConfig):
            raise ConfigError(
                "monitoring", f"expected MonitoringConfig, got {self.monitoring!r}"
            )
        for name in (
            "heartbeat_interval",
            "heartbeat_timeout",
            "connect_timeout",
            "ack_timeout",
            "resync_interval",
            "poll_interval",
        ):
            positive_ns(getattr(self, name), name)
        if self.status_interval is not None:
            positive_ns(self.status_interval, "status_interval")
        if positive_ns(self.heartbeat_timeout, "heartbeat_timeout") <= positive_ns(
            self.heartbeat_interval, "heartbeat_interval"
        ):
            raise ConfigError(
                "heartbeat_timeout", "must be longer than heartbeat_interval"
            )
        for name in ("max_batch_ops", "compact_after"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(name, f"must be a positive integer, got {value!r}")
        if not isinstance(self.merge_waiting, bool):
            raise ConfigError("merge_waiting", "must be True or False")
        if self.token is not None and not isinstance(self.token, str):
            raise ConfigError("token", "must be a string")
        if self.token_provider is not None and not callable(self.token_provider):
            raise ConfigError("token_provider", "must be an async callable")
        for name, passphrase in self.encryption.items():
            if not name.startswith("e2e:"):
                raise ConfigError(
                    "encryption", f"collection {name!r} must start with 'e2e:'"
                )
            if not isinstance(passphrase, str) or not passphrase:
                raise ConfigError("encryption", f"the passphrase of {name!r} is empty")

    def __repr__(self) -> str:
        # Never print the token.
        token = "None" if self.token is None else "'***'"
        return (
            f"SyncConfig(reliability={self.reliability!r}, "
            f"monitoring={self.monitoring!r}, token={token})"
        )
