"""Jobs as runs that expand to their steps, driven through the panel's widgets: steps hidden
at first, a click on a run's ▸ expands it, keys and buttons expand and collapse, a step can be
selected and acted on, a run acted on from the tree, "Needs attention" listed first and finding
a paused run through its step; screenshots at 1280x720 and 1920x1080, light and dark."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QApplication
from test_gui_jobs import Lab

from core.orders import OrderStatus
from panels.dialogs import ReasonDialog
from panels.help import collect_shortcuts
from panels.jobs_filter import NEEDS_ATTENTION
from panels.jobs_model import TREE_ROLE
from panels.theme import apply_theme


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun)
    yield made
    made.close()


def shown(model) -> list[str]:
    return [model.order_id(r) for r in range(model.rowCount())]


def click_mark(lab: Lab, order_id: str) -> None:
    view = lab.jobs.view
    rect = view.visualRect(lab.jobs.model.index(lab.jobs.model.row_of(order_id), 0))
    lab.qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.left() + 6, rect.center().y()))


def test_runs_expand_collapse_select_a_step_and_act_on_a_run(lab: Lab) -> None:
    runs = lab.start_runs(3)
    lab.advance(1)
    assert lab.load() == 9  # 3 runs x (run + 2 steps)
    panel, model = lab.jobs, lab.jobs.model
    assert sorted(shown(model)) == sorted(runs), "steps are hidden at first"
    assert lab.jobs.summary.text() == "9 orders"

    # a click on a run's ▸ shows its steps under it, in template order; a second click hides them
    steps = [s["order_id"] for s in lab.rt.run_of(runs[1])["steps"]]
    click_mark(lab, runs[1])
    at = model.row_of(runs[1])
    assert shown(model)[at:at + 3] == [runs[1], *steps]
    assert model.index(at, 0).data() == f"▾ {runs[1]}"
    # branch lines join the steps to their run: through the first step, ending at the last
    assert [model.index(r, 0).data(TREE_ROLE) for r in range(at, at + 3)] == [None, "mid", "last"]
    assert all(model.index(at + 1, c).data(TREE_ROLE) is None for c in range(1, model.columnCount()))
    view = lab.jobs.view
    image = view.viewport().grab().toImage()
    background = image.pixelColor(view.visualRect(model.index(at, 0)).left() + 9,
                                  view.visualRect(model.index(at, 0)).center().y() + 3)
    for r, reaches_bottom in ((at + 1, True), (at + 2, False)):
        rect = view.visualRect(model.index(r, 0))
        x, mid = rect.left() + 9, rect.center().y()
        assert image.pixelColor(x, rect.top() + 2) != background, f"row {r}: no line from above"
        assert image.pixelColor(x + 5, mid) != background, f"row {r}: no line to the id"
        assert (image.pixelColor(x, rect.bottom() - 2) != background) is reaches_bottom, f"row {r}: line below"
    click_mark(lab, runs[1])
    assert sorted(shown(model)) == sorted(runs)

    # keys: "+" expands the current run, "-" collapses it; Ctrl+Shift+Right / Left: every run
    panel.select_order(runs[0])
    panel.view.setFocus()
    panel.activateWindow()
    lab.qtbot.keyClick(panel.view, Qt.Key.Key_Plus)
    assert model.rowCount() == 5 and model.is_expanded(runs[0])
    lab.qtbot.keyClick(panel.view, Qt.Key.Key_Minus)
    assert model.rowCount() == 3 and panel.current_id() == runs[0]
    lab.qtbot.keyClick(panel.view, Qt.Key.Key_Right,
                       Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert model.rowCount() == 9
    lab.qtbot.keyClick(panel.view, Qt.Key.Key_Left,
                       Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert model.rowCount() == 3
    assert {"expand", "collapse", "expand_all", "collapse_all"} <= set(panel.shortcuts)
    listed = {s.what: s.keys for s in collect_shortcuts(lab.window, {"Jobs": panel})}
    assert listed["Expand all runs"] == "Ctrl+Shift+Right" and listed["Collapse run"] == "-"

    # selecting a step (as Detail or search would) expands its run; the selection stays on the
    # step while other runs expand and collapse
    step = lab.rt.run_of(runs[2])["steps"][1]["order_id"]
    assert panel.select_order(step)
    assert panel.current_id() == step and panel.selected_ids() == [step]
    click_mark(lab, runs[0])
    assert panel.current_id() == step and panel.selected_ids() == [step]
    panel.collapse_button.click()  # the hidden step's run is selected in its place
    assert panel.selected_ids() == [runs[2]] and panel.current_id() == runs[2]
    panel.expand_button.click()
    assert panel.selected_ids() == [runs[2]]

    # the sort applies to runs; their steps follow them
    panel.view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    order = shown(model)
    assert [o for o in order if o in runs] == sorted(runs, key=lambda r: (len(r), r))
    for run in runs:
        at = order.index(run)
        assert order[at + 1:at + 3] == [s["order_id"] for s in lab.rt.run_of(run)["steps"]]

    # act on a run from the tree: Cancel, with its reason
    panel.collapse_button.click()
    panel.select_order(runs[2])
    task = panel.trigger("cancel")
    dialog = lab.dialog(ReasonDialog)
    dialog.reason_edit.setText("wrong plate")
    dialog.accept()
    lab.wait_task(task)
    lab.until(lambda: lab.rt.order(runs[2]).status is OrderStatus.Canceled)
    assert panel.current_id() == runs[2]
    assert [a for a in lab.rt.audit(runs[2]) if a.action == "cancel run"]


def test_needs_attention_is_listed_first_and_shows_a_paused_run(lab: Lab) -> None:
    runs = lab.start_runs(3)
    lab.advance(1)
    lab.load()
    panel, model, bar = lab.jobs, lab.jobs.model, lab.jobs.filter_bar
    assert bar.view_combo.itemData(0) == "Needs attention"
    lab.qrun(lab.rt.pause(runs[1], who="operator"))
    lab.sync()
    bar.view_combo.setCurrentIndex(0)
    bar.view_combo.activated.emit(0)
    assert model.filter.statuses == NEEDS_ATTENTION
    assert runs[1] in shown(model)
    assert all(model.get(o)[4] in NEEDS_ATTENTION or any(
        model.get(s)[4] in NEEDS_ATTENTION for s in model.ix.children.get(o, ())) for o in shown(model))
    panel.expand_button.click()
    assert model.rowCount() > len([o for o in shown(model) if model.get(o)[1] is None])


def test_tree_screenshots(lab: Lab) -> None:
    runs = lab.start_runs(8)
    lab.advance(70)
    lab.load()
    panel = lab.jobs
    panel.model.set_expanded(runs[2], True)
    panel.model.set_expanded(runs[5], True)
    panel.select_order(lab.rt.run_of(runs[2])["steps"][0]["order_id"])
    app = QApplication.instance()
    try:
        for width, height in ((1280, 720), (1920, 1080)):
            lab.window.resize(width, height)
            for theme in ("light", "dark"):
                apply_theme(app, theme)
                QApplication.processEvents()
                save_screenshot(lab.window, f"jobs-tree-{width}x{height}-{theme}")
    finally:
        apply_theme(app, "light")
