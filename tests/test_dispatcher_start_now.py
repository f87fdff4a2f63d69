"""Start now: a queued order waiting for its FirstAvailableSlot goes as soon as an instrument fits,
audited; an order that is not waiting in the queue is refused and nothing is recorded. On the
simulated workcell, a real store and the virtual clock."""

from __future__ import annotations

import asyncio

import pytest
from dispatchkit import run_dkit

from core.clock import to_datetime
from core.dispatcher import Job, JobStatus
from core.errors import StateError
from core.orders import Order

HOUR = 3600.0


def slot_job(kit, order_id: str, later: float = HOUR) -> Job:
    """A read waiting for its slot ``later`` seconds from now (as a Data Services order carries it)."""
    at = kit.clock.now() + later
    order = Order(identifier=order_id, templateName="PlateReader.ReadPlate",
                  schedulingStrategy="FirstAvailableSlot", scheduledStartTime=to_datetime(at))
    return Job(order_id, order, "PlateReader.ReadPlate", scheduled=at)


def test_start_now_lets_a_scheduled_order_go_at_once_and_audits_who_and_why(data_dir):
    async def scenario(kit):
        asked = kit.clock.now()
        early, late = slot_job(kit, "Order_early"), slot_job(kit, "Order_late")
        tasks = [asyncio.ensure_future(kit.dispatcher.submit(job)) for job in (early, late)]
        await kit.clock.advance(30)
        before = (early.status, kit.dispatcher.queue.next_scheduled)
        await kit.dispatcher.start_now("Order_early", who="ann", reason="the plate is ready")
        began = kit.clock.now()
        await kit.until(tasks[0].done, limit=600)
        finished = kit.clock.now()
        still = late.status  # the other one keeps its slot
        await kit.until(tasks[1].done, limit=2 * HOUR)
        return asked, before, began, finished, still, early, late, kit.store.audit_entries()

    asked, before, began, finished, still, early, late, audit = run_dkit(data_dir, scenario)
    assert before == (JobStatus.QUEUED, pytest.approx(asked + HOUR))
    assert early.status is JobStatus.COMPLETED and early.scheduled is None
    assert finished - began < 600, "it went at once, not at its slot an hour later"
    assert still is JobStatus.QUEUED and late.scheduled == pytest.approx(asked + HOUR)
    assert late.status is JobStatus.COMPLETED
    assert [(a.who, a.action, a.target, a.reason) for a in audit if a.action == "start now"] == [
        ("ann", "start now", "Order_early", "the plate is ready")]


def test_start_now_refuses_an_order_not_waiting_in_the_queue_and_records_nothing(data_dir):
    async def scenario(kit):
        await kit.publish("Read", [{"id": "read", "kind": "PlateReader.ReadPlate"}])
        job = slot_job(kit, "Order_soon", later=5)
        task = asyncio.ensure_future(kit.dispatcher.submit(job))
        await kit.clock.advance(10)  # its slot came: running now
        refusals = []
        for order_id in ("Order_soon", "Order_unknown"):
            with pytest.raises(StateError) as refused:
                await kit.dispatcher.start_now(order_id, who="ann")
            refusals.append(str(refused.value))
        status = job.status
        await kit.until(task.done)
        return status, refusals, kit.store.audit_entries()

    status, refusals, audit = run_dkit(data_dir, scenario)
    assert status is JobStatus.RUNNING
    assert refusals == ["Order_soon is not waiting in the queue", "Order_unknown is not waiting in the queue"]
    assert not [a for a in audit if a.action == "start now"]


def test_a_step_request_for_a_slot_waits_for_it_only_when_it_asks_for_first_available_slot(data_dir):
    """The dispatcher as the engine's executor: an order with FirstAvailableSlot and a start time
    an hour away waits for it; the same time with ImmediateExecution goes at once."""
    from core.engine.types import StepRequest
    from core.orders import SchedulingStrategy

    def request(order_id: str, strategy: SchedulingStrategy, at: float) -> StepRequest:
        order = Order(identifier=order_id, templateName="PlateReader.ReadPlate", schedulingStrategy=strategy,
                      scheduledStartTime=to_datetime(at))
        return StepRequest(run_id="R", step_id=order_id, order_id=order_id, kind="PlateReader.ReadPlate",
                           parameters={}, attempt=1, order=order)

    async def scenario(kit):
        at = kit.clock.now() + HOUR
        slot = asyncio.ensure_future(kit.dispatcher.execute(
            request("Order_slot", SchedulingStrategy.FirstAvailableSlot, at), lambda *_: None))
        now = asyncio.ensure_future(kit.dispatcher.execute(
            request("Order_now", SchedulingStrategy.ImmediateExecution, at), lambda *_: None))
        await kit.until(now.done, limit=600)
        early = (slot.done(), kit.dispatcher.why_waiting("Order_slot"))
        await kit.until(slot.done, limit=2 * HOUR)
        return early, kit.clock.now() - (at - HOUR), slot.result()

    (slot_done, reasons), waited, outputs = run_dkit(data_dir, scenario)
    assert not slot_done and any(r.startswith("scheduled for ") for r in reasons)
    assert waited >= HOUR and "absorbance" in outputs


def test_claim_reserves_a_free_instrument_and_the_extra_capabilities_at_once(data_dir):
    """``claim`` (the engine's fast path for a step that would go at once): a read that also
    needs the arm gets a reader and the arm together; a second one finds the arm taken and is
    left to the queue; released, the arm is free again."""
    from core.engine.types import StepRequest

    def request(order_id: str) -> StepRequest:
        return StepRequest(run_id="R", step_id=order_id, order_id=order_id, kind="PlateReader.ReadPlate",
                           parameters={}, attempt=1, reserve=("RobotArm.MovePlate",),
                           order=Order(identifier=order_id, templateName="PlateReader.ReadPlate"))

    async def scenario(kit):
        first, second = request("Order_a"), request("Order_b")
        got = kit.dispatcher.claim(first)
        arm_taken = not kit.dispatcher.instruments["Arm"].accepts_work
        again = kit.dispatcher.claim(second)
        kit.dispatcher.unclaim(first)
        return got, arm_taken, again, kit.dispatcher.instruments["Arm"].accepts_work

    got, arm_taken, again, arm_free = run_dkit(data_dir, scenario)
    assert got in ("Reader1", "Reader2") and arm_taken
    assert again is None, "no arm left: it waits in the queue"
    assert arm_free
