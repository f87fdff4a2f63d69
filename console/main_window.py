"""The main window: dockable panels over one runtime, a status bar, layout kept in QSettings."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from PySide6.QtCore import QByteArray, QChildEvent, QEvent, QSettings, Qt, QTimer, Slot
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence, QResizeEvent, QShowEvent
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFrame,
    QLabel,
    QMainWindow,
    QMenu,
    QScrollArea,
    QSystemTrayIcon,
    QTabBar,
    QWidget,
)

from console.bridge import EventBridge
from core.api import RuntimeApi
from core.forecast import Forecast, WindowWarnings
from core.playbook import Playbook
from panels.base import Panel
from panels.dashboard import DashboardPanel
from panels.detail import DetailPanel
from panels.fleet import FleetPanel
from panels.help import HelpDialog, about_html, collect_shortcuts, data_html, shortcuts_html
from panels.inbox import InboxPanel
from panels.jobs import JobsPanel
from panels.metrics import MetricsPanel
from panels.palette import (
    ACTION,
    INSTRUMENT,
    ORDER,
    TEMPLATE,
    CommandPalette,
    PaletteItem,
    action_items,
)
from panels.playbook import PlaybookPanel
from panels.robots import RobotsPanel
from panels.schedules import SchedulesPanel
from panels.templates import TemplatesPanel
from panels.theme import (
    SETTINGS_KEY,
    THEME_NAMES,
    Theme,
    apply_theme,
    gui_application,
    load_theme,
    theme_name,
)
from panels.timeline import TimelinePanel
from panels.timetravel import TimeTravel, TimeTravelBar
from panels.widgets import LoopLagIndicator, LoopLagProbe

log = logging.getLogger(__name__)
STATE_VERSION = 3
"""Of the saved dock layout: a layout saved by an older version gives way to the default one."""
DASHBOARD_KEY = "ui/dashboard_expanded"
"""Whether the Dashboard shows its sections below the KPI cards (compact by default)."""


class MainWindow(QMainWindow):
    """Dashboard, Jobs, Detail and the other panels (Robots ... Timeline, Fleet) as dock widgets over one runtime."""

    def __init__(self, runtime: RuntimeApi, settings: QSettings, *, bridge: EventBridge | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runtime = runtime
        self.settings = settings
        self.bridge = bridge or EventBridge(runtime.ledger.bus, parent=self)
        self.closed: asyncio.Future[None] | None = None
        self.setWindowTitle("labconsole")
        self.setObjectName("labconsoleMainWindow")
        self.setDockNestingEnabled(True)
        # the theme first, so every panel is built in its colours
        self.theme = apply_theme(gui_application(), theme_name(settings.value(SETTINGS_KEY)))

        # JobsPanel still declares the concrete Runtime; this ignore goes once it takes RuntimeApi
        self.jobs = JobsPanel(runtime, self.bridge, self)
        self.jobs.open_saved_view()  # "Needs attention" unless the operator was on another view
        self.jobs_model = self.jobs.model
        self.detail = DetailPanel(runtime, self.bridge, self)
        self.dashboard = DashboardPanel(runtime, self.bridge, self,
                                        expanded=_flag(settings.value(DASHBOARD_KEY)))
        self.dashboard.expanded_changed.connect(self._on_dashboard_expanded)
        self.dashboard.order_requested.connect(self._show_alerted_order)
        self.robots = RobotsPanel(runtime, self.bridge, self)
        self.metrics = MetricsPanel(runtime, self.bridge, self)
        self.templates = TemplatesPanel(runtime, self.bridge, self)
        self.schedules = SchedulesPanel(runtime, self.bridge, self)
        self.timeline = TimelinePanel(runtime, self.bridge, self)
        self.fleet = FleetPanel(runtime, self.bridge, self)
        self.forecast: Forecast | None = None
        """Run ETAs, once the runtime has started (see :meth:`load_orders`)."""
        Playbook.attach(runtime.engine, runtime.workcell)  # failures consult it before the templates' policies
        self.tray: QSystemTrayIcon | None = None
        self._escalated_seen = 0
        self.tray_message = ""
        """The last tray notification shown."""
        self.inbox = InboxPanel(runtime, self.bridge, self)
        self.inbox.counts_changed.connect(self._on_inbox_counts)
        self.playbook = PlaybookPanel(runtime, self.bridge, self)
        self.jobs.order_selected.connect(self._on_order_selected)
        self.jobs.details_requested.connect(self._show_details)
        self.detail.navigate.connect(self._select_in_jobs)
        self.templates.run_started.connect(self._select_in_jobs)
        self.templates.run_selected.connect(self._select_in_jobs)
        self.robots.order_requested.connect(self.focus_order)
        # time travel: the slider's moment goes to every panel that shows the workcell (read only);
        # time_travel.moment_changed is the hook (a Moment, or None for live)
        cell = getattr(runtime, "workcell", None)
        self.time_travel = TimeTravel(runtime.store, [i.id for i in getattr(cell, "instruments", ()) or ()], self)
        self.time_bar = TimeTravelBar(self.time_travel, runtime.store.clock, self)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.time_bar)
        for panel in (self.robots, self.dashboard, self.jobs):
            self.time_travel.moment_changed.connect(panel.show_moment)

        self.docks: dict[str, QDockWidget] = {}
        self._add_dock("Dashboard", self.dashboard, Qt.DockWidgetArea.TopDockWidgetArea)
        self._add_dock("Jobs", self.jobs, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._add_dock("Detail", self.detail, Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("Robots", self.robots, Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("Metrics", self.metrics, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._add_dock("Templates", self.templates, Qt.DockWidgetArea.LeftDockWidgetArea)
        # the Schedules panel (list, calendar, forecast) scrolls in a short dock instead of
        # raising the window's minimum height beyond a 720-pixel screen
        schedules = QScrollArea()
        schedules.setWidgetResizable(True)
        schedules.setFrameShape(QFrame.Shape.NoFrame)
        schedules.setWidget(self.schedules)
        self._add_dock("Schedules", schedules, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._add_dock("Inbox", self.inbox, Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("Playbook", self.playbook, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._add_dock("Timeline", self.timeline, Qt.DockWidgetArea.RightDockWidgetArea)
        self._add_dock("Fleet", self.fleet, Qt.DockWidgetArea.RightDockWidgetArea)
        # two tab groups, so that every tab's title is shown whole at 1280x720: the wide workspaces
        # beside Jobs, what shows the selected order and the workcell's state beside Detail.
        # The layout is off meanwhile: Qt lays the window out while it makes the second group's
        # tab bar, which made a second, stray bar (drawn over Jobs, never updated)
        layout = self.layout()
        assert layout is not None  # a QMainWindow always has its own
        layout.setEnabled(False)
        for group, names in (("Jobs", ("Templates", "Schedules", "Playbook", "Metrics")),
                             ("Detail", ("Robots", "Inbox", "Timeline", "Fleet"))):
            for name in names:
                self.tabifyDockWidget(self.docks[group], self.docks[name])
            self.docks[group].raise_()
        layout.setEnabled(True)
        self._on_inbox_counts(len(self.inbox.model.all), sum(i.escalated for i in self.inbox.model.all))
        self._layout_pending = True

        file_menu = self.menuBar().addMenu("&File")
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence("Ctrl+Q"))  # StandardKey.Quit is empty on some platforms
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)
        view_menu = self.menuBar().addMenu("&View")
        for n, dock in enumerate(self.docks.values(), 1):
            dock.toggleViewAction().setText(f"{dock.windowTitle()} panel")  # shown or hidden
            if n < 12:
                dock.toggleViewAction().setShortcut(QKeySequence(f"Shift+F{n + 1}"))
            view_menu.addAction(dock.toggleViewAction())
        self.time_bar.toggleViewAction().setText("Time travel bar")
        self.time_bar.toggleViewAction().setShortcut(QKeySequence("Ctrl+Shift+T"))
        view_menu.addAction(self.time_bar.toggleViewAction())
        view_menu.addSeparator()
        theme_menu = view_menu.addMenu("&Theme")
        self.theme_actions: dict[str, QAction] = {}
        themes = QActionGroup(self)
        for name in THEME_NAMES:
            action = QAction(load_theme(name).label, self)
            action.setObjectName(f"theme_{name}")
            action.setCheckable(True)
            action.setShortcut(QKeySequence({"light": "Ctrl+Shift+L", "dark": "Ctrl+Shift+N"}.get(name, "")))
            action.setChecked(name == self.theme.name)
            action.triggered.connect(lambda _checked=False, name=name: self.set_theme(name))
            themes.addAction(action)
            theme_menu.addAction(action)
            self.theme_actions[name] = action
        self.dashboard_action = QAction("Dashboard &details", self)
        self.dashboard_action.setObjectName("dashboardDetails")
        self.dashboard_action.setCheckable(True)
        self.dashboard_action.setChecked(self.dashboard.expanded)
        self.dashboard_action.setShortcut(QKeySequence("Ctrl+Shift+D"))
        self.dashboard_action.setToolTip("Show or hide the Dashboard's sections below the KPI cards")
        self.dashboard_action.toggled.connect(self.dashboard.set_expanded)
        view_menu.insertAction(view_menu.actions()[len(self.docks)], self.dashboard_action)

        go_menu = self.menuBar().addMenu("&Go")
        self.command_palette = CommandPalette(self._palette_entries, runtime.store, self)
        self.command_palette.chosen.connect(self.run_palette_item)
        self.palette_action = QAction("&Command palette…", self)
        self.palette_action.setObjectName("commandPalette")
        self.palette_action.setShortcut(QKeySequence("Ctrl+K"))
        self.palette_action.setToolTip("Find an order by id, a template, an instrument or an action")
        self.palette_action.triggered.connect(self.show_palette)
        go_menu.addAction(self.palette_action)
        go_menu.addAction(self.time_bar.focus_action)
        go_menu.addSeparator()
        for n, name in enumerate(self.docks, 1):
            action = QAction(f"Go to {name}", self)
            action.setObjectName(f"go_{name.lower()}")
            action.setShortcut(QKeySequence(f"Ctrl+{n}" if n <= 9 else {"Timeline": "Ctrl+Alt+T",
                                                                          "Fleet": "Ctrl+Alt+F"}.get(name, "")))
            action.setToolTip(f"Show the {name} panel and put the focus in it")
            action.triggered.connect(lambda _checked=False, name=name: self.go_to(name))
            go_menu.addAction(action)

        help_menu = self.menuBar().addMenu("&Help")
        self.help_dialog: HelpDialog | None = None
        for key, text, shortcut, slot in (
                ("shortcuts", "&Keyboard shortcuts", "F1", self.show_shortcuts),
                ("data", "&Where the data lives", "Ctrl+F1", self.show_data_locations),
                ("about", "&About labconsole", "Ctrl+Shift+F1", self.show_about)):
            action = QAction(text, self)
            action.setObjectName(f"help_{key}")
            if shortcut:
                action.setShortcut(QKeySequence(shortcut))
            action.triggered.connect(slot)
            help_menu.addAction(action)

        self.connection_label = QLabel("", self)
        self.lag_label = QLabel("", self)
        self.store_label = QLabel(str(runtime.store.path), self)
        self.lag_probe = LoopLagProbe()
        self.loop_lag = LoopLagIndicator(self.lag_probe, self)
        for label in (self.connection_label, self.lag_label, self.loop_lag, self.store_label):
            self.statusBar().addPermanentWidget(label)
        self.resize(1280, 720)
        if self._restore_layout():
            self._layout_pending = False
        self._stats_timer = QTimer(self)
        self._stats_timer.setInterval(1000)
        self._stats_timer.timeout.connect(self._show_stats)

    @Slot(int, int)
    def _on_inbox_counts(self, waiting: int, escalated: int) -> None:
        """The window title counts what waits for a person (and how much of it is overdue)."""
        title = "labconsole" if not waiting else \
            f"labconsole — {waiting} waiting" + (f" ({escalated} escalated)" if escalated else "")
        self.setWindowTitle(title)
        self.docks["Inbox"].setWindowTitle(f"Inbox ({waiting})" if waiting else "Inbox")
        # the tray (where there is one) holds the escalated count while there is one
        if escalated and self.tray is None and QSystemTrayIcon.isSystemTrayAvailable():
            self.tray = QSystemTrayIcon(QApplication.windowIcon(), self)
            self.tray.activated.connect(self._show_inbox)
        if self.tray is not None:
            self.tray.setToolTip(f"labconsole — {escalated} escalated, {waiting} waiting in the inbox")
            self.tray.setVisible(bool(escalated))
            if escalated > self._escalated_seen:
                self.tray_message = f"{escalated} inbox item{'s' if escalated != 1 else ''} waiting too long"
                self.tray.showMessage("labconsole", self.tray_message, QSystemTrayIcon.MessageIcon.Warning)
        self._escalated_seen = escalated

    @Slot()
    def _show_inbox(self) -> None:
        """The tray icon was clicked: bring the window and its Inbox forward."""
        self.showNormal()
        self.raise_()
        self.activateWindow()
        self.docks["Inbox"].show()
        self.docks["Inbox"].raise_()

    def _add_dock(self, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> None:
        dock = QDockWidget(name, self)
        dock.setObjectName(f"dock{name}")
        dock.setWidget(widget)
        panel = widget.widget() if isinstance(widget, QScrollArea) else widget
        if isinstance(panel, Panel):  # a tab behind another is covered, not hidden: tell the panel
            dock.visibilityChanged.connect(panel.set_tab_shown)
        self.addDockWidget(area, dock)
        self.docks[name] = dock

    # -- data
    async def load_orders(self) -> int:
        """Load every order into the Jobs table and the published templates into the Templates
        list (off the loop; called once the runtime has started), then start the status figures."""
        self.statusBar().showMessage("Loading orders…")
        count = await self.jobs.load()
        await self.templates.reload()
        if self.forecast is None and self.runtime.dispatcher is not None:
            self.forecast = Forecast(self.runtime, process=True)
            self.forecast.add_listener(self.timeline.set_forecast)
            self.detail.set_forecast(self.forecast)
            # action previews show moved ETAs
            self.jobs.actions.forecast = self.robots.forecast = self.inbox.forecast = self.forecast
            self.jobs.set_forecast(self.forecast)
            await self.forecast.start()
            self.schedules.set_forecast(self.forecast)
            self.dashboard.set_forecast(self.forecast)
            await WindowWarnings(self.forecast, self.inbox.inbox).start()
        self.statusBar().showMessage(f"Loaded {count:,} orders", 4000)
        self._stats_timer.start()
        self.fleet.update_refresh()  # the Data Services link is there now
        self.inbox.inbox.start()  # escalation of items waiting too long
        return count

    def set_theme(self, name: str) -> Theme:
        """Apply the Light or Dark theme to the whole application and keep the choice."""
        self.theme = apply_theme(gui_application(), name)
        self.theme_actions[self.theme.name].setChecked(True)
        self.settings.setValue(SETTINGS_KEY, self.theme.name)
        self.settings.sync()
        return self.theme

    # -- help
    def _open_help(self, title: str, html: str) -> HelpDialog:
        if self.help_dialog is not None:
            self.help_dialog.close()
        dialog = HelpDialog(title, html, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.destroyed.connect(lambda *_: setattr(self, "help_dialog", None))
        self.help_dialog = dialog
        dialog.open()
        return dialog

    @Slot()
    def show_shortcuts(self) -> HelpDialog:
        """Help > Keyboard shortcuts: every action of the window that has keys, by panel."""
        return self._open_help("Keyboard shortcuts", shortcuts_html(collect_shortcuts(self, self.docks)))

    @Slot()
    def show_data_locations(self) -> HelpDialog:
        """Help > Where the data lives: data folder, store, settings, views, Data Services address."""
        store_path = Path(self.runtime.store.path)
        return self._open_help("Where the data lives", data_html(
            store_path.parent, store_path, self.settings.fileName(), self.jobs.views.path,
            self.data_services_address()))

    @Slot()
    def show_about(self) -> HelpDialog:
        """Help > About: versions of labconsole, Qt, PySide6 and Python."""
        return self._open_help("About labconsole", about_html())

    def data_services_address(self) -> str | None:
        """The Data Services URL (embedded or remote), once the link has started."""
        link = self.runtime.link
        url = link.state.url if link is not None else None
        if not url:
            return None
        return f"{url} (embedded in this console)" if link is not None and link.embedded else url

    # -- finding and focusing
    @Slot()
    def show_palette(self) -> CommandPalette:
        """Go > Command palette (Ctrl+K)."""
        self.command_palette.popup(self)
        return self.command_palette

    def _palette_entries(self) -> list[PaletteItem]:
        actions = []
        for menu_action in self.menuBar().actions():
            menu = menu_action.menu()
            group = menu_action.text().replace("&", "")
            stack = list(menu.actions()) if isinstance(menu, QMenu) else []
            while stack:
                action = stack.pop(0)
                if action is self.palette_action:
                    continue
                if isinstance(submenu := action.menu(), QMenu):
                    stack[:0] = submenu.actions()
                    continue
                action.setProperty("paletteGroup", group)
                actions.append(action)
        instruments = [PaletteItem(INSTRUMENT, v.id, v.name or v.id, f"{v.id} · {v.kind} · {v.status.name}")
                       for v in self.runtime.instruments()]
        templates = [PaletteItem(TEMPLATE, t.name, t.name, f"version {t.version}")
                     for t in self.runtime.templates()]
        return instruments + templates + action_items(actions)

    @Slot(object)
    def run_palette_item(self, item: PaletteItem) -> None:
        """Open what the palette found: an order in Jobs and Detail, a template in Templates, an
        instrument's detail window; or run an action."""
        if item.kind == ORDER:
            self.focus_order(item.key)
        elif item.kind == INSTRUMENT:
            self.go_to("Robots")
            self.robots.open_details(item.key)
        elif item.kind == TEMPLATE:
            self.go_to("Templates")
            row = self.templates.list_model.row_of(item.key)
            if row is not None:
                self.templates.list.selectRow(row)
        elif item.kind == ACTION:
            item.key.trigger()

    def go_to(self, name: str) -> None:
        """Show a panel's dock, bring it to the front and put the focus in it."""
        dock = self.docks[name]
        dock.show()
        dock.raise_()
        dock.widget().setFocus(Qt.FocusReason.ShortcutFocusReason)

    @Slot(str)
    def focus_order(self, order_id: str) -> bool:
        """Select ``order_id`` in Jobs and show it in Detail (deep links, the palette, the Robots
        panel); True when Jobs lists it now (else Jobs selects it once it arrives)."""
        log.info("focusing order %s", order_id)
        self.docks["Jobs"].show()
        self.docks["Jobs"].raise_()
        shown = self.jobs.focus_order(order_id)
        if not shown:
            QTimer.singleShot(100, lambda: self.jobs.focus_order(order_id))
        self._show_details(order_id)
        if self.isMinimized():
            self.showNormal()
        self.raise_()
        self.activateWindow()
        return shown

    @Slot(bool)
    def _on_dashboard_expanded(self, expanded: bool) -> None:
        self.dashboard_action.setChecked(expanded)
        self.settings.setValue(DASHBOARD_KEY, expanded)
        if expanded:  # room for the sections, the Jobs table keeps most of the height
            self.resizeDocks([self.docks["Dashboard"]], [max(260, int(self.height() * 0.3))],
                             Qt.Orientation.Vertical)

    def start_loop_lag(self) -> None:
        """Start the loop-lag probe and its status-bar figure (needs the running event loop)."""
        self.loop_lag.start()

    @Slot(str)
    def _show_details(self, order_id: str) -> None:
        self._on_order_selected(order_id)
        self.docks["Detail"].show()
        self.docks["Detail"].raise_()

    @Slot(str)
    def _show_alerted_order(self, order_id: str) -> None:
        """Select ``order_id`` in Jobs (clearing a filter that hides it) and show it in Detail."""
        if self.jobs.model.get(order_id) is not None and self.jobs.model.row_of(order_id) is None:
            self.jobs.filter_bar.clear()
        self._select_in_jobs(order_id)
        self._show_details(order_id)

    @Slot(str)
    def _select_in_jobs(self, order_id: str) -> None:
        """Select an order in Jobs (a new run, a step clicked in Detail); it may arrive a frame later."""
        self.docks["Jobs"].raise_()
        if not self.jobs.focus_order(order_id):
            QTimer.singleShot(100, lambda: self.jobs.focus_order(order_id))

    @Slot(str)
    def _on_order_selected(self, order_id: str) -> None:
        show = getattr(self.detail, "show_order", None)
        if show is not None:
            show(order_id)

    @Slot()
    def _show_stats(self) -> None:
        store = self.runtime.store
        if store.commit_count:
            mean = store.commit_seconds / store.commit_count * 1000
            self.lag_label.setText(f"commits {store.commit_count:,} · mean {mean:.2f} ms")
        status = self.runtime.connection_status()
        if status:
            self.connection_label.setText(status)

    # -- layout persistence
    def _restore_layout(self) -> bool:
        geometry = self.settings.value("main/geometry")
        state = self.settings.value("main/state")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        return isinstance(state, QByteArray) and self.restoreState(state, STATE_VERSION)

    def _default_layout(self) -> None:
        width, height = self.width(), self.height()
        self.resizeDocks([self.docks["Jobs"], self.docks["Detail"]],
                         [int(width * 0.64), int(width * 0.36)], Qt.Orientation.Horizontal)
        top = int(height * 0.3) if self.dashboard.expanded else self.dashboard.compact_height()
        self.resizeDocks([self.docks["Dashboard"], self.docks["Jobs"]], [top, height - top],
                         Qt.Orientation.Vertical)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        jobs, dashboard = self.docks["Jobs"], self.docks["Dashboard"]
        if not self._layout_pending and not self.dashboard.expanded and jobs.isVisible() \
                and dashboard.isVisible() and not jobs.isFloating() and not dashboard.isFloating():
            # Qt shares a taller window among the dock areas, the top one included: the compact
            # dashboard (its height fixed) would sit over an empty band, Jobs below it
            top = self.dashboard.compact_height()
            self.resizeDocks([dashboard, jobs], [top, self.height() - top],
                             Qt.Orientation.Vertical)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ChildPolished and isinstance(event, QChildEvent) \
                and isinstance(bar := event.child(), QTabBar):
            # a dock tab bar (Qt makes one per tab group) shows every title whole: where a
            # group's tabs do not fit (docks the operator moved into a narrow area) it scrolls
            bar.setElideMode(Qt.TextElideMode.ElideNone)
            bar.setUsesScrollButtons(True)
        return super().event(event)

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
        self._stats_timer.stop()
        self.loop_lag.stop()
        self.time_bar.shutdown()
        for panel in (self.dashboard, self.robots, self.metrics, self.detail, self.templates, self.schedules,
                      self.jobs, self.inbox, self.playbook, self.timeline, self.fleet):
            close = getattr(panel, "shutdown", None)
            if close is not None:
                close()
        if self.forecast is not None:
            self.forecast.stop()
        self.bridge.close()
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        super().closeEvent(event)


def _flag(value: object) -> bool:
    """A boolean kept in QSettings (an INI file gives back "true"/"false" strings)."""
    return value is True or (isinstance(value, str) and value.lower() == "true")
