"""What ``@observer`` and ``@model_observer`` share: DCRF's observer API.

The decorated method becomes an observer object. On a consumer instance it is bound to
that consumer (``self.comment_activity.subscribe(...)``); on the class it is the observer
itself (``MyConsumer.comment_activity.subscribe(consumer)``). A consumer subscribes to
*groups* (``groups_for_consumer``); each event is sent to the groups it belongs to
(``groups_for_signal``) as a channel-layer message whose ``type`` is the method's name
with dots, so Channels hands it back to the same observer, which calls the method with
the event's body and the request_ids that subscribed to that group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from copy import deepcopy
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from .._types import ObserverHost

__all__ = ["BaseObserver"]

ObserverT = TypeVar("ObserverT", bound="BaseObserver")


class BoundObserver(partial[Any]):
    """An observer bound to one consumer: its methods get ``consumer=`` filled in."""

    def __getattr__(self, name: str) -> Any:
        return partial(getattr(self.func, name), *self.args, **self.keywords)


def subscriptions(consumer: object) -> dict[str, dict[str, set[Any]]]:
    """observer id → group → request_ids subscribed, for one consumer."""
    found = consumer.__dict__.get("_observer_group_to_request_id")
    if found is None:
        found = consumer.__dict__["_observer_group_to_request_id"] = {}
    return found


class BaseObserver:
    """One observed event source; see ``observer()`` and ``model_observer()``."""

    def __init__(self, func: Callable[..., Any], partition: str = "*") -> None:
        self.func = func
        self._serializer: Callable[..., Any] | None = None
        self._group_names_for_signal: Callable[..., Iterable[str]] | None = None
        self._group_names_for_consumer: Callable[..., Iterable[str]] | None = None
        #: Names this observer's groups apart from every other observer's.
        self._stable_observer_id = (
            f"{partition}-{type(self).__name__}-{func.__module__}.{func.__name__}"
        )

    @property
    def message_type(self) -> str:
        """The channel-layer message type of this observer's events (and so its handler)."""
        return self.func.__name__.replace("_", ".")

    async def __call__(
        self, message: dict[str, Any], consumer: ObserverHost | None = None, **kwargs: Any
    ) -> Any:
        """Handle one event message on ``consumer``: call the decorated method."""
        message = deepcopy(message)
        body = message.pop("body", {})
        message_type = message.pop("type")
        requests: list[Any] = []
        if consumer is not None:
            groups = subscriptions(consumer).get(self._stable_observer_id, {})
            requests = list(groups.get(message.get("group", ""), ()))
        return await self.func(
            consumer,
            body,
            observer=self,
            message_type=message_type,
            subscribing_request_ids=requests,
            **message,
            **kwargs,
        )

    @overload
    def __get__(self: ObserverT, consumer: None, owner: type | None = None) -> ObserverT: ...

    @overload
    def __get__(self, consumer: object, owner: type | None = None) -> BoundObserver: ...

    def __get__(self, consumer: object, owner: type | None = None) -> Any:
        if consumer is None:
            return self
        return BoundObserver(self, consumer=consumer)

    # what a consumer class declares --------------------------------------------------------

    def serializer(self: ObserverT, func: Callable[..., Any]) -> ObserverT:
        """Decorator: the event body, computed once per event (not per socket)."""
        self._serializer = func
        return self

    def groups_for_signal(self: ObserverT, func: Callable[..., Iterable[str]]) -> ObserverT:
        """Decorator: the groups an event is sent to."""
        self._group_names_for_signal = func
        return self

    def groups_for_consumer(self: ObserverT, func: Callable[..., Iterable[str]]) -> ObserverT:
        """Decorator: the groups ``subscribe(**kwargs)`` joins (they must match the
        names ``groups_for_signal`` yields)."""
        self._group_names_for_consumer = func
        return self

    def groups(self: ObserverT, func: Callable[..., Iterable[str]]) -> ObserverT:
        """Decorator: one function for both ``groups_for_signal`` and ``groups_for_consumer``."""
        self._group_names_for_signal = func
        self._group_names_for_consumer = func
        return self

    # subscribing ----------------------------------------------------------------------------

    async def subscribe(
        self, consumer: ObserverHost, *args: Any, request_id: Any = None, **kwargs: Any
    ) -> list[str]:
        """Join the groups ``groups_for_consumer(*args, **kwargs)`` names; the handler gets
        ``request_id`` among its ``subscribing_request_ids``."""
        names = list(self.group_names_for_consumer(*args, consumer=consumer, **kwargs))
        mine = subscriptions(consumer).setdefault(self._stable_observer_id, {})
        for name in names:
            requests = mine.setdefault(name, set())
            if request_id is not None:
                requests.add(request_id)
            await consumer.add_group(name)
        return names

    async def unsubscribe(
        self, consumer: ObserverHost, *args: Any, request_id: Any = None, **kwargs: Any
    ) -> list[str]:
        """Leave the groups ``subscribe`` joined with the same arguments: for
        ``request_id`` only (the group is left when no request_id remains), or for all."""
        names = list(self.group_names_for_consumer(*args, consumer=consumer, **kwargs))
        mine = subscriptions(consumer).setdefault(self._stable_observer_id, {})
        for name in names:
            if name not in mine:
                continue
            if request_id is not None:
                mine[name].discard(request_id)
            if request_id is None or not mine[name]:
                del mine[name]
                await consumer.remove_group(name)
        return names

    # group names ----------------------------------------------------------------------------

    def group_names_for_consumer(
        self, *args: Any, consumer: ObserverHost | None = None, **kwargs: Any
    ) -> Iterator[str]:
        if self._group_names_for_consumer is not None:
            for name in self._group_names_for_consumer(self, *args, consumer=consumer, **kwargs):
                yield self.clean_group_name(f"{self._stable_observer_id}-{name}")
            return
        for name in self.group_names(*args, **kwargs):
            yield self.clean_group_name(name)

    def group_names_for_signal(self, *args: Any, **kwargs: Any) -> Iterator[str]:
        if self._group_names_for_signal is not None:
            for name in self._group_names_for_signal(self, *args, **kwargs):
                yield self.clean_group_name(f"{self._stable_observer_id}-{name}")
            return
        for name in self.group_names(*args, **kwargs):
            yield self.clean_group_name(name)

    def group_names(self, *args: Any, **kwargs: Any) -> Iterable[str]:
        """The groups of an observer without ``groups_for_*``: one for every event."""
        raise NotImplementedError

    def clean_group_name(self, name: str) -> str:
        """A legal channel-layer group name (at most 100 ASCII characters) for any name."""
        return "pgobserve.observer." + hashlib.sha256(name.encode()).hexdigest()
