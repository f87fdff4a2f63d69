"""Before a run starts: can it finish, what does it lack, do its windows hold behind the queue —
in core (snapshot and a real runtime on the virtual clock) and in the Run… form."""

from __future__ import annotations

import asyncio

import pytest
from conftest import save_screenshot

from core.clock import VirtualClock
from core.durations_model import DurationsModel
from core.forecast import InstrumentState, RunState, Snapshot, check_feasibility, feasibility
from core.runtime import Runtime
from core.store import DB_FILENAME, Store
from core.templates import template_from_dict
from core.workcell import parse_workcell

CELL = """
name: feasibility cell
seed: 5
instruments:
  - {id: Sealer, kind: Sealer, driver: simulated, options: {connect_time: 0s},
     capabilities: {Sealer.Seal: {duration: 20s, jitter: 0s}}}
  - {id: Reader, kind: PlateReader, driver: simulated, options: {connect_time: 0s},
     capabilities: {PlateReader.ReadPlate: {duration: 60s, jitter: 0s}}}
"""
NOW = 1_800_000_000.0
INSTRUMENTS = (InstrumentState("Sealer", ("Sealer.Seal",)), InstrumentState("Reader", ("PlateReader.ReadPlate",)))


def _template(name="Seal then read", window=None, deadline=None, extra=()):
    definition = {"steps": [{"id": "seal", "kind": "Sealer.Seal"},
                            {"id": "read", "kind": "PlateReader.ReadPlate", "depends_on": ["seal"],
                             **(window or {})}, *extra]}
    if deadline:
        definition["deadline"] = deadline
    return template_from_dict({"name": name, "version": 1, "definition": definition})


def _model():
    return DurationsModel(parse_workcell(CELL))


def test_an_empty_cell_finishes_with_windows_that_hold():
    t = _template(window={"start_within": {"after": "seal", "max": "1m"}}, deadline="5m")
    f = feasibility(Snapshot(NOW, (), INSTRUMENTS), t, _model())
    assert f.can_finish and f.risks == () and f.eta.p50 == NOW + 80
    assert f.lines(NOW) == ["Can finish: done in about 1m20s (p10 1m20s, p90 1m20s) behind 0 runs in flight",
                            "Its time windows and deadline hold with the current queue"]


def test_behind_a_queue_the_window_and_the_deadline_would_break():
    t = _template(window={"start_within": {"after": "seal", "max": "30s"}}, deadline="100s")
    reads = template_from_dict({"name": "Reads", "version": 1, "definition": {"steps": [
        {"id": "read", "kind": "PlateReader.ReadPlate"}]}})
    queue = tuple(RunState(f"r{i}", reads, "running", 50, NOW - 10 + i, {}, {}) for i in range(3))
    f = feasibility(Snapshot(NOW, queue, INSTRUMENTS), t, _model())
    # its seal 0-20; the reader is busy 0-60 with r0: its read (window closing at 50) goes next,
    # ahead of r1 and r2, at 60 — 10 s late — and ends at 120 against a 100 s deadline
    assert f.can_finish and f.queued == 3
    (window,) = [r for r in f.risks if r.step == "read"]
    assert window.late == pytest.approx(10) and f.eta.p50 == NOW + 120
    lines = f.lines(NOW)
    assert "Window will not hold: step read would start 10s after its window closes (at most 30s after seal)" \
        in lines
    assert "Deadline will not hold: it would end 20s past its deadline (1m40s)" in lines


def test_what_the_cell_lacks_is_named_instead_of_an_eta():
    t = _template(extra=({"id": "spin", "kind": "Centrifuge.Spin", "depends_on": ["read"]},))
    out = (InstrumentState("Sealer", ("Sealer.Seal",), available=False, why_not="out of service"), INSTRUMENTS[1])
    f = feasibility(Snapshot(NOW, (), out), t, _model())
    assert not f.can_finish and f.eta is None
    assert f.lacking == ("Sealer.Seal for step seal (Sealer (out of service))",
                         "Centrifuge.Spin for step spin (no instrument in the workcell has it)")
    assert f.lines(NOW) == ["Cannot finish: Sealer.Seal for step seal (Sealer (out of service)); Centrifuge.Spin "
                            "for step spin (no instrument in the workcell has it)"]


def _runtime(data_dir):
    store = Store(data_dir / DB_FILENAME).open()
    clock = VirtualClock.for_store(store, start=NOW)
    return Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(CELL), seed=2,
                         metrics=False), clock


def test_a_real_runtime_says_which_instrument_is_out_of_service(data_dir):
    async def scenario():
        rt, clock = _runtime(data_dir)
        starting = asyncio.ensure_future(rt.start(templates_dir=None))
        await clock.run_until(starting.done, step=1.0)
        t = _template().model_copy(update={"version": 0})
        await rt.engine.publish(t)
        for _ in range(2):
            await rt.start_run("Seal then read", allow_duplicate=True)
        before = await check_feasibility(rt, t)
        await rt.dispatcher.take_out_of_service("Reader", who="tester", reason="lamp")
        after = await check_feasibility(rt, t)
        await rt.close()
        return before, after

    before, after = asyncio.run(scenario())
    assert before.can_finish and before.queued == 2 and before.eta.ok
    assert not after.can_finish
    assert after.lacking == ("PlateReader.ReadPlate for step read (Reader (out of service))",)


def test_the_run_form_says_whether_the_run_can_finish(data_dir, qtbot, qrun):
    from panels.templates import TemplatesPanel

    rt, clock = _runtime(data_dir)
    qrun(rt.start(templates_dir=None))
    t = _template(window={"start_within": {"after": "seal", "max": "30s"}}).model_copy(update={"version": 0})
    qrun(rt.engine.publish(t))
    for _ in range(3):
        qrun(rt.start_run("Seal then read", allow_duplicate=True))
    panel = TemplatesPanel(rt, None)
    qtbot.addWidget(panel)
    panel.resize(1280, 720)
    panel.show()
    qrun(panel.reload())
    qrun(panel.open_template("Seal then read"))
    form = panel.open_run_form()
    qtbot.waitUntil(lambda: form.feasibility.text() != "" and "Checking" not in form.feasibility.text(),
                    timeout=10_000)
    text = form.feasibility.text()
    assert "Can finish" in text and "Window will not hold: step read" in text
    from PySide6.QtWidgets import QApplication

    from panels.theme import apply_theme

    save_screenshot(form, "run-form-feasibility")
    apply_theme(QApplication.instance(), "dark")
    qtbot.wait(50)
    try:
        save_screenshot(form, "run-form-feasibility-dark")
    finally:
        apply_theme(QApplication.instance(), "light")
    form.close()
    qrun(rt.dispatcher.take_out_of_service("Sealer", who="tester"))
    form = panel.open_run_form()
    qtbot.waitUntil(lambda: "Cannot finish" in form.feasibility.text(), timeout=10_000)
    assert "Sealer.Seal for step seal (Sealer (out of service))" in form.feasibility.text()
    form.close()
    panel.close()
    qrun(rt.close())
