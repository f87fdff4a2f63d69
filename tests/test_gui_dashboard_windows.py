"""The Dashboard alerts on a time window the forecast says will break, before it breaks, and the
alert selects the run; it clears once the forecast no longer sees the risk."""

from __future__ import annotations

from conftest import save_screenshot
from test_gui_dashboard import _start

from console.bridge import EventBridge
from core.forecast import Forecast
from core.templates import template_from_dict
from panels.dashboard import WARNING, DashboardPanel

TIGHT = {"name": "Tight", "definition": {"steps": [
    {"id": "move", "kind": "RobotArm.MovePlate"},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["move"], "start_within": {"after": "move", "max": "15s"}}]}}


def test_a_window_forecast_to_break_is_a_dashboard_alert(store, data_dir, qtbot, qrun):
    rt, clock = _start(store, data_dir, qrun)
    bridge = EventBridge(rt.ledger.bus)
    panel = DashboardPanel(rt, bridge, expanded=True)
    qtbot.addWidget(panel)
    panel.resize(1400, 300)
    panel.show()
    fc = Forecast(rt, samples=2, debounce=3600)
    try:
        qrun(fc.start(history=False))
        panel.set_forecast(fc)
        qrun(rt.engine.publish(template_from_dict(TIGHT)))
        # the arm moves plates 10 s each, the sealer seals 20 s each: the third plate's seal
        # cannot start within 15 s of its move
        runs = [qrun(rt.start_run("Tight", allow_duplicate=True)) for _ in range(3)]
        qrun(fc.refresh())
        qtbot.waitUntil(lambda: any(a.key.startswith("window:") for a in panel.current_alerts))
        alert = next(a for a in panel.current_alerts if a.key.startswith("window:"))
        assert alert.severity == WARNING and alert.order_id in runs
        assert alert.title == f"Window at risk: step seal of run {alert.order_id}"
        assert "is forecast to start" in alert.detail and "after its window closes" in alert.detail
        save_screenshot(panel, "dashboard-window-alert")
        qrun(clock.run_until(lambda: not any(rt.run_is_active(r) for r in runs)))
        qrun(fc.refresh())
        qtbot.waitUntil(lambda: not any(a.key.startswith("window:") for a in panel.current_alerts))
    finally:
        qrun(fc.close())
        panel.shutdown()
        panel.close()
        bridge.close()
        qrun(rt.close())
