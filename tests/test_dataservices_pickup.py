"""The pickup's bookkeeping of orders it could not take (embedded Data Services, real HTTP from a
client on 127.0.0.1, a real store): a skipped order is left alone until its retry is due, the
poll loop wakes for it then, and once it is picked up the status bar forgets it; each reason is
logged once per order, a new reason again."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3

import pytest
from test_dataservices_link import FAST_CELL

from core.dataservices.client import DataServicesClient
from core.dataservices.link import DataServicesLink, LinkState
from core.orders import Order, OrderStatus
from core.runtime import SAMPLE_TEMPLATES, Runtime
from core.store import DB_FILENAME, Store
from core.workcell import parse_workcell


async def until(predicate, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


async def embedded(data_dir, cell: str = FAST_CELL,
                   **kw) -> tuple[Runtime, DataServicesLink, list[LinkState]]:
    store = Store(data_dir / DB_FILENAME).open()
    runtime = Runtime.build(data_dir, store=store, workcell=parse_workcell(cell))
    await runtime.start(templates_dir=SAMPLE_TEMPLATES)
    link = DataServicesLink(runtime, None, poll_interval=0.05, port=0, timeout=2.0, **kw)
    shown: list[LinkState] = []
    link.on_state = lambda state: shown.append(LinkState(**vars(state)))
    await link.start()
    return runtime, link, shown


def test_a_skipped_order_waits_for_its_retry_then_is_picked_up_and_forgotten(data_dir, caplog):
    caplog.set_level(logging.WARNING, logger="core.dataservices.link")

    async def scenario():
        runtime, link, shown = await embedded(data_dir)
        try:
            client = DataServicesClient(link.state.url)
            # refused earlier (as when the server would not hand it over): tried again in 3 s
            link._pickup_failed("SEAL-1", "the server refused to hand it over: HTTP 503")  # noqa: SLF001
            link._pickup_failed("SEAL-1", "the server refused to hand it over: HTTP 503", retry_after=3.0)  # noqa: SLF001
            link._pickup_failed("SEAL-2", "cannot be read: x", retry_after=6.0)  # noqa: SLF001
            skipped = (link.state.skipped, link.state.pickup_error)
            polls = link.polls
            created = asyncio.get_running_loop().time()
            for oid in ("SEAL-1", "SEAL-2"):
                await client.create_order(Order(identifier=oid, templateName="Sealer.Seal",
                                                restrictToModuleIds="Sealer1"))
            await until(lambda: link.polls >= polls + 2)  # the creations were announced and read
            while_skipped = [(await client.get_order(oid)).assignedTo for oid in ("SEAL-1", "SEAL-2")]
            await until(lambda: link.state.skipped == 1, timeout=25)  # woken when the retry is due
            waited = asyncio.get_running_loop().time() - created
            half = (link.state.skipped, link.state.pickup_error)
            await until(lambda: link.state.skipped == 0, timeout=25)
            done = []
            for oid in ("SEAL-1", "SEAL-2"):
                order = await client.get_order(oid)
                while order.status is not OrderStatus.Complete:
                    await asyncio.sleep(0.05)
                    order = await client.get_order(oid)
                done.append(order.status)
            await client.close()
            return skipped, while_skipped, waited, half, link.state, shown, done
        finally:
            await link.stop()
            await runtime.close()

    skipped, while_skipped, waited, half, state, shown, done = asyncio.run(scenario())
    assert skipped == (2, "SEAL-2: cannot be read: x")
    assert while_skipped == [None, None], "not claimed before its retry is due"
    assert waited >= 2.5 and waited < 25, "picked up when due, before the 30 s sweep"
    assert half == (1, "SEAL-2: cannot be read: x"), "the error stays while one is still skipped"
    assert (state.skipped, state.pickup_error) == (0, None)
    assert done == [OrderStatus.Complete, OrderStatus.Complete]
    assert shown[-1].skipped == 0 and shown[-1].pickup_error is None, "the status bar was told"
    said = [r.getMessage() for r in caplog.records if "is not picked up" in r.getMessage()]
    assert said == ["Data Services: order SEAL-1 is not picked up: the server refused to hand it over: HTTP 503",
                    "Data Services: order SEAL-2 is not picked up: cannot be read: x"], "once per reason"


def test_a_new_reason_for_a_skipped_order_is_logged_again(data_dir, caplog):
    caplog.set_level(logging.WARNING, logger="core.dataservices.link")

    async def scenario():
        runtime, link, _shown = await embedded(data_dir)
        try:
            for reason in ("first", "first", "second", "second", "first"):
                link._pickup_failed("", reason, retry_after=60)  # noqa: SLF001 - an order without an id
            link._picked_up("")  # noqa: SLF001
            link._picked_up("never-skipped")  # noqa: SLF001
            return link.state, link.describe()
        finally:
            await link.stop()
            await runtime.close()

    state, described = asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if "is not picked up" in r.getMessage()]
    assert said == [f"Data Services: order (no id) is not picked up: {r}" for r in ("first", "second", "first")]
    assert (state.skipped, state.pickup_error) == (0, None)
    assert "not picked up" not in described


def test_declared_compatible_versions_match_the_template_name_in_any_case(data_dir):
    """``[DATA SERVICES] compatible`` names a template as the site spells it: an order for a
    version in the range runs with this console's latest, whatever the case of either name; one
    outside the range is refused, saying which version it asks for."""
    from packaging.specifiers import SpecifierSet

    from core.dataservices.config import DataServicesSettings

    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
        await runtime.start(templates_dir=SAMPLE_TEMPLATES)
        try:
            name = next(t.name for t in runtime.templates() if t.name == "Cell Prep")
            link = DataServicesLink(runtime, DataServicesSettings("http://127.0.0.1:9", "test"),
                                    compatible={"CELL PREP": SpecifierSet(">=2,<50")})
            return {version: link.route(Order(templateName=spelling, templateVersion=version))
                    for spelling, version in ((name, "7"), ("cell prep", "49"), (name, "50"), (name, None))}
        finally:
            await runtime.close()

    routes = asyncio.run(scenario())
    assert routes["7"] == ("workflow", None) and routes["49"] == ("workflow", None)
    assert routes["50"] == (None, "asks for Cell Prep v50")
    assert routes[None] == ("workflow", None)


def test_an_order_for_version_zero_in_the_declared_range_runs_with_the_latest(data_dir):
    """Sites whose Data Services numbers template versions from 0: ``Cell Prep<3`` declares v0,
    v1 and v2 compatible, so an order asking for ``0`` or ``v0`` runs with this console's latest
    (the console has no version 0 of its own); ``v3`` is outside the range and refused."""
    from packaging.specifiers import SpecifierSet

    from core.dataservices.config import DataServicesSettings

    async def scenario():
        store = Store(data_dir / DB_FILENAME).open()
        runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
        await runtime.start(templates_dir=SAMPLE_TEMPLATES)
        try:
            link = DataServicesLink(runtime, DataServicesSettings("http://127.0.0.1:9", "test"),
                                    compatible={"Cell Prep": SpecifierSet("<3")})
            versions = runtime.engine.templates.versions("Cell Prep")
            return versions, {version: link.route(Order(templateName="Cell Prep", templateVersion=version))
                              for version in ("0", "v0", "v3")}
        finally:
            await runtime.close()

    versions, routes = asyncio.run(scenario())
    assert 0 not in versions and 3 not in versions
    assert routes["0"] == routes["v0"] == ("workflow", None)
    assert routes["v3"] == (None, "asks for Cell Prep v3")


TWO_SEALERS = """
name: two sealers
seed: 1
heartbeat_interval: 1s
stale_timeout: 10s
instruments:
  - {id: Sealer1, kind: Sealer, driver: simulated, capabilities: {Sealer.Seal: {duration: 3s, jitter: 0s}}}
  - {id: Sealer2, kind: Sealer, driver: simulated, capabilities: {Sealer.Seal: {duration: 3s, jitter: 0s}}}
"""


def test_a_module_order_keeps_its_restriction_strategy(data_dir):
    """Three module orders for Sealer1 while it is busy with the first: the one with the default
    FullRestriction waits for Sealer1, the UnlessBusy one goes to Sealer2."""

    async def scenario():
        runtime, link, _shown = await embedded(data_dir, TWO_SEALERS)
        try:
            client = DataServicesClient(link.state.url)
            ids = [await client.create_order(Order(templateName="Sealer.Seal", restrictToModuleIds="Sealer1",
                                                   moduleRestrictionStrategy=strategy))
                   for strategy in ("FullRestriction", "FullRestriction", "UnlessBusy")]
            done = []
            for oid in ids:
                await until(lambda oid=oid: runtime.store.get_order(oid).status is OrderStatus.Complete, timeout=60)
                done.append((await client.get_order(oid)).assignedTo)
            await client.close()
            return done
        finally:
            await link.stop()
            await runtime.close()

    assert asyncio.run(scenario()) == ["Sealer1", "Sealer1", "Sealer2"]


HOLD = {"name": "Hold plate", "definition": {"steps": [
    {"id": "hold", "kind": "delay", "parameters": {"seconds": "3s"}},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["hold"]}]}}


def test_an_order_whose_run_was_under_way_at_a_restart_is_answered_after_it(data_dir):
    """Embedded: the console stops while the run answering an order is under way; started again
    on the same data directory, it finishes the run and completes the order."""
    from core.templates import template_from_dict

    async def first() -> str:
        runtime, link, _shown = await embedded(data_dir)
        try:
            await runtime.engine.publish(template_from_dict(HOLD))
            client = DataServicesClient(link.state.url)
            oid = await client.create_order(Order(templateName="Hold plate"))
            await until(lambda: bool(runtime.store.runs_for_orders([oid])))
            run_id = runtime.store.runs_for_orders([oid])[oid]
            await until(lambda: runtime.engine.get_instance(run_id)["steps"][0]["status"] == "running")
            await client.close()
            return oid
        finally:
            await link.stop()
            await runtime.close()

    async def second(oid: str):
        runtime, link, _shown = await embedded(data_dir)
        try:
            client = DataServicesClient(link.state.url)
            await until(lambda: runtime.store.get_order(oid).status is OrderStatus.Complete, timeout=60)
            done = await client.get_order(oid)
            await client.close()
            return done
        finally:
            await link.stop()
            await runtime.close()

    oid = asyncio.run(first())
    done = asyncio.run(second(oid))
    assert done.status is OrderStatus.Complete


def test_an_answered_order_is_forgotten_and_not_answered_again_at_the_next_start(data_dir):
    """Embedded: once the run made for an order ends and the order is answered, the console no
    longer watches that run; it kept the watch in its store and answered it again at each start."""
    from core.templates import template_from_dict

    def watches(runtime) -> list[str]:
        return runtime.store.read_sync(lambda c: [k for (k,) in c.execute(
            "SELECT key FROM meta WHERE key LIKE 'ds_watch:%'")])

    async def first() -> tuple[str, list[str], int]:
        runtime, link, _shown = await embedded(data_dir)
        try:
            await runtime.engine.publish(template_from_dict(HOLD))
            client = DataServicesClient(link.state.url)
            oid = await client.create_order(Order(templateName="Hold plate"))
            await until(lambda: runtime.store.get_order(oid).status is OrderStatus.Complete, timeout=60)
            await until(lambda: not watches(runtime))
            await client.close()
            return oid, watches(runtime), len(runtime.store.transitions(oid))
        finally:
            await link.stop()
            await runtime.close()

    async def second(oid: str) -> tuple[OrderStatus, int]:
        runtime, link, _shown = await embedded(data_dir)
        try:
            await asyncio.sleep(1.0)  # the link has answered what it found to answer by now
            return runtime.store.get_order(oid).status, len(runtime.store.transitions(oid))
        finally:
            await link.stop()
            await runtime.close()

    oid, left, transitions = asyncio.run(first())
    assert left == []
    status, again = asyncio.run(second(oid))
    assert status is OrderStatus.Complete and again == transitions


@pytest.mark.parametrize(("field", "sql_value"), [("priority", "'Bogus'"), ("inputParameters", "5")])
def test_an_order_that_cannot_be_read_is_skipped_naming_it_and_the_others_are_picked_up(data_dir, caplog, field,
                                                                                         sql_value):
    """Stored by an older or foreign writer: a priority no model knows, parameters that are not
    a list (every poll of the link failed on it, "'int' object is not iterable", and no order was
    picked up any more)."""
    caplog.set_level(logging.WARNING, logger="core.dataservices.link")

    async def scenario():
        runtime, link, _shown = await embedded(data_dir)
        try:
            async with DataServicesClient(link.state.url) as client:
                create = runtime.store.new_order_op(Order(identifier="BAD-1", templateName="Sealer.Seal"), who="lims")

                def unreadable(c):
                    create(c)
                    c.execute(f"UPDATE orders SET data = json_set(data, '$.{field}', {sql_value}) WHERE id = 'BAD-1'")

                await runtime.store.write(unreadable)
                bad = "BAD-1"
                good = await client.create_order(Order(templateName="Sealer.Seal"))
                await until(lambda: runtime.store.get_order(good).status is OrderStatus.Complete)
                status = runtime.store.order_rows("id = ?", [bad])[0][4]
                return bad, OrderStatus(status), link.state.skipped
        finally:
            await link.stop()
            await runtime.close()

    bad, status, _skipped = asyncio.run(scenario())
    assert status is OrderStatus.Created
    said = [r.getMessage() for r in caplog.records if "cannot be read: " in r.getMessage()]
    assert said and said[0].startswith(f"Data Services: order {bad} is not picked up: cannot be read: ")
    assert f"order {bad}: {field}: " in said[0], said


def test_a_module_job_that_fails_on_its_instrument_ends_in_error_saying_why(data_dir):
    async def scenario():
        runtime, link, _shown = await embedded(data_dir)
        try:
            runtime.dispatcher.instruments["Sealer1"].driver.inject(fail_next=1)
            async with DataServicesClient(link.state.url) as client:
                job = await client.create_order(Order(templateName="Sealer.Seal"))
                await until(lambda: runtime.store.get_order(job).status is OrderStatus.Error)
                # answered: nothing is left for a restart to resume
                await until(lambda: not runtime.store.read_sync(lambda c: c.execute(
                    "SELECT key FROM meta WHERE key LIKE 'ds_job:%'").fetchall()), timeout=5)
                return (await client.get_order(job)).statusDetails  # as the LIMS sees it
        finally:
            await link.stop()
            await runtime.close()

    assert asyncio.run(scenario()) == "DriverError: Sealer1: Sealer.Seal of order Order_00001 failed (simulated fault)"


def test_an_order_with_text_no_store_takes_is_skipped_and_the_orders_after_it_are_read(data_dir, caplog):
    """An order stored (by an older writer) with a lone surrogate in its notes is skipped for
    good, naming the field; the waiting orders listed after it are still picked up."""
    caplog.set_level(logging.WARNING, logger="core.dataservices.link")

    async def scenario():
        runtime, link, _shown = await embedded(data_dir)
        try:
            create = runtime.store.new_order_op(Order(identifier="BAD-2", templateName="Sealer.Seal"), who="lims")

            def unstorable(c):
                create(c)
                data = json.loads(c.execute("SELECT data FROM orders WHERE id = 'BAD-2'").fetchone()[0])
                c.execute("UPDATE orders SET data = ? WHERE id = 'BAD-2'", (json.dumps({**data, "notes": "\ud800"}),))

            await runtime.store.write(unstorable)
            async with DataServicesClient(link.state.url) as client:
                good = await client.create_order(Order(templateName="Sealer.Seal"))
                await until(lambda: runtime.store.get_order(good).status is OrderStatus.Complete)
            return OrderStatus(runtime.store.order_rows("id = 'BAD-2'")[0][4])
        finally:
            await link.stop()
            await runtime.close()

    assert asyncio.run(scenario()) is OrderStatus.Created
    said = [r.getMessage() for r in caplog.records if "order BAD-2 is not picked up" in r.getMessage()]
    assert said and "notes" in said[0], said


def test_an_order_with_rejected_inputs_is_set_invalid_by_this_console(data_dir):
    """The Invalid transition of an order whose inputs the template rejects names the console's
    module id (as set in its settings) as who did it, and the reasons."""
    from core.orders import Parameter

    async def scenario():
        runtime, link, _shown = await embedded(data_dir, module_id="cell-7")
        try:
            client = DataServicesClient(link.state.url)
            bad = await client.create_order(Order(templateName="Cell Prep",
                                                  inputParameters=[Parameter("Plate Count", "many")]))
            await until(lambda: runtime.order(bad).status is OrderStatus.Invalid)
            await client.close()
            return runtime.history(bad)
        finally:
            await link.stop()
            await runtime.close()

    history = asyncio.run(scenario())
    invalid = [t for t in history if t.to_status is OrderStatus.Invalid]
    assert len(invalid) == 1 and invalid[0].who == "cell-7"
    assert (invalid[0].why or "").startswith("inputs rejected: ") and "Plate Count" in (invalid[0].why or "")


def _stored(db, rows: list[tuple[str, str, str | None, str]]) -> None:
    """Orders ``(id, template, assigned to, stored JSON)`` written as they are, oldest first."""
    store = Store(db).open()
    store.close()
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO orders (id, seq, template_name, status, priority, assigned_to, created, updated, data) "
            "VALUES (?, ?, ?, 0, 0, ?, 0, 0, ?)",
            [(oid, i + 1, template, assigned, data) for i, (oid, template, assigned, data) in enumerate(rows)])
    conn.close()


def test_a_waiting_order_without_an_identifier_is_shown_as_having_no_id(data_dir, caplog):
    """A stored order whose text has no identifier (and cannot be read) is skipped; the status bar
    and the log say "(no id)" rather than inventing one; the readable order after it runs."""
    caplog.set_level(logging.WARNING, logger="core.dataservices.link")
    nameless = json.dumps({"templateName": "Sealer.Seal", "status": 0, "notes": "\ud800"}, ensure_ascii=True)
    good = Order(identifier="SEAL-1", templateName="Sealer.Seal", restrictToModuleIds="Sealer1",
                 status=OrderStatus.Created)
    _stored(data_dir / DB_FILENAME, [("Legacy_9", "Sealer.Seal", None, nameless),
                                     ("SEAL-1", "Sealer.Seal", None, good.to_json())])

    async def scenario():
        runtime, link, _shown = await embedded(data_dir)
        try:
            await until(lambda: runtime.store.get_order("SEAL-1").status is OrderStatus.Complete)
            return link.state, link.describe()
        finally:
            await link.stop()
            await runtime.close()

    state, described = asyncio.run(scenario())
    assert state.skipped == 1
    assert state.pickup_error is not None and state.pickup_error.startswith("(no id): ")
    assert "XXXX" not in described and "1 order not picked up" in described
    said = [r.getMessage() for r in caplog.records if "is not picked up" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("Data Services: order (no id) is not picked up: ")


def test_orders_assigned_to_other_modules_never_hide_an_unassigned_one(data_dir):
    """Embedded: 250 waiting orders already assigned to another module stand before an unassigned
    one (more than one pickup reads); the console picks up the unassigned one and leaves the
    others to their module."""
    rows = [(f"OTHER-{i:03d}", "Sealer.Seal", "cell-2",
             Order(identifier=f"OTHER-{i:03d}", templateName="Sealer.Seal", restrictToModuleIds="Sealer1",
                   assignedTo="cell-2", status=OrderStatus.Created).to_json()) for i in range(250)]
    mine = Order(identifier="SEAL-1", templateName="Sealer.Seal", restrictToModuleIds="Sealer1",
                 status=OrderStatus.Created)
    _stored(data_dir / DB_FILENAME, [*rows, ("SEAL-1", "Sealer.Seal", None, mine.to_json())])

    async def scenario():
        runtime, link, _shown = await embedded(data_dir)
        try:
            await until(lambda: runtime.store.get_order("SEAL-1").status is OrderStatus.Complete)
            others = [runtime.store.get_order(f"OTHER-{i:03d}") for i in (0, 199, 249)]
            return runtime.store.get_order("SEAL-1"), others, link.state
        finally:
            await link.stop()
            await runtime.close()

    done, others, state = asyncio.run(scenario())
    assert (done.status, done.assignedTo) == (OrderStatus.Complete, "Sealer1")  # run on this cell's sealer
    assert all((o.assignedTo, o.status) == ("cell-2", OrderStatus.Created) for o in others)
    assert (state.skipped, state.pickup_error) == (0, None)
