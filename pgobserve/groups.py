"""Channel-layer group names (internal). Pure functions, shared by the listener and consumers.

Every table has one *table group* (query subscribers: they must see every change) and
``SHARDS`` *shard groups* (instance subscribers: a consumer watching one row joins the
one shard its pk hashes to, so it is woken for about 1/SHARDS of the table's changes).
Names are hashed so any table name and any pk give a legal name under 100 characters.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import Any

__all__: list[str] = []  # internal: no public API

#: Every pgobserve consumer joins this group; the listener sends ``pgobserve.resync`` to it
#: after any gap in which notifications may have been lost.
RESYNC_GROUP = "pgobserve.resync"


def _table_prefix(table: str) -> str:
    slug = re.sub(r"[^a-zA-Z0-9_]+", "_", table)[:40]
    digest = hashlib.sha1(table.encode()).hexdigest()[:10]
    return f"pgobserve.{slug}.{digest}"


def table_group(table: str) -> str:
    """The group that receives every change to ``table``."""
    return _table_prefix(table) + ".all"


def pk_key(pk: Any) -> str:
    """The canonical text of a pk, equal for the JSON value (listener) and the Python value.

    JSON gives ints and strings; Django gives int, str or UUID (whose ``str`` matches
    PostgreSQL's JSON text of a uuid).
    """
    return str(int(pk)) if isinstance(pk, bool) else str(pk)


def shard_of(pk: Any, shards: int) -> int:
    return zlib.crc32(pk_key(pk).encode()) % shards


def shard_group(table: str, shard: int) -> str:
    """The group for one shard of ``table``'s pks."""
    return f"{_table_prefix(table)}.s{shard}"


def group_for_pk(table: str, pk: Any, shards: int) -> str:
    return shard_group(table, shard_of(pk, shards))
