"""The Jobs panel over a store with history: the live window in memory, the rest searched on disk.

A real store holds runs of many ages (written by the store's own operations at chosen times);
the panel loads only unfinished orders and those finished in the last ``live_days``, and its
"Search all history" mode pages in the rest (store and archive) from SQLite off the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from conftest import save_screenshot
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QSplitter
from test_history import add_run

from console.bridge import EventBridge
from core.archive import Archiver
from core.orders import OrderStatus
from core.runtime import Runtime
from panels.detail import DetailPanel
from panels.jobs import JobsPanel
from panels.jobs_filter import OrderFilter
from panels.theme import apply_theme

DAY = 86400.0
NOW = time.time()


class Panel:
    """The Jobs panel over ``store`` in a window, loaded."""

    def __init__(self, store, qtbot, qrun, *, live_days: float | None = None, size=(1280, 720),
                 now=time.time) -> None:
        self.runtime = Runtime.build(store.path.parent, store=store, workcell=None, metrics=False)
        self.bridge = EventBridge(self.runtime.ledger.bus, interval_ms=10)
        self.window = QSplitter()
        self.window.resize(*size)
        self.jobs = JobsPanel(self.runtime, self.bridge, self.window, live_days=live_days, now=now)
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
        panel.jobs.expand_button.click()
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
        qrun(panel.runtime.ledger.set_status(run, OrderStatus.Running, who="alice", why="retry"))
        qtbot.waitUntil(lambda: panel.jobs.model.get(run) is not None, timeout=5000)
        assert panel.jobs.model.get(run)[4] == int(OrderStatus.Running)
    finally:
        panel.close()


class JumpClock:
    """Wall time plus an offset a test moves forward (days pass in an instant)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset


def test_finished_orders_leave_the_table_as_they_age_past_live_days(store, ages, qtbot, qrun):
    """Six days later the run finished two days ago is eight days old: the periodic prune takes
    it out of the table (with its steps) while the console runs; the run canceled an hour ago,
    the live runs and their old finished steps stay, and so does the selection of another row."""
    clock = JumpClock()
    panel = Panel(store, qtbot, qrun, now=clock.now)
    jobs = panel.jobs
    try:
        model = jobs.live_model
        assert jobs.prune_timer.isActive()
        assert all(model.get(o) is not None for o in ages["recent"])
        older = jobs.older_orders
        jobs.expand_button.click()
        assert jobs.select_orders([ages["today"][0], ages["old_running"][1]]) == 2
        jobs.prune_timer.setInterval(20)  # the timer of the running console, ticking faster
        qtbot.wait(100)
        assert all(model.get(o) is not None for o in ages["recent"]), "nothing aged out yet"
        clock.offset = 6 * DAY
        qtbot.waitUntil(lambda: model.get(ages["recent"][0]) is None, timeout=5000)
        assert not any(model.get(o) for o in ages["recent"]), "the run leaves with its steps"
        live = {*ages["old_running"], *ages["old_queued"], *ages["today"]}
        assert set(model.ix.all) == live
        assert model.rowCount() == len(live)
        assert sorted(jobs.selected_ids()) == sorted([ages["today"][0], ages["old_running"][1]])
        assert jobs.older_orders == older + len(ages["recent"])
        assert f"{jobs.older_orders} older" in jobs.summary.text()
        # the canceled run ages out a day later; the live runs never do
        clock.offset = 8 * DAY
        qtbot.waitUntil(lambda: model.get(ages["today"][0]) is None, timeout=5000)
        left = {*ages["old_running"], *ages["old_queued"]}
        assert set(model.ix.all) == left
        assert jobs.selected_ids() == [ages["old_running"][1]]
        # what the prune left is what a new load reads
        assert qrun(jobs.load()) == len(left) and set(jobs.live_model.ix.all) == left
    finally:
        panel.close()


# ---------------------------------------------------------------------- Search all history


@pytest.fixture
def year(store):
    """40 runs finished 10-400 days ago (half of them with a jammed lid), the oldest 20 archived,
    and a few live ones."""
    made: dict[str, list[str]] = {"old": [], "lid": [], "live": []}
    for k in range(40):
        lid = k % 2 == 0
        ids = add_run(store, at=NOW - (400 - k * 10) * DAY, status=OrderStatus.Error if lid else OrderStatus.Complete,
                      details="lid jammed" if lid else None, steps=2)
        made["old"] += ids
        if lid:
            made["lid"] += [ids[0], ids[-1]]  # the run and its failed step say why
    made["live"] += add_run(store, at=NOW - DAY) + add_run(store, at=NOW - 3600, status=OrderStatus.Running)
    result = Archiver(store).run_sync(NOW - 200 * DAY)
    assert result.orders == 60  # 20 runs of 3 orders
    made["archived"] = made["old"][:60]
    return made


def history_on(panel, qtbot) -> None:
    qtbot.mouseClick(panel.jobs.filter_bar.history_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.jobs.history_matched is not None, timeout=5000)


def test_search_all_history_reaches_the_archive_and_pages_in(store, year, qtbot, qrun, monkeypatch):
    monkeypatch.setattr("panels.jobs.HISTORY_PAGE", 50)
    panel = Panel(store, qtbot, qrun, size=(1920, 1080))
    try:
        jobs, bar = panel.jobs, panel.jobs.filter_bar
        assert jobs.live_model.total == len(year["live"])
        history_on(panel, qtbot)
        assert jobs.history_mode and jobs.view.model() is jobs.history_model
        total = len(year["old"]) + len(year["live"])
        note = bar.history_note.text()
        oldest = time.strftime("%Y-%m-%d", time.localtime(NOW - 400 * DAY))
        assert f"All history back to {oldest}: {total} orders (60 archived)" in note, note
        assert f"{total} match" in note and "50 shown" in note
        assert bar.more_button.isVisible() and not bar.priority.isEnabled()
        # newest first; the next page comes with Load more, then with scrolling to the end
        assert jobs.model.rowCount() == 50
        qtbot.mouseClick(bar.more_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: jobs.model.rowCount() == 100, timeout=5000)
        bar_ = jobs.view.verticalScrollBar()
        bar_.setValue(bar_.maximum())
        qtbot.waitUntil(lambda: jobs.model.rowCount() == total, timeout=5000)
        assert set(jobs.history_model.ix.all) == {*year["old"], *year["live"]}
        assert jobs.archived_ids == set(year["archived"])
        assert not bar.more_button.isVisible()
        save_screenshot(panel.window, "jobs-history-1920x1080")

        # text and status search on disk: the oracle is the list of runs made with that detail
        bar.search.setText("lid")
        bar.search.returnPressed.emit()
        qtbot.waitUntil(lambda: jobs.history_matched is not None and jobs.model.rowCount() == 40, timeout=5000)
        assert set(jobs.history_model.ix.all) == set(year["lid"])
        assert jobs.history_matched == (40, False) and "40 match" in bar.history_note.text()
        panel.window.resize(1280, 720)
        save_screenshot(panel.window, "jobs-history-search-1280x720")
        apply_theme(QApplication.instance(), "dark")
        try:
            QApplication.processEvents()
            save_screenshot(panel.window, "jobs-history-search-1280x720-dark")
            panel.window.resize(1920, 1080)
            save_screenshot(panel.window, "jobs-history-search-1920x1080-dark")
        finally:
            apply_theme(QApplication.instance(), "light")

        # back to the live window: the same orders as before, the filter kept
        qtbot.mouseClick(bar.history_button, Qt.MouseButton.LeftButton)
        assert not jobs.history_mode and jobs.view.model() is jobs.live_model
        assert jobs.history_model.rowCount() == 0 and bar.priority.isEnabled()
        assert jobs.live_model.filter.text == "lid"
    finally:
        panel.close()


def test_a_new_history_search_cancels_the_one_running(store, year, qtbot, qrun):
    panel = Panel(store, qtbot, qrun)
    try:
        jobs = panel.jobs
        history_on(panel, qtbot)
        gate = threading.Event()
        # both reader threads busy: the first search waits in the queue, then is superseded
        blockers = [asyncio.ensure_future(store.read(lambda c: gate.wait(10))) for _ in range(2)]
        first = jobs.search_history(OrderFilter(text="lid"))
        second = jobs.search_history(OrderFilter(statuses=frozenset({OrderStatus.Complete}), text="ELISA"))
        qtbot.waitUntil(first.done, timeout=2000)
        assert first.cancelled()
        gate.set()
        qtbot.waitUntil(lambda: second.done() and all(b.done() for b in blockers), timeout=5000)
        qtbot.waitUntil(lambda: jobs.history_matched is not None, timeout=5000)
        rows = jobs.history_model.ix.all.values()
        assert rows and all(r[4] == int(OrderStatus.Complete) for r in rows)
        assert not set(jobs.history_model.ix.all) & set(year["lid"])
    finally:
        panel.close()


def test_an_archived_order_shows_its_detail_history_and_audit_read_only(store, year, qtbot, qrun):
    panel = Panel(store, qtbot, qrun, size=(1600, 900))
    detail = DetailPanel(panel.runtime, panel.bridge, panel.window)
    panel.window.addWidget(detail)
    panel.jobs.order_selected.connect(detail.show_order)
    try:
        jobs = panel.jobs
        history_on(panel, qtbot)
        bar_ = jobs.view.verticalScrollBar()
        while jobs.history_page.next_cursor is not None:
            task = jobs.load_more_history()
            qtbot.waitUntil(task.done, timeout=5000)
        run = year["lid"][0]  # archived, Error
        assert run in jobs.archived_ids
        assert jobs.select_order(run)
        qtbot.waitUntil(lambda: detail.data is not None and detail.data.order_id == run, timeout=5000)
        assert detail.data.order.status == OrderStatus.Error
        assert [c.identifier for c in detail.data.children] == year["old"][1:3]
        assert [t.to_status for t, _ in detail.data.transitions if t.order_id == run][-1] == OrderStatus.Error
        assert detail.data.audit == [] or all(a.target in set(year["old"][:3]) for a in detail.data.audit)
        assert not any(button.isEnabled() for button in detail.buttons.values())  # read-only there too
        # read-only: no action but Details in its menu, and an action asked for says why not
        menu = jobs.build_menu(jobs.model.row_of(run))
        assert [a.objectName() for a in menu.actions() if a.objectName()] == ["details"]
        assert jobs.trigger("retry") is None
        assert "is archived (read-only" in jobs.status_line.text()
        assert not any(b.isEnabled() for b in jobs.bulk_buttons.values())
        save_screenshot(panel.window, "jobs-history-archived-detail")
        # an order of the store outside the live window stays actionable
        kept = year["lid"][-2]  # a run of the store, Error
        assert kept not in jobs.archived_ids and jobs.live_model.get(kept) is None
        assert jobs.select_order(kept)
        menu = jobs.build_menu(jobs.model.row_of(kept))
        names = [a.objectName() for a in menu.actions() if a.objectName()]
        assert "archived" not in menu.actions()[0].text() and "retry" in names and "details" in names
        del bar_
    finally:
        detail.shutdown()
        panel.close()
