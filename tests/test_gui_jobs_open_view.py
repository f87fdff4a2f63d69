"""Jobs opens on "Needs attention" (listed first) on a fresh start, unless the operator was on
another view last time; with nothing to attend to it says so and offers "All orders" in one
click. The main window over a real runtime on a virtual clock and the real store."""

from __future__ import annotations

import json

import pytest
from conftest import save_screenshot
from dispatchkit import WORKCELL
from PySide6.QtCore import Qt

from console.app import settings_for
from console.main_window import MainWindow
from core.clock import VirtualClock
from core.orders import OrderStatus
from core.runtime import Runtime
from core.templates import template_from_dict
from core.workcell import parse_workcell
from panels.jobs_filter import (
    NEEDS_ATTENTION,
    OPEN_VIEW,
    STATUS,
    OrderFilter,
    SavedView,
    SavedViews,
)

READ = {"name": "Read only", "inputs": [{"name": "plate", "type": "string"}],
        "definition": {"steps": [{"id": "read", "kind": "PlateReader.ReadPlate"}]}}


@pytest.fixture
def runtime(store, data_dir, qrun):
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=parse_workcell(WORKCELL), seed=1)
    qrun(rt.start(templates_dir=None))
    qrun(rt.engine.publish(template_from_dict(READ)))
    rt.test_clock = clock
    yield rt
    qrun(rt.close())


def _window(rt, data_dir, qtbot, qrun):
    window = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    qrun(window.jobs.load())
    return window


def _shown(jobs) -> list[str]:
    return [jobs.model.order_id(r) for r in range(jobs.model.rowCount())]


def test_a_fresh_start_opens_on_needs_attention_and_offers_all_orders(runtime, data_dir, qtbot, qrun):
    runs = [qrun(runtime.start_run("Read only", {"plate": f"P{i}"}, who="tester")) for i in range(3)]
    qrun(runtime.test_clock.advance(2))
    window = _window(runtime, data_dir, qtbot, qrun)
    jobs = window.jobs
    assert jobs.filter_bar.view_combo.itemData(0) == OPEN_VIEW == "Needs attention"
    assert jobs.filter_bar.view_combo.currentData() == "Needs attention"
    assert jobs.model.filter == OrderFilter(statuses=NEEDS_ATTENTION)
    # nothing needs attention: one line says so, and one click shows every order
    assert jobs.model.rowCount() == 0 and jobs.model.total >= 3
    qtbot.waitUntil(jobs.empty_hint.isVisible, timeout=3000)
    assert "Nothing needs attention" in jobs.empty_hint.text()
    assert jobs.all_orders_button.isVisible()
    for theme in ("light", "dark"):
        window.set_theme(theme)
        for w, h in ((1280, 720), (1920, 1080)):
            window.resize(w, h)
            qtbot.wait(60)
            save_screenshot(window, f"jobs-nothing-needs-attention-{w}x{h}-{theme}")
    window.set_theme("light")
    qtbot.mouseClick(jobs.all_orders_button, Qt.MouseButton.LeftButton)
    assert jobs.filter_bar.view_combo.currentData() == "All orders"
    assert set(runs) <= set(_shown(jobs))
    assert not jobs.empty_hint.isVisible() and not jobs.all_orders_button.isVisible()
    # the choice is kept next to the store: the next start opens on it
    saved = json.loads((data_dir / SavedViews.FILENAME).read_text())
    assert saved["open_on"] == "All orders"
    window.close()
    again = _window(runtime, data_dir, qtbot, qrun)
    assert again.jobs.filter_bar.view_combo.currentData() == "All orders"
    assert set(runs) <= set(_shown(again.jobs))
    again.close()


def test_a_paused_run_is_listed_and_a_new_run_shows_all_orders(runtime, data_dir, qtbot, qrun):
    runs = [qrun(runtime.start_run("Read only", {"plate": f"P{i}"}, who="tester")) for i in range(3)]
    qrun(runtime.test_clock.advance(1))
    qrun(runtime.pause(runs[1], who="tester", reason="lid check"))
    qrun(runtime.test_clock.settle())
    window = _window(runtime, data_dir, qtbot, qrun)
    jobs = window.jobs
    assert _shown(jobs) == [runs[1]]
    assert jobs.model.get(runs[1])[STATUS] == OrderStatus.Paused
    assert not jobs.empty_hint.isVisible() and not jobs.all_orders_button.isVisible()
    for theme in ("light", "dark"):
        window.set_theme(theme)
        for w, h in ((1280, 720), (1920, 1080)):
            window.resize(w, h)
            qtbot.wait(60)
            save_screenshot(window, f"jobs-needs-attention-{w}x{h}-{theme}")
    window.set_theme("light")
    # an order the view hides is focused (palette, deep link, a new run): Jobs shows all orders
    assert window.focus_order(runs[0])
    assert jobs.filter_bar.view_combo.currentData() == "All orders"
    assert jobs.current_id() == runs[0]
    assert jobs.views.opened is None, "a switch the console made is not the operator's choice"
    window.close()
    # the operator picks a view in the list: the next start opens on it
    again = _window(runtime, data_dir, qtbot, qrun)
    combo = again.jobs.filter_bar.view_combo
    assert combo.currentData() == "Needs attention"
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_Down)  # "All orders", then "Active runs"
    qtbot.keyClick(combo, Qt.Key.Key_Down)
    assert combo.currentData() == "Active runs"
    assert set(_shown(again.jobs)) == set(runs)  # running or paused
    again.close()
    third = _window(runtime, data_dir, qtbot, qrun)
    assert third.jobs.filter_bar.view_combo.currentData() == "Active runs"
    third.close()


def test_a_saved_view_the_operator_was_on_opens_instead(runtime, data_dir, qtbot, qrun):
    views = SavedViews(data_dir / SavedViews.FILENAME)
    views.save(SavedView("Reader work", OrderFilter(instruments=frozenset({"Reader1"}))))
    views.remember("Reader work")
    window = _window(runtime, data_dir, qtbot, qrun)
    assert window.jobs.filter_bar.view_combo.currentData() == "Reader work"
    assert window.jobs.model.filter == OrderFilter(instruments=frozenset({"Reader1"}))
    window.close()
    # a remembered view that no longer exists: back to Needs attention
    views.delete("Reader work")
    again = _window(runtime, data_dir, qtbot, qrun)
    assert again.jobs.filter_bar.view_combo.currentData() == "Needs attention"
    again.close()
