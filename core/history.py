"""All of history, searched on disk: the live window, paged search, dashboard counts.

The console keeps only the *live window* in memory: every unfinished order plus the ones that
finished in the last few days (:meth:`HistorySearch.live_window`). Everything else is reached by
:meth:`HistorySearch.search`, which queries SQLite off the event loop (``await store.read``):

* text over id, template, instrument (``assigned_to``), status details and notes, through the
  FTS5 index ``orders_fts`` (words match as prefixes: ``ham star`` finds "Hamilton STAR 1"), or
  with ``LIKE`` (``text_mode="like"``: substrings, no index; the baseline the FTS index is
  measured against);
* filters: statuses, templates, a time range on ``created`` and one on ``ended``;
* newest first (``created`` then ``id``, descending), in pages of ``limit`` rows. The next page
  starts after the last row of this one (:attr:`HistoryPage.next_cursor`; keyset, not OFFSET,
  so page 1000 costs what page 1 costs).

A new search supersedes the one before: a superseded query that has not started is skipped, one
that runs is interrupted (a progress handler on its connection), and its caller gets
:class:`SearchSuperseded`.

The archive (:mod:`core.archive`) is attached read-only to the reader connections and searched
with the store; pages merge both, and each row says where it came from. An archive file that is
missing or damaged does not stop anything: the page holds the store's rows and
:attr:`HistoryPage.archive` says what is wrong.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.archive import (
    ARCHIVE_APPLICATION_ID,
    FINISHED_STATUSES,
    META_ARCHIVED,
    archive_path,
)
from core.errors import LabconsoleError, OrderNotFoundError
from core.orders import Order, OrderStatus
from core.store import ORDER_ROW_COLUMNS, SQLITE_HEADER, Store, Transition

ARCHIVED_COLUMN = len(ORDER_ROW_COLUMNS)
"""Index of the extra column of a search row: 1 if the row comes from the archive, else 0."""
ROW_COLUMNS = (*ORDER_ROW_COLUMNS, "archived")
DAY = 86400.0
_PROGRESS_STEPS = 1000
"""SQLite virtual machine steps between two looks at whether the query was superseded."""
_FINISHED_SQL = ", ".join(str(int(s)) for s in sorted(FINISHED_STATUSES))
_UNFINISHED_SQL = ", ".join(str(int(s)) for s in OrderStatus if s not in FINISHED_STATUSES)
_TOKEN = re.compile(r"[^\W_]+")
TEXT_MODES = ("fts", "like")

Cursor = tuple[float, str]
"""Where a page ended: (created, id) of its last row."""


class SearchSuperseded(LabconsoleError):  # noqa: N818 - it names what happened, not a failure
    """A newer search replaced this one before it finished."""


@dataclass(frozen=True)
class HistoryQuery:
    """What to look for. Empty fields do not filter."""

    text: str = ""
    statuses: frozenset[OrderStatus] = frozenset()
    templates: frozenset[str] = frozenset()
    created_from: float | None = None
    created_to: float | None = None
    """Half-open range ``[created_from, created_to)``, epoch seconds; likewise for ``ended``."""
    ended_from: float | None = None
    ended_to: float | None = None
    limit: int = 100
    text_mode: str = "fts"

    def __post_init__(self) -> None:
        if self.text_mode not in TEXT_MODES:
            raise ValueError(f"text_mode must be one of {', '.join(TEXT_MODES)}, not {self.text_mode!r}")
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")


@dataclass(frozen=True)
class ArchiveState:
    """Whether the archive could be searched: ``none`` (there is none), ``ok``, ``missing``, ``damaged``."""

    state: str
    path: Path
    archived_orders: int = 0
    """How many orders the store says it moved to the archive."""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state in ("none", "ok")


@dataclass(frozen=True)
class HistoryPage:
    rows: list[tuple[Any, ...]]
    """``ROW_COLUMNS``: the order's row plus 1 if it is archived, newest first."""
    next_cursor: Cursor | None
    """Pass it to get the next page; None: this was the last."""
    archive: ArchiveState
    seconds: float = 0.0


@dataclass(frozen=True)
class Reach:
    """How far back history goes: the oldest ``created`` in the store and in the archive."""

    oldest_live: float | None
    oldest_archived: float | None
    live_orders: int
    archived_orders: int
    archive: ArchiveState

    @property
    def oldest(self) -> float | None:
        known = [t for t in (self.oldest_live, self.oldest_archived) if t is not None]
        return min(known) if known else None


@dataclass(frozen=True)
class DashboardCounts:
    """Counts for the Dashboard, from indexes (no order rows are loaded)."""

    by_status: dict[OrderStatus, int] = field(default_factory=dict)
    """Orders in the store by status (archived orders are in :attr:`archived`)."""
    archived: int = 0
    created_today: int = 0
    completed_today: int = 0
    failed_today: int = 0
    canceled_today: int = 0


class HistorySearch:
    """Search, live window and counts over the store and its archive."""

    def __init__(self, store: Store, archive: Path | None = None) -> None:
        self.store = store
        self.archive_path = Path(archive) if archive is not None else archive_path(store.path)
        self._generation = 0

    # ------------------------------------------------------------------ search

    def cancel(self) -> None:
        """Supersede the running search (if any) without starting another."""
        self._generation += 1

    async def search(self, query: HistoryQuery, cursor: Cursor | None = None) -> HistoryPage:
        """One page of matches, newest first; supersedes any search still running."""
        self._generation += 1
        generation = self._generation
        try:
            return await self.store.read(lambda c: self._search(c, query, cursor, generation))
        except asyncio.CancelledError:
            if self._generation == generation:
                self._generation += 1  # interrupt the query the cancelled caller was waiting for
            raise

    def search_sync(self, query: HistoryQuery, cursor: Cursor | None = None) -> HistoryPage:
        """:meth:`search` on the calling thread (scripts, benchmarks)."""
        self._generation += 1
        generation = self._generation
        return self.store.read_sync(lambda c: self._search(c, query, cursor, generation))

    async def count(self, query: HistoryQuery, *, cap: int = 10_000) -> tuple[int, bool]:
        """How many orders match (store and archive), counted up to ``cap``: (count, more than cap)."""
        generation = self._generation
        return await self.store.read(lambda c: self._count(c, query, cap, generation))

    def _search(self, conn: sqlite3.Connection, query: HistoryQuery, cursor: Cursor | None,
                generation: int) -> HistoryPage:
        t0 = time.perf_counter()
        with self._guard(conn, generation):
            state = self._attach(conn)
            rows = self._page(conn, "main", query, cursor)
            if state.state == "ok":
                try:
                    rows += self._page(conn, "archive", query, cursor)
                except sqlite3.DatabaseError as exc:
                    if _interrupted(exc):
                        raise
                    state = self._lost(conn, state, exc)
        rows.sort(key=lambda r: (r[8] or 0.0, r[0]), reverse=True)
        page = rows[:query.limit]
        more = len(rows) > query.limit or len(page) == query.limit
        next_cursor = (page[-1][8] or 0.0, page[-1][0]) if page and more else None
        return HistoryPage(page, next_cursor, state, time.perf_counter() - t0)

    def _count(self, conn: sqlite3.Connection, query: HistoryQuery, cap: int, generation: int) -> tuple[int, bool]:
        total = 0
        with self._guard(conn, generation):
            state = self._attach(conn)
            for schema in ("main", "archive") if state.state == "ok" else ("main",):
                where, params = _where(schema, query, None)
                sql = f"SELECT count(*) FROM (SELECT 1 FROM {schema}.orders o{where} LIMIT ?)"
                try:
                    total += conn.execute(sql, (*params, cap + 1 - total)).fetchone()[0]
                except sqlite3.DatabaseError as exc:
                    if _interrupted(exc) or schema == "main":
                        raise
                    self._lost(conn, state, exc)
                if total > cap:
                    return cap, True
        return total, False

    def _page(self, conn: sqlite3.Connection, schema: str, query: HistoryQuery,
              cursor: Cursor | None) -> list[tuple[Any, ...]]:
        where, params = _where(schema, query, cursor)
        archived = 1 if schema == "archive" else 0
        cols = ", ".join(f"o.{c}" for c in ORDER_ROW_COLUMNS)
        sql = (f"SELECT {cols}, {archived} FROM {schema}.orders o{where} "
               f"ORDER BY o.created DESC, o.id DESC LIMIT ?")
        return conn.execute(sql, (*params, query.limit)).fetchall()

    class _Guarded:
        def __init__(self, owner: HistorySearch, conn: sqlite3.Connection, generation: int) -> None:
            self.owner, self.conn, self.generation = owner, conn, generation

        def __enter__(self) -> None:
            if self.owner._generation != self.generation:
                raise SearchSuperseded("a newer search replaced this one")
            self.conn.set_progress_handler(self._stale, _PROGRESS_STEPS)

        def _stale(self) -> int:
            return 1 if self.owner._generation != self.generation else 0

        def __exit__(self, kind: object, exc: object, tb: object) -> None:
            self.conn.set_progress_handler(None, 0)
            if isinstance(exc, sqlite3.DatabaseError) and _interrupted(exc):
                raise SearchSuperseded("a newer search replaced this one") from None

    def _guard(self, conn: sqlite3.Connection, generation: int) -> HistorySearch._Guarded:
        return HistorySearch._Guarded(self, conn, generation)

    # ------------------------------------------------------------------ the archive

    def archive_state(self) -> ArchiveState:
        """Whether the archive can be searched (checked on a reader connection of this thread)."""
        return self.store.read_sync(self._attach)

    def _archived_count(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM main.meta WHERE key = ?", (META_ARCHIVED,)).fetchone()
        return int(row[0]) if row is not None else 0

    def _attach(self, conn: sqlite3.Connection) -> ArchiveState:
        """Attach the archive to ``conn`` read-only (once per connection); say whether it is usable."""
        path = self.archive_path
        archived = self._archived_count(conn)
        attached = any(r[1] == "archive" for r in conn.execute("PRAGMA database_list"))
        exists = path.is_file() and path.stat().st_size > 0
        if attached:
            if exists:
                return ArchiveState("ok", path, archived)
            conn.execute("DETACH DATABASE archive")
        if not exists:
            if archived:
                return ArchiveState("missing", path, archived,
                                    f"the archive {path} is missing: {archived} archived orders "
                                    "cannot be searched (put the file back to search them)")
            return ArchiveState("none", path, 0)
        try:
            with open(path, "rb") as f:
                header = f.read(16)
        except OSError as exc:
            return ArchiveState("damaged", path, archived, f"the archive {path} cannot be read: "
                                f"{exc.strerror}; only the store is searched")
        if header != SQLITE_HEADER:
            return ArchiveState("damaged", path, archived, f"the archive {path} is not a SQLite "
                                "database (bad header); only the store is searched")
        try:
            conn.execute("ATTACH DATABASE ? AS archive", (f"{path.resolve().as_uri()}?mode=ro",))
            app_id = conn.execute("PRAGMA archive.application_id").fetchone()[0]
            if app_id != ARCHIVE_APPLICATION_ID:
                conn.execute("DETACH DATABASE archive")
                return ArchiveState("damaged", path, archived, f"the archive {path} is not a "
                                    f"labconsole archive (application_id={app_id}); only the store is searched")
            conn.execute("SELECT 1 FROM archive.orders LIMIT 1").fetchall()
            conn.execute("SELECT 1 FROM archive.orders_fts LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            return self._lost(conn, ArchiveState("ok", path, archived), exc)
        return ArchiveState("ok", path, archived)

    @staticmethod
    def _lost(conn: sqlite3.Connection, state: ArchiveState, exc: sqlite3.DatabaseError) -> ArchiveState:
        try:
            conn.execute("DETACH DATABASE archive")
        except sqlite3.DatabaseError:
            pass
        return ArchiveState("damaged", state.path, state.archived_orders,
                            f"the archive {state.path} is damaged ({exc}); only the store is searched")

    # ------------------------------------------------------------------ live window and counts

    async def live_window(self, days: float = 7.0, *, now: float | None = None) -> list[tuple[Any, ...]]:
        """Every unfinished order plus those finished in the last ``days`` (``ORDER_ROW_COLUMNS``,
        oldest first by arrival)."""
        cutoff = (time.time() if now is None else now) - days * DAY
        return await self.store.read(lambda c: live_window_rows(c, cutoff))

    async def dashboard(self, day_start: float) -> DashboardCounts:
        """Counts by status and today's (since ``day_start``, epoch seconds) from indexes."""
        return await self.store.read(lambda c: dashboard_counts(c, day_start))

    async def reach(self) -> Reach:
        """How far back the store and the archive reach and how many orders each holds."""
        return await self.store.read(self._reach)

    def _reach(self, conn: sqlite3.Connection) -> Reach:
        state = self._attach(conn)
        oldest_live = conn.execute("SELECT min(created) FROM main.orders").fetchone()[0]
        live = conn.execute("SELECT count(*) FROM main.orders").fetchone()[0]
        oldest_archived = None
        archived = state.archived_orders
        if state.state == "ok":
            try:
                oldest_archived = conn.execute("SELECT min(created) FROM archive.orders").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                state = self._lost(conn, state, exc)
        return Reach(oldest_live, oldest_archived, live, archived, state)

    # ------------------------------------------------------------------ one order, wherever it is

    async def order(self, order_id: str) -> tuple[Order, bool]:
        """The order and whether it is archived; :class:`OrderNotFoundError` if it is in neither."""
        found = await self.store.read(lambda c: self._one(c, "SELECT data FROM {}.orders WHERE id = ?",
                                                          (order_id,)))
        if not found[0]:
            raise OrderNotFoundError(order_id)
        return Order.model_validate_json(found[0][0][0]), found[1]

    async def transitions(self, order_id: str) -> list[Transition]:
        """The order's transitions from the store, or from the archive if it moved there."""
        rows, _ = await self.store.read(lambda c: self._one(
            c, "SELECT seq, order_id, from_status, to_status, at, who, why FROM {}.transitions "
               "WHERE order_id = ? ORDER BY seq", (order_id,)))
        return [Transition(r[0], r[1], OrderStatus(r[2]) if r[2] is not None else None,
                           OrderStatus(r[3]), r[4], r[5], r[6]) for r in rows]

    def _one(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> tuple[list[Any], bool]:
        rows = conn.execute(sql.format("main"), params).fetchall()
        if rows or conn.execute("SELECT 1 FROM main.orders WHERE id = ?", (params[0],)).fetchone():
            return rows, False
        state = self._attach(conn)
        if state.state != "ok":
            return [], False
        try:
            return conn.execute(sql.format("archive"), params).fetchall(), True
        except sqlite3.DatabaseError as exc:
            self._lost(conn, state, exc)
            return [], False


# ---------------------------------------------------------------------- SQL


def fts_expression(text: str) -> str:
    """The FTS5 query for what a person typed: every word, as a prefix, all required."""
    return " AND ".join(f'"{t}"*' for t in _TOKEN.findall(text.lower()))


def _like(word: str) -> str:
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _where(schema: str, query: HistoryQuery, cursor: Cursor | None) -> tuple[str, list[Any]]:
    conds: list[str] = []
    params: list[Any] = []
    if query.statuses:
        conds.append(f"o.status IN ({', '.join(str(int(s)) for s in sorted(query.statuses))})")
    if query.templates:
        conds.append(f"o.template_name IN ({', '.join('?' for _ in query.templates)})")
        params.extend(sorted(query.templates))
    for column, low, high in (("created", query.created_from, query.created_to),
                              ("ended", query.ended_from, query.ended_to)):
        if low is not None:
            conds.append(f"o.{column} >= ?")
            params.append(low)
        if high is not None:
            conds.append(f"o.{column} < ?")
            params.append(high)
    if cursor is not None:
        conds.append("(o.created, o.id) < (?, ?)")
        params.extend(cursor)
    text = query.text.strip()
    expression = fts_expression(text) if query.text_mode == "fts" else ""
    if expression:
        conds.append(f"o.seq IN (SELECT rowid FROM {schema}.orders_fts WHERE orders_fts MATCH ?)")
        params.append(expression)
    elif text:
        for word in text.split():
            conds.append("(o.id LIKE ? ESCAPE '\\' OR o.template_name LIKE ? ESCAPE '\\' "
                         "OR o.assigned_to LIKE ? ESCAPE '\\' OR o.status_details LIKE ? ESCAPE '\\' "
                         "OR json_extract(o.data, '$.notes') LIKE ? ESCAPE '\\')")
            params.extend([_like(word)] * 5)
    if schema == "archive":  # a copy whose order is still in the store is only pending
        conds.append("NOT EXISTS (SELECT 1 FROM main.orders m WHERE m.id = o.id)")
    return (" WHERE " + " AND ".join(conds) if conds else ""), params


def live_window_rows(conn: sqlite3.Connection, cutoff: float) -> list[tuple[Any, ...]]:
    """Unfinished orders plus those finished at or after ``cutoff`` (three indexed ranges)."""
    cols = ", ".join(ORDER_ROW_COLUMNS)
    return conn.execute(
        f"SELECT {cols} FROM (SELECT seq, {cols} FROM orders WHERE status IN ({_UNFINISHED_SQL}) "
        f"UNION ALL SELECT seq, {cols} FROM orders WHERE ended >= ? AND status IN ({_FINISHED_SQL}) "
        f"UNION ALL SELECT seq, {cols} FROM orders WHERE status IN ({_FINISHED_SQL}) "
        "AND created >= ? AND ended IS NULL) ORDER BY seq", (cutoff, cutoff)).fetchall()


def dashboard_counts(conn: sqlite3.Connection, day_start: float) -> DashboardCounts:
    """Counts by status (an index-only scan) and today's counts (index ranges since ``day_start``)."""
    by_status = {OrderStatus(s): n for s, n in conn.execute(
        "SELECT status, count(*) FROM orders INDEXED BY orders_by_status_created GROUP BY status")}
    ended_today = dict(conn.execute(
        "SELECT status, count(*) FROM orders WHERE ended >= ? GROUP BY status", (day_start,)).fetchall())
    created_today = conn.execute("SELECT count(*) FROM orders WHERE created >= ?",
                                 (day_start,)).fetchone()[0]
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_ARCHIVED,)).fetchone()
    return DashboardCounts(by_status, int(row[0]) if row else 0, created_today,
                           ended_today.get(int(OrderStatus.Complete), 0),
                           ended_today.get(int(OrderStatus.Error), 0),
                           ended_today.get(int(OrderStatus.Canceled), 0))


def _interrupted(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorname", "") == "SQLITE_INTERRUPT" or "interrupted" in str(exc))


__all__ = ["ROW_COLUMNS", "ArchiveState", "DashboardCounts", "HistoryPage", "HistoryQuery",
           "HistorySearch", "Reach", "SearchSuperseded", "dashboard_counts", "fts_expression",
           "live_window_rows"]
