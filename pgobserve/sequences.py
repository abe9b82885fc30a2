"""Which change messages a consumer missed (internal): each group's messages are numbered.

A channel layer may drop a message on its way to one consumer: channels-redis drops what
exceeds a channel's ``capacity`` and expires what waits longer than ``expiry`` (60 s),
silently. The listener numbers the messages of every group it sends to, in order, and
announces each busy group's last number a moment later; a consumer that sees a number
skipped (or announced past the last it got) re-reads what it watches of that table
instead of missing the change for ever. Pure bookkeeping, one small dict per consumer.
"""

from __future__ import annotations

__all__: list[str] = []  # internal: no public API


class GroupSequences:
    """The last message number a consumer got from each group, per listener run."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, int]] = {}

    def arrived(self, group: str, run: str, number: int) -> bool:
        """Record a message; True if messages of ``group`` were missed before it."""
        last = self._last.get(group)
        self._last[group] = (run, number)
        return last is not None and last[0] == run and number > last[1] + 1

    def announced(self, group: str, run: str, number: int) -> bool:
        """Record an announcement of ``group``'s last number; True if messages up to it
        were missed. Without a number from this run yet, it only sets where to count from."""
        last = self._last.get(group)
        if last is None or last[0] != run:
            self._last[group] = (run, number)
            return False
        if number > last[1]:
            self._last[group] = (run, number)
            return True
        return False

    def forget(self, group: str) -> None:
        """The consumer left ``group``: what it misses from now on is not a loss."""
        self._last.pop(group, None)
