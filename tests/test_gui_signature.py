"""Sign-in, the idle lock and the signature dialog, with real widgets over a real runtime."""

from __future__ import annotations

import pytest
from PySide6.QtWidgets import QWidget
from test_gui_jobs import Lab

from core import users
from core.engine import RunStatus
from core.users import SignaturePolicy
from panels.dialogs import ReasonDialog
from panels.login import IdleLock, LoginDialog, Session, sign_in, start_session
from panels.signature import SignatureDialog


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch):
    monkeypatch.setattr(users, "SCRYPT_N", 2**12)
    monkeypatch.setattr(users, "_DUMMY_HASH", None)


@pytest.fixture
def lab(store, data_dir, qtbot, qrun):
    made = Lab(store, data_dir, qtbot, qrun)
    made.rt.signatures = SignaturePolicy(frozenset({"cancel"}), "config.ini")
    users.add_user(store, "ann", "supervisor", "ann-password", who="root")
    yield made
    made.close()


def fill(dialog: SignatureDialog, password: str) -> None:
    dialog.user_edit.setText("ann")
    dialog.password_edit.setText(password)
    dialog.meaning_box.setCurrentText("approved")
    dialog.ok_button.click()


def test_cancel_from_jobs_asks_for_a_signature_and_records_it(lab, qtbot):
    run = lab.start_runs(1)[0]
    lab.load()
    task = lab.jobs.actions.request("cancel", run)
    reason = lab.dialog(ReasonDialog)
    reason.reason_edit.setText("contaminated")
    reason.ok_button.click()
    first = lab.dialog(SignatureDialog)
    assert "cancel" in first.windowTitle() and not first.error.isVisible()
    fill(first, "wrong-password")
    qtbot.waitUntil(lambda: isinstance(lab.jobs.actions.dialog, SignatureDialog)
                    and lab.jobs.actions.dialog is not first, timeout=10_000)
    again = lab.jobs.actions.dialog
    assert again.error.isVisible() and "Wrong user name or password" in again.error.text()
    fill(again, "ann-password")
    key, result = lab.wait_task(task)
    assert key == "cancel" and result.ok
    assert lab.rt.engine.run_status(run) is RunStatus.CANCELLED
    row = next(e for e in lab.rt.audit(run) if e.action == "cancel run")
    assert row.who == "ann" and row.reason == "contaminated"
    assert row.details["signature"]["meaning"] == "approved"
    assert [e.action for e in lab.rt.store.audit_entries() if e.who == "ann"][-2:] == [
        "signature refused", "cancel run"]
    assert lab.rt.store.verify_chain().ok


def test_backing_out_of_the_signature_cancels_nothing(lab):
    run = lab.start_runs(1)[0]
    lab.load()
    task = lab.jobs.actions.request("cancel", run)
    reason = lab.dialog(ReasonDialog)
    reason.reason_edit.setText("maybe")
    reason.ok_button.click()
    lab.dialog(SignatureDialog).reject()
    assert lab.wait_task(task) == ("cancel", None)
    assert lab.rt.run_is_active(run)


def test_sign_in_then_the_idle_lock(lab, qtbot, qloop):
    users.add_user(lab.rt.store, "bob", "operator", "bob-password", who="root")
    opened: list[LoginDialog] = []

    def answer(user: str, password: str) -> None:
        qtbot.waitUntil(lambda: bool(opened) and opened[-1].isVisible(), timeout=10_000)
        dialog = opened.pop()
        dialog.user_edit.setText(user)
        dialog.password_edit.setText(password)
        dialog.ok_button.click()

    loop_task = qloop.create_task(sign_in(lab.rt, dialog_opened=opened.append))
    answer("bob", "nope-nope")
    answer("bob", "bob-password")
    qtbot.waitUntil(loop_task.done, timeout=10_000)
    user = loop_task.result()
    assert user.name == "bob"

    window = QWidget()
    qtbot.addWidget(window)
    session = Session(user, window)
    lock = IdleLock(window, lab.rt, session, minutes=0.002)  # 120 ms without input
    lock.dialog_opened = opened.append
    qtbot.waitUntil(lambda: lock.is_locked, timeout=10_000)
    assert not window.isEnabled()
    answer("ann", "ann-password")  # another user unlocks and acts from now on
    qtbot.waitUntil(lambda: not lock.is_locked, timeout=10_000)
    assert window.isEnabled() and session.who() == "ann"
    lock.stop()
    actions = [(e.who, e.action) for e in lab.rt.store.audit_entries()]
    assert ("bob", "login refused") in actions and ("bob", "login") in actions
    assert actions[-2:] == [("bob", "lock"), ("ann", "login")]


def test_single_user_mode_shows_no_sign_in(store, qtbot, qrun):
    from core.runtime import Runtime

    rt = Runtime.build(store.path.parent, store=store, workcell=None, metrics=False)
    window = QWidget()
    qtbot.addWidget(window)
    assert qrun(start_session(window, rt, 15)) is None
    assert window.isEnabled()


def _login_dialog(qtbot) -> LoginDialog:
    from PySide6.QtWidgets import QApplication

    def visible() -> list[LoginDialog]:
        return [w for w in QApplication.topLevelWidgets() if isinstance(w, LoginDialog) and w.isVisible()]

    qtbot.waitUntil(lambda: bool(visible()), timeout=10_000)
    return visible()[0]


def test_the_main_window_records_the_signed_in_user(store, data_dir, qtbot, qloop):
    from console.app import settings_for
    from console.main_window import MainWindow
    from core.runtime import Runtime

    users.add_user(store, "ann", "supervisor", "ann-password", who="root")
    rt = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    window = MainWindow(rt, settings_for(data_dir))
    qtbot.addWidget(window)
    window.show()
    task = qloop.create_task(start_session(window, rt, 15))
    dialog = _login_dialog(qtbot)
    assert not window.isEnabled()
    dialog.user_edit.setText("ann")
    dialog.password_edit.setText("ann-password")
    dialog.ok_button.click()
    qtbot.waitUntil(task.done, timeout=10_000)
    session = task.result()
    assert session.who() == "ann" and window.isEnabled()
    assert window.jobs.actions.who() == "ann" and window.detail.order_actions.who() == "ann"
    assert window.templates.who == "ann" and "ann (supervisor)" in window.windowTitle()
    assert window.schedules.who == window.inbox.who == window.playbook.who == "ann"
    assert window.robots.user.name == "ann" and window.templates.user.role == "supervisor"
    window.idle_lock.stop()
    window.close()


def test_quitting_the_sign_in(store, data_dir, qtbot, qloop):
    users.add_user(store, "ann", "supervisor", "ann-password", who="root")
    from core.runtime import Runtime

    rt = Runtime.build(data_dir, store=store, workcell=None, metrics=False)
    window = QWidget()
    qtbot.addWidget(window)
    task = qloop.create_task(start_session(window, rt, 15))
    _login_dialog(qtbot).reject()
    qtbot.waitUntil(task.done, timeout=10_000)
    assert task.result() is False


def test_bulk_cancel_and_skip_ask_for_one_signature_each(lab, qtbot):
    from panels.dialogs import BulkDialog, StepChoiceDialog

    lab.rt.signatures = SignaturePolicy(frozenset({"cancel", "skip"}), "config.ini")
    runs = lab.start_runs(3)
    lab.load()
    task = lab.jobs.actions.request_bulk("cancel", runs[:2])
    bulk = lab.dialog(BulkDialog)
    bulk.reason_edit.setText("end of shift")
    bulk.go_button.click()
    fill(lab.dialog(SignatureDialog), "ann-password")
    lab.wait_task(task)
    assert bulk.stage == "results" and all(bulk.results.result(i).ok for i in range(2))
    rows = [e for e in lab.rt.store.audit_entries() if e.action in ("cancel run", "bulk cancel")]
    assert len(rows) == 3 and all(e.who == "ann" and e.details["signature"]["action"] == "cancel" for e in rows)

    task = lab.jobs.actions.request("skip", runs[2])
    choice = lab.dialog(StepChoiceDialog)
    choice.reason_edit.setText("read by hand")
    choice.ok_button.click()
    first = lab.dialog(SignatureDialog)
    assert first.windowTitle() == "Sign: skip"
    first.reject()  # backing out of the signature skips nothing
    assert lab.wait_task(task) == ("skip", None)
    assert all(s["status"] != "skipped" for s in lab.rt.engine.get_instance(runs[2])["steps"])
