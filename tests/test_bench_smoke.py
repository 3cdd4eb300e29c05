"""The benchmark suite runs end to end on tiny inputs (``python -m bench --smoke``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ("trace", "records", "fanout", "overheads", "memory")


@pytest.mark.slow
def test_bench_smoke_runs_every_benchmark_and_prints_ratios() -> None:
    """Every benchmark completes its smoke run and prints at least one ratio line."""
    for module in ("pycrdt", "pycrdt.websocket", "pybreaker", "tenacity", "psutil"):
        pytest.importorskip(
            module, reason="needs the bench extras: pip install -e '.[bench]'"
        )

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), str(REPO / "src"), env.get("PYTHONPATH", "")]
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )

    failures = [line for line in proc.stdout.splitlines() if line.startswith("!!")]
    assert proc.returncode == 0, "\n".join(
        [*failures, proc.stdout[-3000:], proc.stderr[-3000:]]
    )
    for name in BENCHMARKS:
        assert any(
            line.startswith(f"ratio {name}/") for line in proc.stdout.splitlines()
        ), f"no ratio line from {name}:\n{proc.stdout[-4000:]}"
