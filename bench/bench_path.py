"""Where a single subscriber's commit → push latency goes, stage by stage (issue 10).

    python bench/bench_path.py [--updates 300]

One daphne process serving ``benchsite.gcprobe:application`` with the in-process listener and
``pgobserve.layers.InMemoryChannelLayer`` (the "in-process" path of ``bench_ws.py``), one
socket subscribed to one row, ``--updates`` psycopg UPDATEs of it one after another. Run
twice in one sitting: plain (the latency, as ``bench_ws.py`` measures it), then with
``BENCH_TRACE=1`` (``benchsite/trace.py``: timestamps at each stage inside daphne, all
``time.time()`` as the writer's and the client's, one machine), giving the median of each
stage. Uses ``PGOBSERVE_BENCH_DSN`` (else the tests' server), database ``PGOBSERVE_BENCH_DB``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("PGOBSERVE_BENCH_DB", "pgobserve_path")  # before bench_ws reads it

import psycopg  # noqa: E402
import websockets  # noqa: E402
from bench_scale import ScaleSite  # noqa: E402
from bench_ws import bench_dsn, next_push, prepare, request, warm_up  # noqa: E402
from common import dsn, median, percentile, print_table  # noqa: E402

PK = 1
#: Stages stamped inside daphne, in the order a change passes them.
STAGES = (
    "notify received",
    "hub delivers",
    "flush starts",
    "read starts (thread)",
    "read ends (thread)",
    "loop has the rows",
    "feed_reply starts",
    "frame to daphne",
)


def trace(port: int) -> list[tuple[str, float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/gcprobe/trace/", timeout=10) as r:
        return [tuple(stamp) for stamp in json.loads(r.read())]


async def measure(site: ScaleSite, conninfo: str, updates: int, traced: bool) -> dict:
    writer = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    port = site.ports[0]
    total, wrote, rows = [], [], []
    async with websockets.connect(site.url(0), max_queue=None) as ws:
        await request(ws, {"action": "subscribe_instance", "pk": PK, "request_id": 1})
        await warm_up(ws, writer, PK)
        for i in range(updates + 20):
            if traced:
                await asyncio.to_thread(trace, port)  # drop what came before
            start = time.time()
            await writer.execute("UPDATE benchsite_benchitem SET value = value + 1 WHERE id = 1")
            returned = time.time()
            await next_push(ws)
            received = time.time()
            if i < 20:  # warm-up
                continue
            total.append(received - start)
            wrote.append(returned - start)
            if traced:
                stamps: dict[str, float] = {}
                for stage, at in await asyncio.to_thread(trace, port):
                    stamps.setdefault(stage, at)  # the first of each stage
                if all(stage in stamps for stage in STAGES):
                    rows.append([start, returned, *(stamps[s] for s in STAGES), received])
    await writer.close()
    return {"total": total, "wrote": wrote, "rows": rows}


def breakdown(rows: list[list[float]]) -> list[tuple[str, str, str]]:
    names = ["", "the writer's UPDATE + COMMIT returns", *STAGES, "the client has the push"]
    out = []
    for i in range(1, len(names)):
        deltas = [row[i] - row[i - 1] for row in rows]
        out.append(
            (
                f"→ {names[i]}",
                f"{median(deltas) * 1000:.3f} ms",
                f"{percentile(deltas, 90) * 1000:.3f} ms",
            )
        )
    # Stamps are taken at the start of each function: "notify received" may come before the
    # execute returns (the listener and the writer race), so deltas can be negative.
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=300)
    args = parser.parse_args()
    base = dsn()
    os.environ["PGOBSERVE_BENCH_DSN"] = base
    prepare(base, 100)
    conninfo = bench_dsn(base)
    results = {}
    for traced in (False, True):
        if traced:
            os.environ["BENCH_TRACE"] = "1"
        with ScaleSite("memory", 1) as site:
            results[traced] = asyncio.run(measure(site, conninfo, args.updates, traced))
        os.environ.pop("BENCH_TRACE", None)
    with psycopg.connect(base) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"bench_path.py; PostgreSQL {version}; {os.cpu_count()} cores; {when}")
    rows = []
    for traced, r in results.items():
        rows.append((
            "traced" if traced else "plain",
            f"{median(r['total']) * 1000:.2f} ms", f"{percentile(r['total'], 99) * 1000:.2f} ms",
            f"{median(r['wrote']) * 1000:.2f} ms",
        ))  # fmt: skip
    print_table(
        f"commit → push, one socket, {args.updates} UPDATEs (in-process listener, memory layer)",
        rows,
        ("run", "p50", "p99", "of which the writer's UPDATE + COMMIT, p50"),
    )
    print_table(
        "stage by stage (traced run): time since the previous stage",
        breakdown(results[True]["rows"]),
        ("stage reached", "median", "p90"),
    )


if __name__ == "__main__":
    main()
