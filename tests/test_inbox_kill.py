"""SIGKILL between an answer and its effect loses nothing: the answer and the step's outputs are
one transaction, and after a restart the run goes on from the answer."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.clock import VirtualClock
from core.engine import Engine, RunStatus, SimulatedExecutor
from core.inbox import Inbox
from core.ledger import Ledger
from core.store import Store

ROOT = Path(__file__).resolve().parent.parent
HELPER = Path(__file__).parent / "helpers" / "inbox_kill.py"
RUNS = 12


def test_sigkill_after_answers_loses_no_answer_and_the_runs_go_on(tmp_path):
    db = tmp_path / "inbox.sqlite3"
    proc = subprocess.Popen([sys.executable, str(HELPER), str(db), str(RUNS)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout is not None
    acknowledged: dict[int, tuple[str, int]] = {}
    kill_after = random.Random(os.getpid()).randint(2, RUNS - 2)
    deadline = time.monotonic() + 60
    while len(acknowledged) < kill_after and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("ANSWERED "):
            _, item, run_id, volume = line.split()
            acknowledged[int(item)] = (run_id, int(volume))
    proc.send_signal(signal.SIGKILL)  # the next answer may be mid-commit; the transfers are running
    proc.wait()
    assert len(acknowledged) == kill_after, "the child never answered enough items"

    async def restart():
        store = Store(db).open()
        assert store.integrity_check() == "ok"
        clock = VirtualClock.for_store(store)
        engine = Engine(Ledger(store), SimulatedExecutor(clock, durations={"*": 5}), clock=clock)
        inbox = Inbox(engine)
        await engine.start()
        await clock.settle()
        answered = {i.id: i for i in inbox.items(state="answered")}
        still_open = inbox.items()
        runs = {}
        for item in [*answered.values(), *still_open]:
            runs[item.run_id] = engine.get_instance(item.run_id)
        for item in still_open:  # what was never committed is still there to answer
            await inbox.answer(item.id, {"volume": 99}, who="morning-shift")
        await clock.run_until(lambda: all(engine.run_status(r) is RunStatus.COMPLETED for r in runs))
        final = {r: engine.get_instance(r) for r in runs}
        await engine.close()
        store.close()
        return answered, still_open, runs, final

    answered, still_open, runs, final = asyncio.run(restart())
    assert len(answered) + len(still_open) == RUNS
    for item_id, (_run_id, volume) in acknowledged.items():
        assert answered[item_id].answer == {"volume": volume}  # every acknowledged answer survived
    for item in answered.values():  # answered <=> the prompt step completed with it, never one without the other
        ask = next(s for s in runs[item.run_id]["steps"] if s["id"] == "ask")
        assert ask["status"] == "completed" and ask["outputs"] == item.answer
    for item in still_open:
        ask = next(s for s in runs[item.run_id]["steps"] if s["id"] == "ask")
        assert ask["status"] != "completed"
    for inst in final.values():
        transfer = next(s for s in inst["steps"] if s["id"] == "transfer")
        assert transfer["status"] == "completed"
