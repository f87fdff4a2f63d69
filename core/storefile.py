"""The store file itself: integrity checks and the lock that says whether it is in use.

Checks. :func:`run_check` runs ``PRAGMA quick_check`` or ``PRAGMA integrity_check`` and returns
every problem SQLite reports, one line each. A time budget stops a long check (``sqlite3_interrupt``
from a timer, and a progress handler); the result then says it is partial. Opening the store runs the quick check with a 2 s
budget (a 100,000-order store takes about 0.25 s); ``labconsole store check`` runs the full
:func:`full_check` (integrity_check and foreign_key_check) without one.

SQLite keeps no checksums of page contents: damage to the b-tree structure (zeroed, truncated or
scrambled pages, a broken header, a broken freelist) is found, a changed byte inside a stored
value is not.

The lock. Every process that opens the store holds a shared ``flock`` on ``<store>.lock`` for as
long as it has the store open; the kernel drops it when the process exits, even on SIGKILL.
Restoring a backup takes the lock exclusively, so it is refused while the console or a command
has the store open, and nothing opens the store while a restore replaces it. (POSIX only:
without ``flock`` (Windows) the lock file is created but nothing is locked.)
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import StoreError

try:
    import fcntl
except ImportError:  # Windows: no flock, so restore cannot tell whether the store is open
    fcntl = None  # type: ignore[assignment]

CHECKS = ("quick_check", "integrity_check")
MAX_ERRORS = 100
"""At most this many problems are listed by one check (SQLite's own default)."""
_PROGRESS_STEPS = 20_000
"""SQLite virtual machine steps between two looks at the clock during a check (~1 ms)."""


@dataclass(frozen=True)
class CheckResult:
    """What a check found. ``complete`` is False if it stopped at its time budget."""

    check: str
    problems: list[str] = field(default_factory=list)
    complete: bool = True
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def run_check(conn: sqlite3.Connection, check: str = "quick_check", *, budget: float | None = None,
              max_errors: int = MAX_ERRORS) -> CheckResult:
    """Run ``PRAGMA quick_check`` or ``integrity_check`` on ``conn``; stop after ``budget`` seconds.

    A file so damaged that SQLite gives up reading it counts as one problem (its error message).
    """
    if check not in CHECKS:
        raise ValueError(f"check must be one of {', '.join(CHECKS)}, not {check!r}")
    t0 = time.perf_counter()
    timer = None
    if budget is not None:
        # The walk over the b-trees is one virtual machine step that no progress handler
        # interrupts (0.2 s of 0.3 s on a 160 MB store); sqlite3_interrupt from a timer does.
        deadline = time.monotonic() + budget
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        timer = threading.Timer(budget, conn.interrupt)
        timer.daemon = True
        timer.start()
    try:
        rows = conn.execute(f"PRAGMA {check}({int(max_errors)})").fetchall()
    except sqlite3.OperationalError as exc:
        if budget is not None and getattr(exc, "sqlite_errorname", "") == "SQLITE_INTERRUPT":
            return CheckResult(check, [], False, time.perf_counter() - t0)
        return CheckResult(check, [_describe(exc)], True, time.perf_counter() - t0)
    except sqlite3.DatabaseError as exc:
        return CheckResult(check, [_describe(exc)], True, time.perf_counter() - t0)
    finally:
        if timer is not None:
            timer.cancel()
            timer.join()
            conn.set_progress_handler(None, 0)
    lines = (line.strip() for row in rows for line in str(row[0]).splitlines())
    problems = [line for line in lines if line and line != "ok" and not line.startswith("*** in database")]
    return CheckResult(check, problems, True, time.perf_counter() - t0)


def foreign_key_problems(conn: sqlite3.Connection) -> list[str]:
    """Rows whose foreign keys point at nothing (``PRAGMA foreign_key_check``)."""
    try:
        rows = conn.execute("PRAGMA foreign_key_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return [_describe(exc)]
    return [f"{table} row {rowid}: refers to a missing row of {parent} (foreign key {fk})"
            for table, rowid, parent, fk in rows]


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to ``path`` (which must exist); it never creates or changes the file."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                           check_same_thread=False)


def full_check(path: Path) -> CheckResult:
    """``integrity_check`` and ``foreign_key_check`` of the file at ``path``, read-only, no budget."""
    t0 = time.perf_counter()
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise StoreError(path, f"cannot be read: {exc.strerror}") from None
    if header != b"SQLite format 3\x00":
        return CheckResult("integrity_check", ["not a SQLite database (bad header)"])
    try:
        conn = connect_readonly(path)
    except sqlite3.Error as exc:
        return CheckResult("integrity_check", [_describe(exc)])
    try:
        result = run_check(conn, "integrity_check")
        fk = foreign_key_problems(conn) if result.ok else []
    finally:
        conn.close()
    return CheckResult("integrity_check", result.problems + fk, True, time.perf_counter() - t0)


def is_corruption(exc: sqlite3.Error) -> bool:
    """True if SQLite says the file is damaged or not a database (not: locked, no permission...)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "malformed" in str(exc) or "not a database" in str(exc)
    return code & 0xFF in (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB


def _describe(exc: sqlite3.Error) -> str:
    return str(exc) or type(exc).__name__


class StoreLock:
    """The advisory lock on ``<store>.lock``: shared while the store is open, exclusive to restore."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire_shared(self) -> None:
        """Refuses (StoreError) only while a restore holds the lock exclusively."""
        if not self._lock(exclusive=False):
            self.release()
            raise StoreError(self.db_path, "a backup is being restored over this store; "
                             "open it again when `labconsole store restore` has finished")

    def acquire_exclusive(self) -> None:
        """Refuses (StoreError) while any process has the store open."""
        if not self._lock(exclusive=True):
            self.release()
            raise StoreError(self.db_path, "is open in a running labconsole (the console or a "
                             "command); close it first")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def _lock(self, *, exclusive: bool) -> bool:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(self.db_path, f"cannot create its lock file {self.path}: "
                                 f"{exc.strerror}") from None
        if fcntl is None:
            return True
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


__all__ = ["CheckResult", "StoreLock", "connect_readonly", "foreign_key_problems", "full_check",
           "is_corruption", "run_check"]
