"""A SiLA 2 observable command's progress and intermediate responses, from a real sila2 server on
127.0.0.1 through the driver, dispatcher, engine and event bridge, reach the Detail panel: the
step's bar in the timeline moves and the log lists what the server reported while it ran."""

from __future__ import annotations

import os

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")  # before any protobuf

import pytest  # noqa: E402

pytest.importorskip("sila2")

from conftest import save_screenshot  # noqa: E402

from console.bridge import EventBridge  # noqa: E402
from core.drivers.sila_sim import SimulatedSilaServer  # noqa: E402
from core.runtime import Runtime  # noqa: E402
from core.templates import template_from_dict  # noqa: E402
from core.workcell import load_workcell  # noqa: E402
from panels.detail import DetailPanel  # noqa: E402
from tests.test_drivers_sila import free_port, workcell_text  # noqa: E402


def test_sila_progress_and_intermediate_values_reach_the_detail_panel(tmp_path, data_dir, qtbot, qrun):
    port = free_port()
    path = tmp_path / "sila.yaml"
    path.write_text(workcell_text(port).replace("duration: 0.4s", "duration: 4s")
                    .replace("progress_steps: 4", "progress_steps: 8"))
    cell = load_workcell(path)
    server = SimulatedSilaServer(cell.instrument("PlateReader1"))
    server.start()
    rt = Runtime.build(data_dir, workcell=cell, metrics=False)
    bridge = panel = None
    try:
        qrun(rt.start(None), timeout_ms=60_000)
        bridge = EventBridge(rt.ledger.bus, interval_ms=20)
        panel = DetailPanel(rt, bridge)
        qtbot.addWidget(panel)
        panel.resize(1280, 720)
        panel.show()
        qrun(rt.engine.publish(template_from_dict({"name": "Read", "definition": {"steps": [
            {"id": "read", "kind": "PlateReader.ReadPlate",
             "parameters": {"plate": "P-7", "wavelength": 450}}]}})))
        run_id = qrun(rt.start_run("Read", {}, who="test"))
        qtbot.waitUntil(lambda: rt.engine.get_instance(run_id)["steps"][0]["status"] == "running",
                        timeout=20_000)
        order_id = rt.engine.get_instance(run_id)["steps"][0]["order_id"]
        task = panel.show_order(run_id)
        qtbot.waitUntil(task.done, timeout=10_000)

        # the bar of the running step follows the server's progress (strictly inside 0..1)
        qtbot.waitUntil(lambda: 0 < panel.timeline.progress.get(order_id, 0) < 1, timeout=20_000)
        # the intermediate responses (wells read so far) are in the log as they arrive
        qtbot.waitUntil(lambda: f"{order_id} reports wells_read=" in "\n".join(panel._events),
                        timeout=20_000)
        panel.tabs.setCurrentWidget(panel.log)
        qtbot.waitUntil(lambda: f"{order_id} reports wells_read=" in panel.log.toPlainText(),
                        timeout=10_000)
        save_screenshot(panel, "detail-sila-progress")
        reported = [int(line.rsplit("wells_read=", 1)[1].split(",")[0]) for line in panel._events
                    if "wells_read=" in line]
        assert reported == sorted(reported) and 0 < reported[0] <= 96

        assert qrun(rt.engine.wait(run_id, timeout=30), timeout_ms=40_000).value == "completed"
    finally:
        if panel is not None:
            panel.close()
        if bridge is not None:
            bridge.close()
        qrun(rt.close(), timeout_ms=30_000)
        server.stop()
