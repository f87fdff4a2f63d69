"""The workflow engine: versioned templates become orders and run as durable DAGs.

A **run** is a parent order; each step is a child order (``parentIdentifier`` = the run,
``runAfterIdentifier`` = the steps it waited for). The engine keeps runs in flight in memory
(:mod:`core.engine.state`) to decide, and records every decision as one
:class:`~core.engine.decision.Decision`: state changes, transition rows and audit entries commit
in one transaction, then events go out, then attempts start.

Steps whose dependencies are met start together. A false condition skips a step; its dependants
proceed. A failed step is retried with capped exponential backoff and jitter; when it fails for
good its error handler runs, then the template's failure policy applies: ``abort`` cancels what
is left, ``pause`` waits for the operator, ``continue`` lets other branches go on. A run paused on a
step that needs the operator (failed, or its outcome unknown) does not end when its other branches
do: the operator's decision (retry, skip, recover, resume, cancel), policy ``abort`` or the run's
timeout ends it.

Time is read only through the injected clock; every deadline sits in one timer heap. On a
timeout or cancel the instrument is asked to stop before the step is marked. After a crash,
:meth:`Engine.recover_in_flight` resumes every run: finished steps are kept; a step that was
executing re-runs only if it is idempotent, otherwise it becomes "outcome unknown" and the run
waits for the operator.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import random
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core import inbox, windows
from core.clock import Clock, SystemClock, to_datetime
from core.conditions import ConditionError, evaluate
from core.durations import parse_duration
from core.engine import tables
from core.engine.decision import ENGINE, Decision, apply_all
from core.engine.registry import TemplateRegistry, check_inputs
from core.engine.state import RunState, StepState, Timers
from core.engine.types import (
    StepExecutor,
    StepFailure,
    StepRequest,
    StopReason,
    classify,
    run_outputs,
    started,
    to_parameters,
)
from core.engine.views import RunViews
from core.errors import DuplicateSubmissionError, InputError, NotFoundError
from core.events import OrderCreated, RunChanged, StepProgress
from core.ledger import Ledger
from core.orders import Order, OrderPriority, SchedulingStrategy
from core.states import DONE_OK, RUN_FINAL, STEP_FINAL, RunStatus, StepStatus
from core.tasks import Supervisor
from core.templates import FailurePolicy, WorkflowTemplate, template_from_dict

if TYPE_CHECKING:
    from core.inbox import Inbox
    from core.playbook import Playbook

log = logging.getLogger(__name__)

FIRST_WAVE = 16
"""Steps that become ready together: this many are queued (and reach instruments) at once ..."""
WAVE = 256
"""... and the rest follow in commits of this many, so a wide fan-out starts without delay."""
_BUILTIN = ("delay", "noop", "prompt", "python")


class DagEngine:
    """Runs workflow templates as durable DAGs of orders. See the module docstring."""

    def __init__(self, ledger: Ledger, executor: StepExecutor, *, clock: Clock | None = None,
                 registry: TemplateRegistry | None = None, seed: int | None = None,
                 duplicate_window: float = 10.0) -> None:
        self.ledger = ledger
        self.store = ledger.store
        self.executor = executor
        self.clock = clock or SystemClock()
        self.templates = registry or TemplateRegistry(ledger.store)
        self.views = RunViews(ledger.store, self.templates)
        self.rng = random.Random(seed)
        self.duplicate_window = duplicate_window
        """Seconds within which the same template + inputs + requester is refused as a duplicate."""
        self._runs: dict[str, RunState] = {}
        """Runs in flight (and finished ones whose attempts are still winding down)."""
        self._ended: dict[str, RunStatus] = {}
        """Final status of runs this engine finished and released from memory."""
        self.timers = Timers(self.clock)
        self.tasks = Supervisor("engine")
        self.inbox: Inbox | None = None
        """The operator inbox (:class:`core.inbox.Inbox`) when one is attached."""
        self.playbook: Playbook | None = None
        """Error playbook consulted before the template's retry and failure policies."""
        self.step_dispatch_latencies: deque[float] = deque(maxlen=100_000)
        """Seconds from "step ready" to "executor called", the most recent ones (for benchmarks)."""
        self._claim: Callable[[StepRequest], str | None] | None = getattr(executor, "claim", None)
        self._unclaim: Callable[[StepRequest], None] | None = getattr(executor, "unclaim", None)
        self._withdraw: Callable[[StepRequest], bool | None] | None = getattr(executor, "withdraw", None)
        """The executor's :class:`~core.engine.types.ClaimingExecutor` side, when it has one."""

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Stop timers and detach from running steps (their state stays in the store)."""
        await self.tasks.close()

    # ------------------------------------------------------------------ templates (seed 001 API)

    async def publish(self, template: WorkflowTemplate, *, who: str = "labconsole") -> WorkflowTemplate:
        return await self.templates.publish(template, who=who)

    async def create_template(self, name: str, definition: dict[str, Any], description: str = "",
                              tags: Iterable[str] = (), *, who: str = "labconsole") -> WorkflowTemplate:
        """Seed 001's ``create_template``: check the definition and publish it as the next version."""
        data = {"name": name, "description": description, "tags": list(tags), "definition": definition}
        return await self.publish(template_from_dict(data, source=f"template '{name}'"), who=who)

    # ------------------------------------------------------------------ creating and starting runs

    async def create_instance(self, template_name: str, input_data: Mapping[str, Any] | None = None, *,
                              priority: int = 50, version: int | None = None, who: str = "labconsole",
                              biosero_priority: OrderPriority = OrderPriority.Standard,
                              parent_identifier: str | None = None, requester: str | None = None,
                              allow_duplicate: bool = False,
                              audit: tuple[str, dict[str, Any]] | None = None,
                              scheduled_start: datetime | None = None) -> str:
        """Create a run (parent order + one child order per step) in one transaction; return its id.

        The same template + inputs + requester within ``duplicate_window`` seconds is refused
        with :class:`DuplicateSubmissionError` naming the earlier run, unless ``allow_duplicate``.
        ``audit``: (action, details) of the operator action that asked for it, in the same commit.
        ``scheduled_start``: the run starts no earlier (Data Services ``FirstAvailableSlot``).
        """
        template = self.templates.get(template_name, version)
        inputs = check_inputs(template, input_data or {})
        if not 0 <= priority <= 100:
            raise InputError.at(f"priority must be 0..100, not {priority}", field="priority")
        now = self.clock.now()
        parent = Order(templateName=template.name, templateVersion=str(template.version),
                       inputParameters=to_parameters(inputs), createdBy=who, priority=biosero_priority,
                       parentIdentifier=parent_identifier, creationTime=to_datetime(now),
                       scheduledStartTime=scheduled_start,
                       schedulingStrategy=SchedulingStrategy.FirstAvailableSlot if scheduled_start
                       else SchedulingStrategy.ImmediateExecution)
        store = self.store
        requester = requester or who
        dedup = hashlib.sha256(json.dumps([template.name, inputs, requester], sort_keys=True,
                                          default=str).encode()).hexdigest()[:24]
        window = 0.0 if allow_duplicate else self.duplicate_window
        audit_op = store.audit_op

        def op(conn: sqlite3.Connection) -> list[tuple[Order, tuple[Any, ...]]]:
            earlier = tables.earlier_duplicate(conn, dedup, now - window) if window > 0 else None
            if earlier is not None:
                raise DuplicateSubmissionError(
                    f"{template.name} with the same inputs was already submitted by {requester} "
                    f"{now - earlier[1]:.0f} s ago as run {earlier[0]} (duplicate window {window:g} s); "
                    "submit it again with --allow-duplicate (allow_duplicate=True) to run it twice",
                    earlier[0])
            made = [store.new_order_op(parent, who=who, why=f"run of {template.name} v{template.version}",
                                       numeric_priority=priority)(conn)]
            run_id = made[0][0].identifier or ""
            ids: dict[str, str] = {}
            for s in template.steps:
                child = Order(parentIdentifier=run_id, templateName=s.kind,
                              restrictToModuleIds=",".join(s.restrict_to) or None,
                              moduleRestrictionStrategy=s.module_restriction,
                              templateVersion=str(template.version), createdBy=run_id,
                              notes=f"{s.id}: {s.label}", creationTime=to_datetime(now),
                              runAfterIdentifier=",".join(ids.get(d, d) for d in s.depends_on) or None,
                              priority=biosero_priority, inputParameters=to_parameters(s.parameters))
                made.append(store.new_order_op(child, who=who, numeric_priority=priority)(conn))
                ids[s.id] = made[-1][0].identifier or ""
            tables.insert_run(conn, run_id, template.name, template.version, priority, inputs, now,
                              dedup, requester, [(s.id, ids[s.id]) for s in template.steps])
            if audit is not None:
                audit_op(who, audit[0], run_id, None, audit[1])(conn)
            return made

        made = await store.write(op)
        run_id = made[0][0].identifier or ""
        for order, row in made:
            self.ledger.bus.publish(OrderCreated(order_id=order.identifier or "", parent_id=order.parentIdentifier,
                                               template_name=order.templateName, row=row))
        run = RunState(run_id, template, inputs, priority, created=now, biosero_priority=biosero_priority,
                       not_before=scheduled_start.timestamp() if scheduled_start else None)
        for (order, _row), s in zip(made[1:], template.steps, strict=True):
            run.steps[s.id] = StepState(s, order.identifier or "")
        run.index()
        self._runs[run_id] = run
        self.ledger.bus.publish(RunChanged(run_id=run_id, template_name=template.name,
                                         template_version=template.version, status=run.status))
        return run_id

    async def execute_workflow(self, instance_id: str, async_execution: bool = True) -> RunStatus:
        """Start a created run. With ``async_execution=False`` wait until it ends."""
        run = await self._reopen(instance_id)
        if run.status is RunStatus.PENDING:
            d = Decision(self.ledger)
            self._begin(d, run)
            await self._commit(d)
        if not async_execution:
            await self.wait(instance_id)
        return run.status

    def _begin(self, d: Decision, run: RunState) -> None:
        if run.not_before is not None and run.not_before > self.clock.now():
            when = to_datetime(run.not_before).isoformat(timespec="seconds")
            d.then.append(lambda: self.timers.at(run.not_before or 0.0, lambda: self.tasks.spawn(
                self._begin_when_due(run), f"scheduled-{run.run_id}")))
            d.then.append(lambda: self.ledger.bus.publish(RunChanged(
                run_id=run.run_id, template_name=run.template.name, template_version=run.template.version,
                status=run.status, detail=f"scheduled for {when}")))
            return
        run.started = self.clock.now()
        if run.template.default_timeout:
            run.deadline = run.started + run.template.default_timeout
            run.timer = self.timers.at(run.deadline, lambda: self._spawn_timeout(run))
        d.run(run, RunStatus.RUNNING, "started")
        self._advance(d, run)

    async def _begin_when_due(self, run: RunState) -> None:
        if run.status is RunStatus.PENDING and self._runs.get(run.run_id) is run:
            d = Decision(self.ledger)
            self._begin(d, run)
            await self._commit(d)

    async def start_workflow(self, template_name: str, input_data: Mapping[str, Any] | None = None, *,
                             priority: int = 50, who: str = "labconsole", wait: bool = False,
                             version: int | None = None) -> str:
        run_id = await self.create_instance(template_name, input_data, priority=priority, who=who,
                                            version=version)
        await self.execute_workflow(run_id, async_execution=not wait)
        return run_id

    async def wait(self, run_id: str, timeout: float | None = None) -> RunStatus:
        """Wait (real time) until the run ends or pauses for the operator."""
        run = await self._reopen(run_id)
        if timeout is None:
            await run.done.wait()
        else:
            await asyncio.wait_for(run.done.wait(), timeout)
        self._release(run)
        return run.status

    # ------------------------------------------------------------------ committing decisions

    async def _commit(self, d: Decision) -> None:
        """Stop the listed attempts on their instruments, commit every write in one transaction,
        publish the events, then run the follow-ups."""
        if d.stops:
            await self._stop_attempts(d.stops)
        if d:
            try:
                results = await self.store.write(d.apply)
            except BaseException:
                for undo in d.undo:  # nothing of it was recorded: give back what it took
                    undo()
                raise
            d.published(results)
        for then in d.then:
            then()

    async def _commit_together(self, decisions: Sequence[Decision]) -> None:
        """:meth:`_commit` for several decisions in ONE transaction; each one's events and
        follow-ups then run in a loop step of their own."""
        stops = [ask for d in decisions for ask in d.stops]
        if stops:
            await asyncio.sleep(0)  # not in the loop step of the (last part's) planning
            await self._stop_attempts(stops)
        try:
            results = await self.store.write(functools.partial(apply_all, decisions)) \
                if any(decisions) else [[] for _ in decisions]
        except BaseException:
            for d in decisions:
                for undo in d.undo:
                    undo()
            raise
        for i, (d, result) in enumerate(zip(decisions, results, strict=True)):
            if i:
                await asyncio.sleep(0)
            d.published(result)
            for then in d.then:
                then()

    async def _stop_attempts(self, asks: Sequence[tuple[StepRequest, asyncio.Task[None]]]) -> None:
        """Ask each attempt's instrument to stop (all at once), then cancel the attempts' tasks.
        Built-in steps (delay, prompt, python ...) have no instrument: cancelling their task stops them."""
        on_instruments = [(r, t) for r, t in asks if r.kind not in _BUILTIN]
        answered: list[tuple[StepRequest, bool | BaseException]] = []
        if self._withdraw is not None:  # waiting steps leave the queue at once: no task each
            under_way = []
            for request, task in on_instruments:
                withdrawn: bool | BaseException | None
                try:
                    withdrawn = self._withdraw(request)
                except Exception as exc:  # noqa: BLE001 - reported below, as a failed cancel would be
                    withdrawn = exc
                if withdrawn is None:
                    under_way.append((request, task))
                else:
                    answered.append((request, withdrawn))
            on_instruments = under_way
        if on_instruments:
            answers = await asyncio.gather(*(self.executor.cancel(r) for r, _ in on_instruments),
                                           return_exceptions=True)
            answered += zip((r for r, _ in on_instruments), answers, strict=True)
        for request, answer in answered:
            if answer is not True:
                log.warning("instrument did not confirm it stopped %s%s", request.order_id,
                            f": {answer}" if isinstance(answer, BaseException) else "")
        for _request, task in asks:
            task.cancel()

    def _spawn_timeout(self, run: RunState) -> None:
        self.tasks.spawn(self._run_timed_out(run), f"timeout-{run.run_id}")

    # ------------------------------------------------------------------ scheduling steps

    def _advance(self, d: Decision, run: RunState, after: StepState | None = None) -> None:
        """Start every step whose dependencies are met; finish the run when nothing is left.

        With ``after`` only that step's dependants are looked at (a completion cannot make any
        other step ready), so a wide fan-out costs O(n), not O(n²).
        """
        if self.tasks.closing or run.status in RUN_FINAL:
            return
        candidates = [run.steps[c] for c in run.children.get(after.step.id, ())] if after else \
            list(run.steps.values())
        to_start: list[StepState] = []
        while candidates and not run.paused:
            settled: list[StepState] = []
            for state in candidates:
                if state.status is not StepStatus.PENDING or run.is_handler_waiting(state):
                    continue
                if after is not None and run.waiting[state.step.id] > 0:
                    continue  # a completion: other dependencies still to go (failures were seen when they failed)
                deps = [run.steps[dep] for dep in state.step.depends_on]
                if any(dep.status in (StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.UNKNOWN)
                       for dep in deps):
                    if run.template.failure_policy is FailurePolicy.CONTINUE or any(
                            dep.status is StepStatus.CANCELLED for dep in deps):
                        blocker = next(dep for dep in deps if dep.status not in DONE_OK)
                        d.step(run, state, StepStatus.SKIPPED,
                               f"Skipped: upstream step '{blocker.step.id}' {blocker.status.value}")
                        settled.append(state)
                    continue
                if not all(dep.status in DONE_OK for dep in deps):
                    continue
                if state.step.condition:
                    try:
                        ok = evaluate(state.step.condition, step_outputs=run.outputs(),
                                      input_data=run.input_data, context=run.context)
                    except ConditionError as exc:
                        self._fail_for_good(d, run, state, StepFailure(str(exc), "ConditionError", False))
                        continue
                    if not ok:
                        d.step(run, state, StepStatus.SKIPPED,
                               f"Skipped: condition is false: {state.step.condition}")
                        settled.append(state)
                        continue
                to_start.append(state)
            # skipped steps satisfy their dependants: look at those next
            candidates = [run.steps[c] for st in settled for c in run.children.get(st.step.id, ())]
        if to_start and not run.paused:
            self._queue(d, run, to_start)
        self._maybe_finish(d, run)

    def _queue(self, d: Decision, run: RunState, states: list[StepState]) -> None:
        """Queue the next attempt of each step. The first wave is committed with ``d`` and
        handed to the executor right after; a wide fan-out's rest follows in waves."""
        ready_at = self.clock.now()
        batch: list[tuple[StepState, StepRequest]] = []
        for state in states:
            if state.status not in (StepStatus.PENDING, StepStatus.RETRYING):
                continue  # queued already by a nested decision (failure policy "continue")
            state.attempt += 1
            state.next_attempt_at = None
            try:
                params = self._resolve_parameters(run, state)
            except StepFailure as failure:
                self._fail_for_good(d, run, state, failure)
                continue
            request = self._request(run, state, params)
            state.status = StepStatus.QUEUED  # in memory now; written with its wave
            batch.append((state, request))
        first, rest = batch[:FIRST_WAVE], batch[FIRST_WAVE:]
        self._record_queued(d, run, first)
        d.then.append(lambda: self._launch(run, first, ready_at))
        if rest:
            d.then.append(lambda: self.tasks.spawn(self._queue_rest(run, rest, ready_at),
                                                   f"fan-out-{run.run_id}"))

    def _record_queued(self, d: Decision, run: RunState, batch: list[tuple[StepState, StepRequest]]) -> None:
        """Record each step of ``batch`` as queued with ``d``; a step whose instrument the executor
        can claim at once is recorded running too (the same commit: one per step in a chain)."""
        claim = self._claim
        for state, request in batch:
            if state.status is StepStatus.QUEUED and state.request is request:
                d.step(run, state, StepStatus.QUEUED, f"attempt {state.attempt}" if state.attempt > 1 else None,
                       changes={"inputParameters": request.order.inputParameters})
                if claim is not None and request.kind not in _BUILTIN:
                    instrument = claim(request)
                    if instrument is not None:
                        state.instrument = instrument
                        self._running(d, run, state)
                        d.undo.append(functools.partial(self._unclaim_request, request))

    async def _queue_rest(self, run: RunState, rest: list[tuple[StepState, StepRequest]],
                          ready_at: float) -> None:
        for i in range(0, len(rest), WAVE):
            wave = rest[i:i + WAVE]
            d = Decision(self.ledger)
            self._record_queued(d, run, wave)
            d.then.append(functools.partial(self._launch, run, wave, ready_at))
            await self._commit(d)

    def _launch(self, run: RunState, batch: list[tuple[StepState, StepRequest]], ready_at: float) -> None:
        now = self.clock.now()
        for state, request in batch:
            if state.request is not request or state.status not in (StepStatus.QUEUED, StepStatus.RUNNING):
                self._unclaim_request(request)  # stopped while its wave was being written
                continue
            self.step_dispatch_latencies.append(now - ready_at)
            state.task = self.tasks.spawn(self._run_attempt(run, state, request), f"step-{state.order_id}",
                                          context=f"run {run.run_id}, step {state.step.id}")

    def _unclaim_request(self, request: StepRequest) -> None:
        if self._unclaim is not None:
            self._unclaim(request)

    def _request(self, run: RunState, state: StepState, params: dict[str, Any]) -> StepRequest:
        step = state.step
        order = Order(identifier=state.order_id, parentIdentifier=run.run_id, templateName=step.kind,
                      templateVersion=str(run.template.version), priority=run.biosero_priority,
                      restrictToModuleIds=",".join(step.restrict_to) or None,
                      moduleRestrictionStrategy=step.module_restriction,
                      inputParameters=to_parameters(params))
        attempt = state.attempt
        on_started = _OnStarted(self, run, state, attempt)
        opens, closes = windows.bounds(step, {sid: st.ended for sid, st in run.steps.items()}) \
            if step.start_within is not None else (None, None)
        request = StepRequest(run_id=run.run_id, step_id=step.id, order_id=state.order_id, kind=step.kind,
                              parameters=params, attempt=attempt, timeout=step.timeout,
                              idempotent=step.idempotent, priority=run.priority,
                              template_name=run.template.name, template_version=run.template.version,
                              order=order, started=on_started, reserve=step.reserve, not_before=opens,
                              window_closes=closes,
                              run_started=min((st.started for st in run.steps.values() if st.started is not None),
                                              default=None),
                              next_kinds=tuple(run.steps[c].step.kind for c in run.children.get(step.id, ())
                                               if not run.steps[c].step.is_builtin
                                               and run.steps[c].step.kind != "python"))
        state.request = request
        state.stop_reason = None
        return request

    def _on_started(self, run: RunState, state: StepState, attempt: int, callback: _OnStarted,
                    instrument: str | None) -> Awaitable[None] | None:
        """The write of the Running transition; executors await it before the instrument
        starts, so a crash can never leave an executing step recorded as queued."""
        request = state.request
        if state.attempt == attempt and state.status is StepStatus.QUEUED and request is not None \
                and request.started is callback:
            state.instrument = instrument
            return self._mark_running(run, state, request)
        return None

    async def _mark_running(self, run: RunState, state: StepState, request: StepRequest) -> None:
        if state.request is not request or state.status is not StepStatus.QUEUED:
            return
        d = Decision(self.ledger)
        self._running(d, run, state)
        await self._commit(d)

    def _running(self, d: Decision, run: RunState, state: StepState) -> None:
        """The step's attempt starts on ``state.instrument``: its start time, its timeout, and
        its Running transition (written by ``d``, before the instrument is asked to start)."""
        if not (state.resumed and state.started is not None):
            state.started = self.clock.now()
        if state.step.timeout:
            attempt = state.attempt
            state.timer = self.timers.at(self.clock.now() + state.step.timeout,
                                         lambda: self._on_step_timeout(run, state, attempt))
        late = windows.lateness(state.step, state.started, {sid: st.ended for sid, st in run.steps.items()}) \
            if state.step.start_within is not None else None
        d.step(run, state, StepStatus.RUNNING, late.text if late is not None else None,
               changes={"assignedTo": state.instrument})

    def _resolve_parameters(self, run: RunState, state: StepState) -> dict[str, Any]:
        step = state.step
        params = dict(step.parameters)
        outputs = run.outputs() if any(v.startswith("step_outputs.") for v in step.input_mapping.values()) else {}
        for name, source in step.input_mapping.items():
            parts = source.split(".")
            try:
                if parts[0] == "input_data":
                    value: Any = run.input_data[parts[1]]
                elif parts[0] == "step_outputs":
                    value = outputs[parts[1]][".".join(parts[2:])]
                elif parts[0] == "context":
                    value = run.context[parts[1]]
                else:  # a literal (seed 001: "param1": "static_value")
                    value = source
            except (KeyError, IndexError):
                raise StepFailure(f"input mapping {name} <- {source}: no such value", "MappingError",
                                  retryable=False) from None
            params[name] = value
        return params

    async def _run_attempt(self, run: RunState, state: StepState, request: StepRequest) -> None:
        def progress(fraction: float | None, values: Mapping[str, Any] | None) -> None:
            self.ledger.bus.publish(StepProgress(order_id=request.order_id, instrument_id=state.instrument,
                                               progress=fraction, values=dict(values) if values else None))

        try:
            if request.not_before is not None and request.not_before > self.clock.now():
                await self._until(request.not_before)  # the step's window opens
            if request.kind in _BUILTIN:
                outputs = await self._builtin(state, request)
            else:
                outputs = await self.executor.execute(request, progress)
        # The outcome's decision is shielded: a stop that arrives while it commits (a timeout
        # racing a completion) must not cut it off between its commit and its follow-ups.
        except asyncio.CancelledError:
            if state.stop_reason is not StopReason.TIMEOUT or self.tasks.closing:
                # a decision recorded the outcome (or the engine is closing). The task keeps the
                # error, whose traceback holds this frame: without the step's reference back to
                # the task, reference counting frees the run instead of a full collection
                if state.task is asyncio.current_task():
                    state.task = None
                raise
            await asyncio.shield(self._on_failure(run, state, self._timed_out(run, state)))
            return
        except Exception as exc:  # noqa: BLE001 - every failure is classified
            if state.request is request:
                # stopped for its timeout, the instrument may answer "cancelled" before the
                # attempt's task is cancelled: it is still the timeout that ended it
                failure = self._timed_out(run, state) if state.stop_reason is StopReason.TIMEOUT \
                    else classify(exc)
                await asyncio.shield(self._on_failure(run, state, failure))
            return
        if state.request is not request:
            return
        state.cancel_timer()
        state.resumed = False
        state.outputs = dict(outputs or {})
        state.ended = self.clock.now()
        if state.started is None:  # an executor that never reported "started"
            state.started = state.ended
        d = Decision(self.ledger)
        d.step(run, state, StepStatus.COMPLETED, changes={"outputParameters": to_parameters(state.outputs)})
        self._advance(d, run, after=state)  # the next steps start in the same commit
        await asyncio.shield(self._commit(d))

    def _timed_out(self, run: RunState, state: StepState) -> StepFailure:
        policy = run.template.retry_policy(state.step)
        return StepFailure(f"timed out after {state.step.timeout:g} s", "Timeout",
                           retryable=policy.retry_on_timeout)

    async def _until(self, when: float) -> None:
        """Wait for ``when`` on the engine's timer heap (cancelled with the attempt)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.timers.at(when, lambda: None if done.done() else done.set_result(None))
        await done

    async def _builtin(self, state: StepState, request: StepRequest) -> dict[str, Any]:
        await started(request, None)
        if request.kind == "python":  # a function in a worker process (core.pysteps)
            from core import pysteps

            run = self._runs[request.run_id]
            deps = [(d, run.steps[d].outputs or {}) for d in state.step.depends_on]
            return await pysteps.run_handler(
                state.step.handler or "", pysteps.step_inputs(run.input_data, deps, request.parameters),
                step_outputs=dict(deps), paths=pysteps.paths_for(self.store.path.parent))
        if request.kind == "delay":
            total = parse_duration(request.parameters.get("seconds", request.parameters.get("duration", 0)))
            waited = self.clock.now() - state.started if state.resumed and state.started else 0.0
            wait = max(0.0, total - waited)  # after a restart, only what is left
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def wake() -> None:
                if not done.done():
                    done.set_result(None)

            self.timers.at(self.clock.now() + wait, wake)
            await done
            return {"waited_seconds": total}
        if request.kind == "prompt":  # an inbox item; ends when it is answered (or the step skipped)
            await inbox.wait_for_answer(self, state, request)
        return {}

    # ------------------------------------------------------------------ failures

    def _on_step_timeout(self, run: RunState, state: StepState, attempt: int) -> None:
        """The attempt records the timeout itself (see ``_run_attempt``) once its task is cancelled."""
        request, task = state.request, state.task
        if state.attempt == attempt and request is not None and task is not None and not task.done():
            state.stop_reason = StopReason.TIMEOUT
            self.tasks.spawn(self._stop_attempts([(request, task)]), f"timeout-{state.order_id}")

    async def _on_failure(self, run: RunState, state: StepState, failure: StepFailure) -> None:
        d = Decision(self.ledger)
        self._failed(d, run, state, failure)
        await self._commit(d)

    def _failed(self, d: Decision, run: RunState, state: StepState, failure: StepFailure) -> None:
        """An attempt failed: outcome unknown (operator decides), a retry later, or failed for good."""
        state.cancel_timer()
        state.request = None
        state.error, state.error_code = failure.message, failure.code
        if self.playbook is not None and self.playbook.decide(self, d, run, state, failure):
            return  # a playbook rule decided (and recorded why)
        policy = run.template.retry_policy(state.step)
        # an idempotent step may simply run again when its outcome is unknown
        retryable = (failure.retryable or (failure.outcome_unknown and state.step.idempotent)) \
            and failure.code not in policy.non_retryable and type(failure).__name__ not in policy.non_retryable
        if failure.outcome_unknown and not state.step.idempotent:
            d.step(run, state, StepStatus.UNKNOWN, f"Outcome unknown: {failure.message}; the operator "
                   "decides (retry, skip or recover)")
            self._apply_failure_policy(d, run, state, force_pause=True)
        elif retryable and state.attempt < policy.max_attempts and run.status not in RUN_FINAL:
            delay = policy.delay(state.attempt, self.rng.random())
            state.next_attempt_at = self.clock.now() + delay
            d.step(run, state, StepStatus.RETRYING, f"Retry {state.attempt + 1}/{policy.max_attempts} in "
                   f"{delay:.1f} s after {failure.code}: {failure.message}")
            attempt = state.attempt
            state.timer = self.timers.at(state.next_attempt_at, lambda: self._retry_due(run, state, attempt))
        else:
            self._fail_for_good(d, run, state, failure)

    def _retry_due(self, run: RunState, state: StepState, attempt: int) -> None:
        if state.status is StepStatus.RETRYING and state.attempt == attempt \
                and not run.paused and run.status not in RUN_FINAL:
            d = Decision(self.ledger)
            self._queue(d, run, [state])
            self.tasks.spawn(self._commit(d), f"retry-{state.order_id}")

    def _fail_for_good(self, d: Decision, run: RunState, state: StepState, failure: StepFailure) -> None:
        state.error, state.error_code = failure.message, failure.code
        state.ended = self.clock.now()
        d.step(run, state, StepStatus.FAILED, f"{failure.code}: {failure.message}")
        self._apply_failure_policy(d, run, state)

    def _apply_failure_policy(self, d: Decision, run: RunState, state: StepState, *,
                              force_pause: bool = False) -> None:
        handler_id = run.template.error_handlers.get(state.step.id) or run.template.error_handlers.get("*")
        if handler_id and handler_id != state.step.id and state.handler_for is None:
            handler = run.steps[handler_id]
            if handler.status is StepStatus.PENDING:
                handler.handler_for = state.step.id
                self._queue(d, run, [handler])
        policy = run.template.failure_policy
        if force_pause or policy is FailurePolicy.PAUSE:
            run.paused = True
            d.run(run, RunStatus.PAUSED, f"step '{state.step.id}' needs the operator: {state.error}")
            inbox.record_error(self, d, run, state)
            d.then.append(run.done.set)
        elif policy is FailurePolicy.ABORT:
            run.ending = True
            self._abort_rest(d, run, f"aborted: step '{state.step.id}' failed", keep=handler_id)
            self._maybe_finish(d, run)
        else:
            self._advance(d, run)

    def _abort_rest(self, d: Decision, run: RunState, why: str, keep: str | None = None,
                    who: str = ENGINE) -> None:
        """Cancel every unfinished step but ``keep``; attempts under way are stopped first."""
        for other in run.steps.values():
            if other.step.id == keep or other.status in STEP_FINAL:
                continue
            other.cancel_timer()
            if other.status in (StepStatus.QUEUED, StepStatus.RUNNING):
                d.stop(other, StopReason.RUN_ENDED)
            d.step(run, other, StepStatus.CANCELLED, why, who=who)

    def _maybe_finish(self, d: Decision, run: RunState) -> None:
        if run.status in RUN_FINAL:
            return
        idle_handlers = sum(1 for h in run.template.handler_steps
                            if run.steps[h].handler_for is None and run.steps[h].status is StepStatus.PENDING)
        if run.unfinished - idle_handlers > 0:
            return
        real = [s for s in run.steps.values() if not run.is_handler_waiting(s)]
        if run.paused and not run.ending and any(s.status.needs_operator for s in real):
            return  # paused on a failed or unknown step: the operator's decision ends it (or goes on)
        failed = next((s for s in real if s.status is StepStatus.FAILED), None) or \
            next((s for s in real if s.status.needs_operator), None)
        if failed is not None:
            status, detail = RunStatus.FAILED, f"step '{failed.step.id}' failed: {failed.error}"
        elif any(s.status is StepStatus.CANCELLED for s in real):
            status, detail = RunStatus.CANCELLED, run.error or "a step was canceled"
        else:
            status, detail = RunStatus.COMPLETED, None
        for handler in run.steps.values():  # handlers that never ran are not part of the run
            if run.is_handler_waiting(handler) and handler.status is StepStatus.PENDING:
                d.step(run, handler, StepStatus.SKIPPED, "Skipped: error handler not needed")
        self._finish(d, run, status, detail)

    def _end(self, d: Decision, run: RunState, status: RunStatus, why: str, who: str = ENGINE) -> None:
        """Cancel what is left of the run and finish it as ``status``."""
        run.error = why
        self._abort_rest(d, run, why, who=who)
        self._finish(d, run, status, why, who)

    def _finish(self, d: Decision, run: RunState, status: RunStatus, detail: str | None,
                who: str = ENGINE) -> None:
        run.ended = self.clock.now()
        run.error = detail if status is not RunStatus.COMPLETED else None
        if run.timer:
            run.timer.cancel()
        outputs = run_outputs(run.template, run.outputs(), status is RunStatus.COMPLETED)
        d.run(run, status, detail, who=who, changes={"outputParameters": to_parameters(outputs)})
        d.write(inbox.close_op(who, f"run {status.value}", run.ended, run_id=run.run_id),
                inbox.publish_closed(run.run_id))
        d.then.append(run.done.set)
        d.then.append(lambda: self._release(run))

    def _release(self, run: RunState) -> None:
        """Forget a finished run once none of its attempts is still winding down (everything about
        it is in the store; an operator's retry, recover or skip loads it again)."""
        if run.status not in RUN_FINAL or self._runs.get(run.run_id) is not run:
            return
        busy = next((s.task for s in run.steps.values() if s.attempt_running), None)
        if busy is not None:
            busy.add_done_callback(lambda _task: self._release(run))
            return
        del self._runs[run.run_id]
        self._ended[run.run_id] = run.status
        for state in run.steps.values():  # its start callback refers back to the step and run:
            state.request = None  # a cycle, freed only by a full collection (or never, frozen)

    async def _run_timed_out(self, run: RunState) -> None:
        if run.status not in RUN_FINAL:
            d = Decision(self.ledger)
            self._end(d, run, RunStatus.FAILED, f"run timed out after {run.template.default_timeout:g} s")
            await self._commit(d)

    # ------------------------------------------------------------------ loading runs

    async def _reopen(self, run_id: str) -> RunState:
        run = self._runs.get(run_id)
        if run is None:
            run = await self._load_run(run_id)
            if run is None:
                raise NotFoundError(f"no run '{run_id}'")
        return run

    async def _load_run(self, run_id: str) -> RunState | None:
        r, steps, parent = await self.store.read(lambda c: tables.load(c, run_id))
        if r is None:
            return None
        biosero, not_before = parent if parent is not None else (None, None)
        template = self.templates.get(r[1], r[2])
        run = RunState(run_id, template, json.loads(r[5]), r[4], RunStatus(r[3]), recovery_attempts=r[6],
                       paused=bool(r[7]), error=r[8], created=r[9], started=r[10], ended=r[11], deadline=r[12],
                       biosero_priority=OrderPriority(biosero) if biosero is not None else OrderPriority.Standard,
                       not_before=not_before)
        by_id = {s[0]: s for s in steps}
        for step in template.steps:
            s = by_id[step.id]
            run.steps[step.id] = StepState(step, s[1], StepStatus(s[2]), s[3], json.loads(s[4]) if s[4] else None,
                                           s[5], s[6], instrument=s[10], started=s[7], ended=s[8],
                                           next_attempt_at=s[9])
        run.index()
        if run.status in RUN_FINAL:
            run.done.set()
        self._runs[run_id] = run
        self._ended.pop(run_id, None)
        return run

    # ------------------------------------------------------------------ queries (from the store)

    def get_instance(self, run_id: str) -> dict[str, Any]:
        """The run as stored (seed 001's shape): template, version, status, inputs, every step."""
        return self.views.run(run_id).as_dict()

    def get_workflow_progress(self, workflow_id: str) -> dict[str, Any]:
        """Seed 002's progress report."""
        return self.views.progress(workflow_id)

    def get_statistics(self, template_name: str | None = None) -> dict[str, Any]:
        """Seed 001's statistics, per template or overall."""
        return self.views.statistics(template_name)

    def query_instances(self, status: str | None = None, created_after: Any = None,
                        priority_min: int | None = None, template: str | None = None,
                        limit: int = 100, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Seed 001's ``query_instances`` → (page of runs, total matching)."""
        return self.views.query(status, created_after, priority_min, template, limit, offset)

    def run_status(self, run_id: str) -> RunStatus:
        run = self._runs.get(run_id)
        if run is not None:
            return run.status
        ended = self._ended.get(run_id)
        if ended is not None:
            return ended
        return self.views.run(run_id).status

    def is_active(self, run_id: str) -> bool:
        return run_id in self._runs and self._runs[run_id].status not in RUN_FINAL


class _OnStarted:
    """A request's ``started`` callback (:meth:`DagEngine._on_started`). It finds its request
    through the step, not a reference of its own: a request and a closure over it would form a
    cycle holding the step and its run, which only a full collection frees."""

    __slots__ = ("engine", "run", "state", "attempt")

    def __init__(self, engine: DagEngine, run: RunState, state: StepState, attempt: int) -> None:
        self.engine, self.run, self.state, self.attempt = engine, run, state, attempt

    def __call__(self, instrument: str | None) -> Awaitable[None] | None:
        return self.engine._on_started(self.run, self.state, self.attempt, self, instrument)  # noqa: SLF001 - its own
