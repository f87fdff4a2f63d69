"""Inbox panel over a real runtime (store, dispatcher, simulated instruments, virtual clock): every
kind of item is answered through the panel's own form and button, and the run shows the effect."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from console.bridge import EventBridge
from core.clock import VirtualClock
from core.engine import RunStatus
from core.forecast import Forecast
from core.inbox import Inbox
from core.playbook import Playbook
from core.runtime import Runtime
from core.templates import template_from_dict
from core.workcell import parse_workcell
from panels.inbox import InboxPanel
from panels.theme import apply_theme

ASK = {"name": "Ask volume", "definition": {"steps": [
    {"id": "ask", "kind": "prompt", "parameters": {"message": "Volume to read?", "fields": [
        {"name": "volume", "type": "number", "unit": "µL", "min": 1, "max": 200},
        {"name": "plate", "type": "barcode"},
        {"name": "mode", "type": "choice", "choices": ["fast", "careful"]}]}},
    {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["ask"],
     "input_mapping": {"plate": "step_outputs.ask.plate"}}]}}
SEAL = {"name": "Seal fragile", "definition": {"failure_policy": "pause", "steps": [
    {"id": "seal", "kind": "Sealer.Seal", "retry_policy": {"max_attempts": 1}},
    {"id": "move", "kind": "RobotArm.MovePlate", "depends_on": ["seal"]}]}}
APPROVE = {"name": "Release batch", "definition": {"steps": [
    {"id": "approve", "kind": "prompt", "parameters": {"message": "Release batch 7?",
                                                       "approval": {"two_people": True}}},
    {"id": "move", "kind": "RobotArm.MovePlate", "depends_on": ["approve"]}]}}


@pytest.fixture
def cell(store, data_dir, qtbot, qrun):
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1,
                       faults="fail_next@Sealer=1")
    qrun(rt.start(templates_dir=None))
    for t in (ASK, SEAL, APPROVE):
        qrun(rt.engine.publish(template_from_dict(t)))
    Playbook.attach(rt.engine)
    inbox = Inbox.of(rt)
    bridge = EventBridge(rt.ledger.bus)
    panel = InboxPanel(rt, bridge)
    panel.who = "ann"
    qtbot.addWidget(panel)
    panel.resize(1100, 520)
    panel.show()
    yield rt, clock, bridge, panel, inbox
    panel.shutdown()
    panel.close()
    bridge.close()
    qrun(rt.close())


def _wait_items(qtbot, qrun, clock, bridge, panel, count):
    qrun(clock.settle())
    bridge.flush()
    qtbot.waitUntil(lambda: len(panel.model.rows) == count and not panel._refreshing, timeout=5000)


def _answer(qtbot, panel, item_id, values):
    assert panel.select_item(item_id)
    for name, value in values.items():
        panel.form.set_value(name, value)
    with qtbot.waitSignal(panel.answered, timeout=5000) as signal:
        qtbot.mouseClick(panel.form.answer_button, Qt.MouseButton.LeftButton)
    return signal.args


def test_prompt_answered_in_the_panel_feeds_the_next_step(cell, qtbot, qrun):
    rt, clock, bridge, panel, _inbox = cell
    run_id = qrun(rt.start_run("Ask volume", who="bob"))
    _wait_items(qtbot, qrun, clock, bridge, panel, 1)
    item = panel.model.rows[0]
    assert panel.model.data(panel.model.index(0, 0)) == "Prompt"
    assert panel.model.data(panel.model.index(0, 4)) == f"run {run_id}, step ask"
    # a value out of range is refused in the form, naming the field, and nothing is sent
    assert panel.select_item(item.id)
    panel.form.set_value("volume", "500")
    panel.form.set_value("plate", "PL-7")
    panel.form.set_value("mode", "careful")
    qtbot.mouseClick(panel.form.answer_button, Qt.MouseButton.LeftButton)
    assert "above the maximum 200 µL" in panel.form.error.text()
    assert panel.form.error_field == "volume"
    assert panel.inbox.item(item.id).state == "open"
    ok, _ = _answer(qtbot, panel, item.id, {"volume": "150"})[1:]
    assert ok
    qrun(clock.run_until(lambda: rt.engine.run_status(run_id) is RunStatus.COMPLETED))
    steps = {s["id"]: s for s in rt.engine.get_instance(run_id)["steps"]}
    assert steps["ask"]["outputs"] == {"volume": 150.0, "plate": "PL-7", "mode": "careful"}
    assert rt.store.get_order(steps["read"]["order_id"]).get_input_parameter_value("plate") == "PL-7"
    _wait_items(qtbot, qrun, clock, bridge, panel, 0)


def test_paused_error_shows_its_impact_and_skip_with_outputs_lets_the_run_go_on(cell, qtbot, qrun):
    rt, clock, bridge, panel, _inbox = cell
    run_id = qrun(rt.start_run("Seal fragile", who="bob"))
    qrun(clock.run_until(lambda: rt.engine.run_status(run_id) is RunStatus.PAUSED))
    _wait_items(qtbot, qrun, clock, bridge, panel, 1)
    item = panel.model.rows[0]
    assert item.kind == "error" and panel.model.data(panel.model.index(0, 0)) == "Paused error"
    assert panel.select_item(item.id)
    panel.form.set_value("choice", "cancel")
    qtbot.waitUntil(lambda: "Cancel will touch: 1 run" in panel.form.consequence.text(), timeout=5000)
    assert "1 step canceled" in panel.form.consequence.text()
    assert "ETAs" not in panel.form.consequence.text()  # no forecast: counts only
    # with a forecast the decision's preview says how the run's finish time moves
    forecast = Forecast(rt, samples=2, debounce=3600)
    qrun(forecast.refresh())
    panel.forecast = forecast
    panel.form.set_value("choice", "retry")
    qtbot.waitUntil(lambda: "Retry will touch" in panel.form.consequence.text(), timeout=10_000)
    text = panel.form.consequence.text()
    assert f"ETAs: {run_id}: no ETA (paused: waits for an operator to resume it) → " in text
    save_screenshot(panel, "inbox-error-retry-etas")
    panel.forecast = None
    qrun(forecast.close())
    panel.form.set_value("choice", "skip")
    qtbot.waitUntil(lambda: "Skip will touch" in panel.form.consequence.text(), timeout=5000)
    ok = _answer(qtbot, panel, item.id, {"outputs": '{"sealed": false}', "reason": "sealed by hand"})[1]
    assert ok
    qrun(clock.run_until(lambda: rt.engine.run_status(run_id) is RunStatus.COMPLETED))
    steps = {s["id"]: s for s in rt.engine.get_instance(run_id)["steps"]}
    assert steps["seal"]["status"] == "skipped" and steps["seal"]["outputs"] == {"sealed": False}
    assert any(a.action == "skip step" and a.who == "ann" for a in rt.audit(steps["seal"]["order_id"]))


def test_approval_refuses_the_requester_then_a_second_person_approves(cell, qtbot, qrun):
    rt, clock, bridge, panel, _inbox = cell
    run_id = qrun(rt.start_run("Release batch", who="ann"))
    _wait_items(qtbot, qrun, clock, bridge, panel, 1)
    item = panel.model.rows[0]
    assert "requested by ann: a second person approves" in panel.form.details.text() or panel.select_item(item.id)
    ok, message = _answer(qtbot, panel, item.id, {"approved": "yes"})[1:]
    assert not ok and "ann requested this run and cannot also approve it" in message
    assert "cannot also approve" in panel.form.error.text()
    panel.who = "bob"
    ok = _answer(qtbot, panel, item.id, {"approved": "yes", "reason": "QC passed"})[1]
    assert ok
    qrun(clock.run_until(lambda: rt.engine.run_status(run_id) is RunStatus.COMPLETED))


def test_hands_in_the_cell_lock_stops_dispatch_until_released_in_the_panel(cell, qtbot, qrun):
    rt, clock, bridge, panel, inbox = cell
    qrun(inbox.lock(["Arm"], who="ann", reason="clearing a dropped plate"))
    run_id = qrun(rt.start_run("Release batch", who="carl"))
    _wait_items(qtbot, qrun, clock, bridge, panel, 2)
    approval = next(i for i in panel.model.rows if i.kind == "approval")
    lock = next(i for i in panel.model.rows if i.kind == "lock")
    assert inbox.locked_instruments() == {"Arm": "ann"}
    assert _answer(qtbot, panel, approval.id, {"approved": "yes"})[1]
    qrun(clock.advance(120))
    steps = {s["id"]: s for s in rt.engine.get_instance(run_id)["steps"]}
    assert steps["move"]["status"] == "queued"  # the arm is locked: nothing is dispatched to it
    assert _answer(qtbot, panel, lock.id, {"release": "yes"})[1]
    qrun(clock.run_until(lambda: rt.engine.run_status(run_id) is RunStatus.COMPLETED))
    assert any(a.action == "release lock" and a.who == "ann" for a in rt.audit())


def test_filter_and_screenshots_of_every_kind_light_and_dark(cell, qtbot, qrun):
    rt, clock, bridge, panel, inbox = cell
    qrun(rt.start_run("Ask volume", who="bob"))
    qrun(rt.start_run("Release batch", who="bob"))
    paused = qrun(rt.start_run("Seal fragile", who="bob"))
    qrun(clock.run_until(lambda: rt.engine.run_status(paused) is RunStatus.PAUSED))
    qrun(inbox.lock(["Reader2"], who="ann", reason="calibration"))
    _wait_items(qtbot, qrun, clock, bridge, panel, 4)
    qrun(clock.advance(1200))
    qrun(inbox.escalate())
    _wait_items(qtbot, qrun, clock, bridge, panel, 4)
    panel.search.setText("sealer")
    assert [i.kind for i in panel.model.rows] == ["error"]
    panel.search.setText("")
    panel.kind_box.setCurrentIndex(panel.kind_box.findData("approval"))
    assert [i.kind for i in panel.model.rows] == ["approval"]
    panel.kind_box.setCurrentIndex(0)
    error = next(i for i in panel.model.rows if i.kind == "error")
    panel.select_item(error.id)
    panel.form.set_value("choice", "retry")
    qtbot.waitUntil(lambda: "Retry will touch" in panel.form.consequence.text(), timeout=5000)
    panel.resize(1280, 720)
    app = QApplication.instance()
    for theme in ("light", "dark"):
        apply_theme(app, theme)
        app.processEvents()
        save_screenshot(panel, f"inbox-{theme}")
    apply_theme(app, "light")
