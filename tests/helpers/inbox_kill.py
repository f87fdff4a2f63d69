"""Child process for the inbox kill test: answers prompts one after another until it is killed.

usage: python inbox_kill.py DB_PATH RUNS

Starts RUNS runs of a template whose first step is a prompt, then answers their inbox items in a
loop, printing ``ANSWERED <item id> <run id> <volume>`` once each answer has been committed. The
parent SIGKILLs it in the middle of that loop.
"""

import asyncio
import sys

from core.clock import SystemClock
from core.engine import Engine, SimulatedExecutor
from core.inbox import Inbox, InboxChanged
from core.ledger import Ledger
from core.store import Store
from core.templates import template_from_dict

TEMPLATE = {"name": "AskThenTransfer", "definition": {"steps": [
    {"id": "ask", "kind": "prompt", "parameters": {
        "message": "Volume to transfer?", "fields": [{"name": "volume", "type": "number", "min": 1, "max": 500}]}},
    {"id": "transfer", "kind": "LiquidHandler.Transfer", "depends_on": ["ask"], "idempotent": True,
     "input_mapping": {"volume": "step_outputs.ask.volume"}},
]}}


async def main(path: str, runs: int) -> None:
    store = Store(path).open()
    engine = Engine(Ledger(store), SimulatedExecutor(SystemClock(), durations={"*": 60}))
    inbox = Inbox(engine)
    await engine.start()
    await engine.publish(template_from_dict(TEMPLATE))
    for _ in range(runs):
        run_id = await engine.create_instance("AskThenTransfer", {}, allow_duplicate=True)
        await engine.execute_workflow(run_id)
    while len(inbox.items()) < runs:
        await engine.ledger.bus.next_event(InboxChanged, timeout=30)
    print("READY", flush=True)
    for n, item in enumerate(inbox.items()):
        await inbox.answer(item.id, {"volume": 10 + n}, who="night-shift")
        print(f"ANSWERED {item.id} {item.run_id} {10 + n}", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
