"""What every dock panel shares: the runtime and the bridge, a refresh timer that runs only while
the panel is shown, theme changes, and an idempotent shutdown.

A panel subclasses :class:`Panel` and says what differs:

- ``REFRESH_MS``: how often :meth:`Panel.tick` runs while the panel is shown (0: never);
  :meth:`Panel.wants_refresh` narrows it (the Jobs table ticks only once its orders are loaded,
  the Detail panel only while a live timeline is shown). After such a condition changed, the
  panel calls :meth:`Panel.update_refresh`.
- :meth:`Panel.on_shown`: what to read again when the panel comes into view;
  :meth:`Panel.when_shown` defers a redraw of a hidden panel until then (a panel in a background
  tab does not redraw for every forecast or frame it is sent).

"Shown" means in view: a panel in a tab behind another of its dock area is visible to Qt (only
covered), so the main window tells it when its tab is selected or not (:meth:`Panel.set_tab_shown`,
from its dock's ``visibilityChanged``); :meth:`Panel.in_view` is both.
- :meth:`Panel.apply_theme`: what to recolour when a theme is applied (called once per theme
  change, never per paint).
- :meth:`Panel.on_shutdown`: what else to stop at close (tasks, dialogs).

Signals the panel listens to (the bridge's frames, theme changes) are connected with
:meth:`Panel.listen` and all disconnected by :meth:`Panel.shutdown`, which may be called any
number of times (the main window at close, then Qt when it destroys the widget).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import QWidget

from core.api import RuntimeApi
from panels.theme import Theme, theme_events


def disconnect_quietly(signal: Any, slot: Any) -> None:
    """Disconnect ``slot`` from ``signal``; no error or warning if the link is already gone
    (the bridge may have been closed or destroyed first)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            signal.disconnect(slot)
    except (RuntimeError, TypeError):
        pass


class Panel(QWidget):
    """Base of the dock panels (constructor injection: the runtime facade and the event bridge)."""

    REFRESH_MS = 0
    """Period of :meth:`tick` while the panel is shown; 0 for a panel without a refresh timer."""

    def __init__(self, runtime: RuntimeApi, bridge: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runtime = runtime
        self.bridge = bridge
        self._links: list[tuple[Any, Callable[..., Any]]] = []
        self._deferred: dict[Callable[[], None], None] = {}
        self._shut_down = False
        self._tab_shown = True
        """False while the panel's tab is behind another of its dock area."""
        self.refresh_timer = QTimer(self)
        self.refresh_timer.setObjectName("panelRefresh")
        self.refresh_timer.setInterval(self.REFRESH_MS or 1000)
        self.refresh_timer.timeout.connect(self._on_refresh_timer)
        self.listen(theme_events().changed, self._on_theme_changed)

    # ------------------------------------------------------------------ for subclasses

    def listen(self, signal: Any, slot: Callable[..., Any]) -> None:
        """Connect ``slot`` to ``signal`` until :meth:`shutdown`."""
        signal.connect(slot)
        self._links.append((signal, slot))

    def wants_refresh(self) -> bool:
        """Whether the refresh timer should run while the panel is shown."""
        return self.REFRESH_MS > 0

    def tick(self) -> None:
        """What the refresh timer does (every ``REFRESH_MS`` while shown)."""

    def on_shown(self) -> None:
        """The panel came into view (before its refresh timer starts)."""

    def in_view(self) -> bool:
        """Shown, and not behind another tab of its dock area."""
        return self._tab_shown and self.isVisible()

    def when_shown(self, redraw: Callable[[], None]) -> None:
        """Run ``redraw`` now if the panel is in view, else once when it comes into view (however
        many times it was asked for meanwhile)."""
        if self._shut_down:
            return
        if self.in_view():
            redraw()
        else:
            self._deferred[redraw] = None

    def apply_theme(self, theme: Theme) -> None:
        """A theme was applied: recolour what the palette does not reach."""

    def on_shutdown(self) -> None:
        """Stop what else the panel runs (tasks, dialogs); called once."""

    # ------------------------------------------------------------------ life cycle

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    def update_refresh(self) -> None:
        """Start or stop the refresh timer to match visibility and :meth:`wants_refresh`."""
        if not self._shut_down and self.in_view() and self.wants_refresh():
            if not self.refresh_timer.isActive():
                self.refresh_timer.start()
        else:
            self.refresh_timer.stop()

    def _on_refresh_timer(self) -> None:
        if self._shut_down:
            self.refresh_timer.stop()
            return
        self.tick()

    def _on_theme_changed(self, theme: Theme) -> None:
        if not self._shut_down:
            self.apply_theme(theme)

    def set_tab_shown(self, shown: bool) -> None:
        """The panel's tab was selected (True) or another tab of its dock area was (False): the
        dock's ``visibilityChanged``, connected by the main window."""
        if shown == self._tab_shown:
            return
        self._tab_shown = shown
        if shown:
            self._came_into_view()
        else:
            self.refresh_timer.stop()

    def _came_into_view(self) -> None:
        if self._shut_down or not self.in_view():
            return
        deferred, self._deferred = self._deferred, {}
        for redraw in deferred:
            redraw()
        self.on_shown()
        self.update_refresh()

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        self._came_into_view()

    def hideEvent(self, event: QHideEvent) -> None:  # noqa: N802
        super().hideEvent(event)
        self.refresh_timer.stop()

    def shutdown(self) -> None:
        """Stop the refresh timer, stop listening, stop what the panel runs. Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        self.refresh_timer.stop()
        self._deferred.clear()
        links, self._links = self._links, []
        for signal, slot in links:
            disconnect_quietly(signal, slot)
        self.on_shutdown()
