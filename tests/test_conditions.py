"""Conditions: read-only, bounded, and every failure at run time is a ConditionError."""

from __future__ import annotations

import asyncio
import re

import pytest

from core.conditions import MAX_DEPTH, ConditionError, check_condition, evaluate
from core.errors import TemplateError
from core.runtime import Runtime
from core.templates import WorkflowTemplate, parse_template


def run(expression: str, **inputs):
    return evaluate(expression, step_outputs={"read": {"wells": [0.1, 0.2]}}, input_data=inputs,
                    context={"run_id": "r1"})


def test_conditions_read_data_as_usual():
    assert run("input_data['x'] == [1, 2] and input_data['d'] == {'a': 1}", x=[1, 2], d={"a": 1})
    assert run("len(step_outputs['read']['wells']) == 2 and input_data.get('n', 0) == 0")
    assert run("context['run_id'] == 'r1' and max(step_outputs['read']['wells']) > 0.15")


@pytest.mark.parametrize(("expression", "reason"), [
    ("int(float('inf')) > 0", "OverflowError"),
    ("input_data['missing'] > 1", "KeyError"),
    ("input_data['x'].append(3) is None", "cannot change the data it reads"),
    ("input_data.update({'x': 1}) is None", "'update' does not exist"),
    ("not " * 3000 + "True", "at most 2000"),
    ("(not " * (MAX_DEPTH + 1) + "True" + ")" * (MAX_DEPTH + 1), f"nested more than {MAX_DEPTH} levels"),
    ("'a' * 10**9 == ''", "Sorry"),
])
def test_every_failure_is_a_condition_error_and_nothing_changes(expression, reason):
    inputs = {"x": [1, 2], "d": {"a": 1}}
    with pytest.raises(ConditionError, match=reason):
        evaluate(expression, step_outputs={}, input_data=inputs, context={})
    assert inputs == {"x": [1, 2], "d": {"a": 1}}


def test_nested_data_cannot_be_changed_through_a_copy_either():
    inputs = {"d": {"inner": [1]}}
    with pytest.raises(ConditionError, match="cannot change"):
        evaluate("input_data['d'].copy()['inner'].append(2)", step_outputs={}, input_data=inputs, context={})
    assert inputs == {"d": {"inner": [1]}}


@pytest.mark.parametrize(("expression", "problem"), [
    ("input_data.update({'x': 1}) is None", "may not call '.update'"),
    ("step_outputs['a'].pop('y')", "may not call '.pop'"),
    ("not " * 3000 + "True", "at most 2000"),
    ("not " * 100 + "True", f"nested more than {MAX_DEPTH} levels"),
    ("(x := 1)", "may not assign"),
])
def test_validation_refuses_side_effects_and_unbounded_expressions(expression, problem):
    assert any(problem in p for p in check_condition(expression, steps={"a"}))
    text = ("name: c\nsteps:\n  - {id: a, kind: noop}\n  - id: b\n    kind: noop\n    depends_on: a\n"
            f"    condition: {expression!r}\n")
    with pytest.raises(TemplateError, match=r"c.yaml:7: steps\[1\].condition: condition .*" + re.escape(problem)):
        parse_template(text, "c.yaml")


def test_a_condition_that_overflows_fails_its_step_not_the_engine(data_dir):
    async def scenario():
        rt = Runtime.build(data_dir, workcell=None, metrics=False)
        await rt.start(templates_dir=None)
        # published as it was accepted before (the model does not re-check conditions)
        template = WorkflowTemplate.model_validate({"name": "Overflow", "steps": [
            {"id": "a", "kind": "noop"},
            {"id": "b", "kind": "noop", "depends_on": ["a"], "condition": "int(float('inf')) > 0"}]})
        await rt.engine.publish(template)
        run_id = await rt.engine.create_instance("Overflow", {})
        await rt.engine.execute_workflow(run_id, async_execution=False)
        status = rt.engine.run_status(run_id).value
        steps = {s["id"]: s for s in rt.engine.get_instance(run_id)["steps"]}
        await rt.close()
        return status, steps

    status, steps = asyncio.run(scenario())
    assert status == "failed"
    assert steps["a"]["status"] == "completed" and steps["b"]["status"] == "failed"
