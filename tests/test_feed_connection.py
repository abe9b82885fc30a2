"""Pushes read on the connection pgobserve keeps (``feed_connection.py``), with Django's
default ``CONN_MAX_AGE = 0`` (the test settings'): one connection for every push, not one
per push; actions keep Django's (a new one per call); a connection the server cut is
replaced on the next read; the last consumer's end closes it.

In-process: a real listener task on the communicator's channel layer, rows changed by a
psycopg connection outside Django. Channels' test communicator turns
``close_old_connections`` off (every connection would then be kept); ``Communicator``
keeps it on, as under daphne.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connection, connections
from tasks.models import Project, Task

from pgobserve.listener import Listener
from tests.e2e.consumers import AnyoneTaskConsumer
from tests.fix_layer import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


class Communicator(WebsocketCommunicator):
    """Channels' WebSocket communicator without its no-op ``close_old_connections``."""

    async def send_input(self, message: dict) -> None:
        return await ApplicationCommunicator.send_input(self, message)

    async def receive_output(self, timeout: float = 1) -> dict:
        return await ApplicationCommunicator.receive_output(self, timeout)


class PidTaskConsumer(AnyoneTaskConsumer):
    """Records the backend each push read and each ``whoami`` action ran on."""

    push_pids: list[int] = []
    action_pids: list[int] = []

    def read_rows(self, pks: list[Any], action: str = "update") -> dict[str, Any]:
        self.push_pids.append(backend_pid())
        return super().read_rows(pks, action)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("action") == "whoami":
            pid = await database_sync_to_async(backend_pid)()
            self.action_pids.append(pid)
            await self.send_json({"action": "whoami", "pid": pid})
            return
        await super().receive_json(content, **kwargs)


@pytest.fixture
async def listening(conninfo) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """A listener task; yields what stops it (its model observer feed holds the kept
    connection too: tasks.Task keeps old rows)."""
    listener = Listener(conninfo, channel_layer=get_channel_layer())
    task = asyncio.create_task(listener.run())

    async def stop() -> None:
        listener.stop()
        await asyncio.wait_for(task, TIMEOUT)

    try:
        await asyncio.wait_for(listener.listening.wait(), TIMEOUT)
        yield stop
    finally:
        await stop()
        await sync_to_async(connections.close_all)()


@pytest.fixture
async def writer(conninfo) -> AsyncIterator[psycopg.AsyncConnection]:
    conn = await psycopg.AsyncConnection.connect(**conninfo, autocommit=True)
    try:
        yield conn
    finally:
        await conn.close()


async def subscribed() -> tuple[WebsocketCommunicator, Task]:
    PidTaskConsumer.push_pids, PidTaskConsumer.action_pids = [], []
    project = await sync_to_async(Project.objects.create)(name="P", slug="p")
    task = await sync_to_async(Task.objects.create)(project=project, title="t")
    communicator = Communicator(PidTaskConsumer.as_asgi(), "/ws/tasks/")
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to(
        {"action": "subscribe_instance", "pk": task.pk, "request_id": 1}
    )
    assert (await communicator.receive_json_from(TIMEOUT))["response_status"] == 201
    return communicator, task


async def pushed(communicator, writer, task: Task, title: str) -> None:
    """Change the task outside Django; wait for its push (a resync's may come first)."""
    await writer.execute("UPDATE tasks_task SET title = %s WHERE id = %s", [title, task.pk])
    while True:
        message = await communicator.receive_json_from(TIMEOUT)
        if message["action"] == "update" and message["data"]["title"] == title:
            return


async def not_alive(writer, pid: int) -> bool:
    cursor = await writer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
    return await cursor.fetchone() is None


async def test_pushes_share_one_kept_connection_and_actions_keep_djangos(listening, writer):
    communicator, task = await subscribed()
    try:
        for n in range(3):
            await pushed(communicator, writer, task, f"push {n}")
            await communicator.send_json_to({"action": "whoami"})
            assert (await communicator.receive_json_from(TIMEOUT))["action"] == "whoami"
        pids = PidTaskConsumer.push_pids
        assert len(set(pids)) == 1, pids
        # An action is a request: with CONN_MAX_AGE = 0 each opens its own and closes it.
        assert len(set(PidTaskConsumer.action_pids)) == 3
        assert not set(PidTaskConsumer.action_pids) & set(pids)
        for pid in PidTaskConsumer.action_pids:
            await wait_for(lambda p=pid: not_alive(writer, p), TIMEOUT, "the action's close")
    finally:
        await listening()
        await communicator.disconnect()
    # The listener's feed and the last consumer ended: the kept connection is closed too.
    await wait_for(lambda: not_alive(writer, pids[0]), TIMEOUT, "the kept connection's close")


async def test_a_kept_connection_the_server_cut_is_replaced(listening, writer):
    communicator, task = await subscribed()
    try:
        await pushed(communicator, writer, task, "before")
        cut = PidTaskConsumer.push_pids[-1]
        await writer.execute("SELECT pg_terminate_backend(%s)", [cut])
        await wait_for(lambda: not_alive(writer, cut), TIMEOUT, "the backend to end")
        # The read on the cut connection fails and is retried on a new one.
        await pushed(communicator, writer, task, "after")
        assert PidTaskConsumer.push_pids[-1] != cut
        await pushed(communicator, writer, task, "again")
        assert PidTaskConsumer.push_pids[-1] == PidTaskConsumer.push_pids[-2]
    finally:
        await communicator.disconnect()


@pytest.fixture(autouse=True)
def no_read_known_to_need_a_snapshot():
    """Each test starts with no consumer read known to need a snapshot."""
    from pgobserve import generics

    generics._multi_statement.clear()
    yield
    generics._multi_statement.clear()


class Reader:
    """A push read that records whether it ran in a transaction, and the lock timeout."""

    def __init__(self) -> None:
        self.runs: list[tuple[bool, str]] = []

    def read(self, statements: int) -> int:
        with connection.cursor() as cursor:
            for _ in range(statements):
                cursor.execute("SELECT current_setting('lock_timeout')")
                timeout = cursor.fetchone()[0]
        self.runs.append((connection.in_atomic_block, timeout))
        return statements


async def test_a_one_statement_push_read_runs_in_autocommit_a_longer_one_in_a_snapshot():
    from pgobserve import feed_connection
    from pgobserve.generics import in_feed_snapshot

    feed_connection.hold()
    try:
        reader = Reader()
        assert await in_feed_snapshot(reader.read)(1) == 1
        # One statement, no transaction; the session gives way to writers all the same.
        assert reader.runs == [(False, reader.runs[0][1])]
        assert reader.runs[0][1] not in ("0", "")
        assert await in_feed_snapshot(reader.read)(2) == 2
        # Two statements may have seen two states: read again, in one snapshot...
        assert [in_transaction for in_transaction, _ in reader.runs[1:]] == [False, True]
        assert await in_feed_snapshot(reader.read)(1) == 1
        # ... and this consumer's reads start in one from then on.
        assert reader.runs[-1][0] is True
        other = Reader()  # the same class and method: known to need a snapshot
        assert await in_feed_snapshot(other.read)(1) == 1
        assert other.runs[0][0] is True
    finally:
        await feed_connection.release()


async def test_push_reads_keep_their_transaction_with_autocommit_reads_off(settings):
    from pgobserve import feed_connection
    from pgobserve.generics import in_feed_snapshot

    settings.PGOBSERVE = {**settings.PGOBSERVE, "AUTOCOMMIT_READS": False}

    class OffReader(Reader):
        """A class of its own: none of its reads is known to need a snapshot yet."""

    feed_connection.hold()
    try:
        reader = OffReader()
        assert await in_feed_snapshot(reader.read)(1) == 1
        # In its transaction, with the lock timeout of the transaction, not of the session.
        assert reader.runs[0][0] is True
        assert reader.runs[0][1] not in ("0", "")
    finally:
        await feed_connection.release()


async def test_a_push_read_that_needs_a_transaction_gets_one():
    """``select_for_update`` refuses autocommit before any statement runs: read in a
    snapshot, then and from then on."""
    from pgobserve import feed_connection
    from pgobserve.generics import in_feed_snapshot

    class Locking:
        def read(self) -> list[int]:
            return list(Project.objects.select_for_update().values_list("pk", flat=True))

    project = await sync_to_async(Project.objects.create)(name="locked", slug="locked")
    feed_connection.hold()
    try:
        assert await in_feed_snapshot(Locking().read)() == [project.pk]
        assert await in_feed_snapshot(Locking().read)() == [project.pk]
    finally:
        await feed_connection.release()
