"""The template being edited: current model, the published version it came from, undo stack.

Every edit is a :class:`TemplateEdit` on the document's ``QUndoStack``: since templates are
immutable, a command keeps the model before and after, and undo/redo swap them. Consecutive
edits of one field (a spin box stepping, typing in a field) merge into one command through a
merge key.

A document opened from a published version is read-only in the sense of the registry: the
version itself never changes; the first edit turns the document into a draft of the next
version (:attr:`TemplateDocument.is_draft`). Undoing back to the published content makes it the
published version again.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Signal, Slot
from PySide6.QtGui import QUndoCommand, QUndoStack

from core.templates import WorkflowTemplate
from panels.editor.kinds import KindCatalog
from panels.editor.validation import Issue, errors, validate

__all__ = ["TemplateDocument", "TemplateEdit"]

_MERGE_IDS: dict[str, int] = {}


def _merge_id(key: str | None) -> int:
    if key is None:
        return -1
    return _MERGE_IDS.setdefault(key, len(_MERGE_IDS) + 1)


class TemplateEdit(QUndoCommand):
    """Replace the document's template by ``after`` (undo: by ``before``)."""

    def __init__(self, document: TemplateDocument, before: WorkflowTemplate, after: WorkflowTemplate,
                 text: str, merge_key: str | None = None) -> None:
        super().__init__(text)
        self.document = document
        self.before = before
        self.after = after
        self._id = _merge_id(merge_key)

    def redo(self) -> None:
        self.document.set_template(self.after)

    def undo(self) -> None:
        self.document.set_template(self.before)

    def id(self) -> int:  # noqa: A003 - Qt's name
        return self._id

    def mergeWith(self, other: QUndoCommand) -> bool:  # noqa: N802 - Qt override
        if not isinstance(other, TemplateEdit) or other.id() != self._id or self._id < 0:
            return False
        self.after = other.after
        if self.after == self.before:
            self.setObsolete(True)
        return True


class TemplateDocument(QObject):
    """One template in the editor. Emits :attr:`changed` after every change of model or state."""

    changed = Signal()
    """The template, its issues or its published state changed."""
    opened = Signal()
    """A different template (or version) was opened: views reset selection and layout."""

    def __init__(self, catalog: KindCatalog, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.catalog = catalog
        self.stack = QUndoStack(self)
        self.stack.cleanChanged.connect(self._on_clean_changed)
        # a command's redo() runs before the stack counts it: say so again once it is counted
        self.stack.indexChanged.connect(self._on_clean_changed)
        self.template = WorkflowTemplate(name="Untitled workflow")
        self.published: WorkflowTemplate | None = None
        """The published version this document was opened from (None: a new template)."""
        self.latest_version = 0
        """The latest published version of this name when opened (0: none)."""
        self.issues: list[Issue] = validate(self.template, catalog)
        self._base = 0
        """The undo stack's index when the content was last opened or published: edits count
        from there."""

    @Slot(bool)
    def _on_clean_changed(self, _clean: bool) -> None:
        self.changed.emit()

    # -- opening
    def open(self, template: WorkflowTemplate, *, published: bool, latest_version: int = 0) -> None:
        """Show ``template``: a published version (``published``) or a draft (new, imported)."""
        self.stack.clear()
        self._base = 0
        self.published = template if published else None
        self.latest_version = max(latest_version, template.version if published else 0)
        self.set_template(template if published else template.model_copy(update={"version": 0}), emit=False)
        self.opened.emit()
        self.changed.emit()

    def mark_published(self, template: WorkflowTemplate, latest_version: int | None = None) -> None:
        """The current content was published as ``template`` (same content and name); the
        latest version of that name is now ``latest_version`` (default: ``template.version``)."""
        self.published = template
        self.latest_version = latest_version if latest_version is not None else template.version
        self.template = template
        self._base = self.stack.index()
        self.stack.setClean()
        self.changed.emit()

    def set_latest_version(self, version: int) -> None:
        """The latest published version of the template's (possibly new) name."""
        if version != self.latest_version:
            self.latest_version = version
            self.changed.emit()

    # -- editing
    def apply(self, after: WorkflowTemplate | Callable[[WorkflowTemplate], WorkflowTemplate],
              text: str, merge_key: str | None = None) -> bool:
        """Push an edit; ``after`` is the new model or a function of the current one.

        Returns False (and pushes nothing) when the model does not change.
        """
        new = after(self.template) if callable(after) else after
        if new == self.template:
            return False
        self.stack.push(TemplateEdit(self, self.template, new, text, merge_key))
        return True

    def set_template(self, template: WorkflowTemplate, emit: bool = True) -> None:
        if self.published is not None and template.content_hash() == self.published.content_hash():
            template = self.published  # back to the published content: that version again
        elif template.version:
            template = template.model_copy(update={"version": 0})
        self.template = template
        self.issues = validate(template, self.catalog)
        if emit:
            self.changed.emit()

    # -- state
    @property
    def is_draft(self) -> bool:
        """True unless the content is exactly a published version."""
        return self.published is None or self.template is not self.published

    @property
    def errors(self) -> list[Issue]:
        return errors(self.issues)

    @property
    def can_publish(self) -> bool:
        return self.is_draft and not self.errors

    @property
    def next_version(self) -> int:
        return self.latest_version + 1

    def state_text(self) -> str:
        """``v3 · published (read-only: editing makes a draft of v4)`` or ``draft of v4 …``."""
        if not self.is_draft and self.published is not None:
            newer = (f" · latest is v{self.latest_version}"
                     if self.latest_version > self.published.version else "")
            return (f"v{self.published.version} · published, read-only — an edit starts a draft "
                    f"of v{self.next_version}{newer}")
        if self.published is None:
            return ("new template — publishing makes v1" if not self.latest_version
                    else f"draft of v{self.next_version}")
        edits = abs(self.stack.index() - self._base)  # since opened or published (undo may go back further)
        return (f"draft of v{self.next_version} (from v{self.published.version}) · "
                f"{edits} unpublished edit{'s' if edits != 1 else ''}")
