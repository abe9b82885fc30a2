"""Query subscriptions through daphne: a filtered list kept live, exact messages, both modes.

Every test keeps, per request_id, the rows the client holds, built only from the
messages it gets (``Subscriber``): a ``create`` must be for a row not held, an ``update``
for a held row and with different data (no redundant pushes), a ``delete`` for a held
row. What it holds is then compared with a ``SELECT``.

"No push" is proved with a sentinel: a task in its own subscription, changed twice; a
push still on its way would come before the second sentinel push (query subscribers are
in the table group, whose messages reach a consumer in commit order on every layer).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db.models import Case, Q, Value, When
from django.db.models.functions import Concat
from django.test import Client as HttpClient
from tasks.models import Project, Task
from tasks.serializers import TaskSerializer

from .conftest import TIMEOUT, as_json, connect, envelope

pytestmark = pytest.mark.django_db(transaction=True)

Rows = dict[int, dict]


# data -------------------------------------------------------------------------------------


def make_project(owner: Any = None) -> Project:
    return Project.objects.create(name="P", slug=f"p-{uuid.uuid4().hex[:8]}", owner=owner)


def task_json(pk: int) -> dict:
    return as_json(TaskSerializer(Task.objects.get(pk=pk)).data)


def rows_of(queryset) -> Rows:
    """What a client holding ``queryset`` must hold: pk → the data it was sent."""
    return {task.pk: as_json(TaskSerializer(task).data) for task in queryset}


def select(*conditions: Q, **filters: Any) -> Rows:
    return rows_of(Task.objects.filter(*conditions, **filters).order_by("id"))


def login(username: str) -> tuple[Any, str]:
    user = get_user_model().objects.create_user(username, f"{username}@example.com", "pw")
    client = HttpClient()
    client.force_login(user)
    return user, f"sessionid={client.cookies['sessionid'].value}"


def visible_to(user: Any) -> Q:
    """``MyTaskConsumer``'s queryset, as a condition."""
    return Q(project__owner=user) | Q(assignee=user)


def insert_sql(conn: psycopg.Connection, project_id: int, title: str, done: bool) -> int:
    return conn.execute(
        "INSERT INTO tasks_task (project_id, title, done, notes, updated_at) "
        "VALUES (%s, %s, %s, '', now()) RETURNING id",
        [project_id, title, done],
    ).fetchone()[0]


# the client -------------------------------------------------------------------------------


class Subscriber:
    """One socket's query subscriptions and what each holds, from the messages it gets."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.held: dict[Any, Rows] = {}
        self.pushes: list[dict] = []  # cleared by tests
        self.history: list[dict] = []  # every push

    async def ask(self, message: dict) -> dict:
        """Send a request; pushes that come before its reply are applied."""
        await self.ws.send(message)
        while True:
            reply = await self.ws.recv()
            if reply["action"] == message["action"] and reply["request_id"] == message.get(
                "request_id"
            ):
                return reply
            self.apply(reply)

    async def subscribe(self, request_id: Any, filters: Any) -> dict:
        reply = await self.ask(
            {"action": "subscribe_query", "filters": filters, "request_id": request_id}
        )
        if reply["response_status"] == 201:
            self.held[request_id] = {row["id"]: row for row in reply["data"]}
        return reply

    async def unsubscribe(self, request_id: Any) -> dict:
        reply = await self.ask({"action": "unsubscribe_query", "request_id": request_id})
        self.held.pop(request_id, None)
        return reply

    def apply(self, message: dict) -> None:
        rid = message["request_id"]
        assert rid in self.held, f"a push for no subscription: {message}"
        assert message["errors"] == [], message
        held, data, action = self.held[rid], message["data"], message["action"]
        self.pushes.append(message)
        self.history.append(message)
        if action == "create":
            assert message["response_status"] == 201, message
            assert data["id"] not in held, f"create of a row already held: {message}"
            held[data["id"]] = data
        elif action == "update":
            assert message["response_status"] == 200, message
            assert data["id"] in held, f"update of a row not held: {message}"
            assert held[data["id"]] != data, f"redundant update: {message}"
            held[data["id"]] = data
        elif action == "delete":
            assert message["response_status"] == 204, message
            assert list(data) == ["pk"] and data["pk"] in held, f"bad delete: {message}"
            del held[data["pk"]]
        else:
            raise AssertionError(f"unexpected message: {message}")

    async def next(self) -> dict:
        message = await self.ws.recv()
        self.apply(message)
        return message

    async def until(self, request_id: Any, expected: Rows, timeout: float = 30) -> None:
        """Apply pushes until ``request_id`` holds exactly ``expected`` (bounded)."""
        deadline = time.monotonic() + timeout
        while self.held[request_id] != expected:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise AssertionError(f"not settled within {timeout}s")
                await self.next_within(min(remaining, TIMEOUT))
            except AssertionError as exc:
                held = self.held[request_id]
                missing = sorted(set(expected) - set(held))
                extra = sorted(set(held) - set(expected))
                stale = sorted(k for k in set(held) & set(expected) if held[k] != expected[k])
                raise AssertionError(
                    f"{exc}; request_id {request_id!r}: missing {missing[:10]} "
                    f"({len(missing)}), extra {extra[:10]} ({len(extra)}), "
                    f"stale {stale[:10]} ({len(stale)})"
                ) from None

    async def next_within(self, timeout: float) -> dict:
        message = await self.ws.recv(timeout)
        self.apply(message)
        return message


class Sentinel:
    """A task only its own subscription (request_id "s") holds: proves nothing is pending."""

    def __init__(self, sub: Subscriber, pk: int, token: str) -> None:
        self.sub, self.pk, self.token = sub, pk, token

    @classmethod
    async def plant(cls, sub: Subscriber, db, project: Project) -> Sentinel:
        token = f"sentinel-{uuid.uuid4().hex[:10]}"
        task = await db(Task.objects.create, project=project, title=token, done=True)
        reply = await sub.subscribe("s", {"title__icontains": token})
        assert reply == envelope("subscribe_query", [await db(task_json, task.pk)], 201, "s")
        return cls(sub, task.pk, token)

    async def quiet(self, db) -> None:
        """No push other than the sentinel's may be on its way."""
        for _ in range(2):
            title = f"{self.token} {uuid.uuid4().hex[:6]}"
            await db(Task.objects.filter(pk=self.pk).update, title=title)
            message = await self.sub.next()
            assert message == envelope("update", await db(task_json, self.pk), 200, "s")


# tests ------------------------------------------------------------------------------------


async def test_snapshot_content_and_order(live, db):
    p, other = await db(make_project), await db(make_project)
    made = {}
    for title, done in [("delta", False), ("alpha", False), ("charlie", True), ("bravo", False)]:
        made[title] = await db(Task.objects.create, project=p, title=title, done=done)
    await db(Task.objects.create, project=other, title="alpha 2")
    data = {title: await db(task_json, task.pk) for title, task in made.items()}

    async with connect(live, "/ws/query-tasks/") as ws:  # ordered by title
        reply = await ws.ask(
            {
                "action": "subscribe_query",
                "filters": {"project": p.pk, "done": False},
                "request_id": 1,
            }
        )
        assert reply == envelope(
            "subscribe_query", [data["alpha"], data["bravo"], data["delta"]], 201, 1
        )
        reply = await ws.ask(
            {"action": "subscribe_query", "filters": {"title__icontains": "ALPHA"}, "request_id": 2}
        )
        assert [row["title"] for row in reply["data"]] == ["alpha", "alpha 2"]
    async with connect(live, "/ws/tasks/") as ws:  # Meta.ordering: id
        reply = await ws.ask(
            {
                "action": "subscribe_query",
                "filters": {"project__in": [p.pk], "done": False},
                "request_id": "x",
            }
        )
        assert reply == envelope(
            "subscribe_query", [data["delta"], data["alpha"], data["bravo"]], 201, "x"
        )


async def test_rows_enter_change_and_leave_through_orm_saves(live, db):
    p, elsewhere = await db(make_project), await db(make_project)
    t1 = await db(Task.objects.create, project=p, title="one")
    async with connect(live, "/ws/tasks/") as ws:
        sub = Subscriber(ws)
        reply = await sub.subscribe(1, {"project": p.pk, "done": False})
        assert reply == envelope("subscribe_query", [await db(task_json, t1.pk)], 201, 1)
        sentinel = await Sentinel.plant(sub, db, p)

        t2 = await db(Task.objects.create, project=p, title="two")
        assert await sub.next() == envelope("create", await db(task_json, t2.pk), 201, 1)

        # Created outside the filter: nothing.
        t3 = await db(Task.objects.create, project=p, title="three", done=True)
        await sentinel.quiet(db)

        t1.title = "one, renamed"
        await db(t1.save)
        assert await sub.next() == envelope("update", await db(task_json, t1.pk), 200, 1)

        t1.done = True  # updated out of the filter
        await db(t1.save)
        assert await sub.next() == envelope("delete", {"pk": t1.pk}, 204, 1)

        t1.title = "changed while outside"
        await db(t1.save)
        await sentinel.quiet(db)

        t3.done = False  # updated into the filter
        await db(t3.save)
        assert await sub.next() == envelope("create", await db(task_json, t3.pk), 201, 1)

        t3.project = elsewhere  # moved out through another column
        await db(t3.save)
        assert await sub.next() == envelope("delete", {"pk": t3.pk}, 204, 1)

        pk = t2.pk
        await db(t2.delete)
        assert await sub.next() == envelope("delete", {"pk": pk}, 204, 1)
        await sentinel.quiet(db)
        assert sub.held[1] == await db(select, project=p, done=False) == {}


async def test_queryset_update_of_thousands_of_rows(live, db):
    p = await db(make_project)
    await db(
        Task.objects.bulk_create,
        [Task(project=p, title=f"bulk {i}", done=i % 3 != 0) for i in range(3000)],
    )
    async with connect(live, "/ws/tasks/") as ws:
        sub = Subscriber(ws)
        reply = await sub.subscribe(1, {"project": p.pk, "done": False})
        assert len(reply["data"]) == 1000  # exactly the cap: allowed
        assert sub.held[1] == await db(select, project=p, done=False)

        # Toggle all 3,000 in one statement: 1,000 leave, 2,000 enter.
        toggled = Case(When(done=True, then=Value(False)), default=Value(True))
        assert await db(Task.objects.filter(project=p).update, done=toggled) == 3000
        await sub.until(1, await db(select, project=p, done=False))
        assert len(sub.held[1]) == 2000
        assert len([m for m in sub.pushes if m["action"] == "create"]) == 2000
        assert len([m for m in sub.pushes if m["action"] == "delete"]) == 1000

        # 1,500 rows renamed, of which ~1,000 held: updates only for those.
        pks = await db(lambda: list(Task.objects.filter(project=p).values_list("pk", flat=True)))
        pks.sort()
        sub.pushes.clear()
        await db(Task.objects.filter(pk__in=pks[:1500]).update, title="renamed in bulk")
        await sub.until(1, await db(select, project=p, done=False))
        assert {m["action"] for m in sub.pushes} == {"update"}
        assert len(sub.pushes) == await db(Task.objects.filter(pk__in=pks[:1500], done=False).count)

        # A small update (read by pk, not re-queried): 10 leave.
        sub.pushes.clear()
        leaving = sorted(sub.held[1])[:10]
        await db(Task.objects.filter(pk__in=leaving).update, done=True)
        await sub.until(1, await db(select, project=p, done=False))
        assert sorted(m["data"]["pk"] for m in sub.pushes) == leaving


async def test_psycopg_writes_from_outside_django(live, db, raw_conn):
    p = await db(make_project)
    async with connect(live, "/ws/tasks/") as ws:
        sub = Subscriber(ws)
        assert await sub.subscribe(7, {"project": p.pk, "done": False}) == envelope(
            "subscribe_query", [], 201, 7
        )
        pk = insert_sql(raw_conn, p.pk, "from psycopg", False)
        message = await sub.next()
        assert message == envelope("create", await db(task_json, pk), 201, 7)
        assert message["data"]["title"] == "from psycopg"

        raw_conn.execute("UPDATE tasks_task SET title = 'psql title' WHERE id = %s", [pk])
        assert await sub.next() == envelope("update", await db(task_json, pk), 200, 7)
        raw_conn.execute("UPDATE tasks_task SET done = true WHERE id = %s", [pk])
        assert await sub.next() == envelope("delete", {"pk": pk}, 204, 7)
        raw_conn.execute("UPDATE tasks_task SET done = false WHERE id = %s", [pk])
        assert await sub.next() == envelope("create", await db(task_json, pk), 201, 7)

        # Several rows in one transaction: one create each.
        with raw_conn.transaction():
            more = [insert_sql(raw_conn, p.pk, f"batch {i}", False) for i in range(3)]
        got = sorted(await sub.ws.recv_many(3), key=lambda m: m["data"]["id"])
        assert got == [envelope("create", await db(task_json, k), 201, 7) for k in more]
        for message in got:
            sub.apply(message)

        raw_conn.execute("DELETE FROM tasks_task WHERE id = %s", [pk])
        assert await sub.next() == envelope("delete", {"pk": pk}, 204, 7)
        assert sub.held[7] == await db(select, project=p, done=False)


async def test_truncate_deletes_every_held_row(live, db, raw_conn):
    p = await db(make_project)
    tasks = [await db(Task.objects.create, project=p, title=f"t{i}") for i in range(4)]
    async with connect(live, "/ws/tasks/") as ws:
        sub = Subscriber(ws)
        await sub.subscribe(1, {"project": p.pk})
        await sub.subscribe(2, {"title__icontains": "t1"})
        assert set(sub.held[1]) == {t.pk for t in tasks} and set(sub.held[2]) == {tasks[1].pk}

        raw_conn.execute("TRUNCATE tasks_task")
        await sub.until(1, {})
        await sub.until(2, {})
        deletes = sorted((m["request_id"], m["data"]["pk"]) for m in sub.pushes)
        assert deletes == sorted([(1, t.pk) for t in tasks] + [(2, tasks[1].pk)])
        assert all(m["action"] == "delete" for m in sub.pushes)

        # Still live after the truncate; and no second delete was on its way.
        pk = insert_sql(raw_conn, p.pk, "after truncate", False)
        assert await sub.next() == envelope("create", await db(task_json, pk), 201, 1)


async def test_two_users_see_only_their_own_rows(live, db):
    (alice, alice_cookie), (bob, bob_cookie) = await db(login, "alice"), await db(login, "bob")
    pa, pb = await db(make_project, alice), await db(make_project, bob)
    a1, a2 = [await db(Task.objects.create, project=pa, title=f"a{i}") for i in (1, 2)]
    b1, b2 = [await db(Task.objects.create, project=pb, title=f"b{i}") for i in (1, 2)]
    shared = await db(Task.objects.create, project=pb, title="bob's, for alice", assignee=alice)

    async with (
        connect(live, "/ws/my-tasks/", cookie=alice_cookie) as ws_a,
        connect(live, "/ws/my-tasks/", cookie=bob_cookie) as ws_b,
        connect(live, "/ws/my-tasks/") as ws_anonymous,
    ):
        a, b = Subscriber(ws_a), Subscriber(ws_b)
        reply = await a.subscribe("mine", {"done": False})
        assert reply == envelope(
            "subscribe_query", [await db(task_json, t.pk) for t in (a1, a2, shared)], 201, "mine"
        )
        reply = await b.subscribe("mine", {"done": False})
        assert reply == envelope(
            "subscribe_query", [await db(task_json, t.pk) for t in (b1, b2, shared)], 201, "mine"
        )
        # Asking for alice's project by its id gives bob nothing, now or later.
        assert await b.subscribe("hers", {"project": pa.pk}) == envelope(
            "subscribe_query", [], 201, "hers"
        )
        reply = await Subscriber(ws_anonymous).subscribe(1, {"done": False})
        assert reply == envelope(
            "subscribe_query", None, 403, 1, ["You do not have permission to perform this action."]
        )
        sentinel_a, sentinel_b = await Sentinel.plant(a, db, pa), await Sentinel.plant(b, db, pb)

        await db(Task.objects.filter(pk=b1.pk).update, title="b1 changed")
        assert await b.next() == envelope("update", await db(task_json, b1.pk), 200, "mine")
        await db(Task.objects.filter(pk=a1.pk).update, title="a1 changed")
        assert await a.next() == envelope("update", await db(task_json, a1.pk), 200, "mine")
        await sentinel_a.quiet(db)
        await sentinel_b.quiet(db)

        # a2 moves to bob's project: it leaves alice's list and enters bob's.
        await db(Task.objects.filter(pk=a2.pk).update, project=pb)
        assert await a.next() == envelope("delete", {"pk": a2.pk}, 204, "mine")
        assert await b.next() == envelope("create", await db(task_json, a2.pk), 201, "mine")
        # b2 is assigned to alice: it enters her list, and changes in bob's.
        await db(Task.objects.filter(pk=b2.pk).update, assignee=alice)
        assert await a.next() == envelope("create", await db(task_json, b2.pk), 201, "mine")
        assert await b.next() == envelope("update", await db(task_json, b2.pk), 200, "mine")
        # shared is unassigned: it leaves alice's list.
        await db(Task.objects.filter(pk=shared.pk).update, assignee=None)
        assert await a.next() == envelope("delete", {"pk": shared.pk}, 204, "mine")
        assert await b.next() == envelope("update", await db(task_json, shared.pk), 200, "mine")

        # Rows only bob sees change: alice gets nothing.
        await db(Task.objects.create, project=pb, title="bob's new")
        await db(Task.objects.filter(pk=b1.pk).update, title="b1 again")
        await db(Task.objects.filter(project=pb, assignee=None).update, done=True)
        await sentinel_a.quiet(db)
        await b.until("mine", await db(select, visible_to(bob), done=False))
        assert a.held["mine"] == await db(select, visible_to(alice), done=False)
        assert b.held["hers"] == {}
        await sentinel_b.quiet(db)


async def test_a_column_the_serializer_hides_sends_nothing(live, db, raw_conn):
    p = await db(make_project)
    task = await db(Task.objects.create, project=p, title="t")
    async with connect(live, "/ws/tasks/") as ws:
        sub = Subscriber(ws)
        await sub.subscribe(1, {"project": p.pk})
        sentinel = await Sentinel.plant(sub, db, await db(make_project))
        await db(Task.objects.filter(pk=task.pk).update, notes="private")
        raw_conn.execute("UPDATE tasks_task SET notes = 'psql private' WHERE id = %s", [task.pk])
        await sentinel.quiet(db)
        assert {m["request_id"] for m in sub.history} == {"s"}
        # A column it shows does.
        await db(Task.objects.filter(pk=task.pk).update, title="shown")
        assert await sub.next() == envelope("update", await db(task_json, task.pk), 200, 1)


async def test_invalid_filters_get_400_and_the_socket_stays_open(live, db):
    p = await db(make_project)
    unknown = ["Not a filterable field or lookup (filterable: assignee, done, project, title)."]
    boolean = ["“maybe” value must be either True or False."]
    not_allowed = "Lookup 'startswith' is not allowed on 'title'."
    single = "Expected a single value, not an object or a list."
    cases = [
        ({"nope": 1}, {"nope": unknown}),
        ({"notes": "x"}, {"notes": unknown}),
        ({"title__regex": "x"}, {"title__regex": unknown}),
        ({"done__in": [True]}, {"done__in": ["Lookup 'in' is not allowed on 'done'."]}),
        ({"title__startswith": "x"}, {"title__startswith": [not_allowed]}),
        ({"done": "maybe"}, {"done": boolean}),
        ({"project": "abc"}, {"project": ["“abc” value must be an integer."]}),
        ({"project__in": 5}, {"project__in": ["Expected a list of values."]}),
        ({"project__in": [1, [2]]}, {"project__in": [single]}),
        ({"assignee__isnull": "yes"}, {"assignee__isnull": ["Must be true or false."]}),
        ({"assignee": None}, {"assignee": ["Null is not a value here; use the isnull lookup."]}),
        ({"title__icontains": 3}, {"title__icontains": ["Expected a string."]}),
        ({"done": "maybe", "nope": 1}, {"done": boolean, "nope": unknown}),
        ([["done", False]], {"filters": ["Expected an object of field lookups."]}),
        ("done", {"filters": ["Expected an object of field lookups."]}),
    ]  # fmt: skip
    async with connect(live, "/ws/tasks/") as ws:
        for i, (filters, errors) in enumerate(cases):
            reply = await ws.ask({"action": "subscribe_query", "filters": filters, "request_id": i})
            assert reply == envelope("subscribe_query", None, 400, i, [errors]), filters
        reply = await ws.ask({"action": "subscribe_query", "filters": {}})
        assert reply == envelope(
            "subscribe_query", None, 400, None, [{"request_id": ["This field is required."]}]
        )
        # A misspelt "filters" is refused, not taken as "everything".
        reply = await ws.ask(
            {"action": "subscribe_query", "filter": {"done": False}, "request_id": 99}
        )
        assert reply == envelope(
            "subscribe_query", None, 400, 99,
            [{"filter": ['Unexpected field; filters go in "filters".']}],
        )  # fmt: skip

        # Still open, and none of the refused subscriptions exists: a valid one works alone.
        sub = Subscriber(ws)
        assert await sub.subscribe(0, {"project": p.pk}) == envelope("subscribe_query", [], 201, 0)
        task = await db(Task.objects.create, project=p, title="after the errors")
        assert await sub.next() == envelope("create", await db(task_json, task.pk), 201, 0)


async def test_over_the_cap_is_413(live, db):
    p = await db(make_project)
    await db(Task.objects.bulk_create, [Task(project=p, title=f"r{i}") for i in range(1001)])
    async with connect(live, "/ws/tasks/") as ws:
        sub = Subscriber(ws)
        sentinel = await Sentinel.plant(sub, db, await db(make_project))
        reply = await sub.subscribe(1, {"project": p.pk})
        assert reply == envelope(
            "subscribe_query",
            None,
            413,
            1,
            ["The query matches more than 1000 rows; narrow the filters."],
        )
        # The refused subscription gets nothing.
        first = await db(lambda: Task.objects.filter(project=p).order_by("id").first())
        await db(Task.objects.filter(pk=first.pk).update, title="changed")
        await sentinel.quiet(db)

        # Back under the cap, the same request_id subscribes.
        await db(Task.objects.filter(pk=first.pk).delete)
        reply = await sub.subscribe(1, {"project": p.pk})
        assert reply["response_status"] == 201 and len(reply["data"]) == 1000
        assert sub.held[1] == await db(select, project=p)


async def test_unsubscribe_query_stops_pushes(live, db):
    p = await db(make_project)
    task = await db(Task.objects.create, project=p, title="t")
    async with connect(live, "/ws/tasks/") as ws:
        sub = Subscriber(ws)
        await sub.subscribe(1, {"project": p.pk})
        await sub.subscribe(2, {"project": p.pk, "done": False})
        sentinel = await Sentinel.plant(sub, db, await db(make_project))

        await db(Task.objects.filter(pk=task.pk).update, title="both")
        got = sorted([await sub.next(), await sub.next()], key=lambda m: m["request_id"])
        data = await db(task_json, task.pk)
        assert got == [envelope("update", data, 200, 1), envelope("update", data, 200, 2)]

        assert await sub.unsubscribe(1) == envelope("unsubscribe_query", None, 204, 1)
        await db(Task.objects.filter(pk=task.pk).update, title="only two")
        assert await sub.next() == envelope("update", await db(task_json, task.pk), 200, 2)
        await sentinel.quiet(db)

        assert await sub.unsubscribe(2) == envelope("unsubscribe_query", None, 204, 2)
        await db(Task.objects.filter(pk=task.pk).update, title="nobody")
        await db(Task.objects.create, project=p, title="nobody either")
        await sentinel.quiet(db)


async def test_two_query_subscriptions_one_socket_one_read_per_batch(live, db):
    p, other = await db(make_project), await db(make_project)
    t1, t2, t3 = [await db(Task.objects.create, project=p, title=f"a{i}") for i in (1, 2, 3)]
    q1 = await db(Task.objects.create, project=other, title="zz q1")
    async with connect(live, "/ws/query-tasks/") as ws:
        sub = Subscriber(ws)
        await sub.subscribe(1, {"project": p.pk, "done": False})
        await sub.subscribe(2, {"title__icontains": "zz"})
        assert (set(sub.held[1]), set(sub.held[2])) == ({t1.pk, t2.pk, t3.pk}, {q1.pk})
        # Let the listener catch up with earlier writes (the previous test's TRUNCATEs):
        # once the sentinel's pushes are in, only this test's batch is read from here on.
        sentinel = await Sentinel.plant(sub, db, other)
        await sentinel.quiet(db)
        before = (await sub.ask({"action": "push_reads", "request_id": "r"}))["data"]
        # The two snapshots (the setup's inserts may still be read between them, late).
        assert [r for r in before if r[0] == "query"][:2] == [["query", 1]] * 2

        # One statement: t1 and t2 change in 1 and enter 2; q1 changes in 2; t3 untouched.
        await db(
            Task.objects.filter(pk__in=[t1.pk, t2.pk, q1.pk]).update,
            title=Concat("title", Value(" zz")),
        )
        got = sorted(
            [await sub.next() for _ in range(5)], key=lambda m: (m["request_id"], m["data"]["id"])
        )
        d1, d2, dq = [await db(task_json, t.pk) for t in (t1, t2, q1)]
        assert got == [
            envelope("update", d1, 200, 1),
            envelope("update", d2, 200, 1),
            envelope("create", d1, 201, 2),
            envelope("create", d2, 201, 2),
            envelope("update", dq, 200, 2),
        ]
        reads = (await sub.ask({"action": "push_reads", "request_id": "r"}))["data"]
        # Every subscription settled by a single query (a resync, which the listener may
        # send at any time, re-runs each query: those reads are "query" ones).
        assert [r for r in reads[len(before) :] if r[0] == "matches"] == [["matches", 1]]
        assert all(queries == 1 for _, queries in reads)


async def test_snapshot_with_concurrent_writers_loses_nothing(live, db, conninfo):
    p = await db(make_project)
    await db(Task.objects.bulk_create, [Task(project=p, title=f"w{i}") for i in range(100)])
    ops = 0
    started, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def writer() -> None:
        nonlocal ops
        rng = random.Random(1234)
        try:
            with psycopg.connect(**conninfo, autocommit=True) as conn:
                ids = [
                    r[0]
                    for r in conn.execute("SELECT id FROM tasks_task WHERE project_id = %s", [p.pk])
                ]
                while not stop.is_set() and ops < 3000:
                    kind = rng.random()
                    if kind < 0.3 or not ids:
                        ids.append(insert_sql(conn, p.pk, f"w new {ops}", rng.random() < 0.5))
                    elif kind < 0.6:
                        conn.execute(
                            "UPDATE tasks_task SET done = NOT done WHERE id = %s",
                            [rng.choice(ids)],
                        )
                    elif kind < 0.8:
                        conn.execute(
                            "UPDATE tasks_task SET title = %s WHERE id = %s",
                            [f"w title {ops}", rng.choice(ids)],
                        )
                    elif kind < 0.95:
                        victim = ids.pop(rng.randrange(len(ids)))
                        conn.execute("DELETE FROM tasks_task WHERE id = %s", [victim])
                    else:  # many rows in one statement
                        conn.execute(
                            "UPDATE tasks_task SET done = NOT done "
                            "WHERE project_id = %s AND id %% 5 = %s",
                            [p.pk, rng.randrange(5)],
                        )
                    ops += 1
                    if ops == 50:
                        started.set()
        except BaseException as exc:  # reported by the test
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    loop = asyncio.get_running_loop()
    try:
        assert await loop.run_in_executor(None, started.wait, 10), "the writer did not start"
        async with (
            connect(live, "/ws/tasks/") as ws1,
            connect(live, "/ws/tasks/") as ws2,
            connect(live, "/ws/query-tasks/") as ws3,
        ):
            subs = [Subscriber(ws) for ws in (ws1, ws2, ws3)]
            during = []
            for round_ in range(3):  # each socket subscribes at a different moment
                for sub in subs:
                    at = ops
                    reply = await sub.subscribe(round_, {"project": p.pk, "done": False})
                    assert reply["response_status"] == 201, reply
                    during.append(ops - at)
            stop.set()
            await loop.run_in_executor(None, thread.join, 30)
            assert not thread.is_alive() and not failure, failure
            # The writes really overlapped the snapshots.
            assert sum(during) > 0 and ops > 50, (during, ops)

            expected = await db(select, project=p, done=False)
            for sub in subs:
                for round_ in range(3):
                    await sub.until(round_, expected)
    finally:
        stop.set()
        thread.join(30)


async def test_done_when_own_open_tasks_equal_a_select(live, db, raw_conn):
    """Issue 4's "done when": a client subscribed to ``{"done": false}`` tasks of its own
    project holds exactly what a SELECT returns after any mix of writes, and receives
    nothing for other users' rows."""
    (alice, cookie), (bob, bob_cookie) = await db(login, "alice"), await db(login, "bob")
    mine, theirs = await db(make_project, alice), await db(make_project, bob)
    await db(Task.objects.create, project=mine, title="mine 0")
    await db(Task.objects.create, project=theirs, title="theirs 0")

    def expected() -> Rows:
        return select(visible_to(alice), done=False)

    async with (
        connect(live, "/ws/my-tasks/", cookie=cookie) as ws,
        connect(live, "/ws/my-tasks/", cookie=bob_cookie) as ws_bob,
    ):
        sub, bob_sub = Subscriber(ws), Subscriber(ws_bob)
        reply = await sub.subscribe("open", {"done": False})
        assert sub.held["open"] == await db(expected) and len(reply["data"]) == 1
        await bob_sub.subscribe("open", {"done": False})

        # ORM: create, save, delete, in both projects.
        t = await db(Task.objects.create, project=mine, title="mine 1")
        t.title = "mine 1 saved"
        await db(t.save)
        b = await db(Task.objects.create, project=theirs, title="theirs 1")
        b.title = "theirs 1 saved"
        await db(b.save)
        await db(Task.objects.create, project=mine, title="mine done", done=True)
        await db(b.delete)
        await sub.until("open", await db(expected))

        # TRUNCATE, then thousands of rows in both projects, and a bulk update.
        raw_conn.execute("TRUNCATE tasks_task")
        await sub.until("open", {})
        for project in (mine, theirs):
            await db(
                Task.objects.bulk_create,
                [Task(project=project, title=f"bulk {i}", done=True) for i in range(2000)],
            )
        for project in (mine, theirs):
            await db(Task.objects.filter(project=project, title__endswith="0").update, done=False)
        await db(Task.objects.filter(project=mine, title__endswith="50").update, title="renamed")
        await sub.until("open", await db(expected))

        # psql from outside Django: inserts, updates, deletes, and moves between projects.
        raw_conn.execute(
            "UPDATE tasks_task SET project_id = %s WHERE id IN "
            "(SELECT id FROM tasks_task WHERE project_id = %s AND NOT done ORDER BY id LIMIT 5)",
            [theirs.pk, mine.pk],
        )
        raw_conn.execute(
            "UPDATE tasks_task SET project_id = %s WHERE id IN "
            "(SELECT id FROM tasks_task WHERE project_id = %s AND NOT done ORDER BY id LIMIT 3)",
            [mine.pk, theirs.pk],
        )
        insert_sql(raw_conn, mine.pk, "psql mine", False)
        insert_sql(raw_conn, theirs.pk, "psql theirs", False)
        raw_conn.execute(
            "DELETE FROM tasks_task WHERE id IN "
            "(SELECT id FROM tasks_task WHERE project_id = %s AND NOT done ORDER BY id LIMIT 7)",
            [mine.pk],
        )
        raw_conn.execute(
            "UPDATE tasks_task SET done = true WHERE id IN "
            "(SELECT id FROM tasks_task WHERE project_id = %s AND NOT done ORDER BY id DESC "
            "LIMIT 4)",
            [mine.pk],
        )
        # Bob assigns one of his tasks to alice: it is hers to see now.
        raw_conn.execute(
            "UPDATE tasks_task SET assignee_id = %s WHERE id = "
            "(SELECT min(id) FROM tasks_task WHERE project_id = %s AND NOT done)",
            [alice.pk, theirs.pk],
        )
        await sub.until("open", await db(expected))

        # Last, writes only bob's rows see; then prove none of them reached alice.
        sentinel = await Sentinel.plant(sub, db, mine)
        sub.pushes.clear()
        await db(Task.objects.filter(project=theirs, assignee=None).update, title="bob only")
        await db(Task.objects.create, project=theirs, title="bob only, new")
        raw_conn.execute(
            "DELETE FROM tasks_task WHERE project_id = %s AND assignee_id IS NULL AND id IN "
            "(SELECT id FROM tasks_task WHERE project_id = %s ORDER BY id LIMIT 10)",
            [theirs.pk, theirs.pk],
        )
        await sentinel.quiet(db)
        assert {m["request_id"] for m in sub.pushes} == {"s"}
        assert sub.held["open"] == await db(expected)
        await bob_sub.until("open", await db(select, visible_to(bob), done=False))

    # Everything alice was ever sent was hers when it was read.
    for message in sub.history:
        data = message["data"]
        if message["action"] != "delete":
            assert data["project"] == mine.pk or data["assignee"] == alice.pk, message


async def test_push_permission_withholds_create_and_update(live, db):
    p, other = await db(make_project), await db(make_project)
    t1 = await db(Task.objects.create, project=p, title="plans")
    async with connect(live, "/ws/guarded-query-tasks/") as ws:
        sub = Subscriber(ws)
        await sub.subscribe(1, {"project": p.pk})
        sentinel = await Sentinel.plant(sub, db, other)
        sub.pushes.clear()
        # A change into a refused state, and a refused row entering: nothing is pushed.
        await db(Task.objects.filter(pk=t1.pk).update, title="secret plans")
        await db(Task.objects.create, project=p, title="secret new")
        await sentinel.quiet(db)
        assert [m for m in sub.pushes if m["request_id"] == 1] == []
        assert set(sub.held[1]) == {t1.pk}
        # Allowed again: the client gets the current data.
        await db(Task.objects.filter(pk=t1.pk).update, title="public plans")
        assert await sub.next() == envelope("update", await db(task_json, t1.pk), 200, 1)
