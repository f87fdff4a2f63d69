"""Small read-only tables of the Detail panel (parameters, transitions, audit entries, steps).

:class:`SmallTableModel` is a ``QAbstractTableModel`` over a list of :class:`Cell` rows: text,
optional tooltip and status icon per cell. The lists are short (one order's history), so the
model is replaced whole on each refresh; :func:`make_table` builds the fixed-row-height view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QIcon
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView, QWidget

ModelIndex = QModelIndex | QPersistentModelIndex


@dataclass(frozen=True)
class Cell:
    text: str
    tip: str | None = None
    icon: QIcon | None = None
    color: QColor | None = None


def cell(value: Any, tip: str | None = None, *, icon: QIcon | None = None,
         color: QColor | None = None) -> Cell:
    return Cell("" if value is None else str(value), tip, icon, color)


class HeaderedRows(QAbstractTableModel):
    """A flat read-only table: ``headers`` across, ``rows`` down (subclasses give ``data``)."""

    def __init__(self, headers: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.headers = list(headers)
        self.rows: list[Any] = []

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.headers)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.headers[section]
        return None


class SmallTableModel(HeaderedRows):
    """Rows of :class:`Cell`; replaced whole with :meth:`set_rows`."""

    def set_rows(self, rows: Sequence[Sequence[Cell]]) -> None:
        self.beginResetModel()
        self.rows = [list(r) for r in rows]
        self.endResetModel()

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        c = self.rows[index.row()][index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return c.text
        if role == Qt.ItemDataRole.ToolTipRole:
            return c.tip or (c.text if len(c.text) > 40 else None)
        if role == Qt.ItemDataRole.DecorationRole:
            return c.icon
        if role == Qt.ItemDataRole.ForegroundRole:
            return c.color
        return None

    def column_texts(self, column: int) -> list[str]:
        """Every text of one column (tests and copy)."""
        return [r[column].text for r in self.rows]


def make_table(model: SmallTableModel, widths: Sequence[int], parent: QWidget | None = None) -> QTableView:
    """A compact read-only view: fixed row heights, no vertical header, last column stretched."""
    view = QTableView(parent)
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    view.setAlternatingRowColors(True)
    view.setWordWrap(False)
    view.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
    vh = view.verticalHeader()
    vh.hide()
    vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    vh.setDefaultSectionSize(max(22, view.fontMetrics().height() + 8))
    hh = view.horizontalHeader()
    hh.setStretchLastSection(True)
    hh.setHighlightSections(False)
    hh.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    for col, width in enumerate(widths):
        view.setColumnWidth(col, width)
    return view
