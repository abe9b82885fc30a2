"""The listener end to end: real triggers, a running listener, a channel layer.

See ``fix_layer.py``: a real ``manage.py pgobserve listen`` process with channels-redis when
Redis is available (always in CI), else the listener as a task with the InMemory layer.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer
from django.db import connections

from pgobserve import groups
from pgobserve.listener import Listener
from tests.fix_layer import table_and_sentinel, wait_for
from tests.testapp.models import Item

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

ITEM = "testapp_item"
SHARDS = 64


async def started(live):
    """Start a listener and wait for the resync it sends once it leads and LISTENs."""
    resync = await live.receiver(groups.RESYNC_GROUP)
    handle = live.start()
    await resync.until(lambda r: r.resyncs() >= 1)
    return handle, resync


async def test_resync_then_exact_pks_to_the_table_group_and_only_own_shard(live):
    handle, _ = await started(live)
    assert await live.leader() == handle.name
    pk_shard = groups.shard_of(3, SHARDS)
    table = await live.receiver(*table_and_sentinel(ITEM))
    shard = await live.receiver(groups.shard_group(ITEM, pk_shard), *table_and_sentinel("x"))
    await live.execute(
        "INSERT INTO testapp_item (id, name, value, tags)"
        " SELECT g, 'n', 0, '{}' FROM generate_series(1, 200) g"
    )
    await live.execute("UPDATE testapp_item SET value = 1 WHERE id IN (3, 4)")
    await live.execute("DELETE FROM testapp_item WHERE id = 5")
    await live.sentinel(table)
    # Commits that arrive together are merged per table, so 3, 4, 5 may come once or twice.
    assert set(table.pks(ITEM)) == set(range(1, 201))
    assert len(table.pks(ITEM)) <= 203
    assert all(m["table"] == ITEM for m in table.changes(ITEM))
    # The shard group only ever carries pks that hash to it: here, of the 200 inserted rows.
    await shard.until(lambda r: 3 in r.pks(ITEM))
    expected = {pk for pk in range(1, 201) if groups.shard_of(pk, SHARDS) == pk_shard}
    await shard.until(lambda r: set(r.pks(ITEM)) >= expected)
    assert {groups.shard_of(pk, SHARDS) for pk in shard.pks(ITEM)} == {pk_shard}


async def test_orm_writes_reach_the_layer(live):
    await started(live)
    table = await live.receiver(*table_and_sentinel(ITEM))
    item = await sync_to_async(Item.objects.create)(name="orm")
    await sync_to_async(Item.objects.filter(pk=item.pk).update)(value=9)
    await live.sentinel(table)
    assert set(table.pks(ITEM)) == {item.pk}  # once or twice: the two commits may be merged


async def test_truncate_reaches_the_table_group_and_every_shard(live):
    await started(live)
    table = await live.receiver(*table_and_sentinel(ITEM))
    shard = await live.receiver(groups.shard_group(ITEM, 17))
    await live.execute("TRUNCATE testapp_item")
    await live.sentinel(table)
    assert [(m["pks"], m["truncated"]) for m in table.changes(ITEM)] == [(None, True)]
    await shard.until(lambda r: len(r.changes(ITEM)) == 1)
    assert shard.changes(ITEM)[0]["truncated"]


async def test_100k_row_update_is_all_pks_in_a_few_hundred_messages(live):
    await started(live)
    await live.execute(
        "INSERT INTO testapp_item (id, name, value, tags)"
        " SELECT g, 'n', 0, '{}' FROM generate_series(1, 100000) g"
    )
    every = set(range(1, 100_001))
    shard_groups = [groups.shard_group(ITEM, s) for s in range(SHARDS)]
    warmup = await live.receiver(*table_and_sentinel(ITEM))
    await live.sentinel(warmup)  # the INSERT's messages went before the receivers below
    table = await live.receiver(*table_and_sentinel(ITEM))
    shards = await live.receiver(*shard_groups)
    await live.execute("UPDATE testapp_item SET value = value + 1")
    await table.until(lambda r: len(r.pks(ITEM)) >= 100_000, timeout=60)
    await shards.until(lambda r: len(r.pks(ITEM)) >= 100_000, timeout=60)
    await live.sentinel(table)
    assert sorted(table.pks(ITEM)) == sorted(every)  # every pk, exactly once
    assert sorted(shards.pks(ITEM)) == sorted(every)  # each pk in exactly one shard message
    table_messages, shard_messages = len(table.changes(ITEM)), len(shards.changes(ITEM))
    print(f"100k-row UPDATE: {table_messages} table + {shard_messages} shard messages")
    assert table_messages + shard_messages <= 300


async def test_takeover_by_a_standby_listener_resyncs_and_delivers_once(live):
    first, resync = await started(live)
    second = live.start()
    await wait_for(lambda: live.backend_pid(second.name), 20, "the standby to connect")
    assert await live.leader() == first.name
    assert resync.resyncs() == 1  # the standby does not send

    await first.kill()
    await resync.until(lambda r: r.resyncs() >= 2, timeout=20)
    assert await live.leader() == second.name
    table = await live.receiver(*table_and_sentinel(ITEM))
    await live.execute("INSERT INTO testapp_item (id, name, value, tags) VALUES (7, 'x', 0, '{}')")
    await live.sentinel(table)
    assert table.pks(ITEM) == [7]


async def test_reconnects_and_resyncs_after_its_connection_is_killed(live):
    handle, resync = await started(live)
    pid = await live.backend_pid(handle.name)
    assert pid
    await live.execute("SELECT pg_terminate_backend(%s)", [pid])
    await resync.until(lambda r: r.resyncs() >= 2, timeout=20)
    assert await live.backend_pid(handle.name) not in (None, pid)
    table = await live.receiver(*table_and_sentinel(ITEM))
    await live.execute("INSERT INTO testapp_item (id, name, value, tags) VALUES (8, 'x', 0, '{}')")
    await live.sentinel(table)
    assert table.pks(ITEM) == [8]


async def test_sigterm_exits_cleanly(live):
    handle, _ = await started(live)
    assert await handle.stop(timeout=15) == 0
    if live.mode == "process":
        await handle.wait_log("LISTENs on channel 'pgobserve'")
        await handle.wait_log("pgobserve listener stopped")
    assert await live.leader() is None  # the lock went with the connection


async def test_embedded_listener_task_with_the_in_memory_layer(conninfo):
    """The in-process mode: the listener as a task next to its consumers, no Redis."""
    layer = InMemoryChannelLayer(capacity=10_000)
    channel = await layer.new_channel()
    await layer.group_add(groups.RESYNC_GROUP, channel)
    await layer.group_add(groups.table_group(ITEM), channel)
    listener = Listener(conninfo, channel_layer=layer)
    task = asyncio.create_task(listener.run())
    try:
        assert (await asyncio.wait_for(layer.receive(channel), 10))["type"] == "pgobserve.resync"
        assert listener.listening.is_set()
        item = await sync_to_async(Item.objects.create)(name="embedded")
        message = await asyncio.wait_for(layer.receive(channel), 10)
        assert (message["type"], message["table"], message["pks"]) == (
            "pgobserve.change",
            ITEM,
            [item.pk],
        )
        assert listener.stats["notifications"] == 1 and listener.stats["resyncs"] == 1
    finally:
        listener.stop()
        await asyncio.wait_for(task, 10)
        await sync_to_async(connections.close_all)()
    assert not listener.listening.is_set()


async def test_each_group_numbers_its_messages_and_announces_the_last(live):
    """A group's messages carry consecutive numbers of one listener run, in order, and the
    group's last number is announced after them: what lets a consumer see a dropped one."""
    await started(live)
    shard = groups.shard_group(ITEM, groups.shard_of(3, SHARDS))
    receiver = await live.receiver(*table_and_sentinel(ITEM), shard)
    await live.execute(
        "INSERT INTO testapp_item (id, name, value, tags)"
        " SELECT g, 'n', 0, '{}' FROM generate_series(1, 4) g"
    )
    await receiver.until(lambda r: 3 in r.pks(ITEM))
    for value in range(1, 6):  # separate commits, each sent before the next is made
        sent = len(receiver.changes(ITEM))
        await live.execute("UPDATE testapp_item SET value = %s WHERE id IN (3, 4)", [value])
        await receiver.until(lambda r, sent=sent: len(r.changes(ITEM)) >= sent + 2)
    await live.sentinel(receiver)

    changes = receiver.changes()
    assert {m["group"] for m in changes} == {*table_and_sentinel(ITEM), shard}
    assert len({m["run"] for m in changes}) == 1
    last = {}
    for group in {m["group"] for m in changes}:
        numbers = [m["seq"] for m in changes if m["group"] == group]
        # The listener is new and the receiver joined before any commit: from 1.
        assert numbers == list(range(1, len(numbers) + 1)), (group, numbers)
        last[group] = numbers[-1]
    assert last[groups.table_group(ITEM)] == last[shard] == 6  # the INSERT, 5 UPDATEs

    def announced(r, group):
        return [
            (i, m)
            for i, m in enumerate(r.messages)
            if m["type"] == "pgobserve.sequence" and m["group"] == group
        ]

    def all_announced(r):
        return all(any(m["seq"] == n for _, m in announced(r, g)) for g, n in last.items())

    await receiver.until(all_announced, timeout=10)
    for group, number in last.items():
        (sent_at,) = [i for i, m in enumerate(receiver.messages) if m.get("group") == group
                      and m["type"] == "pgobserve.change" and m["seq"] == number]  # fmt: skip
        for i, message in announced(receiver, group):
            assert message["run"] == changes[0]["run"]
            assert message["seq"] <= number
            if message["seq"] == number:
                assert i > sent_at  # never ahead of the message it counts
