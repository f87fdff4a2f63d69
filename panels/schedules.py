"""Schedules panel: the schedules with their next runs, a 7-day calendar, blackout windows, and
add/edit dialogs that check the schedule as it is typed.

Everything goes through :class:`core.schedules.Scheduler` (the runtime's own once the console has
started, so a change wakes its timer): add, edit, pause/resume and remove are audited there.
The calendar shows what :meth:`Scheduler.occurrences` plans — blackout windows applied, a run
moved to a window's end drawn hollow — in the panel's display time zone.

With a :class:`core.forecast.Forecast`, a "Forecast" table lists the runs in flight with their
expected completion and its p10–p90 band.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from PySide6.QtCore import QDateTime, QPointF, QRectF, QSize, Qt, QTimeZone, Signal
from PySide6.QtGui import QColor, QFont, QHelpEvent, QPainter, QPaintEvent, QPen, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDateTimeEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QSpinBox,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolBar,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.durations import format_duration
from core.errors import InputError
from core.schedules import (
    MAX_MISSED_CAP,
    Blackout,
    BlackoutPolicy,
    Frequency,
    MissedPolicy,
    Schedule,
    Scheduler,
    check_blackout,
    check_schedule,
)
from core.users import User, os_user, refusal
from panels.actions import TaskRunner
from panels.base import Panel
from panels.theme import Theme, current_theme

READ_LABEL = "read schedules"
NARROW = 900
"""Below this width (px) the calendar goes under the list."""

COLUMNS = ("Template", "When", "Time zone", "Next run", "Missed runs", "State", "Last run")
DAYS = 7
AT_HINTS = {
    Frequency.ONCE: "2026-12-01T09:00 (date and time)",
    Frequency.HOURLY: ":15 (minute of the hour)",
    Frequency.DAILY: "09:30",
    Frequency.WEEKLY: "mon 09:30",
    Frequency.MONTHLY: "15 09:30 (day of the month, time)",
}
MISSED_LABELS = {MissedPolicy.ONCE: "Run once", MissedPolicy.SKIP: "Skip", MissedPolicy.ALL: "Run all (up to a cap)"}
BLACKOUT_LABELS = {BlackoutPolicy.MOVE: "Move runs to the end", BlackoutPolicy.SKIP: "Skip runs"}


@dataclass(frozen=True)
class ScheduleView:
    """One reading of the schedules for the panel (see :meth:`SchedulesPanel.read`)."""

    now: float
    start: float
    schedules: list[Schedule]
    blackouts: list[Blackout]
    due: list[float | None]
    occurrences: list[tuple[Schedule, float, bool]]


def local_zone() -> ZoneInfo:
    """The computer's time zone (``TZ``, then /etc/localtime), UTC when it cannot be told."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for key in candidates:
        if key:
            try:
                return ZoneInfo(key)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def problems_of(error: InputError) -> list[str]:
    """``field: message`` per problem of a refused schedule or blackout window."""
    return [f"{p.where.field}: {p.message}" if p.where.field else p.message for p in error.problems]


def _when(ts: float | None, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, zone).strftime("%a %d %b %H:%M %Z") if ts is not None else "—"


def eta_text(ts: float, now: float, zone: ZoneInfo) -> str:
    """``08:14:05 (in 14m5s)``; the day is added when it is not today."""
    when, today = datetime.fromtimestamp(ts, zone), datetime.fromtimestamp(now, zone)
    text = when.strftime("%H:%M:%S") if when.date() == today.date() else when.strftime("%a %d %b %H:%M")
    return f"{text} (in {format_duration(max(0.0, round(ts - now)))})"


# --------------------------------------------------------------------------- dialogs


class ScheduleDialog(QDialog):
    """Add or edit one schedule. Every change is checked at once; the problems name the field,
    and OK stays disabled until there are none. The next three runs are shown."""

    def __init__(self, templates: list[str], *, now: float, who: str, schedule: Schedule | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Edit schedule" if schedule else "Add schedule")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(520)
        self.now = now
        self.editing = schedule
        self.result_schedule: Schedule | None = None
        self.template = QComboBox(self)
        self.template.addItems(templates)
        self.frequency = QComboBox(self)
        for f in Frequency:
            self.frequency.addItem(f.value, f)
        self.at_edit = QLineEdit(self)
        self.at_edit.setObjectName("at")
        self.cron_edit = QLineEdit(self)
        self.cron_edit.setObjectName("cron")
        self.cron_edit.setPlaceholderText("m h dom mon dow, e.g. 0 9 * * 1-5 (or 6 fields, seconds first)")
        self.timezone = QComboBox(self)
        self.timezone.setEditable(True)
        self.timezone.addItems(sorted(available_timezones()))
        self.inputs = QLineEdit("{}", self)
        self.inputs.setObjectName("inputs")
        self.priority = QSpinBox(self)
        self.priority.setRange(0, 100)
        self.priority.setValue(50)
        self.missed = QComboBox(self)
        for p, label in MISSED_LABELS.items():
            self.missed.addItem(label, p)
        self.missed_cap = QSpinBox(self)
        self.missed_cap.setRange(1, MAX_MISSED_CAP)
        self.missed_cap.setValue(10)
        self.problems = QLabel(self)
        self.problems.setObjectName("problems")
        self.problems.setWordWrap(True)
        self.preview = QLabel(self)
        self.preview.setObjectName("preview")
        self.preview.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Template:", self.template)
        form.addRow("Frequency:", self.frequency)
        form.addRow("At:", self.at_edit)
        form.addRow("Cron:", self.cron_edit)
        form.addRow("Time zone:", self.timezone)
        form.addRow("Inputs (JSON):", self.inputs)
        form.addRow("Priority:", self.priority)
        form.addRow("Missed runs:", self.missed)
        form.addRow("At most:", self.missed_cap)
        buttons = QDialogButtonBox(self)
        self.ok_button = buttons.addButton("Save" if schedule else "Add", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton("Back", QDialogButtonBox.ButtonRole.RejectRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.problems)
        layout.addWidget(self.preview)
        layout.addWidget(QLabel(f"Recorded in the audit log as <b>{who}</b>.", self))
        layout.addWidget(buttons)
        if schedule is not None:
            self.template.setCurrentText(schedule.template)
            self.frequency.setCurrentIndex(list(Frequency).index(schedule.frequency))
            self.at_edit.setText(schedule.at or "")
            self.cron_edit.setText(schedule.cron or "")
            self.timezone.setCurrentText(schedule.timezone)
            self.inputs.setText(json.dumps(schedule.inputs))
            self.priority.setValue(schedule.priority)
            self.missed.setCurrentIndex(list(MissedPolicy).index(schedule.missed))
            self.missed_cap.setValue(schedule.missed_cap)
        else:
            self.timezone.setCurrentText(local_zone().key)
            self.frequency.setCurrentIndex(list(Frequency).index(Frequency.DAILY))
            self.at_edit.setText("09:00")
        for signal in (self.at_edit.textChanged, self.cron_edit.textChanged, self.inputs.textChanged,
                       self.timezone.currentTextChanged, self.template.currentTextChanged):
            signal.connect(self.validate)
        for combo in (self.frequency, self.missed):
            combo.currentIndexChanged.connect(self.validate)
        self.priority.valueChanged.connect(self.validate)
        self.missed_cap.valueChanged.connect(self.validate)
        self.validate()

    def build(self) -> tuple[Schedule | None, list[str]]:
        """The schedule the fields describe, checked, or the problems (``field: message``)."""
        frequency = Frequency(self.frequency.currentData())
        try:
            inputs = json.loads(self.inputs.text() or "{}")
        except json.JSONDecodeError as exc:
            return None, [f"inputs: not JSON: {exc.msg} (column {exc.colno})"]
        s = Schedule(self.template.currentText(), frequency,
                     cron=self.cron_edit.text().strip() or None if frequency is Frequency.CRON else None,
                     at=self.at_edit.text().strip() or None if frequency is not Frequency.CRON else None,
                     timezone=self.timezone.currentText().strip(), inputs=inputs,
                     priority=self.priority.value(), missed=MissedPolicy(self.missed.currentData()),
                     missed_cap=self.missed_cap.value())
        if self.editing is not None:
            s.id = self.editing.id
        problems = [] if s.template else ["template: choose a published template"]
        try:
            check_schedule(s)
        except InputError as exc:
            problems += problems_of(exc)
        return (None, problems) if problems else (s, [])

    def validate(self) -> None:
        frequency = Frequency(self.frequency.currentData())
        is_cron = frequency is Frequency.CRON
        self.cron_edit.setEnabled(is_cron)
        self.at_edit.setEnabled(not is_cron)
        if not is_cron:
            self.at_edit.setPlaceholderText(AT_HINTS[frequency])
        self.missed_cap.setEnabled(MissedPolicy(self.missed.currentData()) is MissedPolicy.ALL)
        s, problems = self.build()
        self.problems.setText("\n".join(problems))
        self.problems.setVisible(bool(problems))
        self.problems.setStyleSheet(f"color: {current_theme().color('text_error').name()}")
        self.ok_button.setEnabled(s is not None)
        self.ok_button.setToolTip("\n".join(problems))
        if s is None:
            self.preview.setText("")
            return
        zone = ZoneInfo(s.timezone)
        times, t = [], self.now
        for _ in range(3):
            nxt = s.next_after(t)
            if nxt is None:
                break
            times.append(_when(nxt, zone))
            t = nxt
        self.preview.setText("Next runs: " + ", ".join(times) if times else "This schedule has no run ahead.")

    def accept(self) -> None:
        s, _ = self.build()
        if s is None:
            return
        self.result_schedule = s
        super().accept()


class BlackoutDialog(QDialog):
    """A blackout window: from, until, what happens to runs due inside it, and why."""

    def __init__(self, *, now: float, zone: ZoneInfo, who: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add blackout window")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(460)
        self.result_blackout: Blackout | None = None
        qzone = QTimeZone(zone.key.encode())
        start = QDateTime.fromSecsSinceEpoch(int(now // 3600 * 3600 + 3600), qzone)
        self.start = QDateTimeEdit(start, self)
        self.end = QDateTimeEdit(start.addSecs(2 * 3600), self)
        for edit in (self.start, self.end):
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.setTimeZone(qzone)
            edit.setCalendarPopup(True)
            edit.dateTimeChanged.connect(self.validate)
        self.policy = QComboBox(self)
        for p, label in BLACKOUT_LABELS.items():
            self.policy.addItem(label, p)
        self.reason = QLineEdit(self)
        self.reason.setPlaceholderText("e.g. maintenance of the liquid handlers")
        self.problems = QLabel(self)
        self.problems.setWordWrap(True)
        form = QFormLayout()
        form.addRow("From:", self.start)
        form.addRow("Until:", self.end)
        form.addRow("Runs due inside:", self.policy)
        form.addRow("Reason:", self.reason)
        buttons = QDialogButtonBox(self)
        self.ok_button = buttons.addButton("Add", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton("Back", QDialogButtonBox.ButtonRole.RejectRole)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"No schedule fires inside the window (times in {zone.key}).", self))
        layout.addLayout(form)
        layout.addWidget(self.problems)
        layout.addWidget(QLabel(f"Recorded in the audit log as <b>{who}</b>.", self))
        layout.addWidget(buttons)
        self.validate()

    def build(self) -> tuple[Blackout | None, list[str]]:
        b = Blackout(float(self.start.dateTime().toSecsSinceEpoch()), float(self.end.dateTime().toSecsSinceEpoch()),
                     BlackoutPolicy(self.policy.currentData()), self.reason.text().strip())
        try:
            return check_blackout(b), []
        except InputError as exc:
            return None, problems_of(exc)

    def validate(self) -> None:
        b, problems = self.build()
        self.problems.setText("\n".join(problems))
        self.problems.setStyleSheet(f"color: {current_theme().color('text_error').name()}")
        self.ok_button.setEnabled(b is not None)

    def accept(self) -> None:
        b, _ = self.build()
        if b is None:
            return
        self.result_blackout = b
        super().accept()


# --------------------------------------------------------------------------- calendar


class CalendarView(QWidget):
    """Seven days from today's midnight: a column per day, time downwards; a tick per planned
    run (hollow when a blackout moved it), blackout windows shaded, a line at now."""

    GUTTER = 40
    HEADER = 34

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("scheduleCalendar")
        self.setMinimumSize(QSize(420, 260))
        self.setMouseTracking(True)
        self.zone = ZoneInfo("UTC")
        self.start = 0.0
        self.now = 0.0
        self.occurrences: list[tuple[Schedule, float, bool]] = []
        self.blackouts: list[Blackout] = []
        self.colours: dict[str, QColor] = {}

    def set_data(self, start: float, now: float, zone: ZoneInfo, occurrences: list[tuple[Schedule, float, bool]],
                 blackouts: list[Blackout], colours: dict[str, QColor]) -> None:
        self.start, self.now, self.zone = start, now, zone
        self.occurrences, self.blackouts, self.colours = occurrences, blackouts, colours
        self.update()

    def day_starts(self) -> list[float]:
        """Epoch seconds of each day's local midnight (days may be 23 or 25 hours long)."""
        first = datetime.fromtimestamp(self.start, self.zone)
        return [(datetime(first.year, first.month, first.day, tzinfo=self.zone) + timedelta(days=d)).timestamp()
                for d in range(DAYS + 1)]

    def runs_per_day(self) -> list[int]:
        edges = self.day_starts()
        return [sum(1 for _, t, _ in self.occurrences if edges[d] <= t < edges[d + 1]) for d in range(DAYS)]

    def _geometry(self) -> tuple[float, float, float]:
        width = (self.width() - self.GUTTER - 4) / DAYS
        height = self.height() - self.HEADER - 4
        return width, height, float(self.HEADER)

    def _point(self, ts: float) -> QPointF | None:
        edges = self.day_starts()
        width, height, top = self._geometry()
        for d in range(DAYS):
            if edges[d] <= ts < edges[d + 1]:
                local = datetime.fromtimestamp(ts, self.zone)
                frac = (local.hour * 3600 + local.minute * 60 + local.second) / 86400
                return QPointF(self.GUTTER + d * width, top + frac * height)
        return None

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802
        theme = current_theme()
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), theme.color("chart_bg"))
        width, height, top = self._geometry()
        muted = theme.color("muted")
        if not self.start:  # not read yet
            painter.setPen(muted)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "Reading the schedules…")
            painter.end()
            return
        grid = theme.color("canvas_grid")
        edges = self.day_starts()
        small = QFont(self.font())
        small.setPointSizeF(max(7.0, small.pointSizeF() - 1))
        painter.setFont(small)
        counts = self.runs_per_day()
        for d in range(DAYS + 1):
            x = self.GUTTER + d * width
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(x, top), QPointF(x, top + height))
            if d < DAYS:
                day = datetime.fromtimestamp(edges[d], self.zone)
                painter.setPen(theme.color("chart_fg"))
                label = day.strftime("%a %d %b" if width >= 84 else "%a %d" if width >= 48 else "%d")
                painter.drawText(QRectF(x, 0, width, 17), Qt.AlignmentFlag.AlignCenter, label)
                painter.setPen(muted)
                painter.drawText(QRectF(x, 16, width, 16), Qt.AlignmentFlag.AlignCenter,
                                 f"{counts[d]} run{'s' if counts[d] != 1 else ''}" if width >= 48 else str(counts[d]))
        for h in range(0, 25, 3):
            y = top + h / 24 * height
            painter.setPen(QPen(grid, 1))
            painter.drawLine(QPointF(self.GUTTER, y), QPointF(self.GUTTER + DAYS * width, y))
            painter.setPen(muted)
            painter.drawText(QRectF(0, y - 8, self.GUTTER - 6, 16), Qt.AlignmentFlag.AlignRight, f"{h:02d}:00")
        shade = QColor(theme.color("warn"))
        shade.setAlpha(60)
        for b in self.blackouts:  # one rectangle per day the window covers
            for d in range(DAYS):
                lo, hi = max(b.start, edges[d]), min(b.end, edges[d + 1])
                if lo >= hi:
                    continue
                y0 = top + (lo - edges[d]) / (edges[d + 1] - edges[d]) * height
                y1 = top + (hi - edges[d]) / (edges[d + 1] - edges[d]) * height
                painter.fillRect(QRectF(self.GUTTER + d * width + 1, y0, width - 2, max(2.0, y1 - y0)), shade)
        for s, t, moved in self.occurrences:
            p = self._point(t)
            if p is None:
                continue
            colour = self.colours.get(s.id, theme.color("accent"))
            rect = QRectF(p.x() + 3, p.y() - 2, width - 6, 4)
            if moved:
                painter.setPen(QPen(colour, 1.5))
                painter.setBrush(Qt.BrushStyle.NoBrush)
                painter.drawRect(rect)
            else:
                painter.fillRect(rect, colour)
        now = self._point(self.now)
        if now is not None:
            painter.setPen(QPen(theme.color("bad"), 2))
            painter.drawLine(QPointF(now.x(), now.y()), QPointF(now.x() + width, now.y()))
        painter.end()

    def event(self, e: Any) -> bool:
        if e.type() == e.Type.ToolTip and isinstance(e, QHelpEvent):
            text = self.tooltip_at(e.pos().x(), e.pos().y())
            if text:
                QToolTip.showText(e.globalPos(), text, self)
            else:
                QToolTip.hideText()
            return True
        return super().event(e)

    def tooltip_at(self, x: float, y: float) -> str:
        """The runs planned within ±20 minutes of the point (x, y)."""
        width, height, top = self._geometry()
        d = int((x - self.GUTTER) // width) if width > 0 else -1
        if not 0 <= d < DAYS or y < top:
            return ""
        edges = self.day_starts()
        ts = edges[d] + (y - top) / height * (edges[d + 1] - edges[d])
        near = [(s, t, m) for s, t, m in self.occurrences if abs(t - ts) <= 1200]
        lines = [f"{datetime.fromtimestamp(t, self.zone):%H:%M} {s.template}" + (" (moved by a blackout)" if m else "")
                 for s, t, m in near[:12]]
        for b in self.blackouts:
            if b.start <= ts < b.end:
                lines.append(f"blackout until {datetime.fromtimestamp(b.end, self.zone):%a %H:%M}: {b.reason}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- panel


class SchedulesPanel(Panel):
    """The schedules, their 7-day calendar, blackout windows and (optionally) the forecast."""

    REFRESH_MS = 5000
    changed = Signal()
    """Emitted after the list was read again."""

    def __init__(self, runtime: RuntimeApi, bridge: Any, parent: QWidget | None = None, *,
                 forecast: Any = None, zone: ZoneInfo | None = None) -> None:
        super().__init__(runtime, bridge, parent)
        self.setObjectName("schedulesPanel")
        self.zone = zone or local_zone()
        self.who = os_user()
        self.user: User | None = None
        """The signed-in user (None: single-user mode); changes need the ``schedules`` role."""
        self._own_scheduler: Scheduler | None = None
        self.tasks = TaskRunner(self)
        self.tasks.finished.connect(self._on_task_done)
        self.dialog: QDialog | None = None
        self.schedules: list[Schedule] = []
        self._reading: asyncio.Task[Any] | None = None
        self._read_again = False
        self._select_after: str | None = None
        self._week: tuple[Any, list[tuple[Schedule, float, bool]]] | None = None

        self.toolbar = QToolBar(self)
        self.actions_by_key = {}
        self.tips: dict[str, str] = {}
        for key, text, tip in (("add", "Add…", "Add a schedule for a published template"),
                               ("edit", "Edit…", "Change the selected schedule"),
                               ("pause", "Pause", "Pause or resume the selected schedule"),
                               ("remove", "Remove", "Remove the selected schedule"),
                               ("blackout", "Blackout…", "Add a window in which no schedule fires"),
                               ("unblackout", "Remove blackout", "Remove the selected blackout window")):
            action = self.toolbar.addAction(text)
            action.setObjectName(f"schedule_{key}")
            action.setToolTip(tip)
            action.triggered.connect(lambda _checked=False, key=key: self.trigger(key))
            self.actions_by_key[key] = action
            self.tips[key] = tip
        self.message = QLabel("", self)
        self.message.setObjectName("scheduleMessage")
        self.message.setWordWrap(True)

        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setObjectName("schedulesTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._update_actions)
        self.table.doubleClicked.connect(lambda *_: self.trigger("edit"))

        self.calendar = CalendarView(self)
        self.blackout_list = QListWidget(self)
        self.blackout_list.setObjectName("blackouts")
        self.blackout_list.setMaximumHeight(90)
        self.blackout_list.itemSelectionChanged.connect(self._update_actions)
        self.forecast_table = QTableWidget(0, 4, self)
        self.forecast_table.setObjectName("forecastTable")
        self.forecast_table.setHorizontalHeaderLabels(("Run", "Template", "Done by (median)", "p10 – p90 / why not"))
        self.forecast_table.verticalHeader().hide()
        self.forecast_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.forecast_table.horizontalHeader().setStretchLastSection(True)
        self.forecast_label = QLabel("Forecast", self)
        self.forecast_label.setObjectName("forecastLabel")

        left = QWidget(self)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.table, 3)
        left_layout.addWidget(self.forecast_label)
        left_layout.addWidget(self.forecast_table, 2)
        right = QWidget(self)
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(QLabel(f"Next 7 days ({self.zone.key})", self))
        right_layout.addWidget(self.calendar, 1)
        right_layout.addWidget(QLabel("Blackout windows", self))
        right_layout.addWidget(self.blackout_list)
        self.split = split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        top = QHBoxLayout()
        top.addWidget(self.toolbar)
        top.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.message)
        layout.addWidget(split, 1)
        self.forecast_label.setVisible(False)
        self.forecast_table.setVisible(False)
        self.forecast = None
        self.set_forecast(forecast)
        self._update_actions()

    def set_forecast(self, forecast: Any) -> None:
        """Show the runs in flight with their ETAs from ``forecast`` (a core.forecast.Forecast)."""
        if self.forecast is not None:
            self.forecast.remove_listener(self._on_forecast)
        self.forecast = forecast
        self.forecast_label.setVisible(forecast is not None)
        self.forecast_table.setVisible(forecast is not None)
        if forecast is not None:
            forecast.add_listener(self._on_forecast)
            if forecast.result is not None:
                self._on_forecast(forecast.result)

    # ------------------------------------------------------------------ data

    @property
    def scheduler(self) -> Scheduler:
        """The runtime's running scheduler (its timer wakes on a change), else one of our own."""
        running = self.runtime.schedules
        if running is not None:
            return running
        if self._own_scheduler is None:
            self._own_scheduler = Scheduler(self.runtime)
        return self._own_scheduler

    def read(self) -> ScheduleView:
        """What the panel shows, read from the store (no widget touched: runs on a worker thread)."""
        scheduler = self.scheduler
        now = scheduler.clock.now()
        schedules = scheduler.entries()
        blackouts = scheduler.blackouts(ending_after=now - 86400)
        start = datetime.fromtimestamp(now, self.zone).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        end = (datetime.fromtimestamp(start, self.zone) + timedelta(days=DAYS)).timestamp()
        key = (start, tuple((x.id, x.next_run, x.enabled, x.frequency, x.cron, x.at, x.timezone, x.template) for x in schedules),
               tuple((b.id, b.start, b.end, b.policy) for b in blackouts))
        if self._week is None or self._week[0] != key:  # the week's slots only change with these
            self._week = (key, scheduler.occurrences(start, end))
        return ScheduleView(now, start, schedules, blackouts, [scheduler.due_at(x, blackouts) for x in schedules],
                            self._week[1])

    def refresh(self) -> None:
        """Read the schedules, the calendar's week and the blackout windows again, now."""
        self.show_view(self.read())

    def refresh_later(self) -> None:
        """Read on a worker thread (a week of a frequent cron is many slots), then show; one at a time."""
        if self._reading is not None and not self._reading.done():
            self._read_again = True
            return
        self.scheduler  # noqa: B018 - made here, on the GUI thread, if it is our own
        reading = asyncio.to_thread(self.read)
        try:
            self._reading = self.tasks.run(reading, READ_LABEL)
        except RuntimeError:  # no running event loop (a window being built): read now
            reading.close()
            self.refresh()

    def show_view(self, view: ScheduleView) -> None:
        """Fill the table, the calendar and the blackout list from ``view``."""
        self.schedules = view.schedules
        selected = self.selected_id()
        self.table.setRowCount(len(view.schedules))
        theme = current_theme()
        colours = {x.id: theme.series_color(i) for i, x in enumerate(view.schedules)}
        for row, (x, due) in enumerate(zip(view.schedules, view.due, strict=True)):
            moved = due is not None and x.next_run is not None and due != x.next_run
            state = "error" if x.last_error else ("active" if x.enabled else "paused")
            missed = MISSED_LABELS[x.missed] if x.missed is not MissedPolicy.ALL else f"Run all (≤ {x.missed_cap})"
            cells = (x.template, x.describe(), x.timezone,
                     _when(due, ZoneInfo(x.timezone)) + (" (moved by a blackout)" if moved else ""),
                     missed, state, _when(x.last_run, ZoneInfo(x.timezone)))
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, x.id)
                if col == 0:
                    item.setForeground(colours[x.id])
                if col == 5:
                    item.setToolTip(x.last_error or "")
                    if x.last_error:
                        item.setForeground(theme.color("text_error"))
                self.table.setItem(row, col, item)
            if x.id == selected:
                self.table.selectRow(row)
        self.calendar.set_data(view.start, view.now, self.zone, view.occurrences, view.blackouts, colours)
        self.blackout_list.clear()
        for b in view.blackouts:
            entry = QListWidgetItem(f"{_when(b.start, self.zone)} – {_when(b.end, self.zone)}: "
                                    f"{BLACKOUT_LABELS[b.policy].lower()}" + (f" — {b.reason}" if b.reason else ""))
            entry.setData(Qt.ItemDataRole.UserRole, b.id)
            self.blackout_list.addItem(entry)
        self._update_actions()
        self.changed.emit()

    def selected_id(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def select(self, schedule_id: str) -> bool:
        for row in range(self.table.rowCount()):
            item = self.table.item(row, 0)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == schedule_id:
                self.table.selectRow(row)
                return True
        return False

    def _selected(self) -> Schedule | None:
        sid = self.selected_id()
        return next((s for s in self.schedules if s.id == sid), None)

    def set_user(self, user: User | None) -> None:
        """Who is signed in (None: single-user mode): recorded as *who*; when their role may not
        change schedules, the toolbar's actions are disabled, the tooltip saying why."""
        self.user = user
        self.who = user.name if user is not None else os_user()
        self._update_actions()

    def refusal(self) -> str | None:
        """Why the signed-in user may not change schedules (None: they may)."""
        return refusal(self.user, "schedules") if self.user is not None else None

    def _update_actions(self) -> None:
        s = self._selected()
        refused = self.refusal()
        applies = {"add": True, "blackout": True, "edit": s is not None, "pause": s is not None,
                   "remove": s is not None, "unblackout": bool(self.blackout_list.selectedItems())}
        for key, action in self.actions_by_key.items():
            action.setEnabled(applies[key] and refused is None)
            action.setToolTip(refused or self.tips[key])
        self.actions_by_key["pause"].setText("Resume" if s is not None and not s.enabled else "Pause")

    # ------------------------------------------------------------------ actions

    def trigger(self, key: str) -> None:
        """Run a toolbar action: open its dialog, or act on the selected schedule."""
        if (refused := self.refusal()) is not None:  # a double-click asks to edit, whatever the role
            self._show_result(refused, error=True)
            return
        scheduler = self.scheduler
        now = scheduler.clock.now()
        if key in ("add", "edit"):
            editing = self._selected() if key == "edit" else None
            if key == "edit" and editing is None:
                return
            names = sorted(t.name for t in self.runtime.templates())
            dialog = ScheduleDialog(names, now=now, who=self.who, schedule=editing, parent=self)
            dialog.accepted.connect(lambda: self._save(dialog))
            self._open(dialog)
        elif key == "blackout":
            blackout = BlackoutDialog(now=now, zone=self.zone, who=self.who, parent=self)
            blackout.accepted.connect(lambda: self._add_blackout(blackout))
            self._open(blackout)
        elif key == "unblackout":
            items = self.blackout_list.selectedItems()
            if items:
                bid = items[0].data(Qt.ItemDataRole.UserRole)
                self.tasks.run(scheduler.remove_blackout(bid, who=self.who), "remove blackout")
        else:
            s = self._selected()
            if s is None:
                return
            if key == "pause":
                self.tasks.run(scheduler.set_enabled(s.id, not s.enabled, who=self.who),
                               "resume schedule" if not s.enabled else "pause schedule")
            elif key == "remove":
                self.tasks.run(scheduler.remove(s.id, who=self.who), "remove schedule")

    def _open(self, dialog: QDialog) -> None:
        if self.dialog is not None:
            self.dialog.close()
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.destroyed.connect(lambda *_: setattr(self, "dialog", None))
        self.dialog = dialog
        dialog.open()

    def _save(self, dialog: ScheduleDialog) -> None:
        s = dialog.result_schedule
        if s is None:
            return
        if dialog.editing is not None:
            self.tasks.run(self.scheduler.update(s, who=self.who), "edit schedule")
        else:
            self.tasks.run(self.scheduler.add(s, who=self.who), "add schedule")

    def _add_blackout(self, dialog: BlackoutDialog) -> None:
        if dialog.result_blackout is not None:
            self.tasks.run(self.scheduler.add_blackout(dialog.result_blackout, who=self.who), "add blackout")

    def _on_task_done(self, label: str, error: str | None, result: Any) -> None:
        if label == READ_LABEL:
            if isinstance(result, ScheduleView) and not self.is_shut_down:
                self.show_view(result)
                if self._select_after is not None:
                    self.select(self._select_after)
                    self._select_after = None
            elif error:
                self.message.setText(f"could not read the schedules: {error}")
            if self._read_again and not self.is_shut_down:  # something changed while reading
                self._read_again = False
                self.refresh_later()
            return
        self._show_result(f"{label}: {error}" if error else f"{label}: done", error=bool(error))
        if isinstance(result, Schedule):
            self._select_after = result.id
        if not self.is_shut_down:
            self.refresh_later()

    def _show_result(self, text: str, *, error: bool) -> None:
        self.message.setText(text)
        self.message.setStyleSheet(f"color: {current_theme().color('text_error' if error else 'text_ok').name()}")

    # ------------------------------------------------------------------ forecast

    def _on_forecast(self, _result: Any) -> None:
        """A new forecast (called on the event loop's thread, once it is the forecast's result):
        shown now, or when the panel is."""
        self.when_shown(self._show_forecast)

    def _show_forecast(self) -> None:
        result = self.forecast.result if self.forecast is not None else None
        if result is None:
            return
        rows = sorted(result.runs.values(), key=lambda r: (not r.ok, r.p50))[:200]
        self.forecast_table.setRowCount(len(rows))
        now, zone = result.at, self.zone
        for i, r in enumerate(rows):
            name = r.run_id
            if r.scheduled:  # scheduled:<id>@<epoch>: a run a schedule will start
                name = f"scheduled {datetime.fromtimestamp(float(r.run_id.rpartition('@')[2]), zone):%a %H:%M}"
            if r.ok:
                band = (f"{datetime.fromtimestamp(r.p10, zone):%H:%M:%S} – "
                        f"{datetime.fromtimestamp(r.p90, zone):%H:%M:%S}")
                cells = (name, r.template, eta_text(r.p50, now, zone), band)
            else:
                cells = (name, r.template, "—", r.problem or "")
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if not r.ok:
                    item.setForeground(current_theme().color("text_warn"))
                self.forecast_table.setItem(i, col, item)
        self.forecast_table.resizeColumnsToContents()
        took = f" · computed in {result.seconds * 1000:.0f} ms" if result.seconds else ""
        self.forecast_label.setText(f"Forecast: {len(result.runs)} runs in flight, "
                                    f"{result.samples} samples{took}")

    # ------------------------------------------------------------------ Panel hooks

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        # side by side when there is room, the calendar under the list in a narrow dock
        wide = event.size().width() >= NARROW
        orientation = Qt.Orientation.Horizontal if wide else Qt.Orientation.Vertical
        if self.split.orientation() != orientation:
            self.split.setOrientation(orientation)

    def tick(self) -> None:
        self.refresh_later()

    def on_shown(self) -> None:
        self.refresh_later()

    def apply_theme(self, theme: Theme) -> None:
        self.calendar.update()
        if self.schedules:
            self.refresh_later()

    def on_shutdown(self) -> None:
        self.tasks.cancel_all()
        if self.forecast is not None:
            self.forecast.remove_listener(self._on_forecast)
        if self.dialog is not None:
            self.dialog.close()
