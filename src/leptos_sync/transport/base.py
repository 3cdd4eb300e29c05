"""What a transport is: something that opens connections carrying frames.

A :class:`Connection` carries whole frames (bytes) in order, both ways, until it
is closed by either side. ``recv`` raises :class:`ConnectionClosedError` once the
connection is gone; ``send`` raises it (or :class:`TransportError`) if the frame
cannot be handed over. Transports translate their library's exceptions into these.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Connection", "Transport"]


@runtime_checkable
class Connection(Protocol):
    """One open link to the server."""

    async def send(self, frame: bytes) -> None:
        """Hand one frame to the link."""
        ...

    async def recv(self) -> bytes:
        """The next frame from the server."""
        ...

    async def close(self) -> None:
        """Close the link; pending ``recv`` calls raise ``ConnectionClosedError``."""
        ...


class Transport:
    """Opens connections to a sync server; see :meth:`websocket` and :meth:`in_memory`.

    Subclasses implement :meth:`connect`.
    """

    #: Human-readable endpoint, for logs and health output (never holds secrets).
    endpoint: str = ""

    async def connect(self) -> Connection:
        """Open a new connection.

        Raises:
            TransportError: the server could not be reached.
        """
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the transport holds (the in-memory network, a pool...)."""

    @staticmethod
    def websocket(url: str, **options: object) -> Transport:
        """A WebSocket client transport to ``url`` (``ws://`` or ``wss://``).

        Options go to :class:`~leptos_sync.transport.websocket.WebSocketTransport`.
        """
        from .websocket import WebSocketTransport

        return WebSocketTransport(url, **options)  # type: ignore[arg-type]

    @staticmethod
    def in_memory(network: object | None = None) -> Transport:
        """An in-process link to the hub of ``network`` (a private one if omitted).

        See :class:`~leptos_sync.transport.memory.InMemoryNetwork` for fault
        injection (drop, duplicate, reorder, delay, disconnect, partition).
        """
        from .memory import InMemoryNetwork, InMemoryTransport

        if network is None:
            network = InMemoryNetwork()
        if not isinstance(network, InMemoryNetwork):
            raise TypeError(
                f"expected an InMemoryNetwork, got {type(network).__name__}"
            )
        return InMemoryTransport(network)
