"""Several consoles on one Data Services: orders go to a workcell that can run them (template name
and version, capabilities, restrictToModuleIds); an order no workcell can run waits and says why."""

from __future__ import annotations

import asyncio
import time

import fleetkit
from packaging.specifiers import SpecifierSet

from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.link import DataServicesLink
from core.dataservices.server import EmbeddedDataServices
from core.orders import TERMINAL_STATUSES, Order, OrderStatus, Parameter
from core.runtime import Runtime
from core.store import DB_FILENAME, Store

_until = fleetkit.until


def _console(tmp_path, name: str, workcell: str | None, url: str) -> tuple[Runtime, DataServicesLink]:  # noqa: ANN001
    from core.clock import ScaledClock

    rt = Runtime.build(tmp_path / name, store=Store(tmp_path / name / DB_FILENAME).open(), clock=ScaledClock(200),
                       workcell=fleetkit.FLEET / f"{workcell}.yaml" if workcell else None, metrics=False)
    return rt, DataServicesLink(rt, DataServicesSettings(url, "test"), module_id=name, poll_interval=0.05,
                                lease=3)


def test_orders_go_where_they_can_run_and_a_version_no_one_has_waits_naming_the_versions(tmp_path):
    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server:
            readers, r_link = _console(tmp_path, "readers", "reader", server.url)
            sealers, s_link = _console(tmp_path, "sealers", "sealer", server.url)
            await readers.start(templates_dir=fleetkit.TEMPLATES, link=r_link)
            await sealers.start(templates_dir=fleetkit.TEMPLATES, link=s_link)
            # the sealers' cell has a newer Fleet Seal (v2), and also runs orders written for v3
            seal = sealers.engine.templates.get("Fleet Seal")
            await sealers.publish_template(seal.model_copy(update={"description": "faster seal"}))
            s_link.compatible = {"fleet seal": SpecifierSet("==3")}
            async with DataServicesClient(server.url) as c:
                def order(template: str, **extra: str) -> Order:
                    return Order(templateName=template, inputParameters=[Parameter(name="plate", value="P1")],
                                 **extra)
                read = await c.create_order(order("Fleet Read"))
                seal_v1 = await c.create_order(order("Fleet Seal", templateVersion="1"))
                seal_v3 = await c.create_order(order("Fleet Seal", templateVersion="3"))
                seal_v7 = await c.create_order(order("Fleet Seal", templateVersion="7"))
                # restricted to the sealers' workcell: the readers, who could run it, leave it
                pinned = await c.create_order(order("Fleet Read", restrictToModuleIds="sealers"))
                both = await c.create_order(order("Fleet Read Seal"))  # nobody has both
                done = [read, seal_v1, seal_v3]

                async def finished() -> bool:
                    return all([(await c.get_order(o)).status in TERMINAL_STATUSES for o in done])

                try:
                    await _until(finished, 30, "the orders a workcell can run complete")
                except AssertionError:
                    raise AssertionError([(await c.get_order(o)).model_dump(include={"templateName", "status", "assignedTo", "statusDetails"}) for o in done]) from None

                async def told() -> Order | None:
                    o = await c.get_order(seal_v7)
                    return o if "v7" in (o.statusDetails or "") and "sealers has v1, v2" in (o.statusDetails or "") else None

                waiting = await _until(told, 30, "the v7 order says why it waits")
                await asyncio.sleep(0.5)  # several polls: still nobody takes the others
                result = {oid: await c.get_order(oid) for oid in (read, seal_v1, seal_v3, seal_v7, pinned, both)}
            await readers.close()
            await sealers.close()
        shared.close()
        return result, waiting, read, seal_v1, seal_v3, seal_v7, pinned, both

    result, waiting, read, seal_v1, seal_v3, seal_v7, pinned, both = asyncio.run(scenario())
    assert result[read].status is OrderStatus.Complete and result[read].assignedTo == "readers"
    assert result[seal_v1].status is OrderStatus.Complete and result[seal_v1].assignedTo == "sealers"
    assert result[seal_v3].status is OrderStatus.Complete and result[seal_v3].assignedTo == "sealers"
    assert result[seal_v7].status is OrderStatus.Created and not result[seal_v7].assignedTo
    assert waiting.statusDetails is not None
    assert "asks for Fleet Seal v7" in waiting.statusDetails and "readers" not in waiting.statusDetails
    assert result[pinned].status is OrderStatus.Created and not result[pinned].assignedTo
    assert result[both].status is OrderStatus.Created and not result[both].assignedTo


def test_an_adopted_order_is_never_sent_back_as_a_new_one(tmp_path):
    """The outbox reading the new local copy of an adopted order before it is linked to the
    Data Services order created a second order there (a double)."""
    async def scenario() -> list[Order]:
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server:
            rt, link = _console(tmp_path, "cell", None, server.url)
            await rt.start(templates_dir=fleetkit.TEMPLATES)
            link.client = DataServicesClient(server.url)
            oid = await link.client.create_order(Order(templateName="Fleet Read"))
            assert await link.client.try_assign(oid, "cell")
            order = await link.client.get_order(oid)
            gate, real_link = asyncio.Event(), link._link

            async def slow_link(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
                await gate.wait()
                await real_link(*args, **kwargs)

            link._link = slow_link  # type: ignore[method-assign]
            adopt = asyncio.create_task(link._adopt(order, "workflow"))

            async def mirrored() -> bool:
                return await rt.store.read(lambda c: c.execute(
                    "SELECT count(*) FROM orders WHERE template_name = 'Fleet Read'").fetchone()[0]) > 0

            await _until(mirrored, 10, "the local copy exists")
            deliver = asyncio.create_task(link.deliver_pending())
            await asyncio.sleep(0.3)
            gate.set()
            await adopt
            await deliver
            await link.deliver_pending()
            orders = await link.client.orders(limit=100)
            await link.client.close()
            await rt.close()
        shared.close()
        return orders

    orders = asyncio.run(scenario())
    top = [o for o in orders if o.templateName == "Fleet Read" and not o.parentIdentifier]
    assert len(top) == 1, [o.createdBy for o in top]


def test_two_consoles_orders_with_the_same_local_id_stay_two_orders_on_the_data_services(tmp_path):
    """Each console numbers its orders from Order_00001; the outbox's idempotency key was the
    local id alone, so the second console's run was taken for the first one's (linked to it)."""
    async def scenario() -> list[Order]:
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server:
            consoles = [_console(tmp_path, name, None, server.url) for name in ("cell-1", "cell-2")]
            for rt, link in consoles:
                await rt.start(templates_dir=fleetkit.TEMPLATES, link=link)
                run_id = await rt.start_run("Fleet Read", {"plate": "P1"})
                assert run_id == "Order_00001"
            async with DataServicesClient(server.url) as c:
                async def both_there() -> list[Order] | None:
                    runs = [o for o in await c.orders(limit=100) if o.templateName == "Fleet Read"]
                    return runs if len(runs) >= 2 else None

                runs = await _until(both_there, 20, "both runs are on the Data Services")
            for rt, _ in consoles:
                await rt.close()
        shared.close()
        return runs

    runs = asyncio.run(scenario())
    assert sorted(o.createdBy or "" for o in runs) == ["cell-1 Order_00001", "cell-2 Order_00001"]


def test_a_run_that_ended_before_the_link_listened_still_answers_its_order(tmp_path):
    """After a restart the engine resumes runs before the link starts; one that finished in
    between left the order it answers Running for ever."""
    async def scenario() -> tuple[OrderStatus, OrderStatus]:
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server:
            rt, link = _console(tmp_path, "cell", None, server.url)
            await rt.start(templates_dir=fleetkit.TEMPLATES)  # the link not started: not listening
            link.client = DataServicesClient(server.url)
            oid = await link.client.create_order(Order(templateName="Fleet Read"))
            assert await link.client.try_assign(oid, "cell")
            await link._adopt(await link.client.get_order(oid), "workflow")
            mirror = next(iter(link._held))

            async def run_done() -> bool:
                return all(rt.store.get_order(r).status is OrderStatus.Complete for r in link._watch)

            await _until(run_done, 10, "the run completes")
            before = rt.store.get_order(mirror).status
            await link.start()

            async def answered() -> bool:
                return rt.store.get_order(mirror).status is OrderStatus.Complete

            try:
                await _until(answered, 5, "the order is answered")
            except AssertionError:
                pass
            after = rt.store.get_order(mirror).status
            await link.stop()
            await rt.close()
        shared.close()
        return before, after

    before, after = asyncio.run(scenario())
    assert before is OrderStatus.Running and after is OrderStatus.Complete


def test_another_consoles_copy_of_its_own_run_is_left_to_it(tmp_path):
    """A console posts a copy of each of its runs and steps unassigned, then claims it: another
    console that has the same template must not claim the copy meanwhile (it would run it a
    second time). The copy names its console and local order in ``createdBy``; a known module's
    copy with another local id shape is left alone too. An ordinary order is taken."""
    from core.dataservices.fleet import ModuleBeat

    async def scenario() -> dict[str, Order]:
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server:
            rt, link = _console(tmp_path, "readers-b", "reader", server.url)
            await rt.start(templates_dir=fleetkit.TEMPLATES, link=link)
            async with DataServicesClient(server.url) as c:
                await c.publish_event(ModuleBeat("readers-a", "inst-a", "host-a", 4242, time.time(), 0.0).event())

                async def knows_a() -> bool:
                    return any(b.module_id == "readers-a" for b in link._all_beats)

                await _until(knows_a, 30, "readers-b has read readers-a's heartbeat")

                def read(created_by: str) -> Order:
                    return Order(templateName="Fleet Read", inputParameters=[Parameter(name="plate", value="P1")],
                                 createdBy=created_by)

                ids = {"copy": await c.create_order(read("readers-a Order_00042")),
                       "known": await c.create_order(read("readers-a R-17")),
                       "lims": await c.create_order(read("lims"))}

                async def taken() -> bool:
                    return (await c.get_order(ids["lims"])).status in TERMINAL_STATUSES

                await _until(taken, 30, "the ordinary order is run")
                await asyncio.sleep(0.5)  # several polls more
                result = {k: await c.get_order(v) for k, v in ids.items()}
            await rt.close()
        shared.close()
        return result

    result = asyncio.run(scenario())
    assert result["lims"].status is OrderStatus.Complete and result["lims"].assignedTo == "readers-b"
    for kind in ("copy", "known"):
        assert not result[kind].assignedTo and result[kind].status is OrderStatus.Created, kind
