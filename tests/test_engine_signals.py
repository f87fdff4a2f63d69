"""What the engine tells the window and keeps across a restart: step events name the instrument
the step runs on; an operator action that settles inbox items says which run; whatever an
executor raises becomes a failure with a code (its own, or the exception's class); a failed
step's error and code read back the same after a restart. Real store, virtual clock."""

from __future__ import annotations

import asyncio

from enginekit import Kit, run_kit, template

from core.engine import RunStatus
from core.events import StepChanged
from core.inbox import Inbox, InboxChanged
from core.states import StepStatus
from core.store import Store

ASK = template("Ask", [{"id": "ask", "kind": "prompt", "parameters": {
    "message": "Plate loaded?", "fields": [{"name": "ok", "type": "yesno"}]}}])


def test_step_events_name_the_instrument_the_step_runs_on(data_dir):
    async def scenario(kit: Kit):
        seen: list[StepChanged] = []
        kit.ledger.bus.subscribe(seen.append, StepChanged)
        await kit.publish(template("Read", [{"id": "read", "kind": "PlateReader.ReadPlate"}]))
        run_id = await kit.run("Read")
        await kit.until_done(run_id)
        return seen

    seen = run_kit(data_dir, scenario, durations={"*": 5.0})
    by_status = {e.status: e for e in seen if e.step_id == "read"}
    assert by_status[StepStatus.RUNNING].instrument == "simulator"
    assert by_status[StepStatus.COMPLETED].instrument == "simulator"


FRAGILE = template("Fragile", [{"id": "read", "kind": "PlateReader.ReadPlate", "retry_policy": {"max_attempts": 1}},
                               {"id": "after", "kind": "noop", "depends_on": ["read"]}], failure_policy="pause")


def test_an_operator_action_that_settles_items_names_the_run(data_dir):
    """Skipping a step settles that step's item; retrying every failed step of a run settles the
    run's items: either way the window is told which run."""

    async def scenario(kit: Kit):
        inbox = Inbox(kit.engine)
        told: list[InboxChanged] = []
        kit.ledger.bus.subscribe(told.append, InboxChanged)
        await kit.publish(ASK)
        await kit.publish(FRAGILE)
        asking, fragile = await kit.run("Ask"), await kit.run("Fragile")
        await kit.until_done(fragile)
        opened = len(inbox.items())
        told.clear()
        await kit.engine.skip_step(asking, "ask", {"ok": True}, who="carl", reason="done by hand")
        await kit.clock.settle()
        after_skip = [(e.run_id, e.state) for e in told]
        told.clear()
        await kit.engine.retry_step(fragile, None, who="carl", reason="reader fixed")
        await kit.until_done(fragile)
        return asking, fragile, opened, after_skip, [(e.run_id, e.state) for e in told], inbox.items()

    asking, fragile, opened, after_skip, after_retry, still_open = run_kit(
        data_dir, scenario, fail_kinds={"PlateReader.ReadPlate": 1})
    assert opened == 2
    assert (asking, "answered") in after_skip and all(run == asking for run, _ in after_skip)
    assert (fragile, "answered") in after_retry and all(run == fragile for run, _ in after_retry)
    assert still_open == []


class Broken(Exception):
    code = "LampBroken"
    retryable = False


def test_whatever_an_executor_raises_fails_the_step_with_a_code(data_dir):
    def outputs(request):
        if request.parameters.get("how") == "plain":
            raise RuntimeError("reader jammed")
        raise Broken("lamp broke")

    async def scenario(kit: Kit):
        for how in ("plain", "coded"):
            await kit.publish(template(f"Read {how}", [{
                "id": "read", "kind": "PlateReader.ReadPlate", "parameters": {"how": how},
                "retry_policy": {"max_attempts": 2, "initial_interval": "1s", "jitter": 0}}]))
        plain = await kit.run("Read plain")
        coded = await kit.run("Read coded")
        await kit.until_done(plain)
        await kit.until_done(coded)
        return kit.steps(plain)["read"], kit.steps(coded)["read"], kit.engine.run_status(plain)

    plain, coded, status = run_kit(data_dir, scenario, outputs=outputs)
    assert status is RunStatus.FAILED
    assert (plain["status"], plain["error_code"], plain["attempt"]) == ("failed", "RuntimeError", 2)
    assert "reader jammed" in plain["error"]
    # its own code, and not retried: it said it cannot be
    assert (coded["status"], coded["error_code"], coded["attempt"]) == ("failed", "LampBroken", 1)
    assert "lamp broke" in coded["error"]


def test_a_failed_steps_error_and_code_read_back_the_same_after_a_restart(data_dir):
    """A paused run's failed step reads back as it was; a run whose other branch was still
    running when the console stopped ends failed with the failed step's message, not its code."""
    branches = template("Branches", [{"id": "read", "kind": "PlateReader.ReadPlate", "retry_policy": {"max_attempts": 1}},
                                     {"id": "wait", "kind": "delay", "parameters": {"seconds": "100s"}}],
                        failure_policy="continue")

    async def scenario():
        store = Store(data_dir / "engine.sqlite3").open()
        kit = Kit(store, fail_kinds={"PlateReader.ReadPlate": 2})
        await kit.engine.start()
        await kit.publish(FRAGILE)
        await kit.publish(branches)
        paused, failing = await kit.run("Fragile"), await kit.run("Branches")
        await kit.until_done(paused)
        await kit.clock.advance(50)
        before = kit.steps(paused)["read"]
        await kit.engine.close()
        kit = Kit(store)  # the console restarts
        await kit.engine.start()
        await kit.until_done(failing)
        after = kit.steps(paused)["read"]
        ended = (kit.engine.run_status(paused), kit.engine.run_status(failing), kit.engine.get_instance(failing))
        await kit.engine.close()
        store.close()
        return before, after, ended

    before, after, (paused, failing, run) = asyncio.run(scenario())
    assert paused is RunStatus.PAUSED
    assert before["error_code"] == "SimulatedFailure" and "failed (simulated)" in before["error"]
    assert {k: after[k] for k in ("status", "error", "error_code", "attempt")} == \
        {k: before[k] for k in ("status", "error", "error_code", "attempt")}
    assert failing is RunStatus.FAILED
    assert run["error"] == "step 'read' failed: PlateReader.ReadPlate failed (simulated)"


def test_statistics_count_each_outcome_with_no_completed_run_too(data_dir):
    async def scenario(kit: Kit):
        await kit.publish(template("Read", [{"id": "read", "kind": "PlateReader.ReadPlate",
                                             "retry_policy": {"max_attempts": 1}}]))
        await kit.publish(template("Idle", [{"id": "n", "kind": "noop"}]))
        failed = [await kit.run("Read") for _ in range(2)]
        for run_id in failed:
            await kit.until_done(run_id)
        only_failed = kit.engine.get_statistics("Read")
        done = await kit.run("Read")
        await kit.until_done(done)
        return only_failed, kit.engine.get_statistics("Read"), kit.engine.get_statistics("Idle"), \
            kit.engine.get_statistics()

    only_failed, mixed, idle, overall = run_kit(data_dir, scenario, durations={"*": 5.0},
                                                fail_kinds={"PlateReader.ReadPlate": 2})
    assert (only_failed["total_instances"], only_failed["failed_instances"], only_failed["completed_instances"]) == \
        (2, 2, 0)
    assert only_failed["success_rate"] == 0.0 and only_failed["avg_duration_seconds"] == 0.0
    assert (mixed["total_instances"], mixed["completed_instances"], mixed["success_rate"]) == (3, 1, 33.3)
    assert mixed["avg_duration_seconds"] == 5.0
    assert idle["total_instances"] == 0 and idle["success_rate"] == 0.0
    assert overall["total_instances"] == 3
    assert set(mixed) == {"total_instances", "running_instances", "pending_instances", "paused_instances",
                          "completed_instances", "failed_instances", "cancelled_instances", "success_rate",
                          "avg_duration_seconds"}
    assert (mixed["paused_instances"], mixed["running_instances"], mixed["pending_instances"],
            mixed["cancelled_instances"]) == (0, 0, 0, 0)


def test_progress_points_at_the_first_unfinished_step_and_at_the_last_when_done(data_dir):
    async def scenario(kit: Kit):
        await kit.publish(template("Three", [{"id": "a", "kind": "noop"},
                                             {"id": "b", "kind": "PlateReader.ReadPlate", "depends_on": ["a"]},
                                             {"id": "c", "kind": "noop", "depends_on": ["b"]}]))
        run_id = await kit.run("Three")
        await kit.clock.advance(5)
        midway = kit.engine.get_workflow_progress(run_id)
        await kit.until_done(run_id)
        return midway, kit.engine.get_workflow_progress(run_id)

    midway, done = run_kit(data_dir, scenario, durations={"PlateReader.ReadPlate": 60.0})
    assert (midway["current_step"], midway["completed_tasks"], midway["running_tasks"], midway["progress"]) == \
        (1, 1, 1, 33)
    assert (done["current_step"], done["completed_tasks"], done["progress"], done["total_steps"]) == (2, 3, 100, 3)


def test_a_signed_retry_keeps_its_signature_in_each_steps_audit_entry(data_dir):
    from core.engine.control import Act, Action

    signature = {"user": "ann", "role": "supervisor", "meaning": "approved", "at": 1.0, "action": "retry"}

    async def scenario(kit: Kit):
        await kit.publish(FRAGILE)
        run_id = await kit.run("Fragile")
        await kit.until_done(run_id)
        [error] = await kit.engine.act([Action(act=Act.RETRY, run_id=run_id, who="ann", reason="fixed",
                                               signature=signature)])
        await kit.until_done(run_id)
        return error, kit.steps(run_id)["read"]["order_id"], kit.store.audit_entries(), kit.engine.run_status(run_id)

    error, order_id, audit, status = run_kit(data_dir, scenario, fail_kinds={"PlateReader.ReadPlate": 1})
    assert error is None and status is RunStatus.COMPLETED
    [entry] = [a for a in audit if a.action == "retry step"]
    assert (entry.who, entry.target, entry.reason) == ("ann", order_id, "fixed")
    assert entry.details == {"signature": signature}


def test_outputs_reach_data_services_as_typed_parameters_and_json_for_the_rest():
    from core.engine.types import to_parameter
    from core.orders import ParameterValueType

    assert [(p.value, p.valueType) for p in (to_parameter("ok", True), to_parameter("n", 3),
                                              to_parameter("od", 0.25), to_parameter("s", "x"))] == [
        ("True", ParameterValueType.BOOLEAN), ("3", ParameterValueType.INTEGER),
        ("0.25", ParameterValueType.DOUBLE), ("x", ParameterValueType.STRING)]
    wells = to_parameter("wells", {"A1": [0.1, 0.2]})
    assert (wells.name, wells.value, wells.valueType) == ("wells", '{"A1": [0.1, 0.2]}', ParameterValueType.OTHER)
