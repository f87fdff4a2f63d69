"""Detail panel: everything about one order, live.

For the order selected in the Jobs table (:meth:`DetailPanel.show_order`):

- a header (status badge, id, template and version, run or step), the actions that apply to its
  status (Cancel, Retry, Recover, Skip step, Pause, Resume — the same catalogue and flows as the
  Jobs panel), and the dispatcher's and engine's plain-language *why waiting* reasons;
- the run's steps as a small timeline with dependency arrows (:mod:`panels.detail_steps`);
- tabs: properties, input and output parameters, the transition history (when, from → to, who,
  why), the audit entries of operator actions, and a log (the order's own log, step errors, and
  the events seen for the run while it is shown).

Data is read off the loop through the runtime facade (``await runtime.store.read(...)``), the
latest selection wins (a new selection cancels the previous read), and the bridge's events for
the shown run trigger a refresh — at most one read in flight, one more queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from PySide6.QtCore import QSize, Qt, Signal, Slot
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QStackedWidget,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.errors import LabconsoleError
from core.events import (
    InstrumentStatusChanged,
    OperatorAction,
    OrderCreated,
    OrderStatusChanged,
    OrderUpdated,
    RunChanged,
    StepChanged,
    StepProgress,
)
from core.orders import TERMINAL_STATUSES, Order, OrderStatus
from core.users import os_user
from panels.actions import ACTIONS, MARKS, Bridge, Feedback, OrderActions
from panels.base import Panel
from panels.detail_steps import AXIS, LANE, GanttStep, StepsTimeline
from panels.detail_tables import SmallTableModel, cell, make_table
from panels.jobs_filterbar import FlowLayout
from panels.jobs_model import format_duration, format_full_time
from panels.style import display_color, display_icon, display_status, status_color, status_icon

log = logging.getLogger(__name__)

DETAIL_ACTIONS = ("cancel", "retry", "recover", "skip", "pause", "resume")
"""The action buttons of the panel, in order."""
LOG_LINES = 500
TICK_MS = 1000

_STEP_ORDER_STATUS = {"pending": OrderStatus.Created, "queued": OrderStatus.Scheduled,
                      "retrying": OrderStatus.Scheduled, "running": OrderStatus.Running,
                      "completed": OrderStatus.Complete, "failed": OrderStatus.Error,
                      "unknown": OrderStatus.Error, "skipped": OrderStatus.Canceled,
                      "cancelled": OrderStatus.Canceled}
"""How an engine step status shows (the engine's own mapping onto the step's order)."""


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _clock(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else ""


NOTHING_SHOWN = "Select an order in the Jobs table to see its details."
"""What the panel says while no order is selected."""


@dataclass
class DetailData:
    """What the panel shows about one order, read in one go off the loop."""

    order_id: str
    order: Order
    is_run: bool
    run_id: str | None
    engine: bool
    """Whether a labconsole run (the engine's steps and dependencies are known)."""
    run: dict[str, Any] | None = None
    run_order: Order | None = None
    children: list[Order] = field(default_factory=list)
    depends: dict[str, tuple[str, ...]] = field(default_factory=dict)
    estimates: dict[str, float | None] = field(default_factory=dict)
    max_recovery: int | None = None
    transitions: list[tuple[Any, str]] = field(default_factory=list)
    """(Transition, which order: "run" or the step) sorted by log position."""
    audit: list[Any] = field(default_factory=list)
    numeric_priority: int | None = None
    why: list[str] = field(default_factory=list)
    skipped: bool = False
    """A step the engine skipped (its order reads Canceled on the wire)."""
    stored_log: list[tuple[float, str, str, str]] = field(default_factory=list)
    """What the store holds about the order (and a run's steps): (at, kind, order label, text)."""
    details: str | None = None
    """The order's status details if they explain its current status (a Running order keeps
    the details of the state before it on the wire: those are not shown)."""
    owner: Any = None
    """The other workcell that owns the order (a :class:`core.dataservices.fleet.FleetModule`,
    or its module id when it posted no heartbeat lately): shown read-only."""

    @property
    def status_name(self) -> str:
        """The status shown: the order's, or Skipped."""
        return display_status(self.order.status, self.skipped)

    @property
    def watched(self) -> set[str]:
        """Order ids whose changes concern what is shown."""
        ids = {self.order_id}
        if self.run_id:
            ids.add(self.run_id)
        if self.run:
            ids.update(s["order_id"] for s in self.run["steps"])
        ids.update(c.identifier or "" for c in self.children)
        return ids


def gather(runtime: RuntimeApi, order_id: str) -> DetailData:
    """Read everything about ``order_id`` through the runtime facade (runs on a reader thread)."""
    order = runtime.order(order_id)
    target = runtime.target(order_id)
    run_id, step_id = target.run_id, target.step_id
    if run_id is None:  # an order claimed from Data Services: shown with the run made for it
        run_id = runtime.store.runs_for_orders([order_id]).get(order_id)
    rows = runtime.store.order_rows("id = ?", (order_id,), limit=1)
    numeric = rows[0][6] if rows else None
    if run_id is not None:
        run = runtime.engine.get_instance(run_id)
        template = runtime.engine.templates.get(run["template_name"], run["template_version"])
        is_run = step_id is None
        data = DetailData(order_id, order, is_run, run_id, True, run=run,
                          numeric_priority=numeric, max_recovery=template.max_recovery_attempts)
        data.depends = {s.id: tuple(s.depends_on) for s in template.steps}
        data.estimates = {s.id: s.estimated_duration for s in template.steps}
        labels = {s["order_id"]: s["id"] for s in run["steps"]}
        labels[run_id] = "run"
        if run_id != order_id:
            labels[order_id] = "order"
        shown = list(labels) if is_run else [order_id]
        audit_targets = list(labels) if is_run else [order_id, run_id]
        if run_id != order_id and is_run:  # what is done to the order is done to its run
            data.run_order = runtime.order(run_id)
        if not is_run:
            data.run_order = runtime.order(run_id)
            data.skipped = runtime.store.step_status_of(order_id) == "skipped"
    else:
        is_run = order.parentIdentifier is None
        run_id = order_id if is_run else order.parentIdentifier
        data = DetailData(order_id, order, is_run, run_id, False, numeric_priority=numeric)
        child_ids = runtime.child_ids(run_id) if run_id else []
        data.children = [runtime.order(c) for c in child_ids]
        if not is_run and run_id:
            with contextlib.suppress(LabconsoleError):
                data.run_order = runtime.order(run_id)
        labels = {c.identifier or "": c.identifier or "" for c in data.children}
        labels[run_id or order_id] = "run"
        shown = list(labels) if is_run else [order_id]
        audit_targets = shown + ([run_id] if run_id and not is_run else [])
    transitions = [(t, labels.get(oid, oid)) for oid in shown for t in runtime.history(oid)]
    transitions.sort(key=lambda item: item[0].seq)
    data.transitions = transitions
    data.details = current_details(order, [t for t, _label in transitions if t.order_id == order_id])
    data.stored_log = [(at, kind, labels.get(oid, oid), text)
                       for at, kind, oid, text in runtime.store.order_log(shown)]
    audit = [a for oid in dict.fromkeys(audit_targets) for a in runtime.audit(oid)]
    audit.sort(key=lambda a: a.seq)
    data.audit = audit
    return data


def current_details(order: Order, history: list[Any]) -> str | None:
    """``order.statusDetails`` when they explain its current status: written with its last
    transition. The store keeps the details when a transition gives none (on the way to
    Running, or to Complete without a message), so an order retried after a pause would still
    read "needs the operator"."""
    details = order.statusDetails
    if not details:
        return None
    last = history[-1] if history else None
    return details if last is None or last.why == details else None


class DetailPanel(Panel):
    """Properties, parameters, steps, history, audit, log and why-waiting of the selected order.

    Receives the runtime facade and the per-frame event bridge (constructor injection).
    ``navigate`` carries an order id the operator clicked (a step in the timeline, the run link).
    """

    navigate = Signal(str)
    loaded = Signal(str)
    """Emitted with the order id each time its details were (re)read and shown."""

    REFRESH_MS = TICK_MS

    def __init__(self, runtime: RuntimeApi, bridge: Bridge, parent: QWidget | None = None, *,
                 now: Callable[[], float] = time.time, who: Callable[[], str] = os_user) -> None:
        super().__init__(runtime, bridge, parent)
        self.now = now
        self._live = False
        """A running order with a live timeline is shown: durations tick."""
        self.order_id: str | None = None
        self.data: DetailData | None = None
        self.loads = 0
        self._task: asyncio.Task[DetailData | None] | None = None
        self._again = False
        self._events: deque[str] = deque(maxlen=LOG_LINES)
        self._fractions: dict[str, float] = {}
        """Latest progress report of every running order (so a run shown mid-step has it)."""
        self.order_actions = OrderActions(runtime, self, who=who)
        self.forecast: Any = None
        """The run ETAs (:meth:`set_forecast`); None: steps to come are chained after their dependencies."""
        self.order_actions.feedback.connect(self._on_feedback)
        self.last_feedback: Feedback | None = None

        self.pages = QStackedWidget(self)
        self.empty = QLabel(NOTHING_SHOWN, self)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.pages.addWidget(self.empty)
        # The content scrolls when the dock is short, so the panel never forces a tall window.
        self.scroll_area = QScrollArea(self)
        self.scroll_area.setWidgetResizable(True)
        self.scroll_area.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content = _FitWidth(self.scroll_area)
        self.scroll_area.setWidget(content)
        self.pages.addWidget(self.scroll_area)

        # -- header
        self.badge = QLabel(content)
        self.title = QLabel(content)
        self.title.setObjectName("detailTitle")
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = QFont(self.title.font())
        font.setPointSizeF(font.pointSizeF() * 1.25)
        font.setBold(True)
        self.title.setFont(font)
        self.subtitle = QLabel(content)
        self.subtitle.setWordWrap(True)
        self.subtitle.setTextFormat(Qt.TextFormat.RichText)
        self.subtitle.linkActivated.connect(self._on_link)
        head = QFormLayout()
        head.setContentsMargins(0, 0, 0, 0)
        head.addRow(self.badge, self.title)
        head.addRow("", self.subtitle)

        self.buttons: dict[str, QPushButton] = {}
        flow = FlowLayout(spacing=4)
        for key in DETAIL_ACTIONS:
            action = ACTIONS[key]
            button = QPushButton(action.label, content)
            button.setObjectName(f"detail_{key}")
            button.setToolTip(action.tip)
            button.clicked.connect(lambda _checked=False, k=key: self.trigger(k))
            flow.addWidget(button)
            self.buttons[key] = button

        self.owner_line = QLabel(content)
        self.owner_line.setObjectName("detailOwner")
        self.owner_line.setWordWrap(True)
        self.owner_line.setTextFormat(Qt.TextFormat.RichText)
        self.owner_line.setVisible(False)

        self.why_box = QFrame(content)
        self.why_box.setObjectName("whyWaiting")
        self.why_box.setFrameShape(QFrame.Shape.StyledPanel)
        self.why = QLabel(self.why_box)
        self.why.setWordWrap(True)
        self.why.setTextFormat(Qt.TextFormat.RichText)
        self.why.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        box = QVBoxLayout(self.why_box)
        box.setContentsMargins(8, 4, 8, 4)
        box.addWidget(self.why)

        # -- steps timeline
        self.timeline = StepsTimeline(content)
        self.timeline.step_clicked.connect(self._on_step_clicked)
        self.timeline_area = QScrollArea(content)
        self.timeline_area.setWidget(self.timeline)
        self.timeline_area.setWidgetResizable(True)
        self.timeline_area.setFrameShape(QFrame.Shape.NoFrame)
        self.timeline_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.steps_title = QLabel("<b>Steps</b>", content)

        # -- tabs
        self.tabs = QTabWidget(content)
        self.tabs.setDocumentMode(True)
        self.props = QFormLayout()
        self.props.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.props.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.fields: dict[str, QLabel] = {}
        for name in ("Order", "Template", "Status", "Details", "Run", "Steps", "Priority", "Instrument",
                     "Restricted to", "Created", "Scheduled", "Started", "Ended", "Duration",
                     "Attempt", "Recoveries", "Created by", "Notes"):
            label = QLabel(content)
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
            label.setTextFormat(Qt.TextFormat.RichText)
            label.linkActivated.connect(self._on_link)
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            self.props.addRow(f"{name}:", label)
            self.fields[name] = label
        props_page = QWidget(self.tabs)
        props_page.setLayout(self.props)
        props_scroll = QScrollArea(self.tabs)
        props_scroll.setWidget(props_page)
        props_scroll.setWidgetResizable(True)
        props_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.tabs.addTab(props_scroll, "Properties")

        self.inputs = SmallTableModel(("Name", "Value", "Type", "Unit"), self)
        self.outputs = SmallTableModel(("Name", "Value", "Type", "Unit"), self)
        params = QSplitter(Qt.Orientation.Vertical, self.tabs)
        for title, model in (("Inputs", self.inputs), ("Outputs", self.outputs)):
            holder = QWidget(params)
            lay = QVBoxLayout(holder)
            lay.setContentsMargins(0, 4, 0, 0)
            lay.addWidget(QLabel(f"<b>{title}</b>", holder))
            lay.addWidget(make_table(model, (150, 150, 70), holder))
            params.addWidget(holder)
        self.tabs.addTab(params, "Parameters")

        self.history = SmallTableModel(("When", "Order", "Change", "Who", "Why"), self)
        self.tabs.addTab(make_table(self.history, (132, 74, 170, 90), self.tabs), "History")
        self.audit = SmallTableModel(("When", "Who", "Action", "Target", "Reason", "Details"), self)
        self.tabs.addTab(make_table(self.audit, (132, 80, 110, 96, 150), self.tabs), "Audit")
        self.log = QPlainTextEdit(self.tabs)
        self.log.setReadOnly(True)
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        mono = QFont("monospace")
        mono.setStyleHint(QFont.StyleHint.TypeWriter)
        self.log.setFont(mono)
        self.tabs.addTab(self.log, "Log")

        self.status_line = QLabel(content)
        self.status_line.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        layout.addLayout(head)
        layout.addWidget(self.owner_line)
        layout.addLayout(flow)
        layout.addWidget(self.why_box)
        layout.addWidget(self.steps_title)
        layout.addWidget(self.timeline_area)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(self.status_line)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(6, 6, 6, 4)
        outer.addWidget(self.pages)

        self.listen(bridge.events, self._on_events)

    # ------------------------------------------------------------------ showing an order

    def show_order(self, order_id: str | None) -> asyncio.Task[DetailData | None] | None:
        """Show ``order_id`` (None: nothing). The read runs as a task; the latest call wins."""
        if order_id != self.order_id:
            self._events.clear()
        self.order_id = order_id
        if order_id is None:
            self.data = None
            self.empty.setText(NOTHING_SHOWN)  # not what was last said of another order
            self.pages.setCurrentIndex(0)
            self._live = False
            self.update_refresh()
            return None
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._again = False
        if self.pages.currentIndex() == 0:  # an order is selected: never "select an order" meanwhile
            self.empty.setText(f"Loading {order_id}…")
        try:
            self._task = asyncio.get_running_loop().create_task(self._load(order_id),
                                                                name=f"detail {order_id}")
        except RuntimeError:  # no running loop (the window is being built): nothing to read yet
            return None
        return self._task

    def refresh(self) -> asyncio.Task[DetailData | None] | None:
        """Read the shown order again (coalesced: one read in flight, one more queued)."""
        if self.order_id is None:
            return None
        if self._task is not None and not self._task.done():
            self._again = True
            return self._task
        return self.show_order(self.order_id)

    async def _load(self, order_id: str) -> DetailData | None:
        runtime = self.runtime
        try:
            data = await runtime.store.read(lambda _c: gather(runtime, order_id))
        except LabconsoleError as exc:
            if self.order_id == order_id:
                self._show_missing(order_id, str(exc))
            return None
        if self.order_id != order_id:
            return None
        link = runtime.link
        if link is not None:  # another workcell's order (on the shared Data Services) is only shown
            related = [order_id, data.run_id, data.order.parentIdentifier,
                       data.run_order.parentIdentifier if data.run_order is not None else None]
            data.owner = await link.owner_of([i for i in related if i], data.order.assignedTo)
            if self.order_id != order_id:
                return None
        if data.order.status not in TERMINAL_STATUSES:
            try:
                # an order claimed from Data Services waits for what its run waits for
                data.why = runtime.why_waiting(data.run_id if data.engine and data.is_run and data.run_id
                                               else order_id)
            except LabconsoleError as exc:
                data.why = [str(exc)]
        self.data = data
        self._render(data)
        self.loads += 1
        self.loaded.emit(order_id)
        if self._again and self.order_id == order_id:
            self._again = False
            loop = asyncio.get_running_loop()
            loop.call_soon(self.refresh)
        return data

    def _show_missing(self, order_id: str, message: str) -> None:
        self.data = None
        self.empty.setText(f"{order_id}: {message}")
        self.pages.setCurrentIndex(0)

    # ------------------------------------------------------------------ rendering

    def _render(self, d: DetailData) -> None:
        o = d.order
        status = o.status
        self.pages.setCurrentIndex(1)
        shown = d.status_name
        self.badge.setPixmap(display_icon(shown, 22).pixmap(22, 22))
        self.badge.setToolTip(shown)
        template = f"{o.templateName or '—'}" + (f" v{o.templateVersion}" if o.templateVersion else "")
        self.title.setText(f"{d.order_id}  ·  {template}")
        colour = display_color(shown).name()
        state = f"<b style='color:{colour}'>{shown}</b>"
        if d.is_run:
            kind = "Run" if d.engine else "Order"
            n_steps = len(d.run["steps"]) if d.run else len(d.children)
            if d.engine and d.run_id and d.run_id != d.order_id:
                kind = f"Order claimed from Data Services, run by <a href='{d.run_id}'>{d.run_id}</a>"
            sub = f"{kind} with {n_steps} step{'s' if n_steps != 1 else ''} · {state}"
        else:
            step = next((s for s in (d.run or {}).get("steps", []) if s["order_id"] == d.order_id), None)
            name = f"step <b>{step['id']}</b> " if step else "step "
            sub = f"{name.capitalize()}of run <a href='{d.run_id}'>{d.run_id}</a> · {state}"
        if d.details:
            sub += f" — {_html(d.details)}"
        self.subtitle.setText(sub)

        # an order claimed from Data Services: its actions act on its run, as the run stands
        acting = d.run_order.status if d.is_run and d.run_order is not None else status
        owner = owner_text(d.owner)
        self.owner_line.setVisible(owner is not None)
        if owner is not None:
            self.owner_line.setText(f"Owned by workcell {owner} — read-only here: act on it from "
                                    "that workcell's console.")
        for key, button in self.buttons.items():
            applies = ACTIONS[key].applies(acting, d.is_run, d.skipped)
            refused = self.order_actions.refusal(key)
            button.setEnabled(applies and d.engine and refused is None and owner is None)
            if owner is not None:
                owner_id = d.owner if isinstance(d.owner, str) else d.owner.beat.module_id
                button.setToolTip(f"Owned by workcell {owner_id}: act on it from its console")
            elif refused is not None:
                button.setToolTip(refused)
            elif not d.engine:
                button.setToolTip("Not a labconsole run: the engine does not act on it")
            elif not applies:
                button.setToolTip(f"{ACTIONS[key].label.rstrip('…')} does not apply to a {shown} "
                                  f"{'run' if d.is_run else 'step'}")
            else:
                button.setToolTip(ACTIONS[key].tip)
        paused = acting is OrderStatus.Paused
        self.buttons["resume"].setVisible(paused)
        self.buttons["pause"].setVisible(not paused and d.is_run)
        self.buttons["skip"].setVisible(d.engine)

        # an order the engine does not run has nothing to say once it failed
        reasons = [r for r in d.why if r != "not waiting"] if d.engine or status is not OrderStatus.Error else []
        if owner is not None:  # its own workcell decides when it runs, not this console
            reasons = []
        self.why_box.setVisible(bool(reasons))
        if reasons:
            self.why.setText("<b>Why waiting</b><ul style='margin-left:-24px; margin-top:2px'>"
                             + "".join(f"<li>{_html(r)}</li>" for r in reasons) + "</ul>")

        self._show_steps(d)
        self._render_properties(d)
        self._render_parameters(d)
        self._render_history(d)
        self._render_log(d)
        self._live = o.status not in TERMINAL_STATUSES and self.timeline.running
        self.update_refresh()

    def _show_steps(self, d: DetailData) -> list[GanttStep]:
        """The run's steps on the timeline: done and running ones where they ran, those to come
        where the forecast places them (a forward Gantt), and the run's forecast completion."""
        eta = self.forecast.eta(d.run_id) if self.forecast is not None and d.run_id else None
        steps = self._gantt_steps(d)
        band = None
        if eta is not None and eta.ok:
            steps = [dataclasses.replace(s, planned=(eta.plan[s.key].start, eta.plan[s.key].end))
                     if s.started is None and s.key in eta.plan else s for s in steps]
            band = (eta.p10, eta.p50, eta.p90)
        self.timeline.set_steps(steps, self._now(d), highlight=d.order_id, eta=band)
        for step in steps:
            if step.order_id in self._fractions:
                self.timeline.set_progress(step.order_id, self._fractions[step.order_id])
        # the whole timeline up to ten lanes; more scroll
        self.timeline_area.setFixedHeight(min(self.timeline.sizeHint().height(), AXIS + LANE * 10) + 2)
        title = f"<b>Steps</b> · {self._steps_summary(steps)}"
        if band is not None:
            title += (f" · done by {_clock(band[1])} (p10–p90 {_clock(band[0])}–{_clock(band[2])})"
                      if band[2] > self._now(d) else "")
        self.steps_title.setText(title)
        return steps

    def set_forecast(self, forecast: Any) -> None:
        """Draw the steps to come where ``forecast`` (a :class:`core.forecast.Forecast`) places
        them, and follow its new results."""
        self.forecast = forecast
        self.order_actions.forecast = forecast  # its dialogs preview moved ETAs
        forecast.add_listener(self._on_forecast)

    def _on_forecast(self, result: Any) -> None:
        d = self.data
        if d is not None and d.run_id in result.runs and not self.is_shut_down:
            self._show_steps(d)

    def _now(self, d: DetailData) -> float:
        return self.runtime.clock.now() if d.engine else self.now()

    def _gantt_steps(self, d: DetailData) -> list[GanttStep]:
        if d.run is not None:
            return [GanttStep(s["id"], f"{s['id']} · {s['name']}" if s["name"] != s["id"] else s["id"],
                              s["order_id"], _STEP_ORDER_STATUS.get(s["status"], OrderStatus.Unknown),
                              s["status"], s["started_at"], s["completed_at"], list(d.depends.get(s["id"], ())),
                              s["instrument"], s["attempt"] or 0, s["error"], s["kind"], d.estimates.get(s["id"]))
                    for s in d.run["steps"]]
        out = []
        for c in d.children:
            after = [a.strip() for a in (c.runAfterIdentifier or "").split(",") if a.strip()]
            out.append(GanttStep(c.identifier or "", c.templateName or c.identifier or "", c.identifier or "",
                                 c.status, "", _ts(c.actualStartTime), _ts(c.actualEndTime), after,
                                 c.assignedTo, 0, c.statusDetails if c.status is OrderStatus.Error else None,
                                 c.templateName or ""))
        return out

    @staticmethod
    def _steps_summary(steps: list[GanttStep]) -> str:
        if not steps:
            return "none"
        counts: dict[str, int] = {}
        for s in steps:
            counts[s.state or s.status.name.lower()] = counts.get(s.state or s.status.name.lower(), 0) + 1
        return ", ".join(f"{n} {state}" for state, n in counts.items())

    def _render_properties(self, d: DetailData) -> None:
        o = d.order
        f = self.fields
        started, ended = _ts(o.actualStartTime), _ts(o.actualEndTime)
        values: dict[str, str | None] = {
            "Order": f"{d.order_id} ({'run' if d.is_run else 'step'})",
            "Template": f"{_html(o.templateName or '—')}" + (f" v{o.templateVersion}" if o.templateVersion else ""),
            "Status": f"<b style='color:{display_color(d.status_name).name()}'>{d.status_name}</b>"
                      + (" (Canceled in Data Services)" if d.skipped else ""),
            "Details": _html(d.details) if d.details else (
                _html("; ".join(entry["text"] for entry in d.run.get("late") or ()))
                if d.is_run and d.run and d.run.get("late") else None),
            "Run": None if d.is_run else f"<a href='{d.run_id}'>{d.run_id}</a>",
            "Steps": self._steps_summary(self._gantt_steps(d)) if d.is_run else None,
            "Priority": f"{o.priority.name}" + (f" · {d.numeric_priority}" if d.numeric_priority is not None else ""),
            "Instrument": _html(o.assignedTo) if o.assignedTo else None,
            "Restricted to": (f"{_html(o.restrictToModuleIds)} ({o.moduleRestrictionStrategy.name})"
                              if o.restrictToModuleIds else None),
            "Created": format_full_time(_ts(o.creationTime)) or None,
            "Scheduled": format_full_time(_ts(o.scheduledStartTime)) or None,
            "Started": format_full_time(started) or None,
            "Ended": format_full_time(ended) or None,
            "Duration": (format_duration((ended or self.now()) - started)
                         + ("" if ended else " (running)")) if started else None,
            "Attempt": None,
            "Recoveries": None,
            "Created by": _html(o.createdBy) if o.createdBy else None,
            "Notes": _html(o.notes) if o.notes else None,
        }
        if d.run is not None and not d.is_run:
            step = next((s for s in d.run["steps"] if s["order_id"] == d.order_id), None)
            if step is not None and step["attempt"]:
                values["Attempt"] = str(step["attempt"])
        if d.run is not None and d.is_run:
            values["Recoveries"] = f"{d.run['recovery_attempts']} of {d.max_recovery} allowed"
        for name, label in f.items():
            value = values.get(name)
            label.setText(value or "")
            self.props.setRowVisible(label, value is not None)

    def _render_parameters(self, d: DetailData) -> None:
        def rows(params: list[Any], prefix: str = "") -> list[list[Any]]:
            return [[cell(prefix + p.name), cell(p.value, p.description), cell(p.valueType.wire), cell(p.unit)]
                    for p in params]

        self.inputs.set_rows(rows(d.order.inputParameters))
        outputs = rows(d.order.outputParameters)
        if d.is_run and d.run is not None:  # a run's outputs are its steps' outputs
            for s in d.run["steps"]:
                for name, value in (s["outputs"] or {}).items():
                    outputs.append([cell(f"{s['id']}.{name}"), cell(value), cell(type(value).__name__), cell("")])
        elif d.is_run:
            for c in d.children:
                outputs.extend(rows(c.outputParameters, f"{c.templateName or c.identifier}."))
        self.outputs.set_rows(outputs)

    def _render_history(self, d: DetailData) -> None:
        rows = []
        for t, which in reversed(d.transitions):
            to = t.to_status
            change = f"{t.from_status.name} → {to.name}" if t.from_status is not None else f"created as {to.name}"
            rows.append([cell(_stamp(t.at), format_full_time(t.at)), cell(which),
                         cell(change, icon=status_icon(to), color=status_color(to)),
                         cell(t.who), cell(t.why or "")])
        self.history.set_rows(rows)
        audit = []
        for a in reversed(d.audit):
            details = ", ".join(f"{k}={v}" for k, v in (a.details or {}).items())
            audit.append([cell(_stamp(a.at), format_full_time(a.at)), cell(a.who), cell(a.action),
                          cell(a.target or ""), cell(a.reason or ""), cell(details)])
        self.audit.set_rows(audit)
        self.tabs.setTabText(2, f"History ({len(rows)})")
        self.tabs.setTabText(3, f"Audit ({len(audit)})")

    def _render_log(self, d: DetailData) -> None:
        lines: list[str] = []
        if d.order.log:
            lines += ["— order log —", d.order.log.rstrip(), ""]
        errors = []
        for s in (d.run or {}).get("steps", []):
            if s["error"]:
                code = f" [{s['error_code']}]" if s.get("error_code") else ""
                errors.append(f"{_clock(s['completed_at'])}  {s['id']} {s['status']}{code}: {s['error']}")
        for c in d.children:
            if c.status is OrderStatus.Error and c.statusDetails:
                errors.append(f"{_clock(_ts(c.actualEndTime))}  {c.identifier} Error: {c.statusDetails}")
        if errors:
            lines += ["— step errors —", *errors, ""]
        late = (d.run or {}).get("late") or []
        if late:
            lines += ["— time windows that did not hold —", *(entry["text"] for entry in late), ""]
        lines.append("— stored log (transitions, operator actions, instruments) —")
        lines += [f"{_clock(at)}  {label} {kind}: {text}" for at, kind, label, text in d.stored_log[-LOG_LINES:]] \
            or ["(nothing stored)"]
        lines.append("")
        lines.append("— events while shown —")
        lines += list(self._events) or ["(none yet)"]
        text = "\n".join(lines)
        if self.log.toPlainText() != text:
            bar = self.log.verticalScrollBar()
            at_end = bar.value() >= bar.maximum() - 2
            self.log.setPlainText(text)
            if at_end:
                bar.setValue(bar.maximum())

    # ------------------------------------------------------------------ actions

    def trigger(self, key: str) -> asyncio.Task[Any] | None:
        """Run action ``key`` (cancel, retry, recover ...) on the shown order."""
        if self.data is None:
            return None
        return self.order_actions.request(key, self.data.order_id)

    @Slot(object)
    def _on_feedback(self, feedback: Feedback) -> None:
        self.last_feedback = feedback
        mark = MARKS[feedback.level]
        colour = {"ok": status_color(OrderStatus.Complete), "error": status_color(OrderStatus.Error)}.get(feedback.level)
        self.status_line.setStyleSheet(f"color: {colour.name()};" if colour is not None else "")
        self.status_line.setText(f"{mark}  {feedback.message}")
        self.status_line.setToolTip(feedback.message)

    @Slot(str)
    def _on_link(self, order_id: str) -> None:
        self.navigate.emit(order_id)
        self.show_order(order_id)

    @Slot(str)
    def _on_step_clicked(self, order_id: str) -> None:
        if order_id and order_id != self.order_id:
            self.navigate.emit(order_id)
            self.show_order(order_id)

    # ------------------------------------------------------------------ live updates

    @Slot(object)
    def _on_events(self, events: list[Any]) -> None:
        for e in events:  # O(1) per event: keep the latest report of running orders only
            if isinstance(e, StepProgress) and e.progress is not None:
                self._fractions[e.order_id] = e.progress
            elif isinstance(e, StepChanged) and e.status != "running":
                self._fractions.pop(e.order_id, None)
        d = self.data
        if d is None or self.order_id is None:
            return
        watched = d.watched
        run_id = d.run_id
        dirty = False
        for e in events:
            if isinstance(e, StepProgress):
                if e.order_id in watched:
                    if e.progress is not None:
                        self.timeline.set_progress(e.order_id, e.progress)
                    if e.values:
                        self._note(e.at.timestamp(), f"{e.order_id} reports "
                                   + ", ".join(f"{k}={v}" for k, v in e.values.items()))
            elif isinstance(e, StepChanged):
                if e.run_id == run_id:
                    dirty = True
                    where = f" on {e.instrument}" if e.instrument and e.status in ("queued", "running") else ""
                    attempt = f" (attempt {e.attempt})" if e.attempt > 1 else ""
                    detail = f": {e.detail}" if e.detail else ""
                    self._note(e.at.timestamp(), f"step {e.step_id} {e.status}{where}{attempt}{detail}")
            elif isinstance(e, RunChanged):
                if e.run_id == run_id:
                    dirty = True
                    self._note(e.at.timestamp(), f"run {e.status}" + (f": {e.detail}" if e.detail else ""))
            elif isinstance(e, OperatorAction):
                if e.target in watched:
                    dirty = True
                    self._note(e.at.timestamp(), f"{e.who}: {e.action} {e.target}"
                               + (f" — {e.reason}" if e.reason else ""))
            elif isinstance(e, OrderStatusChanged | OrderUpdated | OrderCreated):
                if e.order_id in watched or (isinstance(e, OrderCreated) and e.parent_id == run_id):
                    dirty = True
            elif isinstance(e, InstrumentStatusChanged) and watched.intersection(e.current_orders):
                self._note(e.at.timestamp(), f"{e.instrument_id} {e.status.name}"
                           + (f": {e.detail}" if e.detail else ""))
        if dirty:
            self.refresh()

    def _note(self, at: float, text: str) -> None:
        self._events.append(f"{_clock(at)}  {text}")

    def wants_refresh(self) -> bool:
        return self._live and self.data is not None

    @Slot()
    def tick(self) -> None:
        if self.data is not None:
            self.timeline.set_now(self._now(self.data))
            o = self.data.order
            started, ended = _ts(o.actualStartTime), _ts(o.actualEndTime)
            if started and not ended:
                self.fields["Duration"].setText(format_duration(self.now() - started) + " (running)")

    # ------------------------------------------------------------------ lifecycle

    def on_shutdown(self) -> None:
        """Cancel the read in flight and open actions."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.order_actions.shutdown()


class _FitWidth(QWidget):
    """Scroll-area content whose minimum height is what its layout needs at the current width.

    Word-wrapped labels otherwise report the height they would need one word per line, and the
    scroll area would scroll although everything fits.
    """

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        hint = super().minimumSizeHint()
        layout = self.layout()
        if layout is not None and layout.hasHeightForWidth() and self.width() > 0:
            return QSize(hint.width(), layout.totalMinimumHeightForWidth(self.width()))
        return hint

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        # What the scroll area asks to decide on a scroll bar: the least that shows everything.
        layout = self.layout()
        return layout.totalMinimumHeightForWidth(width) if layout is not None else super().heightForWidth(width)


def owner_text(owner: Any) -> str | None:
    """``<b>cell-2</b> (host, alive)`` for a FleetModule, ``<b>cell-2</b>`` for a module id."""
    if owner is None:
        return None
    if isinstance(owner, str):
        return f"<b>{_html(owner)}</b>"
    beat = owner.beat
    name = f" “{_html(beat.workcell)}”" if beat.workcell else ""
    return f"<b>{_html(beat.module_id)}</b>{name} ({_html(beat.host)}, {owner.state})"


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%m-%d %H:%M:%S")


def _html(text: str | None) -> str:
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

