"""The long crash test: kill the server and the writer N times, verify nothing is lost.

    python scripts/crash_soak.py --kills 200 [--seed S] [--workdir DIR] [--json]

Runs ``crash_run`` from ``tests/procs.py`` (the scenario the CI test runs with
about 20 kills): a sync server, a writer and a reader as OS processes on
loopback, the server and the writer SIGKILLed at seeded random points during a
long stream of writes, and every third cycle the reader too. At the end it
checks that every acknowledged write is on the server and the reader, that each
write was stored and applied exactly once, that all replicas hold the same
state and that every store passes SQLite's integrity check. Exit status 0 when
all of that holds, 1 otherwise (the message says what failed and the work
directory is kept for inspection).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import procs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--kills",
        type=int,
        default=200,
        help="server and writer kills in all (reader kills come on top)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed for the kill points (default: time-based)",
    )
    parser.add_argument(
        "--reader-every",
        type=int,
        default=3,
        help="kill the reader every N cycles (0: never)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the stores and logs go (default: a temp dir)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", action="store_true", help="print figures as JSON")
    args = parser.parse_args(argv)
    if args.kills < 2:
        parser.error("--kills must be at least 2")

    seed = args.seed if args.seed is not None else int(time.time())
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="leptos-crash-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cycles = args.kills // 2
    print(f"crash soak: {cycles} cycles, seed {seed}, in {workdir}", file=sys.stderr)
    try:
        figures = procs.crash_run(
            workdir,
            cycles=cycles,
            seed=seed,
            reader_every=args.reader_every,
            say=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except AssertionError as exc:
        print(
            f"FAILED (seed {seed}, work directory {workdir} kept): {exc}",
            file=sys.stderr,
        )
        return 1
    out = figures.to_json()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"kills survived   {out['kills']} (server {out['server_kills']}, "
            f"writer {out['writer_kills']}, reader {out['reader_kills']})"
        )
        print(
            f"writes verified  {out['writes']:,} (all acknowledged, each stored "
            f"once: {out['server_ops']:,} server ops)"
        )
        print(
            f"outbox survived  {out['outbox_survived']:,} unacknowledged writes "
            "across writer kills, all delivered"
        )
        print(f"integrity checks {out['integrity_checks']} (all ok)")
        print(f"wall time        {out['seconds']} s, seed {seed}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
