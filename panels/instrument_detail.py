"""One instrument in detail: what it runs now, what the queue holds for it, how busy it was
today, its status log, and "send a queued step to this instrument".

A window of its own (non-modal, opened from the Robots panel by double-click or Details), over
the runtime facade:

- the dispatcher's snapshot (:meth:`Dispatcher.view`, its ``queue``, ``why_waiting``) is read on
  the loop, where the dispatcher lives — it is in memory and cheap;
- the store's ``instrument_log`` (with the operator's audited decisions about the instrument) and
  the busy time since local midnight are read off the loop (``store.read``), one read in flight;
- sending a step calls :meth:`Dispatcher.send_to` (audited with who and why) as a task.

While shown, one timer refreshes the dispatcher part every second; the store is read again when
:meth:`InstrumentDetail.note_change` says the instrument's status or an operator decision about it
changed (the Robots panel passes on its frames), else every ``STORE_READ_S``. Models are replaced
only when their rows changed, so an idle instrument costs no repaint.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PySide6.QtCore import (
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QAction, QCloseEvent, QHideEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.dispatcher import InstrumentView, Job, JobStatus
from core.errors import StateError
from core.orders import ModuleRestrictionStrategy, ModuleStatus
from core.users import os_user
from panels.detail_tables import HeaderedRows
from panels.identity import identity_html, identity_rows, latency_text
from panels.style import STATE_LABELS, format_age, format_seconds, instrument_state, state_pixmap
from panels.theme import current_theme, theme_events
from panels.widgets import ElidedLabel, ReasonDialog, TaskKeeper

log = logging.getLogger(__name__)

ModelIndex = QModelIndex | QPersistentModelIndex
REFRESH_MS = 1000
LOG_LIMIT = 500
"""Newest status changes shown (the store keeps them all)."""
STORE_READ_S = 15.0
"""Longest time between two store reads while shown (utilisation today moves on)."""
QUEUE_LIMIT = 500
"""Queued steps listed for one instrument (the first in order of service)."""
INLINE_JOBS = 2000
"""Up to this many jobs in the dispatcher, the queue is picked on the loop (a few ms); beyond,
on a worker thread from a snapshot of the job list, so the loop never stalls on it."""
ORDER_ROLE = Qt.ItemDataRole.UserRole + 1
"""Item role holding a row's order id (None for rows without one)."""


@dataclass(frozen=True)
class Row:
    """One table row: its cells as text, the order it is about (if any), a tooltip."""

    cells: tuple[str, ...]
    order_id: str | None = None
    tooltip: str | None = None


class RowsModel(HeaderedRows):
    """A read-only table of :class:`Row` replaced whole; an unchanged list is not repainted."""

    rows: list[Row]

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        row = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return row.cells[index.column()]
        if role == Qt.ItemDataRole.ToolTipRole:
            return row.tooltip or row.cells[index.column()] or None
        if role == ORDER_ROLE:
            return row.order_id
        return None

    def set_rows(self, rows: list[Row]) -> bool:
        """Replace the rows; False (and no signal) when they are the same."""
        if rows == self.rows:
            return False
        if len(rows) == len(self.rows) and rows:
            self.rows = rows
            self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, len(self.headers) - 1))
        else:
            self.beginResetModel()
            self.rows = rows
            self.endResetModel()
        return True

    def row_of(self, order_id: str) -> int | None:
        return next((i for i, r in enumerate(self.rows) if r.order_id == order_id), None)


def local_midnight(now: float) -> float:
    """The timestamp of the last local midnight at or before ``now``."""
    return datetime.fromtimestamp(now).astimezone().replace(hour=0, minute=0, second=0,
                                                            microsecond=0).timestamp()


def clock_time(ts: float, now: float) -> str:
    """``14:03:07`` today, ``26 Nov 14:03`` on another day (local time)."""
    moment, today = datetime.fromtimestamp(ts), datetime.fromtimestamp(now)
    return moment.strftime("%H:%M:%S") if moment.date() == today.date() else moment.strftime("%d %b %H:%M")


def restriction_text(job: Job) -> str:
    if not job.restrict or job.strategy is ModuleRestrictionStrategy.NoRestriction:
        return "any"
    return f"{', '.join(job.restrict)} ({job.strategy.name})"


def next_for(jobs: list[Job], instrument_id: str, capabilities: frozenset[str],
             limit: int = QUEUE_LIMIT) -> tuple[list[Job], int]:
    """The first ``limit`` queued steps, in order of service, that could run on this instrument,
    and how many there are in all (O(n log limit), no full sort). A step could run here when the
    instrument offers its capability and its restriction does not forbid it outright: a
    conditional one (UnlessBusy, ...) allows it while its condition holds, which the dispatcher
    decides when the step is sent."""
    queued, full = JobStatus.QUEUED, ModuleRestrictionStrategy.FullRestriction
    candidates = [j for j in jobs if j.status is queued and j.capability in capabilities
                  and (not j.restrict or j.strategy is not full or instrument_id in j.restrict)]
    return heapq.nsmallest(limit, candidates, key=Job.key), len(candidates)


def pinned_here(job: Job, instrument_id: str) -> bool:
    return job.restrict == (instrument_id,) and job.strategy is ModuleRestrictionStrategy.FullRestriction


class InstrumentDetail(QDialog):
    """The detail window of one instrument. Emits :attr:`order_requested` (an order id) when the
    operator opens an order from it, :attr:`step_sent` ``(order id, instrument id, ok, message)``
    when a send has been applied or refused."""

    order_requested = Signal(str)
    step_sent = Signal(str, str, bool, str)
    loaded = Signal(str)
    """Emitted after the store part (log, utilisation today) has been read and shown."""

    def __init__(self, runtime: RuntimeApi, instrument_id: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runtime = runtime
        self.instrument_id = instrument_id
        self.setObjectName("instrumentDetail")
        self.setModal(False)
        self.tasks = TaskKeeper()
        """Sends in flight (the Send button waits for them)."""
        self.reads = TaskKeeper()
        self.reason_dialog: ReasonDialog | None = None
        self._read: asyncio.Task[Any] | None = None
        self._again = False
        self._state = ""
        self._busy_today: float | None = None
        """Busy seconds since local midnight, as of ``_read_at`` (from the store)."""
        self._read_at = 0.0
        self._midnight = 0.0
        self._store_dirty = True
        self._last_read = 0.0
        self._picking: asyncio.Task[Any] | None = None
        self._shut = False
        """Set by :meth:`shutdown`: a read that already finished (its callback still queued on
        the loop) must not touch the widgets, which may be deleted by then."""

        self.badge = QLabel(self)
        self.title = ElidedLabel("", self)
        self.title.setObjectName("detailTitle")
        self.subtitle = ElidedLabel("", self)
        self.subtitle.setObjectName("detailMuted")
        self.state = QLabel(self)
        self.state.setObjectName("detailState")
        self.figures = ElidedLabel("", self)
        self.figures.setObjectName("detailFigures")
        self.capabilities = ElidedLabel("", self)
        self.capabilities.setObjectName("detailMuted")
        self.identity = QLabel(self)
        """Driver, endpoint and what the instrument reported about itself (selectable text)."""
        self.identity.setObjectName("detailIdentity")
        self.identity.setTextFormat(Qt.TextFormat.RichText)
        self.identity.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.identity.setWordWrap(True)
        self.identity.setMinimumWidth(320)
        self.identity.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self._identity_html = ""

        self.running_label = QLabel("<b>Running now</b>", self)
        self.running = RowsModel(("Order", "Run", "Template", "Capability", "Since"), self)
        self.running_view = self._table(self.running, "runningTable")
        self.queue_label = QLabel("<b>Next</b>", self)
        self.queue = RowsModel(("#", "Order", "Run", "Template", "Capability", "Priority", "Restricted to",
                                "Queued for"), self)
        self.queue_view = self._table(self.queue, "queueTable")
        self.queue_view.selectionModel().currentRowChanged.connect(self._on_queue_current)
        self.waiting = ElidedLabel("", self)
        self.waiting.setObjectName("detailMuted")
        self.send_action = QAction("Send to this instrument…", self)
        self.send_action.setObjectName("sendStepHere")
        self.send_action.setShortcut(QKeySequence("Ctrl+Shift+S"))
        self.send_action.setToolTip("Restrict the selected queued step to this instrument and dispatch it "
                                    "as soon as the instrument is free (asks for a reason, audited) — Ctrl+Shift+S")
        self.send_action.triggered.connect(self.request_send)
        self.addAction(self.send_action)
        self.send_button = QPushButton(self.send_action.text(), self)
        self.send_button.setObjectName("sendButton")
        self.send_button.setToolTip(self.send_action.toolTip())
        self.send_button.clicked.connect(self.send_action.trigger)
        self.open_action = QAction("Open the order in Jobs", self)
        self.open_action.setObjectName("openOrder")
        self.open_action.setShortcut(QKeySequence("Ctrl+O"))
        self.open_action.triggered.connect(self.open_selected)
        self.addAction(self.open_action)
        self.open_button = QPushButton("Open in Jobs", self)
        self.open_button.setToolTip("Select the order in Jobs and show it in Detail — Ctrl+O or double-click")
        self.open_button.clicked.connect(self.open_action.trigger)
        self.feedback = QLabel(self)
        self.feedback.setObjectName("detailFeedback")
        self.feedback.setWordWrap(True)

        self.log_label = QLabel("<b>Log</b>", self)
        self.log = RowsModel(("Time", "Change", "Detail", "Orders / who"), self)
        self.log_view = self._table(self.log, "logTable")

        head = QHBoxLayout()
        head.setSpacing(10)
        head.addWidget(self.badge, 0, Qt.AlignmentFlag.AlignTop)
        names = QVBoxLayout()
        names.setSpacing(1)
        names.addWidget(self.title)
        names.addWidget(self.subtitle)
        state_row = QHBoxLayout()
        state_row.setSpacing(10)
        state_row.addWidget(self.state)
        state_row.addWidget(self.figures, 1)
        names.addLayout(state_row)
        names.addWidget(self.capabilities)
        names.addStretch(1)  # the identity beside may be taller: keep these lines together
        head.addLayout(names, 3)
        head.addWidget(self.identity, 2, Qt.AlignmentFlag.AlignTop)

        now_box = QWidget(self)
        now_layout = QVBoxLayout(now_box)
        now_layout.setContentsMargins(0, 0, 0, 0)
        now_layout.setSpacing(3)
        now_layout.addWidget(self.running_label)
        now_layout.addWidget(self.running_view, 1)
        next_box = QWidget(self)
        next_layout = QVBoxLayout(next_box)
        next_layout.setContentsMargins(0, 0, 0, 0)
        next_layout.setSpacing(3)
        next_layout.addWidget(self.queue_label)
        next_layout.addWidget(self.queue_view, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.waiting, 1)
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.send_button)
        next_layout.addLayout(buttons)
        log_box = QWidget(self)
        log_layout = QVBoxLayout(log_box)
        log_layout.setContentsMargins(0, 0, 0, 0)
        log_layout.setSpacing(3)
        log_layout.addWidget(self.log_label)
        log_layout.addWidget(self.log_view, 1)
        self.splitter = QSplitter(Qt.Orientation.Vertical, self)
        for box in (now_box, next_box, log_box):
            self.splitter.addWidget(box)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 3)
        self.splitter.setStretchFactor(2, 3)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.setSpacing(8)
        layout.addLayout(head)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.feedback)

        for view in (self.running_view, self.queue_view, self.log_view):
            view.doubleClicked.connect(self._on_double_click)
        self.timer = QTimer(self)
        self.timer.setInterval(REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        theme_events().changed.connect(self._on_theme)
        self.resize(900, 640)
        self.set_instrument(instrument_id)

    def _table(self, model: RowsModel, name: str) -> QTableView:
        view = QTableView(self)
        view.setObjectName(name)
        view.setModel(model)
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        view.setAlternatingRowColors(True)
        view.setWordWrap(False)
        vh = view.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(24)
        vh.hide()
        hh = view.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        widths = {"runningTable": (130, 130, 200, 200), "queueTable": (36, 120, 120, 160, 170, 60, 170),
                  "logTable": (120, 150, 340)}[name]
        for col, width in enumerate(widths):
            view.setColumnWidth(col, width)
        return view

    # ------------------------------------------------------------------ what is shown

    def set_instrument(self, instrument_id: str) -> None:
        """Show another instrument (the window is reused)."""
        changed = instrument_id != self.instrument_id
        self.instrument_id = instrument_id
        if changed:
            self._busy_today = None
            self.log.set_rows([])
            self.feedback.clear()
        self._store_dirty = True
        self.refresh()

    @property
    def reading(self) -> bool:
        """A read of the store is under way, or due at the next refresh."""
        return self._store_dirty or self._again or (self._read is not None and not self._read.done())

    def note_change(self) -> None:
        """Something about this instrument changed: read the store at the next refresh."""
        self._store_dirty = True

    def view(self) -> InstrumentView | None:
        return next((v for v in self.runtime.instruments() if v.id == self.instrument_id), None)

    @Slot()
    def refresh(self) -> None:
        """Show the dispatcher's snapshot now and read the store part off the loop."""
        v = self.view()
        if v is None:
            self.title.set_full_text(self.instrument_id)
            self.state.setText("Not in this workcell")
            self.running.set_rows([])
            self.queue.set_rows([])
            return
        self._show_view(v)
        self._show_queue(v)
        if self._store_dirty or time.monotonic() - self._last_read >= STORE_READ_S:
            self._read_store()

    def _show_view(self, v: InstrumentView) -> None:
        self.setWindowTitle(f"{v.name or v.id} — instrument")
        state = instrument_state(v)
        if state != self._state:
            self._state = state
            self.badge.setPixmap(state_pixmap(state, 36))
        self.title.set_full_text(v.name or v.id)
        cell = self.runtime.workcell
        spec = next((s for s in cell.instruments if s.id == v.id), None) if cell is not None else None
        maker = " ".join(p for p in (spec.vendor, spec.model) if p) if spec is not None else ""
        self.subtitle.set_full_text(" · ".join(p for p in (v.id, v.kind, maker, f"{v.capacity} slot"
                                                           + ("s" if v.capacity != 1 else "")) if p))
        self.state.setText(f"<b>{STATE_LABELS[state]}</b>")
        self.state.setToolTip(v.detail)
        util = self._utilisation_text(v)
        latency = latency_text(v.latency)
        self.figures.set_full_text(" · ".join((v.detail, util, f"{v.completed:,} done · {v.failed:,} failed "
                                               "since start", f"heartbeat {format_age(v.heartbeat_age)}"
                                               + (f" ({latency} round trip)" if latency else ""))))
        self.capabilities.set_full_text("Capabilities: " + ", ".join(v.capabilities))
        html = identity_html(v)
        if html != self._identity_html:  # the heartbeat round trip moves: re-render only then
            self._identity_html = html
            self.identity.setText(html)
            self.identity.setVisible(bool(html))

    def identity_facts(self) -> dict[str, str]:
        """What the identity box shows, label -> value (for scripts and tests)."""
        v = self.view()
        return dict(identity_rows(v)) if v is not None else {}

    def _utilisation_text(self, v: InstrumentView) -> str:
        """Busy time today: the stored log up to the last read, plus the time since if Busy now."""
        if self._busy_today is None:
            return "busy today: reading…"
        now = self._now()
        if local_midnight(now) != self._midnight:  # a new day began since the read
            self._store_dirty = True
            return "busy today: reading…"
        busy = self._busy_today + (max(0.0, now - self._read_at) if v.status is ModuleStatus.Busy else 0.0)
        span = now - self._midnight
        share = busy / span * 100 if span > 0 else 0.0
        return f"{share:.0f} % busy today ({format_seconds(busy)})"

    def _jobs(self) -> dict[str, Job]:
        dispatcher = self.runtime.dispatcher
        return dispatcher.queue.jobs if dispatcher is not None else {}

    def _show_queue(self, v: InstrumentView) -> None:
        jobs = self._jobs()
        now = self._now()
        running = []
        for oid in v.running:
            job = jobs.get(oid)
            since = clock_time(job.started, now) if job is not None and job.started else ""
            running.append(Row((oid, (job.run_id or "") if job else "", (job.workflow or "") if job else "",
                                job.capability if job else "", since), oid))
        self.running.set_rows(running)
        self.running_label.setText(f"<b>Running now</b> — {len(running)} of {v.capacity} slot"
                                   + ("s" if v.capacity != 1 else ""))
        caps = frozenset(v.capabilities)
        if len(jobs) <= INLINE_JOBS:
            self._show_next(v.id, *next_for(list(jobs.values()), v.id, caps))
        elif self._picking is None or self._picking.done():
            snapshot = list(jobs.values())  # the dispatcher changes the dict on the loop, not the list
            self._picking = self.reads.spawn(asyncio.to_thread(next_for, snapshot, v.id, caps),
                                             functools.partial(self._picked, v.id))
        self._update_buttons()

    def _picked(self, iid: str, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self._shut or iid != self.instrument_id:
            return
        if task.exception() is not None:
            log.warning("instrument %s: picking its queue failed: %s", iid, task.exception())
            return
        self._show_next(iid, *task.result())
        self._update_buttons()

    def _show_next(self, iid: str, queued: list[Job], total: int) -> None:
        now = self._now()
        rows = []
        for n, job in enumerate(queued, 1):
            here = pinned_here(job, iid)
            rows.append(Row((str(n), job.order_id, job.run_id or "", job.workflow or "", job.capability,
                             str(job.priority), restriction_text(job), format_seconds(max(0.0, now - job.submitted))),
                            job.order_id, "Already restricted to this instrument" if here else None))
        self.queue.set_rows(rows)
        more = f" (the first {QUEUE_LIMIT})" if total > QUEUE_LIMIT else ""
        self.queue_label.setText(f"<b>Next</b> — {total:,} queued step{'s' if total != 1 else ''} "
                                 f"this instrument can run, in order of service{more}")

    def _now(self) -> float:
        dispatcher = self.runtime.dispatcher
        return dispatcher.clock.now() if dispatcher is not None else datetime.now().timestamp()

    def _read_store(self) -> None:
        if self._read is not None and not self._read.done():
            self._again = True
            return
        self._again = False
        self._store_dirty = False
        self._last_read = time.monotonic()
        try:
            self._read = self.reads.spawn(self._load(self.instrument_id), self._loaded)
        except RuntimeError:  # no running loop yet: the timer reads once it runs
            self._read = None

    async def _load(self, iid: str) -> tuple[str, float, float, float, list[Any], list[Any], list[Any]]:
        store = self.runtime.store
        now = self._now()
        since = local_midnight(now)

        def read(_conn: Any) -> tuple[str, float, float, float, list[Any], list[Any], list[Any]]:
            return (iid, now, since, store.instrument_busy_seconds(iid, since, now),
                    store.instrument_log(iid, LOG_LIMIT), store.audit_entries(iid)[-LOG_LIMIT:],
                    store.audit_sends_to(iid, LOG_LIMIT))

        return await store.read(read)

    def _loaded(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or self._shut:
            return
        exc = task.exception()
        if exc is not None:
            log.warning("instrument %s: reading its log failed: %s", self.instrument_id, exc)
            self._say(f"Could not read the log of {self.instrument_id}: {exc}", "bad")
            return
        iid, now, since, busy, changes, audit, sends = task.result()
        if iid != self.instrument_id:
            self._read_store()
            return
        self._busy_today, self._read_at, self._midnight = busy, now, since
        rows = [(at, Row((clock_time(at, now), f"{old or '—'} → {new}", detail or "",
                          ", ".join(orders)), orders[0] if len(orders) == 1 else None))
                for _seq, at, old, new, detail, orders in changes]
        rows += [(e.at, Row((clock_time(e.at, now), e.action, e.reason or "", e.who))) for e in audit]
        rows += [(e.at, Row((clock_time(e.at, now), f"{e.target} sent here", e.reason or "",
                             f"{e.target} · {e.who}"), e.target)) for e in sends]
        rows.sort(key=lambda r: r[0], reverse=True)
        self.log.set_rows([r for _at, r in rows[:LOG_LIMIT]])
        self.log_label.setText(f"<b>Log</b> — status changes and operator decisions, newest first "
                               f"({len(changes):,} change{'s' if len(changes) != 1 else ''} shown)")
        v = self.view()
        if v is not None:
            self._show_view(v)
        self.loaded.emit(iid)
        if self._again:
            self._read_store()

    # ------------------------------------------------------------------ selection and actions

    def selected_queued(self) -> str | None:
        index = self.queue_view.currentIndex()
        return index.data(ORDER_ROLE) if index.isValid() else None

    def select_queued(self, order_id: str) -> bool:
        row = self.queue.row_of(order_id)
        if row is None:
            return False
        self.queue_view.selectRow(row)
        return True

    @Slot(QModelIndex, QModelIndex)
    def _on_queue_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        oid = current.data(ORDER_ROLE) if current.isValid() else None
        dispatcher = self.runtime.dispatcher
        reasons = dispatcher.why_waiting(oid) if isinstance(oid, str) and oid and dispatcher is not None else []
        self.waiting.set_full_text(("Waiting: " + "; ".join(reasons)) if reasons else "")
        self._update_buttons()

    def _update_buttons(self) -> None:
        oid = self.selected_queued()
        job = self._jobs().get(oid or "")
        can_send = (job is not None and job.status is JobStatus.QUEUED and not pinned_here(job, self.instrument_id)
                    and not self.tasks.busy)
        self.send_action.setEnabled(can_send)
        self.send_button.setEnabled(can_send)
        self.open_action.setEnabled(self._current_order() is not None)
        self.open_button.setEnabled(self.open_action.isEnabled())

    def _current_order(self) -> str | None:
        """The order of the current row of the focused table, else of the queue's."""
        views = (self.queue_view, self.running_view, self.log_view)
        for view in sorted(views, key=lambda v: not v.hasFocus()):
            index = view.currentIndex()
            oid = index.data(ORDER_ROLE) if index.isValid() else None
            if isinstance(oid, str) and oid:
                return oid
        return None

    @Slot()
    def open_selected(self) -> None:
        oid = self._current_order()
        if oid:
            self.order_requested.emit(oid)

    @Slot(QModelIndex)
    def _on_double_click(self, index: QModelIndex) -> None:
        oid = index.data(ORDER_ROLE)
        if oid:
            self.order_requested.emit(oid)

    @Slot()
    def request_send(self) -> None:
        """Ask why, then send the selected queued step here (non-blocking dialog)."""
        oid = self.selected_queued()
        if oid is None or not self.send_action.isEnabled():
            return
        name = self.title.full_text() or self.instrument_id
        dialog = ReasonDialog(f"Send {oid} to {name}",
                              f"Send the queued step <b>{oid}</b> to <b>{name}</b>? It will be restricted to "
                              f"this instrument and start as soon as it is free. The reason is kept in the "
                              f"audit log with your name.", self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        iid = self.instrument_id
        dialog.reason_given.connect(lambda reason: self.send(oid, iid, reason))
        dialog.finished.connect(self._forget_dialog)
        self.reason_dialog = dialog
        dialog.open()

    @Slot()
    def _forget_dialog(self) -> None:
        self.reason_dialog = None

    def send(self, order_id: str, instrument_id: str, reason: str | None) -> asyncio.Task[Any]:
        """Send ``order_id`` to ``instrument_id`` through the dispatcher (audited)."""
        self._say(f"Sending {order_id} to {instrument_id}…", "muted")

        def done(task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                return
            exc = task.exception()
            ok = exc is None
            message = (f"{order_id} sent to {instrument_id}: it runs there as soon as {instrument_id} is free"
                       if ok else str(exc))
            self._say(message, "good" if ok else "bad")
            self._store_dirty = True
            self.refresh()
            self.step_sent.emit(order_id, instrument_id, ok, message)

        dispatcher = self.runtime.dispatcher

        async def send_to() -> None:
            if dispatcher is None:
                raise StateError(f"no instruments are connected: {order_id} cannot go to {instrument_id}")
            await dispatcher.send_to(order_id, instrument_id, who=os_user(), reason=reason)

        task = self.tasks.spawn(send_to(), done)
        self._update_buttons()
        return task

    def _say(self, text: str, tone: str) -> None:
        self.feedback.setStyleSheet(f"#detailFeedback {{ color: {current_theme().colors[tone]}; }}")
        self.feedback.setText(text)

    # ------------------------------------------------------------------ look and life cycle

    @Slot(object)
    def _on_theme(self, _theme: object) -> None:
        self._restyle()
        if self._state:
            self.badge.setPixmap(state_pixmap(self._state, 36))

    def _restyle(self) -> None:
        theme = current_theme()
        self.setStyleSheet(f"#detailTitle {{ font-size: 18px; font-weight: 600; }}"
                           f"#detailMuted {{ color: {theme.colors['muted']}; }}")

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        self._restyle()
        self.refresh()
        self.timer.start()

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802
        super().hideEvent(event)
        self.timer.stop()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.timer.stop()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the timer and the tasks, close the reason dialog and the window."""
        self._shut = True
        self.timer.stop()
        self.tasks.cancel_all()
        self.reads.cancel_all()
        try:
            theme_events().changed.disconnect(self._on_theme)
        except (RuntimeError, TypeError):
            pass
        if self.reason_dialog is not None:
            self.reason_dialog.reject()
        self.close()
