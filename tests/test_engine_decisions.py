"""One transaction per engine decision and operator action (core/engine/decision.py)."""

from __future__ import annotations

import asyncio

from enginekit import run_kit, template

from core.engine import RunStatus, StepStatus
from core.engine.dag import FIRST_WAVE
from core.events import OperatorAction
from core.orders import OrderStatus

FIVE = template("Five", [
    {"id": "a", "kind": "Hold.Forever"},
    {"id": "b", "kind": "Reader.Read", "depends_on": ["a"]},
    {"id": "c", "kind": "Reader.Read", "depends_on": ["a"]},
    {"id": "d", "kind": "Reader.Read", "depends_on": ["b"]},
    {"id": "e", "kind": "Reader.Read", "depends_on": ["c", "d"]},
])


def test_cancel_of_a_five_step_run_is_one_commit_with_its_audit_entry(tmp_path):
    async def scenario(kit):
        await kit.publish(FIVE)
        run_id = await kit.run("Five")
        await kit.clock.run_until(lambda: kit.steps(run_id)["a"]["status"] == "running")
        before = (kit.store.submitted, kit.store.commit_count)
        await kit.engine.cancel(run_id, who="ann", reason="wrong plate")
        after = (kit.store.submitted, kit.store.commit_count)
        return run_id, before, after, kit

    run_id, before, after, kit = run_kit(tmp_path, scenario, hang_kinds=["Hold.Forever"])
    assert after[0] - before[0] == 1, "one write for the whole action"
    assert after[1] - before[1] == 1, "one commit (one fsync)"
    steps = kit.engine.get_instance(run_id)["steps"]
    assert {s["status"] for s in steps} == {"cancelled"}
    assert kit.executor.cancelled == [steps[0]["order_id"]], "the running step's instrument was asked to stop"
    # the run's transition, its steps' transitions and the audit entry share one transaction:
    # the audit row is written right after the transitions it explains (same commit, same order)
    audit = [a for a in kit.store.audit_entries(run_id) if a.action == "cancel run"]
    assert len(audit) == 1 and audit[0].who == "ann" and audit[0].reason == "wrong plate"
    last = {t.order_id: t for t in kit.store.transitions() if t.to_status is OrderStatus.Canceled}
    assert set(last) == {run_id, *(s["order_id"] for s in steps)}
    assert {t.who for t in last.values()} == {"ann"}


def test_an_operator_action_on_a_run_is_announced_after_its_audit_entry(tmp_path):
    async def scenario(kit):
        await kit.publish(FIVE)
        run_id = await kit.run("Five")
        await kit.clock.run_until(lambda: kit.steps(run_id)["a"]["status"] == "running")
        seen: list[OperatorAction] = []
        kit.ledger.bus.subscribe(seen.append, OperatorAction)
        await kit.engine.cancel(run_id, who="ann", reason="wrong plate")
        await kit.clock.settle()
        return run_id, seen, kit

    run_id, seen, kit = run_kit(tmp_path, scenario, hang_kinds=["Hold.Forever"])
    assert [(e.who, e.action, e.target, e.reason) for e in seen] == [("ann", "cancel run", run_id, "wrong plate")]
    assert [(a.who, a.action) for a in kit.store.audit_entries(run_id)] == [("ann", "cancel run")]


def test_a_completion_and_the_next_steps_start_share_one_commit(tmp_path):
    chain = template("Chain", [{"id": f"s{i}", "kind": "Reader.Read",
                                **({"depends_on": [f"s{i - 1}"]} if i else {})} for i in range(20)])

    async def scenario(kit):
        await kit.publish(chain)
        before = kit.store.submitted
        run_id = await kit.run("Chain")
        await kit.until_done(run_id)
        return run_id, kit.store.submitted - before

    run_id, writes = run_kit(tmp_path, scenario)
    # create + start (with s0 queued) + per step: running, completed-with-next-queued
    assert writes <= 2 + 2 * 20, writes


def test_a_wide_fan_out_reaches_instruments_before_every_step_is_queued(tmp_path):
    wide = template("Wide", [{"id": "root", "kind": "noop"},
                             *({"id": f"w{i}", "kind": "Reader.Read", "depends_on": ["root"]}
                               for i in range(300)),
                             {"id": "join", "kind": "noop", "depends_on": [f"w{i}" for i in range(300)]}])
    queued_at_first_call: list[int] = []

    async def scenario(kit):
        await kit.publish(wide)
        original = kit.executor.execute

        async def execute(request, progress):
            if not queued_at_first_call:
                queued_at_first_call.append(kit.store.count_orders(
                    "status = ? AND template_name = 'Reader.Read'", (int(OrderStatus.Scheduled),)))
            return await original(request, progress)

        kit.executor.execute = execute
        run_id = await kit.run("Wide")
        await kit.until_done(run_id)
        return kit.engine.run_status(run_id), len(kit.executor.calls)

    status, calls = run_kit(tmp_path, scenario)
    assert status is RunStatus.COMPLETED and calls == 300
    assert queued_at_first_call and queued_at_first_call[0] <= FIRST_WAVE, queued_at_first_call


def test_canceling_a_fan_out_between_its_waves_leaves_no_step_queued(tmp_path):
    wide = template("Wide", [{"id": "root", "kind": "noop"},
                             *({"id": f"w{i}", "kind": "Hold.Forever", "depends_on": ["root"]}
                               for i in range(600))])

    async def scenario(kit):
        await kit.publish(wide)
        run_id = await kit.run("Wide")
        await kit.clock.run_until(lambda: len(kit.executor.calls) >= 1)
        await kit.engine.cancel(run_id, who="ann")
        await kit.clock.advance(1)
        await asyncio.sleep(0.2)
        return run_id, kit

    run_id, kit = run_kit(tmp_path, scenario, hang_kinds=["Hold.Forever"])
    steps = kit.engine.get_instance(run_id)["steps"]
    assert {s["status"] for s in steps[1:]} == {"cancelled"}
    assert kit.store.count_orders("parent_id = ? AND status = ?", (run_id, int(OrderStatus.Scheduled))) == 0


def test_operator_cancel_of_a_running_step_stops_it_first_and_records_it_once(tmp_path):
    async def scenario(kit):
        await kit.publish(FIVE)
        run_id = await kit.run("Five")
        await kit.clock.run_until(lambda: kit.steps(run_id)["a"]["status"] == "running")
        before = kit.store.submitted
        status = await kit.engine.cancel_step(run_id, "a", who="ann", reason="jammed")
        writes = kit.store.submitted - before
        await kit.until_done(run_id)
        return run_id, status, writes, kit

    run_id, status, writes, kit = run_kit(tmp_path, scenario, hang_kinds=["Hold.Forever"])
    a = kit.steps(run_id)["a"]
    assert status is StepStatus.CANCELLED and a["status"] == "cancelled"
    assert kit.executor.cancelled == [a["order_id"]]
    assert writes == 1
    audit = [e for e in kit.store.audit_entries(a["order_id"]) if e.action == "cancel step"]
    assert len(audit) == 1 and audit[0].reason == "jammed"
    assert kit.engine.run_status(run_id) is RunStatus.CANCELLED  # its dependants could not run


def test_a_refused_action_in_a_batch_changes_nothing_of_its_run(tmp_path):
    from core.engine import Act, Action

    async def scenario(kit):
        await kit.publish(FIVE)
        running = await kit.run("Five")
        done = await kit.run("Five", {})
        await kit.engine.cancel(done, who="ann")
        errors = await kit.engine.act([Action(act=Act.CANCEL, run_id=done, who="bob"),
                                       Action(act=Act.PAUSE, run_id=running, who="bob")])
        return running, done, errors, kit

    running, done, errors, kit = run_kit(tmp_path, scenario, hang_kinds=["Hold.Forever"])
    assert errors[0] is not None and errors[1] is None
    assert kit.engine.run_status(running) is RunStatus.PAUSED
    assert [a.who for a in kit.store.audit_entries(done) if a.action == "cancel run"] == ["ann"]


def test_stopping_a_built_in_step_does_not_ask_an_instrument(tmp_path, caplog):
    waits = template("Waits", [{"id": "wait", "kind": "delay", "parameters": {"seconds": 600}}])

    async def scenario(kit):
        await kit.publish(waits)
        run_id = await kit.run("Waits")
        await kit.clock.run_until(lambda: kit.steps(run_id)["wait"]["status"] == "running")
        await kit.engine.cancel(run_id, who="ann")
        return run_id, kit

    run_id, kit = run_kit(tmp_path, scenario)
    assert kit.engine.run_status(run_id) is RunStatus.CANCELLED
    assert kit.executor.cancelled == [], "a delay has no instrument to ask"
    assert "did not confirm" not in caplog.text


def test_an_input_mapping_may_be_a_literal_as_in_seed_001(tmp_path):
    literal = template("Literal", [
        {"id": "step1", "kind": "Reader.Read"},
        {"id": "step2", "kind": "Reader.Read", "depends_on": ["step1"],
         "input_mapping": {"param1": "static_value", "param2": "step_outputs.step1.Success"}}])

    async def scenario(kit):
        await kit.publish(literal)
        run_id = await kit.run("Literal")
        await kit.until_done(run_id)
        return kit

    kit = run_kit(tmp_path, scenario)
    second = kit.executor.calls[-1]
    assert second.parameters["param1"] == "static_value" and second.parameters["param2"] is True


def test_a_mapping_that_misspells_a_root_is_refused_with_a_suggestion():
    import pytest

    from core.errors import TemplateError
    from core.templates import template_from_dict

    with pytest.raises(TemplateError, match=r"did you mean step_outputs.a.x"):
        template_from_dict(template("Typo", [{"id": "a", "kind": "Reader.Read"},
                                             {"id": "b", "kind": "Reader.Read", "depends_on": ["a"],
                                              "input_mapping": {"p": "step_output.a.x"}}]))


def test_a_step_no_instrument_can_take_fails_at_once_naming_what_is_offered(tmp_path):
    from core.clock import VirtualClock
    from core.runtime import Runtime
    from core.store import DB_FILENAME, Store
    from core.templates import template_from_dict
    from core.workcell import parse_workcell

    cell = parse_workcell("""
name: small
instruments:
  - {id: Sealer1, kind: Sealer, driver: simulated, capabilities: {Sealer.Seal: {duration: 1s}}}
""", "small.yaml")

    async def scenario():
        store = Store(tmp_path / DB_FILENAME).open()
        clock = VirtualClock.for_store(store)
        runtime = Runtime.build(tmp_path, store=store, clock=clock, workcell=cell, metrics=False)
        await runtime.start(templates_dir=None)
        await runtime.engine.publish(template_from_dict(template("Needs", [
            {"id": "read", "kind": "PlateReader.ReadPlate"}])))
        run_id = await runtime.start_run("Needs", {})
        await clock.run_until(lambda: runtime.engine.run_status(run_id).is_final, limit=60)
        instance = runtime.engine.get_instance(run_id)
        await runtime.close()
        return instance

    instance = asyncio.run(scenario())
    assert instance["status"] == "failed"
    step = instance["steps"][0]
    assert step["error_code"] == "NoCapability" and "offered: Sealer.Seal" in step["error"]
