"""The palette of step kinds: built-ins and the workcell's capabilities, grouped by instrument kind.

Dragging a kind out of the palette carries :data:`~panels.editor.graph.MIME_KIND`; the canvas
adds a step where it is dropped. Double-click (or Enter) asks for a step in the middle of the
canvas instead, for keyboard users.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QMimeData, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QIcon,
    QKeyEvent,
    QPainter,
    QPixmap,
    QStandardItem,
    QStandardItemModel,
)
from PySide6.QtWidgets import QAbstractItemView, QTreeView, QWidget

from panels.editor.graph import MIME_KIND, group_color, kind_mime, set_group_order
from panels.editor.kinds import KindCatalog, KindInfo

__all__ = ["KIND_ROLE", "KindPalette", "KindPaletteModel"]

KIND_ROLE = Qt.ItemDataRole.UserRole + 1


def _swatch(colour: QColor, size: int = 12) -> QIcon:
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(colour)
    p.drawRoundedRect(0, 0, size, size, 3, 3)
    p.end()
    return QIcon(pix)


def _tooltip(info: KindInfo) -> str:
    lines = [f"<b>{info.title}</b> — {info.kind}"]
    if info.description:
        lines.append(info.description)
    if info.instruments:
        lines.append("Instruments: " + ", ".join(info.instruments))
    if info.parameters:
        lines.append("Parameters: " + ", ".join(
            f"{p.name} ({p.type}{', required' if p.required else ''})" for p in info.parameters))
    if info.outputs:
        lines.append("Outputs: " + ", ".join(info.output_names()))
    lines.append("<i>Drag onto the canvas to add a step</i>")
    return "<br>".join(lines)


class KindPaletteModel(QStandardItemModel):
    """Groups (not draggable) with their kinds (draggable as :data:`MIME_KIND`)."""

    def __init__(self, catalog: KindCatalog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.set_catalog(catalog)

    def set_catalog(self, catalog: KindCatalog) -> None:
        self.clear()
        groups = catalog.groups()
        set_group_order(g for g, _kinds in groups)
        for group, kinds in groups:
            parent = QStandardItem(group)
            parent.setFlags(Qt.ItemFlag.ItemIsEnabled)
            font = parent.font()
            font.setBold(True)
            parent.setFont(font)
            parent.setIcon(_swatch(group_color(group)))
            for info in kinds:
                item = QStandardItem(info.title)
                item.setData(info.kind, KIND_ROLE)
                item.setToolTip(_tooltip(info))
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                              | Qt.ItemFlag.ItemIsDragEnabled)
                parent.appendRow(item)
            self.appendRow(parent)

    def kind_index(self, kind: str) -> QModelIndex:
        """The index of ``kind`` (invalid if absent)."""
        for row in range(self.rowCount()):
            group = self.index(row, 0)
            for child in range(self.rowCount(group)):
                index = self.index(child, 0, group)
                if index.data(KIND_ROLE) == kind:
                    return index
        return QModelIndex()

    def mimeTypes(self) -> list[str]:  # noqa: N802
        return [MIME_KIND]

    def mimeData(self, indexes: Sequence[QModelIndex | QPersistentModelIndex]) -> QMimeData:  # noqa: N802
        kinds = [i.data(KIND_ROLE) for i in indexes if i.data(KIND_ROLE)]
        return kind_mime(kinds[0]) if kinds else QMimeData()

    def supportedDragActions(self) -> Qt.DropAction:  # noqa: N802
        return Qt.DropAction.CopyAction


class KindPalette(QTreeView):
    """The palette view. Emits :attr:`kind_activated` on double-click or Enter."""

    kind_activated = Signal(str)

    def __init__(self, catalog: KindCatalog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.palette_model = KindPaletteModel(catalog, self)
        self.setModel(self.palette_model)
        self.setObjectName("kindPalette")
        self.setHeaderHidden(True)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setUniformRowHeights(True)
        self.setIndentation(14)
        self.expandAll()
        self.doubleClicked.connect(self._on_activated)

    def set_catalog(self, catalog: KindCatalog) -> None:
        self.palette_model.set_catalog(catalog)
        self.expandAll()

    def _on_activated(self, index: QModelIndex) -> None:
        kind = index.data(KIND_ROLE)
        if kind:
            self.kind_activated.emit(kind)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentIndex().isValid():
            self._on_activated(self.currentIndex())
            return
        super().keyPressEvent(event)
