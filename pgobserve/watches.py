"""What one consumer watches, per table, and the batching of changes into re-reads (internal).

Each subscription *kind* (instance subscriptions now, query subscriptions later) is a
``Watch`` registered for a table. Change messages only record which pks of which table
changed; a single flush task per consumer then asks every watch of each changed table to
``refresh`` once with all of them. The listener sends one message per shard group, so a
consumer watching rows in many shards gets several messages per batch; merging them here
keeps it to one ``pk__in`` read per table per batch, however many rows and request_ids
are involved.

Every change to a watch's state (subscribe, unsubscribe, refresh) runs under ``lock``,
so a subscribe's join → check → acknowledge cannot interleave with a refresh.

Nothing is forgotten: a refresh that fails (the database refused a connection, a
connection was cut, a push could not be sent) puts its changes back and is retried with
backoff; after ``ESCALATE_AFTER`` failures in a row the table is re-checked whole, since a
push may have gone out half-way. Only what a watch has pushed counts as delivered.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.db import InterfaceError, OperationalError, connections

from . import conf
from .outages import Outage

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.consumers")

#: ``refresh(EVERYTHING)``: unknown rows changed (TRUNCATE, resync): re-check all watched.
EVERYTHING = None

#: A batch that changed more pks than this is treated as EVERYTHING: re-checking what a
#: consumer watches costs less than indexing 100,000 pks in every consumer.
MANY_PKS = 10_000

#: Retry delays after a failed refresh: the first, and the longest (plus up to 50% jitter,
#: so thousands of sockets do not retry in step). The longest delay bounds how late a
#: client converges after the database is back.
RETRY_FIRST, RETRY_MAX = 0.05, 1.5
#: The longest delay between retries of an error that is not a lost connection (a bug).
RETRY_SLOW = 30.0
#: Errors that mean the database could not be reached, rather than a failing query.
CONNECTION_ERRORS = (OperationalError, InterfaceError)
#: After this many failures in a row, a table's pending pks become EVERYTHING.
ESCALATE_AFTER = 3


class Watch:
    """One kind of subscription on one table of one consumer."""

    table: str

    async def refresh(
        self, pks: dict[str, Any] | None, batches: frozenset[str | None] | None = None
    ) -> None:
        """Re-read what is watched among ``pks`` (pk_key → pk; None: everything) and push.

        ``batches``: the listener batch ids these changes came in (None if unknown), the
        key under which consumers with ``share_reads`` share a read (``shared.py``).
        Called under the registry's lock, at most once per table per flush.
        """
        raise NotImplementedError

    def totals(self) -> tuple[int, int]:
        """(subscriptions, rows held), for the socket's budgets (``budgets.py``)."""
        return 0, 0


class WatchRegistry:
    """The watches of one consumer, and its pending changes."""

    def __init__(
        self,
        may_get_more: Callable[[], bool] = lambda: True,
        writable: Callable[[], Awaitable[bool]] | None = None,
        clear: Callable[[], bool] | None = None,
    ) -> None:
        #: Whether one batch can reach this consumer as several messages (it is in more
        #: than one group); if not, there is nothing to wait for before reading.
        self._may_get_more = may_get_more
        #: Waits while the socket's send queue is congested; False: the socket was closed
        #: for not reading (``sendqueue.SendGate``). Changes keep merging meanwhile.
        self._writable = writable
        #: True when ``writable`` would answer True without waiting (skips its coroutine).
        self._clear = clear
        # Plain dicts, not defaultdicts: an empty dict is not tracked by the garbage
        # collector, and most of these stay empty on an idle socket.
        self._watches: dict[str, list[Watch]] = {}
        self._pending: dict[str, dict[str, Any] | None] = {}
        self._batches: dict[str, set[str | None]] = {}
        #: Joined table → {watched table: subscriptions following it}: a change of a table
        #: a queryset joins re-checks everything watched on its own table (``relations.py``).
        self._routes: dict[str, Counter[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._arrivals = 0
        #: Failed flushes in a row (0: healthy).
        self.failures = 0
        self.lock = asyncio.Lock()

    def add(self, watch: Watch) -> None:
        watches = self._watches.setdefault(watch.table, [])
        if watch not in watches:
            watches.append(watch)

    def remove(self, watch: Watch) -> None:
        if watch in self._watches.get(watch.table, []):
            self._watches[watch.table].remove(watch)

    def totals(self) -> tuple[int, int]:
        """(subscriptions, rows held) over every watch of the consumer."""
        totals = [watch.totals() for watches in self._watches.values() for watch in watches]
        return sum(t[0] for t in totals), sum(t[1] for t in totals)

    def tables(self) -> list[str]:
        return [table for table, watches in self._watches.items() if watches]

    def route(self, joined: str, table: str) -> None:
        """Changes of ``joined`` re-check everything watched on ``table`` (one more hold)."""
        self._routes.setdefault(joined, Counter())[table] += 1

    def unroute(self, joined: str, table: str) -> None:
        routes = self._routes.get(joined)
        if routes is not None and routes[table] > 0:
            routes[table] -= 1
            if routes[table] <= 0:
                del routes[table]
            if not routes:
                del self._routes[joined]

    def changed(self, table: str, pks: list[Any] | None, batch: str | None = None) -> None:
        """Record a change message; the flush runs once the consumer is idle."""
        routed = self._reroute(table, batch)
        if not self._watches.get(table):
            if routed:
                self._arrived()
            return
        self._batches.setdefault(table, set()).add(batch)
        if pks is None:
            self._pending[table] = EVERYTHING
        elif (merged := self._pending.setdefault(table, {})) is not EVERYTHING:
            if len(merged) + len(pks) > MANY_PKS:
                self._pending[table] = EVERYTHING  # cheaper to re-check what is watched
            else:
                # The listener's pks are JSON ints and strings, whose pk_key is their str().
                merged.update(zip(map(str, pks), pks, strict=True))
        self._arrived()

    def _arrived(self) -> None:
        self._arrivals += 1
        self._schedule()

    def _reroute(self, table: str, batch: str | None) -> bool:
        """A change of a table that watched querysets join: which watched rows it affects
        is unknown, so each table that follows it is re-checked whole (one bounded read
        per watch, however many joined rows changed)."""
        routes = self._routes.get(table)
        if not routes:  # (most tables: no watched queryset joins them)
            return False
        targets = [target for target in routes if self._watches.get(target)]
        for target in targets:
            self._pending[target] = EVERYTHING
            self._batches.setdefault(target, set()).add(batch)
        return bool(targets)

    def resync(self) -> None:
        """Re-check everything watched (after a gap in the listener's feed)."""
        for table in self.tables():
            self._pending[table] = EVERYTHING
            self._batches.setdefault(table, set()).add(None)
        if self._pending:
            self._schedule()

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the loop (not the hub's way)
                self._task = asyncio.ensure_future(self._flush())
            else:
                self._task = loop.create_task(self._flush())

    async def _settle(self) -> None:
        """Let the consumer take the rest of a batch off its queue before reading (when it
        ``may_get_more``).

        Each queued message needs a few event-loop turns to be received and dispatched;
        wait (microseconds, no timer) until a few turns pass without a new change message.
        """
        seen, rounds = -1, 0
        while seen != self._arrivals and rounds < 64:
            seen, rounds = self._arrivals, rounds + 1
            for _ in range(4):
                await asyncio.sleep(0)

    async def _flush(self) -> None:
        if self._may_get_more():  # (a consumer in one group has nothing to wait for)
            await self._settle()
        while self._pending:
            if self._writable is not None and not (self._clear and self._clear()):
                if not await self._writable():
                    return
            failed: dict[str, Exception] = {}
            async with self.lock:
                pending, self._pending = self._pending, {}
                batches, self._batches = self._batches, {}
                for table, pks in pending.items():
                    ids = frozenset(batches.get(table, ()))
                    # A resync has no batch id: its reads are never shared.
                    shareable = ids if None not in ids else None
                    for watch in list(self._watches.get(table, ())):
                        try:
                            await watch.refresh(pks, shareable)
                        except Exception as exc:
                            failed[table] = exc
                    if table in failed:
                        self._requeue(table, pks)
            if failed:
                await self._back_off(failed)
            else:
                self.failures = 0

    def _requeue(self, table: str, pks: dict[str, Any] | None) -> None:
        """Put a failed refresh's pks back, merged with what arrived meanwhile. Every watch
        of the table reads them again: those that had pushed find nothing new to send."""
        if self.failures + 1 >= ESCALATE_AFTER:
            pks = EVERYTHING
        current = self._pending.get(table, {})
        if pks is EVERYTHING or current is EVERYTHING:
            self._pending[table] = EVERYTHING
        else:
            self._pending[table] = {**pks, **current}
        self._batches.setdefault(table, set()).add(None)  # a retry's read is never shared

    async def _back_off(self, failed: dict[str, Exception]) -> None:
        """Wait before retrying, longer after each failure in a row. A lost connection
        (the server down, out of slots, a cut) also waits for the process's database probe
        (``database_outage``), which logs the outage once; other errors (a bug in a
        serializer, a dropped column) are logged on the first failure and retried ever
        more slowly."""
        self.failures += 1
        lost = [exc for exc in failed.values() if isinstance(exc, CONNECTION_ERRORS)]
        if lost:
            outage = database_outage()
            outage.failed(lost[0])
            await outage.back()
        elif self.failures == 1:
            table, exc = next(iter(failed.items()))
            logger.error("pgobserve could not refresh %s; retrying", table, exc_info=exc)
        delay = min(RETRY_FIRST * 2 ** (self.failures - 1), RETRY_MAX if lost else RETRY_SLOW)
        await asyncio.sleep(delay * random.uniform(1.0, 1.5))

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _probe_database() -> None:
    with connections[conf.database()].cursor() as cursor:
        cursor.execute("SELECT 1")


_database_outage: Outage | None = None


def database_outage() -> Outage:
    """The process's database outage state, shared by every consumer."""
    global _database_outage
    if _database_outage is None:
        _database_outage = Outage("the database", database_sync_to_async(_probe_database))
    return _database_outage
