"""Step conditions: small Python-like expressions, evaluated safely by simpleeval (never ``eval``).

A condition sees three names, as in the seed's workflow engine:

- ``step_outputs`` — outputs of completed steps: ``step_outputs['read']['absorbance'] > 0.5``
- ``input_data`` — the run's inputs: ``input_data['plate_count'] >= 4``
- ``context`` — shared run context (run id, template name and version, attempt numbers)

:func:`check_condition` parses without evaluating and lists what is wrong (syntax, unknown names,
references to steps or inputs that do not exist, methods that would change data, an expression
longer than :data:`MAX_LENGTH` characters or nested deeper than :data:`MAX_DEPTH`), so a template
can be rejected before it runs.

A condition has no side effects: it reads frozen views of the data (mappings without ``update``,
lists without ``append``), so ``input_data.update({...})`` fails instead of changing the run's
inputs. Whatever goes wrong while evaluating is a :class:`ConditionError` with the reason.
"""

from __future__ import annotations

import ast
import types
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, NoReturn

from simpleeval import EvalWithCompoundTypes

ROOT_NAMES = frozenset({"step_outputs", "input_data", "context"})
FUNCTIONS = {"len": len, "min": min, "max": max, "abs": abs, "round": round, "int": int,
             "float": float, "str": str, "bool": bool}
MAX_LENGTH = 2000
"""Longest condition, in characters."""
MAX_DEPTH = 40
"""Deepest nesting of a condition's syntax tree (``not not ... x`` counts one per ``not``)."""
MUTATING_METHODS = frozenset({
    "update", "pop", "popitem", "clear", "setdefault", "append", "extend", "insert", "remove",
    "sort", "reverse", "add", "discard", "difference_update", "intersection_update",
    "symmetric_difference_update", "__setitem__", "__delitem__"})
"""Methods a condition may not call: they would change the data it reads."""


class ConditionError(Exception):
    """A condition that cannot be evaluated (message says why)."""


class _FrozenList(list[Any]):
    """A list that refuses changes; equal to the list it copies (``[1, 2] == x`` still holds)."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a condition cannot change the data it reads")

    __setitem__ = __delitem__ = __iadd__ = __imul__ = _refuse
    append = extend = insert = pop = remove = clear = sort = reverse = _refuse


def freeze(value: Any) -> Any:
    """A read-only deep copy: mappings become ``MappingProxyType``, lists refuse changes, sets
    become frozensets. Scalars are returned as they are."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        items = [freeze(v) for v in value]
        return tuple(items) if isinstance(value, tuple) else _FrozenList(items)
    if isinstance(value, set | frozenset):
        return frozenset(value)
    return value


@lru_cache(maxsize=1024)
def _parse(expression: str) -> ast.Expression:
    return ast.parse(expression.strip(), mode="eval")


def _depth(tree: ast.AST) -> int:
    deepest, todo = 0, [(tree, 1)]
    while todo:
        node, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        todo += [(child, depth + 1) for child in ast.iter_child_nodes(node)]
    return deepest


def _parse_bounded(expression: str) -> tuple[ast.Expression | None, str | None]:
    """The syntax tree, or why there is none (too long, does not parse, too deep)."""
    if len(expression) > MAX_LENGTH:
        return None, f"condition is {len(expression)} characters long; at most {MAX_LENGTH}"
    try:
        tree = _parse(expression)
    except SyntaxError as exc:
        return None, f"condition does not parse: {exc.msg} (column {exc.offset})"
    except (ValueError, RecursionError, MemoryError) as exc:
        return None, f"condition does not parse: {type(exc).__name__}: {exc}"
    if _depth(tree) > MAX_DEPTH:
        return None, f"condition is nested more than {MAX_DEPTH} levels deep"
    return tree, None


def check_condition(expression: str, *, steps: Iterable[str] = (),
                    inputs: Iterable[str] | None = None) -> list[str]:
    """Problems with ``expression`` (empty list if it is fine). Nothing is evaluated."""
    tree, reason = _parse_bounded(expression)
    if tree is None:
        return [reason or "condition does not parse"]
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
        if isinstance(node, ast.NamedExpr):
            problems.append("condition may not assign (:=)")
        if isinstance(node, ast.Attribute) and node.attr in MUTATING_METHODS:
            problems.append(f"condition may not call '.{node.attr}': a condition only reads")
    return problems


def evaluate(expression: str, *, step_outputs: Mapping[str, Any], input_data: Mapping[str, Any],
             context: Mapping[str, Any]) -> bool:
    """Evaluate a condition to a bool over read-only copies of the data.

    Raises:
        ConditionError: the condition is too long or deep, does not parse, or fails while
            evaluating (missing key, wrong type, overflow, an attempt to change data...).
    """
    _, reason = _parse_bounded(expression)
    if reason:
        raise ConditionError(f"condition {expression[:200]!r}: {reason}")
    evaluator = EvalWithCompoundTypes(
        names={"step_outputs": freeze(step_outputs), "input_data": freeze(input_data),
               "context": freeze(context)},
        functions=FUNCTIONS)
    try:
        return bool(evaluator.eval(expression.strip()))
    except Exception as exc:  # noqa: BLE001 - whatever the expression does wrong, the step fails with the reason
        raise ConditionError(f"condition {expression!r} failed: {type(exc).__name__}: {exc}") from None
