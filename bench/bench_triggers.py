"""Database side: what the triggers cost the writer, and what reaches the channel layer.

    python bench/bench_triggers.py [--rows 100000] [--runs 5] [--commits 3000]

Prints, side by side in one run on the same server:
* a ``--rows``-row UPDATE with no trigger (baseline) vs with pgobserve's triggers;
* the same UPDATE: notifications sent, group messages, time until all pks reached the layer;
* single-row commits/s: raw ``pg_notify`` commits received by a LISTEN connection (baseline)
  vs single-row UPDATE commits delivered through triggers + listener to a channel-layer group;
* a ``--rows``-row UPDATE and DELETE with no trigger vs pgobserve's triggers vs the triggers
  of a table that keeps old rows (what model observers need), on the same table.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from common import configure_django, dsn, median, print_table

from pgobserve import groups, sql
from pgobserve.listener import Listener

TABLE = "pgobserve_bench_item"
SPEC = sql.TableSpec(TABLE, "id", pk_kind="int")
#: The same table's triggers when they keep old rows (a model observer's model).
OLD_ROWS_SPEC = sql.TableSpec(TABLE, "id", pk_kind="int", old_rows=True)


def setup(conn: psycopg.Connection, rows: int) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.execute(f"CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, value int, note text)")
    conn.execute(
        f"INSERT INTO {TABLE} (value, note) SELECT g, 'row ' || g FROM generate_series(1, %s) g",
        (rows,),
    )
    conn.execute(f"VACUUM ANALYZE {TABLE}")


def install(conn: psycopg.Connection, on: bool) -> None:
    with conn.transaction():
        for statement in sql.render_install(SPEC) if on else sql.render_drop(SPEC):
            conn.execute(statement)


def time_update(conn: psycopg.Connection, runs: int) -> float:
    times = []
    for _ in range(runs):
        conn.execute(f"VACUUM {TABLE}")
        start = time.perf_counter()
        conn.execute(f"UPDATE {TABLE} SET value = value + 1")
        times.append(time.perf_counter() - start)
    return median(times)


def refill(conn: psycopg.Connection, rows: int) -> None:
    """The table as ``setup`` left it (ids 1..rows, freshly vacuumed), written with no trigger."""
    use_triggers(conn, None)
    conn.execute(f"TRUNCATE {TABLE}")
    conn.execute(
        f"INSERT INTO {TABLE} (id, value, note) SELECT g, g, 'row ' || g"
        " FROM generate_series(1, %s) g",
        (rows,),
    )
    conn.execute(f"VACUUM ANALYZE {TABLE}")


def use_triggers(conn: psycopg.Connection, spec: sql.TableSpec | None) -> None:
    """The table's triggers as ``spec`` renders them, or none."""
    with conn.transaction():
        for statement in sql.render_drop(SPEC) + (sql.render_install(spec) if spec else []):
            conn.execute(statement)


def forget_old_rows(conn: psycopg.Connection) -> int:
    """Delete the old rows this bench left (no listener reads them); how many there were.
    Only this table's: ``pgobserve_old_row`` may be shared with a project's tables."""
    if conn.execute("SELECT to_regclass(%s)", (sql.quote_ident(sql.OLD_ROWS),)).fetchone()[0]:
        kept = conn.execute(
            f"DELETE FROM {sql.quote_ident(sql.OLD_ROWS)} WHERE tbl = %s", (TABLE,)
        ).rowcount
        conn.execute(f"VACUUM {sql.quote_ident(sql.OLD_ROWS)}")
        return kept
    return 0


#: Writers compared by ``old_rows_cost``: no trigger, pgobserve's, pgobserve's keeping old rows.
WRITERS = {
    "no trigger (baseline)": None,
    "pgobserve triggers": SPEC,
    "pgobserve triggers keeping old rows": OLD_ROWS_SPEC,
}
STATEMENTS = {"UPDATE": f"UPDATE {TABLE} SET value = value + 1", "DELETE": f"DELETE FROM {TABLE}"}


def old_rows_cost(conn: psycopg.Connection, rows: int, runs: int) -> dict[str, dict[str, float]]:
    """writer → {"UPDATE": median s, "DELETE": median s} of a statement over every row.

    Each statement starts from the same refilled table; the writers take turns within each
    run, so a drift of the machine spreads over all of them. Old rows are deleted, untimed,
    after each statement (no listener reads them here)."""
    times = {writer: {op: [] for op in STATEMENTS} for writer in WRITERS}
    for _ in range(runs):
        for writer, spec in WRITERS.items():
            for op, statement in STATEMENTS.items():
                refill(conn, rows)
                use_triggers(conn, spec)
                start = time.perf_counter()
                conn.execute(statement)
                times[writer][op].append(time.perf_counter() - start)
                use_triggers(conn, None)
                kept = forget_old_rows(conn)
                expected = rows if spec is not None and spec.old_rows else 0
                assert kept == expected, f"{writer}, {op}: {kept} old rows, not {expected}"
    return {writer: {op: median(t) for op, t in ops.items()} for writer, ops in times.items()}


class Collector:
    """A channel-layer consumer stand-in: receives on one channel and counts pks."""

    def __init__(self, layer) -> None:
        self.layer = layer
        self.pks: set = set()
        self.messages = 0

    async def start(self, group: str) -> None:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(group, self.channel)

    async def until(self, predicate, timeout: float = 60.0) -> None:
        async def loop():
            while not predicate():
                message = await self.layer.receive(self.channel)
                if message["type"] == "pgobserve.change":
                    self.messages += 1
                    self.pks.update(message["pks"] or [])

        await asyncio.wait_for(loop(), timeout)


@asynccontextmanager
async def listening(conninfo: str) -> AsyncIterator[tuple[Listener, Collector]]:
    """A listener task on an in-memory layer, and a collector in the table's group."""
    from pgobserve.layers import InMemoryChannelLayer

    layer = InMemoryChannelLayer(capacity=100_000)
    listener = Listener(conninfo, channel_layer=layer, lock_key=0x626E6368)
    task = asyncio.create_task(listener.run())
    await asyncio.wait_for(listener.listening.wait(), 10)
    collector = Collector(layer)
    await collector.start(groups.table_group(TABLE))
    try:
        yield listener, collector
    finally:
        listener.stop()
        await task


async def bulk_delivery(conninfo: str, rows: int) -> tuple[int, int, float]:
    """(NOTIFY payloads, group messages, seconds from commit until all pks arrived)."""
    async with listening(conninfo) as (listener, collector):
        before = dict(listener.stats)
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as writer:
            await writer.execute(f"UPDATE {TABLE} SET value = value + 1")
            committed = time.perf_counter()
            await collector.until(lambda: len(collector.pks) >= rows)
            elapsed = time.perf_counter() - committed
    # Counted once the listener stopped: its last group_sends may end after the pks arrived.
    notifications = listener.stats["notifications"] - before["notifications"]
    messages = listener.stats["messages"] - before["messages"]
    return notifications, messages, elapsed


async def write(conninfo: str, commits: int, writers: int, statement: str) -> None:
    """``commits`` autocommit executions of ``statement`` (one %s: 1..commits), spread
    over ``writers`` concurrent connections."""

    async def one(offset: int) -> None:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            for i in range(offset, commits, writers):
                await conn.execute(statement, (i + 1,))

    await asyncio.gather(*(one(offset) for offset in range(writers)))


async def raw_notify_rate(conninfo: str, commits: int, writers: int) -> float:
    listen = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    await listen.execute("LISTEN pgobserve_bench_raw")
    received = 0

    async def receive():
        nonlocal received
        async for _ in listen.notifies():
            received += 1
            if received >= commits:
                return

    receiver = asyncio.create_task(receive())
    start = time.perf_counter()
    await write(conninfo, commits, writers, "SELECT pg_notify('pgobserve_bench_raw', %s::text)")
    await asyncio.wait_for(receiver, 60)
    elapsed = time.perf_counter() - start
    await listen.close()
    return commits / elapsed


async def delivered_rate(conninfo: str, commits: int, writers: int) -> float:
    async with listening(conninfo) as (_, collector):
        return await _delivered_rate(conninfo, commits, writers, collector)


async def _delivered_rate(conninfo: str, commits: int, writers: int, collector) -> float:
    layer = collector.layer
    seen = 0

    async def count():
        nonlocal seen
        while seen < commits:
            message = await layer.receive(collector.channel)
            if message["type"] == "pgobserve.change":
                seen += len(message["pks"] or [])

    counter = asyncio.create_task(count())
    start = time.perf_counter()
    await write(conninfo, commits, writers, f"UPDATE {TABLE} SET value = value + 1 WHERE id = %s")
    await asyncio.wait_for(counter, 60)
    elapsed = time.perf_counter() - start
    return commits / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--writers", type=int, default=4, help="concurrent writer connections")
    args = parser.parse_args()
    configure_django()
    conninfo = dsn()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        setup(conn, args.rows)
        install(conn, False)
        base = time_update(conn, args.runs)
        install(conn, True)
        with_triggers = time_update(conn, args.runs)
    notifications, messages, elapsed = asyncio.run(bulk_delivery(conninfo, args.rows))
    raw = asyncio.run(raw_notify_rate(conninfo, args.commits, args.writers))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install(conn, False)
    start = time.perf_counter()
    statement = f"UPDATE {TABLE} SET value = value + 1 WHERE id = %s"
    asyncio.run(write(conninfo, args.commits, args.writers, statement))
    plain = args.commits / (time.perf_counter() - start)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        install(conn, True)
    delivered = asyncio.run(delivered_rate(conninfo, args.commits, args.writers))
    print(f"PostgreSQL {version}, {args.rows:,} rows, median of {args.runs} runs")
    print_table(
        f"{args.rows:,}-row UPDATE, writer time",
        [
            ("no trigger (baseline)", f"{base * 1000:.0f} ms", "1.00x"),
            (
                "pgobserve triggers",
                f"{with_triggers * 1000:.0f} ms",
                f"{with_triggers / base:.2f}x",
            ),
        ],
        ("writer", "median", "ratio"),
    )
    print_table(
        f"{args.rows:,}-row UPDATE, delivery to the channel layer (in-memory layer)",
        [(f"{notifications}", f"{messages}", f"{elapsed * 1000:.0f} ms")],
        ("NOTIFY payloads", "group messages", "commit -> all pks in the table group"),
    )
    print_table(
        f"sustained single-row commits ({args.writers} writer connections)",
        [
            ("raw pg_notify commits received by LISTEN (baseline)", f"{raw:,.0f}/s", "1.00"),
            (
                "(reference) the same UPDATEs with no trigger, nothing delivered",
                f"{plain:,.0f}/s",
                f"{plain / raw:.2f}",
            ),
            (
                "UPDATE commits delivered via triggers + listener",
                f"{delivered:,.0f}/s",
                f"{delivered / raw:.2f}",
            ),
        ],
        ("path", "rate", "ratio"),
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        had_old_rows_table = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (sql.quote_ident(sql.OLD_ROWS),)
        ).fetchone()[0]
        cost = old_rows_cost(conn, args.rows, args.runs)
        if not had_old_rows_table:  # created by this bench's install: leave no trace
            conn.execute(f"DROP TABLE IF EXISTS {sql.quote_ident(sql.OLD_ROWS)}")
    base_cost = cost["no trigger (baseline)"]
    print_table(
        f"{args.rows:,}-row UPDATE and DELETE, writer time, old rows kept or not",
        [
            (
                writer,
                f"{cost[writer]['UPDATE'] * 1000:.0f} ms",
                f"{cost[writer]['UPDATE'] / base_cost['UPDATE']:.2f}x",
                f"{cost[writer]['DELETE'] * 1000:.0f} ms",
                f"{cost[writer]['DELETE'] / base_cost['DELETE']:.2f}x",
            )
            for writer in WRITERS
        ],
        ("writer", "UPDATE", "ratio", "DELETE", "ratio"),
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        install_cleanup = sql.render_drop(SPEC)
        for statement in install_cleanup[-1:]:
            conn.execute(statement)


if __name__ == "__main__":
    main()
