"""Dispatch benchmark: decision time with 100,000 queued orders.

Fills the queue with N jobs over several capabilities (10 % Elevated, numeric priorities 0-100,
a third restricted to a module with one of the five strategies), then times single dispatch
decisions (`Dispatcher._dispatch_one`: pick the best eligible job and instrument, reserve,
start) while the queue stays at ~N. Baseline in the same run: the same decision made by
scanning every queued job (min over the list), which is what an unindexed queue costs.

usage: python bench/dispatch.py [--n 100000] [--decisions 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.dispatcher import Dispatcher, Job  # noqa: E402
from core.drivers.base import DriverInfo  # noqa: E402
from core.events import EventBus  # noqa: E402
from core.orders import ModuleRestrictionStrategy, ModuleStatus, Order  # noqa: E402
from core.store import Store  # noqa: E402

CAPS = ["PlateReader.ReadPlate", "LiquidHandler.Transfer", "Sealer.Seal", "RobotArm.MovePlate",
        "Incubator.Incubate", "Centrifuge.Spin"]


class ParkedDriver:
    """An instrument whose orders never finish (so the decision, not the work, is measured)."""

    def __init__(self, name: str, caps: list[str]) -> None:
        self.info = DriverInfo(name=name, kind=name.rstrip("0123456789"), capabilities=frozenset(caps))
        self.max_concurrent = 1_000_000

    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def heartbeat(self) -> float:
        return 0.0
    async def cancel(self, order_id: str) -> bool:
        return True
    async def status(self) -> Any: ...
    async def execute(self, order: Order, progress: Any) -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def main(n: int, decisions: int) -> None:
    rng = random.Random(1)
    tmp = Path(tempfile.mkdtemp(prefix="lc-bench-dispatch-"))
    store = Store(tmp / "d.sqlite3").open()
    drivers = {f"{c.split('.')[0]}{k}": ParkedDriver(f"{c.split('.')[0]}{k}", [c]) for c in CAPS for k in (1, 2)}
    d = Dispatcher(store, EventBus(), drivers, heartbeat_interval=3600, stale_timeout=7200)
    await d.start()
    for inst in d.instruments.values():
        inst.status = ModuleStatus.Ready
    modules = list(drivers)
    strategies = list(ModuleRestrictionStrategy)

    def make(i: int) -> Job:
        cap = rng.choice(CAPS)
        restrict: tuple[str, ...] = ()
        strategy = ModuleRestrictionStrategy.NoRestriction
        if rng.random() < 0.33:
            restrict = (rng.choice([m for m in modules if m.startswith(cap.split(".")[0])]),)
            strategy = rng.choice(strategies)
        return Job(f"O{i}", Order(identifier=f"O{i}", templateName=cap), cap, restrict=restrict,
                   strategy=strategy, biosero=-1 if rng.random() < 0.1 else 0, priority=rng.randint(0, 100))

    t0 = time.perf_counter()
    jobs = [make(i) for i in range(n + decisions)]
    for job in jobs:
        d.queue.enqueue(job, 0.0)
    fill = time.perf_counter() - t0

    times = []
    now = d.clock.now()
    for _ in range(decisions):
        t = time.perf_counter()
        made = d._dispatch_one(now)  # noqa: SLF001 - the decision itself is what is timed
        times.append(time.perf_counter() - t)
        assert made
    queued = len(d.queue)

    # baseline: the same decision by scanning the whole queue
    pending = [j for j in jobs if j.status.value == "queued"]
    scan = []
    for _ in range(50):
        t = time.perf_counter()
        best = min(pending, key=Job.key)
        pending.remove(best)
        scan.append(time.perf_counter() - t)
    await d.close()
    store.close()
    p50, p99 = pct(times, 0.5) * 1000, pct(times, 0.99) * 1000
    print(f"dispatch benchmark: {n:,} queued jobs over {len(CAPS)} capabilities, {len(drivers)} instruments")
    print(f"  enqueue: {fill / (n + decisions) * 1e6:.1f} us per job")
    print(f"  decision (indexed heaps): p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {max(times) * 1000:.3f} ms "
          f"over {decisions} decisions, queue still {queued:,}")
    print(f"  baseline full scan per decision: p50 {pct(scan, 0.5) * 1000:.3f} ms "
          f"(ratio scan/indexed p50: {pct(scan, 0.5) * 1000 / p50:.0f}x)")
    print(f"  target p99 < 1 ms: {'met' if p99 < 1 else 'NOT met'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--decisions", type=int, default=2000)
    a = ap.parse_args()
    asyncio.run(main(a.n, a.decisions))
