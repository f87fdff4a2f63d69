"""Workcell timeline: every instrument's planned occupancy for the next hours, from the forecast.

One lane per instrument; a line marks now. Solid bars are steps running now (from their actual
start), light dashed ones the steps the forecast places there (median start and end of its
plays). The view spans a little of the past and ``hours`` ahead; it is painted with QPainter
from a flat list of bars (a forecast of 500 runs is about 2,000 bars: only those in view are
drawn), and follows each new forecast (:meth:`TimelinePanel.set_forecast`, called on the loop
by :class:`core.forecast.Forecast` listeners) and the clock (the now-line moves every tick).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Slot
from PySide6.QtGui import QColor, QFont, QHelpEvent, QPainter, QPalette, QPen
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from core.forecast import ForecastResult
from core.orders import OrderStatus
from panels.base import Panel
from panels.style import status_color

LANE = 26
AXIS = 22
LABEL = 130
PAST = 600.0
"""Seconds of the past shown left of the now-line."""
HOURS = (1, 2, 4, 8)


@dataclass(frozen=True, slots=True)
class Bar:
    instrument: str
    start: float
    end: float
    run_id: str
    step: str
    template: str
    running: bool


def bars_from(result: ForecastResult | None) -> list[Bar]:
    """The steps the forecast places on instruments, running ones first, by start."""
    if result is None:
        return []
    out = [Bar(plan.instrument, plan.start, plan.end, eta.run_id, step, eta.template, plan.running)
           for eta in result.runs.values() if eta.ok for step, plan in eta.plan.items()
           if plan.instrument is not None and plan.end > plan.start]
    out.sort(key=lambda b: (not b.running, b.start))
    return out


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M")


class TimelineCanvas(QWidget):
    """The lanes, the bars and the now-line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("timelineCanvas")
        self.setMouseTracking(True)
        self.instruments: list[str] = []
        self.bars: list[Bar] = []
        self._by_lane: dict[str, list[Bar]] = {}
        self.now = time.time()
        self.hours = 4
        self.painted_bars = 0
        """Bars drawn by the last paint (those in view)."""

    def set_data(self, instruments: Sequence[str], bars: Sequence[Bar], now: float) -> None:
        self.instruments = list(dict.fromkeys([*instruments, *(b.instrument for b in bars)]))
        self.bars = list(bars)
        self._by_lane = {}
        for b in self.bars:
            self._by_lane.setdefault(b.instrument, []).append(b)
        self.now = now
        self.updateGeometry()
        self.update()

    def set_now(self, now: float) -> None:
        self.now = now
        self.update()

    def span(self) -> tuple[float, float]:
        return self.now - PAST, self.now + self.hours * 3600.0

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(600, AXIS + LANE * max(1, len(self.instruments)) + 4)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(240, AXIS + LANE * max(1, len(self.instruments)) + 4)

    def _x(self, t: float) -> float:
        t0, t1 = self.span()
        width = max(10, self.width() - LABEL - 6)
        return LABEL + (t - t0) / (t1 - t0) * width

    def paintEvent(self, _event: object) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.Text)
        muted = pal.color(QPalette.ColorRole.PlaceholderText)
        grid = QColor(pal.color(QPalette.ColorRole.Mid))
        grid.setAlpha(70)
        alt = QColor(pal.color(QPalette.ColorRole.AlternateBase))
        t0, t1 = self.span()
        right = self.width() - 6
        small = QFont(self.font())
        small.setPointSizeF(max(6.5, small.pointSizeF() * 0.85))
        if not self.instruments:
            p.setPen(muted)
            p.drawText(self.rect(), int(Qt.AlignmentFlag.AlignCenter), "No instruments: no workcell is connected")
            p.end()
            return
        # lanes
        fm = self.fontMetrics()
        for i, inst in enumerate(self.instruments):
            top = AXIS + i * LANE
            if i % 2:
                p.fillRect(QRectF(0, top, self.width(), LANE), alt)
            p.setPen(text)
            p.drawText(QRectF(6, top, LABEL - 10, LANE), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                       fm.elidedText(inst, Qt.TextElideMode.ElideRight, LABEL - 12))
        # axis: a tick every 15, 30 or 60 minutes, on clock times
        p.setFont(small)
        step = 900.0 if self.hours <= 2 else 1800.0 if self.hours <= 4 else 3600.0
        tick = (int(t0 // step) + 1) * step
        bottom = AXIS + LANE * len(self.instruments)
        now_x = self._x(self.now)
        label_width = p.fontMetrics().horizontalAdvance("00:00") + 4
        while tick < t1:
            x = self._x(tick)
            p.setPen(grid)
            p.drawLine(QPointF(x, AXIS - 4), QPointF(x, bottom))
            if not (now_x - label_width - 16 < x < now_x + 18):  # clear of the "now" label
                p.setPen(muted)
                p.drawText(QRectF(x + 2, 0, 60, AXIS - 4),
                           int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), _clock(tick))
            tick += step
        # bars: gathered per kind and drawn in one call each (no antialiasing for these
        # axis-aligned rectangles); captions only on bars wide enough to hold one
        running_colour = status_color(OrderStatus.Running)
        planned_colour = status_color(OrderStatus.Scheduled)
        running_rects: list[QRectF] = []
        planned_rects: list[QRectF] = []
        outlined: list[QRectF] = []
        captions: list[tuple[QRectF, str, bool]] = []
        min_caption = fm.horizontalAdvance("xxxx")
        for i, inst in enumerate(self.instruments):
            top = AXIS + i * LANE
            for b in self._by_lane.get(inst, ()):
                if b.end < t0 or b.start > t1:
                    continue
                x0, x1 = max(LABEL, self._x(b.start)), min(right, self._x(b.end))
                rect = QRectF(x0, top + 4, max(2.0, x1 - x0), LANE - 8)
                (running_rects if b.running else planned_rects).append(rect)
                if not b.running and rect.width() > 6:
                    outlined.append(rect)
                if rect.width() > min_caption:
                    captions.append((rect, f"{b.step} · {b.run_id}", b.running))
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        fill = QColor(planned_colour)
        fill.setAlpha(70)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(fill)
        p.drawRects(planned_rects)
        p.setBrush(running_colour)
        p.drawRects(running_rects)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.setPen(QPen(planned_colour, 1, Qt.PenStyle.DashLine))
        p.drawRects(outlined)
        p.setFont(self.font())
        for rect, caption, running in captions:
            p.setPen(QColor("white") if running else text)
            p.drawText(rect.adjusted(4, 0, -2, 0), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                       fm.elidedText(caption, Qt.TextElideMode.ElideRight, int(rect.width()) - 6))
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        drawn = len(running_rects) + len(planned_rects)
        self.painted_bars = drawn
        # now-line over everything
        x = self._x(self.now)
        p.setPen(QPen(status_color(OrderStatus.Error), 2))
        p.drawLine(QPointF(x, AXIS - 6), QPointF(x, bottom))
        p.setFont(small)
        p.drawText(QRectF(x - 40, 0, 80, AXIS - 6), int(Qt.AlignmentFlag.AlignCenter), "now")
        p.end()

    def bar_at(self, pos: QPointF) -> Bar | None:
        i = int((pos.y() - AXIS) // LANE)
        if pos.y() < AXIS or not 0 <= i < len(self.instruments):
            return None
        for b in self._by_lane.get(self.instruments[i], ()):
            if self._x(b.start) - 1 <= pos.x() <= self._x(b.end) + 1:
                return b
        return None

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            b = self.bar_at(QPointF(event.pos()))
            if b is None:
                QToolTip.hideText()
            else:
                what = "running since" if b.running else "forecast from"
                QToolTip.showText(event.globalPos(), f"{b.template} {b.run_id}: step {b.step} on {b.instrument}\n"
                                  f"{what} {datetime.fromtimestamp(b.start):%H:%M:%S} to "
                                  f"{datetime.fromtimestamp(b.end):%H:%M:%S} (median)", self)
            return True
        return super().event(event)


class TimelinePanel(Panel):
    """The workcell's planned occupancy for the next hours (see the module docstring)."""

    REFRESH_MS = 1000

    def __init__(self, runtime: Any, bridge: Any, parent: QWidget | None = None) -> None:
        super().__init__(runtime, bridge, parent)
        self.result: ForecastResult | None = None
        self.summary = QLabel("No forecast yet: it is made once the console has loaded the orders.", self)
        self.summary.setObjectName("timelineSummary")
        self.summary.setWordWrap(True)
        self.hours = QComboBox(self)
        self.hours.setObjectName("timelineHours")
        for h in HOURS:
            self.hours.addItem(f"next {h} h", h)
        self.hours.setCurrentIndex(HOURS.index(4))
        self.hours.setToolTip("How far ahead the timeline looks")
        self.hours.currentIndexChanged.connect(self._on_hours)
        legend = QLabel("▮ running  ▯ forecast (median)  │ now", self)
        legend.setObjectName("timelineLegend")
        self.canvas = TimelineCanvas(self)
        self.canvas.hours = 4
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.canvas)
        top = QHBoxLayout()
        top.addWidget(legend, 1)
        top.addWidget(self.hours)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 6)
        layout.addWidget(self.summary)
        layout.addLayout(top)
        layout.addWidget(scroll, 1)
        self._show()

    def _now(self) -> float:
        clock = getattr(self.runtime, "clock", None)
        return float(clock.now()) if clock is not None else time.time()

    def _instrument_ids(self) -> list[str]:
        try:
            return [v.id for v in self.runtime.instruments()]
        except AttributeError:
            return []

    def set_forecast(self, result: ForecastResult) -> None:
        """Show a new forecast (a :class:`core.forecast.Forecast` listener)."""
        self.result = result
        self.when_shown(self._show)

    def _show(self) -> None:
        bars = bars_from(self.result)
        self.canvas.set_data(self._instrument_ids(), bars, self._now())
        if self.result is None:
            return
        ahead = self._now() + self.canvas.hours * 3600.0
        shown = sum(1 for b in bars if b.start <= ahead)
        lacking = sum(1 for e in self.result.runs.values() if not e.ok)
        self.summary.setText(
            f"{sum(b.running for b in bars)} running, {shown - sum(b.running for b in bars)} steps forecast in the "
            f"next {self.canvas.hours} h · {len(self.result.runs)} runs · forecast of "
            f"{datetime.fromtimestamp(self.result.at):%H:%M:%S} ({self.result.seconds * 1000:.0f} ms)"
            + (f" · {lacking} cannot finish (see Jobs)" if lacking else ""))

    @Slot(int)
    def _on_hours(self, _index: int) -> None:
        self.canvas.hours = int(self.hours.currentData())
        self._show()

    def tick(self) -> None:
        self.canvas.set_now(self._now())
