"""Time travel in the window: a slider and a "go to" field over the transition log.

:class:`TimeTravel` holds the moment shown. Its :attr:`TimeTravel.moment_changed` signal is the
read-only hook of every panel that shows the workcell: it carries a :class:`core.timetravel.Moment`
(show that moment, read only, with :class:`PastBanner`) or ``None`` (back to live). Robots and
Dashboard follow it; any other panel adopts it by connecting a ``show_moment(moment)`` slot.

Moments are read on the store's reader threads (``await machine.moment``), never on the loop. A
slider dragged faster than moments load asks only for the latest position: one read runs at a
time, and the position asked while it ran is read next (the others are skipped). "Now" drops
whatever is in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QDateTime, QObject, Qt, Signal, Slot
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QDateTimeEdit,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QToolBar,
    QWidget,
)

from core.dispatcher import InstrumentView
from core.errors import InputError, LabconsoleError
from core.orders import ModuleStatus
from core.timetravel import ExportReport, Moment, TimeMachine, parse_moment
from panels.theme import keep_styled

log = logging.getLogger(__name__)
SLIDER_STEPS = 1000
REFRESH_EVERY = 600.0
"""Seconds between two snapshot refreshes while the past is shown (new rows since are replayed)."""


def when(at: float) -> str:
    """A moment as people read it: local date and time to the second."""
    return datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def past_views(views: Sequence[InstrumentView], moment: Moment) -> list[InstrumentView]:
    """The instruments as they were at ``moment``: status, detail and running steps from the log;
    what the log does not keep (names, capabilities, capacity) from now. Counters and
    utilisation are not kept for the past and read zero."""
    out = []
    for v in views:
        then = moment.instruments.get(v.id)
        if then is None or then.status is None:
            status, detail = ModuleStatus.Offline, "no record at this moment"
        else:
            try:
                status = ModuleStatus[then.status]
            except KeyError:
                status = ModuleStatus.Offline
            detail = then.detail or ""
        out.append(dataclasses.replace(v, status=status, detail=detail, running=then.order_ids if then else (),
                                       draining=False, heartbeat_age=None, utilisation=0.0, completed=0,
                                       failed=0))
    return out


class PastBanner(QLabel):
    """The banner a panel shows while it shows the past (hidden when live)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("pastBanner")
        self.setWordWrap(True)
        keep_styled(self, lambda t: t.css("banner_warn_fg", "banner_warn_bg",
                                          "padding: 4px 8px; font-weight: 600; border-radius: 3px;"))
        self.hide()

    def show_moment(self, moment: Moment | None) -> None:
        if moment is None:
            self.hide()
            return
        text = f"Showing {when(moment.at)} — read only. Press Now (time bar) to return to live."
        note = moment.archive_note
        self.setText(f"{text}\n{note[0].upper()}{note[1:]}." if note else text)
        self.show()


class TimeTravel(QObject):
    """The moment the window shows: None (live) or a past :class:`Moment`."""

    moment_changed = Signal(object)
    """A :class:`Moment` to show read only, or None: live again."""
    failed = Signal(str)
    """A moment could not be read (the message says why)."""

    def __init__(self, store: Any, instruments: Sequence[str] | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.machine = TimeMachine(store, instruments=instruments)
        self.moment: Moment | None = None
        self.requested: float | None = None
        """The moment asked for last (None: live)."""
        self._pending: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[Any] | None = None
        self._refreshed_at = -1e18
        self._generation = 0
        self.loads = 0
        """Moments read so far (tests wait on it)."""

    @property
    def live(self) -> bool:
        return self.requested is None

    def go_to(self, at: float) -> None:
        """Show the workcell at ``at`` (epoch seconds); read off the loop, the latest ask wins."""
        self.requested = float(at)
        self._pending = float(at)
        self._refresh_snapshots()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._load(self._generation), name="time travel")

    def now(self) -> None:
        """Back to live: drop what is in flight and tell the panels."""
        self._generation += 1
        self.requested = self._pending = None
        self.moment = None
        self.moment_changed.emit(None)

    def _refresh_snapshots(self) -> None:
        if self._refresh is not None and not self._refresh.done():
            return
        if time.monotonic() - self._refreshed_at < REFRESH_EVERY:
            return
        self._refreshed_at = time.monotonic()
        self._refresh = asyncio.get_running_loop().create_task(self._run_refresh(), name="time travel snapshots")

    async def _run_refresh(self) -> None:
        try:
            report = await self.machine.refresh()
            log.info("time travel: %d snapshots built, %d dropped in %.1f s", report.built, report.dropped,
                     report.seconds)
        except LabconsoleError as exc:
            log.warning("time travel snapshots not refreshed: %s", exc)

    async def _load(self, generation: int) -> None:
        while self._pending is not None and generation == self._generation:
            at, self._pending = self._pending, None
            try:
                moment = await self.machine.moment(at, previous=self.moment)
            except (LabconsoleError, OSError, ValueError) as exc:
                self.failed.emit(f"cannot show {when(at)}: {exc}")
                return
            if generation != self._generation:
                return
            self.moment = moment
            self.loads += 1
            self.moment_changed.emit(moment)

    async def reach(self) -> tuple[float, float] | None:
        return await self.machine.reach()

    async def export(self, path: str | Path, start: float, end: float) -> ExportReport:
        return await self.machine.export(path, start, end)

    def shutdown(self) -> None:
        self._generation += 1
        for task in (self._task, self._refresh):
            if task is not None and not task.done():
                task.cancel()


class ExportDialog(QDialog):
    """Choose a period and a file; the CSV holds its transitions and operator actions."""

    def __init__(self, start: float, end: float, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export a period")
        self.setObjectName("timeTravelExport")
        self.setMinimumWidth(520)  # room for the file's path
        self.start_edit = QDateTimeEdit(QDateTime.fromSecsSinceEpoch(int(start)), self)
        self.end_edit = QDateTimeEdit(QDateTime.fromSecsSinceEpoch(int(end)), self)
        for edit in (self.start_edit, self.end_edit):
            edit.setDisplayFormat("yyyy-MM-dd HH:mm:ss")
            edit.setCalendarPopup(True)
        self.path_edit = QLineEdit(str(Path.home() / f"labconsole-{datetime.fromtimestamp(end):%Y%m%d-%H%M}.csv"),
                                   self)
        browse = QPushButton("Choose…", self)
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(browse)
        self.error = QLabel(self)
        self.error.setObjectName("exportError")
        self.error.setWordWrap(True)
        keep_styled(self.error, lambda t: t.css("text_error"))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel,
                                   parent=self)
        buttons.accepted.connect(self._check)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("From", self.start_edit)
        form.addRow("To", self.end_edit)
        form.addRow("File", row)
        form.addRow(self.error)
        form.addRow(buttons)

    def period(self) -> tuple[float, float]:
        return (self.start_edit.dateTime().toSecsSinceEpoch() * 1.0,
                self.end_edit.dateTime().toSecsSinceEpoch() + 0.999)

    @Slot()
    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export to", self.path_edit.text(), "CSV files (*.csv)")
        if path:
            self.path_edit.setText(path)

    @Slot()
    def _check(self) -> None:
        start, end = self.period()
        if end < start:
            self.error.setText("To: the period ends before it starts")
            return
        if not self.path_edit.text().strip():
            self.error.setText("File: choose where to save the CSV")
            return
        self.accept()


class TimeTravelBar(QToolBar):
    """Slider, "go to" field, Now and Export over a :class:`TimeTravel`."""

    def __init__(self, travel: TimeTravel, clock: Any = None, parent: QWidget | None = None) -> None:
        super().__init__("Time travel", parent)
        self.setObjectName("timeTravelBar")
        self.travel = travel
        self.clock = clock
        self.first: float | None = None
        self.last: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.export_dialog: ExportDialog | None = None
        self.last_export: ExportReport | None = None

        self.mode = QLabel("LIVE", self)
        self.mode.setObjectName("timeTravelMode")
        self.mode.setMinimumWidth(60)
        self.mode.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.slider = QSlider(Qt.Orientation.Horizontal, self)
        self.slider.setObjectName("timeTravelSlider")
        self.slider.setRange(0, SLIDER_STEPS)
        self.slider.setValue(SLIDER_STEPS)
        self.slider.setMinimumWidth(160)
        self.slider.setToolTip("Drag back over the log to see the workcell as it was (read only)")
        self.slider.sliderMoved.connect(self._on_slider)
        self.slider.actionTriggered.connect(self._on_slider_action)
        self.field = QLineEdit(self)
        self.field.setObjectName("timeTravelGoTo")
        self.field.setPlaceholderText("go to: 03:10, 2026-11-27 03:10 or -2h")
        self.field.setClearButtonEnabled(True)
        self.field.setMaximumWidth(260)
        self.field.setToolTip("A time (03:10: the last one), a date and time, or back from now (-30m, -2h, -1d)")
        self.field.returnPressed.connect(self.go_to_text)
        self.now_button = QPushButton("Now", self)
        self.now_button.setObjectName("timeTravelNow")
        self.now_button.setToolTip("Back to the live workcell")
        self.now_button.clicked.connect(self.now)
        self.export_button = QPushButton("Export…", self)
        self.export_button.setObjectName("timeTravelExportButton")
        self.export_button.setToolTip("Save the transitions and operator actions of a period as CSV")
        self.export_button.clicked.connect(self.open_export)
        self.message = QLabel(self)
        self.message.setObjectName("timeTravelMessage")
        self.focus_action = QAction("Go to a &moment…", self)
        self.focus_action.setObjectName("timeTravelGoToAction")
        self.focus_action.setShortcut(QKeySequence("Ctrl+G"))
        self.focus_action.setToolTip("Type a past moment to see the workcell then (read only)")
        self.focus_action.triggered.connect(self.focus_field)
        for w in (self.mode, self.slider, self.field, self.now_button, self.export_button, self.message):
            self.addWidget(w)
        travel.moment_changed.connect(self._on_moment)
        travel.failed.connect(self._on_failed)
        self._style_mode(False)

    def _now(self) -> float:
        return float(self.clock.now()) if self.clock is not None else time.time()

    def _style_mode(self, past: bool) -> None:
        keep_styled(self.mode, (lambda t: t.css("banner_warn_fg", "banner_warn_bg",
                                                "padding: 2px 6px; font-weight: 700;")) if past
                    else (lambda t: t.css("banner_ok_fg", "banner_ok_bg", "padding: 2px 6px; font-weight: 700;")))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def update_reach(self) -> None:
        reach = await self.travel.reach()
        self.first = reach[0] if reach else None
        self.last = self._now()

    def time_at(self, value: int) -> float | None:
        if self.first is None or self.last is None:
            return None
        return self.first + (self.last - self.first) * value / SLIDER_STEPS

    @Slot(int)
    def _on_slider(self, value: int) -> None:
        if self.first is None:
            self._spawn(self._reach_then(value))
            return
        self._slide(value)

    @Slot(int)
    def _on_slider_action(self, _action: int) -> None:
        # keys and clicks on the groove move the slider without sliderMoved
        if not self.slider.isSliderDown():
            self._on_slider(self.slider.sliderPosition())

    async def _reach_then(self, value: int) -> None:
        await self.update_reach()
        self._slide(value)

    def _slide(self, value: int) -> None:
        if value >= SLIDER_STEPS:
            self.now()
            return
        at = self.time_at(value)
        if at is not None:
            self.travel.go_to(at)

    @Slot()
    def focus_field(self) -> None:
        self.show()
        self.field.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.field.selectAll()

    @Slot()
    def go_to_text(self) -> None:
        try:
            at = parse_moment(self.field.text(), now=self._now())
        except InputError as exc:
            self._say(str(exc), error=True)
            return
        if at >= self._now():
            self.now()
            return
        self._say("")
        self.go_to(at)

    def go_to(self, at: float) -> None:
        """Show ``at`` and put the slider there."""
        self.travel.go_to(at)
        self._spawn(self._place(at))

    async def _place(self, at: float) -> None:
        await self.update_reach()
        if self.first is not None and self.last is not None and self.last > self.first:
            value = round((at - self.first) / (self.last - self.first) * SLIDER_STEPS)
            self.slider.blockSignals(True)
            self.slider.setValue(max(0, min(SLIDER_STEPS - 1, value)))
            self.slider.blockSignals(False)

    @Slot()
    def now(self) -> None:
        self.travel.now()
        self.slider.blockSignals(True)
        self.slider.setValue(SLIDER_STEPS)
        self.slider.blockSignals(False)
        self.field.clear()
        self._say("")

    @Slot(object)
    def _on_moment(self, moment: Moment | None) -> None:
        if moment is None:
            self.mode.setText("LIVE")
            self.mode.setToolTip("The workcell now")
            self._style_mode(False)
            return
        self.mode.setText(f"PAST · {when(moment.at)}")
        self.mode.setToolTip(f"The workcell at {when(moment.at)}, read only: {len(moment.open_orders):,} open "
                             f"orders, rebuilt in {moment.seconds * 1000:.0f} ms ({moment.replayed:,} transitions "
                             "replayed)")
        self._style_mode(True)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self._say(message, error=True)

    def _say(self, text: str, *, error: bool = False) -> None:
        self.message.setText(text.splitlines()[-1].strip() if text else "")
        self.message.setToolTip(text)
        keep_styled(self.message, lambda t: t.css("text_error" if error else "muted"))

    @Slot()
    def open_export(self) -> ExportDialog:
        end = self.travel.moment.at if self.travel.moment is not None else self._now()
        dialog = ExportDialog(end - 3600, end, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self._spawn(self._export(dialog.path_edit.text(), *dialog.period())))
        dialog.finished.connect(self._forget_export)
        self.export_dialog = dialog
        dialog.open()
        return dialog

    @Slot()
    def _forget_export(self) -> None:
        self.export_dialog = None

    async def _export(self, path: str, start: float, end: float) -> None:
        try:
            report = await self.travel.export(path, start, end)
        except (LabconsoleError, OSError) as exc:
            self._say(f"export failed: {exc}", error=True)
            return
        self.last_export = report
        self._say(f"exported {report.transitions:,} transitions and {report.actions:,} actions to {report.path}")

    def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.travel.shutdown()
