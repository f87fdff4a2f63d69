"""Seed 000's ``Consolidated`` status ("order was consolidated with another") where Data Services
defines it: as a final status another system sets. labconsole itself never consolidates orders
(README, "Coming from Biosero's OrderScheduler"); an order consolidated elsewhere ends the
seed's wait as finished (not failed) and is offered to no module."""

from __future__ import annotations

import asyncio

from helpers.bdm_support import run, serving

from core.dataservices import DataServicesClient, Order, OrderScheduler, OrderStatus, OrderTemplate


def test_an_order_consolidated_elsewhere_ends_the_wait_as_finished(store):
    async def scenario():
        async with serving(store) as server:
            ds = DataServicesClient(server.url, timeout=5)
            await ds.register_template(OrderTemplate(name="Read Plate"))
            scheduler = OrderScheduler(server.url, poll_interval=0.05)
            try:
                survivor = await ds.create_order(Order(templateName="Read Plate"))  # its id
                waiting = asyncio.ensure_future(scheduler.schedule_order(
                    Order(templateName="Read Plate"), raise_on_failure=True))
                pending = []
                for _ in range(200):
                    pending = [o for o in await ds.unassigned_orders() if o.identifier != survivor]
                    if pending:
                        break
                    await asyncio.sleep(0.02)
                merged = pending[0].identifier or ""
                await ds.update_order_status(merged, OrderStatus.Consolidated,
                                             f"consolidated with {survivor}")
                order = await asyncio.wait_for(waiting, 5)  # not raised: consolidation is no failure
                assert order.status is OrderStatus.Consolidated
                assert order.statusDetails == f"consolidated with {survivor}"
                assert merged not in [o.identifier for o in await ds.unassigned_orders()]
            finally:
                await scheduler.close()
                await ds.close()

    run(scenario())
