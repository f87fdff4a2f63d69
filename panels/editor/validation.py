"""Live validation of a template being edited (no Qt).

:func:`validate` runs the loader's own semantic checks (:func:`core.templates.check_template`
with the workcell's capabilities: duplicate ids, unknown dependencies, cycles, error handlers,
input mappings, conditions, kinds) and adds what the editor knows from the kind catalog:

- a required parameter with neither a value nor an input mapping (error);
- a mapping from an output the source step's kind does not produce (warning);
- a parameter value of the wrong type for its kind (warning).

Each :class:`Issue` names the step and, for dependency problems, the edges it concerns, so the
canvas can highlight them. Errors block publishing; warnings do not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from core.templates import WorkflowTemplate, check_template, render_path
from panels.editor.kinds import KindCatalog, ParamSpec

__all__ = ["Issue", "errors", "validate"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Issue:
    """One problem, located in the model."""

    message: str
    path: tuple[str | int, ...] = ()
    """Model path, e.g. ``("steps", 2, "condition")``."""
    step_id: str | None = None
    edges: tuple[tuple[str, str], ...] = ()
    """Dependencies ``(dependency, dependant)`` the problem is about."""
    severity: Severity = "error"

    @property
    def field(self) -> str:
        """The field inside the step (``condition``, ``parameters.seconds``) or the workflow."""
        rest = self.path[2:] if self.step_id is not None else self.path
        return render_path(rest) if rest else ""

    def location(self) -> str:
        """Where, for a list: ``step 'read' · condition`` or ``workflow · error_handlers``."""
        where = f"step '{self.step_id}'" if self.step_id is not None else "workflow"
        return f"{where} · {self.field}" if self.field else where


def _locate(t: WorkflowTemplate, path: tuple[str | int, ...], message: str) -> Issue:
    step_id: str | None = None
    edges: tuple[tuple[str, str], ...] = ()
    if len(path) >= 2 and path[0] == "steps" and isinstance(path[1], int) and path[1] < len(t.steps):
        step = t.steps[path[1]]
        step_id = step.id
        if len(path) >= 4 and path[2] == "depends_on" and isinstance(path[3], int) \
                and path[3] < len(step.depends_on):
            edges = ((step.depends_on[path[3]], step.id),)
        if message.startswith("dependency cycle: "):
            cycle = message.removeprefix("dependency cycle: ").split(" -> ")
            # find_cycle walks node -> dependency, so each pair is (dependant, dependency)
            edges = tuple((b, a) for a, b in zip(cycle, cycle[1:], strict=False))
    elif len(path) >= 2 and path[0] == "error_handlers":
        failing = str(path[1])
        if any(s.id == failing for s in t.steps):
            step_id = failing
            path = ("steps", next(i for i, s in enumerate(t.steps) if s.id == failing),
                    "error_handler")
    return Issue(message, path, step_id, edges)


def _type_ok(spec: ParamSpec, value: Any) -> bool:
    if spec.type == "boolean":
        return isinstance(value, bool)
    if spec.type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if spec.type in ("double", "duration"):
        if isinstance(value, str) and spec.type == "duration":
            from core.durations import DurationError, parse_duration

            try:
                parse_duration(value)
            except DurationError:
                return False
            return True
        return isinstance(value, int | float) and not isinstance(value, bool)
    if spec.type == "json":
        if isinstance(value, str):
            try:
                json.loads(value)
            except ValueError:
                return False
        return True
    return isinstance(value, str)


def validate(t: WorkflowTemplate, catalog: KindCatalog) -> list[Issue]:
    """Every problem of ``t``: the loader's checks, then the catalog's (see the module doc)."""
    issues = [_locate(t, path, message)
              for path, message in check_template(t, capabilities=catalog.capabilities)]
    if not t.steps:
        issues.append(Issue("the template has no steps: drag a step kind from the palette",
                            ("steps",)))
    kinds = {s.id: s.kind for s in t.steps}
    for i, s in enumerate(t.steps):
        info = catalog.get(s.kind)
        if info is None:
            continue
        for spec in info.parameters:
            given = [n for n in spec.names() if n in s.parameters or n in s.input_mapping]
            if spec.required and not given and s.kind != "delay":  # the loader reports delay
                issues.append(Issue(f"required parameter '{spec.name}' has no value and no mapping",
                                    ("steps", i, "parameters", spec.name), s.id))
            for name in given:
                if name in s.parameters and name not in s.input_mapping \
                        and not _type_ok(spec, s.parameters[name]):
                    issues.append(Issue(f"parameter '{name}' should be {spec.type}, not "
                                        f"{s.parameters[name]!r}", ("steps", i, "parameters", name),
                                        s.id, severity="warning"))
        for param, source in s.input_mapping.items():
            parts = source.split(".")
            if len(parts) >= 3 and parts[0] == "step_outputs" and parts[1] in kinds:
                source_info = catalog.get(kinds[parts[1]])
                output = ".".join(parts[2:])
                if source_info is not None and not source_info.builtin \
                        and output not in source_info.output_names():
                    issues.append(Issue(f"mapping '{source}': {kinds[parts[1]]} has no output "
                                        f"'{output}' ({', '.join(source_info.output_names())})",
                                        ("steps", i, "input_mapping", param), s.id,
                                        severity="warning"))
    return issues


def errors(issues: list[Issue]) -> list[Issue]:
    """The issues that block publishing."""
    return [i for i in issues if i.severity == "error"]
