"""Field kinds and value validation for records.

A record is a map of fields. A plain JSON value (``None``, ``bool``, ``int``,
``float``, ``str``, lists and string-keyed dicts of those) is a last-writer-wins
register. The other kinds are created with the constructors below and then edited
through their own handles, so that concurrent edits merge instead of overwriting:

>>> from leptos_sync import fields
>>> notes.insert("n1", {"title": "Plan", "likes": fields.counter(),
...                     "body": fields.text("Draft"), "tags": fields.list(["a"]),
...                     "outline": fields.tree()})
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidIdError, InvalidValueError, UsageError

__all__ = [
    "FieldKind",
    "counter",
    "list",
    "text",
    "tree",
]

_list = list

#: Field names starting with this character hold record metadata.
RESERVED_PREFIX = "$"
MAX_ID_LENGTH = 512
MAX_FIELD_NAME_LENGTH = 256
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1


class FieldKind(enum.Enum):
    """What a field holds and how concurrent edits to it merge."""

    REGISTER = "register"  # a JSON value; the last writer wins
    COUNTER = "counter"  # increments and decrements add up
    TEXT = "text"  # collaborative text; concurrent inserts interleave
    LIST = "list"  # a sequence of JSON values; concurrent inserts interleave
    TREE = "tree"  # a hierarchy of nodes with moves


@dataclass(frozen=True)
class NewField:
    """The initial value of a non-register field, made by the constructors below."""

    kind: FieldKind
    initial: Any = field(default=None)


def counter(initial: int | float = 0) -> NewField:
    """A counter field starting at ``initial``."""
    return NewField(FieldKind.COUNTER, check_amount(initial, "a counter starts at"))


def check_amount(amount: object, what: str) -> int | float:
    """Return ``amount`` if it is a finite number (not a bool) that a counter
    can hold exactly (integers within 64 bits), else raise."""
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise InvalidValueError(f"{what} a number, got {amount!r}")
    if isinstance(amount, int):
        if not _INT_MIN <= amount <= _INT_MAX:
            raise InvalidValueError(f"{what} an integer within 64 bits, got {amount}")
    elif not math.isfinite(amount):
        raise InvalidValueError(f"{what} a finite number, got {amount}")
    return amount


def check_positions(*positions: object) -> None:
    """Raise unless every position or count is an ``int`` (a bool is not one)."""
    for position in positions:
        if type(position) is not int:
            raise InvalidValueError(
                f"positions and counts are ints, got {position!r} "
                f"({type(position).__name__})"
            )


def text(initial: str = "") -> NewField:
    """A collaborative text field holding ``initial``."""
    if not isinstance(initial, str):
        raise InvalidValueError(
            f"a text field holds a str, got {type(initial).__name__}"
        )
    return NewField(FieldKind.TEXT, initial)


def list(items: Iterable[Any] = ()) -> NewField:
    """A list field holding JSON values."""
    values = _list(items)
    for item in values:
        check_json(item, "list item")
    return NewField(FieldKind.LIST, values)


def tree() -> NewField:
    """An empty tree field; add nodes through its handle."""
    return NewField(FieldKind.TREE, None)


def check_text(
    text: str, what: str, error: type[UsageError] = InvalidValueError
) -> str:
    """Return ``text`` if it is valid Unicode (encodable as UTF-8), else raise.

    Python strings may hold lone surrogates (``"\\ud800"``), which no wire or
    disk format can carry: stored, they would come back mangled.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = text[exc.start]
        raise error(
            f"{what} holds U+{ord(bad):04X} at position {exc.start}, a lone "
            "surrogate that is not valid Unicode"
        ) from None
    return text


def check_id(record_id: object) -> str:
    """Return ``record_id`` if it is a valid record id, else raise.

    Raises:
        InvalidIdError: not a non-empty ``str`` of at most 512 characters.
    """
    if not isinstance(record_id, str):
        raise InvalidIdError(
            f"record ids are strings, got {type(record_id).__name__}: {record_id!r}"
        )
    if not record_id:
        raise InvalidIdError("record ids cannot be empty")
    check_text(record_id, "the record id", InvalidIdError)
    if len(record_id) > MAX_ID_LENGTH:
        raise InvalidIdError(
            f"record id is {len(record_id)} characters; the limit is {MAX_ID_LENGTH}"
        )
    return record_id


def check_field_name(name: object) -> str:
    """Return ``name`` if it can name a field, else raise ``InvalidValueError``."""
    if not isinstance(name, str) or not name:
        raise InvalidValueError(f"field names are non-empty strings, got {name!r}")
    if name.startswith(RESERVED_PREFIX):
        raise InvalidValueError(
            f"field name {name!r} starts with {RESERVED_PREFIX!r}, "
            "which is reserved for record metadata"
        )
    if len(name) > MAX_FIELD_NAME_LENGTH:
        raise InvalidValueError(f"field name longer than {MAX_FIELD_NAME_LENGTH}")
    return check_text(name, f"field name {name!r}")


def check_json(value: Any, where: str = "value", limit: int = 1 << 20) -> int:
    """Check that ``value`` is plain JSON data and return its approximate size.

    Raises:
        InvalidValueError: a non-JSON type, a non-string key, a non-finite float, an
            integer outside 64 bits, nesting deeper than 64, or a size over ``limit``.
    """
    size = _json_size(value, where, 0)
    if size > limit:
        raise InvalidValueError(
            f"{where} is about {size} bytes; the limit is {limit} bytes"
        )
    return size


def _json_size(value: Any, where: str, depth: int) -> int:
    if depth > 64:
        raise InvalidValueError(f"{where} is nested more than 64 levels deep")
    if value is None or isinstance(value, bool):
        return 4
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidValueError(f"{where}: integer {value} does not fit in 64 bits")
        return 8
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValueError(f"{where}: {value} is not a finite number")
        return 8
    if isinstance(value, str):
        check_text(value, where)
        return len(value) + 2
    if isinstance(value, _list | tuple):
        return 2 + sum(_json_size(v, where, depth + 1) for v in value)
    if isinstance(value, dict):
        total = 2
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidValueError(
                    f"{where}: object keys must be strings, got {key!r}"
                )
            check_text(key, f"{where}: key {key!r}")
            total += len(key) + 3 + _json_size(item, where, depth + 1)
        return total
    raise InvalidValueError(
        f"{where}: {type(value).__name__} is not JSON-representable ({value!r:.60})"
    )
