"""Child process for the bulk-cancel kill test: starts RUNS runs whose first step never ends,
then cancels them all in bulk (small chunks) and prints ``CHUNK n`` after each committed chunk.

usage: python bulk_cancel_crash.py DATA_DIR RUNS
"""

import asyncio
import sys
from pathlib import Path

from core.clock import SystemClock
from core.engine import SimulatedExecutor
from core.runtime import Runtime

STEPS = {"steps": [{"id": "hold", "kind": "Hold.Forever"},
                   {"id": "b", "kind": "Reader.Read", "depends_on": ["hold"]},
                   {"id": "c", "kind": "Reader.Read", "depends_on": ["hold"]}]}


async def main(data_dir: Path, count: int) -> None:
    executor = SimulatedExecutor(SystemClock(), hang_kinds=["Hold.Forever"])
    runtime = Runtime.build(data_dir, executor=executor, workcell=None, metrics=False)
    runtime.bulk_chunk = 10
    await runtime.start(templates_dir=None)
    await runtime.engine.create_template("Hold", STEPS)
    runs = [await runtime.start_run("Hold", {}, who="lab", allow_duplicate=True) for _ in range(count)]
    while len(executor.calls) < count:  # noqa: ASYNC110 - polling a plain list the executor fills
        await asyncio.sleep(0.01)
    print("READY " + " ".join(runs), flush=True)
    await runtime.bulk("cancel", runs, who="ann", reason="drill",
                       progress=lambda n, total: print(f"CHUNK {n}", flush=True))
    print("DONE", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
