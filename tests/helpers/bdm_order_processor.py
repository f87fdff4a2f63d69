"""A Python module written against Biosero's adapter API (TemplateRegistrar + OrderProcessor).

    .bdm-venv/bin/python bdm_order_processor.py URL

Registers its action templates, then polls for orders and executes them until killed. Prints
``READY`` once the templates are registered and polling starts.
"""

import sys
import threading
import time
import types

from biosero.datamodels.adapter import OrderProcessor, TemplateRegistrar, parameter

URL = sys.argv[1]

action_templates = types.ModuleType("action_templates")


@parameter(name="Read Barcode", inputs=["Barcode", "Volume", "Verify"], outputs=["Result", "Ok"],
           category="Python Tests", color="#00FF00")
def read_barcode(barcode: str, volume: float, verify: bool) -> tuple[str, bool]:
    """Stub: only its signature and decorator matter."""


@parameter(name="Always Fails", inputs=["Reason"], outputs=["Never"])
def always_fails(reason: str) -> str:
    """Stub."""


action_templates.read_barcode = read_barcode
action_templates.always_fails = always_fails


class Actions:
    async def read_barcode(self, order, barcode, volume, verify):
        return f"read-{barcode}-{volume * 2}-{verify}", True

    async def always_fails(self, order, reason):
        raise RuntimeError(reason)


TemplateRegistrar(URL, action_templates).register_all_templates()
processor = OrderProcessor(URL, action_templates, Actions(), adapter_id="PY-ADAPTER",
                           adapter_name="Python Adapter")
threading.Thread(target=processor.poll_endpoint, daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(1)
