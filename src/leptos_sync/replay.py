"""Replaying recorded editing traces through a real sync server.

This is the main job of ``leptos-sync demo`` and ``leptos-sync replay``. Every
replica is a real :class:`~leptos_sync.EndToEndSyncManager` with its own SQLite
file and its own WebSocket connection, by default each in its own process.

*Sequential* traces have one writer, which applies every patch through the
collection's text handle (one local transaction per patch, committed to its
store in groups; patches that wait together for the link travel merged into one
operation), and readers that receive everything through the server. After the
last patch the writer inserts the record ``end``: the writer's changes form one
causal chain, so a replica holding ``end`` holds every patch.

*Concurrent* traces have one replica per agent. Before each of its transactions an
agent must hold exactly the state the transaction's ``parents`` name, no more and
no less, or the recorded positions would point at the wrong places. Each agent
therefore edits its own Loro document: it imports, oldest first, the ancestors it
still lacks (received from the server through the manager's operation tap), then
applies the transaction and hands the resulting update to the manager as one
local operation. The manager's collection receives everything and converges.

Every replica finally checks its text against the trace's ``endContent``.

The replay is timed from the moment every replica has loaded the trace, opened
its store, connected and received the seed record: they are released together,
and the figures (wall time, operations per second, each replica's CPU seconds)
measure the sync alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue as queue_mod
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fields
from .config import SyncConfig
from .crdt import LoroDoc
from .errors import SyncError
from .manager import EndToEndSyncManager
from .protocol import RemoteOp
from .storage import Storage
from .traces import Trace, load_trace
from .transport import Transport

__all__ = ["ReplayError", "ReplayResult", "ReplaySummary", "replay"]

RECORD = "doc"
END = "end"
FIELD = "body"
Report = Callable[[int, str, Any], None]
Start = Callable[[], Awaitable[None]]


class ReplayError(SyncError):
    """The replay could not run, or a replica did not converge."""


@dataclass
class ReplayResult:
    """What one replica did and saw."""

    index: int
    role: str
    local_ops: int = 0
    #: Local changes merged into others before being pushed.
    merged_ops: int = 0
    remote_ops: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    converged: bool = False
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    error: str | None = None
    detail: str = ""


@dataclass
class ReplaySummary:
    trace: str
    url: str
    operations: int
    replicas: int
    seconds: float
    results: list[ReplayResult] = field(default_factory=list)
    server_health: dict[str, Any] | None = None
    server_figures: dict[str, float] = field(default_factory=dict)
    server_cpu_seconds: float | None = None
    server_rss_bytes: int | None = None

    @property
    def converged(self) -> bool:
        return bool(self.results) and all(r.converged for r in self.results)

    @property
    def ops_per_second(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    @property
    def wire_bytes(self) -> int:
        return sum(r.bytes_sent + r.bytes_received for r in self.results)


@dataclass(frozen=True)
class _Plan:
    index: int
    role: str  # "writer", "reader" or "agent"
    agent: int
    store: str
    trace_path: str
    url: str
    collection: str
    agent_replicas: tuple[int, ...]
    timeout: float
    seed: str


# One replica -----------------------------------------------------------------


def _config() -> SyncConfig:
    return SyncConfig(max_batch_ops=1000, status_interval=None)


async def _run_replica(plan: _Plan, report: Report, start: Start) -> ReplayResult:
    """One replica's part: set up, wait for the common start, replay, verify.

    Loading the trace, opening the store, connecting and receiving the seed
    record are set-up, not sync: the replica reports ``ready`` and its clock
    starts only when ``start()`` returns, which happens for all replicas at once.
    """
    trace = load_trace(plan.trace_path)
    result = ReplayResult(plan.index, plan.role)
    started = time.perf_counter()
    cpu_started = time.process_time()
    manager = EndToEndSyncManager(
        Storage.sqlite(plan.store), Transport.websocket(plan.url), _config()
    )
    # Agents tap the operation stream before connecting: what arrives with the
    # first pull counts too.
    inbox = _Inbox(plan.collection)
    manager.on_operations(inbox.tap)
    try:
        await manager.start()
        coll = manager.collection(plan.collection)
        await _until(
            lambda: RECORD in coll, plan.timeout, "the trace's record never arrived"
        )
        report(plan.index, "ready", None)
        await start()
        started = time.perf_counter()
        cpu_started = time.process_time()
        if plan.role == "writer":
            await _write_sequential(manager, trace, plan, result, report)
        elif plan.role == "agent":
            await _write_agent(manager, trace, plan, result, report, inbox)
        await manager.wait_synced(plan.timeout)
        with contextlib.suppress(ReplayError):
            if plan.role == "agent":
                # Every transaction is one operation (adopted updates are never
                # merged), after the seed's: wait until the cursor has passed
                # them all, then read the text (reading brings the document
                # state up to date, so it is done once, not while waiting).
                session = manager.replica.session
                total = 1 + len(trace.txns)
                await _until(
                    lambda: session.cursor(plan.collection) >= total,
                    plan.timeout,
                    "lagging",
                )
            else:
                await _until(lambda: END in coll, plan.timeout, "lagging")
        text = coll.text(RECORD, FIELD)
        try:
            await _until(
                lambda: (
                    len(text) == len(trace.end_content)
                    and str(text) == trace.end_content
                ),
                plan.timeout,
                "did not converge",
            )
            result.converged = True
        except ReplayError as exc:
            result.detail = (
                f"{exc}: {len(text)} characters, expected {len(trace.end_content)}"
            )
        stats = manager.replica.statistics()
        result.remote_ops = stats.remote_ops_applied
        result.local_ops = stats.local_ops
        result.merged_ops = stats.local_ops_merged
        result.bytes_sent = stats.bytes_sent
        result.bytes_received = stats.bytes_received
    except (SyncError, OSError, TimeoutError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        await manager.stop()
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = time.process_time() - cpu_started
    return result


async def _write_sequential(
    manager: EndToEndSyncManager,
    trace: Trace,
    plan: _Plan,
    result: ReplayResult,
    report: Report,
) -> None:
    text = manager.collection(plan.collection).text(RECORD, FIELD)
    done = 0
    chunk = 2000
    patches = [p for txn in trace.txns for p in txn.patches]
    for start in range(0, len(patches), chunk):
        # One store commit per chunk; every patch is still its own operation.
        with manager.batch():
            for pos, deleted, inserted in patches[start : start + chunk]:
                text.splice(pos, deleted, inserted)
        done += len(patches[start : start + chunk])
        report(plan.index, "progress", done)
        await asyncio.sleep(0)
    manager.collection(plan.collection).insert(END, {})
    result.local_ops = done


async def _write_agent(
    manager: EndToEndSyncManager,
    trace: Trace,
    plan: _Plan,
    result: ReplayResult,
    report: Report,
    inbox: _Inbox,
) -> None:
    coll = manager.collection(plan.collection)
    # Which trace transaction each remote operation carries: agent a's k-th
    # transaction is operation (replica of a, k + 1) of a fresh store.
    position: dict[int, int] = {}
    per_agent: dict[int, list[int]] = {}
    for index, txn in enumerate(trace.txns):
        order = per_agent.setdefault(txn.agent, [])
        position[index] = len(order) + 1
        order.append(index)
    arrived = inbox.arrived
    wake = inbox.wake

    # The agent's own document starts from the seed alone (the record holding
    # the empty text), under a peer id of its own.
    work = LoroDoc()
    work.peer_id = (manager.replica.replica_id ^ 0x5A5A5A5A5A5A5A5A) & (
        (1 << 63) - 1
    ) | 1
    work.import_(await asyncio.to_thread(Path(plan.seed).read_bytes))
    updates: list[bytes] = []

    def keep(update: bytes) -> bool:
        updates.append(bytes(update))
        return True

    sub = work.subscribe_local_update(keep)
    record = work.get_map("records").get(RECORD).container
    body = record.get(FIELD).container

    have: set[int] = set()
    done = 0
    for index in per_agent.get(plan.agent, []):
        txn = trace.txns[index]
        missing = _missing_ancestors(trace, index, have)
        if missing:
            keys = [
                (plan.agent_replicas[trace.txns[m].agent], position[m]) for m in missing
            ]
            for key, txn_index in zip(keys, missing, strict=True):
                while key not in arrived:
                    wake.clear()
                    try:
                        await asyncio.wait_for(wake.wait(), plan.timeout)
                    except TimeoutError:
                        raise ReplayError(
                            f"agent {plan.agent}: transaction {txn_index} never arrived"
                        ) from None
            # One import for all of them: Loro's cost is mostly per import.
            work.import_batch([arrived.pop(key) for key in keys])
            have.update(missing)
        for pos, deleted, inserted in txn.patches:
            if deleted:
                body.delete(pos, deleted)
            if inserted:
                body.insert(pos, inserted)
        work.commit()
        if not updates:
            raise ReplayError(f"transaction {index} changes nothing; cannot replay it")
        coll.apply_update(updates.pop())
        have.add(index)
        done += len(txn.patches)
        # Yield after every transaction so the link sends it at once: the other
        # agents may be waiting for exactly this one.
        await asyncio.sleep(0)
        if done % 200 == 0:
            report(plan.index, "progress", done)
    report(plan.index, "progress", done)
    del sub
    result.local_ops = done


class _Inbox:
    """Remote operations of one collection by ``(replica, counter)``."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.arrived: dict[tuple[int, int], bytes] = {}
        self.wake = asyncio.Event()

    def tap(self, collection: str, ops: tuple[RemoteOp, ...]) -> None:
        if collection == self.collection and ops:
            for op in ops:
                self.arrived[(op.replica, op.counter)] = op.data
            self.wake.set()


def _missing_ancestors(trace: Trace, index: int, have: set[int]) -> list[int]:
    """Ancestors of transaction ``index`` not in ``have``, oldest first."""
    seen: set[int] = set()
    stack = [p for p in trace.txns[index].parents if p not in have]
    while stack:
        txn = stack.pop()
        if txn in seen or txn in have:
            continue
        seen.add(txn)
        stack.extend(p for p in trace.txns[txn].parents if p not in have)
    return sorted(seen)


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not condition():
        if time.monotonic() > deadline:
            raise ReplayError(f"{what} within {timeout:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def _process_main(plan: _Plan, results: Any, go: Any) -> None:
    def report(index: int, kind: str, value: Any) -> None:
        results.put((index, kind, value))

    async def start() -> None:
        if not await asyncio.to_thread(go.wait, plan.timeout):
            raise ReplayError("the other replicas never became ready")

    try:
        result = asyncio.run(_run_replica(plan, report, start))
    except BaseException as exc:  # the parent must always hear back
        result = ReplayResult(
            plan.index, plan.role, error=f"{type(exc).__name__}: {exc}"
        )
    results.put((plan.index, "done", result))


# The whole replay ------------------------------------------------------------


@contextlib.contextmanager
def _local_server(workdir: Path) -> Any:
    """A ``leptos-sync serve`` process on a free loopback port."""
    command = [
        sys.executable,
        "-m",
        "leptos_sync",
        "serve",
        "--db",
        str(workdir / "server.sqlite3"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "ws://" not in line:
            err = proc.stderr.read() if proc.stderr else ""
            raise ReplayError(f"the server did not start: {line.strip()} {err.strip()}")
        url = line.strip().split()[-1]
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _seed(url: str, workdir: Path, collection: str, trace: Trace) -> Path:
    """Create the trace's record through the server; returns its snapshot file."""
    store = Storage.sqlite(workdir / "seed.sqlite3")
    async with EndToEndSyncManager(store, Transport.websocket(url), _config()) as seed:
        coll = seed.collection(collection)
        coll.insert(RECORD, {FIELD: fields.text(trace.start_content)})
        await seed.wait_synced(30)
        path = workdir / "seed.loro"
        path.write_bytes(coll.export_snapshot())
    return path


def _replica_ids(paths: list[Path]) -> list[int]:
    ids = []
    for path in paths:
        store = Storage.sqlite(path)
        ids.append(store.replica_id())
        store.close()
    return ids


def replay(
    trace_path: str | Path,
    *,
    url: str | None = None,
    replicas: int | None = None,
    processes: bool = True,
    timeout: float = 600.0,
    on_progress: Callable[[int, int], None] | None = None,
    workdir: str | Path | None = None,
) -> ReplaySummary:
    """Replay a trace through the server at ``url`` (or a fresh local one).

    Args:
        trace_path: a sequential or concurrent trace (``.json`` or ``.json.gz``).
        url: a running server's WebSocket URL; ``None`` starts one on a free
            loopback port with a temporary SQLite store.
        replicas: sequential traces: total replicas (one writer, the rest
            readers; default 2). Concurrent traces always use one per agent.
        processes: run each replica in its own process (else all in this one).
        timeout: seconds any one wait may take before the replay fails.
        on_progress: called with (operations applied, total) as writers progress.
    """
    trace = load_trace(trace_path)
    own_dir = workdir is None
    if workdir is None:
        base = Path(tempfile.mkdtemp(prefix="leptos-sync-"))
    else:
        base = Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.ExitStack() as stack:
            pid = None
            if url is None:
                url, pid = stack.enter_context(_local_server(base))
            summary = _replay(
                trace,
                Path(trace_path),
                url,
                replicas,
                processes,
                timeout,
                on_progress,
                base,
            )
            if pid is not None:
                summary.server_cpu_seconds, summary.server_rss_bytes = _usage(pid)
            return summary
    finally:
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)


def _replay(
    trace: Trace,
    trace_path: Path,
    url: str,
    replicas: int | None,
    processes: bool,
    timeout: float,
    on_progress: Callable[[int, int], None] | None,
    base: Path,
) -> ReplaySummary:
    collection = f"trace-{trace.name}-{secrets.token_hex(4)}"
    seed = asyncio.run(_seed(url, base, collection, trace))

    if trace.concurrent:
        roles = [("agent", a) for a in range(trace.num_agents)]
    else:
        count = 2 if replicas is None else replicas
        if count < 1:
            raise ReplayError("--replicas must be at least 1")
        roles = [("writer", 0)] + [("reader", 0)] * (count - 1)
    stores = [base / f"replica-{i}.sqlite3" for i in range(len(roles))]
    ids = _replica_ids(stores)
    agent_ids = tuple(ids) if trace.concurrent else ()
    plans = [
        _Plan(
            i,
            role,
            agent,
            str(stores[i]),
            str(trace_path.resolve()),
            url,
            collection,
            agent_ids,
            timeout,
            str(seed),
        )
        for i, (role, agent) in enumerate(roles)
    ]
    total = trace.patch_count
    progress = dict.fromkeys(range(len(plans)), 0)

    def note(index: int, kind: str, value: Any) -> None:
        if kind == "progress":
            progress[index] = int(value)
            if on_progress is not None:
                on_progress(sum(progress.values()), total)

    if processes:
        results, started = _run_processes(plans, note, timeout)
    else:
        results, started = asyncio.run(_run_tasks(plans, note, timeout))
    seconds = time.perf_counter() - started
    summary = ReplaySummary(trace.name, url, total, len(plans), seconds, results)
    summary.server_health, summary.server_figures = _server_figures(url)
    return summary


class _StartLine:
    """Releases the replicas together once every one is ready.

    A replica that finishes before the start (it failed during set-up) releases
    the others at once, so that they do not wait out their timeout.
    """

    def __init__(self, count: int, release: Callable[[], None]) -> None:
        self.waiting = set(range(count))
        self.release = release
        self.started: float | None = None

    def ready(self, index: int) -> None:
        self.waiting.discard(index)
        if not self.waiting:
            self.go()

    def go(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()
            self.release()

    @property
    def started_at(self) -> float:
        return self.started if self.started is not None else time.perf_counter()


def _run_processes(
    plans: list[_Plan], note: Report, timeout: float
) -> tuple[list[ReplayResult], float]:
    ctx = mp.get_context("spawn")
    results_q = ctx.Queue()
    go = ctx.Event()
    line = _StartLine(len(plans), go.set)
    procs = [
        ctx.Process(target=_process_main, args=(plan, results_q, go), daemon=True)
        for plan in plans
    ]
    for proc in procs:
        proc.start()
    finished: dict[int, ReplayResult] = {}
    deadline = time.monotonic() + timeout * 2
    try:
        while len(finished) < len(plans):
            try:
                index, kind, value = results_q.get(timeout=0.2)
            except queue_mod.Empty:
                if time.monotonic() > deadline:
                    raise ReplayError("replicas did not finish in time") from None
                for plan, proc in zip(plans, procs, strict=True):
                    if not proc.is_alive() and plan.index not in finished:
                        # Give the queue a moment: the result may be in flight.
                        with contextlib.suppress(queue_mod.Empty):
                            index, kind, value = results_q.get(timeout=1.0)
                            if kind == "done":
                                finished[index] = value
                            continue
                        finished[plan.index] = ReplayResult(
                            plan.index,
                            plan.role,
                            error=f"process exited with code {proc.exitcode}",
                        )
                        line.go()
                continue
            if kind == "done":
                finished[index] = value
                line.go()
            elif kind == "ready":
                line.ready(index)
            else:
                note(index, kind, value)
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    return [finished[p.index] for p in plans], line.started_at


async def _run_tasks(
    plans: list[_Plan], note: Report, timeout: float
) -> tuple[list[ReplayResult], float]:
    go = asyncio.Event()
    line = _StartLine(len(plans), go.set)

    def on_note(index: int, kind: str, value: Any) -> None:
        if kind == "ready":
            line.ready(index)
        else:
            note(index, kind, value)

    async def start() -> None:
        try:
            await asyncio.wait_for(go.wait(), timeout)
        except TimeoutError:
            raise ReplayError("the other replicas never became ready") from None

    async def one(plan: _Plan) -> ReplayResult:
        try:
            return await _run_replica(plan, on_note, start)
        finally:
            line.go()

    results = list(await asyncio.gather(*(one(p) for p in plans)))
    return results, line.started_at


def _usage(pid: int) -> tuple[float | None, int | None]:
    """CPU seconds and resident memory of the server process we started."""
    import psutil

    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        return times.user + times.system, proc.memory_info().rss
    except psutil.Error:
        return None, None


def _server_figures(url: str) -> tuple[dict[str, Any] | None, dict[str, float]]:
    import httpx

    base = url.replace("ws://", "http://").replace("wss://", "https://")
    base = base.rsplit("/ws", 1)[0]
    health: dict[str, Any] | None = None
    figures: dict[str, float] = {}
    try:
        with httpx.Client(timeout=5) as client:
            health = client.get(f"{base}/health").json()
            for line in client.get(f"{base}/metrics").text.splitlines():
                if line.startswith("leptos_sync_server_") and " " in line:
                    name, value = line.rsplit(" ", 1)
                    with contextlib.suppress(ValueError):
                        figures[name] = float(value)
    except (httpx.HTTPError, ValueError):
        pass
    return health, figures


def default_trace(name: str = "friendsforever") -> Path:
    """Where the shared editing traces live, relative to this checkout."""
    env = os.environ.get("LEPTOS_SYNC_TRACES")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidates.append(parent / "shared" / "data" / "editing-traces")
        candidates.append(parent.parent / "shared" / "data" / "editing-traces")
    for directory in candidates:
        path = directory / f"{name}.json.gz"
        if path.exists():
            return path
    raise ReplayError(
        f"cannot find the {name} trace; pass its path or set LEPTOS_SYNC_TRACES"
    )
