"""What changed between two versions of a workflow template.

:func:`diff_templates` compares two :class:`~core.templates.WorkflowTemplate` models and returns a
:class:`TemplateDiff`: steps added, removed and changed (field by field: parameters, input
mappings, condition, retry policy, timeout ...), dependency edges added and removed, and the
workflow-level changes (inputs, failure policy, default timeout, error handlers ...).

Steps are matched by id. Dependencies are reported as edges ``(dependency, dependant)``, not as
changes of the dependant step, so a graph view can draw them. A step that only moved on the
editor's canvas is listed in :attr:`TemplateDiff.moved_steps` and does not count as changed.

The module is plain Python (no Qt): the editor's diff view draws and lists what it returns, and
change-control reports can print :meth:`TemplateDiff.lines`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from core.templates import InputParameter, RetryPolicy, Step, WorkflowTemplate

__all__ = ["Change", "Edge", "StepDiff", "StepStatus", "TemplateDiff", "diff_templates",
           "format_value"]

Edge = tuple[str, str]
"""A dependency ``(dependency, dependant)``: the dependant step waits for the dependency."""

StepStatus = Literal["added", "removed", "changed", "unchanged"]

# Step fields compared one by one, in the order they are reported. ``depends_on`` is reported as
# edges, ``position`` as a move, ``id`` is the match key.
_STEP_FIELDS = ("name", "kind", "parameters", "input_mapping", "condition", "retry_policy",
                "timeout", "idempotent", "estimated_duration", "execution_mode", "restrict_to",
                "module_restriction", "reserve")
_WORKFLOW_FIELDS = ("name", "description", "tags", "inputs", "default_timeout", "failure_policy",
                    "max_recovery_attempts", "default_retry_policy", "error_handlers", "schedule")
_RETRY_FIELDS = tuple(RetryPolicy.model_fields)
_INPUT_FIELDS = ("type", "required", "default", "description")


def format_value(value: Any) -> str:
    """A short human-readable rendering of a model value (``—`` for none)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, RetryPolicy):
        return (f"{value.max_attempts} attempts, {format_value(value.initial_interval)} s "
                f"× {format_value(value.backoff_multiplier)} (max {format_value(value.max_backoff)} s)")
    if isinstance(value, InputParameter):
        return f"{value.type.value}{'' if value.required else ', optional'}" + (
            f", default {format_value(value.default)}" if value.default is not None else "")
    if isinstance(value, tuple | list):
        return ", ".join(format_value(v) for v in value) if value else "—"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


@dataclass(frozen=True)
class Change:
    """One value that differs: ``path`` names it (``timeout``, ``parameters.volume_ul``,
    ``retry_policy.max_attempts``, ``inputs.plate_id.type``); ``old``/``new`` are None when the
    value was absent on that side."""

    path: str
    old: Any
    new: Any

    @property
    def kind(self) -> Literal["added", "removed", "changed"]:
        """``added`` (absent before), ``removed`` (absent after) or ``changed``."""
        if self.old is None:
            return "added"
        if self.new is None:
            return "removed"
        return "changed"

    def describe(self) -> str:
        """``path: old → new`` in words."""
        if self.kind == "added":
            return f"{self.path}: set to {format_value(self.new)}"
        if self.kind == "removed":
            return f"{self.path}: removed (was {format_value(self.old)})"
        return f"{self.path}: {format_value(self.old)} → {format_value(self.new)}"


@dataclass(frozen=True)
class StepDiff:
    """The changes of one step present in both versions."""

    step_id: str
    label: str
    changes: tuple[Change, ...]

    def paths(self) -> list[str]:
        return [c.path for c in self.changes]


@dataclass(frozen=True)
class TemplateDiff:
    """Everything that differs from ``old`` to ``new`` (see :func:`diff_templates`)."""

    old_version: int
    new_version: int
    added_steps: tuple[str, ...] = ()
    """Ids of steps only in the new version, in its order."""
    removed_steps: tuple[str, ...] = ()
    """Ids of steps only in the old version, in its order."""
    changed_steps: tuple[StepDiff, ...] = ()
    moved_steps: tuple[str, ...] = ()
    """Steps whose only difference is their place on the editor's canvas."""
    added_edges: tuple[Edge, ...] = ()
    removed_edges: tuple[Edge, ...] = ()
    workflow_changes: tuple[Change, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    """Step id -> display label, from whichever version has the step (new wins)."""

    @property
    def is_empty(self) -> bool:
        """True when nothing but the layout differs."""
        return not (self.added_steps or self.removed_steps or self.changed_steps
                    or self.added_edges or self.removed_edges or self.workflow_changes)

    def step_status(self, step_id: str) -> StepStatus:
        if step_id in self.added_steps:
            return "added"
        if step_id in self.removed_steps:
            return "removed"
        if any(d.step_id == step_id for d in self.changed_steps):
            return "changed"
        return "unchanged"

    def step_changes(self, step_id: str) -> tuple[Change, ...]:
        for d in self.changed_steps:
            if d.step_id == step_id:
                return d.changes
        return ()

    def edge_status(self, edge: Edge) -> Literal["added", "removed", "unchanged"]:
        if edge in self.added_edges:
            return "added"
        if edge in self.removed_edges:
            return "removed"
        return "unchanged"

    def summary(self) -> str:
        """One line: counts of what changed."""
        if self.is_empty:
            return "no changes" + (" (layout only)" if self.moved_steps else "")
        parts = []
        for count, what in ((len(self.added_steps), "added"), (len(self.removed_steps), "removed"),
                            (len(self.changed_steps), "changed")):
            if count:
                parts.append(f"{count} step{'s' if count != 1 else ''} {what}")
        edges = len(self.added_edges) + len(self.removed_edges)
        if edges:
            parts.append(f"{edges} dependenc{'ies' if edges != 1 else 'y'} changed")
        if self.workflow_changes:
            n = len(self.workflow_changes)
            parts.append(f"{n} workflow setting{'s' if n != 1 else ''} changed")
        return ", ".join(parts)

    def lines(self) -> list[str]:
        """Every difference as one human-readable line (steps, edges, then workflow settings)."""
        def label(step_id: str) -> str:
            text = self.labels.get(step_id, step_id)
            return step_id if text == step_id else f"{step_id} ({text})"

        out = [f"+ step {label(s)}" for s in self.added_steps]
        out += [f"- step {label(s)}" for s in self.removed_steps]
        for d in self.changed_steps:
            out += [f"~ step {d.step_id}: {c.describe()}" for c in d.changes]
        out += [f"+ dependency {a} → {b}" for a, b in self.added_edges]
        out += [f"- dependency {a} → {b}" for a, b in self.removed_edges]
        out += [f"~ workflow {c.describe()}" for c in self.workflow_changes]
        return out


def _edges(t: WorkflowTemplate) -> list[Edge]:
    return [(dep, s.id) for s in t.steps for dep in s.depends_on]


def _mapping_changes(prefix: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if a != b or (key in old) != (key in new):
            out.append(Change(f"{prefix}.{key}", a, b))
    return out


def _retry_changes(prefix: str, old: RetryPolicy | None, new: RetryPolicy | None) -> list[Change]:
    if old is None or new is None:
        return [] if old == new else [Change(prefix, old, new)]
    return [Change(f"{prefix}.{f}", getattr(old, f), getattr(new, f))
            for f in _RETRY_FIELDS if getattr(old, f) != getattr(new, f)]


def _step_changes(old: Step, new: Step) -> list[Change]:
    out: list[Change] = []
    for name in _STEP_FIELDS:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if name in ("parameters", "input_mapping"):
            out += _mapping_changes(name, a, b)
        elif name == "retry_policy":
            out += _retry_changes(name, a, b)
        elif name in ("restrict_to", "reserve"):
            out.append(Change(name, a or None, b or None))
        else:
            out.append(Change(name, a, b))
    return out


def _input_changes(old: Iterable[InputParameter], new: Iterable[InputParameter]) -> list[Change]:
    before = {p.name: p for p in old}
    after = {p.name: p for p in new}
    out: list[Change] = []
    for name in [*before, *(n for n in after if n not in before)]:
        a, b = before.get(name), after.get(name)
        if a is None or b is None:
            out.append(Change(f"inputs.{name}", a, b))
            continue
        for f in _INPUT_FIELDS:
            if getattr(a, f) != getattr(b, f):
                out.append(Change(f"inputs.{name}.{f}", getattr(a, f), getattr(b, f)))
    return out


def _workflow_changes(old: WorkflowTemplate, new: WorkflowTemplate) -> list[Change]:
    out: list[Change] = []
    for name in _WORKFLOW_FIELDS:
        a, b = getattr(old, name), getattr(new, name)
        if a == b:
            continue
        if name == "inputs":
            out += _input_changes(a, b)
        elif name == "error_handlers":
            out += _mapping_changes(name, a, b)
        elif name == "default_retry_policy":
            out += _retry_changes(name, a, b)
        elif name == "tags":
            out.append(Change(name, a or None, b or None))
        else:
            out.append(Change(name, a if a != "" else None, b if b != "" else None))
    return out


def diff_templates(old: WorkflowTemplate, new: WorkflowTemplate) -> TemplateDiff:
    """Compare ``old`` with ``new`` (usually two versions of one template; any two work)."""
    old_steps = {s.id: s for s in old.steps}
    new_steps = {s.id: s for s in new.steps}
    changed: list[StepDiff] = []
    moved: list[str] = []
    for s in new.steps:
        before = old_steps.get(s.id)
        if before is None:
            continue
        changes = _step_changes(before, s)
        if changes:
            changed.append(StepDiff(s.id, s.label, tuple(changes)))
        elif before.position != s.position:
            moved.append(s.id)
    old_edges, new_edges = _edges(old), _edges(new)
    labels = {s.id: s.label for s in old.steps} | {s.id: s.label for s in new.steps}
    return TemplateDiff(
        old_version=old.version, new_version=new.version,
        added_steps=tuple(s.id for s in new.steps if s.id not in old_steps),
        removed_steps=tuple(s.id for s in old.steps if s.id not in new_steps),
        changed_steps=tuple(changed), moved_steps=tuple(moved),
        added_edges=tuple(e for e in new_edges if e not in set(old_edges)),
        removed_edges=tuple(e for e in old_edges if e not in set(new_edges)),
        workflow_changes=tuple(_workflow_changes(old, new)), labels=labels)
