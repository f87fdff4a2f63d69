"""Time travel: the workcell as it was at any past moment, rebuilt from the transition log.

A :class:`Moment` holds, for a time ``at``:

* every order open then (not finished: Created, Validated, Scheduled, Running, Paused, Unknown)
  with its status and since when, and how many orders stood in each status;
* the transitions of the last ``window`` seconds before it (what just happened), newest first;
* every instrument's state then, with the orders (steps) it was running, from the instrument log;
* the inbox items open then (created before it, answered after it or not yet);
* the operator actions (audit rows) of the last ``window`` seconds.

Rebuilding is *snapshot plus replay*, never a scan from the beginning: every ``every``
transitions (in time order) the order state is kept in ``timetravel_snapshots`` (open orders,
counts by status, compressed JSON). A jump loads the newest snapshot at or before the moment and
replays the transitions between it and the moment along the ``transitions_by_at`` index, so a
jump replays fewer than ``every`` rows however long the log is. A scrub (the next moment from
the one shown) replays only the rows between the two when it moves forward.

Orders moved to the archive (:mod:`core.archive`) are part of the past: when the archive file
can be read it is attached read-only and its transitions are replayed with the store's, in one
(time, seq) order, and its order rows stand in for the ones the store no longer holds. A missing
or damaged archive does not stop a moment: it is built from the store alone and
:attr:`Moment.archive` says what is left out (:attr:`Moment.archive_note`).

Snapshots are derived data and never wrong for long: the rows written after the last
:meth:`TimeMachine.refresh` (recorded as a ``seq`` in ``meta``) are checked on every jump, and a
snapshot later than the earliest of them (a row written with an older time, such as a bulk import)
is not used; the next refresh deletes it and rebuilds from the snapshot before. Archiving drops
every snapshot too (the store's ``archive.orders`` count is kept with the watermark), and so does
a change in whether the archive could be read (a snapshot records whether it replayed it).

Nothing here runs on the event loop: the async methods read on the store's reader threads and
write snapshots on its writer thread; the ``*_sync`` ones run on the calling thread.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import heapq
import json
import os
import re
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.archive import FINISHED_STATUSES, META_ARCHIVED, archive_path
from core.errors import InputError
from core.history import ArchiveState, archive_lost, attach_archive
from core.orders import OrderStatus
from core.store import ORDER_ROW_COLUMNS, ORDER_ROW_SQL, Store

_ALL_STATUSES = tuple(int(s) for s in OrderStatus)
OPEN_STATUSES = frozenset(int(s) for s in OrderStatus if s not in FINISHED_STATUSES)
"""Statuses of an order that is not finished (kept in snapshots, shown as open at a moment)."""
META_KEY = "timetravel.checked"
"""``meta`` key: ``{"seq": last transition seq the snapshots were checked against, "archived": n,
"with_archive": whether they replayed the archive's transitions too}``."""
SNAPSHOT_FORMAT = 1
_TRANSITION_COLS = "seq, order_id, from_status, to_status, at, who, why"
_REPLAY_COLS = "seq, order_id, from_status, to_status, at"
"""What a replay reads of each transition (who and why are not part of the state)."""


@dataclass(frozen=True, slots=True)
class LogRow:
    """One transition of the log: ``seq``, order, ``from``/``to`` status values, time, who, why."""

    seq: int
    order_id: str
    from_status: int | None
    to_status: int
    at: float
    who: str
    why: str | None


@dataclass(frozen=True, slots=True)
class InstrumentAt:
    """An instrument's state at a moment: the last row of its log at or before it."""

    instrument_id: str
    status: str | None
    """None: the log says nothing about it before the moment."""
    since: float | None
    detail: str | None
    order_ids: tuple[str, ...]
    """The orders (steps) the log names with that state, else the open Running orders assigned to it."""


@dataclass(frozen=True, slots=True)
class InboxAt:
    item_id: int
    kind: str
    priority: int
    title: str
    created: float
    run_id: str | None
    order_id: str | None
    instrument: str | None
    answered_at: float | None
    """When it was answered (after the moment), None if it still waits or expired."""


@dataclass(frozen=True, slots=True)
class ActionAt:
    """An operator action (audit row)."""

    seq: int
    at: float
    who: str
    action: str
    target: str | None
    reason: str | None


@dataclass
class OrderState:
    """The replayable part of a moment: open orders and counts by status."""

    open: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Order id -> (status value, since when)."""
    counts: dict[int, int] = field(default_factory=lambda: dict.fromkeys(_ALL_STATUSES, 0))
    """Status value -> how many orders were in it (every status has a key)."""
    applied: int = 0
    """Transitions applied (every transition at or before the position)."""
    position: tuple[float, int] = (float("-inf"), 0)
    """``(at, seq)`` of the last transition applied."""

    def copy(self) -> OrderState:
        return OrderState(dict(self.open), dict(self.counts), self.applied, self.position)

    def apply(self, rows: Iterable[tuple[Any, ...]]) -> int:
        """Apply transition rows ``(seq, order_id, from_status, to_status, at, ...)`` in log time
        order; rows at or before the position are skipped. Returns how many were applied."""
        open_, counts, pop, is_open = self.open, self.counts, self.open.pop, OPEN_STATUSES.__contains__
        pos_at, pos_seq = self.position
        n = 0
        for seq, oid, frm, to, at, *_rest in rows:
            if at <= pos_at and (at < pos_at or seq <= pos_seq):
                continue
            if frm is not None:
                counts[frm] -= 1
            counts[to] += 1
            if is_open(to):
                open_[oid] = (to, at)
            else:
                pop(oid, None)
            pos_at, pos_seq = at, seq
            n += 1
        self.position = (pos_at, pos_seq)
        self.applied += n
        return n

    def encode(self) -> bytes:
        data = {"format": SNAPSHOT_FORMAT, "applied": self.applied, "position": list(self.position),
                "counts": {str(k): v for k, v in self.counts.items() if v},
                "open": [[oid, s, t] for oid, (s, t) in self.open.items()]}
        return zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 1)

    @classmethod
    def decode(cls, blob: bytes) -> OrderState:
        data = json.loads(zlib.decompress(blob))
        if data.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {data.get('format')!r} is not {SNAPSHOT_FORMAT}")
        counts = dict.fromkeys(_ALL_STATUSES, 0)
        counts.update({int(k): v for k, v in data["counts"].items()})
        return cls({oid: (s, t) for oid, s, t in data["open"]}, counts, data["applied"],
                   (data["position"][0], data["position"][1]))


@dataclass
class Moment:
    """The workcell at ``at`` (epoch seconds), read-only."""

    at: float
    state: OrderState
    recent: list[LogRow]
    """Transitions of the last ``window`` seconds up to ``at``, newest first (at most ``limit``)."""
    instruments: dict[str, InstrumentAt]
    inbox: list[InboxAt]
    actions: list[ActionAt]
    """Operator actions of the last ``window`` seconds up to ``at``, newest first."""
    rows: dict[str, tuple[Any, ...]]
    """Order rows (``ORDER_ROW_COLUMNS``) of the orders running or paused then (at most
    ``row_limit``) and of the orders in :attr:`recent`: template, instrument, parent (what does not
    change with time). Others: :func:`order_rows`."""
    replayed: int
    """Transitions replayed to build this moment (from a snapshot, the moment before, or the start)."""
    snapshot_at: float | None
    """Time of the snapshot it started from (None: from the start or from the moment before)."""
    head: int = 0
    """The last transition ``seq`` in the log when it was built."""
    seconds: float = 0.0
    archive: ArchiveState | None = None
    """The archive when it was built: ``ok`` (its orders are part of the moment), ``none`` (there
    is none), ``missing`` or ``damaged`` (the moment holds the store's orders only)."""

    @property
    def with_archive(self) -> bool:
        """Whether the archive's orders are part of the moment."""
        return self.archive is not None and self.archive.state == "ok"

    @property
    def archive_note(self) -> str | None:
        """What the moment leaves out because the archive could not be read (None: nothing)."""
        if self.archive is None or self.archive.ok:
            return None
        n = self.archive.archived_orders
        what = "is missing" if self.archive.state == "missing" else "cannot be read"
        return (f"{n:,} archived orders are left out: the archive {self.archive.path} {what} "
                "(the store's orders are shown)")

    @property
    def open_orders(self) -> dict[str, tuple[int, float]]:
        return self.state.open

    def status_of(self, order_id: str) -> OrderStatus | None:
        """The order's status at the moment if it was open then (None otherwise)."""
        found = self.state.open.get(order_id)
        return OrderStatus(found[0]) if found is not None else None

    def count(self, status: OrderStatus) -> int:
        return max(0, self.state.counts.get(int(status), 0))

    def running_on(self, instrument_id: str) -> tuple[str, ...]:
        inst = self.instruments.get(instrument_id)
        return inst.order_ids if inst is not None else ()


@dataclass(frozen=True)
class RefreshReport:
    dropped: int
    built: int
    replayed: int
    seconds: float


@dataclass(frozen=True)
class ExportReport:
    path: Path
    transitions: int
    actions: int


class TimeMachine:
    """Rebuilds moments of one store. One per store; thread-safe for reads (no shared cursor)."""

    def __init__(self, store: Store, *, every: int = 5_000, window: float = 3600.0,
                 limit: int = 200, row_limit: int = 500, instruments: Sequence[str] | None = None,
                 archive: str | os.PathLike[str] | None = None) -> None:
        if every < 100:
            raise ValueError(f"every must be at least 100 transitions, not {every}")
        self.store = store
        self.archive_path = Path(archive) if archive is not None else archive_path(store.path)
        """The archive whose orders are part of the past (next to the store unless given)."""
        self.every = every
        self.window = window
        self.limit = limit
        self.row_limit = row_limit
        self.instruments = list(instruments) if instruments is not None else None
        """Instruments to show (the workcell's); None: every instrument the log names."""
        self._cache: tuple[tuple[float, int], OrderState] | None = None
        """The last snapshot decoded (a backward scrub starts from it without decoding again)."""

    # ------------------------------------------------------------------ snapshots

    async def refresh(self) -> RefreshReport:
        """Drop snapshots that later rows made stale and add one every ``every`` transitions up to
        the end of the log (reads on a reader thread, writes on the writer thread)."""
        t0 = time.perf_counter()
        # a long read (seconds per million new rows): on a thread of its own, not one of the
        # store's two reader threads that the panels' reads and the moments share
        plan = await asyncio.to_thread(self.store.read_sync, self._plan)
        for part in _parts(plan):  # a few snapshots per commit: the writer is never held long
            await self.store.write(functools.partial(self._write_plan, part=part))
        return self._report(plan, t0)

    def refresh_sync(self) -> RefreshReport:
        t0 = time.perf_counter()
        plan = self.store.read_sync(self._plan)
        for part in _parts(plan):
            self.store.write_sync(functools.partial(self._write_plan, part=part))
        return self._report(plan, t0)

    @staticmethod
    def _report(plan: dict[str, Any], t0: float) -> RefreshReport:
        return RefreshReport(plan["dropped"], len(plan["snapshots"]), plan["replayed"], time.perf_counter() - t0)

    def _plan(self, conn: sqlite3.Connection) -> dict[str, Any]:
        archive = attach_archive(conn, self.archive_path)
        try:
            return self._plan_in(conn, archive.state == "ok")
        except sqlite3.DatabaseError as exc:
            if archive.state != "ok" or _interrupted(exc):
                raise
            archive_lost(conn, archive, exc)
            return self._plan_in(conn, False)

    def _plan_in(self, conn: sqlite3.Connection, with_archive: bool) -> dict[str, Any]:
        conn.execute("BEGIN")
        try:
            head = conn.execute("SELECT coalesce(max(seq), 0) FROM main.transitions").fetchone()[0]
            valid_to = _valid_to(conn, with_archive)
            dropped = conn.execute("SELECT count(*) FROM timetravel_snapshots WHERE at > ?",
                                   (valid_to,)).fetchone()[0]
            base = conn.execute("SELECT data FROM timetravel_snapshots WHERE at <= ? ORDER BY at DESC, seq DESC "
                                "LIMIT 1", (valid_to,)).fetchone()
            state = OrderState.decode(base[0]) if base is not None else OrderState()
            snapshots: list[tuple[float, int, int, bytes]] = []
            replayed = 0
            cur = conn.execute(*_log(_REPLAY_COLS, "at >= ?", (state.position[0] if base is not None
                                                                else float("-inf"),), with_archive))
            while True:
                chunk = cur.fetchmany(self.every - (state.applied % self.every) or self.every)
                if not chunk:
                    break
                applied = state.apply(chunk)
                replayed += applied
                if applied and state.applied % self.every == 0:
                    snapshots.append((state.position[0], state.position[1], state.applied, state.encode()))
            return {"head": head, "valid_to": valid_to, "dropped": dropped, "snapshots": snapshots,
                    "replayed": replayed, "archived": _archived(conn), "with_archive": with_archive}
        finally:
            conn.execute("COMMIT")

    @staticmethod
    def _write_plan(conn: sqlite3.Connection, part: dict[str, Any]) -> None:
        if part["first"]:
            conn.execute("DELETE FROM timetravel_snapshots WHERE at > ?", (part["valid_to"],))
        conn.executemany("INSERT OR REPLACE INTO timetravel_snapshots (at, seq, transitions, data) "
                         "VALUES (?, ?, ?, ?)", part["snapshots"])
        if part["last"]:  # rows written between the plan and now are checked by the next jump or refresh
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         (META_KEY, json.dumps({"seq": part["head"], "archived": part["archived"],
                                                "with_archive": part["with_archive"]})))

    def snapshot_count(self) -> int:
        count: int = self.store.read_sync(
            lambda c: c.execute("SELECT count(*) FROM timetravel_snapshots").fetchone()[0])
        return count

    # ------------------------------------------------------------------ moments

    async def moment(self, at: float, *, previous: Moment | None = None) -> Moment:
        """The workcell at ``at``; ``previous`` (the moment shown before) lets a forward scrub
        replay only what lies between the two."""
        return await self.store.read(lambda c: self._moment(c, at, previous, True))

    def moment_sync(self, at: float, *, previous: Moment | None = None) -> Moment:
        return self.store.read_sync(lambda c: self._moment(c, at, previous, True))

    def replay_from_start_sync(self, at: float) -> Moment:
        """The same moment replayed from the first transition, without snapshots (the baseline
        snapshots are measured against, and a check of them)."""
        return self.store.read_sync(lambda c: self._moment(c, at, None, False))

    def _moment(self, conn: sqlite3.Connection, at: float, previous: Moment | None,
                use_snapshots: bool) -> Moment:
        archive = attach_archive(conn, self.archive_path)  # outside a transaction: ATTACH needs it
        try:
            return self._moment_in(conn, at, previous, use_snapshots, archive)
        except sqlite3.DatabaseError as exc:
            if archive.state != "ok" or _interrupted(exc):
                raise
            # the archive failed a read (damaged since it was attached): the store alone
            return self._moment_in(conn, at, previous, use_snapshots, archive_lost(conn, archive, exc))

    def _moment_in(self, conn: sqlite3.Connection, at: float, previous: Moment | None,
                   use_snapshots: bool, archive: ArchiveState) -> Moment:
        t0 = time.perf_counter()
        at = float(at)
        with_archive = archive.state == "ok"
        conn.execute("BEGIN")
        try:
            # the store is read first: an archive batch copies its orders before the store lets
            # them go, so the archive read after it holds every order the store no longer has
            head = conn.execute("SELECT coalesce(max(seq), 0) FROM main.transitions").fetchone()[0]
            valid_to = _valid_to(conn, with_archive) if use_snapshots else float("-inf")
            snapshot_at: float | None = None
            if use_snapshots and previous is not None and previous.at <= at and \
                    previous.with_archive == with_archive and _unchanged_before(conn, previous.head, previous.at):
                state = previous.state.copy()  # a forward scrub: only the rows in between
            else:
                state = self._snapshot(conn, at, valid_to) if use_snapshots else OrderState()
                snapshot_at = state.position[0] if state.applied else None
            if state.applied:
                rows = conn.execute(*_log(_REPLAY_COLS, "at >= ? AND at <= ?", (state.position[0], at),
                                          with_archive))
            else:
                rows = conn.execute(*_log(_REPLAY_COLS, "at <= ?", (at,), with_archive))
            replayed = state.apply(rows)
            moment = Moment(at, state, self._recent(conn, at, with_archive), self._instruments(conn, at, state),
                            self._inbox(conn, at), self._actions(conn, at), {}, replayed, snapshot_at, head,
                            archive=archive)
            moment.rows = self._rows(conn, moment)
            moment.instruments = self._with_running(moment)
        finally:
            conn.execute("COMMIT")
        moment.seconds = time.perf_counter() - t0
        return moment

    def _snapshot(self, conn: sqlite3.Connection, at: float, valid_to: float) -> OrderState:
        row = conn.execute("SELECT at, seq FROM timetravel_snapshots WHERE at <= ? ORDER BY at DESC, seq DESC "
                           "LIMIT 1", (min(at, valid_to),)).fetchone()
        if row is None:
            return OrderState()
        key = (row[0], row[1])
        cached = self._cache
        if cached is not None and cached[0] == key:
            return cached[1].copy()
        blob = conn.execute("SELECT data FROM timetravel_snapshots WHERE at = ? AND seq = ?", key).fetchone()[0]
        state = OrderState.decode(blob)
        self._cache = (key, state)
        return state.copy()

    def _recent(self, conn: sqlite3.Connection, at: float, with_archive: bool) -> list[LogRow]:
        sql, params = _log(_TRANSITION_COLS, "at > ? AND at <= ?", (at - self.window, at), with_archive,
                           order="ORDER BY at DESC, seq DESC LIMIT ?")
        return [LogRow(*r) for r in conn.execute(sql, (*params, self.limit))]

    def _instruments(self, conn: sqlite3.Connection, at: float, state: OrderState) -> dict[str, InstrumentAt]:
        ids = self.instruments
        if ids is None:
            ids = [r[0] for r in conn.execute("SELECT DISTINCT instrument_id FROM instrument_log ORDER BY 1")]
        out: dict[str, InstrumentAt] = {}
        for iid in ids:
            row = conn.execute("SELECT at, to_status, detail, order_ids FROM instrument_log "
                               "WHERE instrument_id = ? AND at <= ? ORDER BY at DESC, seq DESC LIMIT 1",
                               (iid, at)).fetchone()
            if row is None:
                out[iid] = InstrumentAt(iid, None, None, None, ())
            else:
                orders = tuple(json.loads(row[3])) if row[3] else ()
                out[iid] = InstrumentAt(iid, row[1], row[0], row[2], orders)
        return out

    def _inbox(self, conn: sqlite3.Connection, at: float) -> list[InboxAt]:
        return [InboxAt(*r) for r in conn.execute(
            "SELECT id, kind, priority, title, created, run_id, order_id, instrument, answered_at FROM inbox "
            "WHERE created <= ? AND (answered_at IS NULL OR answered_at > ?) "
            "ORDER BY priority DESC, created, id LIMIT ?", (at, at, self.limit))]

    def _actions(self, conn: sqlite3.Connection, at: float) -> list[ActionAt]:
        return [ActionAt(*r) for r in conn.execute(
            "SELECT seq, at, who, action, target, reason FROM audit WHERE at > ? AND at <= ? "
            "ORDER BY at DESC, seq DESC LIMIT ?", (at - self.window, at, self.limit))]

    def _rows(self, conn: sqlite3.Connection, moment: Moment) -> dict[str, tuple[Any, ...]]:
        running = {int(OrderStatus.Running), int(OrderStatus.Paused)}
        ids = [oid for oid, (status, _since) in moment.state.open.items() if status in running][:self.row_limit]
        ids += [r.order_id for r in moment.recent]
        return order_rows(conn, ids, archive=moment.with_archive)

    def _with_running(self, moment: Moment) -> dict[str, InstrumentAt]:
        """Fill in the steps running on each instrument from the open orders when its log names none."""
        assigned = ORDER_ROW_COLUMNS.index("assigned_to")
        by_instrument: dict[str, list[str]] = {}
        for oid, (status, _since) in moment.state.open.items():
            if status == int(OrderStatus.Running):
                row = moment.rows.get(oid)
                if row is not None and row[assigned]:
                    by_instrument.setdefault(row[assigned], []).append(oid)
        out = {}
        for iid, inst in moment.instruments.items():
            if not inst.order_ids and by_instrument.get(iid):
                inst = InstrumentAt(iid, inst.status, inst.since, inst.detail, tuple(by_instrument[iid]))
            out[iid] = inst
        return out

    # ------------------------------------------------------------------ reach and export

    def reach_sync(self) -> tuple[float, float] | None:
        """The first and last transition times, the archive's included (None: the log is empty)."""
        return self.store.read_sync(self._reach)

    async def reach(self) -> tuple[float, float] | None:
        return await self.store.read(self._reach)

    def _reach(self, conn: sqlite3.Connection) -> tuple[float, float] | None:
        first, last = conn.execute("SELECT min(at), max(at) FROM main.transitions").fetchone()
        archive = attach_archive(conn, self.archive_path)
        if archive.state == "ok":
            try:
                older = conn.execute("SELECT min(at) FROM archive.transitions").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                if _interrupted(exc):
                    raise
                archive_lost(conn, archive, exc)
            else:
                if older is not None:
                    first, last = (older, older) if first is None else (min(first, older), last)
        return None if first is None else (first, last)

    def export_sync(self, path: str | os.PathLike[str], start: float, end: float) -> ExportReport:
        """Write the transitions and operator actions of ``[start, end]`` to a CSV file, in time
        order (the file is written whole or not at all)."""
        if end < start:
            raise InputError.at(f"the period ends ({_iso(end)}) before it starts ({_iso(start)})", field="end")
        return self.store.read_sync(lambda c: self._export(c, Path(path), start, end))

    async def export(self, path: str | os.PathLike[str], start: float, end: float) -> ExportReport:
        if end < start:
            raise InputError.at(f"the period ends ({_iso(end)}) before it starts ({_iso(start)})", field="end")
        return await self.store.read(lambda c: self._export(c, Path(path), start, end))

    def _export(self, conn: sqlite3.Connection, path: Path, start: float, end: float) -> ExportReport:
        """The period's rows, the archived orders' transitions included when the archive can be read."""
        archive = attach_archive(conn, self.archive_path)
        try:
            return _export(conn, path, start, end, archive.state == "ok")
        except sqlite3.DatabaseError as exc:
            if archive.state != "ok" or _interrupted(exc):
                raise
            archive_lost(conn, archive, exc)
            return _export(conn, path, start, end, False)


EXPORT_COLUMNS = ("kind", "seq", "at", "at_epoch", "order_or_target", "from_status", "to_status_or_action",
                  "who", "why_or_reason")


def _export(conn: sqlite3.Connection, path: Path, start: float, end: float, with_archive: bool = False
            ) -> ExportReport:
    path = path.expanduser()
    counts = {"transition": 0, "action": 0}

    def transitions() -> Iterator[tuple[float, int, list[Any]]]:
        for seq, oid, frm, to, at, who, why in conn.execute(
                *_log(_TRANSITION_COLS, "at >= ? AND at <= ?", (start, end), with_archive)):
            counts["transition"] += 1
            yield at, 0, ["transition", seq, _iso(at), repr(at), oid,
                          OrderStatus(frm).name if frm is not None else "", OrderStatus(to).name, who, why or ""]

    def actions() -> Iterator[tuple[float, int, list[Any]]]:
        for seq, at, who, action, target, reason in conn.execute(
                "SELECT seq, at, who, action, target, reason FROM audit WHERE at >= ? AND at <= ? "
                "ORDER BY at, seq", (start, end)):
            counts["action"] += 1
            yield at, 1, ["action", seq, _iso(at), repr(at), target or "", "", action, who, reason or ""]

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    conn.execute("BEGIN")
    try:
        with partial.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(EXPORT_COLUMNS)
            for _at, _kind, row in heapq.merge(transitions(), actions(), key=lambda r: (r[0], r[1])):
                writer.writerow(row)
        os.replace(partial, path)
    finally:
        conn.execute("COMMIT")
        partial.unlink(missing_ok=True)
    return ExportReport(path, counts["transition"], counts["action"])


WRITE_BATCH = 20
"""Snapshots written per commit by a refresh."""


def _parts(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """A refresh's writes: the stale snapshots deleted in the first, the watermark moved in the last."""
    snaps = plan["snapshots"]
    chunks = [snaps[i:i + WRITE_BATCH] for i in range(0, len(snaps), WRITE_BATCH)] or [[]]
    return [{**plan, "snapshots": chunk, "first": i == 0, "last": i == len(chunks) - 1}
            for i, chunk in enumerate(chunks)]


def statuses_at(conn: sqlite3.Connection, order_ids: Sequence[str], at: float, *,
                archive: bool = False) -> dict[str, int]:
    """Each order's status after its last transition at or before ``at`` (500 ids a query; the
    log's order is (at, seq): several rows may share a time). Orders with none are left out.
    With ``archive`` (attached to ``conn``) the archive's transitions count too (a pending copy
    repeats the store's rows, seq and all, and changes nothing)."""
    out: dict[str, int] = {}
    for i in range(0, len(order_ids), 500):
        part = order_ids[i:i + 500]
        marks = ",".join("?" * len(part))
        source = "main.transitions"
        params: list[Any] = [at, *part]
        if archive:
            source = (f"(SELECT seq, order_id, to_status, at FROM main.transitions WHERE order_id IN ({marks}) "
                      f"UNION ALL SELECT seq, order_id, to_status, at FROM archive.transitions "
                      f"WHERE order_id IN ({marks}))")
            params = [*part, *part, at, *part]
        out.update(conn.execute(
            "SELECT order_id, to_status FROM (SELECT order_id, to_status, row_number() OVER "
            f"(PARTITION BY order_id ORDER BY at DESC, seq DESC) AS n FROM {source} "
            f"WHERE at <= ? AND order_id IN ({marks})) WHERE n = 1", params).fetchall())
    return out


def order_rows(conn: sqlite3.Connection, ids: Sequence[str], *, archive: bool = False) -> dict[str, tuple[Any, ...]]:
    """The light rows of these orders by id (primary-key look-ups, 500 at a time); with
    ``archive`` (attached to ``conn``), those the store no longer holds from the archive."""
    out: dict[str, tuple[Any, ...]] = {}
    unique = list(dict.fromkeys(ids))
    for schema in ("main", "archive") if archive else ("main",):
        for i in range(0, len(unique), 500):
            part = unique[i:i + 500]
            for r in conn.execute(f"SELECT {ORDER_ROW_SQL} FROM {schema}.orders "
                                  f"WHERE id IN ({','.join('?' * len(part))})", part):
                out.setdefault(r[0], r)
        unique = [i for i in unique if i not in out]
    return out


def attach_for(conn: sqlite3.Connection, moment: Moment) -> bool:
    """Attach the archive ``moment`` was built with to ``conn`` (a reader of the same store), so
    the moment's archived orders can be read there; whether it could (False: the store alone)."""
    if not moment.with_archive or moment.archive is None:
        return False
    return attach_archive(conn, moment.archive.path).state == "ok"


def _log(cols: str, where: str, params: Sequence[Any], with_archive: bool,
         order: str = "ORDER BY at, seq") -> tuple[str, list[Any]]:
    """A read of the transition log (``where`` on its columns), the archive's rows included
    with ``with_archive``: the two index walks merged in ``order``. An archive copy whose order is
    still in the store (an archive batch that has not let go of it yet) is left out."""
    sql = f"SELECT {cols} FROM main.transitions WHERE {where}"
    if not with_archive:
        return f"{sql} {order}", list(params)
    # the pending ids (at most a batch) are read once, not probed per row
    return (f"{sql} UNION ALL SELECT {cols} FROM archive.transitions WHERE {where} AND order_id NOT IN "
            "(SELECT p.id FROM archive.pending p WHERE EXISTS (SELECT 1 FROM main.orders m WHERE m.id = p.id)) "
            f"{order}", [*params, *params])


def _interrupted(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorname", "") == "SQLITE_INTERRUPT" or "interrupted" in str(exc))


def _archived(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM main.meta WHERE key = ?", (META_ARCHIVED,)).fetchone()
    return row[0] if row is not None else None


def _valid_to(conn: sqlite3.Connection, with_archive: bool = False) -> float:
    """The latest time a snapshot may have and still be right: before the earliest transition
    written after the last check (``inf``: all are right; ``-inf``: none, archiving moved rows,
    or the snapshots were built with the archive and it cannot be read now, or the other way)."""
    row = conn.execute("SELECT value FROM main.meta WHERE key = ?", (META_KEY,)).fetchone()
    if row is None:
        return float("-inf")
    checked = json.loads(row[0])
    if checked.get("archived") != _archived(conn) or bool(checked.get("with_archive")) != with_archive:
        return float("-inf")
    head = conn.execute("SELECT coalesce(max(seq), 0) FROM main.transitions").fetchone()[0]
    if head < checked["seq"]:
        return float("-inf")  # rows removed: the snapshots no longer describe this log
    late = conn.execute("SELECT min(at + 0) FROM main.transitions WHERE seq > ?", (checked["seq"],)).fetchone()[0]
    return float("inf") if late is None else float(late)


def _unchanged_before(conn: sqlite3.Connection, head: int, at: float) -> bool:
    """Whether no transition written after ``head`` lies at or before ``at`` (then a moment built
    at ``head`` is still right up to ``at``)."""
    # at + 0: walk the rows after head on the primary key, not the whole time index for min()
    late = conn.execute("SELECT min(at + 0) FROM main.transitions WHERE seq > ?", (head,)).fetchone()[0]
    return late is None or late > at


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


_RELATIVE = re.compile(r"^\s*-\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)\s*$", re.IGNORECASE)
_UNITS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_moment(text: str, *, now: float, tz: Any = None, field_name: str = "go to") -> float:
    """A moment typed by a person, as epoch seconds: an ISO date and time (``2026-11-27 03:10``,
    with or without seconds or offset; local time when no offset), a time of day (``03:10``: the
    last one at or before now), or an interval back from now (``-2h``, ``-30m``, ``-1d``)."""
    value = text.strip()
    if not value:
        raise InputError.at("type a date and time (2026-11-27 03:10), a time (03:10) or -2h", field=field_name)
    local = tz if tz is not None else datetime.now().astimezone().tzinfo
    m = _RELATIVE.match(value)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2).lower()]
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", value):
        parts = [int(p) for p in value.split(":")]
        if parts[0] > 23 or parts[1] > 59 or (len(parts) > 2 and parts[2] > 59):
            raise InputError.at(f"{value!r} is not a time of day (00:00 to 23:59)", field=field_name)
        today = datetime.fromtimestamp(now, local)
        moment = today.replace(hour=parts[0], minute=parts[1], second=parts[2] if len(parts) > 2 else 0,
                               microsecond=0)
        if moment.timestamp() > now:
            moment -= timedelta(days=1)
        return moment.timestamp()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError.at(f"{value!r} is not a date and time: type 2026-11-27 03:10, 03:10 or -2h",
                            field=field_name) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=local)
    return parsed.timestamp()
