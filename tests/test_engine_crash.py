"""SIGKILL the engine mid-run; on restart finished steps are kept, running ones handled safely."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.clock import VirtualClock
from core.engine import Engine, RunStatus, SimulatedExecutor
from core.ledger import Ledger
from core.orders import OrderStatus
from core.store import Store

ROOT = Path(__file__).resolve().parent.parent
HELPER = Path(__file__).parent / "helpers" / "engine_crash.py"


def test_restart_resumes_runs_without_rerunning_finished_steps(tmp_path):
    db = tmp_path / "crash.sqlite3"
    proc = subprocess.Popen([sys.executable, str(HELPER), str(db)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None
    run_id, running = None, set()
    deadline = time.monotonic() + 60
    while not {"read", "move"} <= running and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("RUN "):
            run_id = line.split()[1]
        elif line.startswith("STEP "):
            _, step, status = line.split()[:3]
            if status == "running":
                running.add(step)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run_id and {"read", "move"} <= running, "the child never got both steps running"

    async def restart():
        store = Store(db).open()
        clock = VirtualClock.for_store(store)
        executor = SimulatedExecutor(clock, durations={"*": 30})
        engine = Engine(Ledger(store), executor, clock=clock)
        await engine.start()
        def steps():
            return {s["id"]: s["status"] for s in engine.get_instance(run_id)["steps"]}

        await clock.run_until(lambda: steps()["move"] == "completed")
        assert engine.run_status(run_id) is RunStatus.PAUSED
        after_restart = steps()
        rerun = [c.step_id for c in executor.calls]
        await engine.retry_step(run_id, "read", who="operator", reason="checked the reader: no read happened")
        await clock.run_until(lambda: engine.run_status(run_id) is RunStatus.COMPLETED)
        final = engine.get_instance(run_id)
        await engine.close()
        store.close()
        return after_restart, rerun, final, executor

    after_restart, rerun, final, executor = asyncio.run(restart())
    # prep had completed: kept; move is idempotent: re-run; read is not: outcome unknown, run paused
    assert after_restart == {"prep": "completed", "read": "unknown", "move": "completed", "seal": "pending"}
    assert rerun == ["move"]
    assert final["status"] == "completed"
    assert [c.step_id for c in executor.calls] == ["move", "read", "seal"]
    store = Store(db).open()
    read_order = next(s["order_id"] for s in final["steps"] if s["id"] == "read")
    log = [(t.to_status, t.why) for t in store.transitions(read_order)]
    assert (OrderStatus.Error, "outcome unknown: the console stopped while this step was executing "
            "on simulator") in log
    assert store.integrity_check() == "ok"
    store.close()
