"""The template editor: palette | canvas | inspector, a problems list and the undo stack.

:class:`TemplateEditor` turns the canvas's gestures into undoable edits of its
:class:`~panels.editor.document.TemplateDocument` and shows every change (undo included) on the
canvas, in the inspector and in the problems list. It does no I/O: publishing, importing and
running belong to the Templates panel, which drives the editor through :attr:`document`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QPointF,
    Qt,
    Signal,
)
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListView,
    QSplitter,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from core.templates import WorkflowTemplate
from panels.editor import ops
from panels.editor.document import TemplateDocument
from panels.editor.graph import EditorScene, EditorView
from panels.editor.inspector import Inspector
from panels.editor.kinds import KindCatalog
from panels.editor.layout import NODE_HEIGHT, NODE_WIDTH, V_GAP, layered_layout, layout_with_routes
from panels.editor.palette import KindPalette
from panels.editor.validation import Issue
from panels.theme import Theme, current_theme, embolden, keep_styled, text_style, theme_events

__all__ = ["IssuesModel", "TemplateEditor", "display_positions"]

ModelIndex = QModelIndex | QPersistentModelIndex


def display_positions(t: WorkflowTemplate,
                      cache: Mapping[str, tuple[float, float]] | None = None
                      ) -> dict[str, tuple[float, float]]:
    """Where each step is drawn: its saved position, else a layered layout (below the saved
    ones when some steps have a position and others do not)."""
    out = {s.id: s.position for s in t.steps if s.position is not None}
    missing = [s for s in t.steps if s.id not in out]
    if not missing:
        return out
    cached = {s.id: cache[s.id] for s in missing if cache and s.id in cache}
    out.update(cached)
    rest = [s for s in missing if s.id not in cached]
    if rest:
        layout = layered_layout(t)
        if out:
            below = max(y for _x, y in out.values()) + NODE_HEIGHT + V_GAP
            top = min(layout[s.id][1] for s in rest)
            left = min(x for x, _y in out.values())
            for s in rest:
                x, y = layout[s.id]
                out[s.id] = (left + x, below + y - top)
        else:
            for s in rest:
                out[s.id] = layout[s.id]
    return out


def _near(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    return a is not None and b is not None and abs(a[0] - b[0]) < 0.5 and abs(a[1] - b[1]) < 0.5



def _banner(tone: str, rest: str) -> Callable[[Theme], str]:
    """The style sheet of a banner in ``tone`` (ok, warn, error, info) for a theme."""
    return lambda t: t.css(f"banner_{tone}_fg", f"banner_{tone}_bg", rest)


class IssuesModel(QAbstractListModel):
    """The problems list: one row per issue, errors first."""

    StepRole = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._issues: list[Issue] = []

    def set_issues(self, issues: list[Issue]) -> None:
        self.beginResetModel()
        self._issues = sorted(issues, key=lambda i: i.severity != "error")
        self.endResetModel()

    def issue(self, row: int) -> Issue:
        return self._issues[row]

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._issues)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        issue = self._issues[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            mark = "✕" if issue.severity == "error" else "⚠"
            return f"{mark}  {issue.location()}: {issue.message}"
        if role == Qt.ItemDataRole.ForegroundRole:
            return current_theme().color("text_error" if issue.severity == "error" else "text_warn")
        if role == Qt.ItemDataRole.ToolTipRole:
            return issue.message
        if role == self.StepRole:
            return issue.step_id
        return None


class TemplateEditor(QWidget):
    """Edit one template at a time (see the module doc)."""

    selection_changed = Signal(object)
    """The selected step id, or None for the workflow."""

    def __init__(self, catalog: KindCatalog, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.document = TemplateDocument(catalog, self)
        self._view_positions: dict[str, tuple[float, float]] = {}
        self._selected: str | None = None

        self.kind_palette = KindPalette(catalog, self)
        self.scene = EditorScene(self)
        self.view = EditorView(self.scene, self)
        self.view.setObjectName("editorCanvas")
        self.inspector = Inspector(self.document, self)
        self.issues_model = IssuesModel(self)
        self.issues = QListView(self)
        self.issues.setObjectName("problems")
        self.issues.setModel(self.issues_model)
        self.issues.setWordWrap(True)
        self.issues.setSizeAdjustPolicy(QListView.SizeAdjustPolicy.AdjustIgnored)
        theme_events().changed.connect(self._on_theme)
        self.banner = QLabel(self)
        self.banner.setObjectName("editorState")
        self.status = QLabel(self)
        self.status.setObjectName("validationStatus")
        self.message = QLabel(self)
        self.message.setObjectName("editorMessage")
        keep_styled(self.message, text_style("muted"))
        for label in (self.banner, self.status, self.message):
            label.setWordWrap(True)  # long texts wrap instead of widening the dock
            label.setMinimumWidth(80)

        self.toolbar = QToolBar(self)
        self.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        stack = self.document.stack
        self.undo_action = QAction("Undo", self)
        self.undo_action.setShortcuts(QKeySequence.StandardKey.Undo)
        self.undo_action.triggered.connect(stack.undo)
        self.redo_action = QAction("Redo", self)
        self.redo_action.setShortcuts(QKeySequence.StandardKey.Redo)
        self.redo_action.triggered.connect(stack.redo)
        stack.canUndoChanged.connect(self.undo_action.setEnabled)
        stack.canRedoChanged.connect(self.redo_action.setEnabled)
        stack.undoTextChanged.connect(lambda text: self.undo_action.setToolTip(f"Undo {text} (Ctrl+Z)"))
        stack.redoTextChanged.connect(lambda text: self.redo_action.setToolTip(f"Redo {text} (Ctrl+Shift+Z)"))
        self.undo_action.setEnabled(False)
        self.redo_action.setEnabled(False)
        self.delete_action = QAction("Delete", self)
        self.delete_action.setToolTip("Delete the selected steps and dependencies (Del)")
        self.layout_action = QAction("Auto layout", self)
        self.fit_action = QAction("Fit", self)
        self.fit_action.setShortcut(QKeySequence("Ctrl+0"))
        self.zoom_in_action = QAction("Zoom +", self)
        self.zoom_in_action.setShortcuts(QKeySequence.StandardKey.ZoomIn)
        self.zoom_out_action = QAction("Zoom −", self)
        self.zoom_out_action.setShortcuts(QKeySequence.StandardKey.ZoomOut)
        for action in (self.undo_action, self.redo_action, self.delete_action, self.layout_action,
                       self.fit_action, self.zoom_in_action, self.zoom_out_action):
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.addAction(action)
        for action in (self.undo_action, self.redo_action):
            self.toolbar.addAction(action)
        self.toolbar.addSeparator()
        for action in (self.delete_action, self.layout_action):
            self.toolbar.addAction(action)
        self.toolbar.addSeparator()
        for action in (self.zoom_out_action, self.zoom_in_action, self.fit_action):
            self.toolbar.addAction(action)

        canvas = QWidget(self)
        canvas_layout = QVBoxLayout(canvas)
        canvas_layout.setContentsMargins(0, 0, 0, 0)
        canvas_layout.setSpacing(2)
        canvas_layout.addWidget(self.banner)
        canvas_layout.addWidget(self.view, 1)
        canvas_layout.addWidget(self.status)
        canvas_layout.addWidget(self.issues)
        palette_box = QWidget(self)
        palette_layout = QVBoxLayout(palette_box)
        palette_layout.setContentsMargins(0, 0, 0, 0)
        palette_title = QLabel("Step kinds — drag onto the canvas", palette_box)
        embolden(palette_title)
        palette_title.setWordWrap(True)
        palette_layout.addWidget(palette_title)
        palette_layout.addWidget(self.kind_palette, 1)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(palette_box)
        self.splitter.addWidget(canvas)
        self.splitter.addWidget(self.inspector)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([170, 700, 370])
        for i in range(3):
            self.splitter.setCollapsible(i, i != 1)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(self.toolbar, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.message)

        self.document.changed.connect(self._on_document_changed)
        self.document.opened.connect(self._on_document_opened)
        self.scene.kind_dropped.connect(self.add_step)
        self.scene.link_requested.connect(self.link)
        self.scene.steps_moved.connect(self.move_steps)
        self.scene.selectionChanged.connect(self._on_scene_selection)
        self.view.delete_requested.connect(self.delete_selection)
        self.inspector.step.step_renamed.connect(self._on_step_renamed)
        self.kind_palette.kind_activated.connect(self._on_palette_activated)
        self.issues.clicked.connect(self._on_issue_clicked)
        self.delete_action.triggered.connect(self.delete_selection)
        self.layout_action.triggered.connect(self.auto_layout)
        self.fit_action.triggered.connect(lambda: self.view.fit())
        self.zoom_in_action.triggered.connect(lambda: self.view.zoom_by(1))
        self.zoom_out_action.triggered.connect(lambda: self.view.zoom_by(-1))
        self._on_document_opened()
        self._on_document_changed()

    # -- opening
    def set_catalog(self, catalog: KindCatalog) -> None:
        self.catalog = catalog
        self.document.catalog = catalog
        self.kind_palette.set_catalog(catalog)

    def open(self, template: WorkflowTemplate, *, published: bool, latest_version: int = 0) -> None:
        """Open ``template`` (see :meth:`TemplateDocument.open`)."""
        self.document.open(template, published=published, latest_version=latest_version)

    def _on_document_opened(self) -> None:
        self._view_positions = {}
        self._selected = None
        self.scene.clearSelection()
        self._show()
        self.inspector.show_step(None)
        self.view.fit()

    # -- showing
    def positions(self) -> dict[str, tuple[float, float]]:
        """Where every step is drawn now."""
        self._view_positions = display_positions(self.document.template, self._view_positions)
        return self._view_positions

    def _show(self) -> None:
        doc = self.document
        positions = self.positions()
        layout = layout_with_routes(doc.template)
        routes = {edge: lane for edge, lane in layout.routes.items()
                  if all(_near(positions.get(end), layout.positions.get(end)) for end in edge)}
        self.scene.blockSignals(True)
        try:
            self.scene.show_template(doc.template, self.catalog, positions, doc.issues,
                                     routes=routes)
            if self._selected is not None and self._selected not in self.scene.nodes:
                self._selected = None
            if self._selected is not None and self.scene.selected_step_ids() != [self._selected]:
                self.scene.select_step(self._selected)
        finally:
            self.scene.blockSignals(False)

    def _on_document_changed(self) -> None:
        doc = self.document
        self._show()
        self.inspector.show_step(self._selected)
        self.issues_model.set_issues(doc.issues)
        errors = doc.errors
        warnings = len(doc.issues) - len(errors)
        if errors:
            text = (f"✕  {len(errors)} problem{'s' if len(errors) != 1 else ''} — "
                    f"fix before publishing" + (f" · {warnings} warning{'s' if warnings != 1 else ''}"
                                                if warnings else ""))
            tone = "error"
        else:
            text = "✓  No problems — " + ("ready to publish" if doc.is_draft else "published version")
            if warnings:
                text += f" · {warnings} warning{'s' if warnings != 1 else ''}"
            tone = "ok"
        self.status.setText(text)
        keep_styled(self.status, _banner(tone, "padding: 4px 8px; font-weight: 600; border-radius: 3px;"))
        draft = doc.is_draft
        self.banner.setText(f"<b>{doc.template.name}</b> &nbsp;·&nbsp; {doc.state_text()}")
        tone = "warn" if draft and doc.published else "info"
        keep_styled(self.banner, _banner(tone, "padding: 4px 8px; border-radius: 3px;"))
        self.issues.setVisible(bool(doc.issues))
        if doc.issues:  # room for each problem to wrap once, up to four lines
            lines = min(4, len(doc.issues) + 1)
            line = self.issues.fontMetrics().lineSpacing()
            self.issues.setFixedHeight(lines * line + 2 * self.issues.frameWidth() + 6)

    def _on_theme(self, _theme: object) -> None:
        self.issues.viewport().update()

    def _on_scene_selection(self) -> None:
        ids = self.scene.selected_step_ids()
        selected = ids[0] if len(ids) == 1 else None
        if selected != self._selected:
            self._selected = selected
            self.inspector.show_step(selected)
            self.selection_changed.emit(selected)

    def _on_step_renamed(self, old: str, new: str) -> None:
        if self._selected == old:
            self._selected = new

    def select_step(self, step_id: str | None) -> None:
        """Select a step (None: the workflow) and centre on it."""
        self.scene.select_step(step_id)
        node = self.scene.nodes.get(step_id or "")
        if node is not None:
            self.view.ensureVisible(node, 40, 40)

    @property
    def selected_step(self) -> str | None:
        return self._selected

    def _on_issue_clicked(self, index: QModelIndex) -> None:
        self.select_step(self.issues_model.issue(index.row()).step_id)

    # -- edits from gestures
    def _with_layout(self, t: WorkflowTemplate) -> WorkflowTemplate:
        """``t`` with every step's drawn position saved (done on the first move or add, so a
        template is either laid out by hand completely or not at all)."""
        if all(s.position is not None for s in t.steps):
            return t
        return ops.move_steps(t, {k: v for k, v in self.positions().items()
                                  if any(s.id == k and s.position is None for s in t.steps)})

    def add_step(self, kind: str, pos: QPointF | None = None) -> str:
        """Add a step of ``kind`` at ``pos`` (scene, top-left); returns its id."""
        if pos is None:
            centre = self.view.mapToScene(self.view.viewport().rect().center())
            pos = centre - QPointF(NODE_WIDTH / 2, NODE_HEIGHT / 2)
        new, sid = ops.add_step(self._with_layout(self.document.template), kind, (pos.x(), pos.y()),
                                catalog=self.catalog)
        self._selected = sid
        self.document.apply(new, f"Add step {sid}")
        self.message.setText(f"Added step '{sid}' ({kind}).")
        return sid

    def _on_palette_activated(self, kind: str) -> None:
        self.add_step(kind)

    def link(self, dependency: str, dependant: str) -> None:
        try:
            new = ops.add_dependency(self.document.template, dependency, dependant)
        except (ops.EditError, KeyError) as exc:
            self.message.setText(str(exc).strip("'\""))
            return
        self.document.apply(new, f"{dependant} after {dependency}")
        self.message.setText(f"'{dependant}' now runs after '{dependency}'.")

    def move_steps(self, positions: dict[str, tuple[float, float]]) -> None:
        t = self._with_layout(self.document.template)
        self.document.apply(ops.move_steps(t, positions),
                            f"Move {', '.join(positions)}" if len(positions) < 4
                            else f"Move {len(positions)} steps")

    def delete_selection(self) -> None:
        steps = set(self.scene.selected_step_ids())
        edges = [e for e in self.scene.selected_edges() if e[0] not in steps and e[1] not in steps]
        if not steps and not edges:
            return
        remove = ops.remove_steps(self.document.template, steps)
        for dep, step in edges:
            remove = ops.remove_dependency(remove, dep, step)
        parts = []
        if steps:
            parts.append(f"{len(steps)} step{'s' if len(steps) != 1 else ''}")
        if edges:
            parts.append(f"{len(edges)} dependenc{'ies' if len(edges) != 1 else 'y'}")
        self._selected = None
        self.document.apply(remove, "Delete " + " and ".join(parts))
        self.message.setText("Deleted " + " and ".join(parts) + " (undo with Ctrl+Z).")

    def auto_layout(self) -> None:
        t = self.document.template
        self.document.apply(ops.move_steps(t, layered_layout(t)), "Auto layout")
        self.view.fit()
