"""The main window on the qasync loop: Jobs table over the real store, fed by the bridge."""

from __future__ import annotations

from conftest import save_screenshot
from PySide6.QtCore import Qt, QTimer

from console.app import settings_for
from console.bridge import EventBridge
from console.main_window import MainWindow
from core import demo
from core.events import OrderUpdated
from core.ledger import Ledger
from core.orders import Order, OrderStatus
from core.runtime import Runtime
from panels.jobs import STATUS_COLUMN


def _window(store, data_dir, qtbot):
    runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    window = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    return runtime.ledger, window


def test_jobs_table_shows_the_store_and_follows_events(store, data_dir, qtbot, qrun):
    made = demo.generate(store, 1000)
    core, window = _window(store, data_dir, qtbot)
    assert qrun(window.load_orders()) == made
    window.jobs.filter_bar.choose_view("All orders")  # it opens on "Needs attention"
    model = window.jobs_model
    model.expand_all()  # runs open on their steps: every order is a row
    assert model.rowCount() == made == store.count_orders()
    assert window.jobs.summary.text() == f"{made:,} orders"

    # a new order and a status change arrive through the bridge, coalesced into one frame
    order = qrun(core.create_order(Order(templateName="ELISA Readout")))
    for status in (OrderStatus.Scheduled, OrderStatus.Running, OrderStatus.Error):
        qrun(core.set_status(order.identifier, status, why="Plate not detected"))
    frames_before = window.bridge.frames
    qtbot.waitUntil(lambda: model.row_of(order.identifier) is not None)
    row = model.row_of(order.identifier)
    qtbot.waitUntil(lambda: model.index(row, STATUS_COLUMN).data() == "Error")
    assert window.bridge.frames - frames_before <= 2, "events are coalesced per frame"
    assert model.rowCount() == made + 1

    # sorting happens in the model (on runs and plain orders; a run's steps follow it)
    model.expand_all(False)
    window.jobs.view.sortByColumn(STATUS_COLUMN, Qt.SortOrder.AscendingOrder)
    statuses = [model.row_data(i)[4] for i in range(model.rowCount())]
    assert statuses == sorted(statuses)
    assert model.row_data(model.row_of(order.identifier))[0] == order.identifier

    window.jobs.view.sortByColumn(0, Qt.SortOrder.DescendingOrder)
    window.jobs.view.scrollToTop()
    qtbot.wait(50)
    path = save_screenshot(window, "main-window-1000-orders")
    assert path.stat().st_size > 10_000
    window.close()


def test_a_taller_window_goes_to_jobs_not_to_a_band_under_the_compact_dashboard(store, data_dir, qtbot):
    """Maximising the window (1280x720 to 1920x1080) shared the new height among the dock areas:
    the compact dashboard kept its height over a 110-pixel empty band, Jobs below it."""
    _core, window = _window(store, data_dir, qtbot)
    window.resize(1280, 720)
    qtbot.wait(50)
    dashboard, jobs = window.docks["Dashboard"], window.docks["Jobs"]
    for width, height in ((1920, 1080), (1600, 900), (1920, 1200)):
        window.resize(width, height)
        qtbot.wait(50)
        assert not window.dashboard.expanded
        band = jobs.geometry().top() - dashboard.geometry().bottom()
        assert band <= 12, f"{band} px between the dashboard and Jobs at {width}x{height}"


def test_layout_is_restored(store, data_dir, qtbot, qrun):
    core, window = _window(store, data_dir, qtbot)
    window.docks["Metrics"].hide()
    window.resize(700, 500)  # Qt keeps it within the minimum size the docks need
    saved = window.size()
    window.close()
    again = MainWindow(window.runtime, settings_for(data_dir))
    qtbot.addWidget(again)
    again.show()
    assert again.size() == saved
    assert not again.docks["Metrics"].isVisible()
    again.close()


def test_bridge_coalesces_thousands_of_events_into_one_frame(store, qtbot, qrun):
    core = Ledger(store)
    bridge = EventBridge(core.bus, interval_ms=10_000)
    frames = []
    bridge.orders_changed.connect(frames.append)
    orders = [qrun(core.create_order(Order(templateName="T"))) for _ in range(20)]
    for _ in range(10):
        for o in orders:
            core.bus.publish(OrderUpdated(order_id=o.identifier, row=(o.identifier,) + (None,) * 11))
    assert bridge.events_seen == 220
    bridge.flush()
    assert len(frames) == 1 and len(frames[0]) == 20
    bridge.close()



def test_a_frame_of_many_rows_is_handed_over_in_parts_with_its_events_after_the_last(store, qtbot, qrun):
    """Applying a bulk action's 300 rows a frame to the Jobs table took 7-19 ms of one loop step:
    a large frame comes in parts of ``step_rows`` rows, each in a step of its own, then its events
    in a step of their own (hundreds, which every panel sorts out), never before their rows."""
    core = Ledger(store)
    bridge = EventBridge(core.bus, interval_ms=5, step_rows=100)
    seen: list[tuple[str, int, int]] = []  # (signal, size, loop step)
    step = [0]

    def tick() -> None:
        step[0] += 1

    stepper = QTimer()
    stepper.timeout.connect(tick)
    stepper.start(0)
    bridge.orders_changed.connect(lambda rows: seen.append(("rows", len(rows), step[0])))
    bridge.events.connect(lambda events: seen.append(("events", len(events), step[0])))
    ids = [f"O{i}" for i in range(250)]
    for oid in ids:
        core.bus.publish(OrderUpdated(order_id=oid, row=(oid,) + (None,) * 11))
    qtbot.waitUntil(lambda: any(kind == "events" for kind, _, _ in seen), timeout=5000)
    stepper.stop()
    assert [(kind, size) for kind, size, _ in seen] == [("rows", 100), ("rows", 100), ("rows", 50), ("events", 250)]
    steps = [at for _, _, at in seen]
    assert steps[0] < steps[1] < steps[2], "each part in a loop step of its own"
    assert steps[3] > steps[2], "the events in a step after the last part's"
    # a small frame is one emission, as before; flush() hands over everything at once
    for oid in ids[:3]:
        core.bus.publish(OrderUpdated(order_id=oid, row=(oid,) + (None,) * 11))
    for oid in ids:
        core.bus.publish(OrderUpdated(order_id=oid, row=(oid,) + (None,) * 11))
    seen.clear()
    bridge.flush()
    assert [(kind, size) for kind, size, _ in seen] == [("rows", 250), ("events", 253)]
    bridge.close()

def test_an_alert_click_selects_its_order_in_jobs_and_detail(store, data_dir, qtbot, qrun):
    from panels.jobs_filter import OrderFilter

    demo.generate(store, 200)
    _core, window = _window(store, data_dir, qtbot)
    qrun(window.load_orders())
    window.jobs.filter_bar.choose_view("All orders")  # it opens on "Needs attention"
    target = window.jobs_model.order_id(5)
    # a filter that hides it: the click clears the filter rather than selecting nothing
    window.jobs.filter_bar.set_filter(OrderFilter(text="no such order"))
    assert window.jobs_model.row_of(target) is None
    window.dashboard.order_requested.emit(target)
    qtbot.waitUntil(lambda: window.jobs.current_id() == target, timeout=3000)
    qtbot.waitUntil(lambda: window.detail.order_id == target, timeout=3000)
    window.close()
