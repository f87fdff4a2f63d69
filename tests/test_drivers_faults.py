"""Fault injection: the compact spec, and each fault kind on a simulated instrument."""

from __future__ import annotations

import asyncio

import pytest
from test_drivers_simulated import arun, connected, instrument, order, run_one

from core.clock import VirtualClock
from core.drivers import (
    DriverError,
    DriverState,
    InstrumentUnavailable,
    OrderCancelled,
    OutcomeUnknown,
    no_progress,
)
from core.drivers.faults import Faults, FaultSpec, FaultSpecError
from core.drivers.simulated import SimulatedDriver
from core.errors import ConfigError

# --------------------------------------------------------------------------- the spec


def test_parse_the_cli_example():
    spec = FaultSpec.parse("rate=0.05,fail_next=2,hang=PlateReader1,disconnect_after=10")
    assert spec.for_instrument("Sealer1") == Faults(rate=0.05, fail_next=2, disconnect_after=10)
    assert spec.for_instrument("PlateReader1") == Faults(rate=0.05, fail_next=2,
                                                         disconnect_after=10, hang=True)
    assert spec.instruments == {"PlateReader1"}
    assert str(spec) == "rate=0.05,fail_next=2,hang=PlateReader1,disconnect_after=10"


def test_scoped_items_percentages_and_heartbeat():
    spec = FaultSpec.parse("rate=10%, rate@Sealer1=0.5, heartbeat@Centrifuge1=slow, "
                           "heartbeat_delay=40s, hang=A+B, retryable=false, seed=7, disconnect=C")
    assert spec.seed == 7
    assert spec.for_instrument("X") == Faults(rate=0.1, heartbeat_delay=40.0, retryable=False)
    assert spec.for_instrument("Sealer1").rate == 0.5
    assert spec.for_instrument("Centrifuge1").heartbeat == "slow"
    assert spec.for_instrument("A").hang and spec.for_instrument("B").hang
    assert spec.for_instrument("C").disconnect_after == 0
    assert spec.instruments == {"Sealer1", "Centrifuge1", "A", "B", "C"}
    assert not Faults().active and Faults(rate=0.1).active


def test_scoped_settings_layer_over_a_base():
    base = Faults(rate=0.2, unknown_rate=0.1)
    merged = FaultSpec.parse("rate=0.3").for_instrument("X", base)
    assert merged == Faults(rate=0.3, unknown_rate=0.1)


@pytest.mark.parametrize(("text", "fragments"), [
    ("rate=2", ["'rate=2'", "between 0 and 1"]),
    ("rate=lots", ["'rate=lots'", "probability"]),
    ("fail_next=-1", ["'fail_next=-1'", "negative"]),
    ("fail_next=two", ["'fail_next=two'", "whole number"]),
    ("flaky=1", ["'flaky=1'", "unknown key 'flaky'"]),
    ("hang", ["'hang'", "key=value"]),
    ("heartbeat=sometimes", ["'heartbeat=sometimes'", "ok, slow, missing, hang"]),
    ("heartbeat_delay=soon", ["'heartbeat_delay=soon'", "bad duration"]),
    ("rate@=0.1", ["'rate@=0.1'", "instrument id must follow '@'"]),
    ("seed@X=1", ["seed applies to the whole workcell"]),
    ("hang@X=Y", ["either after '@' or as the value"]),
    ("retryable=maybe", ["retryable must be true or false"]),
    ("hang=A++B", ["instrument ids joined by '+'"]),
])
def test_bad_spec_names_the_bad_part(text, fragments):
    with pytest.raises(FaultSpecError) as info:
        FaultSpec.parse(text, source="--faults")
    message = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert "--faults" in message
    for fragment in fragments:
        assert fragment in message


def test_every_bad_part_is_listed():
    with pytest.raises(FaultSpecError) as info:
        FaultSpec.parse("rate=0.1,rate=9,fail_next=x,bogus=1")
    assert len(info.value.problems) == 3


def test_unknown_instrument_is_refused():
    spec = FaultSpec.parse("hang=PlateReader9,rate@Sealer1=0.1")
    with pytest.raises(FaultSpecError, match="no instrument 'PlateReader9'.*PlateReader1, Sealer1"):
        spec.check_instruments(["PlateReader1", "Sealer1"])


# --------------------------------------------------------------------------- each fault kind


async def outcomes(driver: SimulatedDriver, clock: VirtualClock, n: int) -> list[str]:
    result = []
    for i in range(n):
        _, task = await run_one(clock, driver, order(f"O{i}"))
        result.append("ok" if task.exception() is None else task.exception().code)
    return result


def test_fail_next_then_recovers():
    async def scenario():
        clock, driver = await connected(faults="fail_next=2")
        reports: list[float | None] = []
        took, task = await run_one(clock, driver, order("O0"), lambda f, v: reports.append(f))
        error = task.exception()
        assert isinstance(error, DriverError) and error.code == "SimulatedFailure"
        assert error.retryable and "PlateReader1" in str(error) and "O0" in str(error)
        assert 0 < took < 81 and all(f < 1 for f in reports)  # failed part-way through
        assert await outcomes(driver, clock, 2) == ["SimulatedFailure", "ok"]
        assert (await driver.status()).state is DriverState.IDLE
    arun(scenario)


def test_failure_rate_is_seeded_and_roughly_right():
    async def session(seed: int) -> list[str]:
        clock, driver = await connected(instrument(capabilities={"PlateReader.ReadPlate": 1}),
                                        seed=seed, faults="rate=0.3,retryable=false")
        return await outcomes(driver, clock, 200)

    async def scenario():
        first = await session(5)
        assert first == await session(5)
        assert first != await session(6)
        failures = first.count("SimulatedFailure")
        assert 35 <= failures <= 85  # 60 expected; the seed makes this exact and repeatable
        assert set(first) == {"ok", "SimulatedFailure"}
    arun(scenario)


def test_faults_do_not_shift_durations_of_good_runs():
    async def session(faults: str | None) -> list[tuple[float, bool]]:
        clock, driver = await connected(seed=9, faults=faults)
        runs = []
        for i in range(30):
            took, task = await run_one(clock, driver, order(f"O{i}"))
            runs.append((round(took, 9), task.exception() is None))
        return runs

    async def scenario():
        clean, faulty = await session(None), await session("rate=0.4")
        assert any(not ok for _, ok in faulty)
        assert [t for t, ok in faulty if ok] == [t for (t, _), (_, ok) in zip(clean, faulty, strict=True) if ok]
    arun(scenario)


def test_hang_until_cancelled():
    async def scenario():
        clock, driver = await connected(faults="hang=PlateReader1")
        task = asyncio.ensure_future(driver.execute(order("O1"), no_progress))
        await clock.advance(86_400)  # a whole virtual day
        assert not task.done()
        assert (await driver.status()).running == ["O1"]
        assert await driver.cancel("O1")
        await clock.settle()
        assert isinstance(task.exception(), OrderCancelled)
    arun(scenario)


def test_hang_targets_only_the_named_instrument():
    async def scenario():
        clock, driver = await connected(instrument(id="Other"), faults="hang=PlateReader1")
        _, task = await run_one(clock, driver, order("O1"))
        assert task.result()["Success"]
    arun(scenario)


def test_disconnect_mid_order_then_everything_fails_until_reconnect():
    async def scenario():
        clock, driver = await connected(instrument(max_concurrent=2), faults="disconnect_after=1")
        _, first = await run_one(clock, driver, order("O0"))
        assert first.result()["Success"]
        reports: list[float | None] = []
        other = asyncio.ensure_future(driver.execute(order("O1"), no_progress))  # the 2nd order
        victim = asyncio.ensure_future(driver.execute(order("O2"), lambda f, v: reports.append(f)))
        await clock.run_until(lambda: other.done() and victim.done())
        assert isinstance(other.exception(), InstrumentUnavailable)
        assert "connection lost" in str(other.exception())
        assert isinstance(victim.exception(), InstrumentUnavailable)  # lost with the link
        status = await driver.status()
        assert status.state is DriverState.DISCONNECTED and status.running == []
        with pytest.raises(InstrumentUnavailable, match="not connected"):
            await driver.execute(order("O3"), no_progress)
        with pytest.raises(InstrumentUnavailable):
            await driver.heartbeat()
        await driver.connect()
        assert await outcomes(driver, clock, 3) == ["ok", "ok", "ok"]  # once only
    arun(scenario)


def test_outcome_unknown_after_the_full_duration():
    async def scenario():
        clock, driver = await connected(faults="unknown_next=1")
        took, task = await run_one(clock, driver, order("O1"))
        error = task.exception()
        assert isinstance(error, OutcomeUnknown) and not error.retryable
        assert took >= 81  # the command ran to its end before the answer was lost
        assert (await driver.status()).state is DriverState.IDLE  # still connected
        assert await outcomes(driver, clock, 1) == ["ok"]
    arun(scenario)


def test_heartbeat_faults():
    async def scenario():
        clock, driver = await connected(faults="heartbeat=slow,heartbeat_delay=40s")
        beat = asyncio.ensure_future(driver.heartbeat())
        await clock.advance(39)
        assert not beat.done()
        await clock.advance(1)
        assert beat.result() == 40.0

        driver.inject(heartbeat="missing")
        with pytest.raises(InstrumentUnavailable, match="no heartbeat"):
            await driver.heartbeat()

        driver.inject(heartbeat="hang")
        beat = asyncio.ensure_future(driver.heartbeat())
        await clock.advance(3600)
        assert not beat.done()
        beat.cancel()
        await clock.settle()
        assert beat.cancelled()

        driver.inject(heartbeat="ok")
        assert await driver.heartbeat() == 0.0
    arun(scenario)


def test_connect_fail():
    async def scenario():
        driver = SimulatedDriver(instrument(), VirtualClock(), faults="connect_fail=2")
        for _ in range(2):
            with pytest.raises(InstrumentUnavailable, match="connection refused"):
                await driver.connect()
            assert (await driver.status()).state is DriverState.DISCONNECTED
        await driver.connect()
        assert (await driver.status()).state is DriverState.IDLE
    arun(scenario)


def test_faults_from_the_instrument_options_and_inject():
    async def scenario():
        config = instrument(options={"faults": "fail_next=1"})
        clock, driver = await connected(config)
        assert await outcomes(driver, clock, 2) == ["SimulatedFailure", "ok"]
        driver.inject(unknown_next=1)
        assert await outcomes(driver, clock, 2) == ["OutcomeUnknown", "ok"]
        # a spec from the command line layers over the instrument's own faults
        _, layered = await connected(config, faults="rate@PlateReader1=0.25")
        assert layered.faults == Faults(fail_next=1, rate=0.25)
    arun(scenario)
