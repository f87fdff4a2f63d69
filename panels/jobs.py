"""Jobs panel: every order (runs and their step orders) in one table.

:class:`OrdersTableModel` is a thin ``QAbstractTableModel`` over a Python list of light order rows
(``core.store.ORDER_ROW_COLUMNS``). Sorting happens in the model (``list.sort`` +
``layoutChanged``), never in a ``QSortFilterProxyModel`` (which takes 15 s at 100k rows). Updates
arrive coalesced per frame from the bridge: one ranged ``dataChanged`` and one block insert per
frame, whatever the number of events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.orders import OrderPriority, OrderStatus
from panels.style import status_color, status_icon

_ID, _PARENT, _TEMPLATE, _VERSION, _STATUS, _PRIORITY, _NPRI, _ASSIGNED, _CREATED, _STARTED, _ENDED, _DETAILS = range(12)

ModelIndex = QModelIndex | QPersistentModelIndex


def _time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _priority(row: tuple) -> str:
    return f"{OrderPriority(row[_PRIORITY]).name} · {row[_NPRI]}"


# (header, row -> display text, row -> sort key)
COLUMNS: list[tuple[str, Callable[[tuple], str], Callable[[tuple], Any]]] = [
    ("ID", lambda r: r[_ID], lambda r: (len(r[_ID]), r[_ID])),
    ("Run", lambda r: r[_PARENT] or "", lambda r: r[_PARENT] or r[_ID]),
    ("Template", lambda r: r[_TEMPLATE] or "", lambda r: r[_TEMPLATE] or ""),
    ("Ver.", lambda r: r[_VERSION] or "", lambda r: r[_VERSION] or ""),
    ("Status", lambda r: OrderStatus(r[_STATUS]).name, lambda r: r[_STATUS]),
    ("Priority", _priority, lambda r: (r[_PRIORITY], -r[_NPRI])),
    ("Assigned to", lambda r: r[_ASSIGNED] or "", lambda r: r[_ASSIGNED] or ""),
    ("Created", lambda r: _time(r[_CREATED]), lambda r: r[_CREATED] or 0.0),
    ("Started", lambda r: _time(r[_STARTED]), lambda r: r[_STARTED] or 0.0),
    ("Ended", lambda r: _time(r[_ENDED]), lambda r: r[_ENDED] or 0.0),
    ("Details", lambda r: r[_DETAILS] or "", lambda r: r[_DETAILS] or ""),
]
STATUS_COLUMN = 4


class OrdersTableModel(QAbstractTableModel):
    """Adapter from a list of order rows to Qt. Rows are tuples, replaced whole on change."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[tuple] = []
        self._pos: dict[str, int] = {}
        self._sort: tuple[int, Qt.SortOrder] | None = None

    # -- Qt interface
    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section][0]
        return None

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        row = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[col][1](row)
        if col == STATUS_COLUMN:
            if role == Qt.ItemDataRole.DecorationRole:
                return status_icon(OrderStatus(row[_STATUS]))
            if role == Qt.ItemDataRole.ForegroundRole:
                return status_color(OrderStatus(row[_STATUS]))
        if role == Qt.ItemDataRole.ToolTipRole and col == len(COLUMNS) - 1:
            return row[_DETAILS]
        return None

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self._sort = (column, order)
        self.layoutAboutToBeChanged.emit()
        self._rows.sort(key=COLUMNS[column][2], reverse=order == Qt.SortOrder.DescendingOrder)
        self._pos = {r[_ID]: i for i, r in enumerate(self._rows)}
        self.layoutChanged.emit()

    # -- feeding
    def reset(self, rows: Iterable[tuple]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        if self._sort is not None:
            column, order = self._sort
            self._rows.sort(key=COLUMNS[column][2], reverse=order == Qt.SortOrder.DescendingOrder)
        self._pos = {r[_ID]: i for i, r in enumerate(self._rows)}
        self.endResetModel()

    @Slot(object)
    def apply(self, changed: dict[str, tuple]) -> None:
        """Apply one frame of changes: replace known rows, append new ones (one block)."""
        lo, hi = len(self._rows), -1
        new: list[tuple] = []
        for order_id, row in changed.items():
            i = self._pos.get(order_id)
            if i is None:
                new.append(row)
            else:
                self._rows[i] = row
                lo, hi = min(lo, i), max(hi, i)
        if hi >= 0:
            self.dataChanged.emit(self.index(lo, 0), self.index(hi, len(COLUMNS) - 1))
        if new:
            start = len(self._rows)
            self.beginInsertRows(QModelIndex(), start, start + len(new) - 1)
            for offset, row in enumerate(new):
                self._pos[row[_ID]] = start + offset
            self._rows.extend(new)
            self.endInsertRows()

    def row_of(self, order_id: str) -> int | None:
        return self._pos.get(order_id)

    def order_id(self, row: int) -> str:
        return self._rows[row][_ID]

    def row_data(self, row: int) -> tuple:
        return self._rows[row]


class JobsPanel(QWidget):
    """The Jobs table over every order of the store, fed per frame by the bridge.

    Receives the runtime facade and the bridge; emits :attr:`order_selected` with the id of the
    current order.
    """

    order_selected = Signal(str)

    def __init__(self, runtime: Any, bridge: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runtime = runtime
        self.bridge = bridge
        self.model = model = OrdersTableModel(self)
        self._loaded = False
        self._pending: dict[str, tuple] = {}
        bridge.orders_changed.connect(self._on_orders_changed)
        self.view = QTableView(self)
        self.view.setObjectName("jobsTable")
        self.view.setModel(model)
        self.view.setSortingEnabled(True)
        self.view.setAlternatingRowColors(True)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setWordWrap(False)
        vh = self.view.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(22)
        vh.hide()
        hh = self.view.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(True)
        for col, width in enumerate((100, 100, 190, 40, 100, 110, 130, 140, 140, 140)):
            self.view.setColumnWidth(col, width)
        self.summary = QLabel(self)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addWidget(self.view)
        model.modelReset.connect(self._update_summary)
        model.rowsInserted.connect(self._update_summary)
        self.view.selectionModel().currentRowChanged.connect(self._on_current)
        self._update_summary()

    async def load(self) -> int:
        """Load every order row from the store off the loop, then apply what arrived meanwhile."""
        store = self.runtime.store
        rows = await store.read(lambda _c: store.order_rows())
        self.model.reset(rows)
        self._loaded = True
        if self._pending:
            self.model.apply(self._pending)
            self._pending = {}
        return len(rows)

    @Slot(object)
    def _on_orders_changed(self, rows: dict[str, tuple]) -> None:
        if self._loaded:
            self.model.apply(rows)
        else:
            self._pending.update(rows)

    @Slot(QModelIndex, QModelIndex)
    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.order_selected.emit(self.model.order_id(current.row()))

    @Slot()
    def _update_summary(self) -> None:
        self.summary.setText(f"{self.model.rowCount():,} orders")
