"""The bench site with a probe (bench/bench_scale.py): ``benchsite.gcprobe:application``.

The same WebSocket routes as ``benchsite.asgi``, plus ``GET /gcprobe/`` answering JSON with
this process's pid, RSS (KiB, from /proc), CPU seconds and every garbage collection recorded
since the process started (``gc.callbacks``: end time as ``time.time()``, generation,
duration in seconds, objects collected). Nothing in pgobserve changes: the callbacks are
installed when daphne imports this module.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import time
from collections import deque

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

from .asgi import application as site  # noqa: E402  (after the callbacks: count its start-up)


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _probe(scope, receive, send) -> None:
    while (await receive())["type"] != "http.request":
        pass
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
    else:
        await site(scope, receive, send)
