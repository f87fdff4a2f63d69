"""Playbook panel over a real runtime: rules saved from the form (audited), refused with the field
named, imported from YAML with file:line errors, exported."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt

from core.clock import VirtualClock
from core.runtime import Runtime
from core.workcell import parse_workcell
from panels.playbook import PlaybookPanel


@pytest.fixture
def panel(store, data_dir, qtbot, qrun):
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1)
    qrun(rt.start(templates_dir=None))
    p = PlaybookPanel(rt)
    p.who = "ann"
    qtbot.addWidget(p)
    p.resize(1280, 720)
    p.show()
    yield p
    p.shutdown()
    p.close()
    qrun(rt.close())


def _save(qtbot, panel):
    with qtbot.waitSignal(panel.changed, timeout=5000):
        qtbot.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)


def test_rules_are_saved_refused_imported_and_exported(panel, qtbot, tmp_path):
    panel.rule_id.setText("sealer-jam")
    panel.error_code.setText("SimulatedFailure")
    panel.capability.setCurrentText("Sealer.Melt")
    panel.response.setCurrentIndex(panel.response.findData("retry"))
    _save(qtbot, panel)
    assert "capability: unknown capability 'Sealer.Melt'" in panel.feedback.text()
    assert panel.table.rowCount() == 0
    panel.capability.setCurrentText("Sealer.Seal")
    _save(qtbot, panel)
    assert panel.feedback.text() == "Rule sealer-jam saved" and panel.table.rowCount() == 1
    assert panel.table.item(0, 5).text() == "retry ≤3, 10 s"
    assert any(a.action == "add playbook rule" and a.who == "ann" for a in panel.runtime.audit("sealer-jam"))

    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: x\n    error_code: Jam\n    instrument: Nowhere\n    response: cancel\n")
    with qtbot.waitSignal(panel.changed, timeout=5000):
        panel.import_file(bad)
    assert f"{bad}:4: rules[0].instrument: unknown instrument 'Nowhere'" in panel.feedback.text()
    assert [r.id for r in panel.playbook.rules] == ["sealer-jam"]  # nothing of a bad file is kept
    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  - {id: reader, error_code: Timeout, capability: PlateReader.ReadPlate, "
                    "response: skip, outputs: {od: 0}}\n")
    with qtbot.waitSignal(panel.changed, timeout=5000):
        panel.import_file(good)
    assert [r.id for r in panel.playbook.rules] == ["reader"] and panel.table.rowCount() == 1
    panel.table.selectRow(0)
    assert panel.outputs.toPlainText() == '{"od": 0}'
    save_screenshot(panel, "playbook-light")
    out = tmp_path / "out.yaml"
    panel.export_file(out)
    assert "error_code: Timeout" in out.read_text()
