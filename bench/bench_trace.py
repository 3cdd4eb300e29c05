"""Trace sync: real editing traces replayed writer -> server -> reader over loopback.

Ours is ``leptos_sync.replay.replay()`` against a ``leptos-sync serve`` subprocess
(SQLite stores on both sides, acknowledgements, every replica its own process).
Each keystroke is its own local transaction with its own record metadata,
durable in the writer's store; keystrokes that wait together for the link are
pushed as one merged operation (``SyncConfig.merge_waiting``, on by default).
The peer replays the same trace with pycrdt documents through pycrdt-websocket's
server (see :mod:`bench.peer_pycrdt`): one transaction, and so one update on the
wire, per keystroke.

- ``automerge-paper`` (sequential): one writer, one reader.
- ``friendsforever`` (concurrent): one replica per agent; before each transaction
  an agent holds exactly the transaction's ancestors, for ours and for the peer.

Figures: operations per second and wall time until every replica holds
``endContent`` (from the moment every replica has loaded the trace and
connected; server already up, as for both), payload bytes on the wire (client
frames, both directions), and the server's peak RSS. The ceiling is Loro alone
in this process: the trace applied to one document with no sync, and with one
exported update per keystroke.
"""

from __future__ import annotations

import gzip
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import loro

from bench.common import (
    Row,
    check,
    compare,
    median,
    missing_ancestors,
    ours_server,
    peer_server,
    run_processes,
    say,
    spawn,
    trace_path,
)

BENCH = "trace"
OPS_TARGET = 10.0  # ours >= 10x pycrdt operations per second
LORO_TARGET = 3.0  # convergence within 3x Loro's raw local apply time


# The ceiling: Loro alone --------------------------------------------------------------


def loro_local(patches: list[tuple[int, int, str]]) -> float:
    """Seconds to apply every patch to one Loro text, one commit at the end."""
    started = time.perf_counter()
    doc = loro.LoroDoc()
    text = doc.get_text("body")
    for pos, deleted, inserted in patches:
        if deleted:
            text.delete(pos, deleted)
        if inserted:
            text.insert(pos, inserted)
    doc.commit()
    return time.perf_counter() - started


def loro_per_keystroke(patches: list[tuple[int, int, str]]) -> tuple[float, int]:
    """Seconds (and update bytes) with one commit and exported update per patch."""
    started = time.perf_counter()
    doc = loro.LoroDoc()
    text = doc.get_text("body")
    sizes = [0]

    def take(update: bytes) -> bool:
        sizes[0] += len(update)
        return True

    sub = doc.subscribe_local_update(take)
    for pos, deleted, inserted in patches:
        if deleted:
            text.delete(pos, deleted)
        if inserted:
            text.insert(pos, inserted)
        doc.commit()
    seconds = time.perf_counter() - started
    del sub
    return seconds, sizes[0]


def loro_concurrent(txns: list[dict[str, Any]], agents: int) -> tuple[float, str]:
    """Replay a concurrent trace with one Loro doc per agent, no network.

    Each agent's doc imports exactly the ancestors it lacks before each of its
    transactions (one exported update per transaction), as the replays do.
    Returns the seconds and the merged text.
    """
    started = time.perf_counter()
    docs = []
    for agent in range(agents):
        doc = loro.LoroDoc()
        doc.peer_id = agent + 1
        docs.append(doc)
    parents = [tuple(t.get("parents", ())) for t in txns]
    have: list[set[int]] = [set() for _ in range(agents)]
    updates: list[bytes] = []
    for index, txn in enumerate(txns):
        agent = txn["agent"]
        doc = docs[agent]
        missing = missing_ancestors(parents, index, have[agent])
        if missing:
            doc.import_batch([updates[m] for m in missing])
            have[agent].update(missing)
        text = doc.get_text("body")
        before = doc.oplog_vv
        for pos, deleted, inserted in txn["patches"]:
            if deleted:
                text.delete(pos, deleted)
            if inserted:
                text.insert(pos, inserted)
        doc.commit()
        updates.append(bytes(doc.export(loro.ExportMode.Updates(before))))
        have[agent].add(index)
    seconds = time.perf_counter() - started
    merged = loro.LoroDoc()
    merged.import_batch(updates)
    return seconds, merged.get_text("body").to_string()


# Inputs -------------------------------------------------------------------------------


def _raw(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(gzip.decompress(trace_path(name).read_bytes()))
    return data


def prefix_trace(name: str, limit: int | None, workdir: Path) -> Path:
    """The trace itself, or its first ``limit`` patches/transactions in ``workdir``.

    A prefix gets its own ``endContent``: the string after the prefix for a
    sequential trace, the Loro merge of the prefix for a concurrent one.
    """
    path = trace_path(name)
    if limit is None:
        return path
    data = _raw(name)
    if data.get("kind") == "concurrent":
        data["txns"] = data["txns"][:limit]
        _, data["endContent"] = loro_concurrent(data["txns"], data["numAgents"])
    else:
        kept, count = [], 0
        for txn in data["txns"]:
            if count >= limit:
                break
            kept.append(txn)
            count += len(txn["patches"])
        data["txns"] = kept
        doc = list(data.get("startContent", ""))
        for txn in kept:
            for pos, deleted, inserted in txn["patches"]:
                doc[pos : pos + deleted] = inserted
        data["endContent"] = "".join(doc)
    out = workdir / f"{name}-prefix-{limit}.json.gz"
    out.write_bytes(gzip.compress(json.dumps(data).encode()))
    return out


# One run of each side -----------------------------------------------------------------


def run_ours(trace: Path, timeout: float, tries: int = 2) -> dict[str, float]:
    """One replay through a fresh ``leptos-sync serve``; retried once on a failure.

    The retry is for an intermittent hang of concurrent replays (an agent's
    operation tap misses operations that arrive with the seed record); the
    failure is reported, and a second failure raises.
    """
    from leptos_sync.replay import replay

    for attempt in range(tries):
        with (
            tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp,
            ours_server(Path(tmp)) as server,
        ):
            server.reset_peak()
            summary = replay(
                trace,
                url=server.url,
                replicas=2,
                timeout=timeout,
                workdir=Path(tmp) / "replay",
            )
            peak = max(server.peak_rss, server.rss())
        if summary.converged:
            return {
                "seconds": summary.seconds,
                "ops": summary.operations,
                "ops_s": summary.ops_per_second,
                "wire": summary.wire_bytes,
                "rss": peak,
                "failed": attempt,
            }
        errors = "; ".join(
            r.error or r.detail for r in summary.results if not r.converged
        )
        say(f"  ours did not converge (attempt {attempt + 1}): {errors}")
    raise RuntimeError(f"ours did not converge on {trace.name} in {tries} attempts")


def run_peer(trace: Path, timeout: float) -> dict[str, float]:
    """One replay through a fresh pycrdt-websocket server."""
    from bench import peer_pycrdt
    from leptos_sync.traces import load_trace

    loaded = load_trace(trace)
    with peer_server() as server:
        server.reset_peak()
        room = f"trace-{secrets.token_hex(4)}"
        base = server.base_url()
        ctx = spawn()
        start = ctx.Event()
        if loaded.concurrent:
            ready = [ctx.Event() for _ in range(loaded.num_agents)]
            barrier = ctx.Barrier(loaded.num_agents)
            jobs = [
                (
                    peer_pycrdt.agent_role,
                    (a, base, room, str(trace), timeout, start, ready[a], barrier),
                )
                for a in range(loaded.num_agents)
            ]
        else:
            ready = [ctx.Event() for _ in range(2)]
            barrier = ctx.Barrier(2)
            jobs = [
                (
                    peer_pycrdt.trace_role,
                    (role, base, room, str(trace), timeout, ready[i], start, barrier),
                )
                for i, role in enumerate(("writer", "reader"))
            ]
        box: dict[str, float] = {}

        def go() -> None:
            # As for ours: every replica has loaded the trace and connected
            # before any writes, and the clock starts then.
            deadline = time.monotonic() + 60
            for event in ready:
                event.wait(max(0.0, deadline - time.monotonic()))
            box["started"] = time.perf_counter()
            start.set()

        results = run_processes(jobs, timeout * 2, on_start=go)
        seconds = time.perf_counter() - box.get("started", time.perf_counter())
        peak = max(server.peak_rss, server.rss())
    check(results)
    if loaded.concurrent:
        if len({r["digest"] for r in results}) != 1:
            raise RuntimeError(f"the pycrdt agents diverged on {trace.name}")
        if not all(r["end_content"] for r in results):
            say(
                "  note: pycrdt converged to a text other than endContent (Yjs orders "
                "some concurrent insertions differently)"
            )
    ops = loaded.patch_count
    return {
        "seconds": seconds,
        "ops": ops,
        "ops_s": ops / seconds,
        "wire": sum(r["sent"] + r["received"] for r in results),
        "rss": peak,
    }


# The benchmark ------------------------------------------------------------------------


def bench_one(name: str, limit: int | None, runs: int, timeout: float) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-trace-input-") as tmp:
        trace = prefix_trace(name, limit, Path(tmp))
        from leptos_sync.traces import load_trace

        loaded = load_trace(trace)
        say(
            f"{name}: {loaded.patch_count:,} patches in {len(loaded.txns):,} "
            f"transactions, {runs} run(s) each side"
        )
        ours_runs, peer_runs, loro_runs, loro_ks_runs = [], [], [], []
        for run in range(runs):
            ours = run_ours(trace, timeout)
            say(
                f"  run {run + 1} ours   {ours['seconds']:7.2f} s "
                f"{ours['ops_s']:9,.0f} ops/s  wire {ours['wire']:,} B  "
                f"server peak RSS {ours['rss'] / 2**20:.0f} MiB"
            )
            ours_runs.append(ours)
            peer = run_peer(trace, timeout)
            say(
                f"  run {run + 1} pycrdt {peer['seconds']:7.2f} s "
                f"{peer['ops_s']:9,.0f} ops/s  wire {peer['wire']:,} B  "
                f"server peak RSS {peer['rss'] / 2**20:.0f} MiB"
            )
            peer_runs.append(peer)
            if loaded.concurrent:
                raw = json.loads(gzip.decompress(trace.read_bytes()))
                seconds, text = loro_concurrent(raw["txns"], raw["numAgents"])
                if text != loaded.end_content:
                    raise RuntimeError(
                        "the Loro ceiling replay did not reach endContent"
                    )
                loro_runs.append(seconds)
                loro_ks_runs.append(seconds)
            else:
                patches = [p for txn in loaded.txns for p in txn.patches]
                loro_runs.append(loro_local(patches))
                loro_ks_runs.append(loro_per_keystroke(patches)[0])
            say(
                f"  run {run + 1} loro   local {loro_runs[-1]:.3f} s, one update per "
                f"{'transaction' if loaded.concurrent else 'keystroke'} "
                f"{loro_ks_runs[-1]:.3f} s"
            )

    def med(runs_: list[dict[str, float]], key: str) -> float:
        return median([r[key] for r in runs_])

    fig = name
    rows = [
        compare(
            BENCH,
            f"{fig} ops/s",
            med(ours_runs, "ops_s"),
            med(peer_runs, "ops_s"),
            "ops/s",
            "pycrdt",
            higher_is_better=True,
            target=OPS_TARGET,
        ),
        compare(
            BENCH,
            f"{fig} convergence",
            med(ours_runs, "seconds"),
            med(peer_runs, "seconds"),
            "s",
            "pycrdt",
            higher_is_better=False,
        ),
        compare(
            BENCH,
            f"{fig} convergence vs Loro local",
            med(ours_runs, "seconds"),
            median(loro_runs),
            "s",
            "loro-local",
            higher_is_better=False,
            target=LORO_TARGET,
        ),
        compare(
            BENCH,
            f"{fig} convergence vs Loro update/op",
            med(ours_runs, "seconds"),
            median(loro_ks_runs),
            "s",
            "loro-updates",
            higher_is_better=False,
        ),
        compare(
            BENCH,
            f"{fig} wire bytes",
            med(ours_runs, "wire") / 2**20,
            med(peer_runs, "wire") / 2**20,
            "MiB",
            "pycrdt",
            higher_is_better=False,
        ),
        compare(
            BENCH,
            f"{fig} server peak RSS",
            med(ours_runs, "rss") / 2**20,
            med(peer_runs, "rss") / 2**20,
            "MiB",
            "pycrdt",
            higher_is_better=False,
        ),
    ]
    failed = sum(int(r["failed"]) for r in ours_runs)
    if failed:
        say(f"  note: ours needed {failed} retried replay(s) on {name}")
    return rows


def run(smoke: bool = False) -> list[Row]:
    if smoke:
        # Smoke runs check that everything works, often on a busy machine:
        # generous timeouts.
        return bench_one("automerge-paper", 3000, 1, 180) + bench_one(
            "friendsforever", 120, 1, 180
        )
    return bench_one("automerge-paper", None, 2, 300) + bench_one(
        "friendsforever", None, 2, 120
    )


if __name__ == "__main__":
    import sys

    run("--smoke" in sys.argv)
