"""What DCRF's signal-based ``@model_observer`` cannot do, on pgobserve's trigger feed.

DCRF's model observer hears Django's ``post_save``/``post_delete``/``m2m_changed`` in the
process that writes, so it misses ``queryset.update()``, ``bulk_create``, raw SQL, other
processes and TRUNCATE, and it learns a row's old groups only from a ``pre_save`` re-read.
Here the same DCRF API is fed by the triggers (through a real listener on the test's loop,
``observer_listener``): each test writes in one of those ways and asserts the exact events
each subscriber gets (action, body, subscribing request id, so which group).

An absence is proven by order, never by a timeout: after the expected events arrive, the
test commits a sentinel change whose event must be the next message on that socket (the
feed sends a batch's events completely before the next batch's, and the sentinel is
committed after the earlier batch was taken).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group, User
from rest_framework import serializers
from tasks.models import Project, Task

from pgobserve import sql
from pgobserve.consumers import AsyncAPIConsumer
from pgobserve.decorators import action
from pgobserve.observer import feed as feed_module
from pgobserve.observer import model_observer
from pgobserve.observer.feed import ObserverFeed
from tests.dcrf_support import UserSerializer, ask, connected_communicator

pytestmark = pytest.mark.django_db(transaction=True)

#: Every receive waits at most this long.
RECEIVE_TIMEOUT = 10.0


class TaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = Task
        fields = ("id", "project", "title", "done", "assignee")


class UserGroupsSerializer(serializers.ModelSerializer):
    groups = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ("id", "username", "groups")

    def get_groups(self, user: User) -> list[int]:
        return sorted(user.groups.values_list("pk", flat=True))


async def forward(consumer: Any, message: dict, action: str, request_ids: list) -> None:
    """One frame per subscribing request id: the request id tells which group it came by."""
    for request_id in sorted(request_ids):
        await consumer.send_json({"action": action, "request_id": request_id, "data": message})


class TaskConsumer(AsyncAPIConsumer):
    """Tasks routed as a DCRF user would: a group per project and one per assignee."""

    @action()
    async def watch(self, request_id, project=None, assignee=None, **kwargs):
        await self.task_changes.subscribe(project=project, assignee=assignee, request_id=request_id)
        return {}, 201

    @model_observer(Task, serializer_class=TaskSerializer)
    async def task_changes(self, message, action, subscribing_request_ids, **kwargs):
        await forward(self, message, action, subscribing_request_ids)

    @task_changes.groups_for_signal
    def task_changes(self, instance, **kwargs):
        yield f"project-{instance.project_id}"
        if instance.assignee_id is not None:
            yield f"assignee-{instance.assignee_id}"

    @task_changes.groups_for_consumer
    def task_changes(self, project=None, assignee=None, **kwargs):
        if project is not None:
            yield f"project-{project}"
        if assignee is not None:
            yield f"assignee-{assignee}"


class FlakyTaskConsumer(AsyncAPIConsumer):
    """Tasks by project, through a serializer that fails on tasks titled "boom"."""

    @action()
    async def watch(self, request_id, project, **kwargs):
        await self.flaky_task_changes.subscribe(project=project, request_id=request_id)
        return {}, 201

    @model_observer(Task)
    async def flaky_task_changes(self, message, action, subscribing_request_ids, **kwargs):
        await forward(self, message, action, subscribing_request_ids)

    @flaky_task_changes.serializer
    def flaky_task_changes(self, instance, action, **kwargs):
        if instance.title == "boom":
            raise RuntimeError("the serializer of this observer fails on purpose")
        return TaskSerializer(instance).data

    @flaky_task_changes.groups
    def flaky_task_changes(self, instance=None, project=None, **kwargs):
        yield f"project-{instance.project_id if instance is not None else project}"


class UserConsumer(AsyncAPIConsumer):
    """Users by username, and every user with its group memberships (``many_to_many``)."""

    @action()
    async def watch_name(self, request_id, username, **kwargs):
        await self.user_by_name.subscribe(username=username, request_id=request_id)
        return {}, 201

    @action()
    async def watch_memberships(self, request_id, **kwargs):
        await self.user_memberships.subscribe(request_id=request_id)
        return {}, 201

    @model_observer(User, serializer_class=UserSerializer)
    async def user_by_name(self, message, action, subscribing_request_ids, **kwargs):
        await forward(self, message, action, subscribing_request_ids)

    @user_by_name.groups_for_signal
    def user_by_name(self, instance, **kwargs):
        yield f"name-{instance.username}"

    @user_by_name.groups_for_consumer
    def user_by_name(self, username, **kwargs):
        yield f"name-{username}"

    @model_observer(User, serializer_class=UserGroupsSerializer, many_to_many=True)
    async def user_memberships(self, message, action, subscribing_request_ids, **kwargs):
        await forward(self, message, action, subscribing_request_ids)


# helpers -------------------------------------------------------------------------------------


@database_sync_to_async
def orm(work, *args, **kwargs):
    """Run an ORM call in Django's thread; its writes commit (autocommit)."""
    return work(*args, **kwargs)


@database_sync_to_async
def task_data(*pks: int) -> dict[int, dict]:
    """pk → the task as TaskSerializer shows it now."""
    return {task.pk: TaskSerializer(task).data for task in Task.objects.filter(pk__in=pks)}


async def subscriber(stack: AsyncExitStack, consumer: type, **watch: Any) -> WebsocketCommunicator:
    """A connected socket that has subscribed with ``watch`` (its action and arguments)."""
    communicator = await stack.enter_async_context(connected_communicator(consumer()))
    reply = await ask(communicator, watch)
    assert reply["response_status"] == 201, reply
    return communicator


async def receive(communicator: WebsocketCommunicator, count: int) -> list[dict]:
    """The next ``count`` frames, sorted (events of different groups may interleave)."""
    frames = [await communicator.receive_json_from(RECEIVE_TIMEOUT) for _ in range(count)]
    return sorted(frames, key=lambda f: (f["request_id"], f["action"], f["data"]["id"]))


def event(action_name: str, request_id: int, data: dict) -> dict:
    return {"action": action_name, "request_id": request_id, "data": data}


async def next_is_sentinel_task(
    communicator: WebsocketCommunicator, request_id: int, **fields: Any
) -> None:
    """Create a task (``fields``: its project, assignee); its ``create`` must be the next
    frame, so nothing else was sent to this socket by the changes before it."""
    task = await orm(Task.objects.create, title="sentinel", **fields)
    (data,) = (await task_data(task.pk)).values()
    assert await receive(communicator, 1) == [event("create", request_id, data)]


@pytest.fixture
async def world(observer_listener):
    """Two users, three projects, tasks in them; their own events are sent before the
    test's sockets subscribe (``settle``)."""
    ann = await orm(User.objects.create, username="ann", email="ann@example.com")
    bob = await orm(User.objects.create, username="bob", email="bob@example.com")
    projects = [
        await orm(Project.objects.create, name=name, slug=name, owner=ann)
        for name in ("alpha", "beta", "gamma")
    ]
    alpha, beta, _ = projects
    tasks = await orm(
        Task.objects.bulk_create,
        [
            Task(project=alpha, title="a1", assignee=ann),
            Task(project=alpha, title="a2"),
            Task(project=alpha, title="a3", assignee=bob),
            Task(project=beta, title="b1", assignee=ann),
        ],
    )
    await observer_listener.settle()
    return {"users": (ann, bob), "projects": projects, "tasks": tasks}


# queryset.update(), bulk_create -----------------------------------------------------------


async def test_queryset_update_sends_one_update_per_row_to_its_groups(world):
    alpha, beta, gamma = world["projects"]
    a1, a2, a3, b1 = world["tasks"]
    async with AsyncExitStack() as stack:
        on_alpha = await subscriber(
            stack, TaskConsumer, action="watch", project=alpha.pk, request_id=1
        )
        on_beta = await subscriber(
            stack, TaskConsumer, action="watch", project=beta.pk, request_id=2
        )

        await orm(Task.objects.filter(project__in=[alpha, beta]).update, done=True)

        now = await task_data(a1.pk, a2.pk, a3.pk, b1.pk)
        assert all(data["done"] for data in now.values())
        assert await receive(on_alpha, 3) == [
            event("update", 1, now[a1.pk]),
            event("update", 1, now[a2.pk]),
            event("update", 1, now[a3.pk]),
        ]
        assert await receive(on_beta, 1) == [event("update", 2, now[b1.pk])]
        await next_is_sentinel_task(on_alpha, 1, project=alpha)
        await next_is_sentinel_task(on_beta, 2, project=beta)


async def test_rows_an_update_left_as_they_were_send_nothing(world, raw_conn):
    """The trigger keeps the old rows of every row an UPDATE touched, but names only those
    that changed: the unchanged ones must not become ``update`` events."""
    alpha = world["projects"][0]
    a1, a2, a3, _ = world["tasks"]
    async with AsyncExitStack() as stack:
        on_alpha = await subscriber(
            stack, TaskConsumer, action="watch", project=alpha.pk, request_id=1
        )
        # Three rows matched, one changed (the others already had title 'a2'/'a3').
        raw_conn.execute(
            "UPDATE tasks_task SET title = CASE WHEN id = %s THEN 'a1 again' ELSE title END"
            " WHERE project_id = %s",
            [a1.pk, alpha.pk],
        )
        now = await task_data(a1.pk)
        assert await receive(on_alpha, 1) == [event("update", 1, now[a1.pk])]
        await next_is_sentinel_task(on_alpha, 1, project=alpha)


async def test_bulk_create_sends_create_per_row(world):
    alpha, beta, gamma = world["projects"]
    async with AsyncExitStack() as stack:
        on_alpha = await subscriber(
            stack, TaskConsumer, action="watch", project=alpha.pk, request_id=1
        )
        on_beta = await subscriber(
            stack, TaskConsumer, action="watch", project=beta.pk, request_id=2
        )

        made = await orm(
            Task.objects.bulk_create,
            [
                Task(project=alpha, title="new a"),
                Task(project=beta, title="new b"),
                Task(project=alpha, title="new a again"),
                Task(project=gamma, title="new g"),
            ],
        )

        now = await task_data(*(task.pk for task in made))
        new_a, new_b, new_a_again, _ = made
        assert await receive(on_alpha, 2) == [
            event("create", 1, now[new_a.pk]),
            event("create", 1, now[new_a_again.pk]),
        ]
        assert await receive(on_beta, 1) == [event("create", 2, now[new_b.pk])]
        await next_is_sentinel_task(on_alpha, 1, project=alpha)
        await next_is_sentinel_task(on_beta, 2, project=beta)


# raw SQL, TRUNCATE ------------------------------------------------------------------------


async def test_raw_sql_from_another_connection_creates_updates_deletes(world, raw_conn):
    alpha, _, _ = world["projects"]
    async with AsyncExitStack() as stack:
        on_alpha = await subscriber(
            stack, TaskConsumer, action="watch", project=alpha.pk, request_id=1
        )

        (pk,) = raw_conn.execute(
            "INSERT INTO tasks_task (project_id, title, done, notes, updated_at)"
            " VALUES (%s, 'raw', false, '', now()) RETURNING id",
            [alpha.pk],
        ).fetchone()
        created = {"id": pk, "project": alpha.pk, "title": "raw", "done": False, "assignee": None}
        assert await receive(on_alpha, 1) == [event("create", 1, created)]

        raw_conn.execute("UPDATE tasks_task SET title = 'raw, renamed' WHERE id = %s", [pk])
        updated = {**created, "title": "raw, renamed"}
        assert await receive(on_alpha, 1) == [event("update", 1, updated)]

        raw_conn.execute("DELETE FROM tasks_task WHERE id = %s", [pk])
        assert await receive(on_alpha, 1) == [event("delete", 1, updated)]

        await next_is_sentinel_task(on_alpha, 1, project=alpha)


async def test_truncate_sends_delete_of_every_row_as_it_was(world, raw_conn):
    alpha, beta, _ = world["projects"]
    ann, _ = world["users"]
    a1, a2, a3, b1 = world["tasks"]
    before = await task_data(a1.pk, a2.pk, a3.pk, b1.pk)
    async with AsyncExitStack() as stack:
        on_alpha = await subscriber(
            stack, TaskConsumer, action="watch", project=alpha.pk, request_id=1
        )
        on_beta = await subscriber(
            stack, TaskConsumer, action="watch", project=beta.pk, request_id=2
        )
        on_ann = await subscriber(
            stack, TaskConsumer, action="watch", assignee=ann.pk, request_id=3
        )

        raw_conn.execute("TRUNCATE tasks_task")

        assert await receive(on_alpha, 3) == [
            event("delete", 1, before[a1.pk]),
            event("delete", 1, before[a2.pk]),
            event("delete", 1, before[a3.pk]),
        ]
        assert await receive(on_beta, 1) == [event("delete", 2, before[b1.pk])]
        assert await receive(on_ann, 2) == [
            event("delete", 3, before[a1.pk]),
            event("delete", 3, before[b1.pk]),
        ]
        await next_is_sentinel_task(on_alpha, 1, project=alpha)
        await next_is_sentinel_task(on_beta, 2, project=beta)
        await next_is_sentinel_task(on_ann, 3, project=alpha, assignee=ann)


# groups left, stayed in, joined -----------------------------------------------------------


async def test_bulk_update_moving_rows_between_groups(world):
    """delete to the group a row left, create to the one it joined, update to the one it
    stayed in; every body is the row as it is now (DCRF's rule, a delete included)."""
    alpha, beta, gamma = world["projects"]
    ann, bob = world["users"]
    a1, a2, a3, b1 = world["tasks"]
    async with AsyncExitStack() as stack:
        on_alpha = await subscriber(
            stack, TaskConsumer, action="watch", project=alpha.pk, request_id=1
        )
        on_beta = await subscriber(
            stack, TaskConsumer, action="watch", project=beta.pk, request_id=2
        )
        on_ann = await subscriber(
            stack, TaskConsumer, action="watch", assignee=ann.pk, request_id=3
        )

        await orm(Task.objects.filter(pk__in=[a1.pk, a2.pk]).update, project=beta)

        now = await task_data(a1.pk, a2.pk)
        assert now[a1.pk]["project"] == now[a2.pk]["project"] == beta.pk
        assert await receive(on_alpha, 2) == [
            event("delete", 1, now[a1.pk]),
            event("delete", 1, now[a2.pk]),
        ]
        assert await receive(on_beta, 2) == [
            event("create", 2, now[a1.pk]),
            event("create", 2, now[a2.pk]),
        ]
        assert await receive(on_ann, 1) == [event("update", 3, now[a1.pk])]
        await next_is_sentinel_task(on_alpha, 1, project=alpha)
        await next_is_sentinel_task(on_beta, 2, project=beta)
        await next_is_sentinel_task(on_ann, 3, project=gamma, assignee=ann)


async def test_groups_for_signal_sees_the_old_row_of_a_renamed_user(world):
    """A username-routed group: the rename (a queryset update, no pre_save to re-read
    the old name) sends delete to the old name's group and create to the new one's."""
    ann, _ = world["users"]
    async with AsyncExitStack() as stack:
        names = await subscriber(
            stack, UserConsumer, action="watch_name", username="ann", request_id=1
        )
        assert (await ask(names, {"action": "watch_name", "username": "anne", "request_id": 2}))[
            "response_status"
        ] == 201

        await orm(User.objects.filter(pk=ann.pk).update, username="anne")

        renamed = {"id": ann.pk, "username": "anne", "email": "ann@example.com"}
        assert await receive(names, 2) == [event("delete", 1, renamed), event("create", 2, renamed)]

        # Sentinel: a new "ann" joins the old name's group; its create comes next.
        newcomer = await orm(User.objects.create, username="ann", email="new@example.com")
        assert await receive(names, 1) == [
            event("create", 1, {"id": newcomer.pk, "username": "ann", "email": "new@example.com"})
        ]


# many-to-many ------------------------------------------------------------------------------


async def test_many_to_many_changes_are_updates_of_the_user(world, raw_conn):
    """``many_to_many=True``: add, remove, clear (either side) and raw SQL on the through
    table are an ``update`` of each user whose links changed, as DCRF's m2m_changed."""
    ann, bob = world["users"]
    staff = await orm(Group.objects.create, name="staff")
    ops = await orm(Group.objects.create, name="ops")

    def shown(user: User, *groups: Group) -> dict:
        return {"id": user.pk, "username": user.username, "groups": sorted(g.pk for g in groups)}

    async with AsyncExitStack() as stack:
        users = await subscriber(stack, UserConsumer, action="watch_memberships", request_id=7)

        await orm(ann.groups.add, staff, ops)
        assert await receive(users, 1) == [event("update", 7, shown(ann, staff, ops))]

        await orm(ann.groups.remove, staff)
        assert await receive(users, 1) == [event("update", 7, shown(ann, ops))]

        await orm(ann.groups.clear)
        assert await receive(users, 1) == [event("update", 7, shown(ann))]

        await orm(staff.user_set.add, bob)  # the reverse side: the same through table
        assert await receive(users, 1) == [event("update", 7, shown(bob, staff))]

        raw_conn.execute(
            "INSERT INTO auth_user_groups (user_id, group_id) VALUES (%s, %s)", [ann.pk, ops.pk]
        )
        assert await receive(users, 1) == [event("update", 7, shown(ann, ops))]

        # A link moved from ann to bob: both users changed.
        raw_conn.execute(
            "UPDATE auth_user_groups SET user_id = %s WHERE user_id = %s", [bob.pk, ann.pk]
        )
        assert await receive(users, 2) == [
            event("update", 7, shown(ann)),
            event("update", 7, shown(bob, staff, ops)),
        ]

        raw_conn.execute("DELETE FROM auth_user_groups WHERE user_id = %s", [bob.pk])
        assert await receive(users, 1) == [event("update", 7, shown(bob))]

        # Sentinel: a change of the user row itself comes next.
        await orm(User.objects.filter(pk=ann.pk).update, username="ann2")
        ann.username = "ann2"
        assert await receive(users, 1) == [event("update", 7, shown(ann))]


# failures, cleanup -----------------------------------------------------------------------


async def test_a_failing_serializer_skips_only_its_own_observer(world, observer_listener):
    alpha, _, _ = world["projects"]
    failed_before = observer_listener.feed.stats["failed"]
    async with AsyncExitStack() as stack:
        steady = await subscriber(
            stack, TaskConsumer, action="watch", project=alpha.pk, request_id=1
        )
        flaky = await subscriber(
            stack, FlakyTaskConsumer, action="watch", project=alpha.pk, request_id=2
        )

        boom, fine = await orm(
            Task.objects.bulk_create,
            [Task(project=alpha, title="boom"), Task(project=alpha, title="fine")],
        )

        now = await task_data(boom.pk, fine.pk)
        assert await receive(steady, 2) == [
            event("create", 1, now[boom.pk]),
            event("create", 1, now[fine.pk]),
        ]
        assert observer_listener.feed.stats["failed"] == failed_before + 1

        # The next change works for both; for the flaky observer it is the next frame, so
        # none of the failed batch's events was sent.
        await orm(Task.objects.filter(pk=fine.pk).update, title="fine again")
        (data,) = (await task_data(fine.pk)).values()
        assert await receive(steady, 1) == [event("update", 1, data)]
        assert await receive(flaky, 1) == [event("update", 2, data)]


async def test_old_rows_stay_for_other_listeners_then_are_swept(
    world, raw_conn, observer_listener, monkeypatch
):
    alpha, _, _ = world["projects"]
    a1, a2, a3, _ = world["tasks"]
    before = await task_data(a3.pk)
    table = sql.quote_ident(sql.OLD_ROWS)
    xids = []
    async with AsyncExitStack() as stack:
        on_alpha = await subscriber(
            stack, TaskConsumer, action="watch", project=alpha.pk, request_id=1
        )

        for statement, params, kept in (
            ("UPDATE tasks_task SET done = true WHERE id = ANY(%s)", [[a1.pk, a2.pk]], 2),
            ("DELETE FROM tasks_task WHERE id = %s", [a3.pk], 1),
        ):
            with raw_conn.transaction():
                raw_conn.execute(statement, params)
                xid, count = raw_conn.execute(
                    f"SELECT pg_current_xact_id()::text, count(*) FROM {table}"
                    " WHERE xid = pg_current_xact_id()"
                ).fetchone()
            assert count == kept  # the trigger kept them: the check below means something
            xids.append(xid)

        now = await task_data(a1.pk, a2.pk)
        assert await receive(on_alpha, 3) == [
            event("delete", 1, before[a3.pk]),
            event("update", 1, now[a1.pk]),
            event("update", 1, now[a2.pk]),
        ]
        await observer_listener.idle()  # the batch is handled
        count = f"SELECT count(*) FROM {table} WHERE xid::text = ANY(%s)"
        # Read, not deleted: another listener on the database may still need them.
        assert raw_conn.execute(count, [xids]).fetchone() == (3,)
        # The sweep deletes them once they are older than KEEP_OLD_ROWS (here: at once).
        monkeypatch.setattr(feed_module, "KEEP_OLD_ROWS", 0.0)
        await database_sync_to_async(observer_listener.feed.sweep)()
        assert raw_conn.execute(count, [xids]).fetchone() == (0,)
        await next_is_sentinel_task(on_alpha, 1, project=alpha)


async def test_a_transaction_split_across_batches_keeps_its_other_tables_old_rows(
    transactional_db, notifications, raw_conn
):
    """The listener may hand one transaction's notifications to the feed in two batches
    (they span socket reads): the old rows of the tables of the second batch must still be
    there when it comes. No listener runs here: the test hands the feed the transaction's
    real notifications, one table per batch."""
    ann = await orm(User.objects.create, username="ann", email="ann@example.com")
    alpha, beta = [
        await orm(Project.objects.create, name=name, slug=name) for name in ("alpha", "beta")
    ]
    task = await orm(Task.objects.create, project=alpha, title="moving")
    feed = ObserverFeed(get_channel_layer())
    try:
        async with AsyncExitStack() as stack:
            on_alpha = await subscriber(
                stack, TaskConsumer, action="watch", project=alpha.pk, request_id=1
            )
            on_beta = await subscriber(
                stack, TaskConsumer, action="watch", project=beta.pk, request_id=2
            )
            notifications.drain()  # the setup's

            with raw_conn.transaction():
                raw_conn.execute("UPDATE auth_user SET username = 'anne' WHERE id = %s", [ann.pk])
                raw_conn.execute(
                    "UPDATE tasks_task SET project_id = %s WHERE id = %s", [beta.pk, task.pk]
                )
            changes = notifications.drain()
            assert [c.table for c in changes] == ["auth_user", "tasks_task"]
            assert changes[0].xid == changes[1].xid
            for change in changes:
                feed.submit([change])
                await asyncio.wait_for(feed.idle.wait(), RECEIVE_TIMEOUT)

            (moved,) = (await task_data(task.pk)).values()
            assert await receive(on_alpha, 1) == [event("delete", 1, moved)]
            assert await receive(on_beta, 1) == [event("create", 2, moved)]

            # Sentinels: the next frame of each socket is its project's new task.
            sentinels = await orm(
                Task.objects.bulk_create,
                [Task(project=alpha, title="sentinel"), Task(project=beta, title="sentinel")],
            )
            feed.submit(notifications.drain())
            data = await task_data(*(t.pk for t in sentinels))
            assert await receive(on_alpha, 1) == [event("create", 1, data[sentinels[0].pk])]
            assert await receive(on_beta, 1) == [event("create", 2, data[sentinels[1].pk])]
    finally:
        await feed.close()
