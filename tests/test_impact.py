"""Impact preview: what cancel, retry, pause, recover, skip and out-of-service would touch."""

from __future__ import annotations

import tracemalloc

from enginekit import Kit, run_kit, template

from core.impact import _compute, preview
from core.store import DB_FILENAME, Store

LONG = template("Long", [
    {"id": "read", "kind": "PlateReader.ReadPlate", "estimated_duration": 600},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"], "estimated_duration": 60},
    {"id": "store", "kind": "Incubator.Store", "depends_on": ["seal"], "estimated_duration": 30},
])
QUICK = template("Quick", [{"id": "only", "kind": "noop"}])


def test_bulk_cancel_preview_counts_runs_steps_and_freed_instruments_and_changes_nothing(data_dir):
    async def scenario(kit: Kit):
        await kit.publish(LONG)
        await kit.publish(QUICK)
        runs = [await kit.run("Long") for _ in range(3)]
        done = await kit.run("Quick")
        await kit.until_done(done)
        await kit.clock.settle()
        commits = kit.store.commit_count
        impact = await preview(kit.store, "cancel", [*runs, done, "Order_99999"])
        assert kit.store.commit_count == commits
        pause = await preview(kit.store, "pause", runs)
        return runs, done, impact, pause, kit

    runs, done, impact, pause, kit = run_kit(data_dir, scenario, hang_kinds={"PlateReader.ReadPlate"})
    assert impact.runs == 3 and impact.first_runs == sorted(runs)
    assert impact.steps == {"stopped": 3, "canceled": 6}
    assert impact.instruments_freed == {"simulator": 3}
    assert impact.refused_count == 2 and (done, "run is completed") in impact.refused
    assert ("Order_99999", "not a labconsole run or step") in impact.refused
    assert impact.work_seconds == -3 * 690
    assert "3 runs; 6 steps canceled; 3 steps stopped; frees simulator" in impact.summary()
    assert pause.steps == {"held": 6} and pause.runs == 3
    assert all(kit.engine.get_instance(r)["status"] == "running" for r in runs)


def test_retry_recover_and_skip_previews_name_the_steps_that_run_again(data_dir):
    async def scenario(kit: Kit):
        await kit.publish(template("Fails", [
            {"id": "read", "kind": "PlateReader.ReadPlate", "retry_policy": {"max_attempts": 1},
             "estimated_duration": 100},
            {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"], "estimated_duration": 10},
        ], failure_policy="abort"))
        run_id = await kit.run("Fails")
        await kit.until_done(run_id)
        read_order = kit.steps(run_id)["read"]["order_id"]
        return (await preview(kit.store, "retry", [run_id]), await preview(kit.store, "recover", [run_id],
                                                                             from_step="read"),
                await preview(kit.store, "skip", [read_order]), await preview(kit.store, "skip", [run_id]))

    retry, recover, skip, skip_run = run_kit(data_dir, scenario, fail_kinds={"PlateReader.ReadPlate": 1})
    assert retry.steps == {"retried": 2} and retry.work_seconds == 110  # the engine retries canceled steps too
    assert sorted(s[1:] for s in retry.first_steps) == [("read", "failed", "retried"), ("seal", "cancelled", "retried")]
    assert recover.steps == {"rerun": 2}
    assert skip.steps == {"skipped": 1}
    assert skip_run.refused_count == 1 and "applies to a step" in skip_run.refused[0][1]


def test_out_of_service_preview_names_what_only_that_instrument_can_do(data_dir):
    async def scenario(kit: Kit):
        await kit.publish(LONG)
        await kit.run("Long")
        await kit.clock.settle()
        caps = {"simulator": {"PlateReader.ReadPlate"}, "Sealer1": {"Sealer.Seal"}, "Sealer2": {"Sealer.Seal"}}
        return (await preview(kit.store, "out_of_service", instrument="simulator", capabilities=caps),
                await preview(kit.store, "out_of_service", instrument="Sealer1", capabilities=caps))

    reader, sealer = run_kit(data_dir, scenario, hang_kinds={"PlateReader.ReadPlate"})
    assert reader.steps == {"finishes first": 1} and reader.instruments_blocked == ["simulator"]
    assert sealer.waiting_longer == 1 and not sealer.steps  # Sealer2 can seal too


def test_a_bulk_preview_holds_one_chunk_of_runs_at_a_time(tmp_path):
    """A preview over 10,000 runs reads and drops them a chunk at a time: what it holds grows
    by about a hundred bytes a run, not by the rows read for it (held all at once, over a
    kilobyte a run: tens of thousands of objects outlive the young collections and push the
    collector into a full pass that stalls the event loop)."""
    store = Store(tmp_path / DB_FILENAME).open()

    def fill(start: int, end: int):
        def op(conn):
            conn.executemany(
                "INSERT INTO runs (run_id, template_name, template_version, status, input_data, context, created) "
                "VALUES (?, 'Long', 1, 'running', '{}', '{}', 0)", [(f"R{i}",) for i in range(start, end)])
            conn.executemany(
                "INSERT INTO step_runs (run_id, step_id, order_id, status, instrument) VALUES (?, ?, ?, ?, ?)",
                [(f"R{i}", sid, f"S{i}-{sid}", status, "Reader" if status == "running" else None)
                 for i in range(start, end) for sid, status in (("read", "running"), ("seal", "pending"))])
        store.write_sync(op)

    peaks = {}
    try:
        for start, end in ((0, 2000), (2000, 10_000)):
            fill(start, end)
            ids = [f"R{i}" for i in range(end)]
            tracemalloc.start()
            impact = store.read_sync(lambda c, ids=ids: _compute(c, "cancel", ids, None))
            peaks[end] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert impact.runs == end and impact.steps == {"stopped": end, "canceled": end}
    finally:
        store.close()
    # per run beyond a chunk: the runs it has counted (two sets of ids), not the rows it read
    assert (peaks[10_000] - peaks[2000]) / 8000 < 400, peaks
