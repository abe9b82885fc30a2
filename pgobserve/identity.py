"""Close a socket when its session ends or its user is deactivated (internal).

A socket is authenticated once, when it connects; without this, a socket opened before
its user logged out (or was deactivated, or deleted) would keep receiving pushes. With
``PGOBSERVE["CLOSE_ON_LOGOUT"]`` (on by default) the session and user tables are observed
like any other (``registry.identity_models``), and each authenticated socket watches its
own two rows: when either changes, it checks that its session still exists and has not
expired and that its user still exists and is active, and otherwise closes with
``CLOSE_CODE``.

The session table's triggers send the md5 of each session key, never the key itself
(``sql.pk_digest``), so a role that LISTENs learns nothing it could log in with.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.db.models import Model
from django.utils import timezone

from . import conf, groups, registry, sql
from .watches import Watch

if TYPE_CHECKING:
    from ._types import IdentityHost

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.consumers")

#: The close code of a socket whose session ended or whose user was deactivated (the
#: private range 4000-4999; 4401 as HTTP's 401).
CLOSE_CODE = 4401


class IdentityWatch(Watch):
    """One socket's session or user row (one instance per table)."""

    def __init__(self, identity: SocketIdentity, table: str, key: str) -> None:
        self.identity = identity
        self.table = table
        self.key = key  # what the listener sends for this row: the pk, or the session digest

    def group(self) -> str:
        return groups.group_for_pk(self.table, self.key, conf.shards())

    async def refresh(
        self, pks: dict[str, Any] | None, batches: frozenset[str | None] | None = None
    ) -> None:
        if pks is None or self.key in pks:
            await self.identity.check()


class SocketIdentity:
    """The session and user a socket was authenticated with, and the check that they hold."""

    def __init__(self, consumer: IdentityHost, session_key: str | None, user: Model | None) -> None:
        self.consumer = consumer
        self.session_key = session_key
        self.user = user
        self.watches: list[IdentityWatch] = []
        self.closed = False
        for model in registry.identity_models():
            if registry.has_secret_pk(model) and session_key:
                key = sql.pk_digest(session_key)
            elif user is not None and isinstance(user, model):
                key = groups.pk_key(user.pk)
            else:
                continue
            self.watches.append(IdentityWatch(self, model._meta.db_table, key))

    @classmethod
    def of(cls, consumer: IdentityHost) -> SocketIdentity | None:
        """The identity of an authenticated socket (None for anonymous ones, or when
        ``CLOSE_ON_LOGOUT`` is off)."""
        user = consumer.scope.get("user")
        if user is None or not getattr(user, "is_authenticated", False):
            return None
        session = consumer.scope.get("session")
        session_key = getattr(session, "session_key", None) if session is not None else None
        identity = cls(consumer, session_key, user)
        return identity if identity.watches else None

    async def watch(self) -> None:
        """Join the rows' groups, then check once: a logout that happened before the join
        is not missed."""
        for watch in self.watches:
            self.consumer.watches.add(watch)
            # A hold, not a plain add: an instance subscription to a row of the same shard
            # releasing its hold must not take this membership with it.
            await self.consumer.hold_group(watch.group(), watch.key)
        await self.check()

    def still_valid(self) -> bool:
        for model in registry.identity_models():
            if registry.has_secret_pk(model):
                if (
                    self.session_key
                    and not model._default_manager.filter(
                        session_key=self.session_key, expire_date__gt=timezone.now()
                    ).exists()
                ):
                    return False
            elif self.user is not None and isinstance(self.user, model):
                user = model._default_manager.filter(pk=self.user.pk).first()
                if user is None or not getattr(user, "is_active", True):
                    return False
        return True

    async def check(self) -> None:
        if self.closed or await database_sync_to_async(self.still_valid)():
            return
        self.closed = True
        logger.info("pgobserve closes a socket: its session ended or its user is inactive")
        await self.consumer.close(code=CLOSE_CODE)
