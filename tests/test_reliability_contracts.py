"""Promises whose breaking only shows under contention or across a restart: try-assign claims that
land in one write batch, and schedule slots missed while the console was closed."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.clock import VirtualClock
from core.dataservices.backend import DataServicesBackend
from core.runtime import Runtime
from core.schedules import Frequency, Schedule, Scheduler
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict

MONDAY_8 = 1_795_420_800.0  # 2026-11-23 08:00 UTC, a Monday


def test_try_assign_claims_in_one_write_batch_have_exactly_one_winner(store):
    """Twenty claims queued while the writer is held share one transaction: each must see the
    claim before it inside that transaction, so exactly one wins and the order names it."""

    async def scenario():
        backend = DataServicesBackend(store)
        oid, _ = await backend.create_order({"templateName": "T"})
        other, _ = await backend.create_order({"templateName": "T"})
        gate = threading.Event()
        held = asyncio.ensure_future(store.write(lambda c: gate.wait(10)))
        await asyncio.sleep(0.05)  # the writer thread is now inside the held batch
        commits = store.commit_count
        claims = [asyncio.ensure_future(backend.try_assign(oid, f"module-{i}")) for i in range(20)]
        claims.append(asyncio.ensure_future(backend.try_assign(other, "module-x")))
        await asyncio.sleep(0.05)  # every claim is queued behind the held batch
        gate.set()
        results = await asyncio.gather(*claims)
        await held
        batches = store.commit_count - commits
        assigned = store.get_order(oid).assignedTo
        return results, batches, assigned, store.get_order(other).assignedTo

    results, batches, assigned, other_assigned = asyncio.run(scenario())
    assert batches <= 2, f"the claims were meant to share a commit, took {batches}"
    assert results[:20].count(True) == 1, results
    assert assigned == f"module-{results.index(True)}"
    assert results[20] is True and other_assigned == "module-x"  # its own order: unaffected


async def _runtime(data_dir, clock, store):
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
    await rt.start(templates_dir=None)
    return rt


@pytest.mark.parametrize("catch_up", [True, False])
def test_slots_missed_while_closed_start_one_run_at_start_up(data_dir, catch_up):
    """An hourly schedule misses five slots while the console is closed: at start-up it starts
    one run (catch_up) or none, and its next run is the next slot after now either way."""

    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store, start=MONDAY_8)
        store.clock = clock
        rt = await _runtime(data_dir, clock, store)
        await rt.engine.publish(template_from_dict({"name": "Hourly", "definition": {"steps": [
            {"id": "a", "kind": "noop"}]}}))
        first = Scheduler(rt, clock)
        await first.start()
        s = await first.add(Schedule("Hourly", Frequency.HOURLY, at=":15"), who="ops")
        await clock.advance(3600)  # 08:15 runs while the console is open
        on_time = len(first.started)
        await first.close()  # the console closes at 09:00 ...
        await clock.advance(5 * 3600)  # ... and misses 09:15, 10:15, 11:15, 12:15, 13:15
        second = Scheduler(rt, clock, catch_up=catch_up)
        await second.start()
        await clock.advance(60)  # 14:01: well before the next slot
        started = list(second.started)
        next_run = second.get(s.id).next_run
        now = clock.now()
        await second.close()
        runs = [rt.engine.run_status(r).value for _, r in started]
        await rt.close()
        return on_time, started, runs, next_run, now

    on_time, started, runs, next_run, now = asyncio.run(scenario())
    assert on_time == 1
    assert len(started) == (1 if catch_up else 0)
    assert runs == ["completed"] * len(started)
    assert next_run == MONDAY_8 + 6 * 3600 + 15 * 60 and next_run > now  # 14:15


def test_an_instrument_whose_heartbeat_hung_is_trusted_again_once_it_answers(data_dir):
    """A heartbeat that never answers takes the instrument offline; once it answers again the
    instrument must stay Ready, not be declared stale forever because the hung heartbeat is
    still awaited (which took it offline every 30 s, mid-step)."""
    from dispatchkit import run_dkit

    from core.orders import ModuleStatus

    async def scenario(kit):
        sealer = kit.dispatcher.instruments["Sealer"]
        kit.drivers["Sealer"].inject(heartbeat="hang")
        await kit.until(lambda: sealer.status is ModuleStatus.Offline, limit=600)
        offline_at = kit.clock.now()
        kit.drivers["Sealer"].inject(heartbeat="ok")
        await kit.until(lambda: sealer.status is ModuleStatus.Ready, limit=600)
        await kit.clock.advance(300)  # ten stale timeouts
        flaps = kit.store.read_sync(lambda c: c.execute(
            "SELECT count(*) FROM instrument_log WHERE instrument_id = 'Sealer' AND to_status = "
            "'Offline' AND at > ?", (offline_at,)).fetchone()[0])
        await kit.publish("Seal", [{"id": "s", "kind": "Sealer.Seal", "parameters": {"duration": 120}}])
        run_id = await kit.run("Seal")
        await kit.until_done(run_id)
        return sealer.status, flaps, kit.status(run_id).value

    status, flaps, final = run_dkit(data_dir, scenario)
    assert flaps == 0, f"declared offline {flaps} more times after it answered again"
    assert status is ModuleStatus.Ready and final == "completed"
