"""Three workcells, one Data Services: a LIMS (Biosero's own client) creates 300 orders; every one
completes exactly once on a workcell that can run it, through a SIGKILL and restart of one console.

All real processes on 127.0.0.1: ``labconsole data-services``, three ``labconsole headless``
consoles with simulated instruments on an accelerated clock (a 20 s step takes 0.1 s), and
``tests/helpers/fleet_lims.py`` in .bdm-venv (biosero-data-models' OrderClient).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import Counter

import fleetkit
from helpers.bdm_support import BDM_PYTHON, check_bdm_venv

from core.dataservices.client import DataServicesClient
from core.dataservices.leases import CLAIM_TOPIC, ClaimMark, walk
from core.orders import Order, OrderStatus

ORDERS = 90
CAN_RUN = {"Fleet Read": {"cell-read", "cell-both"}, "Fleet Seal": {"cell-seal", "cell-both"},
           "Fleet Read Seal": {"cell-both"}}
CELLS = {"cell-read": "reader", "cell-seal": "sealer", "cell-both": "both"}


async def _all_orders(c: DataServicesClient) -> list[Order]:
    out: list[Order] = []
    while True:
        page = await c.orders(limit=1000, offset=len(out))
        out += page
        if len(page) < 1000:
            return out


async def _marks(c: DataServicesClient) -> dict[str, list[ClaimMark]]:
    out: dict[str, list[ClaimMark]] = {}
    offset = 0
    while True:
        events = await c.query_events(topic=CLAIM_TOPIC, limit=5000, offset=offset)
        for e in events:
            m = ClaimMark.from_event(e)
            if m is not None:
                out.setdefault(m.order_id, []).append(m)
        if len(events) < 5000:
            return out
        offset += len(events)


def test_three_workcells_run_every_order_exactly_once_through_a_kill_and_restart(tmp_path):
    check_bdm_venv()
    ds, url = fleetkit.data_services(tmp_path)
    procs: dict[str, fleetkit.Proc] = {}
    lims = None
    try:
        for name, cell in CELLS.items():
            procs[name] = fleetkit.console(tmp_path, name, url, cell, speed=200, lease=3)
        lims = subprocess.Popen([str(BDM_PYTHON), str(fleetkit.ROOT / "tests" / "helpers" / "fleet_lims.py"),
                                 url, str(ORDERS), "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

        async def until_complete(count: int, timeout: float) -> list[Order]:
            async with DataServicesClient(url, timeout=30) as c:
                deadline = time.monotonic() + timeout
                while True:
                    orders = [o for o in await _all_orders(c) if o.createdBy == "lims"]
                    done = [o for o in orders if o.status is OrderStatus.Complete]
                    if len(done) >= count:
                        return orders
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{len(done)} of {count} orders complete after {timeout} s: "
                                             f"{Counter(o.status.name for o in orders)}")
                    await asyncio.sleep(0.3)

        asyncio.run(until_complete(ORDERS // 4, 120))
        procs["cell-both"].kill()  # mid-way, with orders claimed, running and queued
        time.sleep(1.0)
        procs["cell-both"] = fleetkit.console(tmp_path, "cell-both", url, "both", speed=200, lease=3)
        out, err = lims.communicate(timeout=60)
        assert lims.returncode == 0, err[-3000:]
        created = json.loads(out.strip().splitlines()[-1])
        orders = asyncio.run(until_complete(ORDERS, 180))

        async def evidence() -> tuple[list[Order], dict[str, list[ClaimMark]]]:
            async with DataServicesClient(url, timeout=30) as c:
                return await _all_orders(c), await _marks(c)

        everything, marks = asyncio.run(evidence())
    finally:
        if lims is not None and lims.poll() is None:
            lims.kill()
        for p in procs.values():
            p.stop()
        ds.stop()

    assert len(created["ids"]) == ORDERS and {o.identifier for o in orders} == set(created["ids"])
    runs_of: Counter[str] = Counter()
    for o in everything:  # each console's own run of an order is created under it, by that console
        if o.parentIdentifier in created["templates"] and o.status is OrderStatus.Complete:
            runs_of[o.parentIdentifier] += 1
    for o in orders:
        oid = o.identifier or ""
        assert o.status is OrderStatus.Complete, (oid, o.status, o.statusDetails)
        h = walk(marks.get(oid, []))
        assert h.started, f"{oid}: no console recorded its start"
        assert h.module_id in CAN_RUN[created["templates"][oid]], (oid, created["templates"][oid], h.module_id)
        assert runs_of[oid] == 1, f"{oid} was run to completion {runs_of[oid]} times"
    log = (tmp_path / "cell-both" / "out.log").read_text()
    assert "Traceback" not in log, log[-3000:]
