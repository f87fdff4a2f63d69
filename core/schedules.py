"""Schedules: start runs of a template on time (seed 003's JobScheduler, seed 004's cron workflows).

A :class:`Schedule` names a template, its inputs, a frequency — ``once``, ``hourly``, ``daily``,
``weekly``, ``monthly`` or ``cron`` (5 fields ``m h dom mon dow`` or 6 with seconds first, read by
croniter) — and a time zone. Schedules live in the store; :class:`Scheduler` keeps one task that
sleeps (through the injected clock) until the earliest next run, starts the due runs, and moves
each schedule to its next time. Timers may fire early or late under qasync, so the scheduler
always compares with ``clock.now()`` and re-arms for the remainder.

Runs missed while the console was closed (or while the computer slept) follow the schedule's
``missed`` policy: ``once`` starts one run for all of them (the default), ``skip`` starts none,
``all`` starts one per missed slot up to ``missed_cap``. A slot is missed when it is more than
:data:`GRACE` seconds late.

Blackout windows (:class:`Blackout`, e.g. maintenance) hold every schedule: a slot due inside a
``move`` window fires once at the window's end (several slots inside one window give one run),
a slot inside a ``skip`` window does not fire at all.

Daylight saving time: a wall-clock time that the spring change skips fires at the change
(02:30 becomes 03:00 in Europe/Berlin); a time the autumn change repeats fires once, at its
first occurrence, unless the hour field is ``*`` (hourly schedules fire every elapsed hour). A bad cron string or time zone is refused naming the field; a cron expression
is valid only if it fires within :data:`CRON_HORIZON_YEARS` years (``0 0 30 2 *`` never does).
A schedule that still fails (one stored by an older version, a run that cannot start) is
logged and marked with ``last_error``; the others go on. The table is created by
core/schema/006_schedules.sql; ``missed``, ``missed_cap`` and the blackout
windows by core/schema/007_schedule_policies.sql.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from core.api import RuntimeApi
from core.clock import Clock, SystemClock, sleep_or_wake
from core.errors import ConfigError, LabconsoleError, NotFoundError, Problem, Where
from core.users import authorize

log = logging.getLogger(__name__)

_COLUMNS = ("template, frequency, cron, at, timezone, inputs, priority, enabled, next_run, last_run, "
            "last_run_id, created_by, last_error, missed, missed_cap, id")

CRON_HORIZON_YEARS = 5
"""A cron expression must fire within this many years to be accepted."""


RESCAN = 30.0
"""Seconds between looks at the store when nothing is due sooner."""


GRACE = 60.0
"""A slot fired at most this many seconds late is on time; later, it was missed."""

MAX_MISSED_CAP = 1000
"""The largest ``missed_cap``: the most runs one schedule may start to catch up."""


class MissedPolicy(StrEnum):
    """What to do with slots missed while the console was closed."""

    ONCE = "once"
    """Start one run for all of them."""
    SKIP = "skip"
    """Start none; wait for the next slot."""
    ALL = "all"
    """Start one per missed slot, at most ``missed_cap``."""


class BlackoutPolicy(StrEnum):
    MOVE = "move"
    """A slot due inside the window fires at its end (once for the whole window)."""
    SKIP = "skip"
    """A slot due inside the window does not fire."""


@dataclass
class Blackout:
    """A window [start, end) (epoch seconds) in which no schedule fires."""

    start: float
    end: float
    policy: BlackoutPolicy = BlackoutPolicy.MOVE
    reason: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_by: str = "labconsole"

    def holds(self, ts: float) -> bool:
        return self.start <= ts < self.end


def blackout_at(blackouts: list[Blackout], ts: float) -> Blackout | None:
    """The window holding ``ts`` (the one ending last, if windows overlap), or None."""
    found = None
    for b in blackouts:
        if b.holds(ts) and (found is None or b.end > found.end):
            found = b
    return found


def check_blackout(b: Blackout, *, source: str = "blackout") -> Blackout:
    """Validate; raise ConfigError naming each bad field. Returns ``b``."""
    problems: list[Problem] = []
    for name in ("start", "end"):
        value = getattr(b, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            problems.append(Problem(Where(source, name), f"{name} must be a time, not {value!r}"))
    try:
        b.policy = BlackoutPolicy(b.policy)
    except ValueError:
        problems.append(Problem(Where(source, "policy"), f"{b.policy!r} is not one of "
                                f"{', '.join(p.value for p in BlackoutPolicy)}"))
    if not problems and b.end <= b.start:
        problems.append(Problem(Where(source, "end"), "the window must end after it starts "
                                f"({_stamp(b.end)} is not after {_stamp(b.start)})"))
    if problems:
        raise ConfigError(f"{source} rejected", problems)
    return b


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M UTC")


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
    missed: MissedPolicy = MissedPolicy.ONCE
    missed_cap: int = 10
    """With ``missed`` ``all``: the most runs started to catch up."""

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
        return next(self.slots(ts), None)

    def slots(self, ts: float) -> Iterator[float]:
        """Every run time strictly after ``ts``, in order (one cron iterator: cheap per slot)."""
        tz = ZoneInfo(self.timezone)
        if self.frequency is Frequency.ONCE:
            when = datetime.fromisoformat(self.at or "")
            if when.tzinfo is None:
                when = when.replace(tzinfo=tz)
            if when.timestamp() > ts:
                yield when.timestamp()
            return
        expr = self.expression()
        fields = expr.split()
        six = len(fields) == 6
        hour_field = fields[2] if six else fields[1]
        repeat_ok = hour_field == "*" or hour_field.startswith("*/")
        it = croniter(expr, datetime.fromtimestamp(ts, tz), second_at_beginning=six)
        skipped = 0
        while True:
            slot = it.get_next(datetime).timestamp()
            # a wall-clock time repeated by the autumn change fires once (its first occurrence)
            if repeat_ok or not datetime.fromtimestamp(slot, tz).fold or skipped >= 64:
                skipped = 0
                yield slot
            else:
                skipped += 1

    def describe(self) -> str:
        """The schedule in words: ``daily at 09:30``, ``cron 0 9 * * 1-5``, ``once at ...``."""
        at = (self.at or "").strip()
        if self.frequency is Frequency.CRON:
            return f"cron {self.cron}"
        if self.frequency is Frequency.HOURLY:
            return f"hourly at :{int(at.lstrip(':') or 0):02d}"
        if self.frequency is Frequency.ONCE:
            return f"once at {at.replace('T', ' ')}"
        return f"{self.frequency.value} at {at or '00:00'}"


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
    try:
        s.missed = MissedPolicy(s.missed)
    except ValueError:
        problems.append(Problem(Where(source, "missed"), f"{s.missed!r} is not one of "
                                f"{', '.join(p.value for p in MissedPolicy)}"))
    if (isinstance(s.missed_cap, bool) or not isinstance(s.missed_cap, int)
            or not 1 <= s.missed_cap <= MAX_MISSED_CAP):
        problems.append(Problem(Where(source, "missed_cap"),
                                f"missed_cap must be 1..{MAX_MISSED_CAP}, not {s.missed_cap!r}"))
    if problems:
        raise ConfigError(f"{source} rejected", problems)
    return s


class Scheduler:
    """Keeps schedules in the store and starts their runs on time. ``runtime`` is a Runtime."""

    def __init__(self, runtime: RuntimeApi, clock: Clock | None = None, *, catch_up: bool = True) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self.clock = clock or runtime.clock or SystemClock()
        self.catch_up = catch_up
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.started: list[tuple[str, str]] = []
        """(schedule id, run id) of every run this scheduler started."""

    async def start(self) -> None:
        now = self.clock.now()
        for s in self.entries():  # slots missed while the console was closed
            if s.enabled and s.next_run is not None and s.next_run <= now and not self.catch_up:
                await self._save(s, next_run=self._next(s, now))
        self._task = asyncio.create_task(self._loop(), name="schedules")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # ------------------------------------------------------------------ store

    def entries(self) -> list[Schedule]:
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
                log.error("schedule %s: unknown frequency %r; left alone", r[15], r[1])
                continue
            try:
                missed = MissedPolicy(r[13])
            except ValueError:
                log.error("schedule %s: unknown missed-run policy %r; runs once", r[15], r[13])
                missed = MissedPolicy.ONCE
            out.append(Schedule(r[0], frequency, r[2], r[3], r[4], inputs, r[6], bool(r[7]), r[15],
                                r[8], r[9], r[10], r[11], r[12], missed, r[14]))
        return out

    def get(self, schedule_id: str) -> Schedule:
        for s in self.entries():
            if s.id == schedule_id:
                return s
        raise NotFoundError(f"no schedule '{schedule_id}'")

    async def add(self, s: Schedule, *, who: str = "labconsole") -> Schedule:
        authorize(self.store, who, "schedules")
        check_schedule(s)
        self.runtime.engine.templates.get(s.template)  # the template must exist (NotFoundError names it)
        s.created_by = who
        s.next_run = s.next_after(self.clock.now())
        await self._save(s, insert=True)
        await self.store.audit(who, "add schedule", s.id, None, {"template": s.template,
                                                                 "expression": s.expression()})
        self._wake.set()
        return s

    async def update(self, s: Schedule, *, who: str = "labconsole") -> Schedule:
        """Replace a schedule's settings (same id); its next run is computed again from now."""
        authorize(self.store, who, "schedules")
        old = self.get(s.id)
        check_schedule(s, source=f"schedule {s.id}")
        self.runtime.engine.templates.get(s.template)
        s.created_by, s.last_run, s.last_run_id, s.last_error = old.created_by, old.last_run, old.last_run_id, None
        s.next_run = s.next_after(self.clock.now())
        await self._save(s)
        await self.store.audit(who, "edit schedule", s.id, None, {
            "template": s.template, "expression": s.expression(), "timezone": s.timezone,
            "missed": s.missed.value, "was": old.expression()})
        self._wake.set()
        return self.get(s.id)

    async def set_enabled(self, schedule_id: str, enabled: bool, *, who: str = "labconsole") -> Schedule:
        authorize(self.store, who, "schedules")
        s = self.get(schedule_id)
        s.enabled = enabled
        next_run = self._next(s, self.clock.now()) if enabled else s.next_run
        await self._save(s, next_run=next_run)
        await self.store.audit(who, "resume schedule" if enabled else "pause schedule", schedule_id)
        self._wake.set()
        return self.get(schedule_id)

    async def remove(self, schedule_id: str, *, who: str = "labconsole") -> None:
        authorize(self.store, who, "schedules")
        self.get(schedule_id)
        await self.store.write(lambda c: c.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)))
        await self.store.audit(who, "remove schedule", schedule_id)
        self._wake.set()

    # ------------------------------------------------------------------ blackout windows

    def blackouts(self, *, ending_after: float | None = None) -> list[Blackout]:
        """Blackout windows by start; with ``ending_after``, only those still open then."""
        after = float("-inf") if ending_after is None else ending_after
        rows = self.store.read_sync(lambda c: c.execute(
            "SELECT start_at, end_at, policy, reason, id, created_by FROM schedule_blackouts "
            "WHERE end_at > ? ORDER BY start_at", (after,)).fetchall())
        out = []
        for r in rows:
            try:
                policy = BlackoutPolicy(r[2])
            except ValueError:
                log.error("blackout %s: unknown policy %r; treated as move", r[4], r[2])
                policy = BlackoutPolicy.MOVE
            out.append(Blackout(r[0], r[1], policy, r[3], r[4], r[5]))
        return out

    async def add_blackout(self, b: Blackout, *, who: str = "labconsole") -> Blackout:
        authorize(self.store, who, "schedules")
        check_blackout(b)
        b.created_by = who
        await self.store.write(lambda c: c.execute(
            "INSERT INTO schedule_blackouts (start_at, end_at, policy, reason, id, created_by) "
            "VALUES (?,?,?,?,?,?)", (b.start, b.end, b.policy.value, b.reason, b.id, who)))
        await self.store.audit(who, "add blackout", b.id, b.reason or None, {
            "start": b.start, "end": b.end, "policy": b.policy.value})
        self._wake.set()
        return b

    async def remove_blackout(self, blackout_id: str, *, who: str = "labconsole") -> None:
        authorize(self.store, who, "schedules")
        if not any(b.id == blackout_id for b in self.blackouts()):
            raise NotFoundError(f"no blackout window '{blackout_id}'")
        await self.store.write(lambda c: c.execute("DELETE FROM schedule_blackouts WHERE id = ?", (blackout_id,)))
        await self.store.audit(who, "remove blackout", blackout_id)
        self._wake.set()

    # ------------------------------------------------------------------ when

    def due_at(self, s: Schedule, blackouts: list[Blackout] | None = None) -> float | None:
        """When ``s`` fires next, blackout windows applied (its stored ``next_run`` is the slot;
        a slot in a ``move`` window fires at the window's end). None: paused or never."""
        if not s.enabled or s.next_run is None:
            return None
        blackouts = self.blackouts(ending_after=s.next_run) if blackouts is None else blackouts
        t: float | None = s.next_run
        for _ in range(1000):
            if t is None:
                return None
            b = blackout_at(blackouts, t)
            if b is None:
                return t
            if b.policy is BlackoutPolicy.MOVE:
                return b.end
            t = self._next(s, t)
        return t

    def occurrences(self, start: float, end: float, *, limit: int = 2000) -> list[tuple[Schedule, float, bool]]:
        """Every (schedule, time, moved) a run is planned in [start, end), blackout windows
        applied (``moved``: a ``move`` window put it at its end), by time. Paused schedules have none."""
        blackouts = self.blackouts(ending_after=start - 366 * 86400)
        out: list[tuple[Schedule, float, bool]] = []
        for s in self.entries():
            if not s.enabled or s.next_run is None:
                continue
            seen: set[float] = set()
            count = 0
            try:
                for t in itertools.chain((s.next_run,), s.slots(s.next_run)):
                    if count >= limit:
                        break
                    b = blackout_at(blackouts, t)
                    fire, moved = (t, False) if b is None else (b.end, True)
                    if fire >= end and t >= end:
                        break
                    if (b is None or b.policy is BlackoutPolicy.MOVE) and start <= fire < end and fire not in seen:
                        seen.add(fire)
                        out.append((s, fire, moved))
                        count += 1
            except Exception as exc:  # noqa: BLE001 - a schedule that cannot go on shows what it has
                log.warning("schedule %s (%s): planned runs stop at %d: %s", s.id, s.template, count, exc)
        out.sort(key=lambda o: o[1])
        return out

    async def adopt_template_schedules(self) -> list[Schedule]:
        """Templates that declare ``schedule`` (seed 004's ``config.schedule``) get a cron schedule
        once (UTC), if none with that expression exists for them yet."""
        existing = {(s.template, s.cron) for s in self.entries()}
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
        due = self.due_at(s)
        if due is None:
            return None
        return datetime.fromtimestamp(due, ZoneInfo(s.timezone))

    async def _save(self, s: Schedule, *, insert: bool = False, next_run: float | None | object = ...) -> None:
        if next_run is not ...:
            s.next_run = next_run  # type: ignore[assignment]
        inputs = json.dumps(s.inputs) if isinstance(s.inputs, dict) else str(s.inputs)
        row = (s.template, s.frequency.value, s.cron, s.at, s.timezone, inputs, s.priority,
               int(s.enabled), s.next_run, s.last_run, s.last_run_id, s.created_by, s.last_error,
               MissedPolicy(s.missed).value, s.missed_cap, s.id)
        if insert:
            await self.store.write(lambda c: c.execute(
                f"INSERT INTO schedules ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row))
        else:
            await self.store.write(lambda c: c.execute(
                "UPDATE schedules SET template=?, frequency=?, cron=?, at=?, timezone=?, inputs=?, priority=?, "
                "enabled=?, next_run=?, last_run=?, last_run_id=?, created_by=?, last_error=?, missed=?, "
                "missed_cap=? WHERE id=?", row))

    def _next(self, s: Schedule, ts: float) -> float | None:
        """``s.next_after(ts)``; a schedule whose next time cannot be computed is marked with
        ``last_error`` and gets none (it stays listed, and never fires, until fixed)."""
        try:
            return s.next_after(ts)
        except Exception as exc:  # noqa: BLE001 - one schedule must never stop the others
            s.last_error = f"cannot compute the next run: {type(exc).__name__}: {exc}"
            log.error("schedule %s (%s): %s", s.id, s.template, s.last_error)
            return None

    def plan(self, s: Schedule, now: float, blackouts: list[Blackout]) -> tuple[list[float], float | None]:
        """(the times whose runs start now, the slot to keep as ``next_run``) for a schedule whose
        ``next_run`` has come: blackout windows, then the missed-run policy, applied."""
        slots: list[float] = []
        t: float | None = s.next_run
        while t is not None and t <= now and len(slots) < MAX_MISSED_CAP * 10:
            slots.append(t)
            t = self._next(s, t)
        if t is not None and t <= now:  # more slots than anyone would catch up: go on from now
            t = self._next(s, now)
        due: list[float] = []
        for slot in slots:
            b = blackout_at(blackouts, slot)
            if b is None:
                due.append(slot)
            elif b.policy is BlackoutPolicy.MOVE:
                if b.end > now:  # still inside the window: wait for its end, from this slot
                    t = slot
                    break
                due.append(b.end)
        due = sorted(set(due))
        on_time = [d for d in due if now - d <= GRACE]
        if s.missed is MissedPolicy.ONCE:
            fire = due[-1:]
        elif s.missed is MissedPolicy.SKIP:
            fire = on_time
        else:
            fire = due[-max(s.missed_cap, len(on_time)):]
        return fire, t

    # ------------------------------------------------------------------ the loop

    async def run_due(self) -> list[str]:
        """Start every enabled schedule whose time has come; return the run ids.

        A schedule that fails is logged and marked (``last_error``); the others still run."""
        now = self.clock.now()
        started = []
        blackouts: list[Blackout] | None = None
        for s in self.entries():
            if not s.enabled or s.next_run is None or s.next_run > now:
                continue
            if blackouts is None:
                blackouts = self.blackouts()
            try:
                run_ids = await self._fire(s, now, blackouts)
            except Exception as exc:  # noqa: BLE001 - one schedule must never stop the others
                log.exception("schedule %s (%s) failed", s.id, s.template)
                try:
                    s.last_error = f"{type(exc).__name__}: {exc}"
                    await self._save(s, next_run=None)
                except Exception:
                    log.exception("schedule %s: could not record the failure", s.id)
                continue
            for run_id in run_ids:
                started.append(run_id)
                self.started.append((s.id, run_id))
        return started

    async def _fire(self, s: Schedule, now: float, blackouts: list[Blackout]) -> list[str]:
        s.last_error = None
        fire, next_run = self.plan(s, now, blackouts)
        plan_error = s.last_error  # a next time that cannot be computed says more than a refused run
        if not fire:
            if next_run != s.next_run:
                log.info("schedule %s (%s): missed or blacked-out slots skipped; next %s", s.id, s.template,
                         _stamp(next_run) if next_run is not None else "never")
                await self._save(s, next_run=next_run)
            return []
        run_ids: list[str] = []
        for _ in fire:
            run_id = None
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
            if run_id is None:
                break
            run_ids.append(run_id)
        s.last_error = plan_error or s.last_error
        s.last_run, s.last_run_id = now, (run_ids[-1] if run_ids else None)
        await self._save(s, next_run=next_run)
        return run_ids

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_due()
                blackouts = self.blackouts(ending_after=self.clock.now())
                upcoming = [t for s in self.entries() if (t := self.due_at(s, blackouts)) is not None]
            except Exception:  # the loop outlives any one failure; look again later
                log.exception("schedules: checking due runs failed; trying again in %g s", RESCAN)
                upcoming = []
            # never trust a long timer to the second: wake a little before, then check again; look
            # at the store at least every 30 s for schedules added by another process
            delay = max(0.0, min(upcoming) - self.clock.now()) if upcoming else RESCAN
            delay = min(RESCAN, delay if delay < 2 else delay - 1)
            await sleep_or_wake(self.clock, delay, self._wake)
