"""The run's steps as a small live timeline (Gantt) with their dependencies drawn as arrows.

One lane per step, in template order: a glyph and the step's name on the left, a bar from start
to end (or to now while it runs) in the status colour, an arrow from each dependency's end to
the step's start. Steps that have not started are dashed outlines placed after their
dependencies. The bar of a running step fills with the instrument's progress report.

:class:`GanttStep` is the plain description the Detail panel builds, either from the engine's
run (step ids, engine statuses, dependencies from the template) or, for orders the engine does
not run, from the parent order's child orders (``runAfterIdentifier`` as dependencies).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from PySide6.QtCore import QEvent, QPointF, QRect, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QHelpEvent,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
)
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from core.orders import OrderStatus
from panels.dialogs import STEP_STATUS_GLYPH
from panels.jobs_model import format_duration, format_full_time
from panels.style import status_color

LANE = 24
AXIS = 20
LABEL_MAX = 190


@dataclass
class GanttStep:
    """One step of a run as the timeline shows it."""

    key: str
    """Step id (engine runs) or order id."""
    label: str
    order_id: str
    status: OrderStatus
    """Colour and badge."""
    state: str = ""
    """Finer engine status (queued, retrying, skipped ...) shown as the glyph; empty: from status."""
    started: float | None = None
    ended: float | None = None
    depends_on: list[str] = field(default_factory=list)
    instrument: str | None = None
    attempt: int = 0
    error: str | None = None
    kind: str = ""
    estimate: float | None = None
    """Expected duration in seconds (for the outline of a step not started yet)."""
    planned: tuple[float, float] | None = None
    """Forecast start and end (median of the forecast's plays) of a step not started yet: its
    outline is drawn there (a forward Gantt) instead of chained after its dependencies."""


_GLYPH_BY_STATUS = {OrderStatus.Created: "○", OrderStatus.Scheduled: "◷", OrderStatus.Running: "▶",
                    OrderStatus.Paused: "‖", OrderStatus.Error: "✕", OrderStatus.Complete: "✓",
                    OrderStatus.Canceled: "⊘"}


def glyph(step: GanttStep) -> str:
    return STEP_STATUS_GLYPH.get(step.state) or _GLYPH_BY_STATUS.get(step.status, "·")


class StepsTimeline(QWidget):
    """Paints :class:`GanttStep` lanes; ``step_clicked`` carries the clicked step's order id."""

    step_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.steps: list[GanttStep] = []
        self.now = 0.0
        self.highlight: str | None = None
        self.progress: dict[str, float] = {}
        self.eta: tuple[float, float, float] | None = None
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setMinimumWidth(160)
        self._bars: list[tuple[QRectF, GanttStep]] = []

    # ------------------------------------------------------------------ data

    def set_steps(self, steps: Sequence[GanttStep], now: float, highlight: str | None = None,
                  eta: tuple[float, float, float] | None = None) -> None:
        """``eta``: the run's forecast completion (p10, median, p90), drawn as a band."""
        self.eta = eta
        self.steps = list(steps)
        self.now = now
        self.highlight = highlight
        self.progress = {k: v for k, v in self.progress.items() if any(s.order_id == k for s in steps)}
        self.updateGeometry()
        self.update()

    def set_now(self, now: float) -> None:
        self.now = now
        self.update()

    def set_progress(self, order_id: str, fraction: float) -> None:
        self.progress[order_id] = max(0.0, min(1.0, fraction))
        self.update()

    @property
    def running(self) -> bool:
        return any(s.started is not None and s.ended is None and s.status is OrderStatus.Running
                   for s in self.steps)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(420, AXIS + LANE * max(1, len(self.steps)) + 6)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(160, AXIS + LANE * max(1, len(self.steps)) + 6)

    # ------------------------------------------------------------------ geometry

    def _times(self) -> tuple[dict[str, tuple[float, float]], float, float]:
        """Each step's (start, end) in time — outlines of steps to come chained after their
        dependencies — and the span (t0, t1) that shows them all."""
        starts = [s.started for s in self.steps if s.started is not None]
        ends = [s.ended if s.ended is not None else max(self.now, s.started or 0.0)
                for s in self.steps if s.started is not None]
        t0 = min(starts) if starts else self.now
        known = max(ends) if ends else t0
        default = max(30.0, (known - t0) * 0.15)
        times: dict[str, tuple[float, float]] = {}
        for s in self.steps:  # template order: dependencies come first
            if s.started is not None:
                end = s.ended if s.ended is not None else max(self.now, s.started)
                times[s.key] = (s.started, end)
            elif s.planned is not None:
                times[s.key] = s.planned
            else:
                after = [times[d][1] for d in s.depends_on if d in times]
                start = max(after) if after else max(t0, min(self.now, known))
                times[s.key] = (start, start + (s.estimate or default))
        t1 = max([t0 + 1.0] + [end for _start, end in times.values()]
                 + ([self.eta[2]] if self.eta is not None else []))
        t0 = min([t0] + [start for start, _end in times.values()])
        return times, t0, t1

    def _label_width(self) -> int:
        fm = self.fontMetrics()
        widest = max((fm.horizontalAdvance(f"{glyph(s)}  {s.label}") for s in self.steps), default=60)
        return min(LABEL_MAX, max(70, widest + 14), int(self.width() * 0.42))

    # ------------------------------------------------------------------ painting

    def paintEvent(self, _event: object) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        text = pal.color(QPalette.ColorRole.Text)
        muted = pal.color(QPalette.ColorRole.PlaceholderText)
        grid = QColor(pal.color(QPalette.ColorRole.Mid))
        grid.setAlpha(70)
        if not self.steps:
            p.setPen(muted)
            p.drawText(self.rect(), int(Qt.AlignmentFlag.AlignCenter), "No steps")
            return
        left = self._label_width()
        right = self.width() - 8
        width = max(10, right - left)
        times, t0, t1 = self._times()
        t1 += (t1 - t0) * 0.02  # a little air after the last bar
        scale = width / (t1 - t0)

        def x(t: float) -> float:
            return left + (t - t0) * scale

        # axis: ticks at round intervals, relative to the first start
        p.setPen(muted)
        small = QFont(self.font())
        small.setPointSizeF(max(6.5, small.pointSizeF() * 0.85))
        p.setFont(small)
        step = _tick_step((t1 - t0) / max(1, width // 80))
        tick = 0.0
        while t0 + tick <= t1:
            xx = x(t0 + tick)
            p.setPen(grid)
            p.drawLine(QPointF(xx, AXIS - 4), QPointF(xx, self.height() - 2))
            label = "0" if tick == 0 else "+" + format_duration(tick)
            if xx + 2 + p.fontMetrics().horizontalAdvance(label) <= self.width():
                p.setPen(muted)
                p.drawText(QRectF(xx + 2, 0, 80, AXIS - 4),
                           int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), label)
            tick += step
        if self.eta is not None:  # the forecast completion: p10-p90 band, median mark
            p10, p50, p90 = self.eta
            band = QColor(status_color(OrderStatus.Scheduled))
            band.setAlpha(45)
            p.fillRect(QRectF(x(p10), AXIS - 4, max(2.0, x(p90) - x(p10)), self.height() - AXIS + 2), band)
            p.setPen(QPen(status_color(OrderStatus.Scheduled), 1.5))
            p.drawLine(QPointF(x(p50), AXIS - 4), QPointF(x(p50), self.height() - 2))
        if t0 <= self.now <= t1 and (self.eta is not None
                                     or any(s.ended is None and s.started is not None for s in self.steps)):
            now_pen = QPen(status_color(OrderStatus.Running), 1, Qt.PenStyle.DashLine)
            p.setPen(now_pen)
            p.drawLine(QPointF(x(self.now), AXIS - 4), QPointF(x(self.now), self.height() - 2))

        # lanes
        bars: dict[str, QRectF] = {}
        for i, s in enumerate(self.steps):
            top = AXIS + i * LANE
            start, end = times[s.key]
            if s.started is None:
                bars[s.key] = QRectF(x(start) + 2, top + 5, max(18.0, (end - start) * scale - 2), LANE - 10)
            else:
                bars[s.key] = QRectF(x(start), top + 5, max(3.0, (end - start) * scale), LANE - 10)

        # dependency arrows first, bars over them
        arrow = QPen(muted, 1)
        p.setPen(arrow)
        p.setBrush(Qt.BrushStyle.NoBrush)
        for s in self.steps:
            for dep in s.depends_on:
                if dep not in bars:
                    continue
                a, b = bars[dep], bars[s.key]
                tail = QPointF(a.right(), a.center().y())
                tip = QPointF(b.left() - 1, b.center().y())
                mid = max(tail.x() + 4, min(tip.x() - 4, (tail.x() + tip.x()) / 2))
                path = QPainterPath(tail)
                path.lineTo(mid, tail.y())
                path.lineTo(mid, tip.y())
                path.lineTo(tip)
                p.drawPath(path)
                arrowhead = QPainterPath(tip)
                arrowhead.lineTo(tip.x() - 4, tip.y() - 3)
                arrowhead.lineTo(tip.x() - 4, tip.y() + 3)
                arrowhead.closeSubpath()
                p.fillPath(arrowhead, muted)

        fm = self.fontMetrics()
        self._bars = []
        for i, s in enumerate(self.steps):
            top = AXIS + i * LANE
            colour = status_color(s.status)
            rect = bars[s.key]
            if s.key == self.highlight or s.order_id == self.highlight:
                band = QColor(pal.color(QPalette.ColorRole.Highlight))
                band.setAlpha(40)
                p.fillRect(QRectF(0, top, self.width(), LANE), band)
            # label
            label_font = QFont(self.font())
            label_font.setBold(s.key == self.highlight or s.order_id == self.highlight)
            p.setFont(label_font)
            p.setPen(colour)
            p.drawText(QRect(4, top, 16, LANE), int(Qt.AlignmentFlag.AlignCenter), glyph(s))
            p.setPen(text)
            p.drawText(QRect(22, top, left - 26, LANE), int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter),
                       fm.elidedText(s.label, Qt.TextElideMode.ElideRight, left - 28))
            # bar
            if s.started is None:
                p.setPen(QPen(colour, 1, Qt.PenStyle.DashLine))
                p.setBrush(Qt.BrushStyle.NoBrush)
                p.drawRoundedRect(rect, 3, 3)
            else:
                fill = QColor(colour)
                running = s.ended is None and s.status is OrderStatus.Running
                if running:
                    fill.setAlpha(110)
                p.setPen(Qt.PenStyle.NoPen)
                p.setBrush(fill)
                p.drawRoundedRect(rect, 3, 3)
                fraction = self.progress.get(s.order_id)
                if running and fraction:
                    done = QRectF(rect)
                    done.setWidth(rect.width() * fraction)
                    p.setBrush(colour)
                    p.drawRoundedRect(done, 3, 3)
                duration = (s.ended if s.ended is not None else self.now) - s.started
                caption = format_duration(duration)
                room_after = rect.right() + fm.horizontalAdvance(caption) + 11 < right
                if fm.horizontalAdvance(caption) + 8 < rect.width() and not (running and room_after):
                    p.setPen(QColor("white"))
                    p.drawText(rect, int(Qt.AlignmentFlag.AlignCenter), caption)
                elif room_after:  # beside the bar, clear of the arrow
                    p.setPen(muted)
                    p.drawText(QRectF(rect.right() + 9, rect.top() - 2, 90, rect.height() + 4),
                               int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), caption)
            self._bars.append((QRectF(0, top, self.width(), LANE), s))
        p.end()

    # ------------------------------------------------------------------ interaction

    def step_at(self, y: float) -> GanttStep | None:
        i = int((y - AXIS) // LANE)
        return self.steps[i] if y >= AXIS and 0 <= i < len(self.steps) else None

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            step = self.step_at(event.position().y() if hasattr(event, "position") else event.pos().y())
            if step is None:
                QToolTip.hideText()
            else:
                QToolTip.showText(event.globalPos(), self.describe(step), self)
            return True
        return super().event(event)

    def describe(self, s: GanttStep) -> str:
        lines = [f"<b>{s.label}</b> ({s.order_id})", f"{s.state or s.status.name}"
                 + (f", attempt {s.attempt}" if s.attempt > 1 else "")]
        if s.kind:
            lines.append(f"kind: {s.kind}")
        if s.instrument:
            lines.append(f"instrument: {s.instrument}")
        if s.started is not None:
            lines.append(f"started: {format_full_time(s.started)}")
        if s.ended is not None:
            lines.append(f"ended: {format_full_time(s.ended)}")
        if s.depends_on:
            lines.append(f"after: {', '.join(s.depends_on)}")
        if s.error:
            lines.append(f"<span style='color:{status_color(OrderStatus.Error).name()}'>{s.error}</span>")
        return "<br>".join(lines)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        step = self.step_at(event.position().y())
        if step is not None and event.button() == Qt.MouseButton.LeftButton:
            self.step_clicked.emit(step.order_id)
        super().mouseReleaseEvent(event)


def _tick_step(raw: float) -> float:
    """A round tick interval (s) no smaller than ``raw``."""
    for candidate in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                      43200, 86400):
        if candidate >= raw:
            return float(candidate)
    return float(int(raw / 86400 + 1) * 86400)
