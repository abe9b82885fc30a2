"""Re-reads shared between the consumers of one process (internal).

When a change reaches many sockets of the same consumer class (1,000 clients on one row),
each would run the same query and serialize the same rows. A class that declares
``share_reads = True`` promises that its queryset and serializer output do not depend on
the socket (no ``scope["user"]`` in ``get_queryset()``, ``filter_queryset()`` or the
serializer); its consumers then run each distinct read of a batch once per process.

A read is keyed by the listener's batch ids, so it is only reused for the very changes
it was made for: a later change carries a new batch id and is read afresh. Reads
without a batch id (resync, TRUNCATE of unknown rows) are never shared. Nor is a read that
began before the data the asking socket already has was read (its ``Watermark``): a socket
that subscribed (and read) while a change was on its way, or that took a newer read for an
earlier batch, must not then be sent an older state another socket read. Reads are ordered
by stamps from one counter, not by clock: a read made after another ended ran after it.

Sockets watching *different* rows changed by one batch (one UPDATE of 10,000 rows, each
socket on its own row) gather: the rows asked for within a few event-loop turns are read
together, once, and each socket takes its own (``read_rows_gathered``). Every row of such a
read was asked for before the read began, after the change that woke its socket, so none is
read before its change.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Any

__all__: list[str] = []  # internal: no public API

#: How long a finished read stays available to consumers that are slower to get to it.
KEEP_SECONDS = 5.0

#: Event-loop turns a gathered read waits for more rows before it starts: the consumers
#: woken by one batch ask within a few turns of each other.
GATHER_TURNS = 8

_stamps = itertools.count(1)


def stamp() -> int:
    """The next stamp: greater than every stamp given before."""
    return next(_stamps)


class Watermark:
    """How fresh the data a socket holds from one kind of read is: a stamp taken after the
    latest read it used had ended. A shared read made before that is older than what the
    socket has, and is not taken."""

    __slots__ = ("stamp",)

    def __init__(self, stamp: int = 0) -> None:
        self.stamp = stamp

    def reached(self, ended: int) -> None:
        self.stamp = max(self.stamp, ended)


class _Shared:
    """One shared read: its task, and the stamps of its start and (once done) its end."""

    __slots__ = ("task", "begun", "ended")

    def __init__(self, read: Callable[[], Awaitable[Any]]) -> None:
        self.begun, self.ended = stamp(), 0
        # A task of its own: a socket that closes mid-read must not cancel the others'.
        self.task = asyncio.ensure_future(self._run(read))

    async def _run(self, read: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await read()
        finally:
            # Inside the task, not in a done-callback: a socket that finds the task done
            # (before its callbacks ran) finds this stamped too.
            self.ended = stamp()


_reads: dict[Hashable, _Shared] = {}
_gathering: dict[Hashable, _Gathering] = {}


async def read_once(
    key: Hashable, read: Callable[[], Awaitable[Any]], watermark: Watermark | None = None
) -> Any:
    """The result of ``read()``, run once per ``key`` for every consumer that asks. With a
    ``watermark``: a read made before it is not taken but replaced by a new one (which
    serves later askers too), and the watermark rises to the end of the read taken."""
    loop = asyncio.get_running_loop()
    shared = _reads.get(key)
    if (
        shared is None
        or shared.task.get_loop() is not loop
        or (watermark is not None and shared.begun <= watermark.stamp)
    ):
        shared = _reads[key] = _Shared(read)
        loop.call_later(KEEP_SECONDS, _forget, key, shared)
    result = await _result_of(shared.task)
    if watermark is not None:
        watermark.reached(shared.ended)
    return result


async def _result_of(task: asyncio.Future[Any]) -> Any:
    """``task``'s result, awaited by one of many consumers sharing it. A future per waiter,
    not ``asyncio.shield``: a cancelled waiter cancels only its own future, and 1,000
    waiters cost 1,000 callbacks, not 1,000 shields."""
    if task.done():
        return task.result()
    waiter = task.get_loop().create_future()
    task.add_done_callback(partial(_settle, waiter))
    return await waiter


def _settle(waiter: asyncio.Future[Any], task: asyncio.Future[Any]) -> None:
    if waiter.done():
        return
    if task.cancelled():
        waiter.cancel()
    elif (exc := task.exception()) is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(task.result())


def _forget(key: Hashable, shared: _Shared) -> None:
    if _reads.get(key) is shared:
        del _reads[key]
    if shared.task.done() and not shared.task.cancelled():
        shared.task.exception()  # mark a failure as retrieved; the waiters have logged it


class _Gathering:
    """The rows asked for under one key before its read starts, and that read."""

    def __init__(self, key: Hashable, read: Callable[[list[Any]], Awaitable[dict[str, Any]]]):
        self.key = key
        self.wanted: dict[str, Any] = {}
        self.task = asyncio.ensure_future(self._run(read))

    async def _run(self, read: Callable[[list[Any]], Awaitable[dict[str, Any]]]) -> Any:
        for _ in range(GATHER_TURNS):
            await asyncio.sleep(0)
        if _gathering.get(self.key) is self:
            del _gathering[self.key]  # from now on, a new gathering
        return await read(list(self.wanted.values()))


async def read_rows_gathered(
    key: Hashable,
    pks: dict[str, Any],
    read: Callable[[list[Any]], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """``read(pks)`` (pk_key → data of the rows found), run once for all the rows asked for
    under ``key`` within ``GATHER_TURNS`` loop turns; returns those of ``pks``."""
    loop = asyncio.get_running_loop()
    gathering = _gathering.get(key)
    if gathering is None or gathering.task.get_loop() is not loop:
        gathering = _gathering[key] = _Gathering(key, read)
    gathering.wanted.update(pks)
    found = await _result_of(gathering.task)
    return {pk_key: found[pk_key] for pk_key in pks if pk_key in found}
