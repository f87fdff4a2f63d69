"""Engine benchmark: a fan-out DAG (1 -> N -> 1) of zero-duration steps, every transition committed.

Prints steps/s, orchestration ms per step transition, dispatch latency p50/p99 (step ready ->
executor called), and ratios against two baselines measured in the same invocation:

(a) a bare ``asyncio.Queue`` producer/consumer doing the same SQLite writes through the same store
    (the floor: what persistence alone costs);
(b) the Prefect 3 flow of ``shared/peers/prefect_dag.py`` on the same DAG shape, in its own venv
    (``.bench-venv-prefect``; created with ``make bench-prefect-venv``). Skipped with a notice
    when that venv is missing.

usage: python bench/engine.py [--n 200] [--synchronous FULL] [--prefect-n 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.clock import SystemClock  # noqa: E402
from core.dispatcher import Dispatcher  # noqa: E402
from core.engine import Engine, StepRequest, started  # noqa: E402
from core.ledger import Ledger  # noqa: E402
from core.orders import Order, OrderStatus  # noqa: E402
from core.store import Store  # noqa: E402
from core.templates import template_from_dict  # noqa: E402
from core.workcell import build_drivers, parse_workcell  # noqa: E402

PEER = ROOT.parent / "shared" / "peers" / "prefect_dag.py"
PREFECT_PY = ROOT / ".bench-venv-prefect" / "bin" / "python"


class InstantExecutor:
    """An instrument that finishes at once (measures orchestration, not work)."""

    async def execute(self, request: StepRequest, progress: Any) -> dict[str, Any]:
        await started(request, "bench")
        return {}

    async def cancel(self, request: StepRequest) -> bool:
        return True


class ClaimingInstantExecutor(InstantExecutor):
    """The same, with an instrument that is always free to claim (``ClaimingExecutor``): a
    step's Running transition is committed with the decision that queued it, as the dispatcher
    does when an instrument is free and nothing waits ahead of the step."""

    def claim(self, request: StepRequest) -> str | None:
        return "bench"

    def unclaim(self, request: StepRequest) -> None:
        pass


def fan_out(n: int) -> dict[str, Any]:
    steps = [{"id": "first", "kind": "Bench.Step"}]
    steps += [{"id": f"mid{i}", "kind": "Bench.Step", "depends_on": ["first"]} for i in range(n)]
    steps.append({"id": "last", "kind": "Bench.Step", "depends_on": [f"mid{i}" for i in range(n)]})
    return {"name": f"FanOut{n}", "definition": {"steps": steps}}


def chain(n: int) -> dict[str, Any]:
    steps = [{"id": "s0", "kind": "Bench.Step"}]
    steps += [{"id": f"s{i}", "kind": "Bench.Step", "depends_on": [f"s{i - 1}"]} for i in range(1, n)]
    return {"name": f"Chain{n}", "definition": {"steps": steps}}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


async def run_engine(path: Path, n: int, sync: str, shape: str = "fan-out",
                     claim: bool = True) -> dict[str, float]:
    store = Store(path, synchronous=sync).open()
    core = Ledger(store)
    engine = Engine(core, ClaimingInstantExecutor() if claim else InstantExecutor())
    await engine.start()
    template = template_from_dict(fan_out(n) if shape == "fan-out" else chain(n))
    await engine.publish(template)
    run_id = await engine.create_instance(template.name, {})
    transitions_before = len(store.transitions())
    t0 = time.perf_counter()
    await engine.execute_workflow(run_id, async_execution=False)
    elapsed = time.perf_counter() - t0
    status = engine.run_status(run_id).value
    transitions = len(store.transitions()) - transitions_before
    lat = engine.step_dispatch_latencies
    await engine.close()
    store.close()
    assert status == "completed", status
    count = len(template.steps)
    return {"seconds": elapsed, "steps_per_s": count / elapsed, "transitions": transitions,
            "ms_per_transition": elapsed / transitions * 1000, "p50_ms": pct(lat, 0.5) * 1000,
            "p99_ms": pct(lat, 0.99) * 1000, "first_ms": min(lat) * 1000 if lat else 0.0}


INSTANT_CELL = """
name: bench cell
instruments:
  - {id: Bench1, kind: Bench, driver: simulated, capabilities: {Bench.Step: {duration: 0s, jitter: 0s}}}
"""


async def run_dispatched_chain(path: Path, n: int, sync: str) -> dict[str, float]:
    """The chain through the real dispatcher and a simulated instrument that takes no time."""
    store = Store(path, synchronous=sync).open()
    core = Ledger(store)
    drivers = build_drivers(parse_workcell(INSTANT_CELL, "bench-cell.yaml"), SystemClock(), core.bus)
    dispatcher = Dispatcher(store, core.bus, drivers)
    engine = Engine(core, dispatcher)
    await dispatcher.start()
    await engine.start()
    template = template_from_dict(chain(n))
    await engine.publish(template)
    run_id = await engine.create_instance(template.name, {})
    commits = store.commit_count
    t0 = time.perf_counter()
    await engine.execute_workflow(run_id, async_execution=False)
    elapsed = time.perf_counter() - t0
    commits = store.commit_count - commits
    status = engine.run_status(run_id).value
    await engine.close()
    await dispatcher.close()
    store.close()
    assert status == "completed", status
    return {"seconds": elapsed, "steps_per_s": n / elapsed, "commits_per_step": commits / n}


async def run_bare(path: Path, n: int, sync: str) -> dict[str, float]:
    """Same number of orders and status writes, driven by an asyncio.Queue, no engine."""
    store = Store(path, synchronous=sync).open()
    orders = [o for o, _ in await asyncio.gather(*[
        store.insert_order(Order(templateName="Bench.Step"), who="bench") for _ in range(n + 2)])]
    queue: asyncio.Queue[Order | None] = asyncio.Queue()
    cycle = (OrderStatus.Scheduled, OrderStatus.Running, OrderStatus.Complete)

    async def worker() -> None:
        while (order := await queue.get()) is not None:
            for status in cycle[1:]:
                await store.set_status(order.identifier or "", status, who="bench")

    async def step(order: Order) -> None:
        await store.set_status(order.identifier or "", cycle[0], who="bench")
        await queue.put(order)

    t0 = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(n)]
    await step(orders[0])
    await asyncio.gather(*[step(o) for o in orders[1:-1]])
    await step(orders[-1])
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - t0
    store.close()
    return {"seconds": elapsed, "steps_per_s": (n + 2) / elapsed}


def run_prefect(n: int) -> dict[str, float] | None:
    if not PREFECT_PY.exists() or not PEER.exists():
        return None
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_HOME=tempfile.mkdtemp())
    t0 = time.perf_counter()
    result = subprocess.run([str(PREFECT_PY), str(PEER), str(n)], capture_output=True, text=True,
                            timeout=1800, env=env)
    wall = time.perf_counter() - t0
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("prefect fan-out")), None)
    if line is None:
        print("prefect run failed:", result.stderr[-1500:])
        return None
    m = re.search(r": ([\d.]+)s, (\d+) tasks/s", line)
    assert m, line
    return {"seconds": float(m.group(1)), "steps_per_s": float(m.group(2)), "wall": wall, "line": line}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--prefect-n", type=int, default=200)
    ap.add_argument("--synchronous", default="FULL")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args()
    sys.setswitchinterval(0.001)
    tmp = Path(tempfile.mkdtemp(prefix="lc-bench-engine-"))
    eng = asyncio.run(run_engine(tmp / "engine.sqlite3", args.n, args.synchronous))
    bare = asyncio.run(run_bare(tmp / "bare.sqlite3", args.n, args.synchronous))
    small = asyncio.run(run_engine(tmp / "engine-small.sqlite3", args.prefect_n, args.synchronous))
    seq = asyncio.run(run_engine(tmp / "engine-chain.sqlite3", 200, args.synchronous, "chain"))
    unclaimed = asyncio.run(run_engine(tmp / "engine-unclaimed.sqlite3", args.n, args.synchronous, claim=False))
    seq_unclaimed = asyncio.run(run_engine(tmp / "engine-chain-unclaimed.sqlite3", 200, args.synchronous,
                                           "chain", claim=False))
    dispatched = asyncio.run(run_dispatched_chain(tmp / "engine-dispatched.sqlite3", 200, args.synchronous))
    prefect = run_prefect(args.prefect_n)
    print(f"engine benchmark: fan-out 1 -> {args.n} -> 1, zero-duration steps, synchronous={args.synchronous}")
    print(f"  labconsole engine : {eng['seconds']:.3f} s, {eng['steps_per_s']:.0f} steps/s, "
          f"{eng['transitions']} transitions, {eng['ms_per_transition']:.3f} ms per transition")
    print(f"  dispatch latency  : p50 {eng['p50_ms']:.3f} ms, p99 {eng['p99_ms']:.3f} ms (step ready -> "
          f"executor called; all {args.n} middle steps become ready at once and are queued in waves)")
    print(f"  first dispatch of the {args.n}-wide fan-out: {eng['first_ms']:.3f} ms (target <= 5 ms)")
    print(f"  chain of 200 steps: {seq['steps_per_s']:.0f} steps/s, dispatch latency p50 {seq['p50_ms']:.3f} ms, "
          f"p99 {seq['p99_ms']:.3f} ms (one step ready at a time)")
    print(f"  without claiming (the executor reports each start, one more commit per step): fan-out "
          f"{unclaimed['steps_per_s']:.0f} steps/s, chain {seq_unclaimed['steps_per_s']:.0f} steps/s")
    print(f"  chain of 200 through the dispatcher (simulated instrument, no duration): "
          f"{dispatched['steps_per_s']:.0f} steps/s, {dispatched['commits_per_step']:.2f} commits per step")
    print(f"  bare asyncio.Queue: {bare['seconds']:.3f} s, {bare['steps_per_s']:.0f} steps/s "
          f"(same order writes, no engine)")
    print(f"  ratio engine/bare time: {eng['seconds'] / bare['seconds']:.2f}x")
    if prefect:
        print(f"  prefect 3 (n={args.prefect_n}): {prefect['line']}  [wall {prefect['wall']:.1f} s incl. start-up]")
        print(f"  labconsole at n={args.prefect_n}: {small['seconds']:.3f} s, {small['steps_per_s']:.0f} steps/s")
        print(f"  ratio labconsole/prefect steps/s at n={args.prefect_n}: "
              f"{small['steps_per_s'] / prefect['steps_per_s']:.1f}x (target >= 20x)")
    else:
        print("  prefect: not measured (.bench-venv-prefect missing: make bench-prefect-venv)")
    ratio = eng["seconds"] / bare["seconds"]
    checks = [(f"fan-out >= 4000 steps/s ({eng['steps_per_s']:.0f})", eng["steps_per_s"] >= 4000),
              (f"fan-out <= 1.3x the bare loop ({ratio:.2f}x)", ratio <= 1.3),
              (f"first dispatch of the fan-out <= 5 ms ({eng['first_ms']:.1f} ms)", eng["first_ms"] <= 5),
              (f"chain >= 1500 steps/s ({seq['steps_per_s']:.0f})", seq["steps_per_s"] >= 1500),
              (f"one-at-a-time dispatch p99 <= 5 ms ({seq['p99_ms']:.1f} ms)", seq["p99_ms"] <= 5)]
    print("  targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks))
    if args.json:
        print(json.dumps({"engine": eng, "bare": bare, "small": small, "chain": seq, "prefect": prefect,
                          "unclaimed": unclaimed, "chain_unclaimed": seq_unclaimed,
                          "dispatched_chain": dispatched}))


if __name__ == "__main__":
    main()
