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

*Concurrent* traces have one replica per agent that the transactions name (at
most :data:`MAX_REPLICAS`). Before each of its transactions an
agent must hold exactly the state the transaction's ``parents`` name, no more and
no less, or the recorded positions would point at the wrong places. Each agent
therefore edits its own Loro document: it imports, oldest first, the ancestors it
still lacks (received from the server through the manager's operation tap), then
applies the transaction and hands the resulting update to the manager as one
local operation. The manager's collection receives everything and converges.

Every replica finally checks its text against the trace's ``endContent``, once:
as soon as it holds every change (the writer has written them all, a reader holds
the ``end`` record, an agent's cursor has passed every transaction) its text is
final, and waiting longer could not change the verdict.

A replica that fails (a patch that does not apply, a change that never arrives,
a lost connection) stops the whole replay at once: the other replicas and the
local server are stopped, and :class:`ReplayError` names the replica and says why.

The replay is timed from the moment every replica has loaded the trace, opened
its store, connected and received the seed record: they are released together,
and the figures (wall time, operations per second, each replica's CPU seconds)
measure the sync alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
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
from .crdt import LoroDoc, call_loro
from .errors import IntegrityError, SyncError
from .manager import EndToEndSyncManager
from .protocol import RemoteOp
from .storage import Storage
from .traces import Trace, load_trace
from .transport import Transport

__all__ = [
    "MAX_REPLICAS",
    "ReplayError",
    "ReplayResult",
    "ReplaySummary",
    "replay",
    "replica_roles",
]

RECORD = "doc"
END = "end"
FIELD = "body"
Report = Callable[[int, str, Any], None]
Start = Callable[[], Awaitable[None]]

#: The most replicas one replay runs. Each is a process with its own SQLite
#: store and connection; a trace naming more agents than this is refused
#: rather than left to exhaust the machine.
MAX_REPLICAS = 64


class ReplayError(SyncError):
    """The replay could not run, or a replica failed (and the replay stopped)."""


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
    #: (agent, replica id) of every agent's replica (concurrent traces).
    agent_replicas: tuple[tuple[int, int], ...]
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

        # Once the replica holds every change its text is final: compare it
        # once. (Reading the text brings the document up to date, so it is not
        # read while waiting.)
        await _until(
            _holds_everything(manager, plan, trace),
            plan.timeout,
            "did not receive every change",
        )
        result.detail = _difference(str(coll.text(RECORD, FIELD)), trace.end_content)
        result.converged = not result.detail
        stats = manager.replica.statistics()
        result.remote_ops = stats.remote_ops_applied
        result.local_ops = stats.local_ops
        result.merged_ops = stats.local_ops_merged
        result.bytes_sent = stats.bytes_sent
        result.bytes_received = stats.bytes_received
    except (SyncError, OSError, TimeoutError) as exc:
        result.error = _describe(exc)
    finally:
        await manager.stop()
        result.seconds = time.perf_counter() - started
        result.cpu_seconds = time.process_time() - cpu_started
    return result


def _holds_everything(
    manager: EndToEndSyncManager, plan: _Plan, trace: Trace
) -> Callable[[], bool]:
    """Whether the replica holds every change of the replay, as a condition."""
    if plan.role != "agent":
        # The writer's changes form one causal chain ending with ``end``.
        coll = manager.collection(plan.collection)
        return lambda: END in coll
    # Every transaction is one operation (adopted updates are never merged),
    # after the seed's: the cursor passes them all.
    session = manager.replica.session
    total = 1 + len(trace.txns)
    return lambda: session.cursor(plan.collection) >= total


def _difference(text: str, expected: str) -> str:
    """Where ``text`` departs from ``expected``; empty when they are equal."""
    if text == expected:
        return ""
    at = next(
        (i for i, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b),
        min(len(text), len(expected)),
    )
    return (
        f"differs from endContent at character {at}: "
        f"{len(text)} characters, expected {len(expected)}"
    )


def _describe(exc: BaseException) -> str:
    """One line for a replica's error (the replay's own errors need no type)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, ReplayError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _patch(pos: int, deleted: int, inserted: str) -> str:
    shown = inserted if len(inserted) <= 20 else inserted[:20] + "..."
    return f"[{pos}, {deleted}, {shown!r}]"


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
    patches = [
        (index, pos, deleted, inserted)
        for index, txn in enumerate(trace.txns)
        for pos, deleted, inserted in txn.patches
    ]
    for start in range(0, len(patches), chunk):
        # One store commit and one operation per chunk; every patch is still
        # its own local transaction with its own metadata.
        with manager.batch():
            for index, pos, deleted, inserted in patches[start : start + chunk]:
                try:
                    text.splice(pos, deleted, inserted)
                except SyncError as exc:
                    raise ReplayError(
                        f"txns[{index}] patch {_patch(pos, deleted, inserted)} "
                        f"does not apply: {exc}"
                    ) from exc
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
    replica_of = dict(plan.agent_replicas)
    arrived = inbox.arrived
    wake = inbox.wake

    # The agent's own document starts from the seed alone (the record holding
    # the empty text), under a peer id of its own.
    work = LoroDoc()
    work.peer_id = (manager.replica.replica_id ^ 0x5A5A5A5A5A5A5A5A) & (
        (1 << 63) - 1
    ) | 1
    call_loro(work.import_, await asyncio.to_thread(Path(plan.seed).read_bytes))
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
            keys = [(replica_of[trace.txns[m].agent], position[m]) for m in missing]
            for key, txn_index in zip(keys, missing, strict=True):
                while key not in arrived:
                    wake.clear()
                    try:
                        await asyncio.wait_for(wake.wait(), plan.timeout)
                    except TimeoutError:
                        raise ReplayError(
                            f"txns[{txn_index}], which txns[{index}] follows, never "
                            f"arrived within {plan.timeout:g} s"
                        ) from None
            # One import for all of them: Loro's cost is mostly per import.
            call_loro(work.import_batch, [arrived.pop(key) for key in keys])
            have.update(missing)
        for pos, deleted, inserted in txn.patches:
            # Loro refuses a position outside the text with a bare
            # BaseException; call_loro makes it an IntegrityError.
            try:
                if deleted:
                    call_loro(body.delete, pos, deleted)
                if inserted:
                    call_loro(body.insert, pos, inserted)
            except IntegrityError as exc:
                raise ReplayError(
                    f"txns[{index}] patch "
                    f"{_patch(pos, deleted, inserted)} is outside the text of "
                    f"length {body.len_unicode} that its parents give"
                ) from exc
        call_loro(work.commit)
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
        result = ReplayResult(plan.index, plan.role, error=_describe(exc))
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


async def _seed(
    url: str, workdir: Path, collection: str, trace: Trace, timeout: float
) -> Path:
    """Create the trace's record through the server; returns its snapshot file.

    This is the first contact with the server: a server that cannot be reached
    is reported here, with the connection's error.
    """
    store = Storage.sqlite(workdir / "seed.sqlite3")
    async with EndToEndSyncManager(store, Transport.websocket(url), _config()) as seed:
        coll = seed.collection(collection)
        coll.insert(RECORD, {FIELD: fields.text(trace.start_content)})
        try:
            await seed.wait_synced(timeout)
        except TimeoutError:
            status = seed.status()
            if status.online:
                raise ReplayError(
                    f"the server at {url} did not acknowledge the trace's record "
                    f"within {timeout:g} s"
                ) from None
            reason = f": {status.last_error}" if status.last_error else ""
            raise ReplayError(
                f"could not reach the server at {url} within {timeout:g} s{reason}"
            ) from None
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


def replica_roles(trace: Trace, replicas: int | None = None) -> list[tuple[str, int]]:
    """The replicas a replay of ``trace`` runs, as ``(role, agent)`` pairs.

    A sequential trace gets one writer and ``replicas - 1`` readers (``replicas``
    defaults to 2); a concurrent trace gets one agent per agent that its
    transactions name, whatever ``replicas`` says.

    Raises:
        ReplayError: more than :data:`MAX_REPLICAS` replicas, or fewer than one.
    """
    if trace.concurrent:
        agents = trace.agents or (0,)
        if len(agents) > MAX_REPLICAS:
            raise ReplayError(
                f"the trace's transactions name {len(agents)} agents; a replay runs "
                f"one replica process per agent, at most {MAX_REPLICAS}"
            )
        return [("agent", agent) for agent in agents]
    count = 2 if replicas is None else replicas
    if not 1 <= count <= MAX_REPLICAS:
        raise ReplayError(f"replicas must be between 1 and {MAX_REPLICAS}, not {count}")
    return [("writer", 0)] + [("reader", 0)] * (count - 1)


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

    Raises:
        TraceError: the trace cannot be read or is malformed.
        ReplayError: the replay could not run, or a replica failed (the others
            are stopped at once); a replica whose text differs from endContent
            is not an error but a summary that has not converged.
    """
    if isinstance(timeout, bool) or not (
        isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0
    ):
        raise ReplayError(
            f"timeout must be a positive number of seconds, not {timeout!r}"
        )
    trace = load_trace(trace_path)
    roles = replica_roles(trace, replicas)
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
                roles,
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
    roles: list[tuple[str, int]],
    processes: bool,
    timeout: float,
    on_progress: Callable[[int, int], None] | None,
    base: Path,
) -> ReplaySummary:
    collection = f"trace-{trace.name}-{secrets.token_hex(4)}"
    seed = asyncio.run(_seed(url, base, collection, trace, timeout))

    stores = [base / f"replica-{i}.sqlite3" for i in range(len(roles))]
    ids = _replica_ids(stores)
    agent_ids = tuple(
        (agent, replica_id)
        for (role, agent), replica_id in zip(roles, ids, strict=True)
        if role == "agent"
    )
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
    """Releases the replicas together once every one is ready."""

    def __init__(self, count: int, release: Callable[[], None]) -> None:
        self.waiting = set(range(count))
        self.release = release
        self.started: float | None = None

    def ready(self, index: int) -> None:
        self.waiting.discard(index)
        if not self.waiting and self.started is None:
            self.started = time.perf_counter()
            self.release()

    @property
    def started_at(self) -> float:
        return self.started if self.started is not None else time.perf_counter()


def _failure(plan: _Plan, result: ReplayResult) -> ReplayError:
    """The error that stops the replay when ``plan``'s replica failed."""
    who = f"agent {plan.agent}" if plan.role == "agent" else plan.role
    return ReplayError(f"replica {plan.index} ({who}) failed: {result.error}")


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
    exited: dict[int, float] = {}
    # Every wait of a replica ends within the timeout, and a replica waits at
    # most twice in a row without a word (synced, then holding every change);
    # the replicas silent for longer than that are stuck. This is a safety
    # net, not the replay's timing.
    silence = timeout * 3 + 10
    heard = time.monotonic()
    clean = False
    try:
        while len(finished) < len(plans):
            message = _next_message(results_q)
            if message is None:
                now = time.monotonic()
                if now - heard > silence:
                    stuck = [p.index for p in plans if p.index not in finished]
                    raise ReplayError(
                        f"replicas {stuck} were silent for {silence:g} s; "
                        "the replay was stopped"
                    )
                for plan, proc in zip(plans, procs, strict=True):
                    if plan.index in finished or proc.is_alive():
                        continue
                    # Its result may still be on its way through the queue.
                    if now - exited.setdefault(plan.index, now) > 1.0:
                        error = f"its process exited with code {proc.exitcode}"
                        lost = ReplayResult(plan.index, plan.role, error=error)
                        raise _failure(plan, lost)
                continue
            index, kind, value = message
            heard = time.monotonic()
            if kind == "done":
                finished[index] = value
                if value.error is not None:
                    raise _failure(plans[index], value)
            elif kind == "ready":
                line.ready(index)
            else:
                note(index, kind, value)
        clean = True
    finally:
        _stop_processes(procs, clean)
        results_q.close()
    return [finished[p.index] for p in plans], line.started_at


def _next_message(results: Any) -> tuple[int, str, Any] | None:
    """The next message from a replica, or ``None`` after a short wait."""
    try:
        message: tuple[int, str, Any] = results.get(timeout=0.2)
    except queue_mod.Empty:
        return None
    return message


def _stop_processes(procs: list[Any], clean: bool) -> None:
    """Let finished replicas exit; stop the others at once (SIGTERM, then kill)."""
    if not clean:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join()


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

    tasks = [asyncio.create_task(_run_replica(p, on_note, start)) for p in plans]
    try:
        for next_done in asyncio.as_completed(tasks):
            result = await next_done
            if result.error is not None:
                raise _failure(plans[result.index], result)
    finally:
        # After a failure the others are cancelled; their managers still stop.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return [task.result() for task in tasks], line.started_at


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
