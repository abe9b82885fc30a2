"""Instance subscriptions through daphne: every kind of write reaches the subscriber."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from tasks.models import Project, Task
from tasks.serializers import TaskSerializer

from pgobserve import conf, groups

from .conftest import as_json, connect, envelope

pytestmark = pytest.mark.django_db(transaction=True)


def make_tasks(count: int = 2) -> list[Task]:
    project = Project.objects.create(name="P", slug=f"p-{uuid.uuid4().hex[:8]}")
    return [Task.objects.create(project=project, title=f"task {i}") for i in range(count)]


def with_sentinel() -> tuple[Task, Task]:
    """A task and a sentinel task whose pk is in the same shard group.

    Messages of one group reach a consumer in commit order on every channel layer (across
    groups the Redis layer may reorder), so the sentinel's push proves that nothing the
    earlier commits could have sent is still on its way.
    """
    (task,) = make_tasks(1)
    shard = groups.shard_of(task.pk, conf.shards())
    while True:
        sentinel = Task.objects.create(project=task.project, title="sentinel")
        if groups.shard_of(sentinel.pk, conf.shards()) == shard:
            return task, sentinel


def task_json(pk: int) -> dict:
    return as_json(TaskSerializer(Task.objects.get(pk=pk)).data)


async def subscribe(ws, pk, request_id, **extra) -> None:
    reply = await ws.ask({"action": "subscribe_instance", "pk": pk, "request_id": request_id})
    assert reply == envelope("subscribe_instance", None, 201, request_id)


async def expect_update(ws, db, pk, request_id) -> None:
    assert await ws.recv() == envelope("update", await db(task_json, pk), 200, request_id)


async def assert_nothing_before_sentinel(ws, db, sentinel_pk, sentinel_rid) -> None:
    """Prove no push is pending: change a sentinel row; its push must come next."""
    await db(Task.objects.filter(pk=sentinel_pk).update, title=f"sentinel {uuid.uuid4().hex}")
    await expect_update(ws, db, sentinel_pk, sentinel_rid)


async def test_orm_save_and_delete(live, db):
    t1, sentinel = await db(with_sentinel)
    async with connect(live, "/ws/tasks/") as ws:
        await subscribe(ws, t1.pk, 4)
        await subscribe(ws, sentinel.pk, "s")

        t1.title = "saved by the ORM"
        await db(t1.save)
        await expect_update(ws, db, t1.pk, 4)

        # Saving without a change sends nothing (the serialized data is the same).
        await db(Task.objects.filter(pk=t1.pk).update, title="saved by the ORM")
        await assert_nothing_before_sentinel(ws, db, sentinel.pk, "s")

        pk = t1.pk
        await db(t1.delete)
        assert await ws.recv() == envelope("delete", {"pk": pk}, 204, 4)


async def test_queryset_update_and_bulk_update(live, db):
    t1, t2 = await db(make_tasks)
    async with connect(live, "/ws/tasks/") as ws:
        await subscribe(ws, t1.pk, 1)
        await subscribe(ws, t2.pk, 2)

        await db(Task.objects.filter(pk__in=[t1.pk, t2.pk]).update, done=True)
        got = sorted(await ws.recv_many(2), key=lambda m: m["request_id"])
        assert got == [
            envelope("update", await db(task_json, t1.pk), 200, 1),
            envelope("update", await db(task_json, t2.pk), 200, 2),
        ]
        assert all(m["data"]["done"] for m in got)

        t1.title, t2.title = "bulk one", "bulk two"
        await db(Task.objects.bulk_update, [t1, t2], ["title"])
        got = sorted(await ws.recv_many(2), key=lambda m: m["request_id"])
        assert [m["data"]["title"] for m in got] == ["bulk one", "bulk two"]
        assert got == [
            envelope("update", await db(task_json, t1.pk), 200, 1),
            envelope("update", await db(task_json, t2.pk), 200, 2),
        ]


async def test_psycopg_writer_outside_django(live, db, raw_conn):
    t1, _ = await db(make_tasks)
    async with connect(live, "/ws/tasks/") as ws:
        await subscribe(ws, t1.pk, 7)
        raw_conn.execute("UPDATE tasks_task SET title = 'from psycopg' WHERE id = %s", [t1.pk])
        message = await ws.recv()
        assert message == envelope("update", await db(task_json, t1.pk), 200, 7)
        assert message["data"]["title"] == "from psycopg"

        raw_conn.execute("DELETE FROM tasks_task WHERE id = %s", [t1.pk])
        assert await ws.recv() == envelope("delete", {"pk": t1.pk}, 204, 7)


async def test_truncate(live, db, raw_conn):
    t1, t2 = await db(make_tasks)
    async with connect(live, "/ws/tasks/") as ws:
        await subscribe(ws, t1.pk, 1)
        await subscribe(ws, t2.pk, 2)
        raw_conn.execute("TRUNCATE tasks_task")
        got = sorted(await ws.recv_many(2), key=lambda m: m["request_id"])
        assert got == [
            envelope("delete", {"pk": t1.pk}, 204, 1),
            envelope("delete", {"pk": t2.pk}, 204, 2),
        ]


async def test_row_leaves_and_reenters_the_queryset(live, db):
    t1, sentinel = await db(with_sentinel)
    async with connect(live, "/ws/open-tasks/") as ws:
        await subscribe(ws, t1.pk, 1)
        await subscribe(ws, sentinel.pk, "s")

        await db(Task.objects.filter(pk=t1.pk).update, done=True)
        assert await ws.recv() == envelope("delete", {"pk": t1.pk}, 204, 1)

        # Changed while outside the queryset: the client must not see it, nor a 2nd delete.
        await db(Task.objects.filter(pk=t1.pk).update, title="done and hidden")
        await assert_nothing_before_sentinel(ws, db, sentinel.pk, "s")

        await db(Task.objects.filter(pk=t1.pk).update, done=False)
        message = await ws.recv()
        assert message == envelope("update", await db(task_json, t1.pk), 200, 1)
        assert message["data"]["title"] == "done and hidden"

        # A pk outside the queryset cannot be subscribed to.
        await db(Task.objects.filter(pk=t1.pk).update, done=True)
        assert await ws.recv() == envelope("delete", {"pk": t1.pk}, 204, 1)
        reply = await ws.ask({"action": "subscribe_instance", "pk": t1.pk, "request_id": 9})
        assert reply == envelope("subscribe_instance", None, 404, 9, ["Not found"])


async def test_two_request_ids_then_unsubscribe_one(live, db):
    t1, sentinel = await db(with_sentinel)
    async with connect(live, "/ws/tasks/") as ws:
        await subscribe(ws, t1.pk, 4)
        await subscribe(ws, t1.pk, 5)
        await subscribe(ws, sentinel.pk, "s")

        await db(Task.objects.filter(pk=t1.pk).update, title="both")
        got = sorted(await ws.recv_many(2), key=lambda m: m["request_id"])
        data = await db(task_json, t1.pk)
        assert got == [envelope("update", data, 200, 4), envelope("update", data, 200, 5)]

        reply = await ws.ask({"action": "unsubscribe_instance", "pk": t1.pk, "request_id": 4})
        assert reply == envelope("unsubscribe_instance", None, 204, 4)

        # DCRF silences request_id 5 here; pgobserve keeps it.
        await db(Task.objects.filter(pk=t1.pk).update, title="only five")
        await expect_update(ws, db, t1.pk, 5)
        await assert_nothing_before_sentinel(ws, db, sentinel.pk, "s")

        reply = await ws.ask({"action": "unsubscribe_instance", "pk": t1.pk, "request_id": 5})
        assert reply == envelope("unsubscribe_instance", None, 204, 5)
        await db(Task.objects.filter(pk=t1.pk).update, title="nobody")
        await assert_nothing_before_sentinel(ws, db, sentinel.pk, "s")


async def test_field_hidden_by_the_serializer_sends_nothing(live, db, raw_conn):
    t1, sentinel = await db(with_sentinel)
    async with connect(live, "/ws/tasks/") as ws:
        await subscribe(ws, t1.pk, 1)
        await subscribe(ws, sentinel.pk, "s")
        await db(Task.objects.filter(pk=t1.pk).update, notes="private")
        raw_conn.execute("UPDATE tasks_task SET notes = 'psql private' WHERE id = %s", [t1.pk])
        await assert_nothing_before_sentinel(ws, db, sentinel.pk, "s")


async def test_permission_at_push_time_withholds_the_push(live, db):
    t1, sentinel = await db(with_sentinel)
    async with connect(live, "/ws/guarded-tasks/") as ws:
        await subscribe(ws, t1.pk, 1)
        await subscribe(ws, sentinel.pk, "s")
        await db(Task.objects.filter(pk=t1.pk).update, title="secret plans")
        await assert_nothing_before_sentinel(ws, db, sentinel.pk, "s")
        # Allowed again: the client gets the current data.
        await db(Task.objects.filter(pk=t1.pk).update, title="public plans")
        await expect_update(ws, db, t1.pk, 1)


async def listener_caught_up(live, db) -> None:
    """Return once the listener has sent everything committed before the call: it sends
    batches in commit order, so a push for a later commit proves the earlier ones went
    out (and can no longer reach a consumer that subscribes after this)."""
    (marker,) = await db(make_tasks, 1)
    async with connect(live, "/ws/tasks/") as watcher:
        await subscribe(watcher, marker.pk, "marker")
        await db(Task.objects.filter(pk=marker.pk).update, title="caught up")
        await expect_update(watcher, db, marker.pk, "marker")


async def test_one_read_per_batch_whatever_the_request_ids(live, db):
    tasks = await db(make_tasks, 6)
    await listener_caught_up(live, db)  # the inserts' messages must not count as reads
    async with connect(live, "/ws/guarded-tasks/") as ws:
        for task in tasks:
            await subscribe(ws, task.pk, f"a{task.pk}")
            await subscribe(ws, task.pk, f"b{task.pk}")
        await db(Task.objects.filter(pk__in=[t.pk for t in tasks]).update, done=True)
        got = await ws.recv_many(12)
        assert sorted(m["request_id"] for m in got) == sorted(
            f"{p}{t.pk}" for t in tasks for p in "ab"
        )
        assert {m["action"] for m in got} == {"update"}
        reply = await ws.ask({"action": "push_reads", "request_id": "q"})
        reads = reply["data"]
        # Never a query per row or per request_id: each read is one pk__in query.
        assert set(reads) == {1}
        if live.mode == "inprocess":
            # The batch's shard messages are all queued at once and merged into one read.
            assert reads == [1]
        else:
            # Redis hands them over one by one: at most one read per shard message.
            shards = {groups.shard_of(t.pk, conf.shards()) for t in tasks}
            assert len(reads) <= len(shards)


async def test_shared_reads_one_read_for_all_sockets_and_never_stale(live, db):
    """Sockets of a ``share_reads`` class read a change once between them. The sockets
    that ask within a few loop turns share the read; one that asks after it began reads
    for itself (never data read before it asked), so a loaded machine may add a read: the
    count is bounded well below one read per socket, not exact."""
    (task,) = await db(make_tasks, 1)
    await listener_caught_up(live, db)  # the insert's message must not count as a read
    sockets, changes = 6, ("first", "second")
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(connect(live, "/ws/shared-tasks/"))
            for _ in range(sockets)
        ]
        for ws in clients:
            await subscribe(ws, task.pk, "x")
        ask = clients[0].ask
        before = (await ask({"action": "shared_reads", "request_id": "r"}))["data"]
        for title in changes:
            await db(Task.objects.filter(pk=task.pk).update, title=title)
            expected = envelope("update", await db(task_json, task.pk), 200, "x")
            for ws in clients:  # each socket gets this change, none an older one
                assert await ws.recv() == expected
        reads = (await ask({"action": "shared_reads", "request_id": "r"}))["data"] - before
        asks = (await ask({"action": "shared_asks", "request_id": "r"}))["data"]
        # Unshared, it would be one read per socket and change (12); the asks explain.
        assert len(changes) <= reads <= len(changes) * sockets // 2, asks


def tasks_in_many_shards(count: int) -> list[Task]:
    """Tasks whose pks fall in ``count`` different shard groups."""
    found: dict[int, Task] = {}
    while len(found) < count:
        (task,) = make_tasks(1)
        found.setdefault(groups.shard_of(task.pk, conf.shards()), task)
    return list(found.values())


async def test_rows_in_many_shards_move_to_the_table_group_one_read_per_batch(live, db):
    from pgobserve.instances import WIDE_AT

    tasks = await db(tasks_in_many_shards, WIDE_AT + 4)
    await listener_caught_up(live, db)  # the inserts' messages must not count as reads
    async with connect(live, "/ws/guarded-tasks/") as ws:
        for task in tasks:
            await subscribe(ws, task.pk, task.pk)
        before = len((await ws.ask({"action": "push_reads", "request_id": "q"}))["data"])
        await db(Task.objects.filter(pk__in=[t.pk for t in tasks]).update, done=True)
        got = await ws.recv_many(len(tasks))
        assert sorted(m["request_id"] for m in got) == sorted(t.pk for t in tasks)
        for message in got:
            assert message == envelope("update", await db(task_json, message["request_id"]), 200,
                                       message["request_id"])  # fmt: skip
        reads = (await ws.ask({"action": "push_reads", "request_id": "q"}))["data"][before:]
        # One table-group message, one read, in both modes (Redis included).
        assert reads == [1]
        # Unsubscribing all but one keeps that one live.
        for task in tasks[1:]:
            reply = await ws.ask(
                {"action": "unsubscribe_instance", "pk": task.pk, "request_id": task.pk}
            )
            assert reply["response_status"] == 204
        await db(Task.objects.filter(pk__in=[t.pk for t in tasks]).update, done=False)
        assert await ws.recv() == envelope(
            "update", await db(task_json, tasks[0].pk), 200, tasks[0].pk
        )
