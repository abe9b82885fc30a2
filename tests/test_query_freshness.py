"""A query subscriber of a ``share_reads`` class is never pushed a state older than what it
holds (``shared.Watermark``), in-process on the real database.

The change messages are handed to each consumer as the hub hands them
(``watches.changed(table, pks, batch)``); the reads, the sharing and the pushes are the real
ones. Socket T reads batch 1 for both; socket S subscribes after a later commit and gets
batch 1 late: the read T made for it is older than S's snapshot and must not be taken.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from tasks.models import Project, Task
from tasks.serializers import TaskSerializer

from pgobserve import shared
from tests.e2e.consumers import AnyoneTaskConsumer

from .e2e.conftest import as_json

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10
TABLE = Task._meta.db_table


class SharedQueryConsumer(AnyoneTaskConsumer):
    """Query subscriptions whose reads are shared by its sockets; remembers its sockets and
    counts the queries re-run for them."""

    share_reads = True
    sockets: list[SharedQueryConsumer] = []
    query_reads = 0

    async def websocket_connect(self, message: dict) -> None:
        SharedQueryConsumer.sockets.append(self)
        await super().websocket_connect(message)

    def read_query(self, condition: Any, limit: int | None = None) -> Any:
        SharedQueryConsumer.query_reads += 1
        return super().read_query(condition, limit)


@pytest.fixture(autouse=True)
def fresh_class(monkeypatch):
    SharedQueryConsumer.sockets.clear()
    SharedQueryConsumer.query_reads = 0
    monkeypatch.setattr(shared, "KEEP_SECONDS", 60.0)  # no read forgotten mid-test


def make_task(title: str) -> int:
    project = Project.objects.create(name="p", slug="freshness")
    return Task.objects.create(project=project, title=title).pk


def retitle(pk: int, title: str) -> dict:
    Task.objects.filter(pk=pk).update(title=title)
    return as_json(TaskSerializer(Task.objects.get(pk=pk)).data)


async def subscribe(
    title: str, socket: WebsocketCommunicator | None = None, request_id: Any = 1
) -> tuple[WebsocketCommunicator, SharedQueryConsumer, Any]:
    """A socket (``socket``, else a new one) subscribed to the tasks whose title has
    ``title``; (socket, its consumer, the 201's rows)."""
    if socket is None:
        socket = WebsocketCommunicator(SharedQueryConsumer.as_asgi(), "/ws/tasks/")
        assert (await socket.connect())[0]
    consumer = SharedQueryConsumer.sockets[-1]
    await socket.send_json_to(
        {
            "action": "subscribe_query",
            "filters": {"title__icontains": title},
            "request_id": request_id,
        }
    )
    reply = await socket.receive_json_from(timeout=TIMEOUT)
    assert reply["response_status"] == 201, reply
    return socket, consumer, reply["data"]


def change(consumer: SharedQueryConsumer, pk: int | None, batch: str) -> None:
    """The listener's message for ``batch`` (``pk`` None: unknown rows), as the hub hands
    it to the consumer."""
    consumer.watches.changed(TABLE, None if pk is None else [pk], batch)


async def flushed(*consumers: SharedQueryConsumer) -> None:
    """Wait (bounded) until each consumer has handled the changes handed to it."""
    for consumer in consumers:
        task = consumer.watches._task
        if task is not None:
            await asyncio.wait_for(asyncio.shield(task), TIMEOUT)


async def test_a_late_subscriber_never_takes_a_read_older_than_its_snapshot():
    pk = await sync_to_async(make_task)("fresh v1")
    t, t_consumer, _ = await subscribe("fresh")
    try:
        v2 = await sync_to_async(retitle)(pk, "fresh v2")
        change(t_consumer, pk, "batch 1")
        assert (await t.receive_json_from(timeout=TIMEOUT))["data"] == v2  # read v2, shared
        v3 = await sync_to_async(retitle)(pk, "fresh v3")
        s, s_consumer, snapshot = await subscribe("fresh")
        try:
            assert snapshot == [v3]
            change(s_consumer, pk, "batch 1")  # batch 1 reaches S late: T's read is older
            v4 = await sync_to_async(retitle)(pk, "fresh v4")
            change(s_consumer, pk, "batch 2")
            # The next push S gets is v4: nothing older than its snapshot came before it.
            assert (await s.receive_json_from(timeout=TIMEOUT))["data"] == v4
        finally:
            await s.disconnect()
    finally:
        await t.disconnect()


async def test_a_slower_socket_never_goes_back_after_taking_a_newer_read():
    """T read batches 1 and 2 (v2, v3). S subscribed later (v4) and re-read batch 1 (v4);
    A, slower, takes S's read for batch 1 (v4): for batch 2 it must not then take T's
    older read (v3), but read again."""
    pk = await sync_to_async(make_task)("fresh v1")
    t, t_consumer, _ = await subscribe("fresh")
    a, a_consumer, _ = await subscribe("fresh")
    s = None
    try:
        for batch, version in (("batch 1", 2), ("batch 2", 3)):
            data = await sync_to_async(retitle)(pk, f"fresh v{version}")
            change(t_consumer, pk, batch)
            assert (await t.receive_json_from(timeout=TIMEOUT))["data"] == data
        v4 = await sync_to_async(retitle)(pk, "fresh v4")
        s, s_consumer, snapshot = await subscribe("fresh")
        assert snapshot == [v4]
        change(s_consumer, pk, "batch 1")
        await flushed(s_consumer)
        change(a_consumer, pk, "batch 1")  # takes S's read: v4
        assert (await a.receive_json_from(timeout=TIMEOUT))["data"] == v4
        await flushed(a_consumer)
        change(a_consumer, pk, "batch 2")  # T's read of it (v3) is older than v4
        await flushed(a_consumer)
        v5 = await sync_to_async(retitle)(pk, "fresh v5")
        change(a_consumer, pk, "batch 3")
        assert (await a.receive_json_from(timeout=TIMEOUT))["data"] == v5
    finally:
        for socket in (t, a, s):
            if socket is not None:
                await socket.disconnect()


async def test_sockets_holding_the_same_queries_in_another_order_share_their_reads():
    """A change of unknown rows re-runs each query: X holds (alpha, beta), Y (beta, alpha);
    each query is run once for both."""
    await sync_to_async(make_task)("alpha beta")
    x, x_consumer, _ = await subscribe("alpha", request_id="a")
    await subscribe("beta", socket=x, request_id="b")
    y, y_consumer, _ = await subscribe("beta", request_id="b")
    await subscribe("alpha", socket=y, request_id="a")
    try:
        before = SharedQueryConsumer.query_reads
        change(x_consumer, None, "batch 1")
        change(y_consumer, None, "batch 1")
        await flushed(x_consumer, y_consumer)
        assert SharedQueryConsumer.query_reads - before == 2
    finally:
        await x.disconnect()
        await y.disconnect()
