"""Coverage-guided fuzzing of the decoders with atheris (libFuzzer for Python).

    python tests/fuzz/atheris_harness.py TARGET [libFuzzer options]
    python tests/fuzz/atheris_harness.py frame -runs=100000
    python tests/fuzz/atheris_harness.py token -max_total_time=600 corpus/

TARGET is one of the names in ``targets.TARGETS``. A crash (an exception other
than the decoder's own errors) stops the run and writes the input to
``crash-<hash>``; turn it into a regression test. The test suite runs every
target briefly (``tests/test_fuzz_atheris.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["leptos_sync"]):
    import targets


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        names = ", ".join(sorted(targets.TARGETS))
        sys.exit(f"usage: {sys.argv[0]} TARGET [libFuzzer options]; TARGET: {names}")
    target = targets.TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
