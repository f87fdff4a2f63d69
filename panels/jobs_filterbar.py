"""The Jobs panel's filter bar: views, free-text search and one control per filter field.

The bar only edits an :class:`~panels.jobs_filter.OrderFilter` and emits it (``changed``); the
table model does the filtering. Typing in the search box is debounced (one filter per pause,
not per key). Multi-choice filters (status, priority, instrument, template) are menus of
checkable entries that stay open while the operator ticks several.
"""

from __future__ import annotations

from collections.abc import Iterable

from PySide6.QtCore import QDateTime, QPoint, QRect, QSignalBlocker, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QAction, QMouseEvent
from PySide6.QtWidgets import (
    QComboBox,
    QDateTimeEdit,
    QLabel,
    QLayout,
    QLayoutItem,
    QLineEdit,
    QMenu,
    QPushButton,
    QToolButton,
    QWidget,
)

from core.orders import OrderStatus
from panels.jobs_filter import (
    KINDS,
    PRIORITY_CHOICES,
    TIME_FIELDS,
    TIME_PRESETS,
    UNASSIGNED,
    OrderFilter,
    SavedView,
    SavedViews,
)
from panels.style import status_icon
from panels.theme import keep_styled, text_style

SEARCH_DEBOUNCE_MS = 250


class FlowLayout(QLayout):
    """Lays widgets out left to right and wraps to a new line when the width runs out.

    So the filter bar fits a narrow dock (several lines) as well as a wide one (one line), and
    never forces a minimum width on the window larger than its widest control.
    """

    def __init__(self, parent: QWidget | None = None, spacing: int = 6) -> None:
        super().__init__(parent)
        self._items: list[QLayoutItem] = []
        self.setSpacing(spacing)
        self.setContentsMargins(0, 0, 0, 0)

    def addItem(self, item: QLayoutItem) -> None:  # noqa: N802
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:  # noqa: N802
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientation:  # noqa: N802
        return Qt.Orientation(0)

    def hasHeightForWidth(self) -> bool:  # noqa: N802
        return True

    def heightForWidth(self, width: int) -> int:  # noqa: N802
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:  # noqa: N802
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self) -> QSize:  # noqa: N802
        width = sum(i.sizeHint().width() for i in self._visible()) + self.spacing() * max(0, len(self._visible()) - 1)
        height = max((i.sizeHint().height() for i in self._visible()), default=0)
        return QSize(width, height)

    def minimumSize(self) -> QSize:  # noqa: N802
        size = QSize()
        for item in self._visible():
            size = size.expandedTo(item.minimumSize())
        margins = self.contentsMargins()
        return size + QSize(margins.left() + margins.right(), margins.top() + margins.bottom())

    def _visible(self) -> list[QLayoutItem]:
        return [i for i in self._items if not ((w := i.widget()) is not None and w.isHidden())]

    def _arrange(self, rect: QRect, *, move: bool) -> int:
        x, y, line = rect.x(), rect.y(), 0
        space = self.spacing()
        for item in self._visible():
            hint = item.sizeHint()
            width = min(hint.width(), rect.width())
            if x + width > rect.right() + 1 and line > 0:
                x, y, line = rect.x(), y + line + space, 0
            if move:
                item.setGeometry(QRect(QPoint(x, y), QSize(width, hint.height())))
            x += width + space
            line = max(line, hint.height())
        return y + line - rect.y()


class SearchEdit(QLineEdit):
    """The search box: wide enough for a typical query in a flow of small controls."""

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(self.fontMetrics().horizontalAdvance("x" * 38), super().sizeHint().height())


class StayOpenMenu(QMenu):
    """A menu whose checkable entries toggle without closing it (tick several at once)."""

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        action = self.activeAction()
        if action is not None and action.isEnabled() and action.isCheckable():
            action.trigger()
            event.accept()
            return
        super().mouseReleaseEvent(event)


class ChoiceButton(QPushButton):
    """A button with a menu of checkable choices; its text says what is chosen."""

    changed = Signal()

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.setAutoDefault(False)
        self.menu_ = StayOpenMenu(self)
        self.setMenu(self.menu_)
        self._any = QAction("Any", self)
        self._any.triggered.connect(self.clear)
        self._choices: dict[str, QAction] = {}
        self._labels: dict[str, str] = {}
        self._rebuild_menu()
        self._update_text()

    def set_choices(self, items: Iterable[tuple[str, str]], icons: dict[str, object] | None = None) -> None:
        """Offer ``(value, label)`` choices; ticked values that are still offered stay ticked."""
        chosen = self.chosen()
        for old in self._choices.values():
            old.deleteLater()
        self._choices = {}
        self._labels = {}
        for value, label in items:
            action = QAction(label, self)
            action.setCheckable(True)
            action.setChecked(value in chosen)
            if icons and value in icons:
                action.setIcon(icons[value])  # type: ignore[arg-type]
            action.toggled.connect(self._on_toggled)
            self._choices[value] = action
            self._labels[value] = label
        self._rebuild_menu()
        self._update_text()

    def _rebuild_menu(self) -> None:
        self.menu_.clear()
        self.menu_.addAction(self._any)
        self.menu_.addSeparator()
        for action in self._choices.values():
            self.menu_.addAction(action)

    def chosen(self) -> frozenset[str]:
        return frozenset(v for v, a in self._choices.items() if a.isChecked())

    def set_chosen(self, values: Iterable[str]) -> None:
        wanted = set(values)
        for value, action in self._choices.items():
            with QSignalBlocker(action):
                action.setChecked(value in wanted)
        self._update_text()

    def choice(self, value: str) -> QAction:
        """The menu entry of ``value`` (``trigger()`` it to tick or untick)."""
        return self._choices[value]

    def offered(self) -> list[tuple[str, str]]:
        """Every (value, label) the menu offers, in order."""
        return [(v, self._labels[v]) for v in self._choices]

    @Slot()
    def clear(self) -> None:
        if self.chosen():
            self.set_chosen(())
            self.changed.emit()

    @Slot(bool)
    def _on_toggled(self, _on: bool) -> None:
        self._update_text()
        self.changed.emit()

    def _update_text(self) -> None:
        chosen = [self._labels[v].split(" (")[0] for v in self._choices if self._choices[v].isChecked()]
        if not chosen:
            self.setText(f"{self.title}: any")
            self.setToolTip(f"Filter by {self.title.lower()}")
        elif len(chosen) <= 2:
            self.setText(f"{self.title}: {', '.join(chosen)}")
            self.setToolTip("\n".join(chosen))
        else:
            self.setText(f"{self.title}: {len(chosen)} chosen")
            self.setToolTip("\n".join(chosen))
        font = self.font()
        font.setBold(bool(chosen))
        self.setFont(font)


class FilterBar(QWidget):
    """Views (built-in and saved), search, and the filter fields. Emits ``changed``.

    ``view_chosen`` carries a :class:`SavedView` when the operator picks one (the panel applies
    its sort too); ``save_requested`` asks the panel to name and save the current view.
    """

    changed = Signal(object)
    """The new :class:`OrderFilter`."""
    view_chosen = Signal(object)
    save_requested = Signal()
    history_toggled = Signal(bool)
    """"Search all history" was switched on (True) or off."""
    more_requested = Signal()
    """The operator asks for the next page of history results."""

    def __init__(self, views: SavedViews, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.views = views
        self._filter = OrderFilter()
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(SEARCH_DEBOUNCE_MS)
        self._debounce.timeout.connect(self._emit)

        self.view_combo = QComboBox(self)
        self.view_combo.setObjectName("views")
        self.view_combo.setPlaceholderText("Custom filter")
        self.view_combo.setMinimumContentsLength(16)
        self.view_combo.setToolTip("Saved views: a filter and a sort")
        self.view_combo.activated.connect(self._on_view_activated)
        self.save_button = QToolButton(self)
        self.save_button.setText("Save view…")
        self.save_button.setToolTip("Save the current filter and sort as a named view")
        self.save_button.clicked.connect(self.save_requested)
        self.delete_button = QToolButton(self)
        self.delete_button.setText("Delete view")
        self.delete_button.clicked.connect(self._delete_view)

        self.search = SearchEdit(self)
        self.search.setObjectName("search")
        self.search.setPlaceholderText("Search id, run, template, instrument, details…   (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.textEdited.connect(lambda _t: self._debounce.start())
        self.search.returnPressed.connect(self._emit)

        self.status = ChoiceButton("Status", self)
        self.status.set_choices(((s.name, s.name) for s in OrderStatus),
                                {s.name: status_icon(s) for s in OrderStatus})
        self.priority = ChoiceButton("Priority", self)
        self.priority.set_choices(PRIORITY_CHOICES.items())
        self.instrument = ChoiceButton("Instrument", self)
        self.template = ChoiceButton("Template", self)
        for button in (self.status, self.priority, self.instrument, self.template):
            button.changed.connect(self._emit)

        self.kind = QComboBox(self)
        self.kind.setObjectName("kind")
        for key, label in KINDS.items():
            self.kind.addItem(label, key)
        self.kind.currentIndexChanged.connect(self._emit)
        self.time_field = QComboBox(self)
        for key, (label, _pos) in TIME_FIELDS.items():
            self.time_field.addItem(label, key)
        self.time_field.setToolTip("Which time the range applies to")
        self.time = QComboBox(self)
        self.time.setObjectName("time")
        for key, (label, _seconds) in TIME_PRESETS.items():
            self.time.addItem(label, key)
        self.time_from = QDateTimeEdit(self)
        self.time_to = QDateTimeEdit(self)
        for edit in (self.time_from, self.time_to):
            edit.setCalendarPopup(True)
            edit.setDisplayFormat("yyyy-MM-dd HH:mm")
            edit.hide()
            edit.dateTimeChanged.connect(self._emit)
        self.time_sep = QLabel("–", self)
        self.time_sep.hide()
        self.time.currentIndexChanged.connect(self._on_time_preset)
        self.time_field.currentIndexChanged.connect(self._emit)

        self.run_chip = QToolButton(self)
        self.run_chip.setObjectName("runChip")
        self.run_chip.setToolTip("Showing one run and its steps: click to show every run")
        self.run_chip.clicked.connect(self.clear_run)
        self.run_chip.hide()
        self.clear_button = QToolButton(self)
        self.clear_button.setText("Clear filters")
        self.clear_button.clicked.connect(self.clear)
        self.history_button = QToolButton(self)
        self.history_button.setObjectName("historyMode")
        self.history_button.setText("Search all history")
        self.history_button.setCheckable(True)
        self.history_button.setToolTip("Search every order on disk, archived ones included (text, status, "
                                       "template, created or ended time), instead of the live window")
        self.history_button.toggled.connect(self._on_history_toggled)
        self.history_note = QLabel(self)
        self.history_note.setObjectName("historyNote")
        self.history_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.history_note.hide()
        self.more_button = QToolButton(self)
        self.more_button.setObjectName("historyMore")
        self.more_button.setText("Load more")
        self.more_button.setToolTip("The next page of older matches")
        self.more_button.clicked.connect(self.more_requested)
        self.more_button.hide()

        self.search.setMinimumWidth(160)
        flow = FlowLayout(self)
        for widget in (self.view_combo, self.save_button, self.delete_button, self.search,
                       self.status, self.priority, self.instrument, self.template, self.kind,
                       self.time_field, self.time, self.time_from, self.time_sep, self.time_to,
                       self.run_chip, self.clear_button, self.history_button, self.history_note,
                       self.more_button):
            flow.addWidget(widget)
        self.refresh_views()

    # ------------------------------------------------------------------ reading and setting

    @property
    def filter(self) -> OrderFilter:
        return self._filter

    def current(self) -> OrderFilter:
        """The filter the controls describe now (typing not yet debounced included)."""
        preset = self.time.currentData()
        time_from = time_to = None
        if preset == "custom":
            time_from = self.time_from.dateTime().toSecsSinceEpoch()
            time_to = self.time_to.dateTime().toSecsSinceEpoch()
        return OrderFilter(
            statuses=frozenset(OrderStatus[s] for s in self.status.chosen()),
            priorities=self.priority.chosen(), instruments=self.instrument.chosen(),
            templates=self.template.chosen(), kind=self.kind.currentData(), run=self._filter.run,
            time_preset=preset, time_field=self.time_field.currentData(),
            time_from=float(time_from) if time_from is not None else None,
            time_to=float(time_to) if time_to is not None else None,
            text=self.search.text())

    def set_filter(self, spec: OrderFilter, *, emit: bool = True) -> None:
        """Show ``spec`` in the controls (and apply it unless ``emit`` is False)."""
        widgets = (self.search, self.kind, self.time, self.time_field, self.time_from, self.time_to)
        blockers = [QSignalBlocker(w) for w in widgets]
        self.search.setText(spec.text)
        self.status.set_chosen(s.name for s in spec.statuses)
        self.priority.set_chosen(spec.priorities)
        self._ensure_choices(self.instrument, spec.instruments)
        self.instrument.set_chosen(spec.instruments)
        self._ensure_choices(self.template, spec.templates)
        self.template.set_chosen(spec.templates)
        self.kind.setCurrentIndex(max(0, self.kind.findData(spec.kind)))
        self.time.setCurrentIndex(max(0, self.time.findData(spec.time_preset)))
        self.time_field.setCurrentIndex(max(0, self.time_field.findData(spec.time_field)))
        if spec.time_from is not None:
            self.time_from.setDateTime(QDateTime.fromSecsSinceEpoch(int(spec.time_from)))
        if spec.time_to is not None:
            self.time_to.setDateTime(QDateTime.fromSecsSinceEpoch(int(spec.time_to)))
        del blockers
        self._show_custom(spec.time_preset == "custom")
        self._filter = spec
        self._show_run(spec.run)
        self._sync_view_combo()
        if emit:
            self.changed.emit(spec)

    def set_run(self, run_id: str | None) -> None:
        """Show only ``run_id`` and its steps (None: every run)."""
        self.set_filter(self.current().with_(run=run_id))

    @Slot()
    def clear_run(self) -> None:
        self.set_run(None)

    @Slot()
    def clear(self) -> None:
        self.set_filter(OrderFilter())

    def set_names(self, templates: Iterable[str], instruments: Iterable[str]) -> None:
        """The template and instrument names the menus offer (from the orders seen)."""
        self.template.set_choices((t, t) for t in sorted(set(templates)))
        names = sorted(set(instruments))
        self.instrument.set_choices([(UNASSIGNED, "(not assigned)")] + [(i, i) for i in names])

    def _ensure_choices(self, button: ChoiceButton, values: Iterable[str]) -> None:
        offered = button.offered()
        known = {v for v, _ in offered}
        missing = [v for v in values if v not in known]
        if missing:
            button.set_choices(offered + [(v, v or "(not assigned)") for v in missing])

    # ------------------------------------------------------------------ all history

    @property
    def history_mode(self) -> bool:
        return self.history_button.isChecked()

    def set_history_mode(self, on: bool) -> None:
        """Search all history on disk (True) or filter the live window (False)."""
        self.history_button.setChecked(on)

    def set_history_note(self, text: str, *, more: bool = False, error: bool = False) -> None:
        """What the history search reaches and found; ``more``: offer the next page."""
        self.history_note.setText(text)
        self.history_note.setToolTip(text)
        keep_styled(self.history_note, text_style("text_error" if error else "muted"))
        self.more_button.setVisible(self.history_mode and more)

    @Slot(bool)
    def _on_history_toggled(self, on: bool) -> None:
        for widget in (self.priority, self.instrument, self.kind):
            widget.setEnabled(not on)
            widget.setToolTip("Filters the live window only; not searched in all history" if on else "")
        started = self.time_field.findData("started")
        item = self.time_field.model().item(started)  # type: ignore[attr-defined]
        if item is not None:
            item.setEnabled(not on)
        if on and self.time_field.currentData() == "started":
            with QSignalBlocker(self.time_field):
                self.time_field.setCurrentIndex(self.time_field.findData("created"))
        self.history_button.setText("Search all history ✓" if on else "Search all history")
        self.history_note.setVisible(on)
        self.more_button.setVisible(False)
        self.history_toggled.emit(on)
        if on:
            self._filter = self.current()
            self._sync_view_combo()

    # ------------------------------------------------------------------ views

    def refresh_views(self, select: str | None = None) -> None:
        with QSignalBlocker(self.view_combo):
            self.view_combo.clear()
            for name in self.views.names():
                view = self.views.get(name)
                self.view_combo.addItem(name + ("" if view is None or view.builtin else "  ★"), name)
        if select is not None:
            self.view_combo.setCurrentIndex(self.view_combo.findData(select))
        self._sync_view_combo()

    def _sync_view_combo(self) -> None:
        name = self.view_combo.currentData()
        view = self.views.get(name) if name else None
        if view is None or view.filter != self._filter:
            match = next((n for n in self.views.names() if self.views.get(n).filter == self._filter), None)  # type: ignore[union-attr]
            with QSignalBlocker(self.view_combo):
                self.view_combo.setCurrentIndex(self.view_combo.findData(match) if match else -1)
            view = self.views.get(match) if match else None
        self.delete_button.setVisible(view is not None and not view.builtin)

    def choose_view(self, name: str) -> SavedView | None:
        """Apply the view called ``name`` (as picking it in the combo does)."""
        view = self.views.get(name)
        if view is None:
            return None
        with QSignalBlocker(self.view_combo):
            self.view_combo.setCurrentIndex(self.view_combo.findData(name))
        self.set_filter(view.filter)
        self.view_chosen.emit(view)
        return view

    @Slot(int)
    def _on_view_activated(self, index: int) -> None:
        name = self.view_combo.itemData(index)
        if name:
            self.choose_view(name)

    @Slot()
    def _delete_view(self) -> None:
        name = self.view_combo.currentData()
        view = self.views.get(name) if name else None
        if view is not None and not view.builtin:
            self.views.delete(name)
            self.refresh_views()

    # ------------------------------------------------------------------ internals

    @Slot(int)
    def _on_time_preset(self, _index: int) -> None:
        custom = self.time.currentData() == "custom"
        if custom and not self.time_from.isVisible():
            now = QDateTime.currentDateTime()
            with QSignalBlocker(self.time_from), QSignalBlocker(self.time_to):
                self.time_from.setDateTime(now.addDays(-1))
                self.time_to.setDateTime(now)
        self._show_custom(custom)
        self._emit()

    def _show_custom(self, on: bool) -> None:
        for widget in (self.time_from, self.time_sep, self.time_to):
            widget.setVisible(on)

    def _show_run(self, run_id: str | None) -> None:
        self.run_chip.setVisible(run_id is not None)
        self.run_chip.setText(f"Run {run_id}  ✕" if run_id else "")

    @Slot()
    def _emit(self) -> None:
        self._debounce.stop()
        spec = self.current()
        if spec != self._filter:
            self._filter = spec
            self._sync_view_combo()
            self.changed.emit(spec)

    def shutdown(self) -> None:
        self._debounce.stop()
