"""The Jobs and Detail panels over a realistic store of 100,000 orders (generated once per module).

Filters are checked against SQLite as an independent oracle; loading and a bulk action on 10,000
orders must leave the event loop running (observed from both asyncio and Qt, not timed);
screenshots show the panels as an operator sees them.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import save_screenshot
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QSplitter

from console.bridge import EventBridge
from core import demo
from core.orders import OrderStatus
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from panels.detail import DetailPanel
from panels.dialogs import BulkDialog
from panels.jobs import JobsPanel
from panels.jobs_filter import OrderFilter
from panels.jobs_model import COLUMN_KEYS

ORDERS = 100_000


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("big")
    store = Store(directory / DB_FILENAME).open()
    demo.generate(store, ORDERS)
    yield store
    store.close()


@pytest.fixture
def panels(big_store, qtbot, qrun):
    """Jobs and Detail side by side over the big store, loaded; closed afterwards."""
    runtime = Runtime.build(big_store.path.parent, store=big_store, workcell=None, metrics=False)
    bridge = EventBridge(runtime.ledger.bus, interval_ms=10)
    window = QSplitter()
    window.resize(1560, 820)
    jobs = JobsPanel(runtime, bridge, window)
    detail = DetailPanel(runtime, bridge, window)
    window.addWidget(jobs)
    window.addWidget(detail)
    window.setSizes([1010, 550])
    jobs.order_selected.connect(detail.show_order)
    qtbot.addWidget(window)
    window.show()
    ticks = []

    async def probe() -> None:  # counts loop turns while the panel loads
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    prober = asyncio.get_running_loop().create_task(probe())
    count = qrun(jobs.load(), timeout_ms=60_000)
    prober.cancel()
    jobs.loaded_count, jobs.load_ticks = count, len(ticks)
    yield runtime, jobs, detail, window
    jobs.shutdown()
    detail.shutdown()
    bridge.close()
    window.close()


def sql_count(store: Store, where: str, params: tuple = ()) -> int:
    return store.count_orders(where, params)


def test_loads_100k_without_blocking_and_filters_like_sqlite(panels, big_store, qtbot):
    _runtime, jobs, _detail, _window = panels
    model, bar = jobs.model, jobs.filter_bar
    total = big_store.count_orders()
    runs = model.rowCount()
    assert 0 < runs < total, "runs, their steps hidden"
    jobs.expand_button.click()
    assert jobs.loaded_count == total == model.rowCount() >= ORDERS
    assert jobs.summary.text() == f"{total:,} orders"
    assert jobs.load_ticks >= 3, "the loop kept turning while 100k orders were read and sorted"
    jobs.collapse_button.click()
    assert model.rowCount() == runs
    model.set_tree(False)  # one row per order, as SQL counts them

    cases = [
        (OrderFilter(statuses=frozenset({OrderStatus.Error}), kind="runs"),
         "status = ? AND parent_id IS NULL", (int(OrderStatus.Error),)),
        (OrderFilter(instruments=frozenset({"Hamilton STAR 2"})), "assigned_to = ?", ("Hamilton STAR 2",)),
        (OrderFilter(priorities=frozenset({"Elevated", "high"})),
         "priority = -1 AND numeric_priority BETWEEN 70 AND 100", ()),
        (OrderFilter(templates=frozenset({"ELISA Readout", "Sealer.Seal"}), kind="all"),
         "template_name IN ('ELISA Readout', 'Sealer.Seal')", ()),
        (OrderFilter(text="tip pickup"), "id LIKE ?1 OR parent_id LIKE ?1 OR template_name LIKE ?1 OR "
         "assigned_to LIKE ?1 OR status_details LIKE ?1", ("%tip pickup%",)),
    ]
    for spec, where, params in cases:
        bar.set_filter(spec)
        assert model.rowCount() == sql_count(big_store, where, params) > 0, spec.describe()
    # a custom time range on the end time
    hi = time.time() - 3600
    lo = hi - 6 * 3600
    bar.set_filter(OrderFilter(time_preset="custom", time_field="ended", time_from=lo, time_to=hi))
    assert model.rowCount() == sql_count(big_store, "ended BETWEEN ? AND ?", (lo, hi)) > 0

    # typing in the search box filters once typing pauses
    bar.set_filter(OrderFilter())
    qtbot.keyClicks(bar.search, "door open")
    qtbot.waitUntil(lambda: model.filter.text == "door open", timeout=3000)
    assert model.rowCount() == sql_count(big_store, "status_details LIKE '%door open%'")

    # sort in the model: by status, then by duration (descending) through the header
    bar.set_filter(OrderFilter(kind="steps"))
    jobs.view.sortByColumn(COLUMN_KEYS.index("status"), Qt.SortOrder.AscendingOrder)
    column = [model.row_data(r)[4] for r in range(model.rowCount())]
    assert column == sorted(column)
    jobs.view.sortByColumn(COLUMN_KEYS.index("created"), Qt.SortOrder.DescendingOrder)
    created = [model.row_data(r)[8] for r in range(0, model.rowCount(), 97)]
    assert created == sorted(created, reverse=True)


RUNS = 400


def test_bulk_cancel_of_10000_orders_keeps_the_loop_running(panels, big_store, qtbot, qrun):
    """400 running runs (one step each on an instrument that never finishes, two waiting) and
    9,600 demo orders the engine does not run: the runs are all canceled with their audit entry,
    the others refused with the reason, while Qt and asyncio keep turning."""
    runtime, jobs, _detail, _window = panels
    runtime.executor.hang_kinds.add("Hold.Forever")
    qrun(runtime.engine.create_template("Hold", {"steps": [
        {"id": "hold", "kind": "Hold.Forever"}, {"id": "b", "kind": "Hold.Forever", "depends_on": ["hold"]},
        {"id": "c", "kind": "noop", "depends_on": ["b"]}]}))

    async def start_runs() -> list[str]:
        runs = []
        for _ in range(RUNS):
            runs.append(await runtime.start_run("Hold", {}, who="bench", allow_duplicate=True))
        return runs

    runs = qrun(start_runs(), 180_000)
    qtbot.waitUntil(lambda: all(runtime.engine._runs[r].steps["hold"].attempt_running for r in runs),
                    timeout=30_000)
    jobs.filter_bar.set_filter(OrderFilter(statuses=frozenset({OrderStatus.Complete, OrderStatus.Running})))
    qtbot.waitUntil(lambda: all(jobs.model.row_of(r) is not None for r in runs), timeout=10_000)
    jobs.expand_all(True)  # the steps are acted on too: they have rows
    mine = set(runs)
    ids = runs + [oid for oid in jobs.model.visible_ids()[:10_000 + 3 * RUNS]
                  if oid not in mine and (jobs.model.get(oid)[1] or oid) not in mine][:10_000 - RUNS]
    assert jobs.select_orders(ids) == 10_000
    assert jobs.bulk_buttons["cancel"].text() == "Cancel 10,000…"
    task = jobs.trigger("cancel")
    qtbot.waitUntil(lambda: isinstance(jobs.actions.dialog, BulkDialog), timeout=10_000)
    dialog: BulkDialog = jobs.actions.dialog
    assert dialog.preview["orders"] == 10_000
    dialog.reason_edit.setText("audit drill")

    seen: list[int] = []  # progress as a Qt timer sees it while the action runs
    sampler = QTimer()
    sampler.setInterval(5)
    sampler.timeout.connect(lambda: seen.append(dialog.progress.value()))
    sampler.start()
    turns = []

    async def probe() -> None:
        while not task.done():
            turns.append(dialog.progress.value())
            await asyncio.sleep(0)

    prober = asyncio.get_running_loop().create_task(probe())
    dialog.go_button.click()
    assert jobs.status_line.text().startswith("↻")
    qtbot.waitUntil(task.done, timeout=120_000)
    sampler.stop()
    prober.cancel()
    assert dialog.stage == "results"
    assert dialog.results.rowCount() == 10_000
    results = {dialog.results.result(i).order_id: dialog.results.result(i) for i in range(10_000)}
    assert all(results[r].ok for r in runs)
    refused = [r for oid, r in results.items() if oid not in set(runs)]
    assert all(not r.ok and "not a labconsole run" in r.message for r in refused)
    assert any(0 < v < 10_000 for v in seen), "Qt painted progress while the action ran"
    assert any(0 < v < 10_000 for v in turns), "other coroutines ran while the action ran"
    # every run is canceled in the store, with its audit entry, and its instrument was asked to stop
    assert {runtime.engine.run_status(r).value for r in runs} == {"cancelled"}
    audited = {a.target for a in runtime.audit() if a.action == "cancel run" and a.reason == "audit drill"}
    assert audited >= set(runs)
    assert len(runtime.executor.cancelled) >= RUNS
    entry = runtime.audit()[-1]
    assert entry.action == "bulk cancel" and entry.reason == "audit drill"
    assert entry.details == {"orders": 10_000, "done": RUNS, "left": 0}
    dialog.accept()


def test_screenshots_of_jobs_and_detail_at_100k(panels, qtbot):
    runtime, jobs, detail, window = panels
    model = jobs.model
    # the newest failed run with its steps, in the Detail panel
    jobs.filter_bar.choose_view("All orders")
    failed = next(oid for oid in model.visible_ids()[:30_000]
                  if model.get(oid)[1] is None and model.get(oid)[4] == OrderStatus.Error)
    jobs.select_order(failed)
    qtbot.waitUntil(lambda: detail.data is not None and detail.data.order_id == failed, timeout=10_000)
    data = detail.data
    assert not data.engine and data.is_run and len(data.children) >= 3
    assert [s.status for s in detail.timeline.steps].count(OrderStatus.Error) == 1
    assert detail.history.rowCount() >= 2 and "demo" in detail.history.column_texts(3)
    assert not detail.buttons["cancel"].isEnabled(), "the engine does not run demo orders"
    jobs.view.scrollTo(model.index(max(0, model.row_of(failed) - 3), 0))
    qtbot.wait(30)
    save_screenshot(window, "jobs-detail-100k-orders")

    jobs.filter_bar.choose_view("Needs attention")
    assert model.filter.statuses == frozenset({OrderStatus.Error, OrderStatus.Paused, OrderStatus.Unknown})
    jobs.view.scrollToTop()
    qtbot.wait(30)
    save_screenshot(jobs, "jobs-needs-attention-100k")
    jobs.filter_bar.choose_view("All orders")
