"""Scale (issue 10): many sockets, one daphne or several, commit → push latency.

    python bench/bench_scale.py [--quick] [--sockets 1000,10000] [--processes 1,2,4]
                                [--process-sockets 10000] [--clients 2]
                                [--scenarios fanout,own,steady,health,processes]
                                [--rate 500] [--duration 20] [--idle 30]
                                [--chart scale.png]

Serves bench/benchsite under daphne (``benchsite.gcprobe:application``: the site plus a
``/gcprobe/`` endpoint reporting RSS and every garbage collection, pgobserve unchanged)
against the bench PostgreSQL (``PGOBSERVE_BENCH_DSN``, else the tests' server) in a database
of its own (``PGOBSERVE_BENCH_DB``, default ``pgobserve_scale``). The WebSocket clients run in
``--clients`` processes (multiprocessing, an asyncio loop with ``websockets`` each); each
timestamps the pushes with ``time.time()`` and reports its CPU time, so client-side limits
show up as such. The commit is timed from just before the UPDATE is sent (psycopg,
autocommit, this process).

Scenarios (``--scenarios``), for each socket count of ``--sockets`` (memory mode: in-process
listener, ``pgobserve.layers.InMemoryChannelLayer``, one daphne process):

* ``fanout``: every socket ``subscribe_instance`` the same row; one UPDATE of it (``--repeat``
  times: the table gives the fan-out with the median p99 and every p99);
* ``floor``: daphne's floor for the same fan-out, with no pgobserve: the sockets of a bare
  ASGI app (``/ws/floor/`` of ``gcprobe``) get one pre-encoded frame each, sent in one loop
  (or from a task per socket) when ``GET /gcprobe/floor/`` asks (``--repeat`` times); with
  ``processes`` too, also at ``--process-sockets`` over each of ``--processes`` daphne;
* ``own``: socket i subscribes row i; one UPDATE changing all N rows;
* ``steady``: ``--rate`` single-row commits/s on random rows of the N for ``--duration`` s;
* ``health``: daphne's RSS before/after connecting, time to connect and subscribe all, GC
  pauses over ``--idle`` idle seconds and during ``fanout``;
* ``processes``: ``fanout`` and ``own`` at ``--process-sockets`` sockets through Redis and one
  ``pgobserve listen`` process, with each of ``--processes`` daphne processes (sockets
  round-robin). Redis: ``REDIS_URL`` if set, else a throwaway ``redis-server``.

Every wait has a timeout (``--timeout``); on timeout the tables give the count received.
The file-descriptor soft limit is raised to the hard limit (inherited by the children).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("PGOBSERVE_BENCH_DB", "pgobserve_scale")  # before bench_ws reads it

import psycopg  # noqa: E402
import websockets  # noqa: E402
from bench_ws import DB, bench_dsn, child_env, free_port, prepare, request, warm_up  # noqa: E402
from common import dsn, percentile, print_table  # noqa: E402

SCENARIOS = ("fanout", "floor", "own", "steady", "health", "processes")
ASGI = "benchsite.gcprobe:application"
#: Row the warm-up writes (no measured socket watches it): the last one.
WARM_ROWS = 10


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --------------------------------------------------------------------------------------
# Client processes
# --------------------------------------------------------------------------------------


#: The client process's collector pauses since the last ``reset`` (seconds).
CLIENT_GC: list[float] = []
_client_gc_start: list[float] = []


def _client_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _client_gc_start.append(time.perf_counter())
    elif _client_gc_start:
        CLIENT_GC.append(time.perf_counter() - _client_gc_start.pop())


class _Client:
    """One client process: its share of the sockets, each with a reader task recording
    ``(time.time(), value)`` of every push."""

    def __init__(self, plan: list[tuple[int, str, int]]) -> None:
        self.plan = plan  # (socket index, url, pk)
        self.sockets: list = []
        self.records: dict[int, list[tuple[float, int]]] = {}
        self.pk_of: dict[int, int] = {}
        self.target: dict[int, int] = {}
        self.remaining = 0
        self.done = asyncio.Event()
        self.satisfied: set[int] = set()
        self.errors: list[str] = []
        self.cpu_mark = time.process_time()

    async def _one(self, index: int, url: str, pk: int, gate: asyncio.Semaphore) -> None:
        async with gate:
            for attempt in range(3):
                try:
                    ws = await websockets.connect(
                        url, max_queue=None, ping_interval=None, open_timeout=60, close_timeout=2
                    )
                    await request(
                        ws,
                        {"action": "subscribe_instance", "pk": pk, "request_id": index},
                        timeout=60,
                    )
                    break
                except Exception as exc:  # noqa: BLE001  (reported, retried twice)
                    if attempt == 2:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                        return
                    await asyncio.sleep(0.5)
        self.sockets.append(ws)
        self.records[index] = []
        self.pk_of[index] = pk
        asyncio.get_running_loop().create_task(self._read(index, ws))

    async def _read(self, index: int, ws) -> None:
        records = self.records[index]
        try:
            async for raw in ws:
                now = time.time()
                message = json.loads(raw)
                if message.get("action") not in ("update", "create", "delete"):
                    continue
                value = (message.get("data") or {}).get("value", -1)
                records.append((now, value))
                if self.remaining and index not in self.satisfied:
                    need = self.target.get(self.pk_of[index])
                    if need is not None and value >= need:
                        self.satisfied.add(index)
                        self.remaining -= 1
                        if self.remaining == 0:
                            self.done.set()
        except websockets.ConnectionClosed:
            pass

    async def connect(self, concurrency: int) -> dict:
        start = time.time()
        gate = asyncio.Semaphore(concurrency)
        await asyncio.gather(*(self._one(i, url, pk, gate) for i, url, pk in self.plan))
        return {
            "ok": len(self.sockets),
            "failed": len(self.errors),
            "first_error": self.errors[0] if self.errors else "",
            "start": start,
            "end": time.time(),
        }

    def reset(self) -> dict:
        for records in self.records.values():
            records.clear()
        self.cpu_mark = time.process_time()
        CLIENT_GC.clear()
        return {}

    async def wait(self, target: dict[int, int], deadline: float) -> dict:
        """Until each socket whose row is in ``target`` has a push with value ≥ its target
        (or ``deadline``, time.time()); returns every push recorded since ``reset``."""
        self.target = target
        self.satisfied = {
            i
            for i, records in self.records.items()
            if self.pk_of[i] not in target or any(v >= target[self.pk_of[i]] for _, v in records)
        }
        self.remaining = len(self.records) - len(self.satisfied)
        self.done = asyncio.Event()
        if self.remaining:
            try:
                await asyncio.wait_for(self.done.wait(), max(0.0, deadline - time.time()))
            except asyncio.TimeoutError:
                pass
        missing = self.remaining
        self.remaining = 0
        return {
            "missing": missing,
            "cpu_s": time.process_time() - self.cpu_mark,
            "gc_max_s": max(CLIENT_GC, default=0.0),
            "records": [(self.pk_of[i], records) for i, records in self.records.items()],
        }

    async def close(self) -> dict:
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        return {}


def client_main(pipe, plan: list[tuple[int, str, int]]) -> None:
    raise_nofile()
    # A little less collection work in the client: its objects live for the whole run.
    import gc

    gc.freeze()
    gc.callbacks.append(_client_gc)

    async def serve() -> None:
        client = _Client(plan)
        loop = asyncio.get_running_loop()
        while True:
            command, *params = await loop.run_in_executor(None, pipe.recv)
            if command == "connect":
                reply = await client.connect(*params)
            elif command == "reset":
                reply = client.reset()
            elif command == "wait":
                reply = await client.wait(*params)
            elif command == "close":
                await client.close()
                pipe.send({})
                return
            else:
                reply = {"error": command}
            pipe.send(reply)

    asyncio.run(serve())


class Clients:
    """``count`` client processes sharing ``plan`` (socket index, url, pk) round-robin."""

    def __init__(self, plan: list[tuple[int, str, int]], count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes = []
        self.procs = []
        count = max(1, min(count, len(plan)))
        for k in range(count):
            mine, theirs = context.Pipe()
            proc = context.Process(target=client_main, args=(theirs, plan[k::count]), daemon=True)
            proc.start()
            self.pipes.append(mine)
            self.procs.append(proc)

    def call(self, *command, timeout: float) -> list[dict]:
        for pipe in self.pipes:
            pipe.send(command)
        replies = []
        deadline = time.monotonic() + timeout
        for pipe in self.pipes:
            if not pipe.poll(max(0.1, deadline - time.monotonic())):
                raise TimeoutError(f"client process did not answer {command[0]!r}")
            replies.append(pipe.recv())
        return replies

    def close(self) -> None:
        try:
            self.call("close", timeout=30)
        except (TimeoutError, OSError, EOFError):
            pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


# --------------------------------------------------------------------------------------
# The site: daphne processes (and a listener process + Redis)
# --------------------------------------------------------------------------------------


class ScaleSite:
    def __init__(self, layer: str, processes: int = 1) -> None:
        self.layer = layer
        self.ports = [free_port() for _ in range(processes)]
        self.procs: list[subprocess.Popen] = []
        self.daphnes: list[subprocess.Popen] = []

    def __enter__(self) -> ScaleSite:
        env = child_env(self.layer)
        if self.layer == "redis":
            self._start([sys.executable, "-m", "django", "pgobserve", "listen"], env)
        for port in self.ports:
            self.daphnes.append(
                self._start(
                    [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI],
                    env,
                )
            )
        deadline = time.monotonic() + 60
        for port in self.ports:
            while True:
                try:
                    self.probe(port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("daphne did not start") from None
                    time.sleep(0.2)
        return self

    def _start(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=raise_nofile,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def url(self, index: int, path: str = "/ws/pgobserve/") -> str:
        return f"ws://127.0.0.1:{self.ports[index % len(self.ports)]}{path}"

    @staticmethod
    def probe(port: int, timeout: float = 60) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/gcprobe/", timeout=timeout) as r:
            return json.loads(r.read())

    def probes(self, timeout: float = 60) -> list[dict]:
        return [self.probe(port, timeout) for port in self.ports]

    def cpu(self) -> float:
        """CPU seconds of the daphne processes so far (from /proc, without asking them)."""
        total = 0.0
        for proc in self.daphnes:
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except OSError:
                pass
        return total

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    """Shared state of one bench run."""

    conninfo: str
    args: argparse.Namespace
    value: int = 1_000_000  # the next value written: increasing, so a push proves its commit
    results: dict = field(default_factory=dict)

    def next_value(self) -> int:
        self.value += 1
        return self.value


def warm(site: ScaleSite, conninfo: str, pk: int) -> None:
    """A socket of this process on the warm-up row: writes until its push arrives (the
    in-process listener starts with the first socket; the listener process may lag)."""

    async def go() -> None:
        writer = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        async with websockets.connect(site.url(0), max_queue=None, ping_interval=None) as ws:
            await request(ws, {"action": "subscribe_instance", "pk": pk, "request_id": 0}, 120)
            await warm_up(ws, writer, pk)
        await writer.close()

    asyncio.run(asyncio.wait_for(go(), 180))


def gc_summary(probes_before: list[dict], probes_after: list[dict], since: float) -> dict:
    pauses = []
    gen2 = 0
    for after in probes_after:
        for end, generation, duration, _collected in after["collections"]:
            if end >= since:
                pauses.append(duration)
                gen2 += generation == 2
    return {
        "count": len(pauses),
        "gen2": gen2,
        "max": max(pauses, default=0.0),
        "p99": percentile(pauses, 99) if pauses else 0.0,
        "total": sum(pauses),
    }


def latencies(records: list, target: dict[int, int], start: float) -> tuple[list[float], list]:
    """First push reaching each socket's target value, as seconds after ``start``; and per
    client process the same list."""
    per_client = []
    every = []
    for reply in records:
        mine = []
        for pk, pushes in reply["records"]:
            need = target.get(pk)
            if need is None:
                continue
            for at, value in pushes:
                if value >= need:
                    mine.append(at - start)
                    break
        per_client.append(mine)
        every += mine
    return every, per_client


def setup(
    run: Run, site: ScaleSite, pks: list[int], label: str, path: str = "/ws/pgobserve/"
) -> tuple[Clients, dict]:
    """Client processes connect and subscribe one socket per pk (round-robin over daphne
    processes), then the warm-up; returns the clients and the connection figures."""
    plan = [(i, site.url(i, path), pk) for i, pk in enumerate(pks)]
    clients = Clients(plan, run.args.clients)
    t0 = time.time()
    replies = clients.call("connect", run.args.concurrency, timeout=run.args.connect_timeout)
    connected = {
        "ok": sum(r["ok"] for r in replies),
        "failed": sum(r["failed"] for r in replies),
        "seconds": max(r["end"] for r in replies) - t0,
        "error": next((r["first_error"] for r in replies if r["first_error"]), ""),
    }
    print(
        f"  [{label}] {connected['ok']}/{len(pks)} sockets connected and subscribed in"
        f" {connected['seconds']:.1f} s {connected['error']}",
        file=sys.stderr,
        flush=True,
    )
    if path == "/ws/pgobserve/":
        warm(site, run.conninfo, run.args.rows)
    time.sleep(1)
    return clients, connected


def one_update(
    run: Run, site: ScaleSite, clients: Clients, sql: str, pks: list[int], timeout: float
) -> dict:
    """One UPDATE (``sql`` with the value as its only parameter); until every socket has the
    push with that value, or ``timeout``."""

    def change(value: int) -> float:
        with psycopg.connect(run.conninfo, autocommit=True) as writer:
            start = time.time()
            writer.execute(sql, (value,))
        return start

    return one_change(run, site, clients, change, pks, timeout)


def one_floor(
    run: Run, site: ScaleSite, clients: Clients, pk: int, timeout: float, tasks: bool = False
) -> dict:
    """One frame to each ``/ws/floor/`` socket of row ``pk`` (``tasks``: a task per socket)."""

    def ask(port: int, value: int) -> None:
        url = f"http://127.0.0.1:{port}/gcprobe/floor/?pk={pk}&value={value}&tasks={int(tasks)}"
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            json.loads(answer.read())

    def change(value: int) -> float:
        start = time.time()
        with ThreadPoolExecutor(len(site.ports)) as pool:  # every process at once
            list(pool.map(ask, site.ports, [value] * len(site.ports)))
        return start

    return one_change(run, site, clients, change, [pk], timeout)


def one_change(run: Run, site: ScaleSite, clients: Clients, change, pks, timeout: float) -> dict:
    """``change(value)`` (returns when it started, ``time.time()``); until every socket
    watching ``pks`` has the push with that value, or ``timeout``."""
    clients.call("reset", timeout=30)
    value = run.next_value()
    target = dict.fromkeys(pks, value)
    cpu0 = site.cpu()
    start = change(value)
    replies = clients.call("wait", target, start + timeout, timeout=timeout + 60)
    every, per_client = latencies(replies, target, start)
    last = max(every) if every else timeout
    return {
        "expected": len(every) + sum(r["missing"] for r in replies),
        "received": len(every),
        "lat": every,
        "per_client": [
            {
                "n": len(mine),
                "p50": percentile(mine, 50) if mine else None,
                "max": max(mine, default=None),
                "cpu_s": reply["cpu_s"],
                "gc_max_s": reply.get("gc_max_s"),
            }
            for mine, reply in zip(per_client, replies, strict=True)
        ],
        "server_cpu_s": site.cpu() - cpu0,
        "window_s": last,
    }


def steady(run: Run, site: ScaleSite, clients: Clients, n: int) -> dict:
    """``--rate`` single-row commits/s on random rows 1..n for ``--duration`` s."""
    rate, duration = run.args.rate, run.args.duration
    clients.call("reset", timeout=30)
    rng = random.Random(10)
    sent: list[tuple[float, int, int]] = []  # (time, pk, value)
    target: dict[int, int] = {}
    cpu0 = site.cpu()
    with psycopg.connect(run.conninfo, autocommit=True) as writer:
        begin = time.time()
        end = begin + duration
        k = 0
        while True:
            due = begin + k / rate
            now = time.time()
            if due >= end or now >= end:
                break
            if due > now:
                time.sleep(due - now)
            pk = rng.randint(1, n)
            value = run.next_value()
            at = time.time()
            writer.execute("UPDATE benchsite_benchitem SET value = %s WHERE id = %s", (value, pk))
            sent.append((at, pk, value))
            target[pk] = value
            k += 1
        elapsed = time.time() - begin
    replies = clients.call(
        "wait", target, time.time() + run.args.timeout, timeout=run.args.timeout + 60
    )
    wall = time.time() - begin  # load, then until every row's last value arrived (or timeout)
    pushes: dict[int, list[tuple[float, int]]] = {}
    for reply in replies:
        for pk, records in reply["records"]:
            pushes.setdefault(pk, []).extend(records)
    lat: list[tuple[float, float]] = []  # (sent at, latency)
    lost = 0
    for at, pk, value in sent:
        got = next((t for t, v in sorted(pushes.get(pk, ())) if v >= value), None)
        if got is None:
            lost += 1
        else:
            lat.append((at, got - at))
    first = [d for at, d in lat if at < begin + 1]
    last = [d for at, d in lat if at >= begin + elapsed - 1]
    return {
        "sent": len(sent),
        "elapsed": elapsed,
        "wall": wall,
        "lat": [d for _, d in lat],
        "not_delivered": lost,
        "first_p50": percentile(first, 50) if first else None,
        "last_p50": percentile(last, 50) if last else None,
        "server_cpu_s": site.cpu() - cpu0,
        "client_cpu_s": [r["cpu_s"] for r in replies],
    }


def phase_one_row(run: Run, layer: str, processes: int, n: int, health: bool) -> dict:
    """Sockets on one row: fan-out (+ health: RSS, connect time, GC idle and during)."""
    out: dict = {}
    pk = 3
    with ScaleSite(layer, processes) as site:
        before = site.probes()
        clients, connected = setup(run, site, [pk] * n, f"{layer} x{processes}, {n} on one row")
        try:
            out["connect"] = connected
            if health:
                after = site.probes()
                out["gc_connect"] = gc_summary([], after, before[0]["time"])
                out["rss_before"] = [p["rss_kib"] for p in before]
                out["rss_after"] = [p["rss_kib"] for p in after]
                since = time.time()
                time.sleep(run.args.idle)
                out["gc_idle"] = gc_summary(after, site.probes(), since)
                out["idle_s"] = run.args.idle
            fanouts = []
            for _ in range(run.args.repeat):
                since = time.time()
                fanout = one_update(
                    run, site, clients,
                    f"UPDATE benchsite_benchitem SET value = %s WHERE id = {pk}",
                    [pk], run.args.timeout,
                )  # fmt: skip
                fanout["gc"] = gc_summary([], site.probes(), since)
                fanouts.append(fanout)
                time.sleep(0.5)
            out.update(median_of(fanouts, "fanout"))
            out["gc_fanout"] = out["fanout"]["gc"]
        finally:
            clients.close()
    return out


def median_of(runs: list[dict], key: str) -> dict:
    """The run with the median p99 under ``key``, and every run's p50 and p99 (``key_all``)."""
    ranked = sorted(runs, key=lambda r: percentile(r["lat"], 99) if r["lat"] else float("inf"))
    every = [
        (
            percentile(r["lat"], 50) if r["lat"] else None,
            percentile(r["lat"], 99) if r["lat"] else None,
            r["gc"]["max"],
            r["gc"]["gen2"],
        )
        for r in runs
    ]
    return {key: ranked[len(ranked) // 2], f"{key}_all": every}


def phase_floor(run: Run, n: int, processes: int = 1) -> dict:
    """daphne's floor: n bare sockets on one row (round-robin over ``processes``), one
    pre-encoded frame each (``--repeat``)."""
    pk = 3
    with ScaleSite("memory", processes) as site:
        clients, connected = setup(run, site, [pk] * n, f"floor, {n} sockets", "/ws/floor/")
        try:
            out = {"connect": connected}
            for key, tasks in (("floor", False), ("floor_tasks", True)):
                floors = []
                for _ in range(run.args.repeat):
                    since = time.time()
                    floor = one_floor(run, site, clients, pk, run.args.timeout, tasks)
                    floor["gc"] = gc_summary([], site.probes(), since)
                    floors.append(floor)
                    time.sleep(0.5)
                out.update(median_of(floors, key))
        finally:
            clients.close()
    return out


def phase_own_rows(run: Run, layer: str, processes: int, n: int, with_steady: bool) -> dict:
    """Socket i on row i: one UPDATE of all n rows; then (optionally) the steady load."""
    out: dict = {}
    pks = list(range(1, n + 1))
    with ScaleSite(layer, processes) as site:
        clients, connected = setup(run, site, pks, f"{layer} x{processes}, {n} on own rows")
        try:
            out["connect"] = connected
            out["own"] = one_update(
                run, site, clients,
                f"UPDATE benchsite_benchitem SET value = %s WHERE id BETWEEN 1 AND {n}",
                pks, run.args.timeout,
            )  # fmt: skip
            if with_steady:
                time.sleep(1)
                out["steady"] = steady(run, site, clients, n)
        finally:
            clients.close()
    return out


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def gc_cell(g: dict) -> str:
    """Longest pause, p99, total paused; full (gen2) collections of all collections."""
    return (f"max {ms(g['max'])}, p99 {ms(g['p99'])}, total {ms(g['total'])};"
            f" gen2 {g['gen2']} of {g['count']}")  # fmt: skip


def lat_cells(result: dict) -> tuple[str, str, str]:
    lat = result["lat"]
    if not lat:
        return ("–", "–", "–")
    return (ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(max(lat)))


def received(result: dict, expected: int) -> str:
    got = result["received"]
    return f"{got:,}" if got == expected else f"**{got:,} of {expected:,}** (timeout)"


def own_cells(result: dict) -> tuple[str, str, str]:
    """All delivered (the last push), p50, p99."""
    lat = result["lat"]
    if not lat:
        return ("–", "–", "–")
    return (ms(max(lat)), ms(percentile(lat, 50)), ms(percentile(lat, 99)))


def client_cells(result: dict) -> tuple[str, str]:
    """Spread of the client processes' p50, and their CPU busy share over the window."""
    p50s = [c["p50"] for c in result["per_client"] if c["p50"] is not None]
    spread = ms(max(p50s) - min(p50s)) if len(p50s) > 1 else "–"
    window = max(result["window_s"], 1e-3)
    busy = ", ".join(f"{min(c['cpu_s'] / window, 9.99):.0%}" for c in result["per_client"])
    pauses = [c["gc_max_s"] for c in result["per_client"] if c.get("gc_max_s") is not None]
    if pauses:  # the clients' own longest collector pause in the window
        busy += f" (GC ≤ {ms(max(pauses))})"
    return spread, busy


def all_p99(every: list | None) -> str:
    """Every fan-out's p99, in the order run (and its longest collector pause, when known)."""
    if not every:
        return "–"
    return ", ".join(
        ms(run[1]) + (f" (GC {ms(run[2])})" if len(run) > 2 and run[2] >= 0.05 else "")
        for run in every
    )


def backlog_grew(first: float, last: float) -> bool:
    """The last second's p50 over 1.5× the first's and 50 ms more."""
    return last > 1.5 * first and last - first > 0.05


def steady_cpu(result: dict) -> str:
    if "wall" not in result:  # older JSON: CPU seconds only
        return f"{result['server_cpu_s']:,.0f} CPU s"
    return f"{result['server_cpu_s'] / result['wall']:.0%} of {result['wall']:,.0f} s"


def server_busy(result: dict) -> str:
    return f"{result['server_cpu_s'] / max(result['window_s'], 1e-3):.0%}"


def report(run: Run, version: str, commit: str, when: str | None = None) -> None:
    args, res = run.args, run.results
    print(
        f"bench_scale.py on commit {commit}; PostgreSQL {version}; {os.cpu_count()} cores;"
        f" {args.clients} client processes; RLIMIT_NOFILE {raise_nofile()};"
        f" {when or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    mem = {n: res.get(("memory", 1, n), {}) for n in args.sockets}
    if "fanout" in args.scenarios:
        rows = []
        for n, r in mem.items():
            f = r.get("one_row", {}).get("fanout")
            g = r.get("one_row", {}).get("gc_fanout")
            paused = f"{ms(g['total'])}, gen2 {g['gen2']}" if g else "–"
            if f:
                every = all_p99(r.get("one_row", {}).get("fanout_all"))
                rows.append((f"{n:,}", received(f, n), *lat_cells(f), every, *client_cells(f),
                             server_busy(f), paused))  # fmt: skip
        print_table(
            "1. fan-out: N sockets subscribed to one row, one UPDATE (memory layer, in-process"
            " listener, one daphne; of --repeat fan-outs, the one with the median p99)",
            rows,
            ("sockets", "pushes received", "p50", "p99", "max", "p99 of each fan-out",
             "client processes' p50 spread", "client CPU busy (longest client GC pause)",
             "daphne CPU busy", "daphne GC paused in total, full collections"),
        )  # fmt: skip
    if "floor" in args.scenarios:
        rows = []
        floors = sorted((k, v) for k, v in res.items() if k[0] == "memory" and "floor" in v)
        for (_layer, p, n), r in floors:
            g = r.get("one_row", {}).get("fanout")
            ours = f"{ms(g['server_cpu_s'] / n * 1000)}" if g else "–"
            for key, how in (("floor", "one loop"), ("floor_tasks", "a task per socket")):
                f = r.get("floor", {}).get(key)
                if f:
                    rows.append((f"{n:,}", f"{p}", how, received(f, n), *lat_cells(f),
                                 all_p99(r["floor"].get(f"{key}_all")), server_busy(f),
                                 ms(f["server_cpu_s"] / n * 1000), ours))  # fmt: skip
        print_table(
            "1b. daphne's floor: the same fan-out from a bare ASGI app (no pgobserve, no"
            " Channels), one pre-encoded frame per socket, sent in one loop or from a task"
            " per socket",
            rows,
            ("sockets", "daphne processes", "sent from", "frames received", "p50", "p99", "max",
             "p99 of each fan-out", "daphne CPU busy", "daphne CPU per 1,000 sockets (floor)",
             "the same for pgobserve (table 1)"),
        )  # fmt: skip
    if "own" in args.scenarios:
        rows = []
        for n, r in mem.items():
            o = r.get("own_rows", {}).get("own")
            if o:
                rows.append(
                    (f"{n:,}", received(o, n), *own_cells(o), *client_cells(o), server_busy(o))
                )
        print_table(
            "2. each socket its own row: one UPDATE changing all N rows (memory layer, one daphne)",
            rows,
            ("sockets", "pushes received", "all delivered", "p50", "p99",
             "client p50 spread", "client CPU busy (GC)", "daphne CPU busy"),
        )  # fmt: skip
    if "steady" in args.scenarios:
        rows = []
        for n, r in mem.items():
            s = r.get("own_rows", {}).get("steady")
            if s:
                lat = s["lat"]
                kept = s["sent"] / s["elapsed"]
                growing = "–"
                if s["first_p50"] is not None and s["last_p50"] is not None:
                    grew = backlog_grew(s["first_p50"], s["last_p50"])
                    growing = (f"{'**yes**' if grew else 'no'}: first s {ms(s['first_p50'])}"
                               f" → last s {ms(s['last_p50'])}")  # fmt: skip
                rows.append((f"{n:,}", f"{kept:,.0f}/s of {args.rate}/s ({s['sent']:,})",
                             ms(percentile(lat, 50)) if lat else "–",
                             ms(percentile(lat, 99)) if lat else "–",
                             f"{s['not_delivered']:,}", growing, steady_cpu(s)))  # fmt: skip
        print_table(
            f"3. steady load: {args.rate} single-row commits/s on random rows for"
            f" {args.duration:g} s, N sockets one row each (memory layer, one daphne)",
            rows,
            ("sockets", "commits made", "p50", "p99", f"not delivered within {args.timeout:g} s",
             "backlog growing? (p50 of commits sent in the first vs last second)",
             "daphne CPU busy (load + drain)"),
        )  # fmt: skip
    if "health" in args.scenarios:
        rows = []
        for n, r in mem.items():
            h = r.get("one_row", {})
            if "rss_after" not in h:
                continue
            before, after = h["rss_before"][0], h["rss_after"][0]
            idle, during = h["gc_idle"], h["gc_fanout"]
            joining = h.get("gc_connect")
            rows.append((
                f"{n:,}", f"{before / 1024:,.0f} → {after / 1024:,.0f} MiB",
                f"{(after - before) / max(h['connect']['ok'], 1):,.1f} KiB",
                f"{h['connect']['seconds']:,.1f} s ({h['connect']['ok']:,} ok)",
                gc_cell(joining) if joining else "–", gc_cell(idle), gc_cell(during),
            ))  # fmt: skip
        print_table(
            "4. server health: one daphne process, N idle sockets with one subscribe_instance"
            f" each (GC idle over {args.idle:g} s)",
            rows,
            ("sockets", "daphne RSS before → after", "per socket",
             "connect + subscribe all", "GC while connecting", f"GC idle {args.idle:g} s",
             "GC during scenario 1"),
        )  # fmt: skip
    if "processes" in args.scenarios:
        n = args.process_sockets
        rows = []
        for p in args.processes:
            r = res.get(("redis", p, n), {})
            f = r.get("one_row", {}).get("fanout")
            o = r.get("own_rows", {}).get("own")
            conn = r.get("one_row", {}).get("connect", {}).get("seconds")
            cells = [f"{p}"]
            cells += (
                [received(f, n), *lat_cells(f), client_cells(f)[1], server_busy(f)]
                if f
                else ["–"] * 6
            )
            cells += [received(o, n), *own_cells(o)] if o else ["–"] * 4
            cells.append(f"{conn:,.1f} s" if conn is not None else "–")
            g = r.get("one_row", {}).get("gc_fanout")
            cells.append(f"{ms(g['total'])}, gen2 {g['gen2']}" if g else "–")
            rows.append(tuple(cells))
        print_table(
            f"5. processes: {n:,} sockets round-robin over P daphne processes, Redis layer, one"
            " `pgobserve listen` process",
            rows,
            ("daphne processes", "one row: received", "p50", "p99", "max", "client CPU busy (GC)",
             "daphne CPU busy (sum)", "own rows: received", "all delivered", "p50", "p99",
             "connect + subscribe", "GC paused during one row (sum), full collections"),
        )  # fmt: skip


def chart(run: Run, path: str) -> None:
    import matplotlib  # only for --chart: pip install matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    series: dict[str, dict[int, dict]] = {}
    for (layer, p, n), r in sorted(run.results.items()):
        label = "memory, 1 daphne" if layer == "memory" else f"Redis, {p} daphne"
        for key in ("fanout", "own"):
            res = r.get("one_row" if key == "fanout" else "own_rows", {}).get(key)
            if res and res["lat"]:
                series.setdefault(f"{key}|{label}", {})[n] = res
    for name, points in series.items():
        key, label = name.split("|")
        ax = axes[0] if key == "fanout" else axes[1]
        ns = sorted(points)
        for q, style in ((50, "-o"), (99, "--x")):
            ax.plot(ns, [percentile(points[n]["lat"], q) * 1000 for n in ns], style,
                    label=f"{label} p{q}")  # fmt: skip
    for ax, title in zip(
        axes, ("one row, N sockets, one UPDATE", "N rows, one socket each, one UPDATE"), strict=True
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("sockets")
        ax.set_ylabel("commit → push latency (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nchart: {path}", file=sys.stderr)


# --------------------------------------------------------------------------------------


def code_version() -> str:
    """The commit measured (``BENCH_COMMIT`` names it for a ``git archive`` export)."""
    git = ["git", "-C", str(HERE.parent)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if not commit:
        return "unknown (set BENCH_COMMIT)"
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "pgobserve"], capture_output=True, text=True
    ).stdout.strip()
    return commit + (" + uncommitted changes in pgobserve/" if dirty else "")


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def scenario_list(text: str) -> list[str]:
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {sorted(unknown)}; choose among {SCENARIOS}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized (< 3 minutes)")
    parser.add_argument("--sockets", type=int_list, help="socket counts (default 1000,10000)")
    parser.add_argument("--processes", type=int_list, help="daphne processes (default 1,2,4)")
    parser.add_argument(
        "--process-sockets", type=int, help="sockets of scenario 5 (default: the largest --sockets)"
    )
    parser.add_argument(
        "--scenarios", type=scenario_list, default=list(SCENARIOS), help=",".join(SCENARIOS)
    )
    parser.add_argument("--rate", type=int, help="commits/s of the steady load (500; quick 100)")
    parser.add_argument("--duration", type=float, help="seconds of steady load (20; quick 5)")
    parser.add_argument("--idle", type=float, help="idle seconds for the GC figures (30; quick 10)")
    parser.add_argument("--timeout", type=float, help="per wait for pushes (60 s; quick 20)")
    parser.add_argument("--repeat", type=int, default=1, help="fan-outs per count (fanout, floor)")
    parser.add_argument("--connect-timeout", type=float, default=900)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=50, help="connects in flight per client")
    parser.add_argument("--chart", help="write a PNG of latency against sockets (matplotlib)")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--from-json", help="print the tables (and --chart) of a --json file")
    args = parser.parse_args()  # fmt: skip
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        chart_path = args.chart
        args = argparse.Namespace(**saved["args"])
        run = Run(conninfo="", args=args)
        run.results = {
            (layer, int(p), int(n)): v
            for key, v in saved["results"].items()
            for layer, p, n in [key.split("-")]
        }
        report(run, saved["version"], saved["commit"], saved.get("when"))
        if chart_path:
            chart(run, chart_path)
        return
    quick = args.quick
    args.sockets = args.sockets or ([200, 1000] if quick else [1000, 10000])
    args.processes = args.processes or [1, 2, 4]
    args.process_sockets = args.process_sockets or max(args.sockets)
    args.rate = args.rate or (100 if quick else 500)
    args.duration = args.duration or (5 if quick else 20)
    args.idle = args.idle if args.idle is not None else (10 if quick else 30)
    args.timeout = args.timeout or (20 if quick else 60)
    need = max(args.sockets + [args.process_sockets]) + WARM_ROWS
    args.rows = need  # the warm-up row is the last one, watched by no measured socket
    hard = raise_nofile()
    if max(args.sockets + [args.process_sockets]) + 100 > hard:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is too low for the sockets asked")
    if args.chart:
        import matplotlib  # noqa: F401  (fail now, not after the run)

    base = dsn()
    os.environ["PGOBSERVE_BENCH_DSN"] = base
    redis = None
    if "processes" in args.scenarios and not os.environ.get("REDIS_URL"):
        from tests.servers import ThrowawayRedis

        redis = ThrowawayRedis()
        os.environ["REDIS_URL"] = redis.url
    run = Run(conninfo=bench_dsn(base), args=args)
    commit = os.environ.get("BENCH_COMMIT") or code_version()
    started = time.monotonic()
    try:
        print(f"preparing {DB} with {need:,} rows", file=sys.stderr, flush=True)
        prepare(base, need)
        one_row = {"fanout", "health"} & set(args.scenarios)
        own = {"own", "steady"} & set(args.scenarios)
        for n in args.sockets:
            r = run.results.setdefault(("memory", 1, n), {})
            if one_row:
                r["one_row"] = phase_one_row(run, "memory", 1, n, "health" in args.scenarios)
            if "floor" in args.scenarios:
                r["floor"] = phase_floor(run, n)
        if {"floor", "processes"} <= set(args.scenarios):
            for p in args.processes:
                if p > 1:
                    r = run.results.setdefault(("memory", p, args.process_sockets), {})
                    r["floor"] = phase_floor(run, args.process_sockets, p)
            if own:
                r["own_rows"] = phase_own_rows(run, "memory", 1, n, "steady" in args.scenarios)
        if "processes" in args.scenarios:
            n = args.process_sockets
            for p in args.processes:
                r = run.results.setdefault(("redis", p, n), {})
                r["one_row"] = phase_one_row(run, "redis", p, n, False)
                r["own_rows"] = phase_own_rows(run, "redis", p, n, False)
    finally:
        if redis is not None:
            redis.close()
    with psycopg.connect(base) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    print(f"(run took {time.monotonic() - started:.0f} s)", file=sys.stderr)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report(run, version, commit, when)
    if args.json:
        saved = {
            "args": vars(args), "version": version, "commit": commit, "when": when,
            "results": {f"{k[0]}-{k[1]}-{k[2]}": v for k, v in run.results.items()},
        }  # fmt: skip
        Path(args.json).write_text(json.dumps(saved))
    if args.chart:
        chart(run, args.chart)


if __name__ == "__main__":
    main()
