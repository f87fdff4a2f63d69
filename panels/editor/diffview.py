"""Compare two versions of a template: drawn on the graph and listed.

The graph is the union of both versions, laid out afresh: added steps and dependencies in green,
removed ones dashed in red, changed steps in amber with a tag counting their changes (the
tooltip lists them). The list below gives every difference in words
(:meth:`core.template_diff.TemplateDiff.lines`); clicking a line selects its step.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from core.template_diff import TemplateDiff, diff_templates
from core.templates import WorkflowTemplate
from panels.editor.graph import EditorScene, EditorView, NodeMark, colors
from panels.editor.kinds import KindCatalog
from panels.editor.layout import layout_with_routes
from panels.theme import embolden, theme_events

__all__ = ["ChangesModel", "TemplateDiffView", "union_template"]

ModelIndex = QModelIndex | QPersistentModelIndex


def union_template(old: WorkflowTemplate, new: WorkflowTemplate, diff: TemplateDiff) -> WorkflowTemplate:
    """Both versions in one graph: the new steps, then the removed ones, with removed edges."""
    steps = {s.id: s for s in new.steps}
    for s in old.steps:
        steps.setdefault(s.id, s)
    for dep, dependant in diff.removed_edges:
        target = steps.get(dependant)
        if target is not None and dep in steps and dep not in target.depends_on:
            steps[dependant] = target.model_copy(update={"depends_on": (*target.depends_on, dep)})
    return new.model_copy(update={"steps": tuple(steps.values())})


class ChangesModel(QAbstractListModel):
    """Every difference as a row, coloured by kind; :data:`StepRole` gives its step id."""

    StepRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[tuple[str, str, str | None]] = []

    def set_diff(self, diff: TemplateDiff | None) -> None:
        self.beginResetModel()
        rows: list[tuple[str, str, str | None]] = []
        if diff is not None:
            rows += [(f"+ step {s} ({diff.labels.get(s, s)})", "added", s) for s in diff.added_steps]
            rows += [(f"− step {s} ({diff.labels.get(s, s)})", "removed", s) for s in diff.removed_steps]
            for d in diff.changed_steps:
                rows += [(f"~ {d.step_id}: {c.describe()}", "changed", d.step_id) for c in d.changes]
            rows += [(f"+ dependency {a} → {b}", "added", b) for a, b in diff.added_edges]
            rows += [(f"− dependency {a} → {b}", "removed", b) for a, b in diff.removed_edges]
            rows += [(f"~ workflow {c.describe()}", "changed", None) for c in diff.workflow_changes]
            if not rows:
                rows.append(("No differences" + (" except the layout" if diff.moved_steps else ""),
                             "same", None))
        self._rows = rows
        self.endResetModel()

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        text, kind, step = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return text
        if role == Qt.ItemDataRole.ForegroundRole:
            c = colors()
            return {"added": c.added, "removed": c.removed, "changed": c.changed_text}.get(kind)
        if role == self.StepRole:
            return step
        return None

    def texts(self) -> list[str]:
        return [r[0] for r in self._rows]


class TemplateDiffView(QWidget):
    """Pick two versions, see what changed. Emits :attr:`compare_requested` with the keys of
    the chosen versions (an ``int`` version, or ``"draft"`` for the editor's draft)."""

    compare_requested = Signal(object, object)

    def __init__(self, catalog: KindCatalog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.diff: TemplateDiff | None = None
        self.old_combo = QComboBox(self)
        self.old_combo.setObjectName("diffOld")
        self.new_combo = QComboBox(self)
        self.new_combo.setObjectName("diffNew")
        for combo in (self.old_combo, self.new_combo):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(6)
        self.compare = QPushButton("Compare", self)
        self.summary = QLabel(self)
        self.summary.setObjectName("diffSummary")
        embolden(self.summary)
        self.summary.setWordWrap(True)
        self.scene = EditorScene(self, editable=False)
        self.view = EditorView(self.scene, self)
        self.view.setObjectName("diffCanvas")
        self.changes = ChangesModel(self)
        self.list = QListView(self)
        self.list.setObjectName("diffChanges")
        self.list.setModel(self.changes)
        legend = self.legend = QLabel(self)
        self._legend()
        legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        legend.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        top = QHBoxLayout()
        top.addWidget(QLabel("Compare", self))
        top.addWidget(self.old_combo, 1)
        top.addWidget(QLabel("with", self))
        top.addWidget(self.new_combo, 1)
        top.addWidget(self.compare)
        top.addWidget(legend, 1)
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.view)
        split.addWidget(self.list)
        split.setSizes([500, 180])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)
        self.compare.clicked.connect(
            lambda: self.compare_requested.emit(self.old_combo.currentData(), self.new_combo.currentData()))
        self.list.clicked.connect(self._on_change_clicked)
        theme_events().changed.connect(self._on_theme)

    def _legend(self) -> None:
        c = colors()
        self.legend.setText(f"<span style='color:{c.added.name()}'>■ added</span> &nbsp; "
                            f"<span style='color:{c.removed.name()}'>■ removed</span> &nbsp; "
                            f"<span style='color:{c.changed.name()}'>■ changed</span>")

    def _on_theme(self, _theme: object) -> None:
        self._legend()
        self.scene.update()
        self.list.viewport().update()

    def set_versions(self, options: list[tuple[str, Any]], old: Any, new: Any) -> None:
        """Fill both pickers with (label, key) pairs and select ``old`` and ``new``."""
        for combo, current in ((self.old_combo, old), (self.new_combo, new)):
            combo.blockSignals(True)
            combo.clear()
            for label, key in options:
                combo.addItem(label, key)
            combo.setCurrentIndex(max(0, combo.findData(current)))
            combo.blockSignals(False)

    def select_keys(self, old: Any, new: Any) -> None:
        """Show ``old`` and ``new`` as the picked versions (without asking for a comparison)."""
        for combo, key in ((self.old_combo, old), (self.new_combo, new)):
            combo.blockSignals(True)
            if combo.findData(key) < 0:
                combo.addItem("draft (editor)" if key == "draft" else f"v{key}", key)
            combo.setCurrentIndex(combo.findData(key))
            combo.blockSignals(False)

    def show_diff(self, old: WorkflowTemplate, new: WorkflowTemplate, old_label: str = "",
                  new_label: str = "") -> TemplateDiff:
        """Draw and list the differences from ``old`` to ``new``."""
        diff = diff_templates(old, new)
        self.diff = diff
        union = union_template(old, new, diff)
        marks: dict[str, NodeMark] = {s: NodeMark("added") for s in diff.added_steps}
        marks.update({s: NodeMark("removed") for s in diff.removed_steps})
        for d in diff.changed_steps:
            marks[d.step_id] = NodeMark("changed", [c.describe() for c in d.changes])
        edge_marks = {e: "added" for e in diff.added_edges} | {e: "removed" for e in diff.removed_edges}
        layout = layout_with_routes(union)
        self.scene.show_template(union, self.catalog, layout.positions, (), marks, edge_marks,
                                 routes=layout.routes)
        self.changes.set_diff(diff)
        old_label = old_label or f"v{old.version}"
        new_label = new_label or (f"v{new.version}" if new.version else "draft")
        self.summary.setText(f"{old_label} → {new_label}: {diff.summary()}")
        self.view.fit()
        return diff

    def _on_change_clicked(self, index: QModelIndex) -> None:
        step = index.data(ChangesModel.StepRole)
        self.scene.select_step(step)
        node = self.scene.nodes.get(step or "")
        if node is not None:
            self.view.ensureVisible(node, 40, 40)
