"""A listener on the test's own event loop, for in-process model observer tests.

Model observer events are computed by the listener (``observer/feed.py``), so a test of
consumers that use ``@model_observer`` needs one running beside them, on the same
channel layer. ``observer_listener`` runs it as a task of the test's loop and offers two
bounded waits: ``idle()`` (the feed has handled every batch it was given) and
``settle()`` (every change committed before the call has become events and was sent),
which lets a test write setup rows before its consumers subscribe.

Defining a model observer marks its model (and the ``through`` tables it follows) as
observed for the rest of the process; ``only_settings_mark_models`` undoes that for
tests about which tables the settings observe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from pgobserve import groups, registry
from pgobserve.listener import Listener
from tests.fix_layer import wait_for
from tests.testapp.models import Sentinel


class CurrentLayer:
    """Whatever ``get_channel_layer()`` gives now: a test may swap the layer half-way
    (DCRF's m2m test sets ``CHANNEL_LAYERS``), and the listener must follow."""

    def __getattr__(self, name: str) -> Any:
        return getattr(get_channel_layer(), name)


class ObserverListener:
    """The running listener, and waits on its observer feed."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    @property
    def feed(self) -> Any:
        return self.listener.observer_feed

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until the feed has no batch waiting or being handled (events sent, old
        rows deleted). It says nothing of changes the listener has not handed it yet."""
        await asyncio.wait_for(self.feed.idle.wait(), timeout)

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until every change committed before this call has become model observer
        events and was sent: commit a sentinel row, wait for the listener's message about
        it (the feed was handed every earlier batch by then), then for the feed to idle."""
        layer = self.listener.channel_layer
        group = groups.table_group(Sentinel._meta.db_table)
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        try:
            sentinel = await database_sync_to_async(Sentinel.objects.create)()
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"the listener did not report sentinel {sentinel.pk}")
                message = await asyncio.wait_for(layer.receive(channel), remaining)
                if sentinel.pk in (message.get("pks") or ()):
                    break
        finally:
            await layer.group_discard(group, channel)
        await self.idle(max(deadline - time.monotonic(), 0.1))


@pytest.fixture
async def observer_listener(conninfo, transactional_db) -> AsyncIterator[ObserverListener]:
    """The listener, as a task of the test's loop, on the layer the consumers use; ready
    once it LISTENs and has sent its startup resync (changes that arrive before that are
    covered by the resync, which model observers do not see)."""
    listener = Listener(
        {**conninfo, "application_name": "pgobserve-test-observers"},
        channel_layer=CurrentLayer(),
        lock_key=7341,
    )
    task = asyncio.ensure_future(listener.run())
    await asyncio.wait_for(listener.listening.wait(), 10)
    await wait_for(lambda: listener.stats["resyncs"] >= 1, 10, "the listener's startup resync")
    yield ObserverListener(listener)
    listener.stop()
    await asyncio.wait_for(task, 10)


@pytest.fixture
def only_settings_mark_models(monkeypatch):
    """The settings alone decide which models are observed: the model observers that test
    modules define (at import or inside tests) marked their models, and the tables those
    reach, as observed under any setting."""
    monkeypatch.setattr(registry, "_old_rows", [])
    monkeypatch.setattr(registry, "_decorated", [])
