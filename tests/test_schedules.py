"""Schedules start runs on time, on a virtual clock; bad cron strings say what is wrong."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from core.clock import VirtualClock
from core.errors import ConfigError, NotFoundError
from core.runtime import Runtime
from core.schedules import Frequency, Schedule, Scheduler, check_schedule
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_8 = datetime(2026, 11, 23, 8, 0, tzinfo=BERLIN).timestamp()  # a Monday


def test_next_times_for_each_frequency():
    at = MONDAY_8
    nxt = lambda s: datetime.fromtimestamp(s.next_after(at), BERLIN).strftime("%a %d %H:%M:%S")  # noqa: E731
    assert nxt(Schedule("T", Frequency.CRON, cron="0 9 * * 1-5", timezone="Europe/Berlin")) == "Mon 23 09:00:00"
    assert nxt(Schedule("T", Frequency.CRON, cron="30 0 9 * * 1-5", timezone="Europe/Berlin")) == "Mon 23 09:00:30"
    assert nxt(Schedule("T", Frequency.HOURLY, at=":15", timezone="Europe/Berlin")) == "Mon 23 08:15:00"
    assert nxt(Schedule("T", Frequency.DAILY, at="07:30", timezone="Europe/Berlin")) == "Tue 24 07:30:00"
    assert nxt(Schedule("T", Frequency.WEEKLY, at="fri 18:00", timezone="Europe/Berlin")) == "Fri 27 18:00:00"
    assert nxt(Schedule("T", Frequency.MONTHLY, at="1 06:00", timezone="Europe/Berlin")) == "Tue 01 06:00:00"
    once = Schedule("T", Frequency.ONCE, at="2026-11-23T10:00", timezone="Europe/Berlin")
    assert nxt(once) == "Mon 23 10:00:00" and once.next_after(at + 7200) is None


def test_bad_schedules_name_the_field():
    with pytest.raises(ConfigError) as info:
        check_schedule(Schedule("T", Frequency.CRON, cron="61 * * * *", timezone="Mars/Olympus", priority=200))
    text = str(info.value)
    assert "schedule: cron: '61 * * * *'" in text and "out of range" in text
    assert "schedule: timezone: unknown time zone 'Mars/Olympus'" in text
    assert "schedule: priority: priority must be 0..100" in text
    with pytest.raises(ConfigError, match="has 3 fields"):
        check_schedule(Schedule("T", Frequency.CRON, cron="* * *"))
    with pytest.raises(ConfigError, match="not a time of day"):
        check_schedule(Schedule("T", Frequency.DAILY, at="25:00"))


def test_scheduler_starts_runs_on_time_and_pauses(data_dir):
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store, start=MONDAY_8)
        store.clock = clock
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
        await rt.start(templates_dir=None)
        await rt.engine.publish(template_from_dict({"name": "Nightly", "definition": {"steps": [
            {"id": "a", "kind": "noop"}]}}))
        scheduler = Scheduler(rt, clock)
        await scheduler.start()
        with pytest.raises(NotFoundError, match="no template 'Nope'"):
            await scheduler.add(Schedule("Nope", Frequency.DAILY, at="09:00"))
        s = await scheduler.add(Schedule("Nightly", Frequency.CRON, cron="0 */2 * * *", timezone="Europe/Berlin"),
                                who="ops")
        first = scheduler.get_next_run(s.id)
        await clock.advance(5 * 3600)            # 08:00 -> 13:00: runs at 10:00 and 12:00
        after_five = len(scheduler.started)
        await scheduler.set_enabled(s.id, False, who="ops")
        await clock.advance(6 * 3600)            # paused: nothing
        paused = len(scheduler.started)
        await scheduler.set_enabled(s.id, True, who="ops")
        await clock.advance(2 * 3600 + 1)        # 19:00 -> 21:00: the 20:00 run
        runs = [run for _, run in scheduler.started]
        statuses = [rt.engine.run_status(r).value for r in runs]
        await scheduler.close()
        audit = [a.action for a in rt.audit(s.id)]
        await rt.close()
        return first, after_five, paused, statuses, audit

    first, after_five, paused, statuses, audit = asyncio.run(scenario())
    assert first.strftime("%H:%M") == "10:00"
    assert after_five == 2 and paused == 2
    assert statuses == ["completed"] * 3
    assert audit == ["add schedule", "pause schedule", "resume schedule"]


def test_templates_declaring_a_schedule_get_one_once(data_dir):
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store, start=MONDAY_8)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
        await rt.start(templates_dir=None)
        await rt.engine.publish(template_from_dict({  # seed 004: config.schedule
            "name": "Cleanup", "config": {"schedule": "0 0 * * *"}, "tasks": [{"name": "sweep"}]}))
        scheduler = Scheduler(rt, clock)
        await scheduler.start()
        first = await scheduler.adopt_template_schedules()
        again = await scheduler.adopt_template_schedules()
        listed = scheduler.list()
        await scheduler.close()
        await rt.close()
        return first, again, listed

    first, again, listed = asyncio.run(scenario())
    assert [s.expression() for s in first] == ["0 0 * * *"] and again == []
    assert len(listed) == 1 and listed[0].created_by == "template Cleanup"
