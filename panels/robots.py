"""Robots panel."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QWidget

from panels.placeholder import PlannedPanel


class RobotsPanel(PlannedPanel):
    """Receives the runtime facade and the per-frame event bridge (constructor injection)."""

    def __init__(self, runtime: Any, bridge: Any, parent: QWidget | None = None) -> None:
        super().__init__("Robots", "Every instrument of the workcell: Ready / Busy / Error / Offline, current order and progress, heartbeat age, utilisation; enable, disable, take out of service.", parent)
        self.runtime = runtime
        self.bridge = bridge
