"""What every benchmark shares: result rows, ratio lines, servers, processes.

Every benchmark measures leptos_sync ("ours") and a named peer in the same run on
the same input, repeats the measurement, and reports medians and their ratio. A
ratio is always written so that **higher is better for ours** when the figure is a
throughput and **lower is better** when it is a cost; the row says which.

Servers run as subprocesses on 127.0.0.1 with a free port, so that their memory
and CPU can be read through psutil without counting the clients. Nothing here
talks to any address but the loopback one, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import multiprocessing as mp
import os
import queue as queue_mod
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


# Results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One compared figure: ours against the peer, with the target if there is one."""

    bench: str
    figure: str
    ours: float
    peer: float
    unit: str
    peer_name: str
    ratio: float
    target: str = ""
    met: bool | None = None

    def cells(self) -> list[str]:
        verdict = "" if self.met is None else ("met" if self.met else "MISSED")
        return [
            self.bench,
            self.figure,
            f"{_fmt(self.ours)} {self.unit}",
            f"{_fmt(self.peer)} {self.unit} ({self.peer_name})",
            f"{self.ratio:.3g}",
            self.target,
            verdict,
        ]


HEADER = ["bench", "figure", "ours", "peer", "ratio", "target", ""]


def _fmt(value: float) -> str:
    if value != value:  # NaN: not measured
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def compare(
    bench: str,
    figure: str,
    ours: float,
    peer: float,
    unit: str,
    peer_name: str,
    *,
    higher_is_better: bool,
    target: float | None = None,
) -> Row:
    """Build a row and print its ratio line.

    The ratio is ours / peer for a figure where higher is better and also for a
    cost (lower is better); ``target`` is a lower bound in the first case and an
    upper bound in the second.
    """
    ratio = ours / peer if peer else float("nan")
    met: bool | None = None
    target_text = ""
    if target is not None:
        met = ratio >= target if higher_is_better else ratio <= target
        target_text = f"{'>=' if higher_is_better else '<='} {target:g}"
    row = Row(bench, figure, ours, peer, unit, peer_name, ratio, target_text, met)
    verdict = "" if met is None else ("  met" if met else "  MISSED")
    note = f" (target {target_text})" if target_text else ""
    say(
        f"ratio {bench}/{figure}: ours {_fmt(ours)} {unit}, {peer_name} "
        f"{_fmt(peer)} {unit}, ours/{peer_name} {ratio:.3g}{note}{verdict}"
    )
    return row


def say(line: str) -> None:
    """Print a progress or result line at once (the runs are long)."""
    print(line, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


# Inputs -------------------------------------------------------------------------------


def trace_path(name: str) -> Path:
    """A shared editing trace, found the way ``leptos_sync.replay`` finds it."""
    from leptos_sync.replay import default_trace

    return default_trace(name)


# Servers ------------------------------------------------------------------------------


class ServerProcess:
    """A server subprocess that prints its ``ws://`` URL on its first line.

    Samples the process's RSS in a background thread so that the peak can be
    reported as well as the current value.
    """

    def __init__(self, command: list[str], *, start_timeout: float = 30.0) -> None:
        self.command = command
        self.start_timeout = start_timeout
        self.url = ""
        self.peak_rss = 0
        self._popen: subprocess.Popen[str] | None = None
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        self.process: psutil.Process | None = None

    def __enter__(self) -> ServerProcess:
        env = dict(os.environ, PYTHONPATH=_pythonpath())
        self._popen = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO,
            env=env,
        )
        line = _readline(self._popen, self.start_timeout)
        if "ws://" not in line:
            self.__exit__(None, None, None)
            raise RuntimeError(f"server did not start: {self.command}: {line!r}")
        self.url = line.strip().split()[-1]
        self.process = psutil.Process(self._popen.pid)
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=2)
        popen = self._popen
        if popen is None:
            return
        popen.terminate()
        try:
            popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(timeout=10)
        if popen.stdout is not None:
            popen.stdout.close()

    @property
    def http_url(self) -> str:
        return self.url.replace("ws://", "http://").rsplit("/", 1)[0]

    def base_url(self) -> str:
        """``ws://host:port`` without the path."""
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{rest.split('/', 1)[0]}"

    def rss(self) -> int:
        assert self.process is not None
        return int(self.process.memory_info().rss)

    def cpu_seconds(self) -> float:
        assert self.process is not None
        times = self.process.cpu_times()
        return float(times.user + times.system)

    def reset_peak(self) -> None:
        self.peak_rss = self.rss()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(psutil.Error, AssertionError):
                self.peak_rss = max(self.peak_rss, self.rss())


def _readline(popen: subprocess.Popen[str], timeout: float) -> str:
    """The first stdout line of ``popen``, or '' after ``timeout`` seconds."""
    assert popen.stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(popen.stdout.readline()))  # type: ignore[union-attr]
    reader.daemon = True
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


def _pythonpath() -> str:
    parts = [str(REPO), str(REPO / "src")]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


def ours_server(workdir: Path) -> ServerProcess:
    """``leptos-sync serve`` with a fresh SQLite store in ``workdir``."""
    return ServerProcess(
        [
            sys.executable,
            "-m",
            "leptos_sync",
            "serve",
            "--db",
            str(workdir / "server.sqlite3"),
            "--host",
            HOST,
            "--port",
            "0",
        ]
    )


def peer_server() -> ServerProcess:
    """pycrdt's ``WebsocketServer`` behind its ``ASGIServer``, on uvicorn."""
    return ServerProcess([sys.executable, "-m", "bench.peer_pycrdt", "serve"])


# Processes ----------------------------------------------------------------------------


def spawn() -> Any:
    return mp.get_context("spawn")


def run_job(
    fn: Callable[..., Any], args: tuple[Any, ...], results_q: Any, index: int
) -> None:
    """A job's process: ``fn(*args)`` (awaited if it is a coroutine), reported back.

    The result, or the error as text, goes on ``results_q`` as ``(index, value)``
    exactly once, so the parent always hears back.
    """
    try:
        result = fn(*args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        results_q.put((index, result))
    except BaseException as exc:
        report_error(results_q, index, exc)


def run_processes(
    jobs: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]],
    timeout: float,
    *,
    on_start: Callable[[], None] | None = None,
) -> list[Any]:
    """Run ``fn(*args)`` for each job ``(fn, args)`` in its own process.

    ``fn`` is a module-level function, plain or ``async``. The results come back
    in job order. A job that fails, dies or overruns ``timeout`` gives a
    ``RuntimeError`` result naming the job instead of hanging the benchmark.
    """
    ctx = spawn()
    results_q = ctx.Queue()
    procs = [
        ctx.Process(target=run_job, args=(fn, args, results_q, i), daemon=True)
        for i, (fn, args) in enumerate(jobs)
    ]
    for proc in procs:
        proc.start()
    if on_start is not None:
        on_start()
    finished: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(finished) < len(procs):
            try:
                index, result = results_q.get(timeout=0.2)
                finished[index] = result
                continue
            except queue_mod.Empty:
                pass
            if time.monotonic() > deadline:
                for i in range(len(procs)):
                    finished.setdefault(i, RuntimeError(f"job {i} overran {timeout} s"))
                break
            for i, proc in enumerate(procs):
                if i not in finished and not proc.is_alive():
                    with contextlib.suppress(queue_mod.Empty):
                        index, result = results_q.get(timeout=1.0)
                        finished[index] = result
                        continue
                    finished[i] = RuntimeError(f"job {i} exited with {proc.exitcode}")
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    return [finished[i] for i in range(len(procs))]


def check(results: Sequence[Any], names: Sequence[str] = ()) -> None:
    """Raise the first error among job results, naming the job."""
    for i, result in enumerate(results):
        if isinstance(result, BaseException):
            name = names[i] if i < len(names) else f"job {i}"
            raise RuntimeError(f"benchmark process {name} failed: {result}") from result


def report_error(results_q: Any, index: int, exc: BaseException) -> None:
    """Send an exception back to the parent as text (with the innermost cause)."""
    inner = exc
    while isinstance(inner, BaseExceptionGroup) and inner.exceptions:
        inner = inner.exceptions[0]
    results_q.put((index, RuntimeError(f"{type(inner).__name__}: {inner}")))


# Idle connections ---------------------------------------------------------------------


async def hold_idle(url: str, count: int, ready: Any, stop: Any) -> int:
    """Open ``count`` WebSocket connections to ``url`` and keep them open, silent.

    Sets ``ready`` once all are open and closes them when ``stop`` is set (or
    after ten minutes at most).
    """
    from websockets.asyncio.client import connect

    conns = []
    try:
        for _ in range(count):
            conns.append(
                await connect(
                    url, open_timeout=30, ping_interval=None, compression=None
                )
            )
        ready.set()
        deadline = time.monotonic() + 600
        while not stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return len(conns)
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


@contextlib.contextmanager
def idle_connections(url: str, count: int, timeout: float = 120.0) -> Iterator[None]:
    """``count`` idle connections to ``url``, held by a helper process."""
    if count <= 0:
        yield
        return
    ctx = spawn()
    ready, stop = ctx.Event(), ctx.Event()
    results_q = ctx.Queue()
    proc = ctx.Process(
        target=run_job,
        args=(hold_idle, (url, count, ready, stop), results_q, 0),
        daemon=True,
    )
    proc.start()
    try:
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2):
            if not proc.is_alive() or time.monotonic() > deadline:
                with contextlib.suppress(queue_mod.Empty):
                    _, result = results_q.get(timeout=1)
                    raise RuntimeError(f"idle connections failed: {result}")
                raise RuntimeError("idle connections did not open in time")
        yield
    finally:
        stop.set()
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


async def until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll ``condition`` with a growing delay (2 ms to 50 ms) until true."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not condition():
        if time.monotonic() > deadline:
            extra = f": {detail()}" if detail is not None else ""
            raise TimeoutError(f"{what} within {timeout:g} s{extra}")
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.05)


def missing_ancestors(
    parents: Sequence[Sequence[int]], index: int, have: set[int]
) -> list[int]:
    """Ancestors of transaction ``index`` that are not in ``have``, oldest first.

    ``parents[i]`` are the indexes transaction ``i`` causally follows (the
    concurrent trace format); the same walk ``leptos_sync.replay`` does.
    """
    seen: set[int] = set()
    stack = [p for p in parents[index] if p not in have]
    while stack:
        txn = stack.pop()
        if txn in seen or txn in have:
            continue
        seen.add(txn)
        stack.extend(p for p in parents[txn] if p not in have)
    return sorted(seen)
