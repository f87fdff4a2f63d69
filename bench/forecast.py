"""Forecast benchmark: how right is the forecast, and how long does it take?

Accuracy. A seeded rehearsal of the demo workcell with faults (``--faults``) on a virtual clock:
``--history`` runs first (the durations model learns from them, as it would from a shift's
transition log), then ``--runs`` runs are queued at once. Every ``--every`` seconds of workcell
time a forecast is made (``--samples`` draws) and, for each run still in flight, two predictions
of its completion are recorded: the forecast's median and the baseline "now + the sum of the
declared durations of its remaining steps". When all runs are done each prediction is compared
with the actual completion: absolute percentage error = |predicted − actual| / (actual −
created), i.e. relative to the run's life. Printed: median and p90 for all forecasts and for
those made once 20 % of the queue had finished, for both the forecast and the baseline, and how
often the actual completion fell inside the p10–p90 band (it should be about 80 %). One
rehearsal's band figure is noisy (its forecasts share the same few learned samples):
``--seeds 1,2,3,4,5`` plays one rehearsal per seed (the simulated durations differ) and prints
each and all of them pooled.

Speed. ``--queued`` runs (500) are created on a fresh store with the demo workcell connected and
not started; the time to read the state, build the snapshot and play it forward is measured
(median of ``--repeat``), with the event loop's lag while ``Forecast.refresh`` runs on its worker
thread (a 5 ms ticker on the loop).

usage: python bench/forecast.py [--runs 40] [--history 12] [--every 300] [--samples 16]
                                [--faults rate=0.03,seed=7] [--queued 500] [--seed 1] [--seeds 1,2,3]
                                [--skip-accuracy] [--skip-speed]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.clock import VirtualClock  # noqa: E402
from core.durations_model import DurationsModel, runs_locally  # noqa: E402
from core.engine import RunStatus  # noqa: E402
from core.forecast import Forecast, forecast, read_state, snapshot_from  # noqa: E402
from core.rehearsal import drive, stand_in_inputs  # noqa: E402
from core.runtime import DEMO_WORKCELL, SAMPLE_TEMPLATES, Runtime, load_templates  # noqa: E402
from core.store import DB_FILENAME, Store  # noqa: E402
from core.workcell import load_workcell  # noqa: E402

FINAL = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED)


def _templates() -> list[Any]:
    """Sample templates every step of which the demo workcell can run without an operator.

    Templates with Python steps are left out: on the virtual clock a Python step's worker process
    takes real time while workcell time jumps to the next deadline, so its duration there says
    nothing about the workcell."""
    cell = load_workcell(DEMO_WORKCELL)
    return [t for t in load_templates(SAMPLE_TEMPLATES)
            if all(runs_locally(s) and s.kind not in ("prompt", "python") or s.kind in cell.capabilities
                   for s in t.steps)]


async def _runtime(data_dir: Path, faults: str | None, seed: int) -> tuple[Runtime, VirtualClock]:
    store = Store(data_dir / DB_FILENAME, synchronous="NORMAL").open()
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=DEMO_WORKCELL, faults=faults, seed=seed,
                       metrics=False)
    starting = asyncio.ensure_future(rt.start(templates_dir=None))
    await drive(clock, starting)
    await starting
    for t in _templates():
        await rt.engine.publish(t, who="bench")
    return rt, clock


async def _submit(rt: Runtime, n: int, offset: int = 0) -> list[str]:
    chosen = _templates()
    ids = []
    for k in range(n):
        t = chosen[(k + offset) % len(chosen)]
        ids.append(await rt.start_run(t.name, stand_in_inputs(t, k + offset), who="bench", allow_duplicate=True))
    return ids


def _declared_remaining(rt: Runtime, model: DurationsModel, run_id: str) -> float:
    inst = rt.engine.get_instance(run_id)
    t = rt.engine.templates.get(inst["template_name"], inst["template_version"])
    done = {s["id"] for s in inst["steps"] if s["status"] in ("completed", "skipped", "cancelled")}
    total = 0.0
    for s in t.steps:
        if s.id in done or s.id in t.handler_steps:
            continue
        if runs_locally(s):
            total += model.estimate(t.name, s).median
        else:
            prior = model.declared(s.kind, None, step=s, inputs=inst["input_data"])
            total += prior.median if prior else 0.0
    return total


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


Record = tuple[float, float, float, float, float, float]
"""Of one prediction of a completed run: share of the queue done, forecast p50, p10, p90,
baseline, actual completion, and the run's life (seconds)."""


async def accuracy(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="labconsole-bench-forecast-"))
    rt, clock = await _runtime(data_dir, args.faults, seed)
    try:
        history = await _submit(rt, args.history)
        await clock.run_until(lambda: all(rt.engine.run_status(r) in FINAL for r in history), limit=30 * 86400)
        model = DurationsModel(rt.workcell, clock=clock, templates=rt.engine.templates.get)
        learned = await model.load(rt.store)
        model.subscribe(rt.ledger.bus)
        runs = await _submit(rt, args.runs, offset=args.history)
        created = {r: rt.engine.get_instance(r)["created_at"] for r in runs}
        records: list[tuple[str, float, float, float, float, float, float]] = []
        timings = []
        while True:
            finished = sum(rt.engine.run_status(r) in FINAL for r in runs)
            if finished == len(runs):
                break
            now = clock.now()
            rows = await rt.store.read(read_state)
            snap = snapshot_from(rows, rt.instruments(), rt.engine.templates.get, now)
            result = forecast(snap, model, samples=args.samples, seed=len(records))
            timings.append(result.seconds)
            for r in runs:
                eta = result.runs.get(r)
                if eta is None or not eta.ok:
                    continue
                records.append((r, now, finished / len(runs), eta.p50, eta.p10, eta.p90,
                                now + _declared_remaining(rt, model, r)))
            await clock.advance(args.every)
        actual = {r: rt.engine.get_instance(r)["completed_at"] for r in runs
                  if rt.engine.run_status(r) is RunStatus.COMPLETED}
    finally:
        await rt.close()
    kept: list[Record] = [(frac, p50, p10, p90, baseline, actual[r], actual[r] - created[r])
                          for r, _now, frac, p50, p10, p90, baseline in records
                          if r in actual and actual[r] - created[r] > 0]
    out: dict[str, Any] = {"learned": learned, "forecasts": len(timings), "completed": len(actual),
                           "runs": len(runs), "forecast_ms": statistics.median(timings) * 1000 if timings else 0,
                           "records": kept}
    out.update(errors(kept))
    return out


def errors(records: list[Record]) -> dict[str, dict[str, float]]:
    """Absolute % errors (median, p90) of the forecast and the baseline, and the share inside the
    band, over all predictions and over those made once 20 % of the queue had finished."""
    out = {}
    for label, keep in (("all", lambda frac: True), ("after 20%", lambda frac: frac >= 0.2)):
        fc, base, inside = [], [], 0
        for frac, p50, p10, p90, baseline, actual, life in records:
            if not keep(frac):
                continue
            fc.append(abs(p50 - actual) / life * 100)
            base.append(abs(baseline - actual) / life * 100)
            inside += p10 - 1 <= actual <= p90 + 1
        out[label] = {"n": len(fc), "forecast_median": _pct(fc, 0.5), "forecast_p90": _pct(fc, 0.9),
                      "baseline_median": _pct(base, 0.5), "baseline_p90": _pct(base, 0.9),
                      "in_band": inside / len(fc) * 100 if fc else float("nan")}
    return out


async def speed(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="labconsole-bench-forecast-speed-"))
    rt, clock = await _runtime(data_dir, None, args.seed)
    try:
        chosen = _templates()
        for k in range(args.queued):
            t = chosen[k % len(chosen)]
            await rt.engine.create_instance(t.name, stand_in_inputs(t, k), who="bench", allow_duplicate=True)
        model = DurationsModel(rt.workcell, clock=clock, templates=rt.engine.templates.get)
        totals, plays = [], []
        result = None
        for k in range(args.repeat):
            began = time.perf_counter()
            rows = await rt.store.read(read_state)
            snap = snapshot_from(rows, rt.instruments(), rt.engine.templates.get, clock.now())
            result = forecast(snap, model, samples=args.samples, seed=k)
            totals.append(time.perf_counter() - began)
            plays.append(result.seconds)
        assert result is not None
        # loop lag while the kept-up-to-date forecaster works on a thread, then in a worker process
        lag: dict[str, tuple[float, float, float]] = {}
        for mode in ("idle", "thread", "process"):  # idle: the same ticker with no forecast (the machine's noise)
            fc = Forecast(rt, model, samples=args.samples, process=mode == "process")
            if mode != "idle":
                await fc.refresh()  # the worker process starts (spawned) and imports the core once
            lags: list[float] = []
            done = asyncio.Event()

            async def ticker(lags: list[float] = lags, done: asyncio.Event = done) -> None:
                while not done.is_set():
                    before = time.perf_counter()
                    await asyncio.sleep(0.005)
                    lags.append(max(0.0, time.perf_counter() - before - 0.005))

            probe = asyncio.create_task(ticker())
            began = time.perf_counter()
            for _ in range(args.repeat):
                if mode == "idle":
                    await asyncio.sleep(0.5)
                else:
                    await fc.refresh()
            took = (time.perf_counter() - began) / args.repeat
            done.set()
            await probe
            await fc.close()
            lag[mode] = (took * 1000, _pct(lags, 0.99) * 1000, max(lags, default=0.0) * 1000)
    finally:
        await rt.close()
    ok = sum(1 for e in result.runs.values() if e.ok)
    return {"queued": args.queued, "forecast_runs": ok, "total_ms": statistics.median(totals) * 1000,
            "play_ms": statistics.median(plays) * 1000, "lag": lag,
            "last_eta_h": (max(e.p50 for e in result.runs.values() if e.ok) - result.at) / 3600}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--history", type=int, default=12)
    ap.add_argument("--every", type=float, default=300.0, help="seconds of workcell time between forecasts")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--faults", default="rate=0.03,seed=7")
    ap.add_argument("--queued", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", default=None,
                    help="comma-separated seeds: one accuracy rehearsal each, and all pooled (default: --seed)")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    if not args.skip_accuracy:
        seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
        pooled: list[Record] = []
        for seed in seeds:
            a = asyncio.run(accuracy(args, seed))
            pooled += a["records"]
            print(f"accuracy (seed {seed}): {a['runs']} runs queued at once after {a['learned']} learned step "
                  f"durations, faults {args.faults!r}; {a['forecasts']} forecasts every {args.every:g} s of "
                  f"workcell time ({a['forecast_ms']:.1f} ms each, median); {a['completed']} runs completed")
            _table(a)
        if len(seeds) > 1:
            print(f"accuracy, {len(seeds)} seeds pooled:")
            _table(errors(pooled))
        print("  baseline: now + the sum of the declared durations of the steps still to do")
    if args.skip_speed:
        return
    s = asyncio.run(speed(args))
    print(f"speed: {s['queued']} queued runs ({s['forecast_runs']} with an ETA, the last "
          f"{s['last_eta_h']:.1f} h ahead), {args.samples} samples: {s['total_ms']:.0f} ms "
          f"(state read + snapshot + play; play alone {s['play_ms']:.0f} ms), target <= 1000 ms")
    for mode, (took, p99, worst) in s["lag"].items():
        what = "no forecast (0.5 s)" if mode == "idle" else f"Forecast.refresh in a worker {mode}: {took:.0f} ms"
        print(f"  {what}; event-loop lag meanwhile (5 ms ticker) p99 {p99:.1f} ms, max {worst:.1f} ms")


def _table(a: dict[str, Any]) -> None:
    print("  absolute % error of predicted completion, relative to the run's life (created -> completed):")
    print(f"  {'':<12}{'n':>6}  {'forecast median':>16} {'p90':>7}   {'baseline median':>16} {'p90':>7}"
          f"   {'actual in p10-p90':>18}")
    for label in ("all", "after 20%"):
        r = a[label]
        print(f"  {label:<12}{r['n']:>6}  {r['forecast_median']:>15.1f}% {r['forecast_p90']:>6.1f}%"
              f"   {r['baseline_median']:>15.1f}% {r['baseline_p90']:>6.1f}%   {r['in_band']:>17.0f}%")


if __name__ == "__main__":
    main()
