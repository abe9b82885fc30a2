"""A consumer class's ``query_max_rows`` is its cap, 0 included (as ``max_rows``), and the
``MAX_QUERY_ROWS`` setting applies only where the class sets none."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from tasks.models import Project, Task

from tests.e2e.consumers import AnyoneTaskConsumer

pytestmark = pytest.mark.django_db(transaction=True)


class NoQueries(AnyoneTaskConsumer):
    query_max_rows = 0


class Unset(AnyoneTaskConsumer):
    query_max_rows = None


def seed() -> int:
    project = Project.objects.create(name="p", slug="query-cap")
    Task.objects.create(project=project, title="one")
    return project.pk


@pytest.mark.parametrize(("consumer", "status"), [(NoQueries, 413), (Unset, 201)])
async def test_query_max_rows_of_the_class(consumer, status):
    project = await sync_to_async(seed)()
    socket = WebsocketCommunicator(consumer.as_asgi(), "/ws/tasks/")
    assert (await socket.connect())[0]
    try:
        await socket.send_json_to(
            {"action": "subscribe_query", "filters": {"project": project}, "request_id": 1}
        )
        reply = await socket.receive_json_from(timeout=10)
        assert reply["response_status"] == status, reply
    finally:
        await socket.disconnect()
