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


async def test_a_read_begun_before_the_socket_s_own_latest_read_is_not_taken():
    """A socket that subscribed (read the rows itself) while a change was on its way must
    not be sent what another socket read for that change before: it reads again."""
    results = iter(["older", "newer"])
    calls: list[str] = []

    async def read() -> str:
        calls.append(value := next(results))
        return value

    loop = asyncio.get_running_loop()
    assert await shared.read_once("q", read) == "older"  # another socket, for the batch
    await asyncio.sleep(0.002)  # (a clock step later)
    own_read_ended = loop.time()  # then this socket's subscribe read its snapshot
    assert await shared.read_once("q", read, not_before=own_read_ended) == "newer"
    assert await shared.read_once("q", read) == "newer"  # the newer read serves later askers
    assert await shared.read_once("q", read, not_before=own_read_ended) == "newer"
    assert calls == ["older", "newer"]
