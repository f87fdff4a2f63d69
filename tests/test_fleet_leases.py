"""Claims as leases on a shared Data Services: exactly one holder under races, takeover of a dead
console's unstarted orders, never of a started one (real HTTP, real processes on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time

import fleetkit
import pytest

from core.dataservices.client import DataServicesClient
from core.dataservices.config import lease_from_ini
from core.dataservices.leases import CLAIM_TOPIC, ClaimMark, Holding, Leases, walk
from core.dataservices.server import EmbeddedDataServices
from core.errors import ConfigError
from core.orders import Order, OrderStatus, Parameter
from core.store import DB_FILENAME, Store


def mark(kind, instance, previous=None, module=None):  # noqa: ANN001, ANN201
    return ClaimMark("o1", kind, module or f"m-{instance}", instance, previous)


def test_the_log_decides_who_holds_an_order():
    assert walk([]) == Holding()
    # the first claim counts; a later claim (a console that lost try-assign's race) does not
    assert walk([mark("claim", "a"), mark("claim", "b")]).holder == "a"
    # of two takeovers of the same holder, the first wins; the second saw a holder that is gone
    h = walk([mark("claim", "a"), mark("takeover", "b", "a"), mark("takeover", "c", "a")])
    assert (h.holder, h.started) == ("b", False)
    # a start by a console that is no longer the holder does not count ...
    h = walk([mark("claim", "a"), mark("takeover", "b", "a"), mark("start", "a")])
    assert (h.holder, h.started) == ("b", False)
    # ... and a takeover after a start does not either: a started order never moves
    h = walk([mark("claim", "a"), mark("start", "a"), mark("takeover", "b", "a")])
    assert (h.holder, h.started) == ("a", True)
    # an order claimed by nobody (its console died between try-assign and its mark) can be taken
    assert walk([mark("takeover", "b", None), mark("claim", "a")]).holder == "b"


def test_racing_consoles_take_an_order_exactly_once(tmp_path):
    """Eight consoles take the same unstarted order at once, and its holder starts it at the
    same moment: whoever the server stored first wins, everyone agrees on the result."""
    async def scenario() -> tuple[list[bool], list[bool], list[Holding]]:
        store = Store(tmp_path / DB_FILENAME).open()
        results = []
        async with EmbeddedDataServices(store, port=0) as server:
            clients = [DataServicesClient(server.url) for _ in range(9)]
            leases = [Leases(c, f"cell-{i}", f"instance-{i}", lease=5, now=time.time)
                      for i, c in enumerate(clients)]
            for n in range(5):
                oid = f"order-{n}"
                assert await leases[0].claim(oid)
                seen = await leases[1].holding(oid)
                outcome = await asyncio.gather(leases[0].start(oid),
                                               *(lease.take(oid, seen) for lease in leases[1:]))
                results.append(outcome)
            holdings = [await leases[5].holding(f"order-{n}") for n in range(5)]
            for c in clients:
                await c.close()
        store.close()
        started = [leases[0].may_start(r[0]) for r in results]
        won = [sum(bool(x) for x in r[1:]) for r in results]
        return started, won, holdings

    started, won, holdings = asyncio.run(scenario())
    for s, w, h in zip(started, won, holdings, strict=True):
        assert s + w == 1, "exactly one of: the holder starts it, or one taker gets it"
        assert h.started == s and (h.holder == "instance-0") == s


def test_lease_in_config_ini_is_checked_with_its_line(tmp_path):
    good = tmp_path / "config.ini"
    good.write_text("[DATA SERVICES]\nurl = http://10.0.0.5:8105\nlease = 45s\n")
    assert lease_from_ini(good) == 45
    bad = tmp_path / "bad.ini"
    bad.write_text("[DATA SERVICES]\n\nlease = soon\n")
    with pytest.raises(ConfigError, match=r"bad.ini:3: DATA SERVICES.lease"):
        lease_from_ini(bad)


async def _orders(client: DataServicesClient, ids: list[str]) -> list[Order]:
    return [await client.get_order(i) for i in ids]


async def _marks(client: DataServicesClient) -> dict[str, list[ClaimMark]]:
    out: dict[str, list[ClaimMark]] = {}
    for e in await client.query_events(topic=CLAIM_TOPIC, limit=100_000):
        m = ClaimMark.from_event(e)
        if m is not None:
            out.setdefault(m.order_id, []).append(m)
    return out


def _until(check, timeout: float, what: str):  # noqa: ANN001, ANN202
    return fleetkit.until(check, timeout, what, every=0.2)


def test_a_killed_consoles_unstarted_orders_are_taken_over_and_its_started_ones_stay(tmp_path):
    """Console A (two readers, real time: a read takes 20 s) claims 6 reads, starts 2 and is
    SIGKILLed. Console B takes the 4 it never started once the lease (3 s) has run out, and runs
    the rest; the 2 that had started stay A's (outcome unknown). A restarted A runs none of the 4."""
    ds, url = fleetkit.data_services(tmp_path)
    procs = [ds]
    try:
        a = fleetkit.console(tmp_path, "cell-a", url, "reader", speed=1, lease=3, backlog=4)
        procs.append(a)

        async def first_part() -> tuple[list[str], set[str], set[str]]:
            async with DataServicesClient(url) as c:
                ids = [await c.create_order(Order(templateName="Fleet Read", inputParameters=[
                    Parameter(name="plate", value=f"P{i}")])) for i in range(10)]

                async def a_busy() -> dict[str, list[ClaimMark]] | None:
                    marks = await _marks(c)
                    held = {o for o, ms in marks.items() if walk(ms).holder}
                    started = {o for o, ms in marks.items() if walk(ms).started}
                    return marks if len(held) == 6 and len(started) == 2 else None

                marks = await _until(a_busy, 30, "A holds 6 orders and has started 2")
                a.kill()
                held = {o for o, ms in marks.items() if walk(ms).holder}
                started = {o for o, ms in marks.items() if walk(ms).started}
                return ids, held, started

        ids, held_by_a, started_by_a = asyncio.run(first_part())
        b = fleetkit.console(tmp_path, "cell-b", url, "both", speed=50, lease=3)
        procs.append(b)

        async def second_part() -> tuple[list[Order], dict[str, list[ClaimMark]]]:
            async with DataServicesClient(url) as c:
                async def rest_done() -> list[Order] | None:
                    orders = await _orders(c, ids)
                    done = [o for o in orders if o.status is OrderStatus.Complete]
                    return orders if len(done) == len(ids) - len(started_by_a) else None

                orders = await _until(rest_done, 60, "B completes every order A had not started")
                return orders, await _marks(c)

        orders, marks = asyncio.run(second_part())
        # A comes back on its data directory: the 4 it lost are not run again
        a2 = fleetkit.console(tmp_path, "cell-a", url, "reader", speed=50, lease=3)
        procs.append(a2)
        time.sleep(3)

        async def third_part() -> tuple[list[Order], dict[str, list[ClaimMark]]]:
            async with DataServicesClient(url) as c:
                return await _orders(c, ids), await _marks(c)

        after, marks_after = asyncio.run(third_part())
    finally:
        for p in reversed(procs):
            p.kill() if p is not ds else p.stop()

    by_id = {o.identifier: o for o in orders}
    for oid in started_by_a:  # outcome unknown: left where it was, for an operator
        assert by_id[oid].status is OrderStatus.Running and by_id[oid].assignedTo == "cell-a"
        assert walk(marks[oid]).module_id == "cell-a"
    taken = held_by_a - started_by_a
    assert len(taken) == 4
    for oid in taken:
        h = walk(marks[oid])
        assert h.module_id == "cell-b" and h.started, f"{oid} taken over and run by B"
        assert [m.kind for m in marks[oid]].count("takeover") >= 1
    for oid in set(ids) - held_by_a:
        assert walk(marks[oid]).module_id == "cell-b"
    # after A's restart nothing changed hands and nothing was answered twice
    for o in after:
        if o.identifier in taken:
            assert o.status is OrderStatus.Complete and walk(marks_after[o.identifier]).module_id == "cell-b"
    starts = {oid: [m for m in ms if m.kind == "start"] for oid, ms in marks_after.items()}
    assert all(walk(marks_after[oid]).started for oid in ids)
    for oid in taken:
        holders = {m.instance for m in starts[oid] if m.instance == walk(marks_after[oid]).holder}
        assert len(holders) == 1
    # A's own copies of the orders it lost end Canceled (runs included), never failed or answered
    a_store = Store(tmp_path / "cell-a" / DB_FILENAME).open()
    try:
        links = dict(a_store.read_sync(lambda c: c.execute(
            "SELECT remote_id, local_id FROM ds_links WHERE adopted = 1").fetchall()))
        for oid in taken & set(links):
            mirror = a_store.get_order(links[oid])
            assert mirror.status is OrderStatus.Canceled and "taken over by cell-b" in (mirror.statusDetails or "")
            owner = a_store.read_sync(lambda c, m=links[oid]: c.execute(
                "SELECT value FROM meta WHERE key = ?", (f"ds_owner:{m}",)).fetchone())
            assert owner == ("cell-b",), "the owner is kept: Detail shows the copy read-only, naming it"
            runs = a_store.read_sync(lambda c, m=links[oid]: c.execute(
                "SELECT status FROM orders WHERE parent_id = ?", (m,)).fetchall())
            assert all(OrderStatus(r[0]) is OrderStatus.Canceled for r in runs), runs
    finally:
        a_store.close()
