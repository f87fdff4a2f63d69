"""Metrics panel over a real runtime on a virtual clock: sampled history, redraws on its fixed-rate
timer, the time range, PNG and CSV export through its own buttons and save dialog; and the ring
buffer and rolling rates underneath."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from console.bridge import EventBridge
from core.clock import VirtualClock
from core.runtime import Runtime
from core.templates import template_from_dict
from core.workcell import parse_workcell
from panels.charts import (
    ORDERS_PER_MIN,
    QUEUE_DEPTH,
    STEP_DURATION,
    STEPS_PER_MIN,
    SUCCESS_RATE,
    UTIL,
    MetricsHistory,
    Reading,
    SeriesRing,
)
from panels.metrics import REDRAW_MS, SAMPLE_MS, MetricsPanel

FLOW = {"name": "Flow", "inputs": [{"name": "plate", "type": "string"}], "definition": {"steps": [
    {"id": "read", "kind": "PlateReader.ReadPlate"},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]}]}}


@pytest.fixture
def charts(store, data_dir, qtbot, qrun):
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1)
    qrun(rt.start(templates_dir=None))
    qrun(clock.settle())
    bridge = EventBridge(rt.ledger.bus)
    panel = MetricsPanel(rt, bridge)
    qtbot.addWidget(panel)
    panel.resize(620, 760)
    panel.show()
    yield rt, clock, panel
    panel.shutdown()
    assert not panel.sample_timer.isActive() and not panel.redraw_timer.isActive()
    panel.close()
    bridge.close()
    qrun(rt.close())


def _run_for(qrun, rt, clock, panel, seconds: int, step: int = 10) -> None:
    for _ in range(seconds // step):
        qrun(clock.advance(step))
        panel.sample()


def _csv(path):
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_history_redraws_at_the_fixed_rate_and_exports(charts, qtbot, qrun, tmp_path):
    rt, clock, panel = charts
    assert panel.sample_timer.isActive() and panel.sample_timer.interval() == SAMPLE_MS
    assert panel.redraw_timer.isActive() and panel.redraw_timer.interval() == REDRAW_MS
    assert [s.label for s in panel.charts[2].series] == ["Reader1", "Reader2", "Arm", "Sealer"]
    panel.sample_timer.stop()  # samples are taken here, at known virtual times
    panel.set_range(900.0)

    qrun(rt.engine.publish(template_from_dict(FLOW)))
    runs = [qrun(rt.start_run("Flow", {"plate": f"P{i}"}, who="ann")) for i in range(6)]
    _run_for(qrun, rt, clock, panel, 600)
    assert not any(rt.run_is_active(r) for r in runs)
    samples = len(panel.history.ring)
    assert samples == panel.samples == 60
    assert panel.sample() is False, "no new sample while time stands still"

    # the timer (not a call here) redraws once the new samples are there, and only then
    redraws = panel.redraws
    qtbot.waitUntil(lambda: panel.redraws > redraws)
    drawn = panel.redraws
    qtbot.wait(3 * REDRAW_MS)
    assert panel.redraws == drawn, "nothing new: no redraw"
    steps_curve = panel.charts[0].series[1].curve
    x, y = steps_curve.xData, steps_curve.yData
    assert len(x) == samples and x.dtype == np.float64
    assert np.nanmax(y) > 0, "steps per minute rose while the runs went through"
    util = {s.label: s.curve.yData for s in panel.charts[2].series}
    assert np.nanmax(util["Reader1"]) > 0 and np.nanmax(util["Sealer"]) > 0
    assert np.nanmax(util["Arm"]) == 0, "the arm had nothing to do"
    assert panel.history.ring.last(SUCCESS_RATE) == 100.0
    assert panel.history.ring.last(STEP_DURATION) == pytest.approx(40.0, abs=1), "60 s reads, 20 s seals"
    view_end = panel.charts[0].widget.getPlotItem().vb.viewRange()[0][1]
    assert clock.now() <= view_end <= clock.now() + 900 / 600, "the view moves a pixel at a time"
    plot = panel.charts[0].widget.getPlotItem()
    assert plot.clipToViewMode() and plot.downsampleMode()[1], "clip to view and auto downsampling on"

    # 20 more minutes at one sample a minute; 15 minutes show 16 samples (both ends included)
    _run_for(qrun, rt, clock, panel, 1200, step=60)
    assert panel.range_box.currentText() == "15 min"
    panel.redraw()
    shown = len(panel.charts[1].series[0].curve.xData)
    assert shown == 16
    # longer ranges draw coarser means: 10 s buckets for 1 h and 4 h, minutes for 12 h and 24 h
    panel.set_range(3600.0)
    assert len(panel.charts[1].series[0].curve.xData) == 60 + 20, "one sample per 10 s bucket"
    assert "10 s means" in panel.info.full_text()
    panel.set_range(86400.0)
    minutes = panel.history.minutes
    assert len(panel.charts[1].series[0].curve.xData) == len(minutes) == 11 + 20, "10:00 starts an 11th"
    assert "60 s means" in panel.info.full_text()
    panel.set_range(900.0)

    # PNG through the button and the save dialog
    png = tmp_path / "metrics.png"
    qtbot.mouseClick(panel.png_button, Qt.MouseButton.LeftButton)
    dialog = panel.file_dialog
    assert dialog is not None and dialog.isVisible()
    dialog.selectFile(str(png))
    dialog.accept()
    image = QImage(str(png))
    assert not image.isNull()
    assert (image.width(), image.height()) == (panel.charts_box.width(), panel.charts_box.height())
    assert "Saved" in panel.info.full_text()

    # CSV through the button: every series of the shown range, one row per sample
    table = tmp_path / "metrics.csv"
    qtbot.mouseClick(panel.csv_button, Qt.MouseButton.LeftButton)
    panel.file_dialog.selectFile(str(table))
    panel.file_dialog.accept()
    rows = _csv(table)
    header = rows[0]
    assert header[:3] == ["time", "epoch_s", ORDERS_PER_MIN]
    assert {"utilisation_pct:Reader1", "utilisation_pct:Sealer", QUEUE_DEPTH, STEPS_PER_MIN} <= set(header)
    assert len(rows) - 1 == shown
    last = dict(zip(header, rows[-1], strict=True))
    assert float(last["epoch_s"]) == pytest.approx(clock.now())
    assert float(last[QUEUE_DEPTH]) == 0.0
    assert last[SUCCESS_RATE] == "", "nothing decided in the last 15 minutes: an empty cell"
    assert f"{shown:,} rows" in panel.info.full_text()


def test_ring_buffer_keeps_the_newest_in_order():
    ring = SeriesRing(["a"], capacity=4)
    assert len(ring) == 0 and math.isnan(ring.last("a"))
    for t in range(1, 7):
        ring.append(float(t), {"a": t * 10.0})
    assert ring.times.tolist() == [3.0, 4.0, 5.0, 6.0]
    assert ring.column("a").tolist() == [30.0, 40.0, 50.0, 60.0]
    assert ring.column("a").base is not None, "a view, not a copy"
    assert ring.since(4.5) == 2
    ring.add_column("b")
    ring.append(7.0, {"a": 70.0, "b": 1.0})
    assert np.isnan(ring.column("b")[:-1]).all() and ring.last("b") == 1.0
    ring.extend(np.arange(8.0, 18.0), {"a": np.arange(8.0, 18.0)})
    assert ring.times.tolist() == [14.0, 15.0, 16.0, 17.0]
    assert ring.column("a").tolist() == [14.0, 15.0, 16.0, 17.0]


def _reading(day=0.0, jobs=0, failed=0, steps=0, mean=0.0, busy=None):
    return Reading(day_start=day, jobs_completed=jobs, jobs_failed=failed, steps_completed=steps,
                   step_mean_seconds=mean, pending=3, running=1, busy=busy or {"R": False})


def test_rolling_rates_from_counters():
    h = MetricsHistory(capacity=1000, rate_window=60, util_window=60, quality_window=120)
    h.sample(0.0, _reading(jobs=100, steps=400, busy={"R": True}))  # the baseline: history starts
    assert h.ring.last(ORDERS_PER_MIN) == 0.0
    for t in range(1, 61):
        h.sample(float(t), _reading(jobs=100 + t // 6, steps=400 + t // 2, busy={"R": t <= 30}))
    ring = h.ring
    assert ring.last(ORDERS_PER_MIN) == pytest.approx(10.0)
    assert ring.last(STEPS_PER_MIN) == pytest.approx(30.0)
    assert ring.last(UTIL + "R") == pytest.approx(50.0, abs=2)
    assert ring.last(QUEUE_DEPTH) == 3.0
    assert ring.last(SUCCESS_RATE) == 100.0
    # a retried failure leaves today's failed count: no negative rate
    h.sample(61.0, _reading(jobs=110, failed=2, steps=430))
    h.sample(62.0, _reading(jobs=110, failed=1, steps=430))
    assert ring.last("failures_per_min") >= 0
    # the coarser rings hold bucket means, the newest one running
    tens = h.levels[0].ring
    assert tens.times[-1] == 62.0 and len(tens) == 7, "0-9, 10-19, ... 60-62"
    assert tens.column(QUEUE_DEPTH)[-1] == 3.0
    # ... the same means whether the samples come one by one or all at once
    again = MetricsHistory(capacity=1000)
    again.extend(ring.times.copy(), {n: ring.column(n).copy() for n in ring.names if n != "times"})
    for name in (STEPS_PER_MIN, UTIL + "R"):
        np.testing.assert_allclose(again.levels[0].ring.column(name), tens.column(name))
        np.testing.assert_allclose(again.minutes.column(name), h.minutes.column(name))
    assert h.ring_for(900) is ring and h.ring_for(3600) is tens and h.ring_for(86400) is h.minutes
    # midnight: counters restart at zero, the history keeps counting
    before = ring.last(ORDERS_PER_MIN)
    h.sample(63.0, _reading(day=86400.0, jobs=1, failed=0, steps=2))
    assert ring.last(ORDERS_PER_MIN) > 0 and ring.last(ORDERS_PER_MIN) >= before - 1
    # the history cannot go back in time
    assert h.sample(63.0, _reading()) is False
    assert h.sample(10.0, _reading()) is False


def test_saved_notice_stays_four_seconds_or_until_the_next_action(charts, qtbot, qrun, tmp_path):
    rt, clock, panel = charts
    _run_for(qrun, rt, clock, panel, 120)
    now = [1000.0]
    panel.monotonic = lambda: now[0]
    panel._export("csv", str(tmp_path / "m.csv"))
    assert panel.info.full_text().startswith("Saved ")
    for _ in range(3):  # new samples and 4 Hz redraws for 3.9 s leave it alone
        _run_for(qrun, rt, clock, panel, 10)
        now[0] += 1.3
        assert panel.redraw()
        assert panel.info.full_text().startswith("Saved "), panel.info.full_text()
    now[0] += 0.2
    _run_for(qrun, rt, clock, panel, 10)
    panel.redraw()
    assert not panel.info.full_text().startswith("Saved ")

    panel._export("csv", str(tmp_path / "m2.csv"))
    panel.set_range(900.0)  # the next action replaces it at once
    assert "1 s samples" in panel.info.full_text()


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080), (640, 360), (420, 300)])
def test_chart_headers_never_overlap_the_chart_above(charts, qtbot, size):
    _rt, _clock, panel = charts
    panel.resize(*size)
    qtbot.wait(10)
    for above, chart in zip(panel.charts, panel.charts[1:], strict=False):
        bottom = above.widget.geometry().bottom()
        header = chart.header.geometry()
        assert header.top() > bottom, f"{chart.title} header overlaps {above.title} at {size}"
        assert header.height() >= chart.header.heightForWidth(header.width())
    last = panel.charts[-1].widget.geometry()
    assert last.bottom() <= panel.charts_box.height(), "the last chart is inside its box (scrolls)"
    assert panel.minimumSizeHint().height() <= 300, "a short dock scrolls the charts"
