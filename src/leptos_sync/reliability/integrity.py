"""Data integrity: CRC32C checksums, sealed frames and metadata validation.

:class:`DataIntegrityConfig` says which checks are on; :class:`IntegrityChecker`
carries them out and counts what it checked. Each switch governs these methods:

========================  ===================================================
``checksum_validation``   :meth:`~IntegrityChecker.validate_data` and the
                          verification in :meth:`~IntegrityChecker.unseal`
``corruption_detection``  bulk scans with :meth:`~IntegrityChecker.scan`
``metadata_validation``   :meth:`~IntegrityChecker.validate_hlc_increasing`
                          and :meth:`~IntegrityChecker.validate_version_increasing`
``timestamp_precision``   HLC timestamps must strictly increase as a whole
                          (wall time, counter, replica); when off, only the
                          wall-clock milliseconds must not go backwards
========================  ===================================================

A switched-off check passes without looking and is counted as skipped.
:meth:`~IntegrityChecker.checksum` and :meth:`~IntegrityChecker.seal` always work.
The checksum is CRC32C (Castagnoli), as on the wire and in the local store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import crc32c as _crc32c

from ..clock import HLCTimestamp
from ..errors import ConfigError, IntegrityError

__all__ = ["DataIntegrityConfig", "IntegrityChecker", "IntegrityStatistics"]

K = TypeVar("K")
CHECKSUM_SIZE = 4

Bytes = bytes | bytearray | memoryview


@dataclass(frozen=True)
class DataIntegrityConfig:
    """Which integrity checks are on (see the module docstring for each one).

    The presets: ``DataIntegrityConfig.Basic`` (checksums, corruption detection
    and precise timestamps; no metadata validation) and
    ``DataIntegrityConfig.Advanced`` (everything on).
    """

    Basic: ClassVar[DataIntegrityConfig]
    Advanced: ClassVar[DataIntegrityConfig]

    checksum_validation: bool = True
    timestamp_precision: bool = True
    corruption_detection: bool = True
    metadata_validation: bool = False

    def __post_init__(self) -> None:
        for name in (
            "checksum_validation",
            "timestamp_precision",
            "corruption_detection",
            "metadata_validation",
        ):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(name, f"expected True or False, got {value!r}")


DataIntegrityConfig.Basic = DataIntegrityConfig()
DataIntegrityConfig.Advanced = DataIntegrityConfig(metadata_validation=True)


@dataclass(frozen=True, slots=True)
class IntegrityStatistics:
    """Counters of an :class:`IntegrityChecker`.

    Attributes:
        checked: validations performed.
        failures: validations that raised (or scan entries found corrupt).
        skipped: validations not performed because their switch is off.
    """

    checked: int
    failures: int
    skipped: int


class IntegrityChecker:
    """Computes and verifies checksums and record metadata.

    Thread-safe: the counters are kept under a lock.

    Args:
        config: the switches; ``DataIntegrityConfig.Basic`` by default.
    """

    def __init__(self, config: DataIntegrityConfig = DataIntegrityConfig.Basic) -> None:
        if not isinstance(config, DataIntegrityConfig):
            raise ConfigError(
                "data_integrity", f"expected DataIntegrityConfig, got {config!r}"
            )
        self.config = config
        self._lock = threading.Lock()
        self._checked = self._failures = self._skipped = 0

    @staticmethod
    def checksum(data: Bytes) -> int:
        """The CRC32C of ``data`` as an unsigned 32-bit integer."""
        return int(_crc32c.crc32c(data))

    def validate_data(self, data: Bytes, expected: int) -> None:
        """Check that ``data`` has the CRC32C ``expected``.

        Raises:
            IntegrityError: the checksums differ; the message gives both.
        """
        if not self.config.checksum_validation:
            self._count(skipped=1)
            return
        actual = self.checksum(data)
        if actual != expected:
            self._count(checked=1, failures=1)
            raise IntegrityError(
                f"checksum mismatch over {len(data)} bytes: expected "
                f"{expected:#010x}, actual {actual:#010x}; the data is corrupt"
            )
        self._count(checked=1)

    def seal(self, data: Bytes) -> bytes:
        """``data`` followed by its CRC32C, 4 bytes big-endian."""
        return bytes(data) + self.checksum(data).to_bytes(CHECKSUM_SIZE, "big")

    def unseal(self, framed: Bytes) -> bytes:
        """The data of a :meth:`seal` frame, after verifying its checksum.

        Raises:
            IntegrityError: the frame is shorter than its checksum, or the
                checksum does not match.
        """
        view = memoryview(framed)
        if len(view) < CHECKSUM_SIZE:
            self._count(checked=1, failures=1)
            raise IntegrityError(
                f"sealed frame of {len(view)} bytes is shorter than its "
                f"{CHECKSUM_SIZE}-byte checksum; the data is truncated"
            )
        data, trailer = view[:-CHECKSUM_SIZE], view[-CHECKSUM_SIZE:]
        self.validate_data(data, int.from_bytes(trailer, "big"))
        return bytes(data)

    def scan(self, items: Iterable[tuple[K, Bytes, int]]) -> list[K]:
        """The keys of every ``(key, data, expected_crc)`` whose data is corrupt.

        Unlike :meth:`validate_data` it does not stop at the first bad item, so
        a scrub can quarantine them all.
        """
        if not self.config.corruption_detection:
            self._count(skipped=1)
            return []
        corrupt = [
            key for key, data, expected in items if self.checksum(data) != expected
        ]
        self._count(checked=1, failures=len(corrupt))
        return corrupt

    def validate_hlc_increasing(
        self, previous: HLCTimestamp | None, current: HLCTimestamp
    ) -> None:
        """Check that a record's new timestamp comes after its previous one.

        Raises:
            IntegrityError: the timestamp did not advance.
        """
        if not self.config.metadata_validation:
            self._count(skipped=1)
            return
        if previous is not None:
            if self.config.timestamp_precision:
                advanced = current > previous
            else:
                advanced = current.wall_ms >= previous.wall_ms
            if not advanced:
                self._count(checked=1, failures=1)
                raise IntegrityError(
                    f"metadata: timestamp {current} does not come after {previous}; "
                    "record timestamps must increase"
                )
        self._count(checked=1)

    def validate_version_increasing(self, previous: int | None, current: int) -> None:
        """Check that a record's new version number is greater than its previous.

        Raises:
            IntegrityError: the version is not an integer above the previous.
        """
        if not self.config.metadata_validation:
            self._count(skipped=1)
            return
        valid = isinstance(current, int) and not isinstance(current, bool)
        if valid and current < 0:
            valid = False
        if valid and previous is not None:
            valid = current > previous
        if not valid:
            self._count(checked=1, failures=1)
            raise IntegrityError(
                f"metadata: version {current!r} does not follow {previous!r}; "
                "versions must be increasing non-negative integers"
            )
        self._count(checked=1)

    def statistics(self) -> IntegrityStatistics:
        with self._lock:
            return IntegrityStatistics(self._checked, self._failures, self._skipped)

    def _count(self, *, checked: int = 0, failures: int = 0, skipped: int = 0) -> None:
        with self._lock:
            self._checked += checked
            self._failures += failures
            self._skipped += skipped

    def __repr__(self) -> str:
        return f"IntegrityChecker({self.config!r})"
