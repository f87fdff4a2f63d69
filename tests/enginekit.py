"""Test kit for the engine: a store, a virtual clock and a simulated executor on a plain loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core.clock import VirtualClock
from core.engine import Engine, RunStatus, SimulatedExecutor
from core.ledger import Ledger
from core.store import Store
from core.templates import template_from_dict


def template(name: str, steps: list[dict[str, Any]], **definition: Any) -> dict[str, Any]:
    inputs = definition.pop("inputs", [])
    return {"name": name, "inputs": inputs, "definition": {"steps": steps, **definition}}


class Kit:
    def __init__(self, store: Store, **executor: Any) -> None:
        self.store = store
        self.ledger = Ledger(store)
        self.clock = VirtualClock.for_store(store)
        store.clock = self.clock
        self.executor = SimulatedExecutor(self.clock, **executor)
        self.engine = Engine(self.ledger, self.executor, clock=self.clock, seed=1)

    async def publish(self, data: dict[str, Any]):
        return await self.engine.publish(template_from_dict(data))

    async def run(self, name: str, inputs: dict[str, Any] | None = None, **kw: Any) -> str:
        kw.setdefault("allow_duplicate", True)
        run_id = await self.engine.create_instance(name, inputs or {}, **kw)
        await self.engine.execute_workflow(run_id)
        return run_id

    async def until_done(self, run_id: str, limit: float = 86400.0) -> float:
        return await self.clock.run_until(
            lambda: self.engine.run_status(run_id) in (RunStatus.COMPLETED, RunStatus.FAILED,
                                                        RunStatus.CANCELLED, RunStatus.PAUSED),
            limit=limit)

    def steps(self, run_id: str) -> dict[str, dict[str, Any]]:
        return {s["id"]: s for s in self.engine.get_instance(run_id)["steps"]}


def run_kit(data_dir: Path, scenario: Callable[[Kit], Awaitable[Any]], **executor: Any) -> Any:
    async def main() -> Any:
        store = Store(data_dir / "engine.sqlite3").open()
        kit = Kit(store, **executor)
        await kit.engine.start()
        try:
            return await scenario(kit)
        finally:
            await kit.engine.close()
            store.close()

    return asyncio.run(main())
