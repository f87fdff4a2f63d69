"""Seed 003 (CasareRPA Orchestrator): the OrchestratorEngine methods and the JobQueue API of the
seed's tables, over a console runtime with a small simulated workcell. The seed's code blocks are
class outlines; what they name is exercised here."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from core.clock import VirtualClock
from core.compat.seed003 import JobQueue, JobScheduler, OrchestratorEngine, Schedule
from core.dispatcher import Job, JobStatus
from core.errors import IllegalTransitionError, NotFoundError
from core.orders import Order
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict
from core.workcell import parse_workcell

CELL = """
name: robots
seed: 3
heartbeat_interval: 1s
stale_timeout: 60s
instruments:
  - {id: Robot1, kind: LiquidHandler, driver: simulated, capabilities: {LiquidHandler.Transfer: {duration: 50ms, jitter: 0s}}}
  - {id: Robot2, kind: LiquidHandler, driver: simulated, capabilities: {LiquidHandler.Transfer: {duration: 50ms, jitter: 0s}}}
"""
TRANSFER = {"name": "Transfer", "definition": {"steps": [{"id": "move", "kind": "LiquidHandler.Transfer"}]}}


def _with_orchestrator(data_dir, body, **options):
    async def main():
        runtime = Runtime.build(data_dir, workcell=parse_workcell(CELL))
        await runtime.start(templates_dir=None)
        await runtime.engine.publish(template_from_dict(TRANSFER))
        orchestrator = OrchestratorEngine(runtime, **options)
        await orchestrator.start()
        try:
            return await asyncio.wait_for(body(orchestrator, runtime), 60)
        finally:
            await orchestrator.stop()
            await runtime.close()

    return asyncio.run(main())


async def _until(predicate, timeout=20.0):
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not reached in time")


def test_jobs_robots_and_metrics(data_dir):
    async def body(orchestrator, runtime):
        job_id = await orchestrator.submit_job("Transfer", {}, priority="high")
        await _until(lambda: orchestrator.get_job_status(job_id) == "completed")
        await orchestrator.unregister_robot("Robot1")
        await orchestrator.unregister_robot("Robot2")
        waiting = await orchestrator.submit_job({"name": "Transfer"}, priority=10)
        await _until(lambda: orchestrator.get_job_status(waiting) == "queued")
        await _until(lambda: orchestrator.queue.get_by_status(JobStatus.QUEUED))
        queued = [j.order_id for j in orchestrator.queue.get_by_status(JobStatus.QUEUED)]
        peeked = orchestrator.queue.peek()
        robot = await orchestrator.register_robot("Robot2")
        await _until(lambda: orchestrator.get_job_status(waiting) == "completed")
        third = await orchestrator.submit_job("Transfer")
        cancelled = await orchestrator.cancel_job(third)
        with pytest.raises(NotFoundError, match="no robot Robot9 in the workcell .*Robot1, Robot2"):
            await orchestrator.register_robot("Robot9")
        metrics = orchestrator.get_dashboard_metrics()
        return queued, peeked, robot, cancelled, orchestrator.get_job_status(third), metrics, \
            runtime.engine.get_instance(waiting)

    queued, peeked, robot, cancelled, third, metrics, waited = _with_orchestrator(data_dir, body)
    step_order = waited["steps"][0]["order_id"]
    assert queued == [step_order] and peeked.order_id == step_order
    assert robot.id == "Robot2" and waited["steps"][0]["instrument"] == "Robot2"
    assert cancelled is True and third == "cancelled"
    assert metrics.total_robots == 2 and metrics.online_robots == 2


def test_a_job_no_robot_takes_ends_timeout(data_dir):
    async def body(orchestrator, runtime):
        for robot in ("Robot1", "Robot2"):
            await orchestrator.unregister_robot(robot)
        job_id = await orchestrator.submit_job("Transfer")
        await _until(lambda: orchestrator.get_job_status(job_id) == "timeout")
        return runtime.engine.get_instance(job_id)

    run = _with_orchestrator(data_dir, body, default_job_timeout=0.3, timeout_check_interval=0.05)
    assert run["status"] == "failed"
    assert "no robot took it within the job timeout (0.3 s)" in run["steps"][0]["error"]


def test_the_queue_api_and_its_state_machine():
    queue = JobQueue()

    def job(order_id, priority, biosero=0):
        return Job(order_id, Order(identifier=order_id), "LiquidHandler.Transfer", priority=priority,
                   biosero=biosero)

    queue.enqueue(job("low", 10))
    queue.enqueue(job("high", 90))
    queue.enqueue(job("elevated", 5, biosero=-1))  # Elevated goes first whatever its number
    assert queue.peek().order_id == "elevated" and len(queue) == 3
    assert [queue.dequeue().order_id for _ in range(2)] == ["elevated", "high"]
    assert {j.order_id for j in queue.get_by_status("dispatched")} == {"elevated", "high"}
    queue.update_status("high", JobStatus.RUNNING)
    queue.update_status("high", "completed")
    with pytest.raises(IllegalTransitionError):
        queue.update_status("elevated", JobStatus.COMPLETED)  # dispatched -> completed skips running
    queue.update_status("low", JobStatus.TIMEOUT)
    assert queue.peek() is None and queue.dequeue() is None


def test_the_job_scheduler_adds_updates_pauses_resumes_and_removes(data_dir):
    """The seed's JobScheduler table, method by method, on a virtual clock (Monday 08:00 Berlin)."""
    berlin = ZoneInfo("Europe/Berlin")
    monday_8 = datetime(2026, 11, 23, 8, 0, tzinfo=berlin).timestamp()

    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store, start=monday_8)
        store.clock = clock
        runtime = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
        await runtime.start(templates_dir=None)
        await runtime.engine.publish(template_from_dict(
            {"name": "Nightly", "definition": {"steps": [{"id": "a", "kind": "noop"}]}}))
        scheduler = JobScheduler(runtime)
        await scheduler.start()
        schedule = Schedule(schedule_id="weekday-9", workflow_id="Nightly",
                            frequency=JobScheduler.ScheduleFrequency.CRON, cron_expression="0 9 * * 1-5",
                            timezone="Europe/Berlin", variables={"plate": "P1"})
        added = await scheduler.add_schedule(schedule)
        first = scheduler.get_next_run("weekday-9")
        schedule.cron_expression = "0 0 10 * * 1-5"             # 6 fields: 10:00:00 weekdays
        updated = await scheduler.update_schedule(schedule)
        moved = scheduler.get_next_run("weekday-9")
        paused = await scheduler.pause_schedule("weekday-9")
        await clock.advance(3 * 3600)                          # 08:00 -> 11:00: paused, nothing
        while_paused = scheduler.get_next_run("weekday-9"), list(scheduler.scheduler.started)
        resumed = await scheduler.resume_schedule("weekday-9")
        await clock.advance(24 * 3600)                         # Tuesday 10:00 fires
        fired = [run for _, run in scheduler.scheduler.started]
        inputs = [runtime.engine.get_instance(r)["input_data"] for r in fired]
        with pytest.raises(ValueError, match="weekday-9: robot_id: per-schedule robot affinity"):
            await scheduler.update_schedule(Schedule("weekday-9", "Nightly", "daily", "09:00", robot_id="R1"))
        await scheduler.remove_schedule("weekday-9")
        with pytest.raises(NotFoundError, match="no schedule 'weekday-9'"):
            scheduler.get_next_run("weekday-9")
        audit = [a.action for a in runtime.audit("weekday-9")]
        await scheduler.stop()
        await runtime.close()
        return added, first, updated, moved, paused, while_paused, resumed, fired, inputs, audit

    added, first, updated, moved, paused, while_paused, resumed, fired, inputs, audit = asyncio.run(scenario())
    assert added.schedule_id == "weekday-9" and added.enabled and added.next_run == first
    assert first.strftime("%a %H:%M") == "Mon 09:00" and first.tzinfo == berlin
    assert updated.cron_expression == "0 0 10 * * 1-5" and moved.strftime("%a %H:%M") == "Mon 10:00"
    assert paused.enabled is False and while_paused == (None, [])
    assert resumed.enabled and resumed.next_run.strftime("%a %H:%M") == "Tue 10:00"
    assert len(fired) == 1 and inputs == [{"plate": "P1"}]
    assert audit == ["add schedule", "edit schedule", "pause schedule", "resume schedule", "remove schedule"]
