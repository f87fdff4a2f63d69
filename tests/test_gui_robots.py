"""Robots panel over a real runtime (store, dispatcher, simulated instruments) on a virtual clock:
operator actions through the panel's own buttons, menu and reason dialog reach the dispatcher,
the store and the audit log; the cards and the table follow."""

from __future__ import annotations

import sqlite3

import pytest
from dispatchkit import WORKCELL
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication, QMenu

from console.bridge import EventBridge
from core.clock import VirtualClock
from core.runtime import Runtime
from core.templates import template_from_dict
from core.workcell import parse_workcell
from panels.robots import ACTION_BY_KEY, COLUMNS, TICK_MS, RobotsPanel

SEAL = {"name": "Seal only", "inputs": [{"name": "plate", "type": "string"}],
        "definition": {"steps": [{"id": "seal", "kind": "Sealer.Seal"}]}}
READ = {"name": "Read only", "inputs": [{"name": "plate", "type": "string"}],
        "definition": {"steps": [{"id": "read", "kind": "PlateReader.ReadPlate",
                                  "restrict_to": ["Reader1"], "module_restriction": "FullRestriction"}]}}


@pytest.fixture
def cell(store, data_dir, qtbot, qrun):
    """A started runtime on the four-instrument test workcell, its clock, and a shown panel."""
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1)
    qrun(rt.start(templates_dir=None))
    qrun(clock.settle())
    bridge = EventBridge(rt.ledger.bus)
    panel = RobotsPanel(rt, bridge)
    qtbot.addWidget(panel)
    panel.resize(560, 760)
    panel.show()
    yield rt, clock, bridge, panel
    panel.shutdown()
    assert not panel.refresh_timer.isActive()
    panel.close()
    bridge.close()
    qrun(rt.close())


def _view(rt, iid):
    return {v.id: v for v in rt.instruments()}[iid]


def _instrument_row(store, iid):
    def read(c: sqlite3.Connection):
        return c.execute("SELECT enabled, in_service, updated_by FROM instruments WHERE id = ?",
                         (iid,)).fetchone()

    return store.read_sync(read)


def _click_action(qtbot, panel, key):
    button = panel.toolbar.widgetForAction(panel.actions_by_key[key])
    assert button.isEnabled(), f"{key} is not offered"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def _give_reason(qtbot, panel, reason):
    dialog = panel.reason_dialog
    assert dialog is not None and dialog.isVisible()
    assert not dialog.ok_button.isEnabled(), "no reason, no OK"
    qtbot.keyClicks(dialog.reason_edit, reason)
    assert dialog.ok_button.isEnabled()
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)


def test_take_out_of_service_from_the_card_menu_then_release(cell, qtbot, qrun, store):
    rt, clock, bridge, panel = cell
    assert set(panel.cards) == {"Reader1", "Reader2", "Arm", "Sealer"}
    assert panel.summary.text().startswith("4 instruments: 4 ready")
    qtbot.mouseClick(panel.cards["Sealer"], Qt.MouseButton.LeftButton)
    assert panel.selected_id == "Sealer"
    assert panel.actions_by_key["out_of_service"].isEnabled()
    assert not panel.actions_by_key["release"].isEnabled()

    # the card's context menu offers the actions; choose "Out of service…"
    qtbot.mouseClick(panel.cards["Sealer"], Qt.MouseButton.RightButton, pos=QPoint(20, 20))
    menu = panel.context_menu
    assert isinstance(menu, QMenu) and menu.isVisible()
    action = panel.actions_by_key["out_of_service"]
    qtbot.mouseClick(menu, Qt.MouseButton.LeftButton, pos=menu.actionGeometry(action).center())
    _give_reason(qtbot, panel, "cleaning the heat plate")

    qtbot.waitUntil(lambda: not _view(rt, "Sealer").in_service)
    # dispatcher: a seal step waits and says why
    qrun(rt.engine.publish(template_from_dict(SEAL)))
    run_id = qrun(rt.start_run("Seal only", {"plate": "P1"}, who="tester"))
    qrun(clock.advance(60))
    seal_order = rt.engine.get_instance(run_id)["steps"][0]["order_id"]
    assert rt.engine.get_instance(run_id)["steps"][0]["status"] == "queued"
    assert "Sealer is out of service (manual work)" in rt.why_waiting(seal_order)
    # store and audit
    enabled, in_service, who = _instrument_row(store, "Sealer")
    assert (enabled, in_service) == (1, 0) and who
    entries = [e for e in rt.audit("Sealer") if e.action == "take out of service"]
    assert len(entries) == 1 and entries[0].reason == "cleaning the heat plate"
    # the panel shows it: card state, who and why, feedback line, actions offered
    qtbot.waitUntil(lambda: panel.cards["Sealer"].state.text() == "Out of service")
    qtbot.waitUntil(lambda: "cleaning the heat plate" in panel.cards["Sealer"].state_detail.full_text())
    assert "taken out of service" in panel.feedback.text()
    assert panel.actions_by_key["release"].isEnabled()
    assert not panel.actions_by_key["out_of_service"].isEnabled()

    # release from the toolbar (no reason needed): the waiting step runs
    _click_action(qtbot, panel, "release")
    assert panel.reason_dialog is None
    qtbot.waitUntil(lambda: _view(rt, "Sealer").in_service)
    qrun(clock.run_until(lambda: not rt.run_is_active(run_id)))
    assert rt.engine.get_instance(run_id)["status"] == "completed"
    assert [e.action for e in rt.audit("Sealer")][-1] == "release to service"
    assert _instrument_row(store, "Sealer")[:2] == (1, 1)
    qtbot.waitUntil(lambda: panel.cards["Sealer"].counts.text().startswith("1 done"))


def test_disable_and_enable_from_the_table(cell, qtbot, qrun, store):
    rt, clock, bridge, panel = cell
    qtbot.mouseClick(panel.view_bar.widgetForAction(panel.table_action), Qt.MouseButton.LeftButton)
    assert panel.stack.currentWidget() is panel.table
    row = panel.model.row_of("Reader1")
    rect = panel.table.visualRect(panel.model.index(row, 0))
    qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert panel.selected_id == "Reader1"

    # a cancelled reason dialog changes nothing
    _click_action(qtbot, panel, "disable")
    panel.reason_dialog.reject()
    QApplication.processEvents()
    assert _view(rt, "Reader1").enabled
    assert not [e for e in rt.audit("Reader1") if e.action == "disable instrument"]

    _click_action(qtbot, panel, "disable")
    _give_reason(qtbot, panel, "lamp replacement")
    qtbot.waitUntil(lambda: not _view(rt, "Reader1").enabled)
    assert rt.dispatcher.instruments["Reader1"].enabled is False
    # dispatch stops at once (memory); the row and its audit entry follow in one commit
    qtbot.waitUntil(lambda: (_instrument_row(store, "Reader1") or (1,))[0] == 0)
    disable = [e for e in rt.audit("Reader1") if e.action == "disable instrument"]
    assert len(disable) == 1 and disable[0].reason == "lamp replacement"
    state_col = COLUMNS.index("State")
    qtbot.waitUntil(lambda: panel.model.index(row, state_col).data() == "Disabled")
    assert panel.model.index(row, state_col).data(Qt.ItemDataRole.DecorationRole) is not None
    assert panel.actions_by_key["enable"].isEnabled() and not panel.actions_by_key["disable"].isEnabled()

    # a read restricted to the disabled reader waits for it, and says why
    qrun(rt.engine.publish(template_from_dict(READ)))
    run_id = qrun(rt.start_run("Read only", {"plate": "P2"}, who="tester"))
    qrun(clock.advance(120))
    step = rt.engine.get_instance(run_id)["steps"][0]
    assert step["status"] == "queued"
    assert "Reader1 is disabled" in rt.why_waiting(step["order_id"])
    qrun(rt.cancel(run_id, who="tester", reason="not today"))

    _click_action(qtbot, panel, "enable")
    assert panel.reason_dialog is None
    qtbot.waitUntil(lambda: _view(rt, "Reader1").enabled)
    # enabled in memory at once; the row and its audit entry follow in one commit
    qtbot.waitUntil(lambda: [e.action for e in rt.audit("Reader1")][-1:] == ["enable instrument"])
    assert _instrument_row(store, "Reader1")[0] == 1
    qtbot.waitUntil(lambda: panel.model.index(row, state_col).data() == "Ready")
    assert panel.actions_by_key["disable"].isEnabled() and not panel.actions_by_key["enable"].isEnabled()


def test_current_order_and_its_progress_follow_at_the_fixed_rate(cell, qtbot, qrun):
    rt, clock, bridge, panel = cell
    assert panel.refresh_timer.isActive() and panel.refresh_timer.interval() == TICK_MS
    qrun(rt.engine.publish(template_from_dict(READ)))
    run_id = qrun(rt.start_run("Read only", {"plate": "P3"}, who="tester"))
    qrun(clock.advance(31))  # half of the 60 s plate read
    order = rt.engine.get_instance(run_id)["steps"][0]["order_id"]
    card = panel.cards["Reader1"]
    qtbot.waitUntil(lambda: card.state.text() == "Busy" and card.progress.isVisible())
    assert order in card.state_detail.full_text()
    assert 300 <= card.progress.value() <= 700
    assert panel.model.index(panel.model.row_of("Reader1"), COLUMNS.index("Current order")).data() == order
    # hiding the panel stops its timer; showing it again restarts it
    panel.hide()
    assert not panel.refresh_timer.isActive()
    panel.show()
    assert panel.refresh_timer.isActive()
    qrun(clock.run_until(lambda: not rt.run_is_active(run_id)))
    qtbot.waitUntil(lambda: card.state.text() == "Ready" and not card.progress.isVisible())


def test_a_refused_action_is_reported(cell, qtbot, qrun):
    rt, clock, bridge, panel = cell
    qrun(rt.engine.publish(template_from_dict(READ)))
    qrun(rt.start_run("Read only", {"plate": "P4"}, who="tester"))
    qrun(clock.advance(5))
    panel.select("Reader1")
    qtbot.waitUntil(lambda: not panel.actions_by_key["reconnect"].isEnabled())  # busy: not offered
    # the core refuses what the panel would not offer; the panel says so
    results = []
    panel.action_finished.connect(lambda *args: results.append(args))
    panel._start("Reader1", ACTION_BY_KEY["reconnect"], None)
    qtbot.waitUntil(lambda: bool(results))
    assert results[0][:3] == ("Reader1", "reconnect", False)
    assert "running" in panel.feedback.text()
