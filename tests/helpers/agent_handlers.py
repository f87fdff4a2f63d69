"""Job handlers for agents started by tests/test_drivers_agent.py (``--handler``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from core.agent_client import AgentJob
from core.drivers.base import DriverError


async def handle(job: AgentJob) -> dict[str, Any]:
    """The input ``mode`` chooses what happens; otherwise the built-in simulation runs."""
    mode = job.inputs.get("mode", "simulate")
    if mode == "whoami":
        return {"agent": job.agent, "echo": job.inputs.get("text")}
    if mode == "fail_retryable":
        raise DriverError("gripper lost the plate", code="GripperSlip", retryable=True)
    if mode == "fail_fatal":
        raise DriverError("plate crushed", code="PlateCrushed", retryable=False)
    if mode == "bug":
        return {"x": 1 / 0}
    if mode == "wait":  # until cancelled
        for i in range(1, 10_000):
            job.progress(None, {"tick": i})
            await asyncio.sleep(0.05)
    return await job.simulate()


def handle_blocking(job: AgentJob) -> dict[str, Any]:
    """Blocking code in a worker thread: loops until the console cancels the job."""
    for i in range(1, 2_000):
        if job.cancelled:
            raise DriverError("stopped on request", code="OrderCancelled")
        job.progress(min(i / 100, 1.0), {"tick": i})
        time.sleep(0.02)
    return {"ticks": 2_000}
