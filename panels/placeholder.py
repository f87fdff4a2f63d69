"""A panel frame that says what will appear in it (for panels not built yet)."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget


class PlannedPanel(QWidget):
    def __init__(self, title: str, description: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        label = QLabel(f"<h3>{title}</h3><p>{description}</p><p><i>Not built yet.</i></p>", self)
        label.setWordWrap(True)
        label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        label.setStyleSheet("color: palette(mid);")
        layout = QVBoxLayout(self)
        layout.addWidget(label)
