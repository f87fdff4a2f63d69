"""Fleet: the other workcells that share this console's Data Services, read-only.

Each console posts a heartbeat event to the Data Services it works with
(:mod:`core.dataservices.fleet`): its module id, host, queue depth, running steps and orders,
and its instruments' states. This panel lists the latest heartbeat of every other console seen
in the last two leases: alive (its lease holds), stale (its heartbeats stopped: killed, hung or
cut off) or stopped (it left), with one row per instrument under each workcell.

Nothing here acts on another workcell: an operator acts on its orders from its own console.

Reading: :meth:`core.dataservices.link.DataServicesLink.fleet` on the event loop (an HTTP request
to a remote Data Services, awaited, never blocking), when the panel comes into view and then once
per heartbeat period (a third of the lease) while it is shown; heartbeats the link read for its
own lease rounds within that period are not read again. One read at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.errors import LabconsoleError
from panels.base import Panel
from panels.style import STATE_LABELS, STATE_MARKS, format_age, state_icon
from panels.theme import Theme
from panels.widgets import TaskKeeper

if TYPE_CHECKING:  # the window does not import the Data Services client (httpx) until it needs it
    from core.dataservices.fleet import FleetModule

COLUMNS = ("Workcell", "Status", "Heartbeat", "Queue", "Steps", "Running orders", "Instruments", "Host")
WORKCELL, STATUS, HEARTBEAT, QUEUE, STEPS, ORDERS, INSTRUMENTS, HOST = range(len(COLUMNS))
WIDTHS = (120, 80, 78, 50, 46, 140, 130)
HEADER_TIPS = {QUEUE: "Steps waiting for an instrument there", STEPS: "Steps running there now",
               ORDERS: "Data Services orders whose steps have started there (never moved elsewhere)",
               HEARTBEAT: "How long before this read its last heartbeat was posted"}
MODULE_STATES = {"alive": ("Alive", "Ready"), "stale": ("Stale", "Offline"), "stopped": ("Stopped", "Disabled")}
"""Workcell state -> (label, the instrument state whose colour and mark it borrows)."""
SHOWN_ORDERS = 3
"""Running orders named in the row (all of them in its tooltip)."""


def instruments_summary(states: dict[str, str]) -> str:
    """``4: 2 Busy, 2 Ready`` (the most common state first)."""
    if not states:
        return "none"
    counts = Counter(STATE_LABELS.get(s, s) for s in states.values())
    return f"{len(states)}: " + ", ".join(f"{n} {label}" for label, n in
                                         sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _span(seconds: float) -> str:
    """``2 minutes``, ``1 minute``, ``90 s``."""
    minutes, rest = divmod(round(seconds), 60)
    if minutes and not rest:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:.0f} s"


class FleetPanel(Panel):
    """The other workcells on this console's Data Services (see the module doc)."""

    loaded = Signal()
    """Emitted after each read is shown (or its failure)."""

    def __init__(self, runtime: RuntimeApi, bridge: Any, parent: QWidget | None = None) -> None:
        super().__init__(runtime, bridge, parent)
        self.reads = TaskKeeper()
        self._read: asyncio.Task[Any] | None = None
        self.modules: list[FleetModule] = []
        """The other workcells, as last read."""
        self.read_at: float | None = None
        self.error: str | None = None
        self.reads_done = 0

        self.summary = QLabel(self)
        self.summary.setObjectName("fleetSummary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.tree = QTreeWidget(self)
        self.tree.setObjectName("fleetTree")
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(list(COLUMNS))
        self.tree.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setAlternatingRowColors(True)
        self.tree.setUniformRowHeights(True)
        header = self.tree.header()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for column, width in enumerate(WIDTHS):
            self.tree.setColumnWidth(column, width)
        for column, tip in HEADER_TIPS.items():
            self.tree.headerItem().setToolTip(column, tip)
        self.hint = QLabel("Read-only: act on another workcell's orders from its own console.", self)
        self.hint.setObjectName("fleetHint")
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 4)
        layout.addWidget(self.summary)
        layout.addWidget(self.tree, 1)
        layout.addStretch(0)  # takes the room while there is no table
        layout.addWidget(self.hint)
        self._show_summary()

    # ------------------------------------------------------------------ refresh

    def period(self) -> float:
        """Seconds between reads while shown: the heartbeat period of this console's link."""
        link = self.runtime.link
        return link.lease / 3 if link is not None else 0.0

    def wants_refresh(self) -> bool:
        period = self.period()
        if period > 0:
            self.refresh_timer.setInterval(max(1000, int(period * 1000)))
        return period > 0

    def on_shown(self) -> None:
        self.refresh()

    def tick(self) -> None:
        self.refresh()

    def refresh(self) -> asyncio.Task[Any] | None:
        """Read the fleet (unless a read is in flight); None when there is nothing to read."""
        if self.is_shut_down:
            return None
        if self.runtime.link is None:
            self._show_summary()
            return None
        if self._read is not None and not self._read.done():
            return self._read
        try:
            self._read = self.reads.spawn(self._load())
        except RuntimeError:  # no running loop (the window is being built)
            return None
        return self._read

    async def _load(self) -> None:
        link = self.runtime.link
        if link is None:
            return
        try:
            modules = await link.fleet(max_age=self.period() * 0.9)
        except LabconsoleError as exc:
            if not self.is_shut_down:
                self.error = str(exc)
                self._show_summary()
                self.loaded.emit()
            return
        if self.is_shut_down:
            return
        self.error = None
        self.read_at = time.time()
        self.modules = [m for m in modules if m.beat.module_id != link.module_id]
        self._fill()
        self._show_summary()
        self.reads_done += 1
        self.loaded.emit()

    def on_shutdown(self) -> None:
        self.reads.cancel_all()

    def apply_theme(self, theme: Theme) -> None:
        if self.modules:
            self._fill()  # the state marks in the new theme's colours

    # ------------------------------------------------------------------ showing

    def _show_summary(self) -> None:
        link = self.runtime.link
        if link is None:
            text = "Not connected to a Data Services yet: the other workcells show once it is."
        else:
            url = link.state.url or "Data Services"
            where = f"embedded in this console at {url}" if link.embedded else url
            if self.read_at is None and self.error is None:
                text = f"Reading the workcells on {where}…"
            elif not self.modules:
                text = (f"No other workcell shares this Data Services ({where}): no other console "
                        f"posted a heartbeat in the last {_span(2 * link.lease)}.")
            else:
                states = Counter(m.state for m in self.modules)
                parts = [f"{states[s]} {MODULE_STATES[s][0].lower()}" for s in MODULE_STATES if states[s]]
                n = len(self.modules)
                on = f"this console's embedded Data Services at {url}" if link.embedded else f"Data Services {url}"
                text = (f"{n} other workcell{'s' if n != 1 else ''} on {on}: {', '.join(parts)}. "
                        f"This console is {link.module_id}.")
            if self.read_at is not None:
                text += f" Read at {datetime.fromtimestamp(self.read_at).strftime('%H:%M:%S')}, " \
                        f"every {self.period():.0f} s while shown."
            if self.error is not None:
                text += f" Last read failed: {self.error}"
        self.summary.setText(text)
        self.tree.setVisible(bool(self.modules))

    def _fill(self) -> None:
        items = [self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount())]
        expanded = {item.text(WORKCELL) for item in items if item is not None and item.isExpanded()}
        first = self.tree.topLevelItemCount() == 0
        self.tree.clear()
        bold = QFont(self.tree.font())
        bold.setBold(True)
        for m in self.modules:
            b = m.beat
            label, look = MODULE_STATES[m.state]
            item = QTreeWidgetItem(self.tree)
            item.setText(WORKCELL, b.module_id)
            item.setFont(WORKCELL, bold)
            item.setText(HOST, f"{b.host} · runs the Data Services" if b.hosts_data_services else b.host)
            item.setText(STATUS, label)
            item.setIcon(STATUS, state_icon(look))
            item.setText(HEARTBEAT, format_age(max(0.0, m.seen - b.at)))
            item.setText(QUEUE, str(b.queue_depth))
            item.setText(STEPS, str(b.running))
            orders = list(b.running_orders)
            shown = ", ".join(orders[:SHOWN_ORDERS]) + (f" +{len(orders) - SHOWN_ORDERS}"
                                                        if len(orders) > SHOWN_ORDERS else "")
            item.setText(ORDERS, f"{len(orders)}" + (f": {shown}" if orders else ""))
            item.setText(INSTRUMENTS, instruments_summary(b.instruments))
            for column in (QUEUE, STEPS):
                item.setTextAlignment(column, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            tip = [f"<b>{b.module_id}</b>" + (f" — {b.workcell}" if b.workcell else ""),
                   f"host {b.host}, pid {b.pid}",
                   f"last heartbeat {datetime.fromtimestamp(b.at).strftime('%H:%M:%S')}, "
                   + ("it left" if b.lease == 0 else f"lease {b.lease:g} s"),
                   f"claimed, not finished: {len(b.held)}"]
            if b.hosts_data_services:
                tip.append("runs the Data Services the workcells share (embedded in its console): "
                           "its orders are never taken over, and the Data Services stops with it")
            if orders:
                tip.append("running orders: " + ", ".join(orders))
            if b.templates:
                tip.append("templates: " + ", ".join(b.templates))
            if b.capabilities:
                tip.append("capabilities: " + ", ".join(b.capabilities))
            item.setToolTip(WORKCELL, "<br>".join(tip))
            item.setToolTip(ORDERS, ", ".join(orders) if orders else "no order running")
            for instrument, state in sorted(b.instruments.items()):
                child = QTreeWidgetItem(item)
                child.setText(WORKCELL, instrument)
                child.setText(STATUS, STATE_LABELS.get(state, state))
                if state in STATE_MARKS:  # a newer console may send a state this one does not know
                    child.setIcon(STATUS, state_icon(state))
                if m.state != "alive":
                    child.setToolTip(STATUS, f"as of its last heartbeat, {format_age(max(0.0, m.seen - b.at))}")
            item.setExpanded(first or b.module_id in expanded)

    def module(self, module_id: str) -> FleetModule | None:
        return next((m for m in self.modules if m.beat.module_id == module_id), None)
