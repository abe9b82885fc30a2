"""Re-reads shared between the consumers of one process.

When a change reaches many sockets of the same consumer class (1,000 clients on one row),
each would run the same query and serialize the same rows. A class that declares
``share_reads = True`` promises that its queryset and serializer output do not depend on
the socket (no ``scope["user"]`` in ``get_queryset()``, ``filter_queryset()`` or the
serializer); its consumers then run each distinct read of a batch once per process.

A read is keyed by the listener's batch ids, so it is only reused for the very changes
it was made for: a later change carries a new batch id and is read afresh. Reads
without a batch id (resync, TRUNCATE of unknown rows) are never shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

#: How long a finished read stays available to consumers that are slower to get to it.
KEEP_SECONDS = 5.0

_reads: dict[Hashable, asyncio.Future] = {}


async def read_once(key: Hashable, read: Callable[[], Awaitable[Any]]) -> Any:
    """The result of ``read()``, run once per ``key`` for every consumer that asks."""
    loop = asyncio.get_running_loop()
    future = _reads.get(key)
    if future is None or future.get_loop() is not loop:
        # A task of its own: a socket that closes mid-read must not cancel the others'.
        future = asyncio.ensure_future(read())
        _reads[key] = future
        loop.call_later(KEEP_SECONDS, _forget, key, future)
    return await asyncio.shield(future)


def _forget(key: Hashable, future: asyncio.Future) -> None:
    if _reads.get(key) is future:
        del _reads[key]
    if future.done() and not future.cancelled():
        future.exception()  # mark a failure as retrieved; the waiters have logged it
