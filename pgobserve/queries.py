"""Query subscriptions: a filtered list kept live on the client (DCRF has none).

``subscribe_query`` answers 201 with the rows of ``filter_queryset(get_queryset())``
that match the client's ``filters`` (validated against ``query_filter_fields``), then
pushes, with the subscribe's request_id:

* ``create`` (201, data) when a row enters the result: inserted, or updated into it;
* ``update`` (200, data) when a row in the result changes what the client holds;
* ``delete`` (204, ``{"pk": …}``) when it leaves: deleted, updated out of the filter,
  truncated, or no longer visible through ``get_queryset()`` for this socket.

The consumer joins the table group (it must see every change to the table) before it
takes the snapshot, so nothing committed after the snapshot is missed. On a change, one
query per consumer and batch reads the changed pks through the queryset, with one
boolean column per subscription saying whether the row matches its filter, so every
subscription on the table is settled by that single query; each row is serialized once.
Data equal to what a subscription holds is not pushed again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from rest_framework import exceptions

from . import conf, groups
from .budgets import ensure_room
from .decorators import action
from .errors import BadRequest, required
from .filters import build_q
from .generics import in_feed_snapshot, in_snapshot
from .instances import request_key
from .permissions import may_refuse
from .shared import Watermark, stamp
from .watches import Watch

if TYPE_CHECKING:
    from ._types import QueryHost
    from .generics import GenericAsyncAPIConsumer as _Host
else:
    _Host = object

__all__ = ["ObserverQueryMixin", "QueryTooLarge"]


#: A change of more pks than this re-runs each subscription's query instead of reading
#: the changed rows (a 100,000-row UPDATE would otherwise read 100,000 rows per socket).
REQUERY_ABOVE = 1000


class QueryTooLarge(exceptions.APIException):
    """413: a query subscription's snapshot would have more than ``query_max_rows`` rows."""

    status_code = 413
    default_detail = "The query matches too many rows."


@dataclass
class QuerySubscription:
    request_id: Any
    condition: Q
    #: pk_key → (pk, data) of every row the client holds.
    held: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    #: Other tables its query reads (``relations.py``), followed while it lives.
    joined: list[str] = field(default_factory=list)


class QuerySubscriptions(Watch):
    """Every ``subscribe_query`` of one consumer on one table."""

    def __init__(self, consumer: QueryHost, table: str) -> None:
        self.consumer = consumer
        self.table = table
        self.subs: dict[str, QuerySubscription] = {}
        #: How fresh the rows this socket holds are (its snapshots and push reads): a
        #: refresh takes no shared read older than this was when it began (``shared.py``).
        self.fresh = Watermark()

    def __repr__(self) -> str:
        return f"<QuerySubscriptions {self.table}: {len(self.subs)}>"

    def totals(self) -> tuple[int, int]:
        return len(self.subs), sum(len(sub.held) for sub in self.subs.values())

    async def refresh(
        self, pks: dict[str, Any] | None, batches: frozenset[str | None] | None = None
    ) -> None:
        subs = list(self.subs.values())
        if not subs:
            return
        # None: re-run each query (see below); else the changed rows, read by pk.
        changed = None if pks is None or len(pks) > REQUERY_ABOVE else pks
        # As for instances (see ``InstanceSubscriptions.refresh``): a push goes out only if
        # the permission allowed it before the read and allows it after, so no data read
        # while the row was refused is sent once the refusal ends. Rows that enter through
        # a re-run query (bulk changes, TRUNCATE, resync) are only checked after the read.
        allowed_before: dict[str, bool] = {}
        if may_refuse(self.consumer):
            candidates = {k: held[0] for sub in subs for k, held in sub.held.items()}
            if changed is not None:
                candidates.update(changed)
            for key, pk in candidates.items():
                verb = "update" if any(key in sub.held for sub in subs) else "create"
                allowed_before[key] = await self.consumer.may_push(verb, pk=pk)
        # Every read of this refresh must be newer than what the subscriptions hold when it
        # starts; not than each other (one subscription's rows come from one read), so
        # sockets holding the same queries in another order still share their reads.
        floor = self.fresh.stamp
        if changed is None:
            # Unknown rows changed, or so many that reading them all costs more than
            # re-running each query (which returns only its own rows): re-run, compare.
            for sub in subs:
                rows = await self._read(floor, batches, "query", str(sub.condition), sub.condition)
                current = {key: (pk, data) for key, pk, data in rows}
                await self._settle(sub, current, set(sub.held), allowed_before)
            return
        conditions = [sub.condition for sub in subs]
        matches = await self._read(
            floor, batches, "matches", (tuple(sorted(changed)), tuple(map(str, conditions))),
            list(changed.values()), conditions,
        )  # fmt: skip
        for index, sub in enumerate(subs):
            current = {key: (pk, data) for key, pk, data, member in matches if member[index]}
            await self._settle(sub, current, set(changed), allowed_before)

    async def _read(
        self, floor: int, batches: frozenset[str | None] | None, kind: str, key: Any, *args: Any
    ) -> Any:
        """Run ``read_query`` / ``read_query_matches`` in one snapshot (membership and data
        of one committed state), once per process for consumers of a class with
        ``share_reads`` (same batch, same query), and never a shared read made before
        ``floor`` (the stamp of what the subscriptions held when the refresh began)."""
        method = "read_query" if kind == "query" else "read_query_matches"
        read = in_feed_snapshot(getattr(self.consumer, method))
        mark = Watermark(floor)
        result = await self.consumer.read_for_batch(
            batches, (kind, self.table, key), lambda: read(*args), mark
        )
        self.fresh.reached(mark.stamp)
        return result

    async def _settle(
        self,
        sub: QuerySubscription,
        current: dict[str, tuple[Any, Any]],
        checked: set[str],
        allowed_before: dict[str, bool],
    ) -> None:
        """Push what differs between ``current`` and what ``sub`` holds, among ``checked``."""
        consumer = self.consumer
        for key, (pk, data) in current.items():
            held = sub.held.get(key)
            if held is not None and held[1] == data:
                continue
            verb, status = ("update", 200) if held is not None else ("create", 201)
            if allowed_before.get(key, True) and await consumer.may_push(verb, pk=pk):
                await consumer.reply(verb, data, status=status, request_id=sub.request_id)
                sub.held[key] = (pk, data)
        for key in checked:
            held = sub.held.get(key)
            if held is None or key in current:
                continue
            if await consumer.may_push("delete", pk=held[0]):
                await consumer.reply(
                    "delete", {"pk": held[0]}, status=204, request_id=sub.request_id
                )
                del sub.held[key]


class ObserverQueryMixin(_Host):
    """``subscribe_query`` / ``unsubscribe_query`` for a ``GenericAsyncAPIConsumer``.

    Declare what clients may filter on::

        query_filter_fields = {"done": ["exact"], "project": ["exact", "in"]}

    or override ``get_query_filter(filters, **kwargs)`` to build any ``Q`` from the
    request. Rows are also limited by ``filter_queryset(get_queryset())``, so per-user
    querysets apply to the snapshot and to every push.
    """

    query_filter_fields: Any = ()
    #: Most rows a snapshot may have (413 past it); None: ``PGOBSERVE["MAX_QUERY_ROWS"]``.
    query_max_rows: int | None = None

    def query_subscriptions(self) -> QuerySubscriptions:
        return self.watch_of(QuerySubscriptions)

    def get_query_filter(self, filters: Any, **kwargs: Any) -> Q:
        """The condition of a query subscription; 400 (ValidationError) for bad filters."""
        return build_q(self.model(), self.query_filter_fields, filters)

    def query_condition(self, filters: Any, **kwargs: Any) -> tuple[Q, list[str]]:
        """The subscription's condition and the other tables its query reads (the
        queryset's joins and the condition's, e.g. a ``project__owner`` filter)."""
        condition = self.get_query_filter(filters, **kwargs)
        return condition, self.joined_tables(self._query_base().filter(condition))

    def _query_base(self) -> QuerySet[Any]:
        call = {"action": "update"}
        queryset = self.filter_queryset(self.get_queryset(**call), **call)
        return queryset if queryset.ordered else queryset.order_by("pk")

    def read_query(self, condition: Q, limit: int | None = None) -> list[tuple[str, Any, Any]]:
        """(pk_key, pk, data) of the rows matching ``condition``, in the queryset's order."""
        queryset = self._query_base().filter(condition)
        if limit is not None:
            queryset = queryset[: limit + 1]
        instances = list(queryset)
        return [
            (groups.pk_key(i.pk), i.pk, data)
            for i, data in zip(instances, self.serialize_many(instances), strict=True)
        ]

    def read_query_matches(
        self, pks: list[Any], conditions: list[Q]
    ) -> list[tuple[str, Any, Any, list[bool]]]:
        """One query: the visible rows among ``pks``, each with whether it matches each
        condition. Rows matching none are not serialized."""
        annotations = {
            f"_pgobserve_match_{i}": ExpressionWrapper(c, output_field=BooleanField())
            for i, c in enumerate(conditions)
            if c
        }
        matching: list[tuple[Any, list[bool]]] = []
        base = self._query_base().annotate(**annotations)
        for start in range(0, len(pks), 5000):
            for instance in base.filter(pk__in=pks[start : start + 5000]):
                member = [
                    bool(getattr(instance, f"_pgobserve_match_{i}", True)) if c else True
                    for i, c in enumerate(conditions)
                ]
                if any(member):
                    matching.append((instance, member))
        data = self.serialize_many([instance for instance, _ in matching])
        return [
            (groups.pk_key(instance.pk), instance.pk, row, member)
            for (instance, member), row in zip(matching, data, strict=True)
        ]

    @action()
    async def subscribe_query(
        self,
        request_id: Any = None,
        filters: Any = None,
        action: str = "subscribe_query",
        **kwargs: Any,
    ) -> None:
        if request_id is None:
            raise required("request_id")
        if kwargs and type(self).get_query_filter is ObserverQueryMixin.get_query_filter:
            # A misspelt "filters" must not silently subscribe to the whole queryset.
            raise BadRequest({k: ['Unexpected field; filters go in "filters".'] for k in kwargs})
        condition, joined = await database_sync_to_async(self.query_condition)(filters, **kwargs)
        # The class's own cap if it sets one (0 included, as max_rows), else the setting.
        limit = conf.max_query_rows() if self.query_max_rows is None else self.query_max_rows
        subs = self.query_subscriptions()
        group = groups.table_group(subs.table)
        async with self.watches.lock:
            # Join first, then read: a change committed after the read is delivered to us.
            await self.hold_group(group)
            await self.follow_joins(subs.table, joined)
            try:
                rows = await in_snapshot(self.read_query)(condition, limit)
                subs.fresh.reached(stamp())
                if len(rows) > limit:
                    raise QueryTooLarge(
                        f"The query matches more than {limit} rows; narrow the filters."
                    )
                replaced = subs.subs.get(request_key(request_id))
                if replaced is None:
                    ensure_room(self, subscriptions=1, rows=len(rows))
                else:
                    ensure_room(self, subscriptions=0, rows=len(rows) - len(replaced.held))
            except BaseException:
                await self.release_group(group)
                await self.unfollow_joins(subs.table, joined)
                raise
            old = subs.subs.pop(request_key(request_id), None)
            if old is not None:
                await self.release_group(group)  # re-subscribed: replace, keep one hold
                await self.unfollow_joins(subs.table, old.joined)
            subs.subs[request_key(request_id)] = QuerySubscription(
                request_id, condition, {key: (pk, data) for key, pk, data in rows}, joined
            )
            # Reply under the lock, so no push for this subscription can precede the 201.
            await self.reply(
                action=action, data=[d for _, _, d in rows], status=201, request_id=request_id
            )

    @action()
    async def unsubscribe_query(
        self, request_id: Any = None, action: str = "unsubscribe_query", **kwargs: Any
    ) -> tuple[None, int]:
        if request_id is None:
            raise required("request_id")
        subs = self.query_subscriptions()
        async with self.watches.lock:
            old = subs.subs.pop(request_key(request_id), None)
            if old is not None:
                await self.release_group(groups.table_group(subs.table))
                await self.unfollow_joins(subs.table, old.joined)
        return None, 204
