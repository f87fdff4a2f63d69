"""The composition root and the one facade over the core.

:class:`Runtime` assembles store, bus, template registry, engine, workcell (drivers +
dispatcher) and metrics once. The console window, the headless command line and the rehearsal
all build it, so they behave the same against the same store, and the GUI reaches the core only
through its methods (operator actions by order id, with who and why, audited).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.clock import Clock, SystemClock
from core.dispatcher import Dispatcher, InstrumentView, LoadBalancing
from core.engine import Engine, RunStatus, StepExecutor
from core.errors import LabconsoleError, NotFoundError, StateError, TemplateError
from core.facade import Core, os_user
from core.metrics import Metrics, initial_counts
from core.orders import Order, OrderStatus
from core.store import DB_FILENAME, AuditEntry, Store, Transition
from core.templates import WorkflowTemplate, load_template
from core.workcell import Workcell, build_drivers, load_workcell

log = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
SAMPLE_TEMPLATES = RESOURCES / "templates"
DEMO_WORKCELL = RESOURCES / "workcells" / "demo.yaml"


def template_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in (".yaml", ".yml", ".json"))


def load_templates(directory: Path | None) -> list[WorkflowTemplate]:
    """Every good template file of ``directory``; bad ones are logged with their problems."""
    if directory is None or not directory.is_dir():
        return []
    out = []
    for path in template_files(directory):
        try:
            out.append(load_template(path))
        except TemplateError as exc:
            log.error("%s", exc)
    return out


@dataclass(frozen=True)
class ActionResult:
    """The outcome of one operator action on one order (bulk actions return one per order)."""

    order_id: str
    ok: bool
    message: str


@dataclass
class OrderTarget:
    """What an order id stands for: a run (parent order) or one step of a run."""

    order_id: str
    run_id: str | None
    step_id: str | None

    @property
    def is_run(self) -> bool:
        return self.run_id == self.order_id and self.step_id is None


@dataclass
class Runtime:
    store: Store
    core: Core
    engine: Engine
    executor: StepExecutor
    clock: Clock
    workcell: Workcell | None = None
    dispatcher: Dispatcher | None = None
    metrics: Metrics | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ assembly

    @classmethod
    def build(cls, data_dir: Path, *, clock: Clock | None = None, executor: StepExecutor | None = None,
              store: Store | None = None, workcell: Path | Workcell | None = DEMO_WORKCELL,
              faults: str | None = None, strategy: LoadBalancing | str = LoadBalancing.LEAST_LOADED,
              seed: int | None = None, metrics: bool = True) -> Runtime:
        """Assemble everything. ``workcell`` None (and no ``executor``) gives instant simulated steps."""
        clock = clock or SystemClock()
        store = store or Store(data_dir / DB_FILENAME).open()
        if not isinstance(clock, SystemClock):
            store.clock = clock
        core = Core(store)
        cell: Workcell | None = None
        dispatcher = None
        extras: dict[str, Any] = {}
        if executor is None and workcell is not None:
            cell = workcell if isinstance(workcell, Workcell) else load_workcell(workcell)
            drivers = build_drivers(cell, clock, core.bus, faults=faults, seed=seed)
            dispatcher = Dispatcher(store, core.bus, drivers, clock=clock, strategy=strategy,
                                    heartbeat_interval=cell.heartbeat_interval,
                                    stale_timeout=cell.stale_timeout, seed=seed or 0,
                                    capacities={i.id: i.max_concurrent for i in cell.instruments})
            executor = dispatcher
            if any(i.driver == "agent" for i in cell.instruments):  # remote robot agents
                from core.drivers.agent import hubs_of, wake_on_register

                extras["agent_hubs"] = hubs_of(drivers)
                wake_on_register(extras["agent_hubs"], dispatcher.instruments)
        if executor is None:
            from core.engine import SimulatedExecutor

            executor = SimulatedExecutor(clock)
        engine = Engine(core, executor, clock=clock, seed=seed)
        m = None
        if metrics:
            m = Metrics(clock)
            if cell is not None:
                m.add_instruments([i.id for i in cell.instruments])
            m.subscribe(core.bus)
        return cls(store, core, engine, executor, clock, cell, dispatcher, m, extras)

    async def start(self, templates_dir: Path | None = SAMPLE_TEMPLATES, *,
                    execute: bool = True) -> list[WorkflowTemplate]:
        """Publish the templates of ``templates_dir`` (unchanged ones keep their version); then,
        if ``execute``, connect the workcell and resume runs that were in flight. Exactly one
        process (the console) should execute runs; command-line tools pass ``execute=False``."""
        published = []
        for template in await asyncio.to_thread(load_templates, templates_dir):
            published.append(await self.engine.publish(template, who="labconsole"))
        if self.metrics is not None:
            day_start = self.metrics.day_start
            self.metrics.seed(await self.store.read(lambda c: initial_counts(c, day_start)))
        if execute and self.dispatcher is not None:
            await self.dispatcher.start()
        await self.engine.start(resume=execute)
        if execute and isinstance(self.clock, SystemClock):  # [STORE] backup_every of config.ini
            from core.backup import ScheduledBackups

            if (backups := ScheduledBackups.from_config(self.store.path)) is not None:
                self.extras["backups"] = backups.start()
        return published

    async def close(self) -> None:
        if (backups := self.extras.pop("backups", None)) is not None:
            await backups.close()
        await self.engine.close()
        if self.dispatcher is not None:
            await self.dispatcher.close()
        for hub in self.extras.get("agent_hubs", ()):
            await hub.close()
        if self.metrics is not None:
            self.metrics.close()
        self.store.close()

    # ------------------------------------------------------------------ reading

    def target(self, order_id: str) -> OrderTarget:
        """Whether ``order_id`` is a run or a step (one indexed lookup)."""
        def read(c: Any) -> tuple[Any, Any]:
            run = c.execute("SELECT run_id FROM runs WHERE run_id = ?", (order_id,)).fetchone()
            step = c.execute("SELECT run_id, step_id FROM step_runs WHERE order_id = ?", (order_id,)).fetchone()
            return run, step

        run, step = self.store.read_sync(read)
        if run is not None:
            return OrderTarget(order_id, order_id, None)
        if step is not None:
            return OrderTarget(order_id, step[0], step[1])
        return OrderTarget(order_id, None, None)

    def order(self, order_id: str) -> Order:
        return self.store.get_order(order_id)

    def history(self, order_id: str) -> list[Transition]:
        return self.store.transitions(order_id)

    def audit(self, order_id: str | None = None) -> list[AuditEntry]:
        return self.store.audit_entries(order_id)

    def run_of(self, order_id: str) -> dict[str, Any] | None:
        t = self.target(order_id)
        return self.engine.get_instance(t.run_id) if t.run_id else None

    def instruments(self) -> list[InstrumentView]:
        return self.dispatcher.view() if self.dispatcher is not None else []

    def why_waiting(self, order_id: str) -> list[str]:
        """Plain-language reasons why an order has not started (or is not moving)."""
        t = self.target(order_id)
        order = self.store.get_order(order_id)
        if order.status in (OrderStatus.Complete, OrderStatus.Canceled):
            return [f"not waiting: {order.status.name}"]
        if t.run_id is None:
            return ["not a labconsole run or step: nothing here decides when it starts"]
        inst = self.engine.get_instance(t.run_id)
        if inst["status"] == "paused":
            reasons = [f"run {t.run_id} is paused" + (f": {inst['error']}" if inst["error"] else "")]
        else:
            reasons = []
        steps = inst["steps"] if t.is_run else [s for s in inst["steps"] if s["id"] == t.step_id]
        for step in steps:
            if step["status"] == "queued" and self.dispatcher is not None:
                reasons += [f"{step['id']}: {r}" if t.is_run else r
                            for r in self.dispatcher.why_waiting(step["order_id"])]
            elif step["status"] == "pending":
                template = self.engine.templates.get(inst["template_name"], inst["template_version"])
                deps = template.step(step["id"]).depends_on
                waiting = [s for s in inst["steps"] if s["id"] in deps and s["status"] not in ("completed", "skipped")]
                for dep in waiting:
                    reasons.append(f"{step['id']} waits for step {dep['id']} ({dep['order_id']}), "
                                   f"which is {dep['status']}")
            elif step["status"] == "retrying":
                reasons.append(f"{step['id']}: {order.statusDetails or 'waiting to retry'}")
            elif step["status"] in ("failed", "unknown"):
                reasons.append(f"{step['id']} {step['status']}: {step['error']} — retry, skip or recover it")
        return list(dict.fromkeys(reasons)) or ["not waiting"]

    # ------------------------------------------------------------------ operator actions

    async def start_run(self, template_name: str, inputs: dict[str, Any] | None = None, *,
                        priority: int = 50, version: int | None = None, who: str | None = None,
                        allow_duplicate: bool = False) -> str:
        """Create and start a run. The same template + inputs by the same person within the
        engine's duplicate window is refused (DuplicateSubmissionError) unless ``allow_duplicate``."""
        who = who or os_user()
        run_id = await self.engine.create_instance(template_name, inputs or {}, priority=priority,
                                                   version=version, who=who, allow_duplicate=allow_duplicate)
        await self.engine.execute_workflow(run_id)
        await self.store.audit(who, "start run", run_id, None, {"template": template_name, "version": version})
        return run_id

    async def cancel(self, order_id: str, *, who: str | None = None, reason: str | None = None) -> ActionResult:
        t = self._known(order_id)
        if t.is_run:
            await self.engine.cancel(order_id, who=who, reason=reason)
        else:
            await self.engine.cancel_step(t.run_id or "", t.step_id or "", who=who, reason=reason)
        return ActionResult(order_id, True, "canceled")

    async def retry(self, order_id: str, *, who: str | None = None, reason: str | None = None) -> ActionResult:
        t = self._known(order_id)
        run_id = t.run_id or ""
        if t.is_run:
            steps = [s["id"] for s in self.engine.get_instance(run_id)["steps"]
                     if s["status"] in ("failed", "unknown", "cancelled")]
            if not steps:
                raise StateError(f"run {order_id} has no failed step to retry")
            for step in steps:
                await self.engine.retry_step(run_id, step, who=who, reason=reason)
            return ActionResult(order_id, True, f"retrying {', '.join(steps)}")
        await self.engine.retry_step(run_id, t.step_id or "", who=who, reason=reason)
        return ActionResult(order_id, True, "retrying")

    async def recover(self, order_id: str, from_step: str, *, who: str | None = None,
                      reason: str | None = None) -> ActionResult:
        t = self._known(order_id)
        await self.engine.recover(t.run_id or "", from_step, who=who, reason=reason)
        return ActionResult(order_id, True, f"recovering from {from_step}")

    async def skip(self, order_id: str, outputs: dict[str, Any] | None = None, *, who: str | None = None,
                   reason: str | None = None) -> ActionResult:
        t = self._known(order_id)
        if t.is_run:
            raise StateError(f"{order_id} is a run: skip one of its steps")
        await self.engine.skip_step(t.run_id or "", t.step_id or "", outputs, who=who, reason=reason)
        return ActionResult(order_id, True, "skipped")

    async def pause(self, order_id: str, *, who: str | None = None, reason: str | None = None) -> ActionResult:
        t = self._known(order_id)
        await self.engine.pause(t.run_id or "", who=who, reason=reason)
        return ActionResult(order_id, True, "paused")

    async def resume(self, order_id: str, *, who: str | None = None, reason: str | None = None) -> ActionResult:
        t = self._known(order_id)
        await self.engine.resume(t.run_id or "", who=who, reason=reason)
        return ActionResult(order_id, True, "resumed")

    async def reprioritise(self, order_id: str, priority: int, *, who: str | None = None,
                           reason: str | None = None) -> ActionResult:
        """New numeric priority (0-100) for a run (and its queued steps) or one queued step."""
        if not 0 <= priority <= 100:
            raise StateError(f"priority must be 0..100, not {priority}")
        who = who or os_user()
        t = self._known(order_id)
        inst = self.engine.get_instance(t.run_id or "")
        orders = [order_id] if not t.is_run else [order_id] + [s["order_id"] for s in inst["steps"]]
        if t.is_run:
            await self.store.write(lambda c: c.execute("UPDATE runs SET priority = ? WHERE run_id = ?",
                                                       (priority, order_id)))
            active = self.engine._runs.get(order_id)
            if active is not None:
                active.priority = priority
        for oid in orders:
            await self.core.update_order(oid, {}, numeric_priority=priority)
            if self.dispatcher is not None and oid in self.dispatcher.queue.jobs:
                try:
                    self.dispatcher.reprioritise(oid, priority)
                except StateError:
                    pass  # running or done: priority no longer matters
        await self.store.audit(who, "reprioritise", order_id, reason, {"priority": priority})
        return ActionResult(order_id, True, f"priority {priority}")

    async def start_now(self, order_id: str, *, who: str | None = None, reason: str | None = None) -> ActionResult:
        """Let a queued step that waits for its scheduled slot go as soon as an instrument fits."""
        who = who or os_user()
        if self.dispatcher is None or order_id not in self.dispatcher.queue.jobs:
            raise StateError(f"{order_id} is not waiting in the queue")
        job = self.dispatcher.queue.jobs[order_id]
        job.scheduled = None
        self.dispatcher.queue.reprioritise(order_id)
        self.dispatcher.kick()
        await self.store.audit(who, "start now", order_id, reason)
        return ActionResult(order_id, True, "starting as soon as an instrument fits")

    async def bulk(self, action: str, order_ids: Sequence[str], *, who: str | None = None,
                   reason: str | None = None, progress: Callable[[int, int], None] | None = None,
                   **kwargs: Any) -> list[ActionResult]:
        """Apply ``action`` ("cancel", "retry", "reprioritise" ...) to many orders; one result each.

        Yields to the event loop every few orders so the window stays responsive; a refusal of
        one order (illegal in its state) is reported and the rest go on.
        """
        method = getattr(self, action, None)
        if action not in ("cancel", "retry", "reprioritise", "pause", "resume", "skip") or method is None:
            raise StateError(f"unknown bulk action '{action}'")
        who = who or os_user()
        results: list[ActionResult] = []
        for n, order_id in enumerate(order_ids, 1):
            try:
                results.append(await method(order_id, who=who, reason=reason, **kwargs))
            except LabconsoleError as exc:
                results.append(ActionResult(order_id, False, str(exc)))
            if n % 20 == 0:
                if progress is not None:
                    progress(n, len(order_ids))
                await asyncio.sleep(0)
        if progress is not None:
            progress(len(order_ids), len(order_ids))
        await self.store.audit(who, f"bulk {action}", None, reason,
                               {"orders": len(order_ids), "done": sum(r.ok for r in results)})
        return results

    def preview(self, order_ids: Iterable[str]) -> dict[str, Any]:
        """What a bulk action would touch: counts and the runs involved."""
        ids = list(order_ids)
        runs: dict[str, int] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            rows = self.store.read_sync(lambda c, part=part, marks=marks: c.execute(
                f"SELECT COALESCE(parent_id, id) FROM orders WHERE id IN ({marks})", part).fetchall())
            for (run,) in rows:
                runs[run] = runs.get(run, 0) + 1
        return {"orders": len(ids), "runs": len(runs), "run_ids": sorted(runs)[:50]}

    def _known(self, order_id: str) -> OrderTarget:
        t = self.target(order_id)
        if t.run_id is None:
            raise NotFoundError(f"{order_id} is not a labconsole run or step")
        return t

    # ------------------------------------------------------------------ instruments

    async def instrument_action(self, instrument_id: str, action: str, *, who: str | None = None,
                                reason: str | None = None) -> ActionResult:
        """enable, disable, out_of_service, release, reconnect — through the dispatcher, audited."""
        if self.dispatcher is None:
            raise StateError("no workcell is connected")
        who = who or os_user()
        d = self.dispatcher
        if action in ("enable", "disable"):
            await d.set_enabled(instrument_id, action == "enable", who=who, reason=reason)
        elif action == "out_of_service":
            await d.take_out_of_service(instrument_id, who=who, reason=reason)
        elif action == "release":
            await d.release(instrument_id, who=who, reason=reason)
        elif action == "reconnect":
            ok = await d.reconnect(instrument_id, who=who, reason=reason)
            return ActionResult(instrument_id, ok, "reconnected" if ok else "reconnect failed")
        else:
            raise StateError(f"unknown instrument action '{action}'")
        return ActionResult(instrument_id, True, action.replace("_", " "))

    # ------------------------------------------------------------------ templates

    def templates(self) -> list[WorkflowTemplate]:
        return self.engine.templates.latest()

    def template_usage(self) -> dict[str, dict[str, Any]]:
        """Per template: number of runs and when it was last used (one GROUP BY query)."""
        rows = self.store.read_sync(lambda c: c.execute(
            "SELECT template_name, count(*), max(created) FROM runs GROUP BY template_name").fetchall())
        return {r[0]: {"runs": r[1], "last_used": r[2]} for r in rows}

    def runs_using(self, name: str, version: int | None = None) -> list[dict[str, Any]]:
        rows, _ = self.engine.query_instances(template=name, limit=1000)
        return [r for r in rows if version is None or r["template_version"] == version]

    def run_is_active(self, run_id: str) -> bool:
        return self.engine.run_status(run_id) not in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


def describe(results: Iterable[ActionResult]) -> str:
    results = list(results)
    done = sum(r.ok for r in results)
    return f"{done} done, {len(results) - done} refused"

