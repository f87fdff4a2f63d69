"""Dialogs of operator actions, opened with ``open()`` and awaited — never ``exec()``.

A modal ``exec()`` inside a coroutine re-enters the event loop (qasync#59, specs/performance.md
§B.7). :func:`ask` opens a dialog window-modally and returns a future's result when the
operator closes it, so the loop keeps running (the engine, the bridge, other actions) while a
dialog waits. Tests fill the fields and call ``accept()`` — no nested event loop anywhere.

Every dialog says who the action will be recorded as, and reads its values into plain Python
attributes when accepted, so they stay readable after the widget is gone. Dialogs of actions on
orders and instruments carry an :class:`ImpactView`: what the action will touch
(:func:`core.impact.preview`, computed on a reader thread), with counts and the first items, and
where the console keeps a forecast, how far each affected run's ETA moves
(:func:`core.impact.eta_moves`, played forward in the forecast's worker).
"""

from __future__ import annotations

import asyncio
import html
import json
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from core.errors import LabconsoleError
from core.impact import EtaMove, EtaMoves, Impact
from core.orders import OrderStatus
from panels.style import status_icon
from panels.theme import keep_styled

ModelIndex = QModelIndex | QPersistentModelIndex

STEP_STATUS_GLYPH = {"pending": "○", "queued": "◷", "running": "▶", "retrying": "↻", "completed": "✓",
                     "failed": "✕", "skipped": "↷", "cancelled": "⊘", "unknown": "?"}
"""A mark per engine step status, for lists where an icon does not fit."""


async def ask(dialog: QDialog) -> bool:
    """Open ``dialog`` window-modally and wait until it is accepted (True) or rejected."""
    future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def finished(code: int) -> None:
        if not future.done():
            future.set_result(code == QDialog.DialogCode.Accepted.value)

    dialog.finished.connect(finished)
    dialog.open()
    try:
        return await future
    except asyncio.CancelledError:
        dialog.reject()
        raise


IMPACT_LINES = 6
"""Steps and refusals named in an impact preview (the rest are counted)."""


class ImpactView(QWidget):
    """What an action will touch, shown before it is taken: the counts (runs, steps by what
    happens to them, instruments freed or blocked, queued steps that wait longer, instrument time
    added or removed, orders it does not apply to), then the first runs, steps and refusals.

    :meth:`compute` starts a preview coroutine (:func:`core.impact.preview`, which reads on a
    reader thread) and shows its result when it ends; a newer :meth:`compute` replaces an older
    one still running, and closing the view cancels it. Given an ``etas`` coroutine too
    (:func:`core.impact.eta_moves`), the moved ETAs of the affected runs follow ("R-12: ETA
    14:20 → 14:05") and replace the instrument time added or removed; without a forecast
    (``etas`` gives None) the instrument time stays.
    """

    computed = Signal(object)
    """The :class:`~core.impact.Impact` shown (None when the preview failed)."""
    etas_computed = Signal(object)
    """The :class:`~core.impact.EtaMoves` shown (None: no forecast, or it failed)."""

    def __init__(self, parent: QWidget | None = None, *, runs: bool = True) -> None:
        super().__init__(parent)
        self.setObjectName("impactView")
        self.runs = runs
        """Name the first runs (a bulk dialog names them itself)."""
        self.impact: Impact | None = None
        self.moves: EtaMoves | None = None
        """The moved ETAs shown (None: none asked, no forecast yet, or still working)."""
        self._task: asyncio.Task[Impact] | None = None
        self._eta_task: asyncio.Task[EtaMoves | None] | None = None
        self.summary = QLabel("", self)
        self.summary.setObjectName("impactSummary")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.details = QLabel("", self)
        self.details.setObjectName("impactDetails")
        self.details.setWordWrap(True)
        self.details.setTextFormat(Qt.TextFormat.RichText)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.etas = QLabel("", self)
        self.etas.setObjectName("impactEtas")
        self.etas.setWordWrap(True)
        self.etas.setTextFormat(Qt.TextFormat.RichText)
        self.etas.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.etas.hide()
        keep_styled(self, lambda t: f"#impactView {{ border-left: 3px solid {t.colors['text_info']}; }} "
                                    f"#impactDetails {{ color: {t.colors['muted']}; }}")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.summary)
        layout.addWidget(self.etas)
        layout.addWidget(self.details)

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def etas_busy(self) -> bool:
        return self._eta_task is not None and not self._eta_task.done()

    def compute(self, make: Callable[[], Coroutine[Any, Any, Impact]],
                etas: Callable[[], Coroutine[Any, Any, EtaMoves | None]] | None = None) -> None:
        """Preview with ``make()`` (a coroutine giving an Impact); shown when it ends. ``etas()``:
        the moved ETAs (:func:`core.impact.eta_moves`), shown when they are worked out."""
        self.cancel()
        self.impact = None
        self.moves = None
        self.summary.setText("<i>Working out what this touches…</i>")
        self.details.setText("")
        self.etas.setText("")
        self.etas.hide()
        loop = asyncio.get_running_loop()
        task = loop.create_task(make(), name="impact preview")
        self._task = task
        task.add_done_callback(self._done)
        if etas is not None:
            self.etas.setText("<i>Working out how finish times move…</i>")
            self.etas.show()
            eta_task = loop.create_task(etas(), name="impact preview: ETAs")
            self._eta_task = eta_task
            eta_task.add_done_callback(self._etas_done)

    def cancel(self) -> None:
        for task in (self._task, self._eta_task):
            if task is not None and not task.done():
                task.cancel()
        self._task = None
        self._eta_task = None

    def _done(self, task: asyncio.Task[Impact]) -> None:
        if task is not self._task or task.cancelled():
            return
        self._task = None
        exc = task.exception()
        if exc is None:
            self.show_impact(task.result())
            return
        message = str(exc) if isinstance(exc, LabconsoleError) else f"{type(exc).__name__}: {exc}"
        self.summary.setText(f"<i>What this touches could not be worked out: {html.escape(message)}</i>")
        self.details.setText("")
        self.computed.emit(None)

    def show_impact(self, impact: Impact) -> None:
        self.impact = impact
        self.summary.setText(impact_summary_html(impact, work=not self._moved()))
        self.details.setText(impact_details_html(impact, runs=self.runs))
        self.details.setVisible(bool(self.details.text()))
        self._fit()
        self.computed.emit(impact)

    def _moved(self) -> bool:
        """Moved ETAs are shown (they replace the instrument time)."""
        return self.moves is not None and self.moves.skipped is None

    def _etas_done(self, task: asyncio.Task[EtaMoves | None]) -> None:
        if task is not self._eta_task or task.cancelled():
            return
        self._eta_task = None
        exc = task.exception()
        if exc is not None:
            message = str(exc) if isinstance(exc, LabconsoleError) else f"{type(exc).__name__}: {exc}"
            self.etas.setText(f"<i>How finish times move could not be worked out: {html.escape(message)}</i>")
            self.etas_computed.emit(None)
            return
        self.show_moves(task.result())

    def show_moves(self, moves: EtaMoves | None) -> None:
        """Show moved ETAs (None: no forecast yet, the instrument time stands in)."""
        self.moves = moves
        text = eta_moves_html(moves) if moves is not None else ""
        self.etas.setText(text)
        self.etas.setVisible(bool(text))
        if self.impact is not None:
            self.summary.setText(impact_summary_html(self.impact, work=not self._moved()))
        self._fit()
        self.etas_computed.emit(moves)

    def _fit(self) -> None:
        """Grow the dialog when the preview needs more room than it had when it opened (once the
        labels' new text has been laid out)."""
        for label in (self.summary, self.etas, self.details):
            label.updateGeometry()
        QTimer.singleShot(0, self, self._fit_now)

    def _fit_now(self) -> None:
        window = self.window()
        if window is self:
            return
        layout = window.layout()
        if layout is None:
            return
        layout.activate()
        width = window.width()
        height = layout.totalHeightForWidth(width) if layout.hasHeightForWidth() else window.sizeHint().height()
        if height > window.height():
            window.resize(width, height)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.cancel()
        super().closeEvent(event)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def impact_summary_html(impact: Impact, *, work: bool = True) -> str:
    """The counts of an impact, one line: "Touches 3 runs · 6 steps canceled · frees Sealer1 …";
    ``work``: with the instrument time added or removed (left out when moved ETAs are shown)."""
    parts = [f"<b>{_plural(impact.runs, 'run')}</b>"]
    parts += [f"{_plural(n, 'step')} {html.escape(what)}" for what, n in sorted(impact.steps.items(),
                                                                            key=lambda kv: (-kv[1], kv[0]))]
    if impact.instruments_freed:
        parts.append("frees " + html.escape(", ".join(sorted(impact.instruments_freed))))
    if impact.instruments_blocked:
        parts.append("blocks " + html.escape(", ".join(impact.instruments_blocked)))
    if impact.waiting_longer:
        parts.append(f"{_plural(impact.waiting_longer, 'queued step')} wait longer")
    if impact.work_seconds and work:
        minutes = abs(impact.work_seconds) / 60
        amount = f"{abs(impact.work_seconds):.0f}\u00a0s" if minutes < 2 else \
            f"{minutes:.0f}\u00a0min" if minutes < 120 else f"{minutes / 60:.1f}\u00a0h"
        parts.append(f"{'+' if impact.work_seconds > 0 else '−'}{amount} instrument time")
    if impact.refused_count:
        parts.append(f"<b>{impact.refused_count:,} not applicable</b>")
    if not impact.runs and not impact.steps and not impact.refused_count and not impact.instruments_blocked:
        return "<b>Touches nothing</b> that is still running or waiting."
    return "<b>Touches</b> " + " · ".join(parts)


def _when(ts: float, now: datetime) -> str:
    moment = datetime.fromtimestamp(ts)
    return f"{moment:%H:%M}" if moment.date() == now.date() else f"{moment:%a %H:%M}"


def _shift(seconds: float) -> str:
    """A signed move: "−40 s", "+2 min 05 s", "−1 h 10 min"."""
    sign = "+" if seconds > 0 else "−"
    total = round(abs(seconds))
    if total < 60:
        return f"{sign}{total}\u00a0s"
    if total < 3600:
        m, sec = divmod(total, 60)
        return f"{sign}{m}\u00a0min" + (f" {sec:02d}\u00a0s" if sec else "")
    h, m = divmod(total // 60, 60)
    return f"{sign}{h}\u00a0h" + (f" {m:02d}\u00a0min" if m else "")


def eta_move_text(move: EtaMove, now: datetime | None = None) -> str:
    """One run's moved ETA, plain: "R-12: ETA 14:20 → 14:05 (−15 min)", "R-3: ETA 14:20 → none
    (canceled)", "R-4: no ETA (paused: …) → 15:40"; times of another day than ``now`` with
    their weekday."""
    now = now or datetime.now()
    before = f"ETA {_when(move.before, now)}" if move.before is not None else f"no ETA ({move.before_note})"
    if move.after is None:
        after = f"none ({move.after_note})"
    else:
        after = _when(move.after, now)
        if move.delta is not None:
            after += f" ({_shift(move.delta)})" if round(move.delta) else " (unchanged)"
    return f"{move.run_id}: {before} → {after}"


def eta_moves_html(moves: EtaMoves, lines: int = IMPACT_LINES) -> str:
    """The moved ETAs of an impact: the runs acted on, then the largest moves (the rest counted)."""
    if moves.skipped is not None:
        return f"<i>ETAs: {html.escape(moves.skipped)}; the instrument time is shown instead.</i>"
    if not moves.count:
        return "<b>ETAs:</b> no run's forecast finish time moves."
    now = datetime.fromtimestamp(moves.at) if moves.at else datetime.now()
    out = [f"<b>ETAs</b> ({_plural(moves.count, 'run')} move" + ("s" if moves.count == 1 else "") + "):"]
    out += [html.escape(eta_move_text(m, now)) for m in moves.moves[:lines]]
    shown = min(lines, len(moves.moves))
    if moves.count > shown:
        out.append(f"… and {moves.count - shown:,} more runs")
    return "<br>".join(out)


def impact_details_html(impact: Impact, lines: int = IMPACT_LINES, *, runs: bool = True) -> str:
    """The first runs, steps and refusals of an impact (the rest counted)."""
    out: list[str] = []
    if runs and impact.first_runs and (impact.runs > 1 or impact.action == "out_of_service"):
        more = impact.runs - len(impact.first_runs)
        out.append("Runs: " + html.escape(", ".join(impact.first_runs))
                   + (f" … and {more:,} more" if more > 0 else ""))
    total_steps = sum(impact.steps.values())
    for run_id, step_id, now, what in impact.first_steps[:lines]:
        out.append(f"{STEP_STATUS_GLYPH.get(now, '·')} {html.escape(run_id)} · <b>{html.escape(step_id)}</b> "
                   f"({html.escape(now)}) → {html.escape(what)}")
    if total_steps > min(lines, len(impact.first_steps)):
        out.append(f"… and {total_steps - min(lines, len(impact.first_steps)):,} more steps")
    for order_id, why in impact.refused[:lines]:
        out.append(f"✕ {html.escape(order_id)}: {html.escape(why)}")
    if impact.refused_count > min(lines, len(impact.refused)):
        out.append(f"… and {impact.refused_count - min(lines, len(impact.refused)):,} more not applicable")
    return "<br>".join(out)


class ActionDialog(QDialog):
    """A message, the action's own fields, a reason and who it is recorded as, OK and Back.

    With ``reason_required`` the OK button stays disabled until a reason is typed.
    """

    def __init__(self, title: str, message: str, *, who: str, ok_text: str = "OK",
                 reason_required: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(480)
        self.reason_required = reason_required
        self.reason = ""
        """The reason given (stripped), read when accepted."""
        self.message = QLabel(message, self)
        self.message.setWordWrap(True)
        self.message.setTextFormat(Qt.TextFormat.RichText)
        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.reason_edit = QLineEdit(self)
        self.reason_edit.setObjectName("reason")
        self.reason_edit.setPlaceholderText("Why? Required — goes to the audit log" if reason_required
                                            else "Why? Optional — goes to the audit log")
        self.reason_edit.setClearButtonEnabled(True)
        self.who = QLabel(f"Recorded in the audit log as <b>{who}</b>.", self)
        self.buttons = QDialogButtonBox(self)
        self.ok_button = self.buttons.addButton(ok_text, QDialogButtonBox.ButtonRole.AcceptRole)
        self.back_button = self.buttons.addButton("Back", QDialogButtonBox.ButtonRole.RejectRole)
        self.ok_button.setDefault(True)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.reason_edit.textChanged.connect(self.validate)
        self.impact = ImpactView(self)
        """What the action will touch (shown once :meth:`preview` is called)."""
        self.impact.hide()
        self.finished.connect(lambda _code: self.impact.cancel())
        layout = QVBoxLayout(self)
        layout.addWidget(self.message)
        layout.addWidget(self.impact)
        layout.addLayout(self.form)
        layout.addWidget(self.who)
        layout.addWidget(self.buttons)

    def preview(self, make: Callable[[], Coroutine[Any, Any, Impact]],
                etas: Callable[[], Coroutine[Any, Any, EtaMoves | None]] | None = None) -> None:
        """Show what the action will touch: ``make()`` is a :func:`core.impact.preview` call,
        ``etas()`` a :func:`core.impact.eta_moves` call (None: no forecast in this window)."""
        self.impact.show()
        self.impact.compute(make, etas)

    def add_reason_row(self) -> None:
        """Subclasses call this after adding their own rows, so the reason comes last."""
        self.form.addRow("Reason:", self.reason_edit)
        self.validate()
        self.reason_edit.setFocus()

    def problem(self) -> str | None:
        """Why OK is not possible yet (None: it is); subclasses add their own checks."""
        if self.reason_required and not self.reason_edit.text().strip():
            return "A reason is required"
        return None

    def validate(self) -> None:
        problem = self.problem()
        self.ok_button.setEnabled(problem is None)
        self.ok_button.setToolTip(problem or "")

    def accept(self) -> None:
        if self.problem() is not None:
            return
        self.reason = self.reason_edit.text().strip()
        self.collect()
        super().accept()

    def collect(self) -> None:
        """Read the fields into attributes (subclasses)."""


class ReasonDialog(ActionDialog):
    """Confirm a destructive action with a reason."""

    def __init__(self, title: str, message: str, *, who: str, ok_text: str = "OK",
                 reason_required: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(title, message, who=who, ok_text=ok_text, reason_required=reason_required,
                         parent=parent)
        self.add_reason_row()


PRIORITY_PRESETS = (("Low", 20), ("Normal", 50), ("High", 80), ("Urgent", 95))


class PriorityDialog(ActionDialog):
    """A new numeric priority 0-100 (higher goes first), with presets."""

    def __init__(self, title: str, current: int, *, who: str, message: str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(title, message or f"Current priority: <b>{current}</b>. Higher numbers are "
                         "dispatched first; queued steps are re-ordered at once.",
                         who=who, ok_text="Set priority", reason_required=False, parent=parent)
        self.priority = current
        self.spin = QSpinBox(self)
        self.spin.setObjectName("priority")
        self.spin.setRange(0, 100)
        self.spin.setValue(current)
        presets = QHBoxLayout()
        presets.addWidget(self.spin)
        for name, value in PRIORITY_PRESETS:
            button = QPushButton(f"{name} {value}", self)
            button.setAutoDefault(False)
            button.clicked.connect(lambda _checked=False, v=value: self.spin.setValue(v))
            presets.addWidget(button)
        presets.addStretch(1)
        self.form.addRow("Priority:", presets)
        self.add_reason_row()

    def collect(self) -> None:
        self.priority = self.spin.value()


class StepChoiceDialog(ActionDialog):
    """Choose one step of a run (recover from it, skip it), optionally with outputs."""

    def __init__(self, title: str, message: str, steps: Sequence[tuple[str, str, str]], *,
                 default: str | None, who: str, ok_text: str, outputs: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(title, message, who=who, ok_text=ok_text, parent=parent)
        self.step_id = default or (steps[0][0] if steps else "")
        self.outputs: dict[str, Any] = {}
        self.combo = QComboBox(self)
        self.combo.setObjectName("step")
        for step_id, label, status in steps:
            self.combo.addItem(f"{STEP_STATUS_GLYPH.get(status, '·')}  {label}  ({status})", step_id)
        if default is not None and self.combo.findData(default) >= 0:
            self.combo.setCurrentIndex(self.combo.findData(default))
        self.form.addRow("Step:", self.combo)
        self.outputs_edit: QPlainTextEdit | None = None
        if outputs:
            self.outputs_edit = QPlainTextEdit(self)
            self.outputs_edit.setObjectName("outputs")
            self.outputs_edit.setPlaceholderText("absorbance = 0.42\nok = true")
            self.outputs_edit.setFixedHeight(84)
            self.outputs_edit.textChanged.connect(self.validate)
            self.form.addRow("Outputs:", self.outputs_edit)
        self.add_reason_row()

    def problem(self) -> str | None:
        if self.combo.currentIndex() < 0:
            return "Choose a step"
        if self.outputs_edit is not None:
            try:
                parse_outputs(self.outputs_edit.toPlainText())
            except ValueError as exc:
                return str(exc)
        return super().problem()

    def collect(self) -> None:
        self.step_id = self.combo.currentData()
        if self.outputs_edit is not None:
            self.outputs = parse_outputs(self.outputs_edit.toPlainText())


def parse_outputs(text: str) -> dict[str, Any]:
    """``name = value`` lines; values that read as JSON (numbers, true/false, lists) are typed."""
    out: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"line {number}: write name = value")
        value = value.strip()
        try:
            out[name.strip()] = json.loads(value.lower() if value.lower() in ("true", "false") else value)
        except ValueError:
            out[name.strip()] = value
    return out


class MessageDialog(QDialog):
    """A non-blocking note: a title and a list of plain-language lines."""

    def __init__(self, title: str, lines: Sequence[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(440)
        self.lines = list(lines)
        text = QLabel("<ul style='margin-left:-20px'>" + "".join(f"<li>{_html(x)}</li>" for x in lines)
                      + "</ul>", self)
        text.setWordWrap(True)
        text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(buttons)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------------------- bulk actions


class ResultsModel(QAbstractTableModel):
    """Per-order results of a bulk action (order, done/refused, message); optionally refused only."""

    HEADERS = ("Order", "Result", "Message")

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._all: list[Any] = []
        self._rows: list[Any] = []

    def set_results(self, results: Sequence[Any], refused_only: bool = False) -> None:
        self.beginResetModel()
        self._all = list(results)
        self._rows = [r for r in self._all if not r.ok] if refused_only else self._all
        self.endResetModel()

    def set_refused_only(self, on: bool) -> None:
        self.set_results(self._all, on)

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else 3

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        result = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return (result.order_id, "Done" if result.ok else "Refused", result.message)[col]
        if role == Qt.ItemDataRole.DecorationRole and col == 1:
            return status_icon(OrderStatus.Complete if result.ok else OrderStatus.Error)
        if role == Qt.ItemDataRole.ToolTipRole and col == 2:
            return result.message
        return None

    def result(self, row: int) -> Any:
        return self._rows[row]


class BulkDialog(QDialog):
    """Bulk cancel, retry or reprioritise: preview, then progress, then one result per order.

    :meth:`confirmed` waits for the operator's decision on the preview page; the caller then
    reports progress with :meth:`show_progress` and ends with :meth:`show_results`. While the
    action runs the dialog can be hidden; the action goes on.
    """

    VERBS = {"cancel": "Cancel", "retry": "Retry", "reprioritise": "Reprioritise"}
    EXPLAIN = {
        "cancel": "Running steps are stopped on their instruments and everything not finished is "
                  "canceled. Orders that are already finished are refused and listed.",
        "retry": "Failed and canceled steps run again with fresh attempts. Orders with nothing "
                 "to retry are refused and listed.",
        "reprioritise": "Runs and their queued steps get the new priority; queued steps are "
                        "re-ordered at once.",
    }

    def __init__(self, action: str, preview: dict[str, Any], *, who: str,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.action = action
        self.preview = preview
        self.reason = ""
        self.priority = 50
        self.left: list[str] = []
        self._decision: asyncio.Future[bool] | None = None
        verb = self.VERBS[action]
        count = int(preview.get("orders", 0))
        self.setWindowTitle(f"{verb} {count:,} orders")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumSize(560, 380)
        self.pages = QStackedWidget(self)

        # -- page 0: preview and confirm
        confirm = QWidget(self)
        runs = int(preview.get("runs", 0))
        run_ids = list(preview.get("run_ids", []))
        shown = ", ".join(run_ids[:12])
        more = runs - min(len(run_ids), 12)
        self.summary = QLabel(
            f"<h3>{verb} {count:,} order{'s' if count != 1 else ''} in {runs:,} run"
            f"{'s' if runs != 1 else ''}</h3><p>{self.EXPLAIN[action]}</p>"
            f"<p><b>Runs:</b> {shown}{f' … and {more:,} more' if more > 0 else ''}</p>", confirm)
        self.summary.setWordWrap(True)
        form = QFormLayout()
        self.priority_spin: QSpinBox | None = None
        if action == "reprioritise":
            self.priority_spin = QSpinBox(confirm)
            self.priority_spin.setObjectName("priority")
            self.priority_spin.setRange(0, 100)
            self.priority_spin.setValue(50)
            form.addRow("New priority:", self.priority_spin)
        self.reason_edit = QLineEdit(confirm)
        self.reason_edit.setObjectName("reason")
        self.reason_required = action == "cancel"
        self.reason_edit.setPlaceholderText("Why? " + ("Required" if self.reason_required else "Optional")
                                            + " — goes to the audit log")
        form.addRow("Reason:", self.reason_edit)
        who_label = QLabel(f"Recorded in the audit log as <b>{who}</b>, once per order.", confirm)
        self.confirm_buttons = QDialogButtonBox(confirm)
        self.go_button = self.confirm_buttons.addButton(f"{verb} {count:,} orders",
                                                        QDialogButtonBox.ButtonRole.AcceptRole)
        self.confirm_buttons.addButton("Back", QDialogButtonBox.ButtonRole.RejectRole)
        self.go_button.setDefault(True)
        self.confirm_buttons.accepted.connect(self.confirm)
        self.confirm_buttons.rejected.connect(self.reject)
        self.reason_edit.textChanged.connect(self._validate)
        self.impact = ImpactView(confirm, runs=False)
        """What the action will touch, for every order (computed on a reader thread)."""
        self.impact.hide()
        self.finished.connect(lambda _code: self.impact.cancel())
        box = QVBoxLayout(confirm)
        box.addWidget(self.summary)
        box.addWidget(self.impact)
        box.addLayout(form)
        box.addWidget(who_label)
        box.addStretch(1)
        box.addWidget(self.confirm_buttons)
        self.pages.addWidget(confirm)

        # -- page 1: progress
        running = QWidget(self)
        self.progress_label = QLabel(f"{verb}: 0 of {count:,} orders…", running)
        self.progress = QProgressBar(running)
        self.progress.setRange(0, max(1, count))
        self.progress.setValue(0)
        self.stop_event = asyncio.Event()
        """Set by Stop: the action ends after the chunk in progress and lists what is left."""
        self.stop_button = QPushButton("Stop", running)
        self.stop_button.setObjectName("stop")
        self.stop_button.setToolTip("Finish the orders being changed now (one transaction) and "
                                    "leave the rest as they are")
        self.stop_button.clicked.connect(self.stop)
        hide = QPushButton("Hide — keep going in the background", running)
        hide.clicked.connect(self.hide)
        box = QVBoxLayout(running)
        box.addStretch(1)
        box.addWidget(self.progress_label)
        box.addWidget(self.progress)
        box.addStretch(1)
        row = QHBoxLayout()
        row.addWidget(self.stop_button)
        row.addStretch(1)
        row.addWidget(hide)
        box.addLayout(row)
        self.pages.addWidget(running)

        # -- page 2: results
        done_page = QWidget(self)
        self.result_summary = QLabel("", done_page)
        self.refused_only = QCheckBox("Show refused orders only", done_page)
        self.results = ResultsModel(done_page)
        self.refused_only.toggled.connect(self.results.set_refused_only)
        self.results_view = QTableView(done_page)
        self.results_view.setModel(self.results)
        self.results_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.results_view.setWordWrap(False)
        self.results_view.verticalHeader().hide()
        self.results_view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.results_view.verticalHeader().setDefaultSectionSize(22)
        self.results_view.horizontalHeader().setStretchLastSection(True)
        self.results_view.setColumnWidth(0, 120)
        self.results_view.setColumnWidth(1, 90)
        close_buttons = QDialogButtonBox(done_page)
        copy = close_buttons.addButton("Copy list", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(self.copy_results)
        close_buttons.addButton(QDialogButtonBox.StandardButton.Close)
        close_buttons.rejected.connect(self.accept)
        box = QVBoxLayout(done_page)
        box.addWidget(self.result_summary)
        box.addWidget(self.refused_only)
        box.addWidget(self.results_view, 1)
        box.addWidget(close_buttons)
        self.pages.addWidget(done_page)
        QShortcut(QKeySequence.StandardKey.Copy, self.results_view, self.copy_results)

        layout = QVBoxLayout(self)
        layout.addWidget(self.pages)
        self._validate()

    @property
    def stage(self) -> str:
        """``confirm``, ``running`` or ``results``."""
        return ("confirm", "running", "results")[self.pages.currentIndex()]

    def _validate(self) -> None:
        ok = not self.reason_required or bool(self.reason_edit.text().strip())
        self.go_button.setEnabled(ok)
        self.go_button.setToolTip("" if ok else "A reason is required")

    async def confirmed(self) -> bool:
        """Open the dialog on its preview page; True once the operator confirms."""
        self._decision = asyncio.get_running_loop().create_future()
        self.finished.connect(self._on_finished)
        self.open()
        try:
            return await self._decision
        except asyncio.CancelledError:
            self.reject()
            raise

    def confirm(self) -> None:
        if not self.go_button.isEnabled():
            return
        self.reason = self.reason_edit.text().strip()
        if self.priority_spin is not None:
            self.priority = self.priority_spin.value()
        self.pages.setCurrentIndex(1)
        if self._decision is not None and not self._decision.done():
            self._decision.set_result(True)

    def _on_finished(self, _code: int) -> None:
        if self._decision is not None and not self._decision.done():
            self._decision.set_result(False)

    def stop(self) -> None:
        """Ask the action to stop after the chunk in progress."""
        self.stop_event.set()
        self.stop_button.setEnabled(False)
        self.stop_button.setText("Stopping…")
        self.progress_label.setText(self.progress_label.text().rstrip("…") + " — stopping after this chunk…")

    def show_progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(1, total))
        self.progress.setValue(done)
        stopping = " — stopping after this chunk…" if self.stop_event.is_set() else "…"
        self.progress_label.setText(f"{self.VERBS[self.action]}: {done:,} of {total:,} orders{stopping}")

    def show_results(self, results: Sequence[Any], left: Sequence[str] = ()) -> None:
        """The outcome: one row per order reached; ``left``: the orders a stop left unchanged."""
        done = sum(1 for r in results if r.ok)
        refused = len(results) - done
        self.left = list(left)
        total = len(results) + len(self.left)
        stopped = f", <b>{len(self.left):,} left</b> (stopped before them)" if self.left else ""
        self.result_summary.setText(f"<b>{done:,} done</b>, <b>{refused:,} refused</b>{stopped} of "
                                    f"{total:,} orders.")
        if self.left:
            shown = ", ".join(self.left[:20])
            self.result_summary.setToolTip(f"Left unchanged: {shown}"
                                           + (f" … and {len(self.left) - 20:,} more" if len(self.left) > 20 else ""))
        self.results.set_results(results, self.refused_only.isChecked())
        self.pages.setCurrentIndex(2)
        self.setWindowTitle(f"{self.VERBS[self.action]}: {done:,} done, {refused:,} refused"
                            + (f", {len(self.left):,} left" if self.left else ""))
        self.finished.connect(self.deleteLater)
        if not self.isVisible():  # hidden while it ran: show the outcome
            self.open()

    def copy_results(self) -> None:
        rows = [self.results.result(i) for i in range(self.results.rowCount())]
        QGuiApplication.clipboard().setText("\n".join(
            f"{r.order_id}\t{'done' if r.ok else 'refused'}\t{r.message}" for r in rows)
            + "".join(f"\n{oid}\tleft\tstopped before it" for oid in self.left))


class NameDialog(QDialog):
    """Ask for a name (of a saved view); :attr:`name` holds it once accepted."""

    def __init__(self, title: str, label: str, default: str = "", *, taken: Sequence[str] = (),
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumWidth(360)
        self.name = ""
        self.taken = set(taken)
        self.edit = QLineEdit(default, self)
        self.edit.setObjectName("name")
        self.note = QLabel("", self)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save
                                        | QDialogButtonBox.StandardButton.Cancel, self)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        self.edit.textChanged.connect(self._validate)
        form = QFormLayout()
        form.addRow(label, self.edit)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.note)
        layout.addWidget(self.buttons)
        self._validate()

    def _validate(self) -> None:
        name = self.edit.text().strip()
        self.buttons.button(QDialogButtonBox.StandardButton.Save).setEnabled(bool(name))
        self.note.setText("A view with this name is replaced." if name in self.taken else "")

    def accept(self) -> None:
        name = self.edit.text().strip()
        if not name:
            return
        self.name = name
        super().accept()
