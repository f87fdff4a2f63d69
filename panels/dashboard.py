"""Dashboard panel."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QWidget

from panels.placeholder import PlannedPanel


class DashboardPanel(PlannedPanel):
    """Receives the runtime facade and the per-frame event bridge (constructor injection)."""

    def __init__(self, runtime: Any, bridge: Any, parent: QWidget | None = None) -> None:
        super().__init__("Dashboard", "Key figures of the shift: instruments online, jobs completed and failed today, pending and running orders, average execution time, success rate, alerts.", parent)
        self.runtime = runtime
        self.bridge = bridge
