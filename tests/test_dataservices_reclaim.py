"""Reclaiming the orders of consoles that are gone, round by round (remote mode: a Data Services
on 127.0.0.1 over real HTTP, heartbeats and claim marks posted as other consoles would): a quick
round with every console's latest heartbeat alive reads no orders and takes nothing; a thorough
round also takes what a live console won but never held, and what a console gone long ago left;
a console's last heartbeat (lease 0) makes its held orders takeable at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from test_dataservices_link import FAST_CELL

from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.fleet import ModuleBeat
from core.dataservices.leases import Leases
from core.dataservices.link import DataServicesLink
from core.dataservices.server import EmbeddedDataServices
from core.orders import Order
from core.runtime import SAMPLE_TEMPLATES, Runtime
from core.store import DB_FILENAME, Store
from core.workcell import parse_workcell

LEASE = 1.0
"""The reclaiming console's lease (seconds): claim marks older than this may be taken over."""


def beat(module_id: str, instance: str, at: float, lease: float, held: tuple[str, ...] = ()) -> dict:
    return ModuleBeat(module_id=module_id, instance=instance, host="bench-pc", pid=4242, at=at, lease=lease,
                      held=held).event()


@dataclass
class Cell:
    """A Data Services on 127.0.0.1 (its own store), this console (``cell-b``: runtime and link,
    its identity claimed, no loops: the rounds are run by the test) and a client of the site."""

    ds_store: Store
    server: EmbeddedDataServices
    url: str
    store: Store
    runtime: Runtime
    link: DataServicesLink
    site: DataServicesClient


@contextlib.asynccontextmanager
async def _cell(tmp_path: Path, *, lease: float = LEASE, timeout: float = 5.0,
                workcell: bool = True) -> AsyncIterator[Cell]:
    ds_dir, b_dir = tmp_path / "ds", tmp_path / "b"
    ds_dir.mkdir()
    b_dir.mkdir()
    ds_store = Store(ds_dir / DB_FILENAME).open()
    server = EmbeddedDataServices(ds_store, port=0)
    url = await server.start()
    store = Store(b_dir / DB_FILENAME).open()
    if workcell:
        runtime = Runtime.build(b_dir, store=store, workcell=parse_workcell(FAST_CELL))
        await runtime.start(templates_dir=SAMPLE_TEMPLATES)
    else:
        runtime = Runtime.build(b_dir, store=store, workcell=None, metrics=False)
        await runtime.start(templates_dir=None)
    link = DataServicesLink(runtime, DataServicesSettings(url, "test"), module_id="cell-b", lease=lease,
                            timeout=timeout)
    cell = Cell(ds_store, server, url, store, runtime, link, DataServicesClient(url))
    try:
        await link.claim_module_id()  # its identity and leases (posts its first heartbeat)
        yield cell
    finally:
        await cell.site.close()
        await link.stop()
        await runtime.close()
        await cell.server.stop()
        ds_store.close()


async def _left_by_a_gone_console(c: Cell, own_lease: float = 30) -> str:
    """An order cell-z won and marked, cell-z's last heartbeat 10 s ago; returned once the claim
    mark is older than a lease; then this console beats (with ``own_lease``)."""
    left = await c.site.create_order(Order(templateName="Sealer.Seal"))
    z = Leases(c.site, "cell-z", "inst-z", lease=LEASE, now=time.time)
    assert await c.site.try_assign(left, "cell-z") and await z.claim(left)
    await c.site.publish_event(beat("cell-z", "inst-z", time.time() - 10, LEASE, held=(left,)))
    await asyncio.sleep(LEASE + 0.3)
    assert c.link.client is not None and c.link.identity is not None
    await c.link.client.publish_event(c.link.identity.beat(lease=own_lease).event())
    return left


def test_reclaim_rounds_follow_the_latest_heartbeat_of_each_console(tmp_path):
    async def scenario():
        async with _cell(tmp_path) as c:
            link, site = c.link, c.site
            assert link.client is not None and link.client.timeout == 5.0  # the link's own timeout, not the client's default
            now = time.time()
            held, won, left = [await site.create_order(Order(templateName="Sealer.Seal")) for _ in range(3)]
            a = Leases(site, "cell-a", "inst-a", lease=30, now=time.time)
            z = Leases(site, "cell-z", "inst-z", lease=LEASE, now=time.time)
            for oid, leases in ((held, a), (won, a), (left, z)):
                assert await site.try_assign(oid, leases.module_id)
                assert await leases.claim(oid)
            # cell-a is alive and holds one of its two orders; cell-z beat last 10 s ago, then went
            await site.publish_event(beat("cell-a", "inst-a", now, 30, held=(held,)))
            await site.publish_event(beat("cell-z", "inst-z", now - 10, LEASE, held=(left,)))
            await asyncio.sleep(LEASE + 0.3)  # the claim marks are older than a lease now

            async def round_(thorough: bool, a_lease: float = 30) -> list[str]:
                """A round right after cell-a's heartbeat and this console's own."""
                assert link.client is not None and link.identity is not None
                await site.publish_event(beat("cell-a", "inst-a", time.time(), a_lease, held=(held,)))
                await link.client.publish_event(link.identity.beat(lease=30).event())
                return sorted(await link.reclaim_once(thorough=thorough))

            quick = await round_(False)
            thorough = await round_(True)
            again = await round_(True)
            after_stop = await round_(False, a_lease=0)  # cell-a's last heartbeat: it stopped
            return (held, won, left), quick, thorough, again, after_stop, link.taken_over

    (held, won, left), quick, thorough, again, after_stop, taken = asyncio.run(scenario())
    assert quick == [], "every latest heartbeat alive: a quick round takes nothing"
    assert thorough == sorted([won, left]), "won by a live console but not held; left by one gone long ago"
    assert again == [], "taken once"
    assert after_stop == [held], "its last heartbeat (lease 0) frees what it held"
    assert taken == 3


def test_owner_of_names_the_console_an_order_is_assigned_to(tmp_path):
    """A console without a workcell (no dispatcher) on a shared Data Services: its heartbeat says
    it has nothing queued; an order assigned to another console that beats is that console's
    (its latest heartbeat), one assigned to itself or to nobody is its own (None)."""
    async def scenario():
        async with _cell(tmp_path, lease=30, workcell=False) as c:
            await c.site.publish_event(beat("cell-a", "inst-a", time.time(), 30))
            owners = {who: await c.link.owner_of(["Order_1"], who) for who in ("cell-a", "cell-q", "cell-b", None)}
            mine = next(m for m in await c.link.fleet() if m.beat.module_id == "cell-b")
            return owners, mine

    owners, mine = asyncio.run(scenario())
    a = owners["cell-a"]
    assert not isinstance(a, str) and a is not None
    assert (a.beat.module_id, a.beat.instance, a.alive) == ("cell-a", "inst-a", True)
    assert owners["cell-q"] is None, "no heartbeat from it: nothing to show"
    assert owners["cell-b"] is None and owners[None] is None, "its own, or nobody's"
    assert (mine.beat.queue_depth, mine.beat.running, mine.beat.instruments, mine.alive) == (0, 0, {}, True)


QUICK = {"name": "Quick seal", "definition": {"steps": [{"id": "seal", "kind": "Sealer.Seal"}]}}


def test_an_order_adopted_just_before_a_stop_gets_its_run_at_the_next_start(tmp_path):
    """Remote mode: the console stopped after it claimed an order and linked its local copy, but
    before it created the run (the copy says Running, no run exists). Started again, it creates
    the run, runs it and answers the order."""
    from core.orders import OrderStatus
    from core.templates import template_from_dict

    ds_dir, b_dir = tmp_path / "ds", tmp_path / "b"
    ds_dir.mkdir()
    b_dir.mkdir()

    async def console(url: str) -> tuple[Runtime, DataServicesLink]:
        store = Store(b_dir / DB_FILENAME).open()
        runtime = Runtime.build(b_dir, store=store, workcell=parse_workcell(FAST_CELL))
        await runtime.start(templates_dir=None)
        return runtime, DataServicesLink(runtime, DataServicesSettings(url, "test"), module_id="cell-b",
                                         lease=30, timeout=5.0, poll_interval=0.1)

    async def scenario():
        ds_store = Store(ds_dir / DB_FILENAME).open()
        server = EmbeddedDataServices(ds_store, port=0)
        url = await server.start()
        site = DataServicesClient(url)
        try:
            runtime, link = await console(url)
            try:
                await runtime.engine.publish(template_from_dict(QUICK))
                await link.claim_module_id()
                assert link.leases is not None
                oid = await site.create_order(Order(templateName="Quick seal"))
                # what the pickup does up to the moment it stopped: try-assign, the claim mark,
                # the local copy linked to it and set Running
                assert await site.try_assign(oid, "cell-b") and await link.leases.claim(oid)
                order = await site.get_order(oid)
                mirror = await runtime.ledger.create_order(order.model_copy(update={
                    "identifier": None, "assignedTo": "cell-b", "status": OrderStatus.Created}),
                    who=f"Data Services {oid}")
                await link._link(mirror.identifier or "", oid, adopted=True)  # noqa: SLF001
                await runtime.ledger.set_status(mirror.identifier or "", OrderStatus.Running, who="cell-b")
                assert runtime.store.runs_for_orders([mirror.identifier or ""]) == {}
            finally:
                await link.stop()
                await runtime.close()
            runtime, link = await console(url)  # started again
            try:
                await link.start()
                loop = asyncio.get_running_loop()
                end = loop.time() + 60
                while (await site.get_order(oid)).status is not OrderStatus.Complete:
                    assert loop.time() < end, "the order was not answered"
                    await asyncio.sleep(0.1)
                return runtime.store.runs_for_orders([mirror.identifier or ""])
            finally:
                await link.stop()
                await runtime.close()
        finally:
            await site.close()
            await server.stop()
            ds_store.close()

    runs = asyncio.run(scenario())
    assert len(runs) == 1, "one run was made for it at the start"


def test_an_order_this_console_has_is_not_taken_again_while_its_own_heartbeat_lapsed(tmp_path):
    """This console took an order over and has not started it (its instrument is disabled); its
    own heartbeat then lapsed (the machine slept) and the takeover's mark is older than a lease:
    a round before its next heartbeat finds the order held by no live console, but this console
    has its copy already, and does not make a second one."""
    async def scenario():
        async with _cell(tmp_path) as c:
            assert c.runtime.dispatcher is not None
            await c.runtime.dispatcher.set_enabled("Sealer1", False, who="cy", reason="cleaning")
            left = await _left_by_a_gone_console(c, own_lease=LEASE)
            rounds = [await c.link.reclaim_once(thorough=True)]
            await asyncio.sleep(LEASE + 0.3)  # this console's heartbeat and the takeover's mark age
            rounds.append(await c.link.reclaim_once(thorough=True))
            mirrors = c.store.read_sync(lambda conn: conn.execute(
                "SELECT id FROM orders WHERE template_name = 'Sealer.Seal'").fetchall())
            copies = [c.store.transitions(oid)[0].who for (oid,) in mirrors]
            return left, rounds, c.link.taken_over, copies

    left, rounds, taken, copies = asyncio.run(scenario())
    assert rounds == [[left], []]
    assert taken == 1
    assert copies == [f"Data Services {left}"], "one local copy of it"


def test_an_order_taken_over_is_logged_naming_it_and_the_console_that_left_it(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="core.dataservices.link")

    async def scenario():
        async with _cell(tmp_path) as c:
            left = await _left_by_a_gone_console(c)
            return left, await c.link.reclaim_once(thorough=True)

    left, taken = asyncio.run(scenario())
    assert taken == [left]
    said = [r.getMessage() for r in caplog.records if r.name == "core.dataservices.link" and "taken over" in r.getMessage()]
    assert said == [f"Data Services: order {left} of cell-z taken over (its console is gone, it had not started)"]


def test_a_round_reads_every_page_of_waiting_orders(tmp_path):
    """More waiting orders than the Data Services client's default page (100) come before the
    one a gone console left: a thorough round still finds and takes it."""
    async def scenario():
        async with _cell(tmp_path) as c:
            # a page of orders waiting for a module, older than the one left
            await asyncio.gather(*(c.site.create_order(Order(templateName="Sealer.Seal")) for _ in range(100)))
            left = await _left_by_a_gone_console(c)
            return left, await c.link.reclaim_once(thorough=True)

    left, taken = asyncio.run(scenario())
    assert taken == [left]


def test_a_step_waits_for_a_data_services_that_is_down_to_record_its_start(tmp_path):
    """A taken-over order's first step records its start on the Data Services before it runs;
    while the Data Services does not answer (several tries in a row) the step waits, and it runs
    once the Data Services is back."""
    from core.orders import OrderStatus

    async def scenario():
        loop = asyncio.get_running_loop()
        async with _cell(tmp_path, timeout=2.0) as c:
            link, store, runtime = c.link, c.store, c.runtime
            assert runtime.dispatcher is not None
            await runtime.dispatcher.set_enabled("Sealer1", False, who="cy", reason="cleaning")
            left = await _left_by_a_gone_console(c)
            assert await link.reclaim_once(thorough=True) == [left]
            [(mirror,)] = store.read_sync(lambda conn: conn.execute(
                "SELECT id FROM orders WHERE template_name = 'Sealer.Seal'").fetchall())
            port = int(c.url.rsplit(":", 1)[1].split("/")[0])
            await c.server.stop()  # the Data Services goes down; then the sealer is free
            await runtime.dispatcher.set_enabled("Sealer1", True, who="cy", reason="clean")
            end = loop.time() + 20
            while link.state.connected is not False:
                assert loop.time() < end, "the step did not try to record its start"
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # tried again after 0.2 s and 0.4 s more: refused each time
            down = store.get_order(mirror).status
            c.server = EmbeddedDataServices(c.ds_store, port=port, port_attempts=1)
            await c.server.start()
            final = (OrderStatus.Complete, OrderStatus.Error, OrderStatus.Canceled)
            while (after := store.get_order(mirror)).status not in final:
                assert loop.time() < end + 30, f"the step did not run: {after.status}"
                await asyncio.sleep(0.05)
            assert link.leases is not None
            marks = await link.leases.marks(left)
            return down, (after.status, after.statusDetails), [(m.kind, m.module_id) for m in marks]

    down, after, marks = asyncio.run(scenario())
    assert down is OrderStatus.Running, "waiting: not run, not failed"
    assert after[0] is OrderStatus.Complete, after
    assert marks == [("claim", "cell-z"), ("takeover", "cell-b"), ("start", "cell-b")]


def test_owner_of_says_in_the_log_that_the_consoles_were_not_read_when_data_services_is_gone(tmp_path, caplog):
    """The shared Data Services stopped answering: the owner of an order assigned to another
    console is not known (None), and the log says the consoles were not read, and why."""
    async def scenario():
        async with _cell(tmp_path, lease=LEASE, workcell=False) as c:
            await c.server.stop()
            await asyncio.sleep(LEASE / 3 + 0.1)  # the heartbeats read at the claim are too old now
            with caplog.at_level(logging.INFO, logger="core.dataservices.link"):
                owner = await c.link.owner_of(["Order_1"], "cell-a")
            return owner

    owner = asyncio.run(scenario())
    assert owner is None
    said = [r.getMessage() for r in caplog.records if r.name == "core.dataservices.link"]
    assert any(m.startswith("Data Services: consoles not read: cannot connect") for m in said), said
