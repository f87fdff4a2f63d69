"""Biosero's own client (biosero-data-models 0.2.9, in .bdm-venv) against the embedded server.

Each test runs a small script with ``.bdm-venv/bin/python`` as a subprocess while the server (its
own thread) and, where orders need executing, a module executor (on the test's loop, through our
client) run in this process. The executor is the stand-in for the workcell: any
``helpers.bdm_support.OrderExecutor`` can take its place.

A missing ``.bdm-venv`` or an unimportable biosero-data-models fails these tests; build it with
``make bdm-venv``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from helpers.bdm_support import (
    BDM_PYTHON,
    ROOT,
    SCRIPTS,
    ModuleExecutor,
    check_bdm_venv,
    run,
    run_bdm_script,
    serving,
)

from core.dataservices import (
    DataServicesClient,
    Order,
    OrderStatus,
    OrderTemplate,
    Parameter,
    ParameterValueType,
)
from core.dataservices.models import MODULE_STATUS_TOPIC

WORKFLOW_TEMPLATES = [
    OrderTemplate(name="Cell Culture Workflow", category="Workflows", description="Parent order"),
    OrderTemplate(name="Cell Prep", category="Cell Culture", inputParameters=[
        Parameter(name="Plate Count", valueType=ParameterValueType.INTEGER),
        Parameter(name="Cell Type"), Parameter(name="Cell Density", valueType=ParameterValueType.DOUBLE)],
        outputParameters=[
            Parameter(name="Prepared Plates", valueType=ParameterValueType.INTEGER),
            Parameter(name="Success", value="False", valueType=ParameterValueType.BOOLEAN)]),
]


def cell_prep(order: Order) -> dict[str, object]:
    """The Cell Prep module's work: one prepared plate per requested plate."""
    plates = int(order.get_input_parameter_value("Plate Count"))
    assert order.get_input_parameter_value("Cell Type") == "HEK293"
    return {"Prepared Plates": plates, "Success": True}


def test_the_biosero_client_is_installed():
    check_bdm_venv()
    assert BDM_PYTHON.exists()


async def _seed_workflow(store, library: str) -> None:
    async with serving(store) as server, DataServicesClient(server.url, timeout=5) as ds:
        for template in WORKFLOW_TEMPLATES:
            await ds.register_template(template)
        executor = ModuleExecutor(ds, "Cell Prep Station", {"Cell Prep": cell_prep})
        await executor.start()
        try:
            result = await run_bdm_script(
                "bdm_seed_workflow.py", server.url, library,
                interpreter=None if library == "biosero" else Path(sys.executable))
        finally:
            await executor.stop()
        workflow = await ds.get_order(result["workflow_id"])
        child = await ds.get_order(result["order_id"])
    assert result["status"] == "Complete" and result["success"] == "True"
    assert result["prepared_plates"] == "4" and result["parent"] == workflow.identifier
    assert executor.executed == [child.identifier]
    assert workflow.templateName == "Cell Culture Workflow"
    assert workflow.status is OrderStatus.Complete
    assert workflow.statusDetails == "Workflow Cell Culture Workflow completed successfully"
    assert workflow.actualStartTime is not None and workflow.actualEndTime is not None
    assert child.status is OrderStatus.Complete and child.assignedTo == "Cell Prep Station"
    assert child.parentIdentifier == workflow.identifier
    assert child.sourceIdentifier == workflow.identifier
    assert child.get_output_parameter_value("Prepared Plates") == 4
    # the script typed every input String explicitly: that wins over the template's Double
    assert child.get_input_parameter_value("Cell Density") == "10000.0"
    # the console sees the same orders in its store
    assert store.get_order(child.identifier or "").status is OrderStatus.Complete
    assert [t.to_status for t in store.transitions(workflow.identifier)] == [
        OrderStatus.Created, OrderStatus.Running, OrderStatus.Complete]


def test_seed_workflow_example_with_biosero_order_scheduler(store):
    """(a) Biosero's OrderScheduler: initiate_workflow, schedule_order(wait=True), complete_workflow."""
    run(_seed_workflow(store, "biosero"), timeout=90)


def test_seed_workflow_example_runs_on_labconsole_with_only_the_import_changed(store):
    """The same script, importing from core.dataservices instead of biosero.datamodels."""
    run(_seed_workflow(store, "labconsole"), timeout=60)


def test_biosero_order_processor_module_claims_and_completes_orders(store, tmp_path):
    """(b) and (c): TemplateRegistrar publishes templates; OrderProcessor executes orders."""
    log_file = tmp_path / "module.log"

    async def scenario():
        check_bdm_venv()
        async with serving(store) as server, DataServicesClient(server.url, timeout=5) as ds:
            module = await asyncio.create_subprocess_exec(
                str(BDM_PYTHON), str(SCRIPTS / "bdm_order_processor.py"), server.url,
                cwd=str(ROOT), stdout=log, stderr=asyncio.subprocess.STDOUT)
            try:
                for _ in range(600):
                    if b"READY" in log_file.read_bytes() or module.returncode is not None:
                        break
                    await asyncio.sleep(0.05)
                assert b"READY" in log_file.read_bytes(), log_file.read_text()[-4000:]

                # (c) the registered templates, as our client sees them
                templates = {t.name: t for t in await ds.list_templates()}
                assert list(templates) == ["Always Fails", "Read Barcode"], log_file.read_text()
                read = templates["Read Barcode"]
                assert (read.category, read.color, read.description) == (
                    "Python Tests", "#00FF00", "Python Action")
                assert [(p.name, p.valueType.wire, p.tags) for p in read.inputParameters] == [
                    ("Barcode", "String", [""]), ("Volume", "Double", [""]),
                    ("Verify", "Boolean", [""])]
                assert [(p.name, p.valueType.wire) for p in read.outputParameters] == [
                    ("Result", "String"), ("Ok", "Boolean")]
                assert read.inputParameters[2].value == "False"

                # (b) orders the module executes
                ok = await ds.create_order(Order(templateName="Read Barcode", inputParameters=[
                    {"name": "Barcode", "value": "BC-1"}, {"name": "Volume", "value": "2.5"},
                    {"name": "Verify", "value": "True"}]))
                bad = await ds.create_order(Order(templateName="Always Fails", inputParameters=[
                    {"name": "Reason", "value": "no tips"}]))
                done = await _wait_final(ds, ok)
                failed = await _wait_final(ds, bad)
            finally:
                module.kill()
                await module.wait()
            assert done.status is OrderStatus.Complete, log_file.read_text()[-4000:]
            assert done.assignedTo == "Conductor Adapter"
            assert done.get_output_parameter_value("Result") == "read-BC-1-5.0-True"
            assert done.get_output_parameter_value("Ok") is True
            assert failed.status is OrderStatus.Error and failed.actualEndTime is not None
            # Ready at start, then Busy/Ready and Busy/Error around the two orders
            events = await ds.query_events(topic=MODULE_STATUS_TOPIC, limit=100)
            payloads = [json.loads(e.data or "{}") for e in events]
            assert {p["ModuleIdentifier"] for p in payloads} == {"PY-ADAPTER"}
            assert sorted(p["Status"] for p in payloads) == [0, 0, 1, 1, 2]
            assert all(e.actorId == "Python Script" for e in events)

    with open(log_file, "wb") as log:  # a file, not a pipe: the module logs a lot
        run(scenario(), timeout=90)


def test_biosero_order_event_and_query_clients_work_unchanged(store):
    """OrderClient's double-encoded queries, '//api' paths, PascalCase bodies; events round trip."""

    async def scenario():
        async with serving(store) as server:
            result = await run_bdm_script("bdm_order_client.py", server.url)
            order = store.get_order(result["order_id"])
        assert result["templates"] == ["Quirk Template"]
        assert result["unassigned"] == [result["order_id"], result["child"]]
        assert (result["assigned_first"], result["assigned_second"]) == (True, False)
        assert result["executing"] == [result["order_id"]]
        assert result["status"] == "Complete" and result["assigned_to"] == "Module A"
        assert result["status_details"] == "all good" and result["state"] == '{"step": 1}'
        assert result["outputs"] == {"Result": "done-BC-1", "Extra": "True"}
        assert result["completed"] == [result["order_id"]]
        assert result["orders_before"] == [result["order_id"], result["child"]]
        assert result["tree"] == [result["order_id"], result["child"]]
        assert result["templates_after_delete"] == []
        assert result["events"] == [{"id": result["event_id"], "data": '{"Plates": 3}',
                                     "actor": "Python Script"}]
        assert order.createdBy == "bdm" and order.get_input_parameter_value("Barcode") == "BC-1"
        assert order.scheduledStartTime is not None and order.scheduledStartTime.hour == 12

    run(scenario(), timeout=60)


async def _wait_final(ds: DataServicesClient, order_id: str, timeout: float = 30) -> Order:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        order = await ds.get_order(order_id)
        if order.status in (OrderStatus.Complete, OrderStatus.Error, OrderStatus.Canceled):
            return order
        await asyncio.sleep(0.1)
    raise AssertionError(f"order {order_id} not final after {timeout} s: {order}")
