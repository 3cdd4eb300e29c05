"""Tests for CRC32C checksums, sealed frames and metadata validation."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leptos_sync.clock import HLCTimestamp, HybridLogicalClock, ManualClock
from leptos_sync.errors import ConfigError, IntegrityError, SyncError
from leptos_sync.reliability import DataIntegrityConfig, IntegrityChecker


def test_crc32c_known_value() -> None:
    """CRC32C of b"123456789" is the standard check value 0xE3069283."""
    assert IntegrityChecker().checksum(b"123456789") == 0xE3069283
    assert IntegrityChecker.checksum(bytearray(b"123456789")) == 0xE3069283


def test_swapped_bytes_change_the_checksum() -> None:
    """b"\\x01\\x02" and b"\\x02\\x01" have different checksums, unlike a byte sum."""
    checker = IntegrityChecker()
    assert checker.checksum(b"\x01\x02") != checker.checksum(b"\x02\x01")


def test_validate_data_mismatch_names_both_checksums() -> None:
    """A wrong expected checksum raises IntegrityError showing expected and actual."""
    checker = IntegrityChecker()
    checker.validate_data(b"123456789", 0xE3069283)
    with pytest.raises(IntegrityError, match="expected 0x00000001, actual 0xe3069283"):
        checker.validate_data(b"123456789", 1)
    assert isinstance(IntegrityError("x"), SyncError)
    stats = checker.statistics()
    assert (stats.checked, stats.failures) == (2, 1)


def test_seal_and_unseal_round_trip() -> None:
    """seal appends a big-endian CRC32C that unseal verifies and strips."""
    checker = IntegrityChecker()
    framed = checker.seal(b"123456789")
    assert framed == b"123456789" + bytes.fromhex("e3069283")
    assert checker.unseal(framed) == b"123456789"
    assert checker.unseal(checker.seal(b"")) == b""


def test_unseal_detects_corruption_and_truncation() -> None:
    """A flipped byte or a frame shorter than 4 bytes raises IntegrityError."""
    checker = IntegrityChecker()
    framed = bytearray(checker.seal(b"payload"))
    framed[0] ^= 0xFF
    with pytest.raises(IntegrityError, match="mismatch"):
        checker.unseal(framed)
    with pytest.raises(IntegrityError, match="truncated"):
        checker.unseal(b"\x00\x01")


@given(
    data=st.binary(max_size=512),
    position=st.integers(min_value=0),
    bit=st.integers(0, 7),
)
def test_any_single_bit_flip_is_detected(data: bytes, position: int, bit: int) -> None:
    """Every sealed frame round-trips, and flipping any one bit is caught."""
    checker = IntegrityChecker()
    framed = checker.seal(data)
    assert checker.unseal(framed) == data
    corrupted = bytearray(framed)
    corrupted[position % len(corrupted)] ^= 1 << bit
    with pytest.raises(IntegrityError):
        checker.unseal(bytes(corrupted))


def test_scan_reports_every_corrupt_item() -> None:
    """scan returns the keys of all items whose checksum does not match."""
    checker = IntegrityChecker()
    items = [
        ("a", b"alpha", checker.checksum(b"alpha")),
        ("b", b"beta", 0),
        ("c", b"gamma", checker.checksum(b"gamma")),
        ("d", b"delta", 1),
    ]
    assert checker.scan(items) == ["b", "d"]
    off = IntegrityChecker(DataIntegrityConfig(corruption_detection=False))
    assert off.scan(items) == []
    assert off.statistics().skipped == 1


def test_presets() -> None:
    """Basic has no metadata validation; Advanced turns everything on."""
    basic, advanced = DataIntegrityConfig.Basic, DataIntegrityConfig.Advanced
    assert basic == DataIntegrityConfig()
    assert (basic.checksum_validation, basic.corruption_detection) == (True, True)
    assert basic.metadata_validation is False
    assert advanced == DataIntegrityConfig(
        checksum_validation=True,
        timestamp_precision=True,
        corruption_detection=True,
        metadata_validation=True,
    )


def test_guide_workaround_config_constructs() -> None:
    """The guide's hand-built integrity config constructs and skips what is off."""
    config = DataIntegrityConfig(
        checksum_validation=True,
        timestamp_precision=False,
        corruption_detection=True,
        metadata_validation=False,
    )
    checker = IntegrityChecker(config)
    checker.validate_version_increasing(5, 1)
    assert checker.statistics().skipped == 1


def test_hlc_validation_requires_strictly_later_timestamps() -> None:
    """Advanced validation accepts increasing HLC stamps and rejects others."""
    checker = IntegrityChecker(DataIntegrityConfig.Advanced)
    earlier = HLCTimestamp(1000, 0, 1)
    later = HLCTimestamp(1000, 1, 1)
    checker.validate_hlc_increasing(None, earlier)
    checker.validate_hlc_increasing(earlier, later)
    with pytest.raises(IntegrityError, match="does not come after"):
        checker.validate_hlc_increasing(later, later)
    with pytest.raises(IntegrityError):
        checker.validate_hlc_increasing(later, earlier)


def test_hlc_stamps_pass_validation_when_the_wall_clock_goes_back() -> None:
    """Timestamps from the HLC pass validation while the wall stalls or jumps back."""
    clock = ManualClock()
    hlc = HybridLogicalClock(clock=clock, replica_id=7)
    checker = IntegrityChecker(DataIntegrityConfig.Advanced)
    previous = None
    for step in range(100):
        if step % 10 == 0:
            clock.jump_wall(-5)
        current = hlc.now()
        checker.validate_hlc_increasing(previous, current)
        previous = current
    assert checker.statistics().failures == 0


def test_imprecise_timestamps_only_check_wall_time() -> None:
    """With timestamp_precision off, equal wall milliseconds are accepted."""
    config = DataIntegrityConfig(timestamp_precision=False, metadata_validation=True)
    checker = IntegrityChecker(config)
    checker.validate_hlc_increasing(HLCTimestamp(5, 3, 1), HLCTimestamp(5, 0, 1))
    with pytest.raises(IntegrityError):
        checker.validate_hlc_increasing(HLCTimestamp(5, 0, 1), HLCTimestamp(4, 9, 1))


def test_version_validation() -> None:
    """Versions must be non-negative integers above the previous one."""
    checker = IntegrityChecker(DataIntegrityConfig.Advanced)
    checker.validate_version_increasing(None, 0)
    checker.validate_version_increasing(1, 2)
    for previous, current in [(2, 2), (3, 1), (None, -1), (None, True)]:
        with pytest.raises(IntegrityError, match="version"):
            checker.validate_version_increasing(previous, current)


def test_disabled_checksum_validation_skips() -> None:
    """With checksum_validation off, validate_data checks nothing and counts a skip."""
    checker = IntegrityChecker(DataIntegrityConfig(checksum_validation=False))
    checker.validate_data(b"data", 0)
    assert checker.statistics().skipped == 1


def test_statistics_are_exact_under_threads() -> None:
    """8 threads of 500 validations each leave exact counters."""
    checker = IntegrityChecker()
    good = checker.checksum(b"x")

    def work() -> None:
        for _ in range(500):
            checker.validate_data(b"x", good)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert checker.statistics().checked == 4000


@pytest.mark.parametrize(
    "field",
    [
        "checksum_validation",
        "timestamp_precision",
        "corruption_detection",
        "metadata_validation",
    ],
)
def test_non_boolean_switch_names_the_field(field: str) -> None:
    """A switch that is not a bool raises ConfigError naming it."""
    with pytest.raises(ConfigError) as caught:
        DataIntegrityConfig(**{field: 1})  # type: ignore[arg-type]
    assert caught.value.field == field


def test_checker_rejects_a_non_config() -> None:
    """IntegrityChecker given something else than a config names data_integrity."""
    with pytest.raises(ConfigError) as caught:
        IntegrityChecker("basic")  # type: ignore[arg-type]
    assert caught.value.field == "data_integrity"
