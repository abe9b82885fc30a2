"""Behind PgBouncer in transaction pooling, configured as docs/deployment.md says.

daphne's ``default`` alias (its requests and its pushes' re-reads) goes through a throwaway
PgBouncer (``tests/servers.py``) in transaction pooling with ONE server connection: every
client's transaction runs on the same server session. The listener runs on a ``direct``
alias (``pgobserve listen --database direct``), as it must. With
``PGOBSERVE["AUTOCOMMIT_READS"] = False``, and with the defaults: pushes, requests and query
subscriptions work, past psycopg's prepared-statement threshold (PgBouncer 1.18 keeps no
prepared statements), and pgobserve leaves no session setting on the shared server session
for other clients (with the defaults, because it sees the pooler: the backend pid differs
from the one given at connect).
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.conf import settings
from tasks.models import Project, Task

from tests.fix_layer import find_redis
from tests.servers import ThrowawayPgBouncer

from .conftest import ROOT, Live, Process, connect, envelope, start_servers
from .test_instances import subscribe, task_json

pytestmark = pytest.mark.django_db(transaction=True)

#: More pushes than psycopg's prepare_threshold (5): a prepared statement would break here.
PUSHES = 8

#: Every setting of a session (the pooler sets the client's own application_name).
SETTINGS = "SELECT name, setting FROM pg_settings WHERE name <> 'application_name' ORDER BY name"


@pytest.fixture(scope="module")
def bouncer() -> Iterator[ThrowawayPgBouncer]:
    database = settings.DATABASES["default"]
    try:
        server = ThrowawayPgBouncer(
            database["HOST"] or "127.0.0.1",
            database["PORT"] or 5432,
            database["USER"],
            database["PASSWORD"],
        )
    except FileNotFoundError:
        pytest.skip("pgbouncer is not installed (.ci/run installs Debian's)")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module", params=["autocommit-reads-off", "defaults"])
def pooled(request, bouncer, django_db_setup, test_dbname) -> Iterator[Live]:
    """daphne through ``bouncer``, a listener process on the direct alias, Redis between:
    with ``AUTOCOMMIT_READS = False`` as the docs advise, and with the defaults (pgobserve
    sees the pooler and keeps its reads in transactions)."""
    redis_url = find_redis()
    if not redis_url:
        pytest.skip("no Redis: set REDIS_URL (CI does) or run redis-server on 127.0.0.1:6379")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.e2e.settings",
        "PGOBSERVE_TEST_DBNAME": test_dbname,
        "PGOBSERVE_TEST_LOCK_KEY": str(random.randrange(1, 2**31)),
        "PGOBSERVE_TEST_POOLER": f"127.0.0.1:{bouncer.port}",
        "PGOBSERVE_TEST_SETTINGS": json.dumps(
            {"AUTOCOMMIT_READS": False} if request.param == "autocommit-reads-off" else {}
        ),
        "PGOBSERVE_TEST_LAYER": "redis",
        "PGOBSERVE_TEST_IN_PROCESS": "0",
        "PGOBSERVE_TEST_REDIS_PREFIX": f"pgobserve-pooled-{uuid.uuid4().hex[:8]}",
        "REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    started: list[Process] = []
    try:
        listener, daphne, port = start_servers(env, started, True, "--database", "direct")
        yield Live(request.param, port, daphne, listener, env)
    finally:
        for process in reversed(started):
            process.stop()


def make_task(title: str) -> Task:
    project = Project.objects.create(name="P", slug=f"p-{uuid.uuid4().hex[:8]}")
    return Task.objects.create(project=project, title=title)


def session_settings(conn: psycopg.Connection) -> dict[str, Any]:
    return dict(conn.execute(SETTINGS).fetchall())


async def test_pushes_requests_and_queries_through_the_pooler(pooled, db):
    token = f"pooled-{uuid.uuid4().hex[:8]}"
    task = await db(make_task, token)
    async with (
        connect(pooled, "/ws/tasks/") as instance,
        connect(pooled, "/ws/query-tasks/") as query,
    ):
        await subscribe(instance, task.pk, "i")
        reply = await query.ask(
            {"action": "subscribe_query", "filters": {"title__icontains": token}, "request_id": 1}
        )
        assert reply == envelope("subscribe_query", [await db(task_json, task.pk)], 201, 1)
        for n in range(PUSHES):
            await db(Task.objects.filter(pk=task.pk).update, title=f"{token} {n}")
            data = await db(task_json, task.pk)
            assert await instance.recv() == envelope("update", data, 200, "i")
            assert await query.recv() == envelope("update", data, 200, 1)
        reply = await instance.ask({"action": "retrieve", "pk": task.pk, "request_id": "r"})
        assert reply == envelope("retrieve", data, 200, "r")
    for process in (pooled.daphne, pooled.listener):
        assert "Traceback" not in process.output, process.output[-3000:]


async def test_no_session_setting_reaches_the_pooler_s_other_clients(pooled, bouncer, db):
    """The pushes' reads ran on the pooler's one server session; a client that gets it next
    finds it as a fresh connection to the server has it (no lock_timeout left behind)."""
    task = await db(make_task, "settings")
    async with connect(pooled, "/ws/tasks/") as ws:
        await subscribe(ws, task.pk, "i")
        for n in range(3):
            await db(Task.objects.filter(pk=task.pk).update, title=f"settings {n}")
            assert await ws.recv() == envelope("update", await db(task_json, task.pk), 200, "i")
    database = settings.DATABASES["default"]
    with psycopg.connect(
        host=database["HOST"] or "127.0.0.1",
        port=database["PORT"] or 5432,
        user=database["USER"],
        password=database["PASSWORD"],
        dbname=database["NAME"],
        autocommit=True,
    ) as direct:
        fresh = session_settings(direct)
    with bouncer.connect(database["NAME"]) as through:
        assert session_settings(through) == fresh
    if pooled.mode == "defaults":
        assert "answers through a pooler" in pooled.daphne.output


async def test_a_listener_through_the_pooler_says_it_would_hear_nothing(pooled):
    """``pgobserve listen`` on the pooled alias: transaction pooling would lose its LISTEN
    (and its leader lock) silently, so it warns; the direct one does not."""
    assert "listener connects through a pooler" not in pooled.listener.output
    # The leader lock's key is the direct listener's: this one stands by (it takes no lock
    # and LISTENs on nothing, which would stay on the pooler's shared server session).
    listener = Process("pooled listener", ["-m", "django", "pgobserve", "listen"], pooled.env)
    try:
        listener.wait_for("pgobserve listener connects through a pooler")
    finally:
        listener.stop()
