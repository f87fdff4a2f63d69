"""Rehearsal: run a queue of orders against the simulated workcell on an accelerated clock.

``labconsole rehearse --workcell F --templates DIR --orders N --speed 100 --faults SPEC`` answers
"what would this shift look like?" before a real plate is touched: it submits N runs (the
templates of DIR in turn, with their default inputs) at once, lets the dispatcher and the
simulated instruments work through them ``speed`` times faster than real time (``--speed max``:
as fast as the computer can, on a virtual clock), and reports throughput, instrument
utilisation, mean and max wait (step queued → step running), failures and recoveries.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.clock import Clock, ScaledClock, VirtualClock
from core.engine import RunStatus
from core.errors import InputError
from core.events import Event, RunChanged, StepChanged
from core.runtime import Runtime, load_templates
from core.store import DB_FILENAME, Store
from core.workcell import Workcell


@dataclass
class RehearsalReport:
    orders: int
    makespan: float
    completed: int
    failed: int
    cancelled: int
    paused: int
    throughput_per_hour: float
    utilisation: dict[str, float]
    mean_wait: float
    max_wait: float
    step_failures: int
    recoveries: int
    waits: list[float] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            f"rehearsal: {self.orders} orders in {_hms(self.makespan)} of workcell time",
            f"  runs: {self.completed} completed, {self.failed} failed, {self.cancelled} cancelled, "
            f"{self.paused} waiting for an operator",
            f"  throughput: {self.throughput_per_hour:.1f} runs/hour",
            f"  wait (step queued -> running): mean {self.mean_wait:.1f} s, max {self.max_wait:.1f} s",
            f"  failures: {self.step_failures} failed step attempts; recoveries: {self.recoveries} "
            "steps that succeeded on a retry",
            "  instrument utilisation:",
        ]
        for iid, u in sorted(self.utilisation.items()):
            lines.append(f"    {iid:<20} {u * 100:5.1f} %  {'#' * round(u * 30)}")
        return "\n".join(lines)


async def drive(clock: VirtualClock, task: asyncio.Future[Any]) -> None:
    """Move virtual time to each next deadline until ``task`` is done (real I/O may interleave)."""
    while not task.done():
        deadline = clock.next_deadline
        if deadline is None:
            await asyncio.wait([task], timeout=0.002)
        else:
            await clock.advance(max(0.0, deadline - clock.now()))


def stand_in_inputs(template: Any, n: int) -> dict[str, Any]:
    """Values for required inputs without a default: ``plate_id-0007``, 1, 1.0, False, {}."""
    values: dict[str, Any] = {}
    for p in template.inputs:
        if p.required and p.default is None:
            values[p.name] = {"string": f"{p.name}-{n + 1:04d}", "integer": 1, "double": 1.0,
                              "boolean": False, "json": {}}[p.type.value]
    return values


def _hms(seconds: float) -> str:
    h, rem = divmod(int(round(seconds)), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


async def rehearse(workcell: Path | Workcell, templates: Path, orders: int, *, speed: float | str = "max",
                   faults: str | None = None, seed: int = 1, data_dir: Path | None = None,
                   strategy: str = "least_loaded") -> RehearsalReport:
    """Run the rehearsal and return its report (see the module docstring)."""
    if orders < 1:
        raise InputError.at(f"--orders must be at least 1, not {orders}", field="--orders")
    chosen = await asyncio.to_thread(load_templates, templates)
    if not chosen:
        raise InputError.at(f"no loadable template in {templates}", file=str(templates))
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="labconsole-rehearsal-"))
    store = Store(data_dir / DB_FILENAME, synchronous="NORMAL").open()
    clock: Clock
    clock = VirtualClock.for_store(store) if speed == "max" else ScaledClock(float(speed))
    runtime = Runtime.build(data_dir, clock=clock, store=store, workcell=workcell, faults=faults, seed=seed,
                            strategy=strategy, metrics=False)
    queued_at: dict[str, float] = {}
    waits: list[float] = []
    failed_attempts = [0]

    def on_step(event: Any) -> None:
        if event.status in ("retrying", "failed", "unknown"):
            failed_attempts[0] += 1
        if event.status == "queued":
            queued_at[event.order_id] = clock.now()
        elif event.status == "running" and event.order_id in queued_at:
            waits.append(clock.now() - queued_at.pop(event.order_id))

    runtime.ledger.bus.subscribe(on_step, StepChanged)
    try:
        starting = asyncio.ensure_future(runtime.start(templates_dir=None))
        if isinstance(clock, VirtualClock):  # instruments take (virtual) time to connect
            await drive(clock, starting)
        await starting
        for t in chosen:
            await runtime.engine.publish(t, who="rehearsal")
        start = clock.now()
        run_ids = []
        for n in range(orders):
            t = chosen[n % len(chosen)]
            run_ids.append(await runtime.engine.create_instance(t.name, stand_in_inputs(t, n), who="rehearsal",
                                                                allow_duplicate=True))
        for run_id in run_ids:
            await runtime.engine.execute_workflow(run_id)
        final = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED)

        def done() -> bool:
            return all(runtime.engine.run_status(r) in final for r in run_ids)

        if isinstance(clock, VirtualClock):
            await clock.run_until(done, limit=30 * 86400)
        else:
            finished = asyncio.Event()

            def wake(_event: Event) -> None:
                if done():
                    finished.set()

            with runtime.ledger.bus.subscribe(wake, RunChanged):
                if not done():
                    await finished.wait()
        makespan = clock.now() - start
        statuses = [runtime.engine.run_status(r) for r in run_ids]
        steps = [s for r in run_ids for s in runtime.engine.get_instance(r)["steps"]]
        dispatcher = runtime.dispatcher
        now = clock.now()
        utilisation = {i.id: (i.busy_seconds + (now - i.busy_since if i.busy_since else 0.0)) / makespan
                       if makespan > 0 else 0.0 for i in dispatcher.instruments.values()} if dispatcher else {}
        completed = statuses.count(RunStatus.COMPLETED)
        return RehearsalReport(
            orders=orders, makespan=makespan, completed=completed,
            failed=statuses.count(RunStatus.FAILED), cancelled=statuses.count(RunStatus.CANCELLED),
            paused=statuses.count(RunStatus.PAUSED),
            throughput_per_hour=completed / makespan * 3600 if makespan > 0 else 0.0,
            utilisation=utilisation, mean_wait=sum(waits) / len(waits) if waits else 0.0,
            max_wait=max(waits, default=0.0), step_failures=failed_attempts[0],
            recoveries=sum(1 for s in steps if s["status"] == "completed" and (s["attempt"] or 0) > 1),
            waits=waits)
    finally:
        await runtime.close()
