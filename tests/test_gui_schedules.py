"""Schedules panel over a real runtime and store on a virtual clock: the dialogs check what is
typed and name the field, the toolbar reaches the scheduler and the audit log, the calendar and
the blackout list follow."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from conftest import save_screenshot
from PySide6.QtCore import QDateTime, Qt, QTimeZone

from console.app import settings_for
from console.bridge import EventBridge
from console.main_window import MainWindow
from core.clock import VirtualClock
from core.runtime import Runtime
from core.schedules import Blackout, BlackoutPolicy, Frequency, Schedule
from core.templates import template_from_dict
from panels.schedules import ScheduleDialog, SchedulesPanel
from panels.theme import apply_theme

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_8 = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN).timestamp()
NOOP = {"name": "Nightly", "definition": {"steps": [{"id": "a", "kind": "noop"}]}}


@pytest.fixture
def world(store, data_dir, qtbot, qrun):
    clock = VirtualClock.for_store(store, start=MONDAY_8)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
    qrun(rt.start(templates_dir=None, schedules=True))
    qrun(rt.engine.publish(template_from_dict(NOOP)))
    qrun(rt.engine.publish(template_from_dict({**NOOP, "name": "Plate wash"})))
    bridge = EventBridge(rt.ledger.bus)
    panel = SchedulesPanel(rt, bridge, zone=BERLIN)
    qtbot.addWidget(panel)
    panel.resize(1280, 720)
    panel.show()
    yield rt, clock, panel
    panel.shutdown()
    panel.close()
    bridge.close()
    qrun(rt.close())


def _click(qtbot, panel, key):
    button = panel.toolbar.widgetForAction(panel.actions_by_key[key])
    assert button.isEnabled(), f"{key} is not offered"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _retype(qtbot, edit, text):
    edit.clear()
    qtbot.keyClicks(edit, text)


def _row_texts(panel):
    return [[panel.table.item(r, c).text() for c in range(panel.table.columnCount())]
            for r in range(panel.table.rowCount())]


def test_add_with_live_validation_naming_the_field(world, qtbot):
    rt, clock, panel = world
    assert panel.table.rowCount() == 0 and not panel.actions_by_key["edit"].isEnabled()
    _click(qtbot, panel, "add")
    dialog = panel.dialog
    assert isinstance(dialog, ScheduleDialog) and dialog.isVisible()
    dialog.frequency.setCurrentIndex(list(Frequency).index(Frequency.CRON))
    _retype(qtbot, dialog.cron_edit, "61 * * * *")
    assert "cron: '61 * * * *'" in dialog.problems.text() and "out of range" in dialog.problems.text()
    assert not dialog.ok_button.isEnabled()
    _retype(qtbot, dialog.cron_edit, "0 0 30 2 *")
    assert "cron: '0 0 30 2 *': never fires" in dialog.problems.text()
    _retype(qtbot, dialog.cron_edit, "0 9 * * 1-5")
    dialog.timezone.setCurrentText("Mars/Olympus")
    assert "timezone: unknown time zone 'Mars/Olympus'" in dialog.problems.text()
    dialog.timezone.setCurrentText("Europe/Berlin")
    _retype(qtbot, dialog.inputs, "[1, 2")
    assert dialog.problems.text().startswith("inputs: not JSON")
    _retype(qtbot, dialog.inputs, '{"plate_id": "P1"}')
    assert dialog.problems.text() == "" and dialog.ok_button.isEnabled()
    assert dialog.preview.text().startswith("Next runs: Mon 23 Nov 09:00 CET, Tue 24 Nov 09:00 CET")
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.table.rowCount() == 1)
    row = _row_texts(panel)[0]
    assert row[:6] == ["Nightly", "cron 0 9 * * 1-5", "Europe/Berlin", "Mon 23 Nov 09:00 CET", "Run once", "active"]
    assert panel.message.text() == "add schedule: done"
    assert [a.action for a in rt.audit()][-1] == "add schedule"
    assert panel.calendar.runs_per_day() == [1, 1, 1, 1, 1, 0, 0]  # Mon..Fri


def test_each_frequency_names_its_at_field(world, qtbot):
    _, _, panel = world
    _click(qtbot, panel, "add")
    dialog = panel.dialog
    for frequency, bad in ((Frequency.DAILY, "25:00"), (Frequency.WEEKLY, "someday 09:00"),
                           (Frequency.MONTHLY, "32 09:00"), (Frequency.HOURLY, ":75"),
                           (Frequency.ONCE, "tomorrow")):
        dialog.frequency.setCurrentIndex(list(Frequency).index(frequency))
        _retype(qtbot, dialog.at_edit, bad)
        assert dialog.problems.text().startswith("at: "), (frequency, dialog.problems.text())
        assert not dialog.ok_button.isEnabled()
    dialog.reject()


def test_pause_resume_edit_and_remove_from_the_toolbar(world, qtbot, qrun):
    rt, clock, panel = world
    s = qrun(rt.schedules.add(Schedule("Nightly", Frequency.DAILY, at="07:30", timezone="Europe/Berlin")))
    panel.tick()  # the refresh timer's path: read on a worker thread, shown when done
    qtbot.waitUntil(lambda: panel.table.rowCount() == 1)
    assert panel.select(s.id)
    assert panel.calendar.runs_per_day() == [0, 1, 1, 1, 1, 1, 1]  # today's 07:30 has passed
    _click(qtbot, panel, "pause")
    qtbot.waitUntil(lambda: _row_texts(panel)[0][5] == "paused")
    assert panel.actions_by_key["pause"].text() == "Resume" and sum(panel.calendar.runs_per_day()) == 0
    _click(qtbot, panel, "pause")
    qtbot.waitUntil(lambda: _row_texts(panel)[0][5] == "active")

    _click(qtbot, panel, "edit")
    dialog = panel.dialog
    assert dialog.at_edit.text() == "07:30" and dialog.ok_button.text() == "Save"
    dialog.frequency.setCurrentIndex(list(Frequency).index(Frequency.WEEKLY))
    _retype(qtbot, dialog.at_edit, "wed 18:00")
    dialog.missed.setCurrentIndex(2)
    assert dialog.missed_cap.isEnabled()
    dialog.missed_cap.setValue(3)
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _row_texts(panel)[0][1] == "weekly at wed 18:00")
    assert _row_texts(panel)[0][3:5] == ["Wed 25 Nov 18:00 CET", "Run all (≤ 3)"]
    assert rt.schedules.get(s.id).missed_cap == 3

    _click(qtbot, panel, "remove")
    qtbot.waitUntil(lambda: panel.table.rowCount() == 0)
    assert [a.action for a in rt.audit(s.id)] == ["add schedule", "pause schedule", "resume schedule",
                                                  "edit schedule", "remove schedule"]


def test_blackout_dialog_names_the_field_and_moves_planned_runs(world, qtbot, qrun):
    rt, clock, panel = world
    qrun(rt.schedules.add(Schedule("Nightly", Frequency.HOURLY, at=":00", timezone="Europe/Berlin")))
    panel.refresh()
    before = panel.calendar.runs_per_day()
    _click(qtbot, panel, "blackout")
    dialog = panel.dialog
    zone = QTimeZone(b"Europe/Berlin")
    dialog.start.setDateTime(QDateTime.fromSecsSinceEpoch(int(MONDAY_8 + 4 * 3600 + 1800), zone))  # 12:30
    dialog.end.setDateTime(QDateTime.fromSecsSinceEpoch(int(MONDAY_8 + 3600), zone))
    assert dialog.problems.text().startswith("end: the window must end after it starts")
    assert not dialog.ok_button.isEnabled()
    dialog.end.setDateTime(QDateTime.fromSecsSinceEpoch(int(MONDAY_8 + 7 * 3600 + 900), zone))  # 15:15
    dialog.reason.setText("deck maintenance")
    assert dialog.ok_button.isEnabled()
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.blackout_list.count() == 1)
    assert "move runs to the end — deck maintenance" in panel.blackout_list.item(0).text()
    # 13:00, 14:00, 15:00 become one run at 15:15
    assert panel.calendar.runs_per_day()[0] == before[0] - 2
    moved = [datetime.fromtimestamp(t, BERLIN).strftime("%H:%M") for _, t, m in panel.calendar.occurrences if m]
    assert moved == ["15:15"]
    assert "blackout until Mon 15:15: deck maintenance" in panel.calendar.tooltip_at(
        panel.calendar.GUTTER + 5, panel.calendar.HEADER + (14 / 24) * (panel.calendar.height() - panel.calendar.HEADER - 4))
    panel.blackout_list.setCurrentRow(0)
    _click(qtbot, panel, "unblackout")
    qtbot.waitUntil(lambda: panel.blackout_list.count() == 0)
    assert panel.calendar.runs_per_day() == before


def test_screenshots_light_and_dark(world, qtbot, qrun, qapp):
    rt, clock, panel = world
    for s in (Schedule("Nightly", Frequency.CRON, cron="0 9 * * 1-5", timezone="Europe/Berlin"),
              Schedule("Plate wash", Frequency.HOURLY, at=":30", timezone="Europe/Berlin"),
              Schedule("Nightly", Frequency.WEEKLY, at="sat 22:00", timezone="America/New_York")):
        qrun(rt.schedules.add(s))
    day = 86400
    qrun(rt.schedules.add_blackout(Blackout(MONDAY_8 + day + 3600, MONDAY_8 + day + 6 * 3600,
                                            BlackoutPolicy.MOVE, "liquid handler service")))
    qrun(rt.schedules.add_blackout(Blackout(MONDAY_8 + 3 * day - 8 * 3600, MONDAY_8 + 3 * day - 3 * 3600,
                                            BlackoutPolicy.SKIP, "night: nobody to unload")))
    try:
        for name in ("light", "dark"):
            apply_theme(qapp, name)
            panel.refresh()
            qtbot.wait(30)
            assert save_screenshot(panel, f"schedules-{name}").stat().st_size > 20_000
    finally:
        apply_theme(qapp, "light")


def test_the_main_window_has_a_schedules_dock(store, data_dir, qtbot, qloop):
    runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    window = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(window)
    assert window.docks["Schedules"].widget().widget() is window.schedules  # in a scroll area
    assert window.docks["Schedules"].toggleViewAction() in window.menuBar().actions()[1].menu().actions()
    window.show()
    window.docks["Schedules"].raise_()
    qtbot.waitUntil(lambda: window.schedules.calendar.start > 0)  # read on a worker thread, then shown
    assert window.schedules.split.orientation() == Qt.Orientation.Vertical  # a narrow dock: one above the other
    save_screenshot(window, "main-window-schedules")
    window.close()
    assert window.schedules.is_shut_down


def test_the_forecast_section_lists_runs_in_flight_with_their_eta(store, data_dir, qtbot, qrun):
    from core.durations import format_duration
    from core.forecast import Forecast
    from core.workcell import parse_workcell

    cell = parse_workcell("""
name: panel cell
instruments:
  - {id: Sealer, kind: Sealer, driver: simulated, options: {connect_time: 0s},
     capabilities: {Sealer.Seal: {duration: 20s, jitter: 2s}}}
""")
    clock = VirtualClock.for_store(store, start=MONDAY_8)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=cell, seed=1, metrics=False)
    qrun(rt.start(templates_dir=None))
    qrun(rt.engine.publish(template_from_dict({"name": "Seal", "definition": {"steps": [
        {"id": "seal", "kind": "Sealer.Seal"}]}})))
    runs = [qrun(rt.start_run("Seal", allow_duplicate=True)) for _ in range(3)]
    forecast = Forecast(rt, samples=8)
    bridge = EventBridge(rt.ledger.bus)
    panel = SchedulesPanel(rt, bridge, zone=BERLIN)
    qtbot.addWidget(panel)
    panel.resize(1280, 720)
    panel.show()
    assert not panel.forecast_table.isVisible()
    panel.set_forecast(forecast)
    result = qrun(forecast.refresh())
    assert panel.forecast_table.isVisible() and panel.forecast_table.rowCount() == 3
    assert [panel.forecast_table.item(r, 0).text() for r in range(3)] == runs  # by expected completion
    last = result.runs[runs[-1]]
    assert panel.forecast_table.item(2, 2).text() == (
        f"{datetime.fromtimestamp(last.p50, BERLIN):%H:%M:%S} (in {format_duration(round(last.p50 - MONDAY_8))})")
    assert panel.forecast_label.text().startswith("Forecast: 3 runs in flight, 8 samples")
    save_screenshot(panel, "schedules-forecast")
    panel.shutdown()
    assert forecast._listeners == []
    panel.close()
    bridge.close()
    qrun(forecast.close())
    qrun(rt.close())
