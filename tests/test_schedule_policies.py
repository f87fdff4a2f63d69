"""Schedules over daylight-saving changes, missed runs and blackout windows, on a virtual clock
with a real store and engine."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from core.clock import VirtualClock
from core.errors import ConfigError
from core.runtime import Runtime
from core.schedules import (
    Blackout,
    BlackoutPolicy,
    Frequency,
    MissedPolicy,
    Schedule,
    Scheduler,
    check_blackout,
    check_schedule,
)
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
NOOP = {"name": "Nightly", "definition": {"steps": [{"id": "a", "kind": "noop"}]}}


async def _world(data_dir, start: float):
    store = Store(data_dir / DB_FILENAME).open()
    clock = VirtualClock.for_store(store, start=start)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
    await rt.start(templates_dir=None)
    await rt.engine.publish(template_from_dict(NOOP))
    return rt, clock


def _fired(rt, scheduler, tz):
    """Local times (with zone abbreviation) at which the scheduler's runs were created."""
    out = []
    for _, run_id in scheduler.started:
        created = rt.engine.get_instance(run_id)["created_at"]
        out.append(datetime.fromtimestamp(created, tz).strftime("%d %H:%M %Z"))
    return out


def _over(data_dir, tz, start, schedule: Schedule, hours: float):
    async def scenario():
        rt, clock = await _world(data_dir, start)
        scheduler = Scheduler(rt, clock)
        await scheduler.start()
        await scheduler.add(schedule)
        await clock.advance(hours * 3600)
        fired = _fired(rt, scheduler, tz)
        await scheduler.close()
        await rt.close()
        return fired

    return asyncio.run(scenario())


def test_berlin_spring_forward_a_skipped_time_fires_at_the_change(data_dir):
    start = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN).timestamp()
    fired = _over(data_dir, BERLIN, start, Schedule("Nightly", Frequency.DAILY, at="02:30",
                                                       timezone="Europe/Berlin"), 62)
    assert fired == ["29 03:00 CEST", "30 02:30 CEST", "31 02:30 CEST"]


def test_berlin_fall_back_a_repeated_time_fires_once(data_dir):
    start = datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN).timestamp()
    fired = _over(data_dir, BERLIN, start, Schedule("Nightly", Frequency.DAILY, at="02:30",
                                                       timezone="Europe/Berlin"), 64)
    assert fired == ["25 02:30 CEST", "26 02:30 CET", "27 02:30 CET"]  # the day of the change has 25 hours


def test_berlin_fall_back_hourly_fires_every_elapsed_hour(data_dir):
    start = datetime(2026, 10, 25, 0, 45, tzinfo=BERLIN).timestamp()
    fired = _over(data_dir, BERLIN, start, Schedule("Nightly", Frequency.HOURLY, at=":30",
                                                       timezone="Europe/Berlin"), 4)
    assert fired == ["25 01:30 CEST", "25 02:30 CEST", "25 02:30 CET", "25 03:30 CET"]


def test_new_york_both_changes_with_a_weekday_cron(data_dir):
    spring = datetime(2026, 3, 7, 12, 0, tzinfo=NEW_YORK).timestamp()  # Saturday; change Sunday 8th
    fired = _over(data_dir, NEW_YORK, spring, Schedule("Nightly", Frequency.CRON, cron="30 2 * * *",
                                                          timezone="America/New_York"), 48)
    assert fired == ["08 03:00 EDT", "09 02:30 EDT"]
    autumn = datetime(2026, 10, 31, 12, 0, tzinfo=NEW_YORK).timestamp()  # change Sunday 1 November
    (data_dir / "b").mkdir()
    fired = _over(data_dir / "b", NEW_YORK, autumn, Schedule("Nightly", Frequency.CRON, cron="30 1 * * *",
                                                                timezone="America/New_York"), 48)
    assert fired == ["01 01:30 EDT", "02 01:30 EST"]  # 01:30 happens twice on the 1st: once


@pytest.mark.parametrize(("policy", "expected"), [(MissedPolicy.ONCE, 1), (MissedPolicy.SKIP, 0),
                                                  (MissedPolicy.ALL, 4)])
def test_runs_missed_while_closed_follow_the_policy(data_dir, policy, expected):
    start = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN).timestamp()

    async def scenario():
        rt, clock = await _world(data_dir, start)
        first = Scheduler(rt, clock)
        s = await first.add(Schedule("Nightly", Frequency.HOURLY, at=":00", timezone="Europe/Berlin",
                                     missed=policy, missed_cap=4))
        await rt.close()  # the console is closed from 08:00 to 15:10: 7 slots missed
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store, start=start + 7 * 3600 + 600)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
        await rt.start(templates_dir=None)
        scheduler = Scheduler(rt, clock)
        await scheduler.start()
        await clock.advance(60)
        caught_up = len(scheduler.started)
        next_run = scheduler.get_next_run(s.id).strftime("%H:%M")
        await clock.advance(3600)
        later = len(scheduler.started)
        await scheduler.close()
        await rt.close()
        return caught_up, next_run, later

    caught_up, next_run, later = asyncio.run(scenario())
    assert caught_up == expected and next_run == "16:00" and later == expected + 1


def test_a_blackout_window_moves_runs_to_its_end_or_skips_them(data_dir):
    start = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN).timestamp()
    at = lambda h, m=0: datetime(2026, 11, 23, h, m, tzinfo=BERLIN).timestamp()  # noqa: E731

    async def scenario():
        rt, clock = await _world(data_dir, start)
        scheduler = Scheduler(rt, clock)
        await scheduler.start()
        quarter = await scheduler.add(Schedule("Nightly", Frequency.CRON, cron="*/15 * * * *",
                                               timezone="Europe/Berlin"))
        await scheduler.add_blackout(Blackout(at(9), at(10, 5), BlackoutPolicy.MOVE, "maintenance"), who="ops")
        await scheduler.add_blackout(Blackout(at(11), at(12), BlackoutPolicy.SKIP, "cleaning"), who="ops")
        planned = [(datetime.fromtimestamp(t, BERLIN).strftime("%H:%M"), moved)
                   for _, t, moved in scheduler.occurrences(at(8, 30), at(12, 30))]
        await clock.advance(9 * 3600 / 2)  # to 12:30
        fired = [f.split()[1] for f in _fired(rt, scheduler, BERLIN)]
        audit = [a.action for a in rt.audit()]
        assert scheduler.get_next_run(quarter.id).strftime("%H:%M") == "12:45"
        await scheduler.close()
        await rt.close()
        return planned, fired, audit

    planned, fired, audit = asyncio.run(scenario())
    expected = ["08:15", "08:30", "08:45", "10:05", "10:15", "10:30", "10:45", "12:00", "12:15", "12:30"]
    assert fired == expected
    assert planned == [(t, t == "10:05") for t in expected[1:-1]]  # [08:30, 12:30)
    assert audit.count("add blackout") == 2


def test_bad_blackouts_and_policies_name_the_field():
    with pytest.raises(ConfigError) as info:
        check_blackout(Blackout(100.0, 50.0))
    assert "blackout: end: the window must end after it starts" in str(info.value)
    with pytest.raises(ConfigError, match="blackout: policy: 'later' is not one of move, skip"):
        check_blackout(Blackout(1.0, 2.0, "later"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        check_schedule(Schedule("T", Frequency.DAILY, at="09:00", missed="twice", missed_cap=0))  # type: ignore[arg-type]
    text = str(info.value)
    assert "schedule: missed: 'twice' is not one of once, skip, all" in text
    assert "schedule: missed_cap: missed_cap must be 1..1000, not 0" in text


def test_edit_keeps_the_id_and_history_and_recomputes_the_next_run(data_dir):
    start = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN).timestamp()

    async def scenario():
        rt, clock = await _world(data_dir, start)
        scheduler = Scheduler(rt, clock)
        s = await scheduler.add(Schedule("Nightly", Frequency.DAILY, at="09:00", timezone="Europe/Berlin"))
        edited = Schedule("Nightly", Frequency.WEEKLY, at="fri 18:00", timezone="America/New_York",
                          id=s.id, missed=MissedPolicy.ALL, missed_cap=3)
        await scheduler.update(edited, who="ops")
        got = scheduler.get(s.id)
        audit = rt.audit(s.id)[-1]
        await rt.close()
        return got, audit

    got, audit = asyncio.run(scenario())
    assert got.frequency is Frequency.WEEKLY and got.missed is MissedPolicy.ALL and got.missed_cap == 3
    assert datetime.fromtimestamp(got.next_run, NEW_YORK).strftime("%a %H:%M") == "Fri 18:00"
    assert audit.action == "edit schedule" and audit.who == "ops"


def test_a_v6_store_gets_the_policy_columns_with_defaults(data_dir):
    from core.store import APPLICATION_ID, MIGRATIONS, _split_sql

    conn = sqlite3.connect(data_dir / DB_FILENAME)
    for script in MIGRATIONS[:6]:
        for statement in _split_sql(script):
            conn.execute(statement)
    conn.execute("INSERT INTO schedules VALUES ('s6', 'Nightly', 'daily', NULL, '09:00', 'UTC', '{}', "
                 "50, 1, 1800000000.0, NULL, NULL, 'ops', NULL)")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 6")
    conn.commit()
    conn.close()

    async def scenario():
        rt, clock = await _world(data_dir, 1_799_990_000.0)
        listed = Scheduler(rt, clock).entries()
        await rt.close()
        return listed

    (s,) = asyncio.run(scenario())
    assert s.id == "s6" and s.missed is MissedPolicy.ONCE and s.missed_cap == 10
