"""Templates panel: the published templates, the drag-and-drop editor, versions, diff and Run….

A thin adapter over the runtime facade (injected): :meth:`Runtime.publish_template` publishes
(refused when the signed-in user's role may not; with an electronic signature when
``[SIGNATURES] require`` lists ``template publish``), the template registry reads versions, :meth:`Runtime.runs_using` tells which runs used a version, :meth:`Runtime.start_run`
starts a run. Everything that touches the store or a file runs off the event loop
(``store.read`` / ``asyncio.to_thread``); operator actions are coroutines whose tasks the panel
keeps (qasync's ``asyncSlot`` does not) and whose failures show in the panel's message line.

Layout: the template list on the left; on the right three tabs — *Editor*
(:class:`~panels.editor.editor.TemplateEditor` with Publish, Run…, Import…, Export…),
*Versions* (each version's runs, and whether runs in flight use an older version) and *Compare*
(:class:`~panels.editor.diffview.TemplateDiffView`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import shiboken6
from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.engine.registry import TemplateRegistry
from core.errors import DuplicateSubmissionError, LabconsoleError
from core.events import RunChanged
from core.templates import WorkflowTemplate, dump_template, load_template
from core.users import User, os_user, refusal
from panels.base import Panel
from panels.dialogs import ask
from panels.editor import ops
from panels.editor.diffview import TemplateDiffView
from panels.editor.editor import TemplateEditor
from panels.editor.kinds import KindCatalog
from panels.editor.layout import layered_layout
from panels.editor.runform import RunForm
from panels.signature import needs_signature, request_signature
from panels.theme import current_theme, embolden, keep_styled, text_style

__all__ = ["RunsModel", "TemplateListModel", "TemplateRow", "TemplatesPanel", "VersionRow",
           "VersionsModel"]

T = TypeVar("T")

log = logging.getLogger(__name__)
ModelIndex = QModelIndex | QPersistentModelIndex
_FINAL = ("completed", "failed", "cancelled")


def _time(ts: float | None) -> str:
    """``Jan 15 08:00`` this year, ``2025-11-02`` before; ``never`` for none."""
    if not ts:
        return "never"
    when = datetime.fromtimestamp(ts)
    return when.strftime("%b %d %H:%M" if when.year == datetime.now().year else "%Y-%m-%d")


@dataclass(frozen=True)
class TemplateRow:
    """One template of the list."""

    name: str
    latest: int
    versions: int
    tags: tuple[str, ...]
    steps: int
    last_used: float | None
    runs: int


@dataclass(frozen=True)
class VersionRow:
    """One published version and its runs."""

    version: int
    steps: int
    runs: int
    in_flight: int
    last_run: float | None


class _RowsModel(QAbstractTableModel):
    """A read-only table over a list of dataclass rows; subclasses declare ``COLUMNS``."""

    COLUMNS: tuple[tuple[str, Any], ...] = ()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows: list[Any] = []

    def reset(self, rows: list[Any]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def row(self, index: int) -> Any:
        return self._rows[index]

    def rows(self) -> list[Any]:
        return list(self._rows)

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.COLUMNS[section][0]
        return None

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[index.column()][1](self._rows[index.row()])
        return None


class TemplateListModel(_RowsModel):
    COLUMNS = (
        ("Template", lambda r: r.name),
        ("Ver.", lambda r: f"v{r.latest}" + (f" ({r.versions})" if r.versions > 1 else "")),
        ("Tags", lambda r: ", ".join(r.tags)),
        ("Last used", lambda r: _time(r.last_used)),
    )

    def row_of(self, name: str) -> int | None:
        return next((i for i, r in enumerate(self._rows) if r.name == name), None)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.ToolTipRole:
            r = self._rows[index.row()]
            return (f"{r.name}: {r.versions} version{'s' if r.versions != 1 else ''}, latest "
                    f"v{r.latest} with {r.steps} steps; {r.runs} run{'s' if r.runs != 1 else ''}")
        return super().data(index, role)


class VersionsModel(_RowsModel):
    COLUMNS = (
        ("Version", lambda r: f"v{r.version}"),
        ("Steps", lambda r: str(r.steps)),
        ("Runs", lambda r: str(r.runs)),
        ("In flight", lambda r: str(r.in_flight) if r.in_flight else ""),
        ("Last run", lambda r: _time(r.last_run)),
    )

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == 3 and self._rows[index.row()].in_flight:
            return current_theme().status_color("Running")
        return super().data(index, role)


class RunsModel(_RowsModel):
    COLUMNS = (
        ("Run", lambda r: r["id"]),
        ("Version", lambda r: f"v{r['template_version']}"),
        ("Status", lambda r: r["status"]),
        ("Created", lambda r: _time(r["created_at"])),
    )


class TemplatesPanel(Panel):
    """The Templates dock (constructor injection: the runtime facade and the event bridge).

    Emits :attr:`run_started` with the run id after "Run…" started a run.
    """

    run_started = Signal(str)
    """The id of a run started from the panel (the Jobs panel selects it)."""
    run_selected = Signal(str)
    """The id of a run double-clicked in the Versions tab."""
    template_published = Signal(str, int)
    """(name, version) after a publish made a new version."""

    def __init__(self, runtime: RuntimeApi, bridge: Any, parent: QWidget | None = None) -> None:
        super().__init__(runtime, bridge, parent)
        self.who = os_user()
        self.user: User | None = None
        """The signed-in user (None: single-user mode): Publish and Run follow their role."""
        self.signature_dialog: QDialog | None = None
        """The electronic signature dialog while it waits (tests fill it in)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loaded = False
        self.last_error: str | None = None
        self.catalog = KindCatalog.from_workcell(runtime.workcell)
        self.run_form: RunForm | None = None
        self._runs: list[dict[str, Any]] = []
        self._file_dialog: QFileDialog | None = None

        # left: the template list
        self.list_model = TemplateListModel(self)
        self.list = QTableView(self)
        self.list.setObjectName("templateList")
        self.list.setModel(self.list_model)
        self.list.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.verticalHeader().hide()
        self.list.verticalHeader().setDefaultSectionSize(22)
        self.list.horizontalHeader().setStretchLastSection(True)
        self.list.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((140, 48, 64)):
            self.list.setColumnWidth(col, width)
        self.new_button = QPushButton("New", self)
        self.import_button = QPushButton("Import…", self)
        self.refresh_button = QPushButton("Refresh", self)
        left = QWidget(self)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("Templates", left)
        embolden(title)
        left_layout.addWidget(title)
        left_layout.addWidget(self.list, 1)
        buttons = QHBoxLayout()
        for b in (self.new_button, self.import_button, self.refresh_button):
            buttons.addWidget(b)
        left_layout.addLayout(buttons)

        # right: editor, versions, compare
        self.editor = TemplateEditor(self.catalog, self)
        self.publish_action = QAction("Publish", self)
        self.publish_action.setObjectName("publish")
        self.run_action = QAction("Run…", self)
        self.export_action = QAction("Export…", self)
        self.editor.toolbar.addSeparator()
        for action in (self.publish_action, self.run_action, self.export_action):
            self.editor.toolbar.addAction(action)
        self.versions_model = VersionsModel(self)
        self.versions = QTableView(self)
        self.versions.setObjectName("versions")
        self.versions.setModel(self.versions_model)
        self.versions.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.versions.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.versions.verticalHeader().hide()
        self.versions.horizontalHeader().setStretchLastSection(True)
        self.in_flight = QLabel(self)
        self.in_flight.setObjectName("inFlight")
        self.in_flight.setWordWrap(True)
        self.runs_model = RunsModel(self)
        self.runs = QTableView(self)
        self.runs.setObjectName("versionRuns")
        self.runs.setModel(self.runs_model)
        self.runs.verticalHeader().hide()
        self.runs.horizontalHeader().setStretchLastSection(True)
        self.runs.setColumnWidth(0, 140)
        self.open_version_button = QPushButton("Open this version", self)
        self.compare_button = QPushButton("Compare with the previous", self)
        versions_page = QWidget(self)
        vl = QVBoxLayout(versions_page)
        vl.addWidget(self.in_flight)
        vl.addWidget(self.versions, 2)
        vb = QHBoxLayout()
        vb.addWidget(self.open_version_button)
        vb.addWidget(self.compare_button)
        vb.addStretch(1)
        vl.addLayout(vb)
        self.runs_title = QLabel("Runs of the selected version", self)
        vl.addWidget(self.runs_title)
        vl.addWidget(self.runs, 3)
        self.diff_view = TemplateDiffView(self.catalog, self)
        self.tabs = QTabWidget(self)
        self.tabs.addTab(self.editor, "Editor")
        self.tabs.addTab(versions_page, "Versions")
        self.tabs.addTab(self.diff_view, "Compare")

        self.message = QLabel(self)
        self.message.setObjectName("panelMessage")
        self.message.setWordWrap(True)
        self.message.setMinimumWidth(80)
        self.in_flight.setMinimumWidth(80)
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(left)
        split.addWidget(self.tabs)
        split.setStretchFactor(1, 1)
        split.setSizes([340, 1260])
        split.setCollapsible(1, False)
        # a docked panel may be narrow: it squeezes rather than widening the main window
        left.setMinimumWidth(120)
        self.tabs.setMinimumWidth(240)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(split, 1)
        layout.addWidget(self.message)

        self._usage_timer = QTimer(self)
        self._usage_timer.setSingleShot(True)
        self._usage_timer.setInterval(750)
        self._usage_timer.timeout.connect(self._on_usage_timer)

        self.list.doubleClicked.connect(self._on_list_activated)
        self.list.activated.connect(self._on_list_activated)
        self.new_button.clicked.connect(self.new_template)
        self.import_button.clicked.connect(self._choose_import)
        self.refresh_button.clicked.connect(lambda: self._spawn(self.reload(), "refresh"))
        self.publish_action.triggered.connect(lambda: self._spawn(self.publish(), "publish"))
        self.run_action.triggered.connect(self.open_run_form)
        self.export_action.triggered.connect(self._choose_export)
        self.versions.selectionModel().currentRowChanged.connect(self._on_version_selected)
        self.open_version_button.clicked.connect(self._on_open_version)
        self.runs.doubleClicked.connect(
            lambda index: self.run_selected.emit(self.runs_model.row(index.row())["id"]))
        self.compare_button.clicked.connect(self._on_compare_previous)
        self.diff_view.compare_requested.connect(
            lambda old, new: self._spawn(self.compare(old, new), "compare"))
        self.editor.document.changed.connect(self._update_actions)
        self.editor.document.changed.connect(self._on_document_changed)
        self._document_name = self.editor.document.template.name
        if bridge is not None and hasattr(bridge, "events"):
            self.listen(bridge.events, self._on_events)
        self._update_actions()

    # ------------------------------------------------------------------ tasks

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any] | None:
        """Run ``coro`` on the loop, keeping its task; a failure shows in the message line."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            self.show_message(f"Cannot {what}: the event loop is not running", error=True)
            return None
        task = loop.create_task(coro, name=f"templates-{what}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._on_task_done(t, what))
        return task

    def _on_task_done(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if not isinstance(exc, LabconsoleError | OSError | ValueError):
                log.error("templates: %s failed", what, exc_info=exc)
            self.show_message(f"{what.capitalize()} failed: {exc}", error=True)

    def show_message(self, text: str, *, error: bool = False) -> None:
        self.last_error = text if error else None
        self.message.setText(text)
        keep_styled(self.message, text_style("text_error" if error else "text_info"))

    def on_shutdown(self) -> None:
        """Stop the usage timer, cancel running tasks, close dialogs."""
        self._usage_timer.stop()
        for task in list(self._tasks):
            task.cancel()
        # a task that finished just now is gone too (its done callback would drop it a turn later)
        self._tasks = {task for task in self._tasks if not task.done()}
        for dialog in (self.run_form, self._file_dialog):
            if dialog is not None:
                dialog.close()

    def on_shown(self) -> None:
        if not self._loaded:
            self._loaded = True
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return  # not on a running loop (yet): the first reload() loads
            self._spawn(self.reload(), "load templates")

    # ------------------------------------------------------------------ reading

    @property
    def registry(self) -> TemplateRegistry:
        return self.runtime.engine.templates

    async def _read(self, fn: Callable[[], T]) -> T:
        """Call ``fn()`` on a store reader thread (registry and run queries read SQLite)."""
        return await self.runtime.store.read(lambda _conn: fn())

    async def reload(self) -> list[TemplateRow]:
        """Reload the template list (versions, tags, last use) without blocking the loop."""
        registry, engine = self.registry, self.runtime.engine

        def read() -> list[TemplateRow]:
            rows = []
            for t in registry.latest():
                runs, total = engine.query_instances(template=t.name, limit=1)
                rows.append(TemplateRow(t.name, t.version, len(registry.versions(t.name)), t.tags,
                                        len(t.steps), runs[0]["created_at"] if runs else None, total))
            return rows

        rows = await self._read(read)
        selected = self.current_name()
        self.list_model.reset(rows)
        if not rows:
            self.show_message("No templates published yet: New starts one on the canvas, Import… "
                              "reads a JSON or YAML file.")
        self._loaded = True
        if selected is not None and (row := self.list_model.row_of(selected)) is not None:
            self.list.selectRow(row)
        return rows

    def current_name(self) -> str | None:
        index = self.list.currentIndex()
        return self.list_model.row(index.row()).name if index.isValid() else None

    async def open_template(self, name: str, version: int | None = None) -> WorkflowTemplate:
        """Open a published version (the latest by default) in the editor."""
        registry = self.registry
        template, versions = await self._read(lambda: (registry.get(name, version),
                                                       registry.versions(name)))
        self.editor.open(template, published=True, latest_version=max(versions))
        self.tabs.setCurrentWidget(self.editor)
        self.show_message(f"Opened {name} v{template.version}")
        if (row := self.list_model.row_of(name)) is not None:
            self.list.selectRow(row)
        await self.refresh_versions()
        return template

    async def refresh_versions(self) -> list[VersionRow]:
        """Versions of the open template with their runs; warn about runs in flight on older ones."""
        name = self.editor.document.template.name
        registry, runtime = self.registry, self.runtime

        def read() -> tuple[list[int], dict[int, int], list[dict[str, Any]]]:
            versions = registry.versions(name)
            steps = {v: len(registry.get(name, v).steps) for v in versions}
            return versions, steps, runtime.runs_using(name)

        versions, steps, runs = await self._read(read)
        rows = []
        for v in reversed(versions):
            mine = [r for r in runs if r["template_version"] == v]
            rows.append(VersionRow(v, steps[v], len(mine),
                                   sum(r["status"] not in _FINAL for r in mine),
                                   max((r["created_at"] for r in mine), default=None)))
        self.versions_model.reset(rows)
        self._runs = runs
        latest = max(versions, default=0)
        older = sorted({r["template_version"] for r in runs
                        if r["status"] not in _FINAL and r["template_version"] < latest})
        if older:
            count = sum(1 for r in runs if r["status"] not in _FINAL and r["template_version"] < latest)
            self.in_flight.setText(
                f"⚠ {count} run{'s' if count != 1 else ''} in flight use"
                f"{'s' if count == 1 else ''} an older version "
                f"({', '.join(f'v{v}' for v in older)}) than the latest v{latest}: "
                f"they finish on the version they started with.")
            keep_styled(self.in_flight, lambda t: t.css("banner_warn_fg", "banner_warn_bg", "padding: 4px;"))
        elif versions:
            active = sum(r["status"] not in _FINAL for r in runs)
            self.in_flight.setText(f"{active} run{'s' if active != 1 else ''} in flight, all on the "
                                   f"latest v{latest}." if active else
                                   f"No run of {name} is in flight.")
            keep_styled(self.in_flight, lambda _t: "padding: 4px;")
        else:
            self.in_flight.setText(f"{name} has not been published yet.")
            keep_styled(self.in_flight, lambda _t: "padding: 4px;")
        options: list[tuple[str, Any]] = [(f"v{v}", v) for v in versions]
        if self.editor.document.is_draft:
            options.append(("draft (editor)", "draft"))
        old = versions[-2] if len(versions) >= 2 else (versions[0] if versions else "draft")
        new = "draft" if self.editor.document.is_draft else (versions[-1] if versions else "draft")
        self.diff_view.set_versions(options, old, new)
        if rows:
            self.versions.selectRow(0)
        self._show_runs()
        return rows

    def _show_runs(self) -> None:
        index = self.versions.currentIndex()
        runs = self._runs
        if not index.isValid():
            self.runs_model.reset([])
            return
        version = self.versions_model.row(index.row()).version
        self.runs_title.setText(f"Runs of v{version}")
        self.runs_model.reset([r for r in runs if r["template_version"] == version])

    async def _template(self, key: Any) -> WorkflowTemplate:
        if key == "draft":
            return self.editor.document.template
        name, registry = self.editor.document.template.name, self.registry
        return await self._read(lambda: registry.get(name, int(key)))

    async def compare(self, old: Any, new: Any) -> Any:
        """Show the diff between two versions (ints) or a version and ``"draft"``."""
        a, b = await self._template(old), await self._template(new)
        self.tabs.setCurrentWidget(self.diff_view)
        self.diff_view.select_keys(old, new)
        return self.diff_view.show_diff(a, b, "draft" if old == "draft" else f"v{old}",
                                        "draft" if new == "draft" else f"v{new}")

    # ------------------------------------------------------------------ actions

    def new_template(self) -> None:
        """A new, empty draft."""
        names = {r.name for r in self.list_model.rows()}
        name, n = "New workflow", 2
        while name in names:
            name, n = f"New workflow {n}", n + 1
        self.editor.open(WorkflowTemplate(name=name), published=False)
        self.tabs.setCurrentWidget(self.editor)
        self.versions_model.reset([])
        self.runs_model.reset([])
        self.show_message(f"New template '{name}': drag step kinds onto the canvas.")

    async def publish(self) -> WorkflowTemplate | None:
        """Publish the draft as the next version (refused while it has problems)."""
        doc = self.editor.document
        if doc.errors:
            self.show_message(f"Cannot publish: {len(doc.errors)} problem"
                              f"{'s' if len(doc.errors) != 1 else ''} (see the list under the canvas)",
                              error=True)
            return None
        if not doc.is_draft:
            self.show_message("Nothing to publish: this is a published version (edit it first)")
            return None
        draft, registry = doc.template, self.registry
        before = await self._read(lambda: registry.versions(draft.name))
        self.runtime.authorize("template publish", self.who)  # a refused role is not asked to sign
        signature = None
        if needs_signature(self.runtime, "template publish"):  # [SIGNATURES] require: password again
            signature = await request_signature(self._ask_signature, self.runtime, "template publish", draft.name,
                                                user=self.who, parent=self)
            if signature is None:
                self.show_message(f"Not published: {draft.name} was not signed")
                return None
        published = await self.runtime.publish_template(draft, who=self.who, signature=signature)
        if doc.template is draft:
            doc.mark_published(published, max([*before, published.version]))
        if published.version in before:
            self.show_message(f"Identical to {published.name} v{published.version}: no new version")
        else:
            self.show_message(f"Published {published.name} v{published.version}")
            self.template_published.emit(published.name, published.version)
        await self.reload()
        await self.refresh_versions()
        return published

    async def import_file(self, path: Path) -> WorkflowTemplate:
        """Load a template file (any dialect) as a draft; lay it out if it has no positions."""
        template = await asyncio.to_thread(load_template, path)
        if any(s.position is None for s in template.steps):
            template = ops.move_steps(template, layered_layout(template))
        registry = self.registry
        name = template.name
        versions = await self._read(lambda: registry.versions(name))
        self.editor.open(template, published=False, latest_version=max(versions, default=0))
        self.tabs.setCurrentWidget(self.editor)
        self.show_message(f"Imported {path.name} as a draft of {name}"
                          + (f" v{max(versions) + 1}" if versions else " v1"))
        await self.refresh_versions()
        return template

    async def export_file(self, path: Path) -> Path:
        """Write the open template in the engine's native format (JSON or YAML by suffix)."""
        template = self.editor.document.template
        await asyncio.to_thread(dump_template, template, path)
        self.show_message(f"Exported {template.name} to {path}")
        return path

    async def start_run(self, inputs: dict[str, Any], priority: int = 50, *,
                        allow_duplicate: bool = False) -> str:
        """Start a run of the open published version; emits :attr:`run_started`."""
        doc = self.editor.document
        if doc.is_draft or doc.published is None:
            raise ValueError("publish the draft before running it")
        t = doc.published
        run_id = await self.runtime.start_run(t.name, inputs, version=t.version, priority=priority,
                                              who=self.who, allow_duplicate=allow_duplicate)
        self.show_message(f"Started run {run_id} of {t.name} v{t.version}")
        self.run_started.emit(run_id)
        self._usage_timer.start()
        return run_id

    def open_run_form(self) -> RunForm | None:
        """Open the Run… form for the published version in the editor (non-modal)."""
        doc = self.editor.document
        if doc.is_draft or doc.published is None:
            self.show_message("Publish the draft before running it", error=True)
            return None
        if self.run_form is not None:
            self.run_form.close()
        form = RunForm(doc.published, self)
        form.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        form.submitted.connect(lambda inputs, priority, again: self._spawn(
            self._run_from_form(form, inputs, priority, again), "start run"))
        form.destroyed.connect(lambda *_: setattr(self, "run_form", None))
        form.priority_changed.connect(lambda _p: self._spawn(self._check_feasibility(form), "check the run"))
        self.run_form = form
        form.open()
        self._spawn(self._check_feasibility(form), "check the run")
        return form

    async def _check_feasibility(self, form: RunForm) -> None:
        """Say in the form whether the run can finish, what the cell lacks and whether its time
        windows hold behind the current queue (core.forecast.check_feasibility)."""
        from core.forecast import check_feasibility

        form.show_feasibility(["Checking whether it can finish…"])
        priority = form.priority.value()
        result = await check_feasibility(self.runtime, form.template, priority=priority)
        if not shiboken6.isValid(form) or form.priority.value() != priority:
            return  # closed, or a newer check follows
        form.show_feasibility(result.lines(self.runtime.clock.now()),
                              "error" if not result.can_finish else "warn" if result.risks else "ok")

    async def _run_from_form(self, form: RunForm, inputs: dict[str, Any], priority: int,
                             allow_duplicate: bool) -> str | None:
        """Start the run the form asks for; a refusal stays in the form (a duplicate can be
        started anyway from there)."""
        try:
            run_id = await self.start_run(inputs, priority, allow_duplicate=allow_duplicate)
        except LabconsoleError as exc:
            if shiboken6.isValid(form):
                form.refused(str(exc), duplicate=isinstance(exc, DuplicateSubmissionError))
            self.show_message(f"Run not started: {exc}", error=True)
            return None
        if shiboken6.isValid(form):
            form.started()
        return run_id

    def _choose_import(self) -> None:
        dialog = QFileDialog(self, "Import a workflow template")
        dialog.setNameFilter("Templates (*.yaml *.yml *.json)")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(lambda p: self._spawn(self.import_file(Path(p)), "import"))
        self._file_dialog = dialog
        dialog.open()

    def _choose_export(self) -> None:
        dialog = QFileDialog(self, "Export the workflow template")
        dialog.setNameFilter("YAML (*.yaml);;JSON (*.json)")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.selectFile(self.editor.document.template.name.lower().replace(" ", "_") + ".yaml")
        dialog.fileSelected.connect(lambda p: self._spawn(self.export_file(Path(p)), "export"))
        self._file_dialog = dialog
        dialog.open()

    # ------------------------------------------------------------------ reactions

    async def _ask_signature(self, dialog: QDialog) -> bool:
        self.signature_dialog = dialog
        try:
            return await ask(dialog)
        finally:
            self.signature_dialog = None
            dialog.deleteLater()

    def set_user(self, user: User | None) -> None:
        """Who is signed in (None: single-user mode): recorded as *who*, and what their role
        does not allow is disabled, its tooltip saying why."""
        self.user = user
        self.who = user.name if user is not None else os_user()
        self._update_actions()

    @Slot()
    def _update_actions(self) -> None:
        doc = self.editor.document
        no_publish = refusal(self.user, "template publish") if self.user is not None else None
        self.publish_action.setEnabled(doc.can_publish and no_publish is None)
        self.publish_action.setText(f"Publish v{doc.next_version}" if doc.is_draft else "Publish")
        self.publish_action.setToolTip(
            no_publish if no_publish is not None else
            "Publish as the next version" if doc.can_publish else
            f"{len(doc.errors)} problem(s) block publishing" if doc.errors else
            "This is a published version: edit it to make a draft")
        no_run = refusal(self.user, "start run") if self.user is not None else None
        runnable = not doc.is_draft and doc.published is not None
        self.run_action.setEnabled(runnable and no_run is None)
        self.run_action.setToolTip(no_run if no_run is not None else "Start a run of this version" if runnable
                                   else "Publish the draft before running it")

    @Slot()
    def _on_document_changed(self) -> None:
        name = self.editor.document.template.name
        if name != self._document_name:
            self._document_name = name
            self._spawn(self._follow_name(name), "read versions")

    async def _follow_name(self, name: str) -> None:
        """A renamed template is another template: number its draft after that name's versions."""
        registry = self.registry
        versions = await self._read(lambda: registry.versions(name))
        if self.editor.document.template.name == name:
            self.editor.document.set_latest_version(max(versions, default=0))

    def _on_list_activated(self, index: QModelIndex) -> None:
        if index.isValid():
            self._spawn(self.open_template(self.list_model.row(index.row()).name), "open")

    def _on_version_selected(self, *_args: Any) -> None:
        self._show_runs()

    def _selected_version(self) -> int | None:
        index = self.versions.currentIndex()
        return self.versions_model.row(index.row()).version if index.isValid() else None

    def _on_open_version(self) -> None:
        version = self._selected_version()
        if version is not None:
            self._spawn(self.open_template(self.editor.document.template.name, version), "open")

    def _on_compare_previous(self) -> None:
        version = self._selected_version()
        if version is not None and version > 1:
            self._spawn(self.compare(version - 1, version), "compare")

    @Slot(object)
    def _on_events(self, events: list[Any]) -> None:
        if any(isinstance(e, RunChanged) for e in events) and not self._usage_timer.isActive():
            self._usage_timer.start()

    def _on_usage_timer(self) -> None:
        if self._loaded:
            self._spawn(self._refresh_usage(), "refresh")

    async def _refresh_usage(self) -> None:
        await self.reload()
        if self.editor.document.published is not None or self.editor.document.latest_version:
            await self.refresh_versions()
