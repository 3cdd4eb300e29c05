"""The ``leptos-sync`` command: serve, demo, replay, inspect, status.

Every command reports failure as one line on stderr and a non-zero exit status
(1 for a failed run, 2 for bad usage, 130 after Ctrl-C, 143 after SIGTERM), never
as a traceback.

SIGTERM is handled like Ctrl-C: it interrupts the command where it is, so that
every cleanup runs (a replay stops its replica processes and its local server
and removes its temporary directory).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from .auth import MAX_TOKEN_LIFETIME
from .errors import ConfigError, SyncError

F = TypeVar("F", bound=Callable[..., Any])


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an interruption so that cleanups run as for Ctrl-C."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Once: a second SIGTERM must not cut the cleanup of the first short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Terminated


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while a command runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _clean_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _sigterm_interrupts():
                return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (SyncError, OSError, ValueError) as exc:
            click.echo(f"leptos-sync: error: {_one_line(exc)}", err=True)
            sys.exit(1)
        except _Terminated:
            click.echo("leptos-sync: terminated", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("leptos-sync: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def _seconds(
    longest: float, *, zero_means: str | None = None
) -> Callable[[click.Context, click.Parameter, float], float]:
    """An option callback: a finite number of seconds, positive and at most
    ``longest`` (0 is accepted too when ``zero_means`` says what it means)."""

    def check(ctx: click.Context, param: click.Parameter, seconds: float) -> float:
        if seconds == 0 and zero_means is not None:
            return seconds
        if not math.isfinite(seconds) or seconds <= 0:
            wanted = "a positive number of seconds"
            if zero_means is not None:
                wanted += f" (or 0: {zero_means})"
            raise click.BadParameter(f"must be {wanted}, not {seconds:g}")
        if seconds > longest:
            raise click.BadParameter(
                f"must be at most {longest:,.0f} seconds, not {seconds:g}"
            )
        return seconds

    return check


#: The longest single wait of a replay: a day is far beyond any real one.
_TIMEOUT = _seconds(86_400)
_timeout_option = click.option(
    "--timeout",
    type=float,
    callback=_TIMEOUT,
    default=300.0,
    show_default=True,
    help="Seconds per wait.",
)


class _Commands(click.Group):
    """The command group: usage errors too are one line on stderr (exit 2)."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        run = functools.partial(
            super().main,
            args,
            prog_name,
            complete_var,
            False,
            windows_expand_args,
            **extra,
        )
        if not standalone_mode:
            return run()
        try:
            code: Any = run()  # the exit status of --help and --version, else None
        except click.UsageError as exc:
            where = "" if exc.ctx is None else f" (see '{exc.ctx.command_path} --help')"
            message = _one_line(exc.format_message())
            click.echo(f"leptos-sync: error: {message}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(
                f"leptos-sync: error: {_one_line(exc.format_message())}", err=True
            )
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("leptos-sync: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Commands)
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
@click.option(
    "--db",
    "db",
    default="leptos-sync-server.sqlite3",
    show_default=True,
    help="The server's SQLite store (created if missing).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="0 picks a free port (printed on start).",
)
@click.option(
    "--durability",
    type=click.Choice(["process", "power"]),
    default="process",
    show_default=True,
    help="'power' fsyncs every commit.",
)
@click.option(
    "--certfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="TLS certificate (serves wss://).",
)
@click.option(
    "--keyfile",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="TLS private key.",
)
@click.option(
    "--auth-secret-env",
    default=None,
    metavar="VAR",
    help="Require signed tokens, verified with the secret in $VAR.",
)
@_clean_errors
def serve(
    db: str,
    host: str,
    port: int,
    durability: str,
    certfile: str | None,
    keyfile: str | None,
    auth_secret_env: str | None,
) -> None:
    """Run the sync server (WebSocket at /ws, plus /health, /metrics, /dashboard)."""
    from .backup import add_integrity_check
    from .hubstore import HubStore
    from .server.app import SyncServer
    from .server.run import run_server

    if (certfile is None) != (keyfile is None):
        raise click.UsageError("--certfile and --keyfile go together")
    authenticator = None
    if auth_secret_env is not None:
        authenticator = _signed_tokens(auth_secret_env)
    _check_address(host, port)
    store = HubStore.sqlite(db, durability=durability)  # type: ignore[arg-type]
    server = SyncServer(store, authenticator=authenticator)
    add_integrity_check(server)

    def ready(url: str) -> None:
        click.echo(f"leptos-sync server listening on {url}", nl=True)
        sys.stdout.flush()

    try:
        run_server(
            server,
            host,
            port,
            on_ready=ready,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
    except SystemExit as exc:
        # uvicorn exits from its startup task when it cannot listen: after the
        # check above, only if another process took the port in between.
        raise SyncError(
            f"the server could not start on {host}:{port} (status {exc.code}; "
            "see the message above)"
        ) from None


def _check_address(host: str, port: int) -> None:
    """Fail in one line if the server could not listen on ``host:port``.

    uvicorn meets a host that does not resolve or a port that is taken inside
    its startup task, and reports it as logged tracebacks; resolving and binding
    here first (as asyncio will, with SO_REUSEADDR) says it plainly.
    """
    try:
        addresses = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise click.BadParameter(
            f"cannot resolve {host!r}: {exc.strerror}", param_hint="'--host'"
        ) from None
    except UnicodeError as exc:
        raise click.BadParameter(
            f"{host!r} is not a valid host name: {exc}", param_hint="'--host'"
        ) from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise SyncError(
                    f"cannot listen on {host}:{port} ({address[0]}): "
                    f"{exc.strerror or exc}"
                ) from None


def _signed_tokens(variable: str) -> Any:
    import os

    from .auth import SignedTokens

    secret = os.environ.get(variable)
    if secret is None:
        raise click.UsageError(f"${variable} is not set (it holds the token secret)")
    if not secret:
        raise click.UsageError(f"${variable} is empty (it must hold the token secret)")
    try:
        return SignedTokens(secret)
    except ConfigError:
        raise click.UsageError(
            f"${variable} holds {len(secret.encode())} bytes; the token secret "
            "must be at least 16"
        ) from None


@main.command()
@click.argument("subject")
@click.option(
    "--secret-env",
    default="LEPTOS_SYNC_SECRET",
    show_default=True,
    metavar="VAR",
    help="The environment variable holding the secret.",
)
@click.option("--read", "read", multiple=True, help="Collections it may read (globs).")
@click.option("--write", "write", multiple=True, help="Collections it may write.")
@click.option(
    "--expires-in",
    type=float,
    callback=_seconds(MAX_TOKEN_LIFETIME.total_seconds(), zero_means="never"),
    default=3600.0,
    show_default=True,
    help="Seconds until it expires (0: never; at most ten years).",
)
@_clean_errors
def token(
    subject: str,
    secret_env: str,
    read: tuple[str, ...],
    write: tuple[str, ...],
    expires_in: float,
) -> None:
    """Issue a signed token for a server run with --auth-secret-env."""
    tokens = _signed_tokens(secret_env)
    click.echo(
        tokens.issue(subject, read=read, write=write, expires_in=expires_in or None)
    )


def _run_replay(
    trace: Path, url: str | None, replicas: int | None, in_process: bool, timeout: float
) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from .replay import replay, replica_roles
    from .traces import load_trace

    # A bad trace, or one with too many agents, is reported before any
    # progress is drawn.
    loaded = load_trace(trace)
    roles = replica_roles(loaded, replicas)
    if loaded.concurrent and replicas is not None:
        click.echo(
            f"leptos-sync: note: --replicas is ignored: a concurrent trace uses one "
            f"replica per agent ({len(roles)} here)",
            err=True,
        )
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

        summary = replay(
            trace,
            url=url,
            replicas=replicas,
            processes=not in_process,
            timeout=timeout,
            on_progress=progress,
        )
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
        pushed = r.local_ops - r.merged_ops
        out(
            f"  replica {r.index} {r.role:<6} {r.local_ops:>7,} changes in "
            f"{pushed:>7,} ops out, {r.remote_ops:>7,} ops in  "
            f"{r.seconds:6.2f} s ({r.cpu_seconds:5.2f} s CPU)  {verdict}"
        )
    if summary.server_cpu_seconds is not None:
        out(
            f"server process  {summary.server_cpu_seconds:.2f} s CPU, "
            f"{(summary.server_rss_bytes or 0) / 2**20:.0f} MiB resident"
        )
    health = summary.server_health
    if health is not None:
        checks = ", ".join(
            f"{key}={items[0].get('status')}"
            + (
                f" ({items[0]['observedValue']} {items[0].get('observedUnit', '')})"
                if "observedValue" in items[0]
                else ""
            )
            for key, items in health.get("checks", {}).items()
        )
        out(f"server health   {health.get('status')}: {checks}")
    stored = summary.server_figures.get("leptos_sync_server_operations_stored")
    if stored is not None:
        dup = summary.server_figures.get("leptos_sync_server_operations_duplicate", 0)
        out(f"server stored   {stored:,.0f} operations ({dup:,.0f} duplicates resent)")
    out(
        "result          "
        + ("all replicas equal endContent" if summary.converged else "MISMATCH")
    )


@main.command()
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Trace to replay (default: friendsforever).",
)
@click.option("--in-process", is_flag=True, help="Run all replicas in this process.")
@_timeout_option
@_clean_errors
def demo(trace_path: str | None, in_process: bool, timeout: float) -> None:
    """Start a local server and replay a concurrent trace, one replica per agent."""
    from .replay import default_trace

    trace = Path(trace_path) if trace_path else default_trace("friendsforever")
    _run_replay(trace, None, None, in_process, timeout)


@main.command("replay")
@click.argument("trace", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--url", default=None, help="A running server (ws://...); default: start one."
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=None,
    help=(
        "Sequential traces: replicas in all (1 writer + readers; default 2, at "
        "most 64). Concurrent traces use one per agent."
    ),
)
@click.option("--in-process", is_flag=True, help="Run all replicas in this process.")
@_timeout_option
@_clean_errors
def replay_cmd(
    trace: str, url: str | None, replicas: int | None, in_process: bool, timeout: float
) -> None:
    """Replay an editing trace (sequential or concurrent) through a sync server."""
    _run_replay(Path(trace), url, replicas, in_process, timeout)


@main.command()
@click.argument("store", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_clean_errors
def inspect(store: str, as_json: bool) -> None:
    """Show a store's collections, outbox, cursors and integrity (read-only).

    Exits 1 when the store holds corrupt blobs or fails SQLite's check.
    """
    from .storeinfo import inspect_store

    info = inspect_store(store)
    healthy = not info["corrupt_blobs"] and info["sqlite_integrity"] == "ok"
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _print_store(info)
    if not healthy:
        raise SystemExit(1)


def _print_store(info: dict[str, Any]) -> None:
    click.echo(f"store         {info['store']}")
    if info.get("immutable"):
        click.echo(
            "read as       an immutable file: the directory is read-only, so SQLite "
            "could not open the store in place"
        )
    click.echo(f"kind          {info['kind']} store, id {info['id']}")
    corrupt = info["corrupt_blobs"]
    click.echo(
        f"integrity     SQLite {info['sqlite_integrity']}; "
        f"{info['blobs_checked']} blobs checked, {len(corrupt)} corrupt"
        + (f" ({', '.join(corrupt[:5])})" if corrupt else "")
    )
    if info["kind"] == "server":
        click.echo(f"operations    {info['operations']}")
        for name, c in info["collections"].items():
            snap = c["snapshot_seq"]
            click.echo(
                f"  {name}: head {c['head']}, {c['operations']} operations"
                + (f", snapshot at {snap}" if snap is not None else "")
            )
        return
    click.echo(f"outbox depth  {info['outbox_depth']}")
    if info["quarantined"]:
        click.echo(f"quarantined   {', '.join(info['quarantined'])}")
    for name, c in info["collections"].items():
        records = "unreadable" if c["records"] is None else c["records"]
        click.echo(
            f"  {name}: {records} records, cursor {c['cursor']}, "
            f"outbox {c['outbox']}, log {c['log_entries']}"
        )


#: The server figures ``status`` prints, in order: (label, metric sample name).
_STATUS_FIGURES = (
    ("connected clients", "leptos_sync_server_connected_clients"),
    ("connections accepted", "leptos_sync_server_connections_total"),
    ("operations stored", "leptos_sync_server_operations_stored"),
    ("duplicates resent", "leptos_sync_server_operations_duplicate"),
    ("deliveries fanned out", "leptos_sync_server_operations_fanned_out"),
    ("frames received", "leptos_sync_server_frames_received_total"),
    ("frames sent", "leptos_sync_server_frames_sent_total"),
    ("bytes received", "leptos_sync_server_received_bytes_total"),
    ("bytes sent", "leptos_sync_server_sent_bytes_total"),
    ("connection errors", "leptos_sync_server_connection_errors_total"),
    ("connections refused", "leptos_sync_server_rejected_total"),
    ("uptime (s)", "leptos_sync_uptime_seconds"),
)
_HANDLING = "leptos_sync_server_frame_handling_seconds"


def _http_base(url: str) -> str:
    base = url.rstrip("/")
    if base.startswith("ws"):
        # A sync URL (ws://host:port/ws) names the same server.
        base = "http" + base[2:].rsplit("/ws", 1)[0]
    if not base.startswith(("http://", "https://")):
        raise click.UsageError(
            f"--url must be an http(s):// or ws(s):// URL, not {url!r}"
        )
    return base


def _fetch_status(base: str) -> dict[str, Any]:
    """Health, key figures and alerts of the server at ``base``, as plain data."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from .server.dashboard import bucket_quantile

    try:
        with httpx.Client(timeout=10) as client:
            health_response = client.get(f"{base}/health")
            metrics_response = client.get(f"{base}/metrics")
            # Alert names and collection heads come from the dashboard's
            # snapshot; a server without one still has /health and /metrics.
            snapshot_response = client.get(f"{base}/dashboard/snapshot")
    except httpx.HTTPError as exc:
        raise SyncError(f"cannot reach {base}: {exc}") from exc

    # /health answers 503 when failing, with the same body: still a report.
    try:
        health = health_response.json()
        if not isinstance(health, dict) or "status" not in health:
            raise ValueError("no status")
    except ValueError as exc:
        raise SyncError(
            f"{base}/health answered {health_response.status_code} without a health "
            "report; is this a leptos-sync server?"
        ) from exc
    if metrics_response.status_code != 200:
        raise SyncError(f"{base}/metrics answered {metrics_response.status_code}")
    snapshot: dict[str, Any] | None = None
    if snapshot_response.status_code == 200:
        with contextlib.suppress(ValueError):
            snapshot = snapshot_response.json()

    figures: dict[str, float] = {}
    alert_counts: dict[str, float] = {}
    buckets: list[tuple[float, int]] = []
    try:
        for family in text_string_to_metric_families(metrics_response.text):
            for sample in family.samples:
                if sample.name == "leptos_sync_alerts_active":
                    key = (
                        f"{sample.labels.get('state')} {sample.labels.get('severity')}"
                    )
                    alert_counts[key] = sample.value
                elif sample.name == f"{_HANDLING}_bucket":
                    buckets.append((float(sample.labels["le"]), int(sample.value)))
                elif not sample.labels or family.name.endswith(
                    ("_errors", "_rejected")
                ):
                    # Labelled counters are summed over their labels.
                    figures[sample.name] = figures.get(sample.name, 0.0) + sample.value
    except (ValueError, KeyError) as exc:
        raise SyncError(
            f"{base}/metrics is not in the Prometheus text format: {exc}"
        ) from exc

    count = figures.get(f"{_HANDLING}_count", 0.0)
    latency = {
        "frames": count,
        "mean_seconds": figures.get(f"{_HANDLING}_sum", 0.0) / count if count else None,
        "p99_seconds": bucket_quantile(sorted(buckets), 0.99),
    }
    alerts: list[dict[str, Any]] | None = None
    if snapshot is not None:
        alerts = snapshot.get("alerts")
    return {
        "url": base,
        "health": health,
        "metrics": figures,
        "latency": latency,
        "collections": None if snapshot is None else snapshot.get("collections"),
        "alerts": alerts,
        "alert_counts": {k: v for k, v in alert_counts.items() if v > 0},
    }


def _print_status(info: dict[str, Any]) -> None:
    out = click.echo
    health = info["health"]
    server_id = health.get("serviceId")
    out(f"server   {info['url']}" + (f" (id {server_id})" if server_id else ""))
    out(f"health   {health.get('status')}")
    for key, items in health.get("checks", {}).items():
        for item in items:
            value = item.get("observedValue")
            if isinstance(value, float):
                value = f"{value:.3f}".rstrip("0").rstrip(".")
            observed = (
                "" if value is None else f"{value} {item.get('observedUnit', '')}"
            )
            line = f"  {key:<26} {item.get('status', '?'):<5} {observed:<18} "
            out((line + item.get("output", "")).rstrip())

    out("metrics")
    figures = info["metrics"]
    for label, name in _STATUS_FIGURES:
        if name in figures:
            digits = 1 if name == "leptos_sync_uptime_seconds" else 0
            out(f"  {label:<26} {figures[name]:,.{digits}f}")
    latency = info["latency"]
    if latency["frames"]:
        out(
            f"  {'frame handling':<26} mean {_ms(latency['mean_seconds'])}, "
            f"p99 {_ms(latency['p99_seconds'])} over {latency['frames']:,.0f} frames"
        )
    collections = info["collections"]
    if collections:
        heads = ", ".join(f"{c['name']}={c['head']}" for c in collections[:10])
        more = f" (+{len(collections) - 10} more)" if len(collections) > 10 else ""
        out(f"  {'collection heads':<26} {heads}{more}")

    alerts = info["alerts"]
    if alerts is None:
        # No dashboard: the alert gauge gives counts by state and severity.
        counts = sorted(info["alert_counts"].items())
        listed = ", ".join(f"{value:g} {key}" for key, value in counts)
        out(f"alerts   {listed or 'none'}")
        return
    out("alerts   " + ("none" if not alerts else f"{len(alerts)} active"))
    for alert in alerts:
        labels = alert.get("labels", {})
        summary = alert.get("annotations", {}).get("summary", "")
        out(
            f"  {alert.get('status', '?'):<8} {labels.get('severity', '?'):<9} "
            f"{labels.get('alertname', '?')}  {summary}".rstrip()
        )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3g} ms"


@main.command()
@click.option(
    "--url",
    default="http://127.0.0.1:8765",
    show_default=True,
    help="The server's HTTP base URL (its ws:// sync URL works too).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_clean_errors
def status(url: str, as_json: bool) -> None:
    """Print a server's health, key metrics and active alerts."""
    info = _fetch_status(_http_base(url))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    _print_status(info)


@main.command()
@click.argument("store", type=click.Path(exists=True, dir_okay=False))
@click.argument("dest", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@_clean_errors
def backup(store: str, dest: str, as_json: bool) -> None:
    """Back up a replica or server STORE (online) into the directory DEST.

    DEST must be a new path or an empty directory (which the backup replaces);
    anything else, such as a directory holding files, is refused untouched.
    """
    from .backup import backup_store

    manifest = backup_store(store, dest)
    if as_json:
        click.echo(json.dumps(manifest.to_json(), indent=2))
        return
    entry = manifest.files[0]
    click.echo(f"backup    {Path(dest).resolve()}")
    click.echo(f"store     {manifest.kind} {manifest.store_id} ({manifest.source})")
    click.echo(f"created   {manifest.created.isoformat()}")
    click.echo(f"file      {entry.name}: {entry.size:,} bytes, sha256 {entry.sha256}")
    click.echo("tables    " + ", ".join(f"{k} {v}" for k, v in manifest.tables.items()))
    if manifest.bad_blobs:
        click.echo(
            f"warning   {manifest.bad_blobs} corrupt blobs copied as they are "
            "(see `leptos-sync scrub`)",
            err=True,
        )


@main.command()
@click.argument("backup_dir", metavar="BACKUP", type=click.Path(exists=True))
@click.argument("store", type=click.Path(dir_okay=False))
@click.option(
    "--keep-identity",
    is_flag=True,
    help="Keep the backup's replica or server id (see docs/reliability.md).",
)
@click.option(
    "--no-keep-previous",
    is_flag=True,
    help="Do not keep the replaced store as STORE.pre-restore-<time>.",
)
@_clean_errors
def restore(
    backup_dir: str, store: str, keep_identity: bool, no_keep_previous: bool
) -> None:
    """Verify BACKUP and replace STORE with it (stop its process first)."""
    from .backup import restore_store

    result = restore_store(
        backup_dir,
        store,
        new_identity=not keep_identity,
        keep_previous=not no_keep_previous,
    )
    click.echo(
        f"restored  {result.path} from the backup of "
        f"{result.manifest.created.isoformat()}"
    )
    click.echo(f"identity  {result.manifest.kind} {result.old_id} -> {result.new_id}")
    if result.previous is not None:
        click.echo(f"previous  kept as {result.previous}")


@main.command()
@click.argument("store", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_clean_errors
def scrub(store: str, as_json: bool) -> None:
    """Verify every stored blob's checksum in a replica or server STORE."""
    from .backup import scrub_store

    report = scrub_store(store)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "store": str(report.path),
                    "kind": report.kind,
                    "checked": report.checked,
                    "bad": [str(b) for b in report.bad],
                    "sqlite_integrity": report.sqlite_integrity,
                    "ok": report.ok,
                },
                indent=2,
            )
        )
    else:
        click.echo(f"{report.kind} store {report.path}: {report.describe()}")
    if not report.ok:
        sys.exit(1)
