"""What pgobserve's parts need from a consumer, as ``typing.Protocol`` classes (types only).

The watches (``instances.py``, ``queries.py``, ``identity.py``), the send gate, the budgets,
the permission helpers and the observers each hold a consumer and call a few of its methods.
Each protocol below lists exactly those, taken from their code: a consumer that is not a
``GenericAsyncAPIConsumer`` (a test's stand-in, a project's own base class) satisfies the
one a part needs by having these members. ``GenericAsyncAPIConsumer`` satisfies them all,
which ``mypy`` checks at the end of this module.

The action mixins (``mixins.py``, ``queries.ObserverQueryMixin``) need nearly the whole of
``GenericAsyncAPIConsumer`` from the class they are mixed into; they name it as their base
for type checking only (``if TYPE_CHECKING``) rather than copy it into a protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from django.db.models import Q

    from .shared import Watermark
    from .watches import WatchRegistry

__all__: list[str] = []  # types for pgobserve's own annotations; no public API


class Closes(Protocol):
    """Closes its socket (``sendqueue.SendGate``, on a client that does not read)."""

    async def close(self, code: int | None = None) -> None: ...


class HasWatches(Protocol):
    """Has a ``WatchRegistry`` (``budgets.ensure_room`` counts what it holds)."""

    @property
    def watches(self) -> WatchRegistry: ...


class HasPermissions(Protocol):
    """Declares ``permission_classes`` (``permissions.may_refuse``)."""

    @property
    def permission_classes(self) -> Sequence[Any]: ...


class HoldsGroups(Protocol):
    """Follows feed groups through the process's hub (``hub.Hub``), counted per hold."""

    async def hold_group(self, name: str, key: str | None = None) -> None: ...

    async def release_group(self, name: str, key: str | None = None) -> None: ...


class Pushes(Protocol):
    """Checks and sends a change feed's pushes."""

    async def may_push(self, action: str, **kwargs: Any) -> bool: ...

    async def reply(
        self,
        action: str | None,
        data: Any = None,
        errors: list[Any] | None = None,
        status: int = 200,
        request_id: Any = None,
    ) -> None: ...


class FollowsJoins(HoldsGroups, Protocol):
    """Follows the tables its queryset joins (``relations.py``) for each subscription."""

    def joined_tables(self) -> list[str]: ...

    async def follow_joins(self, table: str, joined: Sequence[str]) -> None: ...

    async def unfollow_joins(self, table: str, joined: Sequence[str]) -> None: ...


class InstanceHost(Pushes, FollowsJoins, Protocol):
    """What ``instances.InstanceSubscriptions`` calls (``feed_reply`` too, if it has one)."""

    async def read_rows_batch(
        self, pks: list[Any], batches: frozenset[str | None] | None
    ) -> dict[str, Any]: ...


class QueryHost(Pushes, HasPermissions, Protocol):
    """What ``queries.QuerySubscriptions`` calls."""

    async def read_for_batch(
        self,
        batches: frozenset[str | None] | None,
        key: tuple[Any, ...],
        read: Callable[[], Awaitable[Any]],
        watermark: Watermark | None = None,
    ) -> Any: ...

    def read_query(self, condition: Q, limit: int | None = None) -> list[tuple[str, Any, Any]]: ...

    def read_query_matches(
        self, pks: list[Any], conditions: list[Q]
    ) -> list[tuple[str, Any, Any, list[bool]]]: ...


class IdentityHost(Closes, HoldsGroups, HasWatches, Protocol):
    """What ``identity.SocketIdentity`` uses: the handshake's ``scope`` (its user and
    session), the socket's watches, its groups, and closing it."""

    @property
    def scope(self) -> dict[str, Any]: ...


class ObserverHost(Protocol):
    """What a model observer or signal observer (``observer/``) calls to (un)subscribe:
    membership of the consumer's own channel in a group (``AsyncAPIConsumer.add_group``)."""

    async def add_group(self, name: str) -> None: ...

    async def remove_group(self, name: str) -> None: ...


if TYPE_CHECKING:
    from .generics import GenericAsyncAPIConsumer

    class _GenericConsumerIsEveryHost(
        GenericAsyncAPIConsumer, InstanceHost, QueryHost, IdentityHost, ObserverHost
    ):
        """Never defined at run time: mypy checks here that ``GenericAsyncAPIConsumer``'s
        definitions match each protocol's. (Its channels base is Any, so handing it where a
        protocol is expected checks nothing.)"""
