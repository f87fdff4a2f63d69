"""The Jobs table's ETA columns: a forecast (:class:`core.forecast.ForecastResult`) as one cell
per order, text and sort keys made once per forecast.

The table model only looks cells up by order id (:meth:`panels.jobs_model.OrdersTableModel.set_etas`):
nothing is formatted or computed per painted cell. A run gets its forecast completion (median)
and its p10-p90 band, or why it cannot finish; each step still to do gets the median of its
forecast end (the forecast has no band per step); an order claimed from Data Services gets its
run's. Qt-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

_NEVER = float("inf")
PROBLEM_KEY = 1e15
"""Sort key of a run that cannot finish without someone: after every ETA, before no ETA."""


class EtaCell(NamedTuple):
    """What the ETA columns show for one order. The tooltip is worded when asked for
    (:attr:`tip`): 10,000 runs under way have 30,000 cells, and worded tips were half their
    memory."""

    done: float
    """Sort key of the ETA column: the median forecast end (epoch seconds)."""
    text: str
    late: float
    """Sort key of the band column: the p90 end."""
    band: str
    problem: bool = False
    """No ETA: the run cannot finish without someone (``band`` says why)."""
    early: float = 0.0
    """A run's p10 end."""
    at: float = 0.0
    """When the forecast was made (its "in 5 min" counts from there)."""
    step: str = ""
    """A step's id (its cell is the step's forecast end), or "" for a run."""
    run: str = ""
    """The run made for this order (claimed from Data Services), or ""."""

    @property
    def tip(self) -> str:
        if not self.text and not self.problem:
            return ""
        if self.problem:
            tip = f"No ETA: {self.band}"
        elif self.step:
            tip = (f"Step {self.step} forecast to end by {_full(self.done)} (median, in "
                   f"{_within(self.done - self.at)}); the run's band is on its row")
        else:
            tip = (f"Forecast done by {_full(self.done)} (median, in {_within(self.done - self.at)}); "
                   f"p10–p90 {_full(self.early)} – {_full(self.late)}")
        return f"{tip} (run {self.run}, made for this order)" if self.run else tip


NO_ETA = EtaCell(_NEVER, "", _NEVER, "")
"""Orders the forecast has nothing for: finished, not a run, or no forecast yet."""


def clock(ts: float, now: float) -> str:
    """``14:03:20`` today (of ``now``), ``11-28 14:03`` another day."""
    when = datetime.fromtimestamp(ts)
    if when.date() == datetime.fromtimestamp(now).date():
        return when.strftime("%H:%M:%S")
    return when.strftime("%m-%d %H:%M")


def _full(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _within(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{round(s / 60)} min"
    return f"{s / 3600:.1f} h"


def eta_cells(result: Any, steps: Mapping[str, Mapping[str, str]],
              adopters: Mapping[str, str] | None = None) -> dict[str, EtaCell]:
    """Cells by order id for ``result`` (a :class:`core.forecast.ForecastResult`).

    ``steps``: run id -> step id -> the step's order id (:func:`core.history.step_orders`); ``adopters``:
    order claimed from Data Services -> the run made for it (the order shows its run's ETA).
    Runs a schedule will start (not orders yet) are left out.
    """
    now = result.at
    cells: dict[str, EtaCell] = {}
    for run_id, eta in result.runs.items():
        if eta.scheduled:
            continue
        if eta.problem is not None:
            cells[run_id] = EtaCell(PROBLEM_KEY, "no ETA", PROBLEM_KEY, eta.problem, True)
            continue
        cells[run_id] = EtaCell(eta.p50, clock(eta.p50, now), eta.p90,
                                f"{clock(eta.p10, now)} – {clock(eta.p90, now)}", False, eta.p10, now)
        orders = steps.get(run_id)
        if orders:
            for step_id, plan in eta.plan.items():
                order_id = orders.get(step_id)
                if order_id is not None:
                    end = plan.end
                    cells[order_id] = EtaCell(end, clock(end, now), end, "", False, 0.0, now, step_id)
    for order_id, run_id in (adopters or {}).items():
        cell = cells.get(run_id)
        if cell is not None:
            cells[order_id] = cell._replace(run=run_id)
    return cells
