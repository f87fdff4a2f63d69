"""The command palette (Ctrl+K): one search field that finds orders, templates, instruments and
the window's actions; Enter opens or runs the highlighted one.

What it searches, and how:

- window actions (menu items and panel actions with a text), published templates and instruments
  are few (tens): matched in memory on every keystroke — every word typed must appear in the
  name or its detail, names that start with the text first;
- orders can be 100,000: found by id prefix through :meth:`Store.orders_by_id_prefix` (a range on
  the primary key with ``LIMIT``), read off the loop, one read in flight and the latest text wins.

The palette only finds; what choosing an entry does is the window's business: it emits
:attr:`CommandPalette.chosen` with the :class:`PaletteItem` and closes. Enter pressed while the
order search for the current text is still running chooses once its answer is in, so typing an
id and pressing Enter at once opens that order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, Signal, Slot
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.orders import OrderStatus
from panels.theme import current_theme

log = logging.getLogger(__name__)

ORDER, INSTRUMENT, TEMPLATE, ACTION = "order", "instrument", "template", "action"
KIND_LABELS = {ORDER: "Order", INSTRUMENT: "Instrument", TEMPLATE: "Template", ACTION: "Action"}
ORDER_LIMIT = 20
"""Orders listed for one prefix."""
SHOWN_LIMIT = 60
"""Entries listed in all."""


@dataclass(frozen=True)
class PaletteItem:
    """One entry: what it is (:data:`ORDER`, ...), its key (order id, template or instrument name,
    the action's object), the text shown and a detail line."""

    kind: str
    key: Any
    title: str
    detail: str = ""


def action_items(actions: Sequence[QAction]) -> list[PaletteItem]:
    """Palette entries for the enabled actions that have a text, with their keys as detail."""
    out: list[PaletteItem] = []
    seen: set[str] = set()
    for action in actions:
        text = action.text().replace("&", "").rstrip("…").strip()
        if not text or action.isSeparator() or not action.isEnabled() or action.menu() is not None:
            continue
        keys = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
        where = action.property("paletteGroup") or ""
        title = f"{where}: {text}" if where else text
        if title in seen:
            continue
        seen.add(title)
        out.append(PaletteItem(ACTION, action, title, keys))
    return out


def match(items: Sequence[PaletteItem], text: str) -> list[PaletteItem]:
    """Entries where every word of ``text`` appears (case ignored); names starting with the text
    first, then in their given order."""
    words = text.lower().split()
    if not words:
        return list(items)
    needle = text.strip().lower()
    hits = [(not it.title.lower().startswith(needle), n, it) for n, it in enumerate(items)
            if all(w in f"{it.title} {it.detail}".lower() for w in words)]
    return [it for _starts, _n, it in sorted(hits, key=lambda h: (h[0], h[1]))]


_MOVES: dict[int, int] = {Qt.Key.Key_Down: 1, Qt.Key.Key_Up: -1, Qt.Key.Key_PageDown: 8, Qt.Key.Key_PageUp: -8}
"""Rows the highlight moves by, per navigation key of the search field."""


class CommandPalette(QFrame):
    """A popup with a search field over a result list. ``sources()`` gives the in-memory entries
    (actions, templates, instruments) each time the palette opens; ``store`` finds orders."""

    chosen = Signal(object)
    searched = Signal(str)
    """Emitted with the text once the order search for it has been answered and shown."""

    def __init__(self, sources: Callable[[], list[PaletteItem]], store: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Popup)
        self.setObjectName("commandPalette")
        self.sources = sources
        self.store = store
        self._items: list[PaletteItem] = []
        self._orders: list[PaletteItem] = []
        self._orders_for = ""
        self._search: asyncio.Task[Any] | None = None
        self._choose_when_answered = False
        self.search = QLineEdit(self)
        self.search.setObjectName("paletteSearch")
        self.search.setPlaceholderText("Order id, template, instrument or action…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self._on_text)
        self.search.installEventFilter(self)
        self.results = QTreeWidget(self)
        self.results.setObjectName("paletteResults")
        self.results.setColumnCount(3)
        self.results.setHeaderHidden(True)
        self.results.setRootIsDecorated(False)
        self.results.setUniformRowHeights(True)
        self.results.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.results.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        header = self.results.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Fixed)
        header.setStretchLastSection(False)
        self.results.setColumnWidth(2, 90)
        self.results.itemActivated.connect(lambda item, _col: self._choose(item))
        self.results.itemClicked.connect(lambda item, _col: self._choose(item))
        self.hint = QLabel("↑↓ to move · Enter to open or run · Esc to close", self)
        self.hint.setObjectName("paletteHint")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 6)
        layout.setSpacing(6)
        layout.addWidget(self.search)
        layout.addWidget(self.results, 1)
        layout.addWidget(self.hint)
        self.resize(640, 400)

    # ------------------------------------------------------------------ opening

    def popup(self, anchor: QWidget) -> None:
        """Show over the top centre of ``anchor`` with an empty search and fresh entries."""
        self._restyle()
        self._items = self.sources()
        self._orders, self._orders_for = [], ""
        self._choose_when_answered = False
        width = min(680, max(420, anchor.width() - 80))
        self.resize(width, min(420, max(260, anchor.height() - 120)))
        top = anchor.mapToGlobal(anchor.rect().topLeft())
        self.move(top.x() + (anchor.width() - width) // 2, top.y() + 60)
        self.search.blockSignals(True)
        self.search.clear()
        self.search.blockSignals(False)
        self._show_results()
        self.show()
        self.activateWindow()
        self.search.setFocus()

    def _restyle(self) -> None:
        theme = current_theme()
        self.setStyleSheet(
            f"#commandPalette {{ background: {theme.colors['card']}; border: 1px solid "
            f"{theme.colors['card_border']}; border-radius: 8px; }}"
            f"#paletteSearch {{ font-size: 15px; padding: 5px; }}"
            f"#paletteResults::item {{ padding: 3px 2px; }}"
            f"#paletteHint {{ color: {theme.colors['muted']}; font-size: 11px; }}")

    # ------------------------------------------------------------------ searching

    @Slot(str)
    def _on_text(self, text: str) -> None:
        self._show_results()
        prefix = text.strip()
        if prefix != self._orders_for:
            self._orders = []
            self._start_order_search(prefix)

    def _start_order_search(self, prefix: str) -> None:
        if self._search is not None and not self._search.done():
            self._search.cancel()
        if not prefix:
            self._orders_for = ""
            self._search = None
            return
        store = self.store
        self._search = asyncio.get_event_loop().create_task(
            store.read(lambda _c: (prefix, store.orders_by_id_prefix(prefix, ORDER_LIMIT))))
        self._search.add_done_callback(self._on_orders)

    def _on_orders(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.warning("command palette: order search failed: %s", exc)
            prefix, rows = self.search.text().strip(), []
        else:
            prefix, rows = task.result()
        if prefix != self.search.text().strip():
            return  # an older text; the newer search answers
        self._orders_for = prefix
        self._orders = [PaletteItem(ORDER, oid, oid, " · ".join(p for p in (template or "",
                                                                             _status_name(status)) if p))
                        for oid, template, status in rows]
        self._show_results()
        self.searched.emit(prefix)
        if self._choose_when_answered:
            self._choose_when_answered = False
            self.choose_current()

    def pending(self) -> bool:
        """Whether the order search for the current text has not been answered yet."""
        return bool(self.search.text().strip()) and self._orders_for != self.search.text().strip()

    def _show_results(self) -> None:
        text = self.search.text()
        found = match(self._items, text)
        orders = self._orders if self._orders_for == text.strip() else []
        # an exact or prefix hit on an order id comes first: the text typed is an id
        entries = (orders + found)[:SHOWN_LIMIT]
        self.results.setUpdatesEnabled(False)
        self.results.clear()
        items = []
        for entry in entries:
            item = QTreeWidgetItem([entry.title, entry.detail, KIND_LABELS[entry.kind]])
            item.setData(0, Qt.ItemDataRole.UserRole, entry)
            item.setForeground(2, current_theme().color("muted"))
            item.setToolTip(0, f"{KIND_LABELS[entry.kind]}: {entry.title}")
            items.append(item)
        self.results.addTopLevelItems(items)
        if items:
            self.results.setCurrentItem(items[0])
        self.results.setUpdatesEnabled(True)

    def entries(self) -> list[PaletteItem]:
        """The entries listed now, top first."""
        items = (self.results.topLevelItem(i) for i in range(self.results.topLevelItemCount()))
        return [item.data(0, Qt.ItemDataRole.UserRole) for item in items if item is not None]

    # ------------------------------------------------------------------ choosing

    def choose_current(self) -> None:
        """Enter: choose the highlighted entry (after the pending order search, if any)."""
        if self.pending():
            self._choose_when_answered = True
            return
        item = self.results.currentItem()
        if item is not None:
            self._choose(item)

    def _choose(self, item: QTreeWidgetItem) -> None:
        entry = item.data(0, Qt.ItemDataRole.UserRole)
        self.hide()
        self.chosen.emit(entry)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if watched is self.search and isinstance(event, QKeyEvent) and event.type() == QEvent.Type.KeyPress:
            key = event.key()
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.choose_current()
                return True
            if key in (Qt.Key.Key_Down, Qt.Key.Key_Up, Qt.Key.Key_PageDown, Qt.Key.Key_PageUp):
                self._move(key)
                return True
            if key == Qt.Key.Key_Escape:
                self.hide()
                return True
        return super().eventFilter(watched, event)

    def _move(self, key: int) -> None:
        count = self.results.topLevelItemCount()
        if not count:
            return
        item = self.results.currentItem()
        current = self.results.indexOfTopLevelItem(item) if item is not None else 0
        step = _MOVES[key]
        target = self.results.topLevelItem(max(0, min(count - 1, current + step)))
        if target is not None:
            self.results.setCurrentItem(target)

    def hideEvent(self, event: Any) -> None:  # noqa: N802
        super().hideEvent(event)
        self._choose_when_answered = False
        if self._search is not None and not self._search.done():
            self._search.cancel()


def _status_name(status: int | None) -> str:
    try:
        return OrderStatus(status).name if status is not None else ""
    except ValueError:
        return str(status)
