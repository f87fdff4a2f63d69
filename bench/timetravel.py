"""Time-travel benchmark: jump and scrub over a log of a million transitions.

Fills a store with the demo generator (``core.demo.generate``: workflow runs and their steps,
each order with its Created transition and, when it moved on, its last one, written through the
hash chain's bulk insert) until the log holds ``--transitions`` rows. The file is kept in
``--cache`` and reused by later runs. Then, in one process:

* builds the snapshots (``TimeMachine.refresh``: one every ``--every`` transitions; once per
  store, afterwards only for new rows);
* jumps to ``--jumps`` moments spread over the whole log (seeded), each a complete moment: open
  orders and counts, their rows for the view, the last hour's transitions and operator actions,
  every instrument's state, the open inbox items;
* scrubs: ``--scrubs`` steps of 1/1000 of the log's span, forward from a moment then back;
* the baseline: the same kind of moment replayed from the first transition (no snapshots), at a
  few of the jump moments, checked equal to the jump's open orders and counts.

Prints the figures (median, p95, max) and the baseline's ratio; the whole run stops measuring
when ``--budget`` seconds have passed (generation excluded).

usage: python bench/timetravel.py [--transitions 1000000] [--cache DIR] [--every 5000] [--rebuild]
       [--jumps 40] [--scrubs 100] [--baselines 3] [--budget 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import demo  # noqa: E402
from core.store import Store  # noqa: E402
from core.timetravel import TimeMachine  # noqa: E402

JUMP_TARGET = 0.200
SCRUB_TARGET = 0.050


def transitions(store: Store) -> int:
    count: int = store.read_sync(lambda c: c.execute("SELECT coalesce(max(seq), 0) FROM transitions").fetchone()[0])
    return count


def fill(store: Store, target: int) -> float:
    t0 = time.perf_counter()
    have = transitions(store)
    seed = 1
    while have < target:
        orders = max(1000, min(50_000, (target - have) // 2 + 500))
        demo.generate(store, orders, seed=seed)
        seed += 1
        have = transitions(store)
        print(f"  generated: {have:,} transitions ({time.perf_counter() - t0:.0f} s)", flush=True)
    return time.perf_counter() - t0


def figures(seconds: list[float]) -> str:
    if not seconds:
        return "none measured"
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms (n={len(ms)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/labconsole-bench-timetravel"))
    parser.add_argument("--every", type=int, default=5_000)
    parser.add_argument("--jumps", type=int, default=40)
    parser.add_argument("--scrubs", type=int, default=100)
    parser.add_argument("--baselines", type=int, default=3)
    parser.add_argument("--budget", type=float, default=300.0, help="seconds of measuring at most")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--rebuild", action="store_true", help="drop the snapshots first and time building them")
    args = parser.parse_args()

    args.cache.mkdir(parents=True, exist_ok=True)
    path = args.cache / f"timetravel-{args.transitions}.sqlite3"
    store = Store(path, synchronous="OFF").open()
    try:
        print(f"store: {path}")
        generated = fill(store, args.transitions)
        count = transitions(store)
        print(f"log: {count:,} transitions" + (f" (generated in {generated:.0f} s)" if generated > 1 else " (cached)"))
        deadline = time.monotonic() + args.budget
        machine = TimeMachine(store, every=args.every)
        if args.rebuild:
            store.write_sync(lambda c: c.execute("DELETE FROM timetravel_snapshots"))
        report = machine.refresh_sync()
        print(f"snapshots: {machine.snapshot_count()} (every {args.every:,} transitions); this refresh built "
              f"{report.built}, dropped {report.dropped}, replayed {report.replayed:,} rows in {report.seconds:.2f} s")
        reach = machine.reach_sync()
        assert reach is not None
        first, last = reach
        span = last - first
        rng = random.Random(args.seed)
        moments = [first + span * rng.random() for _ in range(args.jumps)]

        jumps: list[float] = []
        built = []
        for at in moments:
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            m = machine.moment_sync(at)
            jumps.append(time.perf_counter() - t0)
            built.append(m)
        open_sizes = [len(m.open_orders) for m in built]
        replayed = [m.replayed for m in built]
        print(f"jump to a moment: {figures(jumps)}; target <= {JUMP_TARGET * 1000:.0f} ms")
        if built:
            print(f"  open orders at a moment: {min(open_sizes):,}–{max(open_sizes):,}; transitions replayed "
                  f"per jump: median {statistics.median(replayed):,.0f}, max {max(replayed):,}")

        scrubs: list[float] = []
        step = span / 1000
        at = first + span * rng.uniform(0.3, 0.6)
        current = machine.moment_sync(at)
        for i in range(args.scrubs):
            if time.monotonic() > deadline:
                break
            at += step if i < args.scrubs // 2 else -step
            t0 = time.perf_counter()
            current = machine.moment_sync(at, previous=current)
            scrubs.append(time.perf_counter() - t0)
        print(f"scrub step ({step:.0f} s of log time, forward then back): {figures(scrubs)}; "
              f"target <= {SCRUB_TARGET * 1000:.0f} ms")

        baseline: list[float] = []
        checked = 0
        for m in sorted(built, key=lambda m: -m.at)[:args.baselines]:
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            b = machine.replay_from_start_sync(m.at)
            baseline.append(time.perf_counter() - t0)
            if b.open_orders != m.open_orders or {k: v for k, v in b.state.counts.items() if v} != \
                    {k: v for k, v in m.state.counts.items() if v}:
                print(f"MISMATCH at {m.at}: snapshot+replay and replay-from-start differ")
                return 1
            checked += 1
        print(f"baseline, replay from the start (latest moments of the jumps): {figures(baseline)}; "
              f"{checked} moments identical to snapshot+replay")
        if jumps and baseline:
            ratio = statistics.median(baseline) / statistics.median(jumps)
            print(f"ratio: a jump is {ratio:.0f}x faster than replaying from the start")
        ok = bool(jumps) and max(jumps) <= JUMP_TARGET and bool(scrubs) and max(scrubs) <= SCRUB_TARGET
        print("targets: " + ("met" if ok else "NOT met") + " (max jump and max scrub step)")
        return 0
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
