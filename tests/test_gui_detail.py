"""The Detail panel over a real runtime (simulated workcell, virtual clock, real store): what it
shows for runs and steps, how it follows the engine live, and its Cancel / Retry / Recover / Skip
buttons — checked in the core, the transition log and the audit log."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from PySide6.QtCore import QPoint, Qt
from test_gui_jobs import Lab

from core.engine import RunStatus
from core.orders import OrderStatus
from core.users import os_user
from panels.detail_steps import AXIS, LANE
from panels.dialogs import ReasonDialog, StepChoiceDialog
from panels.jobs import STATUS_COLUMN
from panels.style import display_color


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun, detail=True)
    yield made
    made.close()


@pytest.fixture
def faulty_lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun, faults="fail_next@Sealer=1,retryable=false", detail=True)
    yield made
    made.close()


def shown(lab: Lab, order_id: str) -> None:
    """Select ``order_id`` in the Jobs table and wait until the Detail panel shows it."""
    assert lab.jobs.select_order(order_id)
    lab.qtbot.waitUntil(lambda: lab.detail.data is not None and lab.detail.data.order_id == order_id,
                        timeout=5000)


def settled(lab: Lab) -> None:
    """Let the Detail panel's refresh (triggered by the bridge's events) finish."""
    lab.sync()
    before = lab.detail.loads
    lab.qtbot.waitUntil(lambda: lab.detail._task is None or lab.detail._task.done(), timeout=5000)
    if lab.detail.loads == before:
        task = lab.detail.refresh()
        lab.qtbot.waitUntil(task.done, timeout=5000)


def dialog_of(lab: Lab, kind: type):
    lab.qtbot.waitUntil(lambda: isinstance(lab.detail.order_actions.dialog, kind), timeout=5000)
    return lab.detail.order_actions.dialog


def test_a_run_in_detail_follows_the_engine(lab):
    runs = lab.start_runs(4)
    lab.load()
    lab.advance(1)
    detail = lab.detail
    shown(lab, runs[0])
    data = detail.data
    assert data.engine and data.is_run
    assert detail.title.text() == f"{runs[0]}  ·  Plate Read v1"
    assert [s.key for s in detail.timeline.steps] == ["read", "seal"]
    assert detail.timeline.steps[1].depends_on == ["read"]
    assert detail.timeline.steps[0].state == "running"
    assert detail.inputs.column_texts(0) == ["plate"] and detail.inputs.column_texts(1) == ["P000"]
    changes = detail.history.column_texts(2)
    assert "created as Created" in changes and "Created → Running" in changes
    assert detail.buttons["cancel"].isEnabled() and not detail.buttons["retry"].isEnabled()

    # a queued run says why it waits
    shown(lab, runs[3])
    assert detail.why_box.isVisible()
    assert "busy" in detail.why.text() or "behind" in detail.why.text()

    # live: the engine moves on, the panel follows without being asked
    shown(lab, runs[0])
    lab.advance(65)
    settled(lab)
    states = {s.key: s.state for s in detail.timeline.steps}
    assert states["read"] == "completed" and states["seal"] in ("queued", "running")
    assert "step read completed" in detail.log.toPlainText()
    lab.until(lambda: not lab.rt.run_is_active(runs[0]))
    settled(lab)
    assert detail.fields["Status"].text().endswith("Complete</b>")
    outputs = detail.outputs.column_texts(0)
    assert any(name.startswith("read.") for name in outputs) and any(n.startswith("seal.") for n in outputs)
    assert not detail.why_box.isVisible()


def test_recover_from_step_with_the_detail_button(lab):
    runs = lab.start_runs(1)
    lab.load()
    lab.until(lambda: not lab.rt.run_is_active(runs[0]))
    detail = lab.detail
    shown(lab, runs[0])
    assert detail.buttons["recover"].isEnabled() and not detail.buttons["cancel"].isEnabled()
    detail.buttons["recover"].click()
    assert detail.status_line.text().startswith("↻") and "answer the dialog" in detail.status_line.text()
    dialog: StepChoiceDialog = dialog_of(lab, StepChoiceDialog)
    assert [dialog.combo.itemData(i) for i in range(dialog.combo.count())] == ["read", "seal"]
    dialog.combo.setCurrentIndex(dialog.combo.findData("read"))
    assert not dialog.ok_button.isEnabled()
    dialog.reason_edit.setText("reader lid was open")
    dialog.ok_button.click()
    lab.qtbot.waitUntil(lambda: detail.last_feedback.level != "busy", timeout=10_000)
    assert detail.last_feedback.level == "ok", detail.last_feedback.message
    assert "recovering from read" in detail.last_feedback.message

    entry = [a for a in lab.rt.audit(runs[0]) if a.action == "recover"]
    assert len(entry) == 1 and entry[0].who == os_user() and entry[0].reason == "reader lid was open"
    assert entry[0].details == {"from_step": "read", "attempt": 1}
    assert lab.rt.engine.run_status(runs[0]) is RunStatus.RUNNING
    assert lab.rt.order(runs[0]).status is OrderStatus.Running
    lab.until(lambda: not lab.rt.run_is_active(runs[0]))
    settled(lab)
    assert lab.rt.order(runs[0]).status is OrderStatus.Complete
    assert detail.fields["Recoveries"].text() == "1 of 3 allowed"
    read_order = lab.rt.run_of(runs[0])["steps"][0]["order_id"]
    # the read step ran twice: created, then complete, reset, complete again
    assert [t.to_status for t in lab.rt.history(read_order)].count(OrderStatus.Complete) == 2


def test_skip_a_failed_step_with_outputs(faulty_lab):
    lab = faulty_lab
    runs = lab.start_runs(1)
    lab.load()
    lab.until(lambda: not lab.rt.run_is_active(runs[0]))
    assert lab.rt.order(runs[0]).status is OrderStatus.Error
    detail = lab.detail
    shown(lab, runs[0])
    assert "seal" in detail.subtitle.text() or "failed" in detail.subtitle.text()
    assert detail.timeline.steps[1].status is OrderStatus.Error and detail.timeline.steps[1].error
    assert detail.buttons["retry"].isEnabled() and detail.buttons["skip"].isEnabled()
    detail.buttons["skip"].click()
    dialog: StepChoiceDialog = dialog_of(lab, StepChoiceDialog)
    assert dialog.combo.currentData() == "seal", "the failed step is offered first"
    dialog.outputs_edit.setPlainText("sealed = true\nfilm = manual")
    dialog.reason_edit.setText("sealed by hand")
    save_screenshot(dialog, "dialog-skip-step")
    dialog.ok_button.click()
    lab.qtbot.waitUntil(lambda: detail.last_feedback.level != "busy", timeout=10_000)
    assert detail.last_feedback.level == "ok", detail.last_feedback.message
    lab.until(lambda: not lab.rt.run_is_active(runs[0]))
    seal = lab.rt.run_of(runs[0])["steps"][1]
    assert seal["status"] == "skipped" and seal["outputs"] == {"sealed": True, "film": "manual"}
    entry = [a for a in lab.rt.audit(seal["order_id"]) if a.action == "skip step"][-1]
    assert entry.who == os_user() and entry.reason == "sealed by hand"
    assert lab.rt.order(runs[0]).status is OrderStatus.Complete

    # the skipped step is shown as Skipped (its own state), not Canceled, and offers no Retry/Recover
    assert lab.rt.order(seal["order_id"]).status is OrderStatus.Canceled, "the wire status stays"
    lab.sync()
    jobs = lab.jobs
    jobs.model.set_expanded(runs[0], True)  # the step shows under its run
    lab.qtbot.waitUntil(lambda: jobs.model.row_of(seal["order_id"]) is not None, timeout=5000)
    cell = jobs.model.index(jobs.model.row_of(seal["order_id"]), STATUS_COLUMN)
    lab.qtbot.waitUntil(lambda: cell.data() == "Skipped", timeout=5000)
    assert cell.data(Qt.ItemDataRole.ForegroundRole) == display_color("Skipped") != display_color("Canceled")
    shown(lab, seal["order_id"])
    menu = jobs.build_menu(jobs.model.row_of(seal["order_id"]))
    offered = {a.objectName() for a in menu.actions() if a.objectName()}
    assert not offered & {"retry", "recover", "cancel", "skip"}, offered
    assert "Skipped" in [a.text() for a in menu.actions() if a.isSeparator()][0]
    settled(lab)
    assert ">Skipped</b>" in detail.subtitle.text() and "Canceled</b>" not in detail.subtitle.text()
    assert ">Skipped</b>" in detail.fields["Status"].text()
    assert not detail.buttons["retry"].isEnabled() and not detail.buttons["recover"].isEnabled()
    save_screenshot(detail, "detail-skipped-step")

    # a store opened afresh (the console restarted) still knows which steps were skipped
    assert seal["order_id"] in lab.rt.store.step_orders_with_status("skipped")


def test_cancel_and_retry_buttons_of_a_step(lab):
    runs = lab.start_runs(3)
    lab.load()
    lab.advance(1)
    detail = lab.detail
    waiting = lab.rt.run_of(runs[2])["steps"][0]["order_id"]  # queued behind the others
    shown(lab, waiting)
    assert "Step <b>read</b> of run" in detail.subtitle.text()
    assert detail.buttons["cancel"].isEnabled() and not detail.buttons["pause"].isVisible()
    detail.buttons["cancel"].click()
    dialog: ReasonDialog = dialog_of(lab, ReasonDialog)
    dialog.reason_edit.setText("wrong plate")
    dialog.accept()
    lab.qtbot.waitUntil(lambda: detail.last_feedback.level != "busy", timeout=10_000)
    settled(lab)
    assert lab.rt.order(waiting).status is OrderStatus.Canceled
    cancel = [a for a in lab.rt.audit(waiting) if a.action == "cancel step"]
    assert cancel and cancel[0].who == os_user() and cancel[0].reason == "wrong plate"
    assert detail.buttons["retry"].isEnabled()
    assert detail.history.rows[0][2].text.endswith("→ Canceled")
    # who and why of the operator's action are in the Audit tab
    audit = {(r[1].text, r[2].text, r[4].text) for r in detail.audit.rows}
    assert (os_user(), "cancel step", "wrong plate") in audit

    detail.buttons["retry"].click()  # a confirmation with its preview; the reason is optional
    lab.qtbot.waitUntil(lambda: isinstance(detail.order_actions.dialog, ReasonDialog), timeout=5000)
    dialog = detail.order_actions.dialog
    assert dialog.ok_button.text() == "Retry" and dialog.ok_button.isEnabled()
    lab.qtbot.keyClick(dialog.reason_edit, Qt.Key.Key_Return)
    lab.qtbot.waitUntil(lambda: detail.last_feedback.level != "busy", timeout=10_000)
    assert detail.last_feedback.level == "ok", detail.last_feedback.message
    lab.until(lambda: not lab.rt.run_is_active(runs[2]))
    assert lab.rt.order(runs[2]).status is OrderStatus.Complete
    retry = [a for a in lab.rt.audit(waiting) if a.action == "retry step"]
    assert retry and retry[0].who == os_user()


def test_navigation_between_run_and_steps(lab):
    runs = lab.start_runs(1)
    lab.load()
    lab.until(lambda: not lab.rt.run_is_active(runs[0]))
    detail = lab.detail
    shown(lab, runs[0])
    seal = lab.rt.run_of(runs[0])["steps"][1]["order_id"]
    targets = []
    detail.navigate.connect(targets.append)
    lab.qtbot.mouseClick(detail.timeline, Qt.MouseButton.LeftButton, pos=QPoint(40, AXIS + LANE + LANE // 2))
    lab.qtbot.waitUntil(lambda: detail.data is not None and detail.data.order_id == seal, timeout=5000)
    assert targets == [seal]
    assert detail.timeline.highlight == seal
    detail.subtitle.linkActivated.emit(runs[0])
    lab.qtbot.waitUntil(lambda: detail.data is not None and detail.data.order_id == runs[0], timeout=5000)


def test_screenshot_of_the_detail_panel(faulty_lab):
    lab = faulty_lab
    lab.window.setSizes([820, 620])
    runs = lab.start_runs(5)
    lab.load()
    lab.advance(30)
    lab.advance(60)
    lab.advance(12)
    run = runs[0]
    shown(lab, run)
    lab.detail.tabs.setCurrentIndex(2)
    lab.qtbot.wait(30)
    save_screenshot(lab.detail, "detail-panel-failed-run")
    shown(lab, runs[2])
    lab.detail.tabs.setCurrentIndex(0)
    lab.qtbot.wait(30)
    save_screenshot(lab.detail, "detail-panel-running-run")


def test_main_window_shows_the_selected_order_in_detail(store, data_dir, qtbot, qrun):
    from PySide6.QtCore import QTimer

    from console.app import settings_for
    from console.main_window import MainWindow
    from core import demo
    from core.runtime import Runtime

    demo.generate(store, 300)
    runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    window = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    qrun(window.load_orders())
    jobs, detail = window.jobs, window.detail
    order_id = jobs.model.order_id(5)
    jobs.select_order(order_id)
    qtbot.waitUntil(lambda: detail.data is not None and detail.data.order_id == order_id, timeout=5000)
    assert detail.title.text().startswith(order_id)
    window.close()
    running = [t for panel in (jobs, detail) for t in panel.findChildren(QTimer) if t.isActive()]
    assert not running, "the window's close shuts the panels down"


def test_while_an_order_loads_or_after_a_missing_one_the_panel_never_says_something_stale(lab):
    """Selecting an order said "Select an order in the Jobs table" until its details were read
    (the screenshots caught it at 1280x720), and after an order that could not be read, clearing
    the selection kept saying that order's error."""
    (run_id,) = lab.start_runs(1)
    lab.load()
    detail = lab.detail
    assert detail.empty.text() == "Select an order in the Jobs table to see its details."
    task = detail.show_order(run_id)
    assert detail.pages.currentIndex() == 0 and detail.empty.text() == f"Loading {run_id}…"
    lab.qtbot.waitUntil(task.done, timeout=5000)
    assert detail.pages.currentIndex() == 1 and detail.data.order_id == run_id
    task = detail.show_order("Order_99999")
    lab.qtbot.waitUntil(task.done, timeout=5000)
    assert detail.pages.currentIndex() == 0 and detail.empty.text().startswith("Order_99999: ")
    detail.show_order(None)
    assert detail.empty.text() == "Select an order in the Jobs table to see its details."
