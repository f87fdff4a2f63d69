"""Bulk action benchmark, headless: cancel N real runs through ``Runtime.bulk``.

N runs of a two-step template are created and started on the demo workcell (their first steps
wait in the dispatcher's queue or run), then all are canceled in one bulk action while a probe
measures the event loop's lag. Printed: wall time, the loop thread's and the store writer's CPU
time, commits, loop lag p50/p99/max, garbage collection passes during the action, and the ratio
against a baseline measured in the same run: the same transitions and audit entries written
straight through the store in chunks of 400, set-based as the engine writes them (a
``WriteBatch``: the writes alone, no engine, no events), on a second store with the same runs.

usage: python bench/bulk.py [--runs 10000] [--chunk 400]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.orders import OrderStatus  # noqa: E402
from core.runtime import Runtime  # noqa: E402
from core.store import Store, WriteBatch  # noqa: E402
from core.templates import template_from_dict  # noqa: E402

FLOW = {"name": "Bench flow", "inputs": [{"name": "plate", "type": "string"}], "definition": {"steps": [
    {"id": "read", "kind": "PlateReader.ReadPlate"},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]}]}}


def writer_cpu(store: Store) -> float:
    thread = store._thread  # noqa: SLF001 - the writer thread's own CPU clock
    assert thread is not None and thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def make_runs(data_dir: Path, n: int) -> tuple[Runtime, list[str]]:
    rt = Runtime.build(data_dir)
    await rt.start(templates_dir=None)
    await rt.engine.publish(template_from_dict(FLOW))
    runs = []
    for k in range(n):
        run_id = await rt.engine.create_instance("Bench flow", {"plate": f"B{k}"}, who="bench")
        await rt.engine.execute_workflow(run_id)
        runs.append(run_id)
    await asyncio.sleep(0.5)
    gc.collect()
    gc.freeze()  # as the console does once its orders are loaded
    return rt, runs


async def bulk(data_dir: Path, n: int, chunk: int | None = None) -> dict[str, Any]:
    rt, runs = await make_runs(data_dir, n)
    if chunk is not None:
        rt.bulk_chunk = chunk
    lags: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)

    passes: list[float] = []
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                started.append(time.perf_counter())
            elif started:
                passes.append(time.perf_counter() - started.pop())

    prober = asyncio.create_task(probe())
    gc.callbacks.append(on_gc)
    commits, loop0, writer0 = rt.store.commit_count, time.thread_time(), writer_cpu(rt.store)
    t0 = time.perf_counter()
    results = await rt.bulk("cancel", runs, who="bench", reason="benchmark")
    seconds = time.perf_counter() - t0
    figures = {"seconds": seconds, "loop_cpu": time.thread_time() - loop0,
               "writer_cpu": writer_cpu(rt.store) - writer0, "commits": rt.store.commit_count - commits,
               "ok": sum(r.ok for r in results), "lag_p50": pct(lags, 0.5), "lag_p99": pct(lags, 0.99),
               "lag_max": max(lags, default=0.0), "gc_full": passes}
    gc.callbacks.remove(on_gc)
    done.set()
    await prober
    await rt.close()
    gc.unfreeze()
    return figures


async def floor(data_dir: Path, n: int) -> dict[str, Any]:
    """The same transitions and audit entries straight through the store (no engine, no events)."""
    rt, runs = await make_runs(data_dir, n)
    children = {run: rt.child_ids(run) for run in runs}
    store = rt.store
    writer0, t0 = writer_cpu(store), time.perf_counter()
    for i in range(0, len(runs), 400):
        ops = []
        for run in runs[i:i + 400]:
            for order_id in (run, *children[run]):
                ops.append(store.status_op(order_id, OrderStatus.Canceled, who="bench",
                                           why="Canceled by bench: benchmark"))
            ops.append(store.audit_op("bench", "cancel", run, "benchmark"))
        await store.write(functools.partial(_write_batch, ops))
    figures = {"seconds": time.perf_counter() - t0, "writer_cpu": writer_cpu(store) - writer0}
    await rt.close()
    gc.unfreeze()
    return figures


def _write_batch(ops: list[Any], conn: Any) -> None:
    batch = WriteBatch(conn, [("order", op.order_id) for op in ops if hasattr(op, "order_id")])
    for op in ops:
        op.into(batch)
    batch.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--chunk", type=int, default=None, help="orders per transaction (Runtime.bulk_chunk)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lc-bench-bulk-"))
    b = asyncio.run(bulk(tmp / "bulk", args.runs, args.chunk))
    f = asyncio.run(floor(tmp / "floor", args.runs))
    print(f"bulk cancel of {args.runs:,} runs (2 steps each) through Runtime.bulk, headless")
    print(f"  Runtime.bulk : {b['seconds']:.2f} s ({b['ok']:,} canceled), loop CPU {b['loop_cpu']:.2f} s, "
          f"writer CPU {b['writer_cpu']:.2f} s, {b['commits']} commits")
    print(f"  loop lag     : p50 {b['lag_p50'] * 1000:.1f} ms, p99 {b['lag_p99'] * 1000:.1f} ms, "
          f"max {b['lag_max'] * 1000:.1f} ms")
    full = b["gc_full"]
    print(f"  full garbage collections during it: {len(full)}"
          + (f", longest {max(full) * 1000:.0f} ms" if full else ""))
    print(f"  baseline, the same writes straight through the store: {f['seconds']:.2f} s, "
          f"writer CPU {f['writer_cpu']:.2f} s")
    print(f"  ratio bulk/baseline time: {b['seconds'] / f['seconds']:.2f}x")
    print(f"  targets: <= 2 s: {'met' if b['seconds'] <= 2 else 'NOT met'}; lag p99 <= 16 ms: "
          f"{'met' if b['lag_p99'] <= 0.016 else 'NOT met'}; lag max <= 50 ms: "
          f"{'met' if b['lag_max'] <= 0.05 else 'NOT met'}")


if __name__ == "__main__":
    main()
