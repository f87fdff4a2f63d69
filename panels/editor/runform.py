"""The "Run…" form: one typed field per input of a published template, checked before submit.

Numbers are typed into validated fields (so an empty required field is visible as empty),
yes/no inputs are check boxes, JSON inputs are parsed. Every field is checked with the input's
own :meth:`~core.templates.InputParameter.coerce` — the engine's rule — and "Start run" stays
disabled until all are valid. The dialog is opened with ``open()`` (never ``exec()``, which would
re-enter the asyncio loop); the panel reads :meth:`RunForm.values` when it is accepted.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDoubleValidator, QIntValidator, QKeyEvent
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from core.templates import InputParameter, ParameterType, WorkflowTemplate
from panels.theme import keep_styled, text_style

__all__ = ["RunForm"]


class RunForm(QDialog):
    """Inputs for a run of ``template`` (a published version).

    "Start run" emits :attr:`submitted` with (inputs, priority, allow duplicate); the form stays
    open until the owner calls :meth:`started` (then it closes) or :meth:`refused` (then it
    says why, and offers "Run again anyway" when the refusal is a duplicate submission).
    """

    submitted = Signal(object, int, bool)
    """(typed inputs, priority, whether a duplicate of a recent run is wanted)."""
    priority_changed = Signal(int)
    """The priority was changed (whether the run can finish in time depends on it)."""

    def __init__(self, template: WorkflowTemplate, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.template = template
        self.busy = False
        self.setObjectName("runForm")
        self.setWindowTitle(f"Run {template.name} v{template.version}")
        self.setMinimumWidth(440)
        self.fields: dict[str, QLineEdit | QCheckBox] = {}
        self.errors: dict[str, QLabel] = {}
        heading = QLabel(f"<b>{template.name}</b> · version {template.version} · "
                         f"{len(template.steps)} steps", self)
        form = QFormLayout()
        for p in template.inputs:
            widget = self._field(p)
            widget.setObjectName(f"input_{p.name}")
            label = QLabel(f"{p.name}{' *' if p.required and p.default is None else ''}", self)
            label.setToolTip(p.description or p.type.value)
            error = QLabel(self)
            keep_styled(error, text_style("text_error"))
            error.hide()
            hint = f"{p.type.value}" + (f" — {p.description}" if p.description else "")
            widget.setToolTip(hint)
            form.addRow(label, widget)
            form.addRow("", error)
            self.fields[p.name] = widget
            self.errors[p.name] = error
        if not template.inputs:
            form.addRow(QLabel("This template takes no inputs.", self))
        self.priority = QSpinBox(self)
        self.priority.setObjectName("priority")
        self.priority.setRange(0, 100)
        self.priority.setValue(50)
        form.addRow("Priority (0–100)", self.priority)
        self.priority.valueChanged.connect(self.priority_changed)
        # whether the run can finish, what the cell lacks, whether its windows hold (the owner
        # fills it in: core.forecast.check_feasibility)
        self.feasibility = QLabel(self)
        self.feasibility.setObjectName("feasibility")
        self.feasibility.setWordWrap(True)
        self.feasibility.setTextFormat(Qt.TextFormat.PlainText)
        self.feasibility.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel, self)
        self.start = self.buttons.addButton("Start run", QDialogButtonBox.ButtonRole.AcceptRole)
        self.start.setObjectName("startRun")
        self.buttons.accepted.connect(self._on_accept)
        self.buttons.rejected.connect(self.reject)
        # why the last submission was refused, and for a duplicate the way to run it anyway
        self.refusal = QLabel(self)
        self.refusal.setObjectName("runRefusal")
        self.refusal.setWordWrap(True)
        keep_styled(self.refusal, text_style("text_error"))
        self.refusal.hide()
        self.run_again = self.buttons.addButton("Run again anyway", QDialogButtonBox.ButtonRole.ActionRole)
        self.run_again.setObjectName("runAgain")
        self.run_again.setToolTip("Start a second run with the same inputs (audited like any run)")
        self.run_again.clicked.connect(lambda: self._submit(allow_duplicate=True))
        self.run_again.hide()
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addLayout(form)
        layout.addWidget(self.feasibility)
        layout.addWidget(self.refusal)
        layout.addWidget(self.buttons)
        self.validate()

    def show_feasibility(self, lines: list[str], level: str = "muted") -> None:
        """Show what the forecast says about this run; ``level``: ``muted`` (still checking),
        ``ok``, ``warn`` (a window or the deadline would not hold) or ``error`` (it cannot
        finish). The run may be started anyway: the operator decides."""
        self.feasibility.setText("\n".join(lines))
        key = {"ok": "text_ok", "warn": "text_warn", "error": "text_error"}.get(level, "muted")
        keep_styled(self.feasibility, text_style(key))
        self.feasibility.setVisible(bool(lines))
        self.adjustSize()  # the dialog grows with what it says

    def _field(self, p: InputParameter) -> QLineEdit | QCheckBox:
        if p.type is ParameterType.BOOLEAN:
            box = QCheckBox("yes", self)
            box.setChecked(bool(p.default))
            box.toggled.connect(self.validate)
            return box
        edit = QLineEdit(self)
        if p.type is ParameterType.INTEGER:
            edit.setValidator(QIntValidator(edit))
        elif p.type is ParameterType.DOUBLE:
            validator = QDoubleValidator(edit)
            validator.setNotation(QDoubleValidator.Notation.StandardNotation)
            edit.setValidator(validator)
        elif p.type is ParameterType.JSON:
            edit.setPlaceholderText('JSON, e.g. {"wells": [1, 2]}')
        if p.default is not None:
            edit.setText(p.default if isinstance(p.default, str) else json.dumps(p.default))
        elif not p.required:
            edit.setPlaceholderText("optional")
        edit.textChanged.connect(self.validate)
        return edit

    def problems(self) -> dict[str, str]:
        """Input name -> what is wrong with it (empty when the form can be submitted)."""
        out: dict[str, str] = {}
        for p in self.template.inputs:
            widget = self.fields[p.name]
            if isinstance(widget, QCheckBox):
                continue
            text = widget.text().strip()
            if not text:
                if p.required and p.default is None:
                    out[p.name] = "required"
                continue
            try:
                p.coerce(text if p.type is not ParameterType.STRING else widget.text())
            except (ValueError, TypeError) as exc:
                out[p.name] = f"not a valid {p.type.value}: {exc}"
        return out

    def validate(self) -> bool:
        """Show each field's problem; enable "Start run" only when there is none."""
        problems = self.problems()
        for name, label in self.errors.items():
            label.setText(problems.get(name, ""))
            label.setVisible(name in problems)
        self.start.setEnabled(not problems and not self.busy)
        if self.run_again.isVisible():  # a refusal is about the inputs it was given
            self.run_again.setEnabled(not problems and not self.busy)
        return not problems

    def values(self) -> dict[str, Any]:
        """The inputs, typed (empty optional fields are left out: the engine uses defaults)."""
        out: dict[str, Any] = {}
        for p in self.template.inputs:
            widget = self.fields[p.name]
            if isinstance(widget, QCheckBox):
                out[p.name] = widget.isChecked()
                continue
            text = widget.text() if p.type is ParameterType.STRING else widget.text().strip()
            if text.strip():
                out[p.name] = p.coerce(text)
        return out

    def _on_accept(self) -> None:
        self._submit(allow_duplicate=False)

    def _submit(self, *, allow_duplicate: bool) -> None:
        if self.busy or not self.validate():
            return
        self.busy = True
        self.refusal.hide()
        self.run_again.hide()
        self.validate()
        self.submitted.emit(self.values(), self.priority.value(), allow_duplicate)

    def started(self) -> None:
        """The run started: close the form."""
        self.busy = False
        self.accept()

    def refused(self, message: str, *, duplicate: bool = False) -> None:
        """The run did not start: say why and keep the inputs; a duplicate can run anyway."""
        self.busy = False
        if duplicate:
            message = (f"{message.split('; submit it again')[0]}. "
                       "Check it is not the same plate twice, or start it again anyway.")
        self.refusal.setText(message)
        self.refusal.show()
        self.run_again.setVisible(duplicate)
        self.validate()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not self.start.isEnabled():
            return
        super().keyPressEvent(event)
