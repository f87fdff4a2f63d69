"""ETA columns of the Jobs table over a real runtime on a virtual clock, the real store and the
real forecaster (core.forecast.Forecast, on a worker thread): each run's forecast completion and
p10-p90 band, each step's forecast end, why a paused run has none; one repaint per forecast;
sorting by ETA, kept sorted as forecasts change. Screenshots at 1280x720 and 1920x1080, light
and dark."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from PySide6.QtCore import Qt
from test_gui_jobs import Lab

from core.forecast import Forecast
from panels.jobs_eta import PROBLEM_KEY, clock
from panels.jobs_model import COLUMN_KEYS, ETA_BAND_COLUMN, ETA_COLUMN
from panels.theme import apply_theme, gui_application


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun)
    forecast = Forecast(made.rt, samples=8, debounce=3600)  # made on demand here (refresh)
    made.forecast = forecast
    yield made
    forecast.stop()
    made.close()


def _forecast(lab):
    """Make a forecast now and wait until Jobs shows it."""
    result = lab.qrun(lab.forecast.refresh())
    task = lab.jobs._eta_task
    if task is not None:
        lab.qtbot.waitUntil(task.done, timeout=10_000)
    return result


def _cell(model, order_id, column):
    return model.index(model.row_of(order_id), column)


def test_runs_and_steps_show_the_forecast_with_one_repaint_per_forecast(lab):
    runs = lab.start_runs(6)
    lab.advance(5)
    lab.load()
    jobs, model = lab.jobs, lab.jobs.live_model
    jobs.set_forecast(lab.forecast)
    changes: list[tuple[int, int, int, int]] = []
    model.dataChanged.connect(lambda a, b, _roles=(): changes.append((a.row(), a.column(), b.row(), b.column())))
    result = _forecast(lab)

    assert len(changes) == 1, "one dataChanged for the whole forecast"
    assert changes[0] == (0, ETA_COLUMN, model.rowCount() - 1, ETA_BAND_COLUMN)
    now = result.at
    for run_id in runs:
        eta = result.runs[run_id]
        assert eta.ok and eta.p10 <= eta.p50 <= eta.p90
        assert _cell(model, run_id, ETA_COLUMN).data() == clock(eta.p50, now)
        assert _cell(model, run_id, ETA_BAND_COLUMN).data() == f"{clock(eta.p10, now)} – {clock(eta.p90, now)}"
        assert "p10–p90" in _cell(model, run_id, ETA_COLUMN).data(Qt.ItemDataRole.ToolTipRole)
    # steps still to do show their own forecast end (no band: the forecast has none per step)
    model.set_expanded(runs[-1], True)
    steps = model.steps_of(runs[-1])
    assert len(steps) == 2
    ends = result.runs[runs[-1]].steps
    for step in steps:
        step_id = lab.rt.target(step[0]).step_id
        assert step_id in ends
        assert _cell(model, step[0], ETA_COLUMN).data() == clock(ends[step_id], now)
        assert _cell(model, step[0], ETA_BAND_COLUMN).data() == ""
    # the data is a look-up of cells made once per forecast
    assert model.ix.etas[runs[0]].text == clock(result.runs[runs[0]].p50, now)

    # a finished run has no ETA any more once the next forecast comes
    lab.until(lambda: not lab.rt.run_is_active(runs[0]))
    _forecast(lab)
    assert _cell(model, runs[0], ETA_COLUMN).data() == ""
    assert runs[0] not in model.ix.etas


def test_a_paused_run_says_why_it_has_no_eta(lab):
    runs = lab.start_runs(3)
    lab.advance(2)
    lab.qrun(lab.rt.pause(runs[2], who="tester", reason="lid check"))
    lab.sync()
    lab.load()
    lab.jobs.set_forecast(lab.forecast)
    _forecast(lab)
    model = lab.jobs.live_model
    assert _cell(model, runs[2], ETA_COLUMN).data() == "no ETA"
    band = _cell(model, runs[2], ETA_BAND_COLUMN)
    assert "paused" in band.data()
    assert band.data(Qt.ItemDataRole.ToolTipRole).startswith("No ETA: paused")
    assert band.data(Qt.ItemDataRole.ForegroundRole) is not None  # shown in the warning colour
    assert _cell(model, runs[0], ETA_COLUMN).data() not in ("", "no ETA")


def test_sorting_by_eta_keeps_rows_sorted_as_forecasts_change(lab):
    runs = lab.start_runs(8)
    lab.advance(3)
    lab.load()
    jobs, model = lab.jobs, lab.jobs.live_model
    jobs.set_forecast(lab.forecast)
    _forecast(lab)
    jobs.view.sortByColumn(ETA_COLUMN, Qt.SortOrder.AscendingOrder)
    assert model.sort_column == COLUMN_KEYS.index("eta")

    def check() -> list[float]:
        keys = [model.ix.etas.get(model.order_id(r)) for r in range(model.rowCount())]
        done = [k.done if k is not None else float("inf") for k in keys]
        assert done == sorted(done)
        for r in range(model.rowCount()):  # every row found where it is (the model's invariant)
            assert model.row_of(model.order_id(r)) == r
        return done

    assert all(d < PROBLEM_KEY for d in check()[:len(runs)])
    orders = []
    for _ in range(3):  # the queue moves on, runs finish: new forecasts reorder the rows
        lab.advance(40)
        _forecast(lab)
        check()
        orders.append([model.order_id(r) for r in range(model.rowCount())])
    assert len({tuple(o) for o in orders}) > 1, "the forecasts changed the order of the rows"
    jobs.view.sortByColumn(ETA_COLUMN, Qt.SortOrder.DescendingOrder)
    done = [model.ix.etas[model.order_id(r)].done for r in range(model.rowCount())
            if model.order_id(r) in model.ix.etas]
    assert done == sorted(done, reverse=True)


def test_eta_columns_screenshots(lab, qtbot):
    lab.start_runs(12)
    lab.advance(5)
    lab.qrun(lab.rt.pause(lab.start_runs(1)[0], who="tester", reason="lid check"))
    lab.sync()
    lab.load()
    lab.jobs.set_forecast(lab.forecast)
    _forecast(lab)
    model = lab.jobs.live_model
    model.set_expanded(model.order_id(0), True)
    lab.jobs.view.scrollTo(model.index(0, ETA_BAND_COLUMN))
    try:
        for theme in ("light", "dark"):
            apply_theme(gui_application(), theme)
            for w, h in ((1280, 720), (1920, 1080)):
                lab.window.resize(w, h)
                qtbot.wait(60)
                save_screenshot(lab.window, f"jobs-eta-{w}x{h}-{theme}")
    finally:
        apply_theme(gui_application(), "light")
