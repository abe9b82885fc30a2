"""Objects per idle socket and garbage-collector pauses of one daphne process (issue 10).

    python bench/bench_gc.py objects [--sockets 1000]
    python bench/bench_gc.py pauses [--sockets 10000] [--idle 45] [--fanout 1000]
                                    [--gc freeze|threshold=N,M,K] [--ping-interval 20]
    python bench/bench_gc.py churn [--sockets 2000] [--rounds 3] [--gc freeze]

Serves ``benchsite.gcprobe:application`` under daphne (in-process listener,
``pgobserve.layers.InMemoryChannelLayer``) against the bench PostgreSQL
(``PGOBSERVE_BENCH_DSN``) in a database of its own (``PGOBSERVE_BENCH_DB``, default
``pgobserve_gcbench``). Socket i subscribes row i (``subscribe_instance``), except the first
``--fanout`` sockets, which all subscribe row 1 (the fan-out row). Clients: one asyncio
process, pings off.

* ``objects``: the collector's tracked objects with no socket and with ``--sockets``, per
  socket by owner and by type (``/gcprobe/objects/``);
* ``pauses``: every collection over ``--idle`` idle seconds, then during one UPDATE of the
  fan-out row until its ``--fanout`` sockets have the push;
* ``churn``: ``--rounds`` rounds of connecting ``--sockets`` and closing them all; daphne's
  RSS and tracked objects after each.

``--gc`` is handed to the site as ``PGOBSERVE["GC"]`` (``pgobserve/gc.py``) or, for
``threshold=…``, to ``gc.set_threshold`` (``BENCH_GC_THRESHOLD``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("PGOBSERVE_BENCH_DB", "pgobserve_gcbench")

import psycopg  # noqa: E402
import websockets  # noqa: E402
from bench_ws import bench_dsn, child_env, free_port, prepare, request  # noqa: E402
from common import dsn, percentile  # noqa: E402


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Daphne:
    def __init__(self, args: argparse.Namespace) -> None:
        self.port = free_port()
        env = child_env("memory")
        if args.gc:
            if args.gc.startswith("threshold="):
                env["BENCH_GC_THRESHOLD"] = args.gc.split("=", 1)[1]
            else:
                env["BENCH_PGOBSERVE_GC"] = args.gc
        cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        if args.ping_interval:
            cmd += ["--ping-interval", str(args.ping_interval)]
        self.proc = subprocess.Popen(
            [*cmd, "benchsite.gcprobe:application"], env=env, preexec_fn=raise_nofile,
            stdout=subprocess.DEVNULL, stderr=open("/tmp/bench_gc_daphne.log", "w"),  # noqa: SIM115
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                self.probe()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def probe(self, path: str = "", timeout: float = 120) -> dict:
        url = f"http://127.0.0.1:{self.port}/gcprobe/{path}"
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return json.loads(r.read())

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/pgobserve/"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


async def connect(url: str, pks: list[int], concurrency: int = 100) -> list:
    gate = asyncio.Semaphore(concurrency)
    sockets = []

    async def one(i: int, pk: int) -> None:
        async with gate:
            ws = await websockets.connect(
                url, max_queue=None, ping_interval=None, open_timeout=120, close_timeout=5
            )
            await request(ws, {"action": "subscribe_instance", "pk": pk, "request_id": i}, 120)
            sockets.append(ws)

    await asyncio.wait_for(asyncio.gather(*(one(i, pk) for i, pk in enumerate(pks))), 900)
    return sockets


async def close_all(sockets: list) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


def plan(n: int, fanout: int) -> list[int]:
    """Row 1 for the first ``fanout`` sockets, then rows 2.. (one each)."""
    return [1 if i < fanout else i - fanout + 2 for i in range(n)]


def per_socket(before: dict, after: dict, n: int, top: int = 25) -> None:
    total = (after["total"] - before["total"]) / n
    print(f"\ntracked objects: {before['total']} → {after['total']}: {total:.1f} per socket")
    print(f"RSS: {before['rss_kib']} → {after['rss_kib']} KiB: "
          f"{(after['rss_kib'] - before['rss_kib']) / n:.1f} KiB per socket")  # fmt: skip

    def sums(report: dict) -> dict[str, float]:
        out: dict[str, float] = {}
        for owner, count in report["instances_by_owner"].items():
            out[f"{owner} (instances)"] = out.get(f"{owner} (instances)", 0) + count
        for label, kinds in report["plain_by_owner"].items():
            key = label.split(":")[0] if not label.startswith("consumer.") else label
            out[key] = out.get(key, 0) + sum(kinds.values())
        out["unclaimed plain"] = sum(report["plain_unclaimed"].values())
        return out

    b, a = sums(before), sums(after)
    print("\n| owner | objects per socket |\n|---|---|")
    rows = sorted(((a.get(k, 0) - b.get(k, 0)) / n, k) for k in set(a) | set(b))
    for value, key in reversed(rows):
        if abs(value) >= 0.05:
            print(f"| {key} | {value:.2f} |")
    print("\n| type | objects per socket |\n|---|---|")
    keys = set(after["by_type"]) | set(before["by_type"])
    diffs = sorted(
        ((after["by_type"].get(k, 0) - before["by_type"].get(k, 0)) / n, k) for k in keys
    )
    for value, key in reversed(diffs[-top:]):
        if value >= 0.05:
            print(f"| {key} | {value:.2f} |")
    # plain objects per owner label and kind (details)
    print("\n| owner: plain kind | per socket |\n|---|---|")
    detail: dict[str, float] = {}
    for report, sign in ((after, 1), (before, -1)):
        for label, kinds in report["plain_by_owner"].items():
            for kind, count in kinds.items():
                key = f"{label} : {kind}"
                detail[key] = detail.get(key, 0) + sign * count
        for kind, count in report["plain_unclaimed"].items():
            key = f"unclaimed : {kind}"
            detail[key] = detail.get(key, 0) + sign * count
    for key, value in sorted(detail.items(), key=lambda kv: -kv[1])[:45]:
        if value / n >= 0.05:
            print(f"| {key} | {value / n:.2f} |")


def collections_since(report: dict, since: float, until: float | None = None) -> list:
    return [c for c in report["collections"] if c[0] >= since and (until is None or c[0] <= until)]


def summary(label: str, colls: list) -> str:
    gen2 = [c[2] * 1000 for c in colls if c[1] == 2]
    every = [c[2] * 1000 for c in colls]
    return (
        f"| {label} | {len(every)} | {len(gen2)} | "
        f"{max(gen2, default=0):.0f} | {max(every, default=0):.1f} | "
        f"{percentile(every, 99) if every else 0:.1f} | {sum(every):.0f} |"
    )


async def main_async(args: argparse.Namespace) -> None:
    site = Daphne(args)
    sockets: list = []
    try:
        if args.mode == "objects":
            warm = await connect(site.url(), [args.rows])
            await close_all(warm)
            await asyncio.sleep(2)
            site.probe("objects/")  # its own garbage, then the baseline
            before = site.probe("objects/")
            sockets = await connect(site.url(), plan(args.sockets, args.fanout))
            await asyncio.sleep(3)
            after = site.probe("objects/")
            per_socket(before, after, args.sockets)
            if args.json:
                Path(args.json).write_text(json.dumps({"before": before, "after": after}))
        elif args.mode == "pauses":
            t0 = time.time()
            sockets = await connect(site.url(), plan(args.sockets, args.fanout))
            connected = time.time()
            print(f"{len(sockets)} sockets in {connected - t0:.1f} s", file=sys.stderr)
            await asyncio.sleep(args.idle)
            idle_end = time.time()
            report = site.probe()
            idle = collections_since(report, connected + 2, idle_end)
            rss = report["rss_kib"]
            # the fan-out: one UPDATE of row 1, until its sockets have the push
            listeners = sockets[: args.fanout]
            with psycopg.connect(bench_dsn(dsn()), autocommit=True) as writer:
                start = time.time()
                writer.execute("UPDATE benchsite_benchitem SET value = value + 1 WHERE id = 1")

            async def push(ws) -> float:
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("action") == "update":
                        return time.time() - start

            lat = await asyncio.wait_for(asyncio.gather(*(push(ws) for ws in listeners)), 120)
            end = time.time()
            await asyncio.sleep(0.5)
            report = site.probe()
            during = collections_since(report, start, end + 0.2)
            print(f"\n--gc {args.gc or 'none'} --ping-interval {args.ping_interval or 20}, "
                  f"{len(sockets)} sockets, idle {args.idle} s, RSS {rss / 1024:.0f} MiB, "
                  f"frozen {report['gc_frozen']}; fan-out {args.fanout}: p50 "
                  f"{percentile(lat, 50) * 1000:.0f} ms, "
                  f"p99 {percentile(lat, 99) * 1000:.0f} ms")  # fmt: skip
            print("| phase | collections | gen2 | gen2 max ms | max ms | p99 ms | total ms |")
            print("|---|---|---|---|---|---|---|")
            print(summary(f"idle {args.idle} s", idle))
            print(summary("fan-out", during))
            gen2_times = [f"{c[0] - connected:.0f}s:{c[2] * 1000:.0f}ms" for c in idle if c[1] == 2]
            print("idle gen2:", " ".join(gen2_times))
            if args.json:
                Path(args.json).write_text(
                    json.dumps({"idle": idle, "during": during, "lat": lat, "rss_kib": rss})
                )
        elif args.mode == "churn":
            base = site.probe("objects/")
            print(f"start: RSS {base['rss_kib'] / 1024:.1f} MiB, {base['total']} objects")
            for k in range(args.rounds):
                sockets = await connect(site.url(), plan(args.sockets, args.fanout))
                await asyncio.sleep(2)
                mid = site.probe()
                await close_all(sockets)
                sockets = []
                await asyncio.sleep(3)
                after = site.probe("objects/?garbage=1" if args.garbage else "objects/")
                print(f"round {k + 1}: connected RSS {mid['rss_kib'] / 1024:.1f} MiB; closed: "
                      f"RSS {after['rss_kib'] / 1024:.1f} MiB, {after['total']} tracked objects, "
                      f"frozen {after['gc_frozen']}")  # fmt: skip
                if args.garbage:
                    cyclic = sorted(after["garbage_by_type"].items(), key=lambda kv: -kv[1])
                    total = sum(after["garbage_by_type"].values())
                    print(
                        f"  cyclic garbage: {total} objects, {total / args.sockets:.1f} per socket"
                    )
                    for kind, count in cyclic[:40]:
                        print(f"  | {kind} | {count / args.sockets:.2f} |")
    finally:
        await close_all(sockets)
        site.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("objects", "pauses", "churn"))
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=0)
    parser.add_argument("--idle", type=float, default=45)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gc", default="")
    parser.add_argument("--ping-interval", type=int, default=0)
    parser.add_argument("--rows", type=int, default=12_000)
    parser.add_argument("--prepare", action="store_true", help="(re)build the database")
    parser.add_argument("--json", default="")
    parser.add_argument("--garbage", action="store_true", help="churn: cyclic garbage by type")
    args = parser.parse_args()
    raise_nofile()
    if args.prepare:
        prepare(dsn(), args.rows)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
