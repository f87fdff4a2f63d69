"""Detail shows a run's broken time window with by how much: in its Details field, its history
(the step's Running transition) and its log."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from test_gui_detail import settled, shown
from test_gui_jobs import Lab

from core.templates import template_from_dict

TIGHT = {"name": "Tight", "definition": {"steps": [
    {"id": "read", "kind": "PlateReader.ReadPlate"},
    {"id": "seal", "kind": "Sealer.Seal", "depends_on": ["read"], "start_within": {"after": "read", "max": "5s"}}]}}


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun, detail=True)
    yield made
    made.close()


def test_a_broken_window_shows_in_detail(lab):
    lab.qrun(lab.rt.engine.publish(template_from_dict(TIGHT)))
    runs = [lab.qrun(lab.rt.start_run("Tight", allow_duplicate=True)) for _ in range(2)]
    lab.load()
    # two readers read both plates at once (60 s); the one sealer seals them one after the other
    # (20 s each): the second seal starts 15 s after its window closed
    lab.until(lambda: not any(lab.rt.run_is_active(r) for r in runs))
    late = [r for r in runs if lab.rt.engine.get_instance(r)["late"]]
    assert len(late) == 1
    shown(lab, late[0])
    settled(lab)
    detail = lab.detail
    text = "step seal started 15s after its window closed (at most 5s after read ended)"
    assert text in detail.fields["Details"].text()
    assert text in detail.history.column_texts(4)
    assert "— time windows that did not hold —" in detail.log.toPlainText() and text in detail.log.toPlainText()
    save_screenshot(lab.window, "detail-broken-window")
