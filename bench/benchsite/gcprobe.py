"""The bench site with a probe (bench/bench_scale.py): ``benchsite.gcprobe:application``.

The same WebSocket routes as ``benchsite.asgi``, plus ``GET /gcprobe/`` answering JSON with
this process's pid, RSS (KiB, from /proc), CPU seconds and every garbage collection recorded
since the process started (``gc.callbacks``: end time as ``time.time()``, generation,
duration in seconds, objects collected). Nothing in pgobserve changes: the callbacks are
installed when daphne imports this module.

``GET /gcprobe/objects/`` (after a full collection) counts the objects the collector tracks
(what each full collection walks) by type, and by owner: an object whose class comes from a
package (pgobserve, channels, daphne, twisted, ...) counts for that package, and so do the
plain objects (dicts, lists, functions, cells, coroutines, frames, tasks...) reached from it
only through plain objects, the packages taking turns in ``OWNERS`` order; a consumer's own
attributes count per attribute (``consumer.<name>``). ``?freeze=1`` calls ``gc.freeze()``
(``?unfreeze=1``: ``gc.unfreeze()``) and ``?collect=0`` skips the collection. Slow (seconds
at 10,000 sockets) and it materializes each consumer's ``__dict__``: call it last.

``/ws/floor/`` is daphne's floor for a fan-out, with no pgobserve and no Channels: a bare ASGI
WebSocket app answering ``subscribe_instance`` as DCRF does and keeping each socket's
``send`` by pk; ``GET /gcprobe/floor/?pk=3&value=7`` then sends each socket of the row one
DCRF ``update`` frame (the data encoded once, the envelope per socket, as pgobserve does), in
one loop, and answers the seconds that loop took; ``&tasks=1``: one task per socket sends it
(as each consumer sending from its own task would).

``GET /gcprobe/profile/start?clock=cpu`` (or ``wall``; ``&gc=off``: the collector disabled
until the stop, so no pause is charged to the function that happened to trigger it) starts
yappi (bench only: ``pip install yappi``; py-spy cannot read this Python) on every thread;
``GET /gcprobe/profile/stop?limit=40`` stops it and answers the top functions by self time
(``tsub``) and by total time (``ttot``), and the self time summed by package (the top-level
module of the function's file), then clears the stats.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import time
from collections import deque
from urllib.parse import parse_qs

#: (end as time.time(), generation, duration s, collected); bounded for long runs.
COLLECTIONS: deque[tuple[float, int, float, int]] = deque(maxlen=200_000)
_started: list[float] = []


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        duration = time.perf_counter() - _started.pop()
        COLLECTIONS.append((time.time(), info["generation"], duration, info.get("collected", 0)))


gc.callbacks.append(_on_gc)
if os.environ.get("BENCH_GC_THRESHOLD"):  # bench/bench_gc.py --gc threshold=700,10,100
    gc.set_threshold(*map(int, os.environ["BENCH_GC_THRESHOLD"].split(",")))

from .asgi import application as site  # noqa: E402  (after the callbacks: count its start-up)

if os.environ.get("BENCH_TRACE"):  # bench/bench_path.py: stage timestamps of each push
    from . import trace

    trace.install()

_policy = os.environ.get("BENCH_PGOBSERVE_GC", "")  # bench/bench_gc.py --gc freeze[=SECONDS]
if _policy.startswith("freeze"):
    import pgobserve.gc

    _every = _policy.partition("=")[2]
    pgobserve.gc.install(**({"full_every": float(_every)} if _every else {}))


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


#: Owners in the order they claim plain objects reachable from more than one of them.
OWNERS = (
    "pgobserve", "consumer", "channels", "asgiref", "daphne", "autobahn", "twisted",
    "asyncio", "django", "rest_framework", "benchsite",
)  # fmt: skip
#: Types whose objects belong to whoever reaches them.
PLAIN_MODULES = {"builtins", "_asyncio", "collections", "_collections", "functools",
                 "_functools", "weakref", "_weakref", "types", "_thread", "typing"}  # fmt: skip


def _name(kind: type) -> str:
    return (
        f"{kind.__module__}.{kind.__qualname__}" if isinstance(kind.__module__, str) else repr(kind)
    )


def _plain_label(obj) -> str:
    """A plain object's type, with the code's name for coroutines, frames and tasks."""
    kind = type(obj)
    label = _name(kind)
    try:
        if kind.__name__ == "coroutine":
            return f"{label}:{obj.cr_code.co_qualname}"
        if kind.__name__ == "frame":
            return f"{label}:{obj.f_code.co_qualname}"
        if kind.__name__ in ("Task",):
            return f"{label}:{obj.get_coro().__qualname__}"
        if kind.__name__ == "function":
            return f"{label}:{obj.__module__}"
    except Exception:  # noqa: BLE001
        pass
    return label


def objects_report() -> dict:
    from channels.consumer import AsyncConsumer

    everything = gc.get_objects()
    by_type: dict[str, int] = {}
    for obj in everything:
        label = _name(type(obj))
        by_type[label] = by_type.get(label, 0) + 1
    plain_ids = set()
    roots: dict[str, list] = {owner: [] for owner in OWNERS}
    roots["other"] = []
    owner_of_type: dict[str, int] = {}
    for obj in everything:
        kind = type(obj)
        module = kind.__module__
        module = module if isinstance(module, str) else ""
        if module in PLAIN_MODULES:
            plain_ids.add(id(obj))
            continue
        if issubclass(kind, AsyncConsumer):
            for name, value in object.__getattribute__(obj, "__dict__").items():
                roots["consumer"].append((f"consumer.{name}", value))
            owner_of_type["consumer"] = owner_of_type.get("consumer", 0) + 1
            continue
        top = module.split(".")[0]
        owner = top if top in roots else "other"
        owner_of_type[owner] = owner_of_type.get(owner, 0) + 1
        for value in gc.get_referents(obj):
            roots[owner].append((owner if owner != "other" else f"other:{top}", value))
    claimed: set[int] = set()
    owned: dict[str, dict[str, int]] = {}
    for owner in (*OWNERS, "other"):
        for label, start in roots[owner]:
            stack = [start]
            bucket = owned.setdefault(label, {})
            while stack:
                obj = stack.pop()
                ident = id(obj)
                if ident not in plain_ids or ident in claimed:
                    continue
                claimed.add(ident)
                kind = _plain_label(obj)
                bucket[kind] = bucket.get(kind, 0) + 1
                stack.extend(gc.get_referents(obj))
    unclaimed: dict[str, int] = {}
    for obj in everything:
        if id(obj) in plain_ids and id(obj) not in claimed:
            kind = _plain_label(obj)
            unclaimed[kind] = unclaimed.get(kind, 0) + 1
    del everything
    return {
        "total": sum(by_type.values()),
        "by_type": by_type,
        "instances_by_owner": owner_of_type,
        "plain_by_owner": owned,
        "plain_unclaimed": unclaimed,
    }


def _package(path: str) -> str:
    """The package a function's file belongs to (``site-packages/<pkg>/...``, this repo's
    ``pgobserve/``, the standard library's ``asyncio/``...)."""
    parts = path.replace("\\", "/").split("/")
    for marker in ("site-packages", "pgobserve", "benchsite"):
        if marker in parts:
            at = parts.index(marker)
            return marker if marker != "site-packages" else parts[at + 1].split(".")[0]
    if len(parts) >= 2 and parts[-2].startswith("python3"):
        return "stdlib:" + parts[-1].removesuffix(".py")
    if len(parts) >= 3 and parts[-3].startswith("python3"):
        return "stdlib:" + parts[-2]
    return parts[-1] or path


def profile_report(limit: int) -> dict:
    import yappi

    stats = list(yappi.get_func_stats())
    packages: dict[str, float] = {}
    for stat in stats:
        package = _package(stat.module)
        packages[package] = packages.get(package, 0.0) + stat.tsub

    def row(stat) -> dict:
        return {
            "function": f"{_package(stat.module)}:{stat.name}:{stat.lineno}",
            "calls": stat.ncall,
            "self_s": round(stat.tsub, 6),
            "total_s": round(stat.ttot, 6),
        }

    return {
        "clock": yappi.get_clock_type(),
        "self_total_s": round(sum(packages.values()), 6),
        "by_package": dict(sorted(packages.items(), key=lambda kv: -kv[1])),
        "by_self": [row(s) for s in sorted(stats, key=lambda s: -s.tsub)[:limit]],
        "by_total": [row(s) for s in sorted(stats, key=lambda s: -s.ttot)[:limit]],
    }


async def _profile(scope, send) -> None:
    import yappi

    query = parse_qs(scope.get("query_string", b"").decode())
    if scope["path"].rstrip("/").endswith("/start"):
        yappi.stop()
        yappi.clear_stats()
        yappi.set_clock_type(query.get("clock", ["cpu"])[0])
        if query.get("gc") == ["off"]:  # no collection's pause charged to whatever ran
            gc.disable()
        yappi.start(builtins=False, profile_threads=True)
        body = {"started": yappi.get_clock_type(), "gc": gc.isenabled()}
    else:
        yappi.stop()
        gc.enable()
        body = profile_report(int(query.get("limit", ["40"])[0]))
        yappi.clear_stats()
    await _respond(send, json.dumps(body).encode())


#: pk → {socket's send: the request_id of its subscribe_instance} (``/ws/floor/``).
FLOOR: dict[int, dict] = {}


async def _floor_socket(scope, receive, send) -> None:
    """A bare WebSocket app: the least daphne needs to push to a subscribed socket."""
    mine: list[int] = []
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif message["type"] == "websocket.disconnect":
                return
            elif message["type"] == "websocket.receive":
                asked = json.loads(message.get("text") or "{}")
                pk, request_id = asked.get("pk"), asked.get("request_id")
                FLOOR.setdefault(pk, {})[send] = request_id
                mine.append(pk)
                reply = {"errors": [], "data": None, "action": asked.get("action"),
                         "response_status": 201, "request_id": request_id}  # fmt: skip
                await send({"type": "websocket.send", "text": json.dumps(reply)})
    finally:
        for pk in mine:
            FLOOR.get(pk, {}).pop(send, None)


async def _floor_push(scope, send) -> None:
    query = parse_qs(scope.get("query_string", b"").decode())
    pk, value = int(query["pk"][0]), int(query["value"][0])
    start = time.perf_counter()
    data = json.dumps({"id": pk, "value": value, "note": "floor"})

    async def push(socket_send, request_id) -> None:
        text = (f'{{"errors":[],"data":{data},"action":"update","response_status":200,'
                f'"request_id":{json.dumps(request_id)}}}')  # fmt: skip
        await socket_send({"type": "websocket.send", "text": text})

    if query.get("tasks") == ["1"]:  # a task per socket, as a consumer's own task would
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(push(*s)) for s in list(FLOOR.get(pk, {}).items())]
        await asyncio.gather(*tasks)
    else:
        for socket_send, request_id in list(FLOOR.get(pk, {}).items()):
            await push(socket_send, request_id)
    body = {"sockets": len(FLOOR.get(pk, {})), "loop_s": time.perf_counter() - start}
    await _respond(send, json.dumps(body).encode())


async def _hops(count: int = 300) -> dict:
    """Median µs into and back from the thread of a no-op, as a push's read makes it."""
    from channels.db import database_sync_to_async

    from pgobserve import feed_connection

    entered: list[float] = []

    def noop() -> None:
        entered.append(time.perf_counter())

    out = {}
    for name, hop in (("database_sync_to_async", database_sync_to_async(noop)),
                      ("feed_connection.reads", feed_connection.reads(noop))):  # fmt: skip
        there, back = [], []
        for _ in range(count):
            start = time.perf_counter()
            await hop()
            end = time.perf_counter()
            there.append(entered[-1] - start)
            back.append(end - entered[-1])
        out[name] = {
            "to_us": sorted(there)[count // 2] * 1e6,
            "back_us": sorted(back)[count // 2] * 1e6,
        }
    return out


async def _probe(scope, receive, send) -> None:
    while (await receive())["type"] != "http.request":
        pass
    if scope["path"].startswith("/gcprobe/floor/"):
        await _floor_push(scope, send)
        return
    if scope["path"].startswith("/gcprobe/hop/"):  # bench/bench_path.py: a thread's round trip
        await _respond(send, json.dumps(await _hops()).encode())
        return
    if scope["path"].startswith("/gcprobe/trace/"):  # BENCH_TRACE=1: benchsite/trace.py
        from . import trace

        await _respond(send, json.dumps(trace.take()).encode())
        return
    if scope["path"].startswith("/gcprobe/profile/"):
        await _profile(scope, send)
        return
    if scope["path"].startswith("/gcprobe/objects"):
        query = parse_qs(scope.get("query_string", b"").decode())
        if query.get("unfreeze") == ["1"]:
            gc.unfreeze()
        garbage: dict[str, int] = {}
        if query.get("garbage") == ["1"]:  # what the collection frees, by type
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            gc.set_debug(0)
            for obj in gc.garbage:
                label = _plain_label(obj)
                garbage[label] = garbage.get(label, 0) + 1
            gc.garbage.clear()
        if query.get("collect") != ["0"]:
            gc.collect()
        report = {"pid": os.getpid(), "rss_kib": _rss_kib(), "gc_frozen": gc.get_freeze_count()}
        report["garbage_by_type"] = garbage
        report.update(objects_report())
        if query.get("freeze") == ["1"]:
            gc.freeze()
        await _respond(send, json.dumps(report).encode())
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    body = json.dumps(
        {
            "pid": os.getpid(),
            "time": time.time(),
            "rss_kib": _rss_kib(),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "gc_count": gc.get_count(),
            "gc_frozen": gc.get_freeze_count(),
            "collections": list(COLLECTIONS),
        }
    ).encode()
    await _respond(send, body)


async def _respond(send, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def application(scope, receive, send) -> None:
    if scope["type"] == "http" and scope["path"].startswith("/gcprobe"):
        await _probe(scope, receive, send)
    elif scope["type"] == "websocket" and scope["path"] == "/ws/floor/":
        await _floor_socket(scope, receive, send)
    else:
        await site(scope, receive, send)
