"""Time windows and work in progress in the order of service, on the virtual clock: a step whose
window closes soonest goes first (within a priority), a minimum delay holds the step back, a
broken window is recorded with by how much, and steps of runs under way go before new runs."""

from __future__ import annotations

import pytest
from dispatchkit import run_dkit

from core.dispatcher import Job, JobQueue
from core.orders import Order

SEAL = {"id": "seal", "kind": "Sealer.Seal"}          # 20 s on the one sealer
MOVE = {"id": "move", "kind": "RobotArm.MovePlate"}   # 10 s on the one arm


def test_order_of_service_windows_then_work_in_progress_within_priority():
    q = JobQueue()
    jobs = [Job("new", Order(), "C"),
            Job("under_way_late", Order(), "C", under_way=50.0),
            Job("under_way_early", Order(), "C", under_way=10.0),
            Job("window_late", Order(), "C", closes=500.0),
            Job("window_soon", Order(), "C", closes=100.0, under_way=90.0),
            Job("urgent_new", Order(), "C", priority=90)]
    for job in jobs:
        q.enqueue(job, now=0.0)
    order = []
    while (head := q.head(("any", "C"))) is not None:
        order.append(head.order_id)
        q.take(head)
    assert order == ["urgent_new", "window_soon", "window_late", "under_way_early", "under_way_late", "new"]


def test_the_step_whose_window_closes_soonest_goes_first(data_dir):
    async def scenario(kit):
        await kit.publish("Plain", [SEAL])
        await kit.publish("Window", [MOVE, {**SEAL, "depends_on": ["move"],
                                            "start_within": {"after": "move", "max": "45s"}}])
        plain = [await kit.run("Plain") for _ in range(4)]   # the sealer is busy 80 s with these
        window = await kit.run("Window")                     # its seal is ready at 10 s
        await kit.until_done(*plain, window)
        return ({r: kit.steps(r)["seal"]["started_at"] for r in plain}, kit.steps(window),
                kit.engine.get_instance(window))

    plain_starts, window_steps, view = run_dkit(data_dir, scenario)
    first = min(plain_starts.values())
    # the window's seal took the sealer as soon as the first plain seal ended (20 s in), ahead of
    # the three plain seals queued before it
    assert window_steps["seal"]["started_at"] == pytest.approx(first + 20, abs=0.01)
    assert sorted(plain_starts.values())[1] == pytest.approx(first + 40, abs=0.01)
    assert view["late"] == []


def test_a_broken_window_is_recorded_on_the_run_with_by_how_much(data_dir):
    async def scenario(kit):
        await kit.publish("Plain", [SEAL])
        await kit.publish("Tight", [MOVE, {**SEAL, "depends_on": ["move"],
                                           "start_within": {"after": "move", "max": "4s"}}],
                          deadline="25s")
        plain = await kit.run("Plain")    # holds the sealer 0..20 s
        tight = await kit.run("Tight")    # move 0..10 s: its seal should start by 14 s, gets 20 s
        await kit.until_done(plain, tight)
        view = kit.engine.get_instance(tight)
        seal = kit.steps(tight)["seal"]
        whys = [t.why for t in kit.store.transitions(seal["order_id"])]
        return view, whys

    view, whys = run_dkit(data_dir, scenario)
    step_late, deadline_late = view["late"]
    assert step_late["step"] == "seal" and step_late["after"] == "move" and step_late["limit"] == 4
    assert step_late["late_by"] == pytest.approx(6, abs=0.01)
    assert step_late["text"] == "step seal started 6s after its window closed (at most 4s after move ended)"
    assert step_late["text"] in whys    # on the step's Running transition: Detail's history and log
    # the run took 40 s (move 10 s, wait 10 s, seal 20 s) against a 25 s deadline
    assert deadline_late["step"] is None and deadline_late["late_by"] == pytest.approx(15, abs=0.01)


def test_a_broken_window_is_recorded_without_a_deadline_and_none_without_a_window(data_dir):
    """No deadline: the broken window of a run is still recorded; a late run of a template with
    neither windows nor a deadline records nothing."""
    async def scenario(kit):
        await kit.publish("Plain", [SEAL])
        await kit.publish("Loose", [MOVE, {**SEAL, "depends_on": ["move"]}])
        await kit.publish("Tight", [MOVE, {**SEAL, "depends_on": ["move"],
                                           "start_within": {"after": "move", "max": "4s"}}])
        plain = await kit.run("Plain")    # holds the sealer 0..20 s
        loose = await kit.run("Loose")    # its seal waits for the sealer too, with no window
        tight = await kit.run("Tight")
        await kit.until_done(plain, loose, tight)
        return kit.engine.get_instance(loose), kit.engine.get_instance(tight)

    loose, tight = run_dkit(data_dir, scenario)
    assert loose["late"] == [] and loose["status"] == "completed"
    (step_late,) = tight["late"]
    assert (step_late["step"], step_late["after"], step_late["limit"]) == ("seal", "move", 4)
    assert step_late["late_by"] > 0


def test_a_minimum_delay_holds_the_step_back(data_dir):
    async def scenario(kit):
        await kit.publish("Rest", [MOVE, {**SEAL, "depends_on": ["move"], "min_delay": "30s"}])
        run = await kit.run("Rest")
        await kit.until_done(run)
        return kit.steps(run)

    steps = run_dkit(data_dir, scenario)
    assert steps["seal"]["started_at"] - steps["move"]["completed_at"] == pytest.approx(30, abs=0.01)


@pytest.mark.parametrize("prefer_started", [True, False])
def test_work_in_progress_goes_before_new_runs(data_dir, prefer_started):
    async def scenario(kit):
        if not prefer_started:  # on unless turned off
            kit.dispatcher.prefer_started = False
        await kit.publish("Two", [MOVE, {"id": "back", "kind": "RobotArm.MovePlate", "depends_on": ["move"]}])
        runs = [await kit.run("Two") for _ in range(5)]
        await kit.until_done(*runs)
        return [kit.steps(r) for r in runs]

    steps = run_dkit(data_dir, scenario)
    spans = [s["back"]["completed_at"] - s["move"]["started_at"] for s in steps]
    if prefer_started:
        # each plate is moved out and back before the next is touched: the arm is kept for the
        # run's next step while that step is being recorded
        assert spans == pytest.approx([20.0] * 5, abs=0.01)
    else:
        # first steps of every run first: the first plate waits for all the others
        assert spans[0] == pytest.approx(60.0, abs=0.01)


def test_an_instrument_kept_for_a_next_step_that_never_comes_is_let_go(data_dir):
    async def scenario(kit):
        await kit.publish("Maybe", [MOVE, {"id": "back", "kind": "RobotArm.MovePlate", "depends_on": ["move"],
                                           "condition": "False"}])
        runs = [await kit.run("Maybe") for _ in range(3)]
        await kit.until_done(*runs)
        return [kit.steps(r)["move"] for r in runs]

    moves = run_dkit(data_dir, scenario)
    # "back" is skipped: each next plate waits the hold (1 s) at most, not forever
    gaps = [b["started_at"] - a["completed_at"] for a, b in zip(moves, moves[1:], strict=False)]
    assert all(0 <= g <= 1.01 for g in gaps), gaps
