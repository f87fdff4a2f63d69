"""Fleet benchmark: 1, 2 and 4 headless consoles on one standalone Data Services.

For each fleet size N: ``labconsole data-services`` and N ``labconsole headless`` consoles (each a
simulated workcell with two plate readers, clock x400, so a 20 s read takes 0.05 s), then 15 x N
"Fleet Read" orders created at once over HTTP. Measures orders/hour (orders completed / time
from the first create to the last Complete), claim latency (order created -> claim mark stored,
p50/p99), and the Data Services' own request latency under that load (a GET every 0.1 s, p50/p99,
and idle before the consoles start). Prints the scaling against linear and, below 0.85 x linear,
the bottleneck with its figure. Each size is cut off after 25 s (what finished by then counts),
so the whole run stays under two minutes.

usage: python bench/fleet.py [--sizes 1,2,4] [--per-console 15] [--cutoff 30]
       python bench/fleet.py --scenario [--orders 3000] [--over 60] [--lease 10] [--speed 200]

``--scenario`` runs tests/test_fleet_three.py at full size instead: one Data Services, three
consoles, a LIMS (Biosero's client) creating 3,000 orders over 60 s, one console SIGKILLed at a
quarter complete and restarted a lease later; it prints orders completed exactly once, doubled
and lost, the time until all were Complete, reclaim latency, claim latency, the Data Services'
answer time and the CPU each process spent per order, and what bounds the throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import fleetkit  # noqa: E402

from core.dataservices.client import DataServicesClient  # noqa: E402
from core.dataservices.leases import CLAIM_TOPIC, ClaimMark  # noqa: E402
from core.errors import DataServicesError  # noqa: E402
from core.orders import Order, OrderStatus, Parameter  # noqa: E402

cpu_seconds, runqueue_seconds = fleetkit.cpu_seconds, fleetkit.runqueue_seconds


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def probe(url: str, stop: asyncio.Event, out: list[float]) -> None:
    async with DataServicesClient(url) as c:
        while not stop.is_set():
            t = time.perf_counter()
            await c.version()
            out.append((time.perf_counter() - t) * 1000)
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass


async def idle_latency(url: str) -> list[float]:
    out: list[float] = []
    async with DataServicesClient(url) as c:
        for _ in range(20):
            t = time.perf_counter()
            await c.version()
            out.append((time.perf_counter() - t) * 1000)
    return out


async def load(url: str, count: int, cutoff: float) -> dict[str, object]:
    stop, latencies = asyncio.Event(), []
    prober = asyncio.create_task(probe(url, stop, latencies))
    async with DataServicesClient(url, timeout=30) as c:
        t0 = time.monotonic()
        sem = asyncio.Semaphore(8)

        async def create(i: int) -> str:
            async with sem:
                return await c.create_order(Order(templateName="Fleet Read", createdBy="bench",
                                                  inputParameters=[Parameter(name="plate", value=f"P{i}")]))

        ids = await asyncio.gather(*(create(i) for i in range(count)))
        done = 0
        while time.monotonic() - t0 < cutoff:
            orders = [o for o in await c.orders(limit=10_000) if o.createdBy == "bench"]
            done = sum(o.status is OrderStatus.Complete for o in orders)
            if done == count:
                break
            await asyncio.sleep(0.25)
        elapsed = time.monotonic() - t0
        stop.set()
        await prober
        created = {o.identifier: o.creationTime for o in await c.orders(limit=10_000) if o.identifier in set(ids)}
        claims = []
        for e in await c.query_events(topic=CLAIM_TOPIC, limit=100_000):
            m = ClaimMark.from_event(e)
            when = created.get(m.order_id) if m is not None else None
            if m is not None and m.kind == "claim" and when is not None:
                claims.append(max(0.0, m.at - when.timestamp()) * 1000)
    return {"done": done, "elapsed": elapsed, "claims": claims, "latency": latencies}


def run_size(n: int, per_console: int, cutoff: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"fleet-bench-{n}-") as tmp:
        base = Path(tmp)
        ds, url = fleetkit.data_services(base)
        procs = []
        try:
            idle = asyncio.run(idle_latency(url))
            for i in range(n):
                procs.append(fleetkit.console(base, f"cell-{i + 1}", url, "reader", speed=400, lease=10,
                                              poll=0.2))
            before = (cpu_seconds(ds.proc.pid), sum(cpu_seconds(p.proc.pid) for p in procs))
            waited = (runqueue_seconds(ds.proc.pid), sum(runqueue_seconds(p.proc.pid) for p in procs))
            result = asyncio.run(load(url, per_console * n, cutoff))
            wall = float(result["elapsed"])  # type: ignore[arg-type]
            result["ds_cpu"] = (cpu_seconds(ds.proc.pid) - before[0]) / wall
            result["consoles_cpu"] = (sum(cpu_seconds(p.proc.pid) for p in procs) - before[1]) / wall
            result["ds_wait"] = (runqueue_seconds(ds.proc.pid) - waited[0]) / wall
            result["consoles_wait"] = (sum(runqueue_seconds(p.proc.pid) for p in procs) - waited[1]) / wall
        finally:
            for p in procs:
                p.stop()
            ds.stop()
        sent = [fleetkit.requests_sent(p.log) for p in procs]
        result["requests"] = sum(r for r in sent if r is not None) if None not in sent else None
        busy = [fleetkit.outbox_busy(p.log) for p in procs]
        result["outbox"] = (sum(b for b in busy if b is not None) / len(busy) / float(result["elapsed"])  # type: ignore[arg-type]
                            if procs and None not in busy else float("nan"))
    result["idle"] = idle
    return result


def per_order(r: dict[str, object]) -> dict[str, float]:
    """Milliseconds per completed order: CPU and time waiting for a CPU, of the Data Services and
    of the consoles together; requests the consoles sent per order (nan if not known)."""
    done, wall = max(1, int(r["done"])), float(r["elapsed"])  # type: ignore[call-overload,arg-type]
    sent = r.get("requests")
    return {key: 1000 * float(r[key]) * wall / done  # type: ignore[arg-type]
            for key in ("ds_cpu", "consoles_cpu", "ds_wait", "consoles_wait")} | {
        "requests": float(sent) / done if sent is not None else float("nan"),  # type: ignore[arg-type]
        "outbox": float(r["outbox"])}  # type: ignore[arg-type]


class Prober:
    """The Data Services' answer time (a GET every 0.5 s) on a thread of its own, meanwhile."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, url: str) -> None:
        async def loop() -> None:
            async with DataServicesClient(url, timeout=60) as c:
                while not self._stop.is_set():
                    t = time.perf_counter()
                    try:
                        await c.version()
                    except DataServicesError:  # stopped at the end of the scenario
                        return
                    self.latencies.append((time.perf_counter() - t) * 1000)
                    await asyncio.sleep(0.5)

        self._thread = threading.Thread(target=lambda: asyncio.run(loop()), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(70)


def scenario(orders: int, over: float, lease: float, speed: float, timeout: float) -> int:
    """Issue 19's proof at full size: see :func:`fleetkit.three_workcells`."""
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print(f"scenario: 3 consoles + LIMS creating {orders} orders over {over:g} s, lease {lease:g} s, "
          f"clock x{speed:g}; cell-both SIGKILLed at a quarter complete, restarted {2 * lease + 1:g} s later",
          flush=True)
    prober = Prober()
    with tempfile.TemporaryDirectory(prefix="fleet-scenario-") as tmp:
        try:
            run = fleetkit.three_workcells(Path(tmp), orders, over, lease=lease, speed=speed, timeout=timeout,
                                           probe=2.0, progress=lambda text: print(text, flush=True),
                                           on_url=prober.start)
        finally:
            prober.stop()
    done = len(run.created) - len(run.lost)
    per_cell: dict[str, int] = {}
    for oid in run.created:
        holder = run.holders.get(oid)
        if holder is not None and holder.module_id:
            per_cell[holder.module_id] = per_cell.get(holder.module_id, 0) + 1
    claims = [max(0.0, run.first_claim[o] - c.timestamp()) * 1000 for o in run.created
              if o in run.first_claim and (c := run.final[o].creationTime) is not None]
    rate = done / run.seconds
    lat = prober.latencies
    print(f"orders created: {len(run.created)} in {run.create_seconds:.1f} s "
          f"({len(run.created) / run.create_seconds:.1f}/s; asked: {orders / over:.1f}/s; each create of "
          "Biosero's client waits for the Data Services' answer)")
    print(f"completed exactly once: {run.exactly_once}; doubled: {len(run.doubled)}; lost (not Complete): "
          f"{len(run.lost)}; on a workcell that cannot run it or never started: {len(run.wrong_cell)}")
    print(f"all done after {run.seconds:.0f} s: {rate:.2f} orders/s, {rate * 3600:.0f} orders/h "
          f"(asked: {orders / over:.1f} orders/s)")
    print("per workcell: " + ", ".join(f"{k} {v}" for k, v in sorted(per_cell.items())))
    if run.reclaims:
        print(f"taken over from the killed console: {len(run.reclaims)}, after {run.reclaims[0]:.1f}-"
              f"{run.reclaims[-1]:.1f} s from the kill (lease {run.lease:g} s; restarted after "
              f"{run.restarted_at - run.killed_at:.1f} s)")
    else:
        print("taken over from the killed console: none (it held nothing unstarted that another could run)")
    print(f"claim latency (created -> first claim mark) p50 {pct(claims, .5):.0f} ms, p99 {pct(claims, .99):.0f} ms")
    print(f"Data Services answer time (GET every 0.5 s) p50 {pct(lat, .5):.0f} ms, p99 {pct(lat, .99):.0f} ms")
    cores = os.cpu_count() or 1
    busy = sum(run.cpu.values())
    print("CPU per order: " + ", ".join(
        f"{name} {1000 * secs / max(1, per_cell.get(name, done) if name != 'data-services' else done):.0f} ms"
        for name, secs in sorted(run.cpu.items())) + " (a console's: per order it ran)")
    waited = sum(run.waited.values())
    print("waiting for a core per order: " + ", ".join(
        f"{name} {1000 * secs / max(1, per_cell.get(name, done) if name != 'data-services' else done):.0f} ms"
        for name, secs in sorted(run.waited.items())) + f" ({waited:.0f} s in all, against {busy:.0f} s running)")
    for name in sorted(run.requests):
        ran = per_cell.get(name, 0)
        if ran and name in run.outbox:
            print(f"{name}: {run.requests[name]} requests to the Data Services"
                  + (" since its restart" if name == "cell-both" else f", {run.requests[name] / ran:.0f} per order")
                  + f"; its outbox delivering {run.outbox[name]:.0f} s of the {run.seconds:.0f} s")
    per_order = busy / max(1, done)
    print(f"CPU used: {busy:.0f} s of {run.seconds * cores:.0f} s the {cores} cores had "
          f"({busy / run.seconds:.0%} of {100 * cores}%); {1000 * per_order:.0f} ms of CPU per order in all: "
          f"the {cores} cores carry at most {cores / per_order:.1f} orders/s")
    if orders / over > rate:
        bound = cores / per_order
        if busy / run.seconds >= 0.8 * cores or waited >= busy:
            print(f"bottleneck: CPU. {orders / over:.1f} orders/s would need {orders / over * per_order:.1f} "
                  f"cores at {1000 * per_order:.0f} ms of CPU per order; here {bound:.1f} orders/s at most, "
                  f"and the fleet's processes waited {1000 * waited / max(1, done):.0f} ms per order for a "
                  "core the machine's other work held")
        else:
            print(f"bottleneck: not CPU alone ({busy / run.seconds:.0%} of {100 * cores}% used): each order's "
                  f"chain of requests waits on the Data Services (answer time p50 {pct(lat, .5):.0f} ms, p99 "
                  f"{pct(lat, .99):.0f} ms)")
    ok = not run.lost and not run.doubled and not run.wrong_cell
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2,4")
    parser.add_argument("--per-console", type=int, default=15)
    parser.add_argument("--cutoff", type=float, default=25.0)
    parser.add_argument("--scenario", action="store_true",
                        help="instead: three consoles, a LIMS creating --orders orders over --over "
                             "seconds, one console SIGKILLed and restarted (tests/test_fleet_three.py "
                             "at full size)")
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--over", type=float, default=60.0)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--speed", type=float, default=200.0)
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args()
    if args.scenario:
        return scenario(args.orders, args.over, args.lease, args.speed, args.timeout)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'consoles':>8} {'orders':>7} {'s':>6} {'orders/h':>9} {'vs linear':>9} "
          f"{'claim p50':>9} {'claim p99':>9} {'DS p50':>7} {'DS p99':>7} {'DS idle':>7} {'DS cpu':>6} "
          f"{'cons cpu':>8}")
    base_rate = None
    rows = []
    for n in sizes:
        r = run_size(n, args.per_console, args.cutoff)
        rate = float(r["done"]) / float(r["elapsed"]) * 3600  # type: ignore[arg-type]
        base_rate = base_rate or rate / n
        scaling = rate / (base_rate * n) if base_rate else float("nan")
        claims, lat, idle = r["claims"], r["latency"], r["idle"]
        rows.append((n, scaling, lat, idle, r["ds_cpu"], r["consoles_cpu"], per_order(r)))
        print(f"{n:>8} {r['done']:>3}/{args.per_console * n:<3} {r['elapsed']:>6.1f} {rate:>9.0f} "
              f"{scaling:>8.2f}x {pct(claims, .5):>7.0f}ms {pct(claims, .99):>7.0f}ms "  # type: ignore[arg-type]
              f"{pct(lat, .5):>5.0f}ms {pct(lat, .99):>5.0f}ms {statistics.median(idle):>5.0f}ms "  # type: ignore[arg-type]
              f"{float(r['ds_cpu']):>6.0%} {float(r['consoles_cpu']):>8.0%}", flush=True)  # type: ignore[arg-type]
    print("per order completed (ms): CPU of the Data Services / of the consoles; time they spent ready to "
          "run but waiting for a core (the machine's run queue); requests the consoles sent")
    for n, *_rest, po in rows:
        print(f"{n:>8} consoles: DS CPU {po['ds_cpu']:.0f}, consoles CPU {po['consoles_cpu']:.0f}; waiting for "
              f"a core: DS {po['ds_wait']:.0f}, consoles {po['consoles_wait']:.0f}; {po['requests']:.0f} requests; "
              f"each console's outbox delivering {po['outbox']:.0%} of the time")
    n, scaling, lat, idle, ds_cpu, consoles_cpu, po = rows[-1]
    if scaling >= 0.85:
        print(f"scaling to {n} consoles: {scaling:.2f} x linear (target 0.85)")
    else:
        busy = float(ds_cpu) + float(consoles_cpu)  # type: ignore[arg-type]
        cores = os.cpu_count() or 1
        share = (f"the Data Services used {float(ds_cpu):.0%} of a core and the {n} consoles "  # type: ignore[arg-type]
                 f"{float(consoles_cpu):.0%}: {busy:.0%} of the {100 * cores}% the {cores} cores "  # type: ignore[arg-type]
                 f"have (load average {os.getloadavg()[0]:.1f} with the machine's other work)")
        cpu_ms, wait_ms = po["ds_cpu"] + po["consoles_cpu"], po["ds_wait"] + po["consoles_wait"]
        if po["outbox"] >= 0.8:
            print(f"scaling to {n} consoles: {scaling:.2f} x linear, below 0.85. Bottleneck: each console's "
                  f"outbox, delivering {po['outbox']:.0%} of the time: it sends its orders' creates, claims and "
                  f"statuses one request after another ({po['requests']:.0f} requests per order in all), each "
                  f"waiting on the Data Services (answer time p50 {pct(lat, .5):.0f} ms, p99 {pct(lat, .99):.0f} "
                  f"ms), and an order is Complete there only once its outbox delivered that; CPU per order "
                  f"{cpu_ms:.0f} ms, waiting for a core {wait_ms:.0f} ms ({share})")
        elif busy >= 0.8 * cores:
            print(f"scaling to {n} consoles: {scaling:.2f} x linear, below 0.85. Bottleneck: CPU; {share}")
        elif wait_ms >= cpu_ms:
            print(f"scaling to {n} consoles: {scaling:.2f} x linear, below 0.85. Bottleneck: the cores of this "
                  f"shared machine. Each order took {cpu_ms:.0f} ms of CPU (Data Services {po['ds_cpu']:.0f}, "
                  f"consoles {po['consoles_cpu']:.0f}), and the fleet's processes spent {wait_ms:.0f} ms per "
                  f"order ready to run but waiting for a core, which the machine's other work held "
                  f"({share}); each order's {po['requests']:.0f} requests wait on the Data Services one after "
                  f"the other (answer time p50 {pct(lat, .5):.0f} ms, p99 {pct(lat, .99):.0f} ms)")
        else:
            print(f"scaling to {n} consoles: {scaling:.2f} x linear, below 0.85. Bottleneck: the Data "
                  f"Services' answer time, {pct(lat, .5):.0f} ms p50 / {pct(lat, .99):.0f} ms p99 under "
                  f"this load, which every order's chain of requests waits on one after the other "
                  f"(claim, claim and start marks, the outbox's creates and statuses); not CPU: {share}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
