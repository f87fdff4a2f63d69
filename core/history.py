"""All of history, searched on disk: the live window, paged search, dashboard counts.

The console keeps only the *live window* in memory: every unfinished order plus the ones that
finished in the last few days (:meth:`HistorySearch.live_window`). Everything else is reached by
:meth:`HistorySearch.search`, which queries SQLite off the event loop (``await store.read``):

* text over id, template, instrument (``assigned_to``), status details and notes, through the
  FTS5 index ``orders_fts`` (whole words, all required, any case and accents: ``hamilton star``
  finds "Hamilton STAR 1"; ``ham*`` is a prefix), or with ``LIKE`` (``text_mode="like"``:
  substrings, no index; the baseline the FTS index is measured against). Whole words keep
  every query a walk along the index: a prefix merges the lists of every word it matches
  first (0.3 s for a word in a third of a million orders, against 1 ms for the whole word);
* filters: statuses, templates, a time range on ``created`` and one on ``ended``;
* newest first (by arrival: ``seq`` descending), in pages of ``limit`` rows. The next page
  starts after the last row of this one (:attr:`HistoryPage.next_cursor`; keyset, not OFFSET,
  so page 1000 costs what page 1 costs). Each query reads along one index in that order and
  stops after ``limit`` rows (see :func:`_page_sql` for which index leads).

A new search supersedes the one before: a superseded query that has not started is skipped, one
that runs is interrupted (``conn.interrupt()``), and its caller gets
:class:`SearchSuperseded`.

The archive (:mod:`core.archive`) is attached read-only to the reader connections and searched
with the store; pages merge both, and each row says where it came from. An archive file that is
missing or damaged does not stop anything: the page holds the store's rows and
:attr:`HistoryPage.archive` says what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
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

ROW_COLUMNS = (*ORDER_ROW_COLUMNS, "seq", "archived")
"""A search row: the order's light row, its ``seq``, and 1 if it comes from the archive, else 0."""
SEQ_COLUMN = len(ORDER_ROW_COLUMNS)
ARCHIVED_COLUMN = SEQ_COLUMN + 1
DAY = 86400.0
_FINISHED_SQL = ", ".join(str(int(s)) for s in sorted(FINISHED_STATUSES))
_UNFINISHED_SQL = ", ".join(str(int(s)) for s in OrderStatus if s not in FINISHED_STATUSES)
_TOKEN = re.compile(r"[^\W_]+")
TEXT_MODES = ("fts", "like")

Cursor = int
"""Where a page ended: the ``seq`` of its last row (the next page holds older orders)."""


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

    range_rows_cap = 50_000
    """A time range holding fewer rows than this drives the query (its rows are sorted); a wider
    one too when it holds fewer than ten times this and the rows after it outnumber its own (a
    range far back: the newest-first scan would walk every later row first); else it is only a
    filter on the newest-first scan."""

    def __init__(self, store: Store, archive: Path | None = None) -> None:
        self.store = store
        self.archive_path = Path(archive) if archive is not None else archive_path(store.path)
        self._generation = 0
        self._running: dict[int, tuple[int, sqlite3.Connection]] = {}
        """Queries running now: thread id -> (generation, connection), to interrupt the stale."""
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ search

    def cancel(self) -> None:
        """Supersede the running search (if any) without starting another."""
        self._supersede()

    def _supersede(self) -> int:
        with self._lock:
            self._generation += 1
            for generation, conn in self._running.values():
                if generation != self._generation:
                    conn.interrupt()
            return self._generation

    async def search(self, query: HistoryQuery, cursor: Cursor | None = None) -> HistoryPage:
        """One page of matches, newest first; supersedes any search still running."""
        generation = self._supersede()
        try:
            if _uses_text_index(query) and cursor is None:
                await self.store.catch_up_text_index()  # what was just written is found too
            return await self.store.read(lambda c: self._search(c, query, cursor, generation))
        except asyncio.CancelledError:
            if self._generation == generation:
                self._supersede()  # interrupt the query the cancelled caller was waiting for
            raise

    def search_sync(self, query: HistoryQuery, cursor: Cursor | None = None) -> HistoryPage:
        """:meth:`search` on the calling thread (scripts, benchmarks)."""
        generation = self._supersede()
        if _uses_text_index(query) and cursor is None:
            self.store.catch_up_text_index_sync()
        return self.store.read_sync(lambda c: self._search(c, query, cursor, generation))

    async def count(self, query: HistoryQuery, *, cap: int = 10_000) -> tuple[int, bool]:
        """How many orders match (store and archive), counted up to ``cap``: (count, more than cap).
        Superseded, like a page, by the next search."""
        generation = self._generation
        if _uses_text_index(query):
            await self.store.catch_up_text_index()
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
        rows.sort(key=lambda r: r[SEQ_COLUMN], reverse=True)
        page = rows[:query.limit]
        more = len(rows) > query.limit or len(page) == query.limit
        next_cursor = page[-1][SEQ_COLUMN] if page and more else None
        return HistoryPage(page, next_cursor, state, time.perf_counter() - t0)

    def _count(self, conn: sqlite3.Connection, query: HistoryQuery, cap: int, generation: int) -> tuple[int, bool]:
        total = 0
        with self._guard(conn, generation):
            state = self._attach(conn)
            for schema in ("main", "archive") if state.state == "ok" else ("main",):
                sql, params = _count_sql(schema, query)
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
        """The newest ``limit`` matches in ``schema``: one or more queries, each newest first
        along an index, merged."""
        rows: list[tuple[Any, ...]] = []
        for sql, params in _page_sql(conn, schema, query, cursor, self.range_rows_cap):
            rows += conn.execute(sql, (*params, query.limit)).fetchall()
        return rows

    @contextlib.contextmanager
    def _guard(self, conn: sqlite3.Connection, generation: int) -> Iterator[None]:
        """Register the query so a newer search can interrupt it; skip it if already stale."""
        me = threading.get_ident()
        with self._lock:
            if self._generation != generation:
                raise SearchSuperseded("a newer search replaced this one")
            self._running[me] = (generation, conn)
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if _interrupted(exc):
                raise SearchSuperseded("a newer search replaced this one") from None
            raise
        finally:
            with self._lock:
                self._running.pop(me, None)

    # ------------------------------------------------------------------ the archive

    def archive_state(self) -> ArchiveState:
        """Whether the archive can be searched (checked on a reader connection of this thread)."""
        return self.store.read_sync(self._attach)

    def _attach(self, conn: sqlite3.Connection) -> ArchiveState:
        return attach_archive(conn, self.archive_path)

    @staticmethod
    def _lost(conn: sqlite3.Connection, state: ArchiveState, exc: sqlite3.DatabaseError) -> ArchiveState:
        return archive_lost(conn, state, exc)

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

    def archived_order(self, order_id: str) -> Order:
        """An archived order (on the calling thread); :class:`OrderNotFoundError` if it is not
        in the archive (or is still in the store)."""
        rows, archived = self.store.read_sync(lambda c: self._one(
            c, "SELECT data FROM {}.orders WHERE id = ?", (order_id,)))
        if not rows or not archived:
            raise OrderNotFoundError(order_id)
        return Order.model_validate_json(rows[0][0])

    def archived_transitions(self, order_id: str) -> list[Transition]:
        """The transitions of an archived order (on the calling thread); [] if it is not archived."""
        rows, archived = self.store.read_sync(lambda c: self._one(
            c, "SELECT seq, order_id, from_status, to_status, at, who, why FROM {}.transitions "
               "WHERE order_id = ? ORDER BY seq", (order_id,)))
        return [Transition(r[0], r[1], OrderStatus(r[2]) if r[2] is not None else None,
                           OrderStatus(r[3]), r[4], r[5], r[6]) for r in rows] if archived else []

    def child_ids(self, run_id: str) -> list[str]:
        """The step orders of a run, wherever the run is (a run moves to the archive whole)."""
        rows, _ = self.store.read_sync(lambda c: self._one(
            c, "SELECT id FROM {}.orders WHERE parent_id = ? ORDER BY seq", (run_id,)))
        return [r[0] for r in rows]

    def is_archived(self, order_id: str) -> bool:
        """Whether ``order_id`` is in the archive and no longer in the store."""
        rows, archived = self.store.read_sync(lambda c: self._one(
            c, "SELECT 1 FROM {}.orders WHERE id = ?", (order_id,)))
        return bool(rows) and archived

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


# ---------------------------------------------------------------------- the archive on a connection


def archived_count(conn: sqlite3.Connection) -> int:
    """How many orders the store says it moved to the archive."""
    row = conn.execute("SELECT value FROM main.meta WHERE key = ?", (META_ARCHIVED,)).fetchone()
    return int(row[0]) if row is not None else 0


def archive_attached(conn: sqlite3.Connection) -> bool:
    return any(r[1] == "archive" for r in conn.execute("PRAGMA database_list"))


def attach_archive(conn: sqlite3.Connection, path: Path) -> ArchiveState:
    """Attach the archive at ``path`` to ``conn`` read-only as ``archive`` (once per connection;
    not inside a transaction) and say whether it is usable. A missing or damaged file is
    detached and reported, never raised."""
    archived = archived_count(conn)
    attached = archive_attached(conn)
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
        conn.execute("SELECT v FROM archive.orders_fts_config LIMIT 1").fetchall()
    except sqlite3.DatabaseError as exc:
        return archive_lost(conn, ArchiveState("ok", path, archived), exc)
    return ArchiveState("ok", path, archived)


def archive_lost(conn: sqlite3.Connection, state: ArchiveState, exc: sqlite3.DatabaseError) -> ArchiveState:
    """Detach an archive that failed a read; the state that says so."""
    try:
        conn.execute("DETACH DATABASE archive")
    except sqlite3.DatabaseError:
        pass
    return ArchiveState("damaged", state.path, state.archived_orders,
                        f"the archive {state.path} is damaged ({exc}); only the store is searched")


# ---------------------------------------------------------------------- SQL


def fts_expression(text: str) -> str:
    """The FTS5 query for what a person typed: every word required, as a whole word; a word
    ending in ``*`` as a prefix (``ham*`` finds Hamilton). Punctuation separates words, as in
    the index (``Order_00042`` is the words ``order`` and ``00042``)."""
    terms: list[str] = []
    for word in text.split():
        tokens = _TOKEN.findall(word.lower())
        for number, token in enumerate(tokens):
            star = "*" if word.endswith("*") and number == len(tokens) - 1 else ""
            terms.append(f'"{token}"{star}')
    return " AND ".join(terms)


def _like(word: str) -> str:
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _filters(query: HistoryQuery, *, skip_range: str | None = None) -> tuple[list[str], list[Any]]:
    """Conditions on ``o`` for statuses, templates and time ranges."""
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
    return conds, params


def _text(schema: str, query: HistoryQuery) -> tuple[str | None, list[str], list[Any]]:
    """(FTS5 expression or None, LIKE conditions, their parameters) for the query's text."""
    text = query.text.strip()
    if not text:
        return None, [], []
    expression = fts_expression(text) if query.text_mode == "fts" else ""
    if expression:
        return expression, [], []
    conds: list[str] = []
    params: list[Any] = []
    for word in text.split():
        conds.append("(o.id LIKE ? ESCAPE '\\' OR o.template_name LIKE ? ESCAPE '\\' "
                     "OR o.assigned_to LIKE ? ESCAPE '\\' OR o.status_details LIKE ? ESCAPE '\\' "
                     "OR json_extract(o.data, '$.notes') LIKE ? ESCAPE '\\')")
        params.extend([_like(word)] * 5)
    return None, conds, params


def _pending(schema: str) -> list[str]:
    # an archive copy whose order is still in the store is only pending (core.archive)
    return ["NOT EXISTS (SELECT 1 FROM main.orders m WHERE m.id = o.id)"] if schema == "archive" else []


_COLS = ", ".join(f"o.{c}" for c in ORDER_ROW_COLUMNS)


def _page_sql(conn: sqlite3.Connection, schema: str, query: HistoryQuery, cursor: Cursor | None,
              range_cap: int) -> list[tuple[str, list[Any]]]:
    """The queries whose merged results, newest (highest seq) first, are the page.

    Which index leads: a narrow time range (its rows sorted by seq); else the text's FTS5 index
    (rowids = seq, read newest first, stops at ``limit``); else one query per status or per
    template along (status, seq) / (template, seq); else seq itself. The other filters apply
    to the rows the leading index yields.
    """
    archived = 1 if schema == "archive" else 0
    select = f"SELECT {_COLS}, o.seq, {archived}"
    conds, params = _filters(query)
    conds += _pending(schema)
    expression, like, like_params = _text(schema, query)
    conds += like
    params += like_params
    if cursor is not None:
        conds.append("o.seq < ?")
        params.append(cursor)
    order = " ORDER BY o.seq DESC LIMIT ?"
    narrow = _narrow_range(conn, schema, query, range_cap)
    if narrow is not None:
        if expression:
            conds.append(f"o.seq IN (SELECT rowid FROM {schema}.orders_fts WHERE orders_fts MATCH ?)")
            params.append(expression)
        return [(f"{select} FROM {schema}.orders o INDEXED BY {narrow} WHERE {' AND '.join(conds)}{order}",
                 params)]
    if expression:
        fts_conds = ["orders_fts MATCH ?", *(["f.rowid < ?"] if cursor is not None else []), *conds]
        fts_params = [expression, *([cursor] if cursor is not None else []), *params]
        return [(f"{select} FROM {schema}.orders_fts f CROSS JOIN {schema}.orders o "
                 f"INDEXED BY orders_by_seq ON o.seq = f.rowid WHERE {' AND '.join(fts_conds)} "
                 "ORDER BY f.rowid DESC LIMIT ?", fts_params)]
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    if query.statuses:
        return [(f"{select} FROM {schema}.orders o INDEXED BY orders_by_status_seq{where} "
                 f"AND o.status = {int(status)}{order}", params)
                for status in sorted(query.statuses)]
    if query.templates:
        return [(f"{select} FROM {schema}.orders o INDEXED BY orders_by_template_seq{where} "
                 f"AND o.template_name = ?{order}", [*params, name])
                for name in sorted(query.templates)]
    return [(f"{select} FROM {schema}.orders o INDEXED BY orders_by_seq{where}{order}", params)]


def _narrow_range(conn: sqlite3.Connection, schema: str, query: HistoryQuery, cap: int) -> str | None:
    """The index of the query's time range if it should lead: it holds fewer than ``cap`` rows,
    or fewer than ``10 * cap`` and fewer than the rows after it (the newest-first scan would
    walk those before reaching the range: arrival order follows time), else None."""
    best: tuple[int, str] | None = None
    for column, index, low, high in (("created", "orders_by_created", query.created_from, query.created_to),
                                     ("ended", "orders_by_ended", query.ended_from, query.ended_to)):
        if low is None and high is None:
            continue
        bounds = " AND ".join([*([f"{column} >= ?"] if low is not None else []),
                               *([f"{column} < ?"] if high is not None else [])])
        values = [v for v in (low, high) if v is not None]
        count = f"SELECT count(*) FROM (SELECT 1 FROM {schema}.orders INDEXED BY {index} WHERE {{}} LIMIT ?)"
        n = conn.execute(count.format(bounds), (*values, cap)).fetchone()[0]
        if n >= cap and high is not None:  # wide: lead only if the scan would walk more rows first
            n = conn.execute(count.format(bounds), (*values, 10 * cap)).fetchone()[0]
            later = conn.execute(count.format(f"{column} >= ?"), (high, n + 1)).fetchone()[0]
            if n >= 10 * cap or later <= n:
                continue
        elif n >= cap:
            continue
        if best is None or n < best[0]:
            best = (n, index)
    return best[1] if best is not None else None


def _count_sql(schema: str, query: HistoryQuery) -> tuple[str, list[Any]]:
    conds, params = _filters(query)
    conds += _pending(schema)
    expression, like, like_params = _text(schema, query)
    conds += like
    params += like_params
    if expression:
        conds.append(f"o.seq IN (SELECT rowid FROM {schema}.orders_fts WHERE orders_fts MATCH ?)")
        params.append(expression)
    where = (" WHERE " + " AND ".join(conds)) if conds else ""
    return f"SELECT count(*) FROM (SELECT 1 FROM {schema}.orders o{where} LIMIT ?)", params


def _live_window_sql(extra: str = "") -> str:
    cols = ", ".join(ORDER_ROW_COLUMNS)
    return (f"SELECT {cols}{extra} FROM orders WHERE rowid IN ("
            f"SELECT rowid FROM orders INDEXED BY orders_by_status_seq WHERE status IN ({_UNFINISHED_SQL}) "
            "UNION ALL SELECT rowid FROM orders INDEXED BY orders_by_ended WHERE ended >= :cut "
            "UNION ALL SELECT rowid FROM orders INDEXED BY orders_unended WHERE ended IS NULL "
            f"AND status IN ({_FINISHED_SQL}) AND created >= :cut "
            "UNION ALL SELECT rowid FROM orders INDEXED BY orders_by_source WHERE source_id IN "
            f"(SELECT coalesce(source_id, id) FROM orders INDEXED BY orders_by_status_seq "
            f"WHERE status IN ({_UNFINISHED_SQL}))) ORDER BY seq")


def live_window_rows(conn: sqlite3.Connection, cutoff: float) -> list[tuple[Any, ...]]:
    """Unfinished orders, those finished at or after ``cutoff`` (or, without an end time,
    created since), and the older steps of unfinished runs, so a live run is shown whole.

    Four index ranges give the rows' rowids without touching the table: (status, seq), ended,
    the unended, and source_id of the unfinished runs' families; ``IN`` merges them without
    duplicates and the rows are then read in rowid order (the order the table is stored in)
    instead of one random page per row."""
    return conn.execute(_live_window_sql(), {"cut": cutoff}).fetchall()


_ADOPTED_SQL = (", CASE WHEN parent_id IS NULL OR EXISTS (SELECT 1 FROM runs WHERE run_id = orders.parent_id) "
                "THEN 0 ELSE EXISTS (SELECT 1 FROM runs WHERE run_id = orders.id) END")
"""Whether a row is a run made for another order (an order claimed from Data Services: the run's parent is that order, not a run): one index probe per
row with a parent, two for such a run."""


def live_window_scan(conn: sqlite3.Connection, cutoff: float,
                     adopted: dict[str, str]) -> Iterator[tuple[Any, ...]]:
    """The rows of :func:`live_window_rows`, streamed from the cursor (the list of every row is
    never held: a reader turns them into its own structures one at a time), with the runs made
    for another order given as runs (parent cleared) and recorded in ``adopted`` (run id ->
    that order) as they pass."""
    return _as_runs(conn.execute(_live_window_sql(_ADOPTED_SQL), {"cut": cutoff}), adopted)


def _adopted_sql(schema: str) -> str:
    """:data:`_ADOPTED_SQL` for the rows of ``schema``'s orders read as ``o``."""
    return (f", CASE WHEN o.parent_id IS NULL OR EXISTS (SELECT 1 FROM {schema}.runs WHERE run_id = o.parent_id) "
            f"THEN 0 ELSE EXISTS (SELECT 1 FROM {schema}.runs WHERE run_id = o.id) END")


def rows_of(conn: sqlite3.Connection, order_ids: Sequence[str],
            adopted: dict[str, str], *, archive: bool = False) -> Iterator[tuple[Any, ...]]:
    """The rows of ``order_ids`` (those the store holds; any order), as :func:`live_window_scan`
    gives them, 500 ids a query. With ``archive`` (attached to ``conn``), those the store no
    longer holds are read from the archive after them."""
    cols = ", ".join(ORDER_ROW_COLUMNS)
    found: set[str] = set()
    for i in range(0, len(order_ids), 500):
        part = json.dumps(list(order_ids[i:i + 500]))
        for row in _as_runs(conn.execute(
                f"SELECT {cols}{_ADOPTED_SQL} FROM orders WHERE id IN (SELECT value FROM json_each(?)) "
                "ORDER BY seq", (part,)), adopted):
            found.add(row[0])
            yield row
    if not archive:
        return
    rest = [o for o in dict.fromkeys(order_ids) if o not in found]
    acols = ", ".join(f"o.{c}" for c in ORDER_ROW_COLUMNS)
    for i in range(0, len(rest), 500):
        part = json.dumps(rest[i:i + 500])
        yield from _as_runs(conn.execute(
            f"SELECT {acols}{_adopted_sql('archive')} FROM archive.orders o "
            "WHERE o.id IN (SELECT value FROM json_each(?)) ORDER BY o.seq", (part,)), adopted)


def rows_ended_between(conn: sqlite3.Connection, start: float, end: float,
                       adopted: dict[str, str], *, archive: bool = False) -> Iterator[tuple[Any, ...]]:
    """The rows of the orders that ended after ``start`` and at or before ``end`` (an index
    range), as :func:`live_window_scan` gives them. With ``archive`` (attached to ``conn``),
    the archived ones follow (a copy whose order is still in the store is left out)."""
    cols = ", ".join(ORDER_ROW_COLUMNS)
    yield from _as_runs(conn.execute(
        f"SELECT {cols}{_ADOPTED_SQL} FROM orders INDEXED BY orders_by_ended WHERE ended > ? AND ended <= ? "
        "ORDER BY seq", (start, end)), adopted)
    if archive:
        acols = ", ".join(f"o.{c}" for c in ORDER_ROW_COLUMNS)
        yield from _as_runs(conn.execute(
            f"SELECT {acols}{_adopted_sql('archive')} FROM archive.orders o INDEXED BY orders_by_ended "
            f"WHERE o.ended > ? AND o.ended <= ? AND {_pending('archive')[0]} ORDER BY o.seq",
            (start, end)), adopted)


def step_orders(conn: sqlite3.Connection, run_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """Run id -> step id -> order id of these runs' steps (500 runs a query)."""
    ids = list(run_ids)
    out: dict[str, dict[str, str]] = {r: {} for r in ids}
    for i in range(0, len(ids), 500):
        part = ids[i:i + 500]
        for run_id, step_id, order_id in conn.execute(
                f"SELECT run_id, step_id, order_id FROM step_runs WHERE run_id IN ({','.join('?' * len(part))})",
                part):
            out.setdefault(run_id, {})[step_id] = order_id
    return out


def _as_runs(rows: Iterable[tuple[Any, ...]], adopted: dict[str, str]) -> Iterator[tuple[Any, ...]]:
    for row in rows:
        if row[-1]:
            adopted[row[0]] = row[1]
            yield (row[0], None, *row[2:-1])
        else:
            yield row[:-1]


def stored_count(conn: sqlite3.Connection) -> int:
    """How many orders the store holds (live and finished), from an index alone."""
    return int(conn.execute("SELECT count(*) FROM orders INDEXED BY orders_by_status_seq").fetchone()[0])


def dashboard_counts(conn: sqlite3.Connection, day_start: float) -> DashboardCounts:
    """Counts by status (an index-only scan) and today's counts (index ranges since ``day_start``)."""
    by_status = {OrderStatus(s): n for s, n in conn.execute(
        "SELECT status, count(*) FROM orders INDEXED BY orders_by_status_seq GROUP BY status")}
    ended_today = dict(conn.execute(
        "SELECT status, count(*) FROM orders INDEXED BY orders_by_ended WHERE ended >= ? GROUP BY status",
        (day_start,)).fetchall())
    created_today = conn.execute("SELECT count(*) FROM orders INDEXED BY orders_by_created WHERE created >= ?",
                                 (day_start,)).fetchone()[0]
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (META_ARCHIVED,)).fetchone()
    return DashboardCounts(by_status, int(row[0]) if row else 0, created_today,
                           ended_today.get(int(OrderStatus.Complete), 0),
                           ended_today.get(int(OrderStatus.Error), 0),
                           ended_today.get(int(OrderStatus.Canceled), 0))


def _uses_text_index(query: HistoryQuery) -> bool:
    return bool(query.text.strip()) and query.text_mode == "fts"


def _interrupted(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorname", "") == "SQLITE_INTERRUPT" or "interrupted" in str(exc))


__all__ = ["ROW_COLUMNS", "ArchiveState", "archive_attached", "archive_lost", "attach_archive", "DashboardCounts", "HistoryPage", "HistoryQuery",
           "HistorySearch", "Reach", "SearchSuperseded", "dashboard_counts", "fts_expression",
           "live_window_rows", "live_window_scan", "rows_ended_between", "rows_of", "step_orders"]
