"""Inspectors: the selected step's fields, or the workflow's when no step is selected.

Every widget edits the document through :meth:`TemplateDocument.apply` (one undoable command,
merged while the same field keeps changing) and is refreshed from the model after every change
(undo included), so what the inspector shows is always the template.

Step parameters get typed widgets from the kind catalog (text, whole number, number with unit,
duration in seconds, yes/no, JSON). Each parameter's *source* is picked from a list: not set, a
fixed value, a workflow input, or an output of another step (choosing a step that does not run
before this one also adds the dependency).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QStackedWidget,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.conditions import check_condition
from core.durations import DurationError, parse_duration
from core.templates import (
    FailurePolicy,
    InputParameter,
    ParameterType,
    RetryPolicy,
    Step,
    Window,
    WorkflowTemplate,
    descendants,
)
from panels.editor import ops
from panels.editor.document import TemplateDocument
from panels.editor.graph import group_color
from panels.editor.kinds import BUILTIN_GROUP, KindInfo, ParamSpec, ParamType
from panels.theme import current_theme, embolden, keep_styled, text_style

__all__ = ["InputsModel", "Inspector", "OptionalSeconds", "RetryEditor", "StepInspector",
           "WorkflowInspector"]

ModelIndex = QModelIndex | QPersistentModelIndex
_ERROR_STYLE = text_style("text_error")
_OK_STYLE = text_style("text_ok")
_MUTED_STYLE = text_style("muted")
_BIG = 1e9


def _set_text(edit: QLineEdit, text: str) -> None:
    if edit.text() != text:
        edit.blockSignals(True)
        edit.setText(text)
        edit.blockSignals(False)


def _set_value(box: QSpinBox | QDoubleSpinBox, value: float) -> None:
    if box.value() != value:
        box.blockSignals(True)
        box.setValue(value)  # type: ignore[arg-type]
        box.blockSignals(False)


def _set_checked(box: QCheckBox | QGroupBox, checked: bool) -> None:
    if box.isChecked() != checked:
        box.blockSignals(True)
        box.setChecked(checked)
        box.blockSignals(False)


def _set_combo(combo: QComboBox, data: Any) -> None:
    index = combo.findData(data)
    if index >= 0 and combo.currentIndex() != index:
        combo.blockSignals(True)
        combo.setCurrentIndex(index)
        combo.blockSignals(False)


def _seconds_box(maximum: float = 30 * 86400, suffix: str = " s") -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(1)
    box.setRange(0.0, maximum)
    box.setSuffix(suffix)
    box.setKeyboardTracking(False)
    return box


class OptionalSeconds(QWidget):
    """A duration in seconds that may be unset (check box off)."""

    value_changed = Signal(object)
    """float | None"""

    def __init__(self, label: str, default: float = 600.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.check = QCheckBox(label, self)
        self.box = _seconds_box()
        self.box.setMinimum(0.1)
        self.box.setValue(default)
        self.box.setEnabled(False)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.check)
        layout.addWidget(self.box, 1)
        self.check.toggled.connect(self._on_toggled)
        self.box.valueChanged.connect(lambda _v: self.value_changed.emit(self.value()))

    def _on_toggled(self, on: bool) -> None:
        self.box.setEnabled(on)
        self.value_changed.emit(self.value())

    def value(self) -> float | None:
        return self.box.value() if self.check.isChecked() else None

    def set_value(self, value: float | None) -> None:
        _set_checked(self.check, value is not None)
        self.box.setEnabled(value is not None)
        if value is not None:
            _set_value(self.box, value)


class RetryEditor(QWidget):
    """The fields of a :class:`RetryPolicy`."""

    policy_changed = Signal(object)
    """RetryPolicy"""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._policy = RetryPolicy()
        self.attempts = QSpinBox()
        self.attempts.setRange(1, 100)
        self.attempts.setKeyboardTracking(False)
        self.initial = _seconds_box(86400)
        self.multiplier = QDoubleSpinBox()
        self.multiplier.setRange(1.0, 10.0)
        self.multiplier.setSingleStep(0.5)
        self.multiplier.setPrefix("× ")
        self.multiplier.setKeyboardTracking(False)
        self.max_backoff = _seconds_box(86400)
        self.retry_on_timeout = QCheckBox("Retry after a timeout")
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Attempts", self.attempts)
        form.addRow("First wait", self.initial)
        form.addRow("Backoff", self.multiplier)
        form.addRow("Longest wait", self.max_backoff)
        form.addRow("", self.retry_on_timeout)
        for box in (self.attempts, self.initial, self.multiplier, self.max_backoff):
            box.valueChanged.connect(self._emit)
        self.retry_on_timeout.toggled.connect(self._emit)

    def _emit(self, *_args: Any) -> None:
        self._policy = self._policy.model_copy(update={
            "max_attempts": self.attempts.value(), "initial_interval": self.initial.value(),
            "backoff_multiplier": self.multiplier.value(), "max_backoff": self.max_backoff.value(),
            "retry_on_timeout": self.retry_on_timeout.isChecked()})
        self.policy_changed.emit(self._policy)

    def set_policy(self, policy: RetryPolicy) -> None:
        self._policy = policy
        _set_value(self.attempts, policy.max_attempts)
        _set_value(self.initial, policy.initial_interval)
        _set_value(self.multiplier, policy.backoff_multiplier)
        _set_value(self.max_backoff, policy.max_backoff)
        _set_checked(self.retry_on_timeout, policy.retry_on_timeout)


# ------------------------------------------------------------------------------ parameters


def _infer_type(value: Any) -> ParamType:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return "json"


class ParamRow(QWidget):
    """One parameter: its source (not set / fixed value / mapping) and a typed value editor."""

    UNSET, VALUE = "__unset__", "__value__"
    changed = Signal(str, str, object)
    """(parameter name, source: UNSET | VALUE | a mapping, value)"""

    def __init__(self, spec: ParamSpec, used_name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = spec
        self.name = used_name
        self.source = QComboBox(self)
        self.source.setObjectName(f"source_{used_name}")
        self.source.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.source.setMinimumContentsLength(14)
        self.editor = self._make_editor()
        self.editor.setObjectName(f"value_{used_name}")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.source)
        layout.addWidget(self.editor)
        self.source.currentIndexChanged.connect(self._on_source)

    def _make_editor(self) -> QWidget:
        t = self.spec.type
        if t == "boolean":
            box = QCheckBox("yes", self)
            box.toggled.connect(lambda _on: self._on_value())
            return box
        if t == "integer":
            spin = QSpinBox(self)
            spin.setRange(-1_000_000_000, 1_000_000_000)
            spin.setKeyboardTracking(False)
            if self.spec.unit:
                spin.setSuffix(f" {self.spec.unit}")
            spin.valueChanged.connect(lambda _v: self._on_value())
            return spin
        if t in ("double", "duration"):
            dspin = QDoubleSpinBox(self)
            dspin.setDecimals(3 if t == "double" else 1)
            dspin.setRange(0.0 if t == "duration" else -_BIG, _BIG)
            dspin.setKeyboardTracking(False)
            if self.spec.unit:
                dspin.setSuffix(f" {self.spec.unit}")
            dspin.valueChanged.connect(lambda _v: self._on_value())
            return dspin
        edit = QLineEdit(self)
        if t == "json":
            edit.setPlaceholderText("JSON, e.g. [1, 2] or {\"a\": 1}")
        edit.editingFinished.connect(self._on_value)
        return edit

    # -- reading the editor
    def editor_value(self) -> tuple[bool, Any]:
        """(ok, value) of the value editor."""
        e = self.editor
        if isinstance(e, QCheckBox):
            return True, e.isChecked()
        if isinstance(e, QSpinBox):
            return True, e.value()
        if isinstance(e, QDoubleSpinBox):
            return True, e.value()
        assert isinstance(e, QLineEdit)
        if self.spec.type == "json":
            try:
                return True, json.loads(e.text())
            except ValueError:
                keep_styled(e, lambda t: f"border: 1px solid {t.colors['problem']};")
                return False, None
        return True, e.text()

    def set_editor_value(self, value: Any) -> None:
        e = self.editor
        keep_styled(e, lambda _t: "")
        if isinstance(e, QCheckBox):
            _set_checked(e, bool(value))
        elif isinstance(e, QSpinBox):
            _set_value(e, int(value) if isinstance(value, int | float) else 0)
        elif isinstance(e, QDoubleSpinBox):
            number = 0.0
            if isinstance(value, int | float) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str) and self.spec.type == "duration":
                try:
                    number = parse_duration(value)
                except DurationError:
                    number = 0.0
            _set_value(e, number)
        elif isinstance(e, QLineEdit):
            text = value if isinstance(value, str) else json.dumps(value) if value is not None else ""
            _set_text(e, text)

    # -- loading from the step
    def load(self, step: Step, options: list[tuple[str, str]]) -> None:
        """Show ``step``'s value or mapping; ``options`` are (label, mapping source) pairs."""
        self.source.blockSignals(True)
        self.source.clear()
        self.source.addItem("— not set —", self.UNSET)
        self.source.addItem("Fixed value", self.VALUE)
        for label, source in options:
            self.source.addItem(label, source)
        mapping = step.input_mapping.get(self.name)
        if mapping is not None:
            if self.source.findData(mapping) < 0:
                self.source.addItem(f"{mapping} (not available)", mapping)
            self.source.setCurrentIndex(self.source.findData(mapping))
            self.editor.setVisible(False)
        elif self.name in step.parameters:
            self.source.setCurrentIndex(1)
            self.set_editor_value(step.parameters[self.name])
            self.editor.setVisible(True)
        else:
            self.source.setCurrentIndex(0)
            self.set_editor_value(self.spec.default)
            self.editor.setVisible(False)
        self.source.blockSignals(False)

    def _on_source(self, _index: int) -> None:
        source = self.source.currentData()
        if source == self.VALUE:
            ok, value = self.editor_value()
            if self.spec.type == "string" and not value and self.spec.default is not None:
                value = self.spec.default
            self.changed.emit(self.name, source, value if ok else None)
        else:
            self.changed.emit(self.name, source, None)

    def _on_value(self) -> None:
        if self.source.currentData() == self.UNSET:
            return
        ok, value = self.editor_value()
        if ok:
            self.changed.emit(self.name, self.VALUE, value)


class WindowEditor(QGroupBox):
    """A step's start window: after which earlier step, at least / at most how long after it
    ends. Checked off: no window. Emits :attr:`window_changed` with a Window or None."""

    window_changed = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Start window", parent)
        self.setObjectName("startWindow")
        self.setCheckable(True)
        self.after = QComboBox(self)
        self.after.setObjectName("windowAfter")
        self.least = OptionalSeconds("At least", 60.0, self)
        self.least.setObjectName("windowMin")
        self.most = OptionalSeconds("At most", 600.0, self)
        self.most.setObjectName("windowMax")
        form = QFormLayout(self)
        form.addRow("After the end of", self.after)
        form.addRow("", self.least)
        form.addRow("", self.most)
        self.toggled.connect(self._emit)
        self.after.currentIndexChanged.connect(self._emit)
        self.least.value_changed.connect(self._emit)
        self.most.value_changed.connect(self._emit)

    def chosen(self) -> Window | None:
        """The window as edited (None: no window)."""
        after = self.after.currentData()
        if not self.isChecked() or not after:
            return None
        least, most = self.least.value(), self.most.value()
        if least is None and most is None:
            most = self.most.box.value()  # a window has at least one bound: "at most" by default
        return Window(after=after, min=least or 0.0, max=most)

    def _emit(self, *_args: Any) -> None:
        self.window_changed.emit(self.chosen())

    def load(self, step: Step, earlier: list[Step]) -> None:
        """Show ``step``'s window; ``earlier``: the steps it may count from (run before it)."""
        w = step.start_within
        self.blockSignals(True)
        self.after.blockSignals(True)
        self.after.clear()
        for other in earlier:
            self.after.addItem(f"{other.label} ({other.id})", other.id)
        if w is not None and self.after.findData(w.after) < 0:  # e.g. a dependency just removed
            self.after.addItem(f"{w.after} (not before this step)", w.after)
        self.after.blockSignals(False)
        self.setChecked(w is not None)
        self.setEnabled(bool(earlier) or w is not None)
        self.setToolTip("" if earlier or w is not None else "Add a dependency first: the window counts from "
                        "the end of an earlier step")
        self.blockSignals(False)
        _set_combo(self.after, w.after if w is not None else (earlier[-1].id if earlier else None))
        self.least.set_value(w.min if w is not None and w.min else None)
        self.most.set_value(w.max if w is not None else None)


class StepInspector(QWidget):
    """Every field of one step. Emits :attr:`step_renamed` (old id, new id) before a rename."""

    step_renamed = Signal(str, str)

    def __init__(self, document: TemplateDocument, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.document = document
        self.step_id: str | None = None
        self._rows: dict[str, ParamRow] = {}
        self._row_key: tuple[object, ...] = ()

        self.title = QLabel(self)
        self.title.setObjectName("inspectorTitle")
        embolden(self.title, 1.25)
        self.subtitle = QLabel(self)
        self.subtitle.setWordWrap(True)
        keep_styled(self.subtitle, _MUTED_STYLE)
        self.problems = QLabel(self)
        self.problems.setWordWrap(True)
        keep_styled(self.problems, _ERROR_STYLE)

        self.id_edit = QLineEdit(self)
        self.id_edit.setObjectName("stepId")
        self.name_edit = QLineEdit(self)
        self.name_edit.setObjectName("stepName")
        self.id_error = QLabel(self)
        keep_styled(self.id_error, _ERROR_STYLE)
        self.id_error.hide()

        self.params_box = QGroupBox("Parameters", self)
        self.params_layout = QGridLayout(self.params_box)
        self.params_layout.setColumnStretch(1, 1)
        self.new_param = QLineEdit(self)
        self.new_param.setPlaceholderText("another parameter…")
        self.add_param = QPushButton("Add", self)

        self.condition = QLineEdit(self)
        self.condition.setObjectName("condition")
        self.condition.setPlaceholderText("e.g. step_outputs['read']['absorbance'] > 0.5")
        self.condition_status = QLabel(self)
        self.condition_status.setWordWrap(True)
        self.handler = QComboBox(self)
        self.handler.setObjectName("errorHandler")
        self.timeout = OptionalSeconds("Timeout", 600.0, self)
        self.timeout.setObjectName("timeout")
        self.retry_box = QGroupBox("Own retry policy", self)
        self.retry_box.setCheckable(True)
        self.retry = RetryEditor(self.retry_box)
        QVBoxLayout(self.retry_box).addWidget(self.retry)
        self.retry_default = QLabel(self)
        keep_styled(self.retry_default, _MUTED_STYLE)
        self.idempotent = QCheckBox("Idempotent — safe to run again after a crash", self)
        self.window_box = WindowEditor(self)

        form = QFormLayout()
        form.addRow("Id", self.id_edit)
        form.addRow("", self.id_error)
        form.addRow("Name", self.name_edit)
        add_row = QHBoxLayout()
        add_row.addWidget(self.new_param, 1)
        add_row.addWidget(self.add_param)
        cond_form = QFormLayout()
        cond_form.addRow("Run only if", self.condition)
        cond_form.addRow("", self.condition_status)
        cond_form.addRow("On failure run", self.handler)
        cond_form.addRow("", self.timeout)
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        layout.addWidget(self.problems)
        layout.addLayout(form)
        layout.addWidget(self.params_box)
        layout.addLayout(add_row)
        layout.addLayout(cond_form)
        layout.addWidget(self.retry_box)
        layout.addWidget(self.retry_default)
        layout.addWidget(self.window_box)
        layout.addWidget(self.idempotent)
        layout.addStretch(1)

        self.id_edit.editingFinished.connect(self._on_id)
        self.window_box.window_changed.connect(lambda w: self._edit("start window", start_within=w))
        self.name_edit.editingFinished.connect(
            lambda: self._edit("name", name=self.name_edit.text().strip()))
        self.condition.textChanged.connect(self._check_condition)
        self.condition.editingFinished.connect(self._on_condition)
        self.handler.currentIndexChanged.connect(self._on_handler)
        self.timeout.value_changed.connect(lambda v: self._edit("timeout", timeout=v))
        self.retry_box.toggled.connect(self._on_retry_toggled)
        self.retry.policy_changed.connect(lambda p: self._edit("retry policy", retry_policy=p))
        self.idempotent.toggled.connect(lambda on: self._edit("idempotent", idempotent=on))
        self.add_param.clicked.connect(self._on_add_param)
        self.new_param.returnPressed.connect(self._on_add_param)

    # -- helpers
    @property
    def step(self) -> Step | None:
        if self.step_id is None:
            return None
        try:
            return self.document.template.step(self.step_id)
        except KeyError:
            return None

    def _edit(self, what: str, **changes: Any) -> None:
        sid = self.step_id
        if sid is None or self.step is None:
            return
        field = next(iter(changes))
        self.document.apply(lambda t: ops.update_step(t, sid, **changes),
                            f"Change {what} of {sid}", merge_key=f"step:{sid}:{field}")

    def _apply(self, fn: Callable[[WorkflowTemplate], WorkflowTemplate], text: str,
               key: str | None = None) -> None:
        self.document.apply(fn, text, merge_key=key)

    # -- loading
    def show_step(self, step_id: str | None) -> None:
        if step_id != self.step_id:
            self._row_key = ()
        self.step_id = step_id
        self.refresh()

    def refresh(self) -> None:
        step = self.step
        if step is None:
            return
        t = self.document.template
        info = self.document.catalog.get(step.kind)
        colour = group_color(info.group if info else BUILTIN_GROUP).name()
        self.title.setText(f"<span style='color:{colour}'>■</span> {step.label}")
        if info is None:
            where = f"{step.kind} — no instrument of the workcell offers it"
        elif info.builtin:
            where = f"{info.title} (built-in) — {info.description}"
        else:
            where = f"{step.kind} — runs on {', '.join(info.instruments)}"
        self.subtitle.setText(where)
        issues = [i for i in self.document.issues if i.step_id == step.id]
        self.problems.setText("<br>".join(
            f"{'✕' if i.severity == 'error' else '⚠'} {i.field + ': ' if i.field else ''}{i.message}"
            for i in issues))
        self.problems.setVisible(bool(issues))
        _set_text(self.id_edit, step.id)
        _set_text(self.name_edit, step.name)
        self._load_params(t, step, info)
        if not self.condition.hasFocus():
            _set_text(self.condition, step.condition or "")
        self._check_condition(self.condition.text())
        self.handler.blockSignals(True)
        self.handler.clear()
        self.handler.addItem("— nothing —", None)
        for other in t.steps:
            if other.id != step.id:
                self.handler.addItem(f"{other.label} ({other.id})", other.id)
        self.handler.blockSignals(False)
        _set_combo(self.handler, t.error_handlers.get(step.id))
        self.timeout.set_value(step.timeout)
        _set_checked(self.retry_box, step.retry_policy is not None)
        self.retry.setEnabled(step.retry_policy is not None)
        self.retry.set_policy(step.retry_policy or t.default_retry_policy)
        default = t.default_retry_policy
        self.retry_default.setText("" if step.retry_policy is not None else
                                   f"Uses the workflow default: {default.max_attempts} attempt"
                                   f"{'s' if default.max_attempts != 1 else ''}")
        _set_checked(self.idempotent, step.idempotent)
        before = _ancestors(t, step.id)
        self.window_box.load(step, [s for s in t.steps if s.id in before])

    # -- parameters
    def _specs(self, step: Step, info: KindInfo | None) -> list[tuple[ParamSpec, str]]:
        out: list[tuple[ParamSpec, str]] = []
        used: set[str] = set()
        for spec in info.parameters if info else ():
            name = next((n for n in spec.names() if n in step.parameters or n in step.input_mapping),
                        spec.name)
            out.append((spec, name))
            used.update(spec.names())
        for name in [*step.parameters, *step.input_mapping]:
            if name not in used:
                used.add(name)
                out.append((ParamSpec(name, _infer_type(step.parameters.get(name, ""))), name))
        return out

    def mapping_options(self, t: WorkflowTemplate, step: Step) -> list[tuple[str, str]]:
        """(label, source) for every workflow input and every output of another step that can
        feed ``step`` (steps downstream of it would make a cycle and are left out)."""
        options = [(f"input · {p.name} ({p.type.value})", f"input_data.{p.name}") for p in t.inputs]
        below = descendants(t, step.id)
        catalog = self.document.catalog
        for other in t.steps:
            if other.id == step.id or other.id in below:
                continue
            for out in catalog.outputs_of(other.kind):
                options.append((f"{other.id} → {out.name}", f"step_outputs.{other.id}.{out.name}"))
        return options

    def _load_params(self, t: WorkflowTemplate, step: Step, info: KindInfo | None) -> None:
        specs = self._specs(step, info)
        key = (step.id, step.kind, tuple((s.name, s.type, n) for s, n in specs))
        if key != self._row_key:
            self._row_key = key
            while self.params_layout.count():
                item = self.params_layout.takeAt(0)
                widget = item.widget() if item is not None else None
                if widget is not None:
                    widget.deleteLater()
            self._rows = {}
            for r, (spec, name) in enumerate(specs):
                hint = spec.type + (f", {spec.unit}" if spec.unit else "")
                weight = "600" if spec.required else "normal"
                label = QLabel(f"<span style='font-weight:{weight}'>{name}"
                               f"{' *' if spec.required else ''}</span><br>"
                               f"<span style='color:{current_theme().colors['muted']}; font-size:11px'>"
                               f"{hint}</span>",
                               self.params_box)
                label.setToolTip(spec.description or spec.type)
                label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
                row = ParamRow(spec, name, self.params_box)
                row.changed.connect(self._on_param)
                self.params_layout.addWidget(label, r, 0)
                self.params_layout.addWidget(row, r, 1)
                label.show()  # a layout shows new children of a visible widget only later
                row.show()
                self._rows[name] = row
            if not specs:
                none = QLabel("This kind takes no parameters.", self.params_box)
                keep_styled(none, _MUTED_STYLE)
                self.params_layout.addWidget(none, 0, 0, 1, 2)
                none.show()
        options = self.mapping_options(t, step)
        for row in self._rows.values():
            row.load(step, options)

    def param_row(self, name: str) -> ParamRow:
        return self._rows[name]

    def _on_param(self, name: str, source: str, value: Any) -> None:
        sid = self.step_id
        if sid is None:
            return

        def edit(t: WorkflowTemplate) -> WorkflowTemplate:
            step = t.step(sid)
            params, mapping = dict(step.parameters), dict(step.input_mapping)
            deps = step.depends_on
            if source == ParamRow.UNSET:
                params.pop(name, None)
                mapping.pop(name, None)
            elif source == ParamRow.VALUE:
                params[name] = value
                mapping.pop(name, None)
            else:
                mapping[name] = source
                params.pop(name, None)
                parts = source.split(".")
                if parts[0] == "step_outputs" and parts[1] not in deps and \
                        parts[1] not in _ancestors(t, sid):
                    deps = (*deps, parts[1])  # the value must exist before this step runs
            return ops.update_step(t, sid, parameters=params, input_mapping=mapping, depends_on=deps)

        self._apply(edit, f"Set {name} of {sid}", key=f"step:{sid}:param:{name}:{source[:2]}")

    def _on_add_param(self) -> None:
        name = self.new_param.text().strip()
        step = self.step
        if not name or step is None or name in step.parameters or name in step.input_mapping:
            return
        self.new_param.clear()
        sid = step.id
        self._apply(lambda t: ops.update_step(t, sid, parameters={**t.step(sid).parameters, name: ""}),
                    f"Add parameter {name} to {sid}")

    # -- other fields
    def _on_id(self) -> None:
        sid = self.step_id
        new = self.id_edit.text().strip()
        if sid is None or new == sid:
            return
        try:
            after = ops.rename_step(self.document.template, sid, new)
        except ops.EditError as exc:
            self.id_error.setText(str(exc))
            self.id_error.show()
            return
        self.id_error.hide()
        self.step_id = new
        self._row_key = ()
        self.step_renamed.emit(sid, new)
        self.document.apply(after, f"Rename step {sid} to {new}")

    def _check_condition(self, text: str) -> None:
        t = self.document.template
        if not text.strip():
            self.condition_status.setText("Always runs (no condition)")
            keep_styled(self.condition_status, _MUTED_STYLE)
            return
        problems = check_condition(text, steps=[s.id for s in t.steps],
                                   inputs=[p.name for p in t.inputs] if t.inputs else None)
        if problems:
            self.condition_status.setText("✕ " + "; ".join(problems))
            keep_styled(self.condition_status, _ERROR_STYLE)
        else:
            self.condition_status.setText("✓ condition is valid")
            keep_styled(self.condition_status, _OK_STYLE)

    def _on_condition(self) -> None:
        text = self.condition.text().strip()
        self._edit("condition", condition=text or None)

    def _on_handler(self, _index: int) -> None:
        sid = self.step_id
        if sid is None:
            return
        handler = self.handler.currentData()
        self._apply(lambda t: ops.set_error_handler(t, sid, handler), f"Error handler of {sid}")

    def _on_retry_toggled(self, on: bool) -> None:
        self.retry.setEnabled(on)
        step = self.step
        if step is None:
            return
        policy = (step.retry_policy or self.document.template.default_retry_policy) if on else None
        self._edit("retry policy", retry_policy=policy)


# ------------------------------------------------------------------------------ workflow

_INPUT_COLUMNS = ("Name", "Type", "Required", "Default", "Description")


class InputsModel(QAbstractTableModel):
    """The workflow's typed input parameters, editable in place; edits go to ``on_change``."""

    def __init__(self, on_change: Callable[[tuple[InputParameter, ...], str], None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: tuple[InputParameter, ...] = ()
        self._on_change = on_change

    def set_inputs(self, inputs: tuple[InputParameter, ...]) -> None:
        if inputs == self._rows:
            return
        if len(inputs) == len(self._rows):
            self._rows = inputs
            self.dataChanged.emit(self.index(0, 0), self.index(len(inputs) - 1, len(_INPUT_COLUMNS) - 1))
        else:
            self.beginResetModel()
            self._rows = inputs
            self.endResetModel()

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(_INPUT_COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return _INPUT_COLUMNS[section]
        return None

    def flags(self, index: ModelIndex) -> Qt.ItemFlag:
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
        if index.column() == 2:
            return base | Qt.ItemFlag.ItemIsUserCheckable
        return base | Qt.ItemFlag.ItemIsEditable

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        p = self._rows[index.row()]
        col = index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            if col == 0:
                return p.name
            if col == 1:
                return p.type.value
            if col == 3:
                if p.default is None:
                    return ""
                return json.dumps(p.default) if not isinstance(p.default, str) else p.default
            if col == 4:
                return p.description
        if role == Qt.ItemDataRole.CheckStateRole and col == 2:
            return Qt.CheckState.Checked if p.required else Qt.CheckState.Unchecked
        return None

    def setData(self, index: ModelIndex, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:  # noqa: N802
        p = self._rows[index.row()]
        col = index.column()
        changes: dict[str, Any] = {}
        if col == 0:
            name = str(value).strip()
            if not name or any(o.name == name for o in self._rows if o is not p):
                return False
            changes["name"] = name
        elif col == 1:
            changes["type"] = ParameterType(str(value))
            if p.default is not None:
                try:
                    changes["default"] = InputParameter(name=p.name, type=changes["type"]).coerce(p.default)
                except (ValueError, TypeError):
                    changes["default"] = None
        elif col == 2 and role == Qt.ItemDataRole.CheckStateRole:
            changes["required"] = Qt.CheckState(value) == Qt.CheckState.Checked
        elif col == 3:
            text = str(value).strip()
            if not text:
                changes["default"] = None
            else:
                try:
                    changes["default"] = p.coerce(text)
                except (ValueError, TypeError):
                    return False
        elif col == 4:
            changes["description"] = str(value)
        else:
            return False
        new = InputParameter.model_validate({**dict(p), **changes})
        rows = tuple(new if i == index.row() else o for i, o in enumerate(self._rows))
        self._on_change(rows, f"Rename input {p.name} to {new.name}" if new.name != p.name
                        else f"Change input {p.name}")
        return True


class _TypeDelegate(QStyledItemDelegate):
    def createEditor(self, parent: QWidget, option: QStyleOptionViewItem, index: ModelIndex) -> QWidget:  # noqa: N802
        combo = QComboBox(parent)
        for t in ParameterType:
            combo.addItem(t.value, t.value)
        return combo

    def setEditorData(self, editor: QWidget, index: ModelIndex) -> None:  # noqa: N802
        assert isinstance(editor, QComboBox)
        editor.setCurrentIndex(max(0, editor.findData(index.data())))

    def setModelData(self, editor: QWidget, model: Any, index: ModelIndex) -> None:  # noqa: N802
        assert isinstance(editor, QComboBox)
        model.setData(index, editor.currentData())


class WorkflowInspector(QWidget):
    """Name, description, tags, typed inputs, failure policy, timeouts, retries, error handler."""

    def __init__(self, document: TemplateDocument, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.document = document
        title = QLabel("Workflow", self)
        embolden(title, 1.25)
        hint = QLabel("Select a step on the canvas to edit it.", self)
        keep_styled(hint, _MUTED_STYLE)
        self.name = QLineEdit(self)
        self.name.setObjectName("workflowName")
        self.description = QLineEdit(self)
        self.tags = QLineEdit(self)
        self.tags.setPlaceholderText("comma separated")
        self.inputs_model = InputsModel(self._on_inputs, self)
        self.inputs = QTableView(self)
        self.inputs.setObjectName("workflowInputs")
        self.inputs.setModel(self.inputs_model)
        self.inputs.setItemDelegateForColumn(1, _TypeDelegate(self.inputs))
        self.inputs.verticalHeader().hide()
        self.inputs.horizontalHeader().setStretchLastSection(True)
        self.inputs.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.inputs.setMinimumHeight(110)
        for col, width in enumerate((100, 70, 62, 70)):
            self.inputs.setColumnWidth(col, width)
        self.add_input = QPushButton("Add input", self)
        self.remove_input = QPushButton("Remove", self)
        self.failure = QComboBox(self)
        self.failure.setObjectName("failurePolicy")
        for choice, text in ((FailurePolicy.ABORT, "Abort the run"),
                             (FailurePolicy.PAUSE, "Pause for the operator"),
                             (FailurePolicy.CONTINUE, "Continue other branches")):
            self.failure.addItem(text, choice.value)
        self.timeout = OptionalSeconds("Run timeout", 3600.0, self)
        self.deadline = OptionalSeconds("Deadline", 3600.0, self)
        self.deadline.setObjectName("deadline")
        self.deadline.setToolTip("The run should end within this long of its start; a late run is recorded "
                                 "as late and warned about before, not stopped (the run timeout stops it)")
        self.recovery = QSpinBox(self)
        self.recovery.setRange(0, 100)
        self.recovery.setKeyboardTracking(False)
        self.retry = RetryEditor(self)
        self.handler = QComboBox(self)
        self.handler.setObjectName("anyFailureHandler")

        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Description", self.description)
        form.addRow("Tags", self.tags)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_input)
        buttons.addWidget(self.remove_input)
        buttons.addStretch(1)
        policy = QFormLayout()
        policy.addRow("When a step fails", self.failure)
        policy.addRow("", self.timeout)
        policy.addRow("", self.deadline)
        policy.addRow("Recovery attempts", self.recovery)
        policy.addRow("On any failure run", self.handler)
        retry_box = QGroupBox("Default retry policy", self)
        QVBoxLayout(retry_box).addWidget(self.retry)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(hint)
        layout.addLayout(form)
        layout.addWidget(QLabel("Inputs", self))
        layout.addWidget(self.inputs)
        layout.addLayout(buttons)
        layout.addLayout(policy)
        layout.addWidget(retry_box)
        layout.addStretch(1)

        self.name.editingFinished.connect(lambda: self._edit("name", name=self.name.text().strip() or
                                                             self.document.template.name))
        self.description.editingFinished.connect(
            lambda: self._edit("description", description=self.description.text()))
        self.tags.editingFinished.connect(lambda: self._edit("tags", tags=tuple(
            t.strip() for t in self.tags.text().split(",") if t.strip())))
        self.failure.currentIndexChanged.connect(
            lambda _i: self._edit("failure policy", failure_policy=self.failure.currentData()))
        self.timeout.value_changed.connect(lambda v: self._edit("run timeout", default_timeout=v))
        self.deadline.value_changed.connect(lambda v: self._edit("deadline", deadline=v))
        self.recovery.valueChanged.connect(lambda v: self._edit("recovery attempts",
                                                                max_recovery_attempts=v))
        self.retry.policy_changed.connect(lambda p: self._edit("default retry policy",
                                                               default_retry_policy=p))
        self.handler.currentIndexChanged.connect(self._on_handler)
        self.add_input.clicked.connect(self._on_add_input)
        self.remove_input.clicked.connect(self._on_remove_input)

    def _edit(self, what: str, **changes: Any) -> None:
        field = next(iter(changes))
        self.document.apply(lambda t: ops.update_workflow(t, **changes), f"Change {what}",
                            merge_key=f"workflow:{field}")

    def _on_inputs(self, inputs: tuple[InputParameter, ...], text: str) -> None:
        def edit(t: WorkflowTemplate) -> WorkflowTemplate:
            if len(inputs) == len(t.inputs):  # a renamed input: references follow it
                for before, after in zip(t.inputs, inputs, strict=True):
                    if before.name != after.name:
                        t = ops.rename_input(t, before.name, after.name)
            return ops.update_workflow(t, inputs=inputs)

        self.document.apply(edit, text)

    def _on_add_input(self) -> None:
        names = {p.name for p in self.document.template.inputs}
        n = 1
        while f"input{n}" in names:
            n += 1
        param = InputParameter(name=f"input{n}")
        self.document.apply(lambda t: ops.update_workflow(t, inputs=(*t.inputs, param)),
                            f"Add input input{n}")

    def _on_remove_input(self) -> None:
        row = self.inputs.currentIndex().row()
        inputs = self.document.template.inputs
        if 0 <= row < len(inputs):
            name = inputs[row].name
            self.document.apply(lambda t: ops.update_workflow(
                t, inputs=tuple(p for p in t.inputs if p.name != name)), f"Remove input {name}")

    def _on_handler(self, _index: int) -> None:
        handler = self.handler.currentData()
        self.document.apply(lambda t: ops.set_error_handler(t, "*", handler),
                            "Error handler for any step")

    def refresh(self) -> None:
        t = self.document.template
        if not self.name.hasFocus():
            _set_text(self.name, t.name)
        if not self.description.hasFocus():
            _set_text(self.description, t.description)
        if not self.tags.hasFocus():
            _set_text(self.tags, ", ".join(t.tags))
        self.inputs_model.set_inputs(t.inputs)
        _set_combo(self.failure, t.failure_policy.value)
        self.timeout.set_value(t.default_timeout)
        self.deadline.set_value(t.deadline)
        _set_value(self.recovery, t.max_recovery_attempts)
        self.retry.set_policy(t.default_retry_policy)
        self.handler.blockSignals(True)
        self.handler.clear()
        self.handler.addItem("— nothing —", None)
        for s in t.steps:
            self.handler.addItem(f"{s.label} ({s.id})", s.id)
        self.handler.blockSignals(False)
        _set_combo(self.handler, t.error_handlers.get("*"))


class Inspector(QScrollArea):
    """The step inspector when a step is selected, the workflow inspector otherwise."""

    def __init__(self, document: TemplateDocument, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("inspector")
        self.setWidgetResizable(True)
        self.pages = QStackedWidget(self)
        self.workflow = WorkflowInspector(document, self.pages)
        self.step = StepInspector(document, self.pages)
        self.pages.addWidget(self.workflow)
        self.pages.addWidget(self.step)
        self.setWidget(self.pages)
        self.setMinimumWidth(120)

    def show_step(self, step_id: str | None) -> None:
        if step_id is None:
            self.pages.setCurrentWidget(self.workflow)
            self.step.step_id = None
            self.workflow.refresh()
        else:
            self.pages.setCurrentWidget(self.step)
            self.step.show_step(step_id)
        self._fit()

    def refresh(self) -> None:
        if self.pages.currentWidget() is self.step and self.step.step is not None:
            self.step.refresh()
        else:
            self.pages.setCurrentWidget(self.workflow)
            self.workflow.refresh()
        self._fit()

    def _fit(self) -> None:
        """Scroll rather than squeeze: the page is never shorter than what it shows needs."""
        page = self.pages.currentWidget()
        if page is not None:
            self.pages.setMinimumHeight(page.sizeHint().height())


def _ancestors(t: WorkflowTemplate, step_id: str) -> set[str]:
    """The steps that run before ``step_id`` (through its dependencies)."""
    deps = {s.id: s.depends_on for s in t.steps}
    out: set[str] = set()
    todo = list(deps.get(step_id, ()))
    while todo:
        d = todo.pop()
        if d not in out and d != step_id:
            out.add(d)
            todo += deps.get(d, ())
    return out
