"""Instance subscriptions of one consumer (internal): rows, request_ids, last data sent.

A subscription is (request_id, row). The row is followed by its pk, whatever the lookup
field. Each subscription remembers the data its client last got (the snapshot read when
it subscribed, then each push), so a change that does not alter the serialized data
sends nothing, and each request_id is judged on its own.

A consumer joins the shard group of each watched pk (``groups.group_for_pk``) and leaves
it when no subscription on that shard remains.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async

from . import conf, groups
from .consumers import AsyncAPIConsumer
from .watches import Watch

if TYPE_CHECKING:
    from ._types import InstanceHost

__all__: list[str] = []  # internal: no public API

#: A consumer watching rows in more shards than this joins the table group instead.
WIDE_AT = 16

#: Marks "the client was told this row does not exist (any more)".
GONE = object()


def request_key(request_id: Any) -> str:
    """A hashable key for any JSON request_id (ints, strings, even objects)."""
    return json.dumps(request_id, sort_keys=True, default=str)


def detached(data: Any) -> Any:
    """``data`` without its serializer. DRF's ``serializer.data`` (``ReturnDict``,
    ``ReturnList``) keeps the serializer, and through it the instance, its fields and
    validators (~40 objects the garbage collector walks, per subscription for as long as it
    lives); a plain copy of the top level keeps only the data."""
    if getattr(data, "serializer", None) is None:
        return data
    if isinstance(data, dict):
        return dict(data)
    if isinstance(data, list):
        return list(data)
    return data


@dataclass(slots=True)
class Subscription:
    request_id: Any
    lookup_key: str  # pk_key of the lookup value the client sent
    last: Any = GONE  # the data last sent (or snapshot), GONE after a delete push


@dataclass(slots=True)
class WatchedRow:
    pk: Any
    subscriptions: dict[str, Subscription] = field(default_factory=dict)


class InstanceSubscriptions(Watch):
    """Every ``subscribe_instance`` of one consumer on one table."""

    def __init__(self, consumer: InstanceHost, table: str) -> None:
        self.consumer = consumer
        self.table = table
        self.rows: dict[str, WatchedRow] = {}
        #: Watching rows in many shards: the table group instead (see ``join``).
        self.wide = False
        #: Other tables the consumer's queryset reads (``relations.py``), found on the
        #: first subscription; each subscription follows them.
        self.joined: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"<InstanceSubscriptions {self.table}: {len(self.rows)} rows>"

    def totals(self) -> tuple[int, int]:
        return sum(len(row.subscriptions) for row in self.rows.values()), len(self.rows)

    def holds(self, pk: Any, request_id: Any) -> bool:
        """Whether ``request_id`` already watches ``pk`` (re-subscribing costs nothing)."""
        row = self.rows.get(groups.pk_key(pk))
        return row is not None and request_key(request_id) in row.subscriptions

    def group(self, pk: Any) -> str:
        if self.wide:
            return groups.table_group(self.table)
        return groups.group_for_pk(self.table, pk, conf.shards())

    def add(self, pk: Any, request_id: Any, lookup_key: str, snapshot: Any) -> bool:
        """Record a subscription whose group was joined (``join``); False if it existed."""
        row = self.rows.setdefault(groups.pk_key(pk), WatchedRow(pk))
        rkey = request_key(request_id)
        existed = rkey in row.subscriptions
        row.subscriptions[rkey] = Subscription(request_id, lookup_key, detached(snapshot))
        return not existed

    async def join(self, pk: Any) -> None:
        """Hold the group that carries ``pk``'s changes (once per subscription).

        A consumer watching rows in more than ``WIDE_AT`` shards moves to the table group:
        a bulk change then reaches it as one message instead of one per shard (through
        Redis, each is a separate read), and it already woke for most of the table's
        changes. Its holds move over, the table group first, so nothing is missed.

        Each subscription also follows the tables the queryset joins: a project changing
        owner re-checks the watched tasks (``relations.py``).
        """
        if self.joined is None:
            # A tuple: the empty one (most consumers) is shared and not tracked by the GC.
            self.joined = tuple(await database_sync_to_async(self.consumer.joined_tables)())
        await self.consumer.follow_joins(self.table, self.joined)
        await self.consumer.hold_group(self.group(pk), groups.pk_key(pk))
        if self.wide:
            return
        shards = {self.group(row.pk) for row in self.rows.values()} | {self.group(pk)}
        if len(shards) > WIDE_AT:
            holds = [row.pk for row in self.rows.values() for _ in row.subscriptions]
            holds.append(pk)  # the subscription being made
            table = groups.table_group(self.table)
            for held_pk in holds:
                await self.consumer.hold_group(table, groups.pk_key(held_pk))
            for held_pk in holds:
                await self.consumer.release_group(self.group(held_pk), groups.pk_key(held_pk))
            self.wide = True

    async def leave(self, pk: Any) -> None:
        await self.consumer.release_group(self.group(pk), groups.pk_key(pk))
        await self.consumer.unfollow_joins(self.table, self.joined or ())

    async def remove(self, lookup_key: str, request_id: Any = None, everyone: bool = False) -> int:
        """Remove the subscriptions on the row named ``lookup_key`` (one request_id, or all).

        Returns how many were removed. Other request_ids, on this row or others, stay.
        """
        removed = 0
        wanted = request_key(request_id)
        for key, row in list(self.rows.items()):
            for rkey, sub in list(row.subscriptions.items()):
                if sub.lookup_key == lookup_key and (everyone or rkey == wanted):
                    del row.subscriptions[rkey]
                    removed += 1
                    await self.leave(row.pk)  # one group hold per subscription
            if not row.subscriptions:
                del self.rows[key]
        return removed

    async def refresh(
        self, pks: dict[str, Any] | None, batches: frozenset[str | None] | None = None
    ) -> None:
        """One read of the watched rows among ``pks``, then the pushes that changed.

        Every push of the batch is decided (permission checks included) before the first
        is sent, so all of them reflect the database as of the read.

        An update is checked before the read and again after it, and goes out only if both
        allow it. A check only after the read would send data read while the row was
        refused once it is allowed again (a refusal ending between read and check); a check
        only before it would send data read after a refusal began. With both, the data was
        read between two allowing checks. Unless the consumer only has ``AllowAny``, the
        read is private: a shared one (``share_reads``) may predate this socket's check.
        """
        keys = list(self.rows) if pks is None else [k for k in self.rows if k in pks]
        if not keys:
            return
        unchecked = pushes_unchecked(self.consumer)
        if unchecked:
            allowed_before = dict.fromkeys(keys, True)
        else:
            allowed_before = {
                key: await self.consumer.may_push("update", pk=self.rows[key].pk) for key in keys
            }
        found = await self.consumer.read_rows_batch([self.rows[k].pk for k in keys], batches)
        pushes: list[tuple[Subscription, str, Any, Any]] = []
        for key in keys:
            row = self.rows.get(key)
            if row is not None:
                data = found.get(key, GONE)
                pushes += await self._decide(row, data, allowed_before[key], unchecked)
        # The consumer's own ``reply`` path, which encodes the data of a fan-out once.
        reply = getattr(self.consumer, "feed_reply", None) or self.consumer.reply
        for sub, action, body, last in pushes:
            status = 204 if action == "delete" else 200
            await reply(action, body, status=status, request_id=sub.request_id)
            sub.last = detached(last)

    async def _decide(
        self, row: WatchedRow, data: Any, allowed_before: bool, unchecked: bool = False
    ) -> list[tuple[Subscription, str, Any, Any]]:
        """(subscription, action, body, new last) for each push this row's state calls for.

        ``allowed_before``: the update check made before the read (see ``refresh``). A
        delete sends only the pk the client already has, so it is checked once.
        ``unchecked``: no push check can refuse (``pushes_unchecked``).
        """
        due = [sub for sub in row.subscriptions.values() if sub.last != data]
        if data is GONE:
            due = [sub for sub in due if sub.last is not GONE]
            if not due or not (unchecked or await self.consumer.may_push("delete", pk=row.pk)):
                return []
            return [(sub, "delete", {"pk": row.pk}, GONE) for sub in due]
        if not due or not allowed_before:
            return []  # withheld: ``last`` is kept, so the next allowed change is sent
        if not (unchecked or await self.consumer.may_push("update", pk=row.pk)):
            return []
        return [(sub, "update", data, data) for sub in due]


def pushes_unchecked(consumer: object) -> bool:
    """Whether every ``may_push`` of ``consumer`` would answer True without a check: its
    ``may_push`` is ``AsyncAPIConsumer``'s and allows every push (``AllowAny`` only), so
    the calls can be skipped (two coroutines per socket and change)."""
    allows = getattr(consumer, "_allows_every_push", None)
    return (
        allows is not None
        and getattr(type(consumer), "may_push", None) is AsyncAPIConsumer.may_push
        and allows()
    )
