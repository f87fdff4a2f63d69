"""The main window docks the inbox and counts what waits for a person in its title."""

from __future__ import annotations

from conftest import save_screenshot
from enginekit import template

from console.app import settings_for
from console.main_window import MainWindow
from core.runtime import Runtime
from core.templates import template_from_dict

ASK = template("Ask", [{"id": "ask", "kind": "prompt", "parameters": {
    "message": "Plate loaded?", "fields": [{"name": "ok", "type": "yesno"}]}}])


def test_title_counts_waiting_items_and_answering_clears_it(store, data_dir, qtbot, qrun):
    runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    qrun(runtime.start(templates_dir=None))
    qrun(runtime.engine.publish(template_from_dict(ASK)))
    window = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    assert window.windowTitle() == "labconsole" and runtime.engine.playbook is not None
    qrun(window.load_orders())
    run_id = qrun(runtime.start_run("Ask", who="bob"))
    qtbot.waitUntil(lambda: window.windowTitle() == "labconsole — 1 waiting", timeout=5000)
    assert window.docks["Inbox"].windowTitle() == "Inbox (1)"
    window.docks["Inbox"].raise_()
    save_screenshot(window, "main-window-inbox")
    panel = window.inbox
    item = panel.model.rows[0]
    panel.select_item(item.id)
    panel.form.set_value("ok", "yes")
    with qtbot.waitSignal(panel.answered, timeout=5000):
        panel.form.submit()
    qtbot.waitUntil(lambda: window.windowTitle() == "labconsole", timeout=5000)
    qtbot.waitUntil(lambda: runtime.run_is_active(run_id) is False, timeout=5000)
    window.close()
    qrun(runtime.close())
