"""The ``leptos-sync`` command itself: option checks, one-line errors, signals.

The commands' work is tested beside the modules that do it (``test_replay``,
``test_backup``, ``test_storeinfo``, ``test_auth``, ``test_status_cli``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from leptos_sync import replay as replay_module
from leptos_sync.cli import main as cli
from leptos_sync.replay import ReplayError, default_trace

TRACES = default_trace("friendsforever").parent


def _trace(path: Path, concurrent: bool = False) -> Path:
    if concurrent:
        data = {
            "kind": "concurrent",
            "numAgents": 2,
            "endContent": "ab",
            "txns": [
                {"agent": 0, "parents": [], "patches": [[0, 0, "a"]]},
                {"agent": 1, "parents": [0], "patches": [[1, 0, "b"]]},
            ],
        }
    else:
        data = {"endContent": "a", "txns": [{"patches": [[0, 0, "a"]]}]}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["replay", "demo"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "must be a positive number of seconds, not 0"),
        ("-1", "must be a positive number of seconds, not -1"),
        ("nan", "must be a positive number of seconds, not nan"),
        ("inf", "must be a positive number of seconds, not inf"),
        ("1e9", "must be at most 86,400 seconds"),
    ],
)
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(
    tmp_path: Path, command: str, value: str, reason: str
) -> None:
    """``--timeout`` 0, -1, nan or inf is refused in one line with exit status 2
    (nan used to run and print a bogus throughput)."""
    args = [command, "--timeout", value]
    args += [str(_trace(tmp_path / "t.json"))] if command == "replay" else []
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"leptos-sync: error: Invalid value for '--timeout': {reason}"
    )


def test_replicas_for_a_concurrent_trace_draws_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--replicas`` with a concurrent trace says on stderr that it is ignored
    (it used to be ignored silently)."""

    def stop_here(*args: object, **kwargs: object) -> None:
        raise ReplayError("stopped by the test")

    monkeypatch.setattr(replay_module, "replay", stop_here)
    trace = _trace(tmp_path / "c.json", concurrent=True)
    result = CliRunner().invoke(cli, ["replay", str(trace), "--replicas", "5"])
    assert result.stderr.splitlines()[0] == (
        "leptos-sync: note: --replicas is ignored: a concurrent trace uses one "
        "replica per agent (2 here)"
    )
    assert result.exit_code == 1
    sequential = _trace(tmp_path / "s.json")
    result = CliRunner().invoke(cli, ["replay", str(sequential), "--replicas", "5"])
    assert "note" not in result.stderr


def test_sigterm_stops_a_replay_and_its_server_and_removes_its_directory(
    tmp_path: Path,
) -> None:
    """SIGTERM to ``leptos-sync replay`` cleans up as Ctrl-C does: the local
    server and replica processes stop, the temporary directory goes, and the
    command says so in one line with exit status 143 (the server and the
    directory used to be left behind)."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    trace = str(TRACES / "automerge-paper.json.gz")
    command = [sys.executable, "-m", "leptos_sync", "replay", trace]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    children: list[psutil.Process] = []
    try:
        parent = psutil.Process(proc.pid)
        children.append(_wait_for_listening_child(parent, 60))
        children += parent.children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        _, alive = psutil.wait_procs(children, timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in children:  # left behind only if the test fails
            with contextlib.suppress(psutil.Error):
                child.kill()

    assert proc.returncode == 143, err
    assert err.splitlines()[-1] == "leptos-sync: terminated"
    assert "Traceback" not in err
    assert alive == []
    assert list(tmp_path.glob("leptos-sync-*")) == []


def _wait_for_listening_child(parent: psutil.Process, limit: float) -> psutil.Process:
    """The child of ``parent`` that serves, once it listens."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for child in parent.children():
            try:
                if "serve" in child.cmdline() and any(
                    c.status == psutil.CONN_LISTEN for c in child.net_connections()
                ):
                    return child
            except psutil.Error:
                continue
        time.sleep(0.01)
    raise AssertionError("the replay's server never listened")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--port", "70000"],
            "Invalid value for '--port': 70000 is not in the range 0<=x<=65535.",
        ),
        (
            ["--port", "-1"],
            "Invalid value for '--port': -1 is not in the range 0<=x<=65535.",
        ),
        (
            ["--host", "nonexistent.invalid", "--port", "0"],
            "Invalid value for '--host': cannot resolve 'nonexistent.invalid': ",
        ),
        (
            ["--host", "999.1.1.1", "--port", "0"],
            "Invalid value for '--host': cannot resolve '999.1.1.1': ",
        ),
    ],
)
def test_serve_refuses_a_bad_port_or_host_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """A port out of range or a host that does not resolve is a one-line usage
    error (they used to end in 100-line tracebacks)."""
    result = CliRunner().invoke(
        cli, ["serve", "--db", str(tmp_path / "hub.sqlite3"), *args]
    )
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"leptos-sync: error: {message}")
    assert not (tmp_path / "hub.sqlite3").exists()


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path, listening: int) -> None:
    """A port another process listens on gives one line and exit status 1 (it
    used to give status 3 and 54 lines, "Task exception was never retrieved")."""
    db, port = str(tmp_path / "hub.sqlite3"), str(listening)
    result = subprocess.run(
        [sys.executable, "-m", "leptos_sync", "serve", "--db", db, "--port", port],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"leptos-sync: error: cannot listen on 127.0.0.1:{listening} (127.0.0.1): "
        "Address already in use"
    ]
