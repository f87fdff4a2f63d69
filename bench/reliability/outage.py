"""A Data Services outage in remote mode: runs keep starting while the server is away.

usage: python bench/reliability/outage.py [--seconds N] [--rate R]

The console (workcell of fast simulated instruments) mirrors its runs to a Data Services server
on 127.0.0.1. Runs start at R per second before, during and after an outage of N seconds (the
server stopped, then started again on the same port and store). Once the outbox has drained,
every local order is compared with its twin: lost (no twin, or a different status or outputs),
duplicated (more orders in Data Services than the console made), and the drain time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.link import DataServicesLink
from core.dataservices.server import EmbeddedDataServices
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict
from core.workcell import parse_workcell

CELL = """
name: outage cell
seed: 1
heartbeat_interval: 1s
stale_timeout: 10s
instruments:
  - {id: Sealer1, kind: Sealer, driver: simulated, max_concurrent: 4, capabilities: {Sealer.Seal: {duration: 100ms, jitter: 0s}}}
"""


async def until(predicate: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(step)
    return True


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=2.0, help="runs started per second")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="labconsole-outage-"))
    (work / "console").mkdir()
    (work / "remote").mkdir()
    remote_store = Store(work / "remote" / DB_FILENAME).open()
    server = EmbeddedDataServices(remote_store, port=0)
    url = await server.start()
    port = server.bound_address[1]
    store = Store(work / "console" / DB_FILENAME).open()
    runtime = Runtime.build(work / "console", store=store, workcell=parse_workcell(CELL))
    await runtime.start(templates_dir=None)
    link = DataServicesLink(runtime, DataServicesSettings(url, "outage"), poll_interval=0.2,
                            timeout=2.0)
    await link.start()
    await runtime.engine.publish(template_from_dict({"name": "Quick", "definition": {"steps": [
        {"id": "a", "kind": "Sealer.Seal"}, {"id": "b", "kind": "noop", "depends_on": ["a"]}]}}))
    runs: list[str] = []

    async def start_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            runs.append(await runtime.start_run("Quick", who="op", allow_duplicate=True))
            await asyncio.sleep(1.0 / args.rate)

    try:
        await start_for(3)
        await server.stop()  # the outage
        down_at = time.monotonic()
        await start_for(args.seconds)
        depth = link.outbox_depth()
        server = EmbeddedDataServices(remote_store, port=port)
        await server.start()  # back, same address
        back = time.monotonic()
        outage = back - down_at
        await start_for(3)
        settled = await until(lambda: all(not runtime.run_is_active(r) for r in runs), 60)
        drained = await until(lambda: link.outbox_depth() == 0, 300)
        drain_seconds = time.monotonic() - back
        local = {}
        for run_id in runs:
            local[run_id] = runtime.store.get_order(run_id)
            for step in runtime.engine.get_instance(run_id)["steps"]:
                local[step["order_id"]] = runtime.store.get_order(step["order_id"])
        links = dict(runtime.store.read_sync(lambda c: c.execute(
            "SELECT local_id, remote_id FROM ds_links").fetchall()))
        client = DataServicesClient(url)
        lost = 0
        for lid, order in local.items():
            if lid not in links:
                lost += 1
                continue
            twin = await client.get_order(links[lid])
            mine = {p.name: p.value for p in order.outputParameters}
            theirs = {p.name: p.value for p in twin.outputParameters if p.name in mine}
            lost += twin.status is not order.status or theirs != mine
        remote_all = await client.orders(limit=100_000)
        await client.close()
        mirrored = [o for o in remote_all if (o.createdBy or "").startswith("labconsole ")]
        duplicated = max(0, len(mirrored) - len(local)) + (len(links) - len(set(links.values())))
    finally:
        await link.stop()
        await runtime.close()
        await server.stop()
        remote_store.close()
    ok_lost = lost == 0 and settled and drained
    print("RESULT " + json.dumps({"orders": len(local), "outbox_at_return": depth, "rows": [
        {"figure": f"Data Services outage {outage:.0f} s, remote mode: orders lost",
         "value": f"{lost} of {len(local)} (outbox {depth} at return)", "target": "0", "ok": ok_lost},
        {"figure": "Data Services outage: orders duplicated", "value": f"{duplicated}",
         "target": "0", "ok": duplicated == 0},
        {"figure": "Data Services outage: drain time after the server returned",
         "value": f"{drain_seconds:.1f} s", "target": "drained", "ok": drained}]}))


if __name__ == "__main__":
    asyncio.run(main())
