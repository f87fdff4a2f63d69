"""The Jobs panel over a store with history: the live window in memory, the rest searched on disk.

A real store holds runs of many ages (written by the store's own operations at chosen times);
the panel loads only unfinished orders and those finished in the last ``live_days``, and its
"Search all history" mode pages in the rest (store and archive) from SQLite off the loop.
"""

from __future__ import annotations

import time

import pytest
from conftest import save_screenshot
from PySide6.QtWidgets import QSplitter
from test_history import add_run

from console.bridge import EventBridge
from core.orders import OrderStatus
from core.runtime import Runtime
from panels.jobs import JobsPanel

DAY = 86400.0
NOW = time.time()


class Panel:
    """The Jobs panel over ``store`` in a window, loaded."""

    def __init__(self, store, qtbot, qrun, *, live_days: float | None = None, size=(1280, 720)) -> None:
        self.runtime = Runtime.build(store.path.parent, store=store, workcell=None, metrics=False)
        self.bridge = EventBridge(self.runtime.core.bus, interval_ms=10)
        self.window = QSplitter()
        self.window.resize(*size)
        self.jobs = JobsPanel(self.runtime, self.bridge, self.window, live_days=live_days)
        self.window.addWidget(self.jobs)
        qtbot.addWidget(self.window)
        self.window.show()
        self.loaded = qrun(self.jobs.load())

    def close(self) -> None:
        self.jobs.shutdown()
        self.bridge.close()
        self.window.close()


@pytest.fixture
def ages(store):
    """Runs of every age: id lists by name."""
    return {
        "old_done": add_run(store, at=NOW - 40 * DAY),
        "old_failed": add_run(store, at=NOW - 20 * DAY, status=OrderStatus.Error, details="lid jammed"),
        "ten_days": add_run(store, at=NOW - 10 * DAY),
        "old_running": add_run(store, at=NOW - 30 * DAY, status=OrderStatus.Running),
        "old_queued": add_run(store, at=NOW - 25 * DAY, status=OrderStatus.Scheduled, steps=2),
        "recent": add_run(store, at=NOW - 2 * DAY),
        "today": add_run(store, at=NOW - 3600, status=OrderStatus.Canceled),
    }


def test_start_up_reads_only_the_live_window(store, ages, qtbot, qrun):
    panel = Panel(store, qtbot, qrun)
    try:
        model = panel.jobs.model
        live = {*ages["old_running"], *ages["old_queued"], *ages["recent"], *ages["today"]}
        assert set(model.ix.all) == live
        assert panel.loaded == len(live) == model.rowCount()
        # the live run's old finished steps come with it: it is shown whole
        assert all(model.row_of(o) is not None for o in ages["old_running"])
        for name in ("old_done", "old_failed", "ten_days"):
            assert not any(model.get(o) for o in ages[name]), name
        older = store.count_orders() - len(live)
        assert panel.jobs.older_orders == older == 12
        summary = panel.jobs.summary.text()
        assert summary.startswith(f"{len(live)} orders") and "last 7 days" in summary
        assert "12 older" in summary
        save_screenshot(panel.window, "jobs-live-window-1280x720")
    finally:
        panel.close()


def test_live_days_from_config_ini(store, ages, data_dir, qtbot, qrun):
    (data_dir / "config.ini").write_text("[JOBS]\nlive_days = 14\n", encoding="utf-8")
    panel = Panel(store, qtbot, qrun)
    try:
        assert panel.jobs.live_days == 14
        assert all(panel.jobs.model.get(o) is not None for o in ages["ten_days"])
        assert not any(panel.jobs.model.get(o) for o in ages["old_failed"])
    finally:
        panel.close()


def test_a_bad_live_days_is_named_and_the_default_used(store, ages, data_dir, qtbot, qrun):
    config = data_dir / "config.ini"
    config.write_text("[STORE]\nbackup_keep = 3\n\n[JOBS]\nlive_days = soon\n", encoding="utf-8")
    panel = Panel(store, qtbot, qrun)
    try:
        assert panel.jobs.live_days == 7
        text = panel.jobs.status_line.text()
        assert f"{config}:5" in text and "JOBS.live_days" in text and "'soon'" in text, text
        assert all(panel.jobs.model.get(o) is not None for o in ages["recent"])  # the console works on
    finally:
        panel.close()


def test_an_old_order_that_changes_joins_the_window(store, ages, qtbot, qrun):
    panel = Panel(store, qtbot, qrun)
    try:
        run = ages["old_failed"][0]
        assert panel.jobs.model.get(run) is None
        qrun(panel.runtime.core.set_status(run, OrderStatus.Running, who="alice", why="retry"))
        qtbot.waitUntil(lambda: panel.jobs.model.get(run) is not None, timeout=5000)
        assert panel.jobs.model.get(run)[4] == int(OrderStatus.Running)
    finally:
        panel.close()
