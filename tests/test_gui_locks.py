"""A "hands in the cell" lock over a real runtime (store, dispatcher, simulated instruments,
virtual clock): Robots marks the claimed instruments (card, table state and detail) and the
Dashboard lists the lock until it is released from the Inbox; the release is audited."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from console.bridge import EventBridge
from core.clock import VirtualClock
from core.inbox import Inbox
from core.runtime import Runtime
from core.workcell import parse_workcell
from panels.dashboard import WARNING, DashboardPanel
from panels.robots import COLUMNS, RobotsPanel
from panels.theme import apply_theme

STATE, DETAIL = COLUMNS.index("State"), COLUMNS.index("Detail")


@pytest.fixture
def cell(store, data_dir, qtbot, qrun):
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1)
    qrun(rt.start(templates_dir=None))
    qrun(clock.settle())
    inbox = Inbox.of(rt)
    bridge = EventBridge(rt.ledger.bus)
    robots = RobotsPanel(rt, bridge)
    dashboard = DashboardPanel(rt, bridge, expanded=True)
    for panel in (robots, dashboard):
        qtbot.addWidget(panel)
        panel.show()
    robots.resize(1280, 720)
    dashboard.resize(1400, 300)
    yield rt, clock, bridge, robots, dashboard, inbox
    for panel in (robots, dashboard):
        panel.shutdown()
        panel.close()
    bridge.close()
    qrun(rt.close())


def _row(panel, iid):
    return panel.model.row_of(iid)


def test_a_lock_shows_in_robots_and_dashboard_until_released(cell, qtbot, qrun):
    rt, clock, bridge, robots, dashboard, inbox = cell
    item_id = qrun(inbox.lock(["Sealer", "Arm"], who="ann", reason="clearing a jammed plate"))
    qrun(clock.settle())
    bridge.flush()
    qtbot.waitUntil(lambda: set(robots.locks) == {"Sealer", "Arm"}, timeout=5000)
    robots.refresh()
    row = _row(robots, "Sealer")
    assert robots.model.data(robots.model.index(row, STATE)) == "Hands in cell (ann)"
    assert robots.model.data(robots.model.index(row, DETAIL)) == "Hands in the cell: ann — clearing a jammed plate"
    assert robots.model.data(robots.model.index(_row(robots, "Reader1"), STATE)) != "Hands in cell (ann)"
    card = robots.cards["Arm"]
    assert card.state.text() == "Hands in cell"
    assert "ann — clearing a jammed plate" in card.state_detail.full_text()
    assert card.toolTip().startswith(
        "<b>Hands in the cell: ann — clearing a jammed plate — release it in the Inbox</b><br>")
    assert "Driver" in card.toolTip()  # and who the instrument is, below
    robots.select("Sealer")  # Enable would bypass the lock: refused, pointing at the Inbox
    assert not robots.actions_by_key["enable"].isEnabled()
    robots.request_action("enable")
    assert "release the lock in the Inbox" in robots.feedback.text()
    assert not {v.id: v for v in rt.instruments()}["Sealer"].enabled
    qtbot.waitUntil(lambda: any(a.key == f"lock:{item_id}" for a in dashboard.current_alerts), timeout=5000)
    alert = next(a for a in dashboard.current_alerts if a.key == f"lock:{item_id}")
    assert alert.severity == WARNING
    assert alert.title == "Hands in the cell: ann — clearing a jammed plate on Sealer, Arm"
    assert "released in the Inbox" in alert.detail
    app = QApplication.instance()
    for theme in ("light", "dark"):
        apply_theme(app, theme)
        app.processEvents()
        save_screenshot(robots, f"robots-hands-in-cell-{theme}")
        save_screenshot(dashboard, f"dashboard-hands-in-cell-{theme}")
    apply_theme(app, "light")
    robots.table_action.trigger()
    robots.resize(1920, 1080)
    app.processEvents()
    save_screenshot(robots, "robots-hands-in-cell-table-light-1920")

    qrun(inbox.answer(item_id, {"release": "yes", "reason": "plate removed"}, who="bob"))
    qrun(clock.settle())
    bridge.flush()
    qtbot.waitUntil(lambda: not robots.locks, timeout=5000)
    robots.refresh()
    assert robots.model.data(robots.model.index(_row(robots, "Sealer"), STATE)) != "Hands in cell (ann)"
    assert robots.cards["Arm"].state.text() != "Hands in cell"
    qtbot.waitUntil(lambda: not any(a.key.startswith("lock:") for a in dashboard.current_alerts), timeout=5000)
    release = [a for a in rt.audit() if a.action == "release lock"]
    assert [(a.who, a.reason, a.target) for a in release] == [("bob", "plate removed", "Sealer,Arm")]
    assert all(v.enabled for v in rt.instruments())


def test_locks_are_read_when_the_panels_open(cell, store, data_dir, qtbot, qrun):
    """A console started while a lock is open (after a restart) shows it at once."""
    rt, clock, bridge, _robots, _dashboard, inbox = cell
    qrun(inbox.lock(["Reader2"], who="ann", reason=None))
    fresh = RobotsPanel(rt, bridge)
    qtbot.addWidget(fresh)
    try:
        fresh.refresh()
        row = fresh.model.row_of("Reader2")
        assert fresh.model.data(fresh.model.index(row, STATE)) == "Hands in cell (ann)"
        assert fresh.model.data(fresh.model.index(row, DETAIL), Qt.ItemDataRole.ToolTipRole) == \
            "Hands in the cell: ann"
    finally:
        fresh.shutdown()
        fresh.close()
