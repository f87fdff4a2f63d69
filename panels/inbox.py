"""Inbox panel: everything waiting for a person, most urgent first, answered in place.

A table (kind, priority, age, what it is, what it concerns) filtered in Python by kind and free
text, and beside it the selected item's answer form, generated from the item's typed fields
(text, number with unit and range, choice, yes/no, barcode, JSON). A refused answer shows the
field's message in the form and keeps what was typed; an accepted one is committed with its
effect (one transaction) and the item leaves the list. For a paused error the consequences of
the chosen decision are previewed (:func:`core.impact.preview`) before it is taken, and the
playbook's suggestion is preselected. Escalated items are marked; the open and escalated counts
go to the window title through :attr:`InboxPanel.counts_changed`. A notification beyond the window
(webhook, e-mail: :mod:`core.notify`) that failed marks its row (✉✗, the reason in its tooltip)
and is listed in the form, which can send it again once it was given up.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QFont, QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.errors import InputError, LabconsoleError
from core.impact import eta_moves, preview
from core.inbox import (
    KINDS,
    FormField,
    Inbox,
    InboxChanged,
    InboxItem,
    InboxRow,
    check_answer,
    read_item,
    read_rows,
)
from core.users import User, os_user, refusal
from panels.dialogs import eta_move_text
from panels.style import format_age
from panels.theme import current_theme, keep_styled
from panels.widgets import TaskKeeper

COLUMNS = ("Kind", "Priority", "Age", "Item", "Concerns")
KIND_LABELS = {"prompt": "Prompt", "error": "Paused error", "approval": "Approval", "lock": "Hands in cell",
               "proposal": "Playbook proposal", "window": "Time window"}
AGE_TICK_MS = 5000
ANSWER_TIP = "Send the answer: checked against the form, then applied and audited in one step"
RESEND_TIP = "Send the notifications that were given up once more"
NARROW = 820
"""Below this width the answer form goes under the list."""
_Index = QModelIndex | QPersistentModelIndex


class InboxModel(QAbstractTableModel):
    """Open items, filtered in Python (kind, free text); ages from the wall clock or a given one."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.all: list[InboxRow] = []
        self.rows: list[InboxRow] = []
        self.kind: str | None = None
        self.text = ""
        self.now = time.time

    def set_items(self, items: list[InboxRow]) -> None:
        self.beginResetModel()
        self.all = items
        self._apply()
        self.endResetModel()

    def remove(self, ids: set[int]) -> None:
        """Items answered: out of the list without reading it again."""
        self.beginResetModel()
        self.all = [i for i in self.all if i.id not in ids]
        self.rows = [i for i in self.rows if i.id not in ids]
        self.endResetModel()

    def set_filter(self, kind: str | None, text: str) -> None:
        self.beginResetModel()
        self.kind, self.text = kind, text.strip().lower()
        self._apply()
        self.endResetModel()

    def _apply(self) -> None:
        words, kind = self.text.split(), self.kind
        if not words and kind is None:
            self.rows = list(self.all)
            return
        self.rows = [i for i in self.all if (kind is None or i.kind == kind) and all(w in i.text for w in words)]

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008, N802 - Qt's signature
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008, N802
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        item, col = self.rows[index.row()], index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == 0:
                return KIND_LABELS.get(item.kind, item.kind) + ("  ▲" if item.escalated else "") + \
                    ("  ✉✗" if item.notice else "")
            if col == 1:
                return item.priority
            if col == 2:
                return format_age(max(0.0, self.now() - item.created))
            if col == 3:
                return item.title
            return item.concerns
        if role == Qt.ItemDataRole.ToolTipRole and col == 0 and (item.escalated or item.notice):
            tips = ["Escalated: waiting longer than this kind's threshold"] if item.escalated else []
            if item.notice:
                tips.append(item.notice)
            return "\n".join(tips)
        if role == Qt.ItemDataRole.FontRole and item.escalated:
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ForegroundRole and col == 0:
            tone = "bad" if item.kind == "error" or item.escalated else "warn" if item.kind in ("prompt", "approval") \
                else "muted"
            return current_theme().color(tone)
        return None

    def item_at(self, row: int) -> InboxRow | None:
        return self.rows[row] if 0 <= row < len(self.rows) else None

    def row_of(self, item_id: int) -> int:
        return next((r for r, i in enumerate(self.rows) if i.id == item_id), -1)


class AnswerForm(QWidget):
    """The answer form of one item, generated from its fields."""

    submitted = Signal(object, dict)
    """(item, typed values) once the form's own checks pass."""
    changed = Signal()
    resend = Signal(object)
    """(item) whose given-up notifications should be sent again."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.item: InboxItem | None = None
        self.now = time.time
        self.editors: dict[str, QWidget] = {}
        self.error_field: str | None = None
        """The field the last refusal named (its editor gets the focus)."""
        self.refused: str | None = None
        """Why the signed-in user may not answer (None: they may); the Answer button says it."""
        self.resend_refused: str | None = None
        """Why the signed-in user may not send notifications again (None: they may)."""
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 4, 4)
        self.heading = QLabel("Select an item to answer it")
        self.heading.setWordWrap(True)
        self.heading.setObjectName("inboxHeading")
        keep_styled(self.heading, lambda t: "#inboxHeading { font-weight: 600; font-size: 11pt; }")
        self.details = QLabel("")
        self.details.setWordWrap(True)
        self.details.setObjectName("inboxDetails")
        keep_styled(self.details, lambda t: f"#inboxDetails {{ color: {t.colors['muted']}; }}")
        self.notices = QLabel("")
        self.notices.setWordWrap(True)
        self.notices.setObjectName("inboxNotices")
        self.notices.setProperty("failing", False)
        keep_styled(self.notices, lambda t: f"#inboxNotices {{ color: {t.colors['muted']}; }} "
                                            f"#inboxNotices[failing=\"true\"] {{ color: {t.colors['text_error']}; }}")
        self.resend_button = QPushButton("Notify again")
        self.resend_button.setToolTip(RESEND_TIP)
        self.resend_button.clicked.connect(lambda: self.item is not None and self.resend.emit(self.item))
        self.resend_button.hide()
        notices = QHBoxLayout()
        notices.addWidget(self.notices, 1)
        notices.addWidget(self.resend_button, 0, Qt.AlignmentFlag.AlignTop)
        self.fields = QFormLayout()
        self.fields.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.consequence = QLabel("")
        self.consequence.setWordWrap(True)
        self.consequence.setObjectName("inboxImpact")
        keep_styled(self.consequence, lambda t: f"#inboxImpact {{ color: {t.colors['text_info']}; }}")
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setObjectName("inboxError")
        keep_styled(self.error, lambda t: f"#inboxError {{ color: {t.colors['text_error']}; }}")
        self.answer_button = QPushButton("Answer")
        self.answer_button.setDefault(True)
        self.answer_button.setEnabled(False)
        self.answer_button.setToolTip(ANSWER_TIP)
        self.answer_button.clicked.connect(self.submit)
        layout.addWidget(self.heading)
        layout.addWidget(self.details)
        layout.addLayout(notices)
        layout.addLayout(self.fields)
        layout.addWidget(self.consequence)
        layout.addWidget(self.error)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.answer_button)
        layout.addLayout(row)
        layout.addStretch(1)

    def show_item(self, item: InboxItem | None) -> None:
        self.item = item
        while self.fields.rowCount():
            self.fields.removeRow(0)
        self.editors = {}
        self.error.setText("")
        self.consequence.setText("")
        self.offer_answer()
        self._show_notices(item)
        if item is None:
            self.heading.setText("Select an item to answer it")
            self.details.setText("")
            return
        self.heading.setText(item.title)
        info = [KIND_LABELS.get(item.kind, item.kind)]
        if item.concerns:
            info.append(item.concerns)
        if item.answerers:
            info.append(f"answered by {', '.join(item.answerers)}")
        if item.context.get("requested_by") and item.context.get("two_people"):
            info.append(f"requested by {item.context['requested_by']}: a second person approves")
        if item.suggestion:
            info.append("suggested: " + ", ".join(f"{v}" for v in item.suggestion.values()))
        self.details.setText(" · ".join(info))
        for f in item.form:
            editor = self._editor(f, (item.suggestion or {}).get(f.name))
            editor.setObjectName(f"field_{f.name}")
            self.editors[f.name] = editor
            label = (f.label or f.name) + (f" ({f.unit})" if f.unit else "") + ("" if f.required else " — optional")
            self.fields.addRow(label, editor)
        self.answer_button.setText({"lock": "Release", "proposal": "Decide", "error": "Apply"}.get(item.kind, "Answer"))

    def offer_answer(self, *, busy: bool = False) -> None:
        """Enable Answer for an item shown, unless an answer is on its way or the signed-in user's
        role may not answer (the tooltip says why)."""
        self.answer_button.setEnabled(self.item is not None and self.refused is None and not busy)
        self.answer_button.setToolTip(self.refused or ANSWER_TIP)

    def offer_resend(self, *, busy: bool = False) -> None:
        """Enable Notify again unless a resend is on its way or the signed-in user's role may not
        (the tooltip says why)."""
        self.resend_button.setEnabled(self.resend_refused is None and not busy)
        self.resend_button.setToolTip(self.resend_refused or RESEND_TIP)

    def _show_notices(self, item: InboxItem | None) -> None:
        notices = item.notices if item is not None else []
        failing = any(n.failing for n in notices)
        now = self.now()
        self.notices.setText("\n".join(n.describe(now) for n in notices))
        self.notices.setVisible(bool(notices))
        if self.notices.property("failing") != failing:
            self.notices.setProperty("failing", failing)
            self.notices.style().unpolish(self.notices)
            self.notices.style().polish(self.notices)
        self.resend_button.setVisible(any(n.state == "failed" for n in notices))

    def _editor(self, f: FormField, suggested: Any) -> QWidget:
        start = suggested if suggested is not None else f.default
        if f.type in ("choice", "yesno"):
            box = QComboBox()
            options = list(f.choices) if f.type == "choice" else ["yes", "no"]
            if not f.required or start is None:
                box.addItem("", None)
            for option in options:
                box.addItem(option, option)
            if start is not None:
                text = ("yes" if start else "no") if isinstance(start, bool) else str(start)
                box.setCurrentIndex(max(0, box.findData(text)))
            box.currentIndexChanged.connect(self.changed)
            return box
        if f.type == "json":
            edit = QPlainTextEdit()
            edit.setPlaceholderText('{"name": value}')
            edit.setFixedHeight(56)
            if start is not None:
                edit.setPlainText(json.dumps(start))
            return edit
        line = QLineEdit()
        if f.type == "number":
            bounds = [f"≥ {f.min:g}" if f.min is not None else "", f"≤ {f.max:g}" if f.max is not None else ""]
            line.setPlaceholderText(" ".join(b for b in bounds if b) or "a number")
        elif f.type == "barcode":
            line.setPlaceholderText("scan or type the barcode")
        if start is not None:
            line.setText(str(start))
        line.returnPressed.connect(self.submit)
        return line

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, editor in self.editors.items():
            if isinstance(editor, QComboBox):
                value = editor.currentData()
            elif isinstance(editor, QPlainTextEdit):
                value = editor.toPlainText()
            else:
                assert isinstance(editor, QLineEdit)
                value = editor.text()
            if value not in (None, ""):
                out[name] = value
        return out

    def set_value(self, name: str, value: str) -> None:
        editor = self.editors[name]
        if isinstance(editor, QComboBox):
            editor.setCurrentIndex(editor.findData(value))
        elif isinstance(editor, QPlainTextEdit):
            editor.setPlainText(value)
        elif isinstance(editor, QLineEdit):
            editor.setText(value)

    def show_error(self, message: str, field: str | None = None) -> None:
        self.error.setText(message)
        self.error_field = field
        editor = self.editors.get(field or "")
        if editor is not None:
            editor.setFocus()

    @Slot()
    def submit(self) -> None:
        if self.item is None:
            return
        if self.refused is not None:  # Return in a field submits too
            self.show_error(self.refused)
            return
        try:
            values = check_answer(self.item.form, self.values())
        except InputError as exc:
            problem = exc.problems[0] if exc.problems else None
            self.show_error(problem.message if problem else str(exc), problem.where.field if problem else None)
            return
        self.error.setText("")
        self.submitted.emit(self.item, values)


class InboxPanel(QWidget):
    """See the module docstring."""

    counts_changed = Signal(int, int)
    """(open items, escalated items)."""
    answered = Signal(int, bool, str)
    """(item id, accepted, message) once an answer was committed or refused."""

    def __init__(self, runtime: RuntimeApi, bridge: Any, parent: QWidget | None = None, *,
                 inbox: Inbox | None = None) -> None:
        super().__init__(parent)
        self.runtime = runtime
        self.inbox = inbox or Inbox.of(runtime)
        self.tasks = TaskKeeper()
        self.who = os_user()
        self.user: User | None = None
        """The signed-in user (None: single-user mode); answering needs the ``answer`` role."""
        self._refreshing = False
        self._again = False
        self._preview_seq = 0
        self.forecast: Any = None
        """The console's :class:`core.forecast.Forecast`: a paused error's decision previews the
        runs' moved ETAs too (None: the instrument time added or removed)."""

        self.kind_box = QComboBox()
        self.kind_box.addItem("All kinds", None)
        for kind in KINDS:
            self.kind_box.addItem(KIND_LABELS[kind], kind)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter: run, step, instrument, words…")
        self.search.setClearButtonEnabled(True)
        self.count_label = QLabel("")
        self.count_label.setObjectName("inboxCount")
        self.feedback = QLabel("")
        self.feedback.setObjectName("inboxFeedback")
        bar = QHBoxLayout()
        bar.addWidget(self.kind_box)
        bar.addWidget(self.search, 1)
        bar.addWidget(self.count_label)

        self.model = InboxModel(self)
        self.model.now = runtime.clock.now
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        for col, width in ((0, 130), (1, 60), (2, 130), (4, 220)):
            self.table.setColumnWidth(col, width)
        self.form = AnswerForm()
        self.form.now = runtime.clock.now
        split = self.split = QSplitter(Qt.Orientation.Horizontal)
        scroll = QScrollArea()  # a long form scrolls in a short dock instead of making the window taller
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.form)
        split.addWidget(self.table)
        split.addWidget(scroll)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(split, 1)
        layout.addWidget(self.feedback)

        self.kind_box.currentIndexChanged.connect(self._filter)
        self.search.textChanged.connect(self._filter)
        self.table.selectionModel().selectionChanged.connect(self._selected)
        self.form.submitted.connect(self._answer)
        self.form.changed.connect(self._preview)
        self.form.resend.connect(self._resend)
        self._subscription = bridge.events.connect(self._on_events)
        self.age_timer = QTimer(self)
        self.age_timer.setInterval(AGE_TICK_MS)
        self.age_timer.timeout.connect(self._tick)
        self.age_timer.start()
        self.load(self.inbox.rows())

    # ------------------------------------------------------------------ contents

    def load(self, items: list[InboxRow]) -> None:
        """Show ``items`` (open ones), keeping the selected item selected."""
        current = self.form.item.id if self.form.item is not None else None
        self.model.set_items(items)
        self._counted()
        self._reselect(current)

    def _reselect(self, item_id: int | None) -> None:
        row = self.model.row_of(item_id) if item_id is not None else -1
        if row >= 0:
            self.table.selectRow(row)
        elif self.form.item is not None and (item_id is None or self.model.row_of(item_id) < 0):
            self.form.show_item(None)

    def refresh(self) -> None:
        """Read the open items again (on a reader thread) and show them."""
        if self._refreshing:
            self._again = True
            return
        self._refreshing = True

        def done(task: asyncio.Task[Any]) -> None:
            self._refreshing = False
            if not task.cancelled() and task.exception() is None:
                self.load(task.result())
            if self._again:
                self._again = False
                self.refresh()

        self.tasks.spawn(self.inbox.store.read(read_rows), done)

    @Slot(object)
    def _on_events(self, events: list[Any]) -> None:
        changes = [e for e in events if isinstance(e, InboxChanged)]
        if not changes:
            return
        if all(e.state == "answered" and e.item_id is not None for e in changes) and not self._refreshing:
            answered = {e.item_id for e in changes if e.item_id is not None}
            current = self.form.item.id if self.form.item is not None else None
            self.model.remove(answered)
            self._counted()
            self._reselect(current)
        else:
            self.refresh()
            if self.form.item is not None and any(e.state == "notified" for e in changes):
                self._reread(self.form.item.id)

    def _counted(self) -> None:
        items = self.model.all
        escalated = sum(1 for i in items if i.escalated)
        self.count_label.setText(f"{len(items)} open" + (f", {escalated} escalated" if escalated else ""))
        self.counts_changed.emit(len(items), escalated)

    @Slot()
    def _tick(self) -> None:
        if self.model.rows and self.isVisible():
            top, bottom = self.model.index(0, 2), self.model.index(len(self.model.rows) - 1, 2)
            self.model.dataChanged.emit(top, bottom, [Qt.ItemDataRole.DisplayRole])

    @Slot()
    def _filter(self) -> None:
        current = self.form.item.id if self.form.item is not None else None
        self.model.set_filter(self.kind_box.currentData(), self.search.text())
        self._reselect(current)

    @Slot()
    def _selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        row = self.model.item_at(rows[0].row()) if rows else None
        if row is not None and self.form.item is not None and row.id == self.form.item.id:
            return
        try:
            item = self.inbox.item(row.id) if row is not None else None  # one row by its key
        except LabconsoleError:
            item = None
        self.form.show_item(item)
        self._preview()

    def set_user(self, user: User | None) -> None:
        """Who is signed in (None: single-user mode): recorded as *who*; when their role may not
        answer, Answer is disabled, its tooltip saying why."""
        self.user = user
        self.who = user.name if user is not None else os_user()
        self.form.refused = refusal(user, "answer") if user is not None else None
        self.form.offer_answer()
        self.form.resend_refused = refusal(user, "notify again") if user is not None else None
        self.form.offer_resend()

    def select_item(self, item_id: int) -> bool:
        row = self.model.row_of(item_id)
        if row >= 0:
            self.table.selectRow(row)
        return row >= 0

    # ------------------------------------------------------------------ answering

    @Slot(object, dict)
    def _answer(self, item: InboxItem, values: dict[str, Any]) -> None:
        self.form.offer_answer(busy=True)
        self._say(f"Answering {KIND_LABELS.get(item.kind, item.kind).lower()} {item.id}…", "muted")

        def done(task: asyncio.Task[Any]) -> None:
            self.form.offer_answer()
            if task.cancelled():
                return
            exc = task.exception()
            if exc is None:
                self._say(f"Answered: {item.title}", "good")
                self.answered.emit(item.id, True, "answered")
            elif isinstance(exc, InputError):
                problem = exc.problems[0] if exc.problems else None
                self.form.show_error(str(problem.message if problem else exc), problem.where.field if problem else None)
                self.answered.emit(item.id, False, str(exc))
            elif isinstance(exc, LabconsoleError):
                self.form.show_error(str(exc))
                self._say(str(exc), "bad")
                self.answered.emit(item.id, False, str(exc))
            else:
                raise exc
            self.refresh()

        self.tasks.spawn(self.inbox.answer(item.id, values, who=self.who), done)

    @Slot(object)
    def _resend(self, item: InboxItem) -> None:
        if self.form.resend_refused is not None:
            self._say(self.form.resend_refused, "bad")
            return
        self.form.offer_resend(busy=True)

        def done(task: asyncio.Task[Any]) -> None:
            self.form.offer_resend()
            if task.cancelled():
                return
            exc = task.exception()
            if exc is None:
                self._say(f"Notifications of item {item.id} are sent again", "muted")
            elif isinstance(exc, LabconsoleError):
                self._say(str(exc), "bad")
            else:
                raise exc
            self._reread(item.id)

        self.tasks.spawn(self.inbox.resend(item.id, who=self.who), done)

    def _reread(self, item_id: int) -> None:
        """Show the selected item again as stored (its notifications changed)."""
        if self.form.item is None or self.form.item.id != item_id:
            return

        def done(task: asyncio.Task[Any]) -> None:
            if task.cancelled() or task.exception() is not None:
                return
            item = task.result()
            if self.form.item is not None and self.form.item.id == item.id:
                self.form.item.notices = item.notices
                self.form._show_notices(self.form.item)  # noqa: SLF001 - the form's own display

        self.tasks.spawn(self.inbox.store.read(lambda c: read_item(c, item_id)), done)

    @Slot()
    def _preview(self) -> None:
        """For a paused error: what the chosen decision will touch, before it is taken."""
        item = self.form.item
        self._preview_seq += 1
        if item is None or item.kind != "error" or item.run_id is None:
            self.form.consequence.setText("")
            return
        choice = self.form.values().get("choice")
        if choice is None:
            self.form.consequence.setText("")
            return
        seq = self._preview_seq
        orders = [item.run_id] if choice == "cancel" else [item.order_id or ""]
        action = {"retry": "retry", "skip": "skip", "recover": "recover", "cancel": "cancel"}[str(choice)]
        from_step = self.form.values().get("from_step") or item.step_id

        if action == "recover":
            orders = [item.run_id]
        forecast = self.forecast

        async def both() -> tuple[Any, Any]:
            impact = preview(self.inbox.store, action, orders, from_step=from_step)
            moves = eta_moves(forecast, action, orders, from_step=from_step)
            return await asyncio.gather(impact, moves)

        def done(task: asyncio.Task[Any]) -> None:
            if seq != self._preview_seq or task.cancelled() or task.exception() is not None:
                return
            impact, moves = task.result()
            text = f"{choice.capitalize()} will touch: {impact.summary()}"
            if moves is not None and moves.skipped is None:  # moved ETAs instead of instrument time
                text = f"{choice.capitalize()} will touch: {impact.summary(work=False)}"
                now = datetime.fromtimestamp(moves.at) if moves.at else None
                shown = [eta_move_text(m, now) for m in moves.moves[:3]]
                more = moves.count - len(shown)
                text += "\nETAs: " + ("; ".join(shown) if shown else "no run's finish time moves") + \
                    (f"; … and {more:,} more" if more > 0 else "")
            self.form.consequence.setText(text)

        self.tasks.spawn(both(), done)

    def _say(self, text: str, tone: str) -> None:
        colour = current_theme().colors[tone]
        self.feedback.setStyleSheet(f"#inboxFeedback {{ color: {colour}; }}")
        self.feedback.setText(text)

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt's name
        """Form beside the list when there is room, below it in a narrow dock."""
        wide = event.size().width() >= NARROW
        self.split.setOrientation(Qt.Orientation.Horizontal if wide else Qt.Orientation.Vertical)
        super().resizeEvent(event)

    # ------------------------------------------------------------------ life cycle

    def shutdown(self) -> None:
        self.age_timer.stop()
        self.tasks.cancel_all()
