"""A notification that could not be delivered shows in the Inbox panel (row mark, tooltip, the
form's notification line) and is sent again from the form's button (real HTTP receiver); an
e-mail the server refused for one recipient shows that recipient's failure (real SMTP server)."""

from __future__ import annotations

import pytest
from aiosmtpd.controller import Controller
from conftest import save_screenshot
from notifykit import Mailbox, Receiver, free_port
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication

from console.bridge import EventBridge
from core.clock import VirtualClock
from core.inbox import Inbox
from core.notify import Notifier, NotifySettings
from core.runtime import Runtime
from core.templates import template_from_dict
from panels.inbox import InboxPanel
from panels.theme import apply_theme

ASK = {"name": "Night prompt", "definition": {"steps": [
    {"id": "ask", "kind": "prompt", "parameters": {"message": "Refill the tip rack on deck 3",
                                                   "fields": [{"name": "done", "type": "yesno"}]}}]}}


@pytest.fixture
def night(store, data_dir, qtbot, qrun):
    with Receiver([500]) as receiver:
        clock = VirtualClock.for_store(store)
        rt = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
        qrun(rt.start(templates_dir=None))
        qrun(rt.engine.publish(template_from_dict(ASK)))
        notifier = Notifier(store, NotifySettings(webhook_url=receiver.url, attempts=1), clock=clock,
                            bus=rt.ledger.bus)
        inbox = Inbox(rt.engine, escalate_after={"prompt": 600}, notifier=notifier)
        bridge = EventBridge(rt.ledger.bus)
        panel = InboxPanel(rt, bridge, inbox=inbox)
        panel.who = "ann"
        qtbot.addWidget(panel)
        panel.resize(1100, 520)
        panel.show()
        yield rt, clock, bridge, panel, inbox, notifier, receiver
        panel.shutdown()
        panel.close()
        bridge.close()
        qrun(rt.close())


def test_a_given_up_notification_is_marked_and_sent_again_from_the_form(night, qtbot, qrun):
    rt, clock, bridge, panel, inbox, notifier, receiver = night
    qrun(rt.start_run("Night prompt", who="bob"))
    qrun(clock.settle())
    qrun(clock.advance(700))
    assert qrun(inbox.escalate()) == 1
    qrun(notifier.deliver_due())  # HTTP 500 on the only attempt: given up
    bridge.flush()
    qtbot.waitUntil(lambda: bool(panel.model.rows) and bool(panel.model.rows[0].notice), timeout=5000)
    row = panel.model.rows[0]
    index = panel.model.index(0, 0)
    assert panel.model.data(index).endswith("✉✗")
    tip = panel.model.data(index, Qt.ItemDataRole.ToolTipRole)
    assert "Webhook notification failed after 1 attempt, gave up" in tip and "HTTP 500" in tip
    assert panel.select_item(row.id)
    form = panel.form
    assert form.notices.isVisible() and form.notices.property("failing") is True
    assert "HTTP 500" in form.notices.text()
    assert form.resend_button.isVisible()
    app = QApplication.instance()
    for width, height in ((1280, 720), (1920, 1080)):
        panel.resize(width, height)
        for theme in ("light", "dark"):
            apply_theme(app, theme)
            app.processEvents()
            save_screenshot(panel, f"inbox-notify-failed-{theme}-{width}")
    apply_theme(app, "light")
    qtbot.mouseClick(form.resend_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not form.resend_button.isVisible(), timeout=5000)
    qrun(notifier.deliver_due())
    bridge.flush()
    qtbot.waitUntil(lambda: "Webhook notification sent" in form.notices.text(), timeout=5000)
    assert form.notices.property("failing") is False
    assert panel.model.rows[0].notice == "" and not panel.model.data(panel.model.index(0, 0)).endswith("✉✗")
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["items"][0]["id"] == row.id
    assert any(a.action == "resend notification" and a.who == "ann" for a in rt.audit())


def test_an_email_refused_for_one_recipient_shows_that_recipient_on_the_item(store, data_dir, qtbot, qrun):
    box = Mailbox(refuse_rcpt={"bob@example.org": 1})
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    clock = VirtualClock.for_store(store)
    rt = Runtime.build(data_dir, clock=clock, store=store, workcell=None, metrics=False)
    qrun(rt.start(templates_dir=None))
    bridge = None
    try:
        qrun(rt.engine.publish(template_from_dict(ASK)))
        settings = NotifySettings(email_to=("night@example.org", "bob@example.org"), email_from="lab@example.org",
                                  smtp_host="127.0.0.1", smtp_port=controller.port, backoff=30.0, timeout=10.0)
        notifier = Notifier(store, settings, clock=clock, bus=rt.ledger.bus)
        inbox = Inbox(rt.engine, escalate_after={"prompt": 600}, notifier=notifier)
        bridge = EventBridge(rt.ledger.bus)
        panel = InboxPanel(rt, bridge, inbox=inbox)
        qtbot.addWidget(panel)
        panel.resize(1280, 720)
        panel.show()
        qrun(rt.start_run("Night prompt", who="bob"))
        qrun(clock.settle())
        qrun(clock.advance(700))
        assert qrun(inbox.escalate()) == 1
        qrun(notifier.deliver_due())
        bridge.flush()
        qtbot.waitUntil(lambda: bool(panel.model.rows) and bool(panel.model.rows[0].notice), timeout=5000)
        assert panel.model.data(panel.model.index(0, 0)).endswith("✉✗")
        assert panel.select_item(panel.model.rows[0].id)
        text = panel.form.notices.text()
        assert "E-mail notification sent" in text
        assert "E-mail notification to bob@example.org failed (1 attempt, next try in 30s)" in text
        assert "550 5.1.1 no such user here" in text and panel.form.notices.property("failing") is True
        app = QApplication.instance()
        for width, height in ((1280, 720), (1920, 1080)):
            panel.resize(width, height)
            for theme in ("light", "dark"):
                apply_theme(app, theme)
                app.processEvents()
                save_screenshot(panel, f"inbox-notify-recipient-refused-{theme}-{width}")
        apply_theme(app, "light")
        qrun(clock.advance(30))
        qrun(notifier.deliver_due())
        bridge.flush()
        qtbot.waitUntil(lambda: "E-mail notification to bob@example.org sent after 2 attempts"
                        in panel.form.notices.text(), timeout=5000)
        assert panel.model.rows[0].notice == ""
        assert box.envelopes == [("lab@example.org", ["night@example.org"]), ("lab@example.org", ["bob@example.org"])]
        panel.shutdown()
        panel.close()
    finally:
        if bridge is not None:
            bridge.close()
        qrun(rt.close())
        controller.stop()
