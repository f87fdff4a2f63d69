"""Child process for the engine crash test: runs a workflow and reports step states on stdout.

usage: python engine_crash.py DB_PATH [TEMPLATE_JSON ...]

Publishes the templates given as JSON (the ``Crash`` template below by default) and starts one
run of each, printing ``RUN <run id> <template>``. Prints ``STEP <id> <status> <run id>`` after
each committed step change. The parent SIGKILLs it while steps are running.
"""

import asyncio
import json
import sys

from core.clock import SystemClock
from core.engine import Engine, SimulatedExecutor
from core.events import StepChanged
from core.ledger import Ledger
from core.store import Store
from core.templates import template_from_dict

TEMPLATE = {"name": "Crash", "definition": {"steps": [
    {"id": "prep", "kind": "LiquidHandler.Transfer", "idempotent": True},
    {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["prep"]},
    {"id": "move", "kind": "RobotArm.MovePlate", "depends_on": ["prep"], "idempotent": True},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read", "move"]},
]}}


async def main(path: str, templates: list[dict]) -> None:
    store = Store(path).open()
    core = Ledger(store)
    core.bus.subscribe(lambda e: print(f"STEP {e.step_id} {e.status} {e.run_id}", flush=True), StepChanged)
    executor = SimulatedExecutor(SystemClock(), durations={"LiquidHandler.Transfer": 0.05, "*": 60})
    engine = Engine(core, executor)
    await engine.start()
    for data in templates:
        template = await engine.publish(template_from_dict(data))
        run_id = await engine.create_instance(template.name, {})
        print(f"RUN {run_id} {template.name}", flush=True)
        await engine.execute_workflow(run_id)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], [json.loads(arg) for arg in sys.argv[2:]] or [TEMPLATE]))
