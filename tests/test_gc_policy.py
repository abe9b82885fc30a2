"""pgobserve.gc (issue 10): freezing the survivors of full collections, opt-in; and the
plain data instance subscriptions keep (no serializer behind it)."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import pgobserve.gc as pgc
from pgobserve.instances import detached
from pgobserve.watches import WatchRegistry


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def only_explicit_collections():
    """Only the tests' own collections: in a process as big as the whole suite's, an
    automatic full collection in between would walk (or freeze) on its own."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def saved_garbage():
    """What collections find unreachable is kept in ``gc.garbage`` (to see what they
    collected), for the test only."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.garbage.clear()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def frozen_cycle() -> set[int]:
    """Two objects in a cycle, alive through one full collection (which freezes them with
    the survivors when installed), then dropped; returns their ids: cyclic garbage now."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    gc.collect()
    return {id(a), id(b)}


def collected() -> set[int]:
    return {id(o) for o in gc.garbage}


@pytest.fixture
def policy():
    assert not pgc.installed()
    pgc.install(full_when_grown=None, full_every=None)
    try:
        yield pgc
    finally:
        pgc.uninstall()
        gc.collect()


def test_not_installed_by_default():
    assert not pgc.installed()
    assert pgc._on_collection not in gc.callbacks


def test_survivors_of_a_full_collection_are_frozen(policy):
    assert policy.installed()
    pgc.install(full_when_grown=None, full_every=None)  # idempotent
    assert gc.callbacks.count(pgc._on_collection) == 1
    kept = [Node() for _ in range(100)]
    before = gc.get_freeze_count()
    gc.collect(1)  # a young collection freezes nothing
    assert gc.get_freeze_count() == before
    gc.collect()
    assert gc.get_freeze_count() >= before + 100
    assert all(not gc.is_finalized(k) for k in kept)
    assert policy.stats()["freezes"] >= 1


def test_frozen_cycles_are_collected_by_collect_frozen_only(policy, saved_garbage):
    ids = frozen_cycle()
    gc.collect()
    assert not ids & collected()  # out of reach while frozen
    pgc.collect_frozen()
    assert ids <= collected()
    assert gc.get_freeze_count() > 0  # refrozen: still installed


def test_full_every_walks_the_frozen_cycles_again(saved_garbage):
    pgc.install(full_when_grown=None, full_every=0.0)  # every full collection walks all
    try:
        ids = frozen_cycle()
        assert gc.get_freeze_count() > 0
        walks = pgc.stats()["full_walks"]
        gc.collect()
        assert ids <= collected()
        assert pgc.stats()["full_walks"] == walks + 1
        assert gc.get_freeze_count() > 0  # the survivors frozen again
    finally:
        pgc.uninstall()


def test_a_quarter_more_frozen_walks_everything_again(saved_garbage):
    pgc.install()  # full_when_grown=0.25
    try:
        base = pgc.stats()["blocks_after_walk"]
        assert base > 0
        ids = frozen_cycle()  # frozen (no growth yet: not a walk)
        walks = pgc.stats()["full_walks"]
        gc.collect()
        assert not ids & collected()  # frozen garbage, out of reach
        assert pgc.stats()["full_walks"] == walks
        kept = [Node() for _ in range(int(base * 0.3) + pgc.MIN_GROWTH)]
        gc.collect()  # the heap is now over a quarter larger: this one walks everything
        assert pgc.stats()["full_walks"] == walks + 1
        assert ids <= collected()
        assert pgc.stats()["blocks_after_walk"] >= base + len(kept)
    finally:
        pgc.uninstall()


def busy() -> None:
    """Young collections, as a busy process makes them."""
    for _ in range(5):
        gc.collect(0)


def grown_heap(times: float = 1.3) -> list[Node]:
    """Objects kept until the heap has grown by ``times`` the growth that makes a walk due
    (a quarter since the last walk: more than one, less than two)."""
    base = pgc.stats()["blocks_after_walk"]
    threshold = max(pgc.MIN_GROWTH, base * 0.25)
    kept: list[Node] = []
    while sys.getallocatedblocks() - base < times * threshold:
        kept += [Node() for _ in range(1000)]
    return kept


@contextmanager
def a_deferred_walk(
    monkeypatch: pytest.MonkeyPatch, window: float, **policy: float
) -> Iterator[tuple[set[int], int, list[Node]]]:
    """Installed with ``policy`` (young collections counted in windows of ``window``
    seconds): a frozen cycle, then a walk made due by the heap's growth and put off because
    the process is busy. Yields the cycle's ids, the walks so far, and what grew the heap."""
    monkeypatch.setattr(pgc, "WINDOW", window)
    pgc.install(**policy)
    try:
        ids = frozen_cycle()
        walks, deferred = pgc.stats()["full_walks"], pgc.stats()["deferred"]
        kept = grown_heap()
        busy()
        gc.collect()  # due, but the process is busy: only the new objects are walked
        assert pgc.stats()["full_walks"] == walks
        assert pgc.stats()["deferred"] == deferred + 1
        assert not ids & collected()
        yield ids, walks, kept
    finally:
        pgc.uninstall()


def test_a_due_walk_waits_for_a_quiet_moment(saved_garbage, monkeypatch):
    # Busy: any young collection in a window of 50 ms.
    with a_deferred_walk(monkeypatch, 0.05, busy_rate=1.0, max_defer=3600.0) as (ids, walks, _):
        time.sleep(3 * pgc.WINDOW)  # two windows with no young collection: quiet
        gc.collect()
        assert pgc.stats()["full_walks"] == walks + 1
        assert ids <= collected()


def test_a_due_walk_waits_max_defer_at_most(saved_garbage, monkeypatch):
    # Busy all along (one window of an hour); put off once, and no longer than max_defer.
    with a_deferred_walk(monkeypatch, 3600.0, busy_rate=0.001, max_defer=0.0) as (ids, walks, _):
        busy()
        gc.collect()
        assert pgc.stats()["full_walks"] == walks + 1
        assert ids <= collected()


def test_a_due_walk_waits_no_longer_than_twice_the_growth(saved_garbage, monkeypatch):
    # Busy all along, max_defer far away: put off until the heap grew twice as much.
    with a_deferred_walk(monkeypatch, 3600.0, busy_rate=0.001, max_defer=3600.0) as (
        ids,
        walks,
        kept,
    ):
        kept += grown_heap(2.3)
        busy()
        gc.collect()  # walked, busy or not
        assert pgc.stats()["full_walks"] == walks + 1
        assert ids <= collected()


def test_uninstall_unfreezes():
    pgc.install()
    assert gc.get_freeze_count() > 0
    pgc.uninstall()
    assert not pgc.installed()
    assert gc.get_freeze_count() == 0


def test_detached_drops_the_serializer():
    from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

    class FakeSerializer:
        pass

    data = ReturnDict({"id": 1, "value": 2}, serializer=FakeSerializer())
    plain = detached(data)
    assert type(plain) is dict and plain == data and not hasattr(plain, "serializer")
    many = ReturnList([{"id": 1}], serializer=FakeSerializer())
    assert type(detached(many)) is list and detached(many) == many
    for same in ({"a": 1}, [1], None, 5, "x"):
        assert detached(same) is same


def test_an_idle_registry_holds_no_tracked_containers():
    registry = WatchRegistry()
    for name in ("_pending", "_batches", "_routes", "_watches"):
        assert not gc.is_tracked(getattr(registry, name)), name
