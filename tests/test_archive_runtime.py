"""The console's runtime archives old finished orders on the schedule of config.ini, on a real store."""

from __future__ import annotations

import asyncio

from test_archive import aged, families, ids_in  # noqa: F401 - the fixture is used by name

from core.archive import ARCHIVE_FILENAME
from core.runtime import Runtime


def run_console(store, *, wait_for_result: bool) -> Runtime:
    """Start the runtime as the console does (executing), wait for a scheduled archive, close it."""

    async def scenario() -> Runtime:
        runtime = Runtime.build(store.path.parent, store=store, workcell=None, metrics=False)
        runtime.archive_options = {"first_delay": 0}
        await runtime.start(templates_dir=None)
        try:
            if wait_for_result:
                for _ in range(1000):
                    if runtime.archive.results:
                        break
                    await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(0.05)
            return runtime
        finally:
            await runtime.close()

    return asyncio.run(scenario())


def test_runtime_archives_on_the_policy_of_config_ini_and_stops_with_it(aged, store, data_dir):  # noqa: F811
    (data_dir / "config.ini").write_text("[STORE]\nbackup_every = off\narchive_after = 60d\n")
    before = families(store.path)
    runtime = run_console(store, wait_for_result=True)
    scheduled = runtime.archive
    assert scheduled is not None and scheduled.last_error is None
    assert scheduled.results[0].orders == 8  # the 200- and 100-day-old runs, whole
    assert scheduled._task is None  # stopped with the runtime
    archived = ids_in(data_dir / ARCHIVE_FILENAME)
    assert archived == {*aged["old"], *aged["old_error"]}
    kept = ids_in(store.path)
    assert not archived & kept and archived | kept == {o for f in before.values() for o in f}


def test_runtime_without_a_policy_archives_nothing(aged, store, data_dir):  # noqa: F811
    (data_dir / "config.ini").write_text("[STORE]\nbackup_every = off\n")
    runtime = run_console(store, wait_for_result=False)
    assert runtime.archive is None
    assert not (data_dir / ARCHIVE_FILENAME).exists()
    assert len(ids_in(store.path)) == 20
