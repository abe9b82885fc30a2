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


def seed(tasks: int = 1) -> int:
    project = Project.objects.create(name="p", slug="query-cap")
    for i in range(tasks):
        Task.objects.create(project=project, title=f"t{i}")
    return project.pk


@pytest.mark.parametrize(
    ("consumer", "tasks", "setting", "status"),
    [
        (NoQueries, 1, 1000, 413),  # the class's 0 is its cap
        (NoQueries, 0, 1000, 201),  # an empty snapshot fits under it (and may grow)
        (Unset, 1, 1000, 201),  # no cap of its own: the setting's
        (Unset, 1, 0, 413),
    ],
)
async def test_query_max_rows_of_the_class(consumer, tasks, setting, status, settings):
    settings.PGOBSERVE = {**settings.PGOBSERVE, "MAX_QUERY_ROWS": setting}
    project = await sync_to_async(seed)(tasks)
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
