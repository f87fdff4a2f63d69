"""Backups of the store: online while writes go on, checked, restored, scheduled and pruned."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from core import backup as backups
from core.errors import ConfigError, CorruptDatabaseError, ForeignDatabaseError, StoreError
from core.orders import Order
from core.runtime import Runtime
from core.store import DB_FILENAME, Store

ROOT = Path(__file__).resolve().parent.parent


def lc(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "console", "--data-dir", str(data_dir), *args],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)


def make_store(data_dir: Path, orders: int = 30) -> Path:
    path = data_dir / DB_FILENAME
    with Store(path).open() as store:
        for n in range(orders):
            store.write_sync(store.new_order_op(Order(templateName=f"T{n % 3}"), who="test"))
    return path


def count(path: Path, table: str = "orders") -> int:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def corrupt_middle_page(path: Path) -> bytes:
    data = bytearray(path.read_bytes())
    ps = int.from_bytes(data[16:18], "big")
    middle = len(data) // ps // 2
    data[middle * ps:(middle + 1) * ps] = bytes(ps)
    path.write_bytes(bytes(data))
    return bytes(data)


# ---------------------------------------------------------------------- backup


def test_backup_while_another_thread_writes_is_one_consistent_snapshot(data_dir):
    path = make_store(data_dir, 200)
    store = Store(path).open()
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        while not stop.is_set():
            store.write_sync(store.new_order_op(Order(templateName="Busy"), who="writer"))
            written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 50:
            time.sleep(0.005)
        before = store.count_orders()
        info = backups.backup(path)  # a separate read-only connection, as from another process
        during = written[0]
        while written[0] < during + 50:  # the writer went on after the copy
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join()
        after = store.count_orders()
        store.close()
    assert backups.verify(info.path).orders == info.orders
    assert before <= info.orders <= after and after > before
    conn = sqlite3.connect(info.path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one file
        # each order and its Created transition were committed together: the copy has both or neither
        orphans = conn.execute("SELECT count(*) FROM orders o WHERE NOT EXISTS "
                               "(SELECT 1 FROM transitions t WHERE t.order_id = o.id)").fetchone()[0]
        strays = conn.execute("SELECT count(*) FROM transitions t WHERE NOT EXISTS "
                              "(SELECT 1 FROM orders o WHERE o.id = t.order_id)").fetchone()[0]
    finally:
        conn.close()
    assert (orphans, strays) == (0, 0)
    assert not list(info.path.parent.glob("*.partial"))


def test_command_line_backup_while_the_console_process_writes(data_dir):
    path = make_store(data_dir, 100)
    script = (
        "import sys, time\n"
        "from core.store import Store\nfrom core.orders import Order\n"
        f"s = Store({str(path)!r}).open()\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    s.write_sync(s.new_order_op(Order(templateName='Busy'), who='console'))\n")
    console = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    try:
        assert console.stdout.readline().strip() == "ready"
        before = count(path)
        result = lc("store", "backup", data_dir=data_dir)
        after = count(path)
        restore = lc("store", "restore", str(data_dir / "x.sqlite3"), data_dir=data_dir)
    finally:
        console.kill()
        console.wait()
    assert result.returncode == 0, result.stderr
    made = backups.backups_in(data_dir / "backups")
    assert len(made) == 1 and result.stdout.startswith(f"{made[0]}: backup of {path}")
    assert before <= count(made[0]) <= after
    assert "integrity_check ok" in result.stdout
    assert restore.returncode == 2 and "x.sqlite3: does not exist" in restore.stderr


def test_default_name_directory_destination_and_no_overwrite(data_dir, tmp_path):
    path = make_store(data_dir)
    when = datetime(2024, 3, 1, 2, 0, 0)
    first = backups.backup(path, now=when)
    second = backups.backup(path, now=when)
    assert first.path == data_dir / "backups" / "labconsole-20240301-020000.sqlite3"
    assert second.path == data_dir / "backups" / "labconsole-20240301-020000-2.sqlite3"
    (tmp_path / "offsite").mkdir()
    elsewhere = backups.backup(path, tmp_path / "offsite", now=when)
    assert elsewhere.path == tmp_path / "offsite" / "labconsole-20240301-020000.sqlite3"
    named = backups.backup(path, tmp_path / "offsite" / "monday.sqlite3")
    assert named.path.is_file() and named.orders == 30
    with pytest.raises(StoreError, match="monday.sqlite3: exists already"):
        backups.backup(path, named.path)


def test_backup_of_a_damaged_store_is_refused_and_leaves_nothing(data_dir):
    path = make_store(data_dir, 400)
    damaged = corrupt_middle_page(path)
    with pytest.raises(CorruptDatabaseError, match=f"{path}.*labconsole store check"):
        backups.backup(path)
    assert path.read_bytes() == damaged
    assert backups.backups_in(data_dir / "backups") == []
    assert not list((data_dir / "backups").glob("*"))


# ---------------------------------------------------------------------- restore


def test_restore_replaces_a_damaged_store_and_keeps_the_old_file(data_dir):
    path = make_store(data_dir, 400)
    good = backups.backup(path)
    damaged = corrupt_middle_page(path)
    with pytest.raises(CorruptDatabaseError):
        Store(path).open()
    result = backups.restore(path, good.path, now=datetime(2024, 5, 6, 7, 8, 9))
    assert result.replaced == data_dir / f"{DB_FILENAME}.replaced-20240506-070809"
    assert result.replaced.read_bytes() == damaged
    with Store(path).open() as store:
        assert store.count_orders() == 400
        assert store.last_open_check.ok


def test_restore_moves_the_wal_of_the_replaced_file_with_it(data_dir):
    """A store killed with writes only in its WAL: those belong to the replaced file, not the backup."""
    path = make_store(data_dir, 10)
    good = backups.backup(path)
    script = (
        "import os, signal\nfrom core.store import Store\nfrom core.orders import Order\n"
        f"s = Store({str(path)!r}).open()\n"
        "for n in range(25):\n"
        "    s.write_sync(s.new_order_op(Order(templateName='Late'), who='console'))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            cwd=ROOT, timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert Path(f"{path}-wal").stat().st_size > 0
    result = backups.restore(path, good.path)
    assert not Path(f"{path}-wal").exists()
    assert Path(f"{result.replaced}-wal").stat().st_size > 0
    assert count(result.replaced) == 35  # the replaced file with its WAL: nothing of it lost
    assert count(path) == 10


def test_restore_is_refused_while_the_store_is_open(data_dir):
    path = make_store(data_dir)
    good = backups.backup(path)
    store = Store(path).open()
    try:
        before = path.read_bytes()
        with pytest.raises(StoreError, match=f"{path}: is open in a running labconsole"):
            backups.restore(path, good.path)
        assert path.read_bytes() == before
        assert not list(data_dir.glob("*.replaced-*"))
    finally:
        store.close()
    backups.restore(path, good.path)  # closed: allowed


def test_restore_command_refused_while_another_process_has_the_store(data_dir):
    path = make_store(data_dir)
    good = backups.backup(path)
    script = (f"from core.store import Store\ns = Store({str(path)!r}).open()\n"
              "print('ready', flush=True)\ninput()\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "ready"
        refused = lc("store", "restore", str(good.path), data_dir=data_dir)
    finally:
        holder.communicate("\n", timeout=30)
    assert refused.returncode == 2
    assert f"{path}: is open in a running labconsole" in refused.stderr
    done = lc("store", "restore", str(good.path), data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert f"{path}: restored from {good.path} (schema" in done.stdout
    assert "the replaced file is kept as" in done.stdout


def test_store_does_not_open_while_a_restore_holds_it(data_dir):
    from core.storefile import StoreLock

    path = make_store(data_dir)
    lock = StoreLock(path)
    lock.acquire_exclusive()
    try:
        with pytest.raises(StoreError, match="a backup is being restored"):
            Store(path).open()
    finally:
        lock.release()
    Store(path).open().close()


def test_bad_backups_are_refused_before_anything_changes(data_dir, tmp_path):
    path = make_store(data_dir, 400)
    before = path.read_bytes()
    damaged = tmp_path / "damaged.sqlite3"
    backups.backup(path, damaged)
    corrupt_middle_page(damaged)
    foreign = tmp_path / "foreign.sqlite3"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    text = tmp_path / "notes.sqlite3"
    text.write_text("not a database")
    with pytest.raises(CorruptDatabaseError, match="damaged.sqlite3: is damaged"):
        backups.restore(path, damaged)
    with pytest.raises(ForeignDatabaseError, match="foreign.sqlite3: is not a labconsole store"):
        backups.restore(path, foreign)
    with pytest.raises(CorruptDatabaseError, match="notes.sqlite3: is not a SQLite database"):
        backups.restore(path, text)
    with pytest.raises(StoreError, match="missing.sqlite3: does not exist"):
        backups.restore(path, tmp_path / "missing.sqlite3")
    assert path.read_bytes() == before
    assert not list(data_dir.glob("*.replaced-*")) and not list(data_dir.glob("*.restoring"))


# ---------------------------------------------------------------------- store check (command line)


def test_store_check_command(data_dir):
    path = make_store(data_dir, 400)
    ok = lc("store", "check", data_dir=data_dir)
    assert ok.returncode == 0 and ok.stdout.startswith(f"{path}: OK (integrity_check, foreign_key_check")
    damaged = corrupt_middle_page(path)
    bad = lc("store", "check", data_dir=data_dir)
    assert bad.returncode == 1, bad.stderr
    assert bad.stdout.startswith(f"{path}: damaged") and "labconsole store restore BACKUP" in bad.stdout
    assert "Traceback" not in bad.stderr
    assert path.read_bytes() == damaged
    missing = lc("store", "check", data_dir=data_dir / "elsewhere")
    assert missing.returncode == 2 and "there is no store here" in missing.stderr


# ---------------------------------------------------------------------- scheduled backups


def write_ini(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_settings_from_config_ini(tmp_path):
    assert backups.settings_from_ini(None).every is None
    ini = write_ini(tmp_path / "config.ini", "[DATA SERVICES]\nurl = http://127.0.0.1:8105\n")
    assert backups.settings_from_ini(ini).every is None
    ini = write_ini(tmp_path / "config.ini", "[STORE]\nbackup_every = 24h\nbackup_keep = 3\n")
    assert backups.settings_from_ini(ini) == backups.BackupSettings(86400.0, 3, str(ini))
    assert backups.settings_from_ini(write_ini(ini, "[store]\nbackup_every = off\n")).every is None
    commented = write_ini(ini, "[STORE]\nbackup_every = 6h   # four a day\nbackup_keep = 28 ; a week\n")
    assert backups.settings_from_ini(commented) == backups.BackupSettings(21600.0, 28, str(ini))
    with pytest.raises(ConfigError, match=r"config.ini:3: STORE.backup_every"):
        backups.settings_from_ini(write_ini(ini, "[DATA SERVICES]\n[STORE]\nbackup_every = daily\n"))
    with pytest.raises(ConfigError, match=r"config.ini:2: STORE.backup_every.*under a minute"):
        backups.settings_from_ini(write_ini(ini, "[STORE]\nbackup_every = 5s\n"))
    with pytest.raises(ConfigError, match=r"config.ini:3: STORE.backup_keep: backup_keep '0'"):
        backups.settings_from_ini(write_ini(ini, "[STORE]\nbackup_every = 1h\nbackup_keep = 0\n"))


def test_prune_keeps_the_newest_and_only_touches_backups(tmp_path):
    d = tmp_path / "backups"
    d.mkdir()
    names = [f"labconsole-202401{day:02d}-020000.sqlite3" for day in range(1, 10)]
    names.append("labconsole-20240109-020000-2.sqlite3")
    for name in names + ["keep-me.sqlite3", "labconsole-notes.txt"]:
        (d / name).write_text("x")
    removed = backups.prune(d, 3)
    assert [p.name for p in removed] == names[:7]
    assert sorted(p.name for p in d.iterdir()) == sorted(names[7:] + ["keep-me.sqlite3", "labconsole-notes.txt"])
    assert [p.name for p in backups.backups_in(d)] == names[7:]


def test_backup_if_due_makes_one_per_period_and_prunes(data_dir):
    path = make_store(data_dir)
    settings = backups.BackupSettings(every=3600.0, keep=2)
    t0 = time.mktime(datetime(2024, 6, 1, 8, 0, 0).timetuple())
    made = [backups.backup_if_due(path, settings, now=t0 + offset) for offset in (0, 60, 3599, 3600, 7300, 11000)]
    names = [m.path.name if m else None for m in made]
    assert names == ["labconsole-20240601-080000.sqlite3", None, None, "labconsole-20240601-090000.sqlite3",
                     "labconsole-20240601-100140.sqlite3", "labconsole-20240601-110320.sqlite3"]
    assert [p.name for p in backups.backups_in(data_dir / "backups")] == names[-2:]
    assert backups.seconds_until_due(path, 3600.0, now=t0 + 11000 + 100) == 3500.0
    assert backups.backup_if_due(path, backups.BackupSettings(every=None), now=t0 + 99999) is None


def test_console_runtime_makes_the_scheduled_backup(data_dir):
    (data_dir / "config.ini").write_text("[STORE]\nbackup_every = 24h\nbackup_keep = 7\n")
    make_store(data_dir)

    async def scenario() -> list:
        runtime = Runtime.build(data_dir, workcell=None)
        await runtime.start(templates_dir=None)
        try:
            scheduled = runtime.backups
            for _ in range(500):
                if scheduled.made:
                    break
                await asyncio.sleep(0.01)
            return list(scheduled.made)
        finally:
            await runtime.close()

    made = asyncio.run(scenario())
    assert len(made) == 1 and made[0].orders == 30
    assert backups.backups_in(data_dir / "backups") == [made[0].path]
