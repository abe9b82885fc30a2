"""End to end: database commit → WebSocket client, through daphne, pgobserve and DCRF.

    python bench/bench_ws.py [--updates 300] [--clients 1000] [--rows 100000]

Runs the benchmark site (bench/benchsite) under daphne on a free port against the bench
PostgreSQL (``PGOBSERVE_BENCH_DSN``, else the embedded server), in two modes:

* ``memory``: in-process listener, in-memory channel layer (the demo / one-process mode);
* ``redis``: a separate ``pgobserve listen`` process and channels-redis (production),
  where DCRF's ``ObserverModelInstanceMixin`` on the same model is the baseline.

Prints latency (p50/p99) per path, 1,000 clients on one row, a 100k-row UPDATE with
100 instance + 10 query subscribers, and changes lost across a listener kill/restart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import websockets

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import dsn, percentile, print_table  # noqa: E402

DB = "pgobserve_bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_dsn(base: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(base)
    info["dbname"] = DB
    return psycopg.conninfo.make_conninfo(**info)


def child_env(layer: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent)])
    env["DJANGO_SETTINGS_MODULE"] = "benchsite.settings"
    env["BENCH_LAYER"] = layer
    env["PGOBSERVE_BENCH_DB"] = DB
    return env


def prepare(base: str, rows: int) -> None:
    """Create the bench database, its table, the triggers and ``rows`` rows."""
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    env = child_env("memory")
    manage = [sys.executable, "-m", "django"]
    subprocess.run([*manage, "migrate", "--run-syncdb", "-v0"], env=env, check=True)
    subprocess.run(
        [*manage, "pgobserve", "install"], env=env, check=True, stdout=subprocess.DEVNULL
    )
    with psycopg.connect(bench_dsn(base), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO benchsite_benchitem (value, bucket, note) "
            "SELECT g, g %% 100, 'row ' || g FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE benchsite_benchitem")


class Site:
    """daphne (and, for redis, a listener process) serving the bench site."""

    def __init__(self, layer: str) -> None:
        self.layer = layer
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Site:
        env = child_env(self.layer)
        if self.layer == "redis":
            self.listener = self._start(
                [sys.executable, "-m", "django", "pgobserve", "listen"], env
            )
        self._start(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "benchsite.asgi:application"],
            env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("daphne did not start")

    def _start(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def restart_listener(self) -> None:
        self.listener.send_signal(signal.SIGKILL)
        self.listener.wait(10)
        self.procs.remove(self.listener)
        self.listener = self._start(
            [sys.executable, "-m", "django", "pgobserve", "listen"], child_env(self.layer)
        )

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{path}/"

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def request(ws, message: dict, timeout: float = 30) -> dict:
    await ws.send(json.dumps(message))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if reply["request_id"] == message["request_id"] and reply["action"] == message["action"]:
            assert reply["response_status"] in (200, 201, 204), reply
            return reply


async def next_push(ws, timeout: float = 10) -> dict:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if message["action"] in ("update", "create", "delete"):
            return message


async def warm_up(ws, writer, pk: int) -> None:
    """Until the listener LISTENs (in-process: started by the first socket), writes may
    not be seen; write until one push arrives, then drain."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await writer.execute(
            "UPDATE benchsite_benchitem SET value = value + 1 WHERE id = %s", (pk,)
        )
        try:
            await next_push(ws, timeout=0.5)
            break
        except asyncio.TimeoutError:
            continue
    while True:  # drain
        try:
            await asyncio.wait_for(ws.recv(), 0.3)
        except asyncio.TimeoutError:
            return


async def raw_latency(site: Site, conninfo: str, updates: int) -> list[float]:
    """psycopg UPDATE from outside Django → the subscriber's ``update`` push."""
    writer = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    async with websockets.connect(site.url("pgobserve"), max_queue=None) as ws:
        await request(ws, {"action": "subscribe_instance", "pk": 1, "request_id": 1})
        await warm_up(ws, writer, 1)
        times = []
        for _ in range(updates):
            start = time.perf_counter()
            await writer.execute("UPDATE benchsite_benchitem SET value = value + 1 WHERE id = 1")
            await next_push(ws)
            times.append(time.perf_counter() - start)
    await writer.close()
    return times


async def orm_latency(site: Site, path: str, pk: int, updates: int) -> list[float]:
    """ORM ``save()`` in this process → the subscriber's push (DCRF observes only these)."""
    import benchsite.consumers  # noqa: F401  (DCRF connects its signals when imported)
    from asgiref.sync import sync_to_async
    from benchsite.models import BenchItem

    item = await sync_to_async(BenchItem.objects.get)(pk=pk)
    async with websockets.connect(site.url(path), max_queue=None) as ws:
        await request(ws, {"action": "subscribe_instance", "pk": pk, "request_id": 1})
        times = []
        for i in range(updates + 20):
            item.value += 1
            start = time.perf_counter()
            await sync_to_async(item.save)()
            await next_push(ws)
            if i >= 20:  # the first saves warm up connections and the listener
                times.append(time.perf_counter() - start)
    return times


async def fan_out(site: Site, conninfo: str, clients: int, path: str = "pgobserve") -> list[float]:
    """``clients`` sockets subscribed to one row; one UPDATE; time until each gets it."""
    sockets = []
    for i in range(clients):
        ws = await websockets.connect(site.url(path), max_queue=None)
        await request(ws, {"action": "subscribe_instance", "pk": 3, "request_id": i})
        sockets.append(ws)
    writer = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    await warm_up(sockets[0], writer, 3)
    for ws in sockets[1:]:  # the warm-up pushes reached every socket: drain them
        while True:
            try:
                await asyncio.wait_for(ws.recv(), 0.05)
            except asyncio.TimeoutError:
                break
    start = time.perf_counter()
    await writer.execute("UPDATE benchsite_benchitem SET value = value + 1 WHERE id = 3")

    async def receive(ws) -> float:
        await next_push(ws, timeout=60)
        return time.perf_counter() - start

    times = await asyncio.gather(*(receive(ws) for ws in sockets))
    await writer.close()
    await asyncio.gather(*(ws.close() for ws in sockets))
    return list(times)


async def bulk_update(site: Site, conninfo: str, rows: int) -> tuple[float, int]:
    """100 instance + 10 query subscribers; a ``rows``-row UPDATE; time until all updated."""
    instance_pks = [1 + i * (rows // 100) for i in range(100)]
    sockets = []
    expected = []
    for i, pk in enumerate(instance_pks):
        ws = await websockets.connect(site.url("pgobserve"), max_queue=None)
        await request(ws, {"action": "subscribe_instance", "pk": pk, "request_id": i})
        sockets.append(ws)
        expected.append(1)
    for bucket in range(10):
        ws = await websockets.connect(site.url("pgobserve"), max_queue=None)
        reply = await request(
            ws,
            {"action": "subscribe_query", "filters": {"bucket": bucket}, "request_id": bucket},
        )
        sockets.append(ws)
        expected.append(len(reply["data"]))
    writer = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    await warm_up(sockets[0], writer, instance_pks[0])
    start = time.perf_counter()
    await writer.execute("UPDATE benchsite_benchitem SET value = value + 1")
    committed = time.perf_counter()

    async def receive(ws, count: int) -> None:
        for _ in range(count):
            await next_push(ws, timeout=60)

    await asyncio.gather(*(receive(ws, n) for ws, n in zip(sockets, expected, strict=True)))
    elapsed = time.perf_counter() - committed
    del start
    await writer.close()
    await asyncio.gather(*(ws.close() for ws in sockets))
    return elapsed, sum(expected)


async def lost_across_restart(site: Site, conninfo: str) -> tuple[int, int]:
    """A query subscriber's rows vs the database after changes made while the listener was
    killed (SIGKILL) and restarted. Returns (rows compared, rows that differ)."""
    writer = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    async with websockets.connect(site.url("pgobserve"), max_queue=None) as ws:
        reply = await request(
            ws, {"action": "subscribe_query", "filters": {"bucket": 7}, "request_id": 9}
        )
        held = {row["id"]: row for row in reply["data"]}
        site.restart_listener()  # killed now; the new one takes a moment to LISTEN
        await writer.execute(
            "UPDATE benchsite_benchitem SET value = value + 1000 WHERE bucket = 7 AND id % 3 = 0"
        )
        await writer.execute(
            "UPDATE benchsite_benchitem SET bucket = 8 WHERE bucket = 7 AND id % 5 = 0"
        )
        await writer.execute("DELETE FROM benchsite_benchitem WHERE bucket = 7 AND id % 7 = 0")
        cur = await writer.execute(
            "SELECT id, value, bucket, note FROM benchsite_benchitem WHERE bucket = 7"
        )
        truth = {
            r[0]: {"id": r[0], "value": r[1], "bucket": r[2], "note": r[3]}
            for r in await cur.fetchall()
        }
        deadline = time.monotonic() + 30
        while held != truth and time.monotonic() < deadline:
            try:
                push = await next_push(ws, timeout=1)
            except asyncio.TimeoutError:
                continue
            if push["action"] == "delete":
                held.pop(push["data"]["pk"], None)
            else:
                held[push["data"]["id"]] = push["data"]
    await writer.close()
    differ = len(set(held) ^ set(truth)) + sum(
        1 for k in set(held) & set(truth) if held[k] != truth[k]
    )
    return len(truth), differ


def ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p) * 1000:.1f} ms"


def run_mode(layer: str, args) -> dict:
    import django

    os.environ.update(child_env(layer))
    django.setup()
    conninfo = bench_dsn(os.environ["PGOBSERVE_BENCH_DSN"])
    out: dict = {}
    with Site(layer) as site:
        out["raw"] = asyncio.run(raw_latency(site, conninfo, args.updates))
        out["orm"] = asyncio.run(orm_latency(site, "pgobserve", 4, args.updates))
        if layer == "redis":
            out["dcrf"] = asyncio.run(orm_latency(site, "dcrf", 5, args.updates))
            out["lost"] = asyncio.run(lost_across_restart(site, conninfo))
        else:
            out["fanout"] = asyncio.run(fan_out(site, conninfo, args.clients))
            out["fanout_private"] = asyncio.run(
                fan_out(site, conninfo, args.clients, "pgobserve-private")
            )
            out["bulk"] = asyncio.run(bulk_update(site, conninfo, args.rows))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--mode", choices=["memory", "redis"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # a child run: one layer per process, since settings are per process
        print(json.dumps(run_mode(args.mode, args)))
        return
    base = dsn()
    os.environ["PGOBSERVE_BENCH_DSN"] = base
    prepare(base, args.rows)
    results = {}
    for layer in ("memory", "redis"):
        prepare(base, args.rows)
        done = subprocess.run(
            [sys.executable, __file__, "--mode", layer, "--updates", str(args.updates),
             "--clients", str(args.clients), "--rows", str(args.rows)],
            env=os.environ, check=True, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        results[layer] = json.loads(done.stdout.strip().splitlines()[-1])
    with psycopg.connect(base) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    mem, red = results["memory"], results["redis"]
    print(f"PostgreSQL {version}; {args.updates} single-row updates per path; 2 cores")
    print_table(
        "commit -> WebSocket client latency (single-row UPDATE, one subscriber)",
        [
            ("in-process listener, memory layer", "psycopg UPDATE (outside Django)",
             ms(mem["raw"], 50), ms(mem["raw"], 99)),
            ("in-process listener, memory layer", "ORM save()", ms(mem["orm"], 50),
             ms(mem["orm"], 99)),
            ("listener process, Redis layer", "psycopg UPDATE (outside Django)",
             ms(red["raw"], 50), ms(red["raw"], 99)),
            ("listener process, Redis layer", "ORM save()", ms(red["orm"], 50),
             ms(red["orm"], 99)),
            ("DCRF 1.3.0 (baseline), Redis layer", "ORM save()", ms(red["dcrf"], 50),
             ms(red["dcrf"], 99)),
        ],
        ("pgobserve mode", "write", "p50", "p99"),
    )  # fmt: skip
    ratio = percentile(red["orm"], 50) / percentile(red["dcrf"], 50)
    print(f"\npgobserve / DCRF p50 latency for an ORM save on the Redis layer: {ratio:.2f}")
    print_table(
        "fan-out and bulk (in-process listener, memory layer)",
        [
            (f"{args.clients} clients on one row, one UPDATE, share_reads = False (baseline)",
             "p50 " + ms(mem["fanout_private"], 50), "p99 " + ms(mem["fanout_private"], 99)),
            (f"{args.clients} clients on one row, one UPDATE, share_reads = True",
             "p50 " + ms(mem["fanout"], 50), "p99 " + ms(mem["fanout"], 99)),
            (f"{args.rows:,}-row UPDATE, 100 instance + 10 query subscribers",
             f"{mem['bulk'][1]:,} pushes", f"all delivered {mem['bulk'][0] * 1000:.0f} ms"),
        ],
        ("scenario", "", "result"),
    )  # fmt: skip
    compared, differ = red["lost"]
    print_table(
        "listener killed (SIGKILL) and restarted while rows change (Redis layer)",
        [(f"{compared} rows of a query subscription", f"{differ} differ from the database")],
        ("compared", "lost or stale after resync"),
    )


if __name__ == "__main__":
    main()
