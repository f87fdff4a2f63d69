"""The Robots panel and the instrument detail window show how each instrument is reached and who
answered: a real SiLA 2 server (``labconsole sila-sim`` in its own process, gRPC on 127.0.0.1),
a real robot agent process (WebSocket) and a simulated instrument, through the real runtime.

What the panel shows is checked against what the other processes say about themselves (the
server UUID sila-sim prints, the agent process's pid and address), and a restarted SiLA server's
new UUID reaches the window."""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # before any protobuf

import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("sila2")

from conftest import save_screenshot  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from console.bridge import EventBridge  # noqa: E402
from core.runtime import Runtime  # noqa: E402
from core.workcell import load_workcell  # noqa: E402
from panels.identity import connection_line, identity_rows, latency_text  # noqa: E402
from panels.robots import COLUMNS, RobotsPanel  # noqa: E402
from panels.theme import apply_theme  # noqa: E402
from tests.test_drivers_agent import MOVE, Agents  # noqa: E402
from tests.test_drivers_sila import free_port, workcell_text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _cell_text(port: int) -> str:
    reader = workcell_text(port).split("instruments:\n", 1)[1]
    return f"""\
name: identity cell
heartbeat_interval: 0.5s
stale_timeout: 30s
instruments:
{reader}  - id: Arm1
    kind: RobotArm
    driver: agent
    options: {{url: "ws://127.0.0.1:0", connect_timeout: 20s}}
    capabilities: {{{MOVE}: 1s, RobotArm.Park: 1s}}
  - id: Sealer1
    kind: Sealer
    vendor: Agilent
    model: PlateLoc
    driver: simulated
    capabilities: {{Sealer.Seal: 5s}}
"""


class SilaSim:
    """``labconsole sila-sim`` for one workcell file, in its own process."""

    def __init__(self, workcell: Path) -> None:
        self.workcell = workcell
        self.proc: subprocess.Popen[str] | None = None
        self.uuid = ""

    def start(self) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console", "sila-sim", "--workcell", str(self.workcell)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)
        assert line and "SiLA 2 server on" in line[0], f"sila-sim did not start: {line}"
        found = re.search(r"server UUID ([0-9a-f-]{36})", line[0])
        assert found, line[0]
        self.uuid = found.group(1)
        return self.uuid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def lab(tmp_path, data_dir, qtbot, qrun):
    port = free_port()
    path = tmp_path / "identity.yaml"
    path.write_text(_cell_text(port))
    cell = load_workcell(path)
    sim = SilaSim(path)
    sim.start()
    agents = Agents()
    rt = Runtime.build(data_dir, workcell=cell, metrics=False)
    bridge = panel = None
    try:
        hub = rt.agent_hubs[0]
        qrun(hub.start())
        agent = qrun(agents.start(hub.url, "Arm1", f"{MOVE},RobotArm.Park"))
        qrun(rt.start(None), timeout_ms=60_000)
        bridge = EventBridge(rt.ledger.bus)
        panel = RobotsPanel(rt, bridge)
        qtbot.addWidget(panel)
        panel.resize(900, 640)
        panel.show()
        yield rt, panel, sim, agent, port
    finally:
        if panel is not None:
            panel.shutdown()
            panel.close()
        if bridge is not None:
            bridge.close()
        qrun(rt.close(), timeout_ms=30_000)
        qrun(agents.close())
        sim.stop()


def _view(rt, iid):
    return {v.id: v for v in rt.instruments()}[iid]


def test_robots_panel_shows_driver_endpoint_and_identity(lab, qtbot, qrun):
    rt, panel, sim, agent, port = lab
    qtbot.waitUntil(lambda: all(v.status.name == "Ready" for v in rt.instruments()), timeout=30_000)
    qtbot.waitUntil(lambda: _view(rt, "PlateReader1").latency is not None
                    and _view(rt, "Arm1").latency is not None, timeout=10_000)

    # the SiLA server: the identity it reported over gRPC is the one sila-sim printed
    reader = panel.cards["PlateReader1"]
    qtbot.waitUntil(lambda: reader.connection.full_text().startswith(f"SiLA 2 · 127.0.0.1:{port} · "))
    assert reader.connection.full_text().endswith("1.0")  # the server's name and version
    assert sim.uuid in reader.toolTip() and "Server UUID" in reader.toolTip()
    qtbot.waitUntil(lambda: "ms)" in reader.health.full_text())  # the round trip beside its age

    # the agent: its address and host as the agent process registered them
    arm = panel.cards["Arm1"]
    hub_url = rt.agent_hubs[0].url
    qtbot.waitUntil(lambda: arm.connection.full_text().startswith(f"Robot agent · {hub_url} · "))
    facts = dict(identity_rows(_view(rt, "Arm1")))
    assert facts["Process id"] == str(agent.pid)
    assert facts["Host"] == socket.gethostname()
    assert facts["Agent address"].startswith("127.0.0.1:")
    assert facts["Agent address"] in arm.connection.full_text()
    assert facts["Protocol"] == "version 1"

    # the simulated sealer says it is simulated, with its maker from the workcell file
    sealer = dict(identity_rows(_view(rt, "Sealer1")))
    assert panel.cards["Sealer1"].connection.full_text() == "Simulated · in this process"
    assert sealer["Vendor"] == "Agilent" and sealer["Model"] == "PlateLoc"

    # the table has the same line in its Driver column, the identity as its tooltip
    qtbot.mouseClick(panel.view_bar.widgetForAction(panel.table_action), Qt.MouseButton.LeftButton)
    row = panel.model.row_of("PlateReader1")
    cell = panel.model.index(row, COLUMNS.index("Driver"))
    assert cell.data() == connection_line(_view(rt, "PlateReader1"))
    assert sim.uuid in cell.data(Qt.ItemDataRole.ToolTipRole)
    beat = panel.model.index(row, COLUMNS.index("Heartbeat")).data()
    assert latency_text(_view(rt, "PlateReader1").latency).split()[-1] in beat
    save_screenshot(panel, "robots-identity-table")
    qtbot.mouseClick(panel.view_bar.widgetForAction(panel.cards_action), Qt.MouseButton.LeftButton)
    save_screenshot(panel, "robots-identity-cards")

    # the detail window lists every fact, as selectable text
    window = panel.open_details("PlateReader1")
    facts = window.identity_facts()
    assert facts["Driver"] == "SiLA 2 (driver: sila)"
    assert facts["Endpoint"] == f"127.0.0.1:{port} (plain text, this machine only)"
    assert facts["Server UUID"] == sim.uuid
    assert facts["Server name"] == "PlateReader1" and facts["Server type"] == "PlateReader"
    assert facts["Server version"] == "1.0"
    assert "PlateReader" in facts["Features"].split(", ")
    assert facts["Cancel"] == "CancelController"
    assert sim.uuid in window.identity.text() and window.identity.isVisible()
    assert window.identity.textInteractionFlags() & Qt.TextInteractionFlag.TextSelectableByMouse
    app = QApplication.instance()
    try:
        for theme in ("light", "dark"):
            apply_theme(app, theme)
            for size in ((1280, 720), (1920, 1080)):
                window.resize(*size)
                qtbot.wait(50)
                save_screenshot(window, f"instrument-identity-sila-{theme}-{size[0]}")
            panel.resize(1280, 720)
            qtbot.wait(300)
            save_screenshot(panel, f"robots-identity-cards-{theme}")
    finally:
        apply_theme(app, "light")

    # another instrument in the same window: the agent's identity replaces the server's
    panel.open_details("Arm1")
    assert window.identity_facts()["Process id"] == str(agent.pid)
    assert sim.uuid not in window.identity.text()
    save_screenshot(window, "instrument-identity-agent")


def test_a_restarted_sila_server_shows_its_new_uuid(lab, qtbot):
    rt, panel, sim, _agent, _port = lab
    qtbot.waitUntil(lambda: _view(rt, "PlateReader1").status.name == "Ready", timeout=30_000)
    window = panel.open_details("PlateReader1")
    first = sim.uuid
    qtbot.waitUntil(lambda: window.identity_facts().get("Server UUID") == first)

    sim.stop()
    second = sim.start()
    assert second != first
    # the heartbeat sees the new UUID, the driver reconnects and the window follows
    qtbot.waitUntil(lambda: window.identity_facts().get("Server UUID") == second, timeout=30_000)
    qtbot.waitUntil(lambda: second in window.identity.text())  # at the window's next refresh
    assert first not in window.identity.text()
    qtbot.waitUntil(lambda: second in panel.cards["PlateReader1"].toolTip())
