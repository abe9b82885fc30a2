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

_lock = threading.Lock()
#: ``freezes``: full collections whose survivors were frozen; ``full_walks``: full
#: collections that unfroze everything first.
_stats = {"freezes": 0, "full_walks": 0}
_policy: dict[str, Any] = {
    "full_when_grown": 0.25,
    "full_every": None,
    "base": 0,  # sys.getallocatedblocks() right after the last full walk
    "last_walk": 0.0,  # time.monotonic() of the last full walk
    "walking": False,
}


def _due() -> bool:
    grown, every = _policy["full_when_grown"], _policy["full_every"]
    if every is not None and time.monotonic() - _policy["last_walk"] >= every:
        return True
    if grown is not None:
        # The heap's size in memory blocks (O(pools), ~0.1 ms at 500 MiB; counting the frozen
        # objects would walk them all): it grows with the frozen garbage, and with new sockets.
        blocks = sys.getallocatedblocks()
        return blocks - _policy["base"] > max(MIN_GROWTH, _policy["base"] * grown)
    return False


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        if _policy["walking"] or _due():
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
            _stats["full_walks"] += 1


def install(full_when_grown: float | None = 0.25, full_every: float | None = None) -> None:
    """Freeze the survivors of every full collection from now on (idempotent), starting
    with one full collection now.

    ``full_when_grown``: a full collection unfreezes and walks everything once the frozen
    objects are this fraction more than right after the last such walk (None: never by
    growth). ``full_every``: ... or this many seconds after it (None: never by time)."""
    with _lock:
        _policy.update(full_when_grown=full_when_grown, full_every=full_every, walking=True)
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
    return _on_collection in gc.callbacks


def collect_frozen() -> int:
    """One full collection over every object of the process (the cycles among frozen
    objects included: one long pause), the survivors frozen again if installed. Returns
    what was collected."""
    gc.unfreeze()
    _policy["walking"] = installed()
    return gc.collect()


def stats() -> dict[str, int]:
    return {**_stats, "blocks_after_walk": _policy["base"]}
