"""Shared look: status colours with a distinct glyph per status (readable without colour)."""

from __future__ import annotations

from functools import cache

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPixmap

from core.orders import OrderStatus

# Okabe-Ito based palette: distinguishable under the common colour-vision deficiencies.
STATUS_STYLE: dict[OrderStatus, tuple[str, str]] = {
    OrderStatus.Created: ("#8a8f98", "○"),
    OrderStatus.Invalid: ("#cc79a7", "!"),
    OrderStatus.Validated: ("#56b4e9", "✓"),
    OrderStatus.Scheduled: ("#56b4e9", "◷"),
    OrderStatus.Running: ("#0072b2", "▶"),
    OrderStatus.Paused: ("#e69f00", "‖"),
    OrderStatus.Error: ("#d55e00", "✕"),
    OrderStatus.Complete: ("#009e73", "✓"),
    OrderStatus.Canceled: ("#6b6b6b", "⊘"),
    OrderStatus.Consolidated: ("#8a8f98", "≡"),
    OrderStatus.Unknown: ("#8a8f98", "?"),
}


def status_color(status: OrderStatus) -> QColor:
    return QColor(STATUS_STYLE[status][0])


@cache
def status_icon(status: OrderStatus, size: int = 16) -> QIcon:
    colour, glyph = STATUS_STYLE[status]
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor(colour))
    p.drawEllipse(QRectF(0.5, 0.5, size - 1, size - 1))
    font = QFont("DejaVu Sans")
    font.setPixelSize(int(size * 0.7))
    font.setBold(True)
    p.setFont(font)
    p.setPen(QColor("white"))
    p.drawText(QRectF(0, 0, size, size), Qt.AlignmentFlag.AlignCenter, glyph)
    p.end()
    return QIcon(pix)
