"""An instrument that loses a command mid-step through the whole console core (runtime,
dispatcher, engine, store) against a real SiLA 2 server on 127.0.0.1: when the server restarts
while a step runs, the step's outcome is unknown. An idempotent step simply runs again under its
retry policy; any other step waits for the operator as "outcome unknown"."""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # before any protobuf

import asyncio  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("sila2")

from core.drivers.faults import Faults  # noqa: E402
from core.drivers.sila_sim import SimulatedSilaServer  # noqa: E402
from core.workcell import load_workcell  # noqa: E402
from tests.test_drivers_sila import free_port, workcell_text  # noqa: E402


async def until(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def restart_mid_step(tmp_path: Path, data_dir: Path, *, idempotent: bool) -> dict[str, Any]:
    """Run one ReadPlate step (five attempts allowed, while the driver reconnects), restart the SiLA server while it runs;
    the run as stored once it ends or waits for the operator."""
    from core.runtime import Runtime
    from core.templates import template_from_dict

    port = free_port()
    path = tmp_path / "sila.yaml"
    path.write_text(workcell_text(port).replace("name: SiLA test cell\n",
                                                "name: SiLA test cell\nheartbeat_interval: 0.5s\n"))
    cell = load_workcell(path)
    server = SimulatedSilaServer(cell.instrument("PlateReader1"), faults=Faults(hang=True))
    server.start()
    result: dict[str, Any] = {}

    async def main() -> None:
        rt = Runtime.build(data_dir, workcell=cell, metrics=False)
        try:
            await rt.start(None)
            step: dict[str, Any] = {"id": "read", "kind": "PlateReader.ReadPlate",
                                    "parameters": {"plate": "P-9", "wavelength": 450},
                                    "retry_policy": {"max_attempts": 5, "initial_interval": 0.5, "jitter": 0}}
            if idempotent:
                step["idempotent"] = True
            await rt.engine.publish(template_from_dict({"name": "Read", "definition": {"steps": [step]}}))
            run_id = await rt.start_run("Read", {}, who="test")
            await until(lambda: bool(server._executions))  # the command runs on the server
            server.faults = Faults()  # after the restart, commands run normally
            await asyncio.to_thread(server.restart)
            status = await rt.engine.wait(run_id, timeout=60)
            result["status"] = status.value
            result["run"] = rt.engine.get_instance(run_id)
        finally:
            await rt.close()

    try:
        asyncio.run(asyncio.wait_for(main(), 90))
    finally:
        server.stop()
    return result


def test_idempotent_step_runs_again_after_a_server_restart(tmp_path, data_dir):
    result = restart_mid_step(tmp_path, data_dir, idempotent=True)
    step = result["run"]["steps"][0]
    assert result["status"] == "completed", (step["status"], step["attempt"], step["error"], step.get("error_code"))
    assert step["attempt"] >= 2 and len(step["outputs"]["well_values"]) == 96


def test_non_idempotent_step_is_outcome_unknown_after_a_server_restart(tmp_path, data_dir):
    result = restart_mid_step(tmp_path, data_dir, idempotent=False)
    step = result["run"]["steps"][0]
    assert result["status"] == "paused", step
    assert step["status"] == "unknown" and step["attempt"] == 1, step
    assert "PlateReader1" in step["error"], step
