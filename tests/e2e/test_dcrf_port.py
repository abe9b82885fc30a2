"""DCRF's tests/test_model_observer.py, ported: the same messages, now through daphne.

Differences from the original, all on the side of stricter checks: ``receive_nothing()``
becomes a sentinel change whose push must come next (a same-shard row, so the message
order is guaranteed on every channel layer), and the ORM writes are real commits seen by
the triggers rather than Django signals.
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth import get_user_model
from tasks.models import Project, Task

from pgobserve import conf, groups

from .conftest import connect, envelope

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


def user_json(user) -> dict:
    return {"email": user.email, "id": user.pk, "username": user.username}


def create_user(name: str, email: str, same_shard_as: int | None = None):
    """A user (whose pk shares a shard group with ``same_shard_as``, if given)."""
    while True:
        user = User.objects.create(username=f"{name}-{uuid.uuid4().hex[:6]}", email=email)
        if same_shard_as is None or groups.shard_of(user.pk, conf.shards()) == groups.shard_of(
            same_shard_as, conf.shards()
        ):
            return user


def missing_pk() -> int:
    return (User.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1000


async def test_observer_model_instance_mixin(live, db):
    async with connect(live, "/ws/dcrf-users/") as ws:
        pk = await db(missing_pk)
        assert await ws.ask({"action": "retrieve", "pk": pk, "request_id": 1}) == envelope(
            "retrieve", None, 404, 1, ["Not found"]
        )
        u1 = await db(create_user, "test1", "42@example.com")
        await db(create_user, "test2", "45@example.com")
        assert await ws.ask({"action": "retrieve", "pk": u1.pk, "request_id": 1}) == envelope(
            "retrieve", user_json(u1), 200, 1
        )
        assert await ws.ask(
            {"action": "subscribe_instance", "pk": u1.pk, "request_id": 4}
        ) == envelope("subscribe_instance", None, 201, 4)
        await db(create_user, "test3", "46@example.com")

        reply = await ws.ask(
            {"action": "update_username", "pk": u1.pk, "username": "thenewname", "request_id": 5}
        )
        assert reply == envelope("update_username", {"pk": u1.pk}, 200, 5)
        assert await ws.recv() == envelope(
            "update", {"email": "42@example.com", "id": u1.pk, "username": "thenewname"}, 200, 4
        )
        u1_pk = u1.pk
        await db(u1.delete)
        assert await ws.recv() == envelope("delete", {"pk": u1_pk}, 204, 4)


async def test_two_observer_model_instance_mixins(live, db):
    project = await db(Project.objects.create, name="P", slug=f"p-{uuid.uuid4().hex[:8]}")
    t1 = await db(Task.objects.create, project=project, title="test2")
    async with (
        connect(live, "/ws/tasks/") as tasks_ws,
        connect(live, "/ws/dcrf-users/") as users_ws,
    ):
        u1 = await db(create_user, "test1", "42@example.com")
        reply = await tasks_ws.ask({"action": "subscribe_instance", "pk": t1.pk, "request_id": 4})
        assert reply == envelope("subscribe_instance", None, 201, 4)
        reply = await users_ws.ask({"action": "subscribe_instance", "pk": u1.pk, "request_id": 4})
        assert reply == envelope("subscribe_instance", None, 201, 4)

        u1.username = "no not a value"
        await db(u1.save)
        assert await users_ws.recv() == envelope("update", user_json(u1), 200, 4)
        # The task socket got nothing: its next message is its own task's change.
        await db(Task.objects.filter(pk=t1.pk).update, title="sentinel")
        message = await tasks_ws.recv()
        assert (message["action"], message["request_id"], message["data"]["title"]) == (
            "update",
            4,
            "sentinel",
        )


async def test_unsubscribe_observer_model_instance_mixin(live, db):
    async with connect(live, "/ws/dcrf-users/") as ws:
        u1 = await db(create_user, "test1", "42@example.com")
        sentinel = await db(create_user, "sentinel", "s@example.com", same_shard_as=u1.pk)
        assert await ws.ask(
            {"action": "subscribe_instance", "pk": u1.pk, "request_id": 4}
        ) == envelope("subscribe_instance", None, 201, 4)
        assert await ws.ask(
            {"action": "subscribe_instance", "pk": sentinel.pk, "request_id": "s"}
        ) == envelope("subscribe_instance", None, 201, "s")

        await ws.send(
            {"action": "update_username", "pk": u1.pk, "username": "thenewname", "request_id": 5}
        )
        a, b = await ws.recv_many(2)
        assert envelope("update_username", {"pk": u1.pk}, 200, 5) in [a, b]
        assert envelope(
            "update", {"email": "42@example.com", "id": u1.pk, "username": "thenewname"}, 200, 4
        ) in [a, b]

        assert await ws.ask(
            {"action": "unsubscribe_instance", "pk": u1.pk, "request_id": 4}
        ) == envelope("unsubscribe_instance", None, 204, 4)

        reply = await ws.ask(
            {"action": "update_username", "pk": u1.pk, "username": "again", "request_id": 5}
        )
        assert reply == envelope("update_username", {"pk": u1.pk}, 200, 5)
        # receive_nothing(), made exact: the sentinel's push is the next message.
        reply = await ws.ask(
            {"action": "update_username", "pk": sentinel.pk, "username": "s2", "request_id": 6}
        )
        assert reply == envelope("update_username", {"pk": sentinel.pk}, 200, 6)
        message = await ws.recv()
        assert (message["action"], message["request_id"]) == ("update", "s")


async def test_observer_model_instance_mixin_with_many_subs(live, db):
    async with connect(live, "/ws/dcrf-users/") as ws:
        u1 = await db(create_user, "test1", "42@example.com")
        u2 = await db(create_user, "test2", "45@example.com", same_shard_as=u1.pk)
        for user, rid in ((u1, 4), (u2, 5)):
            assert await ws.ask(
                {"action": "subscribe_instance", "pk": user.pk, "request_id": rid}
            ) == envelope("subscribe_instance", None, 201, rid)

        reply = await ws.ask(
            {"action": "update_username", "pk": u1.pk, "username": "new name", "request_id": 10}
        )
        assert reply == envelope("update_username", {"pk": u1.pk}, 200, 10)
        assert await ws.recv() == envelope(
            "update", {"email": "42@example.com", "id": u1.pk, "username": "new name"}, 200, 4
        )

        reply = await ws.ask(
            {
                "action": "update_username",
                "pk": u2.pk,
                "username": "the new name 2",
                "request_id": 11,
            }
        )
        assert reply == envelope("update_username", {"pk": u2.pk}, 200, 11)
        # Nothing for request_id 4 in between: the next message is request_id 5's.
        assert await ws.recv() == envelope(
            "update", {"email": "45@example.com", "id": u2.pk, "username": "the new name 2"}, 200, 5
        )
