"""The Jobs table model: every order in memory, filtered and sorted in Python.

:class:`OrdersTableModel` adapts plain order rows (``core.store.ORDER_ROW_COLUMNS`` tuples) to a
``QAbstractTableModel``. Design, after specs/performance.md §B.4-B.6:

- All rows live in one dict (id -> row). The visible rows are one list kept **sorted ascending by
  a unique key** (the column's value, then the order's arrival rank), with a parallel list of
  their column values; a descending sort only maps view row ``r`` to list index ``n - 1 - r``. Finding,
  inserting, moving or removing one row is a bisection, never a scan; no
  Qt sort-filter proxy. Only the sort values are kept (no tuple per row: the rank is in the
  row). Rows are grouped by value when a column has few distinct values, and numbers are sorted
  with a numpy argsort (:func:`sort_method`): sorting 100,000 rows takes 10-50 ms.
- Repeated strings (templates, instruments, details, a step's run id) are one shared object each.
- Filtering is one compiled predicate per row (:class:`panels.jobs_filter.OrderFilter`).
- A frame of changes from the bridge costs O(changes): rows whose sort key or filter membership
  did not change are replaced in place (one ranged ``dataChanged`` over the visible rows); the
  others move with ``beginMoveRows`` (the selection follows them) or enter and leave with
  insert/remove signals. A frame that moves very many rows rebuilds the list in one go instead.
- Runs are parent orders; their progress and current step are derived from their step orders'
  rows and the instruments' progress reports (``StepProgress``), kept per order, O(1) per event.
"""

from __future__ import annotations

import gc
import sys
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, repeat
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QAbstractTableModel,
    QMimeData,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QGuiApplication, QIcon, QPalette

from core.orders import OrderPriority, OrderStatus
from panels.jobs_eta import NO_ETA, EtaCell
from panels.jobs_filter import (
    ASSIGNED,
    CREATED,
    DETAILS,
    ENDED,
    ID,
    NPRI,
    PARENT,
    PRIORITY,
    STARTED,
    STATUS,
    TEMPLATE,
    VERSION,
    OrderFilter,
    Predicate,
    Row,
)
from panels.style import SKIPPED, display_color, display_icon
from panels.theme import Theme, current_theme, theme_events

ModelIndex = QModelIndex | QPersistentModelIndex

PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 1
"""Progress as a fraction 0..1 (None when unknown); the progress column's delegate draws it."""
ORDER_ID_ROLE = Qt.ItemDataRole.UserRole + 2
"""The order id of the row, in every column."""
TREE_ROLE = Qt.ItemDataRole.UserRole + 3
"""In the tree, on the id of a step shown under its run: "mid", or "last" for the run's last
shown step (the id column's delegate draws the branch lines); None otherwise."""
ORDER_MIME = "application/x-labconsole-order-ids"
"""What a dragged row carries: its order id (UTF-8)."""


def priority_for_drop(above: int | None, below: int | None, *, highest_first: bool) -> int:
    """The numeric priority (0-100) that places a run between the rows ``above`` and ``below``
    it (their numeric priorities; None at either end of the list) in a list sorted by priority,
    highest first (or lowest first). Between two neighbours it takes the middle; next to one
    with no room left it ties with it (ties keep their arrival order)."""
    if not highest_first:  # the same question seen from the other end of the list
        above, below = below, above
    if above is not None and below is not None:
        if above - below >= 2:
            return (above + below + 1) // 2
        return max(0, min(100, below + 1))
    if below is not None:
        return min(100, below + 1)
    if above is not None:
        return max(0, above - 1)
    return 50

_STATUS_NAMES = {int(s): s.name for s in OrderStatus}
_PRIORITY_NAMES = {int(p): p.name for p in OrderPriority}
_COMPLETE = int(OrderStatus.Complete)
_RUNNING = int(OrderStatus.Running)
_SCHEDULED = int(OrderStatus.Scheduled)
_ERROR = int(OrderStatus.Error)
_PAUSED = int(OrderStatus.Paused)
_CANCELED = int(OrderStatus.Canceled)
_TERMINAL = frozenset(int(s) for s in (OrderStatus.Complete, OrderStatus.Canceled,
                                       OrderStatus.Invalid, OrderStatus.Consolidated))

REBUILD_THRESHOLD = 400
"""A frame that moves more rows than this (or than 2 % of them) rebuilds the list at once."""

GROUP_SAMPLE = 1024
"""Sort values sampled to choose how to sort (:func:`sort_method`)."""
GROUP_LIMIT = 64
"""At most this many distinct values in the sample: rows are grouped by value."""


def sort_method(values: list[Any]) -> str:
    """How :meth:`OrderIndex.visible` sorts rows by ``values`` (one per row); each way gives
    the order of a stable ``sorted()``.

    ``group``: few distinct values (statuses, templates, instruments): one dict pass groups rows
    by value, only the distinct values are sorted. ``numeric``: many distinct values: a stable
    numpy argsort when they are numbers (times, durations), else (ids) Python's sort.
    ``compare``: few rows: Python's sort.
    """
    n = len(values)
    if n <= GROUP_SAMPLE:
        return "compare"
    if len(set(values[:: n // GROUP_SAMPLE])) <= GROUP_LIMIT:
        return "group"
    return "numeric"

_intern = sys.intern


def format_time(ts: float | None) -> str:
    """Local time, short: ``11-23 14:03:22`` (the tooltip has the full date)."""
    return datetime.fromtimestamp(ts).strftime("%m-%d %H:%M:%S") if ts else ""


def format_full_time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if ts else ""


def format_duration(seconds: float | None) -> str:
    """``42 s``, ``3:05``, ``1:02:07``, ``2 d 4 h``."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}:{s % 60:02d}"
    if s < 86400:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 86400} d {s % 86400 // 3600} h"


@dataclass(frozen=True)
class Column:
    """One column of the table: header, default width, and how to show and sort a row."""

    key: str
    header: str
    width: int
    text: Callable[[OrderIndex, Row], str]
    sort: Callable[[OrderIndex, Row], Any]
    align: Qt.AlignmentFlag = Qt.AlignmentFlag.AlignLeft
    tip: str = ""
    derived: bool = False
    """Depends on other rows or on progress reports, not only on the row itself."""


RANK = 12
"""Position the model appends to each row: its arrival rank, the unique tie-breaker of sorts."""


def _id_key(_m: OrderIndex, r: Row) -> Any:
    # Shorter ids first, so Order_999 sorts before Order_1000.
    return f"{len(r[ID]):04d}{r[ID]}"


def _run_key(_m: OrderIndex, r: Row) -> Any:
    # A run, then its steps: the run's own key, then 0 for the run and 1 for its steps.
    run = r[PARENT] or r[ID]
    return f"{len(run):04d}{run}\x00{0 if r[PARENT] is None else 1}"


def _duration_key(_m: OrderIndex, r: Row) -> Any:
    # Stable over time (a running order's duration grows, its key must not): not started, then
    # finished orders by duration, then running ones, the longest-running last.
    if r[STARTED] is None:
        return -1.0
    if r[ENDED] is not None:
        return r[ENDED] - r[STARTED]
    return 1e12 - r[STARTED]


def _progress_key(m: OrderIndex, r: Row) -> Any:
    p = m.progress(r)
    return -1.0 if p is None else p


# Sort keys are scalars of one type per column (str, float or int), so Python's sort uses its
# fast type-specialised comparisons; ties keep arrival order (the sort is stable).
COLUMNS: list[Column] = [
    Column("id", "ID", 136, lambda m, r: r[ID], _id_key,
           tip="Order identifier (runs in bold; ▸ click, + or - to show or hide their steps)"),
    Column("template", "Template", 176, lambda m, r: r[TEMPLATE] or "", lambda m, r: r[TEMPLATE] or "",
           tip="Workflow template of a run, or the step's instrument capability"),
    Column("version", "Ver.", 38, lambda m, r: r[VERSION] or "", lambda m, r: r[VERSION] or "",
           Qt.AlignmentFlag.AlignRight, tip="Template version"),
    Column("status", "Status", 100, lambda m, r: _STATUS_NAMES[r[STATUS]], lambda m, r: r[STATUS]),
    Column("eta", "ETA", 84, lambda m, r: m.etas.get(r[ID], NO_ETA).text,
           lambda m, r: m.etas.get(r[ID], NO_ETA).done, Qt.AlignmentFlag.AlignRight, derived=True,
           tip="Forecast completion (median of the plays): a run's end, or a step's end"),
    Column("eta_band", "ETA p10–p90", 140, lambda m, r: m.etas.get(r[ID], NO_ETA).band,
           lambda m, r: m.etas.get(r[ID], NO_ETA).late, derived=True,
           tip="A run's forecast completion band (p10–p90), or why it has no ETA"),
    Column("priority", "Priority", 100,
           lambda m, r: f"{_PRIORITY_NAMES.get(r[PRIORITY], '?')} · {r[NPRI]}",
           lambda m, r: r[PRIORITY] * 1000 - r[NPRI], tip="Biosero priority · numeric priority (0-100)"),
    Column("instrument", "Instrument", 116, lambda m, r: r[ASSIGNED] or "", lambda m, r: r[ASSIGNED] or ""),
    Column("progress", "Progress", 96, lambda m, r: m.progress_text(r), _progress_key,
           Qt.AlignmentFlag.AlignRight, derived=True,
           tip="Steps done of a run, or the instrument's report for a running step"),
    Column("step", "Current step", 176, lambda m, r: m.current_step(r),
           lambda m, r: m.current_step(r), derived=True,
           tip="The step a run is at (running, queued, or where it failed)"),
    Column("duration", "Duration", 72, lambda m, r: m.duration_text(r), _duration_key,
           Qt.AlignmentFlag.AlignRight, tip="Ended - started, or running for"),
    Column("created", "Created", 106, lambda m, r: format_time(r[CREATED]),
           lambda m, r: r[CREATED] or 0.0),
    Column("started", "Started", 106, lambda m, r: format_time(r[STARTED]),
           lambda m, r: r[STARTED] or 0.0),
    Column("ended", "Ended", 106, lambda m, r: format_time(r[ENDED]), lambda m, r: r[ENDED] or 0.0),
    Column("run", "Run", 100, lambda m, r: r[PARENT] or "", _run_key,
           tip="The run (parent order) a step order belongs to"),
    Column("details", "Details", 240, lambda m, r: r[DETAILS] or "", lambda m, r: r[DETAILS] or ""),
]
COLUMN_KEYS = [c.key for c in COLUMNS]
STATUS_COLUMN = COLUMN_KEYS.index("status")
RUN_COLUMN = COLUMN_KEYS.index("run")
PROGRESS_COLUMN = COLUMN_KEYS.index("progress")
DURATION_COLUMN = COLUMN_KEYS.index("duration")
ETA_COLUMN = COLUMN_KEYS.index("eta")
ETA_BAND_COLUMN = COLUMN_KEYS.index("eta_band")
PRIORITY_COLUMN = COLUMN_KEYS.index("priority")
"""The column sorting by Biosero priority, then numeric priority (the dispatch order)."""
_TIME_POS = {COLUMN_KEYS.index("created"): CREATED, COLUMN_KEYS.index("started"): STARTED,
             COLUMN_KEYS.index("ended"): ENDED}
_ALIGN = [int(c.align | Qt.AlignmentFlag.AlignVCenter) for c in COLUMNS]
"""Each column's text alignment, as the views ask for it (once per cell and paint)."""
_CELL_FLAGS = Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemNeverHasChildren
"""A table cell's flags (QAbstractTableModel's own)."""
_DRAG_FLAGS = _CELL_FLAGS | Qt.ItemFlag.ItemIsDragEnabled
_DROP_FLAGS = Qt.ItemFlag.ItemIsDropEnabled
"""Where no row is: drops go between rows."""


class OrderIndex:
    """Every order row by id, runs' step orders and progress reports: plain Python, no Qt.

    Derived values (a run's progress and current step, running durations) are computed here
    from the rows. It can be built on a worker thread (:meth:`build`) and handed to the model.
    """

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now
        self.all: dict[str, Row] = {}
        """id -> row (with its rank at :data:`RANK`), in arrival order."""
        self.children: dict[str, list[str]] = {}
        self.position: dict[str, int] = {}
        """Step order id -> its place in its run (1, 2, ...: template order)."""
        self.fraction: dict[str, float] = {}
        """Latest progress report (0..1) of running orders."""
        self.templates: set[str] = set()
        self.instruments: set[str] = set()
        self.next_rank = 0
        self.etas: dict[str, EtaCell] = {}
        """Order id -> its ETA cells (the latest forecast; :meth:`OrdersTableModel.set_etas`)."""

    @classmethod
    def build(cls, rows: Iterable[tuple[Any, ...]], now: Callable[[], float] = time.time) -> OrderIndex:
        """An index over store order rows (thread-safe: touches only the new object)."""
        ix = cls(now)
        collecting = gc.isenabled()
        gc.disable()  # 100k+ fresh tuples without cycles: no collector passes over them
        try:
            every = ix.all
            share = ix.share
            for rank, r in enumerate(rows):
                every[r[ID]] = share(r, rank)
            ix.next_rank = len(every)
            children, position = ix.children, ix.position
            for r in every.values():
                if r[PARENT] is not None:
                    kids = children.setdefault(r[PARENT], [])
                    kids.append(r[ID])
                    position[r[ID]] = len(kids)
            ix.templates = {r[TEMPLATE] for r in every.values() if r[TEMPLATE]}
            ix.instruments = {r[ASSIGNED] for r in every.values() if r[ASSIGNED]}
        finally:
            if collecting:
                gc.enable()
        return ix

    def share(self, row: tuple[Any, ...], rank: int) -> Row:
        """The stored form of a store row: its rank appended, repeated strings shared.

        Template names, versions, instruments and details repeat across thousands of rows; a
        step's run id is the run row's own id object. One copy each instead of one per row.
        """
        oid, parent, template, version, status, prio, npri, assigned, created, started, ended, details = row[:RANK]
        if parent is not None:
            run = self.all.get(parent)
            parent = run[ID] if run is not None else _intern(parent)
        return (oid, parent, template and _intern(template), version and _intern(version), status, prio, npri,
                assigned and _intern(assigned), created, started, ended, details and _intern(details), rank)

    def visible(self, pred: Predicate | None, sort_column: int,
                tree: Tree | None = None) -> tuple[list[Any], list[Row]]:
        """Filter and sort every row: (sort values ascending, rows in the same order).

        The order is by (value, tie); the tie of a row is ``row[RANK]`` (or :meth:`tie` in a
        tree), so the values alone are kept (no tuple per row).
        """
        collecting = gc.isenabled()
        gc.disable()
        try:
            # The rows are taken in tie order and the sort is stable: sorting by the column's
            # scalar alone orders ties by rank, i.e. exactly by the composite (value, tie) key.
            # In a tree a step's value is its run's, so it stays next to it.
            every = self.tree_order(tree.desc) if tree is not None else self.all.values()
            rows = list(every) if pred is None else [r for r in every if pred(r)]
            primary = COLUMNS[sort_column].sort
            if tree is not None:
                run_of = self.run_of
                prim = [primary(self, run_of(r)) for r in rows]
            else:
                prim = [primary(self, r) for r in rows]
            n = len(prim)
            how = sort_method(prim)
            if how == "group":
                # Few distinct values: group by value (each group stays in rank order).
                groups: dict[Any, list[Row]] = {}
                for value, r in zip(prim, rows, strict=True):
                    group = groups.get(value)
                    if group is None:
                        groups[value] = [r]
                    else:
                        group.append(r)
                values = sorted(groups)
                ordered = list(chain.from_iterable(map(groups.__getitem__, values)))
                keys = list(chain.from_iterable(repeat(v, len(groups[v])) for v in values))
                return keys, ordered
            if how == "numeric" and isinstance(prim[0], int | float):
                array = np.array(prim)
                if array.dtype.kind in "if":
                    # Times, durations, priorities: a stable argsort gives the order sorted() would.
                    positions = np.argsort(array, kind="stable")
                    return array[positions].tolist(), list(map(rows.__getitem__, positions.tolist()))
            elif how == "numeric":
                by_value = dict(zip(prim, rows, strict=True))
                if len(by_value) == n:
                    # Every value different (ids): sorting the values alone gives the same order
                    # as the stable sort, in a third of its time.
                    values = sorted(by_value)
                    return values, list(map(by_value.__getitem__, values))
            order = sorted(range(n), key=prim.__getitem__)
            return list(map(prim.__getitem__, order)), list(map(rows.__getitem__, order))
        finally:
            if collecting:
                gc.enable()

    # ------------------------------------------------------------------ runs as a tree

    def run_of(self, row: Row) -> Row:
        """The run row a step belongs to (a run, a plain order or an orphan step: itself)."""
        parent = row[PARENT]
        if parent is None:
            return row
        run = self.all.get(parent)
        return row if run is None else run

    def tie(self, row: Row, desc: bool) -> tuple[int, int]:
        """A row's place among equal sort values in a tree: its run's rank, then 0 for the run
        and its position for a step (negated when the view reads the list backwards, so a run's
        steps still follow it in template order)."""
        parent = row[PARENT]
        if parent is not None:
            run = self.all.get(parent)
            if run is not None:
                sub = self.position.get(row[ID], 0)
                return (run[RANK], -sub if desc else sub)
        return (row[RANK], 0)

    def tree_order(self, desc: bool) -> list[Row]:
        """Every row in tie order (:meth:`tie`): each run (or plain order) by rank, its steps
        around it."""
        out: list[Row] = []
        every, children = self.all, self.children
        append, extend = out.append, out.extend
        for r in every.values():
            parent = r[PARENT]
            if parent is not None and parent in every:
                continue
            kids = children.get(r[ID])
            if not kids:
                append(r)
                continue
            steps = [every[k] for k in kids if k in every]
            if desc:
                steps.reverse()
                extend(steps)
                append(r)
            else:
                append(r)
                extend(steps)
        return out

    def tree_predicate(self, pred: Predicate | None, tree: Tree) -> Predicate:
        """Which rows a tree shows: a run (or plain order) when it or one of its steps passes
        ``pred``; a step when its run is shown and expanded."""
        every, children = self.all, self.children

        def run_passes(run: Row) -> bool:
            if pred is None or pred(run):
                return True
            kids = children.get(run[ID])
            return kids is not None and any(pred(every[k]) for k in kids if k in every)

        shows = tree.shows

        def passes(r: Row) -> bool:
            parent = r[PARENT]
            if parent is None:
                return run_passes(r)
            run = every.get(parent)
            if run is None:
                return run_passes(r)
            return shows(parent) and run_passes(run)

        return passes

    def put(self, row: tuple[Any, ...]) -> tuple[Row, bool]:
        """Store a new version of an order row; returns (stored row, whether a name is new)."""
        oid = row[ID]
        old = self.all.get(oid)
        if old is None:
            rank = self.next_rank
            self.next_rank += 1
            if row[PARENT] is not None:
                kids = self.children.setdefault(row[PARENT], [])
                kids.append(oid)
                self.position[oid] = len(kids)
        else:
            rank = old[RANK]
        stored = self.share(row, rank)
        self.all[oid] = stored
        if row[STATUS] != _RUNNING:
            self.fraction.pop(oid, None)
        new_name = False
        if stored[TEMPLATE] and stored[TEMPLATE] not in self.templates:
            self.templates.add(stored[TEMPLATE])
            new_name = True
        if stored[ASSIGNED] and stored[ASSIGNED] not in self.instruments:
            self.instruments.add(stored[ASSIGNED])
            new_name = True
        return stored, new_name

    def drop(self, ids: Iterable[str]) -> None:
        """Forget these orders (and their places in their runs)."""
        every, children, position, fraction = self.all, self.children, self.position, self.fraction
        for oid in ids:
            row = every.pop(oid, None)
            if row is None:
                continue
            fraction.pop(oid, None)
            position.pop(oid, None)
            children.pop(oid, None)
            parent = row[PARENT]
            kids = children.get(parent) if parent is not None else None
            if kids is not None:
                kids.remove(oid)
                if not kids:
                    del children[parent]

    # ------------------------------------------------------------------ derived values

    def progress(self, row: Row) -> float | None:
        """Fraction done: a run's completed steps (plus running steps' reports), a step's report."""
        status = row[STATUS]
        if status == _COMPLETE:
            return 1.0
        kids = self.children.get(row[ID])
        if kids:
            done = 0.0
            every = self.all
            for kid in kids:
                k = every.get(kid)
                if k is None:
                    continue
                if k[STATUS] == _COMPLETE:
                    done += 1.0
                elif k[STATUS] == _RUNNING:
                    done += self.fraction.get(kid, 0.0)
            return done / len(kids)
        if status == _RUNNING:
            return self.fraction.get(row[ID])
        return None

    def progress_text(self, row: Row) -> str:
        p = self.progress(row)
        return "" if p is None else f"{int(p * 100 + 1e-9)} %"

    def current_step(self, row: Row) -> str:
        """For a run: the step order it is at (running, else queued, else failed or paused)."""
        kids = self.children.get(row[ID])
        if not kids or row[STATUS] == _COMPLETE:
            return ""
        by_status: dict[int, list[Row]] = {}
        for kid in kids:
            k = self.all.get(kid)
            if k is not None:
                by_status.setdefault(k[STATUS], []).append(k)
        for status, mark in ((_RUNNING, "▶ "), (_SCHEDULED, "◷ "), (_ERROR, "✕ "), (_PAUSED, "‖ ")):
            found = by_status.get(status)
            if found:
                more = f" (+{len(found) - 1})" if len(found) > 1 else ""
                return f"{mark}{found[0][TEMPLATE] or found[0][ID]}{more}"
        return ""

    def duration_text(self, row: Row) -> str:
        started, ended = row[STARTED], row[ENDED]
        if started is None:
            return ""
        if ended is None:
            return "" if row[STATUS] in _TERMINAL else format_duration(self.now() - started)
        return format_duration(ended - started)

    def is_live(self, row: Row) -> bool:
        """Whether the row shows a value that changes with time (a running duration)."""
        return row[STARTED] is not None and row[ENDED] is None and row[STATUS] not in _TERMINAL


@dataclass(frozen=True)
class Tree:
    """Runs as rows that expand to their steps: which runs are expanded, and the reading
    direction (a run's steps follow it either way)."""

    all_expanded: bool = False
    flipped: frozenset[str] = frozenset()
    """Runs expanded (when not all are) or collapsed (when all are)."""
    desc: bool = True

    def shows(self, run_id: str) -> bool:
        return self.all_expanded != (run_id in self.flipped)

    def flip(self, run_id: str) -> Tree:
        return Tree(self.all_expanded, self.flipped ^ {run_id}, self.desc)


@dataclass
class Prepared:
    """An index and its visible rows computed off the loop, ready for :meth:`OrdersTableModel.install`."""

    index: OrderIndex
    keys: list[Any]
    rows: list[Row]
    filter: OrderFilter
    sort_column: int
    predicate: Predicate | None
    """The filter compiled when the rows were chosen (relative times fixed then)."""
    tree: Tree | None = None


class OrdersTableModel(QAbstractTableModel):
    """Adapter from order rows to Qt: filter and sort in Python, O(changes) live updates.

    Rows handed out (:meth:`row_data`, :meth:`get`) are the store's order rows with one extra
    element at :data:`RANK`.
    """

    filter_changed = Signal()
    """The filter or the sort changed (the visible rows were rebuilt)."""
    distinct_changed = Signal()
    """A template or instrument name appeared that the filter menus do not list yet."""
    rows_changed = Signal()
    """Rows were shown, hidden or replaced: once per frame, filter, sort or load (for counts)."""
    reorder_requested = Signal(str, int)
    """A run was dropped before view row ``row`` (row count: at the end): (order id, row). The
    rows do not move here; the run's new priority moves it when the store has it."""

    def __init__(self, parent: QObject | None = None, *, now: Callable[[], float] = time.time) -> None:
        super().__init__(parent)
        self.now = now
        """Wall time for running durations and relative time filters (the store's timestamps)."""
        self.ix = OrderIndex(now)
        # The visible rows, ascending by (sort value, rank), and their sort values (a descending
        # sort reads backwards). Invariant: (_keys[i], _rows[i][RANK]) == key(_rows[i]) for the
        # current key function and index state; every change of a row, or of what a derived
        # column reads, goes through _update().
        self._rows: list[Row] = []
        self._keys: list[Any] = []
        self._filter = OrderFilter()
        self._pred: Predicate | None = None
        self._sort_col = COLUMN_KEYS.index("created")
        self._desc = True
        self._tree: Tree | None = None
        """Runs as rows that expand to their steps (None: every order is a row of its own)."""
        self._keyfn = self._make_key(self._sort_col)
        self.rebuilds = 0
        """How many times the visible list was rebuilt (filter, sort or a very large frame)."""
        self._bold = QFont()
        self._bold.setBold(True)
        self.skipped: set[str] = set()
        """Step orders the engine skipped (Canceled on the wire, shown as Skipped)."""
        self._fg: dict[str, QColor] = {}
        self._icons: dict[str, QIcon] = {}
        self._muted = QColor()
        self._warn = QColor()
        self.theme_resolutions = 0
        """How many times the theme's colours were resolved (once per theme change)."""
        self.draggable: Callable[[Row], bool] = lambda _row: False
        """Which rows may be dragged to a new place (the panel decides: queued runs)."""
        self._resolve_theme()
        theme_events().changed.connect(self._on_theme)

    # ------------------------------------------------------------------ theme

    def _resolve_theme(self) -> None:
        """The status colours, badges and the muted run colour of the current theme, resolved
        once here (``data()`` only looks them up)."""
        names = [*_STATUS_NAMES.values(), SKIPPED]
        self._fg = {n: display_color(n) for n in names}
        self._icons = {n: display_icon(n) for n in names}
        self._muted = QGuiApplication.palette().color(QPalette.ColorRole.PlaceholderText)
        self._warn = current_theme().color("text_warn")
        self.theme_resolutions += 1

    def _on_theme(self, _theme: Theme) -> None:
        self._resolve_theme()
        if self._rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(COLUMNS) - 1),
                                  [Qt.ItemDataRole.ForegroundRole, Qt.ItemDataRole.DecorationRole])

    def status_name(self, row: Row) -> str:
        """The status shown for ``row``: its order status, or Skipped."""
        status = row[STATUS]
        if status == _CANCELED and row[ID] in self.skipped:
            return SKIPPED
        return _STATUS_NAMES[status]

    def set_skipped(self, added: Iterable[str] = (), removed: Iterable[str] = ()) -> None:
        """Step orders the engine skipped (or no longer does: recovered); repaints their rows."""
        changed = False
        for oid in added:
            if oid not in self.skipped:
                self.skipped.add(oid)
                changed = True
        for oid in removed:
            if oid in self.skipped:
                self.skipped.discard(oid)
                changed = True
        if changed and self._rows:
            self.dataChanged.emit(self.index(0, STATUS_COLUMN), self.index(len(self._rows) - 1, STATUS_COLUMN))

    # ------------------------------------------------------------------ Qt interface

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section].header
        if role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section].tip or None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return _ALIGN[section]
        return None

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        r = index.row()
        n = len(self._rows)
        if not 0 <= r < n:
            return None
        row = self._rows[n - 1 - r] if self._desc else self._rows[r]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == STATUS_COLUMN:
                return self.status_name(row)
            if col == 0 and self._tree is not None:
                return self._tree_id_text(row)
            return COLUMNS[col].text(self.ix, row)
        if role == Qt.ItemDataRole.DecorationRole:
            return self._icons[self.status_name(row)] if col == STATUS_COLUMN else None
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == STATUS_COLUMN:
                return self._fg[self.status_name(row)]
            if col == RUN_COLUMN:
                return self._muted
            if col in (ETA_COLUMN, ETA_BAND_COLUMN):
                return self._warn if self.ix.etas.get(row[ID], NO_ETA).problem else None
            return None
        if role == Qt.ItemDataRole.FontRole:
            return self._bold if col == 0 and row[PARENT] is None else None
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return _ALIGN[col]
        if role == PROGRESS_ROLE:
            return self.ix.progress(row)
        if role == ORDER_ID_ROLE:
            return row[ID]
        if role == TREE_ROLE:
            return self._branch(row, r) if col == 0 else None
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(row, col)
        return None

    # ------------------------------------------------------------------ drag and drop

    def flags(self, index: ModelIndex) -> Qt.ItemFlag:
        # asked for every cell a paint draws: the flag values are combined once, not per call
        if not index.isValid():
            return _DROP_FLAGS  # drops go between rows
        r = index.row()
        if 0 <= r < len(self._rows) and self.draggable(self.row_data(r)):
            return _DRAG_FLAGS
        return _CELL_FLAGS

    def mimeTypes(self) -> list[str]:  # noqa: N802
        return [ORDER_MIME]

    def mimeData(self, indexes: Any) -> QMimeData:  # noqa: N802
        data = QMimeData()
        rows = sorted({i.row() for i in indexes if i.isValid()})
        ids = [self.order_id(r) for r in rows if self.draggable(self.row_data(r))]
        data.setData(ORDER_MIME, "\n".join(ids[:1]).encode())
        return data

    def supportedDragActions(self) -> Qt.DropAction:  # noqa: N802
        return Qt.DropAction.MoveAction

    def supportedDropActions(self) -> Qt.DropAction:  # noqa: N802
        return Qt.DropAction.MoveAction

    def canDropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int, column: int,  # noqa: N802
                        parent: ModelIndex) -> bool:
        return data.hasFormat(ORDER_MIME) and action == Qt.DropAction.MoveAction

    def dropMimeData(self, data: QMimeData, action: Qt.DropAction, row: int, column: int,  # noqa: N802
                     parent: ModelIndex) -> bool:
        """Ask for the dropped run to go before ``row``; returns False: no row moves now (and
        the view removes none)."""
        if not self.canDropMimeData(data, action, row, column, parent):
            return False
        order_id = bytes(data.data(ORDER_MIME).data()).decode()
        if not order_id or order_id not in self.ix.all:
            return False
        if row < 0:
            row = parent.row() if parent.isValid() else len(self._rows)
        self.reorder_requested.emit(order_id, row)
        return False

    def neighbours(self, order_id: str, row: int) -> tuple[Row | None, Row | None]:
        """The rows just above and below view row ``row`` once ``order_id`` has left its place."""
        n = len(self._rows)
        above = next((self.row_data(r) for r in range(row - 1, -1, -1)
                      if r < n and self.order_id(r) != order_id), None)
        below = next((self.row_data(r) for r in range(row, n) if self.order_id(r) != order_id), None)
        return above, below

    def _branch(self, row: Row, r: int) -> str | None:
        """"mid" or "last" for a step shown under its run at view row ``r``, else None."""
        parent = row[PARENT]
        if self._tree is None or parent is None or parent not in self.ix.all:
            return None
        below = self.row_data(r + 1) if r + 1 < len(self._rows) else None
        return "mid" if below is not None and below[PARENT] == parent else "last"

    def _tree_id_text(self, row: Row) -> str:
        """The id with the tree's marks: ▸/▾ on a run with steps, a step indented."""
        tree = self._tree
        oid: str = row[ID]
        if tree is None:
            return oid
        if row[PARENT] is not None and row[PARENT] in self.ix.all:
            return "      " + oid
        if self.ix.children.get(oid):
            return ("▾ " if tree.shows(oid) else "▸ ") + oid
        return "   " + oid

    def _tooltip(self, row: Row, col: int) -> str | None:
        if col == STATUS_COLUMN:
            name = self.status_name(row)
            if name == SKIPPED:
                name = "Skipped (Canceled in Data Services)"
            return f"{name}: {row[DETAILS]}" if row[DETAILS] else name
        if col in _TIME_POS:
            return format_full_time(row[_TIME_POS[col]]) or None
        if col in (ETA_COLUMN, ETA_BAND_COLUMN):
            return self.ix.etas.get(row[ID], NO_ETA).tip or None
        if COLUMNS[col].key in ("details", "template", "step"):
            return COLUMNS[col].text(self.ix, row) or None
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Sort by ``column`` (called by the header); persistent indexes (the selection) follow."""
        if not 0 <= column < len(COLUMNS):
            return
        self._sort_col = column
        self._desc = order == Qt.SortOrder.DescendingOrder
        if self._tree is not None:
            self._tree = Tree(self._tree.all_expanded, self._tree.flipped, self._desc)
        self._keyfn = self._make_key(column)
        self.layoutAboutToBeChanged.emit()
        persistent = [(p, self._id_at(p.row())) for p in self.persistentIndexList()]
        self._keys, self._rows = self._visible_lists()
        self._remap_persistent(persistent)
        self.layoutChanged.emit()
        self.filter_changed.emit()
        self.rows_changed.emit()

    # ------------------------------------------------------------------ public reading

    @property
    def filter(self) -> OrderFilter:
        return self._filter

    @property
    def sort_column(self) -> int:
        return self._sort_col

    @property
    def sort_order(self) -> Qt.SortOrder:
        return Qt.SortOrder.DescendingOrder if self._desc else Qt.SortOrder.AscendingOrder

    @property
    def total(self) -> int:
        """Every order known, whatever the filter."""
        return len(self.ix.all)

    def row_of(self, order_id: str) -> int | None:
        """View row of ``order_id`` (None if it is filtered out or unknown). O(log n)."""
        row = self.ix.all.get(order_id)
        if row is None or (self._pred is not None and not self._pred(row)):
            return None
        i = self._place(self._keyfn(row))
        if i >= len(self._rows) or self._rows[i][ID] != order_id:
            return None
        return self._view_row(i, len(self._rows))

    def order_id(self, row: int) -> str:
        order_id: str = self.row_data(row)[ID]
        return order_id

    def row_data(self, row: int) -> Row:
        """The order row shown at view row ``row``."""
        n = len(self._rows)
        return self._rows[n - 1 - row] if self._desc else self._rows[row]

    def get(self, order_id: str) -> Row | None:
        """The latest row of ``order_id`` whether it is shown or not."""
        return self.ix.all.get(order_id)

    def visible_ids(self) -> list[str]:
        """Every order id the filter lets through, in view order ("select all matching")."""
        ids = [r[ID] for r in self._rows]
        if self._desc:
            ids.reverse()
        return ids

    def steps_of(self, run_id: str) -> list[Row]:
        """The step orders of a run (whatever the filter), in arrival order."""
        every = self.ix.all
        return [every[c] for c in self.ix.children.get(run_id, ()) if c in every]

    def progress(self, row: Row) -> float | None:
        return self.ix.progress(row)

    # ------------------------------------------------------------------ runs as a tree

    @property
    def tree(self) -> bool:
        """Whether runs are rows that expand to their steps."""
        return self._tree is not None

    def set_tree(self, on: bool) -> None:
        """Show runs as rows that expand to their steps (all collapsed), or every order flat."""
        if on == (self._tree is not None):
            return
        self._tree = Tree(desc=self._desc) if on else None
        self._keyfn = self._make_key(self._sort_col)
        self._refilter()

    def is_expanded(self, run_id: str) -> bool:
        return self._tree is not None and self._tree.shows(run_id)

    def can_expand(self, order_id: str) -> bool:
        """Whether ``order_id`` is a run with steps to show or hide."""
        row = self.ix.all.get(order_id)
        return self._tree is not None and row is not None and row[PARENT] is None \
            and bool(self.ix.children.get(order_id))

    def set_expanded(self, run_id: str, on: bool) -> None:
        """Show or hide a run's steps under it: O(its steps), the selection stays."""
        tree = self._tree
        if tree is None or tree.shows(run_id) == on or not self.can_expand(run_id):
            return

        def mutate() -> None:
            self._tree = tree.flip(run_id)
            self._pred = self._compile()

        self._update([run_id, *self.ix.children.get(run_id, ())], mutate)
        row = self.row_of(run_id)
        if row is not None:  # its ▸/▾ mark
            self.dataChanged.emit(self.index(row, 0), self.index(row, 0), [Qt.ItemDataRole.DisplayRole])

    def expand_all(self, on: bool = True) -> None:
        """Expand (or collapse) every run: one pass over the shown rows (the runs keep their
        order: no filtering or sorting again), then a reset of the view."""
        if self._tree is None:
            return
        self._tree = Tree(on, frozenset(), self._desc)
        self._pred = self._compile()
        every, desc = self.ix.all, self._desc
        children = self.ix.children if on else {}
        rows: list[Row] = []
        keys: list[Any] = []
        add_row, add_rows, add_key, add_keys = rows.append, rows.extend, keys.append, keys.extend
        step_row = every.__getitem__  # a run's children are always in ``all`` (put and build add both)
        collecting = gc.isenabled()
        gc.disable()  # many new list cells, no cycles
        try:
            for key, r in zip(self._keys, self._rows, strict=True):
                parent = r[PARENT]
                if parent is not None and parent in every:
                    continue  # a step: it comes with its run
                kids = children.get(r[ID])
                if not kids:
                    add_row(r)
                    add_key(key)
                    continue
                if desc:  # read backwards: the run, then its steps in template order
                    add_rows(map(step_row, reversed(kids)))
                    add_row(r)
                else:
                    add_row(r)
                    add_rows(map(step_row, kids))
                add_keys(repeat(key, len(kids) + 1))
        finally:
            if collecting:
                gc.enable()
        self.beginResetModel()
        self._keys, self._rows = keys, rows
        self.endResetModel()
        self.rows_changed.emit()

    def reveal(self, order_id: str) -> None:
        """Expand the run of a step so that the step has a row."""
        row = self.ix.all.get(order_id)
        if self._tree is not None and row is not None and row[PARENT] is not None:
            self.set_expanded(row[PARENT], True)

    def current_step(self, row: Row) -> str:
        return self.ix.current_step(row)

    def is_live(self, row: Row) -> bool:
        return self.ix.is_live(row)

    # ------------------------------------------------------------------ feeding

    def prepare(self, rows: Iterable[tuple[Any, ...]]) -> Prepared:
        """Index ``rows`` and filter and sort them as the model would — on any thread."""
        ix = OrderIndex.build(rows, self.now)
        ix.etas = self.ix.etas
        spec, column, tree = self._filter, self._sort_col, self._tree
        pred = spec.predicate(self.now())
        if tree is not None:
            pred = ix.tree_predicate(pred, tree)
        keys, visible = ix.visible(pred, column, tree)
        return Prepared(ix, keys, visible, spec, column, pred, tree)

    def install(self, prepared: Prepared) -> bool:
        """Show a :meth:`prepare` result. If the filter or the sort changed while it was being
        prepared, its rows are filtered and sorted again here (returns False then)."""
        current = prepared.filter == self._filter and prepared.sort_column == self._sort_col \
            and prepared.tree == self._tree and (prepared.index.etas is self.ix.etas
                                                 or self._sort_col not in (ETA_COLUMN, ETA_BAND_COLUMN))
        self.beginResetModel()
        prepared.index.etas = self.ix.etas
        self.ix = prepared.index
        if current:
            self._pred = prepared.predicate
            self._keys, self._rows = prepared.keys, prepared.rows
        else:
            self._pred = self._compile()
            self._keys, self._rows = self._visible_lists()
        self.endResetModel()
        self.distinct_changed.emit()
        self.rows_changed.emit()
        return current

    def reset(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Replace every order (on the loop; :meth:`prepare` + :meth:`install` avoid that)."""
        self.beginResetModel()
        etas, self.ix = self.ix.etas, OrderIndex.build(rows, self.now)
        self.ix.etas = etas
        self._pred = self._compile()
        self._keys, self._rows = self._visible_lists()
        self.endResetModel()
        self.distinct_changed.emit()
        self.rows_changed.emit()

    def set_filter(self, spec: OrderFilter) -> None:
        """Show only the orders ``spec`` lets through (relative time ranges count from now)."""
        self._filter = spec
        self._refilter()

    def _refilter(self) -> None:
        self.beginResetModel()
        self._pred = self._compile()
        self._keys, self._rows = self._visible_lists()
        self.endResetModel()
        self.filter_changed.emit()
        self.rows_changed.emit()

    def _compile(self) -> Predicate | None:
        pred = self._filter.predicate(self.now())
        return pred if self._tree is None else self.ix.tree_predicate(pred, self._tree)

    def apply(self, changed: Mapping[str, tuple[Any, ...]]) -> None:
        """One frame of order rows from the bridge: replace, add, move, show or hide rows."""
        if not changed:
            return
        every = self.ix.all
        touched = set(changed)
        for oid, row in changed.items():
            old = every.get(oid)
            if old is not None and old[PARENT]:
                touched.add(old[PARENT])
            if row[PARENT]:
                touched.add(row[PARENT])
        if self._tree is not None:  # a run's steps sort by it and its steps may let it through
            children = self.ix.children
            for oid in list(touched):
                touched.update(children.get(oid, ()))
        new_names = False

        def mutate() -> None:
            nonlocal new_names
            for row in changed.values():
                new_names = self.ix.put(row)[1] or new_names

        self._update(touched, mutate)
        if new_names:
            self.distinct_changed.emit()

    def remove(self, ids: Iterable[str]) -> int:
        """Drop these orders (a run with its steps): their rows leave the view, one removal
        each (a rebuild for very many), and the other rows stay selected. Returns how many were
        dropped."""
        every, children = self.ix.all, self.ix.children
        gone = dict.fromkeys(oid for oid in ids if oid in every)
        for oid in list(gone):
            gone.update(dict.fromkeys(k for k in children.get(oid, ()) if k in every))
        if not gone:
            return 0
        pred, key = self._pred, self._keyfn
        shown = [(oid, key(every[oid])) for oid in gone if pred is None or pred(every[oid])]
        others: set[str] = set()
        for oid in gone:  # a run that keeps its other steps: its progress and current step change
            parent = every[oid][PARENT]
            if parent is not None and parent in every and parent not in gone:
                others.add(parent)
                if self._tree is not None:
                    others.update(k for k in children.get(parent, ()) if k not in gone)
        if len(shown) > max(REBUILD_THRESHOLD, len(self._rows) // 50):
            self.ix.drop(gone)
            self._rebuild_keeping_selection()
            self.rows_changed.emit()
            return len(gone)
        for oid, old in shown:  # placed while the index still knows their runs (their ties)
            self._move(oid, old, None)
        self._update(others, lambda: self.ix.drop(gone))
        if shown:
            self.rows_changed.emit()
        return len(gone)

    def apply_progress(self, fractions: Mapping[str, float | None]) -> None:
        """Instruments' progress reports (order id -> 0..1) of one frame."""
        every = self.ix.all
        wanted = {oid: min(1.0, max(0.0, float(f))) for oid, f in fractions.items()
                  if f is not None and oid in every and every[oid][STATUS] == _RUNNING}
        if not wanted:
            return
        touched = set(wanted)
        for oid in wanted:
            parent = every[oid][PARENT]
            if parent:
                touched.add(parent)
                if self._tree is not None:
                    touched.update(self.ix.children.get(parent, ()))
        self._update(touched, lambda: self.ix.fraction.update(wanted))

    def set_etas(self, etas: dict[str, EtaCell]) -> None:
        """The ETA cells of a new forecast, all at once: one ``dataChanged`` over the ETA columns;
        when the table is sorted by one of them, the rows whose cell changed move."""
        old = self.ix.etas
        if self._sort_col not in (ETA_COLUMN, ETA_BAND_COLUMN):
            self.ix.etas = etas
            if self._rows:
                self.dataChanged.emit(self.index(0, ETA_COLUMN), self.index(len(self._rows) - 1, ETA_BAND_COLUMN),
                                      [Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ForegroundRole])
            return
        every = self.ix.all
        touched = {oid for oid in old.keys() | etas.keys() if oid in every and old.get(oid) != etas.get(oid)}
        if self._tree is not None:  # a run's steps sort by it
            children = self.ix.children
            for oid in list(touched):
                touched.update(children.get(oid, ()))
        self._update(touched, lambda: setattr(self.ix, "etas", etas))

    def refresh_rows(self, first: int, last: int, column: int) -> None:
        """Repaint one column of view rows ``first..last`` (running durations, once a second)."""
        last = min(last, len(self._rows) - 1)
        if 0 <= first <= last:
            self.dataChanged.emit(self.index(first, column), self.index(last, column),
                                  [Qt.ItemDataRole.DisplayRole])

    # ------------------------------------------------------------------ internals

    def _make_key(self, column: int) -> Callable[[Row], Any]:
        primary = COLUMNS[column].sort
        if self._tree is not None:
            def tree_key(r: Row) -> Any:
                ix = self.ix
                return (primary(ix, ix.run_of(r)), ix.tie(r, self._desc))

            return tree_key

        def key(r: Row) -> Any:
            return (primary(self.ix, r), r[RANK])

        return key

    def _tie(self, r: Row) -> Any:
        return r[RANK] if self._tree is None else self.ix.tie(r, self._desc)

    def _place(self, key: tuple[Any, int]) -> int:
        """Where ``key`` (sort value, rank) is, or would go, in the visible list: O(log n)."""
        keys = self._keys
        value, rank = key
        lo = bisect_left(keys, value)
        hi = bisect_right(keys, value, lo)
        return bisect_left(self._rows, rank, lo, hi, key=self._tie)  # equal values: by tie

    def _view_row(self, i: int, n: int) -> int:
        return n - 1 - i if self._desc else i

    def _id_at(self, view_row: int) -> str | None:
        n = len(self._rows)
        return self._rows[self._view_row(view_row, n)][ID] if 0 <= view_row < n else None

    def _visible_lists(self) -> tuple[list[Any], list[Row]]:
        self.rebuilds += 1
        return self.ix.visible(self._pred, self._sort_col, self._tree)

    def _remap_persistent(self, old: list[tuple[QModelIndex, str | None]]) -> None:
        if not old:
            return
        froms: list[QModelIndex] = []
        tos: list[QModelIndex] = []
        for index, oid in old:
            row = self.row_of(oid) if oid is not None else None
            froms.append(index)
            tos.append(self.index(row, index.column()) if row is not None else QModelIndex())
        self.changePersistentIndexList(froms, tos)

    def _update(self, ids: Iterable[str], mutate: Callable[[], None]) -> None:
        """Apply ``mutate`` to the index and bring the visible rows of ``ids`` in line.

        Keys are computed before and after ``mutate``: equal keys are replaced in place, others
        move (or enter, or leave). Very many moves rebuild the list in one go instead.
        """
        ids = list(ids)
        key, pred, every = self._keyfn, self._pred, self.ix.all
        before: dict[str, Any] = {}
        for oid in ids:
            row = every.get(oid)
            if row is not None and (pred is None or pred(row)):
                before[oid] = key(row)
        mutate()
        pred = self._pred
        moves: list[tuple[str, Any, Any]] = []
        in_place: list[str] = []
        for oid in ids:
            row = every.get(oid)
            new = key(row) if row is not None and (pred is None or pred(row)) else None
            old = before.get(oid)
            if old == new:
                if new is not None:
                    in_place.append(oid)
            else:
                moves.append((oid, old, new))
        if len(moves) > max(REBUILD_THRESHOLD, len(self._rows) // 50):
            self._rebuild_keeping_selection()
            self.rows_changed.emit()
            return
        for oid in in_place:
            i = self._place(before[oid])
            self._rows[i] = every[oid]
        for oid, old, new in moves:
            self._move(oid, old, new)
        if self._rows and (in_place or moves):
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rows) - 1, len(COLUMNS) - 1))
        if moves:
            self.rows_changed.emit()

    def _rebuild_keeping_selection(self) -> None:
        """Rebuild the visible list; a pure reordering keeps persistent indexes (the selection)."""
        keys, rows = self._visible_lists()
        if len(rows) == len(self._rows):
            self.layoutAboutToBeChanged.emit()
            persistent = [(p, self._id_at(p.row())) for p in self.persistentIndexList()]
            self._keys, self._rows = keys, rows
            self._remap_persistent(persistent)
            self.layoutChanged.emit()
        else:  # the panel selects its orders again by id after a reset
            self.beginResetModel()
            self._keys, self._rows = keys, rows
            self.endResetModel()

    def _move(self, oid: str, old: Any, new: Any) -> None:
        rows, keys = self._rows, self._keys
        n = len(rows)
        root = QModelIndex()
        if old is not None and new is not None:
            i = self._place(old)
            j = self._place(new)
            if j > i:
                j -= 1  # its place once it has left position i
            src, dst = self._view_row(i, n), self._view_row(j, n)
            moving = dst != src and self.beginMoveRows(root, src, src, root, dst + 1 if dst > src else dst)
            del rows[i], keys[i]
            rows.insert(j, self.ix.all[oid])
            keys.insert(j, new[0])
            if moving:
                self.endMoveRows()
        elif old is not None:
            i = self._place(old)
            view = self._view_row(i, n)
            self.beginRemoveRows(root, view, view)
            del rows[i], keys[i]
            self.endRemoveRows()
        else:
            j = self._place(new)
            view = self._view_row(j, n + 1)
            self.beginInsertRows(root, view, view)
            rows.insert(j, self.ix.all[oid])
            keys.insert(j, new[0])
            self.endInsertRows()
