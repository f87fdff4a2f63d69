"""A step waiting for its next attempt when the console stops is retried after the restart at the
time it was due (not at once, not never); queued and waiting steps come back as they were. Real
store file, virtual clock, the engine closed and built again over the same file."""

from __future__ import annotations

import asyncio

import pytest
from enginekit import Kit, template

from core.engine import RunStatus
from core.store import Store

FLAKY = template("Flaky", [
    {"id": "read", "kind": "PlateReader.ReadPlate",
     "retry_policy": {"max_attempts": 3, "initial_interval": "30m", "backoff_multiplier": 2, "jitter": 0}},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]}])


def test_a_step_waiting_to_retry_is_retried_when_due_after_a_restart(data_dir):
    async def scenario():
        store = Store(data_dir / "engine.sqlite3").open()
        kit = Kit(store, fail_kinds={"PlateReader.ReadPlate": 1}, durations={"*": 10.0})
        await kit.engine.start()
        await kit.publish(FLAKY)
        run_id = await kit.run("Flaky")
        await kit.clock.advance(60)
        before = kit.steps(run_id)["read"]
        before["next_attempt_at"] = store.read_sync(lambda c: c.execute(
            "SELECT next_attempt_at FROM step_runs WHERE run_id = ? AND step_id = 'read'", (run_id,)).fetchone()[0])
        await kit.engine.close()

        kit = Kit(store, durations={"*": 10.0})  # the console restarts; the reader works now
        await kit.engine.start()
        restarted = kit.clock.now()
        await kit.clock.advance(before["next_attempt_at"] - restarted - 30)
        early = (kit.steps(run_id)["read"]["status"], len(kit.executor.calls))
        await kit.until_done(run_id)
        after = kit.steps(run_id)
        status = kit.engine.run_status(run_id)
        calls = [c.kind for c in kit.executor.calls]
        await kit.engine.close()
        store.close()
        return before, early, after, status, calls

    before, early, after, status, calls = asyncio.run(scenario())
    assert before["status"] == "retrying" and before["attempt"] == 1
    assert before["next_attempt_at"] is not None
    assert early == ("retrying", 0), "not retried before it was due"
    assert status is RunStatus.COMPLETED
    assert calls == ["PlateReader.ReadPlate", "Sealer.Seal"], "retried once, then the next step"
    read = after["read"]
    assert read["status"] == "completed" and read["attempt"] == 2
    assert read["started_at"] == pytest.approx(before["next_attempt_at"], abs=1.0)
