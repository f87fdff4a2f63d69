"""Light and dark themes: one palette for the whole application, colours for what Qt has no role for.

A theme is a JSON file in ``resources/themes/`` (``light.json``, ``dark.json``):

- ``palette``: ``QPalette`` colour roles (``Window``, ``Base``, ``Text``, ``Highlight`` ...),
  with ``disabled`` overrides;
- ``colors``: cards, borders, muted text, icon colour, chart background/foreground/grid, and
  the good/warn/bad accents of KPI cards;
- ``status``: one colour per order status and per instrument state (Okabe-Ito based, lightened
  for the dark theme so it keeps its contrast); every status also has its own mark
  (:mod:`panels.style`), so colour is never the only cue;
- ``series``: line colours for charts with one curve per instrument.

:func:`apply_theme` sets the Fusion style and the palette on the ``QApplication`` — no
application-wide style sheet, which would put ``QStyleSheetStyle`` between every view and its
painting (measurable on a 100k-row table). Widgets that need theme colours beyond the palette
(KPI cards, charts) connect to :func:`theme_events` and re-read :func:`current_theme` when it
announces a theme. (``PaletteChange`` does not reach widgets that carry their own style sheet.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

THEMES_DIR = Path(__file__).resolve().parent.parent / "resources" / "themes"
THEME_NAMES: tuple[str, ...] = ("light", "dark")
"""The themes the View menu offers, in menu order."""
DEFAULT_THEME = "light"
SETTINGS_KEY = "ui/theme"
"""Where the chosen theme is kept in the window's QSettings."""


@dataclass(frozen=True)
class Theme:
    """One theme, as loaded from ``resources/themes/<name>.json``."""

    name: str
    label: str
    palette: dict[str, str]
    disabled: dict[str, str]
    colors: dict[str, Any]
    status: dict[str, str]
    series: tuple[str, ...] = field(default_factory=tuple)

    def color(self, key: str) -> QColor:
        """A named colour of ``colors`` (``card``, ``muted``, ``accent``, ``chart_bg`` ...)."""
        return QColor(self.colors[key])

    def status_color(self, key: str) -> QColor:
        """The colour of an order status or instrument state by name (``Running``, ``Ready`` ...)."""
        return QColor(self.status.get(key, self.status["Unknown"]))

    def series_color(self, index: int) -> QColor:
        """Colour of the ``index``-th curve of a multi-series chart (cycles)."""
        return QColor(self.series[index % len(self.series)])

    @property
    def is_dark(self) -> bool:
        return QColor(self.palette["Window"]).lightness() < 128

    def qpalette(self) -> QPalette:
        """The ``QPalette`` of this theme."""
        pal = QPalette()
        for role_name, colour in self.palette.items():
            pal.setColor(QPalette.ColorRole[role_name], QColor(colour))
        for role_name, colour in self.disabled.items():
            pal.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole[role_name], QColor(colour))
        return pal


@cache
def load_theme(name: str) -> Theme:
    """Read ``resources/themes/<name>.json``; raises ``ValueError`` for an unknown name."""
    if name not in THEME_NAMES:
        raise ValueError(f"unknown theme {name!r} (themes: {', '.join(THEME_NAMES)})")
    data = json.loads((THEMES_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return Theme(name=data["name"], label=data["label"], palette=data["palette"],
                 disabled=data.get("disabled", {}), colors=data["colors"], status=data["status"],
                 series=tuple(data.get("series", ())))


_current: list[Theme] = []


class ThemeEvents(QObject):
    """Announces each applied theme to the widgets that draw with theme colours."""

    changed = Signal(object)
    """The :class:`Theme` just applied."""


_events: list[ThemeEvents] = []


def theme_events() -> ThemeEvents:
    """The one announcer of theme changes (connect ``changed`` in a widget's constructor)."""
    if not _events:
        _events.append(ThemeEvents())
    return _events[0]


def current_theme() -> Theme:
    """The theme applied last (the default theme before any was applied)."""
    return _current[-1] if _current else load_theme(DEFAULT_THEME)


def apply_theme(app: QApplication, name: str) -> Theme:
    """Make ``name`` the theme of ``app``: Fusion style and the theme's palette; then announce it
    on :func:`theme_events` so cards and charts repaint in its colours."""
    theme = load_theme(name)
    _current[:] = [theme]
    if app.style().name().lower() != "fusion":
        app.setStyle("Fusion")
    app.setPalette(theme.qpalette())
    theme_events().changed.emit(theme)
    return theme


def theme_name(value: object) -> str:
    """A theme name from a settings value, falling back to the default for anything unknown."""
    return value if isinstance(value, str) and value in THEME_NAMES else DEFAULT_THEME
