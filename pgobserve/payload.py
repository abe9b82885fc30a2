"""Decode NOTIFY payloads and merge them into per-table change sets (internal). Pure functions.

A payload is what the generated trigger function sends (see ``sql.py``)::

    {"v": 1, "t": "app_task", "op": "U", "pk": [1, 2, 3]}

A table whose triggers keep old rows (``sql.TableSpec.old_rows``) adds ``"x"``, the
writing transaction's id, under which the rows as they were wait in ``sql.OLD_ROWS``.
``op`` is I, U, D or T (TRUNCATE). ``pk`` is null when the rows are unknown: after a
TRUNCATE, or when a pk is too wide to fit in one payload. Consumers re-read rows, so the
operation is a hint; what matters is which pks of which table to look at again.

Any role that can connect to the database can NOTIFY the channel, so a payload is input,
not a fact: ``decode`` accepts only the exact shape the trigger writes, and ``check_pks``
only the pk type the table's trigger writes, so a forged or malformed payload is rejected
on its own and nothing it holds can break the merge of the batch it arrived in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .sql import MAX_XID, PAYLOAD_LIMIT, payload_header

__all__: list[str] = []  # internal: no public API

OPS = frozenset("IUDT")
#: The keys of a v1 payload, all required; a table that keeps old rows adds ``"x"``.
KEYS = frozenset({"v", "t", "op", "pk"})
KEYS_WITH_XID = KEYS | {"x"}
#: Longest table name accepted: a ``db_table`` is an identifier (63 bytes in the catalog,
#: a few times that with a schema or before PostgreSQL cuts it), never close to this.
MAX_TABLE_CHARS = 1000
_HEX = b"0123456789abcdefABCDEF"


class PayloadError(ValueError):
    """A notification on our channel that pgobserve did not write (or a newer format)."""


@dataclass(frozen=True)
class Change:
    """One decoded notification."""

    table: str
    op: str
    pks: tuple[Any, ...] | None  # None: unknown rows of the table (TRUNCATE, too-wide pk)
    #: The writing transaction, for tables that keep old rows (``sql.OLD_ROWS``).
    xid: int | None = None


#: The types of the JSON scalars a trigger writes as a pk: strings and numbers (a float for
#: a numeric or double precision pk). Never a bool, null, list or object.
_SCALARS = frozenset({int, str, float})


def _scalars(pks: list[Any]) -> bool:
    """Type by type, not pk by pk: a 100,000-row UPDATE is ~100 payloads of ~1,000 pks."""
    kinds = set(map(type, pks))
    if float in kinds:  # NaN and Infinity parse as floats
        return kinds <= _SCALARS and all(math.isfinite(pk) for pk in pks if type(pk) is float)
    return kinds <= _SCALARS


def decode(payload: str) -> Change:
    """The change a payload announces; ``PayloadError`` unless it is exactly a v1 payload."""
    if len(payload) > PAYLOAD_LIMIT:  # characters ≤ bytes: PostgreSQL never sends this
        raise PayloadError(f"longer than a NOTIFY payload can be: {payload[:80]!r}")
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[…" thousands deep
        raise PayloadError(f"not JSON: {payload[:80]!r}") from exc
    if (
        not isinstance(data, dict)
        or (data.keys() != KEYS and data.keys() != KEYS_WITH_XID)
        or type(data["v"]) is not int
    ):
        raise PayloadError(f"not a pgobserve v1 payload: {payload[:80]!r}")
    table, op, pks, xid = data["t"], data["op"], data["pk"], data.get("x")
    if "x" in data and not (type(xid) is int and 0 < xid <= MAX_XID):  # never "x": null
        raise PayloadError(f"malformed pgobserve payload: {payload[:80]!r}")
    if (
        data["v"] != 1
        or not isinstance(table, str)
        or not 0 < len(table) <= MAX_TABLE_CHARS
        or op not in OPS
        or not (pks is None or (isinstance(pks, list) and pks and _scalars(pks)))
    ):
        raise PayloadError(f"malformed pgobserve payload: {payload[:80]!r}")
    return Change(table, op, None if pks is None else tuple(pks), xid)


# As ``_scalars``: type by type, and over all pks joined, not pk by pk.


def _ints(pks: tuple[Any, ...]) -> bool:
    return set(map(type, pks)) == {int}


def _strings(pks: tuple[Any, ...], width: int) -> str | None:
    """The pks joined, if all are strings of ``width`` characters (each then sits at a
    multiple of ``width``)."""
    if set(map(type, pks)) != {str} or set(map(len, pks)) != {width}:
        return None
    return "".join(pks)


def _uuids(pks: tuple[Any, ...]) -> bool:
    """Hex digits with dashes where PostgreSQL writes them: what ``uuid.UUID`` (a Django
    UUIDField's ``pk__in``) accepts."""
    joined = _strings(pks, 36)
    return (
        joined is not None
        and joined.count("-") == 4 * len(pks)
        and all(joined[at::36] == "-" * len(pks) for at in (8, 13, 18, 23))
        and not joined.encode().translate(None, _HEX + b"-")
    )


def _digests(pks: tuple[Any, ...]) -> bool:
    joined = _strings(pks, 32)
    return joined is not None and not joined.encode().translate(None, _HEX[:16])


#: Per ``sql.TableSpec.pk_kind``: whether a pk list is what that table's trigger writes.
_PK_CHECKS: dict[str, Callable[[tuple[Any, ...]], bool]] = {
    "int": _ints,
    "uuid": _uuids,
    "digest": _digests,
    "other": lambda pks: True,  # any scalar ``decode`` accepted
}


#: pk kinds whose payload always fits: their triggers send ``"pk": null`` only on TRUNCATE.
_FIXED_WIDTH = frozenset({"int", "uuid", "digest"})


def check_pks(change: Change, pk_kind: str) -> None:
    """``PayloadError`` unless ``change``'s pks have the type the table's trigger writes
    (``pk_kind`` as in ``sql.TableSpec``). A string pk for an integer table would make a
    consumer's ``pk__in`` read fail; rejected here, it costs nothing."""
    if change.pks is None:
        # "Unknown rows": a TRUNCATE, or a pk too wide for a payload, which only an
        # "other" pk (text, ...) can be. Anything else would make every consumer of the
        # table re-check all it watches.
        if change.op != "T" and pk_kind in _FIXED_WIDTH:
            raise PayloadError(f"unknown rows of {change.table!r} for op {change.op!r}")
        return
    if not _PK_CHECKS.get(pk_kind, _PK_CHECKS["other"])(change.pks):
        raise PayloadError(
            f"pks of {change.table!r} that are not {pk_kind} pks: {change.pks[:3]!r}"
        )


def encode(table: str, op: str, pks: Iterable[Any] | None, xid: int | None = None) -> Iterator[str]:
    """The payloads the trigger would send for these pks: Python's twin of the SQL chunking.

    Used by tests to check the SQL, and by anyone who wants to NOTIFY by hand.
    """
    header = payload_header(table, op, xid)
    if pks is None:
        yield header[: -len("[")] + "null}"
        return
    widest = header if xid is None else payload_header(table, op, MAX_XID)
    budget = PAYLOAD_LIMIT - len(widest.encode()) - len("]}")
    # ensure_ascii=False: PostgreSQL's to_json writes non-ASCII as UTF-8, not \u escapes, so
    # byte counts (and the "too wide" decision) match the trigger's.
    items = [json.dumps(pk, separators=(",", ":"), ensure_ascii=False) for pk in pks]
    if any(len(item.encode()) > budget for item in items):
        yield from encode(table, op, None, xid)
        return
    chunk: list[str] = []
    size = 0
    for item in items:
        width = len(item.encode()) + (1 if chunk else 0)
        if chunk and size + width > budget:
            yield header + ",".join(chunk) + "]}"
            chunk, size, width = [], 0, width - 1
        chunk.append(item)
        size += width
    if chunk:
        yield header + ",".join(chunk) + "]}"


@dataclass
class TableChanges:
    """The merged changes to one table over a coalescing window."""

    pks: set[Any] = field(default_factory=set)
    everything: bool = False  # unknown rows changed: re-read all that is watched
    truncated: bool = False  # the table was emptied (a later INSERT may have refilled it)


def merge(changes: Iterable[Change]) -> dict[str, TableChanges]:
    """Merge decoded changes per table, so a burst of payloads becomes one set per table."""
    merged: dict[str, TableChanges] = {}
    for change in changes:
        entry = merged.setdefault(change.table, TableChanges())
        if change.pks is None:
            entry.everything = True
            entry.truncated = entry.truncated or change.op == "T"
        else:
            entry.pks.update(change.pks)
    return merged
