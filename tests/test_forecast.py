"""Forecast: the queue played forward gives each run an ETA with a band, or says why it has none;
against a real runtime on a virtual clock the forecast meets what happens."""

from __future__ import annotations

import asyncio

import pytest

from core.clock import VirtualClock
from core.durations_model import DurationsModel
from core.engine import RunStatus
from core.forecast import Forecast, InstrumentState, RunState, Snapshot, StepState, forecast
from core.runtime import Runtime
from core.states import StepStatus
from core.store import DB_FILENAME, Store
from core.templates import RetryPolicy, template_from_dict
from core.workcell import parse_workcell

CELL = """
name: forecast cell
seed: 5
instruments:
  - {id: Sealer, kind: Sealer, driver: simulated, options: {connect_time: 0s},
     capabilities: {Sealer.Seal: {duration: 20s, jitter: 0s}}}
  - {id: Reader, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 60s, jitter: 0s}}}
"""
JITTERY = CELL.replace("jitter: 0s}}}\n  - {id: Reader", "jitter: 5s}}}\n  - {id: Reader")
SEAL_READ = template_from_dict({"name": "Seal and read", "version": 1, "definition": {"steps": [
    {"id": "seal", "kind": "Sealer.Seal"},
    {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["seal"]},
    {"id": "wait", "kind": "delay", "parameters": {"seconds": 30}, "depends_on": ["read"]}]}})
NOW = 1_800_000_000.0
INSTRUMENTS = (InstrumentState("Sealer", ("Sealer.Seal",)), InstrumentState("Reader", ("PlateReader.ReadPlate",)))


def _run(run_id, created, priority=50, steps=None, status="running"):
    return RunState(run_id, SEAL_READ, status, priority, created, {}, steps or {})


def _model(cell=CELL):
    return DurationsModel(parse_workcell(cell))


def test_a_queue_on_fixed_durations_gives_exact_etas_in_priority_order():
    runs = (_run("r1", NOW - 30), _run("r2", NOW - 20), _run("urgent", NOW - 10, priority=90))
    result = forecast(Snapshot(NOW, runs, INSTRUMENTS), _model(), samples=4)
    eta = {r: result.runs[r] for r in ("r1", "r2", "urgent")}
    # the urgent run seals first: seal 0-20, read 20-80, wait to 110; r1 seal 20-40, read 80-140 ...
    assert eta["urgent"].p50 - NOW == 110 and eta["r1"].p50 - NOW == 170 and eta["r2"].p50 - NOW == 230
    assert all(e.p10 == e.p50 == e.p90 and e.ok for e in eta.values())
    assert eta["r2"].steps == {"seal": NOW + 60, "read": NOW + 200, "wait": NOW + 230}


def test_a_running_step_counts_its_elapsed_time_and_done_steps_are_left_out():
    runs = (_run("r1", NOW - 60, steps={
        "seal": StepState("seal", StepStatus.COMPLETED),
        "read": StepState("read", StepStatus.RUNNING, started=NOW - 45, instrument="Reader")}),
        _run("r2", NOW - 50, steps={"seal": StepState("seal", StepStatus.RUNNING, started=NOW - 5,
                                                      instrument="Sealer")}))
    result = forecast(Snapshot(NOW, runs, INSTRUMENTS), _model(), samples=2)
    assert result.runs["r1"].p50 == NOW + 15 + 30
    assert result.runs["r2"].steps["seal"] == NOW + 15 and result.runs["r2"].p50 == NOW + 15 + 60 + 30


def test_sampled_durations_give_a_band():
    runs = tuple(_run(f"r{i}", NOW + i) for i in range(5))
    result = forecast(Snapshot(NOW, runs, INSTRUMENTS), _model(JITTERY), samples=32, seed=3)
    last = result.runs["r4"]
    assert last.p10 < last.p50 < last.p90
    assert last.p10 > NOW + 20 * 5 + 60 * 1 + 30 - 25 and last.p90 < NOW + 5 * 60 + 20 + 30 + 25


def test_runs_that_cannot_finish_say_why_instead_of_an_eta():
    out_of_service = (InstrumentState("Sealer", ("Sealer.Seal",), available=False, why_not="out of service"),
                      INSTRUMENTS[1])
    runs = (_run("r1", NOW),
            _run("paused", NOW, status="paused"),
            _run("failed", NOW, steps={"seal": StepState("seal", StepStatus.FAILED)}))
    result = forecast(Snapshot(NOW, runs, out_of_service), _model(), samples=2)
    assert result.runs["r1"].problem == ("step seal: no instrument in service offers Sealer.Seal "
                                         "(Sealer (out of service))")
    assert result.runs["paused"].problem == "paused: waits for an operator to resume it"
    assert result.runs["failed"].problem.startswith("step seal failed: waits for an operator")
    nobody = forecast(Snapshot(NOW, (runs[0],), (INSTRUMENTS[1],)), _model(), samples=1)
    assert nobody.runs["r1"].problem.endswith("offers Sealer.Seal (no instrument in the workcell has it)")
    assert not nobody.runs["r1"].ok and nobody.runs["r1"].p50 == 0.0


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_the_forecast_of_a_real_queue_meets_what_happens(data_dir, process):
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store)
        cell = parse_workcell(CELL)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=cell, seed=2, metrics=False)
        starting = asyncio.ensure_future(rt.start(templates_dir=None))
        await clock.run_until(starting.done, step=1.0)
        await rt.engine.publish(SEAL_READ.model_copy(update={"version": 0}))
        fc = Forecast(rt, samples=4, debounce=0.01, process=process)
        seen = []
        fc.add_listener(seen.append)
        await fc.start()
        runs = [await rt.start_run("Seal and read", allow_duplicate=True) for _ in range(4)]
        await clock.advance(25)  # the first seal is done, the first read is running
        result = await fc.refresh()
        predicted = {r: result.runs[r].p50 for r in runs}
        await clock.run_until(lambda: all(rt.engine.run_status(r) is RunStatus.COMPLETED for r in runs))
        actual = {r: rt.engine.get_instance(r)["completed_at"] for r in runs}
        # events arrived while the clock stood still: the debounced forecast ran on its own
        await asyncio.sleep(0.05)
        automatic = fc.made
        eta_after = fc.eta(runs[0])
        await fc.close()
        await rt.close()
        return predicted, actual, seen, automatic, eta_after, result

    predicted, actual, seen, automatic, eta_after, result = asyncio.run(scenario())
    for run_id, when in actual.items():
        assert predicted[run_id] == pytest.approx(when, abs=2.0), run_id
    assert result in seen and automatic >= 2
    assert eta_after is None  # finished runs leave the forecast


def test_learned_failures_add_retries_to_the_forecast():
    retried = SEAL_READ.model_copy(update={"steps": tuple(
        s.model_copy(update={"retry_policy": RetryPolicy(max_attempts=3, initial_interval=10.0)}) if s.id == "seal" else s
        for s in SEAL_READ.steps)})
    runs = tuple(RunState(f"r{i}", retried, "running", 50, NOW + i, {}, {}) for i in range(4))
    model = _model()
    plain = forecast(Snapshot(NOW, runs, INSTRUMENTS), model, samples=64, seed=1)
    for _ in range(40):
        model.observe(20.0, capability="Sealer.Seal", instrument="Sealer", template="Seal and read", step="seal")
    for _ in range(30):
        model.observe_failure("Sealer.Seal")
    assert model.failure_rate("Sealer.Seal") == pytest.approx(30 / 75)
    failing = forecast(Snapshot(NOW, runs, INSTRUMENTS), model, samples=64, seed=1)
    assert plain.runs["r0"].p90 == NOW + 110
    assert failing.runs["r0"].p90 > NOW + 110 + 10 and failing.runs["r3"].p90 > plain.runs["r3"].p90


def test_runs_schedules_will_start_join_the_queue_at_their_time(data_dir):
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store, start=NOW)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(CELL), seed=2, metrics=False)
        starting = asyncio.ensure_future(rt.start(templates_dir=None, schedules=True))
        await clock.run_until(starting.done, step=1.0)
        await rt.engine.publish(SEAL_READ.model_copy(update={"version": 0}))
        from core.schedules import Frequency, Schedule

        s = await rt.schedules.add(Schedule("Seal and read", Frequency.CRON, cron="*/20 * * * *", priority=90))
        queued = [await rt.start_run("Seal and read", allow_duplicate=True) for _ in range(30)]
        # a little over an hour: the third planned start (NOW + 60 min) is inside the horizon
        # whether the start-up above took virtual seconds or none
        fc = Forecast(rt, samples=2, horizon=3600 + 60)
        result = await fc.refresh()
        await fc.close()
        await rt.close()
        return s, queued, result

    s, queued, result = asyncio.run(scenario())
    scheduled = sorted((e for e in result.runs.values() if e.scheduled), key=lambda e: e.p50)
    starts = [float(e.run_id.rpartition("@")[2]) for e in scheduled]
    assert [e.run_id.split("@")[0] for e in scheduled] == [f"scheduled:{s.id}"] * 3
    assert [t - NOW for t in starts] == [20 * 60, 40 * 60, 60 * 60]
    for e, start in zip(scheduled, starts, strict=True):  # priority 90: its seal goes first at its time
        assert e.steps["seal"] == pytest.approx(start + 20, abs=20)
        assert e.p50 >= start + 110
    assert len(result.runs) == len(queued) + 3


def test_a_python_step_runs_in_the_engine_and_takes_its_own_time():
    python = template_from_dict({"name": "Normalise", "version": 1, "definition": {"steps": [
        {"id": "seal", "kind": "Sealer.Seal"},
        {"id": "normalise", "kind": "python", "depends_on": ["seal"],
         "handler": "dilution.compute_volumes"}]}})
    model = _model()
    runs = (RunState("r1", python, "running", 50, NOW, {}, {}),)
    before = forecast(Snapshot(NOW, runs, INSTRUMENTS), model, samples=2)
    assert before.runs["r1"].ok and before.runs["r1"].p50 == NOW + 20  # nothing known yet: no time
    for _ in range(6):
        model.observe(45.0, capability="python", instrument=None, template="Normalise", step="normalise")
    after = forecast(Snapshot(NOW, runs, INSTRUMENTS), model, samples=2)
    assert after.runs["r1"].p50 == NOW + 20 + 45
    assert "python" not in model.by_capability_any


def test_the_console_process_does_not_read_the_runs_for_a_forecast(data_dir, monkeypatch):
    # The worker process reads the unfinished runs from the store file itself. They used to be
    # read and pickled in the console's process at every forecast: with 10,000 runs under way,
    # tens of MB a time, which the process kept.
    def not_here(_conn):
        raise AssertionError("the runs were read in the console's process")

    monkeypatch.setattr("core.forecast.read_state", not_here)

    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(CELL), seed=2, metrics=False)
        starting = asyncio.ensure_future(rt.start(templates_dir=None))
        await clock.run_until(starting.done, step=1.0)
        await rt.engine.publish(SEAL_READ.model_copy(update={"version": 0}))
        fc = Forecast(rt, samples=2, debounce=3600, process=True)
        runs = [await rt.start_run("Seal and read", allow_duplicate=True) for _ in range(3)]
        try:
            return runs, await fc.refresh()
        finally:
            await fc.close()
            await rt.close()

    runs, result = asyncio.run(scenario())
    assert set(runs) <= set(result.runs)
    assert all(result.runs[r].ok and result.runs[r].p50 > 0 for r in runs)


def test_a_storm_of_changes_keeps_one_timer_and_forecasts_once_after_the_quiet(data_dir):
    """A bulk cancel of 10,000 runs sends 30,000 changes: each restarted the debounce timer, and
    under qasync every timer is a Qt timer started and killed."""
    async def scenario():
        rt = Runtime.build(data_dir, workcell=parse_workcell(CELL), seed=2, metrics=False)
        await rt.start(templates_dir=None)
        fc = Forecast(rt, samples=2, debounce=0.1)
        forecast_made = asyncio.Event()
        fc.add_listener(lambda _result: forecast_made.set())
        await fc.start(history=False)
        await asyncio.wait_for(forecast_made.wait(), 30)
        forecast_made.clear()
        loop = asyncio.get_running_loop()
        timers = []
        for name in ("call_later", "call_at"):
            real = getattr(loop, name)
            setattr(loop, name, lambda *a, _real=real, **k: timers.append(a) or _real(*a, **k))
        made = fc.made
        t0 = loop.time()
        try:
            while loop.time() - t0 < 0.4:  # changes keep coming for 4 debounce periods
                for _ in range(100):
                    fc._changed(None)
                await asyncio.sleep(0.01)
            during = fc.made - made
            await asyncio.wait_for(forecast_made.wait(), 30)
            quiet_after = loop.time() - t0
        finally:
            del loop.call_later, loop.call_at
        await fc.close()
        await rt.close()
        return during, fc.made - made, quiet_after, timers

    during, after, quiet_after, timers = asyncio.run(scenario())
    assert during == 0  # nothing while the changes came
    assert after == 1 and quiet_after >= 0.4 + 0.1 - 0.02
    forecast_timers = [t for t in timers if getattr(t[1], "__name__", "") == "_fire"]
    assert len(forecast_timers) <= 10, f"{len(forecast_timers)} timers for about 4,000 changes"
