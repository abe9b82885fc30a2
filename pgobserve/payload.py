"""Decode NOTIFY payloads and merge them into per-table change sets. Pure functions.

A payload is what the generated trigger function sends (see ``sql.py``)::

    {"v": 1, "t": "app_task", "op": "U", "pk": [1, 2, 3]}

``op`` is I, U, D or T (TRUNCATE). ``pk`` is null when the rows are unknown: after a
TRUNCATE, or when a pk is too wide to fit in one payload. Consumers re-read rows, so the
operation is a hint; what matters is which pks of which table to look at again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .sql import PAYLOAD_LIMIT, payload_header

OPS = frozenset("IUDT")


class PayloadError(ValueError):
    """A notification on our channel that pgobserve did not write (or a newer format)."""


@dataclass(frozen=True)
class Change:
    """One decoded notification."""

    table: str
    op: str
    pks: tuple[Any, ...] | None  # None: unknown rows of the table (TRUNCATE, too-wide pk)


def decode(payload: str) -> Change:
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise PayloadError(f"not JSON: {payload[:80]!r}") from exc
    if not isinstance(data, dict) or data.get("v") != 1:
        raise PayloadError(f"not a pgobserve v1 payload: {payload[:80]!r}")
    table, op, pks = data.get("t"), data.get("op"), data.get("pk")
    if not isinstance(table, str) or op not in OPS or not (pks is None or isinstance(pks, list)):
        raise PayloadError(f"malformed pgobserve payload: {payload[:80]!r}")
    return Change(table, op, None if pks is None else tuple(pks))


def encode(table: str, op: str, pks: Iterable[Any] | None) -> Iterator[str]:
    """The payloads the trigger would send for these pks: Python's twin of the SQL chunking.

    Used by tests to check the SQL, and by anyone who wants to NOTIFY by hand.
    """
    if pks is None:
        yield '{"v":1,"t":%s,"op":"%s","pk":null}' % (json.dumps(table), op)
        return
    header = payload_header(table, op)
    budget = PAYLOAD_LIMIT - len(header.encode()) - len("]}")
    # ensure_ascii=False: PostgreSQL's to_json writes non-ASCII as UTF-8, not \u escapes, so
    # byte counts (and the "too wide" decision) match the trigger's.
    items = [json.dumps(pk, separators=(",", ":"), ensure_ascii=False) for pk in pks]
    if any(len(item.encode()) > budget for item in items):
        yield from encode(table, op, None)
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
