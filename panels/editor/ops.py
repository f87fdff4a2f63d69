"""Edits of a workflow template, as pure functions from one model to the next (no Qt).

Templates are frozen pydantic models: every function returns a new :class:`WorkflowTemplate`
(or the same object when nothing changes), so an undo stack only has to keep "before" and
"after". Changed steps and templates are re-validated by pydantic, so an edit can never produce a
model the loader would reject for its types; semantic problems (cycles, unknown capabilities,
bad conditions) are left for :mod:`panels.editor.validation` to show.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from core.templates import Step, WorkflowTemplate
from panels.editor.kinds import KindCatalog, humanize

__all__ = ["EditError", "add_dependency", "add_step", "move_steps", "new_step_id",
           "remove_dependency", "remove_steps", "rename_input", "rename_step", "set_error_handler",
           "update_step", "update_workflow"]


class EditError(ValueError):
    """An edit that cannot be made (the message says why, for the operator)."""


def _slug(text: str) -> str:
    out = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return out or "step"


def new_step_id(t: WorkflowTemplate, kind: str) -> str:
    """A readable id not used by ``t``: ``read_plate``, ``read_plate_2`` ..."""
    command = kind.rpartition(".")[2]
    base = _slug(humanize(command)) if "." in kind else _slug(kind)
    taken = {s.id for s in t.steps}
    if base not in taken:
        return base
    n = 2
    while f"{base}_{n}" in taken:
        n += 1
    return f"{base}_{n}"


def _replace_steps(t: WorkflowTemplate, steps: tuple[Step, ...], **more: Any) -> WorkflowTemplate:
    return WorkflowTemplate.model_validate({**dict(t), "steps": steps, **more})


def _validated_step(step: Step, changes: Mapping[str, Any]) -> Step:
    return Step.model_validate({**dict(step), **changes})


def add_step(t: WorkflowTemplate, kind: str, position: tuple[float, float] | None = None, *,
             catalog: KindCatalog | None = None, step_id: str | None = None,
             name: str | None = None) -> tuple[WorkflowTemplate, str]:
    """Append a step of ``kind``; returns the new template and the new step's id.

    Parameters with a default in the catalog start with it (a delay starts at 60 s).
    """
    info = catalog.get(kind) if catalog is not None else None
    sid = step_id or new_step_id(t, kind)
    if any(s.id == sid for s in t.steps):
        raise EditError(f"a step '{sid}' already exists")
    params = {p.name: p.default for p in info.parameters if p.default is not None} if info else {}
    title = name if name is not None else (info.title if info else humanize(kind.rpartition(".")[2]))
    step = Step(id=sid, name=title, kind=kind, parameters=params,
                position=(round(position[0], 1), round(position[1], 1)) if position else None)
    return _replace_steps(t, (*t.steps, step)), sid


def remove_steps(t: WorkflowTemplate, step_ids: set[str] | frozenset[str]) -> WorkflowTemplate:
    """Remove steps with the dependencies, time windows and error-handler entries that name them.

    Input mappings and conditions that read a removed step stay: validation points at them.
    """
    if not step_ids:
        return t

    def without(s: Step) -> Step:
        changes: dict[str, Any] = {}
        if set(s.depends_on) & step_ids:
            changes["depends_on"] = tuple(d for d in s.depends_on if d not in step_ids)
        if s.start_within is not None and s.start_within.after in step_ids:
            changes["start_within"] = None
        return s.model_copy(update=changes) if changes else s

    steps = tuple(without(s) for s in t.steps if s.id not in step_ids)
    handlers = {k: v for k, v in t.error_handlers.items() if k not in step_ids and v not in step_ids}
    return _replace_steps(t, steps, error_handlers=handlers)


def add_dependency(t: WorkflowTemplate, dependency: str, dependant: str) -> WorkflowTemplate:
    """``dependant`` waits for ``dependency``. A cycle is allowed here and flagged by validation."""
    if dependency == dependant:
        raise EditError("a step cannot depend on itself")
    step = t.step(dependant)
    t.step(dependency)
    if dependency in step.depends_on:
        raise EditError(f"'{dependant}' already depends on '{dependency}'")
    return update_step(t, dependant, depends_on=(*step.depends_on, dependency))


def remove_dependency(t: WorkflowTemplate, dependency: str, dependant: str) -> WorkflowTemplate:
    step = t.step(dependant)
    if dependency not in step.depends_on:
        return t
    return update_step(t, dependant, depends_on=tuple(d for d in step.depends_on if d != dependency))


def move_steps(t: WorkflowTemplate, positions: Mapping[str, tuple[float, float]]) -> WorkflowTemplate:
    """New canvas positions (rounded to 0.1 px, so a file does not fill with float noise)."""
    rounded = {k: (round(x, 1), round(y, 1)) for k, (x, y) in positions.items()}
    if all(t.step(k).position == p for k, p in rounded.items()):
        return t
    steps = tuple(s.model_copy(update={"position": rounded[s.id]}) if s.id in rounded else s
                  for s in t.steps)
    return _replace_steps(t, steps)


def update_step(t: WorkflowTemplate, step_id: str, **changes: Any) -> WorkflowTemplate:
    """Change fields of one step (validated). Use :func:`rename_step` to change its id."""
    if "id" in changes and changes["id"] != step_id:
        raise EditError("use rename_step to change a step id")
    step = t.step(step_id)
    new = _validated_step(step, changes)
    if new == step:
        return t
    return _replace_steps(t, tuple(new if s.id == step_id else s for s in t.steps))


_ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def rename_step(t: WorkflowTemplate, old: str, new: str) -> WorkflowTemplate:
    """Give a step a new id and update every reference: dependencies, time windows, error handlers, input
    mappings (``step_outputs.OLD.x``) and conditions (``step_outputs['OLD']``)."""
    new = new.strip()
    if new == old:
        return t
    if not _ID_RE.match(new):
        raise EditError(f"'{new}' is not a valid step id (letters, digits, '_' and '-')")
    if any(s.id == new for s in t.steps):
        raise EditError(f"a step '{new}' already exists")
    cond = re.compile(r"""(step_outputs\s*\[\s*)(['"])""" + re.escape(old) + r"\2")

    def fix(s: Step) -> Step:
        changes: dict[str, Any] = {}
        if s.id == old:
            changes["id"] = new
        if old in s.depends_on:
            changes["depends_on"] = tuple(new if d == old else d for d in s.depends_on)
        if s.start_within is not None and s.start_within.after == old:
            changes["start_within"] = s.start_within.model_copy(update={"after": new})
        prefix = f"step_outputs.{old}."
        if any(v.startswith(prefix) for v in s.input_mapping.values()):
            changes["input_mapping"] = {k: f"step_outputs.{new}.{v[len(prefix):]}" if v.startswith(prefix)
                                        else v for k, v in s.input_mapping.items()}
        if s.condition and cond.search(s.condition):
            changes["condition"] = cond.sub(lambda m: f"{m.group(1)}{m.group(2)}{new}{m.group(2)}",
                                            s.condition)
        return s.model_copy(update=changes) if changes else s

    handlers = {(new if k == old else k): (new if v == old else v) for k, v in t.error_handlers.items()}
    return _replace_steps(t, tuple(fix(s) for s in t.steps), error_handlers=handlers)


def rename_input(t: WorkflowTemplate, old: str, new: str) -> WorkflowTemplate:
    """Rename a workflow input and every reference to it: input mappings (``input_data.OLD``)
    and conditions (``input_data['OLD']``)."""
    new = new.strip()
    if new == old:
        return t
    if not new or any(p.name == new for p in t.inputs):
        raise EditError(f"an input '{new}' already exists" if new else "an input needs a name")
    cond = re.compile(r"""(input_data\s*\[\s*)(['"])""" + re.escape(old) + r"\2")
    source = f"input_data.{old}"

    def fix(s: Step) -> Step:
        changes: dict[str, Any] = {}
        if source in s.input_mapping.values():
            changes["input_mapping"] = {k: f"input_data.{new}" if v == source else v
                                        for k, v in s.input_mapping.items()}
        if s.condition and cond.search(s.condition):
            changes["condition"] = cond.sub(lambda m: f"{m.group(1)}{m.group(2)}{new}{m.group(2)}",
                                            s.condition)
        return s.model_copy(update=changes) if changes else s

    inputs = tuple(p.model_copy(update={"name": new}) if p.name == old else p for p in t.inputs)
    return _replace_steps(t, tuple(fix(s) for s in t.steps), inputs=inputs)


def set_error_handler(t: WorkflowTemplate, failing: str, handler: str | None) -> WorkflowTemplate:
    """Run ``handler`` when ``failing`` fails for good (``*``: any step); None removes it."""
    handlers = dict(t.error_handlers)
    if handler is None:
        if failing not in handlers:
            return t
        del handlers[failing]
    else:
        if handlers.get(failing) == handler:
            return t
        handlers[failing] = handler
    return update_workflow(t, error_handlers=handlers)


def update_workflow(t: WorkflowTemplate, **changes: Any) -> WorkflowTemplate:
    """Change workflow-level fields (validated): inputs, failure policy, default timeout ..."""
    if "steps" in changes:
        raise EditError("edit steps with the step functions")
    new = WorkflowTemplate.model_validate({**dict(t), **changes})
    return t if new == t else new
