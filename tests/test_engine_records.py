"""What the engine and the dispatcher record for a person to read later: operator reasons on the
steps' transitions, audit rows on the order they concern, the instruments' own words in an order's
log, a run's steps by id; and an instrument's status change outside a step committed at once."""

from __future__ import annotations

import asyncio

import pytest
from dispatchkit import DKit, run_dkit
from enginekit import run_kit, template

import core.store
from core.errors import NotFoundError
from core.store import Store


def test_skip_and_reprioritise_of_a_step_are_recorded_on_that_step_with_the_reason(data_dir):
    async def scenario(kit):
        await kit.publish(template("Two", [
            {"id": "a", "kind": "X.A"},
            {"id": "b", "kind": "X.B", "depends_on": ["a"]}], failure_policy="pause"))
        run_id = await kit.run("Two")
        await kit.until_done(run_id)  # paused: a failed
        await kit.engine.reprioritise(run_id, 80, step_id="b", who="erin", reason="urgent plate")
        await kit.engine.skip_step(run_id, "a", {"value": 1}, who="erin", reason="measured by hand")
        await kit.until_done(run_id)
        return run_id, kit

    run_id, kit = run_kit(data_dir, scenario, fail_kinds={"X.A": 1})
    steps = kit.steps(run_id)
    assert "Skipped by erin: measured by hand" in [t.why for t in kit.store.transitions(steps["a"]["order_id"])]
    [moved] = [e for e in kit.store.audit_entries(steps["b"]["order_id"]) if e.action == "reprioritise"]
    assert (moved.who, moved.reason, moved.details["priority"]) == ("erin", "urgent plate", 80)
    assert not [e for e in kit.store.audit_entries(run_id) if e.action == "reprioritise"]


def test_a_run_asked_for_by_an_operator_is_audited_on_the_run_and_its_steps_are_found_by_id(data_dir):
    async def scenario(kit):
        await kit.publish(template("Three", [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop"},
                                             {"id": "c", "kind": "noop", "depends_on": ["a", "b"]}]))
        run_id = await kit.engine.create_instance("Three", {}, who="ann", audit=("start run", {"from": "form"}))
        return run_id, kit

    run_id, kit = run_kit(data_dir, scenario)
    [started] = [e for e in kit.store.audit_entries(run_id) if e.action == "start run"]
    assert (started.who, started.target, started.details) == ("ann", run_id, {"from": "form"})
    view = kit.engine.views.run(run_id)
    assert [view.step(s).id for s in ("c", "a", "b")] == ["c", "a", "b"]
    with pytest.raises(NotFoundError, match=r"has no step 'd' \(steps: a, b, c\)"):
        view.step("d")


def test_an_orders_log_carries_what_its_instrument_said(data_dir):
    async def scenario(kit):
        await kit.publish("Seal", [{"id": "seal", "kind": "Sealer.Seal"}])
        run_id = await kit.run("Seal")
        await kit.until_done(run_id)
        return kit.store.order_log([kit.steps(run_id)["seal"]["order_id"]]), kit.steps(run_id)["seal"]["order_id"]

    log, order_id = run_dkit(data_dir, scenario)
    said = [text for _at, kind, _oid, text in log if kind == "instrument"]
    assert f"Sealer Ready → Busy: running {order_id}" in said


def test_an_instruments_status_change_outside_a_step_is_committed_without_waiting_for_other_writes(
        data_dir, monkeypatch):
    """Rows that ride with the next write (a step's instrument log) may wait for it; an
    instrument connecting at start is not waiting on anything, so its status row commits at once."""
    monkeypatch.setattr(core.store, "RIDER_WAIT", 600.0)  # a rider would wait ten minutes

    async def scenario():
        store = Store(data_dir / "dispatch.sqlite3").open()
        kit = DKit(store)
        try:
            await asyncio.wait_for(kit.start(), 20)
            return store.instrument_log("Arm")
        finally:
            await kit.engine.close()
            await kit.dispatcher.close()
            store.close()

    rows = asyncio.run(scenario())
    assert [(r[3], r[4]) for r in rows] == [("Ready", "ready")], rows
