"""The workflow example of Biosero's OrderScheduler documentation, runnable with either library.

    python bdm_seed_workflow.py URL biosero      # Biosero's biosero-data-models (.bdm-venv)
    python bdm_seed_workflow.py URL labconsole   # labconsole's core.dataservices (.venv)

Only the imports differ between the two; everything below them is the documented example.
Prints one JSON line with what happened.
"""

import asyncio
import json
import sys
from datetime import datetime

URL, LIBRARY = sys.argv[1], sys.argv[2]
if LIBRARY == "biosero":
    from biosero.datamodels.ordering import Order
    from biosero.datamodels.parameters import Parameter, ParameterCollection, ParameterValueType
    from biosero.datamodels.restclients import OrderScheduler
else:
    from core.dataservices import (
        Order,
        OrderScheduler,
        Parameter,
        ParameterCollection,
        ParameterValueType,
    )


async def main():
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

        prepared_plates = completed_order.get_output_parameter_value("Prepared Plates")
        success = completed_order.get_output_parameter_value("Success")
        if not success:
            raise Exception("Order execution failed")

        scheduler.complete_workflow(workflow_order)
    finally:
        await scheduler.close()

    status = completed_order.status
    print(json.dumps({
        "workflow_id": workflow_id,
        "order_id": completed_order.identifier,
        "parent": completed_order.parentIdentifier,
        "status": getattr(status, "name", status),
        "prepared_plates": str(prepared_plates),
        "success": str(success),
    }))


asyncio.run(main())
