"""The main window: dockable panels over one core, a status bar, layout kept in QSettings."""

from __future__ import annotations

import asyncio

from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QShowEvent
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QWidget

from console.bridge import EventBridge
from core.facade import Core
from panels.jobs import JobsPanel, OrdersTableModel
from panels.placeholder import PlannedPanel

STATE_VERSION = 1


class MainWindow(QMainWindow):
    """Dashboard, Jobs, Robots and Metrics as dock widgets; the Jobs table over the store."""

    def __init__(self, core: Core, settings: QSettings, *, bridge: EventBridge | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.core = core
        self.settings = settings
        self.bridge = bridge or EventBridge(core.bus, parent=self)
        self.closed: asyncio.Future[None] | None = None
        self.setWindowTitle("labconsole")
        self.setObjectName("labconsoleMainWindow")
        self.setDockNestingEnabled(True)

        self.jobs_model = OrdersTableModel(self)
        self.jobs = JobsPanel(self.jobs_model, self)
        self.bridge.orders_changed.connect(self._on_orders_changed)
        self._loaded = False
        self._pending: dict[str, tuple] = {}

        self.docks: dict[str, QDockWidget] = {}
        self._add_dock("Dashboard", PlannedPanel(
            "Dashboard", "Key figures of the shift: instruments online, jobs completed and failed "
            "today, pending and running orders, average execution time, success rate, alerts."),
            Qt.DockWidgetArea.TopDockWidgetArea)
        self._add_dock("Jobs", self.jobs, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._add_dock("Robots", PlannedPanel(
            "Robots", "Every instrument of the workcell: Ready / Busy / Error / Offline, current "
            "order and progress, heartbeat age, utilisation; enable, disable, take out of service."),
            Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("Metrics", PlannedPanel(
            "Metrics", "Live charts: throughput, queue depth, per-instrument utilisation, step "
            "duration trend, success rate."), Qt.DockWidgetArea.RightDockWidgetArea)
        self.tabifyDockWidget(self.docks["Robots"], self.docks["Metrics"])
        self.docks["Robots"].raise_()
        self._layout_pending = True

        view_menu = self.menuBar().addMenu("&View")
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        self.menuBar().addMenu("&File").addAction(quit_action)

        self.store_label = QLabel(str(core.store.path), self)
        self.lag_label = QLabel("", self)
        self.statusBar().addPermanentWidget(self.lag_label)
        self.statusBar().addPermanentWidget(self.store_label)
        self.resize(1400, 860)
        if self._restore_layout():
            self._layout_pending = False
        self._lag_timer = QTimer(self)
        self._lag_timer.setInterval(1000)
        self._lag_timer.timeout.connect(self._show_commit_stats)

    def _add_dock(self, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> None:
        dock = QDockWidget(name, self)
        dock.setObjectName(f"dock{name}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks[name] = dock

    # -- data
    async def load_orders(self) -> int:
        """Load every order row from the store off the loop, then apply what arrived meanwhile."""
        self.statusBar().showMessage("Loading orders…")
        rows = await self.core.store.read(lambda _c: self.core.store.order_rows())
        self.jobs_model.reset(rows)
        self._loaded = True
        if self._pending:
            self.jobs_model.apply(self._pending)
            self._pending = {}
        self.statusBar().showMessage(f"Loaded {len(rows):,} orders", 4000)
        self._lag_timer.start()
        return len(rows)

    @Slot(object)
    def _on_orders_changed(self, rows: dict[str, tuple]) -> None:
        if self._loaded:
            self.jobs_model.apply(rows)
        else:
            self._pending.update(rows)

    @Slot()
    def _show_commit_stats(self) -> None:
        store = self.core.store
        if store.commit_count:
            mean = store.commit_seconds / store.commit_count * 1000
            self.lag_label.setText(f"commits {store.commit_count:,} · mean {mean:.2f} ms")

    # -- layout persistence
    def _restore_layout(self) -> bool:
        geometry = self.settings.value("main/geometry")
        state = self.settings.value("main/state")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        return isinstance(state, QByteArray) and self.restoreState(state, STATE_VERSION)

    def _default_layout(self) -> None:
        width, height = self.width(), self.height()
        self.resizeDocks([self.docks["Jobs"], self.docks["Robots"]],
                         [int(width * 0.68), int(width * 0.32)], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Dashboard"], self.docks["Jobs"]],
                         [int(height * 0.18), int(height * 0.82)], Qt.Orientation.Vertical)

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        if self._layout_pending:
            self._layout_pending = False
            self._default_layout()

    def save_layout(self) -> None:
        self.settings.setValue("main/geometry", self.saveGeometry())
        self.settings.setValue("main/state", self.saveState(STATE_VERSION))
        self.settings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        self.save_layout()
        self._lag_timer.stop()
        self.bridge.close()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        super().closeEvent(event)


