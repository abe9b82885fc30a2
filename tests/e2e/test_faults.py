"""Faults on the consumer side, with real processes: every client ends equal to the database.

Each test runs daphne (and, with Redis, a ``pgobserve listen`` process) on a throwaway
PostgreSQL of this module (``tests/servers.py``), so slots can be exhausted and connections
cut without touching the machine's server. Clients (``Mirror``) subscribe to rows and to a
query, and keep what they were sent; a writer commits throughout the fault. Once the fault
has cleared and the writer stopped, every mirror must equal a fresh snapshot within 5 s
(``CONVERGE``), and no socket may have been closed by the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio
import websockets
from channels_redis.core import RedisChannelLayer

from pgobserve import conf, groups
from pgobserve.consumers import DATABASE_UNAVAILABLE
from tests.servers import ThrowawayPostgres, ThrowawayRedis

from .conftest import ROOT, TIMEOUT, Process, start_servers

pytestmark = pytest.mark.slow

#: How long after the fault clears (and the writer stops) every client must be right.
CONVERGE = 5.0
PROJECTS, TASKS = 3, 60


# servers and the stack --------------------------------------------------------------------


def _env(uri: str, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PGOBSERVE_TEST_DBNAME", "DATABASE_URL", "REDIS_URL")
    }
    return {
        **env,
        "DJANGO_SETTINGS_MODULE": "tests.e2e.settings",
        "PGOBSERVE_TEST_DSN": uri,
        "PGOBSERVE_TEST_LOCK_KEY": str(random.randrange(1, 2**31)),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def pg() -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL with the test schema and pgobserve's triggers."""
    server = ThrowawayPostgres(max_connections=30)
    try:
        env = _env(server.uri)
        for command in (["migrate", "--noinput"], ["pgobserve", "install"]):
            subprocess.run(
                [sys.executable, "-m", "django", *command],
                cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server() -> Iterator[ThrowawayRedis]:
    try:
        server = ThrowawayRedis()
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def stack(
    pg: ThrowawayPostgres, redis: ThrowawayRedis | None = None, **env: str
) -> Iterator[Process]:
    """daphne on ``pg`` (in-process listener and memory layer, or a listener process and
    ``redis``); yields daphne, with its ``port``. ``env``: extra settings (tests/settings.py,
    tests/e2e/settings.py)."""
    settings = _env(pg.uri, **env)
    if redis is not None:
        settings.update(
            PGOBSERVE_TEST_LAYER="redis", REDIS_URL=redis.url, PGOBSERVE_TEST_IN_PROCESS="0"
        )
    else:
        settings.update(PGOBSERVE_TEST_LAYER="memory", PGOBSERVE_TEST_IN_PROCESS="1")
    started: list[Process] = []
    try:
        _, daphne, port = start_servers(settings, started, listener=redis is not None)
        daphne.port = port
        yield daphne
        for process in started:
            unexpected = unexpected_tracebacks(process.output)
            assert not unexpected, "\n---\n".join(tb[-3000:] for tb in unexpected)
    finally:
        for process in reversed(started):
            process.stop()


#: A traceback pgobserve cannot prevent: channels-redis cleans up after each receive in a
#: fire-and-forget task, which asyncio reports ("Task exception was never retrieved") when
#: Redis dies under it. The socket is unaffected; pgobserve's own code logs no traceback.
CHANNELS_REDIS_BACKGROUND_TASK = "in _clean_receive_backup"


#: How a traceback says it continues with the next one (one chain of exceptions).
CHAINED = ("another exception occurred:", "the direct cause of the following exception:")


def unexpected_tracebacks(output: str) -> list[str]:
    """The tracebacks in a process's output (a chain of exceptions counts as one), but for
    channels-redis's background task."""
    chains: list[str] = []
    joined = False
    for part in output.split("Traceback (most recent call last):")[1:]:
        if joined:
            chains[-1] += part
        else:
            chains.append(part)
        joined = part.rstrip().endswith(CHAINED)
    return [chain for chain in chains if CHANNELS_REDIS_BACKGROUND_TASK not in chain]


def seed(pg: ThrowawayPostgres) -> list[int]:
    """Fresh projects and tasks; returns the task pks."""
    with pg.connect() as conn:
        conn.execute("TRUNCATE tasks_task, tasks_project CASCADE")
        projects = [
            conn.execute(
                "INSERT INTO tasks_project (name, slug) VALUES (%s, %s) RETURNING id",
                [f"P{i}", f"p{i}"],
            ).fetchone()[0]
            for i in range(PROJECTS)
        ]
        return [
            conn.execute(
                "INSERT INTO tasks_task (project_id, title, done, notes, updated_at) "
                "VALUES (%s, %s, false, '', now()) RETURNING id",
                [projects[i % PROJECTS], f"task {i}"],
            ).fetchone()[0]
            for i in range(TASKS)
        ]


class Writer:
    """Commits single-row and bulk UPDATEs (and the odd DELETE/INSERT) on its own connection,
    opened before any fault, until stopped."""

    def __init__(self, pg: ThrowawayPostgres, pks: list[int]) -> None:
        self.conn = pg.connect()
        self.pks = list(pks)
        self.commits = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._write()
        except BaseException as exc:
            self.error = exc

    def _write(self) -> None:
        rng = random.Random(7)
        while not self._stop.is_set():
            choice = rng.random()
            if choice < 0.1:
                self.conn.execute(
                    "UPDATE tasks_task SET done = NOT done, updated_at = now() WHERE id %% 7 = %s",
                    [rng.randrange(7)],
                )
            elif choice < 0.13 and len(self.pks) > TASKS // 2:
                self.conn.execute("DELETE FROM tasks_task WHERE id = %s", [self.pks.pop()])
            else:
                self.conn.execute(
                    "UPDATE tasks_task SET title = %s, updated_at = now() WHERE id = %s",
                    [f"t{self.commits}", rng.choice(self.pks)],
                )
            self.commits += 1
            self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.conn.close()
        assert self.error is None, f"the writer failed: {self.error!r}"


class Mirror:
    """One socket: instance subscriptions on some rows and one query subscription, and the
    data it holds from the 201s and pushes it got. Any close of the socket is recorded."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.rows: dict[int, Any] = {}  # instance subscriptions: pk → data (None: deleted)
        self.query: dict[int, Any] = {}  # the query subscription: pk → data
        self.closed: Any = None
        self._reader: asyncio.Task | None = None
        self._replies: asyncio.Queue = asyncio.Queue()

    async def start(self, pks: list[int], snapshot: dict[int, Any]) -> None:
        for pk in pks:
            await self.ws.send(
                json.dumps({"action": "subscribe_instance", "pk": pk, "request_id": pk})
            )
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            assert reply["response_status"] == 201, reply
            self.rows[pk] = snapshot.get(pk)
        await self.ws.send(
            json.dumps({"action": "subscribe_query", "filters": {"done": False}, "request_id": "q"})
        )
        reply = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        assert reply["response_status"] == 201, reply
        self.query = {row["id"]: row for row in reply["data"]}
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.apply(json.loads(frame))
        except websockets.ConnectionClosed as exc:
            self.closed = exc
        else:
            self.closed = "closed"

    def apply(self, message: dict) -> None:
        rid, action, data = message["request_id"], message["action"], message["data"]
        assert message["errors"] == [], message
        if rid == "q":
            if action == "delete":
                self.query.pop(data["pk"], None)
            else:
                self.query[data["id"]] = data
        else:
            self.rows[rid] = None if action == "delete" else data

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)


async def truth(port: int) -> tuple[dict[int, Any], dict[int, Any]]:
    """(every task, the not-done tasks), as a fresh client gets them now."""
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws/tasks/") as ws:
        everything, open_ = {}, {}
        for request_id, filters, into in (
            ("all", {}, everything),
            ("open", {"done": False}, open_),
        ):
            await ws.send(json.dumps({"action": "subscribe_query", "filters": filters,
                                 "request_id": request_id}))  # fmt: skip
            reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert reply["response_status"] == 201, reply
            into.update({row["id"]: row for row in reply["data"]})
        return everything, open_


@contextlib.asynccontextmanager
async def mirrors(port: int, pks: list[int], count: int = 10) -> AsyncIterator[list[Mirror]]:
    everything, _ = await truth(port)
    async with contextlib.AsyncExitStack() as stack_:
        found = []
        rng = random.Random(count)
        for _ in range(count):
            ws = await stack_.enter_async_context(
                websockets.connect(f"ws://127.0.0.1:{port}/ws/tasks/", open_timeout=TIMEOUT)
            )
            mirror = Mirror(ws)
            await mirror.start(rng.sample(pks, 5), everything)
            stack_.push_async_callback(mirror.close)
            found.append(mirror)
        yield found


async def assert_converge(port: int, clients: list[Mirror], timeout: float = CONVERGE) -> None:
    """Every client equals a fresh snapshot within ``timeout``; none was closed."""
    deadline = time.monotonic() + timeout
    while True:
        everything, open_ = await truth(port)
        wrong = [
            i for i, m in enumerate(clients)
            if m.query != open_ or any(m.rows[pk] != everything.get(pk) for pk in m.rows)
        ]  # fmt: skip
        closed = [m.closed for m in clients if m.closed is not None]
        assert not closed, f"the server closed sockets: {closed}"
        if not wrong:
            return
        if time.monotonic() > deadline:
            mirror = clients[wrong[0]]
            stale = {pk for pk in mirror.rows if mirror.rows[pk] != everything.get(pk)}
            raise AssertionError(
                f"{len(wrong)} of {len(clients)} clients stale {timeout}s after the fault "
                f"cleared; the first: rows {sorted(stale)}, query differs: {mirror.query != open_}"
            )
        await asyncio.sleep(0.1)


async def run_fault(pg, port: int, fault, clients: int = 10) -> None:
    """Subscribe, start the writer, run ``fault()`` (async, it clears the fault before
    returning), let the writer go on briefly, stop it, and check convergence."""
    pks = seed(pg)
    async with mirrors(port, pks, clients) as found:
        writer = Writer(pg, pks)
        try:
            await fault()
            await asyncio.sleep(0.5)  # writes after the fault cleared, too
        finally:
            writer.stop()
        assert writer.commits > 0
        await assert_converge(port, found)


# the faults -------------------------------------------------------------------------------


async def test_every_connection_slot_taken(pg):
    """Re-reads fail while no connection can be made; they are retried, none forgotten."""
    with stack(pg) as daphne:
        port = daphne.port

        async def fault() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/tasks/") as asking:
                slots = await asyncio.to_thread(pg.take_every_slot)
                try:
                    await asyncio.sleep(0.3)  # daphne's open connections end and are taken
                    # A request meanwhile is told to retry; no traceback is logged for it.
                    await asking.send(json.dumps({"action": "retrieve", "pk": 1, "request_id": 1}))
                    reply = json.loads(await asyncio.wait_for(asking.recv(), TIMEOUT))
                    assert (reply["response_status"], reply["errors"]) == (
                        503,
                        [DATABASE_UNAVAILABLE],
                    ), reply
                    await asyncio.sleep(2)
                finally:
                    await asyncio.to_thread(slots.release)

        await run_fault(pg, port, fault)


async def test_idle_django_connections_cut_by_the_server(pg):
    """CONN_MAX_AGE=60: a cut surfaces on the next query of the kept connection."""
    with stack(pg, PGOBSERVE_TEST_CONN_MAX_AGE="60") as daphne:
        port = daphne.port

        async def fault() -> None:
            await asyncio.sleep(0.3)
            with pg.connect() as admin:
                cut = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend' AND query NOT ILIKE 'LISTEN%%' "
                    "AND query NOT ILIKE '%%pg_try_advisory_lock%%' "
                    "AND query NOT ILIKE 'UPDATE tasks_task%%' AND query NOT ILIKE 'DELETE%%'"
                ).fetchall()
            assert cut, "no Django connection to cut"

        await run_fault(pg, port, fault)


@pytest.mark.parametrize("layer", ["memory", "redis"])
async def test_group_memberships_outlive_group_expiry(pg, layer, request):
    """Memberships expire after group_expiry (3 s here, a day by default); sockets keep
    receiving long after it, on both layers."""
    redis = request.getfixturevalue("redis_server") if layer == "redis" else None
    with stack(pg, redis, PGOBSERVE_TEST_GROUP_EXPIRY="3") as daphne:
        port = daphne.port

        async def fault() -> None:
            await asyncio.sleep(7)

        await run_fault(pg, port, fault)


async def test_redis_restart_keeps_every_socket(pg, redis_server):
    """Redis goes away for 2 s and comes back empty: sockets stay open, re-join, resync."""
    with stack(pg, redis_server) as daphne:
        port = daphne.port

        async def fault() -> None:
            await asyncio.sleep(0.3)
            redis_server.stop()
            await asyncio.sleep(2)
            await asyncio.to_thread(redis_server.start)

        await run_fault(pg, port, fault)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


async def test_sockets_that_never_read_are_bounded_and_closed(pg):
    """Three clients subscribe to 900 rows three times and never read again, while every
    row changes over and over (~0.7 MB of pushes per socket per UPDATE): their consumers stop at the
    high-water mark and close them (4408) after SEND_QUEUE_TIMEOUT; daphne's memory stays
    bounded and reading clients still end equal to the database."""
    budgets = {"SEND_QUEUE_HIGH_WATER": 256 * 1024, "SEND_QUEUE_TIMEOUT": 2}
    with stack(pg, PGOBSERVE_TEST_SETTINGS=json.dumps(budgets)) as daphne:
        port = daphne.port
        pks = seed(pg)
        with pg.connect() as conn:
            project = conn.execute("SELECT min(id) FROM tasks_project").fetchone()[0]
            conn.execute(
                "INSERT INTO tasks_task (project_id, title, done, notes, updated_at) "
                "SELECT %s, 'bulk', false, '', now() FROM generate_series(1, %s)",
                [project, 900 - len(pks)],
            )
        before = rss_mib(daphne.proc.pid)
        async with contextlib.AsyncExitStack() as slow_sockets:
            for _ in range(3):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                slow = await slow_sockets.enter_async_context(
                    websockets.connect(
                        f"ws://127.0.0.1:{port}/ws/tasks/", sock=sock, max_queue=1,
                        max_size=None, open_timeout=TIMEOUT, close_timeout=1,
                    )
                )  # fmt: skip
                for request_id, filters in enumerate(
                    ({}, {"done": False}, {"title__icontains": "-"})
                ):
                    await slow.send(json.dumps({"action": "subscribe_query", "filters": filters,
                                                "request_id": request_id}))  # fmt: skip
                    assert json.loads(await slow.recv())["response_status"] == 201
                # ...and never read again.
            async with mirrors(port, pks, 2) as canaries:
                with pg.connect() as conn:
                    for round_ in range(40):
                        conn.execute(
                            "UPDATE tasks_task SET title = %s, updated_at = now()",
                            [f"{round_}-" + "x" * 190],
                        )
                        if slow_closed(daphne) == 3:
                            break
                        await asyncio.sleep(0.25)
                assert slow_closed(daphne) == 3, daphne.output[-2000:]
                await assert_converge(port, canaries)
            grown = rss_mib(daphne.proc.pid) - before
        assert grown < 40, f"daphne grew by {grown:.0f} MiB"


def slow_closed(daphne: Process) -> int:
    """How many sockets daphne closed for not reading (one log line each)."""
    lines = daphne.output.splitlines()
    return sum(line.startswith("pgobserve closes a socket that does not read") for line in lines)


#: The stopped daphne's channel holds this many messages; the layer drops the rest.
TINY_CAPACITY = 4


async def test_messages_the_layer_drops_are_noticed_and_re_read(pg, redis_server):
    """channels-redis silently drops a group message to a full channel. daphne is stopped
    (SIGSTOP) so its channel fills up with changes of row B; the changes of row A that follow
    are dropped: nothing about A ever reaches the consumer, so without message numbers the
    client would keep A's old value for ever. The listener's announcement of A's group's last
    number (2-4 s later) shows the consumer the gap; it re-reads, and the client gets A's
    last value."""
    prefix = f"pgobserve-drop-{uuid.uuid4().hex[:8]}"
    with stack(
        pg,
        redis_server,
        PGOBSERVE_TEST_LAYER_CAPACITY=str(TINY_CAPACITY),
        PGOBSERVE_TEST_REDIS_PREFIX=prefix,
    ) as daphne:
        pks = seed(pg)
        row_a = pks[0]
        group_a = groups.group_for_pk("tasks_task", row_a, conf.shards())
        row_b = next(pk for pk in pks if groups.group_for_pk("tasks_task", pk, conf.shards())
                     != group_a)  # fmt: skip
        group_b = groups.group_for_pk("tasks_task", row_b, conf.shards())
        # The probe: a channel of the test in both groups, to know when the listener has
        # sent (or dropped) each change to daphne's channel too.
        probe = RedisChannelLayer(hosts=[{"address": redis_server.url}], prefix=prefix)
        probe_channel = await probe.new_channel(prefix="probe")
        await probe.group_add(group_a, probe_channel)
        await probe.group_add(group_b, probe_channel)
        store = redis.asyncio.from_url(redis_server.url)
        stopped = False
        try:
            async with websockets.connect(
                f"ws://127.0.0.1:{daphne.port}/ws/tasks/", open_timeout=TIMEOUT
            ) as ws:
                for pk, request_id in ((row_a, "a"), (row_b, "b")):
                    await ws.send(json.dumps({"action": "subscribe_instance", "pk": pk,
                                              "request_id": request_id}))  # fmt: skip
                    reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                    assert reply["response_status"] == 201, reply
                # The consumer's first message of each group: where it counts from.
                for pk, request_id, group in ((row_a, "a", group_a), (row_b, "b", group_b)):
                    await update_title(pg, pk, f"{request_id}0", probe, probe_channel, group)
                    await push_of(ws, request_id, f"{request_id}0")

                os.kill(daphne.proc.pid, signal.SIGSTOP)
                stopped = True
                daphne_key, filled = None, 0
                while daphne_key is None or await store.zcard(daphne_key) < TINY_CAPACITY:
                    filled += 1
                    assert filled <= TINY_CAPACITY + 5, "daphne's channel does not fill up"
                    await update_title(pg, row_b, f"b{filled}", probe, probe_channel, group_b)
                    keys = [key async for key in store.scan_iter(match=f"{prefix}specific.*!")]
                    daphne_key = keys[0] if len(keys) == 1 else None
                for n in range(1, 4):
                    await update_title(pg, row_a, f"a{n}", probe, probe_channel, group_a)
                # Sent, and dropped: no change of A's group is in daphne's channel.
                held = [probe.deserialize(m) for m in await store.zrange(daphne_key, 0, -1)]
                assert len(held) == TINY_CAPACITY
                assert not [
                    m for m in held if m["type"] == "pgobserve.change" and m["group"] == group_a
                ], held

                os.kill(daphne.proc.pid, signal.SIGCONT)
                stopped = False
                await push_of(ws, "a", "a3", timeout=10)
                await asyncio.to_thread(
                    daphne.wait_for, f"missed change messages of {group_a}", TIMEOUT
                )
        finally:
            if stopped:
                os.kill(daphne.proc.pid, signal.SIGCONT)
            await store.aclose()
            await probe.flush()


async def update_title(pg, pk: int, title: str, probe, channel: str, group: str) -> None:
    """Commit a new title for task ``pk`` and wait until the listener sent its change to
    ``group`` (the probe got it): one commit, one message."""
    await asyncio.to_thread(pg_execute, pg, "UPDATE tasks_task SET title = %s WHERE id = %s",
                            [title, pk])  # fmt: skip
    deadline = time.monotonic() + TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the listener sent no change of {pk} to {group}"
        message = await asyncio.wait_for(probe.receive(channel), remaining)
        if message["type"] == "pgobserve.change" and message["group"] == group:
            if pk in (message["pks"] or ()):
                return


def pg_execute(pg, query: str, params: list) -> None:
    with pg.connect() as conn:
        conn.execute(query, params)


async def push_of(ws, request_id: str, title: str, timeout: float = TIMEOUT) -> None:
    """Read pushes until the one of ``request_id`` with ``title``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no push of {title!r} to {request_id!r} within {timeout}s"
        try:
            message = json.loads(await asyncio.wait_for(ws.recv(), remaining))
        except asyncio.TimeoutError:
            continue
        assert message["errors"] == [], message
        if message["request_id"] == request_id and (message["data"] or {}).get("title") == title:
            return
