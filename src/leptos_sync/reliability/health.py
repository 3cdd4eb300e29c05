"""Running health checks: registered checks, timeouts, uptime, a periodic loop.

A check is an async callable taking no arguments. What it returns becomes one
:class:`~leptos_sync.monitoring.health.CheckResult`:

===========================  ===============================================
returned                     reported
===========================  ===============================================
a ``CheckResult``            as it is (its time filled in if missing)
a ``HealthStatus``           that status
``True`` / ``False``         ``pass`` / ``fail``
``None``                     ``pass``
any other value              ``pass``, with the value as ``observedValue``
raises an ``Exception``      ``fail``, with the error as ``output``
runs past its timeout        ``fail``, with ``output`` "timeout"
===========================  ===============================================

All checks of a run start together and each is raced against a sleep of its
timeout on the injected clock, so a hung check is cancelled and reported failed
when its own timeout expires, and a run takes at most the longest timeout. The
report never waits for a check that ignores its cancellation; such a check is left
to finish in the background.

Uptime is measured on the monotonic clock from when the checker was built: it
never decreases and the wall clock jumping either way does not change it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ..clock import Clock, SystemClock
from ..durations import NS_PER_SECOND, NS_PER_US, Duration, ns_to_timedelta, positive_ns
from ..errors import ConfigError
from ..monitoring.health import CheckResult, HealthChecks, HealthReport, HealthStatus

__all__ = ["HealthCheckConfig", "HealthChecker", "HealthCheckerStatistics"]

_log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CheckFunction = Callable[[], Awaitable[Any] | Any]


@dataclass(frozen=True)
class HealthCheckConfig:
    """Which checks run, how often and for how long.

    Attributes:
        uptime_tracking: report ``uptime:uptime`` (seconds, monotonic).
        basic_checks: run the checks registered as basic.
        advanced_checks: also run the checks registered as advanced.
        check_interval: the period of :meth:`HealthChecker.run_forever`.
        check_timeout: how long a check may take unless it has its own timeout.
    """

    uptime_tracking: bool = True
    basic_checks: bool = True
    advanced_checks: bool = False
    check_interval: Duration = timedelta(seconds=30)
    check_timeout: Duration = timedelta(seconds=5)

    interval_ns: int = field(init=False, repr=False)
    timeout_ns: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("uptime_tracking", "basic_checks", "advanced_checks"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    name, f"expected True or False, got {getattr(self, name)!r}"
                )
        interval = positive_ns(self.check_interval, "check_interval")
        timeout = positive_ns(self.check_timeout, "check_timeout")
        object.__setattr__(self, "interval_ns", interval)
        object.__setattr__(self, "timeout_ns", timeout)
        object.__setattr__(self, "check_interval", ns_to_timedelta(interval))
        object.__setattr__(self, "check_timeout", ns_to_timedelta(timeout))

    @classmethod
    def for_level(cls, level: HealthChecks) -> HealthCheckConfig:
        """The configuration matching ``HealthChecks.Basic`` or ``.Advanced``."""
        if not isinstance(level, HealthChecks):
            raise ConfigError("health_checks", f"expected HealthChecks, got {level!r}")
        return cls(advanced_checks=level is HealthChecks.Advanced)


@dataclass(frozen=True, slots=True)
class HealthCheckerStatistics:
    """Counters of a :class:`HealthChecker`.

    Attributes:
        runs: completed runs.
        checks_run: individual checks run.
        failures: checks that reported ``fail`` (timeouts included).
        timeouts: checks cancelled at their timeout.
    """

    runs: int
    checks_run: int
    failures: int
    timeouts: int


@dataclass(frozen=True, slots=True)
class _Check:
    component: str
    measurement: str
    function: CheckFunction
    timeout_ns: int | None
    advanced: bool
    component_type: str | None
    observed_unit: str | None


class HealthChecker:
    """Runs health checks and reports them in the IETF health+json format.

    Args:
        config: a :class:`HealthCheckConfig`, or ``HealthChecks.Basic`` /
            ``HealthChecks.Advanced`` for the matching default configuration.
        clock: the clock for timeouts, uptime and timestamps.
        service_id: reported as ``serviceId``.
        version: reported as ``version``.
        description: reported as ``description``.
        logger: where failing checks are logged (WARNING) and runs (DEBUG).
    """

    def __init__(
        self,
        config: HealthCheckConfig | HealthChecks | None = None,
        clock: Clock | None = None,
        *,
        service_id: str | None = None,
        version: str | None = None,
        description: str | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if config is None:
            config = HealthCheckConfig()
        elif isinstance(config, HealthChecks):
            config = HealthCheckConfig.for_level(config)
        elif not isinstance(config, HealthCheckConfig):
            raise ConfigError("config", f"expected HealthCheckConfig, got {config!r}")
        self.config = config
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._started_ns = self._clock.monotonic_ns()
        self._service_id = service_id
        self._version = version
        self._description = description
        self._logger = logger if logger is not None else _log
        self._checks: list[_Check] = []
        self._latest: HealthReport | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._runs = self._checks_run = self._failures = self._timeouts = 0

    # Registering -----------------------------------------------------------

    def add_check(
        self,
        component: str,
        measurement: str,
        fn: CheckFunction,
        *,
        timeout: Duration | None = None,
        advanced: bool = False,
        component_type: str | None = None,
        observed_unit: str | None = None,
    ) -> None:
        """Register a check reported as ``component:measurement``.

        Args:
            component: what is checked, e.g. ``"storage"``.
            measurement: what is measured, e.g. ``"responseTime"``.
            fn: the check (see the module docstring for what it may return).
            timeout: its own timeout; the configuration's ``check_timeout``
                otherwise.
            advanced: run it only when advanced checks are on.
            component_type: reported as ``componentType``.
            observed_unit: the unit of plain returned values.
        """
        if not component or not measurement:
            raise ConfigError("component", "component and measurement must be named")
        timeout_ns = None if timeout is None else positive_ns(timeout, "timeout")
        check = _Check(
            component,
            measurement,
            fn,
            timeout_ns,
            advanced,
            component_type,
            observed_unit,
        )
        self._checks.append(check)

    # Reading ---------------------------------------------------------------

    def uptime_ns(self) -> int:
        """Nanoseconds since the checker was built, on the monotonic clock."""
        return max(0, self._clock.monotonic_ns() - self._started_ns)

    def uptime(self) -> timedelta:
        """:meth:`uptime_ns` as a ``timedelta``."""
        return ns_to_timedelta(self.uptime_ns())

    def latest(self) -> HealthReport | None:
        """The report of the most recent completed run, if any."""
        return self._latest

    def statistics(self) -> HealthCheckerStatistics:
        return HealthCheckerStatistics(
            self._runs, self._checks_run, self._failures, self._timeouts
        )

    # Running ---------------------------------------------------------------

    async def run(self) -> HealthReport:
        """Run every enabled check at once and gather the report."""
        config = self.config
        selected = [
            check
            for check in self._checks
            if (config.advanced_checks if check.advanced else config.basic_checks)
        ]
        results = list(await asyncio.gather(*(self._run_one(c) for c in selected)))
        if config.uptime_tracking:
            results.insert(0, self._uptime_result())

        report = HealthReport(
            checks=tuple(results),
            service_id=self._service_id,
            description=self._description,
            version=self._version,
        )
        self._runs += 1
        self._checks_run += len(selected)
        self._latest = report
        self._logger.debug("health run: %s", report.status.value)
        return report

    async def report(self) -> dict[str, Any]:
        """Run the checks and return the IETF health+json body as a dict."""
        return (await self.run()).to_json()

    async def run_forever(self) -> None:
        """Run the checks every ``check_interval`` on the clock, keeping
        :meth:`latest` up to date, until cancelled."""
        while True:
            await self.run()
            await self._clock.sleep(self.config.interval_ns / NS_PER_SECOND)

    def start(self) -> asyncio.Task[None]:
        """Start :meth:`run_forever` as a task on the running loop."""
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(
                self.run_forever(), name="leptos_sync.health"
            )
        return self._loop_task

    async def stop(self) -> None:
        """Stop the periodic loop started by :meth:`start`."""
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # One check -------------------------------------------------------------

    async def _run_one(self, check: _Check) -> CheckResult:
        timeout_ns = check.timeout_ns or self.config.timeout_ns
        task = asyncio.ensure_future(self._call(check))
        timer = asyncio.ensure_future(self._clock.sleep(timeout_ns / NS_PER_SECOND))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()

        if task.done() and not task.cancelled():
            error = task.exception()
            if error is None:
                result = self._to_result(check, task.result())
            else:
                result = self._failed(check, f"{type(error).__name__}: {error}")
        else:
            self._abandon(task)
            self._timeouts += 1
            result = self._failed(check, "timeout")

        if result.status is HealthStatus.FAIL:
            self._failures += 1
            self._logger.warning(
                "health check %s failed: %s", result.key, result.output
            )
        return result

    async def _call(self, check: _Check) -> Any:
        value = check.function()
        if inspect.isawaitable(value):
            value = await value
        return value

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        # Keep a reference until the cancelled check finishes, and collect its
        # outcome so that asyncio does not complain about it.
        self._abandoned.add(task)

        def forget(done: asyncio.Task[Any]) -> None:
            self._abandoned.discard(done)
            if not done.cancelled():
                done.exception()

        task.add_done_callback(forget)

    def _to_result(self, check: _Check, value: Any) -> CheckResult:
        if isinstance(value, CheckResult):
            if value.time is None:
                return replace(value, time=self._now())
            return value
        if isinstance(value, HealthStatus):
            return self._result(check, value)
        if value is None or value is True:
            return self._result(check, HealthStatus.PASS)
        if value is False:
            return self._result(check, HealthStatus.FAIL, output="check failed")
        return self._result(check, HealthStatus.PASS, observed=value)

    def _failed(self, check: _Check, output: str) -> CheckResult:
        return self._result(check, HealthStatus.FAIL, output=output)

    def _result(
        self,
        check: _Check,
        status: HealthStatus,
        *,
        observed: Any = None,
        output: str | None = None,
    ) -> CheckResult:
        return CheckResult(
            component=check.component,
            measurement=check.measurement,
            status=status,
            observed_value=observed,
            observed_unit=check.observed_unit if observed is not None else None,
            output=output,
            time=self._now(),
            component_type=check.component_type,
        )

    def _uptime_result(self) -> CheckResult:
        return CheckResult(
            component="uptime",
            measurement="uptime",
            status=HealthStatus.PASS,
            observed_value=self.uptime_ns() / NS_PER_SECOND,
            observed_unit="s",
            time=self._now(),
            component_type="system",
        )

    def _now(self) -> datetime:
        return _EPOCH + timedelta(microseconds=self._clock.wall_ns() // NS_PER_US)

    def __repr__(self) -> str:
        return f"HealthChecker(checks={len(self._checks)}, config={self.config!r})"
