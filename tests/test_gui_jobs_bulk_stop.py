"""A bulk action can be stopped (Stop in its dialog: the chunk in progress finishes, the rest is
left as it was) and its progress is live in the Jobs status line, dialog shown or hidden."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from PySide6.QtGui import QFontMetrics
from test_gui_jobs import Lab

from core.engine import RunStatus
from panels.actions import Feedback
from panels.dialogs import BulkDialog
from panels.jobs_filter import OrderFilter


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun)
    yield made
    made.close()


def test_stop_a_bulk_cancel_half_way_and_follow_it_in_the_status_line(lab):
    runs = lab.start_runs(12)
    lab.load()
    lab.advance(1)
    lab.rt.bulk_chunk = 3  # four transactions
    panel = lab.jobs
    panel.filter_bar.set_filter(OrderFilter(kind="runs"))
    panel.select_all_matching()
    task = panel.trigger("cancel")
    dialog: BulkDialog = lab.dialog(BulkDialog)
    dialog.reason_edit.setText("wrong plates loaded")

    lines: list[str] = []

    def follow(feedback: Feedback) -> None:
        lines.append(panel.status_line.text())
        if feedback.level == "busy" and "3 of 12" in feedback.message:
            dialog.hide()  # the operator hides it, then changes their mind and stops it
            lines.append(panel.status_line.text())
            dialog.stop_button.click()

    panel.actions.feedback.connect(follow)
    dialog.go_button.click()
    lab.wait_task(task)
    panel.actions.feedback.disconnect(follow)

    # live progress in the status line while the dialog was hidden (not "0 of 12" until the end)
    assert any(not line.startswith(("✓", "✕")) and "Cancel: 3 of 12 orders" in line for line in lines), lines
    # stopped after the first chunk: three done, nine left untouched, and the result says so
    assert dialog.stage == "results" and dialog.isVisible()
    done = [dialog.results.result(i) for i in range(dialog.results.rowCount())]
    assert len(done) == 3 and all(r.ok for r in done)
    assert len(dialog.left) == 9 and set(dialog.left) | {r.order_id for r in done} == set(runs)
    assert "9 left" in dialog.result_summary.text() and "9 left" in dialog.windowTitle()
    canceled = [r for r in runs if lab.rt.engine.run_status(r) is RunStatus.CANCELLED]
    assert sorted(canceled) == sorted(r.order_id for r in done)
    assert panel.last_feedback.message == "Cancel: 3 done, 0 refused, 9 left (stopped)"
    assert panel.last_feedback.level == "error"
    save_screenshot(dialog, "dialog-bulk-cancel-stopped")
    dialog.accept()


def test_status_marks_are_in_the_font(lab):
    """Each status-line mark is a glyph of the widget's font (no empty box)."""
    metrics = QFontMetrics(lab.jobs.status_line.font())
    for level in ("busy", "ok", "error"):
        lab.jobs._show_status(Feedback(level, "x"))
        mark = lab.jobs.status_line.text()[0]
        assert metrics.inFontUcs4(ord(mark)), f"{level}: {mark!r} U+{ord(mark):04X} is not in the font"
