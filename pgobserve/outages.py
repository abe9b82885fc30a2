"""Outages of what consumers depend on (channel layer, database), one per process (internal).

When Redis or PostgreSQL goes away, thousands of sockets notice at once. Rather than each
retrying on its own (thousands of connection attempts a second against a server that is
coming back), they all wait for one probe per process, which retries with backoff; and the
outage is logged once when it starts and once when it ends, not once per socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.consumers")

#: Probe backoff: the first and the longest delay (plus up to 50% jitter). The longest
#: delay bounds how late sockets converge after the server is back.
RETRY_FIRST, RETRY_MAX = 0.1, 1.5
#: At most one "unreachable" warning per outage kind per this many seconds.
LOG_EVERY = 60.0


class Outage:
    """``failed(exc)`` starts probing (once); ``await back()`` waits until a probe works."""

    def __init__(self, what: str, probe: Callable[[], Awaitable[object]]) -> None:
        self.what = what
        self._probe = probe
        self._task: asyncio.Task[None] | None = None
        self._logged_at = -LOG_EVERY
        self._logged = False

    @property
    def ongoing(self) -> bool:
        """A probe runs on this event loop (a task of an ended loop does not count)."""
        return (
            self._task is not None
            and not self._task.done()
            and self._task.get_loop() is asyncio.get_running_loop()
        )

    def failed(self, exc: BaseException) -> None:
        if self.ongoing:
            return
        now = time.monotonic()
        # An error that comes back at once (a statement timeout: the probe answers) must
        # not log two lines per retry: at most one warning a minute.
        self._logged = now - self._logged_at >= LOG_EVERY
        if self._logged:
            self._logged_at = now
            logger.warning(
                "pgobserve: %s is unreachable (%s: %s); sockets stay open and catch up when "
                "it is back",
                self.what,
                type(exc).__name__,
                str(exc).strip(),
            )
        self._task = asyncio.ensure_future(self._until_back())

    async def back(self) -> None:
        """Return once the probe works again (at once when no outage is known)."""
        task = self._task
        if self.ongoing and task is not None:
            await asyncio.shield(task)

    async def _until_back(self) -> None:
        delay = RETRY_FIRST
        while True:
            await asyncio.sleep(delay * random.uniform(1.0, 1.5))
            delay = min(delay * 2, RETRY_MAX)
            try:
                await self._probe()
            except Exception:
                continue
            if self._logged:
                logger.info("pgobserve: %s answers again", self.what)
            return


async def jitter() -> None:
    """A short random pause, so sockets released by one probe do not all retry at once."""
    await asyncio.sleep(RETRY_FIRST * random.uniform(0.0, 1.0))
