"""Steps without instruments: simulated durations and seeded failures (tests, rehearsals)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.clock import Clock
from core.drivers.base import ProgressSink
from core.engine.types import StepFailure, StepRequest, started


class SimulatedExecutor:
    """Runs steps with simulated durations and seeded failures (no instruments needed).

    ``durations`` maps a step kind (or ``"*"``) to seconds; ``failure_rate`` fails attempts at
    random (seeded); ``fail_kinds`` maps a kind to the number of its next attempts that fail;
    ``hang_kinds`` never finish (until cancelled or timed out).
    """

    def __init__(self, clock: Clock, *, durations: Mapping[str, float] | None = None,
                 failure_rate: float = 0.0, seed: int = 0, fail_kinds: Mapping[str, int] | None = None,
                 hang_kinds: Iterable[str] = (), outputs: Callable[[StepRequest], dict[str, Any]] | None = None
                 ) -> None:
        self.clock = clock
        self.durations = dict(durations or {})
        self.failure_rate = failure_rate
        self.rng = random.Random(seed)
        self.fail_kinds = dict(fail_kinds or {})
        self.hang_kinds = set(hang_kinds)
        self.outputs = outputs
        self.calls: list[StepRequest] = []
        self.cancelled: list[str] = []

    async def execute(self, request: StepRequest, progress: ProgressSink) -> dict[str, Any]:
        self.calls.append(request)
        await started(request, "simulator")
        if request.kind in self.hang_kinds:
            await asyncio.Event().wait()
        seconds = self.durations.get(request.kind, self.durations.get("*", 0.0))
        if seconds:
            await self.clock.sleep(seconds)
        if self.fail_kinds.get(request.kind, 0) > 0:
            self.fail_kinds[request.kind] -= 1
            raise StepFailure(f"{request.kind} failed (simulated)", "SimulatedFailure")
        if self.failure_rate and self.rng.random() < self.failure_rate:
            raise StepFailure(f"{request.kind} failed (simulated, rate {self.failure_rate})",
                              "SimulatedFailure")
        progress(1.0, None)
        if self.outputs is not None:
            return self.outputs(request)
        return {"Success": True, **{f"in_{k}": v for k, v in request.parameters.items()}}

    async def cancel(self, request: StepRequest) -> bool:
        self.cancelled.append(request.order_id)
        return True
