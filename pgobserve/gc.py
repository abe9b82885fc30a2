"""Short garbage-collector pauses in a process holding thousands of idle sockets (opt-in).

CPython's cyclic collector walks every tracked object of the process on each full
(generation 2) collection. An idle WebSocket under daphne costs ~200 tracked objects
(mostly daphne's, Twisted's, autobahn's, asyncio's and Django's per-connection state:
``bench/README.md``), so a process with 10,000 sockets walks ~2 M objects per full
collection, 1-3 s during which no socket is served. Full collections come by themselves: one
is due whenever a quarter as many objects as survived the last one have since been promoted
to the old generation, and daphne's keep-alive pings (every 20 s, on every socket) promote
enough of them.

``install()`` freezes (``gc.freeze()``) what survives each full collection: the objects alive
then move to the permanent generation, which later collections do not walk, so each full
collection walks only what was created since the last one (milliseconds, not seconds).
Frozen objects are still freed by reference counting when they are no longer used; what is
lost is only the collection of *cycles* among them: a frozen object that becomes part of
unreachable cyclic garbage stays in memory. Nearly everything a closed socket leaves is such
a cycle (daphne's, Twisted's and the consumer's: ~100 objects, ~20 KiB; ``bench/README.md``),
so a process that churns connections would grow. Hence ``install(full_every=3600)``: at most
that many seconds after the last, a full collection first unfreezes everything and walks it
all, reclaiming the frozen garbage (one long pause an hour instead of one every ~20 s);
``collect_frozen()`` does the same on demand.

It changes the whole process, hence opt-in: call ``pgobserve.gc.install()`` once at start-up,
in ``asgi.py``.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

__all__ = ["collect_frozen", "install", "installed", "stats", "uninstall"]

_lock = threading.Lock()
#: ``freezes``: full collections whose survivors were frozen; ``full_walks``: full
#: collections that unfroze everything first (``full_every``).
_stats = {"freezes": 0, "full_walks": 0}
#: Seconds between full collections that walk the frozen objects too (None: never).
_full_every: list[float | None] = [None]
_last_full_walk = [0.0]


def _after_collection(phase: str, info: dict[str, Any]) -> None:
    if info.get("generation") != 2:
        return
    if phase == "start":
        every = _full_every[0]
        if every is not None and time.monotonic() - _last_full_walk[0] >= every:
            # This collection walks everything: the frozen cycles are collected too.
            gc.unfreeze()
            _last_full_walk[0] = time.monotonic()
            _stats["full_walks"] += 1
    elif phase == "stop":
        # Right after a full collection everything left is reachable (or garbage the
        # collector could not free): freezing now puts the least garbage out of reach.
        gc.freeze()
        _stats["freezes"] += 1


def install(full_every: float | None = 3600.0) -> None:
    """Freeze the survivors of every full collection from now on (idempotent), starting
    with one full collection now. ``full_every``: seconds between full collections that
    unfreeze and walk everything (the cycles frozen since are collected); None: never."""
    with _lock:
        _full_every[0] = full_every
        _last_full_walk[0] = time.monotonic()
        if _after_collection not in gc.callbacks:
            gc.callbacks.append(_after_collection)
    gc.collect()  # garbage of the start-up out of the way; the callback freezes the rest


def uninstall() -> None:
    """Stop freezing and unfreeze everything (the next full collection walks it all)."""
    with _lock:
        if _after_collection in gc.callbacks:
            gc.callbacks.remove(_after_collection)
    gc.unfreeze()


def installed() -> bool:
    return _after_collection in gc.callbacks


def collect_frozen() -> int:
    """Collect the cyclic garbage among frozen objects (one full pause over every object of
    the process), then freeze the survivors again if installed. Returns what was collected."""
    gc.unfreeze()
    collected = gc.collect()
    if not installed():
        return collected
    gc.freeze()  # the callback froze already; this is for a collection it did not see
    return collected


def stats() -> dict[str, int]:
    return {**_stats, "frozen": gc.get_freeze_count()}
