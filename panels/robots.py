"""Robots panel: every instrument of the workcell, as cards or as a table, with operator actions.

A thin adapter over :meth:`Runtime.instruments` (one ``InstrumentView`` snapshot per instrument)
and :meth:`Runtime.instrument_action` (enable, disable, take out of service, release, reconnect —
each audited by the core with who and why). Nothing here decides anything about instruments.

Updates: the bridge delivers the events of each frame; this panel only notes which order
progressed and that something changed. A fixed-rate timer (250 ms, only while the panel is
visible) then takes one snapshot and updates the cards and the table if anything changed — and
once a second regardless, so heartbeat ages move. No Qt signal and no task per event.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QSize,
    Qt,
    Signal,
    Slot,
)
from PySide6.QtGui import QAction, QActionGroup, QKeySequence, QMouseEvent, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMenu,
    QProgressBar,
    QScrollArea,
    QSizePolicy,
    QStackedWidget,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.dispatcher import InstrumentView
from core.events import InstrumentStatusChanged, OperatorAction, StepProgress
from core.inbox import InboxChanged, Lock, read_locks
from core.runtime import ActionResult
from core.timetravel import Moment
from core.users import User, refusal
from panels.base import Panel
from panels.dialogs import ask
from panels.identity import connection_line, identity_tooltip, latency_text
from panels.instrument_detail import InstrumentDetail
from panels.signature import needs_signature, request_signature
from panels.style import (
    BUSY,
    DISABLED,
    DRAINING,
    OUT_OF_SERVICE,
    STATE_LABELS,
    format_age,
    icon,
    instrument_state,
    state_color,
    state_icon,
    state_pixmap,
)
from panels.theme import Theme, current_theme, theme_events
from panels.timetravel import PastBanner, past_views
from panels.widgets import CardGrid, ElidedLabel, ReasonDialog, TaskKeeper

log = logging.getLogger(__name__)

ModelIndex = QModelIndex | QPersistentModelIndex
TICK_MS = 250
"""Fixed refresh rate while visible (only when something changed, and once a second)."""
PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 1
"""Item role holding a 0..1 fraction drawn as a bar (progress, utilisation)."""


@dataclass(frozen=True)
class InstrumentAction:
    """One operator action on an instrument, as offered by the toolbar and the context menu."""

    key: str
    """The action name :meth:`Runtime.instrument_action` takes."""
    label: str
    icon: str
    needs_reason: bool
    allowed: Callable[[InstrumentView], bool]
    done: str
    """Past tense for the feedback line."""
    tooltip: str
    shortcut: str
    """Keys while the Robots panel has the focus."""


ACTIONS: tuple[InstrumentAction, ...] = (
    InstrumentAction("enable", "Enable", "power", False, lambda v: not v.enabled, "enabled",
                     "Let the dispatcher send orders to this instrument again", "Ctrl+E"),
    InstrumentAction("disable", "Disable…", "ban", True, lambda v: v.enabled, "disabled",
                     "No new orders for this instrument (asks for a reason)", "Ctrl+Shift+E"),
    InstrumentAction("out_of_service", "Out of service…", "wrench", True,
                     lambda v: v.in_service and not v.draining, "taken out of service",
                     "Take out of service for manual work; a running order finishes first "
                     "(asks for a reason)", "Ctrl+Shift+O"),
    InstrumentAction("release", "Release", "release", False,
                     lambda v: not v.in_service or v.draining, "released to service",
                     "Back in service after manual work", "Ctrl+Shift+B"),
    InstrumentAction("reconnect", "Reconnect", "refresh", False, lambda v: not v.running, "reconnected",
                     "Disconnect and connect again (only when idle)", "Ctrl+Shift+C"),
)
ACTION_BY_KEY = {a.key: a for a in ACTIONS}


def short_capability(capability: str, kind: str) -> str:
    """``LiquidHandler.Transfer`` on a LiquidHandler reads ``Transfer``."""
    prefix = f"{kind}."
    return capability[len(prefix):] if capability.startswith(prefix) else capability


def heartbeat_text(view: InstrumentView) -> str:
    """``just now (0.8 ms)``: the heartbeat's age and its last round trip."""
    latency = latency_text(view.latency)
    return format_age(view.heartbeat_age) + (f" ({latency})" if latency else "")


def current_order_text(view: InstrumentView) -> str:
    if not view.running:
        return ""
    if len(view.running) == 1:
        return view.running[0]
    return f"{len(view.running)} orders ({view.running[0]} …)"


def order_progress(view: InstrumentView, progress: dict[str, float]) -> float | None:
    """Progress (0..1) of the instrument's order; for a multi-slot instrument, its slot load."""
    if not view.running:
        return None
    if view.capacity > 1:
        return len(view.running) / view.capacity
    return progress.get(view.running[0])


# ---------------------------------------------------------------------------- table

COLUMNS: tuple[str, ...] = ("Instrument", "State", "Current order", "Progress", "Heartbeat",
                            "Utilisation", "Done", "Failed", "Capabilities", "Driver", "Detail")
_NAME, _STATE, _ORDER, _PROGRESS, _BEAT, _UTIL, _DONE, _FAILED, _CAPS, _DRIVER, _DETAIL = range(len(COLUMNS))


class InstrumentsTableModel(QAbstractTableModel):
    """Adapter from the instrument snapshots to Qt: one row per instrument, replaced whole."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._views: list[InstrumentView] = []
        self._progress: list[float | None] = []
        self.locks: dict[str, Lock] = {}
        """Instruments an operator claimed for manual work ("hands in the cell") -> the lock."""

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._views)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        v = self._views[index.row()]
        col = index.column()
        lock = self.locks.get(v.id)
        if lock is not None and col in (_STATE, _DETAIL) and role in (Qt.ItemDataRole.DisplayRole,
                                                                      Qt.ItemDataRole.ToolTipRole):
            return f"Hands in cell ({lock.who})" if col == _STATE else lock.describe()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._text(v, col, self._progress[index.row()])
        if role == PROGRESS_ROLE:
            if col == _PROGRESS:
                return self._progress[index.row()]
            if col == _UTIL:
                return v.utilisation
            return None
        if role == Qt.ItemDataRole.DecorationRole and col == _STATE:
            return state_icon(instrument_state(v))
        if role == Qt.ItemDataRole.ToolTipRole:
            if col in (_NAME, _DRIVER):
                return identity_tooltip(v)
            if col in (_DETAIL, _CAPS, _ORDER):
                return self._text(v, col, None) or None
            if col == _UTIL:
                return "Share of time Busy since the console started"
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (_DONE, _FAILED):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    @staticmethod
    def _text(v: InstrumentView, col: int, progress: float | None) -> str:
        if col == _NAME:
            return v.name or v.id
        if col == _STATE:
            return STATE_LABELS[instrument_state(v)]
        if col == _ORDER:
            return current_order_text(v)
        if col == _PROGRESS:
            if progress is None:
                return ""
            return f"{len(v.running)} / {v.capacity} slots" if v.capacity > 1 else f"{progress * 100:.0f} %"
        if col == _BEAT:
            return heartbeat_text(v)
        if col == _DRIVER:
            return connection_line(v)
        if col == _UTIL:
            return f"{v.utilisation * 100:.0f} %"
        if col == _DONE:
            return f"{v.completed:,}"
        if col == _FAILED:
            return f"{v.failed:,}"
        if col == _CAPS:
            return ", ".join(short_capability(c, v.kind) for c in v.capabilities)
        return v.detail

    def set_views(self, views: Sequence[InstrumentView], progress: Sequence[float | None],
                  locks: dict[str, Lock] | None = None) -> None:
        """Replace the snapshot; rows that did not change are not repainted."""
        views, progress = list(views), list(progress)
        if locks is not None and locks != self.locks:
            self.locks = dict(locks)
            if self._views:
                self.dataChanged.emit(self.index(0, 0), self.index(len(self._views) - 1, len(COLUMNS) - 1))
        if [v.id for v in views] != [v.id for v in self._views]:
            self.beginResetModel()
            self._views, self._progress = views, progress
            self.endResetModel()
            return
        changed = [i for i, (old, new) in enumerate(zip(self._views, views, strict=True))
                   if old != new or self._progress[i] != progress[i]]
        self._views, self._progress = views, progress
        if changed:
            self.dataChanged.emit(self.index(min(changed), 0), self.index(max(changed), len(COLUMNS) - 1))

    def view_at(self, row: int) -> InstrumentView:
        return self._views[row]

    def row_of(self, instrument_id: str) -> int | None:
        for i, v in enumerate(self._views):
            if v.id == instrument_id:
                return i
        return None


class BarDelegate(QStyledItemDelegate):
    """Draws a thin bar under the text for cells with a 0..1 fraction (progress, utilisation)."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        super().paint(painter, option, index)
        fraction = index.data(PROGRESS_ROLE)
        if fraction is None:
            return
        r: QRect = option.rect.adjusted(4, option.rect.height() - 6, -4, -3)
        painter.save()
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(option.palette.mid())
        painter.drawRoundedRect(r, 1.5, 1.5)
        fill = QRect(r)
        fill.setWidth(int(r.width() * max(0.0, min(1.0, float(fraction)))))
        painter.setBrush(state_color(BUSY))
        painter.drawRoundedRect(fill, 1.5, 1.5)
        painter.restore()


# ---------------------------------------------------------------------------- cards


class InstrumentCard(QFrame):
    """One instrument at a glance: state badge and name, what it does now, health, capabilities."""

    clicked = Signal(str)
    menu_requested = Signal(str, QPoint)
    details_requested = Signal(str)

    def __init__(self, view: InstrumentView, description: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.instrument_id = view.id
        self.setObjectName("instrumentCard")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self._selected = False
        self._state = ""
        self._style_key: tuple[str, str, bool] | None = None
        self.badge = QLabel(self)
        self.title = ElidedLabel(view.name or view.id, self)
        self.title.setObjectName("cardTitle")
        self.subtitle = ElidedLabel(description, self)
        self.subtitle.setObjectName("cardMuted")
        self.connection = ElidedLabel("", self)
        self.connection.setObjectName("cardMuted")
        self.state = QLabel(self)
        self.state.setObjectName("cardState")
        self.state_detail = ElidedLabel("", self)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.setFixedHeight(6)
        self.progress_text = QLabel(self)
        self.progress_text.setObjectName("cardMuted")
        self.health = ElidedLabel("", self)
        self.health.setObjectName("cardMuted")
        self.counts = QLabel(self)
        self.counts.setObjectName("cardMuted")
        self.capabilities = ElidedLabel("", self)
        self.capabilities.setObjectName("cardCaps")

        head = QHBoxLayout()
        head.setSpacing(8)
        head.addWidget(self.badge, 0, Qt.AlignmentFlag.AlignTop)
        names = QVBoxLayout()
        names.setSpacing(0)
        names.addWidget(self.title)
        names.addWidget(self.subtitle)
        names.addWidget(self.connection)
        head.addLayout(names, 1)
        bar = QHBoxLayout()
        bar.setSpacing(6)
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.progress_text)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 10, 8)
        layout.setSpacing(3)
        layout.addLayout(head)
        state_row = QHBoxLayout()
        state_row.setSpacing(6)
        state_row.addWidget(self.state)
        state_row.addWidget(self.state_detail, 1)
        layout.addLayout(state_row)
        layout.addLayout(bar)
        layout.addWidget(self.health)
        foot = QHBoxLayout()
        foot.addWidget(self.capabilities, 1)
        foot.addWidget(self.counts, 0, Qt.AlignmentFlag.AlignRight)
        layout.addLayout(foot)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Maximum)
        self.update_view(view, None)
        theme_events().changed.connect(self._on_theme)

    def update_view(self, v: InstrumentView, progress: float | None, note: str = "",
                    lock: Lock | None = None) -> None:
        """Show the snapshot ``v``; ``progress`` (0..1) of its order or slot load; ``note``: the
        last operator decision about it (who and why), if known; ``lock``: an operator's hands
        are in the cell (it replaces the note)."""
        state = instrument_state(v)
        if state != self._state:
            self._state = state
            self.badge.setPixmap(state_pixmap(state, 22))
            self._restyle()
        self.state.setText("Hands in cell" if lock is not None else STATE_LABELS[state])
        claimed = f"{lock.who}" + (f" — {lock.reason}" if lock.reason else "") if lock is not None else ""
        self.state_detail.set_full_text(state_detail(v, state, claimed or note))
        shown = progress is not None
        self.progress.setVisible(shown)
        self.progress_text.setVisible(shown)
        if shown:
            self.progress.setValue(int(1000 * max(0.0, min(1.0, progress or 0.0))))
            self.progress_text.setText(f"{len(v.running)} / {v.capacity} slots" if v.capacity > 1
                                       else f"{(progress or 0.0) * 100:.0f} %")
        self.health.set_full_text(f"Heartbeat {heartbeat_text(v)} · {v.utilisation * 100:.0f} % busy")
        self.connection.set_full_text(connection_line(v))
        tooltip = identity_tooltip(v)
        if lock is not None:  # the lock first, then who the instrument is
            tooltip = f"<b>{html.escape(lock.describe())} — release it in the Inbox</b><br>{tooltip}"
        if tooltip != self.toolTip():
            self.setToolTip(tooltip)
        self.counts.setText(f"{v.completed:,} done · {v.failed:,} failed")
        self.capabilities.set_full_text(" · ".join(short_capability(c, v.kind) for c in v.capabilities))

    def set_selected(self, selected: bool) -> None:
        if selected != self._selected:
            self._selected = selected
            self._restyle()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self.clicked.emit(self.instrument_id)
        if event.button() == Qt.MouseButton.RightButton:
            self.menu_requested.emit(self.instrument_id, event.globalPosition().toPoint())
        super().mousePressEvent(event)

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self.details_requested.emit(self.instrument_id)
        super().mouseDoubleClickEvent(event)

    @Slot(object)
    def _on_theme(self, _theme: object) -> None:
        self._restyle()
        if self._state:
            self.badge.setPixmap(state_pixmap(self._state, 22))

    def _restyle(self) -> None:
        theme = current_theme()
        key = (theme.name, self._state, self._selected)
        if key == self._style_key:
            return
        self._style_key = key
        stripe = state_color(self._state).name() if self._state else theme.colors["card_border"]
        border = theme.palette["Highlight"] if self._selected else theme.colors["card_border"]
        width = 2 if self._selected else 1
        self.setStyleSheet(
            f"#instrumentCard {{ background: {theme.colors['card']}; border: {width}px solid {border};"
            f" border-left: 5px solid {stripe}; border-radius: 6px; }}"
            f"#cardTitle {{ font-weight: 600; font-size: 13px; }}"
            f"#cardState {{ font-weight: 600; color: {state_color(self._state).name()}; }}"
            f"#cardMuted {{ color: {theme.colors['muted']}; font-size: 11px; }}"
            f"#cardCaps {{ color: {theme.colors['muted']}; font-size: 11px; }}"
            f"QProgressBar {{ border: none; border-radius: 3px; background: {theme.palette['Mid']}; }}"
            f"QProgressBar::chunk {{ border-radius: 3px; background: {state_color(BUSY).name()}; }}")


def state_detail(v: InstrumentView, state: str, note: str = "") -> str:
    """What an instrument does or why it stops, beyond its state's name."""
    label = STATE_LABELS[state]
    if v.running:
        doing = (f"running {v.running[0]}" if len(v.running) == 1
                 else f"running {len(v.running)} orders")
    else:
        doing = ""
    detail = v.detail or ""
    if detail.lower() in ("ready", label.lower()) or detail.startswith("running") \
            or detail.lower() in ("disabled by the operator", "out of service (manual work)",
                                  "finishing its order, then out of service"):
        detail = ""  # says no more than the state (or the running orders) already say
    return " · ".join(p for p in (doing, detail, note) if p)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------------- panel


class RobotsPanel(Panel):
    """The workcell's instruments, with enable/disable/out of service/release/reconnect.

    Receives the runtime facade and the per-frame event bridge. Emits :attr:`instrument_selected`
    with the id of the selected instrument; :attr:`action_finished` with ``(instrument id,
    action, ok, message)`` when an operator action has been applied (or refused) by the core.
    """

    instrument_selected = Signal(str)
    action_finished = Signal(str, str, bool, str)
    order_requested = Signal(str)
    """An order opened from the instrument detail window (to select in Jobs)."""
    REFRESH_MS = TICK_MS

    def __init__(self, runtime: RuntimeApi, bridge: Any, parent: QWidget | None = None) -> None:
        super().__init__(runtime, bridge, parent)
        self.tasks = TaskKeeper()
        self.user: User | None = None
        """The signed-in user (None: single-user mode); actions their role does not allow are off."""
        self.reason_dialog: ReasonDialog | None = None
        self.forecast: Any = None
        """The console's :class:`core.forecast.Forecast`: Out of service previews moved ETAs."""
        """The open reason dialog, if any (tests fill it in)."""
        self.signature_dialog: QDialog | None = None
        """The electronic signature dialog while it waits (tests fill it in)."""
        self.context_menu: QMenu | None = None
        """The instrument menu shown last (right click on a card or a row)."""
        self.detail_window = InstrumentDetail(runtime, "", self)
        """The instrument detail window (hidden until opened; reused for the next instrument).
        Built at once so its keys are listed in Help > Keyboard shortcuts."""
        self.detail_window.setWindowFlag(Qt.WindowType.Window, True)
        self.detail_window.order_requested.connect(self.order_requested)
        self.detail_window.step_sent.connect(self._on_step_sent)
        self._views: dict[str, InstrumentView] = {}
        self.locks: dict[str, Lock] = {}
        """Instrument -> its open "hands in the cell" lock (read from the inbox on changes)."""
        self._locks_reading = False
        self._lock_reads = TaskKeeper()
        """Reads of the locks (apart from :attr:`tasks`, whose business disables the actions)."""
        self.locks = {i: lock for lock in runtime.store.read_sync(read_locks) for i in lock.instruments}
        self._order: list[str] = []
        self._progress: dict[str, float] = {}
        self._notes: dict[str, str] = {}
        self._selected: str | None = None
        self._dirty = True
        self._last_refresh = 0.0
        self._descriptions = self._describe_instruments()
        self.moment: Moment | None = None
        """The past moment shown read only (:meth:`show_moment`); None: live."""
        self.past_banner = PastBanner(self)

        # actions on the selected instrument; the view switch sits with the summary
        self.toolbar = QToolBar(self)
        self.toolbar.setObjectName("robotsToolbar")
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toolbar.setIconSize(QSize(16, 16))
        self.actions_by_key: dict[str, QAction] = {}
        for spec in ACTIONS:
            action = QAction(icon(spec.icon), spec.label, self)
            action.setObjectName(f"instrument_{spec.key}")
            action.setToolTip(spec.tooltip)
            action.setEnabled(False)
            action.setShortcut(QKeySequence(spec.shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.setToolTip(f"{spec.tooltip} — {spec.shortcut}")
            action.triggered.connect(lambda _checked=False, key=spec.key: self.request_action(key))
            self.actions_by_key[spec.key] = action
            self.toolbar.addAction(action)
            self.addAction(action)
        self.details_action = QAction(icon("info"), "Details", self)
        self.details_action.setObjectName("instrument_details")
        self.details_action.setShortcut(QKeySequence("Ctrl+I"))
        self.details_action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.details_action.setToolTip("Log, running and next orders, utilisation today; send a queued step "
                                       "here (double-click a card or row) — Ctrl+I")
        self.details_action.setEnabled(False)
        self.details_action.triggered.connect(lambda _checked=False: self.open_details())
        self.addAction(self.details_action)
        self.view_bar = QToolBar(self)
        self.view_bar.setIconSize(QSize(16, 16))
        self.view_bar.addAction(self.details_action)  # beside the summary: always in sight
        details_button = self.view_bar.widgetForAction(self.details_action)
        if isinstance(details_button, QToolButton):
            details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        details_button.setObjectName("instrumentDetailsButton")
        self.view_bar.addSeparator()
        group = QActionGroup(self)
        self.cards_action = QAction(icon("cards"), "Cards", self)
        self.cards_action.setShortcut(QKeySequence("Ctrl+Alt+1"))
        self.cards_action.setToolTip("Show the instruments as cards — Ctrl+Alt+1")
        self.table_action = QAction(icon("table"), "Table", self)
        self.table_action.setShortcut(QKeySequence("Ctrl+Alt+2"))
        self.table_action.setToolTip("Show the instruments as a table — Ctrl+Alt+2")
        for action in (self.cards_action, self.table_action):
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(action)
            action.setCheckable(True)
            group.addAction(action)
            self.view_bar.addAction(action)
        self.cards_action.setChecked(True)
        self.cards_action.toggled.connect(self._on_view_toggled)

        # cards
        self.grid = CardGrid(215, self)
        self.cards: dict[str, InstrumentCard] = {}
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.grid)
        self.grid.setContentsMargins(2, 2, 2, 2)

        # table
        self.model = InstrumentsTableModel(self)
        self.table = QTableView(self)
        self.table.setObjectName("instrumentsTable")
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        self.table.setItemDelegate(BarDelegate(self.table))
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._on_table_menu)
        self.table.doubleClicked.connect(self._on_table_double_click)
        vh = self.table.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(26)
        vh.hide()
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        for col, width in enumerate((190, 120, 110, 80, 130, 85, 60, 60, 220, 260)):
            self.table.setColumnWidth(col, width)
        self.table.selectionModel().currentRowChanged.connect(self._on_table_current)

        self.stack = QStackedWidget(self)
        self.stack.addWidget(scroll)
        self.stack.addWidget(self.table)
        self.summary = QLabel(self)
        self.summary.setObjectName("robotsSummary")
        self.feedback = QLabel(self)
        self.feedback.setObjectName("robotsFeedback")
        self.feedback.setWordWrap(True)
        self.empty = QLabel("No workcell is connected: start the console with a workcell file "
                            "(--workcell) to see its instruments here.", self)
        self.empty.setWordWrap(True)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 6)
        layout.setSpacing(6)
        top = QHBoxLayout()
        top.addWidget(self.summary, 1)
        top.addWidget(self.view_bar)
        layout.addWidget(self.past_banner)
        layout.addLayout(top)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.stack, 1)
        layout.addWidget(self.empty, 1)
        layout.addWidget(self.feedback)

        self.listen(bridge.events, self._on_events)
        self.refresh()

    # ------------------------------------------------------------------ data

    def _describe_instruments(self) -> dict[str, str]:
        cell = self.runtime.workcell
        out: dict[str, str] = {}
        for spec in cell.instruments if cell is not None else ():
            maker = " ".join(p for p in (spec.vendor, spec.model) if p)
            out[spec.id] = " · ".join(p for p in (spec.id, maker or spec.kind) if p)
        return out

    @Slot(object)
    def _on_events(self, events: list[Any]) -> None:
        shown = self.detail_window.instrument_id if self.detail_window.isVisible() else None
        for event in events:
            if shown is not None and (getattr(event, "instrument_id", None) == shown
                                      or isinstance(event, OperatorAction)):
                self.detail_window.note_change()
            if isinstance(event, StepProgress):
                if event.progress is not None:
                    self._progress[event.order_id] = event.progress
                self._dirty = True
            elif isinstance(event, OperatorAction):
                if event.target in self._views:
                    self._notes[event.target] = (f"{event.who}: {event.reason}" if event.reason
                                                 else f"by {event.who}")
                self._dirty = True
            elif isinstance(event, InstrumentStatusChanged):
                self._dirty = True
            elif isinstance(event, InboxChanged) and event.kind in ("lock", None):
                self.read_locks()

    def read_locks(self) -> None:
        """Read the open locks again (off the loop) and show them."""
        if self._locks_reading:
            return
        self._locks_reading = True

        def done(task: asyncio.Task[Any]) -> None:
            self._locks_reading = False
            if task.cancelled() or task.exception() is not None:
                return
            self.locks = {i: lock for lock in task.result() for i in lock.instruments}
            self._dirty = True

        self._lock_reads.spawn(self.runtime.store.read(read_locks), done)

    @Slot()
    def tick(self) -> None:
        if self._dirty or time.monotonic() - self._last_refresh >= 1.0:
            self.refresh()

    def refresh(self) -> None:
        """Take one snapshot of the instruments and show it (cards, table, summary, actions)."""
        self._dirty = False
        self._last_refresh = time.monotonic()
        views = self.runtime.instruments()
        if self.moment is not None:
            views = past_views(views, self.moment)
        running = {oid for v in views for oid in v.running}
        for oid in [o for o in self._progress if o not in running]:
            del self._progress[oid]
        self._views = {v.id: v for v in views}
        progress = [order_progress(v, self._progress) for v in views]
        self.empty.setVisible(not views)
        self.stack.setVisible(bool(views))
        if [v.id for v in views] != self._order:
            self._order = [v.id for v in views]
            self._rebuild_cards(views)
        for v, p in zip(views, progress, strict=True):
            held = instrument_state(v) in (DISABLED, OUT_OF_SERVICE, DRAINING)
            self.cards[v.id].update_view(v, p, self._notes.get(v.id, "") if held else "", self.locks.get(v.id))
        if self.moment is not None:  # the past: since when each was in its state, not live health
            for v in views:
                then = self.moment.instruments.get(v.id)
                since = then.since if then is not None else None
                self.cards[v.id].health.set_full_text(
                    f"{v.status.name} since {datetime.fromtimestamp(since):%Y-%m-%d %H:%M:%S}" if since
                    else "nothing logged before this moment")
                self.cards[v.id].counts.setText("")
        self.model.set_views(views, progress, self.locks)
        self._update_summary(views)
        self._update_actions()

    def _rebuild_cards(self, views: Sequence[InstrumentView]) -> None:
        for card in self.cards.values():
            card.deleteLater()
        self.cards = {}
        for v in views:
            card = InstrumentCard(v, self._descriptions.get(v.id, f"{v.id} · {v.kind}"), self.grid)
            card.clicked.connect(self.select)
            card.menu_requested.connect(self._show_menu)
            card.details_requested.connect(self.open_details)
            self.cards[v.id] = card
        self.grid.set_cards(list(self.cards.values()))
        if self._selected not in self.cards:
            self._selected = None

    def _update_summary(self, views: Sequence[InstrumentView]) -> None:
        counts: dict[str, int] = {}
        for v in views:
            state = instrument_state(v)
            counts[state] = counts.get(state, 0) + 1
        parts = [f"{n} {STATE_LABELS[s].lower() if s not in ('Ready', 'Busy') else s.lower()}"
                 for s, n in counts.items()]
        text = f"{len(views)} instruments: " + ", ".join(parts) if views else ""
        if self.summary.text() != text:
            self.summary.setText(text)

    # ------------------------------------------------------------------ selection

    @property
    def selected_id(self) -> str | None:
        return self._selected

    @Slot(str)
    def select(self, instrument_id: str) -> None:
        """Select an instrument (card and table row follow)."""
        if instrument_id not in self._views:
            return
        changed = instrument_id != self._selected
        self._selected = instrument_id
        for iid, card in self.cards.items():
            card.set_selected(iid == instrument_id)
        row = self.model.row_of(instrument_id)
        if row is not None and self.table.currentIndex().row() != row:
            self.table.selectRow(row)
        self._update_actions()
        if changed:
            self.instrument_selected.emit(instrument_id)

    @Slot(QModelIndex, QModelIndex)
    def _on_table_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.select(self.model.view_at(current.row()).id)

    @Slot(bool)
    def _on_view_toggled(self, cards: bool) -> None:
        self.stack.setCurrentIndex(0 if cards else 1)

    def show_table(self, table: bool = True) -> None:
        (self.table_action if table else self.cards_action).setChecked(True)

    def show_moment(self, moment: Moment | None) -> None:
        """Show the instruments as they were at ``moment``, read only (None: live again)."""
        self.moment = moment
        self.past_banner.show_moment(moment)
        self.refresh()

    def set_user(self, user: User | None) -> None:
        """Who is signed in (None: single-user mode): the actions their role does not allow are
        disabled, the tooltip saying why, and the others are recorded as them."""
        self.user = user
        self._update_actions()

    def _update_actions(self) -> None:
        view = self._views.get(self._selected or "")
        busy = self.tasks.busy or self.moment is not None  # the past is read only
        locked = view is not None and view.id in self.locks
        for key, action in self.actions_by_key.items():
            refused = refusal(self.user, key.replace("_", " ")) if self.user is not None else None
            action.setEnabled(view is not None and not busy and ACTION_BY_KEY[key].allowed(view) and refused is None
                              and not (locked and key == "enable"))  # a lock is released in the Inbox
            spec = ACTION_BY_KEY[key]
            action.setToolTip(refused or f"{spec.tooltip} — {spec.shortcut}")
        self.details_action.setEnabled(view is not None)

    @Slot(QPoint)
    def _on_table_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if index.isValid():
            iid = self.model.view_at(index.row()).id
            self.select(iid)
            self._show_menu(iid, self.table.viewport().mapToGlobal(pos))

    @Slot(str, QPoint)
    def _show_menu(self, instrument_id: str, global_pos: QPoint) -> None:
        self.select(instrument_id)
        menu = QMenu(self)
        menu.setObjectName("instrumentMenu")
        menu.addAction(self.details_action)
        menu.addSeparator()
        for spec in ACTIONS:
            menu.addAction(self.actions_by_key[spec.key])
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        menu.popup(global_pos)
        self.context_menu = menu

    @Slot(QModelIndex)
    def _on_table_double_click(self, index: QModelIndex) -> None:
        if index.isValid():
            self.open_details(self.model.view_at(index.row()).id)

    @Slot(str)
    def open_details(self, instrument_id: str | None = None) -> InstrumentDetail | None:
        """Open the detail window of ``instrument_id`` (default: the selected instrument)."""
        iid = instrument_id or self._selected
        if iid is None or iid not in self._views:
            return None
        self.select(iid)
        self.detail_window.set_instrument(iid)
        self.detail_window.show()
        self.detail_window.raise_()
        self.detail_window.activateWindow()
        return self.detail_window

    @Slot(str, str, bool, str)
    def _on_step_sent(self, _order_id: str, _instrument_id: str, ok: bool, message: str) -> None:
        self._say(message, "good" if ok else "bad")
        self._dirty = True

    # ------------------------------------------------------------------ actions

    def request_action(self, key: str) -> None:
        """Start ``key`` on the selected instrument; actions that need a reason ask for one first
        (with a non-blocking dialog: ``open()``, never ``exec()``)."""
        iid = self._selected
        spec = ACTION_BY_KEY[key]
        if iid is None or self.moment is not None:
            return
        if key == "enable" and iid in self.locks:
            lock = self.locks[iid]
            self._say(f"{iid}: {lock.describe()} — release the lock in the Inbox to enable it", "bad")
            return
        if not spec.needs_reason:
            self._start(iid, spec, None)
            return
        name = self._views[iid].name or iid
        verb = {"disable": "disable", "out_of_service": "take out of service"}.get(key, key)
        dialog = ReasonDialog(f"{verb.capitalize()}: {name}",
                              f"Why {verb} <b>{_escape(name)}</b>? "
                              "The reason is kept in the audit log with your name.", self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        if key == "out_of_service":  # what waits longer or is blocked, before the operator confirms
            self._preview_out_of_service(dialog, iid)
        dialog.reason_given.connect(lambda reason: self._start(iid, spec, reason))
        dialog.finished.connect(self._forget_dialog)
        self.reason_dialog = dialog
        dialog.open()

    def _preview_out_of_service(self, dialog: ReasonDialog, iid: str) -> None:
        from core.impact import eta_moves, preview
        from panels.dialogs import ImpactView

        view = ImpactView(dialog)
        view.setObjectName("impactView")
        layout = dialog.layout()
        assert isinstance(layout, QVBoxLayout)
        layout.insertWidget(1, view)
        dialog.finished.connect(lambda _code: view.cancel())
        capabilities = {v.id: v.capabilities for v in self._views.values()}
        forecast = self.forecast
        view.compute(lambda: preview(self.runtime.store, "out_of_service", instrument=iid,
                                     capabilities=capabilities),
                     (lambda: eta_moves(forecast, "out_of_service", instrument=iid)) if forecast is not None else None)
        dialog.setMinimumWidth(480)

    @Slot()
    def _forget_dialog(self) -> None:
        self.reason_dialog = None

    def _start(self, iid: str, spec: InstrumentAction, reason: str | None) -> None:
        name = self._views[iid].name if iid in self._views else iid
        self._say(f"{spec.label.rstrip('…')}: {name}…", "muted")

        def done(task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                message, ok = str(exc), False
            else:
                result = task.result()
                ok, message = result.ok, result.message
            if ok:
                self._say(f"{name} {spec.done}" + (f" — {reason}" if reason else ""), "good")
            else:
                self._say(f"{name}: {message}", "bad")
            self._dirty = True
            self.refresh()
            self.action_finished.emit(iid, spec.key, ok, message)

        self.tasks.spawn(self._act(iid, spec, reason), done)
        self._update_actions()

    async def _act(self, iid: str, spec: InstrumentAction, reason: str | None) -> Any:
        """The instrument action, signed first when ``[SIGNATURES] require`` lists it."""
        who = self.user.name if self.user is not None else None
        signature = None
        if needs_signature(self.runtime, spec.key.replace("_", " ")):
            signature = await request_signature(self._ask_signature, self.runtime, spec.key.replace("_", " "), iid,
                                                user=who or "", parent=self)
            if signature is None:
                return ActionResult(iid, False, "not signed: nothing was done")
        return await self.runtime.instrument_action(iid, spec.key, who=who, reason=reason, signature=signature)

    async def _ask_signature(self, dialog: QDialog) -> bool:
        self.signature_dialog = dialog
        try:
            return await ask(dialog)
        finally:
            self.signature_dialog = None
            dialog.deleteLater()

    def _say(self, text: str, tone: str) -> None:
        colour = current_theme().colors[tone]
        self.feedback.setStyleSheet(f"#robotsFeedback {{ color: {colour}; }}")
        self.feedback.setText(text)

    # ------------------------------------------------------------------ life cycle

    def on_shown(self) -> None:
        self.refresh()

    def apply_theme(self, _theme: Theme) -> None:
        for key, spec in ACTION_BY_KEY.items():
            self.actions_by_key[key].setIcon(icon(spec.icon))
        self.cards_action.setIcon(icon("cards"))
        self.table_action.setIcon(icon("table"))
        self.details_action.setIcon(icon("info"))
        self._dirty = True

    def on_shutdown(self) -> None:
        """Cancel any action in flight and close the reason dialog."""
        self.tasks.cancel_all()
        self._lock_reads.cancel_all()
        if self.reason_dialog is not None:
            self.reason_dialog.reject()
        self.detail_window.shutdown()
