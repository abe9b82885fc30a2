"""The envelope and its errors, authentication, lookup_field: exact messages over daphne."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.test import Client as HttpClient
from tasks.models import Project, Task

from .conftest import connect, envelope

pytestmark = pytest.mark.django_db(transaction=True)


def make_task() -> Task:
    project = Project.objects.create(name="P", slug=f"p-{uuid.uuid4().hex[:8]}")
    return Task.objects.create(project=project, title="t")


async def test_malformed_input_gets_400_and_the_socket_stays_open(live, db):
    task = await db(make_task)
    async with connect(live, "/ws/tasks/") as ws:
        cases = [
            ("{not json", envelope(None, None, 400, None, ["Invalid JSON."])),
            ("[1, 2]", envelope(None, None, 400, None, ["Expected a JSON object."])),
            ('"subscribe"', envelope(None, None, 400, None, ["Expected a JSON object."])),
            (
                {"request_id": 1},
                envelope(None, None, 405, 1, ["Unable to find action in message body."]),
            ),
            (
                {"action": "nope", "request_id": 2},
                envelope("nope", None, 405, 2, ['Method "nope" not allowed.']),
            ),
            (
                {"action": ["list"], "request_id": 3},
                envelope(None, None, 400, 3, [{"action": ["Not a valid string."]}]),
            ),
            (
                {"action": "subscribe_instance", "request_id": 4},
                envelope("subscribe_instance", None, 400, 4, [{"pk": ["This field is required."]}]),
            ),
            (
                {"action": "subscribe_instance", "pk": task.pk},
                envelope(
                    "subscribe_instance",
                    None,
                    400,
                    None,
                    [{"request_id": ["This field is required."]}],
                ),
            ),
            (
                {"action": "subscribe_instance", "pk": {"id": 1}, "request_id": 5},
                envelope(
                    "subscribe_instance", None, 400, 5, [{"pk": ["Expected a string or a number."]}]
                ),
            ),
            (
                {"action": "subscribe_instance", "pk": "abc", "request_id": 6},
                envelope("subscribe_instance", None, 404, 6, ["Not found"]),
            ),
            (
                {"action": "retrieve", "pk": task.pk + 1000, "request_id": [7]},
                envelope("retrieve", None, 404, [7], ["Not found"]),
            ),
            (
                {"action": "retrieve", "request_id": {"any": "json"}},
                envelope(
                    "retrieve", None, 400, {"any": "json"}, [{"pk": ["This field is required."]}]
                ),
            ),
        ]
        for message, expected in cases:
            assert await ws.ask(message) == expected, message
        # Still open, still working.
        reply = await ws.ask({"action": "retrieve", "pk": task.pk, "request_id": "ok"})
        assert reply["response_status"] == 200 and reply["data"]["id"] == task.pk


async def test_unexpected_exception_gives_500_not_a_traceback(live, db):
    async with connect(live, "/ws/guarded-tasks/") as ws:
        reply = await ws.ask({"action": "boom", "request_id": 1})
        assert reply == envelope("boom", None, 500, 1, ["A server error occurred."])
        reply = await ws.ask({"action": "push_reads", "request_id": 2})
        assert reply == envelope("push_reads", [], 200, 2)
    # The log line reaches the output reader thread through a pipe: wait for it, bounded.
    await asyncio.to_thread(live.daphne.wait_for, "ValueError: a bug in an action", 5)


async def test_hostile_frames_get_400_and_log_no_traceback(live, db):
    """JSON nested 990 deep in 2 KB, and a key named ``self``, used to close the socket
    (1011) with a traceback in daphne's log."""
    task = await db(make_task)
    start = len(live.daphne.output)
    deep = '{"action": "retrieve", "pk": 1, "x": ' + "[" * 990 + "]" * 990 + "}"
    async with connect(live, "/ws/tasks/") as ws:
        assert await ws.ask(deep) == envelope(
            None, None, 400, None, ["JSON nested deeper than 32 levels."]
        )
        reply = await ws.ask({"action": "retrieve", "pk": task.pk, "self": 1, "request_id": 1})
        assert reply == envelope("retrieve", None, 400, 1, [{"self": ["Unexpected field."]}])
        reply = await ws.ask({"action": "retrieve", "pk": task.pk, "request_id": 2})
        assert (reply["response_status"], reply["data"]["id"]) == (200, task.pk)
    # A marker logged after them (a failing action's log line names its request_id): once
    # it is in daphne's output, anything the frames above made daphne log is there too.
    marker = f"marker-{uuid.uuid4().hex}"
    async with connect(live, "/ws/guarded-tasks/") as ws:
        assert (await ws.ask({"action": "boom", "request_id": marker}))["response_status"] == 500
    await asyncio.to_thread(live.daphne.wait_for, marker, 5)
    logged = live.daphne.output[start:]
    assert "Traceback" not in logged[: logged.index(marker)], logged


def login_cookie(username: str) -> tuple[int, str]:
    user = get_user_model().objects.create_user(username, f"{username}@example.com", "pw")
    client = HttpClient()
    client.force_login(user)
    return user.pk, f"sessionid={client.cookies['sessionid'].value}"


async def test_is_authenticated_without_a_session(live, db):
    user_pk, _ = await db(login_cookie, f"u{uuid.uuid4().hex[:6]}")
    async with connect(live, "/ws/users/") as ws:
        reply = await ws.ask({"action": "subscribe_instance", "pk": user_pk, "request_id": 1})
        assert reply == envelope(
            "subscribe_instance",
            None,
            403,
            1,
            ["You do not have permission to perform this action."],
        )
        # The permission check comes first (DCRF's order): unknown actions are 403 too.
        reply = await ws.ask({"action": "nope", "request_id": 2})
        assert reply["response_status"] == 403


async def test_is_authenticated_with_a_session_cookie(live, db):
    user_model = get_user_model()
    user_pk, cookie = await db(login_cookie, f"u{uuid.uuid4().hex[:6]}")
    async with connect(live, "/ws/users/", cookie=cookie) as ws:
        reply = await ws.ask({"action": "subscribe_instance", "pk": user_pk, "request_id": 1})
        assert reply == envelope("subscribe_instance", None, 201, 1)

        await db(user_model.objects.filter(pk=user_pk).update, email="new@example.com")
        message = await ws.recv()
        assert message["action"] == "update" and message["request_id"] == 1
        assert message["data"]["email"] == "new@example.com"
        assert "password" not in message["data"] and "last_login" not in message["data"]

        # last_login is not serialized: a login sends nothing; the next real change comes next.
        from django.utils import timezone

        await db(user_model.objects.filter(pk=user_pk).update, last_login=timezone.now())
        await db(user_model.objects.filter(pk=user_pk).update, first_name="Ada")
        message = await ws.recv()
        assert (message["action"], message["data"]["first_name"]) == ("update", "Ada")


async def test_lookup_field_other_than_pk(live, db, raw_conn):
    slug = f"p-{uuid.uuid4().hex[:8]}"
    project = await db(Project.objects.create, name="Before", slug=slug)
    async with connect(live, "/ws/projects/") as ws:
        reply = await ws.ask({"action": "subscribe_instance", "slug": slug, "request_id": 1})
        assert reply == envelope("subscribe_instance", None, 201, 1)
        reply = await ws.ask({"action": "subscribe_instance", "slug": "nope", "request_id": 2})
        assert reply == envelope("subscribe_instance", None, 404, 2, ["Not found"])
        reply = await ws.ask({"action": "subscribe_instance", "pk": project.pk, "request_id": 3})
        assert reply == envelope(
            "subscribe_instance", None, 400, 3, [{"slug": ["This field is required."]}]
        )

        raw_conn.execute("UPDATE tasks_project SET name = 'After' WHERE id = %s", [project.pk])
        assert await ws.recv() == envelope(
            "update", {"id": project.pk, "name": "After", "slug": slug}, 200, 1
        )
        # The subscription follows the row, even when its slug changes.
        raw_conn.execute(
            "UPDATE tasks_project SET slug = %s WHERE id = %s", [slug + "-2", project.pk]
        )
        assert await ws.recv() == envelope(
            "update", {"id": project.pk, "name": "After", "slug": slug + "-2"}, 200, 1
        )
        raw_conn.execute("DELETE FROM tasks_project WHERE id = %s", [project.pk])
        assert await ws.recv() == envelope("delete", {"pk": project.pk}, 204, 1)
        # Unsubscribing by the slug it was subscribed with works after the row is gone.
        reply = await ws.ask({"action": "unsubscribe_instance", "slug": slug, "request_id": 1})
        assert reply == envelope("unsubscribe_instance", None, 204, 1)


async def test_subscribe_instance_with_snapshot_answers_the_row(live, db, raw_conn):
    """pgobserve's extension for clients that re-subscribe after a reconnect: the 201
    carries the row; without ``snapshot`` the reply stays DCRF's ``data: null``."""
    slug = f"p-{uuid.uuid4().hex[:8]}"
    project = await db(Project.objects.create, name="Snap", slug=slug)
    row = {"id": project.pk, "name": "Snap", "slug": slug}
    async with connect(live, "/ws/projects/") as ws:
        message = {"action": "subscribe_instance", "slug": slug, "snapshot": True, "request_id": 1}
        assert await ws.ask(message) == envelope("subscribe_instance", row, 201, 1)
        message = {"action": "subscribe_instance", "slug": slug, "snapshot": False, "request_id": 2}
        assert await ws.ask(message) == envelope("subscribe_instance", None, 201, 2)
        message = {"action": "subscribe_instance", "slug": slug, "snapshot": "yes", "request_id": 3}
        assert await ws.ask(message) == envelope(
            "subscribe_instance", None, 400, 3, [{"snapshot": ["Must be true or false."]}]
        )
        raw_conn.execute("UPDATE tasks_project SET name = 'Later' WHERE id = %s", [project.pk])
        pushes = [await ws.recv(), await ws.recv()]
        assert sorted(p["request_id"] for p in pushes) == [1, 2]
        assert all(p["data"] == {**row, "name": "Later"} for p in pushes)
