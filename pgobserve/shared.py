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
from functools import partial
from typing import Any

#: How long a finished read stays available to consumers that are slower to get to it.
KEEP_SECONDS = 5.0

_reads: dict[Hashable, asyncio.Future] = {}


async def read_once(key: Hashable, read: Callable[[], Awaitable[Any]]) -> Any:
    """The result of ``read()``, run once per ``key`` for every consumer that asks."""
    loop = asyncio.get_running_loop()
    task = _reads.get(key)
    if task is None or task.get_loop() is not loop:
        # A task of its own: a socket that closes mid-read must not cancel the others'.
        task = asyncio.ensure_future(read())
        _reads[key] = task
        loop.call_later(KEEP_SECONDS, _forget, key, task)
    if task.done():
        return task.result()
    # A future per waiter, not ``asyncio.shield``: a cancelled waiter cancels only its
    # own future, and 1,000 waiters cost 1,000 callbacks, not 1,000 shields.
    waiter = loop.create_future()
    task.add_done_callback(partial(_settle, waiter))
    return await waiter


def _settle(waiter: asyncio.Future, task: asyncio.Future) -> None:
    if waiter.done():
        return
    if task.cancelled():
        waiter.cancel()
    elif task.exception() is not None:
        waiter.set_exception(task.exception())
    else:
        waiter.set_result(task.result())


def _forget(key: Hashable, future: asyncio.Future) -> None:
    if _reads.get(key) is future:
        del _reads[key]
    if future.done() and not future.cancelled():
        future.exception()  # mark a failure as retrieved; the waiters have logged it
