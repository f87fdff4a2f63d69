"""A LIMS creating fleet orders with Biosero's own client (biosero-data-models, in .bdm-venv).

    .bdm-venv/bin/python fleet_lims.py URL COUNT SECONDS

Creates COUNT orders, evenly over SECONDS, cycling through the three fleet templates (a read,
a seal, a read then seal); prints one JSON line: {"ids": [...], "templates": {...}, "seconds": s}.
"""

import json
import sys
import time

from biosero.datamodels.ordering import Order
from biosero.datamodels.restclients import OrderClient

URL, COUNT, SECONDS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
TEMPLATES = ("Fleet Read", "Fleet Seal", "Fleet Read Seal")
client = OrderClient(URL)
ids, kinds = [], {}
start = time.monotonic()
for i in range(COUNT):
    due = start + SECONDS * i / COUNT
    if due > time.monotonic():
        time.sleep(due - time.monotonic())
    template = TEMPLATES[i % len(TEMPLATES)]
    order_id = client.create_order(Order(
        templateName=template, createdBy="lims",
        inputParameters=[{"name": "plate", "value": f"P-{i:05d}", "valueType": "String"}]))
    ids.append(order_id)
    kinds[order_id] = template
print(json.dumps({"ids": ids, "templates": kinds, "seconds": time.monotonic() - start}))
