"""Template diff: steps, edges, parameters, timeouts, retry policies and workflow settings."""

from __future__ import annotations

from pathlib import Path

from core.template_diff import Change, diff_templates, format_value
from core.templates import (
    FailurePolicy,
    InputParameter,
    ParameterType,
    RetryPolicy,
    load_template,
    template_from_dict,
)

TEMPLATES = Path(__file__).resolve().parent.parent / "resources" / "templates"

BASE = {"name": "Assay", "inputs": [{"name": "plate", "type": "string"}], "definition": {
    "default_timeout_seconds": 3600, "failure_policy": "abort",
    "steps": [
        {"id": "move", "kind": "RobotArm.MovePlate", "parameters": {"source": "Hotel"},
         "position": [0, 0]},
        {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["move"],
         "input_mapping": {"plate": "input_data.plate"}, "timeout_seconds": 600,
         "retry_policy": {"max_attempts": 2}},
        {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"]},
        {"id": "log", "kind": "noop", "depends_on": ["read"]},
    ]}}


def _t(data=BASE, version=1, **changes):
    t = template_from_dict(data).model_copy(update={"version": version})
    return t.model_copy(update=changes) if changes else t


def _edit_step(t, step_id, **changes):
    return t.model_copy(update={"steps": tuple(s.model_copy(update=changes) if s.id == step_id else s
                                               for s in t.steps)})


def test_identical_versions_have_no_differences():
    d = diff_templates(_t(), _t(version=2))
    assert d.is_empty and d.lines() == [] and d.summary() == "no changes"
    assert (d.old_version, d.new_version) == (1, 2)


def test_added_removed_and_changed_steps_and_edges():
    old = _t()
    new = _t(version=2)
    new = new.model_copy(update={"steps": tuple(s for s in new.steps if s.id != "log")})
    new = _edit_step(new, "read", timeout=900.0, parameters={"wavelength": 450},
                     retry_policy=RetryPolicy(max_attempts=5, initial_interval=3.0),
                     input_mapping={"plate": "input_data.plate", "wl": "input_data.plate"})
    new = _edit_step(new, "seal", depends_on=("move", "read"), condition="True")
    spin = template_from_dict({"name": "x", "definition": {"steps": [
        {"id": "spin", "kind": "Centrifuge.Spin", "depends_on": []}]}}).steps[0]
    new = new.model_copy(update={"steps": (*new.steps, spin.model_copy(update={"depends_on": ("seal",)}))})

    d = diff_templates(old, new)
    assert d.added_steps == ("spin",)
    assert d.removed_steps == ("log",)
    assert [s.step_id for s in d.changed_steps] == ["read", "seal"]
    read = {c.path: c for c in d.step_changes("read")}
    assert read["timeout"] == Change("timeout", 600.0, 900.0)
    assert read["parameters.wavelength"].kind == "added"
    assert read["input_mapping.wl"] == Change("input_mapping.wl", None, "input_data.plate")
    assert read["retry_policy.max_attempts"] == Change("retry_policy.max_attempts", 2, 5)
    assert read["retry_policy.initial_interval"] == Change("retry_policy.initial_interval", 1.0, 3.0)
    assert "input_mapping.plate" not in read, "unchanged mappings are not reported"
    assert d.step_changes("seal") == (Change("condition", None, "True"),)
    assert set(d.added_edges) == {("move", "seal"), ("seal", "spin")}
    assert d.removed_edges == (("read", "log"),)
    assert d.step_status("spin") == "added" and d.step_status("log") == "removed"
    assert d.step_status("read") == "changed" and d.step_status("move") == "unchanged"
    assert d.edge_status(("move", "seal")) == "added" and d.edge_status(("move", "read")) == "unchanged"
    assert d.summary() == "1 step added, 1 step removed, 2 steps changed, 3 dependencies changed"
    lines = d.lines()
    assert "+ step spin" in lines and "- step log" in lines
    assert "~ step read: timeout: 600 → 900" in lines
    assert "~ step read: retry_policy.max_attempts: 2 → 5" in lines
    assert "+ dependency move → seal" in lines and "- dependency read → log" in lines


def test_retry_policy_set_or_cleared_is_one_change():
    old = _t()
    new = _edit_step(_t(version=2), "read", retry_policy=None)
    (change,) = diff_templates(old, new).step_changes("read")
    assert change.path == "retry_policy" and change.kind == "removed"
    assert change.describe() == "retry_policy: removed (was 2 attempts, 1 s × 2 (max 300 s))"
    back = diff_templates(new, old).step_changes("read")
    assert back[0].kind == "added"


def test_workflow_settings_inputs_and_error_handlers():
    old = _t()
    new = _t(version=2, failure_policy=FailurePolicy.PAUSE, default_timeout=None,
             error_handlers={"read": "log"}, tags=("elisa",),
             inputs=(InputParameter(name="plate", type=ParameterType.STRING, required=False),
                     InputParameter(name="wavelength", type=ParameterType.INTEGER, default=450)),
             default_retry_policy=RetryPolicy(max_attempts=3))
    d = diff_templates(old, new)
    changes = {c.path: c for c in d.workflow_changes}
    assert changes["failure_policy"].describe() == "failure_policy: abort → pause"
    assert changes["default_timeout"].describe() == "default_timeout: removed (was 3600)"
    assert changes["error_handlers.read"] == Change("error_handlers.read", None, "log")
    assert changes["tags"].new == ("elisa",)
    assert changes["inputs.plate.required"] == Change("inputs.plate.required", True, False)
    assert changes["inputs.wavelength"].kind == "added"
    assert changes["default_retry_policy.max_attempts"] == Change("default_retry_policy.max_attempts", 1, 3)
    assert not d.changed_steps and not d.added_edges
    assert d.summary() == "7 workflow settings changed"


def test_a_move_on_the_canvas_is_not_a_change():
    old = _t()
    new = _edit_step(_t(version=2), "move", position=(120.0, 40.0))
    d = diff_templates(old, new)
    assert d.is_empty and d.moved_steps == ("move",)
    assert d.summary() == "no changes (layout only)"


def test_sample_templates_diff_against_each_other_without_error():
    elisa = load_template(TEMPLATES / "elisa_readout.yaml")
    passage = load_template(TEMPLATES / "cell_culture_passage.yaml")
    d = diff_templates(elisa, passage)
    assert set(d.added_steps) == {s.id for s in passage.steps}
    assert set(d.removed_steps) == {s.id for s in elisa.steps}
    assert ("to_reader", "read") in d.removed_edges
    assert len(d.lines()) >= 10


def test_format_value():
    assert format_value(None) == "—" and format_value(True) == "yes" and format_value(600.0) == "600"
    assert format_value(FailurePolicy.PAUSE) == "pause" and format_value(("a", "b")) == "a, b"
    assert format_value({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
