"""Remote robot agents: real ``labconsole agent`` processes talking to the hub on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from core.agent_client import AgentClient, AgentRefused
from core.clock import SystemClock
from core.drivers import DriverError, DriverState, InstrumentUnavailable, OrderCancelled
from core.drivers.agent import AgentDriver, AgentHub
from core.drivers.agent_protocol import MAX_FRAME_BYTES, encode
from core.orders import Order
from core.workcell import build_drivers, parse_workcell

ROOT = Path(__file__).resolve().parent.parent
HANDLER = "tests.helpers.agent_handlers:handle"
MOVE = "RobotArm.MovePlate"


def workcell(*names: str, beat: str = "1s", grace: str = "1s", token_env: str | None = None,
             duration: str = "0.3s") -> str:
    token = f", token_env: {token_env}" if token_env else ""
    items = "".join(
        f"  - id: {n}\n    kind: RobotArm\n    driver: agent\n"
        f"    options: {{url: 'ws://127.0.0.1:0', reconnect_grace: {grace}, connect_timeout: 10s{token}}}\n"
        f"    capabilities:\n      {MOVE}: {{duration: {duration}, jitter: 0s, progress_steps: 50, "
        f"duration_input: duration}}\n      RobotArm.Park: 0s\n"
        for n in names)
    return f"heartbeat_interval: {beat}\nstale_timeout: 30s\ninstruments:\n{items}"


async def drivers_for(text: str) -> dict[str, AgentDriver]:
    drivers = build_drivers(parse_workcell(text, "cell.yaml"), SystemClock())
    await next(iter(drivers.values())).hub.start()  # type: ignore[attr-defined]
    return drivers  # type: ignore[return-value]


def order(order_id: str, kind: str = MOVE, **inputs: Any) -> Order:
    return Order(identifier=order_id, templateName=kind,
                 inputParameters=[{"name": k, "value": v} for k, v in inputs.items()])


class Agents:
    """Agent processes started by one test; all killed at the end."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, url: str, name: str, caps: str = f"{MOVE},RobotArm.Park", *extra: str,
                    env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console", "agent", "--console", url, "--name", name,
            "--capabilities", caps, *extra, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self.procs.append(proc)
        return proc

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def run(coro_fn: Callable[[Agents], Any]) -> None:
    async def main() -> None:
        agents = Agents()
        try:
            await asyncio.wait_for(coro_fn(agents), 45)
        finally:
            await agents.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- the happy path


def test_register_execute_progress_outputs_and_routing_by_name():
    async def body(agents: Agents) -> None:
        drivers = await drivers_for(workcell("Arm1", "Arm2"))
        arm1, arm2 = drivers["Arm1"], drivers["Arm2"]
        hub = arm1.hub
        assert arm2.hub is hub  # one hub per url, routing by name
        await agents.start(hub.url, "Arm1")
        await agents.start(hub.url, "Arm2", f"{MOVE},RobotArm.Park", "--handler", HANDLER)
        await asyncio.gather(arm1.connect(), arm2.connect())
        assert arm1.state is DriverState.IDLE and arm1.agent_address.startswith("127.0.0.1:")
        latency = await arm1.heartbeat()
        assert 0 < latency < 5 and arm1.latency == latency
        status = await arm1.status()
        assert status.last_heartbeat is not None and "latency" in status.detail

        seen: list[tuple[float | None, Any]] = []
        out = await arm1.execute(order("o1", plate="PLT-1", source="A", destination="B"),
                                 lambda f, v: seen.append((f, v)))
        assert out["plate"] == "PLT-1" and out["destination"] == "B" and out["Success"] is True
        assert 14.5 <= out["grip_force_n"] <= 15.5
        assert [f for f, _ in seen] == pytest.approx([i / 50 for i in range(1, 51)])
        assert seen[-1][1]["Remaining"] == 0
        assert arm1.running == [] and arm1.state is DriverState.IDLE

        # same capability on both agents: each driver reaches its own agent
        who = await asyncio.gather(arm1.execute(order("o2", mode="whoami"), lambda f, v: None),
                                   arm2.execute(order("o3", mode="whoami", text="héllo ✓"),
                                                lambda f, v: None))
        assert "agent" not in who[0]  # Arm1 simulates: no handler
        assert who[1] == {"agent": "Arm2", "echo": "héllo ✓"}
        # a command the instrument does not declare is refused before anything is sent
        with pytest.raises(DriverError, match="does not offer"):
            await arm1.execute(order("o4", "RobotArm.Fly"), lambda f, v: None)
        await hub.close()

    run(body)


# --------------------------------------------------------------------------- failures and cancel


def test_job_failed_retryable_fatal_handler_bug_and_cancel():
    async def body(agents: Agents) -> None:
        drivers = await drivers_for(workcell("Arm1", "Arm2"))
        arm1, arm2 = drivers["Arm1"], drivers["Arm2"]
        await agents.start(arm1.hub.url, "Arm1", f"{MOVE},RobotArm.Park", "--handler", HANDLER)
        await agents.start(arm1.hub.url, "Arm2", f"{MOVE},RobotArm.Park", "--handler",
                           "tests.helpers.agent_handlers:handle_blocking")
        await asyncio.gather(arm1.connect(), arm2.connect())

        with pytest.raises(DriverError) as info:
            await arm1.execute(order("f1", mode="fail_retryable"), lambda f, v: None)
        assert (info.value.code, info.value.retryable) == ("GripperSlip", True)
        assert "gripper lost the plate" in info.value.message
        with pytest.raises(DriverError) as info:
            await arm1.execute(order("f2", mode="fail_fatal"), lambda f, v: None)
        assert (info.value.code, info.value.retryable) == ("PlateCrushed", False)
        with pytest.raises(DriverError) as info:
            await arm1.execute(order("f3", mode="bug"), lambda f, v: None)
        assert info.value.code == "AgentHandlerError" and "ZeroDivisionError" in info.value.message

        # cancel: the built-in simulation (async) and a blocking handler in a thread
        for driver, oid, inputs in ((arm1, "c1", {"duration": 30}), (arm2, "c2", {})):
            progressed = asyncio.Event()
            task = asyncio.create_task(driver.execute(order(oid, **inputs), lambda f, v, e=progressed: e.set()))
            await asyncio.wait_for(progressed.wait(), 20)
            assert driver.running == [oid] and driver.state is DriverState.BUSY
            assert await driver.cancel(oid) is True
            with pytest.raises(OrderCancelled):
                await asyncio.wait_for(task, 10)
            assert driver.running == []
        assert await arm1.cancel("not-running") is False
        # the agent still works after all that
        assert (await arm1.execute(order("ok", plate="P"), lambda f, v: None))["plate"] == "P"
        await arm1.hub.close()

    run(body)


# --------------------------------------------------------------------------- losing the agent


def test_agent_killed_mid_step_then_reconnects_with_the_same_name():
    async def body(agents: Agents) -> None:
        drivers = await drivers_for(workcell("Arm1", grace="0.5s"))
        arm = drivers["Arm1"]
        proc = await agents.start(arm.hub.url, "Arm1")
        await arm.connect()
        progressed = asyncio.Event()
        task = asyncio.create_task(arm.execute(order("k1", duration=30), lambda f, v: progressed.set()))
        await asyncio.wait_for(progressed.wait(), 20)
        proc.send_signal(signal.SIGKILL)
        with pytest.raises(InstrumentUnavailable, match="may or may not have run"):
            await asyncio.wait_for(task, 10)
        assert arm.state is DriverState.DISCONNECTED
        with pytest.raises(InstrumentUnavailable, match="agent not connected"):
            await arm.heartbeat()

        # a job in flight when an agent restarts (reconnects without it) fails at once
        await agents.start(arm.hub.url, "Arm1")
        await until(lambda: arm.agent_address is not None)
        arm.reconnect_grace = 30.0
        progressed.clear()
        task = asyncio.create_task(arm.execute(order("k2", duration=30), lambda f, v: progressed.set()))
        await asyncio.wait_for(progressed.wait(), 20)
        agents.procs[-1].send_signal(signal.SIGKILL)
        await until(lambda: arm.agent_address is None)
        started = time.monotonic()
        await agents.start(arm.hub.url, "Arm1")
        with pytest.raises(InstrumentUnavailable, match="reconnected without order k2"):
            await asyncio.wait_for(task, 20)
        assert time.monotonic() - started < 25  # did not wait for the 30 s grace
        out = await arm.execute(order("k3", plate="P9"), lambda f, v: None)
        assert out["plate"] == "P9"
        await arm.hub.close()

    run(body)


def test_link_drop_while_the_job_runs_on_and_ends_during_the_outage():
    """The agent keeps running its job across a network outage and delivers the result after
    it registers again (SIGSTOP freezes it until the hub gives the connection up)."""
    async def body(agents: Agents) -> None:
        drivers = await drivers_for(workcell("Arm1", beat="0.2s", grace="20s"))
        arm = drivers["Arm1"]
        proc = await agents.start(arm.hub.url, "Arm1")
        await arm.connect()

        # 1) the link drops, the job is still running when the agent comes back: it continues
        progressed = asyncio.Event()
        task = asyncio.create_task(arm.execute(order("r1", duration=1.5, plate="R1"),
                                               lambda f, v: progressed.set()))
        await asyncio.wait_for(progressed.wait(), 20)
        await arm.link.ws.close(1011, "network glitch")  # type: ignore[union-attr]
        out = await asyncio.wait_for(task, 20)
        assert out["plate"] == "R1"

        # 2) the agent is cut off and its job ends meanwhile: the result arrives on reconnect
        progressed.clear()
        task = asyncio.create_task(arm.execute(order("r2", duration=1.0, plate="R2"),
                                               lambda f, v: progressed.set()))
        await asyncio.wait_for(progressed.wait(), 20)
        proc.send_signal(signal.SIGSTOP)
        try:
            await until(lambda: arm.agent_address is None)  # hub: no heartbeat for 3 intervals
            assert not task.done()
            await asyncio.sleep(1.2)  # past the job's end on the agent's clock
        finally:
            proc.send_signal(signal.SIGCONT)
        out = await asyncio.wait_for(task, 20)
        assert out["plate"] == "R2"
        await until(lambda: arm.agent_address is not None)
        await arm.hub.close()

    run(body)


# --------------------------------------------------------------------------- refusals


def test_token_required_wrong_or_missing_token_refused(monkeypatch):
    monkeypatch.setenv("ARM_TOKEN", "s3cret-token")

    async def body(agents: Agents) -> None:
        drivers = await drivers_for(workcell("Arm1", token_env="ARM_TOKEN"))
        arm = drivers["Arm1"]
        wrong = await agents.start(arm.hub.url, "Arm1", f"{MOVE},RobotArm.Park", "--token-env", "MY_T",
                                   env={"MY_T": "guess"})
        missing = await agents.start(arm.hub.url, "Arm1")
        for proc, word in ((wrong, "wrong"), (missing, "missing")):
            _, err = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 2
            assert f"refused agent 'Arm1': agent 'Arm1': the token is {word}" in err.decode()
        assert arm.agent_address is None
        await agents.start(arm.hub.url, "Arm1", f"{MOVE},RobotArm.Park", "--token-env", "MY_T",
                           env={"MY_T": "s3cret-token"})
        await arm.connect()
        assert (await arm.execute(order("t1", plate="T"), lambda f, v: None))["plate"] == "T"
        await arm.hub.close()

    run(body)


def test_unknown_name_missing_capabilities_and_old_protocol_version_refused():
    async def body(agents: Agents) -> None:
        drivers = await drivers_for(workcell("Arm1"))
        hub = drivers["Arm1"].hub
        with pytest.raises(AgentRefused, match=r"no agent instrument named 'Arm9' .*\(agent instruments here: Arm1\)"):
            await AgentClient(hub.url, "Arm9", [MOVE], reconnect=False).run()
        with pytest.raises(AgentRefused, match="does not offer RobotArm.Park, which the workcell declares"):
            await AgentClient(hub.url, "Arm1", [MOVE], reconnect=False).run()

        async with connect(hub.url) as ws:
            old = json.loads(encode("register", {"name": "Arm1", "capabilities": [MOVE]})[0])
            old["v"] = 0
            await ws.send(json.dumps(old))
            answer = json.loads(await ws.recv())
            assert answer["type"] == "error" and answer["payload"]["code"] == "unsupported_version"
            assert "version 1" in answer["payload"]["message"] and "version 0" in answer["payload"]["message"]
            assert answer["reply_to"] == old["id"]
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1002
        assert drivers["Arm1"].agent_address is None
        # the instrument the refused agent claimed keeps the cause, and a connect says it at once
        arm = drivers["Arm1"]
        detail = (await arm.status()).detail
        assert detail.startswith("agent at 127.0.0.1:") and "protocol version 1 is spoken here" in detail
        assert "the frame has version 0" in detail
        connecting = asyncio.create_task(arm.connect())
        await until(lambda: arm.state is DriverState.CONNECTING)
        async with connect(hub.url) as ws:  # refused while the console waits for Arm1
            await ws.send(json.dumps(old))
            await ws.recv()
        with pytest.raises(InstrumentUnavailable) as exc:
            await asyncio.wait_for(connecting, 5)  # well within its 10 s connect_timeout
        assert str(exc.value).startswith("Arm1: agent at 127.0.0.1:") and "version 0" in str(exc.value)
        # a good agent under the same name clears it
        await agents.start(hub.url, "Arm1")
        await until(lambda: arm.agent_address is not None)
        await arm.connect()
        assert (await arm.status()).detail.startswith("agent at 127.0.0.1:")
        assert "version" not in (await arm.status()).detail
        await hub.close()

    run(body)


def test_malformed_frames_get_error_frames_never_a_crash(caplog):
    async def body(agents: Agents) -> None:
        drivers = await drivers_for(workcell("Arm1"))
        arm = drivers["Arm1"]
        hub = arm.hub
        # before registering: anything but a good register is refused
        async with connect(hub.url) as ws:
            await ws.send("{nope")
            answer = json.loads(await ws.recv())
            assert answer["payload"]["code"] == "bad_json"
            with pytest.raises(ConnectionClosed):
                await ws.recv()

        # a registered agent (a raw client here) sending garbage: one error frame each
        async with connect(hub.url, max_size=None) as ws:
            await ws.send(encode("register", {"name": "Arm1", "capabilities": [MOVE, "RobotArm.Park"]})[0])
            assert json.loads(await ws.recv())["type"] == "robot_registered"
            bad = {
                "bad_json": "{\"v\": 1, ",
                "bad_message": json.dumps({"v": 1, "type": "job_progress", "id": "m1",
                                           "payload": {"job_id": 7, "progress": "half"}}),
                "unknown_type": json.dumps({"v": 1, "type": "teleport", "id": "m2", "payload": {}}),
                "surrogate": '{"v": 1, "type": "heartbeat", "id": "m3", "payload": {"running": ["\\ud800"]}}',
                "deep": '{"v": 1, "type": "heartbeat", "id": "m4", "payload": {"x": '
                        + "[" * 5000 + "]" * 5000 + "}}",
                "not_object": "[1, 2, 3]",
                "binary": b"\xff\xfe\x00",
                "version": json.dumps({"v": 2, "type": "heartbeat", "id": "m5", "payload": {}}),
            }
            codes = {}
            for key, frame in bad.items():
                await ws.send(frame)
                answer = json.loads(await ws.recv())
                assert answer["type"] == "error"
                codes[key] = answer["payload"]["code"]
            assert codes == {"bad_json": "bad_json", "bad_message": "bad_message",
                             "unknown_type": "unknown_type", "surrogate": "bad_message",
                             "deep": "bad_message", "not_object": "bad_message",
                             "binary": "bad_json", "version": "unsupported_version"}
            for _ in range(40):
                await ws.send("garbage")
                await ws.recv()
            # still registered: its heartbeat is answered
            assert arm.agent_address is not None
            await ws.send(encode("heartbeat", {"running": []}, msg_id="beat-1")[0])
            answer = json.loads(await ws.recv())
            assert (answer["type"], answer["reply_to"]) == ("heartbeat", "beat-1")
            # a frame over the limit closes the connection (1009), the hub lives on
            await ws.send("x" * (MAX_FRAME_BYTES + 10))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await until(lambda: arm.agent_address is None)
        logged = [r for r in caplog.records if r.name == "core.drivers.agent" and "garbage" not in r.message
                  and ("bad_json" in r.message or "bad_message" in r.message)]
        assert len(logged) <= 6  # rate-limited: not one line per bad frame
        # a real agent registers and works afterwards
        await agents.start(hub.url, "Arm1")
        await until(lambda: arm.agent_address is not None)
        await arm.connect()
        assert (await arm.execute(order("m9", plate="M"), lambda f, v: None))["plate"] == "M"
        await hub.close()

    caplog.set_level(logging.INFO, logger="core.drivers.agent")
    run(body)


def test_bad_agent_command_lines_are_clear(monkeypatch, capsys):
    from console.cli import main

    assert main(["agent", "--console", "http://x:1", "--name", "A", "--capabilities", MOVE]) == 2
    assert "expected ws://HOST:PORT" in capsys.readouterr().err
    monkeypatch.delenv("NO_SUCH_TOKEN_VAR", raising=False)
    assert main(["agent", "--console", "ws://127.0.0.1:9", "--name", "A", "--capabilities", MOVE,
                 "--token-env", "NO_SUCH_TOKEN_VAR"]) == 2
    assert "NO_SUCH_TOKEN_VAR: the environment variable is not set" in capsys.readouterr().err
    assert main(["agent", "--console", "ws://127.0.0.1:9", "--name", "A", "--capabilities", MOVE,
                 "--handler", "tests.helpers.agent_handlers:nothing"]) == 2
    assert "has no 'nothing'" in capsys.readouterr().err


def test_workcell_agent_options_are_checked(monkeypatch):
    from core.errors import WorkcellError

    def problems(options: str) -> list[str]:
        text = (f"instruments:\n  - id: Arm1\n    kind: RobotArm\n    driver: agent\n"
                f"    options: {options}\n    capabilities: {{{MOVE}: 1}}\n")
        try:
            build_drivers(parse_workcell(text, "cell.yaml"), SystemClock())
        except WorkcellError as exc:
            return [str(p) for p in exc.problems]
        return []

    assert problems("{url: 'ws://10.1.2.3:8765'}") == [
        "cell.yaml:5: instruments[0].options: an agent hub on '10.1.2.3' is reachable from other "
        "machines: set token_env (or use ws://127.0.0.1:PORT)"]
    assert "serves ws:// only" in problems("{url: 'wss://127.0.0.1:8765'}")[0]
    assert "must be ws://HOST:PORT" in problems("{url: 'ws://127.0.0.1'}")[0]
    monkeypatch.delenv("ARM_TOKEN_UNSET", raising=False)
    assert problems("{url: 'ws://0.0.0.0:8765', token_env: ARM_TOKEN_UNSET}") == [
        "cell.yaml:5: instruments[0].options.token_env: instrument 'Arm1': environment variable "
        "ARM_TOKEN_UNSET (the agent's token) is not set"]
    assert problems("{url: 'ws://127.0.0.1:8765'}") == []


def test_hub_port_in_use_is_a_clear_instrument_error():
    async def body(agents: Agents) -> None:
        first = AgentHub("ws://127.0.0.1:0")
        await first.start()
        second = AgentHub(first.url)
        with pytest.raises(InstrumentUnavailable, match=f"cannot listen on {first.url}"):
            await second.start()
        await first.close()

    run(body)


# --------------------------------------------------------------------------- through the engine


@pytest.mark.parametrize("idempotent", [False, True])
def test_engine_marks_a_killed_agent_step_unknown_or_retries_an_idempotent_one(data_dir, idempotent):
    """The whole console (runtime, dispatcher, engine, store) with a real agent process: killed
    mid-step, the step's outcome is unknown (the run waits for the operator); an idempotent
    step is retried and completes on the agent started again under the same name."""
    from core.runtime import Runtime
    from core.templates import template_from_dict

    async def body(agents: Agents) -> None:
        cell = parse_workcell(workcell("Arm1", beat="0.3s", grace="0.3s"), "cell.yaml")
        rt = Runtime.build(data_dir, workcell=cell, metrics=False)
        hub = rt.agent_hubs[0]
        await hub.start()
        proc = await agents.start(hub.url, "Arm1")
        await rt.start(None)
        await rt.engine.publish(template_from_dict({"name": "Move", "definition": {"steps": [
            {"id": "move", "kind": MOVE, "idempotent": idempotent,
             "parameters": {"plate": "E2E", "duration": 30 if not idempotent else 2},
             "retry_policy": {"max_attempts": 3, "initial_interval": 0.1, "jitter": 0}}]}}))
        run_id = await rt.start_run("Move", {}, who="test")
        arm = rt.dispatcher.instruments["Arm1"].driver
        await until(lambda: arm.running != [])
        await asyncio.sleep(0.2)  # the agent has the job
        proc.send_signal(signal.SIGKILL)
        if idempotent:
            await agents.start(hub.url, "Arm1")
        status = await rt.engine.wait(run_id, timeout=30)
        step = rt.engine.get_instance(run_id)["steps"][0]
        if idempotent:
            assert status.value == "completed" and step["status"] == "completed"
            assert step["attempt"] == 2 and step["outputs"]["plate"] == "E2E"
        else:
            assert step["status"] == "unknown", step
            assert "may or may not have run" in step["error"]
        await rt.close()

    run(body)
