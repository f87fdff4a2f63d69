"""Schedules: start runs of a template on time (seed 003's JobScheduler, seed 004's cron workflows).

A :class:`Schedule` names a template, its inputs, a frequency — ``once``, ``hourly``, ``daily``,
``weekly``, ``monthly`` or ``cron`` (5 fields ``m h dom mon dow`` or 6 with seconds first, read by
croniter) — and a time zone. Schedules live in the store; :class:`Scheduler` keeps one task that
sleeps (through the injected clock) until the earliest next run, starts the due runs, and moves
each schedule to its next time. Timers may fire early or late under qasync, so the scheduler
always compares with ``clock.now()`` and re-arms for the remainder.

A run missed while the console was closed is started once at start-up (``catch_up``), not once
per missed slot. A bad cron string or time zone is refused naming the field; a cron expression
is valid only if it fires within :data:`CRON_HORIZON_YEARS` years (``0 0 30 2 *`` never does).
A schedule that still fails (one stored by an older version, a run that cannot start) is
logged and marked with ``last_error``; the others go on. The table is created by
core/schema/006_schedules.sql.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from core.clock import Clock, SystemClock, sleep_or_wake
from core.errors import ConfigError, LabconsoleError, NotFoundError, Problem, Where

log = logging.getLogger(__name__)

_COLUMNS = ("template, frequency, cron, at, timezone, inputs, priority, enabled, next_run, last_run, "
            "last_run_id, created_by, last_error, id")

CRON_HORIZON_YEARS = 5
"""A cron expression must fire within this many years to be accepted."""


RESCAN = 30.0
"""Seconds between looks at the store when nothing is due sooner."""


class Frequency(StrEnum):
    ONCE = "once"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    CRON = "cron"


@dataclass
class Schedule:
    template: str
    frequency: Frequency
    cron: str | None = None
    """For CRON: the expression. For the others: when in the period, e.g. ``"09:30"`` (daily),
    ``"mon 09:30"`` (weekly), ``"15 09:30"`` (monthly), ``":15"`` (hourly), an ISO time (once)."""
    at: str | None = None
    timezone: str = "UTC"
    inputs: dict[str, Any] = field(default_factory=dict)
    priority: int = 50
    enabled: bool = True
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    next_run: float | None = None
    last_run: float | None = None
    last_run_id: str | None = None
    created_by: str = "labconsole"
    last_error: str | None = None
    """Why the schedule last failed (a run that could not start, a time that cannot be
    computed); None once it works again."""

    def expression(self) -> str:
        """The schedule as one cron expression (6 fields, seconds first) or ``once``."""
        if self.frequency is Frequency.CRON:
            return self.cron or ""
        if self.frequency is Frequency.ONCE:
            return "once"
        at = (self.at or "").strip()
        if self.frequency is Frequency.HOURLY:
            minute = int(at.lstrip(":") or 0)
            return f"0 {minute} * * * *"
        if self.frequency is Frequency.DAILY:
            h, m = _hhmm(at or "00:00")
            return f"0 {m} {h} * * *"
        if self.frequency is Frequency.WEEKLY:
            day, _, time = at.partition(" ")
            h, m = _hhmm(time or "00:00")
            return f"0 {m} {h} * * {day or 'mon'}"
        day, _, time = at.partition(" ")
        h, m = _hhmm(time or "00:00")
        return f"0 {m} {h} {day or 1} * *"

    def next_after(self, ts: float) -> float | None:
        """The first run time strictly after ``ts`` (epoch seconds), or None for a spent ``once``."""
        tz = ZoneInfo(self.timezone)
        if self.frequency is Frequency.ONCE:
            when = datetime.fromisoformat(self.at or "")
            if when.tzinfo is None:
                when = when.replace(tzinfo=tz)
            return when.timestamp() if when.timestamp() > ts else None
        expr = self.expression()
        six = len(expr.split()) == 6
        base = datetime.fromtimestamp(ts, tz)
        return croniter(expr, base, second_at_beginning=six).get_next(datetime).timestamp()


def _hhmm(text: str) -> tuple[int, int]:
    h, _, m = text.partition(":")
    hour, minute = int(h), int(m or 0)
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ValueError(f"{text!r} is not a time of day (HH:MM)")
    return hour, minute


def cron_problem(expression: Any, *, timezone: str = "UTC", now: datetime | None = None) -> str | None:
    """Why ``expression`` is not a usable cron expression, or None if it is.

    Usable: 5 fields (minute hour day month weekday) or 6 (seconds first) that croniter reads
    and that fire at least once within :data:`CRON_HORIZON_YEARS` years from ``now``, so
    ``0 0 30 2 *`` (30 February) is refused here instead of failing when it is due.
    """
    if not isinstance(expression, str):
        return f"a cron expression is text, not {type(expression).__name__} {expression!r}"
    fields = expression.split()
    if len(fields) not in (5, 6):
        return (f"{expression!r} has {len(fields)} fields; a cron expression has 5 (minute hour "
                "day month weekday) or 6 (seconds first)")
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = ZoneInfo("UTC")
    start = (now or datetime.now(tz)).astimezone(tz)
    try:
        nxt = croniter(expression, start, second_at_beginning=len(fields) == 6).get_next(datetime)
    except Exception as exc:  # noqa: BLE001 - croniter's refusals are not one type
        reason = str(exc).replace(f"[{expression}] ", "") or type(exc).__name__
        if "find next date" in reason:
            reason = f"never fires (no such date within {CRON_HORIZON_YEARS} years)"
        return f"{expression!r}: {reason}"
    if nxt - start > timedelta(days=366 * CRON_HORIZON_YEARS):
        return f"{expression!r}: never fires within {CRON_HORIZON_YEARS} years"
    return None


def check_schedule(s: Schedule, *, source: str = "schedule") -> Schedule:
    """Validate; raise ConfigError naming each bad field. Returns ``s``."""
    problems: list[Problem] = []
    if not isinstance(s.template, str) or not s.template:
        problems.append(Problem(Where(source, "template"), f"template must be a name, not {s.template!r}"))
    try:
        s.frequency = Frequency(s.frequency)
    except ValueError:
        problems.append(Problem(Where(source, "frequency"), f"{s.frequency!r} is not one of "
                                f"{', '.join(f.value for f in Frequency)}"))
        raise ConfigError(f"{source} rejected", problems) from None
    timezone_ok = True
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        timezone_ok = False
        problems.append(Problem(Where(source, "timezone"), f"unknown time zone {s.timezone!r} (e.g. Europe/Berlin, UTC)"))
    tz = s.timezone if timezone_ok else "UTC"
    if s.frequency is Frequency.CRON:
        reason = cron_problem(s.cron, timezone=tz)
        if reason:
            problems.append(Problem(Where(source, "cron"), reason))
    elif s.frequency is Frequency.ONCE:
        try:
            datetime.fromisoformat(s.at or "")
        except (ValueError, TypeError):
            problems.append(Problem(Where(source, "at"), f"{s.at!r} is not an ISO date-time (2026-12-01T09:00)"))
    else:
        try:
            reason = cron_problem(s.expression(), timezone=tz)
        except (ValueError, TypeError, AttributeError) as exc:
            reason = str(exc)
        if reason:
            problems.append(Problem(Where(source, "at"), f"{s.at!r} does not fit a {s.frequency.value} schedule: {reason}"))
    if not isinstance(s.inputs, dict):
        problems.append(Problem(Where(source, "inputs"), f"inputs must be a JSON object of input names "
                                f"and values, not {type(s.inputs).__name__} {s.inputs!r}"))
    if isinstance(s.priority, bool) or not isinstance(s.priority, int) or not 0 <= s.priority <= 100:
        problems.append(Problem(Where(source, "priority"), f"priority must be 0..100, not {s.priority!r}"))
    if problems:
        raise ConfigError(f"{source} rejected", problems)
    return s


class Scheduler:
    """Keeps schedules in the store and starts their runs on time. ``runtime`` is a Runtime."""

    def __init__(self, runtime: Any, clock: Clock | None = None, *, catch_up: bool = True) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.clock = clock or runtime.clock or SystemClock()
        self.catch_up = catch_up
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self.started: list[tuple[str, str]] = []
        """(schedule id, run id) of every run this scheduler started."""

    async def start(self) -> None:
        now = self.clock.now()
        for s in self.list():  # slots missed while the console was closed
            if s.enabled and s.next_run is not None and s.next_run <= now and not self.catch_up:
                await self._save(s, next_run=self._next(s, now))
        self._task = asyncio.create_task(self._loop(), name="schedules")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # ------------------------------------------------------------------ store

    def list(self) -> list[Schedule]:
        rows = self.store.read_sync(lambda c: c.execute(
            f"SELECT {_COLUMNS} FROM schedules ORDER BY next_run IS NULL, next_run").fetchall())
        out = []
        for r in rows:
            try:
                inputs = json.loads(r[5])
            except json.JSONDecodeError:
                inputs = r[5]  # kept as found; check_schedule names it when the schedule is used
            try:
                frequency = Frequency(r[1])
            except ValueError:
                log.error("schedule %s: unknown frequency %r; left alone", r[13], r[1])
                continue
            out.append(Schedule(r[0], frequency, r[2], r[3], r[4], inputs, r[6], bool(r[7]), r[13],
                                r[8], r[9], r[10], r[11], r[12]))
        return out

    def get(self, schedule_id: str) -> Schedule:
        for s in self.list():
            if s.id == schedule_id:
                return s
        raise NotFoundError(f"no schedule '{schedule_id}'")

    async def add(self, s: Schedule, *, who: str = "labconsole") -> Schedule:
        check_schedule(s)
        self.runtime.engine.templates.get(s.template)  # the template must exist (NotFoundError names it)
        s.created_by = who
        s.next_run = s.next_after(self.clock.now())
        await self._save(s, insert=True)
        await self.store.audit(who, "add schedule", s.id, None, {"template": s.template,
                                                                 "expression": s.expression()})
        self._wake.set()
        return s

    async def set_enabled(self, schedule_id: str, enabled: bool, *, who: str = "labconsole") -> Schedule:
        s = self.get(schedule_id)
        s.enabled = enabled
        next_run = self._next(s, self.clock.now()) if enabled else s.next_run
        await self._save(s, next_run=next_run)
        await self.store.audit(who, "resume schedule" if enabled else "pause schedule", schedule_id)
        self._wake.set()
        return self.get(schedule_id)

    async def remove(self, schedule_id: str, *, who: str = "labconsole") -> None:
        self.get(schedule_id)
        await self.store.write(lambda c: c.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)))
        await self.store.audit(who, "remove schedule", schedule_id)
        self._wake.set()

    async def adopt_template_schedules(self) -> list[Schedule]:
        """Templates that declare ``schedule`` (seed 004's ``config.schedule``) get a cron schedule
        once (UTC), if none with that expression exists for them yet."""
        existing = {(s.template, s.cron) for s in self.list()}
        added = []
        for t in self.runtime.templates():
            if t.schedule and (t.name, t.schedule) not in existing:
                try:
                    added.append(await self.add(Schedule(t.name, Frequency.CRON, cron=t.schedule),
                                                who=f"template {t.name}"))
                except LabconsoleError as exc:
                    log.error("template %s declares a schedule that cannot be used: %s", t.name, exc)
        return added

    def get_next_run(self, schedule_id: str) -> datetime | None:
        s = self.get(schedule_id)
        if s.next_run is None or not s.enabled:
            return None
        return datetime.fromtimestamp(s.next_run, ZoneInfo(s.timezone))

    async def _save(self, s: Schedule, *, insert: bool = False, next_run: float | None | object = ...) -> None:
        if next_run is not ...:
            s.next_run = next_run  # type: ignore[assignment]
        inputs = json.dumps(s.inputs) if isinstance(s.inputs, dict) else str(s.inputs)
        row = (s.template, s.frequency.value, s.cron, s.at, s.timezone, inputs, s.priority,
               int(s.enabled), s.next_run, s.last_run, s.last_run_id, s.created_by, s.last_error, s.id)
        if insert:
            await self.store.write(lambda c: c.execute(
                f"INSERT INTO schedules ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row))
        else:
            await self.store.write(lambda c: c.execute(
                "UPDATE schedules SET template=?, frequency=?, cron=?, at=?, timezone=?, inputs=?, priority=?, "
                "enabled=?, next_run=?, last_run=?, last_run_id=?, created_by=?, last_error=? WHERE id=?", row))

    def _next(self, s: Schedule, ts: float) -> float | None:
        """``s.next_after(ts)``; a schedule whose next time cannot be computed is marked with
        ``last_error`` and gets none (it stays listed, and never fires, until fixed)."""
        try:
            return s.next_after(ts)
        except Exception as exc:  # noqa: BLE001 - one schedule must never stop the others
            s.last_error = f"cannot compute the next run: {type(exc).__name__}: {exc}"
            log.error("schedule %s (%s): %s", s.id, s.template, s.last_error)
            return None

    # ------------------------------------------------------------------ the loop

    async def run_due(self) -> list[str]:
        """Start every enabled schedule whose time has come; return the run ids.

        A schedule that fails is logged and marked (``last_error``); the others still run."""
        now = self.clock.now()
        started = []
        for s in self.list():
            if not s.enabled or s.next_run is None or s.next_run > now:
                continue
            try:
                run_id = await self._fire(s, now)
            except Exception as exc:  # noqa: BLE001 - one schedule must never stop the others
                log.exception("schedule %s (%s) failed", s.id, s.template)
                try:
                    s.last_error = f"{type(exc).__name__}: {exc}"
                    await self._save(s, next_run=None)
                except Exception:
                    log.exception("schedule %s: could not record the failure", s.id)
                continue
            if run_id:
                started.append(run_id)
                self.started.append((s.id, run_id))
        return started

    async def _fire(self, s: Schedule, now: float) -> str | None:
        run_id = None
        s.last_error = None
        try:
            check_schedule(s, source=f"schedule {s.id}")
            run_id = await self.runtime.start_run(s.template, s.inputs, priority=s.priority,
                                                  who=f"schedule {s.id}", allow_duplicate=True)
        except LabconsoleError as exc:
            s.last_error = f"could not start a run: {exc}"
            log.error("schedule %s (%s): %s", s.id, s.template, s.last_error)
        except Exception as exc:  # noqa: BLE001 - one schedule must never stop the others
            s.last_error = f"could not start a run: {type(exc).__name__}: {exc}"
            log.exception("schedule %s (%s): could not start a run", s.id, s.template)
        s.last_run, s.last_run_id = now, run_id
        await self._save(s, next_run=self._next(s, now))
        return run_id

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_due()
                upcoming = [s.next_run for s in self.list() if s.enabled and s.next_run is not None]
            except Exception:  # the loop outlives any one failure; look again later
                log.exception("schedules: checking due runs failed; trying again in %g s", RESCAN)
                upcoming = []
            # never trust a long timer to the second: wake a little before, then check again; look
            # at the store at least every 30 s for schedules added by another process
            delay = max(0.0, min(upcoming) - self.clock.now()) if upcoming else RESCAN
            delay = min(RESCAN, delay if delay < 2 else delay - 1)
            await sleep_or_wake(self.clock, delay, self._wake)
