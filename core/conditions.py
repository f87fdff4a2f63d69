"""Step conditions: small Python-like expressions, evaluated safely by simpleeval (never ``eval``).

A condition sees three names, as in the seed's workflow engine:

- ``step_outputs`` — outputs of completed steps: ``step_outputs['read']['absorbance'] > 0.5``
- ``input_data`` — the run's inputs: ``input_data['plate_count'] >= 4``
- ``context`` — shared run context (run id, template name and version, attempt numbers)

:func:`check_condition` parses without evaluating and lists what is wrong (syntax, unknown names,
references to steps or inputs that do not exist), so a template can be rejected before it runs.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from simpleeval import EvalWithCompoundTypes, InvalidExpression

ROOT_NAMES = frozenset({"step_outputs", "input_data", "context"})
FUNCTIONS = {"len": len, "min": min, "max": max, "abs": abs, "round": round, "int": int,
             "float": float, "str": str, "bool": bool}


class ConditionError(Exception):
    """A condition that cannot be evaluated (message says why)."""


@lru_cache(maxsize=1024)
def _parse(expression: str) -> ast.Expression:
    return ast.parse(expression.strip(), mode="eval")


def check_condition(expression: str, *, steps: Iterable[str] = (),
                    inputs: Iterable[str] | None = None) -> list[str]:
    """Problems with ``expression`` (empty list if it is fine). Nothing is evaluated."""
    try:
        tree = _parse(expression)
    except SyntaxError as exc:
        return [f"condition does not parse: {exc.msg} (column {exc.offset})"]
    problems: list[str] = []
    step_ids, input_names = set(steps), set(inputs) if inputs is not None else None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in ROOT_NAMES and node.id not in FUNCTIONS \
                and node.id not in ("True", "False", "None"):
            problems.append(f"condition uses unknown name '{node.id}' "
                            f"(available: {', '.join(sorted(ROOT_NAMES))})")
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            key = node.slice.value
            if node.value.id == "step_outputs" and key not in step_ids:
                problems.append(f"condition refers to step '{key}', which does not exist")
            if node.value.id == "input_data" and input_names is not None and key not in input_names:
                problems.append(f"condition refers to input '{key}', which is not declared")
        if isinstance(node, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            problems.append("condition may not contain lambdas or comprehensions")
    return problems


def evaluate(expression: str, *, step_outputs: dict[str, Any], input_data: dict[str, Any],
             context: dict[str, Any]) -> bool:
    """Evaluate a condition to a bool. Missing keys and type errors raise ConditionError."""
    evaluator = EvalWithCompoundTypes(
        names={"step_outputs": step_outputs, "input_data": input_data, "context": context},
        functions=FUNCTIONS)
    try:
        return bool(evaluator.eval(expression.strip()))
    except (InvalidExpression, KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ConditionError(f"condition {expression!r} failed: {type(exc).__name__}: {exc}") from None
