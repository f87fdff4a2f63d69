"""An instrument vanishes mid-step, on the virtual clock: what happens to the steps it ran.

usage: python bench/reliability/vanish.py [--rounds N]

Each round the sealer takes two 10-minute steps at once (one idempotent, one not) and then
vanishes, alternately in two ways: its link drops and connecting is refused for a while, or it
goes silent (heartbeats hang, the step never ends). Expected: the idempotent step runs again
once the sealer is back and completes; the other becomes "outcome unknown" and its run pauses
for the operator; no step that must not run twice is sent twice; the sealer is declared
offline within the stale timeout and is Ready again after it returns. (A silent instrument
still accepts connections, so it is reconnected and goes stale again until it answers: the
idempotent step's retry policy, 10 attempts, spans that.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from dispatchkit import WORKCELL, DKit  # noqa: E402

from core.drivers.base import ProgressSink  # noqa: E402
from core.orders import ModuleStatus, Order  # noqa: E402
from core.store import Store  # noqa: E402

CELL = WORKCELL.replace("{id: Sealer, kind: Sealer,", "{id: Sealer, kind: Sealer, max_concurrent: 2,")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="labconsole-vanish-"))
    store = Store(work / "vanish.sqlite3").open()
    kit = DKit(store, workcell=CELL)
    await kit.start()
    driver = kit.drivers["Sealer"]
    sent: Counter[str] = Counter()
    execute = driver.execute

    async def counted(order: Order, progress: ProgressSink) -> dict[str, Any]:
        sent[order.identifier or ""] += 1
        return await execute(order, progress)

    driver.execute = counted  # type: ignore[method-assign]
    for idempotent in (True, False):
        await kit.publish(f"Seal{int(idempotent)}", [{
            "id": "s", "kind": "Sealer.Seal", "idempotent": idempotent, "parameters": {"duration": 600},
            "retry_policy": {"max_attempts": 10, "initial_interval": 10}}], failure_policy="pause")
    sealer = kit.dispatcher.instruments["Sealer"]
    detect: list[float] = []
    outcomes: Counter[tuple[str, str, str]] = Counter()
    orders_of: dict[str, str] = {}
    back_ready = 0
    for round_no in range(args.rounds):
        silent = round_no % 2 == 1
        retried = await kit.run("Seal1")
        once = await kit.run("Seal0")
        await kit.until(lambda: sealer.status is ModuleStatus.Busy and len(sealer.running) == 2)
        await kit.clock.advance(30)
        orders_of[once] = kit.steps(once)["s"]["order_id"]
        gone = kit.clock.now()
        if silent:
            driver.inject(heartbeat="hang")
        else:
            driver.inject(connect_fail=4)
            await driver.disconnect()
        await kit.until(lambda: sealer.status is ModuleStatus.Offline, limit=3600)
        detect.append(kit.clock.now() - gone)
        await kit.clock.advance(120)
        if silent:
            driver.inject(heartbeat="ok")  # it answers again
        await kit.until(lambda: sealer.status in (ModuleStatus.Ready, ModuleStatus.Busy), limit=3600)
        back_ready += 1
        await kit.until_done(retried, once)
        how = "silent" if silent else "link drop"
        outcomes[(how, "idempotent", kit.status(retried).value)] += 1
        outcomes[(how, "non-idempotent", f"{kit.status(once).value}/{kit.steps(once)['s']['status']}")] += 1
    twice = sum(1 for run, oid in orders_of.items() if sent[oid] > 1)
    await kit.engine.close()
    await kit.dispatcher.close()
    store.close()
    expected = {("link drop", "idempotent", "completed"), ("silent", "idempotent", "completed"),
                ("link drop", "non-idempotent", "paused/unknown"), ("silent", "non-idempotent", "paused/unknown")}
    as_expected = set(outcomes) <= expected and sum(outcomes.values()) == 2 * args.rounds
    shown = "; ".join(f"{how} {kind}: {n} {final}" for (how, kind, final), n in sorted(outcomes.items()))
    print("RESULT " + json.dumps({"outcomes": shown, "rows": [
        {"figure": f"instrument vanishing mid-step ({args.rounds} rounds): outcomes",
         "value": shown, "target": "idempotent completed, other unknown", "ok": as_expected},
        {"figure": "instrument vanishing: non-idempotent steps sent twice", "value": f"{twice}",
         "target": "0", "ok": twice == 0},
        {"figure": "instrument vanishing: declared offline after (virtual s), back Ready",
         "value": f"max {max(detect):.0f} s (stale 30 s); {back_ready}/{args.rounds}",
         "target": "<= 35 s", "ok": max(detect) <= 35 and back_ready == args.rounds}]}))


if __name__ == "__main__":
    asyncio.run(main())
