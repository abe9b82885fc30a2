"""A consumer leaves every group it joined however it ends, and keeps its memberships fresh.

In-process, with channels' ``WebsocketCommunicator`` and pgobserve's in-memory layer, whose
``groups`` show exactly which channels are members. The feed groups are memberships of the
process's hub (``hub.py``), held for its consumers: the last consumer's end leaves them.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from tasks.models import Project, Task

from pgobserve.hub import hub_for
from tests.e2e.consumers import AnyoneTaskConsumer as TaskConsumer
from tests.fix_layer import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class CrashingTaskConsumer(TaskConsumer):
    """A consumer with a bug: a ``test.crash`` message raises out of its handler."""

    async def test_crash(self, message: dict) -> None:
        raise RuntimeError("a bug in a handler")


def memberships(layer, channel: str) -> set[str]:
    return {group for group, members in layer.groups.items() if channel in members}


async def subscribed(consumer_class) -> tuple[WebsocketCommunicator, str, str]:
    """A connected communicator with an instance and a query subscription; (it, the hub's
    channel, the consumer's own channel)."""
    project = await sync_to_async(Project.objects.create)(name="P", slug="p")
    task = await sync_to_async(Task.objects.create)(project=project, title="t")
    communicator = WebsocketCommunicator(consumer_class.as_asgi(), "/ws/tasks/")
    connected, _ = await communicator.connect()
    assert connected
    for request in (
        {"action": "subscribe_instance", "pk": task.pk, "request_id": 1},
        {"action": "subscribe_query", "filters": {}, "request_id": 2},
    ):
        await communicator.send_json_to(request)
        assert (await communicator.receive_json_from())["response_status"] == 201
    layer = get_channel_layer()
    feed = hub_for(layer)
    own = await wait_for(
        lambda: next((c for c in layer.channels if c != feed.channel), None), 5, "a channel"
    )
    return communicator, feed.channel, own


async def test_a_crashed_consumer_leaves_its_groups():
    communicator, channel, own = await subscribed(CrashingTaskConsumer)
    layer = get_channel_layer()
    assert len(memberships(layer, channel)) == 3  # resync, the row's shard, the table
    assert memberships(layer, own) == set()
    await layer.send(own, {"type": "test.crash"})
    with pytest.raises(RuntimeError, match="a bug in a handler"):
        await communicator.wait(5)
    assert memberships(layer, channel) == set()


async def test_a_closed_consumer_leaves_its_groups():
    communicator, channel, _ = await subscribed(TaskConsumer)
    layer = get_channel_layer()
    await communicator.disconnect()
    assert memberships(layer, channel) == set()


async def test_groups_stay_while_another_consumer_holds_them():
    first, channel, _ = await subscribed(TaskConsumer)
    layer = get_channel_layer()
    second = WebsocketCommunicator(TaskConsumer.as_asgi(), "/ws/tasks/")
    assert (await second.connect())[0]
    await second.send_json_to({"action": "subscribe_query", "filters": {}, "request_id": 3})
    assert (await second.receive_json_from())["response_status"] == 201
    held = memberships(layer, channel)
    await first.disconnect()
    assert memberships(layer, channel) == held - {
        g for g in held if g.rsplit(".", 1)[-1].startswith("s")
    }  # the first's row shard left; the table and resync groups stay for the second
    await second.disconnect()
    assert memberships(layer, channel) == set()


class OwnGroupTaskConsumer(TaskConsumer):
    """Joins a group of its own channel on connect, as DCRF's model observers do."""

    async def connect(self) -> None:
        await super().connect()
        await self.add_group("own.group")


@override_settings(
    CHANNEL_LAYERS={
        "default": {
            "BACKEND": "pgobserve.layers.InMemoryChannelLayer",
            "CONFIG": {"group_expiry": 2},
        }
    }
)
async def test_memberships_are_refreshed_inside_group_expiry():
    from channels.layers import channel_layers

    channel_layers.backends.pop("default", None)  # built again from the overridden settings
    try:
        communicator, channel, own = await subscribed(OwnGroupTaskConsumer)
        layer = get_channel_layer()
        joined = {
            (group, member): layer.groups[group][member]
            for member in (channel, own)
            for group in memberships(layer, member)
        }
        assert ("own.group", own) in joined and len(joined) == 4

        def all_refreshed() -> bool:
            return all(layer.groups[g][member] > at for (g, member), at in joined.items())

        # Refreshed at 30-45% of group_expiry, so well before the 2 s are up.
        await wait_for(all_refreshed, 1.5, "every membership re-added")
        await communicator.disconnect()
        assert memberships(layer, own) == set()
    finally:
        channel_layers.backends.pop("default", None)
