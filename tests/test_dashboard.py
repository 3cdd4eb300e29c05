"""The server dashboard: snapshot arithmetic, its routes, and the page in Chromium."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from leptos_sync import EndToEndSyncManager, HubStore, Storage, SyncConfig, Transport
from leptos_sync.errors import StorageError
from leptos_sync.hub import HubStatistics
from leptos_sync.server import SyncServer, serve_in_background
from leptos_sync.server.dashboard import (
    Rates,
    RateWindow,
    Reading,
    bucket_quantile,
    encode_json,
    render_snapshot,
)
from leptos_sync.server.run import RunningServer

FAST = SyncConfig(
    heartbeat_interval=0.2,
    heartbeat_timeout=1.0,
    poll_interval=0.05,
    status_interval=0.2,
)
TOKEN = "s3cret-dashboard-token"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

STATS = HubStatistics(
    connections=0,
    handshaken=0,
    subscriptions={},
    ops_stored=0,
    ops_duplicate=0,
    ops_fanned_out=0,
    pushes=0,
    pulls=0,
    snapshots_sent=0,
    errors=0,
    heads={},
    client_status={},
)


def _buckets(*counts: int) -> tuple[tuple[float, int], ...]:
    """Cumulative buckets at bounds 0.001, 0.01, 0.1 and +Inf."""
    return tuple(zip((0.001, 0.01, 0.1, math.inf), counts, strict=True))


async def _until(
    check: Callable[[], Awaitable[bool] | bool], what: str, within: float = 10.0
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def _events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """The (event, parsed data) pairs of a server-sent event stream."""
    event = "message"
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            yield event, json.loads(line[len("data: ") :])
            event = "message"


@pytest.fixture
async def running() -> AsyncIterator[RunningServer]:
    """A real server on a free port, with a fast dashboard."""
    server = SyncServer(HubStore.memory())
    server.dashboard.interval = 0.05
    async with serve_in_background(server) as running:
        yield running


# Snapshot arithmetic -------------------------------------------------------------


def test_bucket_quantile_interpolates_inside_the_bucket_holding_the_rank() -> None:
    """The quantile is interpolated linearly in its bucket, as Prometheus does."""
    buckets = _buckets(0, 4, 4, 4)
    assert bucket_quantile(buckets, 0.5) == pytest.approx(0.0055)
    assert bucket_quantile(_buckets(10, 10, 10, 10), 0.99) == pytest.approx(0.00099)


def test_bucket_quantile_in_the_inf_bucket_reports_the_highest_bound() -> None:
    """A rank beyond the last finite bound reports that bound, not infinity."""
    assert bucket_quantile(_buckets(0, 0, 1, 10), 0.99) == 0.1


def test_bucket_quantile_of_no_observations_is_none() -> None:
    """Empty buckets have no quantile."""
    assert bucket_quantile(_buckets(0, 0, 0, 0), 0.5) is None
    assert bucket_quantile((), 0.5) is None


def test_rate_window_has_no_rate_on_its_first_reading() -> None:
    """The first reading has nothing to compare with."""
    assert RateWindow().advance(Reading(1_000, STATS)) == Rates()


def test_rate_window_divides_stored_ops_by_elapsed_time() -> None:
    """Ops/s is the stored-ops delta over the monotonic time between readings."""
    window = RateWindow()
    window.advance(Reading(1_000_000_000, replace(STATS, ops_stored=10)))
    rates = window.advance(Reading(3_000_000_000, replace(STATS, ops_stored=50)))
    assert rates.ops_per_second == 20.0


def test_rate_window_measures_latency_of_the_frames_in_the_window_only() -> None:
    """Mean and p99 cover the frames handled since the previous reading."""
    window = RateWindow()
    window.advance(Reading(0, STATS, _buckets(100, 100, 100, 100), 0.05))
    rates = window.advance(Reading(10**9, STATS, _buckets(100, 104, 104, 104), 0.07))
    assert rates.frames == 4
    assert rates.mean_seconds == pytest.approx(0.005)
    assert rates.p99_seconds == pytest.approx(0.001 + 0.009 * 0.99)


def test_rate_window_clamps_counters_that_went_down() -> None:
    """A restarted server's smaller counters give a zero rate, never a negative one."""
    window = RateWindow()
    window.advance(Reading(0, replace(STATS, ops_stored=500)))
    assert (
        window.advance(Reading(10**9, replace(STATS, ops_stored=3))).ops_per_second == 0
    )


def test_render_snapshot_names_replicas_in_hex_and_breakers_by_state() -> None:
    """Replica ids stay exact (hex) and reported breaker figures become state names."""
    from leptos_sync.monitoring.health import HealthReport

    stats = replace(
        STATS,
        heads={"notes": 7},
        subscriptions={"notes": 2},
        client_status={
            2**63 + 5: {"outbox_depth": 3.0, "breaker_state": 1.0},
            1: {"outbox_depth": 4.0, "breaker_state": 2.0, "integrity_failures": 0.0},
        },
    )
    snap = render_snapshot(
        Reading(0, stats),
        Rates(),
        alerts=[],
        health=HealthReport(()),
        server_id="abc",
        accepting=True,
        uptime=None,
        wall_ns=0,
        interval=1.0,
    )
    assert [r["replica"] for r in snap["replicas"]] == [
        "0000000000000001",
        "8000000000000005",
    ]
    assert [r["breaker_state"] for r in snap["replicas"]] == ["half_open", "open"]
    assert snap["outbox"] == {"total": 7.0, "max": 4.0}
    assert snap["collections"] == [{"name": "notes", "head": 7, "subscribers": 2}]


def test_encode_json_turns_non_finite_figures_into_null() -> None:
    """NaN and infinities (JSON has neither) are sent as null."""
    text = encode_json({"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": {"d": None}}


# The routes ----------------------------------------------------------------------


async def test_page_is_self_contained(running: RunningServer) -> None:
    """/dashboard is one HTML page that loads nothing from elsewhere."""
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        page = await http.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert "<canvas" in page.text and "EventSource" in page.text
    assert "://" not in page.text
    assert "<script src" not in page.text and "<link" not in page.text


async def test_snapshot_shows_a_sync_and_never_the_token(
    running: RunningServer,
) -> None:
    """After a sync the snapshot holds the head, ops and replicas, but not the token."""
    config = replace(FAST, token=TOKEN)
    a = EndToEndSyncManager(Storage.memory(), Transport.websocket(running.url), config)
    async with a, httpx.AsyncClient(base_url=running.http_url) as http:
        notes = a.collection("notes")
        for i in range(3):
            notes.insert(f"n{i}", {"title": f"note {i}"})
        await a.wait_synced(10)

        async def reported() -> bool:
            snap = (await http.get("/dashboard/snapshot")).json()
            return bool(snap["replicas"])

        await _until(reported, "the replica's status report")
        response = await http.get("/dashboard/snapshot")

    assert response.headers["content-type"] == "application/json"
    assert TOKEN not in response.text
    snap = response.json()
    # The three inserts may travel merged into fewer operations.
    stored = running.server.hub.statistics().ops_stored
    assert 1 <= stored <= 3
    assert snap["collections"] == [{"name": "notes", "head": stored, "subscribers": 1}]
    assert snap["ops"]["stored"] == stored
    assert snap["connections"] == {"open": 1, "handshaken": 1}
    assert snap["replicas"][0]["replica"] == f"{a.replica.replica_id:016x}"
    assert snap["replicas"][0]["breaker_state"] == "closed"
    assert snap["latency"]["count"] >= 2 and snap["latency"]["p99_seconds"] > 0
    assert snap["health"]["status"] == "pass"
    assert snap["alerts"] == []


async def test_snapshot_answers_503_when_the_store_fails(
    running: RunningServer,
) -> None:
    """A store that cannot be read gives a 503 with the reason, not a traceback."""

    def broken() -> list[str]:
        raise StorageError("disk gone")

    running.server.store.collections = broken  # type: ignore[method-assign]
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        response = await http.get("/dashboard/snapshot")
    assert response.status_code == 503
    assert "disk gone" in response.json()["error"]


async def test_events_stream_snapshots_with_rates(running: RunningServer) -> None:
    """/dashboard/events sends snapshot events; from the second on they carry ops/s."""
    async with (
        httpx.AsyncClient(base_url=running.http_url, timeout=10) as http,
        http.stream("GET", "/dashboard/events") as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        seen: list[dict[str, Any]] = []
        async for event, data in _events(response):
            assert event == "snapshot"
            seen.append(data)
            if len(seen) == 2:
                break
    assert seen[0]["ops"]["per_second"] is None
    assert seen[1]["ops"]["per_second"] == 0
    assert seen[1]["server"]["accepting"] is True


async def test_events_stream_ends_when_the_browser_goes_away(
    running: RunningServer,
) -> None:
    """Closing the connection ends the stream's generator: no stream is left open."""
    dashboard = running.server.dashboard
    async with (
        httpx.AsyncClient(base_url=running.http_url, timeout=10) as http,
        http.stream("GET", "/dashboard/events") as response,
    ):
        async for _ in _events(response):
            break
        assert dashboard.streams == 1
    await _until(lambda: dashboard.streams == 0, "the stream to close")


async def test_events_stream_ends_when_the_dashboard_closes(
    running: RunningServer,
) -> None:
    """close() ends open streams at once, and the response completes."""
    dashboard = running.server.dashboard
    dashboard.interval = 60.0
    async with (
        httpx.AsyncClient(base_url=running.http_url, timeout=10) as http,
        http.stream("GET", "/dashboard/events") as response,
    ):
        events = _events(response)
        await anext(events)
        dashboard.close()
        rest = [item async for item in events]
    assert rest == []
    assert dashboard.streams == 0


async def test_server_shutdown_does_not_wait_for_open_streams() -> None:
    """uvicorn's graceful shutdown finishes promptly while a dashboard is watching."""
    server = SyncServer(HubStore.memory())
    server.dashboard.interval = 60.0
    http = httpx.AsyncClient(timeout=10)
    loop = asyncio.get_running_loop()
    try:
        async with serve_in_background(server) as running:
            request = http.build_request("GET", running.http_url + "/dashboard/events")
            response = await http.send(request, stream=True)
            await anext(_events(response))
            started = loop.time()
        took = loop.time() - started
        await response.aclose()
    finally:
        await http.aclose()
    assert server.dashboard.streams == 0
    assert took < 2.0, f"shutdown took {took:.1f} s with a stream open"


# The page in a real browser --------------------------------------------------------


def _browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install playwright)"
    if not Path(CHROMIUM).exists():
        return "no chromium executable (apt-get install chromium)"
    return None


@pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))
async def test_page_in_chromium_shows_a_sync(tmp_path: Path) -> None:
    """In headless Chromium, the page shows a real sync: replicas, head and ops."""
    from playwright.async_api import ConsoleMessage, async_playwright, expect

    server = SyncServer(HubStore.sqlite(tmp_path / "hub.sqlite3"))
    server.dashboard.interval = 0.2
    async with serve_in_background(server) as running, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            # Only locators and expect() below: the page's CSP forbids eval,
            # which wait_for_function would need.
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []

            def console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append(message.text)

            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", console)
            await page.goto(running.http_url + "/dashboard")
            await expect(page.locator("#stream-state")).to_have_text("live")
            await expect(page.locator("#stat-ops-stored")).to_have_text("0")

            a = EndToEndSyncManager(
                Storage.sqlite(tmp_path / "a.sqlite3"),
                Transport.websocket(running.url),
                FAST,
            )
            b = EndToEndSyncManager(
                Storage.memory(), Transport.websocket(running.url), FAST
            )
            async with a, b:
                notes_a, notes_b = a.collection("notes"), b.collection("notes")
                for i in range(5):
                    notes_a.insert(f"n{i}", {"title": f"note {i}"})
                await a.wait_synced(10)
                await _until(
                    lambda: len(notes_b) == 5, "replica b to receive the notes"
                )

                stored = str(running.server.hub.statistics().ops_stored)
                head = page.locator("#collections tr[data-collection='notes'] .head")
                await expect(head).to_have_text(stored)
                await expect(page.locator("#stat-replicas")).to_have_text("2")
                await expect(page.locator("#replicas tbody tr")).to_have_count(2)
                await expect(page.locator("#stat-ops-stored")).to_have_text(stored)
                await expect(page.locator("#chart-max")).to_have_text(
                    re.compile(r"peak [1-9]")
                )
                await expect(page.locator("#health-status")).to_have_text("pass")
                await page.screenshot(path="/tmp/dashboard.png", full_page=True)
            assert errors == []
        finally:
            await browser.close()
