"""Playbook panel: the error playbook's rules as a table, edited in a form, imported and exported
as YAML. Every change is audited; a refused rule or file shows what is wrong and where."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QBoxLayout,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.errors import InputError, LabconsoleError
from core.playbook import RESPONSES, Playbook, Rule
from core.users import User, os_user, refusal
from panels.theme import current_theme, keep_styled
from panels.widgets import TaskKeeper, VerticalScrollArea

COLUMNS = ("Rule", "Error", "Capability", "Instrument", "Template", "Response", "On")
TIPS = {"save": "Add the rule, or replace the rule with the same id (audited)",
        "remove": "Remove the rule with this id (audited)",
        "import": "Add or replace the rules of a YAML or JSON file (audited)"}
"""The changing buttons' tooltips while the signed-in user may change the playbook."""
CHOICE_CHARS = 10
"""Characters a choice box keeps room for; longer names are shown whole in its list."""
TABLE_STRETCH, FORM_STRETCH = 3, 2
"""How the rules table and the form share the panel's width, side by side."""
STACKED_STRETCH = 1, 2
"""How they share its height, the form under the table (the form is the taller)."""
STACKED_ROWS = 4
"""Rules the table shows at least, the form under it (the form scrolls for them)."""


class PlaybookPanel(QWidget):
    changed = Signal()
    """A change (add, edit, remove, import) was committed or refused; ``feedback`` says which."""

    def __init__(self, runtime: RuntimeApi, bridge: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runtime = runtime
        self.playbook = Playbook.attach(runtime.engine, runtime.workcell)
        self.tasks = TaskKeeper()
        self.who = os_user()
        self.user: User | None = None
        """The signed-in user (None: single-user mode); changes need the ``playbook`` role."""

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._selected)

        caps = sorted(self.playbook.capabilities or ())
        ids = sorted(self.playbook.instruments or ())
        names = sorted(t.name for t in runtime.templates())
        self.rule_id = QLineEdit()
        self.error_code = QLineEdit()
        self.error_code.setPlaceholderText("error code or exception class; * for any")
        self.capability = self._choices(caps)
        self.instrument = self._choices(ids)
        self.template = self._choices(names)
        self.response = QComboBox()
        for r in RESPONSES:
            self.response.addItem(r, r)
        self.max_attempts = QSpinBox()
        self.max_attempts.setRange(1, 100)
        self.max_attempts.setValue(3)
        self.backoff = QDoubleSpinBox()
        self.backoff.setRange(0, 3600)
        self.backoff.setSuffix(" s")
        self.backoff.setValue(10)
        self.outputs = QPlainTextEdit()
        self.outputs.setPlaceholderText('skip: outputs as JSON, e.g. {"od": 0}')
        self.outputs.setFixedHeight(52)
        self.enabled = QCheckBox("Enabled")
        self.enabled.setChecked(True)
        form = QFormLayout()
        # the fields take the width the dock gives; a field too narrow for its label goes under it
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.fields: tuple[QWidget, ...] = ()
        """The form's fields: read-only while the signed-in user may not change the playbook."""
        for label, widget in (("Rule id", self.rule_id), ("Error", self.error_code), ("Capability", self.capability),
                              ("Instrument", self.instrument), ("Template", self.template),
                              ("Response", self.response), ("Retry up to", self.max_attempts),
                              ("Backoff from", self.backoff), ("Outputs", self.outputs), ("", self.enabled)):
            form.addRow(label, widget)
            self.fields += (widget,)
        self.save_button = QPushButton("Save rule")
        self.save_button.clicked.connect(self.save)
        self.remove_button = QPushButton("Remove")
        self.remove_button.clicked.connect(self.remove)
        self.import_button = QPushButton("Import YAML…")
        self.import_button.clicked.connect(self._ask_import)
        self.export_button = QPushButton("Export YAML…")
        self.export_button.clicked.connect(self._ask_export)
        self.export_button.setToolTip("Save the rules as a YAML file")
        self.changing = {"save": self.save_button, "remove": self.remove_button, "import": self.import_button}
        self.feedback = QLabel("")
        self.feedback.setWordWrap(True)
        self.feedback.setObjectName("playbookFeedback")
        self.feedback.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        keep_styled(self.feedback, lambda t: "")
        buttons = QGridLayout()  # two a row: the form stays narrow enough for a side dock
        for n, b in enumerate((self.save_button, self.remove_button, self.import_button, self.export_button)):
            buttons.addWidget(b, n // 2, n % 2)
        editor = QWidget()
        fields = QVBoxLayout(editor)
        fields.addLayout(form)
        fields.addStretch(1)
        # the fields scroll (vertically only) in a short dock instead of making the window taller;
        # the buttons and the feedback stay in sight under them
        self.form_area = VerticalScrollArea(editor)
        self.form_side = QWidget()
        side = QVBoxLayout(self.form_side)
        side.setContentsMargins(0, 0, 0, 0)
        side.addWidget(self.form_area)  # as tall as the form where there is room, else shorter
        side.addLayout(buttons)
        side.addWidget(self.feedback)
        side.addStretch(1)
        self.split = QBoxLayout(QBoxLayout.Direction.LeftToRight, self)
        self.split.addWidget(self.table, TABLE_STRETCH)
        self.split.addWidget(self.form_side, FORM_STRETCH)
        self.show_rules()
        self.set_user(None)

    def side_by_side(self) -> bool:
        """Whether the rules table and the form stand side by side (else the form is under the table)."""
        return self.split.direction() == QBoxLayout.Direction.LeftToRight

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        # side by side when the table's share keeps every column title whole (the columns share
        # its width equally) and the form's share holds the form; in a narrower dock the form
        # goes under the table and both take the dock's whole width
        header = self.table.horizontalHeader()
        table = header.count() * max(header.sectionSizeHint(c) for c in range(header.count())) \
            + 2 * self.table.frameWidth() + self.table.verticalScrollBar().sizeHint().width()
        margins = self.split.contentsMargins()
        room = event.size().width() - margins.left() - margins.right() - self.split.spacing()
        share = room / (TABLE_STRETCH + FORM_STRETCH)
        wide = share * TABLE_STRETCH >= table and share * FORM_STRETCH >= self.form_side.minimumSizeHint().width()
        direction = QBoxLayout.Direction.LeftToRight if wide else QBoxLayout.Direction.TopToBottom
        if self.split.direction() != direction:
            self.split.setDirection(direction)
            for n, stretch in enumerate((TABLE_STRETCH, FORM_STRETCH) if wide else STACKED_STRETCH):
                self.split.setStretch(n, stretch)
            rows = 0 if wide else self.table.verticalHeader().defaultSectionSize() * STACKED_ROWS \
                + self.table.horizontalHeader().sizeHint().height() + 2 * self.table.frameWidth()
            self.table.setMinimumHeight(rows)

    def set_user(self, user: User | None) -> None:
        """Who is signed in (None: single-user mode): recorded as *who*; when their role may not
        change the playbook, its changing buttons are disabled, the tooltip saying why, and the
        form's fields are read-only (a selected rule is still shown in them)."""
        self.user = user
        self.who = user.name if user is not None else os_user()
        refused = refusal(user, "playbook") if user is not None else None
        for key, button in self.changing.items():
            button.setEnabled(refused is None)
            button.setToolTip(refused or TIPS[key])
        for widget in self.fields:
            set_editable(widget, refused is None)
            widget.setToolTip(refused or "")

    def editable(self) -> bool:
        """Whether the form's fields take input."""
        return all(is_editable(w) for w in self.fields)

    @staticmethod
    def _choices(values: list[str]) -> QComboBox:
        box = QComboBox()
        box.setEditable(True)
        # sized for a few characters, not for the longest name: it grows with the form
        box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        box.setMinimumContentsLength(CHOICE_CHARS)
        box.addItem("")
        box.addItems(values)
        view = box.view()  # its list is as wide as the longest name, wider than the box if need be
        view.setMinimumWidth(view.sizeHintForColumn(0) + 2 * view.frameWidth()
                             + view.verticalScrollBar().sizeHint().width())
        if (line := box.lineEdit()) is not None:
            line.setPlaceholderText("any")
        return box

    # ------------------------------------------------------------------ table and form

    def show_rules(self) -> None:
        rules = self.playbook.rules
        self.table.setRowCount(len(rules))
        for row, r in enumerate(rules):
            what = f"retry ≤{r.max_attempts}, {r.backoff:g} s" if r.response == "retry" else r.response
            for col, text in enumerate((r.id, r.error_code, r.capability or "any", r.instrument or "any",
                                        r.template or "any", what, "yes" if r.enabled else "no")):
                self.table.setItem(row, col, QTableWidgetItem(text))

    @Slot()
    def _selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows and rows[0].row() < len(self.playbook.rules):
            self.edit(self.playbook.rules[rows[0].row()])

    def edit(self, rule: Rule) -> None:
        self.rule_id.setText(rule.id)
        self.error_code.setText(rule.error_code)
        self.capability.setCurrentText(rule.capability or "")
        self.instrument.setCurrentText(rule.instrument or "")
        self.template.setCurrentText(rule.template or "")
        self.response.setCurrentIndex(self.response.findData(rule.response))
        self.max_attempts.setValue(rule.max_attempts or 3)
        self.backoff.setValue(rule.backoff)
        self.outputs.setPlainText(json.dumps(rule.outputs) if rule.outputs else "")
        self.enabled.setChecked(rule.enabled)

    def form_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.rule_id.text().strip(), "error_code": self.error_code.text().strip(),
                                "response": self.response.currentData(), "enabled": self.enabled.isChecked(),
                                "backoff": self.backoff.value()}
        for key, box in (("capability", self.capability), ("instrument", self.instrument),
                         ("template", self.template)):
            if box.currentText().strip():
                data[key] = box.currentText().strip()
        if data["response"] == "retry":
            data["max_attempts"] = self.max_attempts.value()
        text = self.outputs.toPlainText().strip()
        if text:
            try:
                data["outputs"] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputError.at(f"outputs: not JSON ({exc.msg} at character {exc.pos})", field="outputs") from None
        return data

    # ------------------------------------------------------------------ actions (audited)

    @Slot()
    def save(self) -> None:
        try:
            data = self.form_data()
        except InputError as exc:
            self._say(str(exc), "text_error")
            return
        replace = any(r.id == data["id"] for r in self.playbook.rules)
        self._run(self.playbook.add(data, who=self.who, replace=replace), f"Rule {data['id']} saved")

    @Slot()
    def remove(self) -> None:
        rule_id = self.rule_id.text().strip()
        self._run(self.playbook.remove(rule_id, who=self.who), f"Rule {rule_id} removed")

    def import_file(self, path: str | Path) -> None:
        self._run(self.playbook.import_file(path, who=self.who), f"Imported {path}")

    def export_file(self, path: str | Path) -> None:
        Path(path).write_text(self.playbook.export(), encoding="utf-8")
        self._say(f"Exported {len(self.playbook.rules)} rules to {path}", "text_ok")

    @Slot()
    def _ask_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import playbook", "", "Playbook (*.yaml *.yml *.json)")
        if path:
            self.import_file(path)

    @Slot()
    def _ask_export(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export playbook", "playbook.yaml", "Playbook (*.yaml)")
        if path:
            self.export_file(path)

    def _run(self, coro: Any, ok_text: str) -> None:
        def done(task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                return
            exc = task.exception()
            if exc is None:
                self._say(ok_text, "text_ok")
            elif isinstance(exc, LabconsoleError):
                self._say(str(exc), "text_error")
            else:
                raise exc
            self.show_rules()
            self.changed.emit()

        self.tasks.spawn(coro, done)

    def _say(self, text: str, tone: str) -> None:
        self.feedback.setStyleSheet(f"#playbookFeedback {{ color: {current_theme().colors[tone]}; }}")
        self.feedback.setText(text)

    def shutdown(self) -> None:
        self.tasks.cancel_all()


def set_editable(widget: QWidget, editable: bool) -> None:
    """Text and number fields become read-only (their text can still be selected and copied);
    choices and check boxes, which have no read-only state, are disabled."""
    if isinstance(widget, (QLineEdit, QPlainTextEdit, QAbstractSpinBox)):
        widget.setReadOnly(not editable)
    else:
        widget.setEnabled(editable)


def is_editable(widget: QWidget) -> bool:
    if isinstance(widget, (QLineEdit, QPlainTextEdit, QAbstractSpinBox)):
        return not widget.isReadOnly() and widget.isEnabled()
    return widget.isEnabled()
