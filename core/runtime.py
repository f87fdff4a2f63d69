"""The composition root and the one facade over the core.

:class:`Runtime` assembles store, bus, template registry, engine, workcell (drivers +
dispatcher) and metrics once. The console window, the headless command line and the rehearsal
all build it, so they behave the same against the same store, and the GUI reaches the core only
through its methods (operator actions by order id, with who and why, audited).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import gcpolicy
from core.clock import Clock, SystemClock
from core.dispatcher import Dispatcher, InstrumentView, LoadBalancing
from core.engine import Act, Action, Engine, SimulatedExecutor, StepExecutor, tables
from core.errors import NotFoundError, OrderNotFoundError, StateError, TemplateError
from core.ledger import Ledger
from core.metrics import Metrics, initial_counts
from core.orders import Order, OrderStatus
from core.store import DB_FILENAME, AuditEntry, Store, Transition
from core.templates import WorkflowTemplate, load_template
from core.users import Signature, SignaturePolicy, authorize, has_users, os_user, signing
from core.workcell import Workcell, build_drivers, load_workcell

if TYPE_CHECKING:
    from core.archive import ScheduledArchive
    from core.backup import ScheduledBackups
    from core.dataservices.link import DataServicesLink
    from core.drivers.agent import AgentHub
    from core.history import HistorySearch
    from core.schedules import Scheduler

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


class BulkResult(list[ActionResult]):
    """One result per order a bulk action reached; ``left``: the orders it did not reach because
    it was stopped half-way."""

    def __init__(self, results: Iterable[ActionResult] = (), left: Sequence[str] = ()) -> None:
        super().__init__(results)
        self.left = list(left)

    @property
    def stopped(self) -> bool:
        return bool(self.left)


BULK_ACTIONS = ("cancel", "retry", "reprioritise", "pause", "resume", "skip")
BULK_SLICE = 0.006
"""Seconds of event-loop work a part of a bulk transaction aims at (its planning; its events are
published in a loop step of their own)."""


def _next_chunk(size: int, spent: float, most: int) -> int:
    """The next part's size: scaled so its loop work comes near :data:`BULK_SLICE`."""
    if spent <= 0:
        return min(most, size * 2)
    return max(5, min(most, int(size * BULK_SLICE / spent), size * 2))


@dataclass
class Runtime:
    """The composition root: every part of the core, built once, started and stopped in order."""

    store: Store
    ledger: Ledger
    engine: Engine
    executor: StepExecutor
    clock: Clock
    workcell: Workcell | None = None
    dispatcher: Dispatcher | None = None
    metrics: Metrics | None = None
    agent_hubs: list[AgentHub] = field(default_factory=list)
    link: DataServicesLink | None = None
    """The Data Services link (embedded server or a remote one), once started."""
    schedules: Scheduler | None = None
    """Schedules that start runs on time, once started (the console, not command-line tools)."""
    backups: ScheduledBackups | None = None
    archive: ScheduledArchive | None = None
    """Moves old finished orders to the archive on a schedule ([STORE] archive_after), once started."""
    archive_options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of :class:`~core.archive.ScheduledArchive` (``first_delay``)."""
    signatures: SignaturePolicy = field(default_factory=SignaturePolicy)
    """Which operator actions need an electronic signature ([SIGNATURES] require of config.ini)."""
    bulk_chunk: int = 100
    """At most this many orders per transaction in bulk actions. They are planned, and their
    events published, in parts of about :data:`BULK_SLICE` seconds of the loop's time each, so
    the window never stalls. 100 against 400, 10,000 runs canceled (``bench/bulk.py --chunk``,
    quiet): 5.5 against 6.6 s, loop lag p99 12 against 17 ms, max 41–57 against 80–109 ms; the
    writer's Python work on a larger transaction holds the GIL longer."""
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    _signatures_used: set[str] = field(default_factory=set)
    """Seals of the signatures already recorded: each signs one action."""

    # ------------------------------------------------------------------ assembly

    @classmethod
    def build(cls, data_dir: Path, *, clock: Clock | None = None, executor: StepExecutor | None = None,
              store: Store | None = None, workcell: Path | Workcell | None = DEMO_WORKCELL,
              faults: str | None = None, strategy: LoadBalancing | str = LoadBalancing.LEAST_LOADED,
              seed: int | None = None, metrics: bool = True,
              signatures: SignaturePolicy | None = None) -> Runtime:
        """Assemble everything. ``workcell`` None (and no ``executor``) gives instant simulated steps.
        ``signatures`` None: ``[SIGNATURES]`` of ./config.ini or the data dir's config.ini."""
        clock = clock or SystemClock()
        if signatures is None:
            from core.backup import find_config

            signatures = SignaturePolicy.from_ini(find_config(data_dir))
        store = store or Store(data_dir / DB_FILENAME).open()
        if not isinstance(clock, SystemClock):
            store.clock = clock
        ledger = Ledger(store)
        cell: Workcell | None = None
        dispatcher = None
        hubs: list[AgentHub] = []
        if executor is None and workcell is not None:
            cell = workcell if isinstance(workcell, Workcell) else load_workcell(workcell)
            drivers = build_drivers(cell, clock, ledger.bus, faults=faults, seed=seed)
            dispatcher = Dispatcher(store, ledger.bus, drivers, clock=clock, strategy=strategy,
                                    heartbeat_interval=cell.heartbeat_interval,
                                    stale_timeout=cell.stale_timeout, seed=seed or 0,
                                    capacities={i.id: i.max_concurrent for i in cell.instruments})
            executor = dispatcher
            if any(i.driver == "agent" for i in cell.instruments):  # remote robot agents
                from core.drivers.agent import hubs_of, wake_on_register

                hubs = hubs_of(drivers)
                wake_on_register(hubs, dispatcher.instruments)
        if executor is None:
            executor = SimulatedExecutor(clock)
        engine = Engine(ledger, executor, clock=clock, seed=seed)
        m = None
        if metrics:
            m = Metrics(clock)
            if cell is not None:
                m.add_instruments([i.id for i in cell.instruments])
            m.subscribe(ledger.bus)
        return cls(store, ledger, engine, executor, clock, cell, dispatcher, m, hubs, signatures=signatures)

    async def start(self, templates_dir: Path | None = SAMPLE_TEMPLATES, *, execute: bool = True,
                    link: DataServicesLink | None = None, schedules: bool = False) -> list[WorkflowTemplate]:
        """Check what could refuse the start, then bring the parts up in order: templates (unchanged
        ones keep their version), instruments, the engine (resuming runs in flight, if
        ``execute``), the Data Services ``link``, ``schedules``, scheduled backups.
        :meth:`close` stops them in reverse. Exactly one process (the console) should execute
        runs; command-line tools pass ``execute=False``."""
        if link is not None:  # a refused configuration stops here, before any instrument moves
            link.check()
            await link.claim_module_id()
        published = []
        for template in await asyncio.to_thread(load_templates, templates_dir):
            published.append(await self.engine.publish(template, who="labconsole"))
        if self.metrics is not None:
            day_start = self.metrics.day_start
            self.metrics.seed(await self.store.read(lambda c: initial_counts(c, day_start)))
            self._stack.callback(self.metrics.close)
        for hub in self.agent_hubs:
            self._stack.push_async_callback(hub.close)
        if execute and self.dispatcher is not None:
            await self.dispatcher.start()
            self._stack.push_async_callback(self.dispatcher.close)
        await self.engine.start(resume=execute)
        self._stack.push_async_callback(self.engine.close)
        if link is not None:
            await link.start()
            self.link = link
            self._stack.push_async_callback(link.stop)
        if schedules:
            from core.schedules import Scheduler

            self.schedules = Scheduler(self)
            await self.schedules.start()
            self._stack.push_async_callback(self.schedules.close)
            await self.schedules.adopt_template_schedules()
        if execute:  # [METRICS] prometheus_port of config.ini
            from core.prometheus import from_config

            if (exporter := from_config(self)) is not None:
                self._stack.push_async_callback(exporter.start().close)
        if execute and isinstance(self.clock, SystemClock):  # [STORE] backup_every, archive_after
            from core.backup import ScheduledBackups

            if (backups := ScheduledBackups.from_config(self.store.path)) is not None:
                self.backups = backups.start()
                self._stack.push_async_callback(backups.close)
            from core.archive import ScheduledArchive  # [STORE] archive_after

            if (archive := ScheduledArchive.from_config(self.store, **self.archive_options)) is not None:
                self.archive = archive.start()
                self._stack.push_async_callback(archive.close)
        return published

    async def close(self) -> None:
        """Stop what :meth:`start` started, in reverse order, then close the store."""
        try:
            await self._stack.aclose()
        finally:
            if self.metrics is not None:
                self.metrics.close()
            self.store.close()

    def connection_status(self) -> str:
        return self.link.describe() if self.link is not None else ""

    # ------------------------------------------------------------------ reading

    def target(self, order_id: str) -> OrderTarget:
        """Whether ``order_id`` is a run or a step (one indexed lookup)."""
        run_id, step_id = self.store.read_sync(lambda c: tables.target(c, order_id))
        return OrderTarget(order_id, run_id, step_id)

    def order(self, order_id: str) -> Order:
        """The order, from the store or, once archived, from the archive (read-only there)."""
        try:
            return self.store.get_order(order_id)
        except OrderNotFoundError:
            return self.archive_reader.archived_order(order_id)

    def history(self, order_id: str) -> list[Transition]:
        return self.store.transitions(order_id) or self.archive_reader.archived_transitions(order_id)

    def child_ids(self, run_id: str) -> list[str]:
        """The step orders of a run (from the archive if the run was archived)."""
        return self.archive_reader.child_ids(run_id)

    @functools.cached_property
    def archive_reader(self) -> HistorySearch:
        """Reads orders in the store and its archive (:mod:`core.history`)."""
        from core.history import HistorySearch

        return HistorySearch(self.store)

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
        """Create (with its audit entry, one transaction) and start a run. The same template +
        inputs by the same person within the engine's duplicate window is refused
        (DuplicateSubmissionError) unless ``allow_duplicate``."""
        who = who or os_user()
        self.authorize("start run", who)
        run_id = await self.engine.create_instance(
            template_name, inputs or {}, priority=priority, version=version, who=who,
            allow_duplicate=allow_duplicate,
            audit=("start run", {"template": template_name, "version": version}))
        await self.engine.execute_workflow(run_id)
        return run_id

    async def cancel(self, order_id: str, *, who: str | None = None, reason: str | None = None,
                     signature: Signature | None = None) -> ActionResult:
        return await self._one("cancel", order_id, who, reason, signature)

    async def retry(self, order_id: str, *, who: str | None = None, reason: str | None = None,
                    signature: Signature | None = None) -> ActionResult:
        return await self._one("retry", order_id, who, reason, signature)

    async def recover(self, order_id: str, from_step: str, *, who: str | None = None,
                      reason: str | None = None, signature: Signature | None = None) -> ActionResult:
        return await self._one("recover", order_id, who, reason, signature, from_step=from_step)

    async def skip(self, order_id: str, outputs: dict[str, Any] | None = None, *, who: str | None = None,
                   reason: str | None = None, signature: Signature | None = None) -> ActionResult:
        return await self._one("skip", order_id, who, reason, signature, outputs=outputs)

    async def pause(self, order_id: str, *, who: str | None = None, reason: str | None = None,
                    signature: Signature | None = None) -> ActionResult:
        return await self._one("pause", order_id, who, reason, signature)

    async def resume(self, order_id: str, *, who: str | None = None, reason: str | None = None,
                     signature: Signature | None = None) -> ActionResult:
        return await self._one("resume", order_id, who, reason, signature)

    async def reprioritise(self, order_id: str, priority: int, *, who: str | None = None,
                           reason: str | None = None, signature: Signature | None = None) -> ActionResult:
        """New numeric priority (0-100) for a run (and its steps) or one step."""
        return await self._one("reprioritise", order_id, who, reason, signature, priority=priority)

    async def start_now(self, order_id: str, *, who: str | None = None, reason: str | None = None) -> ActionResult:
        """Let a queued step that waits for its scheduled slot go as soon as an instrument fits."""
        if self.dispatcher is None:
            raise StateError(f"{order_id} is not waiting in the queue")
        self.authorize("start now", who)
        await self.dispatcher.start_now(order_id, who=who or os_user(), reason=reason)
        return ActionResult(order_id, True, "starting as soon as an instrument fits")

    def authorize(self, action: str, who: str | None) -> None:
        """Refuse (:class:`~core.users.PermissionDenied`, naming the role and the action) an action
        the role of ``who`` does not allow while named users are on (:data:`core.users.PERMISSIONS`).
        Every operator action of the runtime passes here before it acts or checks a signature."""
        authorize(self.store, who, action)

    def check_signature(self, action: str, target: str | None, signature: Signature | None) -> Signature | None:
        """The signature to record with ``action`` on ``target``: checked if given; required
        (StateError naming the action) when ``[SIGNATURES] require`` lists it and named users are on."""
        if signature is None:
            if self.signatures.needs(action) and has_users(self.store):
                raise StateError(f"{action} needs an electronic signature ([SIGNATURES] require in "
                                 f"{self.signatures.source}): sign it with your password")
            return None
        signature.check(action, target)
        if signature.seal in self._signatures_used:
            raise StateError(f"{action}: this electronic signature was already used; sign again")
        self._signatures_used.add(signature.seal)
        return signature

    async def _one(self, key: str, order_id: str, who: str | None, reason: str | None,
                   signature: Signature | None = None, **options: Any) -> ActionResult:
        target = self._known(order_id)
        self.authorize(key, signature.user if signature is not None else who)
        if self.check_signature(key, order_id, signature) is not None:
            assert signature is not None
            who = signature.user
            options["signature"] = signature.record()
        action = _action(key, target, who or os_user(), reason, options)
        error = (await self.engine.act([action]))[0]
        if error is not None:
            raise error
        return ActionResult(order_id, True, _DONE[key](action))

    async def bulk(self, action: str, order_ids: Sequence[str], *, who: str | None = None,
                   reason: str | None = None, progress: Callable[[int, int], None] | None = None,
                   stop: asyncio.Event | None = None, signature: Signature | None = None,
                   **options: Any) -> BulkResult:
        """Apply ``action`` (one of :data:`BULK_ACTIONS`) to many orders, ``bulk_chunk`` orders
        per transaction, each order fully changed with its audit entry or not at all.

        Runs go before steps, so a step already covered by its run's action counts as done.
        Setting ``stop`` ends the action after the current chunk; the result lists what was
        left. A refusal of one order (illegal in its state) is reported and the rest go on.
        """
        if action not in BULK_ACTIONS:
            raise StateError(f"unknown bulk action '{action}' (one of: {', '.join(BULK_ACTIONS)})")
        self.authorize(action, signature.user if signature is not None else who)
        if self.check_signature(action, None, signature) is not None:
            assert signature is not None
            who = signature.user
            options["signature"] = signature.record()
        who = who or os_user()
        async with gcpolicy.collecting_apart():  # young collections in steps of their own, then frozen
            found = await self.store.read(lambda c: tables.targets(c, order_ids))
            results: dict[str, ActionResult] = {
                oid: ActionResult(oid, False, f"{oid} is not a labconsole run or step")
                for oid in order_ids if oid not in found}
            ordered = sorted((oid for oid in dict.fromkeys(order_ids) if oid in found),
                             key=lambda oid: found[oid][1] is not None)  # runs first
            covered: set[str] = set()
            total = len(order_ids)
            left: list[str] = []
            size, i = min(self.bulk_chunk, 20), 0  # the first part is small: it measures the cost
            first, taken, cpu = True, 0, 0.0
            chunks: list[list[str]] = []  # the orders of each part of the transaction under way

            async def next_part() -> list[Action] | None:
                """The next part of the transaction under way: about BULK_SLICE of the loop's time
                to plan, at most ``bulk_chunk`` orders in all; runs and steps never share one (a step
                of a run canceled in an earlier transaction counts as done with it)."""
                nonlocal first, taken, cpu, size, i
                if not first:
                    size = _next_chunk(size, time.thread_time() - cpu, self.bulk_chunk)
                    if taken >= self.bulk_chunk or i >= len(ordered) or (stop is not None and stop.is_set()) \
                            or (found[ordered[i - 1]][1] is None) != (found[ordered[i]][1] is None):
                        return None
                    await asyncio.sleep(0)
                first = False
                part = ordered[i:i + min(size, self.bulk_chunk - taken)]
                i += len(part)
                taken += len(part)
                chunk, actions = [], []
                for oid in part:
                    run_id, step_id = found[oid]
                    if step_id is not None and run_id in covered and action in ("cancel", "retry"):
                        results[oid] = ActionResult(oid, True, f"done with its run {run_id}")
                        continue
                    chunk.append(oid)
                    actions.append(_action(action, OrderTarget(oid, run_id, step_id), who, reason, options))
                chunks.append(chunk)
                cpu = time.thread_time()  # the loop thread's own work: planning this part
                return actions

            while i < len(ordered):
                if stop is not None and stop.is_set():
                    left = ordered[i:]
                    break
                first, taken = True, 0
                chunks.clear()
                done = await self.engine.act_together(next_part)
                for chunk, (actions, errors) in zip(chunks, done, strict=True):
                    for oid, act, error in zip(chunk, actions, errors, strict=True):
                        results[oid] = ActionResult(oid, error is None, _DONE[action](act) if error is None else str(error))
                        if error is None and act.step_id is None:
                            covered.add(act.run_id)
                if progress is not None:
                    progress(len(results), total)
                await asyncio.sleep(0)
            outcome = BulkResult((results[oid] for oid in order_ids if oid in results), left)
            summary: dict[str, Any] = {"orders": total, "done": sum(r.ok for r in outcome), "left": len(left)}
            if signature is not None:
                summary["signature"] = signature.record()
            await self.store.audit(who, f"bulk {action}", None, reason, summary)
            return outcome

    def preview(self, order_ids: Iterable[str]) -> dict[str, Any]:
        """What a bulk action would touch: counts and the runs involved."""
        ids = list(order_ids)
        runs: dict[str, int] = {}
        for chunk in range(0, len(ids), 500):
            part = ids[chunk:chunk + 500]
            marks = ",".join("?" * len(part))
            sql = f"SELECT COALESCE(parent_id, id) FROM orders WHERE id IN ({marks})"

            def fetch(c: sqlite3.Connection, sql: str = sql, part: list[str] = part) -> list[Any]:
                return c.execute(sql, part).fetchall()

            rows = self.store.read_sync(fetch)
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
                                reason: str | None = None, signature: Signature | None = None) -> ActionResult:
        """enable, disable, out_of_service, release, reconnect — through the dispatcher, audited
        (with the electronic signature, when given, in the same audit row)."""
        if self.dispatcher is None:
            raise StateError("no workcell is connected")
        if action not in _INSTRUMENT_AUDIT:
            raise StateError(f"unknown instrument action '{action}'")
        self.authorize(action.replace("_", " "), signature.user if signature is not None else who)
        if self.check_signature(action.replace("_", " "), instrument_id, signature) is not None:
            assert signature is not None
            who = signature.user
        with signing(signature, {_INSTRUMENT_AUDIT[action]}, instrument_id):
            return await self._instrument_action(instrument_id, action, who or os_user(), reason)

    async def _instrument_action(self, instrument_id: str, action: str, who: str,
                                 reason: str | None) -> ActionResult:
        assert self.dispatcher is not None
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

    async def publish_template(self, template: WorkflowTemplate, *, who: str | None = None,
                               signature: Signature | None = None) -> WorkflowTemplate:
        """Publish ``template`` as its next version (audited; signed when ``[SIGNATURES] require``
        lists ``template publish``)."""
        self.authorize("template publish", signature.user if signature is not None else who)
        if self.check_signature("template publish", template.name, signature) is not None:
            assert signature is not None
            who = signature.user
        with signing(signature, {"publish template"}, template.name):
            return await self.engine.publish(template, who=who or os_user())

    def template_usage(self) -> dict[str, dict[str, Any]]:
        """Per template: number of runs and when it was last used (one GROUP BY query)."""
        rows = self.store.read_sync(tables.template_usage)
        return {r[0]: {"runs": r[1], "last_used": r[2]} for r in rows}

    def runs_using(self, name: str, version: int | None = None) -> list[dict[str, Any]]:
        rows, _ = self.engine.query_instances(template=name, limit=1000)
        return [r for r in rows if version is None or r["template_version"] == version]

    def run_is_active(self, run_id: str) -> bool:
        return not self.engine.run_status(run_id).is_final


_ACT_ON_RUN = {"cancel": Act.CANCEL, "retry": Act.RETRY, "pause": Act.PAUSE, "resume": Act.RESUME,
               "reprioritise": Act.REPRIORITISE}
_ACT_ON_STEP = {"cancel": Act.CANCEL_STEP, "retry": Act.RETRY, "skip": Act.SKIP, "reprioritise": Act.REPRIORITISE}


_INSTRUMENT_AUDIT = {"enable": "enable instrument", "disable": "disable instrument",
                     "out_of_service": "take out of service", "release": "release to service",
                     "reconnect": "reconnect instrument"}
"""Instrument actions and the audit action the dispatcher records for each."""


def _action(key: str, target: OrderTarget, who: str, reason: str | None, options: dict[str, Any]) -> Action:
    """The engine action an operator's ``key`` means for this order (a run or one of its steps)."""
    run_id = target.run_id or ""
    sig = options.get("signature")
    if key == "recover":
        return Action(act=Act.RECOVER, run_id=run_id, step_id=options["from_step"], who=who, reason=reason,
                      signature=sig)
    if key in ("pause", "resume"):  # a step's run is paused or resumed
        return Action(act=_ACT_ON_RUN[key], run_id=run_id, who=who, reason=reason, signature=sig)
    if target.is_run:
        if key not in _ACT_ON_RUN:
            raise StateError(f"{target.order_id} is a run: {key} one of its steps")
        return Action(act=_ACT_ON_RUN[key], run_id=run_id, who=who, reason=reason,
                      priority=options.get("priority"), signature=sig)
    return Action(act=_ACT_ON_STEP[key], run_id=run_id, step_id=target.step_id, who=who, reason=reason,
                  outputs=options.get("outputs"), priority=options.get("priority"), signature=sig)


_DONE: dict[str, Callable[[Action], str]] = {
    "cancel": lambda a: "canceled",
    "retry": lambda a: "retrying" if a.step_id is None else f"retrying {a.step_id}",
    "recover": lambda a: f"recovering from {a.step_id}",
    "skip": lambda a: "skipped",
    "pause": lambda a: "paused",
    "resume": lambda a: "resumed",
    "reprioritise": lambda a: f"priority {a.priority}",
}


def describe(results: Iterable[ActionResult]) -> str:
    results = list(results)
    done = sum(r.ok for r in results)
    return f"{done} done, {len(results) - done} refused"

