"""Sign-in and the idle lock, when named users are on.

With no user in the store (single-user mode, the default) nothing here shows: actions are recorded
as the operating-system user, as before. Once users exist, :func:`start_session` asks for a user
name and password before the window can be used, and the actions of the panels are recorded as
that user; what their role does not allow is disabled, its tooltip naming the role it needs.
:class:`IdleLock` locks the window after ``idle_lock_minutes`` (``[USERS]`` of config.ini; 15 by
default, 0: never) without keyboard or mouse input; signing in again unlocks it (another user may
sign in, and is recorded from then on). Sign-ins, refusals, locks and sign-outs are audit rows in
the hash chain.

The password check costs about half a second of scrypt: it runs off the event loop
(:func:`core.users.aauthenticate`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from core.api import RuntimeApi
from core.users import AuthenticationError, User, aauthenticate, has_users, record_login
from panels.dialogs import ask
from panels.widgets import error_label, password_edit

INPUT_EVENTS = frozenset({QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.MouseMove,
                          QEvent.Type.Wheel, QEvent.Type.TouchBegin})


class LoginDialog(QDialog):
    """User name and password; application-modal, so nothing else can be used meanwhile."""

    def __init__(self, *, title: str = "Sign in to labconsole", user: str = "", error: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setWindowModality(Qt.WindowModality.ApplicationModal)
        self.setMinimumWidth(360)
        self.user = user
        self.password = ""
        self.user_edit = QLineEdit(user, self)
        self.user_edit.setObjectName("user")
        self.password_edit = password_edit(self)
        self.error = error_label(error, self)
        form = QFormLayout()
        form.addRow("User:", self.user_edit)
        form.addRow("Password:", self.password_edit)
        self.buttons = QDialogButtonBox(self)
        self.ok_button = self.buttons.addButton("Sign in", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.addButton("Quit", QDialogButtonBox.ButtonRole.RejectRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        (self.password_edit if user else self.user_edit).setFocus()

    def accept(self) -> None:
        self.user = self.user_edit.text().strip()
        self.password = self.password_edit.text()
        self.password_edit.clear()
        if self.user and self.password:
            super().accept()


class Session(QObject):
    """Who is signed in; ``who()`` is what the panels record as the acting person."""

    changed = Signal(object)
    """The :class:`~core.users.User` now signed in."""

    def __init__(self, user: User, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.user = user

    def who(self) -> str:
        return self.user.name

    def switch(self, user: User) -> None:
        self.user = user
        self.changed.emit(user)


async def sign_in(runtime: RuntimeApi, *, title: str = "Sign in to labconsole", user: str = "",
                  dialog_opened: Callable[[QDialog], Any] | None = None) -> User | None:
    """Ask until a user signs in (returned, audited as ``login``) or the operator quits (None)."""
    error = ""
    while True:
        dialog = LoginDialog(title=title, user=user, error=error)
        if dialog_opened is not None:
            dialog_opened(dialog)
        try:
            if not await ask(dialog):
                return None
        finally:
            dialog.deleteLater()
        user = dialog.user
        try:
            found = await aauthenticate(runtime.store, dialog.user, dialog.password)
        except AuthenticationError:
            error = "Wrong user name or password (or the user is disabled)."
            continue
        await record_login(runtime.store, found)
        return found


class IdleLock(QObject):
    """Locks ``window`` after ``minutes`` without input, until somebody signs in again."""

    locked = Signal()
    unlocked = Signal(object)

    def __init__(self, window: QWidget, runtime: RuntimeApi, session: Session, minutes: float) -> None:
        super().__init__(window)
        self.window, self.runtime, self.session = window, runtime, session
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(max(1, int(minutes * 60_000)))
        self.timer.timeout.connect(self.lock)
        self.is_locked = False
        self.dialog_opened: Callable[[QDialog], Any] | None = None
        self._task: asyncio.Task[None] | None = None
        app = QApplication.instance()
        if minutes > 0 and app is not None:
            app.installEventFilter(self)
            self.timer.start()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        if not self.is_locked and event.type() in INPUT_EVENTS:
            self.timer.start()  # restart the idle countdown
        return False

    def lock(self) -> None:
        if self.is_locked:
            return
        self.is_locked = True
        self.window.setEnabled(False)
        self.locked.emit()
        self._task = asyncio.get_event_loop().create_task(self._unlock())

    async def _unlock(self) -> None:
        await self.runtime.store.audit(self.session.who(), "lock", None, "idle")
        user = await sign_in(self.runtime, title="labconsole is locked — sign in",
                             user=self.session.who(), dialog_opened=self.dialog_opened)
        if user is None:  # Quit from the lock: close the console
            self.window.close()
            return
        self.session.switch(user)
        self.is_locked = False
        self.window.setEnabled(True)
        self.timer.start()
        self.unlocked.emit(user)

    def stop(self) -> None:
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        self.timer.stop()
        if self._task is not None and not self._task.done():
            self._task.cancel()


def apply_session(window: Any, session: Session) -> None:
    """Record the panels' actions as the signed-in user, and offer only what their role allows
    (the core refuses the rest: :data:`core.users.PERMISSIONS`)."""
    for actions in (window.jobs.actions, window.detail.order_actions):
        actions.who = session.who
        actions.user = lambda: session.user

    def follow(user: User) -> None:
        for panel in (window.templates, window.robots, window.schedules, window.inbox, window.playbook):
            panel.set_user(user)
        window.jobs.follow_user()
        if window.detail.data is not None:
            window.detail.refresh()  # its buttons follow the new role

    follow(session.user)
    session.changed.connect(follow)


async def start_session(window: Any, runtime: RuntimeApi, idle_minutes: float) -> Session | None | bool:
    """Single-user mode: None. Otherwise sign in (False if the operator quits) and return the
    session, applied to the window's panels, with its idle lock running."""
    if not await asyncio.to_thread(has_users, runtime.store):
        return None
    window.setEnabled(False)
    user = await sign_in(runtime)
    if user is None:
        return False
    window.setEnabled(True)
    session = Session(user, window)
    apply_session(window, session)
    window.idle_lock = IdleLock(window, runtime, session, idle_minutes)
    window.setWindowTitle(f"labconsole — {user.name} ({user.role})")
    session.changed.connect(lambda u: window.setWindowTitle(f"labconsole — {u.name} ({u.role})"))
    return session
