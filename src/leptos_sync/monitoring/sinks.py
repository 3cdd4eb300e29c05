"""Where alert notifications go: the log, a callback, or a webhook.

A sink is any object with ``async def send(alert)``; an optional ``name``
attribute labels its delivery counts. The :class:`~.alerts.AlertManager` calls
every sink once per firing notification and once per resolved notice, outside
its lock, and counts a sink that raises as a failed delivery instead of
propagating the error.

Sinks raise library errors for expected trouble: :class:`WebhookSink` raises
:class:`~leptos_sync.errors.TransportError` when the request fails or times out
and :class:`~leptos_sync.errors.RemoteError` when the receiver answers with a
non-2xx status.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from ..durations import Duration, positive_ns
from ..errors import ConfigError, RemoteError, TransportError

if TYPE_CHECKING:
    from .alerts import Alert

__all__ = ["AlertSink", "CallbackSink", "LogSink", "WebhookSink"]


class AlertSink(Protocol):
    """Receives alert notifications: firing alerts and resolved notices."""

    async def send(self, alert: Alert) -> None:
        """Deliver one notification; raise to have it counted as failed."""
        ...


class LogSink:
    """Logs notifications: WARNING for a firing alert, INFO for a resolved one.

    Args:
        logger: the logger to write to; ``leptos_sync.monitoring.sinks`` by
            default. The library never configures handlers.
    """

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger if logger is not None else logging.getLogger(__name__)

    async def send(self, alert: Alert) -> None:
        if alert.firing:
            self._logger.warning(
                "alert %s firing (severity=%s, labels=%s, value=%s)%s%s",
                alert.name,
                alert.severity.value,
                dict(alert.labels),
                alert.value,
                ": " if alert.summary else "",
                alert.summary,
            )
        else:
            self._logger.info(
                "alert %s %s (labels=%s)",
                alert.name,
                alert.state.value,
                dict(alert.labels),
            )


class CallbackSink:
    """Calls a function, plain or ``async``, with each notification."""

    name = "callback"

    def __init__(self, callback: Callable[[Alert], Awaitable[None] | None]) -> None:
        if not callable(callback):
            raise ConfigError("callback", "expected a callable")
        self._callback = callback

    async def send(self, alert: Alert) -> None:
        result = self._callback(alert)
        if inspect.isawaitable(result):
            await result


class WebhookSink:
    """POSTs each notification as JSON, in the Alertmanager webhook shape.

    The body is ``{"version": "4", "status": ..., "receiver": ..., "alerts":
    [alert]}`` with the alert as :meth:`~.alerts.Alert.to_json` renders it.

    Args:
        url: an ``http://`` or ``https://`` URL.
        timeout: the bound on the whole request, connect to last byte.
        headers: extra request headers (e.g. authorisation).
        client: an ``httpx.AsyncClient`` to reuse; by default each
            notification opens its own short-lived client, which suits the
            low rate of alert notifications.
        receiver: the ``receiver`` field of the body.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        timeout: Duration = 5.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        receiver: str = "leptos_sync",
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError("url", f"expected an http(s) URL, got {url!r}")
        self.url = url
        self._timeout_s = positive_ns(timeout, "timeout") / 1e9
        self._headers = dict(headers or {})
        self._client = client
        self._receiver = receiver

    async def send(self, alert: Alert) -> None:
        body: dict[str, Any] = {
            "version": "4",
            "status": alert.state.value,
            "receiver": self._receiver,
            "alerts": [alert.to_json()],
        }
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._post(body)
        except TimeoutError as exc:
            raise TransportError(
                f"webhook {self.url} did not answer within {self._timeout_s:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"webhook {self.url} failed: {exc}") from exc
        if not response.is_success:
            raise RemoteError(
                str(response.status_code),
                f"webhook {self.url} answered {response.reason_phrase}",
            )

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        if self._client is not None:
            return await self._client.post(
                self.url, json=body, headers=self._headers, timeout=self._timeout_s
            )
        async with httpx.AsyncClient(timeout=self._timeout_s) as client:
            return await client.post(self.url, json=body, headers=self._headers)

    def __repr__(self) -> str:
        return f"WebhookSink({self.url!r})"
