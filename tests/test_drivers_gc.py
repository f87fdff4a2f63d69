"""What instruments build to connect is kept out of full garbage collections (core/gcpolicy.py):
with the console's policy on, the dispatcher freezes it after each connect, at start and on a
later reconnect; garbage is collected first, not frozen. A full collection over ~80,000 such
objects stalled the loop 93-215 ms (bench/drivers.py, before)."""

from __future__ import annotations

import ast
import asyncio
import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

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


HOLD = {"steps": [{"id": "hold", "kind": "Hold.Forever"}, {"id": "b", "kind": "Reader.Read", "depends_on": ["hold"]}]}


def _full_passes_during_a_bulk_cancel(tmp_path) -> tuple[list[int], tuple[int, int, int], int, int]:
    """Cancel 120 held runs in bulk with full collections made as frequent as they can be; the
    generations collected meanwhile, the thresholds and the frozen count after, and those before."""
    from core.clock import SystemClock
    from core.engine import SimulatedExecutor
    from core.runtime import Runtime

    generations: list[int] = []
    on = [False]

    def seen(phase: str, info: dict) -> None:
        if on[0] and phase == "start":
            generations.append(info["generation"])

    async def main() -> tuple[int, int]:
        executor = SimulatedExecutor(SystemClock(), hang_kinds=["Hold.Forever"])
        rt = Runtime.build(tmp_path, executor=executor, workcell=None, metrics=False)
        rt.bulk_chunk = 40
        await rt.start(templates_dir=None)
        try:
            await rt.engine.create_template("Hold", HOLD)
            runs = [await rt.start_run("Hold", {}, who="lab", allow_duplicate=True) for _ in range(120)]
            while len(executor.calls) < len(runs):  # noqa: ASYNC110 - a plain list the executor fills
                await asyncio.sleep(0.01)
            frozen = gc.get_freeze_count()
            on[0] = True
            try:
                results = await rt.bulk("cancel", runs, who="ann", reason="drill")
            finally:
                on[0] = False
            assert all(r.ok for r in results) and len(results) == len(runs)
            return frozen, gc.get_freeze_count()
        finally:
            await rt.close()

    old = gc.get_threshold()
    gc.set_threshold(50, 1, 1)  # a full collection at every other young one, as far as counts go
    gc.callbacks.append(seen)
    try:
        frozen_before, frozen_after = asyncio.run(main())
        return generations, gc.get_threshold(), frozen_before, frozen_after
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*old)


def test_a_bulk_action_makes_no_full_collection_and_freezes_what_survived_it(tmp_path, policy, monkeypatch):
    """A bulk cancel of 10,000 runs in the window set off 10 full collections of up to 56 ms each,
    and young ones inside its planning steps (bench/gui.py): inside a bulk action only the young
    generations are collected, by a task of their own."""
    monkeypatch.setattr(gcpolicy, "SLOW_FULL_PASS", 3600.0)  # no freeze before the bulk: only its own counts
    gc.unfreeze()
    generations, threshold, frozen_before, frozen_after = _full_passes_during_a_bulk_cancel(tmp_path)
    assert 2 not in generations, f"{generations.count(2)} full collections"
    assert gc.isenabled() and threshold == (50, 1, 1), "automatic collection is back once the action is done"
    assert frozen_after > frozen_before, "what survived the action is frozen, as after settle"


def test_inside_the_block_young_collections_run_in_loop_steps_of_their_own(policy):
    """No automatic collection in the middle of a step: the collector's task runs them between."""
    inside: list[bool] = []
    stepping = [False]

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            inside.append(stepping[0])

    async def main() -> list[int]:
        async with gcpolicy.collecting_apart():
            assert not gc.isenabled()
            for _ in range(20):
                stepping[0] = True
                junk = [[i] for i in range(5_000)]  # many young containers in one step
                stepping[0] = False
                del junk
                await asyncio.sleep(gcpolicy.YOUNG_EVERY)
        return gc.get_count()

    gc.callbacks.append(seen)
    try:
        asyncio.run(main())
    finally:
        gc.callbacks.remove(seen)
    assert inside and not any(inside), f"{sum(inside)} collections inside a step, {len(inside)} in all"
    assert gc.isenabled()


def test_without_the_policy_a_bulk_action_leaves_the_collector_as_it_is(tmp_path):
    """In an interpreter of its own: after a test session's big heap, CPython holds off full
    passes until a quarter of the old generation is new, whatever the thresholds say."""
    here = Path(__file__).resolve().parent
    code = ("import sys, pathlib, test_drivers_gc as t; "
            "print(list(t._full_passes_during_a_bulk_cancel(pathlib.Path(sys.argv[1]))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parent)])}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    generations, threshold, frozen_before, frozen_after = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    assert 2 in generations and tuple(threshold) == (50, 1, 1) and frozen_after == frozen_before


def test_overlapping_blocks_turn_automatic_collection_back_on_once_the_last_one_closes(policy):
    async def main() -> None:
        async with gcpolicy.collecting_apart():
            async with gcpolicy.collecting_apart():
                assert not gc.isenabled()
            assert not gc.isenabled(), "the outer block still holds"
        assert gc.isenabled()

    try:
        asyncio.run(main())
    finally:
        gc.enable()
        gc.unfreeze()
