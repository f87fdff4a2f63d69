"""A run comes back from a SIGKILL with one step "outcome unknown" and one idempotent step re-run
(both were executing in parallel, and nothing follows them). The unknown step's resolution by the
operator decides the run's fate, whatever order things happen in:

- the re-run step ends first: the run stays Paused, its inbox item open, until the operator
  retries the unknown step or marks it done (skip with outputs); then the run goes on;
- the operator resolves the unknown step first: the run goes on at once;
- the re-run step fails and is retried later: the retry waits while the run is paused and runs
  once the operator has resolved the unknown step;
- the re-run step fails for good: the template's failure policy applies, as it would without the
  restart. ``abort`` (the default) ends the run Failed, naming the failed step (the other step's
  outcome stays unknown in the record); ``continue`` lets the other branch wait for the operator,
  and the run ends Failed once the unknown step is resolved.

One child process per module runs two runs (policies abort and continue) and is killed with
SIGKILL while their steps execute; each test restarts an engine on its own copy of that store.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from enginekit import Kit

from core import inbox
from core.engine import RunStatus, StepFailure, StepRequest
from core.states import RUN_FINAL
from core.store import Store

ROOT = Path(__file__).resolve().parent.parent
HELPER = Path(__file__).parent / "helpers" / "engine_crash.py"


def _pair(name: str, policy: str) -> dict[str, Any]:
    """prep, then ``read`` (not idempotent) and ``move`` (idempotent, retried) in parallel, last."""
    return {"name": name, "definition": {"failure_policy": policy, "steps": [
        {"id": "prep", "kind": "LiquidHandler.Transfer", "idempotent": True},
        {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["prep"]},
        {"id": "move", "kind": "RobotArm.MovePlate", "depends_on": ["prep"], "idempotent": True,
         "retry_policy": {"max_attempts": 3, "initial_interval": 30, "jitter": 0}},
    ]}}


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A store left by a console SIGKILLed while ``read`` and ``move`` of both runs executed;
    the run ids by template name."""
    db = tmp_path_factory.mktemp("killed") / "crash.sqlite3"
    proc = subprocess.Popen([sys.executable, str(HELPER), str(db),
                             json.dumps(_pair("Abort", "abort")), json.dumps(_pair("GoOn", "continue"))],
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None
    runs: dict[str, str] = {}
    running: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 60
    try:
        while len(running) < 4 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("RUN "):
                _, run_id, name = line.split()
                runs[name] = run_id
            elif line.startswith("STEP "):
                _, step, status, run_id = line.split()
                if status == "running" and step in ("read", "move"):
                    running.add((run_id, step))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the child ended with {proc.returncode}, not by SIGKILL"
    assert len(running) == 4, f"the child never got both steps of both runs running: {sorted(running)}"
    return db, runs


class Outcomes:
    """The restarted executor's results: the failures queued per (run id, step id), else outputs."""

    def __init__(self, failures: dict[tuple[str, str], list[StepFailure]] | None = None) -> None:
        self.failures = failures or {}

    def __call__(self, request: StepRequest) -> dict[str, Any]:
        queued = self.failures.get((request.run_id, request.step_id))
        if queued:
            raise queued.pop(0)
        return {"Success": True, "attempt": request.attempt}


def restarted(killed: tuple[Path, dict[str, str]], tmp_path: Path,
              scenario: Any, failures: dict[tuple[str, str], list[StepFailure]] | None = None) -> Any:
    """Restart an engine on a copy of the killed store and play ``scenario(kit, runs)``."""
    db, runs = killed
    for suffix in ("", "-wal"):  # the WAL holds the child's last commits
        if Path(f"{db}{suffix}").exists():
            shutil.copy(f"{db}{suffix}", tmp_path / f"crash.sqlite3{suffix}")

    async def main() -> Any:
        store = Store(tmp_path / "crash.sqlite3").open()
        kit = Kit(store, durations={"*": 30.0}, outputs=Outcomes(failures))
        await kit.engine.start()
        try:
            return await scenario(kit, runs)
        finally:
            await kit.engine.close()
            store.close()

    return asyncio.run(main())


def statuses(kit: Kit, run_id: str) -> dict[str, str]:
    return {k: v["status"] for k, v in kit.steps(run_id).items()}


def open_items(kit: Kit, run_id: str) -> list[tuple[str, str | None]]:
    return [(i.kind, i.step_id) for i in kit.store.read_sync(lambda c: inbox.read_items(c, run_id=run_id))]


def calls(kit: Kit, run_id: str) -> list[tuple[str, int]]:
    return [(c.step_id, c.attempt) for c in kit.executor.calls if c.run_id == run_id]


def test_the_run_stays_paused_after_the_rerun_step_ends_until_the_unknown_step_is_retried(killed, tmp_path):
    async def scenario(kit: Kit, runs: dict[str, str]):
        run_id = runs["Abort"]
        await kit.clock.run_until(lambda: statuses(kit, run_id)["move"] == "completed")
        await kit.clock.advance(3600)  # nothing else happens while the operator is away
        waiting = (kit.engine.run_status(run_id), statuses(kit, run_id), open_items(kit, run_id),
                   kit.engine.get_instance(run_id)["status"])
        await kit.engine.retry_step(run_id, "read", who="operator", reason="checked: the reader did not read")
        await kit.until_done(run_id)
        return waiting, kit.engine.run_status(run_id), statuses(kit, run_id), calls(kit, run_id), \
            open_items(kit, run_id)

    waiting, status, after, made, items = restarted(killed, tmp_path, scenario)
    assert waiting == (RunStatus.PAUSED, {"prep": "completed", "read": "unknown", "move": "completed"},
                       [("error", "read")], "paused")
    assert status is RunStatus.COMPLETED and items == []
    assert after == {"prep": "completed", "read": "completed", "move": "completed"}
    assert made == [("move", 2), ("read", 1)]


def test_the_unknown_step_marked_done_after_the_rerun_step_ended_completes_the_run(killed, tmp_path):
    async def scenario(kit: Kit, runs: dict[str, str]):
        run_id = runs["Abort"]
        await kit.clock.run_until(lambda: statuses(kit, run_id)["move"] == "completed")
        paused = kit.engine.run_status(run_id)
        await kit.engine.skip_step(run_id, "read", {"absorbance": 0.42}, who="operator",
                                   reason="the plate was read: result copied from the reader")
        await kit.until_done(run_id)
        return paused, kit.engine.run_status(run_id), kit.steps(run_id)["read"], calls(kit, run_id)

    paused, status, read, made = restarted(killed, tmp_path, scenario)
    assert paused is RunStatus.PAUSED
    assert status is RunStatus.COMPLETED
    assert read["status"] == "skipped" and read["outputs"] == {"absorbance": 0.42}
    assert made == [("move", 2)], "the step marked done is not run again"


def test_the_unknown_step_retried_before_the_rerun_step_ends_lets_the_run_go_on(killed, tmp_path):
    async def scenario(kit: Kit, runs: dict[str, str]):
        run_id = runs["Abort"]
        await kit.clock.advance(1)
        before = kit.engine.run_status(run_id), statuses(kit, run_id)["move"]
        await kit.engine.retry_step(run_id, "read", who="operator")
        going = kit.engine.run_status(run_id)
        await kit.until_done(run_id)
        return before, going, kit.engine.run_status(run_id), statuses(kit, run_id), calls(kit, run_id)

    before, going, status, after, made = restarted(killed, tmp_path, scenario)
    assert before == (RunStatus.PAUSED, "running")
    assert going is RunStatus.RUNNING
    assert status is RunStatus.COMPLETED
    assert after == {"prep": "completed", "read": "completed", "move": "completed"}
    assert sorted(made) == [("move", 2), ("read", 1)]


def test_a_retry_of_the_rerun_step_due_while_paused_runs_once_the_unknown_step_is_resolved(killed, tmp_path):
    def failures(runs: dict[str, str]) -> dict[tuple[str, str], list[StepFailure]]:
        return {(runs["Abort"], "move"): [StepFailure("gripper slipped", "Slip")]}

    async def scenario(kit: Kit, runs: dict[str, str]):
        run_id = runs["Abort"]
        await kit.clock.run_until(lambda: statuses(kit, run_id)["move"] == "retrying")
        await kit.clock.advance(3600)  # the retry falls due while the run is paused: it waits
        waiting = kit.engine.run_status(run_id), statuses(kit, run_id), calls(kit, run_id)
        await kit.engine.retry_step(run_id, "read", who="operator")
        await kit.until_done(run_id)
        return waiting, kit.engine.run_status(run_id), statuses(kit, run_id), calls(kit, run_id)

    _db, runs = killed
    waiting, status, after, made = restarted(killed, tmp_path, scenario, failures(runs))
    assert waiting == (RunStatus.PAUSED, {"prep": "completed", "read": "unknown", "move": "retrying"},
                       [("move", 2)])
    assert status is RunStatus.COMPLETED
    assert after == {"prep": "completed", "read": "completed", "move": "completed"}
    assert sorted(made) == [("move", 2), ("move", 3), ("read", 1)]


def test_the_rerun_step_failing_for_good_aborts_the_run_naming_it(killed, tmp_path):
    """Policy abort: a step failed for good ends the run whatever the operator decides about the
    unknown one, as it does without a restart; the run's error names the failed step."""
    def failures(runs: dict[str, str]) -> dict[tuple[str, str], list[StepFailure]]:
        return {(runs["Abort"], "move"): [StepFailure("plate dropped", "Dropped", retryable=False)]}

    async def scenario(kit: Kit, runs: dict[str, str]):
        run_id = runs["Abort"]
        await kit.clock.run_until(lambda: kit.engine.run_status(run_id) in RUN_FINAL)
        return kit.engine.get_instance(run_id), statuses(kit, run_id), open_items(kit, run_id)

    _db, runs = killed
    inst, after, items = restarted(killed, tmp_path, scenario, failures(runs))
    assert inst["status"] == "failed"
    assert inst["error"] == "step 'move' failed: plate dropped"
    assert after == {"prep": "completed", "read": "unknown", "move": "failed"}
    assert items == []


def test_the_rerun_step_failing_for_good_under_continue_waits_for_the_unknown_step(killed, tmp_path):
    """Policy continue: the other branch (the unknown step) is the operator's to decide; the run
    stays Paused until then and ends Failed because of the failed step."""
    def failures(runs: dict[str, str]) -> dict[tuple[str, str], list[StepFailure]]:
        return {(runs["GoOn"], "move"): [StepFailure("plate dropped", "Dropped", retryable=False)]}

    async def scenario(kit: Kit, runs: dict[str, str]):
        run_id = runs["GoOn"]
        await kit.clock.run_until(lambda: statuses(kit, run_id)["move"] == "failed")
        await kit.clock.advance(3600)
        waiting = kit.engine.run_status(run_id), statuses(kit, run_id), open_items(kit, run_id)
        await kit.engine.retry_step(run_id, "read", who="operator")
        await kit.until_done(run_id)
        return waiting, kit.engine.get_instance(run_id), statuses(kit, run_id)

    _db, runs = killed
    waiting, inst, after = restarted(killed, tmp_path, scenario, failures(runs))
    assert waiting == (RunStatus.PAUSED, {"prep": "completed", "read": "unknown", "move": "failed"},
                       [("error", "read")])
    assert inst["status"] == "failed" and inst["error"] == "step 'move' failed: plate dropped"
    assert after == {"prep": "completed", "read": "completed", "move": "failed"}


# ---------------------------------------------------------------------------- the same rule, no restart
# A run paused on a step that needs the operator (failed under policy pause, or outcome unknown)
# does not end when its other branch ends; only a decision does (the operator's, or policy abort).

def _kit_run(tmp_path: Path, data: dict[str, Any], outputs: Any, durations: dict[str, float],
             scenario: Any) -> Any:
    async def main() -> Any:
        store = Store(tmp_path / "engine.sqlite3").open()
        kit = Kit(store, durations=durations, outputs=outputs)
        await kit.engine.start()
        try:
            await kit.publish(data)
            return await scenario(kit, await kit.run(data["name"]))
        finally:
            await kit.engine.close()
            store.close()

    return asyncio.run(main())


def test_policy_pause_keeps_the_run_paused_on_a_failed_step_when_the_other_branch_ends(tmp_path):
    data = {"name": "PauseBoth", "definition": {"failure_policy": "pause", "steps": [
        {"id": "a", "kind": "X.A"}, {"id": "b", "kind": "X.B"}]}}
    failing = {"a": [StepFailure("clot detected", "Clot", retryable=False)]}

    def outputs(request: StepRequest) -> dict[str, Any]:
        if failing.get(request.step_id):
            raise failing[request.step_id].pop(0)
        return {"Success": True}

    async def scenario(kit: Kit, run_id: str):
        await kit.clock.run_until(lambda: statuses(kit, run_id)["b"] == "completed")
        await kit.clock.advance(3600)
        waiting = kit.engine.run_status(run_id), open_items(kit, run_id)
        await kit.engine.retry_step(run_id, "a", who="operator")
        await kit.until_done(run_id)
        return waiting, kit.engine.run_status(run_id), statuses(kit, run_id)

    waiting, status, after = _kit_run(tmp_path, data, outputs, {"X.A": 10.0, "X.B": 100.0}, scenario)
    assert waiting == (RunStatus.PAUSED, [("error", "a")])
    assert status is RunStatus.COMPLETED and after == {"a": "completed", "b": "completed"}


def _abort_with_handler(name: str) -> tuple[dict[str, Any], Callable[[StepRequest], dict[str, Any]]]:
    """A run of two parallel steps under policy abort, ``b`` with an error handler: ``a``'s
    outcome comes back unknown, ``b`` fails for good, every later attempt succeeds."""
    data = {"name": name, "definition": {"failure_policy": "abort", "error_handlers": {"b": "park"},
            "steps": [{"id": "a", "kind": "X.A"}, {"id": "b", "kind": "X.B"},
                      {"id": "park", "kind": "X.Park"}]}}
    failing = {"a": [StepFailure("link lost after the command", "OutcomeUnknown", retryable=False,
                                 outcome_unknown=True)],
               "b": [StepFailure("plate dropped", "Dropped", retryable=False)]}

    def outputs(request: StepRequest) -> dict[str, Any]:
        if failing.get(request.step_id):
            raise failing[request.step_id].pop(0)
        return {"Success": True}

    return data, outputs


def test_policy_abort_ends_a_run_paused_on_an_unknown_step_once_the_error_handler_has_run(tmp_path):
    """``a``'s outcome is unknown (run paused), then ``b`` fails for good: abort decides the run's
    end, which comes once ``b``'s error handler has run; the error names ``b``."""
    data, outputs = _abort_with_handler("AbortHandled")

    async def scenario(kit: Kit, run_id: str):
        await kit.clock.run_until(lambda: kit.engine.run_status(run_id) in RUN_FINAL, limit=3600)
        return kit.engine.get_instance(run_id), statuses(kit, run_id)

    inst, after = _kit_run(tmp_path, data, outputs, {"X.A": 10.0, "X.B": 50.0, "X.Park": 100.0}, scenario)
    assert after == {"a": "unknown", "b": "failed", "park": "completed"}
    assert inst["status"] == "failed" and inst["error"] == "step 'b' failed: plate dropped"


def test_an_aborted_run_whose_failed_step_is_retried_waits_for_the_unknown_step_again(tmp_path):
    """Abort decided the run's end, then the operator retried the failed step before the error
    handler ended: that decision is undone, so the run ends only once the unknown step is settled."""
    data, outputs = _abort_with_handler("AbortRetried")

    async def scenario(kit: Kit, run_id: str):
        await kit.clock.run_until(lambda: statuses(kit, run_id)["b"] == "failed")
        await kit.engine.retry_step(run_id, "b", who="operator")
        await kit.engine.cancel_step(run_id, "b", who="operator", reason="not needed after all")
        await kit.clock.run_until(lambda: statuses(kit, run_id)["park"] == "completed")
        waiting = kit.engine.run_status(run_id), statuses(kit, run_id)
        await kit.engine.skip_step(run_id, "a", who="operator", reason="checked: done")
        return waiting, kit.engine.run_status(run_id)

    waiting, status = _kit_run(tmp_path, data, outputs, {"X.A": 10.0, "X.B": 50.0, "X.Park": 100.0}, scenario)
    assert waiting == (RunStatus.PAUSED, {"a": "unknown", "b": "cancelled", "park": "completed"})
    assert status is RunStatus.CANCELLED
