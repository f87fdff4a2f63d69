"""The forecast keeps time windows as the dispatcher does and warns, before a window breaks, on the
Dashboard's alerts and in the inbox; on the virtual clock the warning comes before the break."""

from __future__ import annotations

import asyncio

import pytest

from core.clock import VirtualClock
from core.durations_model import DurationsModel
from core.engine import RunStatus
from core.forecast import (
    Forecast,
    InstrumentState,
    RunState,
    Snapshot,
    StepState,
    WindowWarnings,
    forecast,
)
from core.inbox import Inbox
from core.runtime import Runtime
from core.states import StepStatus
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict
from core.workcell import parse_workcell
from panels.dashboard import AlertBook

CELL = """
name: window cell
seed: 5
instruments:
  - {id: Sealer, kind: Sealer, driver: simulated, options: {connect_time: 0s},
     capabilities: {Sealer.Seal: {duration: 20s, jitter: 0s}}}
  - {id: Reader, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 60s, jitter: 0s}}}
"""
NOW = 1_800_000_000.0
INSTRUMENTS = (InstrumentState("Sealer", ("Sealer.Seal",)), InstrumentState("Reader", ("PlateReader.ReadPlate",)))


def _template(window, deadline=None):
    definition = {"steps": [{"id": "seal", "kind": "Sealer.Seal"},
                            {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["seal"], **window}]}
    if deadline:
        definition["deadline"] = deadline
    return template_from_dict({"name": "Seal then read", "version": 1, "definition": definition})


def _model():
    return DurationsModel(parse_workcell(CELL))


def test_windows_forecast_to_break_are_listed_with_by_how_much():
    t = _template({"start_within": {"after": "seal", "max": "30s"}}, deadline="100s")
    runs = tuple(RunState(f"r{i}", t, "running", 50, NOW + i, {}, {}) for i in range(3))
    result = forecast(Snapshot(NOW, runs, INSTRUMENTS), _model(), samples=2)
    # seals 0-20, 20-40, 40-60; reads 20-80, 80-140, 140-200: r1's read starts 10 s after its
    # window closes (40 + 30), r2's 50 s after (60 + 30); r2 ends 200 s, 160 s after it started
    risks = {w.key: w for w in result.windows}
    assert set(risks) == {"r1/read", "r2/read", "r1/deadline", "r2/deadline"}
    assert risks["r1/read"].late == pytest.approx(10) and risks["r1/read"].closes == pytest.approx(NOW + 70)
    assert risks["r2/read"].late == pytest.approx(50) and risks["r2/read"].chance == 1.0
    assert risks["r2/deadline"].late == pytest.approx(60) and risks["r1/deadline"].late == pytest.approx(20)
    assert "step read of run r1 (Seal then read) is forecast to start 10s after its window closes" in \
        risks["r1/read"].text
    assert result.windows[0].key == "r2/deadline"  # most late first


def test_a_minimum_delay_and_a_window_after_a_finished_step_are_played():
    t = _template({"min_delay": "30s"})
    result = forecast(Snapshot(NOW, (RunState("r0", t, "running", 50, NOW, {}, {}),), INSTRUMENTS), _model(),
                      samples=1)
    assert result.runs["r0"].steps["read"] == NOW + 20 + 30 + 60
    late = _template({"start_within": {"after": "seal", "max": "10s"}})
    done = RunState("r0", late, "running", 50, NOW - 100, {},
                    {"seal": StepState("seal", StepStatus.COMPLETED, NOW - 80, "Sealer", ended=NOW - 60)})
    busy = RunState("other", _template({}), "running", 50, NOW - 200, {},
                    {"seal": StepState("seal", StepStatus.COMPLETED),
                     "read": StepState("read", StepStatus.RUNNING, NOW - 30, "Reader")})
    result = forecast(Snapshot(NOW, (done, busy), INSTRUMENTS), _model(), samples=1)
    (risk,) = result.windows
    assert risk.key == "r0/read" and risk.late == pytest.approx(30 + 50)


def test_window_warnings_reach_the_dashboard_and_the_inbox_before_the_window_breaks(data_dir):
    t = _template({"start_within": {"after": "seal", "max": "30s"}}).model_copy(update={"version": 0})

    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store, start=NOW)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(CELL), seed=2, metrics=False)
        starting = asyncio.ensure_future(rt.start(templates_dir=None))
        await clock.run_until(starting.done, step=1.0)
        await rt.engine.publish(t)
        fc = Forecast(rt, samples=2, debounce=3600)  # made by hand below
        await fc.start(history=False)
        inbox = Inbox.of(rt)
        warnings = WindowWarnings(fc, inbox)
        await warnings.start()
        t0 = clock.now()  # start-up took some virtual time
        runs = [await rt.start_run("Seal then read", allow_duplicate=True) for _ in range(2)]
        await clock.advance(5)
        result = await fc.refresh()
        await asyncio.sleep(0.05)
        await asyncio.gather(*warnings._tasks)
        items = inbox.items(kind="window")
        alerts = AlertBook().evaluate(clock.now(), rt.instruments(), windows=result.windows)
        broke_at = clock.now()
        # play on: the second run's read starts 10 s after its window closes, as forecast
        await clock.run_until(lambda: all(rt.engine.run_status(r) is RunStatus.COMPLETED for r in runs))
        late = rt.engine.get_instance(runs[1])["late"]
        second = await fc.refresh()
        await asyncio.gather(*warnings._tasks)
        closed = inbox.item(items[0].id) if items else None
        await fc.close()
        await rt.close()
        return runs, items, alerts, broke_at - t0, late, second, closed

    runs, items, alerts, warned_after, late, second, closed = asyncio.run(scenario())
    assert [(i.run_id, i.step_id) for i in items] == [(runs[1], "read")]
    assert items[0].title.startswith("Window at risk: step read of run")
    (alert,) = [a for a in alerts if a.key.startswith("window:")]
    assert alert.title == f"Window at risk: step read of run {runs[1]}" and alert.order_id == runs[1]
    # the warning came before the break: the window closed at 40 + 30 s
    assert warned_after == 5 < 70
    assert late[0]["step"] == "read" and late[0]["late_by"] == pytest.approx(10, abs=0.5)
    assert second.windows == () and closed is not None and closed.state == "answered" \
        and closed.answered_by == "forecast"
