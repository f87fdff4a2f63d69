"""The engine on a virtual clock: DAGs, conditions, retries, timeouts, policies, operator control."""

from __future__ import annotations

import asyncio

import pytest
from enginekit import run_kit, template

from core.engine import RunStatus, tables
from core.errors import IllegalTransitionError, InputError, StateError
from core.events import StepProgress
from core.orders import OrderStatus

DIAMOND = template("Diamond", [
    {"id": "a", "kind": "LiquidHandler.Transfer"},
    {"id": "b", "kind": "PlateReader.ReadPlate", "depends_on": ["a"]},
    {"id": "c", "kind": "Sealer.Seal", "depends_on": ["a"], "condition": "input_data['seal'] == True"},
    {"id": "d", "kind": "noop", "depends_on": ["b", "c"],
     "input_mapping": {"reading": "step_outputs.b.in_plate"}},
], inputs=[{"name": "seal", "type": "boolean"}, {"name": "plate", "type": "string"}])
DIAMOND["definition"]["steps"][1]["input_mapping"] = {"plate": "input_data.plate"}


def test_diamond_runs_in_parallel_and_records_orders(data_dir):
    async def scenario(kit):
        await kit.publish(DIAMOND)
        run_id = await kit.run("Diamond", {"seal": "false", "plate": "PL1"})
        used = await kit.until_done(run_id)
        return run_id, used, kit

    run_id, used, kit = run_kit(data_dir, scenario, durations={"*": 60})
    inst = kit.engine.get_instance(run_id)
    assert inst["status"] == "completed" and inst["template_version"] == 1
    steps = {s["id"]: s for s in inst["steps"]}
    assert steps["c"]["status"] == "skipped"
    assert steps["d"]["status"] == "completed"
    assert used == pytest.approx(120)  # a (60) then b (60); c skipped; d is a no-op
    # the run is a parent order, each step a child order pointing at what it waited for
    parent = kit.store.get_order(run_id)
    assert parent.status is OrderStatus.Complete and parent.templateVersion == "1"
    children = {s["id"]: kit.store.get_order(s["order_id"]) for s in inst["steps"]}
    assert all(c.parentIdentifier == run_id for c in children.values())
    assert children["d"].runAfterIdentifier == f"{steps['b']['order_id']},{steps['c']['order_id']}"
    assert children["b"].get_input_parameter_value("plate") == "PL1"
    assert children["c"].status is OrderStatus.Canceled and "condition is false" in children["c"].statusDetails
    assert children["b"].get_output_parameter_value("Success") is True
    # every change went through the transition log
    log = kit.store.transitions(steps["b"]["order_id"])
    assert [t.to_status for t in log] == [OrderStatus.Created, OrderStatus.Scheduled,
                                          OrderStatus.Running, OrderStatus.Complete]


def test_retry_backoff_runs_hours_of_virtual_time_instantly(data_dir):
    async def scenario(kit):
        await kit.publish(template("Flaky", [
            {"id": "read", "kind": "PlateReader.ReadPlate",
             "retry_policy": {"max_attempts": 4, "initial_interval": "30m", "backoff_multiplier": 2,
                              "max_backoff_seconds": "1h", "jitter": 0}}]))
        run_id = await kit.run("Flaky")
        used = await kit.until_done(run_id)
        return run_id, used, kit

    run_id, used, kit = run_kit(data_dir, scenario, fail_kinds={"PlateReader.ReadPlate": 3})
    assert used == pytest.approx(1800 + 3600 + 3600)  # 30 min, 60 min, capped at 60 min
    step = kit.steps(run_id)["read"]
    assert step["status"] == "completed" and step["attempt"] == 4
    log = [t.why for t in kit.store.transitions(step["order_id"]) if t.why and t.why.startswith("Retry")]
    assert log[0].startswith("Retry 2/4 in 1800.0 s after SimulatedFailure")
    assert len(log) == 3
    # the progress report counts the retries of each task (attempts after the first)
    tasks = {t["id"]: t for t in kit.engine.get_workflow_progress(run_id)["tasks"]}
    assert tasks["read"]["retry_count"] == 3 and tasks["read"]["status"] == "completed"


def test_timeout_stops_the_instrument_first_then_retries_then_fails(data_dir):
    async def scenario(kit):
        await kit.publish(template("Hang", [
            {"id": "spin", "kind": "Centrifuge.Spin", "timeout_seconds": "5m",
             "retry_policy": {"max_attempts": 2, "initial_interval": 10, "jitter": 0}}],
            failure_policy="abort"))
        run_id = await kit.run("Hang")
        used = await kit.until_done(run_id)
        return run_id, used, kit

    run_id, used, kit = run_kit(data_dir, scenario, hang_kinds={"Centrifuge.Spin"})
    step = kit.steps(run_id)["spin"]
    assert kit.engine.get_instance(run_id)["status"] == "failed"
    assert step["status"] == "failed" and step["error_code"] == "Timeout" and step["attempt"] == 2
    assert kit.executor.cancelled == [step["order_id"], step["order_id"]]
    assert used == pytest.approx(300 + 10 + 300)
    # the engine enforces the timeout; every attempt an executor gets also carries it
    assert [(c.attempt, c.timeout) for c in kit.executor.calls] == [(1, 300.0), (2, 300.0)]


def test_abort_policy_runs_the_error_handler_and_cancels_the_rest(data_dir):
    async def scenario(kit):
        await kit.publish(template("Abort", [
            {"id": "a", "kind": "Robot.Move"},
            {"id": "b", "kind": "Reader.Read", "depends_on": ["a"]},
            {"id": "c", "kind": "Sealer.Seal", "depends_on": ["b"]},
            {"id": "park", "kind": "Robot.Park"},
        ], error_handlers={"b": "park"}, failure_policy="abort"))
        run_id = await kit.run("Abort")
        await kit.until_done(run_id)
        return run_id, kit

    run_id, kit = run_kit(data_dir, scenario, fail_kinds={"Reader.Read": 5})
    steps = kit.steps(run_id)
    assert [steps[s]["status"] for s in "abc"] == ["completed", "failed", "cancelled"]
    assert steps["park"]["status"] == "completed"
    inst = kit.engine.get_instance(run_id)
    assert inst["status"] == "failed" and "step 'b' failed" in inst["error"]
    assert kit.store.get_order(run_id).status is OrderStatus.Error


def test_an_aborted_run_ends_only_after_its_error_handler_with_other_handlers_cancelled(data_dir):
    """Abort with two error handlers: the failed step's handler runs to its end before the run
    ends; the handler of a step that never failed is cancelled with the rest."""
    async def scenario(kit):
        await kit.publish(template("Abort2", [
            {"id": "a", "kind": "Robot.Move"},
            {"id": "b", "kind": "Reader.Read", "depends_on": ["a"]},
            {"id": "c", "kind": "Sealer.Seal", "depends_on": ["b"]},
            {"id": "park", "kind": "Robot.Park"},
            {"id": "alarm", "kind": "Horn.Sound"},
        ], error_handlers={"b": "park", "c": "alarm"}, failure_policy="abort"))
        run_id = await kit.run("Abort2")
        used = await kit.until_done(run_id)
        return run_id, used, kit

    run_id, used, kit = run_kit(data_dir, scenario, fail_kinds={"Reader.Read": 5}, durations={"*": 60})
    steps = kit.steps(run_id)
    assert [steps[s]["status"] for s in ("a", "b", "c", "park", "alarm")] == [
        "completed", "failed", "cancelled", "completed", "cancelled"]
    inst = kit.engine.get_instance(run_id)
    assert inst["status"] == "failed" and "step 'b' failed" in inst["error"]
    assert used == pytest.approx(180)  # a, the failed read of b, then park
    assert kit.store.get_order(steps["park"]["order_id"]).status is OrderStatus.Complete
    assert [t.to_status for t in kit.store.transitions(run_id)][-1] is OrderStatus.Error
    assert sum(1 for c in kit.executor.calls if c.kind == "Robot.Park") == 1


def test_continue_policy_lets_other_branches_finish(data_dir):
    async def scenario(kit):
        await kit.publish(template("Cont", [
            {"id": "a", "kind": "Reader.Read"},
            {"id": "a2", "kind": "noop", "depends_on": ["a"]},
            {"id": "b", "kind": "Sealer.Seal"},
        ], failure_policy="continue"))
        run_id = await kit.run("Cont")
        await kit.until_done(run_id)
        return run_id, kit

    run_id, kit = run_kit(data_dir, scenario, fail_kinds={"Reader.Read": 1})
    steps = kit.steps(run_id)
    assert (steps["a"]["status"], steps["a2"]["status"], steps["b"]["status"]) == ("failed", "skipped", "completed")
    assert kit.engine.get_instance(run_id)["status"] == "failed"


def test_pause_policy_then_operator_retries_the_step(data_dir):
    async def scenario(kit):
        await kit.publish(template("Pause", [
            {"id": "a", "kind": "Reader.Read"}, {"id": "b", "kind": "noop", "depends_on": ["a"]}],
            failure_policy="pause"))
        run_id = await kit.run("Pause")
        await kit.until_done(run_id)
        paused = kit.engine.get_instance(run_id)["status"]
        await kit.engine.retry_step(run_id, "a", who="alice", reason="plate reseated")
        await kit.until_done(run_id)
        with pytest.raises(StateError) as nothing_to_retry:
            await kit.engine.retry_step(run_id, None, who="alice")
        assert str(nothing_to_retry.value) == f"run {run_id} has no failed step to retry"
        return run_id, paused, kit

    run_id, paused, kit = run_kit(data_dir, scenario, fail_kinds={"Reader.Read": 1})
    assert paused == "paused"
    assert kit.engine.get_instance(run_id)["status"] == "completed"
    audit = kit.store.audit_entries(kit.steps(run_id)["a"]["order_id"])
    assert [(a.who, a.action, a.reason) for a in audit] == [("alice", "retry step", "plate reseated")]
    # the retry sends the failed step again; its dependant, which never ran, is not reset
    whys = {step: [t.why for t in kit.store.transitions(kit.steps(run_id)[step]["order_id"])] for step in "ab"}
    assert "Retry requested by alice" in whys["a"] and "Retry requested by alice" not in whys["b"]


def test_pause_lets_running_steps_finish_and_starts_nothing_new(data_dir):
    """... and pause and resume are recorded on the run under each operator's name."""
    async def scenario(kit):
        await kit.publish(template("Seq", [{"id": "a", "kind": "X.Y"}, {"id": "b", "kind": "X.Y", "depends_on": ["a"]}]))
        run_id = await kit.run("Seq")
        await kit.clock.advance(10)
        await kit.engine.pause(run_id, who="bob", reason="door open")
        await kit.clock.advance(500)
        during = {k: v["status"] for k, v in kit.steps(run_id).items()}
        with pytest.raises(IllegalTransitionError):
            await kit.engine.pause(run_id, who="bob")
        await kit.engine.resume(run_id, who="carol")
        await kit.until_done(run_id)
        return run_id, during, kit

    run_id, during, kit = run_kit(data_dir, scenario, durations={"*": 60})
    assert during == {"a": "completed", "b": "pending"}
    assert kit.engine.get_instance(run_id)["status"] == "completed"
    assert [a.action for a in kit.store.audit_entries(run_id)] == ["pause", "resume"]
    moves = [(t.why, t.who) for t in kit.store.transitions(run_id) if t.why and t.why.split()[0] in ("Paused", "Resumed")]
    assert moves == [("Paused by bob: door open", "bob"), ("Resumed by carol", "carol")]


def test_a_retry_that_fell_due_while_paused_goes_when_the_run_is_resumed(data_dir):
    """The retry's time passes while the run is paused: nothing is sent then; on resume the
    step is sent at once (its timer has already fired) and the run completes."""
    async def scenario(kit):
        await kit.publish(template("Flaky", [
            {"id": "read", "kind": "PlateReader.ReadPlate",
             "retry_policy": {"max_attempts": 2, "initial_interval": "30m", "jitter": 0}},
            {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]}]))
        run_id = await kit.run("Flaky")
        await kit.clock.run_until(lambda: kit.steps(run_id)["read"]["status"] == "retrying")
        await kit.engine.pause(run_id, who="bob")
        await kit.clock.advance(3600)  # the retry falls due while the run is paused
        during = kit.steps(run_id)["read"]["status"], len(kit.executor.calls)
        await kit.engine.resume(run_id, who="bob")
        resumed = kit.clock.now()
        await kit.until_done(run_id, limit=3600)
        return run_id, during, resumed, kit

    run_id, during, resumed, kit = run_kit(data_dir, scenario, fail_kinds={"PlateReader.ReadPlate": 1},
                                           durations={"*": 10})
    assert during == ("retrying", 1), "nothing is sent while the run is paused"
    assert kit.engine.get_instance(run_id)["status"] == "completed"
    read = kit.steps(run_id)["read"]
    assert read["status"] == "completed" and read["attempt"] == 2
    assert read["started_at"] == pytest.approx(resumed, abs=1.0), "sent on resume, not later"
    assert [c.kind for c in kit.executor.calls] == ["PlateReader.ReadPlate"] * 2 + ["Sealer.Seal"]


def test_a_condition_that_fails_at_run_time_fails_its_step_saying_why(data_dir):
    """A condition reading an input the run was not given fails its step (not the engine); the
    step's error, its order's details and the run's error say what went wrong in the condition."""
    async def scenario(kit):
        await kit.publish(template("Cond", [
            {"id": "a", "kind": "noop"},
            {"id": "b", "kind": "noop", "depends_on": ["a"], "condition": "input_data['volume'] > 1"}]))
        run_id = await kit.run("Cond")
        await kit.until_done(run_id)
        return run_id, kit

    run_id, kit = run_kit(data_dir, scenario)
    b = kit.steps(run_id)["b"]
    said = "condition \"input_data['volume'] > 1\" failed: KeyError: 'volume'"
    assert (b["status"], b["error_code"], b["error"]) == ("failed", "ConditionError", said)
    assert kit.store.get_order(b["order_id"]).statusDetails == f"ConditionError: {said}"
    inst = kit.engine.get_instance(run_id)
    assert (inst["status"], inst["error"]) == ("failed", f"step 'b' failed: {said}")


def test_a_mapping_to_a_missing_output_fails_the_step_saying_which_mapping(data_dir):
    async def scenario(kit):
        await kit.publish(template("Map", [
            {"id": "a", "kind": "noop"},
            {"id": "b", "kind": "X.Y", "depends_on": ["a"], "input_mapping": {"volume": "step_outputs.a.volume"}},
        ], failure_policy="abort"))
        run_id = await kit.run("Map")
        await kit.until_done(run_id)
        return run_id, kit

    run_id, kit = run_kit(data_dir, scenario)
    b = kit.steps(run_id)["b"]
    assert kit.engine.get_instance(run_id)["status"] == "failed"
    assert b["status"] == "failed"
    assert "input mapping volume <- step_outputs.a.volume: no such value" in b["error"]


def test_cancel_run_and_cancel_step(data_dir):
    async def scenario(kit):
        await kit.publish(template("Two", [{"id": "a", "kind": "X.Y"}, {"id": "b", "kind": "X.Z"},
                                           {"id": "c", "kind": "noop", "depends_on": ["b"]}],
                                   failure_policy="continue"))
        r1 = await kit.run("Two")
        await kit.clock.advance(5)
        await kit.engine.cancel_step(r1, "b", who="carol", reason="wrong plate")
        await kit.until_done(r1)
        r2 = await kit.run("Two")
        await kit.clock.advance(5)
        await kit.engine.cancel(r2, who="carol", reason="shift over")
        with pytest.raises(IllegalTransitionError):
            await kit.engine.cancel(r2)
        return r1, r2, kit

    r1, r2, kit = run_kit(data_dir, scenario, durations={"*": 60})
    s1 = kit.steps(r1)
    assert (s1["a"]["status"], s1["b"]["status"], s1["c"]["status"]) == ("completed", "cancelled", "skipped")
    assert kit.engine.get_instance(r1)["status"] == "cancelled"
    s2 = kit.steps(r2)
    assert {v["status"] for v in s2.values()} == {"cancelled"}
    assert kit.engine.get_instance(r2)["status"] == "cancelled"
    assert len(kit.executor.cancelled) == 3  # b of r1, a and b of r2: asked to stop first
    assert kit.store.get_order(r2).statusDetails == "Canceled by carol: shift over"
    b_log = kit.store.transitions(s1["b"]["order_id"])
    assert (b_log[-1].who, b_log[-1].why) == ("carol", "Canceled by carol: wrong plate")
    assert b_log[-1].at - b_log[0].at == pytest.approx(5.0)  # the store writes the engine's clock


def test_recover_from_step_keeps_upstream_and_counts_attempts(data_dir):
    async def scenario(kit):
        await kit.publish(template("Rec", [
            {"id": "a", "kind": "X.A"}, {"id": "b", "kind": "X.B", "depends_on": ["a"]},
            {"id": "c", "kind": "X.C", "depends_on": ["b"]}],
            failure_policy="pause", max_recovery_attempts=1))
        run_id = await kit.run("Rec")
        await kit.until_done(run_id)
        calls_a = sum(1 for c in kit.executor.calls if c.kind == "X.A")
        await kit.engine.recover(run_id, "b", who="dana", reason="recalibrated")
        await kit.until_done(run_id)
        with pytest.raises(StateError, match="recovery limit reached"):
            await kit.engine.recover(run_id, "b")
        return run_id, calls_a, kit

    run_id, calls_a, kit = run_kit(data_dir, scenario, fail_kinds={"X.C": 1})
    assert sum(1 for c in kit.executor.calls if c.kind == "X.A") == calls_a == 1  # upstream kept
    assert sum(1 for c in kit.executor.calls if c.kind == "X.B") == 2
    progress = kit.engine.get_workflow_progress(run_id)
    assert progress["status"] == "completed" and progress["recovery_attempts"] == 1
    assert progress["max_recovery_attempts"] == 1 and progress["progress"] == 100


def test_skip_failed_step_with_outputs(data_dir):
    async def scenario(kit):
        await kit.publish(template("Skip", [
            {"id": "a", "kind": "X.A"},
            {"id": "b", "kind": "X.B", "depends_on": ["a"], "input_mapping": {"v": "step_outputs.a.value"}}],
            failure_policy="pause"))
        run_id = await kit.run("Skip")
        await kit.until_done(run_id)
        await kit.engine.skip_step(run_id, "a", {"value": 42}, who="erin", reason="measured by hand")
        await kit.until_done(run_id)
        return run_id, kit

    run_id, kit = run_kit(data_dir, scenario, fail_kinds={"X.A": 1})
    steps = kit.steps(run_id)
    assert steps["a"]["status"] == "skipped" and steps["a"]["outputs"] == {"value": 42}
    assert kit.store.get_order(steps["b"]["order_id"]).get_input_parameter_value("v") == 42
    skipped = kit.store.transitions(steps["a"]["order_id"])[-1]
    assert (skipped.who, skipped.why) == ("erin", "Skipped by erin: measured by hand")
    assert kit.store.step_status_of(steps["a"]["order_id"]) == "skipped"
    assert kit.store.step_status_of(run_id) is None  # a run's own order is no step's


def test_start_workflow_creates_and_starts_a_run(data_dir):
    async def scenario(kit):
        await kit.publish(template("Two", [{"id": "a", "kind": "X.A"}, {"id": "b", "kind": "noop", "depends_on": ["a"]}]))
        run_id = await kit.engine.start_workflow("Two", {}, priority=70, who="lims")
        await kit.until_done(run_id)
        return run_id, kit

    run_id, kit = run_kit(data_dir, scenario)
    instance = kit.engine.get_instance(run_id)
    assert (instance["template_name"], instance["priority"], instance["status"]) == ("Two", 70, "completed")
    assert kit.store.transitions(run_id)[0].who == "lims"


def test_start_workflow_without_a_priority_runs_at_priority_50(data_dir):
    async def scenario(kit):
        await kit.publish(template("One", [{"id": "a", "kind": "X.A"}]))
        run_id = await kit.engine.start_workflow("One", {})
        await kit.until_done(run_id)
        return run_id, kit

    run_id, kit = run_kit(data_dir, scenario)
    assert kit.engine.get_instance(run_id)["priority"] == 50


def test_skipping_a_failed_step_runs_the_dependants_its_failure_skipped(data_dir):
    """With failure_policy continue a failed step's dependants are skipped; the operator's skip of
    the failed step (with its outputs) sends them again, with those outputs."""
    async def scenario(kit):
        await kit.publish(template("Skip", [
            {"id": "a", "kind": "X.A"},
            {"id": "b", "kind": "X.B", "depends_on": ["a"], "input_mapping": {"v": "step_outputs.a.value"}}],
            failure_policy="continue"))
        run_id = await kit.run("Skip")
        await kit.until_done(run_id)
        before = kit.steps(run_id)["b"]["status"]
        await kit.engine.skip_step(run_id, "a", {"value": 7}, who="erin", reason="measured by hand")
        await kit.until_done(run_id)
        return run_id, before, kit

    run_id, before, kit = run_kit(data_dir, scenario, fail_kinds={"X.A": 1})
    steps = kit.steps(run_id)
    assert before == "skipped"
    assert (steps["a"]["status"], steps["b"]["status"]) == ("skipped", "completed")
    assert kit.store.get_order(steps["b"]["order_id"]).get_input_parameter_value("v") == 7
    assert [c.kind for c in kit.executor.calls] == ["X.A", "X.B"]
    assert "upstream step skipped by operator" in [t.why for t in kit.store.transitions(steps["b"]["order_id"])]


def test_run_timeout_and_long_delay_steps(data_dir):
    async def scenario(kit):
        await kit.publish(template("Slow", [{"id": "wait", "kind": "delay", "parameters": {"seconds": "3h"}},
                                            {"id": "after", "kind": "noop", "depends_on": ["wait"]}],
                                   default_timeout_seconds="2h"))
        await kit.publish(template("Soak", [{"id": "wait", "kind": "delay", "parameters": {"duration": "6h"}}]))
        slow = await kit.run("Slow")
        soak = await kit.run("Soak")
        used = await kit.until_done(soak)
        return slow, soak, used, kit

    slow, soak, used, kit = run_kit(data_dir, scenario)
    assert used == pytest.approx(6 * 3600)
    assert kit.engine.get_instance(soak)["status"] == "completed"
    inst = kit.engine.get_instance(slow)
    assert inst["status"] == "failed" and "timed out after 7200 s" in inst["error"]


def test_inputs_are_checked_and_statistics_and_queries(data_dir):
    async def scenario(kit):
        await kit.publish(DIAMOND)
        with pytest.raises(InputError) as info:
            await kit.engine.create_instance("Diamond", {"seal": "maybe", "extra": 1})
        ids = [await kit.run("Diamond", {"seal": True, "plate": f"P{i}"}, priority=10 * i) for i in range(5)]
        for run_id in ids:
            await kit.until_done(run_id)
        return info.value, ids, kit

    error, ids, kit = run_kit(data_dir, scenario, durations={"*": 1})
    text = str(error)
    assert "seal: 'maybe' is not a boolean" in text and "extra: unknown input" in text
    assert "inputs of Diamond: plate: required input missing" in text
    assert [str(p) for p in error.problems if p.message == "required input missing"] == [
        "inputs of Diamond: plate: required input missing"]
    stats = kit.engine.get_statistics("Diamond")
    assert stats["total_instances"] == 5 and stats["completed_instances"] == 5
    assert stats["success_rate"] == 100.0 and stats["avg_duration_seconds"] == pytest.approx(2.0)  # a, then b and c together
    high, total = kit.engine.query_instances(priority_min=20, template="Diamond")
    assert total == 3 and {r["id"] for r in high} == set(ids[2:])
    assert sorted((r["priority"], r["template_name"], r["status"]) for r in high) == [
        (20, "Diamond", "completed"), (30, "Diamond", "completed"), (40, "Diamond", "completed")]
    # a row carries the run's times (epoch seconds on the virtual clock, which starts at 1.8e9)
    start = 1_800_000_000.0
    assert next(r for r in high if r["id"] == ids[2]) == {
        "id": ids[2], "template_name": "Diamond", "template_version": 1, "status": "completed",
        "priority": 20, "created_at": start, "started_at": start, "completed_at": start + 2, "error": None}
    done, total = kit.engine.query_instances(status="completed")
    assert total == 5
    assert kit.engine.query_instances(status="failed") == ([], 0)
    steps = kit.engine.get_instance(ids[0])["steps"]
    assert [(s["id"], s["name"], s["kind"]) for s in steps] == [
        ("a", "a", "LiquidHandler.Transfer"), ("b", "b", "PlateReader.ReadPlate"), ("c", "c", "Sealer.Seal"),
        ("d", "d", "noop")]
    plan = kit.store.read_sync(lambda c: c.execute(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM runs WHERE priority >= 20").fetchall())
    assert "USING" in str(plan) and "INDEX" in str(plan).upper()


def test_versions_are_immutable_and_runs_record_theirs(data_dir):
    async def scenario(kit):
        v1 = await kit.publish(template("V", [{"id": "a", "kind": "noop"}]))
        same = await kit.publish(template("V", [{"id": "a", "kind": "noop"}]))
        v2 = await kit.publish(template("V", [{"id": "a", "kind": "noop"}, {"id": "b", "kind": "noop"}]))
        r1 = await kit.run("V", version=1)
        r2 = await kit.run("V")
        await kit.until_done(r2)
        return v1, same, v2, r1, r2, kit

    v1, same, v2, r1, r2, kit = run_kit(data_dir, scenario)
    assert (v1.version, same.version, v2.version) == (1, 1, 2)
    assert kit.engine.templates.versions("V") == [1, 2]
    assert kit.engine.get_instance(r1)["template_version"] == 1 and len(kit.steps(r1)) == 1
    assert kit.engine.get_instance(r2)["template_version"] == 2 and len(kit.steps(r2)) == 2
    assert kit.engine.templates.get("V", 1).steps == v1.steps
    history = kit.engine.templates.history("V")
    assert [h["version"] for h in history] == [1, 2] and history[0]["published_by"] == "labconsole"
    assert RunStatus.COMPLETED.value == kit.engine.get_instance(r2)["status"]
    # each new version is audited with its number; the identical re-publish writes nothing
    assert [(a.who, a.action, a.reason, a.details) for a in kit.store.audit_entries("V")] == [
        ("labconsole", "publish template", None, {"version": 1}),
        ("labconsole", "publish template", None, {"version": 2})]


def test_console_picks_up_runs_created_and_cancelled_elsewhere(data_dir):
    from core.engine import Engine

    async def scenario(kit):
        await kit.publish(template("Long", [{"id": "a", "kind": "X.Y"}, {"id": "b", "kind": "X.Y", "depends_on": ["a"]}]))
        other = Engine(kit.ledger, kit.executor, clock=kit.clock)  # e.g. the command line
        run_id = await other.create_instance("Long", {})
        started, _ = await kit.engine.sync_with_store()
        await kit.clock.advance(10)
        running = kit.steps(run_id)["a"]["status"]
        await other.cancel(run_id, who="cli", reason="not needed")
        _, stopped = await kit.engine.sync_with_store()
        await kit.clock.advance(100)
        return run_id, started, running, stopped, kit

    run_id, started, running, stopped, kit = run_kit(data_dir, scenario, durations={"*": 60})
    assert started == [run_id] and running == "running" and stopped == [run_id]
    assert kit.engine.run_status(run_id) is RunStatus.CANCELLED
    assert [c.step_id for c in kit.executor.calls] == ["a"]  # b never started
    assert kit.executor.cancelled  # the instrument was asked to stop a


def test_a_query_without_a_filter_lists_every_run_newest_first_with_the_total(data_dir):
    async def scenario(kit):
        await kit.publish(template("One", [{"id": "a", "kind": "noop"}]))
        await kit.publish(template("Two", [{"id": "a", "kind": "noop"}]))
        ids = []
        for name in ("One", "Two", "One"):
            ids.append(await kit.run(name))
            await kit.until_done(ids[-1])
            await kit.clock.advance(60)  # each run created a minute after the one before
        every = kit.engine.query_instances()
        page = kit.engine.query_instances(limit=1, offset=1)
        ones = kit.engine.query_instances(template="One")
        return ids, every, page, ones

    ids, (every, total), (page, page_total), (ones, ones_total) = run_kit(data_dir, scenario)
    assert total == 3 and [r["id"] for r in every] == ids[::-1]
    assert [r["template_name"] for r in every] == ["One", "Two", "One"]
    assert {r["status"] for r in every} == {"completed"}
    assert page_total == 3 and [r["id"] for r in page] == [ids[1]]
    assert ones_total == 2 and [r["id"] for r in ones] == [ids[2], ids[0]]


def test_recovery_resumes_the_unfinished_runs_listed_after_one_already_loaded(data_dir):
    """A run this engine already holds is left as it is; the unfinished runs the store lists
    after it (oldest first) are still resumed."""
    from core.engine import Engine

    async def scenario(kit):
        await kit.publish(template("Long", [{"id": "a", "kind": "X.Y"}]))
        held = await kit.run("Long")  # running here
        await kit.clock.advance(10)
        other = Engine(kit.ledger, kit.executor, clock=kit.clock)  # e.g. the command line
        waiting = await other.create_instance("Long", {})  # unfinished, in the store only
        listed = kit.store.read_sync(lambda c: tables.unfinished(c))
        resumed = await kit.engine.recover_in_flight()
        await kit.until_done(held)
        if waiting in resumed:  # else it never runs: the assertions below say so
            await kit.until_done(waiting)
        return held, waiting, listed, resumed, kit

    held, waiting, listed, resumed, kit = run_kit(data_dir, scenario, durations={"*": 60})
    assert listed == [held, waiting], "the loaded run comes first: the check proves nothing otherwise"
    assert resumed == [waiting]
    assert kit.engine.run_status(held) is RunStatus.COMPLETED
    assert kit.engine.run_status(waiting) is RunStatus.COMPLETED
    assert sorted(c.order_id for c in kit.executor.calls) == sorted(
        kit.steps(r)["a"]["order_id"] for r in (held, waiting)), "each step run once"


def test_a_run_is_stamped_with_its_engines_clock(data_dir):
    """The run's order, its steps' orders and its row all carry the creating engine's time, even
    when that engine keeps another clock than the store (e.g. the command line's)."""
    from datetime import UTC, datetime

    from core.clock import VirtualClock
    from core.engine import Engine

    async def scenario(kit):
        await kit.publish(template("Stamp", [{"id": "a", "kind": "X.Y"}, {"id": "b", "kind": "X.Y"}]))
        other = Engine(kit.ledger, kit.executor, clock=VirtualClock(start=1_900_000_000.0))
        return await other.create_instance("Stamp", {}), kit

    run_id, kit = run_kit(data_dir, scenario)
    at = datetime.fromtimestamp(1_900_000_000.0, UTC)
    assert kit.store.get_order(run_id).creationTime == at
    assert [kit.store.get_order(s["order_id"]).creationTime for s in kit.steps(run_id).values()] == [at, at]
    rows, _ = kit.engine.query_instances(template="Stamp")
    assert [r["created_at"] for r in rows] == [1_900_000_000.0]


def test_a_simulated_failure_rate_fails_steps_saying_so(data_dir):
    async def scenario(kit):
        await kit.publish(template("Unlucky", [{"id": "read", "kind": "PlateReader.ReadPlate"}]))
        run_id = await kit.run("Unlucky")
        await kit.until_done(run_id)
        return run_id, kit

    run_id, kit = run_kit(data_dir, scenario, failure_rate=1.0)
    step = kit.steps(run_id)["read"]
    text = "PlateReader.ReadPlate failed (simulated, rate 1.0)"
    assert (step["status"], step["error"], step["error_code"]) == ("failed", text, "SimulatedFailure")
    assert kit.store.get_order(step["order_id"]).statusDetails == f"SimulatedFailure: {text}"
    assert kit.engine.get_instance(run_id)["error"] == f"step 'read' failed: {text}"


def test_wait_returns_when_the_run_ends_or_pauses_for_the_operator(data_dir):
    """``wait`` answers with the run's status once it completes or pauses for the operator, answers
    at once for a run that already ended (even one no longer held in memory), and gives up after
    ``timeout`` seconds when the run is still going."""
    async def scenario(kit):
        await kit.publish(template("Seq", [{"id": "a", "kind": "X.Y"}, {"id": "b", "kind": "X.Y", "depends_on": ["a"]}]))
        await kit.publish(template("Pause", [{"id": "a", "kind": "Reader.Read"}], failure_policy="pause"))
        run_id = await kit.run("Seq")
        waiter = asyncio.create_task(kit.engine.wait(run_id))
        # time does not move on its own here: the run cannot end, so the bounded wait gives up
        with pytest.raises(TimeoutError):
            await kit.engine.wait(run_id, timeout=0.2)
        running = kit.engine.get_instance(run_id)["status"]
        await kit.until_done(run_id)
        ended = await asyncio.wait_for(waiter, 30)
        again = await kit.engine.wait(run_id, timeout=30)
        paused_id = await kit.run("Pause")
        paused_waiter = asyncio.create_task(kit.engine.wait(paused_id, timeout=30))
        await kit.until_done(paused_id)
        paused = await paused_waiter
        return running, ended, again, paused, kit.engine.get_instance(paused_id)

    running, ended, again, paused, instance = run_kit(data_dir, scenario, durations={"*": 60},
                                                      fail_kinds={"Reader.Read": 1})
    assert running == "running"
    assert ended is RunStatus.COMPLETED and again is RunStatus.COMPLETED
    assert paused is RunStatus.PAUSED and instance["status"] == "paused"
    assert instance["steps"][0]["status"] == "failed"


def test_a_steps_progress_reaches_the_views_naming_its_order(data_dir):
    async def scenario(kit):
        told: list[StepProgress] = []
        kit.ledger.bus.subscribe(told.append, StepProgress)
        await kit.publish(template("Read", [{"id": "read", "kind": "PlateReader.ReadPlate"}]))
        run_id = await kit.run("Read")
        await kit.until_done(run_id)
        return kit.steps(run_id)["read"]["order_id"], told

    order_id, told = run_kit(data_dir, scenario, durations={"*": 60})
    assert [(e.order_id, e.progress, e.values) for e in told] == [(order_id, 1.0, None)]


def test_a_refused_input_names_the_type_it_expected(data_dir):
    async def scenario(kit):
        await kit.publish(DIAMOND)
        with pytest.raises(InputError) as info:
            await kit.engine.create_instance("Diamond", {"seal": "maybe", "plate": "PL1"})
        return info.value

    error = run_kit(data_dir, scenario)
    assert [str(p) for p in error.problems] == [
        "inputs of Diamond: seal: 'maybe' is not a boolean (expected boolean)"]
