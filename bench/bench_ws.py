"""End to end: database commit → WebSocket client, through daphne, pgobserve and DCRF.

    python bench/bench_ws.py [--updates 300] [--clients 1000] [--rows 100000]
                             [--moves 30] [--only related,observer]
                             [--conn-max-age 0] [--pool]

Runs the benchmark site (bench/benchsite) under daphne on a free port against the bench
PostgreSQL (``PGOBSERVE_BENCH_DSN``, else the embedded server), in two modes:

* ``memory``: in-process listener, in-memory channel layer (the demo / one-process mode);
* ``redis``: a separate ``pgobserve listen`` process and channels-redis (production),
  where DCRF's ``ObserverModelInstanceMixin`` on the same model is the baseline.

Prints latency (p50/p99) per path, 1,000 clients on one row, a 100k-row UPDATE with
100 instance + 10 query subscribers, changes lost across a listener kill/restart, a board's
ownership change moving its 50 cards between two per-owner query subscriptions, and model
observer events (pgobserve's ``model_observer`` against DCRF's). ``--only`` runs some of
these scenarios: latency, fanout, bulk, restart, related, observer. ``--conn-max-age``
sets the site's ``CONN_MAX_AGE`` (0: Django's default; default: none, persistent);
``--pool`` turns on Django 5.1's connection pool (with ``--conn-max-age 0``; psycopg-pool).
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

#: Another name (and Redis prefix) lets two runs share the servers without colliding.
DB = os.environ.get("PGOBSERVE_BENCH_DB", "pgobserve_bench")
SCENARIOS = ("latency", "fanout", "bulk", "restart", "related", "observer")
#: Cards on the board whose owner the ``related`` scenario changes.
CARDS = 50


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
    extra = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), *extra])
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
    # auth first: syncdb creates benchsite's tables before it migrates, and Board's owner
    # needs auth_user.
    subprocess.run([*manage, "migrate", "auth", "-v0"], env=env, check=True)
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
        # Two owners, a board of A's with its cards (``related``); rows for the observers.
        conn.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name,"
            " email, is_staff, is_active, date_joined) SELECT '!', false, name, '', '', '',"
            " false, true, now() FROM unnest(ARRAY['owner-a', 'owner-b']) name"
        )
        conn.execute(
            "INSERT INTO benchsite_board (owner_id, name) "
            "SELECT id, 'board' FROM auth_user WHERE username = 'owner-a'"
        )
        conn.execute(
            "INSERT INTO benchsite_card (board_id, title) "
            "SELECT b.id, 'card ' || g FROM benchsite_board b, generate_series(1, %s) g",
            (CARDS,),
        )
        conn.execute(
            "INSERT INTO benchsite_observeditem (value, note) "
            "SELECT 0, 'item ' || g FROM generate_series(1, 10) g"
        )


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


async def warm_up(ws, writer, pk: int, table: str = "benchsite_benchitem") -> None:
    """Until the listener LISTENs (in-process: started by the first socket), writes may
    not be seen; write until one push arrives, then drain."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await writer.execute(f"UPDATE {table} SET value = value + 1 WHERE id = %s", (pk,))
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


async def related_moves(site: Site, conninfo: str, moves: int) -> dict[str, list[float]]:
    """Two sockets, each with a query subscription on cards of one owner
    (``{"board__owner": id}``, visible through ``benchsite_board``); a psycopg UPDATE of the
    board's owner; time from its commit until the old owner got all ``CARDS`` deletes and
    the new owner all ``CARDS`` creates (``all``), and until the first push (``first``).
    Alternates the owner ``moves`` times."""
    writer = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    cur = await writer.execute(
        "SELECT b.id, a.id, o.id FROM benchsite_board b, auth_user a, auth_user o "
        "WHERE a.username = 'owner-a' AND o.username = 'owner-b'"
    )
    board, owner_a, owner_b = await cur.fetchone()
    async with (
        websockets.connect(site.url("cards"), max_queue=None) as ws_a,
        websockets.connect(site.url("cards"), max_queue=None) as ws_b,
    ):
        socket_of = {owner_a: ws_a, owner_b: ws_b}
        for request_id, (owner, ws) in enumerate(socket_of.items()):
            await request(
                ws,
                {"action": "subscribe_query", "filters": {"board__owner": owner},
                 "request_id": request_id},
            )  # fmt: skip

        async def expect(ws, action: str, timeout: float) -> tuple[float, float]:
            for i in range(CARDS):
                push = await next_push(ws, timeout)
                assert push["action"] == action, push
                if i == 0:
                    first = time.perf_counter()
            return first, time.perf_counter()

        owner = owner_a
        times: dict[str, list[float]] = {"first": [], "all": []}
        for i in range(moves + 2):  # the first two warm up (and start the in-process listener)
            new_owner = owner_b if owner == owner_a else owner_a
            await writer.execute(
                "UPDATE benchsite_board SET owner_id = %s WHERE id = %s", (new_owner, board)
            )
            committed = time.perf_counter()
            timeout = 30 if i < 2 else 10
            done = await asyncio.gather(
                expect(socket_of[owner], "delete", timeout),
                expect(socket_of[new_owner], "create", timeout),
            )
            if i >= 2:
                times["first"].append(min(first for first, _ in done) - committed)
                times["all"].append(max(last for _, last in done) - committed)
            owner = new_owner
    await writer.close()
    return times


async def observer_latency(site: Site, conninfo: str, updates: int) -> list[float]:
    """pgobserve's ``model_observer`` (default group): psycopg UPDATE → the event."""
    writer = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    async with websockets.connect(site.url("activity"), max_queue=None) as ws:
        await warm_up(ws, writer, 1, "benchsite_observeditem")
        times = []
        for _ in range(updates):
            start = time.perf_counter()
            await writer.execute("UPDATE benchsite_observeditem SET value = value + 1 WHERE id = 1")
            push = await next_push(ws)
            times.append(time.perf_counter() - start)
            assert push["action"] == "update" and push["data"]["id"] == 1, push
    await writer.close()
    return times


async def observer_save_latency(
    site: Site, paths: list[str], pk: int, updates: int
) -> dict[str, list[float]]:
    """ORM ``save()`` in this process → the event on one socket per path: pgobserve's
    observer (``activity``, via the triggers and the listener) and, on Redis, DCRF's
    (``dcrf-activity``, via this process's signals) see the same saves, so both are timed
    from the same instant under the same load. Each save also runs DCRF's receivers."""
    import benchsite.consumers  # noqa: F401  (DCRF connects its signals when imported)
    from asgiref.sync import sync_to_async
    from benchsite.models import ObservedItem

    item = await sync_to_async(ObservedItem.objects.get)(pk=pk)
    sockets = [await websockets.connect(site.url(path), max_queue=None) for path in paths]
    times: dict[str, list[float]] = {path: [] for path in paths}

    async def arrival(ws, timeout: float) -> float:
        push = await next_push(ws, timeout)
        assert push["action"] == "update" and push["data"]["id"] == pk, push
        return time.perf_counter()

    for i in range(updates + 20):
        item.value += 1
        start = time.perf_counter()
        await sync_to_async(item.save)()
        arrived = await asyncio.gather(*(arrival(ws, 30 if i == 0 else 10) for ws in sockets))
        if i >= 20:  # the first saves warm up connections and the listener
            for path, at in zip(paths, arrived, strict=True):
                times[path].append(at - start)
    await asyncio.gather(*(ws.close() for ws in sockets))
    return times


def ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p) * 1000:.1f} ms"


def run_mode(layer: str, args) -> dict:
    import django

    os.environ.update(child_env(layer))
    django.setup()
    conninfo = bench_dsn(os.environ["PGOBSERVE_BENCH_DSN"])
    only = args.only
    out: dict = {}
    with Site(layer) as site:
        if "latency" in only:
            out["raw"] = asyncio.run(raw_latency(site, conninfo, args.updates))
            out["orm"] = asyncio.run(orm_latency(site, "pgobserve", 4, args.updates))
            if layer == "redis":
                out["dcrf"] = asyncio.run(orm_latency(site, "dcrf", 5, args.updates))
        if "related" in only:
            out["related"] = asyncio.run(related_moves(site, conninfo, args.moves))
        if "observer" in only:
            out["obs_raw"] = asyncio.run(observer_latency(site, conninfo, args.observer_updates))
            # DCRF's events leave this process only through Redis.
            paths = ["activity", "dcrf-activity"] if layer == "redis" else ["activity"]
            saves = asyncio.run(observer_save_latency(site, paths, 2, args.observer_updates))
            out["obs_orm"] = saves["activity"]
            if layer == "redis":
                out["obs_dcrf"] = saves["dcrf-activity"]
        if layer == "redis" and "restart" in only:  # last: it kills the listener
            out["lost"] = asyncio.run(lost_across_restart(site, conninfo))
        if layer == "memory" and "fanout" in only:
            out["fanout"] = asyncio.run(fan_out(site, conninfo, args.clients))
            out["fanout_private"] = asyncio.run(
                fan_out(site, conninfo, args.clients, "pgobserve-private")
            )
        if layer == "memory" and "bulk" in only:
            out["bulk"] = asyncio.run(bulk_update(site, conninfo, args.rows))
    return out


def scenarios(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenarios {sorted(unknown)}; choose among {', '.join(SCENARIOS)}"
        )
    return chosen


def conn_max_age(text: str) -> str:
    if text.lower() == "none":
        return "none"
    if not text.isdigit():
        raise argparse.ArgumentTypeError("seconds (0, 600, ...) or none")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--moves", type=int, default=30, help="board owner changes (related)")
    parser.add_argument("--observer-updates", type=int, default=200, help="per observer path")
    parser.add_argument(
        "--only", type=scenarios, default=list(SCENARIOS), help=", ".join(SCENARIOS)
    )
    parser.add_argument(
        "--conn-max-age",
        type=conn_max_age,
        default="none",
        help="the site's CONN_MAX_AGE in seconds, or none (persistent, the default)",
    )
    parser.add_argument(
        "--pool", action="store_true", help="Django's connection pool (OPTIONS pool)"
    )
    parser.add_argument("--mode", choices=["memory", "redis"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    # Read by benchsite/settings.py, in this process and its children.
    os.environ["BENCH_CONN_MAX_AGE"] = args.conn_max_age
    os.environ["BENCH_POOL"] = "1" if args.pool else "0"
    if args.mode:  # a child run: one layer per process, since settings are per process
        print(json.dumps(run_mode(args.mode, args)))
        return
    base = dsn()
    os.environ["PGOBSERVE_BENCH_DSN"] = base
    results = {}
    for layer in ("memory", "redis"):
        prepare(base, args.rows)
        done = subprocess.run(
            [sys.executable, __file__, "--mode", layer, "--updates", str(args.updates),
             "--clients", str(args.clients), "--rows", str(args.rows),
             "--moves", str(args.moves), "--observer-updates", str(args.observer_updates),
             "--only", ",".join(args.only), "--conn-max-age", args.conn_max_age,
             *(["--pool"] if args.pool else [])],
            env=os.environ, check=True, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        results[layer] = json.loads(done.stdout.strip().splitlines()[-1])
    with psycopg.connect(base) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    mem, red = results["memory"], results["redis"]
    print(
        f"PostgreSQL {version}; {os.cpu_count()} cores; scenarios: {', '.join(args.only)};"
        f" CONN_MAX_AGE {args.conn_max_age}{'; pool' if args.pool else ''}"
    )
    if "latency" in args.only:
        print_table(
            f"commit -> WebSocket client latency (single-row UPDATE, one subscriber,"
            f" {args.updates} updates per path)",
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
    if "related" in args.only:
        print_table(
            f"board owner changed by psycopg -> {CARDS} deletes to the old owner's and"
            f" {CARDS} creates to the new owner's query subscription ({args.moves} changes)",
            [
                (mode, ms(res["related"]["all"], 50), ms(res["related"]["all"], 99),
                 ms(res["related"]["all"], 100), ms(res["related"]["first"], 50))
                for mode, res in (
                    ("in-process listener, memory layer", mem),
                    ("listener process, Redis layer", red),
                )
            ],
            ("pgobserve mode", "all 100 pushes p50", "p99", "max", "first push p50"),
        )  # fmt: skip
    if "observer" in args.only:
        print_table(
            f"model observer event latency (default group, one subscriber,"
            f" {args.observer_updates} updates per path)",
            [
                ("pgobserve model_observer, in-process listener, memory layer",
                 "psycopg UPDATE (outside Django)", ms(mem["obs_raw"], 50),
                 ms(mem["obs_raw"], 99)),
                ("pgobserve model_observer, in-process listener, memory layer", "ORM save()",
                 ms(mem["obs_orm"], 50), ms(mem["obs_orm"], 99)),
                ("pgobserve model_observer, listener process, Redis layer",
                 "psycopg UPDATE (outside Django)", ms(red["obs_raw"], 50),
                 ms(red["obs_raw"], 99)),
                ("pgobserve model_observer, listener process, Redis layer", "ORM save()",
                 ms(red["obs_orm"], 50), ms(red["obs_orm"], 99)),
                ("DCRF 1.3.0 model_observer (baseline), Redis layer", "the same ORM save()s",
                 ms(red["obs_dcrf"], 50), ms(red["obs_dcrf"], 99)),
            ],
            ("observer", "write", "p50", "p99"),
        )  # fmt: skip
        ratio = percentile(red["obs_orm"], 50) / percentile(red["obs_dcrf"], 50)
        print(f"\npgobserve / DCRF model observer p50 for an ORM save on Redis: {ratio:.2f}")
    if "fanout" in args.only or "bulk" in args.only:
        rows = []
        if "fanout" in args.only:
            rows += [
                (f"{args.clients} clients on one row, one UPDATE, share_reads = False"
                 " (baseline)",
                 "p50 " + ms(mem["fanout_private"], 50), "p99 " + ms(mem["fanout_private"], 99)),
                (f"{args.clients} clients on one row, one UPDATE, share_reads = True",
                 "p50 " + ms(mem["fanout"], 50), "p99 " + ms(mem["fanout"], 99)),
            ]  # fmt: skip
        if "bulk" in args.only:
            rows.append(
                (f"{args.rows:,}-row UPDATE, 100 instance + 10 query subscribers",
                 f"{mem['bulk'][1]:,} pushes", f"all delivered {mem['bulk'][0] * 1000:.0f} ms")
            )  # fmt: skip
        print_table(
            "fan-out and bulk (in-process listener, memory layer)", rows, ("scenario", "", "result")
        )
    if "restart" in args.only:
        compared, differ = red["lost"]
        print_table(
            "listener killed (SIGKILL) and restarted while rows change (Redis layer)",
            [(f"{compared} rows of a query subscription", f"{differ} differ from the database")],
            ("compared", "lost or stale after resync"),
        )


if __name__ == "__main__":
    main()
