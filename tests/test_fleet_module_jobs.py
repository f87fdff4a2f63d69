"""Module jobs (orders for one of the workcell's capabilities) in flight when the console stops
are picked up by the console restarted on the same store: a job that had not started on an
instrument is queued again and completes; one that had started is never run again silently, its
order ends in Error with its outcome unknown, naming the instrument.

Real parts: the console's runtime closed and a new one opened on the same SQLite store, with its
embedded Data Services, or working a standalone Data Services (its own store) over HTTP; the LIMS
creates the orders over HTTP."""

from __future__ import annotations

import asyncio

import fleetkit
import pytest

from core.clock import ScaledClock
from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.link import JOB_PREFIX, DataServicesLink
from core.dataservices.server import EmbeddedDataServices
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
READ = "PlateReader.ReadPlate"


@pytest.mark.parametrize("mode", ["embedded", "remote"])
def test_module_jobs_in_flight_are_resumed_after_a_restart_a_started_one_is_not_run_again(tmp_path, mode):
    cell = parse_workcell(ONE_SLOW_READER)
    d = tmp_path / "cell"
    d.mkdir()

    async def scenario():  # noqa: ANN202
        server = None
        if mode == "remote":
            shared = Store(tmp_path / "shared" / DB_FILENAME).open()
            server = EmbeddedDataServices(shared, port=0)
            await server.start()

        def console(speed: float) -> tuple[Runtime, DataServicesLink]:
            rt = Runtime.build(d, store=Store(d / DB_FILENAME).open(), clock=ScaledClock(speed),
                               workcell=cell, metrics=False)
            settings = DataServicesSettings(server.url, "test") if server is not None else None
            return rt, DataServicesLink(rt, settings, module_id="cell-1", port=0, poll_interval=0.1, lease=30)

        # a read takes 36 s here: the first is under way on Reader1 when the console stops
        rt, link = console(200)
        await rt.start(templates_dir=fleetkit.TEMPLATES, link=link)
        url = link.state.url if server is None else server.url
        async with DataServicesClient(url) as lims:
            ids = [await lims.create_order(Order(templateName=READ)) for _ in range(2)]

            async def claimed() -> bool:
                d = rt.dispatcher
                return d is not None and len(d.queue) == 1 and len(d.instruments["Reader1"].running) == 1

            await fleetkit.until(claimed, 20, "both reads claimed, one under way, one queued")
            first = next(iter(rt.dispatcher.instruments["Reader1"].running))  # type: ignore[union-attr]
            if server is not None:  # the local copy's order on the Data Services
                first = await rt.store.read(lambda c: c.execute(
                    "SELECT remote_id FROM ds_links WHERE local_id = ?", (first,)).fetchone()[0])
            await rt.close()

            # restarted on the same store; a read now takes 0.36 s
            rt, link = console(20_000)
            await rt.start(templates_dir=fleetkit.TEMPLATES, link=link)
            url = link.state.url if server is None else server.url
            async with DataServicesClient(url) as lims2:
                async def answered() -> list[Order] | None:
                    orders = [await lims2.get_order(i) for i in ids]
                    done = all(o.status in (OrderStatus.Complete, OrderStatus.Error) for o in orders)
                    return orders if done else None

                orders = await fleetkit.until(answered, 30, "both reads answered after the restart")
            left = await rt.store.read(lambda c: c.execute(
                "SELECT count(*) FROM meta WHERE key LIKE ?", (JOB_PREFIX + "%",)).fetchone()[0])
            await rt.close()
        if server is not None:
            await server.stop()
            shared.close()
        return ids, first, orders, left

    ids, first, orders, left = asyncio.run(scenario())
    by_id = dict(zip(ids, orders, strict=True))
    started = by_id[first]
    queued = next(o for o in orders if o is not started)
    assert queued.status is OrderStatus.Complete, (queued.status, queued.statusDetails)
    assert started.status is OrderStatus.Error, "a read under way when the console stopped is not run again"
    assert "outcome unknown" in (started.statusDetails or "") and "Reader1" in (started.statusDetails or "")
    assert left == 0, "nothing left to resume"


def test_an_embedded_console_s_heartbeat_names_the_job_under_way_apart_from_the_one_queued(tmp_path):
    """Embedded mode: the console claims two reads for its one reader; the fleet sees it hold
    both and run only the one under way on Reader1 (the other waits in its queue)."""
    cell = parse_workcell(ONE_SLOW_READER)
    d = tmp_path / "cell"
    d.mkdir()

    async def scenario():  # noqa: ANN202
        # a read takes 36 s here: the first stays under way while the heartbeats are read
        rt = Runtime.build(d, store=Store(d / DB_FILENAME).open(), clock=ScaledClock(200),
                           workcell=cell, metrics=False)
        link = DataServicesLink(rt, None, module_id="cell-1", port=0, poll_interval=0.1, lease=3.0)
        await rt.start(templates_dir=fleetkit.TEMPLATES, link=link)
        try:
            async with DataServicesClient(link.state.url) as lims:
                ids = [await lims.create_order(Order(templateName=READ)) for _ in range(2)]

            async def listed():  # noqa: ANN202
                beat = next((m.beat for m in await link.fleet() if m.beat.module_id == "cell-1"), None)
                return beat if beat is not None and set(beat.held) == set(ids) and beat.running_orders else None

            beat = await fleetkit.until(listed, 20, "cell-1 lists both reads it holds and one it runs")
            assert rt.dispatcher is not None
            under_way = list(rt.dispatcher.instruments["Reader1"].running)
            return ids, beat, under_way, len(rt.dispatcher.queue)
        finally:
            await rt.close()

    ids, beat, under_way, queued = asyncio.run(scenario())
    assert len(under_way) == 1 and under_way[0] in ids and queued == 1
    assert beat.running_orders == tuple(under_way), "the queued read is held, not running"
    assert beat.running == 1 and beat.queue_depth == 1
