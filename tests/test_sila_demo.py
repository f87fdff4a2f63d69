"""SiLA instruments marked ``simulate: true`` are served by a ``labconsole sila-sim`` child process
that the console starts before connecting (console/sila_demo.py): real gRPC servers on
127.0.0.1, stopped with the console, never started twice, refused off this machine."""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # before any protobuf

import asyncio  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("sila2")

from console.sila_demo import SilaSimulators, simulated_ids  # noqa: E402
from core.clock import SystemClock  # noqa: E402
from core.drivers import InstrumentUnavailable  # noqa: E402
from core.errors import WorkcellError  # noqa: E402
from core.workcell import build_drivers, load_workcell  # noqa: E402
from tests.test_drivers_sila import free_port, read, workcell_text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _cell(tmp_path: Path, port: int, host: str = "127.0.0.1", name: str = "demo.yaml"):
    path = tmp_path / name
    path.write_text(workcell_text(port, security="insecure: true\n      simulate: true", host=host))
    return load_workcell(path)


def test_the_console_serves_its_simulated_sila_instruments(tmp_path):
    port = free_port()
    cell = _cell(tmp_path, port)
    assert simulated_ids(cell) == ["PlateReader1"]

    async def main():
        sims = await SilaSimulators(cell).start()
        driver = build_drivers(cell, SystemClock())["PlateReader1"]
        try:
            assert sims.problem == "" and sims.proc is not None
            assert sims.served["PlateReader1"].startswith(f"SiLA 2 server on 127.0.0.1:{port}")
            await driver.connect()
            out = await driver.execute(read("demo-1"), lambda f, v: None)
            assert len(out["well_values"]) == 96
            assert dict(driver.info.identity)["Server UUID"] in sims.served["PlateReader1"]

            # a second console (or a hand-started sila-sim) finds the port taken: it says so
            # and leaves the running servers alone
            again = await SilaSimulators(cell).start()
            assert again.proc is None and f"127.0.0.1:{port}" in again.problem
            assert await driver.heartbeat() >= 0
        finally:
            await driver.disconnect()
            await sims.stop()
        assert sims.proc is None
        with pytest.raises(InstrumentUnavailable, match=f"127.0.0.1:{port}"):
            await build_drivers(cell, SystemClock())["PlateReader1"].connect()  # stopped with it

    asyncio.run(asyncio.wait_for(main(), 120))


def test_the_servers_stop_when_the_console_is_gone(tmp_path):
    cell = _cell(tmp_path, free_port())
    proc = subprocess.run(
        [sys.executable, "-m", "console", "sila-sim", "--workcell", str(cell.source), "--only",
         "PlateReader1", "--parent", "999999999"], cwd=ROOT, capture_output=True, text=True,
        timeout=90, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0 and "SiLA 2 server on" in proc.stdout  # started, then saw no parent
    bad = subprocess.run(
        [sys.executable, "-m", "console", "sila-sim", "--workcell", str(cell.source), "--only", "Reader9"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert bad.returncode == 2 and "no SiLA instrument Reader9 (SiLA instruments: PlateReader1)" in bad.stderr


def test_simulate_is_refused_off_this_machine(tmp_path):
    with pytest.raises(WorkcellError) as err:
        _cell(tmp_path, 50101, host="reader-1.lab.example")
    text = str(err.value) + " ".join(str(p) for p in err.value.problems)
    assert "simulate is allowed only for a server on this machine" in text and "demo.yaml:" in text


def test_the_demo_sila_workcell_is_served_by_the_console():
    cell = load_workcell(ROOT / "resources" / "workcells" / "demo-sila.yaml")
    sila = [i.id for i in cell.instruments if i.driver == "sila"]
    assert sila and simulated_ids(cell) == sila
