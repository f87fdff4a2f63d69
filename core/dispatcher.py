"""How orders reach instruments: the job queue, instrument selection, reservations, heartbeats.

:class:`JobQueue` is a priority queue with an explicit job state machine (seed 003)::

    PENDING -> QUEUED -> DISPATCHED -> RUNNING -> COMPLETED | FAILED | CANCELLED | TIMEOUT

An illegal transition raises :class:`~core.errors.IllegalTransitionError` and changes nothing.
Order of service: Biosero priority (Elevated first), then numeric priority (0-100, higher
first), then the step whose time window (``start_within``) closes soonest, then work in progress
(steps of runs already under way, the longest under way first, before the first steps of new
runs: plates already out wait least), then scheduled start time, then FIFO. Jobs are indexed in heaps by capability and, for
restricted jobs, by module and restriction strategy, so a dispatch decision looks only at the
heads of a few heaps — never at every queued job.

:class:`Dispatcher` owns the instruments (one :class:`~core.drivers.base.Driver` each) and
implements the engine's :class:`~core.engine.StepExecutor`: a step becomes a job, waits in the
queue, and runs on the instrument chosen by capability, ``restrictToModuleIds`` with its
ModuleRestrictionStrategy, and the load-balancing strategy (round_robin, least_loaded, random,
affinity). A step that needs several instruments at once reserves all of them atomically or none
(no hold-and-wait, so no deadlock); a blocked high-priority job earmarks the free instruments it
needs, so lower-priority jobs cannot starve it.

One ticker task does heartbeats (every ``heartbeat_interval``), declares an instrument Offline
when its last good heartbeat is older than ``stale_timeout`` (its running orders fail as
retryable for idempotent steps, "outcome unknown" otherwise), releases FirstAvailableSlot jobs
when their time comes, and re-tries connecting to Offline instruments.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import json
import logging
import random
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from core import gcpolicy
from core.clock import Clock, SystemClock, sleep_or_wake, to_datetime
from core.drivers.base import (
    Driver,
    DriverError,
    DriverInfo,
    InstrumentUnavailable,
    OrderCancelled,
    OutcomeUnknown,
    ProgressSink,
)
from core.errors import IllegalTransitionError, NotFoundError, StateError
from core.events import EventBus, InstrumentStatusChanged, OperatorAction, OrderUpdated
from core.orders import (
    ModuleRestrictionStrategy,
    ModuleStatus,
    Order,
    OrderStatus,
    SchedulingStrategy,
)
from core.store import Store
from core.tasks import Supervisor
from core.users import authorize

log = logging.getLogger(__name__)


# ============================================================================ job state machine


class JobStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.QUEUED: frozenset({JobStatus.DISPATCHED, JobStatus.CANCELLED, JobStatus.TIMEOUT}),
    JobStatus.DISPATCHED: frozenset({JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED,
                                     JobStatus.TIMEOUT}),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED,
                                  JobStatus.TIMEOUT}),
}
"""Every legal transition; anything else raises."""

JOB_ORDER_STATUS: dict[JobStatus, OrderStatus] = {
    JobStatus.PENDING: OrderStatus.Created,
    JobStatus.QUEUED: OrderStatus.Scheduled,
    JobStatus.DISPATCHED: OrderStatus.Scheduled,
    JobStatus.RUNNING: OrderStatus.Running,
    JobStatus.COMPLETED: OrderStatus.Complete,
    JobStatus.FAILED: OrderStatus.Error,
    JobStatus.CANCELLED: OrderStatus.Canceled,
    JobStatus.TIMEOUT: OrderStatus.Error,
}
"""The one table from job states to Biosero OrderStatus."""

FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMEOUT})

T = TypeVar("T")
JobKey = tuple[int, int, float, float, float, int]
"""A job's place in its heaps: (Biosero priority, -priority, window closes, run under way since,
scheduled start, arrival)."""
_NEVER = float("inf")
HOLD = 1.0
"""Seconds an instrument freed by a run under way is kept from new runs while that run's next
step is being recorded (it normally arrives within milliseconds)."""
HeapKey = tuple[str, str] | tuple[str, str, str, ModuleRestrictionStrategy]
"""``("any", capability)`` or ``("pin", capability, module, strategy)``."""
HeapEntry = tuple[JobKey, int, int, "Job"]
"""(key, the job's version when pushed, tie-breaker, job)."""


class LoadBalancing(StrEnum):
    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"
    RANDOM = "random"
    AFFINITY = "affinity"


@dataclass(eq=False)
class Job:
    """One order waiting for, or running on, an instrument."""

    order_id: str
    order: Order
    capability: str
    reserve: tuple[str, ...] = ()
    restrict: tuple[str, ...] = ()
    strategy: ModuleRestrictionStrategy = ModuleRestrictionStrategy.NoRestriction
    biosero: int = 0
    priority: int = 50
    scheduled: float | None = None
    seq: int = 0
    run_id: str | None = None
    workflow: str | None = None
    idempotent: bool = False
    submitted: float = 0.0
    status: JobStatus = JobStatus.PENDING
    version: int = 0
    instruments: tuple[str, ...] = ()
    started: float | None = None
    ended: float | None = None
    future: asyncio.Future[dict[str, Any]] | None = None
    task: asyncio.Task[None] | None = None
    interrupt: DriverError | None = None
    launched: bool = False
    """The instrument was asked to run it (before: taken for it, nothing started there)."""
    on_started: Any = None
    progress: ProgressSink | None = None
    closes: float | None = None
    """The step's start window closes then (None: no window)."""
    under_way: float | None = None
    """When the job's run started its first step (None: a new run, or not preferred)."""
    expects: tuple[str, ...] = ()
    """Capabilities the run's next steps need once this job ends."""

    def key(self) -> JobKey:
        return (self.biosero, -self.priority, _NEVER if self.closes is None else self.closes,
                _NEVER if self.under_way is None else self.under_way, self.scheduled or 0.0, self.seq)

    def to(self, status: JobStatus) -> None:
        if status not in TRANSITIONS.get(self.status, frozenset()):
            raise IllegalTransitionError(f"job {self.order_id}", self.status.value, status.value)
        self.status = status


COMPACT_AFTER = 256
"""Jobs cancelled or timed out while queued before the queue's heaps are rebuilt without them."""
RELEASE_PER_TAKE = 5
"""Entries a compaction took out that each later :meth:`JobQueue.take` frees."""
RELEASE_PER_ROUND = 500
"""Entries a compaction took out that each heartbeat round frees (when nothing is taken)."""


class JobQueue:
    """Queued jobs in heaps by capability ("any" module) and by (capability, module, strategy).

    Entries are removed lazily: a popped entry whose job is no longer QUEUED, or whose version
    changed (reprioritised), is dropped. Jobs with a future ``scheduled`` start (FirstAvailableSlot)
    wait in a time heap until :meth:`release_due` moves them in. Once the heaps hold more dropped
    entries than queued ones (a bulk cancel of queued steps: nothing may pop them for hours), they
    are rebuilt without them, so a cancelled job, its order and its run are not kept alive. The
    old entries are let go a few at a time (:data:`RELEASE_PER_TAKE` at each later :meth:`take`,
    :data:`RELEASE_PER_ROUND` by :meth:`release` at each heartbeat round of the dispatcher):
    freeing the jobs and orders of 5,000 canceled steps at once was 24-48 ms of one loop step of
    a bulk cancel (about 7 microseconds each).
    """

    def __init__(self) -> None:
        self.heaps: dict[HeapKey, list[HeapEntry]] = {}
        self.jobs: dict[str, Job] = {}
        self._later: list[tuple[float, int, Job]] = []
        self._seq = itertools.count(1)
        self._tie = itertools.count()
        self.queued = 0
        self._dropped = 0
        """Jobs that left the queue with their entries still in the heaps since the last compact."""
        self._let_go: list[list[Any]] = []
        """The heaps' entries before each compaction, let go of a few at a time."""

    def __len__(self) -> int:
        return self.queued

    def heap_keys(self, job: Job) -> list[HeapKey]:
        if not job.restrict or job.strategy is ModuleRestrictionStrategy.NoRestriction:
            return [("any", job.capability)]
        return [("pin", job.capability, m, job.strategy) for m in job.restrict]

    def enqueue(self, job: Job, now: float) -> None:
        if job.order_id in self.jobs and self.jobs[job.order_id].status not in FINAL:
            raise StateError(f"order {job.order_id} is already queued")
        job.to(JobStatus.QUEUED)
        job.seq = job.seq or next(self._seq)
        job.submitted = now
        self.jobs[job.order_id] = job
        self.queued += 1
        if job.scheduled is not None and job.scheduled > now:
            heapq.heappush(self._later, (job.scheduled, next(self._tie), job))
        else:
            self._push(job)

    def admit(self, job: Job, now: float) -> None:
        """Register a job dispatched at once, without waiting in a heap (a claim)."""
        if job.order_id in self.jobs and self.jobs[job.order_id].status not in FINAL:
            raise StateError(f"order {job.order_id} is already queued")
        job.to(JobStatus.QUEUED)
        job.to(JobStatus.DISPATCHED)
        job.seq = job.seq or next(self._seq)
        job.submitted = now
        self.jobs[job.order_id] = job

    def _push(self, job: Job) -> None:
        for hk in self.heap_keys(job):
            heapq.heappush(self.heaps.setdefault(hk, []), (job.key(), job.version, next(self._tie), job))

    def release_due(self, now: float) -> int:
        moved = 0
        while self._later and self._later[0][0] <= now:
            _, _, job = heapq.heappop(self._later)
            if job.status is JobStatus.QUEUED:
                self._push(job)
                moved += 1
        return moved

    @property
    def next_scheduled(self) -> float | None:
        while self._later and self._later[0][2].status is not JobStatus.QUEUED:
            heapq.heappop(self._later)
        return self._later[0][0] if self._later else None

    def waiting_for_time(self, job: Job, now: float) -> bool:
        return job.status is JobStatus.QUEUED and job.scheduled is not None and job.scheduled > now

    def head(self, hk: HeapKey) -> Job | None:
        heap = self.heaps.get(hk)
        while heap:
            _, version, _, job = heap[0]
            if job.status is JobStatus.QUEUED and version == job.version:
                return job
            heapq.heappop(heap)
        return None

    def take(self, job: Job, status: JobStatus = JobStatus.DISPATCHED) -> None:
        """Leave the queue (dispatched, cancelled or timed out); heap entries go lazily."""
        job.to(status)
        self.queued -= 1
        if status is not JobStatus.DISPATCHED:  # its entries stay where no dispatch pops them
            self._dropped += 1
            if self._dropped > COMPACT_AFTER and self._dropped > self.queued:
                self.compact()
        if self._let_go:
            self.release(RELEASE_PER_TAKE)

    def compact(self) -> None:
        """Rebuild the heaps with only the entries of queued jobs at their current version (in
        place: a caller holding a heap sees the change); the others wait to be let go."""
        for heap in self.heaps.values():
            self._let_go.append(list(heap))  # the old entries, kept ones too (those stay held)
            heap[:] = [e for e in heap if e[3].status is JobStatus.QUEUED and e[1] == e[3].version]
            heapq.heapify(heap)
        self._let_go.append(list(self._later))
        self._later[:] = [e for e in self._later if e[2].status is JobStatus.QUEUED]
        heapq.heapify(self._later)
        self._dropped = 0

    def release(self, most: int) -> int:
        """Let go of at most ``most`` of the entries compactions took out (a canceled job, its
        order and its run are freed with the last reference); how many are left."""
        let_go = self._let_go
        while most > 0 and let_go:
            old = let_go[-1]
            n = min(most, len(old))
            del old[-n:]
            most -= n
            if not old:
                let_go.pop()
        return sum(len(old) for old in let_go)

    def reprioritise(self, order_id: str, *, priority: int | None = None, biosero: int | None = None) -> Job:
        job = self.jobs.get(order_id)
        if job is None or job.status is not JobStatus.QUEUED:
            raise StateError(f"order {order_id} is not queued (only queued orders can be reprioritised)")
        if priority is not None:
            if not 0 <= priority <= 100:
                raise ValueError(f"priority must be 0..100, not {priority}")
            job.priority = priority
        if biosero is not None:
            job.biosero = biosero
        job.version += 1
        if job.scheduled is None or not any(entry[2] is job for entry in self._later):
            self._push(job)
        return job

    def ahead_of(self, job: Job) -> int:
        """How many queued jobs of the same capability are served before ``job`` (O(n), on demand)."""
        key = job.key()
        return sum(1 for other in self.jobs.values()
                   if other is not job and other.status is JobStatus.QUEUED
                   and other.capability == job.capability and other.key() < key)

    def forget(self, job: Job) -> None:
        if self.jobs.get(job.order_id) is job and job.status in FINAL:
            del self.jobs[job.order_id]


# ============================================================================ instruments


@dataclass(eq=False)
class Instrument:
    """An instrument (Data Services module) as the dispatcher sees it."""

    id: str
    driver: Driver
    capabilities: frozenset[str]
    capacity: int = 1
    name: str = ""
    kind: str = ""
    status: ModuleStatus = ModuleStatus.Offline
    detail: str = "not connected"
    connected: bool = False
    enabled: bool = True
    in_service: bool = True
    draining: bool = False
    running: dict[str, Job] = field(default_factory=dict)
    last_heartbeat: float | None = None
    latency: float | None = None
    """Round trip of the last heartbeat that answered, in seconds."""
    heartbeat_task: asyncio.Task[None] | None = None
    next_reconnect: float = 0.0
    busy_since: float | None = None
    busy_seconds: float = 0.0
    completed: int = 0
    failed: int = 0

    @property
    def load(self) -> float:
        return len(self.running) / self.capacity

    @property
    def accepts_work(self) -> bool:
        return (self.connected and self.enabled and self.in_service and not self.draining
                and self.status in (ModuleStatus.Ready, ModuleStatus.Busy)
                and len(self.running) < self.capacity)

    def utilisation(self, now: float, since: float) -> float:
        busy = self.busy_seconds + (now - self.busy_since if self.busy_since is not None else 0.0)
        return min(1.0, busy / (now - since)) if now > since else 0.0


@dataclass(frozen=True)
class InstrumentView:
    """A snapshot for views (Robots panel, CLI)."""

    id: str
    name: str
    kind: str
    status: ModuleStatus
    detail: str
    capabilities: tuple[str, ...]
    enabled: bool
    in_service: bool
    draining: bool
    running: tuple[str, ...]
    capacity: int
    heartbeat_age: float | None
    utilisation: float
    completed: int
    failed: int
    latency: float | None = None
    """Round trip of the last heartbeat, seconds (None before the first)."""
    info: DriverInfo | None = None
    """The driver's identity: driver kind, endpoint and what the instrument reported."""


def instrument_state(view: InstrumentView) -> str:
    """The one state an instrument is shown in (Robots panel, fleet heartbeats): hardware trouble
    (Offline, Error) first, then what the operator decided (Draining, OutOfService, Disabled),
    then the module status (Busy, Ready)."""
    if view.status in (ModuleStatus.Offline, ModuleStatus.Error):
        return view.status.name
    if view.draining:
        return "Draining"
    if not view.in_service:
        return "OutOfService"
    if not view.enabled:
        return "Disabled"
    return "Busy" if view.status is ModuleStatus.Busy else "Ready"


# ============================================================================ dispatcher


class Dispatcher:
    """Queue + instruments; implements the engine's StepExecutor. See the module docstring."""

    def __init__(self, store: Store, bus: EventBus, drivers: Mapping[str, Driver], *,
                 clock: Clock | None = None, strategy: LoadBalancing | str = LoadBalancing.LEAST_LOADED,
                 heartbeat_interval: float = 5.0, stale_timeout: float = 30.0, seed: int = 0,
                 capacities: Mapping[str, int] | None = None, prefer_started: bool = True) -> None:
        self.store = store
        self.prefer_started = prefer_started
        """Serve steps of runs under way before first steps of new runs (within a priority)."""
        self._holds: dict[str, tuple[tuple[str, ...], asyncio.Task[None]]] = {}
        """Run id -> (capabilities its next steps need, until when): a step of a run under way
        ended and its next steps are being recorded; new runs do not take those instruments
        meanwhile (:data:`HOLD` seconds at most)."""
        self.bus = bus
        self.clock = clock or SystemClock()
        self.strategy = LoadBalancing(strategy)
        self.heartbeat_interval = heartbeat_interval
        self.stale_timeout = stale_timeout
        self.rng = random.Random(seed)
        self.queue = JobQueue()
        self.instruments: dict[str, Instrument] = {}
        for iid, driver in drivers.items():
            info = driver.info
            capacity = (capacities or {}).get(iid) or getattr(driver, "max_concurrent", 1) or 1
            self.instruments[iid] = Instrument(iid, driver, frozenset(info.capabilities), capacity,
                                               info.name or iid, info.kind)
        self.offered = frozenset(c for inst in self.instruments.values() for c in inst.capabilities)
        """Every capability some instrument of the workcell offers (the workcell is fixed)."""
        self._rr: dict[str, int] = {}
        self._affinity: dict[tuple[str, str], str] = {}
        self._kick_pending = False
        self._claimed: dict[str, tuple[Any, Job]] = {}
        """Steps claimed by the engine (see :meth:`claim`) and not yet executed: request, job."""
        self._ticker: asyncio.Task[None] | None = None
        self._rearm = asyncio.Event()
        self.tasks = Supervisor("dispatcher")
        self._started_at = self.clock.now()
        self.admit: Callable[[Job], Awaitable[bool]] | None = None
        """Asked before a job starts on its instrument: False leaves the job cancelled, unstarted
        (an order held as a lease on a shared Data Services that another console took over)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load operator state, connect every enabled instrument, start the ticker."""
        self._started_at = self.clock.now()
        rows = await self.store.read(lambda c: c.execute(
            "SELECT id, enabled, in_service FROM instruments").fetchall())
        for iid, enabled, in_service in rows:
            inst = self.instruments.get(iid)
            if inst is not None:
                inst.enabled, inst.in_service = bool(enabled), bool(in_service)
        await asyncio.gather(*[self._connect(inst) for inst in self.instruments.values() if inst.enabled])
        if self._ticker is None:
            self._ticker = self.tasks.spawn(self._tick_loop(), "ticker")
        self.kick()

    async def close(self) -> None:
        await self.tasks.close()
        self._ticker = None
        for inst in self.instruments.values():
            if inst.connected:
                try:
                    await inst.driver.disconnect()
                except Exception as exc:  # noqa: BLE001
                    log.warning("%s: disconnect failed: %s", inst.id, exc)

    def _spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        return self.tasks.spawn(coro, name)

    async def _connect(self, inst: Instrument) -> bool:
        try:
            await inst.driver.connect()
        except Exception as exc:  # noqa: BLE001 - any failure means Offline with the reason
            inst.connected = False
            inst.next_reconnect = self.clock.now() + self.stale_timeout
            await self._set_status(inst, ModuleStatus.Offline, f"connect failed: {exc}")
            return False
        inst.connected = True
        inst.last_heartbeat = self.clock.now()
        gcpolicy.settle()  # what the driver built to connect lives long: out of full collections
        await self._set_status(inst, self._idle_status(inst), self._idle_detail(inst))
        self.kick()
        return True

    def _idle_status(self, inst: Instrument) -> ModuleStatus:
        if not inst.connected:
            return ModuleStatus.Offline
        return ModuleStatus.Busy if inst.running else ModuleStatus.Ready

    def _idle_detail(self, inst: Instrument) -> str:
        if not inst.enabled:
            return "disabled by the operator"
        if not inst.in_service:
            return "out of service (manual work)"
        if inst.draining:
            return "finishing its order, then out of service"
        if inst.running:
            return "running " + ", ".join(inst.running)
        return "ready"

    async def _set_status(self, inst: Instrument, status: ModuleStatus, detail: str) -> None:
        """The instrument's status changes; returns once its log row is committed."""
        written = self._status_change(inst, status, detail)
        if written is not None:
            await written

    def _status_change(self, inst: Instrument, status: ModuleStatus, detail: str, *,
                       ride: bool = False) -> asyncio.Future[Any] | None:
        """Change the instrument's status in memory now, queue its log row (writes keep their
        order) and publish the change once that row is committed. Returns the write, if any.
        ``ride``: the row commits with the next write (a step's, usually) instead of alone."""
        previous = inst.status
        if previous == status and inst.detail == detail:
            return None
        inst.status, inst.detail = status, detail
        event = InstrumentStatusChanged(instrument_id=inst.id, status=status, detail=detail,
                                        current_orders=tuple(inst.running), enabled=inst.enabled,
                                        in_service=inst.in_service)
        if previous == status:
            self.bus.publish(event)
            return None
        now, orders = self.clock.now(), json.dumps(list(inst.running))
        write = self.store.write_with_next if ride else self.store.submit
        written = write(lambda c: c.execute(
            "INSERT INTO instrument_log (instrument_id, at, from_status, to_status, detail, order_ids) "
            "VALUES (?,?,?,?,?,?)", (inst.id, now, previous.name, status.name, detail, orders)))

        def committed(future: asyncio.Future[Any]) -> None:
            if future.cancelled() or future.exception() is not None:
                log.error("%s: status %s not recorded: %s", inst.id, status.name,
                          "cancelled" if future.cancelled() else future.exception())
            else:
                self.bus.publish(event)

        written.add_done_callback(committed)
        return written

    # ------------------------------------------------------------------ StepExecutor

    async def execute(self, request: Any, progress: ProgressSink) -> dict[str, Any]:
        """Queue the step, wait for an instrument, run it there, return its outputs. A step whose
        capability no instrument of the workcell offers fails at once (it would wait forever).
        A step claimed with :meth:`claim` goes straight to its instrument."""
        claimed = self._claimed.pop(request.order_id, None)
        if claimed is not None and claimed[0] is request:
            job = claimed[1]
            job.on_started, job.progress = request.started, progress
            job.future = asyncio.get_running_loop().create_future()
            main = self.instruments[job.instruments[0]]
            job.task = self._spawn(self._run_job(job, main, [self.instruments[i] for i in job.instruments[1:]]),
                                   f"job-{job.order_id}")
            return await self._outcome(job)
        if claimed is not None:  # a claim for an earlier attempt that was never launched
            self._unassign(claimed[1], JobStatus.CANCELLED)
        job = self._job(request)
        job.progress = progress
        return await self.submit(job)

    def claim(self, request: Any) -> str | None:
        """Reserve an instrument for the step now, if it would be dispatched at once anyway: one
        is free and eligible (restrictions, extra capabilities) and no queued job of the same
        capabilities waits ahead. The engine then records the step running with the decision that
        made it ready, and :meth:`execute` starts it there (see ``ClaimingExecutor``)."""
        try:
            job = self._job(request)
        except DriverError:
            return None  # execute() says why
        current = self.queue.jobs.get(job.order_id)
        opens = getattr(request, "not_before", None)
        if job.scheduled is not None or job.order_id in self._claimed or (
                current is not None and current.status not in FINAL) or (
                opens is not None and opens > self.clock.now()):
            return None  # (a step whose time window has not opened yet waits for it first)
        capabilities = {job.capability, *job.reserve}
        if any(hk[1] in capabilities and self.queue.head(hk) is not None for hk in list(self.queue.heaps)):
            return None  # others wait: the dispatch pass keeps their order
        free = [i for i in self.instruments.values() if i.accepts_work]
        mains = [i for i in free if self._eligible(job, i, job.capability)]
        if not mains:
            return None
        if job.under_way is None and len(mains) <= sum(
                kinds.count(job.capability) for kinds, _timer in self._holds.values()):
            return None  # the free ones are kept for runs under way
        main = self._choose(job, mains)
        extras: list[Instrument] = []
        for capability in job.reserve:
            pool = [i for i in free if i is not main and i not in extras and capability in i.capabilities]
            if not pool:
                return None
            extras.append(self._choose(job, pool, capability))
        now = self.clock.now()
        self.queue.admit(job, now)
        self._reserve(job, main, extras, now)
        self._claimed[job.order_id] = (request, job)
        if job.run_id is not None and (hold := self._holds.pop(job.run_id, None)) is not None:
            hold[1].cancel()  # the run's next step has its instrument
        return main.id

    def unclaim(self, request: Any) -> None:
        """The claimed step will not run: free its instruments."""
        claimed = self._claimed.get(request.order_id)
        if claimed is not None and claimed[0] is request:
            del self._claimed[request.order_id]
            self._unassign(claimed[1], JobStatus.CANCELLED)

    def _job(self, request: Any) -> Job:
        order: Order = request.order
        for capability in (request.kind, *getattr(request, "reserve", ())):
            if capability not in self.offered:
                raise DriverError(f"no instrument of this workcell offers {capability!r} "
                                  f"(offered: {', '.join(sorted(self.offered)) or 'none'})",
                                  code="NoCapability", retryable=False)
        return Job(order_id=request.order_id, order=order, capability=request.kind,
                   reserve=tuple(getattr(request, "reserve", ())), restrict=tuple(order.restricted_modules),
                   strategy=order.moduleRestrictionStrategy, biosero=int(order.priority),
                   priority=request.priority, run_id=request.run_id,
                   workflow=getattr(request, "template_name", None), idempotent=request.idempotent,
                   scheduled=(order.scheduledStartTime.timestamp() if order.scheduledStartTime is not None
                              and order.schedulingStrategy is SchedulingStrategy.FirstAvailableSlot else None),
                   on_started=request.started,
                   closes=getattr(request, "window_closes", None),
                   under_way=getattr(request, "run_started", None) if self.prefer_started else None,
                   expects=tuple(getattr(request, "next_kinds", ())) if self.prefer_started else ())

    async def submit(self, job: Job) -> dict[str, Any]:
        if job.run_id is not None and (hold := self._holds.pop(job.run_id, None)) is not None:
            hold[1].cancel()  # the run's next step is here
        job.future = asyncio.get_running_loop().create_future()
        self.queue.enqueue(job, self.clock.now())
        if job.scheduled is not None:
            self._rearm.set()
        self.kick()
        return await self._outcome(job)

    async def _outcome(self, job: Job) -> dict[str, Any]:
        assert job.future is not None
        try:
            return await job.future
        except Exception:
            # the error's traceback holds this frame, which holds the job: without its future
            # (done) the job no longer holds the error, and reference counting frees them all
            # (a bulk cancel of queued steps left thousands of such cycles to full collections)
            job.future = None
            raise
        except asyncio.CancelledError:
            # the caller (the engine) gave up: leave the queue, or stop the instrument
            # nobody waits for the outcome any more: the job no longer keeps it (as above), and an
            # outcome that came as the engine gave up (a withdrawn step) counts as taken
            future, job.future = job.future, None
            if future is not None and future.done() and not future.cancelled():
                future.exception()
            del future  # (this frame stays in the CancelledError's traceback)
            if job.status is JobStatus.QUEUED:
                self.queue.take(job, JobStatus.CANCELLED)
                self.queue.forget(job)
            elif job.task is not None and not job.task.done():
                job.interrupt = job.interrupt or OrderCancelled(f"order {job.order_id} cancelled")
                job.task.cancel()
            raise

    def withdraw(self, request: Any) -> bool | None:
        """Stop the step at once if nothing of it runs on an instrument: True once it left the
        queue (or its claim), False when it is not here or already ended, None when it runs on an
        instrument (:meth:`cancel` then asks the instrument)."""
        order_id = request.order_id if not isinstance(request, str) else request
        claimed = self._claimed.pop(order_id, None)
        if claimed is not None:  # claimed, not started: nothing runs on the instrument yet
            self._unassign(claimed[1], JobStatus.CANCELLED)
            return True
        job = self.queue.jobs.get(order_id)
        if job is None or job.status in FINAL:
            return False
        if job.status is JobStatus.QUEUED:
            self.queue.take(job, JobStatus.CANCELLED)
            self.queue.forget(job)
            if job.future and not job.future.done():
                job.future.set_exception(OrderCancelled(f"order {order_id} cancelled while queued"))
            return True
        if not job.launched and job.task is not None:  # dispatched, its start not recorded yet
            insts = [self.instruments[i] for i in job.instruments]
            self._unassign(job, JobStatus.CANCELLED)
            if insts:
                self._idle(insts[0], insts[1:])
            job.task.cancel()
            if job.future and not job.future.done():
                job.future.set_exception(OrderCancelled(f"order {order_id} cancelled before it started"))
            return True
        return None

    async def cancel(self, request: Any) -> bool:
        """Stop the step: dequeue it if waiting; ask its instrument to stop if running."""
        withdrawn = self.withdraw(request)
        if withdrawn is not None:
            return withdrawn
        order_id = request.order_id if not isinstance(request, str) else request
        job = self.queue.jobs[order_id]
        main = self.instruments.get(job.instruments[0]) if job.instruments else None
        confirmed = False
        if main is not None:
            try:
                confirmed = await main.driver.cancel(order_id)
            except Exception as exc:  # noqa: BLE001
                log.warning("%s: cancel of %s failed: %s", main.id, order_id, exc)
        return confirmed

    # ------------------------------------------------------------------ dispatching

    def kick(self) -> None:
        """Ask for a dispatch pass on the next loop turn (many kicks, one pass)."""
        if not self._kick_pending:
            self._kick_pending = True
            asyncio.get_running_loop().call_soon(self._dispatch_pass)

    def _dispatch_pass(self) -> None:
        self._kick_pending = False
        now = self.clock.now()
        self.queue.release_due(now)
        while self._dispatch_one(now):
            pass

    def _eligible(self, job: Job, inst: Instrument, capability: str) -> bool:
        if capability not in inst.capabilities:
            return False
        if capability != job.capability or not job.restrict:
            return True
        strategy = job.strategy
        if strategy is ModuleRestrictionStrategy.NoRestriction or inst.id in job.restrict:
            return True
        if strategy is ModuleRestrictionStrategy.FullRestriction:
            return False
        listed = [self.instruments[m] for m in job.restrict if m in self.instruments
                  and capability in self.instruments[m].capabilities]
        if strategy is ModuleRestrictionStrategy.UnlessBusy:
            return all(m.status is ModuleStatus.Busy or (m.running and not m.accepts_work) for m in listed)
        if strategy is ModuleRestrictionStrategy.UnlessError:
            return all(m.status is ModuleStatus.Error for m in listed)
        if strategy is ModuleRestrictionStrategy.UnlessOffline:
            return all(m.status is ModuleStatus.Offline or not m.connected for m in listed)
        return False

    def _candidate_heaps(self, free: list[Instrument]) -> list[HeapKey]:
        caps = {c for inst in free for c in inst.capabilities}
        keys: list[HeapKey] = []
        for hk in self.queue.heaps:
            if hk[1] in caps:
                keys.append(hk)
        return keys

    def _dispatch_one(self, now: float) -> bool:
        """Make at most one assignment; True if one was made (the caller loops).

        Candidates are the heads of the heaps for capabilities some free instrument offers, best
        first. A head that cannot get all its instruments earmarks the free ones it would use and
        steps aside for this pass (so the jobs behind it can use the *other* instruments), then is
        put back: no head-of-line blocking, no starvation of the blocked job.
        """
        free = [i for i in self.instruments.values() if i.accepts_work]
        if not free:
            return False
        held: dict[str, int] = {}
        for kinds, _timer in self._holds.values():
            for kind in kinds:
                held[kind] = held.get(kind, 0) + 1
        earmarked: set[str] = set()
        stash: list[tuple[HeapKey, HeapEntry]] = []
        try:
            while True:
                heads: dict[int, Job] = {}
                for hk in self._candidate_heaps(free):
                    job = self.queue.head(hk)
                    if job is not None:
                        heads[id(job)] = job
                blocked = None
                for job in sorted(heads.values(), key=Job.key):
                    mains = [i for i in free if i.id not in earmarked and self._eligible(job, i, job.capability)]
                    if not mains or (job.under_way is None and len(mains) <= held.get(job.capability, 0)):
                        continue  # none free, or the free ones wait for runs under way
                    main = self._choose(job, mains)
                    extras: list[Instrument] = []
                    missing = False
                    for capability in job.reserve:
                        pool = [i for i in free if i.id not in earmarked and i is not main and i not in extras
                                and capability in i.capabilities]
                        if pool:
                            extras.append(self._choose(job, pool, capability))
                        else:
                            missing = True
                    if missing:
                        earmarked.add(main.id)
                        earmarked.update(i.id for i in extras)
                        blocked = job
                        break
                    self._assign(job, main, extras, now)
                    return True
                if blocked is None:
                    return False
                for hk in self.queue.heap_keys(blocked):  # step aside for this pass
                    if self.queue.head(hk) is blocked:
                        stash.append((hk, heapq.heappop(self.queue.heaps[hk])))
        finally:
            for hk, entry in stash:
                heapq.heappush(self.queue.heaps[hk], entry)

    def _choose(self, job: Job, pool: list[Instrument], capability: str | None = None) -> Instrument:
        capability = capability or job.capability
        if len(pool) == 1:
            return pool[0]
        if job.restrict and job.strategy is not ModuleRestrictionStrategy.FullRestriction:
            preferred = [i for i in pool if i.id in job.restrict]
            pool = preferred or pool
        if self.strategy is LoadBalancing.ROUND_ROBIN:
            ordered = sorted(pool, key=lambda i: i.id)
            n = self._rr.get(capability, 0)
            self._rr[capability] = n + 1
            return ordered[n % len(ordered)]
        if self.strategy is LoadBalancing.RANDOM:
            return self.rng.choice(sorted(pool, key=lambda i: i.id))
        if self.strategy is LoadBalancing.AFFINITY:
            for key in ((job.run_id or "", capability), (job.workflow or "", capability)):
                affine = self._affinity.get(key)
                match = next((i for i in pool if i.id == affine), None)
                if match is not None:
                    return match
        return min(pool, key=lambda i: (i.load, i.utilisation(self.clock.now(), self._started_at), i.id))

    def _assign(self, job: Job, main: Instrument, extras: list[Instrument], now: float) -> None:
        self.queue.take(job, JobStatus.DISPATCHED)
        self._reserve(job, main, extras, now)
        job.task = self._spawn(self._run_job(job, main, extras), f"job-{job.order_id}")

    def _reserve(self, job: Job, main: Instrument, extras: list[Instrument], now: float) -> None:
        job.instruments = (main.id, *(i.id for i in extras))
        for inst in (main, *extras):
            inst.running[job.order_id] = job
            if inst.busy_since is None:
                inst.busy_since = now
        key_run, key_flow = (job.run_id or "", job.capability), (job.workflow or "", job.capability)
        self._affinity[key_run] = self._affinity[key_flow] = main.id

    async def _run_job(self, job: Job, main: Instrument, extras: list[Instrument]) -> None:
        if self.admit is not None:
            refused: BaseException | None = None
            try:
                if not await self.admit(job):
                    refused = OrderCancelled(f"order {job.order_id} was not started: this console "
                                             "no longer holds it")
            except asyncio.CancelledError:
                await self._release(job, main, extras, JobStatus.CANCELLED)
                raise
            except Exception as exc:  # noqa: BLE001 - delivered to the engine like a step failure
                refused = exc
            if refused is not None:
                await self._release(job, main, extras, JobStatus.CANCELLED)
                if job.future is not None and not job.future.done():
                    job.future.set_exception(refused)
                return
        # the instruments' log rows are queued, not waited for: what must be committed before
        # the instrument starts is the step's Running transition (on_started, or the claim)
        for inst in (main, *extras):
            self._status_change(inst, ModuleStatus.Busy, self._idle_detail(inst), ride=True)
        job.to(JobStatus.RUNNING)
        job.started = self.clock.now()
        if job.on_started is not None:  # committed before the instrument starts
            pending = job.on_started(main.id)
            if inspect.isawaitable(pending):
                try:
                    await pending
                except asyncio.CancelledError:  # given up before the instrument was asked
                    await self._release(job, main, extras, JobStatus.CANCELLED)
                    raise
        order = job.order.model_copy(update={"assignedTo": main.id})
        outcome: tuple[bool, dict[str, Any] | BaseException]
        try:
            job.launched = True
            outputs = await main.driver.execute(order, job.progress or (lambda f, v: None))
            outcome = (True, outputs)
        except asyncio.CancelledError:
            if job.interrupt is None:
                await self._release(job, main, extras, JobStatus.CANCELLED)
                raise
            outcome = (False, job.interrupt)
        except InstrumentUnavailable as exc:
            # the link dropped with the command sent: only an idempotent step may simply run again
            main.connected = False
            main.next_reconnect = self.clock.now() + min(self.stale_timeout, self.heartbeat_interval)
            failure = exc if job.idempotent else OutcomeUnknown(
                f"{main.id} was lost during order {job.order_id}: {exc.message}", instrument_id=main.id)
            outcome = (False, failure)
        except Exception as exc:  # noqa: BLE001 - delivered to the engine, which classifies it
            outcome = (False, exc)
        ok, value = outcome
        status = JobStatus.COMPLETED if ok else (
            JobStatus.CANCELLED if isinstance(value, OrderCancelled) else JobStatus.FAILED)
        self._unassign(job, status)
        if not main.connected and main.status is not ModuleStatus.Offline:
            await self._set_status(main, ModuleStatus.Offline, f"link lost: {value}")
        if job.future is not None and not job.future.done():
            if isinstance(value, BaseException):
                job.future.set_exception(value)
            else:
                job.future.set_result(value)
        self._idle(main, extras)

    async def _release(self, job: Job, main: Instrument, extras: list[Instrument], status: JobStatus) -> None:
        self._unassign(job, status)
        self._idle(main, extras)

    def _idle(self, main: Instrument, extras: list[Instrument]) -> None:
        """Back to idle: the log rows are queued with (not before) the engine's next decision."""
        for inst in (main, *extras):
            if inst.connected:
                self._status_change(inst, self._idle_status(inst), self._idle_detail(inst), ride=True)

    def _unassign(self, job: Job, status: JobStatus) -> None:
        """The job ended (``status``): free its instruments and ask for the next dispatch pass."""
        now = self.clock.now()
        if job.status not in FINAL:
            job.to(status)
        job.ended = now
        self.queue.forget(job)
        main = self.instruments[job.instruments[0]] if job.instruments else None
        for inst in (self.instruments[i] for i in job.instruments):
            inst.running.pop(job.order_id, None)
            if not inst.running and inst.busy_since is not None:
                inst.busy_seconds += now - inst.busy_since
                inst.busy_since = None
            if inst is main:
                if status is JobStatus.COMPLETED:
                    inst.completed += 1
                elif status is JobStatus.FAILED:
                    inst.failed += 1
            if inst.draining and not inst.running:
                inst.draining = False
                inst.in_service = False
        if status is JobStatus.COMPLETED and job.expects and job.run_id is not None:
            previous = self._holds.get(job.run_id)
            if previous is not None:
                previous[1].cancel()
            self._holds[job.run_id] = (job.expects, self._spawn(self._end_hold(job.run_id), f"hold-{job.run_id}"))
        # bookkeeping first and the next dispatch pass asked for, so a cancellation arriving
        # during the status writes that follow can never leave an instrument reserved or idle
        self.kick()

    async def _end_hold(self, run_id: str) -> None:
        """The run's next step did not come (skipped, paused, cancelled): let new runs in."""
        await self.clock.sleep(HOLD)
        hold = self._holds.get(run_id)
        if hold is not None and hold[1] is asyncio.current_task():
            del self._holds[run_id]
            self.kick()

    # ------------------------------------------------------------------ heartbeats and timers

    async def _tick_loop(self) -> None:
        last_beat = -1e18
        while True:
            now = self.clock.now()
            if now - last_beat >= self.heartbeat_interval:
                last_beat = now
                await self._heartbeat_round(now)
            if self.queue.release_due(now):
                self.kick()
            wake = last_beat + self.heartbeat_interval
            nxt = self.queue.next_scheduled
            if nxt is not None:
                wake = min(wake, nxt)
            await sleep_or_wake(self.clock, wake - self.clock.now(), self._rearm)

    async def _heartbeat_round(self, now: float) -> None:
        self.queue.release(RELEASE_PER_ROUND)
        for inst in self.instruments.values():
            if not inst.enabled:
                continue
            if not inst.connected:
                if now >= inst.next_reconnect:
                    inst.next_reconnect = now + self.stale_timeout
                    self._spawn(self._connect(inst), f"reconnect-{inst.id}")
                continue
            if inst.heartbeat_task is None or inst.heartbeat_task.done():
                inst.heartbeat_task = self._spawn(self._beat(inst), f"heartbeat-{inst.id}")
            age = now - (inst.last_heartbeat or now)
            if age > self.stale_timeout:
                await self._went_offline(inst, f"heartbeat stale for {age:.0f} s "
                                               f"(limit {self.stale_timeout:g} s)")

    async def _beat(self, inst: Instrument) -> None:
        try:
            inst.latency = await inst.driver.heartbeat()
        except Exception as exc:  # noqa: BLE001 - a failed heartbeat is just not counted
            log.info("%s: heartbeat failed: %s", inst.id, exc)
            return
        inst.last_heartbeat = self.clock.now()

    async def _went_offline(self, inst: Instrument, why: str) -> None:
        inst.connected = False
        if inst.heartbeat_task is not None and not inst.heartbeat_task.done():
            # a heartbeat that never answered is abandoned: after the reconnect a fresh one is
            # sent, otherwise the instrument is declared stale again every stale_timeout forever
            inst.heartbeat_task.cancel()
        inst.heartbeat_task = None
        inst.next_reconnect = self.clock.now() + self.stale_timeout
        for job in list(inst.running.values()):
            if job.task is not None and not job.task.done():
                job.interrupt = (InstrumentUnavailable(f"{inst.id} went offline during order {job.order_id}: "
                                                       f"{why}", instrument_id=inst.id) if job.idempotent else
                                 OutcomeUnknown(f"{inst.id} went offline during order {job.order_id}: {why}",
                                                instrument_id=inst.id))
                job.task.cancel()
        await self._set_status(inst, ModuleStatus.Offline, why)

    # ------------------------------------------------------------------ operator control

    def _instrument(self, instrument_id: str) -> Instrument:
        inst = self.instruments.get(instrument_id)
        if inst is None:
            raise NotFoundError(f"no instrument '{instrument_id}' (instruments: {', '.join(self.instruments)})")
        return inst

    async def _operator(self, inst: Instrument, action: str, who: str, reason: str | None) -> None:
        now = self.clock.now()
        enabled, in_service = int(inst.enabled), int(inst.in_service and not inst.draining)
        audit = self.store.audit_op(who, action, inst.id, reason)

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO instruments (id, enabled, in_service, updated, updated_by) VALUES (?,?,?,?,?) "
                         "ON CONFLICT(id) DO UPDATE SET enabled=excluded.enabled, in_service=excluded.in_service, "
                         "updated=excluded.updated, updated_by=excluded.updated_by",
                         (inst.id, enabled, in_service, now, who))
            audit(conn)

        await self.store.write(op)
        self.bus.publish(OperatorAction(who=who, action=action, target=inst.id, reason=reason))
        await self._set_status(inst, inst.status if inst.connected else ModuleStatus.Offline,
                               self._idle_detail(inst))
        self.kick()

    async def set_enabled(self, instrument_id: str, enabled: bool, *, who: str, reason: str | None = None) -> None:
        inst = self._instrument(instrument_id)
        inst.enabled = enabled
        if enabled:
            inst.last_heartbeat = self.clock.now()  # not heartbeated while disabled: start afresh
            if not inst.connected:
                await self._connect(inst)
        await self._operator(inst, "enable instrument" if enabled else "disable instrument", who, reason)

    async def take_out_of_service(self, instrument_id: str, *, who: str, reason: str | None = None) -> None:
        """No new work; the running order finishes first (draining), then out of service."""
        inst = self._instrument(instrument_id)
        if not inst.in_service:
            raise StateError(f"{instrument_id} is already out of service")
        if inst.running:
            inst.draining = True
        else:
            inst.in_service = False
        await self._operator(inst, "take out of service", who, reason)

    async def release(self, instrument_id: str, *, who: str, reason: str | None = None) -> None:
        """Back in service after manual work."""
        inst = self._instrument(instrument_id)
        if inst.in_service and not inst.draining:
            raise StateError(f"{instrument_id} is in service")
        inst.in_service, inst.draining = True, False
        await self._operator(inst, "release to service", who, reason)

    async def reconnect(self, instrument_id: str, *, who: str, reason: str | None = None) -> bool:
        inst = self._instrument(instrument_id)
        if inst.running:
            raise StateError(f"{instrument_id} is running {', '.join(inst.running)}; reconnect when it is idle")
        if inst.connected:
            try:
                await inst.driver.disconnect()
            except Exception as exc:  # noqa: BLE001
                log.warning("%s: disconnect failed: %s", inst.id, exc)
            inst.connected = False
        ok = await self._connect(inst)
        await self._operator(inst, "reconnect instrument", who, reason)
        return ok

    def reprioritise(self, order_id: str, priority: int | None = None, biosero: int | None = None) -> None:
        self.queue.reprioritise(order_id, priority=priority, biosero=biosero)
        self.kick()

    async def start_now(self, order_id: str, *, who: str, reason: str | None = None) -> None:
        """A queued order waiting for its scheduled slot goes as soon as an instrument fits (audited)."""
        job = self.queue.jobs.get(order_id)
        if job is None or job.status is not JobStatus.QUEUED:
            raise StateError(f"{order_id} is not waiting in the queue")
        await self.store.audit(who, "start now", order_id, reason)
        job.scheduled = None
        self.queue.reprioritise(order_id)
        self.kick()

    async def send_to(self, order_id: str, instrument_id: str, *, who: str, reason: str | None = None) -> Job:
        """A queued step goes to this instrument: it becomes restricted to it (FullRestriction),
        in the queue and in the stored order, audited in the same transaction, then a dispatch
        pass runs. Refused (StateError, nothing changed) unless the step is queued, the instrument
        offers its capability and the step's restriction allows the instrument now."""
        authorize(self.store, who, "send to")
        inst = self._instrument(instrument_id)
        job = self.queue.jobs.get(order_id)
        if job is None or job.status is not JobStatus.QUEUED:
            raise StateError(f"{order_id} is not waiting in the queue: only a queued step can be sent "
                             f"to an instrument")
        if job.capability not in inst.capabilities:
            raise StateError(f"{instrument_id} cannot run {order_id}: the step needs {job.capability}, "
                             f"{instrument_id} offers {', '.join(sorted(inst.capabilities)) or 'nothing'}")
        if not self._eligible(job, inst, job.capability):
            listed = ", ".join(job.restrict)
            when = {ModuleRestrictionStrategy.UnlessBusy: "busy", ModuleRestrictionStrategy.UnlessError: "in Error",
                    ModuleRestrictionStrategy.UnlessOffline: "Offline"}.get(job.strategy)
            why = (f"{instrument_id} may take it only while all of them are {when}" if when is not None
                   else f"it may run only there, not on {instrument_id}")
            raise StateError(f"{order_id} is restricted to {listed} ({job.strategy.name}): {why}")
        full = ModuleRestrictionStrategy.FullRestriction
        before = {"restrictToModuleIds": ",".join(job.restrict) or None,
                  "moduleRestrictionStrategy": job.strategy.name}
        update = self.store.update_op(order_id, {"restrictToModuleIds": instrument_id,
                                                 "moduleRestrictionStrategy": full})
        audit = self.store.audit_op(who, "send to instrument", order_id, reason,
                                    {"instrument": instrument_id, "before": before})

        def op(conn: sqlite3.Connection) -> tuple[Order, tuple[Any, ...]]:
            changed = update(conn)
            audit(conn)
            return changed

        # the queue changes first (no dispatch pass can run before the write is awaited), and
        # back if the write fails
        previous = (job.restrict, job.strategy)
        job.restrict, job.strategy = (instrument_id,), full
        self.queue.reprioritise(order_id)
        try:
            order, row = await self.store.write(op)
        except BaseException:
            job.restrict, job.strategy = previous
            if job.status is JobStatus.QUEUED:
                self.queue.reprioritise(order_id)
            raise
        job.order = order
        self.bus.publish(OrderUpdated(order_id=order_id, fields=("restrictToModuleIds", "moduleRestrictionStrategy"),
                                      row=row))
        self.bus.publish(OperatorAction(who=who, action="send to instrument", target=order_id, reason=reason))
        self.kick()
        return job

    # ------------------------------------------------------------------ views

    def view(self) -> list[InstrumentView]:
        now = self.clock.now()
        return [InstrumentView(i.id, i.name, i.kind, i.status, i.detail, tuple(sorted(i.capabilities)),
                               i.enabled, i.in_service, i.draining, tuple(i.running), i.capacity,
                               (now - i.last_heartbeat) if i.last_heartbeat is not None else None,
                               i.utilisation(now, self._started_at), i.completed, i.failed,
                               i.latency, i.driver.info)
                for i in self.instruments.values()]

    def why_waiting(self, order_id: str) -> list[str]:
        """Plain-language reasons why a queued order has not started (empty if it is not queued)."""
        job = self.queue.jobs.get(order_id)
        if job is None or job.status is not JobStatus.QUEUED:
            return []
        now = self.clock.now()
        reasons: list[str] = []
        if self.queue.waiting_for_time(job, now):
            when = to_datetime(job.scheduled or 0).astimezone().strftime("%H:%M")
            reasons.append(f"scheduled for {when} (FirstAvailableSlot)")
        for capability in (job.capability, *job.reserve):
            having = [i for i in self.instruments.values() if capability in i.capabilities]
            if not having:
                reasons.append(f"no instrument has capability {capability}")
                continue
            usable = [i for i in having if self._eligible(job, i, capability)]
            if job.restrict and capability == job.capability:
                for m in job.restrict:
                    inst = self.instruments.get(m)
                    if inst is None:
                        reasons.append(f"restricted to module {m}, which is not in this workcell")
                    elif capability not in inst.capabilities:
                        reasons.append(f"restricted to module {m}, which does not offer {capability}")
                if job.strategy is not ModuleRestrictionStrategy.NoRestriction:
                    reasons.append(f"restricted to {', '.join(job.restrict)} ({job.strategy.name})")
            for inst in usable or having:
                reasons.append(self._instrument_reason(inst))
        ahead = self.queue.ahead_of(job)
        if ahead:
            reasons.append(f"behind {ahead} order{'s' if ahead != 1 else ''} served first for {job.capability} "
                           "(higher priority, an earlier window, a run under way or arrived earlier)")
        if not reasons:
            reasons.append("about to be dispatched")
        return list(dict.fromkeys(reasons))

    def _instrument_reason(self, inst: Instrument) -> str:
        if not inst.enabled:
            return f"{inst.id} is disabled"
        if not inst.in_service:
            return f"{inst.id} is out of service (manual work)"
        if inst.draining:
            return f"{inst.id} is being taken out of service"
        if not inst.connected or inst.status is ModuleStatus.Offline:
            return f"{inst.id} is Offline ({inst.detail})"
        if inst.status is ModuleStatus.Error:
            return f"{inst.id} is in Error ({inst.detail})"
        if len(inst.running) >= inst.capacity:
            return f"{inst.id} is busy with order {', '.join(inst.running)}"
        return f"{inst.id} is Ready"

    def jobs(self, statuses: Iterable[JobStatus] | None = None) -> list[Job]:
        wanted = set(statuses) if statuses is not None else None
        return [j for j in self.queue.jobs.values() if wanted is None or j.status in wanted]


__all__ = ["Dispatcher", "FINAL", "Instrument", "InstrumentView", "JOB_ORDER_STATUS", "Job", "JobQueue",
           "JobStatus", "LoadBalancing", "TRANSITIONS"]
