"""The Dashboard's lists take the card colour of the theme in use, also after a theme change
(a palette set once kept the light theme's white under the dark theme's cards)."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from PySide6.QtGui import QColor, QPalette

from console.bridge import EventBridge
from core.runtime import Runtime
from panels.dashboard import DashboardPanel
from panels.theme import apply_theme, load_theme


@pytest.fixture
def light_again(qapp):
    yield
    apply_theme(qapp, "light")


def background(view) -> QColor:
    """The colour drawn in the middle of the list's empty area."""
    image = view.viewport().grab().toImage()
    return QColor(image.pixel(image.width() // 2, image.height() - 3))


@pytest.mark.parametrize("start", ["light", "dark"])
def test_dashboard_lists_follow_the_theme(start, store, data_dir, qapp, qtbot, light_again):
    apply_theme(qapp, start)
    runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    bridge = EventBridge(runtime.ledger.bus, interval_ms=10)
    panel = DashboardPanel(runtime, bridge, None, expanded=True)
    qtbot.addWidget(panel)
    panel.resize(1280, 400)
    panel.show()
    try:
        for name in (start, "dark" if start == "light" else "light", "dark"):
            apply_theme(qapp, name)
            card = load_theme(name).color("card")
            for view in (panel.alerts_view, panel.activity_view):
                assert view.viewport().palette().color(QPalette.ColorRole.Base) == card, (name, view.objectName())
                assert background(view) == card, (name, view.objectName(), background(view).name())
        save_screenshot(panel, f"dashboard-lists-dark-from-{start}")
    finally:
        panel.shutdown()
        bridge.close()
        panel.close()
