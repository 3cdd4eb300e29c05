"""Fixtures shared by the reliability tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

try:
    import leptos_sync.clock  # noqa: F401
except ImportError:
    # Not installed: run from the source tree.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from leptos_sync.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at a fixed starting point."""
    return ManualClock()
