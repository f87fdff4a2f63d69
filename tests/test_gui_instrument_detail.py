"""The instrument detail window over a real runtime (store, dispatcher, simulated instruments) on a
virtual clock: opened from a card, it shows what runs now, the queue for the instrument, the
stored log and today's busy time; "send a queued step here" goes through the dispatcher, audited."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from console.bridge import EventBridge
from core.clock import VirtualClock
from core.dispatcher import Job
from core.orders import ModuleRestrictionStrategy, Order
from core.runtime import Runtime
from core.templates import template_from_dict
from core.workcell import parse_workcell
from panels.instrument_detail import INLINE_JOBS, ORDER_ROLE, QUEUE_LIMIT, InstrumentDetail
from panels.robots import RobotsPanel
from panels.style import format_seconds
from panels.theme import apply_theme


def _template(name, reader=None, seconds=60, strategy="FullRestriction"):
    step = {"id": "read", "kind": "PlateReader.ReadPlate", "parameters": {"duration": seconds}}
    if reader:
        step.update(restrict_to=[reader], module_restriction=strategy)
    return template_from_dict({"name": name, "definition": {"steps": [step]}})


@pytest.fixture
def cell(store, data_dir, qtbot, qrun):
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1)
    qrun(rt.start(templates_dir=None))
    qrun(clock.settle())
    for template in (_template("Hog1", "Reader1", 100), _template("Hog2", "Reader2", 600), _template("Any"),
                     _template("Reader1 unless error", "Reader1", 60, "UnlessError")):
        qrun(rt.engine.publish(template))
    bridge = EventBridge(rt.ledger.bus)
    panel = RobotsPanel(rt, bridge)
    qtbot.addWidget(panel)
    panel.resize(560, 760)
    panel.show()
    yield rt, clock, panel
    panel.shutdown()
    assert panel.detail_window is None or not panel.detail_window.isVisible()
    panel.close()
    bridge.close()
    qrun(rt.close())


def _step(rt, run_id):
    return rt.engine.get_instance(run_id)["steps"][0]


def _busy_readers(rt, clock, qrun):
    hog1 = qrun(rt.start_run("Hog1", {}, who="tester"))
    hog2 = qrun(rt.start_run("Hog2", {}, who="tester"))
    qrun(clock.advance(1))
    free = qrun(rt.start_run("Any", {}, who="tester"))
    qrun(clock.advance(1))
    return hog1, hog2, free


def _open(qtbot, panel, iid) -> InstrumentDetail:
    qtbot.mouseDClick(panel.cards[iid], Qt.MouseButton.LeftButton)
    window = panel.detail_window
    assert window is not None and window.isVisible() and window.instrument_id == iid
    return window


def test_detail_shows_running_next_log_and_today(cell, qtbot, qrun):
    rt, clock, panel = cell
    hog1, hog2, free = _busy_readers(rt, clock, qrun)
    window = _open(qtbot, panel, "Reader2")
    qtbot.waitUntil(lambda: window.log.rowCount() >= 2 and not window.reading)
    save_screenshot(panel, "robots-panel-details-action")
    # the store is read again only when something about the instrument changed
    loads = []
    window.loaded.connect(loads.append)
    window.refresh()
    window.refresh()
    qtbot.wait(100)
    assert loads == []
    window.note_change()
    window.refresh()
    qtbot.waitUntil(lambda: loads == ["Reader2"])
    # running now: Hog2's step; next: the unrestricted read (Hog1's step is pinned elsewhere)
    assert [r.order_id for r in window.running.rows] == [_step(rt, hog2)["order_id"]]
    assert [r.order_id for r in window.queue.rows] == [_step(rt, free)["order_id"]]
    assert window.queue.rows[0].cells[6] == "any"
    assert "1 queued step this instrument can run" in window.queue_label.text()
    # the log is the stored instrument_log, newest first
    changes = [window.log.index(i, 1).data() for i in range(window.log.rowCount())]
    assert changes[:2] == ["Ready → Busy", "Offline → Ready"]
    assert window.log.index(0, 3).data() == _step(rt, hog2)["order_id"]
    # busy today, from the log (2 s of the virtual day so far)
    qrun(clock.advance(58))
    window.refresh()
    qtbot.waitUntil(lambda: format_seconds(60) in window.figures.full_text())
    assert "% busy today" in window.figures.full_text()
    # Details on another instrument reuses the window; double-click opens an order
    panel.select("Reader1")
    panel.details_action.trigger()
    assert panel.detail_window is window and window.instrument_id == "Reader1"
    assert [r.order_id for r in window.running.rows] == [_step(rt, hog1)["order_id"]]
    opened = []
    panel.order_requested.connect(opened.append)
    rect = window.running_view.visualRect(window.running.index(0, 0))
    qtbot.mouseClick(window.running_view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(window.running_view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert opened == [_step(rt, hog1)["order_id"]]
    window.close()
    assert not window.timer.isActive()
    # from the table: double-click a row
    panel.show_table()
    rect = panel.table.visualRect(panel.model.index(panel.model.row_of("Sealer"), 0))
    qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    qtbot.mouseDClick(panel.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.isVisible() and window.instrument_id == "Sealer"
    assert window.running.rowCount() == 0 and window.queue.rowCount() == 0
    assert "0 queued steps" in window.queue_label.text()
    window.close()


def test_send_a_queued_step_to_this_instrument(cell, qtbot, qrun):
    rt, clock, panel = cell
    hog1, hog2, free = _busy_readers(rt, clock, qrun)
    order_id = _step(rt, free)["order_id"]
    window = _open(qtbot, panel, "Reader2")
    assert not window.send_button.isEnabled(), "nothing selected, nothing to send"
    assert window.select_queued(order_id)
    assert "Reader1 is busy" in window.waiting.full_text()
    assert window.send_button.isEnabled()
    qtbot.mouseClick(window.send_button, Qt.MouseButton.LeftButton)
    dialog = window.reason_dialog
    assert dialog is not None and dialog.isVisible() and not dialog.ok_button.isEnabled()
    qtbot.keyClicks(dialog.reason_edit, "Reader1 needs its lamp changed")
    sent = []
    window.step_sent.connect(lambda *args: sent.append(args))
    qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(sent))
    assert sent[0][:3] == (order_id, "Reader2", True)
    job = rt.dispatcher.queue.jobs[order_id]
    assert job.restrict == ("Reader2",) and job.strategy is ModuleRestrictionStrategy.FullRestriction
    assert rt.order(order_id).restrictToModuleIds == "Reader2"
    entry = rt.audit(order_id)[-1]
    assert (entry.action, entry.reason) == ("send to instrument", "Reader1 needs its lamp changed")
    assert f"{order_id} sent to Reader2" in window.feedback.text()
    assert "sent to Reader2" in panel.feedback.text()
    # the decision is in the instrument's log, with who and why
    qtbot.waitUntil(lambda: window.log.rowCount() > 0 and window.log.index(0, 1).data() == f"{order_id} sent here")
    assert window.log.index(0, 2).data() == "Reader1 needs its lamp changed"
    assert window.log.index(0, 0).data(ORDER_ROLE) == order_id
    # now pinned here: shown as such and not offered again
    assert window.queue.rows[0].cells[6] == "Reader2 (FullRestriction)"
    window.select_queued(order_id)
    assert not window.send_button.isEnabled()
    # Reader1 frees first (100 s) but the step waits for Reader2 (600 s)
    qrun(clock.run_until(lambda: not rt.run_is_active(free)))
    assert _step(rt, free)["instrument"] == "Reader2"
    window.close()


def test_a_send_the_restriction_forbids_is_refused_and_said(cell, qtbot, qrun):
    rt, clock, panel = cell
    qrun(rt.start_run("Hog1", {}, who="tester"))
    qrun(rt.start_run("Hog2", {}, who="tester"))
    qrun(clock.advance(1))
    run_id = qrun(rt.start_run("Reader1 unless error", {}, who="tester"))
    qrun(clock.advance(1))
    order_id = _step(rt, run_id)["order_id"]
    window = _open(qtbot, panel, "Reader2")
    assert window.select_queued(order_id), "a conditional restriction may allow it: listed"
    sent = []
    window.step_sent.connect(lambda *args: sent.append(args))
    window.send(order_id, "Reader2", "try")
    qtbot.waitUntil(lambda: bool(sent))
    assert sent[0][2] is False
    assert ("restricted to Reader1 (UnlessError): Reader2 may take it only while all of them are in Error"
            in window.feedback.text())
    assert rt.dispatcher.queue.jobs[order_id].restrict == ("Reader1",)
    assert not [e for e in rt.audit(order_id) if e.action == "send to instrument"]
    window.close()


def test_a_long_queue_is_picked_off_the_loop_and_listed_in_order_of_service(cell, qtbot, qrun):
    rt, clock, panel = cell
    for reader in ("Reader1", "Reader2"):  # nothing is dispatched while the queue is looked at
        qrun(rt.dispatcher.set_enabled(reader, False, who="tester", reason="queue test"))
    count = INLINE_JOBS + 500
    for n in range(count):
        rt.dispatcher.queue.enqueue(Job(f"Q{n:05d}", Order(), "PlateReader.ReadPlate", priority=n % 100),
                                    clock.now())
    window = _open(qtbot, panel, "Reader2")
    qtbot.waitUntil(lambda: window.queue.rowCount() == QUEUE_LIMIT)
    assert f"{count:,} queued steps this instrument can run, in order of service (the first {QUEUE_LIMIT})" \
        in window.queue_label.text()
    first = [window.queue.rows[i].order_id for i in range(3)]
    assert first == ["Q00099", "Q00199", "Q00299"]  # priority 99 first, then first come
    assert [window.queue.rows[i].cells[5] for i in range(QUEUE_LIMIT)] == sorted(
        (window.queue.rows[i].cells[5] for i in range(QUEUE_LIMIT)), key=int, reverse=True)
    window.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_screenshot_of_the_detail_window(cell, qtbot, qrun, theme):
    rt, clock, panel = cell
    _busy_readers(rt, clock, qrun)
    qrun(rt.start_run("Any", {}, who="tester", allow_duplicate=True))
    qrun(clock.advance(30))
    apply_theme(QApplication.instance(), theme)
    try:
        window = _open(qtbot, panel, "Reader2")
        window.resize(1280, 720)
        qtbot.waitUntil(lambda: window.log.rowCount() >= 2)
        window.select_queued(window.queue.index(0, 0).data(ORDER_ROLE))
        qtbot.wait(50)
        assert save_screenshot(window, f"instrument-detail-{theme}-1280x720").stat().st_size > 10_000
        window.close()
    finally:
        apply_theme(QApplication.instance(), "light")
