"""Keyboard use of the main window: the command palette (Ctrl+K) finds orders by id prefix,
instruments, templates and actions over a real store and runtime; every menu action has keys,
and Help > Keyboard shortcuts lists them."""

from __future__ import annotations

import pytest
from conftest import SCREENSHOTS
from dispatchkit import WORKCELL
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QAction, QPainter
from PySide6.QtWidgets import QApplication

from console.app import settings_for
from console.main_window import MainWindow
from core import demo
from core.clock import VirtualClock
from core.runtime import Runtime
from core.templates import template_from_dict
from core.workcell import parse_workcell
from panels.palette import ACTION, INSTRUMENT, ORDER, TEMPLATE
from panels.theme import apply_theme

CTRL = Qt.KeyboardModifier.ControlModifier


@pytest.fixture
def window(store, data_dir, qtbot, qrun):
    demo.generate(store, 300)
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1,
                       metrics=False)
    qrun(rt.start(templates_dir=None))
    qrun(rt.engine.publish(template_from_dict({"name": "Plate wash", "definition": {"steps": [
        {"id": "move", "kind": "RobotArm.MovePlate"}]}})))
    qrun(clock.settle())
    w = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(w)
    w.show()
    qrun(w.load_orders())
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w)
    yield w
    w.command_palette.hide()
    if w.robots.detail_window is not None:
        w.robots.detail_window.close()
    w.close()
    qrun(rt.close())


def _open_palette(qtbot, w):
    w.activateWindow()  # window shortcuts work in the active window
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w)
    qtbot.keyClick(w.jobs.view, Qt.Key.Key_K, CTRL)
    qtbot.waitUntil(w.command_palette.isVisible)
    assert w.command_palette.search.hasFocus() or QApplication.focusWidget() is w.command_palette.search
    return w.command_palette


def test_ctrl_k_order_id_prefix_enter_selects_it_in_jobs_and_detail(window, qtbot):
    w = window
    palette = _open_palette(qtbot, w)
    assert palette.search.text() == ""
    qtbot.keyClicks(palette.search, "order_00123")  # lower case, as typed in a hurry
    qtbot.keyClick(palette.search, Qt.Key.Key_Return)  # at once: chosen when the search answers
    qtbot.waitUntil(lambda: w.jobs.current_id() == "Order_00123")
    assert not palette.isVisible()
    qtbot.waitUntil(lambda: w.detail.order_id == "Order_00123")
    assert w.docks["Detail"].isVisible()


def test_palette_lists_orders_first_then_moves_with_the_arrows(window, qtbot):
    w = window
    palette = _open_palette(qtbot, w)
    with qtbot.waitSignal(palette.searched, timeout=5000):
        qtbot.keyClicks(palette.search, "Order_0012")
    entries = palette.entries()
    assert [e.key for e in entries if e.kind == ORDER] == [f"Order_0012{i}" for i in range(10)]
    assert entries[0].detail  # template and status
    qtbot.keyClick(palette.search, Qt.Key.Key_Down)
    qtbot.keyClick(palette.search, Qt.Key.Key_Down)
    qtbot.keyClick(palette.search, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: w.jobs.current_id() == "Order_00122")
    # Esc closes without choosing
    palette = _open_palette(qtbot, w)
    qtbot.keyClick(palette.search, Qt.Key.Key_Escape)
    assert not palette.isVisible()
    assert w.jobs.current_id() == "Order_00122"


def test_palette_finds_instruments_templates_and_actions(window, qtbot):
    w = window
    palette = _open_palette(qtbot, w)
    qtbot.keyClicks(palette.search, "reader2")
    assert palette.entries()[0].kind == INSTRUMENT and palette.entries()[0].key == "Reader2"
    qtbot.keyClick(palette.search, Qt.Key.Key_Return)  # chosen once the order search said "none"
    qtbot.waitUntil(lambda: w.robots.detail_window.isVisible())
    detail = w.robots.detail_window
    assert detail is not None and detail.isVisible() and detail.instrument_id == "Reader2"
    detail.close()

    palette = _open_palette(qtbot, w)
    qtbot.keyClicks(palette.search, "plate wa")
    top = palette.entries()[0]
    assert (top.kind, top.key) == (TEMPLATE, "Plate wash")
    qtbot.keyClick(palette.search, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not palette.isVisible())
    assert w.docks["Templates"].isVisible()
    qtbot.waitUntil(lambda: w.templates.current_name() == "Plate wash", timeout=5000)

    palette = _open_palette(qtbot, w)
    qtbot.keyClicks(palette.search, "view dark")
    top = palette.entries()[0]
    assert top.kind == ACTION and top.title == "View: Dark" and top.detail
    try:
        qtbot.keyClick(palette.search, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: w.theme.name == "dark")
    finally:
        w.set_theme("light")


def _menu_actions(w):
    out = []
    stack = [a for m in w.menuBar().actions() for a in m.menu().actions()]
    while stack:
        action = stack.pop(0)
        if action.menu() is not None:
            stack[:0] = action.menu().actions()
        elif not action.isSeparator():
            out.append(action)
    return out


def test_every_menu_action_has_keys_listed_in_help(window, qtbot):
    w = window
    actions = _menu_actions(w)
    assert len(actions) >= 20
    missing = [a.text() for a in actions if a.shortcut().isEmpty()]
    assert not missing, f"menu actions without a shortcut: {missing}"
    keys = [a.shortcut().toString() for a in actions]
    assert len(keys) == len(set(keys)), "two menu actions share keys"
    # panel actions that work on the focused panel have keys too
    assert not [a.text() for a in w.robots.findChildren(QAction) if a.text() and a.shortcut().isEmpty()]
    qtbot.keyClick(w.jobs.view, Qt.Key.Key_F1)
    dialog = w.help_dialog
    assert dialog is not None and dialog.isVisible()
    text = dialog.text.toPlainText()
    for action in actions:
        assert action.text().replace("&", "") in text, action.text()
        assert action.shortcut().toString() in text
    for needed in ("Command palette", "Ctrl+K", "Details", "Ctrl+I", "Send to this instrument"):
        assert needed in text, needed
    dialog.close()
    # Ctrl+4 goes to Robots; Ctrl+2 back to Jobs
    qtbot.keyClick(w.jobs.view, Qt.Key.Key_4, CTRL)
    assert not w.docks["Robots"].visibleRegion().isEmpty()
    qtbot.keyClick(w.robots, Qt.Key.Key_2, CTRL)
    assert not w.docks["Jobs"].visibleRegion().isEmpty()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshot_of_the_palette(window, qtbot, theme):
    w = window
    try:
        w.set_theme(theme)
        w.resize(1280, 720)
        palette = _open_palette(qtbot, w)
        with qtbot.waitSignal(palette.searched, timeout=5000):
            qtbot.keyClicks(palette.search, "Order_0001")
        qtbot.wait(50)
        shot = w.grab()
        painter = QPainter(shot)
        painter.drawPixmap(palette.mapToGlobal(QPoint(0, 0)) - w.mapToGlobal(QPoint(0, 0)), palette.grab())
        painter.end()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"palette-{theme}-1280x720.png"
        assert shot.save(str(path)) and path.stat().st_size > 10_000
        palette.hide()
    finally:
        w.set_theme("light")
        apply_theme(QApplication.instance(), "light")
