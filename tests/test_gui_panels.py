"""Every dock panel shares one base: runtime and bridge, a refresh timer that runs only while the
panel is shown, theme changes once per change, an idempotent shutdown that stops listening."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QApplication

from console.bridge import EventBridge
from core.runtime import Runtime
from panels.base import Panel
from panels.dashboard import DashboardPanel
from panels.detail import DetailPanel
from panels.jobs import JobsPanel
from panels.metrics import MetricsPanel
from panels.robots import RobotsPanel
from panels.templates import TemplatesPanel
from panels.theme import apply_theme

EVENTS = "2events(PyObject)"
PANELS = (DashboardPanel, JobsPanel, DetailPanel, RobotsPanel, MetricsPanel, TemplatesPanel)


@pytest.fixture
def runtime(store, data_dir):
    return Runtime.build(data_dir, store=store, workcell=None)


@pytest.mark.parametrize("cls", PANELS, ids=lambda c: c.__name__)
def test_panel_base_timer_runs_only_while_shown_and_shutdown_is_idempotent(cls, runtime, qtbot, qrun,
                                                                           qapp):
    bridge = EventBridge(runtime.ledger.bus)
    panel = cls(runtime, bridge)
    assert bridge.receivers(EVENTS) == (0 if cls is MetricsPanel else 1)
    qtbot.addWidget(panel)
    assert isinstance(panel, Panel)
    assert panel.runtime is runtime and panel.bridge is bridge
    if isinstance(panel, JobsPanel):
        qrun(panel.load())
    assert not panel.refresh_timer.isActive(), "hidden: no refresh"
    panel.show()
    qtbot.waitExposed(panel)
    ticking = panel.wants_refresh()
    assert panel.refresh_timer.isActive() == ticking
    if cls in (DashboardPanel, JobsPanel, RobotsPanel, MetricsPanel):
        assert ticking and panel.refresh_timer.interval() == cls.REFRESH_MS
    panel.hide()
    assert not panel.refresh_timer.isActive(), "hidden again: the timer stops"
    panel.show()
    assert panel.refresh_timer.isActive() == ticking

    themed = []
    panel.apply_theme = themed.append  # what the panel does on a theme change, counted
    apply_theme(qapp, "dark")
    apply_theme(qapp, "light")
    assert [t.name for t in themed] == ["dark", "light"], "once per theme change"

    panel.shutdown()
    panel.shutdown()  # the main window at close, then again: nothing happens twice
    assert panel.is_shut_down and not panel.refresh_timer.isActive()
    apply_theme(qapp, "light")
    assert len(themed) == 2, "a shut-down panel no longer listens to theme changes"
    assert bridge.receivers(EVENTS) == 0, "a shut-down panel no longer listens to the bridge"
    panel.hide()
    panel.show()
    assert not panel.refresh_timer.isActive(), "no refresh after shutdown"
    panel.hide()
    bridge.close()
    QApplication.processEvents()


def test_panels_and_console_hold_no_sql_the_store_answers_their_queries(store):
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b")
    found = [f"{p.relative_to(root)}:{n}" for folder in ("panels", "console")
             for p in sorted((root / folder).rglob("*.py"))
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if sql.search(line)]
    assert not found, f"SQL outside core/store.py: {found}"

    from core import demo
    made = demo.generate(store, 50)
    assert store.scan_order_rows(lambda rows: [r[0] for r in rows]) == [r[0] for r in store.order_rows()]
    assert len(store.order_rows()) == made


def test_a_task_ending_after_its_window_was_deleted_reports_to_nobody(qtbot, qrun):
    """A panel's task (a preview, an ETA) may end after its window was closed and deleted: it
    must not emit from the deleted object (the loop reported "Signal source has been deleted")."""
    import asyncio

    import shiboken6
    from PySide6.QtWidgets import QWidget

    from panels.actions import TaskRunner

    parent = QWidget()
    runner = TaskRunner(parent)
    reports: list[tuple[str, object, object]] = []
    runner.finished.connect(lambda *args: reports.append(args))

    async def scenario() -> None:
        gate = asyncio.Event()

        async def work() -> int:
            await gate.wait()
            return 1

        task = runner.run(work(), "late")
        shiboken6.delete(parent)  # the window goes, its runner with it
        gate.set()
        assert await task == 1
        await asyncio.sleep(0)

    qrun(scenario())
    assert reports == []
