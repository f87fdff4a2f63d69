"""Bad instruments at start, through the real runtime and the Robots panel: a SiLA 2 plate reader
set to plain text whose server (real gRPC on 127.0.0.1) speaks TLS, and a robot agent that dials
in with an old protocol version. Each goes Offline with its cause on its card (instrument, what
differs, the workcell file and line where the file decides it); the good instrument beside them
runs a workflow to Complete."""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # before any protobuf

import asyncio  # noqa: E402
import json  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("sila2")

from conftest import save_screenshot  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from console.bridge import EventBridge  # noqa: E402
from core.drivers import DriverState  # noqa: E402
from core.drivers.agent_protocol import encode  # noqa: E402
from core.drivers.sila_sim import SimulatedSilaServer  # noqa: E402
from core.runtime import Runtime  # noqa: E402
from core.templates import template_from_dict  # noqa: E402
from core.workcell import load_workcell  # noqa: E402
from panels.robots import RobotsPanel  # noqa: E402
from panels.theme import apply_theme  # noqa: E402
from tests.test_drivers_agent import MOVE, until  # noqa: E402
from tests.test_drivers_sila import free_port, workcell_text  # noqa: E402


def _cell_text(port: int) -> str:
    reader = workcell_text(port).split("instruments:\n", 1)[1]
    return f"""\
name: bad input cell
heartbeat_interval: 0.5s
stale_timeout: 60s
instruments:
{reader}  - id: Arm1
    kind: RobotArm
    driver: agent
    options: {{url: "ws://127.0.0.1:0", connect_timeout: 20s}}
    capabilities: {{{MOVE}: 1s, RobotArm.Park: 1s}}
  - id: Sealer1
    kind: Sealer
    driver: simulated
    capabilities: {{Sealer.Seal: 0.2s}}
"""


async def _old_agent(url: str) -> dict:
    """An agent of an older release registering as Arm1 (protocol version 0); the hub's answer."""
    async with connect(url) as ws:
        frame = json.loads(encode("register", {"name": "Arm1", "capabilities": [MOVE, "RobotArm.Park"]})[0])
        frame["v"] = 0
        await ws.send(json.dumps(frame))
        return json.loads(await ws.recv())


def test_bad_sila_and_agent_go_offline_with_their_cause_and_the_good_one_runs(
        tmp_path, data_dir, qtbot, qrun):
    from sila2.server.encryption import generate_self_signed_certificate

    port = free_port()
    path = tmp_path / "bad.yaml"
    path.write_text(_cell_text(port))
    cell = load_workcell(path)
    server_uuid = uuid.uuid4()
    key, cert = generate_self_signed_certificate(server_uuid, "127.0.0.1")
    server = SimulatedSilaServer(cell.instrument("PlateReader1"), private_key=key, cert_chain=cert,
                                 server_uuid=str(server_uuid))  # TLS; the workcell says plain text
    server.start()
    rt = Runtime.build(data_dir, workcell=cell, metrics=False)
    bridge = panel = None
    try:
        hub = rt.agent_hubs[0]
        qrun(hub.start())
        arm_driver = rt.agent_hubs[0].drivers["Arm1"]

        async def old_agent_while_connecting() -> dict:
            await until(lambda: arm_driver.state is DriverState.CONNECTING)
            return await _old_agent(hub.url)

        async def start() -> tuple:
            return await asyncio.gather(rt.start(None), old_agent_while_connecting())

        _, answer = qrun(start(), timeout_ms=15_000)  # well within Arm1's 20 s connect_timeout
        assert answer["payload"]["code"] == "unsupported_version"
        bridge = EventBridge(rt.ledger.bus)
        panel = RobotsPanel(rt, bridge)
        qtbot.addWidget(panel)
        panel.resize(1280, 720)
        panel.show()

        views = {v.id: v for v in rt.instruments()}
        assert views["PlateReader1"].status.name == "Offline"
        assert views["Arm1"].status.name == "Offline"
        reader = panel.cards["PlateReader1"]
        qtbot.waitUntil(lambda: "TLS" in reader.state_detail.full_text(), timeout=10_000)
        text = reader.state_detail.full_text()
        assert reader.state.text() == "Offline", reader.state.text()
        assert f"{path}:11: instruments[0].options.insecure: instrument PlateReader1" in text, text
        assert f"SiLA server 127.0.0.1:{port}" in text and "it may require TLS" in text, text

        arm = panel.cards["Arm1"]
        qtbot.waitUntil(lambda: "version 0" in arm.state_detail.full_text(), timeout=10_000)
        text = arm.state_detail.full_text()
        assert arm.state.text() == "Offline", arm.state.text()
        assert "Arm1: agent at 127.0.0.1:" in text and "protocol version 1 is spoken here" in text, text
        # a narrow card elides the cause; hovering shows all of it
        assert "it may require TLS" in reader.state_detail.toolTip()
        assert "protocol version 1 is spoken here" in arm.state_detail.toolTip()
        app = QApplication.instance()
        try:
            for theme in ("light", "dark"):
                apply_theme(app, theme)
                for size in ((1280, 720), (1920, 1080)):
                    panel.resize(*size)
                    qtbot.wait(100)
                    save_screenshot(panel, f"robots-bad-input-cards-{theme}-{size[0]}")
        finally:
            apply_theme(app, "light")

        # nothing else stopped: the good instrument runs a workflow to Complete
        qrun(rt.engine.publish(template_from_dict({"name": "Seal", "definition": {"steps": [
            {"id": "seal", "kind": "Sealer.Seal", "parameters": {}}]}})))
        run_id = qrun(rt.start_run("Seal", {}, who="test"))
        status = qrun(rt.engine.wait(run_id, timeout=30), timeout_ms=40_000)
        assert status.value == "completed"
        assert {v.id: v for v in rt.instruments()}["Sealer1"].status.name == "Ready"
    finally:
        if panel is not None:
            panel.shutdown()
            panel.close()
        if bridge is not None:
            bridge.close()
        qrun(rt.close(), timeout_ms=30_000)
        server.stop()
