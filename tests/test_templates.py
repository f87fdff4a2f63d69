"""Templates: three dialects into one model, every problem reported with file, field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import TemplateError
from core.templates import (
    FailurePolicy,
    RetryPolicy,
    detect_dialect,
    dump_template,
    load_template,
    parse_template,
)

TEMPLATES = Path(__file__).resolve().parent.parent / "resources" / "templates"


def test_sample_templates_of_every_dialect_load():
    elisa = load_template(TEMPLATES / "elisa_readout.yaml")
    assert elisa.failure_policy is FailurePolicy.PAUSE and elisa.default_timeout == 3600
    assert elisa.step("read").depends_on == ("to_reader",)
    assert elisa.step("to_reader").retry_policy == RetryPolicy(max_attempts=3, initial_interval=2.0,
                                                               backoff_multiplier=2, max_backoff=30.0)
    assert elisa.step("read").timeout == 600 and elisa.error_handlers == {"read": "park_plate"}

    replication = load_template(TEMPLATES / "dataset_build.json")
    assert detect_dialect({"steps": [{"name": "x", "task_type": "t"}]}) == "job_orchestrator"
    assert replication.step("store").depends_on == ("spin_down", "wait")  # indexes 2 and 3
    assert replication.step("dispense").retry_policy.max_attempts == 3  # max_retries 2

    passage = load_template(TEMPLATES / "cell_culture_passage.yaml")
    assert [s.id for s in passage.steps] == ["decap", "aspirate", "dispense", "incubate"]
    assert passage.step("dispense").depends_on == ("aspirate",)  # on_complete chain
    assert passage.step("aspirate").timeout == 300 and passage.default_timeout == 3600
    assert passage.step("decap").retry_policy.max_attempts == 3


BAD = """\
name: Broken
definition:
  stpes_typo: 1
  steps:
    - id: a
      kind: PlateReader.ReadPlate
      timeout_seconds: soon
    - id: a
      kind: Sealer.Seal
      depends_on: [ghost]
    - id: c
      kind: noop
      depends_on: [d]
      condition: "step_outputs['zz']['x'] > "
    - id: d
      kind: noop
      depends_on: [c]
      condition: "banana > 1"
      colour: red
    - name: no id or kind
"""


def test_bad_template_lists_every_problem_with_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(BAD)
    with pytest.raises(TemplateError) as info:
        load_template(path)
    text = str(info.value)
    expected = [
        ("broken.yaml:3: definition.stpes_typo", "unknown key"),
        ("broken.yaml:7: definition.steps[0].timeout_seconds", "unparsable duration"),
        ("broken.yaml:19: definition.steps[3].colour", "unknown key"),
        ("broken.yaml:20: definition.steps[4]", "missing field 'kind'"),
        ("broken.yaml:20: definition.steps[4]", "missing field 'id'"),
    ]
    for where, what in expected:
        assert any(where in line and what in line for line in text.splitlines()), (where, what, text)


def test_semantic_problems_after_the_shape_is_right(tmp_path):
    path = tmp_path / "semantic.yaml"
    path.write_text(BAD.replace("  stpes_typo: 1\n", "").replace("      timeout_seconds: soon\n", "")
                    .replace("      colour: red\n", "").replace("    - name: no id or kind\n", ""))
    with pytest.raises(TemplateError) as info:
        load_template(path)
    text = str(info.value)
    assert "semantic.yaml:6: definition.steps[1].id: duplicate step id 'a'" in text
    assert "semantic.yaml:8: definition.steps[1].depends_on[0]: depends on unknown step 'ghost'" in text
    assert "dependency cycle: c -> d -> c" in text
    assert "semantic.yaml:12: definition.steps[2].condition: condition does not parse" in text
    assert "unknown name 'banana'" in text and "semantic.yaml:16" in text


def test_other_dialects_report_their_own_field_names(tmp_path):
    path = tmp_path / "jobs.json"
    path.write_text('{"name": "J", "steps": [\n {"name": "A", "task_type": "noop"},\n'
                    ' {"name": "B", "task_type": "noop", "dependencies": [5], "timeout": "later"}\n]}')
    with pytest.raises(TemplateError) as info:
        load_template(path)
    text = str(info.value)
    assert "jobs.json:3: steps[1].dependencies[0]: dependency 5 is not the index of a step" in text
    assert "jobs.json:3: steps[1].timeout: unparsable duration" in text

    moose = tmp_path / "moose.yaml"
    moose.write_text("name: M\nconfig: {starting_task: a, timeout: forever}\ntasks:\n"
                     "  - name: a\n    on_complete: [b]\n  - name: c\n")
    with pytest.raises(TemplateError) as info:
        load_template(moose)
    text = str(info.value)
    assert "moose.yaml:5: tasks[0].on_complete[0]: on_complete names task 'b'" in text
    assert "config.timeout: unparsable duration" in text
    assert "task 'c' is not reachable from starting_task 'a'" in text


def test_mappings_conditions_and_capabilities_are_checked():
    text = """
name: M
inputs: [{name: plate, type: string}]
definition:
  steps:
    - {id: a, kind: PlateReader.ReadPlate, input_mapping: {p: input_data.nope}}
    - {id: b, kind: Sealer.Seal, input_mapping: {x: step_outputs.c.y}, condition: "input_data['plate'] == 1"}
    - {id: c, kind: Robot.Move, depends_on: [a]}
    - {id: d, kind: NotACapability}
"""
    with pytest.raises(TemplateError) as info:
        parse_template(text, "m.yaml", capabilities={"PlateReader.ReadPlate", "Sealer.Seal"})
    msg = str(info.value)
    assert "input 'nope', which is not declared" in msg
    assert "step 'c' does not run before 'b'" in msg
    assert "m.yaml:8: definition.steps[2].kind: no instrument of the workcell offers 'Robot.Move'" in msg
    assert "kind 'NotACapability' is neither a built-in" in msg


def test_export_reloads_identically(tmp_path):
    for name in ("elisa_readout.yaml", "dataset_build.json", "cell_culture_passage.yaml"):
        original = load_template(TEMPLATES / name)
        for suffix in (".yaml", ".json"):
            out = tmp_path / f"copy{suffix}"
            dump_template(original, out)
            assert load_template(out) == original, name


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsteps:\n  - id: a\n    kind: [unclosed\n")
    with pytest.raises(TemplateError, match=r"bad.yaml:\d+"):
        load_template(path)


def test_backoff_is_capped_with_jitter():
    p = RetryPolicy(max_attempts=10, initial_interval=1, backoff_multiplier=2, max_backoff=30, jitter=0.1)
    assert [round(p.delay(n, 0.5), 3) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert p.delay(3, 0.0) == pytest.approx(3.6) and p.delay(3, 0.999999) == pytest.approx(4.4, rel=1e-4)
