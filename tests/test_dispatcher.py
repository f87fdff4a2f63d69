"""Queue, dispatcher and simulated workcell: priorities, restrictions, balancing, reservations,
heartbeats and operator control, on a virtual clock with the engine on top."""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref

import pytest
from dispatchkit import WORKCELL, run_dkit

from core.clock import to_datetime
from core.dispatcher import JOB_ORDER_STATUS, Job, JobQueue, JobStatus, instrument_state
from core.drivers import InstrumentUnavailable, OrderCancelled
from core.engine import RunStatus
from core.errors import DuplicateSubmissionError, IllegalTransitionError, StateError
from core.events import InstrumentStatusChanged
from core.orders import ModuleRestrictionStrategy, ModuleStatus, Order, OrderStatus

READ = {"id": "read", "kind": "PlateReader.ReadPlate"}


def test_job_state_machine_refuses_illegal_transitions():
    job = Job("O1", Order(), "X.Y")
    job.to(JobStatus.QUEUED)
    with pytest.raises(IllegalTransitionError, match="queued -> completed"):
        job.to(JobStatus.COMPLETED)
    assert job.status is JobStatus.QUEUED  # nothing changed
    for status in (JobStatus.DISPATCHED, JobStatus.RUNNING, JobStatus.COMPLETED):
        job.to(status)
    with pytest.raises(IllegalTransitionError):
        job.to(JobStatus.RUNNING)
    assert JOB_ORDER_STATUS[JobStatus.TIMEOUT] is OrderStatus.Error
    assert set(JOB_ORDER_STATUS) == set(JobStatus)


def test_order_of_service_and_reprioritise():
    q = JobQueue()
    jobs = {
        "std50": Job("std50", Order(), "C", biosero=0, priority=50),
        "std90": Job("std90", Order(), "C", biosero=0, priority=90),
        "elev10": Job("elev10", Order(), "C", biosero=-1, priority=10),
        "std90_late": Job("std90_late", Order(), "C", biosero=0, priority=90),
        "std90_sched": Job("std90_sched", Order(), "C", biosero=0, priority=90, scheduled=5.0),
    }
    for name in ("std50", "std90_late", "std90_sched", "elev10"):
        q.enqueue(jobs[name], now=10.0)
    q.enqueue(jobs["std90"], now=10.0)
    order = []
    while (head := q.head(("any", "C"))) is not None:
        order.append(head.order_id)
        q.take(head)
    # Elevated first; then priority 90 by scheduled time (5 before none=0? none sorts first), then FIFO
    assert order == ["elev10", "std90_late", "std90", "std90_sched", "std50"]
    q2 = JobQueue()
    a, b = Job("a", Order(), "C", priority=10), Job("b", Order(), "C", priority=20)
    q2.enqueue(a, 0)
    q2.enqueue(b, 0)
    assert q2.head(("any", "C")) is b
    q2.reprioritise("a", priority=99)
    assert q2.head(("any", "C")) is a
    q2.reprioritise("a", priority=5)  # lowered: the stale, better entry must not keep it first
    assert q2.head(("any", "C")) is b
    q2.reprioritise("b", biosero=1)   # Low (Biosero) goes behind any Standard
    assert q2.head(("any", "C")) is a
    assert q2.ahead_of(b) == 1 and q2.ahead_of(a) == 0
    with pytest.raises(StateError, match="not queued"):
        q2.reprioritise("zzz", priority=1)
    # a priority out of range is refused naming it, and the job keeps its place and priority
    with pytest.raises(ValueError, match=r"^priority must be 0\.\.100, not 101$"):
        q2.reprioritise("a", priority=101)
    with pytest.raises(ValueError, match=r"^priority must be 0\.\.100, not -1$"):
        q2.reprioritise("b", priority=-1)
    assert (a.priority, b.priority) == (5, 20) and q2.head(("any", "C")) is a


def test_cancelled_queued_jobs_do_not_stay_in_the_heaps():
    """A bulk cancel of queued steps with no dispatch after it (their instruments busy or gone)
    must not keep every cancelled job, its order and its run alive in the heaps."""
    q = JobQueue()
    jobs = [Job(f"O{i}", Order(), "C", priority=i % 7,
                scheduled=50.0 if i % 5 == 0 else None) for i in range(2000)]
    for job in jobs:
        q.enqueue(job, now=10.0)
    keep = {jobs[3].order_id, jobs[1500].order_id, jobs[10].order_id}
    for job in jobs:
        if job.order_id not in keep:
            q.take(job, JobStatus.CANCELLED)
    refs = [weakref.ref(job) for job in jobs if job.order_id not in keep]
    for job in jobs:
        if job.order_id not in keep:
            q.forget(job)
    del jobs, job
    gc.collect()
    assert sum(ref() is not None for ref in refs) < 300, "cancelled jobs still held by the queue"
    assert len(q) == 3
    served = []
    q.release_due(100.0)
    while (head := q.head(("any", "C"))) is not None:
        served.append(head.order_id)
        q.take(head)
    assert served == ["O3", "O10", "O1500"]  # priority 3 (first come first) before 2



def test_a_compaction_lets_go_of_the_canceled_jobs_a_few_at_a_time():
    """Freeing the jobs and orders of 5,000 canceled steps at the compaction was 24-48 ms of one
    loop step of a bulk cancel: they are let go a few at each later take, the rest by release()."""
    from core.dispatcher import COMPACT_AFTER, RELEASE_PER_TAKE

    q = JobQueue()
    jobs = [Job(f"O{i}", Order(), "C") for i in range(2 * COMPACT_AFTER + 10)]
    for job in jobs:
        q.enqueue(job, now=0.0)
    refs = {job.order_id: weakref.ref(job) for job in jobs}
    canceled = COMPACT_AFTER + 6  # one more than the queued ones left: the compaction comes
    for job in jobs[:canceled]:
        q.take(job, JobStatus.CANCELLED)
        q.forget(job)
    assert len(q) == len(jobs) - canceled
    del jobs, job
    gc.collect()
    alive = sum(r() is not None for r in refs.values())
    assert alive >= len(refs) - RELEASE_PER_TAKE, "the take that compacted let go of a few, no more"
    first = q.head(("any", "C"))
    assert first is not None and first.order_id == f"O{canceled}", "the heap holds only what is queued"
    q.take(first)  # dispatched: a take lets go of a few
    del first
    gc.collect()
    assert sum(r() is not None for r in refs.values()) >= len(refs) - 2 * RELEASE_PER_TAKE
    assert q.release(10**6) == 0 and q.release(0) == 0
    gc.collect()
    gone = {oid for oid, r in refs.items() if r() is None}
    assert gone == {f"O{i}" for i in range(canceled)}, "every canceled job is freed"

def test_priorities_decide_who_gets_the_single_sealer(data_dir):
    async def scenario(kit):
        await kit.publish("Seal", [{"id": "s", "kind": "Sealer.Seal"}])
        runs = [await kit.run("Seal", priority=p) for p in (10, 90, 50)]
        elevated = await kit.engine.create_instance("Seal", {}, priority=5, biosero_priority="Elevated",
                                                    allow_duplicate=True)
        await kit.engine.execute_workflow(elevated)
        await kit.until_done(*runs, elevated)
        starts = {r: kit.steps(r)["s"]["started_at"] for r in [*runs, elevated]}
        return runs, elevated, starts

    runs, elevated, starts = run_dkit(data_dir, scenario)
    # the first run grabbed the idle sealer at once; then Elevated, then 90, then 50
    ordered = sorted(starts, key=starts.get)
    assert ordered == [runs[0], elevated, runs[1], runs[2]]


def test_a_pass_with_jobs_waiting_for_busy_instruments_ends_quietly_and_they_run_later(data_dir):
    """Four reads for two readers: while both read, every dispatch pass (the arm and the sealer
    are free, nothing waiting suits them) ends without assigning anything and without an error
    on the event loop; the two waiting reads start when the readers free up."""
    async def scenario(kit):
        loop = asyncio.get_running_loop()
        errors: list[dict] = []
        previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        try:
            await kit.publish("Read", [READ])
            runs = [await kit.run("Read") for _ in range(4)]
            await kit.clock.advance(1)
            early = sorted(kit.steps(r)["read"]["status"] for r in runs)
            kit.dispatcher.kick()  # one more pass while both readers are busy
            await kit.clock.settle()
            await kit.until_done(*runs)
            starts = sorted(kit.steps(r)["read"]["started_at"] - kit.steps(runs[0])["read"]["started_at"]
                            for r in runs)
            return early, starts, [kit.status(r) for r in runs], errors
        finally:
            loop.set_exception_handler(previous)

    early, starts, statuses, errors = run_dkit(data_dir, scenario)
    assert early == ["queued", "queued", "running", "running"], "more reads than readers: two wait"
    assert not errors, [c.get("exception") or c.get("message") for c in errors]
    assert statuses == [RunStatus.COMPLETED] * 4
    assert starts == pytest.approx([0, 0, 60, 60], abs=1)


def test_module_restriction_strategies(data_dir):
    """Each strategy with Reader2 listed while Reader2 is busy, then while it is in Error/Offline."""

    async def scenario(kit):
        await kit.publish("Hog", [{**READ, "restrict_to": ["Reader2"], "module_restriction": "FullRestriction",
                                   "parameters": {"duration": 600}}])
        for strategy in ModuleRestrictionStrategy:
            await kit.publish(f"R{strategy.name}", [{**READ, "restrict_to": ["Reader2"],
                                                      "module_restriction": strategy.name}])
        busy, waiting = {}, None
        for strategy in ModuleRestrictionStrategy:
            hog = await kit.run("Hog")
            await kit.clock.advance(1)
            run_id = await kit.run(f"R{strategy.name}")
            await kit.clock.advance(1)
            busy[strategy.name] = kit.steps(run_id)["read"]["instrument"]
            if strategy is ModuleRestrictionStrategy.FullRestriction:
                waiting = kit.dispatcher.why_waiting(kit.steps(run_id)["read"]["order_id"])
            await kit.until_done(hog, run_id)
            busy[strategy.name] = (busy[strategy.name], kit.steps(run_id)["read"]["instrument"])
        # Reader2 in Error (idle, connected): only UnlessError (and NoRestriction) fall back
        reader2 = kit.dispatcher.instruments["Reader2"]
        await kit.dispatcher._set_status(reader2, ModuleStatus.Error, "lamp failure")
        in_error, waiting_runs = {}, []
        for strategy in ModuleRestrictionStrategy:
            run_id = await kit.run(f"R{strategy.name}")
            await kit.clock.advance(1)
            in_error[strategy.name] = kit.steps(run_id)["read"]["instrument"]
            if in_error[strategy.name] is None:
                waiting_runs.append(run_id)
            else:
                await kit.until_done(run_id)  # leave Reader1 free for the next strategy
        errors_reason = kit.dispatcher.why_waiting(kit.steps(waiting_runs[-1])["read"]["order_id"])
        await kit.dispatcher._set_status(reader2, ModuleStatus.Ready, "ready")
        kit.dispatcher.kick()
        await kit.until_done(*waiting_runs)
        # Reader2 offline: UnlessOffline falls back, FullRestriction keeps waiting (the runs are
        # submitted within the stale timeout after it went offline, before it is reconnected)
        kit.drivers["Reader2"].inject(heartbeat="missing")
        await kit.until(lambda: reader2.status is ModuleStatus.Offline)
        offline = {}
        for name in ("UnlessOffline", "FullRestriction", "UnlessError"):
            run_id = await kit.run(f"R{name}")
            await kit.clock.advance(1)
            offline[name] = kit.steps(run_id)["read"]["instrument"]
        return busy, waiting, offline, in_error, errors_reason

    busy, waiting, offline, in_error, errors_reason = run_dkit(data_dir, scenario)
    # (instrument one second after submission, instrument that finally ran it)
    assert busy["NoRestriction"] == ("Reader1", "Reader1")
    assert busy["UnlessBusy"] == ("Reader1", "Reader1")       # Reader2 busy -> any reader
    assert busy["UnlessError"] == (None, "Reader2")           # not in Error -> waits for Reader2
    assert busy["UnlessOffline"] == (None, "Reader2")
    assert busy["FullRestriction"] == (None, "Reader2")
    assert any("Reader2 is busy with order" in r for r in waiting)
    assert "restricted to Reader2 (FullRestriction)" in waiting
    assert offline == {"UnlessOffline": "Reader1", "FullRestriction": None, "UnlessError": None}
    assert in_error == {"NoRestriction": "Reader1", "UnlessBusy": None, "UnlessError": "Reader1",
                        "UnlessOffline": None, "FullRestriction": None}
    assert any("Reader2 is in Error (lamp failure)" in r for r in errors_reason)


@pytest.mark.parametrize("strategy", ["round_robin", "least_loaded", "random", "affinity"])
def test_load_balancing_strategies(data_dir, strategy):
    async def scenario(kit):
        await kit.publish("TwoReads", [{"id": "r1", "kind": "PlateReader.ReadPlate"},
                                       {"id": "m", "kind": "RobotArm.MovePlate", "depends_on": ["r1"]},
                                       {"id": "r2", "kind": "PlateReader.ReadPlate", "depends_on": ["m"]}])
        runs = []
        for _ in range(4):
            runs.append(await kit.run("TwoReads"))
            await kit.until_done(runs[-1])
        return [(kit.steps(r)["r1"]["instrument"], kit.steps(r)["r2"]["instrument"]) for r in runs]

    used = run_dkit(data_dir, scenario, strategy=strategy)
    if strategy == "round_robin":
        sequence = [i for pair in used for i in pair]  # every read, in order
        assert sequence == ["Reader1", "Reader2"] * 4
    elif strategy == "least_loaded":
        assert {i for pair in used for i in pair} == {"Reader1", "Reader2"}  # busier reader avoided
    elif strategy == "random":
        assert used == run_dkit(data_dir / "again", scenario, strategy=strategy)  # seeded
    else:
        assert all(a == b for a, b in used)  # the second read goes where the first one ran


def test_least_loaded_weighs_running_orders_by_capacity(data_dir):
    """Reader1 runs up to 4 orders at once, Reader2 up to 2: least_loaded compares the share of
    each one's capacity in use (running / capacity), not the count of running orders."""
    cell = (WORKCELL.replace("{id: Reader1, kind: PlateReader,", "{id: Reader1, kind: PlateReader, max_concurrent: 4,")
            .replace("{id: Reader2, kind: PlateReader,", "{id: Reader2, kind: PlateReader, max_concurrent: 2,"))
    assert cell.count("max_concurrent") == 2

    async def scenario(kit):
        await kit.publish("Read", [READ])
        runs = []
        for _ in range(6):
            runs.append(await kit.run("Read"))
            await kit.clock.advance(1)  # each read starts before the next arrives
        placed = [kit.steps(r)["read"]["instrument"] for r in runs]
        await kit.until_done(*runs)
        return placed, {i.id: i.capacity for i in kit.dispatcher.instruments.values()}

    placed, capacities = run_dkit(data_dir, scenario, workcell=cell, strategy="least_loaded")
    assert capacities["Reader1"] == 4 and capacities["Reader2"] == 2
    # loads (R1 of 4, R2 of 2): 0,0 -> R1 (tie: id); .25,0 -> R2; .25,.5 -> R1; .5,.5 -> R2
    # (tie: R2 was busy for less of the time); R2 full -> R1, R1. Counting running orders
    # instead would put the third read on R2 (1 = 1, R2 less busy so far).
    assert placed == ["Reader1", "Reader2", "Reader1", "Reader2", "Reader1", "Reader1"]


def test_affinity_keeps_each_workflow_on_the_instrument_its_earlier_runs_used(data_dir):
    """Under the affinity strategy a new run of a workflow reads on the reader that workflow's
    last run used: two workflows that first ran side by side, each on its own reader, keep to
    their own reader."""
    async def scenario(kit):
        await kit.publish("ReadA", [READ])
        await kit.publish("ReadB", [READ])
        first_b = await kit.run("ReadB")  # both readers idle: Reader1, the first by id
        await kit.clock.advance(1)
        first_a = await kit.run("ReadA")  # Reader1 busy: Reader2
        await kit.until_done(first_b, first_a)
        placed = [("ReadB", kit.steps(first_b)["read"]["instrument"]),
                  ("ReadA", kit.steps(first_a)["read"]["instrument"])]
        for name in ("ReadA", "ReadB", "ReadA"):  # one at a time, both readers idle each time
            run_id = await kit.run(name)
            await kit.until_done(run_id)
            placed.append((name, kit.steps(run_id)["read"]["instrument"]))
        return placed

    # each time both readers are idle and have read equally long: without the workflow's own
    # history every read would go to Reader1
    assert run_dkit(data_dir, scenario, strategy="affinity") == [
        ("ReadB", "Reader1"), ("ReadA", "Reader2"), ("ReadA", "Reader2"), ("ReadB", "Reader1"), ("ReadA", "Reader2")]


def test_many_kicks_in_one_loop_turn_make_one_dispatch_pass(data_dir):
    """Every status change kicks the dispatcher; the kicks made before the loop turns over are
    served by a single dispatch pass, and a kick after that pass asks for a new one."""
    async def scenario(kit):
        d = kit.dispatcher
        passes: list[float] = []
        real = d._dispatch_pass  # noqa: SLF001

        def counted() -> None:
            passes.append(kit.clock.now())
            real()

        d._dispatch_pass = counted  # noqa: SLF001
        for _ in range(5):
            d.kick()
        for _ in range(3):
            await asyncio.sleep(0)
        after_five = len(passes)
        d.kick()
        d.kick()
        for _ in range(3):
            await asyncio.sleep(0)
        return after_five, len(passes)

    assert run_dkit(data_dir, scenario) == (1, 2)


def test_atomic_reservation_has_no_deadlock_where_naive_locking_has(data_dir):
    """Two steps each need the arm and a reader. Naive one-at-a-time locking in opposite orders
    deadlocks; the dispatcher reserves both or neither."""

    async def naive() -> bool:
        arm, reader = asyncio.Lock(), asyncio.Lock()

        async def step(first, second):
            async with first:
                await asyncio.sleep(0.01)
                async with second:
                    await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(asyncio.gather(step(arm, reader), step(reader, arm)), 0.5)
            return True
        except TimeoutError:
            return False

    assert asyncio.run(naive()) is False, "the naive version deadlocks"
    reader2 = ("  - {id: Reader2, kind: PlateReader, driver: simulated, capabilities: "
               "{PlateReader.ReadPlate: {duration: 60s, jitter: 0s, duration_input: duration}}}\n")
    assert reader2 in WORKCELL
    cell = WORKCELL.replace(reader2, "")  # one reader: the two kinds of step compete for it

    async def scenario(kit):
        await kit.publish("ArmFirst", [{"id": "x", "kind": "RobotArm.MovePlate", "reserve": ["PlateReader.ReadPlate"]}])
        await kit.publish("ReaderFirst", [{"id": "x", "kind": "PlateReader.ReadPlate", "reserve": ["RobotArm.MovePlate"]}])
        runs = []
        for _ in range(3):
            runs.append(await kit.run("ArmFirst"))
            runs.append(await kit.run("ReaderFirst"))
        used = await kit.until_done(*runs)
        held = [(kit.steps(r)["x"]["started_at"], kit.steps(r)["x"]["completed_at"]) for r in runs]
        return runs, used, held, kit

    runs, used, held, kit = run_dkit(data_dir, scenario, workcell=cell)
    assert set(kit.dispatcher.instruments) == {"Reader1", "Arm", "Sealer"}
    assert all(kit.status(r).value == "completed" for r in runs)
    held.sort()
    assert all(a[1] <= b[0] for a, b in zip(held, held[1:], strict=False)), "never both held at once"


def test_blocked_high_priority_job_is_not_starved(data_dir):
    async def scenario(kit):
        await kit.publish("Needs2", [{"id": "x", "kind": "PlateReader.ReadPlate", "reserve": ["RobotArm.MovePlate"]}])
        await kit.publish("ArmLong", [{"id": "a", "kind": "RobotArm.MovePlate", "parameters": {"duration": 100}}])
        await kit.publish("Read", [READ])
        arm = await kit.run("ArmLong")
        await kit.clock.advance(1)
        big = await kit.run("Needs2", priority=90)   # needs a reader AND the (busy) arm
        small = [await kit.run("Read", priority=10) for _ in range(4)]  # readers are free now
        await kit.clock.advance(1)
        early = [kit.steps(r)["read"]["status"] for r in small]
        await kit.until_done(arm, big, *small)
        big_start = kit.steps(big)["x"]["started_at"]
        small_starts = sorted(kit.steps(r)["read"]["started_at"] for r in small)
        return early, big_start, small_starts

    early, big_start, small_starts = run_dkit(data_dir, scenario)
    # one reader is earmarked for the high-priority job; low-priority reads use the other
    assert early.count("running") == 1
    assert big_start <= small_starts[2]


def test_scheduled_orders_wait_for_their_slot(data_dir):
    async def scenario(kit):
        await kit.publish("Read", [READ])
        run_id = await kit.engine.create_instance("Read", {}, allow_duplicate=True)
        # a FirstAvailableSlot order for one hour from now (as Data Services orders carry it)
        order = Order(identifier="Order_99", templateName="PlateReader.ReadPlate",
                      schedulingStrategy="FirstAvailableSlot", scheduledStartTime=to_datetime(kit.clock.now() + 3600))
        job = Job("Order_99", order, "PlateReader.ReadPlate", scheduled=kit.clock.now() + 3600)
        task = asyncio.ensure_future(kit.dispatcher.submit(job))
        await kit.engine.execute_workflow(run_id)
        await kit.clock.advance(120)
        before = job.status
        reasons = kit.dispatcher.why_waiting("Order_99")
        await kit.clock.advance(3600)
        await kit.until(task.done)
        return before, reasons, job, task.result()

    before, reasons, job, outputs = run_dkit(data_dir, scenario)
    assert before is JobStatus.QUEUED
    assert any(r.startswith("scheduled for ") for r in reasons)
    assert job.status is JobStatus.COMPLETED and "absorbance" in outputs


def test_why_waiting_names_missing_capability_and_offline_modules(data_dir):
    async def scenario(kit):
        await kit.publish("Cent", [{"id": "c", "kind": "Centrifuge.Spin"}])
        await kit.publish("Read", [READ])
        await kit.publish("Cold", [{"id": "seal", "kind": "Sealer.Seal", "reserve": ["Incubator.Hold"]}])
        c = await kit.run("Cent")
        cold = await kit.run("Cold")
        await kit.dispatcher.set_enabled("Reader1", False, who="ann", reason="lamp change")
        await kit.dispatcher.take_out_of_service("Reader2", who="ann", reason="cleaning")
        r = await kit.run("Read")
        await kit.clock.advance(5)
        return (kit.steps(c)["c"], kit.steps(cold)["seal"],
                kit.dispatcher.why_waiting(kit.steps(r)["read"]["order_id"]), kit)

    cent, seal, read, kit = run_dkit(data_dir, scenario)
    # a capability nobody offers would wait forever: the step fails at once, saying so
    assert cent["status"] == "failed" and cent["error_code"] == "NoCapability"
    assert "no instrument of this workcell offers 'Centrifuge.Spin'" in cent["error"]
    # so does one it would hold besides its own (its reserve), though its own kind is offered
    assert (seal["status"], seal["error_code"]) == ("failed", "NoCapability")
    assert seal["error"] == ("no instrument of this workcell offers 'Incubator.Hold' "
                             "(offered: PlateReader.ReadPlate, RobotArm.MovePlate, Sealer.Seal)")
    assert read == ["Reader1 is disabled", "Reader2 is out of service (manual work)"]
    audit = [(a.who, a.action, a.target, a.reason) for a in kit.store.audit_entries()]
    assert ("ann", "disable instrument", "Reader1", "lamp change") in audit
    assert ("ann", "take out of service", "Reader2", "cleaning") in audit


def test_out_of_service_waits_for_the_running_order_then_release(data_dir):
    async def scenario(kit):
        await kit.publish("Seal", [{"id": "s", "kind": "Sealer.Seal"}])
        first = await kit.run("Seal")
        await kit.clock.advance(5)
        await kit.dispatcher.take_out_of_service("Sealer", who="bo")
        draining = kit.dispatcher.instruments["Sealer"].draining
        second = await kit.run("Seal")
        await kit.clock.advance(100)
        states = (kit.status(first).value, kit.steps(second)["s"]["status"],
                  kit.dispatcher.instruments["Sealer"].in_service)
        await kit.dispatcher.release("Sealer", who="bo", reason="done")
        await kit.until_done(second)
        return draining, states, kit.status(second).value

    draining, states, second = run_dkit(data_dir, scenario)
    assert draining is True
    assert states == ("completed", "queued", False)
    assert second == "completed"


@pytest.mark.parametrize("idempotent", [True, False])
def test_stale_heartbeat_takes_instrument_offline_mid_order(data_dir, idempotent):
    async def scenario(kit):
        await kit.publish("Seal", [{"id": "s", "kind": "Sealer.Seal", "idempotent": idempotent,
                                    "parameters": {"duration": 600},
                                    "retry_policy": {"max_attempts": 2, "initial_interval": 1}}],
                          failure_policy="pause")
        run_id = await kit.run("Seal")
        await kit.clock.advance(10)
        kit.drivers["Sealer"].inject(heartbeat="missing")
        await kit.clock.advance(60)
        sealer = kit.dispatcher.instruments["Sealer"]
        snapshot = (sealer.status, sealer.detail)
        step = kit.steps(run_id)["s"]
        return run_id, snapshot, step, kit

    run_id, (status, detail), step, kit = run_dkit(data_dir, scenario)
    assert status is ModuleStatus.Offline and "heartbeat stale" in detail
    if idempotent:
        assert step["status"] in ("retrying", "queued")  # retried, waits for an instrument
        assert step["error_code"] == "InstrumentUnavailable", "it may run again: not an unknown outcome"
    else:
        assert step["status"] == "unknown" and step["error_code"] == "OutcomeUnknown"
        assert kit.engine.get_instance(run_id)["status"] == "paused"
    log = kit.store.read_sync(lambda c: c.execute(
        "SELECT from_status, to_status, detail FROM instrument_log WHERE instrument_id='Sealer'").fetchall())
    assert log[-1][:2] == ("Busy", "Offline") and "heartbeat stale" in log[-1][2]
    order_log = [t.why or "" for t in kit.store.transitions(step["order_id"])]
    assert any("went offline" in w for w in order_log)


def test_disconnect_fault_mid_order_and_reconnect(data_dir):
    async def scenario(kit):
        await kit.publish("Seal", [{"id": "s", "kind": "Sealer.Seal", "idempotent": True,
                                    "retry_policy": {"max_attempts": 3, "initial_interval": 1}}])
        kit.drivers["Sealer"].inject(disconnect_after=0)
        run_id = await kit.run("Seal")
        await kit.until_done(run_id)  # the link drops; the dispatcher reconnects; the retry runs
        log = kit.store.read_sync(lambda c: c.execute(
            "SELECT to_status FROM instrument_log WHERE instrument_id='Sealer' ORDER BY seq").fetchall())
        ok = await kit.dispatcher.reconnect("Sealer", who="cy", reason="cable reseated")
        return [r[0] for r in log], kit.status(run_id).value, kit.steps(run_id)["s"]["attempt"], ok, kit

    log, final, attempts, ok, kit = run_dkit(data_dir, scenario)
    assert "Offline" in log[1:] and log[-1] == "Ready"
    assert final == "completed" and attempts == 2
    assert ok is True
    assert ("cy", "reconnect instrument", "Sealer", "cable reseated") in [
        (a.who, a.action, a.target, a.reason) for a in kit.store.audit_entries()]


def test_duplicate_submission_is_refused_naming_the_earlier_run(data_dir):
    async def scenario(kit):
        await kit.publish("Read", [READ])
        first = await kit.engine.create_instance("Read", {}, requester="lims")
        with pytest.raises(DuplicateSubmissionError) as info:
            await kit.engine.create_instance("Read", {}, requester="lims")
        other = await kit.engine.create_instance("Read", {}, requester="someone else")
        await kit.clock.advance(11)
        later = await kit.engine.create_instance("Read", {}, requester="lims")
        return first, info.value, other, later

    first, error, other, later = run_dkit(data_dir, scenario)
    assert error.earlier_id == first and f"as run {first}" in str(error)
    assert len({first, other, later}) == 3


def test_re_enabled_instrument_is_not_declared_stale(data_dir):
    async def scenario(kit):
        await kit.publish("Seal", [{"id": "s", "kind": "Sealer.Seal"}])
        await kit.dispatcher.set_enabled("Sealer", False, who="x", reason="check")
        await kit.clock.advance(120)  # longer than the stale timeout
        await kit.dispatcher.set_enabled("Sealer", True, who="x")
        run_id = await kit.run("Seal")
        await kit.until_done(run_id)
        return kit.status(run_id).value, kit.dispatcher.instruments["Sealer"].status

    final, status = run_dkit(data_dir, scenario)
    assert final == "completed" and status is ModuleStatus.Ready


def test_a_timed_out_step_frees_its_instrument_for_the_queue(data_dir):
    async def scenario(kit):
        await kit.publish("Hang", [{"id": "r", "kind": "PlateReader.ReadPlate", "timeout_seconds": 30,
                                    "restrict_to": ["Reader1"], "module_restriction": "FullRestriction",
                                    "parameters": {"duration": 3600}}], failure_policy="abort")
        await kit.publish("Read1", [{"id": "r", "kind": "PlateReader.ReadPlate", "restrict_to": ["Reader1"],
                                     "module_restriction": "FullRestriction"}])
        hang = await kit.run("Hang")
        queued = [await kit.run("Read1") for _ in range(3)]
        await kit.until_done(hang, *queued)
        return kit.status(hang).value, [kit.status(r).value for r in queued]

    hang, queued = run_dkit(data_dir, scenario)
    assert hang == "failed" and queued == ["completed"] * 3


def test_a_cancelled_queued_step_leaves_no_cycle_for_the_garbage_collector(data_dir):
    """The cancel's error reaches the engine through the job's future; its traceback holds the
    job. Freed by reference counting, not left (with every frame it holds) to a full collection,
    which a bulk cancel of thousands of queued steps made long enough to stall the window."""
    async def scenario(kit):
        await kit.publish("Seal", [{"id": "s", "kind": "Sealer.Seal"}])
        runs = [await kit.run("Seal") for _ in range(12)]  # one Sealer: one runs, the rest queue
        await kit.clock.settle()
        gc.collect()
        gc.disable()
        # type(): a dead weak proxy raises on isinstance; what an earlier test still holds is not counted
        before = {id(o) for o in gc.get_objects() if type(o) is OrderCancelled}
        try:
            for run_id in runs[1:]:
                await kit.engine.cancel(run_id, who="ann")
            await kit.clock.settle()
            await kit.store.drain()
            return [o for o in gc.get_objects() if type(o) is OrderCancelled and id(o) not in before], runs
        finally:
            gc.enable()

    left, runs = run_dkit(data_dir, scenario)
    assert left == [], f"{len(left)} cancel errors wait for the garbage collector"



def test_the_heartbeat_round_lets_go_of_what_a_compaction_took_out(data_dir, monkeypatch):
    """Canceled queued steps with nothing taken from the queue after them: the dispatcher's
    heartbeat rounds free what the compaction kept to let go of later."""
    import core.dispatcher as dispatcher_module

    monkeypatch.setattr(dispatcher_module, "COMPACT_AFTER", 4)  # a compaction after a few cancels
    monkeypatch.setattr(dispatcher_module, "RELEASE_PER_TAKE", 0)  # only the rounds let go

    async def scenario(kit):
        await kit.publish("Seal", [{"id": "s", "kind": "Sealer.Seal"}])
        runs = [await kit.run("Seal") for _ in range(12)]  # one Sealer: one runs, the rest queue
        await kit.clock.settle()
        for run_id in runs[1:10]:
            await kit.engine.cancel(run_id, who="ann")
        await kit.clock.settle()
        kept = kit.dispatcher.queue.release(0)
        await kit.clock.advance(3 * kit.dispatcher.heartbeat_interval)
        return kept, kit.dispatcher.queue.release(0)

    kept, left = run_dkit(data_dir, scenario)
    assert kept > 0, "the compaction kept the old entries to let go of later"
    assert left == 0, "the heartbeat rounds let go of them"

def test_a_job_canceled_while_its_start_is_recorded_frees_its_instrument(data_dir):
    """The engine cancels a step's attempt while the dispatcher waits for its Running transition
    to commit (the instrument taken, nothing started on it): the instrument must be free again,
    not held by a job nobody runs (later steps for it would queue for ever)."""
    async def scenario(kit):
        recorded = asyncio.get_running_loop().create_future()  # the commit never comes
        order = Order(identifier="Order_77", templateName="PlateReader.ReadPlate")
        job = Job("Order_77", order, "PlateReader.ReadPlate", on_started=lambda _inst: recorded)
        attempt = asyncio.ensure_future(kit.dispatcher.submit(job))
        await kit.until(lambda: job.status is JobStatus.RUNNING)
        taken = {v.id: v.running for v in kit.dispatcher.view()}
        withdrawn = kit.dispatcher.withdraw(job.order_id)  # as the engine stops an attempt
        confirmed = await kit.dispatcher.cancel(job.order_id)
        attempt.cancel()
        await asyncio.gather(attempt, return_exceptions=True)
        await kit.clock.advance(1)
        left = {v.id: v.running for v in kit.dispatcher.view()}
        await kit.publish("Read", [READ])
        after = await kit.run("Read")
        await kit.until_done(after)
        return taken, withdrawn, confirmed, job, left, kit.status(after)

    taken, withdrawn, confirmed, job, left, after = run_dkit(data_dir, scenario)
    assert any("Order_77" in running for running in taken.values())
    assert withdrawn is True and confirmed is False  # nothing ran on the instrument: withdrawn at once
    assert job.status is JobStatus.CANCELLED
    assert not any("Order_77" in running for running in left.values()), left
    assert after is RunStatus.COMPLETED


def test_a_failed_disconnect_is_logged_and_the_instrument_counts_as_disconnected_until_it_connects(data_dir, caplog):
    """A reconnect whose disconnect fails logs why and goes on: while the driver connects again the
    instrument is not connected; closing the dispatcher logs a failed disconnect too."""
    async def scenario(kit):
        driver = kit.drivers["Sealer"]
        inst = kit.dispatcher.instruments["Sealer"]
        entered, gate, connect = asyncio.Event(), asyncio.Event(), driver.connect

        async def failing_disconnect():
            raise InstrumentUnavailable("cable cut", instrument_id="Sealer")

        async def slow_connect():
            entered.set()
            await gate.wait()
            await connect()

        driver.disconnect, driver.connect = failing_disconnect, slow_connect
        reconnect = asyncio.create_task(kit.dispatcher.reconnect("Sealer", who="cy", reason="cable reseated"))
        await entered.wait()
        connecting = inst.connected
        gate.set()
        ok = await reconnect
        connected = inst.connected
        await kit.dispatcher.close()
        return connecting, ok, connected

    with caplog.at_level(logging.WARNING, logger="core.dispatcher"):
        connecting, ok, connected = run_dkit(data_dir, scenario)
    assert (connecting, ok, connected) == (False, True, True)
    failed = [r.getMessage() for r in caplog.records if "disconnect failed" in r.getMessage()]
    assert failed[:2] == ["Sealer: disconnect failed: cable cut"] * 2


def test_each_instrument_is_shown_in_one_state(data_dir):
    """Module status first for trouble, then the operator's decisions, then Busy or Ready."""
    async def scenario(kit):
        states = [{v.id: instrument_state(v) for v in kit.dispatcher.view()}]
        await kit.dispatcher.set_enabled("Sealer", False, who="cy")
        await kit.dispatcher.take_out_of_service("Reader1", who="cy", reason="lamp")
        states.append({v.id: instrument_state(v) for v in kit.dispatcher.view()})
        with pytest.raises(StateError, match="^Reader2 is in service$"):
            await kit.dispatcher.release("Reader2", who="cy")
        return states

    idle, decided = run_dkit(data_dir, scenario)
    assert set(idle.values()) == {"Ready"}
    assert (decided["Sealer"], decided["Reader1"], decided["Reader2"]) == ("Disabled", "OutOfService", "Ready")


def test_a_disconnected_instrument_is_tried_again_when_its_reconnect_time_comes(data_dir):
    """After a failed connect the instrument is tried again stale_timeout (30 s) later: at that
    very heartbeat round, not one round after it."""
    async def scenario(kit):
        t0 = kit.clock.now()
        kit.drivers["Sealer"].inject(connect_fail=1)
        ok = await kit.dispatcher.reconnect("Sealer", who="cy", reason="cable reseated")
        await kit.clock.advance(30)
        log = kit.store.read_sync(lambda c: c.execute(
            "SELECT at, to_status, detail FROM instrument_log WHERE instrument_id='Sealer' AND at >= ? "
            "ORDER BY seq", (t0,)).fetchall())
        return ok, [(at - t0, status, detail) for at, status, detail in log]

    ok, log = run_dkit(data_dir, scenario)
    assert ok is False
    assert log[-2:] == [(0.0, "Offline", "connect failed: Sealer: connection refused (simulated)"),
                        (30.0, "Ready", "ready")]


def test_a_step_refused_before_it_starts_ends_with_the_refusal_and_frees_its_instrument(data_dir):
    """When the console may not start a step (the check before the start says no, or cannot be
    made), the step ends with that reason instead of waiting for ever, nothing runs on the
    instrument, and the next step for it runs."""
    async def scenario(kit):
        refusals = iter([RuntimeError("Data Services: HTTP 503: lease service down"), False])

        async def admit(job):
            answer = next(refusals, True)
            if isinstance(answer, BaseException):
                raise answer
            return answer

        kit.dispatcher.admit = admit
        await kit.publish("Seal", [{"id": "seal", "kind": "Sealer.Seal"}], failure_policy="abort")
        failed = await kit.run("Seal")
        await kit.until_done(failed)
        not_held = await kit.run("Seal")
        await kit.until_done(not_held)
        after = await kit.run("Seal")
        await kit.until_done(after)
        return {r: (kit.status(r), kit.steps(r)["seal"]) for r in (failed, not_held, after)}, \
            [failed, not_held, after], kit

    seen, (failed, not_held, after), kit = run_dkit(data_dir, scenario)
    status, step = seen[failed]
    assert (status, step["status"], step["error"]) == (RunStatus.FAILED, "failed",
                                                       "Data Services: HTTP 503: lease service down")
    status, step = seen[not_held]
    assert (status, step["status"]) == (RunStatus.FAILED, "failed")
    assert step["error"] == f"order {step['order_id']} was not started: this console no longer holds it"
    assert kit.store.transitions(step["order_id"])[-1].why.startswith("OrderCancelled: ")
    assert seen[after][0] is RunStatus.COMPLETED


def test_a_stop_the_instrument_fails_to_answer_is_reported_as_not_confirmed(data_dir, caplog):
    """The operator cancels a run while its step runs and the instrument's link fails when asked
    to stop: the console must not claim the instrument stopped; the log says it did not confirm."""
    async def scenario(kit):
        await kit.publish("Seal", [{"id": "s", "kind": "Sealer.Seal", "parameters": {"duration": 600}}])
        run_id = await kit.run("Seal")
        await kit.clock.advance(10)
        order_id = kit.steps(run_id)["s"]["order_id"]

        async def link_lost(_order_id):
            raise InstrumentUnavailable("Sealer: link lost while asking it to stop", instrument_id="Sealer")

        kit.drivers["Sealer"].cancel = link_lost  # the edge: a link that drops at that moment
        with caplog.at_level(logging.WARNING):
            await kit.engine.cancel(run_id, who="ann", reason="wrong plate")
            await kit.clock.advance(1)
        return order_id, kit.status(run_id)

    order_id, status = run_dkit(data_dir, scenario)
    assert status is RunStatus.CANCELLED
    messages = [r.getMessage() for r in caplog.records]
    assert f"Sealer: cancel of {order_id} failed: Sealer: link lost while asking it to stop" in messages
    assert f"instrument did not confirm it stopped {order_id}" in messages


def test_each_recorded_status_change_is_announced_to_subscribers(data_dir):
    """Every Ready/Busy change the instrument log records reaches the bus's subscribers (the
    dashboard and the Data Services link follow instruments through them), with what changed."""
    async def scenario(kit):
        await kit.publish("Seal", [{"id": "s", "kind": "Sealer.Seal"}])
        seen: list[tuple[ModuleStatus, str, tuple[str, ...]]] = []
        kit.ledger.bus.subscribe(
            lambda e: seen.append((e.status, e.detail, e.current_orders)) if e.instrument_id == "Sealer" else None,
            InstrumentStatusChanged)
        run_id = await kit.run("Seal")
        await kit.until_done(run_id)
        await kit.clock.advance(1)
        log = kit.store.read_sync(lambda c: c.execute(
            "SELECT to_status FROM instrument_log WHERE instrument_id='Sealer' ORDER BY seq").fetchall())
        return list(seen), [r[0] for r in log], kit.steps(run_id)["s"]["order_id"], kit.status(run_id)

    seen, log, order_id, status = run_dkit(data_dir, scenario)
    assert status is RunStatus.COMPLETED
    assert log == ["Ready", "Busy", "Ready"]
    running, ready = (ModuleStatus.Busy, f"running {order_id}", (order_id,)), (ModuleStatus.Ready, "ready", ())
    assert running in seen and ready in seen and seen.index(running) < seen.index(ready)


def test_a_step_given_up_as_its_instrument_goes_offline_counts_as_failed_on_that_instrument(data_dir):
    """The instrument is found offline mid-step and, in the same turn, the engine gives up waiting
    for the step: the step still ends with the loss of the instrument (a failure counted on it),
    not as a plain cancellation that would hide what happened."""
    async def scenario(kit):
        order = Order(identifier="Order_88", templateName="Sealer.Seal")
        job = Job("Order_88", order, "Sealer.Seal")
        attempt = asyncio.ensure_future(kit.dispatcher.submit(job))
        await kit.until(lambda: job.status is JobStatus.RUNNING and job.launched)
        sealer = kit.dispatcher.instruments["Sealer"]
        before = {v.id: v.failed for v in kit.dispatcher.view()}["Sealer"]
        lost = asyncio.ensure_future(kit.dispatcher._went_offline(sealer, "heartbeat stale for 95 s"))
        attempt.cancel()  # the engine gives up in the same loop turn
        await asyncio.gather(attempt, lost, return_exceptions=True)
        await kit.clock.advance(1)
        view = {v.id: v for v in kit.dispatcher.view()}["Sealer"]
        return before, view, job.status

    before, sealer, status = run_dkit(data_dir, scenario)
    assert sealer.status is ModuleStatus.Offline
    assert not sealer.running
    assert status is JobStatus.FAILED
    assert (before, sealer.failed) == (0, 1)
