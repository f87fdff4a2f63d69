"""Work in progress first: how long does a plate spend between its first and its last step?

A backlog of ``--runs`` runs (1,000) of the sample templates the demo workcell runs without an
operator is queued at once on a virtual clock and played for ``--hours`` of workcell time (a
shift, 8 h; 0 or a large value: until every run ended), twice, on fresh stores with the same seed:

- *before*: the old order of service — within a priority, steps in the order they became ready,
  so every new run's first step goes ahead of the later steps of runs already under way;
- *after*: work in progress first — steps of runs under way (the longest under way first) go
  before the first steps of new runs of the same priority.

For each policy it prints the time a plate spends in process (its first step's start to its last
step's end: mean, median, p90, max; runs completed within the shift), the most plates in process at once, the
workcell time played, the throughput and the runs that did not complete (run timeouts in a long backlog).
Heartbeats are made hourly and each step reports its progress once: neither changes the order of
service, and as configured they are most of the virtual clock's wake-ups. It also prints, for Cell
Culture Passage, how long a decapped plate waits for the liquid handler (decap end -> aspirate
start, or the run's end) and how many such open plates there are at most at once.

The benchmark is bounded: ``--budget`` wall seconds for both policies (110 s by default, so it
ends within 2 minutes with start-up); the new policy runs first, at most half the budget, the old
one gets the rest. A policy that does not finish in time says so, and its figures then cover the
runs completed by then (so the two are compared on what each completed, not on the same runs).
Run timeouts (1 h on two of the three templates) end many runs of a 1,000-run backlog under either
policy: the "not done" column counts them (with runs still in flight when a policy is stopped).

usage: python bench/wip.py [--runs 1000] [--hours 8] [--seed 1] [--budget 110]
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

from bench.forecast import FINAL, _templates  # noqa: E402
from core.clock import VirtualClock  # noqa: E402
from core.engine import RunStatus  # noqa: E402
from core.rehearsal import drive, stand_in_inputs  # noqa: E402
from core.runtime import DEMO_WORKCELL, Runtime  # noqa: E402
from core.store import DB_FILENAME, Store  # noqa: E402
from core.workcell import Workcell, load_workcell  # noqa: E402


def quiet_demo_cell() -> Workcell:
    """The demo workcell with one progress report per step (progress does not change the order
    of service; at 4-30 reports a step, it is most of the virtual clock's wake-ups)."""
    cell = load_workcell(DEMO_WORKCELL)
    instruments = [i.model_copy(update={"capabilities": {c: spec.model_copy(update={"progress_steps": 1})
                                                         for c, spec in i.capabilities.items()}})
                   for i in cell.instruments]
    return cell.model_copy(update={"instruments": instruments})


async def _submit(rt: Runtime, n: int) -> list[str]:
    """Start ``n`` runs, the templates in turn, a hundred at a time (their writes share commits)."""
    chosen = _templates()
    ids: list[str] = []
    for first in range(0, n, 100):
        batch = range(first, min(n, first + 100))
        ids += await asyncio.gather(*(rt.start_run(chosen[k % len(chosen)].name,
                                                   stand_in_inputs(chosen[k % len(chosen)], k), who="bench",
                                                   allow_duplicate=True) for k in batch))
    return ids


async def _runtime(data_dir: Path, seed: int) -> tuple[Runtime, VirtualClock]:
    store = Store(data_dir / DB_FILENAME, synchronous="NORMAL").open()
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=quiet_demo_cell(), seed=seed, metrics=False)
    starting = asyncio.ensure_future(rt.start(templates_dir=None))
    await drive(clock, starting)
    await starting
    for t in _templates():
        await rt.engine.publish(t, who="bench")
    return rt, clock


def spans_of(store: Store, run_ids: list[str]) -> list[tuple[float, float]]:
    """(first step started, last step ended) of each completed run, from the store."""
    wanted = set(run_ids)

    def read(conn: Any) -> list[tuple[str, float, float]]:
        return conn.execute("SELECT s.run_id, min(s.started), max(s.ended) FROM step_runs s "
                            "JOIN runs r ON r.run_id = s.run_id WHERE r.status = 'completed' "
                            "GROUP BY s.run_id").fetchall()

    return [(first, last) for run_id, first, last in store.read_sync(read)
            if run_id in wanted and first is not None and last is not None]


def decapped_waits(store: Store, run_ids: list[str]) -> list[tuple[float, float]]:
    """(decap ended, next step started — or the run ended) of each run of Cell Culture Passage
    whose plate was decapped: how long an opened plate sat before the liquid handler took it."""
    wanted = set(run_ids)

    def read(conn: Any) -> list[tuple[str, float, float | None, float | None]]:
        return conn.execute(
            "SELECT d.run_id, d.ended, a.started, r.ended FROM step_runs d "
            "JOIN step_runs a ON a.run_id = d.run_id AND a.step_id = 'aspirate' "
            "JOIN runs r ON r.run_id = d.run_id "
            "WHERE d.step_id = 'decap' AND d.ended IS NOT NULL AND r.template_name = 'Cell Culture Passage'"
        ).fetchall()

    return [(decapped, taken if taken is not None else ended) for run_id, decapped, taken, ended in
            store.read_sync(read) if run_id in wanted and (taken is not None or ended is not None)]


def peak(spans: list[tuple[float, float]]) -> int:
    """The most plates in process at once."""
    edges = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


SHM = Path("/dev/shm")
"""Stores go to memory where there is one: the figures are workcell time, the wall time is bounded."""


async def one(prefer_started: bool, runs: int, seed: int, limit: float, scratch: Path | None,
              hours: float) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="labconsole-bench-wip-", dir=scratch))
    rt, clock = await _runtime(data_dir, seed)
    assert rt.dispatcher is not None
    rt.dispatcher.prefer_started = prefer_started
    # heartbeats every hour of workcell time, not every 5 s: they are most of the clock's wake-ups
    # and nothing here goes offline, so the wall time goes to the runs
    rt.dispatcher.heartbeat_interval, rt.dispatcher.stale_timeout = 3600.0, 7200.0
    rt.dispatcher._rearm.set()  # noqa: SLF001 - wake the ticker so the new intervals apply now
    began = time.perf_counter()
    try:
        ids = await _submit(rt, runs)
        start = clock.now()
        finished = False

        def done() -> bool:
            nonlocal finished
            finished = (hours > 0 and clock.now() - start >= hours * 3600) or all(rt.engine.run_status(r) in FINAL for r in ids)
            return finished or time.perf_counter() - began > limit

        await clock.run_until(done, limit=60 * 86400)
        makespan = clock.now() - start
        statuses = [rt.engine.run_status(r) for r in ids]
        completed = statuses.count(RunStatus.COMPLETED)
        failed = len(ids) - completed
        spans = spans_of(rt.store, ids)
        opened = decapped_waits(rt.store, ids)
    finally:
        await rt.close()
    lengths = sorted(b - a for a, b in spans)
    return {"finished": finished, "completed": completed, "failed": failed, "makespan": makespan, "wall": time.perf_counter() - began,
            "mean": statistics.fmean(lengths) if lengths else float("nan"),
            "median": statistics.median(lengths) if lengths else float("nan"),
            "p90": lengths[int(0.9 * (len(lengths) - 1))] if lengths else float("nan"),
            "max": lengths[-1] if lengths else float("nan"), "peak": peak(spans),
            "open_mean": statistics.fmean(b - a for a, b in opened) if opened else float("nan"),
            "open_peak": peak(opened)}


def _m(seconds: float) -> str:
    return f"{seconds / 60:8.1f} min"


def main(args: argparse.Namespace) -> int:
    scratch = SHM if SHM.is_dir() else None
    began = time.perf_counter()
    after = asyncio.run(one(True, args.runs, args.seed, args.budget / 2, scratch, args.hours))
    left = args.budget - (time.perf_counter() - began)
    before = asyncio.run(one(False, args.runs, args.seed, max(left, args.budget / 2), scratch, args.hours))
    results = {"before (ready order)": before, "after (work in progress first)": after}
    print(f"work in progress: {args.runs} runs of the demo workcell queued at once, the first {args.hours:g} h of "
          f"workcell time (virtual clock), seed {args.seed}")
    print(f"{'':32} {'mean':>12} {'median':>12} {'p90':>12} {'max':>12} {'peak':>6} {'played':>10} "
          f"{'runs/h':>7} {'not done':>8} {'wall':>6}")
    for label, r in results.items():
        note = "" if r["finished"] else f"  (stopped at its time limit: {r['completed']} completed)"
        print(f"{label:32} {_m(r['mean'])} {_m(r['median'])} {_m(r['p90'])} {_m(r['max'])} {r['peak']:6d} "
              f"{r['makespan'] / 3600:8.1f} h {r['completed'] / r['makespan'] * 3600 if r['makespan'] else 0:7.1f} "
              f"{r['failed']:8d} {r['wall']:5.1f}s{note}")
    for label, r in results.items():
        print(f"{label:32} decapped plates waiting for the liquid handler: mean {r['open_mean'] / 60:.1f} min, "
              f"at most {r['open_peak']} at once")
    before, after = results.values()
    if before["mean"] and after["mean"] == after["mean"]:
        print(f"time a plate spends in process (first step start -> last step end), mean: "
              f"{before['mean'] / 60:.1f} min -> {after['mean'] / 60:.1f} min "
              f"({after['mean'] / before['mean']:.2f}x); plates in process at once: {before['peak']} -> {after['peak']}")
    return 0 if all(r["finished"] for r in results.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hours", type=float, default=8.0, help="hours of workcell time played (a shift)")
    parser.add_argument("--budget", type=float, default=110.0,
                        help="wall seconds for both policies (the second gets what the first left)")
    sys.exit(main(parser.parse_args()))
