"""The channel-layer groups of one channel (a consumer's, or its process's ``hub.Hub``),
kept for as long as it lives (internal).

Channel layers forget a membership ``group_expiry`` seconds after it was added (a day by
default, in channels-redis and channels' in-memory layer), and channels-redis raises on
``group_add`` and ``receive`` while Redis is unreachable. A socket that relied on one
``group_add`` at subscribe time would go deaf after a day, and a Redis blip would close it
with 1011. ``Memberships`` instead:

* re-adds every group at a random point between 30% and 45% of ``group_expiry``;
* treats any layer error as an outage: the socket stays open, and once the layer answers
  again (``outages.Outage``: one probe per process, not one per socket) the memberships are
  re-added and ``on_rejoined`` runs (the consumer re-reads everything it watches, since
  changes sent meanwhile were lost);
* leaves every group when the consumer ends, however it ends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Callable
from typing import Any

from .outages import Outage, jitter

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.consumers")

#: Groups are re-added at this fraction of ``group_expiry`` (a random point in between).
REFRESH_AT = (0.30, 0.45)
#: How long leaving the groups may take when a consumer ends.
LEAVE_TIMEOUT = 2.0


#: What the probe touches (nothing: it removes a member no group has).
PROBE_GROUP, PROBE_CHANNEL = "pgobserve.probe", "pgobserve.probe!none"

_outages: weakref.WeakKeyDictionary[Any, Outage] = weakref.WeakKeyDictionary()


def layer_outage(layer: Any) -> Outage:
    """The outage state of ``layer``, shared by every consumer of the process."""
    if layer not in _outages:
        _outages[layer] = Outage(
            "the channel layer", lambda: layer.group_discard(PROBE_GROUP, PROBE_CHANNEL)
        )
    return _outages[layer]


class Memberships:
    """The groups one channel belongs to (``names``), and their upkeep."""

    def __init__(
        self,
        layer: Any,
        channel: str,
        names: set[str],
        on_rejoined: Callable[[], None],
    ) -> None:
        self.layer = layer
        self.channel = channel
        #: Every group the consumer means to be in, joined or (during an outage) not yet.
        self.names = names
        self._on_rejoined = on_rejoined
        self._keeper: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._closed = False
        self._keeping = False

    # joining and leaving --------------------------------------------------------------

    async def add(self, name: str) -> None:
        """Join ``name``. During an outage the group is recorded and joined on recovery."""
        if name in self.names:
            return
        self.names.add(name)
        if self._keeping:
            self.start()
        if self.recovering:
            return
        try:
            await self.layer.group_add(name, self.channel)
        except Exception as exc:
            self.layer_failed(exc)

    async def discard(self, name: str) -> None:
        if name not in self.names:
            return
        self.names.discard(name)
        if self.recovering:
            return
        try:
            await self.layer.group_discard(name, self.channel)
        except Exception as exc:
            # Not fatal: a membership left behind expires after group_expiry.
            self.layer_failed(exc)

    async def join_all(self) -> None:
        """(Re-)add every group: the first join on connect, and each refresh."""
        try:
            for name in list(self.names):
                await self.layer.group_add(name, self.channel)
        except Exception as exc:
            self.layer_failed(exc)

    # upkeep ---------------------------------------------------------------------------

    def start(self) -> None:
        """Keep the memberships fresh, well inside the layer's ``group_expiry``: from now,
        or from the first group (a consumer without groups of its own has no task)."""
        self._keeping = True
        if self._keeper is None and self.names and not self._closed:
            self._keeper = asyncio.ensure_future(self._keep())

    async def _keep(self) -> None:
        expiry = float(getattr(self.layer, "group_expiry", 86400))
        while True:
            await asyncio.sleep(expiry * random.uniform(*REFRESH_AT))
            if not self.recovering:
                await self.join_all()

    @property
    def recovering(self) -> bool:
        return self._recovery is not None and not self._recovery.done()

    def layer_failed(self, exc: BaseException) -> None:
        """Start re-joining (once) after a layer error; the socket stays open."""
        if self.recovering or self._closed:
            return
        layer_outage(self.layer).failed(exc)
        self._recovery = asyncio.ensure_future(self._recover())

    async def _recover(self) -> None:
        outage = layer_outage(self.layer)
        while True:
            await outage.back()
            await jitter()
            try:
                await self._rejoin()
            except Exception as exc:
                outage.failed(exc)
                continue
            break
        # Whatever was sent while we were not in our groups is lost: re-read it all.
        self._on_rejoined()

    async def _rejoin(self) -> None:
        """Join every group in ``names`` and leave those dropped from it, until both agree:
        a subscribe or unsubscribe during the round trips only records its group."""
        joined: set[str] = set()
        while joined != self.names:
            wanted = set(self.names)
            for name in wanted - joined:
                await self.layer.group_add(name, self.channel)
                joined.add(name)
            for name in joined - wanted:
                await self.layer.group_discard(name, self.channel)
                joined.discard(name)

    async def receive(self) -> dict[str, Any]:
        """The next message of the consumer's channel, waiting out layer outages."""
        while True:
            try:
                return await self.layer.receive(self.channel)
            except Exception as exc:
                if self._closed:  # the consumer is ending: nothing more to receive
                    await asyncio.Future()
                self.layer_failed(exc)
                if self._recovery is not None:
                    await asyncio.wait({self._recovery})

    # the end --------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the upkeep and leave every group (bounded: an unreachable layer lets the
        memberships expire instead)."""
        self._closed = True
        tasks = [t for t in (self._keeper, self._recovery) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        names = list(self.names)
        self.names.clear()
        if not names:
            return
        try:
            await asyncio.wait_for(
                asyncio.gather(*(self.layer.group_discard(n, self.channel) for n in names)),
                LEAVE_TIMEOUT,
            )
        except Exception as exc:
            logger.debug("pgobserve could not leave %d groups: %s", len(names), exc)
