"""End-to-end fixtures: daphne (and a listener) as real processes on the test database.

``live`` is the running server, once per mode and session:

* ``inprocess``: daphne with ``IN_PROCESS_LISTENER`` and the in-memory channel layer;
* ``redis``: ``manage.py pgobserve listen`` as its own process, daphne without a listener,
  both on the Redis channel layer (``REDIS_URL``, or a Redis answering on 127.0.0.1:6379;
  CI sets ``REDIS_URL`` so this mode always runs there).

Every wait is bounded: on process output (a line in its log) or on a WebSocket message.
"""

from __future__ import annotations

import asyncio
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
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import websockets
from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections

from tests.fix_layer import find_redis

ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT = 10.0  # seconds any single message may take: a bound, not a target (loaded CI)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child process whose merged output is collected, so tests can wait for a line."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while text not in self.output:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.name}: no {text!r} within {timeout}s "
                        f"(exit code {self.proc.poll()}):\n{self.output[-3000:]}"
                    )
                self.changed.wait(min(remaining, 0.5))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_servers(
    env: dict[str, str], started: list[Process], listener: bool, *listen_args: str
) -> tuple[Process | None, Process, int]:
    """``pgobserve listen [listen_args]`` (if ``listener``), then daphne on a free port, each
    appended to ``started`` as soon as it runs (the caller stops them); (listener, daphne,
    port)."""
    found = None
    if listener:
        found = Process("listener", ["-m", "django", "pgobserve", "listen", *listen_args], env)
        started.append(found)
        found.wait_for("LISTENs on channel")
    port = free_port()
    daphne = Process(
        "daphne",
        ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "tests.e2e.asgi:application"],
        env,
    )
    started.append(daphne)
    daphne.wait_for("Listening on TCP address")
    return found, daphne, port


class Live:
    def __init__(
        self,
        mode: str,
        port: int,
        daphne: Process,
        listener: Process | None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.mode, self.port, self.daphne, self.listener = mode, port, daphne, listener
        self.env = env or {}  # the processes' environment

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="session", params=["inprocess", "redis"])
def live(request, django_db_setup, test_dbname) -> Iterator[Live]:
    mode = request.param
    redis_url = find_redis()
    if mode == "redis" and not redis_url:
        pytest.skip("no Redis: set REDIS_URL (CI does) or run redis-server on 127.0.0.1:6379")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.e2e.settings",
        "PGOBSERVE_TEST_DBNAME": test_dbname,
        "PGOBSERVE_TEST_LOCK_KEY": str(random.randrange(1, 2**31)),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    if mode == "redis":
        env.update(
            PGOBSERVE_TEST_LAYER="redis",
            REDIS_URL=redis_url,
            PGOBSERVE_TEST_REDIS_PREFIX=f"pgobserve-e2e-{uuid.uuid4().hex[:8]}",
            PGOBSERVE_TEST_IN_PROCESS="0",
        )
    else:
        env.update(PGOBSERVE_TEST_LAYER="memory", PGOBSERVE_TEST_IN_PROCESS="1")
    started: list[Process] = []
    try:
        listener, daphne, port = start_servers(env, started, listener=mode == "redis")
        if mode == "inprocess":
            # The first connection starts the in-process listener; wait until it LISTENs.
            from websockets.sync.client import connect

            with connect(f"ws://127.0.0.1:{port}/ws/tasks/", open_timeout=TIMEOUT):
                daphne.wait_for("LISTENs on channel")
        yield Live(mode, port, daphne, listener)
    finally:
        for process in reversed(started):
            process.stop()


@pytest.fixture
async def db(transactional_db) -> AsyncIterator[Any]:
    """Run ORM code from async tests; the thread's connection is closed afterwards."""

    async def run(fn, *args, **kwargs):
        return await sync_to_async(fn)(*args, **kwargs)

    yield run
    await sync_to_async(connections.close_all)()


def as_json(data: Any) -> Any:
    """What a client receives for ``data`` (UUIDs, datetimes... as JSON gives them)."""
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def envelope(
    action: str | None, data: Any = None, status: int = 200, request_id: Any = None, errors=None
) -> dict[str, Any]:
    return {
        "errors": errors or [],
        "data": data,
        "action": action,
        "response_status": status,
        "request_id": request_id,
    }


class Client:
    """A websockets client speaking JSON; every receive is bounded by ``TIMEOUT``."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def send(self, message: Any) -> None:
        await self.conn.send(message if isinstance(message, str) else json.dumps(message))

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        try:
            return json.loads(await asyncio.wait_for(self.conn.recv(), timeout))
        except asyncio.TimeoutError:
            raise AssertionError(f"no message within {timeout}s") from None

    async def ask(self, message: Any) -> Any:
        await self.send(message)
        return await self.recv()

    async def recv_many(self, count: int) -> list[Any]:
        return [await self.recv() for _ in range(count)]


@asynccontextmanager
async def connect(live: Live, path: str, cookie: str | None = None) -> AsyncIterator[Client]:
    headers = {"Cookie": cookie} if cookie else None
    async with websockets.connect(
        live.url(path), additional_headers=headers, open_timeout=TIMEOUT, close_timeout=2
    ) as conn:
        yield Client(conn)
