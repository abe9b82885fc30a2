"""Visibility through a related table: a project changing owner moves its tasks between
users' sockets, for query and instance subscriptions, through psql and the ORM, in both
modes (``relations.py``).

``MyTaskConsumer`` shows a user the tasks of the projects they own (and those assigned to
them): no task row changes when a project changes owner, yet the old owner must get a
``delete`` for each of its tasks and the new owner a ``create``, within about a second.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from tasks.models import Project, Task

from .conftest import connect, envelope
from .test_queries import login, make_project, task_json

pytestmark = pytest.mark.django_db(transaction=True)

#: The promise is "within a second"; the wait allows for a loaded CI machine.
WITHIN = 3.0


def key(message: dict) -> str:
    return json.dumps(message, sort_keys=True)


async def expect(ws: Any, expected: list[dict], within: float = WITHIN) -> None:
    """The socket's next messages are exactly ``expected`` (in any order), all within
    ``within`` seconds from now."""
    deadline = time.monotonic() + within
    got: list[dict] = []
    while len(got) < len(expected):
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise AssertionError(f"not within {within}s")
            got.append(await ws.recv(remaining))
        except AssertionError as exc:
            raise AssertionError(f"{exc}: got {got}, expected {expected}") from None
    assert sorted(map(key, got)) == sorted(map(key, expected))


async def subscribed(ws: Any, message: dict) -> dict:
    reply = await ws.ask(message)
    assert reply["response_status"] == 201, reply
    return reply


@pytest.mark.parametrize("writer", ["psql", "orm"])
async def test_a_project_changing_owner_moves_its_tasks(live, db, raw_conn, writer):
    (alice, alice_cookie), (bob, bob_cookie) = await db(login, "alice"), await db(login, "bob")
    project = await db(make_project, alice)
    t1, t2 = [await db(Task.objects.create, project=project, title=f"t{i}") for i in (1, 2)]
    alices_other = await db(Task.objects.create, project=await db(make_project, alice), title="a")
    bobs_own = await db(Task.objects.create, project=await db(make_project, bob), title="b")

    def give(owner: Any) -> None:
        if writer == "psql":  # no Django, no signal: only the triggers see it
            raw_conn.execute(
                "UPDATE tasks_project SET owner_id = %s WHERE id = %s", [owner.pk, project.pk]
            )
        else:
            moved = Project.objects.get(pk=project.pk)
            moved.owner = owner
            moved.save()

    async with (
        connect(live, "/ws/my-tasks/", alice_cookie) as a,
        connect(live, "/ws/my-tasks/", bob_cookie) as b,
    ):
        reply = await subscribed(a, {"action": "subscribe_query", "request_id": "q"})
        assert [row["id"] for row in reply["data"]] == [t1.pk, t2.pk, alices_other.pk]
        await subscribed(a, {"action": "subscribe_instance", "pk": t1.pk, "request_id": "i"})
        reply = await subscribed(b, {"action": "subscribe_query", "request_id": "q"})
        assert [row["id"] for row in reply["data"]] == [bobs_own.pk]
        # Bob cannot subscribe to a task he does not see (yet).
        reply = await b.ask({"action": "subscribe_instance", "pk": t1.pk, "request_id": "i"})
        assert reply["response_status"] == 404

        await db(give, bob)
        await expect(
            a,
            [
                envelope("delete", {"pk": t1.pk}, 204, "q"),
                envelope("delete", {"pk": t2.pk}, 204, "q"),
                envelope("delete", {"pk": t1.pk}, 204, "i"),
            ],
        )
        t1_data, t2_data = await db(task_json, t1.pk), await db(task_json, t2.pk)
        await expect(
            b, [envelope("create", t1_data, 201, "q"), envelope("create", t2_data, 201, "q")]
        )
        await subscribed(b, {"action": "subscribe_instance", "pk": t1.pk, "request_id": "i"})

        await db(give, alice)  # and back
        await expect(
            a,
            [
                envelope("create", t1_data, 201, "q"),
                envelope("create", t2_data, 201, "q"),
                envelope("update", t1_data, 200, "i"),  # visible again: DCRF's update
            ],
        )
        await expect(
            b,
            [
                envelope("delete", {"pk": t1.pk}, 204, "q"),
                envelope("delete", {"pk": t2.pk}, 204, "q"),
                envelope("delete", {"pk": t1.pk}, 204, "i"),
            ],
        )

        # Nothing else was on its way: each socket's next message is a change of its own.
        await db(Task.objects.filter(pk__in=[alices_other.pk, bobs_own.pk]).update, title="x")
        assert await a.recv() == envelope("update", await db(task_json, alices_other.pk), 200, "q")
        assert await b.recv() == envelope("update", await db(task_json, bobs_own.pk), 200, "q")


async def test_a_project_change_that_moves_nothing_pushes_nothing(live, db, raw_conn):
    """A joined table's change re-checks what is watched, and only what differs is sent."""
    alice, cookie = await db(login, "carol")
    project = await db(make_project, alice)
    task = await db(Task.objects.create, project=project, title="stays")
    async with connect(live, "/ws/my-tasks/", cookie) as ws:
        await subscribed(ws, {"action": "subscribe_query", "request_id": "q"})
        await subscribed(ws, {"action": "subscribe_instance", "pk": task.pk, "request_id": "i"})
        raw_conn.execute("UPDATE tasks_project SET name = 'renamed' WHERE id = %s", [project.pk])
        await db(Project.objects.create, name="another", slug="another", owner=alice)
        await db(Task.objects.filter(pk=task.pk).update, title="changed")
        data = await db(task_json, task.pk)
        await expect(ws, [envelope("update", data, 200, "q"), envelope("update", data, 200, "i")])
