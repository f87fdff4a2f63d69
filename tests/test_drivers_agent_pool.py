"""Robot agents through the whole console (runtime, dispatcher, engine, store), with real agent
processes on 127.0.0.1: an agent that turns a job down (``job_reject``) and several agents
offering the same capability, among which the dispatcher spreads the steps."""

from __future__ import annotations

import asyncio

import pytest

from core.drivers import DriverError
from core.workcell import parse_workcell
from tests.test_drivers_agent import MOVE, Agents, order, run, workcell


def test_job_reject_fails_the_order_then_the_engine_retries_it(data_dir):
    """An agent that runs one job at a time, declared in the workcell to take two: the second
    job assigned to it is rejected (``InstrumentBusy``, retryable). The driver raises it as a
    retryable DriverError naming the instrument; in a run the step is retried and completes."""
    from core.runtime import Runtime
    from core.templates import template_from_dict

    text = workcell("Arm1", duration="1s").replace("    kind: RobotArm\n",
                                                   "    kind: RobotArm\n    max_concurrent: 2\n")

    async def body(agents: Agents) -> None:
        cell = parse_workcell(text, "cell.yaml")
        rt = Runtime.build(data_dir, workcell=cell, metrics=False)
        try:
            hub = rt.agent_hubs[0]
            await hub.start()
            await agents.start(hub.url, "Arm1", f"{MOVE},RobotArm.Park", "--max-concurrent", "1")
            await rt.start(None)
            arm = hub.drivers["Arm1"]

            # the driver: the rejection is the order's error, with the agent's code and flag
            first = asyncio.create_task(arm.execute(order("j1", plate="A", duration=1), lambda f, v: None))
            await asyncio.sleep(0)  # j1 is assigned first
            with pytest.raises(DriverError) as exc:
                await arm.execute(order("j2", plate="B"), lambda f, v: None)
            assert (exc.value.code, exc.value.retryable) == ("InstrumentBusy", True)
            assert "Arm1" in exc.value.message and "refused by the agent" in exc.value.message
            assert "busy (1 of 1 jobs running)" in exc.value.message
            assert (await first)["plate"] == "A"

            # the engine: two steps at once on Arm1; the rejected one is retried and completes
            await rt.engine.publish(template_from_dict({"name": "Two", "definition": {"steps": [
                {"id": s, "kind": MOVE, "parameters": {"plate": s, "duration": 1},
                 "retry_policy": {"max_attempts": 10, "initial_interval": 0.5, "backoff_multiplier": 1,
                                  "jitter": 0}} for s in ("m1", "m2")]}}))
            run_id = await rt.start_run("Two", {}, who="test")
            status = await rt.engine.wait(run_id, timeout=40)
            steps = {s["id"]: s for s in rt.engine.get_instance(run_id)["steps"]}
            assert status.value == "completed", steps
            assert max(s["attempt"] for s in steps.values()) >= 2, steps  # one was turned down
            assert {steps[s]["outputs"]["plate"] for s in steps} == {"m1", "m2"}
        finally:
            await rt.close()

    run(body)


def test_several_agents_offering_one_capability_share_the_steps(data_dir):
    """Three agents offer RobotArm.MovePlate; a run of three parallel moves gets one on each
    (each instrument takes one order at a time), and each step's outputs come from the agent it
    was dispatched to."""
    from core.runtime import Runtime
    from core.templates import template_from_dict

    async def body(agents: Agents) -> None:
        cell = parse_workcell(workcell("Arm1", "Arm2", "Arm3", duration="1s"), "cell.yaml")
        rt = Runtime.build(data_dir, workcell=cell, metrics=False)
        try:
            hub = rt.agent_hubs[0]
            await hub.start()
            for name in ("Arm1", "Arm2", "Arm3"):
                await agents.start(hub.url, name, f"{MOVE},RobotArm.Park", "--handler",
                                   "tests.helpers.agent_handlers:handle")
            await rt.start(None)
            await rt.engine.publish(template_from_dict({"name": "Three", "definition": {"steps": [
                {"id": s, "kind": MOVE, "parameters": {"mode": "whoami", "text": s}}
                for s in ("a", "b", "c")]}}))
            run_id = await rt.start_run("Three", {}, who="test")
            status = await rt.engine.wait(run_id, timeout=40)
            steps = rt.engine.get_instance(run_id)["steps"]
            assert status.value == "completed", steps
            assert sorted(s["instrument"] for s in steps) == ["Arm1", "Arm2", "Arm3"], steps
            for s in steps:  # the agent that ran it is the instrument the dispatcher chose
                assert s["outputs"]["agent"] == s["instrument"] and s["outputs"]["echo"] == s["id"]
        finally:
            await rt.close()

    run(body)
