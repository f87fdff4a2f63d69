"""The console as a Data Services module: embedded and remote, with Biosero's own client,
and the outbox surviving a server that goes away mid-burst."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.bdm_support import run_bdm_script
from starlette.responses import Response

from core.dataservices import server as server_module
from core.dataservices.client import DataServicesClient
from core.dataservices.config import DataServicesSettings
from core.dataservices.link import PICKUP_BATCH, DataServicesLink
from core.dataservices.models import OrderTemplate
from core.dataservices.server import EmbeddedDataServices
from core.errors import DataServicesError
from core.orders import Order, OrderStatus
from core.runtime import SAMPLE_TEMPLATES, Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict
from core.workcell import parse_workcell

FAST_CELL = """
name: fast cell
seed: 1
heartbeat_interval: 1s
stale_timeout: 10s
instruments:
  - {id: LiquidHandler1, kind: LiquidHandler, driver: simulated, capabilities: {LiquidHandler.Transfer: {duration: 50ms, jitter: 0s}}}
  - {id: Incubator1, kind: Incubator, driver: simulated, capabilities: {Incubator.Incubate: {duration: 50ms, jitter: 0s}}}
  - {id: Sealer1, kind: Sealer, driver: simulated, capabilities: {Sealer.Seal: {duration: 50ms, jitter: 0s}}}
"""


async def console(data_dir: Path, settings=None, port: int = 0) -> tuple[Runtime, DataServicesLink]:
    store = Store(data_dir / DB_FILENAME).open()
    runtime = Runtime.build(data_dir, store=store, workcell=parse_workcell(FAST_CELL))
    await runtime.start(templates_dir=SAMPLE_TEMPLATES)
    link = DataServicesLink(runtime, settings, poll_interval=0.1, port=port or 18105, timeout=2.0)
    await link.start()
    return runtime, link


async def until(predicate, timeout: float = 30.0, step: float = 0.05) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(step)


def test_biosero_order_scheduler_runs_on_the_workcell(data_dir):
    """Seed 000's example, with Biosero's client, against the console's embedded Data Services:
    the Cell Prep order is claimed by labconsole, run on the (simulated) workcell, completed."""

    async def scenario():
        runtime, link = await console(data_dir)
        try:
            # the site's master workflow template (in a Biosero site, registered with the workflow)
            site = DataServicesClient(link.state.url)
            await site.register_template(OrderTemplate(name="Cell Culture Workflow", category="workflow"))
            await site.close()
            result = await run_bdm_script("bdm_seed_workflow.py", link.state.url, "biosero", timeout=90)
            runs, _ = runtime.engine.query_instances(template="Cell Prep")
            return result, runs, link, runtime
        finally:
            await link.stop()
            await runtime.close()

    result, runs, link, runtime = asyncio.run(scenario())
    assert result["status"] == "Complete" and result["success"] in (True, "True")
    assert len(runs) == 1 and runs[0]["status"] == "completed"
    run = runtime.store.get_order(runs[0]["id"])
    assert run.parentIdentifier == result["order_id"]  # the run answers the Data Services order
    assert link.state.adopted == 1


def test_module_orders_run_on_the_named_instrument(data_dir):
    async def scenario():
        runtime, link = await console(data_dir)
        try:
            client = DataServicesClient(link.state.url)
            oid = await client.create_order(Order(templateName="Sealer.Seal", restrictToModuleIds="Sealer1",
                                                  inputParameters=[{"name": "plate", "value": "P7"}]))
            await until(lambda: runtime.store.get_order(oid).status is OrderStatus.Complete)
            done = await client.get_order(oid)
            await client.close()
            return done
        finally:
            await link.stop()
            await runtime.close()

    done = asyncio.run(scenario())
    assert done.assignedTo == "Sealer1"
    assert done.get_output_parameter_value("Success") in (True, "True")


def test_outbox_survives_the_server_going_away_mid_burst(tmp_path):
    """Remote mode: runs started in the console appear in Data Services with parent links; the
    server stops mid-burst, the console keeps working, the server comes back: Data Services ends
    with exactly the console's state — nothing lost, nothing doubled."""
    console_dir, remote_dir = tmp_path / "console", tmp_path / "remote"
    console_dir.mkdir()
    remote_dir.mkdir()

    async def scenario():
        remote_store = Store(remote_dir / DB_FILENAME).open()
        server = EmbeddedDataServices(remote_store, port=18207)
        url = await server.start()
        runtime, link = await console(console_dir, DataServicesSettings(url, "test"))
        try:
            await runtime.engine.publish(template_from_dict({"name": "Quick", "definition": {"steps": [
                {"id": "a", "kind": "Sealer.Seal"}, {"id": "b", "kind": "noop", "depends_on": ["a"]}]}}))
            first = [await runtime.start_run("Quick", who="op", allow_duplicate=True) for _ in range(3)]
            await until(lambda: link.state.delivered > 4)
            await server.stop()                      # gone mid-burst
            second = [await runtime.start_run("Quick", who="op", allow_duplicate=True) for _ in range(3)]
            await until(lambda: all(not runtime.run_is_active(r) for r in first + second))
            await until(lambda: link.state.error is not None and link.outbox_depth() > 0)
            # the status bar's outbox figure follows what waits to be delivered
            await until(lambda: link.state.outbox == link.outbox_depth() > 0, timeout=60)
            depth_while_down = link.outbox_depth()
            assert f"outbox {link.state.outbox}" in link.describe()
            server = EmbeddedDataServices(remote_store, port=18207)
            await server.start()                     # back
            await until(lambda: link.outbox_depth() == 0 and link.state.outbox == 0, timeout=60)
            local = {}
            for run_id in first + second:
                inst = runtime.engine.get_instance(run_id)
                local[run_id] = runtime.store.get_order(run_id)
                for step in inst["steps"]:
                    local[step["order_id"]] = runtime.store.get_order(step["order_id"])
            links = dict(runtime.store.read_sync(lambda c: c.execute(
                "SELECT local_id, remote_id FROM ds_links").fetchall()))
            client = DataServicesClient(url)
            remote = {lid: await client.get_order(links[lid]) for lid in local}
            remote_all = await client.orders(limit=1000)
            await client.close()
            return local, remote, links, remote_all, depth_while_down
        finally:
            await link.stop()
            await runtime.close()
            await server.stop()
            remote_store.close()

    local, remote, links, remote_all, depth = asyncio.run(scenario())
    assert depth > 0
    for lid, order in local.items():
        twin = remote[lid]
        assert twin.status is order.status, lid
        assert twin.templateName == order.templateName
        assert (twin.parentIdentifier or None) == (links.get(order.parentIdentifier) if order.parentIdentifier else None)
        mine = {p.name: p.value for p in order.outputParameters}
        assert {p.name: p.value for p in twin.outputParameters if p.name in mine} == mine, lid
    runs = [o for o in local.values() if o.parentIdentifier is None]
    assert all(o.get_output_parameter_value("Success") is True for o in runs)
    created_by_console = [o for o in remote_all if (o.createdBy or "").startswith("labconsole ")]
    assert len(created_by_console) == len(local), "nothing doubled, nothing missing"


def test_data_services_lifecycle_fields_reach_the_run(data_dir):
    """An order with bad inputs ends Invalid with validationErrors (the others still run); an
    Elevated order's run and steps are Elevated; a FirstAvailableSlot order waits for its
    scheduledStartTime, then runs."""
    from datetime import UTC, datetime, timedelta

    from core.orders import OrderPriority, Parameter, SchedulingStrategy

    async def scenario():
        runtime, link = await console(data_dir)
        try:
            client = DataServicesClient(link.state.url)
            bad = await client.create_order(Order(templateName="Cell Prep",
                                                  inputParameters=[Parameter("Plate Count", "many")]))
            elevated = await client.create_order(Order(templateName="Cell Prep", priority=OrderPriority.Elevated))
            later = datetime.now(UTC) + timedelta(seconds=3)
            slot = await client.create_order(Order(templateName="Cell Prep", scheduledStartTime=later,
                                                   schedulingStrategy=SchedulingStrategy.FirstAvailableSlot))

            def run_of(order_id: str) -> str | None:
                runs = runtime.engine.query_instances(template="Cell Prep")[0]
                return next((r["id"] for r in runs if runtime.order(r["id"]).parentIdentifier == order_id), None)

            # as soon as the slot's run exists (not after other orders ran: a loaded machine takes
            # longer than the slot's 3 s for those) it waits for its time
            await until(lambda: run_of(slot) is not None, step=0.01)
            slot_run = run_of(slot)
            waiting = runtime.engine.run_status(slot_run).value
            waited_from = datetime.now(UTC)
            await until(lambda: runtime.order(bad).status is OrderStatus.Invalid)
            await until(lambda: runtime.order(elevated).status is OrderStatus.Complete)
            elevated_run = run_of(elevated)
            await until(lambda: runtime.order(slot).status is OrderStatus.Complete)
            started = runtime.engine.get_instance(slot_run)["started_at"]
            steps = [s["order_id"] for s in runtime.engine.get_instance(elevated_run)["steps"]]
            priorities = {runtime.order(o).priority for o in [elevated_run, *steps]}
            history = [t.to_status for t in runtime.history(elevated)]
            await client.close()
            assert waited_from < later, "the slot's run was created after its time: the check proves nothing"
            return runtime.order(bad), waiting, started, later.timestamp(), priorities, history
        finally:
            await link.stop()
            await runtime.close()

    bad, waiting, started, later, priorities, history = asyncio.run(scenario())
    assert bad.validationErrors and "Plate Count" in bad.validationErrors[0]
    assert "Plate Count" in (bad.statusDetails or "")
    assert waiting == "pending" and started >= later - 0.05
    assert priorities == {OrderPriority.Elevated}
    assert OrderStatus.Validated in history and history.index(OrderStatus.Validated) < history.index(OrderStatus.Running)


@contextlib.asynccontextmanager
async def _data_services_apart(remote_dir):
    """A Data Services of its own (its store in ``remote_dir``) for a console in remote mode;
    yields its store and its address."""
    remote_store = Store(remote_dir / DB_FILENAME).open()
    server = EmbeddedDataServices(remote_store, port=0)
    try:
        yield remote_store, await server.start()
    finally:
        await server.stop()
        remote_store.close()


async def _close(*closers) -> None:
    """Close what a scenario opened, in order."""
    for close in closers:
        await close()


def _twin_of(runtime, local_id):
    row = runtime.store.read_sync(lambda c: c.execute(
        "SELECT remote_id FROM ds_links WHERE local_id = ?", (local_id,)).fetchone())
    return row[0] if row else None


@contextlib.asynccontextmanager
async def _a_run_with_a_running_twin(tmp_path, port):
    """Remote mode: a console and a Data Services apart, a run under way whose twin there is
    Running; yields (runtime, remote store, run id, its twin's id)."""
    console_dir, remote_dir = tmp_path / "console", tmp_path / "remote"
    console_dir.mkdir()
    remote_dir.mkdir()
    async with _data_services_apart(remote_dir) as (remote_store, url):
        runtime, link = await console(console_dir, DataServicesSettings(url, "test"), port=port)
        try:
            await runtime.engine.publish(template_from_dict({"name": "Held", "definition": {"steps": [
                {"id": "wait", "kind": "delay", "parameters": {"seconds": "1"}},
                {"id": "b", "kind": "noop", "depends_on": ["wait"]}]}}))
            run_id = await runtime.start_run("Held", who="op")
            await until(lambda: _twin_of(runtime, run_id) is not None)
            first = _twin_of(runtime, run_id)
            await until(lambda: remote_store.get_order(first).status is OrderStatus.Running)
            yield runtime, remote_store, run_id, first
        finally:
            await link.stop()
            await runtime.close()


def test_a_remote_order_that_vanished_is_logged_with_its_run_and_unlinked(tmp_path, caplog):
    """Remote mode: the twin of a running run is deleted on Data Services; the run's next status
    finds it gone and the console logs which remote order of which run."""
    def gone():
        return [r.getMessage() for r in caplog.records if "is gone" in r.getMessage()]

    async def scenario():
        async with _a_run_with_a_running_twin(tmp_path, 18213) as (_runtime, remote_store, run_id, first):
            remote_store.write_sync(lambda c: c.execute("DELETE FROM orders WHERE id = ?", (first,)))
            await until(lambda: bool(gone()))
            return run_id, first

    with caplog.at_level(logging.WARNING, logger="core.dataservices.link"):
        run_id, first = asyncio.run(scenario())
    assert gone()[0] == f"remote order {first} of {run_id} is gone; relinking"


@pytest.mark.parametrize("keys_kept", [False, True], ids=["purged-with-its-key", "key-kept"])
def test_a_run_whose_remote_order_vanished_gets_a_new_twin_that_follows_it(tmp_path, keys_kept):
    """Remote mode: the twin of a running run is deleted on Data Services; the console forgets the
    link, creates a new twin and reports the run's later states to it, up to Complete. A Data
    Services that deletes an order but keeps its creation key answered the console's second create
    with the deleted order (same key), which vanished again at each round: the new twin's key names
    the one that vanished."""
    def remote_orders(remote_store, local_id):
        rows = remote_store.read_sync(lambda c: c.execute("SELECT data FROM orders ORDER BY seq").fetchall())
        orders = [Order.model_validate_json(r[0]) for r in rows]
        return [o.status for o in orders if (o.createdBy or "").endswith(f" {local_id}")]

    async def scenario():
        async with _a_run_with_a_running_twin(tmp_path, 18219) as (runtime, remote_store, run_id, first):
            remote_store.write_sync(lambda c: (  # purged there, maybe its creation record too
                c.execute("DELETE FROM orders WHERE id = ?", (first,)),
                None if keys_kept else c.execute("DELETE FROM ds_idempotency WHERE order_id = ?", (first,))))
            await until(lambda: remote_orders(remote_store, run_id) == [OrderStatus.Complete], timeout=15)
            second = _twin_of(runtime, run_id)
            assert second != first
            return run_id, remote_store.get_order(second), runtime.order(run_id).status

    run_id, twin, local = asyncio.run(scenario())
    assert twin.templateName == "Held" and twin.createdBy.endswith(f" {run_id}")
    assert (twin.status, local) == (OrderStatus.Complete, OrderStatus.Complete)


def test_a_data_services_without_the_v3_unassigned_route_is_read_through_v2_in_pages(tmp_path, caplog,
                                                                                   monkeypatch):
    """Remote mode against a Data Services that lacks ``GET v3.0/orders/unassigned`` (the embedded
    one without that route): the console says so once, reads v2 ``UnassignedOrders`` a page at a
    time, and picks up from it."""
    console_dir, remote_dir = tmp_path / "console", tmp_path / "remote"
    console_dir.mkdir()
    remote_dir.mkdir()
    asked: list[tuple[str | None, str | None]] = []

    class OlderDataServices(server_module.DataServicesApp):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            v2 = next(r for r in self.routes if r.version == "v2.0" and r.path == "OrderService/UnassignedOrders")

            async def recording(c):
                asked.append((c.query.get("limit"), c.query.get("offset")))
                return await v2.handler(c)

            self.routes = [replace(r, handler=recording) if r is v2 else r for r in self.routes
                           if not (r.version == "v3.0" and r.path == "orders/unassigned")]

    monkeypatch.setattr(server_module, "DataServicesApp", OlderDataServices)

    async def scenario():
        async with _data_services_apart(remote_dir) as (remote_store, url):
            site = DataServicesClient(url)
            waiting = await site.create_order(Order(templateName="Sealer.Seal"))
            runtime, link = await console(console_dir, DataServicesSettings(url, "test"), port=18215)
            try:
                await until(lambda: remote_store.get_order(waiting).status is OrderStatus.Complete)
                return remote_store.get_order(waiting).assignedTo, link.module_id
            finally:
                await _close(site.close, link.stop, runtime.close)

    with caplog.at_level(logging.WARNING, logger="core.dataservices.link"):
        assigned, module_id = asyncio.run(scenario())
    assert asked and set(asked) == {(str(PICKUP_BATCH), "0")}
    assert assigned == module_id
    assert len([r for r in caplog.records if "has no GET" in r.getMessage()]) == 1


def test_a_list_of_waiting_orders_that_is_not_a_list_is_refused_naming_the_server(tmp_path, monkeypatch):
    console_dir, remote_dir = tmp_path / "console", tmp_path / "remote"
    console_dir.mkdir()
    remote_dir.mkdir()

    class OddDataServices(server_module.DataServicesApp):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)

            async def an_object(c):
                return Response('{"orders": []}', 200, media_type="application/json")

            self.routes = [replace(r, handler=an_object) if r.path in ("orders/unassigned",
                                                                        "OrderService/UnassignedOrders") else r
                           for r in self.routes]

    monkeypatch.setattr(server_module, "DataServicesApp", OddDataServices)

    async def scenario():
        remote_store = Store(remote_dir / DB_FILENAME).open()
        server = EmbeddedDataServices(remote_store, port=0)
        url = await server.start()
        runtime, link = await console(console_dir, DataServicesSettings(url, "test"), port=18217)
        try:
            with pytest.raises(DataServicesError) as refused:
                await link.poll_once()
            await until(lambda: link.state.error is not None)
            return url, str(refused.value), link.state.error
        finally:
            await link.stop()
            await runtime.close()
            await server.stop()
            remote_store.close()

    url, refused, shown = asyncio.run(scenario())
    assert refused == f"Data Services at {url}: expected a JSON list of orders, got dict"
    assert shown == "expected a JSON list of orders, got dict"


def test_a_shared_data_services_is_asked_only_for_this_consoles_templates_a_few_times_its_backlog(tmp_path,
                                                                                               monkeypatch):
    """Remote mode: the waiting orders are read through v3 ``orders/unassigned`` filtered by the
    templates and capabilities this console has, at most four times its backlog at once; an order
    for it waiting behind many of another workcell's orders is still picked up."""
    console_dir, remote_dir = tmp_path / "console", tmp_path / "remote"
    console_dir.mkdir()
    remote_dir.mkdir()
    asked: list[tuple[list[str], str | None, str | None]] = []

    class RecordingDataServices(server_module.DataServicesApp):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            v3 = next(r for r in self.routes if r.version == "v3.0" and r.path == "orders/unassigned")

            async def recording(c):
                asked.append((c.query.getlist("templateName"), c.query.get("limit"), c.query.get("offset")))
                return await v3.handler(c)

            self.routes = [replace(r, handler=recording) if r is v3 else r for r in self.routes]

    monkeypatch.setattr(server_module, "DataServicesApp", RecordingDataServices)

    async def scenario():
        async with _data_services_apart(remote_dir) as (remote_store, url):
            site = DataServicesClient(url)
            for _ in range(90):  # another workcell's backlog, older than the order for this console
                await site.create_order(Order(templateName="Centrifuge.Spin"))
            waiting = await site.create_order(Order(templateName="Sealer.Seal"))
            store = Store(console_dir / DB_FILENAME).open()
            runtime = Runtime.build(console_dir, store=store, workcell=parse_workcell(FAST_CELL))
            await runtime.start(templates_dir=SAMPLE_TEMPLATES)
            link = DataServicesLink(runtime, DataServicesSettings(url, "test"), poll_interval=0.1, port=18219,
                                    timeout=2.0, backlog=20)
            await link.start()
            try:
                await until(lambda: asked, timeout=10)
                assert "Sealer.Seal" in asked[0][0] and "Centrifuge.Spin" not in asked[0][0], asked[0]
                await until(lambda: remote_store.get_order(waiting).status is OrderStatus.Complete)
                return remote_store.get_order(waiting).assignedTo, link.module_id
            finally:
                await _close(site.close, link.stop, runtime.close)

    assigned, module_id = asyncio.run(scenario())
    assert assigned == module_id
    assert asked
    names = asked[0][0]
    assert "Sealer.Seal" in names and "Centrifuge.Spin" not in names
    assert {(tuple(n), limit, offset) for n, limit, offset in asked} == {(tuple(names), "80", "0")}


def test_the_consoles_workflows_are_offered_as_templates_of_the_labconsole_workflow_category(data_dir):
    """Embedded: each published workflow is an order template of the Data Services, in the
    "labconsole workflow" category, for this console's module, with its inputs."""
    async def scenario():
        runtime, link = await console(data_dir, port=18221)
        try:
            client = DataServicesClient(link.state.url)
            listed = await client.list_templates()
            await client.close()
            return listed, {t.name: t for t in runtime.templates()}, link.module_id
        finally:
            await link.stop()
            await runtime.close()

    listed, workflows, module_id = asyncio.run(scenario())
    ours = {t.name: t for t in listed if t.name in workflows}
    assert set(ours) == set(workflows) and ours
    for name, t in ours.items():
        assert (t.category, t.availableModuleIds) == ("labconsole workflow", module_id), name
        assert [p.name for p in t.inputParameters or []] == [p.name for p in workflows[name].inputs], name
