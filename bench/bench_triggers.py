"""Database side: what the triggers cost the writer, and what reaches the channel layer.

    python bench/bench_triggers.py [--rows 100000] [--runs 5] [--commits 3000] [--rounds 3]
        [--only update,sustained,profile,old-rows]

Prints, side by side in one run on the same server:
* a ``--rows``-row UPDATE with no trigger (baseline) vs an empty trigger function with the
  same transition tables (the floor of any such trigger) vs pgobserve's triggers;
* the same UPDATE: notifications sent, group messages, time until all pks reached the layer;
* single-row commits/s: raw ``pg_notify`` commits received by a LISTEN connection, the same
  UPDATEs with no trigger (one writer and all), with a ``pg_notify`` of the same payload and no
  trigger, with the triggers (writers only; delivered through the listener to a channel-layer
  group), and some with ``synchronous_commit = off`` in the writer sessions;
* the writers' wait events (``pg_stat_activity`` sampled every 5 ms) during three of those;
* a ``--rows``-row UPDATE and DELETE with no trigger vs pgobserve's triggers vs the triggers
  of a table that keeps old rows (what model observers need), on the same table.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import Counter
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


def time_update(conn: psycopg.Connection, runs: int) -> dict[str, float]:
    """writer → median s of an UPDATE of every row, with no trigger, with the empty trigger
    (the floor: PostgreSQL filling the transition tables), with pgobserve's; the three take
    turns within each run."""
    writers = {"no trigger (baseline)": None, "empty trigger, same REFERENCING": EMPTY}
    writers["pgobserve triggers"] = SPEC
    times: dict[str, list[float]] = {writer: [] for writer in writers}
    for _ in range(runs):
        for writer, spec in writers.items():
            use_triggers(conn, spec)
            conn.execute(f"VACUUM {TABLE}")
            start = time.perf_counter()
            conn.execute(f"UPDATE {TABLE} SET value = value + 1")
            times[writer].append(time.perf_counter() - start)
    return {writer: median(t) for writer, t in times.items()}


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


#: A trigger function that does nothing: with pgobserve's REFERENCING clauses, the floor
#: any statement-level trigger with transition tables costs (PostgreSQL fills them).
EMPTY_FUNCTION = "pgobserve_bench_empty"
EMPTY = "empty"


def empty_triggers() -> list[str]:
    statements = [
        f"CREATE OR REPLACE FUNCTION {EMPTY_FUNCTION}() RETURNS trigger LANGUAGE plpgsql"
        " AS $$BEGIN RETURN NULL; END$$"
    ]
    for op, referencing in (
        ("UPDATE", "REFERENCING OLD TABLE AS pgobserve_old NEW TABLE AS pgobserve_new"),
        ("DELETE", "REFERENCING OLD TABLE AS pgobserve_old"),
    ):
        statements.append(
            f"CREATE TRIGGER {sql.TRIGGER_NAMES[op]} AFTER {op} ON {TABLE} {referencing}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION {EMPTY_FUNCTION}()"
        )
    return statements


def use_triggers(conn: psycopg.Connection, spec: sql.TableSpec | str | None) -> None:
    """The table's triggers as ``spec`` renders them, the empty ones (EMPTY), or none."""
    with conn.transaction():
        if spec == EMPTY:
            added = empty_triggers()
        else:
            added = sql.render_install(spec) if spec else []
        for statement in sql.render_drop(SPEC) + added:
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
    "empty trigger function, same REFERENCING (the floor)": EMPTY,
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
                expected = rows if isinstance(spec, sql.TableSpec) and spec.old_rows else 0
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


#: The writers' application_name: what the wait-event sampler looks for.
WRITER_APP = "pgobserve_bench_writer"


async def write(
    conninfo: str, commits: int, writers: int, statement: str, async_commit: bool = False
) -> None:
    """``commits`` autocommit executions of ``statement`` (one %s: 1..commits), spread
    over ``writers`` concurrent connections; ``async_commit``: those sessions (only) set
    ``synchronous_commit = off``, so their commits do not wait for the WAL flush."""
    options = "-c synchronous_commit=off" if async_commit else ""

    async def one(offset: int) -> None:
        async with await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, application_name=WRITER_APP, options=options
        ) as conn:
            for i in range(offset, commits, writers):
                await conn.execute(statement, (i + 1,))

    await asyncio.gather(*(one(offset) for offset in range(writers)))


#: The single-row UPDATE of the sustained-commits table.
ONE_ROW_UPDATE = f"UPDATE {TABLE} SET value = value + 1 WHERE id = %s"
#: The channel of the baselines' own ``pg_notify`` calls (no pgobserve trigger involved).
RAW_CHANNEL = "pgobserve_bench_raw"
RAW_NOTIFY = f"SELECT pg_notify('{RAW_CHANNEL}', %s::text)"
#: The same UPDATE and, in the same statement (same transaction, same round trip), the
#: ``pg_notify`` of the payload pgobserve's trigger sends for it; no trigger installed.
NOTIFY_UPDATE = (
    f"WITH changed AS ({ONE_ROW_UPDATE} RETURNING id) SELECT pg_notify('{RAW_CHANNEL}',"
    f" {sql.quote_literal(sql.payload_header(TABLE, 'U'))} || id || ']}}') FROM changed"
)


async def write_rate(
    conninfo: str, commits: int, writers: int, statement: str, async_commit: bool = False
) -> float:
    """Commits/s of ``write``, nothing received."""
    start = time.perf_counter()
    await write(conninfo, commits, writers, statement, async_commit)
    return commits / (time.perf_counter() - start)


async def listen_rate(
    conninfo: str, commits: int, writers: int, statement: str, async_commit: bool = False
) -> float:
    """Commits/s of ``write`` until a LISTEN connection on RAW_CHANNEL received them all."""
    listen = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    await listen.execute(f"LISTEN {RAW_CHANNEL}")
    received = 0

    async def receive():
        nonlocal received
        async for _ in listen.notifies():
            received += 1
            if received >= commits:
                return

    receiver = asyncio.create_task(receive())
    start = time.perf_counter()
    await write(conninfo, commits, writers, statement, async_commit)
    await asyncio.wait_for(receiver, 60)
    elapsed = time.perf_counter() - start
    await listen.close()
    return commits / elapsed


async def delivered_rate(
    conninfo: str, commits: int, writers: int, async_commit: bool = False
) -> float:
    """Commits/s of single-row UPDATEs until their pks all reached the table's group."""
    async with listening(conninfo) as (_, collector):
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
        await write(conninfo, commits, writers, ONE_ROW_UPDATE, async_commit)
        await asyncio.wait_for(counter, 60)
        return commits / (time.perf_counter() - start)


class WaitSampler:
    """What the writer connections are doing, from ``pg_stat_activity`` every ``interval``
    seconds on a connection of its own (a thread): a count per wait event, "running" for an
    active backend with none (on CPU, or waiting on something not instrumented)."""

    def __init__(self, conninfo: str, interval: float = 0.005) -> None:
        self.conninfo = conninfo
        self.interval = interval
        self.counts: Counter = Counter()
        self.samples = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        query = (
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'running (no wait event)')"
            " FROM pg_stat_activity WHERE application_name = %s"
        )
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self._stop.wait(self.interval):
                self.samples += 1
                for (event,) in conn.execute(query, (WRITER_APP,)):
                    self.counts[event] += 1

    def __enter__(self) -> WaitSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)


#: The paths of the sustained-commits table: (label, triggers installed, how it is run).
#: The rate of each is the median over ``--rounds`` rounds, the paths taking turns.
SUSTAINED = [
    ("raw pg_notify commits received by LISTEN", False, "raw"),
    ("the same UPDATEs with no trigger, nothing delivered", False, "plain"),
    ("(one writer) the same UPDATEs, no trigger: one WAL flush per commit", False, "plain-one"),
    ("UPDATE + pg_notify of the same payload in the same statement, no trigger", False, "notify"),
    ("pgobserve trigger, writers only (no listener)", True, "trigger"),
    ("UPDATE commits delivered via triggers + listener", True, "delivered"),
    ("(synchronous_commit off) UPDATEs with no trigger", False, "plain-async"),
    ("(synchronous_commit off) UPDATE + pg_notify, no trigger", False, "notify-async"),
    ("(synchronous_commit off) delivered via triggers + listener", True, "delivered-async"),
]


async def sustained_path(conninfo: str, commits: int, writers: int, how: str) -> float:
    async_commit = how.endswith("-async")
    kind = how.removesuffix("-async")
    if kind == "plain-one":
        return await write_rate(conninfo, commits, 1, ONE_ROW_UPDATE)
    if kind == "raw":
        return await listen_rate(conninfo, commits, writers, RAW_NOTIFY, async_commit)
    if kind == "notify":
        return await listen_rate(conninfo, commits, writers, NOTIFY_UPDATE, async_commit)
    if kind in ("plain", "trigger"):
        return await write_rate(conninfo, commits, writers, ONE_ROW_UPDATE, async_commit)
    return await delivered_rate(conninfo, commits, writers, async_commit)


def sustained(conninfo: str, commits: int, writers: int, rounds: int) -> dict[str, float]:
    """label → median commits/s over ``rounds`` rounds of every path of SUSTAINED."""
    rates: dict[str, list[float]] = {label: [] for label, _, _ in SUSTAINED}
    for _ in range(rounds):
        for label, triggers, how in SUSTAINED:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                install(conn, triggers)
            rates[label].append(asyncio.run(sustained_path(conninfo, commits, writers, how)))
    return {label: median(r) for label, r in rates.items()}


#: The runs profiled by ``wait_profile``: (label, triggers installed, how it is run).
PROFILED = [
    ("no trigger", False, "plain"),
    ("UPDATE + pg_notify", False, "notify"),
    ("triggers + listener", True, "delivered"),
]


def wait_profile(conninfo: str, commits: int, writers: int) -> dict[str, tuple[float, Counter]]:
    """label → (commits/s, wait events of the writers sampled during that run)."""
    profiles = {}
    for label, triggers, how in PROFILED:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            install(conn, triggers)
        with WaitSampler(conninfo) as sampler:
            rate = asyncio.run(sustained_path(conninfo, commits, writers, how))
        profiles[label] = (rate, sampler.counts)
    return profiles


SECTIONS = ("update", "sustained", "profile", "old-rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--writers", type=int, default=4, help="concurrent writer connections")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the sustained paths")
    parser.add_argument(
        "--profile-commits", type=int, default=20_000, help="commits of each profiled run"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    configure_django()
    conninfo = dsn()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        setup(conn, args.rows)
    print(f"PostgreSQL {version}, {args.rows:,} rows, median of {args.runs} runs")
    if "update" in only:
        update_tables(conninfo, args)
    if "sustained" in only:
        rates = sustained(conninfo, args.commits, args.writers, args.rounds)
        raw, plain = rates[SUSTAINED[0][0]], rates[SUSTAINED[1][0]]
        print_table(
            f"sustained single-row commits ({args.writers} writer connections,"
            f" {args.commits:,} commits, median of {args.rounds} rounds)",
            [
                (label, f"{rate:,.0f}/s", f"{rate / raw:.2f}", f"{rate / plain:.2f}")
                for label, rate in rates.items()
            ],
            ("path", "rate", "vs raw pg_notify", "vs no-trigger UPDATE"),
        )
    if "profile" in only:
        profiles = wait_profile(conninfo, args.profile_commits, args.writers)
        events = sorted(
            {event for _, counts in profiles.values() for event in counts},
            key=lambda e: -sum(counts[e] for _, counts in profiles.values()),
        )
        print_table(
            f"wait events of the {args.writers} writers, pg_stat_activity sampled every 5 ms"
            f" ({args.profile_commits:,} commits per run; share of samples)",
            [("commits/s during the run", *(f"{r:,.0f}/s" for r, _ in profiles.values()))]
            + [
                (
                    event,
                    *(
                        f"{counts[event] / max(1, sum(counts.values())):.0%}"
                        for _, counts in profiles.values()
                    ),
                )
                for event in events
            ],
            ("wait event", *profiles),
        )
    if "old-rows" in only:
        old_rows_table(conninfo, args)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        install_cleanup = sql.render_drop(SPEC)
        for statement in install_cleanup[-1:]:
            conn.execute(statement)
        conn.execute(f"DROP FUNCTION IF EXISTS {EMPTY_FUNCTION}()")


def update_tables(conninfo: str, args) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        times = time_update(conn, args.runs)
        install(conn, True)
    notifications, messages, elapsed = asyncio.run(bulk_delivery(conninfo, args.rows))
    base = times["no trigger (baseline)"]
    print_table(
        f"{args.rows:,}-row UPDATE, writer time",
        [
            (writer, f"{t * 1000:.0f} ms", f"{t / base:.2f}x", f"+{(t - base) * 1000:.0f} ms")
            for writer, t in times.items()
        ],
        ("writer", "median", "ratio", "added"),
    )
    print_table(
        f"{args.rows:,}-row UPDATE, delivery to the channel layer (in-memory layer)",
        [(f"{notifications}", f"{messages}", f"{elapsed * 1000:.0f} ms")],
        ("NOTIFY payloads", "group messages", "commit -> all pks in the table group"),
    )


def old_rows_table(conninfo: str, args) -> None:
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


if __name__ == "__main__":
    main()
