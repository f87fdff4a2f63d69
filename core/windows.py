"""Time constraints of a run: start windows between steps and the run's deadline.

A template step may declare ``start_within`` (:class:`core.templates.Window`): it starts between
``min`` and ``max`` after an earlier step ended. The engine holds the step until the window
opens, the dispatcher serves steps whose window closes soonest first (within a priority), and a
step that starts after its window closed is recorded as late — on its Running transition and in
the run's view (:func:`late_of`) — with by how much. The template's ``deadline`` is the run's
own window: from its start to its end.

Qt-free; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.durations import format_duration
from core.templates import Step, WorkflowTemplate


@dataclass(frozen=True, slots=True)
class Late:
    """A window that did not hold: ``step`` started ``by`` seconds after it closed (``limit``
    after ``after`` ended); ``step`` None is the run's deadline."""

    step: str | None
    after: str | None
    limit: float
    by: float

    @property
    def text(self) -> str:
        if self.step is None:
            return f"run ended {format_duration(self.by)} past its deadline ({format_duration(self.limit)})"
        return (f"step {self.step} started {format_duration(self.by)} after its window closed "
                f"(at most {format_duration(self.limit)} after {self.after} ended)")

    def as_dict(self) -> dict[str, object]:
        return {"step": self.step, "after": self.after, "limit": self.limit, "late_by": self.by,
                "text": self.text}


def bounds(step: Step, ended: Mapping[str, float | None]) -> tuple[float | None, float | None]:
    """(opens, closes) of the step's window in epoch seconds, once its ``after`` step ended
    (``ended``: step id -> end); (None, None) when it has no window or ``after`` has not ended."""
    w = step.start_within
    if w is None:
        return None, None
    end = ended.get(w.after)
    if end is None:
        return None, None
    return (w.opens(end) if w.min else None), w.closes(end)


def lateness(step: Step, started: float, ended: Mapping[str, float | None]) -> Late | None:
    """The step's window broken by a start at ``started``, or None if it held (or has none)."""
    _, closes = bounds(step, ended)
    if closes is None or started <= closes:
        return None
    w = step.start_within
    assert w is not None and w.max is not None
    return Late(step.id, w.after, w.max, started - closes)


def late_of(template: WorkflowTemplate, started: Mapping[str, float | None], ended: Mapping[str, float | None],
            run_started: float | None = None, run_ended: float | None = None) -> list[Late]:
    """Every window of a run that did not hold (steps in template order, then the deadline)."""
    out: list[Late] = []
    for step in template.steps:
        at = started.get(step.id)
        if at is not None:
            late = lateness(step, at, ended)
            if late is not None:
                out.append(late)
    if template.deadline is not None and run_started is not None and run_ended is not None \
            and run_ended - run_started > template.deadline:
        out.append(Late(None, None, template.deadline, run_ended - run_started - template.deadline))
    return out


__all__ = ["Late", "bounds", "late_of", "lateness"]
