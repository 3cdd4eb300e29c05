"""``EndToEndSyncManager``: a replica kept in sync over a transport.

The manager drives a :class:`~leptos_sync.replica.Replica` (collections, store and
protocol session) over a :class:`~leptos_sync.transport.Transport`. Local writes go
to the replica and its store at once and never wait for the network; one
background task keeps a connection open and pumps frames both ways:

* connecting goes through the configured retry policy and ``max_retries``, and
  through the circuit breaker when it is enabled; an open breaker (or exhausted
  retries) leaves the manager **offline**: local writes go on, the outbox grows,
  health says ``warn``, and the connection is tried again later;
* a heartbeat pings an idle link, and a link silent for ``heartbeat_timeout`` is
  closed and reconnected, so a dead link is noticed within a bounded time;
* every frame in and out is counted in the manager's metrics registry.

Logging: INFO for connection lifecycle, DEBUG for frames; expected network
trouble is never logged above WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from .clock import Clock, SystemClock
from .config import SyncConfig
from .crdt import Change, CollectionDoc
from .durations import NS_PER_SECOND, ns_to_timedelta, to_ns
from .e2e import OpCipher
from .errors import (
    CircuitOpenError,
    ClosedError,
    ProtocolError,
    SyncError,
    TransportError,
    UsageError,
)
from .instruments import SyncInstruments
from .monitoring.health import CheckResult, HealthChecks, HealthReport, HealthStatus
from .monitoring.manager import MonitoringManager
from .monitoring.metrics import MetricsRegistry
from .protocol import Ping, Push, RemoteOp, Status, encode
from .reliability.breaker import CircuitBreaker
from .reliability.breaker_types import BreakerState, BreakerTransition
from .reliability.config import log_disabled_features
from .reliability.health import HealthCheckConfig, HealthChecker
from .replica import Replica
from .session import Acked, ApplyRemote, Effect, Live, Send, ServerError
from .storage import Storage
from .transport.base import Connection, Transport

__all__ = ["EndToEndSyncManager", "SyncStatus"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncStatus:
    """Where a manager stands, for applications and health checks.

    ``last_error`` is the most recent link or server error, kept after the link
    recovers (it tells why the last reconnect happened); ``online`` says whether
    the link is up now.
    """

    online: bool
    outbox_depth: int
    cursors: dict[str, int]
    live: tuple[str, ...]
    breaker: str
    last_error: str | None
    last_sync: datetime | None
    reconnects: int


class EndToEndSyncManager:
    """A local replica, synced through ``transport``, with reliability and monitoring.

    Build it with ``await EndToEndSyncManager.new(storage, transport, config)`` and
    call :meth:`start`, or use ``async with EndToEndSyncManager(...) as manager``.

    Args:
        storage: the local store (``Storage.memory()``, ``Storage.sqlite(...)``,
            ``await Storage.indexeddb(...)``).
        transport: how to reach the server.
        config: the configuration; ``SyncConfig()`` by default.
        clock: the time source for every timeout, backoff and timestamp.
        registry: a metrics registry to share; a new one by default.
    """

    def __init__(
        self,
        storage: Storage,
        transport: Transport,
        config: SyncConfig | None = None,
        *,
        clock: Clock | None = None,
        registry: MetricsRegistry | None = None,
    ) -> None:
        self.config = config if config is not None else SyncConfig()
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.transport = transport
        reliability = self.config.reliability
        integrity = reliability.data_integrity
        self.replica = Replica(
            storage,
            clock=self.clock,
            checksums=integrity.checksum_validation,
            token=self.config.token,
            compact_after=self.config.compact_after,
            max_batch_ops=self.config.max_batch_ops,
            merge_waiting=self.config.merge_waiting,
        )
        self.replica.validate_metadata = integrity.metadata_validation
        for name, passphrase in self.config.encryption.items():
            cipher = OpCipher.from_passphrase(passphrase, name)
            self.replica.encrypt_collection(name, cipher)
        self.replica.session.ack_timeout_ns = to_ns(self.config.ack_timeout)
        self.replica.session.pull_timeout_ns = to_ns(self.config.ack_timeout)
        self.replica.session.resync_interval_ns = to_ns(self.config.resync_interval)
        self.registry = registry if registry is not None else MetricsRegistry()
        self.monitoring = MonitoringManager(
            self.config.monitoring, clock=self.clock, registry=self.registry
        )
        self.breaker = CircuitBreaker(
            reliability.circuit_breaker,
            self.clock,
            name="sync-connect",
            state_store=storage,
            listeners=[self._on_breaker],
        )
        self.instruments = SyncInstruments(self.registry, self)
        self.health_checker = self._build_health_checker()
        log_disabled_features(reliability, logger)

        self._conn: Connection | None = None
        self._closing: set[asyncio.Future[None]] = set()
        self._wake_writer = asyncio.Event()
        self._synced = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._closed = False
        self._last_frame_ns = 0
        self._last_sync_wall: int | None = None
        self._last_sync_ns = self.clock.monotonic_ns()
        self._last_error: str | None = None
        self._server_said: str | None = None
        self._reconnects = 0
        self._connected_once = False
        self._listeners: list[Callable[[list[Change]], None]] = []
        self._op_listeners: list[Callable[[str, tuple[RemoteOp, ...]], None]] = []
        self._queues: list[asyncio.Queue[Change]] = []
        self._refreshing: asyncio.Task[None] | None = None
        self.replica.on_outgoing = self._wake_writer.set
        self.replica.on_local_op = self._on_local_op
        self.replica.on_effect = self._on_effect
        self._update_synced()

    @classmethod
    async def new(
        cls,
        storage: Storage,
        transport: Transport,
        config: SyncConfig | None = None,
        **options: Any,
    ) -> EndToEndSyncManager:
        """The guide's ``EndToEndSyncManager::new(storage, transport, config)``."""
        return cls(storage, transport, config, **options)

    # Lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start syncing in the background; returns at once."""
        if self._closed:
            raise ClosedError("the manager was stopped; create a new one")
        if self._running:
            return
        self._running = True
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"leptos_sync-{self.replica.replica_id:x}"
        )
        await self.monitoring.start()
        logger.info(
            "replica %x syncing with %s",
            self.replica.replica_id,
            self.transport.endpoint,
        )

    async def stop(self) -> None:
        """Stop syncing and close the store; unsent changes stay in the outbox."""
        if self._closed:
            return
        self._running = False
        self._closed = True
        self._stopped.set()
        if self._refreshing is not None:
            self._refreshing.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_conn()
        await asyncio.gather(*self._closing, return_exceptions=True)
        await self.monitoring.stop()
        self.replica.close()
        for queue in self._queues:
            queue.put_nowait(_STOP)
        logger.info("replica %x stopped", self.replica.replica_id)

    async def __aenter__(self) -> EndToEndSyncManager:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # Data --------------------------------------------------------------------

    def collection(self, name: str) -> CollectionDoc:
        """The collection ``name`` (created on first use, synced from then on)."""
        coll = self.replica.collection(name)
        self._update_synced()
        return coll

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Commit many changes to the store together (see :meth:`Replica.batch`).

        Each change stays its own transaction with its own metadata; each
        collection's changes in the block travel as one operation. Changes
        made by other tasks while the block awaits are not part of it: each is
        stored before its call returns (with what the batch wrote before it).
        """
        return self.replica.batch()

    def on_change(self, listener: Callable[[list[Change]], None]) -> Callable[[], None]:
        """Call ``listener`` with every batch of local and remote record changes."""
        self.replica.track_changes()
        self.replica.on_change = self._on_change
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def on_operations(
        self, listener: Callable[[str, tuple[RemoteOp, ...]], None]
    ) -> Callable[[], None]:
        """Call ``listener(collection, ops)`` with each batch of remote operations.

        A tap on the raw operation stream (replica, counter, timestamp and Loro
        update bytes), after the operations were applied and stored; for audit
        logs, bridges to other systems, or replaying edits in an editor's own
        document. Operations that arrive folded into a snapshot (a replica far
        behind a long log) are not itemised here.
        """
        self._op_listeners.append(listener)
        return lambda: self._op_listeners.remove(listener)

    async def changes(self) -> AsyncIterator[Change]:
        """Every record change, local and remote, as it happens (until stopped).

        The iteration ends when the manager stops (at once if it has stopped).
        """
        if self._closed:
            return
        self.replica.track_changes()
        self.replica.on_change = self._on_change
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self._queues.append(queue)
        try:
            while True:
                change = await queue.get()
                if change is _STOP:
                    return
                yield change
        finally:
            self._queues.remove(queue)

    async def wait_synced(self, timeout: float | timedelta | None = None) -> None:
        """Wait until every local change is acknowledged and every collection is live.

        Raises:
            TimeoutError: ``timeout`` (on the manager's clock) passed first.
            ClosedError: the manager stopped first (or had stopped).
            ConfigError: ``timeout`` is not a duration.
            UsageError: called inside a :meth:`batch` of the same task, whose
                changes are stored only when the block ends.
        """
        if timeout is not None:
            to_ns(timeout, "timeout")
        if self.replica.in_own_batch():
            raise UsageError(
                "wait_synced() inside manager.batch() cannot see the batch's "
                "changes, which are stored when the block ends; call it after"
            )
        if self._synced.is_set():
            return
        if self._closed:
            raise ClosedError("the manager was stopped; it can no longer sync")
        waits: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._synced.wait()),
            asyncio.ensure_future(self._stopped.wait()),
        }
        if timeout is not None:
            waits.add(asyncio.ensure_future(self.clock.sleep(timeout)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if self._synced.is_set():
            return
        depth = self.replica.outbox_depth()
        if self._stopped.is_set():
            raise ClosedError(
                f"the manager stopped before it was synced: outbox holds {depth}"
            )
        reason = f"; last error: {self._last_error}" if self._last_error else ""
        raise TimeoutError(f"not synced after {timeout}: outbox holds {depth}{reason}")

    # Status ------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self._conn is not None and self.replica.session.state.value == "ready"

    def status(self) -> SyncStatus:
        stats = self.replica.session.statistics()
        last_sync = None
        if self._last_sync_wall is not None:
            last_sync = datetime.fromtimestamp(self._last_sync_wall / 1e9, UTC)
        return SyncStatus(
            online=self.online,
            outbox_depth=stats.outbox_depth,
            cursors=stats.cursors,
            live=stats.live,
            breaker=self.breaker.state.value,
            last_error=self._last_error,
            last_sync=last_sync,
            reconnects=self._reconnects,
        )

    def seconds_since_last_sync(self) -> float:
        """Monotonic seconds since the server last acknowledged or delivered
        anything (since the manager was created, if it never has)."""
        return max(0.0, (self.clock.monotonic_ns() - self._last_sync_ns) / 1e9)

    def _synced_now(self) -> None:
        self._last_sync_wall = self.clock.wall_ns()
        self._last_sync_ns = self.clock.monotonic_ns()

    def metrics_text(self) -> str:
        """The manager's metrics in the Prometheus text format."""
        return self.registry.text()

    async def health(self) -> HealthReport:
        """Run the configured health checks (each with its timeout)."""
        report = await self.health_checker.run()
        return self.monitoring.health(
            report.checks, service_id=f"{self.replica.replica_id:x}"
        )

    def statistics(self) -> dict[str, Any]:
        return {
            "replica": self.replica.statistics(),
            "breaker": self.breaker.statistics(),
            "status": self.status(),
        }

    # The connection loop -----------------------------------------------------

    async def _run(self) -> None:
        policy = self.config.reliability.retry_policy
        max_retries = self.config.reliability.max_retries
        failures = 0
        while self._running:
            try:
                conn = await self._connect()
            except CircuitOpenError as exc:
                # Offline until the breaker lets a trial through.
                self._last_error = str(exc)
                await self.clock.sleep(ns_to_timedelta(self._breaker_wait_ns()))
                continue
            except (TransportError, TimeoutError, OSError) as exc:
                self._last_error = f"connect: {exc}"
                self.instruments.connect_failures.inc()
                delay = policy.delay_ns(min(failures, max_retries))
                failures += 1
                if failures > max_retries:
                    # A round of retries is spent: stay offline for the longest
                    # delay of the policy, then start a new round.
                    logger.info(
                        "replica %x offline after %d failed attempts: %s",
                        self.replica.replica_id,
                        failures,
                        exc,
                    )
                    failures = 0
                    delay = policy.delay_ns(max_retries)
                else:
                    self.instruments.retries.inc()
                await self.clock.sleep(ns_to_timedelta(delay))
                continue
            failures = 0
            await self._serve(conn)
            if self._running:
                self._reconnects += 1
                self.instruments.reconnects.inc()
                # A short pause so a server that drops every connection at once
                # is not hammered.
                await self.clock.sleep(ns_to_timedelta(policy.delay_ns(0)))

    def _breaker_wait_ns(self) -> int:
        # Sleep until the open window ends (the breaker then admits a trial).
        stats = self.breaker.statistics()
        recovery = getattr(self.config.reliability.circuit_breaker, "recovery_ns", 0)
        if stats.opened_at_ns is not None and recovery:
            remaining = stats.opened_at_ns + recovery - self.clock.monotonic_ns()
            if remaining > 0:
                return int(remaining)
        return NS_PER_SECOND // 10

    async def _connect(self) -> Connection:
        async def attempt() -> Connection:
            conn: Connection = await _with_timeout(
                self.clock, self.transport.connect(), to_ns(self.config.connect_timeout)
            )
            return conn

        if self.breaker.state is BreakerState.DISABLED:
            return await attempt()
        conn: Connection = await self.breaker.call(attempt)
        return conn

    async def _serve(self, conn: Connection) -> None:
        self._server_said = None
        self._conn = conn
        self._last_frame_ns = self.clock.monotonic_ns()
        self.instruments.connected.set(1)
        self.replica.connected()
        # With no collection and an empty outbox there is no Live or Acked
        # effect to wait for: being connected is being in sync.
        self._update_synced()
        logger.info(
            "replica %x connected to %s",
            self.replica.replica_id,
            self.transport.endpoint,
        )
        tasks = [
            asyncio.ensure_future(self._reader(conn)),
            asyncio.ensure_future(self._writer(conn)),
            asyncio.ensure_future(self._ticker(conn)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, asyncio.CancelledError):
                    self._note_link_error(exc)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._conn = None
            self.instruments.connected.set(0)
            # Close in the background: on a dead link the close handshake can
            # only time out (10 s in websockets), and reconnecting must not wait
            # for that, or a dead link would take that long to replace.
            closing = asyncio.ensure_future(_close_quietly(conn))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            if not self.replica._closed:
                self.replica.disconnected()
            self._update_synced()

    def _note_link_error(self, exc: BaseException) -> None:
        if self._server_said is not None and isinstance(exc, TransportError):
            # The server explained why it closed the link: that is the news.
            self._last_error = f"server: {self._server_said}"
        else:
            self._last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ProtocolError):
            self.instruments.protocol_errors.inc()
            logger.warning(
                "replica %x dropped a bad frame: %s", self.replica.replica_id, exc
            )
        elif isinstance(exc, SyncError | OSError):
            logger.info("replica %x link lost: %s", self.replica.replica_id, exc)
        else:
            logger.error(
                "replica %x: unexpected error in the link",
                self.replica.replica_id,
                exc_info=exc,
            )

    async def _reader(self, conn: Connection) -> None:
        while True:
            frame = await conn.recv()
            self._last_frame_ns = self.clock.monotonic_ns()
            self.instruments.bytes_received.inc(len(frame))
            self.replica.receive(frame)
            if self._synced.is_set():
                # Any answer from the server (a pong to the heartbeat, a resync)
                # while nothing is outstanding confirms that this replica is up
                # to date: an idle replica is in sync, not stale.
                self._synced_now()
            # The writer also writes behind what was received (one transaction
            # for every frame that arrived meanwhile).
            self._wake_writer.set()
            error = self.replica.last_error
            if error is not None:
                self.replica.last_error = None
                self._last_error = str(error)
                self._server_said = str(error)

    async def _writer(self, conn: Connection) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            for frame in self.replica.take_outgoing():
                self.instruments.bytes_sent.inc(len(frame))
                await conn.send(frame)

    async def _ticker(self, conn: Connection) -> None:
        interval = to_ns(self.config.poll_interval)
        heartbeat = to_ns(self.config.heartbeat_interval)
        timeout = to_ns(self.config.heartbeat_timeout)
        status_every = (
            None
            if self.config.status_interval is None
            else to_ns(self.config.status_interval)
        )
        last_ping = last_status = self.clock.monotonic_ns()
        nonce = 0
        while True:
            await self.clock.sleep(ns_to_timedelta(interval))
            now = self.clock.monotonic_ns()
            silent = now - self._last_frame_ns
            if silent >= timeout:
                raise TransportError(
                    f"no frame from the server for {silent / 1e9:.1f} s"
                )
            self.replica.poll()
            self.instruments.refresh()
            if silent >= heartbeat and now - last_ping >= heartbeat:
                nonce += 1
                last_ping = now
                self.replica.outgoing.append(
                    encode(Ping(nonce), checksum=self.replica.checksums)
                )
                self._wake_writer.set()
            if status_every is not None and now - last_status >= status_every:
                last_status = now
                figures = self.instruments.status_figures()
                self.replica.outgoing.append(
                    encode(Status(figures), checksum=self.replica.checksums)
                )
                self._wake_writer.set()

    async def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    # Hooks -------------------------------------------------------------------

    def _on_effect(self, effect: Effect) -> None:
        inst = self.instruments
        if isinstance(effect, Send):
            if isinstance(effect.message, Push):
                inst.ops_sent.inc(len(effect.message.ops))
                inst.batches_sent.inc()
        elif isinstance(effect, Acked):
            for round_trip in effect.round_trips_ns:
                inst.sync_latency.observe(round_trip / 1e9)
            if effect.counters:
                inst.ops_acked.inc(len(effect.counters))
                self._synced_now()
            self._update_synced()
        elif isinstance(effect, ApplyRemote):
            inst.ops_received.inc(len(effect.ops))
            self._synced_now()
            for op_listener in tuple(self._op_listeners) if effect.ops else ():
                try:
                    op_listener(effect.collection, effect.ops)
                except Exception:
                    logger.exception("operation listener failed")
        elif isinstance(effect, Live):
            self._synced_now()
            self._update_synced()
        elif isinstance(effect, ServerError):
            inst.server_errors.inc()
            if effect.error.code in ("token-expired", "unauthorized"):
                self._refresh_token(effect.fatal)

    def _refresh_token(self, fatal: bool) -> None:
        # One refresh at a time; errors answering frames sent with the old
        # token keep arriving until the new hello is answered, and are ignored.
        provider = self.config.token_provider
        if provider is None or not self._running:
            return
        if self._refreshing is not None and not self._refreshing.done():
            return
        if not fatal and self.replica.session.state.value == "handshaking":
            return  # a hello with a fresh token is on its way

        async def refresh() -> None:
            try:
                token = await provider()
            except Exception as exc:
                self._last_error = f"token provider failed: {type(exc).__name__}"
                logger.warning(
                    "replica %x: the token provider failed (%s)",
                    self.replica.replica_id,
                    type(exc).__name__,
                )
                return
            if self.replica._closed:
                return
            logger.info("replica %x: token refreshed", self.replica.replica_id)
            # On an open link, hello again; otherwise the next connection
            # introduces itself with the new token.
            self.replica.reauthenticate(token)
            self._wake_writer.set()

        self._refreshing = asyncio.ensure_future(refresh())

    def _on_local_op(self) -> None:
        # A local change: not synced until it is acknowledged; the writer sends.
        self._synced.clear()
        self._wake_writer.set()

    def _on_change(self, changes: list[Change]) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(changes)
            except Exception:
                logger.exception("change listener failed")
        for queue in self._queues:
            for change in changes:
                queue.put_nowait(change)

    def _on_breaker(self, transition: BreakerTransition) -> None:
        self.instruments.breaker_transitions.labels(
            transition.old.value, transition.new.value
        ).inc()

    def _update_synced(self) -> None:
        session = self.replica.session
        synced = session.outbox_depth() == 0 and all(
            session.is_live(name) for name in session.collections()
        )
        if synced and self._conn is not None:
            self._synced.set()
        else:
            self._synced.clear()

    # Health ------------------------------------------------------------------

    def _build_health_checker(self) -> HealthChecker:
        reliability = self.config.reliability.health_checks
        advanced = (
            reliability is HealthChecks.Advanced
            or self.config.monitoring.health_checks is HealthChecks.Advanced
        )
        config = HealthCheckConfig(
            uptime_tracking=self.config.monitoring.uptime_tracking,
            basic_checks=True,
            advanced_checks=advanced,
        )
        checker = HealthChecker(config, self.clock, service_id="leptos-sync-replica")
        checker.add_check(
            "storage", "responseTime", self._check_storage, observed_unit="ms"
        )
        checker.add_check("transport", "connected", self._check_transport)
        checker.add_check(
            "outbox",
            "depth",
            self._check_outbox,
            advanced=True,
            observed_unit="operations",
        )
        checker.add_check(
            "sync", "age", self._check_sync_age, advanced=True, observed_unit="s"
        )
        checker.add_check("breaker", "state", self._check_breaker, advanced=True)
        checker.add_check("integrity", "failures", self._check_integrity, advanced=True)
        checker.add_check(
            "eventLoop", "lag", self._check_loop_lag, advanced=True, observed_unit="ms"
        )
        return checker

    async def _check_storage(self) -> CheckResult:
        start = self.clock.monotonic_ns()
        depth = self.replica.storage.outbox_depth()
        elapsed_ms = (self.clock.monotonic_ns() - start) / 1e6
        return CheckResult(
            "storage",
            "responseTime",
            HealthStatus.PASS,
            observed_value=round(elapsed_ms, 3),
            observed_unit="ms",
            output=f"{self.replica.storage.describe()}, outbox {depth}",
        )

    async def _check_transport(self) -> CheckResult:
        if self.online:
            status, output = (
                HealthStatus.PASS,
                f"connected to {self.transport.endpoint}",
            )
        elif self.breaker.state in (BreakerState.OPEN, BreakerState.FORCED_OPEN):
            status, output = HealthStatus.WARN, "offline: circuit breaker open"
        else:
            status = HealthStatus.WARN
            output = f"offline: {self._last_error or 'connecting'}"
        return CheckResult(
            "transport", "connected", status, observed_value=self.online, output=output
        )

    async def _check_outbox(self) -> CheckResult:
        depth = self.replica.outbox_depth()
        limit = self.config.monitoring.outbox_backlog
        status = HealthStatus.WARN if depth > limit else HealthStatus.PASS
        return CheckResult(
            "outbox", "depth", status, observed_value=depth, observed_unit="operations"
        )

    async def _check_sync_age(self) -> CheckResult:
        age = self.seconds_since_last_sync()
        stale = to_ns(self.config.monitoring.stale_after) / 1e9
        status = HealthStatus.WARN if age > stale else HealthStatus.PASS
        return CheckResult(
            "sync", "age", status, observed_value=round(age, 3), observed_unit="s"
        )

    async def _check_breaker(self) -> CheckResult:
        state = self.breaker.state
        status = (
            HealthStatus.WARN
            if state
            in (BreakerState.OPEN, BreakerState.FORCED_OPEN, BreakerState.HALF_OPEN)
            else HealthStatus.PASS
        )
        return CheckResult("breaker", "state", status, observed_value=state.value)

    async def _check_integrity(self) -> CheckResult:
        failures = self.replica.statistics().integrity_failures
        status = HealthStatus.WARN if failures else HealthStatus.PASS
        output = "corrupt data quarantined and refetched" if failures else None
        return CheckResult(
            "integrity", "failures", status, observed_value=failures, output=output
        )

    async def _check_loop_lag(self) -> CheckResult:
        # Measured with the real loop clock: this is about the event loop itself.
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(0)
        lag_ms = (loop.time() - start) * 1000
        status = HealthStatus.WARN if lag_ms > 100 else HealthStatus.PASS
        return CheckResult(
            "eventLoop",
            "lag",
            status,
            observed_value=round(lag_ms, 3),
            observed_unit="ms",
        )


_STOP: Any = object()


async def _close_quietly(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


async def _with_timeout(clock: Clock, awaitable: Any, timeout_ns: int) -> Any:
    """Await ``awaitable``, giving up after ``timeout_ns`` on ``clock``."""
    work = asyncio.ensure_future(awaitable)
    sleeper = asyncio.ensure_future(clock.sleep(ns_to_timedelta(timeout_ns)))
    try:
        done, _ = await asyncio.wait(
            {work, sleeper}, return_when=asyncio.FIRST_COMPLETED
        )
    except BaseException:
        work.cancel()
        sleeper.cancel()
        raise
    sleeper.cancel()
    if work in done:
        return work.result()
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    raise TransportError(f"connection attempt timed out after {timeout_ns / 1e9:g} s")
