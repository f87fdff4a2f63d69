"""Time travel in the main window over a real runtime on a virtual clock: the bar's "go to"
field, slider and Now switch Robots and Dashboard to a past moment read only, with a banner, and
back; a period exports to CSV; screenshots at 1280x720 and 1920x1080 in light and dark."""

from __future__ import annotations

import csv

import pytest
from conftest import save_screenshot
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from console.app import settings_for
from console.main_window import MainWindow
from core.clock import VirtualClock
from core.inbox import NewItem, open_item_op
from core.orders import ModuleStatus
from core.runtime import Runtime
from core.templates import template_from_dict
from core.timetravel import META_KEY, TimeMachine
from core.workcell import parse_workcell
from panels.style import BUSY, instrument_state
from panels.timetravel import when

READ = {"name": "Read only", "inputs": [{"name": "plate", "type": "string"}],
        "definition": {"steps": [{"id": "read", "kind": "PlateReader.ReadPlate",
                                  "restrict_to": ["Reader1"], "module_restriction": "FullRestriction"}]}}


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    """A runtime with some history: a plate read (Reader1 busy for 60 s), an inbox item opened
    during it, a run cancelled by an operator; then the window."""
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1)
    qrun(rt.start(templates_dir=None))
    qrun(clock.settle())
    qrun(rt.engine.publish(template_from_dict(READ)))
    run_id = qrun(rt.start_run("Read only", {"plate": "P1"}, who="tester"))
    qrun(clock.advance(30))
    busy_at = clock.now()
    store.write_sync(open_item_op(NewItem(kind="prompt", title="Check the lid of P1"), busy_at))
    qrun(clock.run_until(lambda: not rt.run_is_active(run_id)))
    qrun(clock.advance(60))
    second = qrun(rt.start_run("Read only", {"plate": "P2"}, who="tester"))
    qrun(clock.advance(5))
    qrun(rt.cancel(second, who="tester", reason="wrong plate"))
    qrun(clock.advance(120))
    window = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    yield rt, clock, window, busy_at, run_id
    window.close()
    qrun(rt.close())


def _go(qtbot, window, text):
    loads = window.time_travel.loads
    window.time_bar.field.setText(text)
    qtbot.keyClick(window.time_bar.field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.time_travel.loads > loads, timeout=5000)


def _shots(qtbot, window, name):
    window.docks["Robots"].raise_()
    for theme in ("light", "dark"):
        window.set_theme(theme)
        for w, h in ((1280, 720), (1920, 1080)):
            window.resize(w, h)
            qtbot.wait(80)
            save_screenshot(window, f"{name}-{w}x{h}-{theme}")
    window.set_theme("light")


def test_go_to_a_past_moment_shows_robots_and_dashboard_read_only_then_now(lab, qtbot):
    rt, clock, window, busy_at, run_id = lab
    robots, dash, bar = window.robots, window.dashboard, window.time_bar
    assert bar.mode.text() == "LIVE" and not robots.past_banner.isVisible()
    assert rt.instruments()[0].status is ModuleStatus.Ready

    _go(qtbot, window, when(busy_at))  # the go-to field, as a person types it (to the second)
    moment = window.time_travel.moment
    assert moment is not None and abs(moment.at - busy_at) < 1.0
    assert robots.moment is moment and dash.moment is moment
    assert robots.past_banner.isVisible() and dash.past_banner.isVisible()
    assert when(moment.at) in robots.past_banner.text() and "read only" in robots.past_banner.text()
    assert bar.mode.text().startswith("PAST")
    reader = robots._views["Reader1"]
    assert instrument_state(reader) == BUSY and reader.running, "Reader1 was reading P1 then"
    assert robots.cards["Reader1"].health.full_text().startswith("Busy since ")
    step_order = reader.running[0]
    assert moment.status_of(step_order) is not None
    # the past is read only: no instrument action is offered
    robots.select("Reader1")
    assert not any(a.isEnabled() for a in robots.actions_by_key.values())
    assert dash.kpi["running"].value.text() != "—"
    assert dash.kpi["attention"].value.text() == "1"  # the inbox item open then
    assert [a.title for a in dash.current_alerts] == ["Check the lid of P1"]
    assert dash.activity_model.rowCount() > 0
    _shots(qtbot, window, "timetravel-past")

    # Now: live again, everywhere
    qtbot.mouseClick(bar.now_button, Qt.MouseButton.LeftButton)
    assert window.time_travel.moment is None and robots.moment is None and dash.moment is None
    assert not robots.past_banner.isVisible() and not dash.past_banner.isVisible()
    assert bar.mode.text() == "LIVE"
    assert instrument_state(robots._views["Reader1"]) != BUSY
    robots.select("Reader1")
    assert any(a.isEnabled() for a in robots.actions_by_key.values())
    _shots(qtbot, window, "timetravel-live")


def test_slider_moves_through_the_past_and_its_end_is_live(lab, qtbot):
    rt, clock, window, busy_at, _ = lab
    bar = window.time_bar
    loads = window.time_travel.loads
    bar.slider.setFocus()
    qtbot.keyClick(bar.slider, Qt.Key.Key_PageDown)  # a step back from now
    qtbot.waitUntil(lambda: window.time_travel.loads > loads, timeout=5000)
    first = window.time_travel.moment
    assert first is not None and first.at < clock.now()
    qtbot.keyClick(bar.slider, Qt.Key.Key_Home)  # the start of the log
    qtbot.waitUntil(lambda: window.time_travel.moment is not None and window.time_travel.moment.at < first.at,
                    timeout=5000)
    assert window.robots.moment is window.time_travel.moment
    qtbot.keyClick(bar.slider, Qt.Key.Key_End)
    qtbot.waitUntil(lambda: window.time_travel.live and window.robots.moment is None, timeout=5000)


def test_go_to_refuses_what_is_not_a_moment_and_names_the_field(lab, qtbot):
    _rt, _clock, window, _busy_at, _ = lab
    bar = window.time_bar
    window.activateWindow()
    bar.focus_action.trigger()  # Ctrl+G, Go > Go to a moment
    assert bar.field.hasFocus() or QApplication.focusWidget() is bar.field
    bar.field.setText("yesterday at tea")
    qtbot.keyClick(bar.field, Qt.Key.Key_Return)
    assert "go to" in bar.message.toolTip() and "not a date" in bar.message.text()
    assert window.time_travel.live and window.robots.moment is None


def test_export_a_period_from_the_bar(lab, qtbot, tmp_path):
    rt, clock, window, busy_at, run_id = lab
    _go(qtbot, window, when(clock.now() - 1))
    dialog = window.time_bar.open_export()
    start, end = dialog.period()
    assert end - start == pytest.approx(3601, abs=2)
    target = tmp_path / "period.csv"
    dialog.path_edit.setText(str(target))
    dialog.start_edit.setDateTime(dialog.start_edit.dateTime().addSecs(-86400))
    save_screenshot(dialog, "timetravel-export-dialog")
    dialog.accept()
    qtbot.waitUntil(lambda: window.time_bar.last_export is not None, timeout=5000)
    with open(target, newline="") as fh:
        rows = list(csv.DictReader(fh))
    kinds = {r["kind"] for r in rows}
    assert kinds == {"transition", "action"}
    assert any(r["kind"] == "action" and r["why_or_reason"] == "wrong plate" for r in rows)
    assert f"{window.time_bar.last_export.transitions:,} transitions" in window.time_bar.message.text()


def test_moments_are_read_off_the_loop_thread(lab, qtbot, monkeypatch):
    _rt, _clock, window, busy_at, _ = lab
    import threading

    seen = []
    original = TimeMachine._moment

    def spy(self, *args, **kwargs):
        seen.append(threading.current_thread() is threading.main_thread())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TimeMachine, "_moment", spy)
    _go(qtbot, window, when(busy_at))
    assert seen == [False]
    # the first visit to the past brings the snapshots up to date (off the loop too)
    refresh = window.time_travel._refresh
    assert refresh is not None
    qtbot.waitUntil(refresh.done, timeout=5000)
    store = window.runtime.store
    assert store.read_sync(lambda c: c.execute("SELECT 1 FROM meta WHERE key = ?", (META_KEY,)).fetchone())
