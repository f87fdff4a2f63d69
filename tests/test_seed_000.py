"""Seed 000 (Biosero's OrderScheduler documentation): every code example, as written, against a
console on the default (demo) workcell with its embedded Data Services and sample templates.

Only the imports differ (``core.dataservices`` for ``biosero.datamodels.*``) and the documented
address ``http://10.0.0.234:8105`` becomes the console's own (``URL``). The demo workcell runs on
a clock 600 times faster than the wall (a 30-minute incubation takes 3 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime

from core.clock import ScaledClock
from core.dataservices import (
    Order,
    OrderScheduler,
    OrderStatus,
    Parameter,
    ParameterCollection,
    ParameterValueType,
)
from core.dataservices.link import DataServicesLink
from core.runtime import DEMO_WORKCELL, SAMPLE_TEMPLATES, Runtime
from core.workcell import load_workcell

logger = logging.getLogger("seed000")
SPEED = 600.0


async def _console(data_dir):
    cell = load_workcell(DEMO_WORKCELL)  # the default workcell; heartbeats at wall-clock pace
    cell = cell.model_copy(update={"heartbeat_interval": 5.0 * SPEED / 100, "stale_timeout": 3600.0 * 3})
    runtime = Runtime.build(data_dir, clock=ScaledClock(SPEED), workcell=cell, seed=7)
    await runtime.start(templates_dir=SAMPLE_TEMPLATES)
    link = DataServicesLink(runtime, poll_interval=0.1, port=0, timeout=5.0)
    await link.start()
    return runtime, link


def _with_console(data_dir, body, timeout=90):
    async def main():
        runtime, link = await _console(data_dir)
        try:
            return await asyncio.wait_for(body(link.state.url, runtime), timeout)
        finally:
            await link.stop()
            await runtime.close()

    return asyncio.run(main())


# ------------------------------------------------------------------ the documented workflow


async def documented_workflow(URL):
    """initiate_workflow, schedule_order, complete_workflow and close, as the seed shows them."""
    scheduler = OrderScheduler(URL, True)
    try:
        workflow_order = await scheduler.initiate_workflow(
            workflow_template_name="Cell Culture Workflow",
            wait=False
        )
        workflow_id = workflow_order.identifier

        cell_prep_params = ParameterCollection([
            Parameter(name="Plate Count", value="4", valueType=ParameterValueType.STRING),
            Parameter(name="Cell Type", value="HEK293", valueType=ParameterValueType.STRING),
            Parameter(name="Cell Density", value="10000.0", valueType=ParameterValueType.STRING)
        ])
        order = Order(
            templateName="Cell Prep",
            scheduledStartTime=datetime.now(),
            inputParameters=cell_prep_params,
            parentIdentifier=workflow_id
        )

        completed_order = await scheduler.schedule_order(order=order, wait=True)

        # Error checking (best practices)
        success = completed_order.get_output_parameter_value("Success")
        if not success:
            error_msg = completed_order.get_output_parameter_value("Error Message")
            raise Exception(f"Order failed: {error_msg}")
        prepared_plates = completed_order.get_output_parameter_value("Prepared Plates")

        scheduler.complete_workflow(workflow_order)
    finally:
        await scheduler.close()
    return workflow_order, completed_order, prepared_plates


def test_the_documented_workflow_runs_on_the_default_workcell(data_dir):
    async def body(url, runtime):
        workflow, completed, plates = await documented_workflow(url)
        return workflow, completed, plates, runtime.store.get_order(workflow.identifier)

    workflow, completed, plates, stored_workflow = _with_console(data_dir, body)
    assert completed.status is OrderStatus.Complete
    assert plates == 4 and completed.get_output_parameter_value("Success") is True
    assert completed.parentIdentifier == workflow.identifier
    assert stored_workflow.status is OrderStatus.Complete  # complete_workflow, awaited by close()
    assert stored_workflow.templateName == "Cell Culture Workflow"


def test_initiate_workflow_with_wait_returns_once_running(data_dir):
    async def body(url, runtime):
        scheduler = OrderScheduler(url, debug=True)
        try:
            workflow_order = await scheduler.initiate_workflow("Cell Culture Workflow", wait=True)
            scheduler.complete_workflow(workflow_order)
        finally:
            await scheduler.close()
        return workflow_order

    workflow = _with_console(data_dir, body)
    assert workflow.status is OrderStatus.Running and workflow.identifier


def test_a_failed_order_is_caught_by_the_success_check(data_dir):
    """The "check Success" pattern: a Cell Prep whose inputs are wrong comes back in Error."""

    async def body(url, runtime):
        scheduler = OrderScheduler(url, debug=True)
        try:
            order = await scheduler.schedule_order(Order(templateName="Cell Prep", inputParameters=[
                {"name": "Plate Count", "value": "0"}]), wait=True)
        finally:
            await scheduler.close()
        try:
            if not order.get_output_parameter_value("Success"):
                raise Exception("Order execution failed")
        except Exception as e:
            return order, str(e)
        return order, None

    order, raised = _with_console(data_dir, body)
    assert raised == "Order execution failed"
    assert order.status is OrderStatus.Error
    assert "Plate Count must be at least 1, got 0" in (order.statusDetails or "")


# ------------------------------------------------------------------ the smaller examples


def test_order_usage_example_and_parameter_collections():
    workflow_id = "Order_00001"
    # Create an order
    order = Order(
        templateName="Cell Prep",
        scheduledStartTime=datetime.now(),
        inputParameters=[
            {"name": "Plate Count", "value": "4"},
            {"name": "Cell Type", "value": "HEK293"}
        ],
        parentIdentifier=workflow_id
    )

    # After execution, retrieve results
    prepared_plates = order.get_output_parameter_value("Prepared Plates")
    success = order.get_output_parameter_value("Success")
    plate_count_input = order.get_input_parameter_value("Plate Count")
    assert (prepared_plates, success, plate_count_input) == (None, None, "4")

    params = ParameterCollection([
        Parameter(name="Plate Count", value="4", valueType=ParameterValueType.STRING),
        Parameter(name="Cell Type", value="HEK293", valueType=ParameterValueType.STRING),
        Parameter(name="Cell Density", value="10000.0", valueType=ParameterValueType.STRING)
    ])
    assert [p.name for p in params] == ["Plate Count", "Cell Type", "Cell Density"]

    data = {"wells": 96}
    params = ParameterCollection([
        Parameter(name="Numeric Value", value=str(123.45), valueType=ParameterValueType.STRING),
        Parameter(name="JSON Data", value=json.dumps(data), valueType=ParameterValueType.STRING)
    ])
    assert Order(inputParameters=params).get_input_parameter_value("JSON Data") == '{"wells": 96}'
    again = Order.from_dict({"templateName": "Cell Prep", "parentIdentifier": workflow_id})
    assert again.parentIdentifier == workflow_id


def test_error_handling_examples(data_dir, caplog):
    async def body(url, runtime):
        scheduler = OrderScheduler(url, debug=True)
        try:
            try:
                workflow_order = await scheduler.initiate_workflow("Invalid Template")
            except Exception as e:
                logger.error(f"Failed to initiate workflow: {e}")
                workflow_order = None
        finally:
            await scheduler.close()
        try:
            scheduler = OrderScheduler("http://invalid-url:8105")
        except Exception as e:
            logger.error(f"Failed to connect to Data Services: {e}")
        await scheduler.close()
        return workflow_order

    with caplog.at_level(logging.ERROR, logger="seed000"):
        assert _with_console(data_dir, body) is None
    message = caplog.records[0].getMessage()
    assert message.startswith("Failed to initiate workflow: ") and "'Invalid Template'" in message
    assert "'Cell Culture Workflow'" in message  # the known templates are named


def test_logging_configuration_example():
    from rich.logging import RichHandler

    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    root.handlers[:] = []  # as in a fresh script
    try:
        logging.basicConfig(
            level=logging.INFO,
            format="%(message)s",
            datefmt="[%X]",
            handlers=[RichHandler(rich_tracebacks=True)]
        )
        assert any(isinstance(h, RichHandler) for h in root.handlers)
    finally:
        root.handlers[:] = before
        root.setLevel(level)
