"""The process's hub (pgobserve/hub.py): one channel in the feed groups, the consumers that
hold them called in memory. On pgobserve's in-memory channel layer (a real layer: groups,
channels, capacity), with recording members in place of consumers; no database."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pgobserve import groups
from pgobserve.hub import Hub, hub_for, leave
from pgobserve.layers import InMemoryChannelLayer
from tests.fix_layer import wait_for

G, H = groups.shard_group("t", 3), groups.table_group("t")


class Member:
    """Records what the hub calls, as a consumer's ``WatchRegistry`` would act on it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def changed(self, table: str, pks: list[Any] | None, batch: str | None = None) -> None:
        self.calls.append(("changed", table, pks, batch))

    def resync(self) -> None:
        self.calls.append(("resync",))


def change(group: str, seq: int, pks: list[Any], run: str = "r1") -> dict[str, Any]:
    return {"type": "pgobserve.change", "table": "t", "pks": pks, "batch": f"{run}.{seq}",
            "group": group, "run": run, "seq": seq}  # fmt: skip


def members_of(layer: InMemoryChannelLayer, channel: str) -> set[str]:
    return {group for group, members in layer.groups.items() if channel in members}


@pytest.fixture
async def layer():
    layer = InMemoryChannelLayer()
    yield layer
    await layer.flush()


@pytest.fixture
async def hub(layer):
    """The layer's hub; the members a test leaves attached leave at its end."""
    hub = hub_for(layer)
    yield hub
    for member in list(hub.members):
        await leave(hub, member)


def attached(hub: Hub, count: int) -> list[Member]:
    members = [Member() for _ in range(count)]
    for member in members:
        hub.attach(member)
    return members


async def test_one_message_per_process_reaches_each_holder_once(layer, hub):
    a, b, c = attached(hub, 3)
    await hub.hold(G, a)
    await hub.hold(G, b)
    await hub.hold(H, c)
    assert members_of(layer, hub.channel) == {groups.RESYNC_GROUP, G, H}
    await layer.group_send(G, change(G, 1, [7]))
    await wait_for(lambda: a.calls and b.calls, 5, "the change to both holders")
    assert a.calls == b.calls == [("changed", "t", [7], "r1.1")]
    assert c.calls == []  # it holds another group


async def test_the_group_is_left_with_its_last_holder(layer, hub):
    a, b = attached(hub, 2)
    await hub.hold(G, a)
    await hub.hold(G, a)  # two subscriptions of one consumer
    await hub.hold(G, b)
    await hub.release(G, a)
    await hub.release(G, b)
    assert G in members_of(layer, hub.channel)  # a still holds one
    await hub.release(G, a)
    assert members_of(layer, hub.channel) == {groups.RESYNC_GROUP}
    await leave(hub, a)
    await leave(hub, b)
    assert hub.closed and members_of(layer, hub.channel) == set()
    assert hub_for(layer) is not hub  # the next consumer gets a new hub


async def test_a_consumer_that_ends_releases_every_hold(layer, hub):
    a, b = attached(hub, 2)
    await hub.hold(G, a)
    await hub.hold(H, a)
    await hub.hold(H, b)
    await leave(hub, a)
    assert members_of(layer, hub.channel) == {groups.RESYNC_GROUP, H}
    assert hub.held(a) == 0 and hub.held(b) == 1


async def test_a_second_holder_waits_for_the_join_under_way(layer, hub):
    """A subscribe returns only once the hub is in the group, also when another consumer's
    join of that group started first and is still in flight."""
    joined = asyncio.Event()
    real_add = layer.group_add

    async def slow_add(group: str, channel: str) -> None:
        if group == G:
            await joined.wait()
        await real_add(group, channel)

    layer.group_add = slow_add
    a, b = attached(hub, 2)
    await hub.start()
    first = asyncio.ensure_future(hub.hold(G, a))
    second = asyncio.ensure_future(hub.hold(G, b))
    await asyncio.sleep(0.05)
    assert not first.done() and not second.done()
    joined.set()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert G in members_of(layer, hub.channel)


async def test_a_skipped_number_makes_the_holders_recheck_the_table(layer, hub):
    (a,) = attached(hub, 1)
    await hub.hold(G, a)
    hub.deliver(change(G, 1, [1]))
    hub.deliver(change(G, 3, [3]))  # 2 was dropped by the layer
    assert a.calls[1:] == [("changed", "t", None, None), ("changed", "t", [3], "r1.3")]
    assert hub.missed == 1


async def test_an_announcement_past_the_last_number_resyncs_the_holders(hub):
    a, b = attached(hub, 2)
    await hub.hold(G, a)
    hub.deliver(change(G, 1, [1]))
    hub.deliver({"type": "pgobserve.sequence", "group": G, "run": "r1", "seq": 2})
    assert a.calls[-1] == ("resync",)
    assert b.calls == []  # it holds nothing of that group


async def test_a_group_left_and_joined_again_counts_afresh(hub):
    """Messages sent while no consumer held the group are not a loss."""
    (a,) = attached(hub, 1)
    await hub.hold(G, a)
    hub.deliver(change(G, 1, [1]))
    await hub.release(G, a)
    await hub.hold(G, a)
    hub.deliver(change(G, 5, [5]))
    assert hub.missed == 0


async def test_the_listeners_resync_reaches_every_consumer(layer, hub):
    a, b = attached(hub, 2)
    await hub.hold(G, a)  # b holds no group: it still re-reads (identity, joined tables)
    await layer.group_send(groups.RESYNC_GROUP, {"type": "pgobserve.resync"})
    await wait_for(lambda: a.calls and b.calls, 5, "the resync to both")
    assert a.calls == b.calls == [("resync",)]


async def test_a_message_for_a_group_no_one_holds_is_ignored(hub):
    (a,) = attached(hub, 1)
    await hub.hold(G, a)
    hub.deliver(change(H, 1, [1]))
    hub.deliver({"type": "something.else", "group": G})
    assert a.calls == []


async def test_hubs_are_per_layer(layer):
    other = InMemoryChannelLayer()
    assert hub_for(layer) is hub_for(layer)
    assert hub_for(layer) is not hub_for(other)
    assert isinstance(hub_for(other), Hub)


async def test_a_row_hold_is_called_only_for_messages_naming_its_row(hub):
    """A single-row change wakes the consumers watching that row, not every consumer with a
    row in the same shard; a holder of the whole group gets every pk."""
    row7, row8, whole = attached(hub, 3)
    await hub.hold(G, row7, "7")
    await hub.hold(G, row8, "8")
    await hub.hold(G, whole)
    hub.deliver(change(G, 1, [7, 9]))
    assert row7.calls == [("changed", "t", [7], "r1.1")]
    assert row8.calls == []
    assert whole.calls == [("changed", "t", [7, 9], "r1.1")]
    await hub.release(G, row7, "7")
    hub.deliver(change(G, 2, [7, 8]))
    assert len(row7.calls) == 1
    assert row8.calls == [("changed", "t", [8], "r1.2")]


async def test_a_gap_or_a_truncate_reaches_every_row_holder_of_the_group(hub):
    row7, row8 = attached(hub, 2)
    await hub.hold(G, row7, "7")
    await hub.hold(G, row8, "8")
    hub.deliver(change(G, 1, [7]))
    hub.deliver(change(G, 3, [7]))  # 2 was dropped: it may have named row 8
    assert ("changed", "t", None, None) in row8.calls
    row8.calls.clear()
    hub.deliver(
        {
            "type": "pgobserve.change",
            "table": "t",
            "pks": None,
            "batch": "r1.4",
            "group": G,
            "run": "r1",
            "seq": 4,
        }  # fmt: skip
    )  # TRUNCATE: unknown rows
    assert row8.calls[0] == ("changed", "t", None, None)


async def test_row_holds_are_counted_and_left_with_the_last(layer, hub):
    (a,) = attached(hub, 1)
    await hub.hold(G, a, "7")
    await hub.hold(G, a, "7")  # two request_ids on one row
    await hub.hold(G, a, "8")
    assert hub.held(a) == 1
    await hub.release(G, a, "7")
    await hub.release(G, a, "8")
    hub.deliver(change(G, 1, [7]))
    assert a.calls == [("changed", "t", [7], "r1.1")]
    await hub.release(G, a, "7")
    assert members_of(layer, hub.channel) == {groups.RESYNC_GROUP}
    assert hub.held(a) == 0
    await hub.release(G, a, "7")  # one too many: ignored


async def test_a_consumer_ends_in_bounded_time_when_the_layer_hangs(layer, hub, monkeypatch):
    """Its holds are forgotten at once; leaving the groups is given up after a while (the
    memberships then expire), never hanging the consumer's end."""
    monkeypatch.setattr("pgobserve.hub.LEAVE_TIMEOUT", 0.2)
    a, b = attached(hub, 2)
    await hub.hold(G, a, "7")
    await hub.hold(H, b)
    hang = asyncio.Event()

    async def hanging_discard(group: str, channel: str) -> None:
        await hang.wait()

    layer.group_discard = hanging_discard
    await asyncio.wait_for(hub.detach(a), 5)
    assert hub.held(a) == 0
    hub.deliver(change(G, 1, [7]))
    assert a.calls == []
    hang.set()
