"""Backups of the store: made online, verified, restored, and made on a schedule.

* :func:`backup` copies the store with SQLite's backup API from a read-only connection, in one
  step, so the copy is one consistent snapshot even while the console keeps writing (WAL readers
  never block the writer). The copy is checked with ``PRAGMA integrity_check``, switched to a
  single self-contained file (journal mode DELETE) and only then given its name.
* :func:`restore` checks the backup first, refuses while any labconsole process has the store
  open (:class:`core.storefile.StoreLock`), and keeps the file it replaces (with its -wal and -shm)
  as ``<name>.replaced-<timestamp>``.
* :func:`backup_if_due` and :class:`ScheduledBackups` make a backup every ``backup_every`` and
  keep the newest ``backup_keep``, as set in config.ini::

      [STORE]
      backup_every = 24h
      backup_keep = 7

Backups are named ``labconsole-YYYYmmdd-HHMMSS.sqlite3`` (local time) in ``<data dir>/backups``;
pruning only ever deletes files with such names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from core.durations import DurationError, parse_duration
from core.errors import (
    ConfigError,
    CorruptDatabaseError,
    ForeignDatabaseError,
    LabconsoleError,
    SchemaTooNewError,
    StoreError,
)
from core.inifile import line_of, read_section
from core.store import APPLICATION_ID, SCHEMA_VERSION, SQLITE_HEADER
from core.storefile import StoreLock, connect_readonly, run_check

log = logging.getLogger(__name__)

BACKUP_DIRNAME = "backups"
STAMP_FORMAT = "%Y%m%d-%H%M%S"
_BACKUP_NAME = re.compile(r"^labconsole-(\d{8}-\d{6})(?:-(\d+))?\.sqlite3$")
CONFIG_SECTION = "STORE"
DEFAULT_KEEP = 7


@dataclass(frozen=True)
class BackupInfo:
    """A checked database file: where, its schema version, how many orders, how long it took."""

    path: Path
    schema_version: int
    orders: int
    size: int
    seconds: float = 0.0


# ---------------------------------------------------------------------- names


def backup_dir(db_path: Path) -> Path:
    return db_path.parent / BACKUP_DIRNAME


def backup_name(when: datetime) -> str:
    return f"labconsole-{when.strftime(STAMP_FORMAT)}.sqlite3"


def backups_in(directory: Path) -> list[Path]:
    """The backups of ``directory`` named as labconsole names them, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _BACKUP_NAME.match(p.name)
        if m and p.is_file():
            found.append((m.group(1), int(m.group(2) or 1), p))
    return [p for _, _, p in sorted(found)]


def backup_time(path: Path) -> float:
    """When a backup was made, from its name (local time), as epoch seconds."""
    m = _BACKUP_NAME.match(path.name)
    if m is None:
        raise ValueError(f"{path.name} is not named like a labconsole backup")
    return time.mktime(time.strptime(m.group(1), STAMP_FORMAT))


def _free_name(directory: Path, when: datetime) -> Path:
    path = directory / backup_name(when)
    n = 2
    while path.exists() or path.with_name(path.name + ".partial").exists():
        path = directory / f"labconsole-{when.strftime(STAMP_FORMAT)}-{n}.sqlite3"
        n += 1
    return path


# ---------------------------------------------------------------------- verify, backup, restore


def verify(path: Path) -> BackupInfo:
    """Check that ``path`` is a healthy labconsole store this version can open (full
    integrity_check); raise the store error that says what is wrong with it."""
    t0 = time.perf_counter()
    if not path.is_file():
        raise StoreError(path, "does not exist or is not a file")
    with open(path, "rb") as f:
        if f.read(16) != SQLITE_HEADER:
            raise CorruptDatabaseError(path, "is not a SQLite database (bad header)")
    try:
        conn = connect_readonly(path)
    except sqlite3.Error as exc:
        raise CorruptDatabaseError(path, f"cannot be opened: {exc}") from None
    try:
        result = run_check(conn, "integrity_check")
        if not result.ok:
            more = f" (and {len(result.problems) - 3} more)" if len(result.problems) > 3 else ""
            raise CorruptDatabaseError(path, f"is damaged: {'; '.join(result.problems[:3])}{more}")
        app_id, version = (conn.execute(f"PRAGMA {p}").fetchone()[0]
                           for p in ("application_id", "user_version"))
        if app_id != APPLICATION_ID:
            raise ForeignDatabaseError(path, f"is not a labconsole store (application_id={app_id})")
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(path, f"has schema version {version}, newer than this "
                                    f"labconsole understands ({SCHEMA_VERSION})")
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise CorruptDatabaseError(path, f"is damaged: {exc}") from None
    finally:
        conn.close()
    return BackupInfo(path, version, orders, path.stat().st_size, time.perf_counter() - t0)


def _copy(source: Path, dest: Path) -> None:
    """A consistent copy of ``source`` (with what its WAL holds) written to ``dest``, fsynced."""
    try:
        src = connect_readonly(source)
    except sqlite3.Error as exc:
        raise StoreError(source, f"cannot be opened for a backup: {exc}") from None
    try:
        dst = sqlite3.connect(dest, isolation_level=None)
        try:
            src.backup(dst)  # pages=-1: one step inside one read transaction, never restarted
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
    except sqlite3.DatabaseError as exc:
        dest.unlink(missing_ok=True)
        raise CorruptDatabaseError(source, f"cannot be copied: {exc}; run `labconsole store check`") from None
    except OSError as exc:
        dest.unlink(missing_ok=True)
        raise StoreError(dest, f"cannot be written: {exc.strerror}") from None
    finally:
        src.close()
    _fsync(dest)


def backup(db_path: Path, dest: Path | None = None, *, now: datetime | None = None) -> BackupInfo:
    """Copy the store at ``db_path`` to ``dest`` (default: ``backups/labconsole-<time>.sqlite3``
    beside it; a directory: that name inside it) and verify the copy. Never overwrites a file."""
    if not db_path.is_file():
        raise StoreError(db_path, "there is no store to back up here")
    when = now or datetime.now()
    if dest is None:
        dest = _free_name(backup_dir(db_path), when)
    elif dest.is_dir():
        dest = _free_name(dest, when)
    elif dest.exists():
        raise StoreError(dest, "exists already; give a new file name or a directory")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(dest, f"cannot create its directory: {exc.strerror}") from None
    t0 = time.perf_counter()
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    _copy(db_path, partial)
    try:
        info = verify(partial)
    except StoreError as exc:
        partial.unlink(missing_ok=True)
        raise CorruptDatabaseError(db_path, f"its backup copy failed the check ({exc}); the store "
                                   "itself may be damaged: run `labconsole store check`") from None
    os.replace(partial, dest)
    _fsync_dir(dest.parent)
    return BackupInfo(dest, info.schema_version, info.orders, info.size, time.perf_counter() - t0)


@dataclass(frozen=True)
class RestoreResult:
    restored: BackupInfo
    replaced: Path | None
    """Where the file that was replaced now is (None if there was none)."""


def restore(db_path: Path, backup_path: Path, *, now: datetime | None = None) -> RestoreResult:
    """Put the backup at ``backup_path`` in place of the store at ``db_path``.

    Checked first (full integrity_check); refused while any labconsole process has the store open.
    The replaced file and its -wal/-shm are kept as ``<name>.replaced-<timestamp>[-wal|-shm]``.
    """
    info = verify(backup_path)
    if db_path.is_dir():
        raise StoreError(db_path, "is a directory; move it away first")
    db_path.parent.mkdir(parents=True, exist_ok=True)
    lock = StoreLock(db_path)
    lock.acquire_exclusive()
    try:
        incoming = db_path.with_name(db_path.name + ".restoring")
        incoming.unlink(missing_ok=True)
        _copy(backup_path, incoming)  # first the copy: a failure here leaves the store as it was
        replaced = None
        if db_path.exists():
            stamp = (now or datetime.now()).strftime(STAMP_FORMAT)
            replaced = db_path.with_name(f"{db_path.name}.replaced-{stamp}")
            n = 2
            while replaced.exists():
                replaced = db_path.with_name(f"{db_path.name}.replaced-{stamp}-{n}")
                n += 1
            for suffix in ("-wal", "-shm", ""):  # the WAL belongs to the replaced file: it goes along
                part = Path(f"{db_path}{suffix}")
                if part.exists():
                    os.replace(part, Path(f"{replaced}{suffix}"))
        for suffix in ("-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        os.replace(incoming, db_path)
        _fsync_dir(db_path.parent)
    finally:
        lock.release()
    return RestoreResult(info, replaced)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        _fsync(path)


# ---------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class BackupSettings:
    """``every``: seconds between scheduled backups (None: none); ``keep``: newest kept."""

    every: float | None = None
    keep: int = DEFAULT_KEEP
    source: str = "default"


def settings_from_ini(path: Path | None) -> BackupSettings:
    """``[STORE] backup_every`` and ``backup_keep`` of a config.ini (absent: no scheduled backups)."""
    found = read_section(path, CONFIG_SECTION)
    if found is None:
        return BackupSettings()
    section, text = found
    every: float | None = None
    keep = DEFAULT_KEEP
    raw = section.get("backup_every", fallback="").strip()
    if raw and raw.lower() not in ("0", "off", "never", "no"):
        try:
            every = parse_duration(raw)
        except DurationError as exc:
            raise ConfigError.at(str(exc), file=path, field=f"{CONFIG_SECTION}.backup_every",
                                 line=line_of(text, CONFIG_SECTION, "backup_every")) from None
        if every < 60:
            raise ConfigError.at(f"backup_every {raw!r} is under a minute; give e.g. 24h or 6h",
                                 file=path, field=f"{CONFIG_SECTION}.backup_every",
                                 line=line_of(text, CONFIG_SECTION, "backup_every"))
    raw_keep = section.get("backup_keep", fallback="").strip()
    if raw_keep:
        if not raw_keep.isdigit() or int(raw_keep) < 1:
            raise ConfigError.at(f"backup_keep {raw_keep!r} is not a whole number of at least 1",
                                 file=path, field=f"{CONFIG_SECTION}.backup_keep",
                                 line=line_of(text, CONFIG_SECTION, "backup_keep"))
        keep = int(raw_keep)
    return BackupSettings(every, keep, str(path))


def find_config(data_dir: Path, config: Path | None = None) -> Path | None:
    """``config`` if given, else ./config.ini, else config.ini in the data dir (as the console)."""
    if config is not None:
        return config
    for candidate in (Path.cwd() / "config.ini", data_dir / "config.ini"):
        if candidate.is_file():
            return candidate
    return None


def prune(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups of ``directory``; return what was deleted."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    old = backups_in(directory)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def seconds_until_due(db_path: Path, every: float, *, now: float | None = None) -> float:
    """0 if a backup is due now, else how long until it is (from the newest backup's name)."""
    existing = backups_in(backup_dir(db_path))
    if not existing:
        return 0.0
    now = time.time() if now is None else now
    return max(0.0, backup_time(existing[-1]) + every - now)


def backup_if_due(db_path: Path, settings: BackupSettings, *, now: float | None = None) -> BackupInfo | None:
    """Make a backup if the newest is ``settings.every`` old or more, then prune; else None."""
    if settings.every is None or seconds_until_due(db_path, settings.every, now=now) > 0:
        return None
    when = datetime.fromtimestamp(time.time() if now is None else now)
    info = backup(db_path, now=when)
    removed = prune(backup_dir(db_path), settings.keep)
    log.info("%s: backup %s (%d orders, %.1f MB, %.1f s)%s", db_path, info.path.name, info.orders,
             info.size / 1e6, info.seconds, f"; removed {len(removed)} old" if removed else "")
    return info


class ScheduledBackups:
    """Makes :func:`backup_if_due` happen on time in the background (the copy runs on a thread)."""

    RETRY_SECONDS = 900.0

    def __init__(self, db_path: Path, settings: BackupSettings) -> None:
        self.db_path, self.settings = db_path, settings
        self.made: list[BackupInfo] = []
        self.last_error: LabconsoleError | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, db_path: Path, config: Path | None = None) -> ScheduledBackups | None:
        settings = settings_from_ini(find_config(db_path.parent, config))
        return cls(db_path, settings) if settings.every is not None else None

    def start(self) -> ScheduledBackups:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduled-backups")
        return self

    async def _run(self) -> None:
        every = self.settings.every
        assert every is not None
        while True:
            try:
                info = await asyncio.to_thread(backup_if_due, self.db_path, self.settings)
                if info is not None:
                    self.made.append(info)
                wait = await asyncio.to_thread(seconds_until_due, self.db_path, every)
                self.last_error = None
            except LabconsoleError as exc:
                self.last_error = exc
                log.error("scheduled backup failed: %s", exc)
                wait = min(every, self.RETRY_SECONDS)
            await asyncio.sleep(max(wait, 1.0))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


__all__ = ["BackupInfo", "BackupSettings", "RestoreResult", "ScheduledBackups", "backup",
           "backup_if_due", "backups_in", "find_config", "prune", "restore", "seconds_until_due",
           "settings_from_ini", "verify"]
