"""Notifications are input: any role that can connect can NOTIFY pgobserve's channel.

A malformed payload is dropped on its own (the real changes of its batch still go out), a
notification for a table that is not observed sends nothing, a flood of either costs a
bounded number of log lines, and while the channel layer is down the listener's backlog
stays bounded and a resync covers what it dropped. Real PostgreSQL, a real listener task,
real channel layers (in-memory, and a throwaway redis-server for the outage).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid

import psycopg
import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer
from django.db import connections
from psycopg import sql

from pgobserve import groups
from pgobserve.intake import Backlog, IgnoredLog, observed_pk_kinds
from pgobserve.listener import Listener
from pgobserve.payload import Change, PayloadError, TableChanges, check_pks, decode
from tests.fix_layer import Receiver, table_and_sentinel, wait_for
from tests.servers import ThrowawayRedis

ITEM, TEXT_ITEM, UUID_ITEM = "testapp_item", "testapp_textitem", "testapp_uuiditem"
UUID = "12345678-1234-1234-1234-123456789abc"
LOCK_KEY = 0x7472757374  # not the default: never contends with another test's listener


# payload.decode / check_pks ----------------------------------------------------------------

MALFORMED = [
    '{"v":1,"t":"a","op":"U","pk":[[1]]}',
    '{"v":1,"t":"a","op":"U","pk":[{"x":1}]}',
    '{"v":1,"t":"a","op":"U","pk":[true]}',
    '{"v":1,"t":"a","op":"U","pk":[1,null]}',
    '{"v":1,"t":"a","op":"U","pk":[NaN]}',
    '{"v":1,"t":"a","op":"U","pk":[1e400]}',  # a float that parses as infinity
    '{"v":1,"t":"a","op":"U","pk":[]}',
    '{"v":1,"t":"a","op":"U","pk":{"1":1}}',
    '{"v":1,"t":"a","op":"U","pk":"1"}',
    '{"v":1,"t":"","op":"U","pk":[1]}',
    '{"v":1,"t":["a"],"op":"U","pk":[1]}',
    '{"v":1,"t":"%s","op":"U","pk":[1]}' % ("a" * 1001),
    '{"v":true,"t":"a","op":"U","pk":[1]}',
    '{"v":1.0,"t":"a","op":"U","pk":[1]}',
    '{"v":1,"t":"a","op":"U"}',
    '{"v":1,"t":"a","op":"U","pk":[1],"extra":0}',
    '{"v":1,"t":"a","op":"u","pk":[1]}',
    "[" * 5000,  # deeper than Python's recursion limit
    '{"v":1,"t":"a","op":"U","pk":[%s]}' % ",".join(["1"] * 4000),  # longer than a NOTIFY
]


@pytest.mark.parametrize("text", MALFORMED)
def test_decode_rejects_anything_a_trigger_would_not_write(text):
    with pytest.raises(PayloadError):
        decode(text)


def test_decode_accepts_what_triggers_write():
    assert decode('{"v":1,"t":"a","op":"U","pk":[1,"x",2.5]}') == Change("a", "U", (1, "x", 2.5))
    assert decode('{"v":1,"t":"a","op":"T","pk":null}') == Change("a", "T", None)


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("int", (1, -(2**63), 2**63 - 1), [("1",), (1.5,), (True,), (1, "1")]),
        (
            "uuid",
            (str(uuid.uuid4()), str(uuid.uuid4()).upper()),
            [("abc",), (1,), ("x" + str(uuid.uuid4())[1:],), ("-" * 36,), (UUID[1:] + "-",)],
        ),
        ("digest", ("0123456789abcdef" * 2,), [("0" * 31,), ("A" * 32,), ("é" * 32,), (1,)]),
        ("other", ("x", 1, 2.5), []),
    ],
)
def test_check_pks_accepts_only_the_type_the_tables_trigger_writes(kind, good, bad):
    check_pks(Change("t", "U", good), kind)
    check_pks(Change("t", "T", None), kind)
    for pks in bad:
        with pytest.raises(PayloadError):
            check_pks(Change("t", "U", pks), kind)


# intake.Backlog / IgnoredLog / Listener.messages (pure) ------------------------------------


def test_backlog_is_bounded_and_a_resync_covers_what_it_drops():
    stats = {"covered": 0}
    backlog = Backlog(stats, limit=10)
    for pk in range(5):
        backlog.add(Change("t", "U", (pk,)))
    assert len(backlog) == 5 and backlog.wake.is_set()
    backlog.add(Change("t", "U", tuple(range(100, 106))))  # 11 pks: past the limit
    assert (len(backlog), backlog.resync_due, stats["covered"]) == (0, True, 6)
    backlog.add(Change("t", "U", (7,)))  # while a resync is due: covered, not kept
    assert (len(backlog), stats["covered"]) == (0, 7)
    backlog.resync_starts()
    backlog.add(Change("t", "U", (8,)))  # while it is being sent: kept, sent after it
    assert [c.pks for c in backlog.take()] == [(8,)] and not backlog.resync_due


def test_ignored_notifications_are_logged_once_per_interval(caplog):
    caplog.set_level(logging.WARNING, logger="pgobserve.listener")
    log = IgnoredLog("not an observed table", every=3600)
    for pid in range(1000):
        log.note(pid, "table 'nope'")
    assert len(caplog.records) == 1 and log.unreported == 999
    log.next_at = 0  # the interval has passed
    log.note(1, "table 'nope'")
    assert len(caplog.records) == 2 and "ignored 1000 notification(s)" in caplog.messages[1]


class Unprintable:
    """A pk whose text cannot be made: building its table's messages fails."""

    def __str__(self) -> str:
        raise RuntimeError("no text")


def test_a_table_whose_messages_fail_falls_back_to_everything_others_are_exact():
    listener = Listener("", shards=4, max_pks=100, lock_key=LOCK_KEY)
    messages = listener.messages(
        {"bad": TableChanges(pks={Unprintable()}), "good": TableChanges(pks={1, 2})}
    )
    by_table = {}
    for group, message in messages:
        by_table.setdefault(message["table"], []).append((group, message["pks"]))
    assert by_table["bad"] == [(groups.table_group("bad"), None)] + [
        (groups.shard_group("bad", s), None) for s in range(4)
    ]
    assert sorted(pk for _, pks in by_table["good"] for pk in pks) == [1, 1, 2, 2]


# a real listener on the in-memory layer -----------------------------------------------------


class Trusting:
    """A listener task accepting the observed tables (as ``pgobserve listen`` does), a
    layer to receive its messages, and a writer outside Django."""

    def __init__(self, conninfo, layer, listener, writer) -> None:
        self.conninfo, self.layer, self.listener, self.writer = conninfo, layer, listener, writer

    async def receiver(self, *group_names: str) -> Receiver:
        receiver = Receiver(self.layer, await self.layer.new_channel())
        for group in group_names:
            await self.layer.group_add(group, receiver.channel)
        return receiver

    async def execute(self, *statements: str) -> None:
        """The statements in one transaction: their notifications arrive together."""
        async with self.writer.transaction():
            for statement in statements:
                await self.writer.execute(statement)

    async def sentinel(self, receiver: Receiver) -> None:
        """Commit a sentinel row and wait for it: every earlier commit has been handled."""
        cursor = await self.writer.execute(
            "INSERT INTO testapp_sentinel DEFAULT VALUES RETURNING id"
        )
        (pk,) = await cursor.fetchone()
        await receiver.until(lambda r: pk in r.pks("testapp_sentinel"))


async def start_listener(conninfo, layer, **kwargs) -> tuple[Listener, asyncio.Task]:
    """A listener task for the observed tables, once it has sent its first resync."""
    listener = Listener(
        conninfo, channel_layer=layer, tables=observed_pk_kinds(), lock_key=LOCK_KEY, **kwargs
    )
    task = asyncio.create_task(listener.run())
    await wait_for(lambda: listener.stats["resyncs"] >= 1, 20, "the listener's first resync")
    return listener, task


async def stop_listener(listener: Listener, task: asyncio.Task) -> None:
    listener.stop()
    await asyncio.wait_for(task, 10)
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def trusting(conninfo, transactional_db):
    layer = InMemoryChannelLayer(capacity=100_000)
    listener, task = await start_listener(conninfo, layer)
    writer = await psycopg.AsyncConnection.connect(**conninfo, autocommit=True)
    try:
        yield Trusting(conninfo, layer, listener, writer)
    finally:
        await writer.close()
        await stop_listener(listener, task)


def notify(payload: str) -> str:
    return "SELECT pg_notify('pgobserve', %s)" % sql.quote(payload)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_a_malformed_payload_loses_none_of_the_real_changes_of_its_batch(trusting):
    receiver = await trusting.receiver(*table_and_sentinel(ITEM), groups.table_group(TEXT_ITEM))
    await trusting.execute(
        "INSERT INTO testapp_item (id, name, value, tags)"
        " VALUES (1, 'a', 0, '{}'), (2, 'b', 0, '{}')"
    )
    await trusting.sentinel(receiver)
    receiver.messages.clear()
    resyncs = trusting.listener.stats["resyncs"]
    # One transaction: its notifications arrive together, so they are one batch.
    await trusting.execute(
        notify('{"v":1,"t":"testapp_item","op":"U","pk":[[1]]}'),
        "UPDATE testapp_item SET value = value + 1 WHERE id IN (1, 2)",
        "INSERT INTO testapp_textitem (key, value) VALUES ('k', 1)",
        notify('{"v":1,"t":"testapp_item","op":"U","pk":[{"id":3}]}'),
        notify('{"v":1,"t":"testapp_textitem","op":"U","pk":[true]}'),
    )
    await trusting.sentinel(receiver)
    assert sorted(receiver.pks(ITEM)) == [1, 2]
    assert receiver.pks(TEXT_ITEM) == ["k"]
    assert trusting.listener.stats["malformed"] == 3
    assert trusting.listener.stats["resyncs"] == resyncs  # no resync was needed either


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_notifications_for_unobserved_tables_or_wrong_pk_types_send_nothing(trusting):
    # django_content_type: a real table no observed model reaches (auth_group is, from
    # auth_user_groups, when a model observer follows users' groups).
    forged = ["django_content_type", "nope", ITEM, UUID_ITEM]
    receiver = await trusting.receiver(
        *table_and_sentinel(ITEM),
        *(groups.table_group(table) for table in forged),
        *(groups.group_for_pk(table, "abc", 64) for table in forged),
        *(groups.group_for_pk(table, 1, 64) for table in forged),
    )
    await trusting.execute(
        notify('{"v":1,"t":"django_content_type","op":"U","pk":[1]}'),  # real, not observed
        notify('{"v":1,"t":"nope","op":"T","pk":null}'),
        notify('{"v":1,"t":"testapp_item","op":"U","pk":["abc"]}'),  # an int pk table
        notify('{"v":1,"t":"testapp_uuiditem","op":"U","pk":["abc"]}'),
        notify('{"v":1,"t":"testapp_uuiditem","op":"U","pk":[1]}'),
    )
    await trusting.sentinel(receiver)
    assert [m for m in receiver.messages if m["type"] == "pgobserve.change"] == [
        m for m in receiver.changes("testapp_sentinel")
    ]
    stats = trusting.listener.stats
    assert (stats["unobserved"], stats["malformed"]) == (2, 3)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_a_flood_of_forged_notifications_logs_a_bounded_number_of_lines(trusting, caplog):
    caplog.set_level(logging.INFO, logger="pgobserve")
    receiver = await trusting.receiver(*table_and_sentinel(ITEM))
    for _ in range(2):  # distinct payloads: PostgreSQL folds identical ones of a transaction
        await trusting.execute(
            'SELECT pg_notify(\'pgobserve\', format(\'{"v":1,"t":"nope","op":"U",'
            '"pk":[%s]}\', g)) FROM generate_series(1, 600) g',
            'SELECT pg_notify(\'pgobserve\', format(\'{"v":1,"t":"testapp_item",'
            '"op":"U","pk":[[%s]]}\', g)) FROM generate_series(1, 600) g',
        )
    await trusting.execute(
        "INSERT INTO testapp_item (id, name, value, tags) VALUES (9, 'x', 0, '{}')"
    )
    await trusting.sentinel(receiver)
    assert receiver.pks(ITEM) == [9]  # a real change amid the flood still goes out
    stats = trusting.listener.stats
    assert (stats["unobserved"], stats["malformed"]) == (1200, 1200)
    ignored = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 2, caplog.messages  # one per reason, not one per notification
    assert len(caplog.records) <= 3, caplog.messages


# the channel layer goes down ------------------------------------------------------------------


class RestartableRedis(ThrowawayRedis):
    """Stopped with SHUTDOWN SAVE, so its restart keeps the test's group memberships: the
    resync the listener sends once Redis is back then has a receiver to reach."""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall(b"SHUTDOWN SAVE\r\n")
                sock.recv(64)  # the server closes the connection once it has saved
            self.proc.wait(10)
        self.proc = None


def redis_layer(url: str):
    from channels_redis.core import RedisChannelLayer

    hosts = [{"address": url, "socket_timeout": None}]
    return RedisChannelLayer(hosts=hosts, prefix="pgobserve-trust", capacity=100_000)


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(90)
async def test_while_the_layer_is_down_the_backlog_stays_bounded_then_a_resync_covers_it(
    conninfo, caplog
):
    caplog.set_level(logging.INFO, logger="pgobserve.listener")
    try:
        redis = RestartableRedis()
    except FileNotFoundError:
        pytest.skip("redis-server is not installed")
    sending, receiving = redis_layer(redis.url), redis_layer(redis.url)
    layers = [sending, receiving]
    listener = task = None
    try:
        # A plain channel name (no "!"): a new layer can receive it after the restart.
        receiver = Receiver(receiving, f"trust-receiver-{uuid.uuid4().hex}")
        for group in (groups.RESYNC_GROUP, *table_and_sentinel(ITEM)):
            await receiving.group_add(group, receiver.channel)
        listener, task = await start_listener(conninfo, sending, coalesce=0)
        await receiver.until(lambda r: r.resyncs() == 1)
        writer = await psycopg.AsyncConnection.connect(**conninfo, autocommit=True)
        try:
            await writer.execute(
                "INSERT INTO testapp_item (id, name, value, tags)"
                " SELECT g, 'n', 0, '{}' FROM generate_series(1, 2000) g"
            )
            await wait_for(lambda: listener.stats["batches"] >= 1, 20, "the INSERT to be sent")

            await asyncio.to_thread(redis.stop)
            received = listener.stats["notifications"]
            biggest = 0
            for pk in range(1, 2001):  # 2,000 commits while the layer is down
                await writer.execute("UPDATE testapp_item SET value = 1 WHERE id = %s", [pk])
                biggest = max(biggest, len(listener.backlog))
            await wait_for(
                lambda: listener.stats["notifications"] >= received + 2000, 30, "every commit"
            )
            assert biggest <= 50, biggest
            assert listener.stats["covered"] >= 1950, listener.stats

            await asyncio.to_thread(redis.start)
            receiver.layer = redis_layer(redis.url)  # the old one's connections are dead
            layers.append(receiver.layer)
            await wait_for(lambda: listener.stats["resyncs"] >= 2, 20, "a resync once it is back")
            await receiver.until(lambda r: r.resyncs() == 2)
            await writer.execute("UPDATE testapp_item SET value = 2 WHERE id = 7")
            cursor = await writer.execute(
                "INSERT INTO testapp_sentinel DEFAULT VALUES RETURNING id"
            )
            (sentinel,) = await cursor.fetchone()
            await receiver.until(lambda r: sentinel in r.pks("testapp_sentinel"))
        finally:
            await writer.close()
        # After the INSERT: the commits of the outage came as the resync, the later one as itself.
        assert receiver.pks(ITEM)[2000:] == [7]
        assert sorted(receiver.pks(ITEM)[:2000]) == list(range(1, 2001))
        messages = [r.getMessage() for r in caplog.records]
        assert sum("cannot reach the channel layer" in m for m in messages) == 1, messages
        assert sum("reaches the channel layer again" in m for m in messages) == 1, messages
    finally:
        if listener is not None:
            await stop_listener(listener, task)
        for layer in layers:
            await layer.close_pools()
        redis.close()


# another role in the same database -------------------------------------------------------------


@pytest.fixture
def other_role(conninfo, transactional_db):
    """A throwaway login role without any grant: what any role that can connect can do."""
    name = f"pgobserve_trust_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(**conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        yield {**conninfo, "user": name, "password": ""}
    finally:
        with psycopg.connect(**conninfo, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_another_role_reads_the_channel_and_the_lock_and_the_listener_names_it(
    conninfo, other_role, caplog
):
    caplog.set_level(logging.INFO, logger="pgobserve.listener")
    role = other_role["user"]
    async with await psycopg.AsyncConnection.connect(**other_role, autocommit=True) as squatter:
        # The channel is in the trigger functions' source, readable by every role: a
        # CHANNEL setting is no secret from roles that can connect to the database.
        cursor = await squatter.execute(
            "SELECT bool_and(prosrc LIKE '%pg_notify(''pgobserve''%') FROM pg_proc"
            " WHERE proname LIKE 'pgobserve\\_%'"
        )
        assert (await cursor.fetchone())[0] is True
        # Any role can take the leader lock: the listener then stands by, and says who holds it.
        await squatter.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        layer = InMemoryChannelLayer()
        listener = Listener(conninfo, channel_layer=layer, lock_key=LOCK_KEY)
        task = asyncio.create_task(listener.run())
        try:
            await wait_for(lambda: "stands by" in caplog.text, 20, "the listener to stand by")
            (line,) = [m for m in caplog.messages if "stands by" in m]
            assert f"role {role!r}" in line and "a role other than this listener's" in line
            assert listener.stats["resyncs"] == 0
            await squatter.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
            await wait_for(lambda: listener.stats["resyncs"] == 1, 20, "the takeover")
        finally:
            await stop_listener(listener, task)
