"""Behaviours of the dispatcher, the engine's operator actions, the store and the Data Services
link that the README promises and no other test pinned down: instruments count what they
finished, a cancelled queued step never reaches its instrument, reprioritising a run reaches its
queued steps, refusals name the state they refuse, a store that never opened closes cleanly, and
the link keeps polling after an unexpected error and authenticates its heartbeats."""

from __future__ import annotations

import asyncio
import logging

import pytest
from dispatchkit import run_dkit

from core.clock import VirtualClock
from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.link import DataServicesLink
from core.dataservices.server import EmbeddedDataServices
from core.engine import RunStatus
from core.engine.control import Act, Action
from core.engine.state import Timers
from core.errors import IllegalTransitionError, StoreError
from core.orders import Order
from core.runtime import Runtime
from core.store import DB_FILENAME, Store

SEAL = [{"id": "seal", "kind": "Sealer.Seal"}]


def test_instruments_count_each_finished_step(data_dir):
    async def scenario(kit):
        await kit.publish("Seal", SEAL)
        runs = [await kit.run("Seal", {"n": i}) for i in range(3)]
        await kit.until_done(*runs)
        return [kit.status(r) for r in runs], {v.id: v for v in kit.dispatcher.view()}["Sealer"]

    statuses, sealer = run_dkit(data_dir, scenario)
    assert statuses == [RunStatus.COMPLETED] * 3
    assert (sealer.completed, sealer.failed, sealer.running) == (3, 0, ())


def test_a_cancelled_queued_step_never_reaches_its_instrument(data_dir):
    async def scenario(kit):
        await kit.dispatcher.take_out_of_service("Sealer", who="ann", reason="cleaning")
        await kit.publish("Seal", SEAL)
        run = await kit.run("Seal")
        await kit.until(lambda: kit.steps(run)["seal"]["status"] == "queued")
        queued = len(kit.dispatcher.queue)
        await kit.engine.cancel(run, who="ann", reason="not needed")
        await kit.until(lambda: len(kit.dispatcher.queue) == 0, limit=600)
        await kit.dispatcher.release("Sealer", who="ann", reason="clean")
        await kit.clock.advance(600)
        return queued, kit.status(run), {v.id: v for v in kit.dispatcher.view()}["Sealer"], kit.steps(run)

    queued, status, sealer, steps = run_dkit(data_dir, scenario)
    assert queued == 1 and status is RunStatus.CANCELLED
    assert sealer.completed == 0 and sealer.running == () and steps["seal"]["status"] == "cancelled"


def test_reprioritising_a_run_reaches_its_queued_step_and_is_refused_out_of_range(data_dir):
    async def scenario(kit):
        await kit.dispatcher.take_out_of_service("Sealer", who="ann", reason="cleaning")
        await kit.publish("Seal", SEAL)
        run = await kit.run("Seal", priority=50)
        await kit.until(lambda: kit.steps(run)["seal"]["status"] == "queued")
        step_order = kit.steps(run)["seal"]["order_id"]
        with pytest.raises(Exception, match="priority must be 0..100, not 101"):
            await kit.engine.reprioritise(run, 101, who="ann")
        await kit.engine.reprioritise(run, 90, who="ann", reason="urgent")
        return (kit.engine.get_instance(run)["priority"], kit.store.order_rows("id = ?", (step_order,), limit=1)[0][6],
                [e.action for e in kit.store.audit_entries(run)])

    run_priority, step_priority, actions = run_dkit(data_dir, scenario)
    assert run_priority == 90 and step_priority == 90
    assert actions.count("reprioritise") == 1


def test_retrying_a_step_that_did_not_fail_names_its_state(data_dir):
    async def scenario(kit):
        await kit.publish("Two", [{"id": "move", "kind": "RobotArm.MovePlate"},
                                  {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["move"]}])
        run = await kit.run("Two")
        await kit.until(lambda: kit.steps(run)["move"]["status"] == "completed")
        await kit.engine.pause(run, who="ann")
        with pytest.raises(IllegalTransitionError) as refused:
            await kit.engine.retry_step(run, "move", who="ann")
        return str(refused.value)

    message = run_dkit(data_dir, scenario)
    assert "step move of" in message and "completed -> retry" in message


def test_a_store_that_never_opened_closes_without_error(tmp_path):
    path = tmp_path / "not-a-db.sqlite3"
    path.write_bytes(b"this is not a database, and it is long enough to look like a header" * 20)
    store = Store(path)
    with pytest.raises(StoreError):
        store.open()
    store.close()  # nothing started: nothing to stop
    Store(tmp_path / "never.sqlite3").close()
    assert path.read_bytes().startswith(b"this is not a database")


def test_the_inbound_poll_survives_an_unexpected_error_and_says_so(data_dir, caplog):
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
        await runtime.start(templates_dir=None)
        link = DataServicesLink(runtime, None, poll_interval=0.02, port=0, timeout=2.0)
        real, calls, second, third = link.poll_once, [], asyncio.Event(), asyncio.Event()

        async def flaky() -> list[str]:
            calls.append(1)
            if len(calls) == 2:
                second.set()
            if len(calls) == 3:
                third.set()
            if len(calls) == 1:
                raise RuntimeError("disk hiccup")
            return await real()

        link.poll_once = flaky  # type: ignore[method-assign]
        await link.start()
        try:
            # the failed read is tried again; then an order posted to the server wakes the link
            await asyncio.wait_for(second.wait(), 10)
            async with DataServicesClient(link.state.url, timeout=5) as client:
                await client.create_order(Order(templateName="Nothing here"))
            await asyncio.wait_for(third.wait(), 10)
            return len(calls)
        finally:
            await link.stop()
            await runtime.close()

    with caplog.at_level(logging.ERROR, logger="core.dataservices.link"):
        polls = asyncio.run(scenario())
    assert polls >= 3, "the poll loop stopped after the error"
    failed = [r for r in caplog.records if r.name == "core.dataservices.link"]
    assert [r.getMessage() for r in failed] == ["Data Services inbound poll failed"]
    assert failed[0].exc_info and "disk hiccup" in str(failed[0].exc_info[1])


def test_a_remote_console_heartbeat_authenticates_and_describes_an_empty_workcell(tmp_path):
    async def scenario():
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0, token="s3cret-token") as server:
            settings = DataServicesSettings(server.url, "test")
            rt = Runtime.build(tmp_path / "a", store=Store(tmp_path / "a" / DB_FILENAME).open(),
                               workcell=None, metrics=False)
            link = DataServicesLink(rt, settings, module_id="cell-9", poll_interval=0.05, lease=30,
                                    token="s3cret-token")
            await rt.start(templates_dir=None, link=link)
            try:
                fleet = {m.beat.module_id: m.beat for m in await link.fleet()}
            finally:
                await rt.close()
        shared.close()
        return fleet

    fleet = asyncio.run(scenario())
    beat = fleet["cell-9"]
    assert (beat.queue_depth, beat.running, beat.instruments, beat.capabilities) == (0, 0, {}, ())


def test_engine_timers_due_at_the_same_instant_all_fire_in_the_order_they_were_set():
    async def scenario():
        clock = VirtualClock(start=1000.0)
        timers = Timers(clock)
        fired: list[str] = []
        task = asyncio.get_running_loop().create_task(timers.run())
        for name in ("first", "second", "third"):
            timers.at(1010.0, lambda name=name: fired.append(name))
        cancelled = timers.at(1010.0, lambda: fired.append("cancelled"))
        cancelled.cancel()
        timers.at(1005.0, lambda: fired.append("earlier"))
        await clock.advance(20)
        task.cancel()
        return fired

    assert asyncio.run(scenario()) == ["earlier", "first", "second", "third"]


def test_canceling_many_queued_steps_together_takes_them_out_without_a_task_each(data_dir):
    """Queued steps leave the dispatcher's queue at once (``withdraw``): a bulk cancel of 10,000
    waiting runs made 10,000 tasks only to be told each step was dequeued."""
    async def scenario(kit):
        await kit.dispatcher.take_out_of_service("Sealer", who="ann", reason="cleaning")
        await kit.publish("Seal", SEAL)
        runs = [await kit.run("Seal", {"n": i}) for i in range(40)]
        await kit.until(lambda: len(kit.dispatcher.queue) == 40)
        loop = asyncio.get_running_loop()
        made = []
        factory = loop.get_task_factory()
        loop.set_task_factory(lambda lp, coro, **kw: made.append(coro) or (
            factory(lp, coro, **kw) if factory else asyncio.Task(coro, loop=lp, **kw)))
        try:
            errors = await kit.engine.act([Action(act=Act.CANCEL, run_id=r, who="ann", reason="drill")
                                           for r in runs])
        finally:
            loop.set_task_factory(factory)
        queue_left = len(kit.dispatcher.queue)
        await kit.dispatcher.release("Sealer", who="ann", reason="clean")
        await kit.clock.advance(600)
        sealer = {v.id: v for v in kit.dispatcher.view()}["Sealer"]
        return errors, made, queue_left, [kit.status(r) for r in runs], sealer, \
            {kit.steps(r)["seal"]["status"] for r in runs}

    errors, made, queue_left, statuses, sealer, step_statuses = run_dkit(data_dir, scenario)
    assert errors == [None] * 40 and statuses == [RunStatus.CANCELLED] * 40
    assert queue_left == 0 and step_statuses == {"cancelled"}
    assert sealer.completed == 0 and sealer.running == ()
    assert len(made) < 10, f"{len(made)} tasks to cancel 40 queued steps"
