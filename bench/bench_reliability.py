"""Per-call cost of the reliability layer against pybreaker and tenacity.

Two measurements, each side by side in the same process and the same run:

- circuit breaker, closed state: ``CircuitBreaker.call_sync(fn)`` against
  ``pybreaker.CircuitBreaker.call(fn)``; target at most 0.5x pybreaker's cost;
- retry, success on the first attempt: a ``@retrying``-decorated coroutine
  against a ``@tenacity.retry``-decorated one; target at most 0.1x tenacity's.

The cost reported is the time per call minus the time of calling the bare
function the same way, so it is the wrapper's own overhead. Each measurement is
repeated, interleaved with the others, and the fastest run of each is kept (the
usual estimator for code this short: slower runs measure the machine's other
work, not the code), with the ratio and whether the target is met.

Run: ``.venv/bin/python bench/bench_reliability.py`` (``--smoke`` for a quick pass
with tiny sizes). Needs the ``bench`` extras (pybreaker, tenacity).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path

try:
    import leptos_sync.reliability  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import pybreaker
import tenacity

from leptos_sync.reliability import (
    CircuitBreaker,
    CircuitBreakerConfig,
    RetryPolicy,
    retrying,
)

BREAKER_TARGET = 0.5
RETRY_TARGET = 0.1


def _work() -> int:
    return 1


async def _async_work() -> int:
    return 1


def _time_sync(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``fn``, over ``calls`` calls."""
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls


def _time_async(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    """Seconds per awaited call of ``fn``, over ``calls`` calls, in one loop."""

    async def loop() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await fn()
        return (time.perf_counter() - started) / calls

    return asyncio.run(loop())


def bench_breaker(calls: int, runs: int) -> tuple[float, float]:
    """Per-call overheads (ours, pybreaker) in seconds, fastest runs."""
    ours = CircuitBreaker(
        CircuitBreakerConfig.Enabled(
            failure_threshold=5, recovery_timeout=timedelta(seconds=30)
        )
    )
    theirs = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

    def ours_call() -> int:
        return ours.call_sync(_work)

    def theirs_call() -> object:
        return theirs.call(_work)

    bare, ours_times, theirs_times = [], [], []
    for _ in range(runs):
        bare.append(_time_sync(_work, calls))
        ours_times.append(_time_sync(ours_call, calls))
        theirs_times.append(_time_sync(theirs_call, calls))
    return min(ours_times) - min(bare), min(theirs_times) - min(bare)


def bench_retry(calls: int, runs: int) -> tuple[float, float]:
    """Per-call overheads (ours, tenacity) in seconds, success path, fastest runs."""
    ours = retrying(policy=RetryPolicy.Fixed(1), max_retries=3)(_async_work)
    theirs = tenacity.retry(
        stop=tenacity.stop_after_attempt(4), wait=tenacity.wait_fixed(1)
    )(_async_work)

    bare, ours_times, theirs_times = [], [], []
    for _ in range(runs):
        bare.append(_time_async(_async_work, calls))
        ours_times.append(_time_async(ours, calls))
        theirs_times.append(_time_async(theirs, calls))
    return min(ours_times) - min(bare), min(theirs_times) - min(bare)


def _report(name: str, ours: float, theirs: float, rival: str, target: float) -> bool:
    ratio = ours / theirs if theirs > 0 else float("inf")
    met = ratio <= target
    print(
        f"{name:<28} ours {ours * 1e9:9.0f} ns   {rival} {theirs * 1e9:9.0f} ns   "
        f"ratio {ratio:5.3f}  (target <= {target})  {'met' if met else 'MISSED'}"
    )
    return met


def main(argv: Sequence[str] | None = None) -> int:
    """Run both benchmarks and print medians and ratios.

    Returns:
        0 when both targets are met, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one pass")
    parser.add_argument("--calls", type=int, default=200_000, help="calls per run")
    parser.add_argument("--runs", type=int, default=7, help="runs per measurement")
    args = parser.parse_args(argv)
    calls, runs = (2_000, 2) if args.smoke else (args.calls, args.runs)

    print(f"per-call overhead, fastest of {runs} runs of {calls} calls")
    breaker = bench_breaker(calls, runs)
    met = _report("circuit breaker (closed)", *breaker, "pybreaker", BREAKER_TARGET)
    retry_costs = bench_retry(calls // 2, runs)
    met &= _report("retry (success path)", *retry_costs, "tenacity", RETRY_TARGET)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
