"""What the listener accepts, and what it holds until it is sent (internal).

Any role that can connect to the database can NOTIFY the channel, so a notification is
input, not a fact. ``Gate`` drops payloads a trigger would not write and (given the
observed tables) those of other tables or with pks of the wrong type, each on its own;
they are counted in the listener's ``stats`` and logged at most once per ``WARN_EVERY``.
``Backlog`` holds accepted changes until they are sent, bounded: a resync covers what it
drops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import psycopg

from .payload import Change, PayloadError, check_pks, decode

__all__: list[str] = []  # internal: no public API

logger = logging.getLogger("pgobserve.listener")

#: Most pks (a pk-null change counts one) waiting to be sent; past it, what waits is
#: replaced by a resync, which covers it (see ``Backlog``).
MAX_BACKLOG = 1_000_000
#: Ignored notifications are logged at most once per this many seconds (per reason).
WARN_EVERY = 60.0


def observed_pk_kinds() -> dict[str, str]:
    """Every observed table → its pk kind (``sql.TableSpec.pk_kind``): what the ``listen``
    command and the in-process listener accept notifications for."""
    from .installation import specs

    return {spec.table: spec.pk_kind for spec in specs()}


class Gate:
    """Turns notifications into changes, ignoring those pgobserve's triggers did not send."""

    def __init__(self, tables: Mapping[str, str] | None, stats: dict[str, int]) -> None:
        """``tables``: table → pk kind of the tables accepted (None: every table)."""
        self.tables, self.stats = tables, stats
        self._logs = {
            "unobserved": IgnoredLog("not an observed table"),
            "malformed": IgnoredLog("not a payload pgobserve's triggers write"),
        }

    def accept(self, notify: psycopg.Notify) -> Change | None:
        """The change a notification announces, or None if it is ignored."""
        try:
            change = decode(notify.payload)
            if self.tables is not None:
                kind = self.tables.get(change.table)
                if kind is None:
                    self._ignore("unobserved", notify.pid, f"table {change.table!r}")
                    return None
                check_pks(change, kind)
        except PayloadError as exc:
            self._ignore("malformed", notify.pid, str(exc))
            return None
        return change

    def _ignore(self, reason: str, pid: int, detail: str) -> None:
        self.stats[reason] += 1
        self._logs[reason].note(pid, detail)


class Backlog:
    """Changes received and not yet sent, bounded.

    A resync makes every consumer re-read everything it watches, so it covers every change
    that arrived before it was sent. While one is due (the channel layer is down, or the
    backlog passed ``limit`` pks), arrivals are counted in ``stats["covered"]`` and dropped.
    Changes that arrive while a resync is being sent are kept: consumers may read before
    those commits, so they are sent after it.
    """

    def __init__(self, stats: dict[str, int], limit: int = MAX_BACKLOG) -> None:
        self.stats, self.limit = stats, limit
        self.changes: list[Change] = []
        self.size = 0  # pks held, a pk-null change counting one
        self.resync_due = False
        #: Set when there is something to send (changes, or a resync).
        self.wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self.changes)

    def add(self, change: Change) -> None:
        if self.resync_due:
            self.stats["covered"] += 1
            return
        self.changes.append(change)
        self.size += 1 if change.pks is None else len(change.pks)
        if self.size > self.limit:
            self.need_resync()
        self.wake.set()

    def take(self) -> list[Change]:
        changes, self.changes, self.size = self.changes, [], 0
        return changes

    def need_resync(self) -> None:
        """What waits, and what arrives until a resync is being sent, is covered by it."""
        self.stats["covered"] += len(self.take())
        self.resync_due = True
        self.wake.set()

    def resync_starts(self) -> None:
        """A resync is being sent: it covers what waits; what arrives from now on is kept."""
        self.stats["covered"] += len(self.take())
        self.resync_due = False


class IgnoredLog:
    """Logs ignored notifications of one reason at most once per ``every`` seconds, with
    how many there were: any role can NOTIFY, and a flood must not fill the log."""

    def __init__(self, reason: str, every: float = WARN_EVERY) -> None:
        self.reason, self.every = reason, every
        self.unreported = 0
        self.next_at = float("-inf")

    def note(self, pid: int, detail: str) -> None:
        self.unreported += 1
        now = time.monotonic()
        if now < self.next_at:
            return
        logger.warning(
            "pgobserve listener ignored %d notification(s): %s (the latest from backend pid"
            " %s: %s); at most one such line per %.0fs",
            self.unreported,
            self.reason,
            pid,
            detail[:200],
            self.every,
        )
        self.unreported, self.next_at = 0, now + self.every
