"""Operator control: cancel, pause, resume, retry, recover, skip and reprioritise.

Every action is an :class:`Action` value; :meth:`OperatorControl.act` checks each against its run
and records the accepted ones in ONE decision (state changes, transitions, audit entries, one
transaction), so a bulk action is one commit per chunk and a refused action changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from core import inbox
from core.engine.dag import DagEngine
from core.engine.decision import Decision
from core.engine.state import RunState, StepState
from core.engine.types import StepFailure, StopReason, to_parameters
from core.errors import (
    IllegalTransitionError,
    InputError,
    LabconsoleError,
    NotFoundError,
    StateError,
)
from core.states import DONE_OK, RUN_FINAL, STEP_FINAL, STEP_RETRYABLE, RunStatus, StepStatus
from core.templates import descendants
from core.users import os_user


class Act(Enum):
    """Operator actions on runs (each one transaction with its audit entry)."""

    CANCEL = "cancel run"
    CANCEL_STEP = "cancel step"
    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry step"
    RECOVER = "recover"
    SKIP = "skip step"
    REPRIORITISE = "reprioritise"
    ANSWER = "answer"
    """Complete a waiting ``prompt`` step with the answer as its outputs (or, ``rejected``, fail it)."""


@dataclass(frozen=True, kw_only=True)
class Action:
    """One operator action on one run (``step_id`` for step actions; RETRY without a step
    retries every failed step of the run)."""

    act: Act
    run_id: str
    step_id: str | None = None
    who: str = field(default_factory=os_user)
    reason: str | None = None
    outputs: Mapping[str, Any] | None = None
    priority: int | None = None
    signature: Mapping[str, Any] | None = None
    """An electronic signature record (``core.users.Signature.record()``), kept in the audit entry."""
    item: int | None = None
    """The inbox item this action answers (marked answered in the same transaction)."""
    answer: Mapping[str, Any] | None = None
    """The answer given to ``item``, as recorded."""
    rejected: str | None = None
    """ANSWER to an approval: the reason it was rejected (the step fails)."""


_CLOSES_STEP_ITEMS = frozenset({"retry step", "skip step", "cancel step"})
_CLOSES_RUN_ITEMS = frozenset({"retry step", "recover"})


class OperatorControl(DagEngine):
    """The operator's actions on runs (mixed into :class:`~core.engine.engine.Engine`)."""


    async def act(self, actions: Sequence[Action]) -> list[LabconsoleError | None]:
        """Apply operator actions in ONE transaction (state changes, transitions, audit entries);
        one result per action: None, or why it was refused (nothing of it was applied)."""
        d, results = await self.plan(actions)
        await self._commit(d)
        return results

    async def act_together(self, next_part: Callable[[], Awaitable[Sequence[Action] | None]]
                           ) -> list[tuple[Sequence[Action], list[LabconsoleError | None]]]:
        """Apply parts of actions in ONE transaction: each part (from ``next_part()``, until it
        gives None) is planned in a loop step of its own, and after the commit each part's events
        are published in a loop step of its own, so a large transaction never stalls the event
        loop for long. Each part with its results (as :meth:`act`)."""
        planned: list[tuple[Sequence[Action], Decision, list[LabconsoleError | None]]] = []
        while (actions := await next_part()) is not None:
            d, results = await self.plan(actions)
            planned.append((actions, d, results))
        await self._commit_together([d for _, d, _ in planned])
        return [(actions, results) for actions, _, results in planned]

    async def plan(self, actions: Sequence[Action]) -> tuple[Decision, list[LabconsoleError | None]]:
        """What :meth:`act` does before its commit: check and record each action in one decision
        (the runs in memory change now); one result per action."""
        d = Decision(self.ledger)
        results: list[LabconsoleError | None] = []
        for action in actions:
            run: RunState | None = None
            try:
                run = await self._reopen(action.run_id)
                one = Decision(self.ledger)
                if action.item is not None:  # first: the run may finish (closing what is left open) in this commit
                    one.write(inbox.answer_op(action.item, action.who, action.answer or action.outputs or {},
                                              self.clock.now(), propose_after=self._propose_after()),
                              inbox.publish_answered(action.item, run.run_id))
                else:
                    self._close_items(one, run, action)
                self._plan(one, run, action)
                d.merge(one)
            except LabconsoleError as exc:
                results.append(exc)
                if run is not None:
                    self._release(run)  # a finished run loaded only to refuse the action
            else:
                results.append(None)
        return d, results

    async def _act_one(self, action: Action) -> RunStatus:
        error = (await self.act([action]))[0]
        if error is not None:
            raise error
        return self.run_status(action.run_id)

    async def cancel(self, run_id: str, *, who: str | None = None, reason: str | None = None) -> RunStatus:
        """Cancel a run: stop running steps on their instruments, cancel the rest."""
        return await self._act_one(Action(act=Act.CANCEL, run_id=run_id, who=who or os_user(), reason=reason))

    async def cancel_step(self, run_id: str, step_id: str, *, who: str | None = None,
                          reason: str | None = None) -> StepStatus:
        await self._act_one(Action(act=Act.CANCEL_STEP, run_id=run_id, step_id=step_id,
                                   who=who or os_user(), reason=reason))
        return StepStatus.CANCELLED

    async def pause(self, run_id: str, *, who: str | None = None, reason: str | None = None) -> RunStatus:
        """No new step starts; running steps finish."""
        return await self._act_one(Action(act=Act.PAUSE, run_id=run_id, who=who or os_user(), reason=reason))

    async def resume(self, run_id: str, *, who: str | None = None, reason: str | None = None) -> RunStatus:
        return await self._act_one(Action(act=Act.RESUME, run_id=run_id, who=who or os_user(), reason=reason))

    async def retry_step(self, run_id: str, step_id: str | None, *, who: str | None = None,
                         reason: str | None = None) -> RunStatus:
        """Run a failed (or canceled, or unknown-outcome) step again with fresh attempts; with no
        ``step_id``, every such step of the run."""
        return await self._act_one(Action(act=Act.RETRY, run_id=run_id, step_id=step_id,
                                          who=who or os_user(), reason=reason))

    async def recover(self, run_id: str, from_step: str, *, who: str | None = None,
                      reason: str | None = None) -> RunStatus:
        """Seed 002's ``recover_workflow(from_step)``: rerun ``from_step`` and everything after it,
        keeping upstream outputs; counts against ``max_recovery_attempts``."""
        return await self._act_one(Action(act=Act.RECOVER, run_id=run_id, step_id=from_step,
                                          who=who or os_user(), reason=reason))

    async def skip_step(self, run_id: str, step_id: str, outputs: Mapping[str, Any] | None = None, *,
                        who: str | None = None, reason: str | None = None) -> RunStatus:
        """Mark a failed (or waiting) step as skipped with the given outputs; dependants proceed."""
        return await self._act_one(Action(act=Act.SKIP, run_id=run_id, step_id=step_id, outputs=outputs,
                                          who=who or os_user(), reason=reason))

    async def reprioritise(self, run_id: str, priority: int, *, step_id: str | None = None,
                           who: str | None = None, reason: str | None = None) -> RunStatus:
        """New numeric priority (0-100) for a run and its steps, or for one step."""
        return await self._act_one(Action(act=Act.REPRIORITISE, run_id=run_id, step_id=step_id,
                                          priority=priority, who=who or os_user(), reason=reason))

    def _plan(self, d: Decision, run: RunState, a: Action) -> None:
        """Check ``a`` against the run (raise, changing nothing, if it cannot apply), then record it."""
        who, reason, target = a.who, a.reason, run.run_id
        details: dict[str, Any] | None = None
        state = self._step(run, a.step_id) if a.step_id is not None else None
        if a.act is Act.CANCEL:
            if run.status in RUN_FINAL:
                raise IllegalTransitionError(f"run {run.run_id}", run.status.value, RunStatus.CANCELLED.value)
            self._end(d, run, RunStatus.CANCELLED, f"Canceled by {who}" + (f": {reason}" if reason else ""), who)
        elif a.act is Act.CANCEL_STEP and state is not None:
            if state.status in STEP_FINAL:
                raise IllegalTransitionError(f"step {state.step.id} of {run.run_id}", state.status.value,
                                             StepStatus.CANCELLED.value)
            target = state.order_id
            state.cancel_timer()
            d.stop(state, StopReason.OPERATOR)
            state.ended = self.clock.now()
            d.step(run, state, StepStatus.CANCELLED, f"Canceled by {who}" + (f": {reason}" if reason else ""),
                   who=who)
            self._advance(d, run)
        elif a.act is Act.PAUSE:
            if run.status in RUN_FINAL or run.paused:
                raise IllegalTransitionError(f"run {run.run_id}", run.status.value, RunStatus.PAUSED.value)
            run.paused = True
            d.run(run, RunStatus.PAUSED, f"Paused by {who}" + (f": {reason}" if reason else ""), who=who)
        elif a.act is Act.RESUME:
            if run.status is not RunStatus.PAUSED:
                raise IllegalTransitionError(f"run {run.run_id}", run.status.value, RunStatus.RUNNING.value)
            blocked = [s.step.id for s in run.steps.values() if s.status is StepStatus.UNKNOWN]
            if blocked:
                raise StateError(f"run {run.run_id}: step(s) {', '.join(blocked)} have an unknown outcome; "
                                 "retry, skip or recover them first")
            run.paused = False
            run.done.clear()
            d.run(run, RunStatus.RUNNING, f"Resumed by {who}", who=who)
            self._queue_due_retries(d, run)
            self._advance(d, run)
        elif a.act is Act.RETRY:
            chosen = [state] if state is not None else \
                [s for s in run.steps.values() if s.status in STEP_RETRYABLE]
            if not chosen:
                raise StateError(f"run {run.run_id} has no failed step to retry")
            for s in chosen:
                if s.status not in STEP_RETRYABLE:
                    raise IllegalTransitionError(f"step {s.step.id} of {run.run_id}", s.status.value, "retry")
            for s in chosen:  # one audit entry per retried step, on the step's order
                d.audit(who, a.act.value, s.order_id, reason, _signed(None, a))
            again = {s.step.id: s for s in chosen}
            for s in chosen:  # dependants skipped or canceled because of it go again too
                for dep_id in descendants(run.template, s.step.id):
                    dep = run.steps[dep_id]
                    if dep.status in (StepStatus.SKIPPED, StepStatus.CANCELLED) and dep.error is None:
                        again.setdefault(dep_id, dep)
            self._reset(d, run, list(again.values()), f"Retry requested by {who}")
            self._continue(d, run, who)
            return
        elif a.act is Act.RECOVER and state is not None:
            if run.recovery_attempts >= run.template.max_recovery_attempts:
                raise StateError(f"run {run.run_id}: recovery limit reached "
                                 f"({run.recovery_attempts}/{run.template.max_recovery_attempts})")
            running = [s.step.id for s in run.steps.values() if s.status in (StepStatus.QUEUED, StepStatus.RUNNING)]
            if running:
                raise StateError(f"run {run.run_id}: steps {', '.join(running)} are still running; "
                                 "pause and wait, or cancel them first")
            run.recovery_attempts += 1
            details = {"from_step": state.step.id, "attempt": run.recovery_attempts}
            ids = [state.step.id, *descendants(run.template, state.step.id)]
            self._reset(d, run, [run.steps[s] for s in ids],
                        f"Recovery {run.recovery_attempts} from '{state.step.id}' by {who}")
            d.run(run, RunStatus.RECOVERING, f"Recovery {run.recovery_attempts} from '{state.step.id}'", who=who)
            self._continue(d, run, who)
        elif a.act is Act.SKIP and state is not None:
            if state.status in DONE_OK:
                raise IllegalTransitionError(f"step {state.step.id} of {run.run_id}", state.status.value,
                                             StepStatus.SKIPPED.value)
            target = state.order_id
            state.cancel_timer()
            d.stop(state, StopReason.SKIPPED)
            state.request = None
            state.outputs = dict(a.outputs or {})
            state.error = None
            details = {"outputs": state.outputs}
            d.step(run, state, StepStatus.SKIPPED, f"Skipped by {who}" + (f": {reason}" if reason else ""),
                   changes={"outputParameters": to_parameters(state.outputs)}, who=who)
            for dep_id in descendants(run.template, state.step.id):
                dep = run.steps[dep_id]
                if dep.status is StepStatus.SKIPPED and dep.error is None and dep.outputs is None:
                    self._reset(d, run, [dep], "upstream step skipped by operator")
            self._continue(d, run, who)
        elif a.act is Act.ANSWER and state is not None:
            if state.step.kind != "prompt" or state.status is not StepStatus.RUNNING:
                raise StateError(f"step {state.step.id} of {run.run_id} is not waiting for an answer "
                                 f"(it is {state.status.value})")
            target = state.order_id
            details = {"item": a.item, "answer": dict(a.answer or a.outputs or {})}
            state.cancel_timer()
            task, state.request, state.stop_reason = state.task, None, StopReason.SKIPPED
            if task is not None and not task.done():
                d.then.append(task.cancel)  # the prompt's wait ends; nothing runs on an instrument
            state.ended = self.clock.now()
            if a.rejected is not None:
                self._fail_for_good(d, run, state, StepFailure(f"Rejected by {who}: {a.rejected}", "Rejected",
                                                               retryable=False))
            else:
                state.outputs, state.error = dict(a.outputs or {}), None
                d.step(run, state, StepStatus.COMPLETED, f"Answered by {who}",
                       changes={"outputParameters": to_parameters(state.outputs)}, who=who)
                self._advance(d, run, after=state)
        elif a.act is Act.REPRIORITISE and a.priority is not None:
            if not 0 <= a.priority <= 100:
                raise InputError.at(f"priority must be 0..100, not {a.priority}", field="priority")
            details = {"priority": a.priority}
            if state is None:
                run.priority = a.priority
                d.run_fields(run)
                d.order_fields(run.run_id, {}, numeric_priority=a.priority)
            else:
                target = state.order_id
            for s in run.steps.values() if state is None else (state,):
                d.order_fields(s.order_id, {}, numeric_priority=a.priority)
                if s.status is StepStatus.QUEUED and s.request is not None:
                    d.then.append(functools.partial(self._requeue, s, a.priority))
        else:
            raise StateError(f"{a.act.value} needs a step of run {run.run_id}")
        d.audit(who, a.act.value, target, reason, _signed(details, a))

    def _propose_after(self) -> int:
        return self.inbox.propose_after if self.inbox is not None else inbox.PROPOSE_AFTER

    def _close_items(self, d: Decision, run: RunState, a: Action) -> None:
        """Inbox items this action settles (the step's, or the run's) are answered by it."""
        state = run.steps.get(a.step_id) if a.step_id is not None else None
        why = a.act.value + (f": {a.reason}" if a.reason else "")
        if state is not None and a.act.value in _CLOSES_STEP_ITEMS:
            d.write(inbox.close_op(a.who, why, self.clock.now(), order_id=state.order_id),
                    inbox.publish_closed(run.run_id))
        elif a.act.value in _CLOSES_RUN_ITEMS:
            d.write(inbox.close_op(a.who, why, self.clock.now(), run_id=run.run_id), inbox.publish_closed(run.run_id))

    def _requeue(self, state: StepState, priority: int) -> None:
        reprioritise = getattr(self.executor, "reprioritise", None)
        if reprioritise is not None:
            try:
                reprioritise(state.order_id, priority)
            except LabconsoleError:
                pass  # it left the queue meanwhile: its priority no longer matters

    def _continue(self, d: Decision, run: RunState, who: str) -> None:
        if any(s.status is StepStatus.UNKNOWN for s in run.steps.values()):
            return
        run.paused = False
        run.done.clear()
        run.ended = None
        if run.status is not RunStatus.RUNNING:
            d.run(run, RunStatus.RUNNING, f"Continued by {who}", who=who)
        self._queue_due_retries(d, run)
        self._advance(d, run)

    def _queue_due_retries(self, d: Decision, run: RunState) -> None:
        """Retries that fell due while the run was paused (their timer found it paused) go now."""
        due = [s for s in run.steps.values() if s.status is StepStatus.RETRYING
               and s.next_attempt_at is not None and s.next_attempt_at <= self.clock.now()]
        if due:
            self._queue(d, run, due)

    def _reset(self, d: Decision, run: RunState, states: list[StepState], why: str) -> None:
        run.ending = False  # the step that aborted the run may be among them: its fate is open again
        for state in states:
            state.cancel_timer()
            state.attempt = 0
            state.outputs = None
            state.error = state.error_code = None
            state.started = state.ended = state.next_attempt_at = None
            state.request = None
            state.handler_for = None
            state.resumed = False
            d.step(run, state, StepStatus.PENDING, why,
                   changes={"outputParameters": [], "actualEndTime": None, "assignedTo": None})

    def _step(self, run: RunState, step_id: str) -> StepState:
        state = run.steps.get(step_id)
        if state is None:
            raise NotFoundError(f"run {run.run_id} has no step '{step_id}' (steps: {', '.join(run.steps)})")
        return state


def _signed(details: dict[str, Any] | None, a: Action) -> dict[str, Any] | None:
    """The audit details of ``a``, with its electronic signature when it has one."""
    if a.signature is None:
        return details
    return {**(details or {}), "signature": dict(a.signature)}
