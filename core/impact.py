"""Impact preview: what an operator action will touch, before it is taken.

:func:`preview` answers for cancel, retry, skip, recover, pause, resume, reprioritise (on runs or
steps, one or ten thousand) and for taking an instrument out of service: the runs and steps it
changes (with the first few named), the orders it cannot apply to and why, the instruments freed
(their running step is stopped) or blocked, the queued steps that will wait longer, and how much
estimated instrument time the action adds or removes (each step's declared
``estimated_duration``, else the mean measured duration of its kind).

Everything is read on a reader thread (``store.read``), in chunks, so a bulk preview never blocks
the event loop. Nothing is changed.

:func:`eta_moves` says how the action moves finish times, where the console keeps a forecast
(:class:`core.forecast.Forecast`): it plays the state forward twice, as it is and as the action
would leave it, with the same draws for every step both contain (``paired``), in the forecast's
worker process (or on a worker thread), and lists the runs whose median ETA moves — the runs
acted on first, then the largest moves. Without a forecast the preview's instrument time
added or removed stands in for it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.errors import StateError
from core.templates import descendants, reachable

if TYPE_CHECKING:
    from core.forecast import Forecast, ForecastResult, InstrumentState
    from core.store import Store

ACTIONS = ("cancel", "retry", "skip", "recover", "pause", "resume", "reprioritise", "out_of_service")
FIRST = 10
"""How many runs and steps are named (the rest are counted)."""
CHUNK = 500

_FINAL_RUN = {"completed", "failed", "cancelled"}
_FINAL_STEP = {"completed", "failed", "skipped", "cancelled", "unknown"}
_ACTIVE_STEP = {"queued", "running"}
_RETRYABLE = {"failed", "cancelled", "unknown"}


@dataclass
class Impact:
    action: str
    orders: int = 0
    runs: int = 0
    first_runs: list[str] = field(default_factory=list)
    steps: Counter[str] = field(default_factory=Counter)
    """What happens to steps: ``canceled``, ``stopped`` (running, stopped on their instrument),
    ``retried``, ``skipped``, ``rerun``, ``held`` (will not start while paused), ``reprioritised``."""
    first_steps: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(run, step, status now, what happens to it)."""
    refused: list[tuple[str, str]] = field(default_factory=list)
    """(order, why the action does not apply to it)."""
    refused_count: int = 0
    instruments_freed: Counter[str] = field(default_factory=Counter)
    instruments_blocked: list[str] = field(default_factory=list)
    waiting_longer: int = 0
    """Queued steps that will wait longer (their instrument leaves service, or their run pauses)."""
    work_seconds: float = 0.0
    """Estimated instrument time the action adds (positive: retry, recover) or removes (negative)."""

    def summary(self, *, work: bool = True) -> str:
        """The counts, one line; ``work``: with the instrument time added or removed (left out
        where moved ETAs are shown)."""
        parts = [f"{self.runs} run{'s' if self.runs != 1 else ''}"]
        parts += [f"{n} step{'s' if n != 1 else ''} {what}" for what, n in sorted(self.steps.items())]
        if self.instruments_freed:
            parts.append(f"frees {', '.join(sorted(self.instruments_freed))}")
        if self.instruments_blocked:
            parts.append(f"blocks {', '.join(self.instruments_blocked)}")
        if self.waiting_longer:
            parts.append(f"{self.waiting_longer} queued step{'s' if self.waiting_longer != 1 else ''} wait longer")
        if self.work_seconds and work:
            sign = "+" if self.work_seconds > 0 else "−"
            parts.append(f"{sign}{_duration(abs(self.work_seconds))} instrument time")
        if self.refused_count:
            parts.append(f"{self.refused_count} not applicable")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "orders": self.orders, "runs": self.runs, "firstRuns": self.first_runs,
                "steps": dict(self.steps), "firstSteps": [list(s) for s in self.first_steps],
                "refused": [list(r) for r in self.refused], "refusedCount": self.refused_count,
                "instrumentsFreed": dict(self.instruments_freed), "instrumentsBlocked": self.instruments_blocked,
                "waitingLonger": self.waiting_longer, "workSeconds": self.work_seconds}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def preview(store: Store, action: str, order_ids: Sequence[str] = (), *, from_step: str | None = None,
                  instrument: str | None = None, capabilities: Mapping[str, Collection[str]] | None = None) -> Impact:
    """What ``action`` on ``order_ids`` (runs or steps) would touch; for ``out_of_service``, what
    taking ``instrument`` out would (``capabilities``: instrument -> the step kinds it serves).
    Computed on a reader thread."""
    if action not in ACTIONS:
        raise StateError(f"no preview for '{action}' (one of: {', '.join(ACTIONS)})")
    if action == "out_of_service":
        if instrument is None:
            raise StateError("out_of_service needs the instrument")
        caps = {k: set(v) for k, v in (capabilities or {}).items()}
        return await store.read(lambda c: _out_of_service(c, instrument, caps))
    ids = list(dict.fromkeys(order_ids))
    return await store.read(lambda c: _compute(c, action, ids, from_step))


# --------------------------------------------------------------------------- on the reader thread


class _Estimates:
    """Estimated seconds per step: declared, else the mean measured for its kind."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self._templates: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
        self._measured: dict[str, float] | None = None

    def steps(self, name: str, version: int) -> dict[str, dict[str, Any]]:
        key = (name, version)
        if key not in self._templates:
            row = self.conn.execute("SELECT definition FROM templates WHERE name=? AND version=?", key).fetchone()
            data = json.loads(row[0]) if row else {}
            steps = (data.get("definition") or data).get("steps", []) if isinstance(data, dict) else []
            self._templates[key] = {s["id"]: s for s in steps if isinstance(s, dict) and "id" in s}
        return self._templates[key]

    def seconds(self, name: str, version: int, step_id: str) -> float:
        step = self.steps(name, version).get(step_id, {})
        declared = step.get("estimated_duration")
        if isinstance(declared, int | float):
            return float(declared)
        if self._measured is None:
            self._measured = {}
            for kind, mean in self.conn.execute(
                    "SELECT o.template_name, AVG(s.ended - s.started) FROM step_runs s JOIN orders o ON o.id = s.order_id "
                    "WHERE s.status = 'completed' AND s.ended IS NOT NULL AND s.started IS NOT NULL "
                    "GROUP BY o.template_name"):
                self._measured[kind] = float(mean or 0.0)
        return self._measured.get(str(step.get("kind")), 0.0)

    def descendants(self, name: str, version: int, step_id: str) -> set[str]:
        children: dict[str, list[str]] = {}
        for sid, s in self.steps(name, version).items():
            deps = s.get("depends_on") or []
            for d in [deps] if isinstance(deps, str) else deps:
                children.setdefault(d, []).append(sid)
        return reachable(children, step_id)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


def _compute(conn: sqlite3.Connection, action: str, ids: list[str], from_step: str | None) -> Impact:
    """The impact of ``action`` on ``ids``, a chunk at a time: what a chunk reads is gone before
    the next is read, so a preview over 10,000 runs never holds them all (its objects die young
    and do not push the garbage collector into a full pass, which would hold the GIL for as long
    as it takes to walk the whole process)."""
    impact = Impact(action, orders=len(ids))
    est = _Estimates(conn)
    touched: set[str] = set()
    covered: set[str] = set()
    for part in _chunks(ids):
        _compute_part(conn, impact, est, part, from_step, touched, covered)
        time.sleep(0)  # let the event loop's thread have the interpreter between chunks
    impact.runs = len(touched)
    impact.first_runs = sorted(touched)[:FIRST]
    return impact


def _compute_part(conn: sqlite3.Connection, impact: Impact, est: _Estimates, part: Sequence[str],
                  from_step: str | None, touched: set[str], covered: set[str]) -> None:
    """One chunk of :func:`_compute`; ``touched``: runs changed so far, ``covered``: runs acted
    on as a whole so far (their step orders later in the list add nothing)."""
    action = impact.action
    marks = ",".join("?" * len(part))
    runs: dict[str, tuple[str, str, int, int]] = {}  # run -> (status, template, version, paused)
    for run_id, status, name, version, paused in conn.execute(
            f"SELECT run_id, status, template_name, template_version, paused FROM runs WHERE run_id IN ({marks})",
            part):
        runs[run_id] = (status, name, version, paused)
    step_targets: dict[str, tuple[str, str]] = {}  # order -> (run, step)
    for order_id, run_id, step_id in conn.execute(
            f"SELECT order_id, run_id, step_id FROM step_runs WHERE order_id IN ({marks})", part):
        step_targets[order_id] = (run_id, step_id)
    for oid in part:
        if oid not in runs and oid not in step_targets:
            _refuse(impact, oid, "not a labconsole run or step")
    # every step of every run involved, read once
    involved = sorted(set(runs) | {r for r, _ in step_targets.values()})
    steps: dict[str, dict[str, tuple[str, str, str | None]]] = {}  # run -> step -> (status, order, instrument)
    meta = dict(runs)
    for chunk in _chunks(involved):
        marks = ",".join("?" * len(chunk))
        for run_id, step_id, order_id, status, instrument in conn.execute(
                f"SELECT run_id, step_id, order_id, status, instrument FROM step_runs WHERE run_id IN ({marks}) "
                "ORDER BY rowid", chunk):  # a run's steps in the order they were created (the template's)
            steps.setdefault(run_id, {})[step_id] = (status, order_id, instrument)
        missing = [r for r in chunk if r not in meta]
        if missing:
            marks = ",".join("?" * len(missing))
            for run_id, status, name, version, paused in conn.execute(
                    f"SELECT run_id, status, template_name, template_version, paused FROM runs "
                    f"WHERE run_id IN ({marks})", missing):
                meta[run_id] = (status, name, version, paused)
    for oid in part:
        if oid in runs:
            if _on_run(impact, est, oid, meta[oid], steps.get(oid, {}), from_step):
                touched.add(oid)
                covered.add(oid)
        elif oid in step_targets:
            run_id, step_id = step_targets[oid]
            if run_id in covered and action in ("cancel", "retry", "pause", "resume"):
                continue  # done with its run
            if _on_step(impact, est, oid, run_id, step_id, meta[run_id], steps.get(run_id, {})):
                touched.add(run_id)


def _refuse(impact: Impact, order_id: str, why: str) -> None:
    impact.refused_count += 1
    if len(impact.refused) < FIRST:
        impact.refused.append((order_id, why))


def _note(impact: Impact, run_id: str, step_id: str, now: str, what: str) -> None:
    impact.steps[what] += 1
    if len(impact.first_steps) < FIRST:
        impact.first_steps.append((run_id, step_id, now, what))


def _on_run(impact: Impact, est: _Estimates, run_id: str, meta: tuple[str, str, int, int],
            steps: dict[str, tuple[str, str, str | None]], from_step: str | None) -> bool:
    status, name, version, paused = meta
    a = impact.action
    if a in ("cancel", "pause", "retry", "resume", "reprioritise") and status in _FINAL_RUN and \
            not (a == "retry" and status != "completed"):
        _refuse(impact, run_id, f"run is {status}")
        return False
    if a == "cancel":
        for sid, (st, _order, instrument) in steps.items():
            if st in _FINAL_STEP:
                continue
            if st in _ACTIVE_STEP:
                _note(impact, run_id, sid, st, "stopped")
                if st == "running" and instrument:
                    impact.instruments_freed[instrument] += 1
            else:
                _note(impact, run_id, sid, st, "canceled")
            impact.work_seconds -= est.seconds(name, version, sid)
        return True
    if a == "pause":
        if paused or status == "paused":
            _refuse(impact, run_id, "run is paused already")
            return False
        for sid, (st, _order, _instrument) in steps.items():
            if st in ("pending", "retrying", "queued"):
                _note(impact, run_id, sid, st, "held")
                impact.waiting_longer += st == "queued"
        return True
    if a == "resume":
        if status != "paused":
            _refuse(impact, run_id, f"run is {status}, not paused")
            return False
        for sid, (st, _order, _instrument) in steps.items():
            if st in ("pending", "retrying"):
                _note(impact, run_id, sid, st, "released")
        return True
    if a == "retry":
        chosen = [sid for sid, (st, _o, _i) in steps.items() if st in _RETRYABLE]
        if not chosen:
            _refuse(impact, run_id, "no failed step to retry")
            return False
        _rerun(impact, est, run_id, name, version, steps, chosen, "retried", only_unfinished=True)
        return True
    if a == "reprioritise":
        for sid, (st, _order, _instrument) in steps.items():
            if st not in _FINAL_STEP:
                _note(impact, run_id, sid, st, "reprioritised")
        return True
    if a == "recover" and from_step is not None:
        if from_step not in steps:
            _refuse(impact, run_id, f"no step '{from_step}'")
            return False
        return _recover(impact, est, run_id, name, version, steps, from_step)
    _refuse(impact, run_id, f"{a} applies to a step of the run")
    return False


def _rerun(impact: Impact, est: _Estimates, run_id: str, name: str, version: int,
           steps: dict[str, tuple[str, str, str | None]], chosen: list[str], what: str, *,
           only_unfinished: bool) -> None:
    again: dict[str, str] = {}
    for sid in chosen:
        again[sid] = what
        for dep in est.descendants(name, version, sid):
            st = steps.get(dep, ("", "", None))[0]
            if not only_unfinished or st in ("skipped", "cancelled"):
                again.setdefault(dep, "rerun")
    for sid, how in again.items():
        _note(impact, run_id, sid, steps.get(sid, ("?", "", None))[0], how)
        impact.work_seconds += est.seconds(name, version, sid)


def _recover(impact: Impact, est: _Estimates, run_id: str, name: str, version: int,
             steps: dict[str, tuple[str, str, str | None]], from_step: str) -> bool:
    running = [sid for sid, (st, _o, _i) in steps.items() if st in _ACTIVE_STEP]
    if running:
        _refuse(impact, run_id, f"steps {', '.join(running)} are still running")
        return False
    _rerun(impact, est, run_id, name, version, steps, [from_step], "rerun", only_unfinished=False)
    return True


def _on_step(impact: Impact, est: _Estimates, order_id: str, run_id: str, step_id: str,
             meta: tuple[str, str, int, int], steps: dict[str, tuple[str, str, str | None]]) -> bool:
    status, name, version, _paused = meta
    st, _order, instrument = steps.get(step_id, ("?", order_id, None))
    a = impact.action
    if a in ("pause", "resume", "reprioritise") or (a == "retry" and st not in _RETRYABLE and st != "?"):
        if a == "retry":
            _refuse(impact, order_id, f"step {step_id} is {st}")
            return False
        if a != "reprioritise":
            return _on_run(impact, est, run_id, meta, steps, None)
        _note(impact, run_id, step_id, st, "reprioritised")
        return True
    if a == "cancel":
        if st in _FINAL_STEP:
            _refuse(impact, order_id, f"step {step_id} is {st}")
            return False
        _note(impact, run_id, step_id, st, "stopped" if st in _ACTIVE_STEP else "canceled")
        if st == "running" and instrument:
            impact.instruments_freed[instrument] += 1
        impact.work_seconds -= est.seconds(name, version, step_id)
        return True
    if a == "skip":
        if st in ("completed", "skipped"):
            _refuse(impact, order_id, f"step {step_id} is {st}")
            return False
        _note(impact, run_id, step_id, st, "skipped")
        if st == "running" and instrument:
            impact.instruments_freed[instrument] += 1
        for dep in est.descendants(name, version, step_id):
            dst = steps.get(dep, ("?", "", None))[0]
            if dst in ("pending",):
                _note(impact, run_id, dep, dst, "unblocked")
        return True
    if a == "retry":
        _rerun(impact, est, run_id, name, version, steps, [step_id], "retried", only_unfinished=True)
        return True
    if a == "recover":
        if status in ("completed",):
            _refuse(impact, order_id, "run completed")
            return False
        return _recover(impact, est, run_id, name, version, steps, step_id)
    _refuse(impact, order_id, f"{a} does not apply to a step")
    return False


def _out_of_service(conn: sqlite3.Connection, instrument: str, capabilities: dict[str, set[str]]) -> Impact:
    impact = Impact("out_of_service", orders=0)
    kinds = capabilities.get(instrument, set())
    running = conn.execute("SELECT run_id, step_id FROM step_runs WHERE status='running' AND instrument=?",
                           (instrument,)).fetchall()
    for run_id, step_id in running:
        _note(impact, run_id, step_id, "running", "finishes first")
    others = {k: [i for i, caps in capabilities.items() if i != instrument and k in caps] for k in kinds}
    sole = sorted(k for k, alternatives in others.items() if not alternatives)
    touched = {r for r, _ in running}
    if kinds:
        marks = ",".join("?" * len(kinds))
        for run_id, step_id, kind in conn.execute(
                f"SELECT s.run_id, s.step_id, o.template_name FROM step_runs s JOIN orders o ON o.id = s.order_id "
                f"WHERE s.status IN ('queued', 'pending', 'retrying') AND o.template_name IN ({marks})",
                sorted(kinds)):
            touched.add(run_id)
            if kind in sole:
                _note(impact, run_id, step_id, "waiting", f"blocked: only {instrument} can {kind}")
            else:
                impact.waiting_longer += 1
    impact.instruments_blocked = [instrument]
    impact.runs = len(touched)
    impact.first_runs = sorted(touched)[:FIRST]
    return impact


# --------------------------------------------------------------------------- moved finish times

ETA_RUNS = 2000
"""Unfinished runs beyond which finish times are not played forward for a preview (it would take
seconds); the instrument time added or removed is shown instead."""
ETA_SAMPLES = 8
MOVE_MIN = 30.0
"""Seconds a run's median ETA must move by to be listed (runs acted on are always listed)."""
_UNFINISHED_RUN = ("pending", "running", "paused", "recovering")


@dataclass(frozen=True)
class EtaMove:
    """How one run's forecast completion (median, epoch seconds) moves; None: no ETA, and why."""

    run_id: str
    before: float | None
    after: float | None
    before_note: str | None = None
    after_note: str | None = None
    target: bool = False
    """A run the action is taken on (rather than one that moves because it shares instruments)."""

    @property
    def delta(self) -> float | None:
        return self.after - self.before if self.before is not None and self.after is not None else None


@dataclass
class EtaMoves:
    """The runs whose ETA an action moves: the first :data:`FIRST` (runs acted on first, then the
    largest moves) and how many in all; ``skipped`` says why nothing was played forward."""

    moves: list[EtaMove] = field(default_factory=list)
    count: int = 0
    forecast_runs: int = 0
    skipped: str | None = None
    at: float = 0.0
    """The (clock) time the state was taken: ETAs on its day are shown as a time of day."""


@dataclass(frozen=True)
class Change:
    """An operator action as the what-if forecast applies it (sent to the worker process)."""

    action: str
    runs: tuple[str, ...] = ()
    """Runs acted on as a whole."""
    steps: tuple[tuple[str, str], ...] = ()
    """(run, step) acted on one by one."""
    from_step: str | None = None
    priority: int | None = None
    instrument: str | None = None


async def eta_moves(forecast: Forecast | None, action: str, order_ids: Sequence[str] = (), *,
                    from_step: str | None = None, priority: int | None = None,
                    instrument: str | None = None) -> EtaMoves | None:
    """How ``action`` (as for :func:`preview`) would move the forecast finish times; None when
    there is no forecast yet. The state is read on a reader thread and played forward twice in
    the forecast's worker process (or on a worker thread): the loop only waits."""
    if forecast is None or forecast.result is None:
        return None
    if action not in ACTIONS:
        raise StateError(f"no preview for '{action}' (one of: {', '.join(ACTIONS)})")
    if action == "out_of_service" and instrument is None:
        raise StateError("out_of_service needs the instrument")
    from core.forecast import instrument_states

    runtime = forecast.runtime
    now = runtime.clock.now()
    states = instrument_states(runtime.instruments())
    ids = list(dict.fromkeys(order_ids))
    marks = ",".join("?" * len(_UNFINISHED_RUN))
    unfinished = int((await runtime.store.read(lambda c: c.execute(
        f"SELECT COUNT(*) FROM runs WHERE status IN ({marks})", _UNFINISHED_RUN).fetchone()))[0])
    if unfinished > ETA_RUNS:  # said before anything is read
        return EtaMoves(forecast_runs=unfinished, at=now,
                        skipped=f"finish times are not worked out over {unfinished:,} unfinished runs")
    rows, runs, steps = await runtime.store.read(lambda c: _what_if_rows(c, ids))
    change = Change(action, tuple(runs), tuple(steps), from_step, priority, instrument)
    due, found = await forecast.inputs({(r[1], r[2]) for r, _ in rows}, now)
    return await forecast.offload(what_if, rows, states, found, now, due, forecast.worker_model(), change,
                                  samples=ETA_SAMPLES, seed=forecast.seed)


def _what_if_rows(conn: sqlite3.Connection, ids: list[str]) -> tuple[
        list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]], list[str], list[tuple[str, str]]]:
    """:func:`core.forecast.read_state` plus the runs acted on whatever their status (a failed
    run retried), and the ids sorted into runs and (run, step) pairs."""
    from core.forecast import read_state

    rows = read_state(conn)
    have = {r[0] for r, _ in rows}
    runs: list[str] = []
    steps: list[tuple[str, str]] = []
    for part in _chunks(ids):
        marks = ",".join("?" * len(part))
        found = {r for (r,) in conn.execute(f"SELECT run_id FROM runs WHERE run_id IN ({marks})", part)}
        by_order = {o: (r, s) for o, r, s in conn.execute(
            f"SELECT order_id, run_id, step_id FROM step_runs WHERE order_id IN ({marks})", part)}
        for oid in part:
            if oid in found:
                runs.append(oid)
            elif oid in by_order:
                steps.append(by_order[oid])
    extra = sorted(({*runs} | {r for r, _ in steps}) - have)
    for part in _chunks(extra):
        marks = ",".join("?" * len(part))
        more = conn.execute(
            "SELECT run_id, template_name, template_version, status, priority, created, input_data, started "
            f"FROM runs WHERE run_id IN ({marks})", part).fetchall()
        step_rows: dict[str, list[tuple[Any, ...]]] = {r[0]: [] for r in more}
        for row in conn.execute(
                "SELECT run_id, step_id, status, started, instrument, next_attempt_at, ended FROM step_runs "
                f"WHERE run_id IN ({marks}) ORDER BY rowid", part):
            step_rows[row[0]].append(row)
        rows += [(r, step_rows[r[0]]) for r in more]
    return rows, runs, steps


def what_if(rows: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]], instruments: tuple[InstrumentState, ...],
            templates: dict[tuple[str, int | None], Any], now: float, scheduled: Sequence[tuple[Any, float]],
            model: Any, change: Change, *, samples: int = ETA_SAMPLES, seed: int = 0) -> EtaMoves:
    """Play the state forward as it is and as ``change`` leaves it (paired draws); the moves.
    Pure: what the worker process runs."""
    from core.forecast import forecast, snapshot_from

    def lookup(name: str, version: int | None) -> Any:
        return templates[(name, version)]

    before_rows = [(r, s) for r, s in rows if r[3] in _UNFINISHED_RUN]
    after_rows, after_instruments = _apply(rows, instruments, templates, change)
    before = forecast(snapshot_from(before_rows, instruments, lookup, now, scheduled), model,
                      samples=samples, seed=seed, paired=True)
    after = forecast(snapshot_from(after_rows, after_instruments, lookup, now, scheduled), model,
                     samples=samples, seed=seed, paired=True)
    targets = {*change.runs, *(r for r, _ in change.steps)}
    return compare(before, after, targets, dropped="canceled" if change.action == "cancel" else "finished")


def compare(before: ForecastResult, after: ForecastResult, targets: Collection[str], *,
            dropped: str = "finished") -> EtaMoves:
    """The runs whose ETA moves from ``before`` to ``after`` (by :data:`MOVE_MIN` or more, or
    gaining or losing an ETA), and every run in ``targets``."""
    from core.forecast import SCHEDULED_PREFIX

    moves: list[EtaMove] = []
    for run_id in dict.fromkeys([*before.runs, *after.runs]):
        if run_id.startswith(SCHEDULED_PREFIX) and run_id not in targets:
            continue
        b, a = before.runs.get(run_id), after.runs.get(run_id)
        bt = b.p50 if b is not None and b.ok else None
        at = a.p50 if a is not None and a.ok else None
        move = EtaMove(run_id, bt, at,
                       None if bt is not None else (b.problem if b is not None else "not in flight"),
                       None if at is not None else (a.problem if a is not None else dropped),
                       run_id in targets)
        if move.target or (move.delta is not None and abs(move.delta) >= MOVE_MIN) or \
                (bt is None) != (at is None):
            moves.append(move)
    moves.sort(key=lambda m: (not m.target, -abs(m.delta) if m.delta is not None else -float("inf"), m.run_id))
    return EtaMoves(moves[:FIRST], len(moves), sum(1 for r in before.runs if not r.startswith(SCHEDULED_PREFIX)),
                    at=before.at)


def _apply(rows: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]], instruments: tuple[InstrumentState, ...],
           templates: dict[tuple[str, int | None], Any], change: Change) -> tuple[
        list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]], tuple[InstrumentState, ...]]:
    """The state rows (and instruments) as ``change`` would leave them."""
    from dataclasses import replace

    a = change.action
    if a == "out_of_service":
        out = tuple(replace(i, available=False, why_not="out of service") if i.id == change.instrument else i
                    for i in instruments)
        return [(r, s) for r, s in rows if r[3] in _UNFINISHED_RUN], out
    runs = set(change.runs)
    per_step: dict[str, list[str]] = {}
    for run_id, step_id in change.steps:
        per_step.setdefault(run_id, []).append(step_id)
    out_rows: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]] = []
    for run, steps in rows:
        run_id = run[0]
        if run_id not in runs and run_id not in per_step:
            if run[3] in _UNFINISHED_RUN:
                out_rows.append((run, steps))
            continue
        changed = _apply_run(run, steps, templates.get((run[1], run[2])), run_id in runs,
                             per_step.get(run_id, []), change)
        if changed is not None:
            out_rows.append(changed)
    return out_rows, instruments


def _apply_run(run: tuple[Any, ...], steps: list[tuple[Any, ...]], template: Any, whole: bool,
               chosen: list[str], change: Change) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]] | None:
    """One run's rows as ``change`` leaves them (None: it no longer runs)."""
    run_id, a = run[0], change.action
    r, s = list(run), {row[1]: row for row in steps}

    def fresh(step_id: str) -> None:
        s[step_id] = (run_id, step_id, "pending", None, None, None, None)

    def after(step_id: str) -> set[str]:
        return descendants(template, step_id) if template is not None else set()

    if a == "cancel":
        if whole:
            return None  # canceled: no ETA
        for sid in chosen:  # a canceled step leaves its run to its failure policy
            s[sid] = (run_id, sid, "failed", None, None, None, None)
    elif a == "pause":
        r[3] = "paused"
    elif a == "resume":
        r[3] = "running"
    elif a == "retry":
        retried = [sid for sid, row in s.items() if row[2] in _RETRYABLE] if whole else chosen
        for sid in retried:
            fresh(sid)
            for dep in after(sid):
                if dep in s and s[dep][2] in ("skipped", "cancelled"):
                    fresh(dep)
        r[3] = "running"
    elif a == "recover":
        first = change.from_step if whole else (chosen[0] if chosen else None)
        if first is not None:
            for sid in {first, *after(first)}:
                fresh(sid)
            r[3] = "running"
    elif a == "skip":
        for sid in chosen:
            s[sid] = (run_id, sid, "skipped", None, None, None, None)
    elif a == "reprioritise" and change.priority is not None:
        r[4] = change.priority
    if r[3] not in _UNFINISHED_RUN:
        return None
    return tuple(r), list(s.values())


