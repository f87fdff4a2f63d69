"""Injectable time for the engine, the dispatcher and simulated instruments.

Everything in the core that waits or reads the time does so through a :class:`Clock`:

- :class:`SystemClock` — wall time (the console).
- :class:`ScaledClock` — wall time run ``speed`` times faster (rehearsals: ``--speed 100``).
- :class:`VirtualClock` — time moves only when told (:meth:`VirtualClock.advance`), so a test runs
  hours of workflow time in milliseconds: sleepers wake in deadline order and each one is allowed
  to settle (including store commits, through ``settle``) before time moves on.

``now()`` is epoch seconds (float); ``sleep(seconds)`` is a coroutine.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


async def sleep_or_wake(clock: Clock, seconds: float | None, wake: asyncio.Event) -> None:
    """Sleep ``seconds`` on ``clock`` (forever if None) unless ``wake`` is set first; clears ``wake``.

    The one way the engine, the dispatcher and the schedules wait for "the next deadline, or
    sooner if something new arrives" — a single timer each, re-armed, never one per event.
    """
    wake.clear()
    waits: list[asyncio.Future[bool | None]] = [asyncio.ensure_future(wake.wait())]
    if seconds is not None:
        waits.append(asyncio.ensure_future(clock.sleep(max(0.0, seconds))))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Wall time sped up ``speed`` times, starting at the real now."""

    def __init__(self, speed: float, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._t0 = time.monotonic()
        self._start = time.time() if start is None else start

    def now(self) -> float:
        return self._start + (time.monotonic() - self._t0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class VirtualClock:
    """Time that moves only on :meth:`advance`. Deterministic."""

    def __init__(self, start: float = 1_800_000_000.0,
                 settle: Callable[[], Awaitable[None]] | None = None,
                 activity: Callable[[], int] | None = None) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.settle_hook = settle
        self.activity = activity
        """A counter that grows while work happens outside the loop (e.g. store writes)."""

    @classmethod
    def for_store(cls, store: Any, start: float = 1_800_000_000.0) -> VirtualClock:
        """A clock that also waits for the store's writer before deciding things have settled."""
        return cls(start, settle=store.drain, activity=lambda: store.submitted)

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    @property
    def next_deadline(self) -> float | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def settle(self) -> None:
        """Let every runnable task run until nothing more happens without time moving."""
        last = None
        for _ in range(10_000):
            for _ in range(10):
                await asyncio.sleep(0)
            if self.settle_hook is not None:
                await self.settle_hook()
            mark = (self.activity() if self.activity else 0, len(self._sleepers))
            if mark == last:
                return
            last = mark

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in order and settling after each."""
        target = self._now + seconds
        await self.settle()
        while True:
            deadline = self.next_deadline
            if deadline is None or deadline > target:
                break
            self._now = max(self._now, deadline)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()

    async def run_until(self, predicate: Callable[[], bool], *, limit: float = 7 * 86400,
                        step: float | None = None) -> float:
        """Advance to each next deadline until ``predicate()`` holds; return virtual seconds used."""
        start = self._now
        await self.settle()
        while not predicate():
            deadline = self.next_deadline
            if self._now - start > limit:
                raise TimeoutError(f"condition not reached within {limit} virtual seconds")
            if deadline is None:
                if step is None:
                    raise TimeoutError("condition not reached and nothing is waiting on the clock")
                await self.advance(step)
            else:
                await self.advance(max(0.0, deadline - self._now))
        return self._now - start
