"""Fan-out: one writer, many readers, many idle connections; delivery latency.

The writer stamps the wall time (``time.time()``) into each new record (ours:
``collection.insert("m00042", {"t": stamp})``; peer: ``msgs["m00042"] = stamp``
in a pycrdt ``Map``), one message every ``INTERVAL`` seconds. Every reader
notes the wall time at which each message reaches it (ours: ``manager.on_change``;
peer: ``Map.observe``) and the latency is the difference. Idle connections are
open WebSockets that never speak (ours: connected to ``/ws`` without a hello;
peer: all in one room of their own, so they are not in the writer's room).

Readers are spread over a few processes (a 2-core machine cannot run 100 of
either kind in one event loop without that loop being the bottleneck); the
writer has its own process, the idle connections another. Reported: p50 and
p99 latency over all readers and messages after a warm-up, and the server's CPU
seconds (psutil ``cpu_times``, user + system) from the start signal to the last
delivery.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Row,
    check,
    compare,
    idle_connections,
    median,
    ours_server,
    peer_server,
    run_processes,
    say,
    spawn,
    until,
)

BENCH = "fanout"
INTERVAL = 0.02


def message_id(index: int) -> str:
    return f"m{index:05d}"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


# Ours ---------------------------------------------------------------------------------


def _config() -> Any:
    from leptos_sync import SyncConfig

    return SyncConfig(status_interval=None)


async def ours_writer(
    url: str,
    store: str,
    collection: str,
    messages: int,
    ready: Any,
    go: Any,
    stop: Any,
    timeout: float,
) -> dict[str, Any]:
    from leptos_sync import EndToEndSyncManager, Storage, Transport

    manager = EndToEndSyncManager(
        Storage.sqlite(store), Transport.websocket(url), _config()
    )
    await manager.start()
    try:
        coll = manager.collection(collection)
        await manager.wait_synced(timeout)
        ready.set()
        await asyncio.to_thread(go.wait, timeout)
        for i in range(messages):
            coll.insert(message_id(i), {"t": time.time()})
            await asyncio.sleep(INTERVAL)
        await manager.wait_synced(timeout)
        await asyncio.to_thread(stop.wait, timeout)
        return {"written": messages}
    finally:
        await manager.stop()


async def ours_readers(
    url: str,
    workdir: str,
    collection: str,
    count: int,
    messages: int,
    warmup: int,
    ready: Any,
    done: Any,
    timeout: float,
    part: int,
) -> dict[str, Any]:
    """``count`` readers in this process (part ``part`` of the readers)."""
    from leptos_sync import EndToEndSyncManager, Storage, Transport

    managers = []
    latencies: list[float] = []
    seen = [0] * count

    def listener(k: int, coll: Any) -> Any:
        def on_change(changes: list[Any]) -> None:
            now = time.time()
            for change in changes:
                if change.origin != "remote" or not change.record_id.startswith("m"):
                    continue
                record = coll.get(change.record_id)
                seen[k] += 1
                if int(change.record_id[1:]) >= warmup and record is not None:
                    latencies.append(now - record["t"])

        return on_change

    try:
        for k in range(count):
            manager = EndToEndSyncManager(
                Storage.sqlite(Path(workdir) / f"reader-{part}-{k}.sqlite3"),
                Transport.websocket(url),
                _config(),
            )
            coll = manager.collection(collection)
            manager.on_change(listener(k, coll))
            await manager.start()
            managers.append(manager)
        await asyncio.gather(*(m.wait_synced(timeout) for m in managers))
        ready.set()
        await until(lambda: min(seen) >= messages, timeout, "readers: messages")
        done.set()
        return {"latencies": latencies, "seen": sum(seen)}
    finally:
        await asyncio.gather(*(m.stop() for m in managers), return_exceptions=True)


# A run --------------------------------------------------------------------------------


def _run(
    kind: str,
    readers: int,
    procs: int,
    idle: int,
    messages: int,
    warmup: int,
    timeout: float,
) -> dict[str, float]:
    from bench import peer_pycrdt

    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        server_cm = ours_server(Path(tmp)) if kind == "ours" else peer_server()
        with (
            server_cm as server,
            idle_connections(
                server.url if kind == "ours" else f"{server.base_url()}/idle", idle
            ),
        ):
            ctx = spawn()
            name = f"fanout-{secrets.token_hex(4)}"
            ready = [ctx.Event() for _ in range(procs + 1)]
            done = [ctx.Event() for _ in range(procs)]
            go, stop = ctx.Event(), ctx.Event()
            shares = [
                readers // procs + (1 if p < readers % procs else 0)
                for p in range(procs)
            ]
            if kind == "ours":
                writer: Any = (
                    ours_writer,
                    (server.url, str(Path(tmp) / "writer.sqlite3")),
                )
                reader: Any = ours_readers
                where: Any = (server.url, tmp)
            else:
                writer = (peer_pycrdt.fanout_writer, (server.base_url(),))
                reader = peer_pycrdt.fanout_readers
                where = (server.base_url(),)
            jobs: list[Any] = [
                (writer[0], (*writer[1], name, messages, ready[0], go, stop, timeout))
            ]
            jobs += [
                (
                    reader,
                    (
                        *where,
                        name,
                        shares[p],
                        messages,
                        warmup,
                        ready[p + 1],
                        done[p],
                        timeout,
                        p,
                    ),
                )
                for p in range(procs)
            ]
            box: dict[str, float] = {}

            def conduct() -> None:
                # Everyone connected and synced -> start; all readers done -> stop.
                deadline = time.monotonic() + timeout
                for event in ready:
                    event.wait(max(0.0, deadline - time.monotonic()))
                cpu, started = server.cpu_seconds(), time.monotonic()
                go.set()
                deadline = time.monotonic() + timeout
                for event in done:
                    event.wait(max(0.0, deadline - time.monotonic()))
                box["cpu"] = server.cpu_seconds() - cpu
                box["wall"] = time.monotonic() - started
                stop.set()

            results = run_processes(jobs, timeout * 3, on_start=conduct)
            check(results)
    latencies = [x for r in results[1:] for x in r["latencies"]]
    return {
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "samples": len(latencies),
        "cpu": box["cpu"],
        "wall": box["wall"],
    }


def run(smoke: bool = False) -> list[Row]:
    if smoke:
        readers, procs, idle, messages, warmup, runs, timeout = 6, 2, 20, 20, 3, 1, 180
    else:
        readers, procs, idle, messages, warmup, runs, timeout = (
            100,
            4,
            500,
            150,
            20,
            1,
            90,
        )
    say(
        f"fanout: 1 writer, {readers} readers in {procs} processes, {idle} idle "
        f"connections, {messages} messages every {INTERVAL * 1000:.0f} ms "
        f"(first {warmup} not counted), {runs} run(s) each side"
    )
    ours_runs, peer_runs = [], []
    for run_ in range(runs):
        for kind, store in (("ours", ours_runs), ("pycrdt", peer_runs)):
            result = _run(kind, readers, procs, idle, messages, warmup, timeout)
            say(
                f"  run {run_ + 1} {kind:<6} p50 {result['p50'] * 1000:7.2f} ms  "
                f"p99 {result['p99'] * 1000:7.2f} ms  ({result['samples']:,} samples)"
                f"  server CPU {result['cpu']:.2f} s over {result['wall']:.1f} s"
            )
            store.append(result)

    def med(runs_: list[dict[str, float]], key: str) -> float:
        return median([r[key] for r in runs_])

    return [
        compare(
            BENCH,
            "p50 delivery latency",
            med(ours_runs, "p50") * 1000,
            med(peer_runs, "p50") * 1000,
            "ms",
            "pycrdt",
            higher_is_better=False,
        ),
        compare(
            BENCH,
            "p99 delivery latency",
            med(ours_runs, "p99") * 1000,
            med(peer_runs, "p99") * 1000,
            "ms",
            "pycrdt",
            higher_is_better=False,
            target=1.0,
        ),
        compare(
            BENCH,
            "server CPU",
            med(ours_runs, "cpu"),
            med(peer_runs, "cpu"),
            "s",
            "pycrdt",
            higher_is_better=False,
        ),
    ]


if __name__ == "__main__":
    import sys

    run("--smoke" in sys.argv)
