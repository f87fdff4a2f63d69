"""Archive: finished orders move out of the store into ``labconsole-archive.sqlite3`` next to it.

What moves. A *family* at a time: an order with every order whose ``source_id`` is its id (a
workflow run and all its steps), their transitions, and the run's ``runs`` and ``step_runs`` rows.
A family moves only when every order in it is finished (:data:`FINISHED_STATUSES`), finished
before the cut-off, and its run (if it is one) has reached a final state — never half a run.
The audit log stays in the store, so its chain is untouched.

How it moves, online. In batches of about :attr:`Archiver.batch_orders` orders:

1. On the archive's own connection (the store attached read-only as ``live``), one transaction
   of the archive file: copy the batch's rows and note their ids in ``pending``. The store is
   not written.
2. Through the store's writer (``store.write``), one transaction of the store: check that no
   family changed since it was copied (same orders, same ``updated``), delete what was copied and
   add the count to the store's ``meta`` (``archive.orders``). This commit is the moment the
   orders move; the console's writer is busy for one small batch only, and the event loop never
   waits on it.
3. The next batch's transaction (or the closing one) settles ``pending``: an id still in the store
   (a batch whose step 2 never ran or refused a family) has its archive copy removed.

The store is authoritative: until step 2 commits, an order is in the store, and its copy in the
archive is only pending — :mod:`core.history` hides archive rows whose id is still in the store,
and the next run removes them. So a run killed at any point (even ``kill -9``) leaves every
order in exactly one place, every run whole. Two archive runs at once are refused (a lock file).

Policy. ``[STORE] archive_after = 90d`` in config.ini: :class:`ArchivePolicy` archives what
finished more than that long ago; the runtime calls :meth:`ArchivePolicy.run_due` on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from core.durations import DurationError, parse_duration
from core.errors import ConfigError, StoreError
from core.inifile import line_of, read_section
from core.orders import OrderStatus
from core.states import RUN_FINAL
from core.store import MIGRATIONS, SQLITE_HEADER, Store, _split_sql
from core.storefile import is_corruption

try:
    import fcntl
except ImportError:  # Windows: no flock; two archive runs at once are not prevented there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
T = TypeVar("T")

ARCHIVE_FILENAME = "labconsole-archive.sqlite3"
ARCHIVE_APPLICATION_ID = 0x4C435341  # "LCSA": a labconsole archive, refused as a store
ARCHIVE_KIND = "labconsole-archive"
META_ARCHIVED = "archive.orders"
"""Key in the store's ``meta`` table: how many orders have been moved to the archive."""
TABLES = ("orders", "transitions", "runs", "step_runs")
"""The tables whose rows move; each row belongs to one order (``ORDER_KEY``)."""
ORDER_KEY = {"orders": "id", "transitions": "order_id", "runs": "run_id", "step_runs": "order_id"}
FINISHED_STATUSES = frozenset({OrderStatus.Invalid, OrderStatus.Error, OrderStatus.Complete,
                               OrderStatus.Canceled, OrderStatus.Consolidated})
"""An order in one of these is finished: it leaves the live window after a while and may be
archived. (``Error`` counts: an operator may still retry it, but not after it aged out.)"""
_FINISHED_SQL = ", ".join(str(int(s)) for s in sorted(FINISHED_STATUSES))
CONFIG_KEY = "archive_after"
ARCHIVE_SKIPS_INDEXES = frozenset({"orders_by_status", "orders_by_parent", "orders_by_template",
                                   "orders_by_assigned", "orders_unended", "runs_by_status",
                                   "runs_by_template", "runs_by_priority", "runs_by_created",
                                   "runs_by_dedup", "step_runs_by_status"})
"""Store indexes for the live work that the archive does without (its search uses the rest)."""
ARCHIVE_TEXT_TRIGGERS = {
    statement.split()[5]: statement for statement in _split_sql(next(m for m in MIGRATIONS if "orders_fts" in m))
    if statement.startswith("CREATE TRIGGER IF NOT EXISTS orders_fts_")}
"""The archive keeps its text index current in the write itself (the triggers of migration 9):
it is written in bulk by the mover only, and has no writer that would catch up later (the
store's own triggers defer that work, see migration 14)."""
DAY = 86400.0


def archive_path(store_path: str | os.PathLike[str]) -> Path:
    """Where the archive of the store at ``store_path`` lives: next to it."""
    return Path(store_path).with_name(ARCHIVE_FILENAME)


@dataclass
class ArchiveResult:
    """What one archive run did."""

    path: Path
    before: float
    orders: int = 0
    transitions: int = 0
    runs: int = 0
    families: int = 0
    skipped: int = 0
    """Families left in the store: not all finished before the cut-off, or changed meanwhile."""
    batches: int = 0
    settled: int = 0
    """Pending copies of an earlier, interrupted run that were removed from the archive."""
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)
    """Time the store's writer spent on each batch's delete."""

    def summary(self) -> str:
        worst = max(self.batch_seconds, default=0.0) * 1000
        return (f"{self.orders} orders ({self.families} runs or single orders, {self.transitions} "
                f"transitions) moved to {self.path} in {self.batches} batches, {self.seconds:.1f} s; "
                f"{self.skipped} left in the store (unfinished or changed); the store's writer was "
                f"held at most {worst:.0f} ms per batch")


@dataclass(frozen=True)
class _Family:
    key: str
    ids: tuple[str, ...]
    count: int
    updated: float


# ---------------------------------------------------------------------- the archive file


class ArchiveFile:
    """The archive database, opened for writing by one archive run at a time."""

    def __init__(self, store_path: Path, path: Path | None = None) -> None:
        self.store_path = Path(store_path)
        self.path = Path(path) if path is not None else archive_path(store_path)
        self._lock_fd: int | None = None
        self.conn: sqlite3.Connection | None = None

    def open(self) -> sqlite3.Connection:
        """Lock, open (creating it if missing), check, attach the store as ``live``, sync schema."""
        self._lock()
        try:
            self.conn = self._connect()
            self._ensure_schema(self.conn)
        except BaseException:
            self.close()
            raise
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(self.path, f"cannot create its lock file {lock_path}: {exc.strerror}") from None
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise StoreError(self.path, "another archive run is moving orders into it; "
                                 "wait until it has finished") from None

    def _connect(self) -> sqlite3.Connection:
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as f:
                if f.read(16) != SQLITE_HEADER:
                    raise StoreError(self.path, "is not a SQLite database (bad header); the "
                                     "archive was left untouched — move it away to start a new one")
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id != ARCHIVE_APPLICATION_ID and (app_id != 0 or tables):
                conn.close()
                raise StoreError(self.path, f"is not a labconsole archive (application_id={app_id}); "
                                 "it was left untouched — move it away")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA application_id = {ARCHIVE_APPLICATION_ID}")
            conn.execute("ATTACH DATABASE ? AS live", (f"{self.store_path.resolve().as_uri()}?mode=ro",))
        except sqlite3.DatabaseError as exc:
            what = "is damaged" if is_corruption(exc) else "cannot be opened"
            raise StoreError(self.path, f"{what}: {exc}; the archive was left untouched — move it "
                             "away to start a new one (its orders are then no longer searchable)") from None
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        """The archive's tables, indexes, FTS index and triggers follow the store's own."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS main.archive_meta (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS main.pending (id TEXT PRIMARY KEY)")
            conn.execute("INSERT OR IGNORE INTO main.archive_meta VALUES ('kind', ?)", (ARCHIVE_KIND,))
            conn.execute("INSERT OR IGNORE INTO main.archive_meta VALUES ('created', ?)", (str(time.time()),))
            have = {r[0] for r in conn.execute("SELECT name FROM main.sqlite_master")}
            wanted = conn.execute(
                "SELECT type, name, tbl_name, sql FROM live.sqlite_master WHERE sql IS NOT NULL AND ("
                f"(type IN ('table', 'index', 'trigger') AND tbl_name IN ({_marks(TABLES)})) "
                "OR name = 'orders_fts') ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 "
                "ELSE 2 END", TABLES).fetchall()
            for kind, name, table, sql in wanted:
                if kind == "index" and name in ARCHIVE_SKIPS_INDEXES:
                    continue
                if name not in have:
                    conn.execute(ARCHIVE_TEXT_TRIGGERS.get(name, sql) if kind == "trigger" else sql)
                elif kind == "table" and name in TABLES:
                    self._add_columns(conn, table)
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            conn.execute("ROLLBACK")
            raise StoreError(self.path, f"cannot prepare the archive: {exc}") from None

    @staticmethod
    def _add_columns(conn: sqlite3.Connection, table: str) -> None:
        mine = {r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")}
        for _cid, name, ctype, _notnull, default, _pk in conn.execute(f"PRAGMA live.table_info({table})").fetchall():
            if name not in mine:
                extra = f" DEFAULT {default}" if default is not None else ""
                conn.execute(f'ALTER TABLE main.{table} ADD COLUMN "{name}" {ctype}{extra}')


# ---------------------------------------------------------------------- the mover


class Archiver:
    """Moves finished orders older than a cut-off from ``store`` into its archive file."""

    def __init__(self, store: Store, path: Path | None = None, *, batch_orders: int = 500) -> None:
        if batch_orders < 1:
            raise ValueError("batch_orders must be at least 1")
        self.store = store
        self.file = ArchiveFile(store.path, path)
        self.batch_orders = batch_orders
        self.stop_after_batches: int | None = None
        """Stop after this many batches (None: run until nothing is left)."""
        self._columns: dict[str, str] = {}

    @property
    def path(self) -> Path:
        return self.file.path

    # -- the steps, each synchronous; :meth:`run_sync` and :meth:`run` drive them

    def _open(self) -> sqlite3.Connection:
        conn = self.file.open()
        for table in TABLES:
            cols = [r[1] for r in conn.execute(f"PRAGMA live.table_info({table})")]
            self._columns[table] = ", ".join(f'"{c}"' for c in cols)
        return conn

    def _settle(self, conn: sqlite3.Connection) -> int:
        """Remove archive copies whose orders are still in the store; clear ``pending``. In a transaction."""
        stale = [r[0] for r in conn.execute(
            "SELECT p.id FROM main.pending p WHERE EXISTS (SELECT 1 FROM live.orders o WHERE o.id = p.id)")]
        if stale:
            ids = json.dumps(stale)
            for table in TABLES:
                conn.execute(f"DELETE FROM main.{table} WHERE {ORDER_KEY[table]} IN "
                             "(SELECT value FROM json_each(?))", (ids,))
        conn.execute("DELETE FROM main.pending")
        return len(stale)

    def _copy_batch(self, conn: sqlite3.Connection, before: float,
                    cursor: tuple[float, int], seen: set[str],
                    result: ArchiveResult) -> tuple[list[_Family], tuple[float, int] | None]:
        """One archive transaction: settle, pick families, copy them. Returns them and the next cursor."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            result.settled += self._settle(conn)
            families: list[_Family] = []
            size = 0
            next_cursor: tuple[float, int] | None = cursor
            while size < self.batch_orders and next_cursor is not None:
                rows = conn.execute(
                    "SELECT ended, rowid, coalesce(source_id, id) FROM live.orders "
                    "INDEXED BY orders_by_ended WHERE ended < ? AND (ended, rowid) > (?, ?) "
                    f"AND status IN ({_FINISHED_SQL}) ORDER BY ended, rowid LIMIT ?",
                    (before, cursor[0], cursor[1], self.batch_orders)).fetchall()
                if not rows:
                    next_cursor = None
                    break
                for ended, rowid, key in rows:
                    cursor = (ended, rowid)
                    if key in seen:
                        continue
                    seen.add(key)
                    family = self._family(conn, key, before)
                    if family is None:
                        result.skipped += 1
                        continue
                    families.append(family)
                    size += family.count
                    if size >= self.batch_orders:
                        break
                next_cursor = cursor
            if families:
                ids = json.dumps([i for f in families for i in f.ids])
                for table in TABLES:
                    cols = self._columns[table]
                    conn.execute(f"INSERT OR REPLACE INTO main.{table} ({cols}) SELECT {cols} "
                                 f"FROM live.{table} WHERE {ORDER_KEY[table]} IN "
                                 "(SELECT value FROM json_each(?))", (ids,))
                conn.execute("INSERT OR IGNORE INTO main.pending (id) SELECT value FROM json_each(?)", (ids,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return families, next_cursor

    @staticmethod
    def _family(conn: sqlite3.Connection, key: str, before: float) -> _Family | None:
        members = conn.execute(
            "SELECT id, status, coalesce(ended, created), updated FROM live.orders "
            "WHERE id = ? OR source_id = ?", (key, key)).fetchall()
        if not members:
            return None
        for _id, status, finished, _updated in members:
            if status not in _FINISHED_INTS or finished is None or finished >= before:
                return None
        run = conn.execute("SELECT status FROM live.runs WHERE run_id = ?", (key,)).fetchone()
        if run is not None and run[0] not in _RUN_FINAL_VALUES:
            return None
        return _Family(key, tuple(m[0] for m in members), len(members), max(m[3] for m in members))

    def _delete_op(self, families: list[_Family]) -> Callable[[sqlite3.Connection], tuple[int, int, int, int]]:
        """The store write: delete the families that did not change since they were copied."""

        def op(conn: sqlite3.Connection) -> tuple[int, int, int, int]:
            ids: list[str] = []
            stale = 0
            for f in families:
                now = conn.execute("SELECT count(*), max(updated) FROM orders WHERE id = ? OR source_id = ?",
                                   (f.key, f.key)).fetchone()
                if now[0] != f.count or now[1] != f.updated:
                    stale += 1
                    continue
                ids.extend(f.ids)
            if not ids:
                return 0, 0, 0, stale
            packed = json.dumps(ids)
            counts = {}
            for table in ("transitions", "step_runs", "runs", "orders"):
                cur = conn.execute(f"DELETE FROM {table} WHERE {ORDER_KEY[table]} IN "
                                   "(SELECT value FROM json_each(?))", (packed,))
                counts[table] = cur.rowcount
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                         "SET value = CAST(value AS INTEGER) + excluded.value",
                         (META_ARCHIVED, counts["orders"]))
            return counts["orders"], counts["transitions"], counts["runs"], stale

        return op

    def _account(self, result: ArchiveResult, families: list[_Family], done: tuple[int, int, int, int],
                 seconds: float) -> None:
        orders, transitions, runs, stale = done
        result.orders += orders
        result.transitions += transitions
        result.runs += runs
        result.families += len(families) - stale
        result.skipped += stale
        result.batches += 1
        result.batch_seconds.append(seconds)

    def _finish(self, conn: sqlite3.Connection, result: ArchiveResult) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result.settled += self._settle(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- drivers

    def run_sync(self, before: float, *, progress: Callable[[ArchiveResult], None] | None = None) -> ArchiveResult:
        """Archive everything finished before ``before`` (epoch seconds), blocking (CLI, scripts)."""
        result = ArchiveResult(self.path, before)
        t0 = time.perf_counter()
        conn = self._open()
        try:
            cursor: tuple[float, int] | None = (float("-inf"), 0)
            seen: set[str] = set()
            while cursor is not None:
                families, cursor = self._copy_batch(conn, before, cursor, seen, result)
                if families:
                    t1 = time.perf_counter()
                    done = self.store.write_sync(self._delete_op(families))
                    self._account(result, families, done, time.perf_counter() - t1)
                    if progress is not None:
                        progress(result)
                if self.stop_after_batches is not None and result.batches >= self.stop_after_batches:
                    break
            self._finish(conn, result)
        finally:
            self.file.close()
        result.seconds = time.perf_counter() - t0
        return result

    async def run(self, before: float, *, pause: float = 0.0) -> ArchiveResult:
        """:meth:`run_sync` for a running console: archive-file work on a worker thread, the
        store's delete through ``await store.write``; the event loop never blocks. ``pause``:
        seconds to wait between batches (leaves the writer to the live stream)."""
        result = ArchiveResult(self.path, before)
        t0 = time.perf_counter()
        conn = await _in_thread(self._open)
        try:
            cursor: tuple[float, int] | None = (float("-inf"), 0)
            seen: set[str] = set()
            while cursor is not None:
                families, cursor = await _in_thread(self._copy_batch, conn, before, cursor, seen, result)
                if families:
                    t1 = time.perf_counter()
                    done = await self.store.write(self._delete_op(families))
                    self._account(result, families, done, time.perf_counter() - t1)
                if self.stop_after_batches is not None and result.batches >= self.stop_after_batches:
                    break
                if pause:
                    await asyncio.sleep(pause)
            await _in_thread(self._finish, conn, result)
        finally:
            await _in_thread(self.file.close)
        result.seconds = time.perf_counter() - t0
        return result


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a worker thread. If the caller is cancelled meanwhile, the thread's work
    still finishes before the cancellation goes on (it holds the archive's connection)."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wait({future})
        raise


_FINISHED_INTS = frozenset(int(s) for s in FINISHED_STATUSES)
_RUN_FINAL_VALUES = frozenset(s.value for s in RUN_FINAL)


def _marks(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


# ---------------------------------------------------------------------- policy


@dataclass(frozen=True)
class ArchivePolicy:
    """Archive what finished more than ``after`` seconds ago (``[STORE] archive_after``)."""

    after: float
    source: str = "default"
    every: float = 3600.0
    """How often the runtime should call :meth:`run_due` (seconds)."""

    @classmethod
    def from_ini(cls, path: Path | None) -> ArchivePolicy | None:
        """The policy of a config.ini (``[STORE] archive_after = 90d``); None: no automatic archive."""
        found = read_section(path, "STORE")
        if found is None:
            return None
        section, text = found
        raw = section.get(CONFIG_KEY, fallback="").strip()
        if not raw or raw.lower() in ("0", "off", "never", "no"):
            return None
        line = line_of(text, "STORE", CONFIG_KEY)
        try:
            after = parse_duration(raw)
        except DurationError as exc:
            raise ConfigError.at(str(exc), file=path, field=f"STORE.{CONFIG_KEY}", line=line) from None
        if after < DAY:
            raise ConfigError.at(f"{CONFIG_KEY} {raw!r} is under a day; give e.g. 90d or 30d",
                                 file=path, field=f"STORE.{CONFIG_KEY}", line=line)
        return cls(after, str(path))

    def cutoff(self, now: float) -> float:
        return now - self.after

    async def run_due(self, store: Store, *, now: float | None = None) -> ArchiveResult:
        """Archive, online, every family that finished more than :attr:`after` ago."""
        moment = time.time() if now is None else now
        result = await Archiver(store).run(self.cutoff(moment))
        if result.orders:
            log.info("archive: %s", result.summary())
        return result


class ScheduledArchive:
    """Runs :meth:`ArchivePolicy.run_due` in the background: first ``first_delay`` seconds after
    :meth:`start` (so start-up is not slowed), then every :attr:`ArchivePolicy.every`."""

    def __init__(self, store: Store, policy: ArchivePolicy, *, first_delay: float = 300.0) -> None:
        self.store, self.policy, self.first_delay = store, policy, first_delay
        self.results: list[ArchiveResult] = []
        self.last_error: Exception | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, store: Store, config: Path | None = None, **kwargs: Any) -> ScheduledArchive | None:
        """From ``[STORE] archive_after`` of the console's config.ini; None if it is not set."""
        from core.backup import find_config

        policy = ArchivePolicy.from_ini(find_config(store.path.parent, config))
        return cls(store, policy, **kwargs) if policy is not None else None

    def start(self) -> ScheduledArchive:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduled-archive")
        return self

    async def _run(self) -> None:
        await asyncio.sleep(self.first_delay)
        while True:
            try:
                self.results.append(await self.policy.run_due(self.store))
                self.last_error = None
            except (StoreError, sqlite3.Error) as exc:
                self.last_error = exc
                log.error("scheduled archive failed: %s", exc)
            await asyncio.sleep(self.policy.every)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def parse_before(text: str, *, now: float | None = None, field: str = "--before") -> float:
    """The cut-off of ``--before``: a date (``2026-08-01``, local midnight), a date and time
    (``2026-08-01T12:00``, local unless it names its zone) or an age (``90d``: that long ago)."""
    raw = text.strip()
    moment = time.time() if now is None else now
    if raw and raw[0].isdigit() and not raw.replace(".", "", 1).isdigit() and "-" not in raw and ":" not in raw:
        try:
            return moment - parse_duration(raw)
        except DurationError:
            pass
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError.at(f"{text!r} is not a date (2026-08-01), a date and time "
                             "(2026-08-01T12:00) or an age (90d)", field=field) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as a person writes it
    cutoff = when.timestamp()
    if cutoff > moment:
        raise ConfigError.at(f"{text!r} is in the future; only finished orders can be archived",
                             field=field)
    return cutoff


__all__ = ["ARCHIVE_FILENAME", "FINISHED_STATUSES", "ArchiveFile", "ArchivePolicy", "ArchiveResult",
           "Archiver", "ScheduledArchive", "archive_path", "parse_before"]
