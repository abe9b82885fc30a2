"""Per-socket budgets: subscriptions and held rows are bounded, with a clear 429, and the
socket stays usable (``budgets.py``)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from tasks.models import Project, Task

from tests.e2e.consumers import AnyoneTaskConsumer as TaskConsumer

pytestmark = pytest.mark.django_db(transaction=True)

BUDGETS = {"MAX_SUBSCRIPTIONS_PER_SOCKET": 3, "MAX_ROWS_PER_SOCKET": 10}


def seed(count: int) -> list[int]:
    project = Project.objects.create(name="P", slug="p")
    return [Task.objects.create(project=project, title=f"t{i}").pk for i in range(count)]


async def ask(communicator: WebsocketCommunicator, message: dict) -> dict:
    await communicator.send_json_to(message)
    return await communicator.receive_json_from(timeout=5)


@pytest.fixture
async def socket():
    communicator = WebsocketCommunicator(TaskConsumer.as_asgi(), "/ws/tasks/")
    connected, _ = await communicator.connect()
    assert connected
    yield communicator
    await communicator.disconnect()


async def test_subscriptions_per_socket(socket, settings):
    settings.PGOBSERVE = {**settings.PGOBSERVE, **BUDGETS}
    pks = await sync_to_async(seed)(5)
    for rid, pk in enumerate(pks[:3]):
        reply = await ask(socket, {"action": "subscribe_instance", "pk": pk, "request_id": rid})
        assert reply["response_status"] == 201, reply
    # The same subscription again costs nothing; a new one is refused.
    again = await ask(socket, {"action": "subscribe_instance", "pk": pks[0], "request_id": 0})
    assert again["response_status"] == 201, again
    refused = await ask(socket, {"action": "subscribe_instance", "pk": pks[3], "request_id": 9})
    assert refused == {
        "errors": [
            "This socket has 3 subscriptions, the most it may have is 3; unsubscribe first."
        ],
        "data": None,
        "action": "subscribe_instance",
        "response_status": 429,
        "request_id": 9,
    }
    # Unsubscribing makes room; the socket was never closed.
    reply = await ask(socket, {"action": "unsubscribe_instance", "pk": pks[0], "request_id": 0})
    assert reply["response_status"] == 204, reply
    reply = await ask(socket, {"action": "subscribe_instance", "pk": pks[3], "request_id": 9})
    assert reply["response_status"] == 201, reply


async def test_rows_held_per_socket(socket, settings):
    settings.PGOBSERVE = {**settings.PGOBSERVE, **BUDGETS}
    pks = await sync_to_async(seed)(8)
    reply = await ask(socket, {"action": "subscribe_instance", "pk": pks[0], "request_id": "i"})
    assert reply["response_status"] == 201
    reply = await ask(socket, {"action": "subscribe_query", "filters": {}, "request_id": "all"})
    assert reply["response_status"] == 201 and len(reply["data"]) == 8  # 1 + 8 rows held
    refused = await ask(
        socket, {"action": "subscribe_query", "filters": {"done": False}, "request_id": "open"}
    )
    assert refused["response_status"] == 429, refused
    assert refused["errors"] == [
        "This socket holds 9 rows; 8 more would pass its budget of 10. "
        "Narrow the filters or unsubscribe first."
    ]
    # Replacing a subscription counts only the difference.
    reply = await ask(
        socket, {"action": "subscribe_query", "filters": {"done": False}, "request_id": "all"}
    )
    assert reply["response_status"] == 201, reply
