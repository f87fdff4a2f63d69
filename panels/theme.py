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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication, QWidget

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

    def resolve(self, ref: str) -> QColor:
        """A colour by reference: ``palette:Text``, ``colors:muted``, ``status:Running``."""
        group, _, key = ref.partition(":")
        if group == "palette":
            return QColor(self.palette[key])
        if group == "colors":
            return self.color(key)
        if group == "status":
            return self.status_color(key)
        raise KeyError(f"unknown colour reference {ref!r} (palette:, colors: or status:)")

    def css(self, fg: str, bg: str | None = None, extra: str = "") -> str:
        """A style sheet of ``colors`` keys: text colour, background, then ``extra``."""
        sheet = f"color: {self.colors[fg]};"
        if bg is not None:
            sheet += f" background: {self.colors[bg]};"
        return f"{sheet} {extra}".strip()

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


def relative_luminance(colour: QColor) -> float:
    """WCAG 2.x relative luminance of an sRGB colour."""
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    return 0.2126 * channel(colour.redF()) + 0.7152 * channel(colour.greenF()) + 0.0722 * channel(colour.blueF())


def contrast_ratio(a: QColor, b: QColor) -> float:
    """WCAG contrast ratio of two colours (1..21; text needs 4.5 for AA)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


TEXT_PAIRS: tuple[tuple[str, str], ...] = (
    # status colours: the Jobs status column (rows alternate), status lines, dashboard cards
    ("status:*", "palette:Base"), ("status:*", "palette:AlternateBase"), ("status:*", "palette:Window"),
    ("status:*", "colors:card"),
    ("palette:WindowText", "palette:Window"), ("palette:Text", "palette:Base"),
    ("palette:Text", "palette:AlternateBase"), ("palette:ButtonText", "palette:Button"),
    ("palette:HighlightedText", "palette:Highlight"), ("palette:ToolTipText", "palette:ToolTipBase"),
    ("palette:PlaceholderText", "palette:Base"), ("palette:PlaceholderText", "palette:AlternateBase"),
    ("palette:Link", "palette:Base"), ("palette:Link", "palette:Window"),
    ("colors:muted", "colors:card"), ("colors:muted", "palette:Window"),
    ("colors:good", "colors:card"), ("colors:warn", "colors:card"), ("colors:bad", "colors:card"),
    ("colors:good", "palette:Window"), ("colors:warn", "palette:Window"), ("colors:bad", "palette:Window"),
    ("colors:accent", "colors:card"), ("colors:chart_fg", "colors:chart_bg"),
    ("colors:text_error", "palette:Window"), ("colors:text_ok", "palette:Window"),
    ("colors:text_warn", "palette:Window"), ("colors:text_info", "palette:Window"),
    ("colors:text_error", "palette:Base"), ("colors:text_warn", "palette:Base"),
    ("colors:banner_info_fg", "colors:banner_info_bg"), ("colors:banner_warn_fg", "colors:banner_warn_bg"),
    ("colors:banner_error_fg", "colors:banner_error_bg"), ("colors:banner_ok_fg", "colors:banner_ok_bg"),
    ("colors:node_ink", "colors:node_bg"), ("colors:node_muted", "colors:node_bg"),
    ("colors:node_ink", "colors:node_error_bg"), ("colors:node_muted", "colors:node_error_bg"),
    ("colors:node_chip_fg", "colors:node_chip_bg"), ("colors:diff_changed_text", "palette:Base"),
)
"""Every text colour the panels draw, with each background it is drawn on (``status:*``: every
status); a test holds each pair to WCAG AA (4.5:1) in both themes."""


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


def gui_application() -> QApplication:
    """The running QApplication, which the window and its panels need."""
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        raise RuntimeError("the labconsole window needs a running QApplication")
    return app


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


class _ThemedStyle(QObject):
    """Keeps a widget's style sheet in the current theme's colours (a child of the widget, so
    the link to the theme announcer ends with the widget)."""

    def __init__(self, widget: QWidget, sheet: Callable[[Theme], str]) -> None:
        super().__init__(widget)
        self.setObjectName("themedStyle")
        self.sheet = sheet
        theme_events().changed.connect(self.apply)

    def apply(self, theme: Theme | None = None) -> None:
        widget = self.parent()
        if isinstance(widget, QWidget):
            widget.setStyleSheet(self.sheet(theme or current_theme()))


def keep_styled(widget: QWidget, sheet: Callable[[Theme], str]) -> None:
    """Give ``widget`` the style sheet ``sheet(theme)`` now and again at every theme change
    (a widget with its own style sheet no longer follows the palette). Calling it again replaces
    the sheet."""
    keeper = widget.findChild(_ThemedStyle, "themedStyle")
    if keeper is None:
        keeper = _ThemedStyle(widget, sheet)
    keeper.sheet = sheet
    keeper.apply()


class _ThemedPalette(QObject):
    """Keeps colour roles of a widget's palette in the current theme's colours (a child of the
    widget, so the link to the theme announcer ends with the widget)."""

    def __init__(self, widget: QWidget, roles: dict[QPalette.ColorRole, str]) -> None:
        super().__init__(widget)
        self.setObjectName("themedPalette")
        self.widget = widget
        self.roles = roles
        theme_events().changed.connect(self.apply)

    def apply(self, theme: Theme | None = None) -> None:
        theme = theme or current_theme()
        pal = QPalette(theme.qpalette())
        for role, key in self.roles.items():
            pal.setColor(role, theme.resolve(key) if ":" in key else theme.color(key))
        self.widget.setPalette(pal)


def keep_palette(widget: QWidget, roles: dict[QPalette.ColorRole, str]) -> None:
    """Give ``widget`` the theme's palette with ``roles`` in theme colours (``{Base: "card"}``:
    a list that blends into its card), now and again at every theme change. A palette set once
    would keep the colours of the theme it was set in: a white list on a dark card. Calling it
    again replaces the roles."""
    keeper = widget.findChild(_ThemedPalette, "themedPalette")
    if keeper is None:
        keeper = _ThemedPalette(widget, roles)
    keeper.roles = dict(roles)
    keeper.apply()


def text_style(key: str, extra: str = "") -> Callable[[Theme], str]:
    """A :func:`keep_styled` sheet: text in the theme colour ``key`` (``text_error``, ``muted`` ...)."""
    return lambda theme: theme.css(key, extra=extra)


def embolden(widget: QWidget, scale: float = 1.0) -> None:
    """A bold (and optionally larger) font — not a style sheet, so the text keeps following the
    palette's colours when the theme changes."""
    font = QFont(widget.font())
    font.setBold(True)
    if scale != 1.0:
        font.setPointSizeF(font.pointSizeF() * scale)
    widget.setFont(font)
