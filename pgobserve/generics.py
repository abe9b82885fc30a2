"""``GenericAsyncAPIConsumer``: queryset, serializer and lookup, as DRF's ``GenericAPIView``.

Everything a client receives, a reply or a push, is read through
``filter_queryset(get_queryset())`` and serialized by ``get_serializer()`` with
``{"scope", "consumer"}`` in the context, so a client never sees a row outside its
consumer's queryset.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import connections, transaction
from django.db.models import Model, QuerySet
from django.db.transaction import TransactionManagementError
from django.http import Http404
from rest_framework.generics import get_object_or_404
from rest_framework.serializers import Serializer

from . import conf, feed_connection, groups, inputs, registry, relations, shared
from .consumers import AsyncAPIConsumer
from .errors import BadRequest, required
from .permissions import may_refuse
from .watches import Watch

__all__ = ["GenericAsyncAPIConsumer"]

W = TypeVar("W", bound=Watch)
R = TypeVar("R")

#: pk__in reads are split in chunks of this many pks (one query per chunk).
READ_CHUNK = 5000

#: The first statement of a ``snapshot()``: one snapshot for all its reads, and a lock wait
#: shorter than the server's ``deadlock_timeout``. A read holds its tables' share locks
#: until it ends, so a TRUNCATE or DDL of two tables it reads can deadlock with it; the read
#: then gives up first and is retried (``watches.py``), rather than the writer being aborted.
SNAPSHOT_SQL = (
    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; "
    "SELECT set_config('lock_timeout', greatest(1, extract(epoch FROM "
    "current_setting('deadlock_timeout')::interval) * 500)::int::text, true)"
)


@contextmanager
def snapshot() -> Iterator[None]:
    """Run the enclosed reads in one REPEATABLE READ transaction on
    ``PGOBSERVE["DATABASE"]``, so a push's rows and what their serializer reads besides
    (a many-to-many field: one more query per row) show one committed state. In autocommit
    each statement sees its own, and a commit between two of them could mix two states in one
    push (a query's members decided before a ``groups.add``, their groups read after it).
    Inside a caller's transaction its isolation is kept: SET TRANSACTION must come first.
    Not READ ONLY: a serializer that records something (a "seen" mark) keeps working. The
    lock timeout lets a read give way (and be retried) rather than deadlock a writer that
    locks several tables (a TRUNCATE)."""
    alias = conf.database()
    connection = connections[alias]
    if connection.in_atomic_block or not connection.get_autocommit():
        yield
        return
    with transaction.atomic(using=alias):
        with connection.cursor() as cursor:
            cursor.execute(SNAPSHOT_SQL)
        yield


def _snapshotted(read: Callable[..., R]) -> Callable[..., R]:
    def read_in_snapshot(*args: Any, **kwargs: Any) -> R:
        with snapshot():
            return read(*args, **kwargs)

    return read_in_snapshot


def in_snapshot(read: Callable[..., R]) -> Callable[..., Awaitable[R]]:
    """``database_sync_to_async(read)`` with all of ``read``'s statements in one
    ``snapshot()``: a consumer's override of a read method is covered with what it calls.
    For a client's action, a request: the thread's connection, Django's rules."""
    return database_sync_to_async(_snapshotted(read))


def in_feed_snapshot(read: Callable[..., R]) -> Callable[..., Awaitable[R]]:
    """``in_snapshot`` for a push's re-read, on the connection pgobserve keeps for its
    change feed (``feed_connection.py``): no new connection per push with
    ``CONN_MAX_AGE = 0``; and in a transaction only if it needs one (``_consistent``)."""
    return feed_connection.reads(_consistent(read), gives_way=True)


#: (consumer class, read function) of the push reads that ran more than one statement.
_multi_statement: set[tuple[type, Any]] = set()


class _Statements:
    """Counts the statements run on a connection (``connection.execute_wrapper``)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute: Callable[..., Any], *args: Any) -> Any:
        self.count += 1
        return execute(*args)


def _consistent(read: Callable[..., R]) -> Callable[..., R]:
    """``read`` showing one committed state, in a transaction only when that takes one.

    One statement sees one state by itself: most pushes read one query (the queryset; the
    serializer reads nothing more) and run it in autocommit, which saves the transaction's
    three round trips (a quarter of a single push's latency). The statements are counted: a
    read that ran more (a serializer reading a relation, many-to-many) may have seen two
    states, so it runs again in one ``snapshot()``, and the reads of that consumer class and
    method start in one from then on; so do reads that need a transaction
    (``select_for_update``). Autocommit only where the session gives way to writers
    (``feed_connection.gives_way``).

    What is counted is Django's ``execute`` on this connection: SQL a read runs past it (a
    raw psycopg cursor, ``callproc``) or inside one statement with snapshots of its own (a
    VOLATILE function that queries other tables, as some row-level security policies do)
    is not seen. Such consumers set ``PGOBSERVE["AUTOCOMMIT_READS"] = False``. A serializer
    that writes runs twice on that first read, and its writes commit as they go."""
    key = (type(getattr(read, "__self__", None)), getattr(read, "__func__", read))
    snapshotted = _snapshotted(read)

    def read_consistently(*args: Any, **kwargs: Any) -> R:
        connection = connections[conf.database()]
        if (
            key in _multi_statement
            or not connection.get_autocommit()
            or connection.in_atomic_block
            or not feed_connection.gives_way(connection)
        ):
            return snapshotted(*args, **kwargs)
        statements = _Statements()
        try:
            with connection.execute_wrapper(statements):
                result = read(*args, **kwargs)
        except TransactionManagementError:
            pass  # it needs a transaction (select_for_update)
        else:
            if statements.count <= 1:
                return result
        _multi_statement.add(key)
        return snapshotted(*args, **kwargs)

    return read_consistently


class GenericAsyncAPIConsumer(AsyncAPIConsumer):
    """Set ``queryset`` and ``serializer_class``; override the ``get_*`` methods as in DRF."""

    queryset: QuerySet[Any] | None = None
    serializer_class: type[Serializer[Any]] | None = None
    lookup_field: str = "pk"
    #: True when ``get_queryset()``, ``filter_queryset()`` and the serializer's output do
    #: not depend on the socket: a change is then read and serialized once per process
    #: for all sockets of this class, not once per socket (see ``shared.py``).
    share_reads: bool = False
    lookup_url_kwarg: str | None = None
    #: Whether a change of a table the queryset joins (``project__owner=user`` reads
    #: ``tasks_project``) re-checks what each socket watches; None:
    #: ``PGOBSERVE["OBSERVE_RELATED"]`` (on by default). See ``relations.py``.
    observe_related: bool | None = None
    #: DCRF's switch for pushing many-to-many changes. pgobserve follows the ``through``
    #: tables of the model's m2m fields whenever it follows relations (``observe_related``),
    #: so None (unset) and True behave alike; an explicit False stops only that.
    observer_many_to_many_relationships: bool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """While a consumer runs, pgobserve keeps its push connection open."""
        feed_connection.hold()
        try:
            await super().__call__(scope, receive, send)
        finally:
            await feed_connection.release()

    def get_queryset(self, **kwargs: Any) -> QuerySet[Any]:
        assert self.queryset is not None, (
            f"'{self.__class__.__name__}' should either include a `queryset` attribute, "
            "or override the `get_queryset()` method."
        )
        queryset = self.queryset
        return queryset.all() if isinstance(queryset, QuerySet) else queryset

    def filter_queryset(self, queryset: QuerySet[Any], **kwargs: Any) -> QuerySet[Any]:
        """Narrow the queryset for this socket (e.g. to the user's rows). Applies to pushes."""
        return queryset

    def get_serializer_class(self, **kwargs: Any) -> type[Serializer[Any]]:
        assert self.serializer_class is not None, (
            f"'{self.__class__.__name__}' should either include a `serializer_class` "
            "attribute, or override the `get_serializer_class()` method."
        )
        return self.serializer_class

    def get_serializer_context(self, **kwargs: Any) -> dict[str, Any]:
        return {"scope": self.scope, "consumer": self}

    def get_serializer(
        self, action_kwargs: dict[str, Any] | None = None, *args: Any, **kwargs: Any
    ) -> Serializer[Any]:
        action_kwargs = action_kwargs or {}
        serializer_class = self.get_serializer_class(**action_kwargs)
        kwargs["context"] = self.get_serializer_context(**action_kwargs)
        return serializer_class(*args, **kwargs)

    # lookups ------------------------------------------------------------------------------

    @property
    def lookup_kwarg(self) -> str:
        return self.lookup_url_kwarg or self.lookup_field

    def lookup_value(self, kwargs: dict[str, Any]) -> Any:
        """The lookup value sent by the client; 400 if it is missing or not a scalar."""
        name = self.lookup_kwarg
        if name not in kwargs:
            raise required(name)
        value = kwargs[name]
        if value is None or isinstance(value, (bool, dict, list)):
            raise BadRequest({name: ["Expected a string or a number."]})
        return value

    def matchable_lookup_value(self, value: Any) -> Any:
        """``value`` converted by the lookup field; 404 if no row could hold it (a NUL
        character, an integer past the column's range, ``1.5`` for an integer), where
        PostgreSQL would otherwise raise or Django round it to another row."""
        try:
            field = inputs.model_field(self.model(), self.lookup_field)
        except FieldDoesNotExist:
            return value  # an annotation, say: the queryset converts it
        try:
            return inputs.column_value(field, value)
        except ValidationError:
            raise Http404 from None

    def get_object(self, **kwargs: Any) -> Model:
        """The row named by the lookup value, from ``filter_queryset(get_queryset())``; 404."""
        queryset = self.filter_queryset(self.get_queryset(**kwargs), **kwargs)
        value = self.matchable_lookup_value(self.lookup_value(kwargs))
        return get_object_or_404(queryset, **{self.lookup_field: value})

    def model(self) -> type[Model]:
        return self.get_queryset().model

    def watch_of(self, kind: Callable[[GenericAsyncAPIConsumer, str], W]) -> W:
        """This consumer's watch of ``kind`` (a subscription kind) on its model's table,
        made and registered on first use; fails loudly if the model is not observed."""
        watches = self.__dict__.setdefault("_watch_kinds", {})
        if kind not in watches:
            model = self.model()
            registry.require_observed(model)
            watches[kind] = kind(self, model._meta.db_table)
            self.watches.add(watches[kind])
        return watches[kind]

    # joined tables (see ``relations.py``) ------------------------------------------------

    def joined_tables(self, queryset: QuerySet[Any] | None = None) -> list[str]:
        """The observed tables besides its own that ``queryset`` (default: the pushes'
        ``filter_queryset(get_queryset())``) reads, and the ``through`` tables of its
        model's many-to-many fields, whose changes re-check what this socket watches; none
        if the consumer does not follow relations. Runs no query, but
        ``get_queryset()`` may (the user of a session), so call it from a worker thread."""
        follow = self.observe_related
        if not (conf.observe_related() if follow is None else follow):
            return []
        if queryset is None:
            call = {"action": "update"}
            queryset = self.filter_queryset(self.get_queryset(**call), **call)
        many_to_many = self.observer_many_to_many_relationships is not False
        return relations.followed_tables(type(self), queryset, many_to_many)

    async def follow_joins(self, table: str, joined: Sequence[str]) -> None:
        """Hold the table group of each ``joined`` table for one more subscription on
        ``table``, routing its changes to a re-check of what is watched there. Called
        before the subscription's first read, so no change after that read is missed."""
        for joined_table in joined:
            self.watches.route(joined_table, table)
            await self.hold_group(groups.table_group(joined_table))

    async def unfollow_joins(self, table: str, joined: Sequence[str]) -> None:
        for joined_table in joined:
            await self.release_group(groups.table_group(joined_table))
            self.watches.unroute(joined_table, table)

    def _looks_up_pk(self) -> bool:
        return self.lookup_field in ("pk", self.model()._meta.pk.name)

    def pk_from_lookup(self, **kwargs: Any) -> Any:
        """The pk a lookup names: converted without a query for pk lookups, else looked up."""
        value = self.matchable_lookup_value(self.lookup_value(kwargs))
        if self._looks_up_pk():
            return value
        queryset = self.filter_queryset(self.get_queryset(**kwargs), **kwargs)
        try:
            pks = list(
                queryset.filter(**{self.lookup_field: value}).values_list("pk", flat=True)[:2]
            )
        except (TypeError, ValueError, ValidationError):
            raise Http404 from None
        if len(pks) != 1:
            raise Http404
        return pks[0]

    # pushes -------------------------------------------------------------------------------

    async def read_for_batch(
        self,
        batches: frozenset[str | None] | None,
        key: tuple[Any, ...],
        read: Callable[[], Awaitable[Any]],
        watermark: shared.Watermark | None = None,
    ) -> Any:
        """``read()`` for a batch of changes, run once per process for all sockets of this
        class that got the same batch, when that is safe: the class sets ``share_reads``,
        the batch ids are known (never for a resync), and no push permission can refuse
        (a shared read may predate this socket's permission check; see ``instances.py``).
        ``key`` names the read within the batch (which rows, which query); ``watermark``:
        how fresh what this socket holds is, raised by the read (a shared read older than
        it is not taken, ``shared.read_once``)."""
        if not self._shares_reads(batches):
            result = await read()
            if watermark is not None:
                watermark.reached(shared.stamp())
            return result
        return await shared.read_once((type(self), batches, *key), read, watermark)

    def _shares_reads(self, batches: frozenset[str | None] | None) -> bool:
        """Whether reads for ``batches`` may be shared (see ``read_for_batch``)."""
        return bool(self.share_reads and batches) and not may_refuse(self)

    async def read_rows_batch(
        self, pks: list[Any], batches: frozenset[str | None] | None
    ) -> dict[str, Any]:
        """``read_rows`` for a batch of changes: shared as ``read_for_batch`` says, and
        gathered with the rows other sockets of this class ask for in the same batch (one
        read for a batch that changed each socket's own row, ``shared.py``)."""
        if not self._shares_reads(batches):
            return await in_feed_snapshot(self.read_rows)(pks)
        return await shared.read_rows_gathered(
            (type(self), batches, "rows"),
            {groups.pk_key(pk): pk for pk in pks},
            # Built only by the socket whose read runs (one per gathering, not per socket).
            lambda wanted: in_feed_snapshot(self.read_rows)(wanted),
        )

    def serialize_many(self, instances: list[Model], action: str = "update") -> list[Any]:
        """Serialized data of each instance, in order.

        Pushes serialize the same kind of rows over and over: the serializer (from
        ``get_serializer``) is built once per socket and kept while its class and context
        stay the same, since building a ModelSerializer's fields costs 30x serializing a
        row. DRF's ``many=True`` already reuses one child serializer for every row.
        """
        if not instances:
            return []
        call = {"action": action}
        key = (self.get_serializer_class(**call), self.get_serializer_context(**call))
        cached = self.__dict__.get("_push_serializer")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_push_serializer"] = (key, self.get_serializer(call))
        serializer = cached[1]
        return [serializer.to_representation(instance) for instance in instances]

    def read_rows(self, pks: list[Any], action: str = "update") -> dict[str, Any]:
        """pk_key → serialized data of those of ``pks`` still in the queryset: one query.
        Pushes run it in one snapshot (``in_feed_snapshot``) with what the serializer reads."""
        call = {"action": action}
        queryset = self.filter_queryset(self.get_queryset(**call), **call)
        found: dict[str, Any] = {}
        for start in range(0, len(pks), READ_CHUNK):
            instances = list(queryset.filter(pk__in=pks[start : start + READ_CHUNK]))
            for instance, data in zip(
                instances, self.serialize_many(instances, action), strict=True
            ):
                found[groups.pk_key(instance.pk)] = data
        return found
