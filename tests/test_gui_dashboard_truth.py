"""The Dashboard tells the truth: what waits for a person is an alert (clickable to its order),
and the counts are the store's, whoever wrote the orders (another process here: a second store
connection on the same file, as the command line or Data Services would)."""

from __future__ import annotations

import time

import pytest
from conftest import save_screenshot
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from console.bridge import EventBridge
from core.clock import VirtualClock
from core.ledger import Ledger
from core.orders import Order, OrderStatus
from core.runtime import Runtime
from core.store import Store
from core.templates import template_from_dict
from core.workcell import parse_workcell
from panels.dashboard import DashboardPanel
from panels.theme import apply_theme

CAREFUL = {"name": "Careful seal", "inputs": [{"name": "plate", "type": "string"}],
           "definition": {"failure_policy": "pause", "steps": [
               {"id": "seal", "kind": "Sealer.Seal", "retry_policy": {"max_attempts": 1}}]}}


@pytest.fixture
def env(store, data_dir, qtbot, qrun):
    clock = VirtualClock.for_store(store, start=time.time())
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1,
                       faults="fail_next@Sealer=2,retryable=false")
    qrun(rt.start(templates_dir=None))
    qrun(rt.engine.publish(template_from_dict(CAREFUL)))
    bridge = EventBridge(rt.ledger.bus)
    panel = DashboardPanel(rt, bridge, expanded=True)
    panel.TRUTH_SECONDS = (0.2, 0.5)
    qtbot.addWidget(panel)
    panel.resize(1280, 300)
    panel.show()
    yield rt, clock, panel
    panel.shutdown()
    panel.close()
    bridge.close()
    qrun(rt.close())


def _value(panel, key):
    return panel.kpi[key].value.text()


def test_paused_runs_and_failed_steps_are_alerts_that_select_their_order(env, qtbot, qrun):
    rt, clock, panel = env
    runs = [qrun(rt.start_run("Careful seal", {"plate": f"P{i}"}, who="ann")) for i in range(2)]
    qrun(clock.run_until(lambda: all(rt.engine.get_instance(r)["status"] == "paused" for r in runs)))
    steps = {rt.engine.get_instance(r)["steps"][0]["order_id"] for r in runs}

    qtbot.waitUntil(lambda: {f"paused:{r}" for r in runs} <= {a.key for a in panel.current_alerts}, timeout=5000)
    keys = {a.key for a in panel.current_alerts}
    assert {f"failed:{s}" for s in steps} <= keys, "each failed step is an alert"
    assert not panel.all_clear.isVisible(), "no 'No alerts' while runs wait for the operator"
    assert _value(panel, "attention") == "4"
    assert panel.kpi["attention"].context.full_text() == "2 paused · 2 failed steps"
    # nothing succeeded and nothing errored as a job: no red rate beside "error rate normal"
    assert panel.kpi["success"].tone != "bad" or any(a.key == "error-rate" for a in panel.current_alerts)

    # a click on an alert asks for its order
    row = next(i for i in range(panel.alerts_model.rowCount())
               if panel.alerts_model.index(i).data(Qt.ItemDataRole.UserRole) == f"paused:{runs[1]}")
    rect = panel.alerts_view.visualRect(panel.alerts_model.index(row))
    with qtbot.waitSignal(panel.order_requested, timeout=2000) as got:
        qtbot.mouseClick(panel.alerts_view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert got.args == [runs[1]]
    for theme in ("dark", "light"):
        apply_theme(QApplication.instance(), theme)
        panel.refresh()
        save_screenshot(panel, f"dashboard-attention-{theme}")

    # the operator resumes one run: its alert goes, the other stays
    qrun(rt.retry(next(iter(s for s in steps if rt.target(s).run_id == runs[0])), who="ann"))
    qrun(clock.run_until(lambda: not rt.run_is_active(runs[0])))
    qtbot.waitUntil(lambda: f"paused:{runs[0]}" not in {a.key for a in panel.current_alerts}, timeout=5000)
    assert f"paused:{runs[1]}" in {a.key for a in panel.current_alerts}


def test_counts_are_the_stores_whoever_wrote_the_orders(env, qtbot, qrun, data_dir):
    rt, clock, panel = env
    qtbot.waitUntil(lambda: panel.ticks >= 2, timeout=5000)
    # another process (the command line, Data Services) writes orders to the same store
    other = Store(rt.store.path).open()
    try:
        elsewhere = Ledger(other)
        made = [qrun(elsewhere.create_order(Order(templateName="From the CLI"), who="cli")) for _ in range(4)]
        for order in made[:2]:
            qrun(elsewhere.set_status(order.identifier, OrderStatus.Running, who="cli"))
            qrun(elsewhere.set_status(order.identifier, OrderStatus.Complete, who="cli"))
    finally:
        other.close()
    # the console then acts on one of them (its counts never saw it created)
    qrun(rt.ledger.set_status(made[3].identifier, OrderStatus.Running, who="ann"))
    qrun(clock.settle())
    seen: set[str] = set()

    def truth() -> bool:
        for key in ("pending", "running", "jobs"):
            seen.add(_value(panel, key))
            seen.add(panel.kpi[key].context.full_text())
        return (_value(panel, "pending"), _value(panel, "running"), _value(panel, "jobs")) == ("1", "1", "2")

    qtbot.waitUntil(truth, timeout=10_000)
    assert not any(text.lstrip().startswith("-") or " -" in text for text in seen), seen
    counts = rt.metrics.status_counts()
    assert counts.get(OrderStatus.Created) == 1 and counts.get(OrderStatus.Running) == 1
    assert all(v >= 0 for v in counts.values())
