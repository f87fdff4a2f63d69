"""A prompt step's declaration is checked when its template is loaded: every answer field (type,
range, choices, pattern, its default), the timeout, the default answer against the fields,
priority and answerers — each problem with file:line: field, all of them at once."""

from __future__ import annotations

import pytest

from core.errors import TemplateError
from core.inbox import prompt_problems
from core.templates import load_template, parse_template

BAD = """\
name: Night check
inputs: []
definition:
  steps:
    - id: temperature
      kind: prompt
      parameters:
        message: Cold room temperature?
        fields:
          - name: celsius
            type: number
            unit: °C
            min: -30
            max: 10
            default: 25
          - name: lot
            type: choice
          - name: when
            type: date
          - name: plate
            type: barcode
            pattern: "PL-[0-9"
          - name: celsius
            type: text
    - id: go
      kind: prompt
      depends_on: [temperature]
      parameters:
        message: Release the batch?
        fields:
          - {name: go, type: yesno}
          - {name: wells, type: number, integer: true, min: 1, max: 96}
        timeout: 1h
        default: {go: maybe, wells: 12}
        priority: urgent
        answerers: [ann, 7]
    - id: later
      kind: prompt
      depends_on: [go]
      parameters:
        fields: [{name: done, type: yesno}]
        timeout: soon
        default: {done: true}
    - id: untimed
      kind: prompt
      depends_on: [later]
      parameters:
        fields: [{name: done, type: yesno}]
        timeout: 10m
"""


def test_every_prompt_problem_is_named_with_its_line_and_field(tmp_path):
    path = tmp_path / "night.yaml"
    path.write_text(BAD, encoding="utf-8")
    with pytest.raises(TemplateError) as exc:
        load_template(path)
    found = [(p.where.line, p.where.field, p.message) for p in exc.value.problems]
    steps = "definition.steps"
    assert [(line, field) for line, field, _ in found] == [
        (15, f"{steps}[0].parameters.fields[0].default"),
        (16, f"{steps}[0].parameters.fields[1].choices"),
        (19, f"{steps}[0].parameters.fields[2].type"),
        (22, f"{steps}[0].parameters.fields[3].pattern"),
        (23, f"{steps}[0].parameters.fields[4].name"),
        (35, f"{steps}[1].parameters.priority"),
        (36, f"{steps}[1].parameters.answerers"),
        (34, f"{steps}[1].parameters.default.go"),
        (42, f"{steps}[2].parameters.timeout"),
        (47, f"{steps}[3].parameters.default"),  # absent: the line of its parameters
    ]
    messages = [m for _, _, m in found]
    assert messages[0] == "celsius: 25 °C is above the maximum 10 °C"
    assert "a choice field needs a non-empty list of values" in messages[1]
    assert "'date' is not one of text, number, choice, yesno, barcode, json" in messages[2]
    assert "not a regular expression" in messages[3]
    assert messages[4] == "'celsius' is declared twice"
    assert messages[5] == "a whole number 0-100, not 'urgent'"
    assert "yes or no is required, not 'maybe'" in messages[7]
    assert "bad duration 'soon'" in messages[8]
    assert "a prompt with a timeout needs the answer given when it passes" in messages[9]
    assert str(exc.value).splitlines()[1].startswith(f"  {path}:15: {steps}[0].parameters.fields[0].default: ")


def test_a_good_prompt_declaration_loads_and_the_engine_reads_the_same_rules():
    text = BAD.split("    - id: go")[0].replace("            default: 25\n", "            default: 4\n")
    text = text.replace("          - name: lot\n            type: choice\n",
                        "          - name: lot\n            type: choice\n            choices: [A, B]\n")
    text = text.replace("            type: date\n", "            type: text\n")
    text = text.replace('            pattern: "PL-[0-9"\n', '            pattern: "PL-[0-9]+"\n')
    text = text.replace("          - name: celsius\n            type: text\n", "")
    template = parse_template(text, "good.yaml")
    assert [f["name"] for f in template.steps[0].parameters["fields"]] == ["celsius", "lot", "when", "plate"]
    assert prompt_problems(template.steps[0].parameters) == []
    assert prompt_problems({"fields": {"name": "x"}}) == [(("parameters", "fields"), "a list of fields, not dict")]
    assert prompt_problems({"fields": [{"name": "ok", "type": "yesno"}], "approval": True, "timeout": "5m",
                            "default": {"approved": False}}) == []
