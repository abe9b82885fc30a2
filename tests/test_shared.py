"""Reads shared by the sockets of one process (pgobserve/shared.py): pure asyncio, no
database; ``read`` stands for one query."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pgobserve import shared


class Reads:
    """A read that records which pks each call asked for, and finds every pk but 'gone'."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, pks: list[Any]) -> dict[str, Any]:
        self.calls.append(sorted(pks, key=str))
        await self.release.wait()
        return {str(pk): {"id": pk} for pk in pks if pk != "gone"}


async def ask(read: Reads, pks: list[Any], key: str = "k") -> dict[str, Any]:
    return await shared.read_rows_gathered(key, {str(pk): pk for pk in pks}, read)


async def test_sockets_on_different_rows_of_one_batch_share_one_read():
    read = Reads()
    results = await asyncio.gather(*(ask(read, [pk]) for pk in range(100)))
    assert read.calls == [sorted(range(100), key=str)]
    assert results == [{str(pk): {"id": pk}} for pk in range(100)]


async def test_each_socket_gets_only_its_rows_and_not_the_missing():
    read = Reads()
    mine, theirs = await asyncio.gather(ask(read, [1, "gone"]), ask(read, [2, 3]))
    assert mine == {"1": {"id": 1}}
    assert theirs == {"2": {"id": 2}, "3": {"id": 3}}


async def test_a_row_asked_for_after_the_read_began_gets_a_read_of_its_own():
    """Never data read before the change that woke the socket."""
    read = Reads()
    read.release.clear()
    first = asyncio.ensure_future(ask(read, [1]))
    while not read.calls:
        await asyncio.sleep(0)
    second = asyncio.ensure_future(ask(read, [2]))
    read.release.set()
    assert await asyncio.wait_for(first, 5) == {"1": {"id": 1}}
    assert await asyncio.wait_for(second, 5) == {"2": {"id": 2}}
    assert read.calls == [[1], [2]]


async def test_other_keys_do_not_gather():
    read = Reads()
    await asyncio.gather(ask(read, [1], key="a"), ask(read, [2], key="b"))
    assert sorted(read.calls) == [[1], [2]]


async def test_a_failed_read_fails_every_socket_that_gathered():
    async def failing(pks: list[Any]) -> dict[str, Any]:
        raise ConnectionError("cut")

    results = await asyncio.gather(
        *(shared.read_rows_gathered("f", {str(pk): pk}, failing) for pk in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(result, ConnectionError) for result in results)
    with pytest.raises(ConnectionError):  # and the next batch reads again
        await shared.read_rows_gathered("f", {"9": 9}, failing)


class Database:
    """A row whose version each commit raises; a read returns the version it ran at."""

    def __init__(self) -> None:
        self.version = 1
        self.reads = 0

    async def read(self) -> int:
        self.reads += 1
        return self.version


async def test_a_socket_never_takes_a_read_older_than_what_it_holds():
    """Another socket read batches 1 and 2 (versions 1, 2). Socket S subscribes (its own
    snapshot, version 3), then gets batch 1: the read made for it is older, so it reads
    again. Socket A, slower, then takes S's newer read for batch 1: for batch 2 the
    read made earlier is older than that, so A reads again too. Nobody goes back."""
    db = Database()
    z, s, a = shared.Watermark(), shared.Watermark(), shared.Watermark()
    assert await shared.read_once("batch 1", db.read, z) == 1
    db.version = 2
    assert await shared.read_once("batch 2", db.read, z) == 2
    db.version = 3
    s.reached(shared.stamp())  # S's subscribe read version 3
    assert await shared.read_once("batch 1", db.read, s) == 3
    seen_by_a = [await shared.read_once(key, db.read, a) for key in ("batch 1", "batch 2")]
    assert seen_by_a == [3, 3]
    assert await shared.read_once("batch 2", db.read, s) == 3
    assert db.reads == 4  # batch 1 twice, batch 2 twice: no more


async def test_sockets_in_step_share_every_read():
    db = Database()
    sockets = [shared.Watermark() for _ in range(5)]
    for batch in range(3):
        db.version = batch
        values = await asyncio.gather(
            *(shared.read_once(f"step {batch}", db.read, mark) for mark in sockets)
        )
        assert values == [batch] * 5
    assert db.reads == 3


async def test_a_read_found_already_done_raises_the_watermark_too():
    """Socket C asks for batch 1 just as E's read of it ends (its task done, its callbacks
    not run yet): C's watermark still rises past it, so for batch 2 C does not take the
    older read D made earlier."""
    db = Database()
    d, e, c = shared.Watermark(), shared.Watermark(), shared.Watermark()
    assert await shared.read_once("batch 2", db.read, d) == 1
    db.version = 2
    made = asyncio.ensure_future(shared.read_once("batch 1", db.read, e))
    await asyncio.sleep(0)  # E made its read, which ends in the next turn
    late = asyncio.ensure_future(shared.read_once("batch 1", db.read, c))  # runs after it
    assert await made == 2 and await late == 2
    assert db.reads == 2  # C took E's read, found done
    assert await shared.read_once("batch 2", db.read, c) == 2  # not D's older 1
