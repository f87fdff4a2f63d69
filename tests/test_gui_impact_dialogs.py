"""The impact preview in the action dialogs, over a real runtime (store, dispatcher, simulated
instruments, virtual clock): cancel, retry, pause, reprioritise, recover, skip, bulk cancel/retry
and taking an instrument out of service each show, before the operator confirms, what the action
will touch — counts and the first runs and steps, and with a forecast how far each affected
run's ETA moves — and nothing changes until they confirm."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QWidget

from console.bridge import EventBridge
from core.clock import VirtualClock
from core.engine import RunStatus
from core.forecast import Forecast
from core.impact import EtaMoves
from core.orders import OrderStatus
from core.runtime import Runtime
from core.templates import template_from_dict
from core.workcell import parse_workcell
from panels.actions import OrderActions
from panels.dialogs import ImpactView, ReasonDialog
from panels.robots import RobotsPanel
from panels.theme import apply_theme

PREP = {"name": "Prep", "definition": {"steps": [
    {"id": "read", "kind": "PlateReader.ReadPlate", "estimated_duration": 60},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"], "estimated_duration": 20},
    {"id": "move", "kind": "RobotArm.MovePlate", "depends_on": ["seal"], "estimated_duration": 10}]}}
FRAGILE = {"name": "Fragile", "definition": {"failure_policy": "pause", "steps": [
    {"id": "seal", "kind": "Sealer.Seal", "retry_policy": {"max_attempts": 1}, "estimated_duration": 20},
    {"id": "move", "kind": "RobotArm.MovePlate", "depends_on": ["seal"], "estimated_duration": 10},
    {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["move"], "estimated_duration": 60}]}}


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1,
                       faults="fail_next@Sealer=1")
    qrun(rt.start(templates_dir=None))
    for t in (PREP, FRAGILE):
        qrun(rt.engine.publish(template_from_dict(t)))
    host = QWidget()
    host.resize(1280, 720)
    qtbot.addWidget(host)
    host.show()
    actions = OrderActions(rt, host, who=lambda: "ann")
    opened: list = []
    actions.dialog_opened.connect(opened.append)
    yield rt, clock, actions, opened
    actions.shutdown()
    qrun(rt.close())


def _dialog(qtbot, opened):
    qtbot.waitUntil(lambda: bool(opened), timeout=5000)
    return opened.pop()


def _computed(qtbot, view: ImpactView):
    qtbot.waitUntil(lambda: view.impact is not None and not view.busy, timeout=10_000)
    return view.impact


def _shots(dialog, name):
    app = QApplication.instance()
    for theme in ("light", "dark"):
        apply_theme(app, theme)
        app.processEvents()
        save_screenshot(dialog, f"{name}-{theme}")
    apply_theme(app, "light")


def test_cancel_dialog_previews_the_stopped_and_canceled_steps_before_anything_changes(lab, qtbot, qrun):
    rt, clock, actions, opened = lab
    run_id = qrun(rt.start_run("Prep", who="bob", allow_duplicate=True))
    qrun(clock.advance(1))
    actions.request("cancel", run_id)
    dialog = _dialog(qtbot, opened)
    impact = _computed(qtbot, dialog.impact)
    assert impact.runs == 1 and impact.steps == {"stopped": 1, "canceled": 2}
    assert dict(impact.instruments_freed) in ({"Reader1": 1}, {"Reader2": 1})
    text = dialog.impact.summary.text()
    assert "1 run" in text and "2 steps canceled" in text and "1 step stopped" in text and "frees Reader" in text
    assert "−90\u00a0s instrument time" in text
    details = dialog.impact.details.text()
    assert f"{run_id} · <b>read</b> (running) → stopped" in details and "<b>move</b> (pending) → canceled" in details
    assert rt.engine.run_status(run_id) is RunStatus.RUNNING  # a preview changes nothing
    _shots(dialog, "dialog-cancel-impact")
    dialog.reject()


def test_reprioritise_recover_and_skip_dialogs_follow_the_chosen_step(lab, qtbot, qrun):
    rt, clock, actions, opened = lab
    paused = qrun(rt.start_run("Fragile", who="bob"))
    qrun(clock.run_until(lambda: rt.engine.run_status(paused) is RunStatus.PAUSED))
    queued = qrun(rt.start_run("Prep", who="bob", allow_duplicate=True))
    qrun(clock.settle())

    actions.request("reprioritise", queued)
    dialog = _dialog(qtbot, opened)
    impact = _computed(qtbot, dialog.impact)
    assert impact.steps["reprioritised"] == 3 and "3 steps reprioritised" in dialog.impact.summary.text()
    dialog.reject()
    qtbot.waitUntil(lambda: actions.dialog is None)

    actions.request("recover", paused)
    dialog = _dialog(qtbot, opened)
    impact = _computed(qtbot, dialog.impact)
    assert dialog.combo.currentData() == "seal" and impact.steps == {"rerun": 3}
    assert "+90\u00a0s instrument time" in dialog.impact.summary.text()
    dialog.combo.setCurrentIndex(dialog.combo.findData("move"))
    qtbot.waitUntil(lambda: dialog.impact.impact is not None and dialog.impact.impact.steps == {"rerun": 2},
                    timeout=10_000)
    assert "<b>seal</b>" not in dialog.impact.details.text()
    _shots(dialog, "dialog-recover-impact")
    dialog.reject()
    qtbot.waitUntil(lambda: actions.dialog is None)

    actions.request("skip", paused)
    dialog = _dialog(qtbot, opened)
    impact = _computed(qtbot, dialog.impact)
    assert impact.steps["skipped"] == 1 and impact.first_steps[0][1:] == ("seal", "failed", "skipped")
    assert "1 step skipped" in dialog.impact.summary.text()
    dialog.reject()
    assert rt.engine.run_status(paused) is RunStatus.PAUSED


def test_bulk_cancel_previews_every_order_off_the_loop_with_the_first_items(lab, qtbot, qrun):
    rt, clock, actions, opened = lab
    runs = [qrun(rt.start_run("Prep", who="bob", allow_duplicate=True)) for _ in range(40)]
    qrun(clock.advance(1))
    done = qrun(rt.start_run("Prep", who="bob", allow_duplicate=True))
    qrun(rt.cancel(done, who="bob", reason="test"))
    actions.request_bulk("cancel", [*runs, done])
    dialog = _dialog(qtbot, opened)
    impact = _computed(qtbot, dialog.impact)
    assert impact.runs == 40 and impact.refused_count == 1 and impact.refused[0] == (done, "run is cancelled")
    assert impact.steps == {"stopped": 40, "canceled": 80}  # queued or running: stopped
    assert dict(impact.instruments_freed) == {"Reader1": 1, "Reader2": 1}
    text, details = dialog.impact.summary.text(), dialog.impact.details.text()
    assert "<b>40 runs</b>" in text and "80 steps canceled" in text and "1 not applicable" in text
    assert "Runs:" not in details  # the dialog names them above
    assert details.startswith(f"▶ {runs[0]} · <b>read</b> (running) → stopped<br>○ {runs[0]} · <b>seal</b>")  # in the template's order
    assert "… and 114 more steps" in details and f"✕ {done}: run is cancelled" in details
    dialog.resize(760, 520)
    _shots(dialog, "dialog-bulk-cancel-impact")
    dialog.reject()
    assert all(rt.engine.run_status(r) is RunStatus.RUNNING for r in runs)


def test_out_of_service_dialog_previews_blocked_and_delayed_steps(lab, store, qtbot, qrun):
    rt, clock, actions, _opened = lab
    for _ in range(3):
        qrun(rt.start_run("Prep", who="bob", allow_duplicate=True))
    qrun(clock.advance(1))
    bridge = EventBridge(rt.ledger.bus)
    panel = RobotsPanel(rt, bridge)
    qtbot.addWidget(panel)
    panel.resize(900, 700)
    panel.show()
    panel.refresh()
    qtbot.waitUntil(lambda: "Sealer" in panel._views)
    panel.select("Sealer")
    panel.request_action("out_of_service")
    dialog = panel.reason_dialog
    view = dialog.findChild(ImpactView)
    impact = _computed(qtbot, view)
    assert impact.instruments_blocked == ["Sealer"] and impact.runs == 3
    assert impact.steps == {"blocked: only Sealer can Sealer.Seal": 3}
    assert "blocks Sealer" in view.summary.text() and "Runs: " in view.details.text()
    _shots(dialog, "dialog-out-of-service-impact")
    dialog.reject()
    panel.shutdown()
    panel.close()
    bridge.close()


def _moves(qtbot, view: ImpactView):
    qtbot.waitUntil(lambda: view.moves is not None and not view.etas_busy, timeout=20_000)
    return view.moves


def test_retry_asks_first_with_its_preview_and_enter_confirms(lab, qtbot, qrun):
    rt, clock, actions, opened = lab
    paused = qrun(rt.start_run("Fragile", who="bob"))
    qrun(clock.run_until(lambda: rt.engine.run_status(paused) is RunStatus.PAUSED))
    actions.request("retry", paused)
    dialog = _dialog(qtbot, opened)
    assert isinstance(dialog, ReasonDialog) and dialog.ok_button.text() == "Retry"
    assert dialog.ok_button.isEnabled(), "the reason is optional: one key confirms"
    impact = _computed(qtbot, dialog.impact)
    assert impact.steps == {"retried": 1} and impact.first_steps[0][1:] == ("seal", "failed", "retried")
    assert "+20\u00a0s instrument time" in dialog.impact.summary.text(), "no forecast: instrument time"
    assert not dialog.impact.etas.isVisible()
    assert rt.engine.run_status(paused) is RunStatus.PAUSED  # nothing yet
    _shots(dialog, "dialog-retry-impact")
    dialog.reason_edit.setFocus()
    qtbot.keyClick(dialog.reason_edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: bool(actions.history) and actions.history[-1].level != "busy", timeout=10_000)
    assert actions.history[-1].level == "ok", actions.history[-1].message
    qrun(clock.run_until(lambda: rt.engine.run_status(paused) is RunStatus.COMPLETED))
    seal = next(s["order_id"] for s in rt.run_of(paused)["steps"] if s["id"] == "seal")
    retry = [a for a in rt.audit(seal) if a.action == "retry step"]
    assert [(a.who, a.reason) for a in retry] == [("ann", None)], [(a.action, a.who) for a in rt.audit(seal)]


def test_pause_previews_moved_etas_from_the_forecast_and_back_changes_nothing(lab, qtbot, qrun):
    rt, clock, actions, opened = lab
    runs = [qrun(rt.start_run("Prep", who="bob", allow_duplicate=True)) for _ in range(6)]
    qrun(clock.advance(1))
    forecast = Forecast(rt, samples=2, debounce=3600)
    qrun(forecast.refresh())
    actions.forecast = forecast
    try:
        target = runs[0]
        actions.request("pause", target)
        dialog = _dialog(qtbot, opened)
        impact = _computed(qtbot, dialog.impact)
        assert impact.runs == 1 and impact.steps["held"] == 2
        moves = _moves(qtbot, dialog.impact)
        first = moves.moves[0]
        assert first.run_id == target and first.target and first.after is None
        assert first.after_note == "paused: waits for an operator to resume it"
        behind = [m for m in moves.moves if not m.target]
        assert behind and all(m.delta is not None and m.delta < 0 for m in behind), "the others finish sooner"
        etas = dialog.impact.etas.text()
        assert f"{target}: ETA " in etas and "→ none (paused" in etas and "(−" in etas
        assert "instrument time" not in dialog.impact.summary.text(), "moved ETAs replace the instrument time"
        _shots(dialog, "dialog-pause-impact-etas")
        dialog.back_button.click()
        qtbot.waitUntil(lambda: actions.dialog is None)
        assert rt.order(target).status is not OrderStatus.Paused

        actions.request("pause", target)
        dialog = _dialog(qtbot, opened)
        dialog.reason_edit.setText("check the plate")
        qtbot.keyClick(dialog.reason_edit, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: actions.history[-1].level != "busy", timeout=10_000)
        assert actions.history[-1].level == "ok", actions.history[-1].message
        assert [a.reason for a in rt.audit(target) if a.action == "pause"] == ["check the plate"]
        assert rt.order(target).status is OrderStatus.Paused
    finally:
        qrun(forecast.close())


def test_cancel_and_bulk_cancel_show_moved_etas_per_run(lab, qtbot, qrun):
    rt, clock, actions, opened = lab
    runs = [qrun(rt.start_run("Prep", who="bob", allow_duplicate=True)) for _ in range(8)]
    qrun(clock.advance(1))
    forecast = Forecast(rt, samples=2, debounce=3600)
    qrun(forecast.refresh())
    actions.forecast = forecast
    try:
        actions.request("cancel", runs[0])
        dialog = _dialog(qtbot, opened)
        moves = _moves(qtbot, dialog.impact)
        assert moves.moves[0].run_id == runs[0] and moves.moves[0].after_note == "canceled"
        assert moves.count > 1 and all(m.delta < 0 for m in moves.moves[1:])
        dialog.reject()
        qtbot.waitUntil(lambda: actions.dialog is None)

        actions.request_bulk("cancel", runs[:4])
        dialog = _dialog(qtbot, opened)
        moves = _moves(qtbot, dialog.impact)
        assert {m.run_id for m in moves.moves[:4]} == set(runs[:4]), "the runs acted on come first"
        assert {m.run_id for m in moves.moves if m.target} == set(runs[:4])
        assert {m.run_id for m in moves.moves if not m.target} == set(runs[4:])
        assert "… and 2 more runs" in dialog.impact.etas.text()
        assert "instrument time" not in dialog.impact.summary.text()
        dialog.resize(760, 560)
        _shots(dialog, "dialog-bulk-cancel-impact-etas")
        # too many unfinished runs to play forward: said, and the instrument time comes back
        dialog.impact.show_moves(EtaMoves(forecast_runs=12_000, skipped="finish times are not worked out "
                                          "over 12,000 unfinished runs"))
        assert "the instrument time is shown instead" in dialog.impact.etas.text()
        assert "instrument time" in dialog.impact.summary.text()
        dialog.reject()
        assert all(rt.engine.run_status(r) is RunStatus.RUNNING for r in runs)
    finally:
        qrun(forecast.close())
