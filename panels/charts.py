"""Chart data and chart settings for live plots.

:class:`SeriesRing` is a fixed-size ring buffer of float64 columns. Every column is twice the
capacity long and each value is written at ``i`` and ``i + capacity``, so the last ``n`` samples
are always one contiguous numpy *view* in time order: a curve can be given it without a copy.

:class:`MetricsHistory` turns what :class:`core.metrics.Metrics` knows *now* (today's counters,
pending and running jobs, instrument states) into a history sampled at a fixed rate (1 s by
default, 24 h deep): rolling rates (orders and steps per minute, failures per minute), the rolling
success rate, the rolling mean step duration and each instrument's rolling utilisation. Rates
come from counters, not from the core's minute buckets, so a 1 s history is smooth; the core's
buckets seed the history that existed before the first sample (:meth:`MetricsHistory.backfill`).
Next to the 1 s ring it keeps rings of 10 s and 1 min means (:class:`BucketMeans`, the newest
bucket running), and :meth:`MetricsHistory.ring_for` picks the finest one that shows a range in
at most 1,500 points: 15 min of 1 s samples, 1 h or 4 h of 10 s means, 12 h or 24 h of minute
means — never 86,400 points per series. It holds no Qt and costs O(series + log n) per sample.

:func:`fast_plot` configures a ``PlotItem`` the way long live histories stay cheap to draw
(specs/performance.md B.3): clip to view, peak downsampling, no auto-range, no mouse zoom; curves
are drawn with width-1 pens, no antialiasing and float64 x values.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QGraphicsItem

from core.metrics import Metrics
from panels.theme import Theme

# ---------------------------------------------------------------------------- ring buffer


class SeriesRing:
    """Fixed-capacity ring of named float64 columns; ``times`` is always one of them.

    Args:
        names: Column names besides ``times``.
        capacity: Samples kept; older ones are overwritten.
    """

    def __init__(self, names: Iterable[str], capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._cols: dict[str, np.ndarray] = {}
        self._head = 0
        self._len = 0
        self.version = 0
        """Grows with every change; a view can skip redrawing when it has not moved."""
        for name in ("times", *names):
            self.add_column(name)

    def add_column(self, name: str) -> None:
        """A new column (NaN for the samples taken before it existed)."""
        if name not in self._cols:
            self._cols[name] = np.full(2 * self.capacity, np.nan)

    @property
    def names(self) -> list[str]:
        return list(self._cols)

    def __len__(self) -> int:
        return self._len

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    def append(self, time: float, values: Mapping[str, float]) -> None:
        """One sample at ``time`` (epoch seconds); columns missing from ``values`` get NaN."""
        i, cap = self._head, self.capacity
        for name, col in self._cols.items():
            value = time if name == "times" else values.get(name, math.nan)
            col[i] = col[i + cap] = value
        self._head = (i + 1) % cap
        self._len = min(self._len + 1, cap)
        self.version += 1

    def extend(self, times: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Many samples at once (vectorised; for seeding and benchmarks)."""
        n = len(times)
        if n == 0:
            return
        if n > self.capacity:
            times = times[-self.capacity:]
            columns = {k: v[-self.capacity:] for k, v in columns.items()}
            n = self.capacity
        cap = self.capacity
        idx = (self._head + np.arange(n)) % cap
        for name, col in self._cols.items():
            data = times if name == "times" else columns.get(name)
            values = np.asarray(data, dtype=np.float64) if data is not None else np.nan
            col[idx] = values
            col[idx + cap] = values
        self._head = (self._head + n) % cap
        self._len = min(self._len + n, cap)
        self.version += 1

    def set_last(self, time: float, values: Mapping[str, float]) -> None:
        """Overwrite the newest sample (a running aggregate that is not finished yet)."""
        if not self._len:
            self.append(time, values)
            return
        i, cap = (self._head - 1) % self.capacity, self.capacity
        for name, col in self._cols.items():
            value = time if name == "times" else values.get(name, math.nan)
            col[i] = col[i + cap] = value
        self.version += 1

    def column(self, name: str) -> np.ndarray:
        """The view of one column, oldest first (no copy; take ``.copy()`` to keep it)."""
        col = self._cols[name]
        end = self._head + self.capacity
        return col[end - self._len:end]

    @property
    def times(self) -> np.ndarray:
        return self.column("times")

    def last(self, name: str) -> float:
        """The newest value of a column (NaN when empty)."""
        return float(self.column(name)[-1]) if self._len else math.nan

    def since(self, start: float) -> int:
        """Index of the first sample at or after ``start`` (``times`` are ascending)."""
        return int(np.searchsorted(self.times, start, side="left"))


# ---------------------------------------------------------------------------- metrics history

ORDERS_PER_MIN = "orders_per_min"
STEPS_PER_MIN = "steps_per_min"
FAILURES_PER_MIN = "failures_per_min"
QUEUE_DEPTH = "queue_depth"
RUNNING = "running"
STEP_DURATION = "step_duration"
SUCCESS_RATE = "success_rate"
UTIL = "util:"
"""Prefix of the per-instrument utilisation columns (percent)."""
BASE_SERIES = (ORDERS_PER_MIN, STEPS_PER_MIN, FAILURES_PER_MIN, QUEUE_DEPTH, RUNNING,
               STEP_DURATION, SUCCESS_RATE)


@dataclass(frozen=True)
class Reading:
    """What the core says at one instant (all counters since midnight, as Metrics keeps them)."""

    day_start: float
    jobs_completed: int
    jobs_failed: int
    steps_completed: int
    step_mean_seconds: float
    pending: int
    running: int
    busy: Mapping[str, bool]
    """Instrument id -> Busy now."""


class BucketMeans:
    """Means of the samples per bucket of ``width`` seconds, in a ring; the newest bucket's mean
    is kept up to date while it fills (its time is that of its latest sample)."""

    def __init__(self, names: Iterable[str], width: float, capacity: int) -> None:
        self.width = width
        self.ring = SeriesRing(names, capacity)
        self._bucket: float | None = None
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, now: float, values: Mapping[str, float]) -> None:
        bucket = math.floor(now / self.width)
        fresh = bucket != self._bucket
        if fresh:
            self._bucket, self._sums, self._counts = bucket, {}, {}
        for key, value in values.items():
            if math.isfinite(value):
                self._sums[key] = self._sums.get(key, 0.0) + value
                self._counts[key] = self._counts.get(key, 0) + 1
        means = {k: self._sums[k] / self._counts[k] for k in self._sums}
        if fresh:
            self.ring.append(now, means)
        else:
            self.ring.set_last(now, means)

    def extend(self, times: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """The means of many samples at once (vectorised)."""
        bucket = np.floor(times / self.width)
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        ends = np.r_[starts[1:] - 1, len(times) - 1]
        means: dict[str, np.ndarray] = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            for key, col in columns.items():
                col = np.asarray(col, dtype=np.float64)
                finite = np.isfinite(col)
                sums = np.add.reduceat(np.where(finite, col, 0.0), starts)
                counts = np.add.reduceat(finite.astype(np.float64), starts)
                means[key] = np.where(counts > 0, sums / counts, np.nan)
        self.ring.extend(times[ends], means)
        self._bucket, self._sums, self._counts = None, {}, {}


MAX_POINTS = 1500
"""A chart draws at most about this many points a series (a few per pixel of a wide chart)."""
LEVELS = (10.0, 60.0)
"""Bucket widths (seconds) of the coarser rings kept next to the 1 s samples."""


class MetricsHistory:
    """Rolling series sampled from the core's counters at a fixed rate. See the module docstring.

    Args:
        capacity: Samples kept (86,400: 24 h at one per second).
        rate_window: Seconds over which per-minute rates are averaged.
        util_window: Seconds over which utilisation is averaged.
        quality_window: Seconds over which success rate and mean step duration are taken.
    """

    def __init__(self, capacity: int = 86_400, *, rate_window: float = 60.0,
                 util_window: float = 300.0, quality_window: float = 900.0) -> None:
        self.ring = SeriesRing(BASE_SERIES, capacity)
        self.levels = [BucketMeans(BASE_SERIES, width, int(capacity // width) + 2) for width in LEVELS]
        """Means of :attr:`ring` per 10 s and per minute, for longer ranges."""
        self.rate_window = rate_window
        self.util_window = util_window
        self.quality_window = quality_window
        self.instruments: list[str] = []
        # monotonic totals built from today's counters (which reset at midnight)
        self._day_start: float | None = None
        self._seen: dict[str, float] = {}
        self._totals: dict[str, float] = {"jobs": 0.0, "failed": 0.0, "steps": 0.0, "step_seconds": 0.0}
        self._busy_total: dict[str, float] = {}
        self._busy_now: dict[str, bool] = {}
        self._last_time: float | None = None
        self._window: deque[tuple[float, dict[str, float]]] = deque()

    def add_instruments(self, ids: Iterable[str]) -> None:
        for iid in ids:
            if iid not in self._busy_total:
                self.instruments.append(iid)
                self._busy_total[iid] = 0.0
                self.ring.add_column(UTIL + iid)
                for level in self.levels:
                    level.ring.add_column(UTIL + iid)

    def sample(self, now: float, reading: Reading) -> bool:
        """Take one sample at ``now``; False (nothing taken) when time has not moved on."""
        if self._last_time is not None and now <= self._last_time:
            return False
        self.add_instruments(reading.busy)
        dt = 0.0 if self._last_time is None else now - self._last_time
        for iid, was_busy in self._busy_now.items():
            if was_busy:
                self._busy_total[iid] += dt
        self._busy_now = dict(reading.busy)
        self._last_time = now
        self._count(reading)
        totals = {**self._totals, **{UTIL + k: v for k, v in self._busy_total.items()}}
        self._window.append((now, totals))
        longest = max(self.rate_window, self.util_window, self.quality_window)
        while len(self._window) > 2 and self._window[1][0] <= now - longest:
            self._window.popleft()

        values: dict[str, float] = {QUEUE_DEPTH: float(reading.pending), RUNNING: float(reading.running)}
        span, old = self._ago(now, self.rate_window)
        per_min = 60.0 / span if span > 0 else 0.0
        values[ORDERS_PER_MIN] = (totals["jobs"] - old["jobs"]) * per_min
        values[STEPS_PER_MIN] = (totals["steps"] - old["steps"]) * per_min
        values[FAILURES_PER_MIN] = (totals["failed"] - old["failed"]) * per_min
        span, old = self._ago(now, self.util_window)
        for iid in self.instruments:
            key = UTIL + iid
            busy = totals[key] - old.get(key, 0.0)
            values[key] = min(100.0, 100.0 * busy / span) if span > 0 else (
                100.0 if self._busy_now.get(iid) else 0.0)
        _span, old = self._ago(now, self.quality_window)
        done = totals["jobs"] - old["jobs"]
        failed = totals["failed"] - old["failed"]
        values[SUCCESS_RATE] = 100.0 * done / (done + failed) if done + failed > 0 else math.nan
        steps = totals["steps"] - old["steps"]
        values[STEP_DURATION] = (totals["step_seconds"] - old["step_seconds"]) / steps if steps > 0 else math.nan
        self.ring.append(now, values)
        for level in self.levels:
            level.add(now, values)
        return True

    def ring_for(self, span: float) -> SeriesRing:
        """The finest ring that shows ``span`` seconds in at most :data:`MAX_POINTS` points."""
        if span <= MAX_POINTS:
            return self.ring
        for level in self.levels:
            if span / level.width <= MAX_POINTS:
                return level.ring
        return self.levels[-1].ring

    @property
    def minutes(self) -> SeriesRing:
        """The per-minute means."""
        return self.levels[-1].ring

    def extend(self, times: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Many ready-made samples at once (times ascending, after any sample so far); the
        coarser rings follow. For seeding and benchmarks."""
        times = np.asarray(times, dtype=np.float64)
        if not len(times):
            return
        self.add_instruments(k[len(UTIL):] for k in columns if k.startswith(UTIL))
        self.ring.extend(times, columns)
        for level in self.levels:
            level.extend(times, columns)
        self._last_time = float(times[-1])

    def _ago(self, now: float, window: float) -> tuple[float, dict[str, float]]:
        """(span, totals) of the oldest sample within ``window`` seconds of ``now``."""
        for t, totals in self._window:
            if t >= now - window:
                return now - t, totals
        t, totals = self._window[-1]
        return now - t, totals

    def _count(self, r: Reading) -> None:
        new_day = self._day_start is not None and r.day_start != self._day_start
        self._day_start = r.day_start
        current = {"jobs": float(r.jobs_completed), "failed": float(r.jobs_failed),
                   "steps": float(r.steps_completed),
                   "step_seconds": r.step_mean_seconds * r.steps_completed}
        for key, value in current.items():
            seen = self._seen.get(key)
            if seen is None:
                delta = 0.0  # the first reading is the baseline: history starts now
            elif new_day:
                delta = value  # counters restarted at midnight
            else:
                delta = max(0.0, value - seen)  # a retried failure leaves the failed count
            self._totals[key] += delta
            self._seen[key] = value

    def backfill(self, times: np.ndarray, columns: Mapping[str, np.ndarray]) -> None:
        """Seed the history with older samples (e.g. the core's minute buckets), before any sample."""
        if len(self.ring):
            raise RuntimeError("backfill only before the first sample")
        self.extend(times, columns)
        self._last_time = None  # the first live sample is the baseline of the counters

    def csv_rows(self, start: float) -> tuple[list[str], Iterable[Sequence[float]]]:
        """(header, rows) of every series from ``start`` on (for export)."""
        i = self.ring.since(start)
        names = self.ring.names
        cols = [self.ring.column(n)[i:] for n in names]
        return names, zip(*cols, strict=True)


def backfill_columns(metrics: Metrics, before: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The core's minute buckets that ended before ``before``, as history columns (one sample
    at the end of each bucket; the core's series are per minute already)."""
    times = np.asarray(metrics.times, dtype=np.float64)
    keep = times + metrics.width <= before
    if not keep.any():
        return np.empty(0), {}
    done = metrics.throughput[keep]
    failed = metrics.failures[keep]
    decided = done + failed
    with np.errstate(invalid="ignore", divide="ignore"):
        success = np.where(decided > 0, 100.0 * done / decided, np.nan)
    cols = {ORDERS_PER_MIN: done, STEPS_PER_MIN: metrics.step_throughput[keep],
            FAILURES_PER_MIN: failed, QUEUE_DEPTH: metrics.queue_depth[keep],
            RUNNING: metrics.running[keep], STEP_DURATION: metrics.step_duration[keep],
            SUCCESS_RATE: success}
    for iid in metrics.instruments:
        cols[UTIL + iid] = 100.0 * metrics.utilisation(iid)[keep]
    return times[keep] + metrics.width, cols


# ---------------------------------------------------------------------------- plots


def fast_plot(plot: pg.PlotItem) -> pg.PlotItem:
    """Live-history settings: clip to view, peak downsampling, fixed ranges, no mouse zoom, and
    axes (with their grid lines) cached as pixmaps: they change far less often than the curves,
    and replaying their drawing is most of a repaint otherwise (about 2 ms instead of 10 for five
    charts)."""
    for name in ("left", "bottom"):
        plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
    plot.setClipToView(True)
    plot.setDownsampling(auto=True, mode="peak")
    plot.disableAutoRange()
    plot.setMouseEnabled(x=False, y=False)
    plot.hideButtons()
    plot.setMenuEnabled(False)
    return plot


def fast_curve(plot: pg.PlotItem, colour: QColor | str, name: str, *, finite: bool = True,
               width: float = 1.0) -> pg.PlotDataItem:
    """A curve drawn cheaply: width-1 pen, no antialiasing; ``finite`` skips the NaN check
    (series that can hold NaN pass ``finite=False`` and are drawn with gaps)."""
    pen = pg.mkPen(QColor(colour), width=width)
    return plot.plot(name=name, pen=pen, antialias=False, skipFiniteCheck=finite,
                     connect="all" if finite else "finite")


def style_plot(plot: pg.PlotItem, theme: Theme) -> None:
    """Axis, grid and label colours of ``plot`` for ``theme``."""
    fg = theme.color("chart_fg")
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setPen(pg.mkPen(theme.colors["card_border"]))
        axis.setTextPen(pg.mkPen(fg))
    # horizontal grid lines only: they carry the values; vertical ones cost a repaint each
    plot.showGrid(x=False, y=True, alpha=float(theme.colors["chart_grid"]))
    title = plot.titleLabel.text
    if title:
        plot.setTitle(title, color=theme.colors["chart_fg"], size="9pt")


def nice_ceiling(value: float) -> float:
    """A round upper bound for an axis (1, 2, 2.5, 5 x 10^k) at least ``value``."""
    if not math.isfinite(value) or value <= 0:
        return 1.0
    exp = 10.0 ** math.floor(math.log10(value))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= m * exp:
            return m * exp
    return 10 * exp
