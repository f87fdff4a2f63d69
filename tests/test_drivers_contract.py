"""One driver contract, every driver: the same checks against the simulated driver, real SiLA 2
servers, real agent processes, PyLabRobot's chatterbox backend and a real MADSci REST node.

Each check follows core/drivers/base.py: connect, execute with outputs, progress, cancel,
retryable vs fatal errors, heartbeat loss, the server or agent restarting mid-step, and
disconnect. A driver that cannot do an item is skipped with the limitation that stops it.
The last test runs one template whose steps use simulated, SiLA and agent instruments at once
through the whole console core (runtime, dispatcher, engine, store) to Complete.
"""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # before any protobuf

import asyncio  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("sila2")

from core.clock import SystemClock  # noqa: E402
from core.drivers import (  # noqa: E402
    Driver,
    DriverError,
    DriverState,
    InstrumentUnavailable,
    OrderCancelled,
    OutcomeUnknown,
)
from core.drivers.faults import Faults  # noqa: E402
from core.drivers.sila_sim import SimulatedSilaServer  # noqa: E402
from core.orders import ModuleStatus, Order  # noqa: E402
from core.workcell import build_drivers, load_workcell, parse_workcell  # noqa: E402
from tests.helpers.madsci_support import MadsciNode  # noqa: E402
from tests.test_drivers_agent import MOVE, Agents  # noqa: E402
from tests.test_drivers_agent import order as agent_order  # noqa: E402
from tests.test_drivers_agent import workcell as agent_workcell  # noqa: E402
from tests.test_drivers_madsci import cell_text as madsci_text  # noqa: E402
from tests.test_drivers_madsci import transfer as madsci_transfer  # noqa: E402
from tests.test_drivers_sila import free_port, read, workcell_text  # noqa: E402

KINDS = ["simulated", "sila", "agent", "pylabrobot", "madsci"]
HANDLER = "tests.helpers.agent_handlers:handle"

SIMULATED = """\
name: simulated cell
instruments:
  - id: Sim1
    kind: LiquidHandler
    driver: simulated
    capabilities:
      LiquidHandler.Transfer:
        duration: 0.3s
        duration_input: duration
        jitter: 0s
        progress_steps: 50
        outputs: {Volume: {from_input: volume}, Wells: 8}
"""

NO_RESTART = {
    "simulated": "the simulated driver runs in-process: there is no server to restart",
    "pylabrobot": "PyLabRobot drives its machine in-process (USB/serial backends): there is no "
                  "server or agent to restart",
}
NO_HEARTBEAT = {
    "pylabrobot": "PyLabRobot has no liveness query: a lost device shows at the next command",
}


def order(oid: str, kind: str, **inputs: Any) -> Order:
    return Order(identifier=oid, templateName=kind,
                 inputParameters=[{"name": k, "value": v} for k, v in inputs.items()])


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class Harness:
    """One kind of driver in one test: its instrument, orders and ways to break it."""

    kind = ""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.driver: Any = None

    async def start(self) -> Any:
        """The connected driver."""
        raise NotImplementedError

    def ok(self, oid: str) -> Order:
        raise NotImplementedError

    def check(self, out: dict[str, Any]) -> None:
        raise NotImplementedError

    async def long(self, oid: str) -> Order:
        """An order that runs until cancelled (or for many seconds)."""
        raise NotImplementedError

    async def failing(self, oid: str, retryable: bool) -> tuple[Order, str]:
        """An order that fails, and the error code it fails with."""
        raise NotImplementedError

    async def lose(self) -> None:
        """The instrument stops answering."""
        raise NotImplementedError

    async def back(self) -> None:
        """It answers again."""
        raise NotImplementedError

    async def restart(self) -> None:
        """The server or agent restarts (a new process or server identity)."""
        raise NotImplementedError

    async def close(self) -> None:
        if self.driver is not None:
            await self.driver.disconnect()


class SimulatedHarness(Harness):
    kind = "simulated"

    async def start(self) -> Any:
        self.driver = build_drivers(parse_workcell(SIMULATED, "sim.yaml"), SystemClock(), seed=1)["Sim1"]
        await self.driver.connect()
        return self.driver

    def ok(self, oid: str) -> Order:
        return order(oid, "Transfer", volume=25)

    def check(self, out: dict[str, Any]) -> None:
        assert out["Volume"] == 25 and out["Wells"] == 8

    async def long(self, oid: str) -> Order:
        return order(oid, "Transfer", volume=25, duration=30)

    async def failing(self, oid: str, retryable: bool) -> tuple[Order, str]:
        self.driver.inject(Faults(fail_next=1, retryable=retryable))
        return self.ok(oid), "SimulatedFailure"

    async def lose(self) -> None:
        self.driver.inject(heartbeat="missing")

    async def back(self) -> None:
        self.driver.inject(heartbeat="ok")


class SilaHarness(Harness):
    kind = "sila"

    async def start(self) -> Any:
        self.port = free_port()
        path = self.tmp_path / "sila.yaml"
        path.write_text(workcell_text(self.port))
        workcell = load_workcell(path)
        self.server = SimulatedSilaServer(workcell.instruments[0])
        await asyncio.to_thread(self.server.start)
        self.driver = build_drivers(workcell, SystemClock())["PlateReader1"]
        await self.driver.connect()
        return self.driver

    def ok(self, oid: str) -> Order:
        return read(oid)

    def check(self, out: dict[str, Any]) -> None:
        assert len(out["well_values"]) == 96 and 0 < out["absorbance"] < 3.1

    async def long(self, oid: str) -> Order:
        self.server.faults = Faults(hang=True)
        return read(oid)

    async def failing(self, oid: str, retryable: bool) -> tuple[Order, str]:
        if retryable:  # the simulated server's next run fails with LampNotReady
            self.server.faults = Faults(retryable=True)
            self.server._fail_next = 1
            return read(oid), "LampNotReady"
        return read(oid, plate=""), "PlateNotPresent"

    async def lose(self) -> None:
        await asyncio.to_thread(self.server.stop)

    async def back(self) -> None:
        await asyncio.to_thread(self.server.start)

    async def restart(self) -> None:
        await asyncio.to_thread(self.server.restart)
        self.server.faults = Faults()  # the orders after the restart run normally

    async def close(self) -> None:
        await super().close()
        await asyncio.to_thread(self.server.stop)


class AgentHarness(Harness):
    kind = "agent"

    async def start(self) -> Any:
        self.agents = Agents()
        drivers = build_drivers(parse_workcell(agent_workcell("Arm1", grace="0.5s"), "cell.yaml"),
                                SystemClock())
        self.driver = drivers["Arm1"]
        await self.driver.hub.start()
        self.proc = await self.agents.start(self.driver.hub.url, "Arm1",
                                            f"{MOVE},RobotArm.Park", "--handler", HANDLER)
        await self.driver.connect()
        return self.driver

    def ok(self, oid: str) -> Order:
        return agent_order(oid, plate="PLT-7", source="A", destination="B")

    def check(self, out: dict[str, Any]) -> None:
        assert out["plate"] == "PLT-7" and out["destination"] == "B" and out["Success"] is True

    async def long(self, oid: str) -> Order:
        return agent_order(oid, duration=30)

    async def failing(self, oid: str, retryable: bool) -> tuple[Order, str]:
        return (agent_order(oid, mode="fail_retryable" if retryable else "fail_fatal"),
                "GripperSlip" if retryable else "PlateCrushed")

    async def lose(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    async def back(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    async def restart(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.proc = await self.agents.start(self.driver.hub.url, "Arm1",
                                            f"{MOVE},RobotArm.Park", "--handler", HANDLER)

    async def close(self) -> None:
        for proc in self.agents.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
        await self.agents.close()
        await self.driver.hub.close()


class PlrHarness(Harness):
    kind = "pylabrobot"

    async def start(self) -> Any:
        from tests.test_drivers_plr import lh_text  # needs the [plr] extra

        path = self.tmp_path / "plr.yaml"
        path.write_text(lh_text(backend="tests.helpers.plr_backends:SlowChatterbox",
                                extra="      backend_options: {delay: 0.2}",
                                commands="        LiquidHandler.Dispense: {operation: dispense, "
                                         "errors: {NoTipError: true}}"))
        self.driver = build_drivers(load_workcell(path), SystemClock())["LH1"]
        await self.driver.connect()
        return self.driver

    def ok(self, oid: str) -> Order:
        return order(oid, "Transfer", **{"from": "source", "well": "A1", "to": "dest",
                                         "wells": "B1", "volume": 20})

    def check(self, out: dict[str, Any]) -> None:
        assert out["Targets"] == ["B1"] and out["Volume"] == 20.0 and out["SourceRemaining"] < 200

    async def long(self, oid: str) -> Order:
        return order(oid, "Transfer", **{"from": "source", "well": "A2", "to": "dest",
                                         "wells": "A3:H3", "volume": 5})

    async def failing(self, oid: str, retryable: bool) -> tuple[Order, str]:
        if retryable:  # nothing mounted to dispense with: mount tips (refill) and run again
            return order(oid, "Dispense", plate="dest", wells="A1", volume=5), "NoTipError"
        return (order(oid, "Transfer", **{"from": "dest", "well": "H12", "to": "source",
                                          "wells": "A1", "volume": 10}), "TooLittleLiquidError")


class MadsciHarness(Harness):
    kind = "madsci"
    node: MadsciNode | None = None  # one node process for the module (it takes seconds to start)

    async def start(self) -> Any:
        assert self.node is not None
        if self.node.proc is None:
            await asyncio.to_thread(self.node.start)
        path = self.tmp_path / "madsci.yaml"
        path.write_text(madsci_text(self.node.url))
        self.driver = build_drivers(load_workcell(path), SystemClock())["LH2"]
        await self.driver.connect()
        return self.driver

    def ok(self, oid: str) -> Order:
        return madsci_transfer(oid)

    def check(self, out: dict[str, Any]) -> None:
        assert out["source"] == "A1" and out["target"] == "B1" and out["TransferCount"] >= 1

    async def long(self, oid: str) -> Order:
        return madsci_transfer(oid, duration=30)

    async def failing(self, oid: str, retryable: bool) -> tuple[Order, str]:
        return (madsci_transfer(oid, source="clogged" if retryable else "empty"),
                "TipClogged" if retryable else "TooLittleLiquid")

    async def lose(self) -> None:
        assert self.node is not None and self.node.proc is not None
        self.node.proc.send_signal(signal.SIGSTOP)

    async def back(self) -> None:
        assert self.node is not None and self.node.proc is not None
        self.node.proc.send_signal(signal.SIGCONT)

    async def restart(self) -> None:
        assert self.node is not None
        await asyncio.to_thread(self.node.restart)

    async def close(self) -> None:
        await super().close()
        if self.node is not None and self.node.proc is not None:
            self.node.proc.send_signal(signal.SIGCONT)


HARNESSES: dict[str, type[Harness]] = {h.kind: h for h in (
    SimulatedHarness, SilaHarness, AgentHarness, PlrHarness, MadsciHarness)}


@pytest.fixture(scope="module")
def madsci_node() -> Iterator[MadsciNode]:
    node = MadsciNode()
    MadsciHarness.node = node
    yield node
    MadsciHarness.node = None
    node.close()


@pytest.fixture(params=KINDS)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    if request.param == "madsci":
        request.getfixturevalue("madsci_node")
    elif request.param == "pylabrobot":
        pytest.importorskip("pylabrobot", reason="PyLabRobot is the optional [plr] extra")
    return HARNESSES[request.param](tmp_path)


def run(h: Harness, body: Callable[[Any], Any]) -> None:
    async def main() -> None:
        try:
            driver = await asyncio.wait_for(h.start(), 60)
            assert isinstance(driver, Driver)
            await asyncio.wait_for(body(driver), 60)
        finally:
            await h.close()

    asyncio.run(main())


async def started(driver: Any, o: Order) -> asyncio.Task[Any]:
    """``o`` running, once it reported progress."""
    progressed = asyncio.Event()
    task = asyncio.create_task(driver.execute(o, lambda f, v: progressed.set()))
    done, _ = await asyncio.wait([task, asyncio.create_task(progressed.wait())], timeout=20,
                                 return_when=asyncio.FIRST_COMPLETED)
    assert progressed.is_set() and not task.done(), f"{o.identifier} did not start: {done}"
    return task


async def alive_again(driver: Any, timeout: float = 30.0) -> None:
    """Heartbeat until it answers, reconnecting as the dispatcher would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await driver.heartbeat()
            return
        except InstrumentUnavailable:
            assert time.monotonic() < deadline, "the instrument did not come back"
            if driver.state is DriverState.DISCONNECTED:
                try:
                    await driver.connect()
                except DriverError:
                    pass
            await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- the contract


def test_connect_execute_with_outputs(harness):
    async def body(driver: Any) -> None:
        status = await driver.status()
        assert status.state is DriverState.IDLE and status.module_status is ModuleStatus.Ready
        assert driver.info.capabilities
        assert await driver.heartbeat() >= 0
        await driver.connect()  # idempotent when connected
        harness.check(await driver.execute(harness.ok("c1"), lambda f, v: None))
        assert (await driver.status()).state is DriverState.IDLE

    run(harness, body)


IDENTITY = {
    "simulated": ("Simulation", "Seed"),
    "sila": ("Server name", "Server type", "Server UUID", "Server version", "Features", "Cancel"),
    "agent": ("Agent", "Agent address", "Host", "Process id", "Agent version", "Protocol"),
    "pylabrobot": ("Machine", "Backend", "Channels", "Deck"),
    "madsci": ("Node name", "Node id", "Module", "Actions", "Admin commands"),
}
"""What each kind of instrument reports about itself on connect (the Robots panel shows it)."""


def test_connect_reports_driver_endpoint_and_identity(harness):
    async def body(driver: Any) -> None:
        info = driver.info
        assert info.driver == harness.kind and info.endpoint
        facts = dict(info.identity)
        assert [label for label in IDENTITY[harness.kind] if not facts.get(label)] == [], facts
        assert info.capabilities and info.name  # the workcell's part is kept
        if harness.kind == "sila":
            assert facts["Server UUID"] == driver.server_uuid == harness.server.server_uuid
            assert info.endpoint == f"127.0.0.1:{harness.port} (plain text, this machine only)"
        elif harness.kind == "agent":
            assert facts["Process id"] == str(harness.proc.pid)
            assert info.endpoint.startswith(driver.hub.url)
            assert facts["Agent address"] == driver.agent_address
        elif harness.kind == "madsci":
            assert facts["Node id"] == driver.node_id and info.endpoint.startswith(harness.node.url)
        elif harness.kind == "pylabrobot":
            assert facts["Backend"].endswith("SlowChatterbox")

    run(harness, body)


def test_progress(harness):
    async def body(driver: Any) -> None:
        seen: list[tuple[Any, Any]] = []
        task = asyncio.create_task(driver.execute(harness.ok("p1"),
                                                  lambda f, v: seen.append((f, v))))
        await until(lambda: bool(seen) or task.done())
        if not task.done():
            assert (await driver.status()).state is DriverState.BUSY
            assert "p1" in (await driver.status()).running
        harness.check(await task)
        fractions = [f for f, _ in seen if f is not None]
        assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
        assert all(0 <= f <= 1 for f in fractions)

    run(harness, body)


def test_cancel(harness):
    async def body(driver: Any) -> None:
        task = await started(driver, await harness.long("x1"))
        assert await driver.cancel("x1") is True
        with pytest.raises(OrderCancelled):
            await asyncio.wait_for(task, 20)
        assert await driver.cancel("x1") is False  # no longer running
        assert await driver.cancel("never-ran") is False
        if harness.kind == "sila":
            harness.server.faults = Faults()
        harness.check(await driver.execute(harness.ok("x2"), lambda f, v: None))

    run(harness, body)


def test_retryable_and_fatal_errors(harness):
    async def body(driver: Any) -> None:
        for retryable in (True, False):
            o, code = await harness.failing(f"e{retryable}", retryable)
            with pytest.raises(DriverError) as exc:
                await driver.execute(o, lambda f, v: None)
            assert not isinstance(exc.value, InstrumentUnavailable | OutcomeUnknown)
            assert (exc.value.code, exc.value.retryable) == (code, retryable), exc.value
            assert driver.instrument_id in exc.value.message
        harness.check(await driver.execute(harness.ok("e-after"), lambda f, v: None))

    run(harness, body)


def test_heartbeat_loss(harness):
    if harness.kind in NO_HEARTBEAT:
        pytest.skip(NO_HEARTBEAT[harness.kind])

    async def body(driver: Any) -> None:
        await driver.heartbeat()
        await harness.lose()
        started_at = time.monotonic()
        with pytest.raises(InstrumentUnavailable):
            await driver.heartbeat()
        assert time.monotonic() - started_at < 10  # within the round-trip deadline
        if harness.kind in ("sila", "madsci"):
            assert (await driver.status()).module_status is ModuleStatus.Offline
        await harness.back()
        await alive_again(driver)
        harness.check(await driver.execute(harness.ok("h1"), lambda f, v: None))

    run(harness, body)


def test_restart_mid_step_is_outcome_unknown(harness):
    if harness.kind in NO_RESTART:
        pytest.skip(NO_RESTART[harness.kind])

    async def body(driver: Any) -> None:
        task = await started(driver, await harness.long("r1"))
        await harness.restart()
        with pytest.raises((OutcomeUnknown, InstrumentUnavailable)) as exc:
            await asyncio.wait_for(task, 30)
        # OutcomeUnknown, or InstrumentUnavailable that the dispatcher turns into "outcome
        # unknown" unless the step is idempotent (the agent driver's way)
        assert ("may or may not have run" in exc.value.message
                or "outcome unknown" in exc.value.message), exc.value
        assert not exc.value.retryable or isinstance(exc.value, InstrumentUnavailable)
        await alive_again(driver)
        harness.check(await driver.execute(harness.ok("r2"), lambda f, v: None))

    run(harness, body)


def test_disconnect(harness):
    async def body(driver: Any) -> None:
        await driver.disconnect()
        status = await driver.status()
        assert status.state is DriverState.DISCONNECTED
        assert status.module_status is ModuleStatus.Offline
        with pytest.raises(InstrumentUnavailable):
            await driver.heartbeat()
        if harness.kind == "agent":
            # the agent dials in again by itself; an order due meanwhile waits for it (up to
            # connect_timeout) instead of failing at once
            harness.check(await driver.execute(harness.ok("d1"), lambda f, v: None))
        else:
            with pytest.raises(InstrumentUnavailable):
                await driver.execute(harness.ok("d1"), lambda f, v: None)
        await driver.disconnect()  # never raises for an instrument already gone
        await driver.connect()
        harness.check(await driver.execute(harness.ok("d2"), lambda f, v: None))

    run(harness, body)


# --------------------------------------------------------------------------- one engine run


def test_one_template_over_simulated_sila_and_agent_instruments_completes(tmp_path, data_dir):
    """Runtime, dispatcher, engine and store drive a simulated robot arm, a SiLA 2 plate reader
    (real gRPC server) and a remote agent (real process) in one run, to Complete."""
    from core.runtime import Runtime
    from core.templates import template_from_dict

    sila_port = free_port()
    reader = workcell_text(sila_port).split("instruments:\n", 1)[1]
    arm = agent_workcell("Agent1").split("instruments:\n", 1)[1]
    text = ("name: mixed cell\nheartbeat_interval: 1s\nstale_timeout: 30s\ninstruments:\n"
            + reader + arm + SIMULATED.split("instruments:\n", 1)[1])
    path = tmp_path / "mixed.yaml"
    path.write_text(text)
    cell = load_workcell(path)
    assert {i.driver for i in cell.instruments} == {"simulated", "sila", "agent"}
    server = SimulatedSilaServer(cell.instrument("PlateReader1"))
    server.start()

    async def main() -> None:
        agents = Agents()
        rt = Runtime.build(data_dir, workcell=cell, metrics=False)
        try:
            hub = rt.agent_hubs[0]
            await hub.start()
            await agents.start(hub.url, "Agent1", f"{MOVE},RobotArm.Park")
            await rt.start(None)
            await rt.engine.publish(template_from_dict({"name": "Mixed", "definition": {"steps": [
                {"id": "move", "kind": MOVE, "parameters": {"plate": "MIX-1", "duration": 0.2}},
                {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["move"],
                 "parameters": {"plate": "MIX-1", "wavelength": 450}},
                {"id": "transfer", "kind": "LiquidHandler.Transfer", "depends_on": ["read"],
                 "parameters": {"volume": 12}}]}}))
            run_id = await rt.start_run("Mixed", {}, who="test")
            status = await rt.engine.wait(run_id, timeout=60)
            steps = {s["id"]: s for s in rt.engine.get_instance(run_id)["steps"]}
            assert status.value == "completed", steps
            assert steps["move"]["outputs"]["plate"] == "MIX-1"
            assert len(steps["read"]["outputs"]["well_values"]) == 96
            assert steps["transfer"]["outputs"]["Volume"] == 12
        finally:
            await rt.close()
            await agents.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 90))
    finally:
        server.stop()


def test_every_driver_kind_is_in_the_contract():
    from core.instruments import DRIVER_KINDS

    assert set(DRIVER_KINDS) == set(KINDS) == set(HARNESSES)


def test_sila_instruments_connect_concurrently(tmp_path):
    """The dispatcher connects every instrument at once: eight SiLA drivers connecting together
    all connect (sila2's client creation is not thread-safe)."""
    ports = [free_port() for _ in range(8)]
    text = "name: many readers\ninstruments:\n" + "".join(
        workcell_text(p).split("instruments:\n", 1)[1].replace("PlateReader1", f"Reader{i}")
        for i, p in enumerate(ports))
    path = tmp_path / "many.yaml"
    path.write_text(text)
    cell = load_workcell(path)
    servers = [SimulatedSilaServer(i) for i in cell.instruments]
    for s in servers:
        s.start()

    async def main() -> None:
        drivers = build_drivers(cell, SystemClock())
        results = await asyncio.gather(*(d.connect() for d in drivers.values()),
                                       return_exceptions=True)
        await asyncio.gather(*(d.disconnect() for d in drivers.values()))
        assert results == [None] * 8, results

    try:
        asyncio.run(main())
    finally:
        for s in servers:
            s.stop()


def test_without_pylabrobot_only_its_harness_is_skipped():
    """Without the [plr] extra the other drivers' contract still runs: only the PyLabRobot
    harness skips, saying why."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    code = ("import sys; sys.modules['pylabrobot'] = None; import pytest; "
            "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', "
            "'tests/test_drivers_contract.py', '-k', 'test_connect_execute_with_outputs and "
            "(simulated or pylabrobot)']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout, proc.stdout
    assert "PyLabRobot is the optional [plr] extra" in proc.stdout, proc.stdout
