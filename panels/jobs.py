"""Jobs panel: every order (runs and their step orders) in one table, with the operator's actions.

- **Table** — :class:`~panels.jobs_model.OrdersTableModel`: filter and sort in Python (never a
  Qt sort-filter proxy), fixed row heights, live updates coalesced per frame by the bridge
  (rows and instruments' progress reports), running durations repainted once a second for the
  visible rows only.
- **Filter bar** — :class:`~panels.jobs_filterbar.FilterBar`: status, priority, instrument,
  template, runs/steps, time range, free text; built-in and saved views (a JSON file next to
  the store).
- **Actions** — a context menu that depends on the order's status, keyboard shortcuts, and
  buttons for the selection: one order gets the single-order flow, several get the bulk flow
  (preview, progress, one result per order). Everything runs through
  :class:`~panels.actions.OrderActions` on the runtime facade; the status line says at once what
  started and then how it ended.

The panel receives the runtime facade and the event bridge; it reaches the core only through
them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import (
    QEvent,
    QItemSelection,
    QItemSelectionModel,
    QItemSelectionRange,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QRectF,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import (
    QAction,
    QColor,
    QGuiApplication,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QPalette,
    QPen,
    QShortcut,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QMenu,
    QPushButton,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.archive import FINISHED_STATUSES
from core.backup import find_config
from core.errors import ConfigError, LabconsoleError
from core.events import StepChanged, StepProgress
from core.history import (
    ARCHIVED_COLUMN,
    DAY,
    HistoryPage,
    HistoryQuery,
    HistorySearch,
    Reach,
    SearchSuperseded,
    live_window_scan,
    rows_ended_between,
    rows_of,
    step_orders,
    stored_count,
)
from core.orders import OrderStatus
from core.timetravel import OPEN_STATUSES, Moment, attach_for, statuses_at
from core.users import os_user
from panels.actions import (
    ACTIONS,
    BULK_LABELS,
    MARKS,
    Bridge,
    Feedback,
    OrderActions,
    TaskRunner,
)
from panels.base import Panel
from panels.dialogs import NameDialog, ask
from panels.jobs_eta import eta_cells
from panels.jobs_filter import (
    CREATED,
    DETAILS,
    ENDED,
    ID,
    LIVE_DAYS,
    NPRI,
    OPEN_VIEW,
    PARENT,
    STARTED,
    STATUS,
    OrderFilter,
    SavedView,
    SavedViews,
    history_query,
    live_days_from_ini,
)
from panels.jobs_filterbar import FilterBar, FlowLayout
from panels.jobs_model import (
    COLUMN_KEYS,
    COLUMNS,
    DURATION_COLUMN,
    ETA_BAND_COLUMN,
    ETA_COLUMN,
    PRIORITY_COLUMN,
    PROGRESS_COLUMN,
    PROGRESS_ROLE,
    STATUS_COLUMN,
    TREE_ROLE,
    OrdersTableModel,
    Prepared,
    format_full_time,
    priority_for_drop,
)
from panels.style import SKIPPED, status_color
from panels.timetravel import PastBanner, when
from panels.widgets import PaintPacer

if TYPE_CHECKING:
    from core.api import RuntimeApi

__all__ = ["STATUS_COLUMN", "JobsPanel", "OrdersTableModel", "ProgressDelegate"]

log = logging.getLogger(__name__)

TICK_MS = 1000
"""How often running durations of the visible rows are repainted."""
PAINT_MS = 125
"""At most how often the rows repaint while changes flood in (:class:`PaintPacer`)."""
RESELECT_LIMIT = 20_000
"""Up to this many selected orders are selected again after the table is rebuilt."""
HISTORY_PAGE = 200
"""Rows per page of "Search all history"."""
PRUNE_EVERY_MS = 300_000
"""How often finished orders that aged out of the live window leave the Jobs table (they age
by days: a few minutes late is never seen)."""
_FINISHED = frozenset(int(s) for s in FINISHED_STATUSES)
HISTORY_COUNT_CAP = 100_000
"""Matches of a history search are counted up to this many ("over 100,000 match")."""
EXPAND_ALL_KEYS = "Ctrl+Shift+Right"
COLLAPSE_ALL_KEYS = "Ctrl+Shift+Left"
MARK_WIDTH = 18
"""Pixels at the left of a run's id cell where a click expands or collapses it (its ▸/▾)."""
ALL_ORDERS = "All orders"
"""The view the "nothing needs attention" line offers."""


class BranchDelegate(QStyledItemDelegate):
    """Draws the tree's branch lines left of a step's id: from its run down to the step, and on
    to the next step unless it is the last one shown."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        super().paint(painter, option, index)
        branch = index.data(TREE_ROLE)
        if branch is None:
            return
        rect: QRect = option.rect
        x = rect.left() + 9
        mid = rect.center().y()
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        palette: QPalette = option.palette
        colour = palette.color(QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Mid)
        painter.save()
        painter.setPen(QPen(colour, 1))
        painter.drawLine(x, rect.top(), x, mid if branch == "last" else rect.bottom())
        painter.drawLine(x, mid, x + 9, mid)
        painter.restore()


class ProgressDelegate(QStyledItemDelegate):
    """Draws the progress column as a thin bar in the row's status colour, with the percentage."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        value = index.data(PROGRESS_ROLE)
        if value is None:
            super().paint(painter, option, index)
            return
        opt = QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        text = opt.text
        opt.text = ""
        widget = opt.widget
        style = widget.style() if widget is not None else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)
        rect: QRect = opt.rect
        text_width = opt.fontMetrics.horizontalAdvance("100 %") + 6
        bar = QRectF(rect.left() + 5, rect.center().y() - 2.5, max(8, rect.width() - text_width - 10), 5)
        colour = index.sibling(index.row(), STATUS_COLUMN).data(Qt.ItemDataRole.ForegroundRole)
        if not isinstance(colour, QColor):
            colour = opt.palette.color(QPalette.ColorRole.Highlight)
        selected = bool(opt.state & QStyle.StateFlag.State_Selected)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        track = opt.palette.color(QPalette.ColorRole.Mid)
        track.setAlpha(90)
        painter.setBrush(track)
        painter.drawRoundedRect(bar, 2.5, 2.5)
        if value > 0:
            fill = QRectF(bar)
            fill.setWidth(max(2.5, bar.width() * min(1.0, value)))
            painter.setBrush(opt.palette.color(QPalette.ColorRole.HighlightedText) if selected else colour)
            painter.drawRoundedRect(fill, 2.5, 2.5)
        painter.setPen(opt.palette.color(QPalette.ColorRole.HighlightedText if selected
                                         else QPalette.ColorRole.Text))
        painter.drawText(rect.adjusted(0, 0, -5, 0),
                         int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), text)
        painter.restore()


class JobsPanel(Panel):
    """The Jobs table over the live window, its filter bar and the operator's actions.

    Emits :attr:`order_selected` with the id of the current order and :attr:`details_requested`
    when the operator asks for an order's details (double click, Return, menu).
    """

    order_selected = Signal(str)
    details_requested = Signal(str)
    REFRESH_MS = TICK_MS
    actions: OrderActions  # type: ignore[assignment]  # the operator's order actions; QWidget.actions() is unused here

    def __init__(self, runtime: RuntimeApi, bridge: Bridge, parent: QWidget | None = None, *,
                 views_path: Path | None = None, now: Callable[[], float] = time.time,
                 who: Callable[[], str] = os_user, live_days: float | None = None) -> None:
        super().__init__(runtime, bridge, parent)
        self.config_error: Feedback | None = None
        """Why ``[JOBS]`` of config.ini was not used (shown on the status line), if it was not."""
        if live_days is None:
            try:
                live_days = live_days_from_ini(find_config(Path(runtime.store.path).parent))
            except ConfigError as exc:
                self.config_error = Feedback("error", f"{exc}; showing the last {LIVE_DAYS:g} days")
                live_days = LIVE_DAYS
        self.live_days = live_days
        """Finished orders of the last this many days are in the table (``[JOBS] live_days``)."""
        self.stored_orders = 0
        """Orders in the store when the table was loaded (the live window is part of them)."""
        self.older_orders = 0
        """Orders of the store left out of the live window (when it was loaded, and since)."""
        self.prune_timer = QTimer(self)
        """Every :data:`PRUNE_EVERY_MS` the finished orders that aged out of the live window leave
        the table (:meth:`prune_live_window`): one timer, started once the table is loaded."""
        self.prune_timer.setInterval(PRUNE_EVERY_MS)
        self.prune_timer.timeout.connect(self.prune_live_window)
        self.live_model = model = OrdersTableModel(self, now=now)
        """The live window: every unfinished order and those finished in the last ``live_days``.
        Runs are rows that expand to their steps (collapsed at first)."""
        model.set_tree(True)
        self.history_model = OrdersTableModel(self, now=now)
        """The pages of "Search all history" found so far (SQL filters them; no filter here)."""
        self.moment: Moment | None = None
        """The past moment the table shows, read only (:meth:`show_moment`); None: live."""
        self.past_model = OrdersTableModel(self, now=lambda: self.moment.at if self.moment is not None else now())
        """The live window's orders as they stood at :attr:`moment` (time travel)."""
        self.past_model.set_tree(True)
        self._past_task: asyncio.Task[None] | None = None
        self.forecast: Any = None
        """The run ETAs (:meth:`set_forecast`, a :class:`core.forecast.Forecast`)."""
        self._forecast_result: Any = None
        self._eta_task: asyncio.Task[None] | None = None
        self._step_orders: dict[str, dict[str, str]] = {}
        """Run id -> step id -> step order id, for the runs of the last forecast."""
        self.model = model
        """The model the table shows: :attr:`live_model`, :attr:`history_model` while searching
        all history, or :attr:`past_model` while showing a past moment."""
        self._leaving: str | None = None
        """The current order while its row leaves the table (Qt would make a neighbour current)."""
        for each in (self.live_model, self.history_model, self.past_model):
            # before the view's selection model connects: this must run before it moves the current row
            each.rowsAboutToBeRemoved.connect(self._on_rows_leaving)
            each.rowsRemoved.connect(self._on_rows_left)
            each.modelAboutToBeReset.connect(self._remember_selection)
            each.modelReset.connect(self._restore_selection)
        self.history = HistorySearch(runtime.store)
        """Searches every order on disk, the store and its archive, off the loop."""
        self.history_reach: Reach | None = None
        """How far back history reaches (read when the search mode is switched on)."""
        self.history_page: HistoryPage | None = None
        """The last page of history results read."""
        self.history_matched: tuple[int, bool] | None = None
        """How many orders match the history search: (count, more than that)."""
        self.archived_ids: set[str] = set()
        """Orders among the history results that are in the archive: read-only."""
        self._history_query: HistoryQuery | None = None
        self._history_task: asyncio.Task[None] | None = None
        self._loaded = False
        self._load_note = False
        """The status line shows the load note, whose count follows the table."""
        self._pending: dict[str, tuple[Any, ...]] = {}
        self._emitted: str | None = None
        self._managed: dict[str, bool] = {}
        self.adopted: dict[str, str] = {}
        """Runs made for an order claimed from Data Services -> that order. They are runs (bold,
        their steps under them), shown at the top level like any run."""
        self.adopters: dict[str, str] = {}
        """The other way round: an order claimed from Data Services -> its run (actions on the
        order act on that run)."""
        self._saved_selection: tuple[str | None, list[str]] = (None, [])
        self.last_feedback: Feedback | None = None
        if views_path is None:
            views_path = Path(runtime.store.path).parent / SavedViews.FILENAME
        self.views = SavedViews(views_path)
        self.actions = OrderActions(runtime, self, who=who)
        self.actions.feedback.connect(self._on_feedback)
        self._tasks = TaskRunner(self)
        """Tasks of the panel's own dialogs (naming a view)."""

        self.filter_bar = FilterBar(self.views, self)
        self.filter_bar.changed.connect(self._on_filter_changed)
        self.filter_bar.view_chosen.connect(self._on_view_chosen)
        # the view the operator picks is the one to open on next time (not one the console
        # switches to by itself, e.g. to show an order the filter hides)
        self.filter_bar.view_combo.activated.connect(
            lambda i: self._remember_view(self.filter_bar.view_combo.itemData(i)))
        self.filter_bar.save_requested.connect(self.request_save_view)

        self.view = QTableView(self)
        self.view.setObjectName("jobsTable")
        self.view.setModel(model)
        self.view.setItemDelegateForColumn(PROGRESS_COLUMN, ProgressDelegate(self.view))
        self.view.setItemDelegateForColumn(0, BranchDelegate(self.view))
        # The header's indicator first: enabling sorting sorts by whatever it shows.
        self.view.horizontalHeader().setSortIndicator(model.sort_column, model.sort_order)
        self.view.setSortingEnabled(True)
        self.view.setAlternatingRowColors(True)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.setWordWrap(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.view.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._on_context_menu)
        # queued runs are dragged up or down to a new priority (sorted by Priority)
        self.view.setDragEnabled(True)
        self.view.setAcceptDrops(True)
        self.view.setDropIndicatorShown(True)
        self.view.setDragDropMode(QAbstractItemView.DragDropMode.DragDrop)
        self.view.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.view.setDragDropOverwriteMode(False)
        model.draggable = self._draggable
        model.reorder_requested.connect(self.move_run)
        self.view.doubleClicked.connect(self._on_activated)
        self.view.activated.connect(self._on_activated)
        # under a flood of changes (a bulk action) the rows repaint a few times a second, not
        # after each delivery; the operator's input still repaints at once
        self.pacer = PaintPacer(self.view.viewport(), PAINT_MS, watch=(self.view,))
        for scroll in (self.view.verticalScrollBar(), self.view.horizontalScrollBar()):
            scroll.valueChanged.connect(self.pacer.resume)
        vh = self.view.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(max(22, self.view.fontMetrics().height() + 8))
        vh.hide()
        hh = self.view.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        hh.setHighlightSections(False)
        hh.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        for col, column in enumerate(COLUMNS):
            self.view.setColumnWidth(col, column.width)
        # what to do when there is nothing to show (first run, or a filter that matches nothing)
        self.empty_hint = QLabel(self.view.viewport())
        self.empty_hint.setObjectName("jobsEmpty")
        self.empty_hint.setWordWrap(True)
        self.empty_hint.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_hint.setTextFormat(Qt.TextFormat.RichText)
        self.empty_hint.setMaximumWidth(520)
        hint_layout = QVBoxLayout(self.view.viewport())
        # the hint at the bottom of the upper half, its button at the top of the lower half
        hint_layout.addWidget(self.empty_hint, 0, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignBottom)
        self.empty_hint.hide()
        self.all_orders_button = QPushButton(f"Show {ALL_ORDERS.lower()}", self.view.viewport())
        self.all_orders_button.setObjectName("jobsShowAll")
        self.all_orders_button.setToolTip(f"Switch to the “{ALL_ORDERS}” view")
        self.all_orders_button.clicked.connect(self._show_all_orders)
        hint_layout.addWidget(self.all_orders_button, 0, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
        self.all_orders_button.hide()
        self.past_banner = PastBanner(self)

        self.summary = QLabel(self)
        self.summary.setObjectName("jobsSummary")
        self.select_all_button = QPushButton("Select all matching", self)
        self.select_all_button.setToolTip("Select every order the filter lets through (Ctrl+A)")
        self.select_all_button.clicked.connect(self.select_all_matching)
        self.bulk_buttons: dict[str, QPushButton] = {}
        self.bulk_tips: dict[str, str] = {}
        for key in ("cancel", "retry", "reprioritise"):
            action = ACTIONS[key]
            button = QPushButton(action.label, self)
            self.bulk_tips[key] = (f"{action.tip} ({action.shortcut}); several selected orders: a bulk "
                                   "action with a preview and one result per order")
            button.setToolTip(self.bulk_tips[key])
            button.clicked.connect(lambda _checked=False, k=key: self.trigger(k))
            self.bulk_buttons[key] = button
        self._bulk_tips = {k: b.toolTip() for k, b in self.bulk_buttons.items()}
        # buttons first, so they stay on one line; the summary follows (next line if narrow)
        self.expand_button = QPushButton("Expand all", self)
        self.expand_button.setToolTip(f"Show every run's steps under it ({EXPAND_ALL_KEYS})")
        self.expand_button.clicked.connect(lambda _checked=False: self.expand_all(True))
        self.collapse_button = QPushButton("Collapse all", self)
        self.collapse_button.setToolTip(f"Show runs only, their steps hidden ({COLLAPSE_ALL_KEYS})")
        self.collapse_button.clicked.connect(lambda _checked=False: self.expand_all(False))
        bar = FlowLayout(spacing=4)
        bar.addWidget(self.select_all_button)
        for button in self.bulk_buttons.values():
            bar.addWidget(button)
        bar.addWidget(self.expand_button)
        bar.addWidget(self.collapse_button)
        bar.addWidget(self.summary)

        self.status_line = QLabel(self)
        self.status_line.setObjectName("jobsStatusLine")
        self.status_line.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_line.setText("Ready. Right-click an order for its actions.")
        self.status_line.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addWidget(self.past_banner)
        layout.addWidget(self.filter_bar)
        layout.addLayout(bar)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.status_line)

        self.shortcuts: dict[str, QAction] = {}
        for key, action in ACTIONS.items():
            if action.shortcut is None or key == "details":
                continue
            qaction = QAction(action.label, self.view)
            qaction.setShortcut(QKeySequence(action.shortcut))
            qaction.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            qaction.triggered.connect(lambda _checked=False, k=key: self.trigger(k))
            self.view.addAction(qaction)
            self.shortcuts[key] = qaction
        for key, label, keys, slot in (
                ("expand", "Expand run", "+", lambda: self.expand_current(True)),
                ("collapse", "Collapse run", "-", lambda: self.expand_current(False)),
                ("expand_all", "Expand all runs", EXPAND_ALL_KEYS, lambda: self.expand_all(True)),
                ("collapse_all", "Collapse all runs", COLLAPSE_ALL_KEYS, lambda: self.expand_all(False))):
            qaction = QAction(label, self.view)
            qaction.setShortcut(QKeySequence(keys))
            qaction.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            qaction.triggered.connect(lambda _checked=False, f=slot: f())
            self.view.addAction(qaction)
            self.shortcuts[key] = qaction
        self.view.viewport().installEventFilter(self)
        find = QShortcut(QKeySequence.StandardKey.Find, self, self.filter_bar.search.setFocus)
        find.setWhatsThis("Search the orders (free text filter)")

        model.distinct_changed.connect(self._update_names)
        for each in (self.live_model, self.history_model, self.past_model):
            each.rows_changed.connect(self._update_summary)
        self._connect_selection()
        self.filter_bar.history_toggled.connect(self.set_history_mode)
        self.filter_bar.more_requested.connect(self.load_more_history)
        self.view.verticalScrollBar().valueChanged.connect(self._on_scrolled)
        self.listen(bridge.orders_changed, self._on_orders_changed)
        self.listen(bridge.events, self._on_events)
        self._update_summary()
        self._update_buttons()

    # ------------------------------------------------------------------ loading

    async def load(self) -> int:
        """Read the live window off the loop (index, filter and sort too), then show it.

        The live window is every unfinished order plus those finished in the last
        :attr:`live_days` days (and the older steps of a live run, so it is shown whole): what
        the console works on, whatever the age of the store. Older orders stay on disk and are
        reached through "Search all history".
        """
        store = self.runtime.store
        model = self.live_model
        self._show_status(Feedback("busy", "Loading orders…"))
        cutoff = model.now() - self.live_days * DAY

        def read(conn: sqlite3.Connection) -> tuple[Prepared, set[str], dict[str, str], int]:
            adopted: dict[str, str] = {}
            prepared = model.prepare(live_window_scan(conn, cutoff, adopted))  # no list of every row
            shown = prepared.index.all
            skipped = {o for o in store.step_orders_with_status("skipped") if o in shown}
            return prepared, skipped, adopted, stored_count(conn)

        prepared, skipped, adopted, stored = await store.read(read)
        self.stored_orders = stored
        self.older_orders = max(0, stored - len(prepared.index.all))
        self._note_adopted(adopted)
        model.set_skipped(skipped)
        model.install(prepared)
        self._loaded = True
        if self._pending:
            model.apply(self._adopt(self._pending))
            self._pending = {}
        self._load_note = True
        self._show_status(self.config_error or Feedback("ok", self._loaded_text()))
        self._update_summary()
        self.update_refresh()
        if self._forecast_result is not None:
            self._on_forecast(self._forecast_result)
        if self.moment is not None:  # the past was asked for before the orders were read
            self.show_moment(self.moment)
        self.prune_timer.start()
        return len(prepared.index.all)

    @Slot()
    def prune_live_window(self) -> int:
        """Drop from the table the finished orders that are older than :attr:`live_days` now
        (ended before the cut-off, or created before it without an end), as a new load would
        leave them out: a run goes with its steps, and not while any order of it is unfinished.
        One pass over the rows; the rows of the others (and their selection) stay. Returns how
        many orders left."""
        if not self._loaded:
            return 0
        model = self.live_model
        every = model.ix.all
        cutoff = model.now() - self.live_days * DAY
        aged = [r for r in every.values() if r[STATUS] in _FINISHED
                and (r[ENDED] if r[ENDED] is not None else r[CREATED]) < cutoff]
        if not aged:
            return 0
        unfinished_runs = {r[PARENT] or r[ID] for r in every.values() if r[STATUS] not in _FINISHED}
        gone = [r[ID] for r in aged if (r[PARENT] or r[ID]) not in unfinished_runs]
        removed = model.remove(gone)
        if removed:
            self.older_orders += removed
            self._update_summary()
        return removed

    # ------------------------------------------------------------------ ETAs

    def set_forecast(self, forecast: Any) -> None:
        """Show the run ETAs of ``forecast`` (a :class:`core.forecast.Forecast`) and follow its
        new results."""
        if self.forecast is not None:
            self.forecast.remove_listener(self._on_forecast)
        self.forecast = forecast
        forecast.add_listener(self._on_forecast)
        if forecast.result is not None:
            self._on_forecast(forecast.result)

    def _on_forecast(self, result: Any) -> asyncio.Task[None] | None:
        """A new forecast (on the loop): its cells go to the live table in one batch, once the
        step orders of runs not seen before are read (off the loop)."""
        self._forecast_result = result
        if not self._loaded or self.is_shut_down:
            return None
        if self._eta_task is None or self._eta_task.done():
            self._eta_task = asyncio.get_running_loop().create_task(self._show_etas(), name="jobs etas")
        return self._eta_task  # a task in progress takes the newest result when it is done

    async def _show_etas(self) -> None:
        """Show the newest forecast: the step orders of runs not seen before are read, the cells
        made on a worker thread (thousands of them are not formatted on the loop), then handed
        to the table at once; a forecast that came meanwhile is shown next."""
        shown = None
        while shown is not self._forecast_result and not self.is_shut_down:
            result = shown = self._forecast_result
            ix = self.live_model.ix
            known = self._step_orders
            wanted = [r for r in result.runs if r in ix.children
                      and len(known.get(r, ())) != len(ix.children[r])]
            if wanted:
                try:
                    known.update(await self.runtime.store.read(functools.partial(step_orders, run_ids=wanted)))
                except (LabconsoleError, sqlite3.Error) as exc:
                    log.warning("step orders of the forecast's runs not read: %s", exc)
            if result is not self._forecast_result:
                continue
            self._step_orders = steps = {r: m for r, m in known.items() if r in result.runs}
            cells = await asyncio.to_thread(eta_cells, result, steps, dict(self.adopters))
            if result is self._forecast_result and not self.is_shut_down:
                self.live_model.set_etas(cells)

    # ------------------------------------------------------------------ time travel

    @Slot(object)
    def show_moment(self, moment: Moment | None) -> asyncio.Task[None] | None:
        """Show the orders as they stood at ``moment``, read only (None: live again).

        The orders open then and those finished in the :attr:`live_days` before it (the live
        window as it was), each with its status then (from the moment's open orders, else its
        last transition before it), read, filtered and sorted off the loop. Live updates keep
        going to the live table meanwhile."""
        self.moment = moment
        self.past_banner.show_moment(moment)
        if self._past_task is not None and not self._past_task.done():
            self._past_task.cancel()
        self._past_task = None
        if moment is None:
            if self.model is self.past_model:
                self._set_model(self.live_model)
            self.past_model.reset(())
            self.filter_bar.history_button.setEnabled(True)
            if self._loaded:
                self._load_note = True
                self._show_status(Feedback("ok", self._loaded_text()))
            self._update_summary()
            self._update_buttons()
            return None
        if self.history_mode:
            self.filter_bar.set_history_mode(False)
        self.filter_bar.history_button.setEnabled(False)
        self._update_buttons()
        self._past_task = asyncio.get_running_loop().create_task(self._show_past(moment), name="jobs moment")
        return self._past_task

    async def _show_past(self, moment: Moment) -> None:
        live, past = self.live_model, self.past_model
        if self.model is not past:  # entering the past: as the live table is filtered and sorted
            if past.filter != live.filter:
                past.set_filter(live.filter)
            if (past.sort_column, past.sort_order) != (live.sort_column, live.sort_order):
                past.sort(live.sort_column, live.sort_order)
        rows = list(live.ix.all.values())
        skipped = set(live.skipped)
        window = self.live_days * DAY
        prepared = await self.runtime.store.read(lambda c: past.prepare(rows_at(c, rows, moment, window)))
        if moment is not self.moment:
            return
        shown = prepared.index.all
        past.skipped = {o for o in skipped if o in shown and shown[o][STATUS] == int(OrderStatus.Canceled)}
        past.install(prepared)
        if self.model is not past:
            self._set_model(past)
        self._load_note = False
        note = moment.archive_note
        self._show_status(Feedback("error" if note else "ok",
                                   f"{past.total:,} orders as they stood at {when(moment.at)}; read only"
                                   + (f"; {note}" if note else "")))
        self._update_summary()
        self._update_buttons()

    def _set_model(self, model: OrdersTableModel) -> None:
        """Show ``model`` in the table; the current order stays current if it is in it."""
        current = self.current_id()
        self.model = model
        old = self.view.selectionModel()
        self.view.setModel(model)
        old.deleteLater()
        self._connect_selection()
        self.view.horizontalHeader().setSortIndicator(model.sort_column, model.sort_order)
        for column in (ETA_COLUMN, ETA_BAND_COLUMN):  # forecasts are of the live queue, not the past
            self.view.setColumnHidden(column, model is self.past_model)
        if current is not None:
            self.select_order(current)

    # ------------------------------------------------------------------ the view to open on

    def open_saved_view(self) -> str:
        """Open on the view the operator last picked (kept next to the store), else on "Needs
        attention"; returns its name."""
        name = self.views.open_on()
        self.filter_bar.choose_view(name)
        return name

    @Slot()
    def _show_all_orders(self) -> None:
        """The empty state's button: the "All orders" view, kept as the one to open on."""
        self.filter_bar.choose_view(ALL_ORDERS)
        self._remember_view(ALL_ORDERS)

    def _remember_view(self, name: str | None) -> None:
        if not name:
            return
        try:
            self.views.remember(name)
        except OSError as exc:
            self._show_status(Feedback("error", f"The view to open on was not kept: {exc}"))

    @Slot(object)
    def _on_orders_changed(self, rows: dict[str, tuple[Any, ...]]) -> None:
        if self._loaded:
            self.live_model.apply(self._adopt(rows))
            self.pacer.changed()
            if self.model is self.history_model:  # results that changed (new orders are not results)
                known = self.history_model.ix.all
                found = {oid: row for oid, row in rows.items() if oid in known}
                if found:
                    self.history_model.apply(found)
            if self.selected_count() == 1:  # its buttons follow its status (and its run's)
                current = self.current_id()
                if current is not None and (current in rows or self.adopters.get(current) in rows):
                    self._update_buttons()
        else:
            self._pending.update(rows)

    def _adopt(self, rows: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        """``rows`` with the runs made for Data Services orders as runs (their parent cleared).

        A new order whose parent has no step shown yet may be such a run: those are looked up
        together (one indexed query per frame that creates runs)."""
        every, children, adopted = self.live_model.ix.all, self.live_model.ix.children, self.adopted
        unsure = [oid for oid, row in rows.items()
                  if row[PARENT] is not None and oid not in every and oid not in adopted
                  and row[PARENT] not in children]
        if unsure:
            self._note_adopted(self.runtime.store.adopted_runs(unsure))
        if not adopted:
            return rows
        return {oid: (row if oid not in adopted else (oid, None, *row[2:])) for oid, row in rows.items()}

    def _note_adopted(self, runs: dict[str, str]) -> None:
        for run_id, order_id in runs.items():
            self.adopted[run_id] = order_id
            self.adopters[order_id] = run_id
            self._managed.pop(order_id, None)

    def acting_row(self, order_id: str) -> tuple[Any, ...] | None:
        """The row whose status decides which actions apply to ``order_id``: its own, or for an
        order claimed from Data Services its run's."""
        run_id = self.adopters.get(order_id)
        for model in (self.model, self.live_model):
            row = model.get(run_id if run_id is not None else order_id) or model.get(order_id)
            if row is not None:
                return row
        return None

    @Slot(object)
    def _on_events(self, events: list[Any]) -> None:
        if not self._loaded:
            return
        fractions = {e.order_id: e.progress for e in events
                     if isinstance(e, StepProgress) and e.progress is not None}
        if fractions:
            self.live_model.apply_progress(fractions)
            self.pacer.changed()
        steps = {e.order_id: e.status == "skipped" for e in events if isinstance(e, StepChanged)}
        if steps:
            self.live_model.set_skipped([o for o, s in steps.items() if s], [o for o, s in steps.items() if not s])

    def wants_refresh(self) -> bool:
        return self._loaded

    @Slot()
    def tick(self) -> None:
        """Repaint running durations of the visible rows (nothing else changes with time)."""
        n = self.model.rowCount()
        if n == 0 or self.model is self.past_model:
            return
        first = max(0, self.view.rowAt(0))
        last = self.view.rowAt(self.view.viewport().height() - 1)
        last = n - 1 if last < 0 else last
        if any(self.model.is_live(self.model.row_data(r)) for r in range(first, last + 1)):
            self.model.refresh_rows(first, last, DURATION_COLUMN)

    # ------------------------------------------------------------------ selection

    def selected_ids(self) -> list[str]:
        """Ids of the selected orders, in view order (every match when all rows are selected)."""
        selection = self.view.selectionModel().selection()
        n = self.model.rowCount()
        rows: list[int] = []
        for rng in _ranges(selection):
            rows.extend(range(rng.top(), rng.bottom() + 1))
        if len(rows) == n and n > 0 and len(set(rows)) == n:
            return self.model.visible_ids()
        rows = sorted(set(rows))
        return [self.model.order_id(r) for r in rows]

    def selected_count(self) -> int:
        return sum(rng.bottom() - rng.top() + 1 for rng in _ranges(self.view.selectionModel().selection()))

    def current_id(self) -> str | None:
        index = self.view.currentIndex()
        return self.model.order_id(index.row()) if index.isValid() else None

    @Slot()
    def select_all_matching(self) -> None:
        """Select every order the filter lets through (then bulk actions apply to all of them)."""
        self.view.selectAll()

    def expand_all(self, on: bool) -> None:
        """Show (or hide) every run's steps; the selection stays on the same orders (a hidden
        step's on its run)."""
        if self.selected_count() > RESELECT_LIMIT:
            self.model.expand_all(on)
            return
        current = self.current_id()
        keep = self.selected_ids()
        if not on:
            keep = list(dict.fromkeys(self._run_id(o) for o in keep))
            current = self._run_id(current) if current else None
        self.model.expand_all(on)
        self.select_orders(keep)
        row = self.model.row_of(current) if current else None
        if row is not None:
            self.view.selectionModel().setCurrentIndex(self.model.index(row, 0),
                                                       QItemSelectionModel.SelectionFlag.NoUpdate)

    def _run_id(self, order_id: str) -> str:
        row = self.model.get(order_id)
        return order_id if row is None or row[PARENT] is None else str(row[PARENT])

    def expand_current(self, on: bool) -> None:
        """Show (or hide) the steps of the current run (of the current step's run, to hide)."""
        order_id = self.current_id()
        row = self.model.get(order_id) if order_id else None
        if row is None:
            return
        run = row[1] or row[0]
        self.model.set_expanded(run, on)
        if not on:
            self.select_order(run)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        """A click on a run's ▸/▾ mark expands or collapses it."""
        kinds = (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonRelease, QEvent.Type.MouseButtonDblClick)
        if watched is self.view.viewport() and event.type() in kinds \
                and isinstance(event, QMouseEvent) and event.button() == Qt.MouseButton.LeftButton:
            pos = event.position().toPoint()
            index = self.view.indexAt(pos)
            if index.isValid() and index.column() == 0 \
                    and pos.x() - self.view.visualRect(index).left() < MARK_WIDTH:
                order_id = self.model.order_id(index.row())
                if self.model.can_expand(order_id):
                    if event.type() == QEvent.Type.MouseButtonPress:  # the rest of the click: nothing
                        self.model.set_expanded(order_id, not self.model.is_expanded(order_id))
                    return True
        return super().eventFilter(watched, event)

    def _show_run(self, run_id: str) -> None:
        """Only this run, its steps shown under it."""
        self.model.set_expanded(run_id, True)
        self.filter_bar.set_run(run_id)

    def focus_order(self, order_id: str) -> bool:
        """:meth:`select_order`, switching to the "All orders" view first when the filter hides
        an order the table has (a new run while "Needs attention" is shown)."""
        if self.select_order(order_id):
            return True
        if self.model.get(order_id) is None or self.model is self.history_model:
            return False
        self.filter_bar.choose_view(ALL_ORDERS)
        return self.select_order(order_id)

    def select_order(self, order_id: str) -> bool:
        """Make ``order_id`` the current, only selected order (False if it is not shown); a
        step's run is expanded to show it."""
        self.model.reveal(order_id)
        row = self.model.row_of(order_id)
        if row is None:
            return False
        index = self.model.index(row, 0)
        self.view.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.view.scrollTo(index)
        return True

    def select_orders(self, order_ids: list[str]) -> int:
        """Select these orders (those shown); returns how many are selected."""
        rows = sorted(r for r in (self.model.row_of(o) for o in order_ids) if r is not None)
        selection = QItemSelection()
        last_col = self.model.columnCount() - 1
        start: int | None = None
        prev = -1
        for r in [*rows, None]:
            if start is not None and (r is None or r != prev + 1):
                selection.select(self.model.index(start, 0), self.model.index(prev, last_col))
                start = None
            if r is not None:
                if start is None:
                    start = r
                prev = r
        self.view.selectionModel().select(
            selection, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        return len(rows)

    @Slot()
    def _remember_selection(self) -> None:
        ids = self.selected_ids() if self.selected_count() <= RESELECT_LIMIT else []
        self._saved_selection = (self.current_id(), ids)

    @Slot()
    def _restore_selection(self) -> None:
        current, ids = self._saved_selection
        self._saved_selection = (None, [])
        if ids:
            self.select_orders(ids)
        if current is not None:
            row = self.model.row_of(current)
            if row is not None:
                self.view.selectionModel().setCurrentIndex(self.model.index(row, 0),
                                                           QItemSelectionModel.SelectionFlag.NoUpdate)

    @Slot(QModelIndex, int, int)
    def _on_rows_leaving(self, _parent: QModelIndex, first: int, last: int) -> None:
        if not hasattr(self, "view"):
            return
        current = self.view.currentIndex()
        if current.isValid() and first <= current.row() <= last:
            self._leaving = self.model.order_id(current.row())

    @Slot(QModelIndex, int, int)
    def _on_rows_left(self, _parent: QModelIndex, _first: int, _last: int) -> None:
        """The current order left the table (a filter no longer lets it through, e.g. after an
        action on it): nothing becomes current in its place; Detail keeps showing it."""
        if self._leaving is None:
            return
        self._leaving = None
        selection = self.view.selectionModel()
        selection.clearCurrentIndex()  # rows still selected stay selected
        self._update_summary()
        self._update_buttons()

    @Slot(QModelIndex, QModelIndex)
    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if self._leaving is not None:
            return  # Qt moving the current row off a row being removed: not the operator's choice
        if current.isValid():
            order_id = self.model.order_id(current.row())
            if order_id != self._emitted:
                self._emitted = order_id
                self.order_selected.emit(order_id)

    @Slot()
    def _on_selection_changed(self) -> None:
        self._update_summary()
        self._update_buttons()

    @Slot(QModelIndex)
    def _on_activated(self, index: QModelIndex) -> None:
        if index.isValid():
            order_id = self.model.order_id(index.row())
            self.order_selected.emit(order_id)
            self._emitted = order_id
            self.details_requested.emit(order_id)

    # ------------------------------------------------------------------ actions

    def trigger(self, key: str) -> Any:
        """Run action ``key`` on the selection: one order, or a bulk action on several.

        Returns the action's task (None when nothing started; the status line says why).
        """
        action = ACTIONS[key]
        ids = self.selected_ids()
        if not ids:
            current = self.current_id()
            ids = [current] if current else []
        if not ids:
            self._show_status(Feedback("error", f"{action.label.rstrip('…')}: select an order first"))
            return None
        if key == "details":
            self.details_requested.emit(ids[0])
            return None
        if self.moment is not None:
            self._show_status(Feedback("error", f"{action.label.rstrip('…')}: Jobs shows {when(self.moment.at)}, "
                                                "read only; press Now on the time bar to act"))
            return None
        archived = [i for i in ids if i in self.archived_ids]
        if archived:
            self._show_status(Feedback("error", f"{action.label.rstrip('…')}: {archived[0]} is archived "
                                                "(read-only: its details, history and audit can be shown)"
                                                + (f"; {len(archived) - 1:,} more selected" if len(archived) > 1
                                                   else "")))
            return None
        if len(ids) > 1:
            if not action.bulk:
                self._show_status(Feedback("error", f"{action.label.rstrip('…')} works on one order "
                                                    f"at a time ({len(ids):,} are selected)"))
                return None
            return self.actions.request_bulk(key, ids)
        order_id = ids[0]
        row = self.acting_row(order_id)
        if row is not None:
            status = OrderStatus(row[STATUS])
            is_run = row[PARENT] is None
            if not action.applies(status, is_run, self.model.status_name(row) == SKIPPED):
                kind = "run" if is_run else "step order"
                self._show_status(Feedback("error", f"{action.label.rstrip('…')} does not apply to "
                                                    f"{order_id}, a {self.model.status_name(row)} {kind}"))
                return None
        return self.actions.request(key, order_id)

    def build_menu(self, view_row: int) -> QMenu:
        """The context menu for the order at ``view_row`` (or for the whole selection)."""
        menu = QMenu(self)
        ids = self.selected_ids()
        order_id = self.model.order_id(view_row)
        if len(ids) > 1 and order_id in ids:
            menu.addSection(f"{len(ids):,} orders selected")
            for key, verb in BULK_LABELS.items():
                item = menu.addAction(f"{verb} {len(ids):,} orders…")
                item.setObjectName(f"bulk_{key}")
                item.triggered.connect(lambda _c=False, k=key: self.trigger(k))
            menu.addSeparator()
            matching = self.model.rowCount()
            item = menu.addAction(f"Select all {matching:,} matching the filter")
            item.setObjectName("select_all")
            item.triggered.connect(self.select_all_matching)
            item = menu.addAction("Copy ids")
            item.triggered.connect(lambda: QGuiApplication.clipboard().setText("\n".join(ids)))
            return menu
        row = self.model.row_data(view_row)
        if order_id in self.archived_ids or self.moment is not None:
            menu.addSection(f"{order_id} · {self.model.status_name(row)} · "
                            + (f"at {when(self.moment.at)} (read only)" if self.moment is not None
                               else "archived (read-only)"))
            item = menu.addAction(ACTIONS["details"].label)
            item.setObjectName("details")
            item.triggered.connect(lambda _c=False: self.trigger("details"))
            copy = menu.addAction("Copy id")
            copy.triggered.connect(lambda: QGuiApplication.clipboard().setText(order_id))
            return menu
        acting = self.acting_row(order_id) or row
        status = OrderStatus(acting[STATUS])
        is_run = row[PARENT] is None
        shown = self.model.status_name(row)
        # Orders from elsewhere (Data Services clients) are not the engine's to act on.
        managed = self.is_managed(order_id)
        owner = self.owner_elsewhere(order_id)
        run_for = self.adopters.get(order_id)
        menu.addSection(f"{order_id} · {shown} {'run' if is_run else 'step'}"
                        + ("" if managed else f" · owned by {owner}" if owner else " · not a labconsole run")
                        + (f" · acts on its run {run_for}" if run_for else ""))
        for key, action in ACTIONS.items():
            if not action.applies(status, is_run, acting is row and shown == SKIPPED):
                continue
            item = menu.addAction(action.label)
            item.setObjectName(key)
            refused = self.actions.refusal(key)  # the signed-in user's role
            if (not managed and key not in ("details", "why_waiting")) or refused is not None:
                item.setEnabled(False)
            if action.shortcut:
                item.setShortcut(QKeySequence(action.shortcut))
                item.setShortcutVisibleInContextMenu(True)
            item.setToolTip(refused or action.tip)
            item.triggered.connect(lambda _c=False, k=key: self.trigger(k))
            if key in ("why_waiting", "recover"):
                menu.addSeparator()
        menu.addSeparator()
        if is_run:
            item = menu.addAction("Show only this run and its steps")
            item.setObjectName("show_run")
            item.triggered.connect(lambda: self._show_run(order_id))
        else:
            parent = row[PARENT]
            item = menu.addAction(f"Show run {parent} and its steps")
            item.setObjectName("show_run")
            item.triggered.connect(lambda: self._show_run(parent))
        copy = menu.addAction("Copy id")
        copy.triggered.connect(lambda: QGuiApplication.clipboard().setText(order_id))
        menu.setToolTipsVisible(True)
        return menu

    @Slot(QPoint)
    def _on_context_menu(self, pos: QPoint) -> None:
        index = self.view.indexAt(pos)
        if not index.isValid():
            return
        if not self.view.selectionModel().isRowSelected(index.row(), QModelIndex()):
            self.view.selectionModel().setCurrentIndex(
                index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        menu = self.build_menu(index.row())
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        menu.popup(self.view.viewport().mapToGlobal(pos))

    # ------------------------------------------------------------------ drag to reprioritise

    def _draggable(self, row: tuple[Any, ...]) -> bool:
        """Queued runs of the live window (not started, or waiting) move by drag and drop."""
        if row[PARENT] is not None or row[ID] in self.archived_ids or self.moment is not None:
            return False
        if row[STATUS] not in ACTIONS["reprioritise"].run_statuses:  # an int: the IntEnum's set takes it
            return False
        return self.is_managed(row[ID])

    @Slot(str, int)
    def move_run(self, order_id: str, row: int) -> asyncio.Task[Any] | None:
        """Give ``order_id`` the priority that puts it before view row ``row`` of the table
        sorted by Priority (the run dropped there); the engine records who moved it."""
        model = self.model
        current = model.get(order_id)
        if current is None or not self._draggable(current):
            self._show_status(Feedback("error", f"Move {order_id}: only queued runs can be dragged"))
            return None
        if model.sort_column != PRIORITY_COLUMN:
            self._show_status(Feedback("error", f"Move {order_id}: sort by Priority first (click its "
                                                "header); a run dropped there gets the priority of its place"))
            return None
        above, below = model.neighbours(order_id, row)
        highest_first = model.sort_order == Qt.SortOrder.AscendingOrder
        new = priority_for_drop(above[NPRI] if above is not None else None,
                                below[NPRI] if below is not None else None, highest_first=highest_first)
        old = current[NPRI]
        if new == old:
            self._show_status(Feedback("ok", f"{order_id} keeps priority {old}: that is its place already"))
            return None
        if below is not None:
            where = f"above {below[ID]}"
        elif above is not None:
            where = f"below {above[ID]}"
        else:
            where = "alone"
        reason = f"moved {where} in Jobs"
        who = self.actions.who()
        self._show_status(Feedback("busy", f"Reprioritising {order_id}: {old} → {new} ({reason})…"))

        async def flow() -> Any:
            try:
                result = await self.runtime.reprioritise(order_id, new, who=who, reason=reason)
            except LabconsoleError as exc:
                self._show_status(Feedback("error", f"Move {order_id}: {exc}"))
                return None
            if result.ok:
                self._show_status(Feedback("ok", f"{order_id}: priority {old} → {new}, {where}"))
            else:
                self._show_status(Feedback("error", f"Move {order_id}: {result.message}"))
            return result

        return self._tasks.run(flow(), f"move {order_id}")

    # ------------------------------------------------------------------ filter and views

    @Slot(object)
    def _on_filter_changed(self, spec: OrderFilter) -> None:
        if self.model is self.history_model:
            self.search_history(spec)
        else:
            self.live_model.set_filter(spec)
            if self.moment is not None:
                self.past_model.set_filter(spec)
        self._update_summary()

    @Slot(object)
    def _on_view_chosen(self, view: SavedView) -> None:
        if view.sort_column in COLUMN_KEYS:
            order = Qt.SortOrder.DescendingOrder if view.descending else Qt.SortOrder.AscendingOrder
            self.view.sortByColumn(COLUMN_KEYS.index(view.sort_column), order)

    def save_view(self, name: str) -> SavedView | None:
        """Save the current filter and sort as the view ``name`` (replacing one of that name)."""
        view = SavedView(name, self.model.filter, COLUMN_KEYS[self.model.sort_column],
                         self.model.sort_order == Qt.SortOrder.DescendingOrder)
        try:
            self.views.save(view)
        except (ValueError, OSError) as exc:
            self._show_status(Feedback("error", f"View not saved: {exc}"))
            return None
        self.filter_bar.refresh_views(select=name)
        self._show_status(Feedback("ok", f"Saved view “{name}”"))
        return view

    @Slot()
    def request_save_view(self) -> Any:
        """Ask for a name (dialog opened with ``open()``), then save the view."""
        dialog = NameDialog("Save view", "Name:", taken=[v.name for v in self.views.user_views()],
                            parent=self)
        self.actions.dialog_opened.emit(dialog)

        async def flow() -> str | None:
            try:
                if await ask(dialog):
                    self.save_view(dialog.name)
                    return dialog.name
                return None
            finally:
                dialog.deleteLater()

        return self._tasks.run(flow(), "save view")

    @Slot()
    def _update_names(self) -> None:
        instruments = set(self.live_model.ix.instruments)
        try:
            instruments.update(v.id for v in self.runtime.instruments())
        except Exception:  # noqa: BLE001 - a runtime without a workcell has no instruments
            pass
        self.filter_bar.set_names(self.live_model.ix.templates, instruments)

    # ------------------------------------------------------------------ all history

    @property
    def history_mode(self) -> bool:
        """Whether the table shows "Search all history" results instead of the live window."""
        return self.model is self.history_model

    @Slot(bool)
    def set_history_mode(self, on: bool) -> None:
        """Show the results of searching all history (True) or the live window (False)."""
        if on == self.history_mode:
            return
        self._cancel_history()
        self._set_model(self.history_model if on else self.live_model)
        if self.filter_bar.history_mode != on:
            self.filter_bar.set_history_mode(on)
        if on:
            self.search_history(self.filter_bar.current())
        else:
            self.history_reach = self.history_page = self.history_matched = None
            self.archived_ids.clear()
            self.history_model.reset(())
            if self.live_model.filter != self.filter_bar.current():
                self.live_model.set_filter(self.filter_bar.current())
        self._update_summary()
        self._update_buttons()

    def search_history(self, spec: OrderFilter) -> asyncio.Task[None]:
        """Search all history for ``spec`` off the loop (the search before it is cancelled) and
        show the first page of results, newest first."""
        self._cancel_history()
        query = history_query(spec, self.live_model.now(), HISTORY_PAGE)
        self._history_query = query
        self.history_matched = None
        self.filter_bar.set_history_note("Searching all history…")
        task = asyncio.get_running_loop().create_task(self._run_history(query, None))
        self._history_task = task
        return task

    @Slot()
    def load_more_history(self) -> asyncio.Task[None] | None:
        """Page in the next (older) results of the history search, if there are more."""
        page, query = self.history_page, self._history_query
        if (not self.history_mode or page is None or page.next_cursor is None or query is None
                or (self._history_task is not None and not self._history_task.done())):
            return None
        task = asyncio.get_running_loop().create_task(self._run_history(query, page.next_cursor))
        self._history_task = task
        return task

    def _cancel_history(self) -> None:
        task = self._history_task
        self._history_task = None
        if task is not None and not task.done():
            task.cancel()
            self.history.cancel()  # interrupts its query if it is running

    async def _run_history(self, query: HistoryQuery, cursor: int | None) -> None:
        try:
            if self.history_reach is None:
                self.history_reach = await self.history.reach()
            page = await self.history.search(query, cursor)
            if query is not self._history_query or not self.history_mode:
                return
            self._show_history_page(page, first=cursor is None)
            self._update_history_note()
            if cursor is None:
                self.history_matched = await self.history.count(query, cap=HISTORY_COUNT_CAP)
        except SearchSuperseded:
            return
        except (LabconsoleError, sqlite3.Error) as exc:
            if query is self._history_query:
                self.filter_bar.set_history_note(f"History search failed: {exc}", error=True)
            return
        if query is self._history_query and self.history_mode:
            self._update_history_note()

    def _show_history_page(self, page: HistoryPage, *, first: bool) -> None:
        if first:
            self.archived_ids = {r[0] for r in page.rows if r[ARCHIVED_COLUMN]}
            self.history_model.reset(page.rows)
        else:
            self.archived_ids.update(r[0] for r in page.rows if r[ARCHIVED_COLUMN])
            self.history_model.apply({r[0]: r for r in page.rows})
        self.history_page = page

    def _history_text(self) -> tuple[str, bool]:
        """What the history search reaches and found (and whether the archive has a problem)."""
        parts: list[str] = []
        reach = self.history_reach
        if reach is not None:
            oldest = reach.oldest
            total = reach.live_orders + reach.archived_orders
            back = f"back to {format_full_time(oldest)[:10]}" if oldest is not None else "empty"
            parts.append(f"All history {back}: {total:,} orders"
                         + (f" ({reach.archived_orders:,} archived)" if reach.archived_orders else ""))
        if self.history_matched is not None:
            count, more = self.history_matched
            parts.append(f"{'over ' if more else ''}{count:,} match")
        elif self.history_page is not None:
            parts.append("counting matches…")
        parts.append(f"{self.history_model.rowCount():,} shown")
        error = False
        page = self.history_page
        state = page.archive if page is not None else reach.archive if reach is not None else None
        if state is not None and not state.ok:
            parts.append(state.message)
            error = True
        return " · ".join(parts), error

    def _update_history_note(self) -> None:
        text, error = self._history_text()
        page = self.history_page
        self.filter_bar.set_history_note(text, more=page is not None and page.next_cursor is not None,
                                         error=error)
        self._update_summary()

    def _history_summary(self, shown: int) -> str:
        return f"{shown:,} orders found in all history · {self.live_model.filter.describe()}".replace(
            " · all orders", "")

    @Slot(int)
    def _on_scrolled(self, value: int) -> None:
        bar = self.view.verticalScrollBar()
        if self.history_mode and value > 0 and value == bar.maximum():
            self.load_more_history()

    def _connect_selection(self) -> None:
        selection = self.view.selectionModel()
        selection.currentRowChanged.connect(self._on_current)
        selection.selectionChanged.connect(self._on_selection_changed)

    # ------------------------------------------------------------------ status

    @Slot()
    def _update_summary(self) -> None:
        shown, total = self.model.rowCount(), self.model.total
        spec = self.live_model.filter
        if self.model is self.history_model:
            text = self._history_summary(shown)
        else:
            text = f"{total:,} orders" if spec.is_empty else f"{shown:,} of {total:,} orders · {spec.describe()}"
        if self.model is self.past_model and self.moment is not None:
            text += f" · as they stood at {when(self.moment.at)}"
        if self.older_orders and self.model is self.live_model:
            text += (f" · unfinished and last {self.live_days:g} days; {self.older_orders:,} older "
                     "in Search all history")
        selected = self.selected_count()
        if selected:
            text += f" · {selected:,} selected"
        self.summary.setText(text)
        self.summary.setToolTip(text)
        if self._load_note and self.last_feedback is not None and self.last_feedback.level == "ok":
            self._show_status(Feedback("ok", self._loaded_text()))  # the count stays true
        self.select_all_button.setText(f"Select all {shown:,} matching")
        self.select_all_button.setEnabled(shown > 0)
        self._update_empty_hint(shown, total)

    def _loaded_text(self) -> str:
        return f"{self.live_model.total:,} orders, following the store live"

    def _update_empty_hint(self, shown: int, total: int) -> None:
        self.all_orders_button.hide()
        if shown or not self._loaded:
            self.empty_hint.hide()
            return
        attention = self.views.get(OPEN_VIEW)
        if self.model is self.past_model:
            text = (f"<p><b>No order matches at {when(self.moment.at) if self.moment else 'that moment'}.</b>"
                    "</p><p>Orders created later, or finished before the live window, are not shown.</p>")
        elif total == 0:
            text = ("<p><b>No orders yet.</b></p><p>Open <b>Templates</b> (the tab next to Detail), "
                    "pick one, then <b>Run…</b> and fill in its inputs. Its run and steps appear "
                    "here as they move through the workcell.</p><p>Orders sent by Data Services "
                    "clients show up here too.</p>")
        elif attention is not None and self.model.filter == attention.filter:
            text = (f"<p><b>Nothing needs attention.</b></p><p>No order is failed, paused or of unknown "
                    f"outcome ({total:,} orders in all).</p>")
            self.all_orders_button.show()
        else:
            text = (f"<p><b>No order matches the filter</b> ({total:,} orders in all).</p>"
                    "<p>Change or clear the filter above to see them.</p>")
        self.empty_hint.setText(text)
        self.empty_hint.show()

    def _update_buttons(self) -> None:
        count = self.selected_count()
        row = None
        if count == 1:
            ids = self.selected_ids()
            row = self.acting_row(ids[0]) if ids else None
        managed = row is not None and row[0] not in self.archived_ids and self.is_managed(row[0])
        for key, button in self.bulk_buttons.items():
            action = ACTIONS[key]
            if self.moment is not None:  # the past is read only
                button.setText(action.label if count <= 1 else f"{BULK_LABELS[key]} {count:,}…")
                button.setEnabled(False)
                button.setToolTip(f"Read only: Jobs shows {when(self.moment.at)}; press Now on the time bar")
                continue
            button.setToolTip(self._bulk_tips[key])
            if count > 1:
                button.setEnabled(not self.archived_ids or not any(i in self.archived_ids
                                                                   for i in self.selected_ids()))
                button.setText(f"{BULK_LABELS[key]} {count:,}…")
            else:
                button.setText(action.label)
                button.setEnabled(managed and row is not None
                                  and action.applies(OrderStatus(row[STATUS]), row[PARENT] is None,
                                                     self.model.status_name(row) == SKIPPED))
            refused = self.actions.refusal(key)  # the signed-in user's role does not allow it
            if refused is not None:
                button.setEnabled(False)
            button.setToolTip(refused or self.bulk_tips[key])

    def follow_user(self) -> None:
        """The signed-in user changed: offer the buttons their role allows."""
        self._update_buttons()

    def is_managed(self, order_id: str) -> bool:
        """Whether the engine runs this order (a labconsole run or step, or an order claimed from
        Data Services, whose actions act on its run) for this workcell; cached per order."""
        if self.owner_elsewhere(order_id) is not None:
            return False
        known = self._managed.get(order_id)
        if known is None:  # one or two indexed lookups
            known = (self.runtime.target(order_id).run_id is not None
                     or bool(self.runtime.store.runs_for_orders([order_id])))
            if len(self._managed) > 5000:
                self._managed.clear()
            self._managed[order_id] = known
        return known

    def owner_elsewhere(self, order_id: str) -> str | None:
        """The other workcell that took over this console's copy of a Data Services order (the
        copy, its run and steps are then that workcell's, read-only here), or None."""
        link = getattr(self.runtime, "link", None)
        if link is None:
            return None
        ids = [order_id]
        row = self.model.get(order_id)
        if row is not None and row[PARENT]:
            ids.append(row[PARENT])
        ids += [self.adopted[i] for i in list(ids) if i in self.adopted]
        owner: str | None = link.lost_owner(ids)
        return owner

    @Slot(object)
    def _on_feedback(self, feedback: Feedback) -> None:
        self._show_status(feedback)

    def _show_status(self, feedback: Feedback) -> None:
        if self.last_feedback is not None and feedback.message != self._loaded_text():
            self._load_note = False  # another message replaced the load note
        self.last_feedback = feedback
        mark = MARKS[feedback.level]
        colour = {"busy": None, "ok": status_color(OrderStatus.Complete),
                  "error": status_color(OrderStatus.Error)}[feedback.level]
        style = f"color: {colour.name()};" if colour is not None else ""
        self.status_line.setStyleSheet(style)
        self.status_line.setText(f"{mark}  {feedback.message}")
        recent = [f"{MARKS[f.level]} {f.message}" for f in self.actions.history[-12:]]
        self.status_line.setToolTip("\n".join(recent))

    # ------------------------------------------------------------------ lifecycle

    def on_shutdown(self) -> None:
        """Stop the filter bar's timers, running actions, the panel's own dialogs, and following
        the forecast and the past."""
        self.filter_bar.shutdown()
        self.prune_timer.stop()
        self.pacer.resume()
        self._cancel_history()
        if self.forecast is not None:
            self.forecast.remove_listener(self._on_forecast)
        for task in (self._eta_task, self._past_task):
            if task is not None and not task.done():
                task.cancel()
        self.actions.shutdown()
        self._tasks.cancel_all()


def _ranges(selection: QItemSelection) -> list[QItemSelectionRange]:
    """The ranges of a selection (PySide6's stubs do not declare it iterable)."""
    return [selection.at(i) for i in range(selection.count())]


def rows_at(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]], moment: Moment,
            window: float | None = None) -> list[tuple[Any, ...]]:
    """The order rows as they stood at ``moment`` (on a store reader thread).

    ``rows`` are the rows at hand (the live window); with ``window`` (seconds), the orders open
    at the moment and those that ended in the ``window`` before it are read from the store too
    when ``rows`` lack them (a moment older than the live window), and from the archive when the
    moment was built with it (orders archived since).

    Orders created after it are left out. An order open then has its status then from the
    moment; one finished before it and untouched since keeps its row; any other (finished then,
    changed later: a retried failure) gets the status of its last transition up to the moment,
    read in batches. Start and end times after the moment are cleared, and so are the details
    of an order whose status has changed since.
    """
    at = moment.at
    opened = moment.state.open
    out: list[tuple[Any, ...]] = []
    unsure: list[tuple[Any, ...]] = []
    rows = list(rows)
    archive = attach_for(conn, moment)
    if window is not None:
        have = {r[ID] for r in rows}
        adopted: dict[str, str] = {}
        rows.extend(rows_of(conn, [o for o in opened if o not in have], adopted, archive=archive))
        have.update(opened)
        rows.extend(r for r in rows_ended_between(conn, at - window, at, adopted, archive=archive)
                    if r[ID] not in have)
    for r in rows:
        created = r[CREATED]
        if created is None or created > at:
            continue
        then = opened.get(r[ID])
        if then is not None:
            out.append(_row_then(r, then[0], at))
        elif r[STATUS] not in OPEN_STATUSES and r[ENDED] is not None and r[ENDED] <= at:
            out.append(r)
        else:
            unsure.append(r)
    last = statuses_at(conn, [r[ID] for r in unsure], at, archive=archive)
    for r in unsure:
        status = last.get(r[ID])
        if status is not None:
            out.append(_row_then(r, status, at))
    return out


def _row_then(r: tuple[Any, ...], status: int, at: float) -> tuple[Any, ...]:
    started = r[STARTED] if r[STARTED] is not None and r[STARTED] <= at else None
    ended = r[ENDED] if status not in OPEN_STATUSES and r[ENDED] is not None and r[ENDED] <= at else None
    return (*r[:STATUS], status, *r[STATUS + 1:STARTED], started, ended,
            r[DETAILS] if status == r[STATUS] else None)
