"""A query subscriber of a ``share_reads`` class is never pushed a state older than what it
holds (``shared.Watermark``), in-process on the real database.

The change messages are handed to each consumer as the hub hands them
(``watches.changed(table, pks, batch)``); the reads, the sharing and the pushes are the real
ones. Socket T reads batch 1 for both; socket S subscribes after a later commit and gets
batch 1 late: the read T made for it is older than S's snapshot and must not be taken.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from tasks.models import Project, Task
from tasks.serializers import TaskSerializer

from tests.e2e.consumers import AnyoneTaskConsumer

from .e2e.conftest import as_json

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 10
TABLE = Task._meta.db_table


class SharedQueryConsumer(AnyoneTaskConsumer):
    """Query subscriptions whose reads are shared by its sockets; remembers its sockets."""

    share_reads = True
    sockets: list[SharedQueryConsumer] = []

    async def websocket_connect(self, message: dict) -> None:
        SharedQueryConsumer.sockets.append(self)
        await super().websocket_connect(message)


def make_task(title: str) -> int:
    project = Project.objects.create(name="p", slug="freshness")
    return Task.objects.create(project=project, title=title).pk


def retitle(pk: int, title: str) -> dict:
    Task.objects.filter(pk=pk).update(title=title)
    return as_json(TaskSerializer(Task.objects.get(pk=pk)).data)


async def subscribe(title: str) -> tuple[WebsocketCommunicator, SharedQueryConsumer, Any]:
    socket = WebsocketCommunicator(SharedQueryConsumer.as_asgi(), "/ws/tasks/")
    assert (await socket.connect())[0]
    consumer = SharedQueryConsumer.sockets[-1]
    await socket.send_json_to(
        {"action": "subscribe_query", "filters": {"title__icontains": title}, "request_id": 1}
    )
    reply = await socket.receive_json_from(timeout=TIMEOUT)
    assert reply["response_status"] == 201, reply
    return socket, consumer, reply["data"]


def change(consumer: SharedQueryConsumer, pk: int, batch: str) -> None:
    """The listener's message for ``batch``, as the hub hands it to the consumer."""
    consumer.watches.changed(TABLE, [pk], batch)


async def test_a_late_subscriber_never_takes_a_read_older_than_its_snapshot():
    SharedQueryConsumer.sockets.clear()
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
