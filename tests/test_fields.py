"""Tests of field constructors and value validation."""

from __future__ import annotations

import math

import pytest

from leptos_sync import fields
from leptos_sync.errors import InvalidIdError, InvalidValueError, UsageError
from leptos_sync.fields import (
    MAX_ID_LENGTH,
    FieldKind,
    check_field_name,
    check_id,
    check_json,
)


def test_constructors_record_kind_and_initial_value() -> None:
    """Each constructor makes a NewField of its kind with its initial value."""
    assert fields.counter(3).kind is FieldKind.COUNTER
    assert fields.counter(3).initial == 3
    assert fields.text("hi").initial == "hi"
    assert fields.list(("a", 1)).initial == ["a", 1]
    assert fields.tree().kind is FieldKind.TREE


@pytest.mark.parametrize("bad", [True, "1", None, math.inf, math.nan])
def test_counter_rejects_non_numbers(bad: object) -> None:
    """A counter starts at a finite int or float, nothing else."""
    with pytest.raises(InvalidValueError):
        fields.counter(bad)  # type: ignore[arg-type]


def test_text_and_list_reject_bad_initial_values() -> None:
    """Text holds a str; list items are JSON."""
    with pytest.raises(InvalidValueError):
        fields.text(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidValueError):
        fields.list([object()])


@pytest.mark.parametrize("bad", [1, None, b"id", "", "x" * (MAX_ID_LENGTH + 1)])
def test_check_id_rejects_non_strings_empty_and_long(bad: object) -> None:
    """Record ids are non-empty strings within the size limit."""
    with pytest.raises(InvalidIdError):
        check_id(bad)


def test_check_id_accepts_unicode_ids_at_the_limit() -> None:
    """Any non-empty string up to the limit is a valid id."""
    assert check_id("é" * MAX_ID_LENGTH) == "é" * MAX_ID_LENGTH


@pytest.mark.parametrize("bad", ["$c", "$anything", "", 5, "x" * 257])
def test_check_field_name_rejects_reserved_empty_and_long(bad: object) -> None:
    """Field names are non-empty strings that do not start with the reserved '$'."""
    with pytest.raises(InvalidValueError):
        check_field_name(bad)


@pytest.mark.parametrize(
    "bad",
    [
        object(),
        {1: "x"},
        math.nan,
        math.inf,
        1 << 64,
        {"a": {1, 2}},
        b"bytes",
    ],
)
def test_check_json_rejects_non_json(bad: object) -> None:
    """Non-JSON types, non-string keys, non-finite floats and huge ints are refused."""
    with pytest.raises(InvalidValueError):
        check_json(bad)


def test_check_json_rejects_deep_nesting_and_oversized_values() -> None:
    """Nesting deeper than 64 and sizes over the limit are refused."""
    deep: object = 1
    for _ in range(70):
        deep = [deep]
    with pytest.raises(InvalidValueError):
        check_json(deep)
    with pytest.raises(InvalidValueError):
        check_json("x" * 2000, limit=1000)


def test_check_json_accepts_plain_json_and_returns_a_size() -> None:
    """Plain JSON passes and the returned size grows with the value."""
    small = check_json({"a": [1, 2.5, None, True, "s"]})
    big = check_json({"a": [1, 2.5, None, True, "s" * 100]})
    assert 0 < small < big


def test_validation_errors_are_usage_errors() -> None:
    """Bad values are the caller's fault: UsageError subclasses."""
    assert issubclass(InvalidValueError, UsageError)
    assert issubclass(InvalidIdError, UsageError)
