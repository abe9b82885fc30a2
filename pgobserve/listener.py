"""The listener: LISTEN on PostgreSQL, turn notifications into Channels group messages.

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
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

from . import conf, groups
from .payload import Change, PayloadError, TableChanges, decode, merge

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


def group_messages(
    merged: dict[str, TableChanges], shards: int, max_pks: int
) -> list[tuple[str, dict[str, Any]]]:
    """(group, message) pairs for one batch of merged changes. Pure, so it is unit-tested."""
    out: list[tuple[str, dict[str, Any]]] = []
    for table, changes in merged.items():
        if changes.everything:
            message = {
                "type": "pgobserve.change",
                "table": table,
                "pks": None,
                "truncated": changes.truncated,
            }
            out.append((groups.table_group(table), message))
            out += [(groups.shard_group(table, s), message) for s in range(shards)]
            continue
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
    ) -> None:
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
        self.stats = {"notifications": 0, "batches": 0, "messages": 0, "resyncs": 0}
        self._stopping = asyncio.Event()
        self._run_id = secrets.token_hex(4)
        self._burst = False
        self._sequence = 0

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
            await self._lead(conn)
            await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(self.channel)))
            logger.info(
                "pgobserve listener LISTENs on channel %r (database %r, %d shards per table)",
                self.channel,
                conn.info.dbname,
                self.shards,
            )
            self.listening.set()
            # Anything committed while nobody listened is lost: make every consumer re-read.
            # Retried, not raised: a channel layer that is down must not kill the listener.
            await self._resync_until_sent()
            await self._pump(conn)

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
                logger.info("another pgobserve listener leads; standing by")
                waiting_logged = True
            await asyncio.sleep(0.5)

    async def _pump(self, conn: psycopg.AsyncConnection) -> None:
        pending: list[Change] = []
        wake = asyncio.Event()
        sender = asyncio.ensure_future(self._sender(pending, wake))
        try:
            async for notify in conn.notifies():
                if sender.done():  # the sender failed: surface its exception
                    sender.result()
                try:
                    pending.append(decode(notify.payload))
                except PayloadError as exc:
                    logger.warning("ignoring notification: %s", exc)
                    continue
                if len(notify.payload) >= FULL_PAYLOAD:
                    self._burst = True  # a statement that filled a payload may have more
                self.stats["notifications"] += 1
                wake.set()
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _sender(self, pending: list[Change], wake: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await wake.wait()
            if self.coalesce:
                await asyncio.sleep(self.coalesce)
            # A big statement's payloads arrive as a burst that takes several socket reads:
            # keep yielding to the reader while it still finds more, so the burst is sent as
            # one batch. Only long payloads announce a burst: a small change (an ORM save)
            # is sent at once.
            deadline = loop.time() + BURST_WINDOW
            seen = -1
            while self._burst and len(pending) != seen and loop.time() < deadline:
                seen = len(pending)
                await asyncio.sleep(BURST_QUIET)
            self._burst = False
            wake.clear()
            batch = pending[:]
            pending.clear()
            try:
                await self.send(merge(batch))
            except Exception:
                # The channel layer failed (Redis down?): what was in flight is lost, so
                # consumers must re-read once it is back.
                logger.exception("pgobserve listener could not send a batch; will resync")
                await self._resync_until_sent()

    async def send(self, merged: dict[str, TableChanges]) -> None:
        messages = group_messages(merged, self.shards, self.max_pks)
        # Every message of a batch carries its id, so consumers that share reads
        # (``share_reads``) can tell the same changes from later ones.
        self._sequence += 1
        batch = f"{self._run_id}.{self._sequence}"
        for _, message in messages:
            message["batch"] = batch
        layer = self.channel_layer
        slots = asyncio.Semaphore(SEND_CONCURRENCY)

        async def send_one(group: str, message: dict[str, Any]) -> None:
            async with slots:
                await layer.group_send(group, message)

        await asyncio.gather(*(send_one(group, msg) for group, msg in messages))
        self.stats["batches"] += 1
        self.stats["messages"] += len(messages)

    async def send_resync(self) -> None:
        await self.channel_layer.group_send(groups.RESYNC_GROUP, {"type": "pgobserve.resync"})
        self.stats["resyncs"] += 1

    async def _resync_until_sent(self) -> None:
        delay = 0.1
        while True:
            try:
                await self.send_resync()
                return
            except Exception:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_delay)
