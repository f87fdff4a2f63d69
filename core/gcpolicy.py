"""Keep long-lived objects out of Python's full garbage collections.

A full (generation 2) collection traverses every container object the cyclic collector tracks,
holding the GIL: with the objects a console builds while it connects instruments it stalls the
event loop for a long time. Measured on the 2-core test machine: one SiLA 2 client adds about
5,300 tracked objects (``sila2`` compiles the server's feature definitions into pure-Python
protobuf modules); with 8 SiLA instruments and 50 robot agents connected a full collection took
93-215 ms, and it was each of ``bench/drivers.py``'s loop-lag maxima over 50 ms. Objects moved
to the permanent generation (:func:`gc.freeze`) are skipped by every later collection; a full
collection then costs what was allocated since.

:func:`settle` is called once something long-lived has been built: by the dispatcher after
each instrument connects (at start and every reconnect later), and by the console once its
window holds the orders (``console/app.py``). Reference counting still frees frozen objects;
only a reference cycle among them outlives its last use, so a young-generation collection runs
first (about a millisecond) and young garbage is not frozen.

Long-lived objects also pile up while the console runs: 10,000 runs created after the window
loaded made each later full collection a 450-630 ms stall, eight or nine of them during a bulk
cancel of those runs (``bench/gui.py``). So, once enabled, a full collection that took longer
than :data:`SLOW_FULL_PASS` freezes what survived it. That is the one moment nothing collectable
is left to freeze: the pass has just freed every unreachable cycle. The next full collections
then cost what was allocated since, as after :func:`settle`. What is frozen and later becomes a
cycle's garbage stays allocated; what refcounting frees is freed as ever. The engine's runs,
steps, requests and attempts hold no cycle once finished (``tests/test_write_batch.py``): after
a bulk cancel of 10,000 runs in the window the frozen generation held no garbage.

A bulk action allocates fast for seconds (its plans, records and events, and what the window
makes of them): full collections came every second or so, each walking everything made since
the last freeze (10 passes, up to 56 ms, during a bulk cancel of 10,000 runs in ``bench/gui.py``),
and young ones ran inside its planning steps, 5-10 ms each of a 15-20 ms step (while old runs
are freed, the youngest generation's count goes down with each freed object, so it grows large
between collections). Inside :func:`collecting_apart` the collector runs the young generations
in loop steps of their own, never in the middle of another; no full collection; at its end
what survived is frozen, as after :func:`settle`, so no later full collection walks it either.

It is a policy of the process, not of a library: the console turns it on (:func:`enable`) and
so does ``bench/drivers.py``; tests and embedding programs keep the collector as it is.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["SLOW_FULL_PASS", "YOUNG_EVERY", "collecting_apart", "enable", "enabled",
           "frozen_after_slow_passes", "settle"]

SLOW_FULL_PASS = 0.025
"""Seconds: a full collection this long freezes what survived it (once enabled)."""

YOUNG_EVERY = 0.004
"""Seconds between the young collections' loop steps inside :func:`collecting_apart`."""

_enabled = False
_pass_started = 0.0
_slow_freezes = 0
_holds = 0
"""How many :func:`collecting_apart` blocks are open (bulk actions may overlap)."""
_collector: asyncio.Task[None] | None = None


def enable(on: bool = True) -> None:
    """Turn :func:`settle` and the freeze after a slow full collection on (the console process)
    or off."""
    global _enabled
    _enabled = on
    if on and _after_full_pass not in gc.callbacks:
        gc.callbacks.append(_after_full_pass)
    elif not on and _after_full_pass in gc.callbacks:
        gc.callbacks.remove(_after_full_pass)


def frozen_after_slow_passes() -> int:
    """How many slow full collections froze their survivors since the process started."""
    return _slow_freezes


def _after_full_pass(phase: str, info: dict[str, Any]) -> None:
    global _pass_started, _slow_freezes
    if info["generation"] != 2:
        return
    if phase == "start":
        _pass_started = time.perf_counter()
    elif time.perf_counter() - _pass_started >= SLOW_FULL_PASS:
        gc.freeze()  # the survivors of the pass: no garbage among them
        _slow_freezes += 1


def enabled() -> bool:
    return _enabled


def settle() -> int | None:
    """If enabled: collect the young generations, then freeze everything that survived; returns
    the number of objects in the permanent generation (None when not enabled)."""
    if not _enabled:
        return None
    gc.collect(1)
    gc.freeze()
    return gc.get_freeze_count()


@asynccontextmanager
async def collecting_apart() -> AsyncIterator[None]:
    """If enabled: while the block runs, automatic collection is off and the young generations
    are collected by a task of their own, in loop steps of their own, whenever they are due
    (:data:`YOUNG_EVERY`); no full collection; when the last open block closes, automatic
    collection is back and what survived is frozen (:func:`settle`). Blocks may overlap (two
    bulk actions at once)."""
    global _holds, _collector
    if not _enabled:
        yield
        return
    if _holds == 0:
        gc.disable()
        _collector = asyncio.get_running_loop().create_task(_collect_young(), name="young collections")
    _holds += 1
    try:
        yield
    finally:
        _holds -= 1
        if _holds == 0:
            if _collector is not None:
                _collector.cancel()
                _collector = None
            gc.enable()
            settle()


async def _collect_young() -> None:
    """The youngest generation at every wake (its count is no measure of its size: freeing an
    older object counts down too), the middle one too at every other wake (left to its usual
    ten young passes it held what survived 40 ms of a bulk action: 10-17 ms a pass)."""
    wakes = 0
    while True:
        await asyncio.sleep(YOUNG_EVERY)
        wakes += 1
        gc.collect(wakes % 2)
