"""Embedded mode: the console's own Data Services server tells its link about new orders; the
link reads and claims them in-process instead of polling its own server over HTTP."""

from __future__ import annotations

import asyncio

from core.dataservices.client import DataServicesClient
from core.dataservices.link import DataServicesLink
from core.orders import Order, OrderStatus
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict

PAUSE = {"name": "Short pause", "version": 1, "definition": {"steps": [
    {"id": "wait", "kind": "delay", "parameters": {"seconds": 0}}]}}


def test_an_order_posted_over_http_is_claimed_at_once_without_polling_gets(data_dir):
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
        await runtime.start(templates_dir=None)
        await runtime.engine.publish(template_from_dict(PAUSE))
        # an hour between polls: only the server's notice can make the link look in time
        link = DataServicesLink(runtime, None, poll_interval=3600.0, port=0, timeout=5.0)
        await link.start()
        try:
            for _ in range(500):  # the read at start is done
                if link.polls:
                    break
                await asyncio.sleep(0.01)
            before = link.wakeups  # (its own templates, registered at start)
            async with DataServicesClient(link.state.url, timeout=5) as lims:
                ids = [await lims.create_order(Order(templateName="Short pause")) for _ in range(3)]
                # an order for nobody here, and one already taken: they wake nobody for nothing
                await lims.create_order(Order(templateName="Something else"))
                for _ in range(1000):  # at most 20 s, far below the poll interval
                    done = [await lims.get_order_status(i) for i in ids]
                    if all(s is OrderStatus.Complete for s in done):
                        break
                    await asyncio.sleep(0.02)
            assert link.client is not None
            return done, link.wakeups - before, dict(link.client.sent), link.state.adopted
        finally:
            await link.stop()
            await runtime.close()

    done, wakeups, sent, adopted = asyncio.run(scenario())
    assert done == [OrderStatus.Complete] * 3
    assert adopted == 3
    assert wakeups == 4, "each new waiting order wakes the link; its own claims do not"
    assert sent.get("GET", 0) == 0, f"the link polled its own server over HTTP: {sent}"


def test_a_change_that_leaves_no_order_to_claim_does_not_wake_the_link(data_dir):
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
        await runtime.start(templates_dir=None)
        link = DataServicesLink(runtime, None, poll_interval=3600.0, port=0, timeout=5.0)
        await link.start()
        try:
            async with DataServicesClient(link.state.url, timeout=5) as lims:
                oid = await lims.create_order(Order(templateName="Not ours"))
                woken = link.wakeups
                assert await lims.try_assign(oid, "another-module")
                await lims.update_order_status(oid, OrderStatus.Running)
                await lims.publish_event({"topic": "site.note", "data": "x"})
                await lims.version()  # the server has sent its notices by the time it answers
                await asyncio.sleep(0)
            return woken, link.wakeups
        finally:
            await link.stop()
            await runtime.close()

    woken, after = asyncio.run(scenario())
    assert woken >= 1, "the new waiting order woke the link"
    assert after == woken, "an assigned, running order and an event leave nothing to claim"


def test_a_template_registered_on_the_server_wakes_the_link(data_dir):
    """A new template may make a waiting order one this console can run: the link looks again."""
    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
        await runtime.start(templates_dir=None)
        link = DataServicesLink(runtime, None, poll_interval=3600.0, port=0, timeout=5.0)
        await link.start()
        try:
            for _ in range(500):  # the read at start is done
                if link.polls:
                    break
                await asyncio.sleep(0.01)
            before = link.wakeups
            async with DataServicesClient(link.state.url, timeout=5) as lims:
                await lims.register_template({"name": "Plate.Count"})
            for _ in range(500):
                if link.wakeups > before:
                    break
                await asyncio.sleep(0.01)
            return link.wakeups - before
        finally:
            await link.stop()
            await runtime.close()

    assert asyncio.run(scenario()) == 1
