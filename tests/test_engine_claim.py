"""A step whose instrument is free is claimed when it becomes ready: its Queued and Running
transitions commit with the decision that made it ready (one commit per step in a chain), and a
claim never lets a step overtake one that waits for the same instrument."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.engine import RunStatus
from core.orders import OrderStatus
from tests.dispatchkit import DKit, run_dkit

MOVE = "RobotArm.MovePlate"
READ = "PlateReader.ReadPlate"
SEAL = "Sealer.Seal"


def spy_writes(kit: DKit) -> list[list[tuple[str, int]]]:
    """Record, for each store.write, the (order, status) transitions it committed."""
    writes: list[list[tuple[str, int]]] = []
    write = kit.store.write

    async def spying(fn: Callable[[sqlite3.Connection], Any]) -> Any:
        made: list[tuple[str, int]] = []

        def wrapped(conn: sqlite3.Connection) -> Any:
            before = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM transitions").fetchone()[0]
            result = fn(conn)
            made.extend(conn.execute("SELECT order_id, to_status FROM transitions WHERE seq > ? ORDER BY seq",
                                     (before,)).fetchall())
            return result

        value = await write(wrapped)
        writes.append(made)
        return value

    kit.store.write = spying  # type: ignore[method-assign]
    return writes


def test_a_chain_commits_queued_and_running_together(data_dir: Path) -> None:
    async def scenario(kit: DKit) -> tuple[RunStatus, list[list[tuple[str, int]]], list[str]]:
        await kit.publish("Chain", [
            {"id": "a", "kind": MOVE},
            {"id": "b", "kind": SEAL, "depends_on": ["a"]},
            {"id": "c", "kind": MOVE, "depends_on": ["b"]},
        ])
        writes = spy_writes(kit)
        run_id = await kit.run("Chain")
        await kit.until_done(run_id)
        return kit.status(run_id), writes, [s["order_id"] for s in kit.steps(run_id).values()]

    status, writes, step_orders = run_dkit(data_dir, scenario)
    assert status is RunStatus.COMPLETED
    for order_id in step_orders:
        holding = [w for w in writes if (order_id, int(OrderStatus.Running)) in w]
        assert len(holding) == 1, (order_id, holding)
        assert (order_id, int(OrderStatus.Scheduled)) in holding[0], \
            f"{order_id}: Running committed apart from Scheduled: {holding[0]}"
    # steps b and c start in the commit that completes the step before them
    for before, after in zip(step_orders, step_orders[1:], strict=False):
        joint = [w for w in writes if (before, int(OrderStatus.Complete)) in w]
        assert joint and (after, int(OrderStatus.Running)) in joint[0]


def test_a_claim_never_overtakes_a_job_that_waits_for_the_instrument(data_dir: Path) -> None:
    """A queued read that also needs the arm earmarks the free reader; a plain read that becomes
    ready meanwhile must wait behind it, as the dispatch pass would decide."""
    workcell = """
name: one reader
seed: 1
instruments:
  - {id: Reader, kind: PlateReader, driver: simulated, capabilities: {PlateReader.ReadPlate: {duration: 60s, jitter: 0s}}}
  - {id: Arm, kind: RobotArm, driver: simulated, capabilities: {RobotArm.MovePlate: {duration: 100s, jitter: 0s}}}
"""

    async def scenario(kit: DKit) -> list[str]:
        await kit.publish("Hold", [{"id": "move", "kind": MOVE}])
        await kit.publish("ReadWithArm", [{"id": "read", "kind": READ, "reserve": [MOVE]}])
        await kit.publish("Read", [{"id": "read", "kind": READ}])
        hold = await kit.run("Hold")
        await kit.until(lambda: kit.steps(hold)["move"]["status"] == "running")
        first = await kit.run("ReadWithArm", priority=90)
        await kit.until(lambda: kit.steps(first)["read"]["status"] == "queued")
        second = await kit.run("Read", priority=10)
        await kit.until(lambda: kit.steps(second)["read"]["status"] in ("queued", "running"))
        waiting = kit.steps(second)["read"]["status"]
        await kit.until_done(hold, first, second)
        started = sorted((kit.steps(r)["read"]["started_at"], name) for r, name in
                         ((first, "with arm"), (second, "plain")))
        return [waiting, *(name for _, name in started)]

    waiting, *order = run_dkit(data_dir, scenario, workcell=workcell)
    assert waiting == "queued"
    assert order == ["with arm", "plain"]


def test_claim_unclaim_and_cancel_free_the_instrument(data_dir: Path) -> None:
    async def scenario(kit: DKit) -> list[Any]:
        await kit.publish("One", [{"id": "s", "kind": SEAL}])
        seen: list[Any] = []
        engine, dispatcher = kit.engine, kit.dispatcher
        run_id = await engine.create_instance("One", {}, allow_duplicate=True)
        run = await engine._reopen(run_id)
        state = run.steps["s"]
        request = engine._request(run, state, {})
        seen.append(dispatcher.claim(request))
        seen.append(dict(dispatcher.instruments["Sealer"].running))
        seen.append(dispatcher.claim(engine._request(run, state, {})))  # taken: no second claim
        dispatcher.unclaim(request)
        seen.append(dict(dispatcher.instruments["Sealer"].running))
        request = engine._request(run, state, {})
        seen.append(dispatcher.claim(request))
        seen.append(await dispatcher.cancel(request))
        seen.append(dict(dispatcher.instruments["Sealer"].running))
        seen.append(dispatcher.claim(engine._request(run, state, {})))
        return seen

    claimed, running, again, freed, reclaimed, canceled, after_cancel, third = run_dkit(data_dir, scenario)
    assert claimed == "Sealer" and len(running) == 1
    assert again is None
    assert freed == {}
    assert reclaimed == "Sealer" and canceled is True and after_cancel == {}
    assert third == "Sealer"


def test_a_step_stopped_for_its_timeout_fails_as_timed_out(data_dir: Path) -> None:
    """The instrument answers the stop with "cancelled" before the attempt's task is cancelled:
    the step still fails with code Timeout (not OrderCancelled), once, and its run goes on."""

    async def scenario(kit: DKit) -> tuple[dict[str, Any], RunStatus]:
        await kit.publish("Hasty", [
            {"id": "read", "kind": READ, "timeout_seconds": 10, "retry_policy": {"max_attempts": 1}}])
        run_id = await kit.run("Hasty")
        await kit.until_done(run_id)
        return kit.steps(run_id)["read"], kit.status(run_id)

    step, status = run_dkit(data_dir, scenario)
    assert step["status"] == "failed" and step["error_code"] == "Timeout", step
    assert step["error"] == "timed out after 10 s" and step["attempt"] == 1
    assert status is RunStatus.FAILED
