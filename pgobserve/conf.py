"""pgobserve's settings, one function each, read from ``settings.PGOBSERVE``.

Every setting is read at call time, so tests can override them with
``override_settings``. The defaults are what a single-host deployment wants.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

__all__ = [
    "models",
    "old_rows",
    "channel",
    "database",
    "shards",
    "coalesce_seconds",
    "update_diff_max_rows",
    "max_pks_per_message",
    "in_process_listener",
    "leader_lock_key",
    "max_query_rows",
    "max_subscriptions",
    "max_rows",
    "close_on_logout",
    "send_queue_high_water",
    "send_queue_timeout",
    "observe_related",
    "autocommit_reads",
]


def _get(name: str, default: Any) -> Any:
    return getattr(settings, "PGOBSERVE", {}).get(name, default)


def models() -> list[str]:
    """Model labels ("app_label.ModelName") whose tables get notify triggers."""
    return list(_get("MODELS", []))


def old_rows() -> list[str]:
    """Model labels whose triggers keep the rows as they were before each change, for
    model observers (``pgobserve.observer.model_observer`` marks its model by itself;
    list here the models of observers that ``ASGI_APPLICATION`` does not import)."""
    return list(_get("OLD_ROWS", []))


def channel() -> str:
    """The PostgreSQL NOTIFY channel the triggers send on and the listener LISTENs to."""
    return _get("CHANNEL", "pgobserve")


def database() -> str:
    """The Django database alias that holds the observed tables."""
    return _get("DATABASE", "default")


def shards() -> int:
    """How many shard groups each table's pks are spread over.

    A consumer watching one row joins one shard group, so it wakes for about 1/SHARDS
    of the table's changes; a 100,000-row UPDATE costs at most SHARDS + 1 group messages
    per coalescing window. 64 balances the two (see bench/README.md).
    """
    return int(_get("SHARDS", 64))


def coalesce_seconds() -> float:
    """How long the listener waits after a notification to gather more before sending.

    0 still batches everything that arrived together (the listener sends while the next
    notifications queue up); a few milliseconds trades latency for fewer messages.
    """
    return float(_get("COALESCE_MS", 0)) / 1000.0


def update_diff_max_rows() -> int:
    """UPDATEs of up to this many rows are compared row by row in the trigger, so an UPDATE
    that changes nothing sends nothing. Larger ones send every pk they touched (comparing
    would double their cost; consumers still push only data that changed). Changing it
    changes the trigger SQL: run ``pgobserve install`` again."""
    return int(_get("UPDATE_DIFF_MAX_ROWS", 10_000))


def max_pks_per_message() -> int:
    """Upper bound on pks in one group message, so a huge UPDATE never makes a huge message."""
    return int(_get("MAX_PKS_PER_MESSAGE", 5000))


def in_process_listener() -> bool:
    """Run the listener as a task inside the ASGI process (development, the demo)."""
    return bool(_get("IN_PROCESS_LISTENER", False))


def leader_lock_key() -> int:
    """The ``pg_advisory_lock`` key that elects one leading listener among several."""
    return int(_get("LEADER_LOCK_KEY", 0x70676F62))  # "pgob"


def max_query_rows() -> int:
    """Most rows a query-subscription snapshot may have (413 beyond). Checked when
    subscribing only: a live result may grow past it."""
    return int(_get("MAX_QUERY_ROWS", 1000))


def max_subscriptions() -> int:
    """Most subscriptions (instance and query) one socket may have (429 beyond)."""
    return int(_get("MAX_SUBSCRIPTIONS_PER_SOCKET", 200))


def max_rows() -> int:
    """Most rows one socket may hold: each instance subscription's row plus every row of
    its query subscriptions' results (429 beyond). Checked when subscribing."""
    return int(_get("MAX_ROWS_PER_SOCKET", 5000))


def close_on_logout() -> bool:
    """Close a socket (code 4401) within a second of its session ending (logout, flush,
    deletion) or its user being deactivated or deleted. Observes the session and user
    tables when ``django.contrib.sessions`` (database sessions) and ``auth`` are installed."""
    return bool(_get("CLOSE_ON_LOGOUT", True))


def send_queue_high_water() -> int:
    """Unsent bytes on a socket past which its consumer stops reading and sending, and
    merges changes until the client catches up (see ``sendqueue.py``)."""
    return int(_get("SEND_QUEUE_HIGH_WATER", 1024 * 1024))


def send_queue_timeout() -> float:
    """Seconds a socket may stay past ``SEND_QUEUE_HIGH_WATER`` before it is closed (4408)."""
    return float(_get("SEND_QUEUE_TIMEOUT", 10))


def observe_related() -> bool:
    """Follow relations: models that observed models reach by a forward foreign key or
    one-to-one field, and the ``through`` tables of their many-to-many fields, get triggers
    too, and a consumer whose queryset (or a query subscription's filter) joins other
    tables re-checks what it watches when those tables change (``relations.py``)."""
    return bool(_get("OBSERVE_RELATED", True))


def autocommit_reads() -> bool:
    """Push re-reads of one statement run in autocommit, on a connection whose session lock
    timeout lets them give way to writers (``feed_connection.py``); not through a pooler,
    which ``feed_connection`` sees on each new connection. False: every read keeps its
    transaction (for reads through raw cursors or VOLATILE functions, which statement
    counting misses)."""
    return bool(_get("AUTOCOMMIT_READS", True))
