"""``python -m bench``: every benchmark, ours against its peer, then one table.

Options: ``--smoke`` runs tiny inputs quickly (a check that everything works,
not a measurement); ``--only NAME`` (repeatable) runs only the named ones;
``--markdown FILE`` also writes the results table to FILE.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import Row, markdown_table, say

BENCHMARKS = {
    "trace": "bench.bench_trace",
    "records": "bench.bench_records",
    "fanout": "bench.bench_fanout",
    "overheads": "bench.bench_overheads",
    "memory": "bench.bench_memory",
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--smoke", action="store_true", help="tiny inputs, quick")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument("--markdown", type=Path, help="write the results table here")
    args = parser.parse_args(argv)

    names = args.only or list(BENCHMARKS)
    rows: list[Row] = []
    failed: list[str] = []
    started = time.perf_counter()
    for name in names:
        say(f"== {name} {'(smoke)' if args.smoke else ''}".rstrip())
        began = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            rows += module.run(smoke=args.smoke)
        except Exception as exc:  # report and go on with the others
            failed.append(name)
            say(f"!! {name} failed: {type(exc).__name__}: {exc}")
        say(f"== {name} took {time.perf_counter() - began:.1f} s")

    table = markdown_table(rows)
    say("")
    say(table)
    say(
        f"\n{len(rows)} figures in {time.perf_counter() - started:.0f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    if args.markdown is not None:
        args.markdown.write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
