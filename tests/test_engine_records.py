"""What the engine and the dispatcher record for a person to read later: operator reasons on the
steps' transitions, audit rows on the order they concern, the instruments' own words in an order's
log, a run's steps by id; and an instrument's status change outside a step committed at once."""

from __future__ import annotations

import asyncio

import pytest
from dispatchkit import DKit, run_dkit
from enginekit import Kit, run_kit, template

import core.store
from core.dispatcher import Job
from core.engine import RunStatus
from core.errors import ConfigError, InputError, NotFoundError, StoreError
from core.inbox import Inbox, InboxChanged
from core.orders import ModuleRestrictionStrategy, Order
from core.store import ORDER_ROW_COLUMNS, Store
from core.templates import template_from_dict
from core.users import PermissionDenied, add_user


async def _paused_at_its_first_step(kit) -> str:
    """A run of two steps, paused because its first one failed (the kit fails X.A once)."""
    await kit.publish(template("Two", [
        {"id": "a", "kind": "X.A"},
        {"id": "b", "kind": "X.B", "depends_on": ["a"]}], failure_policy="pause"))
    run_id = await kit.run("Two")
    await kit.until_done(run_id)
    return run_id

def test_skip_and_reprioritise_of_a_step_are_recorded_on_that_step_with_the_reason(data_dir):
    async def scenario(kit):
        run_id = await _paused_at_its_first_step(kit)
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
        seal = kit.steps(run_id)["seal"]["order_id"]
        return kit.store.order_log([seal]), seal, kit.store.order_rows("id = ?", (seal,))

    log, order_id, rows = run_dkit(data_dir, scenario)
    said = [text for _at, kind, _oid, text in log if kind == "instrument"]
    assert f"Sealer Ready → Busy: running {order_id}" in said
    # the order's light row (Jobs' Instrument column, history search) names where it ran
    assert [r[ORDER_ROW_COLUMNS.index("assigned_to")] for r in rows] == ["Sealer"]


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


def test_a_paused_run_stays_paused_across_a_restart(data_dir):
    """Pause lets the running step finish and starts nothing new; a console restarted meanwhile
    keeps the run paused until someone resumes it."""
    flow = template("Wait", [{"id": "a", "kind": "delay", "parameters": {"seconds": "60s"}},
                             {"id": "b", "kind": "noop", "depends_on": ["a"]}])

    async def scenario():
        store = Store(data_dir / "engine.sqlite3").open()
        kit = Kit(store)
        await kit.engine.start()
        await kit.publish(flow)
        run_id = await kit.run("Wait")
        await kit.clock.settle()
        named = {t.get_name() for t in asyncio.all_tasks()}
        await kit.engine.pause(run_id, who="erin", reason="check the plate")
        await kit.clock.advance(120)
        before = kit.steps(run_id)
        await kit.engine.close()
        kit = Kit(store)  # the console restarts
        await kit.engine.start()
        await kit.clock.advance(600)
        after, status = kit.steps(run_id), kit.engine.run_status(run_id)
        await kit.engine.resume(run_id, who="erin")
        await kit.until_done(run_id)
        final = kit.engine.run_status(run_id)
        await kit.engine.close()
        store.close()
        return named, before, after, status, final

    named, before, after, status, final = asyncio.run(scenario())
    assert any(n.startswith("engine:") for n in named)  # its tasks are named in failure logs
    assert before["a"]["status"] == "completed" and before["b"]["status"] == "pending"
    assert after["b"]["status"] == "pending" and status is RunStatus.PAUSED
    assert final is RunStatus.COMPLETED


def test_answering_a_prompt_tells_the_window_which_item_and_run(data_dir):
    ask = template("Ask", [{"id": "ask", "kind": "prompt", "parameters": {
        "message": "Plate loaded?", "fields": [{"name": "ok", "type": "yesno"}]}}])

    async def scenario(kit):
        inbox = Inbox(kit.engine)
        await kit.publish(ask)
        run_id = await kit.run("Ask")
        await kit.clock.settle()
        [item] = inbox.items()
        seen: list[InboxChanged] = []
        kit.ledger.bus.subscribe(seen.append, InboxChanged)
        await inbox.answer(item.id, {"ok": "yes"}, who="ann")
        await kit.clock.settle()
        return item.id, run_id, seen

    item_id, run_id, seen = run_kit(data_dir, scenario)
    assert [(e.item_id, e.run_id) for e in seen if e.state == "answered"] == [(item_id, run_id)]


def test_bad_priority_and_synchronous_settings_are_refused_naming_the_field(data_dir):
    async def scenario(kit):
        await kit.publish(template("One", [{"id": "a", "kind": "noop"}]))
        with pytest.raises(InputError) as refused:
            await kit.engine.create_instance("One", {}, priority=101)
        return refused.value

    refused = run_kit(data_dir, scenario)
    assert [p.where.field for p in refused.problems] == ["priority"]
    with pytest.raises(ConfigError) as bad:
        Store(data_dir / "other.sqlite3", synchronous="fast")
    assert [p.where.field for p in bad.value.problems] == ["synchronous"]
    closed = Store(data_dir / "closed.sqlite3")  # never opened: a write says so, naming the file
    with pytest.raises(StoreError, match=r"closed\.sqlite3: store is not open$"):
        closed.write_sync(lambda c: c.execute("SELECT 1"))


def test_why_waiting_names_a_restriction_only_when_the_order_has_one(data_dir):
    async def scenario(kit):
        await kit.dispatcher.set_enabled("Sealer", False, who="ann", reason="cleaning")
        reasons = {}
        for oid, restrict in (("Order_97", ()), ("Order_98", ("Sealer",))):
            order = Order(identifier=oid, templateName="Sealer.Seal",
                          moduleRestrictionStrategy="UnlessBusy")
            job = Job(oid, order, "Sealer.Seal", restrict=restrict, strategy=ModuleRestrictionStrategy.UnlessBusy)
            task = asyncio.ensure_future(kit.dispatcher.submit(job))
            await kit.clock.advance(1)
            reasons[oid] = kit.dispatcher.why_waiting(oid)
            task.cancel()
        return reasons

    reasons = run_dkit(data_dir, scenario)
    assert reasons["Order_97"] == ["Sealer is disabled"]
    assert reasons["Order_98"] == ["restricted to Sealer (UnlessBusy)", "Sealer is disabled"]


def test_a_status_change_event_carries_the_row_the_live_views_show(data_dir):
    """The Jobs table updates its row from the event, without reading the store again: the row
    must be the order as stored, its instrument included."""
    from core.events import OrderStatusChanged
    from core.ledger import Ledger
    from core.orders import OrderStatus

    async def scenario():
        with Store(data_dir / "ledger.sqlite3").open() as store:
            ledger = Ledger(store)
            seen: list[OrderStatusChanged] = []
            ledger.bus.subscribe(seen.append, OrderStatusChanged)
            made = await ledger.create_order(Order(templateName="Sealer.Seal", templateVersion="2",
                                                   assignedTo="Sealer"))
            await ledger.set_status(made.identifier or "", OrderStatus.Running, who="erin", why="started")
            stored = store.order_rows("id = ?", (made.identifier,))
        return seen, stored

    seen, stored = asyncio.run(scenario())
    assert [tuple(e.row) for e in seen] == [tuple(r) for r in stored]
    assert seen[0].row[ORDER_ROW_COLUMNS.index("assigned_to")] == "Sealer"
    assert seen[0].row[ORDER_ROW_COLUMNS.index("template_version")] == "2"


def test_an_instrument_claimed_for_a_step_whose_record_failed_is_given_back(data_dir):
    """The step's Queued and Running are committed with the claim of its instrument; when that
    commit fails (a full disk), nothing of it was recorded and the instrument is free again for
    the next run instead of held for a step that never started."""
    import sqlite3

    from core.engine.decision import Decision

    async def scenario(kit):
        await kit.publish("Seal", [{"id": "seal", "kind": "Sealer.Seal"}])
        write, failed = kit.store.write, []

        async def full_disk_once(fn):
            owner = getattr(fn, "__self__", None)
            if not failed and isinstance(owner, Decision) and owner.undo:
                failed.append(True)
                raise sqlite3.OperationalError("database or disk is full")
            return await write(fn)

        kit.store.write = full_disk_once
        first = await kit.engine.create_instance("Seal", {}, allow_duplicate=True)
        with pytest.raises(sqlite3.OperationalError):
            await kit.engine.execute_workflow(first)
        kit.store.write = write
        second = await kit.run("Seal")
        await kit.until(lambda: kit.status(second) is RunStatus.COMPLETED, limit=3600)
        sealer = {v.id: v for v in kit.dispatcher.view()}["Sealer"]
        return failed, kit.status(second), sealer.running

    failed, status, running = run_dkit(data_dir, scenario)
    assert failed == [True] and status is RunStatus.COMPLETED and not running


def test_a_new_priority_is_announced_with_the_stored_row_of_the_run_and_of_each_step(data_dir):
    """The views move a reprioritised run and its steps from the OrderUpdated events alone: one per
    order, naming the priority as the changed field, carrying the row as committed."""
    from core.events import OrderUpdated

    async def scenario(kit):
        run_id = await _paused_at_its_first_step(kit)
        seen: list[tuple[OrderUpdated, list[tuple]]] = []
        kit.ledger.bus.subscribe(
            lambda e: seen.append((e, kit.store.order_rows("id = ?", (e.order_id,)))), OrderUpdated)
        await kit.engine.reprioritise(run_id, 80, who="erin", reason="urgent plate")
        return run_id, seen, kit

    run_id, seen, kit = run_kit(data_dir, scenario, fail_kinds={"X.A": 1})
    steps = kit.steps(run_id)
    assert sorted(e.order_id for e, _ in seen) == sorted([run_id, steps["a"]["order_id"], steps["b"]["order_id"]])
    at = ORDER_ROW_COLUMNS.index("numeric_priority")
    for event, stored in seen:
        assert event.fields == ("priority",)
        assert event.row[at] == 80
        assert [tuple(event.row)] == [tuple(r) for r in stored]  # already committed when announced


def test_a_template_published_by_a_user_whose_role_may_not_is_refused_and_nothing_is_stored(data_dir):
    """With users set up, an operator may not publish: refused naming the role, no version stored
    and nothing audited; a supervisor's publish is stored and audited under that name."""
    async def scenario(kit):
        add_user(kit.store, "ann", "admin", "correct horse battery", who="setup")
        add_user(kit.store, "bob", "operator", "staple battery horse", who="ann")
        add_user(kit.store, "cat", "supervisor", "battery staple correct", who="ann")
        data = template("Guarded", [{"id": "a", "kind": "noop"}])
        with pytest.raises(PermissionDenied) as refused:
            await kit.engine.publish(template_from_dict(data), who="bob")
        stored = kit.engine.templates.names()
        published = await kit.engine.publish(template_from_dict(data), who="cat")
        return str(refused.value), stored, published.version, kit.store.audit_entries("Guarded")

    refused, stored, version, audit = run_kit(data_dir, scenario)
    assert refused == ("template publish: 'bob' is signed in as operator; template publish needs the "
                       "supervisor role or above")
    assert stored == [] and version == 1
    assert [(a.who, a.action, a.details) for a in audit] == [("cat", "publish template", {"version": 1})]
