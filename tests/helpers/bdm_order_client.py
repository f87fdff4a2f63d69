"""Biosero's OrderClient, EventClient and QueryClient calls against a Data Services URL.

    .bdm-venv/bin/python bdm_order_client.py URL

Exercises the requests whose quirks the server must tolerate (double-encoded query values, a base
URL ending in '/', PascalCase bodies with off-by-one enum integers, naive and space-separated
dates, strict Order(**json) and EventMessage(**json) construction). Prints one JSON line.
"""

import json
import sys
from datetime import datetime

from biosero.datamodels.events import EventMessage, EventSearchParameters
from biosero.datamodels.ordering import Order, OrderStatus, OrderTemplate
from biosero.datamodels.restclients import EventClient, OrderClient
from biosero.dataservices.restclient import QueryClient

URL = sys.argv[1]
client = OrderClient(URL + "/")  # a trailing slash: every path becomes //api/...
result = {}

client.register_order_template(OrderTemplate(
    Name="Quirk Template", Description="from OrderClient",
    InputParameters=[{"name": "Barcode", "value": "", "valueType": "String"}],
    OutputParameters=[{"name": "Result", "value": "", "valueType": "String"}]))
templates = client.get_order_templates(limit=1000, offset=0)
result["templates"] = [t.Name for t in templates]

order_id = client.create_order(Order(
    templateName="Quirk Template", createdBy="bdm", scheduledStartTime=datetime(2025, 1, 1, 12, 0),
    inputParameters=[{"name": "Barcode", "value": "BC-1", "valueType": "String"}]))
result["order_id"] = order_id
child_id = client.create_order(Order(templateName="Quirk Template", parentIdentifier=order_id))
result["unassigned"] = [o.identifier for o in client.get_unassigned_orders(limit=10, offset=0)]
result["assigned_first"] = client.try_assign_order(order_id, "Module A")
result["assigned_second"] = client.try_assign_order(order_id, "Module B")
client.update_order_status(order_id, OrderStatus.Running, "started")
result["executing"] = [o.identifier for o in client.get_executing_orders(limit=10, offset=0)]
client.set_output_parameters(order_id, {"Result": "done-BC-1", "Extra": "True"})
client.persist_state(order_id, json.dumps({"step": 1}))
client.update_order_status(order_id, OrderStatus.Complete, "all good")
result["status"] = client.get_order_status(order_id).name
order = client.get_order(order_id)
result["assigned_to"] = order.assignedTo
result["state"] = order.state
result["status_details"] = order.statusDetails
result["outputs"] = {p["name"]: p["value"] for p in order.outputParameters}
result["completed"] = [o.identifier for o in client.get_completed_orders(limit=10, offset=0)]
result["orders_before"] = [o.identifier for o in client.get_orders(datetime(2999, 1, 1), 10, 0)]
result["tree"] = [o.identifier for o in client.get_order_descendants_and_self(order_id)]
client.delete_order_template("Quirk Template")
result["templates_after_delete"] = [t.Name for t in client.get_order_templates(1000, 0)]

event_id = EventClient(URL).publish_event(EventMessage(
    Topic="Biosero.DataModels.Events.InventoryComplete", ActorId="Python Script",
    Data=json.dumps({"Plates": 3}), Subjects=["RACK-1"]))
result["event_id"] = event_id
events = QueryClient(URL).get_events(EventSearchParameters(
    Start=datetime(2000, 1, 1), Topic="Biosero.DataModels.Events.InventoryComplete"), 100, 0)
result["events"] = [{"id": e.EventId, "data": e.Data, "actor": e.ActorId} for e in events]
result["child"] = child_id
print(json.dumps(result))
