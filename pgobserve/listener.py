"""The listener (internal): LISTEN on PostgreSQL, notifications to Channels group messages.

One dedicated autocommit connection (psycopg 3, async) LISTENs on the pgobserve channel.
Notifications are merged per table while the previous batch is being sent (plus an
optional ``COALESCE_MS`` window), then sent as ``pgobserve.change`` messages:

* to the table group, with every changed pk (query subscribers see everything);
* to each shard group that a changed pk hashes to, with that shard's pks only
  (instance subscribers wake only for their shard).

A 100,000-row UPDATE therefore costs at most SHARDS + 100,000 / MAX_PKS_PER_MESSAGE
group messages per batch. After every (re)connect or leadership takeover the listener
sends ``pgobserve.resync`` to every consumer, since notifications sent while nobody was
listening are lost. Several listeners may run; one leads through an advisory lock.

Any role that can connect can NOTIFY the channel: notifications pass ``intake.Gate``,
which drops what no trigger would send, and wait in a bounded ``intake.Backlog``. While
the channel layer is down nothing piles up: the resync sent once it is back covers it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

from . import conf, groups
from .intake import Backlog, Gate
from .observer.feed import ObserverFeed
from .outages import LOG_EVERY
from .payload import TableChanges, merge

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.listener")

#: Longest time a burst of notifications is gathered into one batch.
BURST_WINDOW = 0.05
#: A payload this long (characters) comes from a statement of hundreds of rows, whose other
#: payloads may still be on their way; a one-row change is ~60 characters.
FULL_PAYLOAD = 2000

#: A burst is over when no notification came for this long (seconds).
BURST_QUIET = 0.005
#: Most group messages of a batch in flight at once. Each holds a channel-layer connection,
#: and a TRUNCATE of N tables alone is N × (SHARDS + 1) messages: sent all at once they
#: exceed the Redis layer's pool (redis-py's default ``max_connections`` is 100), the batch
#: fails with ``MaxConnectionsError`` and every consumer has to resync.
SEND_CONCURRENCY = 32
#: Seconds between announcements of each busy group's last message number.
ANNOUNCE_EVERY = 2.0
#: Longest wait between attempts to send a resync while the channel layer is down: it
#: bounds how late consumers hear of the outage's end (clients converge within 5 s).
LAYER_RETRY_MAX = 1.0

#: TCP keepalives for the LISTEN connection unless the connection settings say otherwise.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

#: Keys of Django's connection parameters that are not libpq connection options.
_NOT_CONNINFO = {"cursor_factory", "context", "prepare_threshold", "pool", "server_side_binding"}


def conninfo_for_alias(alias: str | None = None) -> dict[str, Any]:
    """psycopg connection kwargs for a Django database alias (Django's own parameters)."""
    from django.db import connections

    params = connections[alias or conf.database()].get_connection_params()
    return {k: v for k, v in params.items() if k not in _NOT_CONNINFO and v is not None}


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def table_messages(
    table: str, changes: TableChanges, shards: int, max_pks: int
) -> list[tuple[str, dict[str, Any]]]:
    """(group, message) pairs for one table's merged changes."""
    if changes.everything:
        message = {
            "type": "pgobserve.change",
            "table": table,
            "pks": None,
            "truncated": changes.truncated,
        }
        return [(groups.table_group(table), message)] + [
            (groups.shard_group(table, s), message) for s in range(shards)
        ]
    out: list[tuple[str, dict[str, Any]]] = []
    pks = sorted(changes.pks, key=groups.pk_key)
    for chunk in _chunks(pks, max_pks):
        out.append((groups.table_group(table), _change(table, chunk)))
    by_shard: dict[int, list[Any]] = defaultdict(list)
    for pk in pks:
        by_shard[groups.shard_of(pk, shards)].append(pk)
    for shard, shard_pks in sorted(by_shard.items()):
        for chunk in _chunks(shard_pks, max_pks):
            out.append((groups.shard_group(table, shard), _change(table, chunk)))
    return out


def _change(table: str, pks: list[Any]) -> dict[str, Any]:
    return {"type": "pgobserve.change", "table": table, "pks": pks, "truncated": False}


class Listener:
    """LISTEN → group_send loop. ``await run()`` until ``stop()`` or cancellation."""

    def __init__(
        self,
        conninfo: dict[str, Any] | str | None = None,
        *,
        channel_layer: Any = None,
        channel: str | None = None,
        shards: int | None = None,
        coalesce: float | None = None,
        max_pks: int | None = None,
        lock_key: int | None = None,
        reconnect_max_delay: float = 5.0,
        tables: Mapping[str, str] | None = None,
    ) -> None:
        """``tables``: table → pk kind (``observed_pk_kinds()``) of the tables whose
        notifications are sent on; None accepts every table."""
        self.conninfo = conninfo if conninfo is not None else conninfo_for_alias()
        self._channel_layer = channel_layer
        self.channel = channel or conf.channel()
        self.shards = shards or conf.shards()
        self.coalesce = conf.coalesce_seconds() if coalesce is None else coalesce
        self.max_pks = max_pks or conf.max_pks_per_message()
        self.lock_key = conf.leader_lock_key() if lock_key is None else lock_key
        self.reconnect_max_delay = reconnect_max_delay
        #: Set while this listener leads and LISTENs; cleared on a connection loss.
        self.listening = asyncio.Event()
        #: Counters for logs, tests and benchmarks.
        self.stats = {
            "notifications": 0,  # accepted (sent, or covered by a resync)
            "batches": 0,
            "messages": 0,
            "resyncs": 0,
            "unobserved": 0,  # ignored: a table that is not in ``tables``
            "malformed": 0,  # ignored: not a payload a trigger writes
            "covered": 0,  # dropped: a resync sent after them covers them
        }
        self.gate = Gate(tables, self.stats)
        #: The current session's backlog (None between sessions).
        self.backlog: Backlog | None = None
        #: When the channel layer stopped answering (None while it answers).
        self._layer_down_since: float | None = None
        self._layer_down_logged = False
        self._layer_logged_at = -LOG_EVERY
        self._stopping = asyncio.Event()
        self._run_id = secrets.token_hex(4)
        self._burst = False
        self._sequence = 0
        self._observer_feed: ObserverFeed | None = None
        #: The number of the last message to each group (``sequences.py``), of the last
        #: one sent, and the groups whose last number is still to be announced (how many
        #: more times).
        self._numbers: defaultdict[str, int] = defaultdict(int)
        self._to_announce: dict[str, int] = {}
        self._sent: dict[str, int] = {}

    @property
    def observer_feed(self) -> ObserverFeed:
        """Where batches go to become model observer events (``observer/feed.py``)."""
        if self._observer_feed is None:
            self._observer_feed = ObserverFeed(self.channel_layer)
        return self._observer_feed

    @property
    def channel_layer(self) -> Any:
        if self._channel_layer is None:
            from channels.layers import get_channel_layer

            self._channel_layer = get_channel_layer()
            if self._channel_layer is None:
                raise RuntimeError("pgobserve needs a channel layer: set CHANNEL_LAYERS")
        return self._channel_layer

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Lead, LISTEN and forward until stopped; reconnect with backoff on any DB error."""
        delay = 0.1
        stop = asyncio.ensure_future(self._stopping.wait())
        work: asyncio.Future[None] | None = None
        try:
            while not self._stopping.is_set():
                work = asyncio.ensure_future(self._session())
                done, _ = await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop in done:
                    work.cancel()
                    await asyncio.gather(work, return_exceptions=True)
                    break
                try:
                    work.result()
                    delay = 0.1
                except psycopg.OperationalError as exc:
                    self.listening.clear()
                    logger.warning(
                        "pgobserve listener lost the database (%s); reconnecting in %.1fs",
                        str(exc).strip() or type(exc).__name__,
                        delay,
                    )
                    try:
                        await asyncio.wait_for(asyncio.shield(stop), delay)
                    except asyncio.TimeoutError:
                        pass
                    delay = min(delay * 2, self.reconnect_max_delay)
        finally:
            stop.cancel()
            if work is not None and not work.done():
                # run() itself was cancelled (e.g. the ASGI server shutting down its task): end
                # the session too, or it would keep the connection and the leader lock.
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
            self.listening.clear()
            if self._observer_feed is not None:
                await self._observer_feed.close()
            logger.info("pgobserve listener stopped")

    async def _session(self) -> None:
        params = (
            dict(self.conninfo)
            if isinstance(self.conninfo, dict)
            else conninfo_to_dict(self.conninfo)
        )
        # A LISTEN connection is idle by design: without keepalives a dead peer (a network
        # cut, a failed-over server) would go unnoticed and changes would stop silently.
        for key, value in KEEPALIVES.items():
            params.setdefault(key, value)
        conn = await psycopg.AsyncConnection.connect(autocommit=True, **params)
        async with conn:
            await self._warn_if_pooled(conn)
            await self._lead(conn)
            await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self.channel)))
            logger.info(
                "pgobserve listener LISTENs on channel %r (database %r, %d shards per table)",
                self.channel,
                conn.info.dbname,
                self.shards,
            )
            self.listening.set()
            await self._pump(conn)

    async def _warn_if_pooled(self, conn: psycopg.AsyncConnection) -> None:
        """Say so when the connection goes through a pooler: the server's backend pid is
        not the one given at connect (PgBouncer makes one up). LISTEN and the leader lock
        live with a server session, which transaction pooling hands to other clients: no
        change would arrive, silently. Session pooling keeps it, so this warns, once per
        (re)connect, rather than refuse."""
        cur = await conn.execute("SELECT pg_backend_pid()")
        row = await cur.fetchone()
        if row is not None and row[0] != conn.info.backend_pid:
            logger.warning(
                "pgobserve listener connects through a pooler (database %r): LISTEN and "
                "the leader lock need a server session of their own, which transaction "
                "pooling does not keep (no change would arrive). Point `pgobserve listen "
                "--database ALIAS` (the in-process listener: PGOBSERVE['DATABASE']) at a "
                "direct connection, or use session pooling",
                conn.info.dbname,
            )

    async def _lead(self, conn: psycopg.AsyncConnection) -> None:
        """Hold the advisory lock that makes this listener the one that sends."""
        waiting_logged = False
        while True:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_key,))
            row = await cur.fetchone()
            if row and row[0]:
                if waiting_logged:
                    logger.info("pgobserve listener took over as leader")
                return
            if not waiting_logged:
                logger.info("pgobserve listener stands by: %s", await self._lock_holder(conn))
                waiting_logged = True
            await asyncio.sleep(0.5)

    async def _lock_holder(self, conn: psycopg.AsyncConnection) -> str:
        """Who holds the leader lock. Any role that can connect can take an advisory lock
        (and read its key in ``pg_locks``), so say who, and whether it is our role."""
        key = self.lock_key & 0xFFFF_FFFF_FFFF_FFFF  # a bigint key is two oids in pg_locks
        cur = await conn.execute(
            "SELECT l.pid, a.usename, a.application_name, a.usename = current_user"
            " FROM pg_locks l LEFT JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.classid = %s::bigint::oid AND l.objid = %s::bigint::oid"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (key >> 32, key & 0xFFFF_FFFF),
        )
        row = await cur.fetchone()
        if row is None:
            return "the leader lock was just released"
        pid, role, application, ours = row
        holder = f"backend pid {pid} (role {role!r}, application {application!r}) leads"
        if ours:
            return holder
        return holder + (
            ", a role other than this listener's: unless it is a pgobserve listener, no"
            " change is delivered while it holds the lock (PGOBSERVE['LEADER_LOCK_KEY'])"
        )

    async def _pump(self, conn: psycopg.AsyncConnection) -> None:
        self.backlog = backlog = Backlog(self.stats)
        # Anything committed while nobody listened is lost: make every consumer re-read.
        # The sender retries it while the channel layer is down; notifications keep being
        # read meanwhile (and dropped: the resync covers them), so none pile up anywhere.
        backlog.need_resync()
        sender = asyncio.ensure_future(self._sender(backlog))
        announcer = asyncio.ensure_future(self._announce_numbers())
        try:
            async for notify in conn.notifies():
                if sender.done():  # the sender failed: surface its exception
                    sender.result()
                change = self.gate.accept(notify)
                if change is None:
                    continue
                if len(notify.payload) >= FULL_PAYLOAD:
                    self._burst = True  # a statement that filled a payload may have more
                self.stats["notifications"] += 1
                backlog.add(change)
        finally:
            sender.cancel()
            announcer.cancel()
            await asyncio.gather(sender, announcer, return_exceptions=True)
            self.backlog = None

    async def _sender(self, backlog: Backlog) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await backlog.wake.wait()
            if not backlog.resync_due:
                if self.coalesce:
                    await asyncio.sleep(self.coalesce)
                # A big statement's payloads arrive as a burst that takes several socket
                # reads: keep yielding to the reader while it still finds more, so the burst
                # is sent as one batch. Only long payloads announce a burst: a small change
                # (an ORM save) is sent at once.
                deadline = loop.time() + BURST_WINDOW
                seen = -1
                while self._burst and len(backlog) != seen and loop.time() < deadline:
                    seen = len(backlog)
                    await asyncio.sleep(BURST_QUIET)
                self._burst = False
            backlog.wake.clear()
            if backlog.resync_due:
                await self._resync_until_sent(backlog)
                continue
            batch = backlog.take()
            if not batch:
                continue
            self.observer_feed.submit(batch)
            try:
                messages = self.messages(merge(batch))
            except Exception:
                # Decoded changes always merge; if that ever breaks, resync, never drop.
                logger.exception("pgobserve listener could not merge a batch; sending a resync")
                backlog.need_resync()
                continue
            try:
                await self._send_messages(messages)
            except Exception as exc:
                # Part of the batch may be lost: consumers must re-read once the layer is back.
                self._layer_failed(exc)
                backlog.need_resync()

    def messages(self, merged: dict[str, TableChanges]) -> list[tuple[str, dict[str, Any]]]:
        """The batch's group messages, one table at a time: if one table's messages cannot
        be built, its consumers re-read all they watch of it; other tables are unaffected."""
        out: list[tuple[str, dict[str, Any]]] = []
        for table, changes in merged.items():
            try:
                out += table_messages(table, changes, self.shards, self.max_pks)
            except Exception:
                logger.exception(
                    "pgobserve listener could not build the messages of table %r; its"
                    " consumers re-read everything they watch of it",
                    table[:200],
                )
                everything = TableChanges(everything=True)
                out += table_messages(table, everything, self.shards, self.max_pks)
        return out

    async def send(self, merged: dict[str, TableChanges]) -> None:
        await self._send_messages(self.messages(merged))

    async def _send_messages(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        # Every message of a batch carries its id, so consumers that share reads
        # (``share_reads``) can tell the same changes from later ones; and its group's next
        # number, so a consumer sees when the layer dropped one (``sequences.py``).
        self._sequence += 1
        batch = f"{self._run_id}.{self._sequence}"
        numbered = []
        for group, message in messages:
            self._numbers[group] += 1
            numbered.append(
                (
                    group,
                    {
                        **message,
                        "batch": batch,
                        "group": group,
                        "run": self._run_id,
                        "seq": self._numbers[group],
                    },
                )
            )
        await self._send_in_order(numbered)
        self.stats["batches"] += 1
        self.stats["messages"] += len(messages)

    async def _send_in_order(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        """Send ``messages`` up to ``SEND_CONCURRENCY`` at a time, each started after the
        ones before it and after the previous one to its group was sent: a group's messages
        arrive in order (their numbers count on it), and a layer that delivers at once (the
        in-memory one) keeps the batch's order across groups."""
        layer = self.channel_layer
        slots = asyncio.Semaphore(SEND_CONCURRENCY)
        last: dict[str, asyncio.Future[None]] = {}
        sends: list[asyncio.Future[None]] = []

        async def send(group: str, message: dict[str, Any]) -> None:
            try:
                try:
                    await layer.group_send(group, message)
                except Exception:
                    # Once more, at once: a connection the layer's pool kept from before a
                    # Redis restart fails its first command. (A message sent twice is
                    # harmless: its number shows the second is not a gap.)
                    await layer.group_send(group, message)
            finally:
                slots.release()
            if message["type"] == "pgobserve.change":
                # Announce only what was sent: an announcement must not overtake the message
                # it counts.
                self._sent[group] = max(self._sent.get(group, 0), message["seq"])
                self._to_announce[group] = 2

        for group, message in messages:
            before = last.get(group)
            if before is not None and not before.done():
                await asyncio.wait([before])
            await slots.acquire()
            last[group] = task = asyncio.ensure_future(send(group, message))
            sends.append(task)
        failures = [r for r in await asyncio.gather(*sends, return_exceptions=True) if r]
        if failures:
            raise failures[0]

    async def _announce_numbers(self) -> None:
        """Tell each group that had messages lately the number of its last one, twice: a
        consumer whose last messages were dropped or expired in the layer (nothing came
        after them to show the gap) finds out within ``ANNOUNCE_EVERY`` seconds and
        re-reads (``sequences.py``)."""
        while True:
            await asyncio.sleep(ANNOUNCE_EVERY)
            due = list(self._to_announce)
            for group in due:
                self._to_announce[group] -= 1
                if self._to_announce[group] <= 0:
                    del self._to_announce[group]
            announcements = [
                (
                    group,
                    {
                        "type": "pgobserve.sequence",
                        "group": group,
                        "run": self._run_id,
                        "seq": self._sent[group],
                    },
                )
                for group in due
            ]
            try:
                await self._send_in_order(announcements)
            except Exception as exc:  # the layer is away: the resync that follows covers it
                self._layer_failed(exc)

    async def send_resync(self) -> None:
        await self.channel_layer.group_send(groups.RESYNC_GROUP, {"type": "pgobserve.resync"})
        self.stats["resyncs"] += 1

    async def _resync_until_sent(self, backlog: Backlog) -> None:
        """Send a resync, retrying with backoff while the channel layer is down. What arrives
        before the attempt that succeeds is covered by it and dropped (``Backlog``)."""
        delay = 0.1
        while True:
            backlog.resync_starts()
            try:
                await self.send_resync()
            except Exception as exc:
                self._layer_failed(exc)
                backlog.need_resync()
                await asyncio.sleep(delay)
                delay = min(delay * 2, LAYER_RETRY_MAX)
                continue
            if not backlog.resync_due:  # else the backlog overflowed while it was sent
                self._layer_back()
                return

    def _layer_failed(self, exc: BaseException) -> None:
        """Log once per outage, not once per retry; and not again for an outage within
        ``LOG_EVERY`` of the last one logged (a connection the layer's pool kept from
        before a restart fails once more right after it: the same outage to a reader)."""
        if self._layer_down_since is not None:
            return
        now = time.monotonic()
        self._layer_down_since = now
        self._layer_down_logged = now - self._layer_logged_at >= LOG_EVERY
        if not self._layer_down_logged:
            return
        self._layer_logged_at = now
        logger.warning(
            "pgobserve listener cannot reach the channel layer (%s: %s); changes are not"
            " queued meanwhile: once it answers, a resync makes every consumer re-read",
            type(exc).__name__,
            str(exc).strip()[:200],
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )

    def _layer_back(self) -> None:
        if self._layer_down_since is None:
            return
        if self._layer_down_logged:
            logger.info(
                "pgobserve listener reaches the channel layer again after %.1fs; resync sent",
                time.monotonic() - self._layer_down_since,
            )
        self._layer_down_since = None
