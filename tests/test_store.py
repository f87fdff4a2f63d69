"""The SQLite store: migrations, transitions and audit, refusal of foreign or damaged files."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import sqlite3
import statistics
import threading
import time

import pytest

import core.store
from core.errors import (
    ConfigError,
    CorruptDatabaseError,
    ForeignDatabaseError,
    IllegalTransitionError,
    OrderNotFoundError,
    SchemaTooNewError,
    StoreError,
)
from core.events import EventBus, OrderCreated, OrderStatusChanged
from core.ledger import Ledger
from core.orders import Order, OrderStatus
from core.store import (
    APPLICATION_ID,
    DB_FILENAME,
    SCHEMA_VERSION,
    Store,
    default_data_dir,
    resolve_data_dir,
)


def test_new_store_is_wal_versioned_and_ours(store):
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()


def test_data_dir_flag_beats_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCONSOLE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert (tmp_path / "flag").is_dir()


def test_a_data_dir_that_is_a_file_is_refused_naming_where_it_came_from(tmp_path, monkeypatch):
    """The flag, the environment variable or the platform's default: the error names the one used."""
    blocker = tmp_path / "labconsole"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # the platform's default is then the file
    assert default_data_dir() == blocker, "the user data dir follows $XDG_DATA_HOME (Linux)"
    said = {}
    for source, flag, env in [("--data-dir", blocker, None), ("LABCONSOLE_DATA_DIR", None, blocker),
                              ("data dir", None, None)]:
        if env is None:
            monkeypatch.delenv("LABCONSOLE_DATA_DIR", raising=False)
        else:
            monkeypatch.setenv("LABCONSOLE_DATA_DIR", str(env))
        with pytest.raises(ConfigError) as refused:
            resolve_data_dir(flag)
        said[source] = str(refused.value).splitlines()[-1].strip()
    assert said == {source: f"{source}: {blocker} exists and is not a directory"
                    for source in ("--data-dir", "LABCONSOLE_DATA_DIR", "data dir")}
    assert blocker.read_text() == "x"


def test_transitions_and_audit_are_logged_with_who_and_why(store):
    async def scenario():
        core = Ledger(store)
        seen = []
        core.bus.subscribe(seen.append)
        order = await core.create_order(Order(templateName="ELISA"), who="lims")
        await core.set_status(order.identifier, OrderStatus.Running, who="dispatcher")
        await core.operator_status(order.identifier, OrderStatus.Canceled, action="cancel",
                                   reason="plate dropped", who="alice")
        return order, seen

    order, seen = asyncio.run(scenario())
    log = store.transitions(order.identifier)
    assert [(t.from_status, t.to_status, t.who, t.why) for t in log] == [
        (None, OrderStatus.Created, "lims", None),
        (OrderStatus.Created, OrderStatus.Running, "dispatcher", None),
        (OrderStatus.Running, OrderStatus.Canceled, "alice", "plate dropped")]
    audit = store.audit_entries(order.identifier)
    assert [(a.who, a.action, a.reason) for a in audit] == [("alice", "cancel", "plate dropped")]
    saved = store.get_order(order.identifier)
    assert saved.status is OrderStatus.Canceled
    assert saved.actualStartTime is not None and saved.actualEndTime is not None
    assert saved.statusDetails == "plate dropped"
    assert saved.sourceIdentifier == saved.identifier == "Order_00001"
    assert [type(e).__name__ for e in seen] == ["OrderCreated", "OrderStatusChanged",
                                                "OrderStatusChanged", "OperatorAction"]


def _on_writer_commit(store, action):
    """Run ``action()`` on the writer thread each time it is about to execute COMMIT.

    The trace callback of the writer connection sees every statement before it runs; holding the
    writer there widens the window between "the operation ran" and "COMMIT returned" from
    microseconds to as long as ``action`` takes, so an ordering bug shows on every run."""

    def install(conn):
        conn.set_trace_callback(lambda sql: action() if sql.strip().upper() == "COMMIT" else None)

    return store.write(install)


def test_writer_connection_commits_with_synchronous_full(store):
    """Acknowledged means on disk: the writer's connection fsyncs every commit."""

    async def scenario():
        return await store.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])

    assert store.synchronous == "FULL"
    assert asyncio.run(scenario()) == 2  # 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_event_is_published_only_after_commit(store):
    """A subscriber reading the store from another connection sees the committed change.

    Each COMMIT is held back until the loop had every chance to run a subscriber (or 0.3 s), so a
    store that delivered results before committing is caught every time, not by luck."""

    async def scenario():
        bus = EventBus()
        core = Ledger(store, bus)
        observed = []
        loop = asyncio.get_running_loop()
        subscriber_ran = threading.Event()

        def hold_commit():
            # let the loop turn: a result delivered before COMMIT reaches the subscriber now
            ping = threading.Event()
            loop.call_soon_threadsafe(ping.set)
            ping.wait(1.0)
            subscriber_ran.wait(0.3)
            subscriber_ran.clear()

        await _on_writer_commit(store, hold_commit)

        def check(event):
            other = sqlite3.connect(store.path)
            status = other.execute("SELECT status FROM orders WHERE id = ?", (event.order_id,)).fetchone()
            count = other.execute("SELECT count(*) FROM transitions WHERE order_id = ?",
                                  (event.order_id,)).fetchone()[0]
            other.close()
            observed.append((type(event).__name__, status[0] if status else None, count))
            subscriber_ran.set()

        bus.subscribe(check, (OrderCreated, OrderStatusChanged))
        order = await core.create_order(Order(templateName="T"))
        await core.set_status(order.identifier, OrderStatus.Running)

        return observed

    assert asyncio.run(scenario()) == [("OrderCreated", int(OrderStatus.Created), 1),
                                       ("OrderStatusChanged", int(OrderStatus.Running), 2)]


def test_illegal_transition_changes_nothing(store):
    async def scenario():
        core = Ledger(store)
        order = await core.create_order(Order(templateName="T"))
        await core.set_status(order.identifier, OrderStatus.Complete)
        with pytest.raises(IllegalTransitionError, match="Complete -> Running"):
            await core.set_status(order.identifier, OrderStatus.Running,
                                  expected={OrderStatus.Created, OrderStatus.Scheduled})
        with pytest.raises(OrderNotFoundError, match="OrderNotFound"):
            await core.set_status("Order_99999", OrderStatus.Running)
        return order

    order = asyncio.run(scenario())
    assert store.get_order(order.identifier).status is OrderStatus.Complete
    assert len(store.transitions(order.identifier)) == 2


def test_concurrent_writes_share_commits_and_failures_stay_alone(store):
    async def scenario():
        core = Ledger(store)
        first = await core.create_order(Order(templateName="T"))
        commits_before = store.commit_count
        results = await asyncio.gather(
            *[core.create_order(Order(templateName="T")) for _ in range(300)],
            core.set_status("Order_missing", OrderStatus.Running), return_exceptions=True)
        return first, results, store.commit_count - commits_before

    first, results, commits = asyncio.run(scenario())
    assert isinstance(results[-1], OrderNotFoundError)
    assert all(isinstance(r, Order) for r in results[:-1])
    assert commits < 300, "group commit: concurrent writes share transactions"
    assert store.count_orders() == 301
    assert len({r.identifier for r in results[:-1]}) == 300


def test_writes_do_not_block_the_loop(store):
    """The loop keeps turning while FULL-synchronous commits happen on the writer thread.

    Every commit is made to take 50 ms (as a slow disk would), so a write that ran on the loop
    would hold it 50 ms per order; on the writer thread the loop's lag stays at its own noise."""

    commit_seconds = 0.05

    async def scenario():
        core = Ledger(store)
        await _on_writer_commit(store, lambda: time.sleep(commit_seconds))
        lags = []
        stop = False

        async def probe():
            while not stop:
                t0 = time.perf_counter()
                await asyncio.sleep(0.002)
                lags.append(time.perf_counter() - t0 - 0.002)

        task = asyncio.create_task(probe())
        t0 = time.perf_counter()
        for _ in range(20):
            await core.create_order(Order(templateName="T"))
        elapsed = time.perf_counter() - t0
        stop = True
        await task
        return lags, elapsed

    lags, elapsed = asyncio.run(scenario())
    assert elapsed >= 20 * commit_seconds, "every commit took its 50 ms"
    assert len(lags) > 20, "the probe ran while the writes were in flight"
    # the median tick is far below one commit (a shared machine may stretch a few ticks)
    assert statistics.median(lags) < commit_seconds / 2, f"loop lag {statistics.median(lags):.3f} s"
    assert max(lags) < 20 * commit_seconds, "no tick waited for several commits"


def test_foreign_database_is_refused_and_untouched(tmp_path):
    path = tmp_path / DB_FILENAME
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(ForeignDatabaseError, match=r"labconsole.sqlite3.*another program.*invoices"):
        Store(path).open()
    assert path.read_bytes() == before


def test_garbage_file_is_refused_and_untouched(tmp_path):
    path = tmp_path / DB_FILENAME
    path.write_bytes(b"this is a spreadsheet, not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(CorruptDatabaseError, match=str(path)) as refused:
        Store(path).open()
    assert path.read_bytes() == before
    # with no backup the message ends with what to do, and names no backup
    assert str(refused.value).endswith("is not a SQLite database (bad header); it was left untouched — restore "
                                       "from a backup with `labconsole store restore BACKUP`, or move it away")
    assert "latest backup" not in str(refused.value)
    # with backups it names the newest one after the advice
    (tmp_path / "backups").mkdir()
    for name in ("labconsole-20240601-100140.sqlite3", "labconsole-20240602-090000.sqlite3"):
        (tmp_path / "backups" / name).write_bytes(b"")
    with pytest.raises(CorruptDatabaseError) as refused:
        Store(path).open()
    newest = tmp_path / "backups" / "labconsole-20240602-090000.sqlite3"
    assert str(refused.value).endswith(f"or move it away (latest backup: {newest})")


def test_damaged_database_is_refused(tmp_path):
    path = tmp_path / DB_FILENAME
    Store(path).open().close()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # wipe the schema page after the header
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptDatabaseError, match="damaged|cannot be opened"):
        Store(path).open()


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / DB_FILENAME
    Store(path).open().close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(SchemaTooNewError, match="newer than this labconsole"):
        Store(path).open()


def test_reopen_keeps_ids_increasing(tmp_path):
    path = tmp_path / DB_FILENAME

    async def make(n):
        s = Store(path).open()
        try:
            return [(await s.insert_order(Order(templateName="T"), who="t"))[0].identifier
                    for _ in range(n)]
        finally:
            s.close()

    assert asyncio.run(make(2)) == ["Order_00001", "Order_00002"]
    assert asyncio.run(make(1)) == ["Order_00003"]


def test_a_write_with_the_next_commits_in_that_transaction_or_alone_soon_after(store):
    """``write_with_next``: an instrument's log row costs no commit of its own while other writes
    come, keeps its order, is committed alone if none comes, and is not lost on close."""
    from core.store import RIDER_WAIT

    def log(n):
        return lambda c: c.execute("INSERT INTO instrument_log (instrument_id, at, from_status, to_status, "
                                   "detail, order_ids) VALUES (?,?,?,?,?,?)", (f"I{n}", n, "Idle", "Busy", "", "[]"))

    def rows(c: sqlite3.Connection) -> list[str]:
        return [r[0] for r in c.execute("SELECT instrument_id FROM instrument_log ORDER BY rowid")]

    async def scenario():
        before = store.commit_count
        first = store.write_with_next(log(1))
        second = store.write_with_next(log(2))
        assert not first.done()
        await store.write(log(3))  # one commit carries all three, in order
        assert first.done() and second.done() and store.commit_count == before + 1
        t0 = asyncio.get_running_loop().time()
        await store.write_with_next(log(4))  # nothing else comes: alone, soon
        waited = asyncio.get_running_loop().time() - t0
        assert store.commit_count == before + 2 and waited >= RIDER_WAIT * 0.5
        store.write_with_next(log(5))  # pending when the store closes

    asyncio.run(scenario())
    path = store.path
    store.close()
    with sqlite3.connect(path) as conn:
        assert rows(conn) == ["I1", "I2", "I3", "I4", "I5"]


def _read_on_a_thread(store, fn):
    """Start ``store.read_sync(fn)`` on a thread of its own; its outcome lands in the dict."""
    outcome: dict[str, object] = {}
    started = threading.Event()

    def body(conn):
        started.set()
        return fn(conn)

    def run():
        try:
            outcome["value"] = store.read_sync(body)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    assert started.wait(10)
    return thread, outcome


def test_close_waits_for_a_read_under_way_on_another_thread(tmp_path):
    # A panel's worker thread read the store while the window closed it: the connection was
    # closed under the read, which crashed the process at teardown.
    store = Store(tmp_path / DB_FILENAME).open()

    def slow_read(conn):
        time.sleep(0.3)
        return conn.execute("SELECT count(*) FROM orders").fetchone()[0]

    thread, outcome = _read_on_a_thread(store, slow_read)
    store.close()
    thread.join(10)
    assert outcome == {"value": 0}
    assert store.read_sync(lambda c: c.execute("SELECT count(*) FROM orders").fetchone()[0]) == 0


def test_close_interrupts_a_read_that_does_not_end(tmp_path, monkeypatch):
    monkeypatch.setattr("core.store.CLOSE_READ_WAIT", 0.2)
    store = Store(tmp_path / DB_FILENAME).open()
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    thread, outcome = _read_on_a_thread(store, lambda conn: conn.execute(endless).fetchone())
    store.close()
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), sqlite3.OperationalError)
    assert "interrupt" in str(outcome["error"])


def test_a_batch_that_fails_outside_its_operations_is_refused_and_the_writer_lives_on(tmp_path, monkeypatch):
    # The writer thread died of an error outside the operations' own handling, and every caller
    # waited for ever for its write.
    async def scenario():
        store = Store(tmp_path / DB_FILENAME).open()
        ledger = Ledger(store, EventBus())
        try:
            monkeypatch.setattr("core.store.TEXT_INDEX_CHECK_EVERY", 1)
            monkeypatch.setattr("core.store.text_pending", lambda _conn, _cap: 1 / 0)
            with pytest.raises(Exception) as refused:
                await asyncio.wait_for(ledger.create_order(Order(templateName="Lost"), who="t"), 20)
            monkeypatch.undo()
            kept = await asyncio.wait_for(ledger.create_order(Order(templateName="Kept"), who="t"), 20)
            names = await store.read(lambda c: [r[0] for r in c.execute("SELECT template_name FROM orders")])
            return refused.value, kept, names
        finally:
            store.close()

    refused, kept, names = asyncio.run(scenario())
    assert "ZeroDivisionError" in str(refused) and not isinstance(refused, TimeoutError)
    assert kept.templateName == "Kept"
    assert names == ["Kept"]


def test_a_store_path_that_is_not_a_regular_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "labconsole.sqlite3"
    os.mkfifo(path)
    with pytest.raises(StoreError, match=rf"{re.escape(str(path))}.*is not a regular file"):
        Store(path).open()


def test_a_store_file_that_cannot_be_read_is_refused_naming_it_and_left_untouched(tmp_path, monkeypatch):
    """The file passed the permission check but opening it for reading fails (its permissions
    changed meanwhile, a network disk, another program holding it): refused naming the file and the
    reason. The operating system's refusal is given for that one file (root reads anything)."""
    path = tmp_path / DB_FILENAME
    Store(path).open().close()
    before = path.read_bytes()
    real_open = open

    def refusing(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(core.store, "open", refusing, raising=False)
    with pytest.raises(StoreError) as refused:
        Store(path).open()
    assert str(refused.value) == f"{path}: cannot be read: Permission denied"
    monkeypatch.undo()
    assert path.read_bytes() == before
    Store(path).open().close()  # readable again: nothing was lost


def test_a_data_directory_this_user_cannot_write_in_is_refused_naming_it(tmp_path, monkeypatch):
    """The store writes its -wal and -shm files next to the database: a directory the user may
    read but not write in is refused before anything is created there. (Root writes anywhere,
    so an unprivileged user's answer is given for that one directory; the others are real.)"""
    locked = tmp_path / "shared-readonly"
    locked.mkdir()
    real_access = os.access
    asked: list[int] = []

    def access(path, mode, **kw):  # noqa: ANN001, ANN003, ANN202
        if os.fspath(path) == os.fspath(locked):
            asked.append(mode)
            if mode & os.W_OK:
                return False
        return real_access(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(StoreError, match=rf"{re.escape(str(locked / DB_FILENAME))}: the directory "
                                         rf"{re.escape(str(locked))} is not writable \(the store writes its -wal "
                                         r"and -shm files next to it\); make it writable or choose another --data-dir"):
        Store(locked / DB_FILENAME).open()
    assert asked and list(locked.iterdir()) == [], "nothing is created in it"
    writable = tmp_path / "writable"
    writable.mkdir()
    Store(writable / DB_FILENAME).open().close()  # the real answer for any other directory


def test_a_batch_that_fails_outside_its_operations_fails_its_writes_and_the_writer_goes_on(
        store, monkeypatch, caplog):
    """A fault of the writer itself between a batch's operations and its commit (here the text
    index check, every batch): the batch's writes fail naming the file and the cause, nothing of
    them is stored, the log says so with the file, and the next write goes through."""
    import logging

    import core.store as store_module

    real = store_module.text_pending

    def broken(conn, cap):
        raise RuntimeError("index check broke")

    monkeypatch.setattr(store_module, "TEXT_INDEX_CHECK_EVERY", 1)
    monkeypatch.setattr(store_module, "text_pending", broken)
    with caplog.at_level(logging.ERROR, logger="core.store"), pytest.raises(StoreError) as info:
        store.write_sync(store.audit_op("ann", "pause", "Order_1", "lost"))
    assert str(info.value) == f"{store.path}: write failed: RuntimeError('index check broke')"
    [record] = [r for r in caplog.records if r.name == "core.store"]
    assert record.getMessage() == f"{store.path}: a write batch failed outside its operations"
    assert record.exc_info is not None and "index check broke" in str(record.exc_info[1])
    monkeypatch.setattr(store_module, "text_pending", real)
    store.write_sync(store.audit_op("ann", "pause", "Order_1", "kept"))
    assert [e.reason for e in store.audit_entries("Order_1")] == ["kept"]


def test_a_batch_whose_transaction_fails_in_sqlite_fails_its_writes_naming_the_file_and_the_cause(
        store, monkeypatch):
    """SQLite refusing the batch's transaction itself (here a disk fault met by the text index
    check before the commit): the batch's writes fail with the file and SQLite's words, nothing
    of them is stored, and the next write goes through."""
    import core.store as store_module

    real = store_module.text_pending

    def disk_fault(conn, cap):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_module, "TEXT_INDEX_CHECK_EVERY", 1)
    monkeypatch.setattr(store_module, "text_pending", disk_fault)
    with pytest.raises(StoreError) as info:
        store.write_sync(store.audit_op("ann", "pause", "Order_1", "lost"))
    assert str(info.value) == f"{store.path}: commit failed: disk I/O error"
    monkeypatch.setattr(store_module, "text_pending", real)
    store.write_sync(store.audit_op("ann", "pause", "Order_1", "kept"))
    assert [e.reason for e in store.audit_entries("Order_1")] == ["kept"]


def test_an_audit_entry_reads_back_with_when_who_and_what(store):
    class Clock:
        def now(self) -> float:
            return 1_700_000_123.5

    store.clock = Clock()
    store.write_sync(store.audit_op("ann", "pause", "Order_1", "door open", {"step": "read"}))
    [entry] = store.audit_entries("Order_1")
    assert (entry.at, entry.who, entry.action, entry.target, entry.reason, entry.details) == (
        1_700_000_123.5, "ann", "pause", "Order_1", "door open", {"step": "read"})
