"""Crash tests: server, writer and reader as OS processes, killed with SIGKILL.

The scenario itself lives in ``procs.crash_run`` (shared with
``scripts/crash_soak.py``, the long version); see its docstring for what is
checked. ``LEPTOS_CRASH_SEED`` replays a given run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs

SEED = int(os.environ.get("LEPTOS_CRASH_SEED", "20240611"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_nothing_acknowledged_is_lost_across_about_twenty_kills(tmp_path: Path) -> None:
    """Every acknowledged write survives 21 SIGKILLs and is applied exactly once."""
    lines: list[str] = []
    figures = procs.crash_run(
        tmp_path, cycles=9, seed=SEED, reader_every=3, say=lines.append
    )

    assert figures.kills == 21
    assert figures.writes > 0 and figures.acked == figures.writes
    # Writes that waited together travel merged, so there are at most as many
    # server operations as writes; hub_records checked no write is stored twice.
    assert 0 < figures.server_ops <= figures.writes
    # The writer was killed with unacknowledged writes in its outbox (the
    # server was down), and they were delivered after its restart.
    assert sum(figures.outbox_at_restart) > 0
    (tmp_path / "figures.json").write_text(json.dumps(figures.to_json()))
    print(json.dumps(figures.to_json()))


def test_a_killed_writer_resumes_with_its_outbox(tmp_path: Path) -> None:
    """Writes made while the server is down survive a SIGKILL of the writer."""
    hub, store, log = (
        tmp_path / "hub.sqlite3",
        tmp_path / "w.sqlite3",
        tmp_path / "w.log",
    )
    stop = tmp_path / "stop"
    server = procs.ServerProcess(hub, tmp_path)
    writer: procs.Child | None = None
    try:
        writer = procs.start_writer(store, server.url, log, stop, tmp_path)
        procs.wait_for(
            lambda: any(e["event"] == "acked" for e in procs.read_events(log)),
            30,
            "a first acknowledgement",
        )
        server.kill()
        procs.wait_for(lambda: _outbox_depth(store) > 20, 30, "offline writes")
        writer.kill()
        offline = _outbox_depth(store)

        writer = procs.start_writer(store, server.url, log, stop, tmp_path)
        procs.wait_for(
            lambda: sum(e["event"] == "start" for e in procs.read_events(log)) == 2,
            30,
            "the restart",
        )
        start = [e for e in procs.read_events(log) if e["event"] == "start"][-1]
        assert start["outbox"] >= offline

        server = procs.ServerProcess(hub, tmp_path, port=server.port)
        stop.write_text("")
        assert writer.wait(60) == 0, writer.stderr()[-2000:]
        server.terminate()
    finally:
        procs.kill_all([writer, server])

    final = procs.read_events(log)[-1]
    records, ops = procs.hub_records(hub)
    assert final["synced"] and 0 < ops <= final["n"]
    summary = procs.summarise(records)
    assert summary["records"] == summary["counter"] == final["n"]
    assert summary["digest"] == final["digest"]
    assert procs.integrity(store) == procs.integrity(hub) == "ok"


def _outbox_depth(store: Path) -> int:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
