"""A console in embedded mode is a module of its own Data Services like any other: it posts
heartbeats there in-process (and a last one when it stops), so a console that shares that Data
Services lists it, cannot take its module id, and never takes over the orders it works on.

Real parts: two runtimes, the first with its embedded Data Services on 127.0.0.1, the second
working it remotely over HTTP; the LIMS order is created over HTTP; the store is read after the
first console closed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import fleetkit
import pytest

from core.clock import ScaledClock
from core.dataservices.backend import DataServicesBackend
from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.fleet import HEARTBEAT_TOPIC, FleetModule, ModuleBeat
from core.dataservices.link import DataServicesLink
from core.dataservices.models import EventMessage
from core.errors import ConfigError
from core.orders import Order, OrderStatus
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.workcell import parse_workcell

ONE_SLOW_READER = """
name: one slow reader
heartbeat_interval: 10m
stale_timeout: 2h
instruments:
  - {id: Reader1, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 2h, jitter: 0s}}}
"""


def _runtime(d, workcell) -> Runtime:  # noqa: ANN001
    d.mkdir(parents=True, exist_ok=True)
    return Runtime.build(d, store=Store(d / DB_FILENAME).open(), clock=ScaledClock(200),
                         workcell=workcell, metrics=False)


def test_a_console_sharing_an_embedded_data_services_lists_that_console_and_its_work(tmp_path):
    cell = parse_workcell(ONE_SLOW_READER)

    async def scenario():  # noqa: ANN202
        a = _runtime(tmp_path / "a", cell)
        a_link = DataServicesLink(a, None, module_id="cell-a", port=0, lease=3.0)
        await a.start(templates_dir=fleetkit.TEMPLATES, link=a_link)
        url = a_link.state.url
        async with DataServicesClient(url) as lims:
            ids = [await lims.create_order(Order(templateName="Fleet Read")) for _ in range(2)]
        # cell-a claims both (in-process) and reads the first for two hours; the second waits
        await fleetkit.until(lambda: _true(len(set(a_link._watch.values())) == 2
                                           and a.dispatcher is not None and len(a.dispatcher.queue) == 1),
                             20, "cell-a runs one read and queues the other")
        sent = sum(a_link.client.sent.values()) if a_link.client else 0

        b = _runtime(tmp_path / "b", cell)
        b_link = DataServicesLink(b, DataServicesSettings(url, "test"), module_id="cell-b",
                                  poll_interval=0.1, lease=1.0)
        await b.start(templates_dir=fleetkit.TEMPLATES, link=b_link)

        async def listed() -> dict[str, FleetModule] | None:
            seen = {m.beat.module_id: m for m in await b_link.fleet()}
            return seen if "cell-a" in seen and set(seen["cell-a"].beat.held) == set(ids) else None

        seen = await fleetkit.until(listed, 20, "cell-b lists cell-a (the console that hosts its Data "
                                                "Services) with the two orders it works on")
        # cell-b takes over nothing of cell-a's (orders with no claim marks, older than its lease),
        # even from a beat of cell-a that does not list them yet (posted before it claimed them)
        assert b_link.client is not None and b_link.leases is not None
        async with DataServicesClient(url) as lims:
            orders = [await lims.get_order(i) for i in ids]
        bare = replace(seen["cell-a"].beat, held=(), running_orders=())
        remote = replace(bare, hosts_data_services=False)
        taken = [await b_link.reclaim_once(thorough=True),
                 await b_link.leases.takeable([remote], orders, b_link._can_take)]
        await asyncio.sleep(1.2)  # more than cell-b's lease: markless orders are due now
        taken += [await b_link.reclaim_once(thorough=True),
                  await b_link.leases.takeable([bare], orders, b_link._can_take)]
        due = await b_link.leases.takeable([remote], orders, b_link._can_take)

        twin = _runtime(tmp_path / "twin", cell)
        twin_link = DataServicesLink(twin, DataServicesSettings(url, "test"), module_id="cell-a", lease=30.0)
        with pytest.raises(ConfigError) as refused:
            await twin.start(templates_dir=fleetkit.TEMPLATES, link=twin_link)
        twin.store.close()
        own_requests = (sum(a_link.client.sent.values()) if a_link.client else 0) - sent
        await b.close()
        statuses = {i: a.store.get_order(i).status for i in ids}
        # a day on, its own Data Services keeps no heartbeat (each one was over after its lease)
        events = a_link.identity.client  # type: ignore[union-attr]
        total = len(await events.query_events(limit=10_000))
        pruned = await a_link.prune_heartbeats(now=time.time() + 2 * 86_400)
        left = await events.query_events(topic=HEARTBEAT_TOPIC)
        total_left = len(await events.query_events(limit=10_000))
        await a.close()
        store = Store(tmp_path / "a" / DB_FILENAME).open()
        try:
            rows = DataServicesBackend(store).query_events({"topic": HEARTBEAT_TOPIC}, limit=1000)
        finally:
            store.close()
        beats = [ModuleBeat.from_event(EventMessage.model_validate_json(r)) for r in rows]
        return (ids, seen, taken, due, str(refused.value), own_requests, statuses, [b for b in beats if b],
                (pruned, len(left), total, total_left))

    ids, seen, taken, due, refused, own_requests, statuses, beats, pruning = asyncio.run(scenario())
    assert set(seen) == {"cell-a", "cell-b"}, "cell-b lists the console whose embedded Data Services it uses"
    a = seen["cell-a"]
    assert a.alive and a.beat.hosts_data_services and a.beat.workcell == "one slow reader"
    assert a.beat.instruments == {"Reader1": "Busy"} and a.beat.queue_depth == 1 and a.beat.running == 1
    assert set(a.beat.held) == set(ids) and len(a.beat.running_orders) == 1
    assert taken == [[], [], [], []], "the orders of the console that hosts the Data Services stay with it"
    assert sorted(o.identifier for o, _h in due) == sorted(ids), "a remote console's would be due"
    assert statuses == dict.fromkeys(ids, OrderStatus.Running)
    assert "'cell-a' is in use by another console" in refused and "DATA SERVICES.module_id" in refused
    assert own_requests == 0, "cell-a posts and reads its heartbeats in-process, not over HTTP"
    mine = [b for b in beats if b.module_id == "cell-a"]
    assert mine and mine[-1].lease == 0, "cell-a left with a last heartbeat of lease 0"
    pruned, left, total, total_left = pruning
    assert pruned >= 3 and left == 0, "old heartbeats (both consoles') are removed"
    assert total_left == total - pruned and total_left > 0, "the other events (orders created, ...) are kept"


async def _true(value: bool) -> bool:
    return value
