"""What instruments build to connect is kept out of full garbage collections (core/gcpolicy.py):
with the console's policy on, the dispatcher freezes it after each connect, at start and on a
later reconnect; garbage is collected first, not frozen. A full collection over ~80,000 such
objects stalled the loop 93-215 ms (bench/drivers.py, before)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from dispatchkit import WORKCELL

from core import gcpolicy
from core.clock import VirtualClock
from core.dispatcher import Dispatcher
from core.drivers.simulated import SimulatedDriver
from core.events import EventBus
from core.workcell import parse_workcell


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector could ever free it


class Building(SimulatedDriver):
    """A simulated instrument whose connect builds a long-lived structure, as a SiLA client does."""

    async def connect(self) -> None:
        await super().connect()
        self.built = Node()


@pytest.fixture
def policy():
    gcpolicy.enable()
    yield
    gcpolicy.enable(False)
    gc.unfreeze()


def _tracked(obj: object) -> bool:
    """Whether the collector would traverse ``obj`` in a full collection (frozen: not)."""
    return any(o is obj for o in gc.get_objects())


def _dispatcher(store):
    clock = VirtualClock.for_store(store)
    cell = parse_workcell(WORKCELL, "cell.yaml")
    drivers = {i.id: Building(i, clock) for i in cell.instruments}
    return Dispatcher(store, EventBus(), drivers, clock=clock), drivers


def test_the_dispatcher_freezes_what_connecting_built(store, policy):
    async def main():
        dispatcher, drivers = _dispatcher(store)
        await dispatcher.start()
        try:
            assert gc.get_freeze_count() > 0
            assert not any(_tracked(d.built) for d in drivers.values())
            # a reconnect later (operator, or back from Offline) is settled the same way
            first = drivers["Reader1"].built
            await dispatcher.reconnect("Reader1", who="test")
            assert drivers["Reader1"].built is not first
            assert drivers["Reader1"].built is not None and not _tracked(drivers["Reader1"].built)
        finally:
            await dispatcher.close()

    asyncio.run(main())


def test_without_the_policy_nothing_is_frozen(store):
    async def main():
        dispatcher, drivers = _dispatcher(store)
        before = gc.get_freeze_count()
        await dispatcher.start()
        try:
            assert gc.get_freeze_count() == before
            assert all(_tracked(d.built) for d in drivers.values())
        finally:
            await dispatcher.close()

    asyncio.run(main())


def test_garbage_is_collected_not_frozen(policy):
    garbage = Node()
    gone = weakref.ref(garbage)
    kept = Node()
    del garbage
    assert gcpolicy.settle() > 0
    assert gone() is None and not _tracked(kept)


def test_a_slow_full_collection_freezes_what_survived_it_and_frees_the_garbage(policy, monkeypatch):
    """Long-lived objects built while the console runs (10,000 new runs) made every later full
    collection a 450-630 ms stall (bench/gui.py); a slow pass now freezes its survivors."""
    monkeypatch.setattr(gcpolicy, "SLOW_FULL_PASS", 0.0)  # every full pass counts as slow
    gc.unfreeze()
    garbage = Node()
    gone = weakref.ref(garbage)
    kept = Node()
    del garbage
    slow = gcpolicy.frozen_after_slow_passes()
    gc.collect()
    assert gone() is None  # the pass freed the cycle before anything was frozen
    assert not _tracked(kept) and gc.get_freeze_count() > 0
    assert gcpolicy.frozen_after_slow_passes() == slow + 1
    young = Node()
    gc.collect(1)  # a young collection never freezes
    assert _tracked(young) and gcpolicy.frozen_after_slow_passes() == slow + 1


def test_a_quick_full_collection_freezes_nothing_nor_does_one_without_the_policy(policy, monkeypatch):
    monkeypatch.setattr(gcpolicy, "SLOW_FULL_PASS", 3600.0)
    gc.unfreeze()
    kept = Node()
    gc.collect()
    assert _tracked(kept) and gc.get_freeze_count() == 0
    gcpolicy.enable(False)
    monkeypatch.setattr(gcpolicy, "SLOW_FULL_PASS", 0.0)
    gc.collect()
    assert _tracked(kept) and gc.get_freeze_count() == 0
    gcpolicy.enable()
    gcpolicy.enable()  # enabling twice watches once
    assert gc.callbacks.count(gcpolicy._after_full_pass) == 1
