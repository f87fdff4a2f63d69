"""Orders claimed from Data Services in the Jobs and Detail panels.

The embedded Data Services stores a client's order; the link claims it (``_adopt``: the order
goes Running and the console makes a run whose parent is that order). That run is a run like
any other (bold, its steps under it, in "runs only", acted on in bulk), and the claimed order
is actionable: what is done to it is done to its run.
"""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from test_gui_jobs import FLOW, Lab, menu_action

from core.dataservices.link import DataServicesLink
from core.engine import RunStatus
from core.orders import Order, OrderStatus
from panels.dialogs import BulkDialog, ReasonDialog
from panels.jobs_filter import OrderFilter
from panels.theme import apply_theme


def screenshots(window, name: str) -> None:
    """``name``-light.png and ``name``-dark.png of ``window`` at 1280x720."""
    app = QApplication.instance()
    window.resize(1280, 720)
    try:
        for theme in ("light", "dark"):
            apply_theme(app, theme)
            QApplication.processEvents()
            save_screenshot(window, f"{name}-{theme}")
    finally:
        apply_theme(app, "light")


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun, detail=True)
    yield made
    made.close()


def claim(lab: Lab, plate: str) -> tuple[str, str]:
    """A Data Services client's workflow order, claimed by the console as the link does it.
    Returns (the client's order, the run made for it)."""
    order = lab.qrun(lab.rt.ledger.create_order(
        Order(templateName=FLOW["name"], createdBy="biosero",
              inputParameters=[{"name": "plate", "value": plate, "valueType": "String"}]),
        who="Data Services"))
    link = DataServicesLink(lab.rt)
    lab.qrun(link._adopt(order, "workflow"))
    run_id = link._watch and next(iter(link._watch))
    lab.sync()
    return order.identifier, run_id


def test_claimed_orders_and_their_runs_are_actionable(lab):
    own = lab.start_runs(1)
    lab.load()
    first, first_run = claim(lab, "DS1")  # claimed while the console shows the table
    lab.advance(1)
    panel, model = lab.jobs, lab.jobs.model

    # the run made for the order is a run: bold, top level, its steps under it
    assert lab.rt.order(first_run).parentIdentifier == first
    row = model.row_of(first_run)
    assert model.get(first_run)[1] is None
    assert model.index(row, 0).data() == f"▸ {first_run}", "a run, collapsed: its steps under it"
    font = model.index(row, 0).data(Qt.ItemDataRole.FontRole)
    assert font is not None and font.bold(), "the run made for a claimed order is shown as a run"
    steps = {s["order_id"] for s in lab.rt.run_of(first_run)["steps"]}
    assert {model.get(s)[1] for s in steps} == {first_run}

    # the claimed order's menu offers Cancel, Pause; Cancel… acts on its run
    for key in ("cancel", "pause"):
        item = menu_action(panel, first, key)
        assert item is not None and item.isEnabled(), f"{key} is offered on a claimed order"
    assert panel.bulk_buttons["cancel"].isEnabled()
    menu_action(panel, first, "cancel").trigger()
    dialog = lab.dialog(ReasonDialog)
    dialog.reason_edit.setText("client withdrew it")
    dialog.ok_button.click()
    lab.qtbot.waitUntil(lambda: panel.last_feedback.level != "busy", timeout=10_000)
    lab.sync()
    assert panel.last_feedback.level == "ok", panel.last_feedback.message
    assert lab.rt.engine.run_status(first_run) is RunStatus.CANCELLED
    assert [a.reason for a in lab.rt.audit(first_run) if a.action == "cancel run"] == ["client withdrew it"]

    # a console restarted on that store shows them the same way (read from the store)
    second, second_run = claim(lab, "DS2")
    lab.load()
    assert model.get(second_run)[1] is None and model.get(first_run)[1] is None

    # Detail of the claimed order: its run's steps, the run's actions
    panel.select_order(second)
    lab.qtbot.waitUntil(lambda: lab.detail.data is not None and lab.detail.data.order_id == second,
                        timeout=5000)
    assert lab.detail.data.engine and lab.detail.data.run_id == second_run
    assert lab.detail.buttons["cancel"].isEnabled() and lab.detail.buttons["pause"].isEnabled()
    screenshots(lab.window, "jobs-claimed-order")

    # "runs only" → select all → Cancel reaches the run made for the claimed order too
    panel.filter_bar.set_filter(OrderFilter(kind="runs", statuses=frozenset({OrderStatus.Running,
                                                                          OrderStatus.Scheduled,
                                                                          OrderStatus.Created})))
    shown = set(model.visible_ids())
    assert second_run in shown
    panel.select_all_matching()
    task = panel.trigger("cancel")
    bulk = lab.dialog(BulkDialog)
    bulk.reason_edit.setText("end of shift")
    bulk.go_button.click()
    lab.wait_task(task)
    results = {bulk.results.result(i).order_id: bulk.results.result(i) for i in range(bulk.results.rowCount())}
    assert results[second_run].ok, results  # (the first claimed order's run was canceled above)
    bulk.accept()
    assert lab.rt.engine.run_status(second_run) is RunStatus.CANCELLED
    assert results[own[0]].ok
