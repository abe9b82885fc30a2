"""Collect the notifications the triggers send, on a LISTEN connection of our own.

Every wait is bounded. Absence is proven with a *sentinel*: after the writes under test, the
collector inserts a ``Sentinel`` row and waits for its notification. NOTIFY is delivered in
commit order, so whatever the earlier commits sent has arrived by then.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql

from pgobserve import payload
from pgobserve.payload import Change

SENTINEL_TABLE = "testapp_sentinel"


class Notifications:
    def __init__(self, conninfo: dict[str, Any], channel: str = "pgobserve") -> None:
        self.conn = psycopg.connect(**conninfo, autocommit=True)
        self.conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
        self.payloads: list[str] = []
        self.history: list[str] = []  # every payload received, drained or not

    def close(self) -> None:
        self.conn.close()

    @property
    def changes(self) -> list[Change]:
        return [payload.decode(p) for p in self.payloads]

    def wait_until(self, predicate: Callable[[list[Change]], bool], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.changes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"condition not met in {timeout}s; got {self.changes!r:.2000}")
            for notify in self.conn.notifies(timeout=min(remaining, 1.0), stop_after=1):
                assert len(notify.payload.encode()) <= 7999
                self.payloads.append(notify.payload)
                self.history.append(notify.payload)

    def drain(self, timeout: float = 30) -> list[Change]:
        """Everything notified by commits before now (the sentinel excluded); clears the buffer."""
        (sentinel,) = self.conn.execute(
            f"INSERT INTO {SENTINEL_TABLE} DEFAULT VALUES RETURNING id"
        ).fetchone()

        def seen(changes: list[Change]) -> bool:
            return any(c.table == SENTINEL_TABLE and sentinel in (c.pks or ()) for c in changes)

        self.wait_until(seen, timeout)
        changes = self.changes
        cut = next(
            i for i, c in enumerate(changes) if c.table == SENTINEL_TABLE and sentinel in c.pks
        )
        self.payloads = self.payloads[cut + 1 :]
        return [c for c in changes[:cut] if c.table != SENTINEL_TABLE]


def pks_of(changes: list[Change], table: str, op: str | None = None) -> set[Any]:
    """The union of pks notified for ``table`` (and ``op``); a pk-null change fails loudly."""
    found: set[Any] = set()
    for change in changes:
        if change.table == table and (op is None or change.op == op):
            assert change.pks is not None, change
            found.update(change.pks)
    return found


def pk_list(changes: list[Change], table: str) -> list[Any]:
    """Every notified pk of ``table`` with repetitions (to prove nothing is sent twice)."""
    return [pk for c in changes if c.table == table for pk in (c.pks or ())]


@pytest.fixture
def notifications(conninfo, transactional_db) -> Iterator[Notifications]:
    """A LISTEN connection; it needs transactional_db (NOTIFY is delivered at real commits)."""
    collector = Notifications(conninfo)
    collector.drain()  # start clean
    yield collector
    collector.close()
