"""Metrics panel."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QWidget

from panels.placeholder import PlannedPanel


class MetricsPanel(PlannedPanel):
    """Receives the runtime facade and the per-frame event bridge (constructor injection)."""

    def __init__(self, runtime: Any, bridge: Any, parent: QWidget | None = None) -> None:
        super().__init__("Metrics", "Live charts: throughput, queue depth, per-instrument utilisation, step duration trend, success rate.", parent)
        self.runtime = runtime
        self.bridge = bridge
