"""Per-update cost of our metrics against ``prometheus_client``'s.

Four measurements, ours and the reference side by side in the same process and
the same run, alternating so that both see the same machine state:

- ``Counter.inc()`` on an unlabelled counter;
- ``Counter.labels(...).inc()`` through a cached child;
- ``Histogram.observe(v)`` with the default buckets;
- ``Histogram.observe(v)`` with a quantile sketch (``Metrics.Advanced``), against
  the plain ``prometheus_client`` histogram, to show what quantiles cost.

Each measurement is repeated; the median nanoseconds per update and the ratio
ours / prometheus_client are printed. The cost of an empty loop is subtracted.

Run: ``.venv/bin/python bench/bench_monitoring.py`` (``--smoke`` for a quick
pass with tiny sizes).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

try:
    import leptos_sync.monitoring  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import prometheus_client

from leptos_sync.monitoring import MetricsRegistry

_VALUES = [0.0005 * (i % 97) for i in range(1024)]


def _time_calls(update: Callable[[], object], calls: int) -> float:
    """Nanoseconds per call of ``update``."""
    started = time.perf_counter_ns()
    for _ in range(calls):
        update()
    return (time.perf_counter_ns() - started) / calls


def _time_observe(observe: Callable[[float], object], calls: int) -> float:
    """Nanoseconds per ``observe(value)``, cycling through fixed values."""
    values = _VALUES
    mask = len(values) - 1
    started = time.perf_counter_ns()
    for i in range(calls):
        observe(values[i & mask])
    return (time.perf_counter_ns() - started) / calls


def _cases() -> list[tuple[str, Callable[[int], float], Callable[[int], float]]]:
    """(name, ours, reference) timing functions, each taking a call count."""
    ours = MetricsRegistry()
    sketched = MetricsRegistry(quantiles=True)
    ref = prometheus_client.CollectorRegistry()

    counter = ours.counter("ops_total", "Ops.")
    ref_counter = prometheus_client.Counter("ops", "Ops.", registry=ref)
    child = ours.counter("by_total", "Ops.", ("collection",)).labels("notes")
    ref_child = prometheus_client.Counter(
        "by", "Ops.", ["collection"], registry=ref
    ).labels("notes")
    histogram = ours.histogram("lat_seconds", "Latency.")
    sketch_histogram = sketched.histogram("lat_seconds", "Latency.")
    ref_histogram = prometheus_client.Histogram("lat_seconds", "Latency.", registry=ref)

    def empty() -> None:
        return None

    def empty_observe(value: float) -> None:
        return None

    def calls(update: Callable[[], object]) -> Callable[[int], float]:
        return lambda n: _time_calls(update, n) - _time_calls(empty, n)

    def observes(observe: Callable[[float], object]) -> Callable[[int], float]:
        return lambda n: _time_observe(observe, n) - _time_observe(empty_observe, n)

    return [
        ("counter inc", calls(counter.inc), calls(ref_counter.inc)),
        ("labelled child inc", calls(child.inc), calls(ref_child.inc)),
        (
            "histogram observe",
            observes(histogram.observe),
            observes(ref_histogram.observe),
        ),
        (
            "histogram + sketch",
            observes(sketch_histogram.observe),
            observes(ref_histogram.observe),
        ),
    ]


def run(calls: int, runs: int) -> list[tuple[str, float, float]]:
    """Median ns per update (ours, reference) for every case."""
    results = []
    for name, ours, reference in _cases():
        ours_ns: list[float] = []
        ref_ns: list[float] = []
        for _ in range(runs):
            ours_ns.append(ours(calls))
            ref_ns.append(reference(calls))
        results.append((name, statistics.median(ours_ns), statistics.median(ref_ns)))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print a table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, quick")
    parser.add_argument("--calls", type=int, default=200_000, help="per run")
    parser.add_argument("--runs", type=int, default=7, help="runs per case")
    args = parser.parse_args(argv)
    calls, runs = (2_000, 2) if args.smoke else (args.calls, args.runs)

    print(f"{calls} updates x {runs} runs, median ns per update (empty loop removed)")
    print(f"{'case':<22}{'ours':>10}{'prometheus_client':>20}{'ratio':>9}")
    for name, ours, reference in run(calls, runs):
        ratio = ours / reference if reference > 0 else float("nan")
        print(f"{name:<22}{ours:>10.0f}{reference:>20.0f}{ratio:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
