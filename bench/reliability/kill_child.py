"""Child of the kill probe: a burst of runs through the engine, acknowledging what it committed.

usage: python kill_child.py DB_PATH RUNS EXEC_LOG

Creates runs of a two-step workflow (an idempotent transfer, then a read that must not run
twice) until RUNS exist, executes them and resumes whatever an earlier, killed child left in
flight. Prints ``ACK <order id> <seq> <status>`` for every committed order transition (events
are published after COMMIT), ``EXEC <order id> <0|1>`` goes to EXEC_LOG (appended and flushed to
the kernel, so it survives SIGKILL) each time an instrument takes a step, and ``DONE`` once every
run has ended or paused.
"""

import asyncio
import sys
from typing import Any

from core.clock import SystemClock
from core.engine import Engine, SimulatedExecutor
from core.engine.types import StepRequest, started
from core.errors import NotFoundError
from core.events import OrderCreated, OrderStatusChanged
from core.ledger import Ledger
from core.store import Store
from core.templates import template_from_dict

TEMPLATE = {"name": "Burst", "definition": {"steps": [
    {"id": "transfer", "kind": "LiquidHandler.Transfer", "idempotent": True},
    {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["transfer"]},
]}}
SECONDS = {"LiquidHandler.Transfer": 0.05, "PlateReader.ReadPlate": 0.2}
ENDED = ("completed", "failed", "cancelled", "paused")


class LoggedExecutor(SimulatedExecutor):
    """The simulator, writing down each time an instrument takes a step."""

    def __init__(self, log_path: str) -> None:
        super().__init__(SystemClock(), durations=SECONDS)
        self.log = open(log_path, "a", buffering=1)  # noqa: SIM115 - kept open for the process

    async def execute(self, request: StepRequest, progress: Any) -> dict[str, Any]:
        await started(request, "simulator")
        self.log.write(f"EXEC {request.order_id} {int(request.idempotent)}\n")
        self.log.flush()
        await self.clock.sleep(SECONDS[request.kind])
        progress(1.0, None)
        return {"Success": True}


async def main(path: str, runs: int, exec_log: str) -> None:
    store = Store(path).open()
    core = Ledger(store)
    out = sys.stdout
    core.bus.subscribe(lambda e: out.write(f"ACK {e.order_id} 0 {int(e.status)}\n"), OrderCreated)
    core.bus.subscribe(lambda e: out.write(f"ACK {e.order_id} {e.seq} {int(e.to_status)}\n"),
                       OrderStatusChanged)
    engine = Engine(core, LoggedExecutor(exec_log))
    await engine.start()  # resumes what a killed child left in flight
    try:
        engine.templates.get("Burst")
    except NotFoundError:
        await engine.publish(template_from_dict(TEMPLATE))
    existing = store.read_sync(lambda c: c.execute("SELECT count(*) FROM runs").fetchone()[0])
    for _ in range(existing, runs):
        run_id = await engine.create_instance("Burst", {}, allow_duplicate=True)
        await engine.execute_workflow(run_id)
        out.flush()
    while True:
        left = store.read_sync(lambda c: c.execute(
            f"SELECT count(*) FROM runs WHERE status NOT IN ({','.join('?' * len(ENDED))})",
            ENDED).fetchone()[0])
        out.flush()
        if not left:
            break
        await asyncio.sleep(0.05)
    out.write("DONE\n")
    out.flush()
    await engine.close()
    store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
