"""Dashboard panel over a real runtime on a virtual clock: KPI cards follow completed runs, the
status and instrument summaries follow the core, alerts rise and clear, activity is listed."""

from __future__ import annotations

import pytest
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt

from console.bridge import EventBridge
from core.clock import VirtualClock
from core.dispatcher import InstrumentView
from core.events import InstrumentStatusChanged, RunChanged, StepChanged
from core.orders import ModuleStatus
from core.runtime import Runtime
from core.states import RunStatus, StepStatus
from core.templates import template_from_dict
from core.timetravel import TimeMachine
from core.workcell import parse_workcell
from panels import dashboard as dashboard_module
from panels.dashboard import CRITICAL, TICK_MS, WARNING, AlertBook, DashboardPanel

FLOW = {"name": "Flow", "inputs": [{"name": "plate", "type": "string"}], "definition": {"steps": [
    {"id": "move", "kind": "RobotArm.MovePlate"},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["move"]}]}}
SLOW_READ = {"name": "Hasty read", "inputs": [{"name": "plate", "type": "string"}], "definition": {
    "steps": [{"id": "read", "kind": "PlateReader.ReadPlate", "timeout_seconds": 10,
               "retry_policy": {"max_attempts": 1}}]}}


def _start(store, data_dir, qrun, faults=None):
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1,
                       faults=faults)
    qrun(rt.start(templates_dir=None))
    qrun(clock.settle())
    return rt, clock


@pytest.fixture
def dashboard(store, data_dir, qtbot, qrun, request):
    rt, clock = _start(store, data_dir, qrun, getattr(request, "param", None))
    bridge = EventBridge(rt.ledger.bus)
    panel = DashboardPanel(rt, bridge, expanded=True)
    qtbot.addWidget(panel)
    panel.resize(1400, 260)
    panel.show()
    yield rt, clock, panel
    panel.shutdown()
    assert not panel.refresh_timer.isActive()
    panel.close()
    bridge.close()
    qrun(rt.close())


def _value(panel, key):
    return panel.kpi[key].value.text()


def test_kpis_follow_completed_runs(dashboard, qtbot, qrun):
    rt, clock, panel = dashboard
    assert panel.refresh_timer.isActive() and panel.refresh_timer.interval() == TICK_MS
    assert _value(panel, "instruments") == "4 / 4"
    assert _value(panel, "jobs") == "0" and _value(panel, "attention") == "0"
    assert _value(panel, "success") == "—"
    assert panel.all_clear.isVisible() and not panel.alerts_view.isVisible()

    qrun(rt.engine.publish(template_from_dict(FLOW)))
    runs = [qrun(rt.start_run("Flow", {"plate": f"P{i}"}, who="ann")) for i in range(3)]
    qtbot.waitUntil(lambda: "3 created" in panel.kpi["jobs"].context.full_text())
    assert _value(panel, "jobs") == "0", "jobs today: completed today"
    assert _value(panel, "pending") in ("3", "2", "1", "0")
    qrun(clock.run_until(lambda: not any(rt.run_is_active(r) for r in runs)))

    # the fixed-rate refresh picks the new figures up by itself
    ticks = panel.ticks
    qtbot.waitUntil(lambda: _value(panel, "jobs") == "3")
    assert panel.ticks > ticks
    assert _value(panel, "failed") == "0" and panel.kpi["failed"].tone == "neutral"
    assert _value(panel, "success") == "100.0 %" and panel.kpi["success"].tone == "good"
    assert panel.kpi["success"].context.full_text() == "on target"
    assert _value(panel, "running") == "0" and _value(panel, "pending") == "0"
    kpis = rt.metrics.dashboard()
    assert kpis.average_execution_time > 0
    assert _value(panel, "average") != "—"
    legend = [text.text() for _mark, text in panel._legend_labels if text.isVisible()]
    assert "Complete 3" in legend
    activity = [line.text for line in panel.activity_model.lines()]
    for run_id in runs:
        assert any(t.startswith(run_id) and t.endswith("completed") for t in activity)
        assert any(t.startswith(run_id) and t.endswith("started") for t in activity)
    chips = {iid: text.full_text() for iid, (_mark, text) in panel._chips.items()}
    assert chips == {"Reader1": "Reader1 · Ready", "Reader2": "Reader2 · Ready",
                     "Arm": "Arm · Ready", "Sealer": "Sealer · Ready"}


@pytest.mark.parametrize("dashboard", ["heartbeat@Arm=missing"], indirect=True)
def test_alerts_rise_and_clear(dashboard, qtbot, qrun):
    rt, clock, panel = dashboard
    # an instrument that stops answering goes offline: a critical alert while it lasts
    qrun(clock.advance(45))
    qtbot.waitUntil(lambda: any(a.key == "offline:Arm" for a in panel.current_alerts))
    alert = next(a for a in panel.current_alerts if a.key == "offline:Arm")
    assert alert.severity == CRITICAL and "heartbeat stale" in alert.detail
    assert _value(panel, "instruments") == "3 / 4" and panel.kpi["instruments"].tone == "warn"
    assert "Arm · Offline" in {t.full_text() for _m, t in panel._chips.values()}
    assert any("Arm offline" in line.text for line in panel.activity_model.lines())
    # compact, the dashboard still says there are alerts (on the button that shows them)
    panel.set_expanded(False)
    assert not panel.details.isVisible() and panel.height() <= panel.compact_height()
    assert panel.expand_button.text().startswith("⚠ 1 alert")
    panel.expand_button.click()
    assert panel.expanded and panel.details.isVisible() and panel.expand_button.text() == "Less ▴"

    # taking the lost instrument out on purpose clears its alert
    qrun(rt.instrument_action("Arm", "disable", who="ann", reason="cable"))
    qtbot.waitUntil(lambda: "offline:Arm" not in {a.key for a in panel.current_alerts})
    assert panel.all_clear.isVisible()

    # orders that time out: one alert each; five failures out of five: error rate high
    qrun(rt.engine.publish(template_from_dict(SLOW_READ)))
    runs: list[str] = []
    for batch in ((0, 1), (2, 3), (4,)):  # one plate per reader at a time
        started = [qrun(rt.start_run("Hasty read", {"plate": f"T{i}"}, who="ann")) for i in batch]
        qrun(clock.run_until(lambda started=started: not any(rt.run_is_active(r) for r in started),
                             limit=600))
        runs += started
    qtbot.waitUntil(lambda: any(a.key == "error-rate" for a in panel.current_alerts))
    timeouts = [a for a in panel.current_alerts if a.key.startswith("timeout:")]
    steps = {rt.engine.get_instance(r)["steps"][0]["order_id"] for r in runs}
    assert {a.key for a in timeouts} == {f"timeout:{o}" for o in steps}, "one alert per timed-out step"
    assert all(a.severity == WARNING and "timed out after 10 s" in a.detail for a in timeouts)
    rate = next(a for a in panel.current_alerts if a.key == "error-rate")
    assert rate.title == "Error rate high: 100 %"
    # each failed run's failed step waits for a person (retry or accept it): an alert each, once
    # the dashboard has read what waits (about a second after the events: the test waited for
    # that by chance, and counted six alerts or eleven)
    failed_keys = {f"failed:{o}" for o in steps}
    qtbot.waitUntil(lambda: failed_keys <= {a.key for a in panel.current_alerts}, timeout=10_000)
    assert all(a.title.endswith(" failed") for a in panel.current_alerts if a.key in failed_keys)
    assert panel.alerts_model.rowCount() == len(panel.current_alerts) == 11
    assert panel.alerts_view.isVisible() and not panel.all_clear.isVisible()
    assert _value(panel, "failed") == "5" and panel.kpi["failed"].tone == "bad"
    assert _value(panel, "success") == "0.0 %" and panel.kpi["success"].tone == "bad"

    # the operator dismisses the timeouts; the condition stays
    assert panel.dismiss_button.isVisible()
    qtbot.mouseClick(panel.dismiss_button, Qt.MouseButton.LeftButton)
    assert {a.key for a in panel.current_alerts} == {"error-rate"} | failed_keys
    assert not panel.dismiss_button.isVisible()


def _view(iid, status, enabled=True):
    return InstrumentView(iid, iid, "Kind", status, "detail", (), enabled, True, False, (), 1, 1.0, 0.0, 0, 0)


def test_alert_rules():
    import numpy as np

    book = AlertBook(error_rate=0.2, min_decided=5, window_buckets=15)
    views = [_view("A", ModuleStatus.Offline), _view("B", ModuleStatus.Error),
             _view("C", ModuleStatus.Offline, enabled=False), _view("D", ModuleStatus.Ready)]
    alerts = book.evaluate(100.0, views)
    assert [a.key for a in alerts] == ["offline:A", "error:B"]
    assert all(a.severity == CRITICAL for a in alerts)
    # "since" stays while the condition holds and restarts after it cleared
    assert book.evaluate(200.0, views)[0].since == 100.0
    book.evaluate(300.0, views[1:])
    assert book.evaluate(400.0, views)[0].since == 400.0
    # error rate: only over the window, only with enough decided jobs
    failures = np.array([9.0] * 10 + [0.0] * 15)
    done = np.array([0.0] * 10 + [4.0] * 15)
    assert "error-rate" not in {a.key for a in book.evaluate(0.0, [], failures, done)}
    failures[-1] = 1.0
    done[-15:] = 0.0
    done[-3:] = 1.0
    assert "error-rate" not in {a.key for a in book.evaluate(0.0, [], failures, done)}, "5 decided needed"
    done[-5:] = 1.0
    assert "error-rate" not in {a.key for a in book.evaluate(0.0, [], failures, done)}, "1 of 6 is 17 %"
    failures[-2] = 1.0
    rate = {a.key: a for a in book.evaluate(0.0, [], failures, done)}["error-rate"]
    assert rate.title == "Error rate high: 29 %" and "2 of 7 jobs" in rate.detail
    # critical before warning, whatever their age
    alerts = book.evaluate(500.0, views, failures, done)
    assert [a.severity for a in alerts] == [CRITICAL, CRITICAL, WARNING]


def test_a_frame_of_thousands_of_run_changes_makes_only_the_activity_lines_the_list_keeps(qapp):
    """A bulk cancel sends thousands of run changes in one frame; each line drawn with its icon took
    most of the Dashboard's refresh (16 ms a refresh, loaded) while the list keeps 200."""
    made: list[str] = []
    events = [InstrumentStatusChanged(instrument_id="Arm", status=ModuleStatus.Offline, detail="cable")]
    events += [RunChanged(run_id=f"r{i}", template_name="Seal", template_version=1, status=RunStatus.CANCELLED)
               for i in range(5000)]
    events += [RunChanged(run_id="r-busy", template_name="Seal", template_version=1, status=RunStatus.RUNNING,
                          detail="step seal running"),  # not a line: only a run's start is
               InstrumentStatusChanged(instrument_id="Arm", status=ModuleStatus.Ready)]
    known: dict[str, ModuleStatus] = {}
    icons: list[str] = []
    original, original_icon = dashboard_module._activity_line, dashboard_module.status_icon
    dashboard_module._activity_line = lambda e, cache: made.append(e.run_id) or original(e, cache)
    dashboard_module.status_icon = lambda status: icons.append(status.name) or original_icon(status)
    try:
        lines = dashboard_module.activity_lines(events, known, 200)
    finally:
        dashboard_module._activity_line, dashboard_module.status_icon = original, original_icon
    assert len(lines) == 200 and len(made) == 199, "only the lines the list keeps are made"
    assert icons == ["Canceled"], "one icon for the frame's lines of one status"
    assert [line.text for line in lines[:2]] == ["r4801 Seal cancelled", "r4802 Seal cancelled"]
    assert lines[-1].text == "Arm back (Ready)" and known == {"Arm": ModuleStatus.Ready}
    everything = dashboard_module.activity_lines(events, {})
    assert len(everything) == 5002 and everything[0].text == "Arm offline — cable"


def test_events_are_sorted_out_as_they_come_and_what_waits_for_the_next_refresh_stays_bounded(dashboard, qrun):
    """Under a bulk action a second of events is thousands: the Dashboard sorted them all out at its
    next refresh (3-5 ms of one loop step, bench/gui.py) and kept every one until then, however
    long the operator looked at a past moment. Now each frame is sorted out as it comes and only
    the lines the activity list can show wait."""
    rt, clock, panel = dashboard
    limit = panel.activity_model.limit
    panel.show_moment(qrun(TimeMachine(rt.store).moment(clock.now())))  # refreshes show the past
    timed_out = StepChanged(run_id="r-slow", step_id="read", order_id="o-slow", status=StepStatus.FAILED,
                            detail="Timeout: no answer in 10 s")
    for frame in range(4):
        events = [RunChanged(run_id=f"r{frame}-{i}", template_name="Seal", template_version=1,
                             status=RunStatus.CANCELLED) for i in range(2500)]
        panel.bridge.events.emit(([timed_out] if frame == 0 else []) + events)
        panel.refresh()
        assert len(panel._pending) <= 2 * limit, "only what the activity list can show waits"
    panel.show_moment(None)
    panel.refresh()
    texts = [line.text for line in panel.activity_model.lines()]
    assert len(texts) == limit and texts[0] == "r3-2499 Seal cancelled" and texts[-1] == f"r3-{2500 - limit} Seal cancelled"
    assert any(a.title == "Order o-slow timed out" for a in panel.current_alerts), "noted while in the past"
