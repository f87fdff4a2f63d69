"""The Templates panel over a real runtime (demo workcell, virtual clock) on the qasync loop:
list, open, drag-and-drop editing, publish, versions and their runs, diff, export/import, Run…."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from conftest import save_screenshot as _save_screenshot
from PySide6.QtCore import QPointF, Qt, QTimer
from test_gui_editor import drop_kind, mouse_drag

from console.app import settings_for
from console.main_window import MainWindow
from core.clock import VirtualClock
from core.engine import RunStatus
from core.runtime import DEMO_WORKCELL, SAMPLE_TEMPLATES, Runtime
from core.templates import load_template, template_from_dict
from panels.templates import TemplatesPanel

# A realistic 15-step template: two plates prepared in parallel, read, compared, reviewed.
VIABILITY = {
    "name": "Dual-plate viability assay",
    "description": "Seed two plates, incubate, read both and compare.",
    "tags": ["viability", "screening"],
    "inputs": [{"name": "plate_a", "type": "string", "description": "Barcode of plate A"},
               {"name": "plate_b", "type": "string", "description": "Barcode of plate B"},
               {"name": "incubation_s", "type": "double", "default": 86400, "required": False}],
    "definition": {
        "default_timeout_seconds": 172800, "failure_policy": "pause",
        "steps": [
            {"id": "decap", "name": "Decap compound tubes", "kind": "Decapper.Decap",
             "timeout_seconds": 120},
            {"id": "plate_a_in", "name": "Plate A to liquid handler", "kind": "RobotArm.MovePlate",
             "parameters": {"source": "Hotel 1", "destination": "Deck A"},
             "input_mapping": {"plate": "input_data.plate_a"},
             "retry_policy": {"max_attempts": 3}},
            {"id": "plate_b_in", "name": "Plate B to liquid handler", "kind": "RobotArm.MovePlate",
             "parameters": {"source": "Hotel 2", "destination": "Deck B"},
             "input_mapping": {"plate": "input_data.plate_b"},
             "retry_policy": {"max_attempts": 3}},
            {"id": "equilibrate", "name": "Equilibrate reagent", "kind": "delay",
             "parameters": {"seconds": 600}, "depends_on": ["decap"]},
            {"id": "seed_a", "name": "Seed cells, plate A", "kind": "LiquidHandler.Transfer",
             "parameters": {"volume_ul": 100}, "depends_on": ["decap", "plate_a_in"],
             "timeout_seconds": 600},
            {"id": "seed_b", "name": "Seed cells, plate B", "kind": "LiquidHandler.Transfer",
             "parameters": {"volume_ul": 100}, "depends_on": ["decap", "plate_b_in"],
             "timeout_seconds": 600},
            {"id": "seal_a", "name": "Seal plate A", "kind": "Sealer.Seal", "depends_on": ["seed_a"],
             "input_mapping": {"plate": "input_data.plate_a"}},
            {"id": "seal_b", "name": "Seal plate B", "kind": "Sealer.Seal", "depends_on": ["seed_b"],
             "input_mapping": {"plate": "input_data.plate_b"}},
            {"id": "incubate_a", "name": "Incubate plate A", "kind": "Incubator.Incubate",
             "parameters": {"temperature": 37}, "depends_on": ["seal_a", "equilibrate"],
             "input_mapping": {"duration": "input_data.incubation_s"}},
            {"id": "incubate_b", "name": "Incubate plate B", "kind": "Incubator.Incubate",
             "parameters": {"temperature": 37}, "depends_on": ["seal_b", "equilibrate"],
             "input_mapping": {"duration": "input_data.incubation_s"}},
            {"id": "read_a", "name": "Read plate A", "kind": "PlateReader.ReadPlate",
             "parameters": {"wavelength": 560}, "depends_on": ["incubate_a"],
             "input_mapping": {"plate": "input_data.plate_a"}, "timeout_seconds": 600,
             "retry_policy": {"max_attempts": 2, "initial_interval": 5}},
            {"id": "read_b", "name": "Read plate B", "kind": "PlateReader.ReadPlate",
             "parameters": {"wavelength": 560}, "depends_on": ["incubate_b"],
             "input_mapping": {"plate": "input_data.plate_b"}, "timeout_seconds": 600,
             "retry_policy": {"max_attempts": 2, "initial_interval": 5}},
            {"id": "compare", "name": "Compare plates", "kind": "noop", "depends_on": ["read_a", "read_b"],
             "input_mapping": {"a": "step_outputs.read_a.absorbance",
                               "b": "step_outputs.read_b.absorbance"}},
            {"id": "review", "name": "Review outliers", "kind": "prompt", "depends_on": ["compare"],
             "condition": "step_outputs['read_a']['absorbance'] > 2.5",
             "parameters": {"message": "Absorbance out of range: check plate A"}},
            {"id": "store", "name": "Store plates", "kind": "Incubator.Load", "depends_on": ["compare"]},
        ]},
}


SAMPLES = ("elisa_readout.yaml", "dataset_build.json", "cell_culture_passage.yaml")


def sample_dir(tmp: Path) -> Path:
    """The three sample templates (one per dialect) in a directory of their own."""
    out = tmp / "templates"
    out.mkdir()
    for name in SAMPLES:
        shutil.copy(SAMPLE_TEMPLATES / name, out / name)
    return out


def save_screenshot(widget, name: str) -> Path:
    """Let pending layout and paint events run first, then grab."""
    from PySide6.QtWidgets import QApplication

    for _ in range(3):
        QApplication.processEvents()
    return _save_screenshot(widget, name)


def boot(qrun, store, data_dir, *, templates: Path | None = None):
    """A runtime over the demo workcell on a virtual clock, started on the qasync loop."""
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=DEMO_WORKCELL, seed=7)

    async def start():
        task = asyncio.ensure_future(rt.start(templates_dir=templates))
        await clock.run_until(task.done, step=0.5)  # instruments take virtual seconds to connect
        await task
        await clock.settle()

    qrun(start())
    return rt, clock


@pytest.fixture
def env(qtbot, qrun, store, data_dir, tmp_path):
    rt, clock = boot(qrun, store, data_dir, templates=sample_dir(tmp_path))
    panel = TemplatesPanel(rt, None)
    qtbot.addWidget(panel)
    panel.resize(1600, 980)
    panel.show()
    qtbot.waitExposed(panel)
    yield panel, rt, clock
    panel.shutdown()
    assert [t.objectName() for t in panel.findChildren(QTimer) if t.isActive()] == []
    panel.close()
    qrun(rt.close())


def test_list_open_edit_publish_and_versions(env, qrun, qtbot):
    panel, rt, clock = env
    qtbot.waitUntil(lambda: panel.list_model.rowCount() == 3)  # loaded when shown
    rows = {r.name: r for r in panel.list_model.rows()}
    assert set(rows) == {"ELISA Readout", "Plate Replication", "Cell Culture Passage"}
    assert rows["ELISA Readout"].tags == ("elisa", "readout") and rows["ELISA Readout"].latest == 1
    row = panel.list_model.row_of("ELISA Readout")
    assert panel.list_model.index(row, 3).data() == "never"

    # double-click opens the latest version, read-only
    index = panel.list_model.index(row, 0)
    panel.list.doubleClicked.emit(index)
    qtbot.waitUntil(lambda: panel.editor.document.template.name == "ELISA Readout")
    editor, doc = panel.editor, panel.editor.document
    assert not doc.is_draft and not panel.publish_action.isEnabled() and panel.run_action.isEnabled()
    assert "v1 · published, read-only" in editor.banner.text()

    # edit by drag and drop: a delay after 'seal', linked port to port
    drop_kind(editor, "delay", editor.view.mapFromScene(QPointF(900, 700)))
    view = editor.view
    mouse_drag(view.viewport(), view.scene_point("seal", "out"), view.scene_point("delay", "centre"))
    assert doc.template.step("delay").depends_on == ("seal",)
    assert doc.is_draft and "draft of v2 (from v1)" in editor.banner.text()
    assert panel.publish_action.isEnabled() and not panel.run_action.isEnabled()

    published = qrun(panel.publish())
    assert published.version == 2 and not doc.is_draft and doc.published is published
    assert rt.engine.templates.get("ELISA Readout", 1).steps == load_template(
        SAMPLE_TEMPLATES / "elisa_readout.yaml").steps, "the published v1 never changes"
    assert rt.engine.templates.get("ELISA Readout", 2).step("delay").depends_on == ("seal",)
    assert panel.message.text() == "Published ELISA Readout v2"
    assert panel.list_model.index(panel.list_model.row_of("ELISA Readout"), 1).data() == "v2 (2)"
    assert [r.version for r in panel.versions_model.rows()] == [2, 1]

    # opening the old version and editing it drafts the next one (v3), not a change of v1
    qrun(panel.open_template("ELISA Readout", 1))
    assert "v1 · published, read-only" in editor.banner.text() and "latest is v2" in editor.banner.text()
    editor.select_step("seal")
    editor.inspector.step.timeout.box.setValue(240)
    assert "draft of v3 (from v1)" in editor.banner.text()
    # undo to the published content: v1 again, nothing to publish
    editor.undo_action.trigger()
    assert not doc.is_draft and qrun(panel.publish()) is None

    # deleting and undoing comes back to the published version
    qrun(panel.open_template("ELISA Readout", 2))
    editor.select_step("delay")
    editor.delete_selection()
    assert doc.is_draft
    editor.undo_action.trigger()
    assert not doc.is_draft

    # a new name makes another template: its first version is v1
    editor.select_step(None)
    editor.inspector.workflow.name.setText("ELISA Readout (fast)")
    editor.inspector.workflow.name.editingFinished.emit()
    qtbot.waitUntil(lambda: "new template — publishing makes v1" in editor.banner.text()
                    or "draft of v1" in editor.banner.text())
    assert panel.publish_action.text() == "Publish v1"
    fast = qrun(panel.publish())
    assert (fast.name, fast.version) == ("ELISA Readout (fast)", 1)
    assert panel.message.text() == "Published ELISA Readout (fast) v1"
    assert "v1 · published" in editor.banner.text()


def test_problems_block_publishing(env, qrun, qtbot):
    panel, rt, _clock = env
    panel.new_template()
    editor = panel.editor
    assert not panel.publish_action.isEnabled(), "an empty template cannot be published"
    assert editor.status.text().startswith("✕  1 problem")
    a = editor.add_step("Sealer.Seal", QPointF(0, 0))
    b = editor.add_step("PlateReader.ReadPlate", QPointF(0, 200))
    editor.link(a, b)
    editor.link(b, a)
    assert not panel.publish_action.isEnabled()
    assert qrun(panel.publish()) is None
    assert panel.last_error.startswith("Cannot publish: 1 problem")
    assert "New workflow" not in rt.engine.templates.names()
    editor.undo_action.trigger()
    assert panel.publish_action.isEnabled()
    assert qrun(panel.publish()).version == 1
    assert "New workflow" in rt.engine.templates.names()


def test_diff_two_versions_on_the_graph_and_in_the_list(env, qrun, qtbot):
    panel, rt, _clock = env
    qrun(panel.reload())
    qrun(panel.open_template("ELISA Readout"))
    editor = panel.editor
    editor.select_step("read")
    editor.inspector.step.timeout.box.setValue(900)
    editor.inspector.step.retry.attempts.setValue(4)
    editor.select_step("notify")
    editor.delete_selection()
    editor.add_step("PlateReader.Shake", QPointF(400, 0))
    editor.link("to_reader", "shake")
    editor.link("shake", "read")
    qrun(panel.publish())

    diff = qrun(panel.compare(1, 2))
    save_screenshot(panel, "templates-diff")
    assert panel.tabs.currentWidget() is panel.diff_view
    assert diff.added_steps == ("shake",) and diff.removed_steps == ("notify",)
    assert [d.step_id for d in diff.changed_steps] == ["read"]
    assert {c.path for c in diff.step_changes("read")} == {"timeout", "retry_policy.max_attempts"}
    assert set(diff.added_edges) == {("to_reader", "shake"), ("shake", "read")}
    assert diff.removed_edges == (("read", "notify"),)
    scene = panel.diff_view.scene
    assert scene.nodes["shake"].mark.status == "added"
    assert scene.nodes["notify"].mark.status == "removed", "removed steps are still drawn"
    assert scene.nodes["read"].mark.details == ["retry_policy.max_attempts: 2 → 4", "timeout: 600 → 900"]
    assert scene.nodes["seal"].mark is None
    assert scene.edge("read", "notify").mark == "removed" and scene.edge("shake", "read").mark == "added"
    texts = panel.diff_view.changes.texts()
    assert "~ read: timeout: 600 → 900" in texts and "− dependency read → notify" in texts
    assert panel.diff_view.summary.text() == ("v1 → v2: 1 step added, 1 step removed, 1 step changed, "
                                              "3 dependencies changed")
    # the pickers offer every version; comparing with the editor's draft works too
    combo = panel.diff_view.old_combo
    assert [combo.itemData(i) for i in range(combo.count())] == [1, 2]
    editor.select_step("store")
    editor.delete_selection()
    diff = qrun(panel.compare(2, "draft"))
    assert diff.removed_steps == ("store",)
    panel.diff_view.list.clicked.emit(panel.diff_view.changes.index(0))
    assert panel.diff_view.scene.selected_step_ids() == ["store"]
    assert (panel.diff_view.old_combo.currentData(), panel.diff_view.new_combo.currentData()) == (2, "draft")


def test_export_and_reimport_reload_identically(env, qrun, tmp_path):
    panel, rt, _clock = env
    qrun(panel.reload())
    qrun(panel.open_template("Plate Replication"))
    editor = panel.editor
    editor.auto_layout()
    editor.select_step("spin_down")
    editor.inspector.step.condition.setText("input_data['spin'] == True")
    editor.inspector.step.condition.editingFinished.emit()
    editor.select_step(None)
    panel.editor.inspector.workflow.add_input.click()
    model = panel.editor.inspector.workflow.inputs_model
    model.setData(model.index(0, 0), "spin")
    model.setData(model.index(0, 1), "boolean")
    published = qrun(panel.publish())
    assert published.version == 2

    for suffix in ("yaml", "json"):
        path = qrun(panel.export_file(tmp_path / f"replication.{suffix}"))
        again = load_template(path, capabilities=rt.workcell.capabilities)
        assert again == published, suffix
    imported = qrun(panel.import_file(tmp_path / "replication.json"))
    assert imported == published.model_copy(update={"version": 2})
    doc = panel.editor.document
    assert doc.is_draft and doc.template.content_hash() == published.content_hash()
    assert qrun(panel.publish()).version == 2, "identical content is not a new version"
    assert panel.message.text().startswith("Identical to Plate Replication v2")

    # a file without positions (another dialect) is laid out on import
    passage = qrun(panel.import_file(SAMPLE_TEMPLATES / "cell_culture_passage.yaml"))
    ys = [passage.step(s).position[1] for s in ("decap", "aspirate", "dispense", "incubate")]
    assert ys == sorted(ys) and len(set(ys)) == 4
    # a broken file is refused with its problems in the message line
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Broken\ndefinition:\n  steps:\n    - id: a\n      kind: noop\n      depends_on: [zz]\n")
    task = panel._spawn(panel.import_file(bad), "import")
    qrun(asyncio.wait([task]))
    assert "Import failed" in panel.last_error and "unknown step 'zz'" in panel.last_error


def test_run_form_starts_a_run_that_completes_on_the_simulated_workcell(env, qrun, qtbot):
    panel, rt, clock = env
    panel.new_template()
    editor = panel.editor
    for kind, y in (("RobotArm.MovePlate", 60), ("PlateReader.ReadPlate", 260), ("Sealer.Seal", 460)):
        drop_kind(editor, kind, editor.view.mapFromScene(QPointF(300, y)))
    view = editor.view
    mouse_drag(view.viewport(), view.scene_point("move_plate", "out"), view.scene_point("read_plate", "in"))
    mouse_drag(view.viewport(), view.scene_point("read_plate", "out"), view.scene_point("seal", "in"))
    editor.select_step(None)
    inputs = editor.inspector.workflow
    inputs.add_input.click()
    inputs.add_input.click()
    model = inputs.inputs_model
    model.setData(model.index(0, 0), "plate_id")
    model.setData(model.index(1, 0), "wavelength")
    model.setData(model.index(1, 1), "integer")
    model.setData(model.index(1, 2), Qt.CheckState.Unchecked.value, Qt.ItemDataRole.CheckStateRole)
    model.setData(model.index(1, 3), "450")
    editor.select_step("read_plate")
    row = editor.inspector.step.param_row("plate")
    row.source.setCurrentIndex(row.source.findData("input_data.plate_id"))
    row = editor.inspector.step.param_row("wavelength")
    row.source.setCurrentIndex(row.source.findData("input_data.wavelength"))
    editor.select_step("seal")
    row = editor.inspector.step.param_row("plate")
    row.source.setCurrentIndex(row.source.findData("step_outputs.read_plate.plate"))
    assert panel.editor.document.issues == []
    assert qrun(panel.publish()).version == 1

    form = panel.open_run_form()
    qtbot.waitExposed(form)
    assert form.isVisible(), "opened with open(): the test goes on while it is shown"
    assert set(form.fields) == {"plate_id", "wavelength"}
    assert not form.start.isEnabled() and form.errors["plate_id"].text() == "required"
    form.fields["wavelength"].setText("")
    assert not form.start.isEnabled()
    qtbot.keyClicks(form.fields["plate_id"], "PLT-0042")
    form.fields["wavelength"].setText("620")
    assert form.start.isEnabled() and form.values() == {"plate_id": "PLT-0042", "wavelength": 620}
    save_screenshot(form, "templates-run-form")
    with qtbot.waitSignal(panel.run_started, timeout=5000) as started:
        qtbot.mouseClick(form.start, Qt.MouseButton.LeftButton)
    run_id = started.args[0]
    qtbot.waitUntil(lambda: panel.run_form is None)
    assert rt.run_is_active(run_id)

    seconds = qrun(clock.run_until(lambda: not rt.run_is_active(run_id)), timeout_ms=30_000)
    assert rt.engine.run_status(run_id) is RunStatus.COMPLETED
    assert 100 < seconds < 600, seconds
    run = rt.engine.get_instance(run_id)
    steps = {s["id"]: s for s in run["steps"]}
    assert steps["read_plate"]["outputs"]["plate"] == "PLT-0042"
    assert steps["read_plate"]["outputs"]["wavelength"] == 620
    assert steps["seal"]["outputs"]["plate"] == "PLT-0042", "the mapping carried the plate on"

    qrun(panel.refresh_versions())
    (v1,) = panel.versions_model.rows()
    assert (v1.version, v1.runs, v1.in_flight) == (1, 1, 0)
    assert [r["id"] for r in panel.runs_model.rows()] == [run_id]
    rows = qrun(panel.reload())
    assert next(r for r in rows if r.name == "New workflow").last_used is not None


def test_versions_tell_which_runs_are_in_flight_on_an_older_version(env, qrun, qtbot):
    panel, rt, clock = env
    qrun(panel.reload())
    qrun(panel.open_template("Cell Culture Passage"))
    run_id = qrun(panel.start_run({}))
    editor = panel.editor
    editor.select_step("aspirate")
    editor.inspector.step.param_row("volume_ul").editor.setValue(150)
    qrun(panel.publish())
    qrun(panel.refresh_versions())
    rows = {r.version: r for r in panel.versions_model.rows()}
    assert (rows[1].runs, rows[1].in_flight, rows[2].runs) == (1, 1, 0)
    text = panel.in_flight.text()
    assert "1 run in flight uses an older version (v1) than the latest v2" in text
    panel.versions.selectRow(1)
    assert [r["id"] for r in panel.runs_model.rows()] == [run_id]
    with qtbot.waitSignal(panel.run_selected) as selected:
        panel.runs.doubleClicked.emit(panel.runs_model.index(0, 0))
    assert selected.args == [run_id]
    panel.versions.selectRow(0)
    panel.compare_button.click()  # v2 against the version before it
    qtbot.waitUntil(lambda: panel.tabs.currentWidget() is panel.diff_view)
    assert panel.diff_view.summary.text() == "v1 → v2: 1 step changed"
    assert panel.diff_view.changes.texts() == ["~ aspirate: parameters.volume_ul: 200 → 150"]
    panel.tabs.setCurrentIndex(1)
    panel.tabs.setCurrentIndex(1)
    save_screenshot(panel, "templates-versions")
    qrun(rt.cancel(run_id, who="test", reason="done"))
    qrun(clock.settle())
    qrun(panel.refresh_versions())
    assert "No run of Cell Culture Passage is in flight" in panel.in_flight.text()


def test_editor_screenshots_with_a_15_step_template(env, qrun, qtbot):
    panel, rt, _clock = env
    qrun(rt.engine.publish(template_from_dict(VIABILITY)))
    qrun(panel.reload())
    template = qrun(panel.open_template(VIABILITY["name"]))
    assert len(template.steps) == 15
    editor = panel.editor
    assert editor.document.issues == []
    qtbot.wait(20)
    editor.view.fit()
    nodes = editor.scene.nodes
    boxes = [n.sceneBoundingRect() for n in nodes.values()]
    assert all(editor.view.viewport().rect().contains(editor.view.mapFromScene(b.center()))
               for b in boxes), "a 15-step template fits the canvas"
    assert editor.view.zoom >= 0.6, "readable when fitted"
    save_screenshot(panel, "templates-editor-15-steps")
    editor.select_step("read_a")
    save_screenshot(panel, "templates-editor-step-inspector")
    editor.link("store", "decap")  # a cycle, as an operator might draw it
    assert not panel.publish_action.isEnabled()
    save_screenshot(panel, "templates-editor-problem")
    editor.undo_action.trigger()
    editor.select_step(None)
    save_screenshot(panel, "templates-editor-workflow-inspector")


def test_main_window_hosts_the_panel_and_shuts_it_down(store, data_dir, qtbot, qrun, tmp_path):
    rt = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    qrun(rt.start(templates_dir=sample_dir(tmp_path), execute=False))
    window = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    panel = window.templates
    assert isinstance(panel, TemplatesPanel)
    window.docks["Templates"].raise_()
    qtbot.waitUntil(lambda: panel.list_model.rowCount() == 3)
    assert {k.kind for k in panel.catalog.kinds.values()} == {"delay", "prompt", "noop"}
    panel._on_events([])
    panel._usage_timer.start()
    window.close()
    assert not panel._usage_timer.isActive() and not panel._tasks


def test_edits_are_counted_from_the_last_publish(env, qrun, qtbot):
    panel, _rt, _clock = env
    qtbot.waitUntil(lambda: panel.list_model.rowCount() == 3)
    qrun(panel.open_template("ELISA Readout", 1))
    editor, doc = panel.editor, panel.editor.document
    drop_kind(editor, "delay", editor.view.mapFromScene(QPointF(900, 700)))
    editor.select_step("seal")
    editor.inspector.step.timeout.box.setValue(240)
    assert doc.stack.index() == 2 and "2 unpublished edits" in editor.banner.text()
    assert qrun(panel.publish()).version == 2
    assert "v2 · published" in editor.banner.text() and "unpublished" not in editor.banner.text()
    editor.select_step("seal")
    editor.inspector.step.timeout.box.setValue(300)
    assert "draft of v3 (from v2) · 1 unpublished edit" in editor.banner.text(), editor.banner.text()
    editor.undo_action.trigger()
    assert not doc.is_draft and "unpublished" not in editor.banner.text()


def test_a_duplicate_run_is_refused_in_the_form_which_offers_to_run_it_anyway(env, qrun, qtbot):
    panel, rt, _clock = env
    qtbot.waitUntil(lambda: panel.list_model.rowCount() == 3)
    qrun(panel.open_template("ELISA Readout", 1))

    def submit(form) -> None:
        qtbot.waitExposed(form)
        qtbot.keyClicks(form.fields["plate_id"], "PLT-7")
        qtbot.mouseClick(form.start, Qt.MouseButton.LeftButton)

    form = panel.open_run_form()
    with qtbot.waitSignal(panel.run_started, timeout=5000) as first:
        submit(form)
    qtbot.waitUntil(lambda: panel.run_form is None)

    # the same inputs again within the duplicate window: refused, the form stays with its inputs
    form = panel.open_run_form()
    submit(form)
    qtbot.waitUntil(lambda: form.refusal.isVisible(), timeout=5000)
    assert form.isVisible() and form.fields["plate_id"].text() == "PLT-7"
    assert first.args[0] in form.refusal.text()
    assert "allow_duplicate" not in form.refusal.text() and "--allow-duplicate" not in form.refusal.text()
    assert form.run_again.isVisible() and form.run_again.isEnabled()
    save_screenshot(form, "templates-run-form-duplicate")
    with qtbot.waitSignal(panel.run_started, timeout=5000) as second:
        qtbot.mouseClick(form.run_again, Qt.MouseButton.LeftButton)
    assert second.args[0] != first.args[0] and rt.run_is_active(second.args[0])
    qtbot.waitUntil(lambda: panel.run_form is None)
