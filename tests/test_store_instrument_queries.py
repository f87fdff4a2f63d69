"""Read queries for the instrument detail view and the command palette, on a real SQLite store."""

from __future__ import annotations

import json

import pytest

from core import demo


def _log(store, rows):
    def write(c):
        c.executemany("INSERT INTO instrument_log (instrument_id, at, from_status, to_status, detail, order_ids) "
                      "VALUES (?,?,?,?,?,?)", rows)

    store.write_sync(write)


def test_instrument_log_newest_first_with_its_orders(store):
    _log(store, [("R1", 10.0, "Offline", "Ready", "ready", "[]"),
                 ("R1", 20.0, "Ready", "Busy", "running O1", json.dumps(["O1"])),
                 ("R2", 25.0, "Offline", "Ready", "ready", "[]")])
    rows = store.instrument_log("R1")
    assert [(r[1], r[2], r[3], r[5]) for r in rows] == [(20.0, "Ready", "Busy", ["O1"]),
                                                        (10.0, "Offline", "Ready", [])]
    assert len(store.instrument_log("R1", limit=1)) == 1
    assert store.instrument_log("nobody") == []


def test_busy_seconds_from_the_log_state_at_the_start_and_gaps(store):
    _log(store, [
        ("R1", 50.0, "Ready", "Busy", "", "[]"),       # busy before the window starts
        ("R1", 110.0, "Busy", "Ready", "", "[]"),      # 10 s busy inside [100, 200)
        ("R1", 120.0, "Ready", "Busy", "", "[]"),
        ("R1", 130.0, "Offline", "Ready", "", "[]"),   # restart: 120..130 unknown, not counted
        ("R1", 150.0, "Ready", "Busy", "", "[]"),      # busy to the end: 50 s
        ("R2", 150.0, "Ready", "Busy", "", "[]"),
    ])
    assert store.instrument_busy_seconds("R1", 100.0, 200.0) == pytest.approx(60.0)
    assert store.instrument_busy_seconds("R1", 0.0, 60.0) == pytest.approx(10.0)
    assert store.instrument_busy_seconds("R3", 0.0, 60.0) == 0.0


def test_busy_seconds_add_up_every_busy_span_inside_the_window(store):
    _log(store, [
        ("R1", 100.0, "Ready", "Busy", "", "[]"),
        ("R1", 110.0, "Busy", "Ready", "", "[]"),      # 10 s
        ("R1", 120.0, "Ready", "Busy", "", "[]"),
        ("R1", 140.0, "Busy", "Ready", "", "[]"),      # 20 s
        ("R1", 150.0, "Ready", "Busy", "", "[]"),
        ("R1", 155.0, "Busy", "Ready", "", "[]"),      # 5 s
    ])
    assert store.instrument_busy_seconds("R1", 90.0, 200.0) == pytest.approx(35.0)


def test_orders_by_id_prefix_ignores_case_and_is_bounded(store):
    made = demo.generate(store, 300)
    assert made >= 300
    found = store.orders_by_id_prefix("order_0001", limit=5)
    assert [r[0] for r in found] == [f"Order_0001{i}" for i in range(5)]
    assert store.orders_by_id_prefix("Order_00012") == [r for r in store.orders_by_id_prefix("ORDER_00012")]
    assert store.orders_by_id_prefix("Order_00012")[0][0] == "Order_00012"
    assert store.orders_by_id_prefix("  ") == []
    assert store.orders_by_id_prefix("zz") == []
    assert len(store.orders_by_id_prefix("Order_", limit=7)) == 7


def test_sends_to_an_instrument_newest_first_within_the_window(store):
    store.write_sync(store.audit_op("ann", "send to instrument", "O1", "faster", {"instrument": "R1"}))
    store.write_sync(store.audit_op("bob", "send to instrument", "O2", None, {"instrument": "R2"}))
    store.write_sync(store.audit_op("cy", "disable instrument", "R1", "lamp"))
    store.write_sync(store.audit_op("dee", "send to instrument", "O3", "again", {"instrument": "R1"}))
    assert [(e.target, e.who) for e in store.audit_sends_to("R1")] == [("O3", "dee"), ("O1", "ann")]
    assert [e.target for e in store.audit_sends_to("R1", window=2)] == ["O3"]
    assert store.audit_sends_to("R3") == []
