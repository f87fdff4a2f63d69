"""The window offers only what the signed-in user's role allows (the tooltip says why), and the
Templates panel's Publish asks for an electronic signature when config.ini requires one."""

from __future__ import annotations

import pytest
from conftest import save_screenshot
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication
from test_gui_jobs import Lab
from test_gui_robots import _click_action, _give_reason, cell  # noqa: F401 - the Robots panel fixture
from test_gui_templates import env  # noqa: F401 - the Templates panel over a started runtime

from core import users
from core.users import PermissionDenied, SignaturePolicy
from panels.playbook import is_editable
from panels.signature import SignatureDialog
from panels.theme import apply_theme


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch):
    monkeypatch.setattr(users, "SCRYPT_N", 2**12)
    monkeypatch.setattr(users, "_DUMMY_HASH", None)


def add_users(store) -> dict[str, users.User]:
    return {name: users.add_user(store, name, role, f"{name}-password", who="root")
            for name, role in (("ann", "supervisor"), ("bob", "operator"), ("vic", "viewer"))}


def test_a_viewer_is_offered_no_order_action_and_is_refused_before_any_dialog(store, data_dir, qtbot, qrun):
    lab = Lab(store, data_dir, qtbot, qrun, detail=True)
    try:
        people = add_users(store)
        run = lab.start_runs(1)[0]
        lab.load()
        for actions in (lab.jobs.actions, lab.detail.order_actions):
            actions.who = lambda: "vic"
            actions.user = lambda: people["vic"]
        lab.wait_task(lab.detail.show_order(run))
        cancel = lab.detail.buttons["cancel"]
        assert not cancel.isEnabled()
        assert cancel.toolTip() == "cancel: 'vic' is signed in as viewer; cancel needs the operator role or above"
        assert lab.jobs.actions.request("cancel", run) is None and lab.jobs.actions.dialog is None
        assert lab.jobs.actions.history[-1].message.startswith("cancel: 'vic' is signed in as viewer")
        assert lab.rt.run_is_active(run)
        save_screenshot(lab.window, "roles-viewer-detail")

        for actions in (lab.jobs.actions, lab.detail.order_actions):  # an operator: Cancel is offered again
            actions.who = lambda: "bob"
            actions.user = lambda: people["bob"]
        lab.wait_task(lab.detail.refresh())
        assert lab.detail.buttons["cancel"].isEnabled()
    finally:
        lab.close()


def _draft(panel, qrun, qtbot) -> None:
    qtbot.waitUntil(lambda: panel.list_model.rowCount() == 3)
    qrun(panel.open_template("ELISA Readout", 1))
    editor = panel.editor
    editor.select_step("seal")
    editor.inspector.step.timeout.box.setValue(240)
    assert editor.document.is_draft


def test_templates_publish_follows_the_role_and_asks_for_a_signature(env, qrun, qtbot, store):  # noqa: F811
    panel, rt, _clock = env
    people = add_users(store)
    rt.signatures = SignaturePolicy(frozenset({"template publish"}), "config.ini")
    _draft(panel, qrun, qtbot)

    panel.set_user(people["bob"])
    assert not panel.publish_action.isEnabled()
    assert panel.publish_action.toolTip() == ("template publish: 'bob' is signed in as operator; template publish "
                                              "needs the supervisor role or above")
    save_screenshot(panel, "roles-templates-operator")
    app = QApplication.instance()
    try:
        for theme, (w, h) in (("dark", (1280, 720)), ("light", (1920, 1080))):
            apply_theme(app, theme)
            panel.resize(w, h)
            save_screenshot(panel, f"roles-templates-operator-{theme}-{w}x{h}")
    finally:
        apply_theme(app, "light")
        panel.resize(1600, 980)
    with pytest.raises(PermissionDenied, match="template publish: 'bob' is signed in as operator"):
        qrun(panel.publish())  # the core refuses too, whatever the window offers
    assert rt.engine.templates.versions("ELISA Readout") == [1]

    qrun(panel.open_template("ELISA Readout", 1))  # a published version: a viewer may not run it
    panel.set_user(people["vic"])
    assert not panel.run_action.isEnabled()
    assert panel.run_action.toolTip() == "start run: 'vic' is signed in as viewer; start run needs the operator role or above"
    panel.set_user(people["bob"])
    assert panel.run_action.isEnabled()
    _draft(panel, qrun, qtbot)

    panel.set_user(people["ann"])
    assert panel.publish_action.isEnabled() and panel.publish_action.toolTip() == "Publish as the next version"
    task = panel._spawn(panel.publish(), "publish")
    qtbot.waitUntil(lambda: isinstance(panel.signature_dialog, SignatureDialog), timeout=10_000)
    dialog = panel.signature_dialog
    assert dialog.user_edit.text() == "ann" and dialog.windowTitle() == "Sign: template publish"
    save_screenshot(dialog, "roles-templates-signature")
    dialog.password_edit.setText("ann-password")
    dialog.meaning_box.setCurrentText("approved")
    dialog.ok_button.click()
    qtbot.waitUntil(task.done, timeout=10_000)
    assert task.result().version == 2 and panel.message.text() == "Published ELISA Readout v2"
    row = [e for e in rt.store.audit_entries() if e.action == "publish template"][-1]
    assert row.who == "ann" and row.details["signature"]["action"] == "template publish"
    assert row.details["signature"]["meaning"] == "approved" and rt.store.verify_chain().ok


def test_robots_out_of_service_follows_the_role_and_is_signed(cell, qtbot, store):  # noqa: F811
    rt, _clock, _bridge, panel = cell
    people = add_users(store)
    rt.signatures = SignaturePolicy(frozenset({"out of service"}), "config.ini")
    qtbot.mouseClick(panel.cards["Sealer"], Qt.MouseButton.LeftButton)
    panel.set_user(people["bob"])
    action = panel.actions_by_key["out_of_service"]
    assert not action.isEnabled()
    assert action.toolTip() == ("out of service: 'bob' is signed in as operator; out of service needs the "
                                "supervisor role or above")
    panel.set_user(people["ann"])
    assert action.isEnabled() and "Out of service" not in action.toolTip().split(":")[0]
    _click_action(qtbot, panel, "out_of_service")
    _give_reason(qtbot, panel, "cleaning")
    qtbot.waitUntil(lambda: isinstance(panel.signature_dialog, SignatureDialog), timeout=10_000)
    dialog = panel.signature_dialog
    assert dialog.user_edit.text() == "ann" and dialog.windowTitle() == "Sign: out of service"
    dialog.password_edit.setText("ann-password")
    dialog.ok_button.click()
    def rows():
        return [e for e in rt.store.audit_entries() if e.action == "take out of service"]

    qtbot.waitUntil(lambda: bool(rows()), timeout=10_000)  # the action's commit, with its audit row
    assert not {v.id: v for v in rt.instruments()}["Sealer"].in_service
    row = rows()[-1]
    assert row.who == "ann" and row.reason == "cleaning" and row.details["signature"]["action"] == "out of service"


ASK = {"name": "Ask", "steps": [{"id": "ask", "kind": "prompt", "parameters": {
    "message": "Plate loaded?", "fields": [{"name": "ok", "type": "yesno"}]}}]}


def _sign_in(qtbot, name: str) -> None:
    from panels.login import LoginDialog

    def shown() -> list[LoginDialog]:
        return [w for w in QApplication.topLevelWidgets() if isinstance(w, LoginDialog) and w.isVisible()]

    qtbot.waitUntil(lambda: bool(shown()), timeout=10_000)
    dialog = shown()[0]
    dialog.user_edit.setText(name)
    dialog.password_edit.setText(f"{name}-password")
    dialog.ok_button.click()


def _needs(user: str, role: str, action: str, need: str) -> str:
    return f"{action}: '{user}' is signed in as {role}; {action} needs the {need} role or above"


def test_the_window_disables_what_the_signed_in_role_may_not_do(store, data_dir, qtbot, qrun, qloop):
    """Jobs' buttons and menu, Playbook, Schedules and Inbox follow the signed-in user's role: a
    viewer gets them disabled with the role needed in the tooltip; signing in (after the idle
    lock) as an operator, then a supervisor, offers them again."""
    from console.app import settings_for
    from console.main_window import MainWindow
    from core.runtime import Runtime
    from core.templates import template_from_dict
    from panels.login import start_session

    add_users(store)
    rt = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    qrun(rt.start(templates_dir=None))
    qrun(rt.engine.publish(template_from_dict(ASK)))
    window = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(window)
    window.resize(1600, 980)
    window.show()
    try:
        qrun(window.load_orders())
        run = qrun(rt.start_run("Ask", who="bob"))
        jobs, inbox, playbook, schedules = window.jobs, window.inbox, window.playbook, window.schedules
        jobs.filter_bar.choose_view("All orders")  # it opens on "Needs attention"
        qtbot.waitUntil(lambda: bool(inbox.model.rows) and jobs.select_order(run), timeout=10_000)
        assert jobs.bulk_buttons["cancel"].isEnabled()  # single-user mode: everything is offered
        inbox.select_item(inbox.model.rows[0].id)
        assert inbox.form.answer_button.isEnabled()
        assert all(b.isEnabled() for b in playbook.changing.values())
        assert playbook.editable() and len(playbook.fields) == 10
        assert inbox.form.resend_button.isEnabled()
        assert schedules.actions_by_key["add"].isEnabled()

        session_task = qloop.create_task(start_session(window, rt, 15))
        _sign_in(qtbot, "vic")
        qtbot.waitUntil(session_task.done, timeout=10_000)
        session = session_task.result()
        assert session.who() == "vic"
        for key in ("cancel", "retry", "reprioritise"):
            assert not jobs.bulk_buttons[key].isEnabled()
        assert jobs.bulk_buttons["cancel"].toolTip() == _needs("vic", "viewer", "cancel", "operator")
        menu = jobs.build_menu(jobs.model.row_of(run))
        cancel_item = next(a for a in menu.actions() if a.objectName() == "cancel")
        assert not cancel_item.isEnabled()
        assert cancel_item.toolTip() == _needs("vic", "viewer", "cancel", "operator")
        menu.deleteLater()
        assert not inbox.form.answer_button.isEnabled()
        assert inbox.form.answer_button.toolTip() == _needs("vic", "viewer", "answer", "operator")
        inbox.form.set_value("ok", "yes")
        inbox.form.submit()  # Return in a field: refused before the core is asked
        assert inbox.form.error.text() == _needs("vic", "viewer", "answer", "operator")
        for button in playbook.changing.values():
            assert not button.isEnabled()
            assert button.toolTip() == _needs("vic", "viewer", "playbook", "supervisor")
        assert playbook.export_button.isEnabled()  # reading is for everyone
        assert not any(is_editable(w) for w in playbook.fields)  # no field takes input
        assert all(w.toolTip() == _needs("vic", "viewer", "playbook", "supervisor") for w in playbook.fields)
        assert not inbox.form.resend_button.isEnabled()
        assert inbox.form.resend_button.toolTip() == _needs("vic", "viewer", "notify again", "operator")
        for action in schedules.actions_by_key.values():
            assert not action.isEnabled()
            assert action.toolTip() == _needs("vic", "viewer", "schedules", "supervisor")
        schedules.trigger("add")  # a double-click in the list asks too
        assert schedules.dialog is None
        assert schedules.message.text() == _needs("vic", "viewer", "schedules", "supervisor")
        window.docks["Inbox"].raise_()
        save_screenshot(window, "roles-viewer-window")
        try:
            for theme, (w, h) in (("dark", (1280, 720)), ("light", (1920, 1080))):
                window.set_theme(theme)  # as the View menu does: every panel follows
                window.resize(w, h)
                qtbot.wait(60)  # the palette change reaches every widget
                for dock in ("Playbook", "Schedules"):
                    window.docks[dock].raise_()
                    save_screenshot(window, f"roles-viewer-{dock.lower()}-{theme}-{w}x{h}")
        finally:
            window.set_theme("light")
            window.resize(1600, 980)

        window.idle_lock.lock()
        _sign_in(qtbot, "bob")
        qtbot.waitUntil(lambda: not window.idle_lock.is_locked, timeout=10_000)
        assert session.who() == "bob"
        assert jobs.bulk_buttons["cancel"].isEnabled()
        assert jobs.bulk_buttons["cancel"].toolTip() == jobs.bulk_tips["cancel"]
        assert inbox.form.answer_button.isEnabled()
        assert not inbox.form.answer_button.toolTip().startswith("answer:")
        assert not playbook.save_button.isEnabled()
        assert playbook.save_button.toolTip() == _needs("bob", "operator", "playbook", "supervisor")
        assert not any(is_editable(w) for w in playbook.fields)
        assert inbox.form.resend_button.isEnabled()
        assert not inbox.form.resend_button.toolTip().startswith("notify again:")
        assert not schedules.actions_by_key["add"].isEnabled()

        window.idle_lock.lock()
        _sign_in(qtbot, "ann")
        qtbot.waitUntil(lambda: not window.idle_lock.is_locked, timeout=10_000)
        assert all(b.isEnabled() for b in playbook.changing.values())
        assert playbook.save_button.toolTip().startswith("Add the rule")
        assert playbook.editable() and all(w.toolTip() == "" for w in playbook.fields)
        assert schedules.actions_by_key["add"].isEnabled() and schedules.actions_by_key["blackout"].isEnabled()
        assert not schedules.actions_by_key["edit"].isEnabled()  # no schedule is selected
        assert schedules.actions_by_key["add"].toolTip() == "Add a schedule for a published template"
        with qtbot.waitSignal(inbox.answered, timeout=10_000) as answered:
            inbox.form.answer_button.click()
        assert answered.args[1] is True
        assert [e.who for e in rt.store.audit_entries() if e.action.startswith("answer")][-1:] == ["ann"]
        window.idle_lock.stop()
    finally:
        window.close()
        qrun(rt.close())
