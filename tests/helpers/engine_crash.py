"""Child process for the engine crash test: runs a workflow and reports step states on stdout.

usage: python engine_crash.py DB_PATH

Prints ``STEP <id> <status>`` after each committed step change. The parent SIGKILLs it while
steps are running.
"""

import asyncio
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


async def main(path: str) -> None:
    store = Store(path).open()
    core = Ledger(store)
    core.bus.subscribe(lambda e: print(f"STEP {e.step_id} {e.status}", flush=True), StepChanged)
    executor = SimulatedExecutor(SystemClock(), durations={"LiquidHandler.Transfer": 0.05, "*": 60})
    engine = Engine(core, executor)
    await engine.start()
    await engine.publish(template_from_dict(TEMPLATE))
    run_id = await engine.create_instance("Crash", {})
    print(f"RUN {run_id}", flush=True)
    await engine.execute_workflow(run_id)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
