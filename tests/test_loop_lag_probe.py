"""The loop-lag probe of the status bar and the benchmarks: how late a short sleep wakes, and how
much of that the loop thread's own work explains (a thread that waits for a core or the GIL on a
busy machine lags without working)."""

from __future__ import annotations

import asyncio
import time

from panels.widgets import LoopLagProbe, lag_stats


def _probe_during(block) -> tuple[list[float], list[float]]:
    async def main() -> tuple[list[float], list[float]]:
        probe = LoopLagProbe(interval=0.005)
        probe.start()
        await asyncio.sleep(0.02)
        probe.record_all()
        await asyncio.sleep(0.002)
        block()  # one long loop step
        await asyncio.sleep(0.02)
        lags = probe.stop_recording()
        probe.stop()
        return lags, probe.own_lags

    return asyncio.run(main())


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_step_that_works_shows_as_the_loops_own_lag():
    lags, own = _probe_during(lambda: _spin(0.06))
    assert len(own) == len(lags)
    worst = max(range(len(lags)), key=lags.__getitem__)
    assert lags[worst] >= 0.05
    assert own[worst] >= 0.05 and own[worst] <= lags[worst]


def test_a_step_that_waits_without_working_lags_but_is_not_the_loops_own_work():
    """A blocking wait of the loop thread (or a wait for the GIL or a core) shows in the lag only."""
    lags, own = _probe_during(lambda: time.sleep(0.06))
    worst = max(range(len(lags)), key=lags.__getitem__)
    assert lags[worst] >= 0.05
    assert own[worst] < 0.03, own[worst]
    assert (lag_stats(own) or (0, 0, 1))[2] < 0.03
