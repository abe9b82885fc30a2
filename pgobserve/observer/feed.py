"""The listener's side of model observers (internal): committed changes become DCRF events.

The listener hands every batch to its ``ObserverFeed``. For each table that model
observers watch (or whose many-to-many changes they follow), the feed reads, in a few
queries per batch, the rows as they were (kept by the trigger in ``sql.OLD_ROWS`` under
the writing transaction's id, which the payloads carry) and as they are now, computes
each observer's groups before and after, and sends DCRF's events: ``delete`` to the
groups a row left, ``update`` to those it stayed in, ``create`` to those it joined. Each
event is serialized once, here, for every socket of every server process.

Batches are handled one at a time, in order, beside the listener's own sending, so a
slow serializer delays events, never the change feed of the other consumers. A lost
database connection is retried; an observer that raises is logged and skipped for that
batch. Old rows are swept ``KEEP_OLD_ROWS`` seconds after they were written, not as soon
as they are read: more than one listener may need them (a second deployment on the same
database, the tests' listeners), and a transaction's notifications may span two batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import Model

from .. import conf, feed_connection, groups, sql
from ..payload import Change
from ..watches import CONNECTION_ERRORS, database_outage
from .model_observer import Action, ModelObserver, live_observers

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.observer")

#: Old rows are deleted this many seconds after they were written: a listener further
#: behind than that sends the events of those rows without knowing the groups they left.
KEEP_OLD_ROWS = 120.0
#: How often the feed sweeps old rows (while it has seen any in the last ``KEEP_OLD_ROWS``).
SWEEP_EVERY = 15.0
#: Group messages in flight at once (as the listener's own sends).
SEND_CONCURRENCY = 32
#: Batches waiting past this are dropped, oldest first, with a warning.
MAX_WAITING_BATCHES = 10_000
#: Rows per ``pk__in`` read.
READ_CHUNK = 5000

Event = tuple[str, dict[str, Any]]


@dataclass
class RowHistory:
    """One row's part in a batch: how it first appeared, and its old rows, in order."""

    pk: Any
    #: I, U or D: the first change of the batch naming the row; T: named only by its old
    #: row (a TRUNCATE).
    first_op: str
    first_image: Model | None = None
    last_image: Model | None = None
    #: The row before each transaction of the batch that found it there: a socket may
    #: have subscribed between two of them, so each of these states counts as "before".
    befores: list[Model] = dataclasses.field(default_factory=list)


def watched_tables(observers: Iterable[ModelObserver]) -> dict[str, type[Model]]:
    """table → model of every table the observers need changes of."""
    found: dict[str, type[Model]] = {}
    for observer in observers:
        model = observer.model_cls._meta.concrete_model or observer.model_cls
        found[model._meta.db_table] = model
        for field in observer.many_to_many_fields():
            through = field.remote_field.through
            found[through._meta.db_table] = through
    return found


class ObserverFeed:
    """Turns the listener's batches into model observer events, one batch at a time."""

    def __init__(self, channel_layer: Any, alias: str | None = None) -> None:
        self.layer = channel_layer
        self.alias = alias or conf.database()
        self._waiting: list[list[Change]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_sweep = 0.0
        #: Sweep until then (old rows were seen lately).
        self._sweep_until = 0.0
        self._warned: set[str] = set()
        #: Counters for logs and tests.
        self.stats = {"batches": 0, "events": 0, "failed": 0, "dropped": 0}
        #: Set whenever no batch waits or is being handled (tests wait on it).
        self.idle = asyncio.Event()
        self.idle.set()

    def submit(self, batch: list[Change]) -> None:
        """Queue the changes of ``batch`` that observers need or that left old rows."""
        tables = watched_tables(live_observers())
        wanted = [c for c in batch if c.xid is not None or c.table in tables]
        if not wanted:
            return
        if len(self._waiting) >= MAX_WAITING_BATCHES:
            self._waiting.pop(0)
            self.stats["dropped"] += 1
            logger.warning("pgobserve model observers fell behind: a batch of events was dropped")
        self._waiting.append(wanted)
        self.idle.clear()
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        feed_connection.hold()  # its reads keep one connection (feed_connection.py)
        try:
            await self._loop()
        finally:
            await feed_connection.release()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), SWEEP_EVERY)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            while self._waiting:
                await self._handle(self._waiting.pop(0))
            self.idle.set()
            if self._sweep_until > time.monotonic() >= self._next_sweep:
                try:
                    await feed_connection.reads(self.sweep, self.alias)()
                except CONNECTION_ERRORS:
                    pass  # the next round sweeps
                except Exception:
                    logger.warning("pgobserve could not delete old rows", exc_info=True)

    async def _handle(self, batch: list[Change]) -> None:
        while True:
            try:
                events = await feed_connection.reads(self.events, self.alias)(batch)
                break
            except CONNECTION_ERRORS as exc:
                # The database is away: wait for it (the process's probe logs the outage
                # once), the events are not lost meanwhile.
                outage = database_outage()
                outage.failed(exc)
                await outage.back()
            except Exception:
                # Not an observer's own failure (those are caught per observer): a table
                # that cannot be read. Its events are lost; the feed goes on.
                self.stats["failed"] += 1
                logger.exception("pgobserve model observers could not read a batch")
                events = []
                break
        await self._send(events)
        self.stats["batches"] += 1
        self.stats["events"] += len(events)
        if any(c.xid is not None for c in batch):
            # Old rows were written: sweep them while they may be there.
            self._sweep_until = time.monotonic() + KEEP_OLD_ROWS + 2 * SWEEP_EVERY

    async def _send(self, events: list[Event]) -> None:
        """Send every event; those of one group in order, groups side by side."""
        by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for name, message in events:
            by_group[name].append(message)
        slots = asyncio.Semaphore(SEND_CONCURRENCY)

        async def send_all(name: str, messages: list[dict[str, Any]]) -> None:
            async with slots:
                for message in messages:
                    delay = 0.1
                    while True:
                        try:
                            await self.layer.group_send(name, message)
                            break
                        except Exception as exc:  # the layer is away: retry, in order
                            logger.warning("pgobserve could not send an event: %s", exc)
                            await asyncio.sleep(delay)
                            delay = min(delay * 2, 5.0)

        await asyncio.gather(*(send_all(n, m) for n, m in by_group.items()))

    # reading (a worker thread) ------------------------------------------------------------

    def events(self, batch: list[Change]) -> list[Event]:
        """The events of ``batch``: a few queries per table, whatever its size."""
        observers = live_observers()
        by_table: dict[str, list[Change]] = defaultdict(list)
        for change in batch:
            by_table[change.table].append(change)
        found: list[Event] = []
        for table, model in watched_tables(observers).items():
            changes = by_table.get(table)
            if not changes:
                continue
            history = self.history(model, table, changes)
            current = self.current(model, [entry.pk for entry in history.values()])
            for observer in observers:
                try:
                    if (observer.model_cls._meta.concrete_model or observer.model_cls) is model:
                        found += self.row_events(observer, table, history, current)
                    for field in observer.many_to_many_fields():
                        if field.remote_field.through is model:
                            found += self.m2m_events(observer, field, history, current)
                except CONNECTION_ERRORS:
                    raise
                except Exception:
                    self.stats["failed"] += 1
                    logger.exception(
                        "pgobserve model observer %s failed on a change of %s; its events of"
                        " this batch are not sent",
                        observer._stable_observer_id,
                        table,
                    )
        return found

    def history(
        self, model: type[Model], table: str, changes: list[Change]
    ) -> dict[str, RowHistory]:
        """pk_key → the row's history in the batch: first op, first and last old rows,
        the row before each transaction."""
        rows: dict[str, RowHistory] = {}
        first_ops: dict[tuple[str, str], str] = {}  # (pk_key, xid) → the row's first op in it
        counted: set[tuple[str, str]] = set()
        for change in changes:
            for pk in change.pks or ():
                key = groups.pk_key(pk)
                rows.setdefault(key, RowHistory(pk, change.op))
                first_ops.setdefault((key, str(change.xid)), change.op)
        xids = sorted({c.xid for c in changes if c.xid is not None})
        # Rows the payloads do not name count only for a transaction that changed unknown
        # rows (a TRUNCATE): the others are rows an UPDATE left as they were (kept, not sent).
        unknown = {str(c.xid) for c in changes if c.pks is None}
        for image in self.old_rows(model, table, xids):
            key = groups.pk_key(image.pk)
            xid = vars(image)["pgobserve_old_row_xid"]  # a column of the raw query
            if key not in rows and xid not in unknown:
                continue
            entry = rows.setdefault(key, RowHistory(image.pk, "T"))
            if entry.first_image is None:
                entry.first_image = image
            entry.last_image = image
            # A transaction's first image is the row before it, unless it inserted the row
            # (its images are then states inside it, which no socket saw).
            step = (key, xid)
            if step not in counted:
                counted.add(step)
                if first_ops.get(step) != "I":
                    entry.befores.append(image)
        return rows

    def old_rows(self, model: type[Model], table: str, xids: list[int]) -> list[Model]:
        """The rows of ``table`` as they were before the changes of transactions ``xids``,
        as model instances, oldest first (PostgreSQL turns each kept JSON image back into
        the table's row type, so every column has its own type again)."""
        if not xids:
            return []
        query = (
            "SELECT r.*, o.id AS pgobserve_old_row_id, o.xid::text AS pgobserve_old_row_xid"
            f" FROM {sql.quote_ident(sql.OLD_ROWS)} o"
            f" CROSS JOIN LATERAL jsonb_populate_record(NULL::{sql.quote_ident(table)}, o.image) r"
            " WHERE o.tbl = %s AND o.xid = ANY(%s::xid8[]) ORDER BY o.id"
        )
        array = "{" + ",".join(str(int(x)) for x in xids) + "}"
        return list(model._base_manager.db_manager(self.alias).raw(query, [table, array]))

    def current(self, model: type[Model], pks: list[Any]) -> dict[str, Model]:
        """pk_key → the row as it is now, for those of ``pks`` that still exist."""
        found: dict[str, Model] = {}
        manager = model._base_manager.db_manager(self.alias)
        for start in range(0, len(pks), READ_CHUNK):
            for instance in manager.filter(pk__in=pks[start : start + READ_CHUNK]):
                found[groups.pk_key(instance.pk)] = instance
        return found

    def row_events(
        self,
        observer: ModelObserver,
        table: str,
        history: dict[str, RowHistory],
        current: dict[str, Model],
    ) -> list[Event]:
        """DCRF's rule per row: delete to the groups it left, update to those it stayed
        in, create to those it joined; the body serialized once per action. The groups it
        left are those of every committed state before the last one, not only the first:
        a socket that subscribed between two commits of one batch must hear of the later."""
        found: list[Event] = []
        for key, entry in history.items():
            now = current.get(key)
            befores = entry.befores
            if not befores and entry.first_op != "I":
                self._warn_no_old_row(table)
                befores = [now] if now else []  # unknown: the best guess is that it stayed
            old = {n for b in befores for n in observer.group_names_for_signal(instance=b)}
            new = set(observer.group_names_for_signal(instance=now)) if now else set()
            shown = now if now is not None else entry.last_image
            if shown is None:
                continue
            for action, names in (
                (Action.DELETE, old - new),
                (Action.UPDATE, old & new),
                (Action.CREATE, new - old),
            ):
                if names:
                    message = observer.serialize(shown, action)
                    found += [(name, {**message, "group": name}) for name in sorted(names)]
        return found

    def m2m_events(
        self,
        observer: ModelObserver,
        field: Any,
        history: dict[str, RowHistory],
        current: dict[str, Model],
    ) -> list[Event]:
        """An ``update`` of each row of the observer's model whose many-to-many ``field``
        gained or lost a link (rows of the ``through`` table added, changed or deleted)."""
        through = field.remote_field.through._meta
        columns = [through.get_field(field.m2m_field_name()).attname]
        if field.related_model is observer.model_cls:  # a relation to itself: both ends
            columns.append(through.get_field(field.m2m_reverse_field_name()).attname)
        owners: set[Any] = set()
        for key, entry in history.items():
            for link in (current.get(key), entry.first_image, entry.last_image):
                if link is not None:
                    owners.update(getattr(link, column) for column in columns)
        found: list[Event] = []
        rows = self.current(observer.model_cls, sorted(owners, key=groups.pk_key))
        for owner in rows.values():
            names = sorted(set(observer.group_names_for_signal(instance=owner)))
            if names:
                message = observer.serialize(owner, Action.UPDATE)
                found += [(name, {**message, "group": name}) for name in names]
        return found

    def _warn_no_old_row(self, table: str) -> None:
        if table not in self._warned:
            self._warned.add(table)
            logger.warning(
                "pgobserve: a change of %s came without the row as it was, so model observers"
                " cannot tell the groups it left; its triggers keep no old rows: run"
                " `manage.py pgobserve install` (or migrate) with the observers' consumers"
                " importable from ASGI_APPLICATION, or list the model in"
                ' PGOBSERVE["OLD_ROWS"]',
                table,
            )

    def sweep(self) -> None:
        """Delete old rows written more than ``KEEP_OLD_ROWS`` seconds ago."""
        self._next_sweep = time.monotonic() + SWEEP_EVERY
        with connections[self.alias].cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {sql.quote_ident(sql.OLD_ROWS)}"
                " WHERE at < now() - make_interval(secs => %s)",
                [KEEP_OLD_ROWS],
            )
