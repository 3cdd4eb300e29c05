"""Trace replays through a real server: the main job (``demo`` and ``replay``)."""

from __future__ import annotations

import gzip
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from leptos_sync.replay import (
    MAX_REPLICAS,
    ReplayError,
    default_trace,
    replay,
    replica_roles,
)
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


def _sequential(dest: Path, end: str, *patches: list[Any]) -> Path:
    """A sequential trace of one transaction per patch."""
    txns = [{"patches": [patch]} for patch in patches]
    dest.write_text(json.dumps({"startContent": "", "endContent": end, "txns": txns}))
    return dest


def _concurrent(dest: Path, end: str, *txns: tuple[int, list[int], list[Any]]) -> Path:
    """A concurrent trace of (agent, parents, patch) transactions."""
    data = {
        "kind": "concurrent",
        "numAgents": 1 + max(agent for agent, _, _ in txns),
        "endContent": end,
        "txns": [
            {"agent": agent, "parents": parents, "patches": [patch]}
            for agent, parents, patch in txns
        ],
    }
    dest.write_text(json.dumps(data))
    return dest


def _leftovers(workdir: Path) -> list[str]:
    """Processes still running that use ``workdir`` (the server's store is there)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if str(workdir) in cmdline:
            found.append(cmdline)
    return found


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leptos_sync", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


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
        # Regression: true is an int in Python; it was taken for position 1.
        (
            b'{"endContent": "", "txns": [{"patches": [[true, 0, "a"]]}]}',
            "a patch is [position, deleted, inserted] (two non-negative integers "
            "and a string), not [True, 0, 'a']",
        ),
        (
            b'{"endContent": "", "txns": [{"patches": [[0, false, "a"]]}]}',
            "a patch is [position, deleted, inserted]",
        ),
        (
            b'{"kind": "concurrent", "numAgents": true, "endContent": "", "txns": []}',
            "numAgents must be a positive integer",
        ),
        (
            b'{"kind": "concurrent", "numAgents": 2, "endContent": "",'
            b' "txns": [{"agent": true, "parents": [], "patches": []}]}',
            "agent must be in 0..1",
        ),
        (
            b'{"kind": "concurrent", "numAgents": 1, "endContent": "", "txns": ['
            b'{"agent": 0, "parents": [], "patches": []},'
            b'{"agent": 0, "parents": [false], "patches": []}]}',
            "parents must be indexes of earlier txns",
        ),
        # Regression: an unknown kind was replayed as a sequential trace.
        (
            b'{"kind": "concurent", "endContent": "", "txns": []}',
            "unknown kind 'concurent'; expected 'concurrent'",
        ),
    ],
)
def test_bad_trace_files_give_clear_errors(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """Malformed trace files raise TraceError saying what is wrong."""
    path = tmp_path / "t.json"
    path.write_bytes(content)
    with pytest.raises(TraceError, match=re.escape(message)):
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


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
def test_a_wrong_end_content_is_a_mismatch_at_once_not_after_the_timeout(
    tmp_path: Path, concurrent: bool
) -> None:
    """A replica that holds every change compares its text once: a wrong
    endContent is reported as a mismatch without waiting out the timeout (it
    used to take the full timeout, 302 s by default, to print MISMATCH)."""
    if concurrent:
        trace = _concurrent(
            tmp_path / "c.json", "abX", (0, [], [0, 0, "a"]), (1, [0], [1, 0, "b"])
        )
    else:
        trace = _sequential(tmp_path / "s.json", "abX", [0, 0, "a"], [1, 0, "b"])
    started = time.monotonic()
    summary = replay(trace, processes=False, timeout=60, workdir=tmp_path / "w")
    assert time.monotonic() - started < 30
    assert not summary.converged
    for result in summary.results:
        assert result.error is None
        assert result.detail == (
            "differs from endContent at character 2: 2 characters, expected 3"
        )


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "in-process"])
def test_a_patch_outside_the_text_stops_the_replay_with_the_writers_error(
    tmp_path: Path, processes: bool
) -> None:
    """When the writer fails, the replay stops at once, stops the readers and
    the server, and raises the writer's error (it used to wait 601 s and say
    only that the replicas did not finish in time)."""
    trace = _sequential(tmp_path / "bad.json", "a", [5, 0, "a"])
    workdir = tmp_path / "w"
    started = time.monotonic()
    with pytest.raises(ReplayError) as caught:
        replay(trace, replicas=3, processes=processes, timeout=60, workdir=workdir)
    assert time.monotonic() - started < 30
    assert str(caught.value) == (
        "replica 0 (writer) failed: txns[0] patch [5, 0, 'a'] does not apply: "
        "splice(5, 0) is outside text of length 0"
    )
    assert _leftovers(workdir) == []


def test_a_concurrent_patch_outside_the_text_is_that_agents_error(
    tmp_path: Path,
) -> None:
    """Loro's bare BaseException for an out-of-range position becomes the
    agent's error, and the replay stops (it used to escape as a traceback)."""
    trace = _concurrent(
        tmp_path / "bad.json", "ab", (0, [], [0, 0, "a"]), (1, [0], [7, 0, "b"])
    )
    with pytest.raises(ReplayError) as caught:
        replay(trace, processes=False, timeout=60, workdir=tmp_path / "w")
    assert str(caught.value) == (
        "replica 1 (agent 1) failed: txns[1] patch [7, 0, 'b'] is outside the "
        "text of length 1 that its parents give"
    )


def test_cli_reports_a_concurrent_patch_outside_the_text_in_one_line(
    tmp_path: Path,
) -> None:
    """``replay --in-process`` of such a trace prints one error line, exit 1."""
    trace = _concurrent(
        tmp_path / "bad.json", "ab", (0, [], [0, 0, "a"]), (1, [0], [7, 0, "b"])
    )
    result = _cli("replay", str(trace), "--in-process", "--timeout", "60")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "leptos-sync: error: replica 1 (agent 1) failed: txns[1] patch "
        "[7, 0, 'b'] is outside the text of length 1 that its parents give"
    )


def test_a_concurrent_trace_replays_only_the_agents_its_transactions_name(
    tmp_path: Path,
) -> None:
    """numAgents is an upper bound: a trace declaring 100,000 agents of which
    one writes runs one replica (it used to create 100,000 stores)."""
    path = tmp_path / "many.json"
    path.write_text(
        json.dumps(
            {
                "kind": "concurrent",
                "numAgents": 100_000,
                "endContent": "a",
                "txns": [{"agent": 99_999, "parents": [], "patches": [[0, 0, "a"]]}],
            }
        )
    )
    trace = load_trace(path)
    assert replica_roles(trace, replicas=5) == [("agent", 99_999)]
    summary = replay(path, processes=False, timeout=60, workdir=tmp_path / "w")
    assert summary.converged, [(r.error, r.detail) for r in summary.results]
    assert summary.replicas == 1


def test_more_agents_than_the_limit_are_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    """A trace naming more than MAX_REPLICAS agents is refused with a clear error,
    and so is a request for more replicas than that."""
    agents = MAX_REPLICAS + 1
    trace = _concurrent(
        tmp_path / "wide.json",
        "a" * agents,
        *((i, [i - 1] if i else [], [i, 0, "a"]) for i in range(agents)),
    )
    with pytest.raises(ReplayError, match=f"name {agents} agents.*at most 64"):
        replay(trace, timeout=60, workdir=tmp_path / "w")
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())
    seq = _sequential(tmp_path / "s.json", "a", [0, 0, "a"])
    with pytest.raises(ReplayError, match="replicas must be between 1 and 64"):
        replay(seq, replicas=100_000, timeout=60)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
def test_replay_refuses_a_timeout_that_is_not_a_positive_number(
    tmp_path: Path, timeout: float
) -> None:
    """A zero, negative or non-finite timeout is refused before anything starts."""
    trace = _sequential(tmp_path / "s.json", "a", [0, 0, "a"])
    with pytest.raises(ReplayError, match="timeout must be a positive number"):
        replay(trace, timeout=timeout)


def test_an_unreachable_server_is_named_within_the_given_timeout(
    tmp_path: Path,
) -> None:
    """With nothing listening at --url, the replay gives up after the given
    timeout (not a fixed 30 s) and says the server could not be reached, with
    the connection's error."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/ws"
    trace = _sequential(tmp_path / "s.json", "a", [0, 0, "a"])
    started = time.monotonic()
    with pytest.raises(ReplayError) as caught:
        replay(trace, url=url, processes=False, timeout=1, workdir=tmp_path / "w")
    assert time.monotonic() - started < 15
    message = str(caught.value)
    assert message.startswith(f"could not reach the server at {url} within 1 s: ")
    assert message.split(" within 1 s: ", 1)[1]  # the connection's error
