"""A client's ``filters`` object as a validated ``Q``, against what the consumer allows (internal).

A consumer declares ``query_filter_fields``: either a list of field paths (exact match only)
or a dict of field path → allowed lookups::

    query_filter_fields = {"done": ["exact"], "project": ["exact", "in"], "title": ["icontains"]}

A client then sends ``{"done": false, "project__in": [1, 2], "title__icontains": "bug"}``.
Anything not declared, a lookup not allowed, or a value the field cannot take is a
``ValidationError`` naming the key, which the consumer answers with a 400.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.db.models import Q
from rest_framework.exceptions import ValidationError

from . import inputs
from .errors import api_exception

__all__: list[str] = []  # internal: no public API

#: Lookups a consumer may allow; each takes a scalar value except ``in`` (a list) and
#: ``isnull`` (a boolean).
SUPPORTED_LOOKUPS = frozenset(
    {
        "exact", "iexact", "in", "lt", "lte", "gt", "gte", "isnull",
        "contains", "icontains", "startswith", "istartswith",
    }
)  # fmt: skip

#: Most values an ``in`` filter may list.
MAX_IN_VALUES = 1000


def allowed_lookups(declared: Sequence[str] | Mapping[str, Sequence[str]]) -> dict[str, set[str]]:
    """Normalise ``query_filter_fields`` to {field path: {lookups}}, rejecting unknown lookups."""
    if isinstance(declared, Mapping):
        allowed = {path: set(lookups) for path, lookups in declared.items()}
    else:
        allowed = {path: {"exact"} for path in declared}
    for path, lookups in allowed.items():
        unknown = lookups - SUPPORTED_LOOKUPS
        if unknown:
            raise ValueError(
                f"query_filter_fields[{path!r}] allows unsupported lookups {sorted(unknown)}; "
                f"supported: {sorted(SUPPORTED_LOOKUPS)}"
            )
    return allowed


def _split(key: str, allowed: dict[str, set[str]]) -> tuple[str, str]:
    if key in allowed:
        return key, "exact"
    path, _, lookup = key.rpartition("__")
    if path in allowed and lookup in SUPPORTED_LOOKUPS:
        return path, lookup
    return key, ""


def _convert(field: models.Field[Any, Any], lookup: str, value: Any) -> Any:
    if lookup == "isnull":
        if not isinstance(value, bool):
            raise ValidationError("Must be true or false.")
        return value
    if lookup == "in":
        if not isinstance(value, list):
            raise ValidationError("Expected a list of values.")
        if len(value) > MAX_IN_VALUES:
            raise ValidationError(f"Expected at most {MAX_IN_VALUES} values.")
        return [_convert(field, "exact", item) for item in value]
    if isinstance(value, (dict, list)):
        raise ValidationError("Expected a single value, not an object or a list.")
    if value is None:
        raise ValidationError("Null is not a value here; use the isnull lookup.")
    try:
        if lookup in {"contains", "icontains", "startswith", "istartswith", "iexact"}:
            if not isinstance(value, str):
                raise ValidationError("Expected a string.")
            inputs.refuse_unstorable_text(value)
            return value
        if isinstance(value, bool) and not isinstance(
            inputs.column_field(field), models.BooleanField
        ):
            raise ValidationError("True or false is not a value of this field.")
        # Converted by the field and refused if no row could hold it (NUL, out of range).
        return inputs.column_value(field, value)
    except DjangoValidationError as exc:
        raise api_exception(exc) from None


def build_q(
    model: type[models.Model],
    declared: Sequence[str] | Mapping[str, Sequence[str]],
    filters: Any,
) -> Q:
    """A ``Q`` for ``filters``; raises DRF ``ValidationError`` with one entry per bad key."""
    if filters is None:
        return Q()
    if not isinstance(filters, dict):
        raise ValidationError({"filters": ["Expected an object of field lookups."]})
    allowed = allowed_lookups(declared)
    errors: dict[str, list[str]] = {}
    conditions: dict[str, Any] = {}
    for key, value in filters.items():
        path, lookup = _split(key, allowed)
        if not lookup:
            known = ", ".join(sorted(allowed)) or "none"
            errors[key] = [f"Not a filterable field or lookup (filterable: {known})."]
            continue
        if lookup not in allowed[path]:
            errors[key] = [f"Lookup {lookup!r} is not allowed on {path!r}."]
            continue
        try:
            field = inputs.model_field(model, path)
        except FieldDoesNotExist:
            errors[key] = [f"{model._meta.label} has no field {path!r}."]
            continue
        try:
            conditions[f"{path}__{lookup}"] = _convert(field, lookup, value)
        except ValidationError as exc:
            errors[key] = (
                [str(d) for d in exc.detail] if isinstance(exc.detail, list) else [str(exc.detail)]
            )
    if errors:
        raise ValidationError(errors)
    return Q(**conditions)
