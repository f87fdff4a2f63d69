"""Crash recovery: runs the store says were in flight are loaded and resumed.

Finished steps are kept; a step that was queued is queued again; a step that was executing is
re-run only if it is idempotent (or built in), otherwise it becomes "outcome unknown" and the run
waits for the operator.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

from core.engine import tables
from core.engine.decision import Decision
from core.engine.state import RunState, StepState
from core.orders import OrderPriority
from core.states import RUN_FINAL, RunStatus, StepStatus

if TYPE_CHECKING:
    from core.engine.engine import Engine


class Recovery:
    """Resuming after a restart (mixed into :class:`~core.engine.engine.Engine`)."""


    async def recover_in_flight(self: Engine, only: str | None = None) -> list[str]:
        """Resume every run the store says was not finished (or just ``only``). Returns their ids."""
        resumed = []
        for run_id in await self.store.read(lambda c: tables.unfinished(c, only)):
            if run_id in self._runs:
                continue
            run = await self._load_run(run_id)
            if run is not None:
                resumed.append(run_id)
                await self._commit(self._resume_after_restart(run))
        return resumed

    def _resume_after_restart(self: Engine, run: RunState) -> Decision:
        d = Decision(self.core)
        unknown = False
        rerun: list[StepState] = []
        for state in run.steps.values():
            if state.status is StepStatus.QUEUED:
                d.step(run, state, StepStatus.PENDING, "Requeued after restart")
            elif state.status is StepStatus.RUNNING and (state.step.idempotent or state.step.is_builtin):
                state.resumed = True
                d.step(run, state, StepStatus.PENDING, "Re-run after restart (idempotent step)")
                rerun.append(state)
            elif state.status is StepStatus.RUNNING:
                state.error = ("outcome unknown: the console stopped while this step was executing "
                               f"on {state.instrument or 'its instrument'}")
                state.error_code = "OutcomeUnknown"
                d.step(run, state, StepStatus.UNKNOWN, state.error)
                unknown = True
            elif state.status is StepStatus.RETRYING and state.next_attempt_at is not None:
                attempt = state.attempt
                state.timer = self.timers.at(state.next_attempt_at,
                                             functools.partial(self._retry_due, run, state, attempt))
        if run.deadline is not None:
            run.timer = self.timers.at(run.deadline, lambda: self._spawn_timeout(run))
        if unknown:
            run.paused = True
            d.run(run, RunStatus.PAUSED, "waiting for the operator after a restart: a step's outcome is unknown")
            d.then.append(run.done.set)
            if rerun:  # interrupted idempotent steps finish what they had started
                self._queue(d, run, rerun)
        elif run.status is RunStatus.PENDING:
            self._begin(d, run)
        elif not run.paused:
            if run.status is RunStatus.RECOVERING:
                d.run(run, RunStatus.RUNNING, "resumed after restart")
            self._advance(d, run)
        return d

    async def _load_run(self: Engine, run_id: str) -> RunState | None:
        r, steps, biosero = await self.store.read(lambda c: tables.load(c, run_id))
        if r is None:
            return None
        template = self.templates.get(r[1], r[2])
        run = RunState(run_id, template, json.loads(r[5]), r[4], RunStatus(r[3]), recovery_attempts=r[6],
                       paused=bool(r[7]), error=r[8], created=r[9], started=r[10], ended=r[11], deadline=r[12],
                       biosero_priority=OrderPriority(biosero) if biosero is not None else OrderPriority.Standard)
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
