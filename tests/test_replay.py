"""Trace replays through a real server: the main job (``demo`` and ``replay``)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from leptos_sync.replay import default_trace, replay
from leptos_sync.traces import TraceError, load_trace

TRACES = default_trace("friendsforever").parent


def _head_of(trace: str, count: int, dest: Path) -> Path:
    """The first ``count`` transactions of a sequential trace, with its end text."""
    data = json.loads(gzip.decompress((TRACES / f"{trace}.json.gz").read_bytes()))
    data["txns"] = data["txns"][:count]
    doc = list(data["startContent"])
    for txn in data["txns"]:
        for pos, deleted, inserted in txn["patches"]:
            doc[pos : pos + deleted] = inserted
    data["endContent"] = "".join(doc)
    dest.write_text(json.dumps(data))
    return dest


def test_sequential_replay_in_process_converges(tmp_path: Path) -> None:
    """A writer and two readers, all in this process, end with the trace's text."""
    trace = _head_of("automerge-paper", 3000, tmp_path / "head.json")
    summary = replay(trace, replicas=3, processes=False, timeout=60)
    assert summary.converged, [(r.error, r.detail) for r in summary.results]
    assert summary.operations == 3000
    assert [r.role for r in summary.results] == ["writer", "reader", "reader"]
    writer, reader = summary.results[0], summary.results[1]
    # Every patch is a local change; those that waited together went merged.
    assert writer.local_ops == 3000 + 1  # and the end marker
    assert 1 <= reader.remote_ops == writer.local_ops - writer.merged_ops + 1
    assert summary.server_health is not None
    assert summary.server_health["status"] == "pass"


def test_demo_exits_zero_and_prints_its_figures() -> None:
    """``leptos-sync demo`` replays friendsforever with one process per agent,
    converges to endContent, prints its figures and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "leptos_sync", "demo"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for label in (
        "operations      26,078",
        "throughput",
        "bytes on wire",
        "server health",
        "all replicas equal endContent",
    ):
        assert label in out, out
    assert out.count("converged") == 2


def test_replay_of_automerge_paper_converges() -> None:
    """``leptos-sync replay automerge-paper`` converges to endContent and prints
    its throughput."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "leptos_sync",
            "replay",
            str(TRACES / "automerge-paper.json.gz"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "operations      259,778" in result.stdout
    assert "ops/s" in result.stdout
    assert "all replicas equal endContent" in result.stdout


def test_mismatch_exits_non_zero(tmp_path: Path) -> None:
    """A trace whose endContent is wrong makes replay report MISMATCH and exit 1."""
    trace = _head_of("automerge-paper", 200, tmp_path / "bad.json")
    data = json.loads(trace.read_text())
    data["endContent"] += "!"
    trace.write_text(json.dumps(data))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "leptos_sync",
            "replay",
            str(trace),
            "--in-process",
            "--timeout",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "MISMATCH" in result.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not json", "not a (gzipped) JSON trace"),
        (b'{"txns": []}', "expected an object with 'txns' and 'endContent'"),
        (b'{"endContent": "", "txns": [{"patches": [[0, 0]]}]}', "a patch is"),
        (
            b'{"kind": "concurrent", "numAgents": 1, "endContent": "",'
            b' "txns": [{"agent": 0, "parents": [3], "patches": []}]}',
            "parents must be indexes of earlier txns",
        ),
    ],
)
def test_bad_trace_files_give_clear_errors(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """Malformed trace files raise TraceError saying what is wrong."""
    path = tmp_path / "t.json"
    path.write_bytes(content)
    with pytest.raises(
        TraceError, match="" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        load_trace(path)


def test_cli_reports_a_bad_trace_in_one_line(tmp_path: Path) -> None:
    """The CLI turns a bad trace into one error line and exit status 1."""
    path = tmp_path / "t.json"
    path.write_bytes(b"garbage")
    result = subprocess.run(
        [sys.executable, "-m", "leptos_sync", "replay", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "leptos-sync: error:" in result.stderr
    assert "Traceback" not in result.stderr
