"""Moved finish times in the impact preview: the state played forward as it is and as the action
leaves it, with the same draws for the steps both contain, names the runs whose ETA moves."""

from __future__ import annotations

import asyncio

import pytest

from core import impact
from core.clock import VirtualClock
from core.durations_model import DurationsModel
from core.forecast import Forecast, InstrumentState, forecast, snapshot_from
from core.impact import Change, eta_moves, what_if
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict
from core.workcell import parse_workcell

CELL = """
name: eta cell
seed: 5
instruments:
  - {id: Sealer, kind: Sealer, driver: simulated, options: {connect_time: 0s},
     capabilities: {Sealer.Seal: {duration: 20s, jitter: 0s}}}
  - {id: Reader, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 60s, jitter: 0s}}}
"""
JITTERY = CELL.replace("jitter: 0s", "jitter: 15s")
SEAL_READ = template_from_dict({"name": "Seal and read", "version": 1, "definition": {"steps": [
    {"id": "seal", "kind": "Sealer.Seal"},
    {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["seal"]},
    {"id": "wait", "kind": "delay", "parameters": {"seconds": 30}, "depends_on": ["read"]}]}})
TEMPLATES = {("Seal and read", 1): SEAL_READ}
NOW = 1_800_000_000.0
INSTRUMENTS = (InstrumentState("Sealer", ("Sealer.Seal",)), InstrumentState("Reader", ("PlateReader.ReadPlate",)))


def _row(run_id, created, status="running", steps=()):
    run = (run_id, "Seal and read", 1, status, 50, created, "{}", None)
    return run, [(run_id, sid, st, None, None, None, None) for sid, st in steps]


QUEUE = [_row("r1", NOW - 30), _row("r2", NOW - 20), _row("r3", NOW - 10)]


def _moves(change, rows=QUEUE, cell=CELL, instruments=INSTRUMENTS, samples=4):
    return what_if(rows, instruments, TEMPLATES, NOW, (), DurationsModel(parse_workcell(cell)), change,
                   samples=samples, seed=3)


def test_cancel_and_pause_move_the_runs_behind_earlier_by_what_they_held():
    # r1 seals 0-20, reads 20-80, waits to 110; r2 ends at 170, r3 at 230
    cancel = _moves(Change("cancel", runs=("r1",)))
    got = {m.run_id: m for m in cancel.moves}
    assert list(got) == ["r1", "r2", "r3"] and cancel.count == 3 and cancel.forecast_runs == 3
    assert got["r1"].target and got["r1"].before == NOW + 110 and got["r1"].after is None
    assert got["r1"].after_note == "canceled"
    assert (got["r2"].before, got["r2"].after, got["r2"].delta) == (NOW + 170, NOW + 110, -60)
    assert got["r3"].delta == -60 and not got["r3"].target
    pause = {m.run_id: m for m in _moves(Change("pause", runs=("r1",))).moves}
    assert pause["r1"].after is None and pause["r1"].after_note == "paused: waits for an operator to resume it"
    assert pause["r2"].delta == -60 and pause["r3"].delta == -60


def test_retrying_a_failed_run_gives_it_an_eta_and_pushes_the_queue_back():
    failed = _row("f", NOW - 40, status="failed", steps=[("seal", "failed")])
    moves = _moves(Change("retry", runs=("f",)), rows=[*QUEUE, failed])
    got = {m.run_id: m for m in moves.moves}
    assert got["f"].before is None and got["f"].before_note == "not in flight" and got["f"].after == NOW + 110
    assert [got[r].delta for r in ("r1", "r2", "r3")] == [60, 60, 60]
    assert moves.moves[0].run_id == "f", "the run acted on comes first"
    # the failed step of a run that is still in flight: retrying only that step
    stuck = _row("s", NOW - 40, steps=[("seal", "failed")])
    step = {m.run_id: m for m in _moves(Change("retry", steps=(("s", "seal"),)), rows=[*QUEUE, stuck]).moves}
    assert step["s"].before_note.startswith("step seal failed") and step["s"].after == NOW + 110


def test_out_of_service_and_skip():
    off = _moves(Change("out_of_service", instrument="Sealer"))
    assert off.count == 3 and all(m.after is None and "no instrument in service offers Sealer.Seal" in m.after_note
                                  for m in off.moves)
    skip = {m.run_id: m for m in _moves(Change("skip", steps=(("r1", "read"),))).moves}
    # r1's wait starts at once (ends 30, not 110); r2 reads at 40-100 instead of 80-140
    assert skip["r1"].delta == -80 and skip["r2"].delta == -40 and skip["r3"].delta == -40


def test_paired_draws_leave_runs_the_action_does_not_touch_where_they_were():
    """With jittered durations, canceling the run that goes last moves no one: each step keeps
    its draws whatever the others draw. Unpaired, the shared generator's sequence shifts and the
    whole queue seems to move a little."""
    rows = [_row(f"r{i}", NOW - 100 + i) for i in range(6)]
    rows.append((("last", "Seal and read", 1, "running", 10, NOW, "{}", None), []))  # lowest priority: last
    model = DurationsModel(parse_workcell(JITTERY))

    def deltas(paired):
        def play(state):
            return forecast(snapshot_from(state, INSTRUMENTS, lambda n, v: TEMPLATES[(n, v)], NOW), model,
                            samples=16, seed=11, paired=paired)
        before, after = play(rows), play(rows[:-1])
        return [after.runs[r].p50 - before.runs[r].p50 for r in after.runs]

    assert deltas(True) == [0.0] * 6
    assert any(deltas(False))
    moves = what_if(rows, INSTRUMENTS, TEMPLATES, NOW, (), model, Change("cancel", runs=("last",)),
                    samples=16, seed=11)
    assert [m.run_id for m in moves.moves] == ["last"] and moves.count == 1


def test_eta_moves_over_a_real_runtime_reads_off_the_loop_and_needs_a_forecast(data_dir, monkeypatch):
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(CELL), seed=2, metrics=False)
        starting = asyncio.ensure_future(rt.start(templates_dir=None))
        await clock.run_until(starting.done, step=1.0)
        await rt.engine.publish(SEAL_READ.model_copy(update={"version": 0}))
        fc = Forecast(rt, samples=4, debounce=3600)
        runs = [await rt.start_run("Seal and read", allow_duplicate=True) for _ in range(3)]
        await clock.advance(5)
        none_yet = await eta_moves(fc, "cancel", [runs[0]])
        await fc.refresh()
        commits = store.commit_count
        moved = await eta_moves(fc, "cancel", [runs[0]])
        unknown = await eta_moves(fc, "cancel", ["Order_404"])
        assert store.commit_count == commits
        monkeypatch.setattr(impact, "ETA_RUNS", 2)  # more unfinished runs than are played forward
        skipped = await eta_moves(fc, "cancel", runs)
        assert skipped.skipped == "finish times are not worked out over 3 unfinished runs" and not skipped.moves
        await fc.close()
        await rt.close()
        return runs, none_yet, moved, unknown

    runs, none_yet, moved, unknown = asyncio.run(scenario())
    assert none_yet is None
    got = {m.run_id: m for m in moved.moves}
    assert got[runs[0]].target and got[runs[0]].after is None
    # the first run has sealed for 5 s of 20 and would read for 60: the others read 55 s sooner
    assert got[runs[1]].delta == pytest.approx(-55, abs=1) and got[runs[2]].delta == pytest.approx(-55, abs=1)
    assert unknown is not None and unknown.count == 0
