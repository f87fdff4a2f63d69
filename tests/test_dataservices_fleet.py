"""Several consoles on one Data Services: module ids claimed through heartbeat events."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from core.dataservices.backend import DataServicesBackend
from core.dataservices.config import DataServicesSettings, module_id_from_ini
from core.dataservices.fleet import HEARTBEAT_TOPIC, ModuleBeat
from core.dataservices.link import DataServicesLink
from core.dataservices.server import EmbeddedDataServices
from core.errors import ConfigError
from core.runtime import Runtime
from core.store import DB_FILENAME, Store


def test_two_consoles_with_one_module_id_the_second_refuses_naming_the_first(tmp_path):
    async def scenario():
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server:
            settings = DataServicesSettings(server.url, "test")
            runtimes, links = [], []
            for name in ("a", "b", "c"):
                rt = Runtime.build(tmp_path / name, store=Store(tmp_path / name / DB_FILENAME).open(),
                                   workcell=None, metrics=False)
                runtimes.append(rt)
                links.append(DataServicesLink(rt, settings, module_id="cell-1" if name != "c" else "cell-2",
                                              poll_interval=0.05, lease=30))
            await runtimes[0].start(templates_dir=None, link=links[0])
            with pytest.raises(ConfigError) as refused:
                await runtimes[1].start(templates_dir=None, link=links[1])
            started_b = runtimes[1].engine.tasks.closing or len(runtimes[1].engine.tasks)
            await runtimes[2].start(templates_dir=None, link=links[2])
            view = {m.beat.module_id: m for m in await links[2].fleet()}
            await runtimes[0].close()  # it leaves: the id is free at once
            again = Runtime.build(tmp_path / "b2", store=Store(tmp_path / "b2" / DB_FILENAME).open(),
                                  workcell=None, metrics=False)
            link_again = DataServicesLink(again, settings, module_id="cell-1", lease=30)
            await again.start(templates_dir=None, link=link_again)
            events = await link_again.client.query_events(topic=HEARTBEAT_TOPIC) if link_again.client else []
            await again.close()
            await runtimes[2].close()
            runtimes[1].store.close()
        shared.close()
        return str(refused.value), started_b, view, events

    message, started_b, view, events = asyncio.run(scenario())
    assert "'cell-1' is in use by another console" in message and "pid" in message
    assert "DATA SERVICES.module_id" in message
    assert started_b == 0, "refused before the engine started anything"
    assert set(view) == {"cell-1", "cell-2"} and all(m.alive for m in view.values())
    beats = [b for b in (ModuleBeat.from_event(e) for e in events) if b is not None]
    assert any(b.module_id == "cell-1" and b.lease == 0 for b in beats), "the first left with lease 0"


def test_module_id_in_config_ini_is_checked_with_its_line(tmp_path):
    good = tmp_path / "config.ini"
    good.write_text("[DATA SERVICES]\nurl = http://10.0.0.5:8105\nmodule_id = cell-1\n")
    assert module_id_from_ini(good) == "cell-1"
    bad = tmp_path / "bad.ini"
    bad.write_text("[DATA SERVICES]\nmodule_id = 1 two\n")
    with pytest.raises(ConfigError, match=r"bad.ini:2: DATA SERVICES.module_id"):
        module_id_from_ini(bad)
    assert module_id_from_ini(tmp_path / "none.ini") is None


def test_a_heartbeat_that_is_not_one_is_ignored():
    from core.dataservices.models import EventMessage

    assert ModuleBeat.from_event(EventMessage(topic=HEARTBEAT_TOPIC, data="{not json")) is None
    assert ModuleBeat.from_event(EventMessage(topic=HEARTBEAT_TOPIC, data='{"module_id": 1}')) is None


def test_an_embedded_console_removes_day_old_heartbeats_and_its_hourly_round_goes_on_quietly(tmp_path, caplog):
    """Embedded mode: heartbeats days old (of a console long gone) are removed from the console's
    own Data Services as it starts; the round that removes them then waits for the next hour
    without anything reported as failed."""
    async def scenario():  # noqa: ANN202
        d = tmp_path / "cell"
        store = Store(d / DB_FILENAME).open()
        old = await DataServicesBackend(store).publish_event(
            {"topic": HEARTBEAT_TOPIC, "moduleId": "gone-console", "data": "{}"})
        store.write_sync(lambda c: c.execute("UPDATE ds_events SET created = ? WHERE event_id = ?",
                                             (time.time() - 3 * 86_400, old)))

        def kept() -> bool:
            return store.read_sync(lambda c: c.execute(
                "SELECT count(*) FROM ds_events WHERE event_id = ?", (old,)).fetchone()[0]) == 1

        was_kept = kept()
        rt = Runtime.build(d, store=store, workcell=None, metrics=False)
        link = DataServicesLink(rt, None, module_id="cell-1", port=0, lease=30)
        await rt.start(templates_dir=None, link=link)
        try:
            for _ in range(500):
                if not kept():
                    break
                await asyncio.sleep(0.01)
            removed = not kept()
            await asyncio.sleep(0.2)  # the round is asleep until the next hour
            return was_kept, removed
        finally:
            await rt.close()

    with caplog.at_level(logging.ERROR):
        was_kept, removed = asyncio.run(scenario())
    assert was_kept and removed
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
