"""Archive: finished runs move whole into labconsole-archive.sqlite3, online, and stay searchable."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_history import DAY, NOW, add_run, ids_of, run_ops

from core.archive import (
    ARCHIVE_FILENAME,
    ArchivePolicy,
    Archiver,
    parse_before,
)
from core.errors import ConfigError, ForeignDatabaseError, StoreError
from core.history import ARCHIVED_COLUMN, HistoryQuery, HistorySearch
from core.orders import OrderStatus
from core.store import DB_FILENAME, Store

ROOT = Path(__file__).resolve().parent.parent


def ids_in(path: Path, table: str = "orders", column: str = "id") -> set[str]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {r[0] for r in conn.execute(f"SELECT {column} FROM {table}")}
    finally:
        conn.close()


def pending_in(path: Path) -> set[str]:
    return ids_in(path, "pending") if path.exists() else set()


def families(path: Path) -> dict[str, set[str]]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        out: dict[str, set[str]] = {}
        for oid, source in conn.execute("SELECT id, coalesce(source_id, id) FROM orders"):
            out.setdefault(source, set()).add(oid)
        return out
    finally:
        conn.close()


@pytest.fixture
def aged(store):
    """Runs finished 200, 100 and 30 days ago, one still running since 150 days, recent ones."""
    made = {
        "old": add_run(store, at=NOW - 200 * DAY),
        "old_error": add_run(store, at=NOW - 100 * DAY, status=OrderStatus.Error, details="Door open",
                             template="Compound Screen", instrument="Hamilton STAR 1"),
        "running": add_run(store, at=NOW - 150 * DAY, status=OrderStatus.Running),
        "month": add_run(store, at=NOW - 30 * DAY, status=OrderStatus.Canceled),
        "recent": add_run(store, at=NOW - DAY),
    }
    return made


def test_archive_moves_finished_runs_whole_with_transitions(aged, store):
    before_ids = ids_in(store.path)
    transitions = {i: len(store.transitions(i)) for i in before_ids}
    result = Archiver(store, batch_orders=3).run_sync(NOW - 60 * DAY)
    archive = store.path.with_name(ARCHIVE_FILENAME)
    moved = set(aged["old"] + aged["old_error"])
    assert ids_in(archive) == moved
    assert ids_in(store.path) == before_ids - moved
    assert result.orders == 8 and result.families == 2 and result.batches == 2
    assert result.transitions == sum(transitions[i] for i in moved)
    assert ids_in(archive, "transitions", "order_id") == moved
    assert not moved & ids_in(store.path, "transitions", "order_id")
    assert pending_in(archive) == set()
    # the running run keeps its finished steps in the store: never half a run
    assert set(aged["running"]) <= ids_in(store.path)
    meta = store.read_sync(lambda c: c.execute("SELECT value FROM meta WHERE key = 'archive.orders'").fetchone())
    assert int(meta[0]) == 8
    # archiving again finds nothing more; a later cut-off takes the month-old run
    assert Archiver(store).run_sync(NOW - 60 * DAY).orders == 0
    assert Archiver(store).run_sync(NOW - 7 * DAY).orders == 4


def test_runs_and_step_runs_rows_move_with_their_orders_and_unfinished_runs_stay(store):
    done = add_run(store, at=NOW - 100 * DAY)
    paused = add_run(store, at=NOW - 100 * DAY)

    def engine_rows(conn: sqlite3.Connection) -> None:
        for ids, status in ((done, "completed"), (paused, "paused")):
            conn.execute("INSERT INTO runs (run_id, template_name, template_version, status, input_data, "
                         "context, created) VALUES (?, 'ELISA Readout', 1, ?, '{}', '{}', ?)",
                         (ids[0], status, NOW - 100 * DAY))
            for number, oid in enumerate(ids[1:]):
                conn.execute("INSERT INTO step_runs (run_id, step_id, order_id, status) VALUES (?, ?, ?, 'completed')",
                             (ids[0], f"s{number}", oid))

    store.write_sync(engine_rows)
    Archiver(store).run_sync(NOW - DAY)
    archive = store.path.with_name(ARCHIVE_FILENAME)
    assert ids_in(archive) == set(done)
    assert ids_in(archive, "runs", "run_id") == {done[0]}
    assert ids_in(archive, "step_runs", "order_id") == set(done[1:])
    assert ids_in(store.path, "runs", "run_id") == {paused[0]}
    assert set(paused) <= ids_in(store.path)


def test_search_spans_store_and_archive_and_finds_archived_orders(aged, store):
    search = HistorySearch(store)
    before = [ids_of(search.search_sync(HistoryQuery(text=t, limit=3))) for t in ("door", "reader", "")]
    Archiver(store).run_sync(NOW - 60 * DAY)
    after = [search.search_sync(HistoryQuery(text=t, limit=3)) for t in ("door", "reader", "")]
    assert [ids_of(p) for p in after] == before
    assert all(r[ARCHIVED_COLUMN] == 1 for r in after[0].rows)
    assert after[0].archive.state == "ok" and after[0].archive.archived_orders == 8
    everything, cursor = [], None
    while True:
        page = search.search_sync(HistoryQuery(limit=5), cursor)
        everything += ids_of(page)
        if (cursor := page.next_cursor) is None:
            break
    assert len(everything) == len(set(everything)) == 20
    order, archived = asyncio.run(search.order(aged["old_error"][-1]))
    assert archived and order.statusDetails == "Door open"
    assert [t.to_status for t in asyncio.run(search.transitions(aged["old_error"][-1]))] == [
        OrderStatus.Created, OrderStatus.Running, OrderStatus.Error]
    assert asyncio.run(search.order(aged["recent"][0]))[1] is False
    reach = asyncio.run(search.reach())
    assert reach.oldest_archived == pytest.approx(NOW - 200 * DAY) and reach.archived_orders == 8
    assert asyncio.run(search.count(HistoryQuery(text="reader"))) == (12, False)  # Reader.StepN
    counts = asyncio.run(search.dashboard(NOW - DAY))
    assert counts.archived == 8 and sum(counts.by_status.values()) == 12


def test_missing_archive_is_reported_and_the_store_is_searched(aged, store):
    Archiver(store).run_sync(NOW - 60 * DAY)
    archive = store.path.with_name(ARCHIVE_FILENAME)
    for suffix in ("", "-wal", "-shm"):
        Path(str(archive) + suffix).unlink(missing_ok=True)
    page = HistorySearch(store).search_sync(HistoryQuery(text="reader"))
    assert page.archive.state == "missing"
    assert "8 archived orders cannot be searched" in page.archive.message and str(archive) in page.archive.message
    assert set(ids_of(page)) == set(aged["recent"][1:] + aged["running"][1:] + aged["month"][1:]) & set(ids_of(page))
    assert len(page.rows) > 0
    # the live store works on
    add_run(store, at=NOW, status=OrderStatus.Scheduled)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_damaged_archive_is_reported_and_the_store_is_searched(aged, store, damage):
    Archiver(store).run_sync(NOW - 60 * DAY)
    archive = store.path.with_name(ARCHIVE_FILENAME)
    search = HistorySearch(store)
    with sqlite3.connect(archive) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = archive.stat().st_size
    if damage == "garbage":
        with open(archive, "r+b") as f:
            f.seek(4096)
            f.write(os.urandom(size - 4096))
    elif damage == "truncated":
        with open(archive, "r+b") as f:
            f.truncate(size // 3)
    else:
        archive.unlink()
        with sqlite3.connect(archive) as conn:
            conn.execute("CREATE TABLE orders (id TEXT)")
    page = search.search_sync(HistoryQuery(text="reader"))
    assert page.archive.state == "damaged", page.archive
    assert str(archive) in page.archive.message and "only the store is searched" in page.archive.message
    assert set(aged["recent"][1:]) <= set(ids_of(page))
    assert all(r[ARCHIVED_COLUMN] == 0 for r in page.rows)
    assert asyncio.run(search.count(HistoryQuery(text="reader")))[0] >= 3
    with pytest.raises(StoreError, match=ARCHIVE_FILENAME):
        Archiver(store).run_sync(NOW - 7 * DAY)
    assert store.count_orders() == 12  # nothing moved, nothing lost


def test_a_family_changed_between_copy_and_delete_stays_in_the_store(aged, store):
    archiver = Archiver(store)
    conn = archiver._open()
    try:
        from core.archive import ArchiveResult

        result = ArchiveResult(archiver.path, NOW - 60 * DAY)
        families, _ = archiver._copy_batch(conn, NOW - 60 * DAY, (float("-inf"), 0), set(), result)
        assert {f.key for f in families} == {aged["old"][0], aged["old_error"][0]}
        store.clock = type("C", (), {"now": staticmethod(lambda: NOW - 59 * DAY)})()
        store.write_sync(store.update_op(aged["old"][2], {"notes": "checked again"}))
        store.clock = None
        done = store.write_sync(archiver._delete_op(families))
        assert done[0] == 4 and done[3] == 1
        assert set(aged["old"]) <= ids_in(store.path)
        assert set(aged["old"]) <= ids_in(archiver.path)  # a pending copy, hidden from search
        page = HistorySearch(store).search_sync(HistoryQuery(text="checked"))
        assert [(r[0], r[ARCHIVED_COLUMN]) for r in page.rows] == [(aged["old"][2], 0)]
        archiver._finish(conn, result)
        assert result.settled == 4
    finally:
        archiver.file.close()
    assert ids_in(archiver.path) == set(aged["old_error"])


def test_two_archive_runs_at_once_are_refused(aged, store):
    first = Archiver(store)
    first._open()
    try:
        with pytest.raises(StoreError, match="another archive run"):
            Archiver(store).run_sync(NOW)
    finally:
        first.file.close()


def test_the_archive_file_is_not_a_store(aged, store):
    Archiver(store).run_sync(NOW - 60 * DAY)
    with pytest.raises(ForeignDatabaseError):
        Store(store.path.with_name(ARCHIVE_FILENAME)).open()


def test_online_archive_under_a_transition_stream_loses_nothing(store):
    for k in range(30):
        add_run(store, at=NOW - (100 + k) * DAY, status=OrderStatus.Error if k % 5 == 0 else OrderStatus.Complete)
    live = [add_run(store, at=NOW - 60, status=OrderStatus.Scheduled) for _ in range(5)]
    total = store.count_orders()

    async def scenario():
        stop = asyncio.Event()

        async def stream() -> int:
            n = 0
            while not stop.is_set():
                for ids in live:
                    await store.set_status(ids[0], OrderStatus.Scheduled if n % 2 else OrderStatus.Created,
                                           who="engine")
                    n += 1
                await asyncio.sleep(0)
            return n

        streamer = asyncio.ensure_future(stream())
        result = await Archiver(store, batch_orders=8).run(NOW - 60 * DAY)
        stop.set()
        return result, await streamer

    result, transitions = asyncio.run(scenario())
    assert transitions > 0 and result.orders == 120 and result.batches == 15
    archive = store.path.with_name(ARCHIVE_FILENAME)
    assert len(ids_in(store.path)) + len(ids_in(archive)) == total
    assert not ids_in(store.path) & ids_in(archive)


def test_archive_policy_from_config(tmp_path, aged, store):
    ini = tmp_path / "config.ini"
    assert ArchivePolicy.from_ini(ini) is None
    ini.write_text("[STORE]\nbackup_every = 24h\n")
    assert ArchivePolicy.from_ini(ini) is None
    ini.write_text("[STORE]\nbackup_every = 24h\narchive_after = 90d\n")
    policy = ArchivePolicy.from_ini(ini)
    assert policy is not None and policy.after == 90 * DAY
    ini.write_text("[store]\n\narchive_after = soon\n")
    with pytest.raises(ConfigError, match=r"config.ini:3: STORE.archive_after"):
        ArchivePolicy.from_ini(ini)
    ini.write_text("[STORE]\narchive_after = 5h\n")
    with pytest.raises(ConfigError, match="under a day"):
        ArchivePolicy.from_ini(ini)
    result = asyncio.run(policy.run_due(store, now=NOW))
    assert result.orders == 8 and store.count_orders() == 12


def test_parse_before():
    assert parse_before("90d", now=NOW) == NOW - 90 * DAY
    assert parse_before("2024-03-01", now=NOW) == time.mktime((2024, 3, 1, 0, 0, 0, 0, 0, -1))
    assert parse_before("2024-03-01T12:00+00:00", now=NOW) == 1709294400.0
    with pytest.raises(ConfigError, match="--before: 'yesterday' is not a date"):
        parse_before("yesterday", now=NOW)
    with pytest.raises(ConfigError, match="in the future"):
        parse_before("2999-01-01", now=NOW)


def lc(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LABCONSOLE_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "console", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)


def test_cli_store_archive(aged, store, data_dir):
    bad = lc(data_dir, "store", "archive", "--before", "last tuesday")
    assert bad.returncode == 2 and "--before: 'last tuesday' is not a date" in bad.stderr
    assert "Traceback" not in bad.stderr
    done = lc(data_dir, "store", "archive", "--before", "60d")
    assert done.returncode == 0, done.stderr
    assert "8 orders (2 runs or single orders" in done.stdout and ARCHIVE_FILENAME in done.stdout
    assert store.count_orders() == 12


KILL_SCRIPT = """
import random, sys, time
from core.archive import Archiver
from core.store import Store
store = Store(sys.argv[1]).open()
print("ready", flush=True)
# a few ms between batches, as on a busy machine, so that the kills land all through the run
Archiver(store, batch_orders=int(sys.argv[3])).run_sync(float(sys.argv[2]),
                                                       progress=lambda r: time.sleep(random.uniform(0, 0.01)))
store.close()
print("done", flush=True)
"""


def test_kill_9_at_random_points_leaves_every_order_in_exactly_one_place(data_dir):
    path = data_dir / DB_FILENAME
    with Store(path).open() as store:
        def many(conn: sqlite3.Connection) -> None:
            for k in range(300):
                status = [OrderStatus.Complete, OrderStatus.Error, OrderStatus.Canceled][k % 3]
                run_ops(store, at=NOW - (30 + k % 200) * DAY, status=status, steps=k % 4 + 1)(conn)
            for _ in range(5):
                run_ops(store, at=NOW - 300 * DAY, status=OrderStatus.Running)(conn)
        store.write_sync(many)
        everything = ids_in(path)
        expected = families(path)
    archive = path.with_name(ARCHIVE_FILENAME)
    rng = random.Random(15)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    finished = False
    partial = 0
    for _attempt in range(6):
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path), str(NOW - 7 * DAY), "7"],
                                stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.15, 0.6))
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate(timeout=30)[0]
        finished = finished or "done" in out
        live, archived, pending = ids_in(path), ids_in(archive) if archive.exists() else set(), pending_in(archive)
        assert live | archived == everything  # never in neither
        assert live & archived <= pending  # in both only as a pending copy, which search hides
        visible = archived - live
        partial += 0 < len(visible) < len(everything) - 20 and not finished
        for key, members in expected.items():  # every run whole in one place
            assert members <= live or members <= visible, key
        with Store(path).open() as store:
            found, cursor = [], None
            search = HistorySearch(store)
            while True:
                page = search.search_sync(HistoryQuery(limit=500), cursor)
                found += ids_of(page)
                if (cursor := page.next_cursor) is None:
                    break
        assert len(found) == len(set(found)) and set(found) == everything
    assert partial >= 2, "the kills should land while orders are moving"
    with Store(path).open() as store:
        Archiver(store).run_sync(NOW - 7 * DAY)
    live, archived = ids_in(path), ids_in(archive)
    assert not live & archived and live | archived == everything and pending_in(archive) == set()
    assert {k for k, m in expected.items() if m <= archived} | {k for k, m in expected.items() if m <= live} \
        == set(expected)
    assert len(live) == 5 * 4 and len(archived) == len(everything) - 20


def test_scheduled_archive_runs_the_policy_from_config_ini(aged, store, data_dir):
    from core.archive import ScheduledArchive

    assert ScheduledArchive.from_config(store) is None
    (data_dir / "config.ini").write_text("[STORE]\narchive_after = 60d\n")

    async def scenario():
        scheduled = ScheduledArchive.from_config(store, first_delay=0)
        assert scheduled is not None
        scheduled.start()
        for _ in range(500):
            if scheduled.results:
                break
            await asyncio.sleep(0.01)
        await scheduled.close()
        return scheduled

    scheduled = asyncio.run(scenario())
    assert scheduled.results[0].orders == 8 and scheduled.last_error is None
    assert store.count_orders() == 12


def test_cancelling_an_online_archive_leaves_everything_in_one_place(store):
    for k in range(40):
        add_run(store, at=NOW - (100 + k) * DAY)
    everything = ids_in(store.path)

    async def scenario():
        task = asyncio.ensure_future(Archiver(store, batch_orders=4).run(NOW - 60 * DAY))
        for _ in range(2000):  # until the first batch has moved
            if store.path.with_name(ARCHIVE_FILENAME).exists() and store.count_orders() < len(everything):
                break
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.drain()

    asyncio.run(scenario())
    archive = store.path.with_name(ARCHIVE_FILENAME)
    live, archived = ids_in(store.path), ids_in(archive)
    assert live | archived == everything and live & archived <= pending_in(archive)
    assert 0 < len(archived - live) < len(everything)
    Archiver(store).run_sync(NOW - 60 * DAY)
    assert ids_in(store.path) == set() and ids_in(archive) == everything and pending_in(archive) == set()


def test_the_hash_chain_of_transitions_spans_the_store_and_the_archive(aged, store):
    """Archived transitions keep their hashes: `audit verify` walks store and archive as one
    chain, names a changed archived row, and says so when the archive file is missing."""
    assert store.verify_chain().ok
    Archiver(store, batch_orders=3).run_sync(NOW - 60 * DAY)
    archive = store.path.with_name(ARCHIVE_FILENAME)
    report = store.verify_chain()
    assert report.ok, report.render()
    moved = len(ids_in(archive, "transitions", "seq"))
    assert f"with the archive {archive}: {moved} transitions of 8 archived orders" in report.render()
    chain = next(c for c in report.chains if c.table == "transitions")
    assert chain.rows == len(ids_in(store.path, "transitions", "seq")) + moved

    seq = min(ids_in(archive, "transitions", "seq"))
    with sqlite3.connect(archive) as conn:
        conn.execute("UPDATE transitions SET why = 'edited' WHERE seq = ?", (seq,))
    report = store.verify_chain()
    assert not report.ok and report.first_problem.seq == seq
    assert "changed" in report.first_problem.what

    archive.rename(archive.with_name("elsewhere.sqlite3"))
    report = store.verify_chain()
    assert not report.ok and "missing (removed)" in report.first_problem.what
    assert f"the archive {archive} is missing" in report.render()
