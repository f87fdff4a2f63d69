"""Shared look: icons, and one colour **plus** one mark for every status.

Every order status and every instrument state has a colour from the current theme
(:mod:`panels.theme`, Okabe-Ito based) and a distinct white mark on a disc (``badge-*.svg`` in
``resources/icons``): a check for Complete/Ready, a play triangle for Running/Busy, a cross for
Error, a power sign for Offline, a wrench for out of service ... so a status stays readable for
colour-blind operators and on a monochrome print-out.

Icons are SVG files drawn in ``currentColor``; :func:`icon` renders them in the theme's icon
colour (or a given one) and caches the result per colour and size.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

from PySide6.QtCore import QByteArray, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

from core.dispatcher import InstrumentView
from core.dispatcher import instrument_state as shown_state
from core.orders import ModuleStatus, OrderStatus
from panels.theme import current_theme

ICONS_DIR = Path(__file__).resolve().parent.parent / "resources" / "icons"

ORDER_MARKS: dict[OrderStatus, str] = {
    OrderStatus.Created: "ring",
    OrderStatus.Invalid: "bang",
    OrderStatus.Validated: "dot",
    OrderStatus.Scheduled: "clock",
    OrderStatus.Running: "play",
    OrderStatus.Paused: "pause",
    OrderStatus.Error: "cross",
    OrderStatus.Complete: "check",
    OrderStatus.Canceled: "slash",
    OrderStatus.Consolidated: "lines",
    OrderStatus.Unknown: "question",
}
"""The badge mark of each order status (``resources/icons/badge-<mark>.svg``)."""

SKIPPED = "Skipped"
"""How a step the engine skipped is shown: its order reads Canceled on the wire (Data Services
has no Skipped status), the engine's ``step_runs.status`` says ``skipped``."""
DISPLAY_MARKS: dict[str, str] = {s.name: mark for s, mark in ORDER_MARKS.items()} | {SKIPPED: "skip"}
"""The badge mark of each status as the operator sees it (order statuses plus Skipped)."""


def display_status(status: OrderStatus, skipped: bool = False) -> str:
    """The status shown for an order: its own, or Skipped for a Canceled step the engine skipped."""
    return SKIPPED if skipped and status is OrderStatus.Canceled else status.name

# Instrument states: the four Data Services module statuses plus the operator's states.
READY, BUSY, ERROR, OFFLINE = "Ready", "Busy", "Error", "Offline"
DISABLED, OUT_OF_SERVICE, DRAINING = "Disabled", "OutOfService", "Draining"
STATE_MARKS: dict[str, str] = {READY: "check", BUSY: "play", ERROR: "cross", OFFLINE: "power",
                               DISABLED: "slash", OUT_OF_SERVICE: "wrench", DRAINING: "hourglass"}
"""The badge mark of each instrument state."""
STATE_LABELS: dict[str, str] = {READY: "Ready", BUSY: "Busy", ERROR: "Error", OFFLINE: "Offline",
                                DISABLED: "Disabled", OUT_OF_SERVICE: "Out of service",
                                DRAINING: "Finishing, then out of service"}
"""Operator-facing names of the instrument states."""


def instrument_state(view: InstrumentView) -> str:
    """The one state an instrument is shown in (:data:`STATE_MARKS` keys; the rule is the one
    the fleet's heartbeats use, :func:`core.dispatcher.instrument_state`).

    Hardware trouble (Offline, Error) comes first, then what the operator decided (draining,
    out of service, disabled), then the module status (Busy, Ready).
    """
    return shown_state(view)


def module_state(status: ModuleStatus, *, enabled: bool = True, in_service: bool = True) -> str:
    """The state key for a module status with operator flags (events carry no ``draining``)."""
    if status in (ModuleStatus.Offline, ModuleStatus.Error):
        return status.name
    if not in_service:
        return OUT_OF_SERVICE
    if not enabled:
        return DISABLED
    return status.name


# ---------------------------------------------------------------------------- colours


def status_color(status: OrderStatus) -> QColor:
    """Colour of an order status in the current theme."""
    return current_theme().status_color(status.name)


def state_color(state: str) -> QColor:
    """Colour of an instrument state (:data:`STATE_MARKS` keys) in the current theme."""
    return current_theme().status_color(state)


def display_color(name: str) -> QColor:
    """Colour of a shown status (:func:`display_status`) in the current theme."""
    return current_theme().status_color(name)


# ---------------------------------------------------------------------------- icons


@cache
def _svg(name: str) -> str:
    return (ICONS_DIR / f"{name}.svg").read_text(encoding="utf-8")


@cache
def _pixmap(name: str, colour: str, size: int) -> QPixmap:
    renderer = QSvgRenderer(QByteArray(_svg(name).replace("currentColor", colour).encode()))
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    return pix


@cache
def _icon(name: str, colour: str, size: int) -> QIcon:
    result = QIcon()
    result.addPixmap(_pixmap(name, colour, size))
    result.addPixmap(_pixmap(name, colour, size * 2))
    return result


def icon(name: str, color: QColor | str | None = None, size: int = 16) -> QIcon:
    """The icon ``resources/icons/<name>.svg`` in ``color`` (default: the theme's icon colour)."""
    colour = QColor(color) if color is not None else current_theme().color("icon")
    return _icon(name, colour.name(), size)


def pixmap(name: str, color: QColor | str | None = None, size: int = 16) -> QPixmap:
    """Like :func:`icon`, as one pixmap (for labels)."""
    colour = QColor(color) if color is not None else current_theme().color("icon")
    return _pixmap(name, colour.name(), size)


def status_icon(status: OrderStatus, size: int = 16) -> QIcon:
    """The badge of an order status: its colour and its mark."""
    return _icon(f"badge-{ORDER_MARKS[status]}", status_color(status).name(), size)


def display_icon(name: str, size: int = 16) -> QIcon:
    """The badge of a shown status (:func:`display_status`): its colour and its mark."""
    return _icon(f"badge-{DISPLAY_MARKS[name]}", display_color(name).name(), size)


def state_icon(state: str, size: int = 16) -> QIcon:
    """The badge of an instrument state: its colour and its mark."""
    return _icon(f"badge-{STATE_MARKS[state]}", state_color(state).name(), size)


def state_pixmap(state: str, size: int = 16) -> QPixmap:
    return _pixmap(f"badge-{STATE_MARKS[state]}", state_color(state).name(), size)


def status_pixmap(status: OrderStatus, size: int = 16) -> QPixmap:
    return _pixmap(f"badge-{ORDER_MARKS[status]}", status_color(status).name(), size)


# ---------------------------------------------------------------------------- text


def format_seconds(seconds: float | None) -> str:
    """``"—"``, ``"850 ms"``, ``"42 s"``, ``"3 min 05 s"``, ``"2 h 04 min"``."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m} min {s:02d} s"
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h} h {rest // 60:02d} min"


def short_seconds(seconds: float | None) -> str:
    """Compact durations for figures: ``"850 ms"``, ``"42 s"``, ``"12m 05s"``, ``"2h 04m"``."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 60:
        return format_seconds(seconds)
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m}m {s:02d}s"
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}h {rest // 60:02d}m"


def format_age(seconds: float | None) -> str:
    """Age of a heartbeat: ``"never"`` when there was none, ``"just now"`` within a second."""
    if seconds is None:
        return "never"
    return "just now" if seconds < 1 else f"{format_seconds(seconds)} ago"
