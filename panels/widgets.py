"""Small widgets the panels share: KPI cards, a status breakdown bar, a form's scroll area, a reason
dialog, a card grid, a task keeper for operator actions, a paint pacer for views that changes
flood, and the event-loop lag probe with its indicator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from PySide6.QtCore import QEvent, QObject, QRectF, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPaintEvent
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from panels.style import pixmap
from panels.theme import current_theme, theme_events

log = logging.getLogger(__name__)

NEUTRAL, GOOD, WARN, BAD = "neutral", "good", "warn", "bad"
"""Tones of a KPI card: the colour of its accent stripe and value."""


class KpiCard(QFrame):
    """One key figure: an icon, a caption, a big value and a line of context.

    The tone (:data:`GOOD`, :data:`WARN`, :data:`BAD`) colours the accent stripe and the value
    and is also said in words by the caller's context line, never by colour alone.
    """

    def __init__(self, caption: str, icon_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("kpiCard")
        self._icon_name = icon_name
        self._tone = NEUTRAL
        self._style_key: tuple[str, str] | None = None
        self.icon = QLabel(self)
        self.caption = ElidedLabel(caption, self)
        self.caption.setObjectName("kpiCaption")
        self.value = QLabel("—", self)
        self.value.setObjectName("kpiValue")
        self.value.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.context = ElidedLabel("", self)
        self.context.setObjectName("kpiContext")
        top = QHBoxLayout()
        top.setSpacing(6)
        top.addWidget(self.icon)
        top.addWidget(self.caption, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 8, 10, 8)
        layout.setSpacing(2)
        layout.addLayout(top)
        layout.addWidget(self.value)
        layout.addWidget(self.context)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self._restyle()
        theme_events().changed.connect(self._on_theme)

    @property
    def tone(self) -> str:
        return self._tone

    def set(self, value: str, context: str = "", tone: str = NEUTRAL) -> None:
        """Show ``value`` with its ``context`` line in ``tone``; no repaint when nothing changed."""
        if self.value.text() != value:
            self.value.setText(value)
        self.context.set_full_text(context)
        if tone != self._tone:
            self._tone = tone
            self._restyle()

    @Slot(object)
    def _on_theme(self, _theme: object) -> None:
        self._restyle()

    def _restyle(self) -> None:
        theme = current_theme()
        key = (theme.name, self._tone)
        if key == self._style_key:
            return
        self._style_key = key
        accent = theme.colors["accent"] if self._tone == NEUTRAL else theme.colors[self._tone]
        value_colour = theme.palette["Text"] if self._tone == NEUTRAL else accent
        self.setStyleSheet(
            f"#kpiCard {{ background: {theme.colors['card']}; border: 1px solid {theme.colors['card_border']};"
            f" border-left: 4px solid {accent}; border-radius: 6px; }}"
            f"#kpiCaption {{ color: {theme.colors['muted']}; font-size: 11px; font-weight: 600; }}"
            f"#kpiValue {{ color: {value_colour}; font-size: 22px; font-weight: 600; }}"
            f"#kpiContext {{ color: {theme.colors['muted']}; font-size: 11px; }}")
        self.icon.setPixmap(pixmap(self._icon_name, theme.colors["muted"], 14))


class Section(QFrame):
    """A titled card that holds one part of a panel (the dashboard's status, alerts ...)."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("section")
        self._style_key: str | None = None
        self.title = QLabel(title, self)
        self.title.setObjectName("sectionTitle")
        self.header = QHBoxLayout()
        self.header.setContentsMargins(0, 0, 0, 0)
        self.header.addWidget(self.title, 1)
        self.body = QVBoxLayout()
        self.body.setContentsMargins(0, 0, 0, 0)
        self.body.setSpacing(4)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 8)
        layout.setSpacing(4)
        layout.addLayout(self.header)
        layout.addLayout(self.body, 1)
        self._restyle()
        theme_events().changed.connect(self._on_theme)

    @Slot(object)
    def _on_theme(self, _theme: object) -> None:
        self._restyle()

    def _restyle(self) -> None:
        theme = current_theme()
        if theme.name == self._style_key:
            return
        self._style_key = theme.name
        self.setStyleSheet(
            f"#section {{ background: {theme.colors['card']}; border: 1px solid {theme.colors['card_border']};"
            f" border-radius: 6px; }}"
            f"#sectionTitle {{ color: {theme.colors['muted']}; font-size: 11px; font-weight: 600; }}"
            "QLabel { font-size: 11px; }")


class BreakdownBar(QWidget):
    """A horizontal bar split into coloured parts (counts per status), with a tooltip per part."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._parts: list[tuple[str, int, QColor]] = []
        self.setMinimumHeight(14)
        self.setMaximumHeight(14)
        self.setMouseTracking(True)

    def set_parts(self, parts: Sequence[tuple[str, int, QColor]]) -> None:
        """``(label, count, colour)`` per part, in display order; zero counts are not drawn."""
        parts = [p for p in parts if p[1] > 0]
        if parts != self._parts:
            self._parts = parts
            total = sum(p[1] for p in parts)
            self.setToolTip("\n".join(f"{label}: {count:,} ({100 * count / total:.1f} %)"
                                      for label, count, _ in parts) if total else "nothing yet")
            self.update()

    def paintEvent(self, _event: QPaintEvent) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(self.palette().mid())
        painter.drawRoundedRect(rect, 4, 4)
        total = sum(p[1] for p in self._parts)
        if total:
            outline = QPainterPath()
            outline.addRoundedRect(rect, 4, 4)
            painter.setClipPath(outline)
            x = rect.left()
            for _label, count, colour in self._parts:
                w = rect.width() * count / total
                painter.setBrush(colour)
                painter.drawRect(QRectF(x, rect.top(), max(w, 1.0), rect.height()))
                x += w
        painter.end()


class ElidedLabel(QLabel):
    """A one-line label that shrinks with its container and ends in "…" (full text as tooltip)."""

    def __init__(self, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._full = ""
        self.set_full_text(text)

    def set_full_text(self, text: str) -> None:
        if text != self._full:
            self._full = text
            self.setToolTip(text)
            self._elide()

    def full_text(self) -> str:
        return self._full

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = max(0, self.width())
        self.setText(self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, width)
                     if width else self._full)


class VerticalScrollArea(QScrollArea):
    """A frameless scroll area for a form in a dock: it scrolls vertically only, the form takes the
    whole width given, and the area is never narrower than the form's minimum width (with room for
    the vertical scroll bar), so nothing of the form is cut at the right."""

    def __init__(self, widget: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(widget)
        widget.installEventFilter(self)

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        hint = super().minimumSizeHint()
        widget = self.widget()
        if widget is None:
            return hint
        width = widget.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width() \
            + 2 * self.frameWidth()
        return QSize(max(hint.width(), width), hint.height())

    def sizeHint(self) -> QSize:  # noqa: N802
        # the whole form where there is room (Qt caps a scroll area's hint at 24 lines of text)
        hint = super().sizeHint()
        widget = self.widget()
        if widget is None:
            return hint
        return QSize(hint.width(), widget.sizeHint().height() + 2 * self.frameWidth())

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the form's minimum width may have changed (a font, a longer label)
        return super().eventFilter(watched, event)


class ReasonDialog(QDialog):
    """Asks why (disable, take out of service ...). Opened with :meth:`open`, never ``exec()``.

    :attr:`reason_given` carries the reason when the operator confirms; OK stays disabled until
    a reason is typed.
    """

    reason_given = Signal(str)

    def __init__(self, title: str, prompt: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("reasonDialog")
        self.setWindowTitle(title)
        self.setModal(True)
        label = QLabel(prompt, self)
        label.setWordWrap(True)
        self.reason_edit = QLineEdit(self)
        self.reason_edit.setPlaceholderText("Reason (kept in the audit log)")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel, self)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setEnabled(False)
        self.reason_edit.textChanged.connect(lambda text: self.ok_button.setEnabled(bool(text.strip())))
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(label)
        layout.addWidget(self.reason_edit)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(380)

    def accept(self) -> None:
        reason = self.reason_edit.text().strip()
        if not reason:
            return
        super().accept()
        self.reason_given.emit(reason)


class CardGrid(QWidget):
    """Lays cards out in as many columns as fit (at least ``min_card_width`` each)."""

    def __init__(self, min_card_width: int = 250, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.min_card_width = min_card_width
        self._cards: list[QWidget] = []
        self._columns = 0
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(8)
        self._grid.setAlignment(Qt.AlignmentFlag.AlignTop)

    def set_cards(self, cards: Sequence[QWidget]) -> None:
        for card in self._cards:
            self._grid.removeWidget(card)
        self._cards = list(cards)
        self._columns = 0
        self._relayout()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._relayout()

    def _relayout(self) -> None:
        columns = max(1, (self.width() + 8) // (self.min_card_width + 8))
        if columns == self._columns:
            return
        self._columns = columns
        for card in self._cards:
            self._grid.removeWidget(card)
        for i, card in enumerate(self._cards):
            self._grid.addWidget(card, i // columns, i % columns)
        for c in range(self._grid.columnCount()):
            self._grid.setColumnStretch(c, 1 if c < columns else 0)


class TaskKeeper:
    """Starts operator actions as asyncio tasks and keeps strong references until they end.

    qasync 0.28.0's ``asyncSlot`` neither works on free functions nor keeps its tasks alive; this
    is the small replacement the panels use from ordinary slots.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any],
              done: Callable[[asyncio.Task[Any]], None] | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_event_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if done is not None:
            task.add_done_callback(done)
        return task

    @property
    def busy(self) -> bool:
        return bool(self._tasks)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


# ---------------------------------------------------------------------------- loop lag


class PaintPacer(QObject):
    """Repaints a view at most every ``interval_ms`` while changes flood in.

    Call :meth:`changed` after each change of what the view shows. A change that comes sooner
    than ``interval_ms`` after the last one let through holds the view's updates back
    (``setUpdatesEnabled(False)``) until the interval is over; then one repaint shows all of them.
    The operator's own input (a click, a key, the wheel, the scroll bar) lets the view paint at
    once. Under a flood (a bulk action, thousands of transitions a second) the view then paints a
    few times a second instead of after every delivery: a paint of a 30-row table is 6-11 ms of
    the loop thread, and the bridge delivers up to about 30 frames a second.
    """

    INPUT = frozenset({QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonDblClick, QEvent.Type.Wheel,
                       QEvent.Type.KeyPress, QEvent.Type.Resize, QEvent.Type.Show})

    def __init__(self, view: QWidget, interval_ms: int = 125, *, watch: Sequence[QObject] = ()) -> None:
        super().__init__(view)
        self.view = view
        self.interval = interval_ms / 1000.0
        self._last = -1e9
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.resume)
        for obj in (view, *watch):
            obj.installEventFilter(self)

    @property
    def holding(self) -> bool:
        return self._timer.isActive()

    def changed(self) -> None:
        """What the view shows changed: let it paint now, or hold it until the interval is over."""
        if self._timer.isActive():
            return
        now = time.monotonic()
        wait = self._last + self.interval - now
        if wait <= 0:
            self._last = now
            return
        self.view.setUpdatesEnabled(False)
        self._timer.start(max(1, int(wait * 1000 + 0.999)))

    @Slot()
    def resume(self) -> None:
        """Let the view paint what it held back (at once, whatever the interval)."""
        self._timer.stop()
        self._last = time.monotonic()
        if not self.view.updatesEnabled():
            self.view.setUpdatesEnabled(True)  # and Qt repaints it whole

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if event.type() in self.INPUT and self._timer.isActive():
            self.resume()
        return False


class LoopLagProbe:
    """Measures event-loop lag: how late ``await asyncio.sleep(interval)`` wakes up.

    Under qasync an asyncio timer is a Qt timer, so the overshoot includes Qt's own dispatch
    (painting, slots). Samples of the last ``keep_seconds`` are kept for :meth:`percentiles`.

    While recording (:meth:`record_all`) each sample's *own* part is kept too: the lag, but at most
    the CPU time the loop's thread used meanwhile. The rest of a lag is time the thread waited
    (for a core of a busy machine, or for the GIL), not work the loop did; on a loaded machine
    the two tell the code's stalls from the machine's.
    """

    def __init__(self, interval: float = 0.005, keep_seconds: float = 10.0) -> None:
        self.interval = interval
        self.keep_seconds = keep_seconds
        self._times: deque[float] = deque()
        self._lags: deque[float] = deque()
        self._task: asyncio.Task[None] | None = None
        self.all_lags: list[float] | None = None
        """Every sample since :meth:`record_all` (for benchmarks); None when not recording."""
        self.own_lags: list[float] = []
        """The loop thread's own part of each sample of the last recording (see above)."""

    def start(self) -> None:
        """Start probing on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_event_loop().create_task(self._run(), name="loop-lag-probe")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def record_all(self) -> None:
        """Also keep every sample from now on (until :meth:`stop_recording`)."""
        self.all_lags = []
        self.own_lags = []

    def stop_recording(self) -> list[float]:
        lags, self.all_lags = self.all_lags or [], None
        return lags

    async def _run(self) -> None:
        interval = self.interval
        clock, cpu = time.perf_counter, time.thread_time
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                t0, c0 = clock(), cpu()
                await asyncio.sleep(interval)
                now = clock()
                lag = max(0.0, now - t0 - interval)
                self._times.append(now)
                self._lags.append(lag)
                if self.all_lags is not None:
                    self.all_lags.append(lag)
                    self.own_lags.append(min(lag, cpu() - c0))
                horizon = now - self.keep_seconds
                while self._times and self._times[0] < horizon:
                    self._times.popleft()
                    self._lags.popleft()

    def percentiles(self) -> tuple[float, float, float] | None:
        """(p50, p99, max) lag in seconds over the kept window; None without samples."""
        return lag_stats(self._lags)


def lag_stats(lags: Sequence[float] | deque[float]) -> tuple[float, float, float] | None:
    """(p50, p99, max) of lag samples (seconds), None when there are none."""
    if not lags:
        return None
    ordered = sorted(lags)
    n = len(ordered)
    return (ordered[min(n - 1, n // 2)], ordered[min(n - 1, int(n * 0.99))], ordered[-1])


LAG_OK, LAG_WARN = 0.016, 0.050
"""Loop-lag budgets (seconds): p99 within one frame is fine; beyond 50 ms the window stutters."""


class LoopLagIndicator(QLabel):
    """Status-bar text with the p99 loop lag of the last seconds, refreshed once a second."""

    def __init__(self, probe: LoopLagProbe, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("loopLag")
        self.probe = probe
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self.refresh)
        self.setToolTip("Event-loop lag: how late a 5 ms timer fires (p50 / p99 / max of the last "
                        f"{probe.keep_seconds:g} s). Within 16 ms the window stays smooth.")
        self.setText("loop lag —")

    def start(self) -> None:
        self.probe.start()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self.probe.stop()

    @Slot()
    def refresh(self) -> None:
        stats = self.probe.percentiles()
        if stats is None:
            return
        p50, p99, worst = stats
        theme = current_theme()
        tone = "good" if p99 <= LAG_OK and worst <= LAG_WARN else "warn" if p99 <= LAG_WARN else "bad"
        self.setText(f"loop lag p99 {p99 * 1000:.1f} ms")
        self.setToolTip(f"Event-loop lag over the last {self.probe.keep_seconds:g} s: p50 "
                        f"{p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {worst * 1000:.1f} ms "
                        "(budget: p99 16 ms, max 50 ms).")
        self.setStyleSheet(f"#loopLag {{ color: {theme.colors[tone]}; }}" if tone != "good" else "")


def password_edit(parent: QWidget) -> QLineEdit:
    """A password field (objectName ``password``) for the sign-in and signature dialogs."""
    edit = QLineEdit(parent)
    edit.setObjectName("password")
    edit.setEchoMode(QLineEdit.EchoMode.Password)
    return edit


def error_label(text: str, parent: QWidget) -> QLabel:
    """A red line (objectName ``error``) under a form, hidden while ``text`` is empty."""
    label = QLabel(text, parent)
    label.setObjectName("error")
    label.setStyleSheet("color: #c62828;")
    label.setVisible(bool(text))
    return label
