"""Hypothesis runs every decoder's fuzz target (see ``tests/fuzz/targets.py``).

The wire protocol and the hub also have structured fuzzing of their own in
``test_fuzz_protocol.py``; the coverage-guided harness is
``tests/fuzz/atheris_harness.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import targets

EXAMPLES = int(os.environ.get("LEPTOS_SYNC_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
@FUZZ
@given(data=st.binary(max_size=512))
def test_decoder_raises_only_its_own_errors(name: str, data: bytes) -> None:
    """Random bytes make every decoder raise its documented error, or pass."""
    targets.TARGETS[name](data)


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=20,
    ),
    st.integers(0, 255),
)
def test_structured_json_reaches_the_deeper_checks(value: object, key: int) -> None:
    """JSON of every shape in a trace's fields, a token's claims and a manifest."""
    import json

    encoded = json.dumps(value).encode()
    targets.json_manifest(bytes([key]) + encoded)
    targets.token(encoded)
    targets.trace(json.dumps({"txns": value, "endContent": ""}).encode())
    targets.trace(
        json.dumps(
            {"kind": "concurrent", "numAgents": 2, "txns": [value], "endContent": ""}
        ).encode()
    )


def test_regression_deeply_nested_json_is_a_trace_error() -> None:
    """A trace of nested brackets raised RecursionError out of json.loads."""
    with pytest.raises(targets.TraceError, match="nested too deeply"):
        targets.parse_trace(b"[" * 100_000)


def test_regression_a_gzip_bomb_or_a_cut_gzip_is_a_trace_error() -> None:
    """A gzip that inflates past the limit, or is cut short, is refused."""
    import gzip

    from leptos_sync import traces

    bomb = gzip.compress(b" " * (traces.MAX_TRACE_BYTES + 1))
    with pytest.raises(targets.TraceError, match="decompresses to more than"):
        targets.parse_trace(bomb)
    with pytest.raises(targets.TraceError, match="truncated"):
        targets.parse_trace(gzip.compress(b'{"txns": []}')[:-10])


def test_regression_a_token_with_non_ascii_characters_is_unauthorized() -> None:
    """Found by fuzzing: such a token raised UnicodeEncodeError while its
    signature was computed, instead of being refused."""
    with pytest.raises(targets.UnauthorizedError, match="signed-token form"):
        targets._TOKENS.authenticate("\x80.\x00", 1)
