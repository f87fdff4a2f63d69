"""Simulated instruments on a virtual clock: durations, progress, outputs, concurrency, cancel."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from core.clock import VirtualClock
from core.drivers import (
    DriverError,
    DriverState,
    InstrumentUnavailable,
    OrderCancelled,
    UnsupportedCapability,
    no_progress,
)
from core.drivers.simulated import SimulatedDriver
from core.events import EventBus, InstrumentStatusChanged
from core.orders import ModuleStatus, Order
from core.workcell import InstrumentConfig

READER = {
    "id": "PlateReader1", "kind": "PlateReader", "driver": "simulated",
    "capabilities": {
        "PlateReader.ReadPlate": {"duration": "90s", "jitter": "10%", "progress_steps": 6},
        "PlateReader.Shake": "20s",
    },
}


def instrument(base: dict[str, Any] = READER, **changes: Any) -> InstrumentConfig:
    return InstrumentConfig.model_validate({**base, **changes})


def order(order_id: str, kind: str = "PlateReader.ReadPlate", **inputs: Any) -> Order:
    return Order(identifier=order_id, templateName=kind,
                 inputParameters=[{"name": k, "value": v} for k, v in inputs.items()])


def arun(scenario):
    """Run an async scenario to completion (a fresh loop per test)."""
    return asyncio.run(scenario())


async def connected(config: InstrumentConfig | None = None, **kwargs: Any
                    ) -> tuple[VirtualClock, SimulatedDriver]:
    clock = VirtualClock()
    driver = SimulatedDriver(config or instrument(), clock, **kwargs)
    await driver.connect()
    return clock, driver


async def run_one(clock: VirtualClock, driver: SimulatedDriver, o: Order,
                  progress=no_progress) -> tuple[float, asyncio.Task]:
    """Execute ``o`` to its end in virtual time; (virtual seconds it took, finished task)."""
    task = asyncio.ensure_future(driver.execute(o, progress))
    start = clock.now()
    await clock.run_until(task.done)
    return clock.now() - start, task


def test_execute_needs_a_connection():
    async def scenario():
        driver = SimulatedDriver(instrument(), VirtualClock())
        assert (await driver.status()).state is DriverState.DISCONNECTED
        with pytest.raises(InstrumentUnavailable, match="PlateReader1: not connected"):
            await driver.execute(order("O1"), no_progress)
    arun(scenario)


def test_duration_jitter_progress_and_outputs():
    async def scenario():
        clock, driver = await connected(seed=3)
        reports: list[tuple[float | None, Any]] = []
        took, task = await run_one(clock, driver, order("O1", plate="P-7", wavelength=450),
                                   lambda f, v: reports.append((f, v)))
        assert 81.0 <= took <= 99.0  # 90 s +- 10 %
        assert [f for f, _ in reports] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
        assert reports[-1][1]["Remaining"] == 0 and reports[-1][1]["Elapsed"] == pytest.approx(took, abs=1e-3)
        out = task.result()
        assert out["Success"] is True and out["plate"] == "P-7" and out["wavelength"] == 450
        assert len(out["well_values"]) == 96 and all(0.04 <= v <= 3.2 for v in out["well_values"])
        assert out["absorbance"] == pytest.approx(sum(out["well_values"]) / 96, abs=1e-4)
        assert (await driver.status()).state is DriverState.IDLE
    arun(scenario)


def test_same_seed_same_runs_other_seed_other_runs():
    async def session(seed: int) -> list[tuple[float, dict]]:
        clock, driver = await connected(seed=seed)
        results = []
        for i in range(5):
            took, task = await run_one(clock, driver, order(f"O{i}"))
            results.append((took, task.result()))
        return results

    async def scenario():
        first, again, other = await session(11), await session(11), await session(12)
        assert first == again
        assert [t for t, _ in first] != [t for t, _ in other]
        assert len({t for t, _ in first}) == 5  # jitter really varies run to run
    arun(scenario)


def test_outputs_from_inputs_and_declared_outputs():
    handler = {"id": "LH1", "kind": "LiquidHandler", "driver": "simulated", "capabilities": {
        "LiquidHandler.Transfer": {"duration": 0},
        "LiquidHandler.Mix": {"duration": 0, "outputs": {
            "cycles": {"type": "integer", "from_input": "Cycles"},
            "operator": "sim",
            "mode": {"type": "string", "choices": ["fast"]},
            "missing_echo": {"type": "string", "from_input": "nope"},
        }},
    }}

    async def scenario():
        clock, driver = await connected(instrument(handler))
        _, task = await run_one(clock, driver, order("T1", "LiquidHandler.Transfer", volume_ul=150))
        assert task.result()["volume_ul"] == pytest.approx(150, rel=0.011)
        _, task = await run_one(clock, driver, order("M1", "LiquidHandler.Mix", cycles="5"))
        assert task.result() == {"cycles": 5, "operator": "sim", "mode": "fast", "Success": True}
    arun(scenario)


def test_duration_input_overrides_and_bad_value_is_an_error():
    incubator = {"id": "Inc1", "kind": "Incubator", "driver": "simulated", "capabilities": {
        "Incubator.Incubate": {"duration": "30m", "duration_input": "duration"}}}

    async def scenario():
        clock, driver = await connected(instrument(incubator))
        took, task = await run_one(clock, driver, order("I1", "Incubator.Incubate", duration="2h"))
        assert took == pytest.approx(7200) and task.result()["Success"]
        took, _ = await run_one(clock, driver, order("I2", "Incubator.Incubate"))
        assert took == pytest.approx(1800)
        with pytest.raises(DriverError) as info:
            await driver.execute(order("I3", "Incubator.Incubate", duration="soon"), no_progress)
        assert info.value.code == "InvalidParameter" and "I3" in str(info.value)
    arun(scenario)


def test_zero_duration_does_not_touch_the_clock():
    async def scenario():
        clock, driver = await connected(instrument(capabilities={"PlateReader.ReadPlate": 0}))
        start = clock.now()
        out = await driver.execute(order("Z1"), no_progress)  # no advance needed
        assert out["Success"] and clock.now() == start
    arun(scenario)


def test_unsupported_capability():
    async def scenario():
        _, driver = await connected()
        with pytest.raises(UnsupportedCapability, match="Centrifuge.Spin"):
            await driver.execute(order("O1", "Centrifuge.Spin"), no_progress)
    arun(scenario)


def test_max_concurrent_and_status():
    async def scenario():
        clock, driver = await connected(instrument(max_concurrent=2))
        a = asyncio.ensure_future(driver.execute(order("A"), no_progress))
        b = asyncio.ensure_future(driver.execute(order("B"), no_progress))
        await clock.advance(1)
        status = await driver.status()
        assert status.state is DriverState.BUSY and status.running == ["A", "B"]
        with pytest.raises(DriverError) as info:
            await driver.execute(order("C"), no_progress)
        assert info.value.code == "InstrumentBusy" and info.value.retryable
        with pytest.raises(DriverError, match="already running"):
            await driver.execute(order("A"), no_progress)
        await clock.run_until(lambda: a.done() and b.done())
        assert a.result()["Success"] and b.result()["Success"]
        assert (await driver.status()).state is DriverState.IDLE
    arun(scenario)


def test_cancel_mid_order_raises_order_cancelled_promptly():
    async def scenario():
        clock, driver = await connected()
        reports: list[float | None] = []
        task = asyncio.ensure_future(driver.execute(order("O1"), lambda f, v: reports.append(f)))
        await clock.advance(40)
        assert 0 < len(reports) < 6
        assert await driver.cancel("O1") is True
        await clock.settle()  # no virtual time passes
        assert task.done()
        with pytest.raises(OrderCancelled) as info:
            task.result()
        assert "O1" in str(info.value) and info.value.retryable is False
        assert task.cancelling() == 0  # the caller's task is not left half-cancelled
        assert await driver.cancel("O1") is False  # nothing running any more
        assert await driver.cancel("never-ran") is False
        status = await driver.status()
        assert status.state is DriverState.IDLE and status.running == []
    arun(scenario)


def test_caller_can_keep_working_after_a_cancelled_order():
    async def scenario():
        clock, driver = await connected()

        async def engine_step() -> str:
            try:
                await driver.execute(order("O1"), no_progress)
            except OrderCancelled:
                await clock.sleep(5)  # e.g. back off before the next attempt
                return "went on"
            return "finished"

        task = asyncio.ensure_future(engine_step())
        await clock.advance(10)
        await driver.cancel("O1")
        await clock.advance(5)
        assert task.result() == "went on"
    arun(scenario)


def test_cancelling_the_callers_task_is_not_turned_into_order_cancelled():
    async def scenario():
        clock, driver = await connected()
        task = asyncio.ensure_future(driver.execute(order("O1"), no_progress))
        await clock.advance(10)
        task.cancel()
        await clock.settle()
        assert task.cancelled()
        assert (await driver.status()).running == []
    arun(scenario)


def test_cancel_then_caller_cancels_its_task_too():
    """The engine's way: driver.cancel() first, then cancel its own task. It sees CancelledError."""
    async def scenario():
        clock, driver = await connected()
        task = asyncio.ensure_future(driver.execute(order("O1"), no_progress))
        await clock.advance(10)
        assert await driver.cancel("O1")
        task.cancel()
        await clock.settle()
        assert task.cancelled()
        assert (await driver.status()).running == []
    arun(scenario)


def test_heartbeat_and_last_heartbeat():
    async def scenario():
        clock, driver = await connected(instrument(options={"heartbeat_latency": "20ms"}))
        beat = asyncio.ensure_future(driver.heartbeat())
        await clock.advance(0.02)
        assert beat.result() == pytest.approx(0.02)
        status = await driver.status()
        assert status.last_heartbeat is not None
        assert status.last_heartbeat.timestamp() == pytest.approx(clock.now())
        await driver.disconnect()
        with pytest.raises(InstrumentUnavailable):
            await driver.heartbeat()
    arun(scenario)


def test_connect_time_and_status_events():
    async def scenario():
        bus = EventBus()
        seen: list[InstrumentStatusChanged] = []
        bus.subscribe(seen.append, InstrumentStatusChanged)
        clock = VirtualClock()
        driver = SimulatedDriver(instrument(options={"connect_time": "3s"}), clock, bus=bus)
        connecting = asyncio.ensure_future(driver.connect())
        await clock.advance(1)
        assert (await driver.status()).state is DriverState.CONNECTING
        await clock.advance(2)
        assert connecting.done() and (await driver.status()).state is DriverState.IDLE
        await run_one(clock, driver, order("O1"))
        await driver.disconnect()
        assert [(e.status, e.current_orders) for e in seen] == [
            (ModuleStatus.Offline, ()), (ModuleStatus.Ready, ()), (ModuleStatus.Busy, ("O1",)),
            (ModuleStatus.Ready, ()), (ModuleStatus.Offline, ())]
        assert {e.instrument_id for e in seen} == {"PlateReader1"}
        assert seen[1].detail == "idle" and seen[-1].detail == "disconnected"
    arun(scenario)


def test_disconnect_ends_running_orders():
    async def scenario():
        clock, driver = await connected()
        task = asyncio.ensure_future(driver.execute(order("O1"), no_progress))
        await clock.advance(5)
        await driver.disconnect()
        await clock.settle()
        with pytest.raises(InstrumentUnavailable, match="O1"):
            task.result()
        await driver.connect()
        took, task = await run_one(clock, driver, order("O2"))
        assert task.result()["Success"]
    arun(scenario)
