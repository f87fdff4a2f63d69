"""Detail panel."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QWidget

from panels.placeholder import PlannedPanel


class DetailPanel(PlannedPanel):
    """Receives the runtime facade and the per-frame event bridge (constructor injection)."""

    def __init__(self, runtime: Any, bridge: Any, parent: QWidget | None = None) -> None:
        super().__init__("Detail", "Properties, parameters, the run's steps, transition history and why-waiting reasons of the selected order.", parent)
        self.runtime = runtime
        self.bridge = bridge
