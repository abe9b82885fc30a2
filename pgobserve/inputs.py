"""What a client sends, checked before it reaches a Python call or PostgreSQL (internal).

Frames: a text frame is decoded only if it is at most ``max_bytes`` long (413 past it),
nested at most ``max_depth`` deep (checked on the text before parsing, so a megabyte of
``[[[[`` costs a few ``str.replace`` passes, not a recursion that ends the socket) and
holds only finite numbers (``NaN``, ``Infinity`` and ``1e400`` are not values any column
or client can use).

Values: a value a client names a row or filters by is converted by its model field and
refused if no row could hold it (a NUL character or a lone surrogate in a string, which
psycopg cannot send; an integer outside the column's range; ``1.5`` for an integer, which
``int()`` would silently turn into 1). Callers answer a refusal with a 404 for a lookup and
a 400 naming the key for a filter.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import connections, models, router
from rest_framework import exceptions

__all__: list[str] = []  # internal: no public API


class MessageTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The message is too large."


def check_size(text: str, max_bytes: int) -> None:
    """Raise ``MessageTooLarge`` if ``text`` takes more than ``max_bytes`` in UTF-8."""
    # A code point takes at most 4 bytes: most frames are sized without encoding them.
    if len(text) * 4 <= max_bytes:
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise MessageTooLarge(
            f"The message has {size} bytes, more than the {max_bytes} this socket accepts."
        )


# A JSON string, or an unterminated one running to the end of the text. It never fails
# once it starts at a quote, so it cannot backtrack: linear on any input.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
# bytes.translate keeps the brackets (as "(" and ")") and deletes every other byte.
_AS_PARENS = bytes.maketrans(b"[]{}", b"()()")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def nesting_within(text: str, max_depth: int) -> bool:
    """Whether the arrays and objects of ``text`` are balanced and nested at most
    ``max_depth`` deep, telling brackets in strings apart as JSON does. Each pass of
    ``replace`` removes the innermost level, so this costs at most ``max_depth`` passes
    over the brackets (a few ms for 256 KiB), and a run of ``max_depth + 1`` opening
    brackets ends it at once. False also for unbalanced text."""
    brackets = (
        _STRING.sub("", text).encode("utf-8", "surrogatepass").translate(_AS_PARENS, _NOT_BRACKETS)
    )
    too_deep = b"(" * (max_depth + 1)
    for _ in range(max_depth):
        if not brackets:
            return True
        if too_deep in brackets:
            return False
        inner_removed = brackets.replace(b"()", b"")
        if len(inner_removed) == len(brackets):
            return False  # unbalanced
        brackets = inner_removed
    return not brackets


def _refuse_constant(name: str) -> Any:
    raise exceptions.ValidationError(["Invalid JSON: numbers must be finite."])


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _refuse_constant(text)
    return value


def loads(text: str, max_depth: int) -> Any:
    """``json.loads`` for client frames: 400 for nesting past ``max_depth`` and for
    non-finite numbers; ``ValueError`` for text that is not JSON."""
    if nesting_within(text, max_depth):
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    # Too deep, or not JSON at all: parsing tells which (at most once, at most ~1,000
    # levels, then RecursionError). Valid JSON this deep is refused all the same.
    try:
        json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        pass
    raise exceptions.ValidationError([f"JSON nested deeper than {max_depth} levels."])


def refuse_unstorable_text(value: str) -> None:
    """``ValidationError`` if PostgreSQL text cannot hold ``value`` (psycopg would raise)."""
    if "\x00" in value:
        raise ValidationError("Null characters are not allowed.")  # Django's and DRF's words
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"Surrogate characters are not allowed: U+{ord(value[exc.start]):X}."
        ) from None


def model_field(model: type[models.Model], path: str) -> models.Field[Any, Any]:
    """The field a lookup path (``"slug"``, ``"pk"``, ``"project__owner"``) ends at;
    ``FieldDoesNotExist`` if it names none."""
    field: Any = None
    current = model
    for part in path.split("__"):
        field = current._meta.pk if part == "pk" else current._meta.get_field(part)
        if field.is_relation and field.related_model is not None:
            current = field.related_model
    return field


def column_field(field: models.Field[Any, Any]) -> models.Field[Any, Any]:
    """The field whose column holds ``field``'s values (a foreign key's target)."""
    while field.is_relation and (target := getattr(field, "target_field", None)) is not None:
        field = target
    return field


def column_value(field: models.Field[Any, Any], value: Any) -> Any:
    """``value`` converted by ``field`` as a lookup or filter value; ``ValidationError``
    (Django's) with a message for the client if no row could hold it."""
    field = column_field(field)
    try:
        converted = field.to_python(value)
    except ValidationError:
        raise
    except (TypeError, ValueError, ArithmeticError):
        raise ValidationError(f"“{value}” is not a value of this field.") from None
    if isinstance(converted, str):
        refuse_unstorable_text(converted)
    elif isinstance(converted, int) and not isinstance(converted, bool):
        if isinstance(value, float) and converted != value:
            raise ValidationError(f"“{value}” value must be an integer.")
        ranges = connections[router.db_for_read(field.model)].ops.integer_field_ranges
        low, high = ranges.get(field.get_internal_type(), (None, None))
        if low is not None:
            MinValueValidator(low)(converted)
            MaxValueValidator(high)(converted)
    return converted
