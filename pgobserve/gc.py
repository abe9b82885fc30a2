"""Short garbage-collector pauses in a process holding thousands of idle sockets (opt-in).

CPython's cyclic collector walks every tracked object of the process on each full
(generation 2) collection. An idle subscribed WebSocket under daphne costs ~170 tracked
objects (mostly daphne's, Twisted's, autobahn's, asyncio's and Django's per-connection state:
``bench/README.md``), so a process with 10,000 sockets walks ~1.7 M objects per full
collection: 1.2-1.8 s during which no socket is served. Full collections come by themselves,
idle or not: one is due whenever a quarter as many objects as survived the last one have
since been promoted to the old generation, and daphne's once-a-second pass over its
connections and its keep-alive pings promote enough short-lived objects for one every
25-35 s at 10,000 sockets.

``install()`` freezes (``gc.freeze()``) what survives each full collection: those objects
move to the permanent generation, which later collections do not walk, so a full collection
walks only what was created since the last one (10-20 ms at 10,000 sockets, not 1-2 s).
Frozen objects are still freed by reference counting when no longer used; what is lost is
the collection of *cycles* among them, and nearly everything a closed socket leaves is such a
cycle (daphne's, Twisted's, autobahn's and the consumer's: ~100 objects, ~27 KiB). So
everything is walked again, by one full collection that unfreezes first, once the heap
(``sys.getallocatedblocks()``) has grown by ``full_when_grown`` (a quarter, as CPython's own
rule) since the last such walk: a process whose sockets stay connected never pays the long
pause, one that churns them pays it about once per quarter of its heap left as frozen
garbage, so its memory stays within about a quarter more. ``full_every`` (seconds) adds a
time bound (the growth rule needs pymalloc: under ``PYTHONMALLOC=malloc`` the block count is
0); ``collect_frozen()`` walks everything on demand.

That long walk waits for a quiet moment: a full collection that comes while the process is
busy (more than ``busy_rate`` young collections a second: measured at 10,000 sockets, a
fan-out makes ~540, connecting sockets ~125, an idle process ~19) walks only the new
objects as usual, and the walk everything is due for is left to the first full collection
that comes when it is quiet, or the first after ``max_defer`` seconds, or the first after
the heap grew twice the growth that made it due (bounding the memory). A fan-out then no
longer pays a 1-2 s walk in its middle. The default ``busy_rate`` (200) lets walks happen
while sockets connect, so that the heap they grew is walked before the process is idle;
a burst is seen from its first tenth of a second.

It changes the whole process, hence opt-in: call ``pgobserve.gc.install()`` once at start-up
(``asgi.py``). CPython only: the callbacks rely on ``gc.freeze``, ``gc.unfreeze`` and
``gc.callbacks`` (3.7+).
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Any

__all__ = ["collect_frozen", "install", "installed", "stats", "uninstall"]

#: Growth (memory blocks) below this never triggers a full walk.
MIN_GROWTH = 10_000
#: Young collections are counted in windows of this many seconds to tell a busy process.
WINDOW = 0.5

_lock = threading.Lock()
#: ``freezes``: full collections whose survivors were frozen; ``full_walks``: full
#: collections that unfroze everything first; ``deferred``: full collections that did not,
#: although a walk was due, because the process was busy.
_stats = {"freezes": 0, "full_walks": 0, "deferred": 0}
_policy: dict[str, Any] = {
    "full_when_grown": 0.25,
    "full_every": None,
    "busy_rate": 200.0,
    "max_defer": 60.0,
    "base": 0,  # sys.getallocatedblocks() right after the last full walk
    "last_walk": 0.0,  # time.monotonic() of the last full walk
    "due_since": None,  # time.monotonic() when a due walk was first put off
    "walking": False,
}
#: Young collections in the current window (from ``start``) and in the one before.
_young = {"start": 0.0, "count": 0, "before": 0}


def _growth() -> float:
    """The heap's growth since the last walk, in units of the growth that makes a walk due
    (``full_when_grown``; 0 without that rule)."""
    grown = _policy["full_when_grown"]
    if grown is None:
        return 0.0
    # The heap's size in memory blocks (O(pools), ~0.1 ms at 500 MiB; counting the frozen
    # objects would walk them all): it grows with the frozen garbage, and with new sockets.
    base = _policy["base"]
    return (sys.getallocatedblocks() - base) / max(MIN_GROWTH, base * grown)


def _roll(now: float) -> None:
    """Start a new window of young collections once the current one is over."""
    if now - _young["start"] >= WINDOW:
        # After a whole window with no young collection, the one before counts none.
        before = _young["count"] if now - _young["start"] < 2 * WINDOW else 0
        _young.update(start=now, count=0, before=before)


def _busy(now: float) -> bool:
    """More young collections than ``busy_rate`` a second, in this window so far (over at
    least ``WINDOW / 5``: a burst is seen from its first tenth of a second) or the last."""
    _roll(now)
    so_far = _young["count"] / max(now - _young["start"], WINDOW / 5)
    return so_far > _policy["busy_rate"] or _young["before"] / WINDOW > _policy["busy_rate"]


def _walk_now(now: float) -> bool:
    """A walk is due (``full_every`` has passed, or the heap grew by ``full_when_grown``)
    and the process is quiet, or it has waited ``max_defer``, or the heap has grown twice
    as much as makes it due."""
    growth, every = _growth(), _policy["full_every"]
    if growth <= 1 and (every is None or now - _policy["last_walk"] < every):
        _policy["due_since"] = None
        return False
    since = _policy["due_since"]
    if growth > 2 or not _busy(now) or (since is not None and now - since >= _policy["max_defer"]):
        return True
    if since is None:
        _policy["due_since"] = now
    _stats["deferred"] += 1
    return False


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if info.get("generation") != 2:
        if phase == "start":
            _roll(time.monotonic())
            _young["count"] += 1
        return
    if phase == "start":
        if _policy["walking"] or _walk_now(time.monotonic()):
            # This collection walks everything: the cycles frozen meanwhile are collected.
            gc.unfreeze()
            _policy["walking"] = True
    elif phase == "stop":
        # Right after a full collection everything left is reachable (or garbage the
        # collector could not free): freezing now puts the least garbage out of reach.
        gc.freeze()
        _stats["freezes"] += 1
        if _policy["walking"]:
            _policy["walking"] = False
            _policy["base"] = sys.getallocatedblocks()
            _policy["last_walk"] = time.monotonic()
            _policy["due_since"] = None
            _stats["full_walks"] += 1


def install(
    full_when_grown: float | None = 0.25,
    full_every: float | None = None,
    busy_rate: float = 200.0,
    max_defer: float = 60.0,
) -> None:
    """Freeze the survivors of every full collection from now on (idempotent), starting
    with one full collection now.

    ``full_when_grown``: a full collection unfreezes and walks everything once the frozen
    objects are this fraction more than right after the last such walk (None: never by
    growth). ``full_every``: ... or this many seconds after it (None: never by time).
    ``busy_rate``: while the process makes more young collections a second than this, a
    due walk waits, up to ``max_defer`` seconds."""
    with _lock:
        _policy.update(
            full_when_grown=full_when_grown,
            full_every=full_every,
            busy_rate=busy_rate,
            max_defer=max_defer,
            due_since=None,
            walking=True,
        )
        _young.update(start=time.monotonic(), count=0, before=0)
        if _on_collection not in gc.callbacks:
            gc.callbacks.append(_on_collection)
    gc.collect()  # walks everything (the start-up's garbage goes), then freezes


def uninstall() -> None:
    """Stop freezing and unfreeze everything (the next full collection walks it all)."""
    with _lock:
        if _on_collection in gc.callbacks:
            gc.callbacks.remove(_on_collection)
        _policy["walking"] = False
    gc.unfreeze()


def installed() -> bool:
    """Whether ``install()`` is in effect."""
    return _on_collection in gc.callbacks


def collect_frozen() -> int:
    """One full collection over every object of the process (the cycles among frozen
    objects included: one long pause), the survivors frozen again if installed. Returns
    what was collected."""
    gc.unfreeze()
    _policy["walking"] = installed()
    return gc.collect()


def stats() -> dict[str, int]:
    """Counters since ``install()``: freezes, full walks, deferred walks, and the heap size
    (memory blocks) after the last walk."""
    return {**_stats, "blocks_after_walk": _policy["base"]}
