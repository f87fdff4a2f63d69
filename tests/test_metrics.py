"""Metrics from the event stream, checked against a small hand-computed sequence."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import numpy as np
import pytest

from core.clock import SystemClock
from core.events import EventBus, InstrumentStatusChanged, OrderCreated, OrderStatusChanged
from core.ledger import Ledger
from core.metrics import DashboardMetrics, InitialCounts, Metrics, initial_counts
from core.orders import ModuleStatus, Order, OrderStatus

S = OrderStatus
T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()  # a bucket boundary


class ManualClock:
    """A clock that is wherever the test puts it."""

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - metrics never sleep
        self.t += seconds


def created(oid: str, parent: str | None = None, status: OrderStatus = S.Created) -> OrderCreated:
    return OrderCreated(order_id=oid, parent_id=parent, status=status)


def changed(oid: str, frm: OrderStatus | None, to: OrderStatus, parent: str | None = None,
            started: float | None = None, ended: float | None = None) -> OrderStatusChanged:
    row = (oid, parent, "T", "1", int(to), 0, 50, None, T0, started, ended, None)
    return OrderStatusChanged(order_id=oid, from_status=frm, to_status=to, who="test", row=row)


def instrument(iid: str, status: ModuleStatus) -> InstrumentStatusChanged:
    return InstrumentStatusChanged(instrument_id=iid, status=status)


def play(metrics: Metrics, clock: ManualClock, script: list[tuple[float, object]]) -> None:
    for at, event in script:
        clock.t = T0 + at
        metrics.handle(event)


SCRIPT = [
    (0, created("J1")), (0, created("J2")), (0, created("J3")),
    (0, instrument("PR1", ModuleStatus.Busy)),
    (10, changed("J1", S.Created, S.Scheduled)), (10, changed("J1", S.Scheduled, S.Running)),
    (10, created("S1", parent="J1")), (10, changed("S1", S.Created, S.Running, "J1")),
    (15, created("S2", parent="J1")), (15, changed("S2", S.Created, S.Running, "J1")),
    (20, changed("J2", S.Created, S.Running)),
    (30, instrument("PR1", ModuleStatus.Ready)),
    (40, changed("S1", S.Running, S.Complete, "J1")),            # step of 30 s, bucket 0
    (45, instrument("PR1", ModuleStatus.Busy)),
    (65, changed("S2", S.Running, S.Complete, "J1")),            # step of 50 s, bucket 1
    (70, changed("J1", S.Running, S.Complete)),                  # job of 60 s, bucket 1
    (75, instrument("PR1", ModuleStatus.Ready)),
    (80, changed("J2", S.Running, S.Error)),                     # fails in bucket 1
]
LATER = [
    (100, changed("J2", S.Error, S.Running)),                    # retried
    (130, changed("J2", S.Running, S.Complete)),                 # 30 s attempt, bucket 2
    (140, changed("J3", S.Created, S.Canceled)),
]


def fresh(capacity: int = 5) -> tuple[Metrics, ManualClock]:
    clock = ManualClock(T0)
    metrics = Metrics(clock, bucket_seconds=60, capacity=capacity, tz=UTC)
    metrics.add_instruments(["PR1", "Arm1"])
    return metrics, clock


def test_dashboard_after_a_hand_computed_sequence():
    metrics, clock = fresh()
    play(metrics, clock, SCRIPT)
    clock.t = T0 + 90
    assert metrics.dashboard() == DashboardMetrics(
        total_robots=2, online_robots=1, offline_robots=1, total_jobs_today=3,
        completed_jobs_today=1, failed_jobs_today=1, pending_jobs=1, running_jobs=0,
        average_execution_time=60.0, success_rate=50.0, cancelled_jobs_today=0, busy_robots=0)
    steps = metrics.dashboard(steps=True)
    assert (steps.total_jobs_today, steps.completed_jobs_today, steps.average_execution_time) == (2, 2, 40.0)

    play(metrics, clock, LATER)
    clock.t = T0 + 150
    d = metrics.dashboard()
    assert (d.completed_jobs_today, d.failed_jobs_today, d.cancelled_jobs_today) == (2, 0, 1)
    assert (d.pending_jobs, d.running_jobs) == (0, 0)
    assert d.average_execution_time == pytest.approx((60 + 30) / 2)
    assert d.success_rate == 100.0  # the failed job was retried to success
    assert metrics.status_counts() == {S.Complete: 2, S.Canceled: 1}


def test_time_series_after_a_hand_computed_sequence():
    metrics, clock = fresh()
    play(metrics, clock, SCRIPT + LATER)
    clock.t = T0 + 150
    metrics.refresh()
    assert len(metrics) == 3
    assert metrics.times.tolist() == [T0, T0 + 60, T0 + 120]
    assert metrics.throughput.tolist() == [0, 1, 1]
    assert metrics.failures.tolist() == [0, 1, 0]
    assert metrics.queue_depth.tolist() == [1, 1, 0]   # J3 waited until cancelled
    assert metrics.running.tolist() == [2, 1, 0]
    assert metrics.step_throughput.tolist() == [1, 1, 0]
    assert metrics.step_duration[:2].tolist() == [30, 50] and math.isnan(metrics.step_duration[2])
    # PR1 busy 0-30 and 45-75: 45 s of bucket 0, 15 s of bucket 1, none of the 30 s of bucket 2
    assert metrics.utilisation("PR1").tolist() == pytest.approx([0.75, 0.25, 0.0])
    assert metrics.utilisation("Arm1").tolist() == [0, 0, 0]
    assert metrics.instruments == ["PR1", "Arm1"]


def test_bucket_width_scales_rates_to_per_minute():
    clock = ManualClock(T0)
    metrics = Metrics(clock, bucket_seconds=30, capacity=10, tz=UTC)
    play(metrics, clock, [(0, created("J1")), (1, changed("J1", S.Created, S.Running)),
                          (5, changed("J1", S.Running, S.Complete))])
    assert metrics.throughput.tolist() == [2.0]  # one completion in 30 s = 2 per minute


def test_in_progress_utilisation_and_idle_gaps():
    metrics, clock = fresh(capacity=4)
    play(metrics, clock, [(0, instrument("PR1", ModuleStatus.Busy)), (0, created("J1"))])
    clock.t = T0 + 30
    metrics.refresh()
    assert metrics.utilisation("PR1").tolist() == [1.0]  # busy for all of the 30 s so far
    clock.t = T0 + 60 * 10 + 30  # ten quiet minutes
    metrics.refresh()
    assert len(metrics) == 4
    assert np.diff(metrics.times).tolist() == [60, 60, 60]
    assert metrics.times[-1] == T0 + 600
    assert metrics.utilisation("PR1").tolist() == [1, 1, 1, 1]
    assert metrics.queue_depth.tolist() == [1, 1, 1, 1]
    assert metrics.throughput.tolist() == [0, 0, 0, 0]


def test_series_are_views_in_time_order_without_copies():
    metrics, clock = fresh(capacity=3)
    for minute in range(7):
        clock.t = T0 + 60 * minute
        metrics.handle(created(f"J{minute}"))
        view = metrics.queue_depth
        assert view.base is not None  # a view into the ring, not a copy
        assert view.flags.c_contiguous
    assert metrics.times.tolist() == [T0 + 240, T0 + 300, T0 + 360]
    assert metrics.queue_depth.tolist() == [5, 6, 7]
    with pytest.raises(KeyError, match="no series 'nope'"):
        metrics.series("nope")


def test_today_resets_at_midnight_but_live_counts_do_not():
    clock = ManualClock(datetime(2027, 1, 15, 23, 59, tzinfo=UTC).timestamp())
    metrics = Metrics(clock, tz=UTC)
    metrics.handle(created("J1"))
    metrics.handle(created("J2"))
    metrics.handle(changed("J2", S.Created, S.Error))
    assert metrics.dashboard().total_jobs_today == 2
    clock.t += 120
    d = metrics.dashboard()
    assert (d.total_jobs_today, d.failed_jobs_today, d.pending_jobs) == (0, 0, 1)
    assert metrics.day_start == datetime(2027, 1, 16, tzinfo=UTC).timestamp()


def test_subscribes_to_the_bus_and_ignores_other_events():
    metrics, clock = fresh()
    bus = EventBus()
    metrics.subscribe(bus)
    before = metrics.version
    bus.publish(created("J1"))
    bus.publish(instrument("PR1", ModuleStatus.Ready))
    assert metrics.dashboard().total_jobs_today == 1 and metrics.dashboard().online_robots == 1
    assert metrics.version > before
    metrics.close()
    bus.publish(created("J2"))
    assert metrics.dashboard().total_jobs_today == 1


def test_seed_from_counts():
    metrics, _ = fresh()
    metrics.seed((InitialCounts({S.Created: 4, S.Running: 2, S.Complete: 10}, created_today=7,
                                completed_today=3, failed_ids_today=frozenset({"X"}),
                                execution_seconds_today=90.0, executions_today=3),
                  InitialCounts()))
    d = metrics.dashboard()
    assert (d.pending_jobs, d.running_jobs, d.total_jobs_today) == (4, 2, 7)
    assert (d.completed_jobs_today, d.failed_jobs_today, d.average_execution_time) == (3, 1, 30.0)
    assert d.success_rate == 75.0
    assert metrics.queue_depth[-1] == 4
    metrics.handle(changed("X", S.Error, S.Running))  # a seeded failure retried
    assert metrics.dashboard().failed_jobs_today == 0


def test_initial_counts_from_the_store_match_the_event_stream(store):
    """Counts seeded from the store with one query equal what the events built up."""
    async def scenario() -> Metrics:
        bus = EventBus()
        live = Metrics(SystemClock(), tz=UTC)
        live.subscribe(bus)
        core = Ledger(store, bus)
        run = await core.create_order(Order(templateName="ELISA"))
        steps = [await core.create_order(Order(templateName="PlateReader.ReadPlate",
                                               parentIdentifier=run.identifier)) for _ in range(3)]
        others = [await core.create_order(Order(templateName="Sealer.Seal")) for _ in range(3)]
        await core.set_status(run.identifier, S.Running)
        for step in steps:
            await core.set_status(step.identifier, S.Running)
        await core.set_status(steps[0].identifier, S.Complete)
        await core.set_status(steps[1].identifier, S.Error)
        await core.set_status(others[0].identifier, S.Canceled)
        await core.set_status(others[1].identifier, S.Invalid)
        return live

    live = asyncio.run(scenario())
    seeded = Metrics(SystemClock(), tz=UTC)
    seeded.seed(store.read_sync(lambda c: initial_counts(c, seeded.day_start)))
    for steps in (False, True):
        a, b = live.dashboard(steps=steps), seeded.dashboard(steps=steps)
        assert a == DashboardMetrics(**{**b.__dict__, "average_execution_time": a.average_execution_time})
        assert live.status_counts(steps=steps) == seeded.status_counts(steps=steps)
    jobs, steps_ = store.read_sync(lambda c: initial_counts(c, seeded.day_start))
    assert jobs.by_status == {S.Running: 1, S.Created: 1, S.Canceled: 1, S.Invalid: 1}
    assert steps_.by_status == {S.Complete: 1, S.Error: 1, S.Running: 1}
    assert steps_.completed_today == 1 and steps_.executions_today == 1
    assert len(jobs.failed_ids_today) == 1 and len(steps_.failed_ids_today) == 1
    assert (jobs.created_today, steps_.created_today) == (4, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="bucket_seconds"):
        Metrics(ManualClock(T0), bucket_seconds=0)
    with pytest.raises(ValueError, match="capacity"):
        Metrics(ManualClock(T0), capacity=0)
