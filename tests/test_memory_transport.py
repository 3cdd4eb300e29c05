"""Tests of the in-memory transport and its fault injection."""

from __future__ import annotations

import asyncio

import pytest

from leptos_sync import Hub, HubStore, Transport
from leptos_sync.clock import ManualClock
from leptos_sync.errors import ConnectionClosedError, TransportError
from leptos_sync.protocol import Hello, Ping, Pong, Welcome, decode, encode
from leptos_sync.transport.base import Connection
from leptos_sync.transport.memory import InMemoryNetwork, InMemoryTransport


async def handshake(conn: Connection, replica: int = 7) -> None:
    await conn.send(encode(Hello(replica)))
    assert isinstance(decode(await conn.recv()), Welcome)


async def test_frames_travel_to_the_hub_and_back() -> None:
    """A connection carries frames to the network's hub and its answers back."""
    network = InMemoryNetwork()
    transport = Transport.in_memory(network)
    assert transport.endpoint.startswith("memory://")
    conn = await transport.connect()
    await handshake(conn)
    await conn.send(encode(Ping(3)))
    assert decode(await conn.recv()) == Pong(3)
    assert network.connections == 1 and network.hub.connection_count == 1
    await conn.close()
    assert network.connections == 0 and network.hub.connection_count == 0


async def test_drop_loses_frames() -> None:
    """With drop=1 no frame arrives, and the drops are counted."""
    network = InMemoryNetwork(seed=1)
    conn = await InMemoryTransport(network).connect()
    await handshake(conn)
    network.faults.drop = 1.0
    await conn.send(encode(Ping(1)))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(conn.recv(), 0.05)
    assert network.frames_dropped == 1


async def test_duplicate_delivers_frames_twice() -> None:
    """With duplicate=1 each frame arrives twice (both ways)."""
    network = InMemoryNetwork(seed=1)
    conn = await InMemoryTransport(network).connect()
    await handshake(conn)
    network.faults.duplicate = 1.0
    await conn.send(encode(Ping(9)))
    answers = [decode(await conn.recv()) for _ in range(4)]
    assert answers == [Pong(9)] * 4
    assert network.frames_duplicated == 3


async def test_reorder_holds_a_frame_back_until_the_next_one() -> None:
    """A reordered frame goes out after the next frame on the same link."""
    network = InMemoryNetwork(seed=1)
    conn = await InMemoryTransport(network).connect()
    await handshake(conn)
    network.faults.reorder = 1.0
    await conn.send(encode(Ping(1)))  # held back on the way up
    network.faults.reorder = 0.0
    await conn.send(encode(Ping(2)))  # releases both: 2 then 1
    assert [decode(await conn.recv()) for _ in range(2)] == [Pong(2), Pong(1)]
    assert network.frames_reordered == 1


async def test_delay_waits_on_the_injected_clock() -> None:
    """A delay holds frames until the manual clock passes it."""
    clock = ManualClock()
    network = InMemoryNetwork(clock=clock)
    conn = await InMemoryTransport(network).connect()
    network.faults.delay = 2
    await conn.send(encode(Hello(1)))
    receiving = asyncio.ensure_future(conn.recv())
    await clock.advance_async(1.9)
    assert network.hub.statistics().handshaken == 0 and not receiving.done()
    await clock.advance_async(0.1)  # up: the hub answers
    await clock.advance_async(2)  # down: the answer arrives
    assert isinstance(decode(await receiving), Welcome)


async def test_disconnect_closes_links_both_ways() -> None:
    """disconnect() ends recv with ConnectionClosedError and refuses send."""
    network = InMemoryNetwork()
    conn = await InMemoryTransport(network).connect()
    receiving = asyncio.ensure_future(conn.recv())
    await asyncio.sleep(0)
    network.disconnect()
    with pytest.raises(ConnectionClosedError):
        await receiving
    with pytest.raises(ConnectionClosedError):
        await conn.send(encode(Ping(1)))
    with pytest.raises(ConnectionClosedError):
        await conn.recv()


async def test_partition_refuses_connections_until_healed() -> None:
    """A partitioned transport cannot connect; others can; heal ends it."""
    network = InMemoryNetwork()
    cut, other = InMemoryTransport(network), InMemoryTransport(network)
    conn = await cut.connect()
    network.partition(cut)
    with pytest.raises(ConnectionClosedError):
        await conn.recv()
    with pytest.raises(TransportError):
        await cut.connect()
    await handshake(await other.connect())
    network.heal(cut)
    await handshake(await cut.connect())


async def test_restart_hub_drops_links_and_keeps_the_store() -> None:
    """restart_hub() drops every link and starts a new hub on the same store."""
    store = HubStore.memory()
    network = InMemoryNetwork(Hub(store))
    conn = await InMemoryTransport(network).connect()
    old = network.hub
    new = network.restart_hub()
    assert new is not old and new.store is store
    with pytest.raises(ConnectionClosedError):
        await conn.recv()
    await handshake(await InMemoryTransport(network).connect())


async def test_bad_frame_gets_an_error_and_a_closed_link() -> None:
    """The hub's error frame arrives before the link closes."""
    network = InMemoryNetwork()
    conn = await InMemoryTransport(network).connect()
    await conn.send(b"\x01\x00not msgpack")
    error = decode(await conn.recv())
    assert getattr(error, "code", None) == "malformed"
    with pytest.raises(ConnectionClosedError):
        await conn.recv()


def test_in_memory_refuses_other_networks() -> None:
    """Transport.in_memory() wants an InMemoryNetwork (or nothing)."""
    with pytest.raises(TypeError):
        Transport.in_memory(object())
    assert isinstance(Transport.in_memory(), InMemoryTransport)
