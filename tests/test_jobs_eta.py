"""The Jobs table's ETA cells (panels/jobs_eta.py, Qt-free): their words and their memory."""

from __future__ import annotations

import tracemalloc
from datetime import datetime

from core.forecast import ForecastResult, RunEta, StepPlan
from panels.jobs_eta import NO_ETA, PROBLEM_KEY, eta_cells

NOW = datetime(2026, 11, 27, 9, 0, 0).timestamp()


def _result(n: int) -> ForecastResult:
    runs = {f"Order_{i:05d}": RunEta(f"Order_{i:05d}", "Bench flow", NOW + 60 + i, NOW + 300 + i, NOW + 900 + i, None,
                                     {"read": StepPlan(NOW, NOW + 120 + i, "Reader"),
                                      "seal": StepPlan(NOW + 120 + i, NOW + 240 + i, "Sealer")})
            for i in range(n)}
    runs["Order_99999"] = RunEta("Order_99999", "Bench flow", problem="paused: waits for an operator to resume it")
    return ForecastResult(NOW, runs, 16, 0.5)


def _steps(result: ForecastResult) -> dict[str, dict[str, str]]:
    return {r: {"read": f"{r}.read", "seal": f"{r}.seal"} for r in result.runs}


def test_cells_say_when_and_how_sure():
    cells = eta_cells(_result(1), _steps(_result(1)), {"DS_ORDER": "Order_00000"})
    run, step, stuck, adopted = (cells[k] for k in ("Order_00000", "Order_00000.read", "Order_99999", "DS_ORDER"))
    assert (run.text, run.band) == ("09:05:00", "09:01:00 – 09:15:00")
    assert run.tip == ("Forecast done by 2026-11-27 09:05:00 (median, in 5 min); "
                       "p10–p90 2026-11-27 09:01:00 – 2026-11-27 09:15:00")
    assert (step.text, step.band) == ("09:02:00", "")
    assert step.tip == ("Step read forecast to end by 2026-11-27 09:02:00 (median, in 2 min); "
                        "the run's band is on its row")
    assert (stuck.done, stuck.text, stuck.problem) == (PROBLEM_KEY, "no ETA", True)
    assert stuck.tip == "No ETA: paused: waits for an operator to resume it"
    assert adopted.tip == f"{run.tip} (run Order_00000, made for this order)"
    assert adopted.done == run.done and adopted.band == run.band
    assert NO_ETA.tip == "" and not NO_ETA.problem


def test_cells_of_ten_thousand_runs_hold_no_worded_tooltips():
    # 30,000 cells with their tooltips worded in advance took 12.4 MB (413 bytes a cell); the
    # tooltip is worded when it is shown
    result = _result(3000)
    steps = _steps(result)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        cells = eta_cells(result, steps)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert len(cells) == 9001
    assert held / len(cells) < 320, f"{held / len(cells):.0f} bytes a cell"
