"""Store benchmark: commit latency per transition, with and without group commit.

Prints, for a sequential stream (one transition in flight) and for bursts (many in flight):
p50/p99 latency from "await set_status" to "committed", transitions/s, and the event loop's
worst stall while the writes happen (an asyncio sleep probe). Baseline, measured in the same run:
a bare sqlite3 loop doing one INSERT+UPDATE+COMMIT per transition on the calling thread
(what the store would cost if it ran on the event loop).

usage: python bench/store.py [--n 2000] [--burst 200] [--synchronous FULL]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.orders import Order, OrderStatus  # noqa: E402
from core.store import Store  # noqa: E402

CYCLE = [OrderStatus.Scheduled, OrderStatus.Running, OrderStatus.Complete, OrderStatus.Created]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def probe(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.001)
        lags.append(time.perf_counter() - t0 - 0.001)


async def run_case(path: Path, n: int, burst: int, group: bool, sync: str) -> dict[str, float]:
    store = Store(path, group_commit=group, synchronous=sync).open()
    try:
        orders = [o for o, _ in await asyncio.gather(
            *[store.insert_order(Order(templateName="Bench"), who="bench") for _ in range(64)])]
        lags: list[float] = []
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(lags, stop))
        latencies: list[float] = []

        async def one(i: int) -> None:
            order = orders[i % len(orders)]
            t0 = time.perf_counter()
            await store.set_status(order.identifier, CYCLE[(i // len(orders)) % len(CYCLE)], who="bench")
            latencies.append(time.perf_counter() - t0)

        commits0 = store.commit_count
        t_start = time.perf_counter()
        i = 0
        while i < n:
            k = min(burst, n - i)
            await asyncio.gather(*[one(i + j) for j in range(k)])
            i += k
        elapsed = time.perf_counter() - t_start
        stop.set()
        await prober
        return {"p50_ms": pct(latencies, 0.5) * 1000, "p99_ms": pct(latencies, 0.99) * 1000,
                "per_s": n / elapsed, "commits": store.commit_count - commits0,
                "lag_max_ms": max(lags) * 1000 if lags else 0.0,
                "lag_p99_ms": pct(lags, 0.99) * 1000 if lags else 0.0}
    finally:
        store.close()


async def loop_only(n: int, burst: int) -> dict[str, float]:
    """The same bursts of coroutines with no store at all: the loop's own share of the stall."""
    lags: list[float] = []
    stop = asyncio.Event()
    prober = asyncio.create_task(probe(lags, stop))
    loop = asyncio.get_running_loop()

    async def one() -> None:
        fut = loop.create_future()
        loop.call_later(0.0005, fut.set_result, None)
        await fut

    i = 0
    while i < n:
        k = min(burst, n - i)
        await asyncio.gather(*[one() for _ in range(k)])
        i += k
    stop.set()
    await prober
    return {"lag_max_ms": max(lags) * 1000 if lags else 0.0}


def bare_baseline(path: Path, n: int, sync: str) -> dict[str, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute("CREATE TABLE o (id TEXT PRIMARY KEY, status INT, data TEXT)")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, order_id TEXT, s INT, at REAL)")
    conn.executemany("INSERT INTO o VALUES (?,?,?)", [(f"O{i}", 0, "{}") for i in range(64)])
    lat = []
    t_start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute("UPDATE o SET status=? WHERE id=?", (i % 4, f"O{i % 64}"))
        conn.execute("INSERT INTO t (order_id, s, at) VALUES (?,?,?)", (f"O{i % 64}", i % 4, time.time()))
        conn.execute("COMMIT")
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - t_start
    conn.close()
    return {"p50_ms": pct(lat, 0.5) * 1000, "p99_ms": pct(lat, 0.99) * 1000, "per_s": n / elapsed,
            "lag_max_ms": max(lat) * 1000}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--synchronous", default="FULL")
    ap.add_argument("--switch-interval", type=float, default=0.001,
                    help="sys.setswitchinterval (GIL hand-off); 0.001 as the console sets it")
    args = ap.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    tmp = Path(tempfile.mkdtemp(prefix="lc-bench-"))
    base = bare_baseline(tmp / "bare.sqlite3", args.n, args.synchronous)
    print(f"store benchmark: n={args.n} transitions, synchronous={args.synchronous}, "
          f"GIL switch interval {sys.getswitchinterval() * 1000:.1f} ms")
    print(f"{'case':38} {'p50 ms':>8} {'p99 ms':>8} {'trans/s':>9} {'commits':>8} {'loop max ms':>11}  ratio/s vs bare")
    print(f"{'baseline: bare sqlite3 on the loop':38} {base['p50_ms']:8.3f} {base['p99_ms']:8.3f} "
          f"{base['per_s']:9.0f} {args.n:8d} {base['lag_max_ms']:11.3f}  1.00")
    for label, burst, group in [("sequential, group commit", 1, True),
                                ("sequential, commit each", 1, False),
                                (f"burst {args.burst}, group commit", args.burst, True),
                                (f"burst {args.burst}, commit each", args.burst, False)]:
        r = asyncio.run(run_case(tmp / f"{label.replace(' ', '_').replace(',', '')}.sqlite3",
                                 args.n, burst, group, args.synchronous))
        print(f"{label:38} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['per_s']:9.0f} "
              f"{int(r['commits']):8d} {r['lag_max_ms']:11.3f}  {r['per_s'] / base['per_s']:.2f}")
    own = asyncio.run(loop_only(args.n, args.burst))
    print(f"{'loop only: same bursts, no store':38} {'':8} {'':8} {'':9} {'':8} {own['lag_max_ms']:11.3f}")
    print("loop max ms: for the store cases, the worst event-loop stall seen by a 1 ms sleep probe "
          "while writing; for the baseline, the time the loop would be blocked per commit")


if __name__ == "__main__":
    main()
