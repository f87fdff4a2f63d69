"""The template editor edits time windows and the deadline: typed, checked live (max below min
is flagged on the step), undoable, and saved in the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import save_screenshot

from core.templates import Window, WorkflowTemplate, dump_template, load_template, parse_template
from core.workcell import load_workcell
from panels.editor.editor import TemplateEditor
from panels.editor.kinds import KindCatalog

ROOT = Path(__file__).resolve().parent.parent
CATALOG = KindCatalog.from_workcell(load_workcell(ROOT / "resources" / "workcells" / "demo.yaml"))
FLOW = """
name: Thaw and read
steps:
  - {id: thaw, kind: Incubator.Incubate}
  - {id: decap, kind: Decapper.Decap, depends_on: [thaw]}
  - {id: read, kind: PlateReader.ReadPlate, depends_on: [decap]}
"""


@pytest.fixture
def editor(qtbot):
    ed = TemplateEditor(CATALOG)
    qtbot.addWidget(ed)
    ed.resize(1280, 720)
    ed.show()
    qtbot.waitExposed(ed)
    ed.open(parse_template(FLOW).model_copy(update={"version": 0}), published=False)
    yield ed
    ed.close()


def test_a_step_window_is_edited_checked_and_undone(editor, tmp_path, qtbot):
    editor.select_step("read")
    page = editor.inspector.step
    box = page.window_box
    # only steps that run before "read" can open its window
    assert [box.after.itemData(i) for i in range(box.after.count())] == ["thaw", "decap"]
    box.setChecked(True)
    box.after.setCurrentIndex(box.after.findData("decap"))
    box.most.check.setChecked(True)
    box.most.box.setValue(300)
    assert editor.document.template.step("read").start_within == Window(after="decap", max=300)
    box.least.check.setChecked(True)
    box.least.box.setValue(900)
    # max below min: kept as typed, flagged on the step by the live validation
    assert editor.document.template.step("read").start_within == Window(after="decap", min=900, max=300)
    assert "less than the minimum delay 15m" in page.problems.text()
    save_screenshot(editor, "editor-start-window")
    from PySide6.QtWidgets import QApplication

    from panels.theme import apply_theme

    editor.resize(1920, 1080)
    apply_theme(QApplication.instance(), "dark")
    qtbot.wait(50)
    try:
        save_screenshot(editor, "editor-start-window-dark-1080")
    finally:
        apply_theme(QApplication.instance(), "light")
        editor.resize(1280, 720)
    box.least.box.setValue(60)
    assert "minimum delay" not in page.problems.text()
    editor.select_step(None)
    workflow = editor.inspector.workflow
    workflow.deadline.check.setChecked(True)
    workflow.deadline.box.setValue(7200)
    assert editor.document.template.deadline == 7200
    saved = tmp_path / "t.yaml"
    dump_template(editor.document.template, saved)
    back = load_template(saved)
    assert back.step("read").start_within == Window(after="decap", min=60, max=300) and back.deadline == 7200
    editor.undo_action.trigger()  # the deadline
    assert editor.document.template.deadline is None
    assert editor.document.template.step("read").start_within is not None
    editor.undo_action.trigger()  # the window's edits, one after another, are one undo step
    assert editor.document.template.step("read").start_within is None


def test_a_step_without_earlier_steps_has_no_window_to_edit(editor):
    editor.select_step("thaw")
    box = editor.inspector.step.window_box
    assert not box.isEnabled() and box.after.count() == 0 and not box.isChecked()
    assert isinstance(editor.document.template, WorkflowTemplate)
