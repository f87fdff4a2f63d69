"""Crash recovery: runs the store says were in flight are loaded and resumed.

Finished steps are kept; a step that was queued is queued again; a step that was executing is
re-run only if it is idempotent (or built in), otherwise it becomes "outcome unknown" and the run
waits for the operator: it stays paused when the re-run steps end, until the unknown step is
retried, skipped (marked done) or recovered, or the run is canceled.
"""

from __future__ import annotations

import functools

from core import inbox
from core.engine import tables
from core.engine.dag import DagEngine
from core.engine.decision import Decision
from core.engine.state import RunState, StepState
from core.states import RUN_FINAL, RunStatus, StepStatus


class Recovery(DagEngine):
    """Starting, resuming after a restart, and picking up runs other processes changed."""

    async def start(self, *, resume: bool = True) -> None:
        """Start the timer and (``resume``) whatever was in flight when the console last stopped."""
        self.tasks.spawn(self.timers.run(), "timers")
        if resume:
            await self.recover_in_flight()

    async def sync_with_store(self) -> tuple[list[str], list[str]]:
        """Pick up changes other processes made to the store (the command line, Data Services):
        pending runs created elsewhere start; runs canceled elsewhere stop. Returns (started,
        stopped) run ids."""
        rows = await self.store.read(tables.pending_or_cancelled)
        started_ids, stopped = [], []
        for run_id, status in rows:
            run = self._runs.get(run_id)
            if status == RunStatus.PENDING and run is None:
                await self.recover_in_flight(only=run_id)
                started_ids.append(run_id)
            elif status == RunStatus.CANCELLED and run is not None and run.status not in RUN_FINAL:
                d = Decision(self.ledger)
                self._end(d, run, RunStatus.CANCELLED, "Canceled outside the console")
                await self._commit(d)
                stopped.append(run_id)
        return started_ids, stopped



    async def recover_in_flight(self, only: str | None = None) -> list[str]:
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

    def _resume_after_restart(self, run: RunState) -> Decision:
        d = Decision(self.ledger)
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
            for state in run.steps.values():
                if state.status is StepStatus.UNKNOWN:
                    inbox.record_error(self, d, run, state)
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
