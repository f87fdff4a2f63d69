"""Dragging a queued run up or down the Jobs table, sorted by Priority, gives it the priority of
its new place through the runtime's reprioritise action (audited, shown in the table)."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QApplication
from test_gui_jobs import Lab

from core.users import os_user
from panels.jobs_filter import OrderFilter
from panels.jobs_model import PRIORITY_COLUMN, priority_for_drop


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun)
    yield made
    made.close()


def drop(panel, order_id: str, before_row: int) -> None:
    """Drop ``order_id``'s row on the table's viewport just above view row ``before_row`` (or
    below the last row), as the mouse would at the end of a drag."""
    view, model = panel.view, panel.model
    mime = model.mimeData([model.index(model.row_of(order_id), 0)])
    if before_row < model.rowCount():
        rect = view.visualRect(model.index(before_row, 1))
        pos = QPointF(rect.center().x(), rect.top() + 1)
    else:
        rect = view.visualRect(model.index(model.rowCount() - 1, 1))
        pos = QPointF(rect.center().x(), rect.bottom() + 6)
    move, left, none = Qt.DropAction.MoveAction, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    # the drag enters the table and moves to the place (Qt delivers a drop only to the widget
    # that accepted the drag), then the button is released there
    enter = QDragEnterEvent(pos.toPoint(), move, mime, left, none)
    assert QApplication.sendEvent(view.viewport(), enter) and enter.isAccepted()
    over = QDragMoveEvent(pos.toPoint(), move, mime, left, none)
    assert QApplication.sendEvent(view.viewport(), over) and over.isAccepted()
    event = QDropEvent(pos, move, mime, left, none)
    event.setDropAction(move)
    event.ignore()
    QApplication.sendEvent(view.viewport(), event)


def test_priority_for_a_place():
    assert priority_for_drop(80, 40, highest_first=True) == 60
    assert priority_for_drop(50, 50, highest_first=True) == 51
    assert priority_for_drop(None, 100, highest_first=True) == 100
    assert priority_for_drop(50, None, highest_first=True) == 49
    assert priority_for_drop(0, None, highest_first=True) == 0
    assert priority_for_drop(40, 80, highest_first=False) == 60
    assert priority_for_drop(None, 50, highest_first=False) == 49
    assert priority_for_drop(None, None, highest_first=True) == 50


def test_drag_a_queued_run_to_the_top_and_another_to_the_end(lab):
    runs = lab.start_runs(6)
    lab.load()
    lab.advance(1)
    panel, model = lab.jobs, lab.jobs.model
    panel.filter_bar.set_filter(OrderFilter(kind="runs"))
    # not sorted by priority: a drop says how to do it and changes nothing
    drop(panel, runs[5], 0)
    assert "sort by Priority first" in panel.status_line.text()
    assert model.get(runs[5])[6] == 50
    header = panel.view.horizontalHeader()
    x = header.sectionViewportPosition(PRIORITY_COLUMN) + header.sectionSize(PRIORITY_COLUMN) // 2
    lab.qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(x, header.height() // 2))
    assert model.sort_column == PRIORITY_COLUMN
    if model.sort_order != Qt.SortOrder.AscendingOrder:
        panel.view.sortByColumn(PRIORITY_COLUMN, Qt.SortOrder.AscendingOrder)
    assert all(model.flags(model.index(r, 0)) & Qt.ItemFlag.ItemIsDragEnabled for r in range(model.rowCount()))

    # the last run to the top: one above the run it was dropped on
    top = model.order_id(0)
    drop(panel, runs[5], 0)
    lab.qtbot.waitUntil(lambda: "priority 50 → 51" in panel.status_line.text(), timeout=5000)
    lab.sync()
    assert model.get(runs[5])[6] == 51 and model.row_of(runs[5]) == 0
    assert model.data(model.index(0, PRIORITY_COLUMN)) == "Standard · 51"
    entry = [a for a in lab.rt.audit(runs[5]) if a.action == "reprioritise"][-1]
    assert entry.who == os_user() and entry.details == {"priority": 51}
    assert entry.reason == f"moved above {top} in Jobs"
    save_screenshot(lab.window, "jobs-drag-reprioritise")

    # another to the end of the list: one below the last run
    last = model.order_id(model.rowCount() - 1)
    drop(panel, runs[3], model.rowCount())
    lab.qtbot.waitUntil(lambda: "priority 50 → 49" in panel.status_line.text(), timeout=5000)
    lab.sync()
    assert model.row_of(runs[3]) == model.rowCount() - 1
    entry = [a for a in lab.rt.audit(runs[3]) if a.action == "reprioritise"][-1]
    assert entry.reason == f"moved below {last} in Jobs" and entry.details == {"priority": 49}


def test_steps_and_finished_runs_do_not_drag(lab):
    runs = lab.start_runs(1)
    lab.load()
    model = lab.jobs.model
    step = lab.rt.run_of(runs[0])["steps"][0]["order_id"]
    assert lab.jobs.select_order(step), "selecting a step expands its run"
    assert not model.flags(model.index(model.row_of(step), 0)) & Qt.ItemFlag.ItemIsDragEnabled
    assert model.flags(model.index(model.row_of(runs[0]), 0)) & Qt.ItemFlag.ItemIsDragEnabled
    lab.until(lambda: lab.rt.order(runs[0]).status.name == "Complete")
    assert not model.flags(model.index(model.row_of(runs[0]), 0)) & Qt.ItemFlag.ItemIsDragEnabled
    assert lab.jobs.move_run(runs[0], 0) is None
    assert "only queued runs" in lab.jobs.status_line.text()
