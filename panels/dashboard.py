"""Dashboard panel: the shift at a glance.

- **KPI cards**: seed 003's ``DashboardMetrics`` (instruments online, jobs today, completed,
  failed, pending, running, average execution time, success rate) from
  ``runtime.metrics.dashboard()`` — O(1), never a scan of the orders.
- **Status summary**: jobs per order status now (``metrics.status_counts()``) as one bar with
  a legend (mark, name, count).
- **Instruments**: every instrument's state (mark + colour + name), from ``runtime.instruments()``.
- **Alerts**: instrument offline or in error (while it lasts), order timed out (until dismissed),
  error rate high (failed / decided jobs over the last 15 minutes of the core's buckets).
- **Recent activity**: operator actions, runs started and finished, instruments lost and back.

Everything is read on one fixed-rate timer (every 500 ms, only while the panel is visible);
the bridge's per-frame event lists are only noted in between. A thin view: the figures are the
core's, the alert rules are the only logic here, in the Qt-free :class:`AlertBook`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QSize,
    Qt,
    Signal,
    Slot,
)
from PySide6.QtGui import QIcon, QPalette
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListView,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.dispatcher import InstrumentView
from core.events import InstrumentStatusChanged, OperatorAction, RunChanged, StepChanged
from core.inbox import Lock, read_locks
from core.metrics import DashboardMetrics, initial_counts
from core.orders import ModuleStatus, OrderStatus
from core.store import ORDER_ROW_COLUMNS
from core.timetravel import Moment
from panels.actions import TaskRunner
from panels.base import Panel
from panels.style import (
    STATE_LABELS,
    icon,
    instrument_state,
    module_state,
    short_seconds,
    state_icon,
    state_pixmap,
    status_color,
    status_icon,
    status_pixmap,
)
from panels.theme import Theme, keep_palette
from panels.timetravel import PastBanner, past_views
from panels.widgets import BAD, GOOD, NEUTRAL, WARN, BreakdownBar, ElidedLabel, KpiCard, Section

ModelIndex = QModelIndex | QPersistentModelIndex
TICK_MS = 500
"""Fixed refresh rate of the dashboard while it is visible."""

CRITICAL, WARNING = "critical", "warning"

STATUS_ORDER: tuple[OrderStatus, ...] = (
    OrderStatus.Running, OrderStatus.Scheduled, OrderStatus.Validated, OrderStatus.Created,
    OrderStatus.Paused, OrderStatus.Error, OrderStatus.Invalid, OrderStatus.Complete,
    OrderStatus.Canceled, OrderStatus.Consolidated, OrderStatus.Unknown)
"""Order of the status summary: what moves, what waits, what needs a person, what is done."""

RUN_STATUS_AS_ORDER = {"running": OrderStatus.Running, "completed": OrderStatus.Complete,
                       "failed": OrderStatus.Error, "cancelled": OrderStatus.Canceled,
                       "paused": OrderStatus.Paused}


# ---------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    """One alert as the dashboard lists it."""

    key: str
    """Identity: ``offline:<instrument>``, ``error:<instrument>``, ``timeout:<order>``, ``error-rate``."""
    severity: str
    """:data:`CRITICAL` or :data:`WARNING`."""
    title: str
    detail: str
    since: float
    """Epoch seconds when it was first seen."""
    dismissable: bool = False
    order_id: str | None = None
    """The order a click on the alert selects (in Jobs and Detail), if any."""


Attention = tuple[str, str, str, "str | None", "str | None", float]
"""What waits for a person (``store.needing_attention()``): (kind, order id, run id, step id,
error, since)."""


class AlertBook:
    """The alert rules (no Qt): conditions that hold now, plus timed-out orders until dismissed.

    Args:
        error_rate: Share of failed jobs (0..1) among decided ones that raises "error rate high".
        min_decided: Fewest decided jobs in the window before the error rate means anything.
        window_buckets: How many of the core's metric buckets (minutes) the error rate covers.
        keep: Most timed-out orders remembered.
    """

    def __init__(self, *, error_rate: float = 0.2, min_decided: int = 5, window_buckets: int = 15,
                 keep: int = 50) -> None:
        self.error_rate = error_rate
        self.min_decided = min_decided
        self.window_buckets = window_buckets
        self._since: dict[str, float] = {}
        self._timeouts: dict[str, Alert] = {}
        self._keep = keep
        self._dismissed: set[str] = set()

    def note(self, events: Iterable[Any], now: float) -> None:
        """Remember timed-out orders among ``events`` (steps and runs)."""
        for e in events:
            if isinstance(e, StepChanged) and e.status in ("failed", "retrying") and e.detail \
                    and ("Timeout" in e.detail or "timed out" in e.detail):
                self._timeout(e.order_id, f"step {e.step_id} of run {e.run_id}: {e.detail}", now,
                              e.order_id)
            elif isinstance(e, RunChanged) and e.detail and e.detail.startswith("run timed out"):
                self._timeout(e.run_id, f"run of {e.template_name}: {e.detail}", now, e.run_id)

    def _timeout(self, order_id: str, detail: str, now: float, target: str) -> None:
        key = f"timeout:{order_id}"
        if key in self._dismissed:
            return
        self._timeouts[key] = Alert(key, WARNING, f"Order {order_id} timed out", detail,
                                    self._timeouts[key].since if key in self._timeouts else now,
                                    dismissable=True, order_id=target)
        while len(self._timeouts) > self._keep:
            del self._timeouts[next(iter(self._timeouts))]

    def dismiss(self, key: str) -> None:
        """Forget a timed-out order's alert (conditions cannot be dismissed: they clear themselves)."""
        if self._timeouts.pop(key, None) is not None:
            self._dismissed.add(key)

    def dismiss_all(self) -> None:
        for key in list(self._timeouts):
            self.dismiss(key)

    def rate_is_high(self, failed: float, decided: float) -> bool:
        """Whether ``failed`` of ``decided`` jobs is an error rate worth an alert (the same rule
        for the last minutes and for today, so the success card and the alerts agree)."""
        return decided >= self.min_decided and failed / decided >= self.error_rate

    def evaluate(self, now: float, instruments: Sequence[InstrumentView],
                 failures: np.ndarray | None = None, completions: np.ndarray | None = None,
                 bucket_minutes: float = 1.0, *, attention: Sequence[Attention] = (),
                 today: tuple[int, int] | None = None, locks: Sequence[Lock] = (),
                 windows: Sequence[Any] = ()) -> list[Alert]:
        """Every alert that holds now, worst first, newest first within a severity.

        ``failures``/``completions`` are the core's per-minute job series (``metrics.failures``,
        ``metrics.throughput``); their last ``window_buckets`` values give the error rate, and
        so does ``today`` (failed, decided jobs today). ``attention``: runs and steps waiting
        for a person, from the store (paused runs, failed or outcome-unknown steps). ``locks``:
        instruments an operator claimed for manual work ("hands in the cell"). ``windows``: time
        windows and deadlines the forecast says will break (core.forecast.WindowRisk).
        """
        active: list[Alert] = []
        for w in windows:  # core.forecast.WindowRisk: forecast to break, not broken yet
            title = (f"Deadline at risk: run {w.run_id}" if w.step is None
                     else f"Window at risk: step {w.step} of run {w.run_id}")
            active.append(self._condition(f"window:{w.key}", WARNING, title, w.text, now, w.run_id))
        for v in instruments:
            current = v.running[0] if v.running else None
            if not v.enabled:
                continue  # the operator took it out on purpose
            if not v.in_service:
                active.append(self._condition(f"service:{v.id}", WARNING, f"{v.name or v.id} is out of service",
                                              v.detail, now, current))
            elif v.status is ModuleStatus.Offline:
                active.append(self._condition(f"offline:{v.id}", CRITICAL, f"{v.name or v.id} is offline",
                                              v.detail, now, current))
            elif v.status is ModuleStatus.Error:
                active.append(self._condition(f"error:{v.id}", CRITICAL, f"{v.name or v.id} is in error",
                                              v.detail, now, current))
        for lock in locks:  # hands in the cell: its instruments are disabled on purpose, yet it waits for a person
            active.append(self._condition(
                f"lock:{lock.item_id}", WARNING, f"{lock.describe()} on {', '.join(lock.instruments)}",
                "no new orders go to them until the lock is released in the Inbox", lock.since))
        for kind, order_id, run_id, step_id, error, since in attention:
            if kind == "paused":
                title = f"Run {run_id} is paused, waiting for the operator"
            elif kind == "unknown":
                title = f"Step {step_id} of run {run_id}: outcome unknown"
            else:
                title = f"Step {step_id} of run {run_id} failed"
            detail = error or ("resume or cancel it" if kind == "paused" else "retry, skip or recover it")
            active.append(self._condition(f"{kind}:{order_id}", CRITICAL if kind == "unknown" else WARNING,
                                          title, detail, since or now, order_id))
        if failures is not None and completions is not None and len(failures):
            n = self.window_buckets
            failed = float(np.nansum(failures[-n:])) * bucket_minutes
            done = float(np.nansum(completions[-n:])) * bucket_minutes
            decided = failed + done
            if self.rate_is_high(failed, decided):
                minutes = n * bucket_minutes
                active.append(self._condition(
                    "error-rate", WARNING, f"Error rate high: {100 * failed / decided:.0f} %",
                    f"{failed:.0f} of {decided:.0f} jobs failed in the last {minutes:.0f} min "
                    f"(alert at {self.error_rate * 100:.0f} %)", now))
        if today is not None and not any(a.key == "error-rate" for a in active) and self.rate_is_high(*today):
            failed_today, decided_today = today
            active.append(self._condition(
                "error-rate", WARNING, f"Error rate high: {100 * failed_today / decided_today:.0f} %",
                f"{failed_today} of {decided_today} jobs failed today "
                f"(alert at {self.error_rate * 100:.0f} %)", now))
        keys = {a.key for a in active}
        for key in [k for k in self._since if k not in keys]:
            del self._since[key]  # the condition cleared: a new one starts a new alert
        active.extend(self._timeouts.values())
        active.sort(key=lambda a: (a.severity != CRITICAL, -a.since))
        return active

    def _condition(self, key: str, severity: str, title: str, detail: str, now: float,
                   order_id: str | None = None) -> Alert:
        since = self._since.setdefault(key, now)
        return Alert(key, severity, title, detail, since, order_id=order_id)


# ---------------------------------------------------------------------------- lists


@dataclass(frozen=True)
class Line:
    """One row of a short list: a time, an icon, a text and an optional tooltip."""

    at: float
    icon: QIcon
    text: str
    tooltip: str = ""
    key: str = ""


class LinesModel(QAbstractListModel):
    """A short list (alerts, recent activity); ``set_lines`` replaces it, ``prepend`` adds on top."""

    def __init__(self, limit: int = 200, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.limit = limit
        self._lines: list[Line] = []

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._lines)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        line = self._lines[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return f"{datetime.fromtimestamp(line.at):%H:%M:%S}  {line.text}"
        if role == Qt.ItemDataRole.DecorationRole:
            return line.icon
        if role == Qt.ItemDataRole.ToolTipRole:
            return line.tooltip or line.text
        if role == Qt.ItemDataRole.UserRole:
            return line.key
        return None

    def set_lines(self, lines: Sequence[Line]) -> None:
        lines = list(lines)[: self.limit]
        if [(x.key, x.text, x.tooltip) for x in lines] == [(x.key, x.text, x.tooltip) for x in self._lines]:
            return
        self.beginResetModel()
        self._lines = lines
        self.endResetModel()

    def prepend(self, lines: Sequence[Line]) -> None:
        """Add ``lines`` (oldest first) on top; the oldest rows fall off past ``limit``."""
        if not lines:
            return
        new = list(reversed(lines))[: self.limit]
        self.beginInsertRows(QModelIndex(), 0, len(new) - 1)
        self._lines[:0] = new
        self.endInsertRows()
        if len(self._lines) > self.limit:
            self.beginRemoveRows(QModelIndex(), self.limit, len(self._lines) - 1)
            del self._lines[self.limit:]
            self.endRemoveRows()

    def lines(self) -> list[Line]:
        return list(self._lines)


def _short_list(parent: QWidget, model: LinesModel) -> QListView:
    view = QListView(parent)
    view.setModel(model)
    view.setUniformItemSizes(True)
    view.setIconSize(QSize(14, 14))
    view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setFrameShape(QListView.Shape.NoFrame)
    view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    view.setTextElideMode(Qt.TextElideMode.ElideRight)
    _card_background(view)
    return view


def _card_background(view: QListView) -> None:
    """The list blends into its section card (palette, not a style sheet: scroll bars stay native)."""
    for widget in (view, view.viewport()):
        keep_palette(widget, {QPalette.ColorRole.Base: "card"})  # and again at each theme change


def activity_lines(events: Iterable[Any], known: dict[str, ModuleStatus], limit: int | None = None) -> list[Line]:
    """What of a frame's events belongs in "recent activity" (oldest first); only the newest
    ``limit`` lines are made (a bulk cancel sends thousands of run changes in one frame, and the
    list keeps a few hundred).

    ``known`` holds each instrument's last status and is updated, so "back online" can be told.
    """
    return make_activity_lines(activity_of(events, known), limit)


def activity_of(events: Iterable[Any], known: dict[str, ModuleStatus]) -> list[Line | Any]:
    """The events that make a line of "recent activity" (instruments' ones already as lines), in
    order; ``known`` as for :func:`activity_lines`."""
    kept: list[Line | Any] = []
    for e in events:
        if isinstance(e, InstrumentStatusChanged):
            before = known.get(e.instrument_id)
            known[e.instrument_id] = e.status
            state = module_state(e.status, enabled=e.enabled, in_service=e.in_service)
            if e.status in (ModuleStatus.Offline, ModuleStatus.Error) and before != e.status:
                word = "offline" if e.status is ModuleStatus.Offline else "in error"
                kept.append(Line(e.at.timestamp(), state_icon(state), f"{e.instrument_id} {word}"
                                 + (f" — {e.detail}" if e.detail else "")))
            elif before in (ModuleStatus.Offline, ModuleStatus.Error) \
                    and e.status in (ModuleStatus.Ready, ModuleStatus.Busy):
                kept.append(Line(e.at.timestamp(), state_icon(state), f"{e.instrument_id} back ({e.status.name})"))
        elif isinstance(e, OperatorAction) or (
                isinstance(e, RunChanged) and e.status in RUN_STATUS_AS_ORDER
                and (e.status != "running" or e.detail == "started")):
            kept.append(e)
    return kept


def make_activity_lines(kept: Sequence[Line | Any], limit: int | None = None) -> list[Line]:
    """The lines of what :func:`activity_of` kept: the newest ``limit`` of them."""
    if limit is not None:
        kept = kept[-limit:] if limit > 0 else []
    icons: dict[OrderStatus | None, QIcon] = {}  # a handful of icons for hundreds of lines
    return [k if isinstance(k, Line) else _activity_line(k, icons) for k in kept]


def _activity_line(e: OperatorAction | RunChanged, icons: dict[OrderStatus | None, QIcon]) -> Line:
    """``icons``: the icons made so far (None: the operator's), shared by the lines of a frame."""
    at = e.at.timestamp()
    if isinstance(e, OperatorAction):
        target = f" {e.target}" if e.target else ""
        reason = f" — {e.reason}" if e.reason else ""
        mark = icons.get(None) or icons.setdefault(None, icon("user"))
        return Line(at, mark, f"{e.who}: {e.action}{target}{reason}")
    verb = "started" if e.status == "running" else e.status
    detail = f" — {e.detail}" if e.detail and e.status in ("failed", "paused") else ""
    status = RUN_STATUS_AS_ORDER[e.status]
    mark = icons.get(status) or icons.setdefault(status, status_icon(status))
    return Line(at, mark, f"{e.run_id} {e.template_name} {verb}{detail}", e.detail or "")


def past_activity(m: Moment) -> list[Line]:
    """What happened in the hour before a past moment: transitions and operator actions, newest first."""
    template = ORDER_ROW_COLUMNS.index("template_name")
    lines: list[Line] = []
    for r in m.recent:
        row = m.rows.get(r.order_id)
        name = f" {row[template]}" if row is not None and row[template] else ""
        to = OrderStatus(r.to_status)
        move = f"{OrderStatus(r.from_status).name} → {to.name}" if r.from_status is not None else to.name
        lines.append(Line(r.at, status_icon(to), f"{r.order_id}{name}: {move}" + (f" — {r.why}" if r.why else ""),
                          r.why or ""))
    for a in m.actions:
        target = f" {a.target}" if a.target else ""
        lines.append(Line(a.at, icon("user"), f"{a.who}: {a.action}{target}" + (f" — {a.reason}" if a.reason else "")))
    lines.sort(key=lambda line: -line.at)
    return lines[:200]


# ---------------------------------------------------------------------------- panel


class DashboardPanel(Panel):
    """KPI cards, status summary, instrument summary, alerts and recent activity.

    Receives the runtime facade and the per-frame event bridge (constructor injection).
    """

    REFRESH_MS = TICK_MS
    TRUTH_SECONDS = (1.0, 10.0)
    """The counts and what waits for a person are read again from the store at most every
    first figure while events come in (or the counts drifted), and every second figure anyway
    (orders other processes wrote: the command line, Data Services). A slow read (a full
    count over 100,000 orders takes about 0.3 s) spaces the reads out: at least 10 and 30
    times its duration, so they never take more than a tenth of a reader thread."""
    order_requested = Signal(str)
    """The operator clicked an alert about this order: select it in Jobs and Detail."""
    expanded_changed = Signal(bool)
    """The operator showed (True) or hid (False) the sections below the KPI cards."""

    def __init__(self, runtime: RuntimeApi, bridge: Any, parent: QWidget | None = None, *,
                 expanded: bool = False) -> None:
        super().__init__(runtime, bridge, parent)
        self.alerts = AlertBook()
        self._pending: list[Any] = []
        self._known: dict[str, ModuleStatus] = {}
        self._instrument_ids: list[str] = []
        self.ticks = 0
        """How many times the dashboard has refreshed (tests follow the fixed rate with it)."""
        self.current_alerts: list[Alert] = []
        """The alerts shown now, worst first."""
        self.window_risks: tuple[Any, ...] = ()
        """Windows the latest forecast says will break (core.forecast.WindowRisk)."""
        self.forecast: Any = None
        self.attention: list[Attention] = []
        self.locks: list[Lock] = []
        """Open "hands in the cell" locks (read with :attr:`attention`)."""
        """Runs and steps waiting for a person, as last read from the store."""
        self.truth_reads = 0
        """How many times counts and attention were read from the store."""
        self.truth_seconds = 0.0
        """How long the last of those reads took."""
        self._truth_at = -1e18
        self._counts_at = time.monotonic()
        """The runtime seeded the counts from the store when it started: the first full count
        waits (the window is loading the orders then); what waits for a person is read at once."""
        self._dirty = True
        self._counts_dirty = False
        self._reader = TaskRunner(self)
        self.moment: Moment | None = None
        """The past moment shown read only (:meth:`show_moment`); None: live."""
        self._live_activity: list[Line] | None = None
        self.past_banner = PastBanner(self)

        self.kpi: dict[str, KpiCard] = {}
        kpis = QHBoxLayout()
        kpis.setSpacing(8)
        for key, caption, icon_name in (
                ("instruments", "INSTRUMENTS", "robot"), ("jobs", "JOBS TODAY", "check-circle"),
                ("attention", "NEEDS A PERSON", "user"), ("failed", "FAILED", "x-circle"),
                ("pending", "PENDING", "inbox"), ("running", "RUNNING", "play"),
                ("average", "AVG EXECUTION", "clock"), ("success", "SUCCESS RATE", "percent")):
            card = KpiCard(caption, icon_name, self)
            card.setObjectName("kpiCard")
            self.kpi[key] = card
            kpis.addWidget(card)
        # compact by default: the KPI cards only; the sections below on demand
        self.expand_button = QToolButton(self)
        self.expand_button.setObjectName("dashboardExpand")
        self.expand_button.setCheckable(True)
        self.expand_button.setAutoRaise(True)
        self.expand_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.expand_button.toggled.connect(self.set_expanded)
        kpis.addWidget(self.expand_button, 0, Qt.AlignmentFlag.AlignTop)

        # status summary
        self.status_section = Section("JOBS BY STATUS", self)
        self.status_bar = BreakdownBar(self.status_section)
        self.status_legend = QGridLayout()
        self.status_legend.setHorizontalSpacing(12)
        self.status_legend.setVerticalSpacing(2)
        self._legend_labels: list[tuple[QLabel, QLabel]] = []
        self.status_section.body.addWidget(self.status_bar)
        self.status_section.body.addLayout(self.status_legend)
        self.status_section.body.addStretch(1)

        # instruments
        self.instruments_section = Section("INSTRUMENTS", self)
        self.instrument_grid = QGridLayout()
        self.instrument_grid.setHorizontalSpacing(12)
        self.instrument_grid.setVerticalSpacing(3)
        self._chips: dict[str, tuple[QLabel, ElidedLabel]] = {}
        self.instruments_section.body.addLayout(self.instrument_grid)
        self.instruments_section.body.addStretch(1)

        # alerts
        self.alerts_section = Section("ALERTS", self)
        self.alerts_model = LinesModel(100, self)
        self.alerts_view = _short_list(self.alerts_section, self.alerts_model)
        self.alerts_view.setObjectName("alertsList")
        self.alerts_view.setToolTip("Click an alert to select its order in Jobs and Detail")
        self.alerts_view.clicked.connect(self._on_alert_clicked)
        self.alerts_view.activated.connect(self._on_alert_clicked)
        self.alerts_count = QLabel(self.alerts_section)
        self.dismiss_button = QToolButton(self.alerts_section)
        self.dismiss_button.setText("Dismiss timeouts")
        self.dismiss_button.setToolTip("Clear the timed-out order alerts (conditions clear themselves)")
        self.dismiss_button.setAutoRaise(True)
        self.dismiss_button.clicked.connect(self._on_dismiss)
        self.alerts_section.header.addWidget(self.alerts_count)
        self.alerts_section.header.addWidget(self.dismiss_button)
        self.all_clear = QWidget(self.alerts_section)
        clear_row = QHBoxLayout(self.all_clear)
        clear_row.setContentsMargins(0, 2, 0, 0)
        clear_row.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.all_clear_mark = QLabel(self.all_clear)
        self.all_clear_text = QLabel("No alerts: instruments online, nothing waits for a person, "
                                     "no timeouts, error rate normal.", self.all_clear)
        self.all_clear_text.setWordWrap(True)
        clear_row.addWidget(self.all_clear_mark, 0, Qt.AlignmentFlag.AlignTop)
        clear_row.addWidget(self.all_clear_text, 1)
        self.alerts_section.body.addWidget(self.all_clear, 1)
        self.alerts_section.body.addWidget(self.alerts_view, 1)

        # recent activity
        self.activity_section = Section("RECENT ACTIVITY", self)
        self.activity_model = LinesModel(200, self)
        self.activity_view = _short_list(self.activity_section, self.activity_model)
        self.activity_view.setObjectName("activityList")
        self.activity_section.body.addWidget(self.activity_view, 1)

        self.details = QWidget(self)
        self.details.setObjectName("dashboardDetails")
        lower = QHBoxLayout(self.details)
        lower.setContentsMargins(0, 0, 0, 0)
        lower.setSpacing(8)
        for section, stretch in ((self.status_section, 4), (self.instruments_section, 5),
                                 (self.alerts_section, 4), (self.activity_section, 5)):
            section.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            lower.addWidget(section, stretch)
        layout = self._layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 8)
        layout.setSpacing(8)
        layout.addWidget(self.past_banner)
        layout.addLayout(kpis)
        layout.addWidget(self.details, 1)
        self._expanded: bool | None = None
        self.set_expanded(expanded)
        self.all_clear_mark.setPixmap(status_pixmap(OrderStatus.Complete, 14))

        self.listen(bridge.events, self._on_events)
        self.refresh()

    # ------------------------------------------------------------------ compact / expanded

    @property
    def expanded(self) -> bool:
        return bool(self._expanded)

    @Slot(bool)
    def set_expanded(self, expanded: bool) -> None:
        """Show the status, instruments, alerts and activity sections (True) or only the KPI
        cards (False: compact, the dock keeps the height of one row of cards)."""
        if expanded == self._expanded:
            return
        self._expanded = expanded
        self.details.setVisible(expanded)
        self.expand_button.blockSignals(True)
        self.expand_button.setChecked(expanded)
        self.expand_button.blockSignals(False)
        self._expand_text()
        if expanded:
            self.setMinimumHeight(220)
            self.setMaximumHeight(16_777_215)
        else:
            self.setMinimumHeight(0)
            self.setMaximumHeight(self.compact_height())
        self.expanded_changed.emit(expanded)

    def _expand_text(self) -> None:
        """The toggle's text; compact, it also counts the alerts the hidden section lists."""
        alerts = len(self.current_alerts)
        if self._expanded:
            self.expand_button.setText("Less ▴")
            self.expand_button.setToolTip("Hide the sections below the cards")
        else:
            self.expand_button.setText(f"⚠ {alerts} alert{'s' if alerts != 1 else ''} ▾" if alerts
                                       else "More ▾")
            self.expand_button.setToolTip("Show jobs by status, instruments, alerts and recent activity")

    def compact_height(self) -> int:
        """The height of the compact dashboard: one row of KPI cards and the margins."""
        margins = self._layout.contentsMargins()
        cards = max(card.sizeHint().height() for card in self.kpi.values())
        banner = 0 if self.past_banner.isHidden() else \
            self.past_banner.heightForWidth(max(self.width(), 600)) + self._layout.spacing()
        return cards + banner + margins.top() + margins.bottom()

    # ------------------------------------------------------------------ feeding

    @Slot(object)
    def _on_events(self, events: list[Any]) -> None:
        if events:
            self._dirty = self._counts_dirty = True
        # sorted out as they come (a frame at a time), not all at the next tick: under a bulk action
        # a second of events is thousands, 3-5 ms of one loop step
        self.alerts.note(events, time.time())
        self._pending.extend(activity_of(events, self._known))
        limit = self.activity_model.limit
        if len(self._pending) > 2 * limit:
            del self._pending[:-limit]

    def set_forecast(self, forecast: Any) -> None:
        """Alert on the windows and deadlines ``forecast`` (core.forecast.Forecast) says will break."""
        if self.forecast is not None:
            self.forecast.remove_listener(self._on_forecast)
        self.forecast = forecast
        if forecast is not None:
            forecast.add_listener(self._on_forecast)
            if forecast.result is not None:
                self._on_forecast(forecast.result)

    def _on_forecast(self, result: Any) -> None:
        risks = tuple(w for w in result.windows if not w.run_id.startswith("scheduled:"))
        if risks != self.window_risks:
            self.window_risks = risks
            self.refresh()

    @Slot()
    def refresh(self) -> None:
        """Read the KPIs, states and alerts now and take the events noted since the last time."""
        self.ticks += 1
        if self.moment is not None:
            self._show_past(self.moment)
            return
        now = time.time()
        kept, self._pending = self._pending, []
        self.activity_model.prepend(make_activity_lines(kept, self.activity_model.limit))
        metrics = self.runtime.metrics
        instruments = self.runtime.instruments()
        for v in instruments:
            self._known.setdefault(v.id, v.status)
        if metrics is not None:
            jobs = metrics.dashboard()
            steps = metrics.dashboard(steps=True)
            self._show_kpis(jobs, steps)
            self._show_status(metrics.status_counts())
            alerts = self.alerts.evaluate(
                now, instruments, metrics.failures, metrics.throughput, metrics.width / 60.0,
                attention=self.attention, locks=self.locks, windows=self.window_risks,
                today=(jobs.failed_jobs_today, jobs.completed_jobs_today + jobs.failed_jobs_today))
        else:
            self._show_kpis(None, None)
            alerts = self.alerts.evaluate(now, instruments, attention=self.attention, locks=self.locks,
                                          windows=self.window_risks)
        self._show_instruments(instruments)
        self._show_alerts(alerts)
        self._read_truth_when_due()

    def _read_truth_when_due(self) -> None:
        """Read the counts (``initial_counts``) and what waits for a person from the store, off
        the loop, when due (:attr:`TRUTH_SECONDS`); the figures shown follow on arrival."""
        if self._reader.busy:
            return
        metrics = self.runtime.metrics
        now = time.monotonic()
        often, anyway = self.TRUTH_SECONDS
        # what waits for a person: two indexed queries, cheap
        attention = now - self._truth_at >= anyway or (self._dirty and now - self._truth_at >= often)
        # the counts: one pass over every order, spaced out by its cost
        since = now - self._counts_at
        slow_often, slow_anyway = max(often, 10 * self.truth_seconds), max(anyway, 30 * self.truth_seconds)
        counts = metrics is not None and (since >= slow_anyway or (
            (self._counts_dirty or metrics.drifted) and since >= slow_often))
        if not (attention or counts):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop yet: the next tick reads
        self._truth_at = now
        self._dirty = False
        if counts:
            self._counts_at = now
            self._counts_dirty = False
        self._reader.run(self._read_truth(counts), "dashboard counts")

    async def _read_truth(self, with_counts: bool) -> None:
        store, metrics = self.runtime.store, self.runtime.metrics
        day = metrics.day_start if metrics is not None else 0.0

        def read(c: Any) -> tuple[Any, list[Attention], list[Lock], float]:
            began = time.monotonic()
            counts = initial_counts(c, day) if with_counts and metrics is not None else None
            return counts, store.needing_attention(), read_locks(c), time.monotonic() - began

        counts, attention, locks, seconds = await store.read(read)
        if counts is not None:
            self.truth_seconds = seconds
        if metrics is not None and counts is not None and metrics.day_start == day:
            metrics.seed(counts)
        self.attention = attention
        self.locks = locks
        self.truth_reads += 1
        if not self.is_shut_down:
            self.refresh()

    @Slot(QModelIndex)
    def _on_alert_clicked(self, index: QModelIndex) -> None:
        key = index.data(Qt.ItemDataRole.UserRole)
        alert = next((a for a in self.current_alerts if a.key == key), None)
        if alert is not None and alert.order_id:
            self.order_requested.emit(alert.order_id)

    # ------------------------------------------------------------------ the past

    def show_moment(self, moment: Moment | None) -> None:
        """Show the workcell as it was at ``moment``, read only (None: live again). Live events
        keep being noted meanwhile and show when back to live."""
        if moment is not None and self.moment is None:
            self._live_activity = self.activity_model.lines()
        self.moment = moment
        self.past_banner.show_moment(moment)
        if not self._expanded:  # the compact dock grows by the banner's height, and shrinks back
            self.setMinimumHeight(self.compact_height() if moment is not None else 0)
            self.setMaximumHeight(self.compact_height())
        self.dismiss_button.setEnabled(moment is None)
        if moment is None and self._live_activity is not None:
            self.activity_model.set_lines(self._live_activity)
            self._live_activity = None
        self.refresh()

    def _show_past(self, m: Moment) -> None:
        views = past_views(self.runtime.instruments(), m)
        k = self.kpi
        online = sum(v.status is not ModuleStatus.Offline for v in views)
        busy = sum(v.status is ModuleStatus.Busy for v in views)
        k["instruments"].set(f"{online} / {len(views)}", f"online then · {busy} busy",
                             NEUTRAL if not views else BAD if not online else WARN if online < len(views) else GOOD)
        k["jobs"].set(f"{m.count(OrderStatus.Complete):,}", "completed up to then (runs and steps)")
        k["jobs"].setToolTip("Orders (runs and steps) complete at that moment")
        k["attention"].set(f"{len(m.inbox):,}", "inbox items open then" if m.inbox else "nothing waited",
                           WARN if m.inbox else NEUTRAL)
        failed = m.count(OrderStatus.Error)
        k["failed"].set(f"{failed:,}", "in Error then", BAD if failed else NEUTRAL)
        pending = sum(m.count(s) for s in (OrderStatus.Created, OrderStatus.Validated, OrderStatus.Scheduled))
        k["pending"].set(f"{pending:,}", "orders waiting then")
        k["running"].set(f"{m.count(OrderStatus.Running):,}", f"{m.count(OrderStatus.Paused):,} paused then")
        k["average"].set("—", "not kept for the past")
        k["success"].set("—", "not kept for the past")
        self._show_status({s: m.count(s) for s in OrderStatus})
        self._show_instruments(views)
        alerts = [Alert(f"inbox:{item.item_id}", WARNING, item.title,
                        f"{item.kind} · waiting since {datetime.fromtimestamp(item.created):%H:%M:%S}",
                        item.created, order_id=item.order_id)
                  for item in m.inbox[:100]]
        self._show_alerts(alerts)
        self.activity_model.set_lines(past_activity(m))

    # ------------------------------------------------------------------ showing

    def _show_kpis(self, jobs: DashboardMetrics | None, steps: DashboardMetrics | None) -> None:
        k = self.kpi
        if jobs is None or steps is None:
            for card in k.values():
                card.set("—", "metrics are off")
            return
        offline = jobs.offline_robots
        k["instruments"].set(f"{jobs.online_robots} / {jobs.total_robots}",
                             f"online · {jobs.busy_robots} busy · {offline} offline",
                             NEUTRAL if not jobs.total_robots else
                             BAD if offline == jobs.total_robots else WARN if offline else GOOD)
        k["jobs"].set(f"{jobs.completed_jobs_today:,}",
                      f"completed · {jobs.total_jobs_today:,} created · {jobs.cancelled_jobs_today:,} cancelled")
        k["jobs"].setToolTip("Jobs (runs and stand-alone orders) completed today; "
                             f"{steps.completed_jobs_today:,} steps completed")
        paused = sum(1 for a in self.attention if a[0] == "paused")
        steps_waiting = len(self.attention) - paused
        k["attention"].set(f"{len(self.attention):,}",
                           f"{paused:,} paused · {steps_waiting:,} failed steps" if self.attention
                           else "nothing waits", WARN if self.attention else NEUTRAL)
        k["failed"].set(f"{jobs.failed_jobs_today:,}",
                        "today · in Error now" if jobs.failed_jobs_today else "today · none",
                        BAD if jobs.failed_jobs_today else NEUTRAL)
        k["pending"].set(f"{jobs.pending_jobs:,}", f"{steps.pending_jobs:,} steps waiting")
        k["running"].set(f"{jobs.running_jobs:,}", f"{steps.running_jobs:,} steps running")
        avg = jobs.average_execution_time
        k["average"].set(short_seconds(avg) if avg else "—",
                         f"per job · step {short_seconds(steps.average_execution_time)}"
                         if steps.average_execution_time else "per completed job today")
        decided = jobs.completed_jobs_today + jobs.failed_jobs_today
        if decided:
            rate = jobs.success_rate
            # red exactly when the error-rate alert says so (the same rule)
            if rate >= 95:
                tone, word = GOOD, "on target"
            elif self.alerts.rate_is_high(jobs.failed_jobs_today, decided):
                tone, word = BAD, f"error rate over {self.alerts.error_rate * 100:.0f} %"
            elif decided < self.alerts.min_decided:
                tone, word = NEUTRAL, f"only {decided} finished: too few to judge"
            else:
                tone, word = WARN, "below 95 %"
            k["success"].set(f"{rate:.1f} %", word, tone)
            k["success"].setToolTip(f"{jobs.completed_jobs_today:,} completed and "
                                    f"{jobs.failed_jobs_today:,} failed today; target 95 %")
        else:
            k["success"].set("—", "nothing decided today")

    def _show_status(self, counts: dict[OrderStatus, int]) -> None:
        present = [s for s in STATUS_ORDER if counts.get(s)]
        self.status_bar.set_parts([(s.name, counts[s], status_color(s)) for s in present])
        while len(self._legend_labels) < len(present):
            i = len(self._legend_labels)
            mark, text = QLabel(self.status_section), QLabel(self.status_section)
            self.status_legend.addWidget(mark, i // 2, (i % 2) * 2)
            self.status_legend.addWidget(text, i // 2, (i % 2) * 2 + 1)
            self._legend_labels.append((mark, text))
        for i, (mark, text) in enumerate(self._legend_labels):
            if i < len(present):
                s = present[i]
                mark.setPixmap(status_pixmap(s, 12))
                text.setText(f"{s.name} {counts[s]:,}")
                mark.show()
                text.show()
            else:
                mark.hide()
                text.hide()

    def _show_instruments(self, views: Sequence[InstrumentView]) -> None:
        ids = [v.id for v in views]
        if ids != self._instrument_ids:
            for mark, text in self._chips.values():
                mark.deleteLater()
                text.deleteLater()
            self._chips = {}
            for i, v in enumerate(views):
                mark, text = QLabel(self.instruments_section), ElidedLabel(v.id, self.instruments_section)
                self.instrument_grid.addWidget(mark, i // 2, (i % 2) * 2)
                self.instrument_grid.addWidget(text, i // 2, (i % 2) * 2 + 1)
                self.instrument_grid.setColumnStretch((i % 2) * 2 + 1, 1)
                self._chips[v.id] = (mark, text)
            self._instrument_ids = ids
        if not views:
            self.instruments_section.title.setText("INSTRUMENTS · no workcell connected")
        for v in views:
            state = instrument_state(v)
            mark, text = self._chips[v.id]
            mark.setPixmap(state_pixmap(state, 12))
            label = STATE_LABELS[state]
            text.set_full_text(f"{v.id} · {label}")
            text.setToolTip(f"{v.name or v.id}: {label}" + (f" — {v.detail}" if v.detail else ""))

    def _show_alerts(self, alerts: Sequence[Alert]) -> None:
        lines = [Line(a.since, icon("alert-octagon" if a.severity == CRITICAL else "alert-triangle",
                                    status_color(OrderStatus.Error if a.severity == CRITICAL
                                                 else OrderStatus.Paused)),
                      f"{a.title}" + (f" — {a.detail}" if a.detail else ""), a.detail, a.key)
                 for a in alerts]
        self.alerts_model.set_lines(lines)
        critical = sum(a.severity == CRITICAL for a in alerts)
        self.alerts_count.setText(f"{critical} critical · {len(alerts) - critical} warning" if alerts else "")
        self.dismiss_button.setVisible(any(a.dismissable for a in alerts))
        self.all_clear.setVisible(not alerts)
        self.alerts_view.setVisible(bool(alerts))
        self.current_alerts = list(alerts)
        self._expand_text()

    @Slot()
    def _on_dismiss(self) -> None:
        self.alerts.dismiss_all()
        self.refresh()

    # ------------------------------------------------------------------ life cycle

    def tick(self) -> None:
        self.refresh()

    def on_shutdown(self) -> None:
        self._reader.cancel_all()

    def on_shown(self) -> None:
        self.refresh()

    def apply_theme(self, _theme: Theme) -> None:
        for view in (self.alerts_view, self.activity_view):
            _card_background(view)
        self.all_clear_mark.setPixmap(status_pixmap(OrderStatus.Complete, 14))
        self.status_bar.update()
        self.refresh()
