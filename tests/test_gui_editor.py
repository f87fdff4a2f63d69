"""The template editor driven like an operator: drag and drop, mouse, keyboard, inspector, undo."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent, QMouseEvent, QWheelEvent
from PySide6.QtWidgets import QApplication, QWidget

from core.templates import InputParameter, ParameterType, WorkflowTemplate, load_template
from core.workcell import load_workcell
from panels.editor.editor import TemplateEditor
from panels.editor.graph import MIME_KIND
from panels.editor.kinds import KindCatalog
from panels.editor.layout import NODE_HEIGHT, NODE_WIDTH

ROOT = Path(__file__).resolve().parent.parent
DEMO = load_workcell(ROOT / "resources" / "workcells" / "demo.yaml")
CATALOG = KindCatalog.from_workcell(DEMO)
TEMPLATES = ROOT / "resources" / "templates"


# --------------------------------------------------------------------------- gestures


def drop_kind(editor: TemplateEditor, kind: str, at: QPoint) -> None:
    """Drag ``kind`` out of the palette and drop it on the canvas at viewport point ``at``,
    through Qt's drag events and the palette model's own MIME data."""
    model = editor.kind_palette.palette_model
    index = model.kind_index(kind)
    assert index.isValid(), kind
    mime = model.mimeData([index])
    assert mime.hasFormat(MIME_KIND)
    viewport = editor.view.viewport()
    action, left, none = Qt.DropAction.CopyAction, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    enter = QDragEnterEvent(at, action, mime, left, none)
    QApplication.sendEvent(viewport, enter)
    assert enter.isAccepted(), "the canvas accepts step kinds"
    move = QDragMoveEvent(at, action, mime, left, none)
    QApplication.sendEvent(viewport, move)
    assert move.isAccepted()
    drop = QDropEvent(QPointF(at), action, mime, left, none)
    QApplication.sendEvent(viewport, drop)
    assert drop.isAccepted()


def _mouse(widget: QWidget, kind: QEvent.Type, pos: QPoint, button: Qt.MouseButton,
           buttons: Qt.MouseButton) -> None:
    event = QMouseEvent(kind, QPointF(pos), QPointF(widget.mapToGlobal(pos)), button, buttons,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def mouse_drag(widget: QWidget, start: QPoint, end: QPoint, button=Qt.MouseButton.LeftButton,
               steps: int = 6) -> None:
    """Press at ``start``, move in steps with the button held, release at ``end``."""
    _mouse(widget, QEvent.Type.MouseButtonPress, start, button, button)
    for i in range(1, steps + 1):
        p = start + (end - start) * (i / steps)
        _mouse(widget, QEvent.Type.MouseMove, p, Qt.MouseButton.NoButton, button)
    _mouse(widget, QEvent.Type.MouseButtonRelease, end, button, Qt.MouseButton.NoButton)


def click(widget: QWidget, pos: QPoint) -> None:
    left = Qt.MouseButton.LeftButton
    _mouse(widget, QEvent.Type.MouseButtonPress, pos, left, left)
    _mouse(widget, QEvent.Type.MouseButtonRelease, pos, left, Qt.MouseButton.NoButton)


@pytest.fixture
def editor(qtbot):
    ed = TemplateEditor(CATALOG)
    qtbot.addWidget(ed)
    ed.resize(1300, 800)
    ed.show()
    qtbot.waitExposed(ed)
    ed.open(WorkflowTemplate(name="Plate assay",
                             inputs=(InputParameter(name="plate_id"),
                                     InputParameter(name="wavelength", type=ParameterType.INTEGER,
                                                    required=False, default=450))),
            published=False)
    yield ed
    ed.close()


def _canvas_point(editor: TemplateEditor, x: float, y: float) -> QPoint:
    return editor.view.mapFromScene(QPointF(x, y))


# --------------------------------------------------------------------------- tests


def test_drag_kinds_from_palette_and_link_ports_with_the_mouse(editor, qtbot):
    view = editor.view
    drop_kind(editor, "RobotArm.MovePlate", _canvas_point(editor, 200, 100))
    drop_kind(editor, "PlateReader.ReadPlate", _canvas_point(editor, 200, 320))
    t = editor.document.template
    assert [(s.id, s.kind) for s in t.steps] == [("move_plate", "RobotArm.MovePlate"),
                                                 ("read_plate", "PlateReader.ReadPlate")]
    # dropped where the mouse was (node centred on it, snapped to the 10 px grid)
    x, y = t.step("read_plate").position
    assert abs(x + NODE_WIDTH / 2 - 200) <= 10 and abs(y + NODE_HEIGHT / 2 - 320) <= 10
    assert editor.selected_step == "read_plate", "a new step is selected for the inspector"
    assert editor.inspector.step.id_edit.text() == "read_plate"
    assert editor.document.stack.count() == 2

    # drag from move_plate's output port to read_plate: read_plate waits for move_plate
    mouse_drag(view.viewport(), view.scene_point("move_plate", "out"), view.scene_point("read_plate", "centre"))
    assert editor.document.template.step("read_plate").depends_on == ("move_plate",)
    assert editor.scene.edge("move_plate", "read_plate") is not None
    # from an input port backwards: drop a sealer, link its input to read_plate
    drop_kind(editor, "Sealer.Seal", _canvas_point(editor, 520, 320))
    mouse_drag(view.viewport(), view.scene_point("seal", "in"), view.scene_point("read_plate", "centre"))
    assert editor.document.template.step("seal").depends_on == ("read_plate",)
    # a second identical link is refused with a message, not a second edge
    before = editor.document.stack.count()
    mouse_drag(view.viewport(), view.scene_point("move_plate", "out"), view.scene_point("read_plate", "centre"))
    assert editor.document.stack.count() == before
    assert "already depends" in editor.message.text()

    # undo / redo with the keyboard shortcuts
    editor.activateWindow()
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert editor.document.template.step("seal").depends_on == ()
    assert editor.scene.edge("read_plate", "seal") is None
    qtbot.keyClick(view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert editor.document.template.step("seal").depends_on == ("read_plate",)


def test_move_select_delete_and_undo(editor, qtbot):
    view = editor.view
    drop_kind(editor, "RobotArm.MovePlate", _canvas_point(editor, 200, 100))
    drop_kind(editor, "PlateReader.ReadPlate", _canvas_point(editor, 200, 320))
    editor.link("move_plate", "read_plate")
    start = editor.document.template.step("move_plate").position

    # drag the node by its body: one undoable move
    count = editor.document.stack.count()
    mouse_drag(view.viewport(), view.scene_point("move_plate"),
               view.scene_point("move_plate") + QPoint(150, 40))
    moved = editor.document.template.step("move_plate").position
    assert (round(moved[0] - start[0]), round(moved[1] - start[1])) == (150, 40)
    assert editor.document.stack.count() == count + 1
    edge = editor.scene.edge("move_plate", "read_plate")
    assert edge.path().pointAtPercent(0) == editor.scene.nodes["move_plate"].output_point(), \
        "edges follow a moved node"

    # click an edge, press Delete: the dependency goes, the steps stay
    mid = view.mapFromScene(edge.path().pointAtPercent(0.5))
    click(view.viewport(), mid)
    assert editor.scene.selected_edges() == [("move_plate", "read_plate")]
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert editor.document.template.step("read_plate").depends_on == ()
    assert len(editor.document.template.steps) == 2

    # click a node, Delete: the step goes; undo brings back step and position
    click(view.viewport(), view.scene_point("read_plate"))
    assert editor.selected_step == "read_plate"
    qtbot.keyClick(view, Qt.Key.Key_Delete)
    assert [s.id for s in editor.document.template.steps] == ["move_plate"]
    assert "read_plate" not in editor.scene.nodes
    editor.undo_action.trigger()
    assert [s.id for s in editor.document.template.steps] == ["move_plate", "read_plate"]
    editor.undo_action.trigger()
    assert editor.document.template.step("read_plate").depends_on == ("move_plate",)
    editor.undo_action.trigger()
    assert editor.document.template.step("move_plate").position == start
    editor.redo_action.trigger()
    assert editor.document.template.step("move_plate").position == moved


def test_zoom_with_the_wheel_and_pan_with_the_middle_button(editor):
    view = editor.view
    for kind in ("RobotArm.MovePlate", "PlateReader.ReadPlate", "Sealer.Seal"):
        n = len(editor.document.template.steps)
        editor.add_step(kind, QPointF(n * 600, n * 700))
    view.set_zoom(1.0)
    centre = view.viewport().rect().center()
    wheel = QWheelEvent(QPointF(centre), QPointF(view.viewport().mapToGlobal(centre)), QPoint(0, 0),
                        QPoint(0, 240), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), wheel)
    assert view.zoom == pytest.approx(1.15 ** 2)
    h, v = view.horizontalScrollBar().value(), view.verticalScrollBar().value()
    mouse_drag(view.viewport(), centre, centre + QPoint(-120, -80), Qt.MouseButton.MiddleButton)
    assert (view.horizontalScrollBar().value() - h, view.verticalScrollBar().value() - v) == (120, 80)
    assert editor.document.stack.count() == 3, "panning edits nothing"
    view.fit()
    assert view.MIN_ZOOM <= view.zoom <= 1.0


def test_inspector_edits_are_typed_checked_and_undoable(editor, qtbot):
    drop_kind(editor, "RobotArm.MovePlate", _canvas_point(editor, 200, 100))
    drop_kind(editor, "PlateReader.ReadPlate", _canvas_point(editor, 200, 320))
    editor.select_step("read_plate")
    step_page = editor.inspector.step
    assert editor.inspector.pages.currentWidget() is step_page

    # name: typed, committed on Enter
    step_page.name_edit.clear()
    qtbot.keyClicks(step_page.name_edit, "Read absorbance")
    qtbot.keyClick(step_page.name_edit, Qt.Key.Key_Return)
    assert editor.document.template.step("read_plate").name == "Read absorbance"
    assert editor.scene.nodes["read_plate"].step.label == "Read absorbance"

    # typed parameter: wavelength is an integer spin box with its unit
    row = step_page.param_row("wavelength")
    row.source.setCurrentIndex(row.source.findData(row.VALUE))
    row.editor.setValue(620)
    assert editor.document.template.step("read_plate").parameters["wavelength"] == 620
    assert row.editor.suffix() == " nm"

    # mapping picked from a list: the workflow input, then another step's output
    plate = step_page.param_row("plate")
    labels = [plate.source.itemText(i) for i in range(plate.source.count())]
    assert "input · plate_id (string)" in labels and "move_plate → plate" in labels
    plate.source.setCurrentIndex(plate.source.findData("input_data.plate_id"))
    assert editor.document.template.step("read_plate").input_mapping == {"plate": "input_data.plate_id"}
    plate = step_page.param_row("plate")
    plate.source.setCurrentIndex(plate.source.findData("step_outputs.move_plate.plate"))
    read = editor.document.template.step("read_plate")
    assert read.input_mapping == {"plate": "step_outputs.move_plate.plate"}
    assert read.depends_on == ("move_plate",), "mapping an output adds the dependency it needs"
    assert editor.document.issues == []

    # condition: checked as you type, committed on Enter
    step_page.condition.setFocus()
    qtbot.keyClicks(step_page.condition, "step_outputs['move_plate']['plate'] ==")
    assert step_page.condition_status.text().startswith("✕ condition does not parse")
    qtbot.keyClicks(step_page.condition, " 'P1'")
    assert step_page.condition_status.text() == "✓ condition is valid"
    step_page.condition.setText("step_outputs['ghost']['x'] > 1")
    assert "step 'ghost', which does not exist" in step_page.condition_status.text()
    step_page.condition.setText("step_outputs['move_plate']['plate'] == 'P1'")
    qtbot.keyClick(step_page.condition, Qt.Key.Key_Return)
    assert editor.document.template.step("read_plate").condition == "step_outputs['move_plate']['plate'] == 'P1'"

    # timeout, retry policy, idempotent
    step_page.timeout.check.setChecked(True)
    step_page.timeout.box.setValue(900)
    step_page.retry_box.setChecked(True)
    step_page.retry.attempts.setValue(2)
    step_page.retry.attempts.setValue(4)
    step_page.idempotent.setChecked(True)
    read = editor.document.template.step("read_plate")
    assert read.timeout == 900 and read.retry_policy.max_attempts == 4 and read.idempotent
    # error handler picked from the steps
    step_page.handler.setCurrentIndex(step_page.handler.findData("move_plate"))
    assert editor.document.template.error_handlers == {"read_plate": "move_plate"}
    assert any(e.handler for e in editor.scene.edges), "the handler is drawn"

    # every edit is one undo step; successive changes of one field merge into one
    texts = [editor.document.stack.text(i) for i in range(editor.document.stack.count())]
    assert texts == ["Add step move_plate", "Add step read_plate", "Change name of read_plate",
                     "Set wavelength of read_plate", "Set plate of read_plate",
                     "Set plate of read_plate", "Change condition of read_plate",
                     "Change timeout of read_plate", "Change retry policy of read_plate",
                     "Change idempotent of read_plate", "Error handler of read_plate"]
    stack = editor.document.stack
    while stack.canUndo() and stack.undoText() != "Add step read_plate":
        stack.undo()
    assert editor.document.template.step("read_plate") .name == "Read plate"
    assert editor.document.template.step("read_plate").parameters == {}
    assert step_page.name_edit.text() == "Read plate", "the inspector follows undo"
    stack.redo()
    assert editor.document.template.step("read_plate").name == "Read absorbance"

    # renaming the id updates every reference
    step_page.id_edit.setText("read")
    step_page.id_edit.editingFinished.emit()
    stack_before = stack.count()
    assert "read" in editor.scene.nodes and editor.selected_step == "read"
    step_page.id_edit.setText("move_plate")
    step_page.id_edit.editingFinished.emit()
    assert "already exists" in step_page.id_error.text() and stack.count() == stack_before


def test_workflow_inspector_edits_inputs_and_policies(editor):
    page = editor.inspector.workflow
    assert editor.inspector.pages.currentWidget() is page
    model = page.inputs_model
    assert model.rowCount() == 2
    page.add_input.click()
    assert [p.name for p in editor.document.template.inputs] == ["plate_id", "wavelength", "input1"]
    editor.add_step("PlateReader.ReadPlate", QPointF(0, 0))
    editor.inspector.step.param_row("plate").source.setCurrentIndex(
        editor.inspector.step.param_row("plate").source.findData("input_data.plate_id"))
    editor.select_step(None)
    model.setData(model.index(0, 0), "barcode")
    assert editor.document.template.step("read_plate").input_mapping == {"plate": "input_data.barcode"}
    assert editor.document.issues == [], "references follow a renamed input"
    model.setData(model.index(2, 0), "volume")
    model.setData(model.index(2, 1), "double")
    assert not model.setData(model.index(2, 3), "lots"), "a default must parse as the input's type"
    model.setData(model.index(2, 3), "12.5")
    model.setData(model.index(2, 2), Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    volume = editor.document.template.inputs[2]
    assert (volume.name, volume.type, volume.default, volume.required) == ("volume", ParameterType.DOUBLE, 12.5, False)
    page.failure.setCurrentIndex(page.failure.findData("pause"))
    page.timeout.check.setChecked(True)
    page.timeout.box.setValue(7200)
    page.recovery.setValue(5)
    page.retry.attempts.setValue(3)
    t = editor.document.template
    assert (t.failure_policy.value, t.default_timeout, t.max_recovery_attempts,
            t.default_retry_policy.max_attempts) == ("pause", 7200, 5, 3)
    editor.undo_action.trigger()
    assert editor.document.template.default_retry_policy.max_attempts == 1
    assert page.retry.attempts.value() == 1


def test_live_validation_lists_and_highlights_problems(editor, qtbot):
    for kind, y in (("RobotArm.MovePlate", 100), ("PlateReader.ReadPlate", 300), ("Sealer.Seal", 500)):
        drop_kind(editor, kind, _canvas_point(editor, 200, y))
    editor.link("move_plate", "read_plate")
    editor.link("read_plate", "seal")
    assert editor.document.can_publish and editor.status.text().startswith("✓")
    editor.link("seal", "move_plate")  # closes a cycle
    doc = editor.document
    assert not doc.can_publish
    assert editor.status.text().startswith("✕  1 problem")
    assert editor.issues.isVisible() and "dependency cycle" in editor.issues_model.index(0).data()
    for edge in (("move_plate", "read_plate"), ("read_plate", "seal"), ("seal", "move_plate")):
        assert editor.scene.edge(*edge).problem, edge
    # clicking the problem selects the offending step
    editor.issues.clicked.emit(editor.issues_model.index(0))
    assert editor.selected_step is not None
    editor.undo_action.trigger()
    assert doc.can_publish and not any(e.problem for e in editor.scene.edges)

    # a kind no instrument of the workcell offers
    editor.add_step("Teleporter.Beam", QPointF(600, 100))
    node = editor.scene.nodes["beam"]
    assert [i.message for i in node.issues] == ["no instrument of the workcell offers 'Teleporter.Beam'"]
    assert "no instrument of the workcell offers it" in editor.inspector.step.subtitle.text()
    editor.delete_selection()
    assert doc.can_publish

    # a required parameter with neither value nor mapping (catalog says the sealer needs a plate)
    strict = TemplateEditor(KindCatalog.from_workcell(DEMO, required={"Sealer.Seal": ["plate"]}))
    qtbot.addWidget(strict)
    try:
        strict.open(doc.template, published=False)
        assert [i.message for i in strict.document.errors] == [
            "required parameter 'plate' has no value and no mapping"]
        assert strict.scene.nodes["seal"].issues
        strict.select_step("seal")
        row = strict.inspector.step.param_row("plate")
        row.source.setCurrentIndex(row.source.findData("step_outputs.read_plate.plate"))
        assert strict.document.errors == [] and strict.document.can_publish
    finally:
        strict.close()


def test_loaded_template_is_laid_out_and_published_versions_become_drafts(editor):
    elisa = load_template(TEMPLATES / "elisa_readout.yaml").model_copy(update={"version": 3})
    assert all(s.position is None for s in elisa.steps)
    editor.open(elisa, published=True, latest_version=3)
    doc = editor.document
    assert not doc.is_draft and "v3 · published, read-only" in editor.banner.text()
    nodes = editor.scene.nodes
    for s in elisa.steps:
        for d in s.depends_on:
            assert nodes[d].pos().y() < nodes[s.id].pos().y()
    assert doc.template.steps[0].position is None, "showing a layout does not edit the version"

    # the first edit makes a draft of the next version; moving saves every position
    editor.move_steps({"seal": (0.0, 0.0)})
    assert doc.is_draft and doc.template.version == 0 and "draft of v4 (from v3)" in editor.banner.text()
    assert all(s.position is not None for s in doc.template.steps)
    assert editor.document.published is elisa and elisa.steps[0].position is None
    editor.undo_action.trigger()
    assert not doc.is_draft and doc.template is elisa
    editor.auto_layout()
    assert doc.is_draft and all(s.position is not None for s in doc.template.steps)
