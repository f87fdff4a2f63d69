"""Panels keep the Qt methods they inherit: no attribute hides QWidget.palette(), .actions(),
.scroll() or QGraphicsItem.group() (Qt and its styles call them), and an instrument action
without a dispatcher says so instead of raising in a slot."""

from __future__ import annotations

from PySide6.QtGui import QPalette

from console.app import settings_for
from console.main_window import MainWindow
from core.runtime import Runtime
from core.templates import Step, WorkflowTemplate
from panels.instrument_detail import InstrumentDetail


def test_window_panels_and_editor_keep_qwidget_methods(store, data_dir, qtbot, qloop):
    runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    window = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    assert isinstance(window.palette(), QPalette)
    assert window.command_palette is not None
    assert isinstance(window.detail.actions(), list)
    window.detail.scroll(0, 0)  # QWidget.scroll, not the scroll area
    assert window.detail.order_actions.who() == window.jobs.actions.who()
    editor = window.templates.editor
    assert isinstance(editor.palette(), QPalette)
    editor.open(WorkflowTemplate(name="One step", steps=(Step(id="wait", kind="delay"),)),
                published=False)
    node = editor.scene.nodes["wait"]
    assert node.group() is None  # QGraphicsItem.group: the node is in no item group
    assert node.kind_group
    window.close()


def test_send_without_instruments_reports_it(store, data_dir, qtbot, qloop):
    runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    assert runtime.dispatcher is None
    panel = InstrumentDetail(runtime, "Reader1")
    qtbot.addWidget(panel)
    task = panel.send("Order_1", "Reader1", "try")
    qtbot.waitUntil(lambda: "no instruments are connected" in panel.feedback.text())
    assert task.done() and task.exception() is not None
    panel.close()
