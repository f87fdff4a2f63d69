"""A step waiting for its next attempt when the console stops is retried after the restart at the
time it was due (not at once, not never); queued and waiting steps come back as they were. Real
store file, virtual clock, the engine closed and built again over the same file."""

from __future__ import annotations

import asyncio

import pytest
from enginekit import Kit, template

from core.engine import RunStatus
from core.events import RunChanged
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


def test_a_runs_deadline_still_holds_after_a_restart(data_dir):
    """A run with a 2 h timeout, restarted 1 h in during a 3 h wait: it times out at its
    original deadline (2 h after it started), not 2 h after the restart, nor never."""
    slow = template("Slow", [{"id": "wait", "kind": "delay", "parameters": {"seconds": "3h"}},
                             {"id": "after", "kind": "noop", "depends_on": ["wait"]}],
                    default_timeout_seconds="2h")

    async def scenario():
        store = Store(data_dir / "engine.sqlite3").open()
        kit = Kit(store)
        await kit.engine.start()
        await kit.publish(slow)
        started = kit.clock.now()
        run_id = await kit.run("Slow")
        await kit.clock.advance(3600)
        await kit.engine.close()
        kit = Kit(store)  # the console restarts
        await kit.engine.start()
        await kit.until_done(run_id)
        ended = kit.clock.now()
        inst = kit.engine.get_instance(run_id)
        await kit.engine.close()
        store.close()
        return started, ended, inst

    started, ended, inst = asyncio.run(scenario())
    assert inst["status"] == "failed" and "timed out after 7200 s" in inst["error"]
    assert ended - started == pytest.approx(7200, abs=5)


def test_a_restart_reruns_an_interrupted_idempotent_step_and_asks_about_the_other(data_dir):
    """Two steps were executing when the console stopped: the idempotent one runs again, the
    other becomes "outcome unknown" and the run is paused for the operator."""
    both = template("Both", [{"id": "wash", "kind": "Washer.Wash", "idempotent": True},
                             {"id": "seal", "kind": "Sealer.Seal"}])

    async def scenario():
        store = Store(data_dir / "engine.sqlite3").open()
        kit = Kit(store, durations={"*": 100.0})
        await kit.engine.start()
        await kit.publish(both)
        run_id = await kit.run("Both")
        await kit.clock.advance(10)
        before = {k: v["status"] for k, v in kit.steps(run_id).items()}
        await kit.engine.close()
        kit = Kit(store, durations={"*": 100.0})  # the console restarts
        shown: list[RunChanged] = []
        kit.ledger.bus.subscribe(shown.append, RunChanged)
        await kit.engine.start()
        await kit.clock.advance(1)
        status = kit.engine.run_status(run_id)
        said = ([(e.status, e.detail) for e in shown if e.run_id == run_id], store.get_order(run_id).statusDetails,
                store.transitions(run_id)[-1].why)
        await kit.clock.advance(150)
        after = {k: v["status"] for k, v in kit.steps(run_id).items()}
        calls = [c.kind for c in kit.executor.calls]
        wash = [(t.to_status.name, t.why) for t in store.transitions(kit.steps(run_id)["wash"]["order_id"])]
        await kit.engine.close()
        store.close()
        return before, after, status, calls, said, wash

    before, after, status, calls, said, wash = asyncio.run(scenario())
    why = "waiting for the operator after a restart: a step's outcome is unknown"
    assert said == ([(RunStatus.PAUSED, why)], why, why), "the run says why it waits, as shown and as stored"
    assert before == {"wash": "running", "seal": "running"}
    assert after == {"wash": "completed", "seal": "unknown"}
    assert status is RunStatus.PAUSED and calls == ["Washer.Wash"]
    # the idempotent step's record says why it went back to the start, and then ran again
    assert wash == [("Created", None), ("Scheduled", None), ("Running", None),
                    ("Created", "Re-run after restart (idempotent step)"), ("Scheduled", "attempt 2"),
                    ("Running", None), ("Complete", None)]
