"""The tray icon carries the escalated inbox count and notifies when it grows; a click brings the
Inbox forward. The offscreen platform has no system tray, so its availability is the one thing
assumed here; the icon, its tooltip and its signals are real."""

from __future__ import annotations

from enginekit import template
from PySide6.QtWidgets import QSystemTrayIcon

from console.app import settings_for
from console.main_window import MainWindow
from core.runtime import Runtime
from core.templates import template_from_dict

ASK = template("Ask tray", [{"id": "ask", "kind": "prompt", "parameters": {
    "message": "Plate loaded?", "fields": [{"name": "ok", "type": "yesno"}]}}])


def test_tray_counts_escalated_items_and_clears_when_answered(store, data_dir, qtbot, qrun, monkeypatch):
    monkeypatch.setattr(QSystemTrayIcon, "isSystemTrayAvailable", staticmethod(lambda: True))
    runtime = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    qrun(runtime.start(templates_dir=None))
    qrun(runtime.engine.publish(template_from_dict(ASK)))
    window = MainWindow(runtime, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    qrun(window.load_orders())
    qrun(runtime.start_run("Ask tray", who="bob"))
    qrun(runtime.start_run("Ask tray", who="bob", allow_duplicate=True))
    qtbot.waitUntil(lambda: window.windowTitle() == "labconsole — 2 waiting", timeout=5000)
    assert window.tray is None  # nothing escalated: no tray icon
    inbox = window.inbox.inbox
    inbox.escalate_after["prompt"] = 0.0
    assert qrun(inbox.escalate()) == 2
    qtbot.waitUntil(lambda: window.windowTitle() == "labconsole — 2 waiting (2 escalated)", timeout=5000)
    assert window.tray is not None and window.tray.isVisible()
    assert window.tray.toolTip() == "labconsole — 2 escalated, 2 waiting in the inbox"
    assert window.tray_message == "2 inbox items waiting too long"
    window.docks["Inbox"].hide()
    window.tray.activated.emit(QSystemTrayIcon.ActivationReason.Trigger)
    assert window.docks["Inbox"].isVisible()
    panel = window.inbox
    for _ in range(2):
        panel.select_item(panel.model.rows[0].id)
        panel.form.set_value("ok", "yes")
        with qtbot.waitSignal(panel.answered, timeout=5000):
            panel.form.submit()
        qtbot.waitUntil(lambda: not panel._refreshing, timeout=5000)
    qtbot.waitUntil(lambda: window.windowTitle() == "labconsole", timeout=5000)
    assert not window.tray.isVisible()
    assert window.tray.toolTip() == "labconsole — 0 escalated, 0 waiting in the inbox"
    window.close()
    qrun(runtime.close())
