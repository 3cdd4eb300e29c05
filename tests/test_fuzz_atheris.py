"""Every decoder's target runs briefly under atheris, coverage-guided.

Longer runs: ``python tests/fuzz/atheris_harness.py TARGET -max_total_time=600``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris did not install on this machine")

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import targets

HARNESS = Path(__file__).resolve().parent / "fuzz" / "atheris_harness.py"


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_atheris_finds_no_crash(name: str, tmp_path: Path) -> None:
    """A few thousand coverage-guided inputs raise only the decoder's errors."""
    run = subprocess.run(
        [sys.executable, str(HARNESS), name, "-runs=4000", "-seed=1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "DONE" in run.stderr
    assert not list(tmp_path.glob("crash-*"))
