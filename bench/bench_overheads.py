"""Overheads: reliability and metrics per call, CRC32C, and instrumentation cost.

- Circuit breaker and retry against pybreaker and tenacity, and metrics against
  prometheus_client: the existing ``bench/bench_reliability.py`` and
  ``bench/bench_monitoring.py``, imported and run here.
- CRC32C (``leptos_sync.protocol.crc32c``, on the ``crc32c`` package) against
  ``zlib.crc32``: MB/s over 1 MiB blocks, and ns per call on 256-byte frames
  (the size of a typical keystroke frame, where the per-call cost dominates).
- Instrumentation: the same sync run with the manager's normal metrics and with
  its instruments replaced by no-ops (monkeypatched here only): a replay of a
  prefix of automerge-paper, writer and reader in this process (so the patch
  reaches them), through a ``leptos-sync serve`` subprocess, alternating the two
  variants; target at most 5% slower with metrics on.
- Local writes: CPU per keystroke of automerge-paper through a replica on
  SQLite (each keystroke a transaction with its record metadata), with a store
  commit per keystroke and in ``batch()`` groups of 1,000, against bare Loro
  committing and exporting an update per keystroke (no metadata, no store).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import Row, compare, median, ours_server, say

BENCH = "overheads"


# Reliability and monitoring (the existing benchmarks) ---------------------------------


def reliability(calls: int, runs: int) -> list[Row]:
    from bench import bench_reliability as rel

    say(f"reliability: per-call overhead, fastest of {runs} runs of {calls:,} calls")
    ours, theirs = rel.bench_breaker(calls, runs)
    rows = [
        compare(
            BENCH,
            "circuit breaker per call",
            ours * 1e9,
            theirs * 1e9,
            "ns",
            "pybreaker",
            higher_is_better=False,
            target=rel.BREAKER_TARGET,
        )
    ]
    ours, theirs = rel.bench_retry(calls // 2, runs)
    rows.append(
        compare(
            BENCH,
            "retry per call (success)",
            ours * 1e9,
            theirs * 1e9,
            "ns",
            "tenacity",
            higher_is_better=False,
            target=rel.RETRY_TARGET,
        )
    )
    return rows


def monitoring(calls: int, runs: int) -> list[Row]:
    from bench import bench_monitoring as mon

    say(f"metrics: ns per update, median of {runs} runs of {calls:,} updates")
    return [
        compare(
            BENCH,
            f"metrics {name}",
            ours,
            ref,
            "ns",
            "prometheus_client",
            higher_is_better=False,
        )
        for name, ours, ref in mon.run(calls, runs)
    ]


# CRC32C -------------------------------------------------------------------------------


def _throughput(fn: Any, block: bytes, total: int) -> float:
    """MB/s of ``fn(block)`` over ``total`` bytes."""
    count = max(1, total // len(block))
    started = time.perf_counter()
    for _ in range(count):
        fn(block)
    return count * len(block) / (time.perf_counter() - started) / 1e6


def _per_call_ns(fn: Any, frame: bytes, calls: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(calls):
        fn(frame)
    return (time.perf_counter_ns() - started) / calls


def crc(total: int, calls: int, runs: int) -> list[Row]:
    from leptos_sync.protocol import crc32c

    block = bytes(range(256)) * 4096  # 1 MiB
    frame = block[:256]
    say(
        f"crc32c: {total / 2**20:.0f} MiB in 1 MiB blocks and {calls:,} 256-byte "
        f"frames, median of {runs} runs"
    )
    ours_mb, zlib_mb, ours_ns, zlib_ns = [], [], [], []
    for _ in range(runs):
        ours_mb.append(_throughput(crc32c, block, total))
        zlib_mb.append(_throughput(zlib.crc32, block, total))
        ours_ns.append(_per_call_ns(crc32c, frame, calls))
        zlib_ns.append(_per_call_ns(zlib.crc32, frame, calls))
    return [
        compare(
            BENCH,
            "crc32c 1 MiB blocks",
            median(ours_mb),
            median(zlib_mb),
            "MB/s",
            "zlib.crc32",
            higher_is_better=True,
        ),
        compare(
            BENCH,
            "crc32c 256 B frame",
            median(ours_ns),
            median(zlib_ns),
            "ns",
            "zlib.crc32",
            higher_is_better=False,
        ),
    ]


# Instrumentation on and off -----------------------------------------------------------


class _Noop:
    """Stands in for a counter, gauge or histogram (and their labelled children)."""

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass

    def labels(self, *values: Any, **kw: Any) -> _Noop:
        return self


@contextlib.contextmanager
def instruments_off() -> Iterator[None]:
    """Managers built inside the block get no-op instruments."""
    from leptos_sync import manager as manager_mod
    from leptos_sync.instruments import SyncInstruments
    from leptos_sync.monitoring.metrics import MetricsRegistry

    class NoopInstruments(SyncInstruments):
        def __init__(self, registry: Any, manager: Any) -> None:
            # Register on a throwaway registry so every attribute exists, then
            # replace each instrument by a no-op.
            super().__init__(MetricsRegistry(), manager)
            for name, value in list(vars(self).items()):
                if (
                    hasattr(value, "inc")
                    or hasattr(value, "observe")
                    or hasattr(value, "set")
                ):
                    setattr(self, name, _Noop())

        def refresh(self) -> None:
            pass

    original = manager_mod.SyncInstruments
    manager_mod.SyncInstruments = NoopInstruments  # type: ignore[misc]
    try:
        yield
    finally:
        manager_mod.SyncInstruments = original  # type: ignore[misc]


def instrumentation(patches: int, pairs: int) -> list[Row]:
    from bench.bench_trace import prefix_trace
    from leptos_sync.replay import replay

    say(
        f"instrumentation: automerge-paper prefix of {patches:,} patches, writer and "
        f"reader in one process, {pairs} alternating pair(s) of runs"
    )
    on, off = [], []
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp:
        trace = prefix_trace("automerge-paper", patches, Path(tmp))
        with ours_server(Path(tmp)) as server:
            for pair in range(pairs):
                for variant in ("on", "off") if pair % 2 == 0 else ("off", "on"):
                    cm = (
                        instruments_off()
                        if variant == "off"
                        else contextlib.nullcontext()
                    )
                    with cm, tempfile.TemporaryDirectory(dir=tmp) as work:
                        summary = replay(
                            trace,
                            url=server.url,
                            replicas=2,
                            processes=False,
                            timeout=120,
                            workdir=work,
                        )
                    if not summary.converged:
                        raise RuntimeError(
                            "the instrumentation replay did not converge"
                        )
                    (on if variant == "on" else off).append(summary.seconds)
                    seconds = summary.seconds
                    say(f"  pair {pair + 1} metrics {variant:<3} {seconds:6.2f} s")
    med_on, med_off = median(on), median(off)
    spread = (max(off) - min(off)) / med_off * 100 if len(off) > 1 else float("nan")
    say(
        f"  metrics on vs off: {(med_on / med_off - 1) * 100:+.1f}% (run-to-run spread "
        f"of the off runs {spread:.1f}%)"
    )
    return [
        compare(
            BENCH,
            "sync run, metrics on vs no-op",
            med_on,
            med_off,
            "s",
            "metrics-off",
            higher_is_better=False,
            target=1.05,
        )
    ]


# Local writes ------------------------------------------------------------------


def _keystrokes(count: int) -> list[tuple[int, int, str]]:
    from bench.common import trace_path
    from leptos_sync.traces import load_trace

    trace = load_trace(trace_path("automerge-paper"))
    return [p for txn in trace.txns for p in txn.patches][:count]


def _ours(patches: list[tuple[int, int, str]], group: int) -> float:
    """CPU seconds through a replica on SQLite: one store commit per ``group``."""
    from leptos_sync import Storage, fields
    from leptos_sync.replica import Replica

    with tempfile.TemporaryDirectory() as workdir:
        replica = Replica(Storage.sqlite(Path(workdir) / "w.sqlite3"))
        coll = replica.collection("c")
        coll.insert("doc", {"body": fields.text()})
        text = coll.text("doc", "body")
        started = time.process_time()
        for start in range(0, len(patches), group):
            chunk = patches[start : start + group]
            if group == 1:
                text.splice(*chunk[0])
                continue
            with replica.batch():
                for pos, deleted, inserted in chunk:
                    text.splice(pos, deleted, inserted)
        elapsed = time.process_time() - started
        replica.close()
    return elapsed


def local_writes(count: int, runs: int) -> list[Row]:
    """Our cost per local change against Loro's own, on real keystrokes."""
    patches = _keystrokes(count)
    say(
        f"local writes: {len(patches):,} automerge-paper keystrokes, median of "
        f"{runs} runs (ours in CPU time, bare Loro in wall time, one process); "
        "each keystroke one transaction with metadata"
    )
    from bench.bench_trace import loro_per_keystroke

    loro_s, alone_s, batched_s = [], [], []
    for _ in range(runs):
        loro_s.append(loro_per_keystroke(patches)[0])
        alone_s.append(_ours(patches, 1))
        batched_s.append(_ours(patches, 1000))
    per = 1e6 / len(patches)
    return [
        compare(
            BENCH,
            "local write, own store commit",
            median(alone_s) * per,
            median(loro_s) * per,
            "us",
            "loro commit+export",
            higher_is_better=False,
        ),
        compare(
            BENCH,
            "local write, batch() of 1,000",
            median(batched_s) * per,
            median(loro_s) * per,
            "us",
            "loro commit+export",
            higher_is_better=False,
        ),
    ]


def run(smoke: bool = False) -> list[Row]:
    if smoke:
        return (
            reliability(2_000, 2)
            + monitoring(2_000, 2)
            + crc(8 * 2**20, 2_000, 2)
            + instrumentation(800, 1)
            + local_writes(2_000, 1)
        )
    return (
        reliability(200_000, 5)
        + monitoring(200_000, 5)
        + crc(256 * 2**20, 200_000, 5)
        + instrumentation(30_000, 4)
        + local_writes(50_000, 3)
    )


if __name__ == "__main__":
    import sys

    run("--smoke" in sys.argv)
