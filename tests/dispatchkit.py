"""Test kit: engine + dispatcher + simulated workcell on a virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core.clock import VirtualClock
from core.dispatcher import Dispatcher
from core.engine import Engine, RunStatus
from core.ledger import Ledger
from core.store import Store
from core.templates import template_from_dict
from core.workcell import build_drivers, parse_workcell

WORKCELL = """
name: test cell
seed: 3
heartbeat_interval: 5s
stale_timeout: 30s
instruments:
  - {id: Reader1, kind: PlateReader, driver: simulated, capabilities: {PlateReader.ReadPlate: {duration: 60s, jitter: 0s, duration_input: duration}}}
  - {id: Reader2, kind: PlateReader, driver: simulated, capabilities: {PlateReader.ReadPlate: {duration: 60s, jitter: 0s, duration_input: duration}}}
  - {id: Arm, kind: RobotArm, driver: simulated, capabilities: {RobotArm.MovePlate: {duration: 10s, jitter: 0s, duration_input: duration}}}
  - {id: Sealer, kind: Sealer, driver: simulated, capabilities: {Sealer.Seal: {duration: 20s, jitter: 0s, duration_input: duration}}}
"""


class DKit:
    def __init__(self, store: Store, workcell: str = WORKCELL, strategy: str = "least_loaded",
                 faults: str | None = None) -> None:
        self.store = store
        self.ledger = Ledger(store)
        self.clock = VirtualClock.for_store(store)
        store.clock = self.clock
        self.workcell = parse_workcell(workcell, "cell.yaml")
        self.drivers = build_drivers(self.workcell, self.clock, self.ledger.bus, faults=faults)
        self.dispatcher = Dispatcher(store, self.ledger.bus, self.drivers, clock=self.clock, strategy=strategy,
                                     heartbeat_interval=self.workcell.heartbeat_interval,
                                     stale_timeout=self.workcell.stale_timeout, seed=5)
        self.engine = Engine(self.ledger, self.dispatcher, clock=self.clock, seed=1)

    async def start(self) -> None:
        await self.dispatcher.start()
        await self.engine.start()
        await self.clock.settle()

    async def publish(self, name: str, steps: list[dict[str, Any]], **definition: Any):
        return await self.engine.publish(template_from_dict({"name": name, "definition": {"steps": steps, **definition}}))

    async def run(self, name: str, inputs: dict[str, Any] | None = None, **kw: Any) -> str:
        run_id = await self.engine.create_instance(name, inputs or {}, allow_duplicate=True, **kw)
        await self.engine.execute_workflow(run_id)
        return run_id

    def status(self, run_id: str) -> RunStatus:
        return self.engine.run_status(run_id)

    async def until(self, predicate: Callable[[], bool], limit: float = 86400.0) -> float:
        return await self.clock.run_until(predicate, limit=limit)

    async def until_done(self, *run_ids: str) -> float:
        final = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED)
        return await self.until(lambda: all(self.status(r) in final for r in run_ids))

    def steps(self, run_id: str) -> dict[str, dict[str, Any]]:
        return {s["id"]: s for s in self.engine.get_instance(run_id)["steps"]}


def run_dkit(data_dir: Path, scenario: Callable[[DKit], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        store = Store(data_dir / "dispatch.sqlite3").open()
        kit = DKit(store, **kw)
        await kit.start()
        try:
            return await scenario(kit)
        finally:
            await kit.engine.close()
            await kit.dispatcher.close()
            store.close()

    return asyncio.run(main())
