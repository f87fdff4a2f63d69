"""The durable store: one SQLite file in WAL mode, written by one writer thread.

Why a writer thread: a ``synchronous=FULL`` commit costs 0.2 ms or more (an fsync), which must not
run on the event loop. Callers ``await store.write(fn)``; ``fn(conn)`` runs on the writer thread.
Everything queued while a commit is in flight shares the next transaction (group commit), each
operation in its own SAVEPOINT so a failing one rolls back alone. The awaiting coroutines resume
only after COMMIT returned, so "committed before published" holds for whoever publishes after
``await``.

Reads use their own connections (WAL readers never block the writer), on a small thread pool for
``await store.read(fn)`` or on the calling thread for ``read_sync``.

The schema is versioned with ``PRAGMA user_version`` and forward migrations (:data:`MIGRATIONS`).
The file carries ``PRAGMA application_id`` so a database of another program is recognised and
refused. A damaged, foreign or newer file gives a clear error naming it and is never overwritten.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import platformdirs

from core import audit_chain
from core.errors import (
    ConfigError,
    CorruptDatabaseError,
    ForeignDatabaseError,
    IllegalTransitionError,
    OrderNotFoundError,
    SchemaTooNewError,
    StoreError,
)
from core.orders import Order, OrderPriority, OrderStatus
from core.storefile import StoreLock, is_corruption, run_check
from core.wire import format_datetime, now_utc, parse_datetime

log = logging.getLogger(__name__)
T = TypeVar("T")

APPLICATION_ID = 0x4C43534C  # "LCSL"
DB_FILENAME = "labconsole.sqlite3"
DATA_DIR_ENV = "LABCONSOLE_DATA_DIR"
SQLITE_HEADER = b"SQLite format 3\x00"
RESTORE_ADVICE = ("it was left untouched — restore from a backup with "
                  "`labconsole store restore BACKUP`, or move it away")

SCHEMA_DIR = Path(__file__).with_name("schema")
MIGRATIONS: list[str] = [p.read_text() for p in sorted(SCHEMA_DIR.glob("[0-9][0-9][0-9]_*.sql"))]
"""Forward migrations, one file each in core/schema/ (NNN_name.sql); user_version = files applied."""
SCHEMA_VERSION = len(MIGRATIONS)
CHAIN_SCHEMA = 8
"""The migration that adds the hash chain of transitions and audit (core/audit_chain.py)."""

ORDER_ROW_COLUMNS: tuple[str, ...] = (
    "id", "parent_id", "template_name", "template_version", "status", "priority",
    "numeric_priority", "assigned_to", "created", "started", "ended", "status_details",
)
"""The light row views work with (no JSON decoding): ``SELECT {ORDER_ROW_SQL} FROM orders``."""
ORDER_ROW_SQL = ", ".join(ORDER_ROW_COLUMNS)


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("labconsole", appauthor=False))


def resolve_data_dir(flag: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir`` flag, else ``$LABCONSOLE_DATA_DIR``, else the platform's user data dir."""
    chosen = flag or os.environ.get(DATA_DIR_ENV) or default_data_dir()
    path = Path(chosen).expanduser()
    source = "--data-dir" if flag else DATA_DIR_ENV if os.environ.get(DATA_DIR_ENV) else "data dir"
    if path.exists() and not path.is_dir():
        raise ConfigError.at(f"{path} exists and is not a directory", field=source)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError.at(f"cannot create the data directory {path}: {exc.strerror}",
                             field=source) from None
    return path


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


@dataclass(frozen=True, slots=True)
class Transition:
    seq: int
    order_id: str
    from_status: OrderStatus | None
    to_status: OrderStatus
    at: float
    who: str
    why: str | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    who: str
    action: str
    target: str | None
    reason: str | None
    details: dict[str, Any] | None


@dataclass(frozen=True)
class StatusChange:
    """What :meth:`Store.set_status` did: the transition and the order's new row."""

    seq: int
    order_id: str
    from_status: OrderStatus
    to_status: OrderStatus
    row: tuple[Any, ...]
    data: dict[str, Any]
    """The order as Data Services JSON after the change."""

    @property
    def order(self) -> Order:
        return Order.model_validate(self.data)


class StatusOp:
    """One status transition of one order (:meth:`Store.status_op`): ``op(conn)`` writes it with
    its own statements; :meth:`into` adds it to a :class:`WriteBatch`. Both give the same rows,
    the same transition (and hash chain) and the same :class:`StatusChange`."""

    __slots__ = ("store", "order_id", "to_status", "who", "why", "allowed", "wire_changes")

    def __init__(self, store: Store, order_id: str, to_status: OrderStatus, who: str, why: str | None,
                 allowed: frozenset[OrderStatus] | None, wire_changes: dict[str, Any] | None) -> None:
        self.store, self.order_id, self.to_status, self.who, self.why = store, order_id, to_status, who, why
        self.allowed, self.wire_changes = allowed, wire_changes

    def __call__(self, conn: sqlite3.Connection) -> StatusChange:
        found = conn.execute("SELECT status, data, numeric_priority, started FROM orders "
                             "WHERE id = ?", (self.order_id,)).fetchone()
        if found is None:
            raise OrderNotFoundError(self.order_id)
        data = json.loads(found[1])  # plain JSON, no model round trip: this is the hot path
        current, now, started, ended = self._change(found[0], data, found[3])
        details = data.get("statusDetails")
        conn.execute(_STATUS_UPDATE_SQL, (int(self.to_status), data.get("assignedTo"), started, ended, now,
                                          details, json.dumps(data, separators=(",", ":")), self.order_id))
        seq = audit_chain.insert(conn, "transitions",
                                 (self.order_id, int(current), int(self.to_status), now, self.who, self.why))
        created = _ts(parse_datetime(data.get("creationTime")))
        return self._result(seq, current, data, found[2], created, started, ended)

    def into(self, batch: WriteBatch) -> StatusChange:
        """The same transition as part of ``batch`` (its order read with the batch's others)."""
        entry = batch.order(self.order_id)
        data = dict(entry.data)  # the StatusChange of an earlier transition keeps its own
        current, now, started, ended = self._change(entry.status, data, entry.started)
        entry.status, entry.data, entry.started, entry.ended, entry.updated = \
            int(self.to_status), data, started, ended, now
        batch.touched[self.order_id] = entry
        seq = batch.chain("transitions", (self.order_id, int(current), int(self.to_status), now, self.who, self.why))
        if entry.created is _UNSET or (self.wire_changes is not None and "creationTime" in self.wire_changes):
            entry.created = _ts(parse_datetime(data.get("creationTime")))
        return self._result(seq, current, data, entry.numeric_priority, entry.created, started, ended)

    def _change(self, status: int, data: dict[str, Any], started: float | None
                ) -> tuple[OrderStatus, float, float | None, float | None]:
        """Apply the transition to the order's JSON ``data``: (current status, now, started, ended)."""
        current = OrderStatus(status)
        to_status, why = self.to_status, self.why
        if self.allowed is not None and current not in self.allowed:
            raise IllegalTransitionError(f"order {self.order_id}", current, to_status)
        moment = self.store.now()
        now = moment.timestamp()
        if self.wire_changes:
            data.update(self.wire_changes)
        data["status"] = to_status.name
        if to_status is OrderStatus.Running and started is None:
            data["actualStartTime"] = format_datetime(moment)
            started = now
        ended = None
        if to_status.is_terminal or to_status is OrderStatus.Error:
            data["actualEndTime"] = format_datetime(moment)
            ended = now
            if why is not None:
                data["statusDetails"] = why
        elif why is not None and to_status is not OrderStatus.Running:
            data["statusDetails"] = why
        if ended is None:
            ended = _ts(parse_datetime(data.get("actualEndTime")))
        return current, now, started, ended

    def _result(self, seq: int, current: OrderStatus, data: dict[str, Any], numeric_priority: int,
                created: float | None, started: float | None, ended: float | None) -> StatusChange:
        row = (self.order_id, data.get("parentIdentifier"), data.get("templateName"),
               data.get("templateVersion"), int(self.to_status),
               int(OrderPriority.parse(data.get("priority", "Standard"))), numeric_priority,
               data.get("assignedTo"), created, started, ended, data.get("statusDetails"))
        return StatusChange(seq, self.order_id, current, self.to_status, row, data)


class UpdateOp:
    """A change of an order's fields other than its status (:meth:`Store.update_op`):
    ``op(conn)`` writes it alone and returns ``(order, row)``. A change of the numeric priority
    alone (a reprioritise) also goes :meth:`into` a :class:`WriteBatch`, which returns
    ``(None, row)``: the order's JSON does not change, so it is neither rebuilt nor rewritten."""

    __slots__ = ("store", "order_id", "changes", "numeric_priority", "batch_key")

    def __init__(self, store: Store, order_id: str, changes: dict[str, Any], numeric_priority: int | None) -> None:
        self.store, self.order_id, self.changes, self.numeric_priority = store, order_id, changes, numeric_priority
        self.batch_key = ("order", order_id)

    def __call__(self, conn: sqlite3.Connection) -> tuple[Order, tuple[Any, ...]]:
        found = conn.execute("SELECT data, numeric_priority FROM orders WHERE id = ?",
                             (self.order_id,)).fetchone()
        if found is None:
            raise OrderNotFoundError(self.order_id)
        o = Order.model_validate_json(found[0])
        notes = o.notes
        for key, value in self.changes.items():
            setattr(o, key, value)
        if o.notes != notes:  # noted with the values the text index holds (the trigger does not read notes)
            conn.execute(_NOTE_TEXT_SQL.format(marks="?"), (self.order_id,))
        npri = found[1] if self.numeric_priority is None else self.numeric_priority
        _write_order(conn, o, self.store.now(), npri)
        return o, _order_row(o, npri)

    @property
    def into(self) -> Callable[[WriteBatch], tuple[Order | None, tuple[Any, ...]]] | None:
        """:meth:`_into` when only the numeric priority changes; None otherwise (written alone)."""
        return self._into if not self.changes and self.numeric_priority is not None else None

    def _into(self, batch: WriteBatch) -> tuple[Order | None, tuple[Any, ...]]:
        entry = batch.order(self.order_id)
        assert self.numeric_priority is not None
        entry.numeric_priority = self.numeric_priority
        entry.updated = self.store.now().timestamp()
        batch.reprioritised[self.order_id] = entry
        data = entry.data
        if entry.created is _UNSET:
            entry.created = _ts(parse_datetime(data.get("creationTime")))
        row = (self.order_id, data.get("parentIdentifier"), data.get("templateName"), data.get("templateVersion"),
               entry.status, int(OrderPriority.parse(data.get("priority", "Standard"))), self.numeric_priority,
               data.get("assignedTo"), entry.created, _ts(parse_datetime(data.get("actualStartTime"))),
               _ts(parse_datetime(data.get("actualEndTime"))), data.get("statusDetails"))
        return None, row


class AuditOp:
    """One audit entry (:meth:`Store.audit_op`): ``op(conn)`` writes it alone, :meth:`into` as
    part of a :class:`WriteBatch`; either returns its seq."""

    __slots__ = ("store", "who", "action", "target", "reason", "details")

    def __init__(self, store: Store, who: str, action: str, target: str | None, reason: str | None,
                 details: dict[str, Any] | None) -> None:
        self.store, self.who, self.action, self.target, self.reason, self.details = \
            store, who, action, target, reason, details

    def _values(self) -> tuple[Any, ...]:
        extra = self.details
        signing = audit_chain.SIGNING.get()
        if signing is not None and self.action in signing[0] and signing[1] in (None, self.target) \
                and "signature" not in (self.details or {}):
            extra = {**(self.details or {}), "signature": signing[2]}
        return (self.store.now().timestamp(), self.who, self.action, self.target, self.reason,
                json.dumps(extra) if extra is not None else None)

    def __call__(self, conn: sqlite3.Connection) -> int:
        return audit_chain.insert(conn, "audit", self._values())

    def into(self, batch: WriteBatch) -> int:
        return batch.chain("audit", self._values())


_UNSET: Any = object()


class _Cached:
    """An order as a :class:`WriteBatch` holds it between its read and its write."""

    __slots__ = ("status", "data", "numeric_priority", "started", "ended", "updated", "created",
                 "indexed")

    def __init__(self, status: int, data: dict[str, Any], numeric_priority: int, started: float | None,
                 indexed: tuple[Any, Any]) -> None:
        self.status, self.data, self.numeric_priority, self.started = status, data, numeric_priority, started
        self.ended: float | None = None
        self.updated = 0.0
        self.created: Any = _UNSET
        self.indexed = indexed
        """(assigned_to, status_details) as stored: whether the text index must look at it again."""


class WriteBatch:
    """Many writes of one transaction made set-based, on the writer thread.

    Orders are read with one statement per :data:`BATCH_READ` ids (all the orders the batch was
    told about, at the first one it needs), each order's row is written once however many
    transitions it went through, and the chained rows (transitions, audit) and other rows
    (:meth:`many`) go in with one ``executemany`` each. Chained rows get their seq and hash as
    they are added, in the order they are added, so the chain is the same as one row at a time.

    :meth:`flush` writes what is held; whoever runs a write that does not go through the batch in
    the same transaction flushes first (it may read or chain what the batch holds).
    """

    def __init__(self, conn: sqlite3.Connection, keys: Iterable[tuple[str, Any]] = ()) -> None:
        self.conn = conn
        self._keys: dict[str, dict[Any, None]] = {}
        """What the batch's writes will look up, by kind (``"order"``: order ids): read together."""
        for kind, key in keys:
            self._keys.setdefault(kind, {})[key] = None
        self._orders: dict[str, _Cached] = {}
        self.touched: dict[str, _Cached] = {}
        """Orders whose status changed since the last flush."""
        self.reprioritised: dict[str, _Cached] = {}
        """Orders whose numeric priority alone changed since the last flush."""
        self._heads: dict[str, tuple[int, str]] = {}
        self._chained: dict[str, list[tuple[Any, ...]]] = {}
        self._many: dict[str, list[Sequence[Any]]] = {}
        self._found: dict[str, tuple[set[Any], set[Any]]] = {}

    def order(self, order_id: str) -> _Cached:
        entry = self._orders.get(order_id)
        if entry is None:
            wanted = self._keys.get("order", {})
            self._load([oid for oid in wanted if oid not in self._orders] + [order_id])
            entry = self._orders.get(order_id)
            if entry is None:
                raise OrderNotFoundError(order_id)
        return entry

    def maybe(self, kind: str, key: Any, fetch: Callable[[sqlite3.Connection, list[Any]], set[Any]]) -> bool:
        """Whether ``key`` may be in what ``fetch(conn, keys)`` finds (the subset of ``keys`` it
        holds); ``fetch`` runs once for every key of ``kind`` the batch was told about. A write of
        the batch that removes a key from it may leave it answered True: the write then finds
        nothing, as it would have."""
        asked, found = self._found.get(kind) or (set(), set())
        if key not in asked:
            keys = [k for k in self._keys.get(kind, {}) if k not in asked] + [key]
            for i in range(0, len(keys), BATCH_READ):
                found |= fetch(self.conn, keys[i:i + BATCH_READ])
            asked.update(keys)
            self._found[kind] = (asked, found)
        return key in found

    def _load(self, ids: list[str]) -> None:
        ids = list(dict.fromkeys(ids))
        for i in range(0, len(ids), BATCH_READ):
            part = ids[i:i + BATCH_READ]
            for oid, status, data, npri, started, assigned, details in self.conn.execute(
                    "SELECT id, status, data, numeric_priority, started, assigned_to, status_details "
                    f"FROM orders WHERE id IN ({','.join('?' * len(part))})", part):
                self._orders[oid] = _Cached(status, json.loads(data), npri, started, (assigned, details))

    def chain(self, table: str, values: Sequence[Any]) -> int:
        """Add a chained row (``values`` in :data:`core.audit_chain.CHAIN_FIELDS` order); its seq."""
        seq, prev = self._heads.get(table) or audit_chain.head(self.conn, table)
        digest = audit_chain.row_hash(table, seq, values, prev)
        self._chained.setdefault(table, []).append((seq, *values, prev, digest))
        self._heads[table] = (seq + 1, digest)
        return seq

    def many(self, sql: str, params: Sequence[Any]) -> None:
        """Run ``sql`` with ``params`` at the next flush (one ``executemany`` per statement)."""
        self._many.setdefault(sql, []).append(params)

    def flush(self) -> None:
        """Write everything held; afterwards the batch reads orders and chain heads afresh."""
        conn = self.conn
        if self.touched:
            rows = []
            stale = []
            for oid, e in self.touched.items():
                data = e.data
                if (data.get("assignedTo"), data.get("statusDetails")) != e.indexed:
                    stale.append(oid)
                rows.append((e.status, data.get("assignedTo"), e.started, e.ended, e.updated,
                             data.get("statusDetails"), json.dumps(data, separators=(",", ":")), oid))
            if len(stale) >= BATCH_NOTE_TEXT:
                # what the update trigger of migration 014 notes one row at a time, in one statement
                for i in range(0, len(stale), BATCH_READ):
                    part = stale[i:i + BATCH_READ]
                    conn.execute(_NOTE_TEXT_SQL.format(marks=",".join("?" * len(part))), part)
            conn.executemany(_STATUS_UPDATE_SQL, rows)
        if self.reprioritised:
            conn.executemany("UPDATE orders SET numeric_priority=?, updated=? WHERE id=?",
                             [(e.numeric_priority, e.updated, oid) for oid, e in self.reprioritised.items()])
        for table, chained in self._chained.items():
            if chained:
                conn.executemany(audit_chain.INSERT_SQL[table], chained)
        for sql, params in self._many.items():
            conn.executemany(sql, params)
        self._orders.clear()
        self.touched.clear()
        self.reprioritised.clear()
        self._heads.clear()
        self._chained.clear()
        self._many.clear()
        self._found.clear()


BATCH_READ = 500
"""Ids per ``IN (...)`` read of a :class:`WriteBatch`."""
BATCH_NOTE_TEXT = 16
"""Orders whose indexed text changed from which a batch notes them for the text index itself."""
_STATUS_UPDATE_SQL = ("UPDATE orders SET status=?, assigned_to=?, started=?, ended=?, updated=?, "
                      "status_details=?, data=? WHERE id=?")
_NOTE_TEXT_SQL = ("INSERT OR IGNORE INTO orders_fts_pending (seq, indexed, id, template, instrument, details, "
                  "notes) SELECT seq, 1, id, template_name, assigned_to, status_details, "
                  "json_extract(data, '$.notes') FROM orders WHERE id IN ({marks})")


class _Op:
    __slots__ = ("fn", "future", "loop", "signing")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any],
                 future: asyncio.Future[Any] | concurrent.futures.Future[Any],
                 loop: asyncio.AbstractEventLoop | None) -> None:
        self.fn, self.future, self.loop = fn, future, loop
        self.signing = audit_chain.SIGNING.get()
        """The submitter's signature in progress, if any (see :data:`core.audit_chain.SIGNING`)."""


_STOP = object()
RIDER_WAIT = 0.05
"""Seconds a :meth:`Store.write_with_next` write waits for a write to ride with."""
CLOSE_READ_WAIT = 5.0
"""Seconds :meth:`Store.close` waits for reads under way before it interrupts them."""


class Store:
    """The SQLite store. Open with :meth:`open`; close with :meth:`close`."""

    open_check_seconds: float | None = 2.0
    """Time budget of the quick check on open (None: no limit); past it the check is partial."""
    last_open_check: Any = None
    """The :class:`core.storefile.CheckResult` of the last open (None for a new file)."""
    _lock: StoreLock | None = None

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "FULL",
                 group_commit: bool = True, max_batch: int = 2000) -> None:
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ConfigError.at(f"synchronous must be FULL, NORMAL, EXTRA or OFF, not {synchronous!r}",
                                 field="synchronous")
        self.group_commit = group_commit
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._reads = threading.Condition()
        self._reads_in_flight = 0
        self._closing = False
        """Set by :meth:`close`: reads from then on use a connection of their own, and close
        waits for the reads under way on the shared ones before it closes them."""
        self._read_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.commit_count = 0
        self.commit_seconds = 0.0
        self._batches = 0
        self.text_indexed = 0
        """Orders (re-)indexed for text search after their writes (see :func:`index_pending_text`)."""
        self.submitted = 0
        """Asynchronous writes submitted so far (a counter tests use to tell when things settle)."""
        self.in_flight = 0
        self._pending: set[asyncio.Future[Any]] = set()
        """Asynchronous writes submitted and not yet delivered to their caller."""
        self._riders: list[_Op] = []
        """Writes waiting to commit with the next one (:meth:`write_with_next`)."""
        self._rider_timer: asyncio.TimerHandle | None = None
        self.clock: Any = None
        """The runtime's clock (``now()`` in epoch seconds); None: the system clock. Every time the
        store writes (creation, transitions, audit) comes from it, so a virtual or accelerated
        clock gives consistent durations."""

    def now(self) -> datetime:
        if self.clock is None:
            return now_utc()
        return datetime.fromtimestamp(self.clock.now(), UTC)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open_in(cls, data_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Store:
        return cls(resolve_data_dir(data_dir) / DB_FILENAME, **kwargs).open()

    def open(self) -> Store:
        """Check the file, apply migrations and start the writer thread.

        A file that is not ours, newer, or damaged (``PRAGMA quick_check``, at most
        :attr:`open_check_seconds`) is refused and left as it was. The store's lock is held
        shared until :meth:`close`, so a restore cannot replace the file while it is open.
        """
        self._check_place()
        self._lock = StoreLock(self.path)
        self._lock.acquire_shared()
        try:
            if self._check_header():
                probe = self._connect(readonly=True)
                try:
                    self._check_ownership(probe)
                    self._check_integrity(probe)
                finally:
                    probe.close()
            conn = self._connect()
            try:
                self._check_ownership(conn)
                self._migrate(conn)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            self._lock.release()
            raise
        self._read_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="store-read")
        with self._reads:
            self._closing = False
        self._thread = threading.Thread(target=self._writer, args=(conn,), name="store-writer",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Finish queued writes, stop the writer and close every connection.

        A read under way on another thread (a panel's worker) is waited for, at most
        :data:`CLOSE_READ_WAIT` seconds and then interrupted, before its connection is closed:
        closing a connection while another thread steps through it crashes the process.
        """
        with self._reads:
            self._closing = True
        self._local = threading.local()
        if self._thread is not None:
            if self._riders:
                self._queue.put(self._take_riders())
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._read_pool is not None:
            self._read_pool.shutdown(wait=True)
            self._read_pool = None
        with self._reads:
            if not self._reads.wait_for(lambda: self._reads_in_flight == 0, CLOSE_READ_WAIT):
                with self._readers_lock:
                    for conn in self._readers:
                        conn.interrupt()
                self._reads.wait_for(lambda: self._reads_in_flight == 0)
        with self._readers_lock:
            for conn in self._readers:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:  # created in another thread; it is gone with it
                    pass
            self._readers.clear()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_place(self) -> None:
        """The path is a regular file or nothing, in a directory this process can write in."""
        if self.path.is_dir():
            raise StoreError(self.path, "is a directory, but the store's database file belongs "
                             "there; move the directory away or choose another --data-dir")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(self.path, "is not a regular file; move it away or choose another --data-dir")
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(self.path, f"cannot create the directory {parent}: {exc.strerror}") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise StoreError(self.path, f"the directory {parent} is not writable (the store writes "
                             "its -wal and -shm files next to it); make it writable or choose "
                             "another --data-dir")
        if self.path.exists() and not os.access(self.path, os.R_OK | os.W_OK):
            raise StoreError(self.path, "is not readable and writable by this user; fix its "
                             "permissions or choose another --data-dir")

    def _check_header(self) -> bool:
        """True if the file exists (and looks like SQLite); raises if it is something else."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return False
        try:
            with open(self.path, "rb") as f:
                header = f.read(16)
        except OSError as exc:
            raise StoreError(self.path, f"cannot be read: {exc.strerror}") from None
        if header != SQLITE_HEADER:
            raise self._damaged("is not a SQLite database (bad header)")
        return True

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        """``PRAGMA quick_check`` within :attr:`open_check_seconds`; raise if it finds damage."""
        result = run_check(conn, "quick_check", budget=self.open_check_seconds, max_errors=10)
        self.last_open_check = result
        if not result.ok:
            shown = "; ".join(result.problems[:3])
            more = f" (and {len(result.problems) - 3} more)" if len(result.problems) > 3 else ""
            raise self._damaged(f"is damaged ({shown}{more})")
        if not result.complete:
            log.warning("%s: the quick check on open stopped after %.1f s and is partial; "
                        "run `labconsole store check` for a full check", self.path, result.seconds)

    def _damaged(self, what: str) -> CorruptDatabaseError:
        """The error for a damaged file: what is wrong, what to do, and the latest backup if any."""
        backups = sorted(self.path.parent.glob("backups/labconsole-*.sqlite3"))
        latest = f" (latest backup: {backups[-1]})" if backups else ""
        return CorruptDatabaseError(self.path, f"{what}; {RESTORE_ADVICE}{latest}")

    def _connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        try:
            if readonly:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                       check_same_thread=False, isolation_level=None)
            else:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 5000")
            if not readonly:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise StoreError(self.path, f"cannot switch to WAL journal mode (got {mode})")
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            return conn
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                raise self._damaged(f"cannot be opened as a database: {exc}") from None
            raise StoreError(self.path, f"cannot be opened: {exc}") from None

    def _check_ownership(self, conn: sqlite3.Connection) -> int:
        """Raise unless the file is a labconsole store this version can read; return its version."""
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        except sqlite3.DatabaseError as exc:
            raise self._damaged(f"is damaged: {exc}") from None
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise ForeignDatabaseError(self.path, "is a SQLite database of another program "
                                       f"(application_id={app_id}, tables: {', '.join(tables[:8]) or 'none'}); "
                                       "it was left untouched — choose another --data-dir")
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(self.path, f"has schema version {version}, newer than this "
                                    f"labconsole understands ({SCHEMA_VERSION}); upgrade labconsole")
        return version

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        # A migration may rebuild a table others refer to (SQLite's documented way to change a
        # constraint): foreign keys are off while it runs and checked before it commits.
        conn.execute("PRAGMA foreign_keys = OFF")
        for number in range(version, SCHEMA_VERSION):
            try:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _split_sql(MIGRATIONS[number]):
                    conn.execute(statement)
                rebuilt = "DROP TABLE" in MIGRATIONS[number].upper()  # only a rebuild can break a reference
                if rebuilt and (broken := conn.execute("PRAGMA foreign_key_check").fetchmany(3)):
                    raise sqlite3.IntegrityError(f"foreign keys broken: {broken}")
                if number + 1 == CHAIN_SCHEMA:  # seal the rows written before the chain existed
                    start = audit_chain.backfill(conn, self.now().timestamp(), CHAIN_SCHEMA)
                    log.info("%s: audit chain started: %s", self.path, start)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                conn.execute("ROLLBACK")
                raise StoreError(self.path, f"migration to schema {number + 1} failed: {exc}") from None
            log.info("%s: migrated schema to version %d", self.path, number + 1)
        conn.execute("PRAGMA foreign_keys = ON")

    # ------------------------------------------------------------------ writer

    def _writer(self, conn: sqlite3.Connection) -> None:
        stop = False
        behind = True  # the text index may be behind (migrated, or left so at the last close)
        while not stop:
            try:
                first = self._queue.get(timeout=TEXT_INDEX_IDLE) if behind else self._queue.get()
            except queue.Empty:  # idle: bring the text index up to date, a batch at a time
                behind = self._index_when_idle(conn)
                continue
            if first is _STOP:
                break
            behind = True
            batch = list(first) if isinstance(first, list) else [first]  # a list: riders + a write
            if self.group_commit:
                while len(batch) < self.max_batch:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    if isinstance(item, list):
                        batch += item
                    else:
                        batch.append(item)
            try:
                self._run_batch(conn, batch)
            except BaseException as exc:  # noqa: BLE001 - the writer outlives a batch: its callers wait on it
                log.exception("%s: a write batch failed outside its operations", self.path)
                _roll_back(conn)
                self._fail(batch, StoreError(self.path, f"write failed: {exc!r}"))
        conn.close()

    @staticmethod
    def _fail(batch: list[_Op], err: StoreError) -> None:
        """Deliver ``err`` to every write of ``batch`` not answered yet."""
        _hand_back([(op, False, err) for op in batch])

    def _index_when_idle(self, conn: sqlite3.Connection) -> bool:
        """Index one batch of the orders whose text index entry is out of date; whether more wait."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            done = index_pending_text(conn, TEXT_INDEX_BATCH)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _roll_back(conn)
            log.warning("%s: text index not brought up to date: %s (next try after the next write)", self.path, exc)
            return False
        self.text_indexed += done
        return done == TEXT_INDEX_BATCH

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        results: list[tuple[_Op, bool, Any]] = []
        t0 = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                conn.execute("SAVEPOINT op")
                signed = audit_chain.SIGNING.set(op.signing) if op.signing is not None else None
                try:
                    value = op.fn(conn)
                except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((op, False, exc))
                else:
                    conn.execute("RELEASE op")
                    results.append((op, True, value))
                finally:
                    if signed is not None:
                        audit_chain.SIGNING.reset(signed)
            self._batches += 1
            if self._batches % TEXT_INDEX_CHECK_EVERY == 0 and text_pending(conn, TEXT_INDEX_BEHIND) > TEXT_INDEX_BEHIND:
                # never idle long enough: this write takes a batch of the backlog with it
                self.text_indexed += index_pending_text(conn, TEXT_INDEX_BATCH)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _roll_back(conn)
            err = StoreError(self.path, f"commit failed: {exc}")
            results = [(op, False, err) for op in batch]
        seconds = time.perf_counter() - t0
        self.commit_count += 1
        self.commit_seconds += seconds
        _hand_back(results)

    def _submit(self, fn: Callable[[sqlite3.Connection], T], *, rider: bool = False) -> asyncio.Future[T]:
        if self._thread is None:
            raise StoreError(self.path, "store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.submitted += 1
        self.in_flight += 1
        self._pending.add(future)
        future.add_done_callback(self._delivered)
        op = _Op(fn, future, loop)
        if rider:
            self._riders.append(op)
            if self._rider_timer is None:
                self._rider_timer = loop.call_later(RIDER_WAIT, self._flush_riders)
        elif self._riders:
            self._queue.put([*self._take_riders(), op])  # one item: the writer takes them together
        else:
            self._queue.put(op)
        return future

    def _take_riders(self) -> list[_Op]:
        riders, self._riders = self._riders, []
        if self._rider_timer is not None:
            self._rider_timer.cancel()
            self._rider_timer = None
        return riders

    def _flush_riders(self) -> None:
        self._rider_timer = None
        if self._riders and self._thread is not None:
            self._queue.put(self._take_riders())

    def _delivered(self, future: asyncio.Future[Any]) -> None:
        self.in_flight -= 1
        self._pending.discard(future)

    async def drain(self) -> None:
        """Wait until every asynchronous write submitted so far has been delivered."""
        while self._pending:
            await asyncio.wait(list(self._pending))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer thread inside a transaction; return after COMMIT."""
        return await self._submit(fn)

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn(conn)`` now, after every write queued before it; the future is done after
        COMMIT (:meth:`write` without waiting for it)."""
        return self._submit(fn)

    def write_with_next(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn(conn)`` to commit in the same transaction as the next write (or on its own
        after :data:`RIDER_WAIT` seconds if none comes), keeping its order; the future is done
        after that COMMIT. For rows nobody waits for (an instrument's log): they cost no commit
        of their own while the engine is writing anyway."""
        return self._submit(fn, rider=True)

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Blocking variant of :meth:`write` for scripts and the headless CLI (not the GUI)."""
        if self._thread is None:
            raise StoreError(self.path, "store is not open")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Op(fn, future, None))
        return future.result()

    # ------------------------------------------------------------------ readers

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a read-only connection of the calling thread.

        Once :meth:`close` has begun a short-lived connection is used, so a closed store can still
        be read.
        """
        with self._reads:
            shared = not self._closing and self._thread is not None
            if shared:
                self._reads_in_flight += 1
        if not shared:
            conn = self._connect(readonly=True)
            try:
                return fn(conn)
            finally:
                conn.close()
        try:
            return fn(self._reader())
        finally:
            with self._reads:
                self._reads_in_flight -= 1
                if not self._reads_in_flight:
                    self._reads.notify_all()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader thread; never blocks the event loop."""
        if self._read_pool is None:
            raise StoreError(self.path, "store is not open")
        return await asyncio.wrap_future(self._read_pool.submit(self.read_sync, fn))

    # ------------------------------------------------------------------ orders

    def new_order_op(self, order: Order, *, who: str, why: str | None = None,
                     numeric_priority: int = 50) -> Callable[[sqlite3.Connection], tuple[Order, tuple[Any, ...]]]:
        """The write operation that inserts ``order`` (id assigned if missing) and logs Created."""

        def op(conn: sqlite3.Connection) -> tuple[Order, tuple[Any, ...]]:
            o = order.model_copy(deep=True)
            seq = _next_seq(conn, "order")
            if not o.identifier:
                o.identifier = f"Order_{seq:05d}"
            now = self.now()
            if o.creationTime is None:
                o.creationTime = now
            if o.sourceIdentifier is None:
                o.sourceIdentifier = _source_of(conn, o)
            row = _order_row(o, numeric_priority)
            try:
                conn.execute(
                    "INSERT INTO orders (id, seq, parent_id, source_id, run_after_id, template_name, "
                    "template_version, status, priority, numeric_priority, assigned_to, created, "
                    "scheduled, started, ended, updated, status_details, data) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (o.identifier, seq, o.parentIdentifier, o.sourceIdentifier, o.runAfterIdentifier,
                     o.templateName, o.templateVersion, int(o.status), int(o.priority),
                     numeric_priority, o.assignedTo, _ts(o.creationTime), _ts(o.scheduledStartTime),
                     _ts(o.actualStartTime), _ts(o.actualEndTime), now.timestamp(),
                     o.statusDetails, o.to_json()))
            except sqlite3.IntegrityError:
                raise StoreError(self.path, f"order {o.identifier} already exists") from None
            audit_chain.insert(conn, "transitions",
                               (o.identifier, None, int(o.status), now.timestamp(), who, why))
            return o, row

        return op

    async def insert_order(self, order: Order, *, who: str, why: str | None = None,
                           numeric_priority: int = 50) -> tuple[Order, tuple[Any, ...]]:
        return await self.write(self.new_order_op(order, who=who, why=why,
                                                  numeric_priority=numeric_priority))

    def status_op(self, order_id: str, to_status: OrderStatus, *, who: str, why: str | None = None,
                  expected: Iterable[OrderStatus] | None = None,
                  changes: dict[str, Any] | None = None) -> StatusOp:
        """The write operation for one status transition (plus optional field changes).

        ``expected``: the transition happens only from one of these statuses, otherwise
        :class:`IllegalTransitionError` and nothing changes. Running sets ``actualStartTime`` (once),
        a terminal status or Error sets ``actualEndTime`` and ``statusDetails`` (from ``why``).
        Called with a connection it writes alone; :meth:`StatusOp.into` writes it as part of a
        :class:`WriteBatch`.
        """
        return StatusOp(self, order_id, to_status, who, why,
                        frozenset(expected) if expected is not None else None,
                        wire_fields(changes) if changes else None)

    async def set_status(self, order_id: str, to_status: OrderStatus, *, who: str,
                         why: str | None = None, expected: Iterable[OrderStatus] | None = None,
                         changes: dict[str, Any] | None = None) -> StatusChange:
        return await self.write(self.status_op(order_id, to_status, who=who, why=why,
                                               expected=expected, changes=changes))

    def update_op(self, order_id: str, changes: dict[str, Any],
                  numeric_priority: int | None = None) -> UpdateOp:
        """Change fields other than status (outputs, assignment, priority ...)."""
        return UpdateOp(self, order_id, changes, numeric_priority)

    async def catch_up_text_index(self) -> int:
        """Index every order whose text index entry is out of date (before a text search, so it
        finds what was just written); how many were. Nothing is written when none is."""
        if not await self.read(lambda c: text_pending(c, 1)):
            return 0
        done = 0
        while (n := await self.write(lambda c: index_pending_text(c, TEXT_INDEX_CATCH_UP))) == TEXT_INDEX_CATCH_UP:
            done += n
        return done + n

    def catch_up_text_index_sync(self) -> int:
        """:meth:`catch_up_text_index` on the calling thread (scripts, benchmarks)."""
        if not self.read_sync(lambda c: text_pending(c, 1)):
            return 0
        done = 0
        while (n := self.write_sync(lambda c: index_pending_text(c, TEXT_INDEX_CATCH_UP))) == TEXT_INDEX_CATCH_UP:
            done += n
        return done + n

    def audit_op(self, who: str, action: str, target: str | None = None, reason: str | None = None,
                 details: dict[str, Any] | None = None) -> AuditOp:
        """The write operation for one audit entry (alone, or :meth:`AuditOp.into` a batch)."""
        return AuditOp(self, who, action, target, reason, details)

    async def audit(self, who: str, action: str, target: str | None = None,
                    reason: str | None = None, details: dict[str, Any] | None = None) -> int:
        return await self.write(self.audit_op(who, action, target, reason, details))

    # ------------------------------------------------------------------ queries (sync; wrap in read())

    def get_order(self, order_id: str) -> Order:
        row = self.read_sync(lambda c: c.execute("SELECT data FROM orders WHERE id = ?",
                                                 (order_id,)).fetchone())
        if row is None:
            raise OrderNotFoundError(order_id)
        return Order.model_validate_json(row[0])

    def order_rows(self, where: str = "", params: Sequence[Any] = (), order_by: str = "seq",
                   limit: int | None = None) -> list[tuple[Any, ...]]:
        sql = f"SELECT {ORDER_ROW_SQL} FROM orders"
        if where:
            sql += f" WHERE {where}"
        sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self.read_sync(lambda c: c.execute(sql, tuple(params)).fetchall())

    def count_orders(self, where: str = "", params: Sequence[Any] = ()) -> int:
        sql = "SELECT count(*) FROM orders" + (f" WHERE {where}" if where else "")
        count: int = self.read_sync(lambda c: c.execute(sql, tuple(params)).fetchone()[0])
        return count

    def transitions(self, order_id: str | None = None) -> list[Transition]:
        sql = "SELECT seq, order_id, from_status, to_status, at, who, why FROM transitions"
        params: tuple[str, ...] = ()
        if order_id is not None:
            sql += " WHERE order_id = ?"
            params = (order_id,)
        rows = self.read_sync(lambda c: c.execute(sql + " ORDER BY seq", params).fetchall())
        return [Transition(r[0], r[1], OrderStatus(r[2]) if r[2] is not None else None,
                           OrderStatus(r[3]), r[4], r[5], r[6]) for r in rows]

    def audit_entries(self, target: str | None = None) -> list[AuditEntry]:
        sql = "SELECT seq, at, who, action, target, reason, details FROM audit"
        params: tuple[str, ...] = ()
        if target is not None:
            sql += " WHERE target = ?"
            params = (target,)
        rows = self.read_sync(lambda c: c.execute(sql + " ORDER BY seq", params).fetchall())
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5],
                           json.loads(r[6]) if r[6] else None) for r in rows]

    def verify_chain(self) -> audit_chain.Report:
        """Walk the hash chains of ``transitions`` and ``audit``, the archive's transitions
        included; the report names the first broken or missing row of each (see
        :mod:`core.audit_chain`)."""
        from core.archive import archive_path  # the archive module builds on this one

        archive = archive_path(self.path)
        return self.read_sync(lambda c: audit_chain.verify(c, str(self.path), archive))

    def export_chain(self, start: float, end: float) -> dict[str, Any]:
        """The chained rows from ``start`` to ``end`` (epoch seconds) with their hashes and the hash
        of the row before the range, read in one snapshot."""

        def read(c: sqlite3.Connection) -> dict[str, Any]:
            c.execute("BEGIN")
            try:
                return audit_chain.export(c, start, end, store=str(self.path))
            finally:
                c.execute("COMMIT")

        return self.read_sync(read)

    def integrity_check(self) -> str:
        result: str = self.read_sync(lambda c: c.execute("PRAGMA integrity_check").fetchone()[0])
        return result

    def scan_order_rows(self, consume: Callable[[Iterable[tuple[Any, ...]]], T]) -> T:
        """``consume(rows)`` over every order row (``ORDER_ROW_COLUMNS``) in arrival order, straight
        from the cursor: no list of every row is held at once (100,000 orders load in one pass)."""
        sql = f"SELECT {ORDER_ROW_SQL} FROM orders ORDER BY seq"
        return self.read_sync(lambda c: consume(c.execute(sql)))

    def step_orders_with_status(self, status: str) -> set[str]:
        """Order ids of the steps whose engine status (``step_runs.status``) is ``status``
        (``"skipped"``: the operator's or a false condition's; their orders read Canceled)."""
        rows = self.read_sync(lambda c: c.execute(
            "SELECT order_id FROM step_runs WHERE status = ?", (status,)).fetchall())
        return {r[0] for r in rows}

    def step_status_of(self, order_id: str) -> str | None:
        """The engine status of the step whose order is ``order_id`` (None: not a step order)."""
        row = self.read_sync(lambda c: c.execute(
            "SELECT status FROM step_runs WHERE order_id = ?", (order_id,)).fetchone())
        return row[0] if row is not None else None

    def adopted_runs(self, order_ids: Sequence[str]) -> dict[str, str]:
        """Which of ``order_ids`` are runs made for another order (an order claimed from Data
        Services: the run's parent is that order, not a run): ``run id -> the order it runs
        for``. Primary-key look-ups, 500 ids per query."""
        base = ("SELECT r.run_id, o.parent_id FROM runs r JOIN orders o ON o.id = r.run_id "
                "WHERE o.parent_id IS NOT NULL")
        out: dict[str, str] = {}
        ids = list(order_ids)
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            sql = f"{base} AND r.run_id IN ({','.join('?' * len(part))})"
            out.update(self.read_sync(functools.partial(_pairs, sql=sql, params=part)))
        return out

    def runs_for_orders(self, order_ids: Sequence[str]) -> dict[str, str]:
        """The run made for each of these orders (orders claimed from Data Services; the newest
        run when there are several): ``order id -> run id``; other orders are left out."""
        out: dict[str, str] = {}
        ids = list(dict.fromkeys(order_ids))
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            sql = ("SELECT o.parent_id, r.run_id FROM orders o JOIN runs r ON r.run_id = o.id "
                   f"WHERE o.parent_id IN ({','.join('?' * len(part))}) ORDER BY o.seq")
            out.update(self.read_sync(functools.partial(_pairs, sql=sql, params=part)))
        return out

    def needing_attention(self, limit: int = 200) -> list[tuple[str, str, str, str | None, str | None, float]]:
        """What waits for a person, from the engine's tables: paused runs and the failed or
        outcome-unknown steps of runs not finished. ``(kind, order id, run id, step id, error,
        since)`` with kind ``paused``, ``failed`` or ``unknown``, oldest first (indexed by status)."""

        def fetch(c: sqlite3.Connection) -> list[tuple[str, str, str, str | None, str | None, float]]:
            out: list[tuple[str, str, str, str | None, str | None, float]] = [("paused", run_id, run_id, None, error, since or created) for run_id, error, created, since
                   in c.execute("SELECT r.run_id, r.error, r.created, (SELECT max(t.at) FROM transitions t "
                                "WHERE t.order_id = r.run_id) FROM runs r WHERE r.status = 'paused' "
                                "ORDER BY r.created LIMIT ?", (limit,))]
            out += [(status, order_id, run_id, step_id, error, since or 0.0) for status, order_id, run_id, step_id,
                    error, since in c.execute(
                        "SELECT s.status, s.order_id, s.run_id, s.step_id, s.error, coalesce(s.ended, s.started) "
                        "FROM step_runs s JOIN runs r ON r.run_id = s.run_id "
                        "WHERE s.status IN ('failed', 'unknown') AND r.status NOT IN ('completed', 'cancelled') "
                        "ORDER BY s.ended LIMIT ?", (limit,))]
            return out

        return self.read_sync(fetch)

    def order_log(self, order_ids: Sequence[str]) -> list[tuple[float, str, str, str]]:
        """Everything stored about these orders, in time order: ``(at, kind, order id, text)``
        with kind ``transition``, ``audit`` or ``instrument`` (the instrument log rows naming
        one of them)."""
        ids = list(dict.fromkeys(order_ids))[:500]
        if not ids:
            return []
        marks = ",".join("?" * len(ids))

        def fetch(c: sqlite3.Connection) -> list[tuple[float, str, str, str]]:
            out: list[tuple[float, str, str, str]] = []
            for at, oid, src, dst, who, why in c.execute(
                    f"SELECT at, order_id, from_status, to_status, who, why FROM transitions "
                    f"WHERE order_id IN ({marks})", ids):
                move = (f"{OrderStatus(src).name} → " if src is not None else "") + OrderStatus(dst).name
                out.append((at, "transition", oid, f"{move} by {who}" + (f": {why}" if why else "")))
            for at, who, action, target, reason in c.execute(
                    f"SELECT at, who, action, target, reason FROM audit WHERE target IN ({marks})", ids):
                out.append((at, "audit", target, f"{action} by {who}" + (f": {reason}" if reason else "")))
            # instrument_log names its orders as a JSON list (no index: one pass over the log)
            for at, inst, src, dst, detail, oid in c.execute(
                    f"SELECT l.at, l.instrument_id, l.from_status, l.to_status, l.detail, j.value "
                    f"FROM instrument_log l, json_each(l.order_ids) j "
                    f"WHERE l.order_ids IS NOT NULL AND j.value IN ({marks})", ids):
                move = f"{src} → {dst}" if src else dst
                out.append((at, "instrument", oid, f"{inst} {move}" + (f": {detail}" if detail else "")))
            out.sort(key=lambda r: r[0])
            return out

        return self.read_sync(fetch)
    def instrument_log(self, instrument_id: str, limit: int = 500) -> list[tuple[Any, ...]]:
        """The instrument's status changes, newest first (at most ``limit``): rows of
        ``(seq, at, from_status, to_status, detail, order_ids)`` with ``order_ids`` a list."""
        rows = self.read_sync(lambda c: c.execute(
            "SELECT seq, at, from_status, to_status, detail, order_ids FROM instrument_log "
            "WHERE instrument_id = ? ORDER BY seq DESC LIMIT ?", (instrument_id, int(limit))).fetchall())
        return [(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else []) for r in rows]

    def instrument_busy_seconds(self, instrument_id: str, since: float, until: float) -> float:
        """Seconds the instrument was Busy between ``since`` and ``until``, from its status log.

        The state at ``since`` is the last change before it. A change whose ``from_status`` is not
        the state the log last recorded marks a gap (the console was not running): the time
        before it is not counted as Busy, whatever the last recorded state was.
        """
        def read(c: sqlite3.Connection) -> tuple[Any, list[tuple[Any, ...]]]:
            before = c.execute("SELECT to_status FROM instrument_log WHERE instrument_id = ? AND at <= ? "
                               "ORDER BY seq DESC LIMIT 1", (instrument_id, since)).fetchone()
            later = c.execute("SELECT at, from_status, to_status FROM instrument_log WHERE instrument_id = ? "
                              "AND at > ? AND at < ? ORDER BY seq", (instrument_id, since, until)).fetchall()
            return before, later

        before, later = self.read_sync(read)
        state, start, busy = (before[0] if before is not None else None), since, 0.0
        for at, from_status, to_status in later:
            if state == "Busy" and from_status == "Busy":
                busy += at - start
            state, start = to_status, at
        if state == "Busy":
            busy += until - start
        return busy

    def audit_sends_to(self, instrument_id: str, limit: int = 100,
                       window: int = 50_000) -> list[AuditEntry]:
        """The "send to instrument" decisions naming ``instrument_id`` (their target is the order),
        newest first, among the last ``window`` audit entries (a bounded range on the key)."""
        rows = self.read_sync(lambda c: c.execute(
            "SELECT seq, at, who, action, target, reason, details FROM audit "
            "WHERE seq > (SELECT coalesce(max(seq), 0) FROM audit) - ? AND action = 'send to instrument' "
            "AND json_extract(details, '$.instrument') = ? ORDER BY seq DESC LIMIT ?",
            (int(window), instrument_id, int(limit))).fetchall())
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else None) for r in rows]

    def orders_by_id_prefix(self, prefix: str, limit: int = 20) -> list[tuple[str, str | None, int]]:
        """Orders whose id starts with ``prefix`` as typed, capitalised, upper or lower case
        (``order_12`` finds ``Order_12…``), by id: ``(id, template name, status)``, at most
        ``limit``. Each spelling is a range on the primary key: no scan, whatever the store size."""
        prefix = prefix.strip()
        if not prefix:
            return []
        limit = int(limit)
        spellings = list(dict.fromkeys((prefix, prefix[:1].upper() + prefix[1:], prefix.capitalize(),
                                        prefix.upper(), prefix.lower())))

        def read(c: sqlite3.Connection) -> list[tuple[str, str | None, int]]:
            found: dict[str, tuple[str, str | None, int]] = {}
            for p in spellings:  # TEXT ids under BINARY collation: p <= id < p + the last code point
                for r in c.execute("SELECT id, template_name, status FROM orders WHERE id >= ? AND id < ? "
                                   "ORDER BY id LIMIT ?", (p, p + "\U0010ffff", limit)):
                    found[r[0]] = (r[0], r[1], r[2])
            return sorted(found.values())[:limit]

        return self.read_sync(read)


_ORDER_FIELDS = frozenset(Order.model_fields)
_PLAIN_TEXT = frozenset(name for name, info in Order.model_fields.items()
                        if info.annotation == str | None and not info.metadata)
"""Order fields that are optional text with no validator of their own: a str or None is already
their wire value."""


def wire_fields(changes: dict[str, Any]) -> dict[str, Any]:
    """Order field changes as Data Services JSON values, validated by the Order model.

    Done on the caller's side, so the writer thread only merges dicts.
    """
    unknown = set(changes) - _ORDER_FIELDS
    if unknown:
        raise ValueError(f"not Order fields: {', '.join(sorted(unknown))}")
    if all(k in _PLAIN_TEXT and (v is None or type(v) is str) for k, v in changes.items()):
        return dict(changes)  # the hot path: assignedTo, statusDetails
    probe = Order.model_validate(changes)  # validates and coerces each value
    if "templateLastModifiedDateUtc" in changes:  # to_wire's own rule for it
        wire = probe.to_wire()
        return {key: wire[key] for key in changes}
    return probe.model_dump(mode="json", include=set(changes))


def _hand_back(results: list[tuple[_Op, bool, Any]]) -> None:
    """From the writer thread: each (op, ok, value) to its caller, a synchronous caller at once,
    an asynchronous one through its loop (one callback per loop)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, bool, Any]]] = {}
    for item in results:
        if item[0].loop is None:
            _deliver([item])
        else:
            by_loop.setdefault(item[0].loop, []).append(item)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(_deliver, items)


def _deliver(items: list[tuple[_Op, bool, Any]]) -> None:
    for op, ok, value in items:
        if op.future.done():
            continue
        if ok:
            op.future.set_result(value)
        else:
            op.future.set_exception(value)


def _pairs(conn: sqlite3.Connection, *, sql: str, params: Sequence[Any]) -> dict[str, str]:
    """``{first column: second column}`` of a two-column query."""
    return {str(a): str(b) for a, b in conn.execute(sql, tuple(params))}


TEXT_INDEX_IDLE = 0.05
"""Seconds without a write after which the writer indexes a batch of out-of-date orders."""
TEXT_INDEX_BATCH = 500
"""Orders the writer indexes at a time when idle (a few milliseconds of work: a write arriving
meanwhile waits no longer than that)."""
TEXT_INDEX_BEHIND = 20_000
"""Out-of-date orders beyond which writes take a batch of them along (a writer never idle)."""
TEXT_INDEX_CHECK_EVERY = 16
"""Commits between two looks at how far the text index is behind."""
TEXT_INDEX_CATCH_UP = 5_000
"""Orders a catch-up before a search indexes per write."""


def _roll_back(conn: sqlite3.Connection) -> None:
    """Roll the failed transaction back (a failed COMMIT may have ended it already)."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("ROLLBACK")


def text_pending(conn: sqlite3.Connection, cap: int) -> int:
    """How many orders wait to be (re-)indexed for text search, counted up to ``cap`` + 1."""
    return int(conn.execute("SELECT count(*) FROM (SELECT 1 FROM orders_fts_pending LIMIT ?)",
                            (cap + 1,)).fetchone()[0])


def index_pending_text(conn: sqlite3.Connection, limit: int) -> int:
    """Bring the text index (``orders_fts``) up to date for the first ``limit`` orders waiting in
    ``orders_fts_pending`` (migration 014), inside the caller's transaction: each leaves the index
    with the values it was indexed with, then enters it with its current ones. How many were."""
    bound = conn.execute("SELECT seq FROM orders_fts_pending ORDER BY seq LIMIT 1 OFFSET ?",
                         (limit - 1,)).fetchone()
    top = bound[0] if bound is not None else None
    where, args = ("WHERE p.seq <= ?", (top,)) if top is not None else ("", ())
    conn.execute("INSERT INTO orders_fts (orders_fts, rowid, id, template, instrument, details, notes) "
                 f"SELECT 'delete', p.seq, p.id, p.template, p.instrument, p.details, p.notes "
                 f"FROM orders_fts_pending p {where or 'WHERE 1'} AND p.indexed = 1", args)
    conn.execute("INSERT INTO orders_fts (rowid, id, template, instrument, details, notes) "
                 "SELECT o.seq, o.id, o.template_name, o.assigned_to, o.status_details, "
                 f"json_extract(o.data, '$.notes') FROM orders_fts_pending p JOIN orders o ON o.seq = p.seq {where}",
                 args)
    return int(conn.execute(f"DELETE FROM orders_fts_pending AS p {where}", args).rowcount)


def _split_sql(script: str) -> list[str]:
    """The statements of a migration script; a trigger's body (``BEGIN ...; ...; END``) stays whole."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("--")]
    statements: list[str] = []
    pending = ""
    for piece in "\n".join(lines).split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                statements.append(pending.strip().removesuffix(";").strip())
            pending = ""
    if pending.strip(" \t\n;"):
        statements.append(pending.strip().removesuffix(";").strip())
    return statements


def _next_seq(conn: sqlite3.Connection, name: str) -> int:
    row = conn.execute("UPDATE sequences SET value = value + 1 WHERE name = ? RETURNING value",
                       (name,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO sequences (name, value) VALUES (?, 1)", (name,))
        return 1
    value: int = row[0]
    return value


def _source_of(conn: sqlite3.Connection, o: Order) -> str | None:
    if not o.parentIdentifier:
        return o.identifier
    found = conn.execute("SELECT source_id FROM orders WHERE id = ?", (o.parentIdentifier,)).fetchone()
    return (found[0] if found and found[0] else o.parentIdentifier)


def _order_row(o: Order, numeric_priority: int) -> tuple[Any, ...]:
    return (o.identifier, o.parentIdentifier, o.templateName, o.templateVersion, int(o.status),
            int(o.priority), numeric_priority, o.assignedTo, _ts(o.creationTime),
            _ts(o.actualStartTime), _ts(o.actualEndTime), o.statusDetails)


def _write_order(conn: sqlite3.Connection, o: Order, now: datetime,
                 numeric_priority: int | None = None) -> None:
    conn.execute(
        "UPDATE orders SET parent_id=?, run_after_id=?, template_name=?, template_version=?, "
        "status=?, priority=?, numeric_priority=COALESCE(?, numeric_priority), assigned_to=?, "
        "scheduled=?, started=?, ended=?, updated=?, status_details=?, data=? WHERE id=?",
        (o.parentIdentifier, o.runAfterIdentifier, o.templateName, o.templateVersion,
         int(o.status), int(o.priority), numeric_priority, o.assignedTo,
         _ts(o.scheduledStartTime), _ts(o.actualStartTime), _ts(o.actualEndTime),
         now.timestamp(), o.statusDetails, o.to_json(), o.identifier))
