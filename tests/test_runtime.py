"""The facade the console uses: actions by order id, bulk actions, why-waiting, instruments."""

from __future__ import annotations

import asyncio

from dispatchkit import WORKCELL

from core.clock import VirtualClock
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict
from core.workcell import parse_workcell


def run_rt(data_dir, scenario):
    async def main():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1)
        await rt.start(templates_dir=None)
        await clock.settle()
        try:
            return await scenario(rt, clock)
        finally:
            await rt.close()

    return asyncio.run(main())


FLOW = {"name": "Flow", "inputs": [{"name": "plate", "type": "string"}], "definition": {"steps": [
    {"id": "read", "kind": "PlateReader.ReadPlate"},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]}]}}


def test_actions_by_order_id_and_bulk(data_dir):
    async def scenario(rt, clock):
        await rt.engine.publish(template_from_dict(FLOW))
        runs = [await rt.start_run("Flow", {"plate": f"P{i}"}, who="ann") for i in range(30)]
        await clock.advance(1)
        first = rt.engine.get_instance(runs[0])
        seal_order = first["steps"][1]["order_id"]
        waiting = rt.why_waiting(seal_order)
        queued_run = runs[-1]
        queued_read = rt.engine.get_instance(queued_run)["steps"][0]["order_id"]
        queued_reasons = rt.why_waiting(queued_read)
        preview = rt.preview([queued_read, queued_run, runs[-2]])
        seen = []
        results = await rt.bulk("cancel", runs[10:], who="ann", reason="reagent expired",
                                progress=lambda n, total: seen.append((n, total)))
        again = await rt.bulk("cancel", runs[10:12], who="ann", reason="twice")
        await rt.reprioritise(runs[5], 95, who="ann", reason="rush")
        usage = rt.template_usage()
        assert usage["Flow"]["runs"] == 30 and usage["Flow"]["last_used"] is not None
        await clock.run_until(lambda: all(not rt.run_is_active(r) for r in runs[:10]))
        return runs, waiting, queued_reasons, preview, results, again, seen

    runs, waiting, queued_reasons, preview, results, again, seen = run_rt(data_dir, scenario)
    assert waiting[0].startswith("seal waits for step read (") and waiting[0].endswith("which is running")
    assert any("behind" in r and "higher priority" in r for r in queued_reasons)
    assert preview == {"orders": 3, "runs": 2, "run_ids": sorted({runs[-1], runs[-2]})}
    assert len(results) == 20 and all(r.ok for r in results)
    assert seen[-1] == (20, 20)
    assert [r.ok for r in again] == [False, False]
    assert "illegal transition cancelled -> cancelled" in again[0].message


def test_instrument_actions_go_through_the_dispatcher(data_dir):
    async def scenario(rt, clock):
        res = await rt.instrument_action("Reader1", "disable", who="bo", reason="lamp")
        view = {v.id: v for v in rt.instruments()}
        await rt.instrument_action("Reader1", "enable", who="bo")
        await rt.instrument_action("Sealer", "out_of_service", who="bo", reason="cleaning")
        view2 = {v.id: v for v in rt.instruments()}
        return res, view, view2

    res, view, view2 = run_rt(data_dir, scenario)
    assert res.ok and view["Reader1"].enabled is False and view["Reader1"].detail == "disabled by the operator"
    assert view2["Reader1"].enabled and view2["Sealer"].in_service is False
