"""Records: three replicas writing fields of shared records, until all converge.

1,000 records of ten fields each are created first (not timed) and synced to all
three replicas. Then, timed from one common start signal, the replicas write
100,000 field values in all (one local transaction per write), of which 10% are
*concurrent conflicting* writes: 5,000 (record, field) slots are each written by
two replicas before either has synced. Each replica does its conflicting writes
first, in one burst that never yields to the event loop, so neither side of a pair
can have received the other before writing. The other 90% go to slots that only
the writing replica touches. After its writes, a replica sets its marker field in
a ``done`` record; a replica has converged when it sees all three markers (an
engine applies each replica's operations in order, so the marker comes last) and,
for ours, every local operation is acknowledged. Throughput is the writes divided
by the time from the start signal to the last replica's convergence; the final
states of the three replicas are compared by digest.

Ours: ``EndToEndSyncManager`` with SQLite stores, ``collection.update`` through a
``leptos-sync serve`` subprocess (writes grouped ``manager.batch()`` 1,000 at a
time: one SQLite commit per group, still one transaction per write; writes that
wait together for the link are pushed merged, as by default). Peer: pycrdt
``Map`` of ``Map`` through pycrdt-websocket's server, one transaction per write.
Every replica is its own process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Row,
    check,
    compare,
    median,
    ours_server,
    peer_server,
    run_processes,
    say,
    spawn,
    until,
)

BENCH = "records"
TARGET = 10.0  # ours >= 10x the peer's throughput
REPLICAS = 3
FIELDS = 10
CHUNK = 1000


def record_id(index: int) -> str:
    return f"r{index:05d}"


Plan = list[list[tuple[int, int, int]]]


def make_plan(writes: int, records: int, seed: int = 7) -> tuple[Plan, list[int]]:
    """Each replica's writes as (record, field, value), conflicting writes first.

    Also returns how many of each replica's first writes are conflicting ones.
    """
    rng = random.Random(seed)
    slots = [(r, f) for r in range(records) for f in range(FIELDS)]
    rng.shuffle(slots)
    pairs = writes // 10 // 2
    conflict_slots, own_slots = slots[:pairs], slots[pairs:]
    plan: list[list[tuple[int, int, int]]] = [[] for _ in range(REPLICAS)]
    for p, (r, f) in enumerate(conflict_slots):
        for k in (p % REPLICAS, (p + 1) % REPLICAS):
            plan[k].append((r, f, k * 10_000_000 + len(plan[k])))
    bursts = [len(p) for p in plan]
    mine = [own_slots[k::REPLICAS] for k in range(REPLICAS)]
    rest = writes - 2 * pairs
    for i in range(rest):
        k = i % REPLICAS
        r, f = mine[k][rng.randrange(len(mine[k]))]
        plan[k].append((r, f, k * 10_000_000 + len(plan[k])))
    return plan, bursts


def digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


# Ours: one replica process ------------------------------------------------------------


async def ours_replica(
    k: int,
    url: str,
    store: str,
    collection: str,
    records: int,
    plan: list[tuple[int, int, int]],
    burst: int,
    ready: Any,
    go: Any,
    timeout: float,
) -> dict[str, Any]:
    from leptos_sync import EndToEndSyncManager, Storage, SyncConfig, Transport

    config = SyncConfig(max_batch_ops=1000, status_interval=None)
    manager = EndToEndSyncManager(
        Storage.sqlite(store), Transport.websocket(url), config
    )
    await manager.start()
    try:
        coll = manager.collection(collection)
        names = [f"f{f}" for f in range(FIELDS)]

        # Setup, not timed: replica 0 creates the records, all wait for them.
        if k == 0:
            with manager.batch():
                for r in range(records):
                    coll.insert(record_id(r), dict.fromkeys(names, 0))
                coll.insert("done", {"created": True})
        await until(lambda: len(coll) == records + 1, timeout, "setup records")
        await manager.wait_synced(timeout)
        ready.set()
        await asyncio.to_thread(go.wait, timeout)

        # The conflicting burst: no yield to the loop, so nothing is received.
        with manager.batch():
            for r, f, value in plan[:burst]:
                coll.update(record_id(r), {names[f]: value})
        await asyncio.sleep(0)
        for start in range(burst, len(plan), CHUNK):
            with manager.batch():
                for r, f, value in plan[start : start + CHUNK]:
                    coll.update(record_id(r), {names[f]: value})
            await asyncio.sleep(0)
        coll.update("done", {f"r{k}": True})

        def all_done() -> bool:
            done = coll.get("done") or {}
            return all(done.get(f"r{j}") for j in range(REPLICAS))

        await until(all_done, timeout, f"replica {k}: markers")
        await manager.wait_synced(timeout)
        finished = time.time()
        state = {rid: values for rid, values in coll.items() if rid != "done"}
        stats = manager.replica.statistics()
        return {
            "finished": finished,
            "digest": digest(state),
            "records": len(state),
            "wire": stats.bytes_sent + stats.bytes_received,
        }
    finally:
        await manager.stop()


def run_ours(
    plan: Plan, bursts: list[int], records: int, timeout: float
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-records-") as tmp,
        ours_server(Path(tmp)) as server,
    ):
        ctx = spawn()
        ready = [ctx.Event() for _ in range(REPLICAS)]
        go = ctx.Event()
        collection = f"records-{secrets.token_hex(4)}"
        jobs = [
            (
                ours_replica,
                (
                    k,
                    server.url,
                    str(Path(tmp) / f"r{k}.sqlite3"),
                    collection,
                    records,
                    plan[k],
                    bursts[k],
                    ready[k],
                    go,
                    timeout,
                ),
            )
            for k in range(REPLICAS)
        ]
        return _timed(jobs, ready, go, timeout)


def run_peer(
    plan: Plan, bursts: list[int], records: int, timeout: float
) -> dict[str, Any]:
    from bench import peer_pycrdt

    with peer_server() as server:
        ctx = spawn()
        ready = [ctx.Event() for _ in range(REPLICAS)]
        go = ctx.Event()
        barrier = ctx.Barrier(REPLICAS)
        room = f"records-{secrets.token_hex(4)}"
        jobs = [
            (
                peer_pycrdt.records_replica,
                (
                    k,
                    server.base_url(),
                    room,
                    records,
                    FIELDS,
                    plan[k],
                    bursts[k],
                    ready[k],
                    go,
                    barrier,
                    timeout,
                ),
            )
            for k in range(REPLICAS)
        ]
        return _timed(jobs, ready, go, timeout)


def _timed(
    jobs: list[Any], ready: list[Any], go: Any, timeout: float
) -> dict[str, Any]:
    """Start the jobs, release them together once all are ready, time them."""
    box: dict[str, float] = {}

    def release() -> None:
        deadline = time.monotonic() + timeout
        for event in ready:
            event.wait(max(0.0, deadline - time.monotonic()))
        box["go"] = time.time()
        go.set()

    results = run_processes(jobs, timeout * 3, on_start=release)
    check(results)
    digests = {r["digest"] for r in results}
    if len(digests) != 1:
        raise RuntimeError(f"replicas diverged: digests {sorted(digests)}")
    seconds = max(r["finished"] for r in results) - box["go"]
    return {
        "seconds": seconds,
        "records": results[0]["records"],
        "wire": sum(r["wire"] for r in results),
    }


def _say_run(run_: int, who: str, result: dict[str, Any], writes: int) -> None:
    seconds = result["seconds"]
    say(
        f"  run {run_ + 1} {who:<6} {seconds:6.2f} s  {writes / seconds:9,.0f} "
        f"writes/s  wire {result['wire']:,} B  (3 replicas equal)"
    )


def run(smoke: bool = False) -> list[Row]:
    writes, records, runs, timeout = (
        (3_000, 100, 1, 180) if smoke else (100_000, 1_000, 2, 240)
    )
    plan, bursts = make_plan(writes, records)
    say(
        f"records: {REPLICAS} replicas, {writes:,} field writes over {records:,} "
        f"records (10% concurrent conflicting), {runs} run(s) each side"
    )
    ours_runs, peer_runs = [], []
    for run_ in range(runs):
        ours = run_ours(plan, bursts, records, timeout)
        _say_run(run_, "ours", ours, writes)
        ours_runs.append(ours)
        peer = run_peer(plan, bursts, records, timeout)
        _say_run(run_, "pycrdt", peer, writes)
        peer_runs.append(peer)
    ours_s = median([r["seconds"] for r in ours_runs])
    peer_s = median([r["seconds"] for r in peer_runs])
    return [
        compare(
            BENCH,
            "throughput to convergence",
            writes / ours_s,
            writes / peer_s,
            "writes/s",
            "pycrdt",
            higher_is_better=True,
            target=TARGET,
        ),
        compare(
            BENCH,
            "wire bytes",
            median([r["wire"] for r in ours_runs]) / 2**20,
            median([r["wire"] for r in peer_runs]) / 2**20,
            "MiB",
            "pycrdt",
            higher_is_better=False,
        ),
    ]


if __name__ == "__main__":
    import sys

    run("--smoke" in sys.argv)
