"""The database connection pgobserve keeps for the reads of its change feed (internal).

A push's re-read (and a model observer's reads in the listener) is not a request. Run
through Channels' ``database_sync_to_async`` on the thread's own connection, it would
open a PostgreSQL connection per push under Django's default ``CONN_MAX_AGE = 0`` (3-5 ms,
more than the read). So these reads run on one connection per process that pgobserve
keeps: swapped in as the thread's connection for the read (the consumer's queryset and
serializer use it unchanged), and put back after. Django's own connections keep Django's
rules: actions, permission checks and the rest still open and close theirs per call.

Django's checks still apply to the kept connection before and after each read (an
autocommit not restored, an error: it is closed if it no longer answers, so a server
restart costs one failed read, retried, not a dead connection), without the age limit;
with ``CONN_HEALTH_CHECKS`` a connection cut while idle is replaced before the read.
It is closed when nothing holds it: the process's last pgobserve consumer ended and no
listener feed runs (tests then leave no connection behind that would keep their database
from being dropped). A read inside a caller's transaction (a test's) runs in it, as before.

Django 5.1's pool (``OPTIONS={"pool": True}``) removes the connect cost too, but only when a
site turns it on (and installs psycopg-pool, on Django 5.1+); the kept connection works
with the defaults, and with the pool (it then holds one of its connections).

Pushes' re-reads have a kept connection of their own (``gives_way=True``) whose session has a
lock timeout shorter than the server's ``deadlock_timeout``: a read of one statement can then
run in autocommit (``generics.in_feed_snapshot``) and still give way to a writer that locks
several tables, rather than deadlock it. A pooled connection is shared with others when it
goes back: it is left as the pool gave it (its reads stay in a transaction), and so is a
connection through a pooler (``GIVE_WAY_SQL``), and any connection with
``PGOBSERVE["AUTOCOMMIT_READS"] = False``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.db import connections

from . import conf

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.consumers")

R = TypeVar("R")

#: Held for each read and each close: one read at a time on the kept connection, from
#: whichever thread ``sync_to_async`` runs it in. Reentrant: a read's code that calls
#: ``async_to_sync`` may have a nested read run in its own thread while it waits.
_lock = threading.RLock()
#: (alias, gives_way) → the connection kept for it (at most two per alias per process).
_kept: dict[tuple[str, bool], Any] = {}
#: A session lock timeout shorter than the server's deadlock_timeout (see ``gives_way``),
#: set only if the session is the connection's own: its backend pid is the one the server
#: gave at connect. A pooler (PgBouncer) gives its clients a made-up one, and its server
#: sessions go to other clients, whom a session setting would reach.
GIVE_WAY_SQL = (
    "SELECT CASE WHEN pg_backend_pid() = %s THEN set_config('lock_timeout', "
    "greatest(1, extract(epoch FROM current_setting('deadlock_timeout')::interval) * 500)"
    "::int::text, false) END"
)
#: Consumers and listener feeds running in the process (``hold`` / ``release``), counted
#: under a lock of their own: the event loop must not wait for a read to end.
_holders = 0
_holders_lock = threading.Lock()


def hold() -> None:
    """A consumer or feed starts: keep the connection between its reads."""
    global _holders
    with _holders_lock:
        _holders += 1


async def release() -> None:
    """A consumer or feed ended: the last one closes the kept connection."""
    global _holders
    with _holders_lock:
        _holders -= 1
        if _holders > 0:
            return
    await sync_to_async(close_unheld, thread_sensitive=False)()


def close_unheld() -> None:
    """Close the kept connections if nothing holds them."""
    with _lock:
        if _holders <= 0:
            for kept in _kept.values():
                kept.close()


def reads(
    read: Callable[..., R], alias: str | None = None, *, gives_way: bool = False
) -> Callable[..., Awaitable[R]]:
    """``database_sync_to_async(read)`` with ``read`` on the connection kept for ``alias``
    (default: ``PGOBSERVE["DATABASE"]``); ``gives_way``: the one whose session gives way
    to writers (pushes' re-reads)."""

    @functools.wraps(read)
    def read_on_kept(*args: Any, **kwargs: Any) -> R:
        with kept_connection(alias or conf.database(), gives_way):
            return read(*args, **kwargs)

    return database_sync_to_async(read_on_kept)


@contextmanager
def kept_connection(alias: str, gives_way: bool = False) -> Iterator[None]:
    """Make the connection kept for ``alias`` this thread's connection of ``alias``."""
    own = connections[alias]
    if own.in_atomic_block:  # the caller's transaction: read what it sees
        yield
        return
    gives_way = gives_way and conf.autocommit_reads()  # else one connection serves both
    with _lock:
        kept = _kept.get((alias, gives_way))
        if kept is None:
            kept = _kept[alias, gives_way] = connections.create_connection(alias)
            kept.inc_thread_sharing()  # used and closed from more than one thread
        _check(kept)
        if gives_way:
            _give_way(kept)
        connections[alias] = kept
        try:
            yield
        finally:
            connections[alias] = own
            _check(kept)
            if _holders <= 0:  # a read outside any consumer or feed keeps nothing
                kept.close()


def _give_way(kept: Any) -> None:
    """Set the lock timeout of ``kept``'s session, once per server connection (on its first
    read); not for a pooled one (it goes back to others), nor through a pooler
    (``GIVE_WAY_SQL``): its reads then stay in transactions. Only for the push connection,
    which ``kept_connection`` uses only with ``PGOBSERVE["AUTOCOMMIT_READS"]`` on."""
    if getattr(kept, "pool", None) is not None:
        return  # a pool: Django 5.1+ with OPTIONS={"pool": ...}
    kept.ensure_connection()
    raw = kept.connection
    if kept.__dict__.get("_pgobserve_session_seen") is raw:
        return
    pid = getattr(getattr(raw, "info", None), "backend_pid", None)
    with kept.cursor() as cursor:
        cursor.execute(GIVE_WAY_SQL, [pid])
        (set_to,) = cursor.fetchone()
    kept.__dict__["_pgobserve_session_seen"] = raw
    if set_to is not None:
        kept.__dict__["_pgobserve_gives_way"] = raw
    else:
        _pooler_seen(kept.alias)


@functools.cache
def _pooler_seen(alias: str) -> None:
    """Say once per process that pushes through ``alias`` keep their transactions."""
    logger.info(
        "pgobserve: database %r answers through a pooler (its backend pid is not the one "
        "given at connect): push re-reads keep their transactions (as with "
        "PGOBSERVE['AUTOCOMMIT_READS'] = False), so no session setting reaches its other "
        "clients",
        alias,
    )


def gives_way(connection: Any) -> bool:
    """Whether ``connection``'s session gives way to writers (``_give_way`` set it up)."""
    raw = connection.__dict__.get("_pgobserve_gives_way")
    return raw is not None and raw is connection.connection


def _check(kept: Any) -> None:
    """Django's ``close_if_unusable_or_obsolete`` without the age limit: closed if its
    autocommit was not restored, or an error happened and it no longer answers."""
    kept.close_at = None
    kept.close_if_unusable_or_obsolete()
