"""Recorded editing traces (josephg/editing-traces format): loading and checking.

Two formats exist. *Sequential*: ``startContent``, ``endContent`` and ``txns``, each
a list of ``[position, deleted, inserted]`` patches applied in order by one
writer (``kind`` is absent or ``"sequential"``). *Concurrent*: ``kind ==
"concurrent"``, ``numAgents``, ``endContent`` and ``txns`` that also name their
``agent`` and causal ``parents``; a transaction's positions refer to the document
obtained by merging its parents' states. Positions count Unicode code points.

Numbers are JSON integers: ``true`` and ``false`` are refused where a position,
a count, an agent or a parent is expected (Python would take them for 1 and 0).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from .errors import UsageError

__all__ = ["MAX_TRACE_BYTES", "Trace", "TraceError", "Txn", "load_trace", "parse_trace"]

#: The largest trace read, decompressed (the real ones are a few MB).
MAX_TRACE_BYTES = 256 * 1024 * 1024


class TraceError(UsageError):
    """The trace file is missing, unreadable or not in a known format."""


@dataclass(frozen=True, slots=True)
class Txn:
    agent: int
    parents: tuple[int, ...]
    patches: tuple[tuple[int, int, str], ...]


@dataclass(frozen=True)
class Trace:
    name: str
    concurrent: bool
    start_content: str
    end_content: str
    num_agents: int
    txns: tuple[Txn, ...]

    @property
    def patch_count(self) -> int:
        return sum(len(t.patches) for t in self.txns)

    @property
    def agents(self) -> tuple[int, ...]:
        """The agents that transactions name, in increasing order.

        ``numAgents`` is only an upper bound: a trace may declare more agents
        than ever write.
        """
        return tuple(sorted({t.agent for t in self.txns}))

    def agent_txns(self, agent: int) -> list[int]:
        """Indexes of the agent's transactions, in its (total) order."""
        return [i for i, t in enumerate(self.txns) if t.agent == agent]

    def replay_locally(self) -> str:
        """Apply a sequential trace to a plain string (the reference result)."""
        if self.concurrent:
            raise TraceError("a concurrent trace has no single local order")
        doc = list(self.start_content)
        for txn in self.txns:
            for pos, deleted, inserted in txn.patches:
                doc[pos : pos + deleted] = inserted
        return "".join(doc)


def load_trace(path: str | Path) -> Trace:
    """Read a ``.json`` or ``.json.gz`` trace and check its shape.

    Raises:
        TraceError: with what is wrong and where.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror or exc}") from exc
    return parse_trace(raw, path)


def parse_trace(raw: bytes, path: str | Path = "trace") -> Trace:
    """Parse and check the bytes of a ``.json`` or ``.json.gz`` trace.

    ``path`` names the trace in errors and gives it its name.

    Raises:
        TraceError: with what is wrong and where.
    """
    path = Path(path)
    try:
        text = _gunzip(raw) if raw[:2] == b"\x1f\x8b" else raw
        data = json.loads(text)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise TraceError(f"{path} is not a (gzipped) JSON trace: {exc}") from exc
    except RecursionError:
        raise TraceError(f"{path}: JSON nested too deeply to be a trace") from None
    if not isinstance(data, dict) or "txns" not in data or "endContent" not in data:
        raise TraceError(f"{path}: expected an object with 'txns' and 'endContent'")
    kind = data.get("kind")
    if kind not in _KINDS:
        raise TraceError(
            f"{path}: unknown kind {kind!r}; expected 'concurrent', or 'sequential' "
            "(or no kind) for a sequential trace"
        )
    concurrent = kind == "concurrent"
    end = _str(data.get("endContent"), path, "endContent")
    start = (
        "" if concurrent else _str(data.get("startContent", ""), path, "startContent")
    )
    agents = 1
    if concurrent:
        declared = data.get("numAgents")
        if not _is_int(declared) or declared < 1:
            raise TraceError(f"{path}: numAgents must be a positive integer")
        agents = declared
    txns_raw = data["txns"]
    if not isinstance(txns_raw, list):
        raise TraceError(f"{path}: 'txns' must be a list")
    txns = tuple(
        _txn(entry, i, path, concurrent, agents) for i, entry in enumerate(txns_raw)
    )
    name = path.name.split(".")[0]
    return Trace(name, concurrent, start, end, agents, txns)


_KINDS = (None, "sequential", "concurrent")


def _gunzip(raw: bytes) -> bytes:
    """Decompress, refusing more than :data:`MAX_TRACE_BYTES` (a gzip bomb)."""
    inflate = zlib.decompressobj(wbits=31)
    out = inflate.decompress(raw, MAX_TRACE_BYTES)
    if inflate.unconsumed_tail:
        raise TraceError(
            f"the trace decompresses to more than {MAX_TRACE_BYTES >> 20} MiB"
        )
    if not inflate.eof:
        raise TraceError("the gzip stream is truncated")
    return out


def _is_int(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is a JSON integer (a bool is an int in Python: not here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _str(value: Any, path: Path, field: str) -> str:
    if not isinstance(value, str):
        raise TraceError(f"{path}: {field} must be a string")
    return value


def _txn(entry: Any, index: int, path: Path, concurrent: bool, agents: int) -> Txn:
    where = f"{path}: txns[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("patches"), list):
        raise TraceError(f"{where} must be an object with a 'patches' list")
    patches = []
    for patch in entry["patches"]:
        if (
            not isinstance(patch, list)
            or len(patch) != 3
            or not _is_int(patch[0])
            or not _is_int(patch[1])
            or not isinstance(patch[2], str)
            or patch[0] < 0
            or patch[1] < 0
        ):
            shown = repr(patch)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise TraceError(
                f"{where}: a patch is [position, deleted, inserted] (two "
                f"non-negative integers and a string), not {shown}"
            )
        patches.append((patch[0], patch[1], patch[2]))
    agent, parents = 0, ()
    if concurrent:
        declared = entry.get("agent")
        if not _is_int(declared) or not 0 <= declared < agents:
            raise TraceError(f"{where}: agent must be in 0..{agents - 1}")
        agent = declared
        raw_parents = entry.get("parents")
        if not isinstance(raw_parents, list) or not all(
            _is_int(p) and 0 <= p < index for p in raw_parents
        ):
            raise TraceError(f"{where}: parents must be indexes of earlier txns")
        parents = tuple(raw_parents)
    return Txn(agent, parents, tuple(patches))
