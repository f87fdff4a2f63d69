"""Orders given to a console through a shared Data Services (remote mode, real HTTP to 127.0.0.1):
the template version an order asks for, its start time only when it asks for a scheduled slot,
the waiting note naming the versions each console has, the input types it publishes, and the
takeover of orders held by a console that is gone."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fleetkit import until as _until

from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.link import DataServicesLink
from core.dataservices.models import OrderTemplate
from core.dataservices.server import EmbeddedDataServices
from core.engine import RunStatus
from core.errors import DataServicesError
from core.orders import (
    TERMINAL_STATUSES,
    Order,
    OrderStatus,
    Parameter,
    ParameterValueType,
    SchedulingStrategy,
)
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict

MIX = {"name": "Mix", "description": "first", "inputs": [
    {"name": "plate", "type": "string"}, {"name": "volume", "type": "double", "default": 20.0},
    {"name": "count", "type": "integer", "default": 1}, {"name": "sealed", "type": "boolean", "default": False}],
    "definition": {"steps": [{"id": "mix", "kind": "noop"}]}}



async def _console(root: Path, name: str, url: str, *, lease: float = 30,
                   poll_interval: float = 0.05) -> tuple[Runtime, DataServicesLink]:
    """A console without instruments whose Mix has versions 1 and 2, linked to ``url`` as ``name``."""
    rt = Runtime.build(root / name, store=Store(root / name / DB_FILENAME).open(), workcell=None, metrics=False)
    await rt.start(templates_dir=None)
    if not rt.engine.templates.versions("Mix"):
        await rt.engine.publish(template_from_dict(MIX))
        await rt.engine.publish(template_from_dict({**MIX, "description": "second"}))
    link = DataServicesLink(rt, DataServicesSettings(url, "test"), module_id=name, poll_interval=poll_interval,
                            lease=lease)
    await link.start()
    return rt, link


async def _close(rt: Runtime, link: DataServicesLink) -> None:
    await link.stop()
    await rt.close()


def _runs(rt: Runtime) -> list[dict]:
    return [rt.engine.get_instance(r["id"]) for r in rt.engine.query_instances(template="Mix")[0]]


def _mix(plate: str, **extra) -> Order:  # noqa: ANN003
    return Order(templateName="Mix", inputParameters=[Parameter(name="plate", value=plate)], **extra)


def test_an_order_runs_the_version_it_asks_for_and_waits_for_its_slot_only_when_it_asks_for_one(tmp_path):
    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server:
            rt, link = await _console(tmp_path, "cell", server.url)
            try:
                async with DataServicesClient(server.url) as c:
                    async def registered() -> OrderTemplate | None:
                        found = [t for t in await c.list_templates() if t.name == "Mix"]
                        return found[0] if found else None

                    published = await _until(registered, 20, "the console registers its templates")
                    later = datetime.now(UTC) + timedelta(hours=1)
                    ids = {
                        "v1": await c.create_order(_mix("v1", templateVersion="1")),
                        "latest": await c.create_order(_mix("latest")),
                        # a start time without a scheduled slot is not a reason to wait
                        "now": await c.create_order(_mix("now", scheduledStartTime=later,
                                                         schedulingStrategy=SchedulingStrategy.ImmediateExecution)),
                        "slot": await c.create_order(_mix("slot", scheduledStartTime=later,
                                                          schedulingStrategy=SchedulingStrategy.FirstAvailableSlot)),
                        "v7": await c.create_order(_mix("v7", templateVersion="7")),
                    }

                    async def ended() -> bool:
                        return all([(await c.get_order(ids[k])).status in TERMINAL_STATUSES
                                    for k in ("v1", "latest", "now")])

                    await _until(ended, 30, "the orders that need not wait end")

                    async def told() -> Order | None:
                        o = await c.get_order(ids["v7"])
                        return o if (o.statusDetails or "").startswith("waiting:") else None

                    v7 = await _until(told, 30, "the v7 order says why it waits")
                    orders = {k: await c.get_order(oid) for k, oid in ids.items()}
                runs = {v["input_data"]["plate"]: v for v in _runs(rt)}
                mirror = rt.store.get_order(runs["v1"]["id"]).parentIdentifier or ""
                adopted = [(t.to_status, t.why) for t in rt.store.transitions(mirror)]
            finally:
                await _close(rt, link)
        shared.close()
        return published, orders, runs, v7, adopted

    published, orders, runs, v7, adopted = asyncio.run(scenario())
    assert {p.name: p.valueType for p in published.inputParameters} == {
        "plate": ParameterValueType.STRING, "volume": ParameterValueType.DOUBLE,
        "count": ParameterValueType.INTEGER, "sealed": ParameterValueType.BOOLEAN}
    assert all(orders[k].status is OrderStatus.Complete for k in ("v1", "latest", "now"))
    assert runs["v1"]["template_version"] == 1 and runs["latest"]["template_version"] == 2
    assert runs["now"]["status"] == RunStatus.COMPLETED.value
    assert runs["slot"]["status"] not in (RunStatus.COMPLETED.value, RunStatus.RUNNING.value)
    assert orders["slot"].assignedTo == "cell" and orders["slot"].status not in TERMINAL_STATUSES
    assert "v7" not in runs and v7.statusDetails == "waiting: asks for Mix v7; cell has v1, v2"
    # the console's copy of the order says what it checked before claiming it
    assert (OrderStatus.Validated, "inputs checked against the template") in adopted
    assert (OrderStatus.Running, "claimed by labconsole") in adopted


def test_a_gone_consoles_unstarted_orders_are_taken_over_and_its_console_drops_them_on_restart(
        tmp_path, caplog, monkeypatch):
    """Console a holds three orders, unstarted, and goes; console b takes them over, reading the
    Data Services' orders page after page (two a page here); back, a drops its copies."""
    import core.dataservices.link

    caplog.set_level(logging.WARNING, logger="core.dataservices.link")
    monkeypatch.setattr(core.dataservices.link, "PAGE", 2)

    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server, DataServicesClient(server.url) as c:
            a = await _console(tmp_path, "a", server.url, lease=0.3)
            later = datetime.now(UTC) + timedelta(hours=1)  # held, not started, for an hour
            oids = [await c.create_order(_mix(f"P{i}", scheduledStartTime=later,
                                                 schedulingStrategy=SchedulingStrategy.FirstAvailableSlot))
                    for i in range(3)]

            async def runs_made() -> bool:
                return len(_runs(a[0])) == 3 and all([(await c.get_order(o)).assignedTo == "a" for o in oids])

            await _until(runs_made, 20, "console a claims the orders and makes their runs")
            mirrors = {a[0].store.get_order(v["id"]).parentIdentifier for v in _runs(a[0])}
            await _close(*a)  # gone (its last heartbeat says so)
            b = await _console(tmp_path, "b", server.url, lease=0.3)

            async def taken_over() -> bool:  # the claim marks on Data Services say who holds them
                return b[1].taken_over == 3 and b[1].leases is not None and all(
                    [(await b[1].leases.holding(o)).module_id == "b" for o in oids])

            await _until(taken_over, 20, "console b takes the orders over")
            again = await _console(tmp_path, "a", server.url, lease=0.3)  # a comes back
            runs = _runs(again[0])
            local = {m: again[0].store.get_order(m or "").status for m in mirrors}
            links = dict(again[0].store.read_sync(lambda conn: conn.execute(
                "SELECT local_id, remote_id FROM ds_links").fetchall()))
            await _close(*again)
            await _close(*b)
        shared.close()
        return runs, local, links

    runs, local, links = asyncio.run(scenario())
    # back, console a does not run its copies: the runs and the local orders end Canceled
    assert [r["status"] for r in runs] == [RunStatus.CANCELLED.value] * 3
    assert set(local.values()) == {OrderStatus.Canceled}
    lost = sorted(r.getMessage() for r in caplog.records if "is not run here" in r.msg)
    assert lost == sorted(f"Data Services: order {m} ({links[m]}) is not run here: taken over by b on Data Services"
                          for m in local)


def test_an_order_won_by_a_console_that_died_before_marking_it_is_taken_over_by_a_thorough_round(tmp_path):
    """Rounds that read every order (with heartbeats from long ago) come every few rounds, not
    only at start: an order assigned to a console gone long before is taken over later too."""
    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server, DataServicesClient(server.url) as c:
            await _close(*await _console(tmp_path, "old", server.url, lease=0.3))  # beat once, left
            await asyncio.sleep(1.0)  # its heartbeats are older than a quick round looks back
            b = await _console(tmp_path, "b", server.url, lease=0.3)
            await asyncio.sleep(0.5)  # b's first round (a thorough one) is over
            oid = await c.create_order(_mix("P1"))
            assert await c.try_assign(oid, "old")  # won, and then its console died unmarked

            async def taken() -> bool:  # the claim marks on Data Services say who holds it
                return b[1].leases is not None and (await b[1].leases.holding(oid)).module_id == "b"

            await _until(taken, 20, "console b takes over the order of the console gone long ago")
            await _close(*b)
        shared.close()

    asyncio.run(scenario())


def test_the_outbox_backs_off_doubling_while_the_data_services_refuses_deliveries(tmp_path):
    """Deliveries that fail are tried again after 0.5 s, 1 s, 2 s, … (at most 30 s), not in a
    tight loop and not ever more slowly than doubling."""
    async def scenario() -> list[float]:
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server:
            rt, link = await _console(tmp_path, "cell", server.url)
            tries: list[float] = []

            async def refused(batch: int = 200) -> int:  # the Data Services answers 503 to every delivery
                tries.append(time.monotonic())
                raise DataServicesError(server.url, "HTTP 503 Service Unavailable")

            link.deliver_pending = refused  # type: ignore[method-assign]
            try:
                await _until(lambda: _done(len(tries) >= 4), 30, "four delivery attempts")
            finally:
                await _close(rt, link)
        shared.close()
        return [b - a for a, b in zip(tries, tries[1:], strict=False)][:3]

    first, second, third = asyncio.run(scenario())
    assert 1.5 < second / first < 2.6 and 1.5 < third / second < 2.6, (first, second, third)
    assert 0.4 < first < 1.5


async def _done(value: bool) -> bool:
    return value


def test_an_order_taken_between_try_assign_and_the_claim_mark_does_not_hold_up_the_next(tmp_path):
    """Another console marked its claim on the first order first: this console leaves it to them
    and still adopts the second order of the same poll."""
    from core.dataservices.leases import Leases

    async def scenario() -> tuple[list[str], str, str]:
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server, DataServicesClient(server.url) as c:
            rt, link = await _console(tmp_path, "cell", server.url, poll_interval=3600)
            await asyncio.sleep(0.5)  # the inbound loop's first poll is over: only the one below follows
            first = await c.create_order(_mix("P1"))
            second = await c.create_order(_mix("P2"))
            other = Leases(c, "other", "other-instance", lease=30, now=time.time)
            assert await other.claim(first)  # the other console's mark came first
            try:
                adopted = await link.poll_once()
            finally:
                await _close(rt, link)
        shared.close()
        return adopted, first, second

    adopted, first, second = asyncio.run(scenario())
    assert adopted == [second]
