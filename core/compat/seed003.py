"""Seed 003's ``OrchestratorEngine`` and ``JobQueue`` (CasareRPA) over the runtime.

::

    from core.compat.seed003 import OrchestratorEngine

    orchestrator = OrchestratorEngine(runtime, load_balancing="least_loaded", default_job_timeout=3600)
    await orchestrator.start()
    job_id = await orchestrator.submit_job("ELISA Readout", {"plate_id": "P1"}, priority="high")
    print(orchestrator.get_job_status(job_id))        # pending, queued, running, completed, timeout ...
    print(orchestrator.get_dashboard_metrics().success_rate)

Names map as follows. A *job* is a run of a workflow template (``workflow`` is its name, or an
object with ``name``); its steps are the jobs of the dispatcher's queue. *Robots* are the
workcell's instruments (local drivers, SiLA servers or remote robot agents): ``register_robot``
puts one in service (enabled, accepting work), ``unregister_robot`` takes it out of service after
its current job, both audited. ``default_job_timeout`` (seconds): a step that waits in the queue
that long without an instrument taking it leaves the queue as TIMEOUT, and its job ends
``timeout``; checked every ``timeout_check_interval`` seconds. ``dispatch_interval`` is accepted
for compatibility: the dispatcher decides on every change, not on an interval.

``JobQueue`` is the seed's queue API over labconsole's queue (:class:`core.dispatcher.JobQueue`,
the same heaps and state machine the dispatcher uses): ``enqueue``, ``dequeue``, ``peek``,
``update_status``, ``get_by_status``.

``JobScheduler`` is the seed's scheduler over labconsole's schedules (:class:`core.schedules.Scheduler`,
kept in the store and fired by the console's schedule loop)::

    scheduler = JobScheduler(runtime)          # the runtime's own scheduler, or a new one
    await scheduler.start()
    schedule = Schedule(schedule_id="nightly", workflow_id="ELISA Readout",
                        frequency=ScheduleFrequency.CRON, cron_expression="0 9 * * 1-5")
    await scheduler.add_schedule(schedule)
    await scheduler.pause_schedule("nightly"); await scheduler.resume_schedule("nightly")
    print(scheduler.get_next_run("nightly"))   # a datetime in the schedule's time zone

``workflow_id`` is the template's name, ``variables`` the run's inputs. For the frequencies other
than ``cron``, ``cron_expression`` holds when in the period (``"09:30"`` daily, ``"mon 09:30"``
weekly, ``":15"`` hourly, an ISO time once). ``robot_id`` (per-schedule affinity) is refused: the
dispatcher chooses the instrument (``load_balancing="affinity"`` keeps a workflow on one).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from core.clock import Clock, SystemClock
from core.dispatcher import FINAL, Job, JobStatus, LoadBalancing
from core.dispatcher import JobQueue as _Queue
from core.engine import StepFailure
from core.errors import NotFoundError, StateError
from core.metrics import DashboardMetrics
from core.schedules import Frequency as ScheduleFrequency
from core.schedules import Schedule as _Schedule
from core.schedules import Scheduler

PRIORITIES = {"low": 25, "normal": 50, "high": 75, "critical": 100}
TIMEOUT_CODE = "JobTimeout"


class JobQueue:
    """The seed's queue: priority order (Elevated first, then 0-100, then time, then FIFO)."""

    def __init__(self, clock: Clock | None = None, queue: _Queue | None = None) -> None:
        self.clock = clock or SystemClock()
        self.queue = queue if queue is not None else _Queue()  # an empty queue is falsy

    def enqueue(self, job: Job) -> None:
        self.queue.enqueue(job, self.clock.now())

    def peek(self) -> Job | None:
        """The job served next, left in the queue."""
        self.queue.release_due(self.clock.now())
        heads = [job for hk in list(self.queue.heaps) if (job := self.queue.head(hk)) is not None]
        return min(heads, key=Job.key, default=None)

    def dequeue(self) -> Job | None:
        """Take the next job out of the queue (DISPATCHED)."""
        job = self.peek()
        if job is not None:
            self.queue.take(job, JobStatus.DISPATCHED)
        return job

    def update_status(self, job_id: str, status: JobStatus | str) -> Job:
        """Move a job along the state machine; an illegal transition raises."""
        job = self.queue.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no job {job_id} in the queue")
        status = JobStatus(status)
        if job.status is JobStatus.QUEUED:
            self.queue.take(job, status)
        else:
            job.to(status)
        if status in FINAL:
            self.queue.forget(job)
        return job

    def get_by_status(self, status: JobStatus | str) -> list[Job]:
        wanted = JobStatus(status)
        return [j for j in self.queue.jobs.values() if j.status is wanted]

    def __len__(self) -> int:
        return len(self.queue)


class OrchestratorEngine:
    """The seed's orchestrator over a :class:`core.runtime.Runtime` with a workcell."""

    def __init__(self, service: Any, load_balancing: str = "least_loaded", dispatch_interval: int = 5,
                 timeout_check_interval: int = 30, default_job_timeout: int = 3600) -> None:
        self.runtime = service
        self.dispatcher = service.dispatcher
        if self.dispatcher is None:
            raise StateError("OrchestratorEngine needs a runtime with a workcell (robots to dispatch to)")
        self.dispatcher.strategy = LoadBalancing(load_balancing)
        self.dispatch_interval = dispatch_interval
        self.timeout_check_interval = timeout_check_interval
        self.default_job_timeout = default_job_timeout
        self.queue = JobQueue(self.dispatcher.clock, self.dispatcher.queue)
        self._checker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._checker is None:
            self._checker = asyncio.create_task(self._check_loop(), name="job-timeouts")

    async def stop(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            await asyncio.gather(self._checker, return_exceptions=True)
            self._checker = None

    async def _check_loop(self) -> None:
        while True:
            self.check_timeouts()
            await self.dispatcher.clock.sleep(self.timeout_check_interval)

    def check_timeouts(self) -> list[str]:
        """End every step queued longer than ``default_job_timeout`` as TIMEOUT; their order ids."""
        now = self.dispatcher.clock.now()
        out = []
        for job in self.queue.get_by_status(JobStatus.QUEUED):
            if now - job.submitted >= self.default_job_timeout:
                self.queue.update_status(job.order_id, JobStatus.TIMEOUT)
                if job.future is not None and not job.future.done():
                    job.future.set_exception(StepFailure(
                        f"no robot took it within the job timeout ({self.default_job_timeout:g} s)",
                        TIMEOUT_CODE, retryable=False))
                out.append(job.order_id)
        return out

    # ------------------------------------------------------------------ jobs

    async def submit_job(self, workflow: Any, variables: dict[str, Any] | None = None,
                         priority: int | str = 50) -> str:
        """Start a run of ``workflow`` (a template name, or anything with ``name``); its id."""
        name = workflow if isinstance(workflow, str) else getattr(workflow, "name", None) or (
            workflow.get("name") if isinstance(workflow, dict) else None)
        if not name:
            raise TypeError(f"workflow must be a template name or have a name, not {workflow!r}")
        level = PRIORITIES.get(priority.lower()) if isinstance(priority, str) else priority
        if level is None:
            raise ValueError(f"priority {priority!r} is not 0..100 nor one of {', '.join(PRIORITIES)}")
        engine = self.runtime.engine
        run_id: str = await engine.create_instance(name, variables or {}, priority=int(level),
                                                   allow_duplicate=True, who="orchestrator")
        await engine.execute_workflow(run_id)
        return run_id

    async def cancel_job(self, job_id: str) -> bool:
        if self.runtime.engine.run_status(job_id).is_final:
            return False
        await self.runtime.engine.cancel(job_id, who="orchestrator")
        return True

    def get_job_status(self, job_id: str) -> str:
        """pending, queued, dispatched, running, completed, failed, cancelled or timeout."""
        run = self.runtime.engine.get_instance(job_id)
        steps = run["steps"]
        if any(s["error_code"] == TIMEOUT_CODE for s in steps):
            return JobStatus.TIMEOUT.value
        status = run["status"]
        if status in ("completed", "failed", "cancelled", "pending"):
            return str(status)
        if any(s["status"] == "running" for s in steps):
            return JobStatus.RUNNING.value
        return JobStatus.QUEUED.value if any(s["status"] == "queued" for s in steps) else str(status)

    # ------------------------------------------------------------------ robots

    async def register_robot(self, robot: Any) -> Any:
        """Put the instrument ``robot`` (its id, or anything with ``robot_id`` / ``id``) in service."""
        robot_id = robot if isinstance(robot, str) else getattr(robot, "robot_id", None) or robot.id
        if robot_id not in self.dispatcher.instruments:
            raise NotFoundError(f"no robot {robot_id} in the workcell (robots: "
                                f"{', '.join(sorted(self.dispatcher.instruments))})")
        inst = self.dispatcher.instruments[robot_id]
        if not inst.enabled:
            await self.runtime.instrument_action(robot_id, "enable", who="orchestrator")
        if not inst.in_service or inst.draining:
            await self.runtime.instrument_action(robot_id, "release", who="orchestrator")
        return next(v for v in self.dispatcher.view() if v.id == robot_id)

    async def unregister_robot(self, robot_id: str) -> None:
        await self.runtime.instrument_action(robot_id, "out_of_service", who="orchestrator")

    def get_dashboard_metrics(self) -> DashboardMetrics:
        metrics = self.runtime.metrics
        if metrics is None:
            raise StateError("this runtime keeps no metrics")
        dashboard: DashboardMetrics = metrics.dashboard()
        return dashboard


@dataclass
class Schedule:
    """The seed's schedule record."""

    schedule_id: str
    workflow_id: str
    frequency: ScheduleFrequency | str
    cron_expression: str | None = None
    timezone: str = "UTC"
    enabled: bool = True
    next_run: datetime | None = None
    last_run: datetime | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    robot_id: str | None = None


class JobScheduler:
    """The seed's ``JobScheduler`` over :class:`core.schedules.Scheduler` (``runtime.schedules``
    when the runtime runs one, else a scheduler of its own, started by :meth:`start`)."""

    ScheduleFrequency = ScheduleFrequency

    def __init__(self, service: Any) -> None:
        self.runtime = service
        self._own = service.schedules is None
        self.scheduler: Scheduler = service.schedules or Scheduler(service)
        self._running = False

    async def start(self) -> None:
        if self._own and not self._running:
            await self.scheduler.start()
            self._running = True

    async def stop(self) -> None:
        if self._own and self._running:
            await self.scheduler.close()
            self._running = False

    def _to_core(self, schedule: Schedule) -> _Schedule:
        if schedule.robot_id is not None:
            raise ValueError(f"schedule {schedule.schedule_id}: robot_id: per-schedule robot affinity is "
                             "not supported; the dispatcher chooses the robot (load_balancing='affinity' "
                             "keeps a workflow on one)")
        frequency = ScheduleFrequency(schedule.frequency)
        cron = schedule.cron_expression if frequency is ScheduleFrequency.CRON else None
        at = None if frequency is ScheduleFrequency.CRON else schedule.cron_expression
        return _Schedule(schedule.workflow_id, frequency, cron=cron, at=at, timezone=schedule.timezone,
                         inputs=schedule.variables, enabled=schedule.enabled, id=schedule.schedule_id)

    def _to_seed(self, s: _Schedule) -> Schedule:
        def when(ts: float | None) -> datetime | None:
            return None if ts is None else datetime.fromtimestamp(ts, ZoneInfo(s.timezone))

        frequency = ScheduleFrequency(s.frequency)
        return Schedule(s.id, s.template, frequency,
                        s.cron if frequency is ScheduleFrequency.CRON else s.at, s.timezone, s.enabled,
                        when(s.next_run), when(s.last_run), dict(s.inputs), None)

    async def add_schedule(self, schedule: Schedule) -> Schedule:
        added = await self.scheduler.add(self._to_core(schedule), who="orchestrator")
        if not schedule.enabled:
            added = await self.scheduler.set_enabled(added.id, False, who="orchestrator")
        return self._to_seed(added)

    async def remove_schedule(self, schedule_id: str) -> None:
        await self.scheduler.remove(schedule_id, who="orchestrator")

    async def update_schedule(self, schedule: Schedule) -> Schedule:
        """Replace the settings of the schedule with ``schedule.schedule_id``; its next run is
        computed again from now."""
        return self._to_seed(await self.scheduler.update(self._to_core(schedule), who="orchestrator"))

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        return self._to_seed(await self.scheduler.set_enabled(schedule_id, False, who="orchestrator"))

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        return self._to_seed(await self.scheduler.set_enabled(schedule_id, True, who="orchestrator"))

    def get_schedule(self, schedule_id: str) -> Schedule:
        return self._to_seed(self.scheduler.get(schedule_id))

    def get_next_run(self, schedule_id: str) -> datetime | None:
        """When the schedule fires next (blackout windows applied); None when paused or spent."""
        return self.scheduler.get_next_run(schedule_id)


__all__ = ["JobQueue", "JobScheduler", "OrchestratorEngine", "PRIORITIES", "Schedule", "ScheduleFrequency"]
