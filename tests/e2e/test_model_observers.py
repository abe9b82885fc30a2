"""Model observers fed by the triggers, through real processes, in both modes.

``ProjectTasksConsumer`` routes its ``@model_observer(Task)`` per project, as DCRF's
README does. Its events are computed from the rows as they were (kept by the triggers)
and as they are, and serialized, in the process that listens (daphne's in-process
listener, or ``manage.py pgobserve listen``, which knows the observers by importing
``ASGI_APPLICATION``). Every write below is one that Django's signals never see, or one
they see wrongly: ``update()``, raw SQL from another connection, TRUNCATE, a row moving
between projects. A message that must not come is disproved by the next one expected on
the same socket (a sentinel write in the same group), never by waiting. Rows are written
after the sockets subscribe and their creates are expected: the event of a write committed
before a subscribe may still arrive after it (the feed is asynchronous).
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.db import transaction
from tasks.models import Project, Task

from .conftest import TIMEOUT, connect, envelope
from .test_queries import insert_sql, make_project, task_json
from .test_related import expect

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/project-tasks/"


async def subscribe(ws: Any, project: Project, request_id: str) -> None:
    reply = await ws.ask(
        {"action": "subscribe_project", "project": project.pk, "request_id": request_id}
    )
    assert reply == envelope("subscribe_project", None, 201, request_id)


async def receive(ws: Any, expected: list[dict]) -> None:
    """The socket's next messages are exactly ``expected``, in any order."""
    await expect(ws, expected, within=TIMEOUT)


def event(action: str, data: dict, request_id: str) -> dict:
    """An observer event as ``ProjectTasksConsumer`` replies it (DCRF's ``reply``: 200)."""
    return envelope(action, data, 200, request_id)


async def test_orm_create_update_and_unsubscribe(live, db):
    p, q, r = await db(make_project), await db(make_project), await db(make_project)
    async with connect(live, PATH) as ws:
        await subscribe(ws, p, "p")
        task = await db(Task.objects.create, project=p, title="created")
        await receive(ws, [event("create", await db(task_json, task.pk), "p")])

        await db(Task.objects.create, project=q, title="elsewhere")  # not subscribed
        await db(Task.objects.filter(pk=task.pk).update, title="updated", done=True)
        await receive(ws, [event("update", await db(task_json, task.pk), "p")])

        reply = await ws.ask({"action": "unsubscribe_project", "project": p.pk, "request_id": "p"})
        assert reply == envelope("unsubscribe_project", None, 204, "p")
        await subscribe(ws, r, "r")
        await db(Task.objects.filter(pk=task.pk).update, title="unseen")
        sentinel = await db(Task.objects.create, project=r, title="sentinel")
        await receive(ws, [event("create", await db(task_json, sentinel.pk), "r")])


async def test_a_bulk_update_moving_a_task_deletes_and_creates(live, db):
    a_project, b_project = await db(make_project), await db(make_project)
    async with (
        connect(live, PATH) as a,
        connect(live, PATH) as b,
        connect(live, PATH) as both,
    ):
        await subscribe(a, a_project, "a")
        await subscribe(b, b_project, "b")
        await subscribe(both, a_project, "both-a")
        await subscribe(both, b_project, "both-b")
        task = await db(Task.objects.create, project=a_project, title="moves")
        created = await db(task_json, task.pk)
        await receive(a, [event("create", created, "a")])
        await receive(both, [event("create", created, "both-a")])

        await db(Task.objects.filter(pk=task.pk).update, project=b_project)
        moved = await db(task_json, task.pk)  # the row as it is now, also in the delete
        await receive(a, [event("delete", moved, "a")])
        await receive(b, [event("create", moved, "b")])
        await receive(both, [event("delete", moved, "both-a"), event("create", moved, "both-b")])

        # Nothing else was on its way: the next message of each group is a new task's.
        in_a = await db(Task.objects.create, project=a_project, title="sentinel a")
        in_b = await db(Task.objects.create, project=b_project, title="sentinel b")
        in_a, in_b = await db(task_json, in_a.pk), await db(task_json, in_b.pk)
        await receive(a, [event("create", in_a, "a")])
        await receive(b, [event("create", in_b, "b")])
        await receive(both, [event("create", in_a, "both-a"), event("create", in_b, "both-b")])


async def test_one_transaction_is_judged_by_where_its_rows_were_and_are(live, db):
    """Groups before the transaction against groups after it, as the feed sees commits."""
    a_project, b_project = await db(make_project), await db(make_project)

    def write(stays: Task) -> int:
        with transaction.atomic():
            born_in_a = Task.objects.create(project=a_project, title="born in a")
            Task.objects.filter(pk=born_in_a.pk).update(project=b_project)  # ends in b
            Task.objects.filter(pk=stays.pk).update(project=b_project)
            Task.objects.filter(pk=stays.pk).update(project=a_project, title="back")
            gone = Task.objects.create(project=a_project, title="gone")
            gone.delete()  # created and deleted: never existed for anyone
        return born_in_a.pk

    async with connect(live, PATH) as a, connect(live, PATH) as b:
        await subscribe(a, a_project, "a")
        await subscribe(b, b_project, "b")
        stays = await db(Task.objects.create, project=a_project, title="stays")
        await receive(a, [event("create", await db(task_json, stays.pk), "a")])
        born_pk = await db(write, stays)
        await receive(a, [event("update", await db(task_json, stays.pk), "a")])
        await receive(b, [event("create", await db(task_json, born_pk), "b")])

        in_a = await db(Task.objects.create, project=a_project, title="sentinel a")
        in_b = await db(Task.objects.create, project=b_project, title="sentinel b")
        await receive(a, [event("create", await db(task_json, in_a.pk), "a")])
        await receive(b, [event("create", await db(task_json, in_b.pk), "b")])


async def test_psql_update_and_delete(live, db, raw_conn: psycopg.Connection):
    p = await db(make_project)
    async with connect(live, PATH) as ws:
        await subscribe(ws, p, "p")
        pk = insert_sql(raw_conn, p.pk, "from psql", False)
        await receive(ws, [event("create", await db(task_json, pk), "p")])

        raw_conn.execute("UPDATE tasks_task SET title = 'renamed', done = true WHERE id = %s", [pk])
        before_delete = await db(task_json, pk)
        await receive(ws, [event("update", before_delete, "p")])

        raw_conn.execute("DELETE FROM tasks_task WHERE id = %s", [pk])
        await receive(ws, [event("delete", before_delete, "p")])  # the row as it was

        sentinel = insert_sql(raw_conn, p.pk, "sentinel", False)
        await receive(ws, [event("create", await db(task_json, sentinel), "p")])


async def test_truncate_deletes_each_row_with_its_old_data(live, db, raw_conn):
    p, q = await db(make_project), await db(make_project)
    async with connect(live, PATH) as ws_p, connect(live, PATH) as ws_q:
        await subscribe(ws_p, p, "p")
        await subscribe(ws_q, q, "q")
        in_p = [await db(Task.objects.create, project=p, title=f"p{i}") for i in (1, 2)]
        in_q = await db(Task.objects.create, project=q, title="q1")
        was = {task.pk: await db(task_json, task.pk) for task in [*in_p, in_q]}
        await receive(ws_p, [event("create", was[task.pk], "p") for task in in_p])
        await receive(ws_q, [event("create", was[in_q.pk], "q")])

        raw_conn.execute("TRUNCATE tasks_task")
        await receive(ws_p, [event("delete", was[task.pk], "p") for task in in_p])
        await receive(ws_q, [event("delete", was[in_q.pk], "q")])

        sentinel_p = insert_sql(raw_conn, p.pk, "after truncate", False)
        sentinel_q = insert_sql(raw_conn, q.pk, "after truncate", True)
        await receive(ws_p, [event("create", await db(task_json, sentinel_p), "p")])
        await receive(ws_q, [event("create", await db(task_json, sentinel_q), "q")])


async def test_two_consumers_get_the_same_serialized_event(live, db, raw_conn):
    """Two sockets of two consumer classes sharing the observer, one of them subscribed
    twice: each change is one body, the same for every request id on every socket."""
    p = await db(make_project)
    async with connect(live, PATH) as x, connect(live, "/ws/other-project-tasks/") as y:
        await subscribe(x, p, "x1")
        await subscribe(x, p, "x2")
        await subscribe(y, p, "y")
        tasks = [await db(Task.objects.create, project=p, title=f"t{i}") for i in (1, 2)]
        new = {task.pk: await db(task_json, task.pk) for task in tasks}
        await receive(x, [event("create", new[t.pk], rid) for t in tasks for rid in ("x1", "x2")])
        await receive(y, [event("create", new[t.pk], "y") for t in tasks])

        raw_conn.execute("UPDATE tasks_task SET done = true WHERE project_id = %s", [p.pk])
        now = {task.pk: await db(task_json, task.pk) for task in tasks}
        await receive(x, [event("update", now[t.pk], rid) for t in tasks for rid in ("x1", "x2")])
        await receive(y, [event("update", now[t.pk], "y") for t in tasks])
