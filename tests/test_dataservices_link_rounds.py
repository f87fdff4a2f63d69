"""The Data Services link on a shared Data Services (remote mode, real HTTP to 127.0.0.1, real
SQLite stores), round by round: the schedule of its reclaim rounds, the note saying why an order
waits, what it finds at a start about the orders it held (kept, re-claimed, lost to another
console), how it drops the copies it lost, an order it can neither run nor report, which orders
it takes and how many, and what its status bar says."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from starlette.responses import Response

from core.dataservices import server as server_module
from core.dataservices.backend import ServerChange
from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.fleet import ModuleBeat, recent_beats
from core.dataservices.leases import Leases
from core.dataservices.link import SWEEP_EVERY, DataServicesLink
from core.dataservices.server import EmbeddedDataServices
from core.errors import DataServicesError, OrderNotFoundError, StoreError
from core.orders import ModuleStatus, Order, OrderStatus, Parameter, SchedulingStrategy
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict
from core.workcell import parse_workcell

MIX = {"name": "Mix", "description": "first", "definition": {"steps": [{"id": "mix", "kind": "noop"}]}}
STIR = {"name": "Stir", "definition": {"steps": [{"id": "stir", "kind": "noop"}]}}
LOG = "core.dataservices.link"


async def _console(root: Path, name: str, url: str, *, lease: float = 30.0) -> tuple[Runtime, DataServicesLink]:
    """A console without instruments (Mix v1 and v2, Stir v1) linked to ``url`` as ``name``; its
    loops are not started: each test runs the link's rounds itself."""
    rt = Runtime.build(root / name, store=Store(root / name / DB_FILENAME).open(), workcell=None, metrics=False)
    await rt.start(templates_dir=None)
    if not rt.engine.templates.versions("Mix"):
        await rt.engine.publish(template_from_dict(MIX))
        await rt.engine.publish(template_from_dict({**MIX, "description": "second"}))
        await rt.engine.publish(template_from_dict(STIR))
    return rt, _link(rt, name, url, lease=lease)


def _link(rt: Runtime, name: str, url: str, *, lease: float = 30.0) -> DataServicesLink:
    return DataServicesLink(rt, DataServicesSettings(url, "test"), module_id=name, lease=lease, timeout=5.0,
                            poll_interval=0.05)


async def _close(rt: Runtime, link: DataServicesLink) -> None:
    await link.stop()
    await rt.close()


@contextlib.asynccontextmanager
async def _site(root: Path) -> AsyncIterator[tuple[EmbeddedDataServices, DataServicesClient]]:
    """A Data Services on 127.0.0.1 over a store of its own, and a client of it (a LIMS)."""
    shared = Store(root / "shared" / DB_FILENAME).open()
    try:
        async with EmbeddedDataServices(shared, port=0) as server, DataServicesClient(server.url) as site:
            yield server, site
    finally:
        shared.close()


@contextlib.asynccontextmanager
async def _cell(root: Path, url: str, name: str = "cell") -> AsyncIterator[tuple[Runtime, DataServicesLink]]:
    """:func:`_console` for the length of a block, closed after it."""
    rt, link = await _console(root, name, url)
    try:
        yield rt, link
    finally:
        await _close(rt, link)


async def _adopt_later(link: DataServicesLink, site: DataServicesClient) -> str:
    """A LIMS order for Mix an hour from now, adopted by ``link`` (its run waits): its id."""
    await link.claim_module_id()
    later = Order(templateName="Mix", scheduledStartTime=datetime.now(UTC) + timedelta(hours=1),
                  schedulingStrategy=SchedulingStrategy.FirstAvailableSlot)
    oid = await site.create_order(later)
    assert await link.poll_once() == [oid]
    return oid


async def _until(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.02)


def _adopted(rt: Runtime) -> dict[str, str]:
    """Data Services order id -> the console's local copy of it."""
    return dict(rt.store.read_sync(lambda c: c.execute(
        "SELECT remote_id, local_id FROM ds_links WHERE adopted = 1").fetchall()))


def _refusing(monkeypatch, method: str, path: str, refuse: set[str]) -> None:  # noqa: ANN001
    """Data Services servers made from now on answer 409 to ``method path`` for the orders in
    ``refuse`` (the set can be filled later), and as usual for the others."""
    class RefusingDataServices(server_module.DataServicesApp):
        def __init__(self, *args, **kwargs):  # noqa: ANN002, ANN003
            super().__init__(*args, **kwargs)
            route = next(r for r in self.routes if (r.method, r.path, r.version) == (method, path, "v3.0"))

            async def refusing(c):  # noqa: ANN001, ANN202
                if c.params["id"] in refuse:
                    return Response('{"title": "Conflict", "status": 409, "detail": "the order is locked"}', 409,
                                    media_type="application/problem+json")
                return await route.handler(c)

            self.routes = [replace(r, handler=refusing) if r is route else r for r in self.routes]

    monkeypatch.setattr(server_module, "DataServicesApp", RefusingDataServices)


def _meta(rt: Runtime, prefix: str) -> dict[str, str]:
    return dict(rt.store.read_sync(lambda c: c.execute(
        "SELECT key, value FROM meta WHERE key LIKE ?", (prefix + "%",)).fetchall()))


def test_the_first_reclaim_round_is_thorough_then_one_in_sweep_every_and_failed_rounds_count(tmp_path, caplog):
    """A console that starts reads every order at once (a console gone long ago may have left
    some), then only every SWEEP_EVERY-th round; a round that fails (Data Services unreachable,
    or anything else) is shown or logged, counts as a round, and the rounds go on."""
    caplog.set_level(logging.WARNING, logger=LOG)

    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server:
            rt, link = await _console(tmp_path, "cell", server.url, lease=0.15)  # a round every 0.05 s
            rounds: list[bool] = []
            shown: list[tuple[bool, str | None]] = []
            link.on_state = lambda state: shown.append((state.connected, state.error))
            real = link.reclaim_once
            ends: list[float] = []
            gaps: list[float] = []  # from the end of a round to the start of the next

            async def round_(*, thorough: bool = True) -> list[str]:
                if ends:
                    gaps.append(time.monotonic() - ends[-1])
                rounds.append(thorough)
                try:
                    if len(rounds) == 3:  # the third round finds the Data Services unreachable
                        raise DataServicesError(server.url, "connection refused")
                    if len(rounds) == 4:  # the fourth fails on something else
                        raise RuntimeError("an answer nobody expected")
                    return await real(thorough=thorough)
                finally:
                    ends.append(time.monotonic())

            link.reclaim_once = round_  # type: ignore[method-assign]
            try:
                await link.claim_module_id()
                link.tasks.spawn(link._reclaim_loop(), "reclaim")  # noqa: SLF001 - the loop start() runs
                await _until(lambda: len(rounds) > 2 * SWEEP_EVERY, 30, "21 reclaim rounds")
                state = (link.state.connected, link.state.error)
            finally:
                await _close(rt, link)
        shared.close()
        return rounds, state, shown, sorted(gaps)

    rounds, state, shown, gaps = asyncio.run(scenario())
    # a round every third of the lease (0.05 s): never sooner, and not three leases apart either
    assert gaps[0] >= 0.045 and gaps[len(gaps) // 2] < 0.15, (gaps[0], gaps[len(gaps) // 2])
    assert rounds[:2 * SWEEP_EVERY + 1] == [n % SWEEP_EVERY == 0 for n in range(2 * SWEEP_EVERY + 1)], \
        "thorough: the first round, then every SWEEP_EVERY-th, the failed rounds counted"
    assert state == (False, "connection refused") and shown == [(False, "connection refused")]
    failed = [r for r in caplog.records if r.name == LOG and r.levelno >= logging.WARNING]
    assert [(r.levelno, r.getMessage()) for r in failed] == [(logging.ERROR, "Data Services: reclaiming orders failed")]
    assert failed[0].exc_info is not None and str(failed[0].exc_info[1]) == "an answer nobody expected"


def test_why_an_order_waits_is_written_once_for_each_new_text(tmp_path):
    """An order for a version this console lacks gets a note saying why it waits and which
    versions each console has; the same note is not written again (not even over what someone
    else wrote there since), a new one (another console appeared) is."""
    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        changes: list[ServerChange] = []
        server = EmbeddedDataServices(shared, port=0, on_change=changes.append)
        url = await server.start()
        rt, link = await _console(tmp_path, "cell", url)
        site = DataServicesClient(url)
        seen = []
        try:
            await link.claim_module_id()
            oid = await site.create_order(Order(templateName="Mix", templateVersion="7"))

            async def poll() -> tuple[str | None, int]:
                assert await link.poll_once() == []
                details = (await site.get_order(oid)).statusDetails  # after this, every change was announced
                writes = [c for c in changes if c.kind == "order_updated" and c.subject == oid
                          and "statusDetails" in c.fields]
                return details, len(writes)

            seen.append(await poll())  # no console's heartbeat read yet
            seen.append(await poll())
            await site.update_order(oid, {"statusDetails": "on hold: plate not delivered"})  # the LIMS
            seen.append(await poll())
            await site.publish_event(ModuleBeat(module_id="cell-z", instance="inst-z", host="pc-z", pid=7,
                                                at=time.time(), lease=30,
                                                templates=("mix@7", "Mix@8", "Mix@Lab@3", "Stir@7")).event())
            await link.fleet()  # the heartbeats: its own and cell-z's
            seen.append(await poll())
            seen.append(await poll())
            order = await site.get_order(oid)
        finally:
            await site.close()
            await _close(rt, link)
            await server.stop()
            shared.close()
        return seen, order

    seen, order = asyncio.run(scenario())
    first = "waiting: asks for Mix v7; no workcell has it"
    second = "waiting: asks for Mix v7; cell has v1, v2; cell-z has v7, v8"
    assert seen == [(first, 1), (first, 1), ("on hold: plate not delivered", 2), (second, 3), (second, 3)]
    assert order.status is OrderStatus.Created and not order.assignedTo


def test_why_an_order_waits_names_only_consoles_heard_from_in_the_last_two_leases(tmp_path):
    """A console whose last heartbeat is two and a half leases old is gone: the note on an order
    no console here can run lists the versions of the consoles still heard from, not its."""
    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        server = EmbeddedDataServices(shared, port=0)
        url = await server.start()
        rt, link = await _console(tmp_path, "cell", url)
        site = DataServicesClient(url)
        try:
            await link.claim_module_id()
            oid = await site.create_order(Order(templateName="Mix", templateVersion="7"))
            now = time.time()
            for module, at, templates in (("cell-y", now - 2.5 * link.lease, ("Mix@7",)),
                                          ("cell-z", now, ("Mix@8",))):
                await site.publish_event(ModuleBeat(module_id=module, instance=f"inst-{module}", host="pc", pid=7,
                                                    at=at, lease=link.lease, templates=templates).event())
            heard = [m.beat.module_id for m in await link.fleet()]
            assert await link.poll_once() == []
            return heard, await site.get_order(oid)
        finally:
            await site.close()
            await _close(rt, link)
            await server.stop()
            shared.close()

    heard, order = asyncio.run(scenario())
    assert heard == ["cell", "cell-z"]
    assert order.statusDetails == "waiting: asks for Mix v7; cell has v1, v2; cell-z has v8"
    assert order.status is OrderStatus.Created and not order.assignedTo


def test_a_note_the_data_services_refuses_is_logged_naming_the_order(tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger=LOG)
    refuse: set[str] = set()
    _refusing(monkeypatch, "PUT", "orders/{id}", refuse)

    async def scenario():  # noqa: ANN202
        async with _site(tmp_path) as (server, site), _cell(tmp_path, server.url) as (rt, link):
            await link.claim_module_id()
            oid = await site.create_order(Order(templateName="Mix", templateVersion="7"))
            refuse.add(oid)
            assert await link.poll_once() == []
            return oid, await site.get_order(oid)

    oid, order = asyncio.run(scenario())
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "why it waits" in r.getMessage()]
    assert said == [(logging.INFO, f"order {oid}: why it waits not written: HTTP 409 Conflict (answer: the order is locked)")]
    assert order.statusDetails is None and order.status is OrderStatus.Created


def test_at_a_start_the_orders_it_held_are_kept_re_claimed_or_lost_by_their_claim_marks(tmp_path):
    """Restarted, a console reads the claim marks of each order it had adopted: one it holds and
    had started stays held and started, one it holds unstarted stays held, one nobody holds (it
    stopped between try-assign and its claim mark) is claimed again, one another console took
    over is lost to that console. Its heartbeat says which it holds."""
    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server, DataServicesClient(server.url) as site:
            rt, link = await _console(tmp_path, "cell", server.url)
            other = Leases(site, "cell-x", "inst-x", lease=30, now=time.time)
            try:
                await link.claim_module_id()
                assert link.leases is not None
                ids: dict[str, str] = {}
                for name in ("free1", "started", "held", "lost", "free2"):
                    oid = ids[name] = await site.create_order(Order(templateName="Sealer.Seal", notes=name))
                    assert await site.try_assign(oid, "cell")
                    # the local copy, linked to its order, as the pickup makes it
                    mirror = await rt.ledger.create_order((await site.get_order(oid)).model_copy(update={
                        "identifier": None, "assignedTo": "cell", "status": OrderStatus.Created}), who="test")
                    await link._link(mirror.identifier or "", oid, adopted=True)  # noqa: SLF001
                    await rt.ledger.set_status(mirror.identifier or "", OrderStatus.Running, who="cell")
                    if not name.startswith("free"):
                        assert await link.leases.claim(oid)
                assert link.leases.may_start(await link.leases.start(ids["started"]))
                assert await other.take(ids["lost"], await other.holding(ids["lost"]))
                instance = link.leases.instance
            finally:
                await link.stop()
            mirrors = _adopted(rt)
            again = _link(rt, "cell", server.url)  # the console restarted on the same store
            try:
                await again.claim_module_id()
                assert again.identity is not None
                beat = again.identity.beat()
                unstarted = again.unstarted()
                owners = {name: again.lost_owner([mirrors[oid]]) for name, oid in ids.items()}
                # the console that took it posts no heartbeat here: named by its module id
                shown = [await again.owner_of([mirrors[ids[n]]], None) for n in ("lost", "held")]
                holders = {name: (await other.holding(oid)).holder for name, oid in ids.items()}
            finally:
                await _close(rt, again)
        shared.close()
        return ids, instance, beat, unstarted, owners, holders, shown

    ids, instance, beat, unstarted, owners, holders, shown = asyncio.run(scenario())
    assert shown == ["cell-x", None]
    assert sorted(beat.held) == sorted(ids[n] for n in ("free1", "started", "held", "free2"))
    assert beat.running_orders == (ids["started"],)
    assert unstarted == 3
    assert owners == {"free1": None, "started": None, "held": None, "lost": "cell-x", "free2": None}
    assert holders == {"free1": instance, "started": instance, "held": instance, "lost": "inst-x",
                       "free2": instance}, "the orders nobody held are claimed again"


def test_at_a_start_the_copies_another_console_took_over_are_dropped_and_their_runs_forgotten(tmp_path, caplog):
    """Restarted, a console drops its copies of the orders another console took over meanwhile:
    a run still waiting is cancelled, a run that had ended (not answered before the stop) is not
    answered now, both copies end Canceled saying who took them, and neither run is watched any
    more; the order it still holds keeps its run, watched again even if the stop came before
    the watch was noted. A lost order whose copy, or run, is no longer in the store is logged,
    naming it."""
    caplog.set_level(logging.WARNING, logger=LOG)

    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server, DataServicesClient(server.url) as site:
            rt, link = await _console(tmp_path, "cell", server.url)
            try:
                await link.claim_module_id()
                later = Order(templateName="Mix", scheduledStartTime=datetime.now(UTC) + timedelta(hours=1),
                              schedulingStrategy=SchedulingStrategy.FirstAvailableSlot)
                waiting = await site.create_order(later)  # its run waits for its slot
                ended = await site.create_order(Order(templateName="Mix"))  # its run ends at once
                kept = await site.create_order(later)  # still this console's after the restart
                assert sorted(await link.poll_once()) == sorted([waiting, ended, kept])
                mirrors = _adopted(rt)
                runs = rt.store.runs_for_orders(list(mirrors.values()))
                await _until(lambda: rt.store.get_order(runs[mirrors[ended]]).status is OrderStatus.Complete,
                             20, "the run of the second order ends")
            finally:
                await link.stop()  # stopped before it answered the order of the run that ended
            other = Leases(site, "cell-x", "inst-x", lease=30, now=time.time)
            for oid in (waiting, ended):
                assert await other.take(oid, await other.holding(oid))
            await rt.store.write(lambda c: c.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                ("ds_lost:Order_09999", "taken over by cell-x on Data Services"),  # a copy no longer stored
                ("ds_watch:Order_09998", mirrors[waiting])]))  # a run of it no longer stored
            watched_before = _meta(rt, "ds_watch:")
            # stopped between creating the kept order's run and noting that the run answers it
            await rt.store.write(lambda c: c.execute("DELETE FROM meta WHERE key = ?",
                                                     (f"ds_watch:{runs[mirrors[kept]]}",)))
            again = _link(rt, "cell", server.url)
            try:
                await again.start()
                await asyncio.sleep(0.5)  # whatever the start spawned has run
                names = {t.get_name() for t in asyncio.all_tasks()}
                copies = {oid: rt.store.get_order(mirrors[oid]) for oid in (waiting, ended, kept)}
                run_states = {oid: rt.store.get_order(runs[mirrors[oid]]) for oid in (waiting, ended, kept)}
                cancelled = rt.store.transitions(runs[mirrors[waiting]])[-1]
                last = {oid: rt.store.transitions(mirrors[oid])[-1] for oid in (waiting, ended)}
                watched = _meta(rt, "ds_watch:")
            finally:
                await _close(rt, again)
        shared.close()
        return ((waiting, ended, kept), mirrors, runs, copies, run_states, cancelled, last, watched_before,
                watched, names)

    ((waiting, ended, kept), mirrors, runs, copies, run_states, cancelled, last, watched_before, watched,
     names) = asyncio.run(scenario())
    reason = "taken over by cell-x on Data Services"
    assert watched_before == {"ds_watch:Order_09998": mirrors[waiting],
                              **{f"ds_watch:{runs[mirrors[oid]]}": mirrors[oid] for oid in (waiting, ended, kept)}}
    assert watched == {f"ds_watch:{runs[mirrors[kept]]}": mirrors[kept]}, "the dropped runs are not watched any more"
    assert run_states[waiting].status is OrderStatus.Canceled and reason in (run_states[waiting].statusDetails or "")
    assert (cancelled.who, cancelled.to_status) == ("cell", OrderStatus.Canceled)
    assert run_states[ended].status is OrderStatus.Complete
    assert run_states[kept].status is not OrderStatus.Canceled and copies[kept].status is OrderStatus.Running
    for oid in (waiting, ended):
        assert (copies[oid].status, copies[oid].statusDetails) == (OrderStatus.Canceled, reason), oid
        assert (last[oid].to_status, last[oid].who, last[oid].why) == (OrderStatus.Canceled, "cell", reason), oid
    # its loops, named as failures of them are logged
    assert {"data-services:heartbeat", "data-services:reclaim", "data-services:inbound",
            "data-services:outbound"} <= names
    gone = [r for r in caplog.records if "Order_0999" in r.getMessage()]
    assert sorted((r.levelno, r.getMessage()) for r in gone) == [
        (logging.WARNING, f"order Order_09999 not closed: {OrderNotFoundError('Order_09999')}"),
        (logging.WARNING, f"run Order_09998 of order {mirrors[waiting]} not cancelled: "
                          f"{OrderNotFoundError('Order_09998')}")]


def test_the_local_copy_of_an_adopted_order_is_assigned_to_this_console(tmp_path):
    """The copy a console keeps of an order it claimed shows this console's module id as the
    one it is assigned to, as the Data Services order does (the order as listed was assigned to
    nobody)."""
    async def scenario():  # noqa: ANN202
        async with _site(tmp_path) as (server, site), _cell(tmp_path, server.url) as (rt, link):
            oid = await _adopt_later(link, site)
            copy = rt.store.get_order(_adopted(rt)[oid])
            row = rt.store.order_rows("id = ?", (copy.identifier,))[0]
            remote = await site.get_order(oid)
        return copy, row, remote

    copy, row, remote = asyncio.run(scenario())
    assert (copy.assignedTo, copy.status) == ("cell", OrderStatus.Running)
    assert row[7] == "cell", "the orders table shows it too"
    assert remote.assignedTo == "cell"


def test_a_dropped_copy_with_no_reason_stored_says_another_console_took_it(tmp_path):
    """A copy dropped with no note of which console took its order over (the note is written
    before each drop, so only a store that lost it gets here) still ends Canceled saying why:
    its waiting run is cancelled and the copy closed, both "taken over by another console"."""
    async def scenario():  # noqa: ANN202
        async with _site(tmp_path) as (server, site), _cell(tmp_path, server.url) as (rt, link):
            oid = await _adopt_later(link, site)
            local = _adopted(rt)[oid]
            run_id = rt.store.runs_for_orders([local])[local]
            assert _meta(rt, "ds_lost:") == {}
            await link._drop(local)  # noqa: SLF001 - what a start does for each copy it lost
            await _until(lambda: rt.store.get_order(run_id).status is OrderStatus.Canceled, 20,
                         "the run is cancelled")
            copy, run = rt.store.get_order(local), rt.store.get_order(run_id)
            last = {i: rt.store.transitions(i)[-1] for i in (local, run_id)}
        return copy, run, last

    copy, run, last = asyncio.run(scenario())
    reason = "taken over by another console"
    assert (copy.status, copy.statusDetails) == (OrderStatus.Canceled, reason)
    assert (last[copy.identifier].to_status, last[copy.identifier].who, last[copy.identifier].why) == (
        OrderStatus.Canceled, "cell", reason)
    assert (run.status, run.statusDetails, last[run.identifier].why) == (
        OrderStatus.Canceled, f"Canceled by cell: {reason}", f"Canceled by cell: {reason}")


ONE_SEALER = """
name: one sealer
heartbeat_interval: 10m
stale_timeout: 2h
instruments:
  - {id: Sealer1, kind: Sealer, driver: simulated, options: {connect_time: 0s},
     capabilities: {Sealer.Seal: {duration: 1500ms, jitter: 0s}}}
"""
SEAL = {"name": "Seal plate", "definition": {"steps": [{"id": "seal", "kind": "Sealer.Seal"}]}}


def test_a_step_of_an_order_taken_over_before_it_started_never_starts_and_its_run_is_cancelled(tmp_path, caplog):
    """Two orders claimed, the second waiting for the only sealer; another console takes the
    second over meanwhile. When the sealer is free, the second order's step checks its start
    on the Data Services, finds the order is not this console's any more and does not start:
    its run ends Canceled (not failed), its copy Canceled naming the console that took it."""
    caplog.set_level(logging.WARNING, logger=LOG)

    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server, DataServicesClient(server.url) as site:
            d = tmp_path / "cell"
            rt = Runtime.build(d, store=Store(d / DB_FILENAME).open(), workcell=parse_workcell(ONE_SEALER),
                               metrics=False)
            await rt.start(templates_dir=None)
            await rt.engine.publish(template_from_dict(SEAL))
            link = _link(rt, "cell", server.url)
            try:
                await link.claim_module_id()
                first = await site.create_order(Order(templateName="Seal plate"))
                second = await site.create_order(Order(templateName="Seal plate"))
                assert await link.poll_once() == [first, second]
                other = Leases(site, "cell-x", "inst-x", lease=30, now=time.time)
                assert await other.take(second, await other.holding(second))  # the sealer is still busy
                mirrors = _adopted(rt)
                runs = rt.store.runs_for_orders(list(mirrors.values()))
                for order_id, status in ((runs[mirrors[second]], OrderStatus.Canceled),
                                         (mirrors[second], OrderStatus.Canceled),
                                         (runs[mirrors[first]], OrderStatus.Complete)):
                    await _until(lambda order_id=order_id, status=status: rt.store.get_order(order_id).status
                                 is status, 20, f"{order_id} ends {status.name}")
                step = rt.engine.get_instance(runs[mirrors[second]])["steps"][0]["order_id"]
                return ((first, second), mirrors, {oid: rt.store.get_order(mirrors[oid]) for oid in (first, second)},
                        [t.to_status for t in rt.store.transitions(step)], rt.store.get_order(step))
            finally:
                await _close(rt, link)
        shared.close()

    (first, second), mirrors, copies, step_history, step = asyncio.run(scenario())
    reason = "taken over by cell-x on Data Services"
    assert (copies[second].status, copies[second].statusDetails) == (OrderStatus.Canceled, reason)
    assert copies[first].status is not OrderStatus.Canceled
    assert OrderStatus.Running not in step_history and OrderStatus.Error not in step_history, step_history
    assert step.status is OrderStatus.Canceled and step.assignedTo != "Sealer1"
    lost = [r.getMessage() for r in caplog.records if "is not run here" in r.getMessage()]
    assert lost == [f"Data Services: order {mirrors[second]} ({second}) is not run here: {reason}"]


def test_an_order_it_can_neither_run_nor_report_is_skipped_and_the_others_are_adopted(tmp_path, caplog, monkeypatch):
    """The console cannot run two orders (their template cannot be read from its store): the
    first one's report is refused by the Data Services (HTTP 409), so that order is skipped,
    naming both reasons; the second is reported (Error, saying why); nothing is adopted for
    either, and the next order of the same poll is adopted."""
    caplog.set_level(logging.WARNING, logger=LOG)
    refuse: set[str] = set()
    _refusing(monkeypatch, "PUT", "orders/{id}/status", refuse)

    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server, DataServicesClient(server.url) as site:
            rt, link = await _console(tmp_path, "cell", server.url)
            registry = rt.engine.templates
            read = registry.get

            def unreadable(name: str, version: int | None = None):  # noqa: ANN202
                if name == "Mix":
                    raise StoreError(rt.store.path, "cannot be read: disk I/O error")
                return read(name, version)

            monkeypatch.setattr(registry, "get", unreadable)
            try:
                await link.claim_module_id()
                bad = await site.create_order(Order(templateName="Mix"))
                refuse.add(bad)
                reported = await site.create_order(Order(templateName="Mix"))
                good = await site.create_order(Order(templateName="Stir"))
                adopted = await link.poll_once()
                state = (link.state.skipped, link.state.pickup_error)
                orders = {oid: await site.get_order(oid) for oid in (bad, reported)}
                return (bad, reported, good), adopted, state, _adopted(rt), orders, str(rt.store.path)
            finally:
                await _close(rt, link)
        shared.close()

    (bad, reported, good), adopted, state, links, orders, path = asyncio.run(scenario())
    why = f"{path}: cannot be read: disk I/O error"
    assert adopted == [good] and list(links) == [good], "nothing adopted for them; the next order is"
    assert (orders[bad].assignedTo, orders[bad].status) == ("cell", OrderStatus.Created)
    assert (orders[reported].status, orders[reported].statusDetails) == (
        OrderStatus.Error, f"labconsole could not run it: {why}")
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "is not picked up" in r.getMessage()]
    reason = f"could not run it ({why}) nor report that: HTTP 409 Conflict (answer: the order is locked)"
    assert said == [(logging.WARNING, f"Data Services: order {bad} is not picked up: {reason}")]
    assert state == (1, f"{bad}: {reason}")


def test_an_order_naming_a_template_in_another_case_runs_that_template(tmp_path):
    """A LIMS spells the template its own way ("mix", "MIX"): template names match in any case,
    so the console claims these orders and runs its Mix (the version asked for, else the latest)
    instead of ending them in Error as orders for a template it does not have."""
    async def scenario():  # noqa: ANN202
        async with _site(tmp_path) as (server, site), _cell(tmp_path, server.url) as (rt, link):
            await link.claim_module_id()
            latest = await site.create_order(Order(templateName="mix"))
            first = await site.create_order(Order(templateName="MIX", templateVersion="1"))
            adopted = await link.poll_once()
            mirrors = _adopted(rt)
            runs = rt.store.runs_for_orders([mirrors[o] for o in (latest, first) if o in mirrors])
            for run in runs.values():
                await _until(lambda run=run: rt.store.get_order(run).status is OrderStatus.Complete, 20,
                             f"run {run} ends")
            made = {oid: rt.store.get_order(runs[mirrors[oid]]) for oid in (latest, first)
                    if mirrors.get(oid) in runs}
            remote = {oid: await site.get_order(oid) for oid in (latest, first)}
        return (latest, first), adopted, made, remote

    (latest, first), adopted, made, remote = asyncio.run(scenario())
    assert adopted == [latest, first], [o.statusDetails for o in remote.values()]
    assert {oid: (r.templateName, r.templateVersion) for oid, r in made.items()} == {
        latest: ("Mix", "2"), first: ("Mix", "1")}
    assert all(o.status is not OrderStatus.Error for o in remote.values()), [o.statusDetails for o in remote.values()]


CELL = """
name: cell
heartbeat_interval: 10m
stale_timeout: 2h
instruments:
  - {id: Sealer1, kind: Sealer, driver: simulated, options: {connect_time: 0s},
     capabilities: {Sealer.Seal: {duration: 50ms, jitter: 0s}}}
  - {id: Reader1, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 50ms, jitter: 0s}}}
"""


def test_which_orders_a_console_on_a_shared_data_services_takes(tmp_path):
    """A workflow order needs a published template (any case) whose steps this workcell can do,
    in a version it has; an order restricted to modules must name this console, one of its
    instruments or the workflow engine; a capability order needs the capability; the console's
    own copies are not taken. A version it lacks is a reason worth telling."""
    async def scenario():  # noqa: ANN202
        d = tmp_path / "cell"
        rt = Runtime.build(d, store=Store(d / DB_FILENAME).open(), workcell=parse_workcell(CELL), metrics=False)
        await rt.start(templates_dir=None)
        try:
            await rt.engine.publish(template_from_dict(SEAL))
            await rt.engine.publish(template_from_dict({**SEAL, "description": "second"}))
            await rt.engine.publish(template_from_dict({"name": "Cover plate", "definition": {"steps": [
                {"id": "lid", "kind": "Lidder.Lid"}]}}))  # no lidder in this workcell
            # a template with a placeholder-like name: an order naming no template is not for it
            await rt.engine.publish(template_from_dict({**SEAL, "name": "XXXX"}))
            link = _link(rt, "cell", "http://127.0.0.1:9")  # never reached: routing reads nothing
            cases = {
                "named": Order(templateName="seal PLATE"),
                "to this console": Order(templateName="Seal plate", restrictToModuleIds="cell-q, cell"),
                "to its instrument": Order(templateName="Seal plate", restrictToModuleIds="Sealer1"),
                "to the engine": Order(templateName="Seal plate", restrictToModuleIds="Workflow Execution Engine"),
                "to another": Order(templateName="Seal plate", restrictToModuleIds="cell-q"),
                "version": Order(templateName="Seal plate", templateVersion="v1"),
                "missing version": Order(templateName="Seal plate", templateVersion="9"),
                "bad version": Order(templateName="Seal plate", templateVersion="seven"),
                "version 0": Order(templateName="Seal plate", templateVersion="v0"),
                "cannot do": Order(templateName="Cover plate"),
                "capability": Order(templateName="sealer.seal"),
                "capability here": Order(templateName="Sealer.Seal", restrictToModuleIds="Reader1,Sealer1"),
                "capability there": Order(templateName="Sealer.Seal", restrictToModuleIds="cell-q"),
                "unknown": Order(templateName="Thaw"),
                "its own copy": Order(templateName="Seal plate", createdBy="cell Order_00003"),
                "no template": Order(), "empty template": Order(templateName=""),
            }
            return {k: link.route(o) for k, o in cases.items()}, await link.fleet()
        finally:
            await rt.close()

    routes, fleet = asyncio.run(scenario())
    assert routes == {
        "named": ("workflow", None), "to this console": ("workflow", None), "to its instrument": ("workflow", None),
        "to the engine": ("workflow", None), "to another": (None, None), "version": ("workflow", None),
        "missing version": (None, "asks for Seal plate v9"),
        "bad version": (None, "asks for Seal plate version 'seven', not a number"),
        "version 0": (None, "asks for Seal plate v0"),
        "cannot do": (None, None), "capability": ("module", None), "capability here": ("module", None),
        "capability there": (None, None), "unknown": (None, None), "its own copy": (None, None),
        "no template": (None, None), "empty template": (None, None)}
    assert fleet == [], "not connected yet: no console to show"


def test_a_heartbeat_describes_the_console_to_the_others(tmp_path):
    """What another console (or the Fleet panel) reads of this one on the Data Services: the
    templates it runs, the capabilities of its workcell (sorted), its queue, its instruments
    and its workcell's name."""
    async def scenario():  # noqa: ANN202
        d = tmp_path / "cell"
        rt = Runtime.build(d, store=Store(d / DB_FILENAME).open(), workcell=parse_workcell(CELL), metrics=False)
        await rt.start(templates_dir=None)
        try:
            await rt.engine.publish(template_from_dict(SEAL))
            await rt.engine.publish(template_from_dict({**SEAL, "description": "second"}))
            await _until(lambda: all(v.status is ModuleStatus.Ready for v in rt.dispatcher.view()), 20,
                         "the instruments connected")
            async with _site(tmp_path) as (server, site):
                link = _link(rt, "cell", server.url)
                try:
                    await link.claim_module_id()  # posts its first heartbeat
                    beats = await recent_beats(site, time.time() - 60, module_id="cell")
                finally:
                    await link.stop()
        finally:
            await rt.close()
        return beats

    (beat,) = asyncio.run(scenario())
    assert (beat.templates, beat.capabilities) == (("Seal plate@1", "Seal plate@2"),
                                                   ("PlateReader.ReadPlate", "Sealer.Seal"))
    assert (beat.queue_depth, beat.running, beat.instruments) == (0, 0, {"Reader1": "Ready", "Sealer1": "Ready"})
    assert (beat.held, beat.running_orders, beat.workcell, beat.hosts_data_services) == ((), (), "cell", False)


def test_a_console_claims_no_more_than_its_backlog(tmp_path):
    """With a backlog of two, a console claims two of three waiting orders (their runs wait for
    their slot, so they stay unstarted); the third stays on the Data Services for others."""
    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server, DataServicesClient(server.url) as site:
            rt, _ = await _console(tmp_path, "cell", server.url)
            link = DataServicesLink(rt, DataServicesSettings(server.url, "test"), module_id="cell", backlog=2)
            try:
                await link.claim_module_id()
                later = Order(templateName="Mix", scheduledStartTime=datetime.now(UTC) + timedelta(hours=1),
                              schedulingStrategy=SchedulingStrategy.FirstAvailableSlot)
                ids = [await site.create_order(later) for _ in range(3)]
                adopted = await link.poll_once()
                again = await link.poll_once()
                left = await site.get_order(ids[2])
                return ids, adopted, again, left, link.unstarted()
            finally:
                await _close(rt, link)
        shared.close()

    ids, adopted, again, left, unstarted = asyncio.run(scenario())
    assert adopted == ids[:2] and again == [] and unstarted == 2
    assert not left.assignedTo


def test_a_delivery_the_data_services_does_not_answer_marks_the_link_not_connected(tmp_path):
    """The outbound loop sends the console's runs; once the Data Services stops answering, the
    link is marked not connected (False, with the cause), as its listeners and its status bar
    text show, and the run waits in the outbox."""
    async def scenario():  # noqa: ANN202
        async with _site(tmp_path) as (server, _site_client), _cell(tmp_path, server.url) as (rt, link):
            shown: list[tuple[bool | None, str | None]] = []
            link.on_state = lambda state: shown.append((state.connected, state.error))
            await link.claim_module_id()
            link.tasks.spawn(link._outbound_loop(), "outbound")  # noqa: SLF001 - the loop start() runs
            await rt.start_run("Mix", who="op", allow_duplicate=True)
            await _until(lambda: link.state.connected and link.state.outbox == 0, 20, "the run delivered")
            url = server.url
            await server.stop()
            await rt.start_run("Stir", who="op", allow_duplicate=True)
            await _until(lambda: link.state.error is not None and link.state.outbox > 0, 20,
                         "the delivery failed, the run in the outbox")
            state = link.state
            return list(shown), (state.connected, state.error, state.outbox), link.describe(), url

    shown, (connected, cause, outbox), text, url = asyncio.run(scenario())
    assert connected is False and cause.startswith("cannot connect: "), (connected, cause)
    assert shown == [(True, None), (False, cause)]
    assert text == f"Data Services {url}: unreachable ({cause}) · outbox {outbox}"


def test_a_successful_read_of_the_orders_marks_the_link_connected(tmp_path):
    """The inbound loop alone (no delivery yet): once it has read the orders and picked up the
    one meant for this console, its listeners and its status bar text say connected."""
    async def scenario():  # noqa: ANN202
        async with _site(tmp_path) as (server, site), _cell(tmp_path, server.url) as (rt, link):
            shown: list[tuple[bool | None, str | None]] = []
            link.on_state = lambda state: shown.append((state.connected, state.error))
            await link.claim_module_id()
            oid = await site.create_order(Order(templateName="Mix"))
            link.tasks.spawn(link._inbound_loop(), "inbound")  # noqa: SLF001 - the loop start() runs
            await _until(lambda: oid in _adopted(rt), 20, "the order picked up")
            await _until(lambda: shown, 5, "the link state announced")
            return list(shown), link.describe(), server.url

    shown, text, url = asyncio.run(scenario())
    assert shown[0] == (True, None)
    assert text == f"Data Services {url}: connected · outbox 0"


def test_the_delivered_count_adds_up_every_delivery(tmp_path):
    async def scenario():  # noqa: ANN202
        async with _site(tmp_path) as (server, _site_client), _cell(tmp_path, server.url) as (rt, link):
            await link.claim_module_id()
            counts = []
            for name in ("Mix", "Stir"):
                run_id = await rt.start_run(name, who="op", allow_duplicate=True)
                await _until(lambda run_id=run_id: rt.engine.run_status(run_id).value == "completed", 20,
                             f"the {name} run done")
                counts.append(await link.deliver_pending())
            return counts, link.state.delivered

    counts, delivered = asyncio.run(scenario())
    assert all(n > 0 for n in counts), counts
    assert delivered == sum(counts)


def test_the_fleet_is_not_read_again_within_max_age(tmp_path):
    """A heartbeat posted after the fleet was read shows only once the reading is older than
    ``max_age`` (or at once with the default ``max_age`` of 0)."""
    async def scenario():  # noqa: ANN202
        async with _site(tmp_path) as (server, site), _cell(tmp_path, server.url) as (rt, link):
            await link.claim_module_id()
            first = [m.beat.module_id for m in await link.fleet()]
            await site.publish_event(ModuleBeat(module_id="cell-z", instance="inst-z", host="pc", pid=7,
                                                at=time.time(), lease=link.lease).event())
            cached = [m.beat.module_id for m in await link.fleet(max_age=600)]
            fresh = [m.beat.module_id for m in await link.fleet()]
            return first, cached, fresh

    first, cached, fresh = asyncio.run(scenario())
    assert first == cached == ["cell"]
    assert fresh == ["cell", "cell-z"]


def test_the_status_bar_text_names_the_orders_not_picked_up():
    from core.dataservices.link import LinkState

    down = LinkState("remote", "http://lims:8105", error="connection refused", outbox=3, skipped=1,
                     pickup_error="Order_7: cannot be read")
    assert down.describe() == ("Data Services http://lims:8105: unreachable (connection refused) · outbox 3"
                               " · 1 order not picked up (latest Order_7: cannot be read)")
    up = LinkState("remote", "http://lims:8105", connected=True, skipped=2, pickup_error="Order_9: refused")
    assert up.describe() == ("Data Services http://lims:8105: connected · outbox 0"
                             " · 2 orders not picked up (latest Order_9: refused)")
    assert LinkState("remote", "http://lims:8105").describe() == "Data Services http://lims:8105: connecting · outbox 0"
    assert LinkState("embedded", "http://127.0.0.1:8105").describe() == "Data Services: embedded at http://127.0.0.1:8105"


def test_two_orders_for_the_same_template_with_the_same_inputs_both_run(tmp_path):
    """A LIMS may order the same thing twice on purpose (the same sample on two plates): each
    Data Services order gets its own run, even with the same template, inputs and requester,
    which the console would refuse as a duplicate submission from an operator."""
    dilute = {"name": "Dilute", "inputs": [{"name": "sample", "type": "string"}],
              "definition": {"steps": [{"id": "dilute", "kind": "noop"}]}}

    async def scenario():  # noqa: ANN202
        shared = Store(tmp_path / "shared" / DB_FILENAME).open()
        async with EmbeddedDataServices(shared, port=0) as server, DataServicesClient(server.url) as site:
            rt, link = await _console(tmp_path, "cell", server.url)
            await rt.engine.publish(template_from_dict(dilute))
            try:
                await link.claim_module_id()
                same = Order(templateName="Dilute", createdBy="lims", inputParameters=[Parameter("sample", "S-17")])
                ids = [await site.create_order(same) for _ in range(2)]
                adopted = await link.poll_once()
                mirrors = _adopted(rt)
                runs = rt.store.runs_for_orders([mirrors[o] for o in ids if o in mirrors])
                for run in runs.values():
                    await _until(lambda run=run: rt.store.get_order(run).status is OrderStatus.Complete, 20,
                                 f"run {run} ends")
                made = {oid: rt.engine.get_instance(runs[mirrors[oid]]) for oid in ids if mirrors.get(oid) in runs}
                copies = {oid: rt.store.get_order(mirrors[oid]) for oid in ids if oid in mirrors}
            finally:
                await _close(rt, link)
        shared.close()
        return ids, adopted, made, copies

    ids, adopted, made, copies = asyncio.run(scenario())
    assert adopted == ids
    assert [copies[oid].status for oid in ids] == [OrderStatus.Running] * 2, \
        [copies[oid].statusDetails for oid in copies]
    assert sorted(made) == sorted(ids), "a run for each order"
    assert made[ids[0]]["id"] != made[ids[1]]["id"]
    assert [(r["template_name"], r["input_data"], r["status"]) for r in made.values()] == [
        ("Dilute", {"sample": "S-17"}, "completed")] * 2


def test_an_order_the_data_services_refuses_to_hand_over_is_skipped_and_the_poll_goes_on(tmp_path, caplog, monkeypatch):
    """The Data Services answers the claim of one order with an error (HTTP 409): that order is
    not picked up, saying the server refused it and why, and the same poll adopts the next one."""
    caplog.set_level(logging.WARNING, logger=LOG)
    refuse: set[str] = set()
    _refusing(monkeypatch, "POST", "orders/{id}/try-assign", refuse)

    async def scenario():  # noqa: ANN202
        async with _site(tmp_path) as (_server, site), _cell(tmp_path, _server.url) as (rt, link):
            await link.claim_module_id()
            bad = await site.create_order(Order(templateName="Mix"))
            refuse.add(bad)
            good = await site.create_order(Order(templateName="Stir"))
            adopted = await link.poll_once()
            state = (link.state.skipped, link.state.pickup_error)
            orders = {oid: await site.get_order(oid) for oid in (bad, good)}
            return (bad, good), adopted, state, _adopted(rt), orders

    (bad, good), adopted, state, links, orders = asyncio.run(scenario())
    assert adopted == [good] and list(links) == [good]
    assert orders[bad].assignedTo is None and orders[bad].status is OrderStatus.Created
    assert orders[good].assignedTo == "cell"
    reason = "the server refused to hand it over: HTTP 409 Conflict (answer: the order is locked)"
    said = [r.getMessage() for r in caplog.records if "is not picked up" in r.getMessage()]
    assert said == [f"Data Services: order {bad} is not picked up: {reason}"]
    assert state == (1, f"{bad}: {reason}")
