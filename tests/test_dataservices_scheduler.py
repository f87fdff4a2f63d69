"""OrderScheduler (Biosero's workflow-script API) in-process: outcomes, errors, waiting.

The documented happy path, run as a script with only the import changed, is in
test_dataservices_bdm.py; these tests cover what Biosero's scheduler gets wrong.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers.bdm_support import ModuleExecutor, run, serving

from core.dataservices import (
    DataServicesClient,
    Order,
    OrderFailedError,
    OrderScheduler,
    OrderStatus,
    OrderTemplate,
    OrderTemplateNotFoundError,
    Parameter,
    ParameterCollection,
    ParameterValueType,
    WorkflowOrder,
)
from core.errors import DataServicesError, LabconsoleError, ModelError

TEMPLATES = [
    OrderTemplate(name="Assay Workflow"),
    OrderTemplate(name="Read Plate", outputParameters=[
        Parameter(name="OD", valueType=ParameterValueType.DOUBLE),
        Parameter(name="Success", value="False", valueType=ParameterValueType.BOOLEAN)]),
]


def read_plate(order: Order) -> dict[str, object]:
    barcode = order.get_input_parameter_value("Barcode")
    if barcode == "JAMMED":
        raise RuntimeError("plate stuck in the reader drawer")
    return {"OD": 0.42, "Success": True}


async def _setup(url: str) -> tuple[DataServicesClient, ModuleExecutor]:
    ds = DataServicesClient(url, timeout=5)
    for template in TEMPLATES:
        await ds.register_template(template)
    executor = ModuleExecutor(ds, "Reader-1", {"Read Plate": read_plate})
    await executor.start()
    return ds, executor


def test_a_workflow_runs_and_completes(store):
    async def scenario():
        async with serving(store) as server:
            ds, executor = await _setup(server.url)
            scheduler = OrderScheduler(server.url, debug=True, poll_interval=0.1)
            try:
                opened = await asyncio.wait_for(scheduler.initiate_workflow("Assay Workflow", wait=True), 10)
                assert opened.status is OrderStatus.Running  # returns once running, not when final
                assert opened.assignedTo == "OrderScheduler"  # no module takes the workflow order
                scheduler.complete_workflow(opened)
                workflow = await scheduler.initiate_workflow("assay workflow")
                assert isinstance(workflow, WorkflowOrder)
                assert workflow.status is OrderStatus.Running
                assert workflow.templateName == "Assay Workflow"
                started = time.monotonic()
                done = await scheduler.schedule_order(Order(
                    templateName="Read Plate", parentIdentifier=workflow.identifier,
                    inputParameters=ParameterCollection([Parameter(name="Barcode", value="P-1")])))
                assert time.monotonic() - started < 2  # polls fast at first, not every 5 s
                assert done.status is OrderStatus.Complete
                assert done.get_output_parameter_value("OD") == 0.42
                assert done.get_output_parameter_value("Success") is True
                queued = await scheduler.schedule_order(Order(templateName="Read Plate"), wait=False)
                assert queued.status in (OrderStatus.Created, OrderStatus.Running, OrderStatus.Complete)
                scheduler.complete_workflow(workflow)  # not awaited, as in Biosero's examples
            finally:
                await scheduler.close()  # waits for the completion to land
                await executor.stop()
            final = await ds.get_order(workflow.identifier or "")
            await ds.close()
            assert final.status is OrderStatus.Complete
            assert final.statusDetails == "Workflow Assay Workflow completed successfully"

    run(scenario())


def test_a_failed_order_is_returned_for_the_success_check_or_raised_on_request(store):
    async def scenario():
        async with serving(store) as server:
            ds, executor = await _setup(server.url)
            scheduler = OrderScheduler(server.url, poll_interval=0.1)
            jammed = [{"name": "Barcode", "value": "JAMMED"}]
            try:
                # the seed's "check Success" pattern: the finished order comes back, not an exception
                order = await scheduler.schedule_order(Order(templateName="Read Plate", inputParameters=jammed))
                assert order.status is OrderStatus.Error
                assert order.statusDetails == "plate stuck in the reader drawer"
                assert not order.get_output_parameter_value("Success")
                with pytest.raises(OrderFailedError) as err:
                    await scheduler.schedule_order(Order(templateName="Read Plate", inputParameters=jammed),
                                                   raise_on_failure=True)
            finally:
                await scheduler.close()
                await executor.stop()
                await ds.close()
            assert isinstance(err.value, LabconsoleError)
            assert err.value.status is OrderStatus.Error
            assert err.value.status_details == "plate stuck in the reader drawer"
            assert "plate stuck in the reader drawer" in str(err.value)
            assert err.value.order.identifier in str(err.value)

    run(scenario())


def test_a_canceled_order_ends_the_wait(store):
    async def scenario():
        async with serving(store) as server:
            ds, executor = await _setup(server.url)
            await executor.stop()  # nobody runs the order: only the operator's cancel ends it
            scheduler = OrderScheduler(server.url, poll_interval=0.05)
            try:
                waiting = asyncio.ensure_future(scheduler.schedule_order(Order(templateName="Read Plate")))
                for _ in range(100):
                    pending = await ds.unassigned_orders()
                    if pending:
                        break
                    await asyncio.sleep(0.02)
                await ds.update_order_status(pending[0].identifier or "", OrderStatus.Canceled,
                                             "operator aborted the run")
                order = await asyncio.wait_for(waiting, 5)
                assert order.status is OrderStatus.Canceled
                assert order.statusDetails == "operator aborted the run"
            finally:
                await scheduler.close()
                await ds.close()

    run(scenario())


def test_an_unknown_template_is_reported_with_the_known_ones(store):
    async def scenario():
        async with serving(store) as server:
            ds, executor = await _setup(server.url)
            await executor.stop()
            await ds.close()
            scheduler = OrderScheduler(server.url)
            try:
                with pytest.raises(OrderTemplateNotFoundError) as err:
                    await scheduler.initiate_workflow("Invalid Template")
                assert "'Invalid Template'" in str(err.value)
                assert "'Assay Workflow'" in str(err.value) and "'Read Plate'" in str(err.value)
                with pytest.raises(OrderTemplateNotFoundError):
                    await scheduler.schedule_order(Order(templateName="Nope"))
            finally:
                await scheduler.close()
            assert store.count_orders() == 0

    run(scenario())


def test_an_unreachable_scheduler_fails_clearly():
    async def scenario():
        scheduler = OrderScheduler("http://127.0.0.1:9", demo=True, timeout=1)
        assert scheduler.debug is True
        try:
            with pytest.raises(DataServicesError) as err:
                await scheduler.initiate_workflow("Assay Workflow")
            assert "http://127.0.0.1:9" in str(err.value) and "cannot connect" in str(err.value)
        finally:
            await scheduler.close()

    run(scenario())


def test_a_failed_completion_surfaces_at_close(store):
    async def scenario():
        async with serving(store) as server:
            scheduler = OrderScheduler(server.url)
            scheduler.complete_workflow(WorkflowOrder(identifier="Order_00404", templateName="W"))
            with pytest.raises(LabconsoleError, match="Order_00404"):
                await scheduler.close()

    run(scenario())


def test_schedule_order_takes_a_dict_of_order_fields(store):
    async def scenario():
        async with serving(store) as server:
            ds, executor = await _setup(server.url)
            scheduler = OrderScheduler(server.url, poll_interval=0.1)
            try:
                done = await scheduler.schedule_order({"templateName": "Read Plate", "inputParameters": [
                    {"name": "Barcode", "value": "P-7"}]})
                with pytest.raises(ModelError, match=r"schedule_order\(order\): templateNmae: not a field"):
                    await scheduler.schedule_order({"templateNmae": "Read Plate"})
                with pytest.raises(TypeError, match="expects an Order .* not list"):
                    await scheduler.schedule_order(["Read Plate"])  # type: ignore[arg-type]
            finally:
                await scheduler.close()
                await executor.stop()
                await ds.close()
            return done

    done = run(scenario())
    assert done.status is OrderStatus.Complete and done.get_input_parameter_value("Barcode") == "P-7"
