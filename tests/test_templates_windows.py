"""Time constraints in templates: start windows between steps, minimum delays, run deadlines, in
the three file dialects and the seeds' Python APIs; impossible ones are refused with
file:line: field."""

from __future__ import annotations

import textwrap

import pytest

from core.compat.seed002 import WorkflowDefinition, WorkflowStep
from core.compat.seed004 import Task, TaskConfig, Workflow, WorkflowConfig, _workflows
from core.errors import InputError, TemplateError
from core.templates import Window, dump_template, load_template, parse_template


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _rejected(path) -> list[str]:
    with pytest.raises(TemplateError) as info:
        load_template(path)
    return [str(p) for p in info.value.problems]


DEFINITION = """\
    name: Thaw and read
    definition:
      deadline: 2h
      steps:
        - {id: thaw, kind: Incubator.Incubate}
        - id: decap
          kind: Decapper.Decap
          depends_on: [thaw]
          start_within: {after: thaw, max: 10m, min: 1m}
        - id: read
          kind: PlateReader.ReadPlate
          depends_on: decap
          min_delay: 5m
    """


def test_native_dialect_loads_windows_and_deadline_and_writes_them_back(tmp_path):
    t = load_template(_write(tmp_path, "t.yaml", DEFINITION))
    assert t.deadline == 7200
    assert t.step("decap").start_within == Window(after="thaw", min=60, max=600)
    # min_delay alone counts from the only dependency and has no upper bound
    assert t.step("read").start_within == Window(after="decap", min=300, max=None)
    assert t.step("thaw").start_within is None
    for suffix in ("yaml", "json"):
        out = tmp_path / f"back.{suffix}"
        dump_template(t, out)
        assert load_template(out) == t


def test_job_orchestrator_dialect_names_the_earlier_step_by_index(tmp_path):
    path = _write(tmp_path, "jo.yaml", """\
        name: Dataset
        deadline: 30m
        steps:
          - {name: Download, task_type: noop}
          - {name: Parse, task_type: noop, dependencies: [0], start_within: {after: 0, max: 2m}}
          - {name: Load, task_type: noop, dependencies: [1], min_delay: {after: parse, delay: 30s}}
        """)
    t = load_template(path)
    assert t.deadline == 1800
    assert t.step("parse").start_within == Window(after="download", max=120)
    assert t.step("load").start_within == Window(after="parse", min=30)


def test_moose_dialect_reads_windows_on_tasks_and_the_deadline_in_config(tmp_path):
    path = _write(tmp_path, "moose.yaml", """\
        name: Etl
        config: {starting_task: extract, deadline: 1h}
        tasks:
          - {name: extract, run: noop, on_complete: [transform]}
          - {name: transform, run: noop, start_within: {after: extract, max: "90s"}, on_complete: [load]}
          - {name: load, run: noop, min_delay: "10s"}
        """)
    t = load_template(path)
    assert t.deadline == 3600
    assert t.step("transform").start_within == Window(after="extract", max=90)
    assert t.step("load").start_within == Window(after="transform", min=10)


def test_impossible_windows_are_refused_naming_file_line_and_field(tmp_path):
    path = _write(tmp_path, "bad.yaml", """\
        name: Bad
        definition:
          steps:
            - {id: thaw, kind: noop}
            - id: decap
              kind: noop
              depends_on: [thaw]
              start_within: {after: thaw, max: 1m, min: 5m}
            - id: read
              kind: noop
              depends_on: [decap]
              start_within: {after: thwa, max: 10m}
            - id: seal
              kind: noop
              start_within: {after: decap, max: 10m}
            - id: spin
              kind: noop
              depends_on: [thaw]
              start_within: {after: thaw, max: 10 minutes please}
            - id: wash
              kind: noop
              depends_on: [thaw, decap]
              min_delay: 5m
        """)
    problems = _rejected(path)
    text = "\n".join(problems)
    assert "bad.yaml:8: definition.steps[1].start_within.max: max 1m is less than the minimum delay 5m" in text
    assert ("bad.yaml:12: definition.steps[2].start_within.after: the window counts from unknown step 'thwa' "
            "(did you mean 'thaw'?)") in text
    assert "bad.yaml:15: definition.steps[3].start_within.after: step 'decap' does not run before 'seal'" in text
    assert "bad.yaml:19: definition.steps[4].start_within.max: unparsable duration" in text
    assert "bad.yaml:23: definition.steps[5].min_delay: min_delay needs the step it counts from" in text
    assert len(problems) == 5, text


def test_window_problems_point_at_min_delay_where_the_file_wrote_it(tmp_path):
    path = _write(tmp_path, "delay.yaml", """\
        name: Delay
        steps:
          - {name: A, task_type: noop}
          - name: B
            task_type: noop
            dependencies: [0]
            min_delay: {after: zz, delay: 1m}
          - {name: C, task_type: noop, dependencies: [1], start_within: {after: 7, max: 1m}}
        """)
    text = "\n".join(_rejected(path))
    assert "delay.yaml:7: steps[1].min_delay.after: the window counts from unknown step 'zz'" in text
    assert "delay.yaml:8: steps[2].start_within.after: after 7 is neither the index of a step (0..2)" in text


def test_a_deadline_shorter_than_the_least_the_run_takes_is_refused(tmp_path):
    path = _write(tmp_path, "late.yaml", """\
        name: Late
        config: {starting_task: a, deadline: 10m}
        tasks:
          - {name: a, run: noop, on_complete: [b]}
          - {name: b, run: noop, min_delay: 8m, on_complete: [c]}
          - {name: c, run: noop, min_delay: {after: b, delay: 4m}}
        """)
    text = "\n".join(_rejected(path))
    assert "late.yaml:2: config.deadline: deadline 10m cannot hold: a -> b -> c takes at least 12m" in text


def test_a_window_without_bounds_or_after_is_refused():
    with pytest.raises(TemplateError) as info:
        parse_template("name: X\nsteps:\n  - {id: a, kind: noop}\n  - {id: b, kind: noop, depends_on: a,"
                       " start_within: {max: 1m}}\n  - {id: c, kind: noop, depends_on: a,"
                       " start_within: {after: a}}\n", "w.yaml")
    text = "\n".join(str(p) for p in info.value.problems)
    assert "w.yaml:4: steps[1].start_within: missing field 'after'" in text
    assert "w.yaml:5: steps[2].start_within: start_within needs max" in text


def _noop(x=None):
    return x


def test_seed_002_steps_declare_windows_by_index_and_a_deadline():
    steps = [WorkflowStep("Thaw", "t", _noop), WorkflowStep("Decap", "d", _noop, dependencies=[0],
                                                           start_within={"after": 0, "max": "10m"}),
             WorkflowStep("Read", "r", _noop, dependencies=[1], min_delay=30)]
    t = WorkflowDefinition("Windows 002", steps, deadline="1h").to_template()
    assert t.deadline == 3600
    assert t.step("decap").start_within == Window(after="thaw", max=600)
    assert t.step("read").start_within == Window(after="decap", min=30)
    bad = [steps[0], WorkflowStep("Decap", "d", _noop, dependencies=[0], start_within={"after": 5, "max": 60})]
    with pytest.raises(InputError, match=r"start_within after 5 is not the index"):
        WorkflowDefinition("Windows 002b", bad).to_template()


def test_seed_004_tasks_declare_windows_and_the_workflow_a_deadline():
    read = Task(name="read", config=TaskConfig(run=_noop, min_delay="2m"))
    decap = Task(name="decap", config=TaskConfig(run=_noop, on_complete=[read]))
    thaw = Task(name="thaw", config=TaskConfig(run=_noop, on_complete=[decap]))
    decap.config.start_within = {"after": thaw, "max": "5m", "min": "1m"}
    try:
        t = Workflow("windows-004", WorkflowConfig(starting_task=thaw, deadline="45m")).to_template()
        assert t.deadline == 2700
        assert t.step("decap").start_within == Window(after="thaw", min=60, max=300)
        assert t.step("read").start_within == Window(after="decap", min=120)
        decap.config.start_within = {"after": thaw, "max": "1m", "min": "5m"}
        with pytest.raises(TemplateError, match="max 1m is less than the minimum delay 5m"):
            Workflow("windows-004b", WorkflowConfig(starting_task=thaw)).to_template()
    finally:
        _workflows.pop("windows-004", None)
        _workflows.pop("windows-004b", None)


def test_editor_edits_keep_windows_pointing_at_the_right_step(tmp_path):
    from panels.editor import ops

    t = load_template(_write(tmp_path, "t.yaml", DEFINITION))
    renamed = ops.rename_step(t, "thaw", "warm")
    assert renamed.step("decap").start_within == Window(after="warm", min=60, max=600)
    removed = ops.remove_steps(renamed, {"decap"})
    assert removed.step("read").start_within is None  # its window counted from the removed step
    assert ops.remove_steps(t, {"read"}).step("decap").start_within == Window(after="thaw", min=60, max=600)
