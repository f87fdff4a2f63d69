"""Workcell timeline and the run's forward Gantt, from the forecast: where each step is planned
(core), the Timeline panel's lanes, bars and now-line, and Detail drawing the steps to come where
the forecast puts them — over a real runtime on a virtual clock in the main window."""

from __future__ import annotations

from datetime import datetime

import pytest
from conftest import save_screenshot
from PySide6.QtCore import QPointF

from console.app import settings_for
from console.main_window import MainWindow
from core.clock import VirtualClock
from core.durations_model import DurationsModel
from core.forecast import InstrumentState, RunState, Snapshot, StepState, forecast
from core.runtime import Runtime
from core.states import StepStatus
from core.templates import template_from_dict
from core.workcell import parse_workcell
from panels.timeline import TimelinePanel, bars_from

CELL = """
name: timeline cell
seed: 5
instruments:
  - {id: Sealer, kind: Sealer, driver: simulated, options: {connect_time: 0s},
     capabilities: {Sealer.Seal: {duration: 20s, jitter: 0s}}}
  - {id: Reader1, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 600s, jitter: 0s}}}
  - {id: Reader2, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 600s, jitter: 0s}}}
"""
SEAL_READ = {"name": "Seal and read", "version": 1, "definition": {"steps": [
    {"id": "seal", "kind": "Sealer.Seal"},
    {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["seal"]},
    {"id": "wait", "kind": "delay", "parameters": {"seconds": 30}, "depends_on": ["read"]}]}}
NOW = 1_800_000_000.0


def test_the_forecast_places_each_step_on_an_instrument_with_its_start_and_end():
    template = template_from_dict(SEAL_READ)
    instruments = (InstrumentState("Sealer", ("Sealer.Seal",)), InstrumentState("Reader1", ("PlateReader.ReadPlate",)))
    runs = (RunState("r1", template, "running", 50, NOW - 60,
                     {}, {"seal": StepState("seal", StepStatus.COMPLETED),
                          "read": StepState("read", StepStatus.RUNNING, started=NOW - 100, instrument="Reader1")}),
            RunState("r2", template, "running", 50, NOW - 50, {}, {}))
    result = forecast(Snapshot(NOW, runs, instruments), DurationsModel(parse_workcell(CELL)), samples=3)
    r1, r2 = result.runs["r1"].plan, result.runs["r2"].plan
    assert (r1["read"].start, r1["read"].end, r1["read"].instrument, r1["read"].running) == \
        (NOW - 100, NOW + 500, "Reader1", True)
    assert (r2["seal"].start, r2["seal"].end, r2["seal"].instrument) == (NOW, NOW + 20, "Sealer")
    # the reader is busy with r1 until +500: r2 reads after it
    assert (r2["read"].start, r2["read"].end, r2["read"].instrument) == (NOW + 500, NOW + 1100, "Reader1")
    assert r2["wait"].instrument is None and r2["wait"].end == NOW + 1130
    bars = bars_from(result)
    assert [(b.run_id, b.step, b.running) for b in bars] == [
        ("r1", "read", True), ("r2", "seal", False), ("r2", "read", False)]  # no lane for the delay


@pytest.fixture
def window(store, data_dir, qtbot, qrun):
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(CELL), seed=1)
    qrun(rt.start(templates_dir=None))
    qrun(clock.settle())
    qrun(rt.engine.publish(template_from_dict(SEAL_READ)))
    runs = [qrun(rt.start_run("Seal and read", {}, who="tester", allow_duplicate=True)) for _ in range(8)]
    qrun(clock.advance(45))  # two plates read (from 20 s and 40 s), the third seals
    w = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(w)
    w.show()
    qrun(w.load_orders())
    qtbot.waitUntil(lambda: w.timeline.result is not None and len(w.timeline.result.runs) == len(runs),
                    timeout=20_000)
    yield rt, clock, w, runs
    w.close()
    qrun(rt.close())


def test_a_hidden_timeline_draws_the_newest_forecast_when_it_is_shown(window, qtbot, qrun):
    """A forecast of thousands of runs took 40 ms of the loop to draw in a Timeline nobody saw
    (a tab behind Detail)."""
    rt, clock, w, runs = window
    panel = TimelinePanel(rt, w.bridge)
    qtbot.addWidget(panel)
    w.forecast.add_listener(panel.set_forecast)
    try:
        first = qrun(w.forecast.refresh())
        qrun(clock.advance(30))
        newest = qrun(w.forecast.refresh())
        assert panel.result is newest and newest is not first, "the newest forecast is kept"
        assert panel.canvas.bars == [] and panel.summary.text().startswith("No forecast yet"), "not drawn"
        panel.resize(900, 400)
        panel.show()
        qtbot.waitExposed(panel)
        assert panel.canvas.bars and {b.run_id for b in panel.canvas.bars} <= set(runs)
        assert f"forecast of {datetime.fromtimestamp(newest.at):%H:%M:%S}" in panel.summary.text()
    finally:
        w.forecast.remove_listener(panel.set_forecast)
        panel.shutdown()


def test_a_timeline_in_a_tab_behind_detail_neither_draws_nor_ticks_until_its_tab_is_selected(window, qtbot, qrun):
    """Qt reports a dock in a tab behind another as visible (only covered): the Timeline behind
    Detail drew every forecast (50-100 ms of the loop for 10,000 runs during a bulk cancel) and it,
    Robots and the others ticked every second for nobody."""
    rt, clock, w, runs = window
    panel = w.timeline
    w.docks["Detail"].raise_()
    qtbot.waitUntil(lambda: panel.visibleRegion().isEmpty())
    assert panel.isVisible(), "covered by Detail's tab, not hidden"
    assert not panel.refresh_timer.isActive() and not w.robots.refresh_timer.isActive()
    qrun(clock.advance(30))
    newest = qrun(w.forecast.refresh())
    stamp = f"forecast of {datetime.fromtimestamp(newest.at):%H:%M:%S}"
    assert panel.result is newest and stamp not in panel.summary.text(), "drawn for nobody"
    w.docks["Timeline"].raise_()
    qtbot.waitUntil(lambda: panel.in_view())
    assert stamp in panel.summary.text() and panel.refresh_timer.isActive()
    assert not w.detail.in_view() and not w.detail.refresh_timer.isActive()
    # a panel that scrolls in its dock (Schedules) is told too: it drew each forecast behind Jobs
    w.docks["Jobs"].raise_()
    qtbot.waitUntil(lambda: w.schedules.visibleRegion().isEmpty())
    assert not w.schedules.in_view() and not w.schedules.refresh_timer.isActive()
    w.docks["Schedules"].raise_()
    qtbot.waitUntil(lambda: w.schedules.in_view())
    assert w.schedules.refresh_timer.isActive()


def test_timeline_shows_running_and_forecast_bars_on_each_instrument(window, qtbot):
    rt, clock, w, runs = window
    panel = w.timeline
    w.docks["Timeline"].raise_()
    qtbot.waitUntil(lambda: panel.isVisible())
    canvas = panel.canvas
    assert canvas.instruments == ["Sealer", "Reader1", "Reader2"]
    running = [b for b in canvas.bars if b.running]
    planned = [b for b in canvas.bars if not b.running]
    assert {b.instrument for b in running} == {"Sealer", "Reader1", "Reader2"}
    assert {b.instrument for b in planned} >= {"Sealer", "Reader1", "Reader2"}
    assert all(b.end > b.start for b in canvas.bars)
    assert "running" in panel.summary.text() and "next 4 h" in panel.summary.text()
    canvas.repaint()
    assert canvas.painted_bars == sum(1 for b in canvas.bars if b.start <= canvas.span()[1])
    # the now-line is at the clock's now, and follows it on each tick
    assert canvas.now == pytest.approx(clock.now())
    before = canvas._x(canvas.now)
    # a bar is found where it is drawn (its tooltip names it)
    b = running[0]
    lane = canvas.instruments.index(b.instrument)
    found = canvas.bar_at(QPointF(canvas._x(max(b.start, canvas.span()[0])) + 2, 22 + lane * 26 + 13))
    assert found is not None and found.instrument == b.instrument
    # a shorter horizon: fewer bars fit
    panel.hours.setCurrentIndex(0)
    assert canvas.hours == 1 and "next 1 h" in panel.summary.text()
    assert canvas._x(canvas.now) != before  # the scale changed with the horizon
    for theme in ("light", "dark"):
        w.set_theme(theme)
        for size in ((1280, 720), (1920, 1080)):
            w.resize(*size)
            qtbot.wait(80)
            save_screenshot(w, f"timeline-{size[0]}x{size[1]}-{theme}")
    w.set_theme("light")


def test_detail_draws_the_steps_to_come_where_the_forecast_puts_them(window, qtbot, qrun):
    rt, clock, w, runs = window
    last = runs[-1]  # queued behind the others: nothing of it has started
    w.docks["Detail"].raise_()
    w.detail.show_order(last)
    qtbot.waitUntil(lambda: w.detail.data is not None and w.detail.data.order_id == last)
    eta = w.forecast.eta(last)
    assert eta is not None and eta.ok
    steps = {s.key: s for s in w.detail.timeline.steps}
    assert steps["seal"].started is None and steps["seal"].planned == (eta.plan["seal"].start, eta.plan["seal"].end)
    assert steps["read"].planned[0] >= steps["seal"].planned[1]
    assert w.detail.timeline.eta == (eta.p10, eta.p50, eta.p90)
    assert "done by" in w.detail.steps_title.text()
    for theme in ("light", "dark"):
        w.set_theme(theme)
        for size in ((1280, 720), (1920, 1080)):
            w.resize(*size)
            qtbot.wait(80)
            save_screenshot(w, f"detail-forward-gantt-{size[0]}x{size[1]}-{theme}")
    w.set_theme("light")
