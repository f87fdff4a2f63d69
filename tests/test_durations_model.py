"""Durations learned from history: quantiles, the declared prior, live events and the log agree."""

from __future__ import annotations

import asyncio
import random

import pytest

from core.clock import VirtualClock
from core.durations_model import MIN_SAMPLES, DurationsModel, Samples
from core.engine import RunStatus
from core.runtime import DEMO_WORKCELL, Runtime
from core.store import DB_FILENAME, Store
from core.templates import Step, template_from_dict
from core.workcell import load_workcell, parse_workcell

CELL = """
name: durations cell
seed: 11
instruments:
  - {id: Fast, kind: Sealer, driver: simulated, options: {connect_time: 0s},
     capabilities: {Sealer.Seal: {duration: 20s, jitter: 4s}}}
  - {id: Slow, kind: Sealer, driver: simulated, options: {connect_time: 0s},
     capabilities: {Sealer.Seal: {duration: 60s, jitter: 0s}}}
  - {id: Reader, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 90s, jitter: 10%}}}
"""
TEMPLATE = {"name": "Seal and read", "definition": {"steps": [
    {"id": "seal", "kind": "Sealer.Seal"},
    {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["seal"]}]}}


def test_samples_keep_a_window_and_give_quantiles():
    s = Samples(window=5)
    for v in (10, 1, 7, 3, 5, 100):  # 10 drops out when 100 arrives
        s.add(float(v))
    assert s.sorted == [1.0, 3.0, 5.0, 7.0, 100.0] and len(s) == 5
    assert s.quantile(0.5) == 5.0 and s.quantile(0.0) == 1.0 and s.quantile(1.0) == 100.0
    assert s.quantile(0.1) == pytest.approx(1.8)


def test_the_declared_duration_is_the_prior_until_enough_samples():
    model = DurationsModel(load_workcell(DEMO_WORKCELL))
    prior = model.capability("LiquidHandler.Transfer", "LiquidHandler1")
    assert (prior.median, prior.count, prior.source) == (45.0, 0, "declared")
    assert prior.p10 == pytest.approx(41.4) and prior.p90 == pytest.approx(48.6)
    assert model.capability("LiquidHandler.Transfer").median == 120.0  # any: the slower OT-2
    for _ in range(2):
        model.observe(60.0, capability="LiquidHandler.Transfer", instrument="LiquidHandler1",
                      template="T", step="s")
    blend = model.capability("LiquidHandler.Transfer", "LiquidHandler1")
    assert blend.source == "blend" and blend.median == pytest.approx((5 * 45 + 2 * 60) / 7)
    for _ in range(MIN_SAMPLES):
        model.observe(60.0, capability="LiquidHandler.Transfer", instrument="LiquidHandler1",
                      template="T", step="s")
    learned = model.capability("LiquidHandler.Transfer", "LiquidHandler1")
    assert (learned.median, learned.count, learned.source) == (60.0, 7, "history")
    assert model.step("T", "s").median == 60.0
    assert model.capability("Nobody.Offers").source == "unknown"


def test_a_duration_parameter_and_a_step_estimate_change_the_prior():
    model = DurationsModel(load_workcell(DEMO_WORKCELL))
    incubate = Step(id="inc", kind="Incubator.Incubate", parameters={"duration": "10m"})
    assert model.estimate("T", incubate).median == 600.0
    mapped = Step(id="inc", kind="Incubator.Incubate", input_mapping={"duration": "input_data.minutes"})
    assert model.estimate("T", mapped, inputs={"minutes": "5m"}).median == 300.0
    assert model.estimate("T", mapped).median == 1800.0
    guessed = Step(id="x", kind="Sealer.Seal", estimated_duration=30)
    assert model.estimate("T", guessed).median == 30.0
    delay = Step(id="d", kind="delay", parameters={"seconds": "2m"})
    assert model.estimate("T", delay).median == 120.0
    rng = random.Random(1)
    draws = [model.sampler("T", Step(id="r", kind="PlateReader.ReadPlate"))(rng) for _ in range(2000)]
    assert min(draws) > 75 and max(draws) < 105 and abs(sorted(draws)[1000] - 90) < 2


def test_live_events_and_the_transition_log_give_the_same_statistics(data_dir):
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store)
        cell = parse_workcell(CELL)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=cell, seed=3, metrics=False)
        live = DurationsModel(cell, clock=clock, templates=rt.engine.templates.get)
        live.subscribe(rt.ledger.bus)
        starting = asyncio.ensure_future(rt.start(templates_dir=None))
        await clock.run_until(starting.done, step=1.0)
        await rt.engine.publish(template_from_dict(TEMPLATE))
        runs = [await rt.start_run("Seal and read", allow_duplicate=True) for _ in range(12)]
        await clock.run_until(lambda: all(rt.engine.run_status(r) is RunStatus.COMPLETED for r in runs))
        replayed = DurationsModel(cell, templates=rt.engine.templates.get)
        taken = await replayed.load(store)
        await rt.close()
        return live, replayed, taken

    live, replayed, taken = asyncio.run(scenario())
    assert taken == live.observed == 24
    for key in (("Sealer.Seal", "Fast"), ("Sealer.Seal", "Slow"), ("PlateReader.ReadPlate", "Reader")):
        assert live.by_capability[key].sorted == pytest.approx(replayed.by_capability[key].sorted)
    assert live.capability("Sealer.Seal", "Slow").median == pytest.approx(60.0)
    fast = live.capability("Sealer.Seal", "Fast")
    assert 16.0 <= fast.p10 <= fast.median <= fast.p90 <= 24.0
    read = live.step("Seal and read", "read")
    assert read.count == 12 and 81.0 <= read.p10 <= read.median <= read.p90 <= 99.0
