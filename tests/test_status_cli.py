"""`leptos-sync status`: a server's health, key metrics and alerts in the terminal."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from leptos_sync import EndToEndSyncManager, HubStore, Storage, SyncConfig, Transport
from leptos_sync.monitoring import Alert, Severity
from leptos_sync.server import SyncServer, serve_in_background

FAST = SyncConfig(heartbeat_interval=0.2, heartbeat_timeout=1.0, poll_interval=0.05)


@dataclass
class Run:
    code: int
    out: str
    err: str


async def _status(*args: str) -> Run:
    """Run the real command in a child process (the server lives in this loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "leptos_sync",
        "status",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


@asynccontextmanager
async def _canned(pages: dict[str, tuple[int, str]]) -> AsyncIterator[str]:
    """An HTTP server answering each path with a fixed (status, body); 404 else."""

    async def answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ", 2)[1].decode()
        status, body = pages.get(path, (404, "not found"))
        data = body.encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def test_status_of_a_live_server_prints_health_metrics_and_alerts() -> None:
    """Against a live server after a sync: exit 0, health, figures, heads and alerts."""
    server = SyncServer(HubStore.memory())
    server.monitoring.alerts.add_alert(
        Alert("DiskAlmostFull", Severity.CRITICAL, summary="92% of the disk used")
    )
    async with serve_in_background(server) as running:
        storage, transport = Storage.memory(), Transport.websocket(running.url)
        async with EndToEndSyncManager(storage, transport, FAST) as replica:
            notes = replica.collection("notes")
            for i in range(3):
                notes.insert(f"n{i}", {"title": f"note {i}"})
            await replica.wait_synced(10)
            run = await _status("--url", running.http_url)
    # The three inserts may travel merged into one operation.
    stored = server.hub.statistics().ops_stored
    assert 1 <= stored <= 3

    assert run.code == 0, run.err
    assert run.err == ""
    lines = run.out.splitlines()
    assert "health   pass" in lines
    assert any(line.split() == ["operations", "stored", str(stored)] for line in lines)
    assert any(line.split() == ["connected", "clients", "1"] for line in lines)
    assert any(line.startswith("  frame handling") and "p99" in line for line in lines)
    heads = ["collection", "heads", f"notes={stored}"]
    assert any(line.split() == heads for line in lines)
    assert "alerts   1 active" in lines
    assert any("DiskAlmostFull" in line and "critical" in line for line in lines)


async def test_status_accepts_the_sync_url_and_prints_json() -> None:
    """The ws:// sync URL names the same server; --json prints one JSON document."""
    async with serve_in_background(SyncServer(HubStore.memory())) as running:
        run = await _status("--url", running.url, "--json")
    assert run.code == 0, run.err
    info = json.loads(run.out)
    assert info["url"] == running.http_url
    assert info["health"]["status"] == "pass"
    assert info["metrics"]["leptos_sync_server_operations_stored"] == 0
    assert info["alerts"] == []


async def test_status_of_a_closed_port_is_one_error_line() -> None:
    """Nothing listening: one line on stderr, nothing on stdout, exit status 1."""
    async with serve_in_background(SyncServer(HubStore.memory())) as running:
        url = running.http_url
    run = await _status("--url", url)
    assert run.code == 1
    assert run.out == ""
    assert len(run.err.splitlines()) == 1
    assert run.err.startswith(f"leptos-sync: error: cannot reach {url}")


async def test_status_of_another_kind_of_server_is_one_error_line() -> None:
    """A server with no health report is named as such, without a traceback."""
    async with _canned({}) as url:
        run = await _status("--url", url)
    assert run.code == 1
    assert run.err.splitlines() == [
        f"leptos-sync: error: {url}/health answered 404 without a health report; "
        "is this a leptos-sync server?"
    ]


async def test_status_without_a_dashboard_counts_alerts_from_metrics() -> None:
    """A server with no dashboard snapshot still shows alerts, by state and severity."""
    metrics = (
        "# TYPE leptos_sync_alerts_active gauge\n"
        'leptos_sync_alerts_active{severity="critical",state="firing"} 2.0\n'
        'leptos_sync_alerts_active{severity="info",state="pending"} 0.0\n'
        "# TYPE leptos_sync_server_operations_stored gauge\n"
        "leptos_sync_server_operations_stored 41.0\n"
    )
    pages = {
        "/health": (503, json.dumps({"status": "fail", "checks": {}})),
        "/metrics": (200, metrics),
    }
    async with _canned(pages) as url:
        run = await _status("--url", url)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert "health   fail" in lines
    assert any(line.split() == ["operations", "stored", "41"] for line in lines)
    assert "alerts   2 firing critical" in lines
