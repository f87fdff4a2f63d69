"""GUI benchmark: the console window over a 100,000-order store, offscreen, on the qasync loop.

Measures, each with a baseline taken in the same run and the ratio to it:

- **window ready**: main window built, shown, every order loaded into the Jobs table, painted
  (after the runtime started; the runtime's own start, which includes the demo instruments'
  simulated connection times, is printed apart). Baseline: a bare ``QTableView`` over a minimal
  ``QAbstractTableModel`` fed with the same rows read from the same store.
- **sort and filter** of the Jobs model (``model.sort(column, order)``, ``model.set_filter``)
  plus the repaint of the visible rows. Baseline: ``QSortFilterProxyModel`` sort and fixed-string
  filter over a 100k-row copy in a minimal model.
- **runs as a tree**: the Jobs model turned into runs that expand to their steps, then every run
  expanded and collapsed at once (``expand_all``), each with a repaint. Baseline: the flat
  model's rebuild of the same rows (``set_filter`` of the empty filter).
- **event-loop lag** (an ``await asyncio.sleep(0.005)`` probe: p50 / p99 / max; for the bulk
  cancel also the loop thread's own part, its CPU time within each sample, which tells the
  code's stalls from a busy machine's) while real store
  transitions stream at 1,000/s (plus 200 instrument progress reports/s) and the demo workcell
  runs; once in the default layout, once with the Metrics tab showing a full 24 h history.
  Baseline: the same window idle.
- **bulk cancel** of N real runs (created and executed: their steps wait in the dispatcher's
  queue) through ``Runtime.bulk("cancel", ...)``, with the loop lag meanwhile. Baseline: N operator
  transitions (status + audit in one write) awaited one by one — the persistence floor.
- **chart redraw** of the Metrics panel with 24 h of 1 s samples (86,400 per series, 15 series):
  ``setData`` of the shown range + a full repaint. Baseline: the same curves in default-option
  pyqtgraph plots (no clip to view, no downsampling, finite checks on).
- **peak RSS** of the process. Baseline: the process after Qt started, before the store.

The table, proxy and default-pyqtgraph baselines run in a fresh subprocess (``--baselines``),
so their copies of the data neither slow the console's measurements nor count in its RSS.

With ``--year STORE`` (a store of a year of orders, e.g. the one ``bench/history.py --orders
1000000 --generate-only`` keeps in its cache: 90 % finished more than 7 days ago) it measures
only **window ready** and its RSS, each in a fresh process over a copy of that store: the Jobs
table holding the live window (``[JOBS] live_days = 7``), against the same window loading every
order (``live_days`` larger than the store's age) as the in-run baseline.

usage: QT_QPA_PLATFORM=offscreen python bench/gui.py [--orders 100000] [--rate 1000]
       [--seconds 10] [--bulk 10000] [--proxy-rows 100000] [--no-gc-freeze]
       python bench/gui.py --year /tmp/lc-history-bench/orders-1000000.sqlite3
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.setswitchinterval(0.001)  # as the console does (console/cli.py)

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
import PySide6  # noqa: E402, F401 - the binding, before qasync looks for one
import qasync  # noqa: E402
from PySide6.QtCore import (  # noqa: E402
    QAbstractTableModel,
    QModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtWidgets import QApplication, QTableView, QVBoxLayout, QWidget  # noqa: E402

from console.app import settings_for  # noqa: E402
from console.main_window import MainWindow  # noqa: E402
from core import gcpolicy  # noqa: E402
from core.events import StepProgress  # noqa: E402
from core.orders import Order, OrderStatus  # noqa: E402
from core.runtime import Runtime  # noqa: E402
from core.store import DB_FILENAME, Store  # noqa: E402
from core.templates import template_from_dict  # noqa: E402
from panels.charts import BASE_SERIES, UTIL, MetricsHistory  # noqa: E402
from panels.jobs_filter import OrderFilter  # noqa: E402
from panels.widgets import lag_stats  # noqa: E402

FLOW = {"name": "Bench flow", "inputs": [{"name": "plate", "type": "string"}], "definition": {"steps": [
    {"id": "read", "kind": "PlateReader.ReadPlate"},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]}]}}
CYCLE = (OrderStatus.Scheduled, OrderStatus.Running, OrderStatus.Complete, OrderStatus.Created)


def rss_mb() -> float:
    """Peak resident set size of the process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_now_mb() -> float:
    """Current resident set size (MB)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PlainModel(QAbstractTableModel):
    """The least a table model can do: rows of tuples, display text per cell."""

    def __init__(self, rows: list[tuple]) -> None:
        super().__init__()
        self.rows = rows

    def rowCount(self, parent: Any = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Any = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else 12

    def data(self, index: Any, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            value = self.rows[index.row()][index.column()]
            return "" if value is None else str(value)
        return None


class Report:
    """Collects lines: name, value, target, baseline and ratio."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str, str, str]] = []

    def add(self, name: str, value: float, unit: str, target: str = "", baseline: float | None = None,
            baseline_what: str = "", fmt: str = "{:.1f}") -> None:
        shown = fmt.format(value) + f" {unit}"
        base = f"{fmt.format(baseline)} {unit} {baseline_what}".strip() if baseline is not None else ""
        ratio = f"{value / baseline:.2f}x" if baseline else ""
        self.lines.append((name, shown, target, base, ratio))
        print(f"  {name}: {shown}" + (f"  (baseline {base}, ratio {ratio})" if base else ""), flush=True)

    def print(self) -> None:
        widths = [max(len(line[i]) for line in [*self.lines, self.header]) for i in range(5)]
        for line in [self.header, *self.lines]:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())

    header = ("measure", "value", "target", "baseline (same run)", "ratio")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


async def lag_during(window: MainWindow, coro: Any, passes: list[float] | None = None
                     ) -> tuple[Any, list[float]]:
    """Await ``coro`` with the window's loop-lag probe recording; the seconds of each full garbage
    collection meanwhile go to ``passes``."""
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2 and passes is not None:
            if phase == "start":
                started.append(time.perf_counter())
            elif started:
                passes.append(time.perf_counter() - started.pop())

    gc.callbacks.insert(0, on_gc)  # before the policy's own callback, which may freeze at "stop"
    window.lag_probe.record_all()
    try:
        result = await coro
    finally:
        lags = window.lag_probe.stop_recording()
        gc.callbacks.remove(on_gc)
    return result, lags


async def stream(runtime: Runtime, orders: list[str], running: list[str], rate: float, seconds: float,
                 ) -> tuple[int, float]:
    """Real store transitions at ``rate``/s (cycling ``orders`` through statuses) and progress
    reports at rate/5 per second, for ``seconds``; returns (transitions, seconds taken)."""
    core = runtime.ledger
    done = 0
    i = 0
    t0 = time.perf_counter()
    tick = 0.01
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(elapsed * rate) - done
        if due > 0:
            batch = []
            for _ in range(due):
                oid = orders[i % len(orders)]
                batch.append(core.set_status(oid, CYCLE[(i // len(orders)) % len(CYCLE)], who="bench"))
                i += 1
            await asyncio.gather(*batch)
            done += due
            for k in range(max(1, due // 5)):
                oid = running[(i + k) % len(running)]
                core.bus.publish(StepProgress(order_id=oid, instrument_id="PlateReader1",
                                              progress=((i + k) % 100) / 100))
        await asyncio.sleep(tick)
    return done, time.perf_counter() - t0


def lag_line(report: Report, name: str, lags: list[float], idle: tuple[float, float, float]) -> None:
    stats = lag_stats(lags) or (0.0, 0.0, 0.0)
    for label, value, base, target in (("p50", stats[0], idle[0], ""), ("p99", stats[1], idle[1], "<= 16 ms"),
                                       ("max", stats[2], idle[2], "<= 50 ms")):
        report.add(f"{name} lag {label}", value * 1000, "ms", target, base * 1000, "idle", "{:.2f}")


def day_columns(n: int, end: float, instruments: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` 1 s samples ending at ``end`` for every Metrics series (plausible shapes)."""
    t = end - n + 1 + np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(3)
    phase = np.linspace(0, 12 * np.pi, n)
    cols: dict[str, np.ndarray] = {
        "orders_per_min": 4 + 2 * np.sin(phase) + rng.normal(0, 0.5, n),
        "steps_per_min": 14 + 5 * np.sin(phase) + rng.normal(0, 1.0, n),
        "failures_per_min": np.abs(rng.normal(0, 0.2, n)),
        "queue_depth": 200 + 80 * np.sin(phase / 3) + rng.normal(0, 5, n),
        "running": 120 + 20 * np.sin(phase) + rng.normal(0, 3, n),
        "step_duration": 60 + 10 * np.sin(phase / 2) + rng.normal(0, 2, n),
        "success_rate": np.clip(96 + 3 * np.sin(phase) + rng.normal(0, 1, n), 0, 100),
    }
    assert set(cols) == set(BASE_SERIES)
    for k, iid in enumerate(instruments):
        cols[UTIL + iid] = np.clip(50 + 40 * np.sin(phase + k) + rng.normal(0, 5, n), 0, 100)
    return t, cols


def fill_day(panel: Any, end: float) -> None:
    """A fresh Metrics history of 24 h of 1 s samples, all 15 series."""
    history = MetricsHistory()
    history.add_instruments(panel.history.instruments)
    history.extend(*day_columns(history.ring.capacity, end, history.instruments))
    panel.set_history(history)


def default_plots(layout: list[int], width: int, height: int) -> tuple[QWidget, list[list[pg.PlotDataItem]]]:
    """Plots with pyqtgraph's default options, one per chart, ``layout[i]`` curves each."""
    box = QWidget()
    column = QVBoxLayout(box)
    charts: list[list[pg.PlotDataItem]] = []
    for count in layout:
        widget = pg.PlotWidget(axisItems={"bottom": pg.DateAxisItem(orientation="bottom")})
        column.addWidget(widget)
        charts.append([widget.plot(pen=pg.intColor(i)) for i in range(count)])
    box.resize(width, height)
    box.show()
    return box, charts


def baselines(args: argparse.Namespace) -> dict[str, float]:
    """The Qt-only baselines, in this (fresh) process: table, proxy, default pyqtgraph."""
    app = QApplication.instance() or QApplication(sys.argv)
    store = Store(Path(args.baselines)).open()
    out: dict[str, float] = {}
    t = time.perf_counter()
    rows = store.order_rows()
    bare = QTableView()
    bare.verticalHeader().setDefaultSectionSize(22)
    bare.setModel(PlainModel(rows))
    bare.resize(1200, 700)
    bare.show()
    bare.repaint()
    out["bare_table"] = time.perf_counter() - t
    proxy = QSortFilterProxyModel()
    proxy.setSourceModel(PlainModel(rows[: args.proxy_rows]))
    out["proxy_rows"] = min(len(rows), args.proxy_rows)
    out["proxy_sort"] = timed(partial(proxy.sort, 4))
    proxy.setFilterKeyColumn(2)
    out["proxy_filter"] = timed(partial(proxy.setFilterFixedString, "ELISA"))
    layout = [int(n) for n in args.chart_layout.split(",")]
    instruments = [f"I{i}" for i in range(layout[2])]
    times, cols = day_columns(86_400, time.time(), instruments)
    names = [["orders_per_min", "steps_per_min", "failures_per_min"], ["queue_depth", "running"],
             [UTIL + i for i in instruments], ["step_duration"], ["success_rate"]]
    box, charts = default_plots(layout, args.chart_width, args.chart_height)
    runs = []
    for _ in range(max(3, args.repeats // 3)):
        runs.append(timed(lambda: ([c.setData(times, cols[n]) for curves, chart in zip(charts, names, strict=True)
                                    for c, n in zip(curves, chart, strict=True)], box.grab())))
    out["default_plots"] = statistics.median(runs)
    box.close()
    bare.close()
    store.close()
    app.processEvents()
    return out


async def run_baselines(args: argparse.Namespace, store_path: Path, layout: list[int], size: tuple[int, int],
                        ) -> dict[str, float]:
    """:func:`baselines` in a fresh subprocess (the event loop keeps running meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--baselines", str(store_path), "--proxy-rows", str(args.proxy_rows),
        "--repeats", str(args.repeats), "--chart-layout", ",".join(map(str, layout)),
        "--chart-width", str(size[0]), "--chart-height", str(size[1]),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    stdout, _ = await proc.communicate()
    return json.loads(stdout.decode().strip().splitlines()[-1])


async def main(args: argparse.Namespace) -> None:
    report = Report()
    app = QApplication.instance()
    rss_qt = rss_mb()
    data_dir = Path(tempfile.mkdtemp(prefix="labconsole-bench-"))
    t = time.perf_counter()
    # the test data is written by another process, so the console's memory figures are its own
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", "--data-dir", str(data_dir), "demo-orders", str(args.orders),
        cwd=str(ROOT), stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out
    store = Store(data_dir / DB_FILENAME).open()
    made = store.count_orders()
    print(f"store: {made:,} demo orders written in {time.perf_counter() - t:.1f} s by a separate process "
          f"({data_dir})", flush=True)

    # ------------------------------------------------------------------ window ready
    print("window ready", flush=True)
    if not args.no_gc_freeze:
        gcpolicy.enable()  # the console's collector policy (console/app.py, core/gcpolicy.py)
    t0 = time.perf_counter()
    runtime = Runtime.build(data_dir, store=store)
    await runtime.start()
    t_runtime = time.perf_counter() - t0
    t1 = time.perf_counter()
    window = MainWindow(runtime, settings_for(data_dir))
    window.show()
    loaded = await window.load_orders()
    window.repaint()
    t_ready = time.perf_counter() - t1
    window.start_loop_lag()
    rss_ready = rss_now_mb()
    if not args.no_gc_freeze:
        gc.freeze()  # what the console does once the orders are loaded (console/app.py)

    layout = [len(c.series) for c in window.metrics.charts]
    window.docks["Metrics"].raise_()
    await asyncio.sleep(0.2)
    size = (window.metrics.charts_box.width(), window.metrics.charts_box.height())
    window.docks["Detail"].raise_()
    print(f"  (baselines in a subprocess; QSortFilterProxyModel over {args.proxy_rows:,} rows: ~10 s)",
          flush=True)
    base = await run_baselines(args, store.path, layout, size)
    t_bare = base["bare_table"]
    report.add("runtime start (demo instruments connect: up to 3 s simulated)", t_runtime, "s", fmt="{:.2f}")
    report.add(f"window ready: build, show, load {loaded:,} orders, paint", t_ready, "s", "<= 2 s", t_bare,
               "bare QTableView", "{:.2f}")
    report.add("window ready incl. runtime start", t_runtime + t_ready, "s", "", fmt="{:.2f}")
    report.add("RSS with the window ready (current)", rss_ready, "MB", "", rss_qt, "Qt started", "{:.0f}")

    # ------------------------------------------------------------------ sort and filter
    print("sort and filter", flush=True)
    window.jobs.filter_bar.choose_view("All orders")  # it opens on "Needs attention": sort every order
    model = window.jobs_model
    view = window.jobs.view
    model.set_tree(False)  # every order a row of its own: the flat figures; the tree follows
    headers = {model.headerData(c, Qt.Orientation.Horizontal): c for c in range(model.columnCount())}
    sorts = []
    for header, order in (("Status", Qt.SortOrder.AscendingOrder), ("Created", Qt.SortOrder.DescendingOrder),
                          ("Template", Qt.SortOrder.AscendingOrder), ("ID", Qt.SortOrder.DescendingOrder)):
        sorts.append((header, timed(lambda c=headers[header], o=order: (model.sort(c, o),
                                                                         view.viewport().repaint()))))
        await asyncio.sleep(0)
    filters = []
    for label, spec in (("status = Error", OrderFilter(statuses=frozenset({OrderStatus.Error}))),
                        ("text 'elisa'", OrderFilter(text="elisa")),
                        ("runs only", OrderFilter(kind="runs")),
                        ("cleared", OrderFilter())):
        filters.append((label, timed(lambda s=spec: (model.set_filter(s), view.viewport().repaint())),
                        model.rowCount()))
        await asyncio.sleep(0)
    t_proxy_sort, t_proxy_filter = base["proxy_sort"], base["proxy_filter"]
    for header, seconds in sorts:
        report.add(f"Jobs sort by {header} + repaint", seconds * 1000, "ms", "<= 100 ms",
                   t_proxy_sort * 1000, f"proxy sort, {base['proxy_rows']:,.0f} rows", "{:.0f}")
    for label, seconds, shown in filters:
        report.add(f"Jobs filter {label} ({shown:,} rows) + repaint", seconds * 1000, "ms", "<= 100 ms",
                   t_proxy_filter * 1000, "proxy filter", "{:.0f}")

    # ------------------------------------------------------------------ runs as a tree
    print("runs as a tree", flush=True)
    t_flat = timed(lambda: (model.set_filter(OrderFilter()), view.viewport().repaint()))
    t_tree = timed(lambda: (model.set_tree(True), view.viewport().repaint()))
    runs_shown = model.rowCount()
    t_expand = timed(lambda: (model.expand_all(True), view.viewport().repaint()))
    expanded_rows = model.rowCount()
    t_collapse = timed(lambda: (model.expand_all(False), view.viewport().repaint()))
    report.add(f"Jobs as a tree: runs collapsed ({runs_shown:,} rows) + repaint", t_tree * 1000, "ms",
               "<= 100 ms", t_flat * 1000, "flat model rebuild of every order", "{:.0f}")
    report.add(f"Jobs tree: expand all runs ({expanded_rows:,} rows) + repaint", t_expand * 1000, "ms",
               "<= 100 ms", t_flat * 1000, "flat model rebuild of every order", "{:.0f}")
    report.add("Jobs tree: collapse all + repaint", t_collapse * 1000, "ms", "<= 100 ms", t_flat * 1000,
               "flat model rebuild of every order", "{:.0f}")
    model.set_tree(False)

    # ------------------------------------------------------------------ loop lag
    print("event-loop lag", flush=True)
    await asyncio.sleep(1.0)  # let the loading settle: the baseline is the idle window
    _, idle_lags = await lag_during(window, asyncio.sleep(args.idle))
    idle = lag_stats(idle_lags) or (0.0, 0.0, 0.0)
    report.add("idle lag p50 / p99 / max", idle[1] * 1000, "ms (p99)", fmt="{:.2f}")
    core = runtime.ledger
    made_orders = []
    for _batch in range(10):
        made_orders += await asyncio.gather(*[core.create_order(Order(templateName="Bench stream"), who="bench")
                                              for _ in range(200)])
    ids = [o.identifier for o in made_orders]
    running = [r[0] for r in await store.read(lambda _c: store.order_rows(
        "status = ?", (int(OrderStatus.Running),), limit=200))] or ids[:200]
    await runtime.engine.publish(template_from_dict(FLOW))
    for k in range(24):  # the demo workcell works meanwhile
        run_id = await runtime.engine.create_instance("Bench flow", {"plate": f"W{k}"}, who="bench")
        await runtime.engine.execute_workflow(run_id)
    await asyncio.sleep(1.0)
    frames = window.bridge.frames
    (sent, took), lags = await lag_during(window, stream(runtime, ids, running, args.rate, args.seconds))
    report.add("stream (default layout): transitions/s achieved", sent / took, "/s", f"{args.rate:.0f}/s",
               fmt="{:.0f}")
    report.add("stream: bridge frames/s", (window.bridge.frames - frames) / took, "/s", fmt="{:.0f}")
    lag_line(report, "stream (default layout)", lags, idle)

    window.metrics.set_range(86400.0)
    fill_day(window.metrics, float(runtime.clock.now()))
    window.docks["Metrics"].raise_()
    await asyncio.sleep(0.5)
    redraws = window.metrics.redraws
    (sent, took), lags = await lag_during(window, stream(runtime, ids, running, args.rate, args.seconds))
    report.add("stream (Metrics tab, 24 h history): transitions/s", sent / took, "/s", f"{args.rate:.0f}/s",
               fmt="{:.0f}")
    lag_line(report, "stream (Metrics 24 h shown)", lags, idle)
    report.add("Metrics redraws during that stream (4 Hz timer, drawing when a 1 s sample came)",
               (window.metrics.redraws - redraws) / took, "/s", fmt="{:.1f}")

    # ------------------------------------------------------------------ chart redraw
    print("chart redraw", flush=True)
    panel = window.metrics
    panel.sample_timer.stop()
    fill_day(panel, float(runtime.clock.now()))
    fine = panel.history.ring
    series = sum(len(c.series) for c in panel.charts)

    def redraw_times(seconds: float) -> list[float]:
        panel.set_range(seconds)
        out = []
        for _ in range(args.repeats):
            fine.version += 1  # as if a new sample had arrived
            out.append(timed(lambda: (panel.redraw(), panel.charts_box.grab())))
        return out

    day = redraw_times(86400.0)
    one = panel.charts[0]
    single = []
    for _ in range(args.repeats):
        fine.version += 1
        single.append(timed(lambda: (panel.redraw(), one.widget.grab())))
    hour = redraw_times(3600.0)
    curves = [(s.curve, s.column) for c in panel.charts for s in c.series]
    raw = []
    panel.set_range(86400.0)
    for _ in range(max(3, args.repeats // 3)):
        raw.append(timed(lambda: ([c.setData(fine.times, fine.column(col)) for c, col in curves],
                                  panel.charts_box.grab())))
    panel.redraw(force=True)
    panel.sample_timer.start()
    default = base["default_plots"] * 1000
    report.add(f"chart redraw 24 h of 1 s samples ({len(fine):,} x {series} series; minute means "
               "drawn), median", statistics.median(day) * 1000, "ms", "<= 10 ms", default,
               "default pyqtgraph, all points", "{:.1f}")
    report.add("  of which one chart (throughput, 3 series) incl. the panel's setData, median",
               statistics.median(single) * 1000, "ms", "<= 10 ms", fmt="{:.1f}")
    report.add("chart redraw 1 h (360 points of 10 s means a series), median",
               statistics.median(hour) * 1000, "ms", "<= 10 ms", default, "default pyqtgraph, 24 h", "{:.1f}")
    report.add("chart redraw 24 h, all 86,400 points, clip + peak downsampling, median",
               statistics.median(raw) * 1000, "ms", "", default, "default pyqtgraph", "{:.1f}")

    rss_before_bulk = rss_now_mb()

    # ------------------------------------------------------------------ bulk cancel
    print(f"bulk cancel of {args.bulk:,} runs", flush=True)
    # the default layout's tabs, as an operator has them who selects runs in Jobs and cancels them
    # (the stream above left Metrics in front of Jobs)
    window.docks["Jobs"].raise_()
    window.docks["Detail"].raise_()
    t = time.perf_counter()
    runs = []
    for k in range(args.bulk):
        run_id = await runtime.engine.create_instance("Bench flow", {"plate": f"B{k}"}, who="bench")
        await runtime.engine.execute_workflow(run_id)
        runs.append(run_id)
        if k % 50 == 0:
            await asyncio.sleep(0)
    print(f"  ({len(runs):,} runs created and started in {time.perf_counter() - t:.1f} s)", flush=True)
    await asyncio.sleep(1.0)
    t = time.perf_counter()
    passes: list[float] = []
    results, lags = await lag_during(window, runtime.bulk("cancel", runs, who="bench", reason="benchmark"), passes)
    t_bulk = time.perf_counter() - t
    ok = sum(r.ok for r in results)
    floor_ids = [r[0] for r in await store.read(lambda _c: store.order_rows(
        "parent_id IS NULL AND status = ?", (int(OrderStatus.Complete),), limit=args.bulk))]

    async def floor() -> None:
        for n, oid in enumerate(floor_ids, 1):
            await core.operator_status(oid, OrderStatus.Canceled, action="cancel", reason="benchmark",
                                       who="bench")
            if n % 20 == 0:
                await asyncio.sleep(0)

    t = time.perf_counter()
    await floor()
    t_floor = time.perf_counter() - t
    report.add(f"bulk cancel {len(runs):,} runs ({ok:,} ok) via Runtime.bulk", t_bulk, "s", "",
               t_floor * len(runs) / max(1, len(floor_ids)), "same count of audited transitions", "{:.1f}")
    stats = lag_stats(lags) or (0.0, 0.0, 0.0)
    report.add("bulk cancel lag p99", stats[1] * 1000, "ms", "<= 16 ms", idle[1] * 1000, "idle", "{:.1f}")
    report.add("bulk cancel lag max", stats[2] * 1000, "ms", "<= 50 ms", idle[2] * 1000, "idle", "{:.1f}")
    own = lag_stats(window.lag_probe.own_lags) or (0.0, 0.0, 0.0)
    report.add("  its loop thread's own part (CPU within each sample) p99", own[1] * 1000, "ms", "", fmt="{:.1f}")
    report.add("  its loop thread's own part max", own[2] * 1000, "ms", "", fmt="{:.1f}")
    report.add(f"  full garbage collections during it: {len(passes)}, longest (ms)",
               max(passes, default=0.0) * 1000, "ms", "", fmt="{:.0f}")
    report.add(f"  their total; slow passes that froze their survivors so far: "
               f"{gcpolicy.frozen_after_slow_passes()}", sum(passes) * 1000, "ms", "", fmt="{:.0f}")

    # ------------------------------------------------------------------ memory
    report.add("RSS before the bulk runs (current)", rss_before_bulk, "MB", "",
               rss_qt, "Qt started", "{:.0f}")
    report.add(f"RSS after {len(runs):,} more runs were created and cancelled (current)", rss_now_mb(), "MB",
               "", rss_qt, "Qt started", "{:.0f}")
    report.add("peak RSS", rss_mb(), "MB", "<= 400 MB", rss_qt, "Qt started", "{:.0f}")

    window.close()
    await asyncio.sleep(0.1)
    await runtime.close()
    print()
    print(f"labconsole GUI benchmark: {args.orders:,} orders, offscreen, Python {sys.version.split()[0]}, "
          f"PySide6 {PySide6.__version__}, pyqtgraph {pg.__version__}")
    report.print()
    app.processEvents()


async def ready_only(data_dir: Path) -> dict[str, float]:
    """Window ready over the store of ``data_dir`` (its config.ini sets ``[JOBS] live_days``)."""
    rss_qt = rss_now_mb()
    t0 = time.perf_counter()
    runtime = Runtime.build(data_dir)
    await runtime.start()
    t_runtime = time.perf_counter() - t0
    t1 = time.perf_counter()
    window = MainWindow(runtime, settings_for(data_dir))
    window.show()
    loaded = await window.load_orders()
    window.repaint()
    t_ready = time.perf_counter() - t1
    out = {"ready": t_ready, "runtime": t_runtime, "rows": float(loaded), "rss_ready": rss_now_mb(),
           "rss_peak": rss_mb(), "rss_qt": rss_qt, "stored": float(window.jobs.stored_orders)}
    window.close()
    await runtime.close()
    return out


async def year(args: argparse.Namespace) -> None:
    """Window ready and RSS over a year of orders: the live window against every order."""
    data_dir = Path(tempfile.mkdtemp(prefix="labconsole-bench-year-"))
    t = time.perf_counter()
    shutil.copyfile(args.year, data_dir / DB_FILENAME)
    print(f"store copied in {time.perf_counter() - t:.1f} s ({data_dir})", flush=True)
    results = {}
    for name, days in (("live", 7.0), ("everything", 100_000.0)):
        (data_dir / "config.ini").write_text(f"[JOBS]\nlive_days = {days:g}\n", encoding="utf-8")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--ready-only", str(data_dir), stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"}, cwd=str(data_dir))
        stdout, _ = await proc.communicate()
        results[name] = json.loads(stdout.decode().strip().splitlines()[-1])
        print(f"  {name}: {results[name]}", flush=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    live, every = results["live"], results["everything"]
    report = Report()
    report.add(f"window ready, live window ({live['rows']:,.0f} of {live['stored']:,.0f} orders)", live["ready"],
               "s", "<= 1.5 s", every["ready"], f"loading all {every['rows']:,.0f}", "{:.2f}")
    report.add("window ready incl. runtime start", live["ready"] + live["runtime"], "s", "",
               every["ready"] + every["runtime"], "loading all", "{:.2f}")
    report.add("RSS with the window ready (current)", live["rss_ready"], "MB", "<= 300 MB", every["rss_ready"],
               "loading all", "{:.0f}")
    report.add("peak RSS", live["rss_peak"], "MB", "", every["rss_peak"], "loading all", "{:.0f}")
    print()
    print(f"labconsole GUI benchmark, a year of orders: {live['stored']:,.0f} in the store, offscreen, "
          f"Python {sys.version.split()[0]}, PySide6 {PySide6.__version__}")
    report.print()


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="store transitions per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each stream phase")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle baseline")
    parser.add_argument("--bulk", type=int, default=10_000, help="runs to cancel in bulk")
    parser.add_argument("--proxy-rows", type=int, default=100_000, help="rows of the proxy baseline")
    parser.add_argument("--repeats", type=int, default=15, help="chart redraws to take the median of")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="without the console's collector policy: no gc.freeze() once the orders are "
                             "loaded, no freeze after a slow full collection (core/gcpolicy.py)")
    parser.add_argument("--year", type=Path, default=None, metavar="STORE",
                        help="window ready and RSS over a copy of STORE: live window against every order")
    parser.add_argument("--baselines", help=argparse.SUPPRESS)
    parser.add_argument("--ready-only", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--chart-layout", default="3,2,8,1,1", help=argparse.SUPPRESS)
    parser.add_argument("--chart-width", type=int, default=488, help=argparse.SUPPRESS)
    parser.add_argument("--chart-height", type=int, default=560, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baselines:
        print(json.dumps(baselines(args)))
        return
    app = QApplication.instance() or QApplication(sys.argv)
    app.setQuitOnLastWindowClosed(False)
    with asyncio.Runner(loop_factory=lambda: qasync.QEventLoop(app)) as runner:
        if args.ready_only is not None:
            print(json.dumps(runner.run(ready_only(args.ready_only))))
        elif args.year is not None:
            runner.run(year(args))
        else:
            runner.run(main(args))


if __name__ == "__main__":
    run()
