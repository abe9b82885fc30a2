"""One channel per process for the change feed, fanned out to its consumers in memory (internal).

Were each consumer its own member of the table and shard groups, one change would cost one
channel-layer message per socket that might care (a copy, a dispatch and a task each: with
10,000 sockets on a row, seconds of CPU before the first push). Instead each process (each
event loop and channel layer) has one ``Hub``: its channel joins the groups its consumers'
subscriptions need, counted per consumer, and each message it receives is handed to the
``FeedMember`` (the consumer's ``WatchRegistry``) of every consumer holding that group, by a
plain call. The layer carries one message per process; the consumers' reads, shared reads
(``share_reads``) and pushes are unchanged.

A hold may name the one row it is for (an instance subscription, a socket's session): such a
consumer is called only for messages that name that row's pk. A single-row change then wakes
the consumers watching that row, not the ~1/64 of all row watchers that share its shard.

The hub also keeps what each consumer kept before:

* message numbers (``sequences.py``): a gap in a group's numbers makes every consumer
  holding the group re-read what it watches of the table;
* memberships (``memberships.py``): re-added inside the layer's ``group_expiry``, waited
  out during a layer outage, after which every consumer re-reads everything it watches;
* ``groups.RESYNC_GROUP``: the listener's resync reaches every consumer of the process.

Groups a consumer joins with ``add_group`` (DCRF's model observer groups, whose messages
are the consumer's own handlers) stay memberships of the consumer's own channel.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from typing import Any, Protocol

from . import groups
from .memberships import LEAVE_TIMEOUT, Memberships
from .sequences import GroupSequences

logger = logging.getLogger("pgobserve.consumers")

__all__: list[str] = []  # internal: no public API


class FeedMember(Protocol):
    """What the hub calls on a consumer (``watches.WatchRegistry``): record, never read."""

    def changed(self, table: str, pks: list[Any] | None, batch: str | None = None) -> None: ...

    def resync(self) -> None: ...


class Hub:
    """The change feed of one process: one channel, its groups, the consumers holding them."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.channel = ""
        #: Every attached consumer: each gets the listener's resyncs.
        self.members: set[FeedMember] = set()
        #: group → consumer → subscriptions of that consumer needing the group.
        self._holders: dict[str, Counter[FeedMember]] = {}
        #: consumer → how many groups it holds.
        self._groups_held: Counter[FeedMember] = Counter()
        #: group → consumer → holds for every message of the group (no row named).
        self._whole: dict[str, Counter[FeedMember]] = {}
        #: group → pk_key → consumer → holds for the messages naming that row.
        self._rows: dict[str, dict[str, Counter[FeedMember]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.sequences = GroupSequences()
        #: Change messages found missing (dropped or expired in the layer).
        self.missed = 0
        self.memberships: Memberships | None = None
        self._started: asyncio.Future[None] | None = None
        self._receiving: asyncio.Task[None] | None = None
        self.closed = False

    # lifetime ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the channel, join the resync group, start receiving (once; concurrent
        callers wait for the first)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        await asyncio.shield(self._started)

    async def _start(self) -> None:
        # The layer's default prefix: channels-redis receives every channel of a process
        # from one Redis key, named by it.
        self.channel = await self.layer.new_channel()
        self.memberships = Memberships(
            self.layer, self.channel, set(), on_rejoined=self._resync_all
        )
        await self.memberships.add(groups.RESYNC_GROUP)
        self.memberships.start()
        self._receiving = asyncio.ensure_future(self._receive())

    async def close(self) -> None:
        """Stop receiving and leave every group (bounded, see ``Memberships.close``)."""
        self.closed = True
        if self._started is not None:
            await asyncio.gather(self._started, return_exceptions=True)
        if self._receiving is not None:
            self._receiving.cancel()
            await asyncio.gather(self._receiving, return_exceptions=True)
        if self.memberships is not None:
            await self.memberships.close()

    # consumers --------------------------------------------------------------------------

    def attach(self, member: FeedMember) -> None:
        self.members.add(member)

    async def detach(self, member: FeedMember) -> None:
        """Forget ``member`` at once, then leave the groups no one holds any more (bounded:
        an unreachable layer lets those memberships expire instead)."""
        self.members.discard(member)
        self._groups_held.pop(member, None)
        released = []
        for group, holders in list(self._holders.items()):
            if holders.pop(member, 0):
                _drop(self._whole, group, member)
                rows = self._rows.get(group, {})
                for key in [key for key, found in rows.items() if member in found]:
                    _drop(rows, key, member)
                if not rows:
                    self._rows.pop(group, None)
                released.append(group)
        try:
            await asyncio.wait_for(self._sync_all(released), LEAVE_TIMEOUT)
        except asyncio.TimeoutError:
            logger.debug("pgobserve could not leave %d groups in time", len(released))

    async def _sync_all(self, names: list[str]) -> None:
        for group in names:
            await self._sync(group)

    async def hold(self, group: str, member: FeedMember, key: str | None = None) -> None:
        """``member`` needs ``group`` for one more subscription: every message of it, or
        (``key``: a ``groups.pk_key``) those naming that row. Returns once the hub's
        channel is in the group (also when another consumer's join is still under way),
        so a change committed after it reaches the member."""
        await self.start()
        holders = self._holders.setdefault(group, Counter())
        if not holders[member]:
            self._groups_held[member] += 1
        holders[member] += 1
        if key is None:
            self._whole.setdefault(group, Counter())[member] += 1
        else:
            self._rows.setdefault(group, {}).setdefault(key, Counter())[member] += 1
        await self._sync(group)

    async def release(self, group: str, member: FeedMember, key: str | None = None) -> None:
        """Give back one ``hold(group, member, key)``."""
        holds = self._whole if key is None else self._rows.get(group, {})
        if not _drop(holds, group if key is None else key, member, 1):
            return
        if key is not None and not self._rows.get(group, True):
            del self._rows[group]
        _drop(self._holders, group, member, 1)
        if member not in self._holders.get(group, ()):
            self._groups_held[member] -= 1
            if self._groups_held[member] <= 0:
                del self._groups_held[member]
        await self._sync(group)

    async def _sync(self, group: str) -> None:
        """Join or leave ``group`` as its holders need, one join or leave of a group at a
        time: a leave still in flight must not land after the next join."""
        if not self._holders.get(group):
            self._holders.pop(group, None)
        lock = self._locks.setdefault(group, asyncio.Lock())
        async with lock:
            assert self.memberships is not None
            wanted, joined = group in self._holders, group in self.memberships.names
            if wanted and not joined:
                await self.memberships.add(group)
            elif joined and not wanted:
                self.sequences.forget(group)  # what is sent from now on is not for us
                await self.memberships.discard(group)

    def held(self, member: FeedMember) -> int:
        """How many groups ``member`` holds (one batch may reach it as that many messages)."""
        return self._groups_held[member]

    # receiving --------------------------------------------------------------------------

    async def _receive(self) -> None:
        assert self.memberships is not None
        while True:
            message = await self.memberships.receive()
            try:
                self.deliver(message)
            except Exception:  # a bug: log it, keep the feed of every other message
                logger.exception("pgobserve could not deliver a change message")

    def deliver(self, message: dict[str, Any]) -> None:
        """Hand one listener message to the consumers it concerns."""
        kind = message.get("type")
        if kind == "pgobserve.resync":
            self._resync_all()
            return
        group = message.get("group")
        if not isinstance(group, str):
            return  # not a feed message
        holders = self._holders.get(group)
        if not holders:
            return  # a group just left
        if kind == "pgobserve.change":
            table, pks, batch = message.get("table", ""), message.get("pks"), message.get("batch")
            if self._missed("arrived", message) or not isinstance(pks, list):
                for member in list(holders):
                    member.changed(table, None)  # re-check all it watches of the table
                    member.changed(table, pks if isinstance(pks, list) else None, batch)
                return
            for member in list(self._whole.get(group, ())):
                member.changed(table, pks, batch)
            for member, named in self._named(group, pks).items():
                if member not in self._whole.get(group, ()):
                    member.changed(table, named, batch)
        elif kind == "pgobserve.sequence" and self._missed("announced", message):
            for member in list(holders):
                member.resync()

    def _named(self, group: str, pks: list[Any]) -> dict[FeedMember, list[Any]]:
        """The consumers holding rows of ``group`` among ``pks``, with those pks."""
        rows = self._rows.get(group)
        found: dict[FeedMember, list[Any]] = {}
        if not rows:
            return found
        for pk in pks:
            for member in rows.get(groups.pk_key(pk), ()):
                found.setdefault(member, []).append(pk)
        return found

    def _missed(self, kind: str, message: dict[str, Any]) -> bool:
        group, run, number = message.get("group"), message.get("run"), message.get("seq")
        if not (isinstance(group, str) and isinstance(run, str) and type(number) is int):
            return False  # a listener from before numbering
        missed = getattr(self.sequences, kind)(group, run, number)
        if missed:
            self.missed += 1
            logger.info("pgobserve consumers missed change messages of %s; re-reading", group)
        return missed

    def _resync_all(self) -> None:
        for member in list(self.members):
            member.resync()


def _drop(holds: dict[str, Counter[FeedMember]], name: str, member: FeedMember, n: int = 0) -> bool:
    """Take ``n`` holds (0: all) of ``member`` off ``holds[name]``, dropping emptied
    entries; False if it had none."""
    found = holds.get(name)
    if not found or found[member] <= 0:
        return False
    found[member] = found[member] - n if n else 0
    if found[member] <= 0:
        del found[member]
    if not found:
        del holds[name]
    return True


#: event loop → channel layer → its hub.
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, Hub]] = (
    weakref.WeakKeyDictionary()
)


def hub_for(layer: Any) -> Hub:
    """The hub of ``layer`` on this event loop (a new one after the last was closed)."""
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    hub = hubs.get(id(layer))
    if hub is None or hub.closed or hub.layer is not layer:
        hub = hubs[id(layer)] = Hub(layer)
    return hub


async def leave(hub: Hub, member: FeedMember) -> None:
    """``member`` ends: release its groups; the hub's last member closes it."""
    await hub.detach(member)
    if not hub.members and not hub.closed:
        hub.closed = True  # the next consumer gets a new hub at once
        await hub.close()
