"""Jobs follows the time bar: at a past moment the table shows the orders as they stood then,
read only under a banner, and returns to live on Now. A real runtime on a virtual clock, the
real store and its transition log (core.timetravel.TimeMachine), real widgets."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from test_gui_jobs import Lab

from console.app import settings_for
from console.main_window import MainWindow
from core.clock import VirtualClock
from core.orders import OrderStatus
from core.runtime import Runtime
from core.templates import template_from_dict
from core.timetravel import TimeMachine
from core.workcell import parse_workcell
from panels.jobs_filter import STATUS
from panels.jobs_model import ETA_BAND_COLUMN, ETA_COLUMN
from panels.timetravel import when


@pytest.fixture
def faulty_lab(store, data_dir, qtbot, qrun):
    """The sealer fails its first three orders for good: three runs end in Error."""
    made = Lab(store, data_dir, qtbot, qrun, faults="fail_next@Sealer=3,retryable=false")
    yield made
    made.close()


def _statuses(model) -> dict[str, int]:
    """Every order the table holds (whatever the filter or the tree) with its status."""
    return {oid: row[STATUS] for oid, row in model.ix.all.items()}


def _show(lab, at):
    moment = lab.qrun(TimeMachine(lab.rt.store).moment(at))
    task = lab.jobs.show_moment(moment)
    lab.qtbot.waitUntil(task.done, timeout=10_000)
    task.result()
    return moment


def test_a_past_moment_shows_each_order_as_it_stood_then_read_only(faulty_lab, qtbot):
    lab = faulty_lab
    jobs = lab.jobs
    lab.load()
    runs = lab.start_runs(5)
    lab.advance(20)
    first_at = lab.clock.now()
    at_first = _statuses(jobs.live_model)
    assert {OrderStatus.Running, OrderStatus.Scheduled} & {OrderStatus(s) for s in at_first.values()}
    lab.until(lambda: not any(lab.rt.run_is_active(r) for r in runs))
    failed = [r for r in runs if jobs.live_model.get(r)[STATUS] == OrderStatus.Error]
    assert len(failed) == 3
    lab.advance(10)
    second_at = lab.clock.now()
    at_second = _statuses(jobs.live_model)
    lab.advance(5)  # what follows happens after the moment (a moment includes its own instant)
    # afterwards: a failed run is retried and completes, new runs arrive
    lab.qrun(lab.rt.retry(failed[0], who="tester", reason="sealer fixed"))
    lab.until(lambda: not lab.rt.run_is_active(failed[0]))
    later = lab.start_runs(2)
    lab.advance(5)
    assert jobs.live_model.get(failed[0])[STATUS] == OrderStatus.Complete

    jobs.filter_bar.set_history_mode(True)  # searching all history: the past takes its place
    assert jobs.history_mode
    moment = _show(lab, first_at)
    assert jobs.model is jobs.past_model and not jobs.history_mode
    assert not jobs.filter_bar.history_button.isEnabled()
    assert _statuses(jobs.past_model) == at_first, "every order with its status then, none created later"
    assert jobs.past_banner.isVisible() and when(moment.at) in jobs.past_banner.text()
    assert jobs.view.isColumnHidden(ETA_COLUMN) and jobs.view.isColumnHidden(ETA_BAND_COLUMN)
    assert f"as they stood at {when(moment.at)}" in jobs.summary.text()
    # read only: no action, no bulk button, the menu offers details only
    jobs.select_order(runs[0])
    assert jobs.current_id() == runs[0]
    assert not any(b.isEnabled() for b in jobs.bulk_buttons.values())
    assert jobs.trigger("cancel") is None
    assert "read only" in jobs.status_line.text()
    menu = jobs.build_menu(jobs.model.row_of(runs[0]))
    assert menu.findChild(QAction, "details") is not None and menu.findChild(QAction, "cancel") is None
    menu.deleteLater()
    assert lab.rt.run_is_active(runs[0]) is False  # nothing was done to it

    # the second moment: the failed run that was retried later stood in Error then
    _show(lab, second_at)
    past = _statuses(jobs.past_model)
    assert past == at_second
    assert past[failed[0]] == OrderStatus.Error
    assert not set(later) & set(past)
    # a filter applies to the past as to the live table
    jobs.filter_bar.choose_view("Needs attention")
    shown = {jobs.model.order_id(r) for r in range(jobs.model.rowCount())}
    assert set(failed) <= shown and all(jobs.model.get(o)[STATUS] in (OrderStatus.Error, OrderStatus.Paused,
                                                                       OrderStatus.Unknown)
                                        or jobs.model.get(o)[1] is not None for o in shown)

    # live again: the table follows the store, actions come back
    jobs.filter_bar.choose_view("All orders")
    jobs.show_moment(None)
    assert jobs.model is jobs.live_model and not jobs.past_banner.isVisible()
    assert jobs.filter_bar.history_button.isEnabled()
    assert not jobs.view.isColumnHidden(ETA_COLUMN) and not jobs.view.isColumnHidden(ETA_BAND_COLUMN)
    assert jobs.live_model.get(failed[0])[STATUS] == OrderStatus.Complete
    assert set(later) <= set(_statuses(jobs.model))
    jobs.select_order(failed[1])
    assert jobs.bulk_buttons["retry"].isEnabled()


READ = {"name": "Read only", "inputs": [{"name": "plate", "type": "string"}],
        "definition": {"steps": [{"id": "read", "kind": "PlateReader.ReadPlate"}]}}


@pytest.fixture
def window_lab(store, data_dir, qtbot, qrun):
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1)
    qrun(rt.start(templates_dir=None))
    qrun(rt.engine.publish(template_from_dict(READ)))
    runs = [qrun(rt.start_run("Read only", {"plate": f"P{i}"}, who="tester")) for i in range(6)]
    qrun(clock.advance(30))
    busy_at = clock.now()
    qrun(clock.run_until(lambda: not any(rt.run_is_active(r) for r in runs)))
    qrun(rt.cancel(qrun(rt.start_run("Read only", {"plate": "P9"}, who="tester")), who="tester",
                   reason="wrong plate"))
    qrun(clock.advance(60))
    window = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    qrun(window.jobs.load())
    yield rt, window, busy_at, runs
    window.close()
    qrun(rt.close())


def test_the_time_bar_takes_jobs_to_the_past_and_now_brings_it_back(window_lab, qtbot):
    rt, window, busy_at, runs = window_lab
    jobs, bar = window.jobs, window.time_bar
    jobs.filter_bar.choose_view("All orders")
    jobs.expand_all(True)
    live = {jobs.model.order_id(r) for r in range(jobs.model.rowCount())}
    loads = window.time_travel.loads
    bar.field.setText(when(busy_at))
    qtbot.keyClick(bar.field, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: window.time_travel.loads > loads and jobs.model is jobs.past_model
                    and jobs._past_task is not None and jobs._past_task.done(), timeout=10_000)
    assert jobs.moment is window.time_travel.moment and jobs.past_banner.isVisible()
    statuses = {OrderStatus(jobs.past_model.get(r)[STATUS]) for r in runs}
    assert OrderStatus.Running in statuses, "a plate was being read then"
    assert all(jobs.past_model.get(r)[STATUS] != OrderStatus.Complete or
               jobs.live_model.get(r)[10] <= busy_at for r in runs)
    assert jobs.model.total < len(live), "the run created later is not shown"
    assert not any(b.isEnabled() for b in jobs.bulk_buttons.values())
    window.docks["Jobs"].raise_()
    for theme in ("light", "dark"):
        window.set_theme(theme)
        for w, h in ((1280, 720), (1920, 1080)):
            window.resize(w, h)
            qtbot.wait(60)
            save_screenshot(window, f"jobs-past-{w}x{h}-{theme}")
    window.set_theme("light")

    qtbot.mouseClick(bar.now_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: jobs.model is jobs.live_model, timeout=5000)
    assert jobs.moment is None and not jobs.past_banner.isVisible()
    assert all(rt.store.get_order(r).status == OrderStatus.Complete for r in runs)
    assert all(jobs.model.get(r)[STATUS] == OrderStatus.Complete for r in runs)


def test_an_order_changed_twice_in_one_instant_stands_in_its_last_status_then(store, qrun):
    """Transitions sharing a time are ordered by their seq: a step that started and failed in
    the same instant, then was retried, stood in Error at that instant."""
    from core.ledger import Ledger
    from core.orders import Order
    from panels.jobs import rows_at

    clock = VirtualClock.for_store(store)
    store.clock = clock  # the store's times are the virtual clock's (as a runtime sets it)
    ledger = Ledger(store)
    order = qrun(ledger.create_order(Order(templateName="Sealer.Seal")))
    oid = order.identifier
    qrun(clock.advance(10))
    for status in (OrderStatus.Scheduled, OrderStatus.Running, OrderStatus.Error):  # one instant
        qrun(ledger.set_status(oid, status, why="seal failed"))
    failed_at = clock.now()
    qrun(clock.advance(60))
    qrun(ledger.set_status(oid, OrderStatus.Running, why="retried"))
    qrun(ledger.set_status(oid, OrderStatus.Complete, why="sealed"))
    row = store.read_sync(lambda c: c.execute(
        "SELECT id, parent_id, template_name, template_version, status, priority, numeric_priority, "
        "assigned_to, created, started, ended, status_details FROM orders WHERE id = ?", (oid,)).fetchone())
    assert row[STATUS] == OrderStatus.Complete
    moment = qrun(TimeMachine(store).moment(failed_at))
    then = store.read_sync(lambda c: rows_at(c, [row], moment))
    assert [(r[0], r[STATUS]) for r in then] == [(oid, int(OrderStatus.Error))]
    assert then[0][10] is None or then[0][10] <= failed_at, "no end time from after the moment"
    before = qrun(TimeMachine(store).moment(failed_at - 5))
    assert [r[STATUS] for r in store.read_sync(lambda c: rows_at(c, [row], before))] == [int(OrderStatus.Created)]


def test_a_moment_older_than_the_live_window_lists_the_orders_of_then(store, qrun):
    """A month later none of these orders is in the live window: the moment still lists the
    order running then and the one finished in the window before it, not the one finished long
    before nor the one created after."""
    from core.history import DAY
    from core.ledger import Ledger
    from core.orders import Order
    from panels.jobs import rows_at

    clock = VirtualClock.for_store(store)
    store.clock = clock
    ledger = Ledger(store)

    def order(name: str) -> str:
        return qrun(ledger.create_order(Order(templateName=name))).identifier

    def to(oid: str, *statuses: OrderStatus) -> None:
        for status in statuses:
            qrun(ledger.set_status(oid, status, why=None))

    long_ago = order("Sealer.Seal")
    to(long_ago, OrderStatus.Scheduled, OrderStatus.Running, OrderStatus.Complete)
    qrun(clock.advance(10 * DAY))
    running = order("PlateReader.ReadPlate")
    to(running, OrderStatus.Scheduled, OrderStatus.Running)
    finished = order("Incubator.Incubate")
    to(finished, OrderStatus.Scheduled, OrderStatus.Running)
    qrun(clock.advance(3600))
    to(finished, OrderStatus.Complete)
    qrun(clock.advance(3600))
    at = clock.now()
    qrun(clock.advance(60))
    later = order("Sealer.Seal")
    qrun(clock.advance(DAY))
    to(running, OrderStatus.Complete)
    qrun(clock.advance(30 * DAY))
    moment = qrun(TimeMachine(store).moment(at))

    then = {r[0]: r[STATUS] for r in store.read_sync(lambda c: rows_at(c, [], moment, 7 * DAY))}
    assert then == {running: int(OrderStatus.Running), finished: int(OrderStatus.Complete)}
    assert later not in then and long_ago not in then
    assert store.read_sync(lambda c: rows_at(c, [], moment)) == [], "without a window: the rows given only"


def test_orders_archived_since_stand_in_a_past_moment_with_their_status_then(store, qrun, qtbot):
    """The orders of a month ago are archived now: the moment still lists the one running then
    (Running) and the one finished in the window before it (Complete), read from the archive.
    Without the archive file the banner and the moment say what is left out."""
    from core.archive import ARCHIVE_FILENAME, Archiver
    from core.history import DAY
    from core.ledger import Ledger
    from core.orders import Order
    from panels.jobs import rows_at
    from panels.timetravel import PastBanner

    clock = VirtualClock.for_store(store)
    store.clock = clock
    ledger = Ledger(store)

    def order(name: str) -> str:
        return qrun(ledger.create_order(Order(templateName=name))).identifier

    def to(oid: str, *statuses: OrderStatus) -> None:
        for status in statuses:
            qrun(ledger.set_status(oid, status, why=None))

    running = order("PlateReader.ReadPlate")
    to(running, OrderStatus.Scheduled, OrderStatus.Running)
    finished = order("Incubator.Incubate")
    to(finished, OrderStatus.Scheduled, OrderStatus.Running)
    qrun(clock.advance(3600))
    to(finished, OrderStatus.Complete)
    qrun(clock.advance(3600))
    at = clock.now()
    qrun(clock.advance(DAY))
    to(running, OrderStatus.Complete)
    qrun(clock.advance(30 * DAY))
    result = Archiver(store).run_sync(clock.now() - 7 * DAY)
    assert result.orders == 2 and store.count_orders() == 0

    moment = qrun(TimeMachine(store).moment(at))
    assert moment.status_of(running) is OrderStatus.Running and moment.archive_note is None
    assert moment.rows[running][2] == "PlateReader.ReadPlate"
    then = {r[0]: r[STATUS] for r in store.read_sync(lambda c: rows_at(c, [], moment, 7 * DAY))}
    assert then == {running: int(OrderStatus.Running), finished: int(OrderStatus.Complete)}

    archive = store.path.with_name(ARCHIVE_FILENAME)
    archive.rename(archive.with_name("moved.sqlite3"))
    moment = qrun(TimeMachine(store).moment(at))
    assert moment.open_orders == {} and moment.archive.state == "missing"
    assert store.read_sync(lambda c: rows_at(c, [], moment, 7 * DAY)) == []
    banner = PastBanner()
    qtbot.addWidget(banner)
    banner.show_moment(moment)
    assert "2 archived orders are left out" in banner.text() and str(archive) in banner.text()


def test_the_time_bar_shows_archived_runs_and_says_when_the_archive_is_missing(window_lab, qtbot):
    """The finished runs are archived while the console runs: going back to when a plate was
    being read still shows that run Running, read from the archive; with the archive file
    gone the past holds the store's orders and the banner says how many are left out."""
    from core.archive import ARCHIVE_FILENAME, Archiver

    rt, window, busy_at, runs = window_lab
    jobs, bar = window.jobs, window.time_bar
    result = Archiver(rt.store).run_sync(rt.clock.now() + 1)
    assert result.orders >= 2 * len(runs) and not rt.store.order_rows("id = ?", (runs[0],))
    jobs.filter_bar.choose_view("All orders")

    def go(at: float) -> None:
        loads = window.time_travel.loads
        bar.field.setText(when(at))
        qtbot.keyClick(bar.field, Qt.Key.Key_Return)
        qtbot.waitUntil(lambda: window.time_travel.loads > loads and jobs.model is jobs.past_model
                        and jobs._past_task is not None and jobs._past_task.done(), timeout=10_000)

    go(busy_at)
    statuses = {r: jobs.past_model.get(r) for r in runs}
    assert all(row is not None for row in statuses.values()), "the archived runs stood then"
    assert OrderStatus.Running in {OrderStatus(row[STATUS]) for row in statuses.values()}
    assert "left out" not in jobs.past_banner.text()

    archive = rt.store.path.with_name(ARCHIVE_FILENAME)
    archive.rename(archive.with_name("moved-away.sqlite3"))
    go(busy_at + 0.5)
    assert not any(jobs.past_model.get(r) for r in runs)
    banner = jobs.past_banner.text()
    assert f"{result.orders} archived orders are left out" in banner and str(archive) in banner
    assert "left out" in jobs.status_line.text()
    window.docks["Jobs"].raise_()
    for theme in ("light", "dark"):
        window.set_theme(theme)
        for w, h in ((1280, 720), (1920, 1080)):
            window.resize(w, h)
            qtbot.wait(60)
            save_screenshot(window, f"jobs-past-archive-missing-{w}x{h}-{theme}")
    window.set_theme("light")
