"""The ``leptos-sync`` command: serve, demo, replay, inspect, status.

Every command reports failure as one line on stderr and a non-zero exit status
(1 for a failed run, 2 for bad usage), never as a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import SyncError

F = TypeVar("F", bound=Callable[..., Any])


def _clean_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (SyncError, OSError, ValueError) as exc:
            click.echo(f"leptos-sync: error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("leptos-sync: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="Log level for the library's messages (on stderr).",
)
@click.version_option(package_name="leptos-sync")
def main(log_level: str) -> None:
    """Local-first data sync: a sync server, trace replays and store inspection."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@main.command()
@click.option("--db", "db", default="leptos-sync-server.sqlite3", show_default=True,
              help="The server's SQLite store (created if missing).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int,
              help="0 picks a free port (printed on start).")
@click.option("--durability", type=click.Choice(["process", "power"]), default="process",
              show_default=True, help="'power' fsyncs every commit.")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TLS certificate (serves wss://).")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TLS private key.")
@_clean_errors
def serve(db: str, host: str, port: int, durability: str, certfile: str | None,
          keyfile: str | None) -> None:
    """Run the sync server (WebSocket at /ws, plus /health, /metrics)."""
    from .hubstore import HubStore
    from .server.app import SyncServer
    from .server.run import run_server

    if (certfile is None) != (keyfile is None):
        raise click.UsageError("--certfile and --keyfile go together")
    store = HubStore.sqlite(db, durability=durability)  # type: ignore[arg-type]
    server = SyncServer(store)

    def ready(url: str) -> None:
        click.echo(f"leptos-sync server listening on {url}", nl=True)
        sys.stdout.flush()

    run_server(server, host, port, on_ready=ready, ssl_certfile=certfile,
               ssl_keyfile=keyfile)


def _run_replay(trace: Path, url: str | None, replicas: int | None,
                in_process: bool, timeout: float) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.progress import TimeElapsedColumn

    from .replay import replay

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(f"replaying {trace.name}", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = replay(trace, url=url, replicas=replicas, processes=not in_process,
                         timeout=timeout, on_progress=progress)
        bar.update(task, completed=summary.operations, total=summary.operations)
    _print_summary(summary)
    if not summary.converged:
        sys.exit(1)


def _print_summary(summary: Any) -> None:
    out = click.echo
    out(f"trace           {summary.trace}")
    out(f"server          {summary.url}")
    out(f"replicas        {summary.replicas} (each its own SQLite store and WebSocket)")
    out(f"operations      {summary.operations:,}")
    out(f"wall time       {summary.seconds:.2f} s")
    out(f"throughput      {summary.ops_per_second:,.0f} ops/s")
    out(f"bytes on wire   {summary.wire_bytes:,} (client frames, both directions)")
    for r in summary.results:
        verdict = "converged" if r.converged else f"FAILED {r.error or r.detail}"
        out(f"  replica {r.index} {r.role:<6} local {r.local_ops:>7,}  remote "
            f"{r.remote_ops:>7,}  {r.seconds:6.2f} s  {verdict}")
    health = summary.server_health
    if health is not None:
        checks = ", ".join(
            f"{key}={items[0].get('status')}"
            + (f" ({items[0]['observedValue']}{items[0].get('observedUnit', '')})"
               if "observedValue" in items[0] else "")
            for key, items in health.get("checks", {}).items()
        )
        out(f"server health   {health.get('status')}: {checks}")
    stored = summary.server_figures.get("leptos_sync_server_operations_stored")
    if stored is not None:
        dup = summary.server_figures.get("leptos_sync_server_operations_duplicate", 0)
        out(f"server stored   {stored:,.0f} operations ({dup:,.0f} duplicates resent)")
    out("result          " + ("all replicas equal endContent" if summary.converged
                              else "MISMATCH"))


@main.command()
@click.option("--trace", "trace_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Trace to replay (default: friendsforever).")
@click.option("--in-process", is_flag=True, help="Run all replicas in this process.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds per wait.")
@_clean_errors
def demo(trace_path: str | None, in_process: bool, timeout: float) -> None:
    """Start a local server and replay a concurrent trace, one replica per agent."""
    from .replay import default_trace

    trace = Path(trace_path) if trace_path else default_trace("friendsforever")
    _run_replay(trace, None, None, in_process, timeout)


@main.command("replay")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@click.option("--url", default=None, help="A running server (ws://...); default: start one.")
@click.option("--replicas", type=click.IntRange(min=1), default=None,
              help="Sequential traces: replicas in all (1 writer + readers; default 2).")
@click.option("--in-process", is_flag=True, help="Run all replicas in this process.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds per wait.")
@_clean_errors
def replay_cmd(trace: str, url: str | None, replicas: int | None, in_process: bool,
               timeout: float) -> None:
    """Replay an editing trace (sequential or concurrent) through a sync server."""
    _run_replay(Path(trace), url, replicas, in_process, timeout)


@main.command()
@click.argument("store", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_clean_errors
def inspect(store: str, as_json: bool) -> None:
    """Show a replica store's collections, outbox depth, cursors and integrity."""
    from .crdt import CollectionDoc
    from .clock import HybridLogicalClock
    from .storage import SQLiteStorage

    storage = SQLiteStorage(Path(store))
    try:
        state = storage.load()
        collections = {}
        for name, stored in sorted(state.collections.items()):
            doc = CollectionDoc(name, HybridLogicalClock(replica_id=state.replica_id))
            blobs = ([stored.snapshot] if stored.snapshot else []) + stored.log
            blobs += [op.data for op in state.outbox if op.collection == name]
            if blobs:
                doc.import_updates(blobs)
            collections[name] = {
                "records": len(doc),
                "cursor": stored.cursor,
                "outbox": sum(1 for op in state.outbox if op.collection == name),
                "log_entries": len(stored.log),
                "snapshot_bytes": len(stored.snapshot or b""),
            }
        info = {
            "store": str(Path(store).resolve()),
            "replica_id": f"{state.replica_id:016x}",
            "app_version": storage.app_version,
            "outbox_depth": len(state.outbox),
            "collections": collections,
            "quarantined": [q.source for q in storage.quarantined()],
            "sqlite_integrity": storage.integrity_check(),
        }
    finally:
        storage.close()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"store         {info['store']}")
    click.echo(f"replica id    {info['replica_id']}")
    click.echo(f"outbox depth  {info['outbox_depth']}")
    click.echo(f"integrity     {info['sqlite_integrity']}; "
               f"{len(info['quarantined'])} blobs quarantined")
    for name, c in collections.items():
        click.echo(f"  {name}: {c['records']} records, cursor {c['cursor']}, "
                   f"outbox {c['outbox']}, log {c['log_entries']}")


@main.command()
@click.option("--url", default="http://127.0.0.1:8765", show_default=True,
              help="The server's HTTP base URL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_clean_errors
def status(url: str, as_json: bool) -> None:
    """Print a server's health, key metrics and active alerts."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    base = url.rstrip("/")
    if base.startswith("ws"):
        base = "http" + base[2:].rsplit("/ws", 1)[0]
    try:
        with httpx.Client(timeout=10) as client:
            health = client.get(f"{base}/health").json()
            metrics_text = client.get(f"{base}/metrics").text
    except httpx.HTTPError as exc:
        raise SyncError(f"cannot reach {base}: {exc}") from exc
    figures: dict[str, float] = {}
    alerts: list[str] = []
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "leptos_sync_alerts_active" and sample.value > 0:
                alerts.append(f"{sample.labels.get('severity')} "
                              f"{sample.labels.get('state')}: {sample.value:g}")
            elif not sample.labels:
                figures[sample.name] = sample.value
    if as_json:
        click.echo(json.dumps({"health": health, "metrics": figures, "alerts": alerts},
                              indent=2))
        return
    click.echo(f"health  {health.get('status')}")
    for key, items in health.get("checks", {}).items():
        item = items[0]
        value = item.get("observedValue", "")
        click.echo(f"  {key:<24} {item.get('status'):<5} {value} "
                   f"{item.get('observedUnit', '')} {item.get('output', '')}".rstrip())
    click.echo("metrics")
    for name in sorted(figures):
        if name.startswith("leptos_sync_server") or name.startswith("leptos_sync_uptime"):
            click.echo(f"  {name:<48} {figures[name]:g}")
    click.echo("alerts  " + ("none" if not alerts else "; ".join(alerts)))
