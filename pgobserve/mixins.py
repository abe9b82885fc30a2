"""Action mixins for ``GenericAsyncAPIConsumer``: DCRF's CRUD set and instance subscriptions.

``ObserverModelInstanceMixin`` speaks DCRF's ``subscribe_instance`` protocol, but its
pushes come from the database triggers, so every committed change is seen (ORM,
``update()``, bulk operations, raw SQL, other programs), and it fixes DCRF's faults:

* subscribing is race-free: join the pk's group, then read the row, then answer 201;
* one ``pk__in`` read per batch of changes, however many rows and request_ids;
* a push only when the serialized data differs from what that request_id last got;
* ``has_permission(scope, consumer, "update"|"delete", pk=...)`` is asked before each
  push and a refusal really withholds it;
* a row that leaves the queryset (or is deleted, or truncated) gets one ``delete`` push;
  if it comes back, an ``update`` push;
* ``unsubscribe_instance`` with a request_id removes only that subscription;
* ``lookup_field`` other than pk works for subscribing and for pushes.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError
from django.http import Http404

from . import groups, inputs, pagination
from .budgets import ensure_room
from .consumers import AsyncAPIConsumer
from .decorators import action
from .errors import BadRequest, required
from .generics import in_snapshot
from .instances import InstanceSubscriptions
from .queries import ObserverQueryMixin
from .watches import CONNECTION_ERRORS

if TYPE_CHECKING:
    # The mixins call the queryset, serializer, lookup and reply methods of the consumer
    # they are mixed into: for type checking, they are that class.
    from .generics import GenericAsyncAPIConsumer as _Host
else:
    _Host = object

__all__ = [
    "CreateModelMixin",
    "ListModelMixin",
    "RetrieveModelMixin",
    "UpdateModelMixin",
    "PatchModelMixin",
    "DeleteModelMixin",
    "PaginatedModelListMixin",
    "StreamedPaginatedListMixin",
    "ObserverModelInstanceMixin",
    "ObserverQueryMixin",
]


logger = logging.getLogger("pgobserve.consumers")

#: What a subscription holds as "the data its client has" when the serializer failed at
#: subscribe time: equal to nothing, so the first data that serializes is pushed.
UNSERIALIZED = object()


class CreateModelMixin(_Host):
    """``create``: validate ``data`` with the serializer, ``perform_create``, reply 201."""

    @action()
    def create(self, data: dict[str, Any], **kwargs: Any) -> tuple[Any, int]:
        serializer = self.get_serializer(data=data, action_kwargs=kwargs)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer, **kwargs)
        return serializer.data, 201

    def perform_create(self, serializer: Any, **kwargs: Any) -> None:
        serializer.save()


class ListModelMixin(_Host):
    """``list``: every row of ``filter_queryset(get_queryset())``, serialized, 200."""

    @action()
    def list(self, **kwargs: Any) -> tuple[Any, int]:
        queryset = self.filter_queryset(self.get_queryset(**kwargs), **kwargs)
        return self.get_serializer(instance=queryset, many=True, action_kwargs=kwargs).data, 200


class RetrieveModelMixin(_Host):
    """``retrieve``: the row named by the lookup value (``get_object``), 200 or 404."""

    @action()
    def retrieve(self, **kwargs: Any) -> tuple[Any, int]:
        instance = self.get_object(**kwargs)
        return self.get_serializer(instance=instance, action_kwargs=kwargs).data, 200


def _save(
    consumer: _Host,
    data: dict[str, Any],
    partial: bool,
    perform: Callable[..., None],
    kwargs: dict[str, Any],
) -> tuple[Any, int]:
    """DCRF's ``update``/``patch``: validate ``data`` against the row, then ``perform``."""
    instance = consumer.get_object(data=data, **kwargs)
    serializer = consumer.get_serializer(
        instance=instance, data=data, action_kwargs=kwargs, partial=partial
    )
    serializer.is_valid(raise_exception=True)
    perform(serializer, **kwargs)
    if getattr(instance, "_prefetched_objects_cache", None):
        # A prefetch_related queryset: the saved row's prefetched relations are stale.
        # (Django's private cache, as DRF's UpdateModelMixin clears it: not in the stubs.)
        instance._prefetched_objects_cache = {}  # type: ignore[attr-defined]
    return serializer.data, 200


class UpdateModelMixin(_Host):
    """``update``: validate ``data`` against the row the lookup value names, ``perform_update``."""

    @action()
    def update(self, data: dict[str, Any], **kwargs: Any) -> tuple[Any, int]:
        return _save(self, data, False, self.perform_update, kwargs)

    def perform_update(self, serializer: Any, **kwargs: Any) -> None:
        serializer.save()


class PatchModelMixin(_Host):
    """``patch`` only (as in DCRF, it does not bring ``update``)."""

    @action()
    def patch(self, data: dict[str, Any], **kwargs: Any) -> tuple[Any, int]:
        return _save(self, data, True, self.perform_patch, kwargs)

    def perform_patch(self, serializer: Any, **kwargs: Any) -> None:
        serializer.save()


class DeleteModelMixin(_Host):
    """``delete``: the row named by the lookup value, ``perform_delete``, 204."""

    @action()
    def delete(self, **kwargs: Any) -> tuple[None, int]:
        instance = self.get_object(**kwargs)
        self.perform_delete(instance, **kwargs)
        return None, 204

    def perform_delete(self, instance: Any, **kwargs: Any) -> None:
        instance.delete()


class PaginatedModelListMixin(ListModelMixin):
    """``list`` paginated by ``pagination_class`` (DCRF's): the message's ``limit`` and
    ``offset`` pick the page, the reply is ``{"count", "results", "limit", "offset"}``.
    Without a pagination class or a limit, the whole list, as ``ListModelMixin``.

    Unlike DCRF's mixin it sets no ``permission_classes``: DCRF's resets them to the
    default for any consumer that lists this mixin before a base declaring its own."""

    pagination_class = pagination.default_pagination_class()
    #: ``view`` too: the paginator takes it beside the message's keys.
    named_only_keys = AsyncAPIConsumer.named_only_keys | {"view"}

    @action()
    def list(self, **kwargs: Any) -> tuple[Any, int]:
        queryset = self.filter_queryset(self.get_queryset(**kwargs), **kwargs)
        page = self.paginate_queryset(queryset, **kwargs)
        if page is not None:
            serializer = self.get_serializer(instance=page, many=True, action_kwargs=kwargs)
            return self.get_paginated_response(serializer.data), 200
        return self.get_serializer(instance=queryset, many=True, action_kwargs=kwargs).data, 200

    @property
    def paginator(self) -> Any:
        """This consumer's instance of ``pagination_class`` (None without one)."""
        if not hasattr(self, "_paginator"):
            self._paginator = None if self.pagination_class is None else self.pagination_class()
        return self._paginator

    # builtins.list: in this class body, ``list`` is the action.
    def paginate_queryset(self, queryset: Any, **kwargs: Any) -> builtins.list[Any] | None:
        if self.paginator is None:
            return None
        return self.paginator.paginate_queryset(queryset, self.scope, view=self, **kwargs)

    def get_paginated_response(self, data: Any) -> Any:
        assert self.paginator is not None
        return self.paginator.get_paginated_response(data)


class StreamedPaginatedListMixin(PaginatedModelListMixin):
    """``list`` that sends every page from the requested offset on, one reply per page
    (DCRF 1.3.0's). A list that is not paginated is sent once (DCRF crashes there)."""

    @action()
    async def list(self, action: str, request_id: Any, **kwargs: Any) -> None:
        while True:
            data, status = await super().list(request_id=request_id, **kwargs)
            await self.reply(action=action, data=data, status=status, request_id=request_id)
            if not isinstance(data, dict):
                break
            count, limit, offset = data.get("count", 0), data.get("limit", 0), data.get("offset", 0)
            if offset >= count - limit:  # this was the last page
                break
            kwargs["offset"] = offset + limit


class ObserverModelInstanceMixin(RetrieveModelMixin):
    """``retrieve``, ``subscribe_instance`` and ``unsubscribe_instance`` (see the module doc)."""

    def instance_subscriptions(self) -> InstanceSubscriptions:
        return self.watch_of(InstanceSubscriptions)

    def lookup_key(self, value: Any) -> str:
        """The text a lookup value is matched by (pk lookups: the converted pk's)."""
        if self._looks_up_pk():
            try:
                value = inputs.column_value(self.model()._meta.pk, value)
            except ValidationError:
                pass  # names no row (1.5, 2**70, "abc"): matches no subscription either
        return groups.pk_key(value)

    def _snapshot(self, pk: Any, kwargs: dict[str, Any], strict: bool) -> Any:
        """The row's data as the subscription starts. If the serializer fails for it, the
        subscription is still made, as with DCRF (which serializes only at the first
        push): the failure is logged and the row is pushed once it serializes. ``strict``
        (the client asked for the row): the failure is the answer, a 500."""
        instance = self.get_object(**kwargs)
        if groups.pk_key(instance.pk) != groups.pk_key(pk):
            raise Http404  # the lookup value moved to another row meanwhile
        serializer = self.get_serializer(instance=instance, action_kwargs={"action": "update"})
        if strict:
            return serializer.data
        try:
            return serializer.data
        except CONNECTION_ERRORS:
            raise
        except Exception:
            logger.exception(
                "pgobserve: %s's serializer failed for %s pk=%r at subscribe_instance; the"
                " subscription is made and the row is pushed once it serializes",
                type(self).__name__,
                instance._meta.label,
                instance.pk,
            )
            return UNSERIALIZED

    @action()
    async def subscribe_instance(
        self,
        request_id: Any = None,
        action: str = "subscribe_instance",
        snapshot: Any = False,
        **kwargs: Any,
    ) -> None:
        """DCRF's subscribe_instance. ``"snapshot": true`` (pgobserve's extension, for
        clients that re-subscribe after a reconnect) answers the 201 with the row as it is
        when the subscription starts, instead of DCRF's ``null``."""
        if request_id is None:
            raise required("request_id")
        if type(snapshot) is not bool:
            raise BadRequest({"snapshot": ["Must be true or false."]})
        value = self.lookup_value(kwargs)
        subs = self.instance_subscriptions()
        async with self.watches.lock:
            pk = await database_sync_to_async(self.pk_from_lookup)(**kwargs)
            if not subs.holds(pk, request_id):
                ensure_room(self, subscriptions=1, rows=0 if groups.pk_key(pk) in subs.rows else 1)
            # Join first, then read: a change committed after the read is delivered to us.
            await subs.join(pk)
            try:
                row = await in_snapshot(self._snapshot)(pk, kwargs, snapshot)
            except BaseException:
                await subs.leave(pk)
                raise
            if not subs.add(pk, request_id, self.lookup_key(value), row):
                await subs.leave(pk)  # re-subscribed the same request_id: one hold is enough
            # Reply under the lock, so no push for this subscription can precede the 201.
            data = row if snapshot else None
            await self.reply(action=action, data=data, status=201, request_id=request_id)

    @action()
    async def unsubscribe_instance(
        self, request_id: Any = None, action: str = "unsubscribe_instance", **kwargs: Any
    ) -> tuple[None, int]:
        value = self.lookup_value(kwargs)
        subs = self.instance_subscriptions()
        async with self.watches.lock:
            removed = await subs.remove(
                self.lookup_key(value), request_id, everyone=request_id is None
            )
        if not removed:
            # Nothing to remove: answer as DCRF does, 404 unless the row is visible.
            await database_sync_to_async(self.get_object)(**kwargs)
        return None, 204
