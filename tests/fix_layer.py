"""A running listener and a channel layer to receive its group messages in the test.

With Redis (``REDIS_URL``, or a server answering on 127.0.0.1:6379) the listener is a real
process, ``python -m django pgobserve listen`` with ``tests.settings``, sending through
channels-redis, and the test receives through its own RedisChannelLayer with the same prefix.
Without Redis the same tests run the listener as an asyncio task of the test with the
InMemory layer (the embedded mode): the process-only checks (exit code) are skipped, the
rest still runs. CI sets ``REDIS_URL``, so there the process path always runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgobserve import conf, groups
from pgobserve.listener import Listener

ROOT = Path(__file__).resolve().parent.parent
PREFIX = os.environ.setdefault(
    "PGOBSERVE_TEST_REDIS_PREFIX", f"pgobserve-test-{uuid.uuid4().hex[:10]}"
)


def find_redis() -> str | None:
    """REDIS_URL, else a Redis answering on 127.0.0.1:6379, else None."""
    if os.environ.get("PGOBSERVE_TEST_NO_REDIS"):  # to try the fallback on a machine with Redis
        return None
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return "redis://127.0.0.1:6379/0"
    except OSError:
        pass
    return None


REDIS_URL = find_redis()


async def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


class ProcessListener:
    """``manage.py pgobserve listen`` as a child process on the test database and Redis."""

    def __init__(self, dbname: str, name: str) -> None:
        self.name = name
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PGOBSERVE_TEST_DBNAME": dbname,
            "PGOBSERVE_TEST_LAYER": "redis",
            "REDIS_URL": REDIS_URL or "",
            "PGOBSERVE_TEST_REDIS_PREFIX": PREFIX,
            "PGAPPNAME": name,  # to find its backend in pg_stat_activity
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "django", "pgobserve", "listen"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def wait_log(self, text: str, timeout: float = 20) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and text not in self.output:
                raise AssertionError(f"listener exited {self.proc.returncode}:\n{self.output}")
            return text in self.output

        await wait_for(seen, timeout, f"{text!r} in the listener's log")

    async def stop(self, timeout: float = 10) -> int:
        self.proc.send_signal(signal.SIGTERM)
        await wait_for(lambda: self.proc.poll() is not None, timeout, "the listener to exit")
        return self.proc.returncode

    async def kill(self) -> None:
        self.proc.kill()
        await wait_for(lambda: self.proc.poll() is not None, 10, "the listener to die")

    async def close(self) -> None:
        if self.proc.poll() is None:
            await self.kill()


class TaskListener:
    """The same listener as a task of the test's event loop (embedded mode)."""

    def __init__(self, conninfo: dict[str, Any], name: str, layer: Any) -> None:
        self.name = name
        self.listener = Listener({**conninfo, "application_name": name}, channel_layer=layer)
        self.task = asyncio.create_task(self.listener.run())

    async def stop(self, timeout: float = 10) -> int:
        self.listener.stop()
        await asyncio.wait_for(self.task, timeout)  # re-raises if the listener failed
        return 0

    async def kill(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def close(self) -> None:
        if not self.task.done():
            await self.kill()


class Receiver:
    """One channel of the layer, added to some groups; collects what arrives."""

    def __init__(self, layer: Any, channel: str) -> None:
        self.layer, self.channel = layer, channel
        self.messages: list[dict[str, Any]] = []

    def changes(self, table: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if m["type"] == "pgobserve.change" and (table is None or m["table"] == table)
        ]

    def pks(self, table: str) -> list[Any]:
        return [pk for m in self.changes(table) for pk in (m["pks"] or ())]

    def resyncs(self) -> int:
        return sum(m["type"] == "pgobserve.resync" for m in self.messages)

    async def until(self, predicate: Callable[[Receiver], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not received in {timeout}s; got {self.messages!r:.1500}")
            try:
                message = await asyncio.wait_for(self.layer.receive(self.channel), remaining)
            except asyncio.TimeoutError:
                continue
            self.messages.append(message)


class Live:
    """Start listeners, subscribe channels, write rows from a connection outside Django."""

    def __init__(self, conninfo: dict[str, Any], dbname: str) -> None:
        self.conninfo, self.dbname = conninfo, dbname
        self.mode = "process" if REDIS_URL else "task"
        if REDIS_URL:
            from channels_redis.core import RedisChannelLayer

            hosts = [{"address": REDIS_URL, "socket_timeout": None}]
            self.layer = RedisChannelLayer(hosts=hosts, prefix=PREFIX, capacity=100_000)
        else:
            from channels.layers import InMemoryChannelLayer

            self.layer = InMemoryChannelLayer(capacity=100_000)
        self.listeners: list[ProcessListener | TaskListener] = []
        self.conn: psycopg.AsyncConnection | None = None

    def start(self) -> ProcessListener | TaskListener:
        name = f"pgobserve-test-{uuid.uuid4().hex[:8]}"
        if self.mode == "process":
            handle: ProcessListener | TaskListener = ProcessListener(self.dbname, name)
        else:
            handle = TaskListener(self.conninfo, name, self.layer)
        self.listeners.append(handle)
        return handle

    async def receiver(self, *group_names: str) -> Receiver:
        receiver = Receiver(self.layer, await self.layer.new_channel())
        for group in group_names:
            await self.layer.group_add(group, receiver.channel)
        return receiver

    async def execute(self, query: str, params: Any = None) -> list[tuple]:
        if self.conn is None:
            self.conn = await psycopg.AsyncConnection.connect(**self.conninfo, autocommit=True)
        cursor = await self.conn.execute(query, params)
        return await cursor.fetchall() if cursor.description else []

    async def leader(self) -> str | None:
        """application_name of the backend holding the leader lock, if any."""
        rows = await self.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objid::bigint = %s"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [conf.leader_lock_key() & 0xFFFFFFFF],
        )
        return rows[0][0] if rows else None

    async def backend_pid(self, name: str) -> int | None:
        rows = await self.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [name]
        )
        return rows[0][0] if rows else None

    async def sentinel(self, receiver: Receiver, timeout: float = 20) -> None:
        """Commit a sentinel row and wait for it: every earlier commit's messages are in."""
        (pk,) = (await self.execute("INSERT INTO testapp_sentinel DEFAULT VALUES RETURNING id"))[0]
        await receiver.until(lambda r: pk in r.pks("testapp_sentinel"), timeout)

    async def close(self) -> None:
        from asgiref.sync import sync_to_async
        from django.db import connections

        # ORM calls made through sync_to_async opened connections in its worker thread.
        await sync_to_async(connections.close_all)()
        for handle in self.listeners:
            await handle.close()
        if self.conn is not None:
            await self.conn.close()
        if hasattr(self.layer, "flush"):
            await self.layer.flush()
        if hasattr(self.layer, "close_pools"):
            await self.layer.close_pools()


@pytest.fixture
async def live(conninfo, test_dbname, transactional_db) -> AsyncIterator[Live]:
    live = Live(conninfo, test_dbname)
    yield live
    await live.close()


def table_and_sentinel(table: str) -> tuple[str, str]:
    return groups.table_group(table), groups.table_group("testapp_sentinel")
