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


@pytest.mark.parametrize(("text", "where", "what"), [
    ("name: x\ntasks:\n  - name: a\n    run: noop\n    retries: three\n",
     "t.yaml:5: tasks[0].retries", "must be a number of retries (0..99), got 'three'"),
    ("name: x\nconfig: {retries: lots}\ntasks:\n  - name: a\n    run: noop\n",
     "t.yaml:2: config.retries", "got 'lots'"),
    ("name: x\nsteps:\n  - name: a\n    task_type: noop\n    max_retries: '-1'\n",
     "t.yaml:5: steps[0].max_retries", "must be 0..99, got -1"),
    ("name: x\nsteps:\n  - {id: a, kind: noop, depends_on: 5}\n",
     "t.yaml:3: steps[0].depends_on", "must be a list of step ids (or one), got int 5"),
    ("name: x\ntasks:\n  - name: [a, b]\n    run: noop\n", "t.yaml:3: tasks[0].name", "valid string"),
    ("name: x\ntasks:\n  - name: a\n    on_complete: 5\n", "t.yaml:4: tasks[0].on_complete", "got int 5"),
    ("name: x\ntags: 5\nsteps:\n  - {id: a, kind: noop}\n", "t.yaml:2: tags", "got int 5"),
    ("name: x\nsteps:\n  - name: a\n    task_type: noop\n    dependencies: 5\n",
     "t.yaml:5: steps[0].dependencies[0]", "dependency 5 is not the index of a step"),
    ("name: x\nsteps:\n  - {id: a, kind: noop, retry_policy: {non_retryable: 5}}\n",
     "t.yaml:3: steps[0].retry_policy.non_retryable", "got int 5"),
    ("name: x\nsteps:\n  - 7\n  - {id: a, kind: noop}\n  - {id: b, kind: nope}\n",
     "t.yaml:5: steps[2].kind", "kind 'nope' is neither"),  # the step after a non-mapping one
    ("name: x\nconfig: {schedule: '0 0 30 2 *'}\ntasks:\n  - name: a\n    run: noop\n",
     "t.yaml:2: config.schedule", "'0 0 30 2 *': never fires"),
    ("name: x\nschedule: '0 0 31 4 *'\nsteps:\n  - {id: a, kind: noop}\n",
     "t.yaml:2: schedule", "never fires"),
])
def test_wrong_types_are_located_problems_not_crashes(text, where, what):
    with pytest.raises(TemplateError) as info:
        parse_template(text, "t.yaml")
    assert any(where in line and what in line for line in str(info.value).splitlines()), str(info.value)


def test_one_dependency_may_be_written_as_a_plain_id():
    t = parse_template("name: x\nsteps:\n  - {id: validate, kind: noop}\n"
                       "  - {id: process, kind: noop, depends_on: validate}\n")
    assert t.step("process").depends_on == ("validate",)
    assert parse_template("name: x\ntasks:\n  - {name: a, run: noop, on_complete: b, retries: null}\n"
                          "  - {name: b, run: noop}\n").step("b").depends_on == ("a",)


def test_a_wrong_type_does_not_hide_the_other_problems():
    text = """name: x
definition:
  steps:
    - {id: a, kind: noop, timeout_seconds: [1], colour: red}
    - {id: b, kind: noop, depends_on: [ghost], retry_policy: {max_attempts: many}}
    - {id: c, kind: Bad, condition: "nope > 1", idempotent: maybe}
"""
    with pytest.raises(TemplateError) as info:
        parse_template(text, "t.yaml")
    lines = str(info.value).splitlines()[1:]
    expected = [("steps[0].timeout_seconds", "unparsable duration"), ("steps[0].colour", "unknown key"),
                ("steps[1].retry_policy.max_attempts", "valid integer"),
                ("steps[1].depends_on[0]", "unknown step 'ghost'"), ("steps[2].idempotent", "valid boolean"),
                ("steps[2].kind", "neither a built-in"), ("steps[2].condition", "unknown name 'nope'")]
    for where, what in expected:
        assert any(where in line and what in line for line in lines), (where, what, lines)
    assert len(lines) == len(expected), lines


def test_aliases_that_expand_without_bound_are_refused_at_once(tmp_path):
    lol = ["name: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i, anchor in enumerate("bcdefghi"):
        prev = "a" if i == 0 else "bcdefghi"[i - 1]
        lol.append(f"{anchor}: &{anchor} [{', '.join([f'*{prev}'] * 9)}]")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lol) + "\n")
    with pytest.raises(TemplateError, match=r"laughs.yaml:2: more than 100000 values once aliases"):
        load_template(path)
    path.write_text("name: x\nsteps: &s\n  - {id: a, kind: noop, parameters: {again: *s}}\n")
    with pytest.raises(TemplateError, match=r"an alias refers to a mapping or list that contains it"):
        load_template(path)


def test_small_aliases_still_work():
    t = parse_template("name: x\ndefinition:\n  default_retry_policy: &r {max_attempts: 3}\n  steps:\n"
                       "    - {id: a, kind: noop, retry_policy: *r}\n    - {id: b, kind: noop, retry_policy: *r}\n")
    assert t.step("b").retry_policy.max_attempts == 3 == t.default_retry_policy.max_attempts


def test_deep_nesting_and_huge_files_are_refused(tmp_path):
    deep = "name: x\nsteps:\n  - {id: a, kind: noop, parameters: {p: " + "[" * 200 + "]" * 200 + "}}\n"
    with pytest.raises(TemplateError, match=r"t.yaml:3: nested deeper than 64 levels"):
        parse_template(deep, "t.yaml")
    with pytest.raises(TemplateError, match=r"nested deeper than 64 levels"):
        parse_template('{"name": "x", "steps": ' + "[" * 5000 + "]" * 5000 + "}", "t.json")
    big = tmp_path / "big.yaml"
    big.write_text("name: x\ndescription: '" + "x" * 1_000_001 + "'\n")
    with pytest.raises(TemplateError, match=r"big.yaml: file is larger than 1000000 bytes"):
        load_template(big)


def test_execution_mode_survives_export(tmp_path):
    t = parse_template("name: x\nsteps:\n  - {id: a, kind: noop, execution_mode: parallel}\n")
    out = tmp_path / "copy.yaml"
    dump_template(t, out)
    assert load_template(out).step("a").execution_mode == "parallel"
