"""The editor's model side (no widgets): kind catalog, edits, layered layout, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.templates import InputParameter, Step, WorkflowTemplate, load_template
from core.workcell import load_workcell
from panels.editor import ops
from panels.editor.kinds import BUILTIN_GROUP, KindCatalog, humanize
from panels.editor.layout import NODE_HEIGHT, NODE_WIDTH, layered_layout, layers_of
from panels.editor.validation import errors, validate

ROOT = Path(__file__).resolve().parent.parent
DEMO = load_workcell(ROOT / "resources" / "workcells" / "demo.yaml")
TEMPLATES = ROOT / "resources" / "templates"


@pytest.fixture(scope="module")
def catalog() -> KindCatalog:
    return KindCatalog.from_workcell(DEMO)


def _t(*steps: dict, **fields) -> WorkflowTemplate:
    """A model as an editor may hold it: not necessarily one the loader accepts."""
    return WorkflowTemplate(name="T", steps=tuple(Step(**s) for s in steps), **fields)


def test_catalog_types_parameters_from_the_workcell(catalog):
    groups = [g for g, _ in catalog.groups()]
    assert groups[0] == BUILTIN_GROUP and "Plate reader" in groups and "Robot arm" in groups
    read = catalog.get("PlateReader.ReadPlate")
    assert read.title == "Read plate" and read.instruments == ("PlateReader1",)
    assert read.param("plate").type == "string" and read.param("plate_id").name == "plate"
    assert read.param("wavelength").type == "integer" and read.param("wavelength").unit == "nm"
    assert {"absorbance", "well_values", "Success"} <= set(read.output_names())
    spin = catalog.get("Centrifuge.Spin")
    assert spin.param("spin_time").type == "duration" and spin.param("duration").name == "spin_time"
    assert catalog.get("LiquidHandler.Transfer").instruments == ("LiquidHandler1", "LiquidHandler2")
    assert catalog.get("delay").param("seconds").required
    assert catalog.capabilities == DEMO.capabilities
    assert KindCatalog.from_workcell(None).capabilities is None
    required = KindCatalog.from_workcell(DEMO, required={"Sealer.Seal": ["plate"]})
    assert required.get("Sealer.Seal").param("plate").required
    assert humanize("MovePlate") == "Move plate" and humanize("PlateReader") == "Plate reader"


def test_edits_are_pure_and_keep_references_consistent(catalog):
    t = _t()
    t1, a = ops.add_step(t, "PlateReader.ReadPlate", (10.04, 20.0), catalog=catalog)
    t2, b = ops.add_step(t1, "PlateReader.ReadPlate", catalog=catalog)
    t3, c = ops.add_step(t2, "delay", catalog=catalog)
    assert (a, b, c) == ("read_plate", "read_plate_2", "delay") and t.steps == ()
    assert t3.step(a).position == (10.0, 20.0) and t3.step(c).parameters == {"seconds": 60.0}
    t4 = ops.add_dependency(ops.add_dependency(t3, a, b), b, c)
    with pytest.raises(ops.EditError):
        ops.add_dependency(t4, a, b)
    with pytest.raises(ops.EditError):
        ops.add_dependency(t4, a, a)
    t5 = ops.update_step(t4, c, condition=f"step_outputs['{b}']['Success']",
                         input_mapping={"seconds": f"step_outputs.{b}.temperature"})
    t5 = ops.set_error_handler(t5, b, a)
    t6 = ops.rename_step(t5, b, "read_again")
    assert t6.step(c).depends_on == ("read_again",)
    assert t6.step(c).condition == "step_outputs['read_again']['Success']"
    assert t6.step(c).input_mapping == {"seconds": "step_outputs.read_again.temperature"}
    assert t6.error_handlers == {"read_again": a}
    with pytest.raises(ops.EditError):
        ops.rename_step(t6, a, "read_again")
    with pytest.raises(ops.EditError):
        ops.rename_step(t6, a, "has space")
    t7 = ops.remove_steps(t6, {"read_again"})
    assert [s.id for s in t7.steps] == [a, c] and t7.step(c).depends_on == () and t7.error_handlers == {}
    assert any("read_again" in i.message for i in validate(t7, catalog)), "dangling mapping is shown"
    with pytest.raises(ValueError, match="greater than 0"):
        ops.update_step(t7, c, timeout=-1)
    assert ops.update_step(t7, c, timeout=None) is t7, "no change returns the same model"
    moved = ops.move_steps(t7, {a: (33.333, 1.0)})
    assert moved.step(a).position == (33.3, 1.0)
    assert ops.move_steps(moved, {a: (33.3, 1.0)}) is moved


def test_renaming_an_input_updates_mappings_and_conditions():
    t = _t({"id": "a", "kind": "noop", "input_mapping": {"p": "input_data.plate", "q": "context.x"},
            "condition": "input_data[ 'plate' ] != ''"},
           inputs=(InputParameter(name="plate"), InputParameter(name="volume")))
    r = ops.rename_input(t, "plate", "barcode")
    assert [p.name for p in r.inputs] == ["barcode", "volume"]
    assert r.step("a").input_mapping == {"p": "input_data.barcode", "q": "context.x"}
    assert r.step("a").condition == "input_data[ 'barcode' ] != ''"
    with pytest.raises(ops.EditError):
        ops.rename_input(r, "barcode", "volume")


def test_layered_layout_places_dependencies_above_and_never_overlaps():
    elisa = load_template(TEMPLATES / "elisa_readout.yaml")
    pos = layered_layout(elisa)
    assert set(pos) == {s.id for s in elisa.steps}
    for s in elisa.steps:
        for d in s.depends_on:
            assert pos[d][1] < pos[s.id][1], (d, s.id)
    boxes = sorted(pos.values())
    for i, (x, y) in enumerate(boxes):
        for x2, y2 in boxes[i + 1:]:
            assert abs(x - x2) >= NODE_WIDTH or abs(y - y2) >= NODE_HEIGHT
    layers = layers_of(elisa)
    assert layers["park_plate"] == layers["read"] + 1, "a handler sits below the step it handles"
    # a cycle still lays out (the closing edge is ignored)
    cyc = _t({"id": "a", "kind": "noop", "depends_on": ["b"]}, {"id": "b", "kind": "noop"})
    cyc = ops.add_dependency(cyc, "a", "b")
    assert set(layered_layout(cyc)) == {"a", "b"}


def test_validation_locates_loader_problems_and_catalog_problems(catalog):
    t = _t({"id": "a", "kind": "PlateReader.ReadPlate"},
           {"id": "b", "kind": "Sealer.Seal", "depends_on": ["a"]},
           {"id": "c", "kind": "Teleporter.Beam", "depends_on": ["b"]},
           {"id": "d", "kind": "noop", "condition": "step_outputs['a']['x'] >"},
           {"id": "e", "kind": "noop", "input_mapping": {"x": "step_outputs.a.no_such_output"},
            "depends_on": ["a"]},
           {"id": "w", "kind": "delay", "parameters": {}},
           {"id": "r", "kind": "PlateReader.ReadPlate", "parameters": {"wavelength": "blue"}})
    t = ops.add_dependency(t, "c", "a")  # a -> b -> c -> a
    issues = validate(t, catalog)
    cycle = next(i for i in issues if i.message.startswith("dependency cycle"))
    assert set(cycle.edges) == {("a", "b"), ("b", "c"), ("c", "a")}
    kind = next(i for i in issues if i.step_id == "c" and "Teleporter" in i.message)
    assert kind.severity == "error" and kind.location() == "step 'c' · kind"
    assert any(i.step_id == "d" and i.field == "condition" for i in issues)
    assert any(i.step_id == "w" and "delay step needs" in i.message for i in issues)
    mapping = next(i for i in issues if i.step_id == "e")
    assert mapping.severity == "warning" and "no output 'no_such_output'" in mapping.message
    typed = next(i for i in issues if i.step_id == "r")
    assert typed.severity == "warning" and "should be integer" in typed.message
    assert len(errors(issues)) == 4
    required = KindCatalog.from_workcell(DEMO, required={"Sealer.Seal": ["plate"]})
    fixed = _t({"id": "b", "kind": "Sealer.Seal"})
    assert [i.message for i in validate(fixed, required)] == [
        "required parameter 'plate' has no value and no mapping"]
    mapped = ops.update_step(fixed, "b", input_mapping={"plate_id": "context.plate"})
    assert validate(mapped, required) == [], "an alias mapping satisfies the requirement"
    assert validate(_t(), catalog)[0].message.startswith("the template has no steps")


def test_sample_templates_validate_against_the_demo_workcell(catalog):
    for path in sorted(TEMPLATES.iterdir()):
        t = load_template(path)
        assert errors(validate(t, catalog)) == [], path.name
