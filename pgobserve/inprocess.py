"""The in-process listener (internal): the LISTEN loop as a task in the ASGI server's loop.

Switched on by ``PGOBSERVE["IN_PROCESS_LISTENER"] = True`` (development, the demo, one
server process with the in-memory channel layer). Daphne sends no ASGI lifespan events,
so the listener starts with the first WebSocket connection (``AsyncAPIConsumer`` calls
``ensure_started()`` on connect), or at startup for servers that do send lifespan events
when the application is wrapped in ``pgobserve.asgi.PgObserveRouter``. One listener runs
per event loop; if it dies it is restarted by the next connection.

A change committed before the listener LISTENs is not lost: once it listens it sends a
resync, and every consumer re-reads what it watches.

Production: leave the setting off and run ``manage.py pgobserve listen`` as its own
process with the Redis channel layer, so every server process gets the changes.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from . import conf
from .intake import observed_pk_kinds
from .listener import Listener, conninfo_for_alias

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.listener")

_running: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[Listener, asyncio.Task[None]]
] = weakref.WeakKeyDictionary()


def ensure_started() -> Listener | None:
    """Start this event loop's listener if the setting is on and none runs; return it."""
    if not conf.in_process_listener():
        return None
    loop = asyncio.get_running_loop()
    found = _running.get(loop)
    if found is not None and not found[1].done():
        return found[0]
    from channels.layers import get_channel_layer

    listener = Listener(
        conninfo_for_alias(), channel_layer=get_channel_layer(), tables=observed_pk_kinds()
    )
    task = loop.create_task(listener.run(), name="pgobserve-in-process-listener")
    task.add_done_callback(_log_end)
    _running[loop] = (listener, task)
    logger.info("pgobserve started its in-process listener")
    return listener


def _log_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("pgobserve in-process listener failed", exc_info=task.exception())


async def stop() -> None:
    """Stop this event loop's listener and wait for it to close its connection."""
    found = _running.pop(asyncio.get_running_loop(), None)
    if found is not None:
        listener, task = found
        listener.stop()
        await asyncio.gather(task, return_exceptions=True)
