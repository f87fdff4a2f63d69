"""Finished runs leave the engine's memory; everything about them is still read from the store,
and an operator can still act on them."""

from __future__ import annotations

import pytest
from enginekit import run_kit, template

from core.engine import RunStatus
from core.errors import IllegalTransitionError


def test_finished_runs_are_released_and_still_answer_from_the_store(data_dir):
    async def scenario(kit):
        await kit.publish(template("Two", [
            {"id": "a", "kind": "Reader.Read"}, {"id": "b", "kind": "noop", "depends_on": ["a"]}]))
        done = await kit.run("Two")
        failed = await kit.run("Two")
        cancelled = await kit.run("Two")
        await kit.clock.advance(1)
        assert cancelled in kit.engine._runs, "in flight: in memory"
        await kit.engine.cancel(cancelled, who="ann", reason="wrong plate")
        await kit.until_done(done)
        await kit.until_done(failed)
        await kit.clock.advance(1)
        released = {r: r not in kit.engine._runs for r in (done, failed, cancelled)}
        statuses = {r: kit.engine.run_status(r) for r in (done, failed, cancelled)}
        with pytest.raises(IllegalTransitionError):
            await kit.engine.cancel(cancelled, who="ann")
        refused_stays_out = cancelled not in kit.engine._runs
        # an operator retries the failed step of a released run: it is loaded again and runs
        retried = next(r for r in (done, failed) if statuses[r] is RunStatus.FAILED)
        await kit.engine.retry_step(retried, "a", who="ann", reason="plate reseated")
        assert kit.engine.run_status(retried) is RunStatus.RUNNING and retried in kit.engine._runs
        await kit.until_done(retried)
        await kit.clock.advance(1)
        return done, failed, cancelled, released, statuses, refused_stays_out, kit

    done, failed, cancelled, released, statuses, refused_stays_out, kit = run_kit(
        data_dir, scenario, durations={"*": 30}, fail_kinds={"Reader.Read": 1})
    assert released == {done: True, failed: True, cancelled: True}
    assert statuses[cancelled] is RunStatus.CANCELLED
    assert {statuses[done], statuses[failed]} == {RunStatus.COMPLETED, RunStatus.FAILED}
    assert refused_stays_out
    first_ok = done if statuses[done] is RunStatus.COMPLETED else failed
    retried = failed if first_ok == done else done
    assert statuses[retried] is RunStatus.FAILED
    assert kit.engine.get_instance(retried)["status"] == "completed"
    assert kit.engine.run_status(retried) is RunStatus.COMPLETED
    assert retried not in kit.engine._runs, "released again when it finished again"
    steps = kit.engine.get_instance(cancelled)["steps"]
    assert [s["status"] for s in steps] == ["cancelled", "cancelled"]
    assert kit.engine.get_instance(first_ok)["steps"][1]["status"] == "completed"
