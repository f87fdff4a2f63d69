"""Metrics panel: live charts of throughput, queue, utilisation, step duration and success rate.

Two fixed-rate timers, nothing per event:

- the **sampler** (every second, for as long as the panel lives) reads what ``runtime.metrics``
  knows now — O(1) counters and the instruments' states — into a 24 h
  :class:`~panels.charts.MetricsHistory` (numpy ring buffers, 86,400 samples);
- the **redraw** timer (4 Hz, only while the panel is visible) hands the chosen time range of
  the ring buffers to the curves, only when a new sample arrived or the range changed.

Plots use clip-to-view, peak downsampling, width-1 pens without antialiasing, float64 x and
fixed y ranges (specs/performance.md B.3). The time range runs from 15 minutes to 24 hours;
the shown range exports as PNG (the charts as they are) and CSV (every series, one row per
sample).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.orders import ModuleStatus, OrderStatus
from panels.base import Panel
from panels.charts import (
    FAILURES_PER_MIN,
    ORDERS_PER_MIN,
    QUEUE_DEPTH,
    RUNNING,
    STEP_DURATION,
    STEPS_PER_MIN,
    SUCCESS_RATE,
    UTIL,
    MetricsHistory,
    Reading,
    backfill_columns,
    fast_curve,
    fast_plot,
    nice_ceiling,
    style_plot,
)
from panels.style import icon, status_color
from panels.theme import Theme, current_theme
from panels.widgets import ElidedLabel

SAMPLE_MS = 1000
"""Sampling period of the history (one sample per second: 24 h = 86,400 samples)."""
REDRAW_MS = 250
"""Fixed redraw period while visible (4 Hz)."""
RANGES: tuple[tuple[str, float], ...] = (("15 min", 900.0), ("1 h", 3600.0), ("4 h", 4 * 3600.0),
                                         ("12 h", 12 * 3600.0), ("24 h", 24 * 3600.0))
"""The time ranges offered (label, seconds)."""
DEFAULT_RANGE = 1
NOTICE_S = 4.0
"""How long an export's "Saved …" stays in the info line (or until the next action)."""
X_STEPS = 600
"""The x range moves in steps of range / X_STEPS (about a pixel of a chart)."""


@dataclass
class Series:
    """One curve: the history column it draws, its legend name and how to colour it."""

    column: str
    label: str
    colour: str
    """``status:<OrderStatus>`` or ``series:<n>`` (theme colours, resolved on every theme)."""
    finite: bool = True
    curve: pg.PlotDataItem | None = None


@dataclass
class Chart:
    """One plot with its header (title, legend, latest values) and its y-axis rule."""

    key: str
    title: str
    unit: str
    series: list[Series]
    fixed_top: float | None = None
    """A fixed y maximum (percent charts: a little over 100 so a full line stays visible);
    otherwise a round number above the data."""
    widget: pg.PlotWidget | None = None
    header: QLabel | None = None
    now_label: QLabel | None = None
    top: float = 0.0


def _resolve(colour: str) -> str:
    kind, _, value = colour.partition(":")
    if kind == "status":
        return status_color(OrderStatus[value]).name()
    return current_theme().series_color(int(value)).name()


class MetricsPanel(Panel):
    """Live charts over the core's metrics, with a time-range choice and PNG/CSV export.

    Receives the runtime facade and the per-frame event bridge (constructor injection);
    ``history`` may be given (benchmarks fill one with a day of samples).
    """

    REFRESH_MS = REDRAW_MS

    def __init__(self, runtime: RuntimeApi, bridge: Any, parent: QWidget | None = None, *,
                 history: MetricsHistory | None = None) -> None:
        super().__init__(runtime, bridge, parent)
        self.history = history or MetricsHistory()
        self.metrics = runtime.metrics
        self.redraws = 0
        """How many times the charts were redrawn (follows the fixed rate while data moves)."""
        self.samples = 0
        self.file_dialog: QFileDialog | None = None
        self._drawn: tuple[int, float] | None = None
        self._x_view: tuple[float, float] | None = None
        self._backfilled = False
        self.monotonic = time.monotonic
        self._notice_until = 0.0

        # header: range, export, what is shown
        self.range_box = QComboBox(self)
        self.range_box.setObjectName("metricsRange")
        for label, seconds in RANGES:
            self.range_box.addItem(label, seconds)
        self.range_box.setCurrentIndex(DEFAULT_RANGE)
        self.range_box.setToolTip("Time range of the charts")
        self.range_box.currentIndexChanged.connect(self._on_range)
        self.png_button = QToolButton(self)
        self.png_button.setObjectName("exportPng")
        self.png_button.setText("PNG")
        self.png_button.setToolTip("Save the charts as a PNG image")
        self.png_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.png_button.clicked.connect(lambda: self._ask_file("png"))
        self.csv_button = QToolButton(self)
        self.csv_button.setObjectName("exportCsv")
        self.csv_button.setText("CSV")
        self.csv_button.setToolTip("Save every series of the shown range as CSV")
        self.csv_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.csv_button.clicked.connect(lambda: self._ask_file("csv"))
        self.info = ElidedLabel("", self)
        self.info.setObjectName("metricsInfo")
        bar = QHBoxLayout()
        bar.setSpacing(6)
        bar.addWidget(QLabel("Range", self))
        bar.addWidget(self.range_box)
        bar.addWidget(self.info, 1)
        bar.addWidget(self.png_button)
        bar.addWidget(self.csv_button)

        # charts
        self.charts_box = QWidget(self)
        self.charts_box.setObjectName("metricsCharts")
        self.charts_box.setAutoFillBackground(True)
        charts_layout = QVBoxLayout(self.charts_box)
        charts_layout.setContentsMargins(4, 4, 4, 4)
        charts_layout.setSpacing(2)
        instruments = list(self.metrics.instruments) if self.metrics is not None else []
        self.history.add_instruments(instruments)
        self.charts: list[Chart] = [
            Chart("throughput", "Throughput", "per min", [
                Series(ORDERS_PER_MIN, "jobs/min", "status:Running"),
                Series(STEPS_PER_MIN, "steps/min", "series:1"),
                Series(FAILURES_PER_MIN, "failed/min", "status:Error")]),
            Chart("queue", "Queue", "jobs", [
                Series(QUEUE_DEPTH, "pending", "status:Scheduled"),
                Series(RUNNING, "running", "status:Running")]),
            Chart("utilisation", "Instrument utilisation", "%",
                  [Series(UTIL + iid, iid, f"series:{i}") for i, iid in enumerate(instruments)],
                  fixed_top=105.0),
            Chart("duration", "Step duration", "s (mean, 15 min)", [
                Series(STEP_DURATION, "mean step", "series:2", finite=False)]),
            Chart("success", "Success rate", "% (15 min)", [
                Series(SUCCESS_RATE, "jobs decided OK", "status:Complete", finite=False)],
                  fixed_top=105.0),
        ]
        first: pg.PlotItem | None = None
        for n, chart in enumerate(self.charts):
            chart.header = QLabel(self.charts_box)
            chart.header.setTextFormat(Qt.TextFormat.RichText)
            chart.header.setWordWrap(True)
            chart.now_label = QLabel(self.charts_box)
            chart.now_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop)
            head = QHBoxLayout()
            head.setContentsMargins(42, 4, 4, 0)
            head.addWidget(chart.header, 1)
            head.addWidget(chart.now_label)
            axis = pg.DateAxisItem(orientation="bottom")
            chart.widget = pg.PlotWidget(self.charts_box, axisItems={"bottom": axis})
            chart.widget.setObjectName(f"chart_{chart.key}")
            chart.widget.setMinimumHeight(70)
            chart.widget.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
            plot = fast_plot(chart.widget.getPlotItem())
            plot.getAxis("left").setWidth(42)
            if n < len(self.charts) - 1:
                plot.hideAxis("bottom")  # one time axis, under the last chart
            if first is None:
                first = plot
            else:
                plot.setXLink(first)
            for s in chart.series:
                s.curve = fast_curve(plot, _resolve(s.colour), s.label, finite=s.finite)
            charts_layout.addLayout(head)
            charts_layout.addWidget(chart.widget, 1)
        self.empty = QLabel("Metrics are off for this runtime.", self)
        self.empty.setVisible(self.metrics is None)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 6)
        layout.setSpacing(4)
        layout.addLayout(bar)
        # A short dock scrolls the charts instead of squeezing them below their minimum (where
        # headers would overlap the chart above) or making the whole window taller.
        self.charts_scroll = QScrollArea(self)
        self.charts_scroll.setObjectName("metricsScroll")
        self.charts_scroll.setWidgetResizable(True)
        self.charts_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.charts_scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.charts_scroll.setWidget(self.charts_box)
        self.charts_scroll.setVisible(self.metrics is not None)
        layout.addWidget(self.charts_scroll, 1)
        layout.addWidget(self.empty)

        self.sample_timer = QTimer(self)
        self.sample_timer.setInterval(SAMPLE_MS)
        self.sample_timer.timeout.connect(self.sample)
        self.redraw_timer = self.refresh_timer
        self._apply_theme()
        if self.metrics is not None:
            self.sample_timer.start()

    # ------------------------------------------------------------------ data

    def set_history(self, history: MetricsHistory) -> None:
        """Draw ``history`` from now on (sampling continues into it)."""
        self.history = history
        history.add_instruments(s.column[len(UTIL):] for s in self.charts[2].series)
        self._ensure_instrument_series()
        self._drawn = self._x_view = None
        self.redraw(force=True)

    @property
    def range_seconds(self) -> float:
        return float(self.range_box.currentData())

    def set_range(self, seconds: float) -> None:
        """Show the range of ``seconds`` (one of :data:`RANGES`)."""
        for i, (_label, s) in enumerate(RANGES):
            if s == seconds:
                self.range_box.setCurrentIndex(i)
                return
        raise ValueError(f"no range of {seconds} s (ranges: {[s for _, s in RANGES]})")

    @Slot()
    def sample(self) -> bool:
        """Take one sample of the core's metrics now (the sampler timer calls this every second)."""
        m = self.metrics
        if m is None:
            return False
        now = float(self.runtime.clock.now())
        if not self._backfilled:
            self._backfilled = True
            times, columns = backfill_columns(m, now)
            if len(times):
                self.history.backfill(times, columns)
        jobs = m.dashboard()
        steps = m.dashboard(steps=True)
        busy = {v.id: v.status is ModuleStatus.Busy for v in self.runtime.instruments()}
        taken = self.history.sample(now, Reading(
            day_start=m.day_start, jobs_completed=jobs.completed_jobs_today,
            jobs_failed=jobs.failed_jobs_today, steps_completed=steps.completed_jobs_today,
            step_mean_seconds=steps.average_execution_time, pending=jobs.pending_jobs,
            running=jobs.running_jobs, busy=busy))
        if taken:
            self.samples += 1
            self._ensure_instrument_series()
        return taken

    def _ensure_instrument_series(self) -> None:
        chart = self.charts[2]
        have = {s.column for s in chart.series}
        for iid in self.history.instruments:
            if UTIL + iid not in have and chart.widget is not None:
                s = Series(UTIL + iid, iid, f"series:{len(chart.series)}")
                s.curve = fast_curve(chart.widget.getPlotItem(), _resolve(s.colour), s.label)
                chart.series.append(s)
                self._header(chart)

    @Slot()
    def redraw(self, force: bool = False) -> bool:
        """Hand the shown range of the history to the curves; False when nothing moved.

        The finest ring that fits draws (:meth:`MetricsHistory.ring_for`: 1 s samples for
        15 minutes, 10 s means up to 4 hours, minute means beyond; at most 1,500 points a series). The x range moves in steps of about a pixel, so axes and
        grids are not laid out again for every sample of a long range.
        """
        fine = self.history.ring
        key = (fine.version, self.range_seconds)
        if (key == self._drawn and not force) or not len(fine):
            return False
        self._drawn = key
        span = self.range_seconds
        ring = self.history.ring_for(span)
        end = fine.last("times")
        start = end - span
        i = ring.since(start)
        x = ring.times[i:]
        for chart in self.charts:
            top = 0.0
            for s in chart.series:
                y = ring.column(s.column)[i:] if s.column in ring else np.full(len(x), np.nan)
                if s.curve is not None:
                    s.curve.setData(x, y)
                if chart.fixed_top is None and len(y) and np.isfinite(y).any():
                    top = max(top, float(np.nanmax(y)))
            plot = chart.widget.getPlotItem() if chart.widget is not None else None
            if plot is None:
                continue
            wanted = chart.fixed_top if chart.fixed_top is not None else nice_ceiling(top * 1.1)
            if wanted != chart.top:
                chart.top = wanted
                plot.setYRange(0.0, wanted, padding=0.02)
            self._show_now(chart)
        step = span / X_STEPS
        view = (math.ceil(end / step) * step - span, math.ceil(end / step) * step)
        first = self.charts[0].widget
        if first is not None and view != self._x_view:
            self._x_view = view
            first.getPlotItem().setXRange(*view, padding=0.0)
        what = "1 s samples" if ring is fine else next(
            f"{lv.width:g} s means" for lv in self.history.levels if lv.ring is ring)
        if self.monotonic() >= self._notice_until:  # an export's notice stays a while
            self.info.set_full_text(f"{len(x):,} {what} · {datetime.fromtimestamp(start):%H:%M} – "
                                    f"{datetime.fromtimestamp(end):%H:%M:%S}")
        self.redraws += 1
        return True

    def _show_now(self, chart: Chart) -> None:
        if chart.now_label is None:
            return
        ring = self.history.ring
        if chart.key == "utilisation":
            values = [ring.last(s.column) for s in chart.series if s.column in ring]
            finite = [v for v in values if math.isfinite(v)]
            text = f"mean {sum(finite) / len(finite):.0f} %" if finite else ""
        else:
            s = chart.series[0]
            v = ring.last(s.column) if s.column in ring else math.nan
            if not math.isfinite(v):
                text = "—"
            elif chart.key == "success":
                text = f"{v:.1f} %"
            elif chart.key == "queue":
                text = f"{v:,.0f} {s.label}"
            else:
                text = f"{v:,.1f} {s.label}"
        chart.now_label.setText(text)

    @Slot(int)
    def _on_range(self, _index: int) -> None:
        self._notice_until = 0.0  # the next action replaces the notice
        self.redraw()

    # ------------------------------------------------------------------ export

    def _ask_file(self, kind: str) -> None:
        """A save dialog opened with ``open()`` (never ``exec()``); the file is written on accept."""
        self._notice_until = 0.0
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        dialog = QFileDialog(self, f"Export metrics as {kind.upper()}")
        dialog.setObjectName(f"export{kind.capitalize()}Dialog")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        dialog.setNameFilter("PNG image (*.png)" if kind == "png" else "CSV table (*.csv)")
        dialog.setDefaultSuffix(kind)
        dialog.selectFile(f"labconsole-metrics-{stamp}.{kind}")
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(lambda path: self._export(kind, path))
        dialog.finished.connect(self._forget_dialog)
        self.file_dialog = dialog
        dialog.open()

    @Slot()
    def _forget_dialog(self) -> None:
        self.file_dialog = None

    def _export(self, kind: str, path: str) -> None:
        try:
            if kind == "png":
                self.export_png(Path(path))
                self._notice(f"Saved {path}")
            else:
                rows = self.export_csv(Path(path))
                self._notice(f"Saved {rows:,} rows to {path}")
        except OSError as exc:
            self._notice(f"Could not save {path}: {exc.strerror or exc}")

    def _notice(self, text: str) -> None:
        """Show ``text`` in the info line for :data:`NOTICE_S` (redraws leave it alone)."""
        self.info.set_full_text(text)
        self._notice_until = self.monotonic() + NOTICE_S

    def export_png(self, path: Path) -> Path:
        """Save the charts as they are shown (after a redraw of the current range)."""
        self.redraw(force=True)
        if not self.charts_box.grab().save(str(path), "PNG"):
            raise OSError(f"could not write {path}")
        return path

    def export_csv(self, path: Path) -> int:
        """Save every series of the shown range, one row per sample; returns the row count."""
        ring = self.history.ring
        end = ring.last("times") if len(ring) else 0.0
        names, rows = self.history.csv_rows(end - self.range_seconds)
        count = 0
        with path.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["time", *[_csv_name(n) for n in names]])
            for row in rows:
                out.writerow([datetime.fromtimestamp(row[0]).isoformat(timespec="seconds"),
                              *(_csv_value(v) for v in row)])
                count += 1
        return count

    # ------------------------------------------------------------------ look

    def _header(self, chart: Chart) -> None:
        if chart.header is None:
            return
        theme = current_theme()
        legend = " ".join(f"<span style='color:{_resolve(s.colour)}'>■</span>&nbsp;{s.label}"
                          for s in chart.series)
        chart.header.setText(f"<b>{chart.title}</b> <span style='color:{theme.colors['muted']}'>"
                             f"{chart.unit}</span>&nbsp;&nbsp; {legend}")

    def _apply_theme(self) -> None:
        theme = current_theme()
        pal = self.charts_box.palette()
        pal.setColor(self.charts_box.backgroundRole(), theme.color("chart_bg"))
        self.charts_box.setPalette(pal)
        for chart in self.charts:
            if chart.widget is None:
                continue
            chart.widget.setBackground(theme.color("chart_bg"))
            plot = chart.widget.getPlotItem()
            style_plot(plot, theme)
            for s in chart.series:
                if s.curve is not None:
                    s.curve.setPen(pg.mkPen(_resolve(s.colour), width=1))
            self._header(chart)
            if chart.now_label is not None:
                chart.now_label.setStyleSheet(f"color: {theme.colors['muted']}; font-size: 11px;")
        self.png_button.setIcon(icon("image"))
        self.csv_button.setIcon(icon("file-text"))

    def apply_theme(self, _theme: Theme) -> None:
        self._apply_theme()

    # ------------------------------------------------------------------ life cycle

    def wants_refresh(self) -> bool:
        return self.metrics is not None

    def tick(self) -> None:
        self.redraw()

    def on_shown(self) -> None:
        if self.metrics is not None:
            self.redraw(force=True)

    def on_shutdown(self) -> None:
        """Stop sampling and close the export dialog."""
        self.sample_timer.stop()
        if self.file_dialog is not None:
            self.file_dialog.reject()


def _csv_name(name: str) -> str:
    return "epoch_s" if name == "times" else name.replace(UTIL, "utilisation_pct:") \
        if name.startswith(UTIL) else name


def _csv_value(v: float) -> str:
    return "" if not math.isfinite(v) else f"{v:.6g}" if abs(v) < 1e9 else f"{v:.3f}"

