"""A fresh console as `labconsole` opens it: the Templates list is filled on start, the window
fits a 1280x720 screen with a compact Dashboard, empty states say what to do, and the Help menu
lists every shortcut, where the data lives and the versions."""

from __future__ import annotations

import asyncio

from conftest import save_screenshot
from PySide6.QtCore import QSize
from PySide6.QtWidgets import QApplication

from console.app import settings_for
from console.main_window import DASHBOARD_KEY, MainWindow
from core.clock import VirtualClock
from core.runtime import DEMO_WORKCELL, SAMPLE_TEMPLATES, Runtime
from panels.help import collect_shortcuts, versions

TITLE_BAR = 40
"""What a window manager's title bar and frame may take of a 720 px screen."""


def _console(store, data_dir, qtbot, qrun):
    """The start-up order of console.app: window shown first, then the runtime starts, then load."""
    clock = VirtualClock.for_store(store)
    runtime = Runtime.build(data_dir, clock=clock, store=store, workcell=DEMO_WORKCELL, seed=3)
    window = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)

    async def start():
        task = asyncio.ensure_future(runtime.start())
        await clock.run_until(task.done, step=0.5)
        await task
        await window.load_orders()

    qrun(start(), timeout_ms=30_000)
    return runtime, window


def test_fresh_console_fills_templates_fits_720p_and_guides_the_operator(store, data_dir, qtbot, qrun):
    runtime, window = _console(store, data_dir, qtbot, qrun)
    try:
        # D. the Templates list is filled without clicking Refresh (its tab is not even raised)
        samples = len(list(SAMPLE_TEMPLATES.glob("*.*")))
        assert window.templates.list_model.rowCount() == samples

        # E. the window fits a 1280x720 screen; the Dashboard is compact and can expand
        assert window.minimumSizeHint().height() <= 720 - TITLE_BAR, window.minimumSizeHint()
        window.resize(1280, 720 - TITLE_BAR)
        QApplication.processEvents()
        assert window.size() == QSize(1280, 720 - TITLE_BAR)
        window.resize(1280, 720)
        QApplication.processEvents()
        assert window.size() == QSize(1280, 720)
        dash = window.docks["Dashboard"]
        assert not window.dashboard.expanded and not window.dashboard.details.isVisible()
        assert dash.height() <= window.dashboard.compact_height() + 30
        assert window.jobs.height() >= 0.6 * 720, "the Jobs table gets the height"
        save_screenshot(window, "first-run-1280x720")
        window.resize(1920, 1080)
        QApplication.processEvents()
        assert dash.height() <= window.dashboard.compact_height() + 30
        window.dashboard.expand_button.click()
        QApplication.processEvents()
        assert window.dashboard.expanded and window.dashboard.details.isVisible()
        assert dash.height() > window.dashboard.compact_height() + 100
        assert window.settings.value(DASHBOARD_KEY) in (True, "true")
        save_screenshot(window, "first-run-1920x1080-dashboard-expanded")
        window.dashboard_action.trigger()  # View > Dashboard details collapses it again
        QApplication.processEvents()
        assert not window.dashboard.expanded
        assert dash.height() <= window.dashboard.compact_height() + 30

        # G. empty states: Jobs says how to start
        hint = window.jobs.empty_hint
        assert hint.isVisible() and "No orders yet" in hint.text() and "Templates" in hint.text()
        assert "Run…" in hint.text()
        save_screenshot(window.jobs, "jobs-empty-state")

        # G. Help: every shortcut of the window, where the data lives, versions
        help_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Help")
        texts = [a.text() for a in help_menu.actions()]
        assert texts == ["&Keyboard shortcuts", "&Where the data lives", "&About labconsole"]
        dialog = window.show_shortcuts()
        listed = dialog.text.toPlainText()
        for shortcut in collect_shortcuts(window, window.docks):
            assert shortcut.keys in listed and shortcut.what in listed
        for keys in ("Del", "Ctrl+R", "Ctrl+Shift+R", "Ctrl+F", "Ctrl+Z", "F1", "Ctrl+Q"):
            assert keys in listed, keys
        save_screenshot(dialog, "help-shortcuts")
        dialog = window.show_data_locations()
        text = dialog.text.toPlainText()
        assert str(data_dir) in text and str(runtime.store.path) in text and "console.ini" in text
        assert "Data Services" in text
        dialog = window.show_about()
        text = dialog.text.toPlainText()
        for name, version in versions().items():
            assert name in text and version in text
        assert versions()["Qt"].startswith("6.")
        dialog.close()
    finally:
        window.close()
        qrun(runtime.close(), timeout_ms=30_000)


def test_data_services_address_is_in_help(store, data_dir, qtbot, qrun):
    from core.dataservices.config import resolve_url
    from core.dataservices.link import DataServicesLink

    runtime = Runtime.build(data_dir, store=store, workcell=None)
    link = DataServicesLink(runtime, resolve_url(None, config_file=None), host="127.0.0.1", port=0)
    runtime.link = link
    window = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(window)
    try:
        url = qrun(link.start(), timeout_ms=20_000)
        assert url.startswith("http://127.0.0.1:")
        dialog = window.show_data_locations()
        assert f"{url} (embedded in this console)" in dialog.text.toPlainText()
        dialog.close()
    finally:
        qrun(link.stop(), timeout_ms=20_000)
        window.close()
        qrun(runtime.close())
