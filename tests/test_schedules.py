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
        listed = scheduler.entries()
        await scheduler.close()
        await rt.close()
        return first, again, listed

    first, again, listed = asyncio.run(scenario())
    assert [s.expression() for s in first] == ["0 0 * * *"] and again == []
    assert len(listed) == 1 and listed[0].created_by == "template Cleanup"


@pytest.mark.parametrize("cron", ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 2,4,6,9,11 *", "0 0 0 30 2 *"])
def test_a_cron_that_never_fires_is_refused_naming_the_field(cron):
    with pytest.raises(ConfigError) as info:
        check_schedule(Schedule("T", Frequency.CRON, cron=cron))
    assert f"schedule: cron: '{cron}': never fires" in str(info.value)


def test_leap_days_and_last_days_are_fine():
    for cron in ("0 0 29 2 *", "0 0 31 * *", "0 0 L 2 *", "0 9 * * 1-5", "30 0 9 * * 1-5"):
        check_schedule(Schedule("T", Frequency.CRON, cron=cron))


def test_inputs_that_are_not_an_object_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"schedule: inputs: inputs must be a JSON object .* list \[1, 2\]"):
        check_schedule(Schedule("T", Frequency.DAILY, at="09:00", inputs=[1, 2]))  # type: ignore[arg-type]


def _v4_store_with_old_schedules_table(path):
    """A store as labconsole wrote it before schema 5: the schedules module made its own table."""
    import sqlite3

    from core.store import APPLICATION_ID, MIGRATIONS, _split_sql

    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:4]:
        for statement in _split_sql(script):
            conn.execute(statement)
    conn.execute("CREATE TABLE IF NOT EXISTS schedules (id TEXT PRIMARY KEY, template TEXT NOT NULL, "
                 "frequency TEXT NOT NULL, cron TEXT, at TEXT, timezone TEXT NOT NULL, inputs TEXT NOT NULL, "
                 "priority INTEGER NOT NULL, enabled INTEGER NOT NULL, next_run REAL, last_run REAL, "
                 "last_run_id TEXT, created_by TEXT NOT NULL)")
    # written before impossible dates were refused: due now, and croniter cannot go on from it
    conn.execute("INSERT INTO schedules VALUES ('old1', 'Nightly', 'cron', '0 0 30 2 *', NULL, 'UTC', '{}', "
                 "50, 1, ?, NULL, NULL, 'ops')", (MONDAY_8 - 60,))
    conn.execute("INSERT INTO schedules VALUES ('old2', 'Nightly', 'daily', NULL, '09:00', 'Europe/Berlin', "
                 "'[1, 2]', 50, 1, ?, NULL, NULL, 'ops')", (MONDAY_8 - 30,))
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()


def test_an_old_store_migrates_and_a_failing_schedule_does_not_stop_the_others(data_dir):
    _v4_store_with_old_schedules_table(data_dir / DB_FILENAME)

    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store, start=MONDAY_8)
        store.clock = clock
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
        await rt.start(templates_dir=None)
        await rt.engine.publish(template_from_dict({"name": "Nightly", "definition": {"steps": [
            {"id": "a", "kind": "noop"}]}}))
        scheduler = Scheduler(rt, clock)
        migrated = [(s.id, s.last_error) for s in scheduler.entries()]
        await scheduler.start()                      # the schedules loop runs the due ones
        good = await scheduler.add(Schedule("Nightly", Frequency.CRON, cron="30 7 * * *"))  # 08:30 Berlin
        await clock.advance(3600)
        listed = {s.id: s for s in scheduler.entries()}
        started = [sid for sid, _ in scheduler.started]
        loop_alive = scheduler._task is not None and not scheduler._task.done()
        await scheduler.close()
        await rt.close()
        return migrated, listed, started, good.id, loop_alive

    migrated, listed, started, good, loop_alive = asyncio.run(scenario())
    assert sorted(migrated) == [("old1", None), ("old2", None)]
    assert started == [good] and loop_alive
    assert listed["old1"].next_run is None and "cannot compute the next run" in listed["old1"].last_error
    assert listed["old2"].last_run_id is None and "inputs must be a JSON object" in listed["old2"].last_error
    assert listed["old2"].next_run is not None  # still scheduled: fixing its inputs is enough
    assert listed[good].last_error is None and listed[good].last_run_id


def test_a_published_schedule_that_never_fires_does_not_stop_start_up(data_dir, caplog):
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        clock = VirtualClock.for_store(store, start=MONDAY_8)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
        await rt.start(templates_dir=None)
        # published by a version that did not check the date (the model takes it as given)
        good = template_from_dict({"name": "Cleanup", "tasks": [{"name": "sweep"}]})
        await rt.engine.publish(good.model_copy(update={"schedule": "0 0 30 2 *"}))
        scheduler = Scheduler(rt, clock)
        await scheduler.start()
        added = await scheduler.adopt_template_schedules()
        await scheduler.close()
        await rt.close()
        return added

    assert asyncio.run(scenario()) == []
    assert "template Cleanup declares a schedule that cannot be used" in caplog.text
    assert "never fires" in caplog.text
